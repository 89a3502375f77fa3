#!/usr/bin/env bash
# Make a small ext4 root image for booting Linux from a virtio block disk (issue 16).
#
#   scripts/mkrootfs.sh IMAGE [SIZE_MIB]      (SIZE_MIB default 64; >= 300 for the default
#                                              256 MiB benchmark file)
#
# The image holds busybox-static (from the cache scripts/fetch-linux-guest.sh fills) with a
# symbolic link for each applet, /sbin/init from guest/rootfs/init (prints RVMM-DISK-INIT and
# runs the tasks that rvmm.run= names, from guest/rootfs/run/), and /usr/bin/blkbench built
# from guest/tools/blkbench.c with `gcc -static -O2`. MKROOTFS_EXTRA=DIR copies DIR's
# contents over the tree too (tests add their own tasks under DIR/etc/rvmm/run/).
#
# No root privileges, no loop mount: `mkfs.ext4 -d TREE -E root_owner=0:0` writes the tree
# straight into the image file (e2fsprogs >= 1.43). Fixed UUID, hash seed and file times, but
# NOT byte-reproducible: two runs still differ in a few bytes mkfs writes (not investigated).
# Idempotent: IMAGE is rewritten on every run (a boot
# that wrote to it does not leak into the next test); the staged tree and blkbench are cached
# in $ROOTFS_CACHE (default .cache/rootfs/) and rebuilt only when their inputs change.
# e2fsprogs is installed with apt-get only if mkfs.ext4 is missing (that needs root).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ROOTFS_CACHE:-$repo/.cache/rootfs}
guest_cache=${LINUX_GUEST_CACHE:-$repo/.cache/linux-guest}

say() { echo "mkrootfs: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=scripts/debian-lib.sh
. "$repo/scripts/debian-lib.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 IMAGE [SIZE_MIB]"
image=$1
size=${2:-64}
case $size in
    '' | *[!0-9]*) die "SIZE_MIB '$size' is not a whole number of MiB" ;;
esac
[ "$size" -ge 8 ] && [ "$size" -le 65536 ] || die "SIZE_MIB $size: use 8 to 65536"
[ -e "$image" ] && [ ! -f "$image" ] && die "$image exists and is not a regular file (refusing to overwrite a device)"

if ! command -v mkfs.ext4 >/dev/null && [ ! -x /sbin/mkfs.ext4 ]; then
    say "mkfs.ext4 is missing: installing e2fsprogs"
    as_root apt-get install -y -q e2fsprogs >&2 || die "apt-get install e2fsprogs failed"
fi
mkfs=$(command -v mkfs.ext4 || echo /sbin/mkfs.ext4)
command -v gcc >/dev/null || die "gcc is missing (apt-get install gcc libc6-dev): it builds blkbench"

busybox=$guest_cache/busybox/bin/busybox
if [ ! -x "$busybox" ]; then
    say "no busybox in $guest_cache: running scripts/fetch-linux-guest.sh"
    "$repo/scripts/fetch-linux-guest.sh" >&2
fi
[ -x "$busybox" ] || die "$busybox is missing after scripts/fetch-linux-guest.sh"

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
lock_dir "$cache"

# blkbench: rebuilt when its source changes.
src=$repo/guest/tools/blkbench.c
bench=$cache/blkbench
stamp=$(sha256sum "$src" | cut -d' ' -f1)
if [ ! -x "$bench" ] || [ "$(cat "$bench.sha256" 2>/dev/null)" != "$stamp" ]; then
    say "building blkbench (gcc -static -O2)"
    gcc -static -O2 -Wall -Wextra -o "$bench.tmp" "$src" ||
        die "gcc -static failed (static glibc: apt-get install libc6-dev)"
    mv "$bench.tmp" "$bench"
    echo "$stamp" >"$bench.sha256"
fi

# The tree, staged afresh (cheap) so that it always matches the inputs.
tree=$cache/tree
rm -rf "$tree"
mkdir -p "$tree"
for d in bin sbin usr/bin usr/sbin dev proc sys tmp var etc/rvmm root mnt; do
    mkdir -p "$tree/$d"
done
chmod 1777 "$tree/tmp"
cp "$busybox" "$tree/bin/busybox"
"$busybox" --list-full | while read -r applet; do
    case $applet in
        '' | /* | *..* | bin/busybox) continue ;;
    esac
    [ -e "$tree/$applet" ] || ln -s /bin/busybox "$tree/$applet"
done
[ -L "$tree/bin/sh" ] || die "busybox --list-full gave no bin/sh: is $busybox an x86_64 busybox?"
rm -f "$tree/sbin/init"
install -m 755 "$repo/guest/rootfs/init" "$tree/sbin/init"
cp -r "$repo/guest/rootfs/run" "$tree/etc/rvmm/run"
install -m 755 "$bench" "$tree/usr/bin/blkbench"
echo rvmm-disk >"$tree/etc/hostname"
if [ -n "${MKROOTFS_EXTRA:-}" ]; then
    [ -d "$MKROOTFS_EXTRA" ] || die "MKROOTFS_EXTRA=$MKROOTFS_EXTRA is not a directory"
    cp -r "$MKROOTFS_EXTRA"/. "$tree/"
fi
# Fixed mtimes in the tree and a fixed mkfs UUID, hash seed and clock.
find "$tree" -exec touch -h -d @0 {} +

tmp=$image.tmp.$$
rm -f "$tmp"
E2FSPROGS_FAKE_TIME=1 "$mkfs" -q -F -t ext4 -L rvmm-root \
    -U 8b6b0d53-6f3c-4a5e-9c1d-7276564d4d31 \
    -E root_owner=0:0,hash_seed=2b8a1f5e-0d7c-4b3a-8e6f-5a4c3b2a1908 \
    -d "$tree" "$tmp" "${size}M" >&2 ||
    { rm -f "$tmp"; die "mkfs.ext4 -d failed (e2fsprogs >= 1.43 is needed for -d)"; }
mv "$tmp" "$image"
say "$image: ${size} MiB ext4, $(find "$tree" | wc -l) entries (busybox, /sbin/init, blkbench)"
echo "$image"
