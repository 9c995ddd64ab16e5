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
  # real servers the integration tests start on 127.0.0.1, and the TLS test's certificates
  nginx-light etcd-server openssl
  # the example HTTP server adapter for the idempotency layer, driven over loopback by curl
  libcpp-httplib-dev curl
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
# Server packages (nginx, etcd-server) start a system-wide daemon when installed; keel's tests
# start their own on 127.0.0.1, so forbid service starts during the install (exit 101 is
# policy-rc.d's "action forbidden"; both invoke-rc.d and deb-systemd-invoke honour it and
# succeed), unless the machine already has a policy. The services stay enabled for the next
# boot, as Debian installs them.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  added_policy=1
fi
status=0
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
[[ $added_policy -eq 1 ]] && $sudo rm -f "$policy"
[[ $status -eq 0 ]] || { echo "install-deps: apt-get install failed ($status)" >&2; exit "$status"; }
echo "install-deps: done"
