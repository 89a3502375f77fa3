//! The RCU buses: range rules, unassigned accesses, and devices coming and going under
//! readers.

use devices::{Access, Bus, BusDevice, Error, ExitRequest, TestCounter};
use rcu::Rcu;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Reg {
    name: String,
    value: AtomicU64,
    dropped: Arc<AtomicBool>,
}

impl Reg {
    fn new(name: &str, v: u64) -> Arc<Self> {
        Arc::new(Reg {
            name: name.into(),
            value: AtomicU64::new(v),
            dropped: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl BusDevice for Reg {
    fn name(&self) -> &str {
        &self.name
    }
    fn read(&self, _access: &Access<'_>, offset: u64, data: &mut [u8]) {
        let v = self.value.load(Ordering::SeqCst).wrapping_add(offset);
        for (d, s) in data.iter_mut().zip(v.to_le_bytes()) {
            *d = s;
        }
    }
    fn write(&self, _access: &Access<'_>, _offset: u64, data: &[u8]) -> Option<ExitRequest> {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(data) {
            *d = *s;
        }
        self.value.store(u64::from_le_bytes(b), Ordering::SeqCst);
        None
    }
}

#[test]
fn ranges_are_validated_and_overlaps_rejected() {
    let rcu = Rcu::new();
    let bus = Bus::new("pio", &rcu);
    bus.insert(0x100, 0x10, Reg::new("a", 0)).unwrap();
    bus.insert(0x110, 0x10, Reg::new("b", 0)).unwrap(); // adjacent is fine
    for (base, len) in [(0x10f, 1), (0xf0, 0x11), (0x105, 2), (0x0, 0x1000)] {
        match bus.insert(base, len, Reg::new("c", 0)) {
            Err(Error::Overlap { other, .. }) => assert!(other == "a" || other == "b"),
            r => panic!("{base:#x}+{len:#x}: {:?}", r.err()),
        }
    }
    assert!(matches!(
        bus.insert(0x200, 0, Reg::new("empty", 0)),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        bus.insert(u64::MAX, 2, Reg::new("wrap", 0)),
        Err(Error::InvalidRange { .. })
    ));
    bus.insert(u64::MAX, 1, Reg::new("last", 0)).unwrap();
    let msg = bus
        .insert(0x108, 1, Reg::new("x", 0))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("overlaps 'a'"), "{msg}");
    assert_eq!(bus.devices().len(), 3);
}

#[test]
fn accesses_reach_the_device_at_the_right_offset() {
    let rcu = Rcu::new();
    let bus = Bus::new("mmio", &rcu);
    bus.insert(0x1000, 0x100, Reg::new("r", 0x40)).unwrap();
    let g = rcu.read_lock();
    let mut d = [0u8; 4];
    assert!(bus.read(&Access::new(0, &g), 0x1000, &mut d));
    assert_eq!(u32::from_le_bytes(d), 0x40);
    assert!(bus.read(&Access::new(0, &g), 0x10ff, &mut d)); // last byte of the range
    assert_eq!(u32::from_le_bytes(d), 0x40 + 0xff);
    assert!(!bus.read(&Access::new(0, &g), 0x1100, &mut d)); // one past
    assert!(!bus.read(&Access::new(0, &g), 0xfff, &mut d)); // one before
    assert_eq!(
        bus.write(&Access::new(0, &g), 0x1004, &7u32.to_le_bytes()),
        None
    );
    assert_eq!(bus.stats().unassigned_writes, 0);
    assert!(bus.read(&Access::new(0, &g), 0x1000, &mut d));
    assert_eq!(u32::from_le_bytes(d), 7);
}

#[test]
fn unassigned_reads_are_all_ones_counted_and_never_panic() {
    let rcu = Rcu::new();
    let bus = Bus::new("pio", &rcu);
    let mut me = rcu.register_qsbr();
    // A guest hammering random addresses with every access size, including silly ones.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for i in 0..10_000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = [0usize, 1, 2, 4, 8, 16][(seed % 6) as usize];
        let mut d = vec![0u8; len];
        assert!(!bus.read(&Access::new(0, &me), seed, &mut d));
        assert!(d.iter().all(|b| *b == 0xff));
        assert_eq!(
            bus.write(&Access::new(0, &me), seed.rotate_left(7), &d),
            None
        );
        if i.is_multiple_of(64) {
            me.quiescent_state();
        }
    }
    let s = bus.stats();
    assert_eq!((s.unassigned_reads, s.unassigned_writes), (10_000, 10_000));
}

#[test]
fn test_counter_counts_writes_and_reports_them() {
    let rcu = Rcu::new();
    let bus = Bus::new("pio", &rcu);
    let c = Arc::new(TestCounter::default());
    bus.insert(0x510, 2, c.clone()).unwrap();
    let g = rcu.read_lock();
    for _ in 0..1234 {
        bus.write(&Access::new(0, &g), 0x510, &[1, 0, 0, 0]);
    }
    let mut d = [0u8; 4];
    bus.read(&Access::new(0, &g), 0x511, &mut d);
    assert_eq!(u32::from_le_bytes(d), 1234);
    assert_eq!(c.count(), 1234);
}

/// Devices are added and removed while QSBR readers (like vCPUs) hammer the bus: every read
/// sees either the device or all-ones, never a dropped device, and each removed device is
/// dropped only after the readers passed a quiescent state.
#[test]
fn hot_add_and_remove_under_readers() {
    let rcu = Rcu::new();
    let bus = Arc::new(Bus::new("pio", &rcu));
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (rcu, bus, stop, bad) = (rcu.clone(), bus.clone(), stop.clone(), bad.clone());
            thread::spawn(move || {
                let mut me = rcu.register_qsbr();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut d = [0u8; 8];
                    if bus.read(&Access::new(0, &me), 0x80, &mut d) {
                        let v = u64::from_le_bytes(d);
                        // Live devices hold 0xabcd; a dropped one would have been poisoned.
                        if v != 0xabcd {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                    } else if d != [0xff; 8] {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                    if n.is_multiple_of(16) {
                        me.quiescent_state();
                    }
                }
                n
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut cycles = 0;
    let mut flags = Vec::new();
    while Instant::now() < deadline {
        let dev = Reg::new("hot", 0xabcd);
        flags.push(dev.dropped.clone());
        bus.insert(0x80, 4, dev).unwrap();
        let removed = bus.remove(0x80).unwrap();
        // Poison through our own reference: readers that still see this device would read it.
        // We only poison after a grace period, which is the contract: until then they may.
        let retired = removed.clone();
        drop(removed);
        rcu.synchronize();
        // After the grace period nobody can reach it through the bus any more.
        let r = retired.clone();
        let g = rcu.read_lock();
        r.write(&Access::new(0, &g), 0, &0xdeadu64.to_le_bytes());
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    rcu.rcu_barrier();
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "a reader saw a removed device"
    );
    assert!(
        cycles > 100 && reads > 1000,
        "cycles {cycles}, reads {reads}"
    );
    assert!(
        flags.iter().all(|f| f.load(Ordering::SeqCst)),
        "a device leaked"
    );
}

/// A device that ends the VM says so in the bus write's return value (no callback, no side
/// channel): i8042 reset, ACPI S5, pvpanic; other writes to them return nothing.
#[test]
fn exit_requests_come_back_from_the_bus_write() {
    use devices::{AcpiSleep, PvPanic, I8042};
    let rcu = Rcu::new();
    let bus = Bus::new("pio", &rcu);
    bus.insert(0x60, 5, Arc::new(I8042::new())).unwrap();
    bus.insert(0x600, 2, Arc::new(AcpiSleep::new())).unwrap();
    bus.insert(0x505, 1, Arc::new(PvPanic)).unwrap();
    let g = rcu.read_lock();
    let a = Access::new(3, &g);
    assert_eq!(bus.write(&a, 0x64, &[0xfe]), Some(ExitRequest::Reset));
    assert_eq!(bus.write(&a, 0x64, &[0xfd]), None);
    assert_eq!(bus.write(&a, 0x60, &[0xfe]), None);
    let s5 = (AcpiSleep::S5_SLP_TYP << 2) | AcpiSleep::SLP_EN;
    assert_eq!(bus.write(&a, 0x600, &[s5]), Some(ExitRequest::PowerOff));
    assert_eq!(bus.write(&a, 0x601, &[s5]), None);
    assert_eq!(bus.write(&a, 0x505, &[1]), Some(ExitRequest::Panic));
    assert_eq!(bus.write(&a, 0x505, &[2]), None);
    assert_eq!(bus.write(&a, 0x506, &[1]), None); // unassigned
}
