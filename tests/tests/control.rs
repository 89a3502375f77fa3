//! The control socket, driven as a client would: the protocol, bad input of every kind, several
//! clients, and RAM and device hotplug under a running guest, many times in a row.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::{require_kvm, vmm_bin, vmmctl_bin, ControlledVmm as Vmm};

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    /// Connects and negotiates capabilities, as a QMP client does.
    fn connect(path: &Path) -> Client {
        let (mut c, _) = Client::connect_raw(path);
        let r = c.cmd(r#"{"execute": "qmp_capabilities"}"#);
        assert_eq!(r.trim(), r#"{"return":{}}"#, "negotiation");
        c
    }

    /// Connects and reads the greeting (returned), still in capabilities-negotiation mode.
    fn connect_raw(path: &Path) -> (Client, String) {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = c.line();
        assert!(greeting.contains("\"QMP\""), "greeting: {greeting}");
        (c, greeting)
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
            "expected a string",
        ),
        (
            r#"{"execute": "ram-add", "arguments": {"name": "x", "gpa": "far", "size": 1}}"#,
            "expected a non-negative integer",
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

/// QMP as QEMU speaks it on the real socket: QEMU's greeting schema, capabilities
/// negotiation first (other commands are `CommandNotFound` until then, `qmp_capabilities`
/// after), `id` on every reply, `query-commands`, and timestamped events sent only to
/// clients past the negotiation. The old code greeted with its own schema and answered
/// `qmp_capabilities` with `CommandNotFound`.
#[test]
fn qmp_greeting_negotiation_ids_and_events() {
    if !require_kvm() {
        return;
    }
    let vm = Vmm::start("workload=echo");
    let (mut raw, greeting) = Client::connect_raw(&vm.sock);
    let g: serde_json::Value = serde_json::from_str(&greeting).unwrap();
    let v = &g["QMP"]["version"];
    for k in ["major", "minor", "micro"] {
        assert!(v["qemu"][k].is_u64(), "{k}: {g}");
    }
    assert!(v["package"].as_str().unwrap().contains("rcu-vmm"), "{g}");
    assert_eq!(g["QMP"]["capabilities"], serde_json::json!([]), "{g}");
    // Before the negotiation: only qmp_capabilities.
    let r = raw.cmd_json(r#"{"execute": "query-status", "id": "early"}"#);
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert_eq!(r["id"], "early", "{r}");
    // A client still negotiating gets no events: it sees the reply to its next request
    // first, not the STOP caused by the other client's pause.
    let mut c = Client::connect(&vm.sock);
    c.send_raw(b"{\"execute\": \"pause\", \"id\": 1}\n");
    // The event goes out as the command runs, before its reply.
    let stop: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(stop["event"], "STOP", "{stop}");
    assert!(
        stop["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000,
        "{stop}"
    );
    assert!(
        stop["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000,
        "{stop}"
    );
    let r: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(r, serde_json::json!({"return": {}, "id": 1}));
    raw.send_raw(b"{\"execute\": \"quit\", \"id\": 2}\n");
    let r: serde_json::Value = serde_json::from_str(&raw.line()).unwrap();
    assert_eq!(
        r["error"]["class"], "CommandNotFound",
        "still negotiating: {r}"
    );
    assert_eq!(r["id"], 2, "{r}");
    let r = raw.cmd_json(r#"{"execute": "qmp_capabilities", "id": 3}"#);
    assert_eq!(r, serde_json::json!({"return": {}, "id": 3}));
    let r = raw.cmd_json(r#"{"execute": "qmp_capabilities", "id": 4}"#);
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert_eq!(r["id"], 4, "{r}");
    // Now negotiated: the RESUME reaches both.
    let r = raw.cmd_json(r#"{"execute": "resume", "id": 5}"#);
    assert_eq!(r, serde_json::json!({"return": {}, "id": 5}));
    let ev: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
    assert_eq!(ev["event"], "RESUME", "{ev}");
    let r = c.cmd_json(r#"{"execute": "query-commands", "id": "q"}"#);
    assert_eq!(r["id"], "q", "{r}");
    let names: Vec<&str> = r["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in [
        "qmp_capabilities",
        "query-status",
        "ram-add",
        "ram-remove",
        "quit",
    ] {
        assert!(names.contains(&want), "{want}: {names:?}");
    }
    // Requests back to back with no newline (as QEMU's Python library sends them).
    c.send_raw(br#"{"execute":"query-status","id":"a"}{"execute":"query-status","id":"b"}"#);
    for id in ["a", "b"] {
        let r: serde_json::Value = serde_json::from_str(&c.line()).unwrap();
        assert_eq!(r["id"], id, "{r}");
        assert_eq!(r["return"]["status"], "running", "{r}");
    }
    let r = c.cmd_json(r#"{"execute": "ram-remove", "arguments": {"name": "none"}, "id": 6}"#);
    assert_eq!(r["error"]["class"], "DeviceNotFound", "{r}");
    assert_eq!(r["id"], 6, "{r}");
    let _ = c.cmd(r#"{"execute": "quit"}"#);
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
    // vmmctl checks a command with the VMM's own parser (the shared `Command` enum) before
    // sending it: a typo or missing argument is a usage error.
    let (st, _, err) = vmmctl(&[&sock, "send", "no-such-command"]);
    assert_eq!(st, 2, "an unknown command is bad usage: {err}");
    assert!(
        err.contains("has not been found") && err.contains("query-status"),
        "{err}"
    );
    let (st, _, err) = vmmctl(&[&sock, "send", "ram-add", r#"{"name": "r"}"#]);
    assert_eq!(st, 2, "{err}");
    assert!(err.contains("gpa"), "{err}");
    // An error reply from the VMM exits 1.
    let (st, out, _) = vmmctl(&[&sock, "send", "ram-remove", r#"{"name": "nothing"}"#]);
    assert_eq!(st, 1, "an error reply exits 1: {out}");
    assert!(out.contains("DeviceNotFound"), "{out}");
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

/// A program the test needs; a missing one fails the test, saying so.
fn require_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("this test needs `{name}` (install it, e.g. `apt-get install {name}`)");
}

fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Finding 1: under `umask 000`, the socket's file is 0600 from the moment it exists, and the
/// VMM never changes a mode through the path (which could follow a symlink put there).
/// `strace` holds every path-based chmod for a second: the old code (bind, then chmod) left
/// the socket 0777 (`srwxrwxrwx`) for that second, and its chmod was seen here.
#[test]
fn the_socket_is_0600_from_its_creation_under_umask_000() {
    if !require_kvm() {
        return;
    }
    let strace = require_tool("strace");
    let dir = std::env::temp_dir().join(format!("vmm-ctl-mode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let trace = dir.join("strace.out");
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"umask 000; exec "$@""#)
        .arg("sh")
        .arg(&strace)
        .args(["-f", "--seccomp-bpf", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", "trace=chmod,fchmodat,fchmod"])
        .args(["-e", "inject=chmod,fchmodat:delay_enter=1000000"])
        .arg(vmm_bin())
        .args(["--timeout=60s", "--control"])
        .arg(&sock)
        .args(["--cmdline", "workload=echo"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Watch the path from before it exists: every mode it is ever seen with.
    let t = Instant::now();
    let first = loop {
        if let Some(m) = mode(&sock) {
            break m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "socket never appeared"
        );
        std::thread::yield_now();
    };
    let mut seen = vec![first];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = mode(&sock) {
            if *seen.last().unwrap() != m {
                seen.push(m);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // The owner (root here, the VMM's uid) can use it.
    let mut c = Client::connect(&sock);
    assert!(c.cmd(r#"{"execute": "quit"}"#).contains("return"));
    let status = child.wait().unwrap().code().unwrap_or(-1);
    let trace_out = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, 6, "quit -> stopped by the user");
    let modes: Vec<String> = seen.iter().map(|m| format!("{m:o}")).collect();
    assert_eq!(
        modes,
        ["600"],
        "the modes the socket was seen with: it must be 0600 from its creation"
    );
    let chmods: Vec<&str> = trace_out
        .lines()
        .filter(|l| l.contains("control.sock") && !l.contains("fchmod("))
        .collect();
    assert!(
        chmods.is_empty(),
        "the socket's mode was changed through its path: {chmods:?}"
    );
}

/// Finding 1: a symlink at the socket's path is never followed: the VMM refuses to start and
/// the file it points to keeps its mode and content; a dangling one creates nothing.
/// (The old code refused these too, before binding; what it followed was a symlink swapped in
/// after the bind, which `the_socket_is_0600_from_its_creation_under_umask_000` rules out: no
/// chmod through the path remains.)
#[test]
fn a_symlink_at_the_socket_path_is_never_followed() {
    use std::os::unix::fs::PermissionsExt;
    if !require_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmm-ctl-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join("precious");
    std::fs::write(&target, "data").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.join("control.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.join("dangling.sock");
    let nowhere = dir.join("nowhere");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    for path in [&link, &dangling] {
        let out = Command::new(vmm_bin())
            .args(["--timeout=20s", "--control"])
            .arg(path)
            .args(["--cmdline", "workload=echo"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(err.contains("not a socket"), "{err}");
        assert!(std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_symlink());
    }
    assert_eq!(mode(&target), Some(0o644));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "data");
    assert!(!nowhere.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 1: a client whose uid is not the VMM's is disconnected before the greeting and
/// logged with its uid and pid, even when the socket's mode would let it in (made 0666 here,
/// so that `SO_PEERCRED` is the only defence left); the owner's connections work throughout.
/// The old code greeted `nobody` and ran its command.
#[test]
fn a_client_of_another_uid_is_refused_and_logged() {
    use std::os::unix::fs::PermissionsExt;
    if !require_kvm() {
        return;
    }
    let setpriv = require_tool("setpriv");
    assert_eq!(
        unsafe_free_euid(),
        0,
        "this test switches to `nobody` with setpriv and so must run as root"
    );
    let vm = Vmm::start("workload=echo");
    std::fs::set_permissions(&vm.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&vm.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut owner = Client::connect(&vm.sock);
    let nobody = Command::new(&setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(vmmctl_bin())
        .arg(&vm.sock)
        .args(["send", "query-status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nobody.id();
    let out = nobody.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout} {stderr}");
    assert!(
        stderr.contains("closed the socket before greeting"),
        "{stderr}"
    );
    assert!(!stdout.contains("return"), "{stdout}");
    // The owner, connected before and after, is served.
    assert!(owner
        .cmd(r#"{"execute": "query-status"}"#)
        .contains("running"));
    let mut again = Client::connect(&vm.sock);
    assert!(again.cmd(r#"{"execute": "quit"}"#).contains("return"));
    let (status, err) = vm.wait_with_stderr();
    assert_eq!(status, 6, "{err}");
    assert!(
        err.contains(&format!("refused a client of uid 65534 (pid {pid})")),
        "the refusal is logged with the peer's uid and pid: {err}"
    );
}

/// The test process's effective uid, from /proc (no unsafe in tests).
fn unsafe_free_euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Finding 7: a client that floods requests as fast as it can (reading its replies, so it is
/// never dropped) does not keep another from being served: the other's connection and
/// request are answered while the flood goes on. The old code read the flooding client until
/// its socket was empty, which it never was: the other waited for the flood to end (20 s).
#[test]
fn a_flooding_client_does_not_starve_another() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !require_kvm() {
        return;
    }
    let vm = Vmm::start("workload=echo");
    let flood = Client::connect(&vm.sock);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut w, stop) = (flood.w.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let batch = r#"{"execute": "query-status"}"#.to_string() + "\n";
            let batch = batch.repeat(2000);
            let t = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(20) {
                if w.write_all(batch.as_bytes()).is_err() {
                    break;
                }
                sent += 2000;
            }
            sent
        })
    };
    let reader = {
        let mut r = flood.r.get_ref().try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            while let Ok(k) = r.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            n
        })
    };
    // Let the flood get going, then be a second client.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut other = Client::connect(&vm.sock);
    let r = other.cmd(r#"{"execute": "query-status", "id": "other"}"#);
    let waited = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    assert!(r.contains(r#""id":"other""#), "{r}");
    // Generous: served in its turn it takes milliseconds; starved, the flood's 20 s.
    assert!(
        waited < Duration::from_secs(8),
        "the second client waited {waited:?} while the first flooded ({sent} requests sent)"
    );
    let _ = other.cmd(r#"{"execute": "quit"}"#);
    let (status, _) = vm.wait();
    assert_eq!(status, 6);
    let got = reader.join().unwrap();
    assert!(got > 0, "the flooding client was served too");
}

/// Finding 3: `ram-add` places RAM only in the hot-plug window (never over the IOAPIC, the
/// LAPIC, KVM's TSS, boot RAM or far above), and never past `--max-memory` (or its default,
/// `--mem` + 256 MiB); the errors are QMP errors naming the window or the limit. The old code
/// accepted the IOAPIC, LAPIC and TSS blocks and any size.
#[test]
fn ram_add_respects_the_layout_and_the_memory_cap() {
    if !require_kvm() {
        return;
    }
    // The default cap first (--mem + 256 MiB = 384 MiB), with no new option, so that the
    // old binary fails on the layout, not on an unknown option.
    let vm = Vmm::start_with(&["--mem", "128M"], "workload=echo");
    let mut c = Client::connect(&vm.sock);
    let add = |c: &mut Client, name: &str, gpa: u64, size: u64| {
        c.cmd_json(&format!(
            r#"{{"execute": "ram-add", "arguments": {{"name": "{name}", "gpa": {gpa}, "size": {size}}}}}"#
        ))
    };
    for (gpa, size, what) in [
        (0xfec0_0000u64, 0x1000u64, "IOAPIC"),
        (0xfee0_0000, 0x1000, "LAPIC"),
        (0xfffb_d000, 0x3000, "KVM TSS"),
        (
            0xfeb0_0000,
            0x20_0000,
            "straddles the window's end into the IOAPIC",
        ),
        (0xdff0_0000, 0x20_0000, "straddles the window's start"),
        (
            0xc000_0000,
            0x20_0000,
            "the 32-bit MMIO hole below the window",
        ),
        (0x10_0000_0000, 1 << 40, "1 TiB far above"),
        (0x1_0000_0000, 0x20_0000, "where high RAM would be"),
        (0xe000_0000, !0xfff, "a size that overflows"),
    ] {
        let v = add(&mut c, "bad", gpa, size);
        assert_eq!(v["error"]["class"], "GenericError", "{what}: {v}");
        let desc = v["error"]["desc"].as_str().unwrap();
        assert!(
            desc.contains("hot-plug window 0xe0000000-0xfebfffff"),
            "{what}: {desc}"
        );
    }
    let v = add(&mut c, "big", 0xe000_0000, (256 << 20) + (2 << 20));
    let desc = v["error"]["desc"].as_str().unwrap_or_default();
    assert!(desc.contains("over --max-memory 384 MiB"), "{v}");
    assert_eq!(
        add(&mut c, "big", 0xe000_0000, 256 << 20)["return"],
        serde_json::json!({})
    );
    let _ = c.cmd(r#"{"execute": "quit"}"#);
    let (status, out) = vm.wait();
    assert_eq!(status, 6, "{out}");

    // An explicit cap: 264 MiB = 256 + 8.
    let vm = Vmm::start_with(&["--mem", "256M", "--max-memory", "264M"], "workload=echo");
    let mut c = Client::connect(&vm.sock);
    assert_eq!(
        add(&mut c, "a", 0xe000_0000, 2 << 20)["return"],
        serde_json::json!({})
    );
    let v = add(&mut c, "b", 0xe020_0000, 8 << 20);
    let desc = v["error"]["desc"].as_str().unwrap_or_default();
    assert!(
        desc.contains("over --max-memory 264 MiB") && desc.contains("266 MiB"),
        "{v}"
    );
    assert_eq!(
        add(&mut c, "b", 0xe020_0000, 6 << 20)["return"],
        serde_json::json!({})
    );
    let v = add(&mut c, "c", 0xe080_0000, 0x1000);
    assert!(
        v["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("--max-memory"),
        "{v}"
    );
    // Removing makes room again; the window's last page is usable.
    assert!(c
        .cmd(r#"{"execute": "ram-remove", "arguments": {"name": "b"}}"#)
        .contains("return"));
    assert_eq!(
        add(&mut c, "c", 0xfebf_f000, 0x1000)["return"],
        serde_json::json!({})
    );
    let _ = c.cmd(r#"{"execute": "quit"}"#);
    let (status, out) = vm.wait();
    assert_eq!(status, 6, "{out}");

    // A cap below --mem is a usage error that says what to do.
    let out = Command::new(vmm_bin())
        .args(["--mem", "256M", "--max-memory", "128M", "--timeout=10s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--max-memory 128 MiB is less than --mem 256 MiB"),
        "{err}"
    );
}

/// Finding 3: a large patterned `ram-add` is filled off the main loop: another client is
/// served while it fills, the requester's next (pipelined) request is answered after it, in
/// order, and the guest then reads the pattern at both ends of the window's first 2 MiB.
/// The old code filled on the main loop under the BQL: the other client's reply came only
/// after the fill's.
#[test]
fn a_large_patterned_fill_does_not_stall_other_clients() {
    if !require_kvm() {
        return;
    }
    // Under the default cap (--mem 256M + 256M), so the old binary runs it too.
    let size: u64 = 240 << 20;
    let vm = Vmm::start("workload=hotplug cycles=1");
    wait_for(&vm, "hotplug: ready", 1);
    let mut filler = Client::connect(&vm.sock);
    let mut other = Client::connect(&vm.sock);
    let pattern = 0x0123_4567_89ab_cdefu64;
    filler.send_raw(
        format!(
            "{{\"execute\": \"ram-add\", \"id\": 1, \"arguments\": {{\"name\": \"big\", \"gpa\": 3758096384, \"size\": {size}, \"pattern\": {pattern}}}}}\n{{\"execute\": \"query-memory\", \"id\": 2}}\n"
        )
        .as_bytes(),
    );
    let t = Instant::now();
    let r = other.cmd(r#"{"execute": "query-status", "id": "other"}"#);
    let other_took = t.elapsed();
    assert!(r.contains(r#""id":"other""#), "{r}");
    // The filler's reply has not come yet: the other client did not wait for the fill.
    // (A byte read here is lost, but then the test fails anyway.)
    filler.w.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let pending = filler.r.buffer().is_empty()
        && matches!(std::io::Read::read(&mut filler.r.get_ref(), &mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    filler.w.set_nonblocking(false).unwrap();
    let added = filler.line();
    let fill_took = t.elapsed();
    assert!(
        pending,
        "the other client was answered only after the fill's reply (other: {other_took:?}, \
         fill: {fill_took:?})"
    );
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["id"], 1, "{added}");
    assert_eq!(added["return"], serde_json::json!({}), "{added}");
    let mem: serde_json::Value = serde_json::from_str(&filler.line()).unwrap();
    assert_eq!(mem["id"], 2, "replies in order: {mem}");
    assert!(mem.to_string().contains("\"big\""), "{mem}");
    wait_for(&vm, &format!("ram present pattern {pattern:#018x}"), 1);
    assert!(filler
        .cmd(r#"{"execute": "ram-remove", "arguments": {"name": "big"}}"#)
        .contains("return"));
    let (status, out) = vm.wait();
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("workload hotplug: ok (1 cycles"), "{out}");
}
