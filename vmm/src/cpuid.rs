//! CPUID: what KVM supports, normalized for each vCPU.

use kvm_bindings::CpuId;

/// Leaf 1 ECX: CMPXCHG16B.
const ECX_CX16: u32 = 1 << 13;
/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: hyper-threading (more than one logical CPU per package).
const EDX_HTT: u32 = 1 << 28;

/// Normalizes KVM's supported CPUID for vCPU `id` of `cpus`:
///
/// - leaf 1: the initial APIC ID and the logical-processor count in EBX, the hypervisor bit,
///   HTT when there is more than one vCPU; CX16 masked: on PVM hosts (the development and CI
///   machines) KVM's instruction emulator cannot emulate `cmpxchg16b`, and a guest that
///   relies on it dies in the emulator (measured; see shared/KVM-FACTS.md). PVM shows the
///   host's leaf-1 feature bits whatever the VMM sets, so guests must not rely on the mask.
/// - leaf 0xB (x2APIC topology): one thread per core, `cpus` cores, the x2APIC ID in EDX.
/// - leaf 4 (cache topology): the cores-per-package field.
/// - KVM's signature leaf 0x40000000 and its feature leaf are kept as KVM reports them.
pub fn normalize(cpuid: &mut CpuId, id: u8, cpus: u8) {
    let core_bits = 32 - (cpus.max(1) as u32 - 1).leading_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | ((id as u32) << 24) | ((cpus as u32) << 16);
                e.ecx |= ECX_HYPERVISOR;
                e.ecx &= !ECX_CX16;
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            4 => {
                e.eax = (e.eax & 0x03ff_ffff) | ((cpus as u32 - 1) << 26);
            }
            0xb => {
                e.edx = id as u32;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = cpus as u32;
                        e.ecx = (2 << 8) | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n;
                    }
                }
            }
            _ => {}
        }
    }
}
