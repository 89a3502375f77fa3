//! The virtio-mmio transport, virtio 1.x register layout (Version 2). See the module docs of
//! [`virtio`](super).

use super::{Descriptor, VirtioDevice, F_EVENT_IDX, F_VERSION_1};
use crate::{Access, BusDevice, Error, ExitRequest};
use memory::{RamList, RamSnapshot};
use parking_lot::Mutex;
use rcu::ReadSide;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The size of a transport's MMIO window (registers and config space).
pub const MMIO_LEN: u64 = 0x200;
/// The offset of the `QueueNotify` register: register the queue's notify eventfd with
/// `KVM_IOEVENTFD` at `base + NOTIFY_OFFSET`, 4 bytes, datamatch = the queue index.
pub const NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x554d_4551; // "QEMU", as most VMMs report
const CONFIG_OFFSET: u64 = 0x100;

// Register offsets (virtio 1.2, 4.2.2).
const R_MAGIC: u64 = 0x00;
const R_VERSION: u64 = 0x04;
const R_DEVICE_ID: u64 = 0x08;
const R_VENDOR_ID: u64 = 0x0c;
const R_DEVICE_FEATURES: u64 = 0x10;
const R_DEVICE_FEATURES_SEL: u64 = 0x14;
const R_DRIVER_FEATURES: u64 = 0x20;
const R_DRIVER_FEATURES_SEL: u64 = 0x24;
const R_QUEUE_SEL: u64 = 0x30;
const R_QUEUE_NUM_MAX: u64 = 0x34;
const R_QUEUE_NUM: u64 = 0x38;
const R_QUEUE_READY: u64 = 0x44;
const R_INTERRUPT_STATUS: u64 = 0x60;
const R_INTERRUPT_ACK: u64 = 0x64;
const R_STATUS: u64 = 0x70;
const R_QUEUE_DESC_LOW: u64 = 0x80;
const R_QUEUE_DESC_HIGH: u64 = 0x84;
const R_QUEUE_DRIVER_LOW: u64 = 0x90;
const R_QUEUE_DRIVER_HIGH: u64 = 0x94;
const R_QUEUE_DEVICE_LOW: u64 = 0xa0;
const R_QUEUE_DEVICE_HIGH: u64 = 0xa4;
const R_CONFIG_GENERATION: u64 = 0xfc;

const S_FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const S_DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const S_NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

/// Register state written by the driver (under the register lock; never held during I/O).
#[derive(Default)]
struct Regs {
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
}

/// A virtio-mmio transport in front of one [`VirtioDevice`]; a [`BusDevice`] for the MMIO bus
/// ([`MMIO_LEN`] bytes).
pub struct VirtioMmio {
    device: Arc<dyn VirtioDevice>,
    mem: Arc<RamList>,
    irq: EventFd,
    notify: Vec<EventFd>,
    queues: Vec<Mutex<Queue>>,
    regs: Mutex<Regs>,
    /// The device status (written under `regs`, also by the main loop for NEEDS_RESET).
    status: AtomicU32,
    interrupt_status: AtomicU32,
}

impl std::fmt::Debug for VirtioMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmio")
            .field("device", &self.device.name())
            .field("status", &self.status.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl VirtioMmio {
    /// A transport for `device` whose queues live in `mem`, interrupting through `irq` (the
    /// VMM registers it as an irqfd). Creates one non-blocking notify eventfd per queue.
    pub fn new(
        device: Arc<dyn VirtioDevice>,
        mem: Arc<RamList>,
        irq: EventFd,
    ) -> Result<Self, Error> {
        let mut queues = Vec::new();
        let mut notify = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            let q = Queue::new(size).map_err(|_| Error::QueueSize {
                name: device.name().to_string(),
                index,
                size,
            })?;
            queues.push(Mutex::new(q));
            notify.push(EventFd::new(EFD_NONBLOCK).map_err(|source| Error::Io {
                what: "creating a virtio queue notify eventfd",
                source,
            })?);
        }
        Ok(VirtioMmio {
            device,
            mem,
            irq,
            notify,
            queues,
            regs: Mutex::new(Regs::default()),
            status: AtomicU32::new(0),
            interrupt_status: AtomicU32::new(0),
        })
    }

    /// The device behind the transport.
    pub fn device(&self) -> &Arc<dyn VirtioDevice> {
        &self.device
    }

    /// How many queues the device has.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The notify eventfd of queue `queue` (for `KVM_IOEVENTFD` at [`NOTIFY_OFFSET`] with
    /// datamatch `queue`, and for the main loop's poll set).
    pub fn notify_eventfd(&self, queue: usize) -> Option<&EventFd> {
        self.notify.get(queue)
    }

    /// The interrupt eventfd given to [`new`](Self::new) (for `KVM_IRQFD`).
    pub fn irq_eventfd(&self) -> &EventFd {
        &self.irq
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::Acquire)
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    fn interrupt(&self, bit: u32) {
        self.interrupt_status.fetch_or(bit, Ordering::AcqRel);
        if let Err(e) = self.irq.write(1) {
            log::warn!(
                "virtio {}: writing the irq eventfd: {e}",
                self.device.name()
            );
        }
    }

    /// Marks the device DEVICE_NEEDS_RESET and tells the driver (a config interrupt).
    fn needs_reset(&self, why: &Error) {
        log::warn!("{why}");
        self.status.fetch_or(S_NEEDS_RESET, Ordering::AcqRel);
        self.interrupt(VIRTIO_MMIO_INT_CONFIG);
    }

    fn broken(&self, index: usize, reason: impl Into<String>) -> Error {
        Error::QueueBroken {
            name: self.device.name().to_string(),
            index,
            reason: reason.into(),
        }
    }

    /// Serves queue `queue`: the main loop calls this when the queue's notify eventfd is
    /// readable (it drains the eventfd first), inside a read-side section of the RCU domain
    /// that protects the RAM list (`reader` is the proof). Pops every available chain, lets
    /// the device serve it, fills the used ring and interrupts the guest if it asked for it.
    ///
    /// Returns an error when the guest broke the queue (the device is then DEVICE_NEEDS_RESET
    /// and ignores the queue until the driver resets it); the VMM logs it and carries on.
    pub fn process_queue(&self, queue: usize, reader: &dyn ReadSide) -> Result<(), Error> {
        let Some(q) = self.queues.get(queue) else {
            return Ok(());
        };
        if let Some(fd) = self.notify.get(queue) {
            // Non-blocking: EAGAIN just means nothing was pending (e.g. a spurious call).
            let _ = fd.read();
        }
        let mut q = q.lock();
        let status = self.status();
        if status & S_DRIVER_OK == 0 || status & S_NEEDS_RESET != 0 || !q.ready() {
            return Ok(());
        }
        let mem = self.mem.snapshot(reader);
        match self.serve(queue, &mut q, mem) {
            Ok(true) => {
                self.interrupt(VIRTIO_MMIO_INT_VRING);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                self.needs_reset(&e);
                Err(e)
            }
        }
    }

    /// The queue loop; `Ok(true)` if the driver must be interrupted.
    fn serve(&self, index: usize, q: &mut Queue, mem: &RamSnapshot) -> Result<bool, Error> {
        let qerr = |e: virtio_queue::Error| self.broken(index, e.to_string());
        let mut used_any = false;
        let mut chain_buf: Vec<Descriptor> = Vec::new();
        // Rounds in a row that popped nothing although the avail idx says there is more: one
        // is a benign race with the driver, two mean the avail ring cannot be read (RAM
        // removed under it); without this bound that would spin forever.
        let mut idle_rounds = 0u32;
        loop {
            q.disable_notification(mem).map_err(qerr)?;
            // virtio-queue's pop logs and stops on an avail idx that moved by more than the
            // queue size; check it first so that it is reported as a broken queue.
            let avail = q
                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .map_err(qerr)?;
            if (avail - std::num::Wrapping(q.next_avail())).0 > q.size() {
                return Err(self.broken(
                    index,
                    format!(
                        "avail idx {} is more than the queue size {} ahead of the device's {}",
                        avail.0,
                        q.size(),
                        q.next_avail()
                    ),
                ));
            }
            let mut popped = false;
            while let Some(chain) = q.pop_descriptor_chain(mem) {
                popped = true;
                let head = chain.head_index();
                chain_buf.clear();
                chain_buf.extend(chain);
                let len = self.serve_chain(index, &chain_buf, mem)?;
                q.add_used(mem, head, len).map_err(qerr)?;
                used_any = true;
            }
            if !q.enable_notification(mem).map_err(qerr)? {
                break;
            }
            idle_rounds = if popped { 0 } else { idle_rounds + 1 };
            if idle_rounds >= 2 {
                return Err(self.broken(index, "the avail ring cannot be read"));
            }
        }
        if !used_any {
            return Ok(false);
        }
        if q.event_idx_enabled() {
            q.needs_notification(mem).map_err(qerr)
        } else {
            // virtio-queue ignores VRING_AVAIL_F_NO_INTERRUPT; honour it here.
            let flags: u16 = mem
                .read_val(q.avail_ring())
                .map_err(|e| self.broken(index, format!("reading the avail ring flags: {e}")))?;
            Ok(u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0)
        }
    }

    fn serve_chain(
        &self,
        index: usize,
        chain: &[Descriptor],
        mem: &RamSnapshot,
    ) -> Result<u32, Error> {
        if chain.last().is_none_or(|d| d.has_next()) {
            return Err(self.broken(
                index,
                "a descriptor chain loops, names a descriptor outside the table or outside RAM, \
                 or is longer than 4 GiB",
            ));
        }
        self.device.process_chain(index, chain, mem)
    }

    fn reset(&self, regs: &mut Regs) {
        *regs = Regs::default();
        for q in &self.queues {
            q.lock().reset();
        }
        self.interrupt_status.store(0, Ordering::Release);
        self.status.store(0, Ordering::Release);
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | F_VERSION_1 | F_EVENT_IDX
    }

    fn write_status(&self, access: &Access<'_>, regs: &mut Regs, value: u32) {
        if value == 0 {
            self.reset(regs);
            return;
        }
        let old = self.status();
        // The driver only ever adds bits (virtio 1.2, 3.1.1); NEEDS_RESET is the device's.
        let mut new = (value & !S_NEEDS_RESET) | (old & S_NEEDS_RESET);
        if old & !S_NEEDS_RESET & !new != 0 {
            log::warn!(
                "virtio {}: the driver cleared status bits ({old:#x} -> {value:#x}); ignored",
                self.device.name()
            );
            return;
        }
        if new & S_FEATURES_OK != 0 && old & S_FEATURES_OK == 0 {
            let offered = self.offered_features();
            let f = regs.driver_features;
            if f & !offered != 0 || f & F_VERSION_1 == 0 {
                log::warn!(
                    "virtio {}: the driver asked for features {f:#x} (offered {offered:#x}, \
                     VERSION_1 required); FEATURES_OK refused",
                    self.device.name()
                );
                new &= !S_FEATURES_OK;
            }
        }
        if new & S_DRIVER_OK != 0 && old & S_DRIVER_OK == 0 {
            if new & S_FEATURES_OK == 0 {
                log::warn!(
                    "virtio {}: DRIVER_OK without FEATURES_OK; ignored",
                    self.device.name()
                );
                new &= !S_DRIVER_OK;
            } else {
                self.status.store(new, Ordering::Release);
                self.activate(access, regs.driver_features);
                return;
            }
        }
        self.status.store(new, Ordering::Release);
    }

    /// DRIVER_OK: every ready queue must lie in RAM (the used ring in writable RAM).
    fn activate(&self, access: &Access<'_>, features: u64) {
        let mem = self.mem.snapshot(access.reader);
        for (i, q) in self.queues.iter().enumerate() {
            let mut q = q.lock();
            q.set_event_idx(features & F_EVENT_IDX != 0);
            if !q.ready() {
                continue;
            }
            let used_len = 6 + 8 * u64::from(q.size());
            let used_ro = mem
                .ranges(q.used_ring(), used_len as usize)
                .any(|r| r.is_err() || r.is_ok_and(|r| r.block().is_read_only()));
            if !q.is_valid(mem) || used_ro {
                drop(q);
                self.needs_reset(&self.broken(
                    i,
                    "its descriptor table or rings are misaligned or not in (writable) RAM",
                ));
            }
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let regs = self.regs.lock();
        let qsel = regs.queue_sel as usize;
        let queue = |f: &dyn Fn(&Queue) -> u32| self.queues.get(qsel).map_or(0, |q| f(&q.lock()));
        match offset {
            R_MAGIC => MAGIC,
            R_VERSION => VERSION,
            R_DEVICE_ID => self.device.device_type(),
            R_VENDOR_ID => VENDOR,
            R_DEVICE_FEATURES => match regs.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            R_QUEUE_NUM_MAX => queue(&|q| u32::from(q.max_size())),
            R_QUEUE_READY => queue(&|q| u32::from(q.ready())),
            R_INTERRUPT_STATUS => self.interrupt_status(),
            R_STATUS => self.status(),
            R_CONFIG_GENERATION => 0, // the config never changes
            _ => 0,
        }
    }

    fn write_reg(&self, access: &Access<'_>, offset: u64, v: u32) {
        let mut regs = self.regs.lock();
        let qsel = regs.queue_sel as usize;
        let status = self.status();
        // Queue registers may change only while the queue is not ready (virtio 1.2, 4.2.2.2).
        let with_queue = |f: &mut dyn FnMut(&mut Queue)| {
            if let Some(q) = self.queues.get(qsel) {
                let mut q = q.lock();
                if q.ready() {
                    log::warn!(
                        "virtio {}: queue {qsel} reconfigured while ready; ignored",
                        self.device.name()
                    );
                } else {
                    f(&mut q);
                }
            }
        };
        match offset {
            R_DEVICE_FEATURES_SEL => regs.device_features_sel = v,
            R_DRIVER_FEATURES_SEL => regs.driver_features_sel = v,
            R_DRIVER_FEATURES => {
                if status & S_FEATURES_OK != 0 {
                    return;
                }
                match regs.driver_features_sel {
                    0 => {
                        regs.driver_features = (regs.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        regs.driver_features =
                            (regs.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            R_QUEUE_SEL => regs.queue_sel = v,
            R_QUEUE_NUM => {
                let mut bad = false;
                with_queue(&mut |q| {
                    bad = u16::try_from(v).map_or(true, |n| q.try_set_size(n).is_err());
                });
                if bad {
                    drop(regs);
                    self.needs_reset(&self.broken(
                        qsel,
                        format!("queue size {v} is not a power of two in 1..=QueueNumMax"),
                    ));
                }
            }
            R_QUEUE_READY => with_queue(&mut |q| q.set_ready(v & 1 == 1)),
            R_QUEUE_DESC_LOW => with_queue(&mut |q| q.set_desc_table_address(Some(v), None)),
            R_QUEUE_DESC_HIGH => with_queue(&mut |q| q.set_desc_table_address(None, Some(v))),
            R_QUEUE_DRIVER_LOW => with_queue(&mut |q| q.set_avail_ring_address(Some(v), None)),
            R_QUEUE_DRIVER_HIGH => with_queue(&mut |q| q.set_avail_ring_address(None, Some(v))),
            R_QUEUE_DEVICE_LOW => with_queue(&mut |q| q.set_used_ring_address(Some(v), None)),
            R_QUEUE_DEVICE_HIGH => with_queue(&mut |q| q.set_used_ring_address(None, Some(v))),
            NOTIFY_OFFSET => match self.notify.get(v as usize) {
                // No work on the vCPU: the main loop serves the queue.
                Some(fd) => {
                    if let Err(e) = fd.write(1) {
                        log::warn!("virtio {}: notify eventfd: {e}", self.device.name());
                    }
                }
                None => log::debug!("virtio {}: notify of queue {v}", self.device.name()),
            },
            R_INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!v, Ordering::AcqRel);
            }
            R_STATUS => self.write_status(access, &mut regs, v),
            _ => {}
        }
    }
}

impl BusDevice for VirtioMmio {
    fn name(&self) -> &str {
        self.device.name()
    }

    fn read(&self, _access: &Access<'_>, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&self, access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        if offset >= CONFIG_OFFSET {
            self.device.write_config(offset - CONFIG_OFFSET, data);
        } else if let (Ok(b), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_reg(access, offset, u32::from_le_bytes(b));
        }
        None
    }
}
