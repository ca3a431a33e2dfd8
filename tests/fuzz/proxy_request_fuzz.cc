// The proxy's request rewrite (Proxy::Handle in lib/src/proxy.cc: parse the
// client's JSON, replace "model" with the backend's upstream id, serialize,
// pick the headers that go upstream) with arbitrary client bodies and headers.
// The upstream is a stub that records what it was sent and answers 200.
// Input: byte 0 picks the endpoint; then client header lines ("name: value"),
// an empty line, and the body.
// Invariants: no crash or sanitizer report; the upstream URL is always the
// backend's base URL joined with a known endpoint path; the only credential
// sent is the backend's key; only allowlisted headers go upstream, none with
// CR/LF; the body sent is a JSON object whose "model" is the upstream id.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "rapidjson/document.h"
#include "switchboard/clock.h"
#include "switchboard/proxy.h"
#include "switchboard/router.h"
#include "switchboard/secrets.h"

namespace {

using namespace switchboard;

constexpr char kBase[] = "http://upstream.test/v1";
constexpr char kKey[] = "sk-fuzz-backend-key";

// Answers every request at once: JSON, or SSE when the client asked to stream.
class StubCall final : public UpstreamCall {
 public:
  explicit StubCall(bool sse) : sse_(sse) {}
  UpstreamHead AwaitHead(const CancelFn&) override {
    UpstreamHead h;
    h.status = 200;
    h.headers = {{"content-type", sse_ ? "text/event-stream" : "application/json"}};
    return h;
  }
  ReadResult Read(std::string* out, const CancelFn&) override {
    if (sent_) return ReadResult::kEnd;
    sent_ = true;
    *out += sse_ ? "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
                 : "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}";
    return ReadResult::kData;
  }
  TransportError error() const override { return TransportError::kNone; }
  const std::string& error_message() const override { return message_; }

 private:
  bool sse_;
  bool sent_ = false;
  std::string message_;
};

class StubUpstream final : public UpstreamClient {
 public:
  std::unique_ptr<UpstreamCall> Start(UpstreamRequest request) override {
    const bool sse = FindHeader(request.headers, "accept") != nullptr &&
                     *FindHeader(request.headers, "accept") == "text/event-stream";
    requests.push_back(std::move(request));
    return std::make_unique<StubCall>(sse);
  }
  std::vector<UpstreamRequest> requests;
};

struct World {
  ManualClock clock{SystemTime(std::chrono::seconds(1767225600))};
  Router router{clock, nullptr};
  StubUpstream upstream;
  std::unique_ptr<KeyCipher> cipher;
  std::unique_ptr<Proxy> proxy;

  World() {
    FUZZ_CHECK(InitCrypto().ok());
    auto key = MasterKey::Generate();
    FUZZ_CHECK(key.ok());
    auto c = KeyCipher::Create(std::move(*key));
    FUZZ_CHECK(c.ok());
    cipher = std::move(*c);
    Backend b;
    b.id = "bkd_fuzz";
    b.name = "fuzz";
    b.api_base_url = kBase;
    b.model_mappings["gpt-4o"] = {"gpt-4o-upstream", 1};
    b.model_mappings["*"] = {"*", 1};
    b.api_key_ciphertext = *cipher->Encrypt(kKey, b.id);
    FUZZ_CHECK(router.Update({b}, Config{}).ok());
    proxy = std::make_unique<Proxy>(router, upstream, cipher.get(), nullptr, clock);
  }
};

bool IsAllowedUpstreamHeader(std::string_view name) {
  for (std::string_view allowed : {"content-type", "accept", "authorization", "x-request-id",
                                   "openai-beta", "anthropic-beta", "anthropic-version"}) {
    if (name == allowed) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();
  if (size < 1) return 0;
  static const char* const kEndpoints[] = {"/chat/completions", "/completions", "/embeddings",
                                           "/messages"};
  ProxyRequest request;
  request.endpoint = kEndpoints[data[0] % 4];
  request.api = request.endpoint == "/messages" ? Api::kAnthropic : Api::kOpenAI;

  std::string_view rest = fuzz::AsView(data + 1, size - 1);
  const size_t split = rest.find("\n\n");
  std::string_view head = split == std::string_view::npos ? std::string_view() : rest.substr(0, split);
  request.body = std::string(split == std::string_view::npos ? rest : rest.substr(split + 2));
  while (!head.empty()) {
    const size_t nl = head.find('\n');
    const std::string_view line = head.substr(0, nl);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      request.client_headers.emplace_back(std::string(line.substr(0, colon)),
                                          std::string(line.substr(colon + 1)));
      if (line.substr(0, colon) == "x-request-id") {
        request.request_id = std::string(line.substr(colon + 1));
      }
    }
    head = nl == std::string_view::npos ? std::string_view() : head.substr(nl + 1);
  }

  std::string client_model;
  {
    rapidjson::Document client;
    client.Parse<rapidjson::kParseIterativeFlag>(request.body.data(), request.body.size());
    if (!client.HasParseError() && client.IsObject()) {
      auto m = client.FindMember("model");
      if (m != client.MemberEnd() && m->value.IsString()) {
        client_model.assign(m->value.GetString(), m->value.GetStringLength());
      }
    }
  }
  const std::string expected_model = client_model == "gpt-4o" ? "gpt-4o-upstream" : client_model;

  world->upstream.requests.clear();
  ProxyResponse response = world->proxy->Handle(std::move(request));
  if (response.stream) {
    std::string chunk;
    while (response.stream->Next(&chunk)) chunk.clear();
  }
  FUZZ_CHECK(response.status >= 200 && response.status < 600);
  for (const auto& [name, value] : response.headers) {
    FUZZ_CHECK(value.find_first_of("\r\n") == std::string::npos);
  }

  for (const UpstreamRequest& up : world->upstream.requests) {
    bool known_path = false;
    for (const char* endpoint : kEndpoints) {
      if (up.url == std::string(kBase) + endpoint) known_path = true;
    }
    FUZZ_CHECK(known_path);
    int credentials = 0;
    for (const auto& [name, value] : up.headers) {
      FUZZ_CHECK(IsAllowedUpstreamHeader(name));
      FUZZ_CHECK(value.find_first_of("\r\n") == std::string::npos);
      if (name == "authorization") {
        FUZZ_CHECK(value == std::string("Bearer ") + kKey);
        ++credentials;
      }
    }
    FUZZ_CHECK(credentials == 1);
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseIterativeFlag>(up.body.data(), up.body.size());
    FUZZ_CHECK(!doc.HasParseError() && doc.IsObject());
    auto model = doc.FindMember("model");
    FUZZ_CHECK(model != doc.MemberEnd() && model->value.IsString());
    FUZZ_CHECK(std::string_view(model->value.GetString(), model->value.GetStringLength()) ==
               expected_model);
  }
  return 0;
}
