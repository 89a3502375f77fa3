//! The crate's one error type.

use crate::block::BlockId;

/// A boxed error from a [`MemoryListener`](crate::MemoryListener).
pub type ListenerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// Errors about a block name it (and, for overlaps, both blocks); errors about guest accesses
/// carry only numbers, so that a guest probing bad addresses costs no allocation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block was given an empty name.
    #[error("RAM block at {gpa:#x}: the name is empty")]
    EmptyName {
        /// The block's guest-physical base.
        gpa: u64,
    },
    /// A block's size is zero.
    #[error("RAM block '{name}' at {gpa:#x}: the size is zero")]
    ZeroSize {
        /// The block's name.
        name: String,
        /// The block's guest-physical base.
        gpa: u64,
    },
    /// A block's size is not a multiple of the host page size.
    #[error(
        "RAM block '{name}' at {gpa:#x}: size {size:#x} is not a multiple of the host page size \
         ({page:#x})"
    )]
    UnalignedSize {
        /// The block's name.
        name: String,
        /// The block's guest-physical base.
        gpa: u64,
        /// The requested size.
        size: u64,
        /// The host page size.
        page: u64,
    },
    /// A block's guest-physical base is not page-aligned.
    #[error(
        "RAM block '{name}': guest-physical base {gpa:#x} is not aligned to the host page size \
         ({page:#x})"
    )]
    UnalignedAddress {
        /// The block's name.
        name: String,
        /// The requested base.
        gpa: u64,
        /// The host page size.
        page: u64,
    },
    /// A block's end lies beyond the 64-bit guest-physical address space.
    #[error(
        "RAM block '{name}': [{gpa:#x}, +{size:#x}) wraps around the end of the 64-bit \
         guest-physical address space"
    )]
    AddressWrap {
        /// The block's name.
        name: String,
        /// The requested base.
        gpa: u64,
        /// The requested size.
        size: u64,
    },
    /// A block is larger than the host can map.
    #[error("RAM block '{name}' at {gpa:#x}: size {size:#x} is larger than the host can map")]
    TooLarge {
        /// The block's name.
        name: String,
        /// The block's guest-physical base.
        gpa: u64,
        /// The requested size.
        size: u64,
    },
    /// `mmap` failed.
    #[error("RAM block '{name}' at {gpa:#x}: mmap of {size:#x} bytes failed: {source}")]
    Mmap {
        /// The block's name.
        name: String,
        /// The block's guest-physical base.
        gpa: u64,
        /// The requested size.
        size: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// `madvise` failed.
    #[error("RAM block '{name}' at {gpa:#x}: madvise({advice}) failed: {source}")]
    Madvise {
        /// The block's name.
        name: String,
        /// The block's guest-physical base.
        gpa: u64,
        /// Which advice (`MADV_HUGEPAGE`, `MADV_DONTDUMP`).
        advice: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A block overlaps one already in the list.
    #[error(
        "RAM block '{name}' [{gpa:#x}..={last:#x}] overlaps RAM block '{other}' \
         [{other_gpa:#x}..={other_last:#x}]"
    )]
    Overlap {
        /// The new block's name.
        name: String,
        /// The new block's first byte.
        gpa: u64,
        /// The new block's last byte.
        last: u64,
        /// The existing block's name.
        other: String,
        /// The existing block's first byte.
        other_gpa: u64,
        /// The existing block's last byte.
        other_last: u64,
    },
    /// A block's name is already used by another block in the list.
    #[error(
        "RAM block '{name}' at {gpa:#x}: the name is already used by the block at {other_gpa:#x}"
    )]
    DuplicateName {
        /// The name.
        name: String,
        /// The new block's base.
        gpa: u64,
        /// The existing block's base.
        other_gpa: u64,
    },
    /// No block with this id is in the list.
    #[error("no RAM block with id {0} in this list")]
    NoSuchBlock(BlockId),
    /// No listener with this id is registered.
    #[error("no memory listener with id {0}")]
    NoSuchListener(u64),
    /// A listener refused a block; the list is unchanged.
    #[error("memory listener refused RAM block '{name}' at {gpa:#x}: {source}")]
    Listener {
        /// The block's name.
        name: String,
        /// The block's guest-physical base.
        gpa: u64,
        /// What the listener said.
        source: ListenerError,
    },
    /// A guest-physical address is not backed by any block.
    #[error("guest-physical address {gpa:#x} is not RAM")]
    NotRam {
        /// The first address of the access that is not RAM.
        gpa: u64,
    },
    /// `gpa + len` does not fit in 64 bits.
    #[error("guest range {gpa:#x} + {len:#x} overflows the 64-bit address space")]
    RangeOverflow {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: u64,
    },
    /// A range that must lie in one block runs past the end of the block it starts in.
    #[error(
        "guest range [{gpa:#x}, +{len:#x}) runs past the end of the RAM block \
         [{block_gpa:#x}..={block_last:#x}]"
    )]
    CrossesBlock {
        /// Start of the access.
        gpa: u64,
        /// Length of the access.
        len: u64,
        /// First byte of the block it starts in.
        block_gpa: u64,
        /// Last byte of that block.
        block_last: u64,
    },
    /// A guest write to a read-only block.
    #[error("guest write to read-only RAM at {gpa:#x} refused")]
    ReadOnly {
        /// Start of the refused part of the access.
        gpa: u64,
    },
}

/// This crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
