#!/usr/bin/env python3
"""Reads fluid_bench's Google Benchmark JSON (median aggregates) and the summary.json files of
fluid_cells runs under mpirun (MpiComm), and writes next to the first input (or --out):
  fluid.md   roofline fraction, strong-scaling efficiency, ShmComm beside MpiComm,
             communication share; targets MET / NOT MET
  fluid.png  MLUPS per configuration beside the triad-derived roofline
and prints the markdown. Usage: fluid_report.py [--out DIR] fluid.json [mpi_summary.json ...]
Targets (issue 6): 1 process at 1024^2 >= 50 % of the roofline (bytes per update x measured
triad bandwidth); 2048^2 from 1 to 2 processes >= 90 % parallel efficiency on ShmComm;
ShmComm >= MpiComm in the same run."""
import argparse
import json
import os

BYTES = 144.0  # double, pull: 9 populations read + 9 written per lattice update


def load(path):
    rows = {}
    with open(path) as f:
        data = json.load(f)
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name") or b["name"]
        rows[name.split("/iterations")[0]] = b
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("bench")
    ap.add_argument("mpi", nargs="*")
    a = ap.parse_args()
    out = a.out or os.path.dirname(os.path.abspath(a.bench))
    r = load(a.bench)
    g = lambda k, c: r.get(k, {}).get(c)
    triad1, triad2 = g("BM_triad/procs:1", "gb_per_s"), g("BM_triad/procs:2", "gb_per_s")
    m1024 = g("BM_lbm/n:1024/procs:1", "mlups")
    m1, m2 = g("BM_lbm/n:2048/procs:1", "mlups"), g("BM_lbm/n:2048/procs:2", "mlups")
    share2, share4 = g("BM_lbm/n:1024/procs:2", "comm_share"), g("BM_lbm/n:1024/procs:4", "comm_share")
    mpi = {}
    for p in a.mpi:
        with open(p) as f:
            s = json.load(f)
        mpi[(s["nx"], s["cells"])] = s
    mpi2 = mpi.get((2048, 2), {}).get("mlups")
    rows = []
    frac = m1024 * BYTES / 1e3 / triad1 if m1024 and triad1 else None
    rows.append(("1 process, 1024², double", f"{m1024:.1f} MLUPS = {m1024 * BYTES / 1e3:.1f} GB/s" if m1024 else "n/a",
                 f"triad {triad1:.1f} GB/s (1 process)" if triad1 else "n/a",
                 f"{100 * frac:.0f} % of roofline" if frac else "n/a", "≥ 50 %",
                 "n/a" if frac is None else "**MET**" if frac >= 0.5 else "**NOT MET**"))
    eff = m2 / (2 * m1) if m1 and m2 else None
    rows.append(("2048², 1 → 2 processes (ShmComm)", f"{m1:.1f} → {m2:.1f} MLUPS" if eff else "n/a",
                 f"triad 2 processes {triad2:.1f} GB/s" if triad2 else "n/a",
                 f"{100 * eff:.1f} % efficiency" if eff else "n/a", "≥ 90 %",
                 "n/a" if eff is None else "**MET**" if eff >= 0.9 else "**NOT MET**"))
    rows.append(("2048², 2 ranks: ShmComm vs MpiComm", f"Shm {m2:.1f} MLUPS" if m2 else "n/a",
                 f"MPI {mpi2:.1f} MLUPS" if mpi2 else "n/a",
                 f"{m2 / mpi2:.2f}×" if m2 and mpi2 else "n/a", "Shm ≥ MPI",
                 "n/a" if not (m2 and mpi2) else "**MET**" if m2 >= mpi2 else "**NOT MET**"))
    rows.append(("communication share of a step, 1024²", f"2 cells: {100 * share2:.0f} %" if share2 is not None else "n/a",
                 f"4 cells: {100 * share4:.0f} % (4 ranks on 2 CPUs)" if share4 is not None else "n/a",
                 "–", "reported", "–"))
    md = ["# Fluid cells: the solver beside the machine's memory bandwidth\n",
          f"Library: ipckit {os.environ.get('IPCKIT_BENCH_REVISION', 'unknown')}. `fluid_bench` "
          "(medians of 5 repetitions; Taylor–Green, D2Q9 BGK, double, 50 steps per "
          f"repetition) and `fluid_cells --comm mpi` under mpirun. Roofline: {BYTES:.0f} bytes "
          "per lattice update × the STREAM-like triad bandwidth measured in the same run.\n",
          "| figure | ipckit | anchor | ratio | target | status |", "|---|---|---|---|---|---|"]
    md += ["| " + " | ".join(x) + " |" for x in rows]
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "fluid.md"), "w") as f:
        f.write(text)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        labels, vals = [], []
        for k, lab in (("BM_lbm/n:1024/procs:1", "1024², 1 proc"), ("BM_lbm/n:2048/procs:1", "2048², 1 proc"),
                       ("BM_lbm/n:2048/procs:2", "2048², 2 procs"), ("BM_lbm/n:1024/procs:2", "1024², 2 procs"),
                       ("BM_lbm/n:1024/procs:4", "1024², 4 procs")):
            if g(k, "mlups"):
                labels.append(lab)
                vals.append(g(k, "mlups"))
        if mpi2:
            labels.append("2048², 2 MPI ranks")
            vals.append(mpi2)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.bar(labels, vals, color=["tab:blue"] * (len(vals) - (1 if mpi2 else 0)) + (["tab:orange"] if mpi2 else []))
        if triad1:
            ax.axhline(triad1 * 1e3 / BYTES, color="k", ls="--", label="roofline, 1 process")
        if triad2:
            ax.axhline(triad2 * 1e3 / BYTES, color="gray", ls=":", label="roofline, 2 processes")
        ax.set_ylabel("MLUPS (million lattice updates / s)")
        ax.set_title("fluid_cells D2Q9 (double) beside the triad roofline, same run")
        ax.legend()
        plt.xticks(rotation=20, fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "fluid.png"), dpi=110)
    except ImportError:
        pass
    print(text)


if __name__ == "__main__":
    main()
