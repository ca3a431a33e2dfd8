// switchboard/shared_state.h
// Hot routing state shared by several gateway instances: request and token
// buckets and concurrency caps enforced across all of them, backend health
// (cooldowns, status) seen by every instance as soon as one changes it, and
// announcements that the store's backends or config changed.
//
// Two implementations: InProcessSharedState (endpoints within one process;
// what a single instance needs, and a stand-in for tests), and
// RedisSharedState (switchboard/redis_shared_state.h, with
// SWITCHBOARD_WITH_REDIS) for instances on several machines.
//
//   InProcessSharedState hub;
//   std::unique_ptr<SharedState> a = hub.Connect(), b = hub.Connect();
//   a->SetListener(&listener_a);
//   Result<SharedAdmission> got = a->TryAcquire("bkd_1", limits, clock.WallNow(), 60s);
//   ... send ...
//   a->Release("bkd_1", got->lease);
#ifndef SWITCHBOARD_SHARED_STATE_H_
#define SWITCHBOARD_SHARED_STATE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "switchboard/clock.h"
#include "switchboard/rate_limiter.h"
#include "switchboard/status.h"
#include "switchboard/types.h"

namespace switchboard {

// The answer of SharedState::TryAcquire.
struct SharedAdmission {
  bool admitted = false;
  // When refused: which limit (kRequests, kTokens or kConcurrency).
  LimitKind limited_by = LimitKind::kNone;
  // When refused by kRequests or kTokens: the earliest wall time the bucket
  // has a token again. For kConcurrency: the time of the check.
  SystemTime available_at{};
  // When admitted under a concurrency cap: the lease to Release(). Empty
  // when the backend has no cap.
  std::string lease;
};

// Receives what other instances did. Called on the implementation's own
// thread (never on the caller of a SharedState method), one call at a time.
class SharedStateListener {
 public:
  virtual ~SharedStateListener() = default;
  // Another instance changed a backend's health. An instance's own
  // PublishBackendState() is not echoed back to it.
  virtual void OnRemoteBackendState(const BackendState& state) = 0;
  // Another instance changed backends, config or client keys in the store.
  virtual void OnRemoteChange() = 0;
  // The shared state became unreachable (false) or reachable again (true).
  virtual void OnConnectivity(bool connected) = 0;
};

// One instance's endpoint. Thread-safe. Times are the caller's wall clock:
// instances' clocks must agree to well within a second (NTP).
class SharedState {
 public:
  virtual ~SharedState() = default;

  // Atomically across all instances: refills the backend's request bucket
  // (capacity limits.rpm, limits.rpm / 60 tokens a second) and tokens bucket
  // (capacity limits.tpm), drops concurrency leases that expired, and then
  // either takes one request token plus (with a concurrency cap) a lease
  // valid until now + lease_ttl, or takes nothing and says which limit
  // refused: kRequests (under one request token), kTokens (the tokens bucket
  // is at or below zero), kConcurrency (max_concurrency leases live). A limit
  // of 0 is no limit. A bucket seen first starts full; when the limits
  // change, its level is capped at the new capacity.
  // kUnavailable when the shared state cannot be reached now: the caller
  // decides alone (see connected()).
  virtual Result<SharedAdmission> TryAcquire(std::string_view backend_id,
                                             const RateLimits& limits, SystemTime now,
                                             Duration lease_ttl) = 0;
  // Ends a lease TryAcquire() gave (an empty lease is a no-op).
  virtual Status Release(std::string_view backend_id, std::string_view lease) = 0;
  // Ends the lease and gives the request token back: the attempt was never
  // sent.
  virtual Status Refund(std::string_view backend_id, const RateLimits& limits,
                        std::string_view lease, SystemTime now) = 0;
  // Takes `tokens` from the tokens bucket, which may go below zero (then
  // TryAcquire refuses with kTokens until it has refilled above zero).
  virtual Status ChargeTokens(std::string_view backend_id, const RateLimits& limits,
                              int64_t tokens, SystemTime now) = 0;

  // Tells every other instance about this health change.
  virtual Status PublishBackendState(const BackendState& state) = 0;
  // Tells every other instance to reload backends and config from the store.
  virtual Status AnnounceChange() = 0;

  // Instances sharing this state now, this one included (at least 1); while
  // unreachable, the last count seen.
  virtual int instances() const = 0;
  // Whether the shared state was reachable at the last attempt.
  virtual bool connected() const = 0;

  // Set once, before the first event can matter; `listener` must outlive
  // this endpoint or be replaced by nullptr first. Returns once no call to
  // the previous listener is running (so never call it from a listener).
  virtual void SetListener(SharedStateListener* listener) = 0;
};

// Shared state kept in this process: every endpoint Connect() hands out sees
// the same buckets and leases, and the others' events, delivered in order
// by one dispatcher thread. Thread-safe. Destroy the endpoints before the
// hub.
class InProcessSharedState {
 public:
  InProcessSharedState();
  ~InProcessSharedState();
  InProcessSharedState(const InProcessSharedState&) = delete;
  InProcessSharedState& operator=(const InProcessSharedState&) = delete;

  // A new instance's endpoint.
  std::unique_ptr<SharedState> Connect();

  // For tests of the fallback: while unreachable, every endpoint's
  // TryAcquire/Release/... answer kUnavailable, connected() is false, and
  // each listener gets OnConnectivity(false); reachable again, (true).
  void SetReachable(bool reachable);

  // Blocks until every event published so far was delivered.
  void WaitForDelivery();

 private:
  class Endpoint;
  struct Bucket {
    RateLimits limits;
    int64_t requests = 0;  // fixed point: 60,000,000 units a token
    int64_t tokens = 0;
    SystemTime refilled{};
    std::map<std::string, SystemTime> leases;  // lease -> expiry
    int64_t next_lease = 0;
  };
  struct Event {
    const Endpoint* from = nullptr;  // not delivered to it; null: to all
    std::function<void(SharedStateListener&)> deliver;
  };

  Bucket& BucketFor(std::string_view backend_id, const RateLimits& limits, SystemTime now);
  void Post(const Endpoint* from, std::function<void(SharedStateListener&)> deliver);
  void Dispatch();

  std::mutex mu_;
  std::condition_variable cv_;
  bool reachable_ = true;                            // guarded by mu_
  std::map<std::string, Bucket, std::less<>> buckets_;  // guarded by mu_
  std::vector<Endpoint*> endpoints_;                 // guarded by mu_
  std::deque<Event> events_;                         // guarded by mu_
  int64_t posted_ = 0, delivered_ = 0;               // guarded by mu_
  bool delivering_ = false;  // guarded by mu_: the dispatcher is calling a listener
  bool stop_ = false;                                // guarded by mu_
  std::thread dispatcher_;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_SHARED_STATE_H_
