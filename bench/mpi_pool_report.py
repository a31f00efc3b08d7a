#!/usr/bin/env python3
"""bench/results/mpi_pool.md from one run of mpi_pool_bench (ipckit::mpi::Pool) and
mpi_pool_python.py (mpi4py.futures.MPIPoolExecutor), both under the same mpirun settings
(bench/run.sh). Usage: mpi_pool_report.py mpi_pool.json mpi_pool_python.json [--mpirun ARGS]
The goal (issue 15): per-task overhead at chunksize 1 at least 20x lower than mpi4py's."""
import json
import os
import sys

GOAL = 20.0
ROWS = [
    ("map_chunk1", "map, chunksize 1, trivial task", True),
    ("submit", "submit per task, then every result", True),
    ("map_auto_1M", "map of 1 M trivial tasks, chunksize n / (4 workers)", False),
]


def load(path):
    with open(path) as f:
        doc = json.load(f)
    return doc["context"], {b["name"]: b for b in doc["benchmarks"]}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    mpirun = "mpirun -np 3 --oversubscribe --mca btl self,vader"
    if "--mpirun" in sys.argv:
        mpirun = sys.argv[sys.argv.index("--mpirun") + 1]
    ours_ctx, ours = load(args[0])
    theirs_ctx, theirs = load(args[1])
    out = os.path.join(os.path.dirname(os.path.abspath(args[0])), "mpi_pool.md")
    revision = os.environ.get("IPCKIT_BENCH_REVISION", "unknown")
    md = ["# ipckit::mpi::Pool beside mpi4py.futures", "",
          f"Both under `{mpirun}` on this machine ({os.cpu_count()} CPUs): rank 0 drives, "
          f"{ours_ctx['workers']} worker ranks run tasks; one after the other in one run of "
          f"`bench/run.sh` (ipckit {revision}). ipckit: `bench/mpi_pool_bench`; anchor: "
          f"`python3 -m mpi4py.futures bench/mpi_pool_python.py` (mpi4py "
          f"{theirs_ctx.get('mpi4py', '?')}, CPython {theirs_ctx.get('python', '?')}). "
          f"Median of {ours_ctx['reps']} repetitions each; N = {ours_ctx['n_small']:,} tasks "
          "for the per-task rows. Ratio: mpi4py ÷ ipckit (how many times lower ipckit's "
          "per-task time is).", "",
          "| workload | ipckit::mpi::Pool | mpi4py.futures | ratio | goal | status |",
          "|---|---|---|---|---|---|"]
    for name, label, goal in ROWS:
        if name not in ours or name not in theirs:
            continue
        a, b = ours[name]["median"], theirs[name]["median"]
        ratio = b / a if a > 0 else float("inf")
        status = ("**MET**" if ratio >= GOAL else "**NOT MET**") if goal else "**INFO**"
        md.append(f"| {label} | {a:.3g} µs/task | {b:.3g} µs/task | {ratio:.1f}× | "
                  f"{'≥ 20× lower than mpi4py' if goal else 'none (figure reported)'} | {status} |")
    md += ["", "Each repetition (µs/task):", ""]
    for name, label, _ in ROWS:
        if name in ours and name in theirs:
            fmt = lambda v: ", ".join(f"{x:.3g}" for x in v)
            md.append(f"- {name}: ipckit {fmt(ours[name]['values'])}; "
                      f"mpi4py {fmt(theirs[name]['values'])}")
    md.append("")
    with open(out, "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
