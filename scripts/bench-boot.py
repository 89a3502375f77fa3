#!/usr/bin/env python3
"""Boot benchmarks of the built-in guest through the real binary.

Runs `vmm --result-json -` N times one after another and then P VMs at once, and prints
markdown tables with medians: process start to the first KVM_RUN, to the marker, to exit,
and the VMM's memory overhead (RSS minus the guest memory the guest touched).

    cargo build --release -p vmm && python3 scripts/bench-boot.py [N] [P]
"""
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

VMM = "target/release/vmm"
ARGS = ["--result-json", "-", "--timeout", "60s", "--expect", "workload smoke: ok"]


def run_one():
    t = time.monotonic()
    p = subprocess.run([VMM] + ARGS, capture_output=True, text=True)
    wall = (time.monotonic() - t) * 1000
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["wall_ms"] = wall
    r["rc"] = p.returncode
    return r


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    par = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    seq = [run_one() for _ in range(n)]
    assert all(r["rc"] == 0 for r in seq), "a sequential boot failed"
    print(f"Sequential boots of the built-in guest (n={n}, medians):\n")
    print("| measure | median |")
    print("|---|---|")
    print(f"| process start to first KVM_RUN | {med(seq, 'time_to_first_run_ms'):.2f} ms |")
    print(f"| process start to marker (`workload smoke: ok`) | {med(seq, 'time_to_marker_ms'):.2f} ms |")
    print(f"| whole process (fork to exit, wall) | {med(seq, 'wall_ms'):.2f} ms |")
    print(f"| VMM RSS at exit | {med(seq, 'rss_kib') / 1024:.2f} MiB |")
    print(f"| guest memory the guest touched | {med(seq, 'guest_resident_kib') / 1024:.2f} MiB |")
    print(f"| VMM overhead (RSS - guest touched) | {med(seq, 'vmm_overhead_kib') / 1024:.2f} MiB |")
    print(f"| of which private (anonymous RSS - guest touched) | {med(seq, 'vmm_private_overhead_kib') / 1024:.2f} MiB |")

    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=par) as ex:
        rs = list(ex.map(lambda _: run_one(), range(par)))
    total = (time.monotonic() - t) * 1000
    ok = sum(r["rc"] == 0 for r in rs)
    print(f"\n{par} boots at once:\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| succeeded | {ok} of {par} |")
    print(f"| total wall time for all {par} | {total:.0f} ms |")
    print(f"| median process start to marker | {med(rs, 'time_to_marker_ms'):.1f} ms |")
    print(f"| max VMM overhead per VM | {max(r['vmm_overhead_kib'] for r in rs) / 1024:.2f} MiB |")
    print(f"| max private VMM overhead per VM | {max(r['vmm_private_overhead_kib'] for r in rs) / 1024:.2f} MiB |")
    print(f"| max RSS per VM | {max(r['rss_kib'] for r in rs) / 1024:.2f} MiB |")


if __name__ == "__main__":
    main()
