// The Storage conformance suite: the behaviour every Storage must have, as
// Catch2 test cases templated over "makers". Run it on your own store:
//
//   struct MyStorageMaker {
//     static std::unique_ptr<switchboard::Storage> Make() { return OpenMyStorage(...); }
//   };
//   #define SWITCHBOARD_STORAGE_MAKERS std::tuple<MyStorageMaker>
//   #include "support/storage_conformance.h"
//
// Make() must return an empty store each time. Times are compared at
// millisecond precision, which is what a Storage must keep.
#ifndef SWITCHBOARD_TESTS_SUPPORT_STORAGE_CONFORMANCE_H_
#define SWITCHBOARD_TESTS_SUPPORT_STORAGE_CONFORMANCE_H_

#ifndef SWITCHBOARD_STORAGE_MAKERS
#error "#define SWITCHBOARD_STORAGE_MAKERS std::tuple<YourMaker...> before including this file"
#endif

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "support/makers.h"
#include "switchboard/storage.h"

namespace switchboard::testing::conformance {

// An alias, so that the maker list passes through Catch2's macros as one argument.
using StorageMakers = SWITCHBOARD_STORAGE_MAKERS;

template <typename Maker>
std::unique_ptr<Storage> MakeStore() {
  std::unique_ptr<Storage> store = Maker::Make();
  REQUIRE(store != nullptr);
  return store;
}

inline Backend FullBackend(const std::string& name) {
  Backend b = MakeBackend(name, "fallback");
  b.label = "Full \"quoted\" label ✓";
  b.api = Api::kAnthropic;
  b.timeout_seconds = 120;
  b.rpm_limit = 500;
  b.tpm_limit = 90000;
  b.max_concurrency = 8;
  b.enabled = false;
  b.status = BackendStatus::kCooling;
  b.model_mappings["*"] = ModelMapping{"*", 1};
  b.model_mappings["claude"] = ModelMapping{"claude-3-5-sonnet-20241022", 7};
  b.source = BackendSource::kImport;
  b.cooldown_until = TestEpoch() + std::chrono::milliseconds(12345);
  b.consecutive_429_count = 3;
  b.consecutive_failures = 2;
  b.last_error = "429 from upstream";
  b.metadata = R"({"team":"ml","tier":2})";
  b.created_at = TestEpoch() + std::chrono::milliseconds(1);
  b.updated_at = TestEpoch() + std::chrono::milliseconds(2);
  b.api_key_ciphertext = "sb1:0011aabb:b3BhcXVl";
  b.api_key_hint = "...f00d";
  return b;
}

inline std::vector<std::string> Names(const std::vector<Backend>& backends) {
  std::vector<std::string> names;
  for (const Backend& b : backends) names.push_back(b.name);
  return names;
}

// --- Backends ---------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("Storage returns a created backend with every field intact",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend b = FullBackend("full");
  REQUIRE(store->CreateBackend(b).ok());
  auto got = store->GetBackend(b.id);
  REQUIRE(got.ok());
  CHECK(*got == b);
  auto by_name = store->GetBackendByName("full");
  REQUIRE(by_name.ok());
  CHECK(*by_name == b);
}

TEMPLATE_LIST_TEST_CASE("Storage keeps a backend without cooldown as null cooldown_until",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend b = MakeBackend("plain");
  REQUIRE(store->CreateBackend(b).ok());
  auto got = store->GetBackend(b.id);
  REQUIRE(got.ok());
  CHECK_FALSE(got->cooldown_until.has_value());
  CHECK(got->api_key_ciphertext.empty());
  CHECK(*got == b);
}

TEMPLATE_LIST_TEST_CASE("Storage returns NotFound for an unknown backend", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  CHECK(store->GetBackend("bkd_missing").status().code() == StatusCode::kNotFound);
  CHECK(store->GetBackendByName("missing").status().code() == StatusCode::kNotFound);
  CHECK(store->DeleteBackend("bkd_missing").code() == StatusCode::kNotFound);
  CHECK(store->UpdateBackend(MakeBackend("missing")).code() == StatusCode::kNotFound);
}

TEMPLATE_LIST_TEST_CASE("Storage refuses a duplicate backend name or id and keeps the first",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  REQUIRE(store->CreateBackend(MakeBackend("one")).ok());

  Backend same_name = MakeBackend("one");
  same_name.id = "bkd_other";
  same_name.label = "impostor";
  const Status by_name = store->CreateBackend(same_name);
  CHECK(by_name.code() == StatusCode::kAlreadyExists);
  CHECK(by_name.param() == "name");

  Backend same_id = MakeBackend("two");
  same_id.id = "bkd_one";
  const Status by_id = store->CreateBackend(same_id);
  CHECK(by_id.code() == StatusCode::kAlreadyExists);
  CHECK(by_id.param() == "id");

  auto all = store->ListBackends({});
  REQUIRE(all.ok());
  REQUIRE(all->size() == 1);
  CHECK(all->front().label == "Test backend one");
}

TEMPLATE_LIST_TEST_CASE("Storage lists backends by name and filters by pool and enabled",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  Backend c = MakeBackend("charlie", "fallback");
  Backend a = MakeBackend("alpha", "primary");
  Backend b = MakeBackend("bravo", "primary");
  b.enabled = false;
  for (const Backend& x : {c, a, b}) REQUIRE(store->CreateBackend(x).ok());

  auto all = store->ListBackends({});
  REQUIRE(all.ok());
  CHECK(Names(*all) == std::vector<std::string>{"alpha", "bravo", "charlie"});

  auto primary = store->ListBackends({.pool = "primary"});
  REQUIRE(primary.ok());
  CHECK(Names(*primary) == std::vector<std::string>{"alpha", "bravo"});

  auto enabled_primary = store->ListBackends({.pool = "primary", .enabled = true});
  REQUIRE(enabled_primary.ok());
  CHECK(Names(*enabled_primary) == std::vector<std::string>{"alpha"});

  auto disabled = store->ListBackends({.enabled = false});
  REQUIRE(disabled.ok());
  CHECK(Names(*disabled) == std::vector<std::string>{"bravo"});
}

TEMPLATE_LIST_TEST_CASE("Storage replaces a backend on update", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  Backend b = MakeBackend("one");
  REQUIRE(store->CreateBackend(b).ok());
  Backend changed = FullBackend("renamed");
  changed.id = b.id;
  REQUIRE(store->UpdateBackend(changed).ok());
  auto got = store->GetBackend(b.id);
  REQUIRE(got.ok());
  CHECK(*got == changed);
  CHECK(store->GetBackendByName("one").status().code() == StatusCode::kNotFound);
}

TEMPLATE_LIST_TEST_CASE("Storage refuses an update that takes another backend's name",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  REQUIRE(store->CreateBackend(MakeBackend("one")).ok());
  REQUIRE(store->CreateBackend(MakeBackend("two")).ok());
  Backend b = MakeBackend("two");
  b.name = "one";
  b.label = "changed";
  const Status s = store->UpdateBackend(b);
  CHECK(s.code() == StatusCode::kAlreadyExists);
  CHECK(s.param() == "name");
  auto got = store->GetBackend("bkd_two");
  REQUIRE(got.ok());
  CHECK(got->name == "two");
  CHECK(got->label == "Test backend two");
}

TEMPLATE_LIST_TEST_CASE("Storage forgets a deleted backend", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  REQUIRE(store->CreateBackend(MakeBackend("one")).ok());
  REQUIRE(store->CreateBackend(MakeBackend("two")).ok());
  REQUIRE(store->DeleteBackend("bkd_one").ok());
  CHECK(store->GetBackend("bkd_one").status().code() == StatusCode::kNotFound);
  auto all = store->ListBackends({});
  REQUIRE(all.ok());
  CHECK(Names(*all) == std::vector<std::string>{"two"});
  // The name is free again.
  CHECK(store->CreateBackend(MakeBackend("one")).ok());
}

TEMPLATE_LIST_TEST_CASE("Storage writes backend states without touching other fields",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend one = MakeBackend("one");
  const Backend two = MakeBackend("two");
  REQUIRE(store->CreateBackend(one).ok());
  REQUIRE(store->CreateBackend(two).ok());

  BackendState cooling{.backend_id = one.id,
                       .status = BackendStatus::kCooling,
                       .cooldown_until = TestEpoch() + std::chrono::seconds(30),
                       .consecutive_429_count = 2,
                       .consecutive_failures = 0,
                       .last_error = "429 from upstream"};
  BackendState broken{.backend_id = two.id,
                      .status = BackendStatus::kError,
                      .cooldown_until = std::nullopt,
                      .consecutive_429_count = 0,
                      .consecutive_failures = 3,
                      .last_error = "401 from upstream"};
  BackendState ghost{.backend_id = "bkd_ghost", .status = BackendStatus::kError};
  REQUIRE(store->UpdateBackendStates({cooling, broken, ghost}).ok());

  auto got_one = store->GetBackend(one.id);
  REQUIRE(got_one.ok());
  CHECK(got_one->status == BackendStatus::kCooling);
  CHECK(got_one->cooldown_until == cooling.cooldown_until);
  CHECK(got_one->consecutive_429_count == 2);
  CHECK(got_one->last_error == "429 from upstream");
  CHECK(got_one->updated_at == one.updated_at);
  CHECK(got_one->label == one.label);

  auto got_two = store->GetBackend(two.id);
  REQUIRE(got_two.ok());
  CHECK(got_two->status == BackendStatus::kError);
  CHECK(got_two->consecutive_failures == 3);
  CHECK_FALSE(got_two->cooldown_until.has_value());
  CHECK(store->GetBackend("bkd_ghost").status().code() == StatusCode::kNotFound);
}

TEMPLATE_LIST_TEST_CASE("Storage replaces API keys all or nothing", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  Backend one = MakeBackend("one");
  one.api_key_ciphertext = "sb1:00000001:old1";
  Backend two = MakeBackend("two");
  two.api_key_ciphertext = "sb1:00000001:old2";
  REQUIRE(store->CreateBackend(one).ok());
  REQUIRE(store->CreateBackend(two).ok());

  const Status partial = store->ReplaceApiKeys(
      {{one.id, "sb1:00000002:new1"}, {"bkd_ghost", "sb1:00000002:ghost"}});
  CHECK(partial.code() == StatusCode::kNotFound);
  CHECK(store->GetBackend(one.id)->api_key_ciphertext == "sb1:00000001:old1");

  REQUIRE(store->ReplaceApiKeys({{one.id, "sb1:00000002:new1"}, {two.id, "sb1:00000002:new2"}})
              .ok());
  CHECK(store->GetBackend(one.id)->api_key_ciphertext == "sb1:00000002:new1");
  CHECK(store->GetBackend(two.id)->api_key_ciphertext == "sb1:00000002:new2");
}

// --- Cooldown events ----------------------------------------------------------

inline CooldownEvent MakeEvent(const Backend& b, int seconds, int status) {
  return CooldownEvent{.backend_id = b.id,
                       .backend_name = b.name,
                       .start = TestEpoch() + std::chrono::seconds(seconds),
                       .until = TestEpoch() + std::chrono::seconds(seconds + 5),
                       .reason = status == 429 ? "rate_limited" : "errors",
                       .upstream_status = status};
}

TEMPLATE_LIST_TEST_CASE("Storage lists cooldown events newest first with ids assigned",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend a = MakeBackend("a");
  const Backend b = MakeBackend("b");
  REQUIRE(store->AppendCooldownEvents({MakeEvent(a, 1, 429), MakeEvent(b, 2, 503)}).ok());
  REQUIRE(store->AppendCooldownEvents({MakeEvent(a, 3, 0)}).ok());

  auto events = store->ListCooldownEvents({.limit = 10});
  REQUIRE(events.ok());
  REQUIRE(events->size() == 3);
  CHECK((*events)[0].upstream_status == 0);
  CHECK((*events)[1].upstream_status == 503);
  CHECK((*events)[2].upstream_status == 429);
  CHECK((*events)[0].id > (*events)[1].id);
  CHECK((*events)[1].id > (*events)[2].id);
  CooldownEvent expected = MakeEvent(b, 2, 503);
  expected.id = (*events)[1].id;
  CHECK((*events)[1] == expected);

  auto limited = store->ListCooldownEvents({.limit = 2});
  REQUIRE(limited.ok());
  CHECK(limited->size() == 2);

  auto only_a = store->ListCooldownEvents({.limit = 10, .backend_id = a.id});
  REQUIRE(only_a.ok());
  REQUIRE(only_a->size() == 2);
  CHECK((*only_a)[0].backend_name == "a");
  CHECK((*only_a)[1].backend_name == "a");
}

TEMPLATE_LIST_TEST_CASE("Storage refuses a page limit outside 1..1000", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  CHECK(store->ListCooldownEvents({.limit = 0}).status().code() == StatusCode::kInvalidArgument);
  CHECK(store->ListUsage({.limit = 1001}).status().code() == StatusCode::kInvalidArgument);
  CHECK(store->ListUsage({.limit = -1}).status().code() == StatusCode::kInvalidArgument);
}

// --- Usage --------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("Storage returns usage records intact, newest first", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend b = MakeBackend("one");
  UsageRecord first = MakeUsage(b, TestEpoch() + std::chrono::milliseconds(1500));
  first.request_id = "req_1";
  first.stream = true;
  first.error = "";
  UsageRecord second = MakeUsage(b, TestEpoch() + std::chrono::seconds(2), 502, 900);
  second.request_id = "req_2";
  second.error = "upstream_error: one 503";
  second.attempts = 3;
  REQUIRE(store->AppendUsage({first, second}).ok());

  auto page = store->ListUsage({.limit = 10});
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 2);
  CHECK_FALSE(page->next_before.has_value());
  const UsageRecord& newest = page->records[0];
  const UsageRecord& oldest = page->records[1];
  CHECK(newest.id > oldest.id);
  second.id = newest.id;
  first.id = oldest.id;
  CHECK(newest == second);
  CHECK(oldest == first);
}

TEMPLATE_LIST_TEST_CASE("Storage pages through usage with a cursor, each record once",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend b = MakeBackend("one");
  std::vector<UsageRecord> batch;
  for (int i = 0; i < 25; ++i) {
    UsageRecord r = MakeUsage(b, TestEpoch() + std::chrono::seconds(i));
    r.request_id = "req_" + std::to_string(i);
    batch.push_back(r);
  }
  REQUIRE(store->AppendUsage(batch).ok());

  std::vector<std::string> seen;
  std::optional<int64_t> cursor;
  int pages = 0;
  do {
    auto page = store->ListUsage({.limit = 10, .before = cursor});
    REQUIRE(page.ok());
    for (const UsageRecord& r : page->records) seen.push_back(r.request_id);
    cursor = page->next_before;
    ++pages;
  } while (cursor && pages < 10);
  CHECK(pages == 3);
  REQUIRE(seen.size() == 25);
  for (int i = 0; i < 25; ++i) CHECK(seen[i] == "req_" + std::to_string(24 - i));
}

TEMPLATE_LIST_TEST_CASE("Storage aggregates usage totals, errors, rate limits and percentiles",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend a = MakeBackend("a");
  const Backend b = MakeBackend("b");
  std::vector<UsageRecord> batch;
  // a: 10 successes with latencies 10..100 ms.
  for (int i = 1; i <= 10; ++i) batch.push_back(MakeUsage(a, TestEpoch() + std::chrono::seconds(i), 200, i * 10));
  // b: one 429, one 502, one 400, one 200; b's records use another model.
  for (int status : {429, 502, 400, 200}) {
    UsageRecord r = MakeUsage(b, TestEpoch() + std::chrono::seconds(70), status, 1000);
    r.model = "claude";
    r.ttfb_ms = 0;
    batch.push_back(r);
  }
  // Outside the window on both sides.
  batch.push_back(MakeUsage(a, TestEpoch() - std::chrono::seconds(1)));
  batch.push_back(MakeUsage(a, TestEpoch() + std::chrono::seconds(120)));
  REQUIRE(store->AppendUsage(batch).ok());

  auto stats = store->QueryUsageStats({.from = TestEpoch(),
                                       .to = TestEpoch() + std::chrono::seconds(120),
                                       .bucket_seconds = 60});
  REQUIRE(stats.ok());
  CHECK(stats->totals.requests == 14);
  CHECK(stats->totals.errors == 2);
  CHECK(stats->totals.rate_limited == 1);
  CHECK(stats->totals.prompt_tokens == 140);
  CHECK(stats->totals.completion_tokens == 280);
  // Percentiles are nearest-rank, read from log-scale histograms: exact
  // below 32 ms, else within 1/32 of the exact value, never above the maximum.
  // Latencies 10..100 and 4 x 1000: nearest rank 50% of 14 = 7th = 70; 95% = 14th = 1000.
  CHECK(stats->totals.p50_ms == Approx(70).epsilon(1.0 / 32));
  CHECK(stats->totals.p95_ms == 1000);  // the largest value: exact
  // ttfb only where > 0: a's 5..50; 50% of 10 = 5th = 25; 95% = 10th = 50.
  CHECK(stats->totals.ttfb_p50_ms == 25);
  CHECK(stats->totals.ttfb_p95_ms == 50);

  REQUIRE(stats->by_backend.size() == 2);
  CHECK(stats->by_backend[0].backend_name == "a");
  CHECK(stats->by_backend[0].backend_id == a.id);
  CHECK(stats->by_backend[0].usage.requests == 10);
  CHECK(stats->by_backend[0].usage.p50_ms == Approx(50).epsilon(1.0 / 32));
  CHECK(stats->by_backend[0].usage.p95_ms == 100);
  CHECK(stats->by_backend[1].backend_name == "b");
  CHECK(stats->by_backend[1].usage.errors == 2);
  CHECK(stats->by_backend[1].usage.rate_limited == 1);

  REQUIRE(stats->by_model.size() == 2);
  CHECK(stats->by_model[0].model == "gpt-4o");
  CHECK(stats->by_model[0].usage.requests == 10);
  CHECK(stats->by_model[1].model == "claude");
  CHECK(stats->by_model[1].usage.requests == 4);

  REQUIRE(stats->timeseries.size() == 2);
  CHECK(stats->timeseries[0].start == TestEpoch());
  CHECK(stats->timeseries[0].usage.requests == 10);
  CHECK(stats->timeseries[0].requests_by_backend ==
        std::vector<std::pair<std::string, int64_t>>{{"a", 10}});
  CHECK(stats->timeseries[1].start == TestEpoch() + std::chrono::seconds(60));
  CHECK(stats->timeseries[1].usage.requests == 4);
  CHECK(stats->timeseries[1].usage.p50_ms == 1000);
  CHECK(stats->timeseries[1].requests_by_backend ==
        std::vector<std::pair<std::string, int64_t>>{{"b", 4}});
}

TEMPLATE_LIST_TEST_CASE("Storage returns zero stats for an empty window", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  auto stats = store->QueryUsageStats(
      {.from = TestEpoch(), .to = TestEpoch() + std::chrono::hours(1), .bucket_seconds = 60});
  REQUIRE(stats.ok());
  const UsageAggregate zero;
  CHECK(stats->totals == zero);
  CHECK(stats->by_backend.empty());
  CHECK(stats->by_model.empty());
  CHECK(stats->timeseries.empty());
}

TEMPLATE_LIST_TEST_CASE("Storage deletes usage older than a cutoff and says how much",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend b = MakeBackend("one");
  std::vector<UsageRecord> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(MakeUsage(b, TestEpoch() + std::chrono::hours(i)));
  REQUIRE(store->AppendUsage(batch).ok());
  auto deleted = store->DeleteUsageBefore(TestEpoch() + std::chrono::hours(4));
  REQUIRE(deleted.ok());
  CHECK(*deleted == 4);
  auto page = store->ListUsage({.limit = 100});
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 6);
  CHECK(page->records.back().time == TestEpoch() + std::chrono::hours(4));
}

TEMPLATE_LIST_TEST_CASE("Storage percentiles stay within the histogram's stated error",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend b = MakeBackend("a");
  std::vector<UsageRecord> batch;
  std::vector<int64_t> latencies;
  uint64_t x = 12345;
  for (int i = 0; i < 500; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;  // deterministic, spread out
    const int64_t latency = 1 + static_cast<int64_t>((x >> 33) % 20000);
    latencies.push_back(latency);
    batch.push_back(MakeUsage(b, TestEpoch() + std::chrono::seconds(i % 300), 200, latency));
  }
  REQUIRE(store->AppendUsage(batch).ok());
  std::sort(latencies.begin(), latencies.end());
  auto exact = [&](double p) {
    const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * latencies.size()));
    return static_cast<double>(latencies[rank - 1]);
  };
  // Rollups (whole minutes) and raw records (a 7 s bucket) give the same answer.
  for (int bucket_seconds : {60, 7}) {
    auto stats = store->QueryUsageStats({.from = TestEpoch(),
                                         .to = TestEpoch() + std::chrono::minutes(5),
                                         .bucket_seconds = bucket_seconds});
    REQUIRE(stats.ok());
    REQUIRE(stats->totals.requests == 500);
    CHECK(stats->totals.p50_ms == Approx(exact(50)).epsilon(1.0 / 32));
    CHECK(stats->totals.p95_ms == Approx(exact(95)).epsilon(1.0 / 32));
  }
}

TEMPLATE_LIST_TEST_CASE("Storage stats agree for every bucket width over unaligned windows",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend a = MakeBackend("a");
  const Backend b = MakeBackend("b");
  std::vector<UsageRecord> batch;
  uint64_t x = 99;
  for (int i = 0; i < 3000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto at = TestEpoch() + std::chrono::milliseconds((x >> 20) % (3 * 3600 * 1000));
    UsageRecord r = MakeUsage(i % 3 == 0 ? b : a, at, i % 17 == 0 ? 502 : 200,
                              1 + static_cast<int64_t>((x >> 40) % 5000));
    r.model = i % 2 == 0 ? "gpt-4o" : "claude";
    batch.push_back(r);
  }
  REQUIRE(store->AppendUsage(batch).ok());
  const SystemTime from = TestEpoch() + std::chrono::milliseconds(17 * 60 * 1000 + 123);
  const SystemTime to = TestEpoch() + std::chrono::milliseconds(2 * 3600 * 1000 + 41 * 60 * 1000 + 7);
  std::optional<UsageAggregate> first;
  for (int bucket_seconds : {1, 60, 300, 3600, 900, 7}) {
    INFO("bucket_seconds " << bucket_seconds);
    auto stats = store->QueryUsageStats({.from = from, .to = to, .bucket_seconds = bucket_seconds});
    REQUIRE(stats.ok());
    int64_t in_buckets = 0;
    for (const UsageBucket& bucket : stats->timeseries) in_buckets += bucket.usage.requests;
    CHECK(in_buckets == stats->totals.requests);
    if (!first) {
      first = stats->totals;
      CHECK(first->requests > 2000);
    } else {
      CHECK(stats->totals == *first);  // same histograms, so percentiles agree exactly
    }
  }
}

TEMPLATE_LIST_TEST_CASE("Storage counts upstream 429s that failover absorbed", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend a = MakeBackend("a");
  const Backend b = MakeBackend("b", "fallback");
  // The client got b's 200 after a answered 429.
  UsageRecord absorbed = MakeUsage(b, TestEpoch() + std::chrono::seconds(5));
  absorbed.attempts = 2;
  absorbed.trace =
      R"([{"backend":"a","pool":"primary","decision":"tried","status":429},)"
      R"({"backend":"b","pool":"fallback","decision":"tried","status":200}])";
  // Two upstream 429s, and the client got 429 itself.
  UsageRecord exhausted = MakeUsage(a, TestEpoch() + std::chrono::seconds(65), 429);
  exhausted.trace =
      R"([{"backend":"a","pool":"primary","decision":"tried","status":429},)"
      R"({"backend":"b","pool":"fallback","decision":"tried","status":429}])";
  // A 429 from the router (everything cooling), no upstream answered.
  UsageRecord cooling = MakeUsage(a, TestEpoch() + std::chrono::seconds(70), 429);
  cooling.trace = R"([{"backend":"a","pool":"primary","decision":"skipped_cooling"}])";
  REQUIRE(store->AppendUsage({absorbed, exhausted, cooling}).ok());

  for (int bucket_seconds : {60, 30}) {  // rollups, then raw records
    auto stats = store->QueryUsageStats({.from = TestEpoch(),
                                         .to = TestEpoch() + std::chrono::minutes(2),
                                         .bucket_seconds = bucket_seconds});
    REQUIRE(stats.ok());
    CHECK(stats->totals.requests == 3);
    CHECK(stats->totals.rate_limited == 2);
    CHECK(stats->totals.upstream_429 == 3);
    REQUIRE(stats->by_backend.size() == 2);
    CHECK(stats->by_backend[0].backend_name == "a");
    CHECK(stats->by_backend[0].usage.upstream_429 == 2);
    CHECK(stats->by_backend[1].usage.upstream_429 == 1);
    REQUIRE(stats->timeseries.size() >= 2);
    CHECK(stats->timeseries.front().usage.upstream_429 == 1);
    CHECK(stats->timeseries.back().usage.upstream_429 == 2);
  }
}

TEMPLATE_LIST_TEST_CASE("Storage stats count partial minutes at the window edges exactly",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend a = MakeBackend("a");
  std::vector<UsageRecord> batch;
  // One record every 10 s from T to T+5 min.
  for (int i = 0; i < 30; ++i) batch.push_back(MakeUsage(a, TestEpoch() + std::chrono::seconds(i * 10)));
  REQUIRE(store->AppendUsage(batch).ok());
  // [T+25 s, T+3 min 35 s): records at 30..210 s, i.e. 19 of them; the
  // minutes starting at T+1 min and T+2 min are whole, the rest is partial.
  auto stats = store->QueryUsageStats({.from = TestEpoch() + std::chrono::seconds(25),
                                       .to = TestEpoch() + std::chrono::seconds(215),
                                       .bucket_seconds = 60});
  REQUIRE(stats.ok());
  CHECK(stats->totals.requests == 19);
  CHECK(stats->totals.prompt_tokens == 190);
  REQUIRE(stats->timeseries.size() == 4);
  CHECK(stats->timeseries[0].start == TestEpoch());
  CHECK(stats->timeseries[0].usage.requests == 3);  // 30, 40, 50 s
  CHECK(stats->timeseries[1].usage.requests == 6);
  CHECK(stats->timeseries[2].usage.requests == 6);
  CHECK(stats->timeseries[3].usage.requests == 4);  // 180..210 s
  // A window inside one minute reads records only.
  auto inner = store->QueryUsageStats({.from = TestEpoch() + std::chrono::seconds(61),
                                       .to = TestEpoch() + std::chrono::seconds(89),
                                       .bucket_seconds = 60});
  REQUIRE(inner.ok());
  CHECK(inner->totals.requests == 2);  // 70 and 80 s
}

TEMPLATE_LIST_TEST_CASE("Storage retention removes deleted usage from the stats", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  const Backend a = MakeBackend("a");
  std::vector<UsageRecord> batch;
  for (int s : {10, 50, 70, 130}) batch.push_back(MakeUsage(a, TestEpoch() + std::chrono::seconds(s)));
  REQUIRE(store->AppendUsage(batch).ok());
  // The cutoff falls inside the first minute: its rollup is rebuilt.
  auto deleted = store->DeleteUsageBefore(TestEpoch() + std::chrono::seconds(30));
  REQUIRE(deleted.ok());
  CHECK(*deleted == 1);
  auto stats = store->QueryUsageStats(
      {.from = TestEpoch(), .to = TestEpoch() + std::chrono::minutes(3), .bucket_seconds = 60});
  REQUIRE(stats.ok());
  CHECK(stats->totals.requests == 3);
  REQUIRE(stats->timeseries.size() == 3);
  CHECK(stats->timeseries[0].usage.requests == 1);
  // A whole-minute cutoff drops whole minutes.
  REQUIRE(store->DeleteUsageBefore(TestEpoch() + std::chrono::minutes(2)).ok());
  stats = store->QueryUsageStats(
      {.from = TestEpoch(), .to = TestEpoch() + std::chrono::minutes(3), .bucket_seconds = 60});
  REQUIRE(stats.ok());
  CHECK(stats->totals.requests == 1);
}

// --- Client keys ----------------------------------------------------------------

inline ClientKey MakeClientKey(const std::string& name, int n) {
  ClientKey k;
  k.id = "key_" + name + std::to_string(n);
  k.name = name;
  k.key_hash = std::string(63, 'a') + std::to_string(n % 10);
  k.hint = "ab" + std::to_string(10 + n % 90);
  k.metadata = R"({"team":"ml"})";
  k.created_at = TestEpoch() + std::chrono::seconds(n);
  return k;
}

TEMPLATE_LIST_TEST_CASE("Storage keeps client keys and lists them oldest first", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  const ClientKey second = MakeClientKey("second", 2);
  const ClientKey first = MakeClientKey("first", 1);
  REQUIRE(store->CreateClientKey(second).ok());
  REQUIRE(store->CreateClientKey(first).ok());
  auto keys = store->ListClientKeys();
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 2);
  CHECK((*keys)[0] == first);
  CHECK((*keys)[1] == second);
}

TEMPLATE_LIST_TEST_CASE("Storage refuses a second live client key with the same name",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  REQUIRE(store->CreateClientKey(MakeClientKey("ci", 1)).ok());
  const Status dup = store->CreateClientKey(MakeClientKey("ci", 2));
  CHECK(dup.code() == StatusCode::kAlreadyExists);
  CHECK(dup.param() == "name");
  const Status same_id = store->CreateClientKey(MakeClientKey("ci", 1));
  CHECK(same_id.code() == StatusCode::kAlreadyExists);
  // Once revoked, the name is free again.
  REQUIRE(store->RevokeClientKey("key_ci1", TestEpoch()).ok());
  CHECK(store->CreateClientKey(MakeClientKey("ci", 2)).ok());
  auto keys = store->ListClientKeys();
  REQUIRE(keys.ok());
  CHECK(keys->size() == 2);
}

TEMPLATE_LIST_TEST_CASE("Storage revokes a client key once and keeps the first time",
                        "[storage]", StorageMakers) {
  auto store = MakeStore<TestType>();
  REQUIRE(store->CreateClientKey(MakeClientKey("ci", 1)).ok());
  CHECK(store->RevokeClientKey("key_nope", TestEpoch()).code() == StatusCode::kNotFound);
  REQUIRE(store->RevokeClientKey("key_ci1", TestEpoch() + std::chrono::seconds(5)).ok());
  REQUIRE(store->RevokeClientKey("key_ci1", TestEpoch() + std::chrono::seconds(9)).ok());
  auto keys = store->ListClientKeys();
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 1);
  CHECK((*keys)[0].revoked_at == TestEpoch() + std::chrono::seconds(5));
}

TEMPLATE_LIST_TEST_CASE("Storage only moves a client key's last use forward", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  REQUIRE(store->CreateClientKey(MakeClientKey("ci", 1)).ok());
  REQUIRE(store->TouchClientKeys({{"key_ci1", TestEpoch() + std::chrono::seconds(20)},
                                  {"key_unknown", TestEpoch()}})
              .ok());
  REQUIRE(store->TouchClientKeys({{"key_ci1", TestEpoch() + std::chrono::seconds(10)}}).ok());
  auto keys = store->ListClientKeys();
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 1);
  CHECK((*keys)[0].last_used_at == TestEpoch() + std::chrono::seconds(20));
}

// --- Config and pools -----------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("Storage returns the default config until one is stored", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  auto config = store->GetConfig();
  REQUIRE(config.ok());
  const Config defaults;
  CHECK(*config == defaults);

  Config changed;
  changed.pool_order = {"fast", "primary", "cheap"};
  changed.strategy = Strategy::kLowestLatency;
  changed.max_attempts = 5;
  changed.cooldown_base_seconds = 2;
  changed.cooldown_max_seconds = 60;
  changed.error_threshold = 4;
  changed.body_limit_bytes = 2 << 20;
  changed.usage_retention_days = 7;
  REQUIRE(store->PutConfig(changed).ok());
  auto got = store->GetConfig();
  REQUIRE(got.ok());
  CHECK(*got == changed);
}

TEMPLATE_LIST_TEST_CASE("Storage refuses an invalid config and keeps the old one", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  Config bad;
  bad.max_attempts = 0;
  const Status s = store->PutConfig(bad);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.param() == "max_attempts");
  auto got = store->GetConfig();
  REQUIRE(got.ok());
  const Config defaults;
  CHECK(*got == defaults);
}

TEMPLATE_LIST_TEST_CASE("Storage counts backends per pool in routing order", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  const SystemTime now = TestEpoch() + std::chrono::minutes(1);
  Backend healthy = MakeBackend("healthy", "primary");
  Backend cooling = MakeBackend("cooling", "primary");
  cooling.status = BackendStatus::kCooling;
  cooling.cooldown_until = now + std::chrono::seconds(10);
  Backend expired = MakeBackend("expired", "primary");
  expired.cooldown_until = now - std::chrono::seconds(10);
  Backend broken = MakeBackend("broken", "fallback");
  broken.status = BackendStatus::kError;
  Backend off = MakeBackend("off", "fallback");
  off.enabled = false;
  Backend extra = MakeBackend("extra", "zeta");
  Backend extra2 = MakeBackend("extra2", "alpha");
  for (const Backend& b : {healthy, cooling, expired, broken, off, extra, extra2}) {
    REQUIRE(store->CreateBackend(b).ok());
  }
  auto pools = store->GetPoolStats(now);
  REQUIRE(pools.ok());
  REQUIRE(pools->size() == 4);
  CHECK((*pools)[0] == PoolStats{"primary", 0, 3, 3, 2, 1, 0});
  CHECK((*pools)[1] == PoolStats{"fallback", 1, 2, 1, 0, 0, 1});
  CHECK((*pools)[2] == PoolStats{"alpha", 2, 1, 1, 1, 0, 0});
  CHECK((*pools)[3] == PoolStats{"zeta", 3, 1, 1, 1, 0, 0});
}

// --- Concurrency ------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("Storage loses nothing under concurrent writers", "[storage]",
                        StorageMakers) {
  auto store = MakeStore<TestType>();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        Backend b = MakeBackend("t" + std::to_string(t) + "-" + std::to_string(i));
        if (!store->CreateBackend(b).ok()) ++failures;
        if (!store->AppendUsage({MakeUsage(b, TestEpoch())}).ok()) ++failures;
        if (!store->UpdateBackendStates({BackendState{.backend_id = b.id,
                                                      .status = BackendStatus::kError}})
                 .ok()) {
          ++failures;
        }
        if (!store->ListBackends({}).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  auto all = store->ListBackends({});
  REQUIRE(all.ok());
  CHECK(all->size() == kThreads * kPerThread);
  auto page = store->ListUsage({.limit = 1000});
  REQUIRE(page.ok());
  CHECK(page->records.size() == kThreads * kPerThread);
  std::set<int64_t> ids;
  for (const UsageRecord& r : page->records) ids.insert(r.id);
  CHECK(ids.size() == kThreads * kPerThread);
}

}  // namespace switchboard::testing::conformance

#endif  // SWITCHBOARD_TESTS_SUPPORT_STORAGE_CONFORMANCE_H_
