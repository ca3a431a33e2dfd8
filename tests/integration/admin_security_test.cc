// Admin API hardening, end to end on the real server binary: every route of
// the admin route table (server/admin_api.h, checked against
// docs/admin-api.md) refuses client keys and wrong tokens; SQL-injection
// payloads in every string parameter get a 4xx or a normal answer and change
// nothing; and a server started without an admin token accepts no guessable
// default.
#include <rapidjson/document.h>
#include <stdlib.h>

#include <fstream>
#include <optional>
#include <thread>

#include "admin_api.h"
#include "harness.h"
#include "server.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::string kAdminToken = "admin-token-for-admin-security-tests-0123456789";
const std::string kEnvClientKey = "sbk_env_client_key_for_admin_security_tests_0123";

httplib::Headers Admin() { return {{"Authorization", "Bearer " + kAdminToken}}; }

ServerProcessOptions Options(const MockUpstream& mock) {
  ServerProcessOptions o;
  o.backends = {Backend("primary", mock.base_url(), "primary"),
                Backend("fallback", mock.base_url(), "fallback")};
  o.client_keys = {kEnvClientKey};
  o.env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken};
  return o;
}

// The admin route table, as server/admin_api.h lists it (methods, patterns
// and example paths; the handlers belong to a throwaway in-process server).
std::vector<server::AdminRoute> AdminRouteTable() {
  constexpr char kTokenEnv[] = "SWITCHBOARD_TEST_ADMIN_SECURITY_TOKEN";
  ::setenv(kTokenEnv, "route-table-token-0123456789abcdef", 1);
  server::ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.db_path = ":memory:";
  o.master_key_env = "SWITCHBOARD_TEST_NO_SUCH_VARIABLE";
  o.admin_token_env = kTokenEnv;
  server::Server s(o);
  const Status started = s.Start();
  INFO(started.ToString());
  REQUIRE(started.ok());
  const server::AdminAuth unused_auth;  // Routes() runs no auth
  server::AdminApi api(s.admin(), unused_auth);
  std::vector<server::AdminRoute> routes = api.Routes();
  for (server::AdminRoute& r : routes) r.handler = nullptr;  // they refer to `s`
  return routes;
}

// "METHOD pattern" of every admin route in docs/admin-api.md: the headings
// like "### `PATCH /admin/backends/{id}` → Backend", {id} as the table's
// ([^/]+), without the query part.
std::set<std::string> DocumentedRoutes() {
  const std::filesystem::path doc =
      std::filesystem::path(__FILE__).parent_path() / "../../docs/admin-api.md";
  std::ifstream in(doc);
  INFO(doc.string());
  REQUIRE(in.good());
  std::set<std::string> routes;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '#') continue;
    const size_t open = line.find('`');
    const size_t close = open == std::string::npos ? open : line.find('`', open + 1);
    if (close == std::string::npos) continue;
    std::string route = line.substr(open + 1, close - open - 1);
    const size_t space = route.find(' ');
    if (space == std::string::npos || route.compare(space + 1, 7, "/admin/") != 0) continue;
    route = route.substr(0, route.find_first_of("?[", space));
    for (size_t at; (at = route.find("{id}")) != std::string::npos;) {
      route.replace(at, 4, "([^/]+)");
    }
    routes.insert(route);
  }
  return routes;
}

httplib::Result Send(httplib::Client& c, const std::string& method, const std::string& path,
                     const httplib::Headers& headers, const std::string& body = "{}") {
  if (method == "GET") return c.Get(path.c_str(), headers);
  if (method == "POST") return c.Post(path.c_str(), headers, body, "application/json");
  if (method == "PATCH") return c.Patch(path.c_str(), headers, body, "application/json");
  return c.Delete(path.c_str(), headers, body, "application/json");
}

std::string Get(httplib::Client& c, const std::string& path) {
  auto res = c.Get(path.c_str(), Admin());
  REQUIRE(res);
  INFO(path << " -> " << res->body);
  REQUIRE(res->status == 200);
  return res->body;
}

// What the admin API shows of the store, as GET bodies.
struct Snapshot {
  std::string backends, config, keys, pools, usage, cooldowns;
};

Snapshot Take(httplib::Client& c) {
  return {Get(c, "/admin/backends"), Get(c, "/admin/config"), Get(c, "/admin/keys"),
          Get(c, "/admin/pools"),    Get(c, "/admin/usage"),  Get(c, "/admin/cooldowns")};
}

std::string IdOf(const std::string& body) { return JsonStringField(body, "id"); }

// The first element of the "data" array of `body` with `field` equal to
// `value`, as its "id" ("" when none).
std::string IdWhere(const std::string& body, const char* field, const std::string& value) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("data")) return "";
  for (const auto& e : doc["data"].GetArray()) {
    if (e.HasMember(field) && e[field].IsString() && e[field].GetString() == value) {
      return e["id"].GetString();
    }
  }
  return "";
}

int Chat(httplib::Client& c, const httplib::Headers& headers) {
  auto res = c.Post(kChatPath, headers, ChatBody("gpt-4o"), "application/json");
  REQUIRE(res);
  INFO(res->body);
  return res->status;
}

// Every byte but the unreserved ones as %XX.
std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

struct Payload {
  std::string label;
  std::string value;
};

std::vector<Payload> InjectionPayloads() {
  return {
      {"quote or", "' OR '1'='1"},
      {"drop table", "\"; DROP TABLE backends; --"},
      {"delete usage", "1; DELETE FROM usage"},
      {"url-encoded or", "%27%20OR%201=1"},
      {"escaped quote", "\\' OR 1=1 --"},
      {"10 KiB", std::string(10 * 1024, 'A') + "' OR 1=1 --"},
      {"NUL", std::string("a\0' OR 1=1 --", 13)},
      {"unicode",
       "\xe2\x80\x99 OR \xe2\x80\x98"
       "1\xe2\x80\x99=\xe2\x80\x99"
       "1 \xf0\x9f\x92\xa5 \xd0\xb8"},
  };
}

// A 4xx, or one of the normal 2xx answers.
bool IsRefusalOrNormal(int status) {
  return (status >= 400 && status < 500) || (status >= 200 && status <= 204);
}

// The string member `field` of the JSON object `body`, or of its member
// `object` when given; nullopt when absent.
std::optional<std::string> StringMember(const std::string& body, const char* object,
                                        const std::string& field) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  const rapidjson::Value* v = &doc;
  if (object != nullptr) {
    auto o = doc.FindMember(object);
    if (o == doc.MemberEnd() || !o->value.IsObject()) return std::nullopt;
    v = &o->value;
  }
  auto m =
      v->FindMember(rapidjson::Value(field.data(), static_cast<rapidjson::SizeType>(field.size())));
  if (m == v->MemberEnd() || !m->value.IsString()) return std::nullopt;
  return std::string(m->value.GetString(), m->value.GetStringLength());
}

TEST_CASE("The admin route table is the one docs/admin-api.md documents", "[admin_security]") {
  std::set<std::string> table;
  for (const server::AdminRoute& r : AdminRouteTable()) table.insert(r.method + " " + r.pattern);
  const std::set<std::string> documented = DocumentedRoutes();
  CHECK(table.size() == 15);
  CHECK(table == documented);
}

TEST_CASE(
    "Every admin route answers 401 without a credential, with a client key and with a "
    "wrong admin token, and changes nothing",
    "[admin_security]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(Options(mock));
  httplib::Client client = server.Client();

  auto created = client.Post("/admin/keys", Admin(), R"({"name":"app"})", "application/json");
  REQUIRE(created);
  REQUIRE(created->status == 201);
  const std::string api_key = JsonStringField(created->body, "key");
  const std::string key_id = IdOf(created->body);
  // Both client keys are valid on the proxy.
  REQUIRE(Chat(client, {{"Authorization", "Bearer " + api_key}}) == 200);
  REQUIRE(Chat(client, {{"x-api-key", kEnvClientKey}}) == 200);

  const Snapshot before = Take(client);
  const std::string backend_id = IdWhere(before.backends, "name", "primary");
  REQUIRE(!backend_id.empty());

  const std::vector<std::pair<std::string, httplib::Headers>> credentials = {
      {"none", {}},
      {"env client key as Bearer", {{"Authorization", "Bearer " + kEnvClientKey}}},
      {"env client key as x-api-key", {{"x-api-key", kEnvClientKey}}},
      {"created client key as Bearer", {{"Authorization", "Bearer " + api_key}}},
      {"created client key as x-api-key", {{"x-api-key", api_key}}},
      {"wrong admin token", {{"Authorization", "Bearer wrong-admin-token-0123456789"}}},
      {"admin token with one more character", {{"Authorization", "Bearer " + kAdminToken + "x"}}},
      {"admin token without its last character",
       {{"Authorization", "Bearer " + kAdminToken.substr(0, kAdminToken.size() - 1)}}},
      {"admin token without Bearer", {{"Authorization", kAdminToken}}},
      {"admin token as x-api-key", {{"x-api-key", kAdminToken}}},
      {"admin token as Basic", {{"Authorization", "Basic " + kAdminToken}}},
  };
  const std::vector<server::AdminRoute> routes = AdminRouteTable();
  REQUIRE(routes.size() >= 15);
  for (const server::AdminRoute& route : routes) {
    // Real ids, so a request let through would show in the snapshot.
    std::string path = route.example;
    if (const size_t at = path.find("bkd_x"); at != std::string::npos)
      path.replace(at, 5, backend_id);
    if (const size_t at = path.find("key_x"); at != std::string::npos) path.replace(at, 5, key_id);
    const std::string body =
        route.method == "PATCH"  ? R"({"enabled":false,"strategy":"weighted","name":"x"})"
        : route.method == "POST" ? R"({"name":"intruder","api_base_url":"http://127.0.0.1:9/v1"})"
                                 : "{}";
    for (const auto& [what, headers] : credentials) {
      INFO(route.method << " " << path << " with " << what);
      auto res = Send(client, route.method, path, headers, body);
      REQUIRE(res);
      CHECK(res->status == 401);
      CHECK(OpenAIErrorProblem(res->body, "invalid_admin_token") == "");
      CHECK(res->body.find(kEnvClientKey) == std::string::npos);
      CHECK(res->body.find(api_key) == std::string::npos);
    }
  }
  const Snapshot after = Take(client);
  CHECK(after.backends == before.backends);
  CHECK(after.config == before.config);
  CHECK(after.keys == before.keys);
  CHECK(after.pools == before.pools);
  // The admin token opens every route (the walk above is not vacuous).
  for (const server::AdminRoute& route : routes) {
    INFO(route.method << " " << route.example);
    auto res = Send(client, route.method, route.example, Admin());
    REQUIRE(res);
    CHECK(res->status != 401);
  }
}

// Sends the injection probes of `part` (one of the TEST_CASEs below) to a
// server with something in every table, then checks that nothing changed
// and the proxy still serves.
void RunInjectionProbes(const std::string& part) {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "hi"));
  TestServer server(Options(mock));
  httplib::Client client = server.Client();
  client.set_url_encode(false);  // paths and queries are encoded here
  const httplib::Headers client_auth = {{"Authorization", "Bearer " + kEnvClientKey}};

  // Something in every table: a usage record (written behind: wait for it),
  // a client key.
  REQUIRE(Chat(client, client_auth) == 200);
  const auto usage_deadline = SteadyClock::now() + seconds(10);
  while (Get(client, "/admin/usage").find("\"request_id\"") == std::string::npos &&
         SteadyClock::now() < usage_deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  auto key = client.Post("/admin/keys", Admin(), R"({"name":"existing","metadata":{"a":"b"}})",
                         "application/json");
  REQUIRE(key);
  REQUIRE(key->status == 201);
  const Snapshot before = Take(client);
  REQUIRE(before.usage.find("\"request_id\"") != std::string::npos);
  const std::string mock_url = mock.base_url();
  std::set<std::string> created_keys;  // ids of keys the probes created (and revoked)

  auto check_answer = [](const httplib::Result& res) {
    REQUIRE(res);
    INFO(res->status << " " << res->body.substr(0, 300));
    CHECK(IsRefusalOrNormal(res->status));
    if (res->status >= 400) CHECK(OpenAIErrorProblem(res->body) == "");
  };

  if (part == "query parameters") {
    const std::vector<std::pair<std::string, std::string>> params = {
        {"/admin/backends", "pool"}, {"/admin/backends", "enabled"}, {"/admin/usage", "limit"},
        {"/admin/usage", "before"},  {"/admin/cooldowns", "limit"},  {"/admin/stats", "window"}};
    for (const Payload& p : InjectionPayloads()) {
      for (const auto& [path, param] : params) {
        INFO(path << "?" << param << "= " << p.label);
        auto res = client.Get((path + "?" + param + "=" + PercentEncode(p.value)).c_str(), Admin());
        check_answer(res);
        if (param == "pool" && res->status == 200) {
          CHECK(SameJson(res->body, R"({"data":[]})"));  // no backend is in that pool
        }
        // Not a number or boolean (422), or a request line over the limit (414).
        if (param != "pool") CHECK((res->status == 422 || res->status == 414));
      }
    }
  }

  if (part == "path ids") {
    for (const Payload& p : InjectionPayloads()) {
      const std::string id = PercentEncode(p.value);
      for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
               {"GET", "/admin/backends/" + id},
               {"PATCH", "/admin/backends/" + id},
               {"DELETE", "/admin/backends/" + id},
               {"POST", "/admin/backends/" + id + "/cooldown/reset"},
               {"DELETE", "/admin/keys/" + id}}) {
        INFO(method << " " << path.substr(0, 200) << " (" << p.label << ")");
        auto res = Send(client, method, path, Admin(), R"({"label":"x"})");
        check_answer(res);
        CHECK(res->status >= 400);  // no such id
      }
    }
  }

  if (part == "JSON string fields of POST /admin/backends") {
    const std::vector<std::string> fields = {"name", "label", "api_base_url", "api_key",
                                             "api",  "pool",  "source"};
    int n = 0;
    for (const Payload& p : InjectionPayloads()) {
      const std::string v = JsonString(p.value);
      std::vector<std::pair<std::string, std::string>> bodies;  // what, body
      for (const std::string& field : fields) {
        std::string name = JsonString("probe-" + std::to_string(++n));
        std::string url = JsonString(mock_url);
        if (field == "name") name = v;
        if (field == "api_base_url") url = v;
        std::string body = R"({"name":)" + name + R"(,"api_base_url":)" + url;
        if (field != "name" && field != "api_base_url") body += ",\"" + field + "\":" + v;
        bodies.emplace_back(field, body + "}");
      }
      const std::string name = JsonString("probe-" + std::to_string(++n));
      const std::string url = JsonString(mock_url);
      bodies.emplace_back("model_mappings upstream_model",
                          R"({"name":)" + name + R"(,"api_base_url":)" + url +
                              R"(,"model_mappings":{"gpt-4o":{"upstream_model":)" + v + "}}}");
      bodies.emplace_back("model_mappings key", R"({"name":)" + name + R"(,"api_base_url":)" + url +
                                                    R"(,"model_mappings":{)" + v + R"(:"up"}})");
      bodies.emplace_back("metadata value", R"({"name":)" + name + R"(,"api_base_url":)" + url +
                                                R"(,"metadata":{"note":)" + v + "}}");
      bodies.emplace_back("metadata key", R"({"name":)" + name + R"(,"api_base_url":)" + url +
                                              R"(,"metadata":{)" + v + R"(:"x"}})");
      for (const auto& [what, body] : bodies) {
        INFO("POST /admin/backends, " << what << " = " << p.label);
        auto res = client.Post("/admin/backends", Admin(), body, "application/json");
        check_answer(res);
        if (res->status == 201) {
          // Stored as given, then removed again.
          if (what == "label" || what == "pool")
            CHECK(StringMember(res->body, nullptr, what) == p.value);
          if (what == "metadata value")
            CHECK(StringMember(res->body, "metadata", "note") == p.value);
          if (what == "metadata key") CHECK(StringMember(res->body, "metadata", p.value) == "x");
          auto del = client.Delete(("/admin/backends/" + IdOf(res->body)).c_str(), Admin());
          REQUIRE(del);
          CHECK(del->status == 204);
        }
        CHECK(Get(client, "/admin/backends") == before.backends);
      }
    }
  }

  if (part == "JSON string fields of PATCH /admin/backends/{id}") {
    auto scratch = client.Post("/admin/backends", Admin(),
                               R"({"name":"scratch","api_base_url":)" + JsonString(mock_url) + "}",
                               "application/json");
    REQUIRE(scratch);
    REQUIRE(scratch->status == 201);
    const std::string path = "/admin/backends/" + IdOf(scratch->body);
    const std::vector<std::string> fields = {"name", "label", "api_base_url", "api_key",
                                             "api",  "pool",  "source"};
    for (const Payload& p : InjectionPayloads()) {
      const std::string v = JsonString(p.value);
      std::vector<std::pair<std::string, std::string>> bodies;
      for (const std::string& field : fields)
        bodies.emplace_back(field, "{\"" + field + "\":" + v + "}");
      bodies.emplace_back("model_mappings upstream_model",
                          R"({"model_mappings":{"gpt-4o":{"upstream_model":)" + v + "}}}");
      bodies.emplace_back("model_mappings key", R"({"model_mappings":{)" + v + R"(:"up"}})");
      bodies.emplace_back("metadata value", R"({"metadata":{"note":)" + v + "}}");
      for (const auto& [what, body] : bodies) {
        INFO("PATCH /admin/backends/{id}, " << what << " = " << p.label);
        const std::string scratch_before = Get(client, path);
        auto res = client.Patch(path.c_str(), Admin(), body, "application/json");
        check_answer(res);
        if (res->status == 200) {
          if (what == "label" || what == "pool")
            CHECK(StringMember(res->body, nullptr, what) == p.value);
          if (what == "metadata value")
            CHECK(StringMember(res->body, "metadata", "note") == p.value);
        } else {
          CHECK(Get(client, path) == scratch_before);  // a refused update changes nothing
        }
      }
    }
    auto del = client.Delete(path.c_str(), Admin());
    REQUIRE(del);
    CHECK(del->status == 204);
    CHECK(Get(client, "/admin/backends") == before.backends);
  }

  if (part == "JSON string fields of PATCH /admin/config") {
    for (const Payload& p : InjectionPayloads()) {
      const std::string v = JsonString(p.value);
      for (const std::string& body :
           {R"({"strategy":)" + v + "}", R"({"pool_order":[)" + v + "]}",
            R"({"pool_order":["primary","fallback",)" + v + "]}", "{" + v + R"(:"x"})"}) {
        INFO("PATCH /admin/config " << body.substr(0, 200));
        auto res = client.Patch("/admin/config", Admin(), body, "application/json");
        check_answer(res);
        if (res->status == 200) {
          CHECK(res->body.find(v) != std::string::npos);  // stored as given
          auto restore = client.Patch("/admin/config", Admin(), before.config, "application/json");
          REQUIRE(restore);
          CHECK(restore->status == 200);
        }
        CHECK(Get(client, "/admin/config") == before.config);
      }
    }
  }

  if (part == "JSON string fields of POST /admin/keys") {
    int n = 0;
    for (const Payload& p : InjectionPayloads()) {
      const std::string v = JsonString(p.value);
      const std::string name = JsonString("probe-" + std::to_string(++n));
      const std::string other_name = JsonString("probe-" + std::to_string(++n));
      for (const auto& [what, body] : std::vector<std::pair<std::string, std::string>>{
               {"name", R"({"name":)" + v + "}"},
               {"metadata value", R"({"name":)" + name + R"(,"metadata":{"note":)" + v + "}}"},
               {"metadata key",
                R"({"name":)" + other_name + R"(,"metadata":{)" + v + R"(:"x"}})"}}) {
        INFO("POST /admin/keys, " << what << " = " << p.label);
        auto res = client.Post("/admin/keys", Admin(), body, "application/json");
        check_answer(res);
        if (what == "name") CHECK(res->status == 422);  // not [A-Za-z0-9._-]{1,64}
        if (res->status == 201) {
          if (what == "metadata value")
            CHECK(StringMember(res->body, "metadata", "note") == p.value);
          created_keys.insert(IdOf(res->body));
          auto del = client.Delete(("/admin/keys/" + IdOf(res->body)).c_str(), Admin());
          REQUIRE(del);
          CHECK(del->status == 204);
        }
      }
    }
  }

  // Whatever ran: the store is as it was, and the proxy still serves.
  const Snapshot after = Take(client);
  CHECK(after.backends == before.backends);
  CHECK(after.config == before.config);
  CHECK(after.pools == before.pools);
  CHECK(after.usage == before.usage);
  CHECK(after.cooldowns == before.cooldowns);
  if (created_keys.empty()) {
    CHECK(after.keys == before.keys);
  } else {
    // The keys that were there are exactly as they were; the only others are
    // the probes, revoked.
    rapidjson::Document old_list, new_list;
    old_list.Parse(before.keys.c_str());
    new_list.Parse(after.keys.c_str());
    REQUIRE(old_list.IsObject());
    REQUIRE(new_list.IsObject());
    for (const auto& old_key : old_list["data"].GetArray()) {
      bool same = false;
      for (const auto& k : new_list["data"].GetArray()) same = same || k == old_key;
      CHECK(same);
    }
    for (const auto& k : new_list["data"].GetArray()) {
      const std::string id = k["id"].GetString();
      if (IdWhere(before.keys, "id", id).empty()) {
        CHECK(created_keys.count(id) == 1);
        CHECK(k["revoked"].IsTrue());
      }
    }
    CHECK(new_list["data"].Size() == old_list["data"].Size() + created_keys.size());
  }
  CHECK(Chat(client, client_auth) == 200);
}

TEST_CASE(
    "SQL-injection payloads in admin query parameters get a 4xx or a normal answer and change "
    "nothing",
    "[admin_security]") {
  RunInjectionProbes("query parameters");
}

TEST_CASE("SQL-injection payloads in admin path ids get a 4xx and change nothing",
          "[admin_security]") {
  RunInjectionProbes("path ids");
}

TEST_CASE(
    "SQL-injection payloads in the JSON string fields of POST /admin/backends get a 4xx or a "
    "normal answer and change nothing",
    "[admin_security]") {
  RunInjectionProbes("JSON string fields of POST /admin/backends");
}

TEST_CASE(
    "SQL-injection payloads in the JSON string fields of PATCH /admin/backends/{id} get a 4xx or a "
    "normal answer and change nothing",
    "[admin_security]") {
  RunInjectionProbes("JSON string fields of PATCH /admin/backends/{id}");
}

TEST_CASE(
    "SQL-injection payloads in the JSON string fields of PATCH /admin/config get a 4xx or a normal "
    "answer and change nothing",
    "[admin_security]") {
  RunInjectionProbes("JSON string fields of PATCH /admin/config");
}

TEST_CASE(
    "SQL-injection payloads in the JSON string fields of POST /admin/keys get a 4xx or a normal "
    "answer and change nothing",
    "[admin_security]") {
  RunInjectionProbes("JSON string fields of POST /admin/keys");
}

TEST_CASE("A server started without an admin token accepts no default credential",
          "[admin_security]") {
  MockUpstream mock;
  ServerProcessOptions o;
  o.backends = {Backend("primary", mock.base_url(), "primary")};
  TestServer server(std::move(o));  // no SWITCHBOARD_ADMIN_TOKEN
  httplib::Client client = server.Client();

  const std::vector<std::string> guesses = {"",        "admin",  "password",    "changeme",
                                            "secret",  "token",  "switchboard", "root",
                                            "default", "123456", "admin:admin", "null"};
  for (const std::string& guess : guesses) {
    for (const httplib::Headers& headers :
         {httplib::Headers{{"Authorization", "Bearer " + guess}},
          httplib::Headers{{"Authorization", guess}}, httplib::Headers{{"x-api-key", guess}},
          httplib::Headers{{"Authorization", "Basic " + guess}}}) {
      INFO("'" << guess << "' as " << headers.begin()->first << ": " << headers.begin()->second);
      auto res = client.Get("/admin/backends", headers);
      REQUIRE(res);
      CHECK(res->status == 401);
      auto post = client.Post("/admin/keys", headers, R"({"name":"intruder"})", "application/json");
      REQUIRE(post);
      CHECK(post->status == 401);
    }
  }
  auto none = client.Get("/admin/config");
  REQUIRE(none);
  CHECK(none->status == 401);

  // The token it generated (printed once) is the only one that works.
  const std::string out = server.output();
  const std::string marker = "only its hash is kept:\n  ";
  const size_t at = out.find(marker);
  REQUIRE(at != std::string::npos);
  const std::string token =
      out.substr(at + marker.size(), out.find('\n', at + marker.size()) - at - marker.size());
  REQUIRE(token.size() >= 32);
  auto res = client.Get("/admin/backends", {{"Authorization", "Bearer " + token}});
  REQUIRE(res);
  CHECK(res->status == 200);
}

}  // namespace
}  // namespace switchboard::testing
