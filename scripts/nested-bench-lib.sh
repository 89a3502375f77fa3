# Shell helpers shared by the benchmarks that run QEMU's microvm beside vmm inside the
# nested-KVM L1 (bench-boot-nested.sh, bench-disk-nested.sh); sourced, not run. The sourcing
# script sets `repo` (the repository's root) and `set -euo pipefail` first.

# nested_bench_setup: finds (or installs, through fetch-nested-kvm.sh) QEMU and the files its
# microvm needs in the L1, builds vmm and nested-kvm, and fetches the Linux guest. Sets:
#   qemu        the qemu-system-x86_64 binary (override with $QEMU)
#   bios        bios-microvm.bin (Debian's seabios)
#   optrom      linuxboot_dma.bin, the option ROM that loads the kernel (QEMU 10's microvm needs
#               it; x-option-roms=off left the guest in the firmware)
#   kernel, initramfs   the guest (scripts/fetch-linux-guest.sh)
nested_bench_setup() {
    qemu=$(command -v "${QEMU:-qemu-system-x86_64}") || {
        bash "$repo/scripts/fetch-nested-kvm.sh" >/dev/null
        qemu=$(command -v qemu-system-x86_64)
    }
    bios=""
    local b
    for b in /usr/share/qemu/bios-microvm.bin /usr/share/seabios/bios-microvm.bin; do
        [ -f "$b" ] && { bios=$b; break; }
    done
    [ -n "$bios" ] || { echo "no bios-microvm.bin in /usr/share/qemu or /usr/share/seabios: install Debian's seabios" >&2; exit 1; }
    optrom=/usr/share/qemu/linuxboot_dma.bin
    [ -f "$optrom" ] || { echo "no $optrom: install Debian's qemu-system-data" >&2; exit 1; }
    (cd "$repo" && cargo build --release --quiet -p vmm --bins && cargo build --release --quiet -p tests --bin nested-kvm)
    eval "$(bash "$repo/scripts/fetch-linux-guest.sh" 2>/dev/null | sed -n 's/^kernel: *\(.*\)/kernel=\1/p; s/^initramfs: *\(.*\)/initramfs=\1/p')"
}
