// The response and error-body translators (lib/src/translate/response.cc)
// with arbitrary upstream bodies. Input: byte 0 picks what is translated
// (bit 0: from Anthropic or from OpenAI; bit 1: a 2xx answer or an error
// body; the high bits pick the error's HTTP status); the rest is the body.
// Invariants: no crash or sanitizer report; a translated answer is a JSON
// object of the client's shape with consistent usage; a translated error is
// always the client's error shape with a 4xx/5xx status.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "rapidjson/document.h"
#include "translate/translate.h"

namespace {

using namespace switchboard;

constexpr int kStatuses[] = {400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 529};

rapidjson::Document ParseObject(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  FUZZ_CHECK(!doc.HasParseError() && doc.IsObject());
  return doc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool from_anthropic = (data[0] & 1) == 0;
  const bool error_body = (data[0] & 2) != 0;
  const int status = kStatuses[(data[0] >> 2) % (sizeof(kStatuses) / sizeof(kStatuses[0]))];
  const std::string_view body = fuzz::AsView(data + 1, size - 1);
  const Api from = from_anthropic ? Api::kAnthropic : Api::kOpenAI;
  const Api to = from_anthropic ? Api::kOpenAI : Api::kAnthropic;

  if (error_body) {
    const internal::TranslatedError e = internal::TranslateErrorBody(from, to, status, body);
    FUZZ_CHECK(e.status >= 400 && e.status < 600);
    const rapidjson::Document doc = ParseObject(e.body);
    FUZZ_CHECK(doc.HasMember("error") && doc["error"].IsObject());
    const auto& err = doc["error"];
    FUZZ_CHECK(err.HasMember("message") && err["message"].IsString());
    FUZZ_CHECK(err.HasMember("type") && err["type"].IsString());
    if (to == Api::kAnthropic) {
      FUZZ_CHECK(std::string(doc["type"].GetString()) == "error");
    }
    return 0;
  }

  if (from_anthropic) {
    Result<std::string> out = internal::AnthropicToOpenAIChatResponse(body, 1700000000);
    if (!out.ok()) return 0;
    const rapidjson::Document doc = ParseObject(*out);
    FUZZ_CHECK(std::string(doc["object"].GetString()) == "chat.completion");
    FUZZ_CHECK(doc["choices"].IsArray() && doc["choices"].Size() == 1);
    FUZZ_CHECK(doc["choices"][0]["finish_reason"].IsString());
    const auto& usage = doc["usage"];
    FUZZ_CHECK(usage["total_tokens"].IsInt64() && usage["prompt_tokens"].IsInt64() &&
               usage["completion_tokens"].IsInt64());
  } else {
    Result<std::string> out = internal::OpenAIChatToAnthropicResponse(body);
    if (!out.ok()) return 0;
    const rapidjson::Document doc = ParseObject(*out);
    FUZZ_CHECK(std::string(doc["type"].GetString()) == "message");
    FUZZ_CHECK(doc["content"].IsArray());
    for (const auto& block : doc["content"].GetArray()) {
      const std::string type = block["type"].GetString();
      FUZZ_CHECK(type == "text" || type == "tool_use");
      if (type == "tool_use") FUZZ_CHECK(block["input"].IsObject());
    }
    FUZZ_CHECK(doc["stop_reason"].IsString());
  }
  return 0;
}
