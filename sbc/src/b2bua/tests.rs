//! Deterministic simulations of call flows through the core: a virtual clock,
//! a media backend that anchors on a port counter, and peers written as raw
//! SIP. Every test also scans what each side received for the other side's
//! addresses and identifiers.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::media::command::{LocalEndpoint, MediaCommand, MediaEvent};
use crate::sdp::Sdp;
use crate::sip::response::respond;
use crate::transport::{Inbound, ListenerId, Received, Transport};

mod access;
mod dns;
mod protect;
mod replica;
mod sim;

const CONFIG: &str = r#"
[limits]
max_calls = 10
[media]
port_min = 30000
port_max = 30999
[[realm]]
name = "outside"
listen = [{ transport = "udp", address = "192.0.2.1:5060" }]
media = { address = "192.0.2.1" }
[[realm]]
name = "inside"
listen = [{ transport = "udp", address = "198.51.100.1:5060" }]
media = { address = "198.51.100.1" }
[[trunk]]
name = "pbx"
realm = "inside"
address = "198.51.100.3:5060"
[[trunk]]
name = "pbx2"
realm = "inside"
address = "198.51.100.5:5060"
[[route]]
name = "to-pbx"
match = { source_realm = "outside" }
targets = ["pbx", "pbx2"]
failover_on = ["5xx", "timeout", "transport-error"]
"#;

/// The caller: a phone behind NAT, on the outside realm.
const CALLER: &str = "203.0.113.7:5062";
const PBX: &str = "198.51.100.3:5060";
const PBX2: &str = "198.51.100.5:5060";

/// What the caller side knows and the callee side must never see.
const CALLER_SECRETS: &[&str] = &[
    "203.0.113.7",
    "10.9.8.7",
    "caller-call-id",
    "atag1",
    "z9hG4bKcaller",
    "PhoneAgent",
    "o=phone",
];
/// What the callee side knows and the caller must never see.
const CALLEE_SECRETS: &[&str] = &[
    "198.51.100.3",
    "198.51.100.5",
    "203.0.113.50",
    "btag9",
    "PbxServer",
    "pbx-contact",
    "o=pbx",
];

fn invite(sdp: bool) -> String {
    let body = if sdp {
        "v=0\r\no=phone 1 1 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=sendrecv\r\n"
    } else {
        ""
    };
    let ct = if sdp {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!(
        "INVITE sip:+4930555@192.0.2.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.9.8.7:5062;branch=z9hG4bKcaller1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@10.9.8.7>;tag=atag1\r\n\
To: <sip:+4930555@192.0.2.1>\r\n\
Call-ID: caller-call-id@10.9.8.7\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:alice@10.9.8.7:5062>\r\n\
User-Agent: PhoneAgent 3\r\n\
Supported: timer\r\n\
{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const CALLEE_SDP: &str = "v=0\r\no=pbx 7 7 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendrecv\r\n";

struct Lab {
    core: Core,
    now: Instant,
    next_port: u16,
    /// Everything sent so far, by destination.
    sent: Vec<(SocketAddr, Vec<u8>)>,
    media: Vec<MediaCommand>,
    events: Vec<CoreEvent>,
    /// The media backend refuses every allocation (ports exhausted).
    refuse_media: bool,
    /// The media backend answers no allocation (slow): they stay pending.
    hold_media: bool,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

impl Lab {
    fn new(config: &str) -> Lab {
        let config = Config::from_str_named(config, "test.toml").expect("valid config");
        let listeners = vec![
            ListenerInfo {
                realm: "outside".into(),
                transport: Transport::Udp,
                addr: addr("192.0.2.1:5060"),
                advertise: None,
            },
            ListenerInfo {
                realm: "inside".into(),
                transport: Transport::Udp,
                addr: addr("198.51.100.1:5060"),
                advertise: None,
            },
        ];
        Lab {
            core: Core::new(
                &config,
                listeners,
                |_, _| None,
                Box::new(SequentialIds::default()),
            ),
            // The virtual clock's origin; it only moves by `advance`.
            #[allow(clippy::disallowed_methods)]
            now: Instant::now(),
            next_port: 30000,
            sent: Vec::new(),
            media: Vec::new(),
            events: Vec::new(),
            refuse_media: false,
            hold_media: false,
        }
    }

    fn deliver(&mut self, listener: usize, from: &str, bytes: &[u8]) {
        self.deliver_on(listener, from, bytes, Transport::Udp, None);
    }

    /// As [`Lab::deliver`], over `transport` and `connection`.
    fn deliver_on(
        &mut self,
        listener: usize,
        from: &str,
        bytes: &[u8],
        transport: Transport,
        connection: Option<crate::transport::ConnectionId>,
    ) {
        let received = match Message::parse(bytes) {
            Ok(mut msg) => {
                // What the transport does to every request (RFC 3581).
                if msg.is_request() {
                    crate::transport::nat::stamp_received(&mut msg, addr(from));
                }
                Received::Message(msg)
            }
            Err(error) => Received::Malformed {
                error,
                bytes: bytes.to_vec(),
            },
        };
        let inbound = Inbound {
            listener: ListenerId(listener),
            transport,
            local: match listener {
                0 => addr("192.0.2.1:5060"),
                1 => addr("198.51.100.1:5060"),
                _ => addr("192.0.2.1:5070"),
            },
            remote: addr(from),
            connection,
            received,
            arrived: self.now,
        };
        self.core.handle_inbound(self.now, inbound);
        self.settle();
    }

    /// From the caller (outside realm).
    fn caller_sends(&mut self, text: &str) {
        self.deliver(0, CALLER, text.as_bytes());
    }

    /// From a trunk (inside realm).
    fn trunk_sends(&mut self, trunk: &str, bytes: &[u8]) {
        self.deliver(1, trunk, bytes);
    }

    /// Drains the core, anchoring every allocation on the next ports.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            while let Some(out) = self.core.poll_transmit() {
                busy = true;
                self.sent.push((out.to, out.bytes));
            }
            while let Some(event) = self.core.poll_event() {
                // No simulated flow may make the core fail inside.
                if let CoreEvent::CallError { call, error, .. } = &event {
                    panic!("call {call:?}: {error}");
                }
                self.events.push(event);
            }
            let mut allocations = Vec::new();
            while let Some(cmd) = self.core.poll_media() {
                busy = true;
                if let MediaCommand::Allocate { stream, legs } = &cmd
                    && self.refuse_media
                {
                    allocations.push(MediaEvent::AllocationFailed {
                        stream: *stream,
                        error: crate::media::command::MediaError::PortsExhausted {
                            addr: legs[0].local_ip,
                        },
                    });
                } else if let MediaCommand::Allocate { stream, legs } = &cmd
                    && !self.hold_media
                {
                    let mut endpoint = |ip: IpAddr| {
                        let port = self.next_port;
                        self.next_port += 2;
                        LocalEndpoint {
                            rtp: SocketAddr::new(ip, port),
                            rtcp: Some(SocketAddr::new(ip, port + 1)),
                        }
                    };
                    allocations.push(MediaEvent::Allocated {
                        stream: *stream,
                        legs: [endpoint(legs[0].local_ip), endpoint(legs[1].local_ip)],
                    });
                }
                self.media.push(cmd);
            }
            for event in allocations {
                self.core.handle_media_event(self.now, event);
            }
            if !busy {
                break;
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.core.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.settle();
        }
        self.now = until;
    }

    /// Messages sent to `to` since the last call, parsed.
    fn take(&mut self, to: &str) -> Vec<Message> {
        let to = addr(to);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(a, _)| *a == to);
        self.sent = rest;
        mine.into_iter()
            .map(|(_, bytes)| {
                scan(
                    &bytes,
                    if to == addr(CALLER) {
                        CALLEE_SECRETS
                    } else {
                        CALLER_SECRETS
                    },
                );
                Message::parse(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "core sent garbage ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            })
            .collect()
    }

    fn take_one(&mut self, to: &str, what: &str) -> Message {
        let mut msgs = self.take(to);
        let pos = msgs
            .iter()
            .position(|m| describe(m) == what)
            .unwrap_or_else(|| {
                panic!(
                    "no {what} to {to}; got {:?}",
                    msgs.iter().map(describe).collect::<Vec<_>>()
                )
            });
        msgs.remove(pos)
    }

    fn ended(&self) -> Option<&CallSummary> {
        self.events.iter().find_map(|e| match e {
            CoreEvent::CallEnded(summary) => Some(&**summary),
            _ => None,
        })
    }
}

/// The topology scan: nothing of the other side in these bytes.
fn scan(bytes: &[u8], secrets: &[&str]) {
    let text = String::from_utf8_lossy(bytes);
    for secret in secrets {
        assert!(!text.contains(secret), "leaked {secret:?}:\n{text}");
    }
}

fn describe(m: &Message) -> String {
    match (m.method_bytes(), m.status()) {
        (Some(method), _) => String::from_utf8_lossy(method).into_owned(),
        (None, Some(status)) => status.to_string(),
        _ => String::new(),
    }
}

/// The callee's response to a request the core sent it.
fn answer(request: &Message, status: u16, sdp: Option<&str>) -> Vec<u8> {
    let extra = [
        (HeaderName::Contact, "<sip:pbx-contact@198.51.100.3:5060>"),
        (HeaderName::Server, "PbxServer 1"),
    ];
    let mut bytes = respond(request, status, "", Some("btag9"), &extra);
    if let Some(sdp) = sdp {
        let mut msg = Message::parse(&bytes).expect("parses");
        msg.push_header("Content-Type", b"application/sdp");
        msg.set_body(sdp.as_bytes());
        bytes = msg.to_bytes();
    }
    bytes
}

fn in_dialog(
    method: &str,
    dialog: &Message,
    from_callee: bool,
    cseq: u32,
    body: Option<&str>,
) -> String {
    // `dialog` is a message the peer received: reuse its dialog identifiers
    // from the peer's point of view.
    let call_id = String::from_utf8_lossy(dialog.call_id().expect("call-id")).into_owned();
    let (from, to) = if from_callee {
        (
            String::from_utf8_lossy(dialog.header(HeaderName::To).expect("to")).into_owned(),
            String::from_utf8_lossy(dialog.header(HeaderName::From).expect("from")).into_owned(),
        )
    } else {
        (
            String::from_utf8_lossy(dialog.header(HeaderName::From).expect("from")).into_owned(),
            String::from_utf8_lossy(dialog.header(HeaderName::To).expect("to")).into_owned(),
        )
    };
    let target = dialog
        .contacts()
        .next()
        .and_then(Result::ok)
        .and_then(|c| match c {
            sip::header::Contact::Addr(a) => {
                Some(String::from_utf8_lossy(a.uri().as_bytes()).into_owned())
            }
            sip::header::Contact::Star => None,
        })
        .expect("contact");
    let (via, contact) = if from_callee {
        (
            "SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKpbx",
            "<sip:pbx-contact@198.51.100.3:5060>",
        )
    } else {
        (
            "SIP/2.0/UDP 10.9.8.7:5062;branch=z9hG4bKcaller",
            "<sip:alice@10.9.8.7:5062>",
        )
    };
    let body = body.unwrap_or("");
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} {target} SIP/2.0\r\nVia: {via}{cseq}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: {contact}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Runs a call to the confirmed state; returns the INVITE the PBX got and
/// the 200 the caller got.
fn establish(lab: &mut Lab) -> (Message, Message) {
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 180, None));
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    let ack = in_dialog("ACK", &ok, false, 10, None);
    lab.caller_sends(&ack);
    let b_ack = lab.take_one(PBX, "ACK");
    assert_eq!(b_ack.cseq().map(|c| c.seq), Some(1));
    (b_invite, ok)
}

/// The callee (`PBX`) hangs up: its BYE crosses to the caller, who
/// answers 200.
fn callee_hangs_up(lab: &mut Lab, b_invite: &Message) {
    lab.trunk_sends(PBX, in_dialog("BYE", b_invite, true, 2, None).as_bytes());
    let bye = lab.take_one(CALLER, "BYE");
    lab.caller_sends(std::str::from_utf8(&respond(&bye, 200, "", None, &[])).expect("utf8"));
}

/// The caller hangs up with CSeq `cseq`: its BYE crosses to `trunk`, which
/// answers 200.
fn caller_hangs_up(lab: &mut Lab, ok: &Message, cseq: u32, trunk: &str) {
    lab.caller_sends(&in_dialog("BYE", ok, false, cseq, None));
    let bye = lab.take_one(trunk, "BYE");
    lab.trunk_sends(trunk, &answer(&bye, 200, None));
}

#[test]
fn a_basic_call_crosses_with_nothing_of_either_side() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let trying = lab.take(CALLER);
    assert!(trying.is_empty() || describe(&trying[0]) == "100");

    let b_invite = lab.take_one(PBX, "INVITE");
    assert_eq!(
        b_invite.request_uri_bytes(),
        Some(b"sip:+4930555@198.51.100.3:5060".as_slice())
    );
    assert_eq!(b_invite.max_forwards(), Some(69));
    assert!(
        b_invite.header(HeaderName::Supported).is_some(),
        "extension headers cross"
    );
    let sdp = Sdp::parse(b_invite.body()).expect("anchored offer");
    let media = sdp.media_section(0).expect("audio");
    assert_eq!(
        media.effective_connection().and_then(|c| c.ip),
        Some("198.51.100.1".parse().expect("ip"))
    );
    assert!(media.port() >= 30000);

    lab.trunk_sends(PBX, &answer(&b_invite, 180, None));
    let ringing = lab.take_one(CALLER, "180");
    assert_eq!(
        ringing.call_id(),
        Some(b"caller-call-id@10.9.8.7".as_slice())
    );
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    let answer_sdp = Sdp::parse(ok.body()).expect("anchored answer");
    assert_eq!(
        answer_sdp.connection().and_then(|c| c.ip),
        Some("192.0.2.1".parse().expect("ip"))
    );
    assert!(
        ok.header(HeaderName::Contact)
            .is_some_and(|c| c.starts_with(b"<sip:sbc@192.0.2.1"))
    );

    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    let b_ack = lab.take_one(PBX, "ACK");
    assert_eq!(b_ack.call_id(), b_invite.call_id());

    // The media layer was told where each side wants media.
    let remotes: Vec<_> = lab
        .media
        .iter()
        .filter_map(|c| match c {
            MediaCommand::SetRemote { leg, remote, .. } => Some((*leg, remote.rtp)),
            _ => None,
        })
        .collect();
    assert!(
        remotes.contains(&(Leg::A, addr("10.9.8.7:4000"))),
        "{remotes:?}"
    );
    assert!(
        remotes.contains(&(Leg::B, addr("203.0.113.50:6000"))),
        "{remotes:?}"
    );

    // The callee hangs up.
    lab.trunk_sends(PBX, in_dialog("BYE", &b_invite, true, 2, None).as_bytes());
    let bye_ok = lab.take_one(PBX, "200");
    assert_eq!(
        bye_ok.cseq().map(|c| c.method.to_owned()).as_deref(),
        Some("BYE")
    );
    let a_bye = lab.take_one(CALLER, "BYE");
    assert_eq!(
        a_bye.request_uri_bytes(),
        Some(b"sip:alice@10.9.8.7:5062".as_slice())
    );
    lab.caller_sends(std::str::from_utf8(&respond(&a_bye, 200, "", None, &[])).expect("utf8"));
    let ended = lab.ended().expect("call ended");
    assert_eq!((ended.status, ended.ended_by), (200, EndedBy::Callee));
    assert!(ended.answered.is_some());
    assert!(
        lab.media
            .iter()
            .any(|c| matches!(c, MediaCommand::Release { .. }))
    );
    assert_eq!(lab.core.active_calls(), 0);
}

#[test]
fn a_record_routing_proxy_in_front_gets_its_route_set_both_ways() {
    // RFC 3261 §12.1.1: the 1xx/2xx carry the request's Record-Route in
    // order, and what the SBC sends in the caller's dialog is routed
    // through it (the route set is the Record-Route as received).
    let mut lab = Lab::new(CONFIG);
    let rr =
        "Record-Route: <sip:192.0.2.77;lr;ftag=atag1>\r\nRecord-Route: <sip:192.0.2.78;lr>\r\n";
    lab.caller_sends(&invite(true).replacen("Max-Forwards", &format!("{rr}Max-Forwards"), 1));
    let b_invite = lab.take_one(PBX, "INVITE");
    assert!(b_invite.header(HeaderName::RecordRoute).is_none());
    lab.trunk_sends(PBX, &answer(&b_invite, 180, None));
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let got = lab.take(CALLER);
    let record_routes = |m: &Message| -> Vec<String> {
        m.values(HeaderName::RecordRoute)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let expected = ["<sip:192.0.2.77;lr;ftag=atag1>", "<sip:192.0.2.78;lr>"];
    for status in ["180", "200"] {
        let response = got
            .iter()
            .find(|m| describe(m) == status)
            .unwrap_or_else(|| panic!("no {status}"));
        assert_eq!(record_routes(response), expected, "{status}");
    }
    let ok = got
        .iter()
        .find(|m| describe(m) == "200")
        .expect("200")
        .clone();
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    lab.take_one(PBX, "ACK");
    lab.trunk_sends(PBX, in_dialog("BYE", &b_invite, true, 2, None).as_bytes());
    let bye = lab.take_one(CALLER, "BYE");
    let routes: Vec<String> = bye
        .values(HeaderName::Route)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(routes, expected);
}

#[test]
fn a_bye_over_tcp_gets_the_callee_answer_over_its_connection() {
    // The BYE's server transaction ends as its 200 goes out (TCP): the
    // relayed 200 must leave before that.
    let mut lab = Lab::new(CONFIG);
    let (_, ok) = establish(&mut lab);
    let bye = in_dialog("BYE", &ok, false, 11, None).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let connection = Some(crate::transport::ConnectionId(3));
    lab.deliver_on(0, CALLER, bye.as_bytes(), Transport::Tcp, connection);
    let b_bye = lab.take_one(PBX, "BYE");
    lab.trunk_sends(PBX, &answer(&b_bye, 200, None));
    lab.take_one(CALLER, "200");
}

#[test]
fn a_leg_whose_media_never_latches_is_reported_and_in_the_record() {
    let mut lab = Lab::new(CONFIG);
    let (_, ok) = establish(&mut lab);
    let stream = lab
        .media
        .iter()
        .find_map(|c| match c {
            MediaCommand::Allocate { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("a stream");
    for _ in 0..2 {
        let now = lab.now;
        lab.core.handle_media_event(
            now,
            MediaEvent::NotLatched {
                stream,
                leg: crate::media::command::Leg::B,
            },
        );
        lab.settle();
    }
    let reports: Vec<&CoreEvent> = lab
        .events
        .iter()
        .filter(|e| matches!(e, CoreEvent::MediaNotLatched { .. }))
        .collect();
    assert_eq!(reports.len(), 1, "once per leg");
    assert!(
        matches!(reports[0], CoreEvent::MediaNotLatched { realm, call_id, .. } if realm == "inside" && !call_id.is_empty()),
        "{reports:?}"
    );
    caller_hangs_up(&mut lab, &ok, 11, PBX);
    assert_eq!(lab.ended().map(|e| e.not_latched), Some([false, true]));
}

/// The caller's CANCEL of `request` (§9.1: same Request-URI, Via, Call-ID,
/// From, To and CSeq number), with no body.
fn cancel_of(request: &str) -> String {
    let cancel = request
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL");
    cancel.split("Content-").next().expect("head").to_owned() + "Content-Length: 0\r\n\r\n"
}

#[test]
fn a_callee_answer_waiting_for_media_ports_is_acked_and_ended_when_the_caller_cancels() {
    let mut lab = Lab::new(CONFIG);
    // Late offer: the callee's 2xx brings the offer, which needs ports; the
    // media backend is slow to give them, and the caller gives up first.
    let request = invite(false);
    lab.caller_sends(&request);
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.hold_media = true;
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let to_caller: Vec<String> = lab.take(CALLER).iter().map(describe).collect();
    assert_eq!(to_caller, ["100"], "the 2xx waits for media");
    lab.caller_sends(&cancel_of(&request));
    let to_caller: Vec<String> = lab.take(CALLER).iter().map(describe).collect();
    assert_eq!(to_caller, ["200", "487"]);
    // The callee's dialog was set up by its 2xx: it is confirmed and ended,
    // not left retransmitting its 2xx into nothing.
    let to_callee = lab.take(PBX);
    assert_eq!(
        to_callee.iter().map(describe).collect::<Vec<_>>(),
        ["ACK", "BYE"]
    );
    lab.trunk_sends(PBX, &respond(&to_callee[1], 200, "", None, &[]));
    let ended = lab.ended().expect("ended");
    assert_eq!((ended.status, ended.ended_by), (487, EndedBy::Caller));
    assert_eq!(lab.core.active_calls(), 0);
}

#[test]
fn cancel_before_answer_gets_487_and_cancels_the_trunk() {
    let mut lab = Lab::new(CONFIG);
    let request = invite(true);
    lab.caller_sends(&request);
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 180, None));
    let cancel = cancel_of(&request);
    lab.caller_sends(&cancel);
    let to_caller: Vec<String> = lab.take(CALLER).iter().map(describe).collect();
    assert!(
        to_caller.contains(&"200".to_owned()) && to_caller.contains(&"487".to_owned()),
        "{to_caller:?}"
    );
    let b_cancel = lab.take_one(PBX, "CANCEL");
    lab.trunk_sends(PBX, &respond(&b_cancel, 200, "", None, &[]));
    lab.trunk_sends(PBX, &answer(&b_invite, 487, None));
    let _ack = lab.take_one(PBX, "ACK");
    let ended = lab.ended().expect("ended");
    assert_eq!((ended.status, ended.ended_by), (487, EndedBy::Caller));
    assert_eq!(lab.core.active_calls(), 0);
}

#[test]
fn a_503_fails_over_to_the_next_trunk() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let first = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&first, 503, None));
    let second = lab.take_one(PBX2, "INVITE");
    assert_ne!(second.call_id(), first.call_id(), "a new leg");
    lab.trunk_sends(PBX2, &answer(&second, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    assert!(!lab.take(CALLER).iter().any(|m| describe(m) == "503"));
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    lab.take_one(PBX2, "ACK");
    // One log line per attempt, each naming both legs' Call-IDs.
    let attempts: Vec<(usize, String, Option<String>)> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::CallAttempt {
                attempt,
                a_call_id,
                b_call_id,
                trunk,
                from_realm,
                to_realm,
                ..
            } => {
                assert_eq!(a_call_id, "caller-call-id@10.9.8.7");
                assert_eq!(
                    (from_realm.as_str(), to_realm.as_str()),
                    ("outside", "inside")
                );
                Some((*attempt, b_call_id.clone(), trunk.clone()))
            }
            _ => None,
        })
        .collect();
    let call_id = |m: &Message| String::from_utf8_lossy(m.call_id().expect("call-id")).into_owned();
    assert_eq!(
        attempts,
        vec![
            (1, call_id(&first), Some("pbx".to_owned())),
            (2, call_id(&second), Some("pbx2".to_owned())),
        ]
    );
}

/// What an ICMP error for `sent` quotes: its first 520 bytes, as a Linux
/// host quotes a datagram in an IPv4 ICMP error.
fn icmp_quote(sent: &Message) -> sip::quote::QuotedRequest {
    let bytes = sent.to_bytes();
    sip::quote::quoted_request(&bytes[..bytes.len().min(520)]).expect("our Via is in the quote")
}

/// The inside realm's listener, which sends to the trunks.
const INSIDE: ListenerId = ListenerId(1);

#[test]
fn an_unreachable_trunk_fails_over_at_once_and_the_last_one_gets_503() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let first = lab.take_one(PBX, "INVITE");
    // ICMP port unreachable for the INVITE to the first trunk: no time
    // passes before the next trunk is tried.
    let now = lab.now;
    lab.core
        .handle_unreachable(now, INSIDE, addr(PBX), &icmp_quote(&first));
    lab.settle();
    let second = lab.take_one(PBX2, "INVITE");
    let now = lab.now;
    lab.core
        .handle_unreachable(now, INSIDE, addr(PBX2), &icmp_quote(&second));
    lab.settle();
    let to_caller: Vec<String> = lab.take(CALLER).iter().map(describe).collect();
    assert_eq!(to_caller, ["100", "503"]);
    assert_eq!(lab.ended().map(|e| e.status), Some(503));
}

#[test]
fn an_icmp_error_fails_only_the_transaction_it_quotes() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&another_invite(1));
    let one = lab.take_one(PBX, "INVITE");
    lab.caller_sends(&another_invite(2));
    let two = lab.take_one(PBX, "INVITE");
    let _ = lab.take(CALLER);
    let now = lab.now;
    // Forged: the right address, listener and method, but a branch the SBC
    // never sent; then a genuine quote arriving on the wrong listener, and
    // one naming the wrong destination. None of them fails anything.
    let mut forged = icmp_quote(&one);
    forged.branch = "z9hG4bKguessed".into();
    lab.core.handle_unreachable(now, INSIDE, addr(PBX), &forged);
    lab.core
        .handle_unreachable(now, ListenerId(0), addr(PBX), &icmp_quote(&one));
    lab.core
        .handle_unreachable(now, INSIDE, addr(PBX2), &icmp_quote(&one));
    lab.settle();
    assert!(lab.take(PBX2).is_empty(), "no failover");
    assert!(lab.take(CALLER).is_empty());
    // The genuine one for call 1 moves call 1 on, and only call 1.
    lab.core
        .handle_unreachable(now, INSIDE, addr(PBX), &icmp_quote(&one));
    lab.settle();
    lab.take_one(PBX2, "INVITE");
    let retried: Vec<&str> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::CallAttempt {
                attempt: 2,
                a_call_id,
                ..
            } => Some(a_call_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(retried.len(), 1);
    assert!(retried[0].starts_with("call-id-1"), "{retried:?}");
    // Call 2 is still ringing the first trunk: its answer goes through.
    lab.trunk_sends(PBX, &answer(&two, 200, Some(CALLEE_SDP)));
    let to_caller: Vec<String> = lab.take(CALLER).iter().map(describe).collect();
    assert_eq!(to_caller, ["200"]);
}

#[test]
fn a_silent_trunk_times_out_into_failover() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    lab.take_one(PBX, "INVITE");
    lab.advance(Duration::from_secs(31));
    assert!(lab.take(PBX2).is_empty(), "timer B is 64*T1 = 32 s");
    lab.advance(Duration::from_secs(2));
    lab.take_one(PBX2, "INVITE");
}

#[test]
fn busy_is_relayed_without_failover() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 486, None));
    lab.take_one(CALLER, "486");
    assert!(lab.take(PBX2).is_empty());
    lab.take_one(PBX, "ACK");
    assert_eq!(lab.ended().map(|e| e.status), Some(486));
}

#[test]
fn relayed_responses_carry_no_phrase_or_product_of_the_far_side() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    let marked = |status: u16, phrase: &str| {
        let bytes = answer(&b_invite, status, None);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let first = text.lines().next().unwrap_or_default().to_owned();
        text.replacen(&first, &format!("SIP/2.0 {status} {phrase}"), 1)
            .replacen(
                "Content-Length",
                "User-Agent: PbxServer 9\r\nContent-Length",
                1,
            )
    };
    lab.trunk_sends(PBX, marked(180, "Ringing at pbx.internal").as_bytes());
    lab.trunk_sends(
        PBX,
        marked(486, "Busy (PbxServer 9 on 203.0.113.50)").as_bytes(),
    );
    let got = lab.take(CALLER);
    let lines: Vec<String> = got
        .iter()
        .map(|m| {
            let bytes = m.to_bytes();
            scan(&bytes, CALLEE_SECRETS);
            scan(&bytes, &["pbx.internal"]);
            String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        lines.contains(&"SIP/2.0 180 Ringing".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"SIP/2.0 486 Busy Here".to_owned()),
        "{lines:?}"
    );
}

#[test]
fn a_2xx_without_the_answer_owed_is_refused_on_both_legs() {
    // No SDP at all, and a body that is not SDP: the callee's dialog is
    // confirmed and ended, the caller gets 502 and no session.
    for body in [None, Some("multipart")] {
        let mut lab = Lab::new(CONFIG);
        lab.caller_sends(&invite(true));
        let b_invite = lab.take_one(PBX, "INVITE");
        let mut ok = answer(&b_invite, 200, None);
        if body.is_some() {
            let mut msg = Message::parse(&ok).expect("parses");
            msg.push_header("Content-Type", b"multipart/mixed;boundary=x");
            msg.set_body(b"--x\r\n\r\nc=IN IP4 203.0.113.50\r\n--x--\r\n");
            ok = msg.to_bytes();
        }
        lab.trunk_sends(PBX, &ok);
        let to_pbx: Vec<String> = lab.take(PBX).iter().map(describe).collect();
        assert_eq!(to_pbx, ["ACK", "BYE"], "{body:?}");
        let to_caller: Vec<String> = lab.take(CALLER).iter().map(describe).collect();
        assert!(to_caller.contains(&"502".to_owned()), "{to_caller:?}");
        assert!(!to_caller.contains(&"200".to_owned()), "{to_caller:?}");
    }
}

#[test]
fn a_2xx_without_sdp_after_an_18x_with_the_answer_is_relayed() {
    // Tolerated: the caller already has the callee's SDP from the 183.
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 183, Some(CALLEE_SDP)));
    lab.take_one(CALLER, "183");
    lab.trunk_sends(PBX, &answer(&b_invite, 200, None));
    let ok = lab.take_one(CALLER, "200");
    assert!(ok.body().is_empty());
}

#[test]
fn a_2xx_without_sdp_from_another_fork_than_the_18x_with_the_answer_is_refused() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 183, Some(CALLEE_SDP)));
    lab.take_one(CALLER, "183");
    // A forking proxy behind the trunk: another branch answers, no SDP.
    let other_fork = String::from_utf8(answer(&b_invite, 200, None))
        .expect("utf8")
        .replace("btag9", "fork2");
    lab.trunk_sends(PBX, other_fork.as_bytes());
    lab.take_one(CALLER, "502");
    let to_callee: Vec<String> = lab.take(PBX).iter().map(describe).collect();
    assert_eq!(to_callee, ["ACK", "BYE"]);
}

#[test]
fn late_offer_carries_the_answer_in_the_ack() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(false));
    let b_invite = lab.take_one(PBX, "INVITE");
    assert!(b_invite.body().is_empty());
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    assert!(
        Sdp::parse(ok.body()).is_ok(),
        "the offer is anchored for the caller"
    );
    let answer_sdp = "v=0\r\no=phone 1 1 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, Some(answer_sdp)));
    let b_ack = lab.take_one(PBX, "ACK");
    let sdp = Sdp::parse(b_ack.body()).expect("anchored answer in the ACK");
    assert_eq!(
        sdp.connection().and_then(|c| c.ip),
        Some("198.51.100.1".parse().expect("ip"))
    );
}

#[test]
fn the_2xx_is_retransmitted_until_acked_then_the_call_is_ended() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    lab.take_one(CALLER, "200");
    lab.advance(Duration::from_millis(600));
    lab.take_one(CALLER, "200");
    lab.advance(Duration::from_secs(40));
    let retransmits = lab
        .take(CALLER)
        .iter()
        .filter(|m| describe(m) == "200")
        .count();
    assert!(retransmits >= 5, "T1 doubling to T2: {retransmits}");
    // No ACK within 64*T1: BYE on both legs (§13.3.1.4).
    let sent: Vec<String> = lab
        .sent
        .iter()
        .map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        sent.iter().filter(|l| l.starts_with("BYE")).count() >= 2,
        "{sent:?}"
    );
}

#[test]
fn a_reinvite_for_hold_crosses_both_ways() {
    let mut lab = Lab::new(CONFIG);
    let (b_invite, _ok) = establish(&mut lab);
    let hold = CALLEE_SDP.replace("a=sendrecv", "a=sendonly");
    lab.trunk_sends(
        PBX,
        in_dialog("INVITE", &b_invite, true, 3, Some(&hold)).as_bytes(),
    );
    let a_reinvite = lab.take_one(CALLER, "INVITE");
    assert_eq!(
        a_reinvite.call_id(),
        Some(b"caller-call-id@10.9.8.7".as_slice())
    );
    let sdp = Sdp::parse(a_reinvite.body()).expect("anchored");
    assert_eq!(
        sdp.media_section(0).map(|m| m.direction()),
        Some(crate::sdp::Direction::SendOnly)
    );
    let held = "v=0\r\no=phone 1 2 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n";
    let mut ok = Message::parse(&respond(
        &a_reinvite,
        200,
        "",
        None,
        &[(HeaderName::Contact, "<sip:alice@10.9.8.7:5062>")],
    ))
    .expect("parses");
    ok.push_header("Content-Type", b"application/sdp");
    ok.set_body(held.as_bytes());
    lab.caller_sends(std::str::from_utf8(&ok.to_bytes()).expect("utf8"));
    let b_ok = lab.take_one(PBX, "200");
    assert_eq!(b_ok.cseq().map(|c| c.seq), Some(3));
    assert!(lab.media.iter().any(|c| matches!(
        c,
        MediaCommand::SetDirection {
            direction: crate::media::command::Direction::SendOnly,
            ..
        }
    )));
}

/// `msg` with its body replaced by `body` of type `content_type`.
fn with_body(msg: &[u8], content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Message::parse(msg).expect("parses");
    msg.remove_headers(HeaderName::ContentType);
    msg.push_header("Content-Type", content_type.as_bytes());
    msg.push_header("Content-Disposition", b"session");
    msg.set_body(body);
    msg.to_bytes()
}

#[test]
fn a_reinvite_answered_without_usable_sdp_gets_502_and_the_call_stays_up() {
    for (content_type, body) in [
        ("application/sdp", &b"v=0\r\nthis is not sdp\r\n"[..]),
        ("application/isup", &b"\x01\x02\x03"[..]),
    ] {
        let mut lab = Lab::new(CONFIG);
        let (b_invite, ok) = establish(&mut lab);
        let hold = "v=0\r\no=phone 1 2 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
        lab.caller_sends(&in_dialog("INVITE", &ok, false, 11, Some(hold)));
        let b_reinvite = lab.take_one(PBX, "INVITE");
        let _ = lab.take(CALLER);
        lab.trunk_sends(
            PBX,
            &with_body(&answer(&b_reinvite, 200, None), content_type, body),
        );
        // The callee's 2xx is ACKed on its leg; the caller's re-INVITE gets
        // 502, without a body or anything describing one.
        let b_ack = lab.take_one(PBX, "ACK");
        assert_eq!(
            b_ack.cseq().map(|c| c.seq),
            b_reinvite.cseq().map(|c| c.seq)
        );
        let refused = lab.take_one(CALLER, "502");
        assert!(refused.body().is_empty() && refused.content_type().is_none());
        assert_eq!(
            lab.core.active_calls(),
            1,
            "{content_type}: the call goes on"
        );
        callee_hangs_up(&mut lab, &b_invite);
        assert_eq!(lab.core.active_calls(), 0);
    }
}

#[test]
fn a_late_offer_answered_in_the_ack_without_usable_sdp_ends_the_call() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(false));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    let ack = in_dialog("ACK", &ok, false, 10, None);
    lab.caller_sends(
        std::str::from_utf8(&with_body(ack.as_bytes(), "application/isup", b"ISUP")).expect("utf8"),
    );
    // The callee's 2xx gets its ACK (with no answer and nothing describing
    // one), then both dialogs end: the callee's offer has no answer.
    let to_callee = lab.take(PBX);
    assert_eq!(
        to_callee.iter().map(describe).collect::<Vec<_>>(),
        ["ACK", "BYE"]
    );
    assert!(to_callee[0].body().is_empty() && to_callee[0].content_type().is_none());
    let bye_a = lab.take_one(CALLER, "BYE");
    lab.caller_sends(std::str::from_utf8(&respond(&bye_a, 200, "", None, &[])).expect("utf8"));
    lab.trunk_sends(PBX, &respond(&to_callee[1], 200, "", None, &[]));
    let ended = lab.ended().expect("ended");
    assert_eq!(ended.ended_by, EndedBy::Sbc(SbcReason::BadSdp));
    assert_eq!(lab.core.active_calls(), 0);
}

#[test]
fn a_provisional_with_a_body_the_sbc_cannot_anchor_crosses_without_it() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(
        PBX,
        &with_body(&answer(&b_invite, 183, None), "application/isup", b"ISUP"),
    );
    let early = lab
        .take(CALLER)
        .into_iter()
        .find(|m| describe(m) == "183")
        .expect("183");
    assert!(early.body().is_empty());
    assert!(early.content_type().is_none());
    assert!(early.header(HeaderName::ContentDisposition).is_none());
}

#[test]
fn a_realm_with_several_media_addresses_anchors_each_leg_on_the_least_loaded() {
    let config = CONFIG.replace(
        "media = { address = \"198.51.100.1\" }",
        "media = { address = \"198.51.100.1\", more_addresses = [\"198.51.100.11\"] }",
    );
    let mut lab = Lab::new(&config);
    let anchored_on = |invite: &Message| {
        Sdp::parse(invite.body())
            .expect("anchored offer")
            .connection()
            .and_then(|c| c.ip)
            .expect("c= address")
            .to_string()
    };
    lab.caller_sends(&another_invite(1));
    let one = lab.take_one(PBX, "INVITE");
    lab.caller_sends(&another_invite(2));
    let two = lab.take_one(PBX, "INVITE");
    assert_eq!(anchored_on(&one), "198.51.100.1");
    assert_eq!(anchored_on(&two), "198.51.100.11", "the other was busier");
    // The relay was asked for the same: each leg's pool is its address's.
    let b_legs: Vec<String> = lab
        .media
        .iter()
        .filter_map(|c| match c {
            MediaCommand::Allocate { legs, .. } => Some(legs[1].local_ip.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(b_legs, ["198.51.100.1", "198.51.100.11"]);
    // Call 1 ends: its address is the least loaded again. (The outside
    // realm has one address: every A leg is on it.)
    lab.trunk_sends(PBX, &answer(&one, 486, None));
    lab.take_one(PBX, "ACK");
    lab.caller_sends(&another_invite(3));
    let three = lab.take_one(PBX, "INVITE");
    assert_eq!(anchored_on(&three), "198.51.100.1");
    // The caller sees its own realm's one address.
    lab.trunk_sends(PBX, &answer(&two, 200, Some(CALLEE_SDP)));
    let ok = lab
        .take(CALLER)
        .into_iter()
        .find(|m| describe(m) == "200")
        .expect("200");
    assert_eq!(
        Sdp::parse(ok.body())
            .ok()
            .and_then(|s| s.connection().and_then(|c| c.ip)),
        Some("192.0.2.1".parse().expect("ip"))
    );
}

#[test]
fn out_of_dialog_options_is_answered_by_the_sbc() {
    let mut lab = Lab::new(CONFIG);
    let options = invite(false)
        .replacen("INVITE sip", "OPTIONS sip", 1)
        .replace("CSeq: 10 INVITE", "CSeq: 10 OPTIONS");
    lab.caller_sends(&options);
    let ok = lab.take_one(CALLER, "200");
    // Allow names what is served here: REFER, NOTIFY and MESSAGE out of
    // dialog get 405, so they are not offered.
    let allow = String::from_utf8_lossy(ok.header(HeaderName::Allow).expect("Allow"));
    assert!(
        allow.contains("INVITE") && allow.contains("OPTIONS"),
        "{allow}"
    );
    for refused in ["REFER", "NOTIFY", "MESSAGE", "REGISTER"] {
        assert!(!allow.contains(refused), "{allow}");
    }
    assert_eq!(
        ok.header(HeaderName::Supported),
        Some(b"100rel, timer, replaces".as_slice())
    );
    assert!(lab.take(PBX).is_empty());
    let refer = options
        .replacen("OPTIONS sip", "REFER sip", 1)
        .replace("CSeq: 10 OPTIONS", "CSeq: 10 REFER");
    lab.caller_sends(&refer);
    lab.take_one(CALLER, "405");
}

#[test]
fn over_the_call_limit_new_calls_get_503_with_retry_after() {
    let mut lab = Lab::new(&CONFIG.replace("max_calls = 10", "max_calls = 1"));
    lab.caller_sends(&invite(true));
    lab.take_one(PBX, "INVITE");
    lab.caller_sends(
        &invite(true)
            .replace("caller-call-id", "second-call")
            .replace("caller1", "caller2"),
    );
    let refused = lab.take_one(CALLER, "503");
    assert!(refused.header(HeaderName::RetryAfter).is_some());
    assert!(lab.events.iter().any(|e| matches!(
        e,
        CoreEvent::Rejected {
            reason: RejectReason::Admission,
            ..
        }
    )));
}

#[test]
fn malformed_requests_are_answered_and_unknown_dialogs_get_481() {
    let mut lab = Lab::new(CONFIG);
    let bad = invite(true).replace("CSeq: 10 INVITE", "CSeq: 10 OPTIONS");
    lab.caller_sends(&bad);
    lab.take_one(CALLER, "400");
    let stray_bye = invite(false)
        .replacen("INVITE sip", "BYE sip", 1)
        .replace("CSeq: 10 INVITE", "CSeq: 11 BYE")
        .replace(
            "To: <sip:+4930555@192.0.2.1>",
            "To: <sip:+4930555@192.0.2.1>;tag=nosuch",
        );
    lab.caller_sends(&stray_bye);
    lab.take_one(CALLER, "481");
}

#[test]
fn trunk_health_checks_mark_trunks_and_down_ones_are_tried_last() {
    let mut lab = Lab::new(
        &CONFIG
            .replace(
                "address = \"198.51.100.3:5060\"",
                "address = \"198.51.100.3:5060\"\noptions_interval_secs = 30",
            )
            .replace(
                "address = \"198.51.100.5:5060\"",
                "address = \"198.51.100.5:5060\"\noptions_interval_secs = 0",
            ),
    );
    lab.core.start(lab.now);
    lab.advance(Duration::from_millis(1));
    let ping = lab.take_one(PBX, "OPTIONS");
    assert!(lab.take(PBX2).is_empty(), "pbx2 has no health check");
    lab.trunk_sends(PBX, &respond(&ping, 200, "", Some("p1"), &[]));
    let up = |lab: &Lab| {
        lab.events.iter().rev().find_map(|e| match e {
            CoreEvent::TrunkState { trunk, up } if trunk == "pbx" => Some(*up),
            _ => None,
        })
    };
    assert_eq!(up(&lab), Some(true));

    // The next probe goes unanswered: timer F (64*T1) marks the trunk down.
    lab.advance(Duration::from_secs(30));
    lab.take_one(PBX, "OPTIONS");
    lab.advance(Duration::from_secs(33));
    assert_eq!(up(&lab), Some(false));

    // A new call tries the healthy trunk first.
    lab.take(PBX);
    lab.caller_sends(&invite(true));
    lab.take_one(PBX2, "INVITE");
    assert!(!lab.take(PBX).iter().any(|m| describe(m) == "INVITE"));
}

#[test]
fn the_trunks_2xx_retransmitted_before_the_callers_ack_keeps_the_call() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    let ok = answer(&b_invite, 200, Some(CALLEE_SDP));
    lab.trunk_sends(PBX, &ok);
    let a_ok = lab.take_one(CALLER, "200");
    // The caller is slow to ACK; the trunk retransmits its 200 meanwhile.
    lab.advance(Duration::from_millis(500));
    lab.trunk_sends(PBX, &ok);
    let to_pbx: Vec<String> = lab.take(PBX).iter().map(describe).collect();
    assert!(
        to_pbx.is_empty(),
        "no ACK or BYE for B before A's ACK: {to_pbx:?}"
    );
    lab.caller_sends(&in_dialog("ACK", &a_ok, false, 10, None));
    lab.take_one(PBX, "ACK");
    // The call is up: the caller's BYE crosses.
    lab.caller_sends(&in_dialog("BYE", &a_ok, false, 11, None));
    lab.take_one(CALLER, "200");
    lab.take_one(PBX, "BYE");
}

#[test]
fn a_held_call_keeps_what_its_dialogs_and_its_cdr_need() {
    let mut lab = Lab::new(CONFIG);
    let (b_invite, ok) = establish(&mut lab);
    // Our ACK got lost: the trunk's retransmitted 200 gets it again while
    // its INVITE transaction lasts (timer M)...
    let b_ok = answer(&b_invite, 200, Some(CALLEE_SDP));
    lab.advance(Duration::from_secs(2));
    lab.trunk_sends(PBX, &b_ok);
    lab.take_one(PBX, "ACK");
    // ...after which the trunk has given up retransmitting (§13.3.1.4).
    lab.advance(Duration::from_secs(40));
    lab.trunk_sends(PBX, &b_ok);
    assert!(lab.take(PBX).is_empty(), "a 200 from nowhere is not ACKed");
    // The held call still carries in-dialog requests both ways.
    lab.caller_sends(&in_dialog("INFO", &ok, false, 11, None));
    let info = lab.take_one(PBX, "INFO");
    lab.trunk_sends(PBX, &answer(&info, 200, None));
    lab.take_one(CALLER, "200");
    // The CDR names the parties of the INVITE as the caller sent it.
    lab.caller_sends(&in_dialog("BYE", &ok, false, 12, None));
    lab.take_one(CALLER, "200");
    let b_bye = lab.take_one(PBX, "BYE");
    lab.trunk_sends(PBX, &respond(&b_bye, 200, "", None, &[]));
    let ended = lab.ended().expect("call ended");
    let sent = Message::parse(invite(true).as_bytes()).expect("parses");
    assert_eq!(
        crate::cdr::Parties::of_invite(&ended.invite),
        crate::cdr::Parties::of_invite(&sent)
    );
    assert_eq!(
        ended.invite.cseq().map(|c| c.seq),
        Some(10),
        "RAck renumbering reads it"
    );
}

const REDIRECT: &str = "<sip:bob@198.51.100.9:5070>";

fn redirect(request: &Message) -> Vec<u8> {
    respond(
        request,
        302,
        "",
        Some("btag9"),
        &[(HeaderName::Contact, REDIRECT)],
    )
}

#[test]
fn a_3xx_is_relayed_without_its_contacts_by_default() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &redirect(&b_invite));
    let moved = lab.take_one(CALLER, "302");
    assert!(
        moved.header(HeaderName::Contact).is_none(),
        "the far side's Contact must not cross"
    );
    assert!(lab.take("198.51.100.9:5070").is_empty());
}

#[test]
fn with_recursion_a_3xx_sends_the_call_to_its_contact() {
    let config = format!("[sip]\nrecurse_on_3xx = true\n{CONFIG}");
    let mut lab = Lab::new(&config);
    lab.caller_sends(&invite(true));
    let first = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &redirect(&first));
    lab.take_one(PBX, "ACK");
    let second = lab.take_one("198.51.100.9:5070", "INVITE");
    assert_eq!(
        second.request_uri_bytes(),
        Some(b"sip:bob@198.51.100.9:5070".as_slice())
    );
    assert_ne!(second.call_id(), first.call_id(), "a new leg");
    assert!(second.to().is_some_and(|t| t.tag().is_none()));
    lab.deliver(
        1,
        "198.51.100.9:5070",
        &answer(&second, 200, Some(CALLEE_SDP)),
    );
    lab.take_one(CALLER, "200");
    assert!(!lab.take(CALLER).iter().any(|m| describe(m) == "302"));
}

#[test]
fn a_trunk_with_asymmetric_rtp_gets_a_leg_that_never_latches() {
    let config = CONFIG.replace(
        "address = \"198.51.100.3:5060\"",
        "address = \"198.51.100.3:5060\"\nasymmetric_rtp = true",
    );
    let mut lab = Lab::new(&config);
    lab.caller_sends(&invite(true));
    lab.take_one(PBX, "INVITE");
    let legs = lab
        .media
        .iter()
        .find_map(|c| match c {
            MediaCommand::Allocate { legs, .. } => Some(*legs),
            _ => None,
        })
        .expect("an allocation");
    assert_ne!(
        legs[0].latch,
        crate::media::command::LatchPolicy::Asymmetric,
        "the caller's leg latches"
    );
    assert_eq!(
        legs[1].latch,
        crate::media::command::LatchPolicy::Asymmetric,
        "the trunk's leg does not"
    );
}

fn outside_on(port: u16) -> ListenerInfo {
    ListenerInfo {
        realm: "outside".into(),
        transport: Transport::Udp,
        addr: SocketAddr::new("192.0.2.1".parse().expect("ip"), port),
        advertise: None,
    }
}

fn inside() -> ListenerInfo {
    ListenerInfo {
        realm: "inside".into(),
        transport: Transport::Udp,
        addr: addr("198.51.100.1:5060"),
        advertise: None,
    }
}

/// A second caller, so its messages are told apart from the first one's.
fn another_invite(n: u8) -> String {
    invite(true)
        .replace("caller-call-id", &format!("call-id-{n}"))
        .replace("atag1", &format!("atag-{n}"))
        .replace("z9hG4bKcaller1", &format!("z9hG4bKcaller-{n}"))
}

#[test]
fn a_reload_that_moves_a_listener_keeps_the_call_up_on_the_old_one() {
    let mut lab = Lab::new(CONFIG);
    let (_b_invite, ok) = establish(&mut lab);

    // The outside realm moves to port 5070, and a new realm is listed first
    // (realm indices held by the call must not shift).
    let moved = CONFIG
        .replace("192.0.2.1:5060", "192.0.2.1:5070")
        .replace(
            "[[realm]]\nname = \"outside\"",
            "[[realm]]\nname = \"spare\"\nlisten = [{ transport = \"udp\", address = \"192.0.2.9:5060\" }]\nmedia = { address = \"192.0.2.9\" }\n[[realm]]\nname = \"outside\"",
        );
    assert!(moved.contains("spare"), "the replacement above matched");
    let config = Config::from_str_named(&moved, "test.toml").expect("valid config");
    lab.core.reload(lab.now, &config, |_, _| None);
    lab.core
        .set_listeners(&[(ListenerId(1), inside()), (ListenerId(2), outside_on(5070))]);
    assert_eq!(lab.core.retiring_listeners(), 1);
    assert_eq!(lab.core.poll_closable_listener(), None, "the call uses it");

    // A new call at the old address is refused; one at the new address
    // goes through and advertises the new address.
    lab.deliver(0, CALLER, another_invite(2).as_bytes());
    let refused = lab.take(CALLER);
    assert!(
        refused.iter().any(|m| m.status() == Some(503)),
        "{:?}",
        refused.iter().map(describe).collect::<Vec<_>>()
    );
    lab.deliver(2, CALLER, another_invite(3).as_bytes());
    let b_invite2 = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite2, 200, Some(CALLEE_SDP)));
    let ok2 = lab.take_one(CALLER, "200");
    let contact = String::from_utf8_lossy(ok2.header(HeaderName::Contact).expect("contact"));
    assert!(contact.contains("192.0.2.1:5070"), "{contact}");

    // The first call still works on the retiring listener, both ways.
    caller_hangs_up(&mut lab, &ok, 11, PBX);
    let bye_ok = lab.take_one(CALLER, "200");
    assert_eq!(bye_ok.cseq().map(|c| c.seq), Some(11));
    let ended = lab.ended().expect("the first call ended");
    assert_eq!(ended.from_realm, "outside");
    assert_eq!(ended.status, 200);

    // Once its transactions are over the old listener can close, once.
    lab.advance(Duration::from_secs(64));
    assert_eq!(lab.core.poll_closable_listener(), Some(ListenerId(0)));
    assert_eq!(lab.core.poll_closable_listener(), None);
    assert_eq!(lab.core.retiring_listeners(), 0);
    // Anything late for it is not taken any more.
    lab.take(CALLER);
    lab.deliver(0, CALLER, another_invite(4).as_bytes());
    assert!(lab.take(CALLER).is_empty());
}

#[test]
fn a_reload_that_removes_the_realm_of_a_call_up_keeps_it() {
    let mut lab = Lab::new(CONFIG);
    let (b_invite, _ok) = establish(&mut lab);
    // "outside" and its route are gone; the call came in there.
    let start = CONFIG
        .find("[[realm]]\nname = \"outside\"")
        .expect("outside realm");
    let end = CONFIG
        .find("[[realm]]\nname = \"inside\"")
        .expect("inside realm");
    let routes = CONFIG.find("[[route]]").expect("route");
    let without = format!("{}{}", &CONFIG[..start], &CONFIG[end..routes]);
    let config = Config::from_str_named(&without, "test.toml").expect("valid config");
    lab.core.reload(lab.now, &config, |_, _| None);
    lab.core.set_listeners(&[(ListenerId(1), inside())]);

    // The callee hangs up: the BYE reaches the caller on the retired realm.
    callee_hangs_up(&mut lab, &b_invite);
    let ended = lab.ended().expect("the call ended");
    assert_eq!(ended.from_realm, "outside");
    assert_eq!(
        lab.core.calls_per_realm(),
        vec![("outside".to_owned(), 0), ("inside".to_owned(), 0)]
    );
}

#[test]
fn a_realm_behind_1_to_1_nat_anchors_on_its_address_and_advertises_the_public_one() {
    let natted = CONFIG.replace(
        "media = { address = \"192.0.2.1\" }",
        "media = { address = \"192.0.2.1\", advertise = \"203.0.113.10\" }",
    );
    assert_ne!(natted, CONFIG);
    let mut lab = Lab::new(&natted);
    lab.caller_sends(&invite(true));
    let legs = lab
        .media
        .iter()
        .find_map(|c| match c {
            MediaCommand::Allocate { legs, .. } => Some(*legs),
            _ => None,
        })
        .expect("an allocation");
    // The relay binds the private address; SDP towards the caller shows the
    // public one, and the PBX side is untouched.
    assert_eq!(legs[0].local_ip, "192.0.2.1".parse::<IpAddr>().expect("ip"));
    let b_invite = lab.take_one(PBX, "INVITE");
    let offer = Sdp::parse(b_invite.body()).expect("sdp");
    assert_eq!(
        offer.connection().and_then(|c| c.ip),
        Some("198.51.100.1".parse().expect("ip"))
    );
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    let sdp = Sdp::parse(ok.body()).expect("sdp");
    assert_eq!(
        sdp.connection().and_then(|c| c.ip),
        Some("203.0.113.10".parse().expect("ip"))
    );
    assert!(!String::from_utf8_lossy(ok.body()).contains("192.0.2.1"));
}

#[test]
fn a_listener_behind_1_to_1_nat_shows_its_public_address_in_via_and_contact() {
    let mut lab = Lab::new(CONFIG);
    let public = addr("203.0.113.20:5070");
    lab.core.set_listeners(&[
        (ListenerId(0), outside_on(5060)),
        (
            ListenerId(1),
            ListenerInfo {
                advertise: Some(public),
                ..inside()
            },
        ),
    ]);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    let via = String::from_utf8_lossy(b_invite.header(HeaderName::Via).expect("via")).into_owned();
    let contact = String::from_utf8_lossy(b_invite.header(HeaderName::Contact).expect("contact"))
        .into_owned();
    assert!(via.contains("203.0.113.20:5070"), "{via}");
    assert!(contact.contains("203.0.113.20:5070"), "{contact}");
    assert!(!String::from_utf8_lossy(&b_invite.to_bytes()).contains("198.51.100.1:5060"));
    // The caller's side is not behind the NAT: its 200 shows the bound address.
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    let contact = String::from_utf8_lossy(ok.header(HeaderName::Contact).expect("contact"));
    assert!(contact.contains("192.0.2.1:5060"), "{contact}");
}

/// CONFIG without the `pbx` trunk (the route keeps `pbx2`).
fn without_pbx() -> Config {
    let start = CONFIG
        .find("[[trunk]]\nname = \"pbx\"\n")
        .expect("pbx trunk");
    let end = CONFIG
        .find("[[trunk]]\nname = \"pbx2\"")
        .expect("pbx2 trunk");
    let text = format!("{}{}", &CONFIG[..start], &CONFIG[end..])
        .replace("targets = [\"pbx\", \"pbx2\"]", "targets = [\"pbx2\"]");
    Config::from_str_named(&text, "test.toml").expect("valid config")
}

#[test]
fn a_reload_that_removes_the_trunk_of_a_ringing_call_fails_over_by_name() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let first = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&first, 180, None));
    // pbx leaves the configuration while the call rings on it; it was
    // trunk 0, so every index would shift.
    lab.core.reload(lab.now, &without_pbx(), |_, _| None);
    lab.trunk_sends(PBX, &answer(&first, 503, None));
    // A provisional came, so no failover: the 503 goes to the caller.
    lab.take_one(CALLER, "503");

    // A call that had not got a provisional fails over to pbx2 by name.
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let first = lab.take_one(PBX, "INVITE");
    lab.core.reload(lab.now, &without_pbx(), |_, _| None);
    lab.trunk_sends(PBX, &answer(&first, 503, None));
    let second = lab.take_one(PBX2, "INVITE");
    lab.trunk_sends(PBX2, &answer(&second, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    caller_hangs_up(&mut lab, &ok, 11, PBX2);
    let ended = lab.ended().expect("ended");
    assert_eq!(ended.trunks_tried, ["pbx", "pbx2"]);
    assert_eq!(
        lab.core.calls_per_trunk(),
        vec![("pbx".to_owned(), 0), ("pbx2".to_owned(), 0)]
    );
}

#[test]
fn a_reload_that_removes_a_trunk_under_its_health_check_and_its_caller_keeps_running() {
    // The caller is itself a trunk ("carrier") with a health check.
    let config = CONFIG.replace(
        "[[trunk]]\nname = \"pbx\"",
        "[[trunk]]\nname = \"carrier\"\nrealm = \"outside\"\naddress = \"203.0.113.7:5062\"\noptions_interval_secs = 30\n\n[[trunk]]\nname = \"pbx\"",
    );
    let mut lab = Lab::new(&config);
    let (b_invite, _ok) = establish(&mut lab);
    lab.core.start(lab.now);
    lab.advance(Duration::from_millis(1));
    let ping = lab.take_one(CALLER, "OPTIONS");

    // "carrier" goes away while its probe is out and its call is up.
    let text = config.replace(
        "[[trunk]]\nname = \"carrier\"\nrealm = \"outside\"\naddress = \"203.0.113.7:5062\"\noptions_interval_secs = 30\n\n",
        "",
    );
    assert_ne!(text, config);
    let reloaded = Config::from_str_named(&text, "test.toml").expect("valid config");
    lab.core.reload(lab.now, &reloaded, |_, _| None);
    lab.deliver(0, CALLER, &respond(&ping, 200, "", Some("p1"), &[]));
    lab.advance(Duration::from_secs(40));
    assert!(
        !lab.take(CALLER).iter().any(|m| describe(m) == "OPTIONS"),
        "a retired trunk is not probed"
    );

    callee_hangs_up(&mut lab, &b_invite);
    let ended = lab.ended().expect("ended");
    assert_eq!(
        ended.from_trunk.as_deref(),
        Some("carrier"),
        "the CDR keeps its trunk"
    );
}

#[test]
fn requests_pending_when_a_call_ends_get_487_and_the_retired_listener_closes() {
    let mut lab = Lab::new(CONFIG);
    let (_b_invite, ok) = establish(&mut lab);
    lab.core
        .set_listeners(&[(ListenerId(1), inside()), (ListenerId(2), outside_on(5070))]);
    // An INFO crosses to the PBX, which never answers it; the caller hangs up.
    lab.caller_sends(&in_dialog("INFO", &ok, false, 11, None));
    lab.take_one(PBX, "INFO");
    caller_hangs_up(&mut lab, &ok, 12, PBX);
    let answers = lab.take(CALLER);
    let statuses: Vec<(u16, u32)> = answers
        .iter()
        .filter_map(|m| Some((m.status()?, m.cseq()?.seq)))
        .collect();
    assert!(statuses.contains(&(487, 11)), "{statuses:?}");
    assert!(statuses.contains(&(200, 12)), "{statuses:?}");

    // Peers that keep probing the retired address get 503 and hold nothing.
    let options = invite(false)
        .replacen("INVITE sip", "OPTIONS sip", 1)
        .replace("CSeq: 10 INVITE", "CSeq: 1 OPTIONS")
        .replace("z9hG4bKcaller1", "z9hG4bKprobe");
    lab.caller_sends(&options);
    lab.take_one(CALLER, "503");
    lab.advance(Duration::from_secs(33));
    assert_eq!(lab.core.poll_closable_listener(), Some(ListenerId(0)));
}

#[test]
fn a_call_refused_for_media_ports_lists_no_stream() {
    let mut lab = Lab::new(CONFIG);
    lab.refuse_media = true;
    lab.caller_sends(&invite(true));
    lab.take_one(CALLER, "503");
    let ended = lab.ended().expect("ended at once");
    assert!(ended.streams.is_empty(), "{:?}", ended.streams);
    assert!(
        !lab.media
            .iter()
            .any(|c| matches!(c, MediaCommand::Release { .. })),
        "nothing to release: the relay never had the stream"
    );
}

#[test]
fn reinvite_glare_gets_491_and_a_second_reinvite_500_with_retry_after() {
    let mut lab = Lab::new(CONFIG);
    let (b_invite, ok) = establish(&mut lab);
    let hold = CALLEE_SDP.replace("a=sendrecv", "a=sendonly");
    lab.trunk_sends(
        PBX,
        in_dialog("INVITE", &b_invite, true, 3, Some(&hold)).as_bytes(),
    );
    let a_reinvite = lab.take_one(CALLER, "INVITE");
    // The caller re-INVITEs at the same moment: glare (RFC 3261 §14.2).
    let offer = "v=0\r\no=phone 1 2 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n";
    lab.caller_sends(&in_dialog("INVITE", &ok, false, 11, Some(offer)));
    lab.take_one(CALLER, "491");
    assert!(
        lab.take(PBX).iter().all(|m| describe(m) != "INVITE"),
        "the caller's re-INVITE is not relayed into the glare"
    );
    // The PBX sends a second re-INVITE before its first has an answer.
    lab.trunk_sends(
        PBX,
        in_dialog("INVITE", &b_invite, true, 4, Some(&hold)).as_bytes(),
    );
    let refused = lab.take_one(PBX, "500");
    let retry: u32 =
        std::str::from_utf8(refused.header(HeaderName::RetryAfter).expect("Retry-After"))
            .expect("utf8")
            .trim()
            .parse()
            .expect("seconds");
    assert!(retry <= 10);
    // The first completes, and the caller's retry then crosses.
    let mut answer_ok = Message::parse(&respond(
        &a_reinvite,
        200,
        "",
        None,
        &[(HeaderName::Contact, "<sip:alice@10.9.8.7:5062>")],
    ))
    .expect("parses");
    answer_ok.push_header("Content-Type", b"application/sdp");
    answer_ok.set_body(offer.replace("sendrecv", "recvonly").as_bytes());
    lab.caller_sends(std::str::from_utf8(&answer_ok.to_bytes()).expect("utf8"));
    lab.take_one(PBX, "200");
    // Until the PBX ACKs, its re-INVITE is still in progress.
    lab.caller_sends(&in_dialog("INVITE", &ok, false, 12, Some(offer)));
    lab.take_one(CALLER, "491");
    lab.trunk_sends(PBX, in_dialog("ACK", &b_invite, true, 3, None).as_bytes());
    lab.take_one(CALLER, "ACK");
    lab.caller_sends(&in_dialog("INVITE", &ok, false, 13, Some(offer)));
    lab.take_one(PBX, "INVITE");
}

#[test]
fn every_call_error_kind_is_listed_for_the_metrics() {
    let errors = [
        CallError::Build { what: "BYE" },
        CallError::TransactionRefused {
            what: "send a request",
            detail: String::new(),
        },
    ];
    for error in &errors {
        assert!(CallError::KINDS.contains(&error.kind()), "{error:?}");
    }
    assert_eq!(errors.len(), CallError::KINDS.len());
}

#[test]
fn a_draining_core_refuses_new_calls_and_carries_the_call_up_to_its_end() {
    let mut lab = Lab::new(CONFIG);
    let (_b_invite, ok) = establish(&mut lab);
    lab.core.stop_taking_calls();
    assert!(lab.core.is_draining());
    // A new call: 503 with Retry-After, nothing sent to the trunk.
    let second = invite(true)
        .replace("caller-call-id@", "second-call-id@")
        .replace("tag=atag1", "tag=atag2")
        .replace("z9hG4bKcaller1", "z9hG4bKcaller2");
    lab.caller_sends(&second);
    let refused = lab.take_one(CALLER, "503");
    assert!(
        refused.header(HeaderName::RetryAfter).is_some(),
        "a refusal while draining says when to come back"
    );
    assert!(lab.take(PBX).is_empty(), "the new call goes nowhere");
    // A health check sees the node down.
    let options = invite(false)
        .replacen("INVITE sip:", "OPTIONS sip:", 1)
        .replace("CSeq: 10 INVITE", "CSeq: 1 OPTIONS")
        .replace("caller-call-id@", "ping-call-id@")
        .replace("z9hG4bKcaller1", "z9hG4bKping1");
    lab.caller_sends(&options);
    let pinged = lab.take_one(CALLER, "503");
    assert!(pinged.header(HeaderName::RetryAfter).is_some());
    // The call up re-INVITEs (hold) and hangs up, both across the border.
    let hold = "v=0\r\no=phone 1 2 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    lab.caller_sends(&in_dialog("INVITE", &ok, false, 11, Some(hold)));
    let b_reinvite = lab.take_one(PBX, "INVITE");
    let held = CALLEE_SDP.replace("a=sendrecv", "a=recvonly");
    lab.trunk_sends(PBX, &answer(&b_reinvite, 200, Some(&held)));
    lab.take_one(CALLER, "200");
    lab.caller_sends(&in_dialog("ACK", &ok, false, 11, None));
    lab.take_one(PBX, "ACK");
    caller_hangs_up(&mut lab, &ok, 12, PBX);
    assert_eq!(lab.core.active_calls(), 0);
}
