#!/usr/bin/env bash
# The added cost of Redis shared state: one switchboard with in-process state
# and one with --redis (a private redis-server on 127.0.0.1), both routing to
# a backend with rpm, tpm and concurrency limits, so that every request takes
# a token and a lease from the state (one Redis round trip on the request
# path) and gives the lease back and charges its tokens (two more, from a
# background thread).
# Measured with the shared harness (../shared/bench) against the direct mock,
# in the same run, interleaved.
#
#   bench/scale_out/run.sh           # REPS=3, CONNS="1 16 64"
#   QUICK=1 bench/scale_out/run.sh   # one short rep
#
# Needs a release build with Redis: cmake --preset release && cmake --build --preset release
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
harness="${SHARED_BENCH:-$repo/../shared/bench}"
binary="${SWITCHBOARD_BIN:-$repo/build/release/server/switchboard}"
[[ -x $binary ]] || { echo "no $binary: cmake --preset release && cmake --build --preset release" >&2; exit 1; }
[[ -d $harness ]] || { echo "no harness at $harness (set SHARED_BENCH)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed (scripts/install-deps.sh)" >&2; exit 1; }

export REPS="${REPS:-3}" CONNS="${CONNS:-1 16 64}" MODES=json
if [[ ${QUICK:-0} == 1 ]]; then
  export REPS=1 CONNS="1 16" DURATION=3s WARMUP=1s
fi
export OUT="${OUT:-/tmp/switchboard-bench/scale-out-$(date +%Y%m%d-%H%M%S)}"
export BASELINE=direct REF=sb-in-process
mkdir -p "$OUT"

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk
fi
"$harness/up.sh" mock-json

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  "$repo/tests/redis/redis_fixture.sh" stop "$work/redis" >/dev/null 2>&1 || true
  "$harness/down.sh" mock-json || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/redis"
"$repo/tests/redis/redis_fixture.sh" start "$work/redis"
redis_url="$(cat "$work/redis/url")"

start_switchboard() {  # NAME PORT [FLAGS...]
  local name=$1 port=$2
  shift 2
  SWITCHBOARD_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" \
    "$binary" serve --listen "127.0.0.1:$port" --db "$work/$name.db" \
    --import "$here/backends.json" "$@" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "$name did not start; see $OUT/$name.log" >&2
  exit 1
}
start_switchboard sb-in-process 18041
start_switchboard sb-redis 18042 --redis "$redis_url"

"$harness/run.sh" "$here/targets.tsv" | tee "$OUT/json.md"

echo "raw results: $OUT"
