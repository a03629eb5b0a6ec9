//! `sbc inspect FILE...`: what the SBC makes of captured SIP messages.
//!
//! For each file (one raw message, as captured from a datagram) it prints the
//! parse verdict, the key fields, and what the SBC would do with it as a
//! server: `accept`, `answer 400 Bad Request (Content-Length exceeds body)`,
//! `drop response (...)`. `--json` prints one JSON object per file, one per
//! line. The exit status is 0 when every file parsed, 1 when any did not, 2
//! when a file could not be read or the arguments are wrong.
//!
//! Files are read from disk only; nothing is sent anywhere.

use std::io::Write;

use serde_json::{Value, json};

use crate::sdp::Sdp;
use crate::sip::{self, Message, ServerPolicy, Verdict};

/// Command-line usage of the inspect subcommand.
pub const USAGE: &str = "usage: sbc inspect [--json] FILE...";

/// Runs `sbc inspect` with its arguments (after `inspect`); returns the exit
/// status. Output goes to `out`, problems reading files to stderr.
pub fn run(args: &[String], out: &mut dyn Write) -> std::io::Result<i32> {
    let json = args.iter().any(|a| a == "--json");
    let files: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    if files.is_empty() || files.iter().any(|f| f.starts_with("--")) {
        eprintln!("{USAGE}");
        return Ok(2);
    }
    let policy = ServerPolicy::default();
    let mut status = 0;
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                status = 2;
                continue;
            }
        };
        let report = inspect(&bytes, &policy);
        if !report.parsed {
            status = status.max(1);
        }
        if json {
            let mut value = report.json;
            value["file"] = json!(file);
            writeln!(out, "{value}")?;
        } else {
            writeln!(out, "{file}: {}", report.verdict)?;
            for line in &report.lines {
                writeln!(out, "  {line}")?;
            }
        }
    }
    Ok(status)
}

/// What `inspect` found in one message.
#[derive(Debug)]
pub struct Report {
    /// The message parsed.
    pub parsed: bool,
    /// What a server does with it.
    pub verdict: Verdict,
    /// Human-readable key fields, one per line.
    pub lines: Vec<String>,
    /// The same as a JSON object.
    pub json: Value,
}

/// Inspects one captured datagram.
pub fn inspect(bytes: &[u8], policy: &ServerPolicy) -> Report {
    let msg = match Message::parse(bytes) {
        Ok(msg) => msg,
        Err(error) => {
            let verdict = error.response();
            let json = json!({
                "parsed": false,
                "error": error.kind.to_string(),
                "verdict": verdict_json(&verdict),
            });
            return Report {
                parsed: false,
                lines: vec![format!("parse error: {}", error.kind)],
                verdict,
                json,
            };
        }
    };
    let verdict = admission(&msg, policy);
    let fields = key_fields(&msg);
    let lines = fields
        .iter()
        .map(|(name, value)| format!("{name}: {}", plain(value)))
        .collect();
    let mut json = json!({ "parsed": true, "verdict": verdict_json(&verdict) });
    for (name, value) in fields {
        json[name] = value;
    }
    Report {
        parsed: true,
        verdict,
        lines,
        json,
    }
}

/// The checks the daemon makes before it routes a request: the server
/// checks of [`sip::check`] (the same function the call core runs), then
/// the SDP offer or answer the call core would anchor (a body that does not
/// parse fails the call with the SDP error's status).
fn admission(msg: &Message, policy: &ServerPolicy) -> Verdict {
    let verdict = sip::check(msg, policy);
    let reads_sdp = matches!(
        msg.method(),
        Some(sip::Method::Invite | sip::Method::Update | sip::Method::Prack)
    );
    if verdict != Verdict::Accept || !reads_sdp || msg.body().is_empty() {
        return verdict;
    }
    match Sdp::parse(msg.body()) {
        Ok(_) => verdict,
        Err(e) => Verdict::Reject(sip::Rejection::new(e.status_code(), format!("SDP: {e}"))),
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn key_fields(msg: &Message) -> Vec<(&'static str, Value)> {
    let mut fields = Vec::new();
    match (msg.method_bytes(), msg.status()) {
        (Some(method), _) => {
            fields.push(("request", json!(text(method))));
            fields.push((
                "request_uri",
                json!(text(msg.request_uri_bytes().unwrap_or_default())),
            ));
        }
        (None, Some(code)) => {
            fields.push(("response", json!(code)));
            fields.push(("reason", json!(text(msg.reason().unwrap_or_default()))));
        }
        (None, None) => {}
    }
    if let Some(call_id) = msg.call_id() {
        fields.push(("call_id", json!(text(call_id))));
    }
    if let Some(cseq) = msg.cseq() {
        fields.push(("cseq", json!(format!("{} {}", cseq.seq, cseq.method))));
    }
    if let Some(from) = msg.from() {
        fields.push(("from", json!(text(from.uri().as_bytes()))));
        fields.push(("from_tag", json!(from.tag())));
    }
    if let Some(to) = msg.to() {
        fields.push(("to", json!(text(to.uri().as_bytes()))));
        fields.push(("to_tag", json!(to.tag())));
    }
    let vias: Vec<Value> = msg
        .vias()
        .filter_map(Result::ok)
        .map(|via| {
            json!({
                "transport": via.transport(),
                "sent_by": text(via.sent_by()),
                "branch": via.branch(),
            })
        })
        .collect();
    fields.push(("vias", Value::Array(vias)));
    if let Some(max_forwards) = msg.max_forwards() {
        fields.push(("max_forwards", json!(max_forwards)));
    }
    let contacts: Vec<Value> = msg
        .contacts()
        .filter_map(Result::ok)
        .map(|c| match c {
            sip::header::Contact::Star => json!("*"),
            sip::header::Contact::Addr(addr) => json!(text(addr.uri().as_bytes())),
        })
        .collect();
    if !contacts.is_empty() {
        fields.push(("contacts", Value::Array(contacts)));
    }
    if msg.method() == Some(sip::Method::Register) {
        // What an access realm would bind (see `sbc::b2bua::access`).
        let (contact, contact_expires) = match msg.contacts().next() {
            Some(Ok(sip::header::Contact::Addr(addr))) => {
                (Some(text(addr.uri().as_bytes())), addr.expires())
            }
            Some(Ok(sip::header::Contact::Star)) => (Some("*".to_owned()), None),
            _ => (None, None),
        };
        let expires = contact_expires.or(msg.expires());
        fields.push((
            "binding",
            json!({
                "aor": msg.to().map(|to| text(to.uri().as_bytes())),
                "contact": contact,
                "expires": if contact.is_none() { None } else { Some(expires.unwrap_or(3600)) },
            }),
        ));
    }
    let body = msg.body();
    fields.push(("body_bytes", json!(body.len())));
    if let Some(content_type) = msg.header(sip::HeaderName::ContentType) {
        fields.push(("content_type", json!(text(content_type))));
    }
    let is_sdp = msg
        .content_type()
        .is_some_and(|ct| ct.is("application", "sdp"));
    if is_sdp && !body.is_empty() {
        let sdp = match Sdp::parse(body) {
            Ok(sdp) => json!({ "ok": true, "media": sdp.media().len() }),
            Err(e) => json!({ "ok": false, "error": e.to_string(), "status": e.status_code() }),
        };
        fields.push(("sdp", sdp));
    }
    fields
}

fn verdict_json(verdict: &Verdict) -> Value {
    match verdict {
        Verdict::Accept => json!({ "action": "accept" }),
        Verdict::Reject(r) => json!({
            "action": "answer",
            "status": r.status,
            "reason": r.reason_phrase(),
            "headers": r.headers.iter().map(|(name, value)| (name.to_string(), json!(value))).collect::<serde_json::Map<_, _>>(),
        }),
        Verdict::Drop(why) => json!({ "action": "drop", "why": why.to_string() }),
    }
}
