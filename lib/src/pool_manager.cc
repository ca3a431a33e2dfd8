#include "switchboard/pool_manager.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <numeric>

namespace switchboard {

class PoolManager::LatencySlot {
 public:
  // Lock-free: a CAS loop folds each observation into the EWMA.
  std::atomic<double> ewma_ms{0};
  std::atomic<int64_t> observations{0};
};

PoolManager::PoolManager(const Clock& clock) : clock_(clock) {}
PoolManager::~PoolManager() = default;

std::shared_ptr<PoolManager::LatencySlot> PoolManager::Attach(const std::string& backend_id) {
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (auto it = slots_.find(backend_id); it != slots_.end()) return it->second;
  }
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto& slot = slots_[backend_id];
  if (!slot) slot = std::make_shared<LatencySlot>();
  return slot;
}

void PoolManager::Detach(const std::string& backend_id) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  slots_.erase(backend_id);
}

void PoolManager::ObserveLatency(LatencySlot& slot, Duration latency) const {
  const double ms = std::chrono::duration<double, std::milli>(latency).count();
  if (slot.observations.fetch_add(1, std::memory_order_acq_rel) == 0) {
    slot.ewma_ms.store(ms, std::memory_order_release);
    return;
  }
  double old = slot.ewma_ms.load(std::memory_order_acquire);
  while (!slot.ewma_ms.compare_exchange_weak(old, old + kEwmaAlpha * (ms - old),
                                             std::memory_order_acq_rel)) {
  }
}

std::optional<double> PoolManager::LatencyMs(const LatencySlot& slot) const {
  if (slot.observations.load(std::memory_order_acquire) == 0) return std::nullopt;
  return slot.ewma_ms.load(std::memory_order_acquire);
}

namespace {

// Rotates `c` left so that the element at `first` leads, keeping the cyclic order.
void RotateToFront(std::span<PoolCandidate> c, size_t first) {
  std::rotate(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(first), c.end());
}

}  // namespace

size_t PoolManager::RotationStart(Strategy strategy, std::span<const int> weights,
                                 uint64_t ticket) {
  const size_t n = weights.size();
  if (strategy != Strategy::kWeighted) return ticket % n;
  // Ticket t lands on the candidate whose cumulative weight range holds
  // t mod W, so over W consecutive tickets each leads exactly `weight` times;
  // the rest follow in cyclic order as fallbacks.
  uint64_t total = 0;
  for (int w : weights) total += static_cast<uint64_t>(std::max(w, 1));
  uint64_t pos = ticket % total;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t w = static_cast<uint64_t>(std::max(weights[i], 1));
    if (pos < w) return i;
    pos -= w;
  }
  return 0;  // unreachable: pos < total
}

void PoolManager::OrderPool(Strategy strategy, std::span<PoolCandidate> c, uint64_t ticket) {
  const size_t n = c.size();
  if (n <= 1) return;
  switch (strategy) {
    case Strategy::kRoundRobin:
      RotateToFront(c, ticket % n);
      return;
    case Strategy::kWeighted: {
      int stack_weights[64];
      std::vector<int> heap_weights;
      int* weights = stack_weights;
      if (n > 64) {
        heap_weights.resize(n);
        weights = heap_weights.data();
      }
      for (size_t i = 0; i < n; ++i) weights[i] = c[i].weight;
      RotateToFront(c, RotationStart(strategy, std::span<const int>(weights, n), ticket));
      return;
    }
    case Strategy::kLeastBusy:
      // Rotate first so that equally busy backends take turns.
      RotateToFront(c, ticket % n);
      std::stable_sort(c.begin(), c.end(), [](const PoolCandidate& a, const PoolCandidate& b) {
        return a.in_flight < b.in_flight;
      });
      return;
    case Strategy::kLowestLatency: {
      RotateToFront(c, ticket % n);
      // Unmeasured backends first (they need a measurement), then fastest.
      std::stable_sort(c.begin(), c.end(), [](const PoolCandidate& a, const PoolCandidate& b) {
        if (a.latency_ms.has_value() != b.latency_ms.has_value()) return !a.latency_ms.has_value();
        return a.latency_ms.value_or(0) < b.latency_ms.value_or(0);
      });
      if (ticket % kExploreEvery == kExploreEvery - 1) {
        // Exploration: one of the others leads this time, in turn.
        const size_t pick = 1 + (ticket / kExploreEvery) % (n - 1);
        std::rotate(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(pick),
                    c.begin() + static_cast<std::ptrdiff_t>(pick) + 1);
      }
      return;
    }
  }
}

}  // namespace switchboard
