#!/usr/bin/env bash
# Installs the dependencies, builds every target and runs every test: first
# the CI preset (warnings as errors), then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then under ThreadSanitizer.
# SWITCHBOARD_SKIP_SANITIZERS=1 runs the first pass only.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

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
