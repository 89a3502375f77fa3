//! `vmm`: a small KVM virtual machine monitor whose shared structures are read through RCU.
//!
//! The folders show the architecture:
//!
//! - [`x86_64`]: the machine the guest sees — the guest-physical layout, the Linux boot
//!   protocol, MP and ACPI tables, CPUID and registers;
//! - [`kvm`]: the VM and its vCPU threads (QSBR readers, offline inside `KVM_RUN`), kicks,
//!   and the check for a KVM that cannot run Linux;
//! - [`frontend`]: what a user talks to — the QMP control socket, the console (guest output
//!   to stdout and the log files, stdin to the UART) and the terminal;
//! - [`images`]: the built-in test guest (built from `guest/` by `build.rs`) and the Linux
//!   guest's initramfs;
//! - [`bench`]: benchmark instruments — the lookup device and its `--ram-lookup` designs,
//!   and the hot-plug timing;
//!
//! and, at the top, the run's outcome and report, the errors, seccomp and memory
//! statistics. The command-line binary is `src/main.rs`.

#![warn(missing_docs)]

pub mod bench;
pub mod error;
pub mod frontend;
pub mod images;
pub mod kvm;
pub mod memstat;
pub mod outcome;
pub mod report;
pub mod seccomp;
pub mod x86_64;

pub use error::{Error, Result};
