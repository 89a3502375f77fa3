//! The i8042 (vm-superio's model) through the port-I/O bus, as a guest reaches it.

use devices::{Access, Bus, BusDevice, ExitRequest, I8042};
use rcu::{Rcu, ReadGuard};
use std::sync::{Arc, Mutex};

/// A PIO bus with the i8042 at 0x60–0x64, and the exit requests its writes returned.
fn setup(rcu: &Rcu) -> (Bus, Arc<Mutex<Vec<ExitRequest>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = Bus::new("pio", rcu);
    let dev = I8042::new();
    assert_eq!(dev.name(), "i8042");
    bus.insert(0x60, 5, Arc::new(dev)).unwrap();
    (bus, seen)
}

/// A write as vCPU 0 makes it; a returned exit request is recorded in `seen`.
fn write(bus: &Bus, g: &ReadGuard<'_>, port: u64, data: &[u8], seen: &Mutex<Vec<ExitRequest>>) {
    if let Some(r) = bus.write(&Access::new(0, g), port, data) {
        seen.lock().unwrap().push(r);
    }
}

#[test]
fn command_0xfe_on_port_0x64_asks_for_a_reset() {
    let rcu = Rcu::new();
    let (bus, seen) = setup(&rcu);
    let g = rcu.read_lock();
    // What Linux's reboot=k does: wait for an empty input buffer, then pulse the reset line.
    let mut status = [0xffu8];
    assert!(bus.read(&Access::new(0, &g), 0x64, &mut status));
    assert_eq!(status[0] & 0x02, 0, "input buffer empty");
    write(&bus, &g, 0x64, &[0xfe], &seen);
    assert_eq!(*seen.lock().unwrap(), vec![ExitRequest::Reset]);
    // Again (a guest may retry): one request per command.
    write(&bus, &g, 0x64, &[0xfe], &seen);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn other_commands_and_ports_do_not_reset() {
    let rcu = Rcu::new();
    let (bus, seen) = setup(&rcu);
    let g = rcu.read_lock();
    for (port, v) in [
        (0x64, 0xfd),
        (0x64, 0xad),
        (0x64, 0x00),
        (0x60, 0xfe),
        (0x61, 0xfe),
    ] {
        write(&bus, &g, port, &[v], &seen);
    }
    // 0xFE as a later byte of a wider access is not a command on 0x64.
    write(&bus, &g, 0x64, &[0x00, 0xfe], &seen);
    write(&bus, &g, 0x63, &[0x00, 0xfe], &seen);
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn status_and_data_ports_read_zero_at_any_size() {
    let rcu = Rcu::new();
    let (bus, _seen) = setup(&rcu);
    let g = rcu.read_lock();
    for port in 0x60..=0x64 {
        for len in [1usize, 2, 4, 8, 16] {
            let mut d = vec![0xaau8; len];
            assert!(bus.read(&Access::new(0, &g), port, &mut d));
            assert!(d.iter().all(|b| *b == 0), "port {port:#x} len {len}: {d:?}");
        }
    }
    // Just outside the range: nothing answers (all-ones).
    let mut d = [0u8; 1];
    assert!(!bus.read(&Access::new(0, &g), 0x65, &mut d));
    assert_eq!(d, [0xff]);
}

#[test]
fn odd_accesses_never_panic() {
    let rcu = Rcu::new();
    let (bus, seen) = setup(&rcu);
    let g = rcu.read_lock();
    for port in 0x60..=0x64 {
        // Empty accesses do nothing.
        let mut empty = [0u8; 0];
        assert!(bus.read(&Access::new(0, &g), port, &mut empty));
        write(&bus, &g, port, &[], &seen);
        for len in [3usize, 5, 7, 9, 64] {
            let mut d = vec![0x5au8; len];
            assert!(bus.read(&Access::new(0, &g), port, &mut d));
            write(&bus, &g, port, &d, &seen);
        }
    }
    assert!(seen.lock().unwrap().is_empty());
    // Called directly, offsets past the range (and past a byte) read zero and are ignored.
    let dev = I8042::new();
    let a = Access::new(0, &g);
    for off in [5u64, 0xff, 0x100, 0x104, u64::MAX] {
        let mut d = [0xaau8; 2];
        dev.read(&a, off, &mut d);
        assert_eq!(d, [0, 0]);
        assert_eq!(dev.write(&a, off, &[0xfe]), None);
    }
}
