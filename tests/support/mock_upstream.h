// A programmable fake upstream: an HTTP server on 127.0.0.1 (ephemeral port)
// that records what it receives and answers each path as the test scripts it,
// including OpenAI-style JSON and SSE streams, slow heads, stalls and resets.
//
//   switchboard::testing::MockUpstream mock;                 // listening on return
//   mock.Enqueue("/v1/chat/completions", ChatCompletionReply("gpt-4o", "hi"));
//   backend.api_base_url = mock.base_url();                  // "http://127.0.0.1:PORT/v1"
//   ... run the request ...
//   CHECK(mock.requests().at(0).body == ...);
//
// Link: cpp-httplib (pkg-config `cpp-httplib`). ConnectionClosed()
// reads /proc/net/tcp, so it is Linux-only.
#ifndef SWITCHBOARD_TESTS_SUPPORT_MOCK_UPSTREAM_H_
#define SWITCHBOARD_TESTS_SUPPORT_MOCK_UPSTREAM_H_

#include <httplib.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "switchboard/cooldown_manager.h"  // Headers, FindHeader

namespace switchboard::testing {

// A one-shot event between a test thread and a server thread. Thread-safe.
class Notification {
 public:
  void Notify() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      notified_ = true;
    }
    cv_.notify_all();
  }
  bool HasBeenNotified() const {
    std::lock_guard<std::mutex> lock(mu_);
    return notified_;
  }
  // True once notified; false when `timeout` passed first.
  bool WaitFor(std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return notified_; });
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool notified_ = false;  // guarded by mu_
};

// How the mock answers one request.
struct MockReply {
  int status = 200;
  // Sent as given. A Content-Type here replaces the default
  // (application/json for `body`, text/event-stream for `sse_events`).
  Headers headers;
  std::string body;  // unused when the reply streams
  // When non-empty, the response is chunked and each element is written (and
  // flushed) as one chunk, verbatim: give complete events, see SseData().
  std::vector<std::string> sse_events;
  std::chrono::milliseconds delay_before_head{0};
  std::chrono::milliseconds delay_between{0};  // between two events
  // Never answer; the handler returns only when the mock stops.
  bool hang = false;
  // >= 0: after that many events, drop the connection (no final chunk), which
  // the client sees as a body cut short. Makes the reply stream even with no
  // events.
  int reset_after_events = -1;
  // Runs on the server thread right before event `index` is written, e.g. to
  // hold the stream until the test has seen the earlier events.
  std::function<void(size_t index)> before_event;
};

// A request as the mock received it.
struct RecordedRequest {
  std::string method;
  std::string path;  // without the query string
  Headers headers;   // names as sent
  std::string body;
  int remote_port = 0;  // the client's port: one per connection

  // The case-insensitive value of header `name`, or nullptr.
  const std::string* header(std::string_view name) const { return FindHeader(headers, name); }
};

// The server. Requests to a path are answered by, in order: the replies
// queued for it (each used once), its handler, its default reply; anything
// else gets a 404 in OpenAI's error shape. Thread-safe.
class MockUpstream {
 public:
  using Handler = std::function<MockReply(const RecordedRequest&)>;

  // Listens before it returns. Hanging handlers and kept-alive connections
  // each hold one of `threads` workers; more connections than that wait.
  explicit MockUpstream(size_t threads = 32) {
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_tcp_nodelay(true);
    server_.set_keep_alive_max_count(100000);
    // httplib's stop() waits out the keep-alive timeout of idle connections.
    server_.set_keep_alive_timeout(1);
    const auto handler = [this](const httplib::Request& req, httplib::Response& res) {
      Handle(req, res);
    };
    server_.Get(".*", handler);
    server_.Post(".*", handler);
    server_.Put(".*", handler);
    server_.Patch(".*", handler);
    server_.Delete(".*", handler);
    server_.Options(".*", handler);
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("MockUpstream: cannot bind 127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() is a no-op until the server runs; make sure it will work.
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  ~MockUpstream() { Stop(); }

  MockUpstream(const MockUpstream&) = delete;
  MockUpstream& operator=(const MockUpstream&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:PORT/v1"
  std::string base_url() const { return origin() + "/v1"; }
  // "http://127.0.0.1:PORT" + path
  std::string url(std::string_view path) const { return origin() + std::string(path); }

  void Enqueue(const std::string& path, MockReply reply) {
    std::lock_guard<std::mutex> lock(mu_);
    queued_[path].push_back(std::move(reply));
  }
  void SetDefault(const std::string& path, MockReply reply) {
    std::lock_guard<std::mutex> lock(mu_);
    defaults_[path] = std::move(reply);
  }
  // `handler` runs on server threads, possibly several at once.
  void SetHandler(const std::string& path, Handler handler) {
    std::lock_guard<std::mutex> lock(mu_);
    handlers_[path] = std::move(handler);
  }

  std::vector<RecordedRequest> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  size_t request_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }
  // Distinct client connections that carried a request.
  size_t connection_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return remote_ports_.size();
  }

  // True once at least `n` requests have arrived (their handlers started).
  bool WaitForRequests(size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
  }

  // True once the connection from the client's `remote_port` is no longer
  // established on the mock's side: the client closed it (even while a handler
  // still holds it, as with `hang`), or the mock did. Linux only.
  bool ConnectionClosed(int remote_port, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (!ServerSocketEstablished(remote_port)) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // Wakes hanging and delayed handlers, stops listening and joins. Idempotent.
  void Stop() {
    std::call_once(stop_once_, [this] {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      server_.stop();
      thread_.join();
    });
  }

 private:
  std::string origin() const { return "http://127.0.0.1:" + std::to_string(port_); }

  void Handle(const httplib::Request& req, httplib::Response& res) {
    RecordedRequest record;
    record.method = req.method;
    record.path = req.path;
    for (const auto& [name, value] : req.headers) {
      // httplib adds these for its own bookkeeping.
      if (name == "REMOTE_ADDR" || name == "REMOTE_PORT" || name == "LOCAL_ADDR" ||
          name == "LOCAL_PORT") {
        continue;
      }
      record.headers.emplace_back(name, value);
    }
    record.body = req.body;
    record.remote_port = req.remote_port;
    MockReply reply = Record(record);

    if (reply.hang) {
      WaitUntilStopping(std::chrono::hours(24));
      res.status = 503;
      return;
    }
    if (reply.delay_before_head.count() > 0 && WaitUntilStopping(reply.delay_before_head)) {
      res.status = 503;
      return;
    }
    res.status = reply.status;
    std::string content_type;
    for (const auto& [name, value] : reply.headers) {
      if (EqualsIgnoreCase(name, "content-type")) {
        content_type = value;
      } else {
        res.set_header(name, value);
      }
    }
    if (!reply.sse_events.empty() || reply.reset_after_events >= 0) {
      auto shared = std::make_shared<MockReply>(std::move(reply));
      res.set_chunked_content_provider(
          content_type.empty() ? "text/event-stream" : content_type,
          [this, shared](size_t, httplib::DataSink& sink) { return Stream(*shared, sink); });
      return;
    }
    if (!reply.body.empty() || !content_type.empty()) {
      res.set_content(reply.body, content_type.empty() ? "application/json" : content_type);
    }
  }

  // Returning false drops the connection without the final chunk.
  bool Stream(const MockReply& reply, httplib::DataSink& sink) {
    const auto& events = reply.sse_events;
    for (size_t i = 0; i < events.size(); ++i) {
      if (reply.reset_after_events >= 0 && i == static_cast<size_t>(reply.reset_after_events)) {
        return false;
      }
      if (i > 0 && reply.delay_between.count() > 0 && WaitUntilStopping(reply.delay_between)) {
        return false;
      }
      if (reply.before_event) reply.before_event(i);
      if (!sink.write(events[i].data(), events[i].size())) return false;
    }
    if (reply.reset_after_events >= 0) return false;
    sink.done();
    return true;
  }

  MockReply Record(const RecordedRequest& record) {
    Handler handler;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(record);
      remote_ports_.insert(record.remote_port);
      cv_.notify_all();
      if (auto q = queued_.find(record.path); q != queued_.end() && !q->second.empty()) {
        MockReply reply = std::move(q->second.front());
        q->second.pop_front();
        return reply;
      }
      if (auto h = handlers_.find(record.path); h != handlers_.end()) {
        handler = h->second;
      } else if (auto d = defaults_.find(record.path); d != defaults_.end()) {
        return d->second;
      }
    }
    if (handler) return handler(record);
    MockReply reply;
    reply.status = 404;
    reply.body = R"({"error":{"message":"mock: nothing scripted for )" + record.path +
                 R"(","type":"invalid_request_error","param":null,"code":"not_found"}})";
    return reply;
  }

  // Waits up to `d`; true if the mock is stopping.
  bool WaitUntilStopping(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, d, [this] { return stopping_; });
  }

  // Whether /proc/net/tcp lists the server side of the connection
  // 127.0.0.1:port_ <- :remote_port as ESTABLISHED (state 01).
  bool ServerSocketEstablished(int remote_port) const {
    std::ifstream in("/proc/net/tcp");
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if (PortOf(local) == port_ && PortOf(remote) == remote_port) return state == "01";
    }
    return false;
  }

  static int PortOf(const std::string& address) {  // "0100007F:1F90" -> 8080
    const size_t colon = address.find(':');
    if (colon == std::string::npos) return -1;
    return static_cast<int>(std::stoul(address.substr(colon + 1), nullptr, 16));
  }

  static bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(a[i])) !=
          std::tolower(static_cast<unsigned char>(b[i]))) {
        return false;
      }
    }
    return true;
  }

  httplib::Server server_;
  int port_ = -1;
  std::thread thread_;
  std::once_flag stop_once_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;                   // requests_ grew, or stopping_
  bool stopping_ = false;                                // guarded by mu_
  std::map<std::string, std::deque<MockReply>> queued_;  // guarded by mu_
  std::map<std::string, Handler> handlers_;              // guarded by mu_
  std::map<std::string, MockReply> defaults_;            // guarded by mu_
  std::vector<RecordedRequest> requests_;                // guarded by mu_
  std::set<int> remote_ports_;                           // guarded by mu_
};

// ---- OpenAI-shaped payloads ----

inline std::string JsonString(std::string_view s) {  // a quoted, escaped JSON string
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// One SSE event carrying `data`: "data: <data>\n\n".
inline std::string SseData(std::string_view data) { return "data: " + std::string(data) + "\n\n"; }

inline std::string UsageJson(int prompt_tokens, int completion_tokens) {
  return R"({"prompt_tokens":)" + std::to_string(prompt_tokens) + R"(,"completion_tokens":)" +
         std::to_string(completion_tokens) + R"(,"total_tokens":)" +
         std::to_string(prompt_tokens + completion_tokens) + "}";
}

// A chat.completion answering `content`.
inline std::string ChatCompletionJson(std::string_view model, std::string_view content,
                                      int prompt_tokens = 10, int completion_tokens = 20) {
  return R"({"id":"chatcmpl-mock","object":"chat.completion","created":1767225600,"model":)" +
         JsonString(model) + R"(,"choices":[{"index":0,"message":{"role":"assistant","content":)" +
         JsonString(content) + R"(},"finish_reason":"stop"}],"usage":)" +
         UsageJson(prompt_tokens, completion_tokens) + "}";
}

// The SSE events of a streamed chat completion: a role chunk, one chunk per
// piece, a finish chunk, a usage chunk (empty choices, as with
// stream_options.include_usage) and "data: [DONE]".
inline std::vector<std::string> ChatCompletionChunkEvents(std::string_view model,
                                                          const std::vector<std::string>& pieces,
                                                          int prompt_tokens = 10,
                                                          int completion_tokens = 20) {
  const std::string prefix =
      R"({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1767225600,"model":)" +
      JsonString(model) + ",";
  auto choice = [&](const std::string& delta, const std::string& finish) {
    return SseData(prefix + R"("choices":[{"index":0,"delta":)" + delta + R"(,"finish_reason":)" +
                   finish + "}]}");
  };
  std::vector<std::string> events;
  events.push_back(choice(R"({"role":"assistant","content":""})", "null"));
  for (const std::string& piece : pieces) {
    events.push_back(choice(R"({"content":)" + JsonString(piece) + "}", "null"));
  }
  events.push_back(choice("{}", R"("stop")"));
  events.push_back(SseData(prefix + R"("choices":[],"usage":)" +
                           UsageJson(prompt_tokens, completion_tokens) + "}"));
  events.push_back(SseData("[DONE]"));
  return events;
}

// {"error":{"message":..., "type":..., "param":null, "code":...}}
inline std::string OpenAiErrorJson(std::string_view message, std::string_view type,
                                   std::string_view code) {
  return R"({"error":{"message":)" + JsonString(message) + R"(,"type":)" + JsonString(type) +
         R"(,"param":null,"code":)" + JsonString(code) + "}}";
}

inline MockReply JsonReply(std::string body, int status = 200) {
  MockReply reply;
  reply.status = status;
  reply.body = std::move(body);
  return reply;
}

inline MockReply SseReply(std::vector<std::string> events) {
  MockReply reply;
  reply.headers = {{"Cache-Control", "no-cache"}};
  reply.sse_events = std::move(events);
  return reply;
}

inline MockReply ChatCompletionReply(std::string_view model, std::string_view content,
                                     int prompt_tokens = 10, int completion_tokens = 20) {
  return JsonReply(ChatCompletionJson(model, content, prompt_tokens, completion_tokens));
}

inline MockReply ChatCompletionStreamReply(std::string_view model,
                                           const std::vector<std::string>& pieces,
                                           int prompt_tokens = 10, int completion_tokens = 20) {
  return SseReply(ChatCompletionChunkEvents(model, pieces, prompt_tokens, completion_tokens));
}

// A 429 in OpenAI's shape, with Retry-After when `retry_after_seconds` >= 0.
inline MockReply RateLimitedReply(int retry_after_seconds = -1) {
  MockReply reply =
      JsonReply(OpenAiErrorJson("Rate limit reached", "requests", "rate_limit_exceeded"), 429);
  if (retry_after_seconds >= 0) {
    reply.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  }
  return reply;
}

}  // namespace switchboard::testing

#endif  // SWITCHBOARD_TESTS_SUPPORT_MOCK_UPSTREAM_H_
