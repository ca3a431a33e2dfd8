// Routers sharing state (Router::ShareState) as instances would: three
// routers on one InProcessSharedState, with one manual clock. Limits hold
// across them, a cooldown one sees is seen by all, and while the shared
// state is unreachable each falls back to its share of the limits.
#include <catch2/catch.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "support/makers.h"
#include "switchboard/router.h"
#include "switchboard/shared_state.h"

namespace switchboard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::HttpOutcome;
using testing::MakeBackend;

// Counts what reached a router's own sink.
class CountingSink final : public StateSink {
 public:
  void OnBackendState(const BackendState&) override { ++states; }
  void OnCooldownEvent(const CooldownEvent&) override { ++events; }
  std::atomic<int> states{0};
  std::atomic<int> events{0};
};

struct Instances {
  ManualClock clock;
  InProcessSharedState hub;
  std::vector<std::unique_ptr<SharedState>> endpoints;
  std::vector<std::unique_ptr<CountingSink>> sinks;
  std::vector<std::unique_ptr<Router>> routers;
  std::atomic<int> remote_changes{0};
  std::mutex mu;
  std::vector<bool> connectivity;  // guarded by mu, as router 0 heard it

  explicit Instances(std::vector<Backend> backends, int n = 3) {
    for (int i = 0; i < n; ++i) {
      endpoints.push_back(hub.Connect());
      sinks.push_back(std::make_unique<CountingSink>());
      routers.push_back(std::make_unique<Router>(clock, sinks.back().get()));
    }
    for (int i = 0; i < n; ++i) {
      routers[static_cast<size_t>(i)]->ShareState(
          endpoints[static_cast<size_t>(i)].get(), [this] { ++remote_changes; },
          [this, i](bool up) {
            if (i != 0) return;
            std::lock_guard<std::mutex> lock(mu);
            connectivity.push_back(up);
          });
      REQUIRE(routers[static_cast<size_t>(i)]->Update(backends, Config{}).ok());
    }
  }
  ~Instances() {
    routers.clear();  // before the endpoints they listen on
    endpoints.clear();
  }
  Router& operator[](size_t i) { return *routers[i]; }
};

// Routes `model` on `router` and reports 200 (waiting until the attempt's
// end reached the shared state): the backend tried, or "" when the plan had
// none.
std::string Serve(Router& router, const std::string& model = "gpt-4o") {
  RoutePlan plan = router.Route(model);
  if (!plan.ok()) return "";
  const PlannedAttempt* a = plan.Next();
  if (a == nullptr) return "";
  std::string name = a->backend().name;
  plan.Report(HttpOutcome(200));
  router.FlushSharedState();  // the lease is back before the next request
  return name;
}

TEST_CASE("Routers sharing state hold an rpm limit across all of them", "[router][shared]") {
  Backend b = MakeBackend("limited");
  b.rpm_limit = 60;
  Instances in({b});
  int served = 0;
  for (int i = 0; i < 90; ++i) served += Serve(in[static_cast<size_t>(i % 3)]).empty() ? 0 : 1;
  CHECK(served == 60);

  // Refused with the shared bucket's reason and time.
  RoutePlan plan = in[1].Route("gpt-4o");
  if (plan.ok()) {
    CHECK(plan.Next() == nullptr);
    const Status exhausted = plan.ExhaustedStatus();
    CHECK(exhausted.code() == StatusCode::kResourceExhausted);
  }
  REQUIRE_FALSE(plan.trace().empty());
  CHECK(plan.trace().back().decision == Decision::kSkippedLimited);
  CHECK(plan.trace().back().limit == LimitKind::kRequests);

  // A second later, one more request: on whichever instance asks first.
  in.clock.Advance(seconds(1));
  CHECK(Serve(in[2]) == "limited");
  CHECK(Serve(in[0]).empty());
}

TEST_CASE("Routers sharing state hold a concurrency cap across all of them", "[router][shared]") {
  Backend b = MakeBackend("capped");
  b.max_concurrency = 2;
  Instances in({b});
  RoutePlan p0 = in[0].Route("gpt-4o");
  RoutePlan p1 = in[1].Route("gpt-4o");
  REQUIRE(p0.Next() != nullptr);
  REQUIRE(p1.Next() != nullptr);
  CHECK(Serve(in[2]).empty());
  p0.Report(HttpOutcome(200));
  in[0].FlushSharedState();  // the lease goes back off the request path
  CHECK(Serve(in[2]) == "capped");
  in[2].FlushSharedState();
  // A plan dropped mid-attempt gives its lease back too.
  { RoutePlan dropped = std::move(p1); }
  in[1].FlushSharedState();
  RoutePlan a = in[2].Route("gpt-4o");
  RoutePlan c = in[0].Route("gpt-4o");
  CHECK(a.Next() != nullptr);
  CHECK(c.Next() != nullptr);
  a.Report(HttpOutcome(200));
  c.Report(HttpOutcome(200));
}

TEST_CASE("A 429 on one router cools the backend on the others", "[router][shared]") {
  Instances in({MakeBackend("main"), MakeBackend("spare", "fallback")});
  {
    RoutePlan plan = in[0].Route("gpt-4o");
    const PlannedAttempt* a = plan.Next();
    REQUIRE(a != nullptr);
    REQUIRE(a->backend().name == "main");
    plan.Report(HttpOutcome(429, {{"Retry-After", "30"}}));
  }
  in.hub.WaitForDelivery();
  for (size_t i = 1; i < 3; ++i) {
    INFO("router " << i);
    const BackendLiveState live = *in[i].LiveState("bkd_main");
    CHECK(live.state.status == BackendStatus::kCooling);
    CHECK(live.state.consecutive_429_count == 1);
    REQUIRE(live.state.cooldown_until.has_value());
    CHECK(*live.state.cooldown_until >= in.clock.WallNow() + seconds(30));
    CHECK(Serve(in[i]) == "spare");
  }
  // Only the instance that saw the 429 persists it and records the event.
  CHECK(in.sinks[0]->states >= 1);
  CHECK(in.sinks[0]->events == 1);
  CHECK(in.sinks[1]->states == 0);
  CHECK(in.sinks[2]->events == 0);

  // A reset on another instance clears it everywhere.
  REQUIRE(in[2].ResetCooldown("bkd_main").ok());
  in.hub.WaitForDelivery();
  for (size_t i = 0; i < 3; ++i) {
    CHECK(in[i].LiveState("bkd_main")->state.status == BackendStatus::kHealthy);
  }
  CHECK(Serve(in[1]) == "main");
}

TEST_CASE("Unreachable shared state: each router enforces its share of the limits until it is back",
          "[router][shared]") {
  Backend b = MakeBackend("limited");
  b.rpm_limit = 60;
  b.max_concurrency = 9;
  Instances in({b});
  in.hub.SetReachable(false);
  in.hub.WaitForDelivery();
  for (size_t i = 0; i < 3; ++i) {
    CHECK(in[i].limit_divisor() == 3);
    const LimiterState local = in[i].LiveState("bkd_limited")->limiter;
    CHECK(local.limits.rpm == 20);
    CHECK(local.limits.max_concurrency == 3);
  }
  // Each instance serves its 20, no more.
  int served = 0;
  for (int i = 0; i < 30; ++i) served += Serve(in[0]).empty() ? 0 : 1;
  CHECK(served == 20);
  {
    std::lock_guard<std::mutex> lock(in.mu);
    CHECK(in.connectivity == std::vector<bool>{false});
  }

  in.hub.SetReachable(true);
  in.hub.WaitForDelivery();
  for (size_t i = 0; i < 3; ++i) {
    CHECK(in[i].limit_divisor() == 1);
    CHECK(in[i].LiveState("bkd_limited")->limiter.limits.rpm == 60);
  }
  // The shared bucket was not touched while unreachable, and the local
  // buckets are full again: 60 more across the three.
  served = 0;
  for (int i = 0; i < 90; ++i) served += Serve(in[static_cast<size_t>(i % 3)]).empty() ? 0 : 1;
  CHECK(served == 60);
}

TEST_CASE("Backends without limits never ask the shared state", "[router][shared]") {
  Instances in({MakeBackend("free")});
  in.hub.SetReachable(false);
  in.hub.WaitForDelivery();
  for (int i = 0; i < 100; ++i) CHECK(Serve(in[static_cast<size_t>(i % 3)]) == "free");
}

}  // namespace
}  // namespace switchboard
