// quickstart: route requests through the switchboard library, no network.
//
// Stores two backends (API keys encrypted under a fresh master key), loads
// them into a Router, and routes three requests for "gpt-4o". The first
// answer from "openai-main" is a simulated 429: the router cools it down and
// fails over to "azure-fallback", and the decision trace says why.
//
//   ./quickstart [path/to/switchboard.db]    (default: a private in-memory store)
#include <cstdio>
#include <string>

#include "switchboard/secrets.h"
#include "switchboard/storage_writer.h"
#include "switchboard/switchboard.h"

namespace sb = switchboard;

namespace {

int Fail(const sb::Status& status) {
  std::fprintf(stderr, "quickstart: %s\n", status.ToString().c_str());
  return 1;
}

sb::Backend MakeBackend(const std::string& name, const std::string& pool,
                        const std::string& url) {
  sb::Backend b;
  b.id = sb::NewBackendId();
  b.name = name;
  b.label = name + " (example)";
  b.api_base_url = url;
  b.pool = pool;
  b.rpm_limit = 600;
  b.model_mappings["gpt-4o"] = sb::ModelMapping{"gpt-4o-2024-08-06", 1};
  b.created_at = b.updated_at = sb::Clock::Real().WallNow();
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : ":memory:";
  auto storage = sb::OpenSqliteStorage({.path = path});
  if (!storage.ok()) return Fail(storage.status());

  auto master_key = sb::MasterKey::Generate();
  if (!master_key.ok()) return Fail(master_key.status());
  auto cipher = sb::KeyCipher::Create(std::move(*master_key));
  if (!cipher.ok()) return Fail(cipher.status());

  for (auto [name, pool, url, key] :
       {std::tuple{"openai-main", "primary", "https://api.openai.com/v1", "sk-example-primary-0001"},
        std::tuple{"azure-fallback", "fallback", "https://example.openai.azure.com/v1",
                   "sk-example-fallback-0002"}}) {
    if ((*storage)->GetBackendByName(name).ok()) continue;  // rerun on the same file
    sb::Backend b = MakeBackend(name, pool, url);
    auto blob = (*cipher)->Encrypt(key, b.id);
    if (!blob.ok()) return Fail(blob.status());
    b.api_key_ciphertext = *blob;
    b.api_key_hint = sb::ApiKeyHint(key);
    if (auto errors = sb::ValidateBackend(b); !errors.empty()) {
      std::fprintf(stderr, "quickstart: %s %s\n", errors[0].param.c_str(),
                   errors[0].message.c_str());
      return 1;
    }
    if (sb::Status s = (*storage)->CreateBackend(b); !s.ok()) return Fail(s);
  }

  // State changes and usage go to storage in the background, never inline.
  sb::StorageWriter writer(**storage);
  sb::Router router(sb::Clock::Real(), &writer);
  if (sb::Status s = router.LoadFrom(**storage); !s.ok()) return Fail(s);

  for (int request = 1; request <= 3; ++request) {
    sb::RoutePlan plan = router.Route("gpt-4o");
    if (!plan.ok()) return Fail(plan.status());
    std::printf("request %d:\n", request);
    while (const sb::PlannedAttempt* attempt = plan.Next()) {
      // A real caller sends the request here (see the Proxy engine). We
      // simulate the upstream: openai-main is out of quota once.
      sb::AttemptOutcome outcome;
      outcome.http_status =
          request == 1 && attempt->backend().name == "openai-main" ? 429 : 200;
      outcome.latency = std::chrono::milliseconds(120);
      std::printf("  attempt %d -> %s (model %s): HTTP %d\n", attempt->number(),
                  attempt->backend().name.c_str(), attempt->upstream_model().c_str(),
                  outcome.http_status);
      if (!sb::ShouldFailOver(plan.Report(outcome))) break;
    }
    std::printf("  trace: %s\n", plan.TraceJson().c_str());
  }
  if (sb::Status s = writer.Flush(); !s.ok()) return Fail(s);

  auto events = (*storage)->ListCooldownEvents({.limit = 5});
  if (!events.ok()) return Fail(events.status());
  for (const sb::CooldownEvent& e : *events) {
    std::printf("cooldown: %s until %s (%s, upstream %d)\n", e.backend_name.c_str(),
                sb::FormatRfc3339(e.until).c_str(), e.reason.c_str(), e.upstream_status);
  }
  return 0;
}
