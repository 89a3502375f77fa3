//! The nested-KVM harness: runs shell jobs that drive `vmm` on a **real** KVM.
//!
//! This project's machines expose PVM as `/dev/kvm`, on which unmodified Linux never gets past
//! decompression. QEMU's software CPU (`-accel tcg -cpu max`) emulates AMD SVM with nested
//! paging, so a Debian generic kernel booted under it (the *L1*) loads its own `kvm-amd` and
//! offers a real `/dev/kvm`; `vmm` runs there and its guests (the *L2*) run on real KVM.
//!
//! How a batch runs:
//!
//! 1. `scripts/fetch-nested-kvm.sh` (called here; cached) provides QEMU, Debian's generic
//!    kernel with its four KVM modules, busybox-static and the L2 Linux guest.
//! 2. One uncompressed newc archive is written (byte for byte reproducible for the same
//!    inputs): busybox and its applet links, the modules, `vmm` and `vmmctl` with the
//!    libraries `ldd` names, every file the caller carries, the jobs (`/jobs/NNN-name/cmd`)
//!    and the L1's [`L1_INIT`].
//! 3. QEMU boots the L1 once (`-smp 2`); its `/init` loads the modules, checks that SVM and
//!    `/dev/kvm` are there, then runs the jobs one after another, each in its own directory
//!    with a deadline, and streams each job's exit status and every file the job left in
//!    its directory (`stdout`, `stderr`, and whatever the job wrote, such as `--log` and
//!    `--result-json` files) back over the second serial port, base64-framed.
//! 4. A job that passes its deadline is killed with everything it started; its files come
//!    back all the same, marked timed out. An L1 that stops answering is killed at the
//!    batch's deadline and the tail of its console is reported.
//!
//! On a host whose `/dev/kvm` is a regular hardware KVM (vmx or svm, not PVM) the same jobs
//! run directly on the host, each in its own temporary directory, with no L1.
//!
//! A job is a POSIX shell script. It finds `vmm`, `vmmctl` and the carried files through
//! `$VMM`, `$VMMCTL` and `$FILES` (a file carried as `name` is `$FILES/name`), and works in
//! its own directory (the current one), which is what comes back.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What can go wrong around the jobs (a job's own failure is its exit status, not this).
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    /// Something the harness needs is missing and could not be fetched or installed.
    #[error("nested-KVM set-up failed: {0}")]
    Setup(String),
    /// The L1 booted but offers no KVM.
    #[error(
        "the L1 guest has no usable KVM ({reason}); QEMU's TCG must emulate SVM (`-cpu max`, \
         QEMU 7 or later). L1 console, last lines:\n{console_tail}"
    )]
    NoKvmInL1 {
        /// What the L1 said.
        reason: String,
        /// The end of the L1's console.
        console_tail: String,
    },
    /// The L1 did not finish the batch in time, or QEMU died.
    #[error(
        "the L1 guest failed: {reason} ({} job(s) finished before). L1 console, last \
         lines:\n{console_tail}", finished.len()
    )]
    L1Failed {
        /// What happened.
        reason: String,
        /// The end of the L1's console.
        console_tail: String,
        /// The jobs that did finish.
        finished: Vec<JobResult>,
    },
}

/// One shell job.
#[derive(Clone, Debug)]
pub struct Job {
    /// A short name (letters, digits, `-`, `_`), unique in its batch.
    pub name: String,
    /// The POSIX shell script.
    pub script: String,
    /// Killed (with everything it started) after this long.
    pub timeout: Duration,
}

impl Job {
    /// A job named `name` running `script`, with a 120 s deadline.
    pub fn new(name: &str, script: &str) -> Job {
        Job {
            name: name.to_string(),
            script: script.to_string(),
            timeout: Duration::from_secs(120),
        }
    }

    /// The same job with another deadline.
    pub fn timeout(mut self, t: Duration) -> Job {
        self.timeout = t;
        self
    }
}

/// What came back from one job.
#[derive(Clone, Debug, Default)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// The script's exit status (128 + n when killed by signal n).
    pub status: i32,
    /// Whether the deadline killed it.
    pub timed_out: bool,
    /// The job's wall time, as measured where it ran.
    pub took: Duration,
    /// Every file the job left in its directory, by relative path (`stdout`, `stderr`
    /// included).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl JobResult {
    /// A file the job left, as text ("" when absent).
    pub fn text(&self, name: &str) -> String {
        self.files
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// The script's standard output.
    pub fn stdout(&self) -> String {
        self.text("stdout")
    }

    /// Everything known about the job, for an assertion message: status, the files' names,
    /// and the last lines of its output and of every `.log` file.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "job {}: status {}{}, {:.1} s, files: {:?}\n",
            self.name,
            self.status,
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.took.as_secs_f64(),
            self.files.keys().collect::<Vec<_>>()
        );
        for (name, data) in &self.files {
            if name == "stdout" || name == "stderr" || name.ends_with(".log") {
                s += &format!("--- {name} (last 60 lines) ---\n{}\n", tail(data, 60));
            }
        }
        s
    }
}

/// The last `n` lines of `data`, as text.
pub fn tail(data: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A finished batch.
#[derive(Debug)]
pub struct Batch {
    /// The jobs, in the order given.
    pub jobs: Vec<JobResult>,
    /// Where they ran: "nested" (QEMU TCG L1) or "direct" (the host's KVM).
    pub mode: &'static str,
    /// Wall time of the whole batch (L1 boot included).
    pub took: Duration,
    /// The L1's console (empty in direct mode).
    pub l1_console: String,
    /// Why an L1 had to be replaced mid-batch (empty when the first one ran it all).
    pub l1_restarts: Vec<String>,
}

/// How many times a batch may boot a fresh L1 after one died.
pub const MAX_L1_RESTARTS: usize = 2;

impl Batch {
    /// The job named `name`.
    pub fn job(&self, name: &str) -> &JobResult {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job named {name} in the batch"))
    }
}

/// Where jobs run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In an L1 under QEMU's TCG.
    Nested,
    /// On the host's own (hardware) KVM.
    Direct,
}

/// Whether the host's `/dev/kvm` is a hardware KVM that runs unmodified Linux.
pub fn host_has_hardware_kvm() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let hw = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    hw && !Path::new("/sys/module/kvm_pvm").exists()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// The harness's settings.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The repository (for the fetch scripts and the caches).
    pub repo: PathBuf,
    /// `vmm`, carried as `/bin/vmm`.
    pub vmm: PathBuf,
    /// `vmmctl`, carried as `/bin/vmmctl`.
    pub vmmctl: PathBuf,
    /// Extra programs carried to `/bin/<name>` with the libraries `ldd` names.
    pub programs: Vec<PathBuf>,
    /// Files carried: (host path, name under `$FILES`, or an absolute L1 path).
    pub files: Vec<(PathBuf, String)>,
    /// Where to run.
    pub mode: Mode,
    /// L1 memory in MiB.
    pub l1_mem_mib: u32,
    /// L1 vCPUs.
    pub l1_cpus: u32,
    /// Where QEMU and the kernel's console and data files go (a temporary folder by
    /// default, removed afterwards; `RVMM_NESTED_KEEP=DIR` keeps them in DIR).
    pub workdir: Option<PathBuf>,
    /// Print progress to stderr.
    pub verbose: bool,
    /// What the fetch script provided, and for which mode (shared by clones): the script
    /// runs once per harness, not once per call.
    fetched: std::sync::Arc<std::sync::Mutex<Option<(Mode, L1Env)>>>,
}

/// The repository this crate lives in.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository")
        .to_path_buf()
}

impl Harness {
    /// The harness for `vmm` and `vmmctl`, nested unless the host has a hardware KVM
    /// (`RVMM_NESTED=always` forces nesting, `RVMM_NESTED=never` forbids it).
    pub fn new(vmm: PathBuf, vmmctl: PathBuf) -> Harness {
        let mode = match std::env::var("RVMM_NESTED").as_deref() {
            Ok("always") => Mode::Nested,
            Ok("never") => Mode::Direct,
            _ if host_has_hardware_kvm() => Mode::Direct,
            _ => Mode::Nested,
        };
        Harness {
            repo: repo_dir(),
            vmm,
            vmmctl,
            programs: Vec::new(),
            files: Vec::new(),
            mode,
            l1_mem_mib: 4096,
            l1_cpus: 2,
            workdir: std::env::var_os("RVMM_NESTED_KEEP").map(PathBuf::from),
            verbose: std::env::var_os("RVMM_NESTED_VERBOSE").is_some(),
            fetched: Default::default(),
        }
    }

    /// Carries `host` as `$FILES/<name>` (or, when `name` starts with `/`, at that path).
    pub fn file(&mut self, host: impl Into<PathBuf>, name: &str) -> &mut Self {
        self.files.push((host.into(), name.to_string()));
        self
    }

    /// Carries a dynamically linked program to `/bin/<its name>` with its libraries.
    pub fn program(&mut self, host: impl Into<PathBuf>) -> &mut Self {
        self.programs.push(host.into());
        self
    }

    fn say(&self, msg: &str) {
        if self.verbose {
            eprintln!("nested-kvm: {msg}");
        }
    }

    /// Runs `jobs` (in order) and brings back what each left.
    pub fn run(&self, jobs: &[Job]) -> Result<Batch, NestedError> {
        check_jobs(jobs)?;
        self.env()?;
        for (p, _) in &self.files {
            if !p.is_file() {
                return Err(NestedError::Setup(format!(
                    "{} is not a file (the harness carries only regular files)",
                    p.display()
                )));
            }
        }
        match self.mode {
            Mode::Direct => self.run_direct(jobs),
            Mode::Nested => self.run_nested(jobs),
        }
    }

    fn run_direct(&self, jobs: &[Job]) -> Result<Batch, NestedError> {
        let t0 = Instant::now();
        let tmp = TempDir::new("rvmm-direct")?;
        let files = tmp.path.join("files");
        std::fs::create_dir_all(&files).map_err(setup("creating the files folder"))?;
        for (host, name) in &self.files {
            if !name.starts_with('/') {
                let host = std::fs::canonicalize(host).map_err(setup("resolving a file"))?;
                std::os::unix::fs::symlink(host, files.join(name))
                    .map_err(setup("linking a file"))?;
            }
        }
        let mut results = Vec::new();
        for job in jobs {
            let dir = tmp.path.join("jobs").join(&job.name);
            std::fs::create_dir_all(&dir).map_err(setup("creating a job folder"))?;
            std::fs::write(dir.join("cmd"), &job.script).map_err(setup("writing a job"))?;
            let start = Instant::now();
            let stdout = std::fs::File::create(dir.join("stdout")).map_err(setup("stdout"))?;
            let stderr = std::fs::File::create(dir.join("stderr")).map_err(setup("stderr"))?;
            let mut cmd = Command::new("sh");
            cmd.arg("./cmd")
                .current_dir(&dir)
                .env("VMM", &self.vmm)
                .env("VMMCTL", &self.vmmctl)
                .env("FILES", &files)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            // Its own process group, so that a deadline kills everything the job started.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.spawn().map_err(setup("starting sh"))?;
            let (status, timed_out) = wait_deadline(&mut child, job.timeout, true);
            std::fs::remove_file(dir.join("cmd")).ok();
            let mut files = BTreeMap::new();
            collect_files(&dir, &dir, &mut files);
            results.push(JobResult {
                name: job.name.clone(),
                status,
                timed_out,
                took: start.elapsed(),
                files,
            });
            self.say(&format!("job {} finished: status {status}", job.name));
        }
        Ok(Batch {
            jobs: results,
            mode: "direct",
            took: t0.elapsed(),
            l1_console: String::new(),
            l1_restarts: Vec::new(),
        })
    }

    /// Runs the batch in an L1; when the L1 itself dies or stops answering (an emulator
    /// failure, never a job's: a job that hangs is killed by the L1's watchdog and reported),
    /// boots a fresh L1 for the jobs that had not reported, at most [`MAX_L1_RESTARTS`]
    /// times. Each restart is recorded in [`Batch::l1_restarts`].
    fn run_nested(&self, jobs: &[Job]) -> Result<Batch, NestedError> {
        let t0 = Instant::now();
        let mut done: Vec<JobResult> = Vec::new();
        let mut restarts: Vec<String> = Vec::new();
        let mut remaining: Vec<Job> = jobs.to_vec();
        let console = loop {
            match self.run_nested_once(&remaining, restarts.len()) {
                Ok(b) => {
                    done.extend(b.jobs);
                    break b.l1_console;
                }
                Err(NestedError::L1Failed {
                    reason,
                    console_tail,
                    finished,
                }) if restarts.len() < MAX_L1_RESTARTS => {
                    let msg = format!(
                        "L1 attempt {} failed after {} job(s): {reason}; console tail:\n{console_tail}",
                        restarts.len() + 1,
                        finished.len()
                    );
                    eprintln!("nested-kvm: warning: {msg}\nnested-kvm: booting a fresh L1 for the remaining jobs");
                    restarts.push(msg);
                    remaining.retain(|j| !finished.iter().any(|f| f.name == j.name));
                    done.extend(finished);
                }
                Err(NestedError::L1Failed {
                    reason,
                    console_tail,
                    finished,
                }) => {
                    done.extend(finished);
                    return Err(NestedError::L1Failed {
                        reason: format!(
                            "{reason} (after {} fresh L1s: {})",
                            restarts.len(),
                            restarts.join(" | ")
                        ),
                        console_tail,
                        finished: done,
                    });
                }
                Err(e) => return Err(e),
            }
        };
        let mut results = Vec::new();
        for job in jobs {
            if let Some(r) = done.iter().find(|r| r.name == job.name) {
                results.push(r.clone());
            }
        }
        Ok(Batch {
            jobs: results,
            mode: "nested",
            took: t0.elapsed(),
            l1_console: console,
            l1_restarts: restarts,
        })
    }

    fn run_nested_once(&self, jobs: &[Job], attempt: usize) -> Result<Batch, NestedError> {
        let t0 = Instant::now();
        let env = self.env()?;
        let cpu = std::env::var("RVMM_NESTED_CPU").unwrap_or_else(|_| "max".into());
        let tmp = match &self.workdir {
            Some(w) => {
                let w = if attempt == 0 {
                    w.clone()
                } else {
                    w.join(format!("attempt-{}", attempt + 1))
                };
                std::fs::create_dir_all(&w).map_err(setup("creating the work folder"))?;
                TempDir {
                    path: w,
                    keep: true,
                }
            }
            None => TempDir::new("rvmm-nested")?,
        };
        let initrd = tmp.path.join("l1-initrd.cpio");
        let archive = self.l1_archive(&env, jobs)?;
        std::fs::write(&initrd, archive.to_cpio()).map_err(setup("writing the L1 initrd"))?;
        let console = tmp.path.join("l1-console.log");
        let data = tmp.path.join("l1-data.log");
        let qemu = std::env::var("QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let mut cmd = Command::new(&qemu);
        // Multi-threaded TCG (one host thread per L1 vCPU). With `single` (QEMU 7.2), a
        // 2-vCPU Linux L2 stalled for good during its boot.
        let thread = std::env::var("RVMM_NESTED_TCG_THREAD").unwrap_or_else(|_| "multi".into());
        let accel = format!("tcg,thread={thread}");
        cmd.args(["-accel", &accel, "-machine", "pc", "-cpu", &cpu])
            .args(["-smp", &self.l1_cpus.to_string()])
            .args(["-m", &self.l1_mem_mib.to_string()])
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-monitor",
                "none",
            ])
            .arg("-kernel")
            .arg(&env.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", L1_CMDLINE])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", data.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.say(&format!(
            "booting the L1 ({qemu}, TCG, {} jobs)",
            jobs.len()
        ));
        let mut child = cmd
            .spawn()
            .map_err(|e| NestedError::Setup(format!("cannot start {qemu}: {e}")))?;
        // The L1 boots in ~10 s on the 2-core machines; give it a minute, plus each job's
        // deadline and a little for the transfers.
        let deadline = Duration::from_secs(90)
            + jobs
                .iter()
                .map(|j| j.timeout + Duration::from_secs(10))
                .sum::<Duration>();
        let mut parser = DataParser::default();
        let mut reported = 0;
        let started = Instant::now();
        // The L1 must also keep up: a job reports within its own deadline (the L1 kills it
        // then) plus a margin; the first one after the L1's boot.
        let mut last_progress = Instant::now();
        let mut stalled: Option<String> = None;
        let exit = loop {
            let bytes = std::fs::read(&data).unwrap_or_default();
            parser.parse(&bytes);
            while reported < parser.done.len() {
                let j = &parser.done[reported];
                self.say(&format!(
                    "job {} finished: status {}{} in {:.1} s",
                    j.name,
                    j.status,
                    if j.timed_out { " (timed out)" } else { "" },
                    j.took.as_secs_f64()
                ));
                reported += 1;
                last_progress = Instant::now();
            }
            if let Some(next) = jobs.get(reported) {
                let allowed = next.timeout
                    + Duration::from_secs(60)
                    + if reported == 0 {
                        Duration::from_secs(90)
                    } else {
                        Duration::ZERO
                    };
                if last_progress.elapsed() > allowed {
                    stalled = Some(format!(
                        "job {} did not report within its deadline ({} s) plus a margin: the \
                         L1 stopped answering (its watchdog should have killed the job); \
                         QEMU was killed",
                        next.name,
                        next.timeout.as_secs()
                    ));
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
            if let Some(reason) = &parser.fatal {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NestedError::NoKvmInL1 {
                    reason: reason.clone(),
                    console_tail: tail(&std::fs::read(&console).unwrap_or_default(), 40),
                });
            }
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(_) => break None,
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let bytes = std::fs::read(&data).unwrap_or_default();
        parser.parse(&bytes);
        let console_text =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
        let qemu_err = read_pipe(child.stderr.take());
        let console_tail = tail(console_text.as_bytes(), 40);
        if let Some(reason) = parser.fatal.clone() {
            return Err(NestedError::NoKvmInL1 {
                reason,
                console_tail,
            });
        }
        if !parser.finished {
            let reason = match exit {
                None if stalled.is_some() => stalled.unwrap_or_default(),
                None => format!(
                    "no answer within {} s (the batch's deadline); QEMU was killed",
                    deadline.as_secs()
                ),
                Some(st) => format!(
                    "QEMU exited ({st}) before the batch finished{}",
                    if qemu_err.trim().is_empty() {
                        String::new()
                    } else {
                        format!("; QEMU said: {}", qemu_err.trim())
                    }
                ),
            };
            return Err(NestedError::L1Failed {
                reason,
                console_tail,
                finished: parser.done,
            });
        }
        // Every job in order, by name.
        let mut results = Vec::new();
        for job in jobs {
            match parser.done.iter().find(|r| r.name == job.name) {
                Some(r) => results.push(r.clone()),
                None => {
                    return Err(NestedError::L1Failed {
                        reason: format!("job {} never reported", job.name),
                        console_tail,
                        finished: parser.done,
                    })
                }
            }
        }
        Ok(Batch {
            jobs: results,
            mode: "nested",
            took: t0.elapsed(),
            l1_console: console_text,
            l1_restarts: Vec::new(),
        })
    }

    /// The L1's whole initrd.
    fn l1_archive(
        &self,
        env: &L1Env,
        jobs: &[Job],
    ) -> Result<vmm::images::initramfs::Archive, NestedError> {
        use vmm::images::initramfs::Archive;
        let bad = |e: vmm::images::initramfs::BadPath| NestedError::Setup(e.to_string());
        let mut a = Archive::new();
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "files", "jobs",
            "out", "modules", "etc",
        ] {
            a.dir(d, 0o755).map_err(bad)?;
        }
        a.char_dev("dev/console", 0o600, 5, 1).map_err(bad)?;
        a.char_dev("dev/null", 0o666, 1, 3).map_err(bad)?;
        let busybox = std::fs::read(&env.busybox).map_err(setup("reading busybox"))?;
        a.file("bin/busybox", 0o755, busybox).map_err(bad)?;
        let list = Command::new(&env.busybox)
            .arg("--list-full")
            .output()
            .map_err(setup("running busybox --list-full"))?;
        for p in vmm::images::initramfs::applet_paths(&String::from_utf8_lossy(&list.stdout)) {
            if !a.contains(&p) {
                a.symlink(&p, "/bin/busybox").map_err(bad)?;
            }
        }
        for m in L1_MODULES {
            let data = std::fs::read(env.modules.join(format!("{m}.ko")))
                .map_err(setup("reading a KVM module"))?;
            a.file(&format!("modules/{m}.ko"), 0o644, data)
                .map_err(bad)?;
        }
        let mut programs = vec![self.vmm.clone(), self.vmmctl.clone()];
        programs.extend(self.programs.iter().cloned());
        for p in &programs {
            let name = p
                .file_name()
                .ok_or_else(|| NestedError::Setup(format!("{} has no name", p.display())))?
                .to_string_lossy()
                .into_owned();
            let data = std::fs::read(p).map_err(|e| {
                NestedError::Setup(format!(
                    "reading {}: {e} (build it first: cargo build --release -p vmm)",
                    p.display()
                ))
            })?;
            a.file(&format!("bin/{name}"), 0o755, data).map_err(bad)?;
            for lib in libraries(p)? {
                if !a.contains(&lib.to_string_lossy()) {
                    let data = std::fs::read(&lib).map_err(setup("reading a library"))?;
                    a.file(&lib.to_string_lossy(), 0o755, data).map_err(bad)?;
                }
            }
        }
        for (host, name) in &self.files {
            let data = std::fs::read(host)
                .map_err(|e| NestedError::Setup(format!("reading {}: {e}", host.display())))?;
            let path = if name.starts_with('/') {
                name.clone()
            } else {
                format!("files/{name}")
            };
            a.file(&path, 0o755, data).map_err(bad)?;
        }
        for (i, job) in jobs.iter().enumerate() {
            let dir = format!("jobs/{i:03}-{}", job.name);
            a.file(
                &format!("{dir}/cmd"),
                0o755,
                job.script.clone().into_bytes(),
            )
            .map_err(bad)?;
            a.file(
                &format!("{dir}/timeout"),
                0o644,
                format!("{}\n", job.timeout.as_secs().max(1)).into_bytes(),
            )
            .map_err(bad)?;
        }
        a.file("init", 0o755, L1_INIT.as_bytes().to_vec())
            .map_err(bad)?;
        Ok(a)
    }
}

fn setup(what: &'static str) -> impl Fn(std::io::Error) -> NestedError {
    move |e| NestedError::Setup(format!("{what}: {e}"))
}

fn check_jobs(jobs: &[Job]) -> Result<(), NestedError> {
    let mut seen = std::collections::BTreeSet::new();
    for j in jobs {
        let ok = !j.name.is_empty()
            && j.name.len() <= 64
            && j.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(NestedError::Setup(format!(
                "job name '{}' must be 1-64 letters, digits, '-' or '_'",
                j.name
            )));
        }
        if !seen.insert(&j.name) {
            return Err(NestedError::Setup(format!(
                "two jobs are named '{}'",
                j.name
            )));
        }
    }
    Ok(())
}

/// Waits for `child` up to `limit`; past it kills it (its whole process group when
/// `group`). Returns (status, timed out).
fn wait_deadline(child: &mut Child, limit: Duration, group: bool) -> (i32, bool) {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                if group {
                    kill_group(child.id());
                }
                return (status_code(st), false);
            }
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                if group {
                    kill_group(child.id());
                }
                let _ = child.kill();
                let st = child.wait().map(status_code).unwrap_or(137);
                return (st, true);
            }
        }
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory of
    // ours. The group is the job's own (process_group(0) above), so nothing else is hit.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}

fn status_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

fn read_pipe<R: Read>(p: Option<R>) -> String {
    let mut s = String::new();
    if let Some(mut p) = p {
        let _ = p.read_to_string(&mut s);
    }
    s
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            collect_files(root, &p, out);
        } else if ft.is_file() {
            if let (Ok(rel), Ok(data)) = (p.strip_prefix(root), std::fs::read(&p)) {
                out.insert(rel.to_string_lossy().into_owned(), data);
            }
        }
    }
}

/// The libraries `ldd` says `program` loads (the dynamic loader included).
fn libraries(program: &Path) -> Result<Vec<PathBuf>, NestedError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(setup("running ldd"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The cached L1 environment.
#[derive(Clone, Debug)]
struct L1Env {
    kernel: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
    l2_kernel: PathBuf,
    l2_initramfs: PathBuf,
}

/// The KVM modules, in load order (kvm-amd needs kvm and ccp; kvm needs irqbypass).
const L1_MODULES: &[&str] = &["irqbypass", "kvm", "ccp", "kvm-amd"];

/// The L1 kernel's command line: console on the first port, quiet, no KASLR work.
///
/// `loglevel=1`: only emergencies reach the console. Kernel messages are written to the
/// port by polling, and interleaved with the tty's interrupt-driven writes (`/init`'s
/// progress lines) under TCG they once stalled the port's transmitter for good; the L1's
/// kernel log comes back per job instead (`l1-dmesg.log`).
const L1_CMDLINE: &str = "console=ttyS0 loglevel=1 panic=-1 mitigations=off nokaslr rdinit=/init";

/// Runs the fetch script (cached after the first time) and returns where things are.
/// In direct mode QEMU is not needed and not installed.
fn fetch_env(repo: &Path, mode: &Mode) -> Result<L1Env, NestedError> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("scripts/fetch-nested-kvm.sh"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if *mode == Mode::Direct {
        cmd.env("NESTED_KVM_NO_QEMU", "1");
    }
    let out = cmd
        .output()
        .map_err(setup("running scripts/fetch-nested-kvm.sh"))?;
    if !out.status.success() {
        return Err(NestedError::Setup(format!(
            "scripts/fetch-nested-kvm.sh failed:\n{}",
            tail(&out.stderr, 20)
        )));
    }
    let nested = std::env::var_os("NESTED_KVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".cache/nested-kvm"));
    let guest = std::env::var_os("LINUX_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".cache/linux-guest"));
    Ok(L1Env {
        kernel: nested.join("vmlinuz"),
        modules: nested.join("modules"),
        busybox: guest.join("busybox/bin/busybox"),
        l2_kernel: guest.join("bzImage"),
        l2_initramfs: guest.join("initramfs.cpio.gz"),
    })
}

/// The Linux guest the tests boot (Debian's cloud kernel and the project's initramfs),
/// fetched if needed.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs (gzip newc).
    pub initramfs: PathBuf,
}

impl Harness {
    /// Fetches (once; cached) what this harness needs, and returns the Linux guest.
    pub fn prepare(&self) -> Result<LinuxGuest, NestedError> {
        let env = self.env()?;
        Ok(LinuxGuest {
            kernel: env.l2_kernel,
            initramfs: env.l2_initramfs,
        })
    }

    /// The fetched environment: the fetch script runs on the first call, and again only
    /// when a direct-mode fetch (no QEMU) is followed by a nested run.
    fn env(&self) -> Result<L1Env, NestedError> {
        let mut cached = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((mode, env)) = &*cached {
            if *mode == Mode::Nested || *mode == self.mode {
                return Ok(env.clone());
            }
        }
        let env = fetch_env(&self.repo, &self.mode)?;
        *cached = Some((self.mode.clone(), env.clone()));
        Ok(env)
    }
}

/// A temporary folder, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn new(prefix: &str) -> Result<TempDir, NestedError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(setup("creating a temporary folder"))?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Parses the L1's data port: `@@RVMM-FILE job path` / base64 / `@@RVMM-EOF`,
/// `@@RVMM-JOB job status timed-out centiseconds`, `@@RVMM-FATAL reason`, `@@RVMM-DONE`.
#[derive(Default)]
struct DataParser {
    done: Vec<JobResult>,
    fatal: Option<String>,
    finished: bool,
}

impl DataParser {
    /// Parses the whole stream again (it only grows; complete records are kept).
    fn parse(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut done = Vec::new();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        let mut b64 = String::new();
        let mut complete_lines: Vec<&str> = text.split('\n').collect();
        // The last piece has no newline yet: not complete.
        complete_lines.pop();
        for raw in complete_lines {
            let line = raw.trim_end_matches('\r');
            if let Some((_, path)) = &current {
                if line == "@@RVMM-EOF" {
                    let path = path.clone();
                    files.insert(path, base64_decode(&b64));
                    b64.clear();
                    current = None;
                } else {
                    b64.push_str(line.trim());
                }
                continue;
            }
            let mut w = line.split_whitespace();
            match w.next() {
                Some("@@RVMM-FILE") => {
                    let job = w.next().unwrap_or("").to_string();
                    let path = w.next().unwrap_or("").to_string();
                    current = Some((job, path));
                }
                Some("@@RVMM-JOB") => {
                    let name = w.next().unwrap_or("").to_string();
                    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let timed_out = w.next() == Some("1");
                    let cs: u64 = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    done.push(JobResult {
                        name: strip_index(&name),
                        status,
                        timed_out,
                        took: Duration::from_millis(cs * 10),
                        files: std::mem::take(&mut files),
                    });
                }
                Some("@@RVMM-FATAL") => {
                    self.fatal = Some(w.collect::<Vec<_>>().join(" "));
                }
                Some("@@RVMM-DONE") => self.finished = true,
                _ => {}
            }
        }
        self.done = done;
    }
}

/// "007-name" -> "name".
fn strip_index(dir: &str) -> String {
    match dir.split_once('-') {
        Some((n, rest)) if n.bytes().all(|b| b.is_ascii_digit()) => rest.to_string(),
        _ => dir.to_string(),
    }
}

/// Standard base64 (RFC 4648), ignoring anything outside its alphabet.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The L1's `/init` (busybox sh, PID 1).
pub const L1_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size=75% tmpfs /out
D=/dev/ttyS1
stty -F $D raw -echo 115200 2>/dev/null
fatal() {
    echo "@@RVMM-FATAL $*" > $D
    echo "nested-kvm: $*"
    poweroff -f
}
for m in irqbypass kvm ccp kvm-amd; do
    insmod /modules/$m.ko || fatal "insmod $m.ko failed"
done
grep -qw svm /proc/cpuinfo || fatal "the L1 CPU has no svm flag"
[ -c /dev/kvm ] || fatal "kvm-amd loaded but /dev/kvm is missing"
export VMM=/bin/vmm VMMCTL=/bin/vmmctl FILES=/files
echo "nested-kvm: L1 up at $(cut -d' ' -f1 /proc/uptime) s, /dev/kvm ready"
dmesg -c > /dev/null
for j in /jobs/*; do
    [ -d "$j" ] || continue
    name=${j##*/}
    out=/out/$name
    mkdir -p $out
    cd $out
    t=$(cat $j/timeout)
    s0=$(cut -d' ' -f1 /proc/uptime)
    sh $j/cmd > $out/stdout 2> $out/stderr < /dev/null &
    pid=$!
    ( sleep $t; touch /tmp/timed-out; kill -9 -1 ) &
    wd=$!
    wait $pid
    st=$?
    kill -9 $wd 2>/dev/null
    kill -9 -1 2>/dev/null
    to=0
    [ -e /tmp/timed-out ] && to=1
    rm -f /tmp/timed-out
    dmesg -c > $out/l1-dmesg.log 2>/dev/null
    [ -s $out/l1-dmesg.log ] || rm -f $out/l1-dmesg.log
    s1=$(cut -d' ' -f1 /proc/uptime)
    cs=$(( ${s1%.*}${s1#*.} - ${s0%.*}${s0#*.} ))
    cd /out
    for f in $(cd $out && find . -type f | sort); do
        f=${f#./}
        echo "@@RVMM-FILE $name $f" > $D
        base64 $out/$f > $D
        echo "@@RVMM-EOF" > $D
    done
    echo "@@RVMM-JOB $name $st $to $cs" > $D
    rm -rf $out
    echo "nested-kvm: job $name: status $st"
done
echo "@@RVMM-DONE" > $D
sync
poweroff -f
"#;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
        assert_eq!(base64_decode("aGVs\nbG8h\n"), b"hello!");
        assert_eq!(base64_decode(""), b"");
        assert_eq!(base64_decode("AAEC/w=="), [0, 1, 2, 255]);
    }

    #[test]
    fn data_stream_parses_complete_records_only() {
        let mut p = DataParser::default();
        let s = "noise\n@@RVMM-FILE 000-a stdout\naGk=\n@@RVMM-EOF\n@@RVMM-JOB 000-a 3 0 150\n@@RVMM-FILE 001-b x\naGk";
        p.parse(s.as_bytes());
        assert_eq!(p.done.len(), 1);
        assert_eq!(p.done[0].name, "a");
        assert_eq!(p.done[0].status, 3);
        assert_eq!(p.done[0].took, Duration::from_millis(1500));
        assert_eq!(p.done[0].files["stdout"], b"hi");
        assert!(!p.finished);
        p.parse(format!("{s}\n@@RVMM-EOF\n@@RVMM-JOB 001-b 0 1 1\n@@RVMM-DONE\n").as_bytes());
        assert_eq!(p.done.len(), 2);
        assert!(p.done[1].timed_out);
        assert!(p.finished);
    }

    #[test]
    fn bad_job_names_are_refused() {
        assert!(check_jobs(&[Job::new("a b", "true")]).is_err());
        assert!(check_jobs(&[Job::new("", "true")]).is_err());
        assert!(check_jobs(&[Job::new("x", "true"), Job::new("x", "true")]).is_err());
        assert!(check_jobs(&[Job::new("x-1_y", "true")]).is_ok());
    }
}
