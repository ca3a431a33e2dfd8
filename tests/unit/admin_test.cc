// AdminService: the admin API's behaviour without HTTP.
#include <catch2/catch.hpp>

#include "support/makers.h"
#include "switchboard/admin.h"
#include "switchboard/json.h"

namespace switchboard {
namespace {

constexpr char kCreate[] = R"({"name":"openai-main","label":"OpenAI primary",
  "api_base_url":"https://api.openai.com/v1","api_key":"sk-live-0123456789abcdef",
  "rpm_limit":500,"model_mappings":{"gpt-4o":{"upstream_model":"gpt-4o-2024-08-06","weight":2}}})";

struct Fixture {
  ManualClock clock;
  std::unique_ptr<Storage> storage = NewMemoryStorage();
  Router router{clock, nullptr};
  std::unique_ptr<KeyCipher> cipher;
  std::unique_ptr<AdminService> admin;

  Fixture() {
    auto key = MasterKey::Generate();
    REQUIRE(key.ok());
    auto c = KeyCipher::Create(std::move(*key));
    REQUIRE(c.ok());
    cipher = std::move(*c);
    admin = std::make_unique<AdminService>(*storage, router, *cipher, clock);
  }

  Backend Create(const std::string& json = kCreate) {
    auto b = admin->CreateBackend(json);
    REQUIRE(b.ok());
    return *b;
  }
};

TEST_CASE("AdminService creates a backend, encrypts its key and routes to it at once", "[admin]") {
  Fixture f;
  const Backend b = f.Create();
  CHECK(b.id.rfind("bkd_", 0) == 0);
  CHECK(b.api_key_set());
  CHECK(b.api_key_hint == "...cdef");
  CHECK(b.api_key_ciphertext.find("sk-live") == std::string::npos);
  CHECK(b.source == BackendSource::kManual);
  CHECK(b.created_at == f.clock.WallNow());
  const std::string wire = BackendToJson(b);
  CHECK(wire.find("sk-live") == std::string::npos);
  CHECK(wire.find(b.api_key_ciphertext) == std::string::npos);
  auto key = f.cipher->Decrypt(f.storage->GetBackend(b.id)->api_key_ciphertext, b.id);
  REQUIRE(key.ok());
  CHECK(key->view() == "sk-live-0123456789abcdef");

  RoutePlan plan = f.router.Route("gpt-4o");
  REQUIRE(plan.ok());
  CHECK(plan.Next()->upstream_model() == "gpt-4o-2024-08-06");
}

TEST_CASE("AdminService defaults a new backend to pass-through models", "[admin]") {
  Fixture f;
  const Backend b = f.Create(R"({"name":"vllm","api_base_url":"http://127.0.0.1:8000/v1"})");
  CHECK(b.model_mappings.count("*") == 1);
  CHECK(b.pool == "primary");
  CHECK(b.timeout_seconds == 60);
  CHECK_FALSE(b.api_key_set());
  CHECK(f.router.Route("any-model").ok());
}

TEST_CASE("AdminService refuses bad input with the field named and stores nothing", "[admin]") {
  Fixture f;
  struct Case {
    const char* body;
    const char* param;
  };
  for (const Case& c : {Case{R"({"name":"x y","api_base_url":"https://a/v1"})", "name"},
                        Case{R"({"name":"x","api_base_url":"file:///etc/passwd"})", "api_base_url"},
                        Case{R"({"name":"x","api_base_url":"https://u:p@a/v1"})", "api_base_url"},
                        Case{R"({"name":"x","api_base_url":"https://a/v1","api":"cohere"})", "api"},
                        Case{R"({"name":"x","api_base_url":"https://a/v1","timeout_seconds":0})",
                             "timeout_seconds"},
                        Case{R"({"name":"x","api_base_url":"https://a/v1","rpm_limit":-1})",
                             "rpm_limit"},
                        Case{R"({"name":"x","api_base_url":"https://a/v1","pool":""})", "pool"},
                        Case{R"({"api_base_url":"https://a/v1"})", "name"},
                        Case{R"({"name":"x"})", "api_base_url"}}) {
    auto r = f.admin->CreateBackend(c.body);
    INFO(c.body);
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().param() == c.param);
  }
  auto malformed = f.admin->CreateBackend("{not json");
  CHECK(malformed.status().code() == StatusCode::kInvalidArgument);
  CHECK(malformed.status().param().empty());
  CHECK(f.storage->ListBackends({})->empty());
}

TEST_CASE("AdminService refuses a duplicate name with AlreadyExists", "[admin]") {
  Fixture f;
  f.Create();
  auto dup = f.admin->CreateBackend(kCreate);
  CHECK(dup.status().code() == StatusCode::kAlreadyExists);
  CHECK(dup.status().param() == "name");
  CHECK(f.storage->ListBackends({})->size() == 1);
}

TEST_CASE("AdminService patches only the given fields and rotates the key", "[admin]") {
  Fixture f;
  const Backend b = f.Create();
  auto patched = f.admin->UpdateBackend(b.id, R"({"label":"renamed","api_key":"sk-new-key-fedcba9876"})");
  REQUIRE(patched.ok());
  CHECK(patched->label == "renamed");
  CHECK(patched->rpm_limit == 500);
  CHECK(patched->api_key_hint == "...9876");
  CHECK(patched->api_key_ciphertext != b.api_key_ciphertext);
  auto key = f.cipher->Decrypt(patched->api_key_ciphertext, b.id);
  REQUIRE(key.ok());
  CHECK(key->view() == "sk-new-key-fedcba9876");

  auto bad = f.admin->UpdateBackend(b.id, R"({"api_base_url":"gopher://x"})");
  CHECK(bad.status().param() == "api_base_url");
  CHECK(f.storage->GetBackend(b.id)->api_base_url == "https://api.openai.com/v1");
  CHECK(f.admin->UpdateBackend("bkd_missing", "{}").status().code() == StatusCode::kNotFound);
}

TEST_CASE("AdminService takes a disabled backend out of routing at once", "[admin]") {
  Fixture f;
  const Backend b = f.Create();
  REQUIRE(f.admin->UpdateBackend(b.id, R"({"enabled":false})").ok());
  CHECK(f.router.Route("gpt-4o").status().code() == StatusCode::kNotFound);
  REQUIRE(f.admin->DeleteBackend(b.id).ok());
  CHECK(f.admin->GetBackend(b.id).status().code() == StatusCode::kNotFound);
  CHECK(f.admin->DeleteBackend(b.id).code() == StatusCode::kNotFound);
}

TEST_CASE("AdminService shows live cooldowns and resets them", "[admin]") {
  Fixture f;
  const Backend b = f.Create();
  {
    RoutePlan plan = f.router.Route("gpt-4o");
    REQUIRE(plan.Next() != nullptr);
    AttemptOutcome limited;
    limited.http_status = 429;
    plan.Report(limited);
  }
  auto cooling = f.admin->GetBackend(b.id);
  REQUIRE(cooling.ok());
  CHECK(cooling->status == BackendStatus::kCooling);
  CHECK(cooling->consecutive_429_count == 1);
  CHECK(cooling->cooldown_until == f.clock.WallNow() + std::chrono::seconds(5));
  auto pools = f.admin->Pools();
  REQUIRE(pools.ok());
  CHECK(pools->front().cooling == 1);

  auto reset = f.admin->ResetCooldown(b.id);
  REQUIRE(reset.ok());
  CHECK(reset->status == BackendStatus::kHealthy);
  CHECK(reset->consecutive_429_count == 0);
  CHECK_FALSE(reset->cooldown_until.has_value());
  CHECK(f.router.Route("gpt-4o").ok());
  CHECK(f.admin->ResetCooldown("bkd_missing").status().code() == StatusCode::kNotFound);
}

TEST_CASE("AdminService shows a finished cooldown as healthy", "[admin]") {
  Fixture f;
  const Backend b = f.Create();
  {
    RoutePlan plan = f.router.Route("gpt-4o");
    REQUIRE(plan.Next() != nullptr);
    AttemptOutcome limited;
    limited.http_status = 429;
    plan.Report(limited);
  }
  f.clock.Advance(std::chrono::seconds(6));
  CHECK(f.admin->GetBackend(b.id)->status == BackendStatus::kHealthy);
}

TEST_CASE("AdminService imports backends idempotently by name, all or nothing", "[admin]") {
  Fixture f;
  const char* doc = R"([{"name":"a","api_base_url":"https://a.test/v1","api_key":"sk-aaaaaaaaaaaaaaaa"},
                        {"name":"b","api_base_url":"https://b.test/v1","pool":"fallback"}])";
  auto first = f.admin->ImportBackends(doc);
  REQUIRE(first.ok());
  CHECK(first->created == 2);
  CHECK(f.storage->GetBackendByName("a")->source == BackendSource::kImport);
  const std::string id = f.storage->GetBackendByName("a")->id;
  auto again = f.admin->ImportBackends(doc);
  REQUIRE(again.ok());
  CHECK(again->created == 0);
  CHECK(again->updated == 2);
  CHECK(f.storage->GetBackendByName("a")->id == id);

  auto bad = f.admin->ImportBackends(
      R"([{"name":"c","api_base_url":"https://c.test/v1"},{"name":"d","api_base_url":"ftp://d"}])");
  CHECK(bad.status().param() == "[1].api_base_url");
  CHECK(f.storage->GetBackendByName("c").status().code() == StatusCode::kNotFound);
}

TEST_CASE("AdminService patches the config and routing follows it", "[admin]") {
  Fixture f;
  f.Create();
  auto patched = f.admin->PatchConfig(R"({"max_attempts":1,"strategy":"least-busy"})");
  REQUIRE(patched.ok());
  CHECK(patched->max_attempts == 1);
  CHECK(f.router.snapshot()->config().strategy == Strategy::kLeastBusy);
  auto bad = f.admin->PatchConfig(R"({"cooldown_base_seconds":10,"cooldown_max_seconds":5})");
  CHECK(bad.status().param() == "cooldown_max_seconds");
  CHECK(f.admin->GetConfig()->max_attempts == 1);
  CHECK(f.admin->PatchConfig("[").status().param().empty());
}

TEST_CASE("AdminService picks stats buckets by window and refuses odd windows", "[admin]") {
  Fixture f;
  CHECK(StatsBucketSeconds(3600) == 60);
  CHECK(StatsBucketSeconds(6 * 3600) == 60);
  CHECK(StatsBucketSeconds(86400) == 300);
  CHECK(StatsBucketSeconds(7 * 86400) == 3600);
  CHECK(f.admin->Stats(0).status().param() == "window");
  const Backend b = testing::MakeBackend("x");
  REQUIRE(f.storage->AppendUsage({testing::MakeUsage(b, f.clock.WallNow() - std::chrono::minutes(5)),
                                  testing::MakeUsage(b, f.clock.WallNow() - std::chrono::hours(2))})
              .ok());
  auto hour = f.admin->Stats(3600);
  REQUIRE(hour.ok());
  CHECK(hour->totals.requests == 1);
  auto day = f.admin->Stats(86400);
  REQUIRE(day.ok());
  CHECK(day->totals.requests == 2);
}

TEST_CASE("AdminService applies usage retention from the config", "[admin]") {
  Fixture f;
  const Backend b = testing::MakeBackend("x");
  REQUIRE(f.storage->AppendUsage({testing::MakeUsage(b, f.clock.WallNow() - std::chrono::hours(24 * 40)),
                                  testing::MakeUsage(b, f.clock.WallNow())})
              .ok());
  auto deleted = f.admin->ApplyRetention();
  REQUIRE(deleted.ok());
  CHECK(*deleted == 1);
}

// --- Client keys ----------------------------------------------------------------

TEST_CASE("AdminService creates a client key, returns it once and keeps only its hash",
          "[admin]") {
  Fixture f;
  auto created = f.admin->CreateClientKey(R"({"name":"ci","metadata":{"team":"ml"}})");
  REQUIRE(created.ok());
  const std::string& secret = created->secret;
  CHECK(secret.rfind("sbk_", 0) == 0);
  CHECK(secret.size() == 4 + 48);  // 192 random bits, hex
  CHECK(created->key.id.rfind("key_", 0) == 0);
  CHECK(created->key.hint == "..." + secret.substr(secret.size() - 4));
  CHECK(created->key.created_at == f.clock.WallNow());

  auto stored = f.storage->ListClientKeys();
  REQUIRE(stored.ok());
  REQUIRE(stored->size() == 1);
  CHECK((*stored)[0].key_hash.size() == 64);
  CHECK((*stored)[0].key_hash.find(secret.substr(4, 16)) == std::string::npos);
  const std::string once = CreatedClientKeyToJson(*created);
  CHECK(once.find(secret) != std::string::npos);
  auto listed = f.admin->ListClientKeys();
  REQUIRE(listed.ok());
  const std::string wire = ClientKeyListToJson(*listed);
  CHECK(wire.find(secret) == std::string::npos);
  CHECK(wire.find((*stored)[0].key_hash) == std::string::npos);
  CHECK(wire.find(R"("name":"ci")") != std::string::npos);
  CHECK(wire.find(R"("metadata":{"team":"ml"})") != std::string::npos);
  CHECK(wire.find(R"("revoked":false)") != std::string::npos);
  CHECK(wire.find(R"("last_used_at":null)") != std::string::npos);
}

TEST_CASE("AdminService accepts a new client key at once and refuses it once revoked",
          "[admin]") {
  Fixture f;
  CHECK(!f.admin->client_keys()->required());
  auto created = f.admin->CreateClientKey(R"({"name":"ci"})");
  REQUIRE(created.ok());
  auto keys = f.admin->client_keys();
  CHECK(keys->Match({created->secret}) != nullptr);
  CHECK(keys->Match({"wrong", created->secret}) != nullptr);
  CHECK(keys->Match({created->secret + "x"}) == nullptr);
  CHECK(keys->Match({}) == nullptr);

  REQUIRE(f.admin->RevokeClientKey(created->key.id).ok());
  CHECK(f.admin->client_keys()->Match({created->secret}) == nullptr);
  CHECK(f.admin->client_keys()->empty());
  CHECK(f.admin->client_keys()->required());  // revoking the last key does not open the gateway
  // The snapshot a request already holds is unchanged.
  CHECK(keys->Match({created->secret}) != nullptr);
  auto listed = f.admin->ListClientKeys();
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 1);
  CHECK((*listed)[0].revoked_at == f.clock.WallNow());
}

TEST_CASE("AdminService refuses bad client key input with 400, 422, 409 and 404", "[admin]") {
  Fixture f;
  CHECK(f.admin->CreateClientKey("{nope").status().param().empty());
  CHECK(f.admin->CreateClientKey("{nope").status().code() == StatusCode::kInvalidArgument);
  CHECK(f.admin->CreateClientKey("{}").status().param() == "name");
  CHECK(f.admin->CreateClientKey(R"({"name":"a b"})").status().param() == "name");
  CHECK(f.admin->CreateClientKey(R"({"name":7})").status().param() == "name");
  CHECK(f.admin->CreateClientKey(R"({"name":"ok","metadata":[]})").status().param() ==
        "metadata");
  CHECK(f.admin->CreateClientKey(R"({"name":"ok","key":"sbk_mine"})").status().param() == "key");
  REQUIRE(f.admin->CreateClientKey(R"({"name":"ci"})").ok());
  const Status dup = f.admin->CreateClientKey(R"({"name":"ci"})").status();
  CHECK(dup.code() == StatusCode::kAlreadyExists);
  CHECK(dup.param() == "name");
  CHECK(f.admin->RevokeClientKey("key_nope").code() == StatusCode::kNotFound);
  auto listed = f.admin->ListClientKeys();
  REQUIRE(listed.ok());
  CHECK(listed->size() == 1);
}

TEST_CASE("AdminService keeps a client key's last use in memory and stores it on flush",
          "[admin]") {
  Fixture f;
  auto created = f.admin->CreateClientKey(R"({"name":"ci"})");
  REQUIRE(created.ok());
  const ClientKeySet::Entry* entry = f.admin->client_keys()->Match({created->secret});
  REQUIRE(entry != nullptr);
  const SystemTime used = testing::TestEpoch() + std::chrono::minutes(5);
  entry->last_used_ms->store(ToUnixMillis(used));
  // Listed at once, not yet stored.
  auto listed = f.admin->ListClientKeys();
  REQUIRE(listed.ok());
  CHECK((*listed)[0].last_used_at == used);
  CHECK(!(*f.storage->ListClientKeys())[0].last_used_at);
  // Another key's creation swaps the set; the stamp carries over.
  f.clock.Advance(std::chrono::seconds(1));  // keys list oldest first
  REQUIRE(f.admin->CreateClientKey(R"({"name":"other"})").ok());
  REQUIRE(f.admin->FlushClientKeyUses().ok());
  CHECK((*f.storage->ListClientKeys())[0].last_used_at == used);
}

TEST_CASE("AdminService loads stored client keys when it starts", "[admin]") {
  Fixture f;
  auto created = f.admin->CreateClientKey(R"({"name":"ci"})");
  REQUIRE(created.ok());
  AdminService restarted(*f.storage, f.router, *f.cipher, f.clock);
  CHECK(restarted.client_keys()->Match({created->secret}) != nullptr);
}

}  // namespace
}  // namespace switchboard
