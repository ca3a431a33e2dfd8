// Resource exhaustion, end to end on the real server binary: with many idle
// streams held open by an upstream that never answers, a new client still
// gets /healthz, the admin API and a chat request to another backend within
// a second. SWITCHBOARD_EXHAUSTION_STREAMS changes the number of held streams
// (200 by default).
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

}  // namespace
}  // namespace switchboard::testing
