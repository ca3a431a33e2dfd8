#include "switchboard/shared_state.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <utility>

namespace switchboard {

namespace {

using std::chrono::microseconds;

// Bucket levels are fixed point, as in the RateLimiter: one token is
// 60,000,000 units (microseconds in a minute), so a bucket of L tokens per
// minute gains exactly L units per microsecond.
constexpr int64_t kUnitsPerToken = 60'000'000;

int64_t MicrosSinceEpoch(SystemTime t) {
  return std::chrono::duration_cast<microseconds>(t.time_since_epoch()).count();
}

SystemTime FromMicros(int64_t micros) { return SystemTime(microseconds(micros)); }

Status Unreachable() { return UnavailableError("the shared state is unreachable"); }

}  // namespace

// --- Endpoint ------------------------------------------------------------------

class InProcessSharedState::Endpoint final : public SharedState {
 public:
  explicit Endpoint(InProcessSharedState& hub) : hub_(hub) {}

  ~Endpoint() override {
    std::unique_lock<std::mutex> lock(hub_.mu_);
    auto& eps = hub_.endpoints_;
    eps.erase(std::remove(eps.begin(), eps.end(), this), eps.end());
    // The dispatcher may be calling our listener right now.
    hub_.cv_.wait(lock, [this] { return !hub_.delivering_; });
  }

  Result<SharedAdmission> TryAcquire(std::string_view backend_id, const RateLimits& limits,
                                     SystemTime now, Duration lease_ttl) override {
    std::lock_guard<std::mutex> lock(hub_.mu_);
    if (!hub_.reachable_) return Unreachable();
    Bucket& b = hub_.BucketFor(backend_id, limits, now);
    const int64_t now_us = MicrosSinceEpoch(now);
    for (auto it = b.leases.begin(); it != b.leases.end();) {
      it = it->second <= now ? b.leases.erase(it) : std::next(it);
    }
    SharedAdmission out;
    out.available_at = now;
    if (limits.rpm > 0 && b.requests < kUnitsPerToken) {
      out.limited_by = LimitKind::kRequests;
      const int64_t missing = kUnitsPerToken - b.requests;
      out.available_at = FromMicros(now_us + (missing + limits.rpm - 1) / limits.rpm);
      return out;
    }
    if (limits.tpm > 0 && b.tokens <= 0) {
      out.limited_by = LimitKind::kTokens;
      const int64_t missing = 1 - b.tokens;
      out.available_at = FromMicros(now_us + (missing + limits.tpm - 1) / limits.tpm);
      return out;
    }
    if (limits.max_concurrency > 0 &&
        static_cast<int64_t>(b.leases.size()) >= limits.max_concurrency) {
      out.limited_by = LimitKind::kConcurrency;
      return out;
    }
    if (limits.rpm > 0) b.requests -= kUnitsPerToken;
    if (limits.max_concurrency > 0) {
      out.lease = std::to_string(++b.next_lease);
      b.leases[out.lease] =
          now + std::chrono::duration_cast<SystemTime::duration>(lease_ttl);
    }
    out.admitted = true;
    return out;
  }

  Status Release(std::string_view backend_id, std::string_view lease) override {
    std::lock_guard<std::mutex> lock(hub_.mu_);
    if (!hub_.reachable_) return Unreachable();
    if (lease.empty()) return Status();
    auto it = hub_.buckets_.find(backend_id);
    if (it != hub_.buckets_.end()) it->second.leases.erase(std::string(lease));
    return Status();
  }

  Status Refund(std::string_view backend_id, const RateLimits& limits, std::string_view lease,
                SystemTime now) override {
    std::lock_guard<std::mutex> lock(hub_.mu_);
    if (!hub_.reachable_) return Unreachable();
    Bucket& b = hub_.BucketFor(backend_id, limits, now);
    if (!lease.empty()) b.leases.erase(std::string(lease));
    if (limits.rpm > 0) {
      b.requests = std::min<int64_t>(b.requests + kUnitsPerToken, limits.rpm * kUnitsPerToken);
    }
    return Status();
  }

  Status ChargeTokens(std::string_view backend_id, const RateLimits& limits, int64_t tokens,
                      SystemTime now) override {
    std::lock_guard<std::mutex> lock(hub_.mu_);
    if (!hub_.reachable_) return Unreachable();
    Bucket& b = hub_.BucketFor(backend_id, limits, now);
    if (limits.tpm > 0 && tokens > 0) b.tokens -= tokens * kUnitsPerToken;
    return Status();
  }

  Status PublishBackendState(const BackendState& state) override {
    {
      std::lock_guard<std::mutex> lock(hub_.mu_);
      if (!hub_.reachable_) return Unreachable();
    }
    hub_.Post(this, [state](SharedStateListener& l) { l.OnRemoteBackendState(state); });
    return Status();
  }

  Status AnnounceChange() override {
    {
      std::lock_guard<std::mutex> lock(hub_.mu_);
      if (!hub_.reachable_) return Unreachable();
    }
    hub_.Post(this, [](SharedStateListener& l) { l.OnRemoteChange(); });
    return Status();
  }

  int instances() const override {
    std::lock_guard<std::mutex> lock(hub_.mu_);
    return std::max<int>(1, static_cast<int>(hub_.endpoints_.size()));
  }

  bool connected() const override {
    std::lock_guard<std::mutex> lock(hub_.mu_);
    return hub_.reachable_;
  }

  void SetListener(SharedStateListener* listener) override {
    std::unique_lock<std::mutex> lock(hub_.mu_);
    listener_ = listener;
    hub_.cv_.wait(lock, [this] { return !hub_.delivering_; });
  }

  SharedStateListener* listener() const { return listener_.load(); }

 private:
  InProcessSharedState& hub_;
  std::atomic<SharedStateListener*> listener_{nullptr};
};

// --- InProcessSharedState -------------------------------------------------------

InProcessSharedState::InProcessSharedState() : dispatcher_([this] { Dispatch(); }) {}

InProcessSharedState::~InProcessSharedState() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  dispatcher_.join();
}

std::unique_ptr<SharedState> InProcessSharedState::Connect() {
  auto endpoint = std::make_unique<Endpoint>(*this);
  std::lock_guard<std::mutex> lock(mu_);
  endpoints_.push_back(endpoint.get());
  return endpoint;
}

void InProcessSharedState::SetReachable(bool reachable) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reachable_ == reachable) return;
    reachable_ = reachable;
  }
  Post(nullptr, [reachable](SharedStateListener& l) { l.OnConnectivity(reachable); });
}

void InProcessSharedState::WaitForDelivery() {
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t target = posted_;
  cv_.wait(lock, [&] { return delivered_ >= target || stop_; });
}

InProcessSharedState::Bucket& InProcessSharedState::BucketFor(std::string_view backend_id,
                                                              const RateLimits& limits,
                                                              SystemTime now) {
  auto it = buckets_.find(backend_id);
  if (it == buckets_.end()) {
    Bucket b;
    b.limits = limits;
    b.requests = limits.rpm * kUnitsPerToken;
    b.tokens = limits.tpm * kUnitsPerToken;
    b.refilled = now;
    it = buckets_.emplace(std::string(backend_id), std::move(b)).first;
    return it->second;
  }
  Bucket& b = it->second;
  if (now > b.refilled) {
    // Refill at the old rates up to now, then cap at the (new) capacities.
    // An hour of refill at most, which keeps the products in range; a bucket
    // in debt for longer than that is forgiven the rest.
    const int64_t micros = std::min<int64_t>(
        MicrosSinceEpoch(now) - MicrosSinceEpoch(b.refilled), int64_t{3600} * 1'000'000);
    b.requests += micros * b.limits.rpm;
    b.tokens += micros * b.limits.tpm;
    b.refilled = now;
  }
  b.limits = limits;
  b.requests = std::min(b.requests, limits.rpm * kUnitsPerToken);
  b.tokens = std::min(b.tokens, limits.tpm * kUnitsPerToken);
  return b;
}

void InProcessSharedState::Post(const Endpoint* from,
                                std::function<void(SharedStateListener&)> deliver) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(Event{from, std::move(deliver)});
    ++posted_;
  }
  cv_.notify_all();
}

void InProcessSharedState::Dispatch() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !events_.empty(); });
    if (stop_) return;
    Event event = std::move(events_.front());
    events_.pop_front();
    std::vector<SharedStateListener*> listeners;
    for (const Endpoint* e : endpoints_) {
      if (e == event.from) continue;
      if (SharedStateListener* l = e->listener()) listeners.push_back(l);
    }
    delivering_ = true;
    lock.unlock();
    for (SharedStateListener* l : listeners) event.deliver(*l);
    lock.lock();
    delivering_ = false;
    ++delivered_;
    cv_.notify_all();
  }
}

}  // namespace switchboard
