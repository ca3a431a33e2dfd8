#include "switchboard/storage_writer.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/makers.h"
#include "switchboard/storage.h"

namespace switchboard {
namespace {

using ::switchboard::testing::MakeBackend;
using ::switchboard::testing::MakeUsage;
using ::switchboard::testing::TestEpoch;

// Long enough that the background thread never writes on its own timer
// during a test: what gets written is what Flush() or max_batch asked for.
constexpr std::chrono::milliseconds kNever = std::chrono::hours(1);

// How long a test waits for the background thread before calling it hung.
constexpr std::chrono::seconds kPatience{60};

// A memory store whose writes can be made to fail, and which records the size
// of each usage batch. Thread-safe.
class FlakyStorage final : public Storage {
 public:
  FlakyStorage() : inner_(NewMemoryStorage()) {}

  std::atomic<bool> fail_usage{false};
  std::atomic<bool> fail_states{false};

  std::vector<size_t> usage_batches() const {
    std::lock_guard<std::mutex> lock(mu_);
    return usage_batches_;
  }

  // The next UpdateBackendStates call signals `entered` and then waits for
  // `release` before it fails.
  void HoldNextStateWrite(std::promise<void>* entered, std::shared_future<void> release) {
    std::lock_guard<std::mutex> lock(mu_);
    hold_entered_ = entered;
    hold_release_ = std::move(release);
  }

  // Fulfilled by the first usage batch written after the call.
  std::future<void> NextUsageWrite() {
    std::lock_guard<std::mutex> lock(mu_);
    usage_written_ = std::make_unique<std::promise<void>>();
    return usage_written_->get_future();
  }

  Status CreateBackend(const Backend& backend) override { return inner_->CreateBackend(backend); }
  Result<Backend> GetBackend(const std::string& id) override { return inner_->GetBackend(id); }
  Result<Backend> GetBackendByName(const std::string& name) override {
    return inner_->GetBackendByName(name);
  }
  Result<std::vector<Backend>> ListBackends(const BackendFilter& filter) override {
    return inner_->ListBackends(filter);
  }
  Status UpdateBackend(const Backend& backend) override { return inner_->UpdateBackend(backend); }
  Status DeleteBackend(const std::string& id) override { return inner_->DeleteBackend(id); }

  Status UpdateBackendStates(const std::vector<BackendState>& states) override {
    std::promise<void>* entered = nullptr;
    std::shared_future<void> release;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::swap(entered, hold_entered_);
      std::swap(release, hold_release_);
    }
    if (entered != nullptr) {
      entered->set_value();
      release.wait();
      return UnavailableError("store is locked");
    }
    if (fail_states) return UnavailableError("store is locked");
    return inner_->UpdateBackendStates(states);
  }

  Status ReplaceApiKeys(const std::vector<ApiKeyUpdate>& updates) override {
    return inner_->ReplaceApiKeys(updates);
  }
  Status AppendCooldownEvents(const std::vector<CooldownEvent>& events) override {
    return inner_->AppendCooldownEvents(events);
  }
  Result<std::vector<CooldownEvent>> ListCooldownEvents(const CooldownEventQuery& query) override {
    return inner_->ListCooldownEvents(query);
  }

  Status AppendUsage(const std::vector<UsageRecord>& records) override {
    if (fail_usage) return UnavailableError("disk full");
    SWITCHBOARD_RETURN_IF_ERROR(inner_->AppendUsage(records));
    std::unique_ptr<std::promise<void>> written;
    {
      std::lock_guard<std::mutex> lock(mu_);
      usage_batches_.push_back(records.size());
      written = std::move(usage_written_);
    }
    if (written != nullptr) written->set_value();
    return Status::Ok();
  }

  Result<UsagePage> ListUsage(const UsageQuery& query) override { return inner_->ListUsage(query); }
  Result<UsageStats> QueryUsageStats(const StatsQuery& query) override {
    return inner_->QueryUsageStats(query);
  }
  Result<int64_t> DeleteUsageBefore(SystemTime cutoff) override {
    return inner_->DeleteUsageBefore(cutoff);
  }
  Result<Config> GetConfig() override { return inner_->GetConfig(); }
  Status PutConfig(const Config& config) override { return inner_->PutConfig(config); }

 private:
  std::unique_ptr<Storage> inner_;
  mutable std::mutex mu_;
  std::vector<size_t> usage_batches_;                  // guarded by mu_
  std::promise<void>* hold_entered_ = nullptr;         // guarded by mu_
  std::shared_future<void> hold_release_;              // guarded by mu_
  std::unique_ptr<std::promise<void>> usage_written_;  // guarded by mu_
};

UsageRecord Usage(const std::string& request_id) {
  UsageRecord r = MakeUsage(MakeBackend("a"), TestEpoch());
  r.request_id = request_id;
  return r;
}

// The request ids of every stored usage record, oldest first.
std::vector<std::string> StoredRequestIds(Storage& storage) {
  std::vector<std::string> ids;
  UsageQuery query;
  query.limit = 1000;
  for (;;) {
    auto page = storage.ListUsage(query);
    REQUIRE(page.ok());
    for (const UsageRecord& r : page->records) ids.push_back(r.request_id);
    if (!page->next_before) break;
    query.before = page->next_before;
  }
  return std::vector<std::string>(ids.rbegin(), ids.rend());
}

std::vector<std::string> RequestIds(int from, int to) {
  std::vector<std::string> ids;
  for (int i = from; i < to; ++i) ids.push_back("req_" + std::to_string(i));
  return ids;
}

BackendState State(const std::string& backend_id, BackendStatus status, int failures) {
  BackendState s;
  s.backend_id = backend_id;
  s.status = status;
  s.consecutive_failures = failures;
  s.last_error = "failure " + std::to_string(failures);
  return s;
}

CooldownEvent Event(const std::string& reason) {
  CooldownEvent e;
  e.backend_id = "bkd_a";
  e.backend_name = "a";
  e.start = TestEpoch();
  e.until = TestEpoch() + std::chrono::seconds(5);
  e.reason = reason;
  e.upstream_status = 429;
  return e;
}

TEST_CASE("StorageWriter coalesces states per backend and writes the newest on Flush",
          "[storage_writer]") {
  auto storage = NewMemoryStorage();
  REQUIRE(storage->CreateBackend(MakeBackend("a")).ok());
  REQUIRE(storage->CreateBackend(MakeBackend("b")).ok());
  StorageWriter writer(*storage, {.flush_interval = kNever});

  writer.OnBackendState(State("bkd_a", BackendStatus::kHealthy, 1));
  writer.OnBackendState(State("bkd_b", BackendStatus::kCooling, 7));
  writer.OnBackendState(State("bkd_a", BackendStatus::kError, 3));
  REQUIRE(writer.Flush().ok());

  auto a = storage->GetBackend("bkd_a");
  auto b = storage->GetBackend("bkd_b");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->status == BackendStatus::kError);
  CHECK(a->consecutive_failures == 3);
  CHECK(a->last_error == "failure 3");
  CHECK(b->status == BackendStatus::kCooling);
  CHECK(b->consecutive_failures == 7);
  CHECK(writer.stats().written_states == 2);
}

TEST_CASE("StorageWriter writes events and usage in the order they came", "[storage_writer]") {
  auto storage = NewMemoryStorage();
  StorageWriter writer(*storage, {.flush_interval = kNever});

  for (const std::string& id : RequestIds(0, 20)) writer.AppendUsage(Usage(id));
  writer.OnCooldownEvent(Event("rate_limited"));
  writer.OnCooldownEvent(Event("errors"));
  writer.OnCooldownEvent(Event("auth"));
  REQUIRE(writer.Flush().ok());

  CHECK(StoredRequestIds(*storage) == RequestIds(0, 20));
  auto events = storage->ListCooldownEvents({});
  REQUIRE(events.ok());
  REQUIRE(events->size() == 3);
  CHECK((*events)[0].reason == "auth");  // newest first
  CHECK((*events)[1].reason == "errors");
  CHECK((*events)[2].reason == "rate_limited");
  const StorageWriterStats stats = writer.stats();
  CHECK(stats.written_usage == 20);
  CHECK(stats.written_events == 3);
  CHECK(stats.failed_batches == 0);
  CHECK(stats.last_error.ok());
}

TEST_CASE("StorageWriter writes usage in batches of at most max_batch", "[storage_writer]") {
  FlakyStorage storage;
  StorageWriter writer(storage, {.max_batch = 4, .flush_interval = kNever});
  for (const std::string& id : RequestIds(0, 10)) writer.AppendUsage(Usage(id));
  REQUIRE(writer.Flush().ok());

  size_t total = 0;
  for (size_t n : storage.usage_batches()) {
    CHECK(n <= 4);
    total += n;
  }
  CHECK(total == 10);
  CHECK(StoredRequestIds(storage) == RequestIds(0, 10));
}

TEST_CASE("StorageWriter writes on its own once max_batch items are queued", "[storage_writer]") {
  FlakyStorage storage;
  StorageWriter writer(storage, {.max_batch = 3, .flush_interval = kNever});
  std::future<void> written = storage.NextUsageWrite();
  for (const std::string& id : RequestIds(0, 3)) writer.AppendUsage(Usage(id));
  CHECK(written.wait_for(kPatience) == std::future_status::ready);
}

TEST_CASE("StorageWriter writes on its own after flush_interval", "[storage_writer]") {
  FlakyStorage storage;
  StorageWriter writer(storage, {.flush_interval = std::chrono::milliseconds(1)});
  std::future<void> written = storage.NextUsageWrite();
  writer.AppendUsage(Usage("req_0"));
  CHECK(written.wait_for(kPatience) == std::future_status::ready);
}

TEST_CASE("StorageWriter's destructor writes whatever is still queued", "[storage_writer]") {
  auto storage = NewMemoryStorage();
  REQUIRE(storage->CreateBackend(MakeBackend("a")).ok());
  {
    StorageWriter writer(*storage, {.flush_interval = kNever});
    for (const std::string& id : RequestIds(0, 5)) writer.AppendUsage(Usage(id));
    writer.OnBackendState(State("bkd_a", BackendStatus::kCooling, 2));
    writer.OnCooldownEvent(Event("quota"));
  }
  CHECK(StoredRequestIds(*storage) == RequestIds(0, 5));
  auto a = storage->GetBackend("bkd_a");
  REQUIRE(a.ok());
  CHECK(a->status == BackendStatus::kCooling);
  auto events = storage->ListCooldownEvents({});
  REQUIRE(events.ok());
  CHECK(events->size() == 1);
}

TEST_CASE("Flush returns the store's error and loses nothing; a later Flush writes it all",
          "[storage_writer]") {
  FlakyStorage storage;
  StorageWriter writer(storage, {.max_batch = 2, .flush_interval = kNever});
  storage.fail_usage = true;
  for (const std::string& id : RequestIds(0, 3)) writer.AppendUsage(Usage(id));

  const Status failed = writer.Flush();
  CHECK(failed.code() == StatusCode::kUnavailable);
  CHECK(failed.message() == "disk full");
  CHECK(StoredRequestIds(storage).empty());
  StorageWriterStats stats = writer.stats();
  CHECK(stats.failed_batches >= 1);
  CHECK(stats.last_error == failed);
  CHECK(stats.written_usage == 0);

  // Queued behind the failed ones; still failing.
  for (const std::string& id : RequestIds(3, 5)) writer.AppendUsage(Usage(id));
  CHECK_FALSE(writer.Flush().ok());

  storage.fail_usage = false;
  REQUIRE(writer.Flush().ok());
  CHECK(StoredRequestIds(storage) == RequestIds(0, 5));
  stats = writer.stats();
  CHECK(stats.written_usage == 5);
  CHECK(stats.dropped_usage == 0);
  CHECK(stats.last_error.ok());
}

TEST_CASE("A state queued during a failed write wins over the one that failed",
          "[storage_writer]") {
  FlakyStorage storage;
  REQUIRE(storage.CreateBackend(MakeBackend("a")).ok());
  StorageWriter writer(storage, {.flush_interval = kNever});
  std::promise<void> entered;
  std::promise<void> release;
  storage.HoldNextStateWrite(&entered, release.get_future().share());

  writer.OnBackendState(State("bkd_a", BackendStatus::kCooling, 1));
  std::future<Status> first = std::async(std::launch::async, [&] { return writer.Flush(); });
  REQUIRE(entered.get_future().wait_for(kPatience) == std::future_status::ready);
  writer.OnBackendState(State("bkd_a", BackendStatus::kError, 2));
  release.set_value();
  CHECK_FALSE(first.get().ok());

  REQUIRE(writer.Flush().ok());
  auto a = storage.GetBackend("bkd_a");
  REQUIRE(a.ok());
  CHECK(a->status == BackendStatus::kError);
  CHECK(a->consecutive_failures == 2);
}

TEST_CASE("StorageWriter drops the oldest usage beyond max_pending_usage and counts it",
          "[storage_writer]") {
  auto storage = NewMemoryStorage();
  StorageWriter writer(*storage, {.flush_interval = kNever, .max_pending_usage = 10});
  for (const std::string& id : RequestIds(0, 15)) writer.AppendUsage(Usage(id));
  CHECK(writer.stats().dropped_usage == 5);

  REQUIRE(writer.Flush().ok());
  CHECK(StoredRequestIds(*storage) == RequestIds(5, 15));
}

TEST_CASE("While the store is down usage beyond max_pending_usage is dropped oldest first",
          "[storage_writer]") {
  FlakyStorage storage;
  StorageWriter writer(storage, {.flush_interval = kNever, .max_pending_usage = 4});
  storage.fail_usage = true;
  for (const std::string& id : RequestIds(0, 3)) writer.AppendUsage(Usage(id));
  REQUIRE_FALSE(writer.Flush().ok());
  for (const std::string& id : RequestIds(3, 6)) writer.AppendUsage(Usage(id));

  storage.fail_usage = false;
  REQUIRE(writer.Flush().ok());
  CHECK(StoredRequestIds(storage) == RequestIds(2, 6));
  CHECK(writer.stats().dropped_usage == 2);
}

TEST_CASE("StorageWriter's destructor returns even when the store keeps failing",
          "[storage_writer]") {
  FlakyStorage storage;
  {
    StorageWriter writer(storage, {.flush_interval = kNever});
    storage.fail_usage = true;
    writer.AppendUsage(Usage("req_0"));
  }
  CHECK(StoredRequestIds(storage).empty());
}

TEST_CASE("Flush with nothing queued returns OK", "[storage_writer]") {
  auto storage = NewMemoryStorage();
  StorageWriter writer(*storage);
  CHECK(writer.Flush().ok());
  CHECK(writer.Flush().ok());
}

TEST_CASE("Many threads enqueueing at once lose nothing", "[storage_writer]") {
  auto storage = NewMemoryStorage();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 500;
  for (int t = 0; t < kThreads; ++t) {
    REQUIRE(storage->CreateBackend(MakeBackend("b" + std::to_string(t))).ok());
  }
  StorageWriter writer(*storage, {.max_batch = 64, .flush_interval = std::chrono::milliseconds(1)});

  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      const std::string backend_id = "bkd_b" + std::to_string(t);
      for (int i = 0; i < kPerThread; ++i) {
        writer.AppendUsage(Usage("req_" + std::to_string(t) + "_" + std::to_string(i)));
        writer.OnBackendState(State(backend_id, BackendStatus::kCooling, i + 1));
        if (i % 50 == 0) writer.OnCooldownEvent(Event("rate_limited"));
        if (i % 100 == 0) (void)writer.Flush();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  REQUIRE(writer.Flush().ok());

  const StorageWriterStats stats = writer.stats();
  CHECK(stats.written_usage == kThreads * kPerThread);
  CHECK(stats.dropped_usage == 0);
  CHECK(StoredRequestIds(*storage).size() == static_cast<size_t>(kThreads * kPerThread));
  auto events = storage->ListCooldownEvents({.limit = 1000});
  REQUIRE(events.ok());
  CHECK(events->size() == static_cast<size_t>(kThreads * kPerThread / 50));
  for (int t = 0; t < kThreads; ++t) {
    auto b = storage->GetBackend("bkd_b" + std::to_string(t));
    REQUIRE(b.ok());
    CHECK(b->consecutive_failures == kPerThread);  // each thread's newest state
  }
}

}  // namespace
}  // namespace switchboard
