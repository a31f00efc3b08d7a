#!/usr/bin/env python3
"""The anchor of the MPI pool benchmark: the workloads of mpi_pool_bench (ipckit::mpi::Pool)
on mpi4py.futures' MPIPoolExecutor, under the same mpirun settings (bench/run.sh):
  mpirun -np 3 ... python3 -m mpi4py.futures bench/mpi_pool_python.py out.json
Rank 0 runs this script; the other ranks are the executor's workers. Writes JSON
  {"context": {...}, "benchmarks": [{"name", "median", "unit", "values"}]}
and prints each repetition. Usage: mpi_pool_python.py [out.json] [--reps 5] [--n-small 20000]
Workloads (the C++ side uses the same names):
  map_chunk1   list(executor.map(trivial, range(N), chunksize=1))                 us/task
  submit       [executor.submit(trivial, i) for i in range(N)], then .result()    us/task
  map_auto_1M  list(executor.map(trivial, range(1_000_000), chunksize=c)), c the C++ pool's
               rule: ceil(n / (4 * workers))                                       us/task
The executor is made once and warmed with one small map, outside the timed regions.
"""
import argparse
import json
import math
import platform
import statistics
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

N_LARGE = 1_000_000


def trivial(x):
    return x * x


def per_task(name, reps, n, run):
    values = []
    for i in range(reps):
        t0 = time.perf_counter()
        run()
        values.append((time.perf_counter() - t0) * 1e6 / n)
        print(f"  {name:12s} rep {i + 1}: {values[-1]:.3f} us/task", flush=True)
    return {"name": name, "median": statistics.median(values), "unit": "us/task",
            "values": values}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n-small", type=int, default=20000)
    a = ap.parse_args()
    workers = MPI.COMM_WORLD.Get_size() - 1
    with MPIPoolExecutor() as ex:
        list(ex.map(trivial, range(1000), chunksize=100))  # warm up every worker
        results = [
            per_task("map_chunk1", a.reps, a.n_small,
                     lambda: list(ex.map(trivial, range(a.n_small), chunksize=1))),
            per_task("submit", a.reps, a.n_small,
                     lambda: [f.result() for f in
                              [ex.submit(trivial, i) for i in range(a.n_small)]]),
            per_task("map_auto_1M", a.reps, N_LARGE,
                     lambda: list(ex.map(trivial, range(N_LARGE),
                                         chunksize=math.ceil(N_LARGE / (4 * workers))))),
        ]
    doc = {"context": {"library": "mpi4py.futures.MPIPoolExecutor",
                       "mpi4py": __import__("mpi4py").__version__,
                       "python": platform.python_version(),
                       "ranks": MPI.COMM_WORLD.Get_size(), "workers": workers,
                       "n_small": a.n_small, "reps": a.reps},
           "benchmarks": results}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=2)
    json.dump(doc, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
