#!/usr/bin/env bash
# Builds the release preset and runs every benchmark; writes the raw JSON and a markdown
# table of each benchmark beside its peers (with ratios) to build/bench/.
# Arguments are passed to each benchmark binary (e.g. --benchmark_min_time=0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "${KEEL_JOBS:-2}" >/dev/null
out=build/bench
mkdir -p "$out"
for bin in build/release/bench/*_bench; do
  name=$(basename "$bin")
  echo "=== $name" >&2
  "$bin" --benchmark_format=json --benchmark_out="$out/$name.json" \
    --benchmark_out_format=json "$@" >/dev/null
done
python3 scripts/bench_table.py "$out"/*.json >"$out/table.md"
cat "$out/table.md"
