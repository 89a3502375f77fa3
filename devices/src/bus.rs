//! The RCU-published bus: a sorted range map read with no lock.

use crate::Error;
use parking_lot::Mutex;
use rcu::{Rcu, RcuCell, ReadSide};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a device asks the VMM to stop the VM (the return value of [`BusDevice::write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRequest {
    /// The guest reset the machine (i8042 0xFE).
    Reset,
    /// The guest powered the machine off (ACPI S5 through the sleep control register).
    PowerOff,
    /// The guest reported a panic (pvpanic).
    Panic,
}

/// Who makes a bus access: the vCPU, and its proof of being on the read side of the RCU
/// domain that protects the buses and the RAM list (a vCPU's online `QsbrThread`). A device
/// reads RCU-protected data through `reader` rather than opening a section of its own, and
/// keeps per-vCPU state indexed by `vcpu`.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    /// The index of the vCPU whose exit this is (0 for accesses that come from elsewhere).
    pub vcpu: usize,
    /// The caller's read-side proof.
    pub reader: &'a dyn ReadSide,
}

impl<'a> Access<'a> {
    /// An access by vCPU `vcpu`, on the read side through `reader`.
    pub fn new(vcpu: usize, reader: &'a dyn ReadSide) -> Self {
        Access { vcpu, reader }
    }
}

impl std::fmt::Debug for Access<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("vcpu", &self.vcpu)
            .finish_non_exhaustive()
    }
}

/// A device on a bus.
///
/// Every method is called on vCPU threads with guest-chosen `offset` and `data` length (1, 2,
/// 4 or 8 bytes for the accesses KVM reports, but implementations must accept any length
/// without panicking). A device serializes its own state (it is `Sync`); it is called inside
/// an RCU read-side section (`access.reader`), so it must not block for long and must not call
/// `synchronize`. A device that ends the VM says so in `write`'s return value; the vCPU loop
/// turns it into the run's outcome (with that vCPU's registers where they help).
pub trait BusDevice: Send + Sync {
    /// A short name for logs and errors.
    fn name(&self) -> &str;
    /// Reads `data.len()` bytes at `offset` from the start of the device's range.
    fn read(&self, access: &Access<'_>, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` from the start of the device's range; `Some` asks the VMM to
    /// stop the VM.
    fn write(&self, access: &Access<'_>, offset: u64, data: &[u8]) -> Option<ExitRequest>;
}

#[derive(Clone)]
struct Entry {
    base: u64,
    len: u64,
    dev: Arc<dyn BusDevice>,
}

#[derive(Clone, Default)]
struct Map {
    /// Sorted by base, non-overlapping.
    entries: Vec<Entry>,
}

impl Map {
    fn find(&self, addr: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (addr - e.base < e.len).then_some(e)
    }
}

/// Counters of a bus (kept only on the slow, unassigned path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Reads of addresses with no device.
    pub unassigned_reads: u64,
    /// Writes to addresses with no device.
    pub unassigned_writes: u64,
    /// Devices on the bus.
    pub devices: usize,
}

/// At most this many distinct unassigned addresses are logged per bus.
const MAX_LOGGED: usize = 64;

/// A port-I/O or MMIO bus. See the crate docs.
pub struct Bus {
    kind: &'static str,
    map: RcuCell<Map>,
    writer: Mutex<()>,
    unassigned_reads: AtomicU64,
    unassigned_writes: AtomicU64,
    logged: Mutex<HashSet<u64>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("kind", &self.kind).finish()
    }
}

impl Bus {
    /// An empty bus named `kind` ("pio" or "mmio") protected by `rcu`.
    pub fn new(kind: &'static str, rcu: &Rcu) -> Self {
        Bus {
            kind,
            map: RcuCell::new_in(rcu, Some(Map::default())),
            writer: Mutex::new(()),
            unassigned_reads: AtomicU64::new(0),
            unassigned_writes: AtomicU64::new(0),
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// Adds `dev` at `[base, base + len)`. Overlaps and empty or wrapping ranges are rejected.
    /// Safe to call while vCPUs use the bus.
    pub fn insert(&self, base: u64, len: u64, dev: Arc<dyn BusDevice>) -> Result<(), Error> {
        let _w = self.writer.lock();
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(Error::InvalidRange {
                bus: self.kind,
                name: dev.name().to_string(),
                base,
                len,
            });
        }
        let mut map = self.current();
        let last = base + (len - 1);
        if let Some(o) = map
            .entries
            .iter()
            .find(|e| e.base <= last && base <= e.base + (e.len - 1))
        {
            return Err(Error::Overlap {
                bus: self.kind,
                name: dev.name().to_string(),
                base,
                len,
                other: o.dev.name().to_string(),
                other_base: o.base,
                other_len: o.len,
            });
        }
        let i = map.entries.partition_point(|e| e.base < base);
        map.entries.insert(i, Entry { base, len, dev });
        // The old map (and with it nothing else: devices are shared) is freed after a grace
        // period through call_rcu.
        drop(self.map.store(Some(map)));
        Ok(())
    }

    /// Removes the device whose range starts at `base` and returns it. vCPUs that are inside it
    /// keep their reference until their next quiescent state; the bus drops its own reference
    /// after a grace period.
    pub fn remove(&self, base: u64) -> Result<Arc<dyn BusDevice>, Error> {
        let _w = self.writer.lock();
        let mut map = self.current();
        let i = map
            .entries
            .iter()
            .position(|e| e.base == base)
            .ok_or(Error::NotFound {
                bus: self.kind,
                base,
            })?;
        let e = map.entries.remove(i);
        drop(self.map.store(Some(map)));
        Ok(e.dev)
    }

    /// A copy of the current map (writers only, under the writer lock).
    fn current(&self) -> Map {
        let g = self.map.domain().read_lock();
        self.map.load(&g).cloned().unwrap_or_default()
    }

    /// Reads `data.len()` bytes at `addr`; with no device there, fills `data` with 0xff.
    /// Returns whether a device answered.
    #[inline]
    pub fn read(&self, access: &Access<'_>, addr: u64, data: &mut [u8]) -> bool {
        if let Some(e) = self.map.load(access.reader).and_then(|m| m.find(addr)) {
            e.dev.read(access, addr - e.base, data);
            return true;
        }
        data.fill(0xff);
        self.unassigned(addr, false);
        false
    }

    /// Writes `data` at `addr`; with no device there the write is discarded (and counted in
    /// [`BusStats::unassigned_writes`]). Returns the device's request to stop the VM, if any.
    #[inline]
    pub fn write(&self, access: &Access<'_>, addr: u64, data: &[u8]) -> Option<ExitRequest> {
        if let Some(e) = self.map.load(access.reader).and_then(|m| m.find(addr)) {
            return e.dev.write(access, addr - e.base, data);
        }
        self.unassigned(addr, true);
        None
    }

    #[cold]
    fn unassigned(&self, addr: u64, write: bool) {
        if write {
            self.unassigned_writes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.unassigned_reads.fetch_add(1, Ordering::Relaxed);
        }
        let mut logged = self.logged.lock();
        if logged.len() < MAX_LOGGED && logged.insert(addr) {
            log::info!(
                "{} bus: guest {} unassigned address {addr:#x} (logged once per address, at \
                 most {MAX_LOGGED} addresses)",
                self.kind,
                if write { "wrote to" } else { "read from" }
            );
        }
    }

    /// The bus's counters.
    pub fn stats(&self) -> BusStats {
        let g = self.map.domain().read_lock();
        BusStats {
            unassigned_reads: self.unassigned_reads.load(Ordering::Relaxed),
            unassigned_writes: self.unassigned_writes.load(Ordering::Relaxed),
            devices: self.map.load(&g).map_or(0, |m| m.entries.len()),
        }
    }

    /// The devices on the bus: (base, len, name).
    pub fn devices(&self) -> Vec<(u64, u64, String)> {
        let g = self.map.domain().read_lock();
        self.map.load(&g).map_or_else(Vec::new, |m| {
            m.entries
                .iter()
                .map(|e| (e.base, e.len, e.dev.name().to_string()))
                .collect()
        })
    }
}
