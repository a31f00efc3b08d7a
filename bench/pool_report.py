#!/usr/bin/env python3
"""Reads pool_bench's Google Benchmark JSON (median aggregates of the repetitions) and
pool_python.py's JSON (the same workloads on Python's multiprocessing.Pool(2), fork), and
writes, next to pool_bench's JSON (or to --out):
  pool.md   one row per workload: ipckit, Python, Python/ipckit, the target, MET / NOT MET
  pool.png  ipckit beside Python per workload, log-scale horizontal bars
and prints the markdown. Usage:
  pool_report.py [--out DIR] pool.json python.json
Each pool_bench benchmark reports its figure as a user counter: `us_per_task` for the
per-task workloads, `ms` for start_stop, cpu_seq, cpu_pool and recovery; the report reads the
counter of the `median` aggregate, never real_time. A benchmark missing from either file
shows as n/a.
"""
import argparse
import json
import os
import sys

# workload -> (display name, unit, pool_bench counter). In the order the table lists them.
WORKLOADS = {
    "map_chunk1": ("map, chunksize=1, trivial task", "µs/task", "us_per_task"),
    "imap_chunk1": ("imap, chunksize=1, trivial task", "µs/task", "us_per_task"),
    "apply_async": ("apply_async per task, then get()", "µs/task", "us_per_task"),
    "map_auto_1M": ("map of 1 M trivial tasks, default chunksize", "µs/task", "us_per_task"),
    "start_stop": ("Pool(2) start, close, join (fork)", "ms", "ms"),
    "start_stop_forkserver": ("Pool(2) start, close, join (forkserver)", "ms", "ms"),
    "cpu_seq": ("100 CPU-bound ~1 ms tasks, sequential", "ms", "ms"),
    "cpu_pool": ("100 CPU-bound ~1 ms tasks, Pool(2).map chunksize=1", "ms", "ms"),
    "cpu_ideal": ("the same 100 tasks on 2 bare forked processes (machine ceiling)", "ms", "ms"),
    "recovery": ("worker killed mid-task: respawn and finish", "ms", "ms"),
}
# 100 MB through the pool (issue 14): counter `gbps`, higher is better. Not in the plot.
LARGE = {
    "memcpy_100MB": "memcpy of 100 MB between buffers already touched (the memory's speed)",
    "copy_100MB": "copy-construct a 100 MB vector (copy + first-touch faults of fresh memory)",
    "make_100MB": "the result task alone, no pool (vector<char>(n, 'x') / b'x' * n)",
    "large_arg": "apply(f, 100 MB vector<char> / bytes), f returns its size",
    "large_result": "apply(make, 100 MB): a 100 MB vector<char> / bytes result",
}
LARGE_MEMCPY_FRACTION = 1 / 3   # large_arg, large_result: ≥ 1/3 of memcpy in the same run ...
LARGE_MIN_RATIO = 20.0          # ... and ≥ 20 × Python
PER_TASK_MAX_US = 2.0        # map_chunk1, imap_chunk1, apply_async: ≤ 2 µs/task ...
PER_TASK_MIN_RATIO = 15.0    # ... and ≥ 15 × lower than Python
MAP_AUTO_MAX_US = 0.05       # map_auto_1M
START_STOP_MAX_MS = 2.0      # start_stop
SPEEDUP_MIN = 1.9            # cpu_seq / cpu_pool
PYTHON_RECOVERY = "hangs (Python Pool never returns)"


def workload_of(b):
    """'BM_map_chunk1/iterations:1/real_time' (run_name) or 'BM_map_chunk1_median' (name)
    -> 'map_chunk1'."""
    name = b.get("run_name")
    if not name:
        name = b.get("name", "")
        agg = b.get("aggregate_name")
        if agg and name.endswith("_" + agg):
            name = name[:-len(agg) - 1]
    name = name.split("/")[0]
    return name[3:] if name.startswith("BM_") else name


def load_ipckit(path):
    """{workload: counter value of the median aggregate}, the context, and {workload: error}."""
    with open(path) as f:
        data = json.load(f)
    values, errors = {}, {}
    for b in data.get("benchmarks", []):
        w = workload_of(b)
        if b.get("error_occurred"):
            errors[w] = b.get("error_message", "error")
            continue
        if b.get("run_type") != "aggregate" or b.get("aggregate_name") != "median":
            continue
        counter = "gbps" if w in LARGE else WORKLOADS.get(w, (None, None, None))[2]
        if counter and isinstance(b.get(counter), (int, float)):
            values[w] = float(b[counter])
    return values, data.get("context", {}), errors


def load_python(path):
    if not path or not os.path.exists(path):
        return {}, {}, {}
    with open(path) as f:
        data = json.load(f)
    medians = {b["name"]: float(b["median"]) for b in data.get("benchmarks", [])
               if isinstance(b.get("median"), (int, float))}
    spread = {b["name"]: (min(b["values"]), max(b["values"]))
              for b in data.get("benchmarks", []) if b.get("values")}
    return medians, data.get("context", {}), spread


def speedup(v):
    seq, par = v.get("cpu_seq"), v.get("cpu_pool")
    return seq / par if seq and par else None


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "×":
        return f"{v:.2f}×"
    digits = 3 if v < 0.1 else 2 if v < 100 else 1
    return f"{v:.{digits}f} {unit}"


def status(ok):
    return "n/a" if ok is None else "MET" if ok else "NOT MET"


def rows(ip, py):
    """(workload, ipckit, Python, ratio, target, status) for the table."""
    out = []

    def ratio(w):
        a, b = ip.get(w), py.get(w)
        return f"{b / a:.1f}×" if a and b is not None else "n/a"

    for w in ("map_chunk1", "imap_chunk1", "apply_async"):
        a, b = ip.get(w), py.get(w)
        if a is None:
            ok = None
        elif a > PER_TASK_MAX_US:
            ok = False
        elif b is None:
            ok = None                     # ≤ 2 µs holds, the ratio cannot be checked
        else:
            ok = b / a >= PER_TASK_MIN_RATIO if a > 0 else True
        out.append((WORKLOADS[w][0], fmt(a, "µs/task"), fmt(b, "µs/task"), ratio(w),
                    f"≤ {PER_TASK_MAX_US:g} µs/task and ≥ {PER_TASK_MIN_RATIO:g}× lower than "
                    "Python", status(ok)))
    w = "map_auto_1M"
    a = ip.get(w)
    out.append((WORKLOADS[w][0], fmt(a, "µs/task"), fmt(py.get(w), "µs/task"), ratio(w),
                f"≤ {MAP_AUTO_MAX_US:g} µs/task", status(None if a is None
                                                         else a <= MAP_AUTO_MAX_US)))
    w = "start_stop"
    a = ip.get(w)
    out.append((WORKLOADS[w][0], fmt(a, "ms"), fmt(py.get(w), "ms"), ratio(w),
                f"≤ {START_STOP_MAX_MS:g} ms", status(None if a is None
                                                      else a <= START_STOP_MAX_MS)))
    for w in ("cpu_seq", "cpu_pool"):
        # Each side calibrates its own ~1 ms task: the times are not a like-for-like ratio.
        out.append((WORKLOADS[w][0], fmt(ip.get(w), "ms"), fmt(py.get(w), "ms"), "–",
                    "– (see speedup)", "–"))
    s_ip = speedup(ip)
    s_py = speedup(py) if speedup(py) is not None else py.get("cpu_speedup")
    out.append(("CPU-bound speedup, sequential ÷ pool", fmt(s_ip, "×"), fmt(s_py, "×"),
                f"ipckit {fmt(s_ip, '×')} vs Python {fmt(s_py, '×')}",
                f"ipckit ≥ {SPEEDUP_MIN:g}×", status(None if s_ip is None
                                                     else s_ip >= SPEEDUP_MIN)))
    seq, ideal = ip.get("cpu_seq"), ip.get("cpu_ideal")
    s_ideal = seq / ideal if seq and ideal else None
    out.append(("CPU-bound speedup, sequential ÷ 2 bare processes (no pool: the ceiling)",
                fmt(s_ideal, "×"), "–", "–", "anchor", "INFO" if s_ideal else "n/a"))
    w = "recovery"
    out.append((WORKLOADS[w][0], fmt(ip.get(w), "ms"), PYTHON_RECOVERY, "–",
                "none (figure reported)", "INFO" if ip.get(w) is not None else "n/a"))
    return out


def start_rows(ip, py):
    """(start method, ipckit, Python, ratio, note) for the start-method table (issue 15)."""
    def ms(v):
        return fmt(v, "ms")

    def ratio(a, b):
        return f"{b / a:.1f}×" if a and b is not None else "n/a"

    a, b = ip.get("start_stop"), py.get("start_stop")
    out = [("fork", ms(a), ms(b), ratio(a, b),
            "ipckit: forked from the driver thread; unsafe when other threads hold locks")]
    a, b = ip.get("start_stop_forkserver"), py.get("start_stop_forkserver")
    out.append(("forkserver (ipckit's default)", ms(a), ms(b), ratio(a, b),
                "ipckit: one exec of the program per pool, then forks; Python: its server "
                "already running (started once per interpreter)"))
    out.append(("spawn", "– (forkserver is ipckit's exec'd method)", ms(py.get("start_stop_spawn")),
                "–", "Python: a fresh interpreter per worker"))
    return out


def transport(total_gbps, task_gbps):
    """GB/s of the pool's own part of a call: 100 MB / (call time - the task's own time)."""
    if not total_gbps or not task_gbps or 1 / total_gbps <= 1 / task_gbps:
        return None
    return 1 / (1 / total_gbps - 1 / task_gbps)


def large_rows(ip, py):
    """(what, ipckit, Python, ratio, target, status) for the 100 MB table."""
    out = []
    mem = ip.get("memcpy_100MB")
    goal = mem * LARGE_MEMCPY_FRACTION if mem else None

    def gb(v):
        return "n/a" if v is None else f"{v:.2f} GB/s"

    for w in ("memcpy_100MB", "copy_100MB", "make_100MB"):
        out.append((LARGE[w], gb(ip.get(w)), gb(py.get(w)) if w == "make_100MB" else "–", "–",
                    "anchor", "INFO" if ip.get(w) else "n/a"))
    for w in ("large_arg", "large_result"):
        a, b = ip.get(w), py.get(w)
        ok = None if a is None or goal is None else (
            a >= goal and (b is None or a / b >= LARGE_MIN_RATIO))
        out.append((LARGE[w], gb(a), gb(b), f"{a / b:.1f}×" if a and b else "n/a",
                    f"≥ 1/3 of memcpy ({gb(goal)}) and ≥ {LARGE_MIN_RATIO:g}× Python",
                    status(ok)))
    t_ip = transport(ip.get("large_result"), ip.get("make_100MB"))
    t_py = transport(py.get("large_result"), py.get("make_100MB"))
    out.append(("large_result less the task's own time: the pool's part", gb(t_ip), gb(t_py),
                f"{t_ip / t_py:.1f}×" if t_ip and t_py else "n/a",
                f"≥ 1/3 of memcpy ({gb(goal)})",
                status(None if t_ip is None or goal is None else t_ip >= goal)))
    return out


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def nproc():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def markdown(ip, ip_ctx, errors, py, py_ctx, spread, table, large=(), starts=()):
    out = []
    p = out.append
    p("# ipckit process pool benchmarks\n")
    load = ", ".join(f"{x:.2f}" for x in ip_ctx.get("load_avg", []))
    p(f"Machine: {nproc()} CPUs (nproc), {cpu_model()}"
      + (f", {ip_ctx['mhz_per_cpu']} MHz" if ip_ctx.get("mhz_per_cpu") else "")
      + (f"; load average at the start of pool_bench {load}" if load else "")
      + (f"; pool_bench run {ip_ctx['date']}" if ip_ctx.get("date") else "") + ". "
      + (f"Library: ipckit {os.environ['IPCKIT_BENCH_REVISION']}. "
         if os.environ.get("IPCKIT_BENCH_REVISION") else "")
      + "ipckit: `pool_bench`, median of its Google Benchmark repetitions. "
      + (f"Python: {py_ctx.get('implementation', 'CPython')} {py_ctx.get('python', '?')} "
         f"`multiprocessing.Pool({py_ctx.get('processes', 2)})`, fork start method, median of "
         f"{py_ctx.get('repetitions', '?')} repetitions of `bench/pool_python.py`"
         + (f" (burn({py_ctx['burn loops']}) ≈ 1 ms)" if py_ctx.get("burn loops") else "")
         + "." if py_ctx else "Python: not measured (no pool_python.py JSON).") + "\n")
    busy = []
    ncpu = nproc() or 1
    if ip_ctx.get("load_avg") and ip_ctx["load_avg"][0] > 0.5:
        busy.append(f"pool_bench started at load average {ip_ctx['load_avg'][0]:.2f}")
    py_load = py_ctx.get("load avg at start")
    if py_load and py_load[0] > 0.5:
        busy.append(f"pool_python.py started at load average {py_load[0]:.2f}")
    if busy:
        p(f"**Warning: other work may have shared the {ncpu} CPUs** ({'; '.join(busy)}). The "
          "CPU-bound speedup and the per-task figures need both cores; rerun on a quiet "
          "machine.\n")
    p("Ratio: Python ÷ ipckit (how many times ipckit is faster); for the CPU-bound speedup, "
      "the two speedups side by side. The CPU-bound task is ~1 ms of arithmetic, calibrated "
      "by each side for its own language, so the sequential and pool times are not compared "
      "directly; the speedups are.\n")
    p("| workload | ipckit | Python multiprocessing | ratio | target | status |")
    p("|---|---|---|---|---|---|")
    for r in table:
        p("| " + " | ".join(r[:5]) + (" | – |" if r[5] == "–" else f" | **{r[5]}** |"))
    p("")
    if large:
        p("## 100 MB arguments and results\n")
        p("Bandwidth: 100 MB ÷ the median time of one call (higher is better); ratio: ipckit ÷ "
          "Python. The anchors come from the same pool_bench run. A fresh 100 MB vector costs "
          "first-touch page faults on this VM (copy_100MB against memcpy_100MB), which every "
          "call that returns one pays; the pool asks for transparent huge pages on the large "
          "buffers it allocates itself.\n")
        p("| what | ipckit | Python multiprocessing | ratio | target | status |")
        p("|---|---|---|---|---|---|")
        for r in large:
            p("| " + " | ".join(r[:5]) + f" | **{r[5]}** |")
        p("")
    if starts:
        p("## Start methods: Pool(2) start, close, join\n")
        p("Mean time of one Pool(2) made, closed and joined, per start method, both sides in "
          "the same run (ratio: Python ÷ ipckit); pool_bench measures them first, before its "
          "process grows (fork's cost grows with the caller's memory). ipckit's default is "
          "forkserver: safe when other threads hold locks (docs/pool.md).\n")
        p("| start method | ipckit | Python multiprocessing | ratio | note |")
        p("|---|---|---|---|---|")
        for r in starts:
            p("| " + " | ".join(r) + " |")
        p("")
    if errors:
        p("pool_bench reported errors: " + "; ".join(f"`{w}`: {e}" for w, e in
                                                     sorted(errors.items())) + "\n")
    if spread:
        p("Python spread over its repetitions (min – max): "
          + "; ".join(f"{w} {lo:.3g} – {hi:.3g}" for w, (lo, hi) in spread.items()) + ".\n")
    p("Plot: `pool.png`.")
    return "\n".join(out) + "\n"


def plot(path, ip, py):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print("pool_report.py: matplotlib not found, no plot (apt-get install "
              "python3-matplotlib)", file=sys.stderr)
        return
    names = list(WORKLOADS)
    labels = [f"{WORKLOADS[w][0]}\n({w}, {WORKLOADS[w][1]})" for w in names]
    present = [v for v in list(ip.values()) + [py.get(w) for w in names]
               if v is not None and v > 0]
    if not present:
        print("pool_report.py: nothing to plot", file=sys.stderr)
        return
    lo, hi = min(present), max(present)
    fig, ax = plt.subplots(figsize=(11, 7.5))
    h = 0.38
    for i, w in enumerate(names):
        for off, who, data, color in ((-h / 2, "ipckit", ip, "tab:blue"),
                                       (h / 2, "Python", py, "tab:orange")):
            y = i + off
            v = data.get(w)
            if v is not None and v > 0:
                ax.barh(y, v, height=h, color=color)
                ax.text(v * 1.08, y, f"{v:.3g}", va="center", fontsize=8)
            else:
                text = ("hangs (never returns)" if who == "Python" and w == "recovery"
                        else "n/a")
                ax.text(lo / 1.5, y, f"{who}: {text}", va="center", fontsize=8,
                        color=color)
    s_ip, s_py = speedup(ip), speedup(py) or py.get("cpu_speedup")
    ax.set_xscale("log")
    ax.set_xlim(lo / 3, hi * 4)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time, log scale (unit per row; lower is better)")
    ax.set_title("Process pool: ipckit::Pool vs Python multiprocessing.Pool(2)\n"
                 f"CPU-bound speedup: ipckit {fmt(s_ip, '×')}, Python {fmt(s_py, '×')} "
                 f"(target ipckit ≥ {SPEEDUP_MIN:g}×)", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(handles=[Patch(color="tab:blue", label="ipckit::Pool"),
                       Patch(color="tab:orange", label="Python multiprocessing.Pool")],
              loc="upper right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pool_json")
    ap.add_argument("python_json")
    ap.add_argument("--out", help="output folder (default: that of pool_json)")
    a = ap.parse_args()
    outdir = a.out or os.path.dirname(os.path.abspath(a.pool_json))
    os.makedirs(outdir, exist_ok=True)
    ip, ip_ctx, errors = load_ipckit(a.pool_json)
    py, py_ctx, spread = load_python(a.python_json)
    if not py_ctx:
        print(f"pool_report.py: {a.python_json} not found, Python shows as n/a",
              file=sys.stderr)
    md = markdown(ip, ip_ctx, errors, py, py_ctx, spread, rows(ip, py), large_rows(ip, py),
                  start_rows(ip, py))
    with open(os.path.join(outdir, "pool.md"), "w") as f:
        f.write(md)
    plot(os.path.join(outdir, "pool.png"), ip, py)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
