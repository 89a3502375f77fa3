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
    /// A disk image could not be opened or inspected.
    #[error(
        "disk image {path}: {source}; check that the file exists, is a regular file and is \
         readable (and writable unless the disk is read-only)"
    )]
    DiskOpen {
        /// The image's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process holds a conflicting lock on the disk image.
    #[error(
        "disk image {path} is locked by another process (another VMM uses it); stop that \
         process, or give this VM a copy of the image"
    )]
    DiskLocked {
        /// The image's path.
        path: String,
    },
    /// The disk image is not a regular file.
    #[error("disk image {path} is not a regular file; give the path of a raw image file")]
    DiskNotRegular {
        /// The image's path.
        path: String,
    },
    /// A virtio device was configured with an unusable queue size (a programming error in the
    /// VMM, not a guest error).
    #[error("virtio device '{name}': queue {index} maximum size {size} is not a power of two in 1..=32768; fix the device's queue sizes")]
    QueueSize {
        /// The device.
        name: String,
        /// The queue.
        index: usize,
        /// The bad size.
        size: u16,
    },
    /// The guest broke a virtqueue (bad avail index, descriptor chain that loops or leaves
    /// the table, used ring outside RAM): the device is marked DEVICE_NEEDS_RESET and
    /// ignores the queue until the driver resets it.
    #[error(
        "virtio device '{name}' queue {index}: {reason}; the guest driver must reset the device"
    )]
    QueueBroken {
        /// The device.
        name: String,
        /// The queue.
        index: usize,
        /// What the guest did.
        reason: String,
    },
    /// One virtio-blk request is malformed (the guest gets VIRTIO_BLK_S_IOERR when the
    /// request has a usable status byte).
    #[error("bad virtio-blk request: {0}")]
    BadRequest(String),
}
