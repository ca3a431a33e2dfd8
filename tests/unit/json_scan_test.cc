#include "json/json_scan.h"

#include <catch2/catch.hpp>
#include <string>

namespace {

using switchboard::internal::TopLevelValueSpan;

std::string ValueAt(const std::string& json, const char* key) {
  auto span = TopLevelValueSpan(json, key);
  if (!span) return "<none>";
  return json.substr(span->first, span->second - span->first);
}

}  // namespace

TEST_CASE("TopLevelValueSpan finds a top-level string member, quotes included", "[json]") {
  CHECK(ValueAt(R"({"model":"gpt-4o"})", "model") == R"("gpt-4o")");
  CHECK(ValueAt(" {\n \"a\" : [1, {\"model\": \"no\"}], \"model\"\t:\t\"m\\\"x\" } ", "model") ==
        R"("m\"x")");
  CHECK(ValueAt(R"({"s":"}{][\"model\":","model":"yes","z":{"model":"no"}})", "model") ==
        R"("yes")");
  CHECK(ValueAt(R"({"n":-1.5e+3,"t":true,"x":null,"model":""})", "model") == R"("")");
}

TEST_CASE("TopLevelValueSpan declines what a parser must decide", "[json]") {
  CHECK(ValueAt(R"({"messages":[]})", "model") == "<none>");              // absent
  CHECK(ValueAt(R"({"metadata":{"model":"x"}})", "model") == "<none>");  // nested only
  CHECK(ValueAt(R"({"model":"a","model":"b"})", "model") == "<none>");   // twice
  CHECK(ValueAt(R"({"model":5})", "model") == "<none>");                 // not a string
  CHECK(ValueAt(R"({"mod\u0065l":"x"})", "model") == "<none>");          // escaped key
  CHECK(ValueAt(R"([{"model":"x"}])", "model") == "<none>");             // not an object
  CHECK(ValueAt(R"({"model":"unterminated)", "model") == "<none>");
}
