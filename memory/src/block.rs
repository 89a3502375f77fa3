//! [`RamBlock`]: one contiguous piece of guest RAM backed by an anonymous host mapping.

use crate::error::{Error, Result};
use crate::host::{self, Advice, HostMapping};
use crate::list::ListCounters;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::VolatileSlice;

/// Flags of a [`RamBlock`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockFlags(u32);

impl BlockFlags {
    /// The guest sees the block read-only: listeners are told (the VMM sets
    /// `KVM_MEM_READONLY`), and this crate's guest-access writes are refused. The host mapping
    /// itself stays writable, so the VMM can load ROM contents (also through vm-memory).
    pub const READ_ONLY: BlockFlags = BlockFlags(1);
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`); ignored where THP is unavailable.
    pub const HUGEPAGES: BlockFlags = BlockFlags(2);
    /// Leave the block out of core dumps (`MADV_DONTDUMP`).
    pub const NO_DUMP: BlockFlags = BlockFlags(4);

    /// No flags.
    pub const fn empty() -> BlockFlags {
        BlockFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: BlockFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for BlockFlags {
    type Output = BlockFlags;
    fn bitor(self, rhs: BlockFlags) -> BlockFlags {
        BlockFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for BlockFlags {
    fn bitor_assign(&mut self, rhs: BlockFlags) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Debug for BlockFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names = Vec::new();
        for (flag, name) in [
            (BlockFlags::READ_ONLY, "READ_ONLY"),
            (BlockFlags::HUGEPAGES, "HUGEPAGES"),
            (BlockFlags::NO_DUMP, "NO_DUMP"),
        ] {
            if self.contains(flag) {
                names.push(name);
            }
        }
        if names.is_empty() {
            f.write_str("BlockFlags(empty)")
        } else {
            write!(f, "BlockFlags({})", names.join(" | "))
        }
    }
}

/// A process-unique identity of a [`RamBlock`], assigned when the block is created (so a
/// writer knows it before the block is published).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(u64);

impl BlockId {
    /// The id as a number (never 0).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

fn next_block_id() -> BlockId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    BlockId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Called once, just before a block's memory is (poisoned and) unmapped.
pub type UnmapHook = Box<dyn FnOnce(&RamBlock) + Send + 'static>;

/// A contiguous piece of guest RAM: `size` bytes at guest-physical `gpa`, backed by a private
/// anonymous host mapping that lives exactly as long as the block.
///
/// Blocks are created (and validated) on their own, then moved into a
/// [`RamList`](crate::RamList), which shares them with readers. The mapping is unmapped when
/// the last reference goes away, which for a block removed from a list is after a grace period.
pub struct RamBlock {
    id: BlockId,
    name: String,
    gpa: u64,
    size: u64,
    flags: BlockFlags,
    mapping: HostMapping,
    slot: Option<u32>,
    counters: Option<Arc<ListCounters>>,
    poison: Option<u8>,
    on_unmap: Mutex<Option<UnmapHook>>,
}

impl std::fmt::Debug for RamBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamBlock")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("gpa", &format_args!("{:#x}", self.gpa))
            .field("size", &format_args!("{:#x}", self.size))
            .field("flags", &self.flags)
            .field("slot", &self.slot)
            .field("host", &self.mapping)
            .finish()
    }
}

/// Builds a [`RamBlock`] with options beyond [`RamBlock::new`].
#[must_use]
pub struct RamBlockBuilder {
    name: String,
    gpa: u64,
    size: u64,
    flags: BlockFlags,
    poison: Option<u8>,
    on_unmap: Option<UnmapHook>,
}

impl RamBlockBuilder {
    /// Adds `flags`.
    pub fn flags(mut self, flags: BlockFlags) -> Self {
        self.flags |= flags;
        self
    }

    /// [`BlockFlags::READ_ONLY`].
    pub fn read_only(self) -> Self {
        self.flags(BlockFlags::READ_ONLY)
    }

    /// [`BlockFlags::HUGEPAGES`].
    pub fn hugepages(self) -> Self {
        self.flags(BlockFlags::HUGEPAGES)
    }

    /// [`BlockFlags::NO_DUMP`].
    pub fn no_dump(self) -> Self {
        self.flags(BlockFlags::NO_DUMP)
    }

    /// Test aid: fill the memory with `byte` just before it is unmapped, so that a reader
    /// that (wrongly) still reads it sees the poison, if it does not fault. Only with the
    /// `testing` feature.
    #[cfg(feature = "testing")]
    pub fn poison_on_unmap(mut self, byte: u8) -> Self {
        self.poison = Some(byte);
        self
    }

    /// Calls `hook` once, just before the memory is poisoned and unmapped (on whichever thread
    /// drops the last reference: for a block removed from a list, the RCU reclamation thread).
    /// Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn on_unmap(mut self, hook: impl FnOnce(&RamBlock) + Send + 'static) -> Self {
        self.on_unmap = Some(Box::new(hook));
        self
    }

    /// Validates the parameters and maps the memory (zero-filled).
    pub fn build(self) -> Result<RamBlock> {
        let RamBlockBuilder {
            name,
            gpa,
            size,
            flags,
            poison,
            on_unmap,
        } = self;
        let page = host::page_size();
        if name.is_empty() {
            return Err(Error::EmptyName { gpa });
        }
        if size == 0 {
            return Err(Error::ZeroSize { name, gpa });
        }
        if gpa % page != 0 {
            return Err(Error::UnalignedAddress { name, gpa, page });
        }
        if size % page != 0 {
            return Err(Error::UnalignedSize {
                name,
                gpa,
                size,
                page,
            });
        }
        // The last byte must be addressable; a block may end exactly at 2^64.
        if gpa.checked_add(size - 1).is_none() {
            return Err(Error::AddressWrap { name, gpa, size });
        }
        let len = match usize::try_from(size) {
            Ok(len) if len <= isize::MAX as usize => len,
            _ => return Err(Error::TooLarge { name, gpa, size }),
        };
        let mapping = match HostMapping::new(len) {
            Ok(m) => m,
            Err(source) => {
                return Err(Error::Mmap {
                    name,
                    gpa,
                    size,
                    source,
                })
            }
        };
        if flags.contains(BlockFlags::NO_DUMP) {
            if let Err(source) = mapping.advise(Advice::DontDump) {
                return Err(Error::Madvise {
                    name,
                    gpa,
                    advice: Advice::DontDump.name(),
                    source,
                });
            }
        }
        if flags.contains(BlockFlags::HUGEPAGES) {
            match mapping.advise(Advice::HugePage) {
                Ok(()) => {}
                // Kernels without transparent huge pages: the hint is only a hint.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!("RAM block '{name}': MADV_HUGEPAGE unsupported, ignored");
                }
                Err(source) => {
                    return Err(Error::Madvise {
                        name,
                        gpa,
                        advice: Advice::HugePage.name(),
                        source,
                    })
                }
            }
        }
        Ok(RamBlock {
            id: next_block_id(),
            name,
            gpa,
            size,
            flags,
            mapping,
            slot: None,
            counters: None,
            poison,
            on_unmap: Mutex::new(on_unmap),
        })
    }
}

impl RamBlock {
    /// A block of `size` bytes of zeroed RAM at guest-physical `gpa`.
    ///
    /// Fails (with an error naming the block) if the name is empty, the size is zero, the base
    /// or size is not a multiple of the host page size, the block would extend past the end of
    /// the 64-bit address space, or the mapping fails.
    pub fn new(name: impl Into<String>, gpa: u64, size: u64, flags: BlockFlags) -> Result<Self> {
        Self::builder(name, gpa, size).flags(flags).build()
    }

    /// A builder, for flags and debugging options.
    pub fn builder(name: impl Into<String>, gpa: u64, size: u64) -> RamBlockBuilder {
        RamBlockBuilder {
            name: name.into(),
            gpa,
            size,
            flags: BlockFlags::empty(),
            poison: None,
            on_unmap: None,
        }
    }

    /// The block's process-unique id.
    pub fn id(&self) -> BlockId {
        self.id
    }

    /// The block's name (unique within a list).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The guest-physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The guest-physical address of the last byte (`gpa + size - 1`; never overflows).
    pub fn last_gpa(&self) -> u64 {
        self.gpa + (self.size - 1)
    }

    /// The flags.
    pub fn flags(&self) -> BlockFlags {
        self.flags
    }

    /// Whether the guest sees this block read-only.
    pub fn is_read_only(&self) -> bool {
        self.flags.contains(BlockFlags::READ_ONLY)
    }

    /// The small integer a [`RamList`](crate::RamList) gave the block (lowest free, reused
    /// after removal): what a VMM can use as its KVM memory slot. `None` outside a list.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// The host address of the first byte. Valid while the block is alive; what the VMM
    /// passes to `KVM_SET_USER_MEMORY_REGION`.
    pub fn host_ptr(&self) -> *mut u8 {
        self.mapping.ptr().add(0)
    }

    /// Whether `gpa` lies in this block.
    #[inline]
    pub fn contains(&self, gpa: u64) -> bool {
        gpa.wrapping_sub(self.gpa) < self.size
    }

    /// The host address of `gpa`, if it lies in this block.
    #[inline]
    pub fn host_addr(&self, gpa: u64) -> Option<*mut u8> {
        let off = gpa.wrapping_sub(self.gpa);
        (off < self.size).then(|| self.mapping.ptr().add(off))
    }

    /// The range `[offset, offset + len)` of this block (offsets relative to the block).
    pub fn range(&self, offset: u64, len: usize) -> Result<GuestRange<'_>> {
        let gpa = self.gpa.wrapping_add(offset);
        if offset >= self.size {
            return Err(Error::NotRam { gpa });
        }
        GuestRange::new(self, offset, len)
    }

    /// A volatile view of the whole block.
    pub fn volatile_slice(&self) -> VolatileSlice<'_> {
        self.mapping.full()
    }

    /// Host-side read of `buf.len()` bytes at block offset `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.range(offset, buf.len())?.volatile_slice().copy_to(buf);
        Ok(())
    }

    /// Host-side write at block offset `offset` (allowed on read-only blocks: this is how ROM
    /// contents are loaded).
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.range(offset, buf.len())?
            .volatile_slice()
            .copy_from(buf);
        Ok(())
    }

    pub(crate) fn host(&self) -> crate::host::HostPtr {
        self.mapping.ptr()
    }

    pub(crate) fn set_slot(&mut self, slot: u32) {
        self.slot = Some(slot);
    }

    pub(crate) fn set_counters(&mut self, counters: Arc<ListCounters>) {
        self.counters = Some(counters);
    }

    /// Runs the hook, poisons and unmaps; counts the unmap.
    ///
    /// # Safety
    ///
    /// As [`HostMapping::unmap_shared`]: nothing accesses the block's memory afterwards.
    #[cfg(feature = "testing")]
    pub(crate) unsafe fn unmap_now(&self) {
        if let Some(hook) = self.on_unmap.lock().take() {
            hook(self);
        }
        // SAFETY: forwarded from this function's contract.
        if unsafe { self.mapping.unmap_shared(self.poison) } {
            if let Some(c) = &self.counters {
                c.unmapped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for RamBlock {
    fn drop(&mut self) {
        if let Some(hook) = self.on_unmap.get_mut().take() {
            hook(self);
        }
        if self.mapping.unmap(self.poison) {
            if let Some(c) = &self.counters {
                c.unmapped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A guest-physical range that lies entirely inside one [`RamBlock`], borrowed for as long as
/// the reader (or owner) that found the block.
#[derive(Clone, Copy, Debug)]
pub struct GuestRange<'a> {
    block: &'a RamBlock,
    offset: u64,
    slice: VolatileSlice<'a>,
}

impl<'a> GuestRange<'a> {
    /// `[offset, offset + len)` of `block`, checked. `offset < block.size` is the caller's.
    pub(crate) fn new(block: &'a RamBlock, offset: u64, len: usize) -> Result<Self> {
        let gpa = block.gpa.wrapping_add(offset);
        let len64 = len as u64; // usize is 64 bits (vm-memory requires it)
        let avail = block.size - offset;
        if len64 > avail {
            // len64 > avail >= 1, so `len64 - 1` cannot underflow.
            return Err(if gpa.checked_add(len64 - 1).is_none() {
                Error::RangeOverflow { gpa, len: len64 }
            } else {
                Error::CrossesBlock {
                    gpa,
                    len: len64,
                    block_gpa: block.gpa,
                    block_last: block.last_gpa(),
                }
            });
        }
        // offset < size <= isize::MAX and len <= size - offset: both fit and the view exists.
        match block.mapping.volatile(offset as usize, len) {
            Some(slice) => Ok(GuestRange {
                block,
                offset,
                slice,
            }),
            None => Err(Error::CrossesBlock {
                gpa,
                len: len64,
                block_gpa: block.gpa,
                block_last: block.last_gpa(),
            }),
        }
    }

    /// The guest-physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.block.gpa + self.offset
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.slice.len() == 0
    }

    /// The block the range lies in.
    pub fn block(&self) -> &'a RamBlock {
        self.block
    }

    /// The offset of the range inside its block.
    pub fn offset_in_block(&self) -> u64 {
        self.offset
    }

    /// The host address of the first byte (for callers that do their own `unsafe`, e.g. DMA
    /// or an iovec). Valid for the range's lifetime.
    pub fn host_ptr(&self) -> *mut u8 {
        self.block.mapping.ptr().add(self.offset)
    }

    /// A volatile view of the range (vm-memory's accessors: `copy_to`, `copy_from`, `read_obj`,
    /// `write_obj`, atomic `load`/`store`, …).
    pub fn volatile_slice(&self) -> VolatileSlice<'a> {
        self.slice
    }
}
