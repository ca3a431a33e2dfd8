#include "stats_util.h"

#include <algorithm>
#include <cmath>

namespace switchboard::internal {

double NearestRank(std::vector<int64_t>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * n));
  rank = std::clamp<size_t>(rank, 1, values.size());
  return static_cast<double>(values[rank - 1]);
}

void UsageStatsBuilder::Accumulator::Add(const UsageRecord& r) {
  ++totals.requests;
  if (IsErrorStatus(r.status)) ++totals.errors;
  if (r.status == 429) ++totals.rate_limited;
  totals.prompt_tokens += r.prompt_tokens;
  totals.completion_tokens += r.completion_tokens;
  latencies.push_back(r.latency_ms);
  if (r.ttfb_ms > 0) ttfbs.push_back(r.ttfb_ms);
}

UsageAggregate UsageStatsBuilder::Accumulator::Finish() {
  totals.p50_ms = NearestRank(latencies, 50);
  totals.p95_ms = NearestRank(latencies, 95);
  totals.ttfb_p50_ms = NearestRank(ttfbs, 50);
  totals.ttfb_p95_ms = NearestRank(ttfbs, 95);
  return totals;
}

void UsageStatsBuilder::Add(const UsageRecord& r) {
  all_.Add(r);
  by_backend_[r.backend_id].Add(r);
  backend_names_[r.backend_id] = r.backend_name;
  by_model_[r.model].Add(r);
  const int64_t secs = ToUnixMillis(r.time) / 1000;
  // Floor division, so that times before the epoch still align.
  int64_t start = secs / bucket_seconds_ * bucket_seconds_;
  if (start > secs) start -= bucket_seconds_;
  by_bucket_[start].Add(r);
  ++bucket_backends_[start][r.backend_name];
}

UsageStats UsageStatsBuilder::Build() {
  UsageStats stats;
  stats.totals = all_.Finish();
  for (auto& [id, acc] : by_backend_) {
    stats.by_backend.push_back(BackendUsage{id, backend_names_[id], acc.Finish()});
  }
  std::sort(stats.by_backend.begin(), stats.by_backend.end(),
            [](const BackendUsage& a, const BackendUsage& b) {
              if (a.usage.requests != b.usage.requests) return a.usage.requests > b.usage.requests;
              return a.backend_name < b.backend_name;
            });
  for (auto& [model, acc] : by_model_) stats.by_model.push_back(ModelUsage{model, acc.Finish()});
  std::sort(stats.by_model.begin(), stats.by_model.end(),
            [](const ModelUsage& a, const ModelUsage& b) {
              if (a.usage.requests != b.usage.requests) return a.usage.requests > b.usage.requests;
              return a.model < b.model;
            });
  for (auto& [start, acc] : by_bucket_) {
    UsageBucket bucket;
    bucket.start = FromUnixMillis(start * 1000);
    bucket.usage = acc.Finish();
    for (const auto& [name, count] : bucket_backends_[start]) {
      bucket.requests_by_backend.emplace_back(name, count);
    }
    stats.timeseries.push_back(std::move(bucket));
  }
  return stats;
}

}  // namespace switchboard::internal
