#!/usr/bin/env python3
"""bench/results/queue.md from one run of queue_bench (ipckit::Queue<T>, with Boost
message_queue and Channel<T> as anchors) and queue_python.py (multiprocessing.Queue).
Usage: queue_report.py queue.json queue_python.json
Goals (issue 16): items/s at least 50x Python's; round trip within 1.5x of Channel<T>."""
import json
import os
import sys

THROUGHPUT = [
    ("tput_1to1_int64", "1 -> 1, int64", "boost_tput_1to1_int64"),
    ("tput_1to1_str100", "1 -> 1, 100-byte string", "boost_tput_1to1_str100"),
    ("tput_2to2_int64", "2 -> 2, int64", None),
    ("tput_2to2_str100", "2 -> 2, 100-byte string", None),
]


def load(path):
    with open(path) as f:
        doc = json.load(f)
    return doc["context"], {b["name"]: b for b in doc["benchmarks"]}


def fmt_rate(v):
    return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s"


def main():
    ours_ctx, ours = load(sys.argv[1])
    py_ctx, py = load(sys.argv[2])
    out = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "queue.md")
    revision = os.environ.get("IPCKIT_BENCH_REVISION", "unknown")
    md = ["# ipckit::Queue<T> beside multiprocessing.Queue and Boost message_queue", "",
          f"One run of `bench/queue_bench` (ipckit {revision}; {ours_ctx['items']:,} items, "
          f"{ours_ctx['round_trips']:,} round trips) and `bench/queue_python.py` (CPython "
          f"{py_ctx.get('python', '?')}, fork, {py_ctx['items']:,} items), one after the other "
          f"on this machine ({os.cpu_count()} CPUs); medians of {ours_ctx['reps']} "
          "repetitions. Processes are forked per repetition; the clock runs from the first "
          "fork to the last item got. Boost.Interprocess `message_queue` (1 MiB of fixed "
          "slots) and ipckit's one-to-one `Channel<T>` are anchors of the same run.", "",
          "| workload | ipckit Queue | Python Queue | ratio | Boost message_queue | goal | status |",
          "|---|---|---|---|---|---|---|"]
    for name, label, boost in THROUGHPUT:
        if name not in ours or name not in py:
            continue
        a, b = ours[name]["median"], py[name]["median"]
        ratio = a / b
        anchor = fmt_rate(ours[boost]["median"]) if boost and boost in ours else "–"
        md.append(f"| items/s, {label} | {fmt_rate(a)} | {fmt_rate(b)} | {ratio:.0f}× | "
                  f"{anchor} | ≥ 50× Python | {'**MET**' if ratio >= 50 else '**NOT MET**'} |")
    if "rtt_int64" in ours and "channel_rtt_int64" in ours:
        a, c = ours["rtt_int64"]["median"], ours["channel_rtt_int64"]["median"]
        p = py["rtt_int64"]["median"] if "rtt_int64" in py else float("nan")
        md.append(f"| round trip, int64, hybrid | {a:.3g} µs | {p:.3g} µs | {p / a:.0f}× | "
                  f"Channel<T>: {c:.3g} µs ({a / c:.2f}×) | ≤ 1.5× Channel<T> | "
                  f"{'**MET**' if a <= 1.5 * c else '**NOT MET**'} |")
    md += ["", "Each repetition:", ""]
    for name in ours:
        vals = ", ".join(f"{v:.4g}" for v in ours[name]["values"])
        pv = ", ".join(f"{v:.4g}" for v in py[name]["values"]) if name in py else "–"
        md.append(f"- {name} ({ours[name]['unit']}): ipckit {vals}; Python {pv}")
    md.append("")
    with open(out, "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
