// The contract's routing rules, one test (or a few) per rule, with a manual
// clock. Rule numbers refer to "Routing and failover semantics".
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "support/makers.h"
#include "switchboard/router.h"
#include "switchboard/storage_writer.h"

namespace switchboard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::MakeBackend;

AttemptOutcome Status(int http_status, Headers headers = {}) {
  return testing::HttpOutcome(http_status, std::move(headers));
}

AttemptOutcome Transport(TransportError e) {
  AttemptOutcome o;
  o.transport_error = e;
  o.latency = milliseconds(100);
  return o;
}

// Names of the backends a plan tries, feeding it `outcomes` in turn (the last
// one repeats).
std::vector<std::string> Walk(RoutePlan& plan, const std::vector<AttemptOutcome>& outcomes) {
  std::vector<std::string> names;
  size_t i = 0;
  while (const PlannedAttempt* a = plan.Next()) {
    names.push_back(a->backend().name);
    const AttemptOutcome& o = outcomes[std::min(i++, outcomes.size() - 1)];
    if (!ShouldFailOver(plan.Report(o))) break;
  }
  return names;
}

std::string FirstTried(const Router& router, const std::string& model = "gpt-4o") {
  RoutePlan plan = router.Route(model);
  REQUIRE(plan.ok());
  const PlannedAttempt* a = plan.Next();
  REQUIRE(a != nullptr);
  std::string name = a->backend().name;
  plan.Report(Status(200));
  return name;
}

struct Fixture {
  ManualClock clock;
  Router router{clock, nullptr};

  void Use(std::vector<Backend> backends, Config config = {}) {
    REQUIRE(router.Update(std::move(backends), std::move(config)).ok());
  }
};

// --- Rule 1: candidates ---------------------------------------------------------

TEST_CASE("Router refuses a model no backend maps with NotFound", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  RoutePlan plan = f.router.Route("llama-3");
  CHECK(plan.status().code() == StatusCode::kNotFound);
  CHECK(plan.Next() == nullptr);
  REQUIRE(plan.trace().size() == 1);
  CHECK(plan.trace()[0].decision == Decision::kNoMapping);
}

TEST_CASE("Router never tries a disabled backend and refuses a model only it serves", "[router]") {
  Fixture f;
  Backend off = MakeBackend("off");
  off.enabled = false;
  Backend on = MakeBackend("on");
  on.model_mappings = {{"other", ModelMapping{"other", 1}}};
  f.Use({off, on});
  RoutePlan plan = f.router.Route("gpt-4o");
  CHECK(plan.status().code() == StatusCode::kNotFound);
  REQUIRE(plan.trace().size() == 2);
  CHECK(plan.trace()[0].decision == Decision::kSkippedDisabled);
}

TEST_CASE("Router skips a disabled backend and says so in the trace", "[router]") {
  Fixture f;
  Backend off = MakeBackend("a-off");
  off.enabled = false;
  f.Use({off, MakeBackend("b-on")});
  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.ok());
  CHECK(Walk(plan, {Status(200)}) == std::vector<std::string>{"b-on"});
  CHECK(plan.TraceJson().find(R"({"backend":"a-off","pool":"primary","decision":"skipped_disabled"})") !=
        std::string::npos);
}

TEST_CASE("Router serves any model through a wildcard mapping, passing the name through",
          "[router]") {
  Fixture f;
  Backend any = MakeBackend("any");
  any.model_mappings = {{"*", ModelMapping{"*", 1}}};
  f.Use({any});
  RoutePlan plan = f.router.Route("mistral-large");
  REQUIRE(plan.ok());
  const PlannedAttempt* a = plan.Next();
  REQUIRE(a != nullptr);
  CHECK(a->upstream_model() == "mistral-large");
}

TEST_CASE("Router sends the backend's upstream model id for an exact mapping", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.ok());
  const PlannedAttempt* a = plan.Next();
  REQUIRE(a != nullptr);
  CHECK(a->upstream_model() == "gpt-4o-upstream");
}

TEST_CASE("Router combines exact and wildcard backends for a mapped model", "[router]") {
  Fixture f;
  Backend any = MakeBackend("any", "fallback");
  any.model_mappings = {{"*", ModelMapping{"*", 1}}};
  f.Use({MakeBackend("exact"), any});
  RoutePlan plan = f.router.Route("gpt-4o");
  CHECK(Walk(plan, {Status(500)}) == std::vector<std::string>{"exact", "any"});
  CHECK(f.router.snapshot()->models() == std::vector<std::string>{"gpt-4o"});
  CHECK(f.router.snapshot()->has_wildcard());
}

// --- Rule 2: order ----------------------------------------------------------------

TEST_CASE("Router tries pools in pool_order, unlisted pools after by name", "[router]") {
  Fixture f;
  Config config;
  config.pool_order = {"fast", "primary"};
  config.max_attempts = 5;
  f.Use({MakeBackend("p", "primary"), MakeBackend("z", "zeta"), MakeBackend("f", "fast"),
         MakeBackend("b", "beta")},
        config);
  RoutePlan plan = f.router.Route("gpt-4o");
  CHECK(Walk(plan, {Status(503)}) == std::vector<std::string>{"f", "p", "b", "z"});
}

TEST_CASE("Router rotates round-robin inside a pool and keeps pools in order", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a"), MakeBackend("b"), MakeBackend("c"), MakeBackend("x", "fallback")});
  std::map<std::string, int> first;
  for (int i = 0; i < 300; ++i) ++first[FirstTried(f.router)];
  CHECK(first["a"] == 100);
  CHECK(first["b"] == 100);
  CHECK(first["c"] == 100);
  CHECK(first.count("x") == 0);
}

TEST_CASE("Router's weighted strategy leads with each backend in proportion to its weight",
          "[router]") {
  Fixture f;
  Config config;
  config.strategy = Strategy::kWeighted;
  Backend heavy = MakeBackend("heavy");
  heavy.model_mappings["gpt-4o"].weight = 3;
  f.Use({heavy, MakeBackend("light")}, config);
  std::map<std::string, int> first;
  for (int i = 0; i < 400; ++i) ++first[FirstTried(f.router)];
  CHECK(first["heavy"] == 300);
  CHECK(first["light"] == 100);
}

TEST_CASE("Router's least-busy strategy leads with the backend with fewest requests in flight",
          "[router]") {
  Fixture f;
  Config config;
  config.strategy = Strategy::kLeastBusy;
  f.Use({MakeBackend("a"), MakeBackend("b"), MakeBackend("c")}, config);
  // Hold two requests on whichever backends come first.
  RoutePlan p1 = f.router.Route("gpt-4o");
  const PlannedAttempt* a1 = p1.Next();
  REQUIRE(a1 != nullptr);
  RoutePlan p2 = f.router.Route("gpt-4o");
  const PlannedAttempt* a2 = p2.Next();
  REQUIRE(a2 != nullptr);
  CHECK(a1->backend().name != a2->backend().name);
  std::set<std::string> busy = {a1->backend().name, a2->backend().name};
  for (int i = 0; i < 5; ++i) {
    const std::string idle = FirstTried(f.router);
    CHECK(busy.count(idle) == 0);
  }
}

TEST_CASE("Router's lowest-latency strategy prefers the fastest and still explores", "[router]") {
  Fixture f;
  Config config;
  config.strategy = Strategy::kLowestLatency;
  f.Use({MakeBackend("fast"), MakeBackend("slow")}, config);
  // Measure both once.
  for (int i = 0; i < 2; ++i) {
    RoutePlan plan = f.router.Route("gpt-4o");
    const PlannedAttempt* a = plan.Next();
    REQUIRE(a != nullptr);
    AttemptOutcome o = Status(200);
    o.latency = a->backend().name == "fast" ? milliseconds(50) : milliseconds(900);
    plan.Report(o);
  }
  std::map<std::string, int> first;
  for (uint64_t i = 0; i < 10 * PoolManager::kExploreEvery; ++i) {
    RoutePlan plan = f.router.Route("gpt-4o");
    const PlannedAttempt* a = plan.Next();
    REQUIRE(a != nullptr);
    ++first[a->backend().name];
    AttemptOutcome o = Status(200);
    o.latency = a->backend().name == "fast" ? milliseconds(50) : milliseconds(900);
    plan.Report(o);
  }
  CHECK(first["slow"] == 10);  // exactly the exploration share
  CHECK(first["fast"] == static_cast<int>(10 * PoolManager::kExploreEvery) - 10);
}

// --- Rule 3: skipped without an attempt -----------------------------------------

TEST_CASE("Router skips a backend whose request bucket is empty", "[router]") {
  Fixture f;
  Backend limited = MakeBackend("a-limited");
  limited.rpm_limit = 1;
  f.Use({limited, MakeBackend("b-free")});
  // Use the limited one's only token.
  {
    RoutePlan plan = f.router.Route("gpt-4o");
    const PlannedAttempt* a = plan.Next();
    REQUIRE(a != nullptr);
    if (a->backend().name != "a-limited") {
      plan.Report(Status(200));
      plan = f.router.Route("gpt-4o");
      a = plan.Next();
      REQUIRE(a != nullptr);
    }
    REQUIRE(a->backend().name == "a-limited");
    plan.Report(Status(200));
  }
  for (int i = 0; i < 4; ++i) {
    RoutePlan plan = f.router.Route("gpt-4o");
    CHECK(Walk(plan, {Status(200)}) == std::vector<std::string>{"b-free"});
  }
  f.clock.Advance(seconds(60));  // refilled
  std::set<std::string> seen;
  for (int i = 0; i < 2; ++i) seen.insert(FirstTried(f.router));
  CHECK(seen.count("a-limited") == 1);
}

TEST_CASE("Router skips a backend at max_concurrency until a request finishes", "[router]") {
  Fixture f;
  Backend one = MakeBackend("one");
  one.max_concurrency = 1;
  f.Use({one});
  RoutePlan holding = f.router.Route("gpt-4o");
  REQUIRE(holding.Next() != nullptr);
  RoutePlan refused = f.router.Route("gpt-4o");
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  REQUIRE(refused.trace().size() == 1);
  CHECK(refused.trace()[0].decision == Decision::kSkippedLimited);
  CHECK(refused.trace()[0].limit == LimitKind::kConcurrency);
  holding.Report(Status(200));
  RoutePlan after = f.router.Route("gpt-4o");
  CHECK(after.ok());
}

TEST_CASE("Router frees a concurrency slot when a plan is dropped mid-attempt", "[router]") {
  Fixture f;
  Backend one = MakeBackend("one");
  one.max_concurrency = 1;
  f.Use({one});
  {
    RoutePlan abandoned = f.router.Route("gpt-4o");
    REQUIRE(abandoned.Next() != nullptr);
  }
  CHECK(f.router.Route("gpt-4o").ok());
}

// --- Rule 4: 429 ------------------------------------------------------------------

TEST_CASE("Router cools a backend down after a 429 and moves on to the next", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a"), MakeBackend("b")});
  RoutePlan plan = f.router.Route("gpt-4o");
  const PlannedAttempt* first = plan.Next();
  REQUIRE(first != nullptr);
  const std::string limited = first->backend().name;
  CHECK(plan.Report(Status(429)) == OutcomeClass::kRateLimited);
  const PlannedAttempt* second = plan.Next();
  REQUIRE(second != nullptr);
  CHECK(second->backend().name != limited);
  plan.Report(Status(200));

  auto live = f.router.LiveState("bkd_" + limited);
  REQUIRE(live.ok());
  CHECK(live->state.status == BackendStatus::kCooling);
  CHECK(live->state.consecutive_429_count == 1);
  CHECK(live->state.cooldown_until == f.clock.WallNow() + seconds(5));
  // While it cools, every request goes to the other one.
  for (int i = 0; i < 4; ++i) CHECK(FirstTried(f.router) != limited);
}

TEST_CASE("Router doubles the cooldown on each consecutive 429 up to the cap", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  std::vector<int64_t> durations;
  for (int i = 0; i < 8; ++i) {
    RoutePlan plan = f.router.Route("gpt-4o");
    REQUIRE(plan.ok());
    REQUIRE(plan.Next() != nullptr);
    plan.Report(Status(429));
    const auto until = *f.router.LiveState("bkd_a")->state.cooldown_until;
    durations.push_back(std::chrono::duration_cast<seconds>(until - f.clock.WallNow()).count());
    f.clock.Advance(until - f.clock.WallNow());
  }
  CHECK(durations == std::vector<int64_t>{5, 10, 20, 40, 80, 160, 300, 300});
}

TEST_CASE("Router honours Retry-After on a 429", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.Next() != nullptr);
  plan.Report(Status(429, {{"Retry-After", "42"}}));
  CHECK(*f.router.LiveState("bkd_a")->state.cooldown_until == f.clock.WallNow() + seconds(42));
}

// --- Rule 5: 5xx, connect failures, timeouts -------------------------------------

TEST_CASE("Router moves on after a 5xx, a refused connection or a timeout", "[router]") {
  Fixture f;
  Config config;
  config.max_attempts = 4;
  f.Use({MakeBackend("a"), MakeBackend("b"), MakeBackend("c"), MakeBackend("d")}, config);
  RoutePlan plan = f.router.Route("gpt-4o");
  const auto tried = Walk(plan, {Status(502), Transport(TransportError::kConnect),
                                 Transport(TransportError::kTimeout), Status(200)});
  CHECK(tried.size() == 4);
  CHECK(plan.trace()[0].http_status == 502);
  CHECK(plan.trace()[1].transport_error == TransportError::kConnect);
}

TEST_CASE("Router puts a backend in error after error_threshold failures, then half-opens it",
          "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  for (int i = 0; i < 3; ++i) {
    RoutePlan plan = f.router.Route("gpt-4o");
    REQUIRE(plan.ok());
    REQUIRE(plan.Next() != nullptr);
    plan.Report(Status(503));
  }
  auto live = f.router.LiveState("bkd_a");
  CHECK(live->state.status == BackendStatus::kError);
  CHECK(f.router.Route("gpt-4o").status().code() == StatusCode::kResourceExhausted);

  f.clock.Advance(*live->state.cooldown_until - f.clock.WallNow());
  RoutePlan trial = f.router.Route("gpt-4o");
  REQUIRE(trial.ok());
  const PlannedAttempt* a = trial.Next();
  REQUIRE(a != nullptr);
  CHECK(a->half_open());
  // Exactly one trial: a second request meanwhile finds nothing to try.
  RoutePlan other = f.router.Route("gpt-4o");
  CHECK(other.status().code() == StatusCode::kResourceExhausted);
  REQUIRE(other.trace().size() == 1);
  CHECK(other.trace()[0].decision == Decision::kSkippedHalfOpen);
  trial.Report(Status(200));
  CHECK(f.router.LiveState("bkd_a")->state.status == BackendStatus::kHealthy);
  CHECK(f.router.Route("gpt-4o").ok());
}

// --- Rule 6: 401/403 ----------------------------------------------------------------

TEST_CASE("Router puts a backend with a bad key in error and moves on", "[router]") {
  for (int status : {401, 403}) {
    Fixture f;
    f.Use({MakeBackend("a"), MakeBackend("b", "fallback")});
    RoutePlan plan = f.router.Route("gpt-4o");
    CHECK(Walk(plan, {Status(status), Status(200)}) == std::vector<std::string>{"a", "b"});
    CHECK(f.router.LiveState("bkd_a")->state.status == BackendStatus::kError);
    CHECK(FirstTried(f.router) == "b");
  }
}

// --- Rule 7: other 4xx ------------------------------------------------------------

TEST_CASE("Router does not retry a client error and leaves the backend healthy", "[router]") {
  for (int status : {400, 404, 413, 422}) {
    Fixture f;
    f.Use({MakeBackend("a"), MakeBackend("b", "fallback")});
    RoutePlan plan = f.router.Route("gpt-4o");
    CHECK(Walk(plan, {Status(status)}) == std::vector<std::string>{"a"});
    CHECK(plan.attempts() == 1);
    CHECK(f.router.LiveState("bkd_a")->state.status == BackendStatus::kHealthy);
  }
}

// --- Rule 8: 2xx ------------------------------------------------------------------

TEST_CASE("Router resets the 429 count and status on a 2xx", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  {
    RoutePlan plan = f.router.Route("gpt-4o");
    REQUIRE(plan.Next() != nullptr);
    plan.Report(Status(429));
  }
  f.clock.Advance(seconds(5));
  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.Next() != nullptr);
  plan.Report(Status(200));
  auto live = f.router.LiveState("bkd_a");
  CHECK(live->state.status == BackendStatus::kHealthy);
  CHECK(live->state.consecutive_429_count == 0);
}

// --- Rule 9: max_attempts -----------------------------------------------------------

TEST_CASE("Router makes at most max_attempts attempts", "[router]") {
  Fixture f;
  std::vector<Backend> many;
  for (char c = 'a'; c <= 'f'; ++c) many.push_back(MakeBackend(std::string(1, c)));
  Config config;
  config.max_attempts = 3;
  f.Use(many, config);
  RoutePlan plan = f.router.Route("gpt-4o");
  CHECK(Walk(plan, {Status(500)}).size() == 3);
  CHECK(plan.Next() == nullptr);
  // The three never reached are counted but not listed.
  CHECK(plan.candidates() == 6);
  CHECK(plan.trace().size() == 3);
}

// --- Rule 10: nothing left ------------------------------------------------------

TEST_CASE("Router refuses with the seconds until the first candidate frees up", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a"), MakeBackend("b")});
  RoutePlan plan = f.router.Route("gpt-4o");
  plan.Next();
  plan.Report(Status(429, {{"Retry-After", "30"}}));
  plan.Next();
  plan.Report(Status(429, {{"retry-after-ms", "12500"}}));
  RoutePlan refused = f.router.Route("gpt-4o");
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  REQUIRE(refused.retry_after().has_value());
  CHECK(*refused.retry_after() == seconds(13));
  f.clock.Advance(milliseconds(12500));
  CHECK(f.router.Route("gpt-4o").ok());
}

// --- Rule 11: persistence -------------------------------------------------------

TEST_CASE("Router's cooldowns survive a restart through storage", "[router]") {
  ManualClock clock;
  auto storage = NewMemoryStorage();
  REQUIRE(storage->CreateBackend(MakeBackend("a")).ok());
  {
    StorageWriter writer(*storage);
    Router router(clock, &writer);
    REQUIRE(router.LoadFrom(*storage).ok());
    RoutePlan plan = router.Route("gpt-4o");
    REQUIRE(plan.Next() != nullptr);
    plan.Report(Status(429, {{"Retry-After", "60"}}));
    REQUIRE(writer.Flush().ok());
    auto events = storage->ListCooldownEvents({.limit = 10});
    REQUIRE(events.ok());
    REQUIRE(events->size() == 1);
    CHECK(events->front().upstream_status == 429);
  }
  Router restarted(clock, nullptr);
  REQUIRE(restarted.LoadFrom(*storage).ok());
  RoutePlan plan = restarted.Route("gpt-4o");
  CHECK(plan.status().code() == StatusCode::kResourceExhausted);
  CHECK(*plan.retry_after() == seconds(60));
}

TEST_CASE("Router keeps live state across a config update", "[router]") {
  Fixture f;
  Backend a = MakeBackend("a");
  f.Use({a});
  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.Next() != nullptr);
  plan.Report(Status(429));
  // The stored backend still says healthy; the live cooldown must win.
  a.label = "renamed label";
  f.Use({a, MakeBackend("b")});
  CHECK(f.router.LiveState("bkd_a")->state.status == BackendStatus::kCooling);
  CHECK(FirstTried(f.router) == "b");
}

TEST_CASE("Router lets a request in flight finish on the snapshot it started with", "[router]") {
  Fixture f;
  f.Use({MakeBackend("a")});
  RoutePlan plan = f.router.Route("gpt-4o");
  const PlannedAttempt* a = plan.Next();
  REQUIRE(a != nullptr);
  f.Use({MakeBackend("b")});  // "a" is gone
  CHECK(a->backend().name == "a");
  plan.Report(Status(200));
  CHECK(FirstTried(f.router) == "b");
}

// --- Rule 12: trace ---------------------------------------------------------------

TEST_CASE("Router's trace names every candidate and why it was used or skipped", "[router]") {
  Fixture f;
  Config config;
  config.max_attempts = 2;
  Backend off = MakeBackend("c-off", "fallback");
  off.enabled = false;
  f.Use({MakeBackend("a", "primary"), MakeBackend("b", "fallback"), off,
         MakeBackend("d", "fallback")},
        config);
  // Cool "a" down first.
  {
    RoutePlan plan = f.router.Route("gpt-4o");
    REQUIRE(plan.Next()->backend().name == "a");
    plan.Report(Status(429));
  }
  RoutePlan plan = f.router.Route("gpt-4o");
  Walk(plan, {Status(500), Status(200)});
  const std::string json = plan.TraceJson();
  CHECK(json.find(R"("backend":"a","pool":"primary","decision":"skipped_cooling","until":")") !=
        std::string::npos);
  CHECK(json.find(R"("decision":"tried","status":500)") != std::string::npos);
  CHECK(json.find(R"("decision":"tried","status":200)") != std::string::npos);
  CHECK(json.find(R"("backend":"c-off","pool":"fallback","decision":"skipped_disabled")") !=
        std::string::npos);
  CHECK(plan.trace().size() == 4);
}

// --- Adaptive limits --------------------------------------------------------------

TEST_CASE("Router cools a backend whose upstream reports no requests left before any 429",
          "[router]") {
  Fixture f;
  f.Use({MakeBackend("a"), MakeBackend("b", "fallback")});
  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.Next()->backend().name == "a");
  plan.Report(Status(200, {{"x-ratelimit-remaining-requests", "0"},
                           {"x-ratelimit-reset-requests", "20s"}}));
  CHECK(FirstTried(f.router) == "b");
  f.clock.Advance(seconds(20));
  CHECK(FirstTried(f.router) == "a");
}

// --- Concurrency ------------------------------------------------------------------

TEST_CASE("Router stays consistent under concurrent route and report", "[router][concurrency]") {
  // 8 threads x 100k route+report, also under the sanitizers.
  constexpr int kIterations = 100000;
  constexpr int kThreads = 8;
  constexpr int kBackends = 50;
  constexpr int64_t kRpm = 600;  // 10 per second each
  ManualClock clock;
  Router router(clock, nullptr);
  std::vector<Backend> backends;
  for (int i = 0; i < kBackends; ++i) {
    Backend b = MakeBackend("b" + std::to_string(i), i % 2 == 0 ? "primary" : "fallback");
    b.rpm_limit = kRpm;
    backends.push_back(b);
  }
  REQUIRE(router.Update(backends, Config{}).ok());

  std::atomic<int64_t> attempts{0};
  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    while (!stop.load()) {
      clock.Advance(milliseconds(10));
      std::this_thread::yield();
    }
  });
  const SystemTime start = clock.WallNow();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        RoutePlan plan = router.Route("gpt-4o");
        while (plan.Next() != nullptr) {
          ++attempts;
          const int status = (i + t) % 50 == 0 ? 429 : (i % 97 == 0 ? 503 : 200);
          if (!ShouldFailOver(plan.Report(Status(status)))) break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  ticker.join();
  const double elapsed = std::chrono::duration<double>(clock.WallNow() - start).count();
  // Every attempt took a token: never more than capacity + refill over the time.
  const double bound = kBackends * (kRpm + kRpm / 60.0 * elapsed);
  CHECK(static_cast<double>(attempts.load()) <= bound + 1e-6);
  for (const BackendLiveState& s : router.LiveStates()) CHECK(s.limiter.in_flight == 0);
}

}  // namespace
}  // namespace switchboard
