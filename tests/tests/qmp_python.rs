//! The control socket driven by QEMU's own QMP client library (PyPI `qemu.qmp`), unchanged:
//! it connects (greeting, capabilities negotiation), runs queries, a `ram-add`/`ram-remove`
//! pair, an unknown command (reported as a `CommandNotFound` error), waits for the `STOP`
//! event and quits (`tests/qmp/drive.py`). The library lives in a virtualenv that
//! `scripts/fetch-qmp.sh` makes (`.cache/qmp-venv`, or `$QMP_VENV`); the test runs the script
//! when the library is missing, and fails, naming the script, if it cannot be installed.
//! The old protocol failed here: the library timed out negotiating (`qmp_capabilities` was
//! `CommandNotFound`).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::{require_kvm, ControlledVmm};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn has_qmp(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import qemu.qmp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The venv's python with `qemu.qmp`, installed by `scripts/fetch-qmp.sh` if need be.
fn qmp_python() -> PathBuf {
    let venv = std::env::var_os("QMP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/qmp-venv"));
    let python = venv.join("bin/python");
    if has_qmp(&python) {
        return python;
    }
    let script = repo().join("scripts/fetch-qmp.sh");
    let out = Command::new(&script)
        .env("QMP_VENV", &venv)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success() && has_qmp(&python),
        "this test needs QEMU's `qemu.qmp` library and could not install it; run `{}` (it \
         needs PyPI access and python3-venv) and see its output:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

#[test]
fn qemus_python_qmp_library_drives_the_control_socket() {
    if !require_kvm() {
        return;
    }
    let python = qmp_python();
    let mut vmm = ControlledVmm::start("workload=echo");
    let sock = vmm.sock.clone();
    let mut client = Command::new(&python)
        .arg(repo().join("tests/qmp/drive.py"))
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while client.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = client.kill();
            let _ = vmm.child.kill();
            panic!("the qemu.qmp client did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = client.wait_with_output().unwrap();
    if !out.status.success() {
        let _ = vmm.child.kill(); // it would wait for its --timeout
    }
    let (vmm_status, vmm_err) = vmm.wait_with_stderr();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the qemu.qmp client failed:\n{stderr}"
    );
    assert_eq!(vmm_status, 6, "quit -> stopped by the user: {vmm_err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let g = &v["greeting"];
    assert_eq!(g["capabilities"], json!([]), "{v}");
    let ours = vmm::frontend::qmp::version();
    let q = &ours["qemu"];
    assert_eq!(
        g["version"],
        json!([q["major"], q["minor"], q["micro"]]),
        "{v}"
    );
    assert!(g["package"].as_str().unwrap().contains("rcu-vmm"), "{v}");
    assert_eq!(v["version"]["package"], g["package"], "{v}");
    assert_eq!(v["status"]["status"], "running", "{v}");
    let commands: Vec<&str> = v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for c in [
        "qmp_capabilities",
        "query-commands",
        "ram-add",
        "ram-remove",
        "quit",
    ] {
        assert!(commands.contains(&c), "{c} not in {commands:?}");
    }
    assert_eq!(v["ram-add"], json!({}), "{v}");
    assert_eq!(v["ram-remove"], json!({}), "{v}");
    let before = v["blocks-before"].as_array().unwrap();
    let added = v["blocks-added"].as_array().unwrap();
    assert!(!before.contains(&json!("py")), "{v}");
    assert!(added.contains(&json!("py")), "{v}");
    assert_eq!(added.len(), before.len() + 1, "{v}");
    assert_eq!(v["blocks-after"], v["blocks-before"], "{v}");
    assert_eq!(
        v["no-such-command-error"]["class"], "CommandNotFound",
        "{v}"
    );
    assert!(v["no-such-command-error"]["desc"]
        .as_str()
        .unwrap()
        .contains("no-such-command"));
    assert_eq!(v["ram-remove-error"]["class"], "DeviceNotFound", "{v}");
    assert_eq!(v["pause"], json!({}), "{v}");
    assert_eq!(v["event"]["event"], "STOP", "{v}");
    assert!(
        v["event"]["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000,
        "{v}"
    );
    assert_eq!(v["status-after"]["status"], "running", "{v}");
    assert_eq!(v["quit"], json!({}), "{v}");
    // The run's end event reaches the client before the VMM closes the socket.
    assert_eq!(v["end-event"], "SHUTDOWN", "{v}");
}
