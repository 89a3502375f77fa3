#!/usr/bin/env python3
"""The end-to-end memory-lookup benchmark: the four lookup designs of the VMM, compared.

For each design (`--ram-lookup rcu|mutex|rwlock|vm-memory`), with 1 and 2 vCPUs, without and
with a control client (`vmmctl churn`, through `--control`) that hot-adds and removes a 2 MiB
RAM block 1,000 times a second (add+remove pairs), it boots the built-in guest with
`workload=lookup-bench count=N rounds=R` (every vCPU hands the VMM its own table of N
guest-physical addresses R times; the vCPU thread translates each one and reads the qword
there), repeats each configuration (interleaved), and prints a markdown table of medians plus
an SVG bar chart.

    cargo build --release -p vmm && python3 scripts/bench-lookup.py [--rounds R] [--repeats K]

Python 3 standard library only (plus the `vmmctl` binary built next to `vmm`). The VMM and the
guest do the measuring: the guest prints, per
vCPU, the nanoseconds the VMM spent translating and reading (`vmm ns`); nothing here times
the lookups itself.
"""
import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

DESIGNS = ["rcu", "mutex", "rwlock", "vm-memory"]
# Each vCPU's descriptor sits at k * 4 GiB + X (the lookup device latches one low dword for
# all vCPUs): two vCPUs need RAM above 4 GiB, hence 4 GiB of guest memory for every run.
MEM = "4G"
CHURN_NAME = "churn"
CHURN_GPA = 0xE000_0000  # in the 32-bit hole, outside boot RAM
CHURN_SIZE = 2 << 20
CHURN_PATTERN = 0x0123_4567_89AB_CD00

CPU_LINE = re.compile(
    r"lookup-bench: cpu (\d+): (\d+) rounds x (\d+) lookups, vmm ns (\d+), errors (\d+)")
SUMMARY_LINE = re.compile(
    r"lookup-bench: (\d+) rounds x (\d+) lookups(?: x (\d+) cpus)?, vmm ns (\d+), errors (\d+)")


class Writer:
    """The live RAM writer: `vmmctl SOCKET churn`, a Rust control client that hot-adds and
    removes the churn block `rate` pairs a second (back to back when the VMM cannot keep up)
    until the VMM goes away, then prints its statistics as one JSON line."""

    def __init__(self, vmmctl, path, rate, size, fill):
        cmd = [vmmctl, "--wait", "20", path, "churn", "--name", CHURN_NAME,
               "--gpa", hex(CHURN_GPA), "--size", hex(size), "--rate", str(rate)]
        if fill:
            cmd += ["--pattern", hex(CHURN_PATTERN)]
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def finish(self):
        """Waits for the client (it ends when the VMM closes the socket); returns its
        statistics (its CPU time is counted by run_one, through RUSAGE_CHILDREN)."""
        out, err = self.p.communicate(timeout=30)
        try:
            stats = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            stats = {"pairs": 0, "rate": 0.0, "rtt-p50-us": None, "rtt-p99-us": None,
                     "errors": [f"vmmctl failed: {err.strip()[-500:]}"]}
        return stats


def busy_seconds():
    """CPU time the whole host has spent busy (all CPUs; /proc/stat, without idle/iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz  # user nice system irq softirq steal


def self_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wait_quiet(limit, max_wait):
    """Waits (up to max_wait s) until the host's busy CPU over 0.5 s is below `limit` cores
    (this script is idle meanwhile: anything busy is someone else's). Returns the last load."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = busy_seconds(), time.monotonic()
        time.sleep(0.5)
        load = (busy_seconds() - b0) / (time.monotonic() - t0)
        if load < limit or time.monotonic() > deadline:
            return load
        time.sleep(1)


def children_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(vmm, design, cpus, writer_on, count, rounds, rate, timeout, size, fill):
    """One VMM run; returns its measurements."""
    tmp = tempfile.mkdtemp(prefix="bench-lookup-")
    log = os.path.join(tmp, "serial.log")
    sock = os.path.join(tmp, "control.sock")
    cmd = [vmm, "--cpus", str(cpus), "--mem", MEM, "--ram-lookup", design,
           "--timeout", f"{timeout}s", "--serial", f"file:{log}",
           "--cmdline", f"workload=lookup-bench count={count} rounds={rounds}"]
    if writer_on:
        cmd += ["--control", sock]
    err = open(os.path.join(tmp, "stderr"), "w+")
    busy0, self0, kids0 = busy_seconds(), self_seconds(), children_seconds()
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    vmmctl = os.path.join(os.path.dirname(vmm), "vmmctl")
    w = Writer(vmmctl, sock, rate, size, fill) if writer_on else None
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t
    busy = busy_seconds() - busy0
    err.seek(0)
    stderr = err.read()
    err.close()
    wstats = w.finish() if w else None
    # The writer client (and this script); the VMM's own CPU is in `ru`.
    vmm_cpu = ru.ru_utime + ru.ru_stime
    mine = self_seconds() - self0 + max(0.0, children_seconds() - kids0 - vmm_cpu)
    out = open(log, errors="replace").read().replace("\r", "") if os.path.exists(log) else ""
    shutil.rmtree(tmp, ignore_errors=True)

    per_cpu = [tuple(int(x) for x in m.groups()) for m in CPU_LINE.finditer(out)]
    summary = SUMMARY_LINE.search(out)
    ok = "workload lookup-bench: ok" in out and p.returncode == 0
    if not ok or summary is None or len(per_cpu) != cpus:
        raise SystemExit(
            f"run failed: {' '.join(cmd)}\nexit {p.returncode}\n{stderr[-2000:]}\n{out[-3000:]}")
    if "doorbells serialized" in out and cpus > 1:
        raise SystemExit("the guest serialized its doorbells (no RAM at 4 GiB + X?)")
    lookups = [r * n for (_, r, n, _, _) in per_cpu]
    ns = [t for (_, _, _, t, _) in per_cpu]
    res = {
        "design": design, "cpus": cpus, "writer": writer_on, "wall_s": wall,
        "per_cpu_rate": [lk / (t / 1e9) for lk, t in zip(lookups, ns)],
        "total_lookups": sum(lookups), "total_ns": sum(ns),
        # Lookups per second of VMM time, all vCPUs together: the vCPUs ran at the same time,
        # so the mean per-vCPU time (total ns / cpus) is the wall time the lookups took.
        "aggregate": sum(lookups) / (sum(ns) / cpus / 1e9),
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "nivcsw": ru.ru_nivcsw,
        # Host CPU that was neither the VMM's nor this script's, in cores over the run: other
        # people's work on a shared machine (noise), plus kernel threads working for us.
        "foreign": max(0.0, busy - (ru.ru_utime + ru.ru_stime) - mine) / wall,
        "client_cpu_s": mine,
    }
    res["per_vcpu"] = statistics.mean(res["per_cpu_rate"])
    res["ns_per_lookup"] = sum(ns) / sum(lookups)
    if wstats:
        res["writer_pairs"] = wstats["pairs"]
        res["writer_rate"] = wstats["rate"]
        res["writer_p50_us"] = wstats["rtt-p50-us"] or float("nan")
        res["writer_p99_us"] = wstats["rtt-p99-us"] or float("nan")
        res["writer_errors"] = wstats["errors"]
    return res


def size_name(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} bytes"


def fmt_rate(x):
    return f"{x / 1e6:.2f} M"


def svg_chart(rows, path):
    """A grouped bar chart: aggregate lookups/s per configuration, one bar per design."""
    groups = [(c, w) for c in (1, 2) for w in (False, True)]
    colors = {"rcu": "#2b6cb0", "mutex": "#c53030", "rwlock": "#d69e2e", "vm-memory": "#38a169"}
    W, H = 760, 420
    left, right, top, bottom = 70, 20, 50, 80
    pw, ph = W - left - right, H - top - bottom
    vmax = max(r["aggregate"] for r in rows.values()) / 1e6
    step = 10 ** len(str(int(vmax))) / 10 if vmax >= 1 else 0.1
    while vmax / step > 8:
        step *= 2
    ymax = step * (int(vmax / step) + 1)
    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">')
    e.append(f'<rect width="{W}" height="{H}" fill="white"/>')
    e.append(f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">'
             'End-to-end vCPU memory lookups (lookup-bench, median of runs)</text>')
    e.append(f'<text x="{W / 2}" y="38" text-anchor="middle" fill="#555">'
             'aggregate = total lookups / (total VMM ns / vCPUs); higher is better</text>')
    y = 0.0
    while y <= ymax + 1e-9:
        py = top + ph - y / ymax * ph
        e.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + pw}" y2="{py:.1f}" '
                 'stroke="#ddd"/>')
        e.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    e.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" '
             'text-anchor="middle">million lookups / s</text>')
    gw = pw / len(groups)
    bw = gw * 0.8 / len(DESIGNS)
    for gi, (c, w) in enumerate(groups):
        gx = left + gi * gw + gw * 0.1
        for di, d in enumerate(DESIGNS):
            r = rows.get((d, c, w))
            if r is None:
                continue
            v = r["aggregate"] / 1e6
            bh = v / ymax * ph
            x = gx + di * bw
            e.append(f'<rect x="{x:.1f}" y="{top + ph - bh:.1f}" width="{bw - 2:.1f}" '
                     f'height="{bh:.1f}" fill="{colors[d]}"><title>{d}, {c} vCPU, '
                     f'{"writer" if w else "no writer"}: {v:.2f} M/s</title></rect>')
            e.append(f'<text x="{x + (bw - 2) / 2:.1f}" y="{top + ph - bh - 3:.1f}" '
                     f'text-anchor="middle" font-size="10">{v:.1f}</text>')
        label = f'{c} vCPU{"s" if c > 1 else ""}, {"writer" if w else "no writer"}'
        e.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + ph + 18}" '
                 f'text-anchor="middle">{label}</text>')
    e.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" '
             'stroke="black"/>')
    e.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    lx = left
    for d in DESIGNS:
        e.append(f'<rect x="{lx}" y="{H - 30}" width="12" height="12" fill="{colors[d]}"/>')
        e.append(f'<text x="{lx + 16}" y="{H - 20}">{d}</text>')
        lx += 110
    e.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(e) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmm", default="target/release/vmm")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cargo build --release -p vmm first")
    ap.add_argument("--count", type=int, default=4096, help="addresses per vCPU table")
    ap.add_argument("--rounds", type=int, default=12000, help="rounds per vCPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="the writer's target add+remove pairs per second")
    ap.add_argument("--churn-size", type=lambda x: int(x, 0), default=CHURN_SIZE,
                    help="the writer's block size in bytes (default 2 MiB)")
    ap.add_argument("--churn-fill", action="store_true",
                    help="have the writer fill the block with a pattern before each add "
                         "(default: hot-added memory is left zeroed, as the host gives it)")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--cpus", default="1,2")
    ap.add_argument("--svg", default="docs/lookup-bench.svg")
    ap.add_argument("--json", help="also write every run's measurements here")
    ap.add_argument("--timeout", type=int, default=120, help="per run, seconds")
    ap.add_argument("--quiet", type=float, default=0.25,
                    help="before each run, wait for the host's load (other processes) to drop "
                         "below this many cores; and redo a run during which it was higher")
    ap.add_argument("--quiet-wait", type=float, default=60, help="longest wait, seconds")
    ap.add_argument("--tries", type=int, default=3,
                    help="attempts per run when others load the host (the quietest is kept)")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "vmm"], check=True)
    designs = a.designs.split(",")
    cpus_list = [int(c) for c in a.cpus.split(",")]
    configs = [(d, c, w) for c in cpus_list for w in (False, True) for d in designs]

    runs = {k: [] for k in configs}
    print(f"{len(configs)} configurations x {a.repeats} runs (interleaved); "
          f"{a.vmm} --mem {MEM} --cmdline 'workload=lookup-bench count={a.count} "
          f"rounds={a.rounds}'", file=sys.stderr)
    for rep in range(a.repeats):
        for k in configs:
            best = None
            for _ in range(a.tries):
                wait_quiet(a.quiet, a.quiet_wait)
                r = run_one(a.vmm, *k, a.count, a.rounds, a.rate, a.timeout, a.churn_size,
                            a.churn_fill)
                if best is None or r["foreign"] < best["foreign"]:
                    best = r
                if r["foreign"] < a.quiet:
                    break
                print(f"  (others used {r['foreign']:.2f} cores during the run: again)",
                      file=sys.stderr)
            r = best
            runs[k].append(r)
            extra = ""
            if k[2]:
                extra = f", writer {r['writer_rate']:.0f} pairs/s"
            print(f"  run {rep + 1}: {k[0]:9} {k[1]} vCPU {'writer' if k[2] else '      '}: "
                  f"aggregate {fmt_rate(r['aggregate'])}/s, {r['ns_per_lookup']:.1f} ns/lookup, "
                  f"wall {r['wall_s']:.1f} s, others {r['foreign']:.2f} cores{extra}",
                  file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{d}/{c}/{'writer' if w else 'none'}": v
                       for (d, c, w), v in runs.items()}, f, indent=1)

    med = {}
    for k, rs in runs.items():
        m = {key: statistics.median(r[key] for r in rs)
             for key in ("aggregate", "per_vcpu", "ns_per_lookup", "wall_s", "cpu_s", "nivcsw",
                         "foreign", "client_cpu_s")}
        if k[2]:
            m["writer_rate"] = statistics.median(r["writer_rate"] for r in rs)
            m["rtt_p50"] = statistics.median(r["writer_p50_us"] for r in rs) / 1e6
            m["rtt_p99"] = statistics.median(r["writer_p99_us"] for r in rs) / 1e6
            m["writer_errors"] = [e for r in rs for e in r["writer_errors"]]
        med[k] = m

    print(f"\n### lookup-bench: {a.count} addresses per vCPU x {a.rounds} rounds, "
          f"--mem {MEM}, medians of {a.repeats} runs\n")
    print("| design | vCPUs | writer | lookups/s per vCPU | aggregate lookups/s | "
          "vs RCU | ns per lookup | writer pairs/s | add+remove p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (d, c, w) in configs:
        m = med[(d, c, w)]
        base = med.get(("rcu", c, w))
        ratio = f"{m['aggregate'] / base['aggregate']:.2f}x" if base else "-"
        wr = f"{m['writer_rate']:.0f}" if w else "-"
        rt = f"{m['rtt_p50'] * 1e3:.2f} / {m['rtt_p99'] * 1e3:.2f} ms" if w else "-"
        print(f"| {d} | {c} | {'yes' if w else 'no'} | {fmt_rate(m['per_vcpu'])} | "
              f"{fmt_rate(m['aggregate'])} | {ratio} | {m['ns_per_lookup']:.1f} | {wr} | {rt} |")
    print("""
- lookups/s per vCPU: each vCPU's R x N lookups over the VMM nanoseconds it reported, averaged
  over the vCPUs.
- aggregate: total lookups / (total VMM ns / vCPUs). The guest sums every vCPU's VMM time; the
  vCPUs run their rounds at the same time, so that sum divided by the number of vCPUs is the
  (mean) time the lookups took, and the aggregate is what all vCPUs together translate per
  second (the sum of the per-vCPU rates when the vCPUs are balanced).
- vs RCU: the aggregate over the RCU design's, same vCPUs and writer setting.
- writer: `vmmctl churn`, a control client doing ram-add + ram-remove of a %s block at
  0xe0000000 (%s), paced to at most %g pairs/s; "pairs/s" is what it achieved, p50/p99 its
  round trip per pair (median over runs).""" % (size_name(a.churn_size),
                                             "filled with a pattern before each add"
                                             if a.churn_fill else "left zeroed", a.rate))

    if any(k[2] for k in configs):
        rate = statistics.median(m["writer_rate"] for k, m in med.items() if k[2])
        p50 = statistics.median(m["rtt_p50"] for k, m in med.items() if k[2])
        p99 = statistics.median(m["rtt_p99"] for k, m in med.items() if k[2])
        print(f"\nWriter: asked for {a.rate:g} add+remove pairs/s, achieved {rate:.0f}/s "
              f"(median over runs); round trip p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms.")
        if rate < 0.95 * a.rate:
            print(f"The target rate is not reachable here: the writer ran back to back, as fast "
                  f"as the VMM answers ({1 / p50:.0f} pairs/s at the median "
                  "round trip).")
        errs = [e for k, m in med.items() if k[2] for e in m["writer_errors"]]
        if errs:
            print(f"Writer errors (first few): {errs[:3]}")

    print("\nTargets:")
    if ("rcu", 2, True) in med and ("mutex", 2, True) in med:
        x = med[("rcu", 2, True)]["aggregate"] / med[("mutex", 2, True)]["aggregate"]
        print(f"- RCU >= 5x Mutex, 2 vCPUs, writer running: {x:.2f}x -> "
              f"{'met' if x >= 5 else 'MISSED'}")
    if ("rcu", 2, True) in med and ("rcu", 2, False) in med:
        x = med[("rcu", 2, False)]["aggregate"] / med[("rcu", 2, True)]["aggregate"]
        print(f"- RCU with the writer within 1.1x of without (2 vCPUs): {x:.2f}x slower -> "
              f"{'met' if x <= 1.1 else 'MISSED'}")
    if ("rcu", 1, True) in med and ("rcu", 1, False) in med:
        x = med[("rcu", 1, False)]["aggregate"] / med[("rcu", 1, True)]["aggregate"]
        print(f"- (same, 1 vCPU: {x:.2f}x)")

    print("\nWhere the host's CPU went (medians): the VMM process (user+sys), the writer client "
          "(vmmctl, and this script), everything else (other processes and kernel threads, in "
          "cores over "
          "the run), and the VMM's involuntary context switches (its threads preempted):")
    print("\n| design | vCPUs | writer | wall s | VMM cpu s | client cpu s | others, cores | "
          "invol. ctx switches |")
    print("|---|---|---|---|---|---|---|---|")
    for (d, c, w) in configs:
        m = med[(d, c, w)]
        print(f"| {d} | {c} | {'yes' if w else 'no'} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
              f"{m['client_cpu_s']:.2f} | {m['foreign']:.2f} | {m['nivcsw']:.0f} |")

    rows = {k: m for k, m in med.items()}
    svg_chart(rows, a.svg)
    print(f"\nChart: {a.svg}")


if __name__ == "__main__":
    main()
