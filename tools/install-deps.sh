#!/usr/bin/env bash
# Installs, with apt-get, everything tokenwheel needs to build, test and benchmark, and with
# `npm ci` the pinned AWS SDK for JavaScript of the client tests and the Node example.
# Idempotent: when every package is already installed it touches nothing and exits 0.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  jq                      # the README's CLI walkthrough pipes JSON through it
  clang-format clang-tidy
  clang-14 libfuzzer-14-dev  # the libFuzzer targets of tests/fuzz (make fuzz, make fuzz-smoke)
  librocksdb-dev          # storage engine
  capnproto libcapnp-dev  # RPC schema compiler and runtime
  libboost-dev libboost-system-dev  # Asio / Beast
  nlohmann-json3-dev      # JSON parsing and validation
  libssl-dev              # HMAC-SHA256 for tokens, CSPRNG for task ids
  libcli11-dev            # argument parsing for the server and CLI
  libspdlog-dev           # tokenwheeld's log: levels, text or JSON lines, rotating file
  googletest libgtest-dev libgmock-dev
  libbenchmark-dev
  libjemalloc-dev         # malloc for the server and benchmarks: glibc malloc was ~22% of the RPC thread
  awscli python3-boto3 python3-botocore  # real AWS clients: tests/clients, examples
  prometheus              # a real scraper of /metrics: tests/clients/prometheus_scrape.py
  chromium                # a real browser renders the status page (GET /): tests/clients/status_page_chromium.py
  postgresql libpq-dev    # tokenwheel-bench's peer: PostgreSQL 15 server and its C client
  redis-server libhiredis-dev  # tokenwheel-bench's peer: Redis 7 server and its C client
  gnuplot-nox             # tokenwheel-bench's plots (make bench-peers)
  help2man                # the package's man pages, made from each binary's --help (make deb)
)
# Node for the AWS SDK for JavaScript v3 (tests/clients/js, examples/node). Debian's, unless a
# node and npm are already there (e.g. from NodeSource, whose nodejs conflicts with Debian's npm).
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's prometheus package enables a service listening on every address (:9090). The tests
# start their own on loopback; where systemd runs, the packaged one is stopped and disabled.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] &&
   systemctl is-enabled --quiet prometheus 2>/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# The npm packages, exactly as package-lock.json pins them; again only when node_modules is
# missing or older than the lockfile (npm ci writes node_modules/.package-lock.json).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for dir in tests/clients/js examples/node; do
  if [ ! -f "$root/$dir/node_modules/.package-lock.json" ] ||
     [ "$root/$dir/package-lock.json" -nt "$root/$dir/node_modules/.package-lock.json" ]; then
    echo "install-deps: npm ci in $dir"
    (cd "$root/$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
