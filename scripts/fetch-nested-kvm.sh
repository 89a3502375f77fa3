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
# QEMU: `qemu-system-x86_64` must run `-accel tcg -cpu max` (QEMU's software CPU emulates
# AMD SVM with nested paging). When it is missing, the script installs Debian's
# qemu-system-x86 with apt-get (root or sudo needed), or says how to.
#
# Cached and idempotent: once fetched, nothing is downloaded again (NESTED_KVM_REFRESH=1
# fetches the current packages again). Nothing is installed on the host but QEMU.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${NESTED_KVM_CACHE:-$repo/.cache/nested-kvm}
meta=linux-image-amd64

say() { echo "fetch-nested-kvm: $*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "'$*' needs root: run this script as root or install sudo"
    fi
}

# 1. QEMU (not with NESTED_KVM_NO_QEMU=1: a host with hardware KVM runs the jobs directly).
qemu=${QEMU:-qemu-system-x86_64}
if [ "${NESTED_KVM_NO_QEMU:-0}" = 1 ]; then
    :
elif [ -n "${QEMU:-}" ] && ! command -v "$QEMU" >/dev/null; then
    die "QEMU=$QEMU is not a program this shell can run (unset QEMU to use Debian's qemu-system-x86_64)"
elif ! command -v "$qemu" >/dev/null; then
    command -v apt-get >/dev/null ||
        die "$qemu is missing and this is not a Debian/Ubuntu machine: install QEMU (qemu-system-x86_64, version 7 or later) yourself"
    say "installing Debian's qemu-system-x86 (apt-get install)"
    as_root apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2 || {
        as_root apt-get update -qq >&2 || true
        as_root apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2
    } || die "apt-get install qemu-system-x86 failed: install it by hand ('sudo apt-get install qemu-system-x86')"
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
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
    if ! (cd "$tmp" && apt-get download -q "$kpkg" >&2); then
        as_root apt-get update -qq >&2 || true
        kpkg=$(kernel_package)
        (cd "$tmp" && apt-get download -q "$kpkg" >&2) || die "apt-get download $kpkg failed"
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
# One fetch at a time (tests run in parallel); the lock goes with the process.
if command -v flock >/dev/null; then
    exec 9>"$cache/.lock"
    flock 9
fi
if [ "${NESTED_KVM_REFRESH:-0}" = 1 ] || [ ! -s "$cache/vmlinuz" ] || [ ! -s "$cache/SOURCES" ] ||
    [ ! -s "$cache/modules/kvm-amd.ko" ]; then
    fetch
else
    say "cached: $(grep -v '^#' "$cache/SOURCES" | cut -d' ' -f1,2)"
fi
echo "l1-kernel:  $cache/vmlinuz"
echo "l1-modules: $cache/modules"
