//! The VMM's defences seen from outside: every thread of a running VMM is under a seccomp
//! filter with no new privileges, `--no-seccomp` says loudly that it is off, and the VMM
//! needs no root: an ordinary user in the `kvm` group boots the built-in guest.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tests::{require_kvm, vmm_bin, vmmctl_bin};

/// One thread's name and its `Seccomp:` and `NoNewPrivs:` lines.
#[derive(Debug)]
struct ThreadStatus {
    name: String,
    seccomp: String,
    no_new_privs: String,
}

fn threads(pid: u32) -> Vec<ThreadStatus> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the VMM's task list") {
        let Ok(status) = std::fs::read_to_string(e.unwrap().path().join("status")) else {
            continue; // a thread that just ended
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push(ThreadStatus {
            name: field("Name:"),
            seccomp: field("Seccomp:"),
            no_new_privs: field("NoNewPrivs:"),
        });
    }
    out
}

/// A VMM running the echo workload, its stdout read line by line.
struct Echo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Echo {
    fn start(cmd: &mut Command) -> Echo {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the vmm");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut e = Echo {
            child,
            lines,
            seen: Vec::new(),
        };
        e.wait_for("echo: ready");
        e
    }

    fn wait_for(&mut self, needle: &str) {
        // Generous: a loaded 2-core machine can be slow to boot the guest.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => {
                    let _ = self.child.kill();
                    let out = stderr_of(&mut self.child);
                    panic!(
                        "the guest never printed '{needle}'; stdout so far:\n{}\nstderr:\n{out}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Ends the guest with "quit" and returns the exit status and stderr.
    fn quit(mut self) -> (Option<i32>, String) {
        let _ = self.child.stdin.as_mut().unwrap().write_all(b"quit\n");
        let status = self.child.wait().expect("waiting for the vmm");
        let err = stderr_of(&mut self.child);
        (status.code(), err)
    }
}

impl Drop for Echo {
    /// A failed assertion must not leave the VMM running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` and returns what it wrote on stderr.
fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    let _ = child.wait();
    s
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmm-security-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_thread_of_a_running_vmm_has_a_seccomp_filter_and_no_new_privileges() {
    if !require_kvm() {
        return;
    }
    let dir = scratch("threads");
    let sock = dir.join("vmm.sock");
    let mut cmd = Command::new(vmm_bin());
    cmd.args([
        "--cmdline",
        "workload=echo",
        "--cpus",
        "2",
        "--timeout",
        "120s",
    ])
    .arg("--control")
    .arg(&sock);
    let vm = Echo::start(&mut cmd);
    // A patterned ram-add starts the fill thread (from the main loop, after its filter).
    let out = Command::new(vmmctl_bin())
        .arg(&sock)
        .args([
            "send",
            "ram-add",
            r#"{"name": "hp", "gpa": 3758096384, "size": 2097152, "pattern": 7}"#,
        ])
        .output()
        .expect("running vmmctl");
    assert!(
        out.status.success(),
        "ram-add with a pattern: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ts = threads(vm.child.id());
    let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
    for want in ["vmm", "vcpu0", "vcpu1", "rcu-reclaim-", "vmm-ram-fill"] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "no thread {want}* among {names:?}"
        );
    }
    for t in &ts {
        assert!(
            t.seccomp == "2" && t.no_new_privs == "1",
            "thread {} has Seccomp: {} and NoNewPrivs: {} (want 2 and 1); all: {ts:?}",
            t.name,
            t.seccomp,
            t.no_new_privs
        );
    }
    let (status, err) = vm.quit();
    assert_eq!(status, Some(0), "quit ends the echo guest: {err}");
    assert!(!err.contains("seccomp"), "no filter was hit: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_seccomp_says_so_and_leaves_the_threads_unfiltered() {
    if !require_kvm() {
        return;
    }
    let mut cmd = Command::new(vmm_bin());
    cmd.args([
        "--cmdline",
        "workload=echo",
        "--timeout",
        "120s",
        "--no-seccomp",
    ]);
    let vm = Echo::start(&mut cmd);
    let ts = threads(vm.child.id());
    assert!(
        ts.iter().all(|t| t.seccomp == "0"),
        "--no-seccomp installs no filter: {ts:?}"
    );
    let (status, err) = vm.quit();
    assert_eq!(status, Some(0), "{err}");
    assert!(
        err.contains("vmm: warning: --no-seccomp: system-call filtering is OFF")
            && err.contains("only to debug"),
        "a loud warning on stderr: {err}"
    );
}

/// The gid of group `name` from /etc/group.
fn group_id(name: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
        })
}

const HOST_FIX: &str = "set the host up as Debian's udev rule does: `groupadd --system kvm; \
     chgrp kvm /dev/kvm; chmod 0660 /dev/kvm` (or a udev rule `KERNEL==\"kvm\", \
     GROUP=\"kvm\", MODE=\"0660\"`)";

/// As root: a `kvm` group and `/dev/kvm` group `kvm`, mode 0660 (what Debian's udev rule
/// does and `.ci/run` does too), when the host lacks them. Says what it changed.
fn set_up_kvm_group() {
    let run = |what: &[&str]| {
        let st = Command::new(what[0]).args(&what[1..]).status();
        assert!(
            st.as_ref().is_ok_and(|s| s.success()),
            "`{}` failed ({st:?}): {HOST_FIX}",
            what.join(" ")
        );
    };
    if group_id("kvm").is_none() {
        eprintln!(
            "security test: this host has no `kvm` group; creating it (groupadd --system kvm)"
        );
        run(&["groupadd", "--system", "kvm"]);
    }
    let gid = group_id("kvm").expect("the kvm group exists now");
    let dev = std::fs::metadata("/dev/kvm").expect("/dev/kvm");
    if dev.gid() != gid || dev.mode() & 0o060 != 0o060 {
        eprintln!(
            "security test: /dev/kvm was gid {} mode {:o}; making it group kvm, mode 0660",
            dev.gid(),
            dev.mode() & 0o777
        );
        run(&["chgrp", "kvm", "/dev/kvm"]);
        run(&["chmod", "0660", "/dev/kvm"]);
    }
}

#[test]
fn an_ordinary_user_in_the_kvm_group_boots_the_guest_without_root() {
    if !require_kvm() {
        return;
    }
    // Who we are: /proc/self/status's real uid.
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid: u32 = me
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("Uid: in /proc/self/status");
    let dir = scratch("user");
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    // The binary and the directories on the way to it must be readable by the user: run a
    // copy from a directory of our own (the built-in guest is inside the binary).
    let bin = dir.join("vmm");
    std::fs::copy(vmm_bin(), &bin).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = |cmd: &mut Command| {
        cmd.arg(&bin)
            .args(["--timeout", "120s", "--result-json"])
            .arg(out.join("result.json"))
            .arg("--log")
            .arg(out.join("serial.log"))
            .arg("--control")
            .arg(out.join("vmm.sock"))
            .current_dir(&out)
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
    };
    let mut cmd;
    if uid == 0 {
        // As root (CI, or a fresh machine): set the host up as Debian's udev rule does, as
        // the harness installs QEMU, so that the README's test command works anywhere.
        set_up_kvm_group();
        // Then become `nobody` in group `kvm`, with no other group.
        let kvm_gid = group_id("kvm").unwrap_or_else(|| {
            panic!("this host has no `kvm` group, so no ordinary user can use KVM: {HOST_FIX}")
        });
        let dev = std::fs::metadata("/dev/kvm").unwrap();
        assert!(
            dev.gid() == kvm_gid && dev.mode() & 0o060 == 0o060,
            "/dev/kvm is owned by gid {} with mode {:o}, not group kvm ({kvm_gid}) with rw: \
             {HOST_FIX}",
            dev.gid(),
            dev.mode() & 0o777
        );
        let setpriv = Path::new("/usr/bin/setpriv");
        assert!(
            setpriv.exists(),
            "this test needs setpriv (util-linux: `apt-get install util-linux`)"
        );
        std::os::unix::fs::chown(&out, Some(65534), Some(kvm_gid)).unwrap();
        // Without the kvm group the same user is refused, with the VMM's advice: the switch
        // of user is real.
        let denied = Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .tap(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(
            denied.status.code() == Some(1) && err.contains("/dev/kvm is not accessible"),
            "outside the kvm group /dev/kvm is refused: {:?} {err}",
            denied.status
        );
        cmd = Command::new(setpriv);
        cmd.args([
            "--reuid=65534",
            &format!("--regid={kvm_gid}"),
            "--clear-groups",
            "--",
        ]);
    } else {
        // Already an ordinary user: run as we are (through sh, so the arguments are the
        // same as setpriv's).
        cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("exec \"$@\"").arg("sh");
    }
    let run = cmd.tap(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        run.status.code(),
        Some(0),
        "the built-in guest boots as an ordinary user:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("workload smoke: ok"), "{stdout}");
    let json = std::fs::read_to_string(out.join("result.json")).expect("--result-json written");
    assert!(json.contains("\"outcome\""), "{json}");
    let log = std::fs::read_to_string(out.join("serial.log")).expect("--log written");
    assert!(log.contains("workload smoke: ok"), "{log}");
    if uid == 0 {
        let owner = std::fs::metadata(out.join("result.json")).unwrap().uid();
        assert_eq!(owner, 65534, "written by the user the VMM ran as");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Command` builder calls in a chain.
trait Tap {
    fn tap(&mut self, f: impl FnOnce(&mut Self)) -> &mut Self;
}

impl Tap for Command {
    fn tap(&mut self, f: impl FnOnce(&mut Self)) -> &mut Self {
        f(self);
        self
    }
}
