#!/usr/bin/env bash
# usage: run.sh BUILD_DIR CONSUMER_SRC SCRATCH_DIR
# Installs the build into SCRATCH_DIR/prefix, then configures, builds and runs the consumer
# against it. Fails loudly at the first step that fails.
set -euo pipefail
build=$1 consumer=$2 scratch=$3
rm -rf "$scratch"
mkdir -p "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >"$scratch/install.log"
cmake -S "$consumer" -B "$scratch/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >"$scratch/configure.log"
cmake --build "$scratch/build" >"$scratch/build.log"
"$scratch/build/keel_consumer"
