// Crash and disk: what the store keeps when the server is killed, when the
// disk is full and when another process holds the database locked, and what
// SIGTERM leaves behind. The real binary, its SQLite file inspected directly.
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <random>
#include <thread>

#include "harness.h"

namespace switchboard::testing {
namespace {

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string out;
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned v = rd() & 0xff;
    out += kDigits[v >> 4];
    out += kDigits[v & 0xf];
  }
  return out;
}

// PRAGMA integrity_check of a database file ("ok" when sound), opened the way
// a restarted server would (recovering the WAL).
std::string IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    const std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return "cannot open: " + why;
  }
  std::string result;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr) == SQLITE_OK) {
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      if (!result.empty()) result += "; ";
      result += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
  } else {
    result = std::string("cannot prepare: ") + sqlite3_errmsg(db);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return result;
}

// SELECT COUNT(*) of a table, or -1.
long long CountRows(const std::string& path, const std::string& table) {
  sqlite3* db = nullptr;
  long long n = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    const std::string sql = "SELECT COUNT(*) FROM " + table;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      n = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return n;
}

httplib::Headers AdminHeaders(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

std::string NewBackendBody(const std::string& name, const std::string& label) {
  return R"({"name":)" + JsonString(name) + R"(,"label":)" + JsonString(label) +
         R"(,"api_base_url":"http://127.0.0.1:9/v1","api_key":"sk-durability-test-key",)"
         R"("model_mappings":{"gpt-4o":{"upstream_model":"gpt-4o"}}})";
}

// name -> label of every stored backend, read through the admin API.
std::map<std::string, std::string> StoredLabels(const ServerProcess& server,
                                                const std::string& token) {
  httplib::Client client("127.0.0.1", server.port());
  client.set_read_timeout(60, 0);
  auto res = client.Get("/admin/backends", AdminHeaders(token));
  std::map<std::string, std::string> labels;
  if (!res || res->status != 200) return labels;
  rapidjson::Document doc;
  doc.Parse(res->body.c_str(), res->body.size());
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("data")) return labels;
  for (const auto& b : doc["data"].GetArray()) {
    labels[b["name"].GetString()] = b["label"].IsString() ? b["label"].GetString() : "";
  }
  return labels;
}

// What one client thread of the burst knows about its writes.
struct WriterLog {
  struct Owned {
    std::string name, id;
    std::string acked_label;     // the last label a 2xx confirmed
    std::string inflight_label;  // a label sent without an answer (may or may not be stored)
  };
  std::vector<Owned> owned;         // created, acknowledged
  std::vector<std::string> unacked_creates;  // sent, no answer: may or may not exist
  int acknowledged = 0;
};

// Creates and relabels its own backends until the server dies, `stop` is set
// or `budget` writes were sent.
void BurstWriter(int port, const std::string& token, const std::string& prefix, int budget,
                 const std::atomic<bool>& stop, WriterLog& log) {
  httplib::Client client("127.0.0.1", port);
  client.set_keep_alive(true);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(20, 0);
  std::mt19937 rng(std::random_device{}());
  for (int n = 0; n < budget && !stop.load(); ++n) {
    const std::string label = prefix + "-label-" + std::to_string(n);
    if (log.owned.empty() || rng() % 2 == 0) {
      const std::string name = prefix + "-" + std::to_string(n);
      auto res = client.Post("/admin/backends", AdminHeaders(token), NewBackendBody(name, label),
                             "application/json");
      if (!res) {
        log.unacked_creates.push_back(name);
        return;  // the server is gone
      }
      if (res->status != 201) continue;
      log.owned.push_back({name, JsonStringField(res->body, "id"), label, ""});
      ++log.acknowledged;
    } else {
      auto& target = log.owned[rng() % log.owned.size()];
      target.inflight_label = label;
      auto res = client.Patch("/admin/backends/" + target.id, AdminHeaders(token),
                              R"({"label":)" + JsonString(label) + "}", "application/json");
      if (!res) return;
      if (res->status == 200) {
        target.acked_label = label;
        target.inflight_label.clear();
        ++log.acknowledged;
      } else {
        target.inflight_label.clear();
      }
    }
  }
}

}  // namespace

TEST_CASE("Every acknowledged admin write survives kill -9 during a burst of concurrent writes "
          "(20 rounds at random moments, half of them 1,000 writers at once); PRAGMA "
          "integrity_check stays ok",
          "[durability]") {
  constexpr int kRounds = 20;
  constexpr int kWritesPerRound = 1000;  // at most, over all writers
  TempDir dir;
  REQUIRE(!dir.path().empty());
  const std::string token = "sbadm_" + RandomHex(24);
  const std::string master_key = NewMasterKeyBase64();
  std::mt19937 rng(std::random_device{}());

  // Everything acknowledged so far: name -> acceptable labels (the last
  // acknowledged one, or one sent when the server died).
  std::map<std::string, std::set<std::string>> expected;
  std::set<std::string> maybe_created;
  int total_acknowledged = 0;

  for (int round = 0; round <= kRounds; ++round) {
    ServerProcess server({.env = {"SWITCHBOARD_ADMIN_TOKEN=" + token},
                          .dir = dir.path(),
                          .master_key = master_key});
    INFO("round " << round << ": " << server.error());
    REQUIRE(server.ok());

    // What the previous rounds acknowledged is all there.
    const auto stored = StoredLabels(server, token);
    for (const auto& [name, labels] : expected) {
      INFO("backend " << name);
      const auto it = stored.find(name);
      REQUIRE(it != stored.end());
      CHECK(labels.count(it->second) == 1);
    }
    for (const auto& [name, label] : stored) {
      if (expected.count(name) == 0) {
        INFO("backend " << name << " was never sent");
        CHECK(maybe_created.count(name) == 1);
      }
    }
    // What is stored now is the truth the next round builds on.
    for (auto& [name, labels] : expected) labels = {stored.at(name)};
    if (round == kRounds) {
      CHECK(server.Stop() == 0);
      break;
    }

    // Even rounds: 16 writers on keep-alive connections, ~62 writes each.
    // Odd rounds: 1,000 writers on their own connections, one write each,
    // all at once.
    const int writer_count = round % 2 == 0 ? 16 : kWritesPerRound;
    std::atomic<bool> stop{false};
    std::vector<WriterLog> logs(writer_count);
    std::vector<std::thread> writers;
    for (int w = 0; w < writer_count; ++w) {
      writers.emplace_back(BurstWriter, server.port(), std::cref(token),
                           "r" + std::to_string(round) + "w" + std::to_string(w),
                           kWritesPerRound / writer_count, std::cref(stop), std::ref(logs[w]));
    }
    // A random moment inside the burst.
    std::this_thread::sleep_for(milliseconds(50 + rng() % 450));
    REQUIRE(server.Signal(SIGKILL));
    REQUIRE(server.WaitForExit(seconds(30)).has_value());
    stop = true;
    for (auto& t : writers) t.join();

    for (const WriterLog& log : logs) {
      total_acknowledged += log.acknowledged;
      for (const auto& o : log.owned) {
        std::set<std::string> ok = {o.acked_label};
        if (!o.inflight_label.empty()) ok.insert(o.inflight_label);
        expected[o.name] = ok;
      }
      for (const auto& name : log.unacked_creates) maybe_created.insert(name);
    }
    INFO("round " << round);
    CHECK(IntegrityCheck(dir.path() + "/sb.db") == "ok");
  }
  // The bursts did write something (a kill before any answer proves nothing).
  CHECK(total_acknowledged >= kRounds);
  CHECK(IntegrityCheck(dir.path() + "/sb.db") == "ok");
}

TEST_CASE("A database locked by another process for 10 s: admin writes get a JSON 503, "
          "proxying keeps working, and both recover without losing usage",
          "[durability]") {
  TempDir dir;
  REQUIRE(!dir.path().empty());
  const std::string db = dir.path() + "/sb.db";
  // The locker is forked before any thread of this test exists; it waits for
  // a byte on `go`, takes an exclusive lock, reports on `held`, keeps it for
  // 10 s, then commits and exits.
  int go[2], held[2];
  REQUIRE(::pipe(go) == 0);
  REQUIRE(::pipe(held) == 0);
  const pid_t locker = ::fork();
  REQUIRE(locker >= 0);
  if (locker == 0) {
    ::close(go[1]);
    ::close(held[0]);
    char c;
    if (::read(go[0], &c, 1) != 1) ::_exit(2);
    sqlite3* conn = nullptr;
    if (sqlite3_open_v2(db.c_str(), &conn, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) ::_exit(3);
    sqlite3_busy_timeout(conn, 10000);
    if (sqlite3_exec(conn, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) != SQLITE_OK) ::_exit(4);
    if (::write(held[1], "L", 1) != 1) ::_exit(5);
    ::sleep(10);
    sqlite3_exec(conn, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(conn);
    ::_exit(0);
  }
  ::close(go[0]);
  ::close(held[1]);

  MockUpstream mock;
  mock.SetDefault("/v1/chat/completions", ChatCompletionReply("gpt-4o-upstream", "ok"));
  const std::string token = "sbadm_" + RandomHex(24);
  TestServer server(ServerProcessOptions{
      .backends = {{.name = "primary", .api_base_url = mock.base_url()}},
      .env = {"SWITCHBOARD_ADMIN_TOKEN=" + token},
      .dir = dir.path()});
  auto client = server.Client();
  REQUIRE(::write(go[1], "G", 1) == 1);
  char c = 0;
  REQUIRE(::read(held[0], &c, 1) == 1);
  const auto locked_at = SteadyClock::now();

  // Proxying answers at once from the in-memory snapshot.
  for (int i = 0; i < 5; ++i) {
    const auto start = SteadyClock::now();
    auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(MillisBetween(start, SteadyClock::now()) < 1000);
  }
  // An admin write waits out the busy timeout, then says the store is unavailable.
  auto refused = client.Post("/admin/backends", AdminHeaders(token),
                             NewBackendBody("during-lock", "x"), "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 503);
  CHECK(OpenAIErrorProblem(refused->body) == "");
  CHECK(MillisBetween(locked_at, SteadyClock::now()) < 9000);  // refused while still locked
  CHECK(refused->body.find("sk-durability") == std::string::npos);

  int status = 0;
  REQUIRE(::waitpid(locker, &status, 0) == locker);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  // Recovered by itself: the write goes through, nothing from the lock remains.
  auto created = client.Post("/admin/backends", AdminHeaders(token),
                             NewBackendBody("after-lock", "y"), "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  auto listed = client.Get("/admin/backends", AdminHeaders(token));
  REQUIRE(listed);
  CHECK(listed->body.find("\"during-lock\"") == std::string::npos);
  // The usage of the requests served during the lock was kept and written.
  bool all_usage = false;
  for (int i = 0; i < 200 && !all_usage; ++i) {
    auto usage = client.Get("/admin/usage?limit=100", AdminHeaders(token));
    REQUIRE(usage);
    rapidjson::Document doc;
    doc.Parse(usage->body.c_str(), usage->body.size());
    all_usage = !doc.HasParseError() && doc.IsObject() && doc.HasMember("data") &&
                doc["data"].Size() >= 5;
    if (!all_usage) std::this_thread::sleep_for(milliseconds(50));
  }
  CHECK(all_usage);
  ::close(go[1]);
  ::close(held[0]);
}

TEST_CASE("A full disk: admin writes get a JSON 503, proxying keeps working, and writes recover "
          "once space is freed",
          "[durability]") {
  // A 4 MiB tmpfs holds the database; a filler file takes the rest.
  TempDir base;
  REQUIRE(!base.path().empty());
  const std::string mount_point = base.path() + "/disk";
  REQUIRE(::mkdir(mount_point.c_str(), 0700) == 0);
  INFO("mounting a tmpfs needs root (CI runs as root)");
  REQUIRE(::mount("tmpfs", mount_point.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=4m") == 0);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};

  MockUpstream mock;
  mock.SetDefault("/v1/chat/completions", ChatCompletionReply("gpt-4o-upstream", "ok"));
  const std::string token = "sbadm_" + RandomHex(24);
  std::optional<TestServer> server;
  server.emplace(ServerProcessOptions{
      .backends = {{.name = "primary", .api_base_url = mock.base_url()}},
      .env = {"SWITCHBOARD_ADMIN_TOKEN=" + token},
      .dir = mount_point});
  auto client = server->Client();
  REQUIRE(client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json")->status ==
          200);

  // Fill the disk.
  const std::string filler = mount_point + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string block(64 * 1024, 'x');
    while (out.write(block.data(), block.size())) {
    }
  }
  // A few admin writes: each refused with a JSON 503 (SQLite cannot grow the
  // WAL), none stored.
  int refused = 0;
  for (int i = 0; i < 40; ++i) {
    auto res = client.Post("/admin/backends", AdminHeaders(token),
                           NewBackendBody("full-" + std::to_string(i), std::string(200, 'l')),
                           "application/json");
    REQUIRE(res);
    if (res->status == 503) {
      CHECK(OpenAIErrorProblem(res->body) == "");
      ++refused;
    } else {
      CHECK(res->status == 201);  // the last free pages may still take a few
    }
  }
  CHECK(refused > 0);
  // Proxying goes on.
  for (int i = 0; i < 5; ++i) {
    auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
  }

  // Space again: writes go through without a restart.
  REQUIRE(std::filesystem::remove(filler));
  auto created = client.Post("/admin/backends", AdminHeaders(token),
                             NewBackendBody("after-full", "ok"), "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  auto fetched = client.Get("/admin/backends/" + JsonStringField(created->body, "id"),
                            AdminHeaders(token));
  REQUIRE(fetched);
  CHECK(fetched->status == 200);
  server.reset();  // SIGTERM, exit 0
  CHECK(IntegrityCheck(mount_point + "/sb.db") == "ok");
}

TEST_CASE("SIGTERM flushes every usage record and checkpoints the WAL before exit 0",
          "[durability]") {
  MockUpstream mock;
  mock.SetDefault("/v1/chat/completions", ChatCompletionReply("gpt-4o-upstream", "ok"));
  TempDir dir;
  REQUIRE(!dir.path().empty());
  constexpr int kRequests = 50;
  {
    TestServer server(ServerProcessOptions{
        .backends = {{.name = "primary", .api_base_url = mock.base_url()}}, .dir = dir.path()});
    auto client = server.Client();
    for (int i = 0; i < kRequests; ++i) {
      auto res = client.Post("/v1/chat/completions", ChatBody("gpt-4o"), "application/json");
      REQUIRE(res);
      REQUIRE(res->status == 200);
    }
  }  // SIGTERM right after the last answer; exit 0 checked by TestServer
  CHECK(CountRows(dir.path() + "/sb.db", "usage") == kRequests);
  std::error_code ec;
  const auto wal = std::filesystem::path(dir.path()) / "sb.db-wal";
  const bool wal_empty = !std::filesystem::exists(wal, ec) || std::filesystem::file_size(wal, ec) == 0;
  CHECK(wal_empty);
  CHECK(IntegrityCheck(dir.path() + "/sb.db") == "ok");
}

}  // namespace switchboard::testing
