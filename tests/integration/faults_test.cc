// Upstream faults against the real binary: a black-holed primary, hanging
// backends under an overall deadline, a stalled stream and a stream reset
// mid-way. Each case states its pass criterion in its name.
#include <fcntl.h>
#include <sys/socket.h>

#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

constexpr char kChatPath[] = "/v1/chat/completions";

// A TCP port on 127.0.0.1 whose connects hang: it listens, but its accept
// queue is full and nobody accepts, so the kernel drops new SYNs (as a
// black-holed or firewalled host would).
class BlackHole {
 public:
  BlackHole() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener_, 0) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    // Fill the accept queue until a connect no longer completes.
    for (int i = 0; i < 16; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      fillers_.push_back(fd);
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 300) == 0) {
        full_ = true;
        break;
      }
    }
  }
  ~BlackHole() {
    for (int fd : fillers_) ::close(fd);
    if (listener_ >= 0) ::close(listener_);
  }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;

  bool ok() const { return port_ > 0 && full_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

 private:
  int listener_ = -1;
  int port_ = 0;
  bool full_ = false;
  std::vector<int> fillers_;
};

TEST_CASE("A black-holed primary is given up after the connect timeout and the fallback serves "
          "the request within connect timeout + 1 s",
          "[faults]") {
  constexpr int kConnectTimeoutSeconds = 1;
  BlackHole hole;
  REQUIRE(hole.ok());
  MockUpstream fallback;
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "from fallback"));
  ServerProcessOptions options;
  options.backends = {Backend("blackholed", hole.base_url(), "primary", /*timeout_seconds=*/30),
                      Backend("fallback", fallback.base_url(), "fallback")};
  options.extra_args = {"--connect-timeout", std::to_string(kConnectTimeoutSeconds)};
  TestServer server(std::move(options));

  const auto start = SteadyClock::now();
  auto res = server.Client().Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
  const long long took = MillisBetween(start, SteadyClock::now());
  REQUIRE(res);
  INFO("took " << took << " ms");
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "fallback");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  CHECK(took >= kConnectTimeoutSeconds * 1000 - 100);
  CHECK(took < (kConnectTimeoutSeconds + 1) * 1000);
}

TEST_CASE("Three hanging backends with a 2 s per-try timeout and a 5 s request deadline give a "
          "504 at 5 s +- 0.5 s",
          "[faults]") {
  MockUpstream a, b, c;
  MockReply hang;
  hang.hang = true;
  for (MockUpstream* m : {&a, &b, &c}) m->SetDefault(kChatPath, hang);
  ServerProcessOptions options;
  options.backends = {Backend("hang-a", a.base_url(), "primary", /*timeout_seconds=*/2),
                      Backend("hang-b", b.base_url(), "primary", /*timeout_seconds=*/2),
                      Backend("hang-c", c.base_url(), "fallback", /*timeout_seconds=*/2)};
  options.extra_args = {"--request-timeout", "5"};
  TestServer server(std::move(options));

  const auto start = SteadyClock::now();
  auto res = server.Client().Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
  const long long took = MillisBetween(start, SteadyClock::now());
  REQUIRE(res);
  INFO("took " << took << " ms; " << res->body);
  CHECK(res->status == 504);
  CHECK(OpenAIErrorProblem(res->body) == "");
  CHECK(took >= 4500);
  CHECK(took <= 5500);
  CHECK(a.request_count() + b.request_count() + c.request_count() == 3);
}

TEST_CASE("A stream that stalls after one event ends with an error event after the idle "
          "timeout (pass: the error event arrives 2 s +- 1 s after the first)",
          "[faults]") {
  MockUpstream mock;
  Notification release;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"one", "two", "three"});
  reply.before_event = [&release](size_t index) {
    if (index == 1) release.WaitFor(seconds(30));
  };
  mock.SetDefault(kChatPath, reply);
  NotifyOnExit release_on_exit(release);
  TestServer server({Backend("primary", mock.base_url(), "primary", /*timeout_seconds=*/2)});

  StreamedResponse res = PostStreaming(server.port(), kChatPath, StreamChatBody("gpt-4o"));
  release.Notify();
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  const std::vector<std::string> events = res.events();
  INFO(res.body);
  REQUIRE(events.size() == 2);
  CHECK_FALSE(IsErrorEvent(events[0]));
  CHECK(IsErrorEvent(events[1]));
  CHECK(events[1].find("stream_timeout") != std::string::npos);
  const long long gap = MillisBetween(res.EventArrival(0), res.EventArrival(1));
  INFO("error event " << gap << " ms after the first");
  CHECK(gap >= 1000);
  CHECK(gap <= 3000);
  CHECK(mock.request_count() == 1);
}

TEST_CASE("A stream reset after 3 events is one attempt: the client sees the 3 events once, "
          "then an error event, and no other backend is tried",
          "[faults]") {
  MockUpstream primary, fallback;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"one", "two", "three", "four"});
  reply.reset_after_events = 3;
  primary.SetDefault(kChatPath, reply);
  fallback.SetDefault(kChatPath, ChatCompletionStreamReply("gpt-4o-upstream", {"fallback"}));
  TestServer server({Backend("primary", primary.base_url(), "primary"),
                     Backend("fallback", fallback.base_url(), "fallback")});

  StreamedResponse res = PostStreaming(server.port(), kChatPath, StreamChatBody("gpt-4o"));
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(res.header("x-switchboard-attempts") == "1");
  CHECK(res.header("x-switchboard-backend") == "primary");
  const std::vector<std::string> events = res.events();
  INFO(res.body);
  const std::vector<std::string> sent =
      ChatCompletionChunkEvents("gpt-4o-upstream", {"one", "two", "three", "four"});
  REQUIRE(events.size() == 4);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(events[i] + "\n\n" == sent[i]);  // each once, in order
  }
  CHECK(IsErrorEvent(events[3]));
  CHECK(res.body.find("[DONE]") == std::string::npos);
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 0);
}

}  // namespace
}  // namespace switchboard::testing
