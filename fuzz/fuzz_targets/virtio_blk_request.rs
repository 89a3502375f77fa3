//! virtio-blk on the virtio-mmio transport, fed guest-controlled garbage: descriptor chains
//! for the pure request parser (`parse_request`, `status_byte`), and whole guest RAM images
//! (descriptor tables, rings, headers) plus register writes for the transport's queue walk
//! (`process_queue`). Nothing may panic or hang; a parsed request must describe buffers in RAM.
#![no_main]

#[path = "common/input.rs"]
mod input;

use devices::virtio::{
    parse_request, status_byte, Block, Descriptor, RequestKind, VirtioMmio, NOTIFY_OFFSET,
};
use devices::{Access, BusDevice};
use input::Input;
use libfuzzer_sys::fuzz_target;
use memory::{BlockFlags, RamBlock, RamList};
use std::sync::{Arc, OnceLock};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const RAM: u64 = 0x1_0000;
const ROM: u64 = 0x1_0000; // 4 KiB read-only right after RAM

struct Env {
    rcu: &'static rcu::Rcu,
    ram: Arc<RamList>,
    dev: VirtioMmio,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rcu: &'static rcu::Rcu = Box::leak(Box::new(rcu::Rcu::new()));
        let ram = Arc::new(RamList::new(rcu));
        ram.add(RamBlock::new("ram", 0, RAM, BlockFlags::empty()).unwrap())
            .unwrap();
        ram.add(RamBlock::new("rom", ROM, 0x1000, BlockFlags::READ_ONLY).unwrap())
            .unwrap();
        let path =
            std::env::temp_dir().join(format!("vmm-fuzz-virtio-blk-{}.img", std::process::id()));
        std::fs::write(&path, vec![0x5a; 32 * 512 + 7]).unwrap();
        let blk = Block::open(&path, false).unwrap();
        let _ = std::fs::remove_file(&path); // the open file keeps it
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = VirtioMmio::new(Arc::new(blk), ram.clone(), irq).unwrap();
        Env { rcu, ram, dev }
    })
}

impl Input<'_> {
    /// An address: mostly inside or at the edges of RAM, sometimes anything.
    fn gpa(&mut self) -> u64 {
        let base = [0, RAM - 0x100, ROM, u64::MAX - 0xff];
        let sel = self.u8() as usize % (base.len() + 1);
        let off = u64::from(self.u16());
        match base.get(sel) {
            Some(b) => b.wrapping_add(off),
            None => self.u64(),
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// The pure parser on a chain built from the input.
fn parse(env: &Env, input: &mut Input<'_>) {
    let guard = env.rcu.read_lock();
    let mem = env.ram.snapshot(&guard);
    // Some guest bytes (headers, discard segments) at a few places.
    for _ in 0..input.u8() % 4 {
        let gpa = input.gpa();
        let len = input.u8() as usize;
        let bytes: Vec<u8> = (0..len).map(|_| input.u8()).collect();
        let _ = mem.write_bytes(gpa, &bytes);
    }
    let n = input.u8() % 20;
    let chain: Vec<Descriptor> = (0..n)
        .map(|_| {
            let addr = input.gpa();
            let len = match input.u8() % 4 {
                0 => u32::from(input.u8()),
                1 => 512 * u32::from(input.u8() % 9),
                2 => 16,
                _ => input.u32(),
            };
            Descriptor::new(addr, len, input.u16() & 7, input.u16())
        })
        .collect();
    let status = status_byte(&chain, mem);
    if let Ok(req) = parse_request(&chain, mem) {
        assert_eq!(Some(req.status), status);
        let total: u64 = req.data.iter().map(|s| u64::from(s.len)).sum();
        assert_eq!(total, req.data_len);
        for s in &req.data {
            assert!(s.len > 0);
            let mut buf = vec![0u8; s.len as usize];
            mem.read_bytes(s.gpa, &mut buf)
                .expect("a parsed request's buffers are RAM");
        }
        if matches!(req.kind, RequestKind::In | RequestKind::Out) {
            assert_eq!(req.data_len % 512, 0);
        }
    }
}

/// The transport: guest RAM from the input, registers from the input, then the queue walk.
fn queue(env: &Env, input: &mut Input<'_>) {
    let guard = env.rcu.read_lock();
    let access = Access::new(0, &guard);
    let dev = &env.dev;
    let wr = |off: u64, v: u32| {
        let _ = dev.write(&access, off, &v.to_le_bytes());
    };
    // Guest RAM: the input's bytes from address 0 (descriptor table, rings, headers, ...).
    let take = (input.u16() as usize).min(input.0.len()).min(RAM as usize);
    let (ram_bytes, rest) = input.0.split_at(take);
    input.0 = rest;
    let mem = env.ram.snapshot(&guard);
    mem.write_bytes(0, ram_bytes).unwrap();
    // Bring-up, each step possibly garbled.
    wr(0x70, 0);
    wr(0x70, 3);
    let features = u64::from(input.u32()) | (1 << 32);
    wr(0x24, 0);
    wr(0x20, features as u32);
    wr(0x24, 1);
    wr(0x20, (features >> 32) as u32);
    wr(0x70, 3 | 8);
    wr(0x30, 0);
    wr(0x38, 1 << (input.u8() % 10));
    let addr = |input: &mut Input<'_>, nice: u64| {
        if input.u8().is_multiple_of(8) {
            input.gpa()
        } else {
            nice
        }
    };
    let (desc, avail, used) = (
        addr(input, 0x1000),
        addr(input, 0x2000),
        addr(input, 0x3000),
    );
    wr(0x80, desc as u32);
    wr(0x84, (desc >> 32) as u32);
    wr(0x90, avail as u32);
    wr(0x94, (avail >> 32) as u32);
    wr(0xa0, used as u32);
    wr(0xa4, (used >> 32) as u32);
    wr(0x44, 1);
    wr(0x70, 3 | 8 | 4);
    // Notifications and stray register writes.
    let mut steps = 0;
    while !input.done() && steps < 16 {
        steps += 1;
        match input.u8() % 4 {
            0 => {
                let off = u64::from(input.u16() % 0x200);
                let v = input.u32();
                if off != 0x70 || v != 0 {
                    wr(off, v);
                }
            }
            1 => {
                let gpa = u64::from(input.u16());
                let v = input.u16();
                let _ = mem.write_val(gpa, v);
            }
            _ => {
                wr(NOTIFY_OFFSET, 0);
                let _ = dev.process_queue(0, &guard);
            }
        }
    }
    let _ = dev.process_queue(0, &guard);
    let _ = dev.irq_eventfd().read();
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let mut input = Input(data);
    if input.u8() % 2 == 0 {
        while !input.done() {
            parse(env, &mut input);
        }
    } else {
        queue(env, &mut input);
    }
});
