// SseParser (lib/src/sse.cc) over arbitrary upstream bytes.
// Invariants: no crash or sanitizer report; every event it returns ends in a
// blank line; and the events (their data: and event: fields) are the same
// whether the bytes arrive at once or in arbitrary pieces, since a TCP
// stream can be split anywhere.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "switchboard/proxy.h"

namespace {

using switchboard::SseParser;

bool EndsWithBlankLine(const std::string& e) {
  const size_t n = e.size();
  if (n >= 2 && e[n - 1] == '\n' && (e[n - 2] == '\n' || e[n - 2] == '\r')) return true;
  if (n >= 2 && e[n - 1] == '\r' && (e[n - 2] == '\r' || e[n - 2] == '\n')) return true;
  return false;
}

struct Parsed {
  std::vector<std::string> data;
  std::vector<std::string> types;
};

Parsed Describe(const std::vector<std::string>& events) {
  Parsed p;
  for (const std::string& e : events) {
    FUZZ_CHECK(EndsWithBlankLine(e));
    p.data.push_back(SseParser::Data(e));
    p.types.push_back(SseParser::EventType(e));
  }
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte seeds the piece sizes; the rest is the stream.
  const unsigned seed = data[0];
  const std::string_view bytes = switchboard::fuzz::AsView(data + 1, size - 1);

  SseParser whole;
  std::vector<std::string> whole_events;
  whole.Feed(bytes, &whole_events);

  SseParser pieces;
  std::vector<std::string> piece_events;
  size_t pos = 0;
  unsigned state = seed;
  while (pos < bytes.size()) {
    state = state * 1103515245u + 12345u;
    const size_t len = std::min<size_t>(bytes.size() - pos, 1 + (state >> 16) % 7);
    pieces.Feed(bytes.substr(pos, len), &piece_events);
    pos += len;
  }

  const Parsed a = Describe(whole_events);
  const Parsed b = Describe(piece_events);
  FUZZ_CHECK(a.data == b.data);
  FUZZ_CHECK(a.types == b.types);
  return 0;
}
