// The rules the admin API enforces on a backend: ValidateBackend and its
// helpers in types.cc.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "support/makers.h"
#include "switchboard/types.h"

namespace switchboard {
namespace {

using testing::MakeBackend;

// The params ValidateBackend reports for `b`, in order.
std::vector<std::string> ErrorParams(const Backend& b) {
  std::vector<std::string> params;
  for (const FieldError& e : ValidateBackend(b)) params.push_back(e.param);
  return params;
}

using Params = std::vector<std::string>;

// --- Names ------------------------------------------------------------------------

TEST_CASE("IsValidBackendName accepts letters, digits, dots, underscores and dashes",
          "[validation]") {
  CHECK(IsValidBackendName("openai-main"));
  CHECK(IsValidBackendName("A.b_C-9"));
  CHECK(IsValidBackendName("x"));
  CHECK(IsValidBackendName("..."));
}

TEST_CASE("IsValidBackendName accepts 64 characters but not 65", "[validation]") {
  CHECK(IsValidBackendName(std::string(64, 'a')));
  CHECK_FALSE(IsValidBackendName(std::string(65, 'a')));
}

TEST_CASE("IsValidBackendName refuses an empty name", "[validation]") {
  CHECK_FALSE(IsValidBackendName(""));
}

TEST_CASE("IsValidBackendName refuses characters outside the pattern", "[validation]") {
  for (const std::string& name :
       {std::string("has space"), std::string("a/b"), std::string("a:b"), std::string("a@b"),
        std::string("a+b"), std::string("caf\xC3\xA9"), std::string("a\nb"),
        std::string("a\0b", 3), std::string("a*"), std::string("<b>")}) {
    INFO(name);
    CHECK_FALSE(IsValidBackendName(name));
  }
}

TEST_CASE("ValidateBackend reports a bad name", "[validation]") {
  Backend b = MakeBackend("ok");
  b.name = "bad name";
  CHECK(ErrorParams(b) == Params{"name"});
  b.name = std::string(65, 'n');
  CHECK(ErrorParams(b) == Params{"name"});
}

TEST_CASE("ValidateBackend accepts a valid backend", "[validation]") {
  CHECK(ValidateBackend(MakeBackend("openai-main")).empty());
}

// --- api_base_url ------------------------------------------------------------------

TEST_CASE("CheckBaseUrl accepts http and https URLs", "[validation]") {
  for (const char* url :
       {"https://api.openai.com/v1", "http://127.0.0.1:8000/v1", "https://host",
        "HTTPS://api.anthropic.com/v1", "http://localhost:65535", "http://[::1]:8080/v1",
        "https://[2001:db8::ffff:192.0.2.1]/v1", "https://my_host.internal/a/b%20c/"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "");
  }
}

TEST_CASE("CheckBaseUrl refuses schemes other than http and https", "[validation]") {
  for (const char* url :
       {"file:///etc/passwd", "gopher://host:70/_x", "dict://host:2628/", "ftp://host/v1",
        "ldap://host/", "smb://host/share", "telnet://host:23", "ws://host/v1",
        "wss://host/v1", "httpx://host/v1", "://host/v1"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "must use http or https");
  }
}

TEST_CASE("CheckBaseUrl refuses a URL without a scheme", "[validation]") {
  for (const char* url : {"api.openai.com/v1", "//api.openai.com/v1", "javascript:alert(1)",
                          "http:/host"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "must be an absolute http or https URL");
  }
}

TEST_CASE("CheckBaseUrl refuses user information", "[validation]") {
  for (const char* url : {"https://user:pass@host/v1", "https://user@host", "http://@host/",
                          "https://evil.com:443@api.openai.com/v1"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "must not contain user information (put the key in api_key)");
  }
}

TEST_CASE("CheckBaseUrl allows an @ in the path", "[validation]") {
  CHECK(CheckBaseUrl("https://host/v1/@models") == "");
}

TEST_CASE("CheckBaseUrl refuses control characters", "[validation]") {
  for (const std::string& url :
       {std::string("https://host/v1\r\nX-Injected: 1"), std::string("https://host/v1\n"),
        std::string("https://ho\tst/v1"), std::string("https://host/v1\0evil", 20),
        std::string("https://host/\x7f")}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "must not contain control characters");
  }
}

TEST_CASE("CheckBaseUrl refuses spaces, backslashes and non-ASCII", "[validation]") {
  for (const char* url :
       {"https://host/v 1", "https://host\\@evil.com/", "https://h\xC3\xA9st/v1"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "must not contain spaces, backslashes or non-ASCII");
  }
}

TEST_CASE("CheckBaseUrl refuses a URL that names no host", "[validation]") {
  for (const char* url : {"https://", "https:///v1", "https://:443/v1", "http://?x"}) {
    INFO(url);
    const std::string why = CheckBaseUrl(url);
    CHECK(why != "");
  }
  CHECK(CheckBaseUrl("https://") == "must name a host");
  CHECK(CheckBaseUrl("https:///v1") == "must name a host");
  CHECK(CheckBaseUrl("https://:443/v1") == "must name a host");
}

TEST_CASE("CheckBaseUrl refuses a bad port", "[validation]") {
  CHECK(CheckBaseUrl("https://host:/v1") == "has an empty port");
  for (const char* url : {"https://host:0/v1", "https://host:65536/v1", "https://host:abc/v1",
                          "https://host:123456/v1", "https://host:-1/v1", "https://host:+80/"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "has an invalid port");
  }
}

TEST_CASE("CheckBaseUrl refuses a query or fragment", "[validation]") {
  for (const char* url : {"https://host/v1?key=1", "https://host/v1#frag", "https://host?x",
                          "https://host#x"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "must not contain a query or fragment");
  }
}

TEST_CASE("CheckBaseUrl refuses an invalid host", "[validation]") {
  for (const char* url : {"https://ho%st/v1", "https://host:80:90/v1", "https://a!b/"}) {
    INFO(url);
    CHECK(CheckBaseUrl(url) == "has an invalid host");
  }
}

TEST_CASE("CheckBaseUrl refuses a malformed IPv6 host", "[validation]") {
  for (const char* url : {"http://[::1/v1", "http://[]/v1", "http://[zz]/v1",
                          "http://[127.0.0.1]/v1", "http://[::1]x/v1"}) {
    INFO(url);
    const std::string why = CheckBaseUrl(url);
    CHECK((why == "has a malformed IPv6 host" || why == "has a malformed host"));
  }
  CHECK(CheckBaseUrl("http://[::1]:/v1") == "has an empty port");
}

TEST_CASE("CheckBaseUrl requires a URL and caps its length at 2048", "[validation]") {
  CHECK(CheckBaseUrl("") == "is required");
  const std::string prefix = "https://host/";
  CHECK(CheckBaseUrl(prefix + std::string(2048 - prefix.size(), 'a')) == "");
  CHECK(CheckBaseUrl(prefix + std::string(2049 - prefix.size(), 'a')) ==
        "is longer than 2048 characters");
}

TEST_CASE("ValidateBackend reports a bad api_base_url with the reason", "[validation]") {
  Backend b = MakeBackend("x");
  b.api_base_url = "file:///etc/passwd";
  const auto errors = ValidateBackend(b);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == FieldError{"api_base_url", "must use http or https"});
}

// --- api ----------------------------------------------------------------------------

TEST_CASE("ParseApi accepts exactly openai and anthropic", "[validation]") {
  CHECK(ParseApi("openai") == Api::kOpenAI);
  CHECK(ParseApi("anthropic") == Api::kAnthropic);
  for (const char* name : {"OpenAI", "azure", "", "openai ", "claude"}) {
    INFO(name);
    CHECK_FALSE(ParseApi(name).has_value());
  }
}

TEST_CASE("ApiName, BackendStatusName and BackendSourceName parse back", "[validation]") {
  for (Api a : {Api::kOpenAI, Api::kAnthropic}) CHECK(ParseApi(ApiName(a)) == a);
  for (BackendStatus s : {BackendStatus::kHealthy, BackendStatus::kCooling, BackendStatus::kError,
                          BackendStatus::kDisabled}) {
    CHECK(ParseBackendStatus(BackendStatusName(s)) == s);
  }
  for (BackendSource s : {BackendSource::kManual, BackendSource::kImport, BackendSource::kDemo}) {
    CHECK(ParseBackendSource(BackendSourceName(s)) == s);
  }
  CHECK(ApiName(Api::kAnthropic) == "anthropic");
  CHECK(BackendStatusName(BackendStatus::kCooling) == "cooling");
  CHECK(BackendSourceName(BackendSource::kDemo) == "demo");
  CHECK_FALSE(ParseBackendStatus("paused").has_value());
  CHECK_FALSE(ParseBackendSource("api").has_value());
}

// --- Numbers ----------------------------------------------------------------------

TEST_CASE("ValidateBackend accepts timeouts from 1 to 3600 seconds only", "[validation]") {
  Backend b = MakeBackend("x");
  b.timeout_seconds = 0;
  CHECK(ErrorParams(b) == Params{"timeout_seconds"});
  b.timeout_seconds = 1;
  CHECK(ErrorParams(b).empty());
  b.timeout_seconds = 3600;
  CHECK(ErrorParams(b).empty());
  b.timeout_seconds = 3601;
  CHECK(ErrorParams(b) == Params{"timeout_seconds"});
  b.timeout_seconds = -1;
  CHECK(ErrorParams(b) == Params{"timeout_seconds"});
}

TEST_CASE("ValidateBackend refuses negative limits", "[validation]") {
  Backend b = MakeBackend("x");
  b.rpm_limit = -1;
  b.tpm_limit = -1;
  b.max_concurrency = -1;
  CHECK(ErrorParams(b) == Params{"rpm_limit", "tpm_limit", "max_concurrency"});
}

TEST_CASE("ValidateBackend accepts zero limits as unlimited", "[validation]") {
  Backend b = MakeBackend("x");
  b.rpm_limit = 0;
  b.tpm_limit = 0;
  b.max_concurrency = 0;
  CHECK(ErrorParams(b).empty());
}

// --- Pool, label ---------------------------------------------------------------------

TEST_CASE("ValidateBackend refuses an empty pool", "[validation]") {
  Backend b = MakeBackend("x");
  b.pool = "";
  const auto errors = ValidateBackend(b);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == FieldError{"pool", "must not be empty"});
}

TEST_CASE("ValidateBackend refuses a pool name outside the name pattern", "[validation]") {
  Backend b = MakeBackend("x");
  b.pool = "my pool";
  CHECK(ErrorParams(b) == Params{"pool"});
}

TEST_CASE("ValidateBackend refuses a label with control characters or over 256 bytes",
          "[validation]") {
  Backend b = MakeBackend("x");
  b.label = "line\nbreak";
  CHECK(ErrorParams(b) == Params{"label"});
  b.label = std::string(256, 'l');
  CHECK(ErrorParams(b).empty());
  b.label = std::string(257, 'l');
  CHECK(ErrorParams(b) == Params{"label"});
}

// --- Mappings ------------------------------------------------------------------------

TEST_CASE("ValidateBackend refuses an empty mapping target", "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings["gpt-4o"] = ModelMapping{"", 1};
  const auto errors = ValidateBackend(b);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == FieldError{"model_mappings.gpt-4o.upstream_model", "must not be empty"});
}

TEST_CASE("ValidateBackend accepts an empty target on the wildcard as pass-through",
          "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings["*"] = ModelMapping{"", 1};
  CHECK(ErrorParams(b).empty());
  CHECK(b.UpstreamModelFor("claude-3") == "claude-3");
}

TEST_CASE("ValidateBackend refuses a mapping target with control characters", "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings["gpt-4o"] = ModelMapping{"gpt\r\n4o", 1};
  CHECK(ErrorParams(b) == Params{"model_mappings.gpt-4o.upstream_model"});
}

TEST_CASE("ValidateBackend accepts weights from 1 to 1000 only", "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings["gpt-4o"].weight = 0;
  CHECK(ErrorParams(b) == Params{"model_mappings.gpt-4o.weight"});
  b.model_mappings["gpt-4o"].weight = 1;
  CHECK(ErrorParams(b).empty());
  b.model_mappings["gpt-4o"].weight = 1000;
  CHECK(ErrorParams(b).empty());
  b.model_mappings["gpt-4o"].weight = 1001;
  CHECK(ErrorParams(b) == Params{"model_mappings.gpt-4o.weight"});
  b.model_mappings["gpt-4o"].weight = -3;
  CHECK(ErrorParams(b) == Params{"model_mappings.gpt-4o.weight"});
}

TEST_CASE("ValidateBackend refuses an empty or overlong model name", "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings[""] = ModelMapping{"m", 1};
  CHECK(ErrorParams(b) == Params{"model_mappings"});
  b.model_mappings.erase("");
  b.model_mappings[std::string(257, 'm')] = ModelMapping{"m", 1};
  CHECK(ErrorParams(b) == Params{"model_mappings"});
}

TEST_CASE("ValidateBackend accepts a backend without mappings", "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings.clear();
  CHECK(ErrorParams(b).empty());
}

// --- Metadata ------------------------------------------------------------------------

TEST_CASE("ValidateBackend accepts metadata that is a JSON object", "[validation]") {
  Backend b = MakeBackend("x");
  b.metadata = R"({"team":"ml","tags":["a","b"],"n":1})";
  CHECK(ErrorParams(b).empty());
}

TEST_CASE("ValidateBackend refuses metadata that is not a JSON object", "[validation]") {
  for (const std::string& metadata :
       {std::string("[]"), std::string(R"("text")"), std::string("1"), std::string("null"),
        std::string("not json"), std::string(""), std::string("{} {}"),
        std::string("{}\0garbage", 10), std::string("{\"k\":\"\xff\"}")}) {
    INFO(metadata);
    Backend b = MakeBackend("x");
    b.metadata = metadata;
    const auto errors = ValidateBackend(b);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == FieldError{"metadata", "must be a JSON object"});
  }
}

TEST_CASE("ValidateBackend refuses metadata over 16 KiB", "[validation]") {
  Backend b = MakeBackend("x");
  b.metadata = R"({"k":")" + std::string(16 * 1024, 'v') + R"("})";
  CHECK(ErrorParams(b) == Params{"metadata"});
}

TEST_CASE("ValidateBackend refuses metadata nested deeper than 32 levels", "[validation]") {
  auto nested = [](int depth) {
    std::string text;
    for (int i = 0; i < depth; ++i) text += R"({"a":)";
    text += "1";
    return text + std::string(depth, '}');
  };
  Backend b = MakeBackend("x");
  b.metadata = nested(32);
  CHECK(ErrorParams(b).empty());
  b.metadata = nested(33);
  CHECK(ErrorParams(b) == Params{"metadata"});
  b.metadata = "{\"a\":" + std::string(8000, '[') + std::string(8000, ']') + "}";
  CHECK(ErrorParams(b) == Params{"metadata"});
}

TEST_CASE("ValidateBackend reports every invalid field at once", "[validation]") {
  Backend b = MakeBackend("x");
  b.name = "";
  b.api_base_url = "ftp://host";
  b.timeout_seconds = 0;
  b.pool = "";
  b.metadata = "[]";
  CHECK(ErrorParams(b) == Params{"name", "api_base_url", "timeout_seconds", "pool", "metadata"});
}

// --- Keys and ids -------------------------------------------------------------------

TEST_CASE("ApiKeyHint shows the last 4 characters of keys of 16 or more", "[validation]") {
  CHECK(ApiKeyHint("sk-0123456789abcdef00d") == "...f00d");
  CHECK(ApiKeyHint("0123456789abcdef") == "...cdef");
}

TEST_CASE("ApiKeyHint shows the last 2 characters of keys of 8 to 15", "[validation]") {
  CHECK(ApiKeyHint("01234567") == "...67");
  CHECK(ApiKeyHint("0123456789abcde") == "...de");
}

TEST_CASE("ApiKeyHint shows nothing for keys shorter than 8", "[validation]") {
  CHECK(ApiKeyHint("0123456") == "");
  CHECK(ApiKeyHint("") == "");
}

TEST_CASE("NewBackendId returns bkd_ and 24 hex characters, different each time",
          "[validation]") {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    const std::string id = NewBackendId();
    REQUIRE(id.size() == 28);
    CHECK(id.rfind("bkd_", 0) == 0);
    CHECK(std::all_of(id.begin() + 4, id.end(),
                      [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }));
    ids.insert(id);
  }
  CHECK(ids.size() == 100);
}

// --- Mapping lookup -----------------------------------------------------------------

TEST_CASE("FindMapping prefers the exact model over the wildcard", "[validation]") {
  Backend b = MakeBackend("x");
  b.model_mappings["*"] = ModelMapping{"*", 1};
  REQUIRE(b.FindMapping("gpt-4o") != nullptr);
  CHECK(b.FindMapping("gpt-4o")->upstream_model == "gpt-4o-upstream");
  CHECK(b.UpstreamModelFor("gpt-4o") == "gpt-4o-upstream");
  CHECK(b.UpstreamModelFor("o1") == "o1");
  b.model_mappings.erase("*");
  CHECK(b.FindMapping("o1") == nullptr);
}

}  // namespace
}  // namespace switchboard
