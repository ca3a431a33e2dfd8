// The admin API's JSON wire forms: parsing create/patch bodies, config
// patches and import files, and writing every response shape.
#include "switchboard/json.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "support/makers.h"

namespace switchboard {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::MakeBackend;
using testing::TestEpoch;

// A backend with every field away from its default.
Backend FullBackend() {
  Backend b;
  b.id = "bkd_0123";
  b.name = "openai-main";
  b.label = "OpenAI \"primary\"";
  b.api_base_url = "https://api.openai.com/v1";
  b.api = Api::kAnthropic;
  b.timeout_seconds = 120;
  b.rpm_limit = 500;
  b.tpm_limit = 90000;
  b.max_concurrency = 8;
  b.pool = "primary";
  b.enabled = true;
  b.status = BackendStatus::kCooling;
  b.model_mappings["*"] = ModelMapping{"*", 1};
  b.model_mappings["gpt-4o"] = ModelMapping{"gpt-4o-2024-08-06", 3};
  b.source = BackendSource::kImport;
  b.cooldown_until = TestEpoch() + seconds(90) + milliseconds(500);
  b.consecutive_429_count = 2;
  b.consecutive_failures = 1;
  b.last_error = "429 from upstream";
  b.metadata = R"({"team":"ml"})";
  b.created_at = TestEpoch();
  b.updated_at = TestEpoch() + hours(1);
  b.api_key_ciphertext = "sb1:k1:U0VDUkVUQ0lQSEVSVEVYVA==";
  b.api_key_hint = "...f00d";
  return b;
}

// Expects `json` to be refused as malformed: kInvalidArgument with no param.
void CheckMalformed(const Status& s) {
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.param().empty());
  CHECK_FALSE(IsFieldError(s));
}

// Expects a field error naming `param`.
void CheckFieldError(const Status& s, const std::string& param) {
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.param() == param);
  CHECK(IsFieldError(s));
}

std::string Nested(int depth) {
  std::string text;
  for (int i = 0; i < depth; ++i) text += R"({"a":)";
  text += "1";
  for (int i = 0; i < depth; ++i) text += "}";
  return text;
}

// --- ParseBackendInput --------------------------------------------------------

TEST_CASE("ParseBackendInput reads every writable field", "[json]") {
  auto in = ParseBackendInput(R"({
    "name": "openai-main", "label": "Primary", "api_base_url": "https://api.openai.com/v1",
    "api_key": "sk-test-0123456789abcdef", "api": "anthropic", "timeout_seconds": 90,
    "rpm_limit": 500, "tpm_limit": 90000, "max_concurrency": 4, "pool": "fallback",
    "enabled": false, "model_mappings": {"gpt-4o": "gpt-4o-2024-08-06"},
    "source": "demo", "metadata": {"team": "ml"}
  })");
  REQUIRE(in.ok());
  CHECK(in->name == "openai-main");
  CHECK(in->label == "Primary");
  CHECK(in->api_base_url == "https://api.openai.com/v1");
  CHECK(in->api_key == "sk-test-0123456789abcdef");
  CHECK(in->api == Api::kAnthropic);
  CHECK(in->timeout_seconds == 90);
  CHECK(in->rpm_limit == 500);
  CHECK(in->tpm_limit == 90000);
  CHECK(in->max_concurrency == 4);
  CHECK(in->pool == "fallback");
  CHECK(in->enabled == false);
  REQUIRE(in->model_mappings.has_value());
  CHECK(in->model_mappings->size() == 1);
  CHECK(in->model_mappings->at("gpt-4o") == ModelMapping{"gpt-4o-2024-08-06", 1});
  CHECK(in->source == BackendSource::kDemo);
  CHECK(in->metadata == R"({"team":"ml"})");
}

TEST_CASE("ParseBackendInput leaves fields the body does not mention unset", "[json]") {
  auto in = ParseBackendInput(R"({"rpm_limit": 60})");
  REQUIRE(in.ok());
  CHECK(in->rpm_limit == 60);
  CHECK_FALSE(in->name.has_value());
  CHECK_FALSE(in->label.has_value());
  CHECK_FALSE(in->api_base_url.has_value());
  CHECK_FALSE(in->api_key.has_value());
  CHECK_FALSE(in->api.has_value());
  CHECK_FALSE(in->timeout_seconds.has_value());
  CHECK_FALSE(in->tpm_limit.has_value());
  CHECK_FALSE(in->max_concurrency.has_value());
  CHECK_FALSE(in->pool.has_value());
  CHECK_FALSE(in->enabled.has_value());
  CHECK_FALSE(in->model_mappings.has_value());
  CHECK_FALSE(in->source.has_value());
  CHECK_FALSE(in->metadata.has_value());
}

TEST_CASE("ParseBackendInput reports malformed JSON with an empty param and the offset",
          "[json]") {
  auto in = ParseBackendInput(R"({"name": })");
  REQUIRE_FALSE(in.ok());
  CheckMalformed(in.status());
  CHECK(in.status().message().rfind("request body is not valid JSON: ", 0) == 0);
  CHECK(in.status().message().find("at offset 9") != std::string::npos);
}

TEST_CASE("ParseBackendInput reports an empty body as malformed", "[json]") {
  auto in = ParseBackendInput("");
  REQUIRE_FALSE(in.ok());
  CheckMalformed(in.status());
}

TEST_CASE("ParseBackendInput refuses a body that is not an object", "[json]") {
  for (const char* body : {"[]", R"("name")", "3", "null", "true"}) {
    INFO(body);
    auto in = ParseBackendInput(body);
    REQUIRE_FALSE(in.ok());
    CheckMalformed(in.status());
  }
}

TEST_CASE("ParseBackendInput refuses trailing content after the object", "[json]") {
  auto in = ParseBackendInput(R"({"name":"a"} {"name":"b"})");
  REQUIRE_FALSE(in.ok());
  CheckMalformed(in.status());
}

TEST_CASE("ParseBackendInput refuses a raw NUL byte in the body", "[json]") {
  auto in = ParseBackendInput(std::string("{}\0{\"x\"", 7));
  REQUIRE_FALSE(in.ok());
  CheckMalformed(in.status());
  CHECK(in.status().message().find("offset 2") != std::string::npos);
}

TEST_CASE("ParseBackendInput refuses invalid UTF-8 as malformed", "[json]") {
  auto in = ParseBackendInput("{\"label\": \"bad \xff byte\"}");
  REQUIRE_FALSE(in.ok());
  CheckMalformed(in.status());
}

TEST_CASE("ParseBackendInput refuses an unknown field, naming it", "[json]") {
  auto in = ParseBackendInput(R"({"name": "a", "nmae": "b"})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "nmae");
  CHECK(in.status().message() == "unknown field");
}

TEST_CASE("ParseBackendInput refuses a field given twice", "[json]") {
  auto in = ParseBackendInput(R"({"pool": "primary", "pool": "fallback"})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "pool");
}

TEST_CASE("ParseBackendInput ignores read-only fields", "[json]") {
  auto in = ParseBackendInput(R"({
    "id": "bkd_x", "status": "error", "api_key_set": true, "api_key_hint": "...abcd",
    "cooldown_until": "2026-01-01T00:00:00Z", "consecutive_429_count": 7,
    "consecutive_failures": 2, "last_error": null, "created_at": 5, "updated_at": [],
    "name": "kept"
  })");
  REQUIRE(in.ok());
  CHECK(in->name == "kept");
  CHECK_FALSE(in->api_key.has_value());
  CHECK_FALSE(in->label.has_value());
}

TEST_CASE("ParseBackendInput refuses a string field of another type", "[json]") {
  for (const char* field : {"name", "api_base_url", "pool"}) {
    INFO(field);
    auto in = ParseBackendInput(std::string(R"({")") + field + R"(": 5})");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), field);
    CHECK(in.status().message() == "must be a string");
  }
}

TEST_CASE("ParseBackendInput reads a null label as empty", "[json]") {
  auto in = ParseBackendInput(R"({"label": null})");
  REQUIRE(in.ok());
  CHECK(in->label == "");
}

TEST_CASE("ParseBackendInput refuses a label that is neither string nor null", "[json]") {
  auto in = ParseBackendInput(R"({"label": ["x"]})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "label");
}

TEST_CASE("ParseBackendInput refuses an api other than openai or anthropic", "[json]") {
  for (const char* value : {R"("azure")", R"("OpenAI")", R"("")", "1", "null"}) {
    INFO(value);
    auto in = ParseBackendInput(std::string(R"({"api": )") + value + "}");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), "api");
  }
}

TEST_CASE("ParseBackendInput refuses a source other than manual, import or demo", "[json]") {
  auto in = ParseBackendInput(R"({"source": "cli"})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "source");
}

TEST_CASE("ParseBackendInput refuses a timeout that is not an integer", "[json]") {
  for (const char* value : {"1.5", R"("60")", "true", "null", "{}"}) {
    INFO(value);
    auto in = ParseBackendInput(std::string(R"({"timeout_seconds": )") + value + "}");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), "timeout_seconds");
    CHECK(in.status().message() == "must be an integer");
  }
}

TEST_CASE("ParseBackendInput accepts an integral number written as a float", "[json]") {
  auto in = ParseBackendInput(R"({"timeout_seconds": 60.0, "rpm_limit": 1e3})");
  REQUIRE(in.ok());
  CHECK(in->timeout_seconds == 60);
  CHECK(in->rpm_limit == 1000);
}

TEST_CASE("ParseBackendInput refuses a timeout beyond the int range", "[json]") {
  for (const char* value : {"2147483648", "-2147483649", "1e300"}) {
    INFO(value);
    auto in = ParseBackendInput(std::string(R"({"timeout_seconds": )") + value + "}");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), "timeout_seconds");
    CHECK(in.status().message() == "is out of range");
  }
}

TEST_CASE("ParseBackendInput keeps negative timeouts for validation to report", "[json]") {
  auto in = ParseBackendInput(R"({"timeout_seconds": -5})");
  REQUIRE(in.ok());
  CHECK(in->timeout_seconds == -5);
}

TEST_CASE("ParseBackendInput reads limits as exact 64-bit integers", "[json]") {
  auto in = ParseBackendInput(
      R"({"rpm_limit": 9007199254740993, "tpm_limit": 9223372036854775807,
          "max_concurrency": -1})");
  REQUIRE(in.ok());
  CHECK(in->rpm_limit == int64_t{9007199254740993});
  CHECK(in->tpm_limit == std::numeric_limits<int64_t>::max());
  CHECK(in->max_concurrency == -1);
}

TEST_CASE("ParseBackendInput refuses a limit beyond the int64 range", "[json]") {
  auto in = ParseBackendInput(R"({"tpm_limit": 9223372036854775808})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "tpm_limit");
}

TEST_CASE("ParseBackendInput refuses a limit that is not a number", "[json]") {
  auto in = ParseBackendInput(R"({"max_concurrency": "8"})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "max_concurrency");
}

TEST_CASE("ParseBackendInput refuses an enabled flag that is not a boolean", "[json]") {
  auto in = ParseBackendInput(R"({"enabled": 1})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "enabled");
}

TEST_CASE("ParseBackendInput serializes metadata as compact JSON", "[json]") {
  auto in = ParseBackendInput(R"({"metadata": { "a" : [1, 2.5, "x"], "b": {"c": null} }})");
  REQUIRE(in.ok());
  CHECK(in->metadata == R"({"a":[1,2.5,"x"],"b":{"c":null}})");
}

TEST_CASE("ParseBackendInput refuses metadata that is not an object", "[json]") {
  for (const char* value : {"[]", R"("{}")", "null", "1"}) {
    INFO(value);
    auto in = ParseBackendInput(std::string(R"({"metadata": )") + value + "}");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), "metadata");
  }
}

TEST_CASE("ParseBackendInput accepts metadata nested 32 levels deep", "[json]") {
  auto in = ParseBackendInput(R"({"metadata": )" + Nested(32) + "}");
  REQUIRE(in.ok());
  CHECK(*in->metadata == Nested(32));
}

TEST_CASE("ParseBackendInput refuses metadata nested deeper than 32 levels", "[json]") {
  auto in = ParseBackendInput(R"({"metadata": )" + Nested(33) + "}");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "metadata");
}

TEST_CASE("ParseBackendInput survives very deep nesting without exhausting the stack",
          "[json]") {
  const int depth = 1000000;
  auto unclosed = ParseBackendInput(std::string(depth, '['));
  REQUIRE_FALSE(unclosed.ok());
  CheckMalformed(unclosed.status());

  auto closed = ParseBackendInput(R"({"metadata": )" + Nested(depth) + "}");
  REQUIRE_FALSE(closed.ok());
  CheckFieldError(closed.status(), "metadata");
}

TEST_CASE("ParseBackendInput keeps a huge string intact for validation to refuse", "[json]") {
  const std::string name(4 << 20, 'a');
  auto in = ParseBackendInput(R"({"name": ")" + name + R"("})");
  REQUIRE(in.ok());
  CHECK(in->name->size() == name.size());
  Backend b = MakeBackend("x");
  ApplyBackendInput(*in, &b);
  const auto errors = ValidateBackend(b);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].param == "name");
}

TEST_CASE("ParseBackendInput keeps an escaped NUL inside a string", "[json]") {
  auto in = ParseBackendInput(R"({"name": "ab\u0000cd"})");
  REQUIRE(in.ok());
  CHECK(*in->name == std::string("ab\0cd", 5));
  Backend b = MakeBackend("x");
  ApplyBackendInput(*in, &b);
  const auto errors = ValidateBackend(b);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].param == "name");
}

TEST_CASE("ParseBackendInput truncates a huge unknown field name in param", "[json]") {
  const std::string key(10000, 'k');
  auto in = ParseBackendInput(R"({")" + key + R"(": 1})");
  REQUIRE_FALSE(in.ok());
  CHECK(IsFieldError(in.status()));
  CHECK(in.status().param() == std::string(128, 'k') + "...");
}

TEST_CASE("ParseBackendInput reads a plain string mapping as the upstream model with weight 1",
          "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"gpt-4o": "gpt-4o-2024-08-06"}})");
  REQUIRE(in.ok());
  CHECK(in->model_mappings->at("gpt-4o") == ModelMapping{"gpt-4o-2024-08-06", 1});
}

TEST_CASE("ParseBackendInput reads an object mapping with its weight", "[json]") {
  auto in = ParseBackendInput(
      R"({"model_mappings": {"gpt-4o": {"upstream_model": "gpt-4o-mini", "weight": 5},
                             "o1": {"upstream_model": "o1-preview"}}})");
  REQUIRE(in.ok());
  CHECK(in->model_mappings->at("gpt-4o") == ModelMapping{"gpt-4o-mini", 5});
  CHECK(in->model_mappings->at("o1") == ModelMapping{"o1-preview", 1});
}

TEST_CASE("ParseBackendInput treats a wildcard mapping without upstream_model as pass-through",
          "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"*": {"weight": 2}}})");
  REQUIRE(in.ok());
  CHECK(in->model_mappings->at("*") == ModelMapping{"*", 2});
}

TEST_CASE("ParseBackendInput leaves a named mapping without upstream_model empty", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"gpt-4o": {"weight": 2}}})");
  REQUIRE(in.ok());
  CHECK(in->model_mappings->at("gpt-4o") == ModelMapping{"", 2});

  Backend b = MakeBackend("x");
  ApplyBackendInput(*in, &b);
  const auto errors = ValidateBackend(b);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].param == "model_mappings.gpt-4o.upstream_model");
}

TEST_CASE("ParseBackendInput names an unknown key inside a mapping", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"gpt-4o": {"upstrem_model": "x"}}})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "model_mappings.gpt-4o.upstrem_model");
  CHECK(in.status().message() == "unknown field");
}

TEST_CASE("ParseBackendInput refuses a mapping that is neither string nor object", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"gpt-4o": 5}})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "model_mappings.gpt-4o");
}

TEST_CASE("ParseBackendInput refuses a mapping weight that is not an integer", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"gpt-4o": {"upstream_model": "x",
                                                                 "weight": "2"}}})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "model_mappings.gpt-4o.weight");
}

TEST_CASE("ParseBackendInput refuses a mapping upstream_model that is not a string", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {"gpt-4o": {"upstream_model": null}}})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "model_mappings.gpt-4o.upstream_model");
}

TEST_CASE("ParseBackendInput refuses model_mappings that is not an object", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": ["gpt-4o"]})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "model_mappings");
}

TEST_CASE("ParseBackendInput reads an empty model_mappings object as no mappings", "[json]") {
  auto in = ParseBackendInput(R"({"model_mappings": {}})");
  REQUIRE(in.ok());
  REQUIRE(in->model_mappings.has_value());
  CHECK(in->model_mappings->empty());
}

TEST_CASE("ParseBackendInput refuses an empty api_key", "[json]") {
  auto in = ParseBackendInput(R"({"api_key": ""})");
  REQUIRE_FALSE(in.ok());
  CheckFieldError(in.status(), "api_key");
  CHECK(in.status().message() == "must not be empty");
}

TEST_CASE("ParseBackendInput refuses an api_key that is not a string", "[json]") {
  for (const char* value : {"null", "12345678", "true"}) {
    INFO(value);
    auto in = ParseBackendInput(std::string(R"({"api_key": )") + value + "}");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), "api_key");
  }
}

TEST_CASE("ParseBackendInput refuses an api_key with control characters", "[json]") {
  for (const char* value : {R"("sk-abc\r\nX-Injected: 1")", R"("sk-\u0000abc")",
                            R"("sk-\tabc")"}) {
    INFO(value);
    auto in = ParseBackendInput(std::string(R"({"api_key": )") + value + "}");
    REQUIRE_FALSE(in.ok());
    CheckFieldError(in.status(), "api_key");
  }
}

TEST_CASE("ParseBackendInput accepts an api_key of 4096 characters but not 4097", "[json]") {
  auto ok = ParseBackendInput(R"({"api_key": ")" + std::string(4096, 'k') + R"("})");
  REQUIRE(ok.ok());
  CHECK(ok->api_key->size() == 4096);
  auto too_long = ParseBackendInput(R"({"api_key": ")" + std::string(4097, 'k') + R"("})");
  REQUIRE_FALSE(too_long.ok());
  CheckFieldError(too_long.status(), "api_key");
}

// --- ApplyBackendInput -------------------------------------------------------

TEST_CASE("ApplyBackendInput copies only the fields the input has", "[json]") {
  Backend b = MakeBackend("keep");
  const Backend before = b;
  BackendInput in;
  in.rpm_limit = 42;
  in.enabled = false;
  in.model_mappings = std::map<std::string, ModelMapping>{{"*", ModelMapping{"*", 1}}};
  ApplyBackendInput(in, &b);

  Backend expected = before;
  expected.rpm_limit = 42;
  expected.enabled = false;
  expected.model_mappings = {{"*", ModelMapping{"*", 1}}};
  CHECK(b == expected);
}

TEST_CASE("ApplyBackendInput leaves the stored key to the caller", "[json]") {
  Backend b = MakeBackend("keep");
  b.api_key_ciphertext = "sb1:k1:abc";
  b.api_key_hint = "...wxyz";
  BackendInput in;
  in.api_key = "sk-new-key-0123456789";
  ApplyBackendInput(in, &b);
  CHECK(b.api_key_ciphertext == "sb1:k1:abc");
  CHECK(b.api_key_hint == "...wxyz");
}

// --- BackendToJson -------------------------------------------------------------

TEST_CASE("BackendToJson writes the contract's Backend object", "[json]") {
  CHECK(BackendToJson(FullBackend()) ==
        R"({"id":"bkd_0123","name":"openai-main","label":"OpenAI \"primary\"",)"
        R"("api_base_url":"https://api.openai.com/v1","api_key_set":true,)"
        R"("api_key_hint":"...f00d","api":"anthropic","timeout_seconds":120,"rpm_limit":500,)"
        R"("tpm_limit":90000,"max_concurrency":8,"pool":"primary","enabled":true,)"
        R"("status":"cooling","model_mappings":{"*":{"upstream_model":"*","weight":1},)"
        R"("gpt-4o":{"upstream_model":"gpt-4o-2024-08-06","weight":3}},"source":"import",)"
        R"("cooldown_until":"2026-01-01T00:01:30Z","consecutive_429_count":2,)"
        R"("metadata":{"team":"ml"},"created_at":"2026-01-01T00:00:00Z",)"
        R"("updated_at":"2026-01-01T01:00:00Z","last_error":"429 from upstream"})");
}

TEST_CASE("BackendToJson never contains the api key ciphertext", "[json]") {
  const Backend b = FullBackend();
  const std::string json = BackendToJson(b);
  CHECK(json.find(b.api_key_ciphertext) == std::string::npos);
  CHECK(json.find("U0VDUkVUQ0lQSEVSVEVYVA") == std::string::npos);
  CHECK(json.find(R"("api_key":)") == std::string::npos);
  CHECK(json.find("ciphertext") == std::string::npos);
  CHECK(BackendListToJson({b}).find(b.api_key_ciphertext) == std::string::npos);
}

TEST_CASE("BackendToJson reports no key as api_key_set false", "[json]") {
  const std::string json = BackendToJson(MakeBackend("nokey"));
  CHECK(json.find(R"("api_key_set":false,"api_key_hint":"")") != std::string::npos);
}

TEST_CASE("BackendToJson shows a disabled backend as disabled whatever its stored status",
          "[json]") {
  Backend b = FullBackend();
  b.enabled = false;
  b.status = BackendStatus::kError;
  CHECK(BackendToJson(b).find(R"("enabled":false,"status":"disabled")") != std::string::npos);
}

TEST_CASE("BackendToJson writes null for an absent cooldown and last error", "[json]") {
  Backend b = FullBackend();
  b.cooldown_until.reset();
  b.last_error.clear();
  const std::string json = BackendToJson(b);
  CHECK(json.find(R"("cooldown_until":null)") != std::string::npos);
  CHECK(json.find(R"("last_error":null)") != std::string::npos);
}

TEST_CASE("BackendToJson falls back to an empty metadata object for unusable stored text",
          "[json]") {
  for (const std::string& stored :
       {std::string("not json"), std::string("[1,2]"), std::string(""),
        std::string("{}\0{\"x\":1}", 10), Nested(33)}) {
    INFO(stored);
    Backend b = FullBackend();
    b.metadata = stored;
    CHECK(BackendToJson(b).find(R"("metadata":{},)") != std::string::npos);
  }
}

TEST_CASE("BackendToJson replaces invalid UTF-8 in stored text", "[json]") {
  Backend b = FullBackend();
  b.label = "caf\xc3";  // truncated two-byte sequence
  CHECK(BackendToJson(b).find("\"label\":\"caf\xEF\xBF\xBD\"") != std::string::npos);
}

TEST_CASE("BackendToJson output parses back to the same writable fields", "[json]") {
  Backend original = FullBackend();
  original.metadata = R"({"nested":{"list":[1,2,3]},"s":"x\"y"})";
  original.enabled = false;
  auto in = ParseBackendInput(BackendToJson(original));
  REQUIRE(in.ok());
  CHECK_FALSE(in->api_key.has_value());

  Backend copy;
  ApplyBackendInput(*in, &copy);
  CHECK(copy.name == original.name);
  CHECK(copy.label == original.label);
  CHECK(copy.api_base_url == original.api_base_url);
  CHECK(copy.api == original.api);
  CHECK(copy.timeout_seconds == original.timeout_seconds);
  CHECK(copy.rpm_limit == original.rpm_limit);
  CHECK(copy.tpm_limit == original.tpm_limit);
  CHECK(copy.max_concurrency == original.max_concurrency);
  CHECK(copy.pool == original.pool);
  CHECK(copy.enabled == original.enabled);
  CHECK(copy.model_mappings == original.model_mappings);
  CHECK(copy.source == original.source);
  CHECK(copy.metadata == original.metadata);
}

TEST_CASE("BackendListToJson wraps the backends in data", "[json]") {
  const Backend a = MakeBackend("a");
  const Backend b = MakeBackend("b");
  CHECK(BackendListToJson({a, b}) ==
        R"({"data":[)" + BackendToJson(a) + "," + BackendToJson(b) + "]}");
  CHECK(BackendListToJson({}) == R"({"data":[]})");
}

// --- Config ----------------------------------------------------------------------

TEST_CASE("ConfigToJson writes every setting", "[json]") {
  Config c;
  c.strategy = Strategy::kLeastBusy;
  CHECK(ConfigToJson(c) ==
        R"({"pool_order":["primary","fallback"],"strategy":"least-busy","max_attempts":3,)"
        R"("cooldown_base_seconds":5,"cooldown_max_seconds":300,"error_threshold":3,)"
        R"("body_limit_bytes":10485760,"usage_retention_days":30})");
}

TEST_CASE("ApplyConfigJson changes only the given settings", "[json]") {
  Config c;
  REQUIRE(ApplyConfigJson(R"({"max_attempts": 5, "pool_order": ["b", "a"]})", &c).ok());
  Config expected;
  expected.max_attempts = 5;
  expected.pool_order = {"b", "a"};
  CHECK(c == expected);
}

TEST_CASE("ApplyConfigJson reads every setting", "[json]") {
  Config c;
  REQUIRE(ApplyConfigJson(R"({"pool_order": [], "strategy": "lowest-latency",
      "max_attempts": 7, "cooldown_base_seconds": 2, "cooldown_max_seconds": 60,
      "error_threshold": 9, "body_limit_bytes": 3000000000, "usage_retention_days": 0})",
                          &c)
              .ok());
  CHECK(c.pool_order.empty());
  CHECK(c.strategy == Strategy::kLowestLatency);
  CHECK(c.max_attempts == 7);
  CHECK(c.cooldown_base_seconds == 2);
  CHECK(c.cooldown_max_seconds == 60);
  CHECK(c.error_threshold == 9);
  CHECK(c.body_limit_bytes == int64_t{3000000000});
  CHECK(c.usage_retention_days == 0);
}

TEST_CASE("ApplyConfigJson accepts underscores in strategy names", "[json]") {
  Config c;
  REQUIRE(ApplyConfigJson(R"({"strategy": "least_busy"})", &c).ok());
  CHECK(c.strategy == Strategy::kLeastBusy);
}

TEST_CASE("ApplyConfigJson refuses an unknown strategy, naming the field", "[json]") {
  Config c;
  const Status s = ApplyConfigJson(R"({"strategy": "random"})", &c);
  CheckFieldError(s, "strategy");
  CHECK(c == Config{});
}

TEST_CASE("ApplyConfigJson refuses an unknown field", "[json]") {
  Config c;
  const Status s = ApplyConfigJson(R"({"max_attempt": 4})", &c);
  CheckFieldError(s, "max_attempt");
  CHECK(s.message() == "unknown field");
}

TEST_CASE("ApplyConfigJson refuses settings of the wrong type", "[json]") {
  struct Case {
    const char* body;
    const char* param;
  };
  for (const Case& c : {Case{R"({"pool_order": "primary"})", "pool_order"},
                        Case{R"({"pool_order": ["primary", 1]})", "pool_order"},
                        Case{R"({"max_attempts": "3"})", "max_attempts"},
                        Case{R"({"error_threshold": 2.5})", "error_threshold"},
                        Case{R"({"cooldown_base_seconds": 4294967296})", "cooldown_base_seconds"},
                        Case{R"({"body_limit_bytes": true})", "body_limit_bytes"},
                        Case{R"({"strategy": 1})", "strategy"}}) {
    INFO(c.body);
    Config config;
    CheckFieldError(ApplyConfigJson(c.body, &config), c.param);
  }
}

TEST_CASE("ApplyConfigJson leaves the config unchanged when any field is bad", "[json]") {
  Config c;
  c.max_attempts = 4;
  const Config before = c;
  CHECK_FALSE(ApplyConfigJson(R"({"max_attempts": 9, "usage_retention_days": "x"})", &c).ok());
  CHECK(c == before);
}

TEST_CASE("ApplyConfigJson reports malformed JSON with an empty param", "[json]") {
  Config c;
  CheckMalformed(ApplyConfigJson("{max_attempts: 3}", &c));
  CheckMalformed(ApplyConfigJson("[]", &c));
  CHECK(c == Config{});
}

TEST_CASE("ConfigToJson output applies back to an equal config", "[json]") {
  Config original;
  original.pool_order = {"gold", "silver", "bronze"};
  original.strategy = Strategy::kWeighted;
  original.max_attempts = 5;
  original.cooldown_base_seconds = 10;
  original.cooldown_max_seconds = 600;
  original.error_threshold = 4;
  original.body_limit_bytes = 2048;
  original.usage_retention_days = 7;
  Config copy;
  REQUIRE(ApplyConfigJson(ConfigToJson(original), &copy).ok());
  CHECK(copy == original);
}

// --- Other responses ------------------------------------------------------------

TEST_CASE("PoolStatsToJson writes each pool's counts in order", "[json]") {
  const std::vector<PoolStats> pools = {PoolStats{"primary", 0, 3, 2, 1, 1, 0},
                                        PoolStats{"fallback", 1, 1, 1, 0, 0, 1}};
  CHECK(PoolStatsToJson(pools) ==
        R"({"data":[{"pool":"primary","priority":0,"total":3,"enabled":2,"healthy":1,)"
        R"("cooling":1,"error":0},{"pool":"fallback","priority":1,"total":1,"enabled":1,)"
        R"("healthy":0,"cooling":0,"error":1}]})");
}

TEST_CASE("UsageRecordToJson writes every field with the trace embedded", "[json]") {
  UsageRecord r = testing::MakeUsage(MakeBackend("a"), TestEpoch() + milliseconds(1500));
  r.id = 17;
  r.stream = true;
  r.error = "";
  CHECK(UsageRecordToJson(r) ==
        R"({"id":17,"request_id":"req_test","time":"2026-01-01T00:00:01Z",)"
        R"("time_ms":1767225601500,"endpoint":"/v1/chat/completions","model":"gpt-4o",)"
        R"("backend_id":"bkd_a","backend_name":"a","pool":"primary","status":200,)"
        R"("attempts":1,"latency_ms":100,"ttfb_ms":50,"prompt_tokens":10,)"
        R"("completion_tokens":20,"stream":true,"error":"",)"
        R"("trace":[{"backend":"a","decision":"tried"}]})");
}

TEST_CASE("UsageRecordToJson falls back to an empty trace when the stored one is not an array",
          "[json]") {
  UsageRecord r = testing::MakeUsage(MakeBackend("a"), TestEpoch());
  for (const char* stored : {"", "{}", "[unclosed"}) {
    INFO(stored);
    r.trace = stored;
    const std::string json = UsageRecordToJson(r);
    CHECK(json.substr(json.size() - 11) == R"("trace":[]})");
  }
}

TEST_CASE("UsagePageToJson writes the next cursor or null at the end", "[json]") {
  UsageRecord r = testing::MakeUsage(MakeBackend("a"), TestEpoch());
  r.id = 9;
  UsagePage page;
  page.records = {r};
  page.next_before = 9;
  CHECK(UsagePageToJson(page) == R"({"data":[)" + UsageRecordToJson(r) + R"(],"next_before":9})");
  CHECK(UsagePageToJson(UsagePage{}) == R"({"data":[],"next_before":null})");
}

TEST_CASE("CooldownEventsToJson names the backend and both times", "[json]") {
  CooldownEvent e;
  e.id = 3;
  e.backend_id = "bkd_a";
  e.backend_name = "openai-main";
  e.start = TestEpoch();
  e.until = TestEpoch() + seconds(30);
  e.reason = "rate_limited";
  e.upstream_status = 429;
  CHECK(CooldownEventsToJson({e}) ==
        R"({"data":[{"id":3,"backend_id":"bkd_a","backend":"openai-main",)"
        R"("start":"2026-01-01T00:00:00Z","until":"2026-01-01T00:00:30Z",)"
        R"("reason":"rate_limited","upstream_status":429}]})");
}

TEST_CASE("UsageStatsToJson writes totals, breakdowns and timeseries", "[json]") {
  UsageAggregate agg{4, 1, 1, 40, 80, 100, 250.5, 50, 120, 3};
  UsageStats stats;
  stats.totals = agg;
  stats.by_backend = {BackendUsage{"bkd_a", "a", agg}};
  stats.by_model = {ModelUsage{"gpt-4o", agg}};
  stats.timeseries = {UsageBucket{TestEpoch() + seconds(60), agg, {{"a", 3}, {"b", 1}}}};
  const std::string fields =
      R"("requests":4,"errors":1,"rate_limited":1,"prompt_tokens":40,"completion_tokens":80,)"
      R"("p50_ms":100.0,"p95_ms":250.5,"ttfb_p50_ms":50.0,"ttfb_p95_ms":120.0,"upstream_429":3)";
  CHECK(UsageStatsToJson(stats, 3600) ==
        R"({"window":3600,"totals":{)" + fields +
            R"(},"by_backend":[{"backend_id":"bkd_a","backend":"a",)" + fields +
            R"(}],"by_model":[{"model":"gpt-4o",)" + fields +
            R"(}],"timeseries":[{"start":"2026-01-01T00:01:00Z","start_ms":1767225660000,)" +
            fields + R"(,"by_backend":{"a":3,"b":1}}]})");
}

TEST_CASE("UsageStatsToJson writes a non-finite percentile as null", "[json]") {
  UsageStats stats;
  stats.totals.p50_ms = std::nan("");
  stats.totals.p95_ms = std::numeric_limits<double>::infinity();
  const std::string json = UsageStatsToJson(stats, 60);
  CHECK(json.find(R"("p50_ms":null,"p95_ms":null,"ttfb_p50_ms":0.0)") != std::string::npos);
}

// --- ParseBackendImport ------------------------------------------------------------

TEST_CASE("ParseBackendImport reads a top-level array", "[json]") {
  auto list = ParseBackendImport(R"([{"name": "a", "pool": "primary"}, {"name": "b"}])");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK((*list)[0].name == "a");
  CHECK((*list)[0].pool == "primary");
  CHECK((*list)[1].name == "b");
  CHECK_FALSE((*list)[1].pool.has_value());
}

TEST_CASE("ParseBackendImport reads an object with a backends array", "[json]") {
  auto list = ParseBackendImport(R"({"backends": [{"name": "a", "api": "anthropic"}]})");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  CHECK((*list)[0].api == Api::kAnthropic);
}

TEST_CASE("ParseBackendImport reads an empty list", "[json]") {
  auto list = ParseBackendImport("[]");
  REQUIRE(list.ok());
  CHECK(list->empty());
}

TEST_CASE("ParseBackendImport prefixes an element's error with its index", "[json]") {
  auto list = ParseBackendImport(R"([{"name": "a"}, {"name": "b"}, {"api_base_url": 1}])");
  REQUIRE_FALSE(list.ok());
  CheckFieldError(list.status(), "[2].api_base_url");
}

TEST_CASE("ParseBackendImport prefixes errors with backends[i] in the object form", "[json]") {
  auto list = ParseBackendImport(
      R"({"backends": [{"model_mappings": {"gpt-4o": {"weight": "x"}}}]})");
  REQUIRE_FALSE(list.ok());
  CheckFieldError(list.status(), "backends[0].model_mappings.gpt-4o.weight");
}

TEST_CASE("ParseBackendImport refuses an element that is not an object", "[json]") {
  auto list = ParseBackendImport(R"([{"name": "a"}, "b"])");
  REQUIRE_FALSE(list.ok());
  CheckFieldError(list.status(), "[1]");
}

TEST_CASE("ParseBackendImport refuses an object without a backends array", "[json]") {
  auto missing = ParseBackendImport(R"({})");
  REQUIRE_FALSE(missing.ok());
  CheckFieldError(missing.status(), "backends");

  auto wrong_type = ParseBackendImport(R"({"backends": {"name": "a"}})");
  REQUIRE_FALSE(wrong_type.ok());
  CheckFieldError(wrong_type.status(), "backends");

  auto extra = ParseBackendImport(R"({"backends": [], "version": 1})");
  REQUIRE_FALSE(extra.ok());
  CheckFieldError(extra.status(), "version");
}

TEST_CASE("ParseBackendImport refuses a document that is neither array nor object", "[json]") {
  auto list = ParseBackendImport(R"("backends")");
  REQUIRE_FALSE(list.ok());
  CheckMalformed(list.status());
}

TEST_CASE("ParseBackendImport reports malformed JSON with an empty param", "[json]") {
  auto list = ParseBackendImport(R"([{"name": "a"},])");
  REQUIRE_FALSE(list.ok());
  CheckMalformed(list.status());
  CHECK(list.status().message().rfind("import file is not valid JSON: ", 0) == 0);
}

// --- AppendJsonString / ErrorToJson ---------------------------------------------

std::string JsonString(std::string_view text) {
  std::string out;
  AppendJsonString(text, &out);
  return out;
}

TEST_CASE("AppendJsonString quotes and escapes quotes and backslashes", "[json]") {
  CHECK(JsonString(R"(say "hi" \ bye)") == R"("say \"hi\" \\ bye")");
  CHECK(JsonString("") == R"("")");
}

TEST_CASE("AppendJsonString escapes control characters", "[json]") {
  CHECK(JsonString("a\nb\tc\rd") == R"("a\nb\tc\rd")");
  CHECK(JsonString("\x01\x1f") == R"("\u0001\u001F")");
  CHECK(JsonString(std::string("a\0b", 3)) == R"("a\u0000b")");
}

TEST_CASE("AppendJsonString passes UTF-8 through unchanged", "[json]") {
  CHECK(JsonString("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80") ==
        "\"caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80\"");
}

TEST_CASE("AppendJsonString replaces invalid UTF-8 with U+FFFD", "[json]") {
  // A stray continuation byte, an overlong '/', and a UTF-16 surrogate.
  CHECK(JsonString("a\x80" "b\xC0\xAF" "c\xED\xA0\x80") ==
        "\"a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
}

TEST_CASE("AppendJsonString appends to what the output already holds", "[json]") {
  std::string out = R"({"k":)";
  AppendJsonString("v", &out);
  CHECK(out == R"({"k":"v")");
}

TEST_CASE("ErrorToJson writes param and code as strings when given", "[json]") {
  CHECK(ErrorToJson("must be between 1 and 3600", "invalid_request_error", "timeout_seconds",
                    "invalid_value") ==
        R"({"error":{"message":"must be between 1 and 3600","type":"invalid_request_error",)"
        R"("param":"timeout_seconds","code":"invalid_value"}})");
}

TEST_CASE("ErrorToJson writes an empty param and code as null", "[json]") {
  CHECK(ErrorToJson("bad \"body\"", "invalid_request_error", "", "") ==
        R"({"error":{"message":"bad \"body\"","type":"invalid_request_error",)"
        R"("param":null,"code":null}})");
}

}  // namespace
}  // namespace switchboard
