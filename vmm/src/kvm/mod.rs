//! KVM: the VM and its shared state, the vCPU threads and their exit loop, kicks out of
//! `KVM_RUN`, and the check for a KVM that cannot run Linux (PVM).

pub(crate) mod kick;
pub mod pvm;
pub(crate) mod serial_sink;
pub mod state;
pub mod vcpu;
pub mod virtio;
pub mod vm;
