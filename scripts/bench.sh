#!/usr/bin/env bash
# Builds the release preset and runs every benchmark; writes the raw JSON and a markdown
# table of each benchmark beside its peers (with ratios) to build/bench/.
# Arguments are passed to each benchmark binary (e.g. --benchmark_min_time=0.5).
#
# Environment: KEEL_BENCH picks the binaries to build and run, e.g.
#   KEEL_BENCH="leader_bench leader_failover_bench" scripts/bench.sh
# (default: every bench/*_bench); KEEL_JOBS (default 2) is the number of build jobs.
#
# leader_failover_bench starts a real etcd and three examples/leader_node processes on
# 127.0.0.1 and kills the leader ten times (about 40 s); it prints one line per trial and a
# summary to stderr. s3_fetch_bench starts s3rver (npm, under node) and nginx on 127.0.0.1
# (about 20 s); a missing one fails its rows with the fixture's message and the binary exits 1.
# A binary that fails does not stop the others: the table is written with what ran, and the
# script exits 1, naming the binaries that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
jobs=${KEEL_JOBS:-2}
if [[ -n ${KEEL_BENCH:-} ]]; then
  read -r -a names <<<"$KEEL_BENCH"
  cmake --build --preset release -j "$jobs" --target "${names[@]}" >/dev/null
else
  cmake --build --preset release -j "$jobs" >/dev/null
  names=()
  for bin in build/release/bench/*_bench; do names+=("$(basename "$bin")"); done
fi
out=build/bench
mkdir -p "$out"
results=()
failed=()
for name in "${names[@]}"; do
  echo "=== $name" >&2
  rm -f "$out/$name.json"
  "build/release/bench/$name" --benchmark_format=json --benchmark_out="$out/$name.json" \
    --benchmark_out_format=json "$@" >/dev/null || failed+=("$name")
  if [[ -s $out/$name.json ]]; then results+=("$out/$name.json"); fi
done
if [[ ${#results[@]} -gt 0 ]]; then
  python3 scripts/bench_table.py "${results[@]}" >"$out/table.md"
  cat "$out/table.md"
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "bench: failed: ${failed[*]} (see their messages above)" >&2
  exit 1
fi
