// The connection layer under httplib's request handling.
//
// Design. httplib::Server accepts on one thread and hands each connection to
// a TaskQueue job, process_and_close_socket(sock), which loops over the
// connection's requests calling process_request() (parse, route, run the
// handler, write the response). We keep process_request() and replace the
// two pieces around it:
//
// - The task queue (new_task_queue) is a DynamicThreadPool: a thread per
//   connection, started on demand up to max_threads, so hundreds of idle
//   keep-alive SDK connections and long SSE streams never queue behind each
//   other (httplib's pool has 8 threads, each held for a connection's life).
//   Idle threads exit after idle_thread_timeout.
// - The per-connection loop (process_and_close_socket, a private virtual;
//   overriding it is legal C++) runs process_request() over our own
//   SocketStream, which reads through a small buffer (httplib reads request
//   lines one byte at a time) and waits with poll(), never select(), so any
//   fd number works. The loop
//     * waits for a request with the keep-alive timeout, and wakes early on
//       drain or stop (an eventfd in the same poll);
//     * bounds the request line + headers by an absolute deadline
//       (header_timeout), so a client trickling one byte at a time cannot
//       hold a thread; the body then gets read_timeout between reads;
//     * keeps the connection's socket in a thread_local, so handlers can ask
//       ClientGone() while they wait on an upstream;
//     * registers every open socket, so a shutdown can wait for them, and as
//       a last resort shutdown(2) them;
//     * under pressure (pressure_connections open, near max_threads) closes
//       idle keep-alive connections at once (a second eventfd in their poll)
//       and every connection after its response, so the last threads serve
//       new clients rather than sockets that may never send again.
//   Writes are non-blocking sends after poll(POLLOUT), so a client that stops
//   reading fails the write after write_timeout instead of blocking forever,
//   and each chunk a handler writes goes out at once (TCP_NODELAY).
//
// Graceful shutdown never touches httplib's svr_sock_ = INVALID_SOCKET path
// (stop()): that makes every chunked response end mid-stream without its
// terminating chunk. Instead StopAccepting() shutdown(2)s the listening
// socket, so accept() fails and httplib's listen loop closes it and leaves;
// its TaskQueue::shutdown() then waits for our connection threads, which
// finish their requests and close (BeginDrain) or are told to end them
// (ForceEnd, AbortConnections).
#include "http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>
#include <utility>

namespace switchboard::server {

namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

thread_local int tl_socket = -1;
thread_local bool tl_close_after = false;

int PollMillis(milliseconds timeout) {
  if (timeout.count() <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(timeout.count(), 1 << 30));
}

// poll() one fd, retrying on EINTR with the remaining time. Returns revents,
// 0 on timeout, -1 on error.
int PollOne(int fd, short events, milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, PollMillis(timeout));
    if (r > 0) return p.revents;
    if (r == 0) return 0;
    if (errno != EINTR) return -1;
    timeout = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
    if (timeout.count() <= 0) return 0;
  }
}

bool IsChunked(const httplib::Request& req) {
  return strcasecmp(req.get_header_value("Transfer-Encoding").c_str(), "chunked") == 0;
}

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void AddressOf(const sockaddr_storage& addr, socklen_t len, std::string& ip, int& port) {
  char host[NI_MAXHOST];
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0,
                    NI_NUMERICHOST) == 0) {
    ip = host;
  }
  if (addr.ss_family == AF_INET) {
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  }
}

}  // namespace

#if defined(__SANITIZE_THREAD__)
// Debian's libcpp-httplib is not built with ThreadSanitizer, so TSan cannot
// see its synchronization (e.g. the inline fast path of a function-local
// static's guard) and reports the memcpy/memcmp it intercepts from inside
// the library as races. Ignore only interceptor calls made directly by that
// library; our handlers, called from it, stay checked.
// The library also builds its std::regex route patterns uninstrumented,
// while our binaries carry instrumented copies of the regex matcher that
// read them: suppress races inside std::regex's bracket matcher (no code of
// ours uses std::regex).
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libcpp-httplib.so\n"
         "race:std::__detail::_BracketMatcher\n";
}
#endif

// --- DynamicThreadPool -------------------------------------------------------

DynamicThreadPool::DynamicThreadPool(size_t max_threads, milliseconds idle_timeout)
    : max_threads_(std::max<size_t>(1, max_threads)), idle_timeout_(idle_timeout) {}

DynamicThreadPool::~DynamicThreadPool() { shutdown(); }

void DynamicThreadPool::enqueue(std::function<void()> fn) {
  ReapExited();
  std::unique_lock<std::mutex> lock(mu_);
  // Only reachable if httplib enqueued after shutdown(), which it does not;
  // the job (and the socket it would close) is dropped.
  if (shutdown_) return;
  jobs_.push_back(std::move(fn));
  if (jobs_.size() <= idle_ || threads_.size() >= max_threads_) {
    work_.notify_one();
    return;
  }
  auto self = threads_.emplace(threads_.end());
  try {
    *self = std::thread(&DynamicThreadPool::Work, this, self);
    peak_ = std::max(peak_, threads_.size());
  } catch (const std::system_error&) {
    // Out of threads: the job waits for a running one. With none running,
    // serve it here rather than never.
    threads_.erase(self);
    if (threads_.empty()) {
      std::function<void()> job = std::move(jobs_.back());
      jobs_.pop_back();
      lock.unlock();
      job();
    }
  }
}

void DynamicThreadPool::Work(std::list<std::thread>::iterator self) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (jobs_.empty()) {
      if (shutdown_) break;
      ++idle_;
      const bool woken =
          work_.wait_for(lock, idle_timeout_, [this] { return !jobs_.empty() || shutdown_; });
      --idle_;
      if (!woken) break;  // idle too long: this thread exits
      continue;
    }
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();
    job = nullptr;  // destroy what the job captured outside the lock
    lock.lock();
  }
  // Still under mu_: enqueue() sees this thread gone and starts another.
  exited_.splice(exited_.end(), threads_, self);
  exited_cv_.notify_all();
}

void DynamicThreadPool::ReapExited() {
  std::list<std::thread> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done.swap(exited_);
  }
  for (std::thread& t : done) t.join();
}

void DynamicThreadPool::shutdown() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    shutdown_ = true;
    work_.notify_all();
    exited_cv_.wait(lock, [this] { return threads_.empty(); });
  }
  ReapExited();
}

size_t DynamicThreadPool::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_.size();
}

size_t DynamicThreadPool::idle_threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_;
}

size_t DynamicThreadPool::peak_threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

// --- SocketStream ------------------------------------------------------------

// An httplib::Stream over a connected socket. Reads go through a 16 KiB
// buffer. While a request's headers are read, every read is bounded by one
// absolute deadline; afterwards each read may wait read_timeout. Not
// thread-safe; the connection's thread owns it.
class HttpServer::SocketStream final : public httplib::Stream {
 public:
  SocketStream(socket_t sock, const HttpServerOptions& options) : sock_(sock), options_(options) {}

  using httplib::Stream::write;

  bool buffered() const { return pos_ < end_; }
  // A read timed out or failed: the connection is done, whatever httplib
  // answered (it answers a header timeout with 400 and would read on).
  bool failed() const { return failed_; }
  // Whether anything was written since BeginHeaders().
  bool wrote() const { return wrote_; }
  // The status a malformed or oversized request head earns (431 or 400), 0
  // when the head was fine so far.
  int head_error() const { return head_error_; }
  void BeginHeaders(SteadyClock::time_point deadline) {
    header_deadline_ = deadline;
    in_headers_ = true;
    wrote_ = false;
    head_error_ = 0;
    head_bytes_ = 0;
    header_lines_ = 0;
    line_length_ = 0;
    after_cr_ = false;
    first_line_ = true;
  }
  // The headers are in: the body (if any) gets body_timeout from now, and a
  // chunked one has its framing checked as it is read.
  void EndHeaders(bool chunked) {
    in_headers_ = false;
    body_deadline_ = SteadyClock::now() + options_.body_timeout;
    chunk_state_ = chunked ? ChunkState::kSize : ChunkState::kNone;
    chunk_digits_ = 0;
    chunk_left_ = 0;
  }

  bool is_readable() const override {
    return buffered() || PollOne(sock_, POLLIN, ReadTimeout()) > 0;
  }
  bool is_writable() const override {
    const int r = PollOne(sock_, POLLOUT, options_.write_timeout);
    return r > 0 && (r & (POLLERR | POLLHUP | POLLNVAL)) == 0;
  }

  ssize_t read(char* ptr, size_t size) override {
    if (size == 0) return 0;
    if (!buffered()) {
      pos_ = end_ = 0;
      const ssize_t n = Receive(buf_, sizeof(buf_));
      if (n <= 0) return n < 0 ? -1 : 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, end_ - pos_);
    if (in_headers_ ? !CheckHead(buf_ + pos_, n) : !CheckChunks(buf_ + pos_, n)) {
      failed_ = true;
      return -1;
    }
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    wrote_ = true;
    const auto deadline = SteadyClock::now() + options_.write_timeout;
    for (;;) {
      const ssize_t n = ::send(sock_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
      if (left.count() <= 0) return -1;
      const int r = PollOne(sock_, POLLOUT, left);
      if (r <= 0 || (r & (POLLERR | POLLNVAL))) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      AddressOf(addr, len, ip, port);
    }
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      AddressOf(addr, len, ip, port);
    }
  }
  socket_t socket() const override { return sock_; }

 private:
  milliseconds ReadTimeout() const {
    const auto left = [](SteadyClock::time_point deadline) {
      return std::max(milliseconds(0),
                      std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()));
    };
    if (in_headers_) return left(header_deadline_);
    return std::min(options_.read_timeout, left(body_deadline_));
  }

  // Checks the bytes of a request head as httplib takes them (it reads the
  // head a byte at a time, and the body only after EndHeaders()). httplib
  // itself accepts any number of fields, a request line of any length (it
  // buffers it whole), bare CRs and folded lines; we refuse them here.
  // False (with head_error_ set) at the first violation.
  bool CheckHead(const char* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const unsigned char c = static_cast<unsigned char>(data[i]);
      if (++head_bytes_ > options_.max_header_bytes) return HeadError(431);
      if (after_cr_ && c != '\n') return HeadError(400);  // a bare CR
      after_cr_ = c == '\r';
      if (c == '\r') continue;
      if (c == '\n') {
        if (line_length_ > 0) {
          if (first_line_) {
            first_line_ = false;  // the request line
          } else if (++header_lines_ > options_.max_header_count) {
            return HeadError(431);
          }
        }
        line_length_ = 0;
        continue;
      }
      // A field line starting with whitespace is an obsolete line folding.
      if (line_length_ == 0 && !first_line_ && (c == ' ' || c == '\t')) return HeadError(400);
      if ((c < 0x20 && c != '\t') || c == 0x7f) return HeadError(400);
      ++line_length_;
    }
    return true;
  }

  // Checks a chunked body's framing as httplib takes it: a chunk size is
  // 1-16 hex digits, then optional whitespace and ";extensions", then CRLF
  // (httplib's strtoul would take "0x10", " 10" or "10 junk"). False at the
  // first violation; the body read then fails and the request gets 400.
  bool CheckChunks(const char* data, size_t n) {
    for (size_t i = 0; i < n && chunk_state_ != ChunkState::kNone; ++i) {
      const char c = data[i];
      switch (chunk_state_) {
        case ChunkState::kSize:
          if (std::isxdigit(static_cast<unsigned char>(c))) {
            if (chunk_digits_ < 0 || ++chunk_digits_ > 16) return false;
            chunk_left_ = chunk_left_ * 16 +
                          static_cast<uint64_t>(std::isdigit(static_cast<unsigned char>(c))
                                                    ? c - '0'
                                                    : std::tolower(c) - 'a' + 10);
          } else if (chunk_digits_ > 0 && (c == ' ' || c == '\t')) {
            chunk_digits_ = -1;  // only whitespace or ';' may follow
          } else if (chunk_digits_ != 0 && c == ';') {
            chunk_state_ = ChunkState::kExtension;
          } else if (chunk_digits_ != 0 && c == '\r') {
            chunk_state_ = ChunkState::kSizeLf;
          } else {
            return false;
          }
          break;
        case ChunkState::kExtension:
          if (c == '\r') chunk_state_ = ChunkState::kSizeLf;
          if (c == '\n') return false;
          break;
        case ChunkState::kSizeLf:
          if (c != '\n') return false;
          chunk_digits_ = 0;
          chunk_state_ = chunk_left_ == 0 ? ChunkState::kNone : ChunkState::kData;
          break;
        case ChunkState::kData:
          if (--chunk_left_ == 0) chunk_state_ = ChunkState::kDataCr;
          break;
        case ChunkState::kDataCr:
          if (c != '\r') return false;
          chunk_state_ = ChunkState::kDataLf;
          break;
        case ChunkState::kDataLf:
          if (c != '\n') return false;
          chunk_state_ = ChunkState::kSize;
          break;
        case ChunkState::kNone:
          break;
      }
    }
    return true;
  }

  bool HeadError(int status) {
    head_error_ = status;
    return false;
  }

  // One recv() once the socket is readable: >0 bytes, 0 at the end, -1 on
  // an error or a timeout.
  ssize_t Receive(char* out, size_t size) {
    for (;;) {
      const milliseconds timeout = ReadTimeout();
      const int r = timeout.count() > 0 ? PollOne(sock_, POLLIN, timeout) : 0;
      if (r <= 0 || (r & POLLNVAL)) {
        failed_ = true;
        return -1;
      }
      const ssize_t n = ::recv(sock_, out, size, MSG_DONTWAIT);
      if (n > 0) return n;
      if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
        failed_ = true;
        return n == 0 ? 0 : -1;
      }
    }
  }

  const socket_t sock_;
  const HttpServerOptions& options_;
  SteadyClock::time_point header_deadline_{};
  SteadyClock::time_point body_deadline_{};
  bool in_headers_ = false;
  bool failed_ = false;
  bool wrote_ = false;
  // The head check's state (see CheckHead).
  int head_error_ = 0;
  size_t head_bytes_ = 0;
  size_t header_lines_ = 0;
  size_t line_length_ = 0;
  bool after_cr_ = false;
  bool first_line_ = true;
  // The chunked-body check's state (see CheckChunks); kNone once the last
  // chunk's size line is in (trailers are left to httplib) or when the body
  // is not chunked.
  enum class ChunkState { kNone, kSize, kExtension, kSizeLf, kData, kDataCr, kDataLf };
  ChunkState chunk_state_ = ChunkState::kNone;
  int chunk_digits_ = 0;  // -1: whitespace after the digits
  uint64_t chunk_left_ = 0;
  char buf_[16 * 1024];
  size_t pos_ = 0;
  size_t end_ = 0;
};

// --- HttpServer --------------------------------------------------------------

namespace {

// 400 for conflicting framing (Content-Length with Transfer-Encoding, or
// Content-Length values that differ), 501 for a transfer coding other than
// a lone "chunked", 0 when the framing is unambiguous. RFC 9112 6.1, 6.3.
int FramingError(const httplib::Request& req) {
  const size_t encodings = req.get_header_value_count("Transfer-Encoding");
  const size_t lengths = req.get_header_value_count("Content-Length");
  if (encodings > 0 && lengths > 0) return 400;
  if (encodings > 1) return 501;
  if (encodings == 1 && strcasecmp(req.get_header_value("Transfer-Encoding").c_str(), "chunked")) {
    return 501;
  }
  for (size_t i = 1; i < lengths; ++i) {
    if (req.get_header_value("Content-Length", i) != req.get_header_value("Content-Length", 0)) {
      return 400;
    }
  }
  return 0;
}

// A minimal response for a request whose head httplib never parsed.
void WriteHeadError(httplib::Stream& stream, int status) {
  const char* reason = status == 431 ? "Request Header Fields Too Large" : "Bad Request";
  const std::string message = status == 431 ? "The request line or headers are too large."
                                            : "The request line or headers are malformed.";
  const std::string body = R"({"error":{"message":")" + message +
                           R"(","type":"invalid_request_error","param":null,"code":")" +
                           (status == 431 ? "request_header_fields_too_large" : "bad_request") +
                           R"("}})";
  const std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                           "\r\nContent-Type: application/json\r\nConnection: close\r\n"
                           "Content-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n";
  stream.write(head.data(), head.size());
  stream.write(body.data(), body.size());
}

}  // namespace

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pressure_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pressure_mark_ = options_.pressure_connections > 0 ? options_.pressure_connections
                                                     : UsableThreads(options_.max_threads);
  new_task_queue = [this] {
    return new DynamicThreadPool(options_.max_threads, options_.idle_thread_timeout);
  };
  // process_request() reads these for its Keep-Alive header; our loop
  // enforces them.
  const auto secs = [](milliseconds d) {
    return static_cast<time_t>(std::max<int64_t>(1, (d.count() + 999) / 1000));
  };
  set_keep_alive_timeout(secs(options_.keep_alive_timeout));
  set_keep_alive_max_count(std::max<size_t>(1, options_.max_requests_per_connection));
  set_read_timeout(secs(options_.read_timeout));
  set_write_timeout(secs(options_.write_timeout));
  set_tcp_nodelay(true);
  // httplib's default adds SO_REUSEPORT, which lets a second server bind the
  // same port and silently take half the connections. Only SO_REUSEADDR (a
  // restart need not wait for TIME_WAIT), so a port in use is an error.
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Body framing a proxy in front of us could read differently (request
  // smuggling): refused before any handler or body read.
  set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    const int status = FramingError(req);
    if (status == 0) return HandlerResponse::Unhandled;
    res.status = status;
    CloseConnectionAfter(res);
    return HandlerResponse::Handled;
  });
  // Runs just before the response head is written: a response that ends its
  // connection says so, including one whose request began before a drain.
  set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    if (draining_ || tl_close_after || pressured_) {
      res.headers.erase("Keep-Alive");
      res.headers.erase("Connection");
      res.set_header("Connection", "close");
    }
  });
}

HttpServer::~HttpServer() {
  if (!listened_) {
    const socket_t sock = svr_sock_.exchange(INVALID_SOCKET);
    if (sock != INVALID_SOCKET) ::close(sock);
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (pressure_fd_ >= 0) ::close(pressure_fd_);
}

bool HttpServer::listen_after_bind() {
  listened_ = true;
  return httplib::Server::listen_after_bind();
}

bool HttpServer::bind_to_port(const std::string& host, int port, int socket_flags) {
  if (!httplib::Server::bind_to_port(host, port, socket_flags)) return false;
  ::listen(svr_sock_.load(), options_.listen_backlog);  // Linux: updates the backlog
  return true;
}

int HttpServer::bind_to_any_port(const std::string& host, int socket_flags) {
  const int port = httplib::Server::bind_to_any_port(host, socket_flags);
  if (port > 0) ::listen(svr_sock_.load(), options_.listen_backlog);
  return port;
}

void HttpServer::Wake() {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  // The eventfd stays readable: every later poll() sees it too.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

void HttpServer::stop() {
  std::lock_guard<std::mutex> lock(listen_mu_);
  stopped_ = true;
  Wake();
  if (accepting_stopped_) {
    // The listening socket is gone already (and its fd number may be reused):
    // never let httplib close svr_sock_ again. End what is running instead.
    forced_ = true;
    AbortConnections();
    return;
  }
  httplib::Server::stop();
}

void HttpServer::StopAccepting() {
  std::lock_guard<std::mutex> lock(listen_mu_);
  if (accepting_stopped_ || stopped_) return;
  accepting_stopped_ = true;
  // accept() then fails with EINVAL; httplib's listen loop closes the socket
  // and leaves, and its TaskQueue::shutdown() waits for the connections.
  const socket_t sock = svr_sock_.load();
  if (sock != INVALID_SOCKET) ::shutdown(sock, SHUT_RDWR);
}

void HttpServer::BeginDrain() {
  draining_ = true;
  Wake();
}

void HttpServer::ForceEnd() {
  draining_ = true;
  forced_ = true;
  Wake();
}

void HttpServer::AbortConnections() {
  std::lock_guard<std::mutex> lock(conns_mu_);
  // Safe: a connection leaves conns_ (under conns_mu_) before its fd closes.
  for (socket_t sock : conns_) ::shutdown(sock, SHUT_RDWR);
}

bool HttpServer::WaitForConnections(SteadyClock::time_point deadline) {
  std::unique_lock<std::mutex> lock(conns_mu_);
  return conns_cv_.wait_until(lock, deadline, [this] { return conns_.empty(); });
}

size_t HttpServer::open_connections() const {
  std::lock_guard<std::mutex> lock(conns_mu_);
  return conns_.size();
}

std::function<bool()> HttpServer::ClientGoneCallback() const {
  return [this, fd = tl_socket] { return forced_.load() || (fd >= 0 && SocketGone(fd)); };
}

void HttpServer::UpdatePressureLocked() {
  const bool over = conns_.size() >= pressure_mark_;
  if (over == pressured_.load()) return;
  pressured_ = over;
  if (pressure_fd_ < 0) return;
  if (over) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(pressure_fd_, &one, sizeof(one));
  } else {
    uint64_t count = 0;  // reading resets the eventfd
    [[maybe_unused]] ssize_t n = ::read(pressure_fd_, &count, sizeof(count));
  }
}

HttpServer::Wait HttpServer::WaitForRequest(socket_t sock, milliseconds timeout, bool watch_wake,
                                            bool idle) const {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    pollfd fds[3] = {{sock, POLLIN, 0}, {-1, POLLIN, 0}, {-1, POLLIN, 0}};
    if (watch_wake) fds[1].fd = wake_fd_;  // poll() skips negative fds
    if (idle) fds[2].fd = pressure_fd_;
    const int r = ::poll(fds, 3, PollMillis(timeout));
    if (r > 0) {
      if (fds[0].revents != 0) return Wait::kReadable;  // data, EOF or error: let the read tell
      return Wait::kWoken;
    }
    if (r == 0 || errno != EINTR) return Wait::kTimeout;
    timeout = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
    if (timeout.count() <= 0) return Wait::kTimeout;
  }
}

void HttpServer::LingeringClose(socket_t sock) const {
  // The response is out but the client may still be sending the body we did
  // not read. Closing now would answer its bytes with a RST, which can
  // destroy our response before the client reads it. So: half-close, and
  // read and discard for a short while until the client closes too.
  ::shutdown(sock, SHUT_WR);
  const auto deadline = SteadyClock::now() + std::chrono::seconds(2);
  char scratch[16 * 1024];
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0 || forced_) return;
    if (PollOne(sock, POLLIN, left) <= 0) return;
    const ssize_t n = ::recv(sock, scratch, sizeof(scratch), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) return;
  }
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  const auto accepted = SteadyClock::now();
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.insert(sock);
    UpdatePressureLocked();
  }
  SetNoDelay(sock);
  SocketStream stream(sock, options_);
  tl_socket = sock;

  bool ok = true;
  bool linger = false;
  size_t served = 0;
  for (;;) {
    if (stopped_ || forced_ || svr_sock_ == INVALID_SOCKET) break;
    if (served > 0 && (draining_ || pressured_)) break;
    if (!stream.buffered()) {
      // A connection's first request must arrive within header_timeout of the
      // accept; later ones within keep_alive_timeout of the previous answer.
      milliseconds timeout = options_.keep_alive_timeout;
      if (served == 0) {
        timeout = std::chrono::duration_cast<milliseconds>(accepted + options_.header_timeout -
                                                           SteadyClock::now());
      }
      Wait w = WaitForRequest(sock, timeout, /*watch_wake=*/true, /*idle=*/served > 0);
      if (w == Wait::kWoken && served == 0 && !stopped_ && !forced_) {
        // Draining: a fresh connection still gets its one request, if the
        // client sends it promptly.
        w = WaitForRequest(sock, std::min(timeout, milliseconds(1000)), /*watch_wake=*/false);
      }
      if (w != Wait::kReadable) break;
    }
    stream.BeginHeaders(served == 0 ? accepted + options_.header_timeout
                                    : SteadyClock::now() + options_.header_timeout);
    tl_close_after = false;
    ++active_requests_;
    const bool close_connection = draining_ || pressured_ || served + 1 >= options_.max_requests_per_connection;
    bool connection_closed = false;
    ok = process_request(stream, close_connection, connection_closed,
                         [&stream](httplib::Request& req) {
                           stream.EndHeaders(IsChunked(req));
                           // We never compress (a gzip'd SSE stream would be
                           // buffered) and never serve byte ranges.
                           req.headers.erase("Accept-Encoding");
                           req.ranges.clear();
                         });
    --active_requests_;
    ++served;
    if (stream.head_error() != 0) {
      // httplib answers a bad header field with 400 itself, but a bad or
      // endless request line with nothing.
      if (!stream.wrote()) WriteHeadError(stream, stream.head_error());
      linger = true;
      break;
    }
    if (tl_close_after) {
      linger = ok;
      break;
    }
    if (!ok || connection_closed || close_connection || stream.failed()) break;
  }
  tl_socket = -1;
  tl_close_after = false;

  if (linger) LingeringClose(sock);
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.erase(sock);
    UpdatePressureLocked();
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
  }
  conns_cv_.notify_all();
  return ok;
}

// --- Handler helpers -----------------------------------------------------------

int CurrentSocket() { return tl_socket; }

bool SocketGone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  const int r = ::poll(&p, 1, 0);
  if (r <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & (POLLRDHUP | POLLIN)) {
    // Readable: either more data (a pipelined request: still there) or the
    // end of the stream (gone).
    char c;
    const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
  }
  return false;
}

bool ClientGone() { return SocketGone(tl_socket); }

void CloseConnectionAfter(httplib::Response& res) {
  tl_close_after = true;
  res.headers.erase("Connection");
  res.set_header("Connection", "close");
}


bool HasRequestBody(const httplib::Request& req) {
  if (IsChunked(req)) return true;
  if (!req.has_header("Content-Length")) return false;
  return req.get_header_value("Content-Length") != "0";
}

BodyRead ReadBody(const httplib::Request& req, httplib::Response& res,
                  const httplib::ContentReader& reader, int64_t limit, std::string* body) {
  body->clear();
  // httplib would hand a multipart body to a receiver we do not pass.
  if (req.is_multipart_form_data()) return BodyRead::kUnsupportedMedia;
  const bool chunked = IsChunked(req);
  // Neither Content-Length nor chunked: the body is empty (RFC 9112 6.3).
  // Reading anyway would wait for the client to close the connection.
  if (!chunked && !req.has_header("Content-Length")) return BodyRead::kOk;
  if (!chunked && req.has_header("Content-Length")) {
    const std::string value = req.get_header_value("Content-Length");
    uint64_t length = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
      return BodyRead::kBadLength;
    }
    if (length > static_cast<uint64_t>(limit)) return BodyRead::kTooLarge;
    body->reserve(length);
  }
  bool too_large = false;
  const int status_before = res.status;
  const bool ok = reader([&](const char* data, size_t n) {
    if (body->size() + n > static_cast<uint64_t>(limit)) {
      too_large = true;
      return false;
    }
    if (body->size() + n > body->capacity()) {
      // Double, but jump straight to the limit past a quarter of it: the
      // last copy then moves at most half the limit, and a body that ends
      // over the limit never holds more than the limit (doubling would hold
      // 1.6x it, with the old buffer, while copying).
      const size_t cap = static_cast<size_t>(limit);
      size_t next = std::max<size_t>({body->capacity() * 2, body->size() + n, 64 * 1024});
      if (next > cap / 2) next = cap;
      body->reserve(std::max(next, body->size() + n));
    }
    body->append(data, n);
    return true;
  });
  if (too_large) {
    body->clear();
    body->shrink_to_fit();
    return BodyRead::kTooLarge;
  }
  if (ok) return BodyRead::kOk;
  const int status = res.status;
  res.status = status_before;
  body->clear();
  if (status == 415) return BodyRead::kUnsupportedEncoding;
  if (status == 413) return BodyRead::kTooLarge;
  return BodyRead::kFailed;
}

}  // namespace switchboard::server
