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

use std::path::PathBuf;

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
    fn from_str(s: &str) -> Result<Self, String> {
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
