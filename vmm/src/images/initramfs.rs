//! A reproducible initramfs writer: the "newc" cpio format (what Linux unpacks into its
//! rootfs), compressed with gzip, and the busybox-based guest that `mkinitramfs` builds.
//!
//! Reproducible byte for byte: entries are sorted by path, every mtime is 0, owners are
//! root, inode numbers are assigned 1, 2, 3... in that order, and the gzip header carries
//! no file name and mtime 0. The same inputs give the same bytes on every machine.

use flate2::{Compression, GzBuilder};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

/// The line `/init` prints once the guest's userland runs.
pub const MARKER: &str = "RVMM-LINUX-BOOTED";

/// The guest's `/init`: mounts proc, sys and devtmpfs, prints [`MARKER`], the guest clock,
/// the kernel release, the online CPUs, the memory the kernel saw and the serial port's
/// interrupt and transmit counts, then does its *action*:
///
/// - `poweroff` (the default): powers the machine off (ACPI S5), which the VMM reports as
///   the `power-off` outcome;
/// - `reboot`: resets it (`reboot=k` or ACPI's reset register: the VMM's `reset` outcome);
/// - `shell`: prints `rvmm-linux: shell ready` and runs a busybox shell on the console;
/// - `panic`: crashes the kernel through `/proc/sysrq-trigger`;
/// - `none`: stays up (idle) until the VMM ends it.
///
/// The action comes from `/etc/rvmm-action` when an archive appended to the initramfs
/// provides that file (so the kernel command line can stay the VMM's default), else from
/// `rvmm.action=` on the kernel command line.
///
/// With `root=` on the kernel command line it first sources [`ROOT_SCRIPT`], which mounts
/// that root and `switch_root`s to it (or prints `RVMM-ROOT-FAILED` and powers off), so
/// nothing after that line runs. Without `root=` it does exactly the above.
pub const INIT_SCRIPT: &str = "#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
action=poweroff
root=
for arg in $(cat /proc/cmdline); do
    case $arg in
        rvmm.action=*) action=${arg#rvmm.action=} ;;
        root=*) root=${arg#root=} ;;
    esac
done
[ -n \"$root\" ] && . /lib/rvmm/mount-root
[ -s /etc/rvmm-action ] && action=$(cat /etc/rvmm-action)
echo RVMM-LINUX-BOOTED
echo \"uptime: $(cut -d' ' -f1 /proc/uptime)\"
echo \"kernel: $(uname -r)\"
echo \"cpus: $(nproc)\"
grep MemTotal /proc/meminfo
echo \"serial-irq: $(grep ttyS0 /proc/interrupts | tr -s ' ')\"
echo \"serial-port: $(grep '^0:' /proc/tty/driver/serial)\"
echo \"rvmm-linux: action $action\"
case $action in
    shell) echo 'rvmm-linux: shell ready'; exec sh ;;
    reboot) reboot -f ;;
    panic) echo c > /proc/sysrq-trigger ;;
    none) while :; do sleep 3600; done ;;
    *) poweroff -f ;;
esac
sleep 2
echo \"rvmm-linux: $action did not stop the machine\"
poweroff -f
";

/// The line [`ROOT_SCRIPT`] prints just before `switch_root`, followed by the device and
/// `rw` or `ro` (`RVMM-ROOT-MOUNTED /dev/vda rw`).
pub const ROOT_MARKER: &str = "RVMM-ROOT-MOUNTED";

/// The line every failure of [`ROOT_SCRIPT`] starts with, followed by the reason; the guest
/// then powers off instead of waiting forever.
pub const ROOT_FAILED: &str = "RVMM-ROOT-FAILED";

/// Where [`ROOT_SCRIPT`] sits in the archive (sourced by `/init`, so it runs as PID 1).
pub const ROOT_SCRIPT_PATH: &str = "lib/rvmm/mount-root";

/// The directory holding the kernel modules (`NAME.ko`, uncompressed) and [`LOAD_ORDER`].
pub const MODULE_DIR: &str = "lib/modules";

/// The file listing the modules in [`MODULE_DIR`] in load order, one name a line.
pub const LOAD_ORDER: &str = "lib/modules/load-order";

/// The root-disk boot, sourced by `/init` when `root=DEVICE` is on the command line:
///
/// 1. reads `ro`/`rw` (the last one wins; `ro` when neither, the kernel's own default),
///    `rootfstype=` (default `ext4`) and `rvmm.rootwait=SECONDS` (default 10);
/// 2. `insmod`s every module in [`LOAD_ORDER`] (dependencies first; busybox's `insmod`
///    resolves nothing itself);
/// 3. waits for the block device, polling every 0.1 s up to the bound;
/// 4. mounts it on `/newroot` (read-only if the device is, as the kernel does), checks for
///    an executable `/sbin/init`, prints [`ROOT_MARKER`] with the mode it got,
///    moves `/dev` over, unmounts `/proc` and `/sys` and `exec`s `switch_root`.
///
/// Every failure prints [`ROOT_FAILED`] with the reason and powers off.
pub const ROOT_SCRIPT: &str = "# Sourced by /init (PID 1) when root= is on the kernel command line.
rvmm_fail() {
    echo \"RVMM-ROOT-FAILED: $*\"
    echo 'rvmm-linux: powering off'
    poweroff -f
    sleep 5
    echo 'rvmm-linux: poweroff did not stop the machine'
    while :; do sleep 3600; done
}
mode=ro
fstype=ext4
wait=10
for arg in $(cat /proc/cmdline); do
    case $arg in
        ro) mode=ro ;;
        rw) mode=rw ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
        rvmm.rootwait=*) wait=${arg#rvmm.rootwait=} ;;
    esac
done
case $wait in
    '' | *[!0-9]*) rvmm_fail \"rvmm.rootwait=$wait is not a whole number of seconds\" ;;
esac
case $root in
    /dev/*) ;;
    *) rvmm_fail \"root=$root: only device paths are supported (root=/dev/vda)\" ;;
esac
echo \"rvmm-linux: root $root ($fstype, $mode)\"
if [ -s /lib/modules/load-order ]; then
    for m in $(cat /lib/modules/load-order); do
        insmod \"/lib/modules/$m.ko\" || rvmm_fail \"insmod $m failed (the kernel's message is above)\"
    done
    echo \"rvmm-linux: modules loaded: $(cat /lib/modules/load-order | tr '\\n' ' ')\"
else
    echo 'rvmm-linux: this initramfs carries no modules: the root device driver must be built in'
fi
tries=$((wait * 10))
while [ ! -b \"$root\" ]; do
    if [ \"$tries\" -le 0 ]; then
        rvmm_fail \"$root did not appear within ${wait}s (is a virtio-mmio disk described in the ACPI DSDT? block devices: $(ls /sys/class/block | tr '\\n' ' '))\"
    fi
    tries=$((tries - 1))
    usleep 100000
done
mkdir -p /newroot
mount -t \"$fstype\" -o \"$mode\" \"$root\" /newroot || rvmm_fail \"mount -t $fstype -o $mode $root /newroot failed\"
if [ ! -x /newroot/sbin/init ]; then
    umount /newroot
    rvmm_fail \"$root has no executable /sbin/init\"
fi
# mount, like the kernel, falls back to read-only when the device itself is (virtio's F_RO):
# the marker says what was mounted.
got=$(grep ' /newroot ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)
[ \"$got\" = \"$mode\" ] || echo \"rvmm-linux: asked $mode, mounted $got: the device is read-only\"
echo \"RVMM-ROOT-MOUNTED $root $got\"
mount --move /dev /newroot/dev 2>/dev/null || umount -l /dev
umount /sys
umount /proc
exec switch_root /newroot /sbin/init
";

/// A one-file archive that sets the guest's action (see [`INIT_SCRIPT`]): append it, gzip'd
/// ([`Archive::to_cpio_gz`]), to the initramfs (`cat initramfs.cpio.gz action.cpio.gz >
/// initrd`; Linux unpacks both in turn. Uncompressed, it would have to start at a 4-byte
/// boundary of the whole initrd).
pub fn action_overlay(action: &str) -> Result<Archive, BadPath> {
    let mut a = Archive::new();
    a.file("etc/rvmm-action", 0o644, format!("{action}\n").into_bytes())?;
    Ok(a)
}

/// The applets `/init` and [`ROOT_SCRIPT`] need, linked even when the busybox binary cannot list its own.
pub const REQUIRED_APPLETS: &[&str] = &[
    "bin/cat",
    "bin/echo",
    "bin/grep",
    "bin/ls",
    "bin/mkdir",
    "bin/mount",
    "bin/sh",
    "bin/sleep",
    "bin/umount",
    "bin/uname",
    "bin/usleep",
    "sbin/insmod",
    "sbin/poweroff",
    "sbin/reboot",
    "sbin/switch_root",
    "usr/bin/cut",
    "usr/bin/nproc",
    "usr/bin/tr",
];

/// The directories every guest gets.
pub const DIRS: &[&str] = &[
    "bin", "dev", "etc", "proc", "sbin", "sys", "usr", "usr/bin", "usr/sbin",
];

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file and its contents.
    File(Vec<u8>),
    /// A symbolic link and its target.
    Symlink(String),
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// A path the archive cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPath(pub String);

impl fmt::Display for BadPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a usable archive path (empty, '.', '..' or NUL)",
            self.0
        )
    }
}

impl std::error::Error for BadPath {}

/// An in-memory file tree, written out as a newc cpio archive.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, (Kind, u32)>,
}

/// newc's `c_mode` file-type bits.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

fn normalize(path: &str) -> Result<String, BadPath> {
    let trimmed = path.trim_matches('/');
    let ok = !trimmed.is_empty()
        && !trimmed.contains('\0')
        && trimmed
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(trimmed.to_string())
    } else {
        Err(BadPath(path.to_string()))
    }
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds (or replaces) `path` with permission bits `perm`; missing parent directories are
    /// added with mode 0755.
    pub fn add(&mut self, path: &str, perm: u32, kind: Kind) -> Result<(), BadPath> {
        let path = normalize(path)?;
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            self.entries
                .entry(p.to_string())
                .or_insert((Kind::Dir, 0o755));
            parent = p;
        }
        self.entries.insert(path, (kind, perm & 0o7777));
        Ok(())
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), BadPath> {
        self.add(path, perm, Kind::Dir)
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<(), BadPath> {
        self.add(path, perm, Kind::File(data))
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), BadPath> {
        self.add(path, 0o777, Kind::Symlink(target.to_string()))
    }

    /// Adds a character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), BadPath> {
        self.add(path, perm, Kind::CharDev { major, minor })
    }

    /// Whether `path` is in the archive.
    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// The number of entries (without the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The archive in newc cpio format, entries sorted by path (parents before children),
    /// ending with the `TRAILER!!!` record.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, (kind, perm))) in self.entries.iter().enumerate() {
            let (ftype, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match kind {
                Kind::Dir => (S_IFDIR, 2, &[], (0, 0)),
                Kind::File(d) => (S_IFREG, 1, d, (0, 0)),
                Kind::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
                Kind::CharDev { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
            };
            write_record(
                &mut out,
                ino as u32 + 1,
                ftype | perm,
                nlink,
                rdev,
                path,
                data,
            );
        }
        write_record(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }

    /// The archive as a gzip-compressed newc cpio (maximum compression, header mtime 0, no
    /// file name): what the kernel takes as an initrd.
    pub fn to_cpio_gz(&self) -> Vec<u8> {
        gzip(&self.to_cpio())
    }
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

fn write_record(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    // newc: "070701", then 13 fields of 8 hex digits: ino, mode, uid, gid, nlink, mtime,
    // filesize, devmajor, devminor, rdevmajor, rdevminor, namesize (with the NUL), check.
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    // The header (110 bytes) plus the name is padded to a multiple of 4; so is the data.
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// gzip with a fixed header (mtime 0, no name) and maximum compression.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// Turns `busybox --list-full` output (one `dir/applet` path a line) into the applet paths to
/// link, always including [`REQUIRED_APPLETS`]; lines that are not plain relative paths are
/// dropped. The result is sorted and without duplicates.
pub fn applet_paths(list_full: &str) -> Vec<String> {
    let mut v: Vec<String> = list_full
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| normalize(l).ok())
        .filter(|p| p != "bin/busybox" && p.split('/').count() <= 3)
        .chain(REQUIRED_APPLETS.iter().map(|s| s.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The Linux guest's initramfs: [`DIRS`], `/dev/console` (5:1), `/dev/null` (1:3), busybox
/// at `/bin/busybox`, a symbolic link to it for every applet path, [`INIT_SCRIPT`] as
/// `/init` and [`ROOT_SCRIPT`] (no kernel modules: see [`add_modules`]).
pub fn linux_guest(busybox: Vec<u8>, applets: &[String]) -> Result<Archive, BadPath> {
    let mut a = Archive::new();
    for d in DIRS {
        a.dir(d, 0o755)?;
    }
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.char_dev("dev/null", 0o666, 1, 3)?;
    a.file("bin/busybox", 0o755, busybox)?;
    for p in applets {
        if !a.contains(p) {
            a.symlink(p, "/bin/busybox")?;
        }
    }
    a.file("init", 0o755, INIT_SCRIPT.as_bytes().to_vec())?;
    a.file(ROOT_SCRIPT_PATH, 0o644, ROOT_SCRIPT.as_bytes().to_vec())?;
    Ok(a)
}

/// Adds kernel modules, given as (name, uncompressed `.ko` bytes) in load order (as
/// [`crate::images::kmod::load_order`] gives them): each as `lib/modules/NAME.ko`, and
/// [`LOAD_ORDER`] listing the names in that order. A name that is not a plain file name is
/// refused.
pub fn add_modules(a: &mut Archive, modules: &[(String, Vec<u8>)]) -> Result<(), BadPath> {
    let mut order = String::new();
    for (name, ko) in modules {
        if name.contains('/') || name.chars().any(char::is_whitespace) {
            return Err(BadPath(name.clone()));
        }
        a.file(&format!("{MODULE_DIR}/{name}.ko"), 0o644, ko.clone())?;
        order.push_str(name);
        order.push('\n');
    }
    if !modules.is_empty() {
        a.file(LOAD_ORDER, 0o644, order.into_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// One record read back from a newc archive.
    #[derive(Debug)]
    struct Rec {
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        rdev: (u32, u32),
        name: String,
        data: Vec<u8>,
    }

    /// A minimal, strict newc reader: checks magic, alignment, the NUL after each name and
    /// that the archive ends right after the trailer.
    fn read_newc(mut b: &[u8]) -> Vec<Rec> {
        let total = b.len();
        let mut recs = Vec::new();
        loop {
            let off = total - b.len();
            assert_eq!(off % 4, 0, "record at {off} is not 4-aligned");
            assert_eq!(&b[..6], b"070701", "bad magic at {off}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (namesize, filesize) = (field(11) as usize, field(6) as usize);
            assert_eq!(field(12), 0, "check field");
            let name_bytes = &b[110..110 + namesize];
            assert_eq!(name_bytes.last(), Some(&0), "name not NUL-terminated");
            let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).unwrap();
            let data_start = (110 + namesize).next_multiple_of(4);
            for &pad in &b[110 + namesize..data_start] {
                assert_eq!(pad, 0);
            }
            let data = b[data_start..data_start + filesize].to_vec();
            let next = (data_start + filesize).next_multiple_of(4);
            let rec = Rec {
                ino: field(0),
                mode: field(1),
                uid: field(2),
                gid: field(3),
                nlink: field(4),
                mtime: field(5),
                rdev: (field(9), field(10)),
                name,
                data,
            };
            b = &b[next..];
            if rec.name == "TRAILER!!!" {
                assert!(b.is_empty(), "{} bytes after the trailer", b.len());
                return recs;
            }
            recs.push(rec);
        }
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample() -> Archive {
        let busybox = (0..10_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let applets = applet_paths("bin/sh\nsbin/reboot\nusr/bin/nproc\n\n../evil\n/bin/ls\n");
        linux_guest(busybox, &applets).unwrap()
    }

    #[test]
    fn guest_archive_reads_back_with_every_entry() {
        let a = sample();
        let recs = read_newc(&gunzip(&a.to_cpio_gz()));
        assert_eq!(recs.len(), a.len());
        let by_name = |n: &str| {
            recs.iter()
                .find(|r| r.name == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        // Sorted, parents first, inodes 1.. in order, all owned by root with mtime 0.
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.ino, i as u32 + 1);
            assert_eq!((r.uid, r.gid, r.mtime), (0, 0, 0), "{}", r.name);
            if let Some((parent, _)) = r.name.rsplit_once('/') {
                let p = recs.iter().position(|x| x.name == parent);
                assert!(
                    p.is_some_and(|p| p < i),
                    "{}: parent missing or later",
                    r.name
                );
            }
        }
        let names: Vec<_> = recs.iter().map(|r| r.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);

        for d in DIRS {
            let r = by_name(d);
            assert_eq!(r.mode, 0o040755, "{d}");
            assert_eq!(r.nlink, 2);
        }
        let console = by_name("dev/console");
        assert_eq!((console.mode, console.rdev), (0o020600, (5, 1)));
        assert_eq!(by_name("dev/null").rdev, (1, 3));
        let init = by_name("init");
        assert_eq!(init.mode, 0o100755);
        assert_eq!(init.data, INIT_SCRIPT.as_bytes());
        let text = String::from_utf8(init.data.clone()).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains(MARKER));
        assert!(text.contains("mount -t devtmpfs"));
        assert!(text.contains("reboot -f"));
        assert!(text.contains("poweroff -f"));
        assert!(text.contains("/etc/rvmm-action"));
        let bb = by_name("bin/busybox");
        assert_eq!(bb.mode, 0o100755);
        assert_eq!(bb.data.len(), 10_001);
        assert_eq!(bb.data[10_000], (10_000u32 * 7 % 251) as u8);
        for app in REQUIRED_APPLETS.iter().chain(["bin/ls"].iter()) {
            let r = by_name(app);
            assert_eq!(r.mode, 0o120777, "{app}");
            assert_eq!(r.data, b"/bin/busybox");
        }
        assert!(!names.iter().any(|n| n.contains("evil")));
    }

    /// The archive with modules as mkinitramfs adds them (in load order).
    fn with_modules() -> Archive {
        let mut a = sample();
        let ko = |tag: u8| (0..3000u32).map(|i| (i as u8) ^ tag).collect::<Vec<u8>>();
        let mods = [
            ("virtio_ring".to_string(), ko(1)),
            ("virtio".to_string(), ko(2)),
            ("virtio_mmio".to_string(), ko(3)),
            ("virtio_blk".to_string(), ko(4)),
        ];
        add_modules(&mut a, &mods).unwrap();
        a
    }

    #[test]
    fn modules_and_their_load_order_are_in_the_archive() {
        let a = with_modules();
        let recs = read_newc(&gunzip(&a.to_cpio_gz()));
        let by_name = |n: &str| recs.iter().find(|r| r.name == n);
        let order = by_name(LOAD_ORDER).expect("load-order");
        assert_eq!(
            order.data,
            b"virtio_ring\nvirtio\nvirtio_mmio\nvirtio_blk\n"
        );
        for (i, m) in ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk"]
            .iter()
            .enumerate()
        {
            let r = by_name(&format!("{MODULE_DIR}/{m}.ko")).unwrap_or_else(|| panic!("{m}"));
            assert_eq!(r.mode, 0o100644);
            assert_eq!(r.data.len(), 3000);
            assert_eq!(r.data[5], 5 ^ (i as u8 + 1), "{m}: its own bytes");
        }
        // Reproducible with modules too.
        assert_eq!(a.to_cpio_gz(), with_modules().to_cpio_gz());
        // No modules: no load-order file (the root script says so at boot).
        let plain = read_newc(&sample().to_cpio());
        assert!(!plain.iter().any(|r| r.name.starts_with(MODULE_DIR)));
        let script = plain.iter().find(|r| r.name == ROOT_SCRIPT_PATH).unwrap();
        assert_eq!(script.data, ROOT_SCRIPT.as_bytes());
        // A module name that would escape the folder or break the list is refused.
        for bad in ["../x", "a b", "a\nb"] {
            let mut x = Archive::new();
            assert!(
                add_modules(&mut x, &[(bad.to_string(), vec![1])]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn init_sources_the_root_script_only_with_root_and_the_scripts_parse() {
        // The root path is a sourced file guarded by root=: without it /init is as before.
        assert!(INIT_SCRIPT.contains("root=*) root=${arg#root=} ;;"));
        assert!(INIT_SCRIPT.contains("[ -n \"$root\" ] && . /lib/rvmm/mount-root\n"));
        assert_eq!(format!("/{ROOT_SCRIPT_PATH}"), "/lib/rvmm/mount-root");
        for needle in [
            ROOT_MARKER,
            ROOT_FAILED,
            "insmod \"/lib/modules/$m.ko\"",
            "/lib/modules/load-order",
            "mount -t \"$fstype\" -o \"$mode\" \"$root\" /newroot",
            "exec switch_root /newroot /sbin/init",
            "poweroff -f",
        ] {
            assert!(ROOT_SCRIPT.contains(needle), "{needle}");
        }
        assert_eq!(format!("/{LOAD_ORDER}"), "/lib/modules/load-order");
        // ro is the default, as for the kernel's own root mount.
        assert!(ROOT_SCRIPT.starts_with("# Sourced") && ROOT_SCRIPT.contains("\nmode=ro\n"));
        // Every command the scripts run is a linked applet.
        for cmd in [
            "insmod",
            "usleep",
            "switch_root",
            "mkdir",
            "umount",
            "ls",
            "tr",
            "mount",
            "poweroff",
            "sleep",
            "cut",
            "grep",
        ] {
            assert!(
                REQUIRED_APPLETS
                    .iter()
                    .any(|a| a.rsplit('/').next() == Some(cmd)),
                "{cmd} is not in REQUIRED_APPLETS"
            );
        }
        // Both parse as POSIX shell (the host's sh -n: syntax only, nothing runs).
        for (what, text) in [("init", INIT_SCRIPT), ("root", ROOT_SCRIPT)] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", text])
                .output()
                .expect("running sh -n");
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn two_builds_are_identical_bytes() {
        let a = sample().to_cpio_gz();
        let b = sample().to_cpio_gz();
        assert_eq!(a, b);
        // gzip header: magic, deflate, no flags (no name), mtime 0.
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut x = Archive::new();
        x.file("etc/b", 0o644, b"b".to_vec()).unwrap();
        x.file("etc/a", 0o644, b"a".to_vec()).unwrap();
        x.symlink("bin/z", "/x").unwrap();
        let mut y = Archive::new();
        y.symlink("/bin/z/", "/x").unwrap();
        y.file("/etc/a", 0o644, b"a".to_vec()).unwrap();
        y.file("etc/b", 0o644, b"b".to_vec()).unwrap();
        assert_eq!(x.to_cpio(), y.to_cpio());
        // Parents were added implicitly: bin, bin/z, etc, etc/a, etc/b.
        assert_eq!(read_newc(&x.to_cpio()).len(), 5);
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut a = Archive::new();
        for p in ["", "/", "a/../b", "./x", "a//b", "nul\0"] {
            assert_eq!(a.dir(p, 0o755), Err(BadPath(p.to_string())), "{p:?}");
        }
        assert!(a.is_empty());
    }

    #[test]
    fn empty_archive_is_only_the_trailer() {
        let c = Archive::new().to_cpio();
        assert!(read_newc(&c).is_empty());
        assert_eq!(c.len() % 4, 0);
    }
}
