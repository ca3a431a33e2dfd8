// Client keys created through the admin API, end to end on the real server
// binary: a new key opens the proxy to its holder at once, a revoked key is
// refused at once, and a key works alongside SWITCHBOARD_CLIENT_KEYS.
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::string kAdminToken = "admin-token-for-client-key-tests-0123456789";

httplib::Headers Admin() { return {{"Authorization", "Bearer " + kAdminToken}}; }
httplib::Headers Bearer(const std::string& key) { return {{"Authorization", "Bearer " + key}}; }

ServerProcessOptions Options(const MockUpstream& mock, std::vector<std::string> env_keys = {}) {
  ServerProcessOptions o;
  o.backends = {Backend("primary", mock.base_url(), "primary")};
  o.client_keys = std::move(env_keys);
  o.env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken};
  return o;
}

struct CreatedKey {
  std::string id;
  std::string key;
};

CreatedKey CreateKey(httplib::Client& client, const std::string& name) {
  auto res = client.Post("/admin/keys", Admin(), R"({"name":")" + name + R"("})",
                         "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 201);
  CreatedKey created{JsonStringField(res->body, "id"), JsonStringField(res->body, "key")};
  REQUIRE(created.key.rfind("sbk_", 0) == 0);
  return created;
}

int Chat(httplib::Client& client, const httplib::Headers& headers) {
  auto res = client.Post(kChatPath, headers, ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  return res->status;
}

TEST_CASE("A client key created through the admin API is accepted at once and refused once "
          "revoked",
          "[client_keys]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(Options(mock));
  httplib::Client client = server.Client();

  CHECK(Chat(client, {}) == 200);  // no keys anywhere: open
  const CreatedKey key = CreateKey(client, "app");

  CHECK(Chat(client, {}) == 401);
  CHECK(Chat(client, Bearer("sbk_not-a-key")) == 401);
  CHECK(Chat(client, Bearer(key.key)) == 200);
  CHECK(Chat(client, {{"x-api-key", key.key}}) == 200);
  REQUIRE(mock.request_count() == 3);
  for (const RecordedRequest& up : mock.requests()) {
    for (const auto& [name, value] : up.headers) CHECK(value.find(key.key) == std::string::npos);
  }

  auto listed = client.Get("/admin/keys", Admin());
  REQUIRE(listed);
  CHECK(listed->status == 200);
  CHECK(listed->body.find(key.key) == std::string::npos);
  CHECK(listed->body.find(R"("last_used_at":null)") == std::string::npos);  // used just now

  auto revoked = client.Delete(("/admin/keys/" + key.id).c_str(), Admin());
  REQUIRE(revoked);
  CHECK(revoked->status == 204);
  auto res = client.Post(kChatPath, Bearer(key.key), ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 401);
  CHECK(OpenAIErrorProblem(res->body) == "");
  CHECK(Chat(client, {}) == 401);  // revoking the last key does not open the gateway
  CHECK(mock.request_count() == 3);

  // The output never shows the key.
  CHECK(server.output().find(key.key) == std::string::npos);
}

TEST_CASE("Keys from SWITCHBOARD_CLIENT_KEYS and the admin API are both accepted",
          "[client_keys]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(Options(mock, {"sb-env-key-one"}));
  httplib::Client client = server.Client();
  const CreatedKey key = CreateKey(client, "app");
  CHECK(Chat(client, Bearer("sb-env-key-one")) == 200);
  CHECK(Chat(client, {{"x-api-key", key.key}}) == 200);
  CHECK(Chat(client, {}) == 401);
  // Neither kind of client key opens the admin API.
  for (const std::string& k : {std::string("sb-env-key-one"), key.key}) {
    auto admin = client.Get("/admin/keys", Bearer(k));
    REQUIRE(admin);
    CHECK(admin->status == 401);
  }
}

TEST_CASE("Client keys survive a restart and stay revoked across it", "[client_keys]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TempDir dir;
  ServerProcessOptions options = Options(mock);
  options.dir = dir.path();
  options.master_key = NewMasterKeyBase64();
  CreatedKey kept;
  CreatedKey dropped;
  {
    TestServer server(options);
    httplib::Client client = server.Client();
    kept = CreateKey(client, "kept");
    dropped = CreateKey(client, "dropped");
    REQUIRE(client.Delete(("/admin/keys/" + dropped.id).c_str(), Admin())->status == 204);
  }
  TestServer server(options);
  httplib::Client client = server.Client();
  CHECK(Chat(client, Bearer(kept.key)) == 200);
  CHECK(Chat(client, Bearer(dropped.key)) == 401);
}

}  // namespace
}  // namespace switchboard::testing
