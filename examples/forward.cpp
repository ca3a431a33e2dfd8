// forward: the proxy engine without the server. Sends one chat completion
// to an OpenAI-compatible upstream, whole and then streamed, through
// switchboard's Proxy (routing, failover, usage record), and prints what
// comes back.
//
//   ./forward http://127.0.0.1:8000/v1 [model]
//   OPENAI_API_KEY=sk-... ./forward https://api.openai.com/v1 gpt-4o-mini
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "switchboard/switchboard.h"

namespace sb = switchboard;

namespace {

int Fail(const sb::Status& status) {
  std::fprintf(stderr, "forward: %s\n", status.ToString().c_str());
  return 1;
}

void PrintHead(const sb::ProxyResponse& r) {
  std::printf("HTTP %d\n", r.status);
  for (const char* name : {"x-switchboard-backend", "x-switchboard-attempts", "x-request-id"}) {
    if (const std::string* v = sb::FindHeader(r.headers, name)) {
      std::printf("%s: %s\n", name, v->c_str());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s UPSTREAM_BASE_URL [model]\n", argv[0]);
    return 2;
  }
  const std::string base_url = argv[1];
  const std::string model = argc > 2 ? argv[2] : "gpt-4o-mini";
  const char* api_key = std::getenv("OPENAI_API_KEY");

  if (sb::Status s = sb::InitCrypto(); !s.ok()) return Fail(s);
  std::unique_ptr<sb::Storage> storage = sb::NewMemoryStorage();
  auto key = sb::MasterKey::Generate();
  if (!key.ok()) return Fail(key.status());
  auto cipher = sb::KeyCipher::Create(*std::move(key));
  if (!cipher.ok()) return Fail(cipher.status());
  sb::StorageWriter writer(*storage);
  sb::Router router(sb::Clock::Real(), &writer);
  sb::AdminService admin(*storage, router, **cipher, sb::Clock::Real());

  // One backend serving every model name as it is ("*").
  std::string backend_json = R"({"name":"upstream","api_base_url":)";
  sb::AppendJsonString(base_url, &backend_json);
  if (api_key != nullptr) {
    backend_json += R"(,"api_key":)";
    sb::AppendJsonString(api_key, &backend_json);
  }
  backend_json += "}";
  if (auto b = admin.CreateBackend(backend_json); !b.ok()) return Fail(b.status());

  auto upstream = sb::NewCurlUpstreamClient({});
  if (!upstream.ok()) return Fail(upstream.status());
  sb::Proxy proxy(router, **upstream, cipher->get(), &writer, sb::Clock::Real());

  std::string body = R"({"model":)";
  sb::AppendJsonString(model, &body);
  body += R"(,"messages":[{"role":"user","content":"Say hello."}])";

  // Whole: Handle() returns once the upstream answered (or failover ended).
  sb::ProxyResponse whole = proxy.Handle({.endpoint = "/chat/completions", .body = body + "}"});
  PrintHead(whole);
  std::printf("%s\n\n", whole.body.c_str());

  // Streamed: the head is decided, then each SSE event as it arrives.
  sb::ProxyResponse streamed =
      proxy.Handle({.endpoint = "/chat/completions", .body = body + R"(,"stream":true})"});
  PrintHead(streamed);
  std::string chunk;
  int chunks = 0;
  while (streamed.stream && streamed.stream->Next(&chunk)) {
    std::printf("%s", chunk.c_str());
    std::fflush(stdout);
    chunk.clear();
    ++chunks;
  }
  std::printf("(%d chunk(s))\n", chunks);
  if (sb::Status s = writer.Flush(); !s.ok()) return Fail(s);
  return whole.status == 200 && streamed.status == 200 && chunks > 0 ? 0 : 1;
}
