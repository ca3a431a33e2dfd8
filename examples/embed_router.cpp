// embed_router: routing inside your own service. Your code sends the HTTP
// requests (with whatever client it already has); switchboard picks the
// backend for each one, and learns from the outcome you report.
//
// Three backends serve "gpt-4o": two in pool "primary", one in "fallback".
// The simulated upstreams below misbehave on purpose: "east" answers 429
// (with Retry-After) on its 2nd call and "west" has a bad key (401) from the
// start. Watch requests move to the healthy backends, and the final state:
// east cooling down, west in error.
//
//   ./embed_router
#include <cstdio>
#include <map>
#include <string>

#include "switchboard/switchboard.h"

namespace sb = switchboard;

namespace {

int Fail(const sb::Status& status) {
  std::fprintf(stderr, "embed_router: %s\n", status.ToString().c_str());
  return 1;
}

// Stands in for your HTTP client call to the chosen backend.
sb::AttemptOutcome SendUpstream(const sb::Backend& backend, const std::string& upstream_model,
                                std::map<std::string, int>& calls) {
  const int call = ++calls[backend.name];
  sb::AttemptOutcome outcome;
  outcome.latency = std::chrono::milliseconds(80 + 10 * call);
  outcome.ttfb = std::chrono::milliseconds(40);
  if (backend.name == "west") {
    outcome.http_status = 401;  // bad key: west goes to error
  } else if (backend.name == "east" && call == 2) {
    outcome.http_status = 429;
    outcome.headers = {{"retry-after", "30"}};  // cool down for at least 30 s
  } else {
    outcome.http_status = 200;
    outcome.prompt_tokens = 12;  // from the response's "usage"
    outcome.completion_tokens = 30;
  }
  std::printf("    %s (%s) -> %d\n", backend.name.c_str(), upstream_model.c_str(),
              outcome.http_status);
  return outcome;
}

sb::Backend MakeBackend(const std::string& name, const std::string& pool) {
  sb::Backend b;
  b.id = sb::NewBackendId();
  b.name = name;
  b.api_base_url = "https://" + name + ".example/v1";
  b.pool = pool;
  b.model_mappings["gpt-4o"] = sb::ModelMapping{"gpt-4o-2024-08-06", 1};
  b.created_at = b.updated_at = sb::Clock::Real().WallNow();
  return b;
}

}  // namespace

int main() {
  // The router needs no store: give it the backends and the config directly.
  // (Router::LoadFrom(storage) reads them from a Storage instead, and a
  // StorageWriter as the sink persists cooldowns.)
  sb::Router router(sb::Clock::Real(), /*sink=*/nullptr);
  sb::Config config;
  config.max_attempts = 3;
  sb::Status s = router.Update(
      {MakeBackend("east", "primary"), MakeBackend("west", "primary"),
       MakeBackend("north", "fallback")},
      config);
  if (!s.ok()) return Fail(s);

  std::map<std::string, int> calls;
  std::map<std::string, int> served;
  for (int request = 1; request <= 6; ++request) {
    sb::RoutePlan plan = router.Route("gpt-4o");
    if (!plan.ok()) return Fail(plan.status());
    std::printf("request %d\n", request);
    std::string answered_by = "-";
    while (const sb::PlannedAttempt* attempt = plan.Next()) {
      sb::AttemptOutcome outcome = SendUpstream(attempt->backend(), attempt->upstream_model(), calls);
      const sb::OutcomeClass c = plan.Report(outcome);
      if (c == sb::OutcomeClass::kSuccess) answered_by = attempt->backend().name;
      if (!sb::ShouldFailOver(c)) break;
    }
    ++served[answered_by];
    std::printf("  answered by %s after %d attempt(s); trace %s\n", answered_by.c_str(),
                plan.attempts(), plan.TraceJson().c_str());
  }

  std::printf("final state:\n");
  for (const sb::BackendLiveState& live : router.LiveStates()) {
    auto entry = router.snapshot()->FindEntry(live.backend_id);
    std::printf("  %-6s %-8s 429s=%d failures=%d %s\n", entry->backend.name.c_str(),
                std::string(sb::BackendStatusName(live.state.status)).c_str(),
                live.state.consecutive_429_count, live.state.consecutive_failures,
                live.state.last_error.c_str());
  }
  // Every request was answered, and the misbehaving backends were set aside.
  const bool ok = served["-"] == 0 && router.LiveState(router.snapshot()->entries()[0].backend.id)
                                          ->state.status != sb::BackendStatus::kHealthy;
  return ok ? 0 : 1;
}
