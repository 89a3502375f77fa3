//! `devices`: the port-I/O and MMIO buses through which vCPU threads reach device models, and
//! the device models themselves.
//!
//! A [`Bus`] is an address-ordered map from ranges to devices, published through RCU: vCPU
//! threads (QSBR readers) look a device up with no lock and call it; the control thread adds
//! and removes devices while the vCPUs run, and a removed device is dropped only after every
//! vCPU that might be inside it has passed a quiescent state. Each device serializes itself
//! (its own mutex); none needs the big lock.
//!
//! Everything here is driven by the guest, so nothing here may panic on any address, size or
//! value the guest chooses: accesses to nothing read all-ones and are counted, and the log
//! line for them is rate-limited.

#![warn(missing_docs)]

mod acpi_sleep;
mod bus;
mod error;
mod i8042;
mod serial;
mod testdev;
pub mod virtio;

pub use acpi_sleep::AcpiSleep;
pub use bus::{Access, Bus, BusDevice, BusStats, ExitRequest};
pub use error::Error;
pub use i8042::I8042;
pub use serial::{EventFdTrigger, Serial, SerialOutput};
pub use testdev::{Constant, PvPanic, TestCounter};
