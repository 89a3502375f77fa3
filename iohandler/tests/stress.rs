//! Stress: 1,000 pipes with read handlers, a writer thread keeping them busy, and two threads
//! that add, replace and remove handlers at random (and open, register, remove and close
//! short-lived pipes, so fd numbers and token slots are reused) for several seconds
//! (`IOHANDLER_STRESS_SECS`, default 4).
//!
//! Checked:
//! * every byte written reaches a live handler of its pipe (per-pipe counts match at the end);
//! * no removed handler runs: each handler instance has a state (live / removed / dropped) in
//!   a table that is never freed; the remover marks it removed right after `set_fd_handler`
//!   returns, and the callback checks it on entry and on exit;
//! * no freed handler is touched: the callback's captured probe poisons itself in `Drop`, and
//!   the callback checks the poison first;
//! * memory returns to its baseline: live probes and the loop's handler records are 0 after
//!   `run()` returns, and every instance ended up dropped exactly once.
//!
//! `RUSTFLAGS="--cfg iohandler_broken_remove"` (no call gate) makes this test fail, and so
//! does `--cfg rcu_broken_reclaim` (call_rcu callbacks without a grace period).
#![cfg(not(loom))]

mod common;

use common::{drain, raise_nofile, wait_until, write_fd, Pipe};
use iohandler::{Bql, LoopHandle, MainLoop};
use rcu::Rcu;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PIPES: usize = 1000;
const MAX_IDS: usize = 8 << 20;
const FREE: u8 = 0;
const LIVE: u8 = 1;
const REMOVED: u8 = 2;
const DROPPED: u8 = 3;
const MAGIC_LIVE: u64 = 0x11fe_11fe_11fe_11fe;
const MAGIC_DEAD: u64 = 0xdead_dead_dead_dead;
const TEMP: usize = usize::MAX;

struct World {
    states: Vec<AtomicU8>,
    next_id: AtomicUsize,
    live_probes: AtomicI64,
    removed_ran: AtomicU64,
    poisoned: AtomicU64,
    double_drop: AtomicU64,
    wrong_context: AtomicU64,
    read: Vec<AtomicU64>,
    written: Vec<AtomicU64>,
    calls: AtomicU64,
}

struct Probe {
    world: Arc<World>,
    id: usize,
    magic: AtomicU64,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.magic.store(MAGIC_DEAD, Ordering::Relaxed);
        let prev = self.world.states[self.id].swap(DROPPED, Ordering::Relaxed);
        if prev == DROPPED || prev == FREE {
            self.world.double_drop.fetch_add(1, Ordering::Relaxed);
        }
        self.world.live_probes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new handler instance for `fd` (pipe number `pipe`, or TEMP); returns its id.
fn handler(
    world: &Arc<World>,
    h: &LoopHandle,
    pipe: usize,
    fd: RawFd,
) -> (usize, iohandler::Callback) {
    let id = world.next_id.fetch_add(1, Ordering::Relaxed);
    assert!(
        id < MAX_IDS,
        "state table full; lower the rate or raise MAX_IDS"
    );
    world.states[id].store(LIVE, Ordering::Relaxed);
    world.live_probes.fetch_add(1, Ordering::Relaxed);
    let probe = Probe {
        world: world.clone(),
        id,
        magic: AtomicU64::new(MAGIC_LIVE),
    };
    let h = h.clone();
    let cb = move || {
        // Poison first: a freed probe reads as dead (or as garbage: anything but live).
        if probe.magic.load(Ordering::Relaxed) != MAGIC_LIVE {
            // Do not touch anything else through a freed closure.
            POISON_SEEN.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let w = &probe.world;
        w.calls.fetch_add(1, Ordering::Relaxed);
        if w.states[probe.id].load(Ordering::Acquire) != LIVE {
            w.removed_ran.fetch_add(1, Ordering::Relaxed);
        }
        if !h.is_loop_thread() || !h.bql().held_by_current_thread() {
            w.wrong_context.fetch_add(1, Ordering::Relaxed);
        }
        let n = drain(fd) as u64;
        if pipe != TEMP {
            w.read[pipe].fetch_add(n, Ordering::Relaxed);
        }
        // Still live on the way out: a removal cannot have returned during this call.
        if w.states[probe.id].load(Ordering::Acquire) != LIVE {
            w.removed_ran.fetch_add(1, Ordering::Relaxed);
        }
    };
    (id, Box::new(cb))
}

/// The remover's mark, right after the removal returned. The instance may already have been
/// dropped (the grace period and the call_rcu batch can finish before the remover gets here).
fn mark_removed(world: &World, id: usize) {
    let _ = world.states[id].compare_exchange(LIVE, REMOVED, Ordering::Release, Ordering::Relaxed);
}

/// Counted outside `World`, which a poisoned probe must not be trusted to reach.
static POISON_SEEN: AtomicU64 = AtomicU64::new(0);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn thousand_pipes_with_concurrent_add_and_remove() {
    let limit = raise_nofile(8192);
    assert!(
        limit >= 2 * PIPES as u64 + 256,
        "RLIMIT_NOFILE is {limit}; this test needs {} fds",
        2 * PIPES + 256
    );
    let secs: f64 = std::env::var("IOHANDLER_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let world = Arc::new(World {
        states: (0..MAX_IDS).map(|_| AtomicU8::new(FREE)).collect(),
        next_id: AtomicUsize::new(0),
        live_probes: AtomicI64::new(0),
        removed_ran: AtomicU64::new(0),
        poisoned: AtomicU64::new(0),
        double_drop: AtomicU64::new(0),
        wrong_context: AtomicU64::new(0),
        read: (0..PIPES).map(|_| AtomicU64::new(0)).collect(),
        written: (0..PIPES).map(|_| AtomicU64::new(0)).collect(),
        calls: AtomicU64::new(0),
    });
    let pipes: Arc<Vec<Pipe>> = Arc::new((0..PIPES).map(|_| Pipe::new()).collect());
    // The current handler instance of each pipe; the test's own lock, held across the
    // set_fd_handler call so that the "removed" marks name the right instance.
    let current: Arc<Vec<Mutex<Option<usize>>>> =
        Arc::new((0..PIPES).map(|_| Mutex::new(None)).collect());

    // A domain without a callback lock: handler records are then freed by the reclamation
    // thread while the loop dispatches, and only the grace period keeps dispatch off freed
    // records. (With the VMM's domain, `rcu_domain(&bql)`, reclamation also needs the BQL,
    // which the loop holds across every use of a record, so that lock alone would hide a
    // broken grace period; the other tests use that domain.)
    let mut ml = MainLoop::with_domain(Bql::new(), Rcu::new()).unwrap();
    let h = ml.handle();
    for (i, p) in pipes.iter().enumerate() {
        let (id, cb) = handler(&world, &h, i, p.rfd());
        h.set_fd_handler(p.rfd(), Some(cb), None).unwrap();
        *current[i].lock().unwrap() = Some(id);
    }
    assert_eq!(h.handler_count(), PIPES);
    let looper = std::thread::Builder::new()
        .name("main-loop".into())
        .spawn(move || ml.run())
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, pipes, world) = (stop.clone(), pipes.clone(), world.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = (rng.next() % PIPES as u64) as usize;
                let w = write_fd(pipes[i].wfd(), 1 + (rng.next() % 3) as usize) as u64;
                world.written[i].fetch_add(w, Ordering::Relaxed);
                n += 1;
                if n.is_multiple_of(32) {
                    std::thread::yield_now();
                }
            }
        })
    };
    let churners: Vec<_> = (0..2u64)
        .map(|k| {
            let (stop, pipes, world, current, h, ops) = (
                stop.clone(),
                pipes.clone(),
                world.clone(),
                current.clone(),
                h.clone(),
                ops.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234_5678_9abc_def1 ^ (k << 32));
                while !stop.load(Ordering::Relaxed) {
                    let r = rng.next();
                    let i = ((r >> 8) % PIPES as u64) as usize;
                    match r % 10 {
                        // Replace (or add) the handler of pipe i.
                        0..=5 => {
                            let mut cur = current[i].lock().unwrap();
                            let fd = pipes[i].rfd();
                            let (id, cb) = handler(&world, &h, i, fd);
                            h.set_fd_handler(fd, Some(cb), None).unwrap();
                            if let Some(old) = cur.replace(id) {
                                mark_removed(&world, old);
                            }
                        }
                        // Remove it (or add one if it had none).
                        6..=7 => {
                            let mut cur = current[i].lock().unwrap();
                            let fd = pipes[i].rfd();
                            match cur.take() {
                                Some(old) => {
                                    assert!(h.remove_fd_handler(fd));
                                    mark_removed(&world, old);
                                }
                                None => {
                                    let (id, cb) = handler(&world, &h, i, fd);
                                    h.set_fd_handler(fd, Some(cb), None).unwrap();
                                    *cur = Some(id);
                                }
                            }
                        }
                        // A short-lived pipe: open, register, write, remove, close.
                        _ => {
                            let p = Pipe::new();
                            let (id, cb) = handler(&world, &h, TEMP, p.rfd());
                            h.set_fd_handler(p.rfd(), Some(cb), None).unwrap();
                            p.write(1);
                            if r & (1 << 40) != 0 {
                                std::thread::yield_now();
                            }
                            assert!(h.remove_fd_handler(p.rfd()));
                            mark_removed(&world, id);
                            drop(p);
                        }
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // A read-lock reader walking the handler list (RCU readers besides the loop).
    let walks = Arc::new(AtomicU64::new(0));
    let walker = {
        let (stop, h, walks) = (stop.clone(), h.clone(), walks.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let fds = h.handler_fds();
                assert!(fds.iter().all(|&fd| fd >= 0) && fds.len() <= PIPES + 4);
                walks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs_f64(secs) {
        std::thread::sleep(Duration::from_millis(20));
        // Fail early rather than run on after a violation.
        if world.removed_ran.load(Ordering::Relaxed) > 0 || POISON_SEEN.load(Ordering::Relaxed) > 0
        {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    walker.join().unwrap();
    for c in churners {
        c.join().unwrap();
    }
    // Every pipe gets a handler again; then every byte must arrive.
    for (i, p) in pipes.iter().enumerate() {
        let mut cur = current[i].lock().unwrap();
        if cur.is_none() {
            let (id, cb) = handler(&world, &h, i, p.rfd());
            h.set_fd_handler(p.rfd(), Some(cb), None).unwrap();
            *cur = Some(id);
        }
    }
    let violations =
        || world.removed_ran.load(Ordering::Relaxed) + POISON_SEEN.load(Ordering::Relaxed);
    if violations() == 0 {
        wait_until(
            "every written byte to be read",
            Duration::from_secs(60),
            || {
                (0..PIPES).all(|i| {
                    world.read[i].load(Ordering::Relaxed)
                        == world.written[i].load(Ordering::Relaxed)
                })
            },
        );
    }
    let stats = h.stats();
    h.quit();
    looper.join().unwrap().unwrap();

    let ids = world.next_id.load(Ordering::Relaxed);
    let written: u64 = world
        .written
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "stress: {:.1} s, {} churn ops, {ids} handler instances, {written} bytes written, \
         {} handler calls, {} rounds, {} stale events, {} calls skipped (removed after \
         lookup), {} BQL hand-offs, {} list walks",
        start.elapsed().as_secs_f64(),
        ops.load(Ordering::Relaxed),
        world.calls.load(Ordering::Relaxed),
        stats.rounds,
        stats.stale_events,
        stats.skipped_removed,
        stats.bql_handoffs,
        walks.load(Ordering::Relaxed)
    );
    assert_eq!(
        world.removed_ran.load(Ordering::Relaxed),
        0,
        "a handler ran after its removal had returned"
    );
    assert_eq!(
        POISON_SEEN.load(Ordering::Relaxed),
        0,
        "a freed handler was called"
    );
    assert_eq!(world.poisoned.load(Ordering::Relaxed), 0);
    assert_eq!(
        world.wrong_context.load(Ordering::Relaxed),
        0,
        "a handler ran off the loop or without the BQL"
    );
    assert_eq!(
        world.double_drop.load(Ordering::Relaxed),
        0,
        "a handler was dropped twice"
    );
    for i in 0..PIPES {
        assert_eq!(
            world.read[i].load(Ordering::Relaxed),
            world.written[i].load(Ordering::Relaxed),
            "pipe {i}: bytes lost"
        );
    }
    // Memory back to the baseline: no handler instance and no handler record is left.
    assert_eq!(
        world.live_probes.load(Ordering::Relaxed),
        0,
        "handler closures leaked"
    );
    assert_eq!(h.stats().handler_records, 0, "handler records leaked");
    assert_eq!(h.handler_count(), 0);
    assert!(
        (0..ids).all(|i| world.states[i].load(Ordering::Relaxed) == DROPPED),
        "every instance was dropped"
    );
    assert!(
        ops.load(Ordering::Relaxed) > 1000,
        "the churn threads barely ran"
    );
    assert!(
        world.calls.load(Ordering::Relaxed) > 1000,
        "the loop barely dispatched"
    );
}
