#include "switchboard/rate_limiter.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchboard {
namespace {

using std::chrono::microseconds;

// Bucket levels are fixed point: one token is 60,000,000 units, the number of
// microseconds in a minute, so a bucket refilled at L tokens per minute gains
// exactly L units per microsecond. Integer arithmetic keeps the accounting
// exact however often the level is refilled: a double drifts by an ulp per
// refill, and then a bucket can hold 0.9999999 tokens at the instant it was
// promised to hold 1.
constexpr int64_t kUnitsPerToken = 60'000'000;

// Limits above this count as this, so that a full bucket (6e17 units) and the
// deepest debt below stay far from int64 overflow. 1e10 per minute is beyond
// any upstream's quota.
constexpr int64_t kMaxLimit = 10'000'000'000;
// ChargeTokens never takes a level below this.
constexpr int64_t kMinLevel = -4'000'000'000'000'000'000;
// A wait computed from a deep debt is capped here, so that it still fits a SteadyTime.
constexpr int64_t kMaxWaitMicros = int64_t{365} * 24 * 3600 * 1'000'000;
// An upstream reset longer than this is taken as this: it guards the pause
// arithmetic against nonsense headers, and no real quota window is longer.
constexpr Duration kMaxUpstreamReset = std::chrono::hours(24);
// With fewer requests than this left in the upstream's window, requests are
// paced (see Slot::ApplyUpstreamQuota).
constexpr int64_t kPacingThreshold = 10;

int64_t ClampLimit(int64_t limit) { return std::clamp<int64_t>(limit, 0, kMaxLimit); }

// A token bucket holding up to `per_minute` tokens, refilled continuously at
// `per_minute` / 60 per second. per_minute 0 means unlimited; the level is then 0.
struct Bucket {
  int64_t per_minute = 0;
  int64_t level = 0;  // in units; negative while in debt

  explicit Bucket(int64_t limit) : per_minute(ClampLimit(limit)), level(capacity()) {}

  bool unlimited() const { return per_minute == 0; }
  int64_t capacity() const { return per_minute * kUnitsPerToken; }

  void Refill(int64_t micros) {
    if (unlimited() || level >= capacity()) return;
    // Compare before multiplying: a long idle gap times the rate may overflow.
    const int64_t to_full = (capacity() - level + per_minute - 1) / per_minute;
    level = micros >= to_full ? capacity() : level + micros * per_minute;
  }

  // Microseconds of refill until the level reaches `target`. REQUIRES: !unlimited().
  int64_t MicrosUntil(int64_t target) const {
    if (level >= target) return 0;
    return std::min((target - level + per_minute - 1) / per_minute, kMaxWaitMicros);
  }

  void SetLimit(int64_t limit) {
    const int64_t next = ClampLimit(limit);
    if (next == per_minute) return;
    const bool was_unlimited = unlimited();
    per_minute = next;
    if (unlimited()) {
      level = 0;
    } else if (was_unlimited) {
      level = capacity();  // nothing was tracked while unlimited: start full
    } else {
      level = std::min(level, capacity());  // keeps any debt
    }
  }

  void Take(int64_t units) {
    if (unlimited() || units <= 0) return;
    level = level - kMinLevel > units ? level - units : kMinLevel;
  }

  void Give(int64_t units) {
    if (unlimited() || units <= 0) return;
    level = std::min(level, capacity() - units) + units;
  }

  double tokens() const { return static_cast<double>(level) / kUnitsPerToken; }
};

// Both buckets of a slot, refilled together up to `refilled_at`.
struct Buckets {
  Bucket requests;
  Bucket tokens;
  // Refill has been credited up to here. Only whole microseconds are
  // credited; the remainder carries over to the next refill.
  SteadyTime refilled_at;

  Buckets(const RateLimits& limits, SteadyTime now)
      : requests(limits.rpm), tokens(limits.tpm), refilled_at(now) {}

  void RefillTo(SteadyTime now) {
    if (now <= refilled_at) return;
    const int64_t micros = std::chrono::duration_cast<microseconds>(now - refilled_at).count();
    if (micros == 0) return;
    refilled_at += microseconds(micros);
    requests.Refill(micros);
    tokens.Refill(micros);
  }

  SteadyTime TimeWhen(const Bucket& bucket, int64_t target) const {
    return refilled_at + microseconds(bucket.MicrosUntil(target));
  }
};

Admission Refused(LimitKind kind, SteadyTime available_at) {
  Admission a;
  a.admitted = false;
  a.limited_by = kind;
  a.available_at = available_at;
  return a;
}

using Headers = std::vector<std::pair<std::string, std::string>>;

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The value of the first header named `name`, without surrounding whitespace.
std::optional<std::string_view> FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return TrimOws(value);
  }
  return std::nullopt;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A non-negative decimal integer, digits only.
std::optional<int64_t> ParseCount(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int64_t value = 0;
  for (char c : text) {
    if (!IsDigit(c)) return std::nullopt;
    const int digit = c - '0';
    if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

int64_t GoUnitNanos(std::string_view unit) {
  if (unit == "ns") return 1;
  if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") return 1'000;  // us, µs, μs
  if (unit == "ms") return 1'000'000;
  if (unit == "s") return 1'000'000'000;
  if (unit == "m") return 60'000'000'000;
  if (unit == "h") return 3'600'000'000'000;
  return 0;
}

// A Go time.Duration string as OpenAI sends it: "1s", "6m0s", "20ms",
// "1h2m3.5s", "0.5s", or "0". Negative durations and overflow are rejected.
std::optional<Duration> ParseGoDuration(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s == "0") return Duration::zero();
  if (s.empty()) return std::nullopt;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t total = 0;
  while (!s.empty()) {
    size_t i = 0;
    int64_t whole = 0;
    while (i < s.size() && IsDigit(s[i])) {
      const int digit = s[i] - '0';
      if (whole > (kMax - digit) / 10) return std::nullopt;
      whole = whole * 10 + digit;
      ++i;
    }
    const bool has_whole = i > 0;
    // Fraction digits beyond 18 are below a nanosecond even for hours.
    int64_t fraction = 0;
    int64_t scale = 1;
    bool has_fraction = false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && IsDigit(s[i])) {
        if (scale < 1'000'000'000'000'000'000) {
          fraction = fraction * 10 + (s[i] - '0');
          scale *= 10;
        }
        has_fraction = true;
        ++i;
      }
    }
    if (!has_whole && !has_fraction) return std::nullopt;
    size_t end = i;
    while (end < s.size() && !IsDigit(s[end]) && s[end] != '.') ++end;
    const int64_t unit = GoUnitNanos(s.substr(i, end - i));
    if (unit == 0) return std::nullopt;
    if (whole > kMax / unit) return std::nullopt;
    int64_t nanos = whole * unit;
    const auto fraction_nanos = static_cast<int64_t>(std::llround(
        static_cast<double>(fraction) / static_cast<double>(scale) * static_cast<double>(unit)));
    if (fraction_nanos > kMax - nanos) return std::nullopt;
    nanos += fraction_nanos;
    if (nanos > kMax - total) return std::nullopt;
    total += nanos;
    s.remove_prefix(end);
  }
  return Duration(total);
}

// An RFC 3339 reset time as Anthropic sends it, as the time left until it.
std::optional<Duration> ParseResetTime(std::string_view text, SystemTime now) {
  const std::optional<SystemTime> reset = ParseRfc3339(text);
  if (!reset) return std::nullopt;
  if (*reset <= now) return Duration::zero();
  return std::chrono::duration_cast<Duration>(*reset - now);
}

struct QuotaPair {
  std::optional<int64_t> remaining;
  std::optional<Duration> reset;
};

QuotaPair ReadOpenAiPair(const Headers& headers, std::string_view kind) {
  QuotaPair pair;
  const std::string prefix = "x-ratelimit-";
  if (auto v = FindHeader(headers, prefix + "remaining-" + std::string(kind))) {
    pair.remaining = ParseCount(*v);
  }
  if (auto v = FindHeader(headers, prefix + "reset-" + std::string(kind))) {
    pair.reset = ParseGoDuration(*v);
  }
  return pair;
}

QuotaPair ReadAnthropicPair(const Headers& headers, std::string_view kind, SystemTime now) {
  QuotaPair pair;
  const std::string prefix = "anthropic-ratelimit-" + std::string(kind);
  if (auto v = FindHeader(headers, prefix + "-remaining")) pair.remaining = ParseCount(*v);
  if (auto v = FindHeader(headers, prefix + "-reset")) pair.reset = ParseResetTime(*v, now);
  return pair;
}

// Anthropic reports input and output tokens separately on some plans; the
// backend is as limited as the scarcer of the two.
QuotaPair ScarcerPair(const QuotaPair& a, const QuotaPair& b) {
  if (!a.remaining) return b;
  if (!b.remaining) return a;
  if (*a.remaining != *b.remaining) return *a.remaining < *b.remaining ? a : b;
  // Equally scarce: the one that takes longer to reset.
  return b.reset.value_or(Duration::zero()) > a.reset.value_or(Duration::zero()) ? b : a;
}

}  // namespace

// One backend's limiter state. Every member function locks mu_ and reads the
// clock under it, so calls on one slot are totally ordered in time and
// refill never runs backwards.
class RateLimiter::Slot {
 public:
  Slot(const RateLimits& limits, SteadyTime now) : limits_(limits), buckets_(limits, now) {}

  void SetLimits(const RateLimits& limits, const Clock& clock) {
    std::lock_guard<std::mutex> lock(mu_);
    if (limits == limits_) return;
    // Credit the refill earned under the old rates before switching.
    buckets_.RefillTo(clock.Now());
    buckets_.requests.SetLimit(limits.rpm);
    buckets_.tokens.SetLimit(limits.tpm);
    limits_ = limits;
  }

  void Fill() {
    std::lock_guard<std::mutex> lock(mu_);
    buckets_.requests.level = buckets_.requests.capacity();
    buckets_.tokens.level = buckets_.tokens.capacity();
  }

  Admission Check(const Clock& clock) const {
    std::lock_guard<std::mutex> lock(mu_);
    const SteadyTime now = clock.Now();
    Buckets view = buckets_;
    view.RefillTo(now);
    return DecideLocked(view, now);
  }

  Admission TryAcquire(const Clock& clock) {
    std::lock_guard<std::mutex> lock(mu_);
    const SteadyTime now = clock.Now();
    buckets_.RefillTo(now);
    Admission a = DecideLocked(buckets_, now);
    if (!a.admitted) return a;
    buckets_.requests.Take(kUnitsPerToken);
    ++in_flight_;
    if (now < pace_until_) next_allowed_ = std::max(next_allowed_, now + pace_interval_);
    return a;
  }

  void Release(bool refund) {
    std::lock_guard<std::mutex> lock(mu_);
    if (in_flight_ > 0) --in_flight_;
    if (refund) buckets_.requests.Give(kUnitsPerToken);
  }

  void ChargeTokens(int64_t tokens, const Clock& clock) {
    if (tokens <= 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (buckets_.tokens.unlimited()) return;
    buckets_.RefillTo(clock.Now());
    if (tokens >= (buckets_.tokens.level - kMinLevel) / kUnitsPerToken) {
      buckets_.tokens.level = kMinLevel;
    } else {
      buckets_.tokens.Take(tokens * kUnitsPerToken);
    }
  }

  // The rules, applied to the fields present (a missing field changes nothing):
  //  - No requests (or tokens) remaining, with a reset duration D: admit
  //    nothing for D. A pause is only ever extended, never shortened.
  //  - R requests remaining, 0 < R < kPacingThreshold, with a reset duration
  //    D > 0: admit at most one request per D / (R + 1) until D has passed.
  //    Spacing by R + 1 rather than R puts the R-th request before the
  //    window ends instead of on its edge, where clock skew between us and
  //    the upstream could make it the one that is refused.
  //  - Any other report of remaining requests ends the pacing.
  void ApplyUpstreamQuota(const UpstreamQuota& quota, const Clock& clock) {
    std::lock_guard<std::mutex> lock(mu_);
    const SteadyTime now = clock.Now();
    if (quota.remaining_requests) {
      const int64_t remaining = *quota.remaining_requests;
      const std::optional<Duration> reset = ClampReset(quota.requests_reset);
      if (remaining <= 0) {
        if (reset) {
          PauseUntilLocked(now + *reset);
          ClearPacingLocked();
        }
      } else if (remaining < kPacingThreshold && reset && *reset > Duration::zero()) {
        pace_interval_ = *reset / (remaining + 1);
        pace_until_ = now + *reset;
        next_allowed_ = now + pace_interval_;
      } else {
        ClearPacingLocked();
      }
    }
    if (quota.remaining_tokens && *quota.remaining_tokens <= 0) {
      if (const std::optional<Duration> reset = ClampReset(quota.tokens_reset)) {
        PauseUntilLocked(now + *reset);
      }
    }
  }

  LimiterState State(const Clock& clock) const {
    std::lock_guard<std::mutex> lock(mu_);
    const SteadyTime now = clock.Now();
    Buckets view = buckets_;
    view.RefillTo(now);
    LimiterState state;
    state.limits = limits_;
    state.request_tokens = view.requests.tokens();
    state.token_tokens = view.tokens.tokens();
    state.in_flight = in_flight_;
    if (now < paused_until_) state.paused_until = paused_until_;
    return state;
  }

 private:
  static std::optional<Duration> ClampReset(std::optional<Duration> reset) {
    if (!reset) return std::nullopt;
    return std::clamp(*reset, Duration::zero(), kMaxUpstreamReset);
  }

  // REQUIRES: mu_ held
  void PauseUntilLocked(SteadyTime until) { paused_until_ = std::max(paused_until_, until); }

  // REQUIRES: mu_ held
  void ClearPacingLocked() {
    pace_interval_ = Duration::zero();
    pace_until_ = SteadyTime();
    next_allowed_ = SteadyTime();
  }

  // The decision on `buckets` (already refilled to `now`), taking nothing.
  // REQUIRES: mu_ held
  Admission DecideLocked(const Buckets& buckets, SteadyTime now) const {
    // Pacing ends with the upstream's window, even if the last paced
    // admission pushed next_allowed_ past it.
    const SteadyTime upstream_gate = std::max(paused_until_, std::min(next_allowed_, pace_until_));
    if (now < upstream_gate) return Refused(LimitKind::kUpstreamQuota, upstream_gate);
    const Bucket& requests = buckets.requests;
    if (!requests.unlimited() && requests.level < kUnitsPerToken) {
      return Refused(LimitKind::kRequests, buckets.TimeWhen(requests, kUnitsPerToken));
    }
    // A request's size is unknown until it is answered, so any positive level
    // admits it. The earliest admission is one unit above zero, which is
    // always strictly after now: refill is credited in whole microseconds.
    const Bucket& tokens = buckets.tokens;
    if (!tokens.unlimited() && tokens.level <= 0) {
      return Refused(LimitKind::kTokens, buckets.TimeWhen(tokens, 1));
    }
    if (limits_.max_concurrency > 0 && in_flight_ >= limits_.max_concurrency) {
      return Refused(LimitKind::kConcurrency, now);
    }
    Admission a;
    a.admitted = true;
    return a;
  }

  mutable std::mutex mu_;
  RateLimits limits_;         // guarded by mu_
  Buckets buckets_;           // guarded by mu_
  int64_t in_flight_ = 0;     // guarded by mu_
  SteadyTime paused_until_;   // guarded by mu_; epoch when not paused
  Duration pace_interval_{};  // guarded by mu_
  SteadyTime pace_until_;     // guarded by mu_; epoch when not pacing
  SteadyTime next_allowed_;   // guarded by mu_
};

std::string_view LimitKindName(LimitKind kind) {
  switch (kind) {
    case LimitKind::kNone:
      return "none";
    case LimitKind::kRequests:
      return "rpm";
    case LimitKind::kTokens:
      return "tpm";
    case LimitKind::kConcurrency:
      return "concurrency";
    case LimitKind::kUpstreamQuota:
      return "upstream_quota";
  }
  return "unknown";
}

UpstreamQuota ParseUpstreamQuota(const std::vector<std::pair<std::string, std::string>>& headers,
                                 SystemTime now) {
  const QuotaPair openai_requests = ReadOpenAiPair(headers, "requests");
  const QuotaPair openai_tokens = ReadOpenAiPair(headers, "tokens");
  const QuotaPair anthropic_requests = ReadAnthropicPair(headers, "requests", now);
  QuotaPair anthropic_tokens = ReadAnthropicPair(headers, "tokens", now);
  if (!anthropic_tokens.remaining) {
    anthropic_tokens = ScarcerPair(ReadAnthropicPair(headers, "input-tokens", now),
                                   ReadAnthropicPair(headers, "output-tokens", now));
  }
  // An upstream speaks one dialect; should both appear, OpenAI's wins field by field.
  UpstreamQuota quota;
  quota.remaining_requests =
      openai_requests.remaining ? openai_requests.remaining : anthropic_requests.remaining;
  quota.requests_reset = openai_requests.reset ? openai_requests.reset : anthropic_requests.reset;
  quota.remaining_tokens =
      openai_tokens.remaining ? openai_tokens.remaining : anthropic_tokens.remaining;
  quota.tokens_reset = openai_tokens.reset ? openai_tokens.reset : anthropic_tokens.reset;
  return quota;
}

RateLimiter::RateLimiter(const Clock& clock) : clock_(clock) {}

RateLimiter::~RateLimiter() = default;

std::shared_ptr<RateLimiter::Slot> RateLimiter::Attach(const std::string& backend_id,
                                                       const RateLimits& limits) {
  std::shared_ptr<Slot> slot;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    auto [it, inserted] = slots_.try_emplace(backend_id);
    if (inserted) {
      it->second = std::make_shared<Slot>(limits, clock_.Now());
      return it->second;
    }
    slot = it->second;
  }
  // Outside the map lock: the slot has its own.
  slot->SetLimits(limits, clock_);
  return slot;
}

void RateLimiter::Detach(const std::string& backend_id) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  slots_.erase(backend_id);
}

std::shared_ptr<RateLimiter::Slot> RateLimiter::Find(const std::string& backend_id) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = slots_.find(backend_id);
  return it == slots_.end() ? nullptr : it->second;
}

Admission RateLimiter::Check(const Slot& slot) const { return slot.Check(clock_); }

Admission RateLimiter::TryAcquire(Slot& slot) const { return slot.TryAcquire(clock_); }

void RateLimiter::Release(Slot& slot) const { slot.Release(/*refund=*/false); }

void RateLimiter::Refund(Slot& slot) const { slot.Release(/*refund=*/true); }

void RateLimiter::Fill(Slot& slot) const { slot.Fill(); }

void RateLimiter::ChargeTokens(Slot& slot, int64_t tokens) const {
  slot.ChargeTokens(tokens, clock_);
}

void RateLimiter::ApplyUpstreamQuota(Slot& slot, const UpstreamQuota& quota) const {
  slot.ApplyUpstreamQuota(quota, clock_);
}

LimiterState RateLimiter::State(const Slot& slot) const { return slot.State(clock_); }

}  // namespace switchboard
