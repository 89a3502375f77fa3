//! The control socket: newline-delimited JSON in the manner of QMP, served by the main loop.
//!
//! A client connects to the Unix socket (mode 0600) and gets a greeting:
//! `{"QMP": {"version": {...}, "capabilities": []}}`. It sends one request per line,
//! `{"execute": "query-status", "arguments": {...}, "id": ...}`, and gets one reply per line:
//! `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}` (with the request's `id`, if
//! any). Asynchronous events (`{"event": "SHUTDOWN", "data": {...}}`, `STOP`, `RESUME`) go to
//! every client.
//!
//! Robustness: lines are limited to [`MAX_LINE`] bytes (a longer one gets an error and the
//! client is dropped); malformed JSON, unknown commands and wrong argument types get an error
//! and the connection goes on; replies to a client that does not read are buffered up to
//! [`MAX_OUTPUT`] bytes, then the client is dropped. Nothing a client sends can stop the VMM
//! or the guest, except `quit`.
//!
//! Handlers run on the main-loop thread under the BQL; the RCU writers they call (`ram-add`,
//! `device-add`, ...) publish new versions and retire old ones through `call_rcu`.

use crate::outcome::Outcome;
use crate::vm::VmShared;
use devices::Constant;
use iohandler::LoopHandle;
use memory::{BlockFlags, RamBlock};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// The most reply bytes buffered for a client that does not read.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Queued replies past this many bytes are sent without waiting for the end of the batch.
const QUEUE_FLUSH: usize = 64 << 10;
/// The most clients at once.
pub const MAX_CLIENTS: usize = 64;

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
    /// The VMM's own share (everything but the KVM slot ioctls) of each ram-add and
    /// ram-remove, in ns: the most recent 4096.
    hotplug_ns: Mutex<std::collections::VecDeque<u64>>,
    shared: Arc<VmShared>,
    h: LoopHandle,
    path: PathBuf,
    listener: UnixListener,
    clients: Mutex<HashMap<RawFd, Arc<Mutex<Client>>>>,
    /// This server, for the handlers it installs.
    me: std::sync::Weak<Control>,
}

/// The `p`th percentile (0-100) of `sorted` (ascending): the element at `len * p / 100`,
/// clamped to the last; `None` when empty. Shared with `vmmctl`'s statistics.
pub fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    let i = (sorted.len() * p / 100).min(sorted.len().checked_sub(1)?);
    sorted.get(i).copied()
}

/// A command's failure: QMP's error class and a description.
type CmdError = (&'static str, String);

fn bad(desc: impl Into<String>) -> CmdError {
    ("GenericError", desc.into())
}

fn arg_u64(args: &Map<String, Value>, key: &str) -> Result<u64, CmdError> {
    match args.get(key) {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad(format!("'{key}' must be a non-negative integer"))),
        Some(Value::String(s)) if s.starts_with("0x") => u64::from_str_radix(&s[2..], 16)
            .map_err(|_| bad(format!("'{key}' is not a hexadecimal number"))),
        Some(_) => Err(bad(format!("'{key}' must be an integer"))),
        None => Err(bad(format!("missing argument '{key}'"))),
    }
}

fn arg_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, CmdError> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("'{key}' must be a string"))),
        None => Err(bad(format!("missing argument '{key}'"))),
    }
}

impl Control {
    /// Binds `path` (mode 0600; a stale socket file there is replaced) and serves it on the
    /// main loop.
    pub fn start(
        path: &Path,
        h: &LoopHandle,
        shared: Arc<VmShared>,
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
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let ctl = Arc::new_cyclic(|me| Control {
            me: me.clone(),
            hotplug_ns: Mutex::new(std::collections::VecDeque::new()),
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
        let weak = Arc::downgrade(&ctl);
        shared.on_finish(move || {
            if let Some(c) = weak.upgrade() {
                c.finished_event();
            }
        });
        Ok(ctl)
    }

    fn finished_event(&self) {
        let (event, reason) = match self.shared.outcome_name() {
            Some("reset") => ("RESET", "reset"),
            Some(other) => ("SHUTDOWN", other),
            None => ("SHUTDOWN", "unknown"),
        };
        self.broadcast(&json!({"event": event, "data": {"reason": reason}}));
    }

    /// Sends an event to every client (from any thread).
    pub fn broadcast(&self, v: &Value) {
        for (&fd, c) in self.clients.lock().iter() {
            let mut cl = c.lock();
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
                ctl.serve(fd, &c);
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

    /// On the loop thread, after output was attempted: drops a dead client, and watches the
    /// socket for room exactly while replies wait.
    fn settle(&self, fd: RawFd, client: &Arc<Mutex<Client>>) {
        let still_ours = self
            .clients
            .lock()
            .get(&fd)
            .is_some_and(|c| Arc::ptr_eq(c, client));
        if !still_ours {
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
            }));
            client.lock().send(&json!({"QMP": {
                "version": {"package": "rcu-vmm", "version": env!("CARGO_PKG_VERSION")},
                "capabilities": []
            }}));
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

    fn serve(&self, fd: RawFd, client: &Arc<Mutex<Client>>) {
        let mut buf = [0u8; 4096];
        loop {
            let mut c = client.lock();
            if c.dead {
                drop(c);
                self.drop_client(fd);
                return;
            }
            c.flush();
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
            if c.draining {
                continue;
            }
            c.inbuf.extend_from_slice(&buf[..n]);
            while let Some(pos) = c.inbuf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = c.inbuf.drain(..=pos).collect();
                drop(c);
                let reply = self.request(&line[..line.len() - 1]);
                c = client.lock();
                if let Some(r) = reply {
                    c.queue(&r); // sent by the flush at the top of the loop
                }
            }
            if c.inbuf.len() > MAX_LINE {
                c.send(&json!({"error": {"class": "GenericError",
                    "desc": format!("request line longer than {MAX_LINE} bytes; closing")}}));
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                c.inbuf = Vec::new();
                c.draining = true;
            }
        }
    }

    /// Parses and executes one request line; `None` for a blank line.
    fn request(&self, line: &[u8]) -> Option<Value> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let req: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return Some(json!({"error": {"class": "GenericError",
                    "desc": format!("malformed JSON: {e}")}}))
            }
        };
        let id = req.get("id").cloned();
        let result = match req.get("execute") {
            Some(Value::String(cmd)) => {
                let empty = Map::new();
                match req.get("arguments") {
                    None | Some(Value::Null) => self.execute(cmd, &empty),
                    Some(Value::Object(args)) => self.execute(cmd, args),
                    Some(_) => Err(bad("'arguments' must be an object")),
                }
            }
            Some(_) => Err(bad("'execute' must be a string")),
            None => Err(bad("expected {\"execute\": COMMAND, \"arguments\": {...}}")),
        };
        let mut reply = match result {
            Ok(v) => json!({ "return": v }),
            Err((class, desc)) => json!({"error": {"class": class, "desc": desc}}),
        };
        if let Some(id) = id {
            reply["id"] = id;
        }
        Some(reply)
    }

    fn execute(&self, cmd: &str, args: &Map<String, Value>) -> Result<Value, CmdError> {
        if cmd == "ram-add" || cmd == "ram-remove" {
            let kvm0 = self.shared.slot_ioctl_ns.load(Ordering::Relaxed);
            let t = std::time::Instant::now();
            let r = self.execute_inner(cmd, args);
            let total = t.elapsed().as_nanos() as u64;
            let kvm = self.shared.slot_ioctl_ns.load(Ordering::Relaxed) - kvm0;
            if r.is_ok() {
                let mut h = self.hotplug_ns.lock();
                if h.len() == 4096 {
                    h.pop_front();
                }
                h.push_back(total.saturating_sub(kvm));
            }
            return r;
        }
        self.execute_inner(cmd, args)
    }

    fn hotplug_stats(&self) -> Value {
        let mut v: Vec<u64> = self.hotplug_ns.lock().iter().copied().collect();
        v.sort_unstable();
        let pct = |p| percentile(&v, p);
        json!({"ops": v.len(), "vmm-share-p50-us": pct(50).map(|n| n as f64 / 1e3),
               "vmm-share-p99-us": pct(99).map(|n| n as f64 / 1e3),
               "kvm-slot-ioctl-total-ms": self.shared.slot_ioctl_ns.load(Ordering::Relaxed) as f64 / 1e6})
    }

    fn execute_inner(&self, cmd: &str, args: &Map<String, Value>) -> Result<Value, CmdError> {
        let s = &self.shared;
        match cmd {
            "query-status" => Ok(json!({
                "running": !s.stopping() && !s.is_paused(),
                "status": if s.stopping() { "shutdown" } else if s.is_paused() { "paused" } else { "running" },
            })),
            "query-cpus" => Ok(Value::Array(
                s.exits
                    .iter()
                    .enumerate()
                    .map(|(i, _)| json!({"cpu": i, "apic-id": i}))
                    .collect(),
            )),
            "query-exits" => Ok(Value::Array(
                s.exits
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        json!({"cpu": i,
                        "pio": c.pio.load(Ordering::Relaxed),
                        "mmio": c.mmio.load(Ordering::Relaxed),
                        "interrupted": c.interrupted.load(Ordering::Relaxed),
                        "other": c.other.load(Ordering::Relaxed)})
                    })
                    .collect(),
            )),
            "query-memory" => {
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
                Ok(
                    json!({"version": st.version, "blocks": blocks, "added": st.added,
                    "removed": st.removed, "unmapped": st.unmapped, "mru": mru,
                    "hotplug": self.hotplug_stats()}),
                )
            }
            "query-console" => Ok(s.console.stats().to_json('-')),
            "query-rcu" => {
                let r = s.rcu.stats();
                Ok(json!({
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
                }))
            }
            "pause" => {
                s.pause();
                self.broadcast(&json!({"event": "STOP"}));
                Ok(json!({}))
            }
            "resume" | "cont" => {
                s.resume();
                self.broadcast(&json!({"event": "RESUME"}));
                Ok(json!({}))
            }
            "quit" => {
                s.finish(Outcome::Stopped, None);
                Ok(json!({}))
            }
            "ram-add" => {
                let name = arg_str(args, "name")?;
                let gpa = arg_u64(args, "gpa")?;
                let size = arg_u64(args, "size")?;
                // Without a pattern the block is left as the host gives it (zeroes) and
                // nothing is touched; with one, every qword is filled before publication.
                let pattern = match args.get("pattern") {
                    None => None,
                    Some(_) => Some(arg_u64(args, "pattern")?),
                };
                if s.ram.find_by_name(name).is_some() {
                    return Err(bad(format!("a RAM block named '{name}' exists")));
                }
                let block = RamBlock::new(name, gpa, size, BlockFlags::empty())
                    .map_err(|e| bad(e.to_string()))?;
                let chunk: Vec<u8> = pattern.unwrap_or(0).to_le_bytes().repeat(512);
                let mut off = if pattern.is_some() { 0 } else { size };
                while off < size {
                    let n = (size - off).min(chunk.len() as u64) as usize;
                    block
                        .write_at(off, &chunk[..n])
                        .map_err(|e| bad(e.to_string()))?;
                    off += n as u64;
                }
                s.lookup_tables
                    .update(|| s.ram.add(block))
                    .map_err(|e| bad(e.to_string()))?;
                Ok(json!({}))
            }
            "ram-remove" => {
                let name = arg_str(args, "name")?;
                if name == "ram-low" || name == "ram-high" {
                    return Err(bad("boot RAM cannot be removed"));
                }
                let id = s
                    .ram
                    .find_by_name(name)
                    .ok_or_else(|| ("DeviceNotFound", format!("no RAM block named '{name}'")))?;
                s.lookup_tables
                    .update(|| s.ram.remove(id))
                    .map_err(|e| bad(e.to_string()))?;
                Ok(json!({}))
            }
            "device-add" => {
                let port = arg_u64(args, "port")?;
                let value = arg_u64(args, "value")?;
                if port > 0xffff || value > u32::MAX as u64 {
                    return Err(bad("'port' must fit 16 bits and 'value' 32 bits"));
                }
                s.pio
                    .insert(
                        port,
                        4,
                        Arc::new(Constant::new(format!("test@{port:#x}"), value as u32)),
                    )
                    .map_err(|e| bad(e.to_string()))?;
                Ok(json!({}))
            }
            "device-remove" => {
                let port = arg_u64(args, "port")?;
                let name = s
                    .pio
                    .devices()
                    .into_iter()
                    .find(|(b, _, _)| *b == port)
                    .map(|(_, _, n)| n);
                match name {
                    Some(n) if n.starts_with("test@") => {
                        s.pio.remove(port).map_err(|e| bad(e.to_string()))?;
                        Ok(json!({}))
                    }
                    Some(n) => Err(bad(format!("'{n}' is not a hot-pluggable test device"))),
                    None => Err(("DeviceNotFound", format!("no device at port {port:#x}"))),
                }
            }
            other => Err((
                "CommandNotFound",
                format!("the command '{other}' has not been found"),
            )),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_picks_len_times_p_over_100_clamped() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(51));
        assert_eq!(percentile(&v, 99), Some(100));
        assert_eq!(percentile(&v, 100), Some(100));
    }
}
