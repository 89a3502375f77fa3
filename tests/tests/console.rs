//! The serial console through the main loop: input echoed by the guest, a flood of input,
//! SIGTERM with the terminal restored.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{require_kvm, run_vmm, vmm_bin};

#[test]
fn serial_input_is_echoed_back_through_the_guest() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(
        &["--timeout=60s", "--cmdline", "workload=echo"],
        Some(b"hello rcu\nquit\n"),
    );
    r.check(r.status == 0, "echo ends with quit -> 0");
    r.check(r.stdout.contains("hello rcu"), "input echoed");
    r.check(r.lines("workload echo: ok").len() == 1, "echo ok");
}

#[test]
fn an_input_flood_is_offered_in_order_and_does_not_grow_memory() {
    if !require_kvm() {
        return;
    }
    // 200 KiB of distinct lines; the guest echoes far slower than that arrives.
    let input: String = (0..20_000).map(|i| format!("line {i:08}\n")).collect();
    let dir = std::env::temp_dir().join(format!("vmm-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serial.log");
    let r = run_vmm(
        &[
            "--timeout=3s",
            "--cmdline",
            "workload=echo",
            "--result-json",
            "-",
            "--log",
            log.to_str().unwrap(),
        ],
        Some(input.as_bytes()),
    );
    r.check(r.status == 3, "the flood outlasts the timeout -> 3");
    let json = r.stdout.lines().last().unwrap_or_default();
    let rss: u64 = json
        .split("\"rss_kib\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    r.check(
        rss < 32 * 1024,
        &format!("RSS stays small under the flood: {rss} KiB"),
    );
    // What the guest echoed is exactly a prefix of the input, line by line: nothing lost,
    // nothing reordered.
    let echoed = std::fs::read_to_string(&log).unwrap().replace('\r', "");
    let lines: Vec<&str> = echoed.lines().filter(|l| l.starts_with("line ")).collect();
    r.check(
        lines.len() > 10,
        &format!("some lines were echoed: {}", lines.len()),
    );
    for (i, l) in lines.iter().enumerate() {
        if i + 1 < lines.len() {
            r.check(
                *l == format!("line {i:08}"),
                &format!("line {i} intact: {l:?}"),
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn termios(fd: i32) -> libc::termios {
    // SAFETY: a zeroed termios is a valid out-parameter; `fd` is a terminal we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd, &mut t), 0);
        t
    }
}

/// A pseudo-terminal pair (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors; the null name/termios/winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just returned by openpty and are owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Starts the echo guest with `tty` as standard input and waits until it is ready (and the
/// terminal raw). The stdout pipe is returned so that it stays open.
fn echo_guest_on(tty: &OwnedFd) -> (Child, ChildStdout) {
    let mut child = Command::new(vmm_bin())
        .args(["--timeout=60s", "--cmdline", "workload=echo"])
        .stdin(Stdio::from(tty.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("echo: ready") {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "guest never got ready"
        );
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "vmm exited early");
        seen.extend_from_slice(&buf[..n]);
    }
    (child, out)
}

#[test]
fn sigterm_stops_cleanly_and_restores_the_terminal() {
    if !require_kvm() {
        return;
    }
    let (master, slave) = openpty();
    let before = termios(slave.as_raw_fd());
    let (mut child, _out) = echo_guest_on(&slave);
    let during = termios(slave.as_raw_fd());
    assert_eq!(during.c_lflag & libc::ICANON, 0, "raw mode while running");
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let after = termios(slave.as_raw_fd());
    drop(master);
    assert_eq!(status.code(), Some(6), "SIGTERM -> status 6");
    assert_eq!(after.c_lflag, before.c_lflag, "local modes restored");
    assert_eq!(after.c_iflag, before.c_iflag, "input modes restored");
    assert_eq!(after.c_oflag, before.c_oflag, "output modes restored");
}

#[test]
fn ctrl_a_x_on_a_terminal_stops_the_vm() {
    if !require_kvm() {
        return;
    }
    let (master, slave) = openpty();
    let (mut child, _out) = echo_guest_on(&slave);
    let mut m = std::fs::File::from(master);
    std::io::Write::write_all(&mut m, b"typed\x01x").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(6), "Ctrl-A x -> stopped by the user");
}
