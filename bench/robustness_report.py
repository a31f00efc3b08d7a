#!/usr/bin/env python3
"""The robustness tables from the long runs' JSON files (docs/robustness.md is assembled
from the same JSON by bench/docs_report.py).

    bench/robustness_report.py [--chaos build/chaos.json] [--soak build/soak.json]
                               [--fuzz build/fuzz/summary.json] [--out bench/results]

Reads what `make chaos`, `make soak` and `make fuzz` wrote, copies the JSON files to the
output folder (a run whose file is missing, or older than the copy there, keeps that copy)
and writes robustness.md there: one row per chaos scenario (faults injected, messages and
tasks checked, lost / hangs / leaks / failures, worst time to the survivor's error), one per
fuzz target (executions, exec/s, crashes) and the soak run. Exits 1 when any run reports a
loss, hang, leak, failure or crash.
"""
import argparse
import json
import os
import shutil
import sys


def load(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def chaos_rows(c):
    out = ["| scenario | iterations | SIGKILL / SIGSEGV / SIGABRT | no kill (peer done) | "
           "messages acked → received (reported lost with the victim) | tasks / rounds | "
           "LOST | hangs | leaks | failures | worst time to the survivor's error |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    bad = 0
    tot = {"it": 0, "k": 0, "acked": 0, "recv": 0, "tasks": 0}
    for s in c["scenarios"]:
        k = s["kills"]
        kills = k["SIGKILL"] + k["SIGSEGV"] + k["SIGABRT"]
        msgs = (f'{s["acked"]:,} → {s["received"]:,} ({s["reported_lost"]:,})'
                if s["acked"] else (f'{s["received"]:,} results' if s["received"] else "–"))
        out.append(f'| {s["name"]} | {s["iterations"]:,} | {k["SIGKILL"]} / {k["SIGSEGV"]} / '
                   f'{k["SIGABRT"]} | {s["no_kill"]} | {msgs} | {s["tasks"]:,} | {s["lost"]} | '
                   f'{s["hangs"]} | {s["leaks"]} | {s["failures"]} | '
                   f'{s["max_latency_ms"]:.1f} ms |')
        bad += s["lost"] + s["hangs"] + s["leaks"] + s["failures"]
        tot["it"] += s["iterations"]
        tot["k"] += kills
        tot["acked"] += s["acked"]
        tot["recv"] += s["received"]
        tot["tasks"] += s["tasks"]
    lost = sum(s["lost"] for s in c["scenarios"])
    hangs = sum(s["hangs"] for s in c["scenarios"])
    leaks = sum(s["leaks"] for s in c["scenarios"])
    fails = sum(s["failures"] for s in c["scenarios"])
    out.append(f'| **all** | **{tot["it"]:,}** | **{tot["k"]:,} kills** | | '
               f'**{tot["acked"]:,} acked** | **{tot["tasks"]:,}** | **{lost}** | **{hangs}** | '
               f'**{leaks}** | **{fails}** | |')
    return out, bad


def fuzz_rows(f):
    out = ["| fuzz target | seconds | executions | exec/s | corpus | crashes, hangs, OOB reads |",
           "|---|---|---|---|---|---|"]
    bad = 0
    for t in f:
        out.append(f'| {t["target"]} | {t["seconds"]} | {t["executions"]:,} | '
                   f'{t["exec_per_s"]:,} | {t["corpus"]} | {t["crashes"]} |')
        bad += t["crashes"] + (0 if t["ok"] else 1)
    return out, bad


def soak_rows(s):
    out = ["| soak | value |", "|---|---|",
           f'| duration | {s["seconds"]:.0f} s, {s["rounds"]:,} rounds |',
           f'| messages through channels (SPSC, ByteRing, named ring, Channel, pipe) | '
           f'{s["messages"]:,} ({s["bytes"] / 1e9:.1f} GB), bad: {s["bad_messages"]} |',
           f'| pool tasks | {s["tasks"]:,} in {s["pools"]:,} pools, {s["worker_restarts"]:,} '
           f'worker replacements, wrong: {s["wrong_tasks"]} |',
           f'| spmd::run(4) runs | {s["spmd_runs"]:,}, bad: {s["bad_spmd_runs"]} |',
           f'| resident memory growth (parent / pool workers) | {s["rss_growth_kib"]:+.0f} KiB / '
           f'{s["workers_rss_growth_kib"]:+.0f} KiB ({s["samples"]} samples) |',
           f'| open fds during the run | {s["fds_min"]}..{s["fds_max"]} |',
           f'| left behind (fds, /dev/shm, processes) | {s["left_fds"]}, {s["left_shm"]}, '
           f'{s["left_processes"]} |']
    return out, 0 if s["ok"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chaos", default="build/chaos.json")
    ap.add_argument("--soak", default="build/soak.json")
    ap.add_argument("--fuzz", default="build/fuzz/summary.json")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    md, bad = ["# Robustness runs", ""], 0
    for name, path, rows in (("chaos", a.chaos, chaos_rows), ("fuzz", a.fuzz, fuzz_rows),
                             ("soak", a.soak, soak_rows)):
        kept = os.path.join(a.out, name + ".json")
        # A run not made since the kept copy was written (say `make chaos` alone, with an older
        # build/soak.json lying around) keeps the kept copy's table.
        stale = (os.path.exists(path) and os.path.exists(kept)
                 and os.path.getmtime(path) <= os.path.getmtime(kept))
        data = None if stale else load(path)
        if data is None:
            data = load(kept)
            if data is None:
                md += [f"({name}: no {path})", ""]
                continue
            path = kept
        if os.path.abspath(path) != os.path.abspath(kept):
            shutil.copy(path, kept)
        if name == "chaos":
            md.append(f'Chaos: seed {data["seed"]}, {data["iterations"]:,} iterations in '
                      f'{data["seconds"]:.0f} s.')
            md.append("")
        lines, b = rows(data)
        md += lines + [""]
        bad += b
    with open(os.path.join(a.out, "robustness.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
