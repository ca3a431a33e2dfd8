#include "switchboard/rate_limiter.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "switchboard/clock.h"

namespace switchboard {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using Headers = std::vector<std::pair<std::string, std::string>>;

// Takes until refused; returns how many were admitted.
int64_t Drain(RateLimiter& limiter, RateLimiter::Slot& slot) {
  int64_t admitted = 0;
  while (limiter.TryAcquire(slot).admitted) ++admitted;
  return admitted;
}

// Takes and releases until refused; returns how many were admitted.
int64_t DrainReleasing(RateLimiter& limiter, RateLimiter::Slot& slot) {
  int64_t admitted = 0;
  while (limiter.TryAcquire(slot).admitted) {
    limiter.Release(slot);
    ++admitted;
  }
  return admitted;
}

std::optional<Duration> RequestsResetOf(const Headers& headers) {
  return ParseUpstreamQuota(headers, ManualClock().WallNow()).requests_reset;
}

std::optional<Duration> GoDuration(const std::string& text) {
  return RequestsResetOf({{"x-ratelimit-reset-requests", text}});
}

TEST_CASE("RateLimiter names every limit kind", "[rate_limiter]") {
  CHECK(LimitKindName(LimitKind::kNone) == "none");
  CHECK(LimitKindName(LimitKind::kRequests) == "rpm");
  CHECK(LimitKindName(LimitKind::kTokens) == "tpm");
  CHECK(LimitKindName(LimitKind::kConcurrency) == "concurrency");
  CHECK(LimitKindName(LimitKind::kUpstreamQuota) == "upstream_quota");
}

TEST_CASE("RateLimiter admits exactly rpm requests at once, then refuses for rpm",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 60});
  for (int i = 0; i < 60; ++i) REQUIRE(limiter.TryAcquire(*slot).admitted);
  const Admission a = limiter.TryAcquire(*slot);
  CHECK_FALSE(a.admitted);
  CHECK(a.limited_by == LimitKind::kRequests);
  CHECK(a.available_at == clock.Now() + seconds(1));
}

TEST_CASE("RateLimiter refills the request bucket continuously at rpm/60 per second",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 60});
  REQUIRE(Drain(limiter, *slot) == 60);
  const SteadyTime drained = clock.Now();

  clock.Advance(milliseconds(500));
  const Admission half = limiter.TryAcquire(*slot);
  CHECK_FALSE(half.admitted);
  CHECK(half.limited_by == LimitKind::kRequests);
  CHECK(half.available_at == drained + seconds(1));

  clock.Advance(milliseconds(499));
  CHECK_FALSE(limiter.TryAcquire(*slot).admitted);
  clock.Advance(milliseconds(1));
  CHECK(limiter.TryAcquire(*slot).admitted);
  const Admission after = limiter.TryAcquire(*slot);
  CHECK_FALSE(after.admitted);
  CHECK(after.available_at == drained + seconds(2));
}

TEST_CASE("RateLimiter refill adds up exactly over many small steps", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 7});  // 7/60 s: no exact binary fraction
  REQUIRE(Drain(limiter, *slot) == 7);
  // 7 tokens take exactly 60 s; step in 3 ms (and odd nanosecond) increments.
  int64_t admitted = 0;
  Duration elapsed{};
  while (elapsed < seconds(60)) {
    const Duration step =
        std::min<Duration>(microseconds(3001) + Duration(7), seconds(60) - elapsed);
    clock.Advance(step);
    elapsed += step;
    admitted += Drain(limiter, *slot);
  }
  CHECK(admitted == 7);
  CHECK(limiter.State(*slot).request_tokens == 0.0);
}

TEST_CASE("RateLimiter with no limits admits 100000 requests at once", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  int64_t admitted = 0;
  for (int i = 0; i < 100000; ++i) admitted += limiter.TryAcquire(*slot).admitted ? 1 : 0;
  CHECK(admitted == 100000);
  CHECK(limiter.State(*slot).in_flight == 100000);
}

TEST_CASE("RateLimiter refuses for tpm once charged beyond capacity until it has refilled",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.tpm = 1000});
  REQUIRE(limiter.TryAcquire(*slot).admitted);
  limiter.Release(*slot);
  limiter.ChargeTokens(*slot, 1500);  // 500 in debt: 30 s at 1000/60 per second
  const SteadyTime charged = clock.Now();
  CHECK(limiter.State(*slot).token_tokens == -500.0);

  const Admission a = limiter.TryAcquire(*slot);
  CHECK_FALSE(a.admitted);
  CHECK(a.limited_by == LimitKind::kTokens);
  CHECK(a.available_at > charged + seconds(30));
  CHECK(a.available_at <= charged + seconds(30) + milliseconds(1));

  clock.Advance(seconds(30));  // level exactly 0: still refused
  const Admission at_zero = limiter.TryAcquire(*slot);
  CHECK_FALSE(at_zero.admitted);
  CHECK(at_zero.available_at == a.available_at);
  CHECK(at_zero.available_at > clock.Now());

  clock.Advance(a.available_at - clock.Now());
  CHECK(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("RateLimiter admits while any tpm is left, however small", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.tpm = 1000});
  limiter.ChargeTokens(*slot, 999);
  CHECK(limiter.TryAcquire(*slot).admitted);
  limiter.ChargeTokens(*slot, 1);
  CHECK(limiter.TryAcquire(*slot).limited_by == LimitKind::kTokens);
}

TEST_CASE("RateLimiter refuses at max_concurrency and admits again after a Release",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.max_concurrency = 2});
  REQUIRE(limiter.TryAcquire(*slot).admitted);
  REQUIRE(limiter.TryAcquire(*slot).admitted);
  const Admission a = limiter.TryAcquire(*slot);
  CHECK_FALSE(a.admitted);
  CHECK(a.limited_by == LimitKind::kConcurrency);
  CHECK(a.available_at == clock.Now());
  limiter.Release(*slot);
  CHECK(limiter.TryAcquire(*slot).admitted);
  CHECK(limiter.State(*slot).in_flight == 2);
}

TEST_CASE("RateLimiter never counts in-flight requests below zero", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.max_concurrency = 1});
  limiter.Release(*slot);
  limiter.Refund(*slot);
  CHECK(limiter.State(*slot).in_flight == 0);
  CHECK(limiter.TryAcquire(*slot).admitted);
  CHECK_FALSE(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("RateLimiter Refund gives back the request token and the concurrency slot",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 1, .max_concurrency = 1});
  REQUIRE(limiter.TryAcquire(*slot).admitted);
  REQUIRE(limiter.TryAcquire(*slot).limited_by == LimitKind::kRequests);
  limiter.Refund(*slot);
  const LimiterState state = limiter.State(*slot);
  CHECK(state.in_flight == 0);
  CHECK(state.request_tokens == 1.0);
  CHECK(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("RateLimiter Refund never fills the bucket beyond capacity", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 3});
  REQUIRE(limiter.TryAcquire(*slot).admitted);
  clock.Advance(minutes(1));
  limiter.Refund(*slot);
  CHECK(limiter.State(*slot).request_tokens == 3.0);
  CHECK(Drain(limiter, *slot) == 3);
}

TEST_CASE("RateLimiter Check takes nothing", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 1, .max_concurrency = 1});
  for (int i = 0; i < 3; ++i) REQUIRE(limiter.Check(*slot).admitted);
  CHECK(limiter.State(*slot).in_flight == 0);
  REQUIRE(limiter.TryAcquire(*slot).admitted);
  const Admission checked = limiter.Check(*slot);
  const Admission tried = limiter.TryAcquire(*slot);
  CHECK_FALSE(checked.admitted);
  CHECK(checked.limited_by == tried.limited_by);
  CHECK(checked.available_at == tried.available_at);
}

TEST_CASE("RateLimiter caps the level at a lowered capacity", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 100});
  for (int i = 0; i < 10; ++i) REQUIRE(limiter.TryAcquire(*slot).admitted);
  auto same = limiter.Attach("b", RateLimits{.rpm = 50});
  CHECK(same == slot);
  CHECK(limiter.State(*slot).limits.rpm == 50);
  CHECK(limiter.State(*slot).request_tokens == 50.0);
  CHECK(Drain(limiter, *slot) == 50);
}

TEST_CASE("RateLimiter keeps the level when the capacity is raised", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 50});
  for (int i = 0; i < 10; ++i) REQUIRE(limiter.TryAcquire(*slot).admitted);
  limiter.Attach("b", RateLimits{.rpm = 200});
  CHECK(limiter.State(*slot).request_tokens == 40.0);
  CHECK(Drain(limiter, *slot) == 40);
}

TEST_CASE("RateLimiter starts full when a limit replaces unlimited", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  for (int i = 0; i < 10; ++i) REQUIRE(limiter.TryAcquire(*slot).admitted);
  limiter.ChargeTokens(*slot, 1'000'000);  // not tracked while unlimited
  limiter.Attach("b", RateLimits{.rpm = 5, .tpm = 100});
  const LimiterState state = limiter.State(*slot);
  CHECK(state.request_tokens == 5.0);
  CHECK(state.token_tokens == 100.0);
  CHECK(Drain(limiter, *slot) == 5);
}

TEST_CASE("RateLimiter keeps tpm debt when the limits change", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.tpm = 600});
  limiter.ChargeTokens(*slot, 1000);
  limiter.Attach("b", RateLimits{.tpm = 300});
  CHECK(limiter.State(*slot).token_tokens == -400.0);
}

TEST_CASE("RateLimiter starts full again after Detach and Attach", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto old_slot = limiter.Attach("b", RateLimits{.rpm = 5});
  REQUIRE(Drain(limiter, *old_slot) == 5);
  limiter.Detach("b");
  CHECK(limiter.Find("b") == nullptr);
  // Whoever still holds the old slot can keep using it.
  CHECK(limiter.TryAcquire(*old_slot).limited_by == LimitKind::kRequests);

  auto slot = limiter.Attach("b", RateLimits{.rpm = 5});
  CHECK(slot != old_slot);
  CHECK(limiter.Find("b") == slot);
  CHECK(Drain(limiter, *slot) == 5);
}

TEST_CASE("RateLimiter pauses a backend whose upstream reports no requests left until the reset",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{.rpm = 100});
  const SteadyTime start = clock.Now();
  limiter.ApplyUpstreamQuota(*slot,
                             UpstreamQuota{.remaining_requests = 0, .requests_reset = seconds(2)});
  const Admission a = limiter.TryAcquire(*slot);
  CHECK_FALSE(a.admitted);
  CHECK(a.limited_by == LimitKind::kUpstreamQuota);
  CHECK(a.available_at == start + seconds(2));
  CHECK(limiter.State(*slot).paused_until == start + seconds(2));

  clock.Advance(milliseconds(1999));
  CHECK(limiter.TryAcquire(*slot).limited_by == LimitKind::kUpstreamQuota);
  clock.Advance(milliseconds(1));
  CHECK(limiter.TryAcquire(*slot).admitted);
  CHECK_FALSE(limiter.State(*slot).paused_until.has_value());
  CHECK(limiter.State(*slot).request_tokens == 99.0);  // refusals took nothing
}

TEST_CASE("RateLimiter pauses a backend whose upstream reports no tokens left until the reset",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  limiter.ApplyUpstreamQuota(*slot, UpstreamQuota{.remaining_requests = 50,
                                                  .remaining_tokens = 0,
                                                  .tokens_reset = milliseconds(1500)});
  CHECK(limiter.TryAcquire(*slot).available_at == clock.Now() + milliseconds(1500));
  clock.Advance(milliseconds(1500));
  CHECK(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("RateLimiter never shortens an upstream pause", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  const SteadyTime start = clock.Now();
  limiter.ApplyUpstreamQuota(*slot,
                             UpstreamQuota{.remaining_requests = 0, .requests_reset = seconds(5)});
  limiter.ApplyUpstreamQuota(*slot,
                             UpstreamQuota{.remaining_requests = 0, .requests_reset = seconds(1)});
  limiter.ApplyUpstreamQuota(*slot,
                             UpstreamQuota{.remaining_requests = 40, .requests_reset = seconds(1)});
  CHECK(limiter.State(*slot).paused_until == start + seconds(5));
  clock.Advance(seconds(4));
  CHECK(limiter.TryAcquire(*slot).available_at == start + seconds(5));
}

TEST_CASE("RateLimiter ignores an upstream report without a reset", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  limiter.ApplyUpstreamQuota(*slot, UpstreamQuota{.remaining_requests = 0, .remaining_tokens = 0});
  limiter.ApplyUpstreamQuota(*slot, UpstreamQuota{});
  CHECK(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("RateLimiter spreads the few requests an upstream has left over its reset window",
          "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  const SteadyTime start = clock.Now();
  // 3 left for 4 s: one per 4 s / (3 + 1) = 1 s, the last one before the reset.
  limiter.ApplyUpstreamQuota(*slot,
                             UpstreamQuota{.remaining_requests = 3, .requests_reset = seconds(4)});
  const Admission first = limiter.TryAcquire(*slot);
  CHECK_FALSE(first.admitted);
  CHECK(first.limited_by == LimitKind::kUpstreamQuota);
  CHECK(first.available_at == start + seconds(1));
  CHECK_FALSE(limiter.State(*slot).paused_until.has_value());  // pacing, not a pause

  for (int i = 1; i <= 3; ++i) {
    clock.Advance(seconds(1));
    CHECK(limiter.TryAcquire(*slot).admitted);
    CHECK(limiter.TryAcquire(*slot).available_at == start + seconds(i + 1));
  }
  clock.Advance(seconds(1));  // the upstream's window has reset: no more pacing
  CHECK(limiter.TryAcquire(*slot).admitted);
  CHECK(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("RateLimiter stops pacing once the upstream reports plenty left", "[rate_limiter]") {
  ManualClock clock;
  RateLimiter limiter(clock);
  auto slot = limiter.Attach("b", RateLimits{});
  limiter.ApplyUpstreamQuota(*slot,
                             UpstreamQuota{.remaining_requests = 1, .requests_reset = seconds(60)});
  REQUIRE_FALSE(limiter.TryAcquire(*slot).admitted);
  limiter.ApplyUpstreamQuota(
      *slot, UpstreamQuota{.remaining_requests = 10, .requests_reset = seconds(60)});
  CHECK(limiter.TryAcquire(*slot).admitted);
  CHECK(limiter.TryAcquire(*slot).admitted);
}

TEST_CASE("ParseUpstreamQuota reads OpenAI's headers", "[rate_limiter]") {
  const Headers headers = {
      {"content-type", "application/json"},       {"x-ratelimit-limit-requests", "60"},
      {"x-ratelimit-remaining-requests", "59"},   {"x-ratelimit-reset-requests", "1s"},
      {"x-ratelimit-remaining-tokens", "149000"}, {"x-ratelimit-reset-tokens", "6m0s"},
  };
  const UpstreamQuota q = ParseUpstreamQuota(headers, ManualClock().WallNow());
  CHECK(q.remaining_requests == 59);
  CHECK(q.requests_reset == seconds(1));
  CHECK(q.remaining_tokens == 149000);
  CHECK(q.tokens_reset == seconds(360));
}

TEST_CASE("ParseUpstreamQuota matches header names case-insensitively", "[rate_limiter]") {
  const Headers headers = {
      {"X-RateLimit-Remaining-Requests", "7"},
      {"X-RATELIMIT-RESET-REQUESTS", "20ms"},
      {"Anthropic-RateLimit-Tokens-Remaining", "12"},
  };
  const UpstreamQuota q = ParseUpstreamQuota(headers, ManualClock().WallNow());
  CHECK(q.remaining_requests == 7);
  CHECK(q.requests_reset == milliseconds(20));
  CHECK(q.remaining_tokens == 12);
}

TEST_CASE("ParseUpstreamQuota reads Go durations fully", "[rate_limiter]") {
  CHECK(GoDuration("6m0s") == seconds(360));
  CHECK(GoDuration("20ms") == milliseconds(20));
  CHECK(GoDuration("1h2m3.5s") == milliseconds(3723500));
  CHECK(GoDuration("0.5s") == milliseconds(500));
  CHECK(GoDuration(".25s") == milliseconds(250));
  CHECK(GoDuration("1.5h") == minutes(90));
  CHECK(GoDuration("17.281s") == milliseconds(17281));
  CHECK(GoDuration("100us") == microseconds(100));
  CHECK(GoDuration("100\xC2\xB5s") == microseconds(100));
  CHECK(GoDuration("3ns") == Duration(3));
  CHECK(GoDuration("0") == Duration::zero());
  CHECK(GoDuration("0s") == Duration::zero());
  CHECK(GoDuration(" 2s ") == seconds(2));
}

TEST_CASE("ParseUpstreamQuota ignores invalid Go durations", "[rate_limiter]") {
  for (const char* text :
       {"", "1", "s", ".s", "1x", "1s2", "-1s", "1.2.3s", "abc", "1 s", "10000000000000h", "P1S"}) {
    INFO(text);
    CHECK_FALSE(GoDuration(text).has_value());
  }
}

TEST_CASE("ParseUpstreamQuota ignores non-numeric and negative counts", "[rate_limiter]") {
  for (const char* text : {"", "abc", "-5", "1.5", "12abc", "+3", "99999999999999999999"}) {
    INFO(text);
    const UpstreamQuota q = ParseUpstreamQuota(
        {{"x-ratelimit-remaining-requests", text}, {"anthropic-ratelimit-tokens-remaining", text}},
        ManualClock().WallNow());
    CHECK_FALSE(q.remaining_requests.has_value());
    CHECK_FALSE(q.remaining_tokens.has_value());
  }
}

TEST_CASE("ParseUpstreamQuota reads Anthropic's headers", "[rate_limiter]") {
  ManualClock clock;  // 2026-01-01T00:00:00Z
  const Headers headers = {
      {"anthropic-ratelimit-requests-limit", "50"},
      {"anthropic-ratelimit-requests-remaining", "49"},
      {"anthropic-ratelimit-requests-reset", "2026-01-01T00:00:30Z"},
      {"anthropic-ratelimit-tokens-remaining", "39000"},
      {"anthropic-ratelimit-tokens-reset", "2026-01-01T00:01:00.500Z"},
      {"anthropic-ratelimit-input-tokens-remaining", "1"},
  };
  const UpstreamQuota q = ParseUpstreamQuota(headers, clock.WallNow());
  CHECK(q.remaining_requests == 49);
  CHECK(q.requests_reset == seconds(30));
  CHECK(q.remaining_tokens == 39000);
  CHECK(q.tokens_reset == milliseconds(60500));
}

TEST_CASE("ParseUpstreamQuota takes the scarcer of Anthropic's input and output tokens",
          "[rate_limiter]") {
  ManualClock clock;
  const Headers headers = {
      {"anthropic-ratelimit-input-tokens-remaining", "5000"},
      {"anthropic-ratelimit-input-tokens-reset", "2026-01-01T00:00:10Z"},
      {"anthropic-ratelimit-output-tokens-remaining", "800"},
      {"anthropic-ratelimit-output-tokens-reset", "2026-01-01T00:00:20+00:00"},
  };
  const UpstreamQuota q = ParseUpstreamQuota(headers, clock.WallNow());
  CHECK(q.remaining_tokens == 800);
  CHECK(q.tokens_reset == seconds(20));
  CHECK_FALSE(q.remaining_requests.has_value());
}

TEST_CASE("ParseUpstreamQuota clamps an Anthropic reset in the past to zero", "[rate_limiter]") {
  ManualClock clock;
  const UpstreamQuota q = ParseUpstreamQuota(
      {{"anthropic-ratelimit-requests-reset", "2025-12-31T23:59:00Z"}}, clock.WallNow());
  CHECK(q.requests_reset == Duration::zero());
}

TEST_CASE("ParseUpstreamQuota ignores an invalid Anthropic reset", "[rate_limiter]") {
  ManualClock clock;
  const UpstreamQuota q =
      ParseUpstreamQuota({{"anthropic-ratelimit-requests-remaining", "3"},
                          {"anthropic-ratelimit-requests-reset", "in 30 seconds"}},
                         clock.WallNow());
  CHECK(q.remaining_requests == 3);
  CHECK_FALSE(q.requests_reset.has_value());
}

TEST_CASE("ParseUpstreamQuota leaves every field absent without rate-limit headers",
          "[rate_limiter]") {
  const UpstreamQuota q =
      ParseUpstreamQuota({{"content-type", "application/json"}}, ManualClock().WallNow());
  CHECK_FALSE(q.remaining_requests.has_value());
  CHECK_FALSE(q.requests_reset.has_value());
  CHECK_FALSE(q.remaining_tokens.has_value());
  CHECK_FALSE(q.tokens_reset.has_value());
}

// The stress runs: kThreads workers hammer TryAcquire (+ Release) on the
// slots while one more thread advances the clock. Each clock step refills
// exactly one token per slot, and the steps are spread over the workers' run.
#if defined(__SANITIZE_THREAD__)
constexpr int64_t kAttemptsPerThread = 50'000;
#else
constexpr int64_t kAttemptsPerThread = 100'000;
#endif
constexpr int kThreads = 8;
constexpr int64_t kStressRpm = 600;                  // 10 tokens per second
constexpr Duration kStressStep = milliseconds(100);  // one token per step
constexpr int64_t kMaxStressSteps = 500;             // < rpm: the bucket never fills up
constexpr int64_t kStressConcurrency = 3;

struct StressResult {
  std::vector<int64_t> grants;  // per slot, including the initial and final drains
  int64_t steps = 0;            // clock steps taken, from the clock
  int64_t max_in_flight = 0;    // the most any slot had in flight, as the workers saw it
};

StressResult RunStress(int slot_count) {
  ManualClock clock;
  RateLimiter limiter(clock);
  const RateLimits limits{.rpm = kStressRpm, .max_concurrency = kStressConcurrency};
  std::vector<std::shared_ptr<RateLimiter::Slot>> slots;
  StressResult result;
  for (int i = 0; i < slot_count; ++i) {
    slots.push_back(limiter.Attach("b" + std::to_string(i), limits));
    // Empty each bucket first, so that no refill is lost to a full bucket: then
    // the grants must equal the refill exactly, not merely stay below it.
    result.grants.push_back(DrainReleasing(limiter, *slots.back()));
  }
  const SteadyTime start = clock.Now();

  std::vector<std::atomic<int64_t>> grants(slot_count);
  std::vector<std::atomic<int64_t>> in_flight(slot_count);
  std::atomic<int64_t> max_in_flight{0};
  std::atomic<int64_t> attempts{0};
  std::atomic<int> workers_left{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t i = 0; i < kAttemptsPerThread; ++i) {
        const size_t s = static_cast<size_t>((i + t) % slot_count);
        if (limiter.TryAcquire(*slots[s]).admitted) {
          grants[s].fetch_add(1, std::memory_order_relaxed);
          const int64_t now_in_flight = in_flight[s].fetch_add(1) + 1;
          int64_t seen = max_in_flight.load();
          while (now_in_flight > seen &&
                 !max_in_flight.compare_exchange_weak(seen, now_in_flight)) {
          }
          in_flight[s].fetch_sub(1);
          limiter.Release(*slots[s]);
        }
        attempts.fetch_add(1, std::memory_order_relaxed);
      }
      workers_left.fetch_sub(1);
    });
  }
  // Paces the clock by the workers' progress, so that refill and admission
  // interleave; steps left when the workers are done (only if this thread was
  // starved) are taken at once, so that the total is always the same.
  std::thread ticker([&] {
    constexpr int64_t kTotalAttempts = kAttemptsPerThread * kThreads;
    for (int64_t step = 1; step <= kMaxStressSteps; ++step) {
      while (workers_left.load() > 0 && attempts.load(std::memory_order_relaxed) <
                                            step * kTotalAttempts / (kMaxStressSteps + 1)) {
        std::this_thread::yield();
      }
      clock.Advance(kStressStep);
    }
  });
  for (std::thread& thread : threads) thread.join();
  ticker.join();

  result.steps = (clock.Now() - start) / kStressStep;
  REQUIRE(clock.Now() - start == kMaxStressSteps * kStressStep);
  result.max_in_flight = max_in_flight.load();
  for (size_t s = 0; s < slots.size(); ++s) {
    CHECK(limiter.State(*slots[s]).in_flight == 0);
    result.grants[s] += grants[s].load() + DrainReleasing(limiter, *slots[s]);
    CHECK(limiter.State(*slots[s]).request_tokens < 1.0);
  }
  return result;
}

// Every slot received rpm (its initial fill) + rpm/60 per second of clock time.
// None was ever full after the initial drain, so no refill was lost: the
// grants (workers + final drain) must match it exactly. More would be
// over-admission; fewer would mean tokens lost to a race.
void CheckExactAccounting(const StressResult& result) {
  const int64_t refilled = kStressRpm * result.steps * kStressStep / minutes(1);
  INFO("clock steps taken: " << result.steps);
  for (const int64_t grants : result.grants) {
    CHECK(grants <= kStressRpm + refilled);
    CHECK(grants >= kStressRpm + refilled);
  }
  CHECK(result.max_in_flight <= kStressConcurrency);
}

TEST_CASE("RateLimiter accounts exactly under contention on one slot", "[rate_limiter]") {
  CheckExactAccounting(RunStress(/*slot_count=*/1));
}

TEST_CASE("RateLimiter accounts exactly under contention spread over many slots",
          "[rate_limiter]") {
  CheckExactAccounting(RunStress(/*slot_count=*/50));
}

}  // namespace
}  // namespace switchboard
