#!/usr/bin/env python3
"""The anchor of the queue benchmark: the workloads of queue_bench (ipckit::Queue<T>) on
Python's multiprocessing.Queue (fork start method). Writes JSON
  {"context": {...}, "benchmarks": [{"name", "median", "unit", "values"}]}
Usage: queue_python.py [out.json] [--reps 5] [--items 50000]
Workloads (the C++ side uses the same names):
  tput_1to1_int64, tput_1to1_str100   one producer process, one consumer   items/s
  tput_2to2_int64, tput_2to2_str100   two producers, two consumers          items/s
  rtt_int64    a round trip over two Queues (the child echoes)              us
Items are Python ints and 100-byte str, as the C++ side's int64_t and 100-byte std::string.
"""
import argparse
import json
import multiprocessing as mp
import platform
import statistics
import time


def value(kind, i):
    return i if kind == "int64" else f"{i:08d}".ljust(100, "x")


def producer(q, kind, start, step, n):
    for i in range(start, n, step):
        q.put(value(kind, i))


def consumer(q, count):
    for _ in range(count):
        q.get()


def throughput(kind, producers, consumers, n):
    q = mp.Queue()
    t0 = time.perf_counter()
    procs = [mp.Process(target=producer, args=(q, kind, p, producers, n))
             for p in range(producers)]
    procs += [mp.Process(target=consumer,
                         args=(q, n // consumers + (1 if c < n % consumers else 0)))
              for c in range(consumers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return n / (time.perf_counter() - t0)


def echo(a, b, n):
    for _ in range(n):
        b.put(a.get())


def round_trip(n):
    a, b = mp.Queue(), mp.Queue()
    child = mp.Process(target=echo, args=(a, b, n))
    child.start()
    t0 = time.perf_counter()
    for i in range(n):
        a.put(i)
        b.get()
    us = (time.perf_counter() - t0) * 1e6 / n
    child.join()
    return us


def repeat(name, unit, reps, f):
    values = []
    for i in range(reps):
        values.append(f())
        print(f"  {name:24s} rep {i + 1}: {values[-1]:.4g} {unit}", flush=True)
    return {"name": name, "median": statistics.median(values), "unit": unit, "values": values}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--items", type=int, default=50000)
    a = ap.parse_args()
    mp.set_start_method("fork")
    n = a.items
    results = [
        repeat("tput_1to1_int64", "items/s", a.reps, lambda: throughput("int64", 1, 1, n)),
        repeat("tput_1to1_str100", "items/s", a.reps, lambda: throughput("str100", 1, 1, n)),
        repeat("tput_2to2_int64", "items/s", a.reps, lambda: throughput("int64", 2, 2, n)),
        repeat("tput_2to2_str100", "items/s", a.reps, lambda: throughput("str100", 2, 2, n)),
        repeat("rtt_int64", "us", a.reps, lambda: round_trip(n // 10)),
    ]
    doc = {"context": {"library": "multiprocessing.Queue", "python": platform.python_version(),
                       "items": n, "reps": a.reps},
           "benchmarks": results}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
