#include "switchboard/cooldown_manager.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <latch>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/makers.h"
#include "switchboard/clock.h"
#include "switchboard/config.h"
#include "switchboard/types.h"

namespace switchboard {
namespace {

using std::chrono::seconds;
using ::switchboard::testing::MakeBackend;
using ::switchboard::testing::TestEpoch;

const CooldownPolicy kDefaultPolicy = CooldownPolicy::FromConfig(Config{});

AttemptOutcome Http(int status, Headers headers = {}) {
  AttemptOutcome outcome;
  outcome.http_status = status;
  outcome.headers = std::move(headers);
  return outcome;
}

AttemptOutcome Transport(TransportError error) {
  AttemptOutcome outcome;
  outcome.transport_error = error;
  return outcome;
}

// Whole milliseconds from `now` to `until`; -1 when there is no `until`.
int64_t MillisAfter(std::optional<SystemTime> until, SystemTime now) {
  if (!until) return -1;
  return std::chrono::duration_cast<std::chrono::milliseconds>(*until - now).count();
}

// Microseconds of a parsed Retry-After; -1 for nullopt.
int64_t Micros(std::optional<Duration> d) {
  if (!d) return -1;
  return std::chrono::duration_cast<std::chrono::microseconds>(*d).count();
}

// Records what the manager sends. Thread-safe.
class RecordingSink final : public StateSink {
 public:
  void OnBackendState(const BackendState& state) override {
    std::lock_guard<std::mutex> lock(mu_);
    states_.push_back(state);
  }
  void OnCooldownEvent(const CooldownEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
  }
  std::vector<BackendState> states() const {
    std::lock_guard<std::mutex> lock(mu_);
    return states_;
  }
  std::vector<CooldownEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<BackendState> states_;   // guarded by mu_
  std::vector<CooldownEvent> events_;  // guarded by mu_
};

// Drives `slot` into error with error_threshold 503s (default policy: 5 s).
void FailUntilError(const CooldownManager& cooldowns, CooldownManager::Slot& slot) {
  for (int i = 0; i < kDefaultPolicy.error_threshold; ++i) {
    cooldowns.OnOutcome(slot, Http(503), kDefaultPolicy);
  }
}

TEST_CASE("CooldownPolicy takes base, max and error_threshold from the config", "[cooldown]") {
  Config config;
  config.cooldown_base_seconds = 7;
  config.cooldown_max_seconds = 70;
  config.error_threshold = 5;
  const CooldownPolicy policy = CooldownPolicy::FromConfig(config);
  CHECK(policy.base == seconds(7));
  CHECK(policy.max == seconds(70));
  CHECK(policy.error_threshold == 5);
}

TEST_CASE("Consecutive 429s back off 5, 10, 20 ... seconds up to 300 by default", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const std::vector<int64_t> expected = {5, 10, 20, 40, 80, 160, 300, 300, 300};
  for (size_t i = 0; i < expected.size(); ++i) {
    const BackendState state = cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
    INFO("429 number " << i + 1);
    CHECK(state.status == BackendStatus::kCooling);
    CHECK(state.consecutive_429_count == static_cast<int>(i + 1));
    CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == expected[i] * 1000);
    clock.Advance(seconds(expected[i]));
  }
}

TEST_CASE("The backoff stays at the maximum however many 429s come in a row", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  BackendState state;
  for (int i = 0; i < 200; ++i) {
    clock.Advance(seconds(300));
    state = cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  }
  CHECK(state.consecutive_429_count == 200);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 300'000);
}

TEST_CASE("Retry-After in seconds lengthens a 429 cooldown", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const BackendState state =
      cooldowns.OnOutcome(*slot, Http(429, {{"Retry-After", "42"}}), kDefaultPolicy);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 42'000);
}

TEST_CASE("Retry-After as an HTTP date lengthens a 429 cooldown", "[cooldown]") {
  ManualClock clock;  // 2026-01-01T00:00:00Z, a Thursday
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const BackendState state = cooldowns.OnOutcome(
      *slot, Http(429, {{"Retry-After", "Thu, 01 Jan 2026 00:02:00 GMT"}}), kDefaultPolicy);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 120'000);
}

TEST_CASE("retry-after-ms lengthens a 429 cooldown and wins over Retry-After", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const BackendState state = cooldowns.OnOutcome(
      *slot, Http(429, {{"Retry-After", "100"}, {"retry-after-ms", "7500"}}), kDefaultPolicy);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 7'500);
}

TEST_CASE("A Retry-After shorter than the backoff does not shorten it", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const BackendState state =
      cooldowns.OnOutcome(*slot, Http(429, {{"Retry-After", "1"}}), kDefaultPolicy);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 5'000);
}

TEST_CASE("Retry-After never lengthens a cooldown beyond the maximum", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const Headers headers =
      GENERATE(Headers{{"Retry-After", "3600"}}, Headers{{"retry-after-ms", "3600000"}},
               Headers{{"Retry-After", "Fri, 02 Jan 2026 00:00:00 GMT"}});
  const BackendState state = cooldowns.OnOutcome(*slot, Http(429, headers), kDefaultPolicy);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 300'000);
}

TEST_CASE("A shorter new cooldown never shortens a running one", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const SystemTime start = clock.WallNow();
  cooldowns.OnOutcome(*slot, Http(429, {{"Retry-After", "200"}}), kDefaultPolicy);
  clock.Advance(seconds(10));
  // The second 429 alone would mean 10 s; a quota cooldown of 20 s.
  BackendState state = cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  cooldowns.CoolUntil(*slot, clock.WallNow() + seconds(20), "quota");
  state = cooldowns.State(*slot);
  CHECK(MillisAfter(state.cooldown_until, start) == 200'000);
  CHECK(state.consecutive_429_count == 2);
}

TEST_CASE("A cooling backend is available again once its cooldown has passed", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  const SystemTime until = clock.WallNow() + seconds(5);

  CooldownCheck check = cooldowns.Check(*slot);
  REQUIRE_FALSE(check.available);
  CHECK(check.reason == "cooling");
  CHECK(check.until == until);

  clock.Advance(seconds(4));
  CHECK_FALSE(cooldowns.TryBegin(*slot).available);

  clock.Advance(seconds(1));
  check = cooldowns.TryBegin(*slot);
  CHECK(check.available);
  CHECK_FALSE(check.half_open);
}

TEST_CASE("error_threshold consecutive failures put a backend in error with a cooldown",
          "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Transport(TransportError::kConnect), kDefaultPolicy);
  cooldowns.OnOutcome(*slot, Transport(TransportError::kTimeout), kDefaultPolicy);
  const BackendState state = cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);

  CHECK(state.status == BackendStatus::kError);
  CHECK(state.consecutive_failures == 3);
  CHECK(state.last_error == "503 from upstream");
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 5'000);
  const CooldownCheck check = cooldowns.Check(*slot);
  CHECK_FALSE(check.available);
  CHECK(check.reason == "error");
  CHECK(check.until == *state.cooldown_until);
}

TEST_CASE("Fewer failures than error_threshold leave the backend available", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(502), kDefaultPolicy);
  const BackendState state =
      cooldowns.OnOutcome(*slot, Transport(TransportError::kReset), kDefaultPolicy);

  CHECK(state.status == BackendStatus::kHealthy);
  CHECK(state.consecutive_failures == 2);
  CHECK(state.last_error == "connection reset");
  CHECK_FALSE(state.cooldown_until.has_value());
  CHECK(cooldowns.Check(*slot).available);
}

TEST_CASE("After an error cooldown exactly one TryBegin gets the half-open trial", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));

  const CooldownCheck peek = cooldowns.Check(*slot);
  CHECK(peek.available);
  CHECK(peek.half_open);

  const CooldownCheck first = cooldowns.TryBegin(*slot);
  CHECK(first.available);
  CHECK(first.half_open);

  const CooldownCheck second = cooldowns.TryBegin(*slot);
  CHECK_FALSE(second.available);
  CHECK(second.reason == "half_open_busy");
  CHECK(second.until == clock.WallNow());
  CHECK(cooldowns.Check(*slot).reason == "half_open_busy");
}

TEST_CASE("A successful half-open trial makes the backend healthy", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);

  const BackendState state = cooldowns.OnOutcome(*slot, Http(200), kDefaultPolicy);
  CHECK(state.status == BackendStatus::kHealthy);
  CHECK(state.consecutive_failures == 0);
  const CooldownCheck check = cooldowns.TryBegin(*slot);
  CHECK(check.available);
  CHECK_FALSE(check.half_open);
}

TEST_CASE("A failed half-open trial puts the backend back in error for longer", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);

  BackendState state = cooldowns.OnOutcome(*slot, Http(500), kDefaultPolicy);
  CHECK(state.status == BackendStatus::kError);
  CHECK(state.consecutive_failures == 4);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 10'000);
  CHECK(cooldowns.Check(*slot).reason == "error");

  // The next trial, after 10 s, fails too: 20 s.
  clock.Advance(seconds(10));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);
  state = cooldowns.OnOutcome(*slot, Transport(TransportError::kTimeout), kDefaultPolicy);
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 20'000);
}

TEST_CASE("Abandon gives the half-open trial to the next request", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);
  REQUIRE_FALSE(cooldowns.TryBegin(*slot).available);

  cooldowns.Abandon(*slot);
  const CooldownCheck check = cooldowns.TryBegin(*slot);
  CHECK(check.available);
  CHECK(check.half_open);
}

TEST_CASE("A 401 or 403 puts the backend in error for the maximum cooldown", "[cooldown]") {
  const int status = GENERATE(401, 403);
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const BackendState state = cooldowns.OnOutcome(*slot, Http(status), kDefaultPolicy);

  CHECK(state.status == BackendStatus::kError);
  CHECK(state.last_error == std::to_string(status) + " from upstream: check the backend's API key");
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 300'000);
  CHECK(cooldowns.Check(*slot).reason == "error");
  clock.Advance(seconds(300));
  CHECK(cooldowns.TryBegin(*slot).half_open);
}

TEST_CASE("A 2xx resets the counters and ends a running cooldown", "[cooldown]") {
  const int status = GENERATE(200, 201, 204);
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  BackendState state = cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);
  REQUIRE(state.consecutive_429_count == 2);
  REQUIRE(state.consecutive_failures == 1);

  // From a request that started before the cooldown.
  state = cooldowns.OnOutcome(*slot, Http(status), kDefaultPolicy);
  CHECK(state.status == BackendStatus::kHealthy);
  CHECK(state.consecutive_429_count == 0);
  CHECK(state.consecutive_failures == 0);
  CHECK(state.last_error.empty());
  CHECK_FALSE(state.cooldown_until.has_value());
  CHECK(cooldowns.Check(*slot).available);
}

TEST_CASE("A 429 ends a failure streak", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);
  cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  const BackendState state = cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);
  CHECK(state.consecutive_failures == 1);
  CHECK(state.status == BackendStatus::kCooling);
}

TEST_CASE("A 429 from a half-open trial turns the error into a plain cooldown", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);

  const BackendState state = cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  CHECK(state.status == BackendStatus::kCooling);
  CHECK(state.consecutive_failures == 0);
  CHECK(state.last_error == "429 rate limited by upstream");
  CHECK(MillisAfter(state.cooldown_until, clock.WallNow()) == 5'000);
  clock.Advance(seconds(5));
  const CooldownCheck check = cooldowns.TryBegin(*slot);
  CHECK(check.available);
  CHECK_FALSE(check.half_open);
}

TEST_CASE("Other 4xx outcomes change nothing", "[cooldown]") {
  const int status = GENERATE(400, 404, 409, 413, 422);
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  const BackendState before = cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);

  CHECK(cooldowns.OnOutcome(*slot, Http(status), kDefaultPolicy) == before);
  CHECK(cooldowns.State(*slot) == before);
}

TEST_CASE("A cancelled attempt changes nothing", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const BackendState before = cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);

  AttemptOutcome cancelled = Transport(TransportError::kCancelled);
  cancelled.http_status = 503;  // the status, if any, does not matter
  CHECK(cooldowns.OnOutcome(*slot, cancelled, kDefaultPolicy) == before);
}

TEST_CASE("The sink receives each state change and each new cooldown", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));

  const BackendState failed = cooldowns.OnOutcome(*slot, Http(503), kDefaultPolicy);
  const BackendState limited = cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  const BackendState healthy = cooldowns.OnOutcome(*slot, Http(200), kDefaultPolicy);

  CHECK(sink.states() == std::vector<BackendState>{failed, limited, healthy});
  const std::vector<CooldownEvent> events = sink.events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].backend_id == "bkd_a");
  CHECK(events[0].backend_name == "a");
  CHECK(events[0].reason == "rate_limited");
  CHECK(events[0].upstream_status == 429);
  CHECK(events[0].start == clock.WallNow());
  CHECK(events[0].until == clock.WallNow() + seconds(5));
}

TEST_CASE("The sink gets nothing for outcomes that change nothing", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));

  cooldowns.OnOutcome(*slot, Http(200), kDefaultPolicy);  // already healthy
  cooldowns.OnOutcome(*slot, Http(400), kDefaultPolicy);
  cooldowns.OnOutcome(*slot, Transport(TransportError::kCancelled), kDefaultPolicy);
  cooldowns.CoolUntil(*slot, clock.WallNow(), "quota");  // already over

  CHECK(sink.states().empty());
  CHECK(sink.events().empty());
}

TEST_CASE("An error cooldown is recorded as an errors event with the upstream status",
          "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);
  cooldowns.OnOutcome(*slot, Transport(TransportError::kConnect), kDefaultPolicy);

  const std::vector<CooldownEvent> events = sink.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0].reason == "errors");
  CHECK(events[0].upstream_status == 503);
  CHECK(events[0].until == events[0].start + seconds(5));
  CHECK(events[1].reason == "errors");
  CHECK(events[1].upstream_status == 0);
  CHECK(events[1].until == clock.WallNow() + seconds(10));
  CHECK(sink.states().back().last_error == "connect failed");
}

TEST_CASE("An auth failure is recorded as an auth event", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(403), kDefaultPolicy);

  const std::vector<CooldownEvent> events = sink.events();
  REQUIRE(events.size() == 1);
  CHECK(events[0].reason == "auth");
  CHECK(events[0].upstream_status == 403);
  CHECK(events[0].until == clock.WallNow() + seconds(300));
  REQUIRE(sink.states().size() == 1);
  CHECK(sink.states()[0].status == BackendStatus::kError);
}

TEST_CASE("CoolUntil cools a backend down without a failed attempt", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  const SystemTime until = clock.WallNow() + seconds(3600);
  cooldowns.CoolUntil(*slot, until, "quota");

  const BackendState state = cooldowns.State(*slot);
  CHECK(state.status == BackendStatus::kCooling);
  CHECK(state.cooldown_until == until);
  CHECK(state.consecutive_429_count == 0);
  CHECK(cooldowns.Check(*slot).reason == "cooling");
  REQUIRE(sink.events().size() == 1);
  CHECK(sink.events()[0].reason == "quota");
  CHECK(sink.events()[0].upstream_status == 0);
  CHECK(sink.events()[0].until == until);
  CHECK(sink.states() == std::vector<BackendState>{state});
}

TEST_CASE("Reset makes a backend healthy with counters at 0", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));
  REQUIRE(cooldowns.TryBegin(*slot).half_open);

  const BackendState state = cooldowns.Reset(*slot);
  BackendState expected;
  expected.backend_id = "bkd_a";
  CHECK(state == expected);
  CHECK(sink.states().back() == expected);
  const CooldownCheck check = cooldowns.TryBegin(*slot);
  CHECK(check.available);
  CHECK_FALSE(check.half_open);
}

TEST_CASE("Attach loads the persisted state of a backend", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  Backend backend = MakeBackend("a");
  backend.status = BackendStatus::kCooling;
  backend.cooldown_until = clock.WallNow() + seconds(30);
  backend.consecutive_429_count = 3;
  backend.consecutive_failures = 1;
  backend.last_error = "429 rate limited by upstream";
  auto slot = cooldowns.Attach(backend);

  const CooldownCheck check = cooldowns.Check(*slot);
  CHECK_FALSE(check.available);
  CHECK(check.until == *backend.cooldown_until);
  const BackendState state = cooldowns.State(*slot);
  CHECK(state.backend_id == backend.id);
  CHECK(state.consecutive_429_count == 3);
  CHECK(state.consecutive_failures == 1);
  CHECK(state.last_error == backend.last_error);
  // The fourth 429 in a row: 40 s.
  const BackendState next = cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);
  CHECK(MillisAfter(next.cooldown_until, clock.WallNow()) == 40'000);
}

TEST_CASE("A persisted error without a cooldown gets a half-open trial", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  Backend backend = MakeBackend("a");
  backend.status = BackendStatus::kError;
  auto slot = cooldowns.Attach(backend);
  CHECK(cooldowns.TryBegin(*slot).half_open);
}

TEST_CASE("Attaching a backend again keeps its live state and takes the new name", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  cooldowns.OnOutcome(*slot, Http(429), kDefaultPolicy);

  Backend renamed = MakeBackend("a");  // as stored before the 429: healthy
  renamed.name = "a-renamed";
  auto again = cooldowns.Attach(renamed);
  CHECK(again == slot);
  CHECK(cooldowns.State(*again).status == BackendStatus::kCooling);

  clock.Advance(seconds(5));
  cooldowns.OnOutcome(*again, Http(429), kDefaultPolicy);
  CHECK(sink.events().back().backend_name == "a-renamed");
}

TEST_CASE("Detach forgets a backend", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  REQUIRE(cooldowns.Find("bkd_a") == slot);
  cooldowns.Detach("bkd_a");
  CHECK(cooldowns.Find("bkd_a") == nullptr);
  CHECK(cooldowns.Find("bkd_unknown") == nullptr);
}

TEST_CASE("Classify sorts outcomes into the contract's classes", "[cooldown]") {
  struct Row {
    int status;
    TransportError error;
    OutcomeClass expected;
  };
  const Row row = GENERATE(values<Row>({
      {200, TransportError::kNone, OutcomeClass::kSuccess},
      {201, TransportError::kNone, OutcomeClass::kSuccess},
      {204, TransportError::kNone, OutcomeClass::kSuccess},
      {101, TransportError::kNone, OutcomeClass::kFailure},
      {301, TransportError::kNone, OutcomeClass::kFailure},
      {400, TransportError::kNone, OutcomeClass::kClientError},
      {401, TransportError::kNone, OutcomeClass::kAuthError},
      {403, TransportError::kNone, OutcomeClass::kAuthError},
      {404, TransportError::kNone, OutcomeClass::kClientError},
      {409, TransportError::kNone, OutcomeClass::kClientError},
      {422, TransportError::kNone, OutcomeClass::kClientError},
      {429, TransportError::kNone, OutcomeClass::kRateLimited},
      {500, TransportError::kNone, OutcomeClass::kFailure},
      {502, TransportError::kNone, OutcomeClass::kFailure},
      {503, TransportError::kNone, OutcomeClass::kFailure},
      {504, TransportError::kNone, OutcomeClass::kFailure},
      {0, TransportError::kNone, OutcomeClass::kFailure},
      {0, TransportError::kConnect, OutcomeClass::kFailure},
      {0, TransportError::kTimeout, OutcomeClass::kFailure},
      {0, TransportError::kReset, OutcomeClass::kFailure},
      {0, TransportError::kProtocol, OutcomeClass::kFailure},
      {200, TransportError::kReset, OutcomeClass::kFailure},  // broke off mid-body
      {0, TransportError::kCancelled, OutcomeClass::kCancelled},
      {200, TransportError::kCancelled, OutcomeClass::kCancelled},
  }));
  AttemptOutcome outcome = Http(row.status);
  outcome.transport_error = row.error;
  INFO("status " << row.status << ", transport " << TransportErrorName(row.error));
  CHECK(Classify(outcome) == row.expected);
}

TEST_CASE("Only 429s, failures and auth errors fail over", "[cooldown]") {
  CHECK(ShouldFailOver(OutcomeClass::kRateLimited));
  CHECK(ShouldFailOver(OutcomeClass::kFailure));
  CHECK(ShouldFailOver(OutcomeClass::kAuthError));
  CHECK_FALSE(ShouldFailOver(OutcomeClass::kSuccess));
  CHECK_FALSE(ShouldFailOver(OutcomeClass::kClientError));
  CHECK_FALSE(ShouldFailOver(OutcomeClass::kCancelled));
}

TEST_CASE("ParseRetryAfter reads seconds, HTTP dates and milliseconds", "[cooldown]") {
  struct Row {
    Headers headers;
    int64_t expected_micros;  // -1: nullopt
  };
  const Row row = GENERATE(values<Row>({
      {{}, -1},
      {{{"Retry-After", "10"}}, 10'000'000},
      {{{"retry-after", " 10 "}}, 10'000'000},
      {{{"RETRY-AFTER", "0"}}, 0},
      {{{"Retry-After", "Thu, 01 Jan 2026 00:00:30 GMT"}}, 30'000'000},
      {{{"Retry-After", "Wed, 31 Dec 2025 23:59:00 GMT"}}, 0},  // past: no wait
      {{{"Retry-After", "Thursday, 01-Jan-26 00:00:30 GMT"}}, 30'000'000},
      {{{"retry-after-ms", "250"}}, 250'000},
      {{{"Retry-After-Ms", "2.5"}}, 2'500},
      {{{"retry-after-ms", "250"}, {"Retry-After", "10"}}, 250'000},
      // Invalid values are ignored; an invalid retry-after-ms falls back.
      {{{"retry-after-ms", "-1"}, {"Retry-After", "10"}}, 10'000'000},
      {{{"retry-after-ms", "abc"}}, -1},
      {{{"retry-after-ms", "inf"}}, -1},
      {{{"retry-after-ms", "nan"}}, -1},
      {{{"retry-after-ms", ""}}, -1},
      {{{"Retry-After", "-5"}}, -1},
      {{{"Retry-After", "1.5"}}, -1},
      {{{"Retry-After", "+5"}}, -1},
      {{{"Retry-After", "soon"}}, -1},
      {{{"Retry-After", ""}}, -1},
      {{{"Retry-After", "Thu, 32 Jan 2026 00:00:30 GMT"}}, -1},
  }));
  ManualClock clock;
  CHECK(Micros(ParseRetryAfter(row.headers, clock.WallNow())) == row.expected_micros);
}

TEST_CASE("ParseRetryAfter caps absurd values instead of overflowing", "[cooldown]") {
  ManualClock clock;
  const Headers headers = GENERATE(Headers{{"Retry-After", "99999999999999999999999999"}},
                                   Headers{{"retry-after-ms", "1e300"}});
  const std::optional<Duration> d = ParseRetryAfter(headers, clock.WallNow());
  REQUIRE(d.has_value());
  CHECK(*d >= std::chrono::hours(24 * 365));
}

TEST_CASE("FindHeader ignores case and returns null when absent", "[cooldown]") {
  const Headers headers = {{"Content-Type", "application/json"}, {"X-Thing", "1"}};
  REQUIRE(FindHeader(headers, "content-type") != nullptr);
  CHECK(*FindHeader(headers, "content-type") == "application/json");
  CHECK(*FindHeader(headers, "x-THING") == "1");
  CHECK(FindHeader(headers, "content") == nullptr);
}

TEST_CASE("TransportErrorName names every transport error", "[cooldown]") {
  CHECK(TransportErrorName(TransportError::kNone) == "none");
  CHECK(TransportErrorName(TransportError::kConnect) == "connect");
  CHECK(TransportErrorName(TransportError::kTimeout) == "timeout");
  CHECK(TransportErrorName(TransportError::kReset) == "reset");
  CHECK(TransportErrorName(TransportError::kProtocol) == "protocol");
  CHECK(TransportErrorName(TransportError::kCancelled) == "cancelled");
}

TEST_CASE("EffectiveStatus reports disabled, error, cooling and healthy", "[cooldown]") {
  const SystemTime now = TestEpoch();
  Backend backend = MakeBackend("a");
  CHECK(EffectiveStatus(backend, now) == BackendStatus::kHealthy);

  backend.status = BackendStatus::kCooling;
  backend.cooldown_until = now + seconds(1);
  CHECK(EffectiveStatus(backend, now) == BackendStatus::kCooling);
  CHECK(EffectiveStatus(backend, now + seconds(1)) == BackendStatus::kHealthy);

  backend.status = BackendStatus::kError;
  CHECK(EffectiveStatus(backend, now + seconds(10)) == BackendStatus::kError);

  backend.enabled = false;
  CHECK(EffectiveStatus(backend, now) == BackendStatus::kDisabled);
  backend.enabled = true;
  backend.status = BackendStatus::kDisabled;
  CHECK(EffectiveStatus(backend, now) == BackendStatus::kDisabled);
}

TEST_CASE("Of 8 threads calling TryBegin on a half-open backend exactly one wins", "[cooldown]") {
  ManualClock clock;
  CooldownManager cooldowns(clock, nullptr);
  auto slot = cooldowns.Attach(MakeBackend("a"));
  FailUntilError(cooldowns, *slot);
  clock.Advance(seconds(5));

  constexpr int kThreads = 8;
  std::latch start(kThreads);
  std::atomic<int> trials{0};
  std::atomic<int> busy{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      const CooldownCheck check = cooldowns.TryBegin(*slot);
      if (check.available && check.half_open) ++trials;
      if (!check.available && check.reason == "half_open_busy") ++busy;
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(trials == 1);
  CHECK(busy == kThreads - 1);
}

TEST_CASE("After concurrent outcomes the sink's last state is the backend's state", "[cooldown]") {
  ManualClock clock;
  RecordingSink sink;
  CooldownManager cooldowns(clock, &sink);
  auto slot = cooldowns.Attach(MakeBackend("a"));

  constexpr int kThreads = 8;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      for (int j = 0; j < 200; ++j) {
        const int status = (i + j) % 3 == 0 ? 200 : (i + j) % 3 == 1 ? 429 : 503;
        cooldowns.OnOutcome(*slot, Http(status), kDefaultPolicy);
        clock.Advance(std::chrono::milliseconds(1));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const std::vector<BackendState> states = sink.states();
  REQUIRE_FALSE(states.empty());
  CHECK(states.back() == cooldowns.State(*slot));
}

}  // namespace
}  // namespace switchboard
