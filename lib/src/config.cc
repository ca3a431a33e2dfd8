#include "switchboard/config.h"

#include <algorithm>
#include <map>
#include <set>

namespace switchboard {

std::string_view StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kRoundRobin: return "round-robin";
    case Strategy::kWeighted: return "weighted";
    case Strategy::kLeastBusy: return "least-busy";
    case Strategy::kLowestLatency: return "lowest-latency";
  }
  return "round-robin";
}

std::optional<Strategy> ParseStrategy(std::string_view name) {
  std::string normalized(name);
  std::replace(normalized.begin(), normalized.end(), '_', '-');
  for (auto s : {Strategy::kRoundRobin, Strategy::kWeighted, Strategy::kLeastBusy,
                 Strategy::kLowestLatency}) {
    if (normalized == StrategyName(s)) return s;
  }
  return std::nullopt;
}

int Config::PoolPriority(std::string_view pool) const {
  for (size_t i = 0; i < pool_order.size(); ++i) {
    if (pool_order[i] == pool) return static_cast<int>(i);
  }
  return static_cast<int>(pool_order.size());
}

std::vector<FieldError> ValidateConfig(const Config& c) {
  std::vector<FieldError> errors;
  auto add = [&errors](std::string param, std::string message) {
    errors.push_back(FieldError{std::move(param), std::move(message)});
  };
  std::set<std::string_view> seen;
  for (const std::string& pool : c.pool_order) {
    if (!IsValidBackendName(pool)) {
      add("pool_order", "pool names must match [A-Za-z0-9._-]{1,64}");
      break;
    }
    if (!seen.insert(pool).second) {
      add("pool_order", "lists pool '" + pool + "' twice");
      break;
    }
  }
  if (c.pool_order.size() > 100) add("pool_order", "lists more than 100 pools");
  if (c.max_attempts < 1 || c.max_attempts > 20) add("max_attempts", "must be between 1 and 20");
  if (c.cooldown_base_seconds < 1 || c.cooldown_base_seconds > 86400) {
    add("cooldown_base_seconds", "must be between 1 and 86400");
  }
  if (c.cooldown_max_seconds < 1 || c.cooldown_max_seconds > 86400) {
    add("cooldown_max_seconds", "must be between 1 and 86400");
  } else if (c.cooldown_base_seconds >= 1 && c.cooldown_base_seconds <= 86400 &&
             c.cooldown_max_seconds < c.cooldown_base_seconds) {
    // Compared only against a valid base: a bad base is already reported.
    add("cooldown_max_seconds", "must be >= cooldown_base_seconds");
  }
  if (c.error_threshold < 1 || c.error_threshold > 100) {
    add("error_threshold", "must be between 1 and 100");
  }
  if (c.body_limit_bytes < 1024 || c.body_limit_bytes > (int64_t{1} << 30)) {
    add("body_limit_bytes", "must be between 1024 and 1073741824");
  }
  if (c.usage_retention_days < 0 || c.usage_retention_days > 3650) {
    add("usage_retention_days", "must be between 0 and 3650");
  }
  return errors;
}

std::vector<PoolStats> ComputePoolStats(const std::vector<Backend>& backends, const Config& config,
                                        SystemTime now) {
  std::map<std::string, PoolStats> by_pool;
  for (const std::string& pool : config.pool_order) by_pool[pool].pool = pool;
  for (const Backend& b : backends) {
    PoolStats& s = by_pool[b.pool];
    s.pool = b.pool;
    ++s.total;
    if (!b.enabled || b.status == BackendStatus::kDisabled) continue;
    ++s.enabled;
    if (b.status == BackendStatus::kError) {
      ++s.error;
    } else if (b.cooldown_until && *b.cooldown_until > now) {
      ++s.cooling;
    } else {
      ++s.healthy;
    }
  }
  std::vector<PoolStats> out;
  out.reserve(by_pool.size());
  for (auto& [name, stats] : by_pool) out.push_back(std::move(stats));
  std::stable_sort(out.begin(), out.end(), [&config](const PoolStats& a, const PoolStats& b) {
    return config.PoolPriority(a.pool) < config.PoolPriority(b.pool);
  });  // by_pool is name-ordered, so unlisted pools stay in name order
  for (size_t i = 0; i < out.size(); ++i) out[i].priority = static_cast<int>(i);
  return out;
}

}  // namespace switchboard
