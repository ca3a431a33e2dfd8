#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL server for the tests (a ctest
# fixture, see tests/postgres/CMakeLists.txt).
#
#   pg_fixture.sh start STATE_DIR   # initdb + start on 127.0.0.1:<free port>;
#                                   # writes STATE_DIR/url (with the password)
#   pg_fixture.sh stop STATE_DIR    # stops it and removes its data
#   pg_fixture.sh halt STATE_DIR    # stops it, keeping its data and port
#   pg_fixture.sh resume STATE_DIR  # starts a halted server again, same port
#
# The cluster lives in a fresh directory under ${TMPDIR:-/tmp} (the socket
# too), listens on 127.0.0.1 only, and requires a password over TCP
# (scram-sha-256), so the tests exercise a real login. PostgreSQL refuses to
# run as root: as root, the server commands run as the "postgres" user.
set -euo pipefail

usage="usage: pg_fixture.sh start|stop|halt|resume STATE_DIR"
action=${1:?$usage}
state=${2:?$usage}
bindir=${SWITCHBOARD_PG_BINDIR:-/usr/lib/postgresql/15/bin}

as_server=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "pg_fixture: running as root and there is no 'postgres' user to run the server" >&2
    exit 1
  fi
  as_server=(runuser -u postgres --)
fi

stop() {
  [ -f "$state/tmpdir" ] || return 0
  local dir
  dir=$(cat "$state/tmpdir")
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null || true
  fi
  # Only ever a directory this script created (see start).
  case "$dir" in
    */switchboard-pg.*) rm -rf "$dir" ;;
  esac
  rm -f "$state/tmpdir" "$state/url" "$state/port"
}

# Starts the cluster in $1 on port $2; false if it did not come up.
run_server() {
  "${as_server[@]}" "$bindir/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $2 -k $1 -c fsync=off -c max_connections=300" \
    start >/dev/null
}

halt() {
  local dir
  dir=$(cat "$state/tmpdir")
  "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
}

resume() {
  local dir
  dir=$(cat "$state/tmpdir")
  run_server "$dir" "$(cat "$state/port")" || { cat "$dir/server.log" >&2; exit 1; }
}

free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

start() {
  for tool in initdb pg_ctl; do
    if [ ! -x "$bindir/$tool" ]; then
      echo "pg_fixture: $bindir/$tool not found (apt-get install postgresql)" >&2
      exit 1
    fi
  done
  mkdir -p "$state"
  stop  # a server left over from an interrupted run
  local dir password port
  dir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-pg.XXXXXX")
  echo "$dir" >"$state/tmpdir"
  chmod 700 "$dir"
  if [ ${#as_server[@]} -gt 0 ]; then chown postgres: "$dir"; fi
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
  if [ ${#as_server[@]} -gt 0 ]; then chown postgres: "$dir/pwfile"; fi
  "${as_server[@]}" "$bindir/initdb" -D "$dir/data" -U switchboard --pwfile="$dir/pwfile" \
    --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$dir/pwfile"
  # The port is free when picked; another process may take it before the
  # server binds, so try a few.
  local attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if run_server "$dir" "$port"; then
      echo "$port" >"$state/port"
      printf 'postgresql://switchboard:%s@127.0.0.1:%s/postgres\n' "$password" "$port" \
        >"$state/url.tmp"
      chmod 600 "$state/url.tmp"
      mv "$state/url.tmp" "$state/url"
      echo "pg_fixture: PostgreSQL listening on 127.0.0.1:$port (data in $dir)"
      return 0
    fi
    echo "pg_fixture: start on port $port failed (attempt $attempt)" >&2
  done
  cat "$dir/server.log" >&2 || true
  exit 1
}

case "$action" in
  start) start ;;
  stop) stop ;;
  halt) halt ;;
  resume) resume ;;
  *) echo "pg_fixture: unknown action $action" >&2; exit 2 ;;
esac
