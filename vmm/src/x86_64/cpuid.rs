//! CPUID: what KVM supports ([`supported`]), normalized for each vCPU ([`normalize`]), and
//! the invariants a normalized set keeps ([`inconsistencies`]).
//!
//! The starting point is `KVM_GET_SUPPORTED_CPUID`: what this KVM can virtualize on this host.
//! That set is not always coherent as a CPU: KVM filters feature bits and XSAVE state
//! components separately, so under nested virtualization (QEMU's `-cpu max` + nested SVM) leaf
//! 0xD can offer PKRU and the AVX-512 state while leaf 7 offers neither PKU nor AVX-512F, and a
//! Linux guest then warns `XSAVE consistency problem` with a call trace. [`normalize`] makes
//! the set coherent the way Firecracker and cloud-hypervisor do: the XSAVE components offered
//! are exactly those whose feature bits are offered, the sizes follow from the kept
//! components, the topology leaves describe `cpus` single-threaded cores in one package, and
//! features a VM must not see (no vPMU, no MWAIT, no WAITPKG) are cleared.

use crate::error::{kvm as kvm_err, Result};
use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use kvm_ioctls::{Cap, Kvm};

/// A register of a CPUID entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One feature bit: leaf, subleaf, register, bit number.
#[derive(Clone, Copy, Debug)]
struct Bit {
    leaf: u32,
    sub: u32,
    reg: Reg,
    bit: u32,
    name: &'static str,
}

const fn bit(leaf: u32, sub: u32, reg: Reg, bit: u32, name: &'static str) -> Bit {
    Bit {
        leaf,
        sub,
        reg,
        bit,
        name,
    }
}

use Reg::{Eax, Ebx, Ecx, Edx};

// Leaf 1.
const MONITOR: Bit = bit(1, 0, Ecx, 3, "MONITOR");
const FMA: Bit = bit(1, 0, Ecx, 12, "FMA");
const CX16: Bit = bit(1, 0, Ecx, 13, "CX16");
const PDCM: Bit = bit(1, 0, Ecx, 15, "PDCM");
const TSC_DEADLINE: Bit = bit(1, 0, Ecx, 24, "TSC-deadline");
const XSAVE: Bit = bit(1, 0, Ecx, 26, "XSAVE");
const AVX: Bit = bit(1, 0, Ecx, 28, "AVX");
const F16C: Bit = bit(1, 0, Ecx, 29, "F16C");
const HYPERVISOR: Bit = bit(1, 0, Ecx, 31, "hypervisor");
const HTT: Bit = bit(1, 0, Edx, 28, "HTT");
// Leaf 7, subleaf 0.
const AVX2: Bit = bit(7, 0, Ebx, 5, "AVX2");
const MPX: Bit = bit(7, 0, Ebx, 14, "MPX");
const AVX512F: Bit = bit(7, 0, Ebx, 16, "AVX512F");
const AVX512DQ: Bit = bit(7, 0, Ebx, 17, "AVX512DQ");
const AVX512IFMA: Bit = bit(7, 0, Ebx, 21, "AVX512IFMA");
const INTEL_PT: Bit = bit(7, 0, Ebx, 25, "Intel PT");
const AVX512PF: Bit = bit(7, 0, Ebx, 26, "AVX512PF");
const AVX512ER: Bit = bit(7, 0, Ebx, 27, "AVX512ER");
const AVX512CD: Bit = bit(7, 0, Ebx, 28, "AVX512CD");
const AVX512BW: Bit = bit(7, 0, Ebx, 30, "AVX512BW");
const AVX512VL: Bit = bit(7, 0, Ebx, 31, "AVX512VL");
const AVX512VBMI: Bit = bit(7, 0, Ecx, 1, "AVX512VBMI");
const PKU: Bit = bit(7, 0, Ecx, 3, "PKU");
const OSPKE: Bit = bit(7, 0, Ecx, 4, "OSPKE");
const WAITPKG: Bit = bit(7, 0, Ecx, 5, "WAITPKG");
const AVX512VBMI2: Bit = bit(7, 0, Ecx, 6, "AVX512VBMI2");
const CET_SS: Bit = bit(7, 0, Ecx, 7, "CET shadow stack");
const VAES: Bit = bit(7, 0, Ecx, 9, "VAES");
const VPCLMULQDQ: Bit = bit(7, 0, Ecx, 10, "VPCLMULQDQ");
const AVX512VNNI: Bit = bit(7, 0, Ecx, 11, "AVX512VNNI");
const AVX512BITALG: Bit = bit(7, 0, Ecx, 12, "AVX512BITALG");
const AVX512VPOPCNTDQ: Bit = bit(7, 0, Ecx, 14, "AVX512VPOPCNTDQ");
const AVX512_4VNNIW: Bit = bit(7, 0, Edx, 2, "AVX512_4VNNIW");
const AVX512_4FMAPS: Bit = bit(7, 0, Edx, 3, "AVX512_4FMAPS");
const AVX512_VP2INTERSECT: Bit = bit(7, 0, Edx, 8, "AVX512_VP2INTERSECT");
const ARCH_LBR: Bit = bit(7, 0, Edx, 19, "arch LBR");
const CET_IBT: Bit = bit(7, 0, Edx, 20, "CET IBT");
const AMX_BF16: Bit = bit(7, 0, Edx, 22, "AMX-BF16");
const AVX512_FP16: Bit = bit(7, 0, Edx, 23, "AVX512_FP16");
const AMX_TILE: Bit = bit(7, 0, Edx, 24, "AMX-TILE");
const AMX_INT8: Bit = bit(7, 0, Edx, 25, "AMX-INT8");
// Leaf 7, subleaf 1.
const AVX_VNNI: Bit = bit(7, 1, Eax, 4, "AVX-VNNI");
const AVX512_BF16: Bit = bit(7, 1, Eax, 5, "AVX512_BF16");
const AMX_FP16: Bit = bit(7, 1, Eax, 21, "AMX-FP16");
const AVX_IFMA: Bit = bit(7, 1, Eax, 23, "AVX-IFMA");
const AVX_VNNI_INT8: Bit = bit(7, 1, Edx, 4, "AVX-VNNI-INT8");
const AVX_NE_CONVERT: Bit = bit(7, 1, Edx, 5, "AVX-NE-CONVERT");
const AMX_COMPLEX: Bit = bit(7, 1, Edx, 8, "AMX-COMPLEX");
// Leaf 0xD, subleaf 1.
const XSAVEOPT: Bit = bit(0xd, 1, Eax, 0, "XSAVEOPT");
const XSAVEC: Bit = bit(0xd, 1, Eax, 1, "XSAVEC");
const XGETBV1: Bit = bit(0xd, 1, Eax, 2, "XGETBV1");
const XSAVES: Bit = bit(0xd, 1, Eax, 3, "XSAVES");
const XFD: Bit = bit(0xd, 1, Eax, 4, "XFD");
// Leaf 0x8000_0001.
const CMP_LEGACY: Bit = bit(0x8000_0001, 0, Ecx, 1, "CmpLegacy");
const XOP: Bit = bit(0x8000_0001, 0, Ecx, 11, "XOP");
const FMA4: Bit = bit(0x8000_0001, 0, Ecx, 16, "FMA4");
const TOPOEXT: Bit = bit(0x8000_0001, 0, Ecx, 22, "TopologyExtensions");

// XSAVE state components (bit numbers of XCR0 and IA32_XSS).
const X87: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
const YMM: u64 = 1 << 2;
const BNDREGS: u64 = 1 << 3;
const BNDCSR: u64 = 1 << 4;
const OPMASK: u64 = 1 << 5;
const ZMM_HI256: u64 = 1 << 6;
const HI16_ZMM: u64 = 1 << 7;
const PT_STATE: u64 = 1 << 8;
const PKRU: u64 = 1 << 9;
const CET_U: u64 = 1 << 11;
const CET_S: u64 = 1 << 12;
const LBR_STATE: u64 = 1 << 15;
const TILECFG: u64 = 1 << 17;
const TILEDATA: u64 = 1 << 18;

/// The legacy region (512 bytes) plus the XSAVE header (64): the smallest XSAVE area.
const XSAVE_MIN: u32 = 576;

/// A group of user (XCR0) state components that a feature bit switches on. A group is
/// offered whole or not at all (XCR0 rejects half of AVX-512 or of MPX or of AMX), only if
/// its feature bit and the components it builds on are offered; when it is not, the feature
/// bit and every feature that needs that state are cleared, so bits and state agree both
/// ways, as on a real CPU.
struct UserGroup {
    components: u64,
    feature: Bit,
    requires: u64,
    dependents: &'static [Bit],
}

const USER_GROUPS: [UserGroup; 5] = [
    // AVX: the upper halves of the YMM registers; every VEX-encoded 256-bit extension needs it.
    UserGroup {
        components: YMM,
        feature: AVX,
        requires: SSE,
        dependents: &[
            FMA,
            F16C,
            AVX2,
            VAES,
            VPCLMULQDQ,
            AVX_VNNI,
            AVX_IFMA,
            AVX_VNNI_INT8,
            AVX_NE_CONVERT,
            XOP,
            FMA4,
        ],
    },
    // MPX: the bound registers and their configuration.
    UserGroup {
        components: BNDREGS | BNDCSR,
        feature: MPX,
        requires: 0,
        dependents: &[],
    },
    // AVX-512: opmask, ZMM_Hi256, Hi16_ZMM; builds on the YMM state.
    UserGroup {
        components: OPMASK | ZMM_HI256 | HI16_ZMM,
        feature: AVX512F,
        requires: YMM,
        dependents: &[
            AVX512DQ,
            AVX512IFMA,
            AVX512PF,
            AVX512ER,
            AVX512CD,
            AVX512BW,
            AVX512VL,
            AVX512VBMI,
            AVX512VBMI2,
            AVX512VNNI,
            AVX512BITALG,
            AVX512VPOPCNTDQ,
            AVX512_4VNNIW,
            AVX512_4FMAPS,
            AVX512_VP2INTERSECT,
            AVX512_FP16,
            AVX512_BF16,
        ],
    },
    // Protection keys: the PKRU register (OSPKE mirrors CR4.PKE, which needs PKU).
    UserGroup {
        components: PKRU,
        feature: PKU,
        requires: 0,
        dependents: &[OSPKE],
    },
    // AMX: tile configuration and tile data. KVM offers them only to a process that asked
    // for the permission (ARCH_REQ_XCOMP_GUEST_PERM); this VMM does not, so normally they go.
    UserGroup {
        components: TILECFG | TILEDATA,
        feature: AMX_TILE,
        requires: 0,
        dependents: &[AMX_BF16, AMX_INT8, AMX_FP16, AMX_COMPLEX, XFD],
    },
];

/// A group of supervisor (IA32_XSS) components: kept only with XSAVES, when KVM offers it
/// and one of its feature bits is offered. Its features do not need it (KVM can virtualize
/// them through MSRs), so nothing is cleared when it goes.
struct SupervisorGroup {
    components: u64,
    any_of: &'static [Bit],
}

const SUPERVISOR_GROUPS: [SupervisorGroup; 3] = [
    SupervisorGroup {
        components: PT_STATE,
        any_of: &[INTEL_PT],
    },
    SupervisorGroup {
        components: CET_U | CET_S,
        any_of: &[CET_SS, CET_IBT],
    },
    SupervisorGroup {
        components: LBR_STATE,
        any_of: &[ARCH_LBR],
    },
];

fn find(c: &[kvm_cpuid_entry2], leaf: u32, sub: u32) -> Option<&kvm_cpuid_entry2> {
    c.iter().find(|e| e.function == leaf && e.index == sub)
}

fn find_mut(c: &mut [kvm_cpuid_entry2], leaf: u32, sub: u32) -> Option<&mut kvm_cpuid_entry2> {
    c.iter_mut().find(|e| e.function == leaf && e.index == sub)
}

fn reg(e: &kvm_cpuid_entry2, r: Reg) -> u32 {
    match r {
        Eax => e.eax,
        Ebx => e.ebx,
        Ecx => e.ecx,
        Edx => e.edx,
    }
}

fn reg_mut(e: &mut kvm_cpuid_entry2, r: Reg) -> &mut u32 {
    match r {
        Eax => &mut e.eax,
        Ebx => &mut e.ebx,
        Ecx => &mut e.ecx,
        Edx => &mut e.edx,
    }
}

fn has(c: &[kvm_cpuid_entry2], b: Bit) -> bool {
    find(c, b.leaf, b.sub).is_some_and(|e| reg(e, b.reg) & (1 << b.bit) != 0)
}

fn set_to(c: &mut [kvm_cpuid_entry2], b: Bit, on: bool) {
    if let Some(e) = find_mut(c, b.leaf, b.sub) {
        let r = reg_mut(e, b.reg);
        if on {
            *r |= 1 << b.bit;
        } else {
            *r &= !(1 << b.bit);
        }
    }
}

fn zero(e: &mut kvm_cpuid_entry2) {
    e.eax = 0;
    e.ebx = 0;
    e.ecx = 0;
    e.edx = 0;
}

fn zero_leaf(c: &mut [kvm_cpuid_entry2], leaf: u32) {
    c.iter_mut().filter(|e| e.function == leaf).for_each(zero);
}

fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |i| mask & (1u64 << i) != 0)
}

/// The highest basic (`base` 0) or extended (`base` 0x8000_0000) leaf the set reports.
fn max_leaf(c: &[kvm_cpuid_entry2], base: u32) -> u32 {
    find(c, base, 0).map_or(0, |e| e.eax)
}

/// AMD and Hygon (the vendors whose topology lives in the 0x8000_00xx leaves).
fn is_amd(c: &[kvm_cpuid_entry2]) -> bool {
    let Some(e) = find(c, 0, 0) else {
        return false;
    };
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&e.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&e.edx.to_le_bytes());
    v[8..].copy_from_slice(&e.ecx.to_le_bytes());
    &v == b"AuthenticAMD" || &v == b"HygonGenuine"
}

/// Whether component `i` (a user one, XCR0) has a usable subleaf: a size, and an offset in
/// the standard format past the legacy area and header.
fn user_layout_ok(c: &[kvm_cpuid_entry2], i: u32) -> bool {
    find(c, 0xd, i).is_some_and(|s| s.eax != 0 && s.ecx & 1 == 0 && s.ebx >= XSAVE_MIN)
}

/// Whether supervisor component `i` (IA32_XSS) has a usable subleaf.
fn supervisor_layout_ok(c: &[kvm_cpuid_entry2], i: u32) -> bool {
    find(c, 0xd, i).is_some_and(|s| s.eax != 0 && s.ecx & 1 == 1)
}

/// The standard-format XSAVE size for the user components `mask`: the end of the last one.
fn standard_size(c: &[kvm_cpuid_entry2], mask: u64) -> u32 {
    bits(mask & !(X87 | SSE))
        .filter_map(|i| find(c, 0xd, i))
        .map(|s| s.ebx.saturating_add(s.eax))
        .fold(XSAVE_MIN, u32::max)
}

/// The compacted-format size (XSAVEC/XSAVES) for the components `mask`: each in bit order,
/// aligned to 64 bytes where its subleaf says so (ECX bit 1).
fn compacted_size(c: &[kvm_cpuid_entry2], mask: u64) -> u32 {
    bits(mask & !(X87 | SSE))
        .filter_map(|i| find(c, 0xd, i))
        .fold(XSAVE_MIN, |off, s| {
            let start = if s.ecx & 2 != 0 {
                off.saturating_add(63) & !63
            } else {
                off
            };
            start.saturating_add(s.eax)
        })
}

/// `KVM_GET_SUPPORTED_CPUID`, plus what KVM reports elsewhere and what this host can really
/// do:
///
/// - the TSC-deadline timer bit, which KVM never sets in that list but supports when
///   `KVM_CAP_TSC_DEADLINE_TIMER` says so;
/// - XSAVE hidden when this host is itself a QEMU TCG guest (nested SVM emulated by QEMU, as
///   on the project's real-KVM test set-up): QEMU's TCG runs a nested guest's `xsetbv`
///   without the SVM intercept, so KVM never learns the guest's XCR0. KVM then computes
///   CPUID 0xD.0 EBX for XCR0 = x87 (Linux: `XSAVE consistency problem: size 2696 !=
///   kernel_size 576`) and loads that XCR0 at every entry, after which the guest's XSAVE
///   context switches drop its SSE/AVX state. Without XSAVE the guest uses FXSAVE, which
///   XCR0 does not affect ([`normalize`] then takes AVX and leaf 0xD away too).
pub fn supported(kvm: &Kvm) -> Result<CpuId> {
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    set_to(cpuid.as_mut_slice(), TSC_DEADLINE, deadline);
    if host_is_qemu_tcg() && has(cpuid.as_slice(), XSAVE) {
        log::info!(
            "this host runs under QEMU TCG, whose nested SVM does not intercept XSETBV: \
             XSAVE (and with it AVX) is hidden from the guest"
        );
        set_to(cpuid.as_mut_slice(), XSAVE, false);
    }
    Ok(cpuid)
}

/// Whether this machine is a QEMU TCG guest (hypervisor signature "TCGTCGTCGTCG").
fn host_is_qemu_tcg() -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86_64 CPU and only reads; leaves past the maximum
    // return the highest basic leaf's values, which the signature check tells apart.
    let (leaf1, sig) = unsafe {
        (
            std::arch::x86_64::__cpuid(1),
            std::arch::x86_64::__cpuid(0x4000_0000),
        )
    };
    if leaf1.ecx & (1 << HYPERVISOR.bit) == 0 {
        return false;
    }
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&sig.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&sig.ecx.to_le_bytes());
    v[8..].copy_from_slice(&sig.edx.to_le_bytes());
    &v == b"TCGTCGTCGTCG"
}

/// Normalizes KVM's supported CPUID (see [`supported`]) for vCPU `id` of `cpus`. Each choice,
/// leaf by leaf:
///
/// - leaf 1: the initial APIC ID = `id` and the logical-processor count = `cpus` in EBX; HTT
///   when there is more than one vCPU; the hypervisor bit set. CX16 masked: on PVM hosts (the
///   development and CI machines) KVM runs a non-PVM guest in its instruction emulator, which
///   cannot emulate `cmpxchg16b`, and a guest that relies on it dies there (measured; see
///   shared/KVM-FACTS.md). PVM shows the host's leaf-1 feature bits whatever the VMM sets, so
///   guests must not rely on the mask either. MONITOR/MWAIT cleared (KVM runs MWAIT as a NOP
///   and does not let it idle the CPU: a guest would spin). PDCM cleared (no vPMU, so no
///   IA32_PERF_CAPABILITIES). TSC-deadline as [`supported`] found it (KVM's capability).
/// - leaf 4: per cache, the sharing count (L1/L2 private to the core, L3 shared by all
///   vCPUs) and the cores-per-package field, for `cpus` single-threaded cores.
/// - leaf 5 (MONITOR/MWAIT parameters): zeroed with MONITOR.
/// - leaf 6 (thermal and power): only ARAT (EAX bit 2) as KVM reports it (KVM's LAPIC timer
///   keeps running in every guest idle state); turbo, HWP, EPB and the thermal interrupt
///   are the host's business.
/// - leaf 7: WAITPKG cleared (UMWAIT/TPAUSE would put the physical CPU into a low-power
///   state), the XSAVE-related features as below; the rest as KVM reports (ARCH_CAPABILITIES
///   included, unlike Firecracker on AMD: KVM emulates that MSR on every vendor).
/// - leaf 0xA (architectural PMU): zeroed, since this VMM does not offer a vPMU (on Intel,
///   KVM sizes the vPMU from this leaf, so this also switches it off).
/// - leaf 0xB, and 0x1F if present: `cpus` cores of one thread each in one package, the
///   x2APIC ID = `id` in EDX; subleaves 0 and 1 are added if KVM left them out (Linux 6.2+
///   stopped returning host topology there).
/// - leaf 0xD (XSAVE): without XSAVE (which [`supported`] hides on QEMU-TCG hosts), or
///   without leaf 0xD, nothing (XSAVE cleared, leaf zeroed). Otherwise the offered XCR0
///   components are x87, SSE, and each group of `USER_GROUPS` that KVM offers in full,
///   whose feature bit is offered, whose required components are offered and whose
///   subleaves give a layout; anything else (unknown
///   components above bit 9 included) goes. Groups that go take their feature bits along
///   (AVX, AVX-512, PKU, MPX, AMX and what depends on them). 0xD.0 EBX/ECX = the
///   standard-format size of what is offered (at least 576; KVM recomputes EBX from the
///   guest's XCR0 at run time). 0xD.1: XSAVEOPT, XSAVEC, XGETBV1, XSAVES as KVM reports
///   them, XFD only with AMX; IA32_XSS components only with XSAVES and their feature;
///   EBX = the compacted size of XCR0 | XSS (0 without XSAVEC/XSAVES). Subleaves of
///   components not offered are zeroed.
/// - 0x8000_0001: on AMD/Hygon CmpLegacy is set exactly when there are several vCPUs (they
///   are cores, not threads), elsewhere it is cleared; TopologyExtensions only if leaves
///   0x8000_001D and 0x8000_001E are there to back it (they are filled below).
/// - 0x8000_0005/6 (L1/L2 caches and TLBs) and 0x8000_0007 (invariant TSC): as KVM reports.
/// - 0x8000_0008: on AMD/Hygon, ECX NC = `cpus` - 1 and ApicIdSize = the bits of leaf 0xB's
///   core level, so both topologies agree; EAX (address sizes) as KVM reports.
/// - 0x8000_001D (AMD cache topology): sharing counts as leaf 4. 0x8000_001E: extended APIC
///   ID = `id`, core ID = `id`, one thread per core, node 0 of one node.
/// - 0x8000_0026 (AMD extended topology), if present: zeroed; leaf 0xB describes the
///   topology and a guest falls back to it.
/// - KVM's signature leaf 0x40000000 and its feature leaf are kept as KVM reports them.
pub fn normalize(cpuid: &mut CpuId, id: u8, cpus: u8) {
    let cpus = cpus.max(1);
    if max_leaf(cpuid.as_slice(), 0) >= 0xb {
        add_subleaves(cpuid, 0xb, &[0, 1]);
    }
    if cpuid.as_slice().iter().any(|e| e.function == 0x1f) {
        add_subleaves(cpuid, 0x1f, &[0, 1]);
    }
    let c = cpuid.as_mut_slice();
    normalize_features(c);
    normalize_xsave(c);
    normalize_topology(c, id, cpus);
}

/// Adds zeroed, index-significant entries for the missing subleaves `subs` of `leaf`.
fn add_subleaves(cpuid: &mut CpuId, leaf: u32, subs: &[u32]) {
    for &sub in subs {
        if find(cpuid.as_slice(), leaf, sub).is_none() {
            let e = kvm_cpuid_entry2 {
                function: leaf,
                index: sub,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            };
            if cpuid.push(e).is_err() {
                log::warn!("CPUID: no room to add leaf {leaf:#x}.{sub}");
            }
        }
    }
}

/// The vCPU-independent feature choices (see [`normalize`]).
fn normalize_features(c: &mut [kvm_cpuid_entry2]) {
    set_to(c, HYPERVISOR, true);
    set_to(c, CX16, false);
    set_to(c, MONITOR, false);
    set_to(c, PDCM, false);
    zero_leaf(c, 5);
    if let Some(e) = find_mut(c, 6, 0) {
        e.eax &= 1 << 2;
        e.ebx = 0;
        e.ecx = 0;
        e.edx = 0;
    }
    set_to(c, WAITPKG, false);
    zero_leaf(c, 0xa);
    // 0x8000_0026 is described in normalize's list.
    zero_leaf(c, 0x8000_0026);
}

/// Leaf 0xD and the feature bits that go with its components (see [`normalize`]).
fn normalize_xsave(c: &mut [kvm_cpuid_entry2]) {
    let d0 = find(c, 0xd, 0).copied();
    let mut user = 0u64;
    let mut supervisor = 0u64;
    match d0 {
        Some(d0) if has(c, XSAVE) => {
            let reported = u64::from(d0.eax) | (u64::from(d0.edx) << 32);
            user = X87 | SSE;
            for g in &USER_GROUPS {
                if reported & g.components == g.components
                    && has(c, g.feature)
                    && user & g.requires == g.requires
                    && bits(g.components).all(|i| user_layout_ok(c, i))
                {
                    user |= g.components;
                }
            }
            let d1 = find(c, 0xd, 1).copied().unwrap_or_default();
            let reported_xss = u64::from(d1.ecx) | (u64::from(d1.edx) << 32);
            if has(c, XSAVES) {
                for g in &SUPERVISOR_GROUPS {
                    if reported_xss & g.components == g.components
                        && g.any_of.iter().any(|&b| has(c, b))
                        && bits(g.components).all(|i| supervisor_layout_ok(c, i))
                    {
                        supervisor |= g.components;
                    }
                }
            }
            let standard = standard_size(c, user);
            let compacted = compacted_size(c, user | supervisor);
            for e in c.iter_mut().filter(|e| e.function == 0xd) {
                match e.index {
                    0 => {
                        e.eax = user as u32;
                        e.edx = (user >> 32) as u32;
                        e.ebx = standard;
                        e.ecx = standard;
                    }
                    1 => {
                        let mut keep = [XSAVEOPT, XSAVEC, XGETBV1, XSAVES]
                            .iter()
                            .fold(0, |m, b| m | (1 << b.bit));
                        if user & TILEDATA != 0 {
                            keep |= 1 << XFD.bit;
                        }
                        e.eax &= keep;
                        let sizes = (1 << XSAVEC.bit) | (1 << XSAVES.bit);
                        e.ebx = if e.eax & sizes != 0 { compacted } else { 0 };
                        e.ecx = supervisor as u32;
                        e.edx = (supervisor >> 32) as u32;
                    }
                    n if n < 64 && (user | supervisor) & (1 << n) != 0 => {}
                    _ => zero(e),
                }
            }
        }
        _ => {
            set_to(c, XSAVE, false);
            zero_leaf(c, 0xd);
        }
    }
    for g in USER_GROUPS.iter().filter(|g| user & g.components == 0) {
        set_to(c, g.feature, false);
        for &b in g.dependents {
            set_to(c, b, false);
        }
        if g.components & TILEDATA != 0 {
            // The tile palette and TMUL leaves describe AMX only.
            zero_leaf(c, 0x1d);
            zero_leaf(c, 0x1e);
        }
    }
}

/// Bits needed to number `cpus` cores (0 for one).
fn core_bits(cpus: u8) -> u32 {
    32 - (u32::from(cpus.max(1)) - 1).leading_zeros()
}

/// The per-vCPU topology leaves (see [`normalize`]).
fn normalize_topology(c: &mut [kvm_cpuid_entry2], id: u8, cpus: u8) {
    let id32 = u32::from(id);
    let n = u32::from(cpus);
    let amd = is_amd(c);
    let max_ext = max_leaf(c, 0x8000_0000);
    let topoext_backed = max_ext >= 0x8000_001e
        && find(c, 0x8000_001d, 0).is_some()
        && find(c, 0x8000_001e, 0).is_some();
    if let Some(e) = find_mut(c, 1, 0) {
        e.ebx = (e.ebx & 0x0000_ffff) | (id32 << 24) | (n << 16);
    }
    set_to(c, HTT, cpus > 1);
    set_to(c, CMP_LEGACY, amd && cpus > 1);
    if !topoext_backed {
        set_to(c, TOPOEXT, false);
    }
    for e in c.iter_mut() {
        match e.function {
            4 | 0x8000_001d if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | (sharing << 14);
                if e.function == 4 {
                    e.eax |= (n - 1).min(63) << 26;
                }
            }
            0xb | 0x1f => {
                e.edx = id32;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = core_bits(cpus);
                        e.ebx = n;
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i & 0xff;
                    }
                }
            }
            0x8000_0008 if amd => {
                e.ecx = (e.ecx & !0xf0ff) | (core_bits(cpus) << 12) | (n - 1);
            }
            0x8000_001e => {
                e.eax = id32;
                e.ebx = id32 & 0xff;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

/// The entries `normalized` changed or added relative to `base`, one line each (for the
/// debug log: `RUST_LOG=vmm::cpuid=debug`).
pub fn changes(base: &CpuId, normalized: &CpuId) -> Vec<String> {
    let regs =
        |e: &kvm_cpuid_entry2| format!("{:08x} {:08x} {:08x} {:08x}", e.eax, e.ebx, e.ecx, e.edx);
    normalized
        .as_slice()
        .iter()
        .filter_map(|n| match find(base.as_slice(), n.function, n.index) {
            Some(b) if b == n => None,
            Some(b) => Some(format!(
                "{:#010x}.{}: {} -> {}",
                n.function,
                n.index,
                regs(b),
                regs(n)
            )),
            None => Some(format!(
                "{:#010x}.{}: added {}",
                n.function,
                n.index,
                regs(n)
            )),
        })
        .collect()
}

/// What is wrong with a normalized set for vCPU `id` of `cpus`: empty when every invariant
/// that [`normalize`] establishes holds. Each entry names the leaf and the rule.
pub fn inconsistencies(cpuid: &CpuId, id: u8, cpus: u8) -> Vec<String> {
    let c = cpuid.as_slice();
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    let n = u32::from(cpus.max(1));
    // Leaf 1.
    if let Some(e) = find(c, 1, 0) {
        check(
            e.ebx >> 24 == u32::from(id),
            format!("1.EBX APIC ID {:#x}", e.ebx),
        );
        check(
            (e.ebx >> 16) & 0xff == n,
            format!("1.EBX count {:#x}", e.ebx),
        );
        check(has(c, HTT) == (n > 1), "1.EDX HTT".into());
        for (b, want) in [
            (HYPERVISOR, true),
            (CX16, false),
            (MONITOR, false),
            (PDCM, false),
        ] {
            check(
                has(c, b) == want,
                format!("leaf 1: {} should be {want}", b.name),
            );
        }
    }
    check(!has(c, WAITPKG), "7.0.ECX WAITPKG".into());
    for e in c
        .iter()
        .filter(|e| matches!(e.function, 5 | 0xa | 0x8000_0026))
    {
        check(
            (e.eax, e.ebx, e.ecx, e.edx) == (0, 0, 0, 0),
            format!("leaf {:#x} should be zero", e.function),
        );
    }
    if let Some(e) = find(c, 6, 0) {
        check(
            e.eax & !4 == 0 && e.ebx == 0 && e.ecx == 0 && e.edx == 0,
            "leaf 6: only ARAT".into(),
        );
    }
    xsave_inconsistencies(c, &mut check);
    topology_inconsistencies(c, id, cpus, &mut check);
    bad
}

/// The topology invariants (leaves 0xB, 4, AMD's 0x8000_0001/0x8000_0008/0x8000_001E) for
/// vCPU `id` of `cpus`.
fn topology_inconsistencies(
    c: &[kvm_cpuid_entry2],
    id: u8,
    cpus: u8,
    check: &mut impl FnMut(bool, String),
) {
    let n = u32::from(cpus.max(1));
    if max_leaf(c, 0) >= 0xb {
        for (sub, eax, ebx, ecx) in [(0, 0, 1, 1 << 8), (1, core_bits(cpus), n, (2 << 8) | 1)] {
            let ok = find(c, 0xb, sub).is_some_and(|e| {
                (e.eax, e.ebx, e.ecx, e.edx) == (eax, ebx, ecx, u32::from(id))
                    && e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0
            });
            check(ok, format!("leaf 0xb.{sub}"));
        }
    }
    for e in c.iter().filter(|e| e.function == 4 && e.eax & 0x1f != 0) {
        let level = (e.eax >> 5) & 7;
        let sharing = if level >= 3 { n - 1 } else { 0 };
        check(
            (e.eax >> 14) & 0xfff == sharing && e.eax >> 26 == (n - 1).min(63),
            format!("leaf 4.{}: {:#x}", e.index, e.eax),
        );
    }
    if is_amd(c) {
        check(
            has(c, CMP_LEGACY) == (n > 1),
            "0x8000_0001 CmpLegacy".into(),
        );
        if let Some(e) = find(c, 0x8000_0008, 0) {
            check(
                e.ecx & 0xff == n - 1 && (e.ecx >> 12) & 0xf == core_bits(cpus),
                format!("0x8000_0008.ECX {:#x}", e.ecx),
            );
        }
    }
    if has(c, TOPOEXT) {
        let ok = find(c, 0x8000_001e, 0).is_some_and(|e| e.eax == u32::from(id));
        check(
            ok,
            "TopologyExtensions without 0x8000_001E for this vCPU".into(),
        );
    }
}

/// The leaf-0xD invariants.
fn xsave_inconsistencies(c: &[kvm_cpuid_entry2], check: &mut impl FnMut(bool, String)) {
    let d0 = find(c, 0xd, 0).copied().unwrap_or_default();
    let d1 = find(c, 0xd, 1).copied().unwrap_or_default();
    let user = u64::from(d0.eax) | (u64::from(d0.edx) << 32);
    if !has(c, XSAVE) {
        for e in c.iter().filter(|e| e.function == 0xd) {
            check(
                (e.eax, e.ebx, e.ecx, e.edx) == (0, 0, 0, 0),
                format!("no XSAVE but 0xd.{} is not zero", e.index),
            );
        }
    } else {
        xsave_state_inconsistencies(c, &d0, &d1, check);
    }
    // Feature bits and state agree both ways.
    for g in &USER_GROUPS {
        let on = user & g.components;
        check(
            on == 0 || on == g.components,
            format!("0xd.0: part of group {:#x}", g.components),
        );
        check(
            has(c, g.feature) == (on != 0),
            format!("{} and its state disagree", g.feature.name),
        );
        if on == 0 {
            for b in g.dependents {
                check(
                    !has(c, *b),
                    format!("{} without {}", b.name, g.feature.name),
                );
            }
        }
    }
}

/// The leaf-0xD invariants of a set that offers XSAVE: components, sizes, layouts and
/// the supervisor (IA32_XSS) state.
fn xsave_state_inconsistencies(
    c: &[kvm_cpuid_entry2],
    d0: &kvm_cpuid_entry2,
    d1: &kvm_cpuid_entry2,
    check: &mut impl FnMut(bool, String),
) {
    let user = u64::from(d0.eax) | (u64::from(d0.edx) << 32);
    let supervisor = u64::from(d1.ecx) | (u64::from(d1.edx) << 32);
    check(user & (X87 | SSE) == X87 | SSE, "0xd.0: x87 and SSE".into());
    let known = USER_GROUPS.iter().fold(X87 | SSE, |m, g| m | g.components);
    check(
        user & !known == 0,
        format!("0xd.0: unknown components {user:#x}"),
    );
    let std = standard_size(c, user);
    check(
        d0.ebx == std && d0.ecx == std && std >= XSAVE_MIN,
        format!(
            "0xd.0 sizes {}/{} for {user:#x}, want {std}",
            d0.ebx, d0.ecx
        ),
    );
    for i in bits(user & !(X87 | SSE)) {
        check(user_layout_ok(c, i), format!("0xd.{i}: no layout"));
    }
    let known_xss = SUPERVISOR_GROUPS.iter().fold(0, |m, g| m | g.components);
    check(
        supervisor & !known_xss == 0 && (supervisor == 0 || has(c, XSAVES)),
        format!("0xd.1 IA32_XSS {supervisor:#x}"),
    );
    for g in &SUPERVISOR_GROUPS {
        let on = supervisor & g.components;
        check(
            on == 0 || (on == g.components && g.any_of.iter().any(|&b| has(c, b))),
            format!("0xd.1: XSS group {:#x} without its feature", g.components),
        );
    }
    let mut allowed = [XSAVEOPT, XSAVEC, XGETBV1, XSAVES]
        .iter()
        .fold(0, |m, b| m | (1 << b.bit));
    if user & TILEDATA != 0 {
        allowed |= 1 << XFD.bit;
    }
    check(d1.eax & !allowed == 0, format!("0xd.1.EAX {:#x}", d1.eax));
    let want = if has(c, XSAVEC) || has(c, XSAVES) {
        compacted_size(c, user | supervisor)
    } else {
        0
    };
    check(d1.ebx == want, format!("0xd.1.EBX {} want {want}", d1.ebx));
    for e in c.iter().filter(|e| e.function == 0xd && e.index >= 2) {
        let offered = e.index < 64 && (user | supervisor) & (1 << e.index) != 0;
        check(
            offered || (e.eax, e.ebx, e.ecx, e.edx) == (0, 0, 0, 0),
            format!("0xd.{} of a component not offered", e.index),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if matches!(function, 4 | 7 | 0xb | 0xd | 0x8000_001d) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
            ..Default::default()
        }
    }

    /// The Intel standard-format layout: (component, size, offset, ECX).
    const LAYOUT: [(u32, u32, u32, u32); 12] = [
        (2, 256, 576, 0),
        (3, 64, 960, 0),
        (4, 64, 1024, 0),
        (5, 64, 1088, 0),
        (6, 512, 1152, 0),
        (7, 1024, 1664, 0),
        (8, 128, 0, 1),
        (9, 8, 2688, 0),
        (11, 16, 0, 1),
        (12, 24, 0, 1),
        (17, 64, 2752, 2),
        (18, 8192, 2816, 2),
    ];

    /// What a synthetic CPU reports: leaf 1 ECX, leaf 7.0 EBX/ECX/EDX, 0xD.0 EAX, 0xD.1
    /// EAX and ECX.
    #[derive(Clone, Copy)]
    struct Host {
        l1_ecx: u32,
        l7: [u32; 3],
        xcr0: u32,
        d1_eax: u32,
        xss: u32,
        amd: bool,
    }

    fn build(h: Host) -> CpuId {
        let vendor: &[u8; 12] = if h.amd {
            b"AuthenticAMD"
        } else {
            b"GenuineIntel"
        };
        let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        let mut v = vec![
            entry(0, 0, [0xd, w(0), w(8), w(4)]),
            // A host with 2 threads per core: 16 logical processors, APIC ID 5.
            entry(1, 0, [0x806f8, 0x0510_0800, h.l1_ecx, 0x178b_fbff]),
            entry(4, 0, [0x1c00_4121, 0, 0, 0]),
            entry(4, 1, [0x1c00_4163, 0, 0, 0]),
            entry(4, 2, [0x1c03_c143, 0, 0, 0]),
            entry(4, 3, [0x1c0f_c163, 0, 0, 0]),
            entry(4, 4, [0, 0, 0, 0]),
            entry(5, 0, [0x40, 0x40, 3, 0x1120]),
            entry(6, 0, [0x77, 2, 9, 0]),
            entry(7, 0, [1, h.l7[0], h.l7[1], h.l7[2]]),
            entry(7, 1, [(1 << 4) | (1 << 5) | (1 << 21), 0, 0, 0]),
            entry(0xa, 0, [0x0703_0805, 0, 0, 0x603]),
            entry(0xb, 0, [1, 2, 0x100, 5]),
            entry(0xd, 0, [h.xcr0, 2696, 2696, 0]),
            entry(0xd, 1, [h.d1_eax, 2700, h.xss, 0]),
            entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, (1 << 1) | (1 << 11) | (1 << 22), 0]),
            entry(0x8000_0008, 0, [0x3030, 0, 0x3007, 0]),
        ];
        for (i, size, off, ecx) in LAYOUT {
            let on = (u64::from(h.xcr0) | u64::from(h.xss)) & (1 << i) != 0;
            if on {
                v.push(entry(0xd, i, [size, off, ecx, 0]));
            }
        }
        CpuId::from_entries(&v).unwrap()
    }

    fn get(c: &CpuId, leaf: u32, sub: u32) -> kvm_cpuid_entry2 {
        *find(c.as_slice(), leaf, sub).unwrap()
    }

    const ALL_XSAVE_D1: u32 = 0xf;

    fn assert_consistent(c: &CpuId, id: u8, cpus: u8) {
        let bad = inconsistencies(c, id, cpus);
        assert!(bad.is_empty(), "inconsistent: {bad:#?}");
    }

    /// The Debian 6.1 guest's `XSAVE consistency problem: size 2696 != kernel_size 576`:
    /// leaf 0xD offers x87, SSE, AVX, the AVX-512 state and PKRU; no feature bit backs them.
    #[test]
    fn state_without_feature_bits_is_dropped() {
        let host = Host {
            l1_ecx: 1 << 26, // XSAVE, no AVX
            l7: [0, 0, 0],   // no AVX512F, no PKU
            xcr0: 0x2e7,
            d1_eax: 0x7,
            xss: 0,
            amd: true,
        };
        let mut c = build(host);
        normalize(&mut c, 0, 1);
        let d0 = get(&c, 0xd, 0);
        assert_eq!(d0.eax, 0x3, "only x87 | SSE");
        assert_eq!(d0.edx, 0);
        assert_eq!((d0.ebx, d0.ecx), (576, 576));
        for i in [2, 5, 6, 7, 9] {
            let s = get(&c, 0xd, i);
            assert_eq!((s.eax, s.ebx, s.ecx, s.edx), (0, 0, 0, 0), "0xd.{i} zeroed");
        }
        let d1 = get(&c, 0xd, 1);
        assert_eq!(d1.eax, 0x7, "XSAVEOPT, XSAVEC, XGETBV1 as reported");
        assert_eq!(
            d1.ebx, 576,
            "compacted size of x87 | SSE, not the stale 2700"
        );
        assert!(has(c.as_slice(), XSAVE));
        assert_consistent(&c, 0, 1);
    }

    /// With AVX backed by its feature bit the size comes from subleaf 2: 576 + 256.
    #[test]
    fn avx_state_with_its_bit_is_kept_and_sized() {
        let host = Host {
            l1_ecx: (1 << 26) | (1 << 28) | (1 << 12),
            l7: [1 << 5, 0, 0], // AVX2
            xcr0: 0x2e7,
            d1_eax: 0xf,
            xss: 0,
            amd: false,
        };
        let mut c = build(host);
        normalize(&mut c, 1, 2);
        let d0 = get(&c, 0xd, 0);
        assert_eq!(d0.eax, 0x7, "x87 | SSE | AVX");
        assert_eq!((d0.ebx, d0.ecx), (832, 832));
        assert_eq!(get(&c, 0xd, 2).eax, 256, "subleaf 2 kept");
        assert_eq!(get(&c, 0xd, 9).eax, 0, "PKRU's subleaf zeroed");
        assert_eq!(get(&c, 0xd, 1).ebx, 832);
        assert!(has(c.as_slice(), AVX) && has(c.as_slice(), AVX2) && has(c.as_slice(), FMA));
        assert_consistent(&c, 1, 2);
    }

    /// Everything offered: the full 2696-byte standard area, compacted size with alignment.
    #[test]
    fn everything_backed_is_kept() {
        let host = Host {
            l1_ecx: (1 << 26) | (1 << 28),
            l7: [(1 << 14) | (1 << 16), 1 << 3, 0],
            xcr0: 0x2ff,
            d1_eax: ALL_XSAVE_D1,
            xss: 0,
            amd: false,
        };
        let mut c = build(host);
        normalize(&mut c, 0, 1);
        let d0 = get(&c, 0xd, 0);
        assert_eq!(d0.eax, 0x2ff);
        assert_eq!((d0.ebx, d0.ecx), (2696, 2696));
        // Compacted: 576 + 256 + 64 + 64 + 64 + 512 + 1024 + 8 = 2568.
        assert_eq!(get(&c, 0xd, 1).ebx, 2568);
        assert_consistent(&c, 0, 1);
    }

    #[test]
    fn no_xsave_means_no_leaf_0xd_and_no_avx() {
        let host = Host {
            l1_ecx: 1 << 28,
            l7: [(1 << 5) | (1 << 16), 1 << 3, 0],
            xcr0: 0x2e7,
            d1_eax: 0xf,
            xss: 0,
            amd: false,
        };
        let mut c = build(host);
        normalize(&mut c, 0, 1);
        assert!(c
            .as_slice()
            .iter()
            .filter(|e| e.function == 0xd)
            .all(|e| (e.eax, e.ebx, e.ecx, e.edx) == (0, 0, 0, 0)));
        for b in [AVX, AVX2, AVX512F, PKU] {
            assert!(!has(c.as_slice(), b), "{} cleared", b.name);
        }
        assert_consistent(&c, 0, 1);
    }

    /// AMX and the supervisor components follow the same rules.
    #[test]
    fn amx_and_supervisor_state() {
        let host = Host {
            l1_ecx: (1 << 26) | (1 << 28),
            l7: [0, 1 << 7, (1 << 24) | (1 << 22)],
            xcr0: 0x6_0007,
            d1_eax: 0x1f,
            xss: (1 << 11) | (1 << 12) | (1 << 8),
            amd: false,
        };
        let mut c = build(host);
        normalize(&mut c, 0, 1);
        let d0 = get(&c, 0xd, 0);
        assert_eq!(d0.eax, 0x6_0007, "AMX kept with AMX-TILE");
        assert_eq!(d0.ebx, 2816 + 8192);
        let d1 = get(&c, 0xd, 1);
        assert_eq!(d1.eax, 0x1f, "XFD kept with AMX");
        assert_eq!(
            d1.ecx,
            (1 << 11) | (1 << 12),
            "CET kept, PT dropped (no PT bit)"
        );
        assert_eq!(get(&c, 0xd, 8).eax, 0);
        // 576 + 256 = 832, CET_U 16, CET_S 24 = 872, aligned 896 + 64 = 960, + 8192.
        assert_eq!(d1.ebx, 960 + 8192);
        assert_consistent(&c, 0, 1);

        // Without XSAVES no supervisor state; without AMX-TILE no tiles, no XFD.
        let mut c = build(Host {
            d1_eax: 0x7,
            l7: [0, 1 << 7, 1 << 22],
            ..host
        });
        normalize(&mut c, 0, 1);
        assert_eq!(get(&c, 0xd, 0).eax, 0x7);
        let d1 = get(&c, 0xd, 1);
        assert_eq!((d1.eax, d1.ecx, d1.ebx), (0x7, 0, 832));
        assert!(!has(c.as_slice(), AMX_BF16));
        assert_consistent(&c, 0, 1);
    }

    /// Every combination of feature bits and offered components normalizes to a consistent
    /// set.
    #[test]
    fn every_combination_normalizes_consistently() {
        // Feature bits: XSAVE, AVX, MPX, AVX512F, PKU, AMX-TILE, CET-SS, XSAVES.
        let features = [XSAVE, AVX, MPX, AVX512F, PKU, AMX_TILE, CET_SS, XSAVES];
        // Components KVM might report: YMM, BNDREGS, BNDCSR, opmask, ZMM_Hi256, Hi16_ZMM,
        // PKRU, tile cfg, tile data, and an unknown bit 19.
        let comps = [2u32, 3, 4, 5, 6, 7, 9, 17, 18, 19];
        let mut checked = 0;
        for f in 0..(1u32 << features.len()) {
            for m in 0..(1u32 << comps.len()) {
                let xcr0 = comps
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| m & (1 << k) != 0)
                    .fold(0x3, |x, (_, &i)| x | (1 << i));
                let mut c = build(Host {
                    l1_ecx: 0,
                    l7: [0, 0, 0],
                    xcr0,
                    d1_eax: (1 << 1) | (m & 1),
                    xss: (1 << 11) | (1 << 12),
                    amd: m & 2 != 0,
                });
                for (k, &b) in features.iter().enumerate() {
                    set_to(c.as_mut_slice(), b, f & (1 << k) != 0);
                }
                let cpus = (m % 5 + 1) as u8;
                let id = (f % u32::from(cpus)) as u8;
                normalize(&mut c, id, cpus);
                let bad = inconsistencies(&c, id, cpus);
                assert!(bad.is_empty(), "features {f:#b} xcr0 {xcr0:#x}: {bad:#?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 1 << 18);
    }

    #[test]
    fn topology_for_each_vcpu() {
        let host = Host {
            l1_ecx: 0,
            l7: [0, 0, 0],
            xcr0: 3,
            d1_eax: 0,
            xss: 0,
            amd: true,
        };
        for cpus in [1u8, 2, 3, 8, 254] {
            for id in [0, cpus / 2, cpus - 1] {
                let mut c = build(host);
                normalize(&mut c, id, cpus);
                assert_consistent(&c, id, cpus);
                let b1 = get(&c, 0xb, 1);
                assert_eq!(b1.ebx, u32::from(cpus));
                assert!(
                    1u32 << b1.eax >= u32::from(cpus),
                    "shift covers the APIC IDs"
                );
                assert_eq!(get(&c, 1, 0).ebx >> 24, u32::from(id));
                assert_eq!(get(&c, 0x8000_0008, 0).ecx & 0xff, u32::from(cpus) - 1);
                // No 0x8000_001D/1E here: TopologyExtensions cannot stand.
                assert!(!has(c.as_slice(), TOPOEXT));
                // The host's CmpLegacy follows the vCPU count.
                assert_eq!(has(c.as_slice(), CMP_LEGACY), cpus > 1);
                // Leaf 4: L3 shared by all, L1/L2 private.
                assert_eq!((get(&c, 4, 3).eax >> 14) & 0xfff, u32::from(cpus) - 1);
                assert_eq!((get(&c, 4, 0).eax >> 14) & 0xfff, 0);
                assert_eq!(get(&c, 4, 4).eax, 0, "the terminator stays");
            }
        }
    }

    #[test]
    fn leaves_a_vm_must_not_see() {
        let mut c = build(Host {
            l1_ecx: (1 << 3) | (1 << 13) | (1 << 15),
            l7: [0, 1 << 5, 0],
            xcr0: 3,
            d1_eax: 0,
            xss: 0,
            amd: false,
        });
        normalize(&mut c, 0, 1);
        let s = c.as_slice();
        for b in [MONITOR, CX16, PDCM, WAITPKG, CMP_LEGACY] {
            assert!(!has(s, b), "{} cleared", b.name);
        }
        assert!(has(s, HYPERVISOR));
        assert_eq!(get(&c, 0xa, 0).eax, 0);
        assert_eq!(get(&c, 5, 0).eax, 0);
        assert_eq!(get(&c, 6, 0).eax, 4, "only ARAT");
        assert_consistent(&c, 0, 1);
    }

    /// The real KVM_GET_SUPPORTED_CPUID, normalized, keeps every invariant, and KVM accepts it.
    #[test]
    fn real_kvm_supported_cpuid_normalizes_consistently() {
        let kvm = match Kvm::new() {
            Ok(k) => k,
            Err(e) if std::env::var_os("VMM_TESTS_ALLOW_NO_KVM").is_some() => {
                eprintln!("skipped: /dev/kvm: {e}");
                return;
            }
            Err(e) => panic!("/dev/kvm: {e}; set VMM_TESTS_ALLOW_NO_KVM=1 to skip"),
        };
        let base = supported(&kvm).unwrap();
        let vm = kvm.create_vm().unwrap();
        let cpus = 2u8;
        for id in 0..cpus {
            let mut c = base.clone();
            normalize(&mut c, id, cpus);
            assert_consistent(&c, id, cpus);
            let vcpu = vm.create_vcpu(u64::from(id)).unwrap();
            vcpu.set_cpuid2(&c).unwrap();
        }
    }
}
