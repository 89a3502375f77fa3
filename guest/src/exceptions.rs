//! What the IDT's stubs (entry.s) call: print the vector and the registers, signal pvpanic,
//! halt. The guest runs with interrupts off, so any vector that arrives is a crash.

use crate::serial;
use core::fmt::Write;

/// The stack at `isr_common`'s call: the general registers it pushed, the stub's vector and
/// error code (0 where the CPU pushes none), then the CPU's frame.
#[repr(C)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The mnemonic of an exception vector.
pub fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        9 => "coprocessor segment overrun",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        28 => "#HV",
        29 => "#VC",
        30 => "#SX",
        _ if vector < 32 => "reserved",
        _ => "interrupt",
    }
}

/// Called by entry.s `isr_common` with the saved frame; never returns.
#[no_mangle]
pub extern "C" fn guest_exception(f: &Frame) -> ! {
    let cr2 = crate::arch::read_cr2();
    let apic_id = crate::arch::cpuid(1).1 >> 24;
    {
        let mut c = serial::lock_for_crash();
        let _ = writeln!(
            c,
            "rvmm-guest: exception {} ({}) error {:#x} on apic id {}",
            f.vector,
            vector_name(f.vector),
            f.error,
            apic_id
        );
        let _ = writeln!(
            c,
            "rvmm-guest: rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x} cr2 {:#x}",
            f.rip, f.cs, f.rflags, f.rsp, f.ss, cr2
        );
        let _ = writeln!(
            c,
            "rvmm-guest: rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
            f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp
        );
        let _ = writeln!(
            c,
            "rvmm-guest: r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x} r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
            f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15
        );
    }
    crate::pvpanic_halt()
}
