//! Clear errors for bad input, each tested through the binary.

use tests::{expect_error, require_kvm, run_vmm};

#[test]
fn kernel_file_errors() {
    if !require_kvm() {
        return;
    }
    expect_error(&["--kernel", "/nonexistent/bzImage"], 1, "No such file");
    expect_error(&["--kernel", "/etc/hostname"], 1, "not a bzImage");
    expect_error(&["--kernel", "/"], 1, "is a directory");
    let dir = std::env::temp_dir().join(format!("vmm-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A header with HdrS but protocol 2.01.
    let mut img = vec![0u8; 0x1000];
    img[0x1fe] = 0x55;
    img[0x1ff] = 0xaa;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x0201u16.to_le_bytes());
    let old = dir.join("old");
    std::fs::write(&old, &img).unwrap();
    expect_error(&["--kernel", old.to_str().unwrap()], 1, "too old");
    // Protocol 2.15 but no 64-bit entry.
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 1; // LOADED_HIGH
    let no64 = dir.join("no64");
    std::fs::write(&no64, &img).unwrap();
    expect_error(&["--kernel", no64.to_str().unwrap()], 1, "64-bit entry");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn initrd_errors() {
    if !require_kvm() {
        return;
    }
    expect_error(&["--initrd", "/nonexistent/initrd"], 1, "No such file");
    let dir = std::env::temp_dir().join(format!("vmm-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(40 << 20).unwrap(); // sparse 40 MiB
    expect_error(
        &["--mem", "32M", "--initrd", big.to_str().unwrap()],
        1,
        "--mem",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mem_and_cpu_errors() {
    if !require_kvm() {
        return;
    }
    expect_error(&["--mem", "lots"], 2, "not a size");
    expect_error(&["--mem", "12X"], 2, "unknown size suffix");
    expect_error(&["--mem", "4M"], 1, "too small");
    expect_error(&["--mem", "64G"], 1, "too large");
    expect_error(&["--cpus", "0"], 1, "at least one vCPU");
    expect_error(&["--cpus", "100000"], 1, "vCPUs");
    expect_error(&["--timeout", "soon"], 2, "not a duration");
    expect_error(&["--serial", "tty"], 2, "file:PATH");
}

#[test]
fn cmdline_errors() {
    if !require_kvm() {
        return;
    }
    let long = "x".repeat(5000);
    expect_error(&["--cmdline", &long], 1, "at most");
    expect_error(&["--cmdline", "tab\there"], 1, "printable ASCII");
}

/// Runs the binary through a wrapper command (to change user or mount namespace).
fn run_wrapped(wrapper: &[&str]) -> tests::Run {
    let t = std::time::Instant::now();
    let bin = tests::vmm_bin();
    let out = std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&bin)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run wrapper");
    tests::Run::from_output(out, t.elapsed())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn dev_kvm_not_accessible_says_how_to_fix_it() {
    if !is_root() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to drop to an unprivileged user");
        return;
    }
    let r = run_wrapped(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]);
    r.check(r.status == 1, "status 1");
    r.check(r.stderr.contains("kvm` group"), "names the kvm group");
}

#[test]
fn dev_kvm_missing_says_how_to_fix_it() {
    if !is_root() || !std::path::Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipped: needs root and unshare to hide /dev/kvm in a mount namespace");
        return;
    }
    // A private mount namespace with an empty /dev: /dev/kvm does not exist there.
    let r = run_wrapped(&[
        "unshare",
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs none /dev && exec \"$0\"",
    ]);
    r.check(r.status == 1, "status 1");
    r.check(r.stderr.contains("modprobe"), "says to load the module");
}

#[test]
fn mem_larger_than_the_host_can_map_is_a_clear_error() {
    if !require_kvm() {
        return;
    }
    // Limit the address space so the guest RAM mapping cannot succeed.
    let r = run_wrapped(&["sh", "-c", "ulimit -v 1000000; exec \"$0\" --mem 2G"]);
    r.check(r.status == 1, "status 1");
    r.check(
        r.stderr.contains("cannot allocate 2048 MiB"),
        "says what failed",
    );
    r.check(r.stderr.contains("--mem"), "says what to do");
}

/// `--control PATH`: a missing directory, a path too long for a socket, a regular file (never
/// removed) and a live socket of another VMM are clear errors; a stale socket is replaced.
#[test]
fn control_socket_path_errors() {
    if !require_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmm-ctlerr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = ["--timeout", "2s", "--serial", "none", "--control"];
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let missing = arg(&dir.join("no/such/dir.sock"));
    expect_error(&[&t[..], &[missing.as_str()]].concat(), 1, "No such file");
    let long = arg(&dir.join("x".repeat(120)));
    expect_error(&[&t[..], &[long.as_str()]].concat(), 1, "shorter than");
    let file = dir.join("data");
    std::fs::write(&file, b"keep me").unwrap();
    let f = arg(&file);
    expect_error(&[&t[..], &[f.as_str()]].concat(), 1, "not a socket");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"keep me",
        "the file is untouched"
    );
    // A live socket: someone listens there.
    let live = dir.join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let l = arg(&live);
    expect_error(&[&t[..], &[l.as_str()]].concat(), 1, "is listening there");
    // A stale one (its listener gone) is replaced: the VM runs until its timeout (3).
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let s = arg(&stale);
    let r = run_vmm(
        &[&t[..], &[s.as_str(), "--cmdline", "workload=echo"]].concat(),
        None,
    );
    r.check(
        r.status == 3,
        "a stale socket is replaced; the run times out",
    );
    let _ = std::fs::remove_dir_all(dir);
}
