//! `nested-kvm`: run `vmm` command lines on a real KVM, on any x86_64 Linux machine.
//!
//! ```text
//! nested-kvm [--file PATH[=NAME]]... [--program PATH]... [--timeout SECS] [--out DIR]
//!            [--vmm 'ARGS']... [--sh 'SCRIPT']... [-- VMM-ARGS...]
//! ```
//!
//! Every `--vmm` (and the arguments after `--`) is one `vmm` run, every `--sh` one shell job;
//! all of them run in one L1 boot (see `tests::nested`). A `vmm` run gets
//! `--result-json result.json --log guest.log` added unless it names its own. Carried files
//! are `$FILES/NAME` in the jobs (quote `'$FILES/bzImage'` so that your shell leaves it).
//! Each job's files come back to `DIR/<job>/` (`status`, `stdout`, `stderr`, `result.json`,
//! `guest.log`, ...). Exit status: 0 when every job exited 0, 1 when one did not, 2 on bad
//! usage, 3 when the harness itself failed (no QEMU, no SVM in the L1, an L1 that hung).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tests::nested::{Harness, Job, NestedError};

/// Run vmm command lines on real KVM: in a QEMU-TCG L1 that emulates SVM, or directly when
/// this host has hardware virtualization.
#[derive(Parser, Debug)]
#[command(name = "nested-kvm", version)]
struct Cli {
    /// A file to carry into the L1, as $FILES/NAME (NAME defaults to its file name).
    #[arg(long = "file", value_name = "PATH[=NAME]")]
    files: Vec<String>,
    /// A dynamically linked program to carry to /bin with its libraries.
    #[arg(long = "program", value_name = "PATH")]
    programs: Vec<PathBuf>,
    /// One vmm run: its arguments, split as a shell would (in the L1).
    #[arg(long = "vmm", value_name = "ARGS", allow_hyphen_values = true)]
    vmm_runs: Vec<String>,
    /// One shell job (POSIX sh; $VMM, $VMMCTL and $FILES are set).
    #[arg(long = "sh", value_name = "SCRIPT")]
    scripts: Vec<String>,
    /// Each job's deadline in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Where each job's files are written (DIR/<job>/).
    #[arg(long, default_value = "nested-out")]
    out: PathBuf,
    /// The vmm binary (default: next to this program).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// The vmmctl binary (default: next to this program).
    #[arg(long)]
    vmmctl: Option<PathBuf>,
    /// Keep QEMU's files (the L1 initrd, console and data logs) in this folder.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long, short)]
    quiet: bool,
    /// A vmm command line (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.,:+@%$".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn vmm_job(args: &str) -> String {
    let mut extra = String::new();
    if !args.contains("--result-json") {
        extra += " --result-json result.json";
    }
    if !args.contains("--log") {
        extra += " --log guest.log";
    }
    format!("\"$VMM\" {args}{extra}\n")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_default();
    let vmm = cli.vmm.clone().unwrap_or_else(|| here.join("vmm"));
    let vmmctl = cli.vmmctl.clone().unwrap_or_else(|| here.join("vmmctl"));
    let mut h = Harness::new(vmm, vmmctl);
    h.verbose = !cli.quiet;
    h.workdir = cli.keep.clone();
    for f in &cli.files {
        let (path, name) = match f.split_once('=') {
            Some((p, n)) => (PathBuf::from(p), n.to_string()),
            None => {
                let p = PathBuf::from(f);
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (p, n)
            }
        };
        if name.is_empty() || name.contains('/') && !name.starts_with('/') {
            eprintln!("nested-kvm: --file {f}: NAME must be a plain file name or an absolute path");
            return ExitCode::from(2);
        }
        h.file(path, &name);
    }
    for p in &cli.programs {
        h.program(p);
    }
    let timeout = Duration::from_secs(cli.timeout);
    let mut jobs = Vec::new();
    let mut add = |script: String| {
        let n = jobs.len();
        jobs.push(Job::new(&format!("job{n}"), &script).timeout(timeout));
    };
    for a in &cli.vmm_runs {
        add(vmm_job(a));
    }
    if !cli.args.is_empty() {
        let joined: Vec<String> = cli.args.iter().map(|a| sh_quote(a)).collect();
        add(vmm_job(&joined.join(" ")));
    }
    for s in &cli.scripts {
        add(s.clone());
    }
    if jobs.is_empty() {
        eprintln!("nested-kvm: nothing to run: give a vmm command line after --, or --vmm/--sh");
        return ExitCode::from(2);
    }
    let batch = match h.run(&jobs) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("nested-kvm: error: {e}");
            if let NestedError::L1Failed { finished, .. } = &e {
                for j in finished {
                    eprintln!("{}", j.describe());
                }
            }
            return ExitCode::from(3);
        }
    };
    let mut all_ok = true;
    for j in &batch.jobs {
        let dir = cli.out.join(&j.name);
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("nested-kvm: cannot create {}: {e}", dir.display());
            return ExitCode::from(3);
        }
        for (name, data) in &j.files {
            let p = dir.join(name);
            if let Some(parent) = p.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::write(&p, data) {
                eprintln!("nested-kvm: cannot write {}: {e}", p.display());
            }
        }
        let _ = std::fs::write(dir.join("status"), format!("{}\n", j.status));
        println!(
            "{}: exit status {}{} ({:.1} s) -> {}",
            j.name,
            j.status,
            if j.timed_out {
                " (TIMED OUT: killed at the deadline)"
            } else {
                ""
            },
            j.took.as_secs_f64(),
            dir.display()
        );
        if j.status != 0 {
            all_ok = false;
            eprintln!("{}", j.describe());
        }
    }
    for r in &batch.l1_restarts {
        eprintln!("nested-kvm: warning: an L1 was replaced mid-batch: {r}");
    }
    println!(
        "nested-kvm: {} job(s) in {:.1} s ({})",
        batch.jobs.len(),
        batch.took.as_secs_f64(),
        batch.mode
    );
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
