#!/usr/bin/env bash
# Installs, from Debian's packages, whatever keel needs to build, test, benchmark and fuzz
# and is not already installed, then s3rver from npm (the S3 fixture's server; Debian has no
# package). Idempotent: quiet and fast when everything is there.
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
# The S3 fixture runs s3rver under node. Any node and npm on the PATH will do (NodeSource's
# nodejs, say, which bundles npm and conflicts with Debian's npm); Debian's otherwise.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

install_apt_packages() {
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
  installed=1
}

installed=0
# Sets $sudo for a command that needs root: "" when running as root, "sudo" otherwise.
sudo=""
need_root() {
  [[ $(id -u) -eq 0 ]] && return 0
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to $1" >&2; exit 1; }
  sudo="sudo"
}

if [[ ${#missing[@]} -gt 0 ]]; then
  need_root "install: ${missing[*]}"
  install_apt_packages
fi

# s3rver for the S3 fixture (tests/support/s3rver.h), pinned: the fixture's launcher is written
# for this release. npm installs it into its global prefix, as root only when that is not
# writable (a per-user prefix, such as nvm's, needs no root).
s3rver_version=3.7.1
if ! npm ls -g --depth=0 "s3rver@$s3rver_version" 2>/dev/null | grep -q "s3rver@$s3rver_version"; then
  sudo=""
  global_root=$(npm root -g 2>/dev/null)
  writable=$global_root
  [[ -d $writable ]] || writable=$(dirname "$writable")
  [[ -w $writable ]] || need_root "npm install -g s3rver@$s3rver_version into $global_root"
  echo "install-deps: installing s3rver@$s3rver_version (npm)"
  status=0
  $sudo npm install -g --no-audit --no-fund --loglevel=error "s3rver@$s3rver_version" >/dev/null ||
    status=$?
  [[ $status -eq 0 ]] || {
    echo "install-deps: npm install -g s3rver@$s3rver_version failed ($status)" >&2
    exit "$status"
  }
  installed=1
fi
[[ $installed -eq 0 ]] || echo "install-deps: done"
