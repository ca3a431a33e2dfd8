// The wire-format translators (lib/src/translate) against the golden files
// in tests/golden/translate/<kind>/: each NAME.in.json (or NAME.in.sse) is
// translated and compared with NAME.out.json (NAME.out.sse), parsed, not
// byte for byte; NAME.error.json instead says the input is refused and
// which field the error names. SWITCHBOARD_UPDATE_GOLDEN=1 rewrites the
// .out files from the current output (review the diff before committing).
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "switchboard/proxy.h"  // SseParser
#include "translate/translate.h"

namespace switchboard::internal {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kCreated = 1700000000;
constexpr char kUpstreamModel[] = "upstream-model";

fs::path GoldenDir(const std::string& kind) { return fs::path(SWITCHBOARD_GOLDEN_DIR) / kind; }

bool Updating() {
  const char* v = std::getenv("SWITCHBOARD_UPDATE_GOLDEN");
  return v != nullptr && std::string(v) == "1";
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// The cases of a kind: the NAME of every NAME.in.<ext>, sorted.
std::vector<std::string> Cases(const std::string& kind, const std::string& ext) {
  std::vector<std::string> names;
  const std::string suffix = ".in." + ext;
  for (const auto& entry : fs::directory_iterator(GoldenDir(kind))) {
    const std::string file = entry.path().filename().string();
    if (file.size() > suffix.size() && file.substr(file.size() - suffix.size()) == suffix) {
      names.push_back(file.substr(0, file.size() - suffix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string Pretty(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.c_str(), json.size());
  if (doc.HasParseError()) return json;
  rapidjson::StringBuffer buffer;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buffer);
  w.SetIndent(' ', 2);
  doc.Accept(w);
  return std::string(buffer.GetString(), buffer.GetSize()) + "\n";
}

// Whether two JSON texts parse to equal values (member order aside).
bool SameJson(const std::string& a, const std::string& b) {
  rapidjson::Document x, y;
  x.Parse(a.c_str(), a.size());
  y.Parse(b.c_str(), b.size());
  return !x.HasParseError() && !y.HasParseError() && x == y;
}

// An SSE text as (event type, data) pairs.
std::vector<std::pair<std::string, std::string>> Events(const std::string& text) {
  SseParser parser;
  std::vector<std::string> raw;
  parser.Feed(text, &raw);
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& e : raw) out.emplace_back(SseParser::EventType(e), SseParser::Data(e));
  return out;
}

// Compares two SSE texts event by event: same types, data equal as JSON
// (or as text when not JSON, like [DONE]). "" when equal, else the difference.
std::string SseDifference(const std::string& actual, const std::string& expected) {
  const auto a = Events(actual);
  const auto e = Events(expected);
  if (a.size() != e.size()) {
    return "event count " + std::to_string(a.size()) + " != " + std::to_string(e.size());
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != e[i].first) return "event " + std::to_string(i) + " type " + a[i].first;
    const bool same = a[i].second == e[i].second || SameJson(a[i].second, e[i].second);
    if (!same) return "event " + std::to_string(i) + " data " + a[i].second;
  }
  return "";
}

// Checks `result` against NAME.out.json, or NAME.error.json when it exists.
void CheckAgainstGolden(const std::string& kind, const std::string& name,
                        const Result<std::string>& result) {
  INFO(kind << "/" << name);
  const fs::path error_file = GoldenDir(kind) / (name + ".error.json");
  if (fs::exists(error_file)) {
    REQUIRE_FALSE(result.ok());
    CHECK(result.status().code() == StatusCode::kInvalidArgument);
    rapidjson::Document expected;
    const std::string text = ReadFile(error_file);
    expected.Parse(text.c_str(), text.size());
    REQUIRE(expected.IsObject());
    CHECK(result.status().param() == expected["param"].GetString());
    CHECK_FALSE(result.status().message().empty());
    return;
  }
  INFO((result.ok() ? "" : result.status().ToString()));
  REQUIRE(result.ok());
  const fs::path out_file = GoldenDir(kind) / (name + ".out.json");
  if (Updating()) WriteFile(out_file, Pretty(*result));
  INFO("actual: " << *result);
  CHECK(SameJson(*result, ReadFile(out_file)));
}

void RunRequestGoldens(const std::string& kind, Result<std::string> (*fn)(std::string_view,
                                                                          std::string_view)) {
  const auto cases = Cases(kind, "json");
  REQUIRE_FALSE(cases.empty());
  for (const std::string& name : cases) {
    const std::string in = ReadFile(GoldenDir(kind) / (name + ".in.json"));
    CheckAgainstGolden(kind, name, fn(in, kUpstreamModel));
  }
}

TEST_CASE("OpenAI chat requests translate to Anthropic messages as the golden files say",
          "[translate]") {
  RunRequestGoldens("request_openai_to_anthropic", &OpenAIChatToAnthropicRequest);
}

TEST_CASE("Anthropic messages requests translate to OpenAI chat as the golden files say",
          "[translate]") {
  RunRequestGoldens("request_anthropic_to_openai", &AnthropicToOpenAIChatRequest);
}

TEST_CASE("Anthropic messages translate to chat completions as the golden files say",
          "[translate]") {
  const std::string kind = "response_anthropic_to_openai";
  const auto cases = Cases(kind, "json");
  REQUIRE_FALSE(cases.empty());
  for (const std::string& name : cases) {
    const std::string in = ReadFile(GoldenDir(kind) / (name + ".in.json"));
    CheckAgainstGolden(kind, name, AnthropicToOpenAIChatResponse(in, kCreated));
  }
}

TEST_CASE("Chat completions translate to Anthropic messages as the golden files say",
          "[translate]") {
  const std::string kind = "response_openai_to_anthropic";
  const auto cases = Cases(kind, "json");
  REQUIRE_FALSE(cases.empty());
  for (const std::string& name : cases) {
    const std::string in = ReadFile(GoldenDir(kind) / (name + ".in.json"));
    CheckAgainstGolden(kind, name, OpenAIChatToAnthropicResponse(in));
  }
}

void RunErrorGoldens(const std::string& kind, Api from, Api to) {
  const auto cases = Cases(kind, "json");
  REQUIRE_FALSE(cases.empty());
  for (const std::string& name : cases) {
    INFO(kind << "/" << name);
    const std::string in_text = ReadFile(GoldenDir(kind) / (name + ".in.json"));
    rapidjson::Document in;
    in.Parse(in_text.c_str(), in_text.size());
    REQUIRE(in.IsObject());
    std::string body;
    if (in["body"].IsString()) {
      body = in["body"].GetString();
    } else {
      rapidjson::StringBuffer buffer;
      rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
      in["body"].Accept(w);
      body = buffer.GetString();
    }
    const TranslatedError e = TranslateErrorBody(from, to, in["status"].GetInt(), body);
    const std::string actual =
        "{\"status\":" + std::to_string(e.status) + ",\"body\":" + e.body + "}";
    const fs::path out_file = GoldenDir(kind) / (name + ".out.json");
    if (Updating()) WriteFile(out_file, Pretty(actual));
    INFO("actual: " << actual);
    CHECK(SameJson(actual, ReadFile(out_file)));
  }
}

TEST_CASE("Anthropic error bodies translate to OpenAI's shape and status", "[translate]") {
  RunErrorGoldens("error_anthropic_to_openai", Api::kAnthropic, Api::kOpenAI);
}

TEST_CASE("OpenAI error bodies translate to Anthropic's shape", "[translate]") {
  RunErrorGoldens("error_openai_to_anthropic", Api::kOpenAI, Api::kAnthropic);
}

void RunStreamGoldens(const std::string& kind, Api upstream, Api client) {
  const auto cases = Cases(kind, "sse");
  REQUIRE_FALSE(cases.empty());
  for (const std::string& name : cases) {
    INFO(kind << "/" << name);
    StreamTranslatorOptions options;
    options.created = kCreated;
    const fs::path options_file = GoldenDir(kind) / (name + ".options.json");
    if (fs::exists(options_file)) {
      const std::string text = ReadFile(options_file);
      rapidjson::Document o;
      o.Parse(text.c_str(), text.size());
      REQUIRE(o.IsObject());
      options.include_usage = o.HasMember("include_usage") && o["include_usage"].GetBool();
    }
    auto translator = NewStreamTranslator(upstream, client, options);
    REQUIRE(translator != nullptr);
    std::string out;
    // One upstream event at a time, as the proxy feeds them.
    for (const auto& [type, data] : Events(ReadFile(GoldenDir(kind) / (name + ".in.sse")))) {
      translator->Feed(type, data, &out);
    }
    const fs::path out_file = GoldenDir(kind) / (name + ".out.sse");
    if (Updating()) WriteFile(out_file, out);
    const std::string expected = ReadFile(out_file);
    INFO("actual:\n" << out);
    CHECK(SseDifference(out, expected) == "");
    // The last expected event says how the stream ended.
    const auto events = Events(expected);
    REQUIRE_FALSE(events.empty());
    const auto& last = events.back();
    CHECK(translator->failed() == (last.first == "error"));
    CHECK(translator->complete() == (last.second == "[DONE]" || last.first == "message_stop"));
  }
}

TEST_CASE("Anthropic event streams translate to chat.completion.chunk streams", "[translate]") {
  RunStreamGoldens("stream_anthropic_to_openai", Api::kAnthropic, Api::kOpenAI);
}

TEST_CASE("Chat completion chunk streams translate to Anthropic event streams", "[translate]") {
  RunStreamGoldens("stream_openai_to_anthropic", Api::kOpenAI, Api::kAnthropic);
}

TEST_CASE("A stream translator ignores events after the stream ended", "[translate]") {
  auto translator = NewStreamTranslator(Api::kOpenAI, Api::kAnthropic);
  std::string out;
  translator->Feed("", "[DONE]", &out);
  REQUIRE(translator->complete());
  const std::string ended = out;
  translator->Feed("", R"({"choices":[{"delta":{"content":"late"}}]})", &out);
  CHECK(out == ended);
}

TEST_CASE("An OpenAI request without max_tokens gets the documented Anthropic default",
          "[translate]") {
  auto r = OpenAIChatToAnthropicRequest(R"({"model":"m","messages":[{"role":"user","content":"x"}]})",
                                        "up");
  REQUIRE(r.ok());
  rapidjson::Document doc;
  doc.Parse(r->c_str(), r->size());
  CHECK(doc["max_tokens"].GetInt64() == kDefaultAnthropicMaxTokens);
  CHECK(std::string(doc["model"].GetString()) == "up");
}

TEST_CASE("Translators refuse deeply nested JSON instead of recursing", "[translate]") {
  const std::string deep = R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":)" +
                           std::string(10000, '[') + std::string(10000, ']') + "}";
  CHECK_FALSE(OpenAIChatToAnthropicRequest(deep, "up").ok());
  CHECK_FALSE(AnthropicToOpenAIChatRequest(deep, "up").ok());
  auto translator = NewStreamTranslator(Api::kAnthropic, Api::kOpenAI);
  std::string out;
  translator->Feed("message_start", std::string(10000, '[') + std::string(10000, ']'), &out);
  CHECK(translator->failed());
}

}  // namespace
}  // namespace switchboard::internal
