#!/usr/bin/env python3
"""The anchor of the pool benchmark: the workloads of pool_bench (ipckit::Pool), run on
Python's multiprocessing.Pool(2) with the fork start method. Writes JSON
  {"context": {"python": ..., "processes": 2, "host cpus": N, ...},
   "benchmarks": [{"name": ..., "median": ..., "unit": ..., "values": [one per repetition]}]}
and prints a short summary. pool_report.py sets it beside pool_bench's JSON. Usage:
  pool_python.py [out.json] [--reps 5] [--n-small 20000]
Workloads (the C++ side uses the same names):
  map_chunk1   pool.map(trivial, range(N), chunksize=1)                    us/task
  imap_chunk1  list(pool.imap(trivial, range(N), chunksize=1))             us/task
  apply_async  [pool.apply_async(trivial, (i,)) for i in range(N)], .get() us/task
  map_auto_1M  pool.map(trivial, range(1_000_000)) (default chunksize)     us/task
  start_stop   Pool(2); close(); join() -- mean of 20 per repetition       ms
  start_stop_forkserver  the same with the forkserver context (its server already
               running: started by a warm-up pool before the timing)            ms
  start_stop_spawn       the same with the spawn context, mean of 5             ms
  cpu_seq      100 calls of burn(loops), ~1 ms of pure-Python arithmetic  ms total
  cpu_pool     pool.map(burn, [loops] * 100, chunksize=1)                  ms total
  cpu_speedup  cpu_seq / cpu_pool: median = ratio of the two medians (as pool_report.py
               computes it for ipckit), values = each repetition's ratio    x
  large_arg    pool.apply(len, (100 MB bytes,))                               GB/s
  large_result pool.apply(make_big, (100 MB,)), make_big = b"x" * n          GB/s
  make_100MB   make_big(100 MB) here, without the pool (the task's own cost) GB/s
The pool of the per-task and cpu_pool workloads is made once per repetition, outside the
timed region, and warmed with one small map. About 30 s with the defaults on 2 idle cores.
"""
import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

CPU_TASKS = 100
START_STOP_ITERS = 20
N_LARGE = 1_000_000
BIG = 100_000_000


def trivial(x):
    return x * x


def make_big(n):
    return b"x" * n


def burn(loops):
    s = 0
    for i in range(loops):
        s += i * i % 7
    return s


def calibrate(target_s=1e-3):
    """Loop count for which one burn() call takes about target_s on this interpreter. Timed
    with calls of the size it returns (the cost per loop grows once i * i outgrows one
    CPython digit), from the fastest of several trials: the VM's noise (steal, other work)
    only slows a trial down, so the fastest is the closest to the undisturbed cost."""
    def per_call(loops, calls=10, trials=5):
        best = float("inf")
        for _ in range(trials):
            t0 = time.perf_counter()
            for _ in range(calls):
                burn(loops)
            best = min(best, (time.perf_counter() - t0) / calls)
        return best

    loops = 2000
    for _ in range(3):
        loops = max(1, round(loops * target_s / per_call(loops)))
    return loops


def per_task_us(t0, t1, n):
    return (t1 - t0) / n * 1e6


def one_repetition(ctx, n_small, loops):
    """One value per workload, in the units of the summary."""
    r = {}
    pool = ctx.Pool(2)
    try:
        pool.map(trivial, range(100), chunksize=1)  # warm: both workers forked and fed

        t0 = time.perf_counter()
        pool.map(trivial, range(n_small), chunksize=1)
        r["map_chunk1"] = per_task_us(t0, time.perf_counter(), n_small)

        t0 = time.perf_counter()
        list(pool.imap(trivial, range(n_small), chunksize=1))
        r["imap_chunk1"] = per_task_us(t0, time.perf_counter(), n_small)

        t0 = time.perf_counter()
        rs = [pool.apply_async(trivial, (i,)) for i in range(n_small)]
        [x.get() for x in rs]
        r["apply_async"] = per_task_us(t0, time.perf_counter(), n_small)
        del rs

        t0 = time.perf_counter()
        pool.map(trivial, range(N_LARGE))
        r["map_auto_1M"] = per_task_us(t0, time.perf_counter(), N_LARGE)

        big = b"y" * BIG
        t0 = time.perf_counter()
        n = pool.apply(len, (big,))
        r["large_arg"] = BIG / (time.perf_counter() - t0) / 1e9
        assert n == BIG
        del big

        t0 = time.perf_counter()
        back = pool.apply(make_big, (BIG,))
        r["large_result"] = BIG / (time.perf_counter() - t0) / 1e9
        assert len(back) == BIG
        del back

        t0 = time.perf_counter()
        back = make_big(BIG)
        r["make_100MB"] = BIG / (time.perf_counter() - t0) / 1e9
        del back

        t0 = time.perf_counter()
        for _ in range(CPU_TASKS):
            burn(loops)
        r["cpu_seq"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        pool.map(burn, [loops] * CPU_TASKS, chunksize=1)
        r["cpu_pool"] = (time.perf_counter() - t0) * 1e3
    finally:
        pool.close()
        pool.join()

    r["start_stop"] = start_stop_ms(ctx, START_STOP_ITERS)
    for method, iters in (("forkserver", START_STOP_ITERS), ("spawn", 5)):
        other = multiprocessing.get_context(method)
        start_stop_ms(other, 1)  # warm: forkserver starts its server, which later pools reuse
        r["start_stop_" + method] = start_stop_ms(other, iters)
    return r


def start_stop_ms(ctx, iters):
    """Mean ms of Pool(2) made, closed and joined, over `iters`."""
    t0 = time.perf_counter()
    for _ in range(iters):
        p = ctx.Pool(2)
        p.close()
        p.join()
    return (time.perf_counter() - t0) * 1e3 / iters


UNITS = {"map_chunk1": "us/task", "imap_chunk1": "us/task", "apply_async": "us/task",
         "map_auto_1M": "us/task", "start_stop": "ms", "start_stop_forkserver": "ms",
         "start_stop_spawn": "ms", "cpu_seq": "ms", "cpu_pool": "ms",
         "large_arg": "GB/s", "large_result": "GB/s", "make_100MB": "GB/s"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?",
                    default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         "pool_python.json"))
    ap.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    ap.add_argument("--n-small", type=int, default=20000,
                    help="tasks of map_chunk1, imap_chunk1, apply_async (default 20000)")
    a = ap.parse_args()
    if a.reps < 1 or a.n_small < 1:
        ap.error("--reps and --n-small must be at least 1")

    ctx = multiprocessing.get_context("fork")
    started = time.perf_counter()
    load_start = os.getloadavg()
    loops = calibrate()
    reps = []
    for i in range(a.reps):
        reps.append(one_repetition(ctx, a.n_small, loops))
        print(f"pool_python.py: repetition {i + 1}/{a.reps} done", file=sys.stderr)

    benchmarks = []
    for name, unit in UNITS.items():
        values = [r[name] for r in reps]
        benchmarks.append({"name": name, "median": statistics.median(values), "unit": unit,
                           "values": values})
    seq = statistics.median(r["cpu_seq"] for r in reps)
    par = statistics.median(r["cpu_pool"] for r in reps)
    benchmarks.append({"name": "cpu_speedup", "median": seq / par, "unit": "x",
                       "values": [r["cpu_seq"] / r["cpu_pool"] for r in reps]})

    elapsed = time.perf_counter() - started
    context = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "start method": "fork",
        "processes": 2,
        "host cpus": os.cpu_count(),
        "usable cpus": len(os.sched_getaffinity(0)),
        "repetitions": a.reps,
        "n_small": a.n_small,
        "n_large": N_LARGE,
        "cpu tasks": CPU_TASKS,
        "burn loops": loops,
        "start_stop iterations": START_STOP_ITERS,
        "load avg at start": list(load_start),
        "load avg at end": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed s": elapsed,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"context": context, "benchmarks": benchmarks}, f, indent=2)
        f.write("\n")

    print(f"Python {context['python']} multiprocessing.Pool(2), fork, {context['host cpus']} "
          f"CPUs; median of {a.reps} repetitions (min–max); load average "
          f"{load_start[0]:.2f} at start, {context['load avg at end'][0]:.2f} at end; "
          f"burn({loops}) ≈ 1 ms")
    for b in benchmarks:
        lo, hi = min(b["values"]), max(b["values"])
        print(f"  {b['name']:<12} {b['median']:10.3f} {b['unit']:<8} ({lo:.3f} – {hi:.3f})")
    print(f"  took {elapsed:.1f} s; wrote {a.out}")


if __name__ == "__main__":
    main()
