//! Raw terminal mode for the serial console, restored on every way out.
//!
//! When standard input is a terminal, the VMM puts it in raw mode so that keys reach the
//! guest as typed (Ctrl-C included; Ctrl-A x quits, as in QEMU). The saved settings are
//! restored when the guard drops — on a normal return and on SIGINT/SIGTERM, which the VMM
//! turns into a normal return — and by a panic hook, so a crash never leaves the user's
//! terminal raw.
//!
//! Hand-written rather than vmm-sys-util's `Terminal`: that trait's raw mode clears only
//! `ICANON | ECHO | ISIG` (Ctrl-S/Ctrl-Q flow control, Ctrl-V and CR-to-NL translation would
//! stay on) and its way back sets canonical flags instead of restoring the saved settings,
//! which the console test checks flag for flag. Here `cfmakeraw` gives full raw input (output
//! post-processing kept) and the exact saved `termios` is put back.

use std::sync::Mutex;

static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Restores the terminal when dropped.
pub struct RawTerminal(());

fn restore() {
    if let Ok(mut saved) = SAVED.lock() {
        if let Some(t) = saved.take() {
            // SAFETY: `t` is a termios previously filled by tcgetattr for fd 0.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

impl RawTerminal {
    /// Switches standard input to raw mode if it is a terminal; `None` otherwise.
    pub fn enter() -> Option<RawTerminal> {
        if !stdin_is_tty() {
            return None;
        }
        // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked above); `t` is a valid termios.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return None;
        }
        *SAVED.lock().ok()? = Some(t);
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev(info);
        }));
        let mut raw = t;
        // SAFETY: cfmakeraw only edits the struct.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so the host terminal still turns \n into \r\n.
        raw.c_oflag = t.c_oflag;
        // SAFETY: fd 0 is a terminal; `raw` is a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) };
        Some(RawTerminal(()))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Recognizes Ctrl-A x (quit) and Ctrl-A Ctrl-A (a literal Ctrl-A) in the input stream.
#[derive(Default)]
pub struct Escape {
    armed: bool,
}

/// What the escape parser says about the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes for the guest.
    Data(Vec<u8>),
    /// The user asked to quit (Ctrl-A x); bytes before it are for the guest.
    Quit(Vec<u8>),
}

impl Escape {
    /// Filters `buf`: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A + other is
    /// dropped with the Ctrl-A.
    pub fn filter(&mut self, buf: &[u8]) -> Input {
        let mut out = Vec::with_capacity(buf.len());
        for &b in buf {
            if self.armed {
                self.armed = false;
                match b {
                    b'x' | b'X' => return Input::Quit(out),
                    0x01 => out.push(0x01),
                    _ => {}
                }
            } else if b == 0x01 {
                self.armed = true;
            } else {
                out.push(b);
            }
        }
        Input::Data(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_quits_and_ctrl_a_ctrl_a_is_literal() {
        let mut e = Escape::default();
        assert_eq!(e.filter(b"ab\x01\x01c"), Input::Data(b"ab\x01c".to_vec()));
        assert_eq!(e.filter(b"zz\x01"), Input::Data(b"zz".to_vec()));
        assert_eq!(e.filter(b"x tail"), Input::Quit(vec![]));
        let mut e = Escape::default();
        assert_eq!(e.filter(b"q\x01y"), Input::Data(b"q".to_vec()));
    }
}
