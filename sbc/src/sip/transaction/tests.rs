//! Deterministic simulations of the transaction layer: a client-side and a
//! server-side [`Transactions`] joined by a virtual network with loss,
//! duplication and reordering, on a virtual clock. Nothing sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::sim::{Chaos, Lcg, Packet, Wire};
use crate::sip::HeaderName;

const CLIENT: &str = "192.0.2.1:5060";
const SERVER: &str = "192.0.2.2:5060";
const LATENCY: Duration = Duration::from_millis(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn parse(text: &str) -> Message {
    Message::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("test message does not parse: {e:?}\n{text}"))
}

/// A request in the style of RFC 3261 §24, with this branch, method, CSeq
/// number and an optional To tag.
fn request(method: &str, branch: &str, seq: u32, to_tag: Option<&str>) -> Message {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    parse(&format!(
        "{method} sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch={branch}\r\n\
         Route: <sip:proxy.atlanta.example.com;lr>\r\n\
         Max-Forwards: 70\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
         To: Bob <sip:bob@biloxi.example.com>{to_tag}\r\n\
         Call-ID: 3848276298220188511@atlanta.example.com\r\n\
         CSeq: {seq} {method}\r\n\
         Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn invite(branch: &str) -> Message {
    request("INVITE", branch, 1, None)
}

/// A response to `req` as a UAS builds it (§8.2.6): Vias, From, Call-ID and
/// CSeq copied, To with a tag added for anything but 100.
fn response(req: &Message, code: u16, reason: &str) -> Message {
    let mut text = format!("SIP/2.0 {code} {reason}\r\n");
    for via in req.headers().filter(|h| h.name == HeaderName::Via) {
        text.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(via.value)));
    }
    let header = |name| String::from_utf8_lossy(req.header(name).unwrap_or_default()).to_string();
    let mut to = header(HeaderName::To);
    if code > 100 && !to.contains(";tag=") {
        to.push_str(";tag=8321234356");
    }
    text.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(HeaderName::From),
        header(HeaderName::CallId),
        header(HeaderName::CSeq),
    ));
    parse(&text)
}

fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dir {
    ToServer,
    ToClient,
}

/// A wire between two transaction layers. Faults name packets by their
/// index among those sent in one direction (0 = first).
struct Net {
    t0: Instant,
    now: Instant,
    client: Transactions,
    server: Transactions,
    /// Loss, duplication and delay, shared with the B2BUA's simulations.
    wire: Wire<Dir>,
    client_events: Vec<(Duration, Event)>,
    server_events: Vec<(Duration, Event)>,
    inbound: Vec<(Duration, Inbound)>,
    strays: Vec<Message>,
    /// The server TU answers every new request at once with this status.
    auto_answer: Option<u16>,
}

impl Net {
    fn new(timers: Timers) -> Net {
        #[allow(clippy::disallowed_methods)] // the test is the clock's owner
        let t0 = Instant::now();
        Net {
            t0,
            now: t0,
            client: Transactions::new(timers),
            server: Transactions::new(timers),
            wire: Wire::new(LATENCY),
            client_events: Vec::new(),
            server_events: Vec::new(),
            inbound: Vec::new(),
            strays: Vec::new(),
            auto_answer: None,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn send_request(&mut self, request: Message, reliable: bool) -> ClientId {
        let id = self
            .client
            .send_request(self.now, request, addr(SERVER), reliable)
            .unwrap_or_else(|e| panic!("send_request failed: {e}"));
        self.flush();
        id
    }

    fn respond(&mut self, id: ServerId, response: Message) {
        self.server
            .send_response(self.now, id, response)
            .unwrap_or_else(|e| panic!("send_response failed: {e}"));
        self.flush();
    }

    /// What the client TU sends outside any transaction (an ACK for a 2xx).
    fn client_raw(&mut self, message: &Message, reliable: bool) {
        self.put(Dir::ToServer, message.to_bytes(), reliable);
    }

    fn put(&mut self, dir: Dir, bytes: Vec<u8>, reliable: bool) {
        self.wire.put(self.now, dir, bytes, reliable);
    }

    /// Drains both layers completely, as the contract says.
    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            assert_eq!(t.remote, addr(SERVER), "client sends to its next hop");
            self.put(Dir::ToServer, t.bytes, t.reliable);
        }
        while let Some(t) = self.server.poll_transmit() {
            assert_eq!(
                t.remote,
                addr(CLIENT),
                "server answers the request's source"
            );
            self.put(Dir::ToClient, t.bytes, t.reliable);
        }
        let at = self.elapsed();
        while let Some(e) = self.client.poll_event() {
            self.client_events.push((at, e));
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push((at, e));
        }
    }

    fn deliver(&mut self, packet: Packet<Dir>) {
        let message = Message::parse(&packet.bytes)
            .unwrap_or_else(|e| panic!("layer sent unparsable bytes: {e:?}"));
        match packet.dir {
            Dir::ToServer => {
                let inbound = self
                    .server
                    .handle_request(self.now, message, addr(CLIENT), packet.reliable)
                    .unwrap_or_else(|e| panic!("handle_request failed: {e}"));
                if let (Some(code), Inbound::Request { id, request }) = (self.auto_answer, &inbound)
                {
                    let answer = response(request, code, "Auto");
                    self.server
                        .send_response(self.now, *id, answer)
                        .unwrap_or_else(|e| panic!("auto answer failed: {e}"));
                }
                self.inbound.push((self.elapsed(), inbound));
            }
            Dir::ToClient => {
                let outcome = self
                    .client
                    .handle_response(self.now, message)
                    .unwrap_or_else(|e| panic!("handle_response failed: {e}"));
                if let ResponseOutcome::Stray(m) = outcome {
                    self.strays.push(m);
                }
            }
        }
        self.flush();
    }

    /// Runs packets and timers in time order up to `end` (relative to t0).
    fn run_until(&mut self, end: Duration) {
        let end = self.t0 + end;
        for _ in 0..1_000_000 {
            self.flush();
            let packet = self.wire.next_at();
            let timer = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next = [packet, timer].into_iter().flatten().min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    if let Some(p) = self.wire.pop_due(self.now) {
                        self.deliver(p);
                    } else {
                        self.client.handle_timeout(self.now);
                        self.server.handle_timeout(self.now);
                    }
                }
                _ => {
                    self.now = self.now.max(end);
                    return;
                }
            }
        }
        panic!("simulation did not settle");
    }

    /// Send times (ms since t0) of packets in `dir` whose start line starts
    /// with `prefix`.
    fn times(&self, dir: Dir, prefix: &str) -> Vec<u64> {
        self.wire
            .log
            .iter()
            .filter(|(_, d, bytes)| *d == dir && first_line(bytes).starts_with(prefix))
            .map(|(at, ..)| (*at - self.t0).as_millis() as u64)
            .collect()
    }

    fn new_requests(&self) -> Vec<(ServerId, Message)> {
        self.inbound
            .iter()
            .filter_map(|(_, i)| match i {
                Inbound::Request { id, request } => Some((*id, request.clone())),
                _ => None,
            })
            .collect()
    }

    fn only_request(&self) -> (ServerId, Message) {
        let mut all = self.new_requests();
        assert_eq!(
            all.len(),
            1,
            "expected one new server transaction: {:?}",
            self.inbound
        );
        all.remove(0)
    }

    fn client_responses(&self, id: ClientId) -> Vec<u16> {
        self.client_events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Response { id: i, response } if *i == id => response.status(),
                _ => None,
            })
            .collect()
    }

    fn events_of(events: &[(Duration, Event)], id: TransactionId) -> Vec<(u64, &'static str)> {
        events
            .iter()
            .filter_map(|(at, e)| {
                let (eid, name) = match e {
                    Event::Response { id, .. } => (TransactionId::Client(*id), "response"),
                    Event::Timeout { id } => (*id, "timeout"),
                    Event::TransportError { id } => (*id, "transport-error"),
                    Event::Terminated { id } => (*id, "terminated"),
                };
                (eid == id && name != "response").then_some((at.as_millis() as u64, name))
            })
            .collect()
    }

    fn client_ends(&self, id: ClientId) -> Vec<(u64, &'static str)> {
        Self::events_of(&self.client_events, id.into())
    }

    fn server_ends(&self, id: ServerId) -> Vec<(u64, &'static str)> {
        Self::events_of(&self.server_events, id.into())
    }
}

// ---------------------------------------------------------------- client INVITE

#[test]
fn timer_a_doubles_without_cap_until_timer_b() {
    let mut net = Net::new(Timers::default());
    net.wire.drop_from.insert(Dir::ToServer, 0);
    let id = net.send_request(invite("z9hG4bK74bf9"), false);
    net.run_until(Duration::from_secs(40));
    // A: T1, 2T1, 4T1, ... (8 s and 16 s intervals exceed T2: no cap).
    assert_eq!(
        net.times(Dir::ToServer, "INVITE"),
        vec![0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(
        net.client_ends(id),
        vec![(32000, "timeout"), (32000, "terminated")]
    );
    assert!(net.client.is_empty(), "B ends the transaction");
    assert_eq!(
        net.client.poll_timeout(),
        None,
        "no stale deadline survives"
    );
}

#[test]
fn provisional_stops_timer_a_and_timer_b() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(invite("z9hG4bKprov"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 180, "Ringing"));
    net.run_until(Duration::from_secs(120));
    assert_eq!(
        net.times(Dir::ToServer, "INVITE"),
        vec![0],
        "A stopped by the 180"
    );
    assert_eq!(net.client_responses(id), vec![180]);
    assert!(
        net.client.contains(id),
        "Proceeding has no timer of its own"
    );
    net.client.terminate(id).unwrap_or_else(|e| panic!("{e}"));
    net.flush();
    assert_eq!(net.client_ends(id), vec![(120000, "terminated")]);
}

#[test]
fn non_2xx_final_is_acked_by_the_transaction_and_retransmissions_reack() {
    let mut net = Net::new(Timers::default());
    net.wire.duplicate.insert((Dir::ToClient, 0));
    let id = net.send_request(invite("z9hG4bKack"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 486, "Busy Here"));
    net.run_until(Duration::from_secs(1));
    assert_eq!(
        net.client_responses(id),
        vec![486],
        "the duplicate is absorbed"
    );
    let acks: Vec<_> = net
        .wire
        .log
        .iter()
        .filter(|(_, d, b)| *d == Dir::ToServer && first_line(b).starts_with("ACK"))
        .map(|(_, _, b)| b.clone())
        .collect();
    assert_eq!(acks.len(), 2, "one ACK per received 486");
    assert_eq!(acks[0], acks[1], "the retransmitted ACK is the same ACK");
    let ack = parse(std::str::from_utf8(&acks[0]).unwrap_or_default());
    assert_eq!(ack.request_uri_bytes(), req.request_uri_bytes());
    assert_eq!(ack.values(HeaderName::Via).count(), 1, "single top Via");
    assert_eq!(ack.top_via().and_then(|v| v.branch()), Some("z9hG4bKack"));
    assert_eq!(ack.header(HeaderName::Route), req.header(HeaderName::Route));
    assert_eq!(ack.header(HeaderName::From), req.header(HeaderName::From));
    assert_eq!(ack.call_id(), req.call_id());
    assert_eq!(
        ack.to().and_then(|t| t.tag()),
        Some("8321234356"),
        "To from the response"
    );
    let cseq = ack.cseq().unwrap_or_else(|| panic!("ACK without CSeq"));
    assert_eq!((cseq.seq, cseq.method), (1, "ACK"));
    // D = 32 s on the client; I = T4 after the first ACK on the server.
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.client_ends(id), vec![(32030, "terminated")]);
    assert_eq!(net.server_ends(sid), vec![(5040, "terminated")]);
    assert!(
        !net.inbound
            .iter()
            .any(|(_, i)| matches!(i, Inbound::Ack { .. })),
        "ACKs for a non-2xx never reach the TU"
    );
}

#[test]
fn lost_final_response_is_recovered_by_timer_g() {
    let mut net = Net::new(Timers::default());
    net.wire.drop.insert((Dir::ToClient, 0));
    let id = net.send_request(invite("z9hG4bKlost"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 603, "Decline"));
    net.run_until(Duration::from_secs(2));
    // Sent at 20 ms (lost); the INVITE retransmission arriving at 510 ms
    // triggers a resend, and so does timer G at 20 + 500 ms.
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 603"), vec![20, 510, 520]);
    assert_eq!(net.client_responses(id), vec![603]);
    assert_eq!(
        net.times(Dir::ToServer, "ACK").len(),
        2,
        "one ACK per 603 received"
    );
    net.run_until(Duration::from_secs(10));
    assert_eq!(
        net.server_ends(sid),
        vec![(5530, "terminated")],
        "Confirmed by the first ACK, then timer I"
    );
}

#[test]
fn lost_ack_is_recovered() {
    let mut net = Net::new(Timers::default());
    // ToServer: 0 = INVITE, 1 = first ACK (lost).
    net.wire.drop.insert((Dir::ToServer, 1));
    let _id = net.send_request(invite("z9hG4bKlostack"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 480, "Temporarily Unavailable"));
    net.run_until(Duration::from_secs(10));
    // G fires at +500 ms; the client re-ACKs; the server stops at Confirmed.
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 480"), vec![20, 520]);
    assert_eq!(net.times(Dir::ToServer, "ACK"), vec![30, 530]);
    assert_eq!(net.server_ends(sid), vec![(5540, "terminated")]);
    let absorbed = net
        .inbound
        .iter()
        .filter(|(_, i)| matches!(i, Inbound::Absorbed(s) if *s == sid))
        .count();
    assert_eq!(absorbed, 1, "the ACK is absorbed");
}

#[test]
fn timer_g_caps_at_t2_and_timer_h_reports_missing_ack() {
    let mut net = Net::new(Timers::default());
    net.wire.drop_from.insert(Dir::ToServer, 1);
    let _id = net.send_request(invite("z9hG4bKnoack"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 500, "Server Internal Error"));
    net.run_until(Duration::from_secs(40));
    let sent: Vec<u64> = net
        .times(Dir::ToClient, "SIP/2.0 500")
        .into_iter()
        .map(|t| t - 20)
        .collect();
    assert_eq!(
        sent,
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        net.server_ends(sid),
        vec![(32020, "timeout"), (32020, "terminated")]
    );
}

#[test]
fn a_quiet_final_answers_only_retransmissions_then_ends_without_a_timeout() {
    // Our 500 and its answer to the first retransmission are lost: without
    // timer G we send one final per INVITE that reaches us (0, 500, 1500
    // ms), the third gets through, and the transaction ends by the ACK's
    // timer I, never by a timeout.
    let mut net = Net::new(Timers::default());
    net.wire.drop.insert((Dir::ToClient, 0));
    net.wire.drop.insert((Dir::ToClient, 1));
    let _id = net.send_request(invite("z9hG4bKquiet"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 500, "Server Internal Error"));
    net.server
        .quiet(net.now, sid, Duration::from_secs(4))
        .expect("a server transaction");
    net.run_until(Duration::from_secs(40));
    let finals = net.times(Dir::ToClient, "SIP/2.0 500");
    let invites = net.times(Dir::ToServer, "INVITE");
    assert_eq!(invites.len(), 3, "the INVITE and 2 retransmissions");
    assert_eq!(finals.len(), 3, "one final per INVITE received, no timer G");
    assert!(
        net.server_ends(sid)
            .iter()
            .all(|(_, how)| *how != "timeout"),
        "{:?}",
        net.server_ends(sid)
    );
    // A non-INVITE one ends at once.
    let mut net = Net::new(Timers::default());
    net.send_request(request("OPTIONS", "z9hG4bKquiet2", 1, None), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 200, "OK"));
    net.server
        .quiet(net.now, sid, Duration::from_secs(4))
        .expect("known");
    assert!(net.server.is_empty());
}

// ---------------------------------------------------------------- 2xx, RFC 6026

#[test]
fn two_hundred_goes_through_accepted_on_both_sides() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(invite("z9hG4bK2xx"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    let ok = response(&req, 200, "OK");
    net.respond(sid, ok.clone());
    net.run_until(ms(600));
    // The TU retransmits its 2xx (§13.3.1.4); the transaction just sends it.
    net.respond(sid, ok.clone());
    net.run_until(ms(700));
    assert_eq!(
        net.client_responses(id),
        vec![200, 200],
        "each 2xx reaches the TU"
    );
    assert_eq!(
        net.times(Dir::ToServer, "INVITE"),
        vec![0],
        "A stopped by the 2xx"
    );
    assert!(
        net.times(Dir::ToServer, "ACK").is_empty(),
        "no ACK for a 2xx from here"
    );
    // The TU's ACK for the 2xx has its own branch: the server TU gets it.
    let mut ack = request("ACK", "z9hG4bK2xxack", 1, Some("8321234356"));
    ack.set_request_uri(b"sip:bob@client.biloxi.example.com");
    net.client_raw(&ack, false);
    net.run_until(ms(800));
    assert!(matches!(
        net.inbound.last(),
        Some((
            _,
            Inbound::Ack {
                transaction: None,
                ..
            }
        ))
    ));
    // Timers L and M end both after 64*T1; a 2xx after that is stray.
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.client_ends(id), vec![(32030, "terminated")]);
    assert_eq!(net.server_ends(sid), vec![(32020, "terminated")]);
    net.put(Dir::ToClient, ok.to_bytes(), false);
    net.run_until(Duration::from_secs(41));
    assert_eq!(net.strays.len(), 1, "a late 2xx goes to the TU as stray");
}

#[test]
fn invite_retransmission_in_accepted_is_absorbed() {
    let mut net = Net::new(Timers::default());
    net.wire.duplicate.insert((Dir::ToServer, 0));
    net.wire.delay.insert((Dir::ToServer, 0), ms(0));
    let inv = invite("z9hG4bKacc");
    let _ = net.send_request(inv.clone(), false);
    net.run_until(ms(10));
    let (sid, req) = match &net.inbound[0] {
        (_, Inbound::Request { id, request }) => (*id, request.clone()),
        other => panic!("expected a new request, got {other:?}"),
    };
    // The duplicate is already delivered; answer, then replay the INVITE.
    net.respond(sid, response(&req, 200, "OK"));
    net.put(Dir::ToServer, inv.to_bytes(), false);
    net.run_until(ms(100));
    assert!(matches!(net.inbound.last(), Some((_, Inbound::Absorbed(s))) if *s == sid));
    assert_eq!(
        net.times(Dir::ToClient, "SIP/2.0 200").len(),
        1,
        "no 2xx resend by the layer"
    );
}

// ---------------------------------------------------------------- 100 Trying

#[test]
fn server_sends_100_trying_at_200ms_when_tu_is_silent() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(invite("z9hG4bKtry"), false);
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 100"), vec![210]);
    assert_eq!(net.client_responses(id), vec![100]);
    assert_eq!(
        net.times(Dir::ToServer, "INVITE"),
        vec![0],
        "100 stops timer A"
    );
    let trying = net
        .wire
        .log
        .iter()
        .find(|(_, d, b)| *d == Dir::ToClient && first_line(b).starts_with("SIP/2.0 100"))
        .map(|(_, _, b)| parse(std::str::from_utf8(b).unwrap_or_default()))
        .unwrap_or_else(|| panic!("no 100 Trying"));
    assert_eq!(trying.cseq().map(|c| c.method), Some("INVITE"));
    assert_eq!(
        trying.to().and_then(|t| t.tag()),
        None,
        "100 adds no To tag"
    );
}

#[test]
fn no_100_trying_when_tu_answers_first() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(invite("z9hG4bKfast"), false);
    net.run_until(ms(50));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 180, "Ringing"));
    net.run_until(Duration::from_secs(2));
    assert!(net.times(Dir::ToClient, "SIP/2.0 100").is_empty());
    assert_eq!(net.client_responses(id), vec![180]);
}

#[test]
fn the_tu_sends_100_trying_at_once_and_only_once() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(invite("z9hG4bKnow"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.server.send_trying(net.now, sid);
    net.flush();
    // Asking again, or after a provisional of the TU's, sends nothing more.
    net.server.send_trying(net.now, sid);
    net.flush();
    net.run_until(ms(100));
    net.respond(sid, response(&req, 180, "Ringing"));
    net.server.send_trying(net.now, sid);
    net.flush();
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 100"), vec![20]);
    assert_eq!(net.client_responses(id), vec![100, 180]);
}

#[test]
fn invite_retransmission_gets_the_latest_provisional() {
    let timers = Timers {
        trying: Duration::from_secs(1),
        ..Timers::default()
    };
    let mut net = Net::new(timers);
    // The 100 sent early (for the retransmission at 500 ms) is lost.
    net.wire.drop.insert((Dir::ToClient, 0));
    let _ = net.send_request(invite("z9hG4bKre"), false);
    net.run_until(ms(700));
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 100"), vec![510]);
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 183, "Session Progress"));
    net.run_until(ms(1600));
    // The 183 was delivered, so A stopped: exactly one 183 on the wire.
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 183"), vec![700]);
    assert_eq!(net.times(Dir::ToServer, "INVITE"), vec![0, 500]);
}

// ---------------------------------------------------------------- non-INVITE

#[test]
fn timer_e_doubles_to_t2_until_timer_f() {
    let mut net = Net::new(Timers::default());
    net.wire.drop_from.insert(Dir::ToServer, 0);
    let id = net.send_request(request("OPTIONS", "z9hG4bKopt", 1, None), false);
    net.run_until(Duration::from_secs(40));
    assert_eq!(
        net.times(Dir::ToServer, "OPTIONS"),
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        net.client_ends(id),
        vec![(32000, "timeout"), (32000, "terminated")]
    );
}

#[test]
fn timer_e_in_proceeding_fires_every_t2() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(request("BYE", "z9hG4bKbye", 2, Some("8321234356")), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 100, "Trying"));
    net.run_until(Duration::from_secs(10));
    // E was due at 500 ms; from Proceeding on it is T2.
    assert_eq!(net.times(Dir::ToServer, "BYE"), vec![0, 500, 4500, 8500]);
    assert_eq!(
        net.times(Dir::ToClient, "SIP/2.0 100").len(),
        4,
        "each retransmission re-answered"
    );
    assert_eq!(net.client_responses(id), vec![100, 100, 100, 100]);
    net.respond(sid, response(&req, 200, "OK"));
    net.run_until(Duration::from_secs(60));
    assert_eq!(net.client_responses(id), vec![100, 100, 100, 100, 200]);
    // K = T4 after the 200 (sent at 10 s, received at 10.01 s); J = 64*T1.
    assert_eq!(net.client_ends(id), vec![(15010, "terminated")]);
    assert_eq!(net.server_ends(sid), vec![(42000, "terminated")]);
}

#[test]
fn lost_non_invite_final_is_recovered_by_retransmission() {
    let mut net = Net::new(Timers::default());
    net.wire.drop.insert((Dir::ToClient, 0));
    let id = net.send_request(request("REGISTER", "z9hG4bKreg", 1, None), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 200, "OK"));
    net.run_until(Duration::from_secs(2));
    assert_eq!(net.times(Dir::ToClient, "SIP/2.0 200"), vec![20, 510]);
    assert_eq!(net.client_responses(id), vec![200], "reported once");
    assert!(
        net.inbound
            .iter()
            .any(|(_, i)| matches!(i, Inbound::Absorbed(s) if *s == sid)),
        "the retransmitted REGISTER is absorbed"
    );
    assert_eq!(net.new_requests().len(), 1);
}

#[test]
fn reordered_responses_final_first() {
    let mut net = Net::new(Timers::default());
    // ToClient: 0 = 180 (delayed past the 486), 1 = 486.
    net.wire.delay.insert((Dir::ToClient, 0), ms(50));
    let id = net.send_request(invite("z9hG4bKreorder"), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 180, "Ringing"));
    net.respond(sid, response(&req, 486, "Busy Here"));
    net.run_until(ms(200));
    assert_eq!(
        net.client_responses(id),
        vec![486],
        "a late 180 is not passed up"
    );
    assert_eq!(net.times(Dir::ToServer, "ACK").len(), 1);
}

// ---------------------------------------------------------------- reliable

#[test]
fn reliable_transports_have_no_retransmissions_and_zero_linger() {
    let mut net = Net::new(Timers::default());
    net.wire.drop_from.insert(Dir::ToServer, 0);
    let silent = net.send_request(invite("z9hG4bKtcp1"), true);
    let silent_bye = net.send_request(request("BYE", "z9hG4bKtcp2", 2, Some("x")), true);
    net.run_until(Duration::from_secs(40));
    assert_eq!(net.times(Dir::ToServer, "INVITE"), vec![0], "no timer A");
    assert_eq!(net.times(Dir::ToServer, "BYE"), vec![0], "no timer E");
    assert_eq!(
        net.client_ends(silent),
        vec![(32000, "timeout"), (32000, "terminated")]
    );
    assert_eq!(
        net.client_ends(silent_bye),
        vec![(32000, "timeout"), (32000, "terminated")]
    );

    let mut net = Net::new(Timers::default());
    let inv = net.send_request(invite("z9hG4bKtcp3"), true);
    let bye = net.send_request(request("BYE", "z9hG4bKtcp4", 2, Some("x")), true);
    net.run_until(ms(20));
    let requests = net.new_requests();
    assert_eq!(requests.len(), 2);
    for (sid, req) in requests {
        let code = if req.method() == Some(Method::Invite) {
            486
        } else {
            200
        };
        net.respond(sid, response(&req, code, "Final"));
    }
    net.run_until(ms(100));
    // D = 0 and K = 0: the client ends on the final; J = 0 on the server's
    // 200, I = 0 on the ACK.
    assert_eq!(net.client_ends(inv), vec![(30, "terminated")]);
    assert_eq!(net.client_ends(bye), vec![(30, "terminated")]);
    let ends: Vec<_> = net
        .server_events
        .iter()
        .map(|(at, e)| (at.as_millis(), e.clone()))
        .collect();
    assert_eq!(ends.len(), 2, "both server transactions ended: {ends:?}");
    assert_eq!(ends[0].0, 20, "J = 0");
    assert_eq!(ends[1].0, 40, "I = 0 at the ACK");
    assert!(net.client.is_empty() && net.server.is_empty());
}

// ---------------------------------------------------------------- matching

#[test]
fn rfc2543_fallback_matching() {
    let timers = Timers::default();
    let mut server = Transactions::new(timers);
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let from = addr(CLIENT);
    // No magic cookie: RFC 2543 rules.
    let inv = invite("0a1b2c");
    let first = server.handle_request(t0, inv.clone(), from, false);
    let Ok(Inbound::Request { id, .. }) = first else {
        panic!("expected a new transaction, got {first:?}");
    };
    assert_eq!(
        server.handle_request(t0 + ms(500), inv.clone(), from, false),
        Ok(Inbound::Absorbed(id)),
        "a retransmission matches without a branch"
    );
    // A different CSeq number is a new transaction.
    let other = request("INVITE", "0a1b2c", 2, None);
    assert!(matches!(
        server.handle_request(t0, other, from, false),
        Ok(Inbound::Request { .. })
    ));
    // A CANCEL matches the INVITE by the same fields.
    let cancel = request("CANCEL", "0a1b2c", 1, None);
    assert!(matches!(
        server.handle_request(t0 + ms(550), cancel, from, false),
        Ok(Inbound::Cancel { target: Some(t), .. }) if t == id
    ));
    server
        .send_response(t0 + ms(600), id, response(&inv, 486, "Busy Here"))
        .unwrap_or_else(|e| panic!("{e}"));
    // An ACK matches only with the To tag of the response.
    let wrong = request("ACK", "0a1b2c", 1, Some("not-the-tag"));
    assert!(matches!(
        server.handle_request(t0 + ms(700), wrong, from, false),
        Ok(Inbound::Ack {
            transaction: None,
            ..
        })
    ));
    let ack = request("ACK", "0a1b2c", 1, Some("8321234356"));
    assert_eq!(
        server.handle_request(t0 + ms(700), ack, from, false),
        Ok(Inbound::Absorbed(id))
    );
    // Confirmed: no more 486 retransmissions (timer G stopped).
    while server.poll_transmit().is_some() {}
    server.handle_timeout(t0 + Duration::from_secs(3));
    while let Some(t) = server.poll_transmit() {
        assert_ne!(
            t.id,
            TransactionId::Server(id),
            "G runs no more after the ACK"
        );
    }
    server.handle_timeout(t0 + ms(700) + timers.t4);
    assert!(!server.contains(id), "timer I ended it");
}

#[test]
fn server_matching_uses_branch_sent_by_and_method() {
    let mut server = Transactions::new(Timers::default());
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let from = addr(CLIENT);
    let a = request("OPTIONS", "z9hG4bKsame", 1, None);
    let text = String::from_utf8_lossy(&a.to_bytes()).replace(
        "client.atlanta.example.com:5060",
        "CLIENT.atlanta.example.com:5060",
    );
    let a_upper = parse(&text);
    let b = parse(&text.replace(":5060;", ":5070;"));
    let Ok(Inbound::Request { id, .. }) = server.handle_request(t0, a, from, false) else {
        panic!("first OPTIONS should open a transaction");
    };
    assert_eq!(
        server.handle_request(t0, a_upper, from, false),
        Ok(Inbound::Absorbed(id)),
        "sent-by host compares case-insensitively"
    );
    assert!(
        matches!(server.handle_request(t0, b, from, false), Ok(Inbound::Request { id: other, .. }) if other != id),
        "another sent-by is another transaction"
    );
    let info = request("INFO", "z9hG4bKsame", 1, None);
    assert!(
        matches!(
            server.handle_request(t0, info, from, false),
            Ok(Inbound::Request { .. })
        ),
        "another method is another transaction"
    );
}

#[test]
fn cancel_matches_its_invite_transaction() {
    let mut net = Net::new(Timers::default());
    let inv = invite("z9hG4bKcancel");
    let id = net.send_request(inv.clone(), false);
    net.run_until(ms(20));
    let (sid, req) = net.only_request();
    net.respond(sid, response(&req, 180, "Ringing"));
    net.run_until(ms(40));
    // §9.1: the CANCEL reuses the INVITE's branch, Request-URI and CSeq number.
    let built = net
        .client
        .cancel_request(id)
        .unwrap_or_else(|e| panic!("cancel_request: {e}"));
    assert_eq!(built.method(), Some(Method::Cancel));
    assert_eq!(built.request_uri_bytes(), inv.request_uri_bytes());
    assert_eq!(built.values(HeaderName::Via).count(), 1);
    assert_eq!(
        built.top_via().and_then(|v| v.branch()),
        Some("z9hG4bKcancel")
    );
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::Route,
    ] {
        assert_eq!(built.header(name), inv.header(name), "{name:?} copied");
    }
    assert_eq!(built.cseq().map(|c| (c.seq, c.method)), Some((1, "CANCEL")));
    let cancel_id = net.send_request(built, false);
    assert_ne!(cancel_id, id);
    net.run_until(ms(60));
    let (cid, cancel) = match net.inbound.last() {
        Some((
            _,
            Inbound::Cancel {
                id,
                target,
                request,
            },
        )) => {
            assert_eq!(*target, Some(sid), "CANCEL names its INVITE transaction");
            (*id, request.clone())
        }
        other => panic!("expected a CANCEL, got {other:?}"),
    };
    assert_ne!(cid, sid, "the CANCEL has a transaction of its own");
    net.respond(cid, response(&cancel, 200, "OK"));
    net.respond(sid, response(&req, 487, "Request Terminated"));
    net.run_until(ms(100));
    assert_eq!(net.client_responses(cancel_id), vec![200]);
    assert_eq!(net.client_responses(id), vec![180, 487]);
    assert_eq!(
        net.client.cancel_request(id),
        Err(TransactionError::NotCancellable)
    );
    assert_eq!(
        net.client.cancel_request(cancel_id),
        Err(TransactionError::NotCancellable),
        "K = T4 has not run out, but a CANCEL is no INVITE"
    );
    // A CANCEL for an unknown INVITE matches nothing (the TU answers 481).
    net.send_request(request("CANCEL", "z9hG4bKnothing", 1, None), false);
    net.run_until(ms(200));
    assert!(matches!(
        net.inbound.last(),
        Some((_, Inbound::Cancel { target: None, .. }))
    ));
}

#[test]
fn responses_match_on_branch_and_cseq_method() {
    let mut client = Transactions::new(Timers::default());
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let inv = invite("z9hG4bKcm");
    let id = client
        .send_request(t0, inv.clone(), addr(SERVER), false)
        .unwrap_or_else(|e| panic!("{e}"));
    // Same branch, CSeq method CANCEL: not this transaction.
    let cancel = request("CANCEL", "z9hG4bKcm", 1, None);
    assert!(matches!(
        client.handle_response(t0, response(&cancel, 200, "OK")),
        Ok(ResponseOutcome::Stray(_))
    ));
    assert_eq!(
        client.handle_response(t0, response(&inv, 180, "Ringing")),
        Ok(ResponseOutcome::Matched(id))
    );
    let other = invite("z9hG4bKother");
    assert!(matches!(
        client.handle_response(t0, response(&other, 180, "Ringing")),
        Ok(ResponseOutcome::Stray(_))
    ));
}

// ---------------------------------------------------------------- bounds, errors

#[test]
fn the_table_is_capped() {
    let mut server = Transactions::new(Timers::default()).with_max_transactions(2);
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let from = addr(CLIENT);
    for n in 0..2 {
        let r = request("OPTIONS", &format!("z9hG4bKcap{n}"), 1, None);
        assert!(matches!(
            server.handle_request(t0, r, from, false),
            Ok(Inbound::Request { .. })
        ));
    }
    let third = request("OPTIONS", "z9hG4bKcap2", 1, None);
    assert!(matches!(
        server.handle_request(t0, third.clone(), from, false),
        Ok(Inbound::Full(_))
    ));
    // Retransmissions of live transactions and ACKs still work when full.
    let again = request("OPTIONS", "z9hG4bKcap0", 1, None);
    assert!(matches!(
        server.handle_request(t0, again, from, false),
        Ok(Inbound::Absorbed(_))
    ));
    let ack = request("ACK", "z9hG4bKcapack", 1, Some("t"));
    assert!(matches!(
        server.handle_request(t0, ack, from, false),
        Ok(Inbound::Ack {
            transaction: None,
            ..
        })
    ));
    assert_eq!(
        server.send_request(t0, invite("z9hG4bKcapc"), addr(SERVER), false),
        Err(TransactionError::Full(2))
    );
    assert_eq!(server.len(), 2, "nothing grew");
    // Trying without a response never ends by itself: the TU answers. Answer
    // one; after J the slot is free again.
    let Some(id) = (1..=2).map(ServerId).find(|id| server.contains(*id)) else {
        panic!("no live server transaction");
    };
    let r = request("OPTIONS", "z9hG4bKcap0", 1, None);
    server
        .send_response(t0, id, response(&r, 503, "Service Unavailable"))
        .unwrap_or_else(|e| panic!("{e}"));
    server.handle_timeout(t0 + Duration::from_secs(32));
    assert!(matches!(
        server.handle_request(t0, third, from, false),
        Ok(Inbound::Request { .. })
    ));
}

#[test]
fn misuse_is_reported() {
    let mut t = Transactions::new(Timers::default());
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let inv = invite("z9hG4bKmis");
    assert_eq!(
        t.send_request(t0, request("ACK", "z9hG4bKa", 1, None), addr(SERVER), false),
        Err(TransactionError::AckRequest)
    );
    assert_eq!(
        t.send_request(t0, response(&inv, 200, "OK"), addr(SERVER), false),
        Err(TransactionError::WrongKind {
            expected: "request"
        })
    );
    let id = t
        .send_request(t0, inv.clone(), addr(SERVER), false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.send_request(t0, inv.clone(), addr(SERVER), false),
        Err(TransactionError::DuplicateBranch)
    );
    let mut no_branch = inv.clone();
    no_branch.replace_vias(&[b"SIP/2.0/UDP client.atlanta.example.com"]);
    assert_eq!(
        t.send_request(t0, no_branch, addr(SERVER), false),
        Err(TransactionError::Missing("a branch in the top Via"))
    );
    let ghost = ServerId(999);
    assert_eq!(
        t.send_response(t0, ghost, response(&inv, 200, "OK")),
        Err(TransactionError::Unknown(ghost.into()))
    );
    let Ok(Inbound::Request { id: sid, .. }) =
        t.handle_request(t0, invite("z9hG4bKsrv"), addr(CLIENT), false)
    else {
        panic!("expected a server transaction");
    };
    assert_eq!(
        t.send_response(t0, sid, response(&inv, 486, "Busy Here")),
        Err(TransactionError::Mismatch),
        "a response to another request"
    );
    let srv = invite("z9hG4bKsrv");
    assert_eq!(
        t.send_response(t0, sid, srv.clone()),
        Err(TransactionError::WrongKind {
            expected: "response"
        })
    );
    t.send_response(t0, sid, response(&srv, 486, "Busy Here"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.send_response(t0, sid, response(&srv, 200, "OK")),
        Err(TransactionError::FinalSent)
    );
    assert_eq!(
        t.send_response(t0, sid, response(&srv, 180, "Ringing")),
        Err(TransactionError::FinalSent)
    );
    assert_eq!(
        t.cancel_request(id),
        Err(TransactionError::NoProvisionalYet),
        "§9.1: no CANCEL before a provisional"
    );
    assert_eq!(t.terminate(id), Ok(()));
    assert_eq!(t.terminate(id), Err(TransactionError::Unknown(id.into())));
}

#[test]
fn transport_error_ends_the_transaction() {
    let mut net = Net::new(Timers::default());
    let id = net.send_request(request("MESSAGE", "z9hG4bKte", 1, None), false);
    net.client
        .handle_transport_error(net.now, id)
        .unwrap_or_else(|e| panic!("{e}"));
    net.flush();
    assert_eq!(
        net.client_ends(id),
        vec![(0, "transport-error"), (0, "terminated")]
    );
    assert_eq!(net.client.poll_timeout(), None);
}

#[test]
fn thousands_of_transactions_time_out_through_the_heap() {
    let mut client = Transactions::new(Timers::default());
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let n = 5_000u32;
    for i in 0..n {
        let at = t0 + ms(u64::from(i % 1000));
        client
            .send_request(
                at,
                request("OPTIONS", &format!("z9hG4bK{i}"), i, None),
                addr(SERVER),
                false,
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut sent = 0usize;
    let mut timeouts = 0usize;
    let mut wakeups = 0usize;
    while let Some(at) = client.poll_timeout() {
        wakeups += 1;
        assert!(wakeups < 1_000_000, "timer loop does not converge");
        client.handle_timeout(at);
        while client.poll_transmit().is_some() {
            sent += 1;
        }
        while let Some(e) = client.poll_event() {
            timeouts += usize::from(matches!(e, Event::Timeout { .. }));
        }
    }
    assert_eq!(timeouts, n as usize, "every transaction reached timer F");
    assert_eq!(
        sent,
        10 * n as usize + n as usize,
        "initial send plus ten E retransmissions each"
    );
    assert!(client.is_empty());
}

// ---------------------------------------------------------------- fault sweeps

/// Runs one request through a faulty network with an answering server TU and
/// checks what must hold whatever the network did.
/// Returns how many final responses reached the client TU.
fn check_flow(mut net: Net, method: &str, code: u16, label: &str) -> usize {
    let req = request(method, "z9hG4bKsweep", 1, None);
    let id = net.send_request(req, false);
    net.run_until(Duration::from_secs(100));
    let finals = net
        .client_responses(id)
        .into_iter()
        .filter(|&c| c >= 200)
        .count();
    let ends = net.client_ends(id);
    let timed_out = ends.iter().any(|(_, e)| *e == "timeout");
    assert!(
        (finals > 0) != timed_out,
        "{label}: exactly one of final ({finals}) or timeout ({timed_out})"
    );
    // Every copy of a 2xx reaches the TU (RFC 6026 Accepted); a non-2xx
    // final is reported once.
    assert!(
        finals <= 1 || (200..300).contains(&code),
        "{label}: {finals} non-2xx finals reported"
    );
    assert!(
        net.new_requests().len() <= 1,
        "{label}: the TU saw one request at most"
    );
    assert!(
        !net.inbound
            .iter()
            .any(|(_, i)| matches!(i, Inbound::Ack { .. })),
        "{label}: a non-2xx ACK reached the TU"
    );
    assert!(
        ends.last().is_some_and(|(_, e)| *e == "terminated"),
        "{label}: client ended"
    );
    assert!(
        net.client.is_empty() && net.server.is_empty(),
        "{label}: tables drained"
    );
    assert_eq!(
        net.client.poll_timeout(),
        None,
        "{label}: no client timer left"
    );
    assert_eq!(
        net.server.poll_timeout(),
        None,
        "{label}: no server timer left"
    );
    let answered = net.times(Dir::ToClient, &format!("SIP/2.0 {code}"));
    assert!(
        finals == 0 || !answered.is_empty(),
        "{label}: a final from nowhere"
    );
    finals
}

#[test]
fn every_single_loss_is_recovered() {
    for (method, code) in [("INVITE", 486), ("OPTIONS", 200)] {
        for dir in [Dir::ToServer, Dir::ToClient] {
            for n in 0..6 {
                let mut net = Net::new(Timers::default());
                net.auto_answer = Some(code);
                net.wire.drop.insert((dir, n));
                let label = format!("{method} dropping {dir:?} #{n}");
                let finals = check_flow(net, method, code, &label);
                assert_eq!(finals, 1, "{label}: one loss cost the final response");
            }
        }
    }
}

#[test]
fn random_loss_duplication_and_reordering() {
    for seed in 0..60u64 {
        // A 2xx is retransmitted by nobody here (that is the TU's job), so
        // a lost 200 ends in timer B on the client: still exactly one outcome.
        for (method, code) in [
            ("INVITE", 404),
            ("INVITE", 200),
            ("INVITE", 100),
            ("BYE", 481),
        ] {
            let mut net = Net::new(Timers::default());
            net.auto_answer = Some(code);
            net.wire.chaos = Some(Chaos {
                rng: Lcg::new(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1),
                loss: 35,
                max_delay_ms: 700,
                duplicate: 0,
            });
            for i in 0..8 {
                net.wire.duplicate.insert((Dir::ToClient, i));
            }
            if code == 100 {
                // A provisional only: no final ever comes, B does not run in
                // Proceeding; the TU gives up as after a CANCEL.
                let id = net.send_request(invite("z9hG4bKprov"), false);
                net.run_until(Duration::from_secs(100));
                let got_100 = net.client_responses(id).contains(&100);
                assert_eq!(
                    net.client.contains(id),
                    got_100,
                    "seed {seed}: B only in Calling"
                );
                continue;
            }
            let _ = check_flow(net, method, code, &format!("seed {seed} {method} {code}"));
        }
    }
}

#[test]
fn a_response_flood_does_not_grow_the_deadlines() {
    let mut client = Transactions::new(Timers::default());
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let inv = invite("z9hG4bKflood");
    client
        .send_request(t0, inv.clone(), addr(SERVER), false)
        .unwrap_or_else(|e| panic!("{e}"));
    let ringing = response(&inv, 180, "Ringing");
    for i in 0..10_000u64 {
        let outcome = client.handle_response(t0 + Duration::from_micros(i), ringing.clone());
        assert!(matches!(outcome, Ok(ResponseOutcome::Matched(_))));
    }
    assert!(
        client.pending_deadlines() <= 2,
        "deadlines grew to {}",
        client.pending_deadlines()
    );
    // Churn: reliable transactions that end at once leave no pile of entries.
    for i in 0..20_000u32 {
        let r = request("OPTIONS", &format!("z9hG4bKchurn{i}"), 1, None);
        let id = client
            .send_request(t0, r.clone(), addr(SERVER), true)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            client.handle_response(t0, response(&r, 200, "OK")),
            Ok(ResponseOutcome::Matched(id))
        );
        assert!(!client.contains(id), "K = 0 on a reliable transport");
    }
    assert!(
        client.pending_deadlines() <= 8 * client.len() + 1024,
        "stale deadlines piled up: {}",
        client.pending_deadlines()
    );
}

#[test]
fn degenerate_timers_neither_panic_nor_spin() {
    for timers in [
        Timers {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
            d: Duration::ZERO,
            trying: Duration::ZERO,
        },
        Timers {
            t2: Duration::ZERO,
            ..Timers::default()
        },
        Timers {
            t1: Duration::MAX,
            t2: Duration::MAX,
            t4: Duration::MAX,
            d: Duration::MAX,
            trying: Duration::MAX,
        },
    ] {
        let mut net = Net::new(timers);
        net.auto_answer = Some(100);
        let inv = net.send_request(invite("z9hG4bKdeg1"), false);
        let bye = net.send_request(request("BYE", "z9hG4bKdeg2", 2, Some("x")), false);
        net.run_until(Duration::from_secs(100));
        let wire = net.wire.log.len();
        assert!(wire < 200_000, "{timers:?}: {wire} packets in 100 s");
        for id in [inv, bye] {
            // Either ended, or waits for a final that never comes.
            let _ = net.client.terminate(id);
        }
        net.flush();
        assert!(net.client.is_empty(), "{timers:?}: client drained");
    }
}

#[test]
fn a_non_invite_its_tu_never_answers_is_dropped_after_twice_timer_f() {
    let timers = Timers::default();
    let mut server = Transactions::new(timers);
    #[allow(clippy::disallowed_methods)] // the test owns the clock
    let t0 = Instant::now();
    let from = addr(CLIENT);
    let Ok(Inbound::Request { id: abandoned, .. }) = server.handle_request(
        t0,
        request("INFO", "z9hG4bKlost", 1, Some("t")),
        from,
        false,
    ) else {
        panic!("INFO opens a transaction");
    };
    // One the TU answers with a provisional only is bounded the same way;
    // one it answers in full lingers for timer J and ends normally.
    let Ok(Inbound::Request {
        id: answered,
        request,
    }) = server.handle_request(t0, request("OPTIONS", "z9hG4bKok", 2, None), from, false)
    else {
        panic!("OPTIONS opens a transaction");
    };
    let ok = response(&request, 200, "OK");
    assert_eq!(server.send_response(t0, answered, ok), Ok(()));

    let bound = timers.t1x64() * ABANDONED_AFTER_T1X64;
    server.handle_timeout(t0 + bound - ms(1));
    assert!(server.contains(abandoned), "still within the bound");
    server.handle_timeout(t0 + bound);
    assert!(!server.contains(abandoned), "dropped at the bound");
    assert!(!server.contains(answered), "timer J ended the answered one");
    let mut timeouts = Vec::new();
    while let Some(event) = server.poll_event() {
        if let Event::Timeout { id } = event {
            timeouts.push(id);
        }
    }
    assert_eq!(timeouts, [TransactionId::Server(abandoned)]);
    assert!(server.is_empty());
}
