// Resource exhaustion, end to end on the real server binary: with many idle
// streams held open by an upstream that never answers, a new client still
// gets /healthz, the admin API and a chat request to another backend within
// a second. SWITCHBOARD_EXHAUSTION_STREAMS changes the number of held streams
// (200 by default). With the proxy at its in-flight limit (--max-in-flight)
// and its connection threads (--max-connections) nearly all taken, a new
// chat request is refused with 503 at once, idle keep-alive connections are
// closed to free their threads, and /healthz and the admin API still answer.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";
const std::string kAdminToken = "admin-token-for-exhaustion-tests-0123456789";

size_t HeldStreams() {
  const char* n = std::getenv("SWITCHBOARD_EXHAUSTION_STREAMS");
  if (n == nullptr) return 200;
  const long v = std::strtol(n, nullptr, 10);
  return v > 0 ? static_cast<size_t>(v) : 200;
}

// A GET or POST on a fresh connection, with its wall time.
struct Timed {
  int status = 0;
  std::string body;
  std::string content_type;
  std::string retry_after;
  long long ms = 0;
};

Timed TimedRequest(int port, const std::string& method, const std::string& path,
                   const httplib::Headers& headers, const std::string& body = "") {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(10, 0);
  client.set_write_timeout(10, 0);
  const SteadyTime start = SteadyClock::now();
  httplib::Result res = method == "GET"
                            ? client.Get(path.c_str(), headers)
                            : client.Post(path.c_str(), headers, body, "application/json");
  Timed out;
  out.ms = MillisBetween(start, SteadyClock::now());
  if (res) {
    out.status = res->status;
    out.body = res->body;
    out.content_type = res->get_header_value("Content-Type");
    out.retry_after = res->get_header_value("Retry-After");
  }
  return out;
}

TEST_CASE(
    "With many idle streams held open upstream, /healthz, GET /admin/backends and a new "
    "chat request answer within 1 s",
    "[exhaustion]") {
  const size_t streams = HeldStreams();
  // One mock worker per held stream (each hanging handler holds one), and a
  // second, answering backend for the new chat request.
  MockUpstream held_upstream(streams + 8);
  held_upstream.SetDefault(kChatPath, MockReply{.hang = true});
  MockUpstream answering;
  answering.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "still here"));

  ServerProcessOptions o;
  BackendSpec held = Backend("held", held_upstream.base_url(), "primary", /*timeout_seconds=*/300);
  held.models = {{"held-model", "held-upstream"}};
  o.backends = {held, Backend("answering", answering.base_url(), "primary")};
  o.env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken};
  o.extra_args = {"--drain-seconds", "1"};
  TestServer server(std::move(o));

  // The held streams: each a client connection and an upstream request that
  // never gets a response head.
  std::vector<std::unique_ptr<RawConnection>> clients;
  const SteadyTime opening = SteadyClock::now();
  for (size_t i = 0; i < streams; ++i) {
    auto c = std::make_unique<RawConnection>(server.port());
    REQUIRE(c->connected());
    REQUIRE(c->Send(RawPost(kChatPath, StreamChatBody("held-model"))));
    clients.push_back(std::move(c));
  }
  const bool all_held = held_upstream.WaitForRequests(streams, seconds(60));
  INFO(held_upstream.request_count() << " of " << streams << " streams reached the upstream");
  CHECK(all_held);  // else the probes below measure a server with fewer held streams
  const long long open_ms = MillisBetween(opening, SteadyClock::now());

  const Timed health = TimedRequest(server.port(), "GET", "/healthz", {});
  const Timed admin = TimedRequest(server.port(), "GET", "/admin/backends",
                                   {{"Authorization", "Bearer " + kAdminToken}});
  const Timed chat =
      TimedRequest(server.port(), "POST", kChatPath, {}, ChatBody("gpt-4o", "anyone there?"));
  std::printf(
      "exhaustion: %zu held streams open in %lld ms; /healthz %d in %lld ms, "
      "GET /admin/backends %d in %lld ms, chat %d in %lld ms\n",
      streams, open_ms, health.status, health.ms, admin.status, admin.ms, chat.status, chat.ms);

  CHECK(health.status == 200);
  CHECK(health.ms < 1000);
  CHECK(admin.status == 200);
  CHECK(admin.body.find(R"("name":"held")") != std::string::npos);
  CHECK(admin.ms < 1000);
  INFO(chat.body);
  if (chat.status == 503) {
    CHECK(chat.content_type.find("application/json") != std::string::npos);
    CHECK(OpenAIErrorProblem(chat.body) == "");
  } else {
    CHECK(chat.status == 200);
    CHECK(chat.body.find("still here") != std::string::npos);
  }
  CHECK(chat.ms < 1000);
  // The held streams are still held: nothing was retried or answered.
  CHECK(held_upstream.request_count() == streams);
  if (held_upstream.request_count() != streams) {
    // What the streams that never reached the upstream were told.
    std::map<std::string, int> answers;
    for (const auto& c : clients) {
      c->ReadUntil([](const std::string& r) { return r.find("\r\n\r\n") != std::string::npos; },
                   milliseconds(1));
      const std::string& r = c->received();
      const std::string first = r.substr(0, r.find('\r'));
      const size_t body = r.find("\r\n\r\n");
      ++answers[first + (body == std::string::npos ? "" : " " + r.substr(body + 4, 160))];
    }
    for (const auto& [answer, count] : answers) {
      std::printf("exhaustion: %d held streams: '%s'\n", count, answer.c_str());
    }
  }
}

TEST_CASE(
    "At the in-flight limit a new chat request gets 503 server_overloaded at once, idle "
    "keep-alive connections are closed to keep threads free, /healthz and the admin API "
    "answer within 1 s, and requests are served again once the streams end",
    "[exhaustion]") {
  // 96 connection threads keep 8 for anything but proxying (1/16, at least 8),
  // so the pressure mark is 88 open connections. 40 idle + 64 streams would
  // need 104 threads: without the server closing idle connections, the last
  // streams and every probe would wait for a thread.
  constexpr size_t kThreads = 96;
  constexpr size_t kMark = 88;
  constexpr size_t kInFlight = 64;
  constexpr size_t kIdle = 40;
  MockUpstream held_upstream(kInFlight + 8);
  held_upstream.SetDefault(kChatPath, MockReply{.hang = true});
  MockUpstream answering(8);
  answering.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "served again"));

  ServerProcessOptions o;
  BackendSpec held = Backend("held", held_upstream.base_url(), "primary", /*timeout_seconds=*/300);
  held.models = {{"held-model", "held-upstream"}};
  o.backends = {held, Backend("answering", answering.base_url(), "primary")};
  o.env = {"SWITCHBOARD_ADMIN_TOKEN=" + kAdminToken};
  // A long keep-alive timeout: only pressure can close the idle connections.
  o.extra_args = {"--max-connections", std::to_string(kThreads), "--max-in-flight",
                  std::to_string(kInFlight), "--idle-timeout", "600", "--drain-seconds", "1"};
  TestServer server(std::move(o));

  // Idle keep-alive connections, each after one answered request.
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (size_t i = 0; i < kIdle; ++i) {
    auto c = std::make_unique<RawConnection>(server.port());
    REQUIRE(c->connected());
    REQUIRE(c->Send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    REQUIRE(c->ReadUntil([](const std::string& r) { return r.find("\"ok\"") != std::string::npos; },
                         seconds(10)));
    CHECK(c->received().find("Connection: close") == std::string::npos);
    idle.push_back(std::move(c));
  }
  // The streams that fill the in-flight limit.
  std::vector<std::unique_ptr<RawConnection>> clients;
  for (size_t i = 0; i < kInFlight; ++i) {
    auto c = std::make_unique<RawConnection>(server.port());
    REQUIRE(c->connected());
    REQUIRE(c->Send(RawPost(kChatPath, StreamChatBody("held-model"))));
    clients.push_back(std::move(c));
  }
  REQUIRE(held_upstream.WaitForRequests(kInFlight, seconds(60)));

  // Past the pressure mark the server closed idle connections until the open
  // ones were below the mark again (the rest of the threads stay free).
  size_t closed = 0;
  for (auto& c : idle) {
    c->ReadUntil([](const std::string&) { return false; }, milliseconds(200));
    if (c->eof()) ++closed;
  }
  CHECK(closed >= kIdle + kInFlight - (kMark - 1));

  const Timed chat =
      TimedRequest(server.port(), "POST", kChatPath, {}, ChatBody("gpt-4o", "anyone there?"));
  const Timed health = TimedRequest(server.port(), "GET", "/healthz", {});
  const Timed admin = TimedRequest(server.port(), "GET", "/admin/backends",
                                   {{"Authorization", "Bearer " + kAdminToken}});
  const Timed metrics = TimedRequest(server.port(), "GET", "/metrics", {});
  std::printf(
      "exhaustion: %zu streams at the in-flight limit, %zu of %zu idle connections closed by the "
      "server; "
      "chat %d in %lld ms, /healthz %d in %lld ms, GET /admin/backends %d in %lld ms\n",
      kInFlight, closed, kIdle, chat.status, chat.ms, health.status, health.ms, admin.status,
      admin.ms);

  INFO(chat.body);
  CHECK(chat.status == 503);
  CHECK(chat.ms < 1000);
  CHECK(chat.retry_after == "1");
  CHECK(chat.content_type.find("application/json") != std::string::npos);
  CHECK(OpenAIErrorProblem(chat.body, "server_overloaded") == "");
  CHECK(health.status == 200);
  CHECK(health.ms < 1000);
  CHECK(admin.status == 200);
  CHECK(admin.ms < 1000);
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("switchboard_overloaded_requests_total 1\n") != std::string::npos);
  // The refused request never reached an upstream.
  CHECK(answering.request_count() == 0);
  CHECK(held_upstream.request_count() == kInFlight);

  // The clients of the held streams leave: their places free up.
  clients.clear();
  Timed again;
  const SteadyTime deadline = SteadyClock::now() + seconds(30);
  do {
    again = TimedRequest(server.port(), "POST", kChatPath, {}, ChatBody("gpt-4o", "now?"));
  } while (again.status == 503 && SteadyClock::now() < deadline);
  INFO(again.body);
  CHECK(again.status == 200);
  CHECK(again.body.find("served again") != std::string::npos);
}

}  // namespace
}  // namespace switchboard::testing
