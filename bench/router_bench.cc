// Micro-benchmarks of the routing core: Route() alone, and a whole request
// (Route + Next + Report), over 10, 100 and 1,000 backends in two pools, on
// 1 and 2 threads. Also counts heap allocations per operation.
//
//   cmake --preset release && cmake --build --preset release --target router_bench
//   build/release/bench/router_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "switchboard/router.h"

namespace {

std::atomic<int64_t> g_allocations{0};

}  // namespace

// Counts every allocation in the process (the benchmark's own are outside
// the timed loops).
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace switchboard {
namespace {

// One router shared by the threads of a benchmark run.
struct Setup {
  explicit Setup(int backends) {
    std::vector<Backend> list;
    for (int i = 0; i < backends; ++i) {
      Backend b;
      b.id = "bkd_" + std::to_string(i);
      b.name = "backend-" + std::to_string(i);
      b.api_base_url = "http://127.0.0.1:9/v1";
      b.pool = i % 2 == 0 ? "primary" : "fallback";
      b.model_mappings["gpt-4o"] = ModelMapping{"gpt-4o-upstream", 1};
      list.push_back(std::move(b));
    }
    if (!router.Update(std::move(list), Config{}).ok()) std::abort();
  }
  Router router{Clock::Real(), nullptr};
};

Setup* g_setup = nullptr;

void SetUp(const benchmark::State& state) { g_setup = new Setup(static_cast<int>(state.range(0))); }
void TearDown(const benchmark::State&) {
  delete g_setup;
  g_setup = nullptr;
}

void BM_Route(benchmark::State& state) {
  const Router& router = g_setup->router;
  const int64_t before = g_allocations.load();
  for (auto _ : state) {
    RoutePlan plan = router.Route("gpt-4o");
    benchmark::DoNotOptimize(plan.ok());
  }
  state.counters["allocs/op"] = benchmark::Counter(
      static_cast<double>(g_allocations.load() - before) / static_cast<double>(state.iterations()) /
          state.threads(),
      benchmark::Counter::kAvgThreads);
}

void BM_RouteNextReport(benchmark::State& state) {
  const Router& router = g_setup->router;
  AttemptOutcome ok;
  ok.http_status = 200;
  ok.latency = std::chrono::milliseconds(120);
  ok.prompt_tokens = 10;
  ok.completion_tokens = 20;
  const int64_t before = g_allocations.load();
  for (auto _ : state) {
    RoutePlan plan = router.Route("gpt-4o");
    const PlannedAttempt* attempt = plan.Next();
    benchmark::DoNotOptimize(attempt);
    plan.Report(ok);
  }
  state.counters["allocs/op"] = benchmark::Counter(
      static_cast<double>(g_allocations.load() - before) / static_cast<double>(state.iterations()) /
          state.threads(),
      benchmark::Counter::kAvgThreads);
}

BENCHMARK(BM_Route)->Arg(10)->Arg(100)->Arg(1000)->Threads(1)->Threads(2)->Setup(SetUp)->Teardown(TearDown)->UseRealTime();
BENCHMARK(BM_RouteNextReport)->Arg(10)->Arg(100)->Arg(1000)->Threads(1)->Threads(2)->Setup(SetUp)->Teardown(TearDown)->UseRealTime();

}  // namespace
}  // namespace switchboard

BENCHMARK_MAIN();
