//! The RCU stress test: reader threads (QSBR like vCPUs, plus one read-lock reader) translate
//! addresses and check a generation stamp in every block they find, while a writer adds,
//! removes and replaces blocks as fast as it can.
//!
//! # What is checked
//!
//! * **Stamps.** Before a block is published, the writer writes `STAMP ^ id` into its first
//!   and last 8 bytes (`id` is the block's process-unique [`BlockId`]). Every block is built
//!   with `poison_on_unmap(POISON)`: its memory is overwritten with `0xA5` just before munmap.
//!   A reader that finds block `b` (between two quiescent states) reads both stamps (through
//!   the split-capable `read_val` and through `translate` + a volatile read) and requires
//!   `STAMP ^ b.id()`. A block is **stale** when a reader reads anything else from it: poison
//!   (it was unmapped, or is being unmapped, while the reader could still see it), another
//!   block's stamp (its address was unmapped and reused), or a read error. With correct RCU no
//!   reader ever sees a stale block; a fault (SIGSEGV) is the other way an early unmap shows.
//! * **Unmapped after the readers were done.** Each reader publishes the id of the block it is
//!   using in its own `in_use` word and clears it (release) before its quiescent state. Each
//!   block's unmap hook (run just before poisoning) checks that no reader has its id in use.
//! * **Exactly once.** The hook records every unmapped id; a second unmap of an id is counted.
//!   After the run and an `rcu_barrier`, the set of unmapped ids must equal the set of blocks
//!   the writer removed or replaced, and the list's `unmapped` counter their number; after
//!   the list is dropped, every block ever created is unmapped exactly once.
//!
//! # Showing it can fail
//!
//! `stress_with_early_unmap_detects` (ignored) runs the same test with the writer using
//! `RamList::remove_unmap_early`, which unmaps without waiting for a grace period.
//! `broken_early_unmap_is_caught` runs that test in a child process and requires it to fail
//! (stale stamp reported, or killed by SIGSEGV/SIGBUS).
//!
//! `MEMORY_STRESS_SECS` sets the duration (default 4 s).

mod common;

use common::{Rng, PAGE};
use memory::{BlockId, MruHint, RamBlock, RamList};
use parking_lot::Mutex;
use rcu::Rcu;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::Bytes;

const STAMP: u64 = 0x5354_414d_5000_0000;
const POISON: u8 = 0xA5;
const SLOTS: u64 = 16;
const SPAN: u64 = 0x10_0000;
const MAX_PAGES: u64 = 4;
const QSBR_READERS: usize = 2;
/// Lookups between two quiescent states.
const QS_EVERY: u32 = 8;

fn slot_base(s: u64) -> u64 {
    SPAN * (s + 1)
}

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

#[derive(Default)]
struct Shared {
    in_use: Vec<Padded>,
    unmapped: Mutex<HashSet<u64>>,
    double_unmaps: AtomicU64,
    unmapped_in_use: AtomicU64,
    stale: AtomicU64,
    first_stale: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Shared {
    fn report_stale(&self, what: String) {
        self.stale.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_stale.lock();
        if f.is_none() {
            eprintln!("STALE: {what}");
            *f = Some(what);
        }
    }
}

struct Report {
    lookups: u64,
    found: u64,
    hits: u64,
    misses: u64,
    writes: u64,
    created: HashSet<u64>,
    retired: HashSet<u64>,
}

fn new_block(shared: &Arc<Shared>, rng: &mut Rng, s: u64) -> RamBlock {
    let pages = 1 + rng.below(MAX_PAGES);
    let sh = shared.clone();
    let b = RamBlock::builder(
        format!("s{s}-{}", rng.next_u64()),
        slot_base(s),
        pages * PAGE,
    )
    .poison_on_unmap(POISON)
    .on_unmap(move |b: &RamBlock| {
        let id = b.id().as_u64();
        for r in &sh.in_use {
            if r.0.load(Ordering::Acquire) == id {
                sh.unmapped_in_use.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !sh.unmapped.lock().insert(id) {
            sh.double_unmaps.fetch_add(1, Ordering::Relaxed);
        }
    })
    .build()
    .unwrap();
    let stamp = STAMP ^ b.id().as_u64();
    b.write_at(0, &stamp.to_le_bytes()).unwrap();
    b.write_at(b.size() - 8, &stamp.to_le_bytes()).unwrap();
    b
}

/// One reader's checks of one lookup; `snap` is the snapshot the block was found in.
fn check_block(shared: &Shared, snap: &memory::RamSnapshot, hint: &mut MruHint, gpa: u64) -> bool {
    let Some(b) = snap.lookup(hint, gpa) else {
        return false;
    };
    let want = STAMP ^ b.id().as_u64();
    let head = snap.read_val::<u64>(b.gpa());
    let tail = snap.read_val::<u64>(b.last_gpa() - 7);
    let direct = snap
        .translate(hint, b.gpa(), 8)
        .map(|r| r.volatile_slice().read_obj::<u64>(0).ok());
    match (head, tail, direct) {
        (Ok(h), Ok(t), Ok(Some(d))) if h == want && t == want && d == want => {}
        other => shared.report_stale(format!(
            "block {} ({}) at {:#x}: want {want:#x}, read {other:x?}",
            b.id(),
            b.name(),
            b.gpa()
        )),
    }
    true
}

fn run(broken: bool, secs: f64) -> (Report, Arc<Shared>) {
    let rcu = Rcu::builder()
        .high_water(2_000) // bounds the memory of retired blocks
        .batch(16, Duration::from_millis(5))
        .stall_timeout(Duration::from_secs(30))
        .build();
    let ram = Arc::new(RamList::new(&rcu));
    let shared = Arc::new(Shared {
        in_use: (0..QSBR_READERS + 1).map(|_| Padded::default()).collect(),
        ..Shared::default()
    });
    let lookups = Arc::new(AtomicU64::new(0));
    let found = Arc::new(AtomicU64::new(0));
    let hits = Arc::new(AtomicU64::new(0));
    let misses = Arc::new(AtomicU64::new(0));

    let mut readers = Vec::new();
    for t in 0..=QSBR_READERS {
        let (rcu, ram, shared) = (rcu.clone(), ram.clone(), shared.clone());
        let (lookups, found, hits, misses) =
            (lookups.clone(), found.clone(), hits.clone(), misses.clone());
        readers.push(std::thread::spawn(move || {
            let mut rng = Rng::new(t as u64 + 1);
            let mut hint = MruHint::new();
            let (mut n, mut f) = (0u64, 0u64);
            let in_use = &shared.in_use[t].0;
            let mut one = |snap: &memory::RamSnapshot, hint: &mut MruHint, rng: &mut Rng| {
                let gpa = slot_base(rng.below(SLOTS)) + rng.below(MAX_PAGES * PAGE);
                if let Some(b) = snap.find(gpa) {
                    in_use.store(b.id().as_u64(), Ordering::Relaxed);
                }
                n += 1;
                if check_block(&shared, snap, hint, gpa) {
                    f += 1;
                }
                in_use.store(0, Ordering::Release);
            };
            if t < QSBR_READERS {
                // A vCPU: QSBR, a quiescent state every few lookups.
                let mut me = rcu.register_qsbr();
                while !shared.stop.load(Ordering::Relaxed) {
                    for _ in 0..QS_EVERY {
                        one(ram.snapshot(&me), &mut hint, &mut rng);
                    }
                    me.quiescent_state();
                }
            } else {
                // Any other thread: a read-lock section per batch.
                while !shared.stop.load(Ordering::Relaxed) {
                    let g = rcu.read_lock();
                    for _ in 0..QS_EVERY {
                        one(ram.snapshot(&g), &mut hint, &mut rng);
                    }
                }
            }
            lookups.fetch_add(n, Ordering::Relaxed);
            found.fetch_add(f, Ordering::Relaxed);
            hits.fetch_add(hint.hits(), Ordering::Relaxed);
            misses.fetch_add(hint.misses(), Ordering::Relaxed);
        }));
    }

    // The writer: as fast as it can.
    let mut rng = Rng::new(99);
    let mut live: Vec<Option<BlockId>> = vec![None; SLOTS as usize];
    let mut created = HashSet::new();
    let mut retired = HashSet::new();
    let mut writes = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline && shared.stale.load(Ordering::Relaxed) == 0 {
        let s = rng.below(SLOTS);
        match live[s as usize] {
            None => {
                let b = new_block(&shared, &mut rng, s);
                created.insert(b.id().as_u64());
                live[s as usize] = Some(ram.add(b).unwrap());
            }
            Some(id) if rng.below(2) == 0 => {
                if broken {
                    // SAFETY: deliberately violated: readers may still use the block. This
                    // is the bug the test must catch (in a child process).
                    unsafe { ram.remove_unmap_early(id).unwrap() };
                } else {
                    ram.remove(id).unwrap();
                }
                retired.insert(id.as_u64());
                live[s as usize] = None;
            }
            Some(id) => {
                let b = new_block(&shared, &mut rng, s);
                created.insert(b.id().as_u64());
                live[s as usize] = Some(ram.replace(id, b).unwrap());
                retired.insert(id.as_u64());
            }
        }
        writes += 1;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    rcu.rcu_barrier();

    let stats = ram.stats();
    // Before the list goes: exactly the retired blocks are unmapped, each once.
    if !broken {
        assert_eq!(
            *shared.unmapped.lock(),
            retired,
            "unmapped set != retired set"
        );
        assert_eq!(stats.unmapped, retired.len() as u64);
        assert_eq!(stats.removed + stats.replaced, retired.len() as u64);
    }
    drop(ram);
    rcu.rcu_barrier();
    let report = Report {
        lookups: lookups.load(Ordering::Relaxed),
        found: found.load(Ordering::Relaxed),
        hits: hits.load(Ordering::Relaxed),
        misses: misses.load(Ordering::Relaxed),
        writes,
        created,
        retired,
    };
    println!(
        "stress: {:.1}s, {} lookups ({} found, MRU {} hits / {} misses), {} writes \
         ({} blocks created, {} retired), rcu: {:?}",
        secs,
        report.lookups,
        report.found,
        report.hits,
        report.misses,
        report.writes,
        report.created.len(),
        report.retired.len(),
        rcu.stats(),
    );
    (report, shared)
}

fn secs() -> f64 {
    std::env::var("MEMORY_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0)
}

#[test]
fn stress_qsbr_readers_vs_writer() {
    let (r, shared) = run(false, secs());
    let stale = shared.stale.load(Ordering::Relaxed);
    assert_eq!(stale, 0, "first: {:?}", shared.first_stale.lock());
    assert_eq!(shared.unmapped_in_use.load(Ordering::Relaxed), 0);
    assert_eq!(shared.double_unmaps.load(Ordering::Relaxed), 0);
    // After the list's drop every block ever created is unmapped, exactly once.
    assert_eq!(*shared.unmapped.lock(), r.created);
    assert!(r.retired.is_subset(&r.created));
    // The run did real work on both sides.
    assert!(r.writes > 1_000, "only {} writes", r.writes);
    assert!(r.found > 10_000, "only {} blocks found", r.found);
    assert!(r.hits > 0 && r.misses > 0);
}

/// The deliberately broken variant; run by `broken_early_unmap_is_caught` in a child process.
#[test]
#[ignore = "must fail: run through broken_early_unmap_is_caught"]
fn stress_with_early_unmap_detects() {
    let (_r, shared) = run(true, secs().min(3.0));
    let stale = shared.stale.load(Ordering::Relaxed);
    let in_use = shared.unmapped_in_use.load(Ordering::Relaxed);
    assert!(
        stale == 0 && in_use == 0,
        "DETECTED: {stale} stale reads, {in_use} blocks unmapped while in use; first: {:?}",
        shared.first_stale.lock()
    );
}

#[test]
fn broken_early_unmap_is_caught() {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "stress_with_early_unmap_detects",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MEMORY_STRESS_SECS", "3")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let signal = out.status.signal();
    let detected = text.contains("DETECTED") || matches!(signal, Some(11) | Some(7));
    assert!(
        !out.status.success() && detected,
        "the early-unmap variant was not caught (status {:?}):\n{text}",
        out.status
    );
    println!(
        "early unmap caught: status {:?}, {}",
        out.status,
        text.lines()
            .find(|l| l.contains("STALE") || l.contains("DETECTED"))
            .unwrap_or("(killed by a fault)")
    );
}
