// Hostile clients against the real binary: slowloris, slow bodies, oversized
// and malformed request heads, request-smuggling framings and huge bodies.
// Each case states its pass criterion in its name.
//
// The slowloris case opens 50 connections by default; set
// SWITCHBOARD_RELIABILITY_FULL=1 for the long variant (300 connections).
#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

constexpr char kChatPath[] = "/v1/chat/completions";
// The timeouts the server under test runs with (seconds).
constexpr int kHeaderTimeoutSeconds = 2;
constexpr int kBodyTimeoutSeconds = 2;

bool FullVariant() {
  const char* v = std::getenv("SWITCHBOARD_RELIABILITY_FULL");
  return v != nullptr && std::string(v) == "1";
}

ServerProcessOptions HostileOptions(const MockUpstream& mock) {
  ServerProcessOptions options;
  options.backends = {Backend("primary", mock.base_url(), "primary")};
  options.extra_args = {"--header-timeout", std::to_string(kHeaderTimeoutSeconds),
                        "--body-timeout", std::to_string(kBodyTimeoutSeconds)};
  return options;
}

// Reads the answer on `conn` until the server closes the connection (or
// `timeout`). True when it closed.
bool ReadUntilClosed(RawConnection& conn, milliseconds timeout) {
  conn.ReadUntil([&conn](const std::string&) { return conn.eof(); }, timeout);
  return conn.eof();
}

// Sends `request` and expects an answer with a status in `allowed` within
// `answer_within`, and the connection closed after it (the server reads and
// drops what is still coming for up to 2 s first, so the client sees the
// answer).
void ExpectRefusedAndClosed(int port, const std::string& request, std::vector<int> allowed,
                            milliseconds answer_within = seconds(5)) {
  RawConnection conn(port);
  REQUIRE(conn.connected());
  const auto start = SteadyClock::now();
  conn.Send(request, answer_within);  // the server may stop reading (and close) early
  conn.ReadUntil([](const std::string& r) { return RawConnection::ParseStatus(r) > 0; },
                 answer_within);
  const long long answered_ms = MillisBetween(start, SteadyClock::now());
  const bool closed = ReadUntilClosed(conn, seconds(5));
  INFO("answered after " << answered_ms << " ms: " << conn.received().substr(0, 300));
  const int status = RawConnection::ParseStatus(conn.received());
  CHECK(std::find(allowed.begin(), allowed.end(), status) != allowed.end());
  CHECK(answered_ms < answer_within.count());
  CHECK(closed);
}

// Resident and peak resident memory of `pid` in KiB (VmRSS, VmHWM).
std::pair<long, long> Memory(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  long rss = -1, hwm = -1;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::atol(line.c_str() + 6);
    if (line.rfind("VmHWM:", 0) == 0) hwm = std::atol(line.c_str() + 6);
  }
  return {rss, hwm};
}

TEST_CASE("Slowloris connections trickling a request line are closed within the header timeout "
          "while a normal request is still served in under 1 s",
          "[hostile]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server(HostileOptions(mock));
  const size_t n = FullVariant() ? 300 : 50;

  struct Slow {
    int fd = -1;
    SteadyTime opened;
    SteadyTime closed = SteadyTime::max();
    size_t sent = 0;
  };
  std::vector<Slow> slow(n);
  const std::string line = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n";
  for (Slow& s : slow) {
    s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(s.fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    s.opened = SteadyClock::now();
  }

  // One byte per connection every 500 ms; note when the server closes each.
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    while (!stop) {
      for (Slow& s : slow) {
        if (s.closed != SteadyTime::max()) continue;
        char buf[256];
        const ssize_t r = ::recv(s.fd, buf, sizeof(buf), MSG_DONTWAIT);
        const bool gone = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        if (!gone && ::send(s.fd, line.data() + s.sent % line.size(), 1,
                            MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
          ++s.sent;
        } else if (gone || (errno != EAGAIN && errno != EWOULDBLOCK)) {
          s.closed = SteadyClock::now();
        }
      }
      std::this_thread::sleep_for(milliseconds(500));
    }
  });

  // Meanwhile, normal clients are served promptly.
  std::vector<long long> served_ms;
  for (int i = 0; i < 3; ++i) {
    httplib::Client client = server.Client();
    const auto start = SteadyClock::now();
    auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
    served_ms.push_back(MillisBetween(start, SteadyClock::now()));
    REQUIRE(res);
    CHECK(res->status == 200);
    std::this_thread::sleep_for(milliseconds(300));
  }

  // Wait past the header timeout, with a margin for a loaded machine.
  const auto bound = seconds(kHeaderTimeoutSeconds) + milliseconds(1500);
  const auto deadline = SteadyClock::now() + bound + seconds(1);
  while (SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(100));
  }
  stop = true;
  trickler.join();

  size_t late = 0;
  long long worst_ms = 0;
  for (Slow& s : slow) {
    if (s.closed == SteadyTime::max()) {
      ++late;
    } else {
      worst_ms = std::max(worst_ms, MillisBetween(s.opened, s.closed));
    }
    ::close(s.fd);
  }
  INFO(n << " slow connections; still open: " << late << "; slowest close after " << worst_ms
         << " ms; normal requests took " << served_ms[0] << "/" << served_ms[1] << "/"
         << served_ms[2] << " ms");
  CHECK(late == 0);
  CHECK(worst_ms <= std::chrono::duration_cast<milliseconds>(bound).count());
  for (long long ms : served_ms) CHECK(ms < 1000);
}

TEST_CASE("A body trickled in slower than the body timeout is cut at the body timeout "
          "(pass: answered 400 or 408 and closed within the timeout + 1.5 s)",
          "[hostile]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server(HostileOptions(mock));
  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  const auto start = SteadyClock::now();
  REQUIRE(conn.Send(RawPostHead(kChatPath, "", "Content-Length: 100000\r\n")));
  // One byte every 300 ms: each read is well within any per-read timeout.
  while (!conn.eof() && SteadyClock::now() - start < seconds(kBodyTimeoutSeconds + 4)) {
    if (!conn.Send("x", milliseconds(100))) break;
    conn.ReadUntil([](const std::string&) { return false; }, milliseconds(300));
  }
  ReadUntilClosed(conn, seconds(3));
  const long long took = MillisBetween(start, SteadyClock::now());
  INFO("closed after " << took << " ms; response: " << conn.received().substr(0, 200));
  const int status = RawConnection::ParseStatus(conn.received());
  CHECK((status == 400 || status == 408));
  CHECK(conn.eof());
  CHECK(took <= (kBodyTimeoutSeconds + 1) * 1000 + 500 + 2000 /* lingering close */);
  CHECK(mock.request_count() == 0);
}

TEST_CASE("101 request headers are refused with 431 or 400 and the connection closed",
          "[hostile]") {
  MockUpstream mock;
  TestServer server(HostileOptions(mock));
  std::string head = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 101; ++i) head += "X-Filler-" + std::to_string(i) + ": v\r\n";
  ExpectRefusedAndClosed(server.port(), head + "\r\n", {431, 400});
}

TEST_CASE("One 70 KiB request header is refused with 431 or 400 and the connection closed",
          "[hostile]") {
  MockUpstream mock;
  TestServer server(HostileOptions(mock));
  const std::string head =
      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n";
  ExpectRefusedAndClosed(server.port(), head, {431, 400});
}

TEST_CASE("10 MiB without a newline is refused with 431, 414 or 400 and the connection closed "
          "before the header timeout",
          "[hostile]") {
  MockUpstream mock;
  TestServer server(HostileOptions(mock));
  const std::string junk = "GET /" + std::string(10 * 1024 * 1024, 'a');
  ExpectRefusedAndClosed(server.port(), junk, {431, 414, 400},
                         milliseconds(kHeaderTimeoutSeconds * 1000));
}

TEST_CASE("Malformed chunk sizes are refused with 400", "[hostile]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server(HostileOptions(mock));
  // A valid body in each, so that only the chunk framing is at fault.
  const std::string body = ChatBody("gpt-4o");
  char hex[16];
  std::snprintf(hex, sizeof(hex), "%zx", body.size());
  const std::string tail = "\r\n" + body + "\r\n0\r\n\r\n";
  for (const std::string& chunks :
       {"zz" + tail, "-" + std::string(hex) + tail, "ffffffffffffffffff" + tail,
        std::string(hex) + " junk" + tail, "0x" + std::string(hex) + tail,
        " " + std::string(hex) + tail, std::string(hex) + "\n" + body + "\r\n0\r\n\r\n",
        std::string(hex) + tail.substr(0, tail.size() - 7) + "XX0\r\n\r\n"}) {
    INFO("chunks: " << chunks);
    ExpectRefusedAndClosed(server.port(),
                           RawPostHead(kChatPath, "", "Transfer-Encoding: chunked\r\n") + chunks,
                           {400, 413});
  }
  CHECK(mock.request_count() == 0);
}

TEST_CASE("CR or LF inside a header value is refused with 400", "[hostile]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server(HostileOptions(mock));
  const std::string body = ChatBody("gpt-4o");
  const std::vector<std::string> bad_headers = {
      "X-Evil: a\rb\r\n", "X-Evil: a\rInjected: b\r\n", "X-Evil: a\r\n b-obsolete-fold\r\n",
      std::string("X-Evil: a\0b\r\n", 13), "X-Evil: a\x01b\r\n", "X-Evil: a\x7f\r\n"};
  for (const std::string& bad : bad_headers) {
    INFO("header: " << JsonString(bad));
    ExpectRefusedAndClosed(
        server.port(),
        RawPostHead(kChatPath, std::string(bad), "Content-Length: " + std::to_string(body.size()) +
                                                     "\r\n") +
            body,
        {400});
  }
  CHECK(mock.request_count() == 0);
}

TEST_CASE("Conflicting Content-Length and Transfer-Encoding framings are refused with 400",
          "[hostile]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server(HostileOptions(mock));
  const std::string body = ChatBody("gpt-4o");
  const std::string chunked = "5\r\n{\"a\":\r\n0\r\n\r\n";
  const std::string len = std::to_string(body.size());
  const std::vector<std::pair<std::string, std::string>> framings = {
      {"Content-Length: " + len + "\r\nTransfer-Encoding: chunked\r\n", chunked},
      {"Transfer-Encoding: chunked\r\nContent-Length: " + len + "\r\n", chunked},
      {"Content-Length: " + len + "\r\nContent-Length: 3\r\n", body},
      {"Content-Length: " + len + ", " + len + "\r\n", body},
      {"Transfer-Encoding: gzip, chunked\r\n", chunked},
      {"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", chunked},
      {"Transfer-Encoding: xchunked\r\n", chunked},
      {"Content-Length: +" + len + "\r\n", body},
      {"Content-Length: -1\r\n", body},
  };
  for (const auto& [framing, payload] : framings) {
    INFO("framing: " << JsonString(framing));
    ExpectRefusedAndClosed(server.port(), RawPostHead(kChatPath, "", framing) + payload,
                           {400, 501});
  }
  CHECK(mock.request_count() == 0);
}

TEST_CASE("A 100 MB body is refused with 413, with Content-Length and chunked, and the server's "
          "peak memory grows by less than 16 MiB",
          "[hostile]") {
  MockUpstream mock;
  mock.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  // The default body timeout: reading the 10 MiB the limit lets in may take
  // longer than the 2 s of the slow-body tests on a loaded, sanitized build
  // (then the answer is a 400 for the cut body, not the 413 under test).
  ServerProcessOptions options;
  options.backends = {Backend("primary", mock.base_url(), "primary")};
  TestServer server(std::move(options));
  // Warm up (threads, allocator arenas), then take the baseline.
  for (int i = 0; i < 3; ++i) {
    auto res = server.Client().Post(kChatPath, ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
  }
  const auto [rss_before, hwm_before] = Memory(server.process().pid());
  REQUIRE(rss_before > 0);
  constexpr size_t kBody = 100 * 1000 * 1000;
  for (const bool chunked : {false, true}) {
    INFO((chunked ? "chunked" : "Content-Length"));
    RawConnection conn(server.port());
    REQUIRE(conn.connected());
    const std::string framing =
        chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: " + std::to_string(kBody) + "\r\n";
    conn.SendBodyUntilAnswered(RawPostHead(kChatPath, "", framing), kBody, chunked);
    CHECK(RawConnection::ParseStatus(conn.received()) == 413);
    CHECK(conn.body_bytes_sent() < kBody);  // refused before it all arrived
  }
  const auto [rss_after, hwm_after] = Memory(server.process().pid());
  const long growth_kib = std::max(hwm_after, rss_after) - std::max(rss_before, 0L);
  INFO("VmRSS before " << rss_before << " KiB, VmHWM before " << hwm_before << " KiB, after "
                       << hwm_after << " KiB: growth " << growth_kib << " KiB");
  // Sanitizers keep freed memory in quarantine: the bound holds for plain builds.
  if (!Sanitized()) CHECK(growth_kib < 16 * 1024);
  CHECK(mock.request_count() == 3);
}

}  // namespace
}  // namespace switchboard::testing
