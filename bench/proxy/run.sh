#!/usr/bin/env bash
# switchboard vs direct-to-mock vs nginx proxy_pass vs Portkey, with the
# shared harness (../shared/bench beside the repository), plus RSS with
# 1,000 concurrent open streams. Everything on 127.0.0.1; every load bounded.
#
#   bench/proxy/run.sh            # full run (~25 min): REPS=3, CONNS="1 16 64 256"
#   QUICK=1 bench/proxy/run.sh    # smoke run (~3 min)
#
# Needs a release build: cmake --preset release && cmake --build --preset release
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
harness="${SHARED_BENCH:-$repo/../shared/bench}"
binary="${SWITCHBOARD_BIN:-$repo/build/release/server/switchboard}"
port=18040
[[ -x $binary ]] || { echo "no $binary: cmake --preset release && cmake --build --preset release" >&2; exit 1; }
[[ -d $harness ]] || { echo "no harness at $harness (set SHARED_BENCH)" >&2; exit 1; }

if [[ ${QUICK:-0} == 1 ]]; then
  export REPS=1 CONNS="1 16 64" DURATION=3s STREAM_N=50 WARMUP=1s
fi
export OUT="${OUT:-/tmp/switchboard-bench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

# nginx and wrk from Debian (the harness's setup.sh would also ask apt for
# nodejs/npm, which fails where Node.js came from elsewhere), then Portkey.
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk
fi
[[ -d /tmp/peers/portkey/node_modules ]] || "$harness/setup.sh"
"$harness/up.sh" mock-json mock-sse nginx portkey

work="$(mktemp -d)"
sb_pid=""
cleanup() {
  [[ -n $sb_pid ]] && kill "$sb_pid" 2>/dev/null && wait "$sb_pid" 2>/dev/null || true
  "$harness/down.sh" mock-json mock-sse nginx portkey || true
  rm -rf "$work"
}
trap cleanup EXIT

SWITCHBOARD_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" \
  "$binary" serve --listen "127.0.0.1:$port" --db "$work/bench.db" \
  --import "$here/backends.json" >"$OUT/switchboard.log" 2>&1 &
sb_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# JSON and SSE runs use different model names, so one body file per mode.
sed 's/"model":"[^"]*"/"model":"bench-sse"/' "$harness/lib/request.json" >"$work/sse-body.json"
MODES=json OUT="$OUT/json" "$harness/run.sh" "$here/targets.tsv" | tee "$OUT/json.md"
MODES=sse BENCH_BODY_FILE="$work/sse-body.json" OUT="$OUT/sse" "$harness/run.sh" "$here/targets.tsv" |
  tee "$OUT/sse.md"

# Per-request cost (context switches, CPU) of nginx's worker and of
# switchboard under the same wrk load, counted on their own threads only.
read -r nginx_master _ <"${BENCH_RUN_DIR:-/tmp/peers/run}/nginx.pid"
nginx_workers="$(ps -o pid= --ppid "$nginx_master" | tr -s ' \n' ' ')"
{
  echo "| proxy | conns | req/s | context switches / request | CPU µs / request |"
  echo "|---|---:|---:|---:|---:|"
  for conns in ${COST_CONNS:-16 64}; do
    for rep in $(seq "${REPS:-3}"); do
      # shellcheck disable=SC2086  # one PID per word
      CONNS=$conns BENCH_LIB="$harness/lib" "$here/cost.sh" nginx http://127.0.0.1:18010/v1 $nginx_workers
      CONNS=$conns BENCH_LIB="$harness/lib" "$here/cost.sh" switchboard "http://127.0.0.1:$port/v1" "$sb_pid"
    done
  done
} | tee "$OUT/cost.md"

# Memory with 1,000 streams open at once (slow streams: 60 chunks, 100 ms apart).
sed 's/"model":"[^"]*"/"model":"bench-slow"/' "$harness/lib/request.json" >"$work/slow-body.json"
node "$here/open_streams.mjs" "http://127.0.0.1:$port/v1/chat/completions" 1000 "$work/slow-body.json" \
  "$sb_pid" | tee "$OUT/streams.txt"
echo "results in $OUT"
