//! The vmm crate's errors. Each message says what went wrong and what to do about it.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can stop the VMM from starting or running a guest.
#[derive(Debug, Error)]
pub enum Error {
    /// /dev/kvm does not exist.
    #[error(
        "/dev/kvm does not exist: KVM is not available. Load the module (`modprobe kvm_intel` \
         or `modprobe kvm_amd`), and check that virtualization is enabled in the firmware"
    )]
    KvmMissing,
    /// /dev/kvm exists but cannot be opened.
    #[error(
        "/dev/kvm is not accessible ({0}): add your user to the `kvm` group \
         (`sudo usermod -aG kvm $USER`, then log in again) or run as root"
    )]
    KvmAccess(std::io::Error),
    /// Another KVM failure.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// What the VMM was doing.
        what: &'static str,
        /// The error KVM returned.
        source: kvm_ioctls::Error,
    },
    /// The KVM API version is not the one this VMM speaks.
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmApiVersion(i32),
    /// The kernel file could not be read.
    #[error("kernel {path}: {source}")]
    KernelFile {
        /// The path given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A --kernel or --initrd path names something other than a regular file.
    #[error(
        "{what} {path}: {kind}, not a regular file; pass the path of an image file (devices, \
         pipes and directories are refused so that loading stays bounded)"
    )]
    NotRegularFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What it is instead ("a directory", "a character device", ...).
        kind: &'static str,
    },
    /// The kernel file is larger than guest memory.
    #[error(
        "kernel {name} is {size} bytes, more than the guest's {mem} bytes of memory; give the \
         guest more memory with --mem or check that this is a kernel image"
    )]
    KernelTooLarge {
        /// The kernel.
        name: String,
        /// Its size.
        size: u64,
        /// Guest memory.
        mem: u64,
    },
    /// The kernel's setup header has fields whose values cannot describe a loadable kernel.
    #[error(
        "kernel {name}: bad setup header: {why}; the image is damaged or not a kernel this \
         VMM can load"
    )]
    KernelHeader {
        /// The kernel.
        name: String,
        /// Which fields and why.
        why: String,
    },
    /// The kernel file is not a bzImage.
    #[error(
        "kernel {0}: not a bzImage (no \"HdrS\" boot-protocol header at offset 0x202); pass \
         a Linux bzImage (e.g. /boot/vmlinuz-*) or omit --kernel to boot the built-in guest"
    )]
    NotBzImage(String),
    /// The kernel's boot protocol is too old.
    #[error(
        "kernel {name}: boot protocol {major}.{minor:02} is too old; this VMM needs 2.12 or \
         newer (Linux 3.8+) for the 64-bit entry point"
    )]
    ProtocolTooOld {
        /// The kernel.
        name: String,
        /// Protocol major version.
        major: u16,
        /// Protocol minor version.
        minor: u16,
    },
    /// The kernel has no 64-bit entry point.
    #[error(
        "kernel {0}: the image has no 64-bit entry point (XLF_KERNEL_64 is not set); build an \
         x86_64 kernel"
    )]
    No64BitEntry(String),
    /// Loading the kernel into guest memory failed.
    #[error("kernel {name}: cannot load it: {source}; is --mem large enough?")]
    KernelLoad {
        /// The kernel.
        name: String,
        /// The loader's error.
        source: linux_loader::loader::Error,
    },
    /// The initrd could not be read.
    #[error("initrd {path}: {source}")]
    InitrdFile {
        /// The path given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The initrd does not fit.
    #[error(
        "initrd {name} is {size} bytes but only {room} bytes of low memory are free above the \
         kernel; give the guest more memory with --mem"
    )]
    InitrdTooLarge {
        /// The initrd.
        name: String,
        /// Its size.
        size: u64,
        /// The space available.
        room: u64,
    },
    /// The command line is too long for the image.
    #[error(
        "the kernel command line is {len} bytes but this kernel accepts at most {max}; shorten \
         --cmdline"
    )]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The image's limit.
        max: usize,
    },
    /// The command line contains a NUL byte or another invalid character.
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(String),
    /// Memory size out of range.
    #[error("--mem {mib} MiB: {why}")]
    MemSize {
        /// The size asked for, in MiB.
        mib: u64,
        /// What is wrong with it.
        why: String,
    },
    /// `--max-memory` below `--mem`.
    #[error(
        "--max-memory {max_mib} MiB is less than --mem {mem_mib} MiB: it caps boot RAM and \
         hot-added RAM together; give at least --mem"
    )]
    MaxMemory {
        /// --max-memory, in MiB.
        max_mib: u64,
        /// --mem, in MiB.
        mem_mib: u64,
    },
    /// Guest memory could not be created.
    #[error(
        "cannot allocate {mib} MiB of guest memory: {source}; ask for less with --mem or free \
         host memory"
    )]
    GuestMemory {
        /// The size asked for, in MiB.
        mib: u64,
        /// The error.
        source: std::io::Error,
    },
    /// A guest-memory write during set-up failed.
    #[error("writing {what} into guest memory failed: {source}")]
    GuestWrite {
        /// What was being written.
        what: &'static str,
        /// The error.
        source: vm_memory::GuestMemoryError,
    },
    /// The vCPU count is out of range.
    #[error("--cpus {asked}: {why}")]
    Cpus {
        /// The count asked for.
        asked: u64,
        /// What is wrong.
        why: String,
    },
    /// A `--disk` image could not be used.
    #[error("--disk: {source}")]
    Disk {
        /// The image.
        path: std::path::PathBuf,
        /// Why (the message says what to do).
        source: devices::Error,
    },
    /// More disks than the layout has virtio-mmio slots.
    #[error("{asked} disks asked for, but the VM has room for {max}: give at most {max} --disk")]
    TooManyDisks {
        /// How many `--disk` options.
        asked: usize,
        /// The layout's slots.
        max: usize,
    },
    /// A device could not be set up.
    #[error("device set-up: {0}")]
    Device(#[from] devices::Error),
    /// A kernel module for the initramfs could not be found, read or ordered.
    #[error(
        "kernel module {module}: {reason}. Check the module directory passed to mkinitramfs \
         (scripts/fetch-linux-guest.sh extracts it from the kernel package; \
         LINUX_GUEST_REFRESH=1 fetches it again)"
    )]
    KernelModule {
        /// The module (or file) concerned.
        module: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A seccomp filter could not be built or installed.
    #[error(
        "seccomp: {what}: {detail}. The kernel needs seccomp filtering \
         (CONFIG_SECCOMP_FILTER); --no-seccomp runs without it, for debugging only"
    )]
    Seccomp {
        /// What the VMM was doing.
        what: &'static str,
        /// The error.
        detail: String,
    },
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { what, source }
}

pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}
