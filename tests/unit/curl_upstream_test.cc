// The libcurl UpstreamClient against an in-process mock upstream on 127.0.0.1.
// These tests are about a real network edge, so they measure real time; every
// limit is short (well under 2 s) and the waits are bounded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/mock_upstream.h"
#include "switchboard/upstream.h"

namespace switchboard {
namespace {

using std::chrono::milliseconds;
using testing::MockReply;
using testing::MockUpstream;
using SteadyClock = std::chrono::steady_clock;

const CancelFn kNeverCancel = [] { return false; };

std::unique_ptr<UpstreamClient> NewClient(const CurlClientOptions& options = {}) {
  auto client = NewCurlUpstreamClient(options);
  REQUIRE(client.ok());
  return std::move(*client);
}

// A POST with tight limits, so that a broken test fails fast.
UpstreamRequest PostTo(std::string url, std::string body = R"({"model":"m"})") {
  UpstreamRequest request;
  request.url = std::move(url);
  request.headers = {{"Content-Type", "application/json"}};
  request.body = std::move(body);
  request.connect_timeout = milliseconds(1000);
  request.first_byte_timeout = milliseconds(2000);
  request.idle_timeout = milliseconds(2000);
  request.total_timeout = milliseconds(5000);
  return request;
}

// Reads to the end; returns how it ended.
ReadResult ReadAll(UpstreamCall& call, std::string* body) {
  ReadResult result;
  while ((result = call.Read(body, kNeverCancel)) == ReadResult::kData) {
  }
  return result;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += p;
  return out;
}

milliseconds Since(SteadyClock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t);
}

// A loopback port nothing listens on: bound, then closed.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// A loopback listener whose accept queue is full, so that a new connection
// attempt hangs in the handshake (Linux drops the SYN). Never accepts.
class FullListener {
 public:
  FullListener() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(listen(listen_fd_, 0) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    for (int i = 0; i < 3; ++i) {  // fill the queue
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      REQUIRE(fd >= 0);
      (void)!connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      fillers_.push_back(fd);
    }
  }
  ~FullListener() {
    for (const int fd : fillers_) close(fd);
    close(listen_fd_);
  }

  int port() const { return port_; }

 private:
  int listen_fd_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

// Answers one connection with fixed bytes, for responses httplib will not
// produce (interim 1xx heads, folded headers). Waits at most 5 s for it.
class CannedServer {
 public:
  explicit CannedServer(std::string response) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(listen(listen_fd_, 4) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, response = std::move(response)] { Serve(response); });
  }
  ~CannedServer() {
    if (thread_.joinable()) thread_.join();
    close(listen_fd_);
  }

  int port() const { return port_; }

  // The request head as received, once the connection is done.
  std::string Received() {
    if (thread_.joinable()) thread_.join();
    return request_;
  }

 private:
  void Serve(const std::string& response) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (poll(&pfd, 1, 5000) != 1) return;
    const int fd = accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    std::string& request = request_;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos) {
      pollfd cfd{fd, POLLIN, 0};
      if (poll(&cfd, 1, 5000) != 1) break;
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    (void)!send(fd, response.data(), response.size(), MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    close(fd);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::string request_;  // written by thread_ only until it is joined
  std::thread thread_;
};

TEST_CASE("Curl client round-trips a JSON exchange", "[curl_upstream]") {
  MockUpstream mock;
  const std::string answer = testing::ChatCompletionJson("gpt-4o-upstream", "hello");
  MockReply reply = testing::JsonReply(answer);
  reply.headers = {{"X-Upstream-Id", "  abc  "}, {"openai-processing-ms", "12"}};
  mock.Enqueue("/v1/chat/completions", reply);
  auto client = NewClient();

  UpstreamRequest request =
      PostTo(mock.base_url() + "/chat/completions", R"({"model":"gpt-4o-upstream","messages":[]})");
  request.headers.emplace_back("Authorization", "Bearer sk-test");
  auto call = client->Start(request);
  const UpstreamHead head = call->AwaitHead(kNeverCancel);

  REQUIRE(head.status == 200);
  CHECK(head.error == TransportError::kNone);
  REQUIRE(FindHeader(head.headers, "x-upstream-id") != nullptr);
  CHECK(*FindHeader(head.headers, "x-upstream-id") == "abc");  // trimmed
  REQUIRE(FindHeader(head.headers, "Content-Type") != nullptr);
  CHECK(*FindHeader(head.headers, "Content-Type") == "application/json");
  CHECK(head.ttfb > Duration::zero());
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body == answer);
  CHECK(call->error() == TransportError::kNone);

  const auto received = mock.requests();
  REQUIRE(received.size() == 1);
  CHECK(received[0].method == "POST");
  CHECK(received[0].path == "/v1/chat/completions");
  CHECK(received[0].body == R"({"model":"gpt-4o-upstream","messages":[]})");
  REQUIRE(received[0].header("authorization") != nullptr);
  CHECK(*received[0].header("authorization") == "Bearer sk-test");
  CHECK(received[0].header("expect") == nullptr);
  CHECK(received[0].header("accept-encoding") == nullptr);
}

TEST_CASE("Curl client sends other methods and empty bodies as given", "[curl_upstream]") {
  MockUpstream mock;
  mock.SetDefault("/v1/models", testing::JsonReply(R"({"object":"list","data":[]})"));
  mock.SetDefault("/v1/thing", testing::JsonReply("{}"));
  auto client = NewClient();

  UpstreamRequest get = PostTo(mock.base_url() + "/models", "");
  get.method = "GET";
  get.headers.clear();
  auto call = client->Start(get);
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body == R"({"object":"list","data":[]})");

  UpstreamRequest del = PostTo(mock.base_url() + "/thing", "");
  del.method = "DELETE";
  call = client->Start(del);
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);

  const auto received = mock.requests();
  REQUIRE(received.size() == 2);
  CHECK(received[0].method == "GET");
  CHECK(received[0].header("content-type") == nullptr);
  CHECK(received[1].method == "DELETE");
  CHECK(received[1].body.empty());
}

TEST_CASE("Curl client hands over SSE events before the stream ends", "[curl_upstream]") {
  MockUpstream mock;
  const std::vector<std::string> events =
      testing::ChatCompletionChunkEvents("m", {"Hel", "lo"}, 3, 2);
  testing::Notification first_read;
  std::atomic<bool> last_held_until_first_read{false};
  MockReply reply = testing::SseReply(events);
  reply.before_event = [&, last = events.size() - 1](size_t index) {
    if (index == last) last_held_until_first_read = first_read.WaitFor(milliseconds(2000));
  };
  mock.Enqueue("/v1/chat/completions", reply);
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  REQUIRE(head.status == 200);
  REQUIRE(FindHeader(head.headers, "content-type") != nullptr);
  CHECK(*FindHeader(head.headers, "content-type") == "text/event-stream");
  std::string body;
  REQUIRE(call->Read(&body, kNeverCancel) == ReadResult::kData);
  CHECK(body.rfind(events[0], 0) == 0);  // starts with the first event
  CHECK(body.find("[DONE]") == std::string::npos);
  first_read.Notify();
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body == Join(events));
  CHECK(last_held_until_first_read);
}

TEST_CASE("Curl client reuses the connection for sequential requests", "[curl_upstream]") {
  MockUpstream mock;
  mock.SetDefault("/v1/chat/completions", testing::ChatCompletionReply("m", "hi"));
  auto client = NewClient();

  for (int i = 0; i < 3; ++i) {
    auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
    REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
    std::string body;
    REQUIRE(ReadAll(*call, &body) == ReadResult::kEnd);
  }
  CHECK(mock.request_count() == 3);
  CHECK(mock.connection_count() == 1);
}

TEST_CASE("Curl client reuses connections across threads", "[curl_upstream]") {
  MockUpstream mock;
  MockReply slow = testing::ChatCompletionReply("m", "hi");
  slow.delay_before_head = milliseconds(150);
  mock.SetDefault("/v1/chat/completions", slow);
  auto client = NewClient();
  auto exchange = [&] {
    auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
    std::string body;
    return call->AwaitHead(kNeverCancel).status == 200 && ReadAll(*call, &body) == ReadResult::kEnd;
  };

  // One thread after the other: the second takes over the first's connection.
  bool ok_a = false;
  bool ok_b = false;
  std::thread([&] { ok_a = exchange(); }).join();
  std::thread([&] { ok_b = exchange(); }).join();
  CHECK(ok_a);
  CHECK(ok_b);
  CHECK(mock.connection_count() == 1);

  // At the same time: one needs a second connection; then both stay pooled.
  std::vector<char> ok(4, 0);
  std::thread c([&] { ok[0] = exchange(); });
  std::thread d([&] { ok[1] = exchange(); });
  c.join();
  d.join();
  std::thread e([&] { ok[2] = exchange(); });
  std::thread f([&] { ok[3] = exchange(); });
  e.join();
  f.join();
  CHECK(ok == std::vector<char>(4, 1));
  CHECK(mock.request_count() == 6);
  CHECK(mock.connection_count() == 2);
}

TEST_CASE("Curl client replaces a pooled connection the upstream has closed", "[curl_upstream]") {
  MockUpstream mock;  // closes connections idle for a second
  mock.SetDefault("/v1/chat/completions", testing::ChatCompletionReply("m", "hi"));
  auto client = NewClient();
  auto exchange = [&] {
    auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
    std::string body;
    return call->AwaitHead(kNeverCancel).status == 200 && ReadAll(*call, &body) == ReadResult::kEnd;
  };

  REQUIRE(exchange());
  REQUIRE(mock.ConnectionClosed(mock.requests().at(0).remote_port, milliseconds(3000)));
  CHECK(exchange());
  CHECK(mock.request_count() == 2);
  CHECK(mock.connection_count() == 2);
}

TEST_CASE("Curl client keeps no idle connections when max_idle_connections is 0",
          "[curl_upstream]") {
  MockUpstream mock;
  mock.SetDefault("/v1/chat/completions", testing::ChatCompletionReply("m", "hi"));
  CurlClientOptions options;
  options.max_idle_connections = 0;
  auto client = NewClient(options);

  for (int i = 0; i < 2; ++i) {
    auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
    REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
    std::string body;
    REQUIRE(ReadAll(*call, &body) == ReadResult::kEnd);
  }
  CHECK(mock.connection_count() == 2);
}

TEST_CASE("Curl client opens a new connection after an aborted transfer", "[curl_upstream]") {
  MockUpstream mock;
  MockReply stream = testing::SseReply({testing::SseData("1"), testing::SseData("2")});
  stream.delay_between = milliseconds(300);
  mock.Enqueue("/v1/chat/completions", stream);
  mock.Enqueue("/v1/chat/completions", testing::ChatCompletionReply("m", "hi"));
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  REQUIRE(call->Read(&body, kNeverCancel) == ReadResult::kData);
  call.reset();  // mid-body: the connection cannot be reused

  call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  body.clear();
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body == testing::ChatCompletionJson("m", "hi"));
  CHECK(mock.connection_count() == 2);
}

TEST_CASE("Curl client reports a refused connection as a connect error", "[curl_upstream]") {
  auto client = NewClient();
  const auto start = SteadyClock::now();
  auto call = client->Start(PostTo("http://127.0.0.1:" + std::to_string(ClosedPort()) + "/v1/x"));
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  CHECK(Since(start) < milliseconds(1000));
  CHECK(head.status == 0);
  CHECK(head.error == TransportError::kConnect);
  CHECK_FALSE(head.error_message.empty());
  std::string body;
  CHECK(call->Read(&body, kNeverCancel) == ReadResult::kError);
  CHECK(call->error() == TransportError::kConnect);
  CHECK(body.empty());
}

TEST_CASE("Curl client reports a connect timeout as a connect error", "[curl_upstream]") {
  FullListener listener;
  auto client = NewClient();

  UpstreamRequest request =
      PostTo("http://127.0.0.1:" + std::to_string(listener.port()) + "/v1/chat/completions");
  request.connect_timeout = milliseconds(300);
  const auto start = SteadyClock::now();
  auto call = client->Start(request);
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  const milliseconds took = Since(start);
  CHECK(head.status == 0);
  CHECK(head.error == TransportError::kConnect);
  CHECK(head.error_message.find("connect timeout") == 0);
  CHECK(took >= milliseconds(250));
  CHECK(took < milliseconds(1000));
}

TEST_CASE("Curl client times out waiting for the response head", "[curl_upstream]") {
  MockUpstream mock;
  MockReply hang;
  hang.hang = true;
  mock.Enqueue("/v1/chat/completions", hang);
  auto client = NewClient();

  UpstreamRequest request = PostTo(mock.base_url() + "/chat/completions");
  request.first_byte_timeout = milliseconds(300);
  const auto start = SteadyClock::now();
  auto call = client->Start(request);
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  const milliseconds took = Since(start);
  CHECK(head.status == 0);
  CHECK(head.error == TransportError::kTimeout);
  CHECK(head.error_message.find("first-byte") != std::string::npos);
  CHECK(took >= milliseconds(250));
  CHECK(took < milliseconds(1000));
}

TEST_CASE("Curl client times out a stream that goes idle", "[curl_upstream]") {
  MockUpstream mock;
  MockReply stream = testing::SseReply({testing::SseData("1"), testing::SseData("2")});
  stream.delay_between = milliseconds(1500);
  mock.Enqueue("/v1/chat/completions", stream);
  auto client = NewClient();

  UpstreamRequest request = PostTo(mock.base_url() + "/chat/completions");
  request.idle_timeout = milliseconds(300);
  auto call = client->Start(request);
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  REQUIRE(call->Read(&body, kNeverCancel) == ReadResult::kData);
  CHECK(body == testing::SseData("1"));
  const auto start = SteadyClock::now();
  CHECK(call->Read(&body, kNeverCancel) == ReadResult::kError);
  const milliseconds took = Since(start);
  CHECK(call->error() == TransportError::kTimeout);
  CHECK(call->error_message().find("idle") != std::string::npos);
  CHECK(took >= milliseconds(250));
  CHECK(took < milliseconds(1000));
}

TEST_CASE("Curl client enforces the total timeout on a trickling stream", "[curl_upstream]") {
  MockUpstream mock;
  std::vector<std::string> events;
  for (int i = 0; i < 20; ++i) events.push_back(testing::SseData(std::to_string(i)));
  MockReply stream = testing::SseReply(events);
  stream.delay_between = milliseconds(100);
  mock.Enqueue("/v1/chat/completions", stream);
  auto client = NewClient();

  UpstreamRequest request = PostTo(mock.base_url() + "/chat/completions");
  request.total_timeout = milliseconds(500);
  const auto start = SteadyClock::now();
  auto call = client->Start(request);
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kError);
  CHECK(call->error() == TransportError::kTimeout);
  CHECK(call->error_message().find("total") != std::string::npos);
  CHECK(Since(start) < milliseconds(1000));
  CHECK_FALSE(body.empty());
}

TEST_CASE("Curl client reports a connection dropped mid-stream after the events it got",
          "[curl_upstream]") {
  MockUpstream mock;
  const std::vector<std::string> events = {testing::SseData("1"), testing::SseData("2"),
                                           testing::SseData("3"), testing::SseData("4")};
  MockReply stream = testing::SseReply(events);
  stream.reset_after_events = 2;
  mock.Enqueue("/v1/chat/completions", stream);
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kError);
  CHECK(body == events[0] + events[1]);
  CHECK((call->error() == TransportError::kReset || call->error() == TransportError::kProtocol));
  CHECK_FALSE(call->error_message().empty());
}

TEST_CASE("Curl client stops waiting for the head when cancelled and closes the connection",
          "[curl_upstream]") {
  MockUpstream mock;
  MockReply hang;
  hang.hang = true;
  mock.Enqueue("/v1/chat/completions", hang);
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  const auto cancel_at = SteadyClock::now() + milliseconds(200);
  const UpstreamHead head =
      call->AwaitHead([cancel_at] { return SteadyClock::now() >= cancel_at; });
  CHECK(Since(cancel_at) < milliseconds(150));
  CHECK(head.status == 0);
  CHECK(head.error == TransportError::kCancelled);

  REQUIRE(mock.WaitForRequests(1, milliseconds(1000)));
  CHECK(mock.ConnectionClosed(mock.requests()[0].remote_port, milliseconds(1000)));
}

TEST_CASE("Curl client stops reading the body when cancelled", "[curl_upstream]") {
  MockUpstream mock;
  MockReply stream = testing::SseReply({testing::SseData("1"), testing::SseData("2")});
  stream.delay_between = milliseconds(1500);
  mock.Enqueue("/v1/chat/completions", stream);
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  REQUIRE(call->Read(&body, kNeverCancel) == ReadResult::kData);
  const auto cancel_at = SteadyClock::now() + milliseconds(100);
  CHECK(call->Read(&body, [cancel_at] { return SteadyClock::now() >= cancel_at; }) ==
        ReadResult::kError);
  CHECK(Since(cancel_at) < milliseconds(150));
  CHECK(call->error() == TransportError::kCancelled);
  CHECK(mock.ConnectionClosed(mock.requests().at(0).remote_port, milliseconds(1000)));
}

TEST_CASE("Curl client returns redirects as they are, without following", "[curl_upstream]") {
  MockUpstream mock;
  MockReply redirect = testing::JsonReply("", 302);
  redirect.headers = {{"Location", mock.url("/v1/elsewhere")}};
  mock.Enqueue("/v1/chat/completions", redirect);
  mock.SetDefault("/v1/elsewhere", testing::ChatCompletionReply("m", "followed"));
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  CHECK(head.status == 302);
  REQUIRE(FindHeader(head.headers, "location") != nullptr);
  CHECK(*FindHeader(head.headers, "location") == mock.url("/v1/elsewhere"));
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(mock.request_count() == 1);
}

TEST_CASE("Curl client refuses URLs that are not http or https", "[curl_upstream]") {
  MockUpstream mock;
  auto client = NewClient();
  const std::string authority = "127.0.0.1:" + std::to_string(mock.port());
  const std::vector<std::string> urls = {"file:///etc/passwd",
                                         "gopher://" + authority + "/_GET",
                                         "ftp://" + authority + "/x",
                                         "dict://" + authority + "/d:x",
                                         "not a url",
                                         "/v1/chat/completions"};
  for (const std::string& url : urls) {
    CAPTURE(url);
    auto call = client->Start(PostTo(url));
    const UpstreamHead head = call->AwaitHead(kNeverCancel);
    CHECK(head.status == 0);
    CHECK((head.error == TransportError::kProtocol || head.error == TransportError::kConnect));
    std::string body;
    CHECK(call->Read(&body, kNeverCancel) == ReadResult::kError);
    CHECK(body.empty());
  }
  CHECK(mock.request_count() == 0);
}

TEST_CASE("Curl client refuses header line breaks without quoting the value", "[curl_upstream]") {
  MockUpstream mock;
  auto client = NewClient();

  UpstreamRequest request = PostTo(mock.base_url() + "/chat/completions");
  request.headers.emplace_back("Authorization", "Bearer sk-secret\r\nX-Injected: 1");
  auto call = client->Start(request);
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  CHECK(head.status == 0);
  CHECK(head.error == TransportError::kProtocol);
  CHECK(head.error_message.find("sk-secret") == std::string::npos);

  request.headers = {{"Bad Name: sk-secret", "x"}};
  call = client->Start(request);
  const UpstreamHead bad_name = call->AwaitHead(kNeverCancel);
  CHECK(bad_name.error == TransportError::kProtocol);
  CHECK(bad_name.error_message.find("sk-secret") == std::string::npos);
  CHECK(mock.request_count() == 0);
}

TEST_CASE("Curl client returns a 429 with its Retry-After header", "[curl_upstream]") {
  MockUpstream mock;
  mock.Enqueue("/v1/chat/completions", testing::RateLimitedReply(7));
  auto client = NewClient();

  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  CHECK(head.status == 429);
  CHECK(head.error == TransportError::kNone);
  REQUIRE(FindHeader(head.headers, "retry-after") != nullptr);
  CHECK(*FindHeader(head.headers, "retry-after") == "7");
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body.find("rate_limit_exceeded") != std::string::npos);
}

TEST_CASE("Curl client skips interim 1xx heads and unfolds header lines", "[curl_upstream]") {
  CannedServer server(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
      "HTTP/1.1 201 Created\r\n"
      "X-Folded: first\r\n"
      "   second\r\n"
      "X-Spaced:   padded value \t\r\n"
      "Content-Length: 5\r\n"
      "Connection: close\r\n"
      "\r\n"
      "hello");
  auto client = NewClient();

  UpstreamRequest request = PostTo("http://127.0.0.1:" + std::to_string(server.port()) + "/v1/x");
  request.headers.emplace_back("X-Empty", "");
  auto call = client->Start(request);
  const UpstreamHead head = call->AwaitHead(kNeverCancel);
  REQUIRE(head.status == 201);
  CHECK(FindHeader(head.headers, "link") == nullptr);
  REQUIRE(FindHeader(head.headers, "x-folded") != nullptr);
  CHECK(*FindHeader(head.headers, "x-folded") == "first second");
  REQUIRE(FindHeader(head.headers, "x-spaced") != nullptr);
  CHECK(*FindHeader(head.headers, "x-spaced") == "padded value");
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body == "hello");
  // httplib drops empty header values, so this one is checked here.
  const std::string sent = server.Received();
  CHECK(sent.find("\r\nX-Empty:\r\n") != std::string::npos);
  CHECK(sent.find("Expect:") == std::string::npos);
}

TEST_CASE("Curl client delivers a large body intact while buffering a bounded amount",
          "[curl_upstream]") {
  MockUpstream mock;
  std::string big(5 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
  mock.Enqueue("/v1/files", testing::JsonReply(big));
  CurlClientOptions options;
  options.max_buffer_bytes = 256 << 10;
  auto client = NewClient(options);

  auto call = client->Start(PostTo(mock.base_url() + "/files"));
  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  size_t largest_read = 0;
  ReadResult result;
  for (;;) {
    std::string chunk;
    result = call->Read(&chunk, kNeverCancel);
    if (result != ReadResult::kData) break;
    largest_read = std::max(largest_read, chunk.size());
    body += chunk;
  }
  CHECK(result == ReadResult::kEnd);
  CHECK(body.size() == big.size());
  CHECK(body == big);
  CHECK(largest_read <= options.max_buffer_bytes);
}

TEST_CASE("Curl client calls may outlive the client", "[curl_upstream]") {
  MockUpstream mock;
  mock.Enqueue("/v1/chat/completions", testing::ChatCompletionReply("m", "late"));
  auto client = NewClient();
  auto call = client->Start(PostTo(mock.base_url() + "/chat/completions"));
  client.reset();

  REQUIRE(call->AwaitHead(kNeverCancel).status == 200);
  std::string body;
  CHECK(ReadAll(*call, &body) == ReadResult::kEnd);
  CHECK(body == testing::ChatCompletionJson("m", "late"));
}

}  // namespace
}  // namespace switchboard
