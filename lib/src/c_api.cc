// The C interface (switchboard/c_api.h) over the C++ library. Each entry
// point catches everything: a C caller cannot unwind a C++ exception, so an
// unexpected one (std::bad_alloc, a bug) becomes SB_INTERNAL with a message.
#include "switchboard/c_api.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "switchboard/admin.h"
#include "switchboard/json.h"
#include "switchboard/metrics.h"
#include "switchboard/proxy.h"
#include "switchboard/router.h"
#include "switchboard/secrets.h"
#include "switchboard/storage.h"
#include "switchboard/storage_writer.h"
#include "switchboard/upstream.h"

#ifndef SWITCHBOARD_LIB_VERSION
#define SWITCHBOARD_LIB_VERSION "0.0.0"
#endif

namespace sb = switchboard;

struct sb_storage {
  std::unique_ptr<sb::Storage> storage;
};

struct sb_router {
  sb::Storage* storage = nullptr;
  std::unique_ptr<sb::KeyCipher> cipher;
  std::unique_ptr<sb::StorageWriter> writer;
  std::unique_ptr<sb::Router> router;
  std::unique_ptr<sb::AdminService> admin;
};

struct sb_plan {
  explicit sb_plan(sb::RoutePlan p) : plan(std::move(p)) {}
  sb::RoutePlan plan;
  // Copies of the current attempt's strings, which sb_attempt points into.
  std::string backend_id, backend_name, pool, api_base_url, api, upstream_model;
};

struct sb_proxy {
  std::unique_ptr<sb::UpstreamClient> upstream;
  std::unique_ptr<sb::Metrics> metrics;
  std::unique_ptr<sb::Proxy> proxy;
};

struct sb_response {
  int status = 0;
  sb::Headers headers;
  std::string body;
  bool streamed = false;
  bool aborted = false;
};

namespace {

struct LastError {
  std::string message;
  std::string param;
  int64_t retry_after_ms = 0;
};

LastError& ThreadError() {
  thread_local LastError error;
  return error;
}

void ClearError() {
  LastError& e = ThreadError();
  e.message.clear();
  e.param.clear();
  e.retry_after_ms = 0;
}

sb_code SetError(const sb::Status& status) {
  LastError& e = ThreadError();
  e.message = status.message();
  e.param = status.param();
  e.retry_after_ms = 0;
  return static_cast<sb_code>(status.code());
}

sb_code SetError(sb_code code, std::string message, std::string param = "") {
  LastError& e = ThreadError();
  e.message = std::move(message);
  e.param = std::move(param);
  e.retry_after_ms = 0;
  return code;
}

// Runs `body` (returning sb_code) with the last error cleared first, and
// turns any exception into SB_INTERNAL.
template <typename Fn>
sb_code Guard(Fn&& body) noexcept {
  try {
    ClearError();
    return body();
  } catch (const std::bad_alloc&) {
    return SetError(SB_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return SetError(SB_INTERNAL, std::string("unexpected error: ") + e.what());
  } catch (...) {
    return SetError(SB_INTERNAL, "unexpected error");
  }
}

// A malloc'd NUL-terminated copy, for sb_free(); nullptr when out of memory.
char* CopyOut(std::string_view text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (out == nullptr) return nullptr;
  std::memcpy(out, text.data(), text.size());
  out[text.size()] = '\0';
  return out;
}

sb_code ReturnJson(const std::string& json, char** out_json) {
  if (out_json == nullptr) return SB_OK;
  *out_json = CopyOut(json);
  if (*out_json == nullptr) return SetError(SB_INTERNAL, "out of memory");
  return SB_OK;
}

sb_code NullArgument(const char* name) {
  return SetError(SB_INVALID_ARGUMENT, std::string(name) + " must not be NULL", name);
}

sb::Result<sb::MasterKey> MasterKeyFor(const sb_router_options* options) {
  if (options != nullptr && options->master_key_base64 != nullptr &&
      options->master_key_base64[0] != '\0') {
    return sb::MasterKey::FromBase64(options->master_key_base64);
  }
  sb::MasterKeyOptions key_options;
  if (options != nullptr && options->master_key_file != nullptr) {
    key_options.key_file = options->master_key_file;
  }
  const char* env = std::getenv(key_options.env_var.c_str());
  if (key_options.key_file.empty() && (env == nullptr || env[0] == '\0')) {
    return sb::MasterKey::Generate();
  }
  return sb::LoadMasterKey(key_options);
}

sb::ProxyRequest ToProxyRequest(const sb_request& request) {
  sb::ProxyRequest out;
  out.endpoint = request.endpoint;
  out.body = request.body_len != 0 ? std::string(request.body, request.body_len)
                                   : std::string(request.body);
  if (request.api != nullptr) out.api = *sb::ParseApi(request.api);
  if (request.request_id != nullptr) out.request_id = request.request_id;
  return out;
}

sb_code CheckRequest(const sb_request* request) {
  if (request == nullptr) return NullArgument("request");
  if (request->endpoint == nullptr || request->endpoint[0] == '\0') {
    return SetError(SB_INVALID_ARGUMENT, "the request needs an endpoint", "endpoint");
  }
  if (request->body == nullptr) {
    return SetError(SB_INVALID_ARGUMENT, "the request needs a body", "body");
  }
  if (request->api != nullptr && !sb::ParseApi(request->api)) {
    return SetError(SB_INVALID_ARGUMENT, "api must be \"openai\" or \"anthropic\"", "api");
  }
  return SB_OK;
}

// Runs the request; with `on_event` a streamed body goes event by event to
// the callback, else it is collected into the response's body.
sb_code Forward(sb_proxy* proxy, const sb_request* request, sb_event_fn on_event,
                void* user_data, sb_response** out) {
  if (out == nullptr) return NullArgument("out");
  *out = nullptr;
  if (proxy == nullptr) return NullArgument("proxy");
  if (sb_code c = CheckRequest(request); c != SB_OK) return c;

  auto response = std::make_unique<sb_response>();
  sb::ProxyResponse r = proxy->proxy->Handle(ToProxyRequest(*request));
  response->status = r.status;
  response->headers = std::move(r.headers);
  response->body = std::move(r.body);
  if (r.stream) {
    response->streamed = true;
    std::string chunk;
    sb::SseParser parser;
    std::vector<std::string> events;
    while (!response->aborted && r.stream->Next(&chunk)) {
      if (on_event == nullptr) {
        response->body += chunk;
      } else {
        events.clear();
        parser.Feed(chunk, &events);
        for (const std::string& event : events) {
          if (on_event(event.data(), event.size(), user_data) != 0) {
            response->aborted = true;
            break;
          }
        }
      }
      chunk.clear();
    }
    // An unterminated last event still reaches the caller.
    if (on_event != nullptr && !response->aborted && !parser.pending().empty()) {
      const std::string& rest = parser.pending();
      response->aborted = on_event(rest.data(), rest.size(), user_data) != 0;
    }
    // Dropping the stream early aborts the upstream transfer.
    r.stream.reset();
  }
  *out = response.release();
  return SB_OK;
}

}  // namespace

extern "C" {

const char* sb_code_name(sb_code code) {
  switch (code) {
    case SB_OK:
      return "OK";
    case SB_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case SB_NOT_FOUND:
      return "NOT_FOUND";
    case SB_ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case SB_FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case SB_RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case SB_UNAVAILABLE:
      return "UNAVAILABLE";
    case SB_DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case SB_INTERNAL:
      return "INTERNAL";
  }
  return "UNKNOWN";
}

const char* sb_last_error_message(void) { return ThreadError().message.c_str(); }
const char* sb_last_error_param(void) { return ThreadError().param.c_str(); }
int64_t sb_last_error_retry_after_ms(void) { return ThreadError().retry_after_ms; }

void sb_free(char* text) { std::free(text); }

const char* sb_version(void) { return SWITCHBOARD_LIB_VERSION; }

// --- Storage -----------------------------------------------------------------

sb_code sb_storage_open_sqlite(const char* path, sb_storage** out) {
  return Guard([&] {
    if (out == nullptr) return NullArgument("out");
    *out = nullptr;
    if (path == nullptr) return NullArgument("path");
    auto storage = sb::OpenSqliteStorage({.path = path});
    if (!storage.ok()) return SetError(storage.status());
    *out = new sb_storage{*std::move(storage)};
    return SB_OK;
  });
}

sb_code sb_storage_new_memory(sb_storage** out) {
  return Guard([&] {
    if (out == nullptr) return NullArgument("out");
    *out = new sb_storage{sb::NewMemoryStorage()};
    return SB_OK;
  });
}

void sb_storage_free(sb_storage* storage) {
  (void)Guard([&] {
    delete storage;
    return SB_OK;
  });
}

// --- Router ------------------------------------------------------------------

sb_code sb_router_new(sb_storage* storage, const sb_router_options* options, sb_router** out) {
  return Guard([&] {
    if (out == nullptr) return NullArgument("out");
    *out = nullptr;
    if (storage == nullptr) return NullArgument("storage");
    if (sb::Status s = sb::InitCrypto(); !s.ok()) return SetError(s);
    sb::Result<sb::MasterKey> key = MasterKeyFor(options);
    if (!key.ok()) {
      return SetError(sb::Status(key.status().code(), "master key: " + key.status().message()));
    }
    auto cipher = sb::KeyCipher::Create(*std::move(key));
    if (!cipher.ok()) return SetError(cipher.status());

    auto r = std::make_unique<sb_router>();
    r->storage = storage->storage.get();
    r->cipher = *std::move(cipher);
    r->writer = std::make_unique<sb::StorageWriter>(*r->storage);
    r->router = std::make_unique<sb::Router>(sb::Clock::Real(), r->writer.get());
    if (sb::Status s = r->router->LoadFrom(*r->storage); !s.ok()) return SetError(s);
    r->admin = std::make_unique<sb::AdminService>(*r->storage, *r->router, *r->cipher,
                                                  sb::Clock::Real());
    *out = r.release();
    return SB_OK;
  });
}

void sb_router_free(sb_router* router) {
  (void)Guard([&] {
    if (router == nullptr) return SB_OK;
    // The writer flushes on destruction; the router it serves goes first.
    router->admin.reset();
    router->router.reset();
    router->writer.reset();
    delete router;
    return SB_OK;
  });
}

sb_code sb_router_flush(sb_router* router) {
  return Guard([&] {
    if (router == nullptr) return NullArgument("router");
    if (sb::Status s = router->writer->Flush(); !s.ok()) return SetError(s);
    return SB_OK;
  });
}

// --- Backends ----------------------------------------------------------------

sb_code sb_backend_create(sb_router* router, const char* json, char** out_json) {
  return Guard([&] {
    if (out_json != nullptr) *out_json = nullptr;
    if (router == nullptr) return NullArgument("router");
    if (json == nullptr) return NullArgument("json");
    sb::Result<sb::Backend> b = router->admin->CreateBackend(json);
    if (!b.ok()) return SetError(b.status());
    return ReturnJson(sb::BackendToJson(*b), out_json);
  });
}

sb_code sb_backend_update(sb_router* router, const char* id, const char* json, char** out_json) {
  return Guard([&] {
    if (out_json != nullptr) *out_json = nullptr;
    if (router == nullptr) return NullArgument("router");
    if (id == nullptr) return NullArgument("id");
    if (json == nullptr) return NullArgument("json");
    sb::Result<sb::Backend> b = router->admin->UpdateBackend(id, json);
    if (!b.ok()) return SetError(b.status());
    return ReturnJson(sb::BackendToJson(*b), out_json);
  });
}

sb_code sb_backend_list(sb_router* router, char** out_json) {
  return Guard([&] {
    if (out_json == nullptr) return NullArgument("out_json");
    *out_json = nullptr;
    if (router == nullptr) return NullArgument("router");
    auto list = router->admin->ListBackends({});
    if (!list.ok()) return SetError(list.status());
    return ReturnJson(sb::BackendListToJson(*list), out_json);
  });
}

sb_code sb_backend_get(sb_router* router, const char* id, char** out_json) {
  return Guard([&] {
    if (out_json == nullptr) return NullArgument("out_json");
    *out_json = nullptr;
    if (router == nullptr) return NullArgument("router");
    if (id == nullptr) return NullArgument("id");
    auto b = router->admin->GetBackend(id);
    if (!b.ok()) return SetError(b.status());
    return ReturnJson(sb::BackendToJson(*b), out_json);
  });
}

sb_code sb_backend_delete(sb_router* router, const char* id) {
  return Guard([&] {
    if (router == nullptr) return NullArgument("router");
    if (id == nullptr) return NullArgument("id");
    if (sb::Status s = router->admin->DeleteBackend(id); !s.ok()) return SetError(s);
    return SB_OK;
  });
}

sb_code sb_usage_list(sb_router* router, int limit, char** out_json) {
  return Guard([&] {
    if (out_json == nullptr) return NullArgument("out_json");
    *out_json = nullptr;
    if (router == nullptr) return NullArgument("router");
    auto page = router->admin->Usage(limit, std::nullopt);
    if (!page.ok()) return SetError(page.status());
    return ReturnJson(sb::UsagePageToJson(*page), out_json);
  });
}

// --- Route plans -------------------------------------------------------------

sb_code sb_router_route(sb_router* router, const char* model, sb_plan** out) {
  return Guard([&] {
    if (out == nullptr) return NullArgument("out");
    *out = nullptr;
    if (router == nullptr) return NullArgument("router");
    if (model == nullptr) return NullArgument("model");
    sb::RoutePlan plan = router->router->Route(model);
    if (!plan.ok()) {
      const sb_code code = SetError(plan.status());
      if (plan.retry_after()) {
        ThreadError().retry_after_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(*plan.retry_after()).count();
      }
      return code;
    }
    *out = new sb_plan(std::move(plan));
    return SB_OK;
  });
}

int sb_plan_next(sb_plan* plan, sb_attempt* attempt) {
  int result = 0;
  (void)Guard([&] {
    if (plan == nullptr || attempt == nullptr) return NullArgument("plan");
    const sb::PlannedAttempt* next = plan->plan.Next();
    if (next == nullptr) {
      if (plan->plan.attempts() == 0) (void)SetError(plan->plan.ExhaustedStatus());
      return SB_OK;
    }
    const sb::Backend& b = next->backend();
    plan->backend_id = b.id;
    plan->backend_name = b.name;
    plan->pool = b.pool;
    plan->api_base_url = b.api_base_url;
    plan->api = std::string(sb::ApiName(b.api));
    plan->upstream_model = next->upstream_model();
    *attempt = sb_attempt{};
    attempt->number = next->number();
    attempt->backend_id = plan->backend_id.c_str();
    attempt->backend_name = plan->backend_name.c_str();
    attempt->pool = plan->pool.c_str();
    attempt->api_base_url = plan->api_base_url.c_str();
    attempt->api = plan->api.c_str();
    attempt->upstream_model = plan->upstream_model.c_str();
    attempt->half_open = next->half_open() ? 1 : 0;
    result = 1;
    return SB_OK;
  });
  return result;
}

sb_outcome_class sb_plan_report(sb_plan* plan, const sb_outcome* outcome) {
  sb_outcome_class result = SB_OUTCOME_FAILURE;
  (void)Guard([&] {
    if (plan == nullptr || outcome == nullptr) return NullArgument("plan");
    sb::AttemptOutcome o;
    o.http_status = outcome->http_status;
    o.transport_error = static_cast<sb::TransportError>(outcome->transport_error);
    o.latency = std::chrono::milliseconds(outcome->latency_ms);
    o.ttfb = std::chrono::milliseconds(outcome->ttfb_ms);
    o.prompt_tokens = outcome->prompt_tokens;
    o.completion_tokens = outcome->completion_tokens;
    if (outcome->retry_after != nullptr) o.headers.emplace_back("retry-after", outcome->retry_after);
    if (outcome->retry_after_ms != nullptr) {
      o.headers.emplace_back("retry-after-ms", outcome->retry_after_ms);
    }
    result = static_cast<sb_outcome_class>(plan->plan.Report(o));
    return SB_OK;
  });
  return result;
}

int sb_should_fail_over(sb_outcome_class c) {
  return sb::ShouldFailOver(static_cast<sb::OutcomeClass>(c)) ? 1 : 0;
}

int sb_plan_attempts(const sb_plan* plan) { return plan == nullptr ? 0 : plan->plan.attempts(); }

char* sb_plan_trace_json(const sb_plan* plan) {
  char* out = nullptr;
  (void)Guard([&] {
    if (plan == nullptr) return NullArgument("plan");
    out = CopyOut(plan->plan.TraceJson());
    return SB_OK;
  });
  return out;
}

void sb_plan_free(sb_plan* plan) {
  (void)Guard([&] {
    delete plan;
    return SB_OK;
  });
}

// --- Proxy -------------------------------------------------------------------

sb_code sb_proxy_new(sb_router* router, const sb_proxy_options* options, sb_proxy** out) {
  return Guard([&] {
    if (out == nullptr) return NullArgument("out");
    *out = nullptr;
    if (router == nullptr) return NullArgument("router");
    sb::ProxyOptions proxy_options;
    if (options != nullptr) {
      if (options->connect_timeout_ms < 0 || options->request_timeout_ms < 0 ||
          options->body_limit_bytes < 0) {
        return SetError(SB_INVALID_ARGUMENT, "proxy options must not be negative");
      }
      if (options->connect_timeout_ms > 0) {
        proxy_options.connect_timeout = std::chrono::milliseconds(options->connect_timeout_ms);
      }
      proxy_options.request_timeout = std::chrono::milliseconds(options->request_timeout_ms);
      proxy_options.body_limit_bytes = options->body_limit_bytes;
    }
    auto client = sb::NewCurlUpstreamClient({});
    if (!client.ok()) return SetError(client.status());
    auto p = std::make_unique<sb_proxy>();
    p->upstream = *std::move(client);
    p->metrics = std::make_unique<sb::Metrics>();
    p->proxy = std::make_unique<sb::Proxy>(*router->router, *p->upstream, router->cipher.get(),
                                           router->writer.get(), sb::Clock::Real(),
                                           proxy_options, p->metrics.get());
    *out = p.release();
    return SB_OK;
  });
}

void sb_proxy_free(sb_proxy* proxy) {
  (void)Guard([&] {
    if (proxy == nullptr) return SB_OK;
    proxy->proxy.reset();
    delete proxy;
    return SB_OK;
  });
}

sb_code sb_proxy_forward(sb_proxy* proxy, const sb_request* request, sb_response** out) {
  return Guard([&] { return Forward(proxy, request, nullptr, nullptr, out); });
}

sb_code sb_proxy_forward_stream(sb_proxy* proxy, const sb_request* request,
                                sb_event_fn on_event, void* user_data, sb_response** out) {
  return Guard([&] {
    if (on_event == nullptr) return NullArgument("on_event");
    return Forward(proxy, request, on_event, user_data, out);
  });
}

int sb_response_status(const sb_response* response) {
  return response == nullptr ? 0 : response->status;
}

const char* sb_response_body(const sb_response* response, size_t* len) {
  if (response == nullptr) {
    if (len != nullptr) *len = 0;
    return "";
  }
  if (len != nullptr) *len = response->body.size();
  return response->body.c_str();
}

const char* sb_response_header(const sb_response* response, const char* name) {
  if (response == nullptr || name == nullptr) return nullptr;
  const std::string* value = sb::FindHeader(response->headers, name);
  return value == nullptr ? nullptr : value->c_str();
}

int sb_response_streamed(const sb_response* response) {
  return response != nullptr && response->streamed ? 1 : 0;
}

int sb_response_aborted(const sb_response* response) {
  return response != nullptr && response->aborted ? 1 : 0;
}

void sb_response_free(sb_response* response) { delete response; }

}  // extern "C"
