// The SharedState conformance suite: what every SharedState must do, as
// Catch2 test cases templated over "makers". A maker hands out endpoints of
// one fresh shared state, as several instances would hold them:
//
//   struct MyMaker {
//     MyMaker();                                          // a fresh, empty state
//     std::unique_ptr<switchboard::SharedState> Connect();  // one instance's endpoint
//     void WaitForDelivery();  // returns once published events were delivered
//                              // (or after a bounded wait, for remote states)
//   };
//   #define SWITCHBOARD_SHARED_STATE_MAKERS std::tuple<MyMaker>
//   #include "support/shared_state_conformance.h"
//
// Times come from a ManualClock: no test waits for a bucket to refill. Events
// are awaited with a deadline (they cross threads, or the network).
#ifndef SWITCHBOARD_TESTS_SUPPORT_SHARED_STATE_CONFORMANCE_H_
#define SWITCHBOARD_TESTS_SUPPORT_SHARED_STATE_CONFORMANCE_H_

#ifndef SWITCHBOARD_SHARED_STATE_MAKERS
#error "#define SWITCHBOARD_SHARED_STATE_MAKERS std::tuple<YourMaker...> before including this file"
#endif

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "switchboard/shared_state.h"

namespace switchboard::testing::shared_state_conformance {

using SharedStateMakers = SWITCHBOARD_SHARED_STATE_MAKERS;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The wall time every test starts at (any fixed time works).
inline SystemTime Epoch() { return SystemTime(std::chrono::seconds(1'900'000'000)); }

// Backend ids unique per test run, so a state that outlives a test (a Redis
// database) cannot leak one test's buckets into the next.
inline std::string UniqueId(const std::string& name) {
  static int counter = 0;
  return "bkd_conf_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) +
         "_" + std::to_string(++counter) + "_" + name;
}

// Records what a listener was told.
class RecordingListener final : public SharedStateListener {
 public:
  void OnRemoteBackendState(const BackendState& state) override {
    std::lock_guard<std::mutex> lock(mu_);
    states_.push_back(state);
    cv_.notify_all();
  }
  void OnRemoteChange() override {
    std::lock_guard<std::mutex> lock(mu_);
    ++changes_;
    cv_.notify_all();
  }
  void OnConnectivity(bool connected) override {
    std::lock_guard<std::mutex> lock(mu_);
    connectivity_.push_back(connected);
    cv_.notify_all();
  }

  // Waits until `n` states arrived (true) or `timeout` passed.
  bool WaitForStates(size_t n, milliseconds timeout = seconds(5)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return states_.size() >= n; });
  }
  bool WaitForChanges(int n, milliseconds timeout = seconds(5)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return changes_ >= n; });
  }
  std::vector<BackendState> states() const {
    std::lock_guard<std::mutex> lock(mu_);
    return states_;
  }
  int changes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return changes_;
  }
  std::vector<bool> connectivity() const {
    std::lock_guard<std::mutex> lock(mu_);
    return connectivity_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<BackendState> states_;
  int changes_ = 0;
  std::vector<bool> connectivity_;
};

inline SharedAdmission Acquire(SharedState& s, const std::string& id, const RateLimits& limits,
                               SystemTime now, Duration ttl = seconds(60)) {
  Result<SharedAdmission> got = s.TryAcquire(id, limits, now, ttl);
  INFO(got.status().ToString());
  REQUIRE(got.ok());
  return *got;
}

TEMPLATE_LIST_TEST_CASE("SharedState: an rpm limit holds across instances and refills over time",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  std::vector<std::unique_ptr<SharedState>> instances;
  for (int i = 0; i < 3; ++i) instances.push_back(maker.Connect());
  const std::string id = UniqueId("rpm");
  const RateLimits limits{.rpm = 60};

  // A full bucket: 60 admissions, spread over the three instances.
  int admitted = 0;
  for (int i = 0; i < 60; ++i) {
    admitted += Acquire(*instances[i % 3], id, limits, Epoch()).admitted ? 1 : 0;
  }
  CHECK(admitted == 60);
  // The 61st is refused on every instance, with when a token is back (1 s).
  for (auto& s : instances) {
    const SharedAdmission refused = Acquire(*s, id, limits, Epoch());
    CHECK_FALSE(refused.admitted);
    CHECK(refused.limited_by == LimitKind::kRequests);
    CHECK(refused.available_at > Epoch());
    CHECK(refused.available_at <= Epoch() + seconds(1));
  }
  // Half a second refills half a token: still refused; a second, one token.
  CHECK_FALSE(Acquire(*instances[1], id, limits, Epoch() + milliseconds(500)).admitted);
  CHECK(Acquire(*instances[2], id, limits, Epoch() + seconds(1)).admitted);
  CHECK_FALSE(Acquire(*instances[0], id, limits, Epoch() + seconds(1)).admitted);
  // A minute refills the bucket, but never past its capacity.
  admitted = 0;
  for (int i = 0; i < 80; ++i) {
    admitted += Acquire(*instances[i % 3], id, limits, Epoch() + seconds(600)).admitted ? 1 : 0;
  }
  CHECK(admitted == 60);
}

TEMPLATE_LIST_TEST_CASE("SharedState: backends have separate buckets, and no limit is no limit",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  auto a = maker.Connect();
  const std::string one = UniqueId("one"), two = UniqueId("two"), free = UniqueId("free");
  CHECK(Acquire(*a, one, RateLimits{.rpm = 1}, Epoch()).admitted);
  CHECK_FALSE(Acquire(*a, one, RateLimits{.rpm = 1}, Epoch()).admitted);
  CHECK(Acquire(*a, two, RateLimits{.rpm = 1}, Epoch()).admitted);
  for (int i = 0; i < 1000; ++i) {
    const SharedAdmission got = Acquire(*a, free, RateLimits{}, Epoch());
    REQUIRE(got.admitted);
    CHECK(got.lease.empty());  // no concurrency cap: no lease to give back
  }
}

TEMPLATE_LIST_TEST_CASE("SharedState: a concurrency cap counts leases of every instance",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  auto a = maker.Connect();
  auto b = maker.Connect();
  const std::string id = UniqueId("conc");
  const RateLimits limits{.max_concurrency = 2};
  const SharedAdmission first = Acquire(*a, id, limits, Epoch());
  const SharedAdmission second = Acquire(*b, id, limits, Epoch());
  REQUIRE(first.admitted);
  REQUIRE(second.admitted);
  CHECK_FALSE(first.lease.empty());
  CHECK(first.lease != second.lease);
  const SharedAdmission third = Acquire(*a, id, limits, Epoch());
  CHECK_FALSE(third.admitted);
  CHECK(third.limited_by == LimitKind::kConcurrency);
  // A lease ended on one instance frees a place for the other.
  REQUIRE(a->Release(id, first.lease).ok());
  const SharedAdmission again = Acquire(*b, id, limits, Epoch());
  CHECK(again.admitted);
  CHECK_FALSE(Acquire(*a, id, limits, Epoch()).admitted);
  // Releasing a lease twice, or an unknown one, changes nothing.
  REQUIRE(a->Release(id, first.lease).ok());
  REQUIRE(a->Release(id, "no-such-lease").ok());
  CHECK_FALSE(Acquire(*a, id, limits, Epoch()).admitted);
}

TEMPLATE_LIST_TEST_CASE("SharedState: a lease nobody ends expires after its ttl",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  auto a = maker.Connect();
  const std::string id = UniqueId("ttl");
  const RateLimits limits{.max_concurrency = 1};
  // An instance that died holding its lease.
  REQUIRE(Acquire(*a, id, limits, Epoch(), seconds(30)).admitted);
  CHECK_FALSE(Acquire(*a, id, limits, Epoch() + seconds(29)).admitted);
  CHECK(Acquire(*a, id, limits, Epoch() + seconds(31)).admitted);
}

TEMPLATE_LIST_TEST_CASE("SharedState: a refund gives back the request token and the lease",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  auto a = maker.Connect();
  const std::string id = UniqueId("refund");
  const RateLimits limits{.rpm = 2, .max_concurrency = 1};
  const SharedAdmission got = Acquire(*a, id, limits, Epoch());
  REQUIRE(got.admitted);
  REQUIRE(a->Refund(id, limits, got.lease, Epoch()).ok());
  // Both tokens and the one place are there again.
  const SharedAdmission one = Acquire(*a, id, limits, Epoch());
  REQUIRE(one.admitted);
  REQUIRE(a->Release(id, one.lease).ok());
  const SharedAdmission two = Acquire(*a, id, limits, Epoch());
  REQUIRE(two.admitted);
  REQUIRE(a->Release(id, two.lease).ok());
  CHECK_FALSE(Acquire(*a, id, limits, Epoch()).admitted);
  // A refund never fills the bucket past its capacity.
  const std::string full = UniqueId("refund-full");
  REQUIRE(a->Refund(full, RateLimits{.rpm = 1}, "", Epoch()).ok());
  CHECK(Acquire(*a, full, RateLimits{.rpm = 1}, Epoch()).admitted);
  CHECK_FALSE(Acquire(*a, full, RateLimits{.rpm = 1}, Epoch()).admitted);
}

TEMPLATE_LIST_TEST_CASE("SharedState: tokens charged on any instance count against the tpm limit",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  auto a = maker.Connect();
  auto b = maker.Connect();
  const std::string id = UniqueId("tpm");
  const RateLimits limits{.tpm = 6000};  // 100 tokens a second
  REQUIRE(Acquire(*a, id, limits, Epoch()).admitted);
  REQUIRE(a->ChargeTokens(id, limits, 5000, Epoch()).ok());
  REQUIRE(b->ChargeTokens(id, limits, 2000, Epoch()).ok());  // 1,000 in debt now
  const SharedAdmission refused = Acquire(*b, id, limits, Epoch());
  CHECK_FALSE(refused.admitted);
  CHECK(refused.limited_by == LimitKind::kTokens);
  CHECK(refused.available_at > Epoch() + seconds(9));
  CHECK(refused.available_at <= Epoch() + seconds(11));
  CHECK_FALSE(Acquire(*a, id, limits, Epoch() + seconds(9)).admitted);
  CHECK(Acquire(*a, id, limits, Epoch() + seconds(11)).admitted);
}

TEMPLATE_LIST_TEST_CASE("SharedState: lowered limits cap the bucket at the new capacity",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  auto a = maker.Connect();
  const std::string id = UniqueId("lowered");
  REQUIRE(Acquire(*a, id, RateLimits{.rpm = 100}, Epoch()).admitted);  // 99 left
  int admitted = 0;
  for (int i = 0; i < 20; ++i) {
    admitted += Acquire(*a, id, RateLimits{.rpm = 10}, Epoch()).admitted ? 1 : 0;
  }
  CHECK(admitted == 10);
}

TEMPLATE_LIST_TEST_CASE("SharedState: a published backend state reaches every other instance",
                        "[shared_state]", SharedStateMakers) {
  TestType maker;
  RecordingListener la, lb, lc;  // declared first: they outlive the endpoints
  auto a = maker.Connect();
  auto b = maker.Connect();
  auto c = maker.Connect();
  a->SetListener(&la);
  b->SetListener(&lb);
  c->SetListener(&lc);
  CHECK(a->instances() == 3);

  BackendState state;
  state.backend_id = UniqueId("cooling");
  state.status = BackendStatus::kCooling;
  state.cooldown_until = Epoch() + milliseconds(12345);
  state.consecutive_429_count = 2;
  state.consecutive_failures = 1;
  state.last_error = "429 from upstream: \"slow down\"";
  REQUIRE(a->PublishBackendState(state).ok());
  REQUIRE(lb.WaitForStates(1));
  REQUIRE(lc.WaitForStates(1));
  CHECK(lb.states()[0] == state);
  CHECK(lc.states()[0] == state);

  REQUIRE(b->AnnounceChange().ok());
  CHECK(la.WaitForChanges(1));
  CHECK(lc.WaitForChanges(1));
  maker.WaitForDelivery();
  // Nobody hears its own news.
  CHECK(la.states().empty());
  CHECK(lb.changes() == 0);

  // States arrive in the order they were published.
  for (int i = 0; i < 20; ++i) {
    state.consecutive_429_count = 10 + i;
    REQUIRE(a->PublishBackendState(state).ok());
  }
  REQUIRE(lb.WaitForStates(21));
  const auto got = lb.states();
  for (int i = 0; i < 20; ++i) {
    CHECK(got[static_cast<size_t>(1 + i)].consecutive_429_count == 10 + i);
  }
}

}  // namespace switchboard::testing::shared_state_conformance

#endif  // SWITCHBOARD_TESTS_SUPPORT_SHARED_STATE_CONFORMANCE_H_
