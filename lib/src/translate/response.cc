// Whole-response and error-body translation, both ways.
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/json.h"   // AppendJsonString
#include "switchboard/proxy.h"  // ErrorJsonFor, OpenAIErrorJson
#include "translate/json_util.h"
#include "translate/translate.h"

namespace switchboard::internal {
namespace {

using rapidjson::Value;

// Most of a non-JSON upstream error body quoted in the translated message.
constexpr size_t kMaxQuotedBody = 512;

}  // namespace

std::string_view FinishReasonForStopReason(std::string_view stop_reason) {
  if (stop_reason == "max_tokens") return "length";
  if (stop_reason == "tool_use") return "tool_calls";
  if (stop_reason == "refusal") return "content_filter";
  return "stop";  // end_turn, stop_sequence, pause_turn, or none given
}

std::string_view StopReasonForFinishReason(std::string_view finish_reason) {
  if (finish_reason == "length") return "max_tokens";
  if (finish_reason == "tool_calls" || finish_reason == "function_call") return "tool_use";
  if (finish_reason == "content_filter") return "refusal";
  return "end_turn";  // stop, or none given
}

Result<std::string> AnthropicToOpenAIChatResponse(std::string_view body, int64_t created) {
  rapidjson::Document doc;
  if (!ParseJson(body, &doc) || !doc.IsObject() || !IsString(Member(doc, "id"))) {
    return InvalidArgumentError("the upstream answer is not an Anthropic message");
  }
  std::string text;
  bool has_text = false;
  std::vector<const Value*> tool_uses;
  if (const Value* content = Member(doc, "content"); content != nullptr && content->IsArray()) {
    for (const Value& block : content->GetArray()) {
      const std::string_view type = StringOf(Member(block, "type"));
      if (type == "text") {
        text += StringOf(Member(block, "text"));
        has_text = true;
      } else if (type == "tool_use") {
        tool_uses.push_back(&block);
      }
      // thinking, redacted_thinking, server tool blocks: no OpenAI counterpart.
    }
  }
  const Value* usage = Member(doc, "usage");
  const int64_t input = Int64Of(Member(usage, "input_tokens")).value_or(0);
  const int64_t output = Int64Of(Member(usage, "output_tokens")).value_or(0);

  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("id");
  WriteString(w, StringOf(Member(doc, "id")));
  w.Key("object");
  w.String("chat.completion");
  w.Key("created");
  w.Int64(created);
  w.Key("model");
  WriteString(w, StringOf(Member(doc, "model")));
  w.Key("choices");
  w.StartArray();
  w.StartObject();
  w.Key("index");
  w.Int(0);
  w.Key("message");
  w.StartObject();
  w.Key("role");
  w.String("assistant");
  w.Key("content");
  if (has_text || tool_uses.empty()) {
    WriteString(w, text);
  } else {
    w.Null();
  }
  w.Key("refusal");
  w.Null();
  if (!tool_uses.empty()) {
    w.Key("tool_calls");
    w.StartArray();
    for (const Value* use : tool_uses) {
      w.StartObject();
      w.Key("id");
      WriteString(w, StringOf(Member(*use, "id")));
      w.Key("type");
      w.String("function");
      w.Key("function");
      w.StartObject();
      w.Key("name");
      WriteString(w, StringOf(Member(*use, "name")));
      w.Key("arguments");
      const Value* input_value = Member(*use, "input");
      WriteString(w, input_value != nullptr ? Serialize(*input_value) : "{}");
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }
  w.EndObject();
  w.Key("logprobs");
  w.Null();
  w.Key("finish_reason");
  WriteString(w, FinishReasonForStopReason(StringOf(Member(doc, "stop_reason"))));
  w.EndObject();
  w.EndArray();
  w.Key("usage");
  w.StartObject();
  w.Key("prompt_tokens");
  w.Int64(input);
  w.Key("completion_tokens");
  w.Int64(output);
  w.Key("total_tokens");
  w.Int64(SaturatingAdd(input, output));
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

Result<std::string> OpenAIChatToAnthropicResponse(std::string_view body) {
  rapidjson::Document doc;
  if (!ParseJson(body, &doc) || !doc.IsObject()) {
    return InvalidArgumentError("the upstream answer is not a chat completion");
  }
  const Value* choices = Member(doc, "choices");
  if (choices == nullptr || !choices->IsArray() || choices->Empty()) {
    return InvalidArgumentError("the upstream answer is not a chat completion");
  }
  const Value& choice = (*choices)[0];
  const Value* message = Member(choice, "message");
  const Value* usage = Member(doc, "usage");
  const int64_t input = Int64Of(Member(usage, "prompt_tokens")).value_or(0);
  const int64_t output = Int64Of(Member(usage, "completion_tokens")).value_or(0);

  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("id");
  WriteString(w, StringOf(Member(doc, "id")));
  w.Key("type");
  w.String("message");
  w.Key("role");
  w.String("assistant");
  w.Key("model");
  WriteString(w, StringOf(Member(doc, "model")));
  w.Key("content");
  w.StartArray();
  std::string_view text = StringOf(Member(message, "content"));
  if (text.empty()) text = StringOf(Member(message, "refusal"));
  if (!text.empty()) {
    w.StartObject();
    w.Key("type");
    w.String("text");
    w.Key("text");
    WriteString(w, text);
    w.EndObject();
  }
  if (const Value* calls = Member(message, "tool_calls"); calls != nullptr && calls->IsArray()) {
    for (const Value& call : calls->GetArray()) {
      const Value* function = Member(call, "function");
      w.StartObject();
      w.Key("type");
      w.String("tool_use");
      w.Key("id");
      WriteString(w, StringOf(Member(call, "id")));
      w.Key("name");
      WriteString(w, StringOf(Member(function, "name")));
      w.Key("input");
      rapidjson::Document input;
      const std::string_view arguments = StringOf(Member(function, "arguments"));
      if (ParseJson(arguments, &input) && input.IsObject()) {
        input.Accept(w);
      } else {
        // Anthropic's input is always an object; unreadable arguments become {}.
        w.StartObject();
        w.EndObject();
      }
      w.EndObject();
    }
  }
  w.EndArray();
  w.Key("stop_reason");
  WriteString(w, StopReasonForFinishReason(StringOf(Member(choice, "finish_reason"))));
  w.Key("stop_sequence");
  w.Null();
  w.Key("usage");
  w.StartObject();
  w.Key("input_tokens");
  w.Int64(input);
  w.Key("output_tokens");
  w.Int64(output);
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string_view OpenAIErrorTypeFor(std::string_view anthropic_type) {
  if (anthropic_type == "api_error" || anthropic_type == "overloaded_error") return "server_error";
  if (anthropic_type == "request_too_large") return "invalid_request_error";
  if (anthropic_type.empty()) return "upstream_error";
  return anthropic_type;  // invalid_request_error, authentication_error, permission_error,
                          // not_found_error, rate_limit_error: the same words
}

namespace {

std::string Quote(std::string_view body) {
  std::string s(body.substr(0, kMaxQuotedBody));
  if (body.size() > kMaxQuotedBody) s += "...";
  return s;
}

}  // namespace

TranslatedError TranslateErrorBody(Api from, Api to, int status, std::string_view body) {
  TranslatedError out;
  out.status = status;
  rapidjson::Document doc;
  const bool json = ParseJson(body, &doc) && doc.IsObject();
  const Value* error = json ? Member(doc, "error") : nullptr;
  std::string message;
  std::string type;
  std::string code;
  if (from == Api::kAnthropic) {
    message = std::string(StringOf(Member(error, "message")));
    type = std::string(StringOf(Member(error, "type")));
  } else {
    message = std::string(StringOf(Member(error, "message")));
    if (message.empty() && error != nullptr && error->IsString()) message = StringOf(error);
    type = std::string(StringOf(Member(error, "type")));
    if (const Value* c = Member(error, "code"); IsString(c)) code = StringOf(c);
  }
  if (message.empty()) {
    message = "upstream answered " + std::to_string(status);
    if (!body.empty()) message += ": " + Quote(body);
  }
  if (to == Api::kOpenAI) {
    // 529 (Anthropic overloaded) is no status an OpenAI client knows.
    if (out.status == 529) out.status = 503;
    const std::string_view anthropic_type = type;
    out.body = OpenAIErrorJson(message, OpenAIErrorTypeFor(anthropic_type),
                               anthropic_type.empty() ? "upstream_error" : anthropic_type);
  } else {
    out.body = ErrorJsonFor(Api::kAnthropic, status, message, type, code);
  }
  return out;
}

std::string ErrorEventFor(Api client, std::string_view message, std::string_view type,
                          std::string_view code) {
  // The HTTP status only picks Anthropic's error type; 500 gives api_error
  // unless the type says otherwise.
  std::string body;
  if (client == Api::kAnthropic) {
    std::string out = "{\"type\":\"error\",\"error\":{\"type\":";
    AppendJsonString(type.empty() ? "api_error" : type, &out);
    out += ",\"message\":";
    AppendJsonString(message, &out);
    out += "}}";
    body = std::move(out);
  } else {
    body = OpenAIErrorJson(message, type.empty() ? "upstream_error" : type, code);
  }
  return "event: error\ndata: " + body + "\n\n";
}

}  // namespace switchboard::internal
