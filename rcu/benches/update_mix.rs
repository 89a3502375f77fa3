//! Update-heavy mix (group `update_mix`): one updater replaces the value of a shared cell as
//! fast as it can (swap + retire) while one reader loads it and checks a magic value.
//!
//! Retired nodes poison their magic value when they are dropped, so a reader that ever
//! dereferenced a reclaimed node would panic (the check is real, not decorative).
//!
//! Each configuration is measured twice, once from each side:
//! - `reads_*`: the measuring thread is the QSBR reader (`quiescent_state` every
//!   `QS_EVERY` reads, offline between criterion samples); a background thread updates, flat
//!   out, or (`reads_sync_updater_1mps`) paced to at most 1 M updates/s, the target
//!   rate. `reads_no_updater` is the same reader alone. Time per read; the update rate
//!   achieved while reads were timed is printed and saved as `<id>/updater.json`.
//! - `updates_*`: the measuring thread is the updater; a background QSBR reader reads.
//!   Time per update.
//!
//! Updaters: `sync` = `swap` + `Retired::synchronize` (one grace period per update);
//! `call_rcu` = `swap` + `Retired::defer_drop`. The crossbeam-epoch peer uses `pin` + load
//! for reads and `swap` + `defer_destroy` for updates.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use crossbeam_epoch::{self as epoch, Owned};
use rcu::{QsbrThread, Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::QS_EVERY;

const MAGIC: u64 = 0x5eed_cafe_f00d_d00d;
const POISON: u64 = 0xdead_dead_dead_dead;

struct Node {
    magic: AtomicU64,
    seq: u64,
}

impl Node {
    fn new(seq: u64) -> Node {
        Node {
            magic: AtomicU64::new(MAGIC),
            seq,
        }
    }

    #[inline(always)]
    fn check(&self) -> u64 {
        let m = self.magic.load(Ordering::Relaxed);
        if m != MAGIC {
            panic!("reader saw a reclaimed node (magic {m:#x})");
        }
        self.seq
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // An atomic store is not removed as a dead store before the free.
        self.magic.store(POISON, Ordering::Relaxed);
    }
}

/// `iters` QSBR reads (rounded up to a multiple of `QS_EVERY`), or reads until `stop`.
fn qsbr_reads(
    cell: &RcuCell<Node>,
    me: &mut QsbrThread,
    iters: u64,
    stop: Option<&AtomicBool>,
) -> Duration {
    let mut sink = 0u64;
    let mut done = 0u64;
    let start = Instant::now();
    loop {
        for _ in 0..QS_EVERY {
            sink ^= cell.load(me).expect("cell is never empty").check();
        }
        me.quiescent_state();
        done += QS_EVERY;
        let finished = match stop {
            Some(s) => s.load(Ordering::Relaxed),
            None => done >= iters,
        };
        if finished {
            break;
        }
    }
    let t = start.elapsed();
    black_box(sink);
    // Scale to exactly `iters` reads for criterion.
    if stop.is_none() && done != iters && done > 0 {
        t.mul_f64(iters as f64 / done as f64)
    } else {
        t
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Updater {
    Sync,
    CallRcu,
}

fn update(cell: &RcuCell<Node>, how: Updater, seq: u64) {
    let old = cell
        .swap(Some(Box::new(Node::new(seq))))
        .expect("cell is never empty");
    match how {
        Updater::Sync => drop(old.synchronize()),
        Updater::CallRcu => old.defer_drop(),
    }
}

fn cb_read(a: &epoch::Atomic<Node>) -> u64 {
    let g = epoch::pin();
    let p = a.load(Ordering::Acquire, &g);
    // SAFETY: the node is non-null (never emptied) and is destroyed only through
    // `defer_destroy`, after every thread pinned now (including us) has unpinned.
    unsafe { p.deref() }.check()
}

fn cb_update(a: &epoch::Atomic<Node>, seq: u64) {
    let g = epoch::pin();
    let old = a.swap(Owned::new(Node::new(seq)), Ordering::AcqRel, &g);
    // SAFETY: `old` is unreachable from `a` now; readers that still hold it are pinned, and
    // defer_destroy waits for them.
    unsafe { g.defer_destroy(old) };
}

/// The measuring thread reads (QSBR) while a background thread updates, flat out or paced to
/// at most one update per `pace`; prints the update rate achieved while reads were timed.
fn reads_with_updater(
    g: &mut BenchmarkGroup<'_, WallTime>,
    how: Updater,
    pace: Option<Duration>,
    id: &str,
) {
    let rcu = Rcu::new();
    let cell = RcuCell::new_in(&rcu, Some(Node::new(0)));
    let updates = AtomicU64::new(0);
    let mut me = rcu.register_qsbr();
    me.offline();
    let (mut during, mut timed) = (0u64, Duration::ZERO);
    common::with_background(
        1,
        |stop, ready| {
            ready();
            let mut seq = 1;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                update(&cell, how, seq);
                updates.store(seq, Ordering::Relaxed);
                seq += 1;
                if let Some(p) = pace {
                    // No catching up after a delay: the rate is at most one per `pace`.
                    next += p;
                    let now = Instant::now();
                    if next < now {
                        next = now;
                    }
                    while Instant::now() < next {
                        std::hint::spin_loop();
                    }
                }
            }
        },
        || {
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    me.online();
                    let u0 = updates.load(Ordering::Relaxed);
                    let t = qsbr_reads(&cell, &mut me, iters, None);
                    during += updates.load(Ordering::Relaxed) - u0;
                    timed += t;
                    me.offline();
                    t
                })
            });
        },
    );
    let rate = during as f64 / timed.as_secs_f64().max(1e-9);
    println!(
        "update_mix/{id}: the updater did {:.2} M updates/s while reads were timed",
        rate / 1e6
    );
    common::write_side_file(
        "update_mix",
        id,
        "updater.json",
        &format!("{{\"updates_per_s\": {rate:.0}}}\n"),
    );
    drop(me);
    rcu.rcu_barrier();
}

fn bench_rcu(c: &mut Criterion) {
    let mut g = c.benchmark_group("update_mix");
    g.throughput(Throughput::Elements(1));

    // Reader alone.
    {
        let rcu = Rcu::new();
        let cell = RcuCell::new_in(&rcu, Some(Node::new(0)));
        let mut me = rcu.register_qsbr();
        me.offline();
        g.bench_function("reads_no_updater", |b| {
            b.iter_custom(|iters| {
                me.online();
                let t = qsbr_reads(&cell, &mut me, iters, None);
                me.offline();
                t
            })
        });
    }

    reads_with_updater(&mut g, Updater::Sync, None, "reads_sync_updater");
    reads_with_updater(
        &mut g,
        Updater::Sync,
        Some(Duration::from_micros(1)),
        "reads_sync_updater_1mps",
    );
    reads_with_updater(&mut g, Updater::CallRcu, None, "reads_call_rcu_updater");

    for (how, name) in [(Updater::Sync, "sync"), (Updater::CallRcu, "call_rcu")] {
        // The measuring thread updates; a background QSBR thread reads.
        let rcu = Rcu::new();
        let cell = RcuCell::new_in(&rcu, Some(Node::new(0)));
        common::with_background(
            1,
            |stop, ready| {
                let mut me = rcu.register_qsbr();
                ready();
                qsbr_reads(&cell, &mut me, 0, Some(stop));
            },
            || {
                let mut seq = 1;
                g.bench_function(format!("updates_{name}"), |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            update(&cell, how, seq);
                            seq += 1;
                        }
                        t.elapsed()
                    })
                });
            },
        );
        rcu.rcu_barrier();
    }

    // crossbeam-epoch peer.
    let a = epoch::Atomic::new(Node::new(0));
    let cb_reads = |iters: u64| {
        let mut sink = 0;
        let t = Instant::now();
        for _ in 0..iters {
            sink ^= cb_read(&a);
        }
        black_box(sink);
        t.elapsed()
    };
    g.bench_function("crossbeam_reads_no_updater", |b| b.iter_custom(cb_reads));
    common::with_background(
        1,
        |stop, ready| {
            ready();
            let mut seq = 1;
            while !stop.load(Ordering::Relaxed) {
                cb_update(&a, seq);
                seq += 1;
            }
        },
        || {
            g.bench_function("crossbeam_reads_defer_updater", |b| b.iter_custom(cb_reads));
        },
    );
    common::with_background(
        1,
        |stop, ready| {
            ready();
            let mut sink = 0;
            while !stop.load(Ordering::Relaxed) {
                sink ^= cb_read(&a);
            }
            black_box(sink);
        },
        || {
            let mut seq = 1;
            g.bench_function("crossbeam_updates_defer", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        cb_update(&a, seq);
                        seq += 1;
                    }
                    t.elapsed()
                })
            });
        },
    );
    g.finish();
    // SAFETY: every other thread has finished; the pointer came from Atomic::new / Owned.
    drop(unsafe { a.into_owned() });
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_rcu
}
criterion_main!(benches);
