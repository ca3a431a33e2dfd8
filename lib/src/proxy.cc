// The proxy engine: one client request through a Router plan, with failover
// until the first byte reaches the client, then live streaming.
#include "switchboard/proxy.h"

#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>

#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "json/json_depth.h"
#include "json/json_scan.h"
#include "switchboard/json.h"
#include "translate/translate.h"

namespace switchboard {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr std::string_view kAnthropicVersion = "2023-06-01";
// Most of an upstream error body kept for the client or the log.
constexpr size_t kMaxErrorBody = 64 * 1024;
// Deepest array/object nesting a request body may have.
constexpr int kMaxRequestNesting = 512;
// A stream's whole life is bounded too, generously: answers can be long.
constexpr Duration kMaxStreamDuration = std::chrono::hours(1);

// Client headers that may reach the upstream. Everything else (credentials,
// cookies, hop-by-hop, Host, forwarding headers) is dropped.
constexpr std::string_view kForwardedHeaders[] = {"openai-beta", "anthropic-beta"};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool HasControlChar(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

int64_t Millis(Duration d) { return duration_cast<milliseconds>(d).count(); }

int64_t UnixSeconds(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string_view OutcomeName(OutcomeClass c) {
  switch (c) {
    case OutcomeClass::kSuccess: return "success";
    case OutcomeClass::kRateLimited: return "rate_limited";
    case OutcomeClass::kFailure: return "failure";
    case OutcomeClass::kAuthError: return "auth_error";
    case OutcomeClass::kClientError: return "client_error";
    case OutcomeClass::kCancelled: return "cancelled";
  }
  return "failure";
}

}  // namespace

std::string ErrorJsonFor(Api api, int http_status, std::string_view message,
                         std::string_view type, std::string_view code, std::string_view param);

namespace {

// An SSE error event a client can tell apart from a complete answer.
std::string ErrorEvent(Api api, std::string_view message, std::string_view code) {
  return "event: error\ndata: " + ErrorJsonFor(api, 502, message, "upstream_error", code) +
         "\n\n";
}

// The upstream URL: the backend's base URL joined with a fixed endpoint
// path. Nothing the client sends reaches the host or the path.
std::string UpstreamUrl(const Backend& backend, std::string_view endpoint) {
  std::string url = backend.api_base_url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  url += endpoint;
  return url;
}

// Endpoints whose requests can be translated for a backend of the other
// wire format: chat completions <-> messages.
bool IsTranslatable(Api client, std::string_view endpoint) {
  return client == Api::kOpenAI ? endpoint == "/chat/completions" : endpoint == "/messages";
}

bool IsSupportedEndpoint(std::string_view endpoint) {
  return endpoint == "/chat/completions" || endpoint == "/completions" ||
         endpoint == "/embeddings" || endpoint == "/messages";
}

// Does the completion-token estimate count this event? (OpenAI chunks that
// carry content: roughly one token each.)
bool CarriesContent(std::string_view data) {
  return data.find("\"content\":\"") != std::string_view::npos ||
         data.find("\"text\":\"") != std::string_view::npos;
}

}  // namespace

std::string ErrorJsonFor(Api api, int http_status, std::string_view message,
                         std::string_view type, std::string_view code, std::string_view param) {
  if (api != Api::kAnthropic) return OpenAIErrorJson(message, type, code, param);
  // Anthropic's shape: {"type":"error","error":{"type":...,"message":...}}.
  std::string_view anthropic_type = "api_error";
  switch (http_status) {
    case 400: anthropic_type = "invalid_request_error"; break;
    case 401: anthropic_type = "authentication_error"; break;
    case 403: anthropic_type = "permission_error"; break;
    case 404: anthropic_type = "not_found_error"; break;
    case 413: anthropic_type = "request_too_large"; break;
    case 429: anthropic_type = "rate_limit_error"; break;
    case 529: anthropic_type = "overloaded_error"; break;
    default: break;
  }
  std::string out = "{\"type\":\"error\",\"error\":{\"type\":\"";
  out += anthropic_type;
  out += "\",\"message\":";
  AppendJsonString(message, &out);
  out += "}}";
  return out;
}

std::string OpenAIErrorJson(std::string_view message, std::string_view type,
                            std::string_view code, std::string_view param) {
  return ErrorToJson(message, type, param, code);
}

TokenUsage ExtractUsage(std::string_view json) {
  TokenUsage usage;
  if (json.find("usage") == std::string_view::npos) return usage;
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) return usage;
  const rapidjson::Value* holder = &doc;
  // Anthropic's message_start nests the usage in "message".
  if (auto m = doc.FindMember("message"); m != doc.MemberEnd() && m->value.IsObject()) {
    if (m->value.HasMember("usage")) holder = &m->value;
  }
  auto u = holder->FindMember("usage");
  if (u == holder->MemberEnd() || !u->value.IsObject()) return usage;
  auto read = [&u](const char* name) -> std::optional<int64_t> {
    auto it = u->value.FindMember(name);
    if (it == u->value.MemberEnd() || !it->value.IsInt64()) return std::nullopt;
    return it->value.GetInt64();
  };
  if (auto v = read("prompt_tokens")) usage.prompt_tokens = *v, usage.found = true;
  if (auto v = read("completion_tokens")) usage.completion_tokens = *v, usage.found = true;
  if (auto v = read("input_tokens")) usage.prompt_tokens = *v, usage.found = true;
  if (auto v = read("output_tokens")) usage.completion_tokens = *v, usage.found = true;
  return usage;
}

// Everything about one client request that outlives Handle() when it streams.
struct Proxy::CallContext {
  ProxyRequest request;
  std::string model;
  bool stream = false;
  SteadyTime started{};
  SystemTime arrived{};
  std::optional<RoutePlan> plan;  // none when refused before routing
  std::string backend_id, backend_name, pool;
  Duration ttfb{};
  TokenUsage usage;
  int64_t estimated_completion_tokens = 0;
  std::vector<std::string> failures;  // "name: 503" per failed attempt
  bool finished = false;

  int attempts() const { return plan ? plan->attempts() : 0; }
};

// A streamed 2xx answer: SSE events forwarded as they complete, or, when
// the backend speaks the other wire format, translated one event at a time.
class Proxy::Stream final : public ProxyStream {
 public:
  Stream(Proxy& proxy, std::unique_ptr<CallContext> ctx, std::unique_ptr<UpstreamCall> call,
         Duration attempt_started_ago,
         std::unique_ptr<internal::StreamTranslator> translator = nullptr)
      : proxy_(proxy), ctx_(std::move(ctx)), call_(std::move(call)),
        attempt_start_(proxy.clock_.Now() - attempt_started_ago),
        translator_(std::move(translator)) {}

  ~Stream() override {
    if (!done_) {
      // The client went away mid-stream: abort upstream, record what was delivered.
      call_.reset();
      End(/*client_status=*/499, OutcomeForCancel(), "client disconnected");
    }
  }

  void Abort(int client_status, const std::string& reason) override {
    if (done_) return;
    call_.reset();
    End(client_status, OutcomeForCancel(), reason);
  }

  bool Next(std::string* out) override {
    if (done_ || cancelled_) return false;
    const CancelFn cancelled = [this] {
      return ctx_->request.client_gone && ctx_->request.client_gone();
    };
    std::string chunk;
    std::vector<std::string> events;
    while (true) {
      chunk.clear();
      const ReadResult r = call_->Read(&chunk, cancelled);
      if (r == ReadResult::kData) {
        events.clear();
        parser_.Feed(chunk, &events);
        for (std::string& e : events) {
          Inspect(e);
          if (translator_ == nullptr) {
            out->append(e);
            continue;
          }
          translator_->Feed(SseParser::EventType(e), SseParser::Data(e), out);
          if (translator_->failed()) {
            // The translator has told the client; nothing after it counts.
            call_.reset();
            End(200, Outcome(0, TransportError::kProtocol),
                "the upstream stream failed: " + SseParser::Data(e).substr(0, 512));
            return true;
          }
        }
        if (!out->empty()) return true;
        continue;  // only part of an event, or events with nothing for the client
      }
      if (r == ReadResult::kEnd) {
        if (saw_done_) {
          End(200, Outcome(200, TransportError::kNone), "");
          // Forward a trailing unterminated fragment? [DONE] was last: nothing.
          return !out->empty();
        }
        if (!saw_error_event_) {
          out->append(ErrorEvent(ctx_->request.api,
                                 "the upstream ended the stream before it was complete",
                                 "stream_incomplete"));
        }
        End(200, Outcome(0, TransportError::kProtocol), "upstream stream ended without [DONE]");
        return true;
      }
      // kError: a stall, a reset, or the client going away.
      const TransportError e = call_->error();
      if (e == TransportError::kCancelled) {
        // Recorded when the owner lets go: as a client that went away, or
        // as what Abort() says (a shutdown).
        cancelled_ = true;
        return false;
      }
      const bool stalled = e == TransportError::kTimeout;
      out->append(ErrorEvent(ctx_->request.api, stalled ? "the upstream stream stalled (idle timeout)"
                                     : "the upstream connection failed mid-stream",
                             stalled ? "stream_timeout" : "stream_interrupted"));
      End(200, Outcome(0, e), call_->error_message());
      return true;
    }
  }

 private:
  void Inspect(const std::string& event) {
    const std::string data = SseParser::Data(event);
    if (data == "[DONE]") {
      saw_done_ = true;
      return;
    }
    const std::string type = SseParser::EventType(event);
    if (type == "message_stop") saw_done_ = true;  // Anthropic's end of stream
    // The upstream's own error event already told the client (Anthropic's
    // "event: error", or an OpenAI chunk that is an error object).
    if (type == "error" || data.rfind("{\"error\"", 0) == 0) saw_error_event_ = true;
    if (data.empty()) return;
    if (CarriesContent(data)) ++ctx_->estimated_completion_tokens;
    const TokenUsage u = ExtractUsage(data);
    if (u.found) {
      // Anthropic reports input tokens first and output tokens later.
      if (u.prompt_tokens > 0) ctx_->usage.prompt_tokens = u.prompt_tokens;
      if (u.completion_tokens > 0) ctx_->usage.completion_tokens = u.completion_tokens;
      ctx_->usage.found = true;
    }
  }

  AttemptOutcome Outcome(int status, TransportError error) const {
    AttemptOutcome o;
    o.http_status = status;
    o.transport_error = error;
    o.latency = proxy_.clock_.Now() - attempt_start_;
    o.ttfb = ctx_->ttfb;
    o.prompt_tokens = ctx_->usage.prompt_tokens;
    o.completion_tokens = DeliveredCompletionTokens();
    return o;
  }

  AttemptOutcome OutcomeForCancel() const { return Outcome(0, TransportError::kCancelled); }

  int64_t DeliveredCompletionTokens() const {
    return ctx_->usage.completion_tokens > 0 ? ctx_->usage.completion_tokens
                                             : ctx_->estimated_completion_tokens;
  }

  void End(int client_status, const AttemptOutcome& outcome, const std::string& error) {
    done_ = true;
    ctx_->plan->Report(outcome);
    ctx_->usage.completion_tokens = DeliveredCompletionTokens();
    if (proxy_.metrics_ != nullptr) {
      proxy_.metrics_->RecordAttempt(ctx_->backend_name, OutcomeName(Classify(outcome)),
                                     outcome.latency, outcome.ttfb);
    }
    proxy_.Finish(*ctx_, client_status, error);
  }

  Proxy& proxy_;
  std::unique_ptr<CallContext> ctx_;
  std::unique_ptr<UpstreamCall> call_;
  SteadyTime attempt_start_;
  bool cancelled_ = false;  // the call was cancelled; End() waits for the owner
  SseParser parser_;
  std::unique_ptr<internal::StreamTranslator> translator_;  // null: same wire format
  bool saw_done_ = false;
  bool saw_error_event_ = false;
  bool done_ = false;
};

Proxy::Proxy(Router& router, UpstreamClient& upstream, const KeyCipher* keys,
             StorageWriter* usage, const Clock& clock, ProxyOptions options, Metrics* metrics)
    : router_(router), upstream_(upstream), keys_(keys), usage_(usage), clock_(clock),
      options_(options), metrics_(metrics) {
  if (sodium_init() < 0) std::abort();  // request ids need randomness
}

Proxy::~Proxy() = default;

Result<std::shared_ptr<const SecretString>> Proxy::KeyFor(const Backend& backend) {
  if (backend.api_key_ciphertext.empty()) return std::shared_ptr<const SecretString>();
  {
    std::shared_lock<std::shared_mutex> lock(keys_mu_);
    auto it = key_cache_.find(backend.id);
    if (it != key_cache_.end() && it->second.ciphertext == backend.api_key_ciphertext) {
      return it->second.plain;
    }
  }
  if (keys_ == nullptr) return FailedPreconditionError("no master key to decrypt API keys");
  auto plain = keys_->Decrypt(backend.api_key_ciphertext, backend.id);
  if (!plain.ok()) return plain.status();
  auto shared = std::make_shared<const SecretString>(std::move(*plain));
  std::unique_lock<std::shared_mutex> lock(keys_mu_);
  key_cache_[backend.id] = CachedKey{backend.api_key_ciphertext, shared};
  return shared;
}

void Proxy::Finish(CallContext& ctx, int status, const std::string& error) {
  if (ctx.finished) return;
  ctx.finished = true;
  if (metrics_ != nullptr) {
    metrics_->RecordRequest(ctx.model, ctx.backend_name, status, ctx.attempts());
    metrics_->AddInFlight(-1);
  }
  if (usage_ == nullptr) return;
  UsageRecord r;
  r.request_id = ctx.request.request_id;
  r.time = ctx.arrived;
  r.endpoint = "/v1" + ctx.request.endpoint;
  r.model = ctx.model;
  r.backend_id = ctx.backend_id;
  r.backend_name = ctx.backend_name;
  r.pool = ctx.pool;
  r.status = status;
  r.attempts = ctx.attempts();
  r.latency_ms = Millis(clock_.Now() - ctx.started);
  r.ttfb_ms = Millis(ctx.ttfb);
  r.prompt_tokens = ctx.usage.prompt_tokens;
  r.completion_tokens = ctx.usage.completion_tokens;
  r.stream = ctx.stream;
  r.error = error;
  r.trace = ctx.plan ? ctx.plan->TraceJson() : "[]";
  usage_->AppendUsage(std::move(r));
}

ProxyResponse Proxy::Handle(ProxyRequest request) {
  if (!IsSaneRequestId(request.request_id)) request.request_id = NewRequestId();
  const SteadyTime started = clock_.Now();
  const SystemTime arrived = clock_.WallNow();
  if (metrics_ != nullptr) metrics_->AddInFlight(1);

  auto respond_error = [&](int status, std::string_view message, std::string_view type,
                           std::string_view code, std::string_view param = "") {
    ProxyResponse r;
    r.status = status;
    r.headers = {{"content-type", "application/json"}, {"x-request-id", request.request_id}};
    r.body = ErrorJsonFor(request.api, status, message, type, code, param);
    return r;
  };
  // Requests refused before routing still leave a usage record.
  auto refuse = [&](int status, std::string_view message, std::string_view type,
                    std::string_view code, std::string_view param = "") {
    CallContext ctx;
    ctx.request = request;
    ctx.started = started;
    ctx.arrived = arrived;
    Finish(ctx, status, std::string(message));
    return respond_error(status, message, type, code, param);
  };

  if (!IsSupportedEndpoint(request.endpoint)) {
    return refuse(404, "unknown endpoint", "invalid_request_error", "not_found");
  }
  const int64_t body_limit = options_.body_limit_bytes > 0
                                 ? options_.body_limit_bytes
                                 : router_.snapshot()->config().body_limit_bytes;
  if (static_cast<int64_t>(request.body.size()) > body_limit) {
    return refuse(413, "request body is larger than the limit of " +
                           std::to_string(body_limit) + " bytes",
                  "invalid_request_error", "request_too_large");
  }
  // Bounded nesting: the translators and writers that handle the document
  // later recurse once per level.
  if (internal::TextNestsDeeperThan(request.body, kMaxRequestNesting)) {
    return refuse(400,
                  "the JSON body nests deeper than " + std::to_string(kMaxRequestNesting) +
                      " levels",
                  "invalid_request_error", "invalid_json");
  }
  rapidjson::Document doc;
  // Iterative: a deeply nested body must not exhaust the thread's stack.
  // JSON is UTF-8 (RFC 8259): a body that is not is refused, so the model
  // routed on is exactly the one the upstream reads.
  doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(
      request.body.data(), request.body.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return refuse(400, "request body is not a valid JSON object in UTF-8",
                  "invalid_request_error", "invalid_json");
  }
  // One "model" and one "stream": JSON parsers disagree on which duplicate
  // wins, so with two the upstream could read a model (or a mode) other than
  // the one routed on.
  for (const char* name : {"model", "stream"}) {
    int seen = 0;
    for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
      if (m->name == name) ++seen;
    }
    if (seen > 1) {
      return refuse(400, "'" + std::string(name) + "' appears more than once in the request body",
                    "invalid_request_error", "invalid_request", name);
    }
  }
  auto model_it = doc.FindMember("model");
  if (model_it == doc.MemberEnd() || !model_it->value.IsString() ||
      model_it->value.GetStringLength() == 0) {
    return refuse(400, "'model' is required and must be a non-empty string",
                  "invalid_request_error", "invalid_request", "model");
  }
  const std::string model(model_it->value.GetString(), model_it->value.GetStringLength());
  auto stream_it = doc.FindMember("stream");
  const bool stream = stream_it != doc.MemberEnd() && stream_it->value.IsBool() &&
                      stream_it->value.GetBool();
  // An OpenAI client's stream_options.include_usage, honoured by translated streams.
  bool include_usage = false;
  if (auto so = doc.FindMember("stream_options"); so != doc.MemberEnd() && so->value.IsObject()) {
    auto iu = so->value.FindMember("include_usage");
    include_usage = iu != so->value.MemberEnd() && iu->value.IsBool() && iu->value.GetBool();
  }

  auto ctx = std::make_unique<CallContext>();
  ctx->plan.emplace(router_.Route(model));
  RoutePlan& plan = *ctx->plan;
  ctx->request = std::move(request);
  ctx->model = model;
  ctx->stream = stream;
  ctx->started = started;
  ctx->arrived = arrived;
  const std::string& request_id = ctx->request.request_id;

  auto base_headers = [&](int attempts) {
    Headers h = {{"x-request-id", request_id},
                 {"x-switchboard-attempts", std::to_string(attempts)}};
    if (!ctx->backend_name.empty()) h.emplace_back("x-switchboard-backend", ctx->backend_name);
    return h;
  };
  auto finish_error = [&](int status, const std::string& message, std::string_view type,
                          std::string_view code) {
    Finish(*ctx, status, message);
    ProxyResponse r;
    r.status = status;
    r.headers = base_headers(plan.attempts());
    r.headers.emplace_back("content-type", "application/json");
    r.body = ErrorJsonFor(ctx->request.api, status, message, type, code, "");
    return r;
  };
  auto rate_limited = [&](const Status& status, std::optional<Duration> retry_after) {
    ProxyResponse r = finish_error(429, status.message(), "rate_limit_error",
                                   "rate_limit_exceeded");
    const Duration retry = retry_after.value_or(std::chrono::seconds(1));
    r.headers.emplace_back(
        "retry-after", std::to_string(std::chrono::ceil<std::chrono::seconds>(retry).count()));
    return r;
  };

  if (!plan.ok()) {
    if (plan.status().code() == StatusCode::kNotFound) {
      return finish_error(404, "The model '" + model + "' does not exist or is not served here",
                          "invalid_request_error", "model_not_found");
    }
    return rate_limited(plan.status(), plan.retry_after());
  }

  // Deadline for the whole request across attempts.
  std::optional<SteadyTime> deadline;
  if (options_.request_timeout > Duration::zero()) deadline = started + options_.request_timeout;
  bool client_left = false;
  bool deadline_hit = false;
  const CancelFn cancelled = [&] {
    if (ctx->request.client_gone && ctx->request.client_gone()) {
      client_left = true;
      return true;
    }
    if (deadline && clock_.Now() >= *deadline) {
      deadline_hit = true;
      return true;
    }
    return false;
  };

  // The client went away mid-attempt: give the attempt back, answer nobody.
  auto client_gone = [&](const std::string& why) {
    AttemptOutcome gone;
    gone.transport_error = TransportError::kCancelled;
    plan.Report(gone);
    Finish(*ctx, 499, why);
    ProxyResponse r;
    r.status = 499;
    return r;
  };

  bool only_timeouts = true;
  bool only_rate_limits = true;
  // Requests sent upstream, and why the last backend of the other wire
  // format could not take the request (it names the client's field).
  int sent = 0;
  std::optional<Status> translation_error;
  while (const PlannedAttempt* attempt = plan.Next()) {
    const Backend& backend = attempt->backend();
    ctx->backend_id = backend.id;
    ctx->backend_name = backend.name;
    ctx->pool = backend.pool;
    const SteadyTime attempt_start = clock_.Now();

    auto fail_attempt = [&](AttemptOutcome outcome, const std::string& what) {
      outcome.latency = clock_.Now() - attempt_start;
      const OutcomeClass cls = plan.Report(outcome);
      if (metrics_ != nullptr) {
        metrics_->RecordAttempt(backend.name, OutcomeName(cls), outcome.latency, outcome.ttfb);
      }
      ctx->failures.push_back(backend.name + ": " + what);
      if (outcome.transport_error != TransportError::kTimeout) only_timeouts = false;
      if (outcome.http_status != 429) only_rate_limits = false;
      return cls;
    };

    // A backend of the other wire format gets a translated request.
    const bool translate = backend.api != ctx->request.api;
    auto skip = [&](const std::string& why) {
      AttemptOutcome skipped;
      skipped.transport_error = TransportError::kCancelled;
      plan.Report(skipped);
      ctx->failures.push_back(backend.name + ": " + why);
      only_timeouts = only_rate_limits = false;
    };
    if (translate && !IsTranslatable(ctx->request.api, ctx->request.endpoint)) {
      skip("speaks " + std::string(ApiName(backend.api)) + ", which has no " +
           ctx->request.endpoint + " endpoint");
      continue;
    }
    std::string upstream_body;
    if (translate) {
      Result<std::string> translated =
          ctx->request.api == Api::kOpenAI
              ? internal::OpenAIChatToAnthropicRequest(ctx->request.body,
                                                       attempt->upstream_model())
              : internal::AnthropicToOpenAIChatRequest(ctx->request.body,
                                                       attempt->upstream_model());
      if (!translated.ok()) {
        skip("speaks " + std::string(ApiName(backend.api)) + ": " +
             translated.status().message());
        translation_error = translated.status();
        continue;
      }
      upstream_body = std::move(*translated);
    }
    auto key = KeyFor(backend);
    if (!key.ok()) {
      AttemptOutcome bad_key;
      bad_key.http_status = 401;
      fail_attempt(bad_key, "API key cannot be decrypted (" + key.status().message() + ")");
      continue;
    }

    if (!translate) {
      // The upstream request: the client's body with only the model replaced,
      // spliced into the client's bytes; re-serialized when the model's
      // place cannot be found that way (an escaped key, say).
      if (auto span = internal::TopLevelValueSpan(ctx->request.body, "model")) {
        upstream_body.reserve(ctx->request.body.size() + attempt->upstream_model().size() + 8);
        upstream_body.assign(ctx->request.body, 0, span->first);
        AppendJsonString(attempt->upstream_model(), &upstream_body);
        upstream_body.append(ctx->request.body, span->second);
      } else {
        model_it = doc.FindMember("model");
        model_it->value.SetString(
            attempt->upstream_model().data(),
            static_cast<rapidjson::SizeType>(attempt->upstream_model().size()),
            doc.GetAllocator());
        rapidjson::StringBuffer buffer;
        rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
        doc.Accept(writer);
        upstream_body.assign(buffer.GetString(), buffer.GetSize());
      }
    }

    UpstreamRequest up;
    up.url = UpstreamUrl(backend, !translate                      ? ctx->request.endpoint
                                  : backend.api == Api::kAnthropic ? "/messages"
                                                                   : "/chat/completions");
    up.body = std::move(upstream_body);
    up.headers = {{"content-type", "application/json"},
                  {"accept", stream ? "text/event-stream" : "application/json"}};
    if (*key) {
      const std::string_view secret = (*key)->view();
      if (backend.api == Api::kAnthropic) {
        up.headers.emplace_back("x-api-key", std::string(secret));
      } else {
        up.headers.emplace_back("authorization", "Bearer " + std::string(secret));
      }
    }
    if (backend.api == Api::kAnthropic) {
      const std::string* version = FindHeader(ctx->request.client_headers, "anthropic-version");
      up.headers.emplace_back("anthropic-version",
                              version != nullptr && !HasControlChar(*version) && version->size() < 64
                                  ? *version
                                  : std::string(kAnthropicVersion));
    }
    for (const auto& [name, value] : ctx->request.client_headers) {
      for (std::string_view allowed : kForwardedHeaders) {
        if (EqualsIgnoreCase(name, allowed) && !HasControlChar(value) && value.size() < 1024) {
          up.headers.emplace_back(std::string(allowed), value);
        }
      }
    }
    up.headers.emplace_back("x-request-id", request_id);
    const Duration timeout = std::chrono::seconds(backend.timeout_seconds);
    up.connect_timeout = std::min(options_.connect_timeout, timeout);
    up.first_byte_timeout = timeout;
    up.idle_timeout = timeout;
    up.total_timeout = stream ? std::max(timeout, kMaxStreamDuration) : timeout;
    if (deadline) {
      const Duration left = *deadline - clock_.Now();
      up.first_byte_timeout = std::min(up.first_byte_timeout, left);
      up.total_timeout = std::min(up.total_timeout, left);
    }

    ++sent;
    std::unique_ptr<UpstreamCall> call = upstream_.Start(std::move(up));
    UpstreamHead head = call->AwaitHead(cancelled);
    if (client_left) return client_gone("client disconnected before the first byte");
    if (deadline_hit && head.status == 0) head.error = TransportError::kTimeout;
    ctx->ttfb = head.ttfb;

    AttemptOutcome outcome;
    outcome.http_status = head.status;
    outcome.transport_error = head.error;
    outcome.headers = head.headers;
    outcome.ttfb = head.ttfb;
    if (head.status == 0) {
      fail_attempt(outcome, head.error_message.empty()
                                ? std::string(TransportErrorName(head.error))
                                : head.error_message);
      if (deadline_hit) break;
      continue;
    }

    const bool success = head.status >= 200 && head.status < 300;
    const std::string* content_type = FindHeader(head.headers, "content-type");
    const bool is_sse = content_type != nullptr &&
                        content_type->find("text/event-stream") != std::string::npos;
    if (success && stream && is_sse) {
      ProxyResponse r;
      r.status = head.status;
      r.headers = base_headers(plan.attempts());
      r.headers.emplace_back("content-type", "text/event-stream");
      r.headers.emplace_back("cache-control", "no-cache");
      std::unique_ptr<internal::StreamTranslator> translator;
      if (translate) {
        translator = internal::NewStreamTranslator(
            backend.api, ctx->request.api,
            {.include_usage = include_usage, .created = UnixSeconds(clock_.WallNow())});
      }
      r.stream = std::make_unique<Stream>(*this, std::move(ctx), std::move(call),
                                          clock_.Now() - attempt_start, std::move(translator));
      return r;
    }

    // A whole body: the answer, or an error to classify.
    std::string body;
    ReadResult rr;
    while ((rr = call->Read(&body, cancelled)) == ReadResult::kData) {
      if (!success && body.size() > kMaxErrorBody) break;
    }
    if (client_left) return client_gone("client disconnected");
    if (rr == ReadResult::kError && success) {
      // The body broke before anything reached the client: fail over.
      outcome.http_status = 0;
      outcome.transport_error =
          deadline_hit ? TransportError::kTimeout : call->error();
      fail_attempt(outcome, call->error_message());
      if (deadline_hit) break;
      continue;
    }
    if (success) {
      const TokenUsage u = ExtractUsage(body);
      ctx->usage = u;
      outcome.prompt_tokens = u.prompt_tokens;
      outcome.completion_tokens = u.completion_tokens;
      if (translate) {
        Result<std::string> answer =
            backend.api == Api::kAnthropic
                ? internal::AnthropicToOpenAIChatResponse(body, UnixSeconds(clock_.WallNow()))
                : internal::OpenAIChatToAnthropicResponse(body);
        if (!answer.ok()) {
          // Nothing reached the client yet: an unreadable answer fails over.
          outcome.http_status = 0;
          outcome.transport_error = TransportError::kProtocol;
          fail_attempt(outcome, answer.status().message());
          continue;
        }
        body = std::move(*answer);
        content_type = nullptr;  // JSON either way
      }
    }
    outcome.latency = clock_.Now() - attempt_start;
    const OutcomeClass cls = plan.Report(outcome);
    if (metrics_ != nullptr) {
      metrics_->RecordAttempt(backend.name, OutcomeName(cls), outcome.latency, outcome.ttfb);
    }
    if (ShouldFailOver(cls)) {
      ctx->failures.push_back(backend.name + ": " + std::to_string(head.status));
      only_timeouts = false;
      if (head.status != 429) only_rate_limits = false;
      continue;
    }
    // Success, or the client's own error: passed through as the upstream sent
    // it (in the client's wire format).
    int status = head.status;
    if (!success && translate) {
      internal::TranslatedError e =
          internal::TranslateErrorBody(backend.api, ctx->request.api, head.status, body);
      status = e.status;
      body = std::move(e.body);
      content_type = nullptr;
    }
    ProxyResponse r;
    r.status = status;
    r.headers = base_headers(plan.attempts());
    r.headers.emplace_back("content-type",
                           content_type != nullptr ? *content_type : "application/json");
    r.body = std::move(body);
    Finish(*ctx, status, success ? "" : "upstream answered " + std::to_string(head.status));
    return r;
  }

  if (sent == 0 && translation_error) {
    // Only backends of the other wire format were left, and this request
    // cannot be expressed in it: the client's request is at fault.
    Finish(*ctx, 400, translation_error->message());
    ProxyResponse r;
    r.status = 400;
    r.headers = base_headers(plan.attempts());
    r.headers.emplace_back("content-type", "application/json");
    r.body = ErrorJsonFor(ctx->request.api, 400, translation_error->message(),
                          "invalid_request_error", "unsupported_parameter",
                          translation_error->param());
    return r;
  }
  if (plan.attempts() == 0 && ctx->failures.empty()) {
    const Status exhausted = plan.ExhaustedStatus();
    return rate_limited(exhausted, plan.retry_after());
  }
  std::string summary;
  for (const std::string& f : ctx->failures) {
    if (!summary.empty()) summary += "; ";
    summary += f;
  }
  if (deadline_hit || (only_timeouts && !ctx->failures.empty())) {
    return finish_error(504, "upstream timed out (" + summary + ")", "timeout",
                        "upstream_timeout");
  }
  if (only_rate_limits && !ctx->failures.empty()) {
    // Every attempt was refused with 429 and nothing else is left to try.
    RoutePlan probe = router_.Route(model);
    if (!probe.ok() && probe.status().code() == StatusCode::kResourceExhausted) {
      return rate_limited(ResourceExhaustedError("every backend serving '" + model +
                                                 "' is rate limited (" + summary + ")"),
                          probe.retry_after());
    }
  }
  return finish_error(502, "all upstream attempts failed: " + summary, "upstream_error",
                      "upstream_error");
}

std::string Proxy::ModelsJson() const {
  const auto snapshot = router_.snapshot();
  std::string out = "{\"object\":\"list\",\"data\":[";
  bool first = true;
  for (const std::string& model : snapshot->models()) {
    if (!first) out += ',';
    first = false;
    out += "{\"id\":";
    AppendJsonString(model, &out);
    out += ",\"object\":\"model\",\"created\":0,\"owned_by\":\"switchboard\"}";
  }
  out += "]}";
  return out;
}

}  // namespace switchboard
