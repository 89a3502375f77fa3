//! `vmm`: KVM set-up, x86_64 boot, the vCPU run loop and the command-line binary.
//! (Not built yet: see issue 6.)
