//! Small devices for guests that talk to the VMM: pvpanic and the test counter.

use crate::{Access, BusDevice, ExitRequest};
use std::sync::atomic::{AtomicU64, Ordering};

/// QEMU's ISA pvpanic device (port 0x505): reads report the "panicked" capability, a write
/// with bit 0 set reports a guest panic ([`ExitRequest::Panic`]).
#[derive(Debug, Default)]
pub struct PvPanic;

impl BusDevice for PvPanic {
    fn name(&self) -> &str {
        "pvpanic"
    }
    fn read(&self, _access: &Access<'_>, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = 1; // PVPANIC_PANICKED
        }
    }
    fn write(&self, _access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        (offset == 0 && data.first().is_some_and(|b| b & 1 != 0)).then_some(ExitRequest::Panic)
    }
}

/// The test counter (ports 0x510–0x511): every write to offset 0 counts one; reading offset 1
/// returns the count (low 32 bits, little-endian, truncated to the access size).
#[derive(Default)]
pub struct TestCounter {
    count: AtomicU64,
}

impl TestCounter {
    /// Writes counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl BusDevice for TestCounter {
    fn name(&self) -> &str {
        "test-counter"
    }
    fn read(&self, _access: &Access<'_>, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 1 {
            let v = (self.count() as u32).to_le_bytes();
            for (d, s) in data.iter_mut().zip(v) {
                *d = s;
            }
        }
    }
    fn write(&self, _access: &Access<'_>, offset: u64, _data: &[u8]) -> Option<ExitRequest> {
        if offset == 0 {
            // Only the vCPU thread that owns the port writes here in practice; a relaxed
            // add keeps the count exact with several.
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

/// A hot-pluggable test device: every read returns `value` (little-endian, truncated to the
/// access size); writes are ignored. The control socket's `device-add` creates these.
pub struct Constant {
    name: String,
    value: u32,
}

impl Constant {
    /// A device named `name` that reads as `value`.
    pub fn new(name: impl Into<String>, value: u32) -> Self {
        Constant {
            name: name.into(),
            value,
        }
    }
}

impl BusDevice for Constant {
    fn name(&self) -> &str {
        &self.name
    }
    fn read(&self, _access: &Access<'_>, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (d, s) in data.iter_mut().zip(self.value.to_le_bytes()) {
            *d = s;
        }
    }
    fn write(&self, _access: &Access<'_>, _offset: u64, _data: &[u8]) -> Option<ExitRequest> {
        None
    }
}
