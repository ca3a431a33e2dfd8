// switchboard/config.h
// Gateway-wide settings an operator changes at run time (GET/PATCH
// /admin/config). Immutable once built into a routing snapshot.
//
//   Config c;                       // the contract's defaults
//   c.strategy = Strategy::kLeastBusy;
//   if (auto errors = ValidateConfig(c); !errors.empty()) { ... }
#ifndef SWITCHBOARD_CONFIG_H_
#define SWITCHBOARD_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/types.h"

namespace switchboard {

// How backends inside one pool are ordered.
enum class Strategy { kRoundRobin, kWeighted, kLeastBusy, kLowestLatency };

std::string_view StrategyName(Strategy s);  // "round-robin" | "weighted" | "least-busy" | "lowest-latency"
std::optional<Strategy> ParseStrategy(std::string_view name);  // also accepts '_' for '-'

struct Config {
  std::vector<std::string> pool_order = {"primary", "fallback"};
  Strategy strategy = Strategy::kRoundRobin;
  int max_attempts = 3;                 // 1..20
  int cooldown_base_seconds = 5;        // 1..86400
  int cooldown_max_seconds = 300;       // >= base, <= 86400
  int error_threshold = 3;              // 1..100
  int64_t body_limit_bytes = 10 << 20;  // 1 KiB..1 GiB
  int usage_retention_days = 30;        // 0 (keep forever)..3650

  // Position of `pool` in the try order: its index in pool_order, else after
  // all listed pools (unlisted pools sort by name among themselves; callers
  // break ties by name).
  int PoolPriority(std::string_view pool) const;

  friend bool operator==(const Config&, const Config&) = default;
};

// Returns the invalid fields of `config`, empty when valid.
std::vector<FieldError> ValidateConfig(const Config& config);

// Counts the backends per pool and orders the pools as routing tries them.
// A backend counts as cooling while cooldown_until > now and its status is not
// error; `enabled` counts enabled backends; disabled ones count only in total.
std::vector<PoolStats> ComputePoolStats(const std::vector<Backend>& backends,
                                        const Config& config, SystemTime now);

}  // namespace switchboard

#endif  // SWITCHBOARD_CONFIG_H_
