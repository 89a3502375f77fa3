#!/usr/bin/env bash
# Boot Debian's cloud kernel from a root image under QEMU's microvm, with the disk as a
# virtio-blk device on a virtio-mmio transport described in QEMU's ACPI DSDT: the same guest
# side (initramfs modules, /init's root= path, the image's /sbin/init) that the vmm's own
# virtio-mmio disk serves. Used to validate the guest side without the vmm, and to benchmark
# QEMU beside the vmm (issue 16).
#
#   scripts/qemu-disk-boot.sh IMAGE [rw|ro] [KERNEL-ARGS...]
#
#   IMAGE          an ext4 root image (scripts/mkrootfs.sh IMAGE)
#   rw|ro          how /init mounts it (default rw)
#   KERNEL-ARGS    appended to the command line, e.g. rvmm.run=write rvmm.token=abc
#
# Environment: QEMU_ACCEL (tcg, or kvm where /dev/kvm runs Linux; default tcg), QEMU_CPUS (1),
# QEMU_MEM (512, MiB), QEMU_TIMEOUT (600 s, then the run is killed and the script exits 124),
# QEMU_DISK_RO=1 (the drive itself read-only: virtio's F_RO), KERNEL and INITRD (default: the
# files scripts/fetch-linux-guest.sh caches), QEMU (the binary, default qemu-system-x86_64).
# The guest's console is this script's stdout; the last line (stderr) is the wall time.
#
# The machine: `-M microvm,acpi=on` (ACPI tables, so the cloud kernel, which lacks
# VIRTIO_MMIO_CMDLINE_DEVICES, finds the virtio-mmio transports in the DSDT as LNRO0005
# devices), the legacy PIT, PIC and RTC (the kernel calibrates its clocks against the PIT;
# without it the 6.1 cloud kernel hangs at "tsc: Unable to calibrate against PIT"), an ISA serial
# port for the console, and -no-reboot so that the guest's poweroff or reboot ends QEMU.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
guest=${LINUX_GUEST_CACHE:-$repo/.cache/linux-guest}
say() { echo "qemu-disk-boot: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -ge 1 ] || die "usage: $0 IMAGE [rw|ro] [KERNEL-ARGS...]"
image=$1
shift
mode=rw
case ${1:-} in
    rw | ro) mode=$1; shift ;;
esac
[ -f "$image" ] || die "$image is not a file (make one: scripts/mkrootfs.sh $image)"
kernel=${KERNEL:-$guest/bzImage}
initrd=${INITRD:-$guest/initramfs.cpio.gz}
[ -f "$kernel" ] && [ -f "$initrd" ] ||
    die "no kernel/initramfs at $kernel / $initrd: run scripts/fetch-linux-guest.sh"
qemu=${QEMU:-qemu-system-x86_64}
if ! command -v "$qemu" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "$qemu is missing: installing qemu-system-x86"
        apt-get install -y -q qemu-system-x86 >&2 || die "apt-get install qemu-system-x86 failed"
    else
        die "$qemu is missing: apt-get install qemu-system-x86"
    fi
fi
accel=${QEMU_ACCEL:-tcg}
cpu=max
[ "$accel" = kvm ] && cpu=host
drive_ro=
[ "${QEMU_DISK_RO:-0}" = 1 ] && drive_ro=,readonly=on

# Under TCG on a busy host the kernel's TSC calibration against the PIT fails ("tsc: Unable
# to calibrate against PIT", then no clock to calibrate the LAPIC timer against: a hang
# seen twice here); a fixed early TSC rate and no timer check avoid it. QEMU_TCG_TIMING
# overrides these words.
timing=
[ "$accel" = tcg ] && timing=${QEMU_TCG_TIMING-tsc_early_khz=2000000 no_timer_check}
cmdline="console=ttyS0 panic=-1 $timing root=/dev/vda $mode $*"
say "accel=$accel cpus=${QEMU_CPUS:-1} mem=${QEMU_MEM:-512}M image=$image${drive_ro} cmdline: $cmdline"
start=$(date +%s.%N)
rc=0
timeout --foreground -k 5 "${QEMU_TIMEOUT:-600}" "$qemu" \
    -M microvm,acpi=on,pit=on,pic=on,rtc=on,isa-serial=on \
    -accel "$accel" -cpu "$cpu" -smp "${QEMU_CPUS:-1}" -m "${QEMU_MEM:-512}" \
    -nodefaults -no-user-config -nographic -no-reboot \
    -serial stdio -monitor none \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    -drive "id=root,file=$image,format=raw,if=none,cache=none,aio=threads$drive_ro" \
    -device virtio-blk-device,drive=root </dev/null || rc=$?
end=$(date +%s.%N)
say "exit $rc after $(echo "$end - $start" | bc 2>/dev/null || awk "BEGIN{print $end - $start}") s"
exit "$rc"
