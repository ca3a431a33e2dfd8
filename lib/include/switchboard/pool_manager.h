// switchboard/pool_manager.h
// Orders the backends that may serve a request: pools by priority
// (config.pool_order), then inside each pool by the configured strategy —
// round-robin, weighted, least-busy or lowest-latency (an EWMA of observed
// latency, with occasional exploration so a recovered backend is measured
// again).
//
//   PoolManager pools(clock);
//   auto latency = pools.Attach("bkd_1");
//   pools.ObserveLatency(*latency, std::chrono::milliseconds(120));
//   pools.OrderPool(Strategy::kLowestLatency, candidates, ticket);
#ifndef SWITCHBOARD_POOL_MANAGER_H_
#define SWITCHBOARD_POOL_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>

#include "switchboard/clock.h"
#include "switchboard/config.h"

namespace switchboard {

// One backend as the ordering sees it. The caller fills it in.
struct PoolCandidate {
  uint32_t index = 0;        // the caller's handle for the backend
  int weight = 1;            // its mapping's weight (weighted strategy)
  int64_t in_flight = 0;     // requests in flight (least-busy)
  std::optional<double> latency_ms;  // EWMA, nullopt if never measured (lowest-latency)
};

// Thread-safe.
class PoolManager {
 public:
  class LatencySlot;  // One backend's latency estimate. Opaque; thread-safe.

  // Every `kExploreEvery`-th request of a lowest-latency pool tries a backend
  // other than the fastest first, so a slow (or recovered) backend keeps being
  // measured.
  static constexpr uint64_t kExploreEvery = 16;
  // Weight of the newest observation in the EWMA.
  static constexpr double kEwmaAlpha = 0.2;

  // `clock` must outlive the manager.
  explicit PoolManager(const Clock& clock);
  ~PoolManager();
  PoolManager(const PoolManager&) = delete;
  PoolManager& operator=(const PoolManager&) = delete;

  std::shared_ptr<LatencySlot> Attach(const std::string& backend_id);
  void Detach(const std::string& backend_id);

  void ObserveLatency(LatencySlot& slot, Duration latency) const;
  // The EWMA in milliseconds, nullopt before the first observation.
  std::optional<double> LatencyMs(const LatencySlot& slot) const;

  // Orders the candidates of one pool in place for one request. `ticket` is
  // the request's sequence number for this model (callers take it from a
  // counter); it drives the rotation, so that over many requests
  // round-robin spreads evenly and weighted spreads by weight.
  // REQUIRES: every candidate's weight >= 1.
  static void OrderPool(Strategy strategy, std::span<PoolCandidate> candidates, uint64_t ticket);

  // For round-robin and weighted, the order is a rotation of the pool's
  // candidates: this is the position that leads for `ticket`, given the
  // candidates' weights (ignored by round-robin). O(1) for round-robin,
  // O(n) for weighted. REQUIRES: !weights.empty(), every weight >= 1.
  static size_t RotationStart(Strategy strategy, std::span<const int> weights, uint64_t ticket);
  // Whether `strategy` orders by rotation alone (no sort needed).
  static bool IsRotation(Strategy strategy) {
    return strategy == Strategy::kRoundRobin || strategy == Strategy::kWeighted;
  }

 private:
  const Clock& clock_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<LatencySlot>> slots_;  // guarded by mu_
};

}  // namespace switchboard

#endif  // SWITCHBOARD_POOL_MANAGER_H_
