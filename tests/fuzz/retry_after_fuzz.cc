// Retry-After / retry-after-ms (ParseRetryAfter, cooldown_manager.cc) and
// the upstream quota headers (ParseUpstreamQuota, rate_limiter.cc), i.e.
// every header an upstream controls that turns into a wait.
// Input: "name: value" lines. Invariants: no crash or sanitizer report; no
// duration is negative; Retry-After never exceeds ten years (the parser's
// cap), whatever the value or the clock.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "switchboard/cooldown_manager.h"
#include "switchboard/rate_limiter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte moves "now" by up to ~80 years either way from 2026.
  const int64_t shift = (static_cast<int64_t>(data[0]) - 128) * 20'000'000LL;
  const switchboard::SystemTime now{std::chrono::seconds(1767225600 + shift)};
  const std::string_view text = switchboard::fuzz::AsView(data + 1, size - 1);

  switchboard::Headers headers;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      headers.emplace_back(std::string(line.substr(0, colon)),
                           std::string(line.substr(colon + 1)));
    }
    start = end + 1;
  }

  if (auto d = switchboard::ParseRetryAfter(headers, now)) {
    FUZZ_CHECK(*d >= switchboard::Duration::zero());
    FUZZ_CHECK(*d <= std::chrono::hours(24 * 3650));
  }
  const switchboard::UpstreamQuota q = switchboard::ParseUpstreamQuota(headers, now);
  if (q.requests_reset) FUZZ_CHECK(*q.requests_reset >= switchboard::Duration::zero());
  if (q.tokens_reset) FUZZ_CHECK(*q.tokens_reset >= switchboard::Duration::zero());
  return 0;
}
