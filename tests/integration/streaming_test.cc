// Streaming end to end (CONTRACT "Proxy surface", Streaming): the real
// server binary between a client and mock upstreams that stream SSE events.
// Events are forwarded as they arrive; headers go out only after an
// upstream answered 2xx; failures after the first byte end the stream with
// an error event; a client that goes away aborts the upstream.
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";

std::string Concat(const std::vector<std::string>& events, size_t count = SIZE_MAX) {
  std::string out;
  for (size_t i = 0; i < events.size() && i < count; ++i) out += events[i];
  return out;
}

// How many "data: " lines the raw bytes received so far carry after the head.
size_t DataEventsIn(const std::string& raw) {
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  size_t count = 0;
  for (size_t at = raw.find("data: ", head_end); at != std::string::npos;
       at = raw.find("data: ", at + 6)) {
    ++count;
  }
  return count;
}

TEST_CASE("Each SSE event reaches the client before the upstream sends the next one",
          "[streaming]") {
  // The mock holds event i until the client has seen event i-1: a server that
  // buffered would stall it (bounded, then recorded as out of step).
  std::mutex mu;
  std::condition_variable cv;
  size_t client_events = 0;  // guarded by mu
  bool out_of_step = false;  // guarded by mu
  MockUpstream mock;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"one", " two", " three"});
  const std::vector<std::string> events = reply.sse_events;
  reply.before_event = [&](size_t index) {
    if (index == 0) return;
    std::unique_lock<std::mutex> lock(mu);
    if (out_of_step) return;
    if (!cv.wait_for(lock, seconds(5), [&] { return client_events >= index; })) {
      out_of_step = true;
    }
  };
  mock.SetDefault(kChatPath, reply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  StreamedResponse res = PostStreaming(server.port(), "/v1/chat/completions",
                                       StreamChatBody("gpt-4o"), {}, [&](const std::string& b) {
                                         {
                                           std::lock_guard<std::mutex> lock(mu);
                                           client_events = SseEvents(b).size();
                                         }
                                         cv.notify_all();
                                         return true;
                                       });
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK_FALSE(out_of_step);
  }
  CHECK(res.body == Concat(events));
}

TEST_CASE("Events sent 200 ms apart reach the client as they are sent, not at the end",
          "[streaming]") {
  std::mutex mu;
  std::vector<SteadyTime> sent;  // guarded by mu: when the mock wrote each event
  MockUpstream mock;
  MockReply reply =
      ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b", "c", "d", "e"});  // 9 events
  const size_t n = reply.sse_events.size();
  reply.delay_between = milliseconds(200);
  reply.before_event = [&](size_t) {
    std::lock_guard<std::mutex> lock(mu);
    sent.push_back(SteadyClock::now());
  };
  mock.SetDefault(kChatPath, reply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  REQUIRE(res.events().size() == n);
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(sent.size() == n);

  const SteadyTime first_arrival = res.EventArrival(0);
  const SteadyTime last_arrival = res.EventArrival(n - 1);
  // The first event was at the client long before the upstream sent the
  // last one (they are 8 x 200 ms apart).
  CHECK(first_arrival < sent[n - 1]);
  CHECK(MillisBetween(first_arrival, sent[n - 1]) >= 800);
  CHECK(MillisBetween(first_arrival, last_arrival) >= 800);
  // And every event arrived soon after it was sent (bounded generously for
  // a loaded machine; the whole stream takes 1.6 s).
  for (size_t i = 0; i < n; ++i) {
    INFO("event " << i);
    const long long latency = MillisBetween(sent[i], res.EventArrival(i));
    CHECK(latency >= 0);
    CHECK(latency < 1000);
  }
}

TEST_CASE("The usage chunk and [DONE] pass through unchanged", "[streaming]") {
  MockUpstream mock;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"Hel", "lo"}, 7, 11);
  const std::vector<std::string> events = reply.sse_events;
  mock.SetDefault(kChatPath, reply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(res.header("Content-Type").rfind("text/event-stream", 0) == 0);
  CHECK(res.header("x-switchboard-backend") == "primary");
  CHECK(res.header("x-switchboard-attempts") == "1");
  CHECK(res.header("x-request-id") != "");
  CHECK(res.body == Concat(events));
  const std::vector<std::string> got = res.events();
  REQUIRE(got.size() == events.size());
  CHECK(IsDoneEvent(got.back()));
  CHECK(got[got.size() - 2].find(R"("usage":{"prompt_tokens":7,"completion_tokens":11)") !=
        std::string::npos);
  // The upstream was asked to stream the backend's model.
  REQUIRE(mock.request_count() == 1);
  const std::string up = mock.requests()[0].body;
  CHECK(JsonStringField(up, "model") == "gpt-4o-upstream");
  CHECK(up.find(R"("stream":true)") != std::string::npos);
  CHECK(up.find(R"("stream_options":{"include_usage":true})") != std::string::npos);
}

TEST_CASE("A stream whose primary answers 500 is served by the fallback's stream", "[streaming]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath,
                     JsonReply(OpenAiErrorJson("boom", "server_error", "internal"), 500));
  MockReply reply = ChatCompletionStreamReply("gpt-4o-fb", {"from", " fallback"});
  const std::vector<std::string> events = reply.sse_events;
  fallback.SetDefault(kChatPath, reply);
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(res.header("Content-Type").rfind("text/event-stream", 0) == 0);
  CHECK(res.header("x-switchboard-backend") == "f-main");
  CHECK(res.header("x-switchboard-attempts") == "2");
  CHECK(res.body == Concat(events));
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 1);
}

TEST_CASE("A stream request that no backend can serve gets a JSON error, not a stream",
          "[streaming]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath,
                     JsonReply(OpenAiErrorJson("boom", "server_error", "internal"), 500));
  fallback.SetDefault(kChatPath, JsonReply(OpenAiErrorJson("busy", "server_error", "busy"), 503));
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  INFO(res.error);
  REQUIRE(res.ok);
  CHECK(res.status == 502);
  CHECK(res.header("Content-Type").rfind("application/json", 0) == 0);
  CHECK(OpenAIErrorProblem(res.body, "upstream_error") == "");
}

TEST_CASE("An upstream cut after 3 events ends the stream with an error event, no retry",
          "[streaming]") {
  MockUpstream primary, fallback;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b", "c", "d", "e"});
  const std::vector<std::string> events = reply.sse_events;
  reply.reset_after_events = 3;
  primary.SetDefault(kChatPath, reply);
  fallback.SetDefault(kChatPath, ChatCompletionStreamReply("gpt-4o-upstream", {"must not"}));
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  INFO(res.error);
  INFO(res.body);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  CHECK(res.header("x-switchboard-attempts") == "1");
  const std::vector<std::string> got = res.events();
  REQUIRE(got.size() == 4);
  CHECK(res.body.rfind(Concat(events, 3), 0) == 0);  // the 3 events, as sent
  CHECK(IsErrorEvent(got[3]));
  CHECK(OpenAIErrorProblem(EventData(got[3])) == "");
  CHECK(res.body.find("[DONE]") == std::string::npos);
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 0);
}

TEST_CASE("An upstream that stalls past its timeout ends the stream with an error event",
          "[streaming]") {
  Notification release;
  MockUpstream primary, fallback;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b", "c"});
  const std::vector<std::string> events = reply.sse_events;
  reply.before_event = [&release](size_t index) {
    if (index == 2) release.WaitFor(seconds(20));  // stall after two events
  };
  primary.SetDefault(kChatPath, reply);
  fallback.SetDefault(kChatPath, ChatCompletionStreamReply("gpt-4o-upstream", {"must not"}));
  NotifyOnExit release_on_exit(release);
  TestServer server({Backend("p-main", primary.base_url(), "primary", /*timeout_seconds=*/1),
                     Backend("f-main", fallback.base_url(), "fallback")});

  const SteadyTime start = SteadyClock::now();
  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  const long long elapsed = MillisBetween(start, SteadyClock::now());
  INFO(res.error);
  INFO(res.body);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  const std::vector<std::string> got = res.events();
  REQUIRE(got.size() == 3);
  CHECK(res.body.rfind(Concat(events, 2), 0) == 0);
  CHECK(IsErrorEvent(got[2]));
  CHECK(OpenAIErrorProblem(EventData(got[2])) == "");
  CHECK(res.body.find("[DONE]") == std::string::npos);
  // Ended by the 1 s idle timeout, not by the mock's 20 s stall.
  CHECK(elapsed < 10000);
  CHECK(fallback.request_count() == 0);
}

TEST_CASE("A stream that ends without [DONE] ends with an error event", "[streaming]") {
  MockUpstream mock;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b"});
  reply.sse_events.pop_back();  // no "data: [DONE]"
  const std::vector<std::string> events = reply.sse_events;
  mock.SetDefault(kChatPath, reply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  StreamedResponse res =
      PostStreaming(server.port(), "/v1/chat/completions", StreamChatBody("gpt-4o"));
  INFO(res.error);
  INFO(res.body);
  REQUIRE(res.ok);
  CHECK(res.status == 200);
  const std::vector<std::string> got = res.events();
  REQUIRE(got.size() == events.size() + 1);
  CHECK(res.body.rfind(Concat(events), 0) == 0);
  CHECK(IsErrorEvent(got.back()));
  CHECK(OpenAIErrorProblem(EventData(got.back())) == "");
  CHECK(res.body.find("[DONE]") == std::string::npos);
}

TEST_CASE("A client that disconnects mid-stream makes the server abort the upstream within 1 s",
          "[streaming]") {
  Notification release;
  MockUpstream mock;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"a", "b", "c"});
  reply.before_event = [&release](size_t index) {
    if (index == 2) release.WaitFor(seconds(20));  // hold the stream open
  };
  mock.SetDefault(kChatPath, reply);
  NotifyOnExit release_on_exit(release);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.Send(RawPost("/v1/chat/completions", StreamChatBody("gpt-4o"))));
  REQUIRE(conn.ReadUntil([](const std::string& raw) { return DataEventsIn(raw) >= 2; }));
  CHECK(RawConnection::ParseStatus(conn.received()) == 200);
  REQUIRE(mock.request_count() == 1);
  const int upstream_port = mock.requests()[0].remote_port;

  const SteadyTime hung_up = SteadyClock::now();
  conn.Close();
  const bool closed = mock.ConnectionClosed(upstream_port, seconds(5));
  const long long elapsed = MillisBetween(hung_up, SteadyClock::now());
  CHECK(closed);
  CHECK(elapsed < 1000);

  // The server is fine afterwards.
  auto health = server.Client().Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("A client that disconnects before the upstream answered aborts the upstream within 1 s",
          "[streaming]") {
  MockUpstream mock;
  MockReply reply = ChatCompletionStreamReply("gpt-4o-upstream", {"late"});
  reply.delay_before_head = seconds(10);
  mock.SetDefault(kChatPath, reply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.Send(RawPost("/v1/chat/completions", StreamChatBody("gpt-4o"))));
  REQUIRE(mock.WaitForRequests(1, seconds(10)));
  const int upstream_port = mock.requests()[0].remote_port;
  CHECK(conn.received().empty());  // no head before the upstream answered

  const SteadyTime hung_up = SteadyClock::now();
  conn.Close();
  const bool closed = mock.ConnectionClosed(upstream_port, seconds(5));
  const long long elapsed = MillisBetween(hung_up, SteadyClock::now());
  CHECK(closed);
  CHECK(elapsed < 1000);
}

TEST_CASE("A non-streaming client that disconnects while the upstream is slow aborts it",
          "[streaming]") {
  MockUpstream mock;
  MockReply reply = ChatCompletionReply("gpt-4o-upstream", "late");
  reply.delay_before_head = seconds(10);
  mock.SetDefault(kChatPath, reply);
  TestServer server({Backend("primary", mock.base_url(), "primary")});

  RawConnection conn(server.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.Send(RawPost("/v1/chat/completions", ChatBody("gpt-4o"))));
  REQUIRE(mock.WaitForRequests(1, seconds(10)));
  const int upstream_port = mock.requests()[0].remote_port;

  const SteadyTime hung_up = SteadyClock::now();
  conn.Close();
  const bool closed = mock.ConnectionClosed(upstream_port, seconds(5));
  CHECK(closed);
  CHECK(MillisBetween(hung_up, SteadyClock::now()) < 1000);
}

}  // namespace
}  // namespace switchboard::testing
