#!/usr/bin/env python3
"""Prints a markdown table of the median times in Google Benchmark JSON files, each row with
its ratio to the anchors measured in the same run (the raw spin and futex ping-pong floors)."""
import json
import sys

FLOORS = {"spin": "BM_Floor_SpinPingPong/real_time", "futex": "BM_Floor_FutexPingPong/real_time"}


def medians(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        scale = {"ns": 1.0, "us": 1e3, "ms": 1e6}[b.get("time_unit", "ns")]
        rows[b["run_name"]] = (b["real_time"] * scale, b["cpu_time"] * scale, b.get("label", ""))
    return data.get("context", {}), rows


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.1f} ns"


def main(paths):
    for path in paths:
        ctx, rows = medians(path)
        # library_build_type is Google Benchmark's own build (Debian's is "debug"), not ipckit's.
        print(f"Machine: {ctx.get('num_cpus', '?')} CPUs @ {ctx.get('mhz_per_cpu', '?')} MHz, "
              f"{ctx.get('date', '')}; medians of Google Benchmark repetitions (libbenchmark "
              f"built as {ctx.get('library_build_type', '?')})\n")
        floors = {k: rows[v][0] for k, v in FLOORS.items() if v in rows}
        head = "| benchmark | what | median (wall) | CPU | × spin floor | × futex floor |"
        print(head)
        print("|" + "---|" * 6)
        for name, (real, cpu, label) in rows.items():
            ratios = [f"{real / floors[k]:.2f}" if k in floors else "–" for k in ("spin", "futex")]
            print(f"| {name} | {label} | {fmt(real)} | {fmt(cpu)} | {ratios[0]} | {ratios[1]} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
