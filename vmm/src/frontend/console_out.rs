//! Guest console output: from the vCPUs to standard output, `--serial file:` and `--log`,
//! without ever blocking a vCPU.
//!
//! ```text
//!   vCPU (UART write, its lock held)          main loop (BQL)
//!   Console::push ──> queue (64 KiB) ──eventfd──> Console::pump ──> Output (64 KiB pending)
//!                     full: drop, count                              └─ non-blocking write
//! ```
//!
//! The vCPU side copies the bytes into a bounded queue and, when the queue was empty, writes
//! the console's eventfd: its only system calls are that `write(2)` and `futex(2)` on the
//! queue's lock when the main loop holds it. It never allocates (both queue buffers are
//! allocated once, at their full size) and never touches an output's file descriptor. The main
//! loop swaps the queue's buffer out and hands the bytes to each output, which keeps at most
//! 64 KiB that its file descriptor did not take yet and writes them as the descriptor becomes
//! writable (an edge-triggered write handler). What does not fit is dropped and counted, per
//! output: a reader that does not keep up with the guest loses output, the guest and the VMM
//! go on. An output whose writes fail (a closed pipe) is closed with one warning; the others
//! and the `--expect`/`--fail-on` scans (on the vCPU side, before the queue) do not depend on
//! it. `--log` and `--serial file:` stop at their size limit with a last line saying so.

use iohandler::LoopHandle;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

/// The queue between the vCPUs and the main loop.
pub const QUEUE_CAP: usize = 64 * 1024;
/// What an output keeps while its file descriptor does not take it.
pub const PENDING_CAP: usize = 64 * 1024;
/// `--log-limit`'s default.
pub const DEFAULT_LOG_LIMIT: u64 = 64 << 20;
/// How long the main loop lets output gather after a wake-up before it drains the queue: a
/// guest prints a byte per exit, and a wake-up (and a write per output) per byte would cost
/// more than the exit. Short enough for an interactive prompt; a queue half full is drained at
/// once.
pub const BATCH_DELAY: Duration = Duration::from_millis(5);
/// How long the end of a run waits for outputs to take what is left.
pub const FINAL_FLUSH: Duration = Duration::from_secs(2);

struct Queue {
    data: Vec<u8>,
    /// Bytes the guest wrote.
    guest_bytes: u64,
    /// Bytes dropped because the queue was full (the main loop did not keep up).
    dropped: u64,
}

/// Which output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The VMM's standard output (`--serial stdio`).
    Stdout,
    /// `--serial file:PATH`.
    SerialFile,
    /// `--log PATH`.
    Log,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stdout => "stdout",
            Kind::SerialFile => "serial-file",
            Kind::Log => "log",
        }
    }
}

enum Sink {
    /// `write(2)`, on a descriptor with O_NONBLOCK (of its own open file description) or a
    /// regular file.
    File(File),
    /// `send(2)` with MSG_DONTWAIT: a socket, whose file description the VMM shares.
    Socket(OwnedFd),
}

impl Sink {
    fn fd(&self) -> RawFd {
        match self {
            Sink::File(f) => f.as_raw_fd(),
            Sink::Socket(s) => s.as_raw_fd(),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Socket(s) => {
                // SAFETY: send(2) reads at most `buf.len()` bytes from a live slice; the
                // descriptor is owned by this sink.
                let n = unsafe {
                    libc::send(
                        s.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
        }
    }
}

/// One destination of guest output.
pub struct Output {
    kind: Kind,
    path: Option<PathBuf>,
    sink: Option<Sink>,
    pending: VecDeque<u8>,
    limit: Option<u64>,
    accepted: u64,
    written: u64,
    dropped: u64,
    over_limit: u64,
    limit_reached: bool,
    error: Option<String>,
    /// The flags to put back on a shared file description (the fallback for standard output
    /// when it cannot be reopened).
    restore_flags: Option<libc::c_int>,
}

impl Output {
    fn new(kind: Kind, path: Option<PathBuf>, sink: Option<Sink>, limit: Option<u64>) -> Self {
        Output {
            kind,
            path,
            sink,
            pending: VecDeque::with_capacity(PENDING_CAP),
            limit,
            accepted: 0,
            written: 0,
            dropped: 0,
            over_limit: 0,
            limit_reached: false,
            error: None,
            restore_flags: None,
        }
    }

    fn closed(kind: Kind, why: String) -> Self {
        log::warn!("guest output: {why}; it is not written there");
        let mut o = Output::new(kind, None, None, None);
        o.error = Some(why);
        o
    }

    /// The VMM's standard output, reopened as its own non-blocking file description (pipes
    /// and terminals; a socket is written with MSG_DONTWAIT; a regular file as it is).
    pub fn stdout() -> Output {
        let dup = match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => File::from(fd),
            Err(e) => return Output::closed(Kind::Stdout, format!("standard output: {e}")),
        };
        let ft = match dup.metadata() {
            Ok(m) => m.file_type(),
            Err(e) => return Output::closed(Kind::Stdout, format!("standard output: {e}")),
        };
        let sink = if ft.is_socket() {
            Sink::Socket(dup.into())
        } else if ft.is_fifo() || ft.is_char_device() {
            let reopened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open("/proc/self/fd/1");
            match reopened {
                Ok(f) => Sink::File(f),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    return Output::closed(
                        Kind::Stdout,
                        "standard output is a pipe that nobody reads (its reader has exited)"
                            .into(),
                    )
                }
                Err(e) => {
                    log::debug!("reopening standard output: {e}; setting O_NONBLOCK on it");
                    let mut o = Output::new(Kind::Stdout, None, Some(Sink::File(dup)), None);
                    o.restore_flags = o.sink.as_ref().and_then(|s| set_nonblocking(s.fd()));
                    return o;
                }
            }
        } else {
            Sink::File(dup)
        };
        Output::new(Kind::Stdout, None, Some(sink), None)
    }

    /// `--serial file:PATH` or `--log PATH`: created or truncated, written up to `limit`
    /// bytes.
    pub fn file(kind: Kind, path: &Path, limit: Option<u64>) -> std::io::Result<Output> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(Output::new(
            kind,
            Some(path.to_path_buf()),
            Some(Sink::File(f)),
            limit,
        ))
    }

    fn label(&self) -> String {
        match (&self.kind, &self.path) {
            (Kind::Stdout, _) => "standard output".into(),
            (Kind::SerialFile, Some(p)) => format!("--serial file:{}", p.display()),
            (Kind::Log, Some(p)) => format!("--log {}", p.display()),
            (k, None) => k.name().into(),
        }
    }

    /// Takes guest bytes: within the size limit and the pending bound; the rest is counted.
    fn accept(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.sink.is_none() || self.error.is_some() {
            self.dropped += data.len() as u64;
            return;
        }
        if let Some(limit) = self.limit {
            if self.limit_reached {
                self.over_limit += data.len() as u64;
                return;
            }
            let room = limit.saturating_sub(self.accepted);
            if data.len() as u64 > room {
                let keep = room as usize;
                self.enqueue(&data[..keep]);
                self.over_limit += (data.len() - keep) as u64;
                self.limit_reached = true;
                log::warn!(
                    "{}: the size limit of {limit} bytes (--log-limit) is reached; no more \
                     guest output is written there (the --expect and --fail-on scans go on)",
                    self.label()
                );
                let notice = format!(
                    "\n[vmm: --log-limit of {limit} bytes reached; the rest of the guest's \
                     output is not in this file]\n"
                );
                // The notice is the file's last line: it bypasses the bounds.
                self.pending.extend(notice.as_bytes());
                return;
            }
        }
        self.enqueue(data);
    }

    fn enqueue(&mut self, data: &[u8]) {
        let room = PENDING_CAP.saturating_sub(self.pending.len());
        let n = data.len().min(room);
        self.pending.extend(&data[..n]);
        self.accepted += n as u64;
        self.dropped += (data.len() - n) as u64;
    }

    /// Writes what is pending until the descriptor would block.
    fn flush(&mut self) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            match sink.write(front) {
                Ok(0) => {
                    self.close(std::io::Error::from(std::io::ErrorKind::WriteZero));
                    return;
                }
                Ok(n) => {
                    self.pending.drain(..n);
                    self.written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.close(e);
                    return;
                }
            }
        }
    }

    /// A write failed: this output is done (its descriptor stays open until the console is
    /// dropped, so that its number is not reused under a registered handler).
    fn close(&mut self, e: std::io::Error) {
        log::warn!(
            "{}: {e}; guest output is no longer written there (the other outputs and the \
             --expect and --fail-on scans go on)",
            self.label()
        );
        self.dropped += self.pending.len() as u64;
        self.pending.clear();
        self.error = Some(e.to_string());
    }

    fn waiting(&self) -> bool {
        self.sink.is_some() && self.error.is_none() && !self.pending.is_empty()
    }

    fn stats(&self) -> OutputStats {
        OutputStats {
            output: self.kind.name(),
            path: self.path.as_ref().map(|p| p.display().to_string()),
            written: self.written,
            dropped: self.dropped,
            pending: self.pending.len() as u64,
            limit: self.limit,
            limit_reached: self.limit_reached,
            over_limit: self.over_limit,
            error: self.error.clone(),
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let (Some(flags), Some(sink)) = (self.restore_flags, &self.sink) {
            // SAFETY: F_SETFL on a descriptor this output owns, with flags read from it.
            unsafe { libc::fcntl(sink.fd(), libc::F_SETFL, flags) };
        }
    }
}

/// Sets O_NONBLOCK; returns the flags before, to restore.
fn set_nonblocking(fd: RawFd) -> Option<libc::c_int> {
    // SAFETY: F_GETFL/F_SETFL only read and change the file status flags of `fd`, a
    // descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return None;
        }
        Some(flags)
    }
}

/// One output's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputStats {
    /// "stdout", "serial-file" or "log".
    pub output: &'static str,
    /// The file, for the file outputs.
    pub path: Option<String>,
    /// Bytes written.
    pub written: u64,
    /// Bytes dropped: the reader did not keep up (over [`PENDING_CAP`] waiting) or the
    /// output was closed.
    pub dropped: u64,
    /// Bytes waiting for the descriptor.
    pub pending: u64,
    /// The size limit (`--log-limit`), for the files.
    pub limit: Option<u64>,
    /// Whether the limit was reached.
    pub limit_reached: bool,
    /// Bytes not written because of the limit.
    pub over_limit: u64,
    /// Why the output was closed, if it was.
    pub error: Option<String>,
}

/// The console's counters (`query-console`, `--result-json`'s `console`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes the guest wrote to the UART.
    pub guest_bytes: u64,
    /// Bytes dropped before reaching any output (the vCPU-side queue was full).
    pub queue_dropped: u64,
    /// The outputs.
    pub outputs: Vec<OutputStats>,
}

impl ConsoleStats {
    /// Every byte that some output lost: the queue's drops and each output's.
    pub fn dropped_bytes(&self) -> u64 {
        self.queue_dropped + self.outputs.iter().map(|o| o.dropped).sum::<u64>()
    }

    /// As JSON; `sep` joins words in keys (`_` for the report, `-` for the control socket).
    pub fn to_json(&self, sep: char) -> Value {
        let k = |s: &str| s.replace('_', &sep.to_string());
        let mut outputs = Vec::new();
        for o in &self.outputs {
            let mut m = serde_json::Map::new();
            m.insert(k("output"), json!(o.output));
            m.insert(k("path"), json!(o.path));
            m.insert(k("written"), json!(o.written));
            m.insert(k("dropped"), json!(o.dropped));
            m.insert(k("pending"), json!(o.pending));
            m.insert(k("limit"), json!(o.limit));
            m.insert(k("limit_reached"), json!(o.limit_reached));
            m.insert(k("over_limit"), json!(o.over_limit));
            m.insert(k("error"), json!(o.error));
            outputs.push(Value::Object(m));
        }
        let mut m = serde_json::Map::new();
        m.insert(k("guest_bytes"), json!(self.guest_bytes));
        m.insert(k("dropped_bytes"), json!(self.dropped_bytes()));
        m.insert(k("queue_dropped"), json!(self.queue_dropped));
        m.insert(k("outputs"), Value::Array(outputs));
        Value::Object(m)
    }
}

struct Outputs {
    list: Vec<Output>,
    /// The queue's other buffer (swapped with it on every drain).
    spare: Vec<u8>,
}

/// The console: the vCPU-side queue and the outputs the main loop writes.
pub struct Console {
    queue: Mutex<Queue>,
    wake: EventFd,
    outputs: Mutex<Outputs>,
    attached: AtomicBool,
}

impl Console {
    /// A console writing to `outputs` (none: output is only scanned).
    pub fn new(outputs: Vec<Output>) -> std::io::Result<Arc<Console>> {
        Ok(Arc::new(Console {
            queue: Mutex::new(Queue {
                data: Vec::with_capacity(QUEUE_CAP),
                guest_bytes: 0,
                dropped: 0,
            }),
            wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            outputs: Mutex::new(Outputs {
                list: outputs,
                spare: Vec::with_capacity(QUEUE_CAP),
            }),
            attached: AtomicBool::new(false),
        }))
    }

    /// The eventfd the vCPU side writes (for the seccomp filter).
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// vCPU side: queues guest bytes, dropping (and counting) what does not fit; never
    /// blocks but on the queue's lock, which the main loop holds only to swap buffers. Writes
    /// the eventfd when the queue was empty or crosses half its size.
    pub fn push(&self, data: &[u8]) {
        let wake = {
            let mut q = self.queue.lock();
            let before = q.data.len();
            let room = QUEUE_CAP.saturating_sub(before);
            let n = data.len().min(room);
            q.data.extend_from_slice(&data[..n]);
            q.guest_bytes += data.len() as u64;
            q.dropped += (data.len() - n) as u64;
            // The first byte wakes the loop; so does crossing half the queue (drained at once).
            n > 0 && (before == 0 || (before < QUEUE_CAP / 2 && before + n >= QUEUE_CAP / 2))
        };
        if wake {
            // Non-blocking; fails only if the counter would overflow, when it is set anyway.
            let _ = self.wake.write(1);
        }
    }

    /// Main-loop side: moves queued bytes to the outputs and writes what they can take.
    pub fn pump(&self) {
        // One read resets the counter; a push after it writes it again.
        let _ = self.wake.read();
        let mut o = self.outputs.lock();
        let Outputs { list, spare } = &mut *o;
        std::mem::swap(&mut self.queue.lock().data, spare);
        for out in list.iter_mut() {
            out.accept(spare);
            out.flush();
        }
        spare.clear();
    }

    /// Drains the console on the main loop: the queue's eventfd (then [`BATCH_DELAY`] later,
    /// on a timer), and each output's descriptor when it becomes writable (edge-triggered;
    /// regular files, which epoll refuses, never make a write wait).
    pub fn attach(self: &Arc<Self>, h: &LoopHandle) -> iohandler::Result<()> {
        let c = self.clone();
        let batch = h.timer(move || c.pump());
        let c = self.clone();
        h.set_read_handler(self.wake_fd(), move || {
            // Reset the counter (edge-triggered); the vCPU side writes it again only after
            // the next drain has emptied the queue.
            let _ = c.wake.read();
            if c.queue.lock().data.len() >= QUEUE_CAP / 2 {
                c.pump();
            } else if !batch.is_armed() {
                batch.arm(BATCH_DELAY);
            }
        })?;
        let fds: Vec<RawFd> = self
            .outputs
            .lock()
            .list
            .iter()
            .filter_map(|o| o.sink.as_ref().map(Sink::fd))
            .collect();
        for fd in fds {
            let c = self.clone();
            if let Err(e) = h.set_fd_handler(fd, None, Some(Box::new(move || c.pump()))) {
                log::debug!("console output fd {fd} cannot be polled ({e}); written as it is");
            }
        }
        self.attached.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a main loop drains the console ([`Console::attach`]).
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// At the end of a run: writes what is left, waiting at most `bound` for outputs that do
    /// not take it; what is still pending then is dropped (and counted, with a warning).
    pub fn finish(&self, bound: Duration) {
        self.pump();
        flush_within(&mut self.outputs.lock().list, bound);
    }

    /// The counters.
    pub fn stats(&self) -> ConsoleStats {
        let outputs = self.outputs.lock().list.iter().map(Output::stats).collect();
        let q = self.queue.lock();
        ConsoleStats {
            guest_bytes: q.guest_bytes,
            queue_dropped: q.dropped,
            outputs,
        }
    }
}

/// Writes what `outputs` hold for at most `bound`, waiting for room with `poll(2)`; what is
/// still not taken then is dropped, counted and logged.
fn flush_within(outputs: &mut [Output], bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let waiting: Vec<RawFd> = outputs
            .iter()
            .filter(|x| x.waiting())
            .filter_map(|x| x.sink.as_ref().map(Sink::fd))
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = waiting
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: poll(2) on a live array of `pfds.len()` pollfd structures.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        for out in outputs.iter_mut() {
            out.flush();
        }
    }
    for out in outputs.iter_mut().filter(|x| x.waiting()) {
        log::warn!(
            "{}: {} bytes of guest output were not taken within {bound:?} at the end of \
             the run (nobody reads it?); dropped",
            out.label(),
            out.pending.len()
        );
        out.dropped += out.pending.len() as u64;
        out.pending.clear();
    }
}

/// Writes `data` to standard output within `bound` (for `--result-json -`): a full pipe that
/// nobody reads does not hold the VMM. Returns how much was written.
pub fn write_stdout_bounded(data: &[u8], bound: Duration) -> usize {
    let mut o = [Output::stdout()];
    o[0].pending.extend(data);
    flush_within(&mut o, bound);
    o[0].stats().written as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, owned below.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: both were just created and are owned here.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn pipe_output(w: File, limit: Option<u64>) -> Output {
        Output::new(Kind::Log, Some("p".into()), Some(Sink::File(w)), limit)
    }

    /// Reads `r` (non-blocking) until `n` bytes have come, for at most 30 s.
    fn read_n(r: &mut File, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        while got.len() < n && t.elapsed() < Duration::from_secs(30) {
            match std::io::Read::read(r, &mut buf) {
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        got
    }

    #[test]
    fn the_main_loop_drains_what_another_thread_pushes() {
        let mut ml = iohandler::MainLoop::new().unwrap();
        let h = ml.handle();
        let (mut r, w) = pipe();
        let c = Console::new(vec![pipe_output(w, None)]).unwrap();
        c.attach(&h).unwrap();
        let c2 = c.clone();
        let pusher = std::thread::spawn(move || {
            // A line (drained after the batch delay), then enough to cross half the queue
            // (drained at once), as a vCPU would push them.
            c2.push(b"hello\n");
            let first = read_n(&mut r, 6);
            let big = vec![b'b'; QUEUE_CAP / 2 + 100];
            c2.push(&big);
            let second = read_n(&mut r, big.len());
            h.quit();
            (first, second.len())
        });
        ml.run().unwrap();
        let (first, second) = pusher.join().unwrap();
        assert_eq!(first, b"hello\n");
        assert_eq!(second, QUEUE_CAP / 2 + 100);
        assert_eq!(c.stats().dropped_bytes(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let c = Console::new(Vec::new()).unwrap();
        c.push(&vec![b'x'; QUEUE_CAP - 10]);
        c.push(&[b'y'; 30]);
        let s = c.stats();
        assert_eq!(s.guest_bytes, QUEUE_CAP as u64 + 20);
        assert_eq!(s.queue_dropped, 20);
        c.pump();
        c.push(b"z");
        assert_eq!(c.stats().queue_dropped, 20);
    }

    #[test]
    fn a_reader_that_does_not_read_costs_bytes_not_time() {
        let (r, w) = pipe();
        let c = Console::new(vec![pipe_output(w, None)]).unwrap();
        let t = Instant::now();
        for _ in 0..64 {
            c.push(&[b'a'; 16 * 1024]);
            c.pump();
        }
        c.finish(Duration::from_millis(50));
        assert!(t.elapsed() < Duration::from_secs(30));
        let s = c.stats();
        let o = &s.outputs[0];
        assert!(o.dropped > 0, "{s:?}");
        assert_eq!(o.written + o.dropped, 1 << 20, "{s:?}");
        drop(r);
    }

    #[test]
    fn a_closed_reader_closes_the_output_and_the_others_go_on() {
        let (r, w) = pipe();
        drop(r);
        let (r2, w2) = pipe();
        let c = Console::new(vec![pipe_output(w, None), pipe_output(w2, None)]).unwrap();
        c.push(b"hello\n");
        c.pump();
        c.push(b"world\n");
        c.pump();
        let s = c.stats();
        assert!(s.outputs[0].error.is_some(), "{s:?}");
        assert_eq!(s.outputs[0].dropped, 12);
        assert_eq!(s.outputs[1].written, 12);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut { r2 }, &mut got).ok();
        assert_eq!(got, "hello\nworld\n");
    }

    #[test]
    fn the_limit_cuts_the_file_once_with_a_last_line() {
        let dir = std::env::temp_dir().join(format!("vmm-console-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        let c = Console::new(vec![Output::file(Kind::Log, &p, Some(10)).unwrap()]).unwrap();
        c.push(b"0123456");
        c.pump();
        c.push(b"789abcdef");
        c.pump();
        c.push(b"more");
        c.finish(Duration::from_secs(1));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("0123456789\n[vmm: --log-limit of 10 bytes"),
            "{text}"
        );
        assert_eq!(text.matches("--log-limit").count(), 1);
        let s = c.stats();
        assert!(s.outputs[0].limit_reached);
        assert_eq!(s.outputs[0].over_limit, 10);
        assert_eq!(s.dropped_bytes(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
