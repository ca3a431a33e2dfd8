// server/demo.h
// `switchboard serve --demo`: two OpenAI-compatible mock upstreams in the
// process (httplib servers on 127.0.0.1, ephemeral ports, their own
// threads) and the backends that point at them, so a first curl works with
// no account anywhere.
//
//   DemoUpstreams demo;
//   SWITCHBOARD_RETURN_IF_ERROR(demo.Start());
//   SWITCHBOARD_RETURN_IF_ERROR(UpsertDemoBackends(storage, cipher, demo, now));
//
// "demo-primary" (pool primary) answers every 4th request with 429 and
// Retry-After: 2, so failover to "demo-fallback" (pool fallback) shows in
// the x-switchboard-backend header. Both serve "gpt-4o-mini" and, through
// "*", any model name; answers echo the requested model.
#ifndef SWITCHBOARD_SERVER_DEMO_H_
#define SWITCHBOARD_SERVER_DEMO_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "switchboard/secrets.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"

namespace switchboard::server {

class HttpServer;

struct DemoOptions {
  // Pause between two SSE chunks of a streamed answer.
  std::chrono::milliseconds chunk_interval{20};
  // demo-primary answers every Nth request with 429 (0: never).
  int rate_limit_every = 4;
  int retry_after_seconds = 2;
};

// The fake API key both mock upstreams expect (a wrong one gets 401).
inline constexpr std::string_view kDemoApiKey = "sk-demo-switchboard-not-a-real-key";

// One mock OpenAI-compatible upstream: POST /v1/chat/completions (JSON or
// SSE), /v1/completions (JSON or SSE), /v1/embeddings (a fixed small vector,
// float or base64), GET /v1/models. Thread-safe.
class MockOpenAIUpstream {
 public:
  // `name` appears in answers; `rate_limit_every` > 0 makes every Nth
  // request a 429 with Retry-After.
  MockOpenAIUpstream(std::string name, DemoOptions options, int rate_limit_every);
  ~MockOpenAIUpstream();  // Stop()
  MockOpenAIUpstream(const MockOpenAIUpstream&) = delete;
  MockOpenAIUpstream& operator=(const MockOpenAIUpstream&) = delete;

  // Binds 127.0.0.1 on an ephemeral port and serves on its own thread.
  // kUnavailable if it cannot bind.
  Status Start();
  void Stop();

  int port() const { return port_; }
  std::string base_url() const;  // "http://127.0.0.1:PORT/v1"
  const std::string& name() const { return name_; }
  int64_t requests() const { return requests_.load(); }

 private:
  void Register();

  const std::string name_;
  const DemoOptions options_;
  const int rate_limit_every_;
  std::unique_ptr<HttpServer> http_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int64_t> requests_{0};
  std::atomic<int64_t> ids_{0};
};

// Both demo upstreams. Thread-safe.
class DemoUpstreams {
 public:
  explicit DemoUpstreams(DemoOptions options = {});
  ~DemoUpstreams();  // Stop()

  Status Start();
  void Stop();

  const MockOpenAIUpstream& primary() const { return primary_; }
  const MockOpenAIUpstream& fallback() const { return fallback_; }

 private:
  MockOpenAIUpstream primary_;
  MockOpenAIUpstream fallback_;
};

// Creates "demo-primary" and "demo-fallback" (source "demo") in `storage`,
// or updates them by name to point at `demo`'s current ports. Their fake key
// is encrypted like any other.
Status UpsertDemoBackends(Storage& storage, const KeyCipher& cipher, const DemoUpstreams& demo,
                          SystemTime now);

}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_DEMO_H_
