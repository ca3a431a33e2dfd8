#include "server.h"

#include <sodium.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <utility>

#include "cli.h"
#include "errors.h"
#include "http_util.h"
#include "import.h"
#include "switchboard/postgres_storage.h"
#include "switchboard/redis_shared_state.h"

namespace switchboard::server {

namespace {

using httplib::ContentReader;
using httplib::Request;
using httplib::Response;
using SteadyClock = std::chrono::steady_clock;

struct ProxyRoute {
  const char* path;
  const char* endpoint;  // the path after /v1
  Api api;
};
constexpr ProxyRoute kProxyRoutes[] = {
    {"/v1/chat/completions", "/chat/completions", Api::kOpenAI},
    {"/v1/completions", "/completions", Api::kOpenAI},
    {"/v1/embeddings", "/embeddings", Api::kOpenAI},
    {"/v1/messages", "/messages", Api::kAnthropic},
};

// Every path we serve and the methods it takes, for 405 vs 404.
struct KnownPath {
  std::string_view path;
  std::string_view allow;
};
constexpr KnownPath kKnownPaths[] = {
    {"/v1/chat/completions", "POST"}, {"/v1/completions", "POST"}, {"/v1/embeddings", "POST"},
    {"/v1/messages", "POST"},         {"/v1/models", "GET, HEAD"}, {"/healthz", "GET, HEAD"},
    {"/metrics", "GET, HEAD"},
};

// The largest body any Config allows (ValidateConfig: 1 KiB..1 GiB). httplib's
// own limit is only a backstop: the handlers enforce the configured one while
// reading.
constexpr size_t kMaxPayload = size_t{1} << 30;

Api ApiForPath(std::string_view path) {
  return path.rfind("/v1/messages", 0) == 0 ? Api::kAnthropic : Api::kOpenAI;
}


// The error event that ends a stream the server had to cut off.
std::string ShutdownErrorEvent(Api api) {
  constexpr std::string_view kMessage =
      "The server is shutting down; the response was cut off before it was complete.";
  return "event: error\ndata: " + ErrorBody(api, 503, kMessage, "server_shutting_down") + "\n\n";
}

// Response headers httplib writes itself, or that describe the upstream's
// connection rather than ours.
bool IsHopHeader(std::string_view name) {
  for (std::string_view h : {"content-length", "transfer-encoding", "connection", "keep-alive",
                             "content-type", "content-encoding", "upgrade", "trailer"}) {
    if (EqualsIgnoreCase(name, h)) return true;
  }
  return false;
}

std::string MakeTempDir() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string templ = (base / "switchboard-demo-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) return "";
  return templ;
}

}  // namespace

Server::Server(ServerOptions options) : options_(std::move(options)) {}

Server::~Server() {
  std::thread drain;
  {
    std::lock_guard<std::mutex> lock(shutdown_mu_);
    drain = std::move(drain_thread_);
  }
  if (drain.joinable()) drain.join();
  // Stop serving before what the handlers use goes away, and close the store
  // before removing its directory.
  http_.reset();
  StopReloadLoop();
  admin_api_.reset();
  admin_.reset();
  proxy_.reset();
  metrics_.reset();
  owned_upstream_.reset();
  router_.reset();
  shared_.reset();
  writer_.reset();
  storage_.reset();
  demo_.reset();
  if (!temp_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(temp_dir_, ec);
  }
}

std::string Server::url() const { return "http://" + FormatHostPort(host_, port_); }

int64_t Server::BodyLimit() const { return router_->snapshot()->config().body_limit_bytes; }

Status Server::OpenStore() {
  if (!options_.store_url.empty()) return OpenPostgresStore();
  db_path_ = options_.db_path;
  if (db_path_.empty() && options_.demo) {
    temp_dir_ = MakeTempDir();
    if (temp_dir_.empty()) {
      return UnavailableError(
          std::string("cannot create a temporary directory for the demo store: ") +
          std::strerror(errno));
    }
    db_path_ = temp_dir_ + "/switchboard.db";
  } else if (db_path_.empty()) {
    db_path_ = "switchboard.db";
  }

  MasterKeyOptions key_options;
  key_options.env_var = options_.master_key_env;
  key_options.key_file = options_.master_key_file;
  if (key_options.key_file.empty() && db_path_ != ":memory:")
    key_options.key_file = db_path_ + ".key";
  key_options.create_if_missing = true;
  const bool env_set =
      !options_.master_key_env.empty() && std::getenv(options_.master_key_env.c_str()) != nullptr;
  Result<MasterKey> key =
      key_options.key_file.empty() && !env_set ? MasterKey::Generate() : LoadMasterKey(key_options);
  if (!key.ok()) {
    return Status(key.status().code(), "master key: " + key.status().message());
  }
  Result<std::unique_ptr<KeyCipher>> cipher = KeyCipher::Create(*std::move(key));
  if (!cipher.ok()) return cipher.status();
  cipher_ = *std::move(cipher);

  Result<std::unique_ptr<Storage>> storage = OpenSqliteStorage({.path = db_path_});
  if (!storage.ok()) {
    return Status(storage.status().code(),
                  "database " + db_path_ + ": " + storage.status().message());
  }
  storage_ = *std::move(storage);
  return Status::Ok();
}

// A PostgreSQL store is shared by every instance, so nothing is kept beside
// it: the master key must be given (a generated one would differ per
// instance), and a generated admin token lives only in this process.
Status Server::OpenPostgresStore() {
  const bool env_set =
      !options_.master_key_env.empty() && std::getenv(options_.master_key_env.c_str()) != nullptr;
  if (!env_set && options_.master_key_file.empty()) {
    return FailedPreconditionError("with a PostgreSQL store, give the master key in $" +
                                   options_.master_key_env +
                                   " or --master-key-file (every instance needs the same key)");
  }
  MasterKeyOptions key_options;
  key_options.env_var = options_.master_key_env;
  key_options.key_file = options_.master_key_file;
  key_options.create_if_missing = true;
  Result<MasterKey> key = LoadMasterKey(key_options);
  if (!key.ok()) return Status(key.status().code(), "master key: " + key.status().message());
  Result<std::unique_ptr<KeyCipher>> cipher = KeyCipher::Create(*std::move(key));
  if (!cipher.ok()) return cipher.status();
  cipher_ = *std::move(cipher);

  db_path_ = RedactPostgresUrl(options_.store_url);  // what db_path() shows
  Result<std::unique_ptr<Storage>> storage = OpenPostgresStorage({.url = options_.store_url});
  if (!storage.ok()) {
    return Status(storage.status().code(), "store " + RedactPostgresUrl(options_.store_url) +
                                               ": " + storage.status().message());
  }
  storage_ = *std::move(storage);
  return Status::Ok();
}

Status Server::OpenSharedState() {
  if (options_.shared_state_url.empty()) return Status::Ok();
  RedisSharedStateOptions redis;
  redis.url = options_.shared_state_url;
  // Every proxied request to a limited backend takes a connection for a
  // round trip or two; a few more than the cores keeps them from queueing.
  redis.max_connections = 16;
  Result<std::unique_ptr<SharedState>> shared = OpenRedisSharedState(redis);
  if (!shared.ok()) {
    return Status(shared.status().code(), "shared state: " + shared.status().message());
  }
  shared_ = *std::move(shared);
  router_->ShareState(
      shared_.get(),
      [this] { RequestReload(); },
      [this](bool connected) {
        if (connected) {
          std::fprintf(stderr,
                       "switchboard: shared state reachable again: limits are shared by %d "
                       "instances\n",
                       shared_->instances());
          RequestReload();  // changes announced while it was away were missed
        } else {
          std::fprintf(stderr,
                       "switchboard: shared state unreachable: each backend's limits are "
                       "divided by %d (the instances last seen) until it is back\n",
                       router_->limit_divisor());
        }
      });
  if (!shared_->connected()) {
    std::fprintf(stderr,
                 "switchboard: shared state %s unreachable at start: each backend's limits are "
                 "divided by %d until it is reachable\n",
                 RedactRedisUrl(options_.shared_state_url).c_str(), router_->limit_divisor());
  } else {
    std::fprintf(stderr, "switchboard: sharing limits and backend health through %s (%d instances)\n",
                 RedactRedisUrl(options_.shared_state_url).c_str(), shared_->instances());
  }
  return Status::Ok();
}

void Server::RequestReload() {
  {
    std::lock_guard<std::mutex> lock(reload_mu_);
    reload_pending_ = true;
  }
  reload_wake_.notify_all();
}

void Server::ReloadLoop() {
  std::unique_lock<std::mutex> lock(reload_mu_);
  for (;;) {
    reload_wake_.wait(lock, [this] { return reload_pending_ || reload_stop_; });
    if (reload_stop_) return;
    reload_pending_ = false;
    lock.unlock();
    Status routed = admin_->RefreshRouter();
    Status keys = admin_->ReloadClientKeys();
    if (!routed.ok() || !keys.ok()) {
      std::fprintf(stderr, "switchboard: reloading another instance's change failed: %s\n",
                   (!routed.ok() ? routed : keys).message().c_str());
    }
    lock.lock();
  }
}

void Server::StopReloadLoop() {
  {
    std::lock_guard<std::mutex> lock(reload_mu_);
    reload_stop_ = true;
  }
  reload_wake_.notify_all();
  if (reload_thread_.joinable()) reload_thread_.join();
}

Status Server::Start() {
  if (http_) return FailedPreconditionError("the server was started already");
  Result<ListenAddress> listen = ParseListenAddress(options_.listen);
  if (!listen.ok()) {
    return InvalidArgumentError("listen address " + options_.listen + ": " +
                                listen.status().message());
  }
  const size_t usable_threads = UsableThreads(options_.http.max_threads);
  if (options_.max_in_flight > usable_threads) {
    return InvalidArgumentError(
        "max in flight " + std::to_string(options_.max_in_flight) + " leaves too few of the " +
            std::to_string(options_.http.max_threads) +
            " connection threads for health checks and the admin API: at most " +
            std::to_string(usable_threads),
        "max_in_flight");
  }
  max_in_flight_ = options_.max_in_flight > 0 ? options_.max_in_flight : usable_threads;
  SWITCHBOARD_RETURN_IF_ERROR(InitCrypto());
  SWITCHBOARD_RETURN_IF_ERROR(OpenStore());
  const SystemTime now = Clock::Real().WallNow();

  if (!options_.import_file.empty()) {
    Result<ImportSummary> imported =
        ImportBackendsFile(options_.import_file, *storage_, *cipher_, now);
    if (!imported.ok()) {
      const Status& s = imported.status();
      std::string message = "import file " + options_.import_file + ": ";
      if (!s.param().empty()) message += s.param() + ": ";
      return Status(s.code(), message + s.message(), s.param());
    }
    std::fprintf(stderr, "switchboard: imported %s: %d created, %d updated, %d unchanged\n",
                 options_.import_file.c_str(), imported->created, imported->updated,
                 imported->unchanged);
  }

  if (options_.demo) {
    demo_ = std::make_unique<DemoUpstreams>(options_.demo_options);
    SWITCHBOARD_RETURN_IF_ERROR(demo_->Start());
    SWITCHBOARD_RETURN_IF_ERROR(UpsertDemoBackends(*storage_, *cipher_, *demo_, now));
  }

  writer_ = std::make_unique<StorageWriter>(*storage_);
  router_ = std::make_unique<Router>(Clock::Real(), writer_.get());
  SWITCHBOARD_RETURN_IF_ERROR(OpenSharedState());
  SWITCHBOARD_RETURN_IF_ERROR(router_->LoadFrom(*storage_));

  upstream_ = options_.upstream;
  if (upstream_ == nullptr) {
    Result<std::unique_ptr<UpstreamClient>> client = NewCurlUpstreamClient({});
    if (!client.ok()) return client.status();
    owned_upstream_ = *std::move(client);
    upstream_ = owned_upstream_.get();
  }
  admin_ = std::make_unique<AdminService>(*storage_, *router_, *cipher_, Clock::Real());
  if (shared_) {
    admin_->SetChangeHook([shared = shared_.get()] {
      if (Status s = shared->AnnounceChange(); !s.ok()) {
        std::fprintf(stderr,
                     "switchboard: could not announce a change to the other instances (%s); "
                     "they pick it up when the shared state is back\n",
                     s.message().c_str());
      }
    });
    reload_thread_ = std::thread([this] { ReloadLoop(); });
  }
  AdminAuthOptions auth_options;
  auth_options.env_var = options_.admin_token_env;
  auth_options.token_file = options_.admin_token_file;
  if (db_path_ != ":memory:" && options_.store_url.empty()) {
    auth_options.hash_file = db_path_ + ".admin-token.sha256";
  }
  Result<AdminAuth> auth = AdminAuth::Load(auth_options);
  if (!auth.ok()) return auth.status();
  admin_auth_.emplace(std::move(*auth));
  if (const auto& token = admin_auth_->generated_token()) {
    std::FILE* out = options_.admin_token_out != nullptr ? options_.admin_token_out : stderr;
    std::fprintf(out,
                 "switchboard: generated an admin token; it is shown this once and only its hash "
                 "is kept:\n  %s\n",
                 token->c_str());
    std::fflush(out);
  }
  admin_api_ = std::make_unique<AdminApi>(*admin_, *admin_auth_);

  metrics_ = std::make_unique<Metrics>();
  ProxyOptions proxy_options = options_.proxy;
  proxy_ = std::make_unique<Proxy>(*router_, *upstream_, cipher_.get(), writer_.get(),
                                   Clock::Real(), proxy_options, metrics_.get());

  for (const std::string& key : options_.client_keys) client_key_hashes_.push_back(Sha256(key));

  http_ = std::make_unique<HttpServer>(options_.http);
  RegisterRoutes();
  host_ = listen->host;
  errno = 0;
  if (listen->port == 0) {
    port_ = http_->bind_to_any_port(host_);
  } else {
    port_ = http_->bind_to_port(host_, listen->port) ? listen->port : -1;
  }
  if (port_ <= 0) {
    const int err = errno;
    return UnavailableError("cannot listen on " + FormatHostPort(host_, listen->port) + ": " +
                            (err != 0 ? std::strerror(err) : "bind failed"));
  }
  return Status::Ok();
}

bool Server::Authorized(const Request& req) const {
  // Keys created through the admin API: an immutable snapshot, swapped as a
  // whole when one is created or revoked, so this never reads the store.
  const std::shared_ptr<const ClientKeySet> api_keys = admin_->client_keys();
  if (client_key_hashes_.empty() && !api_keys->required()) return true;
  std::vector<std::string> presented;
  if (std::string token = BearerToken(req); !token.empty()) presented.push_back(std::move(token));
  if (req.has_header("x-api-key")) presented.push_back(req.get_header_value("x-api-key"));
  // Compare hashes, so the time taken says nothing about a key's bytes, and
  // look at every configured key, so it says nothing about which matched.
  int matched = 0;
  for (const std::string& key : presented) {
    const std::array<unsigned char, 32> hash = Sha256(key);
    for (const auto& expected : client_key_hashes_) {
      matched |= sodium_memcmp(hash.data(), expected.data(), hash.size()) == 0 ? 1 : 0;
    }
  }
  if (const ClientKeySet::Entry* entry = api_keys->Match(presented); entry != nullptr) {
    // Last use, in memory only; AdminService::FlushClientKeyUses() stores it.
    entry->last_used_ms->store(ToUnixMillis(Clock::Real().WallNow()), std::memory_order_relaxed);
    matched = 1;
  }
  return matched != 0;
}

void Server::RegisterRoutes() {
  HttpServer& h = *http_;
  h.set_payload_max_length(kMaxPayload);
  admin_api_->Register(h);

  for (const ProxyRoute& route : kProxyRoutes) {
    h.Post(route.path,
           [this, &route](const Request& req, Response& res, const ContentReader& reader) {
             HandleProxy(req, res, reader, route.api, route.endpoint);
           });
  }
  h.Get("/v1/models", [this](const Request& req, Response& res) {
    if (!Authorized(req)) {
      SendError(res, Api::kOpenAI, 401, "Missing or invalid API key.");
      return;
    }
    res.set_content(proxy_->ModelsJson(), "application/json");
  });
  h.Get("/healthz", [](const Request&, Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  h.Get("/metrics", [this](const Request&, Response& res) {
    res.set_content(metrics_->RenderPrometheus(*router_), "text/plain; version=0.0.4");
  });

  // Everything else: 405 on a known path, else 404. Registered last (the
  // first matching pattern wins), with content readers so a body is never read.
  auto unrouted_with_body = [this](const Request& req, Response& res, const ContentReader&) {
    HandleUnrouted(req, res);
  };
  auto unrouted = [this](const Request& req, Response& res) { HandleUnrouted(req, res); };
  h.Get(".*", unrouted);
  h.Options(".*", unrouted);
  h.Post(".*", unrouted_with_body);
  h.Put(".*", unrouted_with_body);
  h.Patch(".*", unrouted_with_body);
  h.Delete(".*", unrouted_with_body);

  // Fills in the body of errors httplib answers itself (400 for a malformed
  // request, 414, ...). Returning Handled also makes httplib set
  // Content-Length on every error response.
  h.set_error_handler(httplib::Server::HandlerWithResponse([](const Request& req, Response& res) {
    if (res.body.empty() && !res.content_provider_) {
      const int status = res.status;
      const std::string message =
          status == 404 ? "Unknown request URL: " + req.method + " " + req.path
                        : "The request could not be served (HTTP " + std::to_string(status) + ").";
      SendError(res, ApiForPath(req.path), status, message);
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  h.set_exception_handler([](const Request& req, Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "switchboard: internal error serving %s %s: %s\n", req.method.c_str(),
                 req.path.c_str(), what.c_str());
    res.headers.clear();
    SendError(res, ApiForPath(req.path), 500, "The server had an internal error.");
    CloseConnectionAfter(res);
  });
  // "Expect: 100-continue": refuse a body we would refuse anyway before the
  // client sends it.
  h.set_expect_100_continue_handler([this](const Request& req, Response& res) {
    const bool proxied = std::any_of(std::begin(kProxyRoutes), std::end(kProxyRoutes),
                                     [&](const ProxyRoute& r) { return req.path == r.path; });
    if (!proxied || req.method != "POST") return 100;
    const Api api = ApiForPath(req.path);
    if (!Authorized(req)) {
      SendError(res, api, 401, "Missing or invalid API key.");
      CloseConnectionAfter(res);
      return 401;
    }
    const std::string length = req.get_header_value("Content-Length");
    uint64_t declared = 0;
    const auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), declared);
    const bool parsed =
        !length.empty() && ec == std::errc() && end == length.data() + length.size();
    if ((parsed && declared > static_cast<uint64_t>(BodyLimit())) ||
        ec == std::errc::result_out_of_range) {
      SendError(
          res, api, 413,
          "Request body is larger than the limit of " + std::to_string(BodyLimit()) + " bytes.");
      CloseConnectionAfter(res);
      return 413;
    }
    return 100;
  });
}

void Server::HandleUnrouted(const Request& req, Response& res) {
  const Api api = ApiForPath(req.path);
  if (HasRequestBody(req)) CloseConnectionAfter(res);  // we do not read it
  for (const KnownPath& known : kKnownPaths) {
    if (req.path != known.path) continue;
    SetHeader(res, "Allow", std::string(known.allow));
    if (req.method == "OPTIONS") {
      res.status = 204;
      return;
    }
    SendError(res, api, 405,
              "Method " + req.method + " is not allowed on " + req.path + "; use " +
                  std::string(known.allow) + ".");
    return;
  }
  SendError(res, api, 404, "Unknown request URL: " + req.method + " " + req.path);
}

class Server::InFlightSlot {
 public:
  InFlightSlot() = default;
  // Takes a place if fewer than `limit` are taken.
  InFlightSlot(std::atomic<size_t>& count, size_t limit) {
    size_t n = count.load(std::memory_order_relaxed);
    do {
      if (n >= limit) return;
    } while (!count.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    count_ = &count;
  }
  InFlightSlot(InFlightSlot&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
  InFlightSlot& operator=(InFlightSlot&& other) noexcept {
    if (this != &other) {
      Release();
      count_ = std::exchange(other.count_, nullptr);
    }
    return *this;
  }
  ~InFlightSlot() { Release(); }

  explicit operator bool() const { return count_ != nullptr; }

 private:
  void Release() {
    if (count_ != nullptr) count_->fetch_sub(1, std::memory_order_relaxed);
    count_ = nullptr;
  }
  std::atomic<size_t>* count_ = nullptr;
};

void Server::HandleProxy(const Request& req, Response& res, const ContentReader& reader, Api api,
                         const std::string& endpoint) {
  const std::string client_id = req.get_header_value("x-request-id");
  const std::string request_id = IsSaneRequestId(client_id) ? client_id : NewRequestId();
  SetHeader(res, "x-request-id", request_id);

  if (!Authorized(req)) {
    if (HasRequestBody(req)) CloseConnectionAfter(res);
    SendError(res, api, 401,
              "Missing or invalid API key. Send it as 'Authorization: Bearer KEY' or "
              "'x-api-key: KEY'.");
    return;
  }
  InFlightSlot slot(in_flight_, max_in_flight_);
  if (!slot) {
    // Refused before reading the body, so the connection cannot be reused.
    if (HasRequestBody(req)) CloseConnectionAfter(res);
    metrics_->RecordOverloaded();
    SetHeader(res, "Retry-After", "1");
    SendError(res, api, 503,
              "The gateway is serving its limit of " + std::to_string(max_in_flight_) +
                  " requests at once; retry shortly.",
              "server_overloaded");
    return;
  }
  const int64_t limit = BodyLimit();
  std::string body;
  switch (ReadBody(req, res, reader, limit, &body)) {
    case BodyRead::kOk:
      break;
    case BodyRead::kTooLarge:
      CloseConnectionAfter(res);
      SendError(res, api, 413,
                "Request body is larger than the limit of " + std::to_string(limit) + " bytes.");
      return;
    case BodyRead::kBadLength:
      CloseConnectionAfter(res);
      SendError(res, api, 400, "Invalid Content-Length header.");
      return;
    case BodyRead::kUnsupportedEncoding:
      CloseConnectionAfter(res);
      SendError(res, api, 415, "Unsupported Content-Encoding.");
      return;
    case BodyRead::kUnsupportedMedia:
      CloseConnectionAfter(res);
      SendError(res, api, 415, "The request body must be JSON.");
      return;
    case BodyRead::kFailed:
      CloseConnectionAfter(res);
      SendError(res, api, 400, "Could not read the request body.");
      return;
  }

  ProxyRequest request;
  request.api = api;
  request.endpoint = endpoint;
  request.body = std::move(body);
  request.request_id = request_id;
  request.client_headers.reserve(req.headers.size());
  for (const auto& [name, value] : req.headers) {
    // httplib adds the peer's address as pseudo headers.
    if (name == "REMOTE_ADDR" || name == "REMOTE_PORT" || name == "LOCAL_ADDR" ||
        name == "LOCAL_PORT") {
      continue;
    }
    request.client_headers.emplace_back(name, value);
  }
  request.client_gone = http_->ClientGoneCallback();
  WriteProxyResponse(api, proxy_->Handle(std::move(request)), std::move(slot), res);
}

void Server::WriteProxyResponse(Api api, ProxyResponse response, InFlightSlot slot,
                                Response& res) {
  if (response.status < 100 || response.status > 999) {
    SendError(res, api, 502, "The gateway produced no response.");
    return;
  }
  res.status = response.status;
  std::string content_type;
  for (const auto& [name, value] : response.headers) {
    if (EqualsIgnoreCase(name, "content-type")) {
      content_type = value;
      continue;
    }
    if (IsHopHeader(name)) continue;
    SetHeader(res, name, value);
  }

  if (!response.stream) {
    res.body = std::move(response.body);
    SetHeader(res, "Content-Type", content_type.empty() ? "application/json" : content_type);
    return;
  }

  // Streamed: httplib pulls the provider once per chunk and writes each
  // chunk as its own HTTP chunk at once (nothing is compressed or buffered,
  // see HttpServer). Dropping the ProxyStream aborts the upstream.
  struct StreamState {
    std::unique_ptr<ProxyStream> stream;
    bool ended = false;  // saw [DONE] or an error event
    InFlightSlot slot;   // released when httplib drops the provider
  };
  auto state = std::make_shared<StreamState>();
  state->stream = std::move(response.stream);
  state->slot = std::move(slot);
  if (!res.has_header("Cache-Control")) res.set_header("Cache-Control", "no-cache");
  SetHeader(res, "X-Accel-Buffering", "no");
  HttpServer* http = http_.get();
  res.set_chunked_content_provider(
      "text/event-stream", [state, http, api](size_t, httplib::DataSink& sink) {
        std::string chunk;
        for (;;) {
          chunk.clear();
          if (!state->stream || !state->stream->Next(&chunk)) {
            if (http->forced() && !state->ended) {
              if (state->stream) state->stream->Abort(503, "ended by the server's shutdown");
              const std::string event = ShutdownErrorEvent(api);
              sink.write(event.data(), event.size());
            }
            state->stream.reset();  // records the request now
            sink.done();
            return true;
          }
          if (chunk.empty()) continue;  // httplib ends the stream on an empty write
          if (chunk.find("data: [DONE]") != std::string::npos ||
              chunk.find("event: error") != std::string::npos) {
            state->ended = true;
          }
          if (!sink.write(chunk.data(), chunk.size())) {
            state->stream.reset();  // the client went away: abort the upstream
            return false;
          }
          return true;
        }
      });
}

Status Server::Run() {
  if (!http_) return FailedPreconditionError("Start() the server first");
  retention_thread_ = std::thread([this] { RetentionLoop(); });
  const bool listened = http_->listen_after_bind();
  {
    std::lock_guard<std::mutex> lock(shutdown_mu_);
    retention_stop_ = true;
  }
  retention_wake_.notify_all();
  if (retention_thread_.joinable()) retention_thread_.join();
  // Every connection has closed: httplib's listen returns only after the
  // connection pool has shut down.
  std::thread drain;
  bool shutdown_requested = false;
  {
    std::lock_guard<std::mutex> lock(shutdown_mu_);
    shutdown_requested = shutdown_requested_;
    drain = std::move(drain_thread_);
  }
  if (drain.joinable()) drain.join();
  if (demo_) demo_->Stop();
  Status flushed = writer_->Flush();
  if (Status s = admin_->FlushClientKeyUses(); !s.ok() && flushed.ok()) flushed = s;
  if (!listened && !shutdown_requested && !http_->draining()) {
    return UnavailableError("the listening socket failed");
  }
  return flushed;
}

void Server::Shutdown(bool immediate) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (!http_) return;
  if (immediate) immediate_ = true;
  if (shutdown_requested_) return;
  shutdown_requested_ = true;
  retention_wake_.notify_all();
  drain_thread_ = std::thread([this] { Drain(); });
}

void Server::RetentionLoop() {
  std::unique_lock<std::mutex> lock(shutdown_mu_);
  while (!retention_stop_ && !shutdown_requested_) {
    lock.unlock();
    Result<int64_t> deleted = admin_->ApplyRetention();
    if (!deleted.ok()) {
      std::fprintf(stderr, "switchboard: usage retention failed: %s\n",
                   deleted.status().ToString().c_str());
    }
    if (Status s = admin_->FlushClientKeyUses(); !s.ok()) {
      std::fprintf(stderr, "switchboard: storing client key last use failed: %s\n",
                   s.ToString().c_str());
    }
    lock.lock();
    retention_wake_.wait_for(lock, options_.retention_interval,
                             [this] { return retention_stop_ || shutdown_requested_; });
  }
}

void Server::Drain() {
  http_->StopAccepting();
  http_->BeginDrain();
  const auto deadline = SteadyClock::now() + options_.drain_timeout;
  {
    // Wait for the connections to finish, or the drain period to pass, or an
    // immediate shutdown.
    std::unique_lock<std::mutex> lock(shutdown_mu_);
    while (!immediate_ && SteadyClock::now() < deadline) {
      lock.unlock();
      const bool idle = http_->WaitForConnections(
          std::min(deadline, SteadyClock::now() + std::chrono::milliseconds(100)));
      lock.lock();
      if (idle) return;
    }
  }
  // Streams still running end with an error event (the proxy sees the
  // client as gone and aborts its upstream); requests waiting on an upstream
  // are cancelled.
  http_->ForceEnd();
  if (http_->WaitForConnections(SteadyClock::now() + std::chrono::seconds(2))) return;
  http_->AbortConnections();
}

}  // namespace switchboard::server
