#include "switchboard/cooldown_manager.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <mutex>
#include <system_error>

namespace switchboard {

// One backend's live health. Every field is guarded by `mu`.
class CooldownManager::Slot {
 public:
  explicit Slot(const Backend& backend) : name(backend.name) {
    state.backend_id = backend.id;
    state.status = backend.status;
    state.cooldown_until = backend.cooldown_until;
    state.consecutive_429_count = backend.consecutive_429_count;
    state.consecutive_failures = backend.consecutive_failures;
    state.last_error = backend.last_error;
  }

  mutable std::mutex mu;
  std::string name;              // guarded by mu
  BackendState state;            // guarded by mu
  bool trial_in_flight = false;  // guarded by mu

  // Delivery to the sink. Changes are published outside `mu` by one thread at
  // a time (the "publisher"), always sending the slot's newest state, so that a
  // sink never ends up with an older state than the slot after concurrent
  // outcomes (two callers each sending their own copy could arrive reversed).
  uint64_t version = 0;                           // guarded by mu: bumped per change
  uint64_t published_version = 0;                 // guarded by mu
  std::vector<CooldownEvent> unpublished_events;  // guarded by mu
  bool publishing = false;                        // guarded by mu
};

namespace {

using Slot = CooldownManager::Slot;

// Retry-After values beyond this are treated as this long; callers cap
// cooldowns far lower, and it keeps the arithmetic clear of overflow.
constexpr Duration kMaxRetryAfter = std::chrono::hours(24 * 3650);

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Strips HTTP optional whitespace.
std::string_view TrimOws(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// retry-after-ms: a non-negative decimal number of milliseconds.
std::optional<Duration> ParseRetryAfterMillis(std::string_view v) {
  // from_chars accepts "-1", "inf" and "nan"; none is a valid delay.
  if (v.empty() || v.front() == '-') return std::nullopt;
  double ms = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
  if (ec != std::errc() || end != v.data() + v.size() || !std::isfinite(ms) || ms < 0) {
    return std::nullopt;
  }
  const double max_ms = std::chrono::duration<double, std::milli>(kMaxRetryAfter).count();
  if (ms >= max_ms) return kMaxRetryAfter;
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(ms));
}

// Retry-After delta-seconds: 1*DIGIT.
std::optional<Duration> ParseDeltaSeconds(std::string_view v) {
  if (v.empty()) return std::nullopt;
  const int64_t max_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(kMaxRetryAfter).count();
  int64_t seconds = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    // Saturate rather than overflow on absurdly long values.
    seconds = std::min(max_seconds, seconds * 10 + (c - '0'));
  }
  return std::chrono::seconds(seconds);
}

// How long `date` is after `now`, clamped to [0, kMaxRetryAfter].
Duration UntilDate(SystemTime date, SystemTime now) {
  if (date <= now) return Duration::zero();
  // Compare whole seconds first: the nanosecond difference of two extreme
  // times does not fit in a Duration.
  const auto seconds = [](SystemTime t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  };
  const int64_t max_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(kMaxRetryAfter).count();
  if (seconds(date) - seconds(now) >= max_seconds) return kMaxRetryAfter;
  return date - now;
}

// min(base * 2^(n-1), max) without overflowing for large n.
Duration Backoff(Duration base, Duration max, int n) {
  if (base <= Duration::zero() || max <= Duration::zero()) return Duration::zero();
  if (base >= max) return max;
  Duration d = base;
  for (int i = 1; i < n; ++i) {
    if (d > max / 2) return max;
    d *= 2;
  }
  return std::min(d, max);
}

// The cooldown for the n-th consecutive strike: the backoff, lengthened by
// the upstream's Retry-After, never beyond policy.max.
Duration CooldownFor(const CooldownPolicy& policy, int n, std::optional<Duration> retry_after) {
  Duration d = Backoff(policy.base, policy.max, n);
  if (retry_after) d = std::max(d, *retry_after);
  return std::clamp(d, Duration::zero(), std::max(policy.max, Duration::zero()));
}

void SaturatingIncrement(int& counter) {
  if (counter < std::numeric_limits<int>::max()) ++counter;
}

// Sets cooldown_until to `until` unless a later one is already set. Returns
// whether the cooldown is new or longer.
bool ExtendCooldown(BackendState& state, SystemTime until) {
  if (state.cooldown_until && *state.cooldown_until >= until) return false;
  state.cooldown_until = until;
  return true;
}

std::string DescribeFailure(const AttemptOutcome& outcome) {
  switch (outcome.transport_error) {
    case TransportError::kConnect: return "connect failed";
    case TransportError::kTimeout: return "timed out";
    case TransportError::kReset: return "connection reset";
    case TransportError::kProtocol: return "protocol error";
    case TransportError::kCancelled: return "cancelled";
    case TransportError::kNone: break;
  }
  if (outcome.http_status == 0) return "no response from upstream";
  return std::to_string(outcome.http_status) + " from upstream";
}

// The HTTP status an event records: 0 when the attempt failed below HTTP.
int UpstreamStatus(const AttemptOutcome& outcome) {
  return outcome.transport_error == TransportError::kNone ? outcome.http_status : 0;
}

// REQUIRES: slot.mu held
CooldownEvent MakeEventLocked(const Slot& slot, SystemTime now, std::string reason,
                              int upstream_status) {
  CooldownEvent event;
  event.backend_id = slot.state.backend_id;
  event.backend_name = slot.name;
  event.start = now;
  event.until = slot.state.cooldown_until.value_or(now);
  event.reason = std::move(reason);
  event.upstream_status = upstream_status;
  return event;
}

// REQUIRES: slot.mu held
CooldownCheck CheckLocked(const Slot& slot, SystemTime now) {
  CooldownCheck check;
  const BackendState& state = slot.state;
  const bool cooling = state.cooldown_until && *state.cooldown_until > now;
  if (state.status == BackendStatus::kError) {
    if (cooling) {
      check.until = *state.cooldown_until;
      check.reason = "error";
    } else if (slot.trial_in_flight) {
      check.until = now;
      check.reason = "half_open_busy";
    } else {
      check.available = true;
      check.half_open = true;
    }
    return check;
  }
  if (cooling) {
    check.until = *state.cooldown_until;
    check.reason = "cooling";
    return check;
  }
  check.available = true;
  return check;
}

// Sends the slot's unpublished state and events until there are none left.
// REQUIRES: slot.mu not held; the caller set slot.publishing.
void PublishLoop(Slot& slot, StateSink& sink) {
  std::unique_lock<std::mutex> lock(slot.mu);
  while (slot.published_version != slot.version || !slot.unpublished_events.empty()) {
    std::optional<BackendState> state;
    if (slot.published_version != slot.version) {
      state = slot.state;
      slot.published_version = slot.version;
    }
    std::vector<CooldownEvent> events;
    events.swap(slot.unpublished_events);
    lock.unlock();
    if (state) sink.OnBackendState(*state);
    for (const CooldownEvent& event : events) sink.OnCooldownEvent(event);
    lock.lock();
  }
  slot.publishing = false;
}

// Runs `change` on the slot under its lock; `change` returns the cooldown
// event to emit, if any. A changed state (or any state, when `always_publish`)
// and the event then go to `sink` with the lock released. Returns the state
// right after the change.
template <typename Change>
BackendState ApplyChange(Slot& slot, StateSink* sink, bool always_publish, Change change) {
  BackendState after;
  bool publish = false;
  {
    std::lock_guard<std::mutex> lock(slot.mu);
    const BackendState before = slot.state;
    std::optional<CooldownEvent> event = change(slot);
    if (always_publish || slot.state != before) ++slot.version;
    after = slot.state;
    if (sink != nullptr) {
      if (event) slot.unpublished_events.push_back(std::move(*event));
      // Whoever is publishing already will pick this change up too.
      publish = !slot.publishing &&
                (slot.published_version != slot.version || !slot.unpublished_events.empty());
      if (publish) slot.publishing = true;
    } else {
      slot.published_version = slot.version;
    }
  }
  if (publish) PublishLoop(slot, *sink);
  return after;
}

// Applies one attempt's outcome (contract rules 4-8) to the slot. Returns the
// cooldown event to record, if any.
// REQUIRES: slot.mu held
std::optional<CooldownEvent> ApplyOutcomeLocked(Slot& slot, const AttemptOutcome& outcome,
                                                OutcomeClass outcome_class,
                                                const CooldownPolicy& policy,
                                                std::optional<Duration> retry_after,
                                                SystemTime now) {
  // A threshold below 1 would let k overflow; 1 means "every failure".
  const int threshold = std::max(1, policy.error_threshold);
  // The API cannot tell the trial's outcome from a straggler's, so any
  // outcome ends the trial; at worst a second trial follows.
  slot.trial_in_flight = false;
  BackendState& state = slot.state;
  switch (outcome_class) {
    case OutcomeClass::kSuccess:
      // Any 2xx means healthy, even one from a request that started before
      // a cooldown that is still running.
      state.status = BackendStatus::kHealthy;
      state.consecutive_429_count = 0;
      state.consecutive_failures = 0;
      state.last_error.clear();
      state.cooldown_until.reset();
      return std::nullopt;

    case OutcomeClass::kRateLimited: {
      SaturatingIncrement(state.consecutive_429_count);
      // A 429 proves the backend answers and accepts the key: it ends a
      // failure streak, and an error state becomes a plain cooldown (the
      // running cooldown is kept; it is never shortened).
      state.consecutive_failures = 0;
      state.status = BackendStatus::kCooling;
      state.last_error = "429 rate limited by upstream";
      const Duration d = CooldownFor(policy, state.consecutive_429_count, retry_after);
      if (!ExtendCooldown(state, now + d)) return std::nullopt;
      return MakeEventLocked(slot, now, "rate_limited", 429);
    }

    case OutcomeClass::kFailure: {
      SaturatingIncrement(state.consecutive_failures);
      state.last_error = DescribeFailure(outcome);
      const bool was_error = state.status == BackendStatus::kError;
      if (!was_error && state.consecutive_failures < threshold) return std::nullopt;
      state.status = BackendStatus::kError;
      const int k = std::max(1, state.consecutive_failures - threshold + 1);
      const bool extended = ExtendCooldown(state, now + CooldownFor(policy, k, retry_after));
      if (!extended && was_error) return std::nullopt;
      return MakeEventLocked(slot, now, "errors", UpstreamStatus(outcome));
    }

    case OutcomeClass::kAuthError: {
      const bool was_error = state.status == BackendStatus::kError;
      state.status = BackendStatus::kError;
      state.last_error =
          std::to_string(outcome.http_status) + " from upstream: check the backend's API key";
      // The longest cooldown before the half-open trial: someone has to fix
      // the key, and a trial every few seconds would only collect 401s.
      const bool extended = ExtendCooldown(state, now + std::max(policy.max, Duration::zero()));
      if (!extended && was_error) return std::nullopt;
      return MakeEventLocked(slot, now, "auth", outcome.http_status);
    }

    case OutcomeClass::kClientError:
    case OutcomeClass::kCancelled: return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

const std::string* FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return &value;
  }
  return nullptr;
}

std::string_view TransportErrorName(TransportError e) {
  switch (e) {
    case TransportError::kNone: return "none";
    case TransportError::kConnect: return "connect";
    case TransportError::kTimeout: return "timeout";
    case TransportError::kReset: return "reset";
    case TransportError::kProtocol: return "protocol";
    case TransportError::kCancelled: return "cancelled";
  }
  return "unknown";
}

OutcomeClass Classify(const AttemptOutcome& outcome) {
  if (outcome.transport_error == TransportError::kCancelled) return OutcomeClass::kCancelled;
  if (outcome.transport_error != TransportError::kNone) return OutcomeClass::kFailure;
  const int status = outcome.http_status;
  if (status >= 200 && status < 300) return OutcomeClass::kSuccess;
  if (status == 429) return OutcomeClass::kRateLimited;
  if (status == 401 || status == 403) return OutcomeClass::kAuthError;
  if (status >= 400 && status < 500) return OutcomeClass::kClientError;
  // 5xx, no response at all, and 1xx/3xx: we never follow redirects, so an
  // API answering 3xx is as broken as one answering 5xx.
  return OutcomeClass::kFailure;
}

std::optional<Duration> ParseRetryAfter(const Headers& headers, SystemTime now) {
  if (const std::string* ms = FindHeader(headers, "retry-after-ms")) {
    if (auto d = ParseRetryAfterMillis(TrimOws(*ms))) return d;
  }
  if (const std::string* value = FindHeader(headers, "retry-after")) {
    const std::string_view v = TrimOws(*value);
    if (auto d = ParseDeltaSeconds(v)) return d;
    if (auto date = ParseHttpDate(v)) return UntilDate(*date, now);
  }
  return std::nullopt;
}

CooldownPolicy CooldownPolicy::FromConfig(const Config& config) {
  CooldownPolicy policy;
  policy.base = std::chrono::seconds(config.cooldown_base_seconds);
  policy.max = std::chrono::seconds(config.cooldown_max_seconds);
  policy.error_threshold = config.error_threshold;
  return policy;
}

CooldownManager::CooldownManager(const Clock& clock, StateSink* sink)
    : clock_(clock), sink_(sink) {}

CooldownManager::~CooldownManager() = default;

std::shared_ptr<CooldownManager::Slot> CooldownManager::Attach(const Backend& backend) {
  std::shared_ptr<Slot> slot;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    std::shared_ptr<Slot>& entry = slots_[backend.id];
    if (entry == nullptr) {
      entry = std::make_shared<Slot>(backend);
      return entry;
    }
    slot = entry;
  }
  std::lock_guard<std::mutex> lock(slot->mu);
  slot->name = backend.name;
  return slot;
}

void CooldownManager::Detach(const std::string& backend_id) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  slots_.erase(backend_id);
}

std::shared_ptr<CooldownManager::Slot> CooldownManager::Find(const std::string& backend_id) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = slots_.find(backend_id);
  return it == slots_.end() ? nullptr : it->second;
}

CooldownCheck CooldownManager::Check(const Slot& slot) const {
  const SystemTime now = clock_.WallNow();
  std::lock_guard<std::mutex> lock(slot.mu);
  return CheckLocked(slot, now);
}

CooldownCheck CooldownManager::TryBegin(Slot& slot) const {
  const SystemTime now = clock_.WallNow();
  std::lock_guard<std::mutex> lock(slot.mu);
  CooldownCheck check = CheckLocked(slot, now);
  if (check.available && check.half_open) slot.trial_in_flight = true;
  return check;
}

void CooldownManager::Abandon(Slot& slot) const {
  std::lock_guard<std::mutex> lock(slot.mu);
  slot.trial_in_flight = false;
}

BackendState CooldownManager::OnOutcome(Slot& slot, const AttemptOutcome& outcome,
                                        const CooldownPolicy& policy) const {
  const OutcomeClass outcome_class = Classify(outcome);
  const SystemTime now = clock_.WallNow();
  std::optional<Duration> retry_after;
  if (outcome_class == OutcomeClass::kRateLimited || outcome_class == OutcomeClass::kFailure) {
    retry_after = ParseRetryAfter(outcome.headers, now);
  }
  return ApplyChange(slot, sink_, /*always_publish=*/false, [&](Slot& s) {
    return ApplyOutcomeLocked(s, outcome, outcome_class, policy, retry_after, now);
  });
}

void CooldownManager::CoolUntil(Slot& slot, SystemTime until, std::string reason) const {
  const SystemTime now = clock_.WallNow();
  if (until <= now) return;
  ApplyChange(slot, sink_, /*always_publish=*/false, [&](Slot& s) -> std::optional<CooldownEvent> {
    if (s.state.status != BackendStatus::kError) s.state.status = BackendStatus::kCooling;
    if (!ExtendCooldown(s.state, until)) return std::nullopt;
    return MakeEventLocked(s, now, std::move(reason), 0);
  });
}

BackendState CooldownManager::Reset(Slot& slot) const {
  // An operator's reset is always written through, even when the live state
  // already looks healthy: it makes the store agree with the slot.
  const auto reset = [](Slot& s) -> std::optional<CooldownEvent> {
    s.trial_in_flight = false;
    s.state = BackendState{.backend_id = s.state.backend_id};
    return std::nullopt;
  };
  return ApplyChange(slot, sink_, /*always_publish=*/true, reset);
}

void CooldownManager::Adopt(Slot& slot, const BackendState& state) const {
  ApplyChange(slot, /*sink=*/nullptr, /*always_publish=*/false,
              [&state](Slot& s) -> std::optional<CooldownEvent> {
                std::string id = std::move(s.state.backend_id);
                s.state = state;
                s.state.backend_id = std::move(id);
                // A trial this instance runs still ends with its outcome; a
                // backend healthy elsewhere needs no trial here.
                if (state.status == BackendStatus::kHealthy) s.trial_in_flight = false;
                return std::nullopt;
              });
}

BackendState CooldownManager::State(const Slot& slot) const {
  std::lock_guard<std::mutex> lock(slot.mu);
  return slot.state;
}

BackendStatus EffectiveStatus(const Backend& backend, SystemTime now) {
  if (!backend.enabled || backend.status == BackendStatus::kDisabled) {
    return BackendStatus::kDisabled;
  }
  if (backend.status == BackendStatus::kError) return BackendStatus::kError;
  if (backend.cooldown_until && *backend.cooldown_until > now) return BackendStatus::kCooling;
  return BackendStatus::kHealthy;
}

}  // namespace switchboard
