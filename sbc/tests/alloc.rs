//! What the heap holds, counted: parsing allocates nothing per header (a
//! message owns its byte buffer and one vector of header spans, and every
//! typed view borrows from them), and a held call costs the signaling core a
//! bounded number of bytes.
//!
//! Counted with a global allocator wrapper, which needs `unsafe impl
//! GlobalAlloc`; this test binary is the only place the workspace allows it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sbc::b2bua::{Core, ListenerInfo, SequentialIds};
use sbc::config::Config;
use sbc::media::command::{LocalEndpoint, MediaCommand, MediaEvent};
use sbc::sip::{HeaderName, Message};
use sbc::transport::{Inbound, ListenerId, Received, Transport};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel don't count each other's
    // allocations; const-initialised, so reading it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    // Bytes this thread allocated minus those it freed, as requested, and
    // as glibc malloc lays them out (see `chunk`).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static LIVE_CHUNKS: Cell<isize> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

/// The size of the glibc malloc chunk that serves `size` bytes on x86-64:
/// 8 bytes of header, rounded up to 16, at least 32. Close enough to tell
/// many small allocations from one big one.
fn chunk(size: usize) -> isize {
    (size + 8).div_ceil(16).max(2) as isize * 16
}

fn live(delta: isize, chunk_delta: isize) {
    // `try_with`: a thread's last frees may run after its locals are gone.
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
    let _ = LIVE_CHUNKS.try_with(|c| c.set(c.get() + chunk_delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        live(layout.size() as isize, chunk(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-(layout.size() as isize), -chunk(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        live(
            new_size as isize - layout.size() as isize,
            chunk(new_size) - chunk(layout.size()),
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

const INVITE: &[u8] =
    include_bytes!("fixtures/corpus/flows/rfc3665/3.1-F01-INVITE_Alice_to_Bob.sip");
const LONGREQ: &[u8] = include_bytes!("fixtures/corpus/rfc4475/longreq.dat");

#[test]
fn parsing_allocates_the_buffer_and_the_header_table_only() {
    for (name, bytes) in [("invite", INVITE), ("longreq", LONGREQ)] {
        let (count, msg) = allocations_during(|| Message::parse(bytes).expect("parses"));
        let headers = msg.headers().count();
        // One Vec<u8> for the bytes, one Vec for the header table, which
        // grows by doubling from 16 entries: one reallocation per doubling.
        let table_growth = headers.div_ceil(16).next_power_of_two().ilog2() as usize;
        assert!(
            count <= 2 + table_growth,
            "{name}: {count} allocations for {headers} headers"
        );
    }
}

#[test]
fn typed_views_allocate_nothing() {
    let msg = Message::parse(LONGREQ).expect("parses");
    let (count, _) = allocations_during(|| {
        let vias = msg.vias().filter(Result::is_ok).count();
        let from = msg.from().and_then(|f| f.tag().map(str::len));
        let to = msg.to().map(|t| t.uri().as_bytes().len());
        let cseq = msg.cseq().map(|c| c.seq);
        let call_id = msg.call_id().map(<[u8]>::len);
        let contacts = msg.contacts().count();
        let ct = msg.header(HeaderName::ContentType).map(<[u8]>::len);
        (vias, from, to, cseq, call_id, contacts, ct)
    });
    assert_eq!(count, 0, "typed views must borrow, not allocate");
}

// ---- bytes per held call ---------------------------------------------------

/// Two realms and one trunk, as the signaling bench runs the daemon; the
/// caller's network belongs to the outside realm, so its thousand calls are
/// trusted as the bench's UAC trunks are (an untrusted source may hold 16).
const CALLS_CONFIG: &str = r#"
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

const OUTSIDE: &str = "192.0.2.1:5060";
const INSIDE: &str = "198.51.100.1:5060";
const CALLER: &str = "203.0.113.7:5061";
const PBX: &str = "198.51.100.3:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// The core on a virtual clock, with a media backend that anchors every
/// stream on the next ports; output it is not asked for is dropped.
struct Sim {
    core: Core,
    now: Instant,
    next_port: u16,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(CALLS_CONFIG)
    }

    fn with(config: &str) -> Sim {
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
        }
    }

    /// Delivers `text` from `from` on listener 0 (outside) or 1 (inside) and
    /// returns what the core sent to `from` and to `other`.
    fn deliver(&mut self, listener: usize, from: &str, text: &str) -> Vec<(SocketAddr, Message)> {
        let mut msg = Message::parse(text.as_bytes()).expect("test message parses");
        if msg.is_request() {
            sbc::transport::nat::stamp_received(&mut msg, addr(from));
        }
        let inbound = Inbound {
            listener: ListenerId(listener),
            transport: Transport::Udp,
            local: addr([OUTSIDE, INSIDE][listener]),
            remote: addr(from),
            connection: None,
            received: Received::Message(msg),
        };
        self.core.handle_inbound(self.now, inbound);
        self.settle()
    }

    fn settle(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut sent = Vec::new();
        loop {
            let mut busy = false;
            while let Some(out) = self.core.poll_transmit() {
                busy = true;
                sent.push((out.to, Message::parse(&out.bytes).expect("core sends SIP")));
            }
            while self.core.poll_event().is_some() {}
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

    fn advance(&mut self, by: Duration) {
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
    fn call(&mut self, n: u32) {
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
    }
}

/// The one message of `what` (a method or a status) sent to `to`.
fn pick(sent: Vec<(SocketAddr, Message)>, to: &str, what: &str) -> Message {
    sent.into_iter()
        .find(|(at, m)| {
            *at == addr(to)
                && (m.method_bytes() == Some(what.as_bytes())
                    || m.status().is_some_and(|s| s.to_string() == what))
        })
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("the core sent no {what} to {to}"))
}

fn live_bytes() -> (isize, isize) {
    (LIVE.with(Cell::get), LIVE_CHUNKS.with(Cell::get))
}

/// Heap bytes per call (requested, and as malloc chunks) while `calls`
/// confirmed calls are up: just after setup (their INVITE transactions still
/// in RFC 6026's Accepted state for 64*T1) and once those have ended.
fn bytes_per_held_call(calls: u32) -> ((f64, f64), (f64, f64)) {
    let mut sim = Sim::new();
    // One call first, so one-time allocations (queues, scratch buffers)
    // don't count as per-call bytes.
    sim.call(0);
    sim.advance(Duration::from_secs(40));
    let before = live_bytes();
    for n in 1..=calls {
        sim.call(n);
    }
    let fresh = live_bytes();
    assert_eq!(sim.core.active_calls(), calls as usize + 1);
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.core.active_calls(), calls as usize + 1, "calls stay up");
    let settled = live_bytes();
    let per = |(a, b): (isize, isize)| {
        (
            (a - before.0) as f64 / f64::from(calls),
            (b - before.1) as f64 / f64::from(calls),
        )
    };
    let out = (per(fresh), per(settled));
    drop(sim);
    out
}

#[test]
fn a_held_call_costs_the_signaling_core_a_bounded_number_of_bytes() {
    // 1000 calls: hash tables grow by doubling, so their share per call
    // depends on where the count falls between two sizes; over 1000 calls
    // that swing stays within a few hundred bytes per call.
    let calls = 1000;
    let ((fresh, fresh_chunks), (settled, settled_chunks)) = bytes_per_held_call(calls);
    println!(
        "bytes per confirmed call, {calls} calls: just set up {fresh:.0} \
         ({fresh_chunks:.0} in malloc chunks), after 40 s {settled:.0} ({settled_chunks:.0})"
    );
    // About 4.2 KB when this was written, and 9.8 KB before: every call kept
    // its whole INVITE, its `Call` lived inline in a table with up to as many
    // empty slots again, and so did each transaction. The bound leaves room
    // for a table growing at a different point and a field or two, and
    // fails for any one of those coming back (each over 1 KB per call). The
    // daemon's RSS per held call follows this number plus the media relay's
    // and the admin view's share (`cargo bench -p benches --bench signaling`).
    assert!(
        fresh < 5000.0,
        "{fresh:.0} bytes per call just after setup (bound 5000)"
    );
    // Once the INVITE transactions are gone (64*T1) a call holds less.
    assert!(
        settled < fresh,
        "{settled:.0} bytes per call 40 s on, {fresh:.0} just after setup"
    );
}

impl Sim {
    /// Phone `n` registers from its own port (challenge-free registrar);
    /// the registrar confirms for 3600 s.
    fn register(&mut self, n: u32) {
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

#[test]
fn a_registered_phone_costs_the_signaling_core_a_bounded_number_of_bytes() {
    let config = CALLS_CONFIG.replace(
        "networks = [\"203.0.113.0/24\"]",
        "networks = [\"203.0.113.0/24\"]\n\
         access = { registrar = \"pbx\", keepalive_secs = 0, max_bindings_per_aor = 1, \
         max_bindings_per_source = 2000 }",
    );
    let mut sim = Sim::with(&config);
    sim.register(0);
    sim.advance(Duration::from_secs(40));
    let before = live_bytes();
    let phones = 1000;
    for n in 1..=phones {
        sim.register(n);
    }
    // Once the REGISTER transactions are gone (64*T1).
    sim.advance(Duration::from_secs(40));
    let after = live_bytes();
    assert_eq!(sim.core.registrations_per_realm()[0].1, phones as usize + 1);
    let per = (after.0 - before.0) as f64 / f64::from(phones);
    let per_chunks = (after.1 - before.1) as f64 / f64::from(phones);
    println!(
        "bytes per registered phone, {phones} phones: {per:.0} ({per_chunks:.0} in malloc chunks)"
    );
    // A binding holds its AOR, Contact, token, REGISTER dialog and the
    // phone's credentials (none here), and an entry in five indexes: about
    // 1,960 bytes when this was written (100,000 phones: about 200 MB). The
    // bound leaves room for a table growing at another point.
    assert!(
        per < 3000.0,
        "{per:.0} bytes per registered phone (bound 3000)"
    );
    drop(sim);
}
