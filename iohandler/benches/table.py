#!/usr/bin/env python3
"""Summarize `cargo bench -p iohandler --bench dispatch` as a markdown table.

Reads criterion's estimates under target/criterion (or the directory given as the first
argument) and prints latency (median per sample, see benches/dispatch.rs) and events/s for the
RCU loop and the Mutex<HashMap> loop, with and without the churn thread, and their ratios.
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "..", "target", "criterion")

results = {}  # (group, function, n) -> ns per iteration (criterion's median estimate)
for group in ("latency", "throughput"):
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        continue
    for dirpath, _dirs, files in os.walk(gdir):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            b = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            e = json.load(f)
        results[(group, b["function_id"], int(b["value_str"]))] = e["median"]["point_estimate"]

sizes = sorted({k[2] for k in results})
if not sizes:
    sys.exit(f"no results under {root}; run `cargo bench -p iohandler --bench dispatch` first")


def fmt_lat(ns):
    return f"{ns / 1000:.1f} µs" if ns is not None else "-"


def fmt_rate(n, ns):
    return f"{n / ns * 1e6:.0f} k/s" if ns is not None else "-"


print("| fds | writer | latency RCU | latency Mutex | RCU/Mutex (lower is better) "
      "| events/s RCU | events/s Mutex | RCU/Mutex (higher is better) |")
print("|---:|:---:|---:|---:|---:|---:|---:|---:|")
for n in sizes:
    for writer in (False, True):
        suffix = "+writer" if writer else ""
        lr = results.get(("latency", "rcu" + suffix, n))
        lm = results.get(("latency", "mutex" + suffix, n))
        tr = results.get(("throughput", "rcu" + suffix, n))
        tm = results.get(("throughput", "mutex" + suffix, n))
        lat_ratio = f"{lr / lm:.2f}x" if lr and lm else "-"
        thr_ratio = f"{tm / tr:.2f}x" if tr and tm else "-"
        print(f"| {n} | {'yes' if writer else 'no'} | {fmt_lat(lr)} | {fmt_lat(lm)} | {lat_ratio} "
              f"| {fmt_rate(n, tr)} | {fmt_rate(n, tm)} | {thr_ratio} |")
