#include "stats_util.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace switchboard::internal {
namespace {

constexpr int64_t kMaxHistogramValue = (int64_t{1} << 22) - 1;

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

// Floor division, so that times before the epoch still align.
int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

double NearestRank(std::vector<int64_t>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * n));
  rank = std::clamp<size_t>(rank, 1, values.size());
  return static_cast<double>(values[rank - 1]);
}

int64_t CountUpstream429(std::string_view trace) {
  // Traces are written by RoutePlan::TraceJson(): a "status" key appears only
  // on tried entries, and a quote inside a name is escaped, so the pattern
  // cannot come from a string value.
  constexpr std::string_view kPattern = "\"status\":429";
  int64_t n = 0;
  for (size_t pos = trace.find(kPattern); pos != std::string_view::npos;
       pos = trace.find(kPattern, pos + kPattern.size())) {
    const size_t after = pos + kPattern.size();
    if (after < trace.size() && trace[after] >= '0' && trace[after] <= '9') continue;
    ++n;
  }
  return n;
}

namespace histogram {

int BucketOf(int64_t value) {
  value = std::clamp<int64_t>(value, 0, kMaxHistogramValue);
  if (value < 32) return static_cast<int>(value);
  const int octave = std::bit_width(static_cast<uint64_t>(value)) - 1;  // 5..21
  const int sub = static_cast<int>((value >> (octave - 4)) & 15);
  return 32 + (octave - 5) * 16 + sub;
}

double BucketMid(int index) {
  if (index < 32) return index;
  const int octave = 5 + (index - 32) / 16;
  const int sub = (index - 32) % 16;
  const int64_t width = int64_t{1} << (octave - 4);
  const int64_t low = (int64_t{1} << octave) + sub * width;
  return static_cast<double>(low) + static_cast<double>(width - 1) / 2.0;
}

}  // namespace histogram

void SparseHistogram::Add(int64_t value) {
  value = std::max<int64_t>(value, 0);
  const int bucket = histogram::BucketOf(value);
  auto it = std::lower_bound(buckets.begin(), buckets.end(), bucket,
                             [](const std::pair<int, int64_t>& e, int b) { return e.first < b; });
  if (it != buckets.end() && it->first == bucket) {
    ++it->second;
  } else {
    buckets.insert(it, {bucket, 1});
  }
  min = count == 0 ? value : std::min(min, value);
  max = count == 0 ? value : std::max(max, value);
  ++count;
}

void SparseHistogram::Merge(const SparseHistogram& other) {
  if (other.count == 0) return;
  std::vector<std::pair<int, int64_t>> merged;
  merged.reserve(buckets.size() + other.buckets.size());
  auto a = buckets.begin();
  auto b = other.buckets.begin();
  while (a != buckets.end() || b != other.buckets.end()) {
    if (b == other.buckets.end() || (a != buckets.end() && a->first < b->first)) {
      merged.push_back(*a++);
    } else if (a == buckets.end() || b->first < a->first) {
      merged.push_back(*b++);
    } else {
      merged.emplace_back(a->first, a->second + b->second);
      ++a;
      ++b;
    }
  }
  buckets = std::move(merged);
  min = count == 0 ? other.min : std::min(min, other.min);
  max = count == 0 ? other.max : std::max(max, other.max);
  count += other.count;
}

std::string SparseHistogram::Encode() const {
  std::string out;
  if (count == 0) return out;
  PutVarint(static_cast<uint64_t>(min), &out);
  PutVarint(static_cast<uint64_t>(max), &out);
  for (const auto& [bucket, n] : buckets) {
    PutVarint(static_cast<uint64_t>(bucket), &out);
    PutVarint(static_cast<uint64_t>(n), &out);
  }
  return out;
}

bool SparseHistogram::Decode(std::string_view bytes) {
  buckets.clear();
  count = min = max = 0;
  if (bytes.empty()) return true;
  auto fail = [this] {
    buckets.clear();
    count = min = max = 0;
    return false;
  };
  uint64_t lo = 0;
  uint64_t hi = 0;
  if (!GetVarint(&bytes, &lo) || !GetVarint(&bytes, &hi)) return fail();
  min = static_cast<int64_t>(lo);
  max = static_cast<int64_t>(hi);
  int last = -1;
  while (!bytes.empty()) {
    uint64_t bucket = 0;
    uint64_t n = 0;
    if (!GetVarint(&bytes, &bucket) || !GetVarint(&bytes, &n)) return fail();
    if (bucket >= static_cast<uint64_t>(histogram::kBuckets) ||
        static_cast<int>(bucket) <= last || n == 0) {
      return fail();
    }
    last = static_cast<int>(bucket);
    buckets.emplace_back(last, static_cast<int64_t>(n));
    count += static_cast<int64_t>(n);
  }
  if (count == 0) return fail();
  return true;
}

void LatencyHistogram::Merge(const SparseHistogram& h) {
  if (h.count == 0) return;
  for (const auto& [bucket, n] : h.buckets) counts_[bucket] += n;
  min_ = count_ == 0 ? h.min : std::min(min_, h.min);
  max_ = count_ == 0 ? h.max : std::max(max_, h.max);
  count_ += h.count;
}

void LatencyHistogram::Merge(const LatencyHistogram& h) {
  if (h.count_ == 0) return;
  for (int i = 0; i < histogram::kBuckets; ++i) counts_[i] += h.counts_[i];
  min_ = count_ == 0 ? h.min_ : std::min(min_, h.min_);
  max_ = count_ == 0 ? h.max_ : std::max(max_, h.max_);
  count_ += h.count_;
}

double LatencyHistogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  int64_t rank = static_cast<int64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<int64_t>(rank, 1, count_);
  int64_t seen = 0;
  for (int i = 0; i < histogram::kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::clamp(histogram::BucketMid(i), static_cast<double>(min_),
                        static_cast<double>(max_));
    }
  }
  return static_cast<double>(max_);
}

int64_t MinuteOf(SystemTime time) { return FloorDiv(ToUnixMillis(time), 60000); }

void UsageRollup::Add(const UsageRecord& r) {
  backend_name = r.backend_name;
  ++requests;
  if (IsErrorStatus(r.status)) ++errors;
  if (r.status == 429) ++rate_limited;
  upstream_429 += CountUpstream429(r.trace);
  prompt_tokens += r.prompt_tokens;
  completion_tokens += r.completion_tokens;
  latency.Add(r.latency_ms);
  if (r.ttfb_ms > 0) ttfb.Add(r.ttfb_ms);
}

void UsageRollup::Merge(const UsageRollup& o) {
  if (!o.backend_name.empty() || o.requests > 0) backend_name = o.backend_name;
  requests += o.requests;
  errors += o.errors;
  rate_limited += o.rate_limited;
  upstream_429 += o.upstream_429;
  prompt_tokens += o.prompt_tokens;
  completion_tokens += o.completion_tokens;
  latency.Merge(o.latency);
  ttfb.Merge(o.ttfb);
}

std::map<RollupKey, UsageRollup> RollUp(const std::vector<UsageRecord>& records) {
  std::map<RollupKey, UsageRollup> out;
  for (const UsageRecord& r : records) {
    const int64_t minute = MinuteOf(r.time);
    UsageRollup& cell = out[RollupKey{minute, r.backend_id, r.model}];
    if (cell.requests == 0) {
      cell.minute = minute;
      cell.backend_id = r.backend_id;
      cell.model = r.model;
    }
    cell.Add(r);
  }
  return out;
}

StatsPlan PlanStats(const StatsQuery& query) {
  StatsPlan plan;
  if (query.bucket_seconds < 60 || query.bucket_seconds % 60 != 0 || query.to <= query.from) {
    return plan;
  }
  const int64_t from_ms = ToUnixMillis(query.from);
  const int64_t to_ms = ToUnixMillis(query.to);
  plan.first_minute = -FloorDiv(-from_ms, 60000);  // ceil
  plan.end_minute = FloorDiv(to_ms, 60000);
  if (plan.first_minute >= plan.end_minute) return plan;
  plan.use_rollups = true;
  plan.rollup_from = FromUnixMillis(plan.first_minute * 60000);
  plan.rollup_to = FromUnixMillis(plan.end_minute * 60000);
  return plan;
}

int64_t SlotStart(int64_t minute, int span_minutes) {
  return FloorDiv(minute, span_minutes) * span_minutes;
}

std::map<RollupKey, UsageRollup> Coarsen(const std::map<RollupKey, UsageRollup>& minute_cells,
                                         int span_minutes) {
  std::map<RollupKey, UsageRollup> out;
  for (const auto& [key, cell] : minute_cells) {
    const int64_t slot = SlotStart(cell.minute, span_minutes);
    auto [it, inserted] = out.try_emplace(RollupKey{slot, cell.backend_id, cell.model}, cell);
    if (inserted) {
      it->second.minute = slot;
    } else {
      it->second.Merge(cell);
    }
  }
  return out;
}

namespace {

void CoverRange(int64_t from_ms, int64_t to_ms, const std::vector<int>& spans, size_t tier,
                std::vector<StatsSegment>* out) {
  if (from_ms >= to_ms) return;
  if (tier == spans.size()) {
    out->push_back(StatsSegment{0, FromUnixMillis(from_ms), FromUnixMillis(to_ms), 0, 0});
    return;
  }
  const int64_t width_ms = int64_t{spans[tier]} * 60000;
  const int64_t first = -FloorDiv(-from_ms, width_ms);  // slots, ceil
  const int64_t end = FloorDiv(to_ms, width_ms);
  if (first >= end) return CoverRange(from_ms, to_ms, spans, tier + 1, out);
  CoverRange(from_ms, first * width_ms, spans, tier + 1, out);
  out->push_back(StatsSegment{spans[tier], FromUnixMillis(first * width_ms),
                              FromUnixMillis(end * width_ms), first * spans[tier],
                              end * spans[tier]});
  CoverRange(end * width_ms, to_ms, spans, tier + 1, out);
}

}  // namespace

std::vector<StatsSegment> PlanTieredStats(const StatsQuery& query,
                                          std::vector<int> spans_minutes) {
  std::vector<int> usable;
  for (int span : spans_minutes) {
    if (span >= 1 && query.bucket_seconds % (int64_t{span} * 60) == 0) usable.push_back(span);
  }
  std::sort(usable.rbegin(), usable.rend());  // coarsest first
  std::vector<StatsSegment> out;
  CoverRange(ToUnixMillis(query.from), ToUnixMillis(query.to), usable, 0, &out);
  return out;
}

void UsageStatsBuilder::Accumulator::Add(const UsageRollup& r) {
  totals.requests += r.requests;
  totals.errors += r.errors;
  totals.rate_limited += r.rate_limited;
  totals.upstream_429 += r.upstream_429;
  totals.prompt_tokens += r.prompt_tokens;
  totals.completion_tokens += r.completion_tokens;
  latency.Merge(r.latency);
  ttfb.Merge(r.ttfb);
}

void UsageStatsBuilder::Accumulator::Merge(const Accumulator& o) {
  totals.requests += o.totals.requests;
  totals.errors += o.totals.errors;
  totals.rate_limited += o.totals.rate_limited;
  totals.upstream_429 += o.totals.upstream_429;
  totals.prompt_tokens += o.totals.prompt_tokens;
  totals.completion_tokens += o.totals.completion_tokens;
  latency.Merge(o.latency);
  ttfb.Merge(o.ttfb);
}

UsageAggregate UsageStatsBuilder::Accumulator::Finish() const {
  UsageAggregate out = totals;
  out.p50_ms = latency.Percentile(50);
  out.p95_ms = latency.Percentile(95);
  out.ttfb_p50_ms = ttfb.Percentile(50);
  out.ttfb_p95_ms = ttfb.Percentile(95);
  return out;
}

int64_t UsageStatsBuilder::BucketStart(int64_t unix_seconds) const {
  return FloorDiv(unix_seconds, bucket_seconds_) * bucket_seconds_;
}

void UsageStatsBuilder::Add(const UsageRecord& record) {
  UsageRollup one;
  one.minute = MinuteOf(record.time);
  one.backend_id = record.backend_id;
  one.model = record.model;
  one.Add(record);
  const int64_t seconds = FloorDiv(ToUnixMillis(record.time), 1000);
  AddAt(one, seconds);
}

void UsageStatsBuilder::Add(const UsageRollup& rollup) { AddAt(rollup, rollup.minute * 60); }

void UsageStatsBuilder::AddAt(const UsageRollup& r, int64_t unix_seconds) {
  Group& group = groups_[{r.backend_id, r.model}];
  group.acc.Add(r);
  if (group.backend_name.empty() || unix_seconds >= group.name_seconds) {
    group.name_seconds = unix_seconds;
    group.backend_name = r.backend_name;
  }
  const int64_t start = BucketStart(unix_seconds);
  if (last_bucket_ == nullptr || start != last_start_) {
    last_start_ = start;
    last_bucket_ = &by_bucket_[start];
    last_bucket_backends_ = &bucket_backends_[start];
  }
  last_bucket_->Add(r);
  (*last_bucket_backends_)[r.backend_name] += r.requests;
}

UsageStats UsageStatsBuilder::Build() {
  Accumulator all;
  std::map<std::string, Accumulator> by_backend;  // by backend id
  std::map<std::string, std::pair<int64_t, std::string>> names;  // id -> newest name
  std::map<std::string, Accumulator> by_model;
  for (const auto& [key, group] : groups_) {
    const auto& [backend_id, model] = key;
    all.Merge(group.acc);
    by_backend[backend_id].Merge(group.acc);
    by_model[model].Merge(group.acc);
    auto [it, inserted] = names.try_emplace(backend_id, group.name_seconds, group.backend_name);
    if (!inserted && group.name_seconds > it->second.first) {
      it->second = {group.name_seconds, group.backend_name};
    }
  }
  UsageStats stats;
  stats.totals = all.Finish();
  for (auto& [id, acc] : by_backend) {
    stats.by_backend.push_back(BackendUsage{id, names[id].second, acc.Finish()});
  }
  std::sort(stats.by_backend.begin(), stats.by_backend.end(),
            [](const BackendUsage& a, const BackendUsage& b) {
              if (a.usage.requests != b.usage.requests) return a.usage.requests > b.usage.requests;
              return a.backend_name < b.backend_name;
            });
  for (auto& [model, acc] : by_model) stats.by_model.push_back(ModelUsage{model, acc.Finish()});
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
