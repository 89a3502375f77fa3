//! Per-vCPU architectural set-up: CPUID, MSRs, the local APIC, and the BSP's 64-bit entry
//! state (segments, control registers, RIP/RSI) as the Linux 64-bit boot protocol asks.

use crate::error::{kvm, Result};
use crate::x86_64::layout::{BOOT_STACK, GDT, PML4, ZERO_PAGE};
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// The boot MSRs: SYSENTER/SYSCALL state cleared, TSC 0, fast strings on, MTRRs enabled with
/// write-back as the default type.
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, 1),
        (MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
    ]
}

/// Sets up vCPU `id` of `cpus`: CPUID, MSRs and LAPIC for all; the entry state for the BSP.
pub fn setup(vcpu: &VcpuFd, base_cpuid: &CpuId, id: u8, cpus: u8, entry: u64) -> Result<()> {
    let mut cpuid = base_cpuid.clone();
    crate::x86_64::cpuid::normalize(&mut cpuid, id, cpus);
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;

    let entries: Vec<kvm_msr_entry> = boot_msrs()
        .into_iter()
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| crate::error::Error::Kvm {
        what: "building the MSR list",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;

    setup_lapic(vcpu)?;
    if id == 0 {
        setup_boot_state(vcpu, entry)?;
    }
    Ok(())
}

/// LINT0 as ExtINT (the 8259's output) and LINT1 as NMI, as firmware leaves them.
fn setup_lapic(vcpu: &VcpuFd) -> Result<()> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const EXTINT: u32 = 7 << 8;
    const NMI: u32 = 4 << 8;
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    let mut set = |off: usize, mode: u32| {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = lapic.regs[off + i] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | mode;
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *x as _;
        }
    };
    set(LVT_LINT0, EXTINT);
    set(LVT_LINT1, NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    Ok(())
}

fn segment(selector: u16, type_: u8, code64: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: if code64 { 0 } else { 1 },
        s: 1,
        l: if code64 { 1 } else { 0 },
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The 64-bit boot protocol's entry state: long mode with paging, CS = 0x10, the data
/// segments = 0x18, RSI = the zero page, interrupts off.
fn setup_boot_state(vcpu: &VcpuFd, entry: u64) -> Result<()> {
    let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    sregs.gdt.base = GDT;
    sregs.gdt.limit = (crate::x86_64::boot::GDT_ENTRIES.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = segment(0x10, 0xb, true);
    let data = segment(0x18, 0x3, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        selector: 0x20,
        type_: 0xb,
        s: 0,
        limit: 0xffff,
        ..segment(0x20, 0xb, false)
    };
    sregs.tr.db = 0;
    sregs.tr.g = 0;
    // PE | MP | ET | NE | WP | PG
    sregs.cr0 = 0x8001_0033;
    sregs.cr3 = PML4;
    sregs.cr4 = 0x20; // PAE
    sregs.efer = 0x500; // LME | LMA
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rip: entry,
        rsi: ZERO_PAGE,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
    Ok(())
}

/// A one-screen register dump for diagnostics.
pub fn dump(vcpu: &VcpuFd) -> String {
    let mut s = String::new();
    if let Ok(r) = vcpu.get_regs() {
        s += &format!(
            "  rip {:#018x} rsp {:#018x} rflags {:#010x}\n  rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n  rsi {:#018x} rdi {:#018x} rbp {:#018x}\n  r8  {:#018x} r9  {:#018x} r10 {:#018x} r11 {:#018x}\n  r12 {:#018x} r13 {:#018x} r14 {:#018x} r15 {:#018x}\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8,
            r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15
        );
    }
    if let Ok(sr) = vcpu.get_sregs() {
        s += &format!(
            "  cr0 {:#010x} cr2 {:#018x} cr3 {:#018x} cr4 {:#010x} efer {:#x}\n  cs {:#06x} ss {:#06x} gdt {:#x}/{:#x} idt {:#x}/{:#x}\n",
            sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer, sr.cs.selector, sr.ss.selector,
            sr.gdt.base, sr.gdt.limit, sr.idt.base, sr.idt.limit
        );
    }
    s
}
