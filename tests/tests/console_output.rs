//! Guest console output that nobody reads, or that cannot be written (issue 14, findings 2, 6
//! and 8): the built-in guest's `workload=flood` prints as fast as it can into a standard
//! output that is a pipe nobody reads, or whose reader has gone, or into size-limited files.
//! Every way of ending the run must end the VMM within a bound, the drops must be counted, and
//! `--log` and `--expect` must not depend on standard output.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{require_kvm, vmm_bin};

/// How long a VMM may take to end after it was asked to (generous: a loaded 2-core machine;
/// the VMM's own bounds are 5 s for the vCPUs and 2 s for the last output).
const END_BOUND: Duration = Duration::from_secs(60);
/// The pipe's capacity: one page, so that it fills after a few hundred bytes of guest lines.
const PIPE_SIZE: i32 = 4096;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-conout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A pipe (read end, write end), close-on-exec, of [`PIPE_SIZE`] bytes.
fn small_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just created and are owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a pipe we own.
    let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    assert!(got >= PIPE_SIZE, "F_SETPIPE_SZ: {got}");
    (r, w)
}

/// Bytes waiting in the pipe.
fn queued(r: &OwnedFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(r.as_raw_fd(), libc::FIONREAD, &mut n) };
    n
}

/// A running VMM whose standard output is `stdout` and whose stderr is collected.
struct Vmm {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
    dir: PathBuf,
}

impl Vmm {
    fn start(dir: &Path, args: &[&str], stdout: Stdio) -> Vmm {
        let mut child = Command::new(vmm_bin())
            .args(args)
            .arg("--result-json")
            .arg(dir.join("result.json"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm");
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Vmm {
            child,
            stderr,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits for the exit, at most [`END_BOUND`] from now; kills the VMM and fails if it
    /// takes longer. Returns the status, stderr and the result JSON.
    fn wait_bounded(mut self, what: &str) -> (i32, String, Value) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > END_BOUND {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self.stderr.join().unwrap_or_default();
                panic!(
                    "{what}: the VMM was still running {END_BOUND:?} later (killed it)\n\
                     --- stderr ---\n{err}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self.stderr.join().unwrap_or_default();
        let json = std::fs::read_to_string(self.dir.join("result.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        (status.code().unwrap_or(-1), err, json)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// Waits until the pipe nobody reads is full: from then on, any write of a line the VMM
/// makes to it would block (a write of up to a page is all or nothing: the last line may
/// leave a few bytes free).
fn wait_until_full(r: &OwnedFd, vmm: &mut Vmm) {
    let t = Instant::now();
    while queued(r) < PIPE_SIZE - 128 {
        assert!(
            vmm.child.try_wait().unwrap().is_none(),
            "the VMM ended before its output filled the pipe"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest's output never filled the pipe ({} bytes in it)",
            queued(r)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dropped(json: &Value) -> u64 {
    json["console"]["dropped_bytes"].as_u64().unwrap_or(0)
}

/// A control-socket client.
struct Ctl(BufReader<UnixStream>);

impl Ctl {
    fn connect(sock: &Path) -> Ctl {
        let t = Instant::now();
        let s = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(30), "{sock:?}: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Ctl(BufReader::new(s));
        let greeting = c.line();
        assert!(greeting.contains("QMP"), "greeting: {greeting}");
        let r = c.send("qmp_capabilities");
        assert!(r.get("return").is_some(), "negotiation: {r}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).expect("reading a reply");
        l
    }

    fn send(&mut self, cmd: &str) -> Value {
        writeln!(self.0.get_mut(), "{{\"execute\": \"{cmd}\"}}").unwrap();
        loop {
            let l = self.line();
            let v: Value = serde_json::from_str(&l).unwrap_or(Value::Null);
            if v.get("event").is_none() {
                return v;
            }
        }
    }
}

#[test]
fn timeout_ends_the_vmm_when_nobody_reads_its_output_and_drops_are_counted() {
    if !require_kvm() {
        return;
    }
    let dir = scratch("timeout");
    let (r, w) = small_pipe();
    let vmm = Vmm::start(
        &dir,
        &["--cmdline", "workload=flood", "--timeout", "15s"],
        Stdio::from(w),
    );
    let (status, err, json) = vmm.wait_bounded("--timeout 15s");
    assert_eq!(status, 3, "--timeout -> 3\n{err}");
    assert!(dropped(&json) > 0, "drops counted: {json}\n{err}");
    let out = &json["console"]["outputs"][0];
    assert_eq!(out["output"], "stdout", "{json}");
    // The pipe was filled (up to the last batch that fit whole: small pipe writes are all
    // or nothing), and every guest byte is accounted for: written or dropped.
    let written = out["written"].as_u64().unwrap_or(0);
    assert!(
        written >= PIPE_SIZE as u64 / 2 && written <= PIPE_SIZE as u64,
        "{json}"
    );
    let console = &json["console"];
    assert_eq!(
        console["guest_bytes"].as_u64(),
        Some(
            console["queue_dropped"].as_u64().unwrap_or(0)
                + written
                + out["dropped"].as_u64().unwrap_or(0)
                + out["pending"].as_u64().unwrap_or(0)
        ),
        "{json}"
    );
    drop(r);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn quit_ends_the_vmm_when_nobody_reads_its_output_and_query_console_counts_drops() {
    if !require_kvm() {
        return;
    }
    let dir = scratch("quit");
    let sock = dir.join("control.sock");
    let (r, w) = small_pipe();
    let mut vmm = Vmm::start(
        &dir,
        &[
            "--cmdline",
            "workload=flood",
            "--control",
            sock.to_str().unwrap(),
        ],
        Stdio::from(w),
    );
    wait_until_full(&r, &mut vmm);
    let mut ctl = Ctl::connect(&sock);
    // The guest goes on printing into the full pipe: the console drops and counts.
    let t = Instant::now();
    let mut seen = Value::Null;
    while t.elapsed() < Duration::from_secs(60) {
        seen = ctl.send("query-console");
        if seen["return"]["dropped-bytes"].as_u64().unwrap_or(0) > 0 || seen.get("error").is_some()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let quit = ctl.send("quit");
    let (status, err, json) = vmm.wait_bounded("quit over the control socket");
    assert_eq!(quit, serde_json::json!({"return": {}}), "{err}");
    assert_eq!(status, 6, "quit -> stopped (6)\n{err}");
    assert!(
        seen["return"]["dropped-bytes"].as_u64().unwrap_or(0) > 0,
        "query-console reports drops while the guest runs: {seen}"
    );
    let out = &seen["return"]["outputs"][0];
    assert_eq!(out["output"], "stdout", "{seen}");
    assert!(out["dropped"].as_u64().unwrap_or(0) > 0, "{seen}");
    assert!(dropped(&json) > 0, "{json}");
    drop(r);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_ends_the_vmm_when_nobody_reads_its_output() {
    if !require_kvm() {
        return;
    }
    let dir = scratch("sigterm");
    let (r, w) = small_pipe();
    let mut vmm = Vmm::start(&dir, &["--cmdline", "workload=flood"], Stdio::from(w));
    wait_until_full(&r, &mut vmm);
    // Some more time to print into the full pipe (a vCPU blocked in a write, before the fix).
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(vmm.pid(), libc::SIGTERM) };
    let (status, err, json) = vmm.wait_bounded("SIGTERM");
    assert_eq!(status, 6, "SIGTERM -> 6\n{err}");
    assert!(
        json["console"]["guest_bytes"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    drop(r);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_guest_ends_its_run_when_nobody_reads_its_output() {
    if !require_kvm() {
        return;
    }
    // 600 lines (~28 KiB) into a 4 KiB pipe nobody reads: the guest must still get to its
    // end (a reset) instead of waiting on the pipe.
    let dir = scratch("guest-end");
    let (r, w) = small_pipe();
    let vmm = Vmm::start(
        &dir,
        &[
            "--cmdline",
            "workload=flood count=600",
            "--log",
            dir.join("serial.log").to_str().unwrap(),
        ],
        Stdio::from(w),
    );
    let (status, err, json) = vmm.wait_bounded("the guest's own reset");
    assert_eq!(status, 0, "reset -> 0\n{err}");
    assert_eq!(json["exit_reason"], "reset", "{json}");
    let log = std::fs::read_to_string(dir.join("serial.log")).unwrap();
    assert!(log.contains("workload flood: ok (600 lines)"), "{log}");
    assert!(dropped(&json) > 0, "{json}");
    drop(r);
    let _ = std::fs::remove_dir_all(dir);
}

/// The flood lines 0..n, each once and whole, in order.
fn check_flood_lines(text: &str, n: usize) {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with("flood: "))
        .collect();
    assert_eq!(lines.len(), n, "{n} flood lines");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            *l,
            format!("flood: {i:08} abcdefghijklmnopqrstuvwxyz0123456789")
        );
    }
}

#[test]
fn log_and_expect_do_not_depend_on_stdout() {
    if !require_kvm() {
        return;
    }
    // (a) The reader goes away while the guest prints: writes to stdout fail with EPIPE.
    let dir = scratch("stdout-gone");
    let log = dir.join("serial.log");
    let (r, w) = small_pipe();
    let vmm = Vmm::start(
        &dir,
        &[
            "--cmdline",
            "workload=flood count=400",
            "--timeout",
            "60s",
            "--expect",
            "workload flood: ok (400 lines)",
            "--log",
            log.to_str().unwrap(),
        ],
        Stdio::from(w),
    );
    let mut reader = std::fs::File::from(r);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains("flood: 00000010") {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "stdout ended before the flood started");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(reader);
    let (status, err, json) = vmm.wait_bounded("a closed stdout");
    assert_eq!(status, 0, "--expect still matches: {err}\n{json}");
    let text = std::fs::read_to_string(&log).unwrap();
    check_flood_lines(&text, 400);
    assert!(text.contains("workload flood: ok (400 lines)"));
    assert!(
        err.contains("standard output"),
        "the closed stdout is reported: {err}"
    );
    assert_eq!(json["console"]["outputs"][1]["dropped"], 0, "{json}");
    let _ = std::fs::remove_dir_all(&dir);

    // (b) The reader is gone before the VMM starts.
    let dir = scratch("stdout-closed");
    let log = dir.join("serial.log");
    let (r, w) = small_pipe();
    drop(r);
    let vmm = Vmm::start(
        &dir,
        &[
            "--cmdline",
            "workload=flood count=100",
            "--timeout",
            "60s",
            "--expect",
            "workload flood: ok (100 lines)",
            "--log",
            log.to_str().unwrap(),
        ],
        Stdio::from(w),
    );
    let (status, err, json) = vmm.wait_bounded("stdout without a reader");
    assert_eq!(status, 0, "--expect still matches: {err}\n{json}");
    check_flood_lines(&std::fs::read_to_string(&log).unwrap(), 100);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn log_limit_caps_log_and_serial_file_once_and_the_scans_go_on() {
    if !require_kvm() {
        return;
    }
    let dir = scratch("limit");
    let log = dir.join("serial.log");
    let file = dir.join("serial.out");
    let vmm = Vmm::start(
        &dir,
        &[
            "--cmdline",
            "workload=flood count=300",
            "--timeout",
            "60s",
            "--serial",
            &format!("file:{}", file.display()),
            "--log",
            log.to_str().unwrap(),
            "--log-limit",
            "4K",
            "--expect",
            "workload flood: ok (300 lines)",
        ],
        Stdio::null(),
    );
    let (status, err, json) = vmm.wait_bounded("--log-limit");
    assert_eq!(status, 0, "--expect matched after the limit: {err}\n{json}");
    for p in [&log, &file] {
        let text = std::fs::read_to_string(p).unwrap();
        let (body, last) = text.trim_end().rsplit_once('\n').unwrap();
        assert_eq!(
            last,
            "[vmm: --log-limit of 4096 bytes reached; the rest of the guest's output is not \
             in this file]",
            "{p:?}"
        );
        assert_eq!(body.len(), 4096, "{p:?}: the limit, then the notice");
        assert_eq!(text.matches("--log-limit").count(), 1, "said once");
        assert!(
            !text.contains("workload flood: ok"),
            "nothing after the limit"
        );
        let name = p.display().to_string();
        assert_eq!(
            err.matches(&name).count(),
            1,
            "one warning for {name}: {err}"
        );
    }
    for o in json["console"]["outputs"].as_array().unwrap() {
        assert_eq!(o["limit_reached"], true, "{json}");
        assert!(o["over_limit"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(o["dropped"], 0, "{json}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn log_limit_bad_values_are_usage_errors() {
    tests::expect_error(&["--log-limit", "0"], 2, "none");
    tests::expect_error(&["--log-limit", "12Q"], 2, "unknown size suffix");
}
