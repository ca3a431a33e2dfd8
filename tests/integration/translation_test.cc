// Cross-format serving end to end (CONTRACT "Proxy surface": a backend whose
// api differs from the client's format gets a translated request, and the
// client gets a translated response, streaming included): the real server
// binary between OpenAI and Anthropic clients and mock upstreams of both
// kinds, with cross-format failover and the usage record that follows.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::string kMessagesPath = "/v1/messages";
constexpr char kAdminToken[] = "sbadm_translation_test_token_0123456789";

BackendSpec AnthropicBackend(std::string name, std::string base_url, std::string pool) {
  BackendSpec b = Backend(std::move(name), std::move(base_url), std::move(pool));
  b.api = "anthropic";
  b.models = {{"gpt-4o", "claude-upstream"}};
  return b;
}

BackendSpec OpenAIBackend(std::string name, std::string base_url, std::string pool) {
  BackendSpec b = Backend(std::move(name), std::move(base_url), std::move(pool));
  b.models = {{"gpt-4o", "gpt-4o-upstream"}};
  return b;
}

std::string AnthropicEvent(std::string_view type, std::string_view data) {
  return "event: " + std::string(type) + "\ndata: " + std::string(data) + "\n\n";
}

std::string AnthropicMessageJson(std::string_view text, int input_tokens, int output_tokens) {
  return R"({"id":"msg_mock","type":"message","role":"assistant","model":"claude-upstream",)"
         R"("content":[{"type":"text","text":)" +
         JsonString(text) + R"(}],"stop_reason":"end_turn","stop_sequence":null,)"
                            R"("usage":{"input_tokens":)" +
         std::to_string(input_tokens) + R"(,"output_tokens":)" + std::to_string(output_tokens) +
         "}}";
}

// An Anthropic stream answering `pieces` as one text block.
std::vector<std::string> AnthropicTextEvents(const std::vector<std::string>& pieces,
                                             int input_tokens = 11, int output_tokens = 7) {
  std::vector<std::string> events;
  events.push_back(AnthropicEvent(
      "message_start",
      R"({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant",)"
      R"("content":[],"model":"claude-upstream","stop_reason":null,"stop_sequence":null,)"
      R"("usage":{"input_tokens":)" +
          std::to_string(input_tokens) + R"(,"output_tokens":1}}})"));
  events.push_back(AnthropicEvent(
      "content_block_start",
      R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"));
  events.push_back(AnthropicEvent("ping", R"({"type":"ping"})"));
  for (const std::string& piece : pieces) {
    events.push_back(AnthropicEvent(
        "content_block_delta",
        R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":)" +
            JsonString(piece) + "}}"));
  }
  events.push_back(
      AnthropicEvent("content_block_stop", R"({"type":"content_block_stop","index":0})"));
  events.push_back(AnthropicEvent(
      "message_delta",
      R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},)"
      R"("usage":{"output_tokens":)" +
          std::to_string(output_tokens) + "}}"));
  events.push_back(AnthropicEvent("message_stop", R"({"type":"message_stop"})"));
  return events;
}

std::string MessagesBody(bool stream = false) {
  return std::string(R"({"model":"gpt-4o","max_tokens":64,"system":"Be brief.",)") +
         (stream ? R"("stream":true,)" : "") +
         R"("messages":[{"role":"user","content":"hi"}]})";
}

rapidjson::Document Parse(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  return doc;
}

// The event: names of an SSE body, in order.
std::vector<std::string> EventTypes(const std::string& body) {
  std::vector<std::string> types;
  for (const std::string& e : SseEvents(body)) {
    if (e.rfind("event: ", 0) != 0) continue;
    types.push_back(e.substr(7, e.find('\n') - 7));
  }
  return types;
}

// The concatenated delta.content of a chat.completion.chunk stream.
std::string ChunkText(const std::string& body) {
  std::string text;
  for (const std::string& e : SseEvents(body)) {
    const std::string data = EventData(e);
    if (data.empty() || data == "[DONE]") continue;
    rapidjson::Document doc = Parse(data);
    if (!doc.IsObject() || !doc.HasMember("choices") || doc["choices"].Empty()) continue;
    const auto& delta = doc["choices"][0]["delta"];
    if (delta.HasMember("content") && delta["content"].IsString()) {
      text += delta["content"].GetString();
    }
  }
  return text;
}

// The newest usage record, once the write-behind queue has stored it.
rapidjson::Document NewestUsage(httplib::Client& client, size_t expected_records) {
  rapidjson::Document doc;
  for (int i = 0; i < 200; ++i) {
    auto res = client.Get("/admin/usage?limit=10",
                          {{"Authorization", std::string("Bearer ") + kAdminToken}});
    if (res && res->status == 200) {
      doc.Parse(res->body.c_str(), res->body.size());
      if (!doc.HasParseError() && doc.IsObject() && doc["data"].Size() >= expected_records) {
        return doc;
      }
    }
    std::this_thread::sleep_for(milliseconds(25));  // records are written in the background
  }
  return doc;
}

TEST_CASE("An OpenAI client is answered by an Anthropic backend through translation",
          "[translation]") {
  MockUpstream anthropic;
  anthropic.SetDefault(kMessagesPath, JsonReply(AnthropicMessageJson("Hello from Claude", 12, 5)));
  TestServer server({AnthropicBackend("claude", anthropic.base_url(), "primary")});
  httplib::Client client = server.Client();

  const std::string body =
      R"({"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},)"
      R"({"role":"user","content":"hi"}],"stop":"END"})";
  auto res = client.Post(kChatPath, {{"Authorization", "Bearer client-key"}}, body,
                         "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "claude");
  rapidjson::Document doc = Parse(res->body);
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["object"].GetString()) == "chat.completion");
  CHECK(std::string(doc["choices"][0]["message"]["content"].GetString()) == "Hello from Claude");
  CHECK(std::string(doc["choices"][0]["finish_reason"].GetString()) == "stop");
  CHECK(doc["usage"]["prompt_tokens"].GetInt() == 12);
  CHECK(doc["usage"]["completion_tokens"].GetInt() == 5);
  CHECK(doc["usage"]["total_tokens"].GetInt() == 17);

  REQUIRE(anthropic.request_count() == 1);
  const RecordedRequest sent = anthropic.requests()[0];
  CHECK(sent.path == kMessagesPath);
  REQUIRE(sent.header("x-api-key") != nullptr);
  CHECK(*sent.header("x-api-key") == "sk-claude-key");
  REQUIRE(sent.header("anthropic-version") != nullptr);
  CHECK(*sent.header("anthropic-version") == "2023-06-01");
  CHECK(sent.header("authorization") == nullptr);
  rapidjson::Document up = Parse(sent.body);
  REQUIRE(up.IsObject());
  CHECK(std::string(up["model"].GetString()) == "claude-upstream");
  CHECK(std::string(up["system"].GetString()) == "Be brief.");
  CHECK(up["max_tokens"].GetInt() == 4096);
  CHECK(up["messages"].Size() == 1);
  CHECK(std::string(up["stop_sequences"][0].GetString()) == "END");
}

TEST_CASE("An OpenAI client streams from an Anthropic backend and gets chunks, usage and [DONE]",
          "[translation]") {
  MockUpstream anthropic;
  anthropic.SetDefault(kMessagesPath, SseReply(AnthropicTextEvents({"Hel", "lo", "!"}, 11, 7)));
  TestServer server({AnthropicBackend("claude", anthropic.base_url(), "primary")});

  StreamedResponse res = PostStreaming(server.port(), kChatPath, StreamChatBody("gpt-4o"));
  INFO(res.error << res.body);
  REQUIRE(res.ok);
  REQUIRE(res.status == 200);
  CHECK(res.header("Content-Type").find("text/event-stream") != std::string::npos);
  const std::vector<std::string> events = res.events();
  REQUIRE(events.size() >= 3);
  CHECK(ChunkText(res.body) == "Hello!");
  CHECK(IsDoneEvent(events.back()));
  // The usage chunk asked for by stream_options.include_usage comes right before [DONE].
  rapidjson::Document usage = Parse(EventData(events[events.size() - 2]));
  REQUIRE(usage.IsObject());
  CHECK(usage["choices"].Empty());
  CHECK(usage["usage"]["prompt_tokens"].GetInt() == 11);
  CHECK(usage["usage"]["completion_tokens"].GetInt() == 7);
  rapidjson::Document finish = Parse(EventData(events[events.size() - 3]));
  REQUIRE(finish.IsObject());
  CHECK(std::string(finish["choices"][0]["finish_reason"].GetString()) == "stop");
  for (const std::string& e : events) CHECK_FALSE(IsErrorEvent(e));

  rapidjson::Document up = Parse(anthropic.requests().at(0).body);
  REQUIRE(up.IsObject());
  CHECK(up["stream"].GetBool());
  CHECK_FALSE(up.HasMember("stream_options"));
}

TEST_CASE("An Anthropic client is answered by an OpenAI backend through translation",
          "[translation]") {
  MockUpstream openai;
  openai.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "Hello from GPT", 9, 4));
  TestServer server({OpenAIBackend("gpt", openai.base_url(), "primary")});
  httplib::Client client = server.Client();

  auto res = client.Post(kMessagesPath, {{"x-api-key", "client-key"}, {"anthropic-version", "2023-06-01"}},
                         MessagesBody(), "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 200);
  rapidjson::Document doc = Parse(res->body);
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["type"].GetString()) == "message");
  CHECK(std::string(doc["role"].GetString()) == "assistant");
  CHECK(std::string(doc["content"][0]["type"].GetString()) == "text");
  CHECK(std::string(doc["content"][0]["text"].GetString()) == "Hello from GPT");
  CHECK(std::string(doc["stop_reason"].GetString()) == "end_turn");
  CHECK(doc["usage"]["input_tokens"].GetInt() == 9);
  CHECK(doc["usage"]["output_tokens"].GetInt() == 4);

  REQUIRE(openai.request_count() == 1);
  const RecordedRequest sent = openai.requests()[0];
  CHECK(sent.path == kChatPath);
  REQUIRE(sent.header("authorization") != nullptr);
  CHECK(*sent.header("authorization") == "Bearer sk-gpt-key");
  CHECK(sent.header("x-api-key") == nullptr);
  rapidjson::Document up = Parse(sent.body);
  REQUIRE(up.IsObject());
  CHECK(std::string(up["model"].GetString()) == "gpt-4o-upstream");
  CHECK(std::string(up["messages"][0]["role"].GetString()) == "system");
  CHECK(std::string(up["messages"][1]["content"].GetString()) == "hi");
  CHECK(up["max_tokens"].GetInt() == 64);
}

TEST_CASE("An Anthropic client streams from an OpenAI backend and gets the Messages event sequence",
          "[translation]") {
  MockUpstream openai;
  openai.SetDefault(kChatPath, ChatCompletionStreamReply("gpt-4o-upstream", {"one", " two"}, 8, 2));
  TestServer server({OpenAIBackend("gpt", openai.base_url(), "primary")});

  StreamedResponse res = PostStreaming(server.port(), kMessagesPath, MessagesBody(true));
  INFO(res.error << res.body);
  REQUIRE(res.ok);
  REQUIRE(res.status == 200);
  CHECK(EventTypes(res.body) ==
        std::vector<std::string>{"message_start", "content_block_start", "content_block_delta",
                                 "content_block_delta", "content_block_stop", "message_delta",
                                 "message_stop"});
  const std::vector<std::string> events = res.events();
  rapidjson::Document delta = Parse(EventData(events[5]));
  REQUIRE(delta.IsObject());
  CHECK(std::string(delta["delta"]["stop_reason"].GetString()) == "end_turn");
  CHECK(delta["usage"]["output_tokens"].GetInt() == 2);
  CHECK(delta["usage"]["input_tokens"].GetInt() == 8);

  // The OpenAI backend is asked for usage so the client can get output tokens.
  rapidjson::Document up = Parse(openai.requests().at(0).body);
  REQUIRE(up.IsObject());
  CHECK(up["stream_options"]["include_usage"].GetBool());
}

TEST_CASE("Tool calls from an OpenAI backend reach an Anthropic client as tool_use blocks",
          "[translation]") {
  MockUpstream openai;
  openai.SetDefault(
      kChatPath,
      JsonReply(
          R"({"id":"chatcmpl-t","object":"chat.completion","created":1,"model":"gpt-4o-upstream",)"
          R"("choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[)"
          R"({"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},)"
          R"("finish_reason":"tool_calls"}],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}})"));
  TestServer server({OpenAIBackend("gpt", openai.base_url(), "primary")});
  httplib::Client client = server.Client();

  const std::string body =
      R"({"model":"gpt-4o","max_tokens":64,"tools":[{"name":"get_weather","input_schema":)"
      R"({"type":"object","properties":{"city":{"type":"string"}}}}],)"
      R"("tool_choice":{"type":"any"},"messages":[{"role":"user","content":"Weather in Oslo?"}]})";
  auto res = client.Post(kMessagesPath, body, "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 200);
  rapidjson::Document doc = Parse(res->body);
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["stop_reason"].GetString()) == "tool_use");
  REQUIRE(doc["content"].Size() == 1);
  const auto& use = doc["content"][0];
  CHECK(std::string(use["type"].GetString()) == "tool_use");
  CHECK(std::string(use["id"].GetString()) == "call_9");
  CHECK(std::string(use["input"]["city"].GetString()) == "Oslo");

  rapidjson::Document up = Parse(openai.requests().at(0).body);
  REQUIRE(up.IsObject());
  CHECK(std::string(up["tools"][0]["function"]["name"].GetString()) == "get_weather");
  CHECK(std::string(up["tool_choice"].GetString()) == "required");
}

TEST_CASE("A 429 from an Anthropic backend fails over to an OpenAI backend, and the usage record "
          "says so",
          "[translation][failover]") {
  MockUpstream anthropic, openai;
  MockReply limited = JsonReply(
      R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})", 429);
  limited.headers = {{"retry-after", "60"}};
  anthropic.SetDefault(kMessagesPath, limited);
  openai.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "from openai", 13, 6));
  ServerProcessOptions options;
  options.backends = {AnthropicBackend("claude", anthropic.base_url(), "primary"),
                      OpenAIBackend("gpt", openai.base_url(), "fallback")};
  options.env = {std::string("SWITCHBOARD_ADMIN_TOKEN=") + kAdminToken};
  TestServer server(std::move(options));
  httplib::Client client = server.Client();

  // An Anthropic client: the Anthropic backend refuses, the OpenAI one answers, translated.
  auto res = client.Post(kMessagesPath, MessagesBody(), "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "gpt");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  rapidjson::Document doc = Parse(res->body);
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["content"][0]["text"].GetString()) == "from openai");
  CHECK(anthropic.request_count() == 1);
  CHECK(openai.request_count() == 1);

  rapidjson::Document usage = NewestUsage(client, 1);
  REQUIRE(usage.IsObject());
  REQUIRE(usage["data"].Size() >= 1);
  const auto& record = usage["data"][0];
  CHECK(std::string(record["backend_name"].GetString()) == "gpt");
  CHECK(record["prompt_tokens"].GetInt() == 13);
  CHECK(record["completion_tokens"].GetInt() == 6);
  CHECK(record["status"].GetInt() == 200);
  // The decision trace names both backends: the one that refused and the one that answered.
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  record["trace"].Accept(writer);
  const std::string trace = buffer.GetString();
  INFO(trace);
  CHECK(trace.find("claude") != std::string::npos);
  CHECK(trace.find("gpt") != std::string::npos);
}

TEST_CASE("A 429 from an OpenAI backend fails over to an Anthropic backend for a streaming "
          "OpenAI client",
          "[translation][failover]") {
  MockUpstream openai, anthropic;
  openai.SetDefault(kChatPath, RateLimitedReply(60));
  anthropic.SetDefault(kMessagesPath, SseReply(AnthropicTextEvents({"fall", "back"}, 5, 3)));
  TestServer server({OpenAIBackend("gpt", openai.base_url(), "primary"),
                     AnthropicBackend("claude", anthropic.base_url(), "fallback")});

  StreamedResponse res = PostStreaming(server.port(), kChatPath, StreamChatBody("gpt-4o"));
  INFO(res.error << res.body);
  REQUIRE(res.ok);
  REQUIRE(res.status == 200);
  CHECK(res.header("x-switchboard-backend") == "claude");
  CHECK(res.header("x-switchboard-attempts") == "2");
  CHECK(ChunkText(res.body) == "fallback");
  REQUIRE_FALSE(res.events().empty());
  CHECK(IsDoneEvent(res.events().back()));
}

TEST_CASE("An Anthropic client error comes back to an OpenAI client in OpenAI's shape",
          "[translation]") {
  MockUpstream anthropic;
  anthropic.SetDefault(
      kMessagesPath,
      JsonReply(R"({"type":"error","error":{"type":"invalid_request_error","message":"bad image"}})",
                400));
  TestServer server({AnthropicBackend("claude", anthropic.base_url(), "primary")});
  httplib::Client client = server.Client();

  auto res = client.Post(kChatPath, ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(OpenAIErrorProblem(res->body) == "");
  CHECK(OpenAIErrorMessage(res->body) == "bad image");
  CHECK(anthropic.request_count() == 1);  // the client's own error: no retry
}

TEST_CASE("An OpenAI client error comes back to an Anthropic client in Anthropic's shape",
          "[translation]") {
  MockUpstream openai;
  openai.SetDefault(kChatPath,
                    JsonReply(OpenAiErrorJson("bad temperature", "invalid_request_error",
                                              "invalid_value"),
                              400));
  TestServer server({OpenAIBackend("gpt", openai.base_url(), "primary")});
  httplib::Client client = server.Client();

  auto res = client.Post(kMessagesPath, MessagesBody(), "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  rapidjson::Document doc = Parse(res->body);
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["type"].GetString()) == "error");
  CHECK(std::string(doc["error"]["type"].GetString()) == "invalid_request_error");
  CHECK(std::string(doc["error"]["message"].GetString()) == "bad temperature");
}

TEST_CASE("An error event from an Anthropic stream ends an OpenAI client's stream with an error "
          "event and no [DONE]",
          "[translation][streaming]") {
  MockUpstream anthropic;
  std::vector<std::string> events = AnthropicTextEvents({"partial"});
  events.resize(4);  // message_start, content_block_start, ping, one delta
  events.push_back(AnthropicEvent(
      "error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"));
  anthropic.SetDefault(kMessagesPath, SseReply(events));
  TestServer server({AnthropicBackend("claude", anthropic.base_url(), "primary")});

  StreamedResponse res = PostStreaming(server.port(), kChatPath, StreamChatBody("gpt-4o"));
  INFO(res.error << res.body);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(ChunkText(res.body) == "partial");
  const std::vector<std::string> out = res.events();
  REQUIRE_FALSE(out.empty());
  CHECK(IsErrorEvent(out.back()));
  CHECK(OpenAIErrorMessage(EventData(out.back())) == "Overloaded");
  size_t errors = 0;
  for (const std::string& e : out) {
    CHECK_FALSE(IsDoneEvent(e));
    if (IsErrorEvent(e)) ++errors;
  }
  CHECK(errors == 1);
}

TEST_CASE("An OpenAI stream cut short ends an Anthropic client's stream with an Anthropic error "
          "event",
          "[translation][streaming]") {
  MockUpstream openai;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"one", " two"});
  reply.reset_after_events = 2;  // role chunk and "one", then the connection drops
  openai.SetDefault(kChatPath, reply);
  TestServer server({OpenAIBackend("gpt", openai.base_url(), "primary")});

  StreamedResponse res = PostStreaming(server.port(), kMessagesPath, MessagesBody(true));
  INFO(res.error << res.body);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  const std::vector<std::string> types = EventTypes(res.body);
  REQUIRE_FALSE(types.empty());
  CHECK(types.front() == "message_start");
  CHECK(types.back() == "error");
  CHECK(std::find(types.begin(), types.end(), "message_stop") == types.end());
  rapidjson::Document error = Parse(EventData(res.events().back()));
  REQUIRE(error.IsObject());
  CHECK(std::string(error["type"].GetString()) == "error");
  CHECK(error["error"]["message"].IsString());
}

TEST_CASE("A request an Anthropic backend cannot serve is refused with 400 naming the field",
          "[translation]") {
  MockUpstream anthropic;
  anthropic.SetDefault(kMessagesPath, JsonReply(AnthropicMessageJson("unused", 1, 1)));
  TestServer server({AnthropicBackend("claude", anthropic.base_url(), "primary")});
  httplib::Client client = server.Client();

  auto res = client.Post(kChatPath,
                         R"({"model":"gpt-4o","n":3,"messages":[{"role":"user","content":"hi"}]})",
                         "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(OpenAIErrorProblem(res->body) == "");
  rapidjson::Document doc = Parse(res->body);
  REQUIRE(doc.IsObject());
  REQUIRE(doc["error"]["param"].IsString());
  CHECK(std::string(doc["error"]["param"].GetString()) == "n");
  CHECK(anthropic.request_count() == 0);
}

TEST_CASE("A request one format cannot express still goes to a backend of its own format",
          "[translation]") {
  MockUpstream anthropic, openai;
  anthropic.SetDefault(kMessagesPath, JsonReply(AnthropicMessageJson("unused", 1, 1)));
  openai.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "two choices"));
  TestServer server({AnthropicBackend("claude", anthropic.base_url(), "primary"),
                     OpenAIBackend("gpt", openai.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = client.Post(kChatPath,
                         R"({"model":"gpt-4o","n":2,"messages":[{"role":"user","content":"hi"}]})",
                         "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "gpt");
  CHECK(anthropic.request_count() == 0);
  CHECK(openai.request_count() == 1);
}

}  // namespace
}  // namespace switchboard::testing
