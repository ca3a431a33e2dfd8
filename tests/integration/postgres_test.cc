// `switchboard serve --store postgres://...` end to end: the real binary
// against the test PostgreSQL server (the ctest fixture postgres_server, see
// tests/postgres/) and an in-process mock upstream. Built by
// tests/postgres/CMakeLists.txt, which attaches the fixture.
#include <string>
#include <vector>

#include "cli.h"
#include "harness.h"
#include "postgres_test_env.h"
#include "server.h"
#include "switchboard/postgres_storage.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::string kAdminToken = "admin-token-for-the-postgres-test";

httplib::Headers AdminHeaders() { return {{"Authorization", "Bearer " + kAdminToken}}; }

// The test server's URL pointing at a fresh schema of its own (libpq's
// "options" parameter sets the search_path; %20 and %3D are " " and "=").
std::string SchemaUrl(const std::string& schema) {
  return RequireTestPostgresUrl() + "?options=-c%20search_path%3D" + schema;
}

std::string NewBackendBody(const std::string& name, const std::string& base_url) {
  return R"({"name":")" + name + R"(","api_base_url":")" + base_url +
         R"(","api_key":"sk-postgres-test-secret-key","pool":"primary",)"
         R"("model_mappings":{"gpt-4o":{"upstream_model":"gpt-4o-upstream","weight":1}}})";
}

TEST_CASE("A backend created through the admin API survives a restart on a PostgreSQL store",
          "[postgres][integration]") {
  const std::string schema = FreshSchemaName();
  {
    RawPostgres raw(RequireTestPostgresUrl());
    REQUIRE(raw.ok());
    raw.Query("CREATE SCHEMA " + schema);
  }
  const std::string url = SchemaUrl(schema);
  const std::string master_key = NewMasterKeyBase64();
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "from the mock"));

  std::string id;
  {
    TestServer server(ServerProcessOptions{
        .env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken},
        .extra_args = {"--store", url},
        .master_key = master_key});
    httplib::Client client = server.Client();
    auto created = client.Post("/admin/backends", AdminHeaders(),
                               NewBackendBody("pg-backend", mock.base_url()), "application/json");
    REQUIRE(created);
    INFO(created->body);
    REQUIRE(created->status == 201);
    rapidjson::Document doc;
    doc.Parse(created->body.c_str());
    REQUIRE(doc.IsObject());
    REQUIRE(doc.HasMember("id"));
    id = doc["id"].GetString();
    // The server printed nothing of the store's password.
    CHECK(server.output().find(TestPostgresPassword()) == std::string::npos);
  }

  // The store holds the backend, its key only as ciphertext.
  {
    RawPostgres raw(RequireTestPostgresUrl());
    CHECK(raw.Value("SELECT name FROM " + schema + ".backends WHERE id = $1", {id}) ==
          "pg-backend");
    CHECK(raw.Value("SELECT count(*) FROM " + schema +
                    ".backends WHERE position('sk-postgres-test'::bytea in api_key_ciphertext) > 0") ==
          "0");
  }

  // Restarted, this time with the store from the environment.
  TestServer server(ServerProcessOptions{
      .env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken, "SWITCHBOARD_STORE=" + url},
      .master_key = master_key});
  httplib::Client client = server.Client();
  auto listed = client.Get("/admin/backends", AdminHeaders());
  REQUIRE(listed);
  INFO(listed->body);
  REQUIRE(listed->status == 200);
  CHECK(listed->body.find("\"pg-backend\"") != std::string::npos);
  CHECK(listed->body.find(id) != std::string::npos);

  auto answer = client.Post(kChatPath, ChatBody("gpt-4o"), "application/json");
  REQUIRE(answer);
  INFO(answer->body);
  CHECK(answer->status == 200);
  CHECK(answer->get_header_value("x-switchboard-backend") == "pg-backend");
  CHECK(answer->body.find("from the mock") != std::string::npos);
  REQUIRE(mock.request_count() == 1);
  // The decrypted key went upstream: the restarted server read the same
  // ciphertext and had the same master key.
  const RecordedRequest upstream = mock.requests().at(0);
  REQUIRE(upstream.header("Authorization") != nullptr);
  CHECK(*upstream.header("Authorization") == "Bearer sk-postgres-test-secret-key");
}

TEST_CASE("The server reports an unreachable PostgreSQL store without its password",
          "[postgres][integration]") {
  ServerProcess server(ServerProcessOptions{
      .extra_args = {"--store", "postgres://switchboard:pg-secret-pw@127.0.0.1:1/switchboard"}});
  CHECK_FALSE(server.ok());
  CHECK(server.exit_status().value_or(0) != 0);
  const std::string output = server.output();
  INFO(output);
  CHECK(output.find("pg-secret-pw") == std::string::npos);
  CHECK(output.find("postgres://switchboard:***@127.0.0.1:1/switchboard") != std::string::npos);
}

TEST_CASE("serve takes the PostgreSQL store from --store or SWITCHBOARD_STORE, and only that",
          "[postgres][cli]") {
  auto no_env = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  auto store_env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "SWITCHBOARD_STORE") return "postgresql://sb@db/env";
    return std::nullopt;
  };
  using server::Cli;
  Cli flag = server::ParseCommandLine({"serve", "--store", "postgres://sb@db/x"}, no_env);
  REQUIRE(flag.action == Cli::Action::kServe);
  CHECK(flag.options.store_url == "postgres://sb@db/x");
  Cli env = server::ParseCommandLine({"serve"}, store_env);
  REQUIRE(env.action == Cli::Action::kServe);
  CHECK(env.options.store_url == "postgresql://sb@db/env");
  Cli both = server::ParseCommandLine({"serve", "--store=postgres://sb@db/flag"}, store_env);
  CHECK(both.options.store_url == "postgres://sb@db/flag");
  Cli wrong = server::ParseCommandLine({"serve", "--store", "mysql://sb@db/x"}, no_env);
  CHECK(wrong.action == Cli::Action::kUsageError);
  CHECK_THAT(wrong.error, Catch::Contains("postgres://"));
  CHECK(server::ServeHelpText().find("--store URL") != std::string::npos);
}

TEST_CASE("The server refuses a PostgreSQL store when no master key is given",
          "[postgres][integration]") {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.store_url = SchemaUrl(FreshSchemaName());
  options.master_key_env = "SWITCHBOARD_TEST_UNSET_MASTER_KEY";
  server::Server server(options);
  const Status s = server.Start();
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(s.message(), Catch::Contains("master key"));
  CHECK_THAT(s.message(), !Catch::Contains(TestPostgresPassword()));
}

}  // namespace
}  // namespace switchboard::testing
