// switchboard/router.h
// The routing core: from a canonical model name to an ordered attempt plan,
// and from each attempt's outcome to the backends' new state. No HTTP.
//
//   Router router(Clock::Real(), &writer);           // writer: a StateSink
//   SWITCHBOARD_RETURN_IF_ERROR(router.LoadFrom(storage));
//   RoutePlan plan = router.Route("gpt-4o");
//   if (!plan.ok()) return plan.status();            // kNotFound / kResourceExhausted
//   while (const PlannedAttempt* attempt = plan.Next()) {
//     AttemptOutcome outcome = Send(attempt->backend(), attempt->upstream_model);
//     if (!ShouldFailOver(plan.Report(outcome))) break;
//   }
//   std::string trace = plan.TraceJson();            // why each backend was used or skipped
#ifndef SWITCHBOARD_ROUTER_H_
#define SWITCHBOARD_ROUTER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "switchboard/clock.h"
#include "switchboard/config.h"
#include "switchboard/cooldown_manager.h"
#include "switchboard/pool_manager.h"
#include "switchboard/rate_limiter.h"
#include "switchboard/shared_state.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"
#include "switchboard/types.h"

namespace switchboard {

class Router;

// The immutable routing view: backends, config, and for each canonical model
// its candidates in pool order. Built by Router::Update(); never changes.
class RoutingSnapshot {
 public:
  struct Entry {
    Backend backend;
    int pool_priority = 0;
    std::shared_ptr<RateLimiter::Slot> limiter;
    std::shared_ptr<CooldownManager::Slot> cooldown;
    std::shared_ptr<PoolManager::LatencySlot> latency;
  };
  // The candidates for one model: indices into entries(), grouped by pool.
  struct ModelRoute {
    std::vector<uint32_t> candidates;        // by pool priority, then name
    std::vector<uint32_t> group_ends;        // end offset of each pool's run
    std::vector<int> weights;                // parallel to candidates, each >= 1
    std::shared_ptr<std::atomic<uint64_t>> tickets;  // shared across snapshots
  };

  const Config& config() const { return config_; }
  const std::vector<Entry>& entries() const { return entries_; }
  // The entry for `backend_id`, or nullptr.
  const Entry* FindEntry(std::string_view backend_id) const;
  // The route for `model`, or nullptr when no enabled backend maps it.
  const ModelRoute* FindRoute(std::string_view model) const;
  // Canonical models with an explicit mapping on some enabled backend, sorted.
  const std::vector<std::string>& models() const { return models_; }
  // Whether some enabled backend maps "*" (so any model name is served).
  bool has_wildcard() const { return wildcard_.has_value(); }
  int64_t version() const { return version_; }

 private:
  friend class Router;
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  Config config_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, ModelRoute, StringHash, std::equal_to<>> routes_;
  std::optional<ModelRoute> wildcard_;  // backends mapping "*" only
  std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>> by_id_;
  std::vector<std::string> models_;
  int64_t version_ = 0;
};

// Why a backend was or was not tried for one request.
enum class Decision : uint8_t {
  kNotReached,      // the plan ended (success, client error, max_attempts) before it
  kTried,           // an attempt was made; see status / outcome
  kSkippedDisabled,
  kSkippedCooling,  // cooldown_until in the future (429s or quota)
  kSkippedError,    // in error state, its cooldown still running
  kSkippedHalfOpen, // past its error cooldown, another request holds the trial
  kSkippedLimited,  // a rate limit refused it; see limit
  kNoMapping,       // does not serve the model (only listed for unknown models)
};
std::string_view DecisionName(Decision d);  // "not_reached" | "tried" | "skipped_disabled" | ...

struct TraceEntry {
  uint32_t index = 0;  // into the plan's snapshot entries()
  Decision decision = Decision::kNotReached;
  LimitKind limit = LimitKind::kNone;   // for kSkippedLimited
  bool half_open = false;               // for kTried: this was the half-open trial
  int http_status = 0;                  // for kTried
  OutcomeClass outcome = OutcomeClass::kSuccess;  // for kTried
  TransportError transport_error = TransportError::kNone;  // for kTried
  int64_t until_ms = 0;  // unix ms: cooling/error until; limited: when it frees up
};

// One attempt of a plan. Valid until the next call to Next() or the plan dies.
class PlannedAttempt {
 public:
  const Backend& backend() const { return entry_->backend; }
  const std::string& upstream_model() const { return upstream_model_; }
  int number() const { return number_; }        // 1-based
  bool half_open() const { return half_open_; }  // the backend's half-open trial

 private:
  friend class RoutePlan;
  const RoutingSnapshot::Entry* entry_ = nullptr;
  std::string upstream_model_;
  int number_ = 0;
  bool half_open_ = false;
  std::string lease_;  // the shared concurrency lease, if one was taken
};

// The attempts for one request, taken one at a time. Not thread-safe; one
// owner. The Router that made it must outlive it. Dropping a plan with an
// unreported attempt releases that attempt's concurrency slot.
class RoutePlan {
 public:
  RoutePlan(RoutePlan&& other) noexcept;
  RoutePlan& operator=(RoutePlan&& other) noexcept;
  RoutePlan(const RoutePlan&) = delete;
  RoutePlan& operator=(const RoutePlan&) = delete;
  ~RoutePlan();

  // OK when there is a backend to try. kNotFound when no enabled backend
  // serves the model; kResourceExhausted when every candidate is cooling
  // down or rate limited (see retry_after()).
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // With kResourceExhausted: how long until the first candidate frees up,
  // rounded up to whole seconds (>= 1 s).
  std::optional<Duration> retry_after() const { return retry_after_; }

  // Takes the next backend's rate-limit token, concurrency slot and, if it is
  // due one, its half-open trial, skipping backends that became unavailable.
  // nullptr when the plan is done: max_attempts attempts made, or no
  // candidate left. REQUIRES: the previous attempt was reported.
  const PlannedAttempt* Next();

  // Records the outcome of the attempt Next() returned and updates the
  // backend (cooldown, limits, latency). Returns the outcome's class; the
  // caller fails over when ShouldFailOver(class).
  OutcomeClass Report(const AttemptOutcome& outcome);

  // After Next() returned nullptr with attempts() == 0 although ok(): every
  // candidate became unavailable between Route() and Next(). Then this is the
  // kResourceExhausted status a client should get (and retry_after() is set).
  Status ExhaustedStatus();

  const std::string& model() const { return model_; }
  int attempts() const { return attempts_; }
  // How many backends could serve the model (enabled or not).
  size_t candidates() const;
  // The backends examined so far, in the order they were: tried or skipped,
  // with the reason. Candidates the plan never reached are not listed.
  const std::vector<TraceEntry>& trace() const { return trace_; }
  const RoutingSnapshot& snapshot() const { return *snapshot_; }
  // The trace as a JSON array:
  // [{"backend":"a","pool":"primary","decision":"tried","status":429},
  //  {"backend":"b","pool":"fallback","decision":"skipped_cooling","until":"..."}]
  std::string TraceJson() const;

 private:
  friend class Router;
  RoutePlan() = default;
  void ReleaseCurrent();
  // The entry index of the candidate at position_. REQUIRES: position_ < candidates().
  uint32_t CandidateAtPosition();
  // Records why candidate `index` cannot be tried now and returns true, or
  // returns false when it can. With `claim`, an available candidate's token,
  // slot and half-open trial are taken (and `half_open` says if it was one).
  // With a shared state, `lease` gets the shared concurrency lease.
  bool SkipIfUnavailable(uint32_t index, bool claim, bool* half_open, std::string* lease);

  const Router* router_ = nullptr;
  std::shared_ptr<const RoutingSnapshot> snapshot_;
  const RoutingSnapshot::ModelRoute* route_ = nullptr;  // into *snapshot_
  std::string model_;
  Status status_;
  std::optional<Duration> retry_after_;
  uint64_t ticket_ = 0;
  // The try order when the strategy needs a sort (least-busy,
  // lowest-latency); empty when it is a rotation computed on the fly.
  std::vector<uint32_t> order_;
  size_t position_ = 0;      // next candidate to examine
  size_t group_ = 0;         // pool group of position_
  size_t group_start_ = 0;   // rotation start inside group_
  std::vector<TraceEntry> trace_;
  int attempts_ = 0;
  int max_attempts_ = 0;
  bool in_attempt_ = false;
  PlannedAttempt current_;
  size_t current_trace_ = 0;
};

// A backend's live state, merged from the managers.
struct BackendLiveState {
  std::string backend_id;
  BackendState state;
  LimiterState limiter;
  std::optional<double> latency_ms;
};

// Thread-safe. Route() reads an immutable snapshot and never waits on storage.
class Router {
 public:
  // `clock` and `sink` (may be null) must outlive the router. The sink gets
  // every state change and cooldown event (use a StorageWriter to persist).
  Router(const Clock& clock, StateSink* sink);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Builds a snapshot of `backends` and `config` and swaps it in; requests
  // in flight keep the snapshot they started with. A backend new to the
  // router starts from its persisted state; a known one keeps its live state.
  // kInvalidArgument (param set) if the config or a backend is invalid.
  Status Update(std::vector<Backend> backends, Config config);
  // Update() from the store's backends and config.
  Status LoadFrom(Storage& storage);

  std::shared_ptr<const RoutingSnapshot> snapshot() const;

  // The plan for one request for `model`.
  RoutePlan Route(std::string_view model) const;

  // Back to healthy with counters at 0. kNotFound for an unknown id.
  Status ResetCooldown(const std::string& backend_id);

  // Live state of every backend of the current snapshot, in snapshot order.
  std::vector<BackendLiveState> LiveStates() const;
  // Live state of one backend; kNotFound for an unknown id.
  Result<BackendLiveState> LiveState(const std::string& backend_id) const;

  // Shares limits and backend health with other instances through `shared`
  // (switchboard/shared_state.h). Call once, before routing; `shared` must
  // outlive the router. From then on:
  //  * an attempt on a backend with limits also needs the shared state's
  //    admission (rpm, tpm, max_concurrency across all instances);
  //  * every health change (cooldown, error, recovery, reset) is published,
  //    and the others' changes are taken as this router's own at once;
  //  * while the shared state is unreachable, each backend's local limits
  //    are its limits divided by the instance count last seen (at least 1
  //    each), until it is back.
  // `on_remote_change` runs (on the shared state's thread) when another
  // instance changed backends or config in the store: reload them there
  // (LoadFrom) without blocking long. `on_connectivity` runs when the
  // shared state goes away (false) or comes back (true). Either may be empty.
  void ShareState(SharedState* shared, std::function<void()> on_remote_change = {},
                  std::function<void(bool)> on_connectivity = {});
  // Null unless ShareState() was called.
  SharedState* shared_state() const { return shared_; }
  // The end of an attempt (its lease back, its tokens charged) reaches the
  // shared state from a background thread, off the request path; this waits
  // until everything ended so far got there (or failed to). For tests and
  // shutdown; the destructor does it too.
  void FlushSharedState() const;
  // What local limits are divided by now: 1, or the instance count while
  // the shared state is unreachable.
  int limit_divisor() const { return divisor_.load(std::memory_order_relaxed); }

  const Clock& clock() const { return clock_; }
  RateLimiter& limiter() { return limiter_; }
  CooldownManager& cooldowns() { return cooldowns_; }
  PoolManager& pools() { return pools_; }

 private:
  friend class RoutePlan;
  class SharingSink;
  class SharedListener;
  class SharedEnds;
  BackendLiveState LiveStateOf(const RoutingSnapshot::Entry& entry) const;
  // The limits the local limiter enforces for `b`: its own, divided by the
  // current divisor.
  RateLimits LocalLimits(const Backend& b) const;
  // Re-attaches every backend's limiter with LocalLimits() after the
  // divisor changed.
  void SetDivisor(int divisor);
  // The shared side of an attempt's end: the lease back, tokens charged.
  void EndShared(const Backend& b, const std::string& lease, int64_t tokens) const;

  const Clock& clock_;
  std::unique_ptr<SharingSink> sharing_sink_;  // the user's sink, plus publishing
  RateLimiter limiter_;
  CooldownManager cooldowns_;
  PoolManager pools_;

  SharedState* shared_ = nullptr;  // set once, before routing
  std::unique_ptr<SharedListener> shared_listener_;
  std::unique_ptr<SharedEnds> shared_ends_;
  std::atomic<int> divisor_{1};

  std::mutex update_mu_;  // serializes Update() and SetDivisor(); held while building
  mutable std::mutex snapshot_mu_;
  std::shared_ptr<const RoutingSnapshot> snapshot_;  // guarded by snapshot_mu_ (pointer only)
};

}  // namespace switchboard

#endif  // SWITCHBOARD_ROUTER_H_
