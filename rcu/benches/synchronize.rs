//! `synchronize` latency with 0, 1 and 2 busy readers (group `synchronize`), per call.
//!
//! A busy QSBR reader loops `load` + `quiescent_state` (every iteration); a busy read-lock
//! reader loops `read_lock` + `load` + unlock; each passes the value through `black_box`, as
//! liburcu/bench.c's readers do. The measuring thread is not a reader. Every call is timed on
//! its own, for `RCU_BENCH_SYNC_SECS` seconds (default 2) or 4 M calls per configuration,
//! whichever ends first (liburcu/bench.c has the same limits), and the row reports p50, p90,
//! p99, max and how many calls took over 1 ms: criterion's mean would mix the millisecond
//! stalls into the typical call. The domains keep their default spin budget.
//!
//! `cargo bench -p rcu --bench synchronize [-- FILTER]`: rows whose id contains FILTER.

use rcu::{Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Qsbr,
    ReadLock,
}

const MAX_CALLS: usize = 4_000_000;

fn bench_one(rcu: Rcu, kind: Kind, readers: usize, id: &str, secs: f64) {
    let cell = RcuCell::new_in(&rcu, Some(7u64));
    let mut lat: Vec<u64> = Vec::with_capacity(MAX_CALLS);
    common::with_background(
        readers,
        |stop, ready| match kind {
            Kind::Qsbr => {
                let mut me = rcu.register_qsbr();
                ready();
                while !stop.load(Ordering::Relaxed) {
                    black_box(cell.load(&me));
                    me.quiescent_state();
                }
            }
            Kind::ReadLock => {
                drop(rcu.read_lock()); // registers the thread
                ready();
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu.read_lock();
                    black_box(cell.load(&g));
                }
            }
        },
        || {
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            while lat.len() < MAX_CALLS {
                let t = Instant::now();
                rcu.synchronize();
                let e = Instant::now();
                lat.push((e - t).as_nanos() as u64);
                if e > deadline {
                    break;
                }
            }
        },
    );
    let fields = common::latency_fields(&mut lat);
    common::emit_row(&format!(
        "{{\"group\": \"synchronize\", \"id\": \"{id}\", {fields}}}"
    ));
}

fn main() {
    // `cargo bench` passes `--bench`; anything else that is not a flag filters the rows.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let secs: f64 = std::env::var("RCU_BENCH_SYNC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let mut configs: Vec<(String, Kind, usize, bool)> = Vec::new();
    for readers in [0, 1, 2] {
        configs.push((format!("qsbr_readers_{readers}"), Kind::Qsbr, readers, true));
        configs.push((
            format!("read_lock_membarrier_readers_{readers}"),
            Kind::ReadLock,
            readers,
            true,
        ));
    }
    configs.push(("read_lock_fence_readers_1".into(), Kind::ReadLock, 1, false));
    for (id, kind, readers, membarrier) in configs {
        if filter.as_deref().is_some_and(|f| !id.contains(f)) {
            continue;
        }
        let rcu = Rcu::builder().membarrier(membarrier).build();
        if membarrier && kind == Kind::ReadLock && !rcu.uses_membarrier() {
            eprintln!("warning: membarrier unavailable; {id} uses a fence");
        }
        bench_one(rcu, kind, readers, &id, secs);
    }
}
