//! Dispatch latency and events/s of the RCU main loop against a plain mio loop whose handlers
//! sit in a `Mutex<HashMap>` (the design without RCU), with 1, 100 and 1,000 registered fds,
//! each with and without a third thread that adds and removes handlers flat out.
//!
//! * `latency/<design>/<n>`: the bench thread writes one byte to one of the n pipes (in turn)
//!   and waits until that pipe's handler has run (it bumps a counter the bench thread watches).
//!   Each sample reports the **median** of its iterations (times the iteration count): on a
//!   noisy 2-core VM a mean is dominated by the odd preemption of the loop thread, which says
//!   nothing about either design.
//! * `throughput/<design>/<n>`: the dispatch cost of a burst of n ready events: the bench
//!   thread parks the loop inside a control handler (a spin on a flag; the loop holds its main
//!   lock there, the BQL or the handler map's mutex), writes one byte to each of the n pipes,
//!   releases the loop, waits for the n handler runs and for the loop to go back to sleep, and
//!   records the **loop thread's CPU time** over that span (`pthread_getcpuclockid`): one
//!   `epoll_wait`, n dispatches and the rest of the round. CPU time, not wall time, because
//!   this 2-core machine is shared and a burst of a millisecond is often preempted; it still
//!   counts cache misses and lock spinning caused by the churn thread, but not time spent
//!   blocked on a lock (which only the Mutex design would pay). Reported as events per second
//!   of loop CPU.
//!
//! `<design>` is `rcu` or `mutex`, suffixed `+writer` when the churn thread runs. Both loops'
//! handlers do the same work (one `read`, one counter increment). The Mutex loop has no BQL,
//! no timers and no bottom halves: the RCU loop pays for those on every round too.
//!
//! After the criterion groups, `paired` measures the same two things with the designs
//! interleaved (one RCU ping, one Mutex ping, ...; both loops, and both churn threads in the
//! writer rows, alive at once), so that the shared machine's changing load hits both alike,
//! and prints a markdown table of medians and ratios: the numbers to compare. The per-design
//! criterion results are summarized by `cargo run --release -p benchreport -- iohandler`.
//!
//! Run: `cargo bench -p iohandler --bench dispatch` (about 3 minutes).

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
    /// The CPU-time clock of the loop thread.
    fn loop_clock(&self) -> libc::clockid_t;
}

fn thread_clock<T>(t: &JoinHandle<T>) -> libc::clockid_t {
    use std::os::unix::thread::JoinHandleExt;
    let mut id: libc::clockid_t = 0;
    // SAFETY: the thread is alive (joined only on drop); `id` is valid for writes.
    let rc = unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut id) };
    assert_eq!(rc, 0);
    id
}

/// CPU time consumed so far by the thread whose clock is `clock`.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes; the clock id came from pthread_getcpuclockid.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

    fn loop_clock(&self) -> libc::clockid_t {
        thread_clock(self.thread.as_ref().unwrap())
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

    fn loop_clock(&self) -> libc::clockid_t {
        thread_clock(self.thread.as_ref().unwrap())
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

/// One design under test with its pipes, control handler and optional churn thread.
struct Rig {
    name: String,
    n: usize,
    design: Option<Arc<dyn Design + Send + Sync>>,
    pipes: Vec<(RawFd, RawFd)>,
    extra: Vec<(RawFd, RawFd)>,
    ctl_pipe: (RawFd, RawFd),
    ctl: Arc<Control>,
    done: Arc<AtomicU64>,
    clock: libc::clockid_t,
    next: usize,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    churn: Option<JoinHandle<()>>,
    started: Instant,
}

impl Rig {
    fn new(design_name: &str, n: usize, writer: bool) -> Rig {
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
            let (design, stop, ops) = (design.clone(), stop.clone(), ops.clone());
            let extra: Vec<RawFd> = extra.iter().map(|p| p.0).collect();
            std::thread::Builder::new()
                .name("churn".into())
                .spawn(move || {
                    // Add and remove a handler on one of the spare pipes, flat out.
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        design.churn_once(extra[k % extra.len()]);
                        k += 1;
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .unwrap()
        });
        let clock = design.loop_clock();
        Rig {
            name: if writer {
                format!("{design_name}+writer")
            } else {
                design_name.to_string()
            },
            n,
            design: Some(design),
            pipes,
            extra,
            ctl_pipe,
            ctl,
            done,
            clock,
            next: 0,
            stop,
            ops,
            churn,
            started: Instant::now(),
        }
    }

    /// Latency of one event: write a byte to the next pipe, wait for its handler (wall time).
    fn ping(&mut self) -> Duration {
        let target = self.done.load(Ordering::Acquire) + 1;
        let fd = self.pipes[self.next % self.n].1;
        self.next += 1;
        let t0 = Instant::now();
        write1(fd);
        wait_for(&self.done, target);
        t0.elapsed()
    }

    /// Loop CPU time to dispatch a burst of n ready events (see the module docs).
    fn burst(&mut self) -> Duration {
        write1(self.ctl_pipe.1);
        while !self.ctl.inside.swap(false, Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let target = self.done.load(Ordering::Acquire) + self.n as u64;
        for p in &self.pipes {
            write1(p.1);
        }
        let c0 = cpu_time(self.clock);
        self.ctl.go.store(true, Ordering::Release);
        wait_for(&self.done, target);
        // Let the loop finish its round and block in poll again.
        let mut c1 = cpu_time(self.clock);
        loop {
            std::thread::sleep(Duration::from_micros(20));
            let c2 = cpu_time(self.clock);
            if c2 == c1 {
                break;
            }
            c1 = c2;
        }
        c1 - c0
    }

    /// Churn rate (add+remove pairs per second) since the rig started.
    fn churn_rate(&self) -> f64 {
        self.ops.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.churn.take() {
            t.join().unwrap();
        }
        drop(self.design.take());
        for &(r, w) in self.pipes.iter().chain(&self.extra).chain([&self.ctl_pipe]) {
            close(r);
            close(w);
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    raise_nofile();
    for &n in &SIZES {
        for design_name in ["rcu", "mutex"] {
            for writer in [false, true] {
                let mut rig = Rig::new(design_name, n, writer);
                let id = rig.name.clone();

                let mut g = c.benchmark_group("latency");
                g.sample_size(30)
                    .warm_up_time(Duration::from_millis(500))
                    .measurement_time(Duration::from_secs(2));
                g.bench_function(BenchmarkId::new(&id, n), |b| {
                    b.iter_custom(|iters| {
                        let mut each: Vec<Duration> = (0..iters).map(|_| rig.ping()).collect();
                        median(&mut each).mul_f64(iters as f64)
                    })
                });
                g.finish();

                let mut g = c.benchmark_group("throughput");
                g.sample_size(30)
                    .warm_up_time(Duration::from_millis(500))
                    .measurement_time(Duration::from_secs(2))
                    .throughput(Throughput::Elements(n as u64));
                g.bench_function(BenchmarkId::new(&id, n), |b| {
                    b.iter_custom(|iters| (0..iters).map(|_| rig.burst()).sum())
                });
                g.finish();
                if writer {
                    println!("churn/{id}/{n}: {:.0} add+remove pairs/s", rig.churn_rate());
                }
            }
        }
    }
}

/// The same measurements, with the two designs interleaved (one RCU ping, one Mutex ping,
/// ...) so that the machine's changing load hits both alike: the ratios to trust on a shared
/// machine. Prints a markdown table.
fn paired(_c: &mut Criterion) {
    raise_nofile();
    let pings = 4000;
    println!();
    println!("Interleaved comparison (medians; {pings} pings and 100..1000 bursts per cell):");
    println!();
    println!(
        "| fds | writer | latency RCU | latency Mutex | RCU/Mutex (lower is better) \
         | events/s RCU | events/s Mutex | RCU/Mutex (higher is better) | churn pairs/s RCU / Mutex |"
    );
    println!("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &SIZES {
        for writer in [false, true] {
            let mut rigs = [Rig::new("rcu", n, writer), Rig::new("mutex", n, writer)];
            let bursts = (200_000 / n).clamp(100, 1000);
            let mut lat = [Vec::new(), Vec::new()];
            let mut cpu = [Vec::new(), Vec::new()];
            // Warm up both.
            for r in rigs.iter_mut() {
                for _ in 0..200 {
                    r.ping();
                }
                for _ in 0..10 {
                    r.burst();
                }
            }
            for k in 0..pings {
                for j in [k % 2, 1 - k % 2] {
                    lat[j].push(rigs[j].ping());
                }
            }
            for k in 0..bursts {
                for j in [k % 2, 1 - k % 2] {
                    cpu[j].push(rigs[j].burst());
                }
            }
            let l = [median(&mut lat[0]), median(&mut lat[1])];
            let b = [median(&mut cpu[0]), median(&mut cpu[1])];
            let rate = |d: Duration| n as f64 / d.as_secs_f64() / 1e3;
            let churn = if writer {
                format!(
                    "{:.0}k / {:.0}k",
                    rigs[0].churn_rate() / 1e3,
                    rigs[1].churn_rate() / 1e3
                )
            } else {
                "-".to_string()
            };
            println!(
                "| {n} | {} | {:.2} µs | {:.2} µs | {:.2}x | {:.0} k/s | {:.0} k/s | {:.2}x | {churn} |",
                if writer { "yes" } else { "no" },
                l[0].as_secs_f64() * 1e6,
                l[1].as_secs_f64() * 1e6,
                l[0].as_secs_f64() / l[1].as_secs_f64(),
                rate(b[0]),
                rate(b[1]),
                b[1].as_secs_f64() / b[0].as_secs_f64(),
            );
        }
    }
    println!();
}

criterion_group!(benches, bench, paired);
criterion_main!(benches);
