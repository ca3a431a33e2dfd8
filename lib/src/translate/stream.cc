// Stream translation: one upstream SSE event in, zero or more client SSE
// events out, never holding more than the current content block's identity.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "translate/json_util.h"
#include "translate/translate.h"

namespace switchboard::internal {
namespace {

using rapidjson::Value;

constexpr std::string_view kMalformed = "the upstream sent an unreadable stream event";

// Anthropic events -> chat.completion.chunk events ending in [DONE].
class AnthropicToOpenAIStream final : public StreamTranslator {
 public:
  explicit AnthropicToOpenAIStream(StreamTranslatorOptions options) : options_(options) {}

  void Feed(std::string_view event_type, std::string_view data, std::string* out) override {
    if (complete_ || failed_) return;
    rapidjson::Document doc;
    if (!ParseJson(data, &doc) || !doc.IsObject()) {
      Fail(out, kMalformed, "upstream_error", "stream_malformed");
      return;
    }
    std::string_view type = StringOf(Member(doc, "type"));
    if (type.empty()) type = event_type;
    if (type == "message_start") {
      const Value* message = Member(doc, "message");
      id_ = StringOf(Member(message, "id"));
      model_ = StringOf(Member(message, "model"));
      const Value* usage = Member(message, "usage");
      input_tokens_ = Int64Of(Member(usage, "input_tokens")).value_or(0);
      output_tokens_ = Int64Of(Member(usage, "output_tokens")).value_or(0);
      Chunk(out, "", [](JsonWriter& w) {
        w.Key("role");
        w.String("assistant");
        w.Key("content");
        w.String("");
      });
    } else if (type == "content_block_start") {
      const int64_t index = Int64Of(Member(doc, "index")).value_or(-1);
      const Value* block = Member(doc, "content_block");
      const std::string_view block_type = StringOf(Member(block, "type"));
      if (block_type == "text") {
        const std::string_view text = StringOf(Member(block, "text"));
        if (!text.empty()) Text(out, text);
      } else if (block_type == "tool_use") {
        const int tool = next_tool_++;
        tools_[index] = tool;
        Chunk(out, "", [&](JsonWriter& w) {
          w.Key("tool_calls");
          w.StartArray();
          w.StartObject();
          w.Key("index");
          w.Int(tool);
          w.Key("id");
          WriteString(w, StringOf(Member(block, "id")));
          w.Key("type");
          w.String("function");
          w.Key("function");
          w.StartObject();
          w.Key("name");
          WriteString(w, StringOf(Member(block, "name")));
          w.Key("arguments");
          w.String("");
          w.EndObject();
          w.EndObject();
          w.EndArray();
        });
      }
      // thinking and server-tool blocks have no chat.completion counterpart.
    } else if (type == "content_block_delta") {
      const Value* delta = Member(doc, "delta");
      const std::string_view delta_type = StringOf(Member(delta, "type"));
      if (delta_type == "text_delta") {
        const std::string_view text = StringOf(Member(delta, "text"));
        if (!text.empty()) Text(out, text);
      } else if (delta_type == "input_json_delta") {
        auto tool = tools_.find(Int64Of(Member(doc, "index")).value_or(-1));
        const std::string_view partial = StringOf(Member(delta, "partial_json"));
        if (tool != tools_.end() && !partial.empty()) {
          Chunk(out, "", [&](JsonWriter& w) {
            w.Key("tool_calls");
            w.StartArray();
            w.StartObject();
            w.Key("index");
            w.Int(tool->second);
            w.Key("function");
            w.StartObject();
            w.Key("arguments");
            WriteString(w, partial);
            w.EndObject();
            w.EndObject();
            w.EndArray();
          });
        }
      }
    } else if (type == "message_delta") {
      const Value* usage = Member(doc, "usage");
      if (auto v = Int64Of(Member(usage, "output_tokens"))) output_tokens_ = *v;
      if (auto v = Int64Of(Member(usage, "input_tokens")); v && *v > 0) input_tokens_ = *v;
      const std::string_view stop_reason = StringOf(Member(Member(doc, "delta"), "stop_reason"));
      Chunk(out, FinishReasonForStopReason(stop_reason), [](JsonWriter&) {});
    } else if (type == "message_stop") {
      if (options_.include_usage) {
        out->append("data: ");
        rapidjson::StringBuffer buffer;
        JsonWriter w(buffer);
        w.StartObject();
        Head(w);
        w.Key("choices");
        w.StartArray();
        w.EndArray();
        w.Key("usage");
        w.StartObject();
        w.Key("prompt_tokens");
        w.Int64(input_tokens_);
        w.Key("completion_tokens");
        w.Int64(output_tokens_);
        w.Key("total_tokens");
        w.Int64(SaturatingAdd(input_tokens_, output_tokens_));
        w.EndObject();
        w.EndObject();
        out->append(buffer.GetString(), buffer.GetSize());
        out->append("\n\n");
      }
      out->append("data: [DONE]\n\n");
      complete_ = true;
    } else if (type == "error") {
      const Value* error = Member(doc, "error");
      const std::string_view error_type = StringOf(Member(error, "type"));
      std::string_view message = StringOf(Member(error, "message"));
      if (message.empty()) message = "the upstream reported an error mid-stream";
      Fail(out, message, OpenAIErrorTypeFor(error_type),
           error_type.empty() ? "upstream_error" : error_type);
    }
    // ping and event types added later carry nothing for the client.
  }

  bool complete() const override { return complete_; }
  bool failed() const override { return failed_; }

 private:
  void Head(JsonWriter& w) const {
    w.Key("id");
    WriteString(w, id_);
    w.Key("object");
    w.String("chat.completion.chunk");
    w.Key("created");
    w.Int64(options_.created);
    w.Key("model");
    WriteString(w, model_);
  }

  // One chunk whose choice has the delta `fill` writes; finish_reason null when empty.
  template <typename Fn>
  void Chunk(std::string* out, std::string_view finish_reason, Fn fill) {
    rapidjson::StringBuffer buffer;
    JsonWriter w(buffer);
    w.StartObject();
    Head(w);
    w.Key("choices");
    w.StartArray();
    w.StartObject();
    w.Key("index");
    w.Int(0);
    w.Key("delta");
    w.StartObject();
    fill(w);
    w.EndObject();
    w.Key("logprobs");
    w.Null();
    w.Key("finish_reason");
    if (finish_reason.empty()) {
      w.Null();
    } else {
      WriteString(w, finish_reason);
    }
    w.EndObject();
    w.EndArray();
    w.EndObject();
    out->append("data: ");
    out->append(buffer.GetString(), buffer.GetSize());
    out->append("\n\n");
  }

  void Text(std::string* out, std::string_view text) {
    Chunk(out, "", [&](JsonWriter& w) {
      w.Key("content");
      WriteString(w, text);
    });
  }

  void Fail(std::string* out, std::string_view message, std::string_view type,
            std::string_view code) {
    failed_ = true;
    out->append(ErrorEventFor(Api::kOpenAI, message, type, code));
  }

  const StreamTranslatorOptions options_;
  std::string id_, model_;
  int64_t input_tokens_ = 0;
  int64_t output_tokens_ = 0;
  std::map<int64_t, int> tools_;  // Anthropic block index -> OpenAI tool_calls index
  int next_tool_ = 0;
  bool complete_ = false;
  bool failed_ = false;
};

// chat.completion.chunk events -> the Anthropic event sequence.
class OpenAIToAnthropicStream final : public StreamTranslator {
 public:
  void Feed(std::string_view /*event_type*/, std::string_view data, std::string* out) override {
    if (complete_ || failed_) return;
    if (data == "[DONE]") {
      End(out);
      return;
    }
    rapidjson::Document doc;
    if (!ParseJson(data, &doc) || !doc.IsObject()) {
      Fail(out, kMalformed, "api_error");
      return;
    }
    if (const Value* error = Member(doc, "error"); !IsNullOrAbsent(error)) {
      std::string_view message = StringOf(Member(error, "message"));
      if (message.empty()) message = "the upstream reported an error mid-stream";
      const std::string_view type = StringOf(Member(error, "type"));
      Fail(out, message,
           type == "invalid_request_error" || type == "rate_limit_error" ? type : "api_error");
      return;
    }
    Start(out, doc);
    if (const Value* usage = Member(doc, "usage"); usage != nullptr && usage->IsObject()) {
      input_tokens_ = Int64Of(Member(usage, "prompt_tokens")).value_or(input_tokens_);
      output_tokens_ = Int64Of(Member(usage, "completion_tokens")).value_or(output_tokens_);
    }
    const Value* choices = Member(doc, "choices");
    if (choices == nullptr || !choices->IsArray() || choices->Empty()) return;
    const Value& choice = (*choices)[0];
    const Value* delta = Member(choice, "delta");
    for (const char* field : {"content", "refusal"}) {
      const std::string_view text = StringOf(Member(delta, field));
      if (text.empty()) continue;
      if (!open_ || open_tool_ >= 0) OpenBlock(out, -1, nullptr);
      Event(out, "content_block_delta", [&](JsonWriter& w) {
        w.Key("index");
        w.Int(index_);
        w.Key("delta");
        w.StartObject();
        w.Key("type");
        w.String("text_delta");
        w.Key("text");
        WriteString(w, text);
        w.EndObject();
      });
    }
    if (const Value* calls = Member(delta, "tool_calls"); calls != nullptr && calls->IsArray()) {
      for (const Value& call : calls->GetArray()) {
        // A negative index would read as "text block" below.
        const int64_t tool = std::max<int64_t>(0, Int64Of(Member(call, "index")).value_or(0));
        if (!open_ || open_tool_ != tool) OpenBlock(out, tool, &call);
        const std::string_view arguments = StringOf(Member(Member(call, "function"), "arguments"));
        if (arguments.empty()) continue;
        Event(out, "content_block_delta", [&](JsonWriter& w) {
          w.Key("index");
          w.Int(index_);
          w.Key("delta");
          w.StartObject();
          w.Key("type");
          w.String("input_json_delta");
          w.Key("partial_json");
          WriteString(w, arguments);
          w.EndObject();
        });
      }
    }
    if (const Value* finish = Member(choice, "finish_reason"); IsString(finish)) {
      stop_reason_ = StopReasonForFinishReason(StringOf(finish));
    }
  }

  bool complete() const override { return complete_; }
  bool failed() const override { return failed_; }

 private:
  template <typename Fn>
  void Event(std::string* out, std::string_view type, Fn fill) {
    rapidjson::StringBuffer buffer;
    JsonWriter w(buffer);
    w.StartObject();
    w.Key("type");
    WriteString(w, type);
    fill(w);
    w.EndObject();
    out->append("event: ");
    out->append(type);
    out->append("\ndata: ");
    out->append(buffer.GetString(), buffer.GetSize());
    out->append("\n\n");
  }

  // message_start, once, from the first chunk's id and model.
  void Start(std::string* out, const Value& chunk) {
    if (started_) return;
    started_ = true;
    const std::string_view id = StringOf(Member(chunk, "id"));
    const std::string_view model = StringOf(Member(chunk, "model"));
    Event(out, "message_start", [&](JsonWriter& w) {
      w.Key("message");
      w.StartObject();
      w.Key("id");
      WriteString(w, id);
      w.Key("type");
      w.String("message");
      w.Key("role");
      w.String("assistant");
      w.Key("model");
      WriteString(w, model);
      w.Key("content");
      w.StartArray();
      w.EndArray();
      w.Key("stop_reason");
      w.Null();
      w.Key("stop_sequence");
      w.Null();
      w.Key("usage");
      w.StartObject();
      w.Key("input_tokens");
      w.Int64(0);
      w.Key("output_tokens");
      w.Int64(0);
      w.EndObject();
      w.EndObject();
    });
  }

  void CloseBlock(std::string* out) {
    if (!open_) return;
    Event(out, "content_block_stop", [&](JsonWriter& w) {
      w.Key("index");
      w.Int(index_);
    });
    open_ = false;
    ++index_;
  }

  // Opens a text block (tool < 0) or a tool_use block for OpenAI tool `tool`.
  void OpenBlock(std::string* out, int64_t tool, const Value* call) {
    CloseBlock(out);
    open_ = true;
    open_tool_ = tool;
    Event(out, "content_block_start", [&](JsonWriter& w) {
      w.Key("index");
      w.Int(index_);
      w.Key("content_block");
      w.StartObject();
      w.Key("type");
      if (tool < 0) {
        w.String("text");
        w.Key("text");
        w.String("");
      } else {
        w.String("tool_use");
        w.Key("id");
        WriteString(w, StringOf(Member(*call, "id")));
        w.Key("name");
        WriteString(w, StringOf(Member(Member(*call, "function"), "name")));
        w.Key("input");
        w.StartObject();
        w.EndObject();
      }
      w.EndObject();
    });
  }

  void End(std::string* out) {
    if (!started_) {
      rapidjson::Document empty;
      empty.SetObject();
      Start(out, empty);
    }
    CloseBlock(out);
    Event(out, "message_delta", [&](JsonWriter& w) {
      w.Key("delta");
      w.StartObject();
      w.Key("stop_reason");
      WriteString(w, stop_reason_);
      w.Key("stop_sequence");
      w.Null();
      w.EndObject();
      w.Key("usage");
      w.StartObject();
      w.Key("input_tokens");
      w.Int64(input_tokens_);
      w.Key("output_tokens");
      w.Int64(output_tokens_);
      w.EndObject();
    });
    Event(out, "message_stop", [](JsonWriter&) {});
    complete_ = true;
  }

  void Fail(std::string* out, std::string_view message, std::string_view type) {
    failed_ = true;
    out->append(ErrorEventFor(Api::kAnthropic, message, type, ""));
  }

  bool started_ = false;
  bool open_ = false;
  int64_t open_tool_ = -1;  // the open block's OpenAI tool index, -1 for text
  int index_ = 0;           // the open (or next) Anthropic block index
  std::string_view stop_reason_ = "end_turn";
  int64_t input_tokens_ = 0;
  int64_t output_tokens_ = 0;
  bool complete_ = false;
  bool failed_ = false;
};

}  // namespace

std::unique_ptr<StreamTranslator> NewStreamTranslator(Api upstream, Api client,
                                                      StreamTranslatorOptions options) {
  if (upstream == Api::kAnthropic && client == Api::kOpenAI) {
    return std::make_unique<AnthropicToOpenAIStream>(options);
  }
  if (upstream == Api::kOpenAI && client == Api::kAnthropic) {
    return std::make_unique<OpenAIToAnthropicStream>();
  }
  return nullptr;
}

}  // namespace switchboard::internal
