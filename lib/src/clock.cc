#include "switchboard/clock.h"

#include <array>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace switchboard {
namespace {

class RealClock final : public Clock {
 public:
  SteadyTime Now() const override { return std::chrono::steady_clock::now(); }
  SystemTime WallNow() const override { return std::chrono::system_clock::now(); }
};

// 2026-01-01T00:00:00Z
constexpr int64_t kManualClockEpochSeconds = 1767225600;

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool ParseDigits(std::string_view text, size_t pos, size_t count, int* out) {
  if (pos + count > text.size()) return false;
  int value = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    value = value * 10 + (text[i] - '0');
  }
  *out = value;
  return true;
}

int DaysInMonth(int year, int month) {
  static constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// The whole seconds a SystemTime can hold, less one so that a sub-second
// fraction still fits (libstdc++'s system_clock counts nanoseconds: ~1677..2262).
constexpr int64_t kMaxRepresentableSeconds =
    std::chrono::duration_cast<std::chrono::seconds>(SystemTime::duration::max()).count() - 1;

std::optional<SystemTime> MakeTime(int year, int month, int day, int hour, int minute, int second,
                                   int64_t offset_seconds) {
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 60) {
    return std::nullopt;
  }
  if (second == 60) second = 59;  // leap second: clamp
  const int64_t days =
      DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  const int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_seconds;
  // Converting an out-of-range year to nanoseconds would overflow (UB); such a
  // date is as unusable as a malformed one.
  if (secs > kMaxRepresentableSeconds || secs < -kMaxRepresentableSeconds) return std::nullopt;
  return SystemTime(std::chrono::seconds(secs));
}

int MonthFromName(std::string_view name) {
  static constexpr std::array<std::string_view, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (size_t i = 0; i < kMonths.size(); ++i) {
    if (name == kMonths[i]) return static_cast<int>(i) + 1;
  }
  return 0;
}

bool IsShortDayName(std::string_view name) {
  for (std::string_view d : {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}) {
    if (name == d) return true;
  }
  return false;
}

bool IsLongDayName(std::string_view name) {
  for (std::string_view d :
       {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}) {
    if (name == d) return true;
  }
  return false;
}

// Parses "HH:MM:SS" at `pos`.
bool ParseHms(std::string_view t, size_t pos, int* h, int* m, int* s) {
  return pos + 8 <= t.size() && ParseDigits(t, pos, 2, h) && t[pos + 2] == ':' &&
         ParseDigits(t, pos + 3, 2, m) && t[pos + 5] == ':' && ParseDigits(t, pos + 6, 2, s);
}

}  // namespace

const Clock& Clock::Real() {
  static const RealClock* const kClock = new RealClock();
  return *kClock;
}

ManualClock::ManualClock()
    : ManualClock(SystemTime(std::chrono::seconds(kManualClockEpochSeconds))) {}

ManualClock::ManualClock(SystemTime wall_start) : wall_start_(wall_start) {}

SteadyTime ManualClock::Now() const {
  // Offset from a zero steady epoch so that Now() is never the default time_point.
  return SteadyTime(std::chrono::hours(1) + Duration(elapsed_ns_.load(std::memory_order_acquire)));
}

SystemTime ManualClock::WallNow() const {
  return wall_start_ + std::chrono::duration_cast<SystemTime::duration>(
                           Duration(elapsed_ns_.load(std::memory_order_acquire)));
}

void ManualClock::Advance(Duration d) {
  if (d.count() <= 0) return;
  elapsed_ns_.fetch_add(d.count(), std::memory_order_acq_rel);
}

std::string FormatRfc3339(SystemTime t) {
  const int64_t secs = std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
  const std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<SystemTime> ParseRfc3339(std::string_view t) {
  int year, month, day, hour, minute, second;
  if (!(ParseDigits(t, 0, 4, &year) && t.size() > 4 && t[4] == '-' &&
        ParseDigits(t, 5, 2, &month) && t.size() > 7 && t[7] == '-' && ParseDigits(t, 8, 2, &day) &&
        t.size() > 10 && (t[10] == 'T' || t[10] == 't' || t[10] == ' ') &&
        ParseHms(t, 11, &hour, &minute, &second))) {
    return std::nullopt;
  }
  size_t pos = 19;
  int64_t millis = 0;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos]))) {
      if (digits < 3) millis = millis * 10 + (t[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (int i = digits; i < 3; ++i) millis *= 10;
  }
  int64_t offset = 0;
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    int oh, om;
    if (!(ParseDigits(t, pos + 1, 2, &oh) && t.size() > pos + 3 && t[pos + 3] == ':' &&
          ParseDigits(t, pos + 4, 2, &om)) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset = (t[pos] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != t.size()) return std::nullopt;
  auto base = MakeTime(year, month, day, hour, minute, second, offset);
  if (!base) return std::nullopt;
  return *base + std::chrono::milliseconds(millis);
}

std::optional<SystemTime> ParseHttpDate(std::string_view t) {
  int year, day, hour, minute, second;
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
  if (t.size() == 29 && t[3] == ',' && t[4] == ' ' && ParseDigits(t, 5, 2, &day) && t[7] == ' ' &&
      t[11] == ' ' && ParseDigits(t, 12, 4, &year) && t[16] == ' ' &&
      ParseHms(t, 17, &hour, &minute, &second) && t.substr(25) == " GMT") {
    const int month = MonthFromName(t.substr(8, 3));
    if (month == 0 || !IsShortDayName(t.substr(0, 3))) return std::nullopt;
    return MakeTime(year, month, day, hour, minute, second, 0);
  }
  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
  if (const size_t comma = t.find(", "); comma != std::string_view::npos && comma >= 6 &&
                                          t.size() == comma + 24) {
    const size_t p = comma + 2;
    int yy;
    if (ParseDigits(t, p, 2, &day) && t[p + 2] == '-' && t[p + 6] == '-' &&
        ParseDigits(t, p + 7, 2, &yy) && t[p + 9] == ' ' &&
        ParseHms(t, p + 10, &hour, &minute, &second) && t.substr(p + 18) == " GMT") {
      const int month = MonthFromName(t.substr(p + 3, 3));
      if (month == 0 || !IsLongDayName(t.substr(0, comma))) return std::nullopt;
      year = yy < 70 ? 2000 + yy : 1900 + yy;
      return MakeTime(year, month, day, hour, minute, second, 0);
    }
    return std::nullopt;
  }
  // asctime: "Sun Nov  6 08:49:37 1994"
  if (t.size() == 24 && t[3] == ' ' && t[7] == ' ' && t[10] == ' ' &&
      ParseHms(t, 11, &hour, &minute, &second) && t[19] == ' ' && ParseDigits(t, 20, 4, &year)) {
    const int month = MonthFromName(t.substr(4, 3));
    const char d0 = t[8] == ' ' ? '0' : t[8];
    if (month == 0 || !IsShortDayName(t.substr(0, 3)) ||
        !std::isdigit(static_cast<unsigned char>(d0)) ||
        !std::isdigit(static_cast<unsigned char>(t[9]))) {
      return std::nullopt;
    }
    day = (d0 - '0') * 10 + (t[9] - '0');
    return MakeTime(year, month, day, hour, minute, second, 0);
  }
  return std::nullopt;
}

int64_t ToUnixMillis(SystemTime t) {
  // floor, not truncation, so that times before 1970 round the same way
  // FormatRfc3339 does.
  return std::chrono::floor<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

SystemTime FromUnixMillis(int64_t ms) {
  // A stored or client-supplied value outside SystemTime's range would overflow
  // the conversion to nanoseconds; clamp it instead.
  constexpr int64_t kMaxMillis =
      std::chrono::duration_cast<std::chrono::milliseconds>(SystemTime::duration::max()).count();
  constexpr int64_t kMinMillis =
      std::chrono::duration_cast<std::chrono::milliseconds>(SystemTime::duration::min()).count();
  if (ms >= kMaxMillis) return SystemTime::max();
  if (ms <= kMinMillis) return SystemTime::min();
  return SystemTime(
      std::chrono::duration_cast<SystemTime::duration>(std::chrono::milliseconds(ms)));
}

}  // namespace switchboard
