//! `vmmctl`: a client for the VMM's control socket (`vmm --control PATH`).
//!
//! It speaks QMP: after the greeting it negotiates capabilities (`qmp_capabilities`, no
//! capability enabled), then sends its requests.
//! `vmmctl SOCKET send COMMAND [ARGS-JSON]` sends one request and prints the reply;
//! `vmmctl SOCKET churn ...` is the live RAM writer of the lookup benchmark: it hot-adds and
//! removes one block at a steady rate until the VMM goes away or `--duration` passes, then
//! prints one JSON line of statistics. Written in Rust so that the writer's own CPU is small
//! next to the VMM's (a Python client costs ~300 µs of CPU per add+remove pair).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vmm::frontend::qmp::Command;

const AFTER_HELP: &str = "\
Exit status:
  0  done
  1  the VMM answered with an error (send), or some add+remove pairs failed (churn)
  2  bad usage
  3  the VMM could not be reached, or closed the socket before answering";

/// Talk to a running VMM through its control socket.
#[derive(Parser, Debug)]
#[command(name = "vmmctl", version, after_help = AFTER_HELP)]
struct Cli {
    /// The socket the VMM was started with (`--control PATH`).
    socket: PathBuf,
    /// Wait this many seconds for the socket to appear (the VMM may still be starting).
    #[arg(long, global = true, default_value = "0", value_parser = parse_secs)]
    wait: Duration,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Send one command and print the reply (exit status 1 if it is an error).
    Send {
        /// The command, e.g. query-status, ram-add.
        command: String,
        /// Its arguments as a JSON object, e.g. '{"name": "r1", "gpa": 3758096384, "size": 65536}'.
        arguments: Option<String>,
    },
    /// Hot-add and remove one RAM block, `--rate` pairs a second, until the VMM ends.
    Churn {
        /// The block's name.
        #[arg(long, default_value = "churn")]
        name: String,
        /// Its guest-physical address (decimal or 0x hex); the block must lie inside the VMM's
        /// hot-plug window, 0xe0000000-0xfebfffff.
        #[arg(long, default_value = "0xe0000000", value_parser = parse_u64)]
        gpa: u64,
        /// Its size in bytes (decimal or 0x hex).
        #[arg(long, default_value = "0x200000", value_parser = parse_u64)]
        size: u64,
        /// Fill the block with this qword before each add (default: leave it zeroed).
        #[arg(long, value_parser = parse_u64)]
        pattern: Option<u64>,
        /// Add+remove pairs per second (0: back to back).
        #[arg(long, default_value = "1000", value_parser = parse_rate)]
        rate: f64,
        /// Stop after this many seconds (default: when the VMM closes the socket).
        #[arg(long, value_parser = parse_secs)]
        duration: Option<Duration>,
    },
}

/// Seconds, fractional allowed, at most a year.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.0..=365.0 * 86400.0).contains(&v) {
        return Err(format!("'{s}': give 0 to 31536000 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Pairs per second: 0 (back to back), or 0.001 to 1,000,000.
fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a rate (pairs per second)"))?;
    if v == 0.0 || (0.001..=1e6).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "'{s}': give 0 (back to back) or 0.001 to 1000000 pairs per second"
        ))
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number (decimal or 0x hex)"))
}

/// One connection: requests go out, replies come back; events in between are skipped.
struct Conn {
    out: UnixStream,
    inp: BufReader<UnixStream>,
    line: String,
}

impl Conn {
    fn open(path: &Path, wait: Duration) -> anyhow::Result<Conn> {
        let deadline = Instant::now() + wait;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot connect to {}: is the VMM running with --control {}?",
                            path.display(),
                            path.display()
                        )
                    })
                }
            }
        };
        let mut c = Conn {
            inp: BufReader::new(s.try_clone().context("cloning the socket")?),
            out: s,
            line: String::new(),
        };
        let greeting = c
            .read()?
            .context("the VMM closed the socket before greeting")?;
        if greeting.get("QMP").is_none() {
            bail!(
                "{} did not greet like the VMM's control socket: {greeting}",
                path.display()
            );
        }
        let reply = c
            .call(&request(&Command::QmpCapabilities { enable: vec![] }))?
            .context("the VMM closed the socket during the capabilities negotiation")?;
        if reply.get("return").is_none() {
            bail!("the VMM refused the capabilities negotiation: {reply}");
        }
        Ok(c)
    }

    fn read(&mut self) -> anyhow::Result<Option<Value>> {
        self.line.clear();
        if self.inp.read_line(&mut self.line)? == 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&self.line).with_context(
            || format!("the VMM sent something that is not JSON: {:?}", self.line),
        )?))
    }

    /// Sends a request and returns the reply; `None` when the VMM has gone away.
    fn call(&mut self, req: &[u8]) -> anyhow::Result<Option<Value>> {
        if self.out.write_all(req).is_err() {
            return Ok(None);
        }
        self.reply()
    }

    /// The next reply (events are skipped); `None` when the VMM has gone away.
    fn reply(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            match self.read() {
                Ok(Some(v)) if v.get("event").is_some() => continue,
                Ok(v) => return Ok(v),
                Err(e) if is_gone(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    })
}

fn request(cmd: &Command) -> Vec<u8> {
    cmd.request_line(None)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmmctl: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.what {
        What::Send { command, arguments } => {
            // Checked here, as the VMM would check it: a typo is a usage error (status 2)
            // without a round trip.
            let command = match parse_command(&command, arguments.as_deref()) {
                Ok(c) => c,
                Err(msg) => {
                    eprintln!("vmmctl: {msg}");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut c = Conn::open(&cli.socket, cli.wait)?;
            send(&mut c, &command)
        }
        What::Churn {
            name,
            gpa,
            size,
            pattern,
            rate,
            duration,
        } => {
            let add = Command::RamAdd {
                name,
                gpa,
                size,
                pattern,
            };
            let mut c = Conn::open(&cli.socket, cli.wait)?;
            churn(&mut c, add, rate, duration)
        }
    }
}

/// The command `name` with the JSON-object `arguments`, checked by the VMM's own parser.
fn parse_command(name: &str, arguments: Option<&str>) -> Result<Command, String> {
    let args: Value = match arguments {
        None => Value::Object(Map::new()),
        Some(a) => match serde_json::from_str(a) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(format!(
                    "the arguments {a:?} are not a JSON object; write them like \
                     '{{\"name\": \"r1\"}}'"
                ))
            }
        },
    };
    Command::from_parts(name, args).map_err(|e| {
        let names = vmm::frontend::qmp::COMMAND_NAMES.join(", ");
        format!("{}; the commands are: {names}", e.desc)
    })
}

/// `send`: one request, its reply printed; status 1 if the reply is an error.
fn send(c: &mut Conn, command: &Command) -> anyhow::Result<ExitCode> {
    let reply = c
        .call(&request(command))?
        .context("the VMM closed the socket without replying")?;
    println!("{reply}");
    Ok(if reply.get("error").is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `churn`: hot-adds (`add`, a `ram-add`) and removes one block, `rate` pairs a second,
/// until the VMM ends or `duration` passes; prints one JSON line of statistics.
fn churn(
    c: &mut Conn,
    add: Command,
    rate: f64,
    duration: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let Command::RamAdd { name, .. } = &add else {
        bail!("internal error: churn needs a ram-add");
    };
    let name = name.clone();
    // The remove goes out with the add, whatever the add's fate: a block of this name that
    // is not ours would be removed. Refuse to start if one exists.
    let mem = c
        .call(&request(&Command::QueryMemory {}))?
        .context("the VMM closed the socket")?;
    let taken = mem["return"]["blocks"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["name"] == name.as_str()));
    if taken {
        eprintln!("vmmctl: a RAM block named '{name}' exists; churn another (--name)");
        return Ok(ExitCode::from(1));
    }
    // Each add goes out together with its remove, in one write, and both replies are read
    // after: the VMM handles the two one after the other as always, but the pair costs each
    // side one wake-up instead of two (on a host where the vCPUs use every core, each
    // wake-up preempts a vCPU).
    let mut pair = request(&add);
    pair.extend(request(&Command::RamRemove { name }));
    let stats = churn_pairs(c, &pair, rate, duration)?;
    println!("{}", stats.to_json());
    Ok(if stats.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What a churn did.
struct ChurnStats {
    /// Round-trip times of the pairs that succeeded, in ns.
    rtts: Vec<u64>,
    failed: u64,
    errors: Vec<String>,
    seconds: f64,
}

impl ChurnStats {
    fn to_json(&self) -> Value {
        let n = self.rtts.len();
        let mut rtts = self.rtts.clone();
        rtts.sort_unstable();
        let pct = |p| vmm::bench::percentile(&rtts, p).map(|n| n as f64 / 1e3);
        json!({"pairs": n, "failed": self.failed, "seconds": self.seconds,
               "rate": n as f64 / self.seconds, "rtt-p50-us": pct(50),
               "rtt-p99-us": pct(99), "errors": self.errors})
    }
}

/// Sends `pair` (an add and a remove) at `rate` pairs a second until the VMM ends or
/// `duration` passes.
fn churn_pairs(
    c: &mut Conn,
    pair: &[u8],
    rate: f64,
    duration: Option<Duration>,
) -> anyhow::Result<ChurnStats> {
    let start = Instant::now();
    let end = duration.and_then(|d| start.checked_add(d));
    let mut stats = ChurnStats {
        rtts: Vec::new(),
        failed: 0,
        errors: Vec::new(),
        seconds: 0.0,
    };
    'run: loop {
        if rate > 0.0 {
            let done = (stats.rtts.len() as u64 + stats.failed) as f64;
            let due = Duration::try_from_secs_f64(done / rate)
                .ok()
                .and_then(|d| start.checked_add(d));
            if let Some(wait) = due.and_then(|d| d.checked_duration_since(Instant::now())) {
                std::thread::sleep(wait);
            }
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let t = Instant::now();
        if c.out.write_all(pair).is_err() {
            break; // the VMM ended
        }
        let mut ok = true;
        for _ in 0..2 {
            let Some(reply) = c.reply()? else {
                break 'run; // the VMM ended
            };
            if let Some(e) = reply.get("error") {
                ok = false;
                if stats.errors.len() < 5 {
                    stats.errors.push(e.to_string());
                }
            }
        }
        if ok {
            stats.rtts.push(t.elapsed().as_nanos() as u64);
        } else {
            stats.failed += 1;
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}
