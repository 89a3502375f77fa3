//! `rcutorture`: stress and performance tests of the `rcu` crate, in the manner of QEMU's
//! `tests/unit/rcutorture.c` and liburcu's `rcutorture.h` (both after Paul E. McKenney's
//! original), extended to both of our reader kinds and to every way of waiting for a grace
//! period.
//!
//! ```text
//! rcutorture stress [--duration 10s] [--readers 2] [--qsbr-readers 2] [--updaters 1]
//!                   [--fake-updaters 1] [--update synchronize|call-rcu|poll] [--no-membarrier]
//! rcutorture rperf  [--duration 2s] [--readers 1] [--qsbr] [--no-membarrier]
//! rcutorture uperf  [--duration 2s] [--readers 0] [--qsbr-readers 0] [--updaters 1]
//!                   [--no-membarrier]
//! ```
//!
//! # The stress test
//!
//! An [`rcu::RcuCell`] holds the current element; an element has an `age` and an `mbtest` field.
//! Updaters (serialized by a writer lock) allocate a fresh element (`age` 0, `mbtest` live),
//! publish it, and mark the element they unpublished with `age` 1. Once a grace period has
//! provably elapsed since the unpublish, the element enters a 10-entry pipeline; entering
//! bumps the age of every element in the pipeline (so an element has age >= 2 from the moment
//! its grace period is known to be over), and the element that falls off the end is poisoned
//! (`mbtest` overwritten) and freed. How the updater learns that the grace period is over is
//! the `--update` mode:
//!
//! - `synchronize`: [`rcu::Retired::synchronize`], then the pipeline step on the updater's thread;
//! - `call-rcu`: the pipeline step is a [`rcu::Rcu::call_rcu`] callback (the updater never waits,
//!   except when the bounded-garbage throttle stops it);
//! - `poll`: [`rcu::Rcu::start_poll`], then [`rcu::Rcu::poll`] until it reports completion.
//!
//! Readers (read-lock readers in a nested `read_lock` section, QSBR readers between two
//! quiescent states) load the current element, check `mbtest`, spin a little, read `age`,
//! and check `mbtest` again. A correct RCU implies that a reader sees only age 0 (current) or
//! 1 (unpublished while it was reading), and never a poisoned element. A reader that sees
//! age >= 2 held an element across a whole grace period (the grace period was too short);
//! a reader that sees the poison read reclaimed memory. Either counts as an error, and the
//! program exits 1. With `call-rcu`, after the run an `rcu_barrier` must have brought every
//! retired element into the pipeline (else callbacks were lost).
//!
//! `--broken` (test only) makes the updater reclaim (poison) the unpublished element at once,
//! with no grace period, which the readers must catch. The memory itself is still released
//! through a real grace period, so even the broken mode never reads freed memory.
//!
//! # Exit status
//!
//! 0: pass; 1: the stress test found errors (or a thread panicked); 2: usage error.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(not(loom))]
    return torture::main();
    // The loom build of the crate has no thread-local readers and no global domain; the
    // binary exists there only so that `cargo test --test loom` can build the package.
    #[cfg(loom)]
    {
        eprintln!("rcutorture: not available in a --cfg loom build");
        ExitCode::from(2)
    }
}

#[cfg(not(loom))]
mod torture {
    use parking_lot::Mutex;
    use rcu::{Rcu, RcuCell};
    use std::collections::VecDeque;
    use std::fmt::Write as _;
    use std::hint::black_box;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// Retired elements kept (and aged) after their grace period, before they are poisoned.
    const PIPE_LEN: usize = 10;
    /// Age histogram buckets: 0..=9 and "10 or more".
    const HIST_LEN: usize = PIPE_LEN + 1;
    const MB_LIVE: u32 = 0x600d_f00d;
    const MB_POISON: u32 = 0xdead_beef;
    /// Reads between two checks of the stop flag in the perf tests.
    const READ_RUN: u64 = 1000;
    /// Stress QSBR readers: reads between two quiescent states.
    const QS_EVERY: u32 = 4;
    /// Stress QSBR readers: quiescent windows between two trips offline.
    const OFFLINE_EVERY: u64 = 4096;
    const MAX_THREADS: usize = 1024;

    const EXIT_FAIL: u8 = 1;
    const EXIT_USAGE: u8 = 2;

    const USAGE: &str = "\
usage: rcutorture <stress|rperf|uperf> [options]

modes:
  stress  pipeline torture test (QEMU/liburcu rcutorture); exits 1 if a reader saw a
          reclaimed element or an element aged 2 or more (a grace period that was too short)
  rperf   read-side cost: ns per read-side section (lock + load + unlock, or a QSBR load)
  uperf   update-side cost: ns per synchronize()

common options:
  --duration D       run time with a unit: 500ms, 10s, 10m (default: stress 10s, perf 2s)
  --no-membarrier    read-lock readers use a full fence instead of relying on membarrier(2)
  -h, --help         this text

stress options:
  --readers N        read-lock reader threads (default 2)
  --qsbr-readers N   QSBR reader threads (default 2)
  --updaters N       updater threads (default 1)
  --fake-updaters N  threads that only call synchronize() in a loop (default 1)
  --update MODE      how updaters wait for a grace period: synchronize, call-rcu or poll
                     (default synchronize)
  --broken           TEST ONLY: reclaim elements without waiting for a grace period, to show
                     that the test catches it (must exit 1)

rperf options:
  --readers N        reader threads (default 1)
  --qsbr             QSBR readers (quiescent state every 1000 reads) instead of read_lock()

uperf options:
  --updaters N       threads calling synchronize() (default 1)
  --readers N        busy read-lock readers running meanwhile (default 0)
  --qsbr-readers N   busy QSBR readers (quiescent state after every read) (default 0)
";

    // ------------------------------------------------------------------------------------
    // Arguments.
    // ------------------------------------------------------------------------------------

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        Stress,
        Rperf,
        Uperf,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Update {
        Synchronize,
        CallRcu,
        Poll,
    }

    impl Update {
        fn name(self) -> &'static str {
            match self {
                Update::Synchronize => "synchronize",
                Update::CallRcu => "call-rcu",
                Update::Poll => "poll",
            }
        }
    }

    #[derive(Debug)]
    struct Opts {
        mode: Mode,
        duration: Duration,
        readers: usize,
        qsbr_readers: usize,
        updaters: usize,
        fake_updaters: usize,
        update: Update,
        membarrier: bool,
        broken: bool,
        qsbr: bool,
    }

    impl Opts {
        fn defaults(mode: Mode) -> Opts {
            let stress = mode == Mode::Stress;
            Opts {
                mode,
                duration: Duration::from_secs(if stress { 10 } else { 2 }),
                readers: match mode {
                    Mode::Stress => 2,
                    Mode::Rperf => 1,
                    Mode::Uperf => 0,
                },
                qsbr_readers: if stress { 2 } else { 0 },
                updaters: 1,
                fake_updaters: 1,
                update: Update::Synchronize,
                membarrier: true,
                broken: false,
                qsbr: false,
            }
        }
    }

    enum Command {
        Run(Opts),
        Help,
    }

    fn flags_of(mode: Mode) -> &'static [&'static str] {
        match mode {
            Mode::Stress => &[
                "duration",
                "readers",
                "qsbr-readers",
                "updaters",
                "fake-updaters",
                "update",
                "no-membarrier",
                "broken",
            ],
            Mode::Rperf => &["duration", "readers", "qsbr", "no-membarrier"],
            Mode::Uperf => &[
                "duration",
                "readers",
                "qsbr-readers",
                "updaters",
                "no-membarrier",
            ],
        }
    }

    const SWITCHES: &[&str] = &["no-membarrier", "broken", "qsbr"];

    fn parse_args(args: &[String]) -> Result<Command, String> {
        let Some(first) = args.first() else {
            return Err("missing mode: stress, rperf or uperf".into());
        };
        let mode = match first.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "stress" => Mode::Stress,
            "rperf" => Mode::Rperf,
            "uperf" => Mode::Uperf,
            other => {
                return Err(format!(
                    "unknown mode '{other}': use stress, rperf or uperf"
                ))
            }
        };
        let mut o = Opts::defaults(mode);
        let mut rest = args[1..].iter();
        while let Some(arg) = rest.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(Command::Help);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument '{arg}'"));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if !flags_of(mode).contains(&name) {
                return Err(format!("unknown option '--{name}' for {first}"));
            }
            if SWITCHES.contains(&name) {
                if inline.is_some() {
                    return Err(format!("--{name} takes no value"));
                }
                match name {
                    "no-membarrier" => o.membarrier = false,
                    "broken" => o.broken = true,
                    _ => o.qsbr = true,
                }
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            };
            match name {
                "duration" => o.duration = parse_duration(&value)?,
                "readers" => o.readers = parse_count(name, &value)?,
                "qsbr-readers" => o.qsbr_readers = parse_count(name, &value)?,
                "updaters" => o.updaters = parse_count(name, &value)?,
                "fake-updaters" => o.fake_updaters = parse_count(name, &value)?,
                _ => {
                    o.update = match value.as_str() {
                        "synchronize" => Update::Synchronize,
                        "call-rcu" => Update::CallRcu,
                        "poll" => Update::Poll,
                        v => {
                            return Err(format!(
                                "--update: unknown mode '{v}': use synchronize, call-rcu or poll"
                            ))
                        }
                    }
                }
            }
        }
        match mode {
            Mode::Stress if o.readers + o.qsbr_readers == 0 => {
                Err("stress needs at least one reader (--readers or --qsbr-readers)".into())
            }
            Mode::Stress if o.updaters == 0 => Err("stress needs at least one updater".into()),
            Mode::Rperf if o.readers == 0 => Err("rperf needs at least one reader".into()),
            Mode::Uperf if o.updaters == 0 => Err("uperf needs at least one updater".into()),
            _ => Ok(Command::Run(o)),
        }
    }

    /// `500ms`, `10s`, `1.5s`, `10m`. A unit is required.
    fn parse_duration(s: &str) -> Result<Duration, String> {
        let bad = |why: &str| format!("--duration '{s}': {why} (examples: 500ms, 10s, 10m)");
        let (num, unit_secs) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60.0)
        } else {
            return Err(bad("missing unit (ms, s or m)"));
        };
        let v: f64 = num.parse().map_err(|_| bad("not a number"))?;
        if !v.is_finite() || v <= 0.0 {
            return Err(bad("must be positive"));
        }
        let secs = v * unit_secs;
        if secs > 7.0 * 24.0 * 3600.0 {
            return Err(bad("longer than a week"));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| bad("out of range"))
    }

    fn parse_count(name: &str, s: &str) -> Result<usize, String> {
        let n: usize = s
            .parse()
            .map_err(|_| format!("--{name} '{s}': not a non-negative integer"))?;
        if n > MAX_THREADS {
            return Err(format!("--{name} {n}: at most {MAX_THREADS}"));
        }
        Ok(n)
    }

    pub(crate) fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let opts = match parse_args(&args) {
            Ok(Command::Help) => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Ok(Command::Run(o)) => o,
            Err(msg) => {
                eprintln!("rcutorture: error: {msg}\n\n{USAGE}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Warn));
        match opts.mode {
            Mode::Stress => stress(&opts),
            Mode::Rperf => rperf(&opts),
            Mode::Uperf => uperf(&opts),
        }
    }

    /// Prints the crate's warnings (stall reports) to stderr.
    struct StderrLogger;
    static LOGGER: StderrLogger = StderrLogger;

    impl log::Log for StderrLogger {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!("rcutorture: [{}] {}", r.level(), r.args());
            }
        }
        fn flush(&self) {}
    }

    // ------------------------------------------------------------------------------------
    // The start/stop gate shared by every test (QEMU's goflag and nthreadsrunning).
    // ------------------------------------------------------------------------------------

    const INIT: u8 = 0;
    const RUN: u8 = 1;
    const STOP: u8 = 2;

    struct Gate {
        state: AtomicU8,
        ready: AtomicUsize,
    }

    impl Gate {
        fn new() -> Gate {
            Gate {
                state: AtomicU8::new(INIT),
                ready: AtomicUsize::new(0),
            }
        }

        /// A worker: announces itself and waits for the start.
        fn wait_start(&self) {
            self.ready.fetch_add(1, Relaxed);
            while self.state.load(Relaxed) == INIT {
                thread::sleep(Duration::from_millis(1));
            }
        }

        #[inline]
        fn running(&self) -> bool {
            self.state.load(Relaxed) == RUN
        }

        /// The main thread: waits for `n` workers, runs for `d`, stops them. Returns the time
        /// the workers actually ran.
        fn run_for(&self, n: usize, d: Duration) -> Duration {
            while self.ready.load(Relaxed) < n {
                thread::sleep(Duration::from_millis(1));
            }
            let t0 = Instant::now();
            self.state.store(RUN, Relaxed);
            thread::sleep(d);
            self.state.store(STOP, Relaxed);
            t0.elapsed()
        }

        fn abort(&self) {
            self.state.store(STOP, Relaxed);
        }
    }

    /// Spawns the named workers of one kind; on failure stops everything and reports it.
    fn spawn_all<'s, 'e, T: Send + 's>(
        sc: &'s thread::Scope<'s, 'e>,
        gate: &Gate,
        kind: &str,
        n: usize,
        f: impl Fn() -> T + Send + Sync + Copy + 's,
    ) -> Result<Vec<thread::ScopedJoinHandle<'s, T>>, String> {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            match thread::Builder::new()
                .name(format!("{kind}-{i}"))
                .spawn_scoped(sc, f)
            {
                Ok(h) => v.push(h),
                Err(e) => {
                    gate.abort();
                    return Err(format!("cannot spawn {kind} thread: {e}"));
                }
            }
        }
        Ok(v)
    }

    /// Joins workers; a worker that panicked yields None (its message is already printed).
    fn join_all<T>(hs: Vec<thread::ScopedJoinHandle<'_, T>>) -> Vec<Option<T>> {
        hs.into_iter().map(|h| h.join().ok()).collect()
    }

    /// The spin inside a read-side section (QEMU's `garbage++` loop).
    #[inline]
    fn delay() {
        for i in 0..100u32 {
            black_box(i);
        }
    }

    // ------------------------------------------------------------------------------------
    // stress
    // ------------------------------------------------------------------------------------

    struct Elem {
        /// 0: current; 1: unpublished, grace period pending; >= 2: grace period over.
        age: AtomicU32,
        /// `MB_LIVE` until the element is reclaimed, then `MB_POISON`.
        mbtest: AtomicU32,
    }

    impl Elem {
        fn new() -> Elem {
            Elem {
                age: AtomicU32::new(0),
                mbtest: AtomicU32::new(MB_LIVE),
            }
        }

        fn poison(&self) {
            self.mbtest.store(MB_POISON, Relaxed);
        }
    }

    /// Elements whose grace period is over, newest first, aged by each newcomer.
    #[derive(Default)]
    struct Pipeline {
        slots: VecDeque<Arc<Elem>>,
        entered: u64,
        reclaimed: u64,
    }

    impl Pipeline {
        /// `e`'s grace period is over (or, in the broken mode, is claimed to be).
        fn enter(&mut self, e: Arc<Elem>) {
            self.slots.push_front(e);
            for s in &self.slots {
                s.age.fetch_add(1, Relaxed);
            }
            self.entered += 1;
            while self.slots.len() > PIPE_LEN {
                if let Some(old) = self.slots.pop_back() {
                    old.poison();
                    self.reclaimed += 1;
                }
            }
        }
    }

    struct Stress {
        rcu: Rcu,
        /// What readers read. Holds an `Arc` so that the pipeline can keep (and age) an
        /// element after the cell's own box of it has been reclaimed.
        cell: RcuCell<Arc<Elem>>,
        /// Serializes updaters; mirrors the cell's current element.
        writer: Mutex<Arc<Elem>>,
        pipeline: Arc<Mutex<Pipeline>>,
        gate: Gate,
        update: Update,
        broken: bool,
    }

    #[derive(Default, Clone)]
    struct ReadStats {
        reads: u64,
        hist: [u64; HIST_LEN],
        mb_errors: u64,
        stale: u64,
    }

    impl ReadStats {
        /// One read of `e`: check it, run `inside` (still in the section), read its age,
        /// check it again.
        #[inline]
        fn observe(&mut self, e: &Elem, inside: impl FnOnce()) {
            let mb_start = e.mbtest.load(Relaxed);
            inside();
            let age = e.age.load(Relaxed);
            let mb_end = e.mbtest.load(Relaxed);
            self.reads += 1;
            if mb_start != MB_LIVE || mb_end != MB_LIVE {
                self.mb_errors += 1;
            }
            self.hist[(age as usize).min(HIST_LEN - 1)] += 1;
            if age >= 2 {
                self.stale += 1;
            }
        }

        fn merge(&mut self, o: &ReadStats) {
            self.reads += o.reads;
            self.mb_errors += o.mb_errors;
            self.stale += o.stale;
            for (a, b) in self.hist.iter_mut().zip(o.hist) {
                *a += b;
            }
        }
    }

    #[derive(Default, Clone, Copy)]
    struct UpdateStats {
        updates: u64,
        polls: u64,
        /// The longest wait from `start_poll` to completion.
        max_poll_wait: Duration,
    }

    impl Stress {
        fn lock_reader(&self) -> ReadStats {
            let mut st = ReadStats::default();
            self.gate.wait_start();
            while self.gate.running() {
                let g = self.rcu.read_lock();
                let e = self
                    .cell
                    .load(&g)
                    .expect("the cell always holds an element");
                st.observe(e, || {
                    let _nested = self.rcu.read_lock();
                    delay();
                });
                drop(g);
            }
            st
        }

        fn qsbr_reader(&self) -> ReadStats {
            let mut st = ReadStats::default();
            let mut me = self.rcu.register_qsbr();
            me.offline_while(|| self.gate.wait_start());
            let mut windows = 0u64;
            while self.gate.running() {
                // A QSBR read-side section spans everything between two quiescent states:
                // the first element stays valid across the whole window.
                let first = self
                    .cell
                    .load(&me)
                    .expect("the cell always holds an element");
                for _ in 0..QS_EVERY {
                    let e = self
                        .cell
                        .load(&me)
                        .expect("the cell always holds an element");
                    st.observe(e, delay);
                }
                st.observe(first, || {});
                me.quiescent_state();
                windows += 1;
                if windows.is_multiple_of(OFFLINE_EVERY) {
                    me.offline_while(thread::yield_now);
                }
            }
            drop(me);
            st
        }

        /// Publishes a new element; returns the unpublished one (marked age 1) and the
        /// cell's retired box of it.
        fn publish(&self) -> (Arc<Elem>, rcu::Retired<Arc<Elem>>) {
            let mut cur = self.writer.lock();
            let new = Arc::new(Elem::new());
            let retired = self
                .cell
                .store(Some(new.clone()))
                .expect("the cell always holds an element");
            let old = std::mem::replace(&mut *cur, new);
            old.age.store(1, Relaxed);
            (old, retired)
        }

        fn updater(&self) -> UpdateStats {
            let mut st = UpdateStats::default();
            self.gate.wait_start();
            while self.gate.running() {
                let (old, retired) = self.publish();
                if self.broken {
                    // The bug under test: reclaim with no grace period. (The cell's box is
                    // still released properly, so the process itself stays sound.)
                    old.poison();
                    retired.defer_drop();
                    self.pipeline.lock().enter(old);
                } else {
                    match self.update {
                        Update::Synchronize => {
                            drop(retired.synchronize());
                            self.pipeline.lock().enter(old);
                        }
                        Update::CallRcu => {
                            retired.defer_drop();
                            let pipeline = self.pipeline.clone();
                            self.rcu.call_rcu(move || pipeline.lock().enter(old));
                        }
                        Update::Poll => {
                            retired.defer_drop();
                            let started = Instant::now();
                            let token = self.rcu.start_poll();
                            let mut spins = 0u32;
                            while !self.rcu.poll(token) {
                                st.polls += 1;
                                spins += 1;
                                if spins < 16 {
                                    std::hint::spin_loop();
                                } else {
                                    // Sleep rather than yield: on a loaded machine a yield
                                    // keeps the reclamation thread (which runs the grace
                                    // period) off the CPU for whole time slices.
                                    thread::sleep(Duration::from_micros(20));
                                }
                            }
                            st.max_poll_wait = st.max_poll_wait.max(started.elapsed());
                            self.pipeline.lock().enter(old);
                        }
                    }
                }
                st.updates += 1;
            }
            st
        }

        fn fake_updater(&self) -> u64 {
            let mut n = 0;
            self.gate.wait_start();
            while self.gate.running() {
                self.rcu.synchronize();
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
            n
        }
    }

    fn stress(o: &Opts) -> ExitCode {
        let rcu = Rcu::builder().membarrier(o.membarrier).build();
        let first = Arc::new(Elem::new());
        let s = Stress {
            cell: RcuCell::new_in(&rcu, Some(first.clone())),
            writer: Mutex::new(first),
            pipeline: Arc::new(Mutex::new(Pipeline::default())),
            rcu,
            gate: Gate::new(),
            update: o.update,
            broken: o.broken,
        };
        let update_name = if o.broken {
            "BROKEN (test only: reclaims without a grace period)"
        } else {
            o.update.name()
        };
        println!(
            "rcutorture stress: update {update_name}, duration {:.3} s, {} read-lock + {} QSBR \
             readers, {} updater(s), {} fake updater(s), membarrier {}",
            o.duration.as_secs_f64(),
            o.readers,
            o.qsbr_readers,
            o.updaters,
            o.fake_updaters,
            yes_no(s.rcu.uses_membarrier()),
        );

        let nthreads = o.readers + o.qsbr_readers + o.updaters + o.fake_updaters;
        let run = thread::scope(|sc| {
            let s = &s;
            let spawned = (|| {
                Ok::<_, String>((
                    spawn_all(sc, &s.gate, "reader", o.readers, || s.lock_reader())?,
                    spawn_all(sc, &s.gate, "qsbr", o.qsbr_readers, || s.qsbr_reader())?,
                    spawn_all(sc, &s.gate, "updater", o.updaters, || s.updater())?,
                    spawn_all(sc, &s.gate, "fake", o.fake_updaters, || s.fake_updater())?,
                ))
            })();
            let (r, q, u, f) = spawned?;
            let elapsed = s.gate.run_for(nthreads, o.duration);
            Ok::<_, String>((join_all(r), join_all(q), join_all(u), join_all(f), elapsed))
        });
        let (r, q, u, f, elapsed) = match run {
            Ok(x) => x,
            Err(e) => {
                eprintln!("rcutorture: {e}");
                return ExitCode::from(EXIT_FAIL);
            }
        };
        let mut panicked = 0u64;
        let mut reads = ReadStats::default();
        for st in r.iter().chain(&q) {
            match st {
                Some(st) => reads.merge(st),
                None => panicked += 1,
            }
        }
        let mut updates = UpdateStats::default();
        for st in &u {
            match st {
                Some(st) => {
                    updates.updates += st.updates;
                    updates.polls += st.polls;
                    updates.max_poll_wait = updates.max_poll_wait.max(st.max_poll_wait);
                }
                None => panicked += 1,
            }
        }
        let mut fake = 0u64;
        for st in &f {
            match st {
                Some(n) => fake += n,
                None => panicked += 1,
            }
        }

        // Every retired element must have reached the pipeline once its callbacks ran.
        s.rcu.rcu_barrier();
        let (entered, reclaimed) = {
            let p = s.pipeline.lock();
            (p.entered, p.reclaimed)
        };
        let unreclaimed = updates.updates.saturating_sub(entered);
        let stats = s.rcu.stats();

        println!(
            "n_reads: {}  n_updates: {}  n_fake_updates: {}  n_mberror: {}  n_stale: {}",
            reads.reads, updates.updates, fake, reads.mb_errors, reads.stale
        );
        let mut hist = String::new();
        for (age, n) in reads.hist.iter().enumerate() {
            let plus = if age == HIST_LEN - 1 { "+" } else { "" };
            let _ = write!(hist, " {age}{plus}:{n}");
        }
        println!("age histogram:{hist}");
        println!(
            "elapsed {:.3} s: {:.0} reads/s, {:.0} updates/s; pipeline: {entered} entered, \
             {reclaimed} poisoned and freed{}",
            elapsed.as_secs_f64(),
            reads.reads as f64 / elapsed.as_secs_f64(),
            updates.updates as f64 / elapsed.as_secs_f64(),
            if o.update == Update::Poll && !o.broken {
                format!(
                    ", {} polls, longest poll wait {:.3} ms",
                    updates.polls,
                    updates.max_poll_wait.as_secs_f64() * 1e3
                )
            } else {
                String::new()
            },
        );
        println!(
            "rcu: {} grace periods ({} shared), longest {:.3} ms, {} stalls; callbacks: {} run \
             in {} batches (max {}), max pending {}, throttled {}",
            stats.grace_periods,
            stats.shared_grace_periods,
            stats.longest_grace_period.as_secs_f64() * 1e3,
            stats.stalls,
            stats.callbacks_run,
            stats.batches,
            stats.max_batch,
            stats.max_pending,
            stats.throttled,
        );
        let errors = reads.mb_errors + reads.stale + unreclaimed + panicked;
        println!(
            "errors: {errors} (reclaimed element seen {}, age >= 2 seen {}, unreclaimed {}, \
             panicked threads {})",
            reads.mb_errors, reads.stale, unreclaimed, panicked
        );
        if errors == 0 {
            println!("result: PASS");
            ExitCode::SUCCESS
        } else {
            println!("result: FAIL");
            ExitCode::from(EXIT_FAIL)
        }
    }

    fn yes_no(b: bool) -> &'static str {
        if b {
            "yes"
        } else {
            "no"
        }
    }

    // ------------------------------------------------------------------------------------
    // rperf / uperf
    // ------------------------------------------------------------------------------------

    struct Perf {
        rcu: Rcu,
        cell: RcuCell<u64>,
        gate: Gate,
    }

    impl Perf {
        fn new(membarrier: bool) -> Perf {
            let rcu = Rcu::builder().membarrier(membarrier).build();
            Perf {
                cell: RcuCell::new_in(&rcu, Some(42)),
                rcu,
                gate: Gate::new(),
            }
        }

        /// Read-lock reader: `READ_RUN` sections (lock, load, unlock) per stop-flag check.
        /// Returns the reads and the CPU time they took.
        fn lock_reader(&self) -> (u64, Duration) {
            let mut n = 0;
            self.gate.wait_start();
            let cpu = thread_cpu_time();
            while self.gate.running() {
                for _ in 0..READ_RUN {
                    let g = self.rcu.read_lock();
                    black_box(self.cell.load(&g));
                    drop(g);
                }
                n += READ_RUN;
            }
            (n, thread_cpu_time().saturating_sub(cpu))
        }

        /// QSBR reader: a quiescent state every `qs_every` loads.
        fn qsbr_reader(&self, qs_every: u64) -> (u64, Duration) {
            let mut n = 0;
            let mut me = self.rcu.register_qsbr();
            me.offline_while(|| self.gate.wait_start());
            let cpu = thread_cpu_time();
            while self.gate.running() {
                let mut i = 0;
                while i < READ_RUN {
                    for _ in 0..qs_every {
                        black_box(self.cell.load(&me));
                    }
                    me.quiescent_state();
                    i += qs_every;
                }
                n += i;
            }
            (n, thread_cpu_time().saturating_sub(cpu))
        }

        fn sync_updater(&self) -> Vec<u64> {
            let mut lat = Vec::with_capacity(1 << 16);
            self.gate.wait_start();
            while self.gate.running() {
                let t = Instant::now();
                self.rcu.synchronize();
                lat.push(t.elapsed().as_nanos() as u64);
            }
            lat
        }
    }

    /// The calling thread's CPU time: unlike wall time, it does not count the time the
    /// thread was preempted, which on a busy machine dominates a nanosecond-scale loop.
    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn rperf(o: &Opts) -> ExitCode {
        let p = Perf::new(o.membarrier);
        let run = thread::scope(|sc| {
            let p = &p;
            let hs = if o.qsbr {
                spawn_all(sc, &p.gate, "qsbr", o.readers, || p.qsbr_reader(READ_RUN))
            } else {
                spawn_all(sc, &p.gate, "reader", o.readers, || p.lock_reader())
            }?;
            let elapsed = p.gate.run_for(o.readers, o.duration);
            Ok::<_, String>((join_all(hs), elapsed))
        });
        let (counts, elapsed) = match run {
            Ok(x) => x,
            Err(e) => {
                eprintln!("rcutorture: {e}");
                return ExitCode::from(EXIT_FAIL);
            }
        };
        if counts.iter().any(Option::is_none) {
            eprintln!("rcutorture: a reader panicked");
            return ExitCode::from(EXIT_FAIL);
        }
        let reads: u64 = counts.iter().flatten().map(|c| c.0).sum();
        let cpu: Duration = counts.iter().flatten().map(|c| c.1).sum();
        let ns = elapsed.as_secs_f64() * 1e9 * o.readers as f64 / reads.max(1) as f64;
        let cpu_ns = cpu.as_secs_f64() * 1e9 / reads.max(1) as f64;
        println!(
            "rperf: {} {} reader(s) ({}), {:.3} s: {} read-side sections, {:.3} ns/read per \
             thread (wall), {:.3} ns/read of CPU time",
            o.readers,
            if o.qsbr { "QSBR" } else { "read-lock" },
            if o.qsbr {
                "load; quiescent state every 1000 reads".to_string()
            } else {
                format!(
                    "lock + load + unlock, membarrier {}",
                    yes_no(p.rcu.uses_membarrier())
                )
            },
            elapsed.as_secs_f64(),
            reads,
            ns,
            cpu_ns,
        );
        ExitCode::SUCCESS
    }

    fn uperf(o: &Opts) -> ExitCode {
        let p = Perf::new(o.membarrier);
        let n = o.readers + o.qsbr_readers + o.updaters;
        let run = thread::scope(|sc| {
            let p = &p;
            let r = spawn_all(sc, &p.gate, "reader", o.readers, || p.lock_reader())?;
            let q = spawn_all(sc, &p.gate, "qsbr", o.qsbr_readers, || p.qsbr_reader(1))?;
            let u = spawn_all(sc, &p.gate, "updater", o.updaters, || p.sync_updater())?;
            let elapsed = p.gate.run_for(n, o.duration);
            let ok = join_all(r).iter().chain(&join_all(q)).all(Option::is_some);
            Ok::<_, String>((ok, join_all(u), elapsed))
        });
        let (readers_ok, lats, elapsed) = match run {
            Ok(x) => x,
            Err(e) => {
                eprintln!("rcutorture: {e}");
                return ExitCode::from(EXIT_FAIL);
            }
        };
        if !readers_ok || lats.iter().any(Option::is_none) {
            eprintln!("rcutorture: a thread panicked");
            return ExitCode::from(EXIT_FAIL);
        }
        let mut all: Vec<u64> = lats.into_iter().flatten().flatten().collect();
        all.sort_unstable();
        let calls = all.len() as u64;
        let pct = |q: f64| {
            all.get(((all.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let ns = elapsed.as_secs_f64() * 1e9 * o.updaters as f64 / calls.max(1) as f64;
        let stats = p.rcu.stats();
        println!(
            "uperf: {} updater(s) with {} read-lock + {} QSBR busy reader(s), {:.3} s: {} \
             synchronize calls, {:.1} ns/synchronize per thread (median {} ns, p99 {} ns); \
             {} grace periods ({} shared), membarrier {}",
            o.updaters,
            o.readers,
            o.qsbr_readers,
            elapsed.as_secs_f64(),
            calls,
            ns,
            pct(0.5),
            pct(0.99),
            stats.grace_periods,
            stats.shared_grace_periods,
            yes_no(p.rcu.uses_membarrier()),
        );
        ExitCode::SUCCESS
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn args(s: &str) -> Vec<String> {
            s.split_whitespace().map(String::from).collect()
        }

        #[test]
        fn durations() {
            assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
            assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
            assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
            assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
            for bad in ["10", "s", "-1s", "0s", "10x", "nans", "infs", "1e9m", ""] {
                assert!(parse_duration(bad).is_err(), "{bad} accepted");
            }
        }

        #[test]
        fn stress_flags() {
            let Ok(Command::Run(o)) = parse_args(&args(
                "stress --duration=3s --readers 0 --qsbr-readers 3 --update call-rcu --broken",
            )) else {
                panic!("rejected")
            };
            assert_eq!(o.duration, Duration::from_secs(3));
            assert_eq!((o.readers, o.qsbr_readers), (0, 3));
            assert_eq!(o.update, Update::CallRcu);
            assert!(o.broken && o.membarrier);
        }

        #[test]
        fn usage_errors() {
            for bad in [
                "",
                "bogus",
                "stress --readers",
                "stress --readers x",
                "stress --update fast",
                "stress --qsbr",
                "rperf --broken",
                "stress --broken=1",
                "stress extra",
                "stress --readers 0 --qsbr-readers 0",
                "uperf --updaters 0",
                "rperf --readers 0",
                "stress --readers 5000",
            ] {
                assert!(parse_args(&args(bad)).is_err(), "'{bad}' accepted");
            }
            assert!(matches!(parse_args(&args("uperf -h")), Ok(Command::Help)));
        }
    }
}
