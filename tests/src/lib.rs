//! `tests`: integration tests that boot real guests by driving the built `vmm` binary as a
//! user would. This library holds the harness the test files share.

pub mod nested;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `vmm` binary of the same build profile as the running test.
///
/// `cargo test --workspace` builds it (it is a bin target of a workspace member); running
/// only this crate's tests needs `cargo build -p vmm` (same profile) first.
pub fn vmm_bin() -> PathBuf {
    built_bin("vmm")
}

/// The `vmmctl` control-socket client, found like [`vmm_bin`].
pub fn vmmctl_bin() -> PathBuf {
    built_bin("vmmctl")
}

fn built_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p vmm` (same profile as the tests)",
        bin.display()
    );
    bin
}

/// Whether /dev/kvm can be opened. On the project's machines it must be: tests that need it
/// fail there rather than skip, unless `VMM_TESTS_ALLOW_NO_KVM=1` says this host has none.
pub fn require_kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var_os("VMM_TESTS_ALLOW_NO_KVM").is_some() {
            eprintln!("skipped: /dev/kvm is not available on this host");
            return false;
        }
        panic!("/dev/kvm is not available; set VMM_TESTS_ALLOW_NO_KVM=1 to skip KVM tests");
    }
    true
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    /// Exit status (-1 if killed by a signal).
    pub status: i32,
    /// Serial output (the binary's stdout).
    pub stdout: String,
    /// Diagnostics.
    pub stderr: String,
    /// Wall time.
    pub took: Duration,
}

impl Run {
    /// The serial lines starting with `prefix`.
    pub fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// Panics with the whole run shown unless `cond`.
    pub fn check(&self, cond: bool, what: &str) {
        assert!(
            cond,
            "{what}\nstatus {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        );
    }
}

impl Run {
    /// The result of a finished command that ran for `took`.
    pub fn from_output(out: Output, took: Duration) -> Run {
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took,
        }
    }
}

/// Runs `vmm` with `args` (a `--timeout` is the caller's business) and `stdin` as input.
pub fn run_vmm(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let t = Instant::now();
    let mut child = Command::new(vmm_bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&input);
        });
    }
    let out = child.wait_with_output().expect("wait for vmm");
    Run::from_output(out, t.elapsed())
}

/// Runs `vmm` with `args` and checks that it fails with `status` and a message on stderr
/// containing `needle`, without panicking.
pub fn expect_error(args: &[&str], status: i32, needle: &str) {
    let r = run_vmm(args, None);
    r.check(r.status == status, &format!("{args:?}: status {status}"));
    r.check(
        r.stderr.contains(needle),
        &format!("{args:?}: message contains '{needle}'"),
    );
    r.check(!r.stderr.contains("panicked"), "no panic");
}

/// CRC-32 (IEEE 802.3, as zlib's crc32), to check what the guest computes.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A `vmm` run with `--control` on a socket in a directory of its own (tests run in
/// parallel), `--timeout=90s`, guest output logged to `serial.log` there; the socket exists
/// when [`start_with`](Self::start_with) returns.
pub struct ControlledVmm {
    /// The VMM process (its stderr piped).
    pub child: std::process::Child,
    /// The control socket.
    pub sock: PathBuf,
    /// The run's directory (removed by [`wait`](Self::wait)).
    pub dir: PathBuf,
}

impl ControlledVmm {
    /// The built-in guest with `cmdline`.
    pub fn start(cmdline: &str) -> ControlledVmm {
        ControlledVmm::start_with(&[], cmdline)
    }

    /// The built-in guest with `cmdline` and extra `args`.
    pub fn start_with(args: &[&str], cmdline: &str) -> ControlledVmm {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vmm-ctl-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("control.sock");
        let child = Command::new(vmm_bin())
            .args(["--timeout=90s"])
            .args(args)
            .arg("--control")
            .arg(&sock)
            .args(["--cmdline", cmdline, "--log"])
            .arg(dir.join("serial.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        ControlledVmm { child, sock, dir }
    }

    /// The guest's output so far.
    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.join("serial.log"))
            .unwrap_or_default()
            .replace('\r', "")
    }

    /// Waits for the VMM to end: its status and the guest's output.
    pub fn wait(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap().code().unwrap_or(-1);
        let out = self.serial();
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, out)
    }

    /// Waits for the VMM to end: its status and its stderr (where warnings are logged).
    pub fn wait_with_stderr(mut self) -> (i32, String) {
        use std::io::Read;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().unwrap().code().unwrap_or(-1);
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, err)
    }
}

#[cfg(test)]
mod unit {
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }
}
