// RedisSharedState against a real server (the ctest fixture redis_server):
// the SharedState conformance suite, each maker on a key prefix of its own,
// then what only Redis has: URLs and passwords, failing fast while Redis is
// down and recovering after, the instance count, the script cache, keys.
#include "switchboard/redis_shared_state.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "switchboard/clock.h"
#include "switchboard/shared_state.h"

namespace {

// The test server's URL: $SWITCHBOARD_TEST_REDIS_URL, else the first line of
// the file $SWITCHBOARD_TEST_REDIS_URL_FILE (written by the fixture). The
// test fails (never skips) without one.
std::string RequireTestRedisUrl() {
  std::string url;
  if (const char* env = std::getenv("SWITCHBOARD_TEST_REDIS_URL"); env != nullptr && *env) {
    url = env;
  } else if (const char* file = std::getenv("SWITCHBOARD_TEST_REDIS_URL_FILE"); file != nullptr) {
    std::ifstream in(file);
    std::getline(in, url);
  }
  INFO(
      "no Redis test server: run through ctest (fixture redis_server) or set "
      "SWITCHBOARD_TEST_REDIS_URL");
  REQUIRE_FALSE(url.empty());
  return url;
}

// A key prefix no other test (or test process) uses.
std::string FreshPrefix() {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}();
  return "sbtest:" + std::to_string(::getpid()) + ":" + std::to_string(salt % 100000) + ":" +
         std::to_string(counter++) + ":";
}

std::unique_ptr<switchboard::SharedState> OpenOrFail(switchboard::RedisSharedStateOptions options) {
  auto state = switchboard::OpenRedisSharedState(std::move(options));
  INFO(state.status().ToString());
  REQUIRE(state.ok());
  return std::move(*state);
}

struct RedisMaker {
  std::unique_ptr<switchboard::SharedState> Connect() {
    return OpenOrFail({.url = url, .key_prefix = prefix});
  }
  // Pub/sub gives no delivery receipts: wait long enough for a local server.
  void WaitForDelivery() { std::this_thread::sleep_for(std::chrono::milliseconds(200)); }

  std::string url = RequireTestRedisUrl();
  std::string prefix = FreshPrefix();
};

}  // namespace

#define SWITCHBOARD_SHARED_STATE_MAKERS std::tuple<RedisMaker>
#include "support/shared_state_conformance.h"

namespace switchboard::testing::shared_state_conformance {
namespace {

using std::chrono::milliseconds;

Duration Since(SteadyTime start) { return Clock::Real().Now() - start; }

// Polls `done` every 10 ms for up to `timeout`.
bool Eventually(const std::function<bool()>& done, milliseconds timeout = seconds(10)) {
  const SteadyTime deadline = Clock::Real().Now() + timeout;
  while (!done()) {
    if (Clock::Real().Now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

// A plain hiredis connection, for what the SharedState interface does not
// show. Not thread-safe; one owner.
class RawRedis {
 public:
  explicit RawRedis(const std::string& url) {
    // redis://[:password@]127.0.0.1:PORT/0, as the fixture writes it.
    const size_t at = url.find('@');
    const size_t host = at == std::string::npos ? url.find("://") + 3 : at + 1;
    if (at != std::string::npos)
      password_ = url.substr(url.find(':', 8) + 1, at - url.find(':', 8) - 1);
    const size_t colon = url.find(':', host);
    const int port = std::stoi(url.substr(colon + 1, url.find('/', colon) - colon - 1));
    ctx_ = redisConnect(url.substr(host, colon - host).c_str(), port);
    REQUIRE(ctx_ != nullptr);
    REQUIRE(ctx_->err == 0);
    if (!password_.empty()) REQUIRE(Text({"AUTH", password_}) == "OK");
  }
  ~RawRedis() { redisFree(ctx_); }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;

  // The reply: its text, or its integer as text; array elements joined by
  // "\n".
  std::string Text(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lengths;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(args.size()), argv.data(), lengths.data()));
    REQUIRE(reply != nullptr);
    std::string out = Flatten(*reply);
    freeReplyObject(reply);
    return out;
  }

  const std::string& password() const { return password_; }

 private:
  static std::string Flatten(const redisReply& r) {
    switch (r.type) {
      case REDIS_REPLY_INTEGER:
        return std::to_string(r.integer);
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r.elements; ++i) {
          if (i > 0) out += "\n";
          out += Flatten(*r.element[i]);
        }
        return out;
      }
      case REDIS_REPLY_NIL:
        return "(nil)";
      default:
        return std::string(r.str, r.len);
    }
  }

  redisContext* ctx_ = nullptr;
  std::string password_;
};

// A server of the test's own (stopping the shared one would disturb the
// tests running beside this one), driven by redis_fixture.sh.
class PrivateServer {
 public:
  explicit PrivateServer(const std::string& password = "") {
    std::string templ = "/tmp/switchboard-redis-state-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    state_ = templ;
    REQUIRE(Run("start", password));
    std::ifstream in(state_ + "/url");
    REQUIRE(std::getline(in, url_));
  }
  ~PrivateServer() {
    (void)Run("stop");
    std::error_code ec;
    std::filesystem::remove_all(state_, ec);
  }
  PrivateServer(const PrivateServer&) = delete;
  PrivateServer& operator=(const PrivateServer&) = delete;

  const std::string& url() const { return url_; }
  // "halt" stops the server (by its pid); "resume" starts it again on the
  // same port.
  bool Run(const std::string& action, const std::string& password = "") {
    const std::string command = std::string("'") + SWITCHBOARD_REDIS_FIXTURE + "' " + action +
                                " '" + state_ + "' " + password + " >/dev/null";
    return std::system(command.c_str()) == 0;
  }

 private:
  std::string state_;
  std::string url_;
};

// Options for tests that take Redis away: quick reconnection.
RedisSharedStateOptions QuickOptions(const std::string& url) {
  return {.url = url,
          .key_prefix = FreshPrefix(),
          .command_timeout = milliseconds(250),
          .heartbeat_interval = milliseconds(100)};
}

TEST_CASE("RedisSharedState: a bad URL is InvalidArgument and never shows the password",
          "[redis]") {
  const std::string password = "sekrit-pw-42";
  for (const std::string& url : {
           "redis://:" + password + "@127.0.0.1:notaport/0",
           "http://:" + password + "@127.0.0.1:6379/0",
           "redis://:" + password + "@:6379/0",
           "redis://:" + password + "@127.0.0.1:6379/zero",
           "redis://:" + password + "@127.0.0.1:70000/0",
           "rediss://:" + password + "@127.0.0.1:6379/0",
           "redis://:" + password + "%zz@127.0.0.1:6379/0",
           "redis://" + password + "@127.0.0.1:6379/0",
           "redis://:" + password + "@127.0.0.1:6379/0?timeout=1",
           "redis://:" + password + "@[::1:6379/0",
       }) {
    INFO(url);
    auto state = OpenRedisSharedState({.url = url});
    REQUIRE_FALSE(state.ok());
    CHECK(state.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(state.status().ToString(), !Catch::Contains(password));
  }
  auto no_prefix = OpenRedisSharedState({.url = "redis://127.0.0.1:6379/0", .key_prefix = ""});
  CHECK(no_prefix.status().code() == StatusCode::kInvalidArgument);
  CHECK(RedactRedisUrl("redis://user:" + password + "@h:1/0") == "redis://user:***@h:1/0");
  CHECK(RedactRedisUrl("redis://:" + password + "@h:1/0") == "redis://:***@h:1/0");
  CHECK(RedactRedisUrl("redis://h:1/0") == "redis://h:1/0");
  CHECK(RedisSupported());
}

TEST_CASE("RedisSharedState: with nothing listening, Open succeeds and every call fails fast",
          "[redis]") {
  std::unique_ptr<PrivateServer> server = std::make_unique<PrivateServer>();
  const std::string url = server->url();
  server.reset();  // a port that was Redis's and now refuses connections
  RecordingListener listener;
  const SteadyTime opened = Clock::Real().Now();
  auto state = OpenOrFail(QuickOptions(url));
  CHECK(Since(opened) < seconds(1));
  state->SetListener(&listener);
  CHECK_FALSE(state->connected());
  CHECK(state->instances() == 1);
  for (int i = 0; i < 20; ++i) {
    const SteadyTime start = Clock::Real().Now();
    auto got = state->TryAcquire("bkd_x", RateLimits{.rpm = 10}, Epoch(), seconds(60));
    CHECK(got.status().code() == StatusCode::kUnavailable);
    CHECK(Since(start) < milliseconds(50));  // no connection attempt on the caller's thread
  }
  CHECK(state->AnnounceChange().code() == StatusCode::kUnavailable);
  const SteadyTime destroyed = Clock::Real().Now();
  state.reset();
  CHECK(Since(destroyed) < seconds(1));
  CHECK(listener.connectivity().empty());  // never up: no transition
}

TEST_CASE(
    "RedisSharedState: while Redis is down calls fail fast, and all works again after it "
    "restarts",
    "[redis]") {
  const std::string password = "pw-" + std::to_string(std::random_device{}());
  PrivateServer server(password);
  RecordingListener la, lb;
  const RedisSharedStateOptions options = QuickOptions(server.url());
  auto a = OpenOrFail(options);
  auto b = OpenOrFail(options);
  a->SetListener(&la);
  b->SetListener(&lb);
  REQUIRE(a->connected());
  REQUIRE(b->connected());
  CHECK(a->instances() == 2);
  const std::string id = UniqueId("outage");
  const RateLimits limits{.rpm = 5, .max_concurrency = 10};
  const SharedAdmission held = Acquire(*a, id, limits, Epoch());
  REQUIRE(held.admitted);

  REQUIRE(server.Run("halt"));
  // Every call answers kUnavailable at once (at worst after one command
  // timeout, for the call that finds the connection dead).
  const auto timed = [&](const std::function<Status()>& call) {
    const SteadyTime start = Clock::Real().Now();
    const Status status = call();
    CHECK(Since(start) < options.command_timeout + milliseconds(100));
    CHECK(status.code() == StatusCode::kUnavailable);
    CHECK_THAT(status.message(), !Catch::Contains(password));
  };
  for (int i = 0; i < 3; ++i) {
    timed([&] { return a->TryAcquire(id, limits, Epoch(), seconds(60)).status(); });
    timed([&] { return b->Release(id, held.lease); });
    timed([&] { return a->Refund(id, limits, "", Epoch()); });
    timed([&] { return b->ChargeTokens(id, RateLimits{.tpm = 10}, 5, Epoch()); });
    timed([&] { return a->PublishBackendState(BackendState{.backend_id = id}); });
    timed([&] { return b->AnnounceChange(); });
  }
  REQUIRE(Eventually([&] { return !la.connectivity().empty() && !lb.connectivity().empty(); }));
  CHECK_FALSE(a->connected());
  CHECK(a->instances() == 2);  // the last count seen

  REQUIRE(server.Run("resume"));
  REQUIRE(Eventually([&] { return a->connected() && b->connected(); }));
  REQUIRE(
      Eventually([&] { return la.connectivity().size() == 2 && lb.connectivity().size() == 2; }));
  CHECK(la.connectivity() == std::vector<bool>{false, true});
  CHECK(lb.connectivity() == std::vector<bool>{false, true});
  // The server came back empty (nothing persisted): a full bucket again.
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += Acquire(*b, id, limits, Epoch()).admitted ? 1 : 0;
  CHECK(admitted == 5);
  CHECK(Eventually([&] { return a->instances() == 2; }));  // both beat again
  REQUIRE(b->AnnounceChange().ok());
  CHECK(la.WaitForChanges(1));
  BackendState state{.backend_id = id, .status = BackendStatus::kError, .last_error = "boom"};
  REQUIRE(a->PublishBackendState(state).ok());
  REQUIRE(lb.WaitForStates(1));
  CHECK(lb.states()[0] == state);
  // Nothing flapped meanwhile.
  CHECK(la.connectivity().size() == 2);
  CHECK(lb.connectivity().size() == 2);
}

TEST_CASE("RedisSharedState: a command slower than command_timeout fails, and it recovers",
          "[redis]") {
  PrivateServer server;
  RecordingListener listener;
  const RedisSharedStateOptions options = QuickOptions(server.url());
  auto a = OpenOrFail(options);
  a->SetListener(&listener);
  const std::string id = UniqueId("slow");
  REQUIRE(Acquire(*a, id, RateLimits{.rpm = 10}, Epoch()).admitted);
  {
    RawRedis raw(server.url());
    // Redis answers nobody for 1.5 s: alive, but too slow.
    REQUIRE(raw.Text({"CLIENT", "PAUSE", "1500", "ALL"}) == "OK");
  }
  const SteadyTime start = Clock::Real().Now();
  auto got = a->TryAcquire(id, RateLimits{.rpm = 10}, Epoch(), seconds(60));
  CHECK(Since(start) < options.command_timeout + milliseconds(100));
  CHECK(got.status().code() == StatusCode::kUnavailable);
  CHECK_FALSE(a->connected());
  // The next call does not wait at all.
  const SteadyTime again = Clock::Real().Now();
  CHECK(a->AnnounceChange().code() == StatusCode::kUnavailable);
  CHECK(Since(again) < milliseconds(50));
  REQUIRE(Eventually([&] { return a->connected(); }));
  REQUIRE(Eventually([&] { return listener.connectivity().size() == 2; }));
  CHECK(listener.connectivity() == std::vector<bool>{false, true});
  CHECK(Acquire(*a, id, RateLimits{.rpm = 10}, Epoch()).admitted);
}

TEST_CASE("RedisSharedState: a subscription Redis closed is opened again", "[redis]") {
  PrivateServer server;
  RecordingListener la, lb;
  const RedisSharedStateOptions options = QuickOptions(server.url());
  auto a = OpenOrFail(options);
  auto b = OpenOrFail(options);
  a->SetListener(&la);
  b->SetListener(&lb);
  {
    RawRedis raw(server.url());
    CHECK(raw.Text({"CLIENT", "KILL", "TYPE", "pubsub"}) == "2");
  }
  REQUIRE(
      Eventually([&] { return la.connectivity().size() == 2 && lb.connectivity().size() == 2; }));
  CHECK(la.connectivity() == std::vector<bool>{false, true});
  REQUIRE(a->connected());
  REQUIRE(b->AnnounceChange().ok());
  CHECK(la.WaitForChanges(1));
  // Quiet connections stay up: the subscription answers its PINGs.
  std::this_thread::sleep_for(options.heartbeat_interval * 5);
  CHECK(la.connectivity().size() == 2);
  CHECK(a->connected());
}

TEST_CASE("RedisSharedState: a wrong password leaves it disconnected, saying so without a password",
          "[redis]") {
  const std::string password = "right-" + std::to_string(std::random_device{}());
  PrivateServer server(password);
  const std::string wrong = "wrong-" + std::to_string(std::random_device{}());
  std::string url = server.url();
  url.replace(url.find(password), password.size(), wrong);
  auto state = OpenOrFail(QuickOptions(url));
  CHECK_FALSE(state->connected());
  const Status status = state->TryAcquire("bkd_x", RateLimits{}, Epoch(), seconds(1)).status();
  CHECK(status.code() == StatusCode::kUnavailable);
  CHECK_THAT(status.message(), Catch::Contains("refused the login"));
  CHECK_THAT(status.message(), !Catch::Contains(wrong));
  CHECK_THAT(status.message(), !Catch::Contains(password));
  // The right one works.
  auto good = OpenOrFail(QuickOptions(server.url()));
  CHECK(good->connected());
  CHECK(Acquire(*good, UniqueId("auth"), RateLimits{.rpm = 1}, Epoch()).admitted);
}

TEST_CASE("RedisSharedState: instances() counts every endpoint and drops when one goes away",
          "[redis]") {
  RedisMaker maker;
  auto a = maker.Connect();
  auto b = maker.Connect();
  auto c = maker.Connect();
  CHECK(a->instances() == 3);
  CHECK(c->instances() == 3);
  b.reset();
  CHECK(a->instances() == 2);
  CHECK(c->instances() == 2);
  // Another prefix is another deployment.
  RedisMaker other;
  auto d = other.Connect();
  CHECK(d->instances() == 1);
}

TEST_CASE("RedisSharedState: the scripts still run after Redis dropped its script cache",
          "[redis]") {
  RedisMaker maker;
  auto a = maker.Connect();
  RawRedis raw(maker.url);
  const std::string id = UniqueId("flush");
  const RateLimits limits{.rpm = 3, .tpm = 6000, .max_concurrency = 5};
  REQUIRE(Acquire(*a, id, limits, Epoch()).admitted);
  REQUIRE(raw.Text({"SCRIPT", "FLUSH"}) == "OK");
  const SharedAdmission second = Acquire(*a, id, limits, Epoch());  // EVAL, loaded again
  REQUIRE(second.admitted);
  REQUIRE(raw.Text({"SCRIPT", "FLUSH"}) == "OK");
  REQUIRE(a->Refund(id, limits, second.lease, Epoch()).ok());
  REQUIRE(raw.Text({"SCRIPT", "FLUSH"}) == "OK");
  REQUIRE(a->ChargeTokens(id, limits, 7000, Epoch()).ok());
  // The refund gave a request token back; the charge put tokens in debt.
  const SharedAdmission refused = Acquire(*a, id, limits, Epoch());
  CHECK_FALSE(refused.admitted);
  CHECK(refused.limited_by == LimitKind::kTokens);
  CHECK(Acquire(*a, id, limits, Epoch() + seconds(11)).admitted);
}

TEST_CASE("RedisSharedState: every key starts with the prefix and expires by itself", "[redis]") {
  RedisMaker maker;
  auto a = maker.Connect();
  const std::string id = UniqueId("keys");
  REQUIRE(Acquire(*a, id, RateLimits{.rpm = 10, .max_concurrency = 2}, Epoch()).admitted);
  RawRedis raw(maker.url);
  std::string keys = raw.Text({"KEYS", maker.prefix + "*"});
  std::vector<std::string> names;
  for (size_t start = 0; start < keys.size();) {
    const size_t end = std::min(keys.find('\n', start), keys.size());
    names.push_back(keys.substr(start, end - start));
    start = end + 1;
  }
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{maker.prefix + "instances",
                                          maker.prefix + "leases:{" + id + "}",
                                          maker.prefix + "limits:{" + id + "}"});
  for (const std::string& name : names) {
    INFO(name);
    const int64_t ttl = std::stoll(raw.Text({"PTTL", name}));
    CHECK(ttl > 0);
    CHECK(ttl <= int64_t{2} * 3600 * 1000);
  }
}

TEST_CASE("RedisSharedState: concurrent callers on several instances never exceed a limit",
          "[redis]") {
  RedisMaker maker;
  std::vector<std::unique_ptr<SharedState>> instances;
  for (int i = 0; i < 3; ++i) instances.push_back(maker.Connect());
  const std::string rpm_id = UniqueId("race-rpm"), conc_id = UniqueId("race-conc");
  std::atomic<int> admitted{0}, leased{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      SharedState& s = *instances[t % 3];
      for (int i = 0; i < 50; ++i) {
        auto got = s.TryAcquire(rpm_id, RateLimits{.rpm = 100}, Epoch(), seconds(60));
        if (!got.ok()) ++errors;
        if (got.ok() && got->admitted) ++admitted;
        auto lease = s.TryAcquire(conc_id, RateLimits{.max_concurrency = 7}, Epoch(), seconds(60));
        if (!lease.ok()) ++errors;
        if (lease.ok() && lease->admitted) ++leased;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(admitted == 100);
  CHECK(leased == 7);
}

TEST_CASE("RedisSharedState: messages it cannot read are ignored", "[redis]") {
  RedisMaker maker;
  RecordingListener la;
  auto a = maker.Connect();
  auto b = maker.Connect();
  a->SetListener(&la);
  RawRedis raw(maker.url);
  for (const std::string& junk :
       {std::string("not json"), std::string("{\"from\":\"x\",\"kind\":\"state\"}"),
        std::string("{\"from\":\"x\",\"kind\":\"weather\"}"), std::string("[1,2]"),
        std::string("{\"from\":\"x\",\"kind\":\"state\",\"id\":\"b\",\"status\":\"sleepy\","
                    "\"cooldown_until_ms\":null,\"consecutive_429_count\":1,"
                    "\"consecutive_failures\":0,\"last_error\":\"\"}")}) {
    raw.Text({"PUBLISH", maker.prefix + "events", junk});
  }
  REQUIRE(b->AnnounceChange().ok());
  CHECK(la.WaitForChanges(1));
  maker.WaitForDelivery();
  CHECK(la.states().empty());
  CHECK(la.changes() == 1);
}

// Not run by ctest: the round trip of one TryAcquire to the test server.
//   redis_shared_state_test "[.latency]" -s
TEST_CASE("RedisSharedState: TryAcquire round trip", "[.latency]") {
  RedisMaker maker;
  auto a = maker.Connect();
  const std::string id = UniqueId("latency");
  const RateLimits limits{.rpm = 1'000'000, .tpm = 100'000'000, .max_concurrency = 0};
  constexpr int kCalls = 10'000;
  const SteadyTime start = Clock::Real().Now();
  int admitted = 0;
  for (int i = 0; i < kCalls; ++i) {
    admitted += Acquire(*a, id, limits, Epoch() + milliseconds(i)).admitted ? 1 : 0;
  }
  const double micros = std::chrono::duration<double, std::micro>(Since(start)).count() / kCalls;
  std::cout << "TryAcquire round trip: " << micros << " us mean over " << kCalls << " calls ("
            << admitted << " admitted)\n";
  CHECK(admitted == kCalls);
}

}  // namespace
}  // namespace switchboard::testing::shared_state_conformance
