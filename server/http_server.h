// server/http_server.h
// The HTTP layer under the switchboard server: cpp-httplib's routing and
// request parsing, with our own connection handling on top.
//
//   HttpServer http({.max_threads = 512});
//   http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { ... });
//   int port = http.bind_to_any_port("127.0.0.1");
//   std::thread t([&] { http.listen_after_bind(); });
//   ...                                   // a handler may ask ClientGone()
//   http.stop();                          // or StopAccepting() + BeginDrain() to drain
//   t.join();
//
// Why not plain httplib::Server: its pool has a fixed 8 threads and every
// keep-alive or streaming connection holds one for its whole life, so the
// ninth SDK client waits; it cannot tell a handler that the client went away;
// and a client that trickles its headers holds a thread forever. HttpServer
// replaces the per-connection loop (the private virtual
// process_and_close_socket) and the task queue, and keeps httplib's request
// parsing, routing and response writing (the protected process_request).
#ifndef SWITCHBOARD_SERVER_HTTP_SERVER_H_
#define SWITCHBOARD_SERVER_HTTP_SERVER_H_

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace switchboard::server {

// A TaskQueue that starts a thread whenever a job arrives and no thread is
// idle, up to `max_threads`; beyond that, jobs wait in FIFO order. A thread
// that found no job for `idle_timeout` exits. With one connection per job,
// every open connection gets its own thread as long as there are fewer than
// max_threads of them, so a slow stream never delays another client.
// Thread-safe.
class DynamicThreadPool final : public httplib::TaskQueue {
 public:
  explicit DynamicThreadPool(size_t max_threads = 2048,
                             std::chrono::milliseconds idle_timeout = std::chrono::seconds(30));
  ~DynamicThreadPool() override;  // shutdown()
  DynamicThreadPool(const DynamicThreadPool&) = delete;
  DynamicThreadPool& operator=(const DynamicThreadPool&) = delete;

  void enqueue(std::function<void()> fn) override;
  // Runs every job already queued, then joins all threads. Jobs enqueued
  // afterwards are dropped.
  void shutdown() override;

  size_t threads() const;       // alive now
  size_t idle_threads() const;  // alive and waiting for a job
  size_t peak_threads() const;  // most alive at once

 private:
  void Work(std::list<std::thread>::iterator self);
  // Joins the threads that exited on their own. REQUIRES: mu_ not held.
  void ReapExited();

  const size_t max_threads_;
  const std::chrono::milliseconds idle_timeout_;

  mutable std::mutex mu_;
  std::condition_variable work_;           // workers wait on it for jobs
  std::condition_variable exited_cv_;      // shutdown() waits on it
  std::list<std::function<void()>> jobs_;  // guarded by mu_
  std::list<std::thread> threads_;         // guarded by mu_: alive
  std::list<std::thread> exited_;          // guarded by mu_: to join
  size_t idle_ = 0;                        // guarded by mu_
  size_t peak_ = 0;                        // guarded by mu_
  bool shutdown_ = false;                  // guarded by mu_
};

struct HttpServerOptions {
  // Most connection threads (see DynamicThreadPool); connections beyond it
  // wait for a free thread.
  size_t max_threads = 2048;
  // An idle pool thread exits after this long.
  std::chrono::milliseconds idle_thread_timeout = std::chrono::seconds(30);
  // From the first byte of a request (the accept, for a connection's first
  // request) to the end of its headers, however slowly they trickle in.
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  // From the end of a request's headers to the end of its body, however
  // slowly it trickles in.
  std::chrono::milliseconds body_timeout = std::chrono::seconds(60);
  // Longest gap between two reads of a request body.
  std::chrono::milliseconds read_timeout = std::chrono::seconds(30);
  // Longest a write waits for the client to take bytes.
  std::chrono::milliseconds write_timeout = std::chrono::seconds(30);
  // An idle keep-alive connection is closed after this long.
  std::chrono::milliseconds keep_alive_timeout = std::chrono::seconds(5);
  // Largest request line + headers, in bytes; beyond it the request is
  // refused (431) and its connection closed.
  size_t max_header_bytes = 32 * 1024;
  // Most header fields in one request; beyond it the request is refused
  // (431) and its connection closed.
  size_t max_header_count = 100;
  // Requests served on one connection before it is closed.
  size_t max_requests_per_connection = 10000;
  // Connections the kernel queues before accept() (capped by somaxconn).
  int listen_backlog = 4096;
  // With this many connections open the server is under pressure: idle
  // keep-alive connections close at once and every response closes its
  // connection, so the threads left (ReservedThreads) go to new clients, a
  // health check or an admin call, not to idle sockets. 0: max_threads -
  // ReservedThreads(max_threads).
  size_t pressure_connections = 0;
};

// The connection threads kept for anything but proxied requests: 1/16 of
// them, at least 8. The server's default cap on requests in flight and the
// default pressure mark are max_threads minus this.
constexpr size_t ReservedThreads(size_t max_threads) {
  return max_threads / 16 > 8 ? max_threads / 16 : 8;
}
constexpr size_t UsableThreads(size_t max_threads) {
  return max_threads > ReservedThreads(max_threads) ? max_threads - ReservedThreads(max_threads)
                                                    : 1;
}

// An httplib::Server with a thread per connection (on demand), client-gone
// detection, slow-client timeouts and a graceful drain. Register handlers as
// with httplib::Server; handlers run on the connection's thread and may call
// ClientGone(), CurrentSocket() and CloseConnectionAfter().
// HttpServer sets httplib's pre-routing handler (to refuse ambiguous body
// framing) and post-routing handler (to mark responses that close their
// connection) itself; do not replace them.
// Request heads are checked as they arrive: too large or too many fields is
// 431, a bare CR, a control character, an obsolete line folding, conflicting
// Content-Length values or Content-Length with Transfer-Encoding is 400, a
// transfer coding other than chunked is 501; each closes the connection. Thread-safe as
// httplib::Server is: configure, then listen on one thread and stop from any.
class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(HttpServerOptions options = {});
  ~HttpServer() override;

  // Hide httplib's (call them through HttpServer): bind, then raise the
  // listen backlog from httplib's 5 to options().listen_backlog, so a burst
  // of connections is not refused while the accept loop catches up.
  bool bind_to_port(const std::string& host, int port, int socket_flags = 0);
  int bind_to_any_port(const std::string& host, int socket_flags = 0);
  // Hides httplib's: notes that the listening socket is now httplib's to
  // close (the destructor closes one that was bound but never listened on).
  bool listen_after_bind();

  // Hides httplib::Server::stop() (call it through HttpServer): also wakes
  // connections idling in keep-alive so listen_after_bind() returns at once.
  // In-flight requests are cut off (a stream ends where it is).
  void stop();

  // Graceful shutdown, in steps. Each is idempotent and callable from any
  // thread.
  // 1. No new connections: listen_after_bind() stops accepting and returns
  //    once every open connection has closed.
  void StopAccepting();
  // 2. Requests in flight finish; every response after this says
  //    "Connection: close" and idle keep-alive connections close now.
  void BeginDrain();
  // 3. Requests still running are told to end: ClientGoneCallback()s
  //    return true from now on.
  void ForceEnd();
  // 4. Last resort: shutdown(2) every open connection, failing any read or
  //    write blocked on a client.
  void AbortConnections();

  // Blocks until no connection is open or `deadline` passes; true if none is.
  bool WaitForConnections(std::chrono::steady_clock::time_point deadline);

  bool draining() const { return draining_.load(); }
  bool forced() const { return forced_.load(); }
  size_t open_connections() const;
  // Requests being processed now (first byte received, response not yet done).
  size_t active_requests() const { return active_requests_.load(); }
  // Open connections are at or past options().pressure_connections.
  bool under_pressure() const { return pressured_.load(); }

  // For the current handler's request (call on its thread): true once the
  // client went away or ForceEnd() was called. Safe to call from any thread
  // later (it captures the socket, not the thread).
  std::function<bool()> ClientGoneCallback() const;

  const HttpServerOptions& options() const { return options_; }

 private:
  class SocketStream;
  // Replaces httplib's keep-alive loop; see http_server.cc.
  bool process_and_close_socket(socket_t sock) override;
  // Waits until `sock` is readable (true), `timeout` passes, or a wake-up
  // (drain, stop) arrives (false).
  enum class Wait { kReadable, kTimeout, kWoken };
  // `idle`: the connection served a request already, so pressure wakes it too.
  Wait WaitForRequest(socket_t sock, std::chrono::milliseconds timeout, bool watch_wake,
                      bool idle = false) const;
  void Wake();
  // Under conns_mu_: turns pressure on or off after conns_ changed.
  void UpdatePressureLocked();
  void LingeringClose(socket_t sock) const;

  const HttpServerOptions options_;
  int wake_fd_ = -1;      // an eventfd, readable once draining or stopping
  std::mutex listen_mu_;  // serializes stop() and StopAccepting()
  std::atomic<bool> listened_{false};
  std::atomic<bool> accepting_stopped_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> forced_{false};
  std::atomic<size_t> active_requests_{0};
  size_t pressure_mark_ = 0;  // open connections at which pressure begins
  int pressure_fd_ = -1;      // an eventfd, readable while under pressure
  std::atomic<bool> pressured_{false};

  mutable std::mutex conns_mu_;
  std::condition_variable conns_cv_;  // signalled when a connection closes
  std::set<socket_t> conns_;          // guarded by conns_mu_: open connections
};

// --- For handlers, on the connection's thread -------------------------------

// The socket of the request being handled on this thread; -1 outside one.
int CurrentSocket();

// True when the client of the request being handled on this thread went
// away: the socket reports hang-up or error, or the peer closed its side and
// sent nothing more. False outside a request.
bool ClientGone();
// The same test for any connected socket.
bool SocketGone(int fd);

// Closes the connection once `res` is written (adds "Connection: close").
// Use it when a handler answers without reading the request body.
void CloseConnectionAfter(httplib::Response& res);

// How reading a request body ended.
enum class BodyRead {
  kOk,
  kTooLarge,             // over the limit: declared, or while reading
  kBadLength,            // a malformed Content-Length
  kUnsupportedEncoding,  // a Content-Encoding httplib cannot decode
  kUnsupportedMedia,     // multipart/form-data (not an API body)
  kFailed,               // the client went away, timed out, or sent a bad chunk
};

// Reads the body through `reader` into *body, stopping as soon as it would
// exceed `limit` bytes (after decoding any Content-Encoding), so an oversized
// body is never held in memory. A declared Content-Length over the limit is
// refused before reading a byte. Anything but kOk leaves unread bytes on the
// connection: answer, and CloseConnectionAfter(res).
BodyRead ReadBody(const httplib::Request& req, httplib::Response& res,
                  const httplib::ContentReader& reader, int64_t limit, std::string* body);

// Whether the request announces a body (Content-Length > 0 or chunked).
bool HasRequestBody(const httplib::Request& req);

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_HTTP_SERVER_H_
