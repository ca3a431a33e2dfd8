// The proxy engine against a scripted upstream: forwarding, failover,
// errors, streaming, usage records. No network.
#include <catch2/catch.hpp>

#include "support/fake_upstream.h"
#include "support/makers.h"
#include "switchboard/proxy.h"

namespace switchboard {
namespace {

using testing::FakeReply;
using testing::FakeUpstream;
using testing::JsonReply;
using testing::SseReply;

constexpr char kChatBody[] =
    R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.5,"api_base":"http://evil.test","base_url":"http://evil.test","api_key":"sk-client"})";

std::string Completion(int prompt, int completion) {
  return R"({"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-upstream","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":)" +
         std::to_string(prompt) + R"(,"completion_tokens":)" + std::to_string(completion) + "}}";
}

std::string Chunk(const std::string& content) {
  return "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" +
         content + "\"}}]}\n\n";
}

const std::string* Header(const Headers& headers, std::string_view name) {
  return FindHeader(headers, name);
}

struct Fixture {
  ManualClock clock;
  std::unique_ptr<Storage> storage = NewMemoryStorage();
  StorageWriter writer{*storage};
  Router router{clock, &writer};
  FakeUpstream upstream;
  std::unique_ptr<KeyCipher> cipher;
  Metrics metrics;
  std::unique_ptr<Proxy> proxy;

  explicit Fixture(std::vector<std::string> names = {"a", "b"}, Config config = {}) {
    auto key = MasterKey::Generate();
    REQUIRE(key.ok());
    auto c = KeyCipher::Create(std::move(*key));
    REQUIRE(c.ok());
    cipher = std::move(*c);
    std::vector<Backend> backends;
    for (const std::string& name : names) {
      Backend b = testing::MakeBackend(name, name == "b" || name == "c" ? "fallback" : "primary");
      b.api_base_url = "http://" + name + ".test/v1/";
      b.api_key_ciphertext = *cipher->Encrypt("sk-secret-" + name, b.id);
      backends.push_back(b);
    }
    REQUIRE(router.Update(backends, config).ok());
    proxy = std::make_unique<Proxy>(router, upstream, cipher.get(), &writer, clock, ProxyOptions{},
                                    &metrics);
  }

  ProxyResponse Chat(std::string body = kChatBody, Headers headers = {}) {
    ProxyRequest r;
    r.endpoint = "/chat/completions";
    r.body = std::move(body);
    r.client_headers = std::move(headers);
    return proxy->Handle(std::move(r));
  }

  std::vector<UsageRecord> Usage() {
    REQUIRE(writer.Flush().ok());
    auto page = storage->ListUsage({.limit = 100});
    REQUIRE(page.ok());
    return page->records;
  }
};

TEST_CASE("Proxy forwards a chat request with the upstream model and the backend's key",
          "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {JsonReply(200, Completion(11, 7))});
  ProxyResponse r = f.Chat(kChatBody, {{"Authorization", "Bearer client-key"},
                                       {"Cookie", "session=1"},
                                       {"Host", "evil.test"},
                                       {"OpenAI-Beta", "assistants=v2"}});
  CHECK(r.status == 200);
  CHECK(r.body == Completion(11, 7));
  CHECK(*Header(r.headers, "x-switchboard-backend") == "a");
  CHECK(*Header(r.headers, "x-switchboard-attempts") == "1");
  CHECK(Header(r.headers, "x-request-id")->rfind("req_", 0) == 0);

  auto requests = f.upstream.requests();
  REQUIRE(requests.size() == 1);
  const UpstreamRequest& up = requests[0];
  CHECK(up.url == "http://a.test/v1/chat/completions");
  CHECK(*Header(up.headers, "authorization") == "Bearer sk-secret-a");
  CHECK(*Header(up.headers, "openai-beta") == "assistants=v2");
  CHECK(Header(up.headers, "cookie") == nullptr);
  CHECK(Header(up.headers, "host") == nullptr);
  // Only the model changed; the client's other fields stay, and steer nothing.
  CHECK(up.body.find(R"("model":"gpt-4o-upstream")") != std::string::npos);
  CHECK(up.body.find(R"("temperature":0.5)") != std::string::npos);
  CHECK(up.body.find(R"("api_base":"http://evil.test")") != std::string::npos);
  CHECK(up.body.find("client-key") == std::string::npos);

  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK(usage[0].status == 200);
  CHECK(usage[0].backend_name == "a");
  CHECK(usage[0].prompt_tokens == 11);
  CHECK(usage[0].completion_tokens == 7);
  CHECK(usage[0].endpoint == "/v1/chat/completions");
  CHECK(usage[0].trace.find(R"("decision":"tried","status":200)") != std::string::npos);
}

TEST_CASE("Proxy fails over on a 429 and says which backend answered", "[proxy]") {
  Fixture f;
  FakeReply limited = JsonReply(429, R"({"error":{"message":"slow down"}})");
  limited.headers.emplace_back("retry-after", "7");
  f.upstream.Script("http://a.test", {limited});
  f.upstream.Script("http://b.test", {JsonReply(200, Completion(1, 1))});
  ProxyResponse r = f.Chat();
  CHECK(r.status == 200);
  CHECK(*Header(r.headers, "x-switchboard-backend") == "b");
  CHECK(*Header(r.headers, "x-switchboard-attempts") == "2");
  CHECK(f.router.LiveState("bkd_a")->state.cooldown_until == f.clock.WallNow() + std::chrono::seconds(7));
}

TEST_CASE("Proxy passes a client error through without retrying", "[proxy]") {
  Fixture f;
  const std::string error = R"({"error":{"message":"bad messages","type":"invalid_request_error"}})";
  f.upstream.Script("http://a.test", {JsonReply(400, error)});
  ProxyResponse r = f.Chat();
  CHECK(r.status == 400);
  CHECK(r.body == error);
  CHECK(f.upstream.requests().size() == 1);
}

TEST_CASE("Proxy answers 502 naming every failed attempt", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {JsonReply(503, "{}")});
  f.upstream.Script("http://b.test", {testing::ErrorReply(TransportError::kConnect)});
  ProxyResponse r = f.Chat();
  CHECK(r.status == 502);
  CHECK(r.body.find("upstream_error") != std::string::npos);
  CHECK(r.body.find("a: 503") != std::string::npos);
  CHECK(r.body.find("b: connect") != std::string::npos);
}

TEST_CASE("Proxy answers 504 when every attempt timed out", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {testing::ErrorReply(TransportError::kTimeout)});
  f.upstream.Script("http://b.test", {testing::ErrorReply(TransportError::kTimeout)});
  ProxyResponse r = f.Chat();
  CHECK(r.status == 504);
  CHECK(r.body.find("upstream_timeout") != std::string::npos);
}

TEST_CASE("Proxy answers 429 with Retry-After when every backend is rate limited", "[proxy]") {
  Fixture f;
  FakeReply limited = JsonReply(429, "{}");
  limited.headers.emplace_back("retry-after", "30");
  f.upstream.Script("http://a.test", {limited});
  f.upstream.Script("http://b.test", {limited});
  ProxyResponse first = f.Chat();
  CHECK(first.status == 429);
  CHECK(*Header(first.headers, "retry-after") == "30");
  ProxyResponse second = f.Chat();  // nothing left to try at all now
  CHECK(second.status == 429);
  CHECK(second.body.find("rate_limit_exceeded") != std::string::npos);
  CHECK(f.upstream.requests().size() == 2);
}

TEST_CASE("Proxy refuses bad requests in OpenAI's error shape", "[proxy]") {
  Fixture f;
  ProxyResponse not_json = f.Chat("{not json");
  CHECK(not_json.status == 400);
  CHECK(not_json.body.find(R"("type":"invalid_request_error")") != std::string::npos);
  ProxyResponse no_model = f.Chat(R"({"messages":[]})");
  CHECK(no_model.status == 400);
  CHECK(no_model.body.find(R"("param":"model")") != std::string::npos);
  ProxyResponse unknown = f.Chat(R"({"model":"llama-3"})");
  CHECK(unknown.status == 404);
  CHECK(unknown.body.find(R"("code":"model_not_found")") != std::string::npos);
  ProxyResponse huge = f.Chat(R"({"model":"gpt-4o","x":")" + std::string(11 << 20, 'x') + "\"}");
  CHECK(huge.status == 413);
  CHECK(f.upstream.requests().empty());
  CHECK(f.Usage().size() == 4);
}

TEST_CASE("Proxy refuses a body naming the model or the stream mode twice", "[proxy]") {
  // Parsers disagree on which duplicate wins: the upstream could otherwise
  // read a model other than the one the request was routed and mapped on.
  Fixture f;
  ProxyResponse two_models =
      f.Chat(R"({"model":"gpt-4o","messages":[],"model":"gpt-4-expensive"})");
  CHECK(two_models.status == 400);
  CHECK(two_models.body.find(R"("param":"model")") != std::string::npos);
  ProxyResponse two_streams = f.Chat(R"({"model":"gpt-4o","stream":false,"stream":true})");
  CHECK(two_streams.status == 400);
  CHECK(two_streams.body.find(R"("param":"stream")") != std::string::npos);
  CHECK(f.upstream.requests().empty());
}

TEST_CASE("Proxy changes only the model's bytes of the client's body", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {JsonReply(200, Completion(1, 1))});
  const std::string body =
      "{ \"messages\" : [{\"role\":\"user\",\"content\":\"{\\\"model\\\":1}\"}],\n"
      "  \"model\" :\t\"gpt-4o\" , \"metadata\": {\"model\": \"x\"}, \"n\": 1e0 }";
  CHECK(f.Chat(body).status == 200);
  REQUIRE(f.upstream.requests().size() == 1);
  CHECK(f.upstream.requests()[0].body ==
        "{ \"messages\" : [{\"role\":\"user\",\"content\":\"{\\\"model\\\":1}\"}],\n"
        "  \"model\" :\t\"gpt-4o-upstream\" , \"metadata\": {\"model\": \"x\"}, \"n\": 1e0 }");

  // An escaped key spelling "model" is still rewritten (by re-serializing).
  f.upstream.Script("http://b.test", {JsonReply(200, Completion(1, 1))});
  f.upstream.Script("http://a.test", {JsonReply(200, Completion(1, 1))});
  CHECK(f.Chat(R"({"mod\u0065l":"gpt-4o","messages":[]})").status == 200);
  REQUIRE(f.upstream.requests().size() == 2);
  CHECK(f.upstream.requests()[1].body.find(R"("model":"gpt-4o-upstream")") != std::string::npos);
}

TEST_CASE("Proxy streams events as they arrive and records the final usage", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test",
                    {SseReply({Chunk("Hel"), Chunk("lo"),
                               "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
                               "data: [DONE]\n\n"})});
  ProxyResponse r = f.Chat(R"({"model":"gpt-4o","stream":true,"messages":[]})");
  REQUIRE(r.status == 200);
  REQUIRE(r.stream != nullptr);
  CHECK(*Header(r.headers, "content-type") == "text/event-stream");
  std::vector<std::string> pieces;
  std::string chunk;
  while (r.stream->Next(&chunk)) {
    pieces.push_back(chunk);
    chunk.clear();
  }
  REQUIRE(pieces.size() == 4);  // one upstream read, one event, forwarded at once
  CHECK(pieces[0] == Chunk("Hel"));
  CHECK(pieces[3] == "data: [DONE]\n\n");
  r.stream.reset();
  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK(usage[0].stream);
  CHECK(usage[0].status == 200);
  CHECK(usage[0].prompt_tokens == 3);
  CHECK(usage[0].completion_tokens == 2);
  CHECK(usage[0].error.empty());
}

TEST_CASE("Proxy reassembles SSE events split across reads", "[proxy]") {
  Fixture f;
  const std::string all = Chunk("a") + Chunk("b") + "data: [DONE]\n\n";
  std::vector<std::string> bytes;
  for (char c : all) bytes.emplace_back(1, c);
  f.upstream.Script("http://a.test", {SseReply(bytes)});
  ProxyResponse r = f.Chat(R"({"model":"gpt-4o","stream":true})");
  REQUIRE(r.stream != nullptr);
  std::string body, chunk;
  int calls = 0;
  while (r.stream->Next(&chunk)) {
    ++calls;
    CHECK(chunk.size() >= 2);
    CHECK(chunk.substr(chunk.size() - 2) == "\n\n");  // whole events only
    body += chunk;
    chunk.clear();
  }
  CHECK(body == all);
  CHECK(calls == 3);
}

TEST_CASE("Proxy ends a cut stream with an error event and no [DONE]", "[proxy]") {
  Fixture f;
  FakeReply cut = SseReply({Chunk("one"), Chunk("two"), Chunk("three")});
  cut.body_error = TransportError::kReset;
  f.upstream.Script("http://a.test", {cut});
  ProxyResponse r = f.Chat(R"({"model":"gpt-4o","stream":true})");
  REQUIRE(r.stream != nullptr);
  std::string body, chunk;
  while (r.stream->Next(&chunk)) {
    body += chunk;
    chunk.clear();
  }
  CHECK(body.rfind(Chunk("one") + Chunk("two") + Chunk("three"), 0) == 0);
  CHECK(body.find("event: error\n") != std::string::npos);
  CHECK(body.find("stream_interrupted") != std::string::npos);
  CHECK(body.find("[DONE]") == std::string::npos);
  CHECK(f.upstream.requests().size() == 1);  // exactly one attempt
  r.stream.reset();
  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK(usage[0].completion_tokens == 3);  // what was delivered
  CHECK_FALSE(usage[0].error.empty());
}

TEST_CASE("Proxy ends a stream that stops without [DONE] with an error event", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {SseReply({Chunk("only")})});
  ProxyResponse r = f.Chat(R"({"model":"gpt-4o","stream":true})");
  REQUIRE(r.stream != nullptr);
  std::string body, chunk;
  while (r.stream->Next(&chunk)) {
    body += chunk;
    chunk.clear();
  }
  CHECK(body.find("stream_incomplete") != std::string::npos);
}

TEST_CASE("Proxy fails over a stream request until the first byte", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {JsonReply(500, "{}")});
  f.upstream.Script("http://b.test", {SseReply({Chunk("x"), "data: [DONE]\n\n"})});
  ProxyResponse r = f.Chat(R"({"model":"gpt-4o","stream":true})");
  REQUIRE(r.stream != nullptr);
  CHECK(*Header(r.headers, "x-switchboard-backend") == "b");
}

TEST_CASE("Proxy aborts the upstream when the client leaves before the first byte", "[proxy]") {
  Fixture f;
  FakeReply hang;
  hang.hang = true;
  f.upstream.Script("http://a.test", {hang});
  int polls = 0;
  ProxyRequest req;
  req.endpoint = "/chat/completions";
  req.body = kChatBody;
  req.client_gone = [&polls] { return ++polls > 3; };
  ProxyResponse r = f.proxy->Handle(std::move(req));
  CHECK(r.status == 499);
  CHECK(f.upstream.cancelled_calls() == 1);
  CHECK(f.upstream.requests().size() == 1);  // no failover for a client that left
  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK(usage[0].status == 499);
}

TEST_CASE("Proxy records a stream the client dropped with what was delivered", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test",
                    {SseReply({Chunk("one"), Chunk("two"), Chunk("three"), "data: [DONE]\n\n"})});
  ProxyResponse r = f.Chat(R"({"model":"gpt-4o","stream":true})");
  REQUIRE(r.stream != nullptr);
  std::string chunk;
  REQUIRE(r.stream->Next(&chunk));
  r.stream.reset();  // the client went away
  CHECK(f.upstream.abandoned_calls() == 1);
  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK(usage[0].status == 499);
  CHECK(usage[0].completion_tokens == 1);
  CHECK(f.router.LiveState("bkd_a")->limiter.in_flight == 0);
}

TEST_CASE("Proxy sends an Anthropic backend its key as x-api-key with a version", "[proxy]") {
  Fixture f({"a"});
  auto snap = f.router.snapshot();
  Backend a = snap->entries()[0].backend;
  a.api = Api::kAnthropic;
  REQUIRE(f.router.Update({a}, Config{}).ok());
  f.upstream.Script("http://a.test", {JsonReply(200, R"({"type":"message","usage":{"input_tokens":4,"output_tokens":9}})")});
  ProxyRequest req;
  req.api = Api::kAnthropic;
  req.endpoint = "/messages";
  req.body = R"({"model":"gpt-4o","max_tokens":10,"messages":[]})";
  req.client_headers = {{"x-api-key", "client-key"}, {"anthropic-beta", "tools-2024"}};
  ProxyResponse r = f.proxy->Handle(std::move(req));
  CHECK(r.status == 200);
  auto requests = f.upstream.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].url == "http://a.test/v1/messages");
  CHECK(*Header(requests[0].headers, "x-api-key") == "sk-secret-a");
  CHECK(*Header(requests[0].headers, "anthropic-version") == "2023-06-01");
  CHECK(*Header(requests[0].headers, "anthropic-beta") == "tools-2024");
  CHECK(Header(requests[0].headers, "authorization") == nullptr);
  auto usage = f.Usage();
  CHECK(usage[0].prompt_tokens == 4);
  CHECK(usage[0].completion_tokens == 9);
}

TEST_CASE("Proxy never lets a model name change the upstream path", "[proxy]") {
  Fixture f;
  Backend any = testing::MakeBackend("any");
  any.api_base_url = "http://any.test/v1";
  any.model_mappings = {{"*", ModelMapping{"*", 1}}};
  REQUIRE(f.router.Update({any}, Config{}).ok());
  f.upstream.Script("http://any.test", {JsonReply(200, "{}")});
  for (const char* model : {"../../admin", "a?b=c", "x#y", "%2F..%2F", "m@evil.test", "a/b"}) {
    std::string body = R"({"model":")" + std::string(model) + R"("})";
    ProxyResponse r = f.Chat(body);
    CHECK(r.status == 200);
  }
  for (const UpstreamRequest& up : f.upstream.requests()) {
    CHECK(up.url == "http://any.test/v1/chat/completions");
  }
}

TEST_CASE("Proxy lists the canonical models in OpenAI's form", "[proxy]") {
  Fixture f;
  CHECK(f.proxy->ModelsJson() ==
        R"({"object":"list","data":[{"id":"gpt-4o","object":"model","created":0,"owned_by":"switchboard"}]})");
}

TEST_CASE("Proxy counts requests, attempts and backend state for Prometheus", "[proxy]") {
  Fixture f;
  f.upstream.Script("http://a.test", {JsonReply(429, "{}")});
  f.upstream.Script("http://b.test", {JsonReply(200, Completion(1, 1))});
  REQUIRE(f.Chat().status == 200);
  const std::string text = f.metrics.RenderPrometheus(f.router);
  CHECK(text.find("switchboard_requests_total{model=\"gpt-4o\",backend=\"b\",status=\"200\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("switchboard_request_attempts_total{attempts=\"2\"} 1\n") != std::string::npos);
  CHECK(text.find("switchboard_upstream_attempts_total{backend=\"a\",outcome=\"rate_limited\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("switchboard_backend_up{backend=\"a\",pool=\"primary\"} 0\n") != std::string::npos);
  CHECK(text.find("switchboard_backend_up{backend=\"b\",pool=\"fallback\"} 1\n") != std::string::npos);
  CHECK(text.find("switchboard_backend_cooldown_seconds{backend=\"a\",pool=\"primary\"} 5\n") !=
        std::string::npos);
  CHECK(text.find("switchboard_upstream_ttfb_seconds_count{backend=\"b\"} 1\n") != std::string::npos);
  CHECK(text.find("switchboard_in_flight_requests 0\n") != std::string::npos);
}

TEST_CASE("SseParser splits events at blank lines whatever the line endings", "[proxy]") {
  SseParser parser;
  std::vector<std::string> events;
  parser.Feed("data: a\r\n\r\ndata: b\n", &events);
  REQUIRE(events.size() == 1);
  CHECK(SseParser::Data(events[0]) == "a");
  parser.Feed("\nevent: ping\rdata: c\r", &events);
  REQUIRE(events.size() == 2);
  CHECK(SseParser::Data(events[1]) == "b");
  parser.Feed("\r", &events);
  REQUIRE(events.size() == 3);
  CHECK(SseParser::EventType(events[2]) == "ping");
  CHECK(SseParser::Data(events[2]) == "c");
  parser.Feed("data: x\ndata: y\n\n", &events);
  REQUIRE(events.size() == 4);
  CHECK(SseParser::Data(events[3]) == "x\ny");
}

TEST_CASE("ExtractUsage reads OpenAI and Anthropic usage", "[proxy]") {
  auto openai = ExtractUsage(R"({"usage":{"prompt_tokens":5,"completion_tokens":6}})");
  CHECK(openai.found);
  CHECK(openai.prompt_tokens == 5);
  CHECK(openai.completion_tokens == 6);
  auto start = ExtractUsage(R"({"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}})");
  CHECK(start.prompt_tokens == 9);
  auto none = ExtractUsage(R"({"choices":[]})");
  CHECK_FALSE(none.found);
  CHECK_FALSE(ExtractUsage("{broken usage").found);
}

}  // namespace
}  // namespace switchboard
