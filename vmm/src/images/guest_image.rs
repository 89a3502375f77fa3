//! The built-in test guest: a small freestanding x86_64 kernel packaged as a bzImage, built
//! from `guest/` by `build.rs` (see guest/README.md for its interface: image layout, entry
//! state, ports, command line and output lines). `vmm` boots it when given no `--kernel`.

/// The guest's bzImage bytes (setup sectors, then the protected-mode part that loads at
/// 0x100000 with the 64-bit entry at 0x100200).
pub const GUEST_BZIMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.bzImage"));
