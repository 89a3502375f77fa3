//! RcuList under fire, in the manner of QEMU's test-rcu-list: writers insert and remove at
//! random while readers of both kinds walk the list; no reader may ever see a reclaimed node,
//! and at the end every removed node was reclaimed exactly once.
//!
//! `rcu/tests/broken.sh` builds this test with `--cfg rcu_broken_reclaim` (callbacks run
//! without waiting for a grace period) and checks that it fails.

use rcu::{Rcu, RcuList};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const ALIVE: u64 = 0x600d_600d_600d_600d;
const POISON: u64 = 0xdead_dead_dead_dead;
const MAX_IDS: usize = 4_000_000;

struct Shared {
    dead: Vec<AtomicBool>,
    next_id: AtomicUsize,
    reclaimed: AtomicUsize,
    errors: AtomicUsize,
}

struct Elem {
    magic: AtomicU64,
    id: usize,
    shared: Arc<Shared>,
}

impl Drop for Elem {
    fn drop(&mut self) {
        self.magic.store(POISON, Ordering::SeqCst);
        if self.shared.dead[self.id].swap(true, Ordering::SeqCst) {
            self.shared.errors.fetch_add(1, Ordering::SeqCst); // reclaimed twice
        }
        self.shared.reclaimed.fetch_add(1, Ordering::SeqCst);
    }
}

fn check(e: &Elem, shared: &Shared) {
    if e.magic.load(Ordering::SeqCst) != ALIVE || shared.dead[e.id].load(Ordering::SeqCst) {
        shared.errors.fetch_add(1, Ordering::SeqCst);
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn random_inserts_and_removes_under_concurrent_readers() {
    let secs: u64 = std::env::var("RCU_LIST_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rcu = Rcu::builder().batch(64, Duration::from_millis(5)).build();
    let list = Arc::new(RcuList::new_in(&rcu));
    let shared = Arc::new(Shared {
        dead: (0..MAX_IDS).map(|_| AtomicBool::new(false)).collect(),
        next_id: AtomicUsize::new(0),
        reclaimed: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });
    let removed = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(secs);

    let mut threads = Vec::new();
    // Two writers.
    for w in 0..2u64 {
        let (list, shared, removed, stop) =
            (list.clone(), shared.clone(), removed.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (w + 1);
            while !stop.load(Ordering::Relaxed) {
                let r = xorshift(&mut seed);
                let mut wr = list.write();
                if r.is_multiple_of(2) || wr.len() < 8 {
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    if id >= MAX_IDS {
                        break;
                    }
                    let e = Elem {
                        magic: AtomicU64::new(ALIVE),
                        id,
                        shared: shared.clone(),
                    };
                    match r % 3 {
                        0 => wr.push_front(e),
                        1 => wr.push_back(e),
                        _ => {
                            let pick = (r >> 8) as usize % (wr.len() + 1);
                            let mut i = 0;
                            if let Err(e) = wr.insert_after(
                                |_| {
                                    i += 1;
                                    i > pick
                                },
                                e,
                            ) {
                                wr.push_front(e);
                            }
                        }
                    }
                } else {
                    let pick = (r >> 8) as usize % wr.len();
                    let mut i = 0;
                    if wr.remove_first(|_| {
                        i += 1;
                        i > pick
                    }) {
                        removed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // A read-lock reader and a QSBR reader.
    {
        let (rcu, list, shared, reads, stop) = (
            rcu.clone(),
            list.clone(),
            shared.clone(),
            reads.clone(),
            stop.clone(),
        );
        threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let g = rcu.read_lock();
                for e in list.iter(&g) {
                    check(e, &shared);
                }
                drop(g);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let (rcu, list, shared, reads, stop) = (
            rcu.clone(),
            list.clone(),
            shared.clone(),
            reads.clone(),
            stop.clone(),
        );
        threads.push(thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            while !stop.load(Ordering::Relaxed) {
                for e in list.iter(&me) {
                    check(e, &shared);
                }
                me.quiescent_state();
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    rcu.rcu_barrier();

    let inserted = shared.next_id.load(Ordering::SeqCst).min(MAX_IDS);
    let removed = removed.load(Ordering::SeqCst);
    eprintln!(
        "inserted {inserted}, removed {removed}, list walks {}, left {}",
        reads.load(Ordering::Relaxed),
        list.len()
    );
    assert_eq!(
        shared.errors.load(Ordering::SeqCst),
        0,
        "a reader saw a reclaimed node"
    );
    assert!(removed > 1000, "the writers barely ran");
    assert_eq!(shared.reclaimed.load(Ordering::SeqCst), removed);
    assert_eq!(list.len(), inserted - removed);
    match Arc::try_unwrap(list) {
        Ok(list) => drop(list),
        Err(_) => panic!("all threads joined, so the list has one owner"),
    }
    assert_eq!(shared.reclaimed.load(Ordering::SeqCst), inserted);
}
