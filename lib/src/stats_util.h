// Aggregation helpers shared by the Storage implementations, so that every
// store computes usage statistics with the same definitions.
#ifndef SWITCHBOARD_LIB_SRC_STATS_UTIL_H_
#define SWITCHBOARD_LIB_SRC_STATS_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "switchboard/storage.h"

namespace switchboard::internal {

// Nearest-rank percentile of `values` (p in (0, 100]): sort ascending,
// rank = ceil(p/100 * n) (at least 1), value = sorted[rank - 1]; 0 when empty.
// Sorts `values` in place.
double NearestRank(std::vector<int64_t>& values, double p);

// True when a final client status counts as an error (>= 400, not 429).
inline bool IsErrorStatus(int status) { return status >= 400 && status != 429; }

// Accumulates usage records into UsageStats. Not thread-safe; one owner.
class UsageStatsBuilder {
 public:
  explicit UsageStatsBuilder(int bucket_seconds) : bucket_seconds_(bucket_seconds) {}

  void Add(const UsageRecord& record);
  UsageStats Build();

 private:
  struct Accumulator {
    UsageAggregate totals;
    std::vector<int64_t> latencies;
    std::vector<int64_t> ttfbs;
    void Add(const UsageRecord& r);
    UsageAggregate Finish();
  };

  int bucket_seconds_;
  Accumulator all_;
  std::map<std::string, Accumulator> by_backend_;  // by backend id
  std::map<std::string, std::string> backend_names_;
  std::map<std::string, Accumulator> by_model_;
  std::map<int64_t, Accumulator> by_bucket_;  // by bucket start (unix seconds)
  std::map<int64_t, std::map<std::string, int64_t>> bucket_backends_;
};

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_LIB_SRC_STATS_UTIL_H_
