//! The nested-KVM harness's own failure modes: a missing QEMU, an L1 without SVM, a job that
//! hangs, bad job names, and the direct mode that hosts with hardware KVM use (exercised here
//! with the built-in guest, which runs on this host's KVM too).

use std::process::Command;
use std::time::Duration;
use tests::nested::{Harness, Job, Mode, NestedError};

fn harness() -> Harness {
    Harness::new(tests::vmm_bin(), tests::vmmctl_bin())
}

#[test]
fn direct_mode_runs_jobs_brings_back_their_files_and_kills_a_hang() {
    if !tests::require_kvm() {
        return;
    }
    let mut h = harness();
    h.mode = Mode::Direct;
    let dir = std::env::temp_dir().join(format!("rvmm-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let carried = dir.join("note.txt");
    std::fs::write(&carried, "carried file\n").unwrap();
    h.file(&carried, "note.txt");
    let jobs = [
        Job::new(
            "smoke",
            "\"$VMM\" --timeout 30s --log guest.log --result-json result.json\ncat \"$FILES/note.txt\"\n",
        ),
        Job::new(
            "hang",
            "echo started; sleep 1000 & wait; echo never",
        )
        .timeout(Duration::from_secs(2)),
        Job::new("fails", "exit 3"),
    ];
    let b = h.run(&jobs).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(b.mode, "direct");
    let smoke = b.job("smoke");
    assert_eq!(smoke.status, 0, "{}", smoke.describe());
    assert!(
        smoke.stdout().contains("workload smoke: ok"),
        "{}",
        smoke.describe()
    );
    assert!(
        smoke.stdout().contains("carried file"),
        "{}",
        smoke.describe()
    );
    assert!(smoke.text("guest.log").contains("workload smoke: ok"));
    let v: serde_json::Value = serde_json::from_str(smoke.text("result.json").trim()).unwrap();
    assert_eq!(v["exit_reason"], "reset");
    let hang = b.job("hang");
    assert!(hang.timed_out, "{}", hang.describe());
    assert!(hang.stdout().contains("started"));
    assert!(!hang.stdout().contains("never"));
    assert!(hang.took < Duration::from_secs(10), "{:?}", hang.took);
    assert!(hang.describe().contains("TIMED OUT"));
    assert_eq!(b.job("fails").status, 3);
}

#[test]
fn bad_job_names_and_missing_files_are_refused_before_anything_runs() {
    let mut h = harness();
    h.mode = Mode::Direct;
    for name in ["", "a b", "../x"] {
        match h.run(&[Job::new(name, "true")]) {
            Err(NestedError::Setup(m)) => assert!(m.contains("job name"), "{m}"),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    h.file("/no/such/file", "x");
    match h.run(&[Job::new("ok", "true")]) {
        Err(NestedError::Setup(m)) => assert!(m.contains("/no/such/file"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn nested_kvm(envs: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let bin = tests::vmm_bin().with_file_name("nested-kvm");
    let out = Command::new(bin)
        .envs(envs.iter().copied())
        .env("RVMM_NESTED", "always")
        .args(args)
        .output()
        .expect("run nested-kvm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_missing_qemu_is_a_clear_harness_error() {
    let (st, out) = nested_kvm(
        &[("QEMU", "/no/such/qemu-system-x86_64")],
        &["--quiet", "--", "--timeout", "5s"],
    );
    assert_eq!(st, 3, "{out}");
    assert!(
        out.contains("QEMU=/no/such/qemu-system-x86_64 is not a program"),
        "{out}"
    );
}

#[test]
fn an_l1_without_svm_is_reported_as_such() {
    let dir = std::env::temp_dir().join(format!("rvmm-nosvm-{}", std::process::id()));
    let (st, out) = nested_kvm(
        // A CPU model without SVM (`max,-svm` is no good for this: its L1 cannot run static
        // glibc programs at all).
        &[("RVMM_NESTED_CPU", "qemu64,-svm")],
        &[
            "--quiet",
            "--out",
            dir.to_str().unwrap(),
            "--",
            "--timeout",
            "5s",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(st, 3, "{out}");
    assert!(out.contains("no usable KVM"), "{out}");
    assert!(out.contains("kvm-amd"), "{out}");
}

#[test]
fn nested_kvm_usage_errors() {
    let (st, out) = nested_kvm(&[], &[]);
    assert_eq!(st, 2, "{out}");
    assert!(out.contains("nothing to run"), "{out}");
    let (st, out) = nested_kvm(&[], &["--file", "a=b/c", "--", "x"]);
    assert_eq!(st, 2, "{out}");
    assert!(out.contains("NAME must be"), "{out}");
}
