//! The i8042 keyboard controller: vm-superio's reset-only model behind the bus.

use crate::{Access, BusDevice, ExitRequest};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// vm-superio's reset "event": raises a flag that the write that caused it turns into
/// [`ExitRequest::Reset`] (under the device's lock, so a flag belongs to one write).
struct ResetTrigger(Arc<AtomicBool>);

impl vm_superio::Trigger for ResetTrigger {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::Relaxed);
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
    reset: Arc<AtomicBool>,
}

impl I8042 {
    /// An i8042.
    pub fn new() -> Self {
        let reset = Arc::new(AtomicBool::new(false));
        I8042 {
            dev: Mutex::new(vm_superio::I8042Device::new(ResetTrigger(reset.clone()))),
            reset,
        }
    }
}

impl Default for I8042 {
    fn default() -> Self {
        I8042::new()
    }
}

impl BusDevice for I8042 {
    fn name(&self) -> &str {
        "i8042"
    }

    fn read(&self, _access: &Access<'_>, offset: u64, data: &mut [u8]) {
        let v = match u8::try_from(offset) {
            Ok(off) => self.dev.lock().read(off),
            Err(_) => 0,
        };
        data.fill(v);
    }

    fn write(&self, _access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        let (Ok(off), Some(&v)) = (u8::try_from(offset), data.first()) else {
            return None;
        };
        let mut dev = self.dev.lock();
        match dev.write(off, v) {
            Ok(()) => {}
            Err(never) => match never {},
        }
        self.reset
            .swap(false, Ordering::Relaxed)
            .then_some(ExitRequest::Reset)
    }
}
