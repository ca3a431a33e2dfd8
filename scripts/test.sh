#!/usr/bin/env bash
# Installs the dependencies, builds every target and runs every test: first
# the CI preset (warnings as errors), then the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer. SWITCHBOARD_SKIP_ASAN=1 skips
# the second pass.
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
if [ "${SWITCHBOARD_SKIP_ASAN:-0}" != "1" ]; then
  run_preset asan
fi
