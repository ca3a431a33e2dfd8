// A client cannot steer the gateway: nothing a client puts in a request body
// or its headers changes which upstream host or path a request goes to, or
// which key it carries; and the admin API refuses base URLs that are not
// http or https. Each case asserts at the mock upstream what it received,
// and that a second "attacker" mock, named everywhere a client could name
// it, received nothing.
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

constexpr char kChatPath[] = "/v1/chat/completions";
constexpr char kAdminToken[] = "sbadm_steer_test_token_0123456789abcdef";
constexpr char kBackendKey[] = "sk-steer-backend-key-0001";

httplib::Headers AdminHeaders() { return {{"Authorization", std::string("Bearer ") + kAdminToken}}; }

// Everything a client could use to name another host or key: body fields
// that other gateways honour, and host-, path- and key-bearing headers.
std::string SteeringBody(const std::string& evil, bool stream) {
  return R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],)"
         R"("api_base":)" + JsonString(evil) + R"(,"base_url":)" + JsonString(evil) +
         R"(,"api_base_url":)" + JsonString(evil) + R"(,"url":)" + JsonString(evil) +
         R"(,"api_key":"sk-client-chosen","organization":"org-client","api_version":"x")" +
         (stream ? R"(,"stream":true)" : "") + "}";
}

httplib::Headers SteeringHeaders(const MockUpstream& evil) {
  const std::string host = "127.0.0.1:" + std::to_string(evil.port());
  return {{"Host", host},
          {"X-Forwarded-Host", host},
          {"X-Forwarded-Proto", "http"},
          {"X-Forwarded-For", "127.0.0.1"},
          {"Forwarded", "host=" + host + ";proto=http"},
          {"X-Original-URL", evil.base_url() + "/chat/completions"},
          {"X-Rewrite-URL", "/v1/admin"},
          {"X-Host", host},
          {"Authorization", "Bearer sk-client-chosen"},
          {"x-api-key", "sk-client-chosen"},
          {"api-key", "sk-client-chosen"},
          {"OpenAI-Organization", "org-client"},
          {"OpenAI-Project", "proj-client"},
          {"Cookie", "session=client"}};
}

// The "model" of a JSON body, embedded NULs included ("" when absent).
std::string ModelOf(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return "";
  auto m = doc.FindMember("model");
  if (m == doc.MemberEnd() || !m->value.IsString()) return "";
  return std::string(m->value.GetString(), m->value.GetStringLength());
}

// The request the real backend received carries the backend's key and
// nothing of the client's credentials or host names.
void CheckUpstreamRequest(const RecordedRequest& up, const MockUpstream& mock) {
  CHECK(up.path == kChatPath);
  REQUIRE(up.header("authorization") != nullptr);
  CHECK(*up.header("authorization") == std::string("Bearer ") + kBackendKey);
  REQUIRE(up.header("host") != nullptr);
  CHECK(*up.header("host") == "127.0.0.1:" + std::to_string(mock.port()));
  for (const char* name : {"x-api-key", "api-key", "openai-organization", "openai-project",
                           "cookie", "x-forwarded-host", "forwarded", "x-original-url",
                           "x-rewrite-url", "x-host"}) {
    INFO(name);
    CHECK(up.header(name) == nullptr);
  }
  for (const auto& [name, value] : up.headers) {
    INFO(name << ": " << value);
    CHECK(value.find("sk-client-chosen") == std::string::npos);
    CHECK(value.find("org-client") == std::string::npos);
  }
}

TEST_CASE("Client body fields and headers naming another host or key never change where a "
          "request goes or which key it carries (pass: the backend's mock gets the backend's "
          "key, the attacker's mock gets nothing)",
          "[steer]") {
  MockUpstream mock, evil;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  evil.SetDefault(kChatPath, ChatCompletionReply("evil", "steered"));
  BackendSpec b = Backend("primary", mock.base_url(), "primary");
  b.api_key = kBackendKey;
  TestServer server({b});

  auto res = server.Client().Post("/v1/chat/completions", SteeringHeaders(evil),
                                  SteeringBody(evil.base_url(), /*stream=*/false),
                                  "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body.find("steered") == std::string::npos);
  REQUIRE(mock.request_count() == 1);
  CheckUpstreamRequest(mock.requests()[0], mock);
  CHECK(evil.request_count() == 0);
}

TEST_CASE("A streamed request cannot be steered by body fields or headers either (pass: the "
          "stream comes from the backend's mock, with the backend's key)",
          "[steer]") {
  MockUpstream mock, evil;
  mock.SetDefault(kChatPath, ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b"}));
  evil.SetDefault(kChatPath, ChatCompletionStreamReply("evil", {"steered"}));
  BackendSpec b = Backend("primary", mock.base_url(), "primary");
  b.api_key = kBackendKey;
  TestServer server({b});

  StreamedResponse res = PostStreaming(server.port(), "/v1/chat/completions",
                                       SteeringBody(evil.base_url(), /*stream=*/true),
                                       SteeringHeaders(evil));
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(res.body.find("steered") == std::string::npos);
  CHECK(res.body.find("data: [DONE]") != std::string::npos);
  REQUIRE(mock.request_count() == 1);
  CheckUpstreamRequest(mock.requests()[0], mock);
  CHECK(evil.request_count() == 0);
}

TEST_CASE("Model names with #, ?, @, /, .., %2F or CR/LF never change the upstream host or "
          "path (pass: every request reaches /v1/chat/completions on the backend's mock, the "
          "model only in the JSON body)",
          "[steer]") {
  MockUpstream mock, evil;
  mock.SetDefault(kChatPath, ChatCompletionReply("any", "ok"));
  evil.SetDefault(kChatPath, ChatCompletionReply("evil", "steered"));
  BackendSpec b = Backend("primary", mock.base_url(), "primary");
  b.api_key = kBackendKey;
  b.models = {{"*", "*"}};  // pass-through: the client's model goes upstream as it is
  TestServer server({b});
  const std::string evil_host = "127.0.0.1:" + std::to_string(evil.port());

  const std::vector<std::string> models = {
      "gpt-4o#fragment",
      "gpt-4o?x=1&api_base=http://" + evil_host,
      "user@" + evil_host,
      "@" + evil_host + "/v1/chat/completions",
      "../../admin/backends",
      "gpt-4o/../../v2/evil",
      "/" + evil_host,
      "//" + evil_host + "/v1",
      "gpt-4o%2F..%2F..%2Fadmin",
      "%2e%2e%2f%2e%2e%2f",
      "gpt-4o\r\nHost: " + evil_host,
      "gpt-4o\r\n\r\nPOST /v1/chat/completions HTTP/1.1\r\nHost: " + evil_host,
      "http://" + evil_host + "/v1",
      "gpt-4o\\..\\..\\admin",
      std::string("gpt-4o\0evil", 11),
  };
  httplib::Client client = server.Client();
  size_t expected = 0;
  for (const std::string& model : models) {
    INFO("model: " << JsonString(model));
    const std::string body =
        R"({"model":)" + JsonString(model) + R"(,"messages":[{"role":"user","content":"hi"}]})";
    auto res = client.Post("/v1/chat/completions", body, "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    for (const auto& [name, value] : res->headers) {
      CHECK(value.find('\r') == std::string::npos);
      CHECK(value.find('\n') == std::string::npos);
    }
    ++expected;
    REQUIRE(mock.request_count() == expected);
    const RecordedRequest up = mock.requests().back();
    CHECK(up.path == kChatPath);
    REQUIRE(up.header("authorization") != nullptr);
    CHECK(*up.header("authorization") == std::string("Bearer ") + kBackendKey);
    CHECK(*up.header("host") == "127.0.0.1:" + std::to_string(mock.port()));
    CHECK(ModelOf(up.body) == model);
  }
  CHECK(evil.request_count() == 0);
}

TEST_CASE("Odd model names that no backend serves are answered 404 without any upstream request",
          "[steer]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  httplib::Client client = server.Client();
  for (const std::string model : {"gpt-4o#x", "gpt-4o?x", "gpt-4o/..", "../gpt-4o", "gpt-4o%2F",
                                  "gpt-4o\r\nX-Injected: 1", "@127.0.0.1"}) {
    INFO("model: " << JsonString(model));
    auto res = client.Post("/v1/chat/completions",
                           R"({"model":)" + JsonString(model) + R"(,"messages":[]})",
                           "application/json");
    REQUIRE(res);
    CHECK(res->status == 404);
    CHECK(OpenAIErrorProblem(res->body, "model_not_found") == "");
    CHECK_FALSE(res->has_header("X-Injected"));
  }
  CHECK(mock.request_count() == 0);
}

// The stored api_base_url of every backend, by name, read through the admin API.
std::map<std::string, std::string> StoredBaseUrls(httplib::Client& client) {
  std::map<std::string, std::string> out;
  auto res = client.Get("/admin/backends", AdminHeaders());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  rapidjson::Document doc;
  doc.Parse(res->body.c_str(), res->body.size());
  REQUIRE(!doc.HasParseError());
  for (const auto& b : doc["data"].GetArray()) {
    out[b["name"].GetString()] = b["api_base_url"].GetString();
  }
  return out;
}

TEST_CASE("Admin api_base_url schemes other than http and https are refused with 422 on create "
          "and on update, and change nothing (pass: 422 naming api_base_url, the stored "
          "backends and the routing unchanged)",
          "[steer]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  ServerProcessOptions options;
  options.backends = {Backend("primary", mock.base_url(), "primary")};
  options.env = {std::string("SWITCHBOARD_ADMIN_TOKEN=") + kAdminToken};
  TestServer server(std::move(options));
  httplib::Client client = server.Client();
  const auto before = StoredBaseUrls(client);
  REQUIRE(before.size() == 1);
  const std::string id = [&] {
    auto res = client.Get("/admin/backends", AdminHeaders());
    REQUIRE(res);
    rapidjson::Document doc;
    doc.Parse(res->body.c_str(), res->body.size());
    return std::string(doc["data"][0]["id"].GetString());
  }();

  const std::vector<std::string> urls = {
      "file:///etc/passwd",        "gopher://127.0.0.1:70/_x", "dict://127.0.0.1:11211/stat",
      "ftp://127.0.0.1/v1",        "ldap://127.0.0.1/dc=x",    "smb://127.0.0.1/share",
      "telnet://127.0.0.1:23",     "ws://127.0.0.1/v1",        "wss://127.0.0.1/v1",
      "FILE:///etc/shadow",        "javascript:alert(1)",      "data:text/plain,hi",
      "127.0.0.1:8080/v1",         "//127.0.0.1/v1",           " http://127.0.0.1/v1",
      "http://127.0.0.1/v1\r\nx:", "http:/127.0.0.1/v1",       "sftp://127.0.0.1/v1",
  };
  for (const std::string& url : urls) {
    INFO("api_base_url: " << JsonString(url));
    auto created = client.Post(
        "/admin/backends", AdminHeaders(),
        R"({"name":"steered","api_base_url":)" + JsonString(url) +
            R"(,"api_key":"sk-x","model_mappings":{"gpt-4o":{"upstream_model":"gpt-4o"}}})",
        "application/json");
    REQUIRE(created);
    CHECK(created->status == 422);
    CHECK(OpenAIErrorProblem(created->body) == "");
    CHECK(created->body.find("\"param\":\"api_base_url\"") != std::string::npos);

    auto patched = client.Patch("/admin/backends/" + id, AdminHeaders(),
                                R"({"api_base_url":)" + JsonString(url) + "}", "application/json");
    REQUIRE(patched);
    CHECK(patched->status == 422);
    CHECK(patched->body.find("\"param\":\"api_base_url\"") != std::string::npos);
  }
  CHECK(StoredBaseUrls(client) == before);

  // And requests still go where they went.
  auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(mock.request_count() == 1);
}

}  // namespace
}  // namespace switchboard::testing
