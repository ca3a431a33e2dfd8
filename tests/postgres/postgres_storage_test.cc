// The PostgreSQL store against a real server (the ctest fixture
// postgres_server): the Storage conformance suite, each case in a schema of
// its own, then what only PostgreSQL has: migrations, the connection pool,
// reconnecting, errors without the password, several instances on one store.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "postgres_test_env.h"
#include "switchboard/postgres_storage.h"
#include "switchboard/storage.h"

namespace {

struct PostgresStorageMaker {
  static std::unique_ptr<switchboard::Storage> Make() {
    auto storage = switchboard::OpenPostgresStorage(
        {.url = switchboard::testing::RequireTestPostgresUrl(),
         .schema = switchboard::testing::FreshSchemaName()});
    INFO(storage.status().ToString());
    REQUIRE(storage.ok());
    return std::move(*storage);
  }
};

}  // namespace

#define SWITCHBOARD_STORAGE_MAKERS std::tuple<PostgresStorageMaker>
#include "support/storage_conformance.h"

namespace switchboard::testing {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<Storage> Open(const std::string& schema, int max_connections = 4,
                              std::string url = "") {
  if (url.empty()) url = RequireTestPostgresUrl();
  auto storage = OpenPostgresStorage(
      {.url = url, .schema = schema, .max_connections = max_connections});
  INFO(storage.status().ToString());
  REQUIRE(storage.ok());
  return std::move(*storage);
}

std::string Quoted(const std::string& schema) { return "\"" + schema + "\""; }

// The URL with `application_name` set, to find the store's connections in
// pg_stat_activity.
std::string TaggedUrl(const std::string& tag) {
  return RequireTestPostgresUrl() + "?application_name=" + tag;
}

// A 127.0.0.1 port nothing listens on: the test server's port + 1 is not
// reliable, so bind one and close it.
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST_CASE("PostgresStorage migrates a new schema to the latest version, once", "[postgres]") {
  const std::string schema = FreshSchemaName();
  { auto first = Open(schema); }
  { auto again = Open(schema); }  // a second start finds the work done
  RawPostgres raw(RequireTestPostgresUrl());
  REQUIRE(raw.ok());
  auto rows = raw.Query("SELECT version FROM " + Quoted(schema) +
                        ".schema_version ORDER BY version");
  REQUIRE(static_cast<int>(rows.size()) == PostgresSchemaVersion());
  CHECK(*rows.back()[0] == std::to_string(PostgresSchemaVersion()));
  // The usage and stats queries have the same indexes as SQLite's.
  auto indexes = raw.Query("SELECT indexname FROM pg_indexes WHERE schemaname = $1 "
                           "ORDER BY indexname",
                           {schema});
  std::set<std::string> names;
  for (const auto& row : indexes) names.insert(*row[0]);
  for (const char* index : {"usage_time", "usage_backend_time", "usage_model_time",
                            "cooldown_events_backend", "backends_name_key"}) {
    INFO(index);
    CHECK(names.count(index) == 1);
  }
}

TEST_CASE("PostgresStorage instances starting together migrate the schema exactly once",
          "[postgres]") {
  const std::string schema = FreshSchemaName();
  const std::string url = RequireTestPostgresUrl();
  constexpr int kInstances = 6;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kInstances; ++i) {
    threads.emplace_back([&] {
      auto storage = OpenPostgresStorage({.url = url, .schema = schema});
      if (!storage.ok()) ++failures;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  RawPostgres raw(url);
  CHECK(raw.Value("SELECT count(*) FROM " + Quoted(schema) + ".schema_version") ==
        std::to_string(PostgresSchemaVersion()));
}

TEST_CASE("PostgresStorage rebuilds the rollups of stored usage when migrating from version 2",
          "[postgres]") {
  const std::string schema = FreshSchemaName();
  const StatsQuery day{.from = TestEpoch(), .to = TestEpoch() + std::chrono::hours(24),
                       .bucket_seconds = 300};
  UsageStats before;
  {
    auto store = Open(schema);
    const Backend b = MakeBackend("old");
    std::vector<UsageRecord> batch;
    for (int i = 0; i < 50; ++i) {
      batch.push_back(MakeUsage(b, TestEpoch() + std::chrono::minutes(7 * i), 200, 10 * i));
    }
    REQUIRE(store->AppendUsage(batch).ok());
    auto stats = store->QueryUsageStats(day);
    REQUIRE(stats.ok());
    before = *stats;
  }
  // Back to the version 2 schema: minute rollups only, and none of them.
  RawPostgres raw(RequireTestPostgresUrl());
  const std::string q = Quoted(schema);
  raw.Query("DELETE FROM " + q + ".usage_rollup");
  raw.Query("ALTER TABLE " + q + ".usage_rollup DROP CONSTRAINT usage_rollup_pkey");
  raw.Query("ALTER TABLE " + q + ".usage_rollup DROP COLUMN span");
  raw.Query("ALTER TABLE " + q + ".usage_rollup ADD PRIMARY KEY (minute, backend_id, model)");
  raw.Query("DELETE FROM " + q + ".schema_version WHERE version > 2");

  auto store = Open(schema);
  auto after = store->QueryUsageStats(day);
  REQUIRE(after.ok());
  CHECK(after->totals.requests == 50);
  CHECK(after->totals == before.totals);
  CHECK(after->by_backend == before.by_backend);
  CHECK(after->by_model == before.by_model);
  CHECK(after->timeseries == before.timeseries);
  CHECK(raw.Value("SELECT count(DISTINCT span) FROM " + q + ".usage_rollup") == "3");
}

TEST_CASE("PostgresStorage refuses a schema newer than it understands", "[postgres]") {
  const std::string schema = FreshSchemaName();
  { auto storage = Open(schema); }
  RawPostgres raw(RequireTestPostgresUrl());
  raw.Query("INSERT INTO " + Quoted(schema) +
            ".schema_version (version, applied_at) VALUES (999, 0)");
  auto storage = OpenPostgresStorage({.url = RequireTestPostgresUrl(), .schema = schema});
  CHECK(storage.status().code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(storage.status().message(), Catch::Contains("999"));
}

TEST_CASE("PostgresStorage keeps the API key ciphertext as bytea, byte for byte", "[postgres]") {
  const std::string schema = FreshSchemaName();
  auto store = Open(schema);
  Backend b = MakeBackend("keyed");
  b.api_key_ciphertext = std::string("sb1:01:\x00\xff\x80 binary", 17);
  REQUIRE(store->CreateBackend(b).ok());
  auto got = store->GetBackend(b.id);
  REQUIRE(got.ok());
  CHECK(got->api_key_ciphertext == b.api_key_ciphertext);

  RawPostgres raw(RequireTestPostgresUrl());
  CHECK(raw.Value("SELECT pg_typeof(api_key_ciphertext)::text FROM " + Quoted(schema) +
                  ".backends") == "bytea");
  CHECK(raw.Value("SELECT encode(api_key_ciphertext, 'hex') FROM " + Quoted(schema) +
                  ".backends") == "7362313a30313a00ff802062696e617279");

  REQUIRE(store->ReplaceApiKeys({{b.id, std::string("\x01\x02", 2)}}).ok());
  CHECK(store->GetBackend(b.id)->api_key_ciphertext == std::string("\x01\x02", 2));
}

TEST_CASE("PostgresStorage stores times as Unix milliseconds, like SQLite", "[postgres]") {
  const std::string schema = FreshSchemaName();
  auto store = Open(schema);
  Backend b = MakeBackend("timed");
  b.cooldown_until = TestEpoch() + milliseconds(1234);
  REQUIRE(store->CreateBackend(b).ok());
  REQUIRE(store->AppendUsage({MakeUsage(b, TestEpoch() + milliseconds(5))}).ok());
  RawPostgres raw(RequireTestPostgresUrl());
  CHECK(raw.Value("SELECT created_at FROM " + Quoted(schema) + ".backends") == "1767225600000");
  CHECK(raw.Value("SELECT cooldown_until FROM " + Quoted(schema) + ".backends") ==
        "1767225601234");
  CHECK(raw.Value("SELECT time FROM " + Quoted(schema) + ".usage") == "1767225600005");
}

TEST_CASE("PostgresStorage orders names bytewise whatever the database collation",
          "[postgres]") {
  auto store = Open(FreshSchemaName());
  for (const char* name : {"beta", "Zulu", "alpha", "_under", "Alpha"}) {
    REQUIRE(store->CreateBackend(MakeBackend(name)).ok());
  }
  auto all = store->ListBackends({});
  REQUIRE(all.ok());
  CHECK(conformance::Names(*all) ==
        std::vector<std::string>{"Alpha", "Zulu", "_under", "alpha", "beta"});
}

TEST_CASE("PostgresStorage instances sharing a store see each other's writes", "[postgres]") {
  const std::string schema = FreshSchemaName();
  auto a = Open(schema);
  auto b = Open(schema);
  REQUIRE(a->CreateBackend(MakeBackend("shared")).ok());
  auto seen = b->GetBackendByName("shared");
  REQUIRE(seen.ok());
  CHECK(seen->id == "bkd_shared");
  REQUIRE(b->UpdateBackendStates({BackendState{.backend_id = "bkd_shared",
                                               .status = BackendStatus::kError,
                                               .consecutive_failures = 3}})
              .ok());
  CHECK(a->GetBackend("bkd_shared")->status == BackendStatus::kError);
}

TEST_CASE("PostgresStorage lets exactly one of two instances create a name", "[postgres]") {
  const std::string schema = FreshSchemaName();
  auto a = Open(schema);
  auto b = Open(schema);
  constexpr int kRounds = 20;
  for (int i = 0; i < kRounds; ++i) {
    Backend x = MakeBackend("race" + std::to_string(i));
    Backend y = x;
    y.id = x.id + "_other";
    Status sa;
    Status sb;
    std::thread ta([&] { sa = a->CreateBackend(x); });
    std::thread tb([&] { sb = b->CreateBackend(y); });
    ta.join();
    tb.join();
    CHECK(sa.ok() != sb.ok());
    const Status& loser = sa.ok() ? sb : sa;
    CHECK(loser.code() == StatusCode::kAlreadyExists);
    CHECK(loser.param() == "name");
  }
  CHECK(a->ListBackends({})->size() == kRounds);
}

TEST_CASE("PostgresStorage instances appending to the same minute lose no usage counts",
          "[postgres]") {
  const std::string schema = FreshSchemaName();
  auto a = Open(schema);
  auto b = Open(schema);
  const Backend one = MakeBackend("one");
  const Backend two = MakeBackend("two");
  constexpr int kThreadsPerStore = 3;
  constexpr int kBatches = 20;
  constexpr int kPerBatch = 10;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (Storage* store : {a.get(), b.get()}) {
    for (int t = 0; t < kThreadsPerStore; ++t) {
      threads.emplace_back([&, store, t] {
        for (int i = 0; i < kBatches; ++i) {
          std::vector<UsageRecord> batch;
          for (int j = 0; j < kPerBatch; ++j) {
            // Both backends, two minutes: every batch touches the same rollup rows.
            batch.push_back(MakeUsage(j % 2 ? one : two,
                                      TestEpoch() + std::chrono::seconds(30 + 60 * (j % 2)),
                                      200, 10 + t));
          }
          if (!store->AppendUsage(batch).ok()) ++failures;
        }
      });
    }
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  auto stats = a->QueryUsageStats(
      {.from = TestEpoch(), .to = TestEpoch() + std::chrono::minutes(2), .bucket_seconds = 60});
  REQUIRE(stats.ok());
  constexpr int kTotal = 2 * kThreadsPerStore * kBatches * kPerBatch;
  CHECK(stats->totals.requests == kTotal);
  CHECK(stats->totals.prompt_tokens == kTotal * 10);
  REQUIRE(stats->timeseries.size() == 2);
  CHECK(stats->timeseries[0].usage.requests == kTotal / 2);
  CHECK(stats->timeseries[1].usage.requests == kTotal / 2);
}

TEST_CASE("PostgresStorage reconnects by itself after its connections are cut", "[postgres]") {
  const std::string tag = "sbtest_cut_" + std::to_string(::getpid());
  auto store = Open(FreshSchemaName(), 3, TaggedUrl(tag));
  REQUIRE(store->CreateBackend(MakeBackend("survivor")).ok());
  // Open all three pooled connections.
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < 6; ++i) {
      threads.emplace_back([&] {
        for (int j = 0; j < 20; ++j) (void)store->ListBackends({});
      });
    }
    for (auto& t : threads) t.join();
  }
  RawPostgres raw(RequireTestPostgresUrl());
  // What a server restart does to a client: every backend process ends (57P01).
  const std::string killed = raw.Value(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE application_name = $1",
      {tag});
  CHECK(killed != "0");
  for (int i = 0; i < 5; ++i) {
    auto got = store->GetBackendByName("survivor");
    INFO(got.status().ToString());
    CHECK(got.ok());
  }
  CHECK(store->AppendUsage({MakeUsage(MakeBackend("survivor"), TestEpoch())}).ok());
}

// A server of the test's own (restarting the shared one would disturb the
// tests running beside this one), driven by pg_fixture.sh.
class PrivateServer {
 public:
  PrivateServer() {
    std::string templ = "/tmp/switchboard-pg-state-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    state_ = templ;
    REQUIRE(Run("start"));
    std::ifstream in(state_ + "/url");
    REQUIRE(std::getline(in, url_));
  }
  ~PrivateServer() {
    (void)Run("stop");
    std::error_code ec;
    std::filesystem::remove_all(state_, ec);
  }
  PrivateServer(const PrivateServer&) = delete;
  PrivateServer& operator=(const PrivateServer&) = delete;

  const std::string& url() const { return url_; }
  // "halt" stops the server keeping its data; "resume" starts it again on
  // the same port.
  bool Run(const std::string& action) {
    const std::string command = std::string("'") + SWITCHBOARD_PG_FIXTURE + "' " + action + " '" +
                                state_ + "' >/dev/null";
    return std::system(command.c_str()) == 0;
  }

 private:
  std::string state_;
  std::string url_;
};

TEST_CASE("PostgresStorage answers Unavailable while the server is down and reconnects after",
          "[postgres]") {
  PrivateServer server;
  auto store = Open(FreshSchemaName(), 2, server.url());
  REQUIRE(store->CreateBackend(MakeBackend("before")).ok());

  REQUIRE(server.Run("halt"));
  const Status down = store->CreateBackend(MakeBackend("during"));
  CHECK(down.code() == StatusCode::kUnavailable);
  const std::string password = server.url().substr(server.url().find(':', 14) + 1, 32);
  CHECK_THAT(down.message(), !Catch::Contains(password));

  REQUIRE(server.Run("resume"));
  auto before = store->GetBackendByName("before");
  INFO(before.status().ToString());
  CHECK(before.ok());
  CHECK(store->CreateBackend(MakeBackend("after")).ok());
  CHECK(store->GetBackendByName("during").status().code() == StatusCode::kNotFound);
  CHECK(store->ListBackends({})->size() == 2);
}

TEST_CASE("PostgresStorage opens no more connections than its pool allows", "[postgres]") {
  const std::string tag = "sbtest_pool_" + std::to_string(::getpid());
  auto store = Open(FreshSchemaName(), 2, TaggedUrl(tag));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 10; ++j) {
        Backend b = MakeBackend("p" + std::to_string(i) + "-" + std::to_string(j));
        if (!store->CreateBackend(b).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  RawPostgres raw(RequireTestPostgresUrl());
  const int open =
      std::stoi(raw.Value("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                          {tag}));
  CHECK(open >= 1);
  CHECK(open <= 2);
}

TEST_CASE("PostgresStorage answers Unavailable without the password when the server is down",
          "[postgres]") {
  const std::string url = "postgresql://switchboard:hunter2-secret@127.0.0.1:" +
                          std::to_string(ClosedPort()) + "/postgres";
  auto storage = OpenPostgresStorage({.url = url, .connect_timeout_seconds = 2});
  CHECK(storage.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(storage.status().message(), !Catch::Contains("hunter2"));
  CHECK_THAT(storage.status().message(), Catch::Contains("127.0.0.1"));
}

TEST_CASE("PostgresStorage answers Unavailable without the password for a wrong password",
          "[postgres]") {
  std::string url = RequireTestPostgresUrl();
  const std::string password = TestPostgresPassword();
  const std::string wrong = "wrong-" + password.substr(0, 6) + "-pw";
  url.replace(url.find(password), password.size(), wrong);
  auto storage = OpenPostgresStorage({.url = url});
  CHECK(storage.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(storage.status().message(), !Catch::Contains(wrong));
  CHECK_THAT(storage.status().message(), Catch::Contains("password authentication failed"));
}

TEST_CASE("PostgresStorage refuses an empty or malformed connection url", "[postgres]") {
  CHECK(OpenPostgresStorage({.url = ""}).status().code() == StatusCode::kInvalidArgument);
  auto bad = OpenPostgresStorage({.url = "postgresql://u:topsecret@h/db?no_such_option=1"});
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(bad.status().message(), !Catch::Contains("topsecret"));
}

TEST_CASE("PostgresStorage keeps a schema name with quotes as a name, not as SQL",
          "[postgres]") {
  const std::string schema = FreshSchemaName() + "\"; DROP TABLE x; --";
  auto store = Open(schema);
  REQUIRE(store->CreateBackend(MakeBackend("quoted")).ok());
  RawPostgres raw(RequireTestPostgresUrl());
  CHECK(raw.Value("SELECT count(*) FROM pg_namespace WHERE nspname = $1", {schema}) == "1");
}

TEST_CASE("RedactPostgresUrl hides the password and keeps the rest", "[postgres]") {
  CHECK(RedactPostgresUrl("postgres://sb:s3cret@db:5432/switchboard") ==
        "postgres://sb:***@db:5432/switchboard");
  CHECK(RedactPostgresUrl("postgresql://sb@db/x?sslmode=require&password=s3cret") ==
        "postgresql://sb@db/x?sslmode=require&password=***");
  CHECK(RedactPostgresUrl("host=db password=s3cret dbname=x") ==
        "host=db password=*** dbname=x");
  CHECK(RedactPostgresUrl("postgres://db/x") == "postgres://db/x");
  CHECK(IsPostgresUrl("postgres://db/x"));
  CHECK(IsPostgresUrl("postgresql://db/x"));
  CHECK_FALSE(IsPostgresUrl("switchboard.db"));
}

}  // namespace
}  // namespace switchboard::testing
