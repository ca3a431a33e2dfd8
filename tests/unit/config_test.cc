// Gateway settings: validation, strategy names, pool order and pool statistics.
#include "switchboard/config.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "support/makers.h"

namespace switchboard {
namespace {

using std::chrono::seconds;
using testing::MakeBackend;
using testing::TestEpoch;

std::vector<std::string> ErrorParams(const Config& c) {
  std::vector<std::string> params;
  for (const FieldError& e : ValidateConfig(c)) params.push_back(e.param);
  return params;
}

using Params = std::vector<std::string>;

// --- ValidateConfig ------------------------------------------------------------------

TEST_CASE("ValidateConfig accepts the contract's defaults", "[config]") {
  const Config c;
  CHECK(c.pool_order == std::vector<std::string>{"primary", "fallback"});
  CHECK(c.strategy == Strategy::kRoundRobin);
  CHECK(c.max_attempts == 3);
  CHECK(c.cooldown_base_seconds == 5);
  CHECK(c.cooldown_max_seconds == 300);
  CHECK(c.error_threshold == 3);
  CHECK(c.body_limit_bytes == 10 * 1024 * 1024);
  CHECK(c.usage_retention_days == 30);
  CHECK(ValidateConfig(c).empty());
}

TEST_CASE("ValidateConfig accepts max_attempts from 1 to 20 only", "[config]") {
  Config c;
  c.max_attempts = 0;
  CHECK(ErrorParams(c) == Params{"max_attempts"});
  c.max_attempts = 1;
  CHECK(ErrorParams(c).empty());
  c.max_attempts = 20;
  CHECK(ErrorParams(c).empty());
  c.max_attempts = 21;
  CHECK(ErrorParams(c) == Params{"max_attempts"});
}

TEST_CASE("ValidateConfig accepts cooldown_base_seconds from 1 to 86400 only", "[config]") {
  Config c;
  c.cooldown_base_seconds = 0;
  CHECK(ErrorParams(c) == Params{"cooldown_base_seconds"});
  c.cooldown_base_seconds = 1;
  CHECK(ErrorParams(c).empty());
  c.cooldown_base_seconds = 86401;
  c.cooldown_max_seconds = 86400;
  CHECK(ErrorParams(c) == Params{"cooldown_base_seconds"});
}

TEST_CASE("ValidateConfig refuses a cooldown max below the base", "[config]") {
  Config c;
  c.cooldown_base_seconds = 60;
  c.cooldown_max_seconds = 59;
  const auto errors = ValidateConfig(c);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == FieldError{"cooldown_max_seconds", "must be >= cooldown_base_seconds"});
  c.cooldown_max_seconds = 60;
  CHECK(ValidateConfig(c).empty());
}

TEST_CASE("ValidateConfig refuses a cooldown max outside 1..86400", "[config]") {
  Config c;
  c.cooldown_max_seconds = 86401;
  CHECK(ErrorParams(c) == Params{"cooldown_max_seconds"});
  c.cooldown_max_seconds = 0;
  c.cooldown_base_seconds = 1;
  CHECK(ErrorParams(c) == Params{"cooldown_max_seconds"});
}

TEST_CASE("ValidateConfig accepts error_threshold from 1 to 100 only", "[config]") {
  Config c;
  c.error_threshold = 0;
  CHECK(ErrorParams(c) == Params{"error_threshold"});
  c.error_threshold = 100;
  CHECK(ErrorParams(c).empty());
  c.error_threshold = 101;
  CHECK(ErrorParams(c) == Params{"error_threshold"});
}

TEST_CASE("ValidateConfig accepts body limits from 1 KiB to 1 GiB only", "[config]") {
  Config c;
  c.body_limit_bytes = 1023;
  CHECK(ErrorParams(c) == Params{"body_limit_bytes"});
  c.body_limit_bytes = 1024;
  CHECK(ErrorParams(c).empty());
  c.body_limit_bytes = int64_t{1} << 30;
  CHECK(ErrorParams(c).empty());
  c.body_limit_bytes = (int64_t{1} << 30) + 1;
  CHECK(ErrorParams(c) == Params{"body_limit_bytes"});
}

TEST_CASE("ValidateConfig accepts usage retention from 0 to 3650 days only", "[config]") {
  Config c;
  c.usage_retention_days = -1;
  CHECK(ErrorParams(c) == Params{"usage_retention_days"});
  c.usage_retention_days = 0;
  CHECK(ErrorParams(c).empty());
  c.usage_retention_days = 3650;
  CHECK(ErrorParams(c).empty());
  c.usage_retention_days = 3651;
  CHECK(ErrorParams(c) == Params{"usage_retention_days"});
}

TEST_CASE("ValidateConfig refuses a pool_order entry outside the name pattern", "[config]") {
  Config c;
  c.pool_order = {"primary", "bad pool"};
  CHECK(ErrorParams(c) == Params{"pool_order"});
  c.pool_order = {""};
  CHECK(ErrorParams(c) == Params{"pool_order"});
}

TEST_CASE("ValidateConfig refuses a pool listed twice", "[config]") {
  Config c;
  c.pool_order = {"primary", "fallback", "primary"};
  const auto errors = ValidateConfig(c);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == FieldError{"pool_order", "lists pool 'primary' twice"});
}

TEST_CASE("ValidateConfig refuses more than 100 pools", "[config]") {
  Config c;
  c.pool_order.clear();
  for (int i = 0; i < 100; ++i) c.pool_order.push_back("p" + std::to_string(i));
  CHECK(ErrorParams(c).empty());
  c.pool_order.push_back("p100");
  CHECK(ErrorParams(c) == Params{"pool_order"});
}

TEST_CASE("ValidateConfig accepts an empty pool_order", "[config]") {
  Config c;
  c.pool_order.clear();
  CHECK(ValidateConfig(c).empty());
}

TEST_CASE("ValidateConfig reports every invalid field at once", "[config]") {
  Config c;
  c.max_attempts = 0;
  c.error_threshold = 0;
  c.usage_retention_days = -5;
  CHECK(ErrorParams(c) == Params{"max_attempts", "error_threshold", "usage_retention_days"});
}

// --- Strategies -----------------------------------------------------------------------

TEST_CASE("ParseStrategy reads every strategy name", "[config]") {
  CHECK(ParseStrategy("round-robin") == Strategy::kRoundRobin);
  CHECK(ParseStrategy("weighted") == Strategy::kWeighted);
  CHECK(ParseStrategy("least-busy") == Strategy::kLeastBusy);
  CHECK(ParseStrategy("lowest-latency") == Strategy::kLowestLatency);
}

TEST_CASE("ParseStrategy accepts underscores for dashes", "[config]") {
  CHECK(ParseStrategy("round_robin") == Strategy::kRoundRobin);
  CHECK(ParseStrategy("lowest_latency") == Strategy::kLowestLatency);
}

TEST_CASE("ParseStrategy refuses unknown names", "[config]") {
  for (const char* name : {"random", "", "Round-Robin", "roundrobin", "least-busy "}) {
    INFO(name);
    CHECK_FALSE(ParseStrategy(name).has_value());
  }
}

TEST_CASE("StrategyName parses back to the same strategy", "[config]") {
  for (Strategy s : {Strategy::kRoundRobin, Strategy::kWeighted, Strategy::kLeastBusy,
                     Strategy::kLowestLatency}) {
    CHECK(ParseStrategy(StrategyName(s)) == s);
  }
  CHECK(StrategyName(Strategy::kLeastBusy) == "least-busy");
}

// --- PoolPriority ------------------------------------------------------------------

TEST_CASE("PoolPriority is a listed pool's index in pool_order", "[config]") {
  Config c;
  c.pool_order = {"gold", "silver", "bronze"};
  CHECK(c.PoolPriority("gold") == 0);
  CHECK(c.PoolPriority("silver") == 1);
  CHECK(c.PoolPriority("bronze") == 2);
}

TEST_CASE("PoolPriority puts unlisted pools after every listed one", "[config]") {
  Config c;
  c.pool_order = {"gold", "silver"};
  CHECK(c.PoolPriority("aaa") == 2);
  CHECK(c.PoolPriority("zzz") == 2);
  c.pool_order.clear();
  CHECK(c.PoolPriority("gold") == 0);
}

// --- ComputePoolStats --------------------------------------------------------------

TEST_CASE("ComputePoolStats counts each backend's state in its pool", "[config]") {
  const SystemTime now = TestEpoch();
  Backend healthy = MakeBackend("healthy");
  Backend cooling = MakeBackend("cooling");
  cooling.status = BackendStatus::kCooling;
  cooling.cooldown_until = now + seconds(30);
  Backend expired = MakeBackend("expired");
  expired.status = BackendStatus::kCooling;
  expired.cooldown_until = now;  // ends now: usable again
  Backend error = MakeBackend("error");
  error.status = BackendStatus::kError;
  error.cooldown_until = now + seconds(30);
  Backend off = MakeBackend("off");
  off.enabled = false;
  Backend disabled_status = MakeBackend("disabled-status");
  disabled_status.status = BackendStatus::kDisabled;

  const auto stats = ComputePoolStats({healthy, cooling, expired, error, off, disabled_status},
                                      Config{}, now);
  REQUIRE(stats.size() == 2);
  CHECK(stats[0] == PoolStats{"primary", 0, /*total=*/6, /*enabled=*/4, /*healthy=*/2,
                              /*cooling=*/1, /*error=*/1});
  CHECK(stats[1] == PoolStats{"fallback", 1, 0, 0, 0, 0, 0});
}

TEST_CASE("ComputePoolStats orders listed pools first, then the rest by name", "[config]") {
  Config c;
  c.pool_order = {"zeta", "alpha"};
  const auto stats = ComputePoolStats(
      {MakeBackend("a", "omega"), MakeBackend("b", "alpha"), MakeBackend("c", "beta"),
       MakeBackend("d", "zeta")},
      c, TestEpoch());
  REQUIRE(stats.size() == 4);
  CHECK(stats[0].pool == "zeta");
  CHECK(stats[1].pool == "alpha");
  CHECK(stats[2].pool == "beta");
  CHECK(stats[3].pool == "omega");
  for (size_t i = 0; i < stats.size(); ++i) {
    CHECK(stats[i].priority == static_cast<int>(i));
    CHECK(stats[i].total == 1);
  }
}

TEST_CASE("ComputePoolStats lists configured pools that have no backends", "[config]") {
  Config c;
  c.pool_order = {"primary", "fallback", "reserve"};
  const auto stats = ComputePoolStats({}, c, TestEpoch());
  REQUIRE(stats.size() == 3);
  CHECK(stats[2] == PoolStats{"reserve", 2, 0, 0, 0, 0, 0});
}

TEST_CASE("ComputePoolStats counts a backend as cooling only until its cooldown ends",
          "[config]") {
  Backend b = MakeBackend("b");
  b.status = BackendStatus::kCooling;
  b.cooldown_until = TestEpoch() + seconds(10);
  Config c;
  c.pool_order = {"primary"};
  CHECK(ComputePoolStats({b}, c, TestEpoch() + seconds(9))[0].cooling == 1);
  const auto later = ComputePoolStats({b}, c, TestEpoch() + seconds(10));
  CHECK(later[0].cooling == 0);
  CHECK(later[0].healthy == 1);
}

}  // namespace
}  // namespace switchboard
