//! The serial console on the main loop: standard input to the UART, with flow control.
//!
//! Input is read only as far as the UART's receive FIFO has room (64 bytes), so a flood of
//! input waits in the pipe or terminal — the kernel's buffer, not ours — and nothing the
//! guest has not been offered is lost or buffered here. When the FIFO is full the handler
//! stops reading; the UART reports when the guest has drained it, and a bottom half resumes
//! reading. When standard input is a terminal it is in raw mode and Ctrl-A x stops the VM.

use crate::frontend::term::{Escape, Input};
use crate::kvm::vm::VmShared;
use crate::outcome::Outcome;
use devices::Serial;
use iohandler::LoopHandle;
use parking_lot::Mutex;
use std::sync::Arc;

/// Restores standard input's file status flags when dropped.
pub struct StdinFlags(libc::c_int);

impl Drop for StdinFlags {
    fn drop(&mut self) {
        // SAFETY: F_SETFL on fd 0 with flags previously read from it.
        unsafe { libc::fcntl(0, libc::F_SETFL, self.0) };
    }
}

struct Reader {
    serial: Arc<Serial>,
    shared: Arc<VmShared>,
    escape: Option<Escape>,
    eof: bool,
}

impl Reader {
    /// Reads what fits into the FIFO until stdin would block, the FIFO is full, or EOF.
    fn pump(&mut self) {
        let mut buf = [0u8; 64];
        while !self.eof {
            let room = self.serial.input_capacity().min(buf.len());
            if room == 0 {
                return; // resumed by the drained callback
            }
            // SAFETY: reading at most `room` bytes into a live stack buffer of that size.
            let n = unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, room) };
            if n == 0 {
                self.eof = true;
                return;
            }
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        log::warn!("reading standard input: {e}; serial input stops");
                        self.eof = true;
                    }
                    return;
                }
                continue;
            }
            let data = &buf[..n as usize];
            let data = match &mut self.escape {
                None => data.to_vec(),
                Some(esc) => match esc.filter(data) {
                    Input::Data(d) => d,
                    Input::Quit(d) => {
                        self.serial.enqueue_input(&d);
                        self.shared.finish(Outcome::Stopped, None);
                        self.eof = true;
                        return;
                    }
                },
            };
            // Cannot exceed the room read above (the escape filter only removes bytes).
            self.serial.enqueue_input(&data);
        }
    }
}

/// Connects standard input to `serial` through the main loop. Returns the guard that restores
/// stdin's flags, or `None` if stdin cannot be polled (e.g. /dev/null or a regular file).
pub fn attach_stdin(
    h: &LoopHandle,
    serial: Arc<Serial>,
    shared: Arc<VmShared>,
    tty: bool,
) -> Option<StdinFlags> {
    // SAFETY: F_GETFL/F_SETFL on fd 0 only change its file status flags.
    let flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(0, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let guard = StdinFlags(flags);
    let reader = Arc::new(Mutex::new(Reader {
        serial: serial.clone(),
        shared,
        escape: tty.then(Escape::default),
        eof: false,
    }));
    let r2 = reader.clone();
    let resume = h.bottom_half(move || r2.lock().pump());
    // The UART calls this on a vCPU thread with its own lock held: only schedule.
    let resume = Arc::new(resume);
    let resume2 = resume.clone();
    serial.on_drained(Arc::new(move || resume2.schedule()));
    let h2 = h.clone();
    let r3 = reader;
    let ok = h.set_read_handler(0, move || {
        let mut r = r3.lock();
        r.pump();
        if r.eof {
            h2.remove_fd_handler(0);
        }
    });
    match ok {
        Ok(()) => {
            // Data may already be waiting (edge-triggered: no event for it).
            resume.schedule();
            Some(guard)
        }
        Err(e) => {
            log::debug!("standard input cannot be polled ({e}); serial input is off");
            None
        }
    }
}
