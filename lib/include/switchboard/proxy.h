// switchboard/proxy.h
// The proxy engine: runs a Router plan against real upstreams, with
// failover until the first byte, live SSE streaming, usage accounting and
// one usage record per request. A backend whose api differs from the
// client's format gets a translated request, and the client a translated
// answer, streams included (docs/translation.md). No HTTP server inside: the caller (the
// bundled server, or an embedding service) hands it a request and writes
// the response it returns.
//
//   Proxy proxy(router, *upstream_client, *key_cipher, &writer, clock, {}, &metrics);
//   ProxyResponse r = proxy.Handle({.endpoint = "/chat/completions", .body = body});
//   Send(r.status, r.headers, r.body);
//   std::string chunk;
//   while (r.stream && r.stream->Next(&chunk)) SendChunk(chunk);   // SSE, as it arrives
#ifndef SWITCHBOARD_PROXY_H_
#define SWITCHBOARD_PROXY_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "switchboard/clock.h"
#include "switchboard/metrics.h"
#include "switchboard/router.h"
#include "switchboard/secrets.h"
#include "switchboard/storage_writer.h"
#include "switchboard/upstream.h"

namespace switchboard {

struct ProxyRequest {
  // The client's wire format (the endpoint it called).
  Api api = Api::kOpenAI;
  // The path after /v1: "/chat/completions", "/completions", "/embeddings",
  // "/messages".
  std::string endpoint;
  // The client's JSON body, as received.
  std::string body;
  // Echoed as x-request-id and kept in the usage record. Generated when empty.
  std::string request_id;
  // The client's headers. Only an allowlist reaches the upstream
  // (openai-beta, anthropic-beta, anthropic-version for anthropic clients);
  // never credentials, cookies, hop-by-hop or host headers.
  Headers client_headers;
  // Polled at least every 100 ms while waiting on an upstream: true means
  // the client went away, and the upstream transfer is aborted.
  CancelFn client_gone;
};

// A response body read as it arrives. Not thread-safe; one owner. Dropping
// it before the end aborts the upstream transfer (a client that went away)
// and records the request with what was delivered.
class ProxyStream {
 public:
  virtual ~ProxyStream() = default;
  // Appends the next bytes for the client to *out (whole SSE events) and
  // returns true; false once the stream has ended. A failure after the first
  // byte ends with an error event ("event: error" + an error in the client's
  // shape: OpenAI's, or Anthropic's for /messages) and no [DONE] or
  // message_stop, so a client can tell it from a complete answer.
  virtual bool Next(std::string* out) = 0;
  // Ends the stream now on the gateway's side (a shutdown, say): the
  // upstream transfer is aborted and the request recorded with
  // `client_status` and `reason` instead of as a client that went away.
  // Next() returns false afterwards. The caller tells the client.
  virtual void Abort(int client_status, const std::string& reason) {
    (void)client_status;
    (void)reason;
  }
};

struct ProxyResponse {
  int status = 0;
  // content-type, x-switchboard-backend, x-switchboard-attempts,
  // x-request-id, retry-after (429), and the upstream's safe headers.
  Headers headers;
  // The whole body, unless `stream` is set.
  std::string body;
  // Set for a streamed 2xx: the body comes from here instead.
  std::unique_ptr<ProxyStream> stream;
};

struct ProxyOptions {
  // Largest request body accepted (the server enforces it while reading;
  // the engine checks again). 0: the live config's body_limit_bytes.
  int64_t body_limit_bytes = 0;
  // Upstream connect timeout; the backend's timeout_seconds bounds the
  // first byte, the idle gap in a stream, and the whole exchange.
  Duration connect_timeout = std::chrono::seconds(10);
  // Deadline for a whole request across attempts (0 = sum of the backends'
  // timeouts).
  Duration request_timeout{};
};

// Thread-safe. Everything given by reference must outlive the proxy.
class Proxy {
 public:
  // `keys` decrypts the backends' API keys (plaintext stays in sodium
  // memory, cached per backend); `usage` receives one UsageRecord per
  // request (may be null); `metrics` may be null.
  Proxy(Router& router, UpstreamClient& upstream, const KeyCipher* keys, StorageWriter* usage,
        const Clock& clock, ProxyOptions options = {}, Metrics* metrics = nullptr);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Serves one request. Blocks until the response head is decided: the
  // first upstream that answered 2xx (its body or its stream), or the final
  // error after failover. Never throws.
  ProxyResponse Handle(ProxyRequest request);

  // GET /v1/models: the canonical models served, OpenAI list form.
  std::string ModelsJson() const;

 private:
  class Stream;
  friend class Stream;
  struct CallContext;

  // The plaintext key for `backend`, decrypting (once per ciphertext) on a
  // miss. Empty when the backend has no key; an error if it cannot decrypt.
  Result<std::shared_ptr<const SecretString>> KeyFor(const Backend& backend);
  void Finish(CallContext& ctx, int status, const std::string& error);

  Router& router_;
  UpstreamClient& upstream_;
  const KeyCipher* keys_;
  StorageWriter* usage_;
  const Clock& clock_;
  const ProxyOptions options_;
  Metrics* metrics_;

  struct CachedKey {
    std::string ciphertext;
    std::shared_ptr<const SecretString> plain;
  };
  std::shared_mutex keys_mu_;
  std::unordered_map<std::string, CachedKey> key_cache_;  // guarded by keys_mu_, by backend id
};

// The OpenAI error object: {"error":{"message","type","param","code"}}.
std::string OpenAIErrorJson(std::string_view message, std::string_view type,
                            std::string_view code, std::string_view param = "");

// An error body in the shape a client of `api` expects: OpenAI's above, or
// Anthropic's {"type":"error","error":{"type","message"}} (its type from the
// HTTP status).
std::string ErrorJsonFor(Api api, int http_status, std::string_view message,
                         std::string_view type, std::string_view code,
                         std::string_view param = "");

// Token usage reported in a JSON response or an SSE stream's events:
// OpenAI "usage": {"prompt_tokens","completion_tokens"}, Anthropic
// "usage": {"input_tokens","output_tokens"} (message_start / message_delta).
struct TokenUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool found = false;
};
TokenUsage ExtractUsage(std::string_view json);

// Splits an SSE byte stream into events as the bytes arrive. An event ends
// at a blank line (\n\n, \r\n\r\n or \r\r). Not thread-safe.
class SseParser {
 public:
  // Appends `bytes`; complete events (each with its terminating blank line)
  // are appended to *events as they close.
  void Feed(std::string_view bytes, std::vector<std::string>* events);
  // Bytes of an event not yet terminated.
  const std::string& pending() const { return buffer_; }
  // The data: field(s) of a raw event, joined with '\n'. "" when none.
  static std::string Data(std::string_view event);
  // The event: field, "" when none.
  static std::string EventType(std::string_view event);

 private:
  std::string buffer_;
  size_t scanned_ = 0;
};

}  // namespace switchboard

#endif  // SWITCHBOARD_PROXY_H_
