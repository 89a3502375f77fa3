//! The lookup device: the end-to-end memory-lookup benchmark's VMM side.
//!
//! The guest (`workload=lookup-bench`) hands over a descriptor naming a table of N
//! guest-physical addresses (ports 0x520/0x524, see guest/README.md). The vCPU thread that
//! takes the exit translates every address to a host address and reads the qword there —
//! what device emulation does for a virtqueue — and writes back the sum, the failures and the
//! nanoseconds it spent. `--ram-lookup` picks how addresses are translated, so the designs are
//! compared in the same VMM on the same guest:
//!
//! - `rcu`: the RCU-published [`RamList`] with this vCPU's own MRU hint (no lock, no shared
//!   write), through one [`RamReader`](memory::RamReader) per exit (proof checked and
//!   snapshot loaded once);
//! - `mutex`: a `Mutex<Vec<_>>` walked linearly (QEMU before RCU);
//! - `rwlock`: a parking_lot `RwLock<Vec<_>>` with binary search;
//! - `vm-memory`: vm-memory's `GuestMemoryAtomic` (arc-swap inside) and `find_region`.
//!
//! The alternative table mirrors the RamList through a [`MemoryListener`] (registered only
//! when one of them is chosen), so hot-added and removed blocks show up in every design. The
//! lock-based designs take their table's lock in the listener's `begin` and release it in
//! `commit`, so their readers wait for the whole RAM update, as in a lock-based VMM. A block leaves
//! the table in `region_del`, before the RamList retires it; its memory is unmapped only after
//! a grace period, which waits for any vCPU still inside an exit — so no design can read
//! unmapped memory.

use crate::kvm::vcpu::ExitCounters;
use devices::{Access, BusDevice, ExitRequest};
use memory::{ListenerError, MemoryListener, MruHint, RamBlock, RamList};
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress, MmapRegion,
};

/// Which translation design the lookup device uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LookupDesign {
    /// The RCU RamList with a per-vCPU MRU hint.
    #[default]
    Rcu,
    /// A mutex-guarded linear walk.
    Mutex,
    /// An RwLock-guarded binary search.
    RwLock,
    /// vm-memory's GuestMemoryAtomic.
    VmMemory,
}

impl std::str::FromStr for LookupDesign {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rcu" => Ok(LookupDesign::Rcu),
            "mutex" => Ok(LookupDesign::Mutex),
            "rwlock" => Ok(LookupDesign::RwLock),
            "vm-memory" => Ok(LookupDesign::VmMemory),
            _ => Err(format!("'{s}': use rcu, mutex, rwlock or vm-memory")),
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    gpa: u64,
    size: u64,
    host: usize,
}

impl Entry {
    #[inline]
    fn host_for(&self, gpa: u64, len: u64) -> Option<usize> {
        let off = gpa.checked_sub(self.gpa)?;
        (off.checked_add(len)? <= self.size).then(|| self.host + off as usize)
    }
}

/// The alternative tables, kept equal to the RamList by its listener.
///
/// The lock-based designs are modelled as a lock-based VMM would be written: one lock that
/// readers and the writer share. A RAM update is one listener transaction: `begin` takes that
/// lock and `commit` installs the changed table and releases it, so it is held for the whole
/// critical section the RamList's own writer lock covers — overlap checks, listeners (the KVM
/// slot ioctl among them), publication — and the readers wait for exactly the work the RCU
/// readers do not wait for. With RCU the writer lock is separate and readers never take it.
pub struct AltTables {
    design: LookupDesign,
    /// The writer's copy: the listener edits it; it is installed in the design's table.
    staged: Mutex<Vec<Entry>>,
    mutex: Mutex<Vec<Entry>>,
    rwlock: RwLock<Vec<Entry>>,
    vmm: GuestMemoryAtomic<GuestMemoryMmap>,
}

impl AltTables {
    /// Empty tables for `design`; register with [`RamList::add_listener`] to fill them.
    pub fn new(design: LookupDesign) -> Arc<AltTables> {
        Arc::new(AltTables {
            design,
            staged: Mutex::new(Vec::new()),
            mutex: Mutex::new(Vec::new()),
            rwlock: RwLock::new(Vec::new()),
            vmm: GuestMemoryAtomic::new(GuestMemoryMmap::default()),
        })
    }

    fn rebuild_vm_memory(&self, entries: &[Entry]) {
        let mut regions = Vec::new();
        for e in entries {
            // SAFETY: the block's mapping is live for `size` bytes until region_del removes it
            // from these tables; a raw region does not unmap on drop.
            let r = unsafe {
                MmapRegion::build_raw(
                    e.host as *mut u8,
                    e.size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                )
            };
            if let Some(region) = r
                .ok()
                .and_then(|m| GuestRegionMmap::new(m, GuestAddress(e.gpa)))
            {
                regions.push(Arc::new(region));
            }
        }
        let mem = GuestMemoryMmap::from_arc_regions(regions).unwrap_or_default();
        self.vmm
            .lock()
            .expect("GuestMemoryAtomic lock")
            .replace(mem);
    }
}

impl MemoryListener for AltTables {
    fn begin(&self) {
        // The lock-based designs' readers wait for the whole transaction: the lock is taken
        // here and released by `commit`, which the RamList calls once for every `begin`, on
        // this thread, under its writer lock (so no other transaction runs in between).
        match self.design {
            LookupDesign::Mutex => std::mem::forget(self.mutex.lock()),
            LookupDesign::RwLock => std::mem::forget(self.rwlock.write()),
            LookupDesign::Rcu | LookupDesign::VmMemory => {}
        }
    }

    fn region_add(&self, block: &RamBlock) -> Result<(), ListenerError> {
        let mut m = self.staged.lock();
        m.push(Entry {
            gpa: block.gpa(),
            size: block.size(),
            host: block.host_ptr() as usize,
        });
        m.sort_by_key(|e| e.gpa);
        Ok(())
    }

    fn region_del(&self, block: &RamBlock) {
        self.staged.lock().retain(|e| e.gpa != block.gpa());
    }

    fn commit(&self) {
        let entries = self.staged.lock().clone();
        match self.design {
            LookupDesign::Mutex => {
                // SAFETY: this transaction's `begin` locked `mutex` and forgot the guard, and
                // nothing released it since (transactions do not overlap: the RamList's
                // writer lock is held from `begin` to `commit`), so this thread holds it:
                // writing through the data pointer is exclusive, and unlocking ends it.
                unsafe {
                    *self.mutex.data_ptr() = entries;
                    self.mutex.force_unlock();
                }
            }
            LookupDesign::RwLock => {
                // SAFETY: as above, for the write lock `begin` took on `rwlock`.
                unsafe {
                    *self.rwlock.data_ptr() = entries;
                    self.rwlock.force_unlock_write();
                }
            }
            LookupDesign::VmMemory => self.rebuild_vm_memory(&entries),
            LookupDesign::Rcu => {}
        }
    }
}

/// The lookup device at ports 0x520 (descriptor gpa, low dword) and 0x524 (high dword: go).
pub struct LookupDevice {
    ram: Arc<RamList>,
    alt: Arc<AltTables>,
    design: LookupDesign,
    counters: Arc<[ExitCounters]>,
    /// Each vCPU's own state, indexed by [`Access::vcpu`].
    per_vcpu: Box<[PerVcpu]>,
}

/// One vCPU's state in the device, alone on its cache lines (two lines: the adjacent-line
/// prefetcher pulls pairs), so that a vCPU's doorbell writes only its own lines.
#[repr(align(128))]
#[derive(Default)]
struct PerVcpu {
    /// The low dword of the vCPU's descriptor address (vCPUs ring the doorbell
    /// concurrently; a shared latch would mix their halves).
    low: std::sync::atomic::AtomicU32,
    /// The vCPU's MRU hint (each vCPU is one reader); only its own vCPU locks it.
    hint: Mutex<MruHint>,
}

/// Descriptor layout (guest/README.md).
const D_TABLE: u64 = 0;
const D_COUNT: u64 = 8;
const D_SUM: u64 = 16;
const D_FAILED: u64 = 24;
const D_NS: u64 = 32;
/// The most addresses one descriptor may name (bounds the time one exit can take).
pub const MAX_LOOKUPS: u32 = 1 << 20;

impl LookupDevice {
    /// A device translating through `design`.
    pub fn new(
        ram: Arc<RamList>,
        alt: Arc<AltTables>,
        design: LookupDesign,
        counters: Arc<[ExitCounters]>,
    ) -> Self {
        let per_vcpu = (0..counters.len().max(1))
            .map(|_| PerVcpu::default())
            .collect();
        LookupDevice {
            ram,
            alt,
            design,
            counters,
            per_vcpu,
        }
    }

    #[inline]
    fn read_host(host: usize) -> u64 {
        if host.is_multiple_of(8) {
            // SAFETY: `host` was translated from a guest address whose 8 bytes lie inside one
            // live RAM block (checked by every design); the mapping outlives this exit (see
            // the module docs); it is 8-aligned. Volatile: guest memory may change under us.
            u64::from_le(unsafe { (host as *const u64).read_volatile() })
        } else {
            // SAFETY: as above, for an unaligned address read byte-wise.
            u64::from_le_bytes(unsafe { (host as *const [u8; 8]).read_volatile() })
        }
    }

    fn run(&self, access: &Access<'_>, me: &PerVcpu, desc: u64) {
        // The vCPU's own read-side proof (its online QsbrThread), checked and the snapshot
        // loaded once per exit: every lookup below is the unsynchronized floor's code
        // (memory/benches/lookup.md).
        let ram = self.ram.reader(access.reader);
        let snap = ram.snapshot();
        let (Ok(table), Ok(count)) = (
            snap.read_val::<u64>(desc.wrapping_add(D_TABLE)),
            snap.read_val::<u32>(desc.wrapping_add(D_COUNT)),
        ) else {
            return; // a descriptor outside RAM: nothing to answer
        };
        let count = count.min(MAX_LOOKUPS);
        let t = Instant::now();
        let mut sum = 0u64;
        let mut failed = 0u32;
        let mut hint = *me.hint.lock();
        let (h0, m0) = (hint.hits(), hint.misses());
        // The table itself, as one host range when it lies in one block (as a virtqueue's
        // ring does); otherwise entry by entry.
        let mut table_hint = MruHint::new();
        let table_host = snap
            .translate(&mut table_hint, table, count as usize * 8)
            .ok()
            .map(|r| r.host_ptr() as usize);
        for i in 0..count as u64 {
            let entry = match table_host {
                Some(base) => Some(Self::read_host(base + i as usize * 8)),
                None => snap.read_val::<u64>(table.wrapping_add(i * 8)).ok(),
            };
            let Some(gpa) = entry else {
                failed += 1;
                continue;
            };
            let host = match self.design {
                LookupDesign::Rcu => ram.lookup(&mut hint, gpa).and_then(|b| {
                    // All 8 bytes must be in the block.
                    let last = gpa.checked_add(7)?;
                    (b.contains(last)).then_some(())?;
                    b.host_addr(gpa).map(|p| p as usize)
                }),
                LookupDesign::Mutex => {
                    let m = self.alt.mutex.lock();
                    m.iter().find_map(|e| e.host_for(gpa, 8))
                }
                LookupDesign::RwLock => {
                    let m = self.alt.rwlock.read();
                    let i = m.partition_point(|e| e.gpa <= gpa);
                    i.checked_sub(1).and_then(|i| m[i].host_for(gpa, 8))
                }
                LookupDesign::VmMemory => {
                    let mem = self.alt.vmm.memory();
                    mem.find_region(GuestAddress(gpa)).and_then(|r| {
                        let off = gpa - r.start_addr().0;
                        if off.checked_add(8)? > r.len() {
                            return None;
                        }
                        r.get_host_address(MemoryRegionAddress(off))
                            .ok()
                            .map(|p| p as usize)
                    })
                }
            };
            match host {
                Some(h) => sum = sum.wrapping_add(Self::read_host(h)),
                None => failed += 1,
            }
        }
        let ns = t.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        *me.hint.lock() = hint;
        let _ = snap.write_val(desc.wrapping_add(D_SUM), sum);
        let _ = snap.write_val(desc.wrapping_add(D_FAILED), failed);
        let _ = snap.write_val(desc.wrapping_add(D_NS), ns);
        if let Some(c) = self.counters.get(access.vcpu) {
            // Only this vCPU writes its counters: a load and a store, no shared RMW.
            let add = |a: &std::sync::atomic::AtomicU64, n: u64| {
                a.store(a.load(Ordering::Relaxed) + n, Ordering::Relaxed)
            };
            add(&c.mru_hits, hint.hits() - h0);
            add(&c.mru_misses, hint.misses() - m0);
        }
    }
}

impl BusDevice for LookupDevice {
    fn name(&self) -> &str {
        "lookup"
    }

    fn read(&self, _access: &Access<'_>, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest> {
        let mut v = [0u8; 4];
        for (d, s) in v.iter_mut().zip(data) {
            *d = *s;
        }
        let v = u32::from_le_bytes(v);
        let me = self.per_vcpu.get(access.vcpu)?;
        match offset {
            0 => me.low.store(v, Ordering::Relaxed),
            4 => {
                let desc = ((v as u64) << 32) | me.low.load(Ordering::Relaxed) as u64;
                self.run(access, me, desc);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot-path cache-line invariant (ARCHITECTURE.md): what a vCPU writes on an exit
    /// (its exit counters, its doorbell latch) sits alone on its own pair of cache lines.
    #[test]
    fn per_vcpu_state_is_padded_to_its_own_cache_lines() {
        fn apart<T>(xs: &[T]) -> usize {
            (&xs[1] as *const T as usize) - (&xs[0] as *const T as usize)
        }
        assert!(std::mem::align_of::<PerVcpu>() >= 128);
        assert!(std::mem::align_of::<ExitCounters>() >= 128);
        let per: Vec<PerVcpu> = (0..2).map(|_| PerVcpu::default()).collect();
        assert!(apart(&per) >= 128);
        let counters: Vec<ExitCounters> = (0..2).map(|_| ExitCounters::default()).collect();
        assert!(apart(&counters) >= 128);
        let counters: Arc<[ExitCounters]> = counters.into();
        let ram = Arc::new(RamList::new(&rcu::Rcu::new()));
        let design = LookupDesign::Rcu;
        let dev = LookupDevice::new(ram, AltTables::new(design), design, counters);
        assert_eq!(dev.per_vcpu.len(), 2);
        assert!(apart(&dev.per_vcpu) >= 128);
    }
    use memory::{BlockFlags, RamBlock};

    const BASE: u64 = 0x10_0000;
    const SIZE: u64 = 0x20_0000;
    const DESC: u64 = BASE;
    const TABLE: u64 = BASE + 0x1000;

    /// A RAM list with one 2 MiB block and a lookup device of `design` on it.
    fn setup(design: LookupDesign) -> (Arc<RamList>, LookupDevice) {
        let rcu = rcu::Rcu::new();
        let ram = Arc::new(RamList::new(&rcu));
        let alt = AltTables::new(design);
        ram.add_listener(alt.clone()).unwrap();
        ram.add(RamBlock::new("ram", BASE, SIZE, BlockFlags::empty()).unwrap())
            .unwrap();
        let counters: Arc<[ExitCounters]> = vec![ExitCounters::default()].into();
        let dev = LookupDevice::new(ram.clone(), alt, design, counters);
        (ram, dev)
    }

    const ALL_DESIGNS: [LookupDesign; 4] = [
        LookupDesign::Rcu,
        LookupDesign::Mutex,
        LookupDesign::RwLock,
        LookupDesign::VmMemory,
    ];

    /// Rings the doorbell as vCPU 0 would, on the read side of the RAM list's domain.
    fn ring(dev: &LookupDevice, desc: u64) {
        let mut me = dev.ram.domain().register_qsbr();
        let a = Access::new(0, &me);
        assert_eq!(dev.write(&a, 0, &(desc as u32).to_le_bytes()), None);
        assert_eq!(dev.write(&a, 4, &((desc >> 32) as u32).to_le_bytes()), None);
        me.offline();
    }

    /// Every design answers a guest's garbage the same way: addresses outside RAM, and
    /// qwords that straddle the end of the block, are failures, never reads.
    #[test]
    fn guest_garbage_is_counted_as_failures_in_every_design() {
        for design in ALL_DESIGNS {
            let (ram, dev) = setup(design);
            let snap = ram.snapshot_owned();
            let end = BASE + SIZE;
            let good = [BASE + 0x8000, end - 8];
            let bad = [0, u64::MAX, u64::MAX - 7, end - 4, end, BASE - 4];
            for (i, v) in [0x1111u64, 0x2222].iter().enumerate() {
                snap.write_val(good[i], *v).unwrap();
            }
            let entries: Vec<u64> = good.iter().chain(bad.iter()).copied().collect();
            for (i, e) in entries.iter().enumerate() {
                snap.write_val(TABLE + 8 * i as u64, *e).unwrap();
            }
            snap.write_val(DESC + D_TABLE, TABLE).unwrap();
            snap.write_val(DESC + D_COUNT, entries.len() as u32)
                .unwrap();
            ring(&dev, DESC);
            assert_eq!(
                snap.read_val::<u64>(DESC + D_SUM).unwrap(),
                0x3333,
                "{design:?}"
            );
            assert_eq!(
                snap.read_val::<u32>(DESC + D_FAILED).unwrap(),
                bad.len() as u32,
                "{design:?}"
            );
        }
    }

    /// A descriptor or table outside RAM, a count past the limit, and stray ports and sizes:
    /// nothing panics, and a descriptor outside RAM is not answered.
    #[test]
    fn bad_descriptors_and_accesses_are_harmless() {
        let (ram, dev) = setup(LookupDesign::Rcu);
        let snap = ram.snapshot_owned();
        for desc in [0, u64::MAX, BASE + SIZE - 8, BASE + SIZE] {
            ring(&dev, desc);
        }
        // A table whose last two entries are the last two qwords of RAM and which runs off
        // its end, with a huge count (capped at MAX_LOOKUPS): the two are looked up, every
        // entry past the end is a failure.
        snap.write_val(BASE + SIZE - 16, BASE + 0x8000).unwrap();
        snap.write_val(BASE + SIZE - 8, BASE + 0x8000).unwrap();
        snap.write_val(BASE + 0x8000, 7u64).unwrap();
        snap.write_val(DESC + D_TABLE, BASE + SIZE - 16).unwrap();
        snap.write_val(DESC + D_COUNT, u32::MAX).unwrap();
        ring(&dev, DESC);
        assert_eq!(snap.read_val::<u64>(DESC + D_SUM).unwrap(), 14);
        assert_eq!(
            snap.read_val::<u32>(DESC + D_FAILED).unwrap(),
            MAX_LOOKUPS - 2
        );
        let me = dev.ram.domain().register_qsbr();
        for vcpu in [0, 1, usize::MAX] {
            let a = Access::new(vcpu, &me);
            for len in [0usize, 1, 2, 3, 8, 16] {
                assert_eq!(dev.write(&a, 7, &vec![0xff; len]), None);
                assert_eq!(dev.write(&a, 4, &vec![0xff; len]), None);
                let mut d = vec![0u8; len];
                dev.read(&a, 0, &mut d);
            }
        }
    }

    /// The lock-based designs' readers wait while a RAM update runs (the writer holds the
    /// one lock they share, as in a lock-based VMM); the RCU and vm-memory readers do not.
    /// Not taking the lock in `AltTables::begin` fails the lock-based half; taking it for
    /// every design fails the other half.
    /// See `readers_wait_for_a_ram_update_only_in_the_lock_based_designs`.
    struct Probe {
        dev: Arc<LookupDevice>,
        done: Arc<std::sync::atomic::AtomicBool>,
        during: std::sync::atomic::AtomicBool,
        reader: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
        limit: std::time::Duration,
    }

    impl MemoryListener for Probe {
        fn region_add(&self, block: &RamBlock) -> Result<(), ListenerError> {
            if block.name() != "hot" {
                return Ok(());
            }
            let (dev, done) = (self.dev.clone(), self.done.clone());
            *self.reader.lock() = Some(std::thread::spawn(move || {
                ring(&dev, DESC);
                done.store(true, Ordering::SeqCst);
            }));
            // A blocked reader cannot finish however long we wait, so the short limit shows
            // it waits; a reader that is not blocked is waited for (up to 20 s).
            let t = Instant::now();
            while !self.done.load(Ordering::SeqCst) && t.elapsed() < self.limit {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.during
                .store(self.done.load(Ordering::SeqCst), Ordering::SeqCst);
            Ok(())
        }

        fn region_del(&self, _block: &RamBlock) {}
    }

    #[test]
    fn readers_wait_for_a_ram_update_only_in_the_lock_based_designs() {
        use std::sync::atomic::AtomicBool;
        use std::time::Duration;
        for design in ALL_DESIGNS {
            let (ram, dev) = setup(design);
            let snap = ram.snapshot_owned();
            snap.write_val(BASE + 0x8000, 5u64).unwrap();
            snap.write_val(TABLE, BASE + 0x8000).unwrap();
            snap.write_val(DESC + D_TABLE, TABLE).unwrap();
            snap.write_val(DESC + D_COUNT, 1u32).unwrap();
            let lock_based = matches!(design, LookupDesign::Mutex | LookupDesign::RwLock);
            let dev = Arc::new(dev);
            let done = Arc::new(AtomicBool::new(false));
            // A listener registered after the tables: its region_add runs inside the RAM
            // update's transaction, where it rings the device from another thread.
            let probe = Arc::new(Probe {
                dev: dev.clone(),
                done: done.clone(),
                during: AtomicBool::new(false),
                reader: parking_lot::Mutex::new(None),
                limit: Duration::from_millis(if lock_based { 200 } else { 20_000 }),
            });
            ram.add_listener(probe.clone()).unwrap();
            let hot = RamBlock::new("hot", 0xe000_0000, 0x1_0000, BlockFlags::empty());
            ram.add(hot.unwrap()).unwrap();
            probe.reader.lock().take().unwrap().join().unwrap();
            let during = probe.during.load(Ordering::SeqCst);
            assert!(
                done.load(Ordering::SeqCst),
                "{design:?}: the reader never finished"
            );
            assert_eq!(
                during, !lock_based,
                "{design:?}: whether the reader finished while the writer was updating"
            );
            assert_eq!(snap.read_val::<u64>(DESC + D_SUM).unwrap(), 5, "{design:?}");
            // The update is visible to the design's readers: a lookup in the new block works.
            let snap = ram.snapshot_owned();
            snap.write_val(TABLE, 0xe000_0008u64).unwrap();
            ram.snapshot_owned().write_val(0xe000_0008, 9u64).unwrap();
            ring(&dev, DESC);
            assert_eq!(snap.read_val::<u64>(DESC + D_SUM).unwrap(), 9, "{design:?}");
            assert_eq!(
                snap.read_val::<u32>(DESC + D_FAILED).unwrap(),
                0,
                "{design:?}"
            );
        }
    }
}
