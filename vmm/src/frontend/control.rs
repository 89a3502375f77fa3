//! The control socket: QMP, as QEMU speaks it, served by the main loop (the protocol itself,
//! without the VM, is [`crate::frontend::qmp`]).
//!
//! A client connects to the Unix socket and gets QEMU's greeting:
//! `{"QMP": {"version": {"qemu": {"major": ..}, "package": ..}, "capabilities": []}}`. It
//! then negotiates capabilities (`{"execute": "qmp_capabilities"}`; until then every other
//! command gets a `CommandNotFound` error and no events are sent). It sends requests,
//! `{"execute": "query-status", "arguments": {...}, "id": ...}` (JSON objects, back to back
//! or one per line), and gets one reply per line: `{"return": ...}` or
//! `{"error": {"class": ..., "desc": ...}}`, with the request's `id` if any. Asynchronous
//! events (`{"event": "SHUTDOWN", "data": {...}, "timestamp": {"seconds": .., "microseconds":
//! ..}}`, `STOP`, `RESUME`, `RESET`) go to every negotiated client.
//!
//! Access: the socket file is created with mode 0600 (the socket's mode is set before `bind`,
//! so there is no moment when it has the umask's; nothing is ever changed through the path,
//! so a symlink put there is never followed), and every client's uid (`SO_PEERCRED`) must be
//! the VMM's effective uid: others are disconnected before the greeting and logged.
//!
//! Robustness: requests are limited to [`MAX_LINE`] bytes (a longer one gets an error and
//! the client is dropped); malformed JSON, unknown commands and wrong argument types get an error
//! and the connection goes on; replies to a client that does not read are buffered up to
//! [`MAX_OUTPUT`] bytes, then the client is dropped. Nothing a client sends can stop the VMM
//! or the guest, except `quit`. Fairness: each wake-up serves a client at most
//! [`REQUESTS_PER_TURN`] requests and [`READ_PER_TURN`] bytes; the rest is served in a later
//! round of the main loop (readiness is edge-triggered, so the continuation is a bottom half,
//! which runs after the other ready clients), so one client cannot starve the others.
//!
//! Handlers run on the main-loop thread under the BQL; the RCU writers they call (`ram-add`,
//! `device-add`, ...) publish new versions and retire old ones through `call_rcu`.
//!
//! `ram-add` places RAM only inside the hot-plug window ([`crate::x86_64::layout::HOTPLUG_START`] to
//! [`crate::x86_64::layout::HOTPLUG_END`]) and never past the `--max-memory` total. A block with a
//! `pattern` is filled on the `vmm-ram-fill` thread, off the main loop: the requesting
//! client's later requests wait for its reply (replies stay in order), everyone else is
//! served meanwhile; the block is published when the fill is done.

use crate::frontend::qmp::{self, Command, ErrorClass, QmpError, Session, Step};
use crate::kvm::state::StateKind;
use crate::kvm::vm::VmShared;
use crate::outcome::Outcome;
use crate::x86_64::layout;
use devices::Constant;
use iohandler::LoopHandle;
use memory::{BlockFlags, RamBlock};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// The longest request accepted (one line, or one JSON object).
pub const MAX_LINE: usize = 64 * 1024;
/// The most reply bytes buffered for a client that does not read.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Queued replies past this many bytes are sent without waiting for the end of the batch.
const QUEUE_FLUSH: usize = 64 << 10;
/// The most clients at once.
pub const MAX_CLIENTS: usize = 64;
/// The most requests served for one client per wake-up before the others get their turn.
pub const REQUESTS_PER_TURN: usize = 32;
/// The most bytes read from one client per wake-up.
pub const READ_PER_TURN: usize = 64 << 10;
/// Refused connections logged one by one; past this many, only every 1000th.
const REFUSALS_LOGGED: u64 = 16;

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    dead: bool,
    /// After an oversized line: replies are done (write side shut down); input is read and
    /// discarded until the client closes, so it receives the error instead of a reset.
    draining: bool,
    /// Whether the main loop also watches the socket for writability: only while replies
    /// wait for room (a Unix socket reports "writable" each time the client reads, so an
    /// always-on watch would wake the loop once per reply).
    write_watched: bool,
    /// A request of this client (a `ram-add` being filled) has not been answered yet: its
    /// later requests wait (and are not read), so that replies stay in order.
    waiting: bool,
    /// Its budget for a wake-up was spent and a bottom half will serve the rest.
    resume_scheduled: bool,
    /// Its QMP state: negotiating capabilities, or past that.
    session: Session,
}

impl Client {
    /// Queues `v` and sends what is queued.
    fn send(&mut self, v: &Value) {
        self.queue(v);
        self.flush();
    }

    /// Queues `v`; [`flush`](Self::flush) sends it. Replies to requests that arrived together
    /// are queued and go out in one write, so a client that pipelines is woken once (past
    /// [`QUEUE_FLUSH`] bytes they are sent at once).
    fn queue(&mut self, v: &Value) {
        if self.dead {
            return;
        }
        let mut line = v.to_string().into_bytes();
        line.push(b'\n');
        self.outbuf.extend_from_slice(&line);
        if self.outbuf.len() > QUEUE_FLUSH {
            self.flush();
        }
        if self.outbuf.len() > MAX_OUTPUT {
            log::warn!("control: a client does not read its replies; dropping it");
            self.dead = true;
        }
    }

    /// What is buffered is the start of a request longer than [`MAX_LINE`]: says so, closes
    /// the client's direction and discards what it still sends.
    fn refuse_long_line(&mut self) {
        self.send(&qmp::reply(
            Err(bad(format!(
                "request longer than {MAX_LINE} bytes; closing"
            ))),
            None,
        ));
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.inbuf = Vec::new();
        self.draining = true;
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }
}

/// The control server.
pub struct Control {
    shared: Arc<VmShared>,
    h: LoopHandle,
    path: PathBuf,
    listener: UnixListener,
    clients: Mutex<HashMap<RawFd, Arc<Mutex<Client>>>>,
    /// This server, for the handlers it installs.
    me: std::sync::Weak<Control>,
    /// The VMM's effective uid: the only one allowed to connect.
    euid: u32,
    /// Connections refused for their uid.
    refused: AtomicU64,
    /// The most guest RAM (boot RAM and hot-added blocks, with those being filled).
    max_memory: u64,
    /// Bytes of `ram-add` blocks being filled (counted against `max_memory`).
    filling: AtomicU64,
    /// The fill thread's queue. The thread starts at the first fill, from the main loop, so
    /// that it inherits the main loop's seccomp filter (`crate::seccomp`).
    fill_tx: Mutex<Option<mpsc::Sender<FillJob>>>,
}

/// Why a serve call happens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The socket became readable (or hung up).
    Ready,
    /// A continuation: the budget was spent, or an answer it waited for is done.
    Resume,
}

/// What a request line gets.
enum Answer {
    /// A reply, now.
    Now(Value),
    /// A `ram-add` whose block is filled off the loop; the reply follows.
    Fill(PendingFill),
}

/// A `ram-add` with a pattern, validated, its block mapped but not yet filled or published.
struct PendingFill {
    block: RamBlock,
    pattern: u64,
    id: Option<Value>,
}

/// A block for the fill thread, and what to do when it is filled.
struct FillJob {
    block: RamBlock,
    pattern: u64,
    done: Box<dyn FnOnce(RamBlock, Result<(), String>) + Send>,
}

/// Fills every qword of `block` with `pattern`.
fn fill(block: &RamBlock, pattern: u64) -> Result<(), String> {
    let chunk: Vec<u8> = pattern.to_le_bytes().repeat(512);
    let size = block.size();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(chunk.len() as u64) as usize;
        block
            .write_at(off, &chunk[..n])
            .map_err(|e| e.to_string())?;
        off += n as u64;
    }
    Ok(())
}

/// Starts the thread that fills `ram-add` blocks, one at a time.
fn spawn_filler() -> std::io::Result<mpsc::Sender<FillJob>> {
    let (tx, rx) = mpsc::channel::<FillJob>();
    std::thread::Builder::new()
        .name("vmm-ram-fill".into())
        .spawn(move || {
            for job in rx {
                let r = fill(&job.block, job.pattern);
                (job.done)(job.block, r);
            }
        })?;
    Ok(tx)
}

/// The few system calls std does not wrap: a socket bound with its mode already set, and the
/// peer's credentials.
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::Path;

    /// A non-blocking listening socket at `path` whose file is created with mode 0600 (less
    /// the umask): Linux's `unix_bind` gives the new file the socket inode's mode, which
    /// `fchmod` sets before `bind`. The umask is process-wide and other threads run, so it is
    /// left alone.
    pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: sockaddr_un is plain old data, for which all-zeroes is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if bytes.is_empty() || bytes.contains(&0) {
            return invalid("the path is empty or contains a NUL byte; give a file path".into());
        }
        if bytes.len() >= addr.sun_path.len() {
            return invalid(format!(
                "a Unix socket path must be shorter than {} bytes; choose a shorter one",
                addr.sun_path.len()
            ));
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fchmod(2) on a descriptor this function owns.
        if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
        // SAFETY: `addr` is a sockaddr_un, NUL-terminated within its `len` bytes.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen(2) on a descriptor this function owns.
        if unsafe { libc::listen(fd.as_raw_fd(), 128) } < 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(UnixListener::from(fd))
    }

    /// The connected peer's (uid, pid), as the kernel recorded them at `connect`.
    pub fn peer_cred(s: &UnixStream) -> io::Result<(u32, i32)> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt(2) writes at most `len` bytes to `cred`, which is that large.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((cred.uid, cred.pid))
    }

    /// The process's effective uid.
    pub fn euid() -> u32 {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        unsafe { libc::geteuid() }
    }
}

/// A command's failure: QMP's error class and a description.
type CmdError = QmpError;

/// What `ram-add` did.
enum RamAdd {
    /// Published; the reply's value.
    Done(Value),
    /// Mapped, to be filled with the pattern, then published.
    Fill(RamBlock, u64),
}

fn bad(desc: impl Into<String>) -> CmdError {
    QmpError::generic(desc)
}

impl Control {
    /// Binds `path` (mode 0600 from the start; a stale socket file there is replaced) and
    /// serves it on the main loop. `ram-add` keeps the guest's RAM at most `max_memory` bytes.
    pub fn start(
        path: &Path,
        h: &LoopHandle,
        shared: Arc<VmShared>,
        max_memory: u64,
    ) -> std::io::Result<Arc<Control>> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                // Never removed: it may be someone's data.
                return Err(std::io::Error::new(
                    ErrorKind::AlreadyExists,
                    "something that is not a socket exists there; remove it or choose another \
                     path",
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    ErrorKind::AddrInUse,
                    "another process (a running VMM?) is listening there; stop it or choose \
                     another path",
                ));
            }
            std::fs::remove_file(path)?; // a stale socket, left by a VMM that was killed
        }
        let listener = sys::bind_private(path)?;
        // Checked, not changed: the file is ours, a chmod through the path could follow a
        // symlink that replaced it.
        let mode = std::fs::symlink_metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            let _ = std::fs::remove_file(path);
            return Err(std::io::Error::other(format!(
                "the socket was created with mode {:o}, not 0600: this kernel does not apply \
                 fchmod before bind; put the socket in a directory only you can enter",
                mode & 0o777
            )));
        }
        let ctl = Arc::new_cyclic(|me| Control {
            euid: sys::euid(),
            refused: AtomicU64::new(0),
            max_memory,
            filling: AtomicU64::new(0),
            fill_tx: Mutex::new(None),
            me: me.clone(),
            shared: shared.clone(),
            h: h.clone(),
            path: path.to_path_buf(),
            listener,
            clients: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&ctl);
        h.set_read_handler(ctl.listener.as_raw_fd(), move || {
            if let Some(c) = weak.upgrade() {
                c.accept();
            }
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(ctl)
    }

    /// Tells every client how the run ended (`RESET` or `SHUTDOWN` with the outcome): for
    /// the main thread once the main loop has ended (the thread that ends a run may be a
    /// vCPU, whose seccomp filter does not let it send).
    pub fn send_end_event(&self) {
        let (event, reason) = match self.shared.outcome_name() {
            Some("reset") => ("RESET", "reset"),
            Some(other) => ("SHUTDOWN", other),
            None => ("SHUTDOWN", "unknown"),
        };
        self.broadcast(&qmp::event(event, Some(json!({ "reason": reason }))));
    }

    /// Sends an event to every client past the capabilities negotiation, as QEMU does (from
    /// any thread).
    pub fn broadcast(&self, v: &Value) {
        for (&fd, c) in self.clients.lock().iter() {
            let mut cl = c.lock();
            if !cl.session.is_negotiated() {
                continue;
            }
            cl.send(v);
            if !cl.outbuf.is_empty() || cl.dead {
                // Watch for room (or drop it) on the loop thread, which owns the handlers.
                let (me, c) = (self.me.clone(), c.clone());
                self.h.call_soon(move || {
                    if let Some(ctl) = me.upgrade() {
                        ctl.settle(fd, &c);
                    }
                });
            }
        }
    }

    /// Installs the client's handlers: read, and write when `writable`.
    fn watch(&self, fd: RawFd, client: &Arc<Mutex<Client>>, writable: bool) -> bool {
        let (me, c) = (self.me.clone(), client.clone());
        let read: iohandler::Callback = Box::new(move || {
            if let Some(ctl) = me.upgrade() {
                ctl.serve(fd, &c, Wake::Ready);
            }
        });
        let write = writable.then(|| {
            let (me, c) = (self.me.clone(), client.clone());
            Box::new(move || {
                if let Some(ctl) = me.upgrade() {
                    c.lock().flush();
                    ctl.settle(fd, &c);
                }
            }) as iohandler::Callback
        });
        self.h.set_fd_handler(fd, Some(read), write).is_ok()
    }

    /// Whether `client` is still the one served on `fd` (not dropped, its fd not reused).
    fn is_current(&self, fd: RawFd, client: &Arc<Mutex<Client>>) -> bool {
        self.clients
            .lock()
            .get(&fd)
            .is_some_and(|c| Arc::ptr_eq(c, client))
    }

    /// On the loop thread, after output was attempted: drops a dead client, and watches the
    /// socket for room exactly while replies wait.
    fn settle(&self, fd: RawFd, client: &Arc<Mutex<Client>>) {
        if !self.is_current(fd, client) {
            return;
        }
        let mut c = client.lock();
        if c.dead {
            drop(c);
            self.drop_client(fd);
            return;
        }
        let want = !c.outbuf.is_empty();
        if want != c.write_watched {
            c.write_watched = want;
            drop(c);
            if !self.watch(fd, client, want) {
                self.drop_client(fd);
            }
        }
    }

    fn accept(&self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            match sys::peer_cred(&stream) {
                Ok((uid, _)) if uid == self.euid => {}
                Ok((uid, pid)) => {
                    let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= REFUSALS_LOGGED || n.is_multiple_of(1000) {
                        log::warn!(
                            "control: refused a client of uid {uid} (pid {pid}): only uid {} \
                             (the VMM's own) may connect ({n} refused so far)",
                            self.euid
                        );
                    }
                    continue; // dropping the stream closes it
                }
                Err(e) => {
                    log::warn!("control: refused a client whose credentials are unknown: {e}");
                    continue;
                }
            }
            if self.clients.lock().len() >= MAX_CLIENTS {
                log::warn!("control: too many clients ({MAX_CLIENTS}); refusing one");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            let client = Arc::new(Mutex::new(Client {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                dead: false,
                draining: false,
                write_watched: false,
                waiting: false,
                resume_scheduled: false,
                session: Session::new(),
            }));
            client.lock().send(&qmp::greeting());
            self.clients.lock().insert(fd, client.clone());
            if !self.watch(fd, &client, false) {
                self.clients.lock().remove(&fd);
                continue;
            }
            // A greeting that did not fit: watch for room.
            self.settle(fd, &client);
        }
    }

    fn drop_client(&self, fd: RawFd) {
        // The handler may be running this very call: removal from inside is allowed, and
        // the stream (owned by the client) is closed when the last reference goes.
        self.h.remove_fd_handler(fd);
        self.clients.lock().remove(&fd);
    }

    /// Serves a client for one turn: its buffered requests, then what it sent, until the
    /// socket would block, the turn's budget is spent (a bottom half goes on in a later
    /// round) or a request must wait for its answer.
    fn serve(&self, fd: RawFd, client: &Arc<Mutex<Client>>, wake: Wake) {
        if wake == Wake::Resume && !self.is_current(fd, client) {
            return;
        }
        {
            let mut c = client.lock();
            match wake {
                Wake::Resume => c.resume_scheduled = false,
                // A continuation (or the answer awaited) will read what arrived.
                Wake::Ready if c.resume_scheduled || c.waiting => return,
                Wake::Ready => {}
            }
        }
        let mut buf = [0u8; 4096];
        let (mut requests, mut read) = (0usize, 0usize);
        loop {
            let mut c = client.lock();
            if c.dead {
                drop(c);
                self.drop_client(fd);
                return;
            }
            c = self.serve_buffered(fd, client, c, &mut requests);
            c.flush();
            if c.waiting {
                drop(c);
                self.settle(fd, client);
                return;
            }
            if requests >= REQUESTS_PER_TURN || read >= READ_PER_TURN {
                drop(c);
                self.continue_later(fd, client);
                return;
            }
            // Every complete line is served: what is left is the start of one.
            if c.inbuf.len() > MAX_LINE {
                c.refuse_long_line();
            }
            let n = match c.stream.read(&mut buf) {
                Ok(0) => {
                    drop(c);
                    self.drop_client(fd);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Replies that did not fit go out when the socket has room again,
                    // even if the client sends nothing more.
                    drop(c);
                    self.settle(fd, client);
                    return;
                }
                Err(_) => {
                    drop(c);
                    self.drop_client(fd);
                    return;
                }
            };
            read += n;
            if !c.draining {
                c.inbuf.extend_from_slice(&buf[..n]);
            }
        }
    }

    /// Serves the complete request lines already buffered, up to the turn's budget (counted
    /// in `requests`) or until one must wait for its answer; returns the client locked again.
    fn serve_buffered<'c>(
        &self,
        fd: RawFd,
        client: &'c Arc<Mutex<Client>>,
        mut c: parking_lot::MutexGuard<'c, Client>,
        requests: &mut usize,
    ) -> parking_lot::MutexGuard<'c, Client> {
        let mut start = 0;
        while !c.waiting && *requests < REQUESTS_PER_TURN {
            let Some(len) = qmp::next_request(&c.inbuf[start..]) else {
                break;
            };
            let line = c.inbuf[start..start + len].to_vec();
            start += len;
            *requests += 1;
            // Only this (loop) thread serves the client and changes its session; the copy
            // left there tells events (sent during the request) where it stands.
            let mut session = c.session.clone();
            drop(c);
            let answer = self.request(&line, &mut session);
            c = client.lock();
            c.session = session;
            match answer {
                None => {}
                Some(Answer::Now(r)) => c.queue(&r),
                Some(Answer::Fill(job)) => {
                    c.waiting = true;
                    self.start_fill(fd, client, job);
                }
            }
        }
        c.inbuf.drain(..start);
        c
    }

    /// Ends the client's turn with work left: the rest (buffered or still in the socket,
    /// whose edge has been consumed) is served by a bottom half in a later round.
    fn continue_later(&self, fd: RawFd, client: &Arc<Mutex<Client>>) {
        client.lock().resume_scheduled = true;
        let (me, cl) = (self.me.clone(), client.clone());
        self.h.call_soon(move || {
            if let Some(ctl) = me.upgrade() {
                ctl.serve(fd, &cl, Wake::Resume);
            }
        });
        self.settle(fd, client);
    }

    /// Hands a block to the fill thread; when it is filled, the loop publishes it, answers
    /// the client and serves the requests that waited.
    fn start_fill(&self, fd: RawFd, client: &Arc<Mutex<Client>>, job: PendingFill) {
        let size = job.block.size();
        self.filling.fetch_add(size, Ordering::Relaxed);
        let (me, cl, h, id) = (self.me.clone(), client.clone(), self.h.clone(), job.id);
        let done = Box::new(move |block: RamBlock, r: Result<(), String>| {
            h.call_soon(move || {
                if let Some(ctl) = me.upgrade() {
                    ctl.finish_fill(fd, &cl, block, r, id);
                }
            });
        });
        let job = FillJob {
            block: job.block,
            pattern: job.pattern,
            done,
        };
        let mut tx = self.fill_tx.lock();
        if tx.is_none() {
            *tx = spawn_filler()
                .map_err(|e| log::warn!("cannot start the ram-add fill thread ({e}); filling here"))
                .ok();
        }
        let sent = match tx.as_ref() {
            Some(tx) => tx.send(job),
            None => Err(mpsc::SendError(job)),
        };
        drop(tx);
        if let Err(mpsc::SendError(job)) = sent {
            // No fill thread (it could not start; it cannot panic: fill returns errors).
            let r = fill(&job.block, job.pattern);
            (job.done)(job.block, r);
        }
    }

    /// On the loop thread: publishes a filled block and answers the `ram-add`.
    fn finish_fill(
        &self,
        fd: RawFd,
        client: &Arc<Mutex<Client>>,
        block: RamBlock,
        filled: Result<(), String>,
        id: Option<Value>,
    ) {
        self.filling.fetch_sub(block.size(), Ordering::Relaxed);
        let result = match filled {
            Ok(()) => self.publish(block, std::time::Instant::now()),
            Err(e) => Err(bad(e)),
        };
        let reply = Self::reply(result, id);
        {
            let mut c = client.lock();
            c.waiting = false;
            c.queue(&reply);
        }
        self.serve(fd, client, Wake::Resume);
    }

    /// Parses and executes one request line as the loop does for a client past the
    /// capabilities negotiation, but all on the caller's thread (a `ram-add`'s fill
    /// included): the reply, or `None` for a blank line. Public for the fuzz target
    /// (`fuzz/fuzz_targets/control.rs`), which calls it with arbitrary bytes.
    pub fn request_now(&self, line: &[u8]) -> Option<Value> {
        Some(match self.request(line, &mut Session::negotiated())? {
            Answer::Now(v) => v,
            Answer::Fill(job) => {
                let result = match fill(&job.block, job.pattern) {
                    Ok(()) => self.publish(job.block, std::time::Instant::now()),
                    Err(e) => Err(bad(e)),
                };
                Self::reply(result, job.id)
            }
        })
    }

    /// Parses and executes one request line of a client in `session`; `None` for a blank
    /// line.
    fn request(&self, line: &[u8], session: &mut Session) -> Option<Answer> {
        let (command, id) = match session.step(line) {
            Step::Nothing => return None,
            Step::Reply(v) => return Some(Answer::Now(v)),
            Step::Run { command, id } => (command, id),
        };
        let result = match command {
            Command::RamAdd {
                name,
                gpa,
                size,
                pattern,
            } => match self.ram_add(&name, gpa, size, pattern) {
                Ok(RamAdd::Done(v)) => Ok(v),
                Ok(RamAdd::Fill(block, pattern)) => {
                    return Some(Answer::Fill(PendingFill { block, pattern, id }))
                }
                Err(e) => Err(e),
            },
            other => self.execute(other),
        };
        Some(Answer::Now(Self::reply(result, id)))
    }

    /// The reply line for a command's result.
    fn reply(result: Result<Value, CmdError>, id: Option<Value>) -> Value {
        qmp::reply(result, id)
    }

    fn execute(&self, cmd: Command) -> Result<Value, CmdError> {
        if matches!(cmd, Command::RamRemove { .. }) {
            let op = self.shared.hotplug.start();
            let r = self.execute_inner(cmd);
            if r.is_ok() {
                self.shared.hotplug.record(op);
            }
            return r;
        }
        self.execute_inner(cmd)
    }

    /// `ram-add`: checks the block against the hot-plug window and `--max-memory`, maps it,
    /// and publishes it now, or (with a pattern) hands it back to be filled first.
    /// Without a pattern the block is left as the host gives it (zeroes) and nothing is
    /// touched; with one, every qword is filled (off the loop) before publication.
    fn ram_add(
        &self,
        name: &str,
        gpa: u64,
        size: u64,
        pattern: Option<u64>,
    ) -> Result<RamAdd, CmdError> {
        let t = std::time::Instant::now();
        let s = &self.shared;
        if !layout::in_hotplug_window(gpa, size) {
            return Err(bad(format!(
                "RAM can be added only inside the hot-plug window {:#x}-{:#x} ({} MiB); \
                 {gpa:#x} + {size:#x} bytes is not inside it",
                layout::HOTPLUG_START,
                layout::HOTPLUG_END - 1,
                (layout::HOTPLUG_END - layout::HOTPLUG_START) >> 20
            )));
        }
        if s.ram.find_by_name(name).is_some() {
            return Err(bad(format!("a RAM block named '{name}' exists")));
        }
        let present: u64 = s
            .ram
            .snapshot_owned()
            .blocks()
            .iter()
            .map(|b| b.size())
            .sum();
        let total = present
            .saturating_add(self.filling.load(Ordering::Relaxed))
            .saturating_add(size);
        if total > self.max_memory {
            return Err(bad(format!(
                "guest memory would be {} MiB, over --max-memory {} MiB ({} MiB present or \
                 being added); remove a block or start the VMM with a larger --max-memory",
                total >> 20,
                self.max_memory >> 20,
                (total - size) >> 20
            )));
        }
        let block =
            RamBlock::new(name, gpa, size, BlockFlags::empty()).map_err(|e| bad(e.to_string()))?;
        match pattern {
            Some(p) => Ok(RamAdd::Fill(block, p)),
            // The share counted from the request's start (its mmap included), as before.
            None => Ok(RamAdd::Done(self.publish(block, t)?)),
        }
    }

    /// Publishes a block (RAM list, KVM slot, lookup tables) and records the VMM's share of
    /// the work since `t`.
    fn publish(&self, block: RamBlock, t: std::time::Instant) -> Result<Value, CmdError> {
        let s = &self.shared;
        let op = s.hotplug.start_at(t);
        s.ram.add(block).map_err(|e| bad(e.to_string()))?;
        s.hotplug.record(op);
        Ok(json!({}))
    }

    fn execute_inner(&self, cmd: Command) -> Result<Value, CmdError> {
        let s = &self.shared;
        match cmd {
            Command::QueryStatus {} => {
                let status = match s.state() {
                    StateKind::Running => "running",
                    StateKind::Paused => "paused",
                    StateKind::Stopping => "shutdown",
                };
                Ok(json!({"running": status == "running", "status": status}))
            }
            Command::QueryCpus {} => Ok(Value::Array(
                (0..s.exits.len())
                    .map(|i| json!({"cpu": i, "apic-id": i}))
                    .collect(),
            )),
            Command::QueryExits {} => Ok(self.query_exits()),
            Command::QueryMemory {} => Ok(self.query_memory()),
            Command::QueryConsole {} => Ok(s.console.stats().to_json('-')),
            Command::QueryRcu {} => Ok(self.query_rcu()),
            Command::Pause {} => {
                // QMP's STOP event only when the VM did stop (not when already paused).
                if s.pause() {
                    self.broadcast(&qmp::event("STOP", None));
                }
                Ok(json!({}))
            }
            Command::Resume {} | Command::Cont {} => {
                if s.resume() {
                    self.broadcast(&qmp::event("RESUME", None));
                }
                Ok(json!({}))
            }
            Command::Quit {} => {
                s.finish(Outcome::Stopped, None);
                Ok(json!({}))
            }
            Command::RamRemove { name } => self.ram_remove(&name),
            Command::DeviceAdd { port, value } => self.device_add(port, value),
            Command::DeviceRemove { port } => self.device_remove(port),
            // Answered by the protocol (`qmp::Session::step`) or above (`ram-add`).
            Command::QmpCapabilities { .. }
            | Command::QueryCommands {}
            | Command::QueryVersion {}
            | Command::RamAdd { .. } => Err(bad("internal error: this command is not run here")),
        }
    }

    fn query_exits(&self) -> Value {
        let exits = self.shared.exits.iter().enumerate().map(|(i, c)| {
            json!({"cpu": i,
                "pio": c.pio.load(Ordering::Relaxed),
                "mmio": c.mmio.load(Ordering::Relaxed),
                "interrupted": c.interrupted.load(Ordering::Relaxed),
                "other": c.other.load(Ordering::Relaxed)})
        });
        Value::Array(exits.collect())
    }

    fn query_memory(&self) -> Value {
        let s = &self.shared;
        let snap = s.ram.snapshot_owned();
        let st = s.ram.stats();
        let blocks: Vec<Value> = snap
            .blocks()
            .iter()
            .map(|b| {
                json!({"name": b.name(), "gpa": b.gpa(), "size": b.size(),
                       "slot": b.slot(), "read-only": b.is_read_only()})
            })
            .collect();
        let mru: Vec<Value> = s
            .exits
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"cpu": i, "hits": c.mru_hits.load(Ordering::Relaxed),
                       "misses": c.mru_misses.load(Ordering::Relaxed)})
            })
            .collect();
        json!({"version": st.version, "blocks": blocks, "added": st.added,
               "removed": st.removed, "unmapped": st.unmapped, "mru": mru,
               "hotplug": s.hotplug.stats()})
    }

    fn query_rcu(&self) -> Value {
        let r = self.shared.rcu.stats();
        json!({
            "grace-periods": r.grace_periods,
            "shared-grace-periods": r.shared_grace_periods,
            "longest-grace-period-us": r.longest_grace_period.as_micros() as u64,
            "stalls": r.stalls,
            "callbacks-queued": r.callbacks_queued,
            "callbacks-run": r.callbacks_run,
            "callbacks-pending": r.callbacks_pending,
            "batches": r.batches,
            "max-batch": r.max_batch,
            "mean-batch": r.mean_batch(),
            "max-pending": r.max_pending,
            "throttled": r.throttled,
        })
    }

    fn ram_remove(&self, name: &str) -> Result<Value, CmdError> {
        let s = &self.shared;
        if name == "ram-low" || name == "ram-high" {
            return Err(bad("boot RAM cannot be removed"));
        }
        let id = s.ram.find_by_name(name).ok_or_else(|| {
            QmpError::new(
                ErrorClass::DeviceNotFound,
                format!("no RAM block named '{name}'"),
            )
        })?;
        s.ram.remove(id).map_err(|e| bad(e.to_string()))?;
        Ok(json!({}))
    }

    fn device_add(&self, port: u64, value: u64) -> Result<Value, CmdError> {
        if port > 0xffff || value > u32::MAX as u64 {
            return Err(bad("'port' must fit 16 bits and 'value' 32 bits"));
        }
        let dev = Constant::new(format!("test@{port:#x}"), value as u32);
        self.shared
            .pio
            .insert(port, 4, Arc::new(dev))
            .map_err(|e| bad(e.to_string()))?;
        Ok(json!({}))
    }

    fn device_remove(&self, port: u64) -> Result<Value, CmdError> {
        let pio = &self.shared.pio;
        let name = pio
            .devices()
            .into_iter()
            .find(|(b, _, _)| *b == port)
            .map(|(_, _, n)| n);
        match name {
            Some(n) if n.starts_with("test@") => {
                pio.remove(port).map_err(|e| bad(e.to_string()))?;
                Ok(json!({}))
            }
            Some(n) => Err(bad(format!("'{n}' is not a hot-pluggable test device"))),
            None => Err(QmpError::new(
                ErrorClass::DeviceNotFound,
                format!("no device at port {port:#x}"),
            )),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
