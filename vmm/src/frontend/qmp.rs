//! The control socket's protocol, QMP as QEMU speaks it, without the VM: the greeting, the
//! capabilities negotiation, request parsing into [`Command`] (a serde-tagged enum), replies
//! with the request's `id`, QMP's error classes and timestamped events. `control.rs` runs the
//! commands; `vmmctl` builds its requests here. Nothing here needs KVM, so it is unit-tested
//! on its own.
//!
//! A session starts in capabilities-negotiation mode: only `qmp_capabilities` is accepted
//! (anything else gets a `CommandNotFound` error, as from QEMU) and no events are sent; once
//! it has succeeded, every other command is accepted and `qmp_capabilities` is refused.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt;

/// The commands, as `query-commands` lists them (and the order it lists them in).
pub const COMMAND_NAMES: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-version",
    "query-status",
    "query-cpus",
    "query-exits",
    "query-memory",
    "query-console",
    "query-rcu",
    "pause",
    "resume",
    "cont",
    "quit",
    "ram-add",
    "ram-remove",
    "device-add",
    "device-remove",
];

/// A request's command and its arguments, checked. The VMM parses requests into it and
/// `vmmctl` builds its requests from it, so both sides agree on every name and argument.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(
    tag = "execute",
    content = "arguments",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
pub enum Command {
    /// Leaves capabilities-negotiation mode. No capability is offered, so `enable` must be
    /// empty.
    #[serde(rename = "qmp_capabilities")]
    QmpCapabilities {
        /// Capabilities to enable (none is offered).
        #[serde(default)]
        enable: Vec<String>,
    },
    /// The commands this VMM accepts.
    QueryCommands {},
    /// The VMM's version, in QEMU's layout.
    QueryVersion {},
    /// Running, paused or ended, and the outcome.
    QueryStatus {},
    /// The vCPUs.
    QueryCpus {},
    /// Exit counts per vCPU.
    QueryExits {},
    /// Guest RAM blocks and the VMM's memory use.
    QueryMemory {},
    /// Guest console output counters (bytes, dropped bytes).
    QueryConsole {},
    /// The RCU domain's statistics.
    QueryRcu {},
    /// Pauses the vCPUs.
    Pause {},
    /// Resumes the vCPUs.
    Resume {},
    /// Resumes the vCPUs (QEMU's name).
    Cont {},
    /// Ends the run.
    Quit {},
    /// Hot-adds a RAM block in the hot-plug window.
    RamAdd {
        /// The block's name (unique).
        name: String,
        /// Its guest-physical base.
        #[serde(deserialize_with = "de_u64")]
        gpa: u64,
        /// Its size in bytes.
        #[serde(deserialize_with = "de_u64")]
        size: u64,
        /// A 64-bit pattern to fill it with first.
        #[serde(
            default,
            deserialize_with = "de_opt_u64",
            skip_serializing_if = "Option::is_none"
        )]
        pattern: Option<u64>,
    },
    /// Removes a hot-added RAM block.
    RamRemove {
        /// The block's name.
        name: String,
    },
    /// Hot-adds a `Constant` test device on the port bus.
    DeviceAdd {
        /// Its port.
        #[serde(deserialize_with = "de_u64")]
        port: u64,
        /// The value it reads as.
        #[serde(deserialize_with = "de_u64")]
        value: u64,
    },
    /// Removes a hot-added test device.
    DeviceRemove {
        /// Its port.
        #[serde(deserialize_with = "de_u64")]
        port: u64,
    },
}

/// A non-negative integer, or a string of `0x` and hex digits.
struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer or a \"0x...\" hex string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        s.strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
    }
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_u64(d).map(Some)
}

/// QMP's error classes (the ones this VMM uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Any other failure.
    GenericError,
    /// An unknown command, or any command but `qmp_capabilities` before negotiation.
    CommandNotFound,
    /// A named device or RAM block does not exist.
    DeviceNotFound,
}

impl ErrorClass {
    /// The class's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
        }
    }
}

/// A command's failure as QMP reports it: `{"error": {"class": ..., "desc": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    /// The class.
    pub class: ErrorClass,
    /// What went wrong, for a human.
    pub desc: String,
}

impl QmpError {
    /// A `GenericError`.
    pub fn generic(desc: impl Into<String>) -> QmpError {
        QmpError {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// An error of `class`.
    pub fn new(class: ErrorClass, desc: impl Into<String>) -> QmpError {
        QmpError {
            class,
            desc: desc.into(),
        }
    }
}

/// The greeting sent to each client on connection, in QEMU's schema; the version is the
/// VMM's own (`vmm` crate), the package string says what answers.
pub fn greeting() -> Value {
    json!({"QMP": {"version": version(), "capabilities": []}})
}

/// The VMM's version in QEMU's `VersionInfo` schema (also `query-version`'s reply).
pub fn version() -> Value {
    let num = |s: &str| s.parse::<u64>().unwrap_or(0);
    json!({
        "qemu": {
            "major": num(env!("CARGO_PKG_VERSION_MAJOR")),
            "minor": num(env!("CARGO_PKG_VERSION_MINOR")),
            "micro": num(env!("CARGO_PKG_VERSION_PATCH")),
        },
        "package": concat!("rcu-vmm ", env!("CARGO_PKG_VERSION"), " (not QEMU)"),
    })
}

/// An event with QEMU's `timestamp` (wall-clock time, as QEMU's is), and `data` if any.
pub fn event(name: &str, data: Option<Value>) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut v = json!({"event": name,
        "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()}});
    if let Some(d) = data {
        v["data"] = d;
    }
    v
}

/// The reply line for a result, with the request's `id` if it had one.
pub fn reply(result: Result<Value, QmpError>, id: Option<Value>) -> Value {
    let mut v = match result {
        Ok(r) => json!({ "return": r }),
        Err(e) => json!({"error": {"class": e.class.as_str(), "desc": e.desc}}),
    };
    if let Some(id) = id {
        v["id"] = id;
    }
    v
}

/// `query-commands`'s reply.
pub fn command_list() -> Value {
    Value::Array(COMMAND_NAMES.iter().map(|n| json!({ "name": n })).collect())
}

impl Command {
    /// The command `name` with the arguments `args` (a JSON object), checked as the VMM
    /// checks a request: an unknown name is QMP's `CommandNotFound`, bad arguments a
    /// `GenericError` that names the problem.
    pub fn from_parts(name: &str, args: Value) -> Result<Command, QmpError> {
        if !COMMAND_NAMES.contains(&name) {
            return Err(QmpError::new(
                ErrorClass::CommandNotFound,
                format!("The command {name} has not been found"),
            ));
        }
        Command::deserialize(json!({"execute": name, "arguments": args}))
            .map_err(|e| QmpError::generic(format!("invalid arguments for '{name}': {e}")))
    }

    /// The request line for this command (JSON and a newline), with `id` if given.
    pub fn request_line(&self, id: Option<Value>) -> Vec<u8> {
        // Cannot fail: every field is a string, a number or a list of strings.
        let mut req = serde_json::to_value(self).expect("a Command serializes to JSON");
        if let Some(id) = id {
            req["id"] = id;
        }
        let mut v = req.to_string().into_bytes();
        v.push(b'\n');
        v
    }
}

/// Where the first request in `buf` ends (the index just past it), or `None` while it is
/// incomplete. As in QEMU, requests are JSON objects and need no newline between them
/// (QEMU's Python library sends none): an object or array ends at its closing bracket.
/// Anything else (a blank line, a bare value, garbage) runs to the end of its line, and so
/// does an object whose text up to a newline can no longer become valid JSON, so that it
/// gets its error at once instead of waiting for a closing bracket.
pub fn next_request(buf: &[u8]) -> Option<usize> {
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace() || *b == b'\n')?;
    if buf[start] != b'{' && buf[start] != b'[' {
        return buf[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|n| start + n + 1);
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, &b) in buf.iter().enumerate().skip(start) {
        if b == b'\n' {
            let so_far = serde_json::from_slice::<Value>(&buf[start..=i]);
            if so_far.is_err_and(|e| !e.is_eof()) {
                return Some(i + 1);
            }
        }
        if in_str {
            match b {
                _ if esc => esc = false,
                b'\\' => esc = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// One client's protocol state.
#[derive(Debug, Default, Clone)]
pub struct Session {
    negotiated: bool,
}

/// What a request line comes to.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A blank line: nothing to answer.
    Nothing,
    /// Answered by the protocol itself (an error, the negotiation, `query-commands`, ...).
    Reply(Value),
    /// A command for the VMM to run; its reply carries `id`.
    Run {
        /// The command.
        command: Command,
        /// The request's `id`, echoed in the reply.
        id: Option<Value>,
    },
}

impl Session {
    /// A session in capabilities-negotiation mode, as every client's starts.
    pub fn new() -> Session {
        Session::default()
    }

    /// A session past the negotiation (for callers that run commands directly, such as the
    /// fuzz target).
    pub fn negotiated() -> Session {
        Session { negotiated: true }
    }

    /// Whether `qmp_capabilities` has succeeded (events are sent only then).
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }

    /// Parses one request line and handles what the protocol itself answers.
    pub fn step(&mut self, line: &[u8]) -> Step {
        let (name, args, id) = match envelope(line) {
            Ok(Some(request)) => request,
            Ok(None) => return Step::Nothing,
            Err(reply) => return Step::Reply(reply),
        };
        let answer = |r| Step::Reply(reply(r, id.clone()));
        if !self.negotiated && name != "qmp_capabilities" {
            return answer(Err(QmpError::new(
                ErrorClass::CommandNotFound,
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            )));
        }
        let command = match Command::from_parts(&name, Value::Object(args)) {
            Ok(c) => c,
            Err(e) => return answer(Err(e)),
        };
        match command {
            Command::QmpCapabilities { enable } => {
                if self.negotiated {
                    return answer(Err(QmpError::new(
                        ErrorClass::CommandNotFound,
                        "Capabilities negotiation is already complete, command ignored",
                    )));
                }
                if let Some(cap) = enable.first() {
                    return answer(Err(QmpError::generic(format!(
                        "Capability '{cap}' not available (this VMM offers none)"
                    ))));
                }
                self.negotiated = true;
                answer(Ok(json!({})))
            }
            Command::QueryCommands {} => answer(Ok(command_list())),
            Command::QueryVersion {} => answer(Ok(version())),
            command => Step::Run { command, id },
        }
    }
}

/// A request's parts: the command's name, its arguments and the request's id.
type Parts = (String, Map<String, Value>, Option<Value>);

/// A request's envelope, `{"execute": NAME, "arguments": {...}, "id": ...}`: its parts;
/// `None` for a blank line; the error reply for anything else.
fn envelope(line: &[u8]) -> Result<Option<Parts>, Value> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let req: Value = serde_json::from_str(text)
        .map_err(|e| reply(Err(QmpError::generic(format!("malformed JSON: {e}"))), None))?;
    let Value::Object(mut req) = req else {
        return Err(reply(
            Err(QmpError::generic("QMP input must be a JSON object")),
            None,
        ));
    };
    let id = req.remove("id");
    let fail = |msg: String| Err(reply(Err(QmpError::generic(msg)), id.clone()));
    let name = match req.remove("execute") {
        Some(Value::String(s)) => s,
        Some(_) => return fail("QMP input member 'execute' must be a string".into()),
        None => {
            return fail(
                "QMP input lacks member 'execute'; expected {\"execute\": COMMAND, \
                 \"arguments\": {...}}"
                    .into(),
            )
        }
    };
    let args = match req.remove("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => return fail("QMP input member 'arguments' must be an object".into()),
    };
    if let Some(other) = req.keys().next() {
        return fail(format!("QMP input member '{other}' is unexpected"));
    }
    Ok(Some((name, args, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_of(s: &mut Session, line: &str) -> Value {
        match s.step(line.as_bytes()) {
            Step::Reply(v) => v,
            other => panic!("{line}: expected a protocol reply, got {other:?}"),
        }
    }

    fn class(v: &Value) -> &str {
        v["error"]["class"].as_str().unwrap_or("(none)")
    }

    #[test]
    fn requests_are_split_at_their_closing_bracket_or_a_newline() {
        let split = |mut b: &[u8]| {
            let mut v = Vec::new();
            while let Some(n) = next_request(b) {
                v.push(String::from_utf8_lossy(&b[..n]).trim().to_string());
                b = &b[n..];
            }
            (v, String::from_utf8_lossy(b).to_string())
        };
        // Back to back with no newline, as qemu.qmp sends them; brackets inside strings.
        let (v, rest) = split(br#"{"execute":"a","id":"}{["}{"execute":"b"} {"execute":"#);
        assert_eq!(v, [r#"{"execute":"a","id":"}{["}"#, r#"{"execute":"b"}"#]);
        assert_eq!(rest, r#" {"execute":"#);
        // An escaped quote does not end a string.
        let (v, _) = split(br#"{"id":"\"}"}x"#);
        assert_eq!(v, [r#"{"id":"\"}"}"#]);
        // Across lines: waits while the object can still become valid JSON.
        let (v, rest) = split(b"{\"execute\":\n \"quit\"\n");
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(rest, "{\"execute\":\n \"quit\"\n");
        let (v, _) = split(b"{\"execute\":\n \"quit\"}");
        assert_eq!(v, ["{\"execute\":\n \"quit\"}"]);
        // Garbage, bare values and blank lines: to the end of the line; an object that
        // cannot become valid JSON: to the newline after the error.
        let (v, rest) = split(b"this is not json\n42\n\n{oops\n{\"a\": tru\n{\"a\"");
        assert_eq!(v, ["this is not json", "42", "", "{oops", "{\"a\": tru"]);
        assert_eq!(rest, "{\"a\"");
        assert_eq!(next_request(b"   "), None);
        assert_eq!(next_request(b""), None);
        // Every piece is answered.
        let mut s = Session::negotiated();
        for piece in ["this is not json", "{oops", "{\"a\": tru", "42"] {
            let r = reply_of(&mut s, piece);
            assert_eq!(class(&r), "GenericError", "{piece}: {r}");
        }
    }

    #[test]
    fn the_greeting_has_qemus_schema() {
        let g = greeting();
        let v = &g["QMP"]["version"];
        assert!(v["qemu"]["major"].is_u64(), "{g}");
        assert!(v["qemu"]["minor"].is_u64(), "{g}");
        assert!(v["qemu"]["micro"].is_u64(), "{g}");
        assert!(v["package"].as_str().unwrap().contains("rcu-vmm"), "{g}");
        assert_eq!(g["QMP"]["capabilities"], json!([]));
    }

    #[test]
    fn only_qmp_capabilities_before_negotiation_then_everything_but_it() {
        let mut s = Session::new();
        assert!(!s.is_negotiated());
        for line in [
            r#"{"execute": "query-status", "id": 1}"#,
            r#"{"execute": "quit"}"#,
            r#"{"execute": "no-such-command", "id": "x"}"#,
        ] {
            let r = reply_of(&mut s, line);
            assert_eq!(class(&r), "CommandNotFound", "{line}: {r}");
            assert!(r["error"]["desc"]
                .as_str()
                .unwrap()
                .contains("qmp_capabilities"));
        }
        assert!(!s.is_negotiated());
        // A capability that is not offered: refused, still negotiating.
        let r = reply_of(
            &mut s,
            r#"{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}"#,
        );
        assert_eq!(class(&r), "GenericError", "{r}");
        assert!(!s.is_negotiated());
        let r = reply_of(&mut s, r#"{"execute": "qmp_capabilities", "id": 5}"#);
        assert_eq!(r, json!({"return": {}, "id": 5}));
        assert!(s.is_negotiated());
        assert_eq!(
            s.step(br#"{"execute": "query-status", "id": 1}"#),
            Step::Run {
                command: Command::QueryStatus {},
                id: Some(json!(1))
            }
        );
        let r = reply_of(&mut s, r#"{"execute": "qmp_capabilities"}"#);
        assert_eq!(class(&r), "CommandNotFound", "{r}");
        assert!(s.is_negotiated());
    }

    #[test]
    fn every_reply_echoes_the_id_of_any_type() {
        let mut s = Session::negotiated();
        for id in [json!(7), json!("abc"), json!({"a": [1]}), json!(null)] {
            for req in [
                json!({"execute": "no-such", "id": id}),
                json!({"execute": 3, "id": id}),
                json!({"arguments": {}, "id": id}),
                json!({"execute": "ram-add", "arguments": [], "id": id}),
                json!({"execute": "ram-add", "arguments": {"name": 1}, "id": id}),
                json!({"execute": "query-commands", "id": id}),
                json!({"execute": "query-status", "id": id, "extra": 1}),
            ] {
                let r = reply_of(&mut s, &req.to_string());
                assert_eq!(r["id"], id, "{req} -> {r}");
                assert!(r.get("return").is_some() != r.get("error").is_some());
            }
            match s.step(json!({"execute": "pause", "id": id}).to_string().as_bytes()) {
                Step::Run { id: got, .. } => assert_eq!(got, Some(id.clone())),
                other => panic!("{other:?}"),
            }
        }
        // No id, none in the reply.
        let r = reply_of(&mut s, r#"{"execute": "nope"}"#);
        assert!(r.get("id").is_none(), "{r}");
    }

    #[test]
    fn errors_have_qmp_classes_and_say_what_is_wrong() {
        let mut s = Session::negotiated();
        for (line, want_class, want) in [
            ("this is not json", "GenericError", "malformed JSON"),
            ("[1, 2]", "GenericError", "must be a JSON object"),
            (r#"{"execute": 42}"#, "GenericError", "must be a string"),
            (
                r#"{"arguments": {}}"#,
                "GenericError",
                "lacks member 'execute'",
            ),
            (
                r#"{"execute": "ram-add", "arguments": []}"#,
                "GenericError",
                "must be an object",
            ),
            (
                r#"{"execute": "x", "bogus": 1}"#,
                "GenericError",
                "'bogus' is unexpected",
            ),
            (
                r#"{"execute": "no-such-command"}"#,
                "CommandNotFound",
                "The command no-such-command has not been found",
            ),
            (
                r#"{"execute": "ram-add", "arguments": {"name": 1, "gpa": 0, "size": 1}}"#,
                "GenericError",
                "expected a string",
            ),
            (
                r#"{"execute": "ram-add", "arguments": {"name": "x", "gpa": "far", "size": 1}}"#,
                "GenericError",
                "expected a non-negative integer or a \"0x...\" hex string",
            ),
            (
                r#"{"execute": "ram-add", "arguments": {"name": "x", "gpa": -1, "size": 1}}"#,
                "GenericError",
                "non-negative integer",
            ),
            (
                r#"{"execute": "ram-add", "arguments": {"name": "x", "size": 1}}"#,
                "GenericError",
                "missing field `gpa`",
            ),
            (
                r#"{"execute": "ram-remove", "arguments": {"name": "x", "force": true}}"#,
                "GenericError",
                "unknown field `force`",
            ),
            (
                r#"{"execute": "query-status", "arguments": {"verbose": true}}"#,
                "GenericError",
                "unknown field `verbose`",
            ),
        ] {
            let r = reply_of(&mut s, line);
            assert_eq!(class(&r), want_class, "{line} -> {r}");
            let desc = r["error"]["desc"].as_str().unwrap();
            assert!(desc.contains(want), "{line} -> {desc}");
        }
        assert_eq!(s.step(b"   \r"), Step::Nothing);
    }

    #[test]
    fn arguments_parse_into_the_command_enum() {
        let mut s = Session::negotiated();
        let run = |s: &mut Session, v: Value| match s.step(v.to_string().as_bytes()) {
            Step::Run { command, .. } => command,
            other => panic!("{v}: {other:?}"),
        };
        assert_eq!(
            run(
                &mut s,
                json!({"execute": "ram-add", "arguments":
                    {"name": "hp", "gpa": "0xe0000000", "size": 65536}})
            ),
            Command::RamAdd {
                name: "hp".into(),
                gpa: 0xe000_0000,
                size: 65536,
                pattern: None
            }
        );
        assert_eq!(
            run(
                &mut s,
                json!({"execute": "ram-add", "arguments":
                    {"name": "hp", "gpa": 1, "size": 2, "pattern": u64::MAX}})
            ),
            Command::RamAdd {
                name: "hp".into(),
                gpa: 1,
                size: 2,
                pattern: Some(u64::MAX)
            }
        );
        assert_eq!(
            run(
                &mut s,
                json!({"execute": "device-remove", "arguments": {"port": "0x530"}})
            ),
            Command::DeviceRemove { port: 0x530 }
        );
        assert_eq!(
            run(&mut s, json!({"execute": "cont", "arguments": null})),
            Command::Cont {}
        );
    }

    #[test]
    fn query_commands_lists_every_command_and_each_one_parses() {
        let mut s = Session::negotiated();
        let r = reply_of(&mut s, r#"{"execute": "query-commands", "id": 1}"#);
        let names: Vec<&str> = r["return"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, COMMAND_NAMES);
        // Every listed name is a variant of the enum: with no arguments, it is either
        // accepted or refused for its arguments, never as unknown.
        for name in COMMAND_NAMES {
            let r = Command::deserialize(json!({"execute": name, "arguments": {}}));
            if let Err(e) = r {
                assert!(e.to_string().contains("missing field"), "{name}: {e}");
            }
        }
    }

    #[test]
    fn events_carry_qemus_timestamp() {
        let e = event("STOP", None);
        assert_eq!(e["event"], "STOP");
        assert!(e["timestamp"]["seconds"].as_u64().unwrap() > 1_600_000_000);
        assert!(e["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
        assert!(e.get("data").is_none());
        let e = event("SHUTDOWN", Some(json!({"reason": "x"})));
        assert_eq!(e["data"]["reason"], "x");
    }

    #[test]
    fn request_lines_are_one_json_object_and_a_newline() {
        let c = Command::RamRemove { name: "a".into() };
        let l = c.request_line(Some(json!(3)));
        assert_eq!(l.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(
            v,
            json!({"execute": "ram-remove", "arguments": {"name": "a"}, "id": 3})
        );
    }

    /// What a client builds, the VMM parses back to the same command: every command of the
    /// list, through `from_parts`, `request_line` and the server's `Session::step`.
    #[test]
    fn every_command_survives_the_round_trip_from_client_to_server() {
        let args = |name: &str| match name {
            "qmp_capabilities" => json!({"enable": []}),
            "ram-add" => json!({"name": "r", "gpa": "0xe0000000", "size": 65536, "pattern": 7}),
            "ram-remove" => json!({"name": "r"}),
            "device-add" => json!({"port": 0x700, "value": 5}),
            "device-remove" => json!({"port": 0x700}),
            _ => json!({}),
        };
        for &name in COMMAND_NAMES {
            let c =
                Command::from_parts(name, args(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let line = c.request_line(Some(json!("x")));
            let mut s = Session::negotiated();
            match s.step(&line) {
                Step::Run { command, id } => {
                    assert_eq!(command, c, "{name}");
                    assert_eq!(id, Some(json!("x")));
                }
                // The protocol's own commands are answered, not run.
                Step::Reply(r) => assert!(
                    ["qmp_capabilities", "query-commands", "query-version"].contains(&name),
                    "{name}: {r}"
                ),
                Step::Nothing => panic!("{name}: nothing"),
            }
        }
        // A ram-add without a pattern leaves it out of the request (the VMM's default).
        let c = Command::from_parts("ram-add", json!({"name": "r", "gpa": 1, "size": 2})).unwrap();
        assert!(!String::from_utf8(c.request_line(None))
            .unwrap()
            .contains("pattern"));
    }

    #[test]
    fn a_client_learns_of_unknown_commands_and_bad_arguments_before_sending() {
        let e = Command::from_parts("query-nothing", json!({})).unwrap_err();
        assert_eq!(e.class, ErrorClass::CommandNotFound);
        let e = Command::from_parts("ram-add", json!({"name": "r"})).unwrap_err();
        assert_eq!(e.class, ErrorClass::GenericError);
        assert!(e.desc.contains("gpa"), "{}", e.desc);
        let e = Command::from_parts("quit", json!({"now": true})).unwrap_err();
        assert!(e.desc.contains("now"), "{}", e.desc);
    }
}
