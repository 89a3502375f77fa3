//! The 16550A UART (vm-superio's model) with an irqfd interrupt and a bounded input FIFO.

use crate::{Access, BusDevice, ExitRequest};
use parking_lot::Mutex;
use std::io::Write;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// The serial interrupt: an eventfd that the VMM registers with KVM as an irqfd.
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where guest output goes.
pub type SerialOutput = Box<dyn Write + Send>;

/// vm-superio flushes its writer after every byte the guest writes; passing that through would
/// make one system call per byte. The writer given to [`Serial::new`] is expected to flush on
/// its own schedule (the VMM's flushes at each newline); [`Serial::flush`] forces it.
struct LazyFlush(SerialOutput);

impl Write for LazyFlush {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

type Callback = Arc<dyn Fn() + Send + Sync>;

/// Calls the VMM back when the guest has drained the receive FIFO, so input can resume.
struct Events {
    on_drained: Mutex<Option<Callback>>,
}

impl vm_superio::serial::SerialEvents for Events {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Some(cb) = self.on_drained.lock().clone() {
            cb();
        }
    }
}

/// A 16550A UART. Register it on the PIO bus at 0x3f8 with length 8.
///
/// Input is bounded by the UART's own 64-byte FIFO: [`Serial::enqueue_input`] takes only what
/// fits and says how much, so a flood of input is never buffered here — the caller keeps the
/// rest (or leaves it in the pipe) until the guest drains the FIFO, which is announced through
/// the [`Serial::on_drained`] callback.
pub struct Serial {
    uart: Mutex<vm_superio::Serial<EventFdTrigger, Arc<Events>, LazyFlush>>,
    events: Arc<Events>,
}

impl Serial {
    /// A UART raising its interrupt through `irq` and writing guest output to `out`.
    pub fn new(irq: EventFd, out: SerialOutput) -> Self {
        let events = Arc::new(Events {
            on_drained: Mutex::new(None),
        });
        Serial {
            uart: Mutex::new(vm_superio::Serial::with_events(
                EventFdTrigger(irq),
                events.clone(),
                LazyFlush(out),
            )),
            events,
        }
    }

    /// Offers `input` to the guest; returns how many bytes the FIFO took (maybe 0).
    pub fn enqueue_input(&self, input: &[u8]) -> usize {
        let mut uart = self.uart.lock();
        let n = input.len().min(uart.fifo_capacity());
        if n == 0 {
            return 0;
        }
        match uart.enqueue_raw_bytes(&input[..n]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial: could not raise the receive interrupt: {e}");
                n
            }
        }
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.lock().fifo_capacity()
    }

    /// Sets the callback run (on a vCPU thread, with no lock held by the UART... the UART's
    /// own lock *is* held: the callback must only signal, e.g. write an eventfd) when the guest
    /// empties the receive FIFO.
    pub fn on_drained(&self, cb: Callback) {
        *self.events.on_drained.lock() = Some(cb);
    }

    /// Flushes guest output.
    pub fn flush(&self) {
        let _ = self.uart.lock().writer_mut().0.flush();
    }
}

impl BusDevice for Serial {
    fn name(&self) -> &str {
        "serial"
    }

    fn read(&self, _access: &Access<'_>, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(off), Some(first)) = (u8::try_from(offset), data.first_mut()) {
            if off < 8 {
                *first = self.uart.lock().read(off);
            }
        }
    }

    fn write(&self, _access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        if let (Ok(off), Some(&v)) = (u8::try_from(offset), data.first()) {
            if off < 8 {
                if let Err(e) = self.uart.lock().write(off, v) {
                    log::debug!("serial: write to register {off}: {e}");
                }
            }
        }
        None
    }
}
