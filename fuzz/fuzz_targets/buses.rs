//! Sequences of port and MMIO accesses on the buses with every device the VMM attaches
//! (`Vm::new_in`: 16550A at 0x3f8, i8042 at 0x60, the ACPI sleep registers at 0x600, pvpanic
//! at 0x505, the test counter at 0x510, the lookup device at 0x520), plus hot-plug of
//! `Constant` devices on both buses between accesses and guest input to the UART. Any
//! address, length and value; nothing may panic, and a removed device never answers.
#![no_main]

#[path = "common/input.rs"]
mod input;

use devices::{Access, AcpiSleep, Bus, Constant, PvPanic, Serial, TestCounter, I8042};
use input::Input;
use libfuzzer_sys::fuzz_target;
use memory::{BlockFlags, RamBlock, RamList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use vmm::bench::lookup::{AltTables, LookupDesign, LookupDevice};

struct Env {
    rcu: &'static rcu::Rcu,
    pio: Bus,
    mmio: Bus,
    serial: Arc<Serial>,
    exits: Arc<AtomicU64>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rcu: &'static rcu::Rcu = Box::leak(Box::new(rcu::Rcu::new()));
        let pio = Bus::new("pio", rcu);
        let mmio = Bus::new("mmio", rcu);
        let exits = Arc::new(AtomicU64::new(0));
        let irq = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let serial = Arc::new(Serial::new(irq, Box::new(std::io::sink())));
        pio.insert(0x3f8, 8, serial.clone()).unwrap();
        pio.insert(0x60, 5, Arc::new(I8042::new())).unwrap();
        pio.insert(0x600, 2, Arc::new(AcpiSleep::new())).unwrap();
        pio.insert(0x505, 1, Arc::new(PvPanic)).unwrap();
        pio.insert(0x510, 2, Arc::new(TestCounter::default()))
            .unwrap();
        let ram = Arc::new(RamList::new(rcu));
        ram.add(RamBlock::new("ram", 0, 1 << 20, BlockFlags::empty()).unwrap())
            .unwrap();
        let counters: Arc<[vmm::kvm::vcpu::ExitCounters]> =
            vec![vmm::kvm::vcpu::ExitCounters::default()].into();
        let lookup = LookupDevice::new(
            ram,
            AltTables::new(LookupDesign::Rcu),
            LookupDesign::Rcu,
            counters,
        );
        pio.insert(0x520, 8, Arc::new(lookup)).unwrap();
        Env {
            rcu,
            pio,
            mmio,
            serial,
            exits,
        }
    })
}

impl Input<'_> {
    /// A port: mostly at or near a device, sometimes anywhere.
    fn port(&mut self) -> u64 {
        const PORTS: [u64; 7] = [0x3f8, 0x60, 0x600, 0x505, 0x510, 0x520, 0x700];
        let sel = self.u8();
        match PORTS.get(usize::from(sel % 8)) {
            Some(p) => p + u64::from(sel >> 3 & 7),
            None => u64::from(self.u16()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let mut input = Input(data);
    let mut plugged: Vec<(bool, u64)> = Vec::new();
    let mut steps = 0;
    while !input.0.is_empty() && steps < 256 {
        steps += 1;
        let op = input.u8();
        let len = usize::from(input.u8() % 17);
        let guard = env.rcu.read_lock();
        // Any vCPU index, also one past the device's per-vCPU state.
        let access = Access::new(usize::from(op >> 6), &guard);
        match op % 8 {
            0 | 1 => {
                let port = input.port();
                let mut buf = [0u8; 16];
                env.pio.read(&access, port, &mut buf[..len]);
            }
            2 | 3 => {
                let port = input.port();
                let v = input.u64().to_le_bytes();
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&v);
                buf[8..].copy_from_slice(&v);
                if env.pio.write(&access, port, &buf[..len]).is_some() {
                    env.exits.fetch_add(1, Ordering::Relaxed);
                }
            }
            4 => {
                let addr = input.u64();
                let mut buf = [0u8; 16];
                let hit = env.mmio.read(&access, addr, &mut buf[..len]);
                if !hit {
                    assert!(buf[..len].iter().all(|&b| b == 0xff));
                }
                let _ = env.mmio.write(&access, addr, &buf[..len]);
            }
            5 => {
                // Hot-plug a Constant on either bus; overlaps are refused.
                drop(guard);
                let on_mmio = input.u8() & 1 == 1;
                let (base, size) = if on_mmio {
                    (input.u64(), u64::from(input.u8()))
                } else {
                    (input.port(), u64::from(input.u8() % 16))
                };
                let bus = if on_mmio { &env.mmio } else { &env.pio };
                let dev = Arc::new(Constant::new("fuzz", input.u64() as u32));
                if bus.insert(base, size, dev).is_ok() {
                    plugged.push((on_mmio, base));
                }
            }
            6 => {
                drop(guard);
                if let Some((on_mmio, base)) = plugged.pop() {
                    let bus = if on_mmio { &env.mmio } else { &env.pio };
                    let dev = bus.remove(base).expect("remove a plugged device");
                    assert_eq!(dev.name(), "fuzz");
                    let guard = env.rcu.read_lock();
                    let mut b = [0u8; 1];
                    // Overlaps are refused, so nothing else can answer there now.
                    let access = Access::new(0, &guard);
                    assert!(!bus.read(&access, base, &mut b), "{base:#x} still answers");
                    assert_eq!(b[0], 0xff);
                }
            }
            _ => {
                drop(guard);
                let n = usize::from(input.u8() % 80);
                let bytes: Vec<u8> = (0..n).map(|_| input.u8()).collect();
                let took = env.serial.enqueue_input(&bytes);
                assert!(took <= bytes.len());
            }
        }
    }
    for (on_mmio, base) in plugged {
        let bus = if on_mmio { &env.mmio } else { &env.pio };
        bus.remove(base).expect("remove a plugged device");
    }
    let _ = env.exits.load(Ordering::Relaxed);
});
