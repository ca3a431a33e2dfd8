// switchboard/rate_limiter.h
// Per-backend admission: a requests-per-minute token bucket, a
// tokens-per-minute bucket charged with the usage responses report, and a cap
// on requests in flight. Also paces a backend from the remaining quota its
// upstream reports (x-ratelimit-* / anthropic-ratelimit-* headers), so that it
// slows down before it answers 429.
//
//   RateLimiter limiter(clock);
//   auto slot = limiter.Attach("bkd_1", RateLimits{.rpm = 60});
//   Admission a = limiter.TryAcquire(*slot);
//   if (!a.admitted) { /* skip; a.available_at says when to try again */ }
//   ... send the request ...
//   limiter.Release(*slot);
//   limiter.ChargeTokens(*slot, usage.total_tokens);
#ifndef SWITCHBOARD_RATE_LIMITER_H_
#define SWITCHBOARD_RATE_LIMITER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "switchboard/clock.h"

namespace switchboard {

struct RateLimits {
  int64_t rpm = 0;              // requests per minute, 0 = unlimited
  int64_t tpm = 0;              // tokens per minute, 0 = unlimited
  int64_t max_concurrency = 0;  // requests in flight, 0 = unlimited

  friend bool operator==(const RateLimits&, const RateLimits&) = default;
};

// Which limit refused a request.
enum class LimitKind { kNone, kRequests, kTokens, kConcurrency, kUpstreamQuota };
std::string_view LimitKindName(LimitKind kind);  // "none" | "rpm" | "tpm" | "concurrency" | "upstream_quota"

struct Admission {
  bool admitted = false;
  LimitKind limited_by = LimitKind::kNone;
  // When refused: the earliest time the limit that refused may admit again.
  // For kConcurrency this is unknown and equals the time of the check.
  SteadyTime available_at{};
};

// An upstream's own view of its quota, from its response headers.
struct UpstreamQuota {
  std::optional<int64_t> remaining_requests;
  std::optional<Duration> requests_reset;  // time until the request quota refills
  std::optional<int64_t> remaining_tokens;
  std::optional<Duration> tokens_reset;
};

// Reads OpenAI (x-ratelimit-remaining-requests, x-ratelimit-reset-requests
// "1s"/"6m0s"/"20ms", and the -tokens pair) and Anthropic
// (anthropic-ratelimit-requests-remaining / -reset as RFC 3339, and the
// -tokens / -input-tokens / -output-tokens pairs) headers. Header names
// compare case-insensitively. `now` turns absolute reset times into durations.
UpstreamQuota ParseUpstreamQuota(const std::vector<std::pair<std::string, std::string>>& headers,
                                 SystemTime now);

// A snapshot of one backend's limiter, for metrics and the dashboard.
struct LimiterState {
  RateLimits limits;
  double request_tokens = 0;  // available now (capacity rpm when unlimited)
  double token_tokens = 0;    // available now; may be negative (debt)
  int64_t in_flight = 0;
  std::optional<SteadyTime> paused_until;  // set while upstream quota is exhausted
};

// Thread-safe, without a global lock on the hot path: each backend's state is
// its own Slot with its own mutex; the id -> slot map is only locked to attach
// or look up by id.
class RateLimiter {
 public:
  class Slot;  // One backend's buckets. Opaque; thread-safe.

  // `clock` must outlive the limiter.
  explicit RateLimiter(const Clock& clock);
  ~RateLimiter();
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // The slot for `backend_id`, created full (capacity rpm / tpm) on first use.
  // When the limits change, the buckets keep their level, capped at the new
  // capacity. The slot stays valid while anyone holds it, even after Detach.
  std::shared_ptr<Slot> Attach(const std::string& backend_id, const RateLimits& limits);
  // Forgets `backend_id`; a later Attach starts with full buckets.
  void Detach(const std::string& backend_id);
  // The slot for `backend_id`, or nullptr.
  std::shared_ptr<Slot> Find(const std::string& backend_id) const;

  // Whether an attempt would be admitted now, taking nothing.
  Admission Check(const Slot& slot) const;
  // Takes one request token and one concurrency slot, or nothing at all.
  Admission TryAcquire(Slot& slot) const;
  // Gives back the concurrency slot of an admitted attempt.
  void Release(Slot& slot) const;
  // Gives back the request token and concurrency slot of an admitted attempt
  // that was never sent.
  void Refund(Slot& slot) const;
  // Charges `tokens` (prompt + completion) to the tokens-per-minute bucket.
  // The bucket may go negative; it then refuses until it has refilled.
  void ChargeTokens(Slot& slot, int64_t tokens) const;
  // Fills the request and tokens buckets to capacity (a tokens debt is
  // forgiven), e.g. when another authority (a shared state) takes over.
  void Fill(Slot& slot) const;
  // Paces the backend from what its upstream reports: with no requests (or
  // tokens) remaining it admits nothing until the reported reset; with few
  // left it spreads them evenly over the time to the reset.
  void ApplyUpstreamQuota(Slot& slot, const UpstreamQuota& quota) const;

  LimiterState State(const Slot& slot) const;

 private:
  const Clock& clock_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Slot>> slots_;  // guarded by mu_
};

}  // namespace switchboard

#endif  // SWITCHBOARD_RATE_LIMITER_H_
