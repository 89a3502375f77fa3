//! The control socket, driven as a client would: the protocol, bad input of every kind, several
//! clients, and RAM and device hotplug under a running guest, many times in a row.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{require_kvm, vmm_bin, vmmctl_bin};

struct Vmm {
    child: Child,
    sock: PathBuf,
    dir: PathBuf,
}

impl Vmm {
    fn start(cmdline: &str) -> Vmm {
        Vmm::start_with(&[], cmdline)
    }

    fn start_with(args: &[&str], cmdline: &str) -> Vmm {
        // One directory (and socket) per VMM: the tests run in parallel.
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
        Vmm { child, sock, dir }
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.join("serial.log"))
            .unwrap_or_default()
            .replace('\r', "")
    }

    fn wait(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap().code().unwrap_or(-1);
        let out = self.serial();
        let _ = std::fs::remove_dir_all(&self.dir);
        (status, out)
    }
}

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = c.line();
        assert!(greeting.contains("\"QMP\""), "greeting: {greeting}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// [`cmd`](Self::cmd), its reply parsed.
    fn cmd_json(&mut self, req: &str) -> serde_json::Value {
        let r = self.cmd(req);
        serde_json::from_str(&r).unwrap_or_else(|e| panic!("reply {r:?}: {e}"))
    }

    /// Sends a request and returns its reply, skipping asynchronous events.
    fn cmd(&mut self, req: &str) -> String {
        self.send_raw(format!("{req}\n").as_bytes());
        loop {
            let l = self.line();
            if !l.contains("\"event\"") {
                return l;
            }
        }
    }
}

#[test]
fn protocol_and_bad_input() {
    if !require_kvm() {
        return;
    }
    let vm = Vmm::start("workload=hotplug cycles=1000");
    let mut c = Client::connect(&vm.sock);
    let r = c.cmd(r#"{"execute": "query-status", "id": 7}"#);
    assert!(
        r.contains(r#""status":"running""#) && r.contains(r#""id":7"#),
        "{r}"
    );
    for (req, want) in [
        ("this is not json", "malformed JSON"),
        (r#"{"execute": "no-such-command"}"#, "CommandNotFound"),
        (r#"{"execute": 42}"#, "must be a string"),
        (r#"{"arguments": {}}"#, "expected"),
        (
            r#"{"execute": "ram-add", "arguments": []}"#,
            "must be an object",
        ),
        (
            r#"{"execute": "ram-add", "arguments": {"name": 1}}"#,
            "must be a string",
        ),
        (
            r#"{"execute": "ram-add", "arguments": {"name": "x", "gpa": "far", "size": 1}}"#,
            "must be an integer",
        ),
        (
            r#"{"execute": "ram-add", "arguments": {"name": "x", "gpa": 0, "size": 2097152}}"#,
            "only inside the hot-plug window 0xe0000000-0xfebfffff",
        ),
        (
            r#"{"execute": "ram-remove", "arguments": {"name": "ram-low"}}"#,
            "cannot be removed",
        ),
        (
            r#"{"execute": "device-remove", "arguments": {"port": 1016}}"#,
            "not a hot-pluggable",
        ),
        (
            r#"{"execute": "device-add", "arguments": {"port": 1016, "value": 1}}"#,
            "overlaps",
        ),
    ] {
        let r = c.cmd(req);
        assert!(r.contains("\"error\"") && r.contains(want), "{req} -> {r}");
    }
    // Several clients at once.
    let mut others: Vec<Client> = (0..4).map(|_| Client::connect(&vm.sock)).collect();
    for o in &mut others {
        assert!(o
            .cmd(r#"{"execute": "query-rcu"}"#)
            .contains("grace-periods"));
    }
    // A client that vanishes mid-request.
    {
        let mut gone = Client::connect(&vm.sock);
        gone.send_raw(br#"{"execute": "query-sta"#);
    }
    // An oversized line: an error, then the connection is closed.
    {
        let mut big = Client::connect(&vm.sock);
        let line = vec![b'x'; 200 * 1024];
        let _ = big.w.write_all(&line);
        let r = big.line();
        assert!(r.contains("longer than"), "{r}");
        assert_eq!(big.line(), "", "closed after the oversized line");
    }
    // The VMM and the guest are unharmed.
    let r = c.cmd(r#"{"execute": "query-status"}"#);
    assert!(r.contains(r#""status":"running""#), "{r}");
    assert!(c.cmd(r#"{"execute": "pause"}"#).contains("return"));
    assert!(c.cmd(r#"{"execute": "query-status"}"#).contains("paused"));
    assert!(c.cmd(r#"{"execute": "resume"}"#).contains("return"));
    assert!(c.cmd(r#"{"execute": "query-exits"}"#).contains("pio"));
    assert!(c.cmd(r#"{"execute": "quit"}"#).contains("return"));
    let (status, _) = vm.wait();
    assert_eq!(status, 6, "quit -> stopped by the user");
}

fn wait_for(vm: &Vmm, needle: &str, count: usize) {
    let t = Instant::now();
    while vm.serial().matches(needle).count() < count {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "guest never printed '{needle}' {count} times:\n{}",
            vm.serial()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn ram_and_device_hotplug_many_cycles_under_a_running_guest() {
    if !require_kvm() {
        return;
    }
    let cycles = 25;
    let vm = Vmm::start(&format!("workload=hotplug cycles={cycles}"));
    let mut c = Client::connect(&vm.sock);
    wait_for(&vm, "hotplug: ready", 1);
    for i in 0..cycles {
        let pattern = 0x1000_0000_0000_0000u64 + i as u64 * 0x1111;
        let r = c.cmd(&format!(
            r#"{{"execute": "device-add", "arguments": {{"port": 1328, "value": {}}}}}"#,
            0x5a00 + i
        ));
        assert!(r.contains("return"), "{r}");
        let r = c.cmd(&format!(
            r#"{{"execute": "ram-add", "arguments": {{"name": "hot", "gpa": 3758096384, "size": 2097152, "pattern": {pattern}}}}}"#
        ));
        assert!(r.contains("return"), "{r}");
        wait_for(&vm, &format!("ram present pattern {pattern:#018x}"), 1);
        wait_for(&vm, "device present", i + 1);
        assert!(c
            .cmd(r#"{"execute": "device-remove", "arguments": {"port": 1328}}"#)
            .contains("return"));
        if i + 1 < cycles {
            assert!(c
                .cmd(r#"{"execute": "ram-remove", "arguments": {"name": "hot"}}"#)
                .contains("return"));
            wait_for(&vm, "hotplug: ram absent", i + 1);
            wait_for(&vm, "hotplug: device absent", i + 1);
        }
    }
    // The last removal: the guest then completes its cycles and resets.
    let r = c.cmd(r#"{"execute": "query-memory"}"#);
    assert!(r.contains("\"hot\""), "{r}");
    let _ = c.cmd(r#"{"execute": "ram-remove", "arguments": {"name": "hot"}}"#);
    let (status, out) = vm.wait();
    assert_eq!(status, 0, "{out}");
    assert!(
        out.contains(&format!("workload hotplug: ok ({cycles} cycles")),
        "{out}"
    );
}

fn vmmctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(vmmctl_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vmmctl`, the command-line client: one command, errors and bad input, and the benchmark's
/// live RAM writer (`churn`) against a running guest, which loses nothing.
#[test]
fn vmmctl_sends_commands_and_churns_ram_under_a_running_guest() {
    if !require_kvm() {
        return;
    }
    let vm = Vmm::start("workload=echo");
    let sock = vm.sock.to_str().unwrap().to_owned();
    let (st, out, _) = vmmctl(&[&sock, "send", "query-status"]);
    assert_eq!(st, 0, "{out}");
    assert!(out.contains(r#""status":"running""#), "{out}");
    let (st, out, _) = vmmctl(&[&sock, "send", "no-such-command"]);
    assert_eq!(st, 1, "an error reply exits 1: {out}");
    assert!(out.contains("CommandNotFound"), "{out}");
    for bad in ["[1, 2]", "{oops", "7"] {
        let (st, _, err) = vmmctl(&[&sock, "send", "ram-add", bad]);
        assert_eq!(st, 2, "{bad}: bad usage");
        assert!(err.contains("not a JSON object"), "{err}");
    }
    let (st, _, err) = vmmctl(&["/nonexistent/vmm.sock", "send", "query-status"]);
    assert_eq!(st, 3, "no VMM there");
    assert!(err.contains("is the VMM running with --control"), "{err}");
    for bad in [
        &["--gpa", "12q"][..],
        &["--rate", "-1"],
        &["--rate", "NaN"],
        &["--duration", "inf"],
        &["--wait", "1e300"],
    ] {
        let (st, _, err) = vmmctl(&[&[sock.as_str(), "churn"][..], bad].concat());
        assert_eq!(st, 2, "{bad:?}: bad usage: {err}");
    }
    // A block of the churn's name that the churn did not add is never touched.
    let (st, _, err) = vmmctl(&[&sock, "churn", "--name", "ram-low", "--duration", "1"]);
    assert_eq!(st, 1);
    assert!(err.contains("named 'ram-low' exists"), "{err}");

    // The writer: add+remove pairs for a second, each one answered without error.
    let (st, out, err) = vmmctl(&[
        &sock,
        "churn",
        "--wait",
        "5",
        "--size",
        "0x10000",
        "--rate",
        "200",
        "--duration",
        "1",
    ]);
    assert_eq!(st, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let pairs = stats["pairs"].as_u64().unwrap();
    assert!(pairs >= 20, "{out}");
    assert_eq!(stats["errors"], serde_json::json!([]), "{out}");
    assert_eq!(stats["failed"], 0, "{out}");
    // Every pair went through the RAM list, and the block is gone again.
    let (_, mem, _) = vmmctl(&[&sock, "send", "query-memory"]);
    let mem: serde_json::Value = serde_json::from_str(mem.trim()).expect(&mem);
    let m = &mem["return"];
    let (added, removed) = (m["added"].as_u64().unwrap(), m["removed"].as_u64().unwrap());
    assert!(removed >= pairs, "{mem}");
    assert_eq!(
        added - removed,
        m["blocks"].as_array().unwrap().len() as u64,
        "{mem}"
    );
    assert!(!mem.to_string().contains("\"churn\""), "{mem}");
    // A churn block outside the hot-plug window (over boot RAM) is refused each time; the
    // client reports it.
    let (st, out, err) = vmmctl(&[
        &sock,
        "churn",
        "--gpa",
        "0",
        "--rate",
        "100",
        "--duration",
        "0.2",
    ]);
    assert_eq!(st, 1, "failed pairs: {err}");
    assert!(out.contains("hot-plug window"), "{out}");
    assert!(out.contains(r#""pairs":0"#), "{out}");
    let (st, _, _) = vmmctl(&[&sock, "send", "quit"]);
    assert_eq!(st, 0);
    let (status, _) = vm.wait();
    assert_eq!(status, 6, "quit -> stopped by the user");
}

/// A vCPU that sits in `KVM_RUN` for the whole run (the second CPU, never started by the
/// `echo` workload, waits there for a SIPI) never holds up a grace period: it is offline
/// inside `KVM_RUN`. If it stayed online, no grace period could end and no removed block
/// would ever be unmapped (checked by making `vcpu.rs` call `vcpu.run()` without
/// `offline_while`: this test then fails).
#[test]
fn grace_periods_never_wait_for_a_vcpu_inside_kvm_run() {
    if !require_kvm() {
        return;
    }
    let vm = Vmm::start_with(&["--cpus", "2"], "workload=echo");
    let mut c = Client::connect(&vm.sock);
    wait_for(&vm, "echo: ready", 1);
    let cycles = 20;
    for _ in 0..cycles {
        let r = c.cmd(
            r#"{"execute": "ram-add", "arguments": {"name": "hot", "gpa": 3758096384, "size": 65536}}"#,
        );
        assert!(r.contains("return"), "{r}");
        let r = c.cmd(r#"{"execute": "ram-remove", "arguments": {"name": "hot"}}"#);
        assert!(r.contains("return"), "{r}");
    }
    let t = Instant::now();
    let unmapped = loop {
        let v = c.cmd_json(r#"{"execute": "query-memory"}"#);
        let n = v["return"]["unmapped"].as_u64().unwrap();
        if n >= cycles || t.elapsed() > Duration::from_secs(10) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        unmapped, cycles,
        "removed blocks still mapped after 10 s: a grace period is waiting for a vCPU"
    );
    let v = c.cmd_json(r#"{"execute": "query-rcu"}"#);
    assert!(v["return"]["grace-periods"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["return"]["stalls"].as_u64(), Some(0), "{v}");
    let _ = c.cmd(r#"{"execute": "quit"}"#);
    let (status, out) = vm.wait();
    assert_eq!(status, 6, "{out}");
}

/// The end-to-end benchmark's setting, shortened: every lookup design answers every round
/// right on two vCPUs while `vmmctl churn` hot-adds and removes a block under them (in the
/// lock-based designs the writer holds the readers' lock across its KVM ioctls).
#[test]
fn lookup_bench_is_correct_in_every_design_under_the_ram_writer() {
    if !require_kvm() {
        return;
    }
    for design in ["rcu", "mutex", "rwlock", "vm-memory"] {
        let vm = Vmm::start_with(
            &["--cpus", "2", "--ram-lookup", design],
            "workload=lookup-bench count=1024 rounds=3000",
        );
        let churn = Command::new(vmmctl_bin())
            .arg(&vm.sock)
            .args(["churn", "--size", "0x10000", "--rate", "1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, out) = vm.wait();
        let churn = churn.wait_with_output().unwrap();
        let stats = String::from_utf8_lossy(&churn.stdout);
        assert_eq!(status, 0, "{design}: {out}");
        assert!(out.contains("workload lookup-bench: ok"), "{design}: {out}");
        assert!(out.contains("errors 0"), "{design}: {out}");
        assert_eq!(
            churn.status.code(),
            Some(0),
            "{design}: {stats} {}",
            String::from_utf8_lossy(&churn.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stats.trim()).expect(&stats);
        assert!(v["pairs"].as_u64().unwrap() > 0, "{design}: {stats}");
    }
}

/// A client that sends a large batch of requests in one go and only then reads gets every
/// reply, though they do not all fit in the socket at once: the VMM sends the rest when the
/// socket has room again (the client sends nothing more to wake it).
#[test]
fn a_client_that_pipelines_a_large_batch_gets_every_reply() {
    if !require_kvm() {
        return;
    }
    let vm = Vmm::start("workload=echo");
    let mut c = Client::connect(&vm.sock);
    let n = 8000;
    let batch: String = (0..n)
        .map(|i| format!("{{\"execute\": \"query-status\", \"id\": {i}}}\n"))
        .collect();
    c.send_raw(batch.as_bytes());
    // Let the VMM read the whole batch (and fill the socket) before reading anything.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..n {
        let l = c.line();
        assert!(
            l.contains(&format!("\"id\":{i}")) && l.contains("return"),
            "reply {i}: {l}"
        );
    }
    let _ = c.cmd(r#"{"execute": "quit"}"#);
    let (status, _) = vm.wait();
    assert_eq!(status, 6);
}
