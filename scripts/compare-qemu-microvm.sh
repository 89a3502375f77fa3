#!/usr/bin/env bash
# Boot the same Linux kernel, initramfs and command line with this project's vmm and with
# QEMU's microvm machine, N times each, and print the median time from process start to the
# guest's marker line (RVMM-LINUX-BOOTED) and to exit, side by side.
#
#   scripts/compare-qemu-microvm.sh [N]        (default N=10; env: MEM=512M CPUS=2)
#
# Needs a host with hardware virtualization (vmx/svm) whose KVM is not PVM: unmodified
# Linux kernels do not run on PVM, under either VMM. There the script says so and exits 0.
# The kernel and initramfs come from scripts/fetch-linux-guest.sh (or KERNEL=... INITRD=...).
# QEMU: Debian/Ubuntu package qemu-system-x86 (`sudo apt-get install qemu-system-x86`).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${1:-10}
mem=${MEM:-512M}
cpus=${CPUS:-2}
cache=${LINUX_GUEST_CACHE:-$repo/.cache/linux-guest}
kernel=${KERNEL:-$cache/bzImage}
initrd=${INITRD:-$cache/initramfs.cpio.gz}
cmdline=${CMDLINE:-console=ttyS0 reboot=t panic=-1}
marker=RVMM-LINUX-BOOTED
qemu=${QEMU:-qemu-system-x86_64}

say() { echo "compare-qemu-microvm: $*"; }

# 1. Can this host run unmodified Linux at all?
why=""
if [ -d /sys/module/kvm_pvm ]; then
    why="this host's KVM is PVM (the kvm_pvm module is loaded): it runs guests without hardware virtualization, and unmodified Linux kernels die in its instruction emulator, under QEMU as under this vmm"
elif ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    why="the CPU shows no vmx/svm flag (no hardware virtualization, e.g. nested virtualization is off)"
elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    why="/dev/kvm is missing or not accessible to $(id -un) (load kvm_intel/kvm_amd, or join the kvm group)"
fi
if [ -n "$why" ]; then
    say "cannot run on this host: $why."
    say "run it on a host with hardware virtualization (vmx/svm) and a regular KVM."
    exit 0
fi

# 2. Tools and inputs.
case "$n" in '' | *[!0-9]* | 0) say "N must be a positive number, not '$n'"; exit 2 ;; esac
if ! command -v "$qemu" >/dev/null; then
    say "$qemu is missing: install it with 'sudo apt-get install qemu-system-x86' (or set QEMU=...)"
    exit 1
fi
if ! "$qemu" -machine help | grep -qw microvm; then
    say "$qemu has no microvm machine (QEMU 4.2 or later has it)"
    exit 1
fi
if [ ! -f "$kernel" ] || [ ! -f "$initrd" ]; then
    say "no kernel/initramfs at $kernel, $initrd: run scripts/fetch-linux-guest.sh first"
    exit 1
fi
(cd "$repo" && cargo build --release --quiet -p vmm --bin vmm)
vmm=${VMM:-$repo/target/release/vmm}

now_ns() { date +%s%N; }

# Runs "$@" with the guest console on stdout; prints "<ms to marker> <ms to exit>"
# ("- <ms>" when the marker never appeared).
measure() {
    local start mark end
    start=$(now_ns)
    mark=$(timeout 60 "$@" 2>/dev/null | {
        seen=""
        while IFS= read -r line; do
            if [ -z "$seen" ] && [[ $line == *"$marker"* ]]; then
                seen=$(now_ns)
            fi
        done
        echo "$seen"
    } || true)
    end=$(now_ns)
    if [ -n "$mark" ]; then
        echo "$(((mark - start) / 1000000)) $(((end - start) / 1000000))"
    else
        echo "- $(((end - start) / 1000000))"
    fi
}

median() { # reads numbers (or "-") on stdin
    sort -n | awk '$1 != "-" { v[n++] = $1 } END {
        if (n == 0) { print "n/a"; exit }
        if (n % 2) print v[(n - 1) / 2]; else print (v[n / 2 - 1] + v[n / 2]) / 2 }'
}

run_vmm() {
    "$vmm" --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" \
        --mem "$mem" --cpus "$cpus" --serial stdio --timeout 30s </dev/null
}

run_qemu() {
    # microvm with its legacy devices off except the serial port; ACPI on (Linux finds its
    # CPUs through the MADT there too); reboot=t's triple fault ends QEMU (-no-reboot).
    # auto-kernel-cmdline=off keeps QEMU from appending virtio-mmio parameters: the same
    # command line as the vmm's.
    "$qemu" -M microvm,x-option-roms=off,rtc=off,pit=on,pic=on,isa-serial=on,acpi=on,auto-kernel-cmdline=off \
        -enable-kvm -cpu host -m "$mem" -smp "$cpus" \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -kernel "$kernel" -initrd "$initrd" -append "$cmdline" </dev/null
}

say "kernel $kernel, initramfs $initrd"
say "command line '$cmdline', $mem, $cpus vCPUs, $n boots each (alternating)"
say "$("$qemu" --version | head -n 1)"
vm_res=() q_res=()
for ((i = 1; i <= n; i++)); do
    vm_res+=("$(measure run_vmm)")
    q_res+=("$(measure run_qemu)")
done

row() { # name, results...
    local name=$1
    shift
    local ok marker_med exit_med
    ok=$(printf '%s\n' "$@" | awk '$1 != "-"' | wc -l)
    marker_med=$(printf '%s\n' "$@" | cut -d' ' -f1 | median)
    exit_med=$(printf '%s\n' "$@" | cut -d' ' -f2 | median)
    printf '%-14s %18s %16s %10s\n' "$name" "$marker_med" "$exit_med" "$ok/$n"
}
echo
printf '%-14s %18s %16s %10s\n' "" "to marker (ms)" "to exit (ms)" "marker"
row "vmm" "${vm_res[@]}"
row "qemu microvm" "${q_res[@]}"
echo "(medians from process start; the marker is the initramfs's $marker line)"
