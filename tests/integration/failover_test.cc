// Failover end to end (CONTRACT "Routing and failover semantics"): the real
// server binary in front of mock upstreams that fail in each way the
// contract lists. Backends sit in pools "primary", then "fallback", then
// pools named after them (tried by name), so the order is fixed.
// Cooldowns here run on real time: no test waits for one to end; they check
// the next request's headers and what each mock received instead.
#include <ctime>
#include <future>
#include <string>
#include <vector>

#include "harness.h"

namespace switchboard::testing {
namespace {

const std::string kChatPath = "/v1/chat/completions";

httplib::Result PostChat(httplib::Client& client, const std::string& model = "gpt-4o") {
  return client.Post("/v1/chat/completions", ChatBody(model), "application/json");
}

MockReply ErrorReply(int status, const std::string& code) {
  return JsonReply(OpenAiErrorJson("upstream says " + std::to_string(status), "server_error", code),
                   status);
}

TEST_CASE("A 429 with Retry-After from the primary is answered by the fallback", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, RateLimitedReply(/*retry_after_seconds=*/60));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "from fallback"));
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == ChatCompletionJson("gpt-4o-upstream", "from fallback"));
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 1);

  // The primary is cooling down (Retry-After: 60): the next request goes
  // straight to the fallback.
  auto next = PostChat(client);
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(next->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(next->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 2);
}

TEST_CASE("A 5xx from the primary moves the request to the next backend", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, ErrorReply(500, "internal"));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 1);
}

TEST_CASE("After 3 consecutive failures a backend is skipped until its cooldown ends",
          "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, ErrorReply(500, "internal"));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server({Backend("p-flaky", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  for (int i = 0; i < 3; ++i) {  // error_threshold (default 3) failures
    INFO("request " << i);
    auto res = PostChat(client);
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  }
  CHECK(primary.request_count() == 3);

  auto next = PostChat(client);
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(next->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(next->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 3);
}

TEST_CASE("A backend that refuses the connection is skipped for the next one", "[failover]") {
  RefusingPort closed;
  REQUIRE(closed.port() > 0);
  MockUpstream fallback;
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server({Backend("p-closed", closed.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  CHECK(fallback.request_count() == 1);
}

TEST_CASE("A backend slower than its timeout_seconds is abandoned for the next one", "[failover]") {
  MockUpstream slow, fallback;
  MockReply late = ChatCompletionReply("gpt-4o-upstream", "too late");
  late.delay_before_head = seconds(5);
  slow.SetDefault(kChatPath, late);
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "in time"));
  TestServer server({Backend("p-slow", slow.base_url(), "primary", /*timeout_seconds=*/1),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  const SteadyTime start = SteadyClock::now();
  auto res = PostChat(client);
  const long long elapsed = MillisBetween(start, SteadyClock::now());
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == ChatCompletionJson("gpt-4o-upstream", "in time"));
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  CHECK(slow.request_count() == 1);
  // Given up after about its 1 s, not after the mock's 5 s.
  CHECK(elapsed >= 900);
  CHECK(elapsed < 4500);
}

TEST_CASE("A 401 from a backend fails over and the backend is skipped afterwards", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, ErrorReply(401, "invalid_api_key"));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server({Backend("p-badkey", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");

  auto next = PostChat(client);
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(next->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(next->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 2);
}

TEST_CASE("A 403 from a backend fails over and the backend is skipped afterwards", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, ErrorReply(403, "forbidden"));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  TestServer server({Backend("p-forbidden", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");

  auto next = PostChat(client);
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(next->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 2);
}

TEST_CASE("A client error from the upstream is returned as it is, without a retry", "[failover]") {
  const int status = GENERATE(400, 404, 422);
  INFO("upstream status " << status);
  MockUpstream primary, fallback;
  const std::string body =
      OpenAiErrorJson("the upstream refused this request (" + std::to_string(status) + ")",
                      "invalid_request_error", "upstream_specific_code");
  primary.SetDefault(kChatPath, JsonReply(body, status));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "must not be used"));
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == status);
  CHECK(res->body == body);
  CHECK(res->get_header_value("x-switchboard-backend") == "p-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 0);

  // Not the backend's fault: it stays in rotation.
  auto next = PostChat(client);
  REQUIRE(next);
  CHECK(next->get_header_value("x-switchboard-backend") == "p-main");
  CHECK(primary.request_count() == 2);
  CHECK(fallback.request_count() == 0);
}

TEST_CASE("When every backend answers 429 the client gets 429 with Retry-After", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, RateLimitedReply(/*retry_after_seconds=*/30));
  fallback.SetDefault(kChatPath, RateLimitedReply(/*retry_after_seconds=*/45));
  TestServer server({Backend("p-main", primary.base_url(), "primary"),
                     Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 429);
  CHECK(OpenAIErrorProblem(res->body, "rate_limit_exceeded") == "");
  REQUIRE(res->has_header("Retry-After"));
  // Until the first candidate is free again: the primary's 30 s.
  const int retry_after = std::atoi(res->get_header_value("Retry-After").c_str());
  CHECK(retry_after >= 25);
  CHECK(retry_after <= 31);
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 1);

  // Both cooling: refused at once, no upstream attempt.
  auto next = PostChat(client);
  REQUIRE(next);
  CHECK(next->status == 429);
  CHECK(OpenAIErrorProblem(next->body, "rate_limit_exceeded") == "");
  REQUIRE(next->has_header("Retry-After"));
  const int next_retry = std::atoi(next->get_header_value("Retry-After").c_str());
  CHECK(next_retry >= 1);
  CHECK(next_retry <= 31);
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 1);
}

TEST_CASE("When every attempt fails the client gets 502 naming each attempt", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, ErrorReply(500, "internal"));
  fallback.SetDefault(kChatPath, ErrorReply(503, "overloaded"));
  TestServer server({Backend("p-broken", primary.base_url(), "primary"),
                     Backend("f-overloaded", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 502);
  CHECK(OpenAIErrorProblem(res->body, "upstream_error") == "");
  const std::string message = OpenAIErrorMessage(res->body);
  INFO(message);
  CHECK(message.find("p-broken") != std::string::npos);
  CHECK(message.find("500") != std::string::npos);
  CHECK(message.find("f-overloaded") != std::string::npos);
  CHECK(message.find("503") != std::string::npos);
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
}

TEST_CASE("When every attempt times out the client gets 504", "[failover]") {
  MockUpstream first, second;
  MockReply late = ChatCompletionReply("gpt-4o-upstream", "too late");
  late.delay_before_head = seconds(6);
  first.SetDefault(kChatPath, late);
  second.SetDefault(kChatPath, late);
  TestServer server({Backend("p-slow", first.base_url(), "primary", /*timeout_seconds=*/1),
                     Backend("f-slow", second.base_url(), "fallback", /*timeout_seconds=*/1)});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 504);
  CHECK(OpenAIErrorProblem(res->body) == "");
  CHECK(res->get_header_value("x-switchboard-attempts") == "2");
  CHECK(first.request_count() == 1);
  CHECK(second.request_count() == 1);
}

TEST_CASE("A timeout and a 5xx together give 502, not 504", "[failover]") {
  MockUpstream first, second;
  MockReply late = ChatCompletionReply("gpt-4o-upstream", "too late");
  late.delay_before_head = seconds(6);
  first.SetDefault(kChatPath, late);
  second.SetDefault(kChatPath, ErrorReply(500, "internal"));
  TestServer server({Backend("p-slow", first.base_url(), "primary", /*timeout_seconds=*/1),
                     Backend("f-broken", second.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 502);
  CHECK(OpenAIErrorProblem(res->body, "upstream_error") == "");
}

TEST_CASE("No request makes more than max_attempts (3) upstream attempts", "[failover]") {
  MockUpstream a, b, c, d;
  for (MockUpstream* m : {&a, &b, &c, &d}) m->SetDefault(kChatPath, ErrorReply(500, "internal"));
  // Pools tried in order: primary, fallback, then the rest by name.
  TestServer server({Backend("b1", a.base_url(), "primary"),
                     Backend("b2", b.base_url(), "fallback"), Backend("b3", c.base_url(), "pool-x"),
                     Backend("b4", d.base_url(), "pool-y")});
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 502);
  CHECK(res->get_header_value("x-switchboard-attempts") == "3");
  CHECK(a.request_count() + b.request_count() + c.request_count() + d.request_count() == 3);
  CHECK(d.request_count() == 0);
  const std::string message = OpenAIErrorMessage(res->body);
  INFO(message);
  CHECK(message.find("b1") != std::string::npos);
  CHECK(message.find("b2") != std::string::npos);
  CHECK(message.find("b3") != std::string::npos);
  CHECK(message.find("b4") == std::string::npos);
}

TEST_CASE("A backend that does not serve the model is never tried", "[failover]") {
  MockUpstream other, serving;
  other.SetDefault(kChatPath, ChatCompletionReply("x", "wrong backend"));
  serving.SetDefault(kChatPath, ChatCompletionReply("mini-up", "right backend"));
  BackendSpec a = Backend("p-other", other.base_url(), "primary");
  a.models = {{"gpt-4o", "gpt-4o-upstream"}};
  BackendSpec b = Backend("f-mini", serving.base_url(), "fallback");
  b.models = {{"gpt-4o-mini", "mini-up"}};
  TestServer server({a, b});
  httplib::Client client = server.Client();

  auto res = PostChat(client, "gpt-4o-mini");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "f-mini");
  CHECK(res->get_header_value("x-switchboard-attempts") == "1");
  CHECK(other.request_count() == 0);
  REQUIRE(serving.request_count() == 1);
  CHECK(JsonStringField(serving.requests()[0].body, "model") == "mini-up");
}

TEST_CASE("A backend whose rpm_limit is used up is skipped without an attempt", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "primary"));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "fallback"));
  BackendSpec limited = Backend("p-limited", primary.base_url(), "primary");
  limited.rpm_limit = 1;  // one token, refilled after a minute
  TestServer server({limited, Backend("f-main", fallback.base_url(), "fallback")});
  httplib::Client client = server.Client();

  auto first = PostChat(client);
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->get_header_value("x-switchboard-backend") == "p-limited");

  auto second = PostChat(client);
  REQUIRE(second);
  CHECK(second->status == 200);
  CHECK(second->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(second->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);
  CHECK(fallback.request_count() == 1);
}

TEST_CASE("A backend at max_concurrency is skipped without an attempt", "[failover]") {
  Notification release;
  MockUpstream primary, fallback;
  primary.SetHandler(kChatPath, [&release](const RecordedRequest&) {
    release.WaitFor(seconds(20));  // holds the first request in flight
    return ChatCompletionReply("gpt-4o-upstream", "primary");
  });
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "fallback"));
  NotifyOnExit release_on_exit(release);
  BackendSpec one_at_a_time = Backend("p-single", primary.base_url(), "primary");
  one_at_a_time.max_concurrency = 1;
  TestServer server({one_at_a_time, Backend("f-main", fallback.base_url(), "fallback")});

  auto held = std::async(std::launch::async, [&] {
    httplib::Client client = server.Client();
    auto res = PostChat(client);
    return res ? res->get_header_value("x-switchboard-backend") : "no response";
  });
  REQUIRE(primary.WaitForRequests(1, seconds(10)));

  httplib::Client client = server.Client();
  auto second = PostChat(client);
  REQUIRE(second);
  CHECK(second->status == 200);
  CHECK(second->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(second->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);

  release.Notify();
  REQUIRE(held.wait_for(seconds(20)) == std::future_status::ready);
  CHECK(held.get() == "p-single");
}

TEST_CASE("A cooldown survives a restart of the server on the same database", "[failover]") {
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, RateLimitedReply(/*retry_after_seconds=*/120));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "fallback"));
  TempDir dir;
  REQUIRE(!dir.path().empty());
  ServerProcessOptions options;
  options.backends = {Backend("p-main", primary.base_url(), "primary"),
                      Backend("f-main", fallback.base_url(), "fallback")};
  options.dir = dir.path();
  options.master_key = NewMasterKeyBase64();
  {
    TestServer first(options);
    httplib::Client client = first.Client();
    auto res = PostChat(client);
    REQUIRE(res);
    CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
    CHECK(res->get_header_value("x-switchboard-attempts") == "2");
    REQUIRE(first.process().Stop() == 0);
  }
  REQUIRE(primary.request_count() == 1);

  TestServer second(options);  // re-imports the same file: routing state is kept
  httplib::Client client = second.Client();
  auto res = PostChat(client);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("x-switchboard-backend") == "f-main");
  CHECK(res->get_header_value("x-switchboard-attempts") == "1");
  CHECK(primary.request_count() == 1);
}

// Seconds since the epoch of an RFC 3339 UTC time "2026-11-26T03:16:11Z"
// (fractions ignored); -1 when it is not one.
long long ParseUtc(const std::string& text) {
  std::tm tm{};
  if (text.size() < 20 || strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return -1;
  return static_cast<long long>(timegm(&tm));
}

TEST_CASE("A 429 with Retry-After cools the backend down for that long, as the admin API shows",
          "[failover]") {
  constexpr char kAdminToken[] = "sbadm_integration_test_token_0123456789";
  MockUpstream primary, fallback;
  primary.SetDefault(kChatPath, RateLimitedReply(/*retry_after_seconds=*/90));
  fallback.SetDefault(kChatPath, ChatCompletionReply("gpt-4o-upstream", "ok"));
  ServerProcessOptions options;
  options.backends = {Backend("p-main", primary.base_url(), "primary"),
                      Backend("f-main", fallback.base_url(), "fallback")};
  options.env = {std::string("SWITCHBOARD_ADMIN_TOKEN=") + kAdminToken};
  TestServer server(std::move(options));
  httplib::Client client = server.Client();

  auto res = PostChat(client);
  REQUIRE(res);
  REQUIRE(res->get_header_value("x-switchboard-attempts") == "2");
  const long long now = static_cast<long long>(std::time(nullptr));

  auto admin =
      client.Get("/admin/backends", {{"Authorization", std::string("Bearer ") + kAdminToken}});
  REQUIRE(admin);
  INFO(admin->body);
  REQUIRE(admin->status == 200);
  rapidjson::Document doc;
  doc.Parse(admin->body.c_str());
  REQUIRE(!doc.HasParseError());
  REQUIRE(doc.HasMember("data"));
  bool found = false;
  for (const auto& b : doc["data"].GetArray()) {
    if (std::string(b["name"].GetString()) != "p-main") continue;
    found = true;
    CHECK(std::string(b["status"].GetString()) == "cooling");
    CHECK(b["consecutive_429_count"].GetInt() == 1);
    REQUIRE(b["cooldown_until"].IsString());
    const long long until = ParseUtc(b["cooldown_until"].GetString());
    CHECK(until >= now + 85);
    CHECK(until <= now + 95);
    // Write-only key: never returned.
    CHECK_FALSE(b.HasMember("api_key"));
  }
  CHECK(found);
  CHECK(admin->body.find("sk-p-main-key") == std::string::npos);
}

}  // namespace
}  // namespace switchboard::testing
