//! The VM's virtio-mmio devices: the disks of `--disk`.
//!
//! Each disk is a [`devices::virtio::Block`] behind a [`devices::virtio::VirtioMmio`]
//! transport in its own slot of the guest-physical layout's virtio window (base, length and
//! GSI from [`crate::x86_64::layout`]), described to the guest in the DSDT. KVM delivers
//! the queue notifications: the transport's notify eventfd is registered with
//! `KVM_IOEVENTFD` at the QueueNotify register, so a notifying vCPU does not even leave the
//! kernel; the main loop serves the queue when the eventfd fires (a handler in its RCU
//! list), reading guest memory inside a `read_lock` section of the VM's domain. The
//! interrupt goes back through an irqfd. A request never runs on a vCPU thread.

use crate::error::{io, kvm as kvm_err, Error, Result};
use crate::kvm::vm::VmShared;
use crate::x86_64::layout::{virtio_mmio_slot, VirtioMmioSlot, VIRTIO_MMIO_SLOTS};
use devices::virtio::{Block, VirtioMmio, NOTIFY_OFFSET};
use iohandler::LoopHandle;
use kvm_ioctls::{IoEventAddress, VmFd};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// `--disk PATH[,ro]`: a raw image file the guest sees as `/dev/vdX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file.
    pub path: PathBuf,
    /// Read-only (`,ro`): the guest sees `VIRTIO_BLK_F_RO` and writes fail.
    pub read_only: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// `PATH`, `PATH,ro` or `PATH,rw`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            Some((_, other)) => {
                return Err(format!(
                    "'{s}': unknown disk option '{other}'; write PATH, PATH,ro or PATH,rw"
                ))
            }
            None => (s, false),
        };
        if path.is_empty() {
            return Err(format!("'{s}': the disk needs an image file: PATH[,ro]"));
        }
        Ok(DiskConfig {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

/// A disk set up: its transport on the MMIO bus and the slot it lives in.
pub struct Disk {
    /// Where its registers are and which GSI it interrupts on.
    pub slot: VirtioMmioSlot,
    /// The virtio-mmio transport in front of the block device.
    pub transport: Arc<VirtioMmio>,
}

/// The slots of `count` disks, in order, or an error when the layout has too few.
pub fn slots(count: usize) -> Result<Vec<VirtioMmioSlot>> {
    (0..count)
        .map(|i| {
            u32::try_from(i)
                .ok()
                .and_then(virtio_mmio_slot)
                .ok_or(Error::TooManyDisks {
                    asked: count,
                    max: VIRTIO_MMIO_SLOTS as usize,
                })
        })
        .collect()
}

/// Opens every `--disk` image once (and locks it), before any KVM object exists, so that a
/// missing, unreadable or locked image is a clear error with nothing to undo; each with the
/// layout slot it gets.
pub fn open(disks: &[DiskConfig]) -> Result<Vec<(VirtioMmioSlot, Block)>> {
    let slots = slots(disks.len())?;
    disks
        .iter()
        .zip(slots)
        .enumerate()
        .map(|(i, (d, slot))| {
            let block = Block::open(&d.path, d.read_only).map_err(|source| Error::Disk {
                path: d.path.clone(),
                source,
            })?;
            Ok((
                slot,
                block.with_serial(&format!("rvmm-vd{}", disk_letter(i))),
            ))
        })
        .collect()
}

/// `a` for the first disk (`/dev/vda`), `b` for the second, ...
fn disk_letter(i: usize) -> char {
    char::from(b'a' + (i % 26) as u8)
}

/// Puts each opened disk ([`open`]) on the MMIO bus in its slot: the transport, its irqfd on the slot's
/// GSI and an ioeventfd on its QueueNotify register per queue. The descriptors a vCPU may
/// write (the notify eventfds, when KVM does not catch the write; the irqfd) join
/// [`VmShared::vcpu_write_fds`].
pub fn attach(
    vm: &VmFd,
    shared: &VmShared,
    opened: Vec<(VirtioMmioSlot, Block)>,
) -> Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for (slot, block) in opened {
        let irq = EventFd::new(EFD_NONBLOCK).map_err(io("creating a disk's irq eventfd"))?;
        vm.register_irqfd(&irq, slot.gsi)
            .map_err(kvm_err("KVM_IRQFD (virtio-mmio)"))?;
        let transport = Arc::new(VirtioMmio::new(Arc::new(block), shared.ram.clone(), irq)?);
        let mut fds = vec![transport.irq_eventfd().as_raw_fd()];
        for q in 0..transport.num_queues() {
            let Some(fd) = transport.notify_eventfd(q) else {
                continue;
            };
            // 4-byte writes of the queue's index: the datamatch's type says the width.
            let index = u32::try_from(q).unwrap_or(u32::MAX);
            vm.register_ioevent(fd, &IoEventAddress::Mmio(slot.base + NOTIFY_OFFSET), index)
                .map_err(kvm_err("KVM_IOEVENTFD (virtio-mmio QueueNotify)"))?;
            fds.push(fd.as_raw_fd());
        }
        shared
            .mmio
            .insert(slot.base, slot.size, transport.clone())?;
        shared.add_vcpu_write_fds(&fds);
        disks.push(Disk { slot, transport });
    }
    Ok(disks)
}

/// Serves the disks' queues on the main loop: one read handler per notify eventfd, which
/// serves its queue inside a `read_lock` section of `shared`'s RCU domain (the RAM list is
/// read through it). A queue the guest broke is logged; the device then waits for the
/// driver's reset.
pub fn attach_loop(disks: &[Disk], shared: &VmShared, h: &LoopHandle) -> iohandler::Result<()> {
    for d in disks {
        for q in 0..d.transport.num_queues() {
            let Some(fd) = d.transport.notify_eventfd(q) else {
                continue;
            };
            let (t, rcu) = (d.transport.clone(), shared.rcu.clone());
            h.set_read_handler(fd.as_raw_fd(), move || {
                let guard = rcu.read_lock();
                if let Err(e) = t.process_queue(q, &guard) {
                    log::warn!("virtio-blk: {e}");
                }
            })?;
        }
    }
    Ok(())
}

/// The kernel command-line words that announce `disks` to a kernel built with
/// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` (`--virtio-cmdline`; the DSDT announces them to
/// every ACPI kernel).
pub fn cmdline(disks: &[VirtioMmioSlot]) -> String {
    disks
        .iter()
        .map(|s| s.cmdline())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_arguments_parse_with_and_without_options() {
        let d: DiskConfig = "root.img".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("root.img"));
        assert!(!d.read_only);
        let d: DiskConfig = "/x/y.img,ro".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/x/y.img"));
        assert!(d.read_only);
        assert!(!"a,b.img,rw".parse::<DiskConfig>().unwrap().read_only);
        for bad in ["", ",ro", "x.img,readonly"] {
            let e = bad.parse::<DiskConfig>().unwrap_err();
            assert!(e.contains("PATH"), "{bad}: {e}");
        }
    }
}
