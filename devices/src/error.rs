use thiserror::Error;

/// Errors of the devices crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A device range would overlap one already on the bus.
    #[error(
        "{bus} bus: range {base:#x}+{len:#x} for '{name}' overlaps '{other}' at \
         {other_base:#x}+{other_len:#x}; pick a free range"
    )]
    Overlap {
        /// The bus ("pio" or "mmio").
        bus: &'static str,
        /// The new device.
        name: String,
        /// Its base.
        base: u64,
        /// Its length.
        len: u64,
        /// The device already there.
        other: String,
        /// Its base.
        other_base: u64,
        /// Its length.
        other_len: u64,
    },
    /// A range of length zero or one that wraps around the address space.
    #[error("{bus} bus: invalid range {base:#x}+{len:#x} for '{name}': it must be non-empty and must not wrap around")]
    InvalidRange {
        /// The bus.
        bus: &'static str,
        /// The device.
        name: String,
        /// Its base.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// No device starts at this address.
    #[error("{bus} bus: no device at {base:#x}")]
    NotFound {
        /// The bus.
        bus: &'static str,
        /// The address.
        base: u64,
    },
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}
