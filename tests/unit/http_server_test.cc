#include "http_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using switchboard::server::BodyRead;
using switchboard::server::DynamicThreadPool;
using switchboard::server::HttpServer;
using switchboard::server::HttpServerOptions;
using SteadyClock = std::chrono::steady_clock;

// An HttpServer on 127.0.0.1:<ephemeral>, listening on its own thread.
class TestServer {
 public:
  explicit TestServer(HttpServerOptions options = {}) : http(options) {}
  ~TestServer() { Stop(); }

  void Start() {
    port = http.bind_to_any_port("127.0.0.1");
    REQUIRE(port > 0);
    thread_ = std::thread([this] { http.listen_after_bind(); });
  }
  void Stop() {
    http.stop();
    Join();
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  HttpServer http;
  int port = 0;

 private:
  std::thread thread_;
};

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads until `until` appears in what was read, the peer closes, or the
// timeout passes. *closed tells whether the peer closed.
std::string ReadUntil(int fd, std::string_view until, milliseconds timeout,
                      bool* closed = nullptr) {
  std::string out;
  const auto deadline = SteadyClock::now() + timeout;
  if (closed != nullptr) *closed = false;
  while (until.empty() || out.find(until) == std::string::npos) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Waits for `f` until `timeout`; true if it became ready.
template <typename T>
bool Ready(std::future<T>& f, milliseconds timeout = seconds(5)) {
  return f.wait_for(timeout) == std::future_status::ready;
}

// A handler that reads its body with ReadBody(limit) and answers 200 with
// the size read, or 413/400.
void AddBodyRoute(HttpServer& http, int64_t limit) {
  http.Post("/body", [limit](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) {
    std::string body;
    const BodyRead r = switchboard::server::ReadBody(req, res, reader, limit, &body);
    if (r == BodyRead::kOk) {
      res.set_content(std::to_string(body.size()), "text/plain");
      return;
    }
    switchboard::server::CloseConnectionAfter(res);
    res.status = r == BodyRead::kTooLarge ? 413 : 400;
    res.set_content("refused", "text/plain");
  });
}

}  // namespace

TEST_CASE("DynamicThreadPool runs every queued job before shutdown returns", "[http_server]") {
  DynamicThreadPool pool(/*max_threads=*/1);
  std::atomic<int> ran{0};
  for (int i = 0; i < 20; ++i) pool.enqueue([&ran] { ++ran; });
  pool.shutdown();
  CHECK(ran == 20);
  CHECK(pool.threads() == 0);
}

TEST_CASE("DynamicThreadPool starts a thread per concurrent job up to its maximum",
          "[http_server]") {
  DynamicThreadPool pool(/*max_threads=*/4, /*idle_timeout=*/milliseconds(20));
  std::mutex mu;
  std::condition_variable cv;
  int running = 0;
  bool release = false;
  for (int i = 0; i < 6; ++i) {
    pool.enqueue([&] {
      std::unique_lock<std::mutex> lock(mu);
      ++running;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, seconds(5), [&] { return running == 4; }));
  }
  CHECK(pool.threads() == 4);  // two jobs wait for a free thread
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  // Idle threads leave after idle_timeout.
  const auto deadline = SteadyClock::now() + seconds(10);
  while (pool.threads() > 0 && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  CHECK(pool.threads() == 0);
  CHECK(running == 6);
  CHECK(pool.peak_threads() == 4);
}

TEST_CASE("HttpServer serves many blocked connections at once", "[http_server]") {
  // httplib's own pool has 8 threads: the 9th request would never arrive.
  constexpr int kClients = 48;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  TestServer server;  // after what its handler uses: stopped before that goes
  server.http.Get("/barrier", [&](const httplib::Request&, httplib::Response& res) {
    std::unique_lock<std::mutex> lock(mu);
    ++arrived;
    cv.notify_all();
    const bool all = cv.wait_for(lock, seconds(20), [&] { return arrived >= kClients; });
    res.set_content(all ? "all" : "timeout", "text/plain");
  });
  server.Start();

  std::vector<std::future<std::string>> answers;
  for (int i = 0; i < kClients; ++i) {
    answers.push_back(std::async(std::launch::async, [port = server.port] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(30, 0);
      auto res = client.Get("/barrier");
      return res ? res->body : std::string("error");
    }));
  }
  int all = 0;
  for (auto& a : answers) all += a.get() == "all" ? 1 : 0;
  CHECK(all == kClients);
}

TEST_CASE("ClientGone turns true once the client hangs up", "[http_server]") {
  std::promise<void> started;
  std::promise<bool> gone;
  TestServer server;
  server.http.Get("/wait", [&](const httplib::Request&, httplib::Response& res) {
    started.set_value();
    const auto deadline = SteadyClock::now() + seconds(10);
    bool g = false;
    while (!(g = switchboard::server::ClientGone()) && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(2));
    }
    gone.set_value(g);
    res.set_content("late", "text/plain");
  });
  server.Start();

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto started_f = started.get_future();
  REQUIRE(Ready(started_f));
  ::close(fd);
  auto gone_f = gone.get_future();
  REQUIRE(Ready(gone_f, seconds(15)));
  CHECK(gone_f.get());
}

TEST_CASE("ClientGone stays false while the client waits for its answer", "[http_server]") {
  std::promise<void> started;
  std::promise<void> check;
  TestServer server;
  server.http.Get("/wait", [&](const httplib::Request&, httplib::Response& res) {
    started.set_value();
    check.get_future().wait_for(seconds(10));
    res.set_content(switchboard::server::ClientGone() ? "gone" : "here", "text/plain");
  });
  server.Start();

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto started_f = started.get_future();
  REQUIRE(Ready(started_f));
  check.set_value();
  const std::string response = ReadUntil(fd, "\r\n\r\nhere", seconds(5));
  CHECK(response.find("here") != std::string::npos);
  ::close(fd);
}

TEST_CASE("ForceEnd makes every ClientGoneCallback report the client gone", "[http_server]") {
  std::promise<void> started;
  std::promise<bool> ended;
  TestServer server;
  server.http.Get("/wait", [&](const httplib::Request&, httplib::Response& res) {
    const std::function<bool()> gone = server.http.ClientGoneCallback();
    started.set_value();
    const auto deadline = SteadyClock::now() + seconds(10);
    bool g = false;
    while (!(g = gone()) && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(2));
    }
    ended.set_value(g);
    res.set_content("ended", "text/plain");
  });
  server.Start();

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "GET /wait HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto started_f = started.get_future();
  REQUIRE(Ready(started_f));
  server.http.ForceEnd();
  auto ended_f = ended.get_future();
  REQUIRE(Ready(ended_f, seconds(15)));
  CHECK(ended_f.get());
  ::close(fd);
}

TEST_CASE("ReadBody reads a body within the limit", "[http_server]") {
  TestServer server;
  AddBodyRoute(server.http, 1000);
  server.Start();

  httplib::Client client("127.0.0.1", server.port);
  auto res = client.Post("/body", std::string(1000, 'x'), "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == "1000");

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd,
                  "POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  const std::string response = ReadUntil(fd, "\r\n\r\n11", seconds(5));
  CHECK(response.rfind("HTTP/1.1 200", 0) == 0);
  ::close(fd);
}

TEST_CASE("ReadBody refuses a declared length over the limit without reading the body",
          "[http_server]") {
  TestServer server;
  AddBodyRoute(server.http, 1000);
  server.Start();

  // A gigabyte is announced and none of it sent: an answer can only come
  // from refusing before reading.
  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n"));
  const std::string response = ReadUntil(fd, "refused", seconds(5));
  CHECK(response.rfind("HTTP/1.1 413", 0) == 0);
  CHECK(response.find("Connection: close") != std::string::npos);
  ::close(fd);
}

TEST_CASE("ReadBody stops a chunked body as soon as it passes the limit", "[http_server]") {
  TestServer server;
  AddBodyRoute(server.http, 1000);
  server.Start();

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"));
  // 2000 bytes in 100-byte chunks, and no terminating chunk: the server must
  // answer without waiting for the end of the body.
  for (int i = 0; i < 20; ++i) {
    REQUIRE(SendAll(fd, "64\r\n" + std::string(100, 'x') + "\r\n"));
  }
  bool closed = false;
  const std::string response = ReadUntil(fd, "", seconds(5), &closed);
  CHECK(response.rfind("HTTP/1.1 413", 0) == 0);
  CHECK(closed);
  ::close(fd);
}

TEST_CASE("A client that trickles its headers is cut off at the header timeout", "[http_server]") {
  HttpServerOptions options;
  options.header_timeout = milliseconds(300);
  TestServer server(options);
  server.http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  server.Start();

  const int fd = Connect(server.port);
  const auto start = SteadyClock::now();
  REQUIRE(SendAll(fd, "GET / HTTP/1.1\r\nHost: t\r\n"));
  bool cut = false;
  // One header byte every 20 ms would keep a per-read timeout happy forever.
  while (!cut && SteadyClock::now() - start < seconds(5)) {
    cut = !SendAll(fd, "X");
    bool closed = false;
    ReadUntil(fd, "\r\n\r\n", milliseconds(20), &closed);
    cut = cut || closed;
  }
  CHECK(cut);
  ::close(fd);
}

TEST_CASE("An idle keep-alive connection is closed after the keep-alive timeout", "[http_server]") {
  HttpServerOptions options;
  options.keep_alive_timeout = milliseconds(200);
  TestServer server(options);
  server.http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  server.Start();

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  REQUIRE(ReadUntil(fd, "\r\n\r\nok", seconds(5)).find("ok") != std::string::npos);
  bool closed = false;
  ReadUntil(fd, "", seconds(5), &closed);
  CHECK(closed);
  ::close(fd);
}

TEST_CASE("Under pressure idle keep-alive connections close at once and a new client is served",
          "[http_server]") {
  HttpServerOptions options;
  options.max_threads = 7;
  options.pressure_connections = 4;
  options.keep_alive_timeout = seconds(300);  // only pressure can close them early
  TestServer server(options);
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  server.http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  server.http.Get("/hold", [&](const httplib::Request&, httplib::Response& res) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    res.set_content("held", "text/plain");
  });
  server.Start();

  // Three idle keep-alive connections: below the mark, they stay open.
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(Connect(server.port));
    REQUIRE(SendAll(idle.back(), "GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
    const std::string answer = ReadUntil(idle.back(), "\r\n\r\nok", seconds(5));
    REQUIRE(answer.find("ok") != std::string::npos);
    CHECK(answer.find("Connection: close") == std::string::npos);
  }
  CHECK_FALSE(server.http.under_pressure());
  // Four held requests bring the open connections past the mark of 4, and
  // with the idle ones they would take all 7 threads.
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(Connect(server.port));
    REQUIRE(SendAll(held.back(), "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n"));
  }
  // The idle ones close (well before the 300 s keep-alive timeout)...
  for (int fd : idle) {
    bool closed = false;
    ReadUntil(fd, "", seconds(5), &closed);
    CHECK(closed);
    ::close(fd);
  }
  // ... so a new client gets a thread, and is told the connection closes
  // after its answer (the four held requests keep the pressure on).
  const int fresh = Connect(server.port);
  REQUIRE(SendAll(fresh, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  bool closed = false;
  const std::string answer = ReadUntil(fresh, "", seconds(5), &closed);
  CHECK(answer.find("\r\n\r\nok") != std::string::npos);
  CHECK(answer.find("Connection: close") != std::string::npos);
  CHECK(closed);
  ::close(fresh);

  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  for (int fd : held) {
    CHECK(ReadUntil(fd, "held", seconds(5)).find("held") != std::string::npos);
    ::close(fd);
  }
  // Below the mark again: connections are kept alive as usual.
  const auto deadline = SteadyClock::now() + seconds(5);
  while (server.http.under_pressure() && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  CHECK_FALSE(server.http.under_pressure());
  const int later = Connect(server.port);
  REQUIRE(SendAll(later, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  const std::string kept = ReadUntil(later, "\r\n\r\nok", seconds(5));
  CHECK(kept.find("ok") != std::string::npos);
  CHECK(kept.find("Connection: close") == std::string::npos);
  ::close(later);
}

TEST_CASE("Each chunk a provider writes reaches the client before the next one", "[http_server]") {
  std::promise<void> first_seen;
  auto first_seen_f = first_seen.get_future().share();
  TestServer server;
  server.http.Get("/stream", [first_seen_f](const httplib::Request&, httplib::Response& res) {
    auto step = std::make_shared<int>(0);
    res.set_chunked_content_provider(
        "text/event-stream", [step, first_seen_f](size_t, httplib::DataSink& sink) {
          if (*step == 0) {
            ++*step;
            return sink.write("data: first\n\n", 13);
          }
          if (*step == 1) {
            ++*step;
            // Only once the client has read the first event.
            const bool seen = first_seen_f.wait_for(seconds(5)) == std::future_status::ready;
            const std::string second = seen ? "data: second\n\n" : "data: buffered\n\n";
            return sink.write(second.data(), second.size());
          }
          sink.done();
          return true;
        });
  });
  server.Start();

  const int fd = Connect(server.port);
  REQUIRE(SendAll(fd, "GET /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n"));
  const std::string head = ReadUntil(fd, "data: first", seconds(3));
  REQUIRE(head.find("data: first") != std::string::npos);
  CHECK(head.find("Content-Encoding") == std::string::npos);
  first_seen.set_value();
  const std::string rest = ReadUntil(fd, "0\r\n\r\n", seconds(5));
  CHECK(rest.find("data: second") != std::string::npos);
  ::close(fd);
}

TEST_CASE("Draining finishes the request in flight and then stops listening", "[http_server]") {
  std::promise<void> started;
  std::promise<void> release;
  auto release_f = release.get_future().share();
  TestServer server;
  server.http.Get("/slow", [&, release_f](const httplib::Request&, httplib::Response& res) {
    started.set_value();
    release_f.wait_for(seconds(10));
    res.set_content("finished", "text/plain");
  });
  server.Start();

  const int busy = Connect(server.port);
  REQUIRE(SendAll(busy, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto started_f = started.get_future();
  REQUIRE(Ready(started_f));

  server.http.StopAccepting();
  server.http.BeginDrain();
  release.set_value();
  bool closed = false;
  const std::string response = ReadUntil(busy, "", seconds(5), &closed);
  CHECK(response.find("finished") != std::string::npos);
  CHECK(response.find("Connection: close") != std::string::npos);
  CHECK(closed);
  ::close(busy);
  CHECK(server.http.WaitForConnections(SteadyClock::now() + seconds(5)));
  server.Join();  // listen_after_bind() returned on its own
  CHECK(server.http.open_connections() == 0);
}
