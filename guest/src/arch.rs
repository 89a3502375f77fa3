//! x86_64 instructions the guest needs: port I/O, MSRs, control registers, the TSC, halting.

use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O touches no memory of this program; the guest owns the machine.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes a word to an I/O port.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a dword to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a dword to an I/O port that starts work on guest memory (a doorbell): unlike
/// [`outl`], the compiler must assume the `out` reads and writes memory, so every store
/// before it is done before it and every load after it is done after it.
pub fn outl_doorbell(port: u16, value: u32) {
    // SAFETY: as for `outb`; the missing `nomem` only makes the compiler more careful.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    }
}

/// Reads a dword from an I/O port.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called for architectural MSRs (APIC base, EFER) that exist on every
    // x86_64 CPU; reading them has no side effect.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The time-stamp counter: a monotonic count only (on PVM `rdtsc` traps; never `rdtscp`).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter and has no side effect.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR3: the page-table root.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// CR2: the last page-fault address.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}

/// CPUID leaf `leaf`, subleaf 0: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    // SAFETY: cpuid is available on every x86_64 CPU and has no side effect. (Newer Rust
    // declares `__cpuid_count` safe; older releases, back to rust-version, need the block.)
    #[allow(unused_unsafe)]
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, 0) };
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// A spin-loop hint.
pub fn pause() {
    core::hint::spin_loop();
}

extern "C" {
    fn halt_forever() -> !;
    fn triple_fault() -> !;
}

/// Interrupts off, then `hlt` forever.
pub fn halt() -> ! {
    // SAFETY: halt_forever (entry.s) takes no arguments, touches no memory and never returns.
    unsafe { halt_forever() }
}

/// Executes `ud2`: #UD through the guest's IDT (the exception report, then pvpanic).
pub fn raise_invalid_opcode() -> ! {
    // SAFETY: ud2 raises #UD, whose handler never returns; nothing else is touched.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// Loads an empty IDT and raises #UD: the CPU shuts down (entry.s `triple_fault`).
pub fn raise_triple_fault() -> ! {
    // SAFETY: triple_fault (entry.s) never returns: the VM ends in a shutdown.
    unsafe { triple_fault() }
}
