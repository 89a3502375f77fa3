#!/usr/bin/env bash
# Boot time on real KVM, side by side: this project's vmm and QEMU's microvm boot the same
# Debian cloud kernel and initramfs inside the same L1 (the nested-KVM harness: QEMU's TCG
# emulating SVM, or the host's own KVM when it has vmx/svm), runs interleaved.
#
#   scripts/bench-boot-nested.sh [N]      (N runs per VMM and vCPU count, default 5)
#
# Each VMM on its default command line plus `quiet` (QEMU has none of its own: the same
# console=ttyS0 plus quiet; -no-reboot so that the guest's power-off ends it). Reported,
# medians over N: wall time from the VMM's process start to the marker line, measured in the
# L1 (/proc/uptime, 10 ms resolution); the guest's own clock at the marker (the `uptime:`
# line /init prints right after it); and the ratio vmm / QEMU of each. The VMM's private
# memory overhead comes from vmm's --result-json.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${1:-5}
case "$n" in '' | *[!0-9]* | 0) echo "N must be a positive number, not '$n'" >&2; exit 2 ;; esac
mem=${MEM:-512M}
# shellcheck source=nested-bench-lib.sh
. "$repo/scripts/nested-bench-lib.sh"
nested_bench_setup

# The default command line, as `vmm --help` prints it.
vmm_cmdline=$("$repo/target/release/vmm" --help | sed -n '/^A Linux --kernel gets/{n;s/^ *//;p}')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The jobs, run in the L1 one after another: N rounds of (vmm 1 vCPU, QEMU 1 vCPU, vmm 2,
# QEMU 2), one job per boot so that a failed boot loses only itself.
measure='now() { cut -d" " -f1 /proc/uptime; }
measure() { # label cpus command...
    label=$1 cpus=$2; shift 2
    t0=$(now)
    "$@" < /dev/null 2> stderr.vm | while IFS= read -r line; do
        case $line in
            *RVMM-LINUX-BOOTED*) echo "mark $(now)" ;;
            uptime:*) echo "guest ${line#uptime: }" ;;
        esac
    done > m.txt
    t1=$(now)
    echo "run $label $cpus start $t0 $(tr "\n" " " < m.txt) end $t1"
}'
jobs=()
for ((i = 1; i <= n; i++)); do
    for c in 1 2; do
        jobs+=(--sh "$measure
measure vmm $c \"\$VMM\" --kernel \"\$FILES/bzImage\" --initrd \"\$FILES/initramfs.cpio.gz\" \
    --cpus $c --mem $mem --timeout 60s --append quiet --result-json r.json
echo \"json vmm $c \$(cat r.json)\"")
        jobs+=(--sh "$measure
measure qemu $c /bin/qemu-system-x86_64 \
    -L /usr/share/qemu -M microvm,rtc=off,pit=on,pic=on,isa-serial=on,acpi=on,auto-kernel-cmdline=off \
    -enable-kvm -cpu host -m $mem -smp $c -nodefaults \
    -no-user-config -display none -serial stdio -no-reboot \
    -kernel \"\$FILES/bzImage\" -initrd \"\$FILES/initramfs.cpio.gz\" -append 'console=ttyS0 quiet'")
    done
done

"$repo/target/release/nested-kvm" --quiet --out "$out" --timeout 90 \
    --program "$qemu" --file "$bios=/usr/share/qemu/bios-microvm.bin" \
    --file "$optrom=/usr/share/qemu/linuxboot_dma.bin" \
    --file "$kernel=bzImage" --file "$initramfs=initramfs.cpio.gz" "${jobs[@]}" >&2 || true
cat "$out"/job*/stdout > "$out/all.txt" 2>/dev/null || true

python3 - "$out/all.txt" "$vmm_cmdline" "$n" <<'PY'
import json, statistics, sys
runs = {}
mem = []
for line in open(sys.argv[1]):
    w = line.split()
    if w[:1] == ["json"]:
        j = json.loads(line.split(" ", 3)[3])
        mem.append(j.get("vmm_private_overhead_kib", 0))
        continue
    if w[:1] != ["run"]:
        continue
    label, cpus = w[1], int(w[2])
    d = dict(zip(w[3::2], w[4::2]))
    if "mark" not in d:
        runs.setdefault((label, cpus), []).append(None)
        continue
    runs.setdefault((label, cpus), []).append(
        (float(d["mark"]) - float(d["start"]), float(d.get("guest", "nan"))))
def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")
print(f"vmm command line: {sys.argv[2]} quiet; QEMU microvm: console=ttyS0 quiet; "
      f"{sys.argv[3]} interleaved runs each, medians")
print()
print("| | QEMU `microvm` | `vmm` | ratio |")
print("|---|---:|---:|---:|")
for cpus in (1, 2):
    q = [r for r in runs.get(("qemu", cpus), []) if r]
    v = [r for r in runs.get(("vmm", cpus), []) if r]
    failed = sum(1 for r in runs.get(("qemu", cpus), []) + runs.get(("vmm", cpus), []) if r is None)
    qw, vw = med([r[0] for r in q]), med([r[0] for r in v])
    qg, vg = med([r[1] for r in q]), med([r[1] for r in v])
    print(f"| wall to marker, {cpus} vCPU{'s' if cpus > 1 else ''} | {qw:.2f} s | {vw:.2f} s | {vw / qw:.2f}x |")
    print(f"| guest clock at marker, {cpus} vCPU{'s' if cpus > 1 else ''} | {qg:.2f} s | {vg:.2f} s | {vg / qg:.2f}x |")
    if failed:
        print(f"| runs without a marker, {cpus} vCPUs | {failed} | | |")
print()
print("Every run (seconds; wall from the VMM's start to the marker, guest clock at the marker):")
print()
for (label, cpus), rs in sorted(runs.items()):
    cells = ["-" if r is None else f"{r[0]:.2f}/{r[1]:.2f}" for r in rs]
    print(f"- {label}, {cpus} vCPU(s): " + ", ".join(cells))
if mem:
    print()
    print(f"vmm private memory overhead per VM (median): {statistics.median(mem) / 1024:.2f} MiB")
PY
