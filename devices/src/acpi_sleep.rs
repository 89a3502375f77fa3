//! The sleep control and status registers of a hardware-reduced ACPI platform (ACPI 6.5,
//! 4.8.3.7 and 4.8.3.8): how the guest powers the machine off.

use crate::{Access, BusDevice, ExitRequest};
use std::sync::atomic::{AtomicU8, Ordering};

/// SLEEP_CONTROL_REG at offset 0 and SLEEP_STATUS_REG at offset 1 (register it with length 2
/// at the ports the FADT names).
///
/// Linux enters S5 by writing `SLP_TYP << 2 | SLP_EN` to the control register, SLP_TYP being
/// the first value of the DSDT's `\_S5` package (ACPICA's `acpi_hw_extended_sleep`, which
/// first writes WAK_STS to the status register to clear it). SLP_EN with
/// [`Self::S5_SLP_TYP`] asks the VMM to stop with [`ExitRequest::PowerOff`]. Any other sleep
/// type is not supported: the "sleep" ends at once, with WAK_STS set so that a guest waiting
/// for its wake-up goes on. Writes without SLP_EN are ignored. Reads of the control register
/// return 0; reads of the status register return WAK_STS (cleared by writing it back).
#[derive(Debug, Default)]
pub struct AcpiSleep {
    status: AtomicU8,
}

impl AcpiSleep {
    /// SLP_EN: start the transition to the sleep state in SLP_TYP (control register bit 5).
    pub const SLP_EN: u8 = 1 << 5;
    /// SLP_TYP: bits 2-4 of the control register.
    pub const SLP_TYP_MASK: u8 = 0b111 << 2;
    /// WAK_STS: the platform has woken (status register bit 7; write 1 to clear).
    pub const WAK_STS: u8 = 1 << 7;
    /// The SLP_TYP that means S5 (soft-off); the DSDT's `\_S5` package must give it.
    pub const S5_SLP_TYP: u8 = 5;
    /// Offset of the control register.
    pub const CONTROL: u64 = 0;
    /// Offset of the status register.
    pub const STATUS: u64 = 1;

    /// The sleep registers, the platform awake.
    pub fn new() -> Self {
        AcpiSleep::default()
    }

    fn write_control(&self, v: u8) -> Option<ExitRequest> {
        if v & Self::SLP_EN == 0 {
            return None;
        }
        if (v & Self::SLP_TYP_MASK) >> 2 == Self::S5_SLP_TYP {
            return Some(ExitRequest::PowerOff);
        }
        self.status.fetch_or(Self::WAK_STS, Ordering::AcqRel);
        None
    }
}

impl BusDevice for AcpiSleep {
    fn name(&self) -> &str {
        "acpi-sleep"
    }

    fn read(&self, _access: &Access<'_>, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = if offset.checked_add(i as u64) == Some(Self::STATUS) {
                self.status.load(Ordering::Acquire)
            } else {
                0
            };
        }
    }

    fn write(&self, _access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        // Byte by byte, so that a wider access covering both registers acts on each.
        let mut request = None;
        for (i, &v) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(Self::CONTROL) => request = request.or(self.write_control(v)),
                Some(Self::STATUS) => {
                    self.status
                        .fetch_and(!(v & Self::WAK_STS), Ordering::AcqRel);
                }
                _ => {}
            }
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The device, called as a vCPU would; its stop requests are collected in `seen`.
    struct Dev {
        dev: AcpiSleep,
        seen: Arc<Mutex<Vec<ExitRequest>>>,
        rcu: rcu::Rcu,
    }

    impl Dev {
        fn read(&self, offset: u64, data: &mut [u8]) {
            let g = self.rcu.read_lock();
            self.dev.read(&Access::new(0, &g), offset, data);
        }

        fn write(&self, offset: u64, data: &[u8]) {
            let g = self.rcu.read_lock();
            if let Some(r) = self.dev.write(&Access::new(0, &g), offset, data) {
                self.seen.lock().unwrap().push(r);
            }
        }
    }

    fn device() -> (Dev, Arc<Mutex<Vec<ExitRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let dev = Dev {
            dev: AcpiSleep::new(),
            seen: seen.clone(),
            rcu: rcu::Rcu::new(),
        };
        (dev, seen)
    }

    fn status(dev: &Dev) -> u8 {
        let mut b = [0xffu8];
        dev.read(AcpiSleep::STATUS, &mut b);
        b[0]
    }

    #[test]
    fn slp_en_with_s5_asks_for_power_off() {
        let (dev, seen) = device();
        // What Linux writes: clear WAK_STS, then SLP_TYP 5 with SLP_EN.
        dev.write(AcpiSleep::STATUS, &[AcpiSleep::WAK_STS]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(AcpiSleep::CONTROL, &[(5 << 2) | (1 << 5)]);
        assert_eq!(*seen.lock().unwrap(), vec![ExitRequest::PowerOff]);
        // Reserved bits do not hide the request.
        dev.write(AcpiSleep::CONTROL, &[0xc3 | (5 << 2) | (1 << 5)]);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[test]
    fn other_writes_are_ignored() {
        let (dev, seen) = device();
        dev.write(AcpiSleep::CONTROL, &[5 << 2]); // S5 without SLP_EN
        dev.write(AcpiSleep::CONTROL, &[AcpiSleep::SLP_EN]); // S0
        dev.write(AcpiSleep::CONTROL, &[(3 << 2) | AcpiSleep::SLP_EN]); // S3
        dev.write(AcpiSleep::STATUS, &[(5 << 2) | AcpiSleep::SLP_EN]);
        dev.write(2, &[(5 << 2) | AcpiSleep::SLP_EN]);
        dev.write(u64::MAX, &[0xff, 0xff]);
        dev.write(AcpiSleep::CONTROL, &[]);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn an_unsupported_sleep_wakes_at_once_and_wak_sts_clears_on_write() {
        let (dev, seen) = device();
        assert_eq!(status(&dev), 0);
        dev.write(AcpiSleep::CONTROL, &[(1 << 2) | AcpiSleep::SLP_EN]);
        assert_eq!(status(&dev), AcpiSleep::WAK_STS);
        dev.write(AcpiSleep::STATUS, &[0x7f]); // not WAK_STS: nothing cleared
        assert_eq!(status(&dev), AcpiSleep::WAK_STS);
        dev.write(AcpiSleep::STATUS, &[AcpiSleep::WAK_STS]);
        assert_eq!(status(&dev), 0);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn reads_of_any_offset_and_length_never_panic() {
        let (dev, _) = device();
        let mut b = [0xffu8; 8];
        dev.read(AcpiSleep::CONTROL, &mut b);
        assert_eq!(b, [0; 8]);
        dev.read(u64::MAX, &mut b);
        dev.read(7, &mut b);
        dev.read(0, &mut []);
        // A 16-bit access at the control register covers both, byte by byte.
        dev.write(0, &[(5 << 2) | AcpiSleep::SLP_EN, AcpiSleep::WAK_STS]);
    }
}
