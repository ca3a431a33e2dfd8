// Client authentication end to end: SWITCHBOARD_CLIENT_KEYS set on the real
// server binary. Either header is accepted; nothing the client presents
// reaches the upstream.
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::vector<std::string> kClientKeys = {"sb-client-key-one", "sb-client-key-two"};

ServerProcessOptions WithClientKeys(const MockUpstream& mock) {
  ServerProcessOptions o;
  o.backends = {Backend("primary", mock.base_url(), "primary")};
  o.client_keys = kClientKeys;
  return o;
}

// No client credential of any kind among the upstream's headers.
void CheckNoClientKeyUpstream(const RecordedRequest& up) {
  for (const auto& [name, value] : up.headers) {
    INFO(name << ": " << value);
    CHECK(value.find("sb-client-key") == std::string::npos);
  }
  REQUIRE(up.header("authorization") != nullptr);
  CHECK(*up.header("authorization") == "Bearer sk-primary-key");
  CHECK(up.header("x-api-key") == nullptr);
}

TEST_CASE("With client keys configured a request without a key gets 401", "[auth]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(WithClientKeys(mock));

  auto res = server.Client().Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 401);
  CHECK(OpenAIErrorProblem(res->body) == "");
  CHECK(mock.request_count() == 0);
}

TEST_CASE("With client keys configured a wrong key gets 401, in either header", "[auth]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(WithClientKeys(mock));
  httplib::Client client = server.Client();

  for (const httplib::Headers& headers :
       {httplib::Headers{{"Authorization", "Bearer sb-client-key-three"}},
        httplib::Headers{{"x-api-key", "sb-client-key-on"}},
        httplib::Headers{{"Authorization", "sb-client-key-one"}},  // no Bearer
        httplib::Headers{{"Authorization", "Bearer "}}}) {
    INFO(headers.begin()->first << ": " << headers.begin()->second);
    auto res = client.Post("/v1/chat/completions", headers, ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    CHECK(res->status == 401);
    CHECK(OpenAIErrorProblem(res->body) == "");
  }
  CHECK(mock.request_count() == 0);
}

TEST_CASE("A client key as Authorization: Bearer is accepted and not forwarded", "[auth]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(WithClientKeys(mock));

  auto res =
      server.Client().Post("/v1/chat/completions", {{"Authorization", "Bearer sb-client-key-two"}},
                           ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "primary");
  REQUIRE(mock.request_count() == 1);
  CheckNoClientKeyUpstream(mock.requests()[0]);
}

TEST_CASE("A client key as x-api-key is accepted and not forwarded", "[auth]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(WithClientKeys(mock));

  auto res = server.Client().Post("/v1/chat/completions", {{"x-api-key", "sb-client-key-one"}},
                                  ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  REQUIRE(mock.request_count() == 1);
  CheckNoClientKeyUpstream(mock.requests()[0]);
}

TEST_CASE("A streamed request with a client key is accepted and the key not forwarded", "[auth]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b"}));
  TestServer server(WithClientKeys(mock));

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"),
                    {{"Authorization", "Bearer sb-client-key-one"}});
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(res.body.find("data: [DONE]") != std::string::npos);
  REQUIRE(mock.request_count() == 1);
  CheckNoClientKeyUpstream(mock.requests()[0]);
}

TEST_CASE("With client keys configured GET /v1/models needs a key too", "[auth]") {
  MockUpstream mock;
  TestServer server(WithClientKeys(mock));
  httplib::Client client = server.Client();

  auto anonymous = client.Get("/v1/models");
  REQUIRE(anonymous);
  CHECK(anonymous->status == 401);
  CHECK(OpenAIErrorProblem(anonymous->body) == "");

  auto with_key = client.Get("/v1/models", {{"x-api-key", "sb-client-key-two"}});
  REQUIRE(with_key);
  CHECK(with_key->status == 200);
  CHECK(with_key->body.find("\"gpt-4o\"") != std::string::npos);
}

TEST_CASE("With client keys configured /healthz still answers without one", "[auth]") {
  MockUpstream mock;
  TestServer server(WithClientKeys(mock));
  auto res = server.Client().Get("/healthz");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == R"({"status":"ok"})");
}

}  // namespace
}  // namespace switchboard::testing
