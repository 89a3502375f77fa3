//! `--disk` on this machine's KVM: what a user gets for every bad image argument, and the
//! built-in guest running with a disk attached. (Linux booting from a disk is proven on real
//! KVM: `nested.rs`'s disk jobs.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::{expect_error, require_kvm, run_vmm, vmm_bin};
use vmm::outcome::status;

fn image(dir: &std::path::Path, name: &str, size: u64) -> String {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p.to_str().unwrap().to_owned()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rvmm-disk-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_disk_arguments_are_clear_errors() {
    if !require_kvm() {
        return;
    }
    let dir = tmpdir("bad");
    let missing = dir.join("missing.img");
    let missing = missing.to_str().unwrap();
    expect_error(
        &["--disk", missing, "--timeout", "5s"],
        status::ERROR,
        "missing.img",
    );
    let d = dir.to_str().unwrap();
    expect_error(
        &["--disk", d, "--timeout", "5s"],
        status::ERROR,
        "regular file",
    );
    let img = image(&dir, "a.img", 1 << 20);
    expect_error(
        &["--disk", &format!("{img},readonly"), "--timeout", "5s"],
        status::USAGE,
        "unknown disk option",
    );
    let nine: Vec<String> = (0..9)
        .map(|i| image(&dir, &format!("d{i}.img"), 4096))
        .collect();
    let mut args: Vec<&str> = nine.iter().flat_map(|p| ["--disk", p.as_str()]).collect();
    args.extend(["--timeout", "5s"]);
    expect_error(&args, status::ERROR, "at most 8 --disk");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The image is locked while a VMM uses it: a second VMM on the same image stops at once with
/// a message that says so, and the first one is not disturbed.
#[test]
fn a_second_vmm_cannot_open_an_image_in_use() {
    if !require_kvm() {
        return;
    }
    let dir = tmpdir("lock");
    let img = image(&dir, "shared.img", 1 << 20);
    let mut first = Command::new(vmm_bin())
        .args([
            "--disk",
            &img,
            "--serial",
            "none",
            "--timeout",
            "20s",
            "--cmdline",
            "workload=echo",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first VMM has opened (and locked) the image once its guest runs.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    for ro in ["", ",ro"] {
        let r = run_vmm(&["--disk", &format!("{img}{ro}"), "--timeout", "5s"], None);
        r.check(r.status == status::ERROR, "the second VMM fails");
        r.check(r.stderr.contains("locked"), "and says the image is locked");
        r.check(!r.stderr.contains("panicked"), "no panic");
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the refusal is immediate"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first VMM still runs"
    );
    let _ = first.kill();
    let _ = first.wait();
    // Once the first is gone, the image can be used again.
    let r = run_vmm(
        &[
            "--disk",
            &img,
            "--serial",
            "none",
            "--timeout",
            "20s",
            "--cmdline",
            "workload=smoke",
        ],
        None,
    );
    r.check(r.status == status::OK, "the image is free again");
    let _ = std::fs::remove_dir_all(&dir);
}
