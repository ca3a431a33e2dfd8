// Many clients at once through the real server binary: every request is
// answered, with its own answer, and the upstream sees each exactly once.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";

// The upstream echoes the marker the client put in its message.
MockReply EchoReply(const RecordedRequest& req) {
  const size_t at = req.body.find("marker-");
  const size_t end = at == std::string::npos ? at : req.body.find('"', at);
  const std::string marker = at == std::string::npos ? "none" : req.body.substr(at, end - at);
  return ChatCompletionReply("gpt-4o-upstream", "echo:" + marker);
}

TEST_CASE("200 concurrent requests are all answered with their own answers", "[concurrency]") {
  constexpr int kClients = 200;
  MockUpstream mock(/*threads=*/kClients + 16);
  mock.SetHandler(kChatPath, EchoReply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  std::mutex mu;
  std::condition_variable go_cv;
  bool go = false;  // guarded by mu
  std::vector<int> statuses(kClients, 0);
  std::vector<std::string> bodies(kClients);
  std::vector<std::string> errors(kClients);
  std::vector<std::thread> threads;
  threads.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      {
        std::unique_lock<std::mutex> lock(mu);
        go_cv.wait_for(lock, seconds(30), [&] { return go; });
      }
      httplib::Client client = server.Client();
      auto res = client.Post("/v1/chat/completions",
                             ChatBody("gpt-4o", "marker-" + std::to_string(i)), "application/json");
      if (!res) {
        errors[i] = httplib::to_string(res.error());
        return;
      }
      statuses[i] = res->status;
      bodies[i] = res->body;
    });
  }
  const SteadyTime start = SteadyClock::now();
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
  }
  go_cv.notify_all();
  for (std::thread& t : threads) t.join();
  const long long elapsed = MillisBetween(start, SteadyClock::now());
  INFO("200 requests took " << elapsed << " ms");

  int ok = 0;
  for (int i = 0; i < kClients; ++i) {
    const bool right =
        statuses[i] == 200 &&
        bodies[i] == ChatCompletionJson("gpt-4o-upstream", "echo:marker-" + std::to_string(i));
    if (!right) {
      UNSCOPED_INFO("client " << i << ": status " << statuses[i] << " error '" << errors[i]
                              << "' body " << bodies[i].substr(0, 300));
    }
    ok += right ? 1 : 0;
  }
  CHECK(ok == kClients);
  CHECK(mock.request_count() == static_cast<size_t>(kClients));
  // Each marker reached the upstream exactly once.
  std::multiset<std::string> markers;
  for (const RecordedRequest& r : mock.requests()) {
    const size_t at = r.body.find("marker-");
    REQUIRE(at != std::string::npos);
    markers.insert(r.body.substr(at, r.body.find('"', at) - at));
  }
  for (int i = 0; i < kClients; ++i) {
    CHECK(markers.count("marker-" + std::to_string(i)) == 1);
  }
}

TEST_CASE("Concurrent streams are each delivered whole and in order", "[concurrency]") {
  constexpr int kClients = 40;
  MockUpstream mock(/*threads=*/kClients + 16);
  mock.SetHandler(kChatPath, [](const RecordedRequest& req) {
    const size_t at = req.body.find("marker-");
    const std::string marker = req.body.substr(at, req.body.find('"', at) - at);
    MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {marker, "-1", "-2", "-3"});
    reply.delay_between = milliseconds(20);
    return reply;
  });
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  std::vector<StreamedResponse> results(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      results[i] = PostStreaming(server.port(), "/v1/chat/completions",
                                 StreamChatBody("gpt-4o", "marker-" + std::to_string(i)));
    });
  }
  for (std::thread& t : threads) t.join();

  int ok = 0;
  for (int i = 0; i < kClients; ++i) {
    std::string expected;
    for (const std::string& e : ChatCompletionChunkEvents(
             "gpt-4o-upstream", {"marker-" + std::to_string(i), "-1", "-2", "-3"})) {
      expected += e;
    }
    const bool right = results[i].ok && results[i].status == 200 && results[i].body == expected;
    if (!right) {
      UNSCOPED_INFO("client " << i << ": " << results[i].error << " status " << results[i].status
                              << " body " << results[i].body.substr(0, 300));
    }
    ok += right ? 1 : 0;
  }
  CHECK(ok == kClients);
  CHECK(mock.request_count() == static_cast<size_t>(kClients));
}

}  // namespace
}  // namespace switchboard::testing
