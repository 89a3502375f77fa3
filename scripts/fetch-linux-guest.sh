#!/usr/bin/env bash
# Fetch a Linux guest for the vmm: Debian's cloud kernel and a busybox initramfs.
#
#   scripts/fetch-linux-guest.sh
#
# On a Debian or Ubuntu machine this produces, installing nothing on the host:
#   $LINUX_GUEST_CACHE/bzImage             the kernel of linux-image-<ver>-cloud-amd64
#   $LINUX_GUEST_CACHE/initramfs.cpio.gz   busybox-static + /init (prints RVMM-LINUX-BOOTED;
#                                          with root= it loads the virtio block modules it
#                                          carries and switch_roots to the disk)
# LINUX_GUEST_CACHE defaults to .cache/linux-guest/ in the repository (git-ignored).
#
# How: `apt-get download` of linux-image-cloud-amd64 (the meta-package, only to read which
# versioned linux-image-<ver>-cloud-amd64 it depends on), of that package and of
# busybox-static; `dpkg-deb -x` into the cache; the initramfs is written by the project's
# own reproducible writer (`mkinitramfs`, vmm/src/images/initramfs.rs), built with cargo.
#
# Cached and idempotent: once the kernel and busybox are in the cache, a run downloads
# nothing (and asks apt nothing); it only rewrites the initramfs, byte for byte the same.
# LINUX_GUEST_REFRESH=1 resolves and downloads the current packages again.
# Root (or sudo) is needed only when apt's package lists must be refreshed (`apt-get update`:
# when they are missing, older than LINUX_GUEST_LISTS_MAX_AGE_DAYS (7), or name a version
# the mirror no longer has).
# MKINITRAMFS=/path/to/mkinitramfs uses a prebuilt writer instead of `cargo run`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${LINUX_GUEST_CACHE:-$repo/.cache/linux-guest}
meta=linux-image-cloud-amd64

say() { echo "fetch-linux-guest: $*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is missing: this script needs a Debian or Ubuntu machine (elsewhere, pass your own --kernel and --initrd to vmm)"
done
case "$(uname -m)" in
    x86_64) ;;
    *) say "warning: this host is $(uname -m); the guest is x86_64 (busybox's applet list cannot be read here, only the applets /init needs are linked)" ;;
esac

# shellcheck source=scripts/debian-lib.sh
. "$repo/scripts/debian-lib.sh"

# apt's package lists exist and one was refreshed in the last $max_age days.
max_age=${LINUX_GUEST_LISTS_MAX_AGE_DAYS:-7}
lists_fresh() {
    local lists=/var/lib/apt/lists/
    eval "$(apt-config shell lists Dir::State::lists/d)"
    [ -n "$(find "${lists%/}/" -maxdepth 1 -name '*_Packages*' -mtime "-$max_age" 2>/dev/null | head -n 1)" ]
}

apt_update() {
    say "refreshing apt's package lists (apt-get update)"
    as_root apt-get update -qq >&2 || die "apt-get update failed"
}

# The versioned kernel package the meta-package depends on (candidate version).
kernel_package() {
    apt-cache show --no-all-versions "$meta" 2>/dev/null |
        sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*-cloud-amd64\).*/\1/p' | head -n 1
}

# apt-get download PKG... into $cache/debs.
download() { apt_download "$cache/debs" "$@"; }

fetch_packages() {
    lists_fresh || apt_update
    local kpkg
    kpkg=$(kernel_package)
    if [ -z "$kpkg" ]; then
        apt_update
        kpkg=$(kernel_package)
    fi
    [ -n "$kpkg" ] || die "apt knows no '$meta' (is this Debian with 'main' enabled? On Ubuntu use your own kernel: pass --kernel and --initrd to vmm)"
    say "kernel package: $kpkg (from $meta); userland: busybox-static"
    rm -rf "$cache/debs"
    if ! download "$kpkg" busybox-static; then
        # Stale lists name versions the mirror no longer has: refresh and resolve again.
        apt_update
        kpkg=$(kernel_package)
        [ -n "$kpkg" ] || die "apt knows no '$meta' after apt-get update"
        download "$kpkg" busybox-static || die "apt-get download $kpkg busybox-static failed"
    fi

    local kdeb bdeb
    kdeb=$(compgen -G "$cache/debs/${kpkg}_*.deb" | head -n 1)
    bdeb=$(compgen -G "$cache/debs/busybox-static_*.deb" | head -n 1)
    [ -n "$kdeb" ] && [ -n "$bdeb" ] || die "the downloaded packages are not in $cache/debs"

    rm -rf "$cache/kernel" "$cache/busybox"
    dpkg-deb -x "$kdeb" "$cache/kernel"
    dpkg-deb -x "$bdeb" "$cache/busybox"
    local vmlinuz
    vmlinuz=$(compgen -G "$cache/kernel/boot/vmlinuz-*" | head -n 1)
    [ -n "$vmlinuz" ] || die "$kdeb has no boot/vmlinuz-*"
    [ -x "$cache/busybox/bin/busybox" ] || die "$bdeb has no bin/busybox"
    cp "$vmlinuz" "$cache/bzImage.tmp"
    mv "$cache/bzImage.tmp" "$cache/bzImage"
    {
        echo "# What $0 fetched ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
        for deb in "$kdeb" "$bdeb"; do
            echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) sha256:$(sha256sum "$deb" | cut -d' ' -f1)"
        done
        echo "# bzImage = ${vmlinuz#"$cache"/}"
    } >"$cache/SOURCES"
    # The packages' contents stay in kernel/ and busybox/ (modules included, for guests
    # that want them); the .deb files themselves are not needed again.
    rm -rf "$cache/debs"
}

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# One run at a time (tests run in parallel and rewrite the initramfs).
lock_dir "$cache"

if [ "${LINUX_GUEST_REFRESH:-0}" = 1 ] || [ ! -s "$cache/bzImage" ] ||
    [ ! -x "$cache/busybox/bin/busybox" ] || [ ! -s "$cache/SOURCES" ]; then
    fetch_packages
else
    say "cached: $(grep -v '^#' "$cache/SOURCES" | cut -d' ' -f1,2 | paste -sd, -) (LINUX_GUEST_REFRESH=1 fetches again)"
fi

# A bzImage has "HdrS" at 0x202.
[ "$(dd if="$cache/bzImage" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] ||
    die "$cache/bzImage is not a bzImage"

# The kernel's module directory: the initramfs carries the virtio block modules (and what
# they depend on) from it, so that root=/dev/vda works.
moddir=$(compgen -G "$cache/kernel/lib/modules/*" | head -n 1)
[ -n "$moddir" ] && [ -d "$moddir/kernel" ] ||
    die "$cache/kernel has no lib/modules/<release>/kernel (LINUX_GUEST_REFRESH=1 fetches again)"

initramfs=$cache/initramfs.cpio.gz
if [ -n "${MKINITRAMFS:-}" ]; then
    "$MKINITRAMFS" --modules "$moddir" "$cache/busybox/bin/busybox" "$initramfs" >&2
else
    command -v "${CARGO:-cargo}" >/dev/null ||
        die "cargo is missing: the initramfs is written by the project's mkinitramfs (see README for the Rust set-up), or set MKINITRAMFS"
    (cd "$repo" && "${CARGO:-cargo}" run --release --quiet -p vmm --bin mkinitramfs -- \
        --modules "$moddir" "$cache/busybox/bin/busybox" "$initramfs") >&2
fi

echo "kernel:    $cache/bzImage"
echo "initramfs: $initramfs"
