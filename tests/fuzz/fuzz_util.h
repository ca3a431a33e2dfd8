// Helpers shared by the libFuzzer targets in this directory.
#ifndef SWITCHBOARD_TESTS_FUZZ_FUZZ_UTIL_H_
#define SWITCHBOARD_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <string_view>

// Fails the run (libFuzzer saves the input as a crash) when an invariant the
// target checks does not hold. Unlike assert(), it stays on in every build.
#define FUZZ_CHECK(cond)                                                         \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                       \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

namespace switchboard::fuzz {

// The fuzzer's bytes as a string_view.
inline std::string_view AsView(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace switchboard::fuzz

#endif  // SWITCHBOARD_TESTS_FUZZ_FUZZ_UTIL_H_
