//! `call_rcu` throughput, enqueue to completion (group `call_rcu`), with batches of 20,000
//! and of 1,000,000 callbacks: liburcu's call_rcu thread waits about 10 ms between batches,
//! so its rate depends on the batch size, and the comparison must show both.
//!
//! One batch enqueues `K` callbacks, each of which frees a small box (what `defer_drop`
//! does) and counts itself, then waits until all of them have run:
//!
//! - ours: `call_rcu` x K, then `rcu_barrier()` (which returns when every callback queued
//!   before it has run), with one busy reader in the domain (QSBR, `quiescent_state` every
//!   16 reads, or read-lock); default domain settings (high-water mark included);
//! - crossbeam-epoch: `defer` x K under one pin, unpin, then `pin().flush()` repeatedly until
//!   the counter shows that all K ran (crossbeam has no barrier; flushing from the measuring
//!   thread is the fastest way it offers to get deferred functions run), with one busy reader
//!   thread pinning and loading.
//!
//! liburcu/bench.c does the same with `call_rcu` + `rcu_barrier` and the same readers.
//! After each batch the counter must have grown by exactly K (checked). Each row is the
//! median batch time over 21 batches of 20,000 (after 3 unrecorded) or 7 batches of
//! 1,000,000 (after 1).
//!
//! `cargo bench -p rcu --bench call_rcu [-- FILTER]`: rows whose id contains FILTER.

use crossbeam_epoch as epoch;
use rcu::{Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

mod common;

/// (callbacks per batch, unrecorded batches, recorded batches)
const BATCHES: [(u64, usize, usize); 2] = [(20_000, 3, 21), (1_000_000, 1, 7)];

static RAN: AtomicU64 = AtomicU64::new(0);

fn callback(b: Box<u64>) {
    black_box(&b);
    drop(b);
    RAN.fetch_add(1, Ordering::Relaxed);
}

fn rcu_batch(rcu: &Rcu, k: u64) {
    let before = RAN.load(Ordering::Relaxed);
    for i in 0..k {
        let b = Box::new(i);
        rcu.call_rcu(move || callback(b));
    }
    rcu.rcu_barrier();
    assert_eq!(
        RAN.load(Ordering::Relaxed) - before,
        k,
        "rcu_barrier returned early"
    );
}

fn crossbeam_batch(k: u64) {
    let before = RAN.load(Ordering::Relaxed);
    {
        let guard = epoch::pin();
        for i in 0..k {
            let b = Box::new(i);
            guard.defer(move || callback(b));
        }
    }
    while RAN.load(Ordering::Relaxed) - before < k {
        epoch::pin().flush();
    }
    // The reader thread may run deferred functions too, but only ours exist here.
    assert_eq!(RAN.load(Ordering::Relaxed) - before, k);
}

/// Times the batches of `(k, warm, reps)` and emits the row.
fn measure(id: &str, (k, warm, reps): (u64, usize, usize), batch: impl Fn(u64)) {
    let mut v = Vec::with_capacity(reps);
    for r in 0..warm + reps {
        let t = Instant::now();
        batch(k);
        let d = t.elapsed().as_nanos() as f64;
        if r >= warm {
            v.push(d);
        }
    }
    let med = common::median(&mut v);
    common::emit_row(&format!(
        "{{\"group\": \"call_rcu\", \"id\": \"{id}\", \"batch\": {k}, \"median_ns\": {med:.0}, \
         \"min_ns\": {:.0}, \"max_ns\": {:.0}, \"reps\": {reps}, \"elements\": {k}}}",
        v[0],
        v[v.len() - 1]
    ));
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |id: &str| match &filter {
        Some(f) => id.contains(f.as_str()),
        None => true,
    };
    let rcu = Rcu::new();
    let cell = RcuCell::new_in(&rcu, Some(1u64));
    let shared = epoch::Atomic::new(1u64);
    for batch in BATCHES {
        // Ours, with a busy QSBR reader.
        if wanted("rcu_call_rcu_qsbr_reader") {
            common::with_background(
                1,
                |stop, ready| {
                    let mut me = rcu.register_qsbr();
                    ready();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..common::QS_EVERY {
                            black_box(cell.load(&me));
                        }
                        me.quiescent_state();
                    }
                },
                || measure("rcu_call_rcu_qsbr_reader", batch, |k| rcu_batch(&rcu, k)),
            );
        }
        // Ours, with a busy read-lock reader (membarrier domain).
        if wanted("rcu_call_rcu_read_lock_reader") {
            common::with_background(
                1,
                |stop, ready| {
                    drop(rcu.read_lock());
                    ready();
                    while !stop.load(Ordering::Relaxed) {
                        let r = rcu.read_lock();
                        black_box(cell.load(&r));
                    }
                },
                || {
                    measure("rcu_call_rcu_read_lock_reader", batch, |k| {
                        rcu_batch(&rcu, k)
                    })
                },
            );
        }
        // crossbeam-epoch, with a busy reader.
        if wanted("crossbeam_defer_flush") {
            common::with_background(
                1,
                |stop, ready| {
                    ready();
                    while !stop.load(Ordering::Relaxed) {
                        let g = epoch::pin();
                        black_box(shared.load(Ordering::Acquire, &g));
                    }
                },
                || measure("crossbeam_defer_flush", batch, crossbeam_batch),
            );
        }
    }
    // SAFETY: no reader is left; the pointer came from Atomic::new.
    drop(unsafe { shared.into_owned() });
}
