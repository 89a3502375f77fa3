//! [`RamList`]: the address-ordered list of RAM blocks, published through RCU, and
//! [`RamSnapshot`], one immutable version of it, with the per-reader MRU hint ([`MruHint`]).

use crate::block::{BlockId, GuestRange, RamBlock};
use crate::error::{Error, ListenerError, Result};
use crate::host::HostPtr;
use parking_lot::Mutex;
use rcu::{Rcu, RcuCell, ReadSide};
use std::collections::BTreeSet;
use std::iter::FusedIterator;
#[cfg(feature = "testing")]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::ByteValued;

/// Told when blocks come and go, so that a VMM can mirror them into KVM memory slots
/// (`KVM_SET_USER_MEMORY_REGION`) without this crate knowing about KVM.
///
/// Called by writers, under the list's writer lock, in QEMU's transaction shape: every change
/// of the list (an add, a remove, a replace or resize, and a listener's registration or
/// removal, which replay the current blocks to it) is one transaction,
///
/// * [`begin`](Self::begin) on every listener (registration order), before the list checks
///   the change;
/// * `region_add` in registration order and `region_del` in reverse order, for each block
///   that comes or goes (a refused `region_add` is rolled back with `region_del` on the
///   listeners that had accepted it);
/// * the new version is published (unless the change was refused);
/// * [`commit`](Self::commit) on every listener (registration order), always, on the same
///   thread and still under the writer lock.
///
/// `region_del` is called before the block is unpublished, and the block's memory stays
/// mapped until a grace period later, so a listener may use the host address until
/// `region_del` returns. The block carries everything a slot needs:
/// [`slot`](RamBlock::slot), [`gpa`](RamBlock::gpa), [`size`](RamBlock::size),
/// [`host_ptr`](RamBlock::host_ptr), [`flags`](RamBlock::flags).
pub trait MemoryListener: Send + Sync {
    /// A transaction begins (see the trait docs). Default: nothing.
    fn begin(&self) {}
    /// A block is being added (or replaces another). An error refuses it: the list is left
    /// unchanged, and listeners that already accepted it get `region_del`.
    fn region_add(&self, block: &RamBlock) -> Result<(), ListenerError>;
    /// A block is being removed (or replaced).
    fn region_del(&self, block: &RamBlock);
    /// The transaction ends, after the publication (or after a refused change was rolled
    /// back). Called once for every `begin`. Default: nothing.
    fn commit(&self) {}
}

/// Calls `commit` on the listeners when dropped, so a transaction ends even if a listener
/// panics in the middle of it.
struct Transaction {
    listeners: Vec<Arc<dyn MemoryListener>>,
}

impl Transaction {
    fn begin(listeners: Vec<Arc<dyn MemoryListener>>) -> Self {
        for l in &listeners {
            l.begin();
        }
        Transaction { listeners }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.commit();
        }
    }
}

/// Names a registered [`MemoryListener`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// A reader's most-recently-used block: `(snapshot version, index)` plus a copy of that
/// block's bounds and host address, and hit/miss counts.
///
/// Each reader owns one (a vCPU keeps it in its own state), so a lookup writes only to memory
/// that no other thread touches. A hint is valid only for the snapshot version it was filled
/// from; any writer publishes a new version, which invalidates every hint at once (so a hint
/// never points at a removed block). Versions are unique across all lists of the process, and
/// a snapshot never changes, so while the version matches, the copied bounds are the block's:
/// a hit reads the snapshot's version and nothing else of it.
///
/// The hint is adaptive: after [`TRUST_MAX`](Self::TRUST_MAX) consecutive misses the reader
/// stops checking it (for a reader with no locality, e.g. uniformly random accesses, the check
/// is pure overhead), and resumes as soon as a search lands in the hinted block again. A hit
/// restores full trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MruHint {
    version: u64,
    start: u64,
    size: u64,
    host: HostPtr,
    index: usize,
    hits: u64,
    misses: u64,
    trust: u8,
}

impl Default for MruHint {
    fn default() -> Self {
        Self::new()
    }
}

impl MruHint {
    /// How many misses in a row a reader tolerates before it stops checking its hint.
    pub const TRUST_MAX: u8 = 3;

    /// An empty hint (its first lookup misses).
    pub const fn new() -> MruHint {
        MruHint {
            version: 0,
            start: 0,
            size: 0,
            host: HostPtr::DANGLING,
            index: 0,
            hits: 0,
            misses: 0,
            trust: MruHint::TRUST_MAX,
        }
    }

    /// Lookups answered by the hinted block.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that had to search (including those that found nothing).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Zeroes the counts (keeps the hint).
    pub fn reset_counts(&mut self) {
        self.hits = 0;
        self.misses = 0;
    }
}

fn next_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What the lookup reads: the block's bounds and host address, inline, so that a hit touches
/// one snapshot and one entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    size: u64,
    host: HostPtr,
}

/// One immutable version of a [`RamList`]: its blocks sorted by address.
///
/// Readers get `&RamSnapshot` from [`RamList::snapshot`] (borrowing their read-side section);
/// owners get an `Arc<RamSnapshot>` from [`RamList::snapshot_owned`]. It implements
/// vm-memory's `GuestMemoryBackend` (and so `GuestMemory` and `Bytes<GuestAddress>`), so
/// rust-vmm crates such as linux-loader work on it.
///
/// Every method checks guest-controlled input with checked arithmetic and returns an error
/// instead of panicking.
#[derive(Debug)]
pub struct RamSnapshot {
    version: u64,
    entries: Vec<Entry>,
    blocks: Vec<Arc<RamBlock>>,
}

/// What readers see if the cell were ever empty (it never is).
static EMPTY: RamSnapshot = RamSnapshot {
    version: 0,
    entries: Vec::new(),
    blocks: Vec::new(),
};

impl RamSnapshot {
    fn new(version: u64, blocks: Vec<Arc<RamBlock>>) -> RamSnapshot {
        let entries = blocks
            .iter()
            .map(|b| Entry {
                start: b.gpa(),
                size: b.size(),
                host: b.host(),
            })
            .collect();
        RamSnapshot {
            version,
            entries,
            blocks,
        }
    }

    /// The version (unique in the process; a new one per write).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The blocks, sorted by guest-physical address.
    pub fn blocks(&self) -> &[Arc<RamBlock>] {
        &self.blocks
    }

    /// Binary search: the index of the block containing `gpa`.
    #[inline]
    fn search(&self, gpa: u64) -> Option<usize> {
        let n = self.entries.partition_point(|e| e.start <= gpa);
        let i = n.checked_sub(1)?;
        let e = self.entries.get(i)?;
        (gpa.wrapping_sub(e.start) < e.size).then_some(i)
    }

    /// The hinted block, if the hint is trusted, belongs to this snapshot and contains `gpa`:
    /// `gpa`'s offset in it.
    #[inline(always)]
    fn hinted(&self, hint: &mut MruHint, gpa: u64) -> Option<u64> {
        if hint.trust != 0 && hint.version == self.version {
            let off = gpa.wrapping_sub(hint.start);
            if off < hint.size {
                hint.hits = hint.hits.wrapping_add(1);
                hint.trust = MruHint::TRUST_MAX;
                return Some(off);
            }
            hint.trust -= 1;
        }
        None
    }

    /// After a missed (or skipped) hint: binary search, and remember the result.
    #[inline]
    fn search_and_hint(&self, hint: &mut MruHint, gpa: u64) -> Option<(usize, &Entry)> {
        hint.misses = hint.misses.wrapping_add(1);
        let i = self.search(gpa)?;
        let e = self.entries.get(i)?;
        // Invariant: while `trust != 0`, (start, size, host) are those of block `index` of
        // snapshot `version`. While `trust == 0` only `index` is kept up to date (one store):
        // two searches in a row landing on the same index mean locality is back (a false
        // positive across a version change only costs one unneeded check).
        if hint.trust != 0 || i == hint.index {
            hint.trust = hint.trust.max(1);
            hint.version = self.version;
            hint.start = e.start;
            hint.size = e.size;
            hint.host = e.host;
        }
        hint.index = i;
        Some((i, e))
    }

    #[inline(always)]
    fn lookup_index(&self, hint: &mut MruHint, gpa: u64) -> Option<usize> {
        match self.hinted(hint, gpa) {
            Some(_) => Some(hint.index),
            None => self.search_and_hint(hint, gpa).map(|(i, _)| i),
        }
    }

    /// The block containing `gpa` (binary search, no hint).
    pub fn find(&self, gpa: u64) -> Option<&RamBlock> {
        self.search(gpa)
            .and_then(|i| self.blocks.get(i))
            .map(|b| &**b)
    }

    /// The block containing `gpa`: the hinted block if it contains `gpa`, else a binary
    /// search, which updates the hint.
    #[inline]
    pub fn lookup(&self, hint: &mut MruHint, gpa: u64) -> Option<&RamBlock> {
        let i = self.lookup_index(hint, gpa)?;
        self.blocks.get(i).map(|b| &**b)
    }

    /// The host address of `gpa` (as [`lookup`](Self::lookup)). Valid while the snapshot is.
    #[inline]
    pub fn host_addr(&self, hint: &mut MruHint, gpa: u64) -> Option<*mut u8> {
        match self.hinted(hint, gpa) {
            Some(off) => Some(hint.host.add(off)),
            None => {
                let (_, e) = self.search_and_hint(hint, gpa)?;
                Some(e.host.add(gpa.wrapping_sub(e.start)))
            }
        }
    }

    /// `[gpa, gpa + len)` as one host range, if it lies entirely inside one block; else
    /// [`Error::NotRam`], [`Error::CrossesBlock`] or [`Error::RangeOverflow`]. A zero-length
    /// range is accepted at any RAM address.
    #[inline]
    pub fn translate(&self, hint: &mut MruHint, gpa: u64, len: usize) -> Result<GuestRange<'_>> {
        let block = self
            .lookup_index(hint, gpa)
            .and_then(|i| self.blocks.get(i))
            .ok_or(Error::NotRam { gpa })?;
        GuestRange::new(block, gpa.wrapping_sub(block.gpa()), len)
    }

    /// Splits `[gpa, gpa + len)` at block boundaries: one [`GuestRange`] per block, in
    /// address order. The first hole or overflow is reported as an error item, after which
    /// the iterator ends. Empty for `len == 0`.
    pub fn ranges(&self, gpa: u64, len: usize) -> Ranges<'_> {
        let len = len as u64; // usize is 64 bits (vm-memory requires it)
        let pending = (len > 0 && gpa.checked_add(len - 1).is_none())
            .then_some(Error::RangeOverflow { gpa, len });
        Ranges {
            snap: self,
            gpa,
            remaining: if pending.is_some() { 0 } else { len },
            pending,
        }
    }

    /// Reads `buf.len()` bytes at `gpa`; the range may span adjacent blocks. Nothing is read
    /// unless the whole range is RAM.
    pub fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        self.check_all(gpa, buf.len(), false)?;
        let mut done = 0usize;
        for r in self.ranges(gpa, buf.len()) {
            let r = r?;
            let end = done.saturating_add(r.len());
            let dst = buf
                .get_mut(done..end)
                .ok_or(Error::NotRam { gpa: r.gpa() })?;
            r.volatile_slice().copy_to(dst);
            done = end;
        }
        Ok(())
    }

    /// Writes `buf` at `gpa`, as the guest would: the range may span adjacent blocks; nothing
    /// is written unless the whole range is RAM and none of it is read-only.
    pub fn write_bytes(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        self.check_all(gpa, buf.len(), true)?;
        let mut done = 0usize;
        for r in self.ranges(gpa, buf.len()) {
            let r = r?;
            let end = done.saturating_add(r.len());
            let src = buf.get(done..end).ok_or(Error::NotRam { gpa: r.gpa() })?;
            r.volatile_slice().copy_from(src);
            done = end;
        }
        Ok(())
    }

    /// Reads a plain-old-data value at `gpa` (vm-memory's `read_obj`, with this crate's errors).
    pub fn read_val<T: ByteValued>(&self, gpa: u64) -> Result<T> {
        let mut v = T::zeroed();
        self.read_bytes(gpa, v.as_mut_slice())?;
        Ok(v)
    }

    /// Writes a plain-old-data value at `gpa`, refusing read-only RAM.
    pub fn write_val<T: ByteValued>(&self, gpa: u64, val: T) -> Result<()> {
        self.write_bytes(gpa, val.as_slice())
    }

    fn check_all(&self, gpa: u64, len: usize, write: bool) -> Result<()> {
        for r in self.ranges(gpa, len) {
            let r = r?;
            if write && r.block().is_read_only() {
                return Err(Error::ReadOnly { gpa: r.gpa() });
            }
        }
        Ok(())
    }
}

/// The pieces of a guest range, one per block; from [`RamSnapshot::ranges`].
#[derive(Debug)]
pub struct Ranges<'a> {
    snap: &'a RamSnapshot,
    gpa: u64,
    remaining: u64,
    pending: Option<Error>,
}

impl<'a> Ranges<'a> {
    fn step(&mut self) -> Result<GuestRange<'a>> {
        let gpa = self.gpa;
        let block = self
            .snap
            .search(gpa)
            .and_then(|i| self.snap.blocks.get(i))
            .ok_or(Error::NotRam { gpa })?;
        let off = gpa.wrapping_sub(block.gpa());
        // off < size, so at least one byte is available.
        let n = self.remaining.min(block.size() - off);
        let r = GuestRange::new(block, off, n as usize)?;
        self.remaining -= n;
        if self.remaining > 0 {
            // Cannot overflow: the whole range was checked to end at or below u64::MAX.
            self.gpa = gpa.checked_add(n).ok_or(Error::RangeOverflow {
                gpa,
                len: self.remaining,
            })?;
        }
        Ok(r)
    }
}

impl<'a> Iterator for Ranges<'a> {
    type Item = Result<GuestRange<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        if self.remaining == 0 {
            return None;
        }
        let item = self.step();
        if item.is_err() {
            self.remaining = 0;
        }
        Some(item)
    }
}

impl FusedIterator for Ranges<'_> {}

/// Counters shared between a list and its blocks (a block counts its own unmap).
#[derive(Debug, Default)]
pub(crate) struct ListCounters {
    pub(crate) unmapped: AtomicU64,
}

/// Counters of a [`RamList`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamListStats {
    /// The current snapshot's version.
    pub version: u64,
    /// Blocks in the current snapshot.
    pub blocks: usize,
    /// Successful `add`s.
    pub added: u64,
    /// Successful `remove`s.
    pub removed: u64,
    /// Successful `replace`s and `resize`s.
    pub replaced: u64,
    /// Blocks of this list whose memory has been unmapped (after a grace period, when removed
    /// or replaced; at the list's drop for the rest).
    pub unmapped: u64,
}

/// Keeps the bench-only shared hint on a cache line of its own.
#[cfg(feature = "testing")]
#[repr(align(128))]
#[derive(Debug, Default)]
struct CacheLine<T>(T);

struct WriterState {
    blocks: Vec<Arc<RamBlock>>,
    version: u64,
    free_slots: BTreeSet<u32>,
    next_slot: u32,
    listeners: Vec<(ListenerId, Arc<dyn MemoryListener>)>,
    next_listener: u64,
    added: u64,
    removed: u64,
    replaced: u64,
}

impl WriterState {
    fn index_of(&self, id: BlockId) -> Result<usize> {
        self.blocks
            .iter()
            .position(|b| b.id() == id)
            .ok_or(Error::NoSuchBlock(id))
    }

    fn alloc_slot(&mut self) -> u32 {
        match self.free_slots.pop_first() {
            Some(s) => s,
            None => {
                let s = self.next_slot;
                self.next_slot += 1;
                s
            }
        }
    }

    fn free_slot(&mut self, slot: Option<u32>) {
        if let Some(s) = slot {
            self.free_slots.insert(s);
        }
    }

    /// Checks `new` against every block but `except` (by index); returns where it goes in the
    /// list without `except`.
    fn check_fits(&self, new: &RamBlock, except: Option<usize>) -> Result<usize> {
        let mut pos = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            if b.name() == new.name() {
                return Err(Error::DuplicateName {
                    name: new.name().to_string(),
                    gpa: new.gpa(),
                    other_gpa: b.gpa(),
                });
            }
            if b.gpa() <= new.last_gpa() && new.gpa() <= b.last_gpa() {
                return Err(Error::Overlap {
                    name: new.name().to_string(),
                    gpa: new.gpa(),
                    last: new.last_gpa(),
                    other: b.name().to_string(),
                    other_gpa: b.gpa(),
                    other_last: b.last_gpa(),
                });
            }
            if b.gpa() < new.gpa() {
                pos += 1;
            }
        }
        Ok(pos)
    }

    /// Begins a transaction on every listener; it commits when the returned value drops
    /// (declare it after the writer guard, so that it drops first).
    fn transaction(&self) -> Transaction {
        Transaction::begin(self.listeners.iter().map(|(_, l)| l.clone()).collect())
    }

    fn notify_add(&self, block: &RamBlock) -> Result<()> {
        for (i, (_, l)) in self.listeners.iter().enumerate() {
            if let Err(source) = l.region_add(block) {
                for (_, l) in self.listeners[..i].iter().rev() {
                    l.region_del(block);
                }
                return Err(Error::Listener {
                    name: block.name().to_string(),
                    gpa: block.gpa(),
                    source,
                });
            }
        }
        Ok(())
    }

    fn notify_del(&self, block: &RamBlock) {
        for (_, l) in self.listeners.iter().rev() {
            l.region_del(block);
        }
    }
}

/// The guest's RAM: an address-ordered list of [`RamBlock`]s that readers look up with no
/// lock and writers replace with RCU.
///
/// * **Readers** (vCPU threads as [`QsbrThread`](rcu::QsbrThread)s, anyone else with a
///   [`ReadGuard`](rcu::ReadGuard)) call [`lookup`](Self::lookup),
///   [`host_addr`](Self::host_addr), [`translate`](Self::translate) or take the whole
///   [`snapshot`](Self::snapshot). Each passes its own [`MruHint`]; a lookup checks the hinted
///   block, then binary-searches, and writes nothing shared.
/// * **Writers** ([`add`](Self::add), [`remove`](Self::remove), [`replace`](Self::replace),
///   [`resize`](Self::resize)) serialize on a writer mutex, tell the listeners, publish a new
///   snapshot (new version) and retire the old one through `call_rcu`. A removed block's
///   memory is unmapped when the last snapshot holding it is freed: after a grace period.
pub struct RamList {
    cell: RcuCell<RamSnapshot>,
    /// The benchmark-only shared MRU index ([`RamList::host_addr_shared_hint`]).
    #[cfg(feature = "testing")]
    shared_mru: CacheLine<AtomicUsize>,
    counters: Arc<ListCounters>,
    writer: Mutex<WriterState>,
}

impl std::fmt::Debug for RamList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamList")
            .field("stats", &self.stats())
            .finish()
    }
}

impl RamList {
    /// An empty list whose readers and grace periods are those of `rcu`.
    pub fn new(rcu: &Rcu) -> RamList {
        let version = next_version();
        RamList {
            cell: RcuCell::new_in(rcu, Some(RamSnapshot::new(version, Vec::new()))),
            #[cfg(feature = "testing")]
            shared_mru: CacheLine::default(),
            counters: Arc::default(),
            writer: Mutex::new(WriterState {
                blocks: Vec::new(),
                version,
                free_slots: BTreeSet::new(),
                next_slot: 0,
                listeners: Vec::new(),
                next_listener: 1,
                added: 0,
                removed: 0,
                replaced: 0,
            }),
        }
    }

    /// The RCU domain that protects the list.
    pub fn domain(&self) -> &Rcu {
        self.cell.domain()
    }

    // ---- readers ------------------------------------------------------------------------

    /// Checks `reader` once, loads the current snapshot once, and returns a [`RamReader`]
    /// that answers every lookup from it: the check-once, read-many form of
    /// [`lookup`](Self::lookup), [`host_addr`](Self::host_addr) and
    /// [`translate`](Self::translate), for a vCPU's lookups between two quiescent states.
    /// Make one per quiescent-state interval (per exit); see [`RamReader`] for the contract.
    ///
    /// # Panics
    ///
    /// As [`snapshot`](Self::snapshot): if `reader` is a QSBR thread of another RCU domain,
    /// or an offline one (programming errors, never guest input). A `ReadGuard` of another
    /// domain aborts (see `rcu::RcuCell::load`).
    #[inline(always)]
    pub fn reader<'r, R: ReadSide + ?Sized>(&'r self, reader: &'r R) -> RamReader<'r> {
        RamReader {
            snap: self.cell.load(reader).unwrap_or(&EMPTY),
            #[cfg(feature = "testing")]
            list: self,
        }
    }

    /// The current snapshot, valid for the reader's borrow (for a QSBR thread: until its next
    /// quiescent state, which the borrow checker enforces).
    ///
    /// # Panics
    ///
    /// If `reader` is a QSBR thread of another RCU domain, or an offline one (programming
    /// errors, never guest input). A `ReadGuard` of another domain aborts (see
    /// `rcu::RcuCell::load`).
    #[inline(always)]
    pub fn snapshot<'r, R: ReadSide + ?Sized>(&'r self, reader: &'r R) -> &'r RamSnapshot {
        self.reader(reader).snapshot()
    }

    /// The block containing `gpa` ([`RamSnapshot::lookup`] on the current snapshot).
    #[inline]
    pub fn lookup<'r, R: ReadSide + ?Sized>(
        &'r self,
        reader: &'r R,
        hint: &mut MruHint,
        gpa: u64,
    ) -> Option<&'r RamBlock> {
        self.reader(reader).lookup(hint, gpa)
    }

    /// The host address of `gpa` ([`RamSnapshot::host_addr`]): the vCPU's gpa→hva.
    #[inline]
    pub fn host_addr<'r, R: ReadSide + ?Sized>(
        &'r self,
        reader: &'r R,
        hint: &mut MruHint,
        gpa: u64,
    ) -> Option<*mut u8> {
        self.reader(reader).host_addr(hint, gpa)
    }

    /// `[gpa, gpa + len)` as one host range ([`RamSnapshot::translate`]).
    #[inline]
    pub fn translate<'r, R: ReadSide + ?Sized>(
        &'r self,
        reader: &'r R,
        hint: &mut MruHint,
        gpa: u64,
        len: usize,
    ) -> Result<GuestRange<'r>> {
        self.reader(reader).translate(hint, gpa, len)
    }

    /// Benchmark only: gpa→hva with one MRU index shared by all readers, as QEMU's
    /// `mru_block`. Every miss writes the shared word, so its cache line bounces between
    /// cores as soon as two readers use different blocks. Use [`host_addr`](Self::host_addr).
    /// Only with the `testing` feature.
    #[cfg(feature = "testing")]
    #[inline]
    pub fn host_addr_shared_hint<'r, R: ReadSide + ?Sized>(
        &'r self,
        reader: &'r R,
        gpa: u64,
    ) -> Option<*mut u8> {
        self.reader(reader).host_addr_shared_hint(gpa)
    }

    /// A snapshot that is not tied to a read-side section (it holds the blocks, so their
    /// memory stays mapped until it is dropped). For setup code: loading kernels with
    /// linux-loader, dumping, slot registration. Same version as the published snapshot.
    pub fn snapshot_owned(&self) -> Arc<RamSnapshot> {
        let st = self.writer.lock();
        Arc::new(RamSnapshot::new(st.version, st.blocks.clone()))
    }

    // ---- writers ------------------------------------------------------------------------

    fn publish(&self, st: &mut WriterState) {
        st.version = next_version();
        let snap = RamSnapshot::new(st.version, st.blocks.clone());
        if let Some(old) = self.cell.store(Some(snap)) {
            // Freed by the reclamation thread after a grace period; the last reference to a
            // removed block goes with it, and the block's Drop unmaps its memory.
            old.defer_drop();
        }
    }

    /// Adds `block`; fails if its name is taken, it overlaps a block of the list (the error
    /// names both), or a listener refuses it. Returns its id.
    pub fn add(&self, mut block: RamBlock) -> Result<BlockId> {
        let mut st = self.writer.lock();
        let _tx = st.transaction();
        let pos = st.check_fits(&block, None)?;
        let slot = st.alloc_slot();
        block.set_slot(slot);
        if let Err(e) = st.notify_add(&block) {
            st.free_slot(Some(slot));
            return Err(e);
        }
        block.set_counters(self.counters.clone());
        let id = block.id();
        st.blocks.insert(pos, Arc::new(block));
        st.added += 1;
        self.publish(&mut st);
        Ok(id)
    }

    /// Removes block `id`. Its memory is unmapped after a grace period (on the RCU
    /// reclamation thread), once no reader can still be using it.
    pub fn remove(&self, id: BlockId) -> Result<()> {
        self.remove_inner(id).map(drop)
    }

    fn remove_inner(&self, id: BlockId) -> Result<Arc<RamBlock>> {
        let mut st = self.writer.lock();
        let _tx = st.transaction();
        let i = st.index_of(id)?;
        let old = st.blocks.remove(i);
        st.notify_del(&old);
        st.free_slot(old.slot());
        st.removed += 1;
        self.publish(&mut st);
        Ok(old)
    }

    /// Test support: removes block `id` and unmaps its memory at once, without waiting for a
    /// grace period — the bug RCU exists to prevent. Used to show that the stress test
    /// catches it.
    ///
    /// # Safety
    ///
    /// No reader may be using the block, and nothing may access its memory afterwards; with
    /// concurrent readers this is a use-after-unmap. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub unsafe fn remove_unmap_early(&self, id: BlockId) -> Result<()> {
        let old = self.remove_inner(id)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { old.unmap_now() };
        Ok(())
    }

    /// Replaces block `id` by `new` in one publication: readers see either the old block or
    /// the new one, never neither. `new` is checked against the other blocks; it takes over
    /// the old block's slot. Returns the new block's id.
    pub fn replace(&self, id: BlockId, new: RamBlock) -> Result<BlockId> {
        let mut st = self.writer.lock();
        let _tx = st.transaction();
        let i = st.index_of(id)?;
        self.replace_locked(&mut st, i, new)
    }

    fn replace_locked(&self, st: &mut WriterState, i: usize, mut new: RamBlock) -> Result<BlockId> {
        let pos = st.check_fits(&new, Some(i))?;
        let old = st.blocks[i].clone();
        if let Some(s) = old.slot() {
            new.set_slot(s);
        }
        st.notify_del(&old);
        if let Err(e) = st.notify_add(&new) {
            // Put the old block back in every listener; the list is unchanged.
            for (_, l) in st.listeners.iter() {
                if let Err(e2) = l.region_add(&old) {
                    log::error!(
                        "memory listener refused to re-add RAM block '{}' after a failed \
                         replace: {e2}",
                        old.name()
                    );
                }
            }
            return Err(e);
        }
        new.set_counters(self.counters.clone());
        let id = new.id();
        st.blocks.remove(i);
        st.blocks.insert(pos, Arc::new(new));
        st.replaced += 1;
        self.publish(st);
        Ok(id)
    }

    /// Resizes block `id` to `new_size` bytes: a new block (same name, base and flags) with
    /// the old contents copied (truncated or zero-extended) replaces it. The copy is not
    /// atomic with respect to concurrent guest writes: pause the vCPUs that may write the
    /// block. Debug options of the old block (poison, unmap hook) are not carried over.
    pub fn resize(&self, id: BlockId, new_size: u64) -> Result<BlockId> {
        let mut st = self.writer.lock();
        let _tx = st.transaction();
        let i = st.index_of(id)?;
        let old = st.blocks[i].clone();
        let new = RamBlock::new(old.name(), old.gpa(), new_size, old.flags())?;
        old.volatile_slice()
            .copy_to_volatile_slice(new.volatile_slice());
        self.replace_locked(&mut st, i, new)
    }

    /// The id of the block named `name`.
    pub fn find_by_name(&self, name: &str) -> Option<BlockId> {
        let st = self.writer.lock();
        st.blocks.iter().find(|b| b.name() == name).map(|b| b.id())
    }

    /// Registers a listener and replays `region_add` for every current block (rolled back,
    /// and an error returned, if it refuses one).
    pub fn add_listener(&self, listener: Arc<dyn MemoryListener>) -> Result<ListenerId> {
        let mut st = self.writer.lock();
        let _tx = Transaction::begin(vec![listener.clone()]);
        for (i, b) in st.blocks.iter().enumerate() {
            if let Err(source) = listener.region_add(b) {
                for b in st.blocks[..i].iter().rev() {
                    listener.region_del(b);
                }
                return Err(Error::Listener {
                    name: b.name().to_string(),
                    gpa: b.gpa(),
                    source,
                });
            }
        }
        let id = ListenerId(st.next_listener);
        st.next_listener += 1;
        st.listeners.push((id, listener));
        Ok(id)
    }

    /// Unregisters a listener, calling its `region_del` for every current block.
    pub fn remove_listener(&self, id: ListenerId) -> Result<()> {
        let mut st = self.writer.lock();
        let i = st
            .listeners
            .iter()
            .position(|(l, _)| *l == id)
            .ok_or(Error::NoSuchListener(id.0))?;
        let (_, listener) = st.listeners.remove(i);
        let _tx = Transaction::begin(vec![listener.clone()]);
        for b in st.blocks.iter().rev() {
            listener.region_del(b);
        }
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> RamListStats {
        let st = self.writer.lock();
        RamListStats {
            version: st.version,
            blocks: st.blocks.len(),
            added: st.added,
            removed: st.removed,
            replaced: st.replaced,
            unmapped: self.counters.unmapped.load(Ordering::Relaxed),
        }
    }
}

/// A [`RamList`] read through a proof checked once ([`RamList::reader`]): the snapshot that
/// was current when the reader was made, and lookups on it with no per-call check and no
/// per-call load of the list's pointer.
///
/// # Contract
///
/// * **Lifetime.** It borrows the list and the proof (a [`QsbrThread`](rcu::QsbrThread) or
///   a [`ReadGuard`](rcu::ReadGuard)) for `'r`, and everything read through it borrows them
///   for `'r` too. So nothing read through it outlives the read-side section: a QSBR thread
///   cannot call `quiescent_state`, `offline` or `offline_while` (they take `&mut self`)
///   while a `RamReader` or a snapshot, block or range obtained from it is alive. The
///   compiler checks this:
///
///   ```compile_fail
///   use memory::{BlockFlags, MruHint, RamBlock, RamList};
///   let rcu = rcu::Rcu::new();
///   let ram = RamList::new(&rcu);
///   ram.add(RamBlock::new("low", 0, 0x10_0000, BlockFlags::empty()).unwrap()).unwrap();
///   let mut me = rcu.register_qsbr();
///   let mut hint = MruHint::new();
///   let r = ram.reader(&me);
///   let block = r.lookup(&mut hint, 0x1000).unwrap();
///   me.quiescent_state(); // error: `me` is still borrowed by `block`
///   assert_eq!(block.gpa(), 0);
///   ```
///
/// * **One check.** The proof is checked when the reader is made, as
///   [`RcuCell::reader`](rcu::RcuCell::reader) does, and not again: the reader borrows the
///   proof for `'r`, and a QSBR thread leaves the read side (quiescent state, offline) only
///   through `&mut self`, which that borrow excludes.
/// * **One version.** Unlike [`rcu::CellReader::load`], which re-reads its cell on every
///   call, a `RamReader` reads the list's pointer once, when it is made, and answers every
///   call from that snapshot: a block added or removed afterwards shows up in the next reader
///   (make one per quiescent-state interval, and the vCPU sees each update at its next
///   exit, which is all RCU promises a reader anyway). This is what makes its lookups the
///   unsynchronized floor's code. A load per call (the load, its null check, and the
///   snapshot's version read on every call instead of once) cost about three instructions
///   per lookup and measured 0.8-0.9x the floor's rate on MRU hits; [`RamList::lookup`] and
///   friends, which also check the proof on every call, cost five to seven
///   (`memory/benches/lookup.md`). To see every update at once, make a reader per call, or
///   call those.
#[derive(Clone, Copy, Debug)]
pub struct RamReader<'r> {
    snap: &'r RamSnapshot,
    #[cfg(feature = "testing")]
    list: &'r RamList,
}

impl<'r> RamReader<'r> {
    /// The snapshot this reader answers from (the current one when it was made), valid for
    /// `'r`.
    #[inline(always)]
    pub fn snapshot(&self) -> &'r RamSnapshot {
        self.snap
    }

    /// The block containing `gpa` ([`RamSnapshot::lookup`] on the reader's snapshot).
    #[inline(always)]
    pub fn lookup(&self, hint: &mut MruHint, gpa: u64) -> Option<&'r RamBlock> {
        self.snapshot().lookup(hint, gpa)
    }

    /// The host address of `gpa` ([`RamSnapshot::host_addr`] on the reader's snapshot): the
    /// vCPU's gpa→hva.
    #[inline(always)]
    pub fn host_addr(&self, hint: &mut MruHint, gpa: u64) -> Option<*mut u8> {
        self.snapshot().host_addr(hint, gpa)
    }

    /// `[gpa, gpa + len)` as one host range ([`RamSnapshot::translate`] on the reader's
    /// snapshot).
    #[inline(always)]
    pub fn translate(&self, hint: &mut MruHint, gpa: u64, len: usize) -> Result<GuestRange<'r>> {
        self.snapshot().translate(hint, gpa, len)
    }

    /// Benchmark only: [`RamList::host_addr_shared_hint`] without the per-call check. Only
    /// with the `testing` feature.
    #[cfg(feature = "testing")]
    #[inline]
    pub fn host_addr_shared_hint(&self, gpa: u64) -> Option<*mut u8> {
        let snap = self.snapshot();
        let shared = &self.list.shared_mru.0;
        let i = shared.load(Ordering::Relaxed);
        if let Some(e) = snap.entries.get(i) {
            if gpa.wrapping_sub(e.start) < e.size {
                return Some(e.host.add(gpa.wrapping_sub(e.start)));
            }
        }
        let i = snap.search(gpa)?;
        shared.store(i, Ordering::Relaxed);
        let e = snap.entries.get(i)?;
        Some(e.host.add(gpa.wrapping_sub(e.start)))
    }
}

impl Drop for RamList {
    fn drop(&mut self) {
        // Listeners let go of every block before its memory goes away.
        let st = self.writer.get_mut();
        for b in st.blocks.iter().rev() {
            st.notify_del(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockFlags;

    fn list_with(rcu: &Rcu, blocks: &[(u64, u64)]) -> RamList {
        let ram = RamList::new(rcu);
        for (i, &(gpa, size)) in blocks.iter().enumerate() {
            let b = RamBlock::new(format!("b{i}"), gpa, size, BlockFlags::empty()).unwrap();
            ram.add(b).unwrap();
        }
        ram
    }

    /// A reader answers exactly as the checked API does, from a QSBR thread and from a guard.
    #[test]
    fn reader_agrees_with_the_checked_api() {
        let rcu = Rcu::new();
        let ram = list_with(&rcu, &[(0x10_000, 0x1000), (0x100_000, 0x4000)]);
        let probes = [
            0,
            0xffff,
            0x10_000,
            0x10_fff,
            0x11_000,
            0x100_000,
            0x103_ff8,
            0x104_000,
            u64::MAX,
        ];
        let me = rcu.register_qsbr();
        let g = rcu.read_lock();
        for r in [ram.reader(&me), ram.reader(&g)] {
            assert_eq!(r.snapshot().version(), ram.snapshot(&me).version());
            let (mut h1, mut h2) = (MruHint::new(), MruHint::new());
            for &gpa in probes.iter().chain(probes.iter().rev()) {
                assert_eq!(
                    r.lookup(&mut h1, gpa).map(|b| b.id()),
                    ram.lookup(&me, &mut h2, gpa).map(|b| b.id()),
                    "{gpa:#x}"
                );
                assert_eq!(
                    r.host_addr(&mut h1, gpa),
                    ram.host_addr(&me, &mut h2, gpa),
                    "{gpa:#x}"
                );
                for len in [0, 1, 8, 0x1000] {
                    let a = r.translate(&mut h1, gpa, len).map(|x| x.host_ptr());
                    let b = ram.translate(&me, &mut h2, gpa, len).map(|x| x.host_ptr());
                    assert_eq!(a.ok(), b.ok(), "{gpa:#x}+{len}");
                }
            }
            assert_eq!((h1.hits(), h1.misses()), (h2.hits(), h2.misses()));
        }
    }

    /// A reader answers from the snapshot that was current when it was made; the next reader
    /// sees the writer's update.
    #[test]
    fn reader_answers_from_one_version_the_next_sees_updates() {
        let rcu = Rcu::new();
        let ram = list_with(&rcu, &[(0x10_000, 0x1000)]);
        let g = rcu.read_lock();
        let mut hint = MruHint::new();
        let r0 = ram.reader(&g);
        let v0 = r0.snapshot().version();
        assert!(r0.host_addr(&mut hint, 0x20_000).is_none());
        let id = ram
            .add(RamBlock::new("new", 0x20_000, 0x1000, BlockFlags::empty()).unwrap())
            .unwrap();
        // The old reader still answers from its version (and its blocks stay mapped).
        assert_eq!(r0.snapshot().version(), v0);
        assert!(r0.lookup(&mut hint, 0x20_008).is_none());
        assert!(r0.lookup(&mut hint, 0x10_008).is_some());
        // A new reader sees the block; the old one's hint is not trusted across versions.
        let r1 = ram.reader(&g);
        assert_ne!(r1.snapshot().version(), v0);
        assert_eq!(r1.lookup(&mut hint, 0x20_008).map(|b| b.id()), Some(id));
        assert_eq!(
            r1.lookup(&mut hint, 0x10_008).map(|b| b.gpa()),
            Some(0x10_000)
        );
        ram.remove(id).unwrap();
        assert!(ram.reader(&g).lookup(&mut hint, 0x20_008).is_none());
        assert_eq!(r1.lookup(&mut hint, 0x20_008).map(|b| b.id()), Some(id));
        // The checked API reads the current version on every call.
        assert!(ram.lookup(&g, &mut hint, 0x20_008).is_none());
    }

    /// The one check happens when the reader is made: a proof of another domain, or an
    /// offline QSBR thread, panics there.
    #[test]
    fn reader_checks_its_proof_once_when_made() {
        let rcu = Rcu::new();
        let ram = list_with(&rcu, &[(0, 0x1000)]);
        let other = Rcu::new();
        let stranger = other.register_qsbr();
        let mut me = rcu.register_qsbr();
        me.offline();
        let caught = |f: &dyn Fn()| {
            let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .expect_err("made a reader from a bad proof");
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        };
        let e = caught(&|| {
            ram.reader(&stranger);
        });
        assert!(e.contains("another RCU domain"), "{e}");
        let e = caught(&|| {
            ram.reader(&me);
        });
        assert!(e.contains("offline"), "{e}");
        me.online();
        let mut hint = MruHint::new();
        assert!(ram.reader(&me).host_addr(&mut hint, 0x10).is_some());
    }
}
