// The request translators (lib/src/translate/request.cc) with arbitrary
// client bodies. Input: byte 0 picks the direction (even: OpenAI chat ->
// Anthropic messages, odd: the other way); the rest is the client's body.
// Invariants: no crash or sanitizer report; a refusal is kInvalidArgument; an
// accepted request is a JSON object whose "model" is the upstream id, and an
// Anthropic one has a positive max_tokens and non-empty turns that
// alternate between user and assistant.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "rapidjson/document.h"
#include "translate/translate.h"

namespace {

using namespace switchboard;

constexpr char kUpstreamModel[] = "upstream-model";

void CheckAnthropicRequest(const rapidjson::Document& doc) {
  FUZZ_CHECK(doc.HasMember("max_tokens") && doc["max_tokens"].IsInt64() &&
             doc["max_tokens"].GetInt64() > 0);
  FUZZ_CHECK(doc.HasMember("messages") && doc["messages"].IsArray());
  const auto& messages = doc["messages"];
  FUZZ_CHECK(!messages.Empty());
  std::string previous;
  for (const auto& m : messages.GetArray()) {
    FUZZ_CHECK(m.IsObject() && m.HasMember("role") && m["role"].IsString());
    const std::string role = m["role"].GetString();
    FUZZ_CHECK(role == "user" || role == "assistant");
    FUZZ_CHECK(role != previous);
    previous = role;
    FUZZ_CHECK(m.HasMember("content") && m["content"].IsArray() && !m["content"].Empty());
  }
}

void CheckOpenAIRequest(const rapidjson::Document& doc) {
  FUZZ_CHECK(doc.HasMember("messages") && doc["messages"].IsArray());
  for (const auto& m : doc["messages"].GetArray()) {
    FUZZ_CHECK(m.IsObject() && m.HasMember("role") && m["role"].IsString());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool to_anthropic = (data[0] & 1) == 0;
  const std::string_view body = fuzz::AsView(data + 1, size - 1);
  Result<std::string> out = to_anthropic
                                ? internal::OpenAIChatToAnthropicRequest(body, kUpstreamModel)
                                : internal::AnthropicToOpenAIChatRequest(body, kUpstreamModel);
  if (!out.ok()) {
    FUZZ_CHECK(out.status().code() == StatusCode::kInvalidArgument);
    FUZZ_CHECK(!out.status().message().empty());
    return 0;
  }
  rapidjson::Document doc;
  doc.Parse(out->data(), out->size());
  FUZZ_CHECK(!doc.HasParseError() && doc.IsObject());
  FUZZ_CHECK(doc.HasMember("model") && doc["model"].IsString() &&
             std::string(doc["model"].GetString()) == kUpstreamModel);
  if (to_anthropic) {
    CheckAnthropicRequest(doc);
  } else {
    CheckOpenAIRequest(doc);
  }
  return 0;
}
