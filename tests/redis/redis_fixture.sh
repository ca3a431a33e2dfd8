#!/usr/bin/env bash
# Starts or stops a throwaway Redis server for the tests (a ctest fixture, see
# tests/redis/CMakeLists.txt).
#
#   redis_fixture.sh start STATE_DIR [PASSWORD]  # on 127.0.0.1:<free port>; writes
#                                                # STATE_DIR/url (with the password, if any)
#   redis_fixture.sh stop STATE_DIR              # stops it (by its pid) and removes its files
#   redis_fixture.sh halt STATE_DIR              # stops it, keeping its port and password
#   redis_fixture.sh resume STATE_DIR            # starts a halted server again, same port
#
# The server keeps nothing on disk (--save "" --appendonly no), listens on
# 127.0.0.1 only, and is the only process this script ever stops: the pid it
# recorded, checked to still be a redis-server. Any other Redis on the machine
# (such as the one the Debian package may start on 6379) is left alone.
set -euo pipefail

usage="usage: redis_fixture.sh start|stop|halt|resume STATE_DIR [PASSWORD]"
action=${1:?$usage}
state=${2:?$usage}
server=${SWITCHBOARD_REDIS_SERVER:-redis-server}

# The recorded pid, if that process is still our redis-server.
server_pid() {
  [ -f "$state/redis.pid" ] || return 1
  local pid
  pid=$(cat "$state/redis.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server" || return 1
  echo "$pid"
}

halt() {
  local pid i
  if pid=$(server_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$state/redis.pid"
}

stop() {
  halt
  rm -f "$state/url" "$state/port" "$state/password" "$state/redis.log"
}

# Starts redis-server on port $1; false if it does not answer PING soon.
run_server() {
  local port=$1 i
  local args=(--bind 127.0.0.1 --port "$port" --save "" --appendonly no
              --daemonize yes --pidfile "$state/redis.pid" --logfile "$state/redis.log"
              --dir "$state" --protected-mode yes)
  local auth=()
  if [ -s "$state/password" ]; then
    args+=(--requirepass "$(cat "$state/password")")
    auth=(--no-auth-warning -a "$(cat "$state/password")")
  fi
  rm -f "$state/redis.pid"
  "$server" "${args[@]}" >/dev/null || return 1
  for i in $(seq 1 100); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$port" "${auth[@]}" ping 2>/dev/null)" = "PONG" ] &&
        server_pid >/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  halt
  return 1
}

free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

write_url() {
  local port=$1 userinfo=""
  if [ -s "$state/password" ]; then userinfo=":$(cat "$state/password")@"; fi
  printf 'redis://%s127.0.0.1:%s/0\n' "$userinfo" "$port" >"$state/url.tmp"
  chmod 600 "$state/url.tmp"
  mv "$state/url.tmp" "$state/url"
}

start() {
  if ! command -v "$server" >/dev/null 2>&1; then
    echo "redis_fixture: $server not found (apt-get install redis-server)" >&2
    exit 1
  fi
  mkdir -p "$state"
  stop  # a server left over from an interrupted run
  if [ -n "${3:-}" ]; then
    (umask 077 && printf '%s\n' "$3" >"$state/password")
  fi
  # The port is free when picked; another process may take it before the
  # server binds, so try a few.
  local attempt port
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if run_server "$port"; then
      echo "$port" >"$state/port"
      write_url "$port"
      echo "redis_fixture: Redis listening on 127.0.0.1:$port (pid $(server_pid))"
      return 0
    fi
    echo "redis_fixture: start on port $port failed (attempt $attempt)" >&2
  done
  cat "$state/redis.log" >&2 || true
  exit 1
}

resume() {
  local port
  port=$(cat "$state/port")
  run_server "$port" || { cat "$state/redis.log" >&2 || true; exit 1; }
}

case "$action" in
  start) start "$@" ;;
  stop) stop ;;
  halt) halt ;;
  resume) resume ;;
  *) echo "redis_fixture: unknown action $action" >&2; exit 2 ;;
esac
