// Request translation, both ways. See docs/translation.md for the table.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "translate/json_util.h"
#include "translate/translate.h"

namespace switchboard::internal {
namespace {

using rapidjson::Value;

std::string Index(std::string_view base, size_t i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

Status Unsupported(std::string param, std::string_view why) {
  std::string message = "'" + param + "' " + std::string(why);
  return InvalidArgumentError(std::move(message), std::move(param));
}

// One serialized JSON value, written with its own writer.
template <typename Fn>
std::string JsonOf(Fn fn) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  fn(w);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string TextBlock(std::string_view text) {
  return JsonOf([&](JsonWriter& w) {
    w.StartObject();
    w.Key("type");
    w.String("text");
    w.Key("text");
    WriteString(w, text);
    w.EndObject();
  });
}

// ---------------------------------------------------------------------------
// OpenAI -> Anthropic

// A turn of the Anthropic conversation: consecutive same-role messages merge.
struct Turn {
  std::string role;
  std::vector<std::string> blocks;  // serialized content blocks
};

void AddBlocks(std::vector<Turn>* turns, std::string_view role, std::vector<std::string> blocks) {
  if (blocks.empty()) return;  // Anthropic refuses empty turns
  if (turns->empty() || turns->back().role != role) turns->push_back(Turn{std::string(role), {}});
  for (std::string& b : blocks) turns->back().blocks.push_back(std::move(b));
}

// "data:image/png;base64,AAAA" -> media type and data; false when not base64.
bool SplitDataUrl(std::string_view url, std::string_view* media_type, std::string_view* data) {
  if (url.substr(0, 5) != "data:") return false;
  const size_t comma = url.find(',');
  if (comma == std::string_view::npos) return false;
  std::string_view meta = url.substr(5, comma - 5);
  constexpr std::string_view kBase64 = ";base64";
  if (meta.size() < kBase64.size() || meta.substr(meta.size() - kBase64.size()) != kBase64) {
    return false;
  }
  *media_type = meta.substr(0, meta.size() - kBase64.size());
  *data = url.substr(comma + 1);
  return !media_type->empty();
}

// The text of an OpenAI content value (string or array of text parts), for
// roles whose Anthropic counterpart takes text only.
Result<std::string> TextOnly(const Value* content, const std::string& param) {
  if (IsNullOrAbsent(content)) return std::string();
  if (content->IsString()) return std::string(StringOf(content));
  if (!content->IsArray()) return Unsupported(param, "must be a string or an array of parts");
  std::string text;
  for (rapidjson::SizeType j = 0; j < content->Size(); ++j) {
    const Value& part = (*content)[j];
    const std::string_view type = StringOf(Member(part, "type"));
    if (type != "text" && type != "refusal") {
      return Unsupported(Index(param, j) + ".type", "cannot be translated here (text only)");
    }
    if (!text.empty()) text += "\n";
    text += StringOf(Member(part, type == "text" ? "text" : "refusal"));
  }
  return text;
}

// The content blocks of a user or assistant message's content.
Status ContentBlocks(const Value* content, const std::string& param,
                     std::vector<std::string>* blocks) {
  if (IsNullOrAbsent(content)) return Status();
  if (content->IsString()) {
    if (content->GetStringLength() > 0) blocks->push_back(TextBlock(StringOf(content)));
    return Status();
  }
  if (!content->IsArray()) return Unsupported(param, "must be a string or an array of parts");
  for (rapidjson::SizeType j = 0; j < content->Size(); ++j) {
    const Value& part = (*content)[j];
    const std::string part_param = Index(param, j);
    const std::string_view type = StringOf(Member(part, "type"));
    if (type == "text" || type == "refusal") {
      const std::string_view text = StringOf(Member(part, type == "text" ? "text" : "refusal"));
      if (!text.empty()) blocks->push_back(TextBlock(text));
      continue;
    }
    if (type == "image_url") {
      const Value* image = Member(part, "image_url");
      std::string_view url = image != nullptr && image->IsString() ? StringOf(image)
                                                                   : StringOf(Member(image, "url"));
      if (url.empty()) return Unsupported(part_param + ".image_url.url", "is required");
      std::string_view media_type, data;
      const bool inline_data = SplitDataUrl(url, &media_type, &data);
      if (!inline_data && url.substr(0, 5) == "data:") {
        return Unsupported(part_param + ".image_url.url", "must be a base64 data URL or an http(s) URL");
      }
      blocks->push_back(JsonOf([&](JsonWriter& w) {
        w.StartObject();
        w.Key("type");
        w.String("image");
        w.Key("source");
        w.StartObject();
        w.Key("type");
        if (inline_data) {
          w.String("base64");
          w.Key("media_type");
          WriteString(w, media_type);
          w.Key("data");
          WriteString(w, data);
        } else {
          w.String("url");
          w.Key("url");
          WriteString(w, url);
        }
        w.EndObject();
        w.EndObject();
      }));
      continue;
    }
    return Unsupported(part_param + ".type", "cannot be translated for an Anthropic backend");
  }
  return Status();
}

Status ToolUseBlocks(const Value& tool_calls, const std::string& param,
                     std::vector<std::string>* blocks) {
  if (!tool_calls.IsArray()) return Unsupported(param, "must be an array");
  for (rapidjson::SizeType j = 0; j < tool_calls.Size(); ++j) {
    const Value& call = tool_calls[j];
    const std::string call_param = Index(param, j);
    const Value* function = Member(call, "function");
    if (!IsString(Member(call, "id"))) return Unsupported(call_param + ".id", "is required");
    if (!IsString(Member(function, "name"))) {
      return Unsupported(call_param + ".function.name", "is required");
    }
    const std::string_view arguments = StringOf(Member(function, "arguments"));
    rapidjson::Document input;
    if (!arguments.empty() && (!ParseJson(arguments, &input) || !input.IsObject())) {
      return Unsupported(call_param + ".function.arguments", "must be a JSON object");
    }
    blocks->push_back(JsonOf([&](JsonWriter& w) {
      w.StartObject();
      w.Key("type");
      w.String("tool_use");
      w.Key("id");
      WriteString(w, StringOf(Member(call, "id")));
      w.Key("name");
      WriteString(w, StringOf(Member(function, "name")));
      w.Key("input");
      if (arguments.empty()) {
        w.StartObject();
        w.EndObject();
      } else {
        input.Accept(w);
      }
      w.EndObject();
    }));
  }
  return Status();
}

}  // namespace

Result<std::string> OpenAIChatToAnthropicRequest(std::string_view body,
                                                 std::string_view upstream_model) {
  rapidjson::Document doc;
  if (!ParseJson(body, &doc) || !doc.IsObject()) {
    return InvalidArgumentError("request body is not a valid JSON object");
  }
  // What Anthropic cannot do: refuse rather than answer something else.
  if (const Value* n = Member(doc, "n"); !IsNullOrAbsent(n) && !(n->IsInt() && n->GetInt() == 1)) {
    return Unsupported("n", "must be 1: an Anthropic backend returns a single choice");
  }
  if (const Value* v = Member(doc, "logprobs"); v != nullptr && v->IsBool() && v->GetBool()) {
    return Unsupported("logprobs", "is not available from an Anthropic backend");
  }
  if (!IsNullOrAbsent(Member(doc, "top_logprobs"))) {
    return Unsupported("top_logprobs", "is not available from an Anthropic backend");
  }
  if (const Value* rf = Member(doc, "response_format"); !IsNullOrAbsent(rf)) {
    if (StringOf(Member(rf, "type")) != "text") {
      return Unsupported("response_format", "other than {\"type\":\"text\"} cannot be enforced by an Anthropic backend");
    }
  }
  for (const char* legacy : {"functions", "function_call"}) {
    if (!IsNullOrAbsent(Member(doc, legacy))) {
      return Unsupported(legacy, "is not translated; use tools and tool_choice");
    }
  }
  if (!IsNullOrAbsent(Member(doc, "audio"))) {
    return Unsupported("audio", "is not available from an Anthropic backend");
  }
  if (const Value* m = Member(doc, "modalities"); m != nullptr && m->IsArray()) {
    for (const Value& x : m->GetArray()) {
      if (StringOf(&x) != "text") return Unsupported("modalities", "may only contain \"text\"");
    }
  }

  const Value* messages = Member(doc, "messages");
  if (messages == nullptr || !messages->IsArray() || messages->Empty()) {
    return Unsupported("messages", "must be a non-empty array");
  }
  std::string system;
  std::vector<Turn> turns;
  for (rapidjson::SizeType i = 0; i < messages->Size(); ++i) {
    const Value& message = (*messages)[i];
    const std::string param = Index("messages", i);
    const std::string_view role = StringOf(Member(message, "role"));
    const Value* content = Member(message, "content");
    if (role == "system" || role == "developer") {
      auto text = TextOnly(content, param + ".content");
      if (!text.ok()) return text.status();
      if (text->empty()) continue;
      if (!system.empty()) system += "\n\n";
      system += *text;
    } else if (role == "user") {
      std::vector<std::string> blocks;
      SWITCHBOARD_RETURN_IF_ERROR(ContentBlocks(content, param + ".content", &blocks));
      AddBlocks(&turns, "user", std::move(blocks));
    } else if (role == "assistant") {
      std::vector<std::string> blocks;
      SWITCHBOARD_RETURN_IF_ERROR(ContentBlocks(content, param + ".content", &blocks));
      if (const Value* calls = Member(message, "tool_calls"); !IsNullOrAbsent(calls)) {
        SWITCHBOARD_RETURN_IF_ERROR(ToolUseBlocks(*calls, param + ".tool_calls", &blocks));
      }
      AddBlocks(&turns, "assistant", std::move(blocks));
    } else if (role == "tool") {
      const Value* id = Member(message, "tool_call_id");
      if (!IsString(id)) return Unsupported(param + ".tool_call_id", "is required");
      auto text = TextOnly(content, param + ".content");
      if (!text.ok()) return text.status();
      std::vector<std::string> blocks;
      blocks.push_back(JsonOf([&](JsonWriter& w) {
        w.StartObject();
        w.Key("type");
        w.String("tool_result");
        w.Key("tool_use_id");
        WriteString(w, StringOf(id));
        w.Key("content");
        WriteString(w, *text);
        w.EndObject();
      }));
      // Tool results travel in the user turn that follows the tool calls.
      AddBlocks(&turns, "user", std::move(blocks));
    } else {
      return Unsupported(param + ".role", "must be system, developer, user, assistant or tool");
    }
  }
  if (turns.empty()) return Unsupported("messages", "has no user or assistant content");

  int64_t max_tokens = kDefaultAnthropicMaxTokens;
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    const Value* v = Member(doc, name);
    if (IsNullOrAbsent(v)) continue;
    if (!v->IsInt64() || v->GetInt64() < 1) return Unsupported(name, "must be a positive integer");
    max_tokens = v->GetInt64();
  }

  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("model");
  WriteString(w, upstream_model);
  w.Key("max_tokens");
  w.Int64(max_tokens);
  if (!system.empty()) {
    w.Key("system");
    WriteString(w, system);
  }
  w.Key("messages");
  w.StartArray();
  for (const Turn& turn : turns) {
    w.StartObject();
    w.Key("role");
    WriteString(w, turn.role);
    w.Key("content");
    w.StartArray();
    for (const std::string& block : turn.blocks) {
      w.RawValue(block.data(), block.size(), rapidjson::kObjectType);
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  for (const char* name : {"temperature", "top_p"}) {
    const Value* v = Member(doc, name);
    if (IsNullOrAbsent(v)) continue;
    if (!v->IsNumber()) return Unsupported(name, "must be a number");
    w.Key(name);
    v->Accept(w);
  }
  if (const Value* stop = Member(doc, "stop"); !IsNullOrAbsent(stop)) {
    std::vector<std::string_view> sequences;
    if (stop->IsString()) {
      sequences.push_back(StringOf(stop));
    } else if (stop->IsArray()) {
      for (const Value& s : stop->GetArray()) {
        if (!s.IsString()) return Unsupported("stop", "must be a string or an array of strings");
        sequences.push_back(StringOf(&s));
      }
    } else {
      return Unsupported("stop", "must be a string or an array of strings");
    }
    w.Key("stop_sequences");
    w.StartArray();
    for (std::string_view s : sequences) {
      if (!s.empty()) WriteString(w, s);
    }
    w.EndArray();
  }
  if (const Value* stream = Member(doc, "stream"); stream != nullptr && stream->IsBool()) {
    w.Key("stream");
    w.Bool(stream->GetBool());
  }
  const Value* tools = Member(doc, "tools");
  if (!IsNullOrAbsent(tools)) {
    if (!tools->IsArray()) return Unsupported("tools", "must be an array");
    w.Key("tools");
    w.StartArray();
    for (rapidjson::SizeType i = 0; i < tools->Size(); ++i) {
      const Value& tool = (*tools)[i];
      const std::string param = Index("tools", i);
      if (StringOf(Member(tool, "type")) != "function") {
        return Unsupported(param + ".type", "must be \"function\"");
      }
      const Value* function = Member(tool, "function");
      if (!IsString(Member(function, "name"))) {
        return Unsupported(param + ".function.name", "is required");
      }
      w.StartObject();
      w.Key("name");
      WriteString(w, StringOf(Member(function, "name")));
      if (const Value* d = Member(function, "description"); IsString(d)) {
        w.Key("description");
        WriteString(w, StringOf(d));
      }
      w.Key("input_schema");
      if (const Value* p = Member(function, "parameters"); p != nullptr && p->IsObject()) {
        p->Accept(w);
      } else {
        w.StartObject();
        w.Key("type");
        w.String("object");
        w.Key("properties");
        w.StartObject();
        w.EndObject();
        w.EndObject();
      }
      w.EndObject();
    }
    w.EndArray();
  }
  const Value* choice = Member(doc, "tool_choice");
  const Value* parallel = Member(doc, "parallel_tool_calls");
  const bool no_parallel = parallel != nullptr && parallel->IsBool() && !parallel->GetBool();
  if (!IsNullOrAbsent(choice) || (no_parallel && !IsNullOrAbsent(tools))) {
    std::string_view type = "auto";
    std::string_view name;
    if (choice != nullptr && choice->IsString()) {
      const std::string_view c = StringOf(choice);
      if (c == "auto") {
        type = "auto";
      } else if (c == "none") {
        type = "none";
      } else if (c == "required") {
        type = "any";
      } else {
        return Unsupported("tool_choice", "must be auto, none, required or a function");
      }
    } else if (choice != nullptr && choice->IsObject()) {
      name = StringOf(Member(Member(choice, "function"), "name"));
      if (StringOf(Member(choice, "type")) != "function" || name.empty()) {
        return Unsupported("tool_choice", "must be auto, none, required or a function");
      }
      type = "tool";
    } else if (!IsNullOrAbsent(choice)) {
      return Unsupported("tool_choice", "must be auto, none, required or a function");
    }
    w.Key("tool_choice");
    w.StartObject();
    w.Key("type");
    WriteString(w, type);
    if (!name.empty()) {
      w.Key("name");
      WriteString(w, name);
    }
    if (no_parallel && type != "none") {
      w.Key("disable_parallel_tool_use");
      w.Bool(true);
    }
    w.EndObject();
  }
  if (const Value* user = Member(doc, "user"); IsString(user)) {
    w.Key("metadata");
    w.StartObject();
    w.Key("user_id");
    WriteString(w, StringOf(user));
    w.EndObject();
  }
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

// ---------------------------------------------------------------------------
// Anthropic -> OpenAI

namespace {

// The text of an Anthropic content value (string or text blocks).
Result<std::string> AnthropicText(const Value* content, const std::string& param,
                                  std::string_view separator) {
  if (IsNullOrAbsent(content)) return std::string();
  if (content->IsString()) return std::string(StringOf(content));
  if (!content->IsArray()) return Unsupported(param, "must be a string or an array of blocks");
  std::string text;
  bool first = true;
  for (rapidjson::SizeType k = 0; k < content->Size(); ++k) {
    const Value& block = (*content)[k];
    if (StringOf(Member(block, "type")) != "text") {
      return Unsupported(Index(param, k) + ".type", "cannot be translated here (text only)");
    }
    if (!first) text += separator;
    first = false;
    text += StringOf(Member(block, "text"));
  }
  return text;
}

void WriteImagePart(JsonWriter& w, std::string_view url) {
  w.StartObject();
  w.Key("type");
  w.String("image_url");
  w.Key("image_url");
  w.StartObject();
  w.Key("url");
  WriteString(w, url);
  w.EndObject();
  w.EndObject();
}

// Writes the OpenAI messages for one Anthropic user message: its tool
// results first (each a "tool" message, as OpenAI wants them right after
// the assistant's tool calls), then the rest as one user message.
Status WriteUserMessage(JsonWriter& w, const Value& message, const std::string& param) {
  const Value* content = Member(message, "content");
  if (content != nullptr && content->IsString()) {
    w.StartObject();
    w.Key("role");
    w.String("user");
    w.Key("content");
    WriteString(w, StringOf(content));
    w.EndObject();
    return Status();
  }
  if (content == nullptr || !content->IsArray()) {
    return Unsupported(param + ".content", "must be a string or an array of blocks");
  }
  std::vector<std::string> parts;  // serialized OpenAI content parts
  bool text_only = true;
  for (rapidjson::SizeType j = 0; j < content->Size(); ++j) {
    const Value& block = (*content)[j];
    const std::string block_param = Index(param + ".content", j);
    const std::string_view type = StringOf(Member(block, "type"));
    if (type == "text") {
      parts.push_back(JsonOf([&](JsonWriter& pw) {
        pw.StartObject();
        pw.Key("type");
        pw.String("text");
        pw.Key("text");
        WriteString(pw, StringOf(Member(block, "text")));
        pw.EndObject();
      }));
    } else if (type == "image") {
      const Value* source = Member(block, "source");
      const std::string_view source_type = StringOf(Member(source, "type"));
      std::string url;
      if (source_type == "base64") {
        url = "data:" + std::string(StringOf(Member(source, "media_type"))) + ";base64," +
              std::string(StringOf(Member(source, "data")));
      } else if (source_type == "url") {
        url = std::string(StringOf(Member(source, "url")));
      } else {
        return Unsupported(block_param + ".source.type", "must be base64 or url");
      }
      text_only = false;
      parts.push_back(JsonOf([&](JsonWriter& pw) { WriteImagePart(pw, url); }));
    } else if (type == "tool_result") {
      const Value* id = Member(block, "tool_use_id");
      if (!IsString(id)) return Unsupported(block_param + ".tool_use_id", "is required");
      auto text = AnthropicText(Member(block, "content"), block_param + ".content", "\n");
      if (!text.ok()) return text.status();
      w.StartObject();
      w.Key("role");
      w.String("tool");
      w.Key("tool_call_id");
      WriteString(w, StringOf(id));
      w.Key("content");
      WriteString(w, *text);
      w.EndObject();
    } else {
      return Unsupported(block_param + ".type", "cannot be translated for an OpenAI backend");
    }
  }
  if (parts.empty()) return Status();
  w.StartObject();
  w.Key("role");
  w.String("user");
  w.Key("content");
  if (text_only && parts.size() == 1) {
    rapidjson::Document part;
    part.Parse(parts[0].data(), parts[0].size());
    w.String(part["text"].GetString(), part["text"].GetStringLength());
  } else {
    w.StartArray();
    for (const std::string& p : parts) w.RawValue(p.data(), p.size(), rapidjson::kObjectType);
    w.EndArray();
  }
  w.EndObject();
  return Status();
}

Status WriteAssistantMessage(JsonWriter& w, const Value& message, const std::string& param) {
  const Value* content = Member(message, "content");
  std::string text;
  bool has_text = false;
  std::vector<const Value*> tool_uses;
  if (content != nullptr && content->IsString()) {
    text = std::string(StringOf(content));
    has_text = true;
  } else if (content != nullptr && content->IsArray()) {
    for (rapidjson::SizeType j = 0; j < content->Size(); ++j) {
      const Value& block = (*content)[j];
      const std::string block_param = Index(param + ".content", j);
      const std::string_view type = StringOf(Member(block, "type"));
      if (type == "text") {
        text += StringOf(Member(block, "text"));
        has_text = true;
      } else if (type == "tool_use") {
        if (!IsString(Member(block, "id"))) return Unsupported(block_param + ".id", "is required");
        if (!IsString(Member(block, "name"))) {
          return Unsupported(block_param + ".name", "is required");
        }
        tool_uses.push_back(&block);
      } else if (type == "thinking" || type == "redacted_thinking") {
        continue;  // earlier reasoning has no OpenAI counterpart: dropped
      } else {
        return Unsupported(block_param + ".type", "cannot be translated for an OpenAI backend");
      }
    }
  } else {
    return Unsupported(param + ".content", "must be a string or an array of blocks");
  }
  if (!has_text && tool_uses.empty()) return Status();
  w.StartObject();
  w.Key("role");
  w.String("assistant");
  w.Key("content");
  if (has_text) {
    WriteString(w, text);
  } else {
    w.Null();
  }
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
      const Value* input = Member(*use, "input");
      const std::string arguments = input != nullptr ? Serialize(*input) : "{}";
      WriteString(w, arguments);
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }
  w.EndObject();
  return Status();
}

}  // namespace

Result<std::string> AnthropicToOpenAIChatRequest(std::string_view body,
                                                 std::string_view upstream_model) {
  rapidjson::Document doc;
  if (!ParseJson(body, &doc) || !doc.IsObject()) {
    return InvalidArgumentError("request body is not a valid JSON object");
  }
  if (const Value* thinking = Member(doc, "thinking"); !IsNullOrAbsent(thinking)) {
    if (StringOf(Member(thinking, "type")) != "disabled") {
      return Unsupported("thinking", "(extended thinking) is not available from an OpenAI backend");
    }
  }
  if (!IsNullOrAbsent(Member(doc, "mcp_servers"))) {
    return Unsupported("mcp_servers", "is not available from an OpenAI backend");
  }
  const Value* messages = Member(doc, "messages");
  if (messages == nullptr || !messages->IsArray() || messages->Empty()) {
    return Unsupported("messages", "must be a non-empty array");
  }
  auto system = AnthropicText(Member(doc, "system"), "system", "\n\n");
  if (!system.ok()) return system.status();

  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("model");
  WriteString(w, upstream_model);
  w.Key("messages");
  w.StartArray();
  if (!system->empty()) {
    w.StartObject();
    w.Key("role");
    w.String("system");
    w.Key("content");
    WriteString(w, *system);
    w.EndObject();
  }
  for (rapidjson::SizeType i = 0; i < messages->Size(); ++i) {
    const Value& message = (*messages)[i];
    const std::string param = Index("messages", i);
    const std::string_view role = StringOf(Member(message, "role"));
    if (role == "user") {
      SWITCHBOARD_RETURN_IF_ERROR(WriteUserMessage(w, message, param));
    } else if (role == "assistant") {
      SWITCHBOARD_RETURN_IF_ERROR(WriteAssistantMessage(w, message, param));
    } else {
      return Unsupported(param + ".role", "must be user or assistant");
    }
  }
  w.EndArray();
  if (const Value* v = Member(doc, "max_tokens"); !IsNullOrAbsent(v)) {
    if (!v->IsInt64() || v->GetInt64() < 1) {
      return Unsupported("max_tokens", "must be a positive integer");
    }
    w.Key("max_tokens");
    w.Int64(v->GetInt64());
  }
  for (const char* name : {"temperature", "top_p"}) {
    const Value* v = Member(doc, name);
    if (IsNullOrAbsent(v)) continue;
    if (!v->IsNumber()) return Unsupported(name, "must be a number");
    w.Key(name);
    v->Accept(w);
  }
  if (const Value* stop = Member(doc, "stop_sequences"); !IsNullOrAbsent(stop)) {
    if (!stop->IsArray()) return Unsupported("stop_sequences", "must be an array of strings");
    w.Key("stop");
    w.StartArray();
    for (const Value& s : stop->GetArray()) {
      if (!s.IsString()) return Unsupported("stop_sequences", "must be an array of strings");
      WriteString(w, StringOf(&s));
    }
    w.EndArray();
  }
  if (const Value* stream = Member(doc, "stream"); stream != nullptr && stream->IsBool()) {
    w.Key("stream");
    w.Bool(stream->GetBool());
    if (stream->GetBool()) {
      // Without it an OpenAI stream never says how many tokens it used.
      w.Key("stream_options");
      w.StartObject();
      w.Key("include_usage");
      w.Bool(true);
      w.EndObject();
    }
  }
  const Value* tools = Member(doc, "tools");
  if (!IsNullOrAbsent(tools)) {
    if (!tools->IsArray()) return Unsupported("tools", "must be an array");
    w.Key("tools");
    w.StartArray();
    for (rapidjson::SizeType i = 0; i < tools->Size(); ++i) {
      const Value& tool = (*tools)[i];
      const std::string param = Index("tools", i);
      const Value* type = Member(tool, "type");
      if (!IsNullOrAbsent(type) && StringOf(type) != "custom") {
        return Unsupported(param + ".type",
                           "(an Anthropic server tool) is not available from an OpenAI backend");
      }
      if (!IsString(Member(tool, "name"))) return Unsupported(param + ".name", "is required");
      w.StartObject();
      w.Key("type");
      w.String("function");
      w.Key("function");
      w.StartObject();
      w.Key("name");
      WriteString(w, StringOf(Member(tool, "name")));
      if (const Value* d = Member(tool, "description"); IsString(d)) {
        w.Key("description");
        WriteString(w, StringOf(d));
      }
      if (const Value* schema = Member(tool, "input_schema"); schema != nullptr) {
        w.Key("parameters");
        schema->Accept(w);
      }
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }
  if (const Value* choice = Member(doc, "tool_choice"); !IsNullOrAbsent(choice)) {
    const std::string_view type = StringOf(Member(choice, "type"));
    w.Key("tool_choice");
    if (type == "auto") {
      w.String("auto");
    } else if (type == "any") {
      w.String("required");
    } else if (type == "none") {
      w.String("none");
    } else if (type == "tool" && IsString(Member(choice, "name"))) {
      w.StartObject();
      w.Key("type");
      w.String("function");
      w.Key("function");
      w.StartObject();
      w.Key("name");
      WriteString(w, StringOf(Member(choice, "name")));
      w.EndObject();
      w.EndObject();
    } else {
      return Unsupported("tool_choice", "must be auto, any, none or a named tool");
    }
    const Value* no_parallel = Member(choice, "disable_parallel_tool_use");
    if (no_parallel != nullptr && no_parallel->IsBool() && no_parallel->GetBool() &&
        type != "none") {
      w.Key("parallel_tool_calls");
      w.Bool(false);
    }
  }
  if (const Value* user = Member(Member(doc, "metadata"), "user_id"); IsString(user)) {
    w.Key("user");
    WriteString(w, StringOf(user));
  }
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace switchboard::internal
