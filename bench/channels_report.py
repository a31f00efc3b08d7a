#!/usr/bin/env python3
"""Reads channel_bench's Google Benchmark JSON (median aggregates of the repetitions) and
mpi_pingpong's JSON, and writes, next to them:
  channels_summary.csv   one row per measured point:
                         transport,mode,bytes,rtt_median_ns,rtt_p99_ns,msgs_per_s,gb_per_s
  channels.md            latency, throughput and idle-CPU tables with their ratios to the
                         anchors of the same run, and the targets table (MET / NOT MET)
  channels_latency.png   RTT median vs message size, one line per transport/mode
  channels_throughput.png  one-way GB/s vs message size, one line per transport/mode
and prints the markdown. Usage:
  channels_report.py [--out DIR] channels.json [mpi.json]
"""
import argparse
import csv
import json
import os
import sys

# Display names, in the order the tables list them.
NAMES = {
    "floor_spin": "floor: shm cache-line ping-pong",
    "floor_spin_2line": "floor: shm ping-pong, one line each way",
    "floor_futex": "floor: raw futex ping-pong",
    "spsc_queue": "ipckit SpscQueue<T> (push/pop)",
    "spsc_queue_batch": "ipckit SpscQueue<T> (try_push_n/try_pop_n, 64)",
    "byte_ring": "ipckit ByteRing (send/recv, copies)",
    "byte_ring_zc": "ipckit ByteRing (reserve/commit, peek/release)",
    "byte_ring_zc_ack": "ipckit ByteRing zero-copy request, 64 B answer",
    "channel": "ipckit Channel<vector<byte>> (shm)",
    "channel_pipe": "ipckit Channel<vector<byte>> (Transport::socket)",
    "socket_channel": "ipckit SocketChannel",
    "boost_spsc": "boost::lockfree::spsc_queue in shm",
    "ipckit_boost_spsc": "ipckit BoostSpscQueue<T, N> (push/pop)",
    "boost_spsc_batch": "boost::lockfree::spsc_queue in shm (batch of 64)",
    "boost_mq": "Boost.Interprocess message_queue",
    "pipe": "POSIX pipe",
    "socketpair": "Unix socketpair (stream)",
    "mpi": "Open MPI (vader), separate program",
    "memset": "memset into shm (write once)",
    "memcpy": "memcpy into shm",
}
ORDER = {name: i for i, name in enumerate(NAMES)}
MODE_ORDER = {"spin": 0, "hybrid": 1, "block": 2, "kernel": 3, "local": 4}


def key_order(k):
    t, m, b = k
    return (ORDER.get(t, 99), t, MODE_ORDER.get(m, 9), m, b)


def parse_name(run_name):
    """BM_RTT/channel/spin/64/iterations:100000/real_time -> ('BM_RTT', ['channel', 'spin', '64'])."""
    parts = [p for p in run_name.split("/") if ":" not in p and p != "real_time"]
    return parts[0], parts[1:]


def load_bench(path):
    with open(path) as f:
        data = json.load(f)
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
    lat, tput, idle, cv = {}, {}, {}, {}
    busy = {}  # parent CPU time / wall time, for spin-mode rows
    for b in data["benchmarks"]:
        agg = b.get("aggregate_name")
        if agg not in ("median", "cv") or b.get("error_occurred"):
            continue
        kind, args = parse_name(b["run_name"])
        if agg == "cv":
            if len(args) == 3:
                cv[(args[0], args[1], int(args[2]))] = b["real_time"]
            continue
        real_ns = b["real_time"] * scale[b.get("time_unit", "ns")]
        if kind in ("BM_RTT", "BM_Throughput") and args[1] == "spin" and b["real_time"] > 0:
            busy[(kind, args[0], args[1], int(args[2]))] = b["cpu_time"] / b["real_time"]
        if kind == "BM_IdleCPU":
            idle[(args[0], args[1])] = {"cpu_pct": b["cpu_pct"],
                                        "wakeups_per_s": b.get("wakeups_per_s", 0.0)}
            continue
        key = (args[0], args[1], int(args[2]))
        if kind in ("BM_RTT", "BM_ZeroCopyLatency"):
            lat[key] = {"median": b["median_ns"], "p99": b["p99_ns"], "p999": b["p999_ns"],
                        "max": b["max_ns"], "mean": real_ns,
                        "floor_spin": b.get("floor_spin_ns"), "x_spin": b.get("x_floor_spin"),
                        "floor_futex": b.get("floor_futex_ns"),
                        "x_futex": b.get("x_floor_futex")}
        elif kind in ("BM_Throughput", "BM_MemWrite", "BM_MemCopy"):
            tput[key] = {"msgs": b["msgs_per_s"], "gb": b["gb_per_s"], "ns_per_msg": real_ns,
                         "floor_spin": b.get("floor_spin_ns")}
    return data.get("context", {}), lat, tput, idle, cv, busy


def load_mpi(path):
    if not path or not os.path.exists(path):
        return None, {}, {}
    with open(path) as f:
        data = json.load(f)
    lat = {("mpi", r["mode"], r["bytes"]): {"median": r["median_ns"], "p99": r["p99_ns"],
                                            "p999": r["p999_ns"], "max": r["max_ns"],
                                            "mean": None, "floor_spin": r.get("floor_spin_ns"),
                                            "x_spin": r.get("x_floor_spin"),
                                            "floor_futex": None, "x_futex": None}
           for r in data["rtt"]}
    tput = {("mpi", r["mode"], r["bytes"]): {"msgs": r["msgs_per_s"], "gb": r["gb_per_s"],
                                             "ns_per_msg": 1e9 / r["msgs_per_s"],
                                             "floor_spin": None}
            for r in data["throughput"]}
    return data.get("context", {}), lat, tput


def size(b):
    if b >= 1 << 20 and b % (1 << 20) == 0:
        return f"{b >> 20} MiB"
    if b >= 1024 and b % 1024 == 0:
        return f"{b >> 10} KiB"
    return f"{b} B"


def ns(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.2f} µs"
    return f"{v:.0f} ns"


def rate(v):
    if v is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:.0f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


def write_csv(path, lat, tput):
    keys = sorted(set(lat) | set(tput), key=key_order)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["transport", "mode", "bytes", "rtt_median_ns", "rtt_p99_ns", "msgs_per_s",
                    "gb_per_s"])
        for k in keys:
            l, t = lat.get(k), tput.get(k)
            w.writerow([k[0], k[1], k[2],
                        f"{l['median']:.1f}" if l else "", f"{l['p99']:.1f}" if l else "",
                        f"{t['msgs']:.0f}" if t else "", f"{t['gb']:.4f}" if t else ""])


def status(ok):
    return "MET" if ok else "NOT MET"


def targets(lat, tput, idle):
    """Rows (check, measured, target, status). Latency checks compare ratios to the floors
    measured in the same repetition (the VM's core-to-core cost drifts during a run), and
    show the absolute medians beside them."""
    rows = []

    def miss(what, target):
        rows.append((what, "–", target, "NOT MEASURED"))

    def L(t, m, b):
        return lat.get((t, m, b))

    def vs_floor(what, row, floor_key, x_key, limit, floor_name):
        if not row or row.get(x_key) is None:
            return miss(what, f"≤ {limit} × {floor_name}")
        x = row[x_key]
        rows.append((what, f"{ns(row['median'])} = {x:.2f} × {floor_name} {ns(row[floor_key])}",
                     f"≤ {limit} × {floor_name} (same repetition)", status(x <= limit)))

    def vs_other(what, a, b, b_name, limit=1.0, strict=False):
        """a's median against limit × b's. Absolute when the spin floors measured beside each
        agree within 25 % (same machine state); otherwise as multiples of each one's floor."""
        op = "<" if strict else "≤"
        if not a or not b:
            return miss(what, f"{op} {b_name}")
        lim = "" if limit == 1.0 else f"{limit} × "
        fa, fb = a.get("floor_spin"), b.get("floor_spin")
        if fa and fb and not 0.8 <= fa / fb <= 1.25 and a.get("x_spin") and b.get("x_spin"):
            xa, xb = a["x_spin"], b["x_spin"]
            ok = xa < limit * xb if strict else xa <= limit * xb
            rows.append((what, f"{ns(a['median'])} = {xa:.2f} × its spin floor {ns(fa)}",
                         f"{op} {lim}{b_name}: {ns(b['median'])} = {xb:.2f} × its spin floor "
                         f"{ns(fb)} (floors differ: compared as multiples of each)", status(ok)))
            return
        ok = a["median"] < limit * b["median"] if strict else a["median"] <= limit * b["median"]
        bound = "" if limit == 1.0 else f" = {ns(limit * b['median'])}"
        rows.append((what, ns(a["median"]), f"{op} {lim}{b_name} ({ns(b['median'])}){bound}",
                     status(ok)))

    for t, name in (("channel", "Channel"), ("spsc_queue", "SpscQueue"),
                    ("byte_ring_zc", "ByteRing zero-copy")):
        vs_floor(f"{name} spin RTT 8 B", L(t, "spin", 8), "floor_spin", "x_spin", 1.3,
                 "spin floor")
    two = L("floor_spin_2line", "spin", 8)
    if two and L("channel", "spin", 8) and two.get("x_spin"):
        c = L("channel", "spin", 8)
        rows.append(("(context) two-line floor RTT 8 B", f"{ns(two['median'])} = "
                     f"{two['x_spin']:.2f} × spin floor", "none: a request/answer pair of "
                     f"queues moves two lines; Channel spin is {c['median'] / two['median']:.2f} × "
                     "this floor", "INFO"))
    vs_other("Channel spin RTT 8 B vs MPI", L("channel", "spin", 8), L("mpi", "spin", 8),
             "MPI RTT 8 B", strict=True)
    vs_other("Channel hybrid RTT 8 B vs spin", L("channel", "hybrid", 8), L("channel", "spin", 8),
             "Channel spin RTT 8 B", limit=1.5)
    cpu = idle.get(("channel", "hybrid"), {}).get("cpu_pct")
    if cpu is None:
        miss("Channel hybrid idle CPU", "< 1 %")
    else:
        rows.append(("Channel hybrid idle CPU", f"{cpu:.2f} %", "< 1 % of a core", status(cpu < 1)))
    block = L("channel", "block", 8)
    vs_floor("Channel block RTT 8 B", block, "floor_futex", "x_futex", 1.1, "futex floor")
    vs_other("Channel block RTT 8 B vs pipe", block, L("pipe", "kernel", 8), "pipe RTT 8 B")
    vs_other("Channel block RTT 8 B vs socketpair", block, L("socketpair", "kernel", 8),
             "socketpair RTT 8 B")

    def msgs(t, m, b):
        return tput.get((t, m, b), {}).get("msgs")

    pipe8, mq8 = msgs("pipe", "kernel", 8), msgs("boost_mq", "block", 8)
    for t, name in (("spsc_queue", "SpscQueue 8 B push/pop"),
                    ("spsc_queue_batch", "SpscQueue 8 B try_push_n/try_pop_n (64)")):
        m = msgs(t, "spin", 8)
        if m is None:
            miss(f"{name} one-way", "≥ 150 M msg/s")
            continue
        rows.append((f"{name} one-way", f"{rate(m)}msg/s", "≥ 150 M msg/s", status(m >= 150e6)))
        for other, oname in ((pipe8, "pipe"), (mq8, "Boost message_queue")):
            if other is None:
                miss(f"{name} vs {oname}", f"≥ 50 × {oname}")
            else:
                rows.append((f"{name} vs {oname}", f"{rate(m)}msg/s = {m / other:.1f} × {oname}",
                             f"≥ 50 × {oname} ({rate(other)}msg/s)", status(m >= 50 * other)))
    mpi1m = tput.get(("mpi", "spin", 1 << 20), {}).get("gb")
    for t, name in (("byte_ring", "ByteRing 1 MiB send/recv"),
                    ("byte_ring_zc", "ByteRing 1 MiB zero-copy")):
        g = tput.get((t, "spin", 1 << 20), {}).get("gb")
        if g is None or mpi1m is None:
            miss(f"{name} vs MPI", "≥ MPI 1 MiB bandwidth")
        else:
            rows.append((f"{name} vs MPI", f"{g:.2f} GB/s", f"≥ MPI 1 MiB: {mpi1m:.2f} GB/s",
                         status(g >= mpi1m)))
    zc4 = L("byte_ring_zc_ack", "spin", 4 << 20)
    zc64 = L("byte_ring_zc", "spin", 64)
    write = tput.get(("memset", "local", 4 << 20), {}).get("ns_per_msg")
    what = "ByteRing zero-copy 4 MiB latency (64 B answer)"
    if not zc4 or not zc64 or write is None:
        miss(what, "≤ 1.2 × (64 B zero-copy RTT + memset of 4 MiB)")
    else:
        bound = 1.2 * (zc64["median"] + write)
        rows.append((what, ns(zc4["median"]),
                     f"≤ 1.2 × ({ns(zc64['median'])} + {ns(write)}) = {ns(bound)}",
                     status(zc4["median"] <= bound)))
    return rows


def markdown(ctx, mpi_ctx, lat, tput, idle, cv, busy, rows):
    out = []
    p = out.append
    load = ", ".join(f"{x:.2f}" for x in ctx.get("load_avg", []))
    p("# ipckit channel benchmarks\n")
    p(f"Machine: {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs @ "
      f"{ctx.get('mhz_per_cpu', '?')} MHz, load average at start {load}; run {ctx.get('date', '')}."
      " Two processes, parent pinned to CPU 0, partner to CPU 1. Every figure is the median of "
      "5 Google Benchmark repetitions (for p99/p99.9/max: the median over the repetitions of "
      "each repetition's percentile); each round trip is timed on its own with the TSC, which "
      "ticks in ~10 ns steps on this VM. "
      + (f"Library: ipckit {os.environ['IPCKIT_BENCH_REVISION']}. "
         if os.environ.get("IPCKIT_BENCH_REVISION") else "")
      + (f"MPI: {mpi_ctx.get('library', '?')}, `mpirun -np 2 --bind-to core --mca btl self,vader`, "
         f"{mpi_ctx.get('round_trips', '?')} round trips × {mpi_ctx.get('repetitions', '?')}."
         if mpi_ctx else "MPI: not measured (mpirun or mpi_pingpong missing).") + "\n")

    load1 = (ctx.get("load_avg") or [0])[0]
    starved = sorted(k for k, r in busy.items() if r < 0.9)
    if starved:
        p("**Warning: other work shared the CPUs during this run** (load average at start "
          f"{load1:.2f}; {len(starved)} spin-mode benchmarks whose parent had the CPU less "
          "than 90 % of the wall time"
          + (": " + ", ".join("/".join(str(x) for x in k) for k in starved[:12])
             + (" …" if len(starved) > 12 else "") if starved else "")
          + "). A spinning process that shares its core loses whole time slices, and a "
          "sleeping one is woken faster when its vCPU is busy than when it has halted, so "
          "both spin and block figures move; rerun on a quiet machine.\n")
    floors = sorted(v["floor_spin"] for v in list(lat.values()) + list(tput.values())
                    if v.get("floor_spin") and v.get("mean", 0) is not None)
    if floors:
        typical = floors[len(floors) // 2]
        far = sorted(k for k, v in list(lat.items()) + list(tput.items())
                     if v.get("floor_spin") and v["floor_spin"] >= 2 * typical)
        p(f"Line floor (one cache-line round trip between the two pinned processes) over the "
          f"run: median {ns(typical)}, range {ns(floors[0])} – {ns(floors[-1])}. The host "
          "places the two vCPUs near each other (~70 ns) or far apart (~350 ns, when "
          "cross-core bandwidth also drops many times); "
          + (f"{len(far)} point(s) were measured with a floor of at least twice the median: "
             + ", ".join("/".join(str(x) for x in k) for k in far[:12])
             + (" …" if len(far) > 12 else "") + "."
             if far else "every point was measured near the median floor.") + "\n")
    p("## Targets\n")
    p("| check | measured | target | status |")
    p("|---|---|---|---|")
    for what, m, t, s in rows:
        p(f"| {what} | {m} | {t} | **{s}** |")
    p("")

    p("## Round-trip latency\n")
    p("Payload of the given size both ways (the partner echoes it). Each benchmark also times "
      "the two floors with the same partner, in slices before, between tenths of, and after "
      "its own rounds: `line floor` (one cache line, spin) and `futex floor` (raw futex "
      "wait/wake, shown for sleeping modes only); the ratios are medians over the repetitions "
      "of median ÷ floor. On this KVM guest the futex floor is bimodal: ~30–60 µs when the "
      "woken vCPU has halted (the host must run it again), under 1 µs when it has not; "
      "beside poll()-based transports (SocketChannel, Channel over a pipe) it is mostly in the "
      "fast mode, so their futex ratios are not comparable with the others. The "
      "`floor: shm …` rows with a payload move it through a 1 MiB region of slots plus a flag "
      "line (a ring without bookkeeping).\n")
    p("| transport | mode | bytes | median | p99 | p99.9 | max | line floor | × line floor "
      "| futex floor | × futex floor |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")

    def x(v):
        return "–" if v is None else f"{v:.2f}×"

    sizes = sorted({k[2] for k in lat})
    for b in sizes:
        for k in sorted((k for k in lat if k[2] == b), key=lambda k: lat[k]["median"]):
            v = lat[k]
            sleeps = k[1] in ("block", "kernel")
            p(f"| {NAMES.get(k[0], k[0])} | {k[1]} | {size(b)} | {ns(v['median'])} | "
              f"{ns(v['p99'])} | {ns(v['p999'])} | {ns(v['max'])} | {ns(v.get('floor_spin'))} | "
              f"{x(v.get('x_spin'))} | {ns(v.get('floor_futex')) if sleeps else '–'} | "
              f"{x(v.get('x_futex')) if sleeps else '–'} |")
    p("")

    p("## One-way throughput\n")
    p("The parent produces, the partner consumes; the clock stops when the last message is "
      "consumed. Copying paths copy the payload in and out; the zero-copy path memsets it in "
      "place and the consumer reads one word per cache line. cv: coefficient of variation of "
      "the 5 repetitions; line floor: the cache-line round trip timed with the same partner "
      "before and after (cross-core bandwidth falls by up to 20× when it is high).\n")
    p("| transport | mode | bytes | msgs/s | GB/s | × pipe | cv | line floor |")
    p("|---|---|---|---|---|---|---|---|")
    for b in sorted({k[2] for k in tput}):
        pipe = tput.get(("pipe", "kernel", b), {}).get("msgs")
        for k in sorted((k for k in tput if k[2] == b), key=lambda k: -tput[k]["gb"]):
            v = tput[k]
            c = cv.get(k)
            p(f"| {NAMES.get(k[0], k[0])} | {k[1]} | {size(b)} | {rate(v['msgs'])} | "
              f"{v['gb']:.3f} | {ratio(v['msgs'], pipe)} | "
              f"{'–' if c is None else f'{100 * c:.0f} %'} | {ns(v.get('floor_spin'))} |")
    p("")

    p("## Idle receiver\n")
    p("A receiver blocked 0.5 s on an empty Channel whose sender is alive: its CPU time over "
      "wall time, and its voluntary context switches (sleeps ended) per second.\n")
    p("| transport | mode | CPU | wake-ups/s |")
    p("|---|---|---|---|")
    for (t, m), v in sorted(idle.items(), key=lambda kv: (MODE_ORDER.get(kv[0][1], 9), kv[0])):
        p(f"| {NAMES.get(t, t)} | {m} | {v['cpu_pct']:.2f} % | {v['wakeups_per_s']:.0f} |")
    p("")
    p("Plots: `channels_latency.png`, `channels_throughput.png`; all points: "
      "`channels_summary.csv`.")
    return "\n".join(out) + "\n"


def plot(outdir, lat, tput):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        print("channels_report.py: matplotlib not found, no plots (apt-get install "
              "python3-matplotlib)", file=sys.stderr)
        return

    def series(data, value):
        s = {}
        for k, v in data.items():
            s.setdefault((k[0], k[1]), []).append((k[2], value(v)))
        return {k: sorted(pts) for k, pts in sorted(s.items(), key=lambda kv: key_order(kv[0] + (0,)))}

    def draw(data, value, ylabel, title, path, skip=()):
        fig, ax = plt.subplots(figsize=(11, 6.5))
        cmap = plt.get_cmap("tab20")
        markers = "os^vD<>ph*xP"
        for i, ((t, m), pts) in enumerate(series(data, value).items()):
            if t in skip:
                continue
            xs, ys = zip(*pts)
            style = "--" if t.startswith("floor") or t == "mpi" else "-"
            ax.plot(xs, ys, style, marker=markers[i % len(markers)], color=cmap(i % 20),
                    label=f"{t} / {m}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({k[2] for k in data})
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: size(int(v))))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    draw(lat, lambda v: v["median"], "round trip, median (ns)",
         "Round-trip latency between two pinned processes", os.path.join(outdir,
                                                                         "channels_latency.png"))
    draw(tput, lambda v: v["gb"], "one-way throughput (GB/s)",
         "One-way throughput between two pinned processes",
         os.path.join(outdir, "channels_throughput.png"), skip=("memset", "memcpy"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("channels_json")
    ap.add_argument("mpi_json", nargs="?")
    ap.add_argument("--out", help="output folder (default: that of channels_json)")
    a = ap.parse_args()
    outdir = a.out or os.path.dirname(os.path.abspath(a.channels_json))
    os.makedirs(outdir, exist_ok=True)
    ctx, lat, tput, idle, cv, busy = load_bench(a.channels_json)
    mpi_ctx, mlat, mtput = load_mpi(a.mpi_json)
    lat.update(mlat)
    tput.update(mtput)
    write_csv(os.path.join(outdir, "channels_summary.csv"), lat, tput)
    md = markdown(ctx, mpi_ctx, lat, tput, idle, cv, busy, targets(lat, tput, idle))
    with open(os.path.join(outdir, "channels.md"), "w") as f:
        f.write(md)
    plot(outdir, lat, tput)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
