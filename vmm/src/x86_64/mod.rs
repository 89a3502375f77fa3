//! The machine the guest sees: the guest-physical layout, the Linux boot protocol, the MP and
//! ACPI tables, CPUID and the vCPU registers.

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod cpuid;
pub mod layout;
pub mod mptable;
