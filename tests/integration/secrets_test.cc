// Secrets canary: a backend key "sk-CANARY-<random>", a client key and an
// admin token, each random per run, pass through every path a secret can
// take (admin create and rotate, proxying, upstream 401 and 500 answers that
// echo the key back, validation errors, malformed bodies, wrong credentials,
// a restart under the wrong master key) and must never appear in any
// response body or header, the server's output, a usage record, /metrics,
// the dashboard, or the database files (main, WAL, SHM), read both while the
// server runs and after it stopped.
#include <sys/stat.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

constexpr char kChatPath[] = "/v1/chat/completions";

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned b = rd() & 0xff;
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every secret of one run, and what must not show them.
class Canaries {
 public:
  Canaries()
      : backend_key_("sk-CANARY-" + RandomHex(16)),
        rotated_key_("sk-CANARY-" + RandomHex(16)),
        client_key_("sk-client-CANARY-" + RandomHex(16)),
        wrong_client_key_("sk-client-CANARY-wrong-" + RandomHex(8)),
        admin_token_("sbadm_CANARY_" + RandomHex(16)),
        wrong_admin_token_("sbadm_CANARY_wrong_" + RandomHex(8)) {}

  const std::string& backend_key() const { return backend_key_; }
  const std::string& rotated_key() const { return rotated_key_; }
  const std::string& client_key() const { return client_key_; }
  const std::string& wrong_client_key() const { return wrong_client_key_; }
  const std::string& admin_token() const { return admin_token_; }
  const std::string& wrong_admin_token() const { return wrong_admin_token_; }

  // Checks that `text` (named `what`) holds none of the secrets, nor the
  // master keys given, nor a long piece of any of them.
  void CheckAbsent(const std::string& what, const std::string& text,
                   const std::vector<std::string>& master_keys = {}) const {
    std::vector<std::string> secrets = {backend_key_, rotated_key_,    client_key_,
                                        wrong_client_key_, admin_token_, wrong_admin_token_};
    secrets.insert(secrets.end(), master_keys.begin(), master_keys.end());
    for (const std::string& s : secrets) {
      INFO(what << " must not contain " << s);
      CHECK(text.find(s) == std::string::npos);
      // The random tail alone: a secret cut, quoted or escaped differently.
      CHECK(text.find(s.substr(s.size() - 16)) == std::string::npos);
    }
    // The common marker: no secret of this run, whole or in part.
    INFO(what << " must not contain CANARY");
    CHECK(text.find("CANARY") == std::string::npos);
  }

 private:
  std::string backend_key_, rotated_key_, client_key_, wrong_client_key_, admin_token_,
      wrong_admin_token_;
};

std::string Dump(const httplib::Result& res) {
  if (!res) return "";
  std::string out = std::to_string(res->status) + "\n";
  for (const auto& [name, value] : res->headers) out += name + ": " + value + "\n";
  return out + "\n" + res->body;
}

// The database's files as they are on disk now (main, WAL, SHM, journal, and
// anything else in the server's directory).
std::string StoreFiles(const std::string& dir) {
  std::string out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    out += "==== " + entry.path().filename().string() + "\n" + ReadFile(entry.path().string());
  }
  return out;
}

// A mock that echoes the credentials it received in its error bodies, as
// some providers do ("Incorrect API key provided: sk-...").
MockUpstream::Handler EchoingFailure(int status) {
  return [status](const RecordedRequest& req) {
    const std::string* auth = req.header("authorization");
    MockReply reply = JsonReply(
        OpenAiErrorJson("Incorrect API key provided: " + (auth ? *auth : std::string()),
                        "invalid_request_error", "invalid_api_key"),
        status);
    if (auth != nullptr) reply.headers.emplace_back("x-echo-authorization", *auth);
    return reply;
  };
}

TEST_CASE("Canary secrets never appear in responses, logs, usage records, metrics, the dashboard "
          "or the database files across every failure path (pass: no CANARY anywhere)",
          "[secrets]") {
  const Canaries canary;
  MockUpstream good, unauthorized, broken;
  good.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  good.SetDefault("/v1/embeddings", JsonReply(R"({"object":"list","data":[]})"));
  unauthorized.SetHandler(kChatPath, EchoingFailure(401));
  broken.SetHandler(kChatPath, EchoingFailure(500));

  TempDir dir;
  REQUIRE(!dir.path().empty());
  std::vector<std::string> seen;  // every response, for one check at the end
  std::string first_master_key;
  {
    ServerProcessOptions options;
    options.dir = dir.path();
    options.client_keys = {canary.client_key()};
    options.env = {"SWITCHBOARD_ADMIN_TOKEN=" + canary.admin_token()};
    TestServer server(std::move(options));
    first_master_key = server.process().master_key();
    httplib::Client client = server.Client();
    const httplib::Headers admin = {{"Authorization", "Bearer " + canary.admin_token()}};
    const httplib::Headers user = {{"Authorization", "Bearer " + canary.client_key()}};

    // Backends through the admin API only (an import file would hold the key).
    auto create = [&](const std::string& name, const std::string& url, const std::string& pool,
                      const std::string& mappings) {
      auto res = client.Post(
          "/admin/backends", admin,
          R"({"name":)" + JsonString(name) + R"(,"api_base_url":)" + JsonString(url) +
              R"(,"api_key":)" + JsonString(canary.backend_key()) + R"(,"pool":)" +
              JsonString(pool) + R"(,"model_mappings":)" + mappings + "}",
          "application/json");
      seen.push_back(Dump(res));
      REQUIRE(res);
      REQUIRE(res->status == 201);
      return JsonStringField(res->body, "id");
    };
    const std::string good_id =
        create("good", good.base_url(), "primary", R"({"gpt-4o":"gpt-4o-upstream"})");
    create("unauthorized", unauthorized.base_url(), "primary", R"({"bad-key-model":"m"})");
    create("broken", broken.base_url(), "fallback",
           R"({"bad-key-model":"m","broken-model":"m"})");

    // Forwarding: the key reaches the upstream (the canary is real).
    auto ok = client.Post("/v1/chat/completions", user, ChatBody("gpt-4o"), "application/json");
    seen.push_back(Dump(ok));
    REQUIRE(ok);
    REQUIRE(ok->status == 200);
    REQUIRE(good.request_count() >= 1);
    CHECK(*good.requests().back().header("authorization") == "Bearer " + canary.backend_key());

    // Upstream 401 and 500 answers that echo the key: the model served only
    // by those two backends.
    for (int i = 0; i < 3; ++i) {
      auto failed =
          client.Post("/v1/chat/completions", user, ChatBody("bad-key-model"), "application/json");
      seen.push_back(Dump(failed));
      REQUIRE(failed);
      CHECK(failed->status >= 400);
      auto streamed = PostStreaming(server.port(), "/v1/chat/completions",
                                    StreamChatBody("broken-model"), user);
      seen.push_back(std::to_string(streamed.status) + "\n" + streamed.body);
    }
    REQUIRE(unauthorized.request_count() + broken.request_count() >= 1);

    // Validation errors and malformed bodies that carry a key.
    const std::vector<std::string> bad_bodies = {
        R"({"name":"bad name!","api_base_url":"file:///x","api_key":")" + canary.rotated_key() +
            R"(","timeout_seconds":0})",
        R"({"name":"x","api_key":")" + canary.rotated_key() + R"(","api_key":)",
        R"({"name":"x","api_key":")" + canary.rotated_key() + R"(","unknown_field":1})",
        R"({"name":"x","api_key":)" + std::string("123") + R"(,"label":")" +
            canary.rotated_key() + R"("})",
        R"({"name":"good","api_base_url":"http://127.0.0.1:9/v1","api_key":")" +
            canary.rotated_key() + R"(","timeout_seconds":-1})",
    };
    for (const std::string& body : bad_bodies) {
      auto res = client.Post("/admin/backends", admin, body, "application/json");
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status >= 400);
      auto patch = client.Patch("/admin/backends/" + good_id, admin, body, "application/json");
      seen.push_back(Dump(patch));
    }
    // Proxy requests whose bodies carry the keys and are refused.
    const std::vector<std::string> refused_bodies = {
        R"({"model":"gpt-4o","api_key":")" + canary.backend_key() + R"(",)",
        R"({"api_key":")" + canary.backend_key() + R"("})"};
    for (const std::string& body : refused_bodies) {
      auto res = client.Post("/v1/chat/completions", user, body, "application/json");
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status >= 400);
    }
    // Wrong credentials, on both surfaces.
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{
             {"Authorization", "Bearer " + canary.wrong_client_key()},
             {"x-api-key", canary.wrong_client_key()},
             {"Authorization", "Bearer " + canary.admin_token()}}) {
      auto res = client.Post("/v1/chat/completions", {{name, value}}, ChatBody("gpt-4o"),
                             "application/json");
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status == 401);
    }
    for (const std::string& token :
         std::vector<std::string>{canary.wrong_admin_token(), canary.client_key()}) {
      auto res = client.Get("/admin/backends", {{"Authorization", "Bearer " + token}});
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status == 401);
    }

    // Key rotation, then every read surface.
    auto rotate = client.Patch("/admin/backends/" + good_id, admin,
                               R"({"api_key":)" + JsonString(canary.rotated_key()) + "}",
                               "application/json");
    seen.push_back(Dump(rotate));
    REQUIRE(rotate);
    CHECK(rotate->status == 200);
    auto after = client.Post("/v1/chat/completions", user, ChatBody("gpt-4o"), "application/json");
    seen.push_back(Dump(after));
    REQUIRE(after);
    CHECK(after->status == 200);
    CHECK(*good.requests().back().header("authorization") == "Bearer " + canary.rotated_key());

    const std::vector<std::string> admin_paths = {
        "/admin/backends", "/admin/backends/" + good_id, "/admin/usage?limit=100",
        "/admin/cooldowns?limit=100", "/admin/stats?window=3600", "/admin/pools",
        "/admin/config"};
    for (const std::string& path : admin_paths) {
      auto res = client.Get(path, admin);
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status == 200);
    }
    for (const std::string path : {"/metrics", "/", "/healthz", "/v1/models"}) {
      auto res = client.Get(path, path == "/v1/models" ? user : httplib::Headers{});
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status == 200);
    }

    // The database files while the server runs (WAL and SHM present).
    canary.CheckAbsent("database files (running)", StoreFiles(dir.path()), {first_master_key});
    REQUIRE(server.process().Stop() == 0);
    canary.CheckAbsent("server output", server.output(), {first_master_key});
  }

  // A restart under the wrong master key: the stored keys cannot be
  // decrypted; whatever the server says about it names no secret.
  {
    ServerProcessOptions options;
    options.dir = dir.path();
    options.client_keys = {canary.client_key()};
    options.env = {"SWITCHBOARD_ADMIN_TOKEN=" + canary.admin_token()};
    options.master_key = NewMasterKeyBase64();
    ServerProcess process(options);
    if (process.ok()) {
      httplib::Client client("127.0.0.1", process.port());
      client.set_read_timeout(30, 0);
      auto res = client.Post("/v1/chat/completions",
                             {{"Authorization", "Bearer " + canary.client_key()}},
                             ChatBody("gpt-4o"), "application/json");
      seen.push_back(Dump(res));
      REQUIRE(res);
      CHECK(res->status >= 500);
      auto backends = client.Get("/admin/backends",
                                 {{"Authorization", "Bearer " + canary.admin_token()}});
      seen.push_back(Dump(backends));
      process.Stop();
    }
    canary.CheckAbsent("server output (wrong master key)", process.output() + process.error(),
                       {first_master_key, options.master_key});
  }

  for (size_t i = 0; i < seen.size(); ++i) {
    canary.CheckAbsent("response " + std::to_string(i) + ":\n" + seen[i], seen[i],
                       {first_master_key});
  }
  canary.CheckAbsent("database files (stopped)", StoreFiles(dir.path()), {first_master_key});
}

// The fields of /proc/<pid>/limits' "Max core file size" line.
std::string CoreLimit(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max core file size", 0) == 0) return line;
  }
  return "";
}

TEST_CASE("The server cannot dump core and other processes of its user cannot read its memory "
          "or environment (pass: core limit 0, /proc/<pid>/environ unreadable)",
          "[secrets]") {
  TestServer server(ServerProcessOptions{});
  const std::string limit = CoreLimit(server.process().pid());
  INFO(limit);
  REQUIRE(!limit.empty());
  std::istringstream fields(limit.substr(std::string("Max core file size").size()));
  std::string soft, hard;
  fields >> soft >> hard;
  CHECK(soft == "0");
  CHECK(hard == "0");
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Not dumpable: /proc/<pid>/environ (which holds SWITCHBOARD_MASTER_KEY) and
  // /proc/<pid>/mem are closed to other processes, even of the same user.
  // (Sanitizer builds stay dumpable: LeakSanitizer needs ptrace.)
  // Root reads it regardless (CAP_SYS_PTRACE): checked only as another user.
  if (::geteuid() != 0) {
    std::ifstream environ("/proc/" + std::to_string(server.process().pid()) + "/environ");
    std::string content;
    std::getline(environ, content, '\0');
    CHECK(content.empty());
  }
#endif
}

}  // namespace
}  // namespace switchboard::testing
