// Catch2's main, compiled with the project's flags. Debian's prebuilt
// libCatch2WithMain.a is not built with the sanitizers: its copies of inline
// standard-library code (shared_ptr's reference counting among them) can be
// the ones the linker keeps, and ThreadSanitizer then misses their atomics
// and reports races that are not there.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
