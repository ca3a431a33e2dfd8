#!/usr/bin/env bash
# Installs the dependencies, builds switchboard and runs the quickstart: a
# request routed through the library against a local store. Needs no account.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec ./build/release/examples/quickstart "$@"
