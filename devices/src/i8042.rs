//! A minimal i8042 keyboard controller: enough for a guest to reset the machine.

use crate::{Access, BusDevice, ExitRequest};

/// The i8042 at ports 0x60–0x64 (register it at 0x60 with length 5). Writing the command
/// 0xFE ("pulse the reset line") to 0x64 asks the VMM to stop with [`ExitRequest::Reset`].
/// Everything else reads as zero (no data pending, input buffer empty) and is ignored.
#[derive(Debug, Default)]
pub struct I8042;

impl I8042 {
    /// An i8042.
    pub fn new() -> Self {
        I8042
    }
}

const CMD_RESET: u8 = 0xfe;

impl BusDevice for I8042 {
    fn name(&self) -> &str {
        "i8042"
    }

    fn read(&self, _access: &Access<'_>, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        (offset == 4 && data.first() == Some(&CMD_RESET)).then_some(ExitRequest::Reset)
    }
}
