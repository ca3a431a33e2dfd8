// The proxy engine serving clients from backends of the other wire format,
// against a scripted upstream: broken translated streams, usage from
// translated answers, failover on an unreadable translated answer. No network.
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

constexpr char kChatStreamBody[] =
    R"({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]})";
constexpr char kMessagesStreamBody[] =
    R"({"model":"gpt-4o","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]})";

std::string Event(const std::string& type, const std::string& data) {
  return "event: " + type + "\ndata: " + data + "\n\n";
}

const std::string kMessageStart = Event(
    "message_start",
    R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-up","usage":{"input_tokens":25,"output_tokens":1}}})");
const std::string kBlockStart = Event(
    "content_block_start",
    R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})");

std::string TextDelta(const std::string& text) {
  return Event("content_block_delta",
               R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":")" +
                   text + "\"}}");
}

// Backend "a" speaks Anthropic (primary), "b" OpenAI (fallback).
struct Fixture {
  ManualClock clock;
  std::unique_ptr<Storage> storage = NewMemoryStorage();
  StorageWriter writer{*storage};
  Router router{clock, &writer};
  FakeUpstream upstream;
  std::unique_ptr<KeyCipher> cipher;
  std::unique_ptr<Proxy> proxy;

  Fixture() {
    auto key = MasterKey::Generate();
    REQUIRE(key.ok());
    auto c = KeyCipher::Create(std::move(*key));
    REQUIRE(c.ok());
    cipher = std::move(*c);
    Backend a = testing::MakeBackend("a", "primary");
    a.api = Api::kAnthropic;
    a.api_base_url = "http://a.test/v1";
    a.api_key_ciphertext = *cipher->Encrypt("sk-secret-a", a.id);
    Backend b = testing::MakeBackend("b", "fallback");
    b.api_base_url = "http://b.test/v1";
    b.api_key_ciphertext = *cipher->Encrypt("sk-secret-b", b.id);
    REQUIRE(router.Update({a, b}, Config{}).ok());
    proxy = std::make_unique<Proxy>(router, upstream, cipher.get(), &writer, clock);
  }

  ProxyResponse Call(Api api, std::string endpoint, std::string body) {
    ProxyRequest r;
    r.api = api;
    r.endpoint = std::move(endpoint);
    r.body = std::move(body);
    return proxy->Handle(std::move(r));
  }

  static std::string Drain(ProxyResponse& r) {
    std::string all, chunk;
    while (r.stream && r.stream->Next(&chunk)) {
      all += chunk;
      chunk.clear();
    }
    return all;
  }

  std::vector<UsageRecord> Usage() {
    REQUIRE(writer.Flush().ok());
    auto page = storage->ListUsage({.limit = 100});
    REQUIRE(page.ok());
    return page->records;
  }
};

TEST_CASE("An unreadable event from an Anthropic stream ends the OpenAI client's stream with an "
          "OpenAI error event",
          "[proxy][translate]") {
  Fixture f;
  f.upstream.Script("http://a.test",
                    {SseReply({kMessageStart, kBlockStart, TextDelta("Hel"),
                               Event("content_block_delta", "{not json"), TextDelta("never")})});
  ProxyResponse r = f.Call(Api::kOpenAI, "/chat/completions", kChatStreamBody);
  REQUIRE(r.status == 200);
  REQUIRE(r.stream != nullptr);
  const std::string body = Fixture::Drain(r);
  INFO(body);
  CHECK(body.find(R"("content":"Hel")") != std::string::npos);
  CHECK(body.find("event: error\ndata: {\"error\":{") != std::string::npos);
  CHECK(body.find("stream_malformed") != std::string::npos);
  CHECK(body.find("never") == std::string::npos);
  CHECK(body.find("[DONE]") == std::string::npos);
  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK_FALSE(usage[0].error.empty());
}

TEST_CASE("A translated stream that stalls ends with an error event in Anthropic's shape",
          "[proxy][translate]") {
  Fixture f;
  FakeReply limited = JsonReply(429, R"({"type":"error","error":{"type":"rate_limit_error","message":"no"}})");
  f.upstream.Script("http://a.test", {limited});
  FakeReply stalled = SseReply(
      {"data: {\"id\":\"c1\",\"model\":\"gpt-up\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"});
  stalled.body_error = TransportError::kTimeout;
  f.upstream.Script("http://b.test", {stalled});
  ProxyResponse r = f.Call(Api::kAnthropic, "/messages", kMessagesStreamBody);
  REQUIRE(r.status == 200);
  CHECK(*FindHeader(r.headers, "x-switchboard-backend") == "b");
  const std::string body = Fixture::Drain(r);
  INFO(body);
  CHECK(body.rfind("event: message_start\n", 0) == 0);
  CHECK(body.find("\"text\":\"Hi\"") != std::string::npos);
  const size_t error = body.rfind("event: error\ndata: {\"type\":\"error\",\"error\":{");
  CHECK(error != std::string::npos);
  CHECK(body.find("message_stop") == std::string::npos);
}

TEST_CASE("Tokens of a translated Anthropic stream land in the usage record", "[proxy][translate]") {
  Fixture f;
  f.upstream.Script(
      "http://a.test",
      {SseReply({kMessageStart, kBlockStart, TextDelta("Hi"),
                 Event("content_block_stop", R"({"type":"content_block_stop","index":0})"),
                 Event("message_delta",
                       R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}})"),
                 Event("message_stop", R"({"type":"message_stop"})")})});
  ProxyResponse r = f.Call(Api::kOpenAI, "/chat/completions", kChatStreamBody);
  REQUIRE(r.status == 200);
  const std::string body = Fixture::Drain(r);
  CHECK(body.size() >= 14);
  CHECK(body.substr(body.size() - 14) == "data: [DONE]\n\n");
  auto usage = f.Usage();
  REQUIRE(usage.size() == 1);
  CHECK(usage[0].status == 200);
  CHECK(usage[0].error.empty());
  CHECK(usage[0].prompt_tokens == 25);
  CHECK(usage[0].completion_tokens == 15);
  auto requests = f.upstream.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].url == "http://a.test/v1/messages");
  CHECK(*FindHeader(requests[0].headers, "x-api-key") == "sk-secret-a");
  CHECK(*FindHeader(requests[0].headers, "anthropic-version") == "2023-06-01");
  CHECK(FindHeader(requests[0].headers, "authorization") == nullptr);
}

TEST_CASE("An unreadable 2xx answer from a backend of the other format fails over",
          "[proxy][translate]") {
  Fixture f;
  f.upstream.Script("http://a.test", {JsonReply(200, "<html>not a message</html>")});
  f.upstream.Script(
      "http://b.test",
      {JsonReply(200,
                 R"({"id":"c","object":"chat.completion","model":"gpt-up","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}})")});
  ProxyResponse r = f.Call(Api::kOpenAI, "/chat/completions",
                           R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})");
  CHECK(r.status == 200);
  CHECK(*FindHeader(r.headers, "x-switchboard-backend") == "b");
  CHECK(*FindHeader(r.headers, "x-switchboard-attempts") == "2");
}

TEST_CASE("Embeddings skip a backend that speaks Anthropic", "[proxy][translate]") {
  Fixture f;
  f.upstream.Script("http://b.test",
                    {JsonReply(200, R"({"object":"list","data":[],"usage":{"prompt_tokens":1}})")});
  ProxyResponse r =
      f.Call(Api::kOpenAI, "/embeddings", R"({"model":"gpt-4o","input":"hi"})");
  CHECK(r.status == 200);
  CHECK(*FindHeader(r.headers, "x-switchboard-backend") == "b");
  for (const UpstreamRequest& up : f.upstream.requests()) {
    CHECK(up.url.rfind("http://a.test", 0) != 0);
  }
}

}  // namespace
}  // namespace switchboard
