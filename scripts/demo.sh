#!/usr/bin/env bash
# Installs missing dependencies, builds the release preset, and runs keel-demo, the main job
# on embedded defaults. Arguments are passed to keel-demo (e.g. --seconds=5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target keel-demo -j "${KEEL_JOBS:-2}" >/dev/null
exec build/release/examples/keel-demo "$@"
