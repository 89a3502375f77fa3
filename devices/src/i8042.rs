//! The i8042 keyboard controller: vm-superio's reset-only model behind the bus.

use crate::testdev::{ExitRequest, ExitSink};
use crate::BusDevice;
use parking_lot::Mutex;
use std::convert::Infallible;

/// vm-superio's reset "event": asks the VMM to stop with [`ExitRequest::Reset`].
struct ResetTrigger(ExitSink);

impl vm_superio::Trigger for ResetTrigger {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        (self.0)(ExitRequest::Reset);
        Ok(())
    }
}

/// The i8042 at ports 0x60–0x64 (register it at 0x60 with length 5): vm-superio's
/// [`I8042Device`](vm_superio::I8042Device). Writing the command 0xFE ("pulse the reset line")
/// to 0x64 asks the VMM to stop with [`ExitRequest::Reset`]. Everything else reads as zero (no
/// data pending, input buffer empty, so Linux's `reboot=k` does not wait) and is ignored.
///
/// An access of several bytes is the access of its first byte at `offset` (the model has only
/// byte registers): reads repeat that byte, writes use only the first. An empty access does
/// nothing, and offsets past the model's range read as zero.
pub struct I8042 {
    dev: Mutex<vm_superio::I8042Device<ResetTrigger>>,
}

impl I8042 {
    /// An i8042 that reports resets to `exit`.
    pub fn new(exit: ExitSink) -> Self {
        I8042 {
            dev: Mutex::new(vm_superio::I8042Device::new(ResetTrigger(exit))),
        }
    }
}

impl BusDevice for I8042 {
    fn name(&self) -> &str {
        "i8042"
    }

    fn read(&self, offset: u64, data: &mut [u8]) {
        let v = match u8::try_from(offset) {
            Ok(off) => self.dev.lock().read(off),
            Err(_) => 0,
        };
        data.fill(v);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (Ok(off), Some(&v)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        // The trigger (and so the exit sink) runs under the device's lock; the sink only
        // records the request and never re-enters the device, so this cannot deadlock.
        match self.dev.lock().write(off, v) {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }
}
