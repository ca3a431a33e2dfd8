// Injected time and the timestamp formats switchboard reads and writes.
#include "switchboard/clock.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace switchboard {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

// 2026-01-01T00:00:00Z
const SystemTime kEpoch2026 = SystemTime(seconds(1767225600));
// Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example.
const SystemTime kRfcExample = SystemTime(seconds(784111777));

// --- ManualClock -----------------------------------------------------------------

TEST_CASE("ManualClock starts at 2026-01-01T00:00:00Z", "[clock]") {
  ManualClock clock;
  CHECK(clock.WallNow() == kEpoch2026);
  CHECK(FormatRfc3339(clock.WallNow()) == "2026-01-01T00:00:00Z");
}

TEST_CASE("ManualClock starts at the wall time it is given", "[clock]") {
  ManualClock clock(kRfcExample);
  CHECK(clock.WallNow() == kRfcExample);
}

TEST_CASE("ManualClock::Advance moves steady and wall time together", "[clock]") {
  ManualClock clock;
  const SteadyTime steady_start = clock.Now();
  clock.Advance(seconds(90));
  clock.Advance(milliseconds(250));
  CHECK(clock.Now() - steady_start == milliseconds(90250));
  CHECK(clock.WallNow() - kEpoch2026 == milliseconds(90250));
}

TEST_CASE("ManualClock stands still until advanced", "[clock]") {
  ManualClock clock;
  const SteadyTime a = clock.Now();
  CHECK(clock.Now() == a);
  CHECK(clock.WallNow() == kEpoch2026);
}

TEST_CASE("ManualClock ignores zero and negative advances", "[clock]") {
  ManualClock clock;
  const SteadyTime start = clock.Now();
  clock.Advance(nanoseconds(0));
  clock.Advance(seconds(-5));
  CHECK(clock.Now() == start);
  CHECK(clock.WallNow() == kEpoch2026);
}

TEST_CASE("ManualClock's steady time is never the default time point", "[clock]") {
  ManualClock clock;
  CHECK(clock.Now() != SteadyTime{});
  CHECK(clock.Now() > SteadyTime{});
}

TEST_CASE("Clock::Real returns the same process-wide clock each time", "[clock]") {
  CHECK(&Clock::Real() == &Clock::Real());
}

// --- FormatRfc3339 -----------------------------------------------------------------

TEST_CASE("FormatRfc3339 writes UTC with second precision", "[clock]") {
  CHECK(FormatRfc3339(kRfcExample) == "1994-11-06T08:49:37Z");
  CHECK(FormatRfc3339(SystemTime{}) == "1970-01-01T00:00:00Z");
  CHECK(FormatRfc3339(kEpoch2026 + hours(24 * 59) + seconds(3661)) == "2026-03-01T01:01:01Z");
}

TEST_CASE("FormatRfc3339 drops the fraction rather than rounding", "[clock]") {
  CHECK(FormatRfc3339(kEpoch2026 + milliseconds(999)) == "2026-01-01T00:00:00Z");
}

TEST_CASE("FormatRfc3339 rounds times before 1970 down to the second", "[clock]") {
  CHECK(FormatRfc3339(SystemTime{} - milliseconds(1)) == "1969-12-31T23:59:59Z");
}

// --- ParseRfc3339 -------------------------------------------------------------------

TEST_CASE("ParseRfc3339 reads a UTC time", "[clock]") {
  CHECK(ParseRfc3339("2026-01-01T00:00:00Z") == kEpoch2026);
  CHECK(ParseRfc3339("1994-11-06T08:49:37Z") == kRfcExample);
  CHECK(ParseRfc3339("1994-11-06t08:49:37z") == kRfcExample);
  CHECK(ParseRfc3339("1994-11-06 08:49:37Z") == kRfcExample);
}

TEST_CASE("ParseRfc3339 applies a numeric offset", "[clock]") {
  CHECK(ParseRfc3339("2026-01-01T01:30:00+01:30") == kEpoch2026);
  CHECK(ParseRfc3339("2025-12-31T19:00:00-05:00") == kEpoch2026);
  CHECK(ParseRfc3339("2026-01-01T00:00:00+00:00") == kEpoch2026);
}

TEST_CASE("ParseRfc3339 keeps milliseconds of a fraction", "[clock]") {
  CHECK(ParseRfc3339("2026-01-01T00:00:00.5Z") == kEpoch2026 + milliseconds(500));
  CHECK(ParseRfc3339("2026-01-01T00:00:00.123Z") == kEpoch2026 + milliseconds(123));
  CHECK(ParseRfc3339("2026-01-01T00:00:00.123999999Z") == kEpoch2026 + milliseconds(123));
}

TEST_CASE("ParseRfc3339 reads what FormatRfc3339 writes", "[clock]") {
  for (SystemTime t : {kEpoch2026, kRfcExample, SystemTime{}, kEpoch2026 + hours(24 * 365 * 5)}) {
    CHECK(ParseRfc3339(FormatRfc3339(t)) == t);
  }
}

TEST_CASE("ParseRfc3339 accepts Feb 29 only in leap years", "[clock]") {
  CHECK(ParseRfc3339("2024-02-29T00:00:00Z").has_value());
  CHECK(ParseRfc3339("2000-02-29T00:00:00Z").has_value());
  CHECK_FALSE(ParseRfc3339("2026-02-29T00:00:00Z").has_value());
  CHECK_FALSE(ParseRfc3339("2100-02-29T00:00:00Z").has_value());
}

TEST_CASE("ParseRfc3339 refuses impossible dates and times", "[clock]") {
  for (const char* text :
       {"2026-02-30T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z", "2026-01-00T00:00:00Z", "2026-01-32T00:00:00Z",
        "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:61Z"}) {
    INFO(text);
    CHECK_FALSE(ParseRfc3339(text).has_value());
  }
}

TEST_CASE("ParseRfc3339 refuses malformed text", "[clock]") {
  for (const char* text :
       {"", "2026-01-01", "2026-01-01T00:00:00", "2026-01-01T00:00:00ZZ",
        "2026-01-01T00:00:00 Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00+0100",
        "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01:60", "2026-1-01T00:00:00Z",
        "2026/01/01T00:00:00Z", "2026-01-01X00:00:00Z", "x2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00+01:00 "}) {
    INFO(text);
    CHECK_FALSE(ParseRfc3339(text).has_value());
  }
}

TEST_CASE("ParseRfc3339 refuses years a SystemTime cannot hold", "[clock]") {
  CHECK_FALSE(ParseRfc3339("9999-12-31T23:59:59Z").has_value());
  CHECK_FALSE(ParseRfc3339("0001-01-01T00:00:00Z").has_value());
  CHECK(ParseRfc3339("2262-01-01T00:00:00Z").has_value());
}

// --- ParseHttpDate ---------------------------------------------------------------

TEST_CASE("ParseHttpDate reads an IMF-fixdate", "[clock]") {
  CHECK(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT") == kRfcExample);
  CHECK(ParseHttpDate("Thu, 01 Jan 2026 00:00:00 GMT") == kEpoch2026);
}

TEST_CASE("ParseHttpDate reads the obsolete RFC 850 form", "[clock]") {
  CHECK(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT") == kRfcExample);
  CHECK(ParseHttpDate("Thursday, 01-Jan-26 00:00:00 GMT") == kEpoch2026);
}

TEST_CASE("ParseHttpDate reads two-digit RFC 850 years from 1970 to 2069", "[clock]") {
  CHECK(ParseHttpDate("Thursday, 01-Jan-70 00:00:00 GMT") == SystemTime{});
  CHECK(ParseHttpDate("Tuesday, 01-Jan-69 00:00:00 GMT") ==
        ParseRfc3339("2069-01-01T00:00:00Z"));
}

TEST_CASE("ParseHttpDate reads the asctime form", "[clock]") {
  CHECK(ParseHttpDate("Sun Nov  6 08:49:37 1994") == kRfcExample);
  CHECK(ParseHttpDate("Sun Nov 06 08:49:37 1994") == kRfcExample);
  CHECK(ParseHttpDate("Thu Jan  1 00:00:00 2026") == kEpoch2026);
}

TEST_CASE("ParseHttpDate refuses Feb 30 in every form", "[clock]") {
  CHECK_FALSE(ParseHttpDate("Mon, 30 Feb 2026 00:00:00 GMT").has_value());
  CHECK_FALSE(ParseHttpDate("Monday, 30-Feb-26 00:00:00 GMT").has_value());
  CHECK_FALSE(ParseHttpDate("Mon Feb 30 00:00:00 2026").has_value());
}

TEST_CASE("ParseHttpDate refuses Feb 29 outside leap years", "[clock]") {
  CHECK_FALSE(ParseHttpDate("Sun, 29 Feb 2026 00:00:00 GMT").has_value());
  CHECK(ParseHttpDate("Thu, 29 Feb 2024 00:00:00 GMT").has_value());
}

TEST_CASE("ParseHttpDate refuses unknown month and day names", "[clock]") {
  for (const char* text :
       {"Sun, 06 Noe 1994 08:49:37 GMT", "Xyz, 06 Nov 1994 08:49:37 GMT",
        "sun, 06 Nov 1994 08:49:37 GMT", "Someday, 06-Nov-94 08:49:37 GMT",
        "Sunday, 06-Nox-94 08:49:37 GMT", "Abc Nov  6 08:49:37 1994", "Sun Nvo  6 08:49:37 1994"}) {
    INFO(text);
    CHECK_FALSE(ParseHttpDate(text).has_value());
  }
}

TEST_CASE("ParseHttpDate refuses malformed dates", "[clock]") {
  for (const char* text :
       {"", "120", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT ", "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08-49-37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT", "Sun Nov  6 08:49:37 94",
        "Sun Nov x6 08:49:37 1994", "2026-01-01T00:00:00Z"}) {
    INFO(text);
    CHECK_FALSE(ParseHttpDate(text).has_value());
  }
}

TEST_CASE("ParseHttpDate refuses years a SystemTime cannot hold", "[clock]") {
  CHECK_FALSE(ParseHttpDate("Fri, 31 Dec 9999 23:59:59 GMT").has_value());
  CHECK_FALSE(ParseHttpDate("Fri Dec 31 23:59:59 9999").has_value());
}

// --- Unix milliseconds -----------------------------------------------------------

TEST_CASE("ToUnixMillis and FromUnixMillis convert both ways", "[clock]") {
  CHECK(ToUnixMillis(kEpoch2026 + milliseconds(7)) == 1767225600007);
  CHECK(FromUnixMillis(1767225600007) == kEpoch2026 + milliseconds(7));
  CHECK(ToUnixMillis(FromUnixMillis(-1234)) == -1234);
}

TEST_CASE("ToUnixMillis drops sub-millisecond parts", "[clock]") {
  CHECK(ToUnixMillis(kEpoch2026 + nanoseconds(999999)) == 1767225600000);
  CHECK(ToUnixMillis(SystemTime{} - nanoseconds(1)) == -1);
}

TEST_CASE("FromUnixMillis clamps values beyond SystemTime's range", "[clock]") {
  CHECK(FromUnixMillis(INT64_MAX) == SystemTime::max());
  CHECK(FromUnixMillis(INT64_MIN) == SystemTime::min());
  CHECK(FromUnixMillis(int64_t{10000000000000}) == SystemTime::max());
}

}  // namespace
}  // namespace switchboard
