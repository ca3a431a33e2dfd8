#!/usr/bin/env bash
# Installs the dependencies, builds every target and runs every test: first
# the CI preset (warnings as errors), then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then under ThreadSanitizer.
# SWITCHBOARD_SKIP_SANITIZERS=1 runs the first pass only.
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
