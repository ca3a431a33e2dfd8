#include "switchboard/router.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "switchboard/json.h"

namespace switchboard {
namespace {

// Backends listed in the trace of a request for an unknown model.
constexpr size_t kMaxNotFoundTrace = 32;

int64_t ToMillis(SystemTime t) { return ToUnixMillis(t); }

// Wall time of a steady-clock instant, via the clock's current offset.
SystemTime ToWall(const Clock& clock, SteadyTime t) {
  return clock.WallNow() +
         std::chrono::duration_cast<SystemTime::duration>(t - clock.Now());
}

// The skip decision for a backend its cooldown manager refused.
Decision DecisionFor(const CooldownCheck& check) {
  if (check.reason == "error") return Decision::kSkippedError;
  if (check.reason == "half_open_busy") return Decision::kSkippedHalfOpen;
  return Decision::kSkippedCooling;
}

// How long a shared concurrency lease lives if its instance dies holding it:
// the backend's timeout (the longest an attempt should take) and a margin
// for streams that run past it.
Duration LeaseTtl(const Backend& b) {
  return std::chrono::seconds(b.timeout_seconds) + std::chrono::minutes(5);
}

// The limits a backend is configured with.
RateLimits LimitsOf(const Backend& b) {
  return RateLimits{b.rpm_limit, b.tpm_limit, b.max_concurrency};
}

// `limit` shared by `n` instances: at least 1 each; 0 (unlimited) stays 0.
int64_t DivideLimit(int64_t limit, int n) {
  if (limit <= 0 || n <= 1) return limit;
  return std::max<int64_t>(1, limit / n);
}

Duration RoundUpToSeconds(Duration d) {
  const auto secs = std::chrono::ceil<std::chrono::seconds>(d);
  return std::max<Duration>(secs, std::chrono::seconds(1));
}

}  // namespace

std::string_view DecisionName(Decision d) {
  switch (d) {
    case Decision::kNotReached: return "not_reached";
    case Decision::kTried: return "tried";
    case Decision::kSkippedDisabled: return "skipped_disabled";
    case Decision::kSkippedCooling: return "skipped_cooling";
    case Decision::kSkippedError: return "skipped_error";
    case Decision::kSkippedHalfOpen: return "skipped_half_open_busy";
    case Decision::kSkippedLimited: return "skipped_rate_limited";
    case Decision::kNoMapping: return "no_mapping";
  }
  return "not_reached";
}

// --- RoutingSnapshot --------------------------------------------------------

const RoutingSnapshot::Entry* RoutingSnapshot::FindEntry(std::string_view backend_id) const {
  auto it = by_id_.find(backend_id);
  return it == by_id_.end() ? nullptr : &entries_[it->second];
}

const RoutingSnapshot::ModelRoute* RoutingSnapshot::FindRoute(std::string_view model) const {
  if (auto it = routes_.find(model); it != routes_.end()) return &it->second;
  return wildcard_ ? &*wildcard_ : nullptr;
}

// --- RoutePlan ----------------------------------------------------------------

RoutePlan::RoutePlan(RoutePlan&& other) noexcept { *this = std::move(other); }

RoutePlan& RoutePlan::operator=(RoutePlan&& other) noexcept {
  if (this == &other) return *this;
  ReleaseCurrent();
  router_ = other.router_;
  snapshot_ = std::move(other.snapshot_);
  route_ = other.route_;
  model_ = std::move(other.model_);
  status_ = std::move(other.status_);
  retry_after_ = other.retry_after_;
  ticket_ = other.ticket_;
  order_ = std::move(other.order_);
  position_ = other.position_;
  group_ = other.group_;
  group_start_ = other.group_start_;
  trace_ = std::move(other.trace_);
  attempts_ = other.attempts_;
  max_attempts_ = other.max_attempts_;
  in_attempt_ = other.in_attempt_;
  current_ = std::move(other.current_);
  current_trace_ = other.current_trace_;
  other.in_attempt_ = false;
  other.router_ = nullptr;
  return *this;
}

RoutePlan::~RoutePlan() { ReleaseCurrent(); }

void RoutePlan::ReleaseCurrent() {
  if (!in_attempt_ || router_ == nullptr) return;
  in_attempt_ = false;
  // Never reported: the client went away or the caller gave up. Free the
  // concurrency slot and the half-open trial; the token stays spent, since
  // the request may have reached the upstream.
  const RoutingSnapshot::Entry& e = *current_.entry_;
  router_->limiter_.Release(*e.limiter);
  if (router_->shared_ != nullptr) router_->EndShared(e.backend, current_.lease_, 0);
  if (current_.half_open_) router_->cooldowns_.Abandon(*e.cooldown);
  TraceEntry& t = trace_[current_trace_];
  t.outcome = OutcomeClass::kCancelled;
  t.transport_error = TransportError::kCancelled;
}

size_t RoutePlan::candidates() const { return route_ ? route_->candidates.size() : 0; }

uint32_t RoutePlan::CandidateAtPosition() {
  if (!order_.empty()) return order_[position_];
  // A rotation inside each pool group, computed as the walk enters the group.
  const auto& ends = route_->group_ends;
  const size_t begin = group_ == 0 ? 0 : ends[group_ - 1];
  if (position_ == begin) {
    const std::span<const int> weights(route_->weights.data() + begin, ends[group_] - begin);
    group_start_ = PoolManager::RotationStart(snapshot_->config().strategy, weights, ticket_);
  }
  const size_t size = ends[group_] - begin;
  const uint32_t index = route_->candidates[begin + (group_start_ + position_ - begin) % size];
  if (position_ + 1 == ends[group_]) ++group_;
  return index;
}

bool RoutePlan::SkipIfUnavailable(uint32_t index, bool claim, bool* half_open,
                                  std::string* lease) {
  const RoutingSnapshot::Entry& e = snapshot_->entries()[index];
  TraceEntry t;
  t.index = index;
  if (!e.backend.enabled) {
    t.decision = Decision::kSkippedDisabled;
    trace_.push_back(t);
    return true;
  }
  const CooldownCheck cooldown =
      claim ? router_->cooldowns_.TryBegin(*e.cooldown) : router_->cooldowns_.Check(*e.cooldown);
  if (!cooldown.available) {
    t.decision = DecisionFor(cooldown);
    t.until_ms = ToMillis(cooldown.until);
    trace_.push_back(t);
    return true;
  }
  const Admission admission =
      claim ? router_->limiter_.TryAcquire(*e.limiter) : router_->limiter_.Check(*e.limiter);
  if (!admission.admitted) {
    if (claim && cooldown.half_open) router_->cooldowns_.Abandon(*e.cooldown);
    t.decision = Decision::kSkippedLimited;
    t.limit = admission.limited_by;
    t.until_ms = ToMillis(ToWall(router_->clock_, admission.available_at));
    trace_.push_back(t);
    return true;
  }
  const Backend& b = e.backend;
  if (claim && router_->shared_ != nullptr &&
      (b.rpm_limit > 0 || b.tpm_limit > 0 || b.max_concurrency > 0)) {
    // The limits across instances. Unreachable: the local admission stands
    // (the local limits are divided meanwhile, see Router::SetDivisor).
    Result<SharedAdmission> shared = router_->shared_->TryAcquire(
        b.id, LimitsOf(b),
        router_->clock_.WallNow(), LeaseTtl(b));
    if (shared.ok() && !shared->admitted) {
      router_->limiter_.Refund(*e.limiter);
      if (cooldown.half_open) router_->cooldowns_.Abandon(*e.cooldown);
      t.decision = Decision::kSkippedLimited;
      t.limit = shared->limited_by;
      t.until_ms = ToMillis(std::max(shared->available_at, router_->clock_.WallNow()));
      trace_.push_back(t);
      return true;
    }
    if (shared.ok()) *lease = std::move(shared->lease);
  }
  *half_open = cooldown.half_open;
  return false;
}

const PlannedAttempt* RoutePlan::Next() {
  assert(!in_attempt_ && "Report() the previous attempt first");
  if (!ok() || in_attempt_ || router_ == nullptr) return nullptr;
  while (attempts_ < max_attempts_ && position_ < candidates()) {
    const uint32_t index = CandidateAtPosition();
    ++position_;
    bool half_open = false;
    std::string lease;
    if (SkipIfUnavailable(index, /*claim=*/true, &half_open, &lease)) continue;
    const RoutingSnapshot::Entry& e = snapshot_->entries()[index];
    TraceEntry t;
    t.index = index;
    t.decision = Decision::kTried;
    t.half_open = half_open;
    current_trace_ = trace_.size();
    trace_.push_back(t);
    ++attempts_;
    in_attempt_ = true;
    current_.entry_ = &e;
    current_.upstream_model_ = e.backend.UpstreamModelFor(model_);
    current_.number_ = attempts_;
    current_.half_open_ = half_open;
    current_.lease_ = std::move(lease);
    return &current_;
  }
  return nullptr;
}

OutcomeClass RoutePlan::Report(const AttemptOutcome& outcome) {
  assert(in_attempt_ && "Report() needs an attempt from Next()");
  if (!in_attempt_) return OutcomeClass::kCancelled;
  in_attempt_ = false;
  const RoutingSnapshot::Entry& e = *current_.entry_;
  const Clock& clock = router_->clock_;
  const CooldownPolicy policy = CooldownPolicy::FromConfig(snapshot_->config());

  router_->limiter_.Release(*e.limiter);
  const int64_t tokens = outcome.prompt_tokens + outcome.completion_tokens;
  if (tokens > 0) router_->limiter_.ChargeTokens(*e.limiter, tokens);
  if (router_->shared_ != nullptr) router_->EndShared(e.backend, current_.lease_, tokens);
  if (!outcome.headers.empty()) {
    const UpstreamQuota quota = ParseUpstreamQuota(outcome.headers, clock.WallNow());
    router_->limiter_.ApplyUpstreamQuota(*e.limiter, quota);
    // Out of quota: cool down until the reset, before the upstream says 429.
    std::optional<Duration> until_reset;
    if (quota.remaining_requests == 0 && quota.requests_reset) until_reset = quota.requests_reset;
    if (quota.remaining_tokens == 0 && quota.tokens_reset) {
      until_reset = std::max(until_reset.value_or(Duration::zero()), *quota.tokens_reset);
    }
    if (until_reset && *until_reset > Duration::zero()) {
      router_->cooldowns_.CoolUntil(
          *e.cooldown,
          clock.WallNow() + std::chrono::duration_cast<SystemTime::duration>(*until_reset),
          "quota");
    }
  }
  const OutcomeClass cls = Classify(outcome);
  router_->cooldowns_.OnOutcome(*e.cooldown, outcome, policy);
  if (cls != OutcomeClass::kCancelled && cls != OutcomeClass::kClientError) {
    const Duration observed = outcome.ttfb > Duration::zero() ? outcome.ttfb : outcome.latency;
    if (observed > Duration::zero()) router_->pools_.ObserveLatency(*e.latency, observed);
  }

  TraceEntry& t = trace_[current_trace_];
  t.http_status = outcome.http_status;
  t.outcome = cls;
  t.transport_error = outcome.transport_error;
  return cls;
}

Status RoutePlan::ExhaustedStatus() {
  if (!ok()) return status_;
  const SystemTime now = router_->clock_.WallNow();
  std::optional<SystemTime> earliest;
  for (const TraceEntry& t : trace_) {
    if (t.decision == Decision::kSkippedDisabled || t.decision == Decision::kTried ||
        t.decision == Decision::kNotReached || t.decision == Decision::kNoMapping) {
      continue;
    }
    const SystemTime until = FromUnixMillis(t.until_ms);
    if (!earliest || until < *earliest) earliest = until;
  }
  retry_after_ = RoundUpToSeconds(earliest ? *earliest - now : Duration::zero());
  return ResourceExhaustedError("every backend serving '" + model_ +
                                "' is cooling down or rate limited");
}

std::string RoutePlan::TraceJson() const {
  std::string out = "[";
  bool first = true;
  for (const TraceEntry& t : trace_) {
    if (!first) out += ',';
    first = false;
    const Backend& b = snapshot_->entries()[t.index].backend;
    out += "{\"backend\":";
    AppendJsonString(b.name, &out);
    out += ",\"pool\":";
    AppendJsonString(b.pool, &out);
    out += ",\"decision\":\"";
    out += DecisionName(t.decision);
    out += '"';
    switch (t.decision) {
      case Decision::kTried:
        out += ",\"status\":" + std::to_string(t.http_status);
        if (t.transport_error != TransportError::kNone) {
          out += ",\"error\":\"";
          out += TransportErrorName(t.transport_error);
          out += '"';
        }
        if (t.half_open) out += ",\"half_open\":true";
        break;
      case Decision::kSkippedLimited:
        out += ",\"limit\":\"";
        out += LimitKindName(t.limit);
        out += "\",\"until\":";
        AppendJsonString(FormatRfc3339(FromUnixMillis(t.until_ms)), &out);
        break;
      case Decision::kSkippedCooling:
      case Decision::kSkippedError:
        out += ",\"until\":";
        AppendJsonString(FormatRfc3339(FromUnixMillis(t.until_ms)), &out);
        break;
      default:
        break;
    }
    out += '}';
  }
  out += ']';
  return out;
}

// --- Router -------------------------------------------------------------------

// The router's state sink: the user's sink, and with a shared state, every
// health change published to the other instances.
class Router::SharingSink final : public StateSink {
 public:
  explicit SharingSink(StateSink* sink) : sink_(sink) {}
  void OnBackendState(const BackendState& state) override {
    if (sink_ != nullptr) sink_->OnBackendState(state);
    if (SharedState* shared = shared_.load(std::memory_order_acquire)) {
      (void)shared->PublishBackendState(state);  // unreachable: the others miss it
    }
  }
  void OnCooldownEvent(const CooldownEvent& event) override {
    if (sink_ != nullptr) sink_->OnCooldownEvent(event);
  }
  void Share(SharedState* shared) { shared_.store(shared, std::memory_order_release); }

 private:
  StateSink* const sink_;
  std::atomic<SharedState*> shared_{nullptr};
};

// What the other instances did, applied to this router.
class Router::SharedListener final : public SharedStateListener {
 public:
  SharedListener(Router& router, std::function<void()> on_remote_change,
                 std::function<void(bool)> on_connectivity)
      : router_(router),
        on_remote_change_(std::move(on_remote_change)),
        on_connectivity_(std::move(on_connectivity)) {}

  void OnRemoteBackendState(const BackendState& state) override {
    if (auto slot = router_.cooldowns_.Find(state.backend_id)) {
      router_.cooldowns_.Adopt(*slot, state);
    }
  }
  void OnRemoteChange() override {
    if (on_remote_change_) on_remote_change_();
  }
  void OnConnectivity(bool connected) override {
    router_.SetDivisor(connected ? 1 : router_.shared_->instances());
    if (on_connectivity_) on_connectivity_(connected);
  }

 private:
  Router& router_;
  const std::function<void()> on_remote_change_;
  const std::function<void(bool)> on_connectivity_;
};

// Sends the ends of attempts (lease back, tokens charged) to the shared state
// from a thread of its own, in order, so that no request waits for those
// round trips. What is queued while the shared state is unreachable fails
// and is dropped: leases expire by themselves, and the local limits rule
// meanwhile.
class Router::SharedEnds {
 public:
  SharedEnds(SharedState& shared, const Clock& clock)
      : shared_(shared), clock_(clock), thread_([this] { Run(); }) {}
  ~SharedEnds() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void Push(const Backend& b, const std::string& lease, int64_t tokens) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(End{b.id, LimitsOf(b), lease, tokens, clock_.WallNow()});
      ++pushed_;
    }
    cv_.notify_all();
  }

  void Flush() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t target = pushed_;
    done_cv_.wait(lock, [&] { return sent_ >= target; });
  }

 private:
  struct End {
    std::string backend_id;
    RateLimits limits;
    std::string lease;
    int64_t tokens = 0;
    SystemTime at;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything was sent
      std::deque<End> batch;
      batch.swap(queue_);
      lock.unlock();
      for (const End& e : batch) {
        if (!e.lease.empty()) (void)shared_.Release(e.backend_id, e.lease);
        if (e.tokens > 0 && e.limits.tpm > 0) {
          (void)shared_.ChargeTokens(e.backend_id, e.limits, e.tokens, e.at);
        }
      }
      lock.lock();
      sent_ += batch.size();
      done_cv_.notify_all();
    }
  }

  SharedState& shared_;
  const Clock& clock_;
  std::mutex mu_;
  std::condition_variable cv_;       // work or stop
  std::condition_variable done_cv_;  // sent_ moved
  std::deque<End> queue_;            // guarded by mu_
  uint64_t pushed_ = 0;              // guarded by mu_
  uint64_t sent_ = 0;                // guarded by mu_
  bool stop_ = false;                // guarded by mu_
  std::thread thread_;               // last: starts once the rest is ready
};

Router::Router(const Clock& clock, StateSink* sink)
    : clock_(clock),
      sharing_sink_(std::make_unique<SharingSink>(sink)),
      limiter_(clock),
      cooldowns_(clock, sharing_sink_.get()),
      pools_(clock) {
  snapshot_ = std::make_shared<const RoutingSnapshot>();
}

Router::~Router() {
  if (shared_ != nullptr) shared_->SetListener(nullptr);
  shared_ends_.reset();  // sends what is queued
}

void Router::FlushSharedState() const {
  if (shared_ends_) shared_ends_->Flush();
}

void Router::ShareState(SharedState* shared, std::function<void()> on_remote_change,
                        std::function<void(bool)> on_connectivity) {
  if (shared == nullptr || shared_ != nullptr) return;
  shared_ = shared;
  shared_ends_ = std::make_unique<SharedEnds>(*shared, clock_);
  shared_listener_ = std::make_unique<SharedListener>(*this, std::move(on_remote_change),
                                                      std::move(on_connectivity));
  sharing_sink_->Share(shared);
  shared->SetListener(shared_listener_.get());
  if (!shared->connected()) SetDivisor(shared->instances());
}

RateLimits Router::LocalLimits(const Backend& b) const {
  const int n = divisor_.load(std::memory_order_relaxed);
  return RateLimits{DivideLimit(b.rpm_limit, n), DivideLimit(b.tpm_limit, n),
                    DivideLimit(b.max_concurrency, n)};
}

void Router::SetDivisor(int divisor) {
  divisor = std::max(1, divisor);
  std::lock_guard<std::mutex> lock(update_mu_);
  if (divisor_.exchange(divisor) == divisor) return;
  for (const RoutingSnapshot::Entry& e : snapshot()->entries()) {
    limiter_.Attach(e.backend.id, LocalLimits(e.backend));
    // Back to the shared limits: they are the authority again, and what this
    // instance spent of its share must not hold it back.
    if (divisor == 1) limiter_.Fill(*e.limiter);
  }
}

void Router::EndShared(const Backend& b, const std::string& lease, int64_t tokens) const {
  if (lease.empty() && (tokens <= 0 || b.tpm_limit <= 0)) return;
  shared_ends_->Push(b, lease, tokens);
}

std::shared_ptr<const RoutingSnapshot> Router::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return snapshot_;
}

Status Router::Update(std::vector<Backend> backends, Config config) {
  if (auto errors = ValidateConfig(config); !errors.empty()) {
    return InvalidArgumentError(errors.front().message, errors.front().param);
  }
  for (const Backend& b : backends) {
    if (auto errors = ValidateBackend(b); !errors.empty()) {
      return InvalidArgumentError("backend '" + b.name + "': " + errors.front().message,
                                  errors.front().param);
    }
  }
  std::lock_guard<std::mutex> lock(update_mu_);
  const std::shared_ptr<const RoutingSnapshot> old = snapshot();
  auto next = std::make_shared<RoutingSnapshot>();
  next->version_ = old->version_ + 1;

  // Pool order, then name: the order candidates are tried in across pools.
  std::sort(backends.begin(), backends.end(), [&config](const Backend& a, const Backend& b) {
    const int pa = config.PoolPriority(a.pool);
    const int pb = config.PoolPriority(b.pool);
    if (pa != pb) return pa < pb;
    if (a.pool != b.pool) return a.pool < b.pool;
    return a.name < b.name;
  });

  std::set<std::string> live_ids;
  next->entries_.reserve(backends.size());
  for (Backend& b : backends) {
    RoutingSnapshot::Entry e;
    e.pool_priority = config.PoolPriority(b.pool);
    e.limiter = limiter_.Attach(b.id, LocalLimits(b));
    e.cooldown = cooldowns_.Attach(b);
    e.latency = pools_.Attach(b.id);
    live_ids.insert(b.id);
    next->by_id_.emplace(b.id, static_cast<uint32_t>(next->entries_.size()));
    e.backend = std::move(b);
    next->entries_.push_back(std::move(e));
  }
  // Backends that are gone lose their live state.
  for (const RoutingSnapshot::Entry& e : old->entries_) {
    if (live_ids.count(e.backend.id) == 0) {
      limiter_.Detach(e.backend.id);
      cooldowns_.Detach(e.backend.id);
      pools_.Detach(e.backend.id);
    }
  }

  // Canonical models named explicitly by enabled backends.
  std::set<std::string> models;
  bool any_wildcard = false;
  for (const RoutingSnapshot::Entry& e : next->entries_) {
    if (!e.backend.enabled) continue;
    for (const auto& [model, mapping] : e.backend.model_mappings) {
      if (model == kWildcardModel) {
        any_wildcard = true;
      } else {
        models.insert(model);
      }
    }
  }
  next->models_.assign(models.begin(), models.end());

  // Tickets carry over so that rotation continues across config changes.
  auto tickets_for = [&old](std::string_view model) {
    const RoutingSnapshot::ModelRoute* prev =
        model == kWildcardModel ? (old->wildcard_ ? &*old->wildcard_ : nullptr)
                                : [&]() -> const RoutingSnapshot::ModelRoute* {
                                    auto it = old->routes_.find(model);
                                    return it == old->routes_.end() ? nullptr : &it->second;
                                  }();
    return prev ? prev->tickets : std::make_shared<std::atomic<uint64_t>>(0);
  };
  // Disabled backends that map a model stay in its route, so that the trace
  // can say they were skipped; they never make a route exist on their own.
  auto build_route = [&](std::string_view model, bool wildcard_only) {
    RoutingSnapshot::ModelRoute route;
    route.tickets = tickets_for(wildcard_only ? kWildcardModel : model);
    int current_priority = -1;
    std::string current_pool;
    for (uint32_t i = 0; i < next->entries_.size(); ++i) {
      const Backend& b = next->entries_[i].backend;
      const ModelMapping* m = wildcard_only
                                  ? [&]() -> const ModelMapping* {
                                      auto it = b.model_mappings.find(std::string(kWildcardModel));
                                      return it == b.model_mappings.end() ? nullptr : &it->second;
                                    }()
                                  : b.FindMapping(model);
      if (m == nullptr) continue;
      if (!route.candidates.empty() &&
          (next->entries_[i].pool_priority != current_priority || b.pool != current_pool)) {
        route.group_ends.push_back(static_cast<uint32_t>(route.candidates.size()));
      }
      current_priority = next->entries_[i].pool_priority;
      current_pool = b.pool;
      route.candidates.push_back(i);
      route.weights.push_back(std::max(m->weight, 1));
    }
    if (!route.candidates.empty()) {
      route.group_ends.push_back(static_cast<uint32_t>(route.candidates.size()));
    }
    return route;
  };
  for (const std::string& model : models) next->routes_.emplace(model, build_route(model, false));
  if (any_wildcard) next->wildcard_ = build_route(kWildcardModel, true);

  next->config_ = std::move(config);
  std::shared_ptr<const RoutingSnapshot> replaced;
  {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    replaced = std::exchange(snapshot_, std::move(next));
  }  // the old snapshot dies outside the lock, with its last reader
  return Status::Ok();
}

Status Router::LoadFrom(Storage& storage) {
  auto backends = storage.ListBackends(BackendFilter{});
  if (!backends.ok()) return backends.status();
  auto config = storage.GetConfig();
  if (!config.ok()) return config.status();
  return Update(std::move(*backends), std::move(*config));
}

RoutePlan Router::Route(std::string_view model) const {
  RoutePlan plan;
  plan.router_ = this;
  plan.snapshot_ = snapshot();
  plan.model_.assign(model);
  const RoutingSnapshot& snap = *plan.snapshot_;
  plan.max_attempts_ = snap.config().max_attempts;

  const RoutingSnapshot::ModelRoute* route = snap.FindRoute(model);
  bool any_enabled = false;
  if (route != nullptr) {
    for (uint32_t i : route->candidates) {
      if (snap.entries()[i].backend.enabled) {
        any_enabled = true;
        break;
      }
    }
  }
  if (!any_enabled) {
    plan.status_ = NotFoundError("no backend serves model '" + std::string(model) + "'");
    // Say why, for the first few backends (a trace is kept with every request).
    const size_t listed = std::min<size_t>(snap.entries().size(), kMaxNotFoundTrace);
    for (uint32_t i = 0; i < listed; ++i) {
      const Backend& b = snap.entries()[i].backend;
      TraceEntry t;
      t.index = i;
      t.decision = b.FindMapping(model) != nullptr ? Decision::kSkippedDisabled
                                                   : Decision::kNoMapping;
      plan.trace_.push_back(t);
    }
    return plan;
  }
  plan.route_ = route;
  plan.ticket_ = route->tickets->fetch_add(1, std::memory_order_relaxed);
  plan.trace_.reserve(static_cast<size_t>(plan.max_attempts_) + 1);

  const Strategy strategy = snap.config().strategy;
  if (!PoolManager::IsRotation(strategy)) {
    // Least-busy and lowest-latency sort each pool by live data.
    const size_t n = route->candidates.size();
    std::vector<PoolCandidate> buffer(n);
    for (size_t k = 0; k < n; ++k) {
      const uint32_t i = route->candidates[k];
      PoolCandidate& c = buffer[k];
      c.index = i;
      c.weight = route->weights[k];
      if (strategy == Strategy::kLeastBusy) {
        c.in_flight = limiter_.State(*snap.entries()[i].limiter).in_flight;
      } else {
        c.latency_ms = pools_.LatencyMs(*snap.entries()[i].latency);
      }
    }
    uint32_t begin = 0;
    for (uint32_t end : route->group_ends) {
      PoolManager::OrderPool(strategy, std::span<PoolCandidate>(buffer.data() + begin, end - begin),
                             plan.ticket_);
      begin = end;
    }
    plan.order_.reserve(n);
    for (const PoolCandidate& c : buffer) plan.order_.push_back(c.index);
  }

  // Skip, recording why, up to the first candidate available now; Next()
  // takes it from there. With none available, refuse until the earliest
  // time one frees up.
  while (plan.position_ < plan.candidates()) {
    const size_t position = plan.position_;
    const size_t group = plan.group_;
    const uint32_t index = plan.CandidateAtPosition();
    bool half_open = false;
    if (!plan.SkipIfUnavailable(index, /*claim=*/false, &half_open, nullptr)) {
      // Rewind so that Next() examines this candidate again and claims it.
      plan.position_ = position;
      plan.group_ = group;
      return plan;
    }
    ++plan.position_;
  }
  plan.status_ = plan.ExhaustedStatus();
  return plan;
}

Status Router::ResetCooldown(const std::string& backend_id) {
  auto slot = cooldowns_.Find(backend_id);
  if (!slot) return NotFoundError("no backend with id '" + backend_id + "'");
  cooldowns_.Reset(*slot);
  return Status::Ok();
}

BackendLiveState Router::LiveStateOf(const RoutingSnapshot::Entry& e) const {
  BackendLiveState s;
  s.backend_id = e.backend.id;
  s.state = cooldowns_.State(*e.cooldown);
  s.limiter = limiter_.State(*e.limiter);
  s.latency_ms = pools_.LatencyMs(*e.latency);
  return s;
}

std::vector<BackendLiveState> Router::LiveStates() const {
  const auto snap = snapshot();
  std::vector<BackendLiveState> out;
  out.reserve(snap->entries().size());
  for (const RoutingSnapshot::Entry& e : snap->entries()) out.push_back(LiveStateOf(e));
  return out;
}

Result<BackendLiveState> Router::LiveState(const std::string& backend_id) const {
  const auto snap = snapshot();
  const RoutingSnapshot::Entry* e = snap->FindEntry(backend_id);
  if (e == nullptr) return NotFoundError("no backend with id '" + backend_id + "'");
  return LiveStateOf(*e);
}

}  // namespace switchboard
