// The server core in-process on 127.0.0.1:0, against its built-in demo
// upstreams (in-process mock servers on loopback).
#include "server.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <string>
#include <thread>

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using switchboard::server::Server;
using switchboard::server::ServerOptions;
using SteadyClock = std::chrono::steady_clock;

constexpr char kChat[] = R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]})";
constexpr char kStreamChat[] =
    R"({"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]})";

ServerOptions DemoServerOptions() {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.db_path = ":memory:";
  o.master_key_env = "SWITCHBOARD_TEST_NO_SUCH_VARIABLE";  // a key that dies with the test
  o.demo = true;
  o.demo_options.chunk_interval = milliseconds(0);
  return o;
}

// A Server started and running on its own thread; shut down when dropped.
class RunningServer {
 public:
  explicit RunningServer(ServerOptions options) : server(std::move(options)) {
    const switchboard::Status s = server.Start();
    INFO(s.ToString());
    REQUIRE(s.ok());
    thread_ = std::thread([this] { run_status_ = server.Run(); });
  }
  ~RunningServer() {
    server.Shutdown(/*immediate=*/true);
    if (thread_.joinable()) thread_.join();
  }

  // Waits for Run() to return and gives its status.
  switchboard::Status Join() {
    if (thread_.joinable()) thread_.join();
    return run_status_;
  }

  httplib::Client Client() {
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(30, 0);
    return client;
  }

  Server server;

 private:
  std::thread thread_;
  switchboard::Status run_status_;
};

// Posts a streamed chat completion and returns the body; `first_bytes` is
// set as soon as the first bytes of the body arrive.
std::string PostStream(int port, std::promise<void>* first_bytes) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.set_header("Content-Type", "application/json");
  req.body = kStreamChat;
  std::string body;
  bool signalled = false;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    body.append(data, n);
    if (!signalled) {
      signalled = true;
      first_bytes->set_value();
    }
    return true;
  };
  if (!client.send(req)) body += "[no response]";
  if (!signalled) first_bytes->set_value();
  return body;
}

bool IsOpenAIError(const std::string& body, const std::string& code) {
  return body.rfind(R"({"error":{"message":)", 0) == 0 &&
         body.find(R"("code":")" + code + "\"") != std::string::npos;
}

}  // namespace

TEST_CASE("Server answers /healthz", "[server]") {
  RunningServer running(DemoServerOptions());
  auto res = running.Client().Get("/healthz");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == R"({"status":"ok"})");
}

TEST_CASE("Server routes a chat completion through the demo upstreams", "[server]") {
  RunningServer running(DemoServerOptions());
  auto res = running.Client().Post("/v1/chat/completions", kChat, "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "demo-primary");
  CHECK(res->get_header_value("x-request-id").rfind("req_", 0) == 0);
  CHECK(res->get_header_value("Content-Type") == "application/json");
  CHECK(res->body.find(R"("model":"gpt-4o-mini")") != std::string::npos);
}

TEST_CASE("Server streams a chat completion as server-sent events", "[server]") {
  RunningServer running(DemoServerOptions());
  auto res = running.Client().Post("/v1/chat/completions", kStreamChat, "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == "text/event-stream");
  CHECK(res->get_header_value("Transfer-Encoding") == "chunked");
  CHECK(res->body.rfind("data: {", 0) == 0);
  CHECK(res->body.find(R"("usage":{"prompt_tokens")") != std::string::npos);
  const std::string done = "data: [DONE]\n\n";
  CHECK(res->body.substr(res->body.size() - done.size()) == done);
}

TEST_CASE("The demo's simulated 429 fails over to the fallback pool", "[server]") {
  RunningServer running(DemoServerOptions());
  auto client = running.Client();
  for (int i = 1; i <= 3; ++i) {
    auto res = client.Post("/v1/chat/completions", kChat, "application/json");
    REQUIRE(res);
    CHECK(res->get_header_value("x-switchboard-backend") == "demo-primary");
  }
  auto fourth = client.Post("/v1/chat/completions", kChat, "application/json");
  REQUIRE(fourth);
  CHECK(fourth->status == 200);
  CHECK(fourth->get_header_value("x-switchboard-backend") == "demo-fallback");
  CHECK(fourth->get_header_value("x-switchboard-attempts") == "2");
}

TEST_CASE("Server serves embeddings and the model list", "[server]") {
  RunningServer running(DemoServerOptions());
  auto client = running.Client();
  auto emb = client.Post("/v1/embeddings", R"({"model":"text-embedding-3-small","input":"hi"})",
                         "application/json");
  REQUIRE(emb);
  CHECK(emb->status == 200);
  CHECK(emb->body.find(R"("object":"embedding")") != std::string::npos);
  auto models = client.Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 200);
  CHECK(models->body.find(R"("id":"gpt-4o-mini")") != std::string::npos);
}

TEST_CASE("Client keys are required on /v1 when configured, either header", "[server]") {
  ServerOptions options = DemoServerOptions();
  options.client_keys = {"client-key-1", "client-key-2"};
  RunningServer running(options);
  auto client = running.Client();

  auto none = client.Post("/v1/chat/completions", kChat, "application/json");
  REQUIRE(none);
  CHECK(none->status == 401);
  CHECK(IsOpenAIError(none->body, "invalid_api_key"));
  auto wrong = client.Get("/v1/models", {{"Authorization", "Bearer client-key-3"}});
  REQUIRE(wrong);
  CHECK(wrong->status == 401);
  auto bearer = client.Get("/v1/models", {{"Authorization", "Bearer client-key-2"}});
  REQUIRE(bearer);
  CHECK(bearer->status == 200);
  auto x_api_key = client.Post("/v1/chat/completions", {{"x-api-key", "client-key-1"}}, kChat,
                               "application/json");
  REQUIRE(x_api_key);
  CHECK(x_api_key->status == 200);
  auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("/v1/messages errors use Anthropic's shape", "[server]") {
  ServerOptions options = DemoServerOptions();
  options.client_keys = {"client-key-1"};
  RunningServer running(options);
  auto res = running.Client().Post("/v1/messages", R"({"model":"claude","messages":[]})",
                                   "application/json");
  REQUIRE(res);
  CHECK(res->status == 401);
  CHECK(res->body.rfind(R"({"type":"error","error":{"type":"authentication_error")", 0) == 0);
}

TEST_CASE("Unknown paths get 404 and known paths with the wrong method 405", "[server]") {
  RunningServer running(DemoServerOptions());
  auto client = running.Client();
  auto unknown = client.Get("/v1/nope");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  CHECK(IsOpenAIError(unknown->body, "not_found"));
  auto get_chat = client.Get("/v1/chat/completions");
  REQUIRE(get_chat);
  CHECK(get_chat->status == 405);
  CHECK(get_chat->get_header_value("Allow") == "POST");
  CHECK(IsOpenAIError(get_chat->body, "method_not_allowed"));
  auto post_models = client.Post("/v1/models", "{}", "application/json");
  REQUIRE(post_models);
  CHECK(post_models->status == 405);
  auto delete_health = client.Delete("/healthz");
  REQUIRE(delete_health);
  CHECK(delete_health->status == 405);
}

TEST_CASE("Invalid JSON and a missing model are 400s", "[server]") {
  RunningServer running(DemoServerOptions());
  auto client = running.Client();
  auto bad = client.Post("/v1/chat/completions", "{not json", "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(IsOpenAIError(bad->body, "invalid_json"));
  auto no_model = client.Post("/v1/chat/completions", R"({"messages":[]})", "application/json");
  REQUIRE(no_model);
  CHECK(no_model->status == 400);
  CHECK(no_model->body.find(R"("param":"model")") != std::string::npos);
  auto deep = client.Post("/v1/chat/completions", std::string(100000, '['), "application/json");
  REQUIRE(deep);
  CHECK(deep->status == 400);
}

TEST_CASE("A body over the configured limit is refused with 413", "[server]") {
  RunningServer running(DemoServerOptions());
  switchboard::Config config;
  config.body_limit_bytes = 1024;
  REQUIRE(running.server.storage().PutConfig(config).ok());
  REQUIRE(running.server.router().LoadFrom(running.server.storage()).ok());

  const std::string big = R"({"model":"gpt-4o-mini","pad":")" + std::string(2000, 'x') + "\"}";
  auto client = running.Client();
  auto res = client.Post("/v1/chat/completions", big, "application/json");
  REQUIRE(res);
  CHECK(res->status == 413);
  CHECK(IsOpenAIError(res->body, "request_too_large"));
  auto small = client.Post("/v1/chat/completions", kChat, "application/json");
  REQUIRE(small);
  CHECK(small->status == 200);
}

TEST_CASE("A sane client x-request-id is echoed and another one replaced", "[server]") {
  RunningServer running(DemoServerOptions());
  auto client = running.Client();
  auto mine = client.Post("/v1/chat/completions", {{"x-request-id", "trace-42.a"}}, kChat,
                          "application/json");
  REQUIRE(mine);
  CHECK(mine->get_header_value("x-request-id") == "trace-42.a");
  auto odd = client.Post("/v1/chat/completions", {{"x-request-id", "has spaces"}}, kChat,
                         "application/json");
  REQUIRE(odd);
  CHECK(odd->get_header_value("x-request-id").rfind("req_", 0) == 0);
}

TEST_CASE("/metrics renders the Prometheus text format", "[server]") {
  RunningServer running(DemoServerOptions());
  auto client = running.Client();
  REQUIRE(client.Post("/v1/chat/completions", kChat, "application/json"));
  auto res = client.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == "text/plain; version=0.0.4");
  CHECK(res->body.find("demo-primary") != std::string::npos);
}

TEST_CASE("Shutdown lets a running stream finish and then Run returns", "[server]") {
  ServerOptions options = DemoServerOptions();
  options.demo_options.chunk_interval = milliseconds(20);
  RunningServer running(options);
  std::promise<void> first_bytes;
  auto answer = std::async(std::launch::async, [&running, &first_bytes] {
    return PostStream(running.server.port(), &first_bytes);
  });
  REQUIRE(first_bytes.get_future().wait_for(seconds(10)) == std::future_status::ready);
  running.server.Shutdown();
  const std::string body = answer.get();
  CHECK(body.find("data: [DONE]") != std::string::npos);
  CHECK(running.Join().ok());
}

TEST_CASE("Shutdown ends a stream still running after the drain period with an error event",
          "[server]") {
  ServerOptions options = DemoServerOptions();
  options.demo_options.chunk_interval = milliseconds(200);  // ~6 s for the whole answer
  options.drain_timeout = milliseconds(0);
  RunningServer running(options);
  std::promise<void> first_bytes;
  auto answer = std::async(std::launch::async, [&running, &first_bytes] {
    return PostStream(running.server.port(), &first_bytes);
  });
  REQUIRE(first_bytes.get_future().wait_for(seconds(10)) == std::future_status::ready);
  running.server.Shutdown();
  const std::string body = answer.get();
  CHECK(body.find("event: error") != std::string::npos);
  CHECK(body.find("server_shutting_down") != std::string::npos);
  CHECK(body.find("[DONE]") == std::string::npos);
  CHECK(running.Join().ok());
}
