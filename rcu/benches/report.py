#!/usr/bin/env python3
"""Markdown tables (and the issue targets) from one run of the rcu benchmarks and liburcu's.

Reproduce (2 cores; ~10 min; needs gcc, liburcu-dev, valgrind):

    rcu/benches/run.sh                  # builds, runs every part, prints these tables
    rcu/benches/run.sh sync             # one part: read sync call_rcu mix callgrind
    rcu/benches/callgrind.sh            # instruction counts only
    python3 rcu/benches/report.py       # the tables again, from <target>/rcu-bench/

Options: --target DIR (default: $CARGO_TARGET_DIR or <workspace>/target).

Sources, all under <target>/rcu-bench/: JSON rows (*.jsonl) from read_side.rs,
synchronize.rs, call_rcu.rs, liburcu/bench.c and callgrind.sh, and criterion's results for
the update mix (criterion/: the median of its per-sample means). run.sh runs the read side,
synchronize and call_rcu in rounds that interleave us and liburcu; each number is the median
over the rounds of each round's median (read side: of 15 repetitions, round-robin over the
rows; call_rcu: of 21 batches of 20,000 or 7 of 1,000,000); the read side's "min" is its
fastest repetition of all rounds (the least disturbed one). synchronize: the median over
rounds of each percentile, and the pooled count of calls over 1 ms. Ratios are taken within
this run only.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent

# Read-side rows in display order (unknown ids follow).
READ_ORDER = [
    "atomicptr_floor",
    "liburcu_floor",
    "atomicptr_floor_chunks_16",
    "qsbr_check_once_qs_every_1000",
    "qsbr_qs_every_1000",
    "liburcu_qsbr_qs_every_1000",
    "qsbr_check_once_qs_every_16",
    "qsbr_qs_every_16",
    "liburcu_qsbr_qs_every_16",
    "qsbr_check_once_qs_every_1",
    "qsbr_qs_every_1",
    "liburcu_qsbr_qs_every_1",
    "read_lock_membarrier",
    "liburcu_memb_read_lock",
    "read_lock_fence",
    "crossbeam_pin_load",
    "arc_swap_load",
    "parking_lot_rwlock_read",
    "std_mutex_lock",
]

# Our row -> liburcu's row of the same kind.
LIBURCU_PEER = {
    "qsbr_check_once_qs_every_1000": "liburcu_qsbr_qs_every_1000",
    "qsbr_qs_every_1000": "liburcu_qsbr_qs_every_1000",
    "qsbr_check_once_qs_every_16": "liburcu_qsbr_qs_every_16",
    "qsbr_qs_every_16": "liburcu_qsbr_qs_every_16",
    "qsbr_check_once_qs_every_1": "liburcu_qsbr_qs_every_1",
    "qsbr_qs_every_1": "liburcu_qsbr_qs_every_1",
    "read_lock_membarrier": "liburcu_memb_read_lock",
    "read_lock_fence": "liburcu_memb_read_lock",
    "atomicptr_floor": "liburcu_floor",
}


def target_dir(arg):
    if arg:
        return Path(arg)
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    return WORKSPACE / "target"


def load_criterion(crit):
    """{group: {id: row}} from <crit>/<group>/<id>/new/{benchmark,estimates}.json."""
    out = {}
    for est in sorted(crit.glob("**/new/estimates.json")):
        bench_file = est.parent / "benchmark.json"
        if not bench_file.exists():
            continue
        bench = json.loads(bench_file.read_text())
        e = json.loads(est.read_text())["median"]
        thr = bench.get("throughput") or {}
        row = {
            "id": bench.get("function_id") or "",
            "median_ns": e["point_estimate"],
            "lo_ns": e["confidence_interval"]["lower_bound"],
            "hi_ns": e["confidence_interval"]["upper_bound"],
            "elements": thr.get("Elements"),
            "c": False,
        }
        upd = est.parent.parent / "updater.json"
        if upd.exists():
            row["updater_per_s"] = json.loads(upd.read_text())["updates_per_s"]
        out.setdefault(bench["group_id"], {})[row["id"]] = row
    return out


def load_rows(out_dir):
    """{group: {id: [row, ...]}} from every <out>/*.jsonl (a row per round or run)."""
    rows = {}
    for path in sorted(out_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                key = r["id"] if "batch" not in r else f"{r['id']}@{r['batch']}"
                rows.setdefault(r["group"], {}).setdefault(key, []).append(r)
    return rows


def merged(runs):
    """One row from a list of repeated runs of a read-side or mix row (median of medians)."""
    return {
        "id": runs[0]["id"],
        "median_ns": statistics.median(r["median_ns"] for r in runs),
        "lo_ns": min(r.get("min_ns", r["median_ns"]) for r in runs),
        "hi_ns": max(r.get("max_ns", r["median_ns"]) for r in runs),
        "elements": runs[0].get("elements"),
        "c": runs[0]["id"].startswith("liburcu"),
        "rounds": len(runs),
    }


def fmt_time(ns):
    if ns is None:
        return "-"
    if ns < 1:
        return f"{ns * 1000:.0f} ps"
    if ns < 1000:
        return f"{ns:.3g} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns / 1e6:.3g} ms"


def fmt_rate(per_s):
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f} /s"


def fmt_share(v):
    """A share of calls, in percent, with enough digits for small ones."""
    return f"{100 * v:.2g}%" if v else "0%"


def fmt_x(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x"


def name(row):
    return f"{row['id']} (C)" if row["c"] else row["id"]


def ordered(rows, order):
    known = [rows[i] for i in order if i in rows]
    rest = [rows[i] for i in sorted(rows) if i not in order]
    return known + rest


def read_table(title, rows, instr):
    """Median and best (min) time per iteration, each against the same language's floor (the
    minimum is the least disturbed repetition: on 2 busy vCPUs a tight loop runs at one of
    two speeds, depending on whether its sibling is busy), against liburcu's row of the same
    kind, and the instruction counts."""
    lines = [f"#### {title}", ""]
    head = ["benchmark", "median", "min", "median x floor", "min x floor",
            "median x liburcu (same kind)"]
    if instr:
        head += ["instr/iter", "instr x floor"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ordered(rows, READ_ORDER):
        floor = rows.get("liburcu_floor" if row["c"] else "atomicptr_floor", {})
        peer = rows.get(LIBURCU_PEER.get(row["id"], ""), {}).get("median_ns")
        cells = [
            name(row),
            fmt_time(row["median_ns"]),
            fmt_time(row["lo_ns"]),
            fmt_x(row["median_ns"], floor.get("median_ns")),
            fmt_x(row["lo_ns"], floor.get("lo_ns")),
            fmt_x(row["median_ns"], peer),
        ]
        if instr:
            n = instr.get(row["id"])
            i_floor = instr.get("liburcu_floor" if row["c"] else "atomicptr_floor")
            cells += ["-" if n is None else f"{n:.2f}", fmt_x(n, i_floor)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sync_summary(runs):
    """Median over rounds of each percentile; pooled count and share over 1 ms."""
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    count = sum(r["count"] for r in runs)
    over = sum(r["over_1ms"] for r in runs)
    return {
        "p50": med("p50_ns"), "p90": med("p90_ns"), "p99": med("p99_ns"),
        "max": max(r["max_ns"] for r in runs), "count": count, "over": over,
        "share": over / count if count else 0.0, "rounds": len(runs),
    }


def sync_peer(rid):
    """liburcu's row for one of ours: QSBR readers -> liburcu QSBR, read_lock -> memb."""
    n = rid.rsplit("_", 1)[-1]
    if rid.startswith("qsbr_readers_"):
        return f"liburcu_qsbr_readers_{n}"
    if rid.startswith("read_lock_"):
        return f"liburcu_memb_readers_{n}"
    return None


def sync_table(groups):
    runs = groups.get("synchronize", {})
    if not runs:
        return None, {}
    s = {rid: sync_summary(r) for rid, r in runs.items()}
    order = []
    for n in (0, 1, 2):
        order += [f"qsbr_readers_{n}", f"liburcu_qsbr_readers_{n}",
                  f"read_lock_membarrier_readers_{n}", f"liburcu_memb_readers_{n}"]
    order.append("read_lock_fence_readers_1")
    rounds = max(v["rounds"] for v in s.values())
    lines = [
        f"#### synchronize latency per call, busy readers on 2 cores ({rounds} rounds)",
        "",
        "| benchmark | calls | p50 | p90 | p99 | max | over 1 ms | p50 x liburcu |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rid in [i for i in order if i in s] + sorted(i for i in s if i not in order):
        v = s[rid]
        peer = s.get(sync_peer(rid) or "")
        lines.append(
            f"| {rid}{' (C)' if rid.startswith('liburcu') else ''} | {v['count']} | "
            f"{fmt_time(v['p50'])} | {fmt_time(v['p90'])} | {fmt_time(v['p99'])} | "
            f"{fmt_time(v['max'])} | {v['over']} ({fmt_share(v['share'])}) | "
            f"{fmt_x(v['p50'], peer['p50']) if peer else '-'} |"
        )
    return "\n".join(lines), s


def call_rcu_table(groups):
    runs = groups.get("call_rcu", {})
    if not runs:
        return None, {}
    rate = {}
    for key, r in runs.items():
        rid, batch = key.split("@")
        med = statistics.median(x["median_ns"] for x in r)
        rate[(rid, int(batch))] = int(batch) / (med * 1e-9)
    batches = sorted({b for _, b in rate})
    ids = ["rcu_call_rcu_qsbr_reader", "rcu_call_rcu_read_lock_reader",
           "crossbeam_defer_flush", "liburcu_qsbr_call_rcu", "liburcu_memb_call_rcu"]
    ids += sorted({i for i, _ in rate} - set(ids))
    head = ["benchmark"]
    for b in batches:
        head += [f"{b:,}: rate", "x liburcu qsbr", "x liburcu memb"]
    lines = [
        "#### call_rcu: a batch of callbacks enqueued, then waited for (rcu_barrier / flush), "
        "one busy reader",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for rid in ids:
        if not any((rid, b) in rate for b in batches):
            continue
        cells = [f"{rid} (C)" if rid.startswith("liburcu") else rid]
        for b in batches:
            r = rate.get((rid, b))
            cells += [
                "-" if r is None else fmt_rate(r),
                fmt_x(r, rate.get(("liburcu_qsbr_call_rcu", b))),
                fmt_x(r, rate.get(("liburcu_memb_call_rcu", b))),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), rate


MIX_REF = {
    "reads_sync_updater": ("reads_no_updater", "time"),
    "reads_sync_updater_1mps": ("reads_no_updater", "time"),
    "reads_call_rcu_updater": ("reads_no_updater", "time"),
    "crossbeam_reads_defer_updater": ("crossbeam_reads_no_updater", "time"),
    "liburcu_qsbr_reads_sync_updater": ("liburcu_qsbr_reads_no_updater", "time"),
    "liburcu_memb_reads_sync_updater": ("liburcu_memb_reads_no_updater", "time"),
    "updates_sync": ("liburcu_qsbr_updates_sync", "rate"),
    "updates_call_rcu": ("crossbeam_updates_defer", "rate"),
}


def rate_of(row):
    return (row.get("elements") or 1) / (row["median_ns"] * 1e-9)


def mix_table(rows):
    lines = [
        "#### Update-heavy mix: one updater (swap + retire) and one reader checking a magic "
        "value",
        "",
        "| benchmark | median | min .. max | rate | ratio |",
        "|---|---|---|---|---|",
    ]
    for rid in sorted(rows):
        row = rows[rid]
        ref_id, kind = MIX_REF.get(rid, (None, None))
        ref = rows.get(ref_id)
        if ref is None:
            ratio = "-"
        elif kind == "rate":
            ratio = f"{rate_of(row) / rate_of(ref):.2f}x rate of {ref_id}"
        else:
            ratio = f"{row['median_ns'] / ref['median_ns']:.2f}x time of {ref_id}"
            if row.get("updater_per_s"):
                ratio += f" (updater at {fmt_rate(row['updater_per_s'])})"
        lines.append(
            f"| {name(row)} | {fmt_time(row['median_ns'])} | "
            f"{fmt_time(row['lo_ns'])} .. {fmt_time(row['hi_ns'])} | "
            f"{fmt_rate(rate_of(row))} | {ratio} |"
        )
    return "\n".join(lines)


def targets(read1, instr, sync, call, mix):
    checks = []

    def check(what, value, ok):
        checks.append((what, value, "-" if ok is None else ("met" if ok else "MISSED")))

    def med(rid):
        return read1.get(rid, {}).get("median_ns")

    def best(rid):
        return read1.get(rid, {}).get("lo_ns")

    floor = med("atomicptr_floor")
    i_floor = instr.get("atomicptr_floor")
    for n in (16, 1000):
        for rid, what in ((f"qsbr_check_once_qs_every_{n}", "check-once `cell.qsbr_reader`"),
                          (f"qsbr_qs_every_{n}", "`RcuCell::load(&qsbr)`")):
            q = med(rid)
            if floor and q:
                extra = ""
                if best(rid) and best("atomicptr_floor"):
                    extra += f"; min {best(rid) / best('atomicptr_floor'):.2f}x"
                if instr.get(rid) and i_floor:
                    extra += f"; {instr[rid]:.2f} vs {i_floor:.2f} instructions"
                chunked = med(f"atomicptr_floor_chunks_{n}")
                if chunked:
                    extra += (f"; the floor's load in the same chunked loop: "
                              f"{chunked / floor:.2f}x, so {q / chunked:.2f}x that")
                check(f"QSBR, quiescent_state every {n}, {what}: <= 1.1x the floor",
                      f"median {q / floor:.2f}x ({fmt_time(q)} vs {fmt_time(floor)}){extra}",
                      q / floor <= 1.1)
    rl, lm = med("read_lock_membarrier"), med("liburcu_memb_read_lock")
    if rl and lm:
        extra = ""
        if best("read_lock_membarrier") and best("liburcu_memb_read_lock"):
            extra += (f"; min {fmt_time(best('read_lock_membarrier'))} vs "
                      f"{fmt_time(best('liburcu_memb_read_lock'))}")
        if instr.get("read_lock_membarrier") and instr.get("liburcu_memb_read_lock"):
            extra += (f"; {instr['read_lock_membarrier']:.0f} vs "
                      f"{instr['liburcu_memb_read_lock']:.0f} instructions")
        check("read_lock + load + unlock (membarrier) <= liburcu memb",
              f"median {rl / lm:.2f}x ({fmt_time(rl)} vs {fmt_time(lm)}){extra}", rl <= lm)
    for n in (0, 1, 2):
        ours, theirs = sync.get(f"qsbr_readers_{n}"), sync.get(f"liburcu_qsbr_readers_{n}")
        if ours and theirs:
            check(f"synchronize, {n} busy QSBR readers: p50 <= liburcu QSBR's",
                  f"{fmt_time(ours['p50'])} vs {fmt_time(theirs['p50'])} "
                  f"({ours['p50'] / theirs['p50']:.2f}x)", ours["p50"] <= theirs["p50"])
            check(f"synchronize, {n} busy QSBR readers: share of calls over 1 ms <= "
                  "liburcu QSBR's",
                  f"{fmt_share(ours['share'])} ({ours['over']} of {ours['count']}) vs "
                  f"{fmt_share(theirs['share'])} ({theirs['over']} of {theirs['count']})",
                  ours["share"] <= theirs["share"])
    for n in (0, 1, 2):
        ours = sync.get(f"read_lock_membarrier_readers_{n}")
        theirs = sync.get(f"liburcu_memb_readers_{n}")
        if ours and theirs:
            check(f"(also) synchronize, {n} busy read_lock readers: p50 <= liburcu memb's",
                  f"{fmt_time(ours['p50'])} vs {fmt_time(theirs['p50'])}; over 1 ms "
                  f"{fmt_share(ours['share'])} ({ours['over']} of {ours['count']}) vs "
                  f"{fmt_share(theirs['share'])} ({theirs['over']} of {theirs['count']})",
                  ours["p50"] <= theirs["p50"] and ours["share"] <= theirs["share"])
    for b in sorted({b for _, b in call}):
        ours = call.get(("rcu_call_rcu_qsbr_reader", b))
        theirs = call.get(("liburcu_qsbr_call_rcu", b))
        if ours and theirs:
            check(f"call_rcu, batches of {b:,}, QSBR reader: >= 5 M callbacks/s "
                  "(issue 3)", f"{fmt_rate(ours)}; {ours / theirs:.2f}x liburcu QSBR",
                  ours >= 5e6)
    up, r0 = mix.get("updates_sync"), mix.get("reads_no_updater")
    if up:
        check(">= 1 M updates/s through synchronize, QSBR reader (issue 3)",
              fmt_rate(rate_of(up)), rate_of(up) >= 1e6)
    r1 = mix.get("reads_sync_updater_1mps")
    if r0 and r1:
        q = r1["median_ns"] / r0["median_ns"]
        check("reads with a synchronize updater paced to 1 M/s within 1.2x of a lone "
              "reader (issue 3)", f"{q:.2f}x", q <= 1.2)
    lines = ["#### Targets", "", "| target | this run | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="cargo target directory")
    args = ap.parse_args()
    out_dir = target_dir(args.target) / "rcu-bench"
    crit = load_criterion(out_dir / "criterion")
    groups = load_rows(out_dir)
    if not crit and not groups:
        sys.exit(f"no results under {out_dir}; run rcu/benches/run.sh first")

    instr = {rid: r[-1]["instr_per_iter"] for rid, r in groups.get("callgrind", {}).items()}
    sections = []
    read = {}
    for g, title in (("read_side_1t", "Read side, 1 thread: one section + one pointer load "
                      "per iteration (value through black_box)"),
                     ("read_side_2t", "Read side, 2 threads (a second thread does the same "
                      "reads; the time is measured on one)")):
        rows = dict(crit.get(g, {}))
        for rid, runs in groups.get(g, {}).items():
            rows[rid] = merged(runs)
        read[g] = rows
        if rows:
            sections.append(read_table(title, rows, instr if g == "read_side_1t" else {}))
    if instr and not read.get("read_side_1t"):
        rows = {rid: {"id": rid, "median_ns": None, "lo_ns": None, "hi_ns": None,
                      "c": rid.startswith("liburcu")} for rid in instr}
        sections.append(read_table("Read side: instructions per iteration (callgrind)",
                                   rows, instr))
    text, sync = sync_table(groups)
    if text:
        sections.append(text)
    text, call = call_rcu_table(groups)
    if text:
        sections.append(text)
    mix = dict(crit.get("update_mix", {}))
    for rid, runs in groups.get("update_mix", {}).items():
        mix[rid] = merged(runs)
    if mix:
        sections.append(mix_table(mix))
    sections.append(targets(read.get("read_side_1t", {}), instr, sync, call, mix))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
