//! Guest-physical -> host-virtual lookup: the RCU `RamList` against the designs it replaces.
//!
//! Every variant translates a stream of guest addresses (4096 precomputed, cycled) to host
//! addresses and folds them into a local sink, so they all pay the same loop overhead. Time is
//! the measuring thread's CPU time (the machine is shared and often loaded; wall-clock time
//! would count the time spent waiting for a CPU).
//! Blocks are 64 KiB, one every 1 MiB. Variants:
//!
//! - `floor-bsearch`: unsynchronized binary search over a plain slice (the floor);
//! - `floor-mru`: the same with a local MRU index checked first (the floor for a hint);
//! - `floor-snapshot`: the RCU design's own lookup (`RamSnapshot::host_addr` with an
//!   `MruHint`) through a plain `&RamSnapshot` taken once and never updated: no RCU proof,
//!   no load of the published pointer, no lock. The physical floor of `rcu-qsbr`: the same
//!   data and the same out-of-line loop ([`interval`], 256 lookups a call), with nothing
//!   around the call. Benchmark-only (this file's code, not the crate's API): it would miss
//!   every update, so it is run without a writer;
//! - `rcu-qsbr`: what a vCPU does: a QSBR thread with its own `MruHint` makes a
//!   `RamReader` (`RamList::reader`: proof checked and snapshot loaded once) per
//!   quiescent-state interval and runs [`interval`] on its snapshot; quiescent state every
//!   256 lookups;
//! - `rcu-qsbr-checked`: the same loop through `RamList::host_addr(&me, ..)`, which checks
//!   the proof and loads the current snapshot on every lookup (what `rcu-qsbr` did before
//!   `RamList::reader`);
//! - `rcu-guard`: `RamList::host_addr` with a `read_lock()` guard per lookup (non-vCPU
//!   readers);
//! - `rcu-shared-hint`: one MRU index shared by all readers (QEMU's `mru_block`), through a
//!   `RamReader` per interval as `rcu-qsbr`;
//! - `mutex-walk`: a `std::sync::Mutex` around a linear walk (QEMU before RCU);
//! - `rwlock-bsearch`: a parking_lot `RwLock` read lock plus binary search;
//! - `vm-memory-atomic`: `GuestMemoryAtomic::memory()` + `get_host_address`.
//!
//! Patterns: `mru` (every lookup in one block), `uniform` (uniformly random block),
//! `hot90` (90% in one block, 10% uniform). With 2 threads the second thread runs the same
//! variant on its own address stream (its hot block differs from the first thread's) and the
//! time is the first thread's. `-writer` scenarios add a thread that replaces a random block
//! 1000 times a second (not for the floors, which are unsynchronized).
//!
//! Results: `cargo run --release -p benchreport -- lookup` reads
//! `target/criterion/lookup-*` and writes `memory/benches/lookup.md` and `lookup.svg`.
//!
//! # RCU against its floor, paired
//!
//! `LOOKUP_FLOOR=1 cargo bench -p memory --bench lookup` runs instead a paired comparison of
//! `floor-snapshot`, `rcu-qsbr` and `rcu-qsbr-checked` for every scenario without a writer:
//! rounds of one batch of each (2^20 lookups, the order rotating every round), so that the
//! machine's noise, which drifts over seconds, hits the three alike; per round the ratio of
//! the floor's time to RCU's is RCU's lookup rate relative to the floor. It prints medians
//! and writes them to `target/criterion/lookup_floor.txt` for the report
//! (`LOOKUP_FLOOR_ROUNDS`, default 61, sets the rounds).

use criterion::{criterion_group, Criterion};
use memory::{BlockFlags, MruHint, RamBlock, RamList, RamSnapshot};
use parking_lot::RwLock;

// The integration tests' generator (state given directly: the streams stay as they were).
#[path = "../tests/common/mod.rs"]
mod common;
mod intervals;
use common::Rng;
use intervals::{interval, interval_checked, ADDRS, QS_EVERY};
use rcu::Rcu;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend};
use vm_memory::{GuestMemoryMmap, GuestRegionMmap};

const BLOCK: u64 = 64 * 1024;
const STRIDE: u64 = 1 << 20;

fn block_gpa(i: usize) -> u64 {
    STRIDE * (i as u64 + 1)
}

/// The measuring thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): on a shared, loaded machine
/// wall-clock time would also count the time the thread waits for a CPU.
struct CpuClock(Duration);

impl CpuClock {
    fn now() -> CpuClock {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through the valid pointer we pass.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        CpuClock(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    fn elapsed(&self) -> Duration {
        CpuClock::now().0.saturating_sub(self.0)
    }
}

/// Pins the calling thread to `cpus` (all CPUs if empty). In the 2-thread scenarios the two
/// readers get a CPU each, so that when both run they run at the same time (otherwise the
/// scheduler may time-share them on one CPU of this busy 2-CPU machine, and no contention
/// would be measured). Best effort: ignored where it fails.
fn pin_to(cpus: &[usize]) {
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    let all: Vec<usize> = (0..n).collect();
    let cpus = if cpus.is_empty() { &all[..] } else { cpus };
    // SAFETY: cpu_set_t is a plain bit array (all-zero is the empty set); CPU_ZERO/CPU_SET only
    // write inside it (CPU numbers are below available_parallelism, far below CPU_SETSIZE);
    // sched_setaffinity(0, ..) reads it and affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c % n, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    size: u64,
    host: usize,
}

#[inline(always)]
fn bsearch(t: &[Entry], gpa: u64) -> Option<usize> {
    let n = t.partition_point(|e| e.start <= gpa);
    let i = n.checked_sub(1)?;
    let e = t.get(i)?;
    (gpa.wrapping_sub(e.start) < e.size).then_some(i)
}

#[inline(always)]
fn host_of(t: &[Entry], i: usize, gpa: u64) -> usize {
    t.get(i).map_or(0, |e| {
        e.host.wrapping_add(gpa.wrapping_sub(e.start) as usize)
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    FloorBsearch,
    FloorMru,
    FloorSnapshot,
    RcuQsbr,
    RcuQsbrChecked,
    RcuGuard,
    RcuSharedHint,
    MutexWalk,
    RwLockBsearch,
    VmMemoryAtomic,
}

const ALL: [Variant; 10] = [
    Variant::FloorBsearch,
    Variant::FloorMru,
    Variant::FloorSnapshot,
    Variant::RcuQsbr,
    Variant::RcuQsbrChecked,
    Variant::RcuGuard,
    Variant::RcuSharedHint,
    Variant::MutexWalk,
    Variant::RwLockBsearch,
    Variant::VmMemoryAtomic,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::FloorBsearch => "floor-bsearch",
            Variant::FloorMru => "floor-mru",
            Variant::FloorSnapshot => "floor-snapshot",
            Variant::RcuQsbr => "rcu-qsbr",
            Variant::RcuQsbrChecked => "rcu-qsbr-checked",
            Variant::RcuGuard => "rcu-guard",
            Variant::RcuSharedHint => "rcu-shared-hint",
            Variant::MutexWalk => "mutex-walk",
            Variant::RwLockBsearch => "rwlock-bsearch",
            Variant::VmMemoryAtomic => "vm-memory-atomic",
        }
    }

    fn synchronized(self) -> bool {
        !matches!(
            self,
            Variant::FloorBsearch | Variant::FloorMru | Variant::FloorSnapshot
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pattern {
    Mru,
    Uniform,
    Hot90,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Mru => "mru",
            Pattern::Uniform => "uniform",
            Pattern::Hot90 => "hot90",
        }
    }
}

/// The address stream of thread `t`.
fn addresses(p: Pattern, nblocks: usize, t: usize) -> Box<[u64; ADDRS]> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) << 32) ^ nblocks as u64);
    let hot = (nblocks / 2 + t) % nblocks;
    let mut out = Box::new([0u64; ADDRS]);
    for a in out.iter_mut() {
        let b = match p {
            Pattern::Mru => hot,
            Pattern::Uniform => rng.below(nblocks as u64) as usize,
            Pattern::Hot90 => {
                if rng.below(10) < 9 {
                    hot
                } else {
                    rng.below(nblocks as u64) as usize
                }
            }
        };
        *a = block_gpa(b) + rng.below(BLOCK);
    }
    out
}

/// One instance of every data structure, for `nblocks` blocks.
struct Setup {
    nblocks: usize,
    rcu: Rcu,
    ram: RamList,
    /// `floor-snapshot`'s snapshot of `ram`: taken once, never updated (it holds its blocks,
    /// so their memory stays mapped whatever the writer does).
    floor: Arc<RamSnapshot>,
    table: Vec<Entry>,
    mutex: Mutex<Vec<Entry>>,
    rwlock: RwLock<Vec<Entry>>,
    gma: GuestMemoryAtomic<GuestMemoryMmap<()>>,
    /// Keeps the host memory behind `table`, `mutex` and `rwlock` mapped; the writer swaps
    /// blocks here.
    backing: Mutex<Vec<RamBlock>>,
}

fn entry(b: &RamBlock) -> Entry {
    Entry {
        start: b.gpa(),
        size: b.size(),
        host: b.host_ptr() as usize,
    }
}

fn new_block(i: usize, gen: u64) -> RamBlock {
    RamBlock::new(
        format!("b{i}.{gen}"),
        block_gpa(i),
        BLOCK,
        BlockFlags::empty(),
    )
    .unwrap()
}

impl Setup {
    fn new(nblocks: usize) -> Setup {
        let rcu = Rcu::new();
        let ram = RamList::new(&rcu);
        let mut backing = Vec::new();
        let mut regions = Vec::new();
        for i in 0..nblocks {
            ram.add(new_block(i, 0)).unwrap();
            backing.push(new_block(i, 0));
            regions.push(
                GuestRegionMmap::from_range(GuestAddress(block_gpa(i)), BLOCK as usize, None)
                    .unwrap(),
            );
        }
        let table: Vec<Entry> = backing.iter().map(entry).collect();
        Setup {
            nblocks,
            rcu,
            floor: ram.snapshot_owned(),
            ram,
            mutex: Mutex::new(table.clone()),
            rwlock: RwLock::new(table.clone()),
            table,
            gma: GuestMemoryAtomic::new(GuestMemoryMmap::from_regions(regions).unwrap()),
            backing: Mutex::new(backing),
        }
    }

    /// Replaces block `i` in the structure `v` uses (one writer operation).
    fn replace(&self, v: Variant, i: usize, gen: u64) {
        match v {
            Variant::RcuQsbr
            | Variant::RcuQsbrChecked
            | Variant::RcuGuard
            | Variant::RcuSharedHint => {
                let old = self
                    .ram
                    .snapshot_owned()
                    .blocks()
                    .iter()
                    .find(|b| b.gpa() == block_gpa(i))
                    .map(|b| b.id())
                    .unwrap();
                self.ram.replace(old, new_block(i, gen)).unwrap();
            }
            Variant::MutexWalk | Variant::RwLockBsearch => {
                let nb = new_block(i, gen);
                let e = entry(&nb);
                if v == Variant::MutexWalk {
                    self.mutex.lock().unwrap()[i] = e;
                } else {
                    self.rwlock.write()[i] = e;
                }
                // Readers only compute addresses, they never dereference them: the old
                // mapping can go as soon as no reader can load the old entry.
                let old = std::mem::replace(&mut self.backing.lock().unwrap()[i], nb);
                drop(old);
            }
            Variant::VmMemoryAtomic => {
                let cur = self.gma.memory();
                let (m, _old) = cur
                    .remove_region(GuestAddress(block_gpa(i)), BLOCK)
                    .unwrap();
                let r =
                    GuestRegionMmap::from_range(GuestAddress(block_gpa(i)), BLOCK as usize, None)
                        .unwrap();
                let m = m.insert_region(Arc::new(r)).unwrap();
                self.gma.lock().unwrap().replace(m);
            }
            Variant::FloorBsearch | Variant::FloorMru | Variant::FloorSnapshot => {
                unreachable!("unsynchronized")
            }
        }
    }

    /// `iters` lookups of variant `v` over `addrs`; returns the time they took.
    fn run(&self, v: Variant, addrs: &[u64; ADDRS], iters: u64) -> Duration {
        let addrs = black_box(addrs);
        let mask = ADDRS - 1;
        let mut sink = 0usize;
        let iters = iters as usize;
        let elapsed = match v {
            Variant::FloorBsearch => {
                let t = black_box(&self.table[..]);
                let start = CpuClock::now();
                for i in 0..iters {
                    let gpa = addrs[i & mask];
                    if let Some(j) = bsearch(t, gpa) {
                        sink = sink.wrapping_add(host_of(t, j, gpa));
                    }
                }
                start.elapsed()
            }
            Variant::FloorMru => {
                let t = black_box(&self.table[..]);
                let mut hint = 0usize;
                let start = CpuClock::now();
                for i in 0..iters {
                    let gpa = addrs[i & mask];
                    let hit = t
                        .get(hint)
                        .is_some_and(|e| gpa.wrapping_sub(e.start) < e.size);
                    if !hit {
                        match bsearch(t, gpa) {
                            Some(j) => hint = j,
                            None => continue,
                        }
                    }
                    sink = sink.wrapping_add(host_of(t, hint, gpa));
                }
                start.elapsed()
            }
            Variant::FloorSnapshot => {
                // A plain pointer, read as is: no proof, no published-pointer load, no lock.
                let snap: &RamSnapshot = black_box(&self.floor);
                let mut hint = MruHint::new();
                let start = CpuClock::now();
                let mut i = 0;
                while i < iters {
                    let end = (i + QS_EVERY).min(iters);
                    sink = sink.wrapping_add(interval(snap, &mut hint, addrs, i..end));
                    i = end;
                }
                let e = start.elapsed();
                black_box(hint);
                e
            }
            Variant::RcuQsbr => {
                let mut me = self.rcu.register_qsbr();
                let mut hint = MruHint::new();
                let start = CpuClock::now();
                let mut i = 0;
                while i < iters {
                    let end = (i + QS_EVERY).min(iters);
                    // Proof checked and snapshot loaded once per quiescent-state interval;
                    // `RamReader::host_addr` is `RamSnapshot::host_addr` on that snapshot.
                    let ram = self.ram.reader(&me);
                    sink = sink.wrapping_add(interval(ram.snapshot(), &mut hint, addrs, i..end));
                    me.quiescent_state();
                    i = end;
                }
                let e = start.elapsed();
                black_box(hint);
                e
            }
            Variant::RcuQsbrChecked => {
                let mut me = self.rcu.register_qsbr();
                let mut hint = MruHint::new();
                let start = CpuClock::now();
                let mut i = 0;
                while i < iters {
                    let end = (i + QS_EVERY).min(iters);
                    sink = sink.wrapping_add(interval_checked(
                        &self.ram,
                        &me,
                        &mut hint,
                        addrs,
                        i..end,
                    ));
                    me.quiescent_state();
                    i = end;
                }
                let e = start.elapsed();
                black_box(hint);
                e
            }
            Variant::RcuGuard => {
                let mut hint = MruHint::new();
                let start = CpuClock::now();
                for i in 0..iters {
                    let gpa = addrs[i & mask];
                    let g = self.rcu.read_lock();
                    if let Some(h) = self.ram.host_addr(&g, &mut hint, gpa) {
                        sink = sink.wrapping_add(h as usize);
                    }
                }
                start.elapsed()
            }
            Variant::RcuSharedHint => {
                let mut me = self.rcu.register_qsbr();
                let start = CpuClock::now();
                let mut i = 0;
                while i < iters {
                    let end = (i + QS_EVERY).min(iters);
                    let ram = self.ram.reader(&me);
                    while i < end {
                        let gpa = addrs[i & mask];
                        if let Some(h) = ram.host_addr_shared_hint(gpa) {
                            sink = sink.wrapping_add(h as usize);
                        }
                        i += 1;
                    }
                    me.quiescent_state();
                }
                start.elapsed()
            }
            Variant::MutexWalk => {
                let start = CpuClock::now();
                for i in 0..iters {
                    let gpa = addrs[i & mask];
                    let t = self.mutex.lock().unwrap();
                    if let Some(e) = t.iter().find(|e| gpa.wrapping_sub(e.start) < e.size) {
                        sink = sink.wrapping_add(e.host + (gpa - e.start) as usize);
                    }
                }
                start.elapsed()
            }
            Variant::RwLockBsearch => {
                let start = CpuClock::now();
                for i in 0..iters {
                    let gpa = addrs[i & mask];
                    let t = self.rwlock.read();
                    if let Some(j) = bsearch(&t, gpa) {
                        sink = sink.wrapping_add(host_of(&t, j, gpa));
                    }
                }
                start.elapsed()
            }
            Variant::VmMemoryAtomic => {
                let start = CpuClock::now();
                for i in 0..iters {
                    let gpa = addrs[i & mask];
                    let m = self.gma.memory();
                    if let Ok(h) = m.get_host_address(GuestAddress(gpa)) {
                        sink = sink.wrapping_add(h as usize);
                    }
                }
                start.elapsed()
            }
        };
        black_box(sink);
        elapsed
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    threads: usize,
    nblocks: usize,
    pattern: Pattern,
    writer: bool,
}

impl Scenario {
    fn name(&self) -> String {
        format!(
            "lookup-t{}-b{}-{}{}",
            self.threads,
            self.nblocks,
            self.pattern.name(),
            if self.writer { "-writer" } else { "" }
        )
    }
}

fn scenarios() -> Vec<Scenario> {
    let s = |threads, nblocks, pattern, writer| Scenario {
        threads,
        nblocks,
        pattern,
        writer,
    };
    use Pattern::*;
    vec![
        s(1, 1, Uniform, false),
        s(1, 4, Mru, false),
        s(1, 4, Uniform, false),
        s(1, 4, Hot90, false),
        s(1, 32, Mru, false),
        s(1, 32, Uniform, false),
        s(1, 32, Hot90, false),
        s(2, 4, Uniform, false),
        s(2, 32, Mru, false),
        s(2, 32, Uniform, false),
        s(2, 32, Hot90, false),
        s(1, 32, Uniform, true),
        s(2, 32, Uniform, true),
        s(2, 32, Hot90, true),
    ]
}

/// Background threads for a scenario: the second reader and/or the writer.
struct Background {
    stop: Arc<AtomicBool>,
    readers: Vec<thread::JoinHandle<Duration>>,
    writer: Option<thread::JoinHandle<()>>,
    writes: Arc<AtomicUsize>,
    started: Instant,
}

/// What the background threads did while a variant was measured.
struct Extra {
    /// The second reader's CPU time / wall time (did it really run alongside?).
    bg_share: Option<f64>,
    /// Writer operations per second.
    writer_rate: Option<f64>,
}

impl Background {
    fn start(setup: &Arc<Setup>, sc: Scenario, v: Variant) -> Background {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for t in 1..sc.threads {
            let (setup, stop) = (setup.clone(), stop.clone());
            let addrs = addresses(sc.pattern, sc.nblocks, t);
            readers.push(thread::spawn(move || {
                pin_to(&[t]);
                let mut cpu = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    cpu += setup.run(v, &addrs, 200_000);
                }
                cpu
            }));
        }
        let writer = sc.writer.then(|| {
            let (setup, stop, writes) = (setup.clone(), stop.clone(), writes.clone());
            thread::spawn(move || {
                let mut rng = Rng(7);
                let mut next = Instant::now();
                let mut gen = 1;
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(setup.nblocks as u64) as usize;
                    setup.replace(v, i, gen);
                    gen += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                    next += Duration::from_millis(1);
                    let now = Instant::now();
                    if next > now {
                        thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
        });
        // Let the background threads get going before measuring.
        if sc.threads > 1 || sc.writer {
            thread::sleep(Duration::from_millis(20));
        }
        Background {
            stop,
            readers,
            writer,
            writes,
            started,
        }
    }

    fn stop(self) -> Extra {
        self.stop.store(true, Ordering::Relaxed);
        let wall = self.started.elapsed().as_secs_f64();
        let mut cpu = Duration::ZERO;
        let n = self.readers.len();
        for h in self.readers {
            cpu += h.join().unwrap();
        }
        if let Some(w) = self.writer {
            w.join().unwrap();
        }
        let writes = self.writes.load(Ordering::Relaxed);
        Extra {
            bg_share: (n > 0).then(|| cpu.as_secs_f64() / n as f64 / wall),
            writer_rate: (writes > 0).then(|| writes as f64 / wall),
        }
    }
}

/// Records `extra` beside criterion's estimates, for the report.
fn save_extra(group: &str, v: Variant, main_share: f64, extra: &Extra) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion")
        .join(group)
        .join(v.name());
    let mut text = format!("main_share={main_share:.3}\n");
    if let Some(s) = extra.bg_share {
        text += &format!("bg_share={s:.3}\n");
    }
    if let Some(r) = extra.writer_rate {
        text += &format!("writer_rate={r:.0}\n");
    }
    eprintln!(
        "  {group}/{}: {}",
        v.name(),
        text.trim().replace('\n', ", ")
    );
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("lookup-extra.txt"), text);
    }
}

fn bench_lookup(c: &mut Criterion) {
    let mut setups: Vec<Arc<Setup>> = Vec::new();
    for sc in scenarios() {
        let setup = match setups.iter().find(|s| s.nblocks == sc.nblocks) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Setup::new(sc.nblocks));
                setups.push(s.clone());
                s
            }
        };
        let addrs = addresses(sc.pattern, sc.nblocks, 0);
        let mut group = c.benchmark_group(sc.name());
        for v in ALL {
            if sc.writer && !v.synchronized() {
                continue;
            }
            if sc.threads > 1 {
                pin_to(&[0]);
            }
            let bg = Background::start(&setup, sc, v);
            let (cpu0, wall0) = (CpuClock::now(), Instant::now());
            group.bench_function(v.name(), |b| {
                b.iter_custom(|iters| setup.run(v, &addrs, iters))
            });
            let wall = wall0.elapsed().as_secs_f64();
            let main_share = cpu0.elapsed().as_secs_f64() / wall;
            let extra = bg.stop();
            pin_to(&[]);
            // A benchmark filtered out on the command line returns at once: nothing to record.
            if wall > 0.2 {
                save_extra(&sc.name(), v, main_share, &extra);
            }
        }
        group.finish();
        // Retired blocks of this scenario's writer are freed before the next one starts.
        setup.rcu.rcu_barrier();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(20)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_lookup
}

/// Lookups per batch of the paired comparison.
const PAIR_BATCH: u64 = 1 << 20;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The paired comparison of RCU with its floor (see the module docs).
fn floor_pairs() {
    const VS: [Variant; 3] = [
        Variant::FloorSnapshot,
        Variant::RcuQsbr,
        Variant::RcuQsbrChecked,
    ];
    let rounds: usize = std::env::var("LOOKUP_FLOOR_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(61);
    let mut setups: Vec<Arc<Setup>> = Vec::new();
    let mut out = String::new();
    println!(
        "RCU against its floor: {rounds} rounds of {PAIR_BATCH} lookups per variant, rotating; \
         median ns per lookup (CPU time of the measuring thread)\n"
    );
    println!(
        "| scenario | floor-snapshot | rcu-qsbr | rcu-qsbr-checked | RCU / floor (rate) \
         [q1, q3] | checked / floor | CPU share |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for sc in scenarios().into_iter().filter(|s| !s.writer) {
        let setup = match setups.iter().find(|s| s.nblocks == sc.nblocks) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(Setup::new(sc.nblocks));
                setups.push(s.clone());
                s
            }
        };
        let addrs = addresses(sc.pattern, sc.nblocks, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        // The second reader: the same rotation, on its own CPU and address stream.
        let bg: Vec<_> = (1..sc.threads)
            .map(|t| {
                let (setup, stop) = (setup.clone(), stop.clone());
                let addrs = addresses(sc.pattern, sc.nblocks, t);
                thread::spawn(move || {
                    pin_to(&[t]);
                    let mut cpu = Duration::ZERO;
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        cpu += setup.run(VS[k % VS.len()], &addrs, PAIR_BATCH);
                        k += 1;
                    }
                    cpu
                })
            })
            .collect();
        if sc.threads > 1 {
            pin_to(&[0]);
            thread::sleep(Duration::from_millis(20));
        }
        let cpu0 = CpuClock::now();
        // Warm-up (caches, hint, frequency): one batch each, not counted.
        for v in VS {
            setup.run(v, &addrs, PAIR_BATCH);
        }
        let mut ns: [Vec<f64>; 3] = Default::default();
        let (mut ratio, mut ratio_checked) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let mut t = [0.0; 3];
            for k in 0..VS.len() {
                let j = (r + k) % VS.len();
                t[j] = setup.run(VS[j], &addrs, PAIR_BATCH).as_secs_f64() * 1e9 / PAIR_BATCH as f64;
                ns[j].push(t[j]);
            }
            ratio.push(t[0] / t[1]);
            ratio_checked.push(t[0] / t[2]);
        }
        let wall = started.elapsed().as_secs_f64();
        let main_share = cpu0.elapsed().as_secs_f64() / wall;
        stop.store(true, Ordering::Relaxed);
        let bg_share: Vec<f64> = bg
            .into_iter()
            .map(|h| h.join().unwrap().as_secs_f64() / wall)
            .collect();
        pin_to(&[]);
        let [f, q, c] = ns.map(|mut v| median(&mut v));
        let (lo, hi) = (quantile(&mut ratio, 0.25), quantile(&mut ratio, 0.75));
        let (rm, rcm) = (median(&mut ratio), median(&mut ratio_checked));
        let name = sc.name();
        let name = name.trim_start_matches("lookup-");
        let share = match bg_share.first() {
            Some(b) => format!("{:.0}%/{:.0}%", main_share * 100.0, b * 100.0),
            None => format!("{:.0}%", main_share * 100.0),
        };
        println!(
            "| {name} | {f:.2} | {q:.2} | {c:.2} | {rm:.3} [{lo:.3}, {hi:.3}] | {rcm:.3} | \
             {share} |"
        );
        out += &format!(
            "scenario={name} floor_ns={f:.4} rcu_ns={q:.4} checked_ns={c:.4} ratio={rm:.4} \
             ratio_q1={lo:.4} ratio_q3={hi:.4} checked_ratio={rcm:.4} rounds={rounds} \
             main_share={main_share:.3}{}\n",
            bg_share
                .first()
                .map_or(String::new(), |b| format!(" bg_share={b:.3}"))
        );
        setup.rcu.rcu_barrier();
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    if std::fs::create_dir_all(&dir).is_ok() {
        let f = dir.join("lookup_floor.txt");
        match std::fs::write(&f, out) {
            Ok(()) => eprintln!("wrote {}", f.display()),
            Err(e) => eprintln!("could not write {}: {e}", f.display()),
        }
    }
}

fn main() {
    if std::env::var_os("LOOKUP_FLOOR").is_some() {
        floor_pairs();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
