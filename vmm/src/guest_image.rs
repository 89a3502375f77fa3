//! The built-in test guest (placeholder until build.rs builds it).
/// The bzImage bytes.
pub const GUEST_BZIMAGE: &[u8] = &[];
