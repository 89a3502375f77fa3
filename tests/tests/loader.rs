//! Issue 14, findings 4 and 5, through the binary: `--kernel` and `--initrd` must be regular
//! files read no further than their size, and a crafted bzImage header gets a load error, not
//! a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::{require_kvm, run_vmm, vmm_bin, Run};

const T: &str = "--timeout=60s";

/// A scratch directory for this test, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vmm-loader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary and kills it if it has not exited within `limit` (generous: a loaded
/// 2-core machine), failing the test with what it printed.
fn run_bounded(args: &[&str], limit: Duration) -> Run {
    let t = Instant::now();
    let mut child = Command::new(vmm_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    while child.try_wait().expect("wait").is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} still running after {limit:?} (killed); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from_output(child.wait_with_output().unwrap(), t.elapsed())
}

fn expect_refused(args: &[&str], needle: &str) {
    let r = run_bounded(args, Duration::from_secs(60));
    r.check(r.status == 1, &format!("{args:?}: status 1"));
    r.check(
        r.stderr.contains(needle),
        &format!("{args:?}: message contains '{needle}'"),
    );
    r.check(!r.stderr.contains("panicked"), "no panic");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn devices_are_not_kernels_or_initrds() {
    if !require_kvm() {
        return;
    }
    // Before the fix, --initrd /dev/zero read 2.1 GB before failing.
    expect_refused(
        &["--initrd", "/dev/zero"],
        "initrd /dev/zero: is a character device, not a regular file",
    );
    expect_refused(
        &["--kernel", "/dev/zero"],
        "kernel /dev/zero: is a character device, not a regular file",
    );
    expect_refused(&["--initrd", "/"], "is a directory");
}

#[test]
fn a_fifo_initrd_is_refused_without_blocking() {
    if !require_kvm() {
        return;
    }
    let d = Dir::new("fifo");
    let fifo = d.path("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    // Before the fix, open(2) blocked for ever waiting for a writer.
    expect_refused(&["--initrd", s(&fifo)], "is a pipe (FIFO)");
    expect_refused(&["--kernel", s(&fifo)], "is a pipe (FIFO)");
}

#[test]
fn an_initrd_is_read_only_up_to_the_size_it_reports() {
    if !require_kvm() {
        return;
    }
    // A procfs file is a regular file that reports size 0 but reads as text: the VMM reads
    // the 0 bytes it reports (so the guest sees no initrd), not what is there. Before the
    // fix it read on to the end and failed ("file changed while being read").
    let r = run_vmm(&[T, "--initrd", "/proc/version"], None);
    r.check(r.status == 0, "exit 0");
    r.check(
        r.lines("initrd: none").len() == 1,
        "the guest sees no initrd",
    );
}

/// The built-in guest's bzImage with its setup header's pref_address and init_size changed.
fn crafted(d: &Dir, name: &str, pref_address: u64, init_size: u32) -> PathBuf {
    let mut img = vmm::images::guest_image::GUEST_BZIMAGE.to_vec();
    img[0x258..0x260].copy_from_slice(&pref_address.to_le_bytes());
    img[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
    let p = d.path(name);
    std::fs::write(&p, img).unwrap();
    p
}

#[test]
fn crafted_header_overflows_are_load_errors() {
    if !require_kvm() {
        return;
    }
    let d = Dir::new("crafted");
    let initrd = d.path("initrd");
    std::fs::write(&initrd, [0x5au8; 4096]).unwrap();
    // pref_address + init_size wraps (before the fix: a panic in debug builds, a wrapped
    // footprint and a booting guest in release builds).
    let sum = crafted(&d, "sum", 0xffff_ffff_ffff_f000, 0x2000);
    expect_refused(
        &[T, "--kernel", s(&sum), "--initrd", s(&initrd)],
        "bad setup header",
    );
    // The end rounded up to a page wraps.
    let round = crafted(&d, "round", 0xffff_ffff_ffff_ff00, 0);
    expect_refused(
        &[T, "--kernel", s(&round), "--initrd", s(&initrd)],
        "bad setup header",
    );
}

#[test]
fn a_kernel_larger_than_guest_memory_is_refused_before_reading_it() {
    if !require_kvm() {
        return;
    }
    let d = Dir::new("big");
    let big = d.path("big");
    std::fs::write(&big, vmm::images::guest_image::GUEST_BZIMAGE).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(64 << 20).unwrap(); // sparse
    expect_refused(
        &["--mem", "32M", "--kernel", s(&big)],
        "more than the guest's 33554432 bytes of memory",
    );
}
