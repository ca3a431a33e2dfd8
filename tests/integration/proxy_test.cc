// The proxy surface end to end: the real server binary in front of mock
// upstreams. What is forwarded, what never is, the response headers, the
// listing and health endpoints, and the requests refused before routing.
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kUpstreamChat = "/v1/chat/completions";

TEST_CASE("A chat completion reaches the upstream with the backend's model and key", "[proxy]") {
  MockUpstream mock;
  mock.SetDefault(kUpstreamChat, ChatCompletionReply("gpt-4o-upstream", "hello there"));
  BackendSpec b = Backend("primary", mock.base_url(), "primary");
  b.api_key = "sk-upstream-secret-1234";
  TestServer server({b});

  const std::string body =
      R"({"model":"gpt-4o","temperature":0.25,"user":"u-1","messages":[{"role":"user","content":"hi"}]})";
  auto res = server.Client().Post("/v1/chat/completions", body, "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == ChatCompletionJson("gpt-4o-upstream", "hello there"));
  CHECK(res->get_header_value("Content-Type").rfind("application/json", 0) == 0);

  REQUIRE(mock.request_count() == 1);
  const RecordedRequest up = mock.requests()[0];
  CHECK(up.method == "POST");
  CHECK(up.path == "/v1/chat/completions");
  REQUIRE(up.header("authorization") != nullptr);
  CHECK(*up.header("authorization") == "Bearer sk-upstream-secret-1234");
  // The client's body with only the model replaced.
  CHECK(SameJson(
      up.body,
      R"({"model":"gpt-4o-upstream","temperature":0.25,"user":"u-1","messages":[{"role":"user","content":"hi"}]})"));
}

TEST_CASE("A completion is forwarded to the backend's /completions", "[proxy]") {
  MockUpstream mock;
  const std::string answer =
      R"({"id":"cmpl-1","object":"text_completion","model":"davinci-up","choices":[{"text":"ok","index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})";
  mock.SetDefault("/v1/completions", JsonReply(answer));
  BackendSpec b = Backend("primary", mock.base_url(), "primary");
  b.models = {{"davinci", "davinci-up"}};
  TestServer server({b});

  auto res = server.Client().Post("/v1/completions",
                                  R"({"model":"davinci","prompt":"say ok","max_tokens":3})",
                                  "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == answer);
  REQUIRE(mock.request_count() == 1);
  const RecordedRequest up = mock.requests()[0];
  CHECK(up.path == "/v1/completions");
  CHECK(SameJson(up.body, R"({"model":"davinci-up","prompt":"say ok","max_tokens":3})"));
  REQUIRE(up.header("authorization") != nullptr);
  CHECK(*up.header("authorization") == "Bearer sk-primary-key");
}

TEST_CASE("An embeddings request is forwarded to the backend's /embeddings", "[proxy]") {
  MockUpstream mock;
  const std::string answer =
      R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5]}],"model":"emb-up","usage":{"prompt_tokens":2,"total_tokens":2}})";
  mock.SetDefault("/v1/embeddings", JsonReply(answer));
  BackendSpec b = Backend("primary", mock.base_url(), "primary");
  b.models = {{"text-embedding-3-small", "emb-up"}};
  TestServer server({b});

  auto res = server.Client().Post("/v1/embeddings",
                                  R"({"model":"text-embedding-3-small","input":["a","b"]})",
                                  "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == answer);
  REQUIRE(mock.request_count() == 1);
  const RecordedRequest up = mock.requests()[0];
  CHECK(up.path == "/v1/embeddings");
  CHECK(SameJson(up.body, R"({"model":"emb-up","input":["a","b"]})"));
}

TEST_CASE("The client's Authorization, x-api-key and cookies never reach the upstream", "[proxy]") {
  MockUpstream mock;
  mock.SetDefault(kUpstreamChat, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  httplib::Headers headers = {{"Authorization", "Bearer sk-client-should-not-leak"},
                              {"x-api-key", "sk-client-x-api-key"},
                              {"Cookie", "session=client-cookie"},
                              {"OpenAI-Beta", "assistants=v2"}};
  auto res =
      server.Client().Post("/v1/chat/completions", headers, ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  REQUIRE(mock.request_count() == 1);
  const RecordedRequest up = mock.requests()[0];
  int authorization_headers = 0;
  for (const auto& [name, value] : up.headers) {
    INFO(name << ": " << value);
    CHECK(value.find("sk-client") == std::string::npos);
    CHECK(value.find("client-cookie") == std::string::npos);
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "authorization") ++authorization_headers;
    CHECK(lower != "x-api-key");
    CHECK(lower != "cookie");
  }
  CHECK(authorization_headers == 1);
  REQUIRE(up.header("authorization") != nullptr);
  CHECK(*up.header("authorization") == "Bearer sk-primary-key");
  // The allowlisted header does pass.
  REQUIRE(up.header("openai-beta") != nullptr);
  CHECK(*up.header("openai-beta") == "assistants=v2");
}

TEST_CASE("Responses name the backend, the attempts and the request id", "[proxy]") {
  MockUpstream mock;
  mock.SetDefault(kUpstreamChat, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server({Backend("primary-one", mock.base_url(), "primary")});
  httplib::Client client = server.Client();

  auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "primary-one");
  CHECK(res->get_header_value("x-switchboard-attempts") == "1");
  const std::string generated = res->get_header_value("x-request-id");
  CHECK(generated.rfind("req_", 0) == 0);
  CHECK(generated.size() > 8);

  // A sane id from the client is echoed, and passed upstream.
  auto echoed = client.Post("/v1/chat/completions", {{"x-request-id", "client-req-42"}},
                            ChatBody("gpt-4o"), "application/json");
  REQUIRE(echoed);
  CHECK(echoed->get_header_value("x-request-id") == "client-req-42");
  REQUIRE(mock.request_count() == 2);
  const RecordedRequest up = mock.requests()[1];
  REQUIRE(up.header("x-request-id") != nullptr);
  CHECK(*up.header("x-request-id") == "client-req-42");
}

TEST_CASE("GET /v1/models lists the canonical models, not the upstream ids", "[proxy]") {
  MockUpstream mock;
  BackendSpec a = Backend("primary", mock.base_url(), "primary");
  a.models = {{"gpt-4o", "gpt-4o-2024-08-06"}, {"gpt-4o-mini", "mini-up"}};
  BackendSpec b = Backend("fallback", mock.base_url(), "fallback");
  b.models = {{"gpt-4o", "other-up"}, {"text-embedding-3-small", "emb-up"}};
  TestServer server({a, b});

  auto res = server.Client().Get("/v1/models");
  REQUIRE(res);
  CHECK(res->status == 200);
  rapidjson::Document doc;
  doc.Parse(res->body.c_str());
  INFO(res->body);
  REQUIRE(!doc.HasParseError());
  REQUIRE(doc.IsObject());
  CHECK(JsonStringField(res->body, "object") == "list");
  REQUIRE(doc.HasMember("data"));
  REQUIRE(doc["data"].IsArray());
  std::set<std::string> ids;
  for (const auto& m : doc["data"].GetArray()) {
    REQUIRE(m.IsObject());
    REQUIRE(m.HasMember("id"));
    ids.insert(m["id"].GetString());
    REQUIRE(m.HasMember("object"));
    CHECK(std::string(m["object"].GetString()) == "model");
  }
  CHECK(ids == std::set<std::string>{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"});
  CHECK(mock.request_count() == 0);
}

TEST_CASE("/healthz answers status ok", "[proxy]") {
  TestServer server(ServerProcessOptions{});
  auto res = server.Client().Get("/healthz");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == R"({"status":"ok"})");
}

TEST_CASE("/metrics counts proxied requests in switchboard_requests_total", "[proxy]") {
  MockUpstream mock;
  mock.SetDefault(kUpstreamChat, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  httplib::Client client = server.Client();
  for (int i = 0; i < 3; ++i) {
    auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
  }

  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  INFO(metrics->body);
  CHECK(metrics->body.find("# TYPE switchboard_requests_total counter") != std::string::npos);
  CHECK(metrics->body.find(
            R"(switchboard_requests_total{model="gpt-4o",backend="primary",status="200"} 3)") !=
        std::string::npos);
}

// ---- Refused before routing: the upstream never hears of it ----

TEST_CASE("A body that is not JSON is refused with 400 in OpenAI's error shape", "[proxy]") {
  MockUpstream mock;
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  auto res =
      server.Client().Post("/v1/chat/completions", R"({"model":"gpt-4o",)", "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(OpenAIErrorProblem(res->body) == "");
  CHECK(res->get_header_value("x-request-id") != "");
  CHECK(mock.request_count() == 0);
}

TEST_CASE("A body without a string model is refused with 400", "[proxy]") {
  MockUpstream mock;
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  httplib::Client client = server.Client();
  for (const std::string body : {R"({"messages":[]})", R"({"model":42,"messages":[]})",
                                 R"({"model":"","messages":[]})", R"(["gpt-4o"])"}) {
    INFO(body);
    auto res = client.Post("/v1/chat/completions", body, "application/json");
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(OpenAIErrorProblem(res->body) == "");
  }
  CHECK(mock.request_count() == 0);
}

TEST_CASE("An unknown model is refused with 404 model_not_found", "[proxy]") {
  MockUpstream mock;
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  auto res =
      server.Client().Post("/v1/chat/completions", ChatBody("no-such-model"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 404);
  CHECK(OpenAIErrorProblem(res->body, "model_not_found") == "");
  CHECK(mock.request_count() == 0);
}

TEST_CASE("A body over 10 MiB announced by Content-Length is refused with 413", "[proxy]") {
  MockUpstream mock;
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  constexpr size_t kBody = 11u << 20;
  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  const bool answered = conn.SendBodyUntilAnswered(
      RawPostHead("/v1/chat/completions", "", "Content-Length: " + std::to_string(kBody) + "\r\n"),
      kBody, /*chunked=*/false);
  INFO(conn.received().substr(0, 2000));
  REQUIRE(answered);
  CHECK(RawConnection::ParseStatus(conn.received()) == 413);
  CHECK(OpenAIErrorProblem(RawConnection::ParseBody(conn.received())) == "");
  // Refused from the header: the server did not wait for the body.
  CHECK(conn.body_bytes_sent() < kBody);
  CHECK(mock.request_count() == 0);
}

TEST_CASE("A chunked body over 10 MiB is refused with 413", "[proxy]") {
  MockUpstream mock;
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  constexpr size_t kBody = 11u << 20;
  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  const bool answered = conn.SendBodyUntilAnswered(
      RawPostHead("/v1/chat/completions", "", "Transfer-Encoding: chunked\r\n"), kBody,
      /*chunked=*/true);
  INFO(conn.received().substr(0, 2000));
  REQUIRE(answered);
  CHECK(RawConnection::ParseStatus(conn.received()) == 413);
  CHECK(OpenAIErrorProblem(RawConnection::ParseBody(conn.received())) == "");
  CHECK(mock.request_count() == 0);
}

TEST_CASE("A body just under the limit is still proxied", "[proxy]") {
  MockUpstream mock;
  mock.SetDefault(kUpstreamChat, ChatCompletionReply("gpt-4o-upstream", "big"));
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  const std::string body = ChatBody("gpt-4o", std::string(9u << 20, 'a'));
  auto res = server.Client().Post("/v1/chat/completions", body, "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  REQUIRE(mock.request_count() == 1);
  CHECK(mock.requests()[0].body.size() >= (9u << 20));
}

TEST_CASE("An unknown path gets 404 and a wrong method 405, in OpenAI's error shape", "[proxy]") {
  TestServer server(ServerProcessOptions{});
  httplib::Client client = server.Client();

  auto unknown = client.Get("/v1/no-such-endpoint");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  CHECK(OpenAIErrorProblem(unknown->body) == "");

  auto wrong_method = client.Get("/v1/chat/completions");
  REQUIRE(wrong_method);
  CHECK(wrong_method->status == 405);
  CHECK(OpenAIErrorProblem(wrong_method->body) == "");
  CHECK(wrong_method->get_header_value("Allow") == "POST");
}

// BUG (server/http_server.cc ReadBody): a request with neither Content-Length
// nor Transfer-Encoding has no body (RFC 9112 6.3), but the body is read
// until the client closes or the 30 s read timeout passes.
TEST_CASE("A POST without a body is answered at once", "[proxy]") {
  MockUpstream mock;
  TestServer server({Backend("primary", mock.base_url(), "primary")});
  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.Send("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const SteadyTime sent = SteadyClock::now();
  const bool answered = conn.ReadUntil(
      [](const std::string& raw) { return RawConnection::ResponseComplete(raw); }, seconds(5));
  INFO("answered after " << MillisBetween(sent, SteadyClock::now()) << " ms");
  REQUIRE(answered);
  CHECK(RawConnection::ParseStatus(conn.received()) / 100 == 4);
  CHECK(OpenAIErrorProblem(RawConnection::ParseBody(conn.received())) == "");
  CHECK(mock.request_count() == 0);
}

// "" when `body` is Anthropic's error shape
// {"type":"error","error":{"type":"...","message":"..."}}; else what is wrong.
std::string AnthropicErrorProblem(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return "not a JSON object: " + body;
  if (JsonStringField(body, "type") != "error") return "type is not \"error\": " + body;
  auto e = doc.FindMember("error");
  if (e == doc.MemberEnd() || !e->value.IsObject()) return "no error object: " + body;
  auto type = e->value.FindMember("type");
  auto message = e->value.FindMember("message");
  if (type == e->value.MemberEnd() || !type->value.IsString() || message == e->value.MemberEnd() ||
      !message->value.IsString()) {
    return "error.type or error.message missing: " + body;
  }
  return "";
}

// BUG (lib/src/proxy.cc Proxy::Handle): the errors the proxy engine itself
// produces (400 invalid JSON / no model, 404 model_not_found, 429, 502, 504)
// are always OpenAI-shaped, also for /v1/messages; the server's own errors on
// that path (401, 413) are Anthropic-shaped, as the contract asks.
TEST_CASE("Errors on /v1/messages use Anthropic's error shape", "[proxy]") {
  MockUpstream mock;
  BackendSpec b = Backend("claude", mock.base_url(), "primary");
  b.api = "anthropic";
  b.models = {{"claude-x", "claude-x-upstream"}};
  TestServer server({b});
  httplib::Client client = server.Client();

  for (const std::string& body :
       {std::string(R"({"model":)"), std::string(R"({"max_tokens":5,"messages":[]})"),
        std::string(R"({"model":"no-such-model","max_tokens":5,"messages":[]})")}) {
    INFO(body);
    auto res = client.Post("/v1/messages", body, "application/json");
    REQUIRE(res);
    CHECK(res->status / 100 == 4);
    CHECK(AnthropicErrorProblem(res->body) == "");
  }
  CHECK(mock.request_count() == 0);
}

}  // namespace
}  // namespace switchboard::testing
