// switchboard/metrics.h
// Counters and histograms of the traffic through a Proxy, rendered in the
// Prometheus text format together with the router's live backend state.
//
//   Metrics metrics;
//   Proxy proxy(..., &metrics);
//   std::string text = metrics.RenderPrometheus(router);   // GET /metrics
#ifndef SWITCHBOARD_METRICS_H_
#define SWITCHBOARD_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "switchboard/clock.h"

namespace switchboard {

class Router;

// Thread-safe.
class Metrics {
 public:
  // Histogram bucket upper bounds, in seconds.
  static constexpr std::array<double, 14> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                      1,     2.5,  5,     10,   30,  60,  120};

  // A finished client request: its final status and how many attempts it took.
  void RecordRequest(std::string_view model, std::string_view backend, int status, int attempts);
  // One upstream attempt. `ttfb` is zero when no response head came.
  void RecordAttempt(std::string_view backend, std::string_view outcome, Duration latency,
                     Duration ttfb);
  // Requests being served now.
  void AddInFlight(int64_t delta) { in_flight_.fetch_add(delta, std::memory_order_relaxed); }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  // A request refused because the gateway was at its in-flight limit.
  void RecordOverloaded() { overloaded_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t overloaded() const { return overloaded_.load(std::memory_order_relaxed); }

  // The whole exposition: these metrics plus, from `router`, each backend's
  // status, cooldown, consecutive 429s, in-flight requests and available
  // rate-limit tokens.
  std::string RenderPrometheus(const Router& router) const;

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> counts{};  // cumulative at render time
    uint64_t count = 0;
    double sum = 0;
    void Observe(double seconds);
  };

  mutable std::mutex mu_;
  // (model, backend, status) -> count
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;  // guarded by mu_
  // attempts per request -> count
  std::map<int, uint64_t> attempts_;  // guarded by mu_
  // (backend, outcome) -> count
  std::map<std::pair<std::string, std::string>, uint64_t> upstream_;  // guarded by mu_
  std::map<std::string, Histogram> latency_;  // guarded by mu_, by backend
  std::map<std::string, Histogram> ttfb_;     // guarded by mu_, by backend
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> overloaded_{0};
};

}  // namespace switchboard

#endif  // SWITCHBOARD_METRICS_H_
