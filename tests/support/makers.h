// Test makers: valid domain values with the few fields a test cares about.
#ifndef SWITCHBOARD_TESTS_SUPPORT_MAKERS_H_
#define SWITCHBOARD_TESTS_SUPPORT_MAKERS_H_

#include <string>
#include <utility>

#include "switchboard/clock.h"
#include "switchboard/cooldown_manager.h"
#include "switchboard/types.h"

namespace switchboard::testing {

// A fixed wall time tests stamp records with: 2026-01-01T00:00:00Z.
inline SystemTime TestEpoch() { return SystemTime(std::chrono::seconds(1767225600)); }

// A valid backend named `name` in `pool`, serving "gpt-4o" (-> "gpt-4o-upstream").
inline Backend MakeBackend(const std::string& name, const std::string& pool = "primary") {
  Backend b;
  b.id = "bkd_" + name;
  b.name = name;
  b.label = "Test backend " + name;
  b.api_base_url = "http://127.0.0.1:9/v1";
  b.pool = pool;
  b.model_mappings["gpt-4o"] = ModelMapping{"gpt-4o-upstream", 1};
  b.created_at = TestEpoch();
  b.updated_at = TestEpoch();
  return b;
}

// An attempt that got HTTP `status` (with `headers`) after 100 ms.
inline AttemptOutcome HttpOutcome(int status, Headers headers = {}) {
  AttemptOutcome o;
  o.http_status = status;
  o.headers = std::move(headers);
  o.latency = std::chrono::milliseconds(100);
  return o;
}

// A successful usage record for `backend` at `time`.
inline UsageRecord MakeUsage(const Backend& backend, SystemTime time, int status = 200,
                             int64_t latency_ms = 100) {
  UsageRecord r;
  r.request_id = "req_test";
  r.time = time;
  r.endpoint = "/v1/chat/completions";
  r.model = "gpt-4o";
  r.backend_id = backend.id;
  r.backend_name = backend.name;
  r.pool = backend.pool;
  r.status = status;
  r.attempts = 1;
  r.latency_ms = latency_ms;
  r.ttfb_ms = latency_ms / 2;
  r.prompt_tokens = 10;
  r.completion_tokens = 20;
  r.trace = R"([{"backend":")" + backend.name + R"(","decision":"tried"}])";
  return r;
}

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_SUPPORT_MAKERS_H_
