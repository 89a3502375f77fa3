#!/usr/bin/env python3
"""Markdown tables (and the issue targets) from the rcu crate's criterion results.

    cargo bench -p rcu                    # writes target/criterion/**/new/estimates.json
    rcu/benches/liburcu/run.sh            # optional: liburcu beside us (target/liburcu/results.json)
    python3 rcu/benches/report.py         # prints the tables for the README

Options: --target DIR (default: $CARGO_TARGET_DIR or <workspace>/target).

Every number is a median: criterion's median of its per-sample means (the
`median.point_estimate` of `new/estimates.json`), with its 95% confidence interval.
For `synchronize`, the per-call percentiles that the bench records are shown too.
"""

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parent.parent

# group -> (title, default reference id, what the ratio column means)
GROUPS = {
    "read_side_1t": (
        "Read side, 1 thread: one read-side section + one pointer load",
        "atomicptr_floor",
        "x floor (same language)",
    ),
    "read_side_2t": (
        "Read side, 2 threads (a second thread does the same reads; cost on one thread)",
        "atomicptr_floor",
        "x floor (same language)",
    ),
    "synchronize": (
        "synchronize latency with busy readers (median per call)",
        None,
        "p50 x liburcu",
    ),
    "call_rcu": (
        "call_rcu: K callbacks enqueued, then waited for (rcu_barrier / flush), one reader active",
        "crossbeam_defer_flush",
        "rate x crossbeam",
    ),
    "update_mix": (
        "Update-heavy mix: one updater (swap + retire) and one reader checking a magic value",
        None,
        "ratio",
    ),
}

# Row-specific references (ids without the "liburcu_<flavour>_" prefix; a liburcu row is
# compared with the liburcu row of the same flavour).
ROW_REF = {
    "read_side_1t": {"*": "atomicptr_floor", "liburcu": "floor"},
    "read_side_2t": {"*": "atomicptr_floor", "liburcu": "floor"},
    "synchronize": {
        "qsbr_readers_0": "liburcu_qsbr_readers_0",
        "qsbr_readers_1": "liburcu_qsbr_readers_1",
        "qsbr_readers_2": "liburcu_qsbr_readers_2",
        "read_lock_membarrier_readers_1": "liburcu_memb_readers_1",
    },
    "update_mix": {
        "reads_sync_updater": "reads_no_updater",
        "reads_sync_updater_1mps": "reads_no_updater",
        "reads_call_rcu_updater": "reads_no_updater",
        "crossbeam_reads_defer_updater": "crossbeam_reads_no_updater",
        "updates_sync": "liburcu_qsbr_updates_sync",
        "updates_call_rcu": "crossbeam_updates_defer",
    },
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
        group = bench["group_id"]
        fid = bench.get("function_id") or ""
        if bench.get("value_str"):
            fid = f"{fid}/{bench['value_str']}" if fid else bench["value_str"]
        thr = bench.get("throughput") or {}
        row = {
            "id": fid,
            "median_ns": e["point_estimate"],
            "lo_ns": e["confidence_interval"]["lower_bound"],
            "hi_ns": e["confidence_interval"]["upper_bound"],
            "elements": thr.get("Elements"),
            "source": "rust",
        }
        pct = est.parent.parent / "percentiles.json"
        if pct.exists():
            row["pct"] = json.loads(pct.read_text())
        upd = est.parent.parent / "updater.json"
        if upd.exists():
            row["updater_per_s"] = json.loads(upd.read_text())["updates_per_s"]
        out.setdefault(group, {})[fid] = row
    return out


def load_liburcu(target):
    path = target / "liburcu" / "results.json"
    if not path.exists():
        return {}
    out = {}
    for r in json.loads(path.read_text()):
        row = {
            "id": r["id"],
            "median_ns": r["median_ns"],
            "lo_ns": r.get("min_ns"),
            "hi_ns": r.get("max_ns"),
            "elements": r.get("elements"),
            "source": "liburcu",
        }
        if "p50_ns" in r:
            row["pct"] = {k: r[k] for k in ("p50_ns", "p90_ns", "p99_ns") if k in r}
        out.setdefault(r["group"], {})[r["id"]] = row
    return out


def fmt_time(ns):
    if ns is None:
        return "-"
    if ns < 1:
        return f"{ns * 1000:.0f} ps"
    if ns < 1000:
        return f"{ns:.3g} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.3g} us"
    return f"{ns / 1e6:.3g} ms"


def fmt_rate(per_s):
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f} /s"


def rate(row):
    n = row.get("elements") or 1
    return n / (row["median_ns"] * 1e-9)


def split_liburcu(rid):
    """("liburcu_qsbr_", "reads_no_updater") for "liburcu_qsbr_reads_no_updater"."""
    for flavour in ("qsbr", "memb"):
        prefix = f"liburcu_{flavour}_"
        if rid.startswith(prefix):
            return prefix, rid[len(prefix):]
    if rid.startswith("liburcu_"):
        return "liburcu_", rid[len("liburcu_"):]
    return "", rid


def reference(group, rid):
    refs = ROW_REF.get(group)
    if refs is None:
        return GROUPS.get(group, (None, None))[1]
    prefix, base = split_liburcu(rid)
    if "*" in refs:  # read side: each language against its own floor
        return "liburcu_" + refs["liburcu"] if prefix else refs["*"]
    ref = refs.get(base)
    if ref is None:
        return None
    if prefix and not ref.startswith("liburcu_") and not ref.startswith("crossbeam"):
        return prefix + ref
    return None if prefix and ref.startswith("liburcu_") else ref


def ratio(group, row, rows):
    ref_id = reference(group, row["id"])
    if ref_id is None or ref_id not in rows or ref_id == row["id"]:
        return "-"
    ref = rows[ref_id]
    if group == "call_rcu" or (group == "update_mix" and "updates" in row["id"]):
        return f"{rate(row) / rate(ref):.2f}x rate of {ref_id}"
    if group == "synchronize":
        mine = (row.get("pct") or {}).get("p50_ns", row["median_ns"])
        theirs = (ref.get("pct") or {}).get("p50_ns", ref["median_ns"])
        return f"{mine / theirs:.2f}x"
    if group == "update_mix":
        text = f"{row['median_ns'] / ref['median_ns']:.2f}x time of {ref_id}"
        if row.get("updater_per_s"):
            text += f" (updater at {fmt_rate(row['updater_per_s'])})"
        return text
    return f"{row['median_ns'] / ref['median_ns']:.2f}x"


def table(group, rows):
    title, _, ratio_name = GROUPS.get(group, (group, None, "ratio"))
    lines = [f"### {title}", ""]
    has_rate = any(r.get("elements") for r in rows.values()) or group == "update_mix"
    has_pct = any("pct" in r for r in rows.values())
    head = ["benchmark", "median", "95% CI"]
    if has_pct:
        head += ["per-call p50", "p90", "p99"]
    if has_rate:
        head.append("rate")
    head.append(ratio_name)
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    ordered = sorted(
        rows.items(),
        key=lambda kv: (0 if group == "update_mix" else kv[1]["median_ns"], kv[0]),
    )
    for rid, row in ordered:
        name = rid if row["source"] == "rust" else f"{rid} (C)"
        ci = (
            f"{fmt_time(row['lo_ns'])} .. {fmt_time(row['hi_ns'])}"
            if row.get("lo_ns") is not None
            else "-"
        )
        cells = [name, fmt_time(row["median_ns"]), ci]
        if has_pct:
            p = row.get("pct") or {}
            cells += [fmt_time(p.get("p50_ns")), fmt_time(p.get("p90_ns")), fmt_time(p.get("p99_ns"))]
        if has_rate:
            cells.append(fmt_rate(rate(row)))
        cells.append(ratio(group, row, rows))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(res):
    """The issue targets, checked against this run (None where a number is missing)."""
    def med(group, rid):
        return res.get(group, {}).get(rid, {}).get("median_ns")

    checks = []

    def check(name, value_text, ok):
        checks.append((name, value_text, "-" if ok is None else ("met" if ok else "MISSED")))

    floor = med("read_side_1t", "atomicptr_floor")
    for n in (16, 1000):
        q = med("read_side_1t", f"qsbr_qs_every_{n}")
        if floor and q:
            check(f"QSBR (quiescent_state every {n}) within 1.1x of the floor",
                  f"{q / floor:.2f}x ({fmt_time(q)} vs {fmt_time(floor)})", q / floor <= 1.1)
    rl = med("read_side_1t", "read_lock_membarrier")
    cb = med("read_side_1t", "crossbeam_pin_load")
    asw = med("read_side_1t", "arc_swap_load")
    if rl:
        check("read_lock+unlock (membarrier) <= 1 ns", fmt_time(rl), rl <= 1.0)
    if rl and cb:
        check(">= 5x cheaper than crossbeam pin", f"{cb / rl:.2f}x", cb / rl >= 5)
    if rl and asw:
        check(">= 10x cheaper than arc-swap load", f"{asw / rl:.2f}x", asw / rl >= 10)
    s1 = res.get("synchronize", {}).get("qsbr_readers_1")
    if s1:
        p50 = (s1.get("pct") or {}).get("p50_ns", s1["median_ns"])
        check("synchronize, 1 busy QSBR reader: median <= 10 us",
              f"per-call p50 {fmt_time(p50)}, criterion median {fmt_time(s1['median_ns'])}",
              p50 <= 10_000)
    c = res.get("call_rcu", {}).get("rcu_call_rcu_qsbr_reader")
    if c:
        check("call_rcu >= 5 M callbacks/s with a reader active", fmt_rate(rate(c)), rate(c) >= 5e6)
    mix = res.get("update_mix", {})
    up, r0 = mix.get("updates_sync"), mix.get("reads_no_updater")
    if up:
        check(">= 1 M updates/s through synchronize (QSBR reader)", fmt_rate(rate(up)), rate(up) >= 1e6)
    for rid, what in (("reads_sync_updater", "flat out"), ("reads_sync_updater_1mps", "paced to 1 M/s")):
        r1 = mix.get(rid)
        if r0 and r1:
            q = r1["median_ns"] / r0["median_ns"]
            upd = r1.get("updater_per_s")
            extra = f", updater at {fmt_rate(upd)}" if upd else ""
            check(f"reads with a synchronize updater ({what}) within 1.2x of a lone reader",
                  f"{q:.2f}x{extra}", q <= 1.2)
    lines = ["### Targets (issues 2 and 3)", "", "| target | this run | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="cargo target directory")
    ap.add_argument("--no-targets", action="store_true", help="omit the targets table")
    args = ap.parse_args()
    target = target_dir(args.target)
    crit = Path(os.environ.get("CRITERION_HOME", target / "criterion"))
    res = load_criterion(crit)
    if not res:
        sys.exit(f"no criterion results under {crit}; run `cargo bench -p rcu` first")
    for group, rows in load_liburcu(target).items():
        res.setdefault(group, {}).update(rows)
    # Other crates' benchmarks share target/criterion: show only this crate's groups.
    out = [table(g, res[g]) for g in GROUPS if g in res]
    if not args.no_targets:
        out.append(targets(res))
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
