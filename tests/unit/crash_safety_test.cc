// Crash safety of SqliteStorage: a writer process killed with SIGKILL at a
// random moment leaves a database that passes integrity_check and holds every
// write the writer saw reported as committed (and no half of a batch).
#include <SQLiteCpp/SQLiteCpp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/makers.h"
#include "switchboard/storage.h"

namespace switchboard {
namespace {

using testing::MakeBackend;
using testing::MakeUsage;
using testing::TestEpoch;

constexpr int kRounds = 20;
constexpr int kUsageBatchSize = 5;

// A fresh directory under /tmp, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/switchboard-crash-test-XXXXXX";
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

// Writes all of `line` to `fd` or ends the process: a reporter that cannot
// report must not keep writing.
void Report(int fd, const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = write(fd, line.data() + done, line.size() - done);
    if (n <= 0) _exit(3);
    done += static_cast<size_t>(n);
  }
}

// The child: writes backends, label updates and usage batches as fast as it
// can, reporting each one on `fd` only after the store said OK. Never returns.
[[noreturn]] void RunWriter(const std::string& path, int round, int fd) {
  auto storage = OpenSqliteStorage({.path = path});
  if (!storage.ok()) _exit(2);
  std::vector<Backend> mine;
  for (int i = 0; i < 100000; ++i) {
    const int op = i % 3;
    if (op == 0 || mine.empty()) {
      Backend b = MakeBackend("r" + std::to_string(round) + "-b" + std::to_string(i));
      b.label = "0";
      if (!(*storage)->CreateBackend(b).ok()) _exit(4);
      Report(fd, "created " + b.name + "\n");
      mine.push_back(b);
    } else if (op == 1) {
      Backend& b = mine[static_cast<size_t>(i) % mine.size()];
      const std::string next = std::to_string(std::stoi(b.label) + 1);
      Backend updated = b;
      updated.label = next;
      if (!(*storage)->UpdateBackend(updated).ok()) _exit(5);
      b = updated;
      Report(fd, "updated " + b.name + " " + next + "\n");
    } else {
      const std::string batch = "r" + std::to_string(round) + "-u" + std::to_string(i);
      std::vector<UsageRecord> records;
      for (int k = 0; k < kUsageBatchSize; ++k) {
        UsageRecord r = MakeUsage(mine.back(), TestEpoch());
        r.request_id = batch;
        records.push_back(r);
      }
      if (!(*storage)->AppendUsage(records).ok()) _exit(6);
      Report(fd, "usage " + batch + "\n");
    }
  }
  _exit(0);
}

// When to kill the writer: `delay` after the fork (early: may land in open,
// WAL setup or a migration), or `delay` after its first reported commit.
struct KillPlan {
  bool early = false;
  std::chrono::milliseconds delay{0};
};

// Everything the child said before it died, read until EOF. Reads while the
// child runs (so a full pipe never stalls it) and kills it as `plan` says.
std::string ReadReportsAndKill(pid_t pid, int fd, KillPlan plan) {
  using Clock = std::chrono::steady_clock;
  const auto forked = Clock::now();
  const auto hard_limit = forked + std::chrono::seconds(5);  // a stuck child must not hang us
  auto kill_at = plan.early ? forked + plan.delay : hard_limit;
  std::string out;
  char buffer[4096];
  bool killed = false;
  while (true) {
    int timeout_ms = -1;
    if (!killed) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::min(kill_at, hard_limit) - Clock::now());
      if (left.count() <= 0) {
        REQUIRE(kill(pid, SIGKILL) == 0);
        killed = true;
      } else {
        timeout_ms = static_cast<int>(left.count());
      }
    }
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int ready = poll(&p, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    REQUIRE(ready >= 0);
    if (ready == 0) continue;  // time to kill
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n >= 0);
    if (n == 0) break;                                                    // EOF: the child is gone
    if (!plan.early && out.empty()) kill_at = Clock::now() + plan.delay;  // first commit seen
    out.append(buffer, static_cast<size_t>(n));
  }
  if (!killed) kill(pid, SIGKILL);  // ended on its own (it failed); make sure it is gone
  return out;
}

struct Expected {
  std::set<std::string> backends;
  std::map<std::string, int> min_label;  // backend name -> last reported label
  std::set<std::string> usage_batches;
};

void ParseReports(const std::string& reports, Expected* expected) {
  std::istringstream in(reports);
  std::string line;
  while (std::getline(in, line)) {
    // A line without its newline was cut short. Report() writes whole lines in
    // one atomic pipe write, so this is belt and braces.
    if (in.eof()) break;
    std::istringstream words(line);
    std::string kind, name;
    words >> kind >> name;
    if (kind == "created") {
      expected->backends.insert(name);
      expected->min_label[name] = 0;
    } else if (kind == "updated") {
      int label = 0;
      words >> label;
      expected->min_label[name] = label;
    } else if (kind == "usage") {
      expected->usage_batches.insert(name);
    } else {
      FAIL("unexpected report line: " << line);
    }
  }
}

TEST_CASE("SqliteStorage survives a writer killed at random points with its commits intact",
          "[sqlite_storage][crash]") {
  TempDir dir;
  const std::string path = dir.File("crash.db");
  // Real randomness: the kill points should differ from run to run.
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> early_delay_ms(0, 15);
  std::uniform_int_distribution<int> delay_ms(0, 30);
  Expected expected;
  int rounds_with_commits = 0;
  const auto started = std::chrono::steady_clock::now();

  for (int round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    // Every fourth round (the first included, which creates and migrates the
    // file) dies early; the others die while committing.
    KillPlan plan;
    plan.early = round % 4 == 0;
    plan.delay = std::chrono::milliseconds(plan.early ? early_delay_ms(rng) : delay_ms(rng));
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      RunWriter(path, round, fds[1]);
    }
    close(fds[1]);
    const std::string reports = ReadReportsAndKill(pid, fds[0], plan);
    close(fds[0]);
    int wstatus = 0;
    REQUIRE(waitpid(pid, &wstatus, 0) == pid);
    INFO("child exit: " << (WIFSIGNALED(wstatus) ? "signal " : "code ")
                        << (WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : WEXITSTATUS(wstatus)));
    REQUIRE(WIFSIGNALED(wstatus));  // killed by us, not failed on its own
    ParseReports(reports, &expected);
    if (!reports.empty()) ++rounds_with_commits;

    if (!std::filesystem::exists(path)) continue;  // killed before it even created the file
    {
      SQLite::Database raw(path, SQLite::OPEN_READWRITE);  // recovers the hot WAL
      CHECK(raw.execAndGet("PRAGMA integrity_check").getString() == "ok");
    }

    auto storage = OpenSqliteStorage({.path = path});
    INFO(storage.status().ToString());
    REQUIRE(storage.ok());
    auto backends = (*storage)->ListBackends({});
    REQUIRE(backends.ok());
    std::map<std::string, int> stored_labels;
    for (const Backend& b : *backends) stored_labels[b.name] = std::stoi(b.label);
    for (const std::string& name : expected.backends) {
      INFO("backend " << name);
      REQUIRE(stored_labels.count(name) == 1);
      // The reported label or the one after it (committed, killed before reporting).
      const int min_label = expected.min_label[name];
      CHECK(stored_labels[name] >= min_label);
      CHECK(stored_labels[name] <= min_label + 1);
    }

    std::map<std::string, int> batch_sizes;
    UsageQuery query{.limit = 1000};
    while (true) {
      auto page = (*storage)->ListUsage(query);
      REQUIRE(page.ok());
      for (const UsageRecord& r : page->records) ++batch_sizes[r.request_id];
      if (!page->next_before) break;
      query.before = page->next_before;
    }
    for (const auto& [batch, size] : batch_sizes) {
      INFO("batch " << batch);
      CHECK(size == kUsageBatchSize);  // all of a batch or none of it
    }
    for (const std::string& batch : expected.usage_batches) {
      INFO("batch " << batch);
      CHECK(batch_sizes.count(batch) == 1);
    }
  }

  const auto elapsed = std::chrono::steady_clock::now() - started;
  INFO("took " << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms");
  // The test proves something only if the writer got some commits in before dying.
  CHECK(rounds_with_commits >= kRounds * 3 / 4);
  CHECK(expected.usage_batches.size() > 0);
  CHECK(elapsed < std::chrono::seconds(20));
}

}  // namespace
}  // namespace switchboard
