#!/usr/bin/env bash
# Past two cores: the fluid solver's strong and weak scaling beside the triad roofline, and the long
# chaos and soak runs on every CPU of a bigger machine. Used for the README's many-core rows
# (measured on a 16-CPU machine lent for it); needs only the three programs, so a Release
# build of another machine's can be copied over:
#   cmake -S . -B build/device -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPCKIT_LBM_ARCH=x86-64-v3
#   cmake --build build/device --target fluid_bench ipckit_chaos ipckit_soak
#   bench/scaling.sh DIR_WITH_THE_PROGRAMS OUT_DIR [CHAOS_ITERATIONS] [SOAK_SECONDS] [REPS]
set -uo pipefail
bin=${1:?programs folder}
out=${2:?output folder}
iterations=${3:-3000}
soak=${4:-60}
reps=${5:-1}
mkdir -p "$out"
# The library revision goes into fluid_scaling.json's context (docs_report.py prints it).
if [[ -z "${IPCKIT_BENCH_REVISION:-}" ]]; then
  IPCKIT_BENCH_REVISION=$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
export IPCKIT_BENCH_REVISION
echo "scaling: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" | tee "$out/machine.txt"
free -g | head -2 >> "$out/machine.txt"
"$bin/fluid_bench" --scaling --benchmark_repetitions="$reps" --benchmark_out="$out/fluid_scaling.json" \
  --benchmark_out_format=json | tail -n 20
"$bin/ipckit_chaos" --iterations "$iterations" --json "$out/chaos.json" 2>&1 | tail -n 16 | tee "$out/chaos.txt"
"$bin/ipckit_soak" --seconds "$soak" --json "$out/soak.json" 2>&1 | tail -n 6 | tee "$out/soak.txt"
