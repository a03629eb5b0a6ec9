//! A driver for the call core alone, on a virtual clock: a two-realm
//! configuration with one trunk, a media backend that anchors every stream
//! on the next ports at once, and calls placed the way SIPp's built-in
//! `uac` and `uas` place them. The allocation tests (`sbc/tests/alloc.rs`)
//! and the held-call benchmark (`benches/benches/held.rs`) drive the core
//! through it; the daemon never uses it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::b2bua::{Core, ListenerInfo, SequentialIds};
use crate::config::Config;
use crate::media::command::{LocalEndpoint, MediaCommand, MediaEvent};
use crate::sip::{HeaderName, Message};
use crate::transport::{Inbound, ListenerId, Received, Transport};

/// Two realms and one trunk, as the signaling bench runs the daemon; the
/// caller's network belongs to the outside realm, so its thousand calls are
/// trusted as the bench's UAC trunks are (an untrusted source may hold 16).
pub const CALLS_CONFIG: &str = r#"
[limits]
max_calls = 10000
[[realm]]
name = "outside"
listen = [{ transport = "udp", address = "192.0.2.1:5060" }]
media = { address = "192.0.2.1" }
networks = ["203.0.113.0/24"]
[[realm]]
name = "inside"
listen = [{ transport = "udp", address = "198.51.100.1:5060" }]
media = { address = "198.51.100.1" }
[[trunk]]
name = "pbx"
realm = "inside"
address = "198.51.100.3:5060"
options_interval_secs = 0
[[route]]
name = "to-pbx"
match = { source_realm = "outside" }
targets = ["pbx"]
"#;

pub const OUTSIDE: &str = "192.0.2.1:5060";
pub const INSIDE: &str = "198.51.100.1:5060";
pub const CALLER: &str = "203.0.113.7:5061";
pub const PBX: &str = "198.51.100.3:5060";

/// A test address, parsed.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// The core on a virtual clock, with a media backend that anchors every
/// stream on the next ports; output it is not asked for is dropped.
pub struct Sim {
    /// The core driven.
    pub core: Core,
    /// The virtual clock.
    pub now: Instant,
    next_port: u16,
    /// The records a replicating core wrote ([`Sim::replicating`]), in
    /// order.
    pub records: Vec<Box<crate::b2bua::replica::CallRecord>>,
}

impl Sim {
    /// This core with call replication on: its records collect in
    /// [`Sim::records`].
    pub fn replicating(mut self) -> Sim {
        self.core = self.core.with_replication(true);
        self
    }

    /// The core on [`CALLS_CONFIG`].
    #[allow(clippy::new_without_default)]
    pub fn new() -> Sim {
        Sim::with(CALLS_CONFIG)
    }

    /// The core on `config` (whose listeners are [`OUTSIDE`] and [`INSIDE`]).
    pub fn with(config: &str) -> Sim {
        let config = Config::from_str_named(config, "calls.toml").expect("valid config");
        let listener = |realm: &str, at: &str| ListenerInfo {
            realm: realm.into(),
            transport: Transport::Udp,
            addr: addr(at),
            advertise: None,
        };
        let listeners = vec![listener("outside", OUTSIDE), listener("inside", INSIDE)];
        let core = Core::new(
            &config,
            listeners,
            |_, _| None,
            Box::new(SequentialIds::default()),
        );
        Sim {
            core,
            // The virtual clock's origin; it only moves by `advance`.
            #[allow(clippy::disallowed_methods)]
            now: Instant::now(),
            next_port: 20000,
            records: Vec::new(),
        }
    }

    /// Delivers `text` from `from` on listener 0 (outside) or 1 (inside) and
    /// returns what the core sent to `from` and to `other`.
    pub fn deliver(
        &mut self,
        listener: usize,
        from: &str,
        text: &str,
    ) -> Vec<(SocketAddr, Message)> {
        let mut msg = Message::parse(text.as_bytes()).expect("test message parses");
        if msg.is_request() {
            crate::transport::nat::stamp_received(&mut msg, addr(from));
        }
        let inbound = Inbound {
            listener: ListenerId(listener),
            transport: Transport::Udp,
            local: addr([OUTSIDE, INSIDE][listener]),
            remote: addr(from),
            connection: None,
            received: Received::Message(msg),
            arrived: self.now,
        };
        self.core.handle_inbound(self.now, inbound);
        self.settle()
    }

    /// Drains the core's output, answering its media allocations.
    pub fn settle(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut sent = Vec::new();
        loop {
            let mut busy = false;
            while let Some(out) = self.core.poll_transmit() {
                busy = true;
                sent.push((out.to, Message::parse(&out.bytes).expect("core sends SIP")));
            }
            while let Some(event) = self.core.poll_event() {
                if let crate::b2bua::CoreEvent::Replicate(record) = event {
                    self.records.push(record);
                }
            }
            let mut allocated = Vec::new();
            while let Some(command) = self.core.poll_media() {
                busy = true;
                if let MediaCommand::Allocate { stream, legs } = command {
                    let mut endpoint = |ip: IpAddr| {
                        let port = self.next_port;
                        self.next_port = self.next_port.wrapping_add(2).max(20000);
                        LocalEndpoint {
                            rtp: SocketAddr::new(ip, port),
                            rtcp: Some(SocketAddr::new(ip, port + 1)),
                        }
                    };
                    allocated.push(MediaEvent::Allocated {
                        stream,
                        legs: [endpoint(legs[0].local_ip), endpoint(legs[1].local_ip)],
                    });
                } else if let MediaCommand::Restore { stream, at, .. } = command {
                    allocated.push(MediaEvent::Allocated { stream, legs: *at });
                }
            }
            for event in allocated {
                self.core.handle_media_event(self.now, event);
            }
            if !busy {
                return sent;
            }
        }
    }

    /// Moves the virtual clock on by `by`, firing every timer due.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.core.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            drop(self.settle());
        }
        self.now = until;
    }

    /// One call as SIPp's built-in `uac` and `uas` scenarios place it
    /// (INVITE with SDP, 180, 200 with SDP, ACK), up to the confirmed state.
    pub fn call(&mut self, n: u32) -> Held {
        let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 203.0.113.7\r\ns=-\r\n\
                   c=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n\
                   a=rtpmap:0 PCMU/8000\r\n";
        let from = format!("sipp <sip:sipp@{CALLER}>;tag=4242SIPpTag00{n}");
        let call_id = format!("{n}-4242@203.0.113.7");
        let invite = format!(
            "INVITE sip:service@{OUTSIDE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-4242-{n}-0\r\n\
             From: {from}\r\nTo: service <sip:service@{OUTSIDE}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@{CALLER}\r\n\
             Max-Forwards: 70\r\nSubject: Performance Test\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let sent = self.deliver(0, CALLER, &invite);
        let b_invite = pick(sent, PBX, "INVITE");
        let header = |name: HeaderName| {
            String::from_utf8_lossy(b_invite.header(name).expect("header")).into_owned()
        };
        let (via, b_from, b_to, b_call_id) = (
            header(HeaderName::Via),
            header(HeaderName::From),
            header(HeaderName::To),
            header(HeaderName::CallId),
        );
        let response = |status: &str, body: &str| {
            let ct = if body.is_empty() {
                ""
            } else {
                "Content-Type: application/sdp\r\n"
            };
            format!(
                "SIP/2.0 {status}\r\nVia: {via}\r\nFrom: {b_from}\r\n\
                 To: {b_to};tag=4343SIPpTag01{n}\r\nCall-ID: {b_call_id}\r\nCSeq: 1 INVITE\r\n\
                 Contact: <sip:{PBX};transport=UDP>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        drop(self.deliver(1, PBX, &response("180 Ringing", "")));
        let sdp_b = sdp.replace("203.0.113.7", "198.51.100.3");
        let sent = self.deliver(1, PBX, &response("200 OK", &sdp_b));
        let ok = pick(sent, CALLER, "200");
        let to = String::from_utf8_lossy(ok.header(HeaderName::To).expect("To")).into_owned();
        let ack = format!(
            "ACK sip:sbc@{OUTSIDE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-4242-{n}-5\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
             Contact: sip:sipp@{CALLER}\r\nMax-Forwards: 70\r\n\
             Subject: Performance Test\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = self.deliver(0, CALLER, &ack);
        drop(pick(sent, PBX, "ACK"));
        Held {
            n,
            from,
            to,
            call_id,
        }
    }

    /// The caller of `held` sends an in-dialog `method` (CSeq `cseq`, with
    /// `sdp` as its body if any); returns what the core sent.
    pub fn caller_request(
        &mut self,
        held: &Held,
        method: &str,
        cseq: u32,
        sdp: Option<&str>,
    ) -> Vec<(SocketAddr, Message)> {
        let n = held.n;
        let body = sdp.unwrap_or("");
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let request = format!(
            "{method} sip:sbc@{OUTSIDE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-4242-{n}-{method}-{cseq}\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: sip:sipp@{CALLER}\r\nMax-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            held.from,
            held.to,
            held.call_id,
            body.len()
        );
        self.deliver(0, CALLER, &request)
    }

    /// The callee answers `request` (an in-dialog request the core relayed
    /// to it) with `status` and `sdp`; returns what the core sent.
    pub fn callee_answers(
        &mut self,
        request: &Message,
        status: &str,
        sdp: Option<&str>,
    ) -> Vec<(SocketAddr, Message)> {
        let header = |name: HeaderName| {
            String::from_utf8_lossy(request.header(name).expect("header")).into_owned()
        };
        let body = sdp.unwrap_or("");
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let response = format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
             Contact: <sip:{PBX};transport=UDP>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            header(HeaderName::Via),
            header(HeaderName::From),
            header(HeaderName::To),
            header(HeaderName::CallId),
            header(HeaderName::CSeq),
            body.len()
        );
        self.deliver(1, PBX, &response)
    }
}

/// A confirmed call [`Sim::call`] placed: its caller-side dialog.
#[derive(Debug, Clone)]
pub struct Held {
    /// The call's number.
    pub n: u32,
    /// The caller's From.
    pub from: String,
    /// The caller's To, with the SBC's tag.
    pub to: String,
    /// The caller's Call-ID.
    pub call_id: String,
}

/// The one message of `what` (a method or a status) sent to `to`.
pub fn pick(sent: Vec<(SocketAddr, Message)>, to: &str, what: &str) -> Message {
    sent.into_iter()
        .find(|(at, m)| {
            *at == addr(to)
                && (m.method_bytes() == Some(what.as_bytes())
                    || m.status().is_some_and(|s| s.to_string() == what))
        })
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("the core sent no {what} to {to}"))
}

impl Sim {
    /// Phone `n` registers from its own port (challenge-free registrar);
    /// the registrar confirms for 3600 s.
    pub fn register(&mut self, n: u32) {
        let phone = format!("203.0.113.7:{}", 10_000 + n);
        let register = format!(
            "REGISTER sip:pbx.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-reg-{n};rport\r\n\
             From: <sip:{n}@pbx.example>;tag=reg{n}\r\nTo: <sip:{n}@pbx.example>\r\n\
             Call-ID: reg-{n}@192.168.1.20\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:{n}@192.168.1.20:5062>;expires=3600\r\n\
             Max-Forwards: 70\r\nUser-Agent: LabPhone 1.0\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = self.deliver(0, &phone, &register);
        let relayed = pick(sent, PBX, "REGISTER");
        let header = |name: HeaderName| {
            String::from_utf8_lossy(relayed.header(name).expect("header")).into_owned()
        };
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=r{n}\r\nCall-ID: {}\r\n\
             CSeq: {}\r\nContact: {};expires=3600\r\nContent-Length: 0\r\n\r\n",
            header(HeaderName::Via),
            header(HeaderName::From),
            header(HeaderName::To),
            header(HeaderName::CallId),
            header(HeaderName::CSeq),
            header(HeaderName::Contact),
        );
        let sent = self.deliver(1, PBX, &ok);
        drop(pick(sent, &phone, "200"));
    }
}
