// The server process's life end to end: start-up output, a clean exit on
// SIGTERM, and what happens to a stream still open when SIGTERM arrives
// (README "Running the server": drain, then error events, usage written,
// exit 0).
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "switchboard/storage.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";

TEST_CASE("The server prints its listening line and exits 0 on SIGTERM when idle", "[lifecycle]") {
  MockUpstream mock;
  ServerProcess server({.backends = {Backend("primary", mock.base_url(), "primary")}});
  INFO(server.error());
  REQUIRE(server.ok());
  CHECK(server.output().find("switchboard listening on http://127.0.0.1:" +
                             std::to_string(server.port()) + "\n") != std::string::npos);
  REQUIRE(server.Signal(SIGTERM));
  const std::optional<int> status = server.WaitForExit(seconds(15));
  INFO(server.output());
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  CHECK(std::filesystem::exists(server.db_path()));
}

TEST_CASE("A bad import file makes the server exit non-zero without listening", "[lifecycle]") {
  BackendSpec bad = Backend("bad name with spaces", "http://127.0.0.1:1/v1", "primary");
  ServerProcess server({.backends = {bad}});
  CHECK_FALSE(server.ok());
  CHECK(server.exit_status().has_value());
  CHECK(server.exit_status().value_or(0) != 0);
  CHECK(server.error().find("import") != std::string::npos);
}

// The usage record of `request_id` in the database at `db_path` (the server
// must have exited). nullopt when there is none.
std::optional<UsageRecord> FindUsage(const std::string& db_path, const std::string& request_id) {
  Result<std::unique_ptr<Storage>> storage = OpenSqliteStorage({.path = db_path});
  INFO(storage.status().ToString());
  REQUIRE(storage.ok());
  Result<UsagePage> page = (*storage)->ListUsage(UsageQuery{.limit = 1000});
  INFO(page.status().ToString());
  REQUIRE(page.ok());
  for (const UsageRecord& r : page->records) {
    if (r.request_id == request_id) return r;
  }
  return std::nullopt;
}

// A stream held open by the mock after two events; the client reads on its
// own thread.
struct HeldStream {
  Notification release;
  MockUpstream mock;
  std::vector<std::string> events;

  HeldStream() {
    MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b", "c"});
    events = reply.sse_events;
    reply.before_event = [this](size_t index) {
      if (index == 2) release.WaitFor(seconds(30));
    };
    mock.SetDefault(kChatPath, reply);
  }
  ~HeldStream() {
    release.Notify();
    mock.Stop();
  }
};

TEST_CASE("SIGTERM ends a stream still open after the drain period with an error event, exit 0",
          "[lifecycle]") {
  HeldStream held;
  ServerProcessOptions options;
  options.backends = {Backend("primary", held.mock.base_url(), "primary")};
  options.extra_args = {"--drain-seconds", "1"};
  TestServer server(std::move(options));

  Notification two_events;
  auto client = std::async(std::launch::async, [&] {
    return PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"),
                         {{"x-request-id", "held-stream-1"}}, [&](const std::string& body) {
                           if (SseEvents(body).size() >= 2) two_events.Notify();
                           return true;
                         });
  });
  REQUIRE(two_events.WaitFor(seconds(20)));

  const SteadyTime signalled = SteadyClock::now();
  REQUIRE(server.process().Signal(SIGTERM));
  const std::optional<int> status = server.process().WaitForExit(seconds(20));
  const long long exit_ms = MillisBetween(signalled, SteadyClock::now());
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  // 1 s of drain, then the stream is ended; bounded well below the kill.
  CHECK(exit_ms >= 900);
  CHECK(exit_ms < 10000);

  REQUIRE(client.wait_for(seconds(20)) == std::future_status::ready);
  StreamedResponse res = client.get();
  INFO(res.error);
  INFO(res.body);
  CHECK(res.status == 200);
  const std::vector<std::string> got = res.events();
  REQUIRE(got.size() >= 3);
  CHECK(got[0] + "\n\n" + got[1] + "\n\n" == held.events[0] + held.events[1]);
  CHECK(IsErrorEvent(got.back()));
  CHECK(OpenAIErrorProblem(EventData(got.back())) == "");
  CHECK(res.body.find("[DONE]") == std::string::npos);
  // The pending usage record was written before the exit.
  REQUIRE(std::filesystem::exists(server.process().db_path()));
  const std::optional<UsageRecord> usage = FindUsage(server.process().db_path(), "held-stream-1");
  REQUIRE(usage.has_value());
  CHECK(usage->stream);
  CHECK(usage->backend_name == "primary");
  // Recorded as ended by the shutdown, not as a client that went away.
  CHECK(usage->status == 503);
  CHECK(usage->error.find("shutdown") != std::string::npos);
}

TEST_CASE("SIGTERM lets a stream that finishes within the drain period complete, exit 0",
          "[lifecycle]") {
  HeldStream held;
  ServerProcessOptions options;
  options.backends = {Backend("primary", held.mock.base_url(), "primary")};
  options.extra_args = {"--drain-seconds", "20"};
  TestServer server(std::move(options));

  Notification two_events;
  auto client = std::async(std::launch::async, [&] {
    return PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"),
                         {{"x-request-id", "held-stream-1"}}, [&](const std::string& body) {
                           if (SseEvents(body).size() >= 2) two_events.Notify();
                           return true;
                         });
  });
  REQUIRE(two_events.WaitFor(seconds(20)));

  REQUIRE(server.process().Signal(SIGTERM));
  // The server stops accepting, but the stream in flight carries on.
  REQUIRE(server.process().WaitForOutput("terminated", seconds(10)));
  CHECK_FALSE(server.process().WaitForExit(milliseconds(200)).has_value());
  held.release.Notify();

  const std::optional<int> status = server.process().WaitForExit(seconds(15));
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  REQUIRE(client.wait_for(seconds(20)) == std::future_status::ready);
  StreamedResponse res = client.get();
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  std::string all;
  for (const std::string& e : held.events) all += e;
  CHECK(res.body == all);
  REQUIRE(std::filesystem::exists(server.process().db_path()));
  const std::optional<UsageRecord> usage = FindUsage(server.process().db_path(), "held-stream-1");
  REQUIRE(usage.has_value());
  CHECK(usage->status == 200);
  CHECK(usage->stream);
  CHECK(usage->error == "");
  CHECK(usage->prompt_tokens == 10);  // from the stream's usage chunk
  CHECK(usage->completion_tokens == 20);
}

}  // namespace
}  // namespace switchboard::testing
