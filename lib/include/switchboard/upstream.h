// switchboard/upstream.h
// The seam between the proxy engine and the network: one HTTP exchange with
// an upstream, read as it arrives (pull, on the caller's thread). The shipped
// implementation uses libcurl with a process-wide connection pool; tests use
// fakes.
//
//   auto client = switchboard::NewCurlUpstreamClient({});
//   auto call = client->Start(request);
//   UpstreamHead head = call->AwaitHead(cancelled);      // status + headers, or an error
//   std::string chunk;
//   while (call->Read(&chunk, cancelled) == ReadResult::kData) Forward(chunk);
#ifndef SWITCHBOARD_UPSTREAM_H_
#define SWITCHBOARD_UPSTREAM_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "switchboard/clock.h"
#include "switchboard/cooldown_manager.h"
#include "switchboard/status.h"

namespace switchboard {

struct UpstreamRequest {
  std::string url;  // absolute http(s) URL
  std::string method = "POST";
  Headers headers;  // sent as given (the caller has filtered them)
  std::string body;
  // Limits for this exchange.
  Duration connect_timeout = std::chrono::seconds(10);
  Duration first_byte_timeout = std::chrono::seconds(60);  // request sent -> response head
  Duration idle_timeout = std::chrono::seconds(60);        // between body bytes
  Duration total_timeout = std::chrono::seconds(600);      // the whole exchange
};

struct UpstreamHead {
  int status = 0;  // 0 when no response head arrived
  Headers headers;
  TransportError error = TransportError::kNone;  // set when status == 0
  std::string error_message;                     // human-readable, no secrets
  Duration ttfb{};                               // start -> head
};

enum class ReadResult {
  kData,   // bytes were appended
  kEnd,    // the body is complete
  kError,  // failed; see error()
};

// Polled while waiting, at least every 100 ms: true aborts the exchange.
using CancelFn = std::function<bool()>;

// One exchange. Not thread-safe; one owner. Destroying it aborts the
// exchange if it has not finished.
class UpstreamCall {
 public:
  virtual ~UpstreamCall() = default;

  // Waits for the response head (or failure). Call once, first.
  virtual UpstreamHead AwaitHead(const CancelFn& cancelled) = 0;

  // Appends body bytes to *out (the ones already received, else waits for
  // some). kEnd once all were delivered; kError with error() set on a
  // timeout (idle or total), a reset, a malformed response or cancellation.
  virtual ReadResult Read(std::string* out, const CancelFn& cancelled) = 0;

  virtual TransportError error() const = 0;
  virtual const std::string& error_message() const = 0;
};

// Thread-safe: Start() may be called from many threads at once.
class UpstreamClient {
 public:
  virtual ~UpstreamClient() = default;
  virtual std::unique_ptr<UpstreamCall> Start(UpstreamRequest request) = 0;
};

struct CurlClientOptions {
  // Idle connections kept per host for reuse.
  long max_host_connections = 0;  // 0 = no cap
  long max_idle_connections = 256;
  // Largest response body a non-streaming read may buffer.
  size_t max_buffer_bytes = 64 << 20;
};

// libcurl: http/https only, redirects never followed, TCP_NODELAY, no
// signals, connections reused across requests and threads.
// kFailedPrecondition if libcurl cannot be initialized.
Result<std::unique_ptr<UpstreamClient>> NewCurlUpstreamClient(const CurlClientOptions& options);

}  // namespace switchboard

#endif  // SWITCHBOARD_UPSTREAM_H_
