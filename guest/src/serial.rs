//! The console: COM1, a 16550A at 0x3f8, polled (the guest runs with interrupts off).
//!
//! Output goes in bursts: when LSR.THRE says the transmit FIFO is empty, up to 16 bytes are
//! written before LSR is read again, as the 16550A's FIFO allows. Every port access is a VM
//! exit (about 9 us on PVM), so this halves the exits per byte. `\n` is sent as `\r\n`.

use crate::arch::{inb, outb, pause};
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

const COM1: u16 = 0x3f8;
const RBR_THR: u16 = COM1; // receive buffer / transmit holding (DLAB 0); divisor low (DLAB 1)
const IER: u16 = COM1 + 1; // interrupt enable (DLAB 0); divisor high (DLAB 1)
const FCR: u16 = COM1 + 2;
const LCR: u16 = COM1 + 3;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;

const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const FIFO_DEPTH: u32 = 16;
/// LSR reads to wait for THRE before writing anyway (a UART that never drains must not
/// hang the guest).
const THRE_POLLS: u32 = 100_000;

/// Programs COM1: 115200 baud (divisor 1), 8N1, FIFOs on and cleared, interrupts off, DTR|RTS.
pub fn init() {
    outb(IER, 0x00);
    outb(LCR, 0x80);
    outb(RBR_THR, 0x01);
    outb(IER, 0x00);
    outb(LCR, 0x03);
    outb(FCR, 0x07);
    outb(MCR, 0x03);
}

/// A byte from the receive buffer, if one is ready.
pub fn try_read() -> Option<u8> {
    if inb(LSR) & LSR_DR != 0 {
        Some(inb(RBR_THR))
    } else {
        None
    }
}

/// The console: a spin lock around the UART's transmit side.
pub struct Console {
    locked: AtomicBool,
    /// Bytes that may still be written without reading LSR (guarded by `locked`).
    room: UnsafeCell<u32>,
}

// SAFETY: `room` is only touched through a `ConsoleGuard`, which exists only while `locked`
// is held (or, on the panic path, after the lock was forcibly taken over).
unsafe impl Sync for Console {}

static CONSOLE: Console = Console {
    locked: AtomicBool::new(false),
    room: UnsafeCell::new(0),
};

/// Exclusive use of the console until dropped.
pub struct ConsoleGuard {
    _private: (),
}

/// Takes the console lock, spinning.
pub fn lock() -> ConsoleGuard {
    while CONSOLE
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        pause();
    }
    ConsoleGuard { _private: () }
}

/// Takes the console lock for a panic or exception report: spins for a while, then takes it
/// over (the holder may be this very CPU, interrupted while printing).
pub fn lock_for_crash() -> ConsoleGuard {
    for _ in 0..1_000_000 {
        if CONSOLE
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return ConsoleGuard { _private: () };
        }
        pause();
    }
    CONSOLE.locked.swap(true, Ordering::Acquire);
    ConsoleGuard { _private: () }
}

impl ConsoleGuard {
    fn put(&mut self, byte: u8) {
        // SAFETY: this guard stands for the console lock, so nothing else uses `room`.
        let room = unsafe { &mut *CONSOLE.room.get() };
        if *room == 0 {
            let mut polls = 0;
            while inb(LSR) & LSR_THRE == 0 && polls < THRE_POLLS {
                pause();
                polls += 1;
            }
            *room = FIFO_DEPTH;
        }
        outb(RBR_THR, byte);
        *room -= 1;
    }

    /// Writes raw bytes (no newline translation).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.put(b);
        }
    }
}

impl fmt::Write for ConsoleGuard {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        CONSOLE.locked.store(false, Ordering::Release);
    }
}

/// Prints a line to the console (CRLF), holding the lock for the whole line.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut console = $crate::serial::lock();
        let _ = writeln!(console, $($arg)*);
    }};
}

/// Prints to the console without a newline.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut console = $crate::serial::lock();
        let _ = write!(console, $($arg)*);
    }};
}
