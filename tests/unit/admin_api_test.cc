// The admin API over HTTP: auth on every route (walking the route table),
// error codes, and changes reaching routing at once.
#include "admin_api.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <thread>

#include "server.h"

namespace {

using switchboard::server::AdminApi;
using switchboard::server::AdminRoute;
using switchboard::server::Server;
using switchboard::server::ServerOptions;

constexpr char kTokenEnv[] = "SWITCHBOARD_TEST_ADMIN_API_TOKEN";
constexpr char kToken[] = "test-admin-token-0123456789abcdef";

class RunningServer {
 public:
  RunningServer() : server(Options()) {
    const switchboard::Status s = server.Start();
    INFO(s.ToString());
    REQUIRE(s.ok());
    thread_ = std::thread([this] { (void)server.Run(); });
  }
  ~RunningServer() {
    server.Shutdown(/*immediate=*/true);
    thread_.join();
  }
  httplib::Client Client() {
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(10, 0);
    return c;
  }
  httplib::Headers Auth() const { return {{"Authorization", std::string("Bearer ") + kToken}}; }

  Server server;

 private:
  static ServerOptions Options() {
    ::setenv(kTokenEnv, kToken, 1);
    ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.db_path = ":memory:";
    o.master_key_env = "SWITCHBOARD_TEST_NO_SUCH_VARIABLE";
    o.admin_token_env = kTokenEnv;
    return o;
  }
  std::thread thread_;
};

httplib::Result Send(httplib::Client& c, const std::string& method, const std::string& path,
                     const httplib::Headers& headers, const std::string& body = "{}") {
  if (method == "GET") return c.Get(path.c_str(), headers);
  if (method == "POST") return c.Post(path.c_str(), headers, body, "application/json");
  if (method == "PATCH") return c.Patch(path.c_str(), headers, body, "application/json");
  return c.Delete(path.c_str(), headers, body, "application/json");
}

TEST_CASE("Every admin route refuses a request without the admin token", "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  const switchboard::server::AdminAuth unused_auth;  // Routes() runs no auth
  AdminApi api(s.server.admin(), unused_auth);
  const std::vector<AdminRoute> routes = api.Routes();
  REQUIRE(routes.size() >= 12);
  for (const AdminRoute& route : routes) {
    INFO(route.method << " " << route.example);
    for (const httplib::Headers& bad : {httplib::Headers{},
                                        httplib::Headers{{"Authorization", "Bearer wrong"}},
                                        httplib::Headers{{"Authorization", kToken}},
                                        httplib::Headers{{"x-api-key", kToken}}}) {
      auto r = Send(client, route.method, route.example, bad);
      REQUIRE(r);
      CHECK(r->status == 401);
      CHECK(r->body.find("invalid_admin_token") != std::string::npos);
    }
    auto ok = Send(client, route.method, route.example, s.Auth());
    REQUIRE(ok);
    CHECK(ok->status != 401);
  }
}

TEST_CASE("Admin API creates, reads, updates and deletes a backend with a write-only key",
          "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  auto created = client.Post("/admin/backends", s.Auth(),
                             R"({"name":"a","api_base_url":"http://127.0.0.1:9/v1",
                                 "api_key":"sk-write-only-secret-9999"})",
                             "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  CHECK(created->body.find("sk-write-only") == std::string::npos);
  CHECK(created->body.find(R"("api_key_hint":"...9999")") != std::string::npos);
  const std::string id = created->body.substr(created->body.find("bkd_"), 28);

  auto got = client.Get(("/admin/backends/" + id).c_str(), s.Auth());
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(got->body.find("sk-write-only") == std::string::npos);
  auto models = client.Get("/v1/models");
  REQUIRE(models);
  auto list = client.Get("/admin/backends?enabled=true", s.Auth());
  REQUIRE(list);
  CHECK(list->body.find(R"("name":"a")") != std::string::npos);

  auto patched = client.Patch(("/admin/backends/" + id).c_str(), s.Auth(), R"({"pool":"fallback"})",
                              "application/json");
  REQUIRE(patched);
  CHECK(patched->status == 200);
  CHECK(patched->body.find(R"("pool":"fallback")") != std::string::npos);

  auto removed = client.Delete(("/admin/backends/" + id).c_str(), s.Auth());
  REQUIRE(removed);
  CHECK(removed->status == 204);
  auto gone = client.Get(("/admin/backends/" + id).c_str(), s.Auth());
  REQUIRE(gone);
  CHECK(gone->status == 404);
}

TEST_CASE("Admin API answers 400, 422, 404 and 409 and changes nothing", "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  auto malformed = client.Post("/admin/backends", s.Auth(), "{nope", "application/json");
  REQUIRE(malformed);
  CHECK(malformed->status == 400);
  auto invalid = client.Post("/admin/backends", s.Auth(),
                             R"({"name":"a","api_base_url":"gopher://x"})", "application/json");
  REQUIRE(invalid);
  CHECK(invalid->status == 422);
  CHECK(invalid->body.find(R"("param":"api_base_url")") != std::string::npos);
  auto missing = client.Post("/admin/backends/bkd_nope/cooldown/reset", s.Auth(), "", "");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  const char* body = R"({"name":"dup","api_base_url":"http://127.0.0.1:9/v1"})";
  REQUIRE(client.Post("/admin/backends", s.Auth(), body, "application/json")->status == 201);
  auto dup = client.Post("/admin/backends", s.Auth(), body, "application/json");
  REQUIRE(dup);
  CHECK(dup->status == 409);
  auto config = client.Patch("/admin/config", s.Auth(), R"({"error_threshold":0})",
                             "application/json");
  REQUIRE(config);
  CHECK(config->status == 422);
  auto list = client.Get("/admin/backends", s.Auth());
  REQUIRE(list);
  CHECK(list->body.find(R"("name":"a")") == std::string::npos);
  auto bad_window = client.Get("/admin/stats?window=abc", s.Auth());
  REQUIRE(bad_window);
  CHECK(bad_window->status == 422);
}

TEST_CASE("Admin API serves the dashboard without a token and without data", "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  auto page = client.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type").find("text/html") == 0);
  CHECK(page->body.find(kToken) == std::string::npos);
  auto chart = client.Get("/assets/chart.min.js");
  REQUIRE(chart);
  CHECK(chart->status == 200);
  CHECK(chart->body.size() > 100000);
  CHECK(client.Get("/assets/nope.js")->status == 404);
}

// The "key" field of a POST /admin/keys answer.
std::string SecretOf(const std::string& body) {
  const size_t at = body.find(R"("key":")");
  if (at == std::string::npos) return "";
  const size_t start = at + 7;
  return body.substr(start, body.find('"', start) - start);
}

std::string IdOf(const std::string& body) {
  const size_t at = body.find(R"("id":")");
  if (at == std::string::npos) return "";
  const size_t start = at + 6;
  return body.substr(start, body.find('"', start) - start);
}

TEST_CASE("Admin API creates a client key, shows it once, lists and revokes it",
          "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  auto created = client.Post("/admin/keys", s.Auth(), R"({"name":"ci","metadata":{"env":"test"}})",
                             "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  const std::string secret = SecretOf(created->body);
  const std::string id = IdOf(created->body);
  REQUIRE(secret.rfind("sbk_", 0) == 0);
  REQUIRE(id.rfind("key_", 0) == 0);

  auto list = client.Get("/admin/keys", s.Auth());
  REQUIRE(list);
  CHECK(list->status == 200);
  CHECK(list->body.find(secret) == std::string::npos);
  CHECK(list->body.find(R"("key":)") == std::string::npos);
  CHECK(list->body.find(R"("hint":"...)" + secret.substr(secret.size() - 4) + "\"") !=
        std::string::npos);
  CHECK(list->body.find(R"("revoked":false)") != std::string::npos);

  auto revoked = client.Delete(("/admin/keys/" + id).c_str(), s.Auth());
  REQUIRE(revoked);
  CHECK(revoked->status == 204);
  list = client.Get("/admin/keys", s.Auth());
  REQUIRE(list);
  CHECK(list->body.find(R"("revoked":true)") != std::string::npos);
  auto unknown = client.Delete("/admin/keys/key_nope", s.Auth());
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
}

TEST_CASE("Admin API answers 400, 422 and 409 for bad client key input", "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  auto malformed = client.Post("/admin/keys", s.Auth(), "{nope", "application/json");
  REQUIRE(malformed);
  CHECK(malformed->status == 400);
  auto invalid = client.Post("/admin/keys", s.Auth(), R"({"name":"has space"})", "application/json");
  REQUIRE(invalid);
  CHECK(invalid->status == 422);
  CHECK(invalid->body.find(R"("param":"name")") != std::string::npos);
  REQUIRE(client.Post("/admin/keys", s.Auth(), R"({"name":"ci"})", "application/json")->status ==
          201);
  auto dup = client.Post("/admin/keys", s.Auth(), R"({"name":"ci"})", "application/json");
  REQUIRE(dup);
  CHECK(dup->status == 409);
  auto list = client.Get("/admin/keys", s.Auth());
  REQUIRE(list);
  CHECK(list->body.find("has space") == std::string::npos);
}

TEST_CASE("A client key created through the admin API guards every proxy endpoint at once",
          "[admin_api]") {
  RunningServer s;
  auto client = s.Client();
  // No keys yet: the proxy is open.
  CHECK(client.Get("/v1/models")->status == 200);
  auto created = client.Post("/admin/keys", s.Auth(), R"({"name":"app"})", "application/json");
  REQUIRE(created);
  REQUIRE(created->status == 201);
  const std::string secret = SecretOf(created->body);
  const std::string id = IdOf(created->body);

  CHECK(client.Get("/v1/models")->status == 401);
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                           "/v1/messages"}) {
    INFO(path);
    auto res = client.Post(path, R"({"model":"gpt-4o"})", "application/json");
    REQUIRE(res);
    CHECK(res->status == 401);
  }
  CHECK(client.Get("/v1/models", {{"Authorization", "Bearer " + secret}})->status == 200);
  CHECK(client.Get("/v1/models", {{"x-api-key", secret}})->status == 200);
  // With a key, the request gets past auth (no backend serves the model: 404).
  auto routed = client.Post("/v1/chat/completions", {{"x-api-key", secret}},
                            R"({"model":"gpt-4o","messages":[]})", "application/json");
  REQUIRE(routed);
  CHECK(routed->status == 404);

  // A client key is never an admin token.
  auto as_admin = client.Get("/admin/keys", {{"Authorization", "Bearer " + secret}});
  REQUIRE(as_admin);
  CHECK(as_admin->status == 401);

  REQUIRE(client.Delete(("/admin/keys/" + id).c_str(), s.Auth())->status == 204);
  CHECK(client.Get("/v1/models", {{"Authorization", "Bearer " + secret}})->status == 401);
  // The only key is revoked: auth stays on, nothing gets in.
  CHECK(client.Get("/v1/models")->status == 401);
}

}  // namespace
