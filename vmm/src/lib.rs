//! `vmm`: a small KVM virtual machine monitor whose shared structures are read through RCU.
//!
//! KVM set-up ([`vm`]), the x86_64 Linux boot protocol ([`boot`], [`mptable`], [`cpu`],
//! [`cpuid`]), the vCPU threads ([`vcpu`]: QSBR readers, offline inside `KVM_RUN`), and the
//! command-line binary (`src/main.rs`). The built-in test guest ([`guest_image`]) is built
//! from `guest/` by `build.rs`.

#![warn(missing_docs)]

pub mod acpi;
pub mod boot;
pub mod console;
pub mod console_out;
pub mod control;
pub mod cpu;
pub mod cpuid;
pub mod error;
pub mod guest_image;
pub mod initramfs;
mod kick;
pub mod layout;
pub mod lookup;
pub mod memstat;
pub mod mptable;
pub mod outcome;
pub mod pvm;
pub mod qmp;
pub mod report;
pub mod seccomp;
pub mod term;
pub mod vcpu;
pub mod vm;

pub use error::{Error, Result};
