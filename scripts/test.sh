#!/usr/bin/env bash
# Installs the dependencies, builds every target and runs every test: first
# the CI preset (warnings as errors), then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then under ThreadSanitizer.
# SWITCHBOARD_SKIP_SANITIZERS=1 runs the first pass only.
# Then the libFuzzer targets (tests/fuzz) in a small clang build of the
# library alone: every seed once, and SWITCHBOARD_FUZZ_SECONDS (default 5) of
# fuzzing per target. SWITCHBOARD_SKIP_FUZZ=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

# The node tests (tests/sdk: ctest sdk.openai; tests/browser: ctest
# browser.dashboard) are registered only when their node_modules exist at
# configure time, so install them first, exactly as their lockfiles say.
for dir in tests/*/; do
  [ -f "${dir}package-lock.json" ] || continue
  if command -v npm >/dev/null 2>&1; then
    (cd "$dir" && npm ci --no-audit --no-fund)
  else
    echo "test.sh: npm not found; the node tests in $dir will not run" >&2
  fi
done

run_preset() {
  local preset=$1
  echo "=== $preset: configure, build, test ==="
  cmake --preset "$preset"
  cmake --build --preset "$preset"
  ctest --preset "$preset"
}

run_preset ci
if [ "${SWITCHBOARD_SKIP_SANITIZERS:-0}" != "1" ]; then
  run_preset asan
  run_preset tsan
fi

run_fuzz() {
  echo "=== fuzz: configure, build, run the corpora and a short fuzzing pass ==="
  CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DSWITCHBOARD_BUILD_FUZZ=ON -DSWITCHBOARD_BUILD_TESTS=OFF -DSWITCHBOARD_BUILD_SERVER=OFF \
    -DSWITCHBOARD_BUILD_EXAMPLES=OFF -DSWITCHBOARD_INSTALL=OFF \
    -DSWITCHBOARD_FUZZ_SECONDS="${SWITCHBOARD_FUZZ_SECONDS:-5}"
  cmake --build build/fuzz -j2
  ctest --test-dir build/fuzz -j2 --output-on-failure
}
if [ "${SWITCHBOARD_SKIP_FUZZ:-0}" != "1" ]; then
  run_fuzz
fi
