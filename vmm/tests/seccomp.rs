//! The seccomp filters for real, each in a child process (a filter cannot be removed, and a
//! forbidden call ends the whole process): the child is this test binary again, running the
//! ignored test `child` with `VMM_SECCOMP_TEST_CHILD` saying what to do. It names a thread,
//! installs a filter on it exactly as the VMM does, does what that kind of thread does
//! (locks, a log line, a thread start where the kind may), then makes one call its filter
//! forbids. The parent checks the SIGSYS message and the exit status.

use std::process::Command;
use std::sync::{Arc, Mutex};
use vmm::seccomp::{Filters, ThreadKind};

const ENV: &str = "VMM_SECCOMP_TEST_CHILD";

/// The forbidden calls a child can make.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// `File::open`: openat(2).
    Open,
    /// `UnixStream::pair`: socketpair(2).
    Socket,
    /// `Command::spawn`: clone(2) without CLONE_THREAD (clone3 is refused with ENOSYS, so
    /// the C library falls back to clone).
    Process,
    /// A line to standard output: write(2) to fd 1 (a vCPU writes only its eventfds and
    /// stderr).
    Stdout,
}

fn parse_kind(s: &str) -> ThreadKind {
    match s {
        "vcpu" => ThreadKind::Vcpu,
        "main" => ThreadKind::MainLoop,
        "reclaim" => ThreadKind::Reclaim,
        _ => panic!("unknown kind {s}"),
    }
}

fn forbidden(call: Call) {
    match call {
        Call::Open => drop(std::fs::File::open("/proc/self/status")),
        Call::Socket => drop(std::os::unix::net::UnixStream::pair()),
        Call::Process => drop(Command::new("/bin/true").spawn()),
        Call::Stdout => {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = out.write_all(b"a vCPU writes to stdout\n");
            let _ = out.flush();
        }
    }
}

/// Runs the child with `spec` ("kind call thread-name [inherit]") and returns its exit status
/// and stderr, having checked that it got as far as the forbidden call and no further.
fn run_child(spec: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, spec)
        .output()
        .expect("re-running the test binary");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("child: filter installed"),
        "{spec}: the child did not get as far as the forbidden call:\n{err}"
    );
    assert!(
        !err.contains("child: survived"),
        "{spec}: the call went through:\n{err}"
    );
    (out.status, err)
}

fn check(spec: &str, thread: &str, filter: &str, nr: libc::c_long, name: &str) {
    let (status, err) = run_child(spec);
    let want = format!(
        "vmm: seccomp: thread '{thread}' (filter {filter}) made system call {nr} ({name}), \
         which its filter forbids; the VMM stops."
    );
    assert!(err.contains(&want), "{spec}: expected\n  {want}\nin\n{err}");
    assert!(
        err.contains("vmm/src/seccomp.rs"),
        "says where to add it: {err}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "{spec}: exit status 1 (the VMM failed):\n{err}"
    );
}

#[test]
fn a_vcpu_thread_that_opens_a_file_is_stopped_with_its_name_and_the_call() {
    check(
        "vcpu open vcpu3",
        "vcpu3",
        "VCPU",
        libc::SYS_openat,
        "openat",
    );
}

#[test]
fn the_main_loop_cannot_create_a_socket() {
    check(
        "main socket vmm",
        "vmm",
        "MAIN_LOOP",
        libc::SYS_socketpair,
        "socketpair",
    );
}

#[test]
fn the_main_loop_cannot_start_a_process() {
    // Threads yes (clone with CLONE_THREAD), processes no: clone3 is refused with ENOSYS and
    // the C library's fallback clone with the trap. posix_spawn blocks every signal around
    // its clone, and a trap whose SIGSYS is blocked kills the process with the default
    // action: no message here, but the process still ends on the call.
    use std::os::unix::process::ExitStatusExt;
    let (status, err) = run_child("main process vmm");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "killed by SIGSYS ({status}):\n{err}"
    );
}

#[test]
fn the_reclamation_thread_cannot_open_a_file() {
    check(
        "reclaim open rcu-reclaim-1",
        "rcu-reclaim-1",
        "RECLAIM",
        libc::SYS_openat,
        "openat",
    );
}

#[test]
fn a_vcpu_thread_writes_its_eventfd_and_stderr_but_not_stdout() {
    // The child has written its eventfd and a line to stderr before this call.
    check(
        "vcpu stdout vcpu1",
        "vcpu1",
        "VCPU",
        libc::SYS_write,
        "write",
    );
}

#[test]
fn a_thread_started_by_the_main_loop_inherits_its_filter() {
    // As `vmm-ram-fill`, started from the main loop for ram-add's patterned fills.
    check(
        "main socket vmm inherit",
        "vmm-ram-fill",
        "inherited from the thread that started it",
        libc::SYS_socketpair,
        "socketpair",
    );
}

/// The child (run by the tests above, never on its own).
#[test]
#[ignore = "a child process of the other tests in this file, which run it"]
fn child() {
    let spec = std::env::var(ENV).expect("run by the other tests of this file");
    let words: Vec<&str> = spec.split(' ').collect();
    let kind = parse_kind(words[0]);
    let call = match words[1] {
        "open" => Call::Open,
        "socket" => Call::Socket,
        "process" => Call::Process,
        "stdout" => Call::Stdout,
        other => panic!("unknown call {other}"),
    };
    let name = words[2].to_string();
    let inherit = words.get(3) == Some(&"inherit");
    let filters = Filters::new().expect("compiling the filters");
    // A vCPU's eventfd (the VMM's: the console's, the serial irqfd, the loop's waker).
    let wake = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    filters
        .set_vcpu_writes(&[std::os::fd::AsRawFd::as_raw_fd(&wake)])
        .expect("compiling the vCPU filter");
    let t = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            filters.install(kind).expect("installing the filter");
            if kind == ThreadKind::Vcpu {
                wake.write(1).expect("a vCPU may write its eventfd");
            }
            // What such a thread does anyway: locks (futex), a line on stderr (write),
            // memory (mmap, munmap), the time.
            let m = Arc::new(Mutex::new(vec![0u8; 1 << 20]));
            let started = std::time::Instant::now();
            m.lock().unwrap()[12345] = 1;
            drop(m);
            let _ = started.elapsed();
            eprintln!("child: filter installed");
            if inherit {
                // A thread start under the filter (clone3 refused, clone with CLONE_THREAD
                // allowed), then the call on that thread.
                std::thread::Builder::new()
                    .name("vmm-ram-fill".into())
                    .spawn(move || forbidden(call))
                    .expect("the main loop may start a thread")
                    .join()
                    .unwrap();
            } else {
                forbidden(call);
            }
        })
        .unwrap();
    let _ = t.join();
    eprintln!("child: survived");
}
