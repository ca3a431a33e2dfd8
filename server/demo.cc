#include "demo.h"

#include <httplib.h>
#include <rapidjson/document.h>
#include <sodium.h>

#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "http_server.h"
#include "import.h"
#include "switchboard/clock.h"
#include "switchboard/json.h"

namespace switchboard::server {

namespace {

constexpr std::string_view kAnswer =
    "Hello! This answer comes from {name}, a mock upstream built into switchboard's demo. "
    "Each word arrives as its own server-sent event, the way a real model streams tokens.";

std::string AnswerFrom(const std::string& name) {
  std::string text(kAnswer);
  const size_t at = text.find("{name}");
  text.replace(at, 6, name);
  return text;
}

// The answer as stream pieces: "Hello!", " This", " answer", ...
std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start + 1);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end;
  }
  return out;
}

int64_t CountWords(std::string_view text) {
  int64_t n = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

// A rough prompt size: the words of every string in the request's messages,
// prompt or input.
int64_t CountPromptWords(const rapidjson::Value& v) {
  if (v.IsString()) return CountWords(std::string_view(v.GetString(), v.GetStringLength()));
  int64_t n = 0;
  if (v.IsArray()) {
    for (const auto& e : v.GetArray()) n += CountPromptWords(e);
  } else if (v.IsObject()) {
    for (const auto& m : v.GetObject()) n += CountPromptWords(m.value);
  }
  return n;
}

std::string Quoted(std::string_view text) {
  std::string out;
  AppendJsonString(text, &out);
  return out;
}

std::string ErrorJson(std::string_view message, std::string_view type, std::string_view code) {
  return R"({"error":{"message":)" + Quoted(message) + R"(,"type":)" + Quoted(type) +
         R"(,"param":null,"code":)" + Quoted(code) + "}}";
}

std::string UsageJson(int64_t prompt, int64_t completion) {
  return R"({"prompt_tokens":)" + std::to_string(prompt) + R"(,"completion_tokens":)" +
         std::to_string(completion) + R"(,"total_tokens":)" + std::to_string(prompt + completion) +
         "}";
}

int64_t UnixSeconds() { return ToUnixMillis(Clock::Real().WallNow()) / 1000; }

struct ParsedRequest {
  rapidjson::Document doc;
  std::string model;
  bool stream = false;
};

// Parses the body; on a bad one, answers 400 and returns false.
bool Parse(const httplib::Request& req, httplib::Response& res, ParsedRequest* out) {
  out->doc.Parse<rapidjson::kParseIterativeFlag>(req.body.data(), req.body.size());
  if (out->doc.HasParseError() || !out->doc.IsObject()) {
    res.status = 400;
    res.set_content(ErrorJson("We could not parse the JSON body of your request.",
                              "invalid_request_error", "invalid_json"),
                    "application/json");
    return false;
  }
  const auto model = out->doc.FindMember("model");
  if (model == out->doc.MemberEnd() || !model->value.IsString()) {
    res.status = 400;
    res.set_content(
        ErrorJson("you must provide a model parameter", "invalid_request_error", "missing_model"),
        "application/json");
    return false;
  }
  out->model.assign(model->value.GetString(), model->value.GetStringLength());
  const auto stream = out->doc.FindMember("stream");
  out->stream = stream != out->doc.MemberEnd() && stream->value.IsBool() && stream->value.GetBool();
  return true;
}

// The state of one streamed answer, pulled by httplib one event at a time.
struct StreamState {
  std::vector<std::string> events;  // complete "data: ...\n\n" events
  size_t next = 0;
};

void StreamEvents(httplib::Response& res, std::vector<std::string> events,
                  std::chrono::milliseconds interval) {
  auto state = std::make_shared<StreamState>();
  state->events = std::move(events);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream",
                                   [state, interval](size_t, httplib::DataSink& sink) {
                                     if (state->next >= state->events.size()) {
                                       sink.done();
                                       return true;
                                     }
                                     // The pause a real model takes between tokens (not before the
                                     // first).
                                     if (state->next > 0 && interval.count() > 0)
                                       std::this_thread::sleep_for(interval);
                                     const std::string& event = state->events[state->next++];
                                     return sink.write(event.data(), event.size());
                                   });
}

std::string Base64OfFloats(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof(bits));
    for (int b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

}  // namespace

MockOpenAIUpstream::MockOpenAIUpstream(std::string name, DemoOptions options, int rate_limit_every)
    : name_(std::move(name)), options_(options), rate_limit_every_(rate_limit_every) {}

MockOpenAIUpstream::~MockOpenAIUpstream() { Stop(); }

std::string MockOpenAIUpstream::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/v1";
}

Status MockOpenAIUpstream::Start() {
  if (http_) return FailedPreconditionError("demo upstream " + name_ + " already started");
  // Our HttpServer, as in the real server: a thread per connection (streams
  // must not queue) and a stop() that does not wait out idle keep-alives.
  HttpServerOptions http_options;
  http_options.max_threads = 256;
  http_ = std::make_unique<HttpServer>(http_options);
  Register();
  port_ = http_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) {
    http_.reset();
    return UnavailableError("demo upstream " + name_ + ": cannot bind 127.0.0.1");
  }
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return Status::Ok();
}

void MockOpenAIUpstream::Stop() {
  if (!http_) return;
  http_->stop();
  if (thread_.joinable()) thread_.join();
  http_.reset();
}

void MockOpenAIUpstream::Register() {
  // Every request: check the key, and on demo-primary every Nth is a 429.
  // Returns false when it answered already.
  auto admit = [this](const httplib::Request& req, httplib::Response& res) {
    const int64_t n = ++requests_;
    if (req.get_header_value("Authorization") != "Bearer " + std::string(kDemoApiKey)) {
      res.status = 401;
      res.set_content(ErrorJson("Incorrect API key provided (the demo upstream expects the demo "
                                "key).",
                                "invalid_request_error", "invalid_api_key"),
                      "application/json");
      return false;
    }
    if (rate_limit_every_ > 0 && n % rate_limit_every_ == 0) {
      res.status = 429;
      res.set_header("Retry-After", std::to_string(options_.retry_after_seconds));
      res.set_content(
          ErrorJson("Rate limit reached for " + name_ + " (simulated by the demo: every " +
                        std::to_string(rate_limit_every_) + "th request).",
                    "requests", "rate_limit_exceeded"),
          "application/json");
      return false;
    }
    return true;
  };

  http_->Post("/v1/chat/completions", [this, admit](const httplib::Request& req,
                                                    httplib::Response& res) {
    if (!admit(req, res)) return;
    ParsedRequest p;
    if (!Parse(req, res, &p)) return;
    const auto messages = p.doc.FindMember("messages");
    const int64_t prompt = messages == p.doc.MemberEnd() ? 0 : CountPromptWords(messages->value);
    const std::string answer = AnswerFrom(name_);
    const std::vector<std::string> words = Words(answer);
    const int64_t completion = static_cast<int64_t>(words.size());
    const std::string id = "chatcmpl-demo-" + std::to_string(++ids_);
    const std::string head = R"({"id":")" + id + R"(","object":"chat.completion)";
    const std::string tail = R"(","created":)" + std::to_string(UnixSeconds()) + R"(,"model":)" +
                             Quoted(p.model) + R"(,"system_fingerprint":"demo")";
    if (!p.stream) {
      res.set_content(head + tail + R"(,"choices":[{"index":0,"message":{"role":"assistant",)" +
                          R"("content":)" + Quoted(answer) +
                          R"(,"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":)" +
                          UsageJson(prompt, completion) + "}",
                      "application/json");
      return;
    }
    const std::string chunk_head = head + ".chunk" + tail;
    std::vector<std::string> events;
    auto event = [](const std::string& json) { return "data: " + json + "\n\n"; };
    events.push_back(event(
        chunk_head +
        R"(,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})"));
    for (const std::string& word : words) {
      events.push_back(event(chunk_head + R"(,"choices":[{"index":0,"delta":{"content":)" +
                             Quoted(word) + R"(},"logprobs":null,"finish_reason":null}]})"));
    }
    events.push_back(
        event(chunk_head +
              R"(,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})"));
    events.push_back(
        event(chunk_head + R"(,"choices":[],"usage":)" + UsageJson(prompt, completion) + "}"));
    events.push_back("data: [DONE]\n\n");
    StreamEvents(res, std::move(events), options_.chunk_interval);
  });

  http_->Post("/v1/completions", [this, admit](const httplib::Request& req,
                                               httplib::Response& res) {
    if (!admit(req, res)) return;
    ParsedRequest p;
    if (!Parse(req, res, &p)) return;
    const auto prompt_it = p.doc.FindMember("prompt");
    const int64_t prompt = prompt_it == p.doc.MemberEnd() ? 0 : CountPromptWords(prompt_it->value);
    const std::string answer = AnswerFrom(name_);
    const std::vector<std::string> words = Words(answer);
    const int64_t completion = static_cast<int64_t>(words.size());
    const std::string head = R"({"id":"cmpl-demo-)" + std::to_string(++ids_) +
                             R"(","object":"text_completion","created":)" +
                             std::to_string(UnixSeconds()) + R"(,"model":)" + Quoted(p.model);
    if (!p.stream) {
      res.set_content(head + R"(,"choices":[{"text":)" + Quoted(answer) +
                          R"(,"index":0,"logprobs":null,"finish_reason":"stop"}],"usage":)" +
                          UsageJson(prompt, completion) + "}",
                      "application/json");
      return;
    }
    std::vector<std::string> events;
    for (const std::string& word : words) {
      events.push_back("data: " + head + R"(,"choices":[{"text":)" + Quoted(word) +
                       R"(,"index":0,"logprobs":null,"finish_reason":null}]})" + "\n\n");
    }
    events.push_back(
        "data: " + head +
        R"(,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}]})" + "\n\n");
    events.push_back("data: " + head + R"(,"choices":[],"usage":)" + UsageJson(prompt, completion) +
                     "}\n\n");
    events.push_back("data: [DONE]\n\n");
    StreamEvents(res, std::move(events), options_.chunk_interval);
  });

  http_->Post("/v1/embeddings", [admit](const httplib::Request& req, httplib::Response& res) {
    if (!admit(req, res)) return;
    ParsedRequest p;
    if (!Parse(req, res, &p)) return;
    const auto input = p.doc.FindMember("input");
    size_t count = 1;
    if (input != p.doc.MemberEnd() && input->value.IsArray() && !input->value.Empty() &&
        !input->value[0].IsNumber()) {
      count = input->value.Size();  // a list of inputs (not one tokenized input)
    }
    const int64_t prompt = input == p.doc.MemberEnd() ? 0 : CountPromptWords(input->value);
    const auto format = p.doc.FindMember("encoding_format");
    const bool base64 = format != p.doc.MemberEnd() && format->value.IsString() &&
                        std::string_view(format->value.GetString()) == "base64";
    static const std::vector<float> kVector = {0.0125f, -0.025f, 0.05f,  -0.1f,
                                               0.2f,    -0.4f,   0.125f, 0.875f};
    std::string vector_json;
    if (base64) {
      vector_json = Quoted(Base64OfFloats(kVector));
    } else {
      vector_json = "[";
      for (size_t i = 0; i < kVector.size(); ++i) {
        if (i > 0) vector_json += ",";
        vector_json += std::to_string(kVector[i]);
      }
      vector_json += "]";
    }
    std::string body = R"({"object":"list","data":[)";
    for (size_t i = 0; i < count; ++i) {
      if (i > 0) body += ",";
      body += R"({"object":"embedding","index":)" + std::to_string(i) + R"(,"embedding":)" +
              vector_json + "}";
    }
    body += R"(],"model":)" + Quoted(p.model) + R"(,"usage":{"prompt_tokens":)" +
            std::to_string(prompt) + R"(,"total_tokens":)" + std::to_string(prompt) + "}}";
    res.set_content(body, "application/json");
  });

  http_->Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        R"({"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":0,"owned_by":"switchboard-demo"}]})",
        "application/json");
  });
}

DemoUpstreams::DemoUpstreams(DemoOptions options)
    : primary_("demo-primary", options, options.rate_limit_every),
      fallback_("demo-fallback", options, /*rate_limit_every=*/0) {}

DemoUpstreams::~DemoUpstreams() { Stop(); }

Status DemoUpstreams::Start() {
  SWITCHBOARD_RETURN_IF_ERROR(primary_.Start());
  Status s = fallback_.Start();
  if (!s.ok()) primary_.Stop();
  return s;
}

void DemoUpstreams::Stop() {
  primary_.Stop();
  fallback_.Stop();
}

Status UpsertDemoBackends(Storage& storage, const KeyCipher& cipher, const DemoUpstreams& demo,
                          SystemTime now) {
  for (const auto& [upstream, pool] :
       {std::pair{&demo.primary(), "primary"}, std::pair{&demo.fallback(), "fallback"}}) {
    BackendInput in;
    in.name = upstream->name();
    in.label = "Demo upstream (" + std::string(pool) + " pool, in-process mock)";
    in.api_base_url = upstream->base_url();
    in.api_key = std::string(kDemoApiKey);
    in.api = Api::kOpenAI;
    in.timeout_seconds = 30;
    in.rpm_limit = 0;
    in.tpm_limit = 0;
    in.max_concurrency = 0;
    in.pool = pool;
    in.enabled = true;
    in.model_mappings = std::map<std::string, ModelMapping>{
        {"gpt-4o-mini", ModelMapping{"gpt-4o-mini", 1}},
        {std::string(kWildcardModel), ModelMapping{std::string(kWildcardModel), 1}}};
    Result<UpsertResult> r = UpsertBackend(storage, cipher, in, BackendSource::kDemo, now);
    if (!r.ok()) return r.status();
  }
  return Status::Ok();
}

}  // namespace switchboard::server
