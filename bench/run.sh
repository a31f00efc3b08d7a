#!/usr/bin/env bash
# Runs every benchmark program with 5 repetitions, writes Google Benchmark JSON to
# bench/results/ and prints the report (medians and ratios to the anchors of the same run).
# Usage: bench/run.sh [build-dir]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
out=bench/results
mkdir -p "$out"
common=(--benchmark_repetitions=5 --benchmark_min_time=0.2 --benchmark_report_aggregates_only=true
        --benchmark_out_format=json)
"$build/bench/sync_bench" "${common[@]}" --benchmark_out="$out/sync.json" >/dev/null
python3 bench/report.py "$out/sync.json" | tee "$out/sync.md"
