#!/usr/bin/env bash
# Disk throughput on real KVM, side by side: this project's vmm (`--disk`) and QEMU's microvm
# (`-device virtio-blk-device`) boot the same Debian cloud kernel, initramfs and root image
# inside the same L1 (the nested-KVM harness), runs interleaved, and run the root image's
# `blkbench` (guest/tools/blkbench.c: O_DIRECT, 4 KiB-aligned buffers) on a second disk.
#
#   scripts/bench-disk-nested.sh [N]      (N runs per VMM, default 3)
#
# Each run boots with two disks, both fresh copies of the root image grown (sparse) to
# 320 MiB: whichever the guest calls /dev/vda is the root (mounted read-only), /dev/vdb is
# measured raw: sequential write then read of 256 MiB in 1 MiB blocks (MB/s), then 4 KiB
# random reads for 5 s (IOPS). The images live in the L1's RAM (its initramfs), so both VMMs
# go through the same page cache; QEMU runs with its defaults (cache=writeback, a thread pool
# for the I/O), the vmm serves requests on its main loop. Also reported: the guest's clock
# when the disk's /sbin/init starts (RVMM-DISK-INIT), i.e. the boot time to the disk's init.
# Medians over N; ratio = vmm / QEMU (higher is better for MB/s and IOPS).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${1:-3}
case "$n" in '' | *[!0-9]* | 0) echo "N must be a positive number, not '$n'" >&2; exit 2 ;; esac
mem=${MEM:-512M}
# shellcheck source=nested-bench-lib.sh
. "$repo/scripts/nested-bench-lib.sh"
nested_bench_setup
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bash "$repo/scripts/mkrootfs.sh" "$out/root.img" 64 >&2

append="root=/dev/vda ro quiet rvmm.run=bench rvmm.bench=/dev/vdb rvmm.bench_mib=256 rvmm.bench_secs=5 rvmm.bench_modes=write,read,randread"
# One run: fresh disks, the VMM's console filtered to the lines that matter.
run='disks() { for d in a b; do cp "$FILES/root.img" $d.img; truncate -s 320M $d.img; done; }
run() { # label command...
    label=$1; shift
    disks
    "$@" < /dev/null > console.vm 2> stderr.vm
    st=$?
    grep -a "BLKBENCH\|RVMM-DISK-INIT\|RVMM-TASK" console.vm | sed "s/^/$label /"
    echo "$label status $st"
    rm -f a.img b.img
}'
jobs=()
for ((i = 1; i <= n; i++)); do
    jobs+=(--sh "$run
run vmm \"\$VMM\" --kernel \"\$FILES/bzImage\" --initrd \"\$FILES/initramfs.cpio.gz\" \
    --mem $mem --timeout 200s --disk a.img --disk b.img --append '$append'")
    jobs+=(--sh "$run
run qemu /bin/qemu-system-x86_64 \
    -L /usr/share/qemu -M microvm,rtc=off,pit=on,pic=on,isa-serial=on,acpi=on,auto-kernel-cmdline=off \
    -enable-kvm -cpu host -m $mem -smp 1 -nodefaults \
    -no-user-config -display none -serial stdio -no-reboot \
    -drive id=a,file=a.img,format=raw,if=none -device virtio-blk-device,drive=a \
    -drive id=b,file=b.img,format=raw,if=none -device virtio-blk-device,drive=b \
    -kernel \"\$FILES/bzImage\" -initrd \"\$FILES/initramfs.cpio.gz\" \
    -append 'console=ttyS0 $append'")
done

"$repo/target/release/nested-kvm" --quiet --out "$out/jobs" --timeout 300 \
    --program "$qemu" --file "$bios=/usr/share/qemu/bios-microvm.bin" \
    --file "$optrom=/usr/share/qemu/linuxboot_dma.bin" \
    --file "$kernel=bzImage" --file "$initramfs=initramfs.cpio.gz" \
    --file "$out/root.img=root.img" "${jobs[@]}" >&2 || true
cat "$out"/jobs/job*/stdout > "$out/all.txt" 2>/dev/null || true
[ -n "${KEEP_OUTPUT:-}" ] && cp "$out/all.txt" "$KEEP_OUTPUT"

python3 - "$out/all.txt" "$n" "$append" <<'PY'
import re, statistics, sys
runs = {"vmm": [], "qemu": []}
cur = {}
for line in open(sys.argv[1], errors="replace"):
    w = line.split()
    if len(w) < 2 or w[0] not in runs:
        continue
    label = w[0]
    r = cur.setdefault(label, {})
    for k, v in re.findall(r"(\w+)=([0-9.]+)", line):
        r[k] = float(v)
    if w[1] == "status":
        r["status"] = int(w[2])
        runs[label].append(r)
        cur[label] = {}
def med(label, key):
    xs = [r[key] for r in runs[label] if key in r]
    return statistics.median(xs) if xs else float("nan")
print(f"{sys.argv[2]} interleaved runs per VMM in one L1, medians; guest command line: {sys.argv[3]}")
print()
print("| | QEMU `microvm` | `vmm` | vmm / QEMU |")
print("|---|---:|---:|---:|")
for key, what, unit in [("seq_write_mbps", "sequential write, 1 MiB O_DIRECT", "MB/s"),
                        ("seq_read_mbps", "sequential read, 1 MiB O_DIRECT", "MB/s"),
                        ("rand_read_iops", "random read, 4 KiB O_DIRECT", "IOPS"),
                        ("uptime", "guest clock at the disk's init", "s")]:
    q, v = med("qemu", key), med("vmm", key)
    fmt = (lambda x: f"{x:.2f} {unit}") if unit == "s" else (lambda x: f"{x:,.0f} {unit}")
    print(f"| {what} | {fmt(q)} | {fmt(v)} | {v / q:.2f}x |")
print()
for label in ("vmm", "qemu"):
    cells = [", ".join(f"{k}={r[k]:g}" for k in ("seq_write_mbps", "seq_read_mbps", "rand_read_iops", "uptime") if k in r)
             + f" (status {r.get('status')})" for r in runs[label]]
    print(f"- {label}: " + "; ".join(cells))
PY
