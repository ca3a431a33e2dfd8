#!/usr/bin/env bash
# Per-request cost of each proxy: context switches and CPU time it spends per
# request under the same wrk load, counted by `perf stat` on the proxy's own
# threads only (wrk and the mock are not counted). Context switches are what
# the I/O model costs: a thread-per-connection server sleeps and wakes its
# connection's thread for every request; an event loop drains many ready
# sockets per wake.
#
#   bench/proxy/cost.sh NAME URL PID [PID...]    # prints one markdown row
#
# Env: CONNS (64), DURATION (5, seconds), BENCH_LIB (the harness's lib/).
# Runs wrk against URL/chat/completions with the harness's post.lua.
set -euo pipefail
name="$1" url="$2"
shift 2
pids="$(IFS=,; echo "$*")"
conns="${CONNS:-64}"
duration="${DURATION:-5}"
lib="${BENCH_LIB:?set BENCH_LIB to the harness lib/ directory}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

perf stat -x, -e context-switches,task-clock -p "$pids" -o "$work/perf.csv" -- sleep "$duration" &
perf_pid=$!
BENCH_LIB="$lib" BENCH_LABEL="$name" wrk -t1 -c"$conns" -d"${duration}s" --timeout 10s \
  -s "$lib/post.lua" "$url/chat/completions" >"$work/wrk.txt" 2>&1 || true
wait "$perf_pid" || true

requests="$(awk '/requests in/ {print $1}' "$work/wrk.txt")"
switches="$(awk -F, '$3 == "context-switches" {print $1}' "$work/perf.csv")"
cpu_ms="$(awk -F, '$3 == "task-clock" {print $1}' "$work/perf.csv")"
if [[ -z $requests || -z $switches || -z $cpu_ms || $requests == 0 ]]; then
  echo "| $name | $conns | (no measurement: see $work) | | | |"
  cat "$work/wrk.txt" "$work/perf.csv" >&2
  exit 1
fi
awk -v n="$name" -v c="$conns" -v r="$requests" -v s="$switches" -v t="$cpu_ms" -v d="$duration" 'BEGIN {
  printf "| %s | %d | %.0f | %.2f | %.1f |\n", n, c, r / d, s / r, t * 1000 / r
}'
