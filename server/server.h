// server/server.h
// The switchboard server: the library's Proxy behind an HTTP front end
// (OpenAI-compatible endpoints, /v1/messages, /v1/models, /healthz,
// /metrics), with its store, master key, optional import and demo upstreams.
//
//   switchboard::server::Server server({.listen = "127.0.0.1:0", .db_path = ":memory:"});
//   if (Status s = server.Start(); !s.ok()) return Fail(s);   // binds the port
//   std::printf("listening on %s\n", server.url().c_str());
//   std::thread t([&] { (void)server.Run(); });                 // serves until Shutdown()
//   server.Shutdown();                                          // drains, then Run() returns
//   t.join();
#ifndef SWITCHBOARD_SERVER_SERVER_H_
#define SWITCHBOARD_SERVER_SERVER_H_

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "admin_api.h"
#include "admin_auth.h"
#include "demo.h"
#include "http_server.h"
#include "switchboard/admin.h"
#include "switchboard/metrics.h"
#include "switchboard/proxy.h"
#include "switchboard/router.h"
#include "switchboard/secrets.h"
#include "switchboard/shared_state.h"
#include "switchboard/status.h"
#include "switchboard/storage.h"
#include "switchboard/storage_writer.h"
#include "switchboard/upstream.h"

namespace switchboard::server {

struct ServerOptions {
  // HOST:PORT ("[::1]:8080" for IPv6). Port 0 picks a free port; see port().
  std::string listen = "127.0.0.1:8080";
  // The SQLite database; ":memory:" for a private in-memory store. Empty:
  // "switchboard.db", or with `demo` a fresh temporary directory that is
  // removed when the server is destroyed.
  std::string db_path = "switchboard.db";
  // A PostgreSQL URL ("postgres://user:pw@host:5432/db"); when set, the
  // store instead of db_path. The master key must then come from
  // $master_key_env or master_key_file (every instance needs the same key).
  std::string store_url;
  // The master key file; empty means beside the database, "<db_path>.key"
  // (with an in-memory store and no $master_key_env: a key that dies with
  // the process).
  std::string master_key_file;
  // Environment variable holding the base64 master key; checked first.
  std::string master_key_env = "SWITCHBOARD_MASTER_KEY";
  // A JSON file of backends (see ParseBackendImport) created or updated by
  // name at start, with source "import". Empty: none.
  std::string import_file;
  // A Redis URL ("redis://[:password@]host:port[/db]"); when set, rate
  // limits, concurrency caps and backend health are shared with every
  // instance using the same Redis, and admin changes are announced to them
  // (see docs/scale-out.md). Empty: this instance alone.
  std::string shared_state_url;
  // Starts the built-in mock upstreams and their backends (see demo.h).
  bool demo = false;
  DemoOptions demo_options;
  // The admin token: $admin_token_env, else this file (first line), else a
  // token generated on first start, printed once, and kept only as a hash
  // in "<db_path>.admin-token.sha256".
  std::string admin_token_env = "SWITCHBOARD_ADMIN_TOKEN";
  std::string admin_token_file;
  // Where the generated admin token is printed (once). Null: stderr.
  std::FILE* admin_token_out = nullptr;
  // How often usage older than the config's retention is deleted.
  std::chrono::seconds retention_interval = std::chrono::hours(1);
  // When non-empty, every /v1 request needs one of these keys, as
  // "Authorization: Bearer KEY" or "x-api-key: KEY".
  std::vector<std::string> client_keys;
  // On Shutdown(): how long requests in flight may take to finish before
  // their streams are ended with an error event.
  std::chrono::milliseconds drain_timeout = std::chrono::seconds(10);
  HttpServerOptions http;
  // Most proxied requests in flight at once, streams included; past it a
  // request gets 503 "server_overloaded" with Retry-After: 1 at once, and the
  // connection threads left serve /healthz, /metrics and the admin API.
  // 0: UsableThreads(http.max_threads). At most that (Start() refuses more).
  size_t max_in_flight = 0;
  // Upstream connect timeout and the deadline for a whole request across
  // attempts (--connect-timeout, --request-timeout).
  ProxyOptions proxy;
  // The upstream client; not owned, must outlive the server. Null: libcurl.
  UpstreamClient* upstream = nullptr;
};

// Not thread-safe to set up: Start(), then Run() on one thread; Shutdown()
// may be called from any thread at any time after Start().
class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // REQUIRES: Run() has returned, or was never called
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens the store and master key, applies the import file, starts the demo
  // upstreams, builds the router and proxy, and binds the listening socket
  // (so port() is known). kInvalidArgument for a bad listen address or
  // import file (the message names the field, never a key); kUnavailable
  // when the port cannot be bound; other codes from the store and key
  // loading.
  Status Start();

  // Serves until Shutdown(). Returns once every connection has closed and
  // the usage queue is flushed (its error, if the store refused it).
  Status Run();

  // Graceful shutdown: stops accepting, lets requests in flight finish for up
  // to drain_timeout, then ends the streams still running with an error
  // event and closes what is left. Returns at once; Run() returns when done.
  // Idempotent. `immediate` skips the drain period (a second Ctrl-C).
  void Shutdown(bool immediate = false);

  // After Start().
  const std::string& host() const { return host_; }
  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:8080", "http://[::1]:8080"
  const std::string& db_path() const { return db_path_; }

  Storage& storage() { return *storage_; }
  Router& router() { return *router_; }
  Proxy& proxy() { return *proxy_; }
  Metrics& metrics() { return *metrics_; }
  AdminService& admin() { return *admin_; }
  HttpServer& http() { return *http_; }
  const DemoUpstreams* demo() const { return demo_.get(); }

 private:
  Status OpenStore();
  Status OpenPostgresStore();
  void RegisterRoutes();
  void HandleProxy(const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& reader, Api api, const std::string& endpoint);
  // A proxied request's place under max_in_flight, held until its response
  // (or stream) is done; empty when the gateway is full.
  class InFlightSlot;
  void WriteProxyResponse(Api api, ProxyResponse response, InFlightSlot slot,
                          httplib::Response& res);
  void HandleUnrouted(const httplib::Request& req, httplib::Response& res);
  bool Authorized(const httplib::Request& req) const;
  int64_t BodyLimit() const;
  void Drain();
  void RetentionLoop();
  Status OpenSharedState();
  // Reloads backends, config and client keys when another instance changed
  // them (signalled by the shared state), off the shared state's thread.
  void ReloadLoop();
  // Wakes ReloadLoop(); callable from any thread.
  void RequestReload();
  void StopReloadLoop();

  const ServerOptions options_;
  std::string host_;
  int port_ = 0;
  std::string db_path_;
  std::string temp_dir_;  // the demo's store directory, removed on destruction
  std::vector<std::array<unsigned char, 32>> client_key_hashes_;  // SHA-256
  size_t max_in_flight_ = 0;
  std::atomic<size_t> in_flight_{0};  // proxied requests holding an InFlightSlot

  std::unique_ptr<DemoUpstreams> demo_;
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<KeyCipher> cipher_;
  std::unique_ptr<StorageWriter> writer_;
  std::unique_ptr<SharedState> shared_;  // outlives router_, which listens to it
  std::unique_ptr<Router> router_;
  std::unique_ptr<UpstreamClient> owned_upstream_;
  UpstreamClient* upstream_ = nullptr;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<Proxy> proxy_;
  std::unique_ptr<AdminService> admin_;
  std::optional<AdminAuth> admin_auth_;
  std::unique_ptr<AdminApi> admin_api_;
  std::unique_ptr<HttpServer> http_;

  std::mutex shutdown_mu_;
  bool shutdown_requested_ = false;  // guarded by shutdown_mu_
  bool immediate_ = false;           // guarded by shutdown_mu_
  std::thread drain_thread_;         // guarded by shutdown_mu_
  std::condition_variable retention_wake_;  // with shutdown_mu_
  bool retention_stop_ = false;       // guarded by shutdown_mu_
  std::thread retention_thread_;

  std::mutex reload_mu_;
  std::condition_variable reload_wake_;  // with reload_mu_
  bool reload_pending_ = false;          // guarded by reload_mu_
  bool reload_stop_ = false;             // guarded by reload_mu_
  std::thread reload_thread_;
};


}  // namespace switchboard::server

#endif  // SWITCHBOARD_SERVER_SERVER_H_
