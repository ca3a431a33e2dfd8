// Aggregation helpers shared by the Storage implementations, so that every
// store computes usage statistics with the same definitions: per-minute
// rollups maintained on append, fixed log-scale latency histograms, and one
// builder that turns rollups and raw records into UsageStats.
#ifndef SWITCHBOARD_LIB_SRC_STATS_UTIL_H_
#define SWITCHBOARD_LIB_SRC_STATS_UTIL_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "switchboard/storage.h"

namespace switchboard::internal {

// Nearest-rank percentile of `values` (p in (0, 100]): sort ascending,
// rank = ceil(p/100 * n) (at least 1), value = sorted[rank - 1]; 0 when empty.
// Sorts `values` in place.
double NearestRank(std::vector<int64_t>& values, double p);

// True when a final client status counts as an error (>= 400, not 429).
inline bool IsErrorStatus(int status) { return status >= 400 && status != 429; }

// How many upstream 429 answers a decision trace (RoutePlan::TraceJson())
// records: entries with "status":429.
int64_t CountUpstream429(std::string_view trace);

// Millisecond values over fixed log-scale buckets: one bucket per value
// below 32, then 16 equal buckets per power of two up to 2^22 ms (about 70
// minutes; larger values count in the last bucket). A percentile is the
// midpoint of the bucket holding the nearest-rank value, clamped to the
// smallest and largest value seen, so it is exact below 32 ms and within
// 1/32 (3.125 %) of the exact nearest-rank value above.
namespace histogram {
constexpr int kBuckets = 32 + 17 * 16;
int BucketOf(int64_t value);
double BucketMid(int index);  // midpoint of bucket `index`'s value range
}  // namespace histogram

// The sparse form a rollup keeps: (bucket, count) pairs ascending by bucket.
// Not thread-safe; one owner.
struct SparseHistogram {
  std::vector<std::pair<int, int64_t>> buckets;
  int64_t count = 0;
  int64_t min = 0;
  int64_t max = 0;

  void Add(int64_t value);
  void Merge(const SparseHistogram& other);
  // A compact byte form for storage: min, max, then (bucket, count) pairs,
  // as LEB128 varints.
  std::string Encode() const;
  // False (and *this empty) when `bytes` is not an Encode() output. Reuses
  // the buckets' storage.
  bool Decode(std::string_view bytes);

  friend bool operator==(const SparseHistogram&, const SparseHistogram&) = default;
};

// The dense form aggregation merges into. Not thread-safe; one owner.
class LatencyHistogram {
 public:
  LatencyHistogram() : counts_(histogram::kBuckets, 0) {}
  void Merge(const SparseHistogram& h);
  void Merge(const LatencyHistogram& h);
  int64_t count() const { return count_; }
  // Nearest-rank percentile as described above; 0 when empty.
  double Percentile(double p) const;

 private:
  std::vector<int64_t> counts_;
  int64_t count_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
};

// One minute of usage for one (backend, model): what the rollup tables keep.
struct UsageRollup {
  int64_t minute = 0;  // Unix seconds / 60, floored
  std::string backend_id;
  std::string backend_name;  // of the newest record folded in
  std::string model;
  int64_t requests = 0;
  int64_t errors = 0;
  int64_t rate_limited = 0;
  int64_t upstream_429 = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  SparseHistogram latency;
  SparseHistogram ttfb;  // records with ttfb_ms > 0 only

  void Add(const UsageRecord& record);
  // Folds `other` (same key, newer records) into this one.
  void Merge(const UsageRollup& other);
};

// The minute (Unix seconds / 60, floored) a time falls into.
int64_t MinuteOf(SystemTime time);

// (minute, backend_id, model): the rollup key.
using RollupKey = std::tuple<int64_t, std::string, std::string>;

// Rolls `records` up by minute, backend and model, in the order given.
std::map<RollupKey, UsageRollup> RollUp(const std::vector<UsageRecord>& records);

// How a stats query over [from, to) splits: whole minutes [first_minute,
// end_minute) come from rollups, the partial minutes at either edge from raw
// records in [from, rollup_from) and [rollup_to, to). When the timeseries
// bucket is not a whole number of minutes, or the range holds no whole
// minute, everything comes from raw records (use_rollups false).
struct StatsPlan {
  bool use_rollups = false;
  int64_t first_minute = 0;
  int64_t end_minute = 0;  // exclusive
  SystemTime rollup_from{};
  SystemTime rollup_to{};
};
StatsPlan PlanStats(const StatsQuery& query);

// A store may keep rollups at several spans (whole minutes: 1, 5, 60, ...,
// each a multiple of the next smaller). A tiered plan covers [from, to)
// with the coarsest slots that fit, finer ones towards the edges, and raw
// records for the partial minutes at either end. Segments are in time order.
struct StatsSegment {
  int span_minutes = 0;  // 0: raw records in [from, to)
  SystemTime from{};
  SystemTime to{};
  int64_t first_minute = 0;  // rollup slots starting in [first_minute, end_minute)
  int64_t end_minute = 0;
};
// `spans_minutes`: the spans the store keeps, any order. Only spans that
// divide the query's bucket width are used.
std::vector<StatsSegment> PlanTieredStats(const StatsQuery& query,
                                          std::vector<int> spans_minutes);

// Merges minute rollups into slots of `span_minutes` (minute = the slot's
// first minute).
std::map<RollupKey, UsageRollup> Coarsen(const std::map<RollupKey, UsageRollup>& minute_cells,
                                         int span_minutes);

// The first minute of the `span_minutes` slot holding `minute`.
int64_t SlotStart(int64_t minute, int span_minutes);

// Accumulates rollups and raw usage records into UsageStats. Not
// thread-safe; one owner.
class UsageStatsBuilder {
 public:
  explicit UsageStatsBuilder(int bucket_seconds) : bucket_seconds_(bucket_seconds) {}

  void Add(const UsageRecord& record);
  // REQUIRES: bucket_seconds is a multiple of 60.
  void Add(const UsageRollup& rollup);
  UsageStats Build();

 private:
  struct Accumulator {
    UsageAggregate totals;
    LatencyHistogram latency;
    LatencyHistogram ttfb;
    void Add(const UsageRollup& r);
    void Merge(const Accumulator& other);
    UsageAggregate Finish() const;
  };
  // One (backend, model): every row lands in one group and one bucket;
  // totals, by_backend and by_model are merged from the groups at the end.
  struct Group {
    std::string backend_name;  // of the newest row
    int64_t name_seconds = 0;
    Accumulator acc;
  };
  int64_t BucketStart(int64_t unix_seconds) const;
  // Adds `r` as if all of it happened at `unix_seconds`.
  void AddAt(const UsageRollup& r, int64_t unix_seconds);

  int bucket_seconds_;
  // The bucket the previous call added to: rollups arrive in time order.
  int64_t last_start_ = 0;
  Accumulator* last_bucket_ = nullptr;
  std::map<std::string, int64_t>* last_bucket_backends_ = nullptr;
  std::map<std::pair<std::string, std::string>, Group> groups_;  // by (backend id, model)
  std::map<int64_t, Accumulator> by_bucket_;  // by bucket start (unix seconds)
  std::map<int64_t, std::map<std::string, int64_t>> bucket_backends_;
};

}  // namespace switchboard::internal

#endif  // SWITCHBOARD_LIB_SRC_STATS_UTIL_H_
