// switchboard/cooldown_manager.h
// Health of each backend: cooldown after 429s (exponential, honouring
// Retry-After), the error state after repeated failures or a bad key, the
// half-open trial that decides when an error ends, and reset on success.
//
//   CooldownManager cooldowns(clock, &writer);          // writer: a StateSink
//   auto slot = cooldowns.Attach(backend);               // loads persisted state
//   if (cooldowns.TryBegin(*slot).available) { ... send ... }
//   cooldowns.OnOutcome(*slot, outcome, CooldownPolicy::FromConfig(config));
#ifndef SWITCHBOARD_COOLDOWN_MANAGER_H_
#define SWITCHBOARD_COOLDOWN_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "switchboard/clock.h"
#include "switchboard/config.h"
#include "switchboard/types.h"

namespace switchboard {

using Headers = std::vector<std::pair<std::string, std::string>>;

// The case-insensitive value of header `name`, or nullptr.
const std::string* FindHeader(const Headers& headers, std::string_view name);

// How an upstream attempt failed below HTTP.
enum class TransportError { kNone, kConnect, kTimeout, kReset, kProtocol, kCancelled };
std::string_view TransportErrorName(TransportError e);  // "none" | "connect" | ...

// What one attempt against one backend came to.
struct AttemptOutcome {
  int http_status = 0;  // 0 when no HTTP response arrived
  TransportError transport_error = TransportError::kNone;
  Headers headers;       // the upstream's response headers
  Duration latency{};    // request sent -> response complete (or failure)
  Duration ttfb{};       // request sent -> first response byte, 0 if none
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// The contract's failure classes (Routing rules 4-8).
enum class OutcomeClass {
  kSuccess,      // 2xx
  kRateLimited,  // 429
  kFailure,      // 5xx, connect failure, timeout, reset, protocol error
  kAuthError,    // 401, 403
  kClientError,  // any other 4xx: the client's fault, not retried
  kCancelled,    // the client went away; says nothing about the backend
};
OutcomeClass Classify(const AttemptOutcome& outcome);

// Whether the request may move on to another backend after this outcome.
inline bool ShouldFailOver(OutcomeClass c) {
  return c == OutcomeClass::kRateLimited || c == OutcomeClass::kFailure ||
         c == OutcomeClass::kAuthError;
}

// retry-after-ms (milliseconds) wins over Retry-After (delta-seconds or an
// HTTP-date, relative to `now`). nullopt when neither is present and valid.
std::optional<Duration> ParseRetryAfter(const Headers& headers, SystemTime now);

struct CooldownPolicy {
  Duration base = std::chrono::seconds(5);
  Duration max = std::chrono::seconds(300);
  int error_threshold = 3;

  static CooldownPolicy FromConfig(const Config& config);
};

// Receives state changes and cooldown events as they happen. Called on the
// request path: implementations must not block (queue, don't write).
class StateSink {
 public:
  virtual ~StateSink() = default;
  virtual void OnBackendState(const BackendState& state) = 0;
  virtual void OnCooldownEvent(const CooldownEvent& event) = 0;
};

struct CooldownCheck {
  bool available = false;
  // The backend is past an error cooldown and this attempt is (or would be)
  // its one half-open trial.
  bool half_open = false;
  // When not available: until when it cools down (wall time). For a busy
  // half-open backend, the time of the check.
  SystemTime until{};
  // "cooling" | "error" | "half_open_busy" when not available.
  std::string_view reason;
};

// Thread-safe. Each backend's state is its own Slot with its own mutex.
class CooldownManager {
 public:
  class Slot;  // One backend's health. Opaque; thread-safe.

  // `clock` and `sink` (may be null) must outlive the manager.
  CooldownManager(const Clock& clock, StateSink* sink);
  ~CooldownManager();
  CooldownManager(const CooldownManager&) = delete;
  CooldownManager& operator=(const CooldownManager&) = delete;

  // The slot for `backend.id`. A new slot starts from the backend's persisted
  // state (status, cooldown_until, counters, last_error); an existing one keeps
  // its live state and only takes the new name.
  std::shared_ptr<Slot> Attach(const Backend& backend);
  void Detach(const std::string& backend_id);
  std::shared_ptr<Slot> Find(const std::string& backend_id) const;

  // Whether the backend may be tried now, claiming nothing.
  CooldownCheck Check(const Slot& slot) const;
  // Like Check(), but claims the half-open trial when this is one, so that
  // exactly one request tries a backend whose error cooldown has ended.
  CooldownCheck TryBegin(Slot& slot) const;
  // Gives back a half-open trial claimed by TryBegin() that was never sent.
  void Abandon(Slot& slot) const;

  // Applies the outcome of an attempt (contract rules 4-8) and returns the
  // new state. A state change goes to the sink, and a new cooldown also as a
  // CooldownEvent. A new cooldown never shortens one already running.
  BackendState OnOutcome(Slot& slot, const AttemptOutcome& outcome,
                         const CooldownPolicy& policy) const;

  // Cools the backend down until `until` without a failed attempt (the
  // upstream said its quota is gone). Never shortens a running cooldown.
  void CoolUntil(Slot& slot, SystemTime until, std::string reason) const;

  // Back to healthy with counters at 0 (admin "reset cooldown").
  BackendState Reset(Slot& slot) const;
  // Takes `state` (from another instance sharing this backend) as the slot's
  // own, without telling the sink: the instance that made the change
  // persists it. The slot keeps its backend id.
  void Adopt(Slot& slot, const BackendState& state) const;

  BackendState State(const Slot& slot) const;

 private:
  const Clock& clock_;
  StateSink* const sink_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Slot>> slots_;  // guarded by mu_
};

// The effective status of a stored backend at `now`: disabled when not
// enabled, cooling only while cooldown_until is in the future, else as stored.
BackendStatus EffectiveStatus(const Backend& backend, SystemTime now);

}  // namespace switchboard

#endif  // SWITCHBOARD_COOLDOWN_MANAGER_H_
