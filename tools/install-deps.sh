#!/usr/bin/env bash
# Installs, with apt-get, everything tokenwheel needs to build, test and benchmark.
# Idempotent: when every package is already installed it touches nothing and exits 0.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  jq                      # the README's CLI session pipes JSON through it
  clang-format clang-tidy
  librocksdb-dev          # storage engine
  capnproto libcapnp-dev  # RPC schema compiler and runtime
  libboost-dev libboost-system-dev  # Asio / Beast
  nlohmann-json3-dev      # JSON parsing and validation
  libssl-dev              # HMAC-SHA256 for tokens, CSPRNG for task ids
  libcli11-dev            # argument parsing for the server and CLI
  googletest libgtest-dev libgmock-dev
  libbenchmark-dev
  libjemalloc-dev         # malloc for the server and benchmarks: glibc malloc was ~22% of the RPC thread
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
