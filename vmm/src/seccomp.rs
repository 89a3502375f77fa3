//! Per-thread seccomp filters: each kind of VMM thread may make only the system calls its
//! table below lists, and a forbidden call ends the VMM with a message that names the thread
//! and the call.
//!
//! | thread | filter | installed |
//! |---|---|---|
//! | `vcpuN` | [`VCPU`] | by the thread itself, before its first `KVM_RUN` ([`crate::kvm::vm::Vm::start_confined`]) |
//! | `rcu-reclaim-N` | [`RECLAIM`] | by the thread itself, first thing (`RcuBuilder::on_reclaimer_start`); `main` waits for it before the guest starts |
//! | `vmm` (the main thread) | [`MAIN_LOOP`] | after set-up, before the main loop's first round |
//! | `vmm-ram-fill` (and any thread a filtered thread starts) | its parent's, inherited | by the kernel, at `clone` |
//!
//! Every table is [`COMMON`] plus its own (plus [`SPAWN`] for threads that start threads);
//! each entry says why the call is needed. A vCPU thread may `write(2)` only to stderr and
//! to the descriptors [`Filters::set_vcpu_writes`] names (the console's eventfd, the serial
//! irqfd, the main loop's waker): its filter is compiled once those exist, after set-up. Installing a filter sets `PR_SET_NO_NEW_PRIVS`
//! first (the kernel requires it of an unprivileged process). A call outside the table is
//! answered with `SECCOMP_RET_TRAP`: the kernel sends SIGSYS to the thread, whose handler
//! writes one fixed line (thread name, filter, call number and name) to stderr with `write`
//! and ends the process with status 1. Nothing else runs, so the message is the last word.
//! (Where the thread has SIGSYS blocked, as the C library does around the `clone` of
//! `pthread_create` and `posix_spawn`, the kernel kills the process with SIGSYS instead: no
//! message, and the shell says "Bad system call".)
//!
//! **Adding a call.** The SIGSYS line says which table lacks what, e.g. `vmm: seccomp: thread
//! 'vcpu0' (filter VCPU) made system call 41 (socket), which its filter forbids`. Add an
//! entry to that table (with the narrowest argument condition that works and a reason), or
//! run with `--no-seccomp` under `strace -f` to see everything a thread calls.
//!
//! `clone3` is answered with `ENOSYS` (its flags live in memory a filter cannot read) so that
//! the C library falls back to `clone`, whose flags are checked: threads only, never a new
//! process.

use crate::{Error, Result};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// The kinds of VMM thread, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread: runs the guest and the device emulation of its exits.
    Vcpu,
    /// The main thread once set-up is over: the main loop (stdin, signals, timers, the control
    /// socket) and the report at the end.
    MainLoop,
    /// The RCU reclamation thread: grace periods and `call_rcu` callbacks.
    Reclaim,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vcpu, ThreadKind::MainLoop, ThreadKind::Reclaim];

    /// The name of its table (as the SIGSYS message prints it).
    pub fn table_name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "VCPU",
            ThreadKind::MainLoop => "MAIN_LOOP",
            ThreadKind::Reclaim => "RECLAIM",
        }
    }

    /// Its own table (without [`COMMON`] and [`SPAWN`]).
    pub fn table(self) -> &'static [Allow] {
        match self {
            ThreadKind::Vcpu => VCPU,
            ThreadKind::MainLoop => MAIN_LOOP,
            ThreadKind::Reclaim => RECLAIM,
        }
    }

    /// Whether threads of this kind start threads (and so get [`SPAWN`]).
    pub fn spawns(self) -> bool {
        match self {
            ThreadKind::MainLoop => true,
            ThreadKind::Vcpu | ThreadKind::Reclaim => false,
        }
    }

    /// Every entry of its filter: [`COMMON`], [`SPAWN`] if it starts threads, its own.
    pub fn rules(self) -> impl Iterator<Item = &'static Allow> {
        let spawn: &'static [Allow] = if self.spawns() { SPAWN } else { &[] };
        COMMON.iter().chain(spawn).chain(self.table())
    }

    fn index(self) -> u8 {
        match self {
            ThreadKind::Vcpu => 1,
            ThreadKind::MainLoop => 2,
            ThreadKind::Reclaim => 3,
        }
    }

    fn from_index(i: u8) -> Option<ThreadKind> {
        ThreadKind::ALL.into_iter().find(|k| k.index() == i)
    }
}

/// A condition on one argument of a system call.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// Argument `n`'s low 32 bits equal the value (ioctl requests, `prctl` options: the
    /// kernel reads these as 32-bit ints).
    Eq32(u8, u32),
    /// Argument `n` masked with the first value equals the second (flags).
    Masked(u8, u64, u64),
}

/// One allowed use of a system call: all its argument conditions hold. A call may have
/// several entries (any one allows it).
#[derive(Clone, Copy, Debug)]
pub struct Allow {
    /// The system call's number.
    pub nr: libc::c_long,
    /// Conditions on its arguments (all must hold; none: any arguments).
    pub args: [Option<Arg>; 2],
    /// Why the VMM needs it.
    pub why: &'static str,
}

/// The call with any arguments.
const fn any(nr: libc::c_long, why: &'static str) -> Allow {
    Allow {
        nr,
        args: [None, None],
        why,
    }
}

/// The call when `arg` holds.
const fn when(nr: libc::c_long, arg: Arg, why: &'static str) -> Allow {
    Allow {
        nr,
        args: [Some(arg), None],
        why,
    }
}

/// The call when both hold.
const fn when2(nr: libc::c_long, a: Arg, b: Arg, why: &'static str) -> Allow {
    Allow {
        nr,
        args: [Some(a), Some(b)],
        why,
    }
}

/// `ioctl` with one request number (on any fd).
const fn ioctl(request: u32, why: &'static str) -> Allow {
    when(libc::SYS_ioctl, Arg::Eq32(1, request), why)
}

/// `mmap`/`mprotect` of memory that is not executable.
const fn no_exec(nr: libc::c_long, why: &'static str) -> Allow {
    when(nr, Arg::Masked(2, libc::PROT_EXEC as u64, 0), why)
}

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (0xAE << 8) | nr
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u32 = ioc(0, 0x80, 0);
/// `KVM_GET_REGS`: `_IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u32 = ioc(
    IOC_READ,
    0x81,
    std::mem::size_of::<kvm_bindings::kvm_regs>(),
);
/// `KVM_GET_SREGS`: `_IOR(KVMIO, 0x83, struct kvm_sregs)`.
pub const KVM_GET_SREGS: u32 = ioc(
    IOC_READ,
    0x83,
    std::mem::size_of::<kvm_bindings::kvm_sregs>(),
);
/// `KVM_SET_USER_MEMORY_REGION`: `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
pub const KVM_SET_USER_MEMORY_REGION: u32 = ioc(
    IOC_WRITE,
    0x46,
    std::mem::size_of::<kvm_bindings::kvm_userspace_memory_region>(),
);
const TCGETS: u32 = libc::TCGETS as u32;
const TCSETS: u32 = libc::TCSETS as u32;
const FIONBIO: u32 = libc::FIONBIO as u32;
const FIOCLEX: u32 = libc::FIOCLEX as u32;

/// Every thread.
pub const COMMON: &[Allow] = &[
    any(
        libc::SYS_futex,
        "locks (std, parking_lot), RCU's Event, joining threads",
    ),
    no_exec(
        libc::SYS_mmap,
        "the allocator, thread stacks, guest RAM; never executable",
    ),
    no_exec(
        libc::SYS_mprotect,
        "the allocator's arenas, stack guard pages; never executable",
    ),
    any(
        libc::SYS_munmap,
        "the allocator, a thread's stacks at its end, removed RAM",
    ),
    any(libc::SYS_mremap, "the allocator (growing large blocks)"),
    any(libc::SYS_brk, "the allocator"),
    any(
        libc::SYS_madvise,
        "the allocator; the C library frees a finished thread's stack",
    ),
    any(
        libc::SYS_close,
        "dropped fds: a vCPU's at its end, removed handlers' in callbacks",
    ),
    any(
        libc::SYS_rt_sigreturn,
        "return from the kick signal's handler",
    ),
    any(
        libc::SYS_rt_sigprocmask,
        "the C library masks signals around pthread_kill and \
        thread exit",
    ),
    any(
        libc::SYS_sigaltstack,
        "std removes a thread's alternate signal stack at its end",
    ),
    any(libc::SYS_gettid, "pthread_kill (kicks), std's thread ids"),
    any(libc::SYS_getpid, "pthread_kill (kicks)"),
    any(
        libc::SYS_clock_gettime,
        "Instant::now where the vDSO falls back to the system call",
    ),
    any(
        libc::SYS_clock_nanosleep,
        "sleeps: reclamation's back-off, std's sleep in spin-then-sleep waits",
    ),
    any(libc::SYS_nanosleep, "sleeps (older C libraries)"),
    any(
        libc::SYS_sched_yield,
        "spin-then-yield loops (RCU, the main loop's call gate)",
    ),
    any(
        libc::SYS_getrandom,
        "std's HashMap keys, drawn once per thread",
    ),
    when(
        libc::SYS_prctl,
        Arg::Eq32(0, libc::PR_GET_NAME as u32),
        "the SIGSYS handler reads the thread's name",
    ),
    any(libc::SYS_exit, "a thread ends"),
    any(
        libc::SYS_exit_group,
        "the process ends (also the SIGSYS handler's exit)",
    ),
];

/// Threads that start threads (the main loop: `vmm-ram-fill`). The new thread inherits the
/// filter and runs these before any code of ours.
pub const SPAWN: &[Allow] = &[
    when(
        libc::SYS_clone,
        Arg::Masked(0, libc::CLONE_THREAD as u64, libc::CLONE_THREAD as u64),
        "pthread_create: a thread, never a process (no fork)",
    ),
    any(
        libc::SYS_set_robust_list,
        "the C library's start of a new thread",
    ),
    any(libc::SYS_rseq, "the C library's start of a new thread"),
    any(
        libc::SYS_sched_getaffinity,
        "std's start of a new thread (pthread_getattr_np)",
    ),
    when(
        libc::SYS_prctl,
        Arg::Eq32(0, libc::PR_SET_NAME as u32),
        "naming the new thread",
    ),
];

/// vCPU threads: `KVM_RUN` and what its exits need.
pub const VCPU: &[Allow] = &[
    ioctl(KVM_RUN, "running the guest"),
    ioctl(KVM_GET_REGS, "the register dump of a crash's diagnostic"),
    ioctl(KVM_GET_SREGS, "the register dump of a crash's diagnostic"),
    any(
        libc::SYS_tgkill,
        "finish/pause kick the other vCPUs out of KVM_RUN",
    ),
    when(
        libc::SYS_write,
        Arg::Eq32(0, 2),
        "log lines and the SIGSYS message on stderr (the other descriptors a vCPU writes are \
         added by Filters::set_vcpu_writes)",
    ),
];

/// Why a vCPU writes each descriptor of [`Filters::set_vcpu_writes`].
const VCPU_WRITE_WHY: &str = "an eventfd the vCPU signals: the console's (guest output \
    queued), the serial irqfd (the UART's interrupt), the main loop's waker (finish, timers)";

/// The main thread once set-up is over.
pub const MAIN_LOOP: &[Allow] = &[
    any(
        libc::SYS_write,
        "guest output (stdout, --log, --serial file:), eventfd wake-ups, log lines",
    ),
    any(libc::SYS_epoll_wait, "the main loop's poll"),
    any(
        libc::SYS_epoll_pwait,
        "the main loop's poll (some C libraries)",
    ),
    any(
        libc::SYS_epoll_ctl,
        "fd handlers come and go (control clients)",
    ),
    any(
        libc::SYS_poll,
        "the end of a run: a bounded wait for room in the console's outputs and for \
         `--result-json -` (console_out::flush_within)",
    ),
    any(libc::SYS_ppoll, "as poll (some C libraries)"),
    any(
        libc::SYS_read,
        "stdin, the signalfd, eventfds, control clients, /proc/self/status",
    ),
    any(
        libc::SYS_pread64,
        "virtio-blk reads from a --disk image into guest memory",
    ),
    any(
        libc::SYS_pwrite64,
        "virtio-blk writes from guest memory to a --disk image",
    ),
    any(libc::SYS_fdatasync, "virtio-blk FLUSH of a --disk image"),
    when(
        libc::SYS_fallocate,
        Arg::Eq32(
            1,
            (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32,
        ),
        "virtio-blk DISCARD: a hole punched in a --disk image, its size kept",
    ),
    any(libc::SYS_recvfrom, "control clients"),
    any(libc::SYS_sendto, "replies to control clients"),
    any(libc::SYS_accept4, "new control clients"),
    when(
        libc::SYS_shutdown,
        Arg::Eq32(1, libc::SHUT_WR as u32),
        "a control client that sent an oversized line is told the end",
    ),
    when2(
        libc::SYS_getsockopt,
        Arg::Eq32(1, libc::SOL_SOCKET as u32),
        Arg::Eq32(2, libc::SO_PEERCRED as u32),
        "a control client's uid (SO_PEERCRED)",
    ),
    when(
        libc::SYS_fcntl,
        Arg::Eq32(1, libc::F_GETFL as u32),
        "non-blocking clients, stdin",
    ),
    when(
        libc::SYS_fcntl,
        Arg::Eq32(1, libc::F_SETFL as u32),
        "non-blocking clients, stdin",
    ),
    when(
        libc::SYS_fcntl,
        Arg::Eq32(1, libc::F_DUPFD_CLOEXEC as u32),
        "`--result-json -`: a descriptor of its own for standard output (console_out)",
    ),
    when(
        libc::SYS_fcntl,
        Arg::Eq32(1, libc::F_GETFD as u32),
        "close-on-exec checks",
    ),
    when(
        libc::SYS_fcntl,
        Arg::Eq32(1, libc::F_SETFD as u32),
        "close-on-exec",
    ),
    ioctl(FIONBIO, "mio makes an accepted client non-blocking"),
    ioctl(FIOCLEX, "close-on-exec"),
    ioctl(KVM_SET_USER_MEMORY_REGION, "ram-add / ram-remove"),
    ioctl(TCGETS, "the terminal's mode"),
    ioctl(TCSETS, "the terminal's mode restored at the end"),
    any(libc::SYS_tgkill, "pause/resume/quit kick the vCPUs"),
    any(
        libc::SYS_membarrier,
        "RCU grace periods (synchronize) of RAM and bus updates",
    ),
    any(libc::SYS_mincore, "the report's guest-resident memory"),
    any(
        libc::SYS_openat,
        "--result-json at the end; /proc/self/status (query-memory, report)",
    ),
    any(
        libc::SYS_statx,
        "std's read_to_string sizes the file it reads",
    ),
    any(
        libc::SYS_fstat,
        "std's read_to_string sizes the file it reads",
    ),
    any(
        libc::SYS_newfstatat,
        "std's read_to_string sizes the file it reads",
    ),
    any(libc::SYS_lseek, "std's file reads"),
    any(libc::SYS_unlink, "the control socket is removed at the end"),
    any(libc::SYS_fsync, "flushing output files at the end"),
];

/// The RCU reclamation thread.
pub const RECLAIM: &[Allow] = &[
    any(libc::SYS_membarrier, "grace periods"),
    any(
        libc::SYS_write,
        "call_rcu callbacks (handlers dropped under the BQL may wake the loop), log lines",
    ),
];

// Syscall names, indexed by number ("-": no call), from the x86_64 Linux ABI, for the
// SIGSYS message.
const SYSCALL_NAMES: &str = concat!(
    "read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction ",
    "rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select ",
    "sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep ",
    "getitimer alarm setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg ",
    "recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt ",
    "clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd ",
    "msgrcv msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir ",
    "fchdir rename mkdir rmdir creat link unlink symlink readlink chmod fchmod chown fchown ",
    "lchown umask gettimeofday getrlimit getrusage sysinfo times ptrace getuid syslog getgid ",
    "setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid ",
    "getgroups setgroups setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid ",
    "getsid capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend ",
    "sigaltstack utime mknod uselib personality ustat statfs fstatfs sysfs getpriority ",
    "setpriority sched_setparam sched_getparam sched_setscheduler sched_getscheduler ",
    "sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock ",
    "mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex ",
    "setrlimit chroot sync acct settimeofday mount umount2 swapon swapoff reboot sethostname ",
    "setdomainname iopl ioperm create_module init_module delete_module get_kernel_syms ",
    "query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid ",
    "readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr ",
    "llistxattr flistxattr removexattr lremovexattr fremovexattr tkill time futex ",
    "sched_setaffinity sched_getaffinity set_thread_area io_setup io_destroy io_getevents ",
    "io_submit io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old ",
    "epoll_wait_old remap_file_pages getdents64 set_tid_address restart_syscall semtimedop ",
    "fadvise64 timer_create timer_settime timer_gettime timer_getoverrun timer_delete ",
    "clock_settime clock_gettime clock_getres clock_nanosleep exit_group epoll_wait ",
    "epoll_ctl tgkill utimes vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink ",
    "mq_timedsend mq_timedreceive mq_notify mq_getsetattr kexec_load waitid add_key ",
    "request_key keyctl ioprio_set ioprio_get inotify_init inotify_add_watch ",
    "inotify_rm_watch migrate_pages openat mkdirat mknodat fchownat futimesat newfstatat ",
    "unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll unshare ",
    "set_robust_list get_robust_list splice tee sync_file_range vmsplice move_pages ",
    "utimensat epoll_pwait signalfd timerfd_create eventfd fallocate timerfd_settime ",
    "timerfd_gettime accept4 signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 ",
    "preadv pwritev rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init fanotify_mark ",
    "prlimit64 name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns ",
    "getcpu process_vm_readv process_vm_writev kcmp finit_module sched_setattr sched_getattr ",
    "renameat2 seccomp getrandom memfd_create kexec_file_load bpf execveat userfaultfd ",
    "membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc pkey_free ",
    "statx io_pgetevents rseq - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - ",
    "- - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - ",
    "- - - - - - - - - - - - - - pidfd_send_signal io_uring_setup io_uring_enter ",
    "io_uring_register open_tree move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 ",
    "close_range openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr ",
    "quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self ",
    "memfd_secret process_mrelease futex_waitv set_mempolicy_home_node",
);

/// The name of system call `nr` ("?" if unknown).
pub fn syscall_name(nr: i64) -> &'static str {
    usize::try_from(nr)
        .ok()
        .and_then(|n| SYSCALL_NAMES.split(' ').nth(n))
        .filter(|s| *s != "-")
        .unwrap_or("?")
}

/// The compiled filters, one per thread kind.
pub struct Filters {
    programs: Vec<(ThreadKind, BpfProgram)>,
    /// The vCPU filter, compiled by [`set_vcpu_writes`](Self::set_vcpu_writes).
    vcpu: std::sync::OnceLock<BpfProgram>,
}

impl Filters {
    /// Compiles the main loop's and the reclamation thread's tables; the vCPU's waits for
    /// [`set_vcpu_writes`](Self::set_vcpu_writes).
    pub fn new() -> Result<Filters> {
        let programs = [ThreadKind::MainLoop, ThreadKind::Reclaim]
            .into_iter()
            .map(|k| compile(k, &[]).map(|p| (k, p)))
            .collect::<Result<_>>()?;
        Ok(Filters {
            programs,
            vcpu: std::sync::OnceLock::new(),
        })
    }

    /// Compiles the vCPU filter: [`VCPU`] plus `write(2)` to each of `fds` (the descriptors
    /// a vCPU thread signals, open for the VM's life), and to stderr. Once; later calls
    /// return an error.
    pub fn set_vcpu_writes(&self, fds: &[std::os::fd::RawFd]) -> Result<()> {
        let extra: Vec<Allow> = fds
            .iter()
            .map(|&fd| when(libc::SYS_write, Arg::Eq32(0, fd as u32), VCPU_WRITE_WHY))
            .collect();
        let prog = compile(ThreadKind::Vcpu, &extra)?;
        self.vcpu.set(prog).map_err(|_| Error::Seccomp {
            what: "compiling the vCPU filter",
            detail: "its descriptors were set already".into(),
        })
    }

    /// Installs `kind`'s filter on the calling thread (`PR_SET_NO_NEW_PRIVS` first) and the
    /// process's SIGSYS handler if it is not there yet. The thread keeps it until it ends,
    /// and threads it starts inherit it.
    pub fn install(&self, kind: ThreadKind) -> Result<()> {
        install_sigsys_handler()?;
        let prog = match kind {
            ThreadKind::Vcpu => self.vcpu.get().ok_or_else(|| Error::Seccomp {
                what: "installing the vCPU filter",
                detail: "it is compiled by Filters::set_vcpu_writes, which was not called".into(),
            })?,
            _ => self
                .programs
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, p)| p)
                .expect("every other kind is compiled by Filters::new"),
        };
        installed::remember(kind);
        seccompiler::apply_filter(prog).map_err(|e| Error::Seccomp {
            what: "installing a thread's filter",
            detail: e.to_string(),
        })
    }
}

fn compile(kind: ThreadKind, extra: &[Allow]) -> Result<BpfProgram> {
    let err = |e: seccompiler::BackendError| Error::Seccomp {
        what: "compiling a filter",
        detail: format!("{} table: {e}", kind.table_name()),
    };
    // seccompiler: an empty rule list allows a call with any arguments; otherwise one of
    // its rules must match.
    let mut rules: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for allow in kind.rules().copied().chain(extra.iter().copied()) {
        let conds = allow
            .args
            .iter()
            .flatten()
            .map(|a| match *a {
                Arg::Eq32(n, v) => {
                    SeccompCondition::new(n, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v.into())
                }
                Arg::Masked(n, mask, v) => SeccompCondition::new(
                    n,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(mask),
                    v,
                ),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(err)?;
        let entry = rules.entry(allow.nr).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), conds.is_empty()) {
            (_, true) => *entry = None, // any arguments
            (Some(list), false) => list.push(SeccompRule::new(conds).map_err(err)?),
            (None, false) => {} // already allowed with any arguments
        }
    }
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;
    let body: BpfProgram = filter.try_into().map_err(err)?;
    // clone3 -> ENOSYS ahead of the filter (see the module docs).
    let mut prog = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(
            BPF_RET | BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
    ];
    prog.extend(body);
    Ok(prog)
}

// Classic BPF opcodes (linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Which filter each thread installed, by thread id, for the SIGSYS handler's message (it
/// may not allocate or lock). A static table rather than a thread-local: it needs no
/// per-thread set-up and is safe to read in a signal handler.
mod installed {
    use super::ThreadKind;
    use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

    /// One thread's entry: its id (0: free) and [`ThreadKind::index`].
    struct Entry {
        tid: AtomicI32,
        kind: AtomicU8,
    }

    /// Room for the most vCPUs a VM has (254), the main thread, the reclamation thread and
    /// a few more. When it is full, a thread's filter is reported as unknown.
    const ENTRIES: usize = 264;

    static TABLE: [Entry; ENTRIES] = [const {
        Entry {
            tid: AtomicI32::new(0),
            kind: AtomicU8::new(0),
        }
    }; ENTRIES];

    fn gettid() -> i32 {
        // SAFETY: gettid(2) takes no arguments and cannot fail; every filter allows it.
        unsafe { libc::gettid() }
    }

    /// Records that the calling thread installs `kind`'s filter. A thread that ends leaves
    /// its entry: a later thread given the same id by the kernel that installs a filter
    /// takes it over; one that inherits its filter would be reported with the old entry's
    /// (only the message's name of the filter can be wrong, never the filtering).
    pub(super) fn remember(kind: ThreadKind) {
        let tid = gettid();
        let slot = TABLE
            .iter()
            .find(|e| e.tid.load(Ordering::Acquire) == tid)
            .or_else(|| {
                TABLE.iter().find(|e| {
                    e.tid
                        .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
            });
        if let Some(e) = slot {
            e.kind.store(kind.index(), Ordering::Release);
        }
    }

    /// The filter the calling thread installed, if it recorded one.
    pub(super) fn of_this_thread() -> Option<ThreadKind> {
        let tid = gettid();
        TABLE
            .iter()
            .find(|e| e.tid.load(Ordering::Acquire) == tid)
            .and_then(|e| ThreadKind::from_index(e.kind.load(Ordering::Acquire)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn each_thread_sees_the_filter_it_recorded_and_others_see_none() {
            std::thread::spawn(|| {
                assert_eq!(of_this_thread(), None);
                remember(ThreadKind::Vcpu);
                assert_eq!(of_this_thread(), Some(ThreadKind::Vcpu));
                remember(ThreadKind::MainLoop);
                assert_eq!(of_this_thread(), Some(ThreadKind::MainLoop));
                std::thread::spawn(|| assert_eq!(of_this_thread(), None))
                    .join()
                    .unwrap();
            })
            .join()
            .unwrap();
        }
    }
}

/// The `_sigsys` member of the kernel's `siginfo_t` (the libc crate does not name it).
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// A message built with no allocation and no lock (the SIGSYS handler's).
struct Msg {
    buf: [u8; 512],
    len: usize,
}

impl Msg {
    fn push(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    fn num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }
}

/// The SIGSYS handler: one line to stderr, then the process ends with status 1. Only
/// async-signal-safe work: atomic loads of the static table `installed`, `gettid`,
/// `prctl(PR_GET_NAME)`, `write`, `_exit`
/// (all allowed by every filter).
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; for SIGSYS from seccomp its union holds
    // `_sigsys`, whose layout `SigsysInfo` spells out.
    let (nr, code) = unsafe {
        let i = &*(info as *const SigsysInfo);
        (i.syscall as i64, i.code)
    };
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into a 17-byte buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(16);
    let kind = installed::of_this_thread();
    let mut m = Msg {
        buf: [0; 512],
        len: 0,
    };
    m.push(b"vmm: seccomp: thread '")
        .push(&name[..name_len])
        .push(b"' (filter ");
    match kind {
        Some(k) => m.push(k.table_name().as_bytes()),
        None => m.push(b"inherited from the thread that started it"),
    };
    m.push(b") made system call ")
        .num(nr as u64)
        .push(b" (")
        .push(syscall_name(nr).as_bytes())
        .push(b"), which its filter forbids; the VMM stops.");
    if code != 1 {
        // SYS_SECCOMP is 1; anything else is a SIGSYS someone sent.
        m.push(b" (si_code ").num(code as u64).push(b")");
    }
    m.push(
        b" If the VMM needs it, add it to that table in vmm/src/seccomp.rs; \
          --no-seccomp runs without filters, for debugging only.\n",
    );
    let mut off = 0;
    while off < m.len {
        // SAFETY: writes from a live buffer within its length.
        let n = unsafe { libc::write(2, m.buf[off..].as_ptr().cast(), m.len - off) };
        if n <= 0 {
            break;
        }
        off += n as usize;
    }
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(crate::outcome::status::ERROR) };
}

/// Installs the SIGSYS handler (once per process; later calls return the first's result).
pub fn install_sigsys_handler() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), i32>> = std::sync::OnceLock::new();
    let r = DONE.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler has
        // the SA_SIGINFO signature and does only async-signal-safe work.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    r.map_err(|e| Error::Seccomp {
        what: "installing the SIGSYS handler",
        detail: std::io::Error::from_raw_os_error(e).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
    }

    #[test]
    fn syscall_names_match_their_numbers() {
        for (nr, name) in [
            (libc::SYS_read, "read"),
            (libc::SYS_ioctl, "ioctl"),
            (libc::SYS_socket, "socket"),
            (libc::SYS_execve, "execve"),
            (libc::SYS_openat, "openat"),
            (libc::SYS_clone3, "clone3"),
            (libc::SYS_futex_waitv, "futex_waitv"),
        ] {
            assert_eq!(syscall_name(nr), name);
        }
        assert_eq!(syscall_name(400), "?");
        assert_eq!(syscall_name(-1), "?");
        assert_eq!(syscall_name(100_000), "?");
    }

    #[test]
    fn every_table_compiles_and_says_why() {
        let f = Filters::new().unwrap();
        f.set_vcpu_writes(&[5, 7]).unwrap();
        assert!(f.set_vcpu_writes(&[5]).is_err());
        for k in ThreadKind::ALL {
            for a in k.rules() {
                assert!(!a.why.is_empty(), "{}: {}", k.table_name(), a.nr);
            }
        }
    }

    #[test]
    fn no_filter_allows_new_processes_or_programs() {
        for k in ThreadKind::ALL {
            for a in k.rules() {
                for nr in [
                    libc::SYS_execve,
                    libc::SYS_execveat,
                    libc::SYS_fork,
                    libc::SYS_vfork,
                    libc::SYS_ptrace,
                    libc::SYS_socket,
                    libc::SYS_clone3,
                ] {
                    assert_ne!(a.nr, nr, "{} allows {}", k.table_name(), syscall_name(nr));
                }
                if a.nr == libc::SYS_clone {
                    assert!(matches!(
                        a.args[0],
                        Some(Arg::Masked(0, m, v)) if m == libc::CLONE_THREAD as u64 && v == m
                    ));
                }
            }
        }
    }
}
