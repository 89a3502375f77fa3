//! Guest images: the built-in test guest and the Linux guest's initramfs.

pub mod guest_image;
pub mod initramfs;
pub mod kmod;
