// GET /admin/stats over a large usage table: AdminService::Stats() on a
// SQLite store holding 1,000,000 usage records spread over the last 24 hours
// (20 backends, 5 models, ~3 % errors, ~2 % 429s), for windows of 1 h, 6 h
// and 24 h. The store keeps per-minute (and 5- and 60-minute) rollups, written
// with the records; setup prints how long appending them took.
//
//   cmake --preset release && cmake --build --preset release --target stats_bench
//   build/release/bench/stats_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//   (STATS_BENCH_ROWS=N to change the row count)
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "switchboard/admin.h"

namespace switchboard {
namespace {

struct Fixture {
  Fixture() {
    dir = std::filesystem::temp_directory_path() /
          ("switchboard-stats-bench-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto opened = OpenSqliteStorage({.path = (dir / "stats.db").string()});
    if (!opened.ok()) std::abort();
    storage = std::move(*opened);
    const char* env = std::getenv("STATS_BENCH_ROWS");
    const int64_t rows = env != nullptr ? std::atoll(env) : 1000000;
    std::mt19937_64 rng(42);
    const SystemTime now = clock.WallNow();
    std::vector<UsageRecord> batch;
    batch.reserve(10000);
    const SteadyTime append_start = clock.Now();
    for (int64_t i = 0; i < rows; ++i) {
      UsageRecord r;
      r.request_id = "req_" + std::to_string(i);
      r.time = now - std::chrono::milliseconds(rng() % (86400 * 1000));
      r.endpoint = "/v1/chat/completions";
      r.model = "model-" + std::to_string(rng() % 5);
      const int backend = static_cast<int>(rng() % 20);
      r.backend_id = "bkd_" + std::to_string(backend);
      r.backend_name = "backend-" + std::to_string(backend);
      r.pool = backend < 10 ? "primary" : "fallback";
      const int roll = static_cast<int>(rng() % 100);
      r.status = roll < 2 ? 429 : roll < 5 ? 502 : 200;
      r.attempts = 1 + static_cast<int>(rng() % 2);
      r.latency_ms = 50 + static_cast<int64_t>(rng() % 3000);
      r.ttfb_ms = r.latency_ms / 4;
      r.prompt_tokens = static_cast<int64_t>(rng() % 2000);
      r.completion_tokens = static_cast<int64_t>(rng() % 800);
      r.trace = R"([{"backend":")" + r.backend_name + R"(","pool":"primary","decision":"tried","status":200}])";
      batch.push_back(std::move(r));
      if (batch.size() == batch.capacity() || i + 1 == rows) {
        if (!storage->AppendUsage(batch).ok()) std::abort();
        batch.clear();
      }
    }
    auto key = MasterKey::Generate();
    cipher = std::move(*KeyCipher::Create(std::move(*key)));
    admin = std::make_unique<AdminService>(*storage, router, *cipher, clock);
    const double append_seconds =
        std::chrono::duration<double>(clock.Now() - append_start).count();
    std::fprintf(stderr,
                 "stats_bench: %lld usage rows in %s, appended (rollups included) in %.1f s\n",
                 static_cast<long long>(rows), (dir / "stats.db").c_str(), append_seconds);
  }
  ~Fixture() {
    admin.reset();
    storage.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  const Clock& clock = Clock::Real();
  std::filesystem::path dir;
  std::unique_ptr<Storage> storage;
  Router router{Clock::Real(), nullptr};
  std::unique_ptr<KeyCipher> cipher;
  std::unique_ptr<AdminService> admin;
};

Fixture* shared_fixture = nullptr;

// At exit, so that the temporary database (hundreds of MiB) goes too.
void DeleteSharedFixture() {
  delete shared_fixture;
  shared_fixture = nullptr;
}

Fixture& Shared() {
  if (shared_fixture == nullptr) {  // built once, for every benchmark
    shared_fixture = new Fixture();
    std::atexit(DeleteSharedFixture);
  }
  return *shared_fixture;
}

void BM_Stats(benchmark::State& state) {
  AdminService& admin = *Shared().admin;
  int64_t requests = 0;
  for (auto _ : state) {
    auto stats = admin.Stats(state.range(0));
    if (!stats.ok()) state.SkipWithError(stats.status().ToString().c_str());
    requests = stats->totals.requests;
  }
  state.counters["rows_in_window"] = static_cast<double>(requests);
}

BENCHMARK(BM_Stats)->Arg(3600)->Arg(6 * 3600)->Arg(86400)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace switchboard

BENCHMARK_MAIN();
