// MemoryStorage: the whole state in maps under one mutex. For tests, and for
// embedders who keep durable state elsewhere.
#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>
#include <unordered_map>

#include "stats_util.h"
#include "switchboard/storage.h"

namespace switchboard {
namespace {

constexpr int kMaxPageLimit = 1000;

Status CheckLimit(int limit) {
  if (limit < 1 || limit > kMaxPageLimit) {
    return InvalidArgumentError("limit must be between 1 and 1000", "limit");
  }
  return Status::Ok();
}

class MemoryStorage final : public Storage {
 public:
  Status CreateBackend(const Backend& backend) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.count(backend.id) != 0) {
      return AlreadyExistsError("a backend with id '" + backend.id + "' already exists", "id");
    }
    if (FindByNameLocked(backend.name) != nullptr) {
      return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
    }
    backends_.emplace(backend.id, backend);
    return Status::Ok();
  }

  Result<Backend> GetBackend(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = backends_.find(id);
    if (it == backends_.end()) return NotFoundError("no backend with id '" + id + "'");
    return it->second;
  }

  Result<Backend> GetBackendByName(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    const Backend* b = FindByNameLocked(name);
    if (b == nullptr) return NotFoundError("no backend named '" + name + "'");
    return *b;
  }

  Result<std::vector<Backend>> ListBackends(const BackendFilter& filter) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Backend> out;
    for (const auto& [id, b] : backends_) {
      if (filter.pool && b.pool != *filter.pool) continue;
      if (filter.enabled && b.enabled != *filter.enabled) continue;
      out.push_back(b);
    }
    std::sort(out.begin(), out.end(),
              [](const Backend& a, const Backend& b) { return a.name < b.name; });
    return out;
  }

  Status UpdateBackend(const Backend& backend) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = backends_.find(backend.id);
    if (it == backends_.end()) return NotFoundError("no backend with id '" + backend.id + "'");
    const Backend* same_name = FindByNameLocked(backend.name);
    if (same_name != nullptr && same_name->id != backend.id) {
      return AlreadyExistsError("a backend named '" + backend.name + "' already exists", "name");
    }
    it->second = backend;
    return Status::Ok();
  }

  Status DeleteBackend(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (backends_.erase(id) == 0) return NotFoundError("no backend with id '" + id + "'");
    return Status::Ok();
  }

  Status UpdateBackendStates(const std::vector<BackendState>& states) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BackendState& s : states) {
      auto it = backends_.find(s.backend_id);
      if (it == backends_.end()) continue;
      Backend& b = it->second;
      b.status = s.status;
      b.cooldown_until = s.cooldown_until;
      b.consecutive_429_count = s.consecutive_429_count;
      b.consecutive_failures = s.consecutive_failures;
      b.last_error = s.last_error;
    }
    return Status::Ok();
  }

  Status ReplaceApiKeys(const std::vector<ApiKeyUpdate>& updates) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ApiKeyUpdate& u : updates) {
      if (backends_.count(u.backend_id) == 0) {
        return NotFoundError("no backend with id '" + u.backend_id + "'");
      }
    }
    for (const ApiKeyUpdate& u : updates) {
      backends_[u.backend_id].api_key_ciphertext = u.api_key_ciphertext;
    }
    return Status::Ok();
  }

  Status AppendCooldownEvents(const std::vector<CooldownEvent>& events) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (CooldownEvent e : events) {
      e.id = ++last_event_id_;
      events_.push_back(std::move(e));
    }
    return Status::Ok();
  }

  Result<std::vector<CooldownEvent>> ListCooldownEvents(const CooldownEventQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<CooldownEvent> out;
    for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
      if (query.backend_id && it->backend_id != *query.backend_id) continue;
      out.push_back(*it);
      if (static_cast<int>(out.size()) == query.limit) break;
    }
    return out;
  }

  Status AppendUsage(const std::vector<UsageRecord>& records) override {
    auto cells = internal::RollUp(records);  // outside the lock: it parses traces
    std::lock_guard<std::mutex> lock(mu_);
    for (UsageRecord r : records) {
      r.id = ++last_usage_id_;
      usage_.push_back(std::move(r));
    }
    MergeRollupsLocked(cells);
    return Status::Ok();
  }

  Result<UsagePage> ListUsage(const UsageQuery& query) override {
    SWITCHBOARD_RETURN_IF_ERROR(CheckLimit(query.limit));
    std::lock_guard<std::mutex> lock(mu_);
    UsagePage page;
    // usage_ is in ascending id order; walk it backwards from the cursor.
    auto end = usage_.end();
    if (query.before) {
      end = std::lower_bound(usage_.begin(), usage_.end(), *query.before,
                             [](const UsageRecord& r, int64_t id) { return r.id < id; });
    }
    auto it = end;
    while (it != usage_.begin() && static_cast<int>(page.records.size()) < query.limit) {
      --it;
      page.records.push_back(*it);
    }
    if (it != usage_.begin() && !page.records.empty()) page.next_before = page.records.back().id;
    return page;
  }

  Result<UsageStats> QueryUsageStats(const StatsQuery& query) override {
    if (query.bucket_seconds < 1) {
      return InvalidArgumentError("bucket_seconds must be >= 1", "bucket_seconds");
    }
    const internal::StatsPlan plan = internal::PlanStats(query);
    std::lock_guard<std::mutex> lock(mu_);
    internal::UsageStatsBuilder builder(query.bucket_seconds);
    // Whole minutes from the rollups, the partial minutes at the edges (or
    // everything, when the plan says so) from the records.
    for (const UsageRecord& r : usage_) {
      if (r.time < query.from || r.time >= query.to) continue;
      if (plan.use_rollups && r.time >= plan.rollup_from && r.time < plan.rollup_to) continue;
      builder.Add(r);
    }
    if (plan.use_rollups) {
      for (auto it = rollups_.lower_bound({plan.first_minute, "", ""});
           it != rollups_.end() && std::get<0>(it->first) < plan.end_minute; ++it) {
        builder.Add(it->second);
      }
    }
    return builder.Build();
  }

  Result<int64_t> DeleteUsageBefore(SystemTime cutoff) override {
    std::lock_guard<std::mutex> lock(mu_);
    const auto old_size = usage_.size();
    usage_.erase(std::remove_if(usage_.begin(), usage_.end(),
                                [cutoff](const UsageRecord& r) { return r.time < cutoff; }),
                 usage_.end());
    // Rollups of the minutes wholly before the cutoff go; the minute holding
    // the cutoff is rebuilt from the records that remain in it.
    const int64_t cut_minute = internal::MinuteOf(cutoff);
    rollups_.erase(rollups_.begin(), rollups_.lower_bound({cut_minute, "", ""}));
    if (FromUnixMillis(cut_minute * 60000) != cutoff) {
      rollups_.erase(rollups_.lower_bound({cut_minute, "", ""}),
                     rollups_.lower_bound({cut_minute + 1, "", ""}));
      std::vector<UsageRecord> rest;
      for (const UsageRecord& r : usage_) {
        if (internal::MinuteOf(r.time) == cut_minute) rest.push_back(r);
      }
      MergeRollupsLocked(internal::RollUp(rest));
    }
    return static_cast<int64_t>(old_size - usage_.size());
  }

  Status CreateClientKey(const ClientKey& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ClientKey& k : client_keys_) {
      if (k.id == key.id) {
        return AlreadyExistsError("a client key with id '" + key.id + "' already exists", "id");
      }
      if (k.name == key.name && !k.revoked() && !key.revoked()) {
        return AlreadyExistsError("a client key named '" + key.name + "' already exists", "name");
      }
    }
    client_keys_.push_back(key);
    return Status::Ok();
  }

  Result<std::vector<ClientKey>> ListClientKeys() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ClientKey> out = client_keys_;
    std::sort(out.begin(), out.end(), [](const ClientKey& a, const ClientKey& b) {
      if (a.created_at != b.created_at) return a.created_at < b.created_at;
      return a.id < b.id;
    });
    return out;
  }

  Status RevokeClientKey(const std::string& id, SystemTime when) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (ClientKey& k : client_keys_) {
      if (k.id != id) continue;
      if (!k.revoked_at) k.revoked_at = when;
      return Status::Ok();
    }
    return NotFoundError("no client key with id '" + id + "'");
  }

  Status TouchClientKeys(const std::vector<ClientKeyUse>& uses) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ClientKeyUse& use : uses) {
      for (ClientKey& k : client_keys_) {
        if (k.id == use.key_id && (!k.last_used_at || *k.last_used_at < use.used_at)) {
          k.last_used_at = use.used_at;
        }
      }
    }
    return Status::Ok();
  }

  Result<Config> GetConfig() override {
    std::lock_guard<std::mutex> lock(mu_);
    return config_;
  }

  Status PutConfig(const Config& config) override {
    if (auto errors = ValidateConfig(config); !errors.empty()) {
      return InvalidArgumentError(errors.front().message, errors.front().param);
    }
    std::lock_guard<std::mutex> lock(mu_);
    config_ = config;
    return Status::Ok();
  }

 private:
  // REQUIRES: mu_ held
  void MergeRollupsLocked(const std::map<internal::RollupKey, internal::UsageRollup>& cells) {
    for (const auto& [key, cell] : cells) {
      auto [it, inserted] = rollups_.try_emplace(key, cell);
      if (!inserted) it->second.Merge(cell);
    }
  }

  // REQUIRES: mu_ held
  const Backend* FindByNameLocked(const std::string& name) const {
    for (const auto& [id, b] : backends_) {
      if (b.name == name) return &b;
    }
    return nullptr;
  }

  std::mutex mu_;
  std::unordered_map<std::string, Backend> backends_;  // guarded by mu_
  std::vector<CooldownEvent> events_;                  // guarded by mu_, ascending id
  std::vector<UsageRecord> usage_;                     // guarded by mu_, ascending id
  int64_t last_event_id_ = 0;                          // guarded by mu_
  int64_t last_usage_id_ = 0;                          // guarded by mu_
  Config config_;                                      // guarded by mu_
  // Per-minute rollups of usage_, kept in step with it.
  std::map<internal::RollupKey, internal::UsageRollup> rollups_;  // guarded by mu_
  std::vector<ClientKey> client_keys_;                            // guarded by mu_
};

}  // namespace

std::unique_ptr<Storage> NewMemoryStorage() { return std::make_unique<MemoryStorage>(); }

}  // namespace switchboard
