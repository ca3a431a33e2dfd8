// custom_storage: switchboard over a store of your own.
//
// MapStorage (map_storage.h) keeps backends and config in std::maps and hands
// usage and cooldown records to an in-memory store. Everything else works as
// with the shipped stores: the admin service creates backends (keys
// encrypted), the router routes, and the cooldown a 429 starts is written
// back to MapStorage by the background writer. MapStorage passes the Storage
// conformance suite (tests/embed/map_storage_test.cc).
//
//   ./custom_storage
#include <cstdio>
#include <memory>

#include "map_storage.h"
#include "switchboard/switchboard.h"

namespace sb = switchboard;

namespace {

int Fail(const sb::Status& status) {
  std::fprintf(stderr, "custom_storage: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main() {
  example::MapStorage storage(sb::NewMemoryStorage());

  auto key = sb::MasterKey::Generate();
  if (!key.ok()) return Fail(key.status());
  auto cipher = sb::KeyCipher::Create(*std::move(key));
  if (!cipher.ok()) return Fail(cipher.status());

  auto writer = std::make_unique<sb::StorageWriter>(storage);
  sb::Router router(sb::Clock::Real(), writer.get());
  if (sb::Status s = router.LoadFrom(storage); !s.ok()) return Fail(s);
  sb::AdminService admin(storage, router, **cipher, sb::Clock::Real());

  for (const char* json : {
           R"({"name":"team-a","pool":"primary","api_base_url":"https://a.example/v1",
               "api_key":"sk-team-a-000000000001","model_mappings":{"gpt-4o":"gpt-4o"}})",
           R"({"name":"team-b","pool":"fallback","api_base_url":"https://b.example/v1",
               "api_key":"sk-team-b-000000000002","model_mappings":{"gpt-4o":"gpt-4o"}})"}) {
    auto b = admin.CreateBackend(json);
    if (!b.ok()) return Fail(b.status());
    std::printf("created %s in pool %s (key %s)\n", b->name.c_str(), b->pool.c_str(),
                b->api_key_hint.c_str());
  }

  // One request: team-a answers 429, team-b takes it.
  sb::RoutePlan plan = router.Route("gpt-4o");
  if (!plan.ok()) return Fail(plan.status());
  while (const sb::PlannedAttempt* attempt = plan.Next()) {
    sb::AttemptOutcome outcome;
    outcome.http_status = attempt->backend().name == "team-a" ? 429 : 200;
    outcome.headers = {{"retry-after", "20"}};
    std::printf("attempt %d: %s -> %d\n", attempt->number(), attempt->backend().name.c_str(),
                outcome.http_status);
    if (!sb::ShouldFailOver(plan.Report(outcome))) break;
  }
  if (sb::Status s = writer->Flush(); !s.ok()) return Fail(s);

  // The cooldown reached MapStorage's map, and the event its records store.
  auto stored = storage.GetBackendByName("team-a");
  if (!stored.ok()) return Fail(stored.status());
  std::printf("team-a in MapStorage: status %s, cooling until %s\n",
              std::string(sb::BackendStatusName(stored->status)).c_str(),
              stored->cooldown_until ? sb::FormatRfc3339(*stored->cooldown_until).c_str() : "-");
  auto events = storage.ListCooldownEvents({.limit = 10});
  if (!events.ok()) return Fail(events.status());
  std::printf("cooldown events: %zu\n", events->size());
  return stored->status == sb::BackendStatus::kCooling && events->size() == 1 ? 0 : 1;
}
