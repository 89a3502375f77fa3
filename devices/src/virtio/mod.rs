//! virtio devices: the virtio-mmio transport ([`VirtioMmio`], virtio 1.x "modern" register
//! layout, Version 2) and the block device ([`Block`]).
//!
//! # Design
//!
//! A transport is two halves that run on different threads:
//!
//! - **Registers** (vCPU threads, through the MMIO [`Bus`](crate::Bus)): feature negotiation,
//!   queue setup, status, interrupt acknowledge, the device's config space. These take a short
//!   register lock, never held during I/O, so a vCPU never waits for the disk.
//! - **Queues** (the VMM's main loop): a guest notification (a write to `QueueNotify`) never
//!   processes requests on the vCPU. With KVM's ioeventfd registered on
//!   [`NOTIFY_OFFSET`] the write does not even exit to user space; without it the transport's
//!   `write` only signals the queue's notify [`EventFd`](vmm_sys_util::eventfd::EventFd).
//!   Either way the main loop sees that eventfd readable and calls
//!   [`VirtioMmio::process_queue`], which pops the available descriptor chains, lets the
//!   device serve each one ([`VirtioDevice::process_chain`]), fills the used ring and, if the
//!   driver wants it, sets `InterruptStatus` and writes the irq eventfd (an irqfd).
//!
//! Each queue has its own mutex (held by the main loop while it serves the queue; vCPUs take
//! it only to configure or reset the queue). Guest RAM is read through an RCU read-side
//! section of the caller's: the main loop passes its proof to `process_queue`, vCPUs pass
//! theirs in [`Access`](crate::Access).
//!
//! # The split virtqueue: rust-vmm's `virtio-queue`
//!
//! The split-ring handling (descriptor table, avail and used rings, `VIRTIO_RING_F_EVENT_IDX`
//! notification suppression) is rust-vmm's `virtio-queue` 0.18.0, with the constants of
//! `virtio-bindings` 0.2.7. `virtio-queue` 0.18.0 depends on `vm-memory` 0.18.0 (the
//! workspace's version; Cargo resolves one `vm-memory` for both) and on `vmm-sys-util` 0.15
//! (also the workspace's), and its functions are generic over `vm_memory::GuestMemory`, which
//! `memory::RamSnapshot` implements through vm-memory 0.18's `GuestMemoryBackend` blanket
//! impl. So the queue walks guest RAM through the same RCU snapshot as everything else.
//!
//! What the crate does, and what this module adds on top:
//!
//! - `Queue::set_size` ignores sizes that are zero, above `QueueNumMax` or not a power of two;
//!   the transport checks with `try_set_size` and marks the device DEVICE_NEEDS_RESET instead.
//! - The avail iterator refuses an avail `idx` that moved by more than the queue size
//!   (`InvalidAvailRingIndex`): DEVICE_NEEDS_RESET.
//! - The descriptor chain iterator stops silently at a descriptor index outside the table, a
//!   descriptor outside RAM, after `queue size` descriptors (a loop), or when the chain's
//!   total length would pass 2^32. The transport detects such a cut chain (its last
//!   descriptor still has `NEXT`) and marks the device DEVICE_NEEDS_RESET: the chain cannot be
//!   trusted, not even its status byte.
//! - vm-memory's accessors do not know the memory crate's read-only blocks, so at DRIVER_OK
//!   the transport also refuses a used ring that lies in read-only RAM; data buffers the
//!   device writes are checked by the device (see [`blk`](self::Block)).
//! - `needs_notification` ignores the avail ring's `VRING_AVAIL_F_NO_INTERRUPT` flag when
//!   EVENT_IDX is not negotiated; the transport honours it itself.
//!
//! The request parser of the block device ([`parse_request`]) is a pure function of the
//! chain's descriptors and guest memory, so that it can be fuzzed on its own.

mod blk;
mod mmio;
mod sys;

pub use blk::{
    parse_request, status_byte, Block, Request, RequestKind, Segment, BLK_CONFIG_LEN, SECTOR_SIZE,
};
pub use mmio::{VirtioMmio, MMIO_LEN, NOTIFY_OFFSET};
pub use virtio_queue::desc::split::Descriptor;

use memory::RamSnapshot;

/// `VIRTIO_F_VERSION_1`: the transport always offers it (a modern-only device).
pub const F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// `VIRTIO_RING_F_EVENT_IDX`: the transport offers it for every device.
pub const F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// A device model behind a virtio transport.
///
/// The transport owns the queues and the negotiation; the device describes itself and serves
/// one descriptor chain at a time on the main loop thread.
pub trait VirtioDevice: Send + Sync {
    /// The virtio device ID (2 for a block device).
    fn device_type(&self) -> u32;
    /// A short name for logs and errors.
    fn name(&self) -> &str;
    /// The device-specific feature bits the device offers (the transport adds
    /// [`F_VERSION_1`] and [`F_EVENT_IDX`]).
    fn features(&self) -> u64;
    /// The maximum size of each queue (powers of two up to 32768); its length is the number
    /// of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device config space at `offset` (any offset and length: bytes outside the
    /// config read as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device config space (ignored by default).
    fn write_config(&self, _offset: u64, _data: &[u8]) {}
    /// Serves one descriptor chain of queue `queue`, given as the descriptors the chain walk
    /// found (possibly cut short: then the last one still has `NEXT`). Returns the number of
    /// bytes written into the chain's device-writable buffers (the used element's `len`), or
    /// an error if the queue is broken beyond one request (the transport then sets
    /// DEVICE_NEEDS_RESET).
    fn process_chain(
        &self,
        queue: usize,
        chain: &[Descriptor],
        mem: &RamSnapshot,
    ) -> Result<u32, crate::Error>;
}
