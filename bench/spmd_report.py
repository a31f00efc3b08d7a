#!/usr/bin/env python3
"""Reads spmd_bench's JSON lines (ShmComm and MpiComm, 2 and 4 ranks, one run) and writes,
next to the input (or to --out):
  spmd.md   one row per figure and rank count: ShmComm, MpiComm, the ratio, the target and
            MET / NOT MET
  spmd.png  ShmComm beside MpiComm per figure (log scale)
  collectives.md  the OSU-style table: every collective at 8 B, 1 KiB, 64 KiB, 1 MiB, 2 and 4
            ranks, ShmComm beside Open MPI's own calls (the anchor) and MpiComm
and prints the markdown. Usage: spmd_report.py [--out DIR] spmd.jsonl
Targets (issue 18, collectives.md): ShmComm ≤ Open MPI on every row at 2 and 4 ranks.
Targets (issue 5): ping-pong round trip ≤ Open MPI's; barrier and 8-byte allreduce ≤ Open
MPI's; 1 MiB ping-pong bandwidth ≥ 0.9 × Open MPI's. The rest is reported."""
import argparse
import json
import os
import subprocess


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            rows[(r["comm"], r["procs"], r["name"], r["bytes"])] = r
    return rows


def human_bytes(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB" if b >= 1024 else f"{b} B"


def fmt_ns(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def collectives_table(rows):
    """Rows of the OSU table: (cells, met) per collective, size and rank count."""
    keys = sorted({(p, n, b) for (c, p, n, b) in rows if n.startswith("coll_")},
                  key=lambda k: (k[0], k[1], k[2]))
    out = []
    for procs, name, b in keys:
        s, raw, m = (rows.get((c, procs, name, b)) for c in ("shm", "raw", "mpi"))
        sv, rv, mv = (r["median_ns"] if r else None for r in (s, raw, m))
        ok = None if not (sv and rv) else sv <= rv
        out.append([name[5:], str(procs), "–" if name == "coll_barrier" else human_bytes(b),
                    fmt_ns(sv) if sv else "n/a", fmt_ns(rv) if rv else "n/a",
                    fmt_ns(mv) if mv else "n/a", f"{rv / sv:.2f}×" if sv and rv else "n/a",
                    "n/a" if ok is None else "**MET**" if ok else "**NOT MET**"])
    return out


def table(rows):
    out = []
    order = ["pingpong", "barrier", "allreduce", "dup_allreduce", "halo", "split"]
    keys = sorted({(p, n, b) for (c, p, n, b) in rows if not n.startswith("coll_")},
                  key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 9, k[2]))
    for procs, name, b in keys:
        s = rows.get(("shm", procs, name, b))
        m = rows.get(("mpi", procs, name, b))
        label = {"pingpong": f"ping-pong round trip, {human_bytes(b)}",
                 "barrier": "barrier",
                 "allreduce": "allreduce, one double (sum)",
                 "dup_allreduce": "allreduce, one double, on a dup()",
                 "halo": "halo exchange, 2-D periodic, 8 KiB faces",
                 "split": "split() into two halves, made and freed"}[name]
        sv = s["median_ns"] if s else None
        mv = m["median_ns"] if m else None
        ratio = f"{mv / sv:.2f}×" if sv and mv else "n/a"
        target, ok = "reported", None
        if name == "pingpong" and b == 8 or name in ("barrier", "allreduce"):
            target = "ShmComm ≤ Open MPI"
            ok = None if not (sv and mv) else sv <= mv
        cells = [label, str(procs), fmt_ns(sv) if sv else "n/a", fmt_ns(mv) if mv else "n/a",
                 ratio, target]
        if name == "pingpong" and b == 1 << 20:
            sg, mg = (s or {}).get("gb_per_s"), (m or {}).get("gb_per_s")
            cells[2] += f" ({sg:.1f} GB/s)" if sg else ""
            cells[3] += f" ({mg:.1f} GB/s)" if mg else ""
            target = cells[5] = "bandwidth ≥ 0.9 × Open MPI"
            ok = None if not (sg and mg) else sg >= 0.9 * mg
        status = "n/a" if ok is None and target != "reported" else "–" if ok is None else (
            "**MET**" if ok else "**NOT MET**")
        out.append(cells + [status])
    return out


def plot(path, rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("spmd_report.py: matplotlib not found, no plot")
        return
    keys = sorted({(p, n, b) for (c, p, n, b) in rows
                   if not n.startswith("coll_") and c != "raw"})
    labels = [f"{n} {human_bytes(b) if n == 'pingpong' else ''} ({p} ranks)" for p, n, b in keys]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(keys) + 1.5))
    for i, k in enumerate(keys):
        for off, comm, color in ((-0.2, "shm", "tab:blue"), (0.2, "mpi", "tab:orange")):
            r = rows.get((comm,) + k)
            if r:
                ax.barh(i + off, r["median_ns"], 0.4, color=color,
                        label={"shm": "ipckit ShmComm", "mpi": "MpiComm (Open MPI vader)"}[comm]
                        if i == 0 else None)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median time per operation, ns (log scale; lower is better)")
    ax.legend()
    ax.set_title("SPMD communicator: ShmComm vs MpiComm, same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("jsonl")
    a = ap.parse_args()
    out = a.out or os.path.dirname(os.path.abspath(a.jsonl))
    rows = load(a.jsonl)
    rev = os.environ.get("IPCKIT_BENCH_REVISION", "unknown")
    try:
        cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cpus = "?"
    md = [f"# SPMD communicator: ShmComm beside MpiComm\n",
          f"Machine: {cpus} CPUs. Library: ipckit {rev}. `spmd_bench`, median of 5 repetitions; "
          "ShmComm as forked ranks (`--comm shm --procs N`), MpiComm under "
          "`mpirun -np N --mca btl self,vader` (Open MPI's shared-memory transport). With 4 "
          "ranks on 2 CPUs both backends are oversubscribed.\n",
          "| figure | ranks | ipckit ShmComm | MpiComm (Open MPI) | MPI ÷ Shm | target | status |",
          "|---|---|---|---|---|---|---|"]
    for cells in table(rows):
        md.append("| " + " | ".join(cells) + " |")
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "spmd.md"), "w") as f:
        f.write(text)
    plot(os.path.join(out, "spmd.png"), rows)
    print(text)
    coll = collectives_table(rows)
    if coll:
        met = sum(1 for c in coll if c[-1] == "**MET**")
        md = ["# Collectives: ShmComm beside Open MPI (OSU-style)\n",
              f"Machine: {cpus} CPUs. Library: ipckit {rev}. `spmd_bench`, median of 5 "
              "repetitions of a timed loop; the size is each rank's contribution (each block "
              "for the all-to-alls, the vector of doubles for the reductions). Open MPI: its own "
              "blocking calls (`spmd_bench --comm raw`, MPI_COMM_WORLD) under "
              "`mpirun --mca btl self,vader`; MpiComm: the same library through ipckit's "
              "Comm (non-blocking forms + argument agreement). With 4 ranks on 2 CPUs both are "
              "oversubscribed.\n",
              f"ShmComm at or below Open MPI: {met} of {len(coll)} rows.\n",
              "| collective | ranks | size | ipckit ShmComm | Open MPI | MpiComm | "
              "Open MPI ÷ Shm | ShmComm ≤ Open MPI |",
              "|---|---|---|---|---|---|---|---|"]
        md += ["| " + " | ".join(c) + " |" for c in coll]
        text = "\n".join(md) + "\n"
        with open(os.path.join(out, "collectives.md"), "w") as f:
            f.write(text)
        print(text)


if __name__ == "__main__":
    main()
