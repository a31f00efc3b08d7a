#!/usr/bin/env bash
# Runs every benchmark program with 5 repetitions, writes Google Benchmark JSON to
# bench/results/ and prints the reports (medians and ratios to the anchors of the same run):
#   sync_bench     -> sync.json, sync.md
#   channel_bench  -> channels.json;  mpi_pingpong (under mpirun, if present) -> mpi.json;
#   channels_report.py -> channels.md, channels_summary.csv, channels_*.png
#   pool_bench -> pool.json; pool_python.py (Python's multiprocessing.Pool, same workloads)
#   -> pool_python.json; pool_report.py -> pool.md, pool.png
#   queue_bench and queue_python.py (multiprocessing.Queue) -> queue.json, queue_python.json;
#   queue_report.py -> queue.md
#   mpi_pool_bench and mpi_pool_python.py (mpi4py.futures), both under mpirun -np 3
#   -> mpi_pool.json, mpi_pool_python.json; mpi_pool_report.py -> mpi_pool.md
# Usage: bench/run.sh [build-dir]   (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
out=bench/results
mkdir -p "$out"
common=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true
        --benchmark_out_format=json)
"$build/bench/sync_bench" "${common[@]}" --benchmark_min_time=0.2 \
  --benchmark_out="$out/sync.json" >/dev/null
python3 bench/report.py "$out/sync.json" | tee "$out/sync.md"

# Repetitions are interleaved at random: this VM's core-to-core cost drifts during a run (the
# host moves the vCPUs), and interleaving spreads that drift over every benchmark alike.
echo "run.sh: channel_bench (about 4 minutes; console output in $build/bench/channel_bench.log)"
"$build/bench/channel_bench" "${common[@]}" --benchmark_min_time=0.2 \
  --benchmark_enable_random_interleaving=true \
  --benchmark_out="$out/channels.json" >"$build/bench/channel_bench.log"

# The MPI anchor. Open MPI leaves its shared-memory segments in /dev/shm when a rank dies:
# remove the ones this run made, and only those.
mpi_segments() { (cd /dev/shm && ls -d vader_segment.* sm_segment.* 2>/dev/null) || true; }
if ! command -v mpirun >/dev/null 2>&1; then
  echo "run.sh: mpirun not found, skipping the MPI anchor (scripts/install-deps installs it)" >&2
  rm -f "$out/mpi.json"
elif [[ ! -x "$build/bench/mpi_pingpong" ]]; then
  echo "run.sh: $build/bench/mpi_pingpong not built (no MPI found by CMake), skipping it" >&2
  rm -f "$out/mpi.json"
else
  before=$(mpi_segments)
  cleanup_mpi() {
    local s
    for s in $(mpi_segments); do
      grep -qxF "$s" <<<"$before" || rm -f "/dev/shm/$s"
    done
  }
  trap cleanup_mpi EXIT
  if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  echo "run.sh: mpi_pingpong under mpirun -np 2"
  mpirun -np 2 --oversubscribe --bind-to core --mca btl self,vader \
    "$build/bench/mpi_pingpong" "$out/mpi.json" >"$build/bench/mpi_pingpong.log"
  cleanup_mpi
fi

# Debian's matplotlib lives with the system interpreter; prefer it when `python3` lacks it.
py=python3
if ! python3 -c 'import matplotlib' 2>/dev/null && [[ -x /usr/bin/python3 ]]; then
  py=/usr/bin/python3
fi
# Which library the figures belong to (the tree may hold uncommitted library changes).
IPCKIT_BENCH_REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- include lib 2>/dev/null; then
  IPCKIT_BENCH_REVISION+=" + uncommitted changes in include/ or lib/"
fi
export IPCKIT_BENCH_REVISION
"$py" bench/channels_report.py "$out/channels.json" "$out/mpi.json"

# The pool beside Python's multiprocessing.Pool(2) on the same workloads (about 1.5 minutes).
echo "run.sh: pool_bench and pool_python.py"
"$build/bench/pool_bench" "${common[@]}" --benchmark_min_time=0.2 \
  --benchmark_out="$out/pool.json" >"$build/bench/pool_bench.log" 2>&1
python3 bench/pool_python.py "$out/pool_python.json" >"$build/bench/pool_python.log"
"$py" bench/pool_report.py "$out/pool.json" "$out/pool_python.json"

# Queue<T> beside Python's multiprocessing.Queue, Boost message_queue and Channel<T> (about
# 1 minute).
echo "run.sh: queue_bench and queue_python.py"
"$build/bench/queue_bench" "$out/queue.json" >"$build/bench/queue_bench.log" 2>&1
python3 bench/queue_python.py "$out/queue_python.json" >"$build/bench/queue_python.log" 2>&1
python3 bench/queue_report.py "$out/queue.json" "$out/queue_python.json"

# The SPMD communicator: ShmComm (forked ranks) beside MpiComm under mpirun (Open MPI's
# vader), 2 and 4 ranks, in one run (about 30 seconds).
echo "run.sh: spmd_bench (ShmComm, and MpiComm under mpirun)"
rm -f "$out/spmd.jsonl"
for n in 2 4; do
  "$build/bench/spmd_bench" --comm shm --procs "$n" --out "$out/spmd.jsonl"
done
if command -v mpirun >/dev/null 2>&1 && "$build/bench/spmd_bench" --comm mpi --probe 2>/dev/null; then
  before=$(mpi_segments)
  if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  for n in 2 4; do
    for comm in mpi raw; do  # MpiComm, then Open MPI's own calls (the collectives' anchor)
      mpirun -np "$n" --oversubscribe --mca btl self,vader \
        "$build/bench/spmd_bench" --comm "$comm" --out "$out/spmd.jsonl" >>"$build/bench/spmd_mpi.log"
    done
  done
  for s in $(mpi_segments); do grep -qxF "$s" <<<"$before" || rm -f "/dev/shm/$s"; done
else
  echo "run.sh: spmd_bench has no MPI backend (MPI not found), ShmComm only" >&2
fi
"$py" bench/spmd_report.py "$out/spmd.jsonl"

# mpi::Pool beside mpi4py.futures' MPIPoolExecutor, same mpirun settings (about 1 minute).
# Debian's mpi4py lives with the system interpreter.
mpipy=python3
if ! python3 -c 'import mpi4py' 2>/dev/null && [[ -x /usr/bin/python3 ]]; then
  mpipy=/usr/bin/python3
fi
if command -v mpirun >/dev/null 2>&1 && [[ -x "$build/bench/mpi_pool_bench" ]] &&
   "$mpipy" -c 'import mpi4py.futures' 2>/dev/null; then
  echo "run.sh: mpi_pool_bench and mpi_pool_python.py under mpirun -np 3"
  if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  before=$(mpi_segments)
  mpirun_pool=(mpirun -np 3 --oversubscribe --mca btl self,vader)
  "${mpirun_pool[@]}" "$build/bench/mpi_pool_bench" "$out/mpi_pool.json" \
    >"$build/bench/mpi_pool_bench.log" 2>&1
  "${mpirun_pool[@]}" "$mpipy" -m mpi4py.futures bench/mpi_pool_python.py \
    "$out/mpi_pool_python.json" >"$build/bench/mpi_pool_python.log" 2>&1
  for s in $(mpi_segments); do grep -qxF "$s" <<<"$before" || rm -f "/dev/shm/$s"; done
  python3 bench/mpi_pool_report.py "$out/mpi_pool.json" "$out/mpi_pool_python.json" \
    --mpirun "${mpirun_pool[*]}"
else
  echo "run.sh: no mpirun, mpi_pool_bench or mpi4py: skipping the MPI pool" >&2
fi

# The fluid-cell solver beside the triad roofline (fluid_bench), and the MpiComm run of the
# same 2048^2 case (fluid_cells under mpirun), about 1 minute.
fluid_dir="$build/examples/fluid_cells"
if [[ -x "$fluid_dir/fluid_bench" ]]; then
  echo "run.sh: fluid_bench and fluid_cells under mpirun"
  "$fluid_dir/fluid_bench" "${common[@]}" --benchmark_out="$out/fluid.json" >"$build/bench/fluid_bench.log" 2>&1
  mpi_fluid=()
  if command -v mpirun >/dev/null 2>&1; then
    mpirun -np 2 --bind-to core --mca btl self,vader "$fluid_dir/fluid_cells" --comm mpi \
      --case taylor-green --re 1000 --nx 2048 --ny 2048 --steps 50 --out "$build/bench/fluid_mpi" \
      >>"$build/bench/fluid_mpi.log" 2>&1 && mpi_fluid=("$build/bench/fluid_mpi/summary.json")
  fi
  "$py" bench/fluid_report.py "$out/fluid.json" "${mpi_fluid[@]}"
fi
