// SqliteStorage beyond the conformance suite: what only a file-backed store
// has (persistence, WAL, schema versions, indexes, lock errors) and what
// must never reach the file (plaintext API keys).
#include <SQLiteCpp/SQLiteCpp.h>
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "support/makers.h"
#include "switchboard/storage.h"

namespace switchboard {
namespace {

using testing::MakeBackend;
using testing::MakeUsage;
using testing::TestEpoch;

// A fresh directory under /tmp, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/switchboard-sqlite-test-XXXXXX";
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::unique_ptr<Storage> OpenOrFail(const std::string& path, int busy_timeout_ms = 5000) {
  auto storage = OpenSqliteStorage({.path = path, .busy_timeout_ms = busy_timeout_ms});
  INFO(storage.status().ToString());
  REQUIRE(storage.ok());
  return std::move(*storage);
}

// The raw bytes of `path`, "" when it does not exist.
std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The database file and its WAL and shared-memory companions, concatenated.
std::string ReadDatabaseFiles(const std::string& db_path) {
  return ReadBytes(db_path) + ReadBytes(db_path + "-wal") + ReadBytes(db_path + "-shm");
}

TEST_CASE("SqliteStorage keeps everything across close and reopen", "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("switchboard.db");

  Backend a = MakeBackend("alpha");
  a.model_mappings["*"] = ModelMapping{"*", 3};
  a.metadata = R"({"team":"ml"})";
  a.api_key_ciphertext = "sb1:k1:b3BhcXVlLWJsb2I=";
  a.api_key_hint = "...f00d";
  Backend b = MakeBackend("beta", "fallback");
  BackendState cooling{.backend_id = b.id,
                       .status = BackendStatus::kCooling,
                       .cooldown_until = TestEpoch() + std::chrono::milliseconds(90'123),
                       .consecutive_429_count = 2,
                       .consecutive_failures = 1,
                       .last_error = "429 from upstream"};
  CooldownEvent event{.backend_id = b.id,
                      .backend_name = b.name,
                      .start = TestEpoch(),
                      .until = TestEpoch() + std::chrono::seconds(10),
                      .reason = "rate_limited",
                      .upstream_status = 429};
  Config config;
  config.pool_order = {"fallback", "primary", "spare"};
  config.strategy = Strategy::kLowestLatency;
  config.body_limit_bytes = 4096;
  {
    auto storage = OpenOrFail(path);
    REQUIRE(storage->CreateBackend(a).ok());
    REQUIRE(storage->CreateBackend(b).ok());
    REQUIRE(storage->UpdateBackendStates({cooling}).ok());
    REQUIRE(storage->AppendCooldownEvents({event}).ok());
    REQUIRE(storage->AppendUsage({MakeUsage(a, TestEpoch()), MakeUsage(b, TestEpoch(), 429)}).ok());
    REQUIRE(storage->PutConfig(config).ok());
  }

  auto storage = OpenOrFail(path);
  auto got_a = storage->GetBackend(a.id);
  REQUIRE(got_a.ok());
  CHECK(*got_a == a);
  auto got_b = storage->GetBackendByName("beta");
  REQUIRE(got_b.ok());
  CHECK(got_b->status == BackendStatus::kCooling);
  CHECK(got_b->cooldown_until == cooling.cooldown_until);
  CHECK(got_b->consecutive_429_count == 2);
  CHECK(got_b->consecutive_failures == 1);
  CHECK(got_b->last_error == "429 from upstream");
  auto events = storage->ListCooldownEvents({});
  REQUIRE(events.ok());
  REQUIRE(events->size() == 1);
  CHECK((*events)[0].reason == "rate_limited");
  CHECK((*events)[0].until == event.until);
  auto usage = storage->ListUsage({});
  REQUIRE(usage.ok());
  REQUIRE(usage->records.size() == 2);
  CHECK(usage->records[0].status == 429);
  CHECK(usage->records[1].backend_id == a.id);
  auto stored_config = storage->GetConfig();
  REQUIRE(stored_config.ok());
  CHECK(*stored_config == config);
}

TEST_CASE("SqliteStorage never reuses usage ids, even after deleting the newest records",
          "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("ids.db");
  const Backend b = MakeBackend("alpha");
  {
    auto storage = OpenOrFail(path);
    REQUIRE(storage->AppendUsage({MakeUsage(b, TestEpoch()), MakeUsage(b, TestEpoch())}).ok());
    auto deleted = storage->DeleteUsageBefore(TestEpoch() + std::chrono::seconds(1));
    REQUIRE(deleted.ok());
    REQUIRE(*deleted == 2);
  }
  auto storage = OpenOrFail(path);
  REQUIRE(storage->AppendUsage({MakeUsage(b, TestEpoch())}).ok());
  auto page = storage->ListUsage({});
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 1);
  CHECK(page->records[0].id == 3);  // a cursor handed out before the delete stays meaningful
}

TEST_CASE("SqliteStorage puts a file database in WAL mode", "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("wal.db");
  auto storage = OpenOrFail(path);
  REQUIRE(storage->CreateBackend(MakeBackend("alpha")).ok());

  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  CHECK(raw.execAndGet("PRAGMA journal_mode").getString() == "wal");
  CHECK(std::filesystem::exists(path + "-wal"));
}

TEST_CASE("SqliteStorage migrates a new database to SqliteSchemaVersion()", "[sqlite_storage]") {
  REQUIRE(SqliteSchemaVersion() >= 1);
  TempDir dir;
  const std::string path = dir.File("fresh.db");
  OpenOrFail(path).reset();

  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  CHECK(raw.execAndGet("PRAGMA user_version").getInt() == SqliteSchemaVersion());
  for (const char* table :
       {"backends", "cooldown_events", "usage", "config", "usage_rollup", "client_keys"}) {
    INFO(table);
    CHECK(raw.tableExists(table));
  }
}

TEST_CASE("SqliteStorage opens a database at the current version without migrating again",
          "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("current.db");
  {
    auto storage = OpenOrFail(path);
    REQUIRE(storage->CreateBackend(MakeBackend("alpha")).ok());
  }
  auto storage = OpenOrFail(path);  // re-running step 1 would fail on CREATE TABLE
  auto list = storage->ListBackends({});
  REQUIRE(list.ok());
  CHECK(list->size() == 1);
}

TEST_CASE("SqliteStorage upgrades a version 1 database in place and rolls up its usage",
          "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("v1.db");
  const Backend a = MakeBackend("alpha");
  std::vector<UsageRecord> records;
  for (int i = 0; i < 90; ++i) {
    UsageRecord r = MakeUsage(a, TestEpoch() + std::chrono::seconds(i * 2), i % 10 == 0 ? 502 : 200,
                              40 + i);
    if (i % 30 == 0) {
      r.trace = R"([{"backend":"x","pool":"primary","decision":"tried","status":429},)"
                R"({"backend":"alpha","pool":"primary","decision":"tried","status":200}])";
    }
    records.push_back(r);
  }
  UsageStats before;
  const StatsQuery query{.from = TestEpoch(), .to = TestEpoch() + std::chrono::minutes(3),
                         .bucket_seconds = 60};
  {
    auto storage = OpenOrFail(path);
    REQUIRE(storage->CreateBackend(a).ok());
    REQUIRE(storage->AppendUsage(records).ok());
    auto stats = storage->QueryUsageStats(query);
    REQUIRE(stats.ok());
    before = *stats;
  }
  {
    // Turn the file back into what version 1 wrote: no rollups, no client keys.
    SQLite::Database raw(path, SQLite::OPEN_READWRITE);
    raw.exec("DROP TABLE usage_rollup; DROP TABLE client_keys; PRAGMA user_version = 1");
  }
  auto storage = OpenOrFail(path);
  {
    SQLite::Database raw(path, SQLite::OPEN_READONLY);
    CHECK(raw.execAndGet("PRAGMA user_version").getInt() == SqliteSchemaVersion());
    CHECK(raw.execAndGet("SELECT COUNT(*) FROM usage_rollup WHERE span = 1").getInt() == 3);
  }
  auto after = storage->QueryUsageStats(query);
  REQUIRE(after.ok());
  CHECK(after->totals.requests == 90);
  CHECK(after->totals.errors == 9);
  CHECK(after->totals.upstream_429 == 3);
  CHECK(after->totals == before.totals);
  CHECK(after->by_backend == before.by_backend);
  CHECK(after->timeseries == before.timeseries);
  auto backends = storage->ListBackends({});
  REQUIRE(backends.ok());
  CHECK(backends->size() == 1);
  REQUIRE(storage->CreateClientKey(ClientKey{.id = "key_1", .name = "ci", .key_hash = "00"}).ok());
}

TEST_CASE("SqliteStorage refuses a database whose schema is newer than this build",
          "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("newer.db");
  {
    SQLite::Database raw(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    raw.exec("CREATE TABLE from_the_future (x INTEGER)");
    raw.exec("PRAGMA user_version = " + std::to_string(SqliteSchemaVersion() + 1));
  }

  auto storage = OpenSqliteStorage({.path = path});
  REQUIRE_FALSE(storage.ok());
  CHECK(storage.status().code() == StatusCode::kFailedPrecondition);

  // Refused without touching the file: no tables added, journal mode unchanged.
  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  CHECK(raw.execAndGet("PRAGMA user_version").getInt() == SqliteSchemaVersion() + 1);
  CHECK_FALSE(raw.tableExists("backends"));
  CHECK(raw.execAndGet("PRAGMA journal_mode").getString() == "delete");
}

TEST_CASE("SqliteStorage indexes usage by time, backend and time, model and time",
          "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("indexes.db");
  OpenOrFail(path).reset();

  SQLite::Database raw(path, SQLite::OPEN_READONLY);
  // Every index on usage, as its column list ("time", "backend_id,time", ...).
  std::set<std::string> indexed;
  SQLite::Statement indexes(raw,
                            "SELECT name FROM sqlite_master WHERE type = 'index' AND "
                            "tbl_name = 'usage' AND sql IS NOT NULL");
  while (indexes.executeStep()) {
    SQLite::Statement columns(raw, "SELECT name FROM pragma_index_info(?1) ORDER BY seqno");
    columns.bind(1, indexes.getColumn(0).getString());
    std::string list;
    while (columns.executeStep()) {
      if (!list.empty()) list += ",";
      list += columns.getColumn(0).getString();
    }
    indexed.insert(list);
  }
  CHECK(indexed.count("time") == 1);
  CHECK(indexed.count("backend_id,time") == 1);
  CHECK(indexed.count("model,time") == 1);

  // And the time-range scan behind the stats actually uses one.
  SQLite::Statement plan(raw,
                         "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM usage "
                         "WHERE time >= 0 AND time < 1000");
  std::string details;
  while (plan.executeStep()) details += plan.getColumn(3).getString() + "\n";
  INFO(details);
  CHECK(details.find("USING COVERING INDEX usage_time") != std::string::npos);
}

TEST_CASE("SqliteStorage files never contain a plaintext API key", "[sqlite_storage]") {
  // The key exists only in this test: the store sees its hint and an opaque
  // stand-in for its ciphertext, as KeyCipher would hand over.
  const std::string plaintext = "sk-test-PLAINTEXT-SENTINEL";
  const std::string ciphertext = "sb1:k1:T3BhcXVlQ2lwaGVydGV4dEJsb2JfMDEyMzQ1Njc4OQ==";
  const std::string hint = ApiKeyHint(plaintext);
  REQUIRE(hint.size() <= 3 + 4);  // "..." and at most 4 characters of the key
  REQUIRE(plaintext.size() >= 4);
  REQUIRE(hint == "..." + plaintext.substr(plaintext.size() - (hint.size() - 3)));

  TempDir dir;
  const std::string path = dir.File("keys.db");
  auto storage = OpenOrFail(path);
  std::vector<UsageRecord> usage;
  for (int i = 0; i < 20; ++i) {
    Backend b = MakeBackend("backend-" + std::to_string(i));
    b.label = "Label " + std::to_string(i);
    b.api_key_ciphertext = ciphertext;
    b.api_key_hint = hint;
    REQUIRE(storage->CreateBackend(b).ok());
    usage.push_back(MakeUsage(b, TestEpoch()));
  }
  REQUIRE(storage->AppendUsage(usage).ok());
  REQUIRE(storage->ReplaceApiKeys({{"bkd_backend-0", ciphertext + "-rotated"}}).ok());

  auto check_files = [&](const char* when) {
    INFO(when);
    const std::string bytes = ReadDatabaseFiles(path);
    // The scan sees the stored rows: the ciphertext and hint are there...
    REQUIRE(bytes.find(ciphertext) != std::string::npos);
    REQUIRE(bytes.find(hint) != std::string::npos);
    // ...and the key is not, whole or in part beyond the hint.
    CHECK(bytes.find(plaintext) == std::string::npos);
    CHECK(bytes.find("PLAINTEXT-SENTINEL") == std::string::npos);
    CHECK(bytes.find("sk-test-") == std::string::npos);
  };
  check_files("while open (rows in the WAL)");
  REQUIRE(std::filesystem::file_size(path + "-wal") > 0);
  storage.reset();  // the last connection checkpoints the WAL into the main file
  check_files("after close");
}

TEST_CASE("SqliteStorage reports a locked database as kUnavailable and changes nothing",
          "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("locked.db");
  auto storage = OpenOrFail(path, /*busy_timeout_ms=*/50);
  const Backend a = MakeBackend("alpha");
  REQUIRE(storage->CreateBackend(a).ok());

  {
    SQLite::Database other(path, SQLite::OPEN_READWRITE);
    SQLite::Transaction holder(other, SQLite::TransactionBehavior::IMMEDIATE);

    const Status create = storage->CreateBackend(MakeBackend("beta"));
    CHECK(create.code() == StatusCode::kUnavailable);
    CHECK(create.message().find("locked") != std::string::npos);
    const Status append = storage->AppendUsage({MakeUsage(a, TestEpoch())});
    CHECK(append.code() == StatusCode::kUnavailable);
    CHECK(storage->DeleteBackend(a.id).code() == StatusCode::kUnavailable);
    CHECK(storage->PutConfig(Config{}).code() == StatusCode::kUnavailable);
    // Reads still work: WAL readers do not wait for the writer.
    CHECK(storage->GetBackend(a.id).ok());
  }  // the other connection rolls back and lets go

  CHECK(storage->GetBackendByName("beta").status().code() == StatusCode::kNotFound);
  CHECK(storage->GetBackend(a.id).ok());
  auto page = storage->ListUsage({});
  REQUIRE(page.ok());
  CHECK(page->records.empty());
  // The cached insert statement recovers from the failed call.
  CHECK(storage->AppendUsage({MakeUsage(a, TestEpoch())}).ok());
  CHECK(storage->CreateBackend(MakeBackend("beta")).ok());
}

TEST_CASE("OpenSqliteStorage reports a path it cannot open as kUnavailable", "[sqlite_storage]") {
  auto storage = OpenSqliteStorage({.path = "/nonexistent-switchboard-dir/sub/switchboard.db"});
  REQUIRE_FALSE(storage.ok());
  CHECK(storage.status().code() == StatusCode::kUnavailable);
}

TEST_CASE("OpenSqliteStorage refuses an empty path", "[sqlite_storage]") {
  auto storage = OpenSqliteStorage({.path = ""});
  REQUIRE_FALSE(storage.ok());
  CHECK(storage.status().code() == StatusCode::kInvalidArgument);
  CHECK(storage.status().param() == "path");
}

TEST_CASE("OpenSqliteStorage refuses a file that is not a database", "[sqlite_storage]") {
  TempDir dir;
  const std::string path = dir.File("not-a.db");
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(4096, 'x');
  }
  auto storage = OpenSqliteStorage({.path = path});
  REQUIRE_FALSE(storage.ok());
  CHECK(storage.status().code() == StatusCode::kFailedPrecondition);
  CHECK(ReadBytes(path) == std::string(4096, 'x'));
}

// The SQL aggregation must agree with the in-memory store's C++ one on every
// field, percentiles and bucket alignment included.
TEST_CASE("SqliteStorage usage statistics match the memory store on random data",
          "[sqlite_storage]") {
  auto sqlite = OpenOrFail(":memory:");
  auto memory = NewMemoryStorage();
  std::mt19937 rng(20261126);
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  const Backend backends[] = {MakeBackend("a"), MakeBackend("b", "fallback"), MakeBackend("c")};
  const char* models[] = {"gpt-4o", "claude", "llama"};
  const int statuses[] = {200, 200, 200, 201, 400, 401, 429, 429, 500, 502, 504};
  std::vector<UsageRecord> records;
  for (int i = 0; i < 600; ++i) {
    const Backend& b = backends[uniform(0, 2)];
    // Around the epoch too, so bucket alignment of negative times is covered.
    const SystemTime time = (i % 5 == 0 ? SystemTime{} : TestEpoch()) +
                            std::chrono::milliseconds(uniform(-600'000, 600'000));
    UsageRecord r = MakeUsage(b, time, statuses[uniform(0, 10)], uniform(0, 50) * 10);
    r.model = models[uniform(0, 2)];
    r.ttfb_ms = uniform(0, 3) == 0 ? 0 : uniform(1, 40);
    r.prompt_tokens = uniform(0, 1000);
    r.completion_tokens = uniform(0, 1000);
    if (i % 7 == 0) r.backend_name = b.name + "-renamed";  // newest name per id wins
    if (i % 11 == 0) r.backend_id = r.backend_name = "";   // no backend answered
    records.push_back(r);
  }
  REQUIRE(sqlite->AppendUsage(records).ok());
  REQUIRE(memory->AppendUsage(records).ok());

  const StatsQuery queries[] = {
      {.from = TestEpoch() - std::chrono::minutes(10),
       .to = TestEpoch() + std::chrono::minutes(10),
       .bucket_seconds = 60},
      {.from = TestEpoch() - std::chrono::seconds(123),
       .to = TestEpoch() + std::chrono::seconds(77),
       .bucket_seconds = 7},
      {.from = SystemTime{} - std::chrono::minutes(10),
       .to = SystemTime{} + std::chrono::minutes(10),
       .bucket_seconds = 45},
      {.from = SystemTime{} - std::chrono::hours(1),
       .to = TestEpoch() + std::chrono::hours(1),
       .bucket_seconds = 1},
      {.from = TestEpoch(), .to = TestEpoch(), .bucket_seconds = 60},  // empty range
  };
  for (const StatsQuery& q : queries) {
    INFO("bucket_seconds " << q.bucket_seconds);
    auto want = memory->QueryUsageStats(q);
    auto got = sqlite->QueryUsageStats(q);
    REQUIRE(want.ok());
    REQUIRE(got.ok());
    if (q.from < q.to) REQUIRE(want->totals.requests > 0);  // a comparison of something
    CHECK(got->totals == want->totals);
    CHECK(got->by_backend == want->by_backend);
    CHECK(got->by_model == want->by_model);
    CHECK(got->timeseries.size() == want->timeseries.size());
    CHECK(got->timeseries == want->timeseries);
  }
}

}  // namespace
}  // namespace switchboard
