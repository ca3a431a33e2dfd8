#!/usr/bin/env bash
# Installs everything switchboard needs to build and test on Debian 12.
# Idempotent: installs only what is missing, and refreshes the package lists
# only when something has to be installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libcurl4-openssl-dev libsqlitecpp-dev libsqlite3-dev libsodium-dev
  rapidjson-dev libcpp-httplib-dev catch2 libbenchmark-dev
)
# The Python bindings (bindings/python, ctest python.pytest) and the embedding
# tests' mock upstream and drivers (tests/embed) use Debian's /usr/bin/python3.
packages+=(python3 python3-dev pybind11-dev python3-pybind11 python3-pytest)
# The openai SDK test (tests/sdk, ctest sdk.openai) runs on node. A machine
# that has node already, from any source, keeps it; else Debian's.
if ! command -v node >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi
# The fuzz targets (tests/fuzz, run by scripts/test.sh) need clang and its
# libFuzzer + sanitizer runtimes.
packages+=(clang libclang-rt-14-dev)
# The dashboard's browser test (tests/browser, ctest browser.dashboard) drives
# Debian's headless Chromium; no browser is ever downloaded.
packages+=(chromium)
# The PostgreSQL store (libpq) and the throwaway server its tests start
# (tests/postgres, ctest postgres.*).
packages+=(libpq-dev postgresql)
# The Redis shared state (hiredis) and the redis-server its tests start on a
# port of their own (tests/redis, ctest redis.*); a Redis the package itself
# may start on 6379 is neither used nor stopped.
packages+=(libhiredis-dev redis-server)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
