// switchboard/clock.h
// Time, injected. Everything in switchboard that measures intervals or stamps
// persisted records reads a Clock, so tests move time by hand instead of
// sleeping.
//
//   switchboard::ManualClock clock;              // tests
//   RateLimiter limiter(clock, ...);
//   clock.Advance(std::chrono::seconds(1));      // never sleep_for
//
//   const Clock& clock = switchboard::Clock::Real();   // production
#ifndef SWITCHBOARD_CLOCK_H_
#define SWITCHBOARD_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace switchboard {

using SteadyTime = std::chrono::steady_clock::time_point;
using SystemTime = std::chrono::system_clock::time_point;
using Duration = std::chrono::nanoseconds;

// A source of steady and wall time. Thread-safe.
class Clock {
 public:
  Clock() = default;
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual ~Clock() = default;

  // Monotonic time, for intervals, buckets and deadlines.
  virtual SteadyTime Now() const = 0;
  // Wall time, for persisted timestamps (cooldown_until, usage records).
  virtual SystemTime WallNow() const = 0;

  // The process-wide real clock. Never destroyed.
  static const Clock& Real();
};

// A clock that moves only when told to. Starts at a fixed wall time
// (2026-01-01T00:00:00Z) unless given another. Thread-safe.
class ManualClock final : public Clock {
 public:
  ManualClock();
  explicit ManualClock(SystemTime wall_start);

  SteadyTime Now() const override;
  SystemTime WallNow() const override;

  // Moves both steady and wall time forward by `d` (d >= 0).
  void Advance(Duration d);

 private:
  SystemTime wall_start_;
  std::atomic<int64_t> elapsed_ns_{0};
};

// RFC 3339 UTC with second precision: "2026-11-26T03:16:11Z".
std::string FormatRfc3339(SystemTime t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)"; nullopt otherwise.
std::optional<SystemTime> ParseRfc3339(std::string_view text);
// IMF-fixdate as used by Retry-After: "Sun, 06 Nov 1994 08:49:37 GMT".
// Also accepts the obsolete RFC 850 and asctime forms. nullopt otherwise.
std::optional<SystemTime> ParseHttpDate(std::string_view text);

// Milliseconds since the Unix epoch, and back.
int64_t ToUnixMillis(SystemTime t);
SystemTime FromUnixMillis(int64_t ms);

}  // namespace switchboard

#endif  // SWITCHBOARD_CLOCK_H_
