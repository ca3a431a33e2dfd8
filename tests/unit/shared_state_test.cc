// InProcessSharedState: the SharedState conformance suite, and the
// unreachable state the fallback is tested with.
#include <memory>
#include <tuple>

#include "switchboard/shared_state.h"

namespace {

struct InProcessMaker {
  std::unique_ptr<switchboard::SharedState> Connect() { return hub.Connect(); }
  void WaitForDelivery() { hub.WaitForDelivery(); }
  switchboard::InProcessSharedState hub;
};

}  // namespace

#define SWITCHBOARD_SHARED_STATE_MAKERS std::tuple<InProcessMaker>
#include "support/shared_state_conformance.h"

namespace switchboard::testing::shared_state_conformance {
namespace {

TEST_CASE("InProcessSharedState: while unreachable every call says so and listeners are told",
          "[shared_state]") {
  RecordingListener la, lb;
  InProcessSharedState hub;
  auto a = hub.Connect();
  auto b = hub.Connect();
  a->SetListener(&la);
  b->SetListener(&lb);
  CHECK(a->connected());
  CHECK(a->instances() == 2);

  hub.SetReachable(false);
  hub.WaitForDelivery();
  CHECK_FALSE(a->connected());
  const RateLimits limits{.rpm = 10};
  Result<SharedAdmission> got = a->TryAcquire("bkd_x", limits, Epoch(), seconds(60));
  CHECK(got.status().code() == StatusCode::kUnavailable);
  CHECK(a->Release("bkd_x", "1").code() == StatusCode::kUnavailable);
  CHECK(a->ChargeTokens("bkd_x", limits, 5, Epoch()).code() == StatusCode::kUnavailable);
  CHECK(a->PublishBackendState(BackendState{.backend_id = "bkd_x"}).code() ==
        StatusCode::kUnavailable);
  CHECK(a->instances() == 2);  // the last count seen

  hub.SetReachable(true);
  hub.WaitForDelivery();
  CHECK(a->connected());
  got = a->TryAcquire("bkd_x", limits, Epoch(), seconds(60));
  REQUIRE(got.ok());
  CHECK(got->admitted);
  // Both endpoints heard both changes; nothing else was delivered.
  CHECK(la.connectivity() == std::vector<bool>{false, true});
  CHECK(lb.connectivity() == std::vector<bool>{false, true});
  CHECK(la.states().empty());
  CHECK(lb.states().empty());
}

TEST_CASE("InProcessSharedState: an endpoint that goes away stops counting and hearing",
          "[shared_state]") {
  RecordingListener la;
  InProcessSharedState hub;
  auto a = hub.Connect();
  a->SetListener(&la);
  {
    auto b = hub.Connect();
    CHECK(a->instances() == 2);
  }
  CHECK(a->instances() == 1);
  auto c = hub.Connect();
  REQUIRE(c->AnnounceChange().ok());
  CHECK(la.WaitForChanges(1));
}

}  // namespace
}  // namespace switchboard::testing::shared_state_conformance
