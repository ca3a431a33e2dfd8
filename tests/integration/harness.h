// Shared pieces of the end-to-end tests: the real `switchboard serve` binary
// (tests/support/server_process.h) against in-process MockUpstreams
// (tests/support/mock_upstream.h), spoken to over loopback with
// httplib::Client, a streaming client that timestamps every chunk, and a raw
// socket client for what httplib cannot do (hang up mid-response, send an
// oversized body and stop when the answer comes).
//
// Include it from exactly one .cc per test executable: it registers a Catch
// listener that prints the server's output when a test case failed.
#ifndef SWITCHBOARD_TESTS_INTEGRATION_HARNESS_H_
#define SWITCHBOARD_TESTS_INTEGRATION_HARNESS_H_

#define CATCH_CONFIG_EXTERNAL_INTERFACES  // Catch::TestEventListenerBase
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/mock_upstream.h"
#include "support/server_process.h"

namespace switchboard::testing {

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;
using std::chrono::milliseconds;
using std::chrono::seconds;

inline long long MillisBetween(SteadyTime from, SteadyTime to) {
  return std::chrono::duration_cast<milliseconds>(to - from).count();
}

// Whether an assertion of the running test case failed (set by the listener).
inline bool& CurrentTestFailed() {
  static bool failed = false;
  return failed;
}

class FailureListener : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(Catch::TestCaseInfo const& info) override {
    CurrentTestFailed() = false;
    TestEventListenerBase::testCaseStarting(info);
  }
  bool assertionEnded(Catch::AssertionStats const& stats) override {
    if (!stats.assertionResult.isOk()) CurrentTestFailed() = true;
    return true;
  }
};
CATCH_REGISTER_LISTENER(FailureListener)

// ServerProcess for a test case: REQUIREs that it started; when the test
// case failed, prints the server's whole output on the way out; and checks
// that SIGTERM makes it exit 0 (a sanitizer report or a crash in the server
// fails the test that caused it).
class TestServer {
 public:
  explicit TestServer(ServerProcessOptions options) : process_(std::move(options)) {
    INFO(process_.error());
    REQUIRE(process_.ok());
  }
  explicit TestServer(std::vector<BackendSpec> backends)
      : TestServer(ServerProcessOptions{.backends = std::move(backends)}) {}

  ~TestServer() {
    const int status = process_.Stop();
    const bool unwinding = std::uncaught_exceptions() > 0;
    if (status != 0 && !unwinding) {
      INFO("switchboard output:\n" << process_.output());
      CHECK(status == 0);  // exit status after SIGTERM
    } else if (CurrentTestFailed() || status != 0) {
      std::fprintf(stderr, "---- switchboard (pid %d) exited with %d; its output ----\n%s\n----\n",
                   static_cast<int>(process_.pid()), status, process_.output().c_str());
    }
  }

  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  ServerProcess& process() { return process_; }
  int port() const { return process_.port(); }
  std::string output() const { return process_.output(); }

  // A keep-alive client with generous but bounded timeouts.
  httplib::Client Client() const {
    httplib::Client client("127.0.0.1", process_.port());
    client.set_keep_alive(true);
    client.set_connection_timeout(10, 0);
    client.set_read_timeout(60, 0);
    client.set_write_timeout(60, 0);
    return client;
  }

 private:
  ServerProcess process_;
};

// Notifies `n` when the scope ends: declare it after a MockUpstream whose
// scripted handler waits on `n`, so the handler is released before the mock
// stops (the mock's Stop() joins its handlers).
class NotifyOnExit {
 public:
  explicit NotifyOnExit(Notification& n) : n_(n) {}
  ~NotifyOnExit() { n_.Notify(); }
  NotifyOnExit(const NotifyOnExit&) = delete;
  NotifyOnExit& operator=(const NotifyOnExit&) = delete;

 private:
  Notification& n_;
};

// A fresh temporary directory, removed with everything in it when dropped.
class TempDir {
 public:
  TempDir() {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string templ = (base / "switchboard-it-XXXXXX").string();
    if (::mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- Request bodies ----

inline std::string ChatBody(std::string_view model, std::string_view content = "hi",
                            bool stream = false) {
  return std::string(R"({"model":)") + JsonString(model) +
         (stream ? R"(,"stream":true,"stream_options":{"include_usage":true})" : "") +
         R"(,"temperature":0.25,"messages":[{"role":"user","content":)" + JsonString(content) +
         "}]}";
}

inline std::string StreamChatBody(std::string_view model, std::string_view content = "hi") {
  return ChatBody(model, content, /*stream=*/true);
}

// ---- JSON checks ----

// "" when `body` is OpenAI's error shape
// {"error":{"message":"...","type":"...","param":null|"...","code":"..."}} with
// a non-empty message and, when given, that code; else what is wrong.
inline std::string OpenAIErrorProblem(const std::string& body, std::string_view code = "") {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return "not a JSON object: " + body;
  auto e = doc.FindMember("error");
  if (e == doc.MemberEnd() || !e->value.IsObject()) return "no \"error\" object: " + body;
  const auto& err = e->value;
  auto message = err.FindMember("message");
  if (message == err.MemberEnd() || !message->value.IsString() ||
      message->value.GetStringLength() == 0) {
    return "error.message missing or empty: " + body;
  }
  auto type = err.FindMember("type");
  if (type == err.MemberEnd() || !type->value.IsString()) return "error.type missing: " + body;
  auto param = err.FindMember("param");
  if (param == err.MemberEnd() || !(param->value.IsNull() || param->value.IsString())) {
    return "error.param missing (null or a string): " + body;
  }
  auto c = err.FindMember("code");
  if (c == err.MemberEnd() || !(c->value.IsString() || c->value.IsNull())) {
    return "error.code missing: " + body;
  }
  if (!code.empty() && (!c->value.IsString() || c->value.GetString() != code)) {
    return "error.code is not \"" + std::string(code) + "\": " + body;
  }
  return "";
}

// error.message of an OpenAI error body ("" when there is none).
inline std::string OpenAIErrorMessage(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return "";
  auto e = doc.FindMember("error");
  if (e == doc.MemberEnd() || !e->value.IsObject()) return "";
  auto m = e->value.FindMember("message");
  if (m == e->value.MemberEnd() || !m->value.IsString()) return "";
  return m->value.GetString();
}

// The string `field` of a JSON object body ("" when absent).
inline std::string JsonStringField(const std::string& body, const char* field) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return "";
  auto m = doc.FindMember(field);
  if (m == doc.MemberEnd() || !m->value.IsString()) return "";
  return m->value.GetString();
}

// Whether `body` is a JSON object that equals `expected` apart from member
// order (both parsed).
inline bool SameJson(const std::string& body, const std::string& expected) {
  rapidjson::Document a, b;
  a.Parse(body.c_str(), body.size());
  b.Parse(expected.c_str(), expected.size());
  return !a.HasParseError() && !b.HasParseError() && a == b;
}

// ---- SSE ----

// The events of an SSE body, each without its terminating blank line.
inline std::vector<std::string> SseEvents(std::string_view body) {
  std::vector<std::string> events;
  size_t start = 0;
  for (;;) {
    const size_t end = body.find("\n\n", start);
    if (end == std::string_view::npos) break;
    events.emplace_back(body.substr(start, end - start));
    start = end + 2;
  }
  return events;
}

inline bool IsErrorEvent(std::string_view event) { return event.rfind("event: error\n", 0) == 0; }

inline bool IsDoneEvent(std::string_view event) { return event == "data: [DONE]"; }

// The data: payload of a one-line event ("" when none).
inline std::string EventData(std::string_view event) {
  const size_t at = event.find("data: ");
  if (at == std::string_view::npos) return "";
  const size_t end = event.find('\n', at);
  return std::string(event.substr(at + 6, end == std::string_view::npos ? end : end - at - 6));
}

// ---- A streaming client ----

struct Chunk {
  SteadyTime at;
  std::string data;
};

struct StreamedResponse {
  bool ok = false;  // a complete response was read
  std::string error;
  int status = 0;
  httplib::Headers headers;
  std::string body;
  std::vector<Chunk> chunks;  // as they arrived

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  std::vector<std::string> events() const { return SseEvents(body); }
  // When the event `index` (0-based) was complete at the client; the end of
  // time when it never was.
  SteadyTime EventArrival(size_t index) const {
    std::string seen;
    for (const Chunk& c : chunks) {
      seen += c.data;
      if (SseEvents(seen).size() > index) return c.at;
    }
    return SteadyTime::max();
  }
};

// POSTs `body` and reads the answer chunk by chunk, timestamping each.
// `on_chunk(body_so_far)` runs after each chunk on this thread; returning
// false hangs up.
inline StreamedResponse PostStreaming(
    int port, const std::string& path, const std::string& body,
    const httplib::Headers& headers = {},
    const std::function<bool(const std::string&)>& on_chunk = {}) {
  StreamedResponse out;
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(60, 0);
  client.set_write_timeout(60, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = headers;
  req.set_header("Content-Type", "application/json");
  req.body = body;
  req.response_handler = [&out](const httplib::Response& res) {
    out.status = res.status;
    out.headers = res.headers;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    out.chunks.push_back({SteadyClock::now(), std::string(data, n)});
    out.body.append(data, n);
    return on_chunk ? on_chunk(out.body) : true;
  };
  httplib::Result result = client.send(req);
  if (result) {
    out.ok = true;
    if (out.status == 0) out.status = result->status;
    if (out.headers.empty()) out.headers = result->headers;
    if (out.body.empty()) out.body = result->body;
  } else {
    out.error = httplib::to_string(result.error());
  }
  return out;
}

// ---- A raw client ----

// One TCP connection to 127.0.0.1:port with bounded reads and writes.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      Close();
    }
  }
  ~RawConnection() { Close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }

  // Writes all of `data` within `timeout`.
  bool Send(std::string_view data, milliseconds timeout = seconds(30)) {
    const auto deadline = SteadyClock::now() + timeout;
    while (!data.empty() && fd_ >= 0) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, PollMs(deadline)) <= 0) return false;
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return data.empty();
  }

  // Reads until `done(received())`, EOF or `timeout`; returns done's verdict.
  bool ReadUntil(const std::function<bool(const std::string&)>& done,
                 milliseconds timeout = seconds(30)) {
    const auto deadline = SteadyClock::now() + timeout;
    while (!done(received_)) {
      if (fd_ < 0 || eof_ || !ReadSome(PollMs(deadline))) return done(received_);
      if (SteadyClock::now() >= deadline) return done(received_);
    }
    return true;
  }

  // Sends `head` and then up to `body_bytes` of body (generated; chunked
  // framing when `chunked`), stopping as soon as the server answers, and
  // reads the answer. True when a whole response (per Content-Length, or up
  // to EOF) was read within `timeout`.
  bool SendBodyUntilAnswered(const std::string& head, size_t body_bytes, bool chunked,
                             milliseconds timeout = seconds(60)) {
    const auto deadline = SteadyClock::now() + timeout;
    if (!Send(head, timeout)) return false;
    std::string piece(64 * 1024, 'x');
    const std::string prefix = R"({"model":"gpt-4o","messages":[{"role":"user","content":")";
    piece.replace(0, prefix.size(), prefix);
    size_t sent = 0;
    bool writing = true;
    std::string pending;
    while (SteadyClock::now() < deadline) {
      if (ResponseComplete(received_) || eof_) break;
      if (writing && pending.empty()) {
        if (sent < body_bytes) {
          const size_t n = std::min(piece.size(), body_bytes - sent);
          if (chunked) {
            char size_line[32];
            std::snprintf(size_line, sizeof(size_line), "%zx\r\n", n);
            pending = size_line + piece.substr(0, n) + "\r\n";
          } else {
            pending = piece.substr(0, n);
          }
          sent += n;
          if (sent == body_bytes && chunked) pending += "0\r\n\r\n";
        } else {
          writing = false;
        }
      }
      pollfd p{fd_, static_cast<short>(POLLIN | (writing ? POLLOUT : 0)), 0};
      if (::poll(&p, 1, 50) < 0 && errno != EINTR) break;
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!ReadSome(0) && !eof_) break;
        writing = false;  // answered (or gone): stop sending, read the rest
        continue;
      }
      if (writing && (p.revents & POLLOUT)) {
        const ssize_t n = ::send(fd_, pending.data(), pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          pending.erase(0, static_cast<size_t>(n));
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          writing = false;  // the server closed its side; its answer may be waiting
        }
      }
    }
    ReadUntil([](const std::string& r) { return ResponseComplete(r); },
              std::chrono::duration_cast<milliseconds>(
                  std::max(deadline - SteadyClock::now(), SteadyClock::duration::zero())));
    body_bytes_sent_ = sent;
    return ResponseComplete(received_) || (eof_ && ParseStatus(received_) > 0);
  }
  size_t body_bytes_sent() const { return body_bytes_sent_; }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // The status code of an HTTP response in `raw` (0 when there is none yet).
  static int ParseStatus(const std::string& raw) {
    if (raw.rfind("HTTP/1.", 0) != 0 || raw.size() < 12) return 0;
    return std::atoi(raw.c_str() + 9);
  }
  // The lowercase-named headers of the response in `raw`.
  static std::map<std::string, std::string> ParseHeaders(const std::string& raw) {
    std::map<std::string, std::string> headers;
    const size_t end = raw.find("\r\n\r\n");
    size_t at = raw.find("\r\n");
    while (at != std::string::npos && at < end) {
      const size_t next = raw.find("\r\n", at + 2);
      const std::string line = raw.substr(at + 2, next - at - 2);
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        size_t v = colon + 1;
        while (v < line.size() && line[v] == ' ') ++v;
        headers[name] = line.substr(v);
      }
      at = next;
    }
    return headers;
  }
  // The body after the head (raw bytes: chunk framing is not removed).
  static std::string ParseBody(const std::string& raw) {
    const size_t end = raw.find("\r\n\r\n");
    return end == std::string::npos ? "" : raw.substr(end + 4);
  }
  // A response with Content-Length whose body is all there.
  static bool ResponseComplete(const std::string& raw) {
    const size_t end = raw.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    const auto headers = ParseHeaders(raw);
    auto cl = headers.find("content-length");
    if (cl == headers.end()) return false;
    return raw.size() - end - 4 >= static_cast<size_t>(std::atoll(cl->second.c_str()));
  }

 private:
  static int PollMs(SteadyTime deadline) {
    return static_cast<int>(std::max<long long>(0, MillisBetween(SteadyClock::now(), deadline)));
  }

  // One read, waiting up to `wait_ms`; false on timeout, error or EOF.
  bool ReadSome(int wait_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return false;
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      received_.append(buf, static_cast<size_t>(n));
      return true;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) eof_ = true;
    return false;
  }

  int fd_ = -1;
  bool eof_ = false;
  std::string received_;
  size_t body_bytes_sent_ = 0;
};

// The request head of a POST with a JSON body.
inline std::string RawPostHead(const std::string& path, const std::string& extra_headers,
                               const std::string& framing) {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
         extra_headers + framing + "\r\n";
}

// A whole POST request with `body`.
inline std::string RawPost(const std::string& path, const std::string& body) {
  return RawPostHead(path, "", "Content-Length: " + std::to_string(body.size()) + "\r\n") + body;
}

// ---- Ports nobody answers on ----

// A TCP port on 127.0.0.1 that refuses connections for as long as this
// object lives: bound, never listening.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~RefusingPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Whether this build runs under ASan or TSan (the server binary is built
// the same way): memory bounds do not hold there, timings are slower.
inline bool Sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  return false;
#endif
}

// ---- Backends ----

inline BackendSpec Backend(std::string name, std::string base_url, std::string pool,
                           int timeout_seconds = 30) {
  BackendSpec b;
  b.name = std::move(name);
  b.api_base_url = std::move(base_url);
  b.api_key = "sk-" + b.name + "-key";
  b.pool = std::move(pool);
  b.timeout_seconds = timeout_seconds;
  return b;
}

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_INTEGRATION_HARNESS_H_
