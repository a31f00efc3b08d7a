#!/usr/bin/env bash
# Builds the fuzz preset and runs every fuzz target for SECONDS each (default 300), one after
# another, each into build/fuzz/corpus-<target> (seeded from fuzz/corpus/<target>, which is
# only read). Prints a summary line per target and exits non-zero if any found a crash,
# leak, timeout or out-of-memory input (left in build/fuzz/artifacts/<date>/). The figures
# also go to build/fuzz/summary.json.
#   fuzz/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
targets=(fuzz_pipe_frame fuzz_byte_ring fuzz_codec fuzz_pool_wire fuzz_spmd_header
         fuzz_shared_objects fuzz_fragment fuzz_link_frame)

cmake --preset fuzz >/dev/null
cmake --build build/fuzz -j2 --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
artifacts="build/fuzz/artifacts/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$artifacts"
failed=0
summary=()
json=()
for t in "${targets[@]}"; do
  corpus="build/fuzz/corpus-$t"
  log="build/fuzz/$t.log"
  mkdir -p "$corpus"
  rc=0
  "build/fuzz/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
    "$corpus" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  # libFuzzer's final stats: "stat::number_of_executed_units: N", "stat::average_exec_per_sec: N"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  files=$(find "$corpus" -type f | wc -l)
  crashes=$(find "$artifacts" -maxdepth 1 -type f -name "$t-*" | wc -l)
  status=ok
  if [[ $rc -ne 0 ]]; then
    status="FAILED (exit $rc, see $log)"
    failed=1
  fi
  summary+=("$(printf '%-18s %5ss  execs %-10s exec/s %-7s corpus %-5s crashes %-3s %s' \
    "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$files" "$crashes" "$status")")
  echo "${summary[-1]}"
  json+=("$(printf '{"target": "%s", "seconds": %s, "executions": %s, "exec_per_s": %s, "corpus": %s, "crashes": %s, "ok": %s}' \
    "$t" "$seconds" "${execs:-0}" "${rate:-0}" "$files" "$crashes" "$([[ $rc -eq 0 ]] && echo true || echo false)")")
done
# For bench/robustness_report.py (the README's Robustness table).
{ echo "["; (IFS=$'\n'; echo "${json[*]}" | sed '$!s/$/,/'); echo "]"; } > build/fuzz/summary.json
echo
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
exit $failed
