#!/usr/bin/env bash
# Fetch what the nested-KVM harness needs to give this machine a real KVM: QEMU (installed
# from Debian's archive when missing), and the L1 guest built from Debian's archive only.
#
#   scripts/fetch-nested-kvm.sh
#
# Produces, in $NESTED_KVM_CACHE (default .cache/nested-kvm/ in the repository, git-ignored):
#   vmlinuz        the kernel of linux-image-<ver>-amd64 (Debian's generic kernel, which
#                  has kvm-amd; the cloud kernel does not)
#   modules/       irqbypass.ko kvm.ko ccp.ko kvm-amd.ko from the same package, the four
#                  modules /dev/kvm needs on an AMD (SVM) CPU, loaded in that order
#   SOURCES        the package name, version and sha256 of what was fetched
# and, through scripts/fetch-linux-guest.sh, busybox-static (the L1's userland) and the L2
# guest (Debian's cloud kernel and the project's initramfs) in .cache/linux-guest/.
#
# QEMU: `qemu-system-x86_64`, version 10 or later, must run `-accel tcg -cpu max` (QEMU's
# software CPU emulates AMD SVM with nested paging). When it is missing or older, the script
# installs Debian's qemu-system-x86 with apt-get (root or sudo needed; on Debian 12 from
# bookworm-backports, which it adds to apt's sources), or says how to.
#
# Cached and idempotent: once fetched, nothing is downloaded again (NESTED_KVM_REFRESH=1
# fetches the current packages again). Nothing is installed on the host but QEMU.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${NESTED_KVM_CACHE:-$repo/.cache/nested-kvm}
meta=linux-image-amd64

say() { echo "fetch-nested-kvm: $*" >&2; }
die() { say "error: $*"; exit 1; }

# shellcheck source=scripts/debian-lib.sh
. "$repo/scripts/debian-lib.sh"

# 1. QEMU (not with NESTED_KVM_NO_QEMU=1: a host with hardware KVM runs the jobs directly).
# QEMU 10 or later: with Debian 12's QEMU 7.2 the emulated SVM lost interrupts now and then
# (an L2 vCPU ran on for minutes without an exit, a soft lockup in the L1) and shut nested
# guests down for no reason. On Debian 12 it comes from bookworm-backports (Debian's
# archive), which this script adds to apt's sources when missing.
qemu=${QEMU:-qemu-system-x86_64}
min_major=${NESTED_KVM_QEMU_MIN:-10}
qemu_major() { "$1" --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p' | head -n 1; }
install_qemu() {
    command -v apt-get >/dev/null ||
        die "$qemu is missing or older than $min_major and this is not a Debian/Ubuntu machine: install QEMU $min_major or later (qemu-system-x86_64) yourself"
    local codename="" target=()
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            say "adding Debian's bookworm-backports to apt's sources (for QEMU $min_major)"
            echo "deb http://deb.debian.org/debian bookworm-backports main" |
                as_root tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
            as_root apt-get update -qq >&2 || die "apt-get update failed"
        fi
        target=(-t bookworm-backports)
    fi
    say "installing Debian's qemu-system-x86 ${target[*]} (apt-get install)"
    as_root apt-get install -y -qq --no-install-recommends "${target[@]}" qemu-system-x86 >&2 || {
        as_root apt-get update -qq >&2 || true
        as_root apt-get install -y -qq --no-install-recommends "${target[@]}" qemu-system-x86 >&2
    } || die "apt-get install qemu-system-x86 failed: install QEMU $min_major or later by hand"
}
if [ "${NESTED_KVM_NO_QEMU:-0}" = 1 ]; then
    :
elif [ -n "${QEMU:-}" ] && ! command -v "$QEMU" >/dev/null; then
    die "QEMU=$QEMU is not a program this shell can run (unset QEMU to use Debian's qemu-system-x86_64)"
elif [ -n "${QEMU:-}" ]; then
    : # the caller's choice
elif ! command -v "$qemu" >/dev/null || [ "$(qemu_major "$qemu")" -lt "$min_major" ] 2>/dev/null ||
    [ -z "$(qemu_major "$qemu")" ]; then
    install_qemu
    major=$(qemu_major "$qemu")
    [ -n "$major" ] && [ "$major" -ge "$min_major" ] ||
        die "$qemu is version ${major:-unknown} after the install; QEMU $min_major or later is needed (NESTED_KVM_QEMU_MIN=7 accepts older ones, which are flaky)"
fi
if [ "${NESTED_KVM_NO_QEMU:-0}" != 1 ]; then
    "$qemu" -accel help 2>/dev/null | grep -qx tcg || die "$qemu has no TCG accelerator"
fi

# 2. The L1 guest's userland and the L2 guest (that script takes its own lock).
bash "$repo/scripts/fetch-linux-guest.sh" >&2

# 3. The generic kernel and its KVM modules.
for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is missing: this script needs a Debian or Ubuntu machine"
done

kernel_package() {
    apt-cache show --no-all-versions "$meta" 2>/dev/null |
        sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-amd64\).*/\1/p' | grep -v cloud | head -n 1
}

modules="kernel/virt/lib/irqbypass.ko kernel/arch/x86/kvm/kvm.ko kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm-amd.ko"

fetch() {
    local kpkg tmp deb
    kpkg=$(kernel_package)
    if [ -z "$kpkg" ]; then
        say "refreshing apt's package lists (apt-get update)"
        as_root apt-get update -qq >&2 || die "apt-get update failed"
        kpkg=$(kernel_package)
    fi
    [ -n "$kpkg" ] || die "apt knows no '$meta' (is this Debian with 'main' enabled?)"
    say "L1 kernel package: $kpkg"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    if ! apt_download "$tmp" "$kpkg"; then
        as_root apt-get update -qq >&2 || true
        kpkg=$(kernel_package)
        apt_download "$tmp" "$kpkg" || die "apt-get download $kpkg failed"
    fi
    deb=$(compgen -G "$tmp/${kpkg}_*.deb" | head -n 1)
    [ -n "$deb" ] || die "apt-get download left no $kpkg .deb"
    dpkg-deb -x "$deb" "$tmp/x"
    rm -rf "$cache/modules" "$cache/vmlinuz"
    mkdir -p "$cache/modules"
    local vmlinuz moddir m
    vmlinuz=$(compgen -G "$tmp/x/boot/vmlinuz-*" | head -n 1)
    [ -n "$vmlinuz" ] || die "$deb has no boot/vmlinuz-*"
    moddir=$(compgen -G "$tmp/x/lib/modules/*" | head -n 1)
    for m in $modules; do
        [ -f "$moddir/$m" ] || die "$deb has no $m"
        cp "$moddir/$m" "$cache/modules/"
    done
    cp "$vmlinuz" "$cache/vmlinuz"
    {
        echo "# What $0 fetched ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
        echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) sha256:$(sha256sum "$deb" | cut -d' ' -f1)"
        echo "# modules: $modules"
    } >"$cache/SOURCES"
}

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# One fetch at a time (tests run in parallel).
lock_dir "$cache"
if [ "${NESTED_KVM_REFRESH:-0}" = 1 ] || [ ! -s "$cache/vmlinuz" ] || [ ! -s "$cache/SOURCES" ] ||
    [ ! -s "$cache/modules/kvm-amd.ko" ]; then
    fetch
else
    say "cached: $(grep -v '^#' "$cache/SOURCES" | cut -d' ' -f1,2)"
fi
echo "l1-kernel:  $cache/vmlinuz"
echo "l1-modules: $cache/modules"
