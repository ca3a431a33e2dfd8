// The libcurl UpstreamClient.
//
// Each call drives its own multi handle on the caller's thread (pull model:
// nothing runs between AwaitHead()/Read() calls, so a slow reader leaves the
// bytes in the kernel and TCP pushes back on the upstream).
//
// Connection reuse. libcurl documents a connection cache shared through a
// CURLSH handle (CURL_LOCK_DATA_CONNECT) as unsafe between concurrent threads
// (KNOWN_BUGS "A shared connection cache is not thread-safe", curl#4915), so
// the share handle carries only the DNS cache and TLS sessions. Connections
// live in the connection cache of the multi handle that opened them instead:
// when a transfer completes, its easy+multi pair goes back to a pool keyed by
// origin (scheme://host:port) with that one idle connection inside, and the
// next call to the same origin, from any thread, takes the pair and with it
// the connection. Each pair is used by one thread at a time; the pool's mutex
// hands it over.
#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <limits>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include "switchboard/upstream.h"

static_assert(LIBCURL_VERSION_NUM >= 0x075500, "libcurl >= 7.85 (CURLOPT_PROTOCOLS_STR) needed");

namespace switchboard {
namespace {

// Received body bytes held for the caller before the transfer is paused.
constexpr size_t kPauseBytes = size_t{1} << 20;
constexpr long kReceiveBufferBytes = 64 * 1024;
// The longest a wait blocks before cancelled() is asked again.
constexpr auto kMaxPollWait = std::chrono::milliseconds(100);
// How long past connect_timeout we wait for libcurl's own connect timeout
// before giving up on the connect phase ourselves (a stuck resolver).
constexpr auto kConnectGrace = std::chrono::milliseconds(500);
// libcurl closes connections idle for longer (CURLOPT_MAXAGE_CONN default 118 s),
// so pooled handles older than this hold nothing worth keeping.
constexpr auto kIdleTtl = std::chrono::seconds(118);

std::string Lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  static constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           kSpecials.find(c) != std::string_view::npos;
  });
}

bool HasLineBreak(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// t + d, saturating: a caller may pass Duration::max() for "no limit".
SteadyTime After(SteadyTime t, Duration d) {
  if (d > SteadyTime::max() - t) return SteadyTime::max();
  return t + d;
}

long ToMillis(Duration d) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
  return static_cast<long>(std::clamp<int64_t>(ms, 0, std::numeric_limits<long>::max()));
}

// How a finished libcurl transfer failed, in TransportError terms. `connected`:
// the request was about to be sent, so the connection had been established.
TransportError MapCurlError(CURLcode code, bool connected) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return TransportError::kConnect;
    case CURLE_OPERATION_TIMEDOUT:
      return connected ? TransportError::kTimeout : TransportError::kConnect;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2_STREAM:
      return TransportError::kReset;
    default:
      return TransportError::kProtocol;
  }
}

// An easy handle and the multi handle that drives it. The multi handle owns
// the connection cache (capped at one connection), so the connection of the
// last transfer stays open for as long as the pair is pooled.
struct CurlHandles {
  CURL* easy = nullptr;
  CURLM* multi = nullptr;

  CurlHandles() = default;
  CurlHandles(const CurlHandles&) = delete;
  CurlHandles& operator=(const CurlHandles&) = delete;
  ~CurlHandles() {
    // The easy handle is never left in the multi handle (see CurlCall::Release).
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (multi != nullptr) curl_multi_cleanup(multi);  // closes the cached connection
  }
};

// The share handle and the pooled handle pairs. Thread-safe. Calls hold it by
// shared_ptr, so it outlives the client while a call still runs.
class CurlPool {
 public:
  explicit CurlPool(const CurlClientOptions& options) : options_(options) {}
  CurlPool(const CurlPool&) = delete;
  CurlPool& operator=(const CurlPool&) = delete;

  ~CurlPool() {
    idle_.clear();  // every easy handle is detached from the share before it goes
    if (share_ != nullptr) curl_share_cleanup(share_);
  }

  // Creates the share handle. False when libcurl refuses.
  bool Init() {
    share_ = curl_share_init();
    if (share_ == nullptr) return false;
    return curl_share_setopt(share_, CURLSHOPT_LOCKFUNC, &CurlPool::Lock) == CURLSHE_OK &&
           curl_share_setopt(share_, CURLSHOPT_UNLOCKFUNC, &CurlPool::Unlock) == CURLSHE_OK &&
           curl_share_setopt(share_, CURLSHOPT_USERDATA, this) == CURLSHE_OK &&
           curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) == CURLSHE_OK &&
           curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) == CURLSHE_OK;
  }

  CURLSH* share() const { return share_; }
  const CurlClientOptions& options() const { return options_; }

  // A pair that last talked to `origin` (most recent first), else a new one.
  // Null when libcurl cannot allocate one.
  std::unique_ptr<CurlHandles> Take(const std::string& origin) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = idle_.begin(); it != idle_.end(); ++it) {
        if (it->origin == origin) {
          std::unique_ptr<CurlHandles> handles = std::move(it->handles);
          idle_.erase(it);
          return handles;
        }
      }
    }
    auto handles = std::make_unique<CurlHandles>();
    handles->easy = curl_easy_init();
    handles->multi = curl_multi_init();
    if (handles->easy == nullptr || handles->multi == nullptr ||
        curl_multi_setopt(handles->multi, CURLMOPT_MAXCONNECTS, 1L) != CURLM_OK) {
      return nullptr;
    }
    return handles;
  }

  // Pools a pair whose transfer to `origin` completed, with the connection it
  // may have left open; evicts the least recently used beyond the caps.
  void Give(std::string origin, std::unique_ptr<CurlHandles> handles) {
    std::list<Idle> evicted;  // destroyed (sockets closed) after the lock is released
    const SteadyTime now = Clock::Real().Now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      idle_.push_front(Idle{std::move(origin), std::move(handles), now});
      const std::string& key = idle_.front().origin;
      if (options_.max_host_connections > 0) {
        long same_origin = 0;
        for (auto it = idle_.begin(); it != idle_.end();) {
          if (it->origin == key && ++same_origin > options_.max_host_connections) {
            evicted.splice(evicted.end(), idle_, it++);
          } else {
            ++it;
          }
        }
      }
      const size_t cap = static_cast<size_t>(std::max(0L, options_.max_idle_connections));
      while (!idle_.empty() && (idle_.size() > cap || now - idle_.back().since > kIdleTtl)) {
        evicted.splice(evicted.end(), idle_, std::prev(idle_.end()));
      }
    }
  }

 private:
  struct Idle {
    std::string origin;
    std::unique_ptr<CurlHandles> handles;
    SteadyTime since;
  };

  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* self) {
    static_cast<CurlPool*>(self)->share_locks_[Index(data)].lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* self) {
    static_cast<CurlPool*>(self)->share_locks_[Index(data)].unlock();
  }
  static size_t Index(curl_lock_data data) {
    const auto i = static_cast<size_t>(data);
    return i < CURL_LOCK_DATA_LAST ? i : 0;
  }

  const CurlClientOptions options_;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> share_locks_;  // one per kind of shared data
  CURLSH* share_ = nullptr;

  std::mutex mu_;
  std::list<Idle> idle_;  // guarded by mu_; most recently used first
};

class CurlCall final : public UpstreamCall {
 public:
  CurlCall(std::shared_ptr<CurlPool> pool, UpstreamRequest request)
      : pool_(std::move(pool)), request_(std::move(request)), start_(Clock::Real().Now()) {
    pause_bytes_ = std::min(kPauseBytes, std::max<size_t>(1, pool_->options().max_buffer_bytes));
    Begin();
  }

  ~CurlCall() override { Release(/*reusable=*/false); }

  UpstreamHead AwaitHead(const CancelFn& cancelled) override {
    if (head_returned_) return head_;
    head_returned_ = true;
    while (!head_complete_ && error_ == TransportError::kNone) {
      if (done_) {
        // Complete without a final head (libcurl refuses HTTP/0.9, for one).
        Fail(TransportError::kProtocol, "upstream sent no response head");
        break;
      }
      if (IsCancelled(cancelled)) {
        Fail(TransportError::kCancelled, "cancelled");
        break;
      }
      const SteadyTime deadline = HeadDeadline();
      const SteadyTime now = Clock::Real().Now();
      if (now >= deadline) {
        FailHeadDeadline();
        break;
      }
      Perform();
      if (!head_complete_ && !done_ && error_ == TransportError::kNone) Poll(deadline - now);
    }
    // A head that arrived counts even if the transfer failed right after it:
    // Read() hands out the body bytes received, then the error.
    if (!head_complete_) {
      head_ = UpstreamHead{};
      head_.error = error_;
      head_.error_message = error_message_;
      return head_;
    }
    head_.status = status_;
    head_.headers = std::move(headers_);
    head_.ttfb = head_at_ - start_;
    return head_;
  }

  ReadResult Read(std::string* out, const CancelFn& cancelled) override {
    // The idle clock starts anew with each call: between calls nothing is
    // received (pull model), so only the time spent waiting here counts.
    const SteadyTime idle_deadline = After(Clock::Real().Now(), request_.idle_timeout);
    const SteadyTime total_deadline = After(start_, request_.total_timeout);
    for (;;) {
      if (!body_.empty()) {
        out->append(body_);
        body_.clear();
        if (paused_) Unpause();
        return ReadResult::kData;
      }
      if (error_ != TransportError::kNone) return ReadResult::kError;
      if (done_) return ReadResult::kEnd;
      const SteadyTime now = Clock::Real().Now();
      if (IsCancelled(cancelled)) {
        Fail(TransportError::kCancelled, "cancelled");
      } else if (now >= total_deadline) {
        Fail(TransportError::kTimeout,
             "total timeout: exchange not complete after " + Millis(request_.total_timeout));
      } else if (now >= idle_deadline) {
        Fail(TransportError::kTimeout,
             "idle timeout: no body bytes for " + Millis(request_.idle_timeout));
      } else {
        Perform();
        if (body_.empty() && !done_ && error_ == TransportError::kNone) {
          Poll(std::min(idle_deadline, total_deadline) - now);
        }
      }
    }
  }

  TransportError error() const override { return error_; }
  const std::string& error_message() const override { return error_message_; }

 private:
  static std::string Millis(Duration d) { return std::to_string(ToMillis(d)) + " ms"; }

  static bool IsCancelled(const CancelFn& cancelled) { return cancelled && cancelled(); }

  // Validates the request, takes a handle pair and starts the transfer; any
  // failure is kept for AwaitHead() to report.
  void Begin() {
    CURLU* url = curl_url();
    if (url == nullptr) return Fail(TransportError::kProtocol, "out of memory");
    std::string origin;
    const bool parsed = ParseUrl(url, &origin);
    curl_url_cleanup(url);
    if (!parsed) return;
    if (!IsToken(request_.method)) {
      return Fail(TransportError::kProtocol, "invalid HTTP method");
    }
    for (const auto& [name, value] : request_.headers) {
      // Never quote a value (it may be a key); a malformed name may hold one too.
      if (!IsToken(name)) return Fail(TransportError::kProtocol, "invalid request header name");
      if (HasLineBreak(value)) {
        return Fail(TransportError::kProtocol, "request header '" + name + "' has a line break");
      }
    }
    origin_ = std::move(origin);
    handles_ = pool_->Take(origin_);
    if (handles_ == nullptr) return Fail(TransportError::kProtocol, "libcurl: out of memory");
    curl_easy_reset(handles_->easy);
    if (!BuildHeaderList()) return Fail(TransportError::kProtocol, "libcurl: out of memory");
    const CURLcode code = Configure(handles_->easy);
    if (code != CURLE_OK) {
      return Fail(TransportError::kProtocol,
                  std::string("libcurl setup: ") + curl_easy_strerror(code));
    }
    const CURLMcode mcode = curl_multi_add_handle(handles_->multi, handles_->easy);
    if (mcode != CURLM_OK) {
      return Fail(TransportError::kProtocol,
                  std::string("libcurl setup: ") + curl_multi_strerror(mcode));
    }
    added_ = true;
  }

  // Accepts absolute http(s) URLs only; sets *origin to "scheme://host:port".
  bool ParseUrl(CURLU* url, std::string* origin) {
    if (curl_url_set(url, CURLUPART_URL, request_.url.c_str(), 0) != CURLUE_OK) {
      Fail(TransportError::kProtocol, "malformed upstream URL");
      return false;
    }
    auto part = [url](CURLUPart which, unsigned flags) -> std::optional<std::string> {
      char* value = nullptr;
      if (curl_url_get(url, which, &value, flags) != CURLUE_OK) return std::nullopt;
      std::string result(value);
      curl_free(value);
      return result;
    };
    const std::optional<std::string> scheme = part(CURLUPART_SCHEME, 0);
    const std::string lowered = scheme ? Lowercase(*scheme) : "";
    if (lowered != "http" && lowered != "https") {
      Fail(TransportError::kProtocol, "unsupported URL scheme '" + lowered + "' (http/https only)");
      return false;
    }
    const std::optional<std::string> host = part(CURLUPART_HOST, 0);
    const std::optional<std::string> port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
    if (!host || !port) {
      Fail(TransportError::kProtocol, "upstream URL has no host");
      return false;
    }
    // libcurl's error texts may quote the URL; keep credentials out of them.
    url_has_credentials_ = part(CURLUPART_USER, 0).has_value();
    *origin = lowered + "://" + Lowercase(*host) + ":" + *port;
    return true;
  }

  bool BuildHeaderList() {
    bool has_content_type = false;
    for (const auto& [name, value] : request_.headers) {
      const std::string lowered = Lowercase(name);
      // libcurl frames the body itself; a stale length would corrupt the stream.
      if (lowered == "content-length" || lowered == "transfer-encoding") continue;
      if (lowered == "content-type") has_content_type = true;
      // "Name;" is libcurl's spelling of a header with an empty value.
      const std::string line = value.empty() ? name + ";" : name + ": " + value;
      if (!Append(line.c_str())) return false;
    }
    // No 100-continue round trip, and no form content type made up by libcurl.
    if (!Append("Expect:")) return false;
    if (!has_content_type && !Append("Content-Type:")) return false;
    return true;
  }

  bool Append(const char* line) {
    curl_slist* next = curl_slist_append(header_list_, line);
    if (next == nullptr) return false;
    header_list_ = next;
    return true;
  }

  CURLcode Configure(CURL* easy) {
    const std::pair<CURLoption, long> longs[] = {
        {CURLOPT_FOLLOWLOCATION, 0L},
        {CURLOPT_NOSIGNAL, 1L},
        {CURLOPT_TCP_NODELAY, 1L},
        {CURLOPT_TCP_KEEPALIVE, 1L},
        {CURLOPT_TCP_KEEPIDLE, 30L},
        {CURLOPT_TCP_KEEPINTVL, 15L},
        {CURLOPT_BUFFERSIZE, kReceiveBufferBytes},
        {CURLOPT_HTTP_CONTENT_DECODING, 0L},     // bytes pass through as the upstream sent them
        {CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L},  // a proxy's CONNECT reply is not the head
        // An aborted call must not wait for a resolver thread to finish.
        {CURLOPT_QUICK_EXIT, 1L},
        {CURLOPT_CONNECTTIMEOUT_MS, std::max(1L, ToMillis(request_.connect_timeout))},
    };
    for (const auto& [option, value] : longs) {
      if (CURLcode c = curl_easy_setopt(easy, option, value); c != CURLE_OK) return c;
    }
    CURLcode c = CURLE_OK;
    auto set = [&](CURLoption option, auto value) {
      if (c == CURLE_OK) c = curl_easy_setopt(easy, option, value);
    };
    set(CURLOPT_URL, request_.url.c_str());
    set(CURLOPT_PROTOCOLS_STR, "http,https");
    set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    set(CURLOPT_SHARE, pool_->share());
    set(CURLOPT_HTTPHEADER, header_list_);
    set(CURLOPT_ERRORBUFFER, error_buffer_.data());
    set(CURLOPT_HEADERFUNCTION, &CurlCall::HeaderThunk);
    set(CURLOPT_HEADERDATA, this);
    set(CURLOPT_WRITEFUNCTION, &CurlCall::WriteThunk);
    set(CURLOPT_WRITEDATA, this);
    set(CURLOPT_PREREQFUNCTION, &CurlCall::PrereqThunk);
    set(CURLOPT_PREREQDATA, this);
    if (request_.method == "GET" && request_.body.empty()) {
      set(CURLOPT_HTTPGET, 1L);
    } else if (request_.method == "HEAD") {
      set(CURLOPT_NOBODY, 1L);
    } else {
      if (request_.method != "POST") set(CURLOPT_CUSTOMREQUEST, request_.method.c_str());
      // The body lives in request_ for as long as the transfer does.
      set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request_.body.size()));
      set(CURLOPT_POSTFIELDS, request_.body.data());
    }
    return c;
  }

  static size_t HeaderThunk(char* data, size_t size, size_t count, void* self) {
    return static_cast<CurlCall*>(self)->OnHeader(std::string_view(data, size * count));
  }
  static size_t WriteThunk(char* data, size_t size, size_t count, void* self) {
    return static_cast<CurlCall*>(self)->OnBody(std::string_view(data, size * count));
  }
  static int PrereqThunk(void* self, char*, char*, int, int) {
    static_cast<CurlCall*>(self)->request_sent_at_ = Clock::Real().Now();
    return CURL_PREREQFUNC_OK;
  }

  // One header line at a time: the status line, fields, then a blank line.
  // Interim 1xx heads are dropped; lines after the final head are trailers.
  size_t OnHeader(std::string_view line) {
    const size_t consumed = line.size();
    if (head_complete_) return consumed;
    const std::string_view text = TrimOws(line);
    if (text.empty()) {
      long code = 0;
      curl_easy_getinfo(handles_->easy, CURLINFO_RESPONSE_CODE, &code);
      if (code >= 100 && code < 200 && code != 101) {
        headers_.clear();
        return consumed;
      }
      status_ = static_cast<int>(code);
      head_complete_ = true;
      head_at_ = Clock::Real().Now();
      return consumed;
    }
    if (text.substr(0, 5) == "HTTP/") {
      headers_.clear();  // a new head begins
    } else if (line.front() == ' ' || line.front() == '\t') {
      if (!headers_.empty()) {  // obsolete line folding
        headers_.back().second += ' ';
        headers_.back().second += text;
      }
    } else if (const size_t colon = text.find(':'); colon != std::string_view::npos) {
      headers_.emplace_back(std::string(text.substr(0, colon)),
                            std::string(TrimOws(text.substr(colon + 1))));
    }
    return consumed;
  }

  size_t OnBody(std::string_view data) {
    // Backpressure: once the caller has this much unread, libcurl holds the
    // rest and stops reading the socket until Read() drains the buffer.
    if (!body_.empty() && body_.size() + data.size() > pause_bytes_) {
      paused_ = true;
      return CURL_WRITEFUNC_PAUSE;
    }
    body_.append(data);
    return data.size();
  }

  void Unpause() {
    paused_ = false;
    if (!added_) return;
    // May call OnBody() at once with the bytes libcurl held back.
    const CURLcode code = curl_easy_pause(handles_->easy, CURLPAUSE_CONT);
    if (code != CURLE_OK) Fail(MapCurlError(code, true), CurlMessage(code));
  }

  // When the head must have arrived: the first-byte timeout once the request
  // went out; before that the connect phase, bounded by libcurl (plus grace).
  SteadyTime HeadDeadline() const {
    const SteadyTime total = After(start_, request_.total_timeout);
    if (request_sent_at_) {
      return std::min(total, After(*request_sent_at_, request_.first_byte_timeout));
    }
    return std::min(total, After(After(start_, request_.connect_timeout), kConnectGrace));
  }

  void FailHeadDeadline() {
    if (!request_sent_at_) {
      Fail(TransportError::kConnect, "connect timeout after " + Millis(request_.connect_timeout));
    } else if (Clock::Real().Now() >= After(start_, request_.total_timeout)) {
      Fail(TransportError::kTimeout,
           "total timeout: no response head after " + Millis(request_.total_timeout));
    } else {
      Fail(TransportError::kTimeout,
           "first-byte timeout: no response head after " + Millis(request_.first_byte_timeout));
    }
  }

  // Lets libcurl do what it can without blocking; records completion.
  void Perform() {
    if (!added_) return;
    int running = 0;
    const CURLMcode mcode = curl_multi_perform(handles_->multi, &running);
    if (mcode != CURLM_OK) {
      return Fail(TransportError::kProtocol, std::string("libcurl: ") + curl_multi_strerror(mcode));
    }
    CollectDone();
  }

  // Waits up to `budget`, at most kMaxPollWait, for socket activity.
  void Poll(Duration budget) {
    if (!added_) return;
    const long wait_ms = std::clamp(ToMillis(budget), 1L, static_cast<long>(kMaxPollWait.count()));
    const CURLMcode mcode =
        curl_multi_poll(handles_->multi, nullptr, 0, static_cast<int>(wait_ms), nullptr);
    if (mcode != CURLM_OK) {
      Fail(TransportError::kProtocol, std::string("libcurl: ") + curl_multi_strerror(mcode));
    }
  }

  void CollectDone() {
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(handles_->multi, &queued)) {
      if (msg->msg != CURLMSG_DONE || msg->easy_handle != handles_->easy) continue;
      const CURLcode code = msg->data.result;
      if (code == CURLE_OK) {
        done_ = true;
        Release(/*reusable=*/true);
      } else {
        const bool connected = request_sent_at_.has_value();
        if (code == CURLE_OPERATION_TIMEDOUT && !connected) {
          Fail(TransportError::kConnect, "connect timeout: " + CurlMessage(code));
        } else {
          Fail(MapCurlError(code, connected), CurlMessage(code));
        }
      }
      return;
    }
  }

  std::string CurlMessage(CURLcode code) const {
    if (error_buffer_[0] != '\0' && !url_has_credentials_) return std::string(error_buffer_.data());
    return curl_easy_strerror(code);
  }

  // Records the first failure and aborts the transfer (its connection closes).
  void Fail(TransportError error, std::string message) {
    if (error_ == TransportError::kNone) {
      error_ = error;
      error_message_ = std::move(message);
    }
    Release(/*reusable=*/false);
  }

  // Takes the easy handle out of its multi handle: a finished transfer leaves
  // its connection in the multi handle's cache, an unfinished one has it
  // closed. The pair goes back to the pool only in the first case.
  void Release(bool reusable) {
    if (handles_ == nullptr) return;
    if (added_) curl_multi_remove_handle(handles_->multi, handles_->easy);
    added_ = false;
    // Nothing of this call may stay reachable from the pooled easy handle.
    curl_easy_reset(handles_->easy);
    curl_slist_free_all(header_list_);
    header_list_ = nullptr;
    if (reusable) {
      pool_->Give(origin_, std::move(handles_));
    } else {
      handles_.reset();
    }
  }

  const std::shared_ptr<CurlPool> pool_;
  const UpstreamRequest request_;
  const SteadyTime start_;
  size_t pause_bytes_ = kPauseBytes;

  std::string origin_;
  std::unique_ptr<CurlHandles> handles_;
  bool added_ = false;  // the easy handle is in the multi handle
  curl_slist* header_list_ = nullptr;
  std::array<char, CURL_ERROR_SIZE> error_buffer_{};
  bool url_has_credentials_ = false;

  std::optional<SteadyTime> request_sent_at_;
  Headers headers_;  // of the head being received
  int status_ = 0;
  bool head_complete_ = false;
  SteadyTime head_at_{};
  UpstreamHead head_;
  bool head_returned_ = false;

  std::string body_;  // received, not yet read
  bool paused_ = false;
  bool done_ = false;  // the transfer completed; body_ holds the rest
  TransportError error_ = TransportError::kNone;
  std::string error_message_;
};

class CurlUpstreamClient final : public UpstreamClient {
 public:
  explicit CurlUpstreamClient(std::shared_ptr<CurlPool> pool) : pool_(std::move(pool)) {}

  std::unique_ptr<UpstreamCall> Start(UpstreamRequest request) override {
    return std::make_unique<CurlCall>(pool_, std::move(request));
  }

 private:
  const std::shared_ptr<CurlPool> pool_;
};

}  // namespace

Result<std::unique_ptr<UpstreamClient>> NewCurlUpstreamClient(const CurlClientOptions& options) {
  static std::once_flag once;
  static CURLcode init_result = CURLE_OK;
  std::call_once(once, [] { init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init_result != CURLE_OK) {
    return FailedPreconditionError(std::string("curl_global_init: ") +
                                   curl_easy_strerror(init_result));
  }
  const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
  if (info == nullptr || info->version_num < 0x075500) {
    return FailedPreconditionError("libcurl 7.85 or newer is required");
  }
  auto pool = std::make_shared<CurlPool>(options);
  if (!pool->Init()) return FailedPreconditionError("libcurl: cannot create the share handle");
  return std::unique_ptr<UpstreamClient>(std::make_unique<CurlUpstreamClient>(std::move(pool)));
}

}  // namespace switchboard
