#!/usr/bin/env bash
# Installs the dependencies, builds switchboard (release preset) and runs the
# gateway in demo mode: two mock upstreams in the process, one of which
# answers every 4th request with 429, so failover is visible. Needs no
# account anywhere. Extra arguments go to `switchboard serve` (e.g.
# --listen 127.0.0.1:9000). The demo store lives in a temporary directory,
# removed on exit (Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec ./build/release/server/switchboard serve --demo "$@"
