#!/usr/bin/env bash
# Installs, from Debian's packages, whatever keel needs to build, test, benchmark and fuzz
# and is not already installed. Idempotent: quiet and fast when everything is there.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config ccache clang libclang-rt-14-dev python3
  # library dependencies
  liburcu-dev libcurl4-openssl-dev zlib1g-dev libabsl-dev libspdlog-dev
  # tests, benchmarks and their peers
  googletest libgtest-dev libgmock-dev libbenchmark-dev libtbb-dev libcuckoo-dev
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
