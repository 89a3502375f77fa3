//! Dispatch latency and events/s of the RCU main loop against a plain mio loop whose handlers
//! sit in a `Mutex<HashMap>` (the design without RCU), with 1, 100 and 1,000 registered fds,
//! each with and without a third thread that adds and removes handlers flat out.
//!
//! * `latency/<design>/<n>`: the bench thread writes one byte to one of the n pipes (in turn)
//!   and waits until that pipe's handler has run (it bumps a counter the bench thread watches).
//!   Each sample reports the **median** of its iterations (times the iteration count): on a
//!   noisy 2-core VM a mean is dominated by the odd preemption of the loop thread, which says
//!   nothing about either design.
//! * `throughput/<design>/<n>`: a burst of n ready events: the bench thread parks the loop
//!   inside a control handler (a spin on a flag; the loop holds its main lock there, the BQL
//!   or the handler map's mutex), writes one byte to each of the n pipes, releases the loop and
//!   times until n handler runs: one `epoll_wait` and n dispatches, with no wake-up from idle
//!   in the measured span. Reported as events per second, again from the median burst of each
//!   sample.
//!
//! `<design>` is `rcu` or `mutex`, suffixed `+writer` when the churn thread runs. Both loops'
//! handlers do the same work (one `read`, one counter increment). Summarize with
//! `python3 iohandler/benches/table.py` (reads `target/criterion`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use iohandler::MainLoop;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1, 100, 1000];
const EXTRA: usize = 16;

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

fn close(fd: RawFd) {
    // SAFETY: the bench owns these fds and closes each once.
    unsafe { libc::close(fd) };
}

fn write1(fd: RawFd) {
    let b = 1u8;
    // SAFETY: one byte from a valid buffer.
    let rc = unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    assert_eq!(rc, 1);
}

/// The handler body of both designs: one read, one counter bump.
fn handler(fd: RawFd, done: Arc<AtomicU64>) -> impl FnMut() + Send + 'static {
    move || {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for 64 bytes of writes.
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        done.fetch_add(1, Ordering::Release);
    }
}

/// The control handler: tells the bench thread the loop is inside it, then spins until told
/// to go on (so the loop is busy, not asleep, while the burst is written).
#[derive(Default)]
struct Control {
    inside: AtomicBool,
    go: AtomicBool,
}

fn control_handler(fd: RawFd, ctl: Arc<Control>) -> impl FnMut() + Send + 'static {
    move || {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for 64 bytes of writes.
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        ctl.inside.store(true, Ordering::Release);
        while !ctl.go.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        ctl.go.store(false, Ordering::Relaxed);
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < 8192 {
            // Needs root when the hard limit is lower; 1,000 pipes need ~2,100 fds.
            lim.rlim_cur = 8192;
            lim.rlim_max = lim.rlim_max.max(8192);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// What the two designs offer the measurements.
trait Design {
    fn churn_once(&self, fd: RawFd);
}

struct RcuDesign {
    h: iohandler::LoopHandle,
    thread: Option<JoinHandle<iohandler::Result<()>>>,
}

impl RcuDesign {
    fn new(pipes: &[(RawFd, RawFd)], done: &Arc<AtomicU64>, ctl: (RawFd, Arc<Control>)) -> Self {
        let mut ml = MainLoop::new().unwrap();
        let h = ml.handle();
        h.set_read_handler(ctl.0, control_handler(ctl.0, ctl.1))
            .unwrap();
        for &(r, _) in pipes {
            h.set_read_handler(r, handler(r, done.clone())).unwrap();
        }
        let thread = std::thread::Builder::new()
            .name("rcu-loop".into())
            .spawn(move || ml.run())
            .unwrap();
        RcuDesign {
            h,
            thread: Some(thread),
        }
    }
}

impl Design for RcuDesign {
    fn churn_once(&self, fd: RawFd) {
        self.h
            .set_read_handler(fd, handler(fd, Arc::new(AtomicU64::new(0))))
            .unwrap();
        self.h.remove_fd_handler(fd);
    }
}

impl Drop for RcuDesign {
    fn drop(&mut self) {
        self.h.quit();
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

type Map = Arc<Mutex<HashMap<usize, Box<dyn FnMut() + Send>>>>;

/// The design without RCU: handlers in a `Mutex<HashMap>`, looked up per event and called
/// under the lock (which is what makes "never called after removal returns" hold there).
struct MutexDesign {
    map: Map,
    registry: Registry,
    waker: Arc<Waker>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const WAKER: Token = Token(usize::MAX);

impl MutexDesign {
    fn new(pipes: &[(RawFd, RawFd)], done: &Arc<AtomicU64>, ctl: (RawFd, Arc<Control>)) -> Self {
        let mut poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let map: Map = Arc::new(Mutex::new(HashMap::new()));
        map.lock()
            .unwrap()
            .insert(ctl.0 as usize, Box::new(control_handler(ctl.0, ctl.1)));
        registry
            .register(
                &mut SourceFd(&ctl.0),
                Token(ctl.0 as usize),
                Interest::READABLE,
            )
            .unwrap();
        for &(r, _) in pipes {
            map.lock()
                .unwrap()
                .insert(r as usize, Box::new(handler(r, done.clone())));
            registry
                .register(&mut SourceFd(&r), Token(r as usize), Interest::READABLE)
                .unwrap();
        }
        let quit = Arc::new(AtomicBool::new(false));
        let (m2, q2) = (map.clone(), quit.clone());
        let thread = std::thread::Builder::new()
            .name("mutex-loop".into())
            .spawn(move || {
                let mut events = Events::with_capacity(1024);
                while !q2.load(Ordering::Acquire) {
                    if let Err(e) = poll.poll(&mut events, None) {
                        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
                    }
                    for ev in events.iter() {
                        if ev.token() == WAKER {
                            continue;
                        }
                        if let Some(h) = m2.lock().unwrap().get_mut(&ev.token().0) {
                            h();
                        }
                    }
                }
            })
            .unwrap();
        MutexDesign {
            map,
            registry,
            waker,
            quit,
            thread: Some(thread),
        }
    }
}

impl Design for MutexDesign {
    fn churn_once(&self, fd: RawFd) {
        // Insert before registering (an edge reported before the insert would be lost);
        // unregister after removing (an event in between finds nothing, harmlessly).
        self.map.lock().unwrap().insert(
            fd as usize,
            Box::new(handler(fd, Arc::new(AtomicU64::new(0)))),
        );
        self.registry
            .register(&mut SourceFd(&fd), Token(fd as usize), Interest::READABLE)
            .unwrap();
        self.map.lock().unwrap().remove(&(fd as usize));
        self.registry.deregister(&mut SourceFd(&fd)).unwrap();
    }
}

impl Drop for MutexDesign {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        self.waker.wake().unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Waits until `done` reaches `target`: spin briefly, then yield (2 cores, 3 busy threads).
#[inline]
fn wait_for(done: &AtomicU64, target: u64) {
    let mut spins = 0u32;
    while done.load(Ordering::Acquire) < target {
        spins += 1;
        if spins < 2000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The churn thread: add and remove a handler on one of EXTRA spare pipes, flat out.
fn start_writer(
    design: Arc<dyn Design + Send + Sync>,
    extra: Vec<RawFd>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("churn".into())
        .spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                design.churn_once(extra[k % extra.len()]);
                k += 1;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap()
}

fn bench(c: &mut Criterion) {
    raise_nofile();
    for &n in &SIZES {
        for design_name in ["rcu", "mutex"] {
            for writer in [false, true] {
                let pipes: Vec<(RawFd, RawFd)> = (0..n).map(|_| pipe()).collect();
                let extra: Vec<(RawFd, RawFd)> = (0..EXTRA).map(|_| pipe()).collect();
                let done = Arc::new(AtomicU64::new(0));
                let ctl_pipe = pipe();
                let ctl = Arc::new(Control::default());
                let ctl_arg = (ctl_pipe.0, ctl.clone());
                let design: Arc<dyn Design + Send + Sync> = match design_name {
                    "rcu" => Arc::new(RcuDesign::new(&pipes, &done, ctl_arg)),
                    _ => Arc::new(MutexDesign::new(&pipes, &done, ctl_arg)),
                };
                let stop = Arc::new(AtomicBool::new(false));
                let ops = Arc::new(AtomicU64::new(0));
                let churn = writer.then(|| {
                    start_writer(
                        design.clone(),
                        extra.iter().map(|p| p.0).collect(),
                        stop.clone(),
                        ops.clone(),
                    )
                });
                let id = if writer {
                    format!("{design_name}+writer")
                } else {
                    design_name.to_string()
                };
                let started = Instant::now();

                let mut g = c.benchmark_group("latency");
                g.sample_size(30)
                    .warm_up_time(Duration::from_millis(700))
                    .measurement_time(Duration::from_secs(3));
                let mut next = 0usize;
                g.bench_function(BenchmarkId::new(&id, n), |b| {
                    b.iter_custom(|iters| {
                        let mut each = Vec::with_capacity(iters as usize);
                        for _ in 0..iters {
                            let target = done.load(Ordering::Acquire) + 1;
                            let fd = pipes[next % n].1;
                            next += 1;
                            let t0 = Instant::now();
                            write1(fd);
                            wait_for(&done, target);
                            each.push(t0.elapsed());
                        }
                        each.sort_unstable();
                        each[each.len() / 2].mul_f64(iters as f64)
                    })
                });
                g.finish();

                let mut g = c.benchmark_group("throughput");
                g.sample_size(30)
                    .warm_up_time(Duration::from_millis(700))
                    .measurement_time(Duration::from_secs(3))
                    .throughput(Throughput::Elements(n as u64));
                g.bench_function(BenchmarkId::new(&id, n), |b| {
                    b.iter_custom(|iters| {
                        let mut each = Vec::with_capacity(iters as usize);
                        for _ in 0..iters {
                            write1(ctl_pipe.1);
                            while !ctl.inside.swap(false, Ordering::Acquire) {
                                std::hint::spin_loop();
                            }
                            let target = done.load(Ordering::Acquire) + n as u64;
                            for p in &pipes {
                                write1(p.1);
                            }
                            let t0 = Instant::now();
                            ctl.go.store(true, Ordering::Release);
                            wait_for(&done, target);
                            each.push(t0.elapsed());
                        }
                        each.sort_unstable();
                        each[each.len() / 2].mul_f64(iters as f64)
                    })
                });
                g.finish();

                stop.store(true, Ordering::Relaxed);
                if let Some(t) = churn {
                    t.join().unwrap();
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "writer/{id}/{n}: {:.0} add+remove pairs/s",
                        ops.load(Ordering::Relaxed) as f64 / secs
                    );
                }
                drop(design);
                for (r, w) in pipes.into_iter().chain(extra).chain([ctl_pipe]) {
                    close(r);
                    close(w);
                }
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
