//! The ng server's state machine (sans-IO): requests and media events in,
//! replies and media commands out.
//!
//! A call (`call-id`) is one ng session; each `m=` line of its SDP is one
//! anchored stream of the media layer, with the offerer (`from-tag`) on leg
//! A and the answerer on leg B, exactly the legs a call of our B2BUA has.
//! The SDP is read and rewritten by the B2BUA's own functions
//! (`b2bua::anchor::{streams, rewrite}`), and the streams get the same
//! [`MediaCommand`]s (allocate, set remote, set direction, release), so
//! ports, latching (RTPBleed rules) and the XDP fast path are the same.
//!
//! Inputs: [`NgEngine::handle_message`], [`NgEngine::handle_media_event`],
//! [`NgEngine::handle_timeout`], each with `now`. Outputs, drained until
//! empty after every input: [`NgEngine::poll_reply`] and
//! [`NgEngine::poll_media`].
//!
//! Retransmissions: a request whose cookie was answered gets the same reply
//! bytes again (two generations of replies, swapped every 30 s as in
//! rtpengine's `cookie_cache.c`); one still being worked on (waiting for its
//! ports) is dropped, its reply follows. Nothing executes twice.
//!
//! Stream ids: the engine numbers its streams from [`NG_STREAM_BASE`], a
//! range the B2BUA's counter never reaches, so both share one media relay
//! and each takes only its own events.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::b2bua::anchor::{self, SdpOrigin};
use crate::media::cname::CnameMask;
use crate::media::command::{
    LatchPolicy, Leg, LegCounters, LegSpec, LocalEndpoint, MediaCommand, MediaError, MediaEvent,
    RealmTag, RtcpMode, StreamId,
};
use crate::sdp::Sdp;

use super::codec::{self, Encoding, Limits, Value};
use super::request::{AddressSource, Command, Request};

/// The first stream id of ng sessions (B2BUA calls count up from 0).
pub const NG_STREAM_BASE: u64 = 1 << 62;

/// How long a reply is kept for retransmissions: between one and two of
/// these (rtpengine: 30 s).
pub const COOKIE_GENERATION: Duration = Duration::from_secs(30);

/// The most reply bytes one generation of the reply cache holds: a flood of
/// requests with fresh cookies ages the cache early instead of growing it,
/// so the cache never holds more than twice this.
pub const CACHE_GENERATION_BYTES: usize = 16 << 20;

/// A realm as the ng server sees it: where its legs anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NgRealm {
    /// Its name (what `direction` names).
    pub name: String,
    /// The media address streams bind to.
    pub media_ip: IpAddr,
    /// The address written in SDP (1:1 NAT), else `media_ip`.
    pub advertise: Option<IpAddr>,
    /// `latch_from_networks`.
    pub latch_from_networks: bool,
}

/// The engine's settings.
#[derive(Clone, Debug)]
pub struct NgSettings {
    /// Realms, in configuration order (the index is the [`RealmTag`]).
    pub realms: Vec<NgRealm>,
    /// The realm of both legs when a request has no `direction`.
    pub default_direction: [usize; 2],
    /// The latching policy of the configuration (`[media.latching]`).
    pub latch: LatchPolicy,
    /// At most this many sessions; more are refused as rtpengine refuses
    /// when at its limit (0: no limit).
    pub max_sessions: usize,
    /// Message bounds.
    pub limits: Limits,
    /// The most reply bytes one generation of the reply cache holds
    /// ([`CACHE_GENERATION_BYTES`] by default).
    pub cache_bytes: usize,
}

/// Where a reply goes: the IO shell's own token (a UDP peer, a TCP
/// connection), handed back untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyTo {
    /// A UDP client.
    Udp(SocketAddr),
    /// A TCP connection, by the shell's number.
    Tcp(u64),
}

/// A reply to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// To whom.
    pub to: ReplyTo,
    /// `<cookie> <dictionary>`.
    pub bytes: Vec<u8>,
    /// The command (metric label).
    pub command: &'static str,
    /// `ok`, `pong`, `error`, `load limit` or `duplicate` (a cached reply
    /// sent again).
    pub result: &'static str,
    /// From the request's arrival to this reply.
    pub latency: Duration,
}

type Key = Vec<u8>;

/// One stream of a session: its id and, once allocated, its local
/// endpoints (leg A, leg B).
type Slot = (StreamId, Option<[LocalEndpoint; 2]>);

#[derive(Debug)]
struct Session {
    from_tag: Vec<u8>,
    to_tag: Option<Vec<u8>>,
    realms: [usize; 2],
    latch: [LatchPolicy; 2],
    streams: Vec<Option<Slot>>,
    origins: [Option<SdpOrigin>; 2],
    /// Released at this time (`delete-delay`).
    delete_at: Option<Instant>,
    /// Counters of streams already released (delete then query).
    released: [LegCounters; 2],
    label: Option<String>,
}

/// A request that waits for the media layer (ports, counters).
#[derive(Debug)]
struct Parked {
    to: ReplyTo,
    cookie: Vec<u8>,
    encoding: Encoding,
    request: Request,
    arrived: Instant,
    /// Counters reported so far (query), by stream.
    reports: HashMap<StreamId, [LegCounters; 2]>,
}

/// Totals over released ng streams (for `statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NgTotals {
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions deleted.
    pub sessions_deleted: u64,
    /// Packets received on released streams.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
}

/// The ng server's state.
pub struct NgEngine {
    settings: NgSettings,
    cname_mask: CnameMask,
    sessions: HashMap<Key, Session>,
    by_stream: HashMap<StreamId, Key>,
    next_stream: u64,
    next_origin: u64,
    /// Parked requests by call-id, in arrival order.
    parked: HashMap<Key, VecDeque<Parked>>,
    /// Cookies being worked on.
    in_flight: HashMap<Key, ()>,
    cache: [HashMap<Key, (Vec<u8>, &'static str)>; 2],
    /// Reply and cookie bytes in the newer generation.
    cache_bytes: usize,
    cache_swapped: Option<Instant>,
    replies: VecDeque<Reply>,
    media: VecDeque<MediaCommand>,
    warnings: VecDeque<String>,
    /// The `rtcp-mux` policies already warned about.
    rtcp_mux_said: std::collections::HashSet<String>,
    totals: NgTotals,
}

impl NgEngine {
    /// An engine with no sessions.
    pub fn new(settings: NgSettings, cname_mask: CnameMask) -> NgEngine {
        NgEngine {
            settings,
            cname_mask,
            sessions: HashMap::new(),
            by_stream: HashMap::new(),
            next_stream: NG_STREAM_BASE,
            next_origin: 1,
            parked: HashMap::new(),
            in_flight: HashMap::new(),
            cache: [HashMap::new(), HashMap::new()],
            cache_bytes: 0,
            cache_swapped: None,
            replies: VecDeque::new(),
            media: VecDeque::new(),
            warnings: VecDeque::new(),
            rtcp_mux_said: std::collections::HashSet::new(),
            totals: NgTotals::default(),
        }
    }

    /// Whether `stream` is one of the engine's (its events go here).
    pub fn owns(stream: StreamId) -> bool {
        stream.0 >= NG_STREAM_BASE
    }

    /// Sessions alive.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Totals so far.
    pub fn totals(&self) -> NgTotals {
        self.totals
    }

    /// The next reply to send.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// The next command for the media relay.
    pub fn poll_media(&mut self) -> Option<MediaCommand> {
        self.media.pop_front()
    }

    /// The next warning to log (ignored flags, unknown commands).
    pub fn poll_warning(&mut self) -> Option<String> {
        self.warnings.pop_front()
    }

    /// When [`NgEngine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let delete = self.sessions.values().filter_map(|s| s.delete_at).min();
        let swap = self.cache_swapped.map(|at| at + COOKIE_GENERATION);
        match (delete, swap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Releases sessions whose delete delay ran out; ages the reply cache.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.delete_at.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.release_session(&key);
        }
        match self.cache_swapped {
            None => self.cache_swapped = Some(now),
            Some(at) if now >= at + COOKIE_GENERATION => self.age_cache(now),
            Some(_) => {}
        }
    }

    /// Starts a new generation of the reply cache; the older one goes.
    fn age_cache(&mut self, now: Instant) {
        self.cache.swap(0, 1);
        self.cache[0].clear();
        self.cache_bytes = 0;
        self.cache_swapped = Some(now);
    }

    /// One ng message from `to`.
    pub fn handle_message(&mut self, now: Instant, to: ReplyTo, message: &[u8]) {
        if self.cache_swapped.is_none() {
            self.cache_swapped = Some(now);
        }
        let limits = self.settings.limits;
        let decoded = match codec::decode(message, &limits) {
            Ok(d) => d,
            Err(e) => {
                // Without a cookie there is nobody to answer.
                if let Some(cookie) = codec::cookie(message, &limits) {
                    let reply = error_reply(&e.to_string());
                    let bytes = codec::encode(cookie, &reply, Encoding::Bencode);
                    self.replies.push_back(Reply {
                        to,
                        bytes,
                        command: "other",
                        result: "error",
                        latency: Duration::ZERO,
                    });
                }
                return;
            }
        };
        let cookie = decoded.cookie.to_vec();
        if let Some((bytes, command)) = self.cache.iter().find_map(|c| c.get(&cookie)) {
            self.replies.push_back(Reply {
                to,
                bytes: bytes.clone(),
                command,
                result: "duplicate",
                latency: Duration::ZERO,
            });
            return;
        }
        if self.in_flight.contains_key(&cookie) {
            return;
        }
        let request = Request::from_dict(&decoded.dict);
        if !request.ignored.is_empty() {
            self.warnings.push_back(format!(
                "ng {}: ignored flags {}",
                request.command_name,
                request.ignored.join(" ")
            ));
        }
        // `a=rtcp-mux` passes through as offered and is accepted when the
        // answer keeps it (rtpengine's `offer`/`accept`); asking to strip,
        // demultiplex or require it is not acted on: said, never refused.
        let mut unhandled: Vec<&str> = request
            .rtcp_mux
            .iter()
            .map(String::as_str)
            .filter(|m| !matches!(*m, "offer" | "accept"))
            .collect();
        unhandled.dedup();
        // Once per policy: a proxy sends the same flags with every offer.
        if !unhandled.is_empty() && self.rtcp_mux_said.insert(unhandled.join(" ")) {
            self.warnings.push_back(format!(
                "ng {}: rtcp-mux {} not acted on (a=rtcp-mux passes through as offered)",
                request.command_name,
                unhandled.join(" ")
            ));
        }
        let parked = Parked {
            to,
            cookie,
            encoding: decoded.encoding,
            request,
            arrived: now,
            reports: HashMap::new(),
        };
        self.run(now, parked);
    }

    /// An event of the media relay about one of the engine's streams
    /// (others are ignored).
    pub fn handle_media_event(&mut self, now: Instant, event: &MediaEvent) {
        match event {
            MediaEvent::Allocated { stream, legs } => {
                let Some(key) = self.by_stream.get(stream).cloned() else {
                    return;
                };
                if let Some(session) = self.sessions.get_mut(&key) {
                    for slot in session.streams.iter_mut().flatten() {
                        if slot.0 == *stream {
                            slot.1 = Some(*legs);
                        }
                    }
                }
                self.resume(now, &key);
            }
            MediaEvent::AllocationFailed { stream, error } => {
                let Some(key) = self.by_stream.remove(stream) else {
                    return;
                };
                // The relay never had it; the session's other streams go.
                let ports = matches!(error, MediaError::PortsExhausted { .. });
                if let Some(mut session) = self.sessions.remove(&key) {
                    for slot in session.streams.iter_mut() {
                        if slot.is_some_and(|(s, _)| s == *stream) {
                            *slot = None;
                        }
                    }
                    self.release_streams(&session);
                }
                for parked in self.parked.remove(&key).into_iter().flatten() {
                    let reply = if ports {
                        out_of_ports(&parked.request)
                    } else {
                        error_reply(&error.to_string())
                    };
                    self.finish(now, parked, reply);
                }
            }
            MediaEvent::Counters { stream, counters } => {
                let Some(key) = self.by_stream.get(stream).cloned() else {
                    return;
                };
                if let Some(queue) = self.parked.get_mut(&key)
                    && let Some(p) = queue.front_mut()
                {
                    p.reports.insert(*stream, *counters);
                }
                self.resume(now, &key);
            }
            MediaEvent::Released { stream, counters } => {
                let Some(key) = self.by_stream.remove(stream) else {
                    return;
                };
                for c in counters {
                    self.totals.packets += c.packets_in;
                    self.totals.bytes += c.bytes_in;
                }
                if let Some(session) = self.sessions.get_mut(&key) {
                    for (sum, c) in session.released.iter_mut().zip(counters) {
                        add(sum, c);
                    }
                }
            }
            MediaEvent::CommandFailed { stream, .. } => {
                // A report asked of a stream the relay no longer has: answer
                // the query with what is known rather than never.
                let Some(key) = self.by_stream.get(stream).cloned() else {
                    return;
                };
                if let Some(queue) = self.parked.get_mut(&key)
                    && let Some(p) = queue.front_mut()
                {
                    p.reports.insert(*stream, [LegCounters::default(); 2]);
                }
                self.resume(now, &key);
            }
            // A session whose media stopped ends, as rtpengine's `timeout`
            // does: a proxy that lost its delete (a crash, a lost
            // datagram) must not hold the ports for ever.
            MediaEvent::TimedOut { stream, reason } => {
                let Some(key) = self.by_stream.get(stream).cloned() else {
                    return;
                };
                if self.parked.get(&key).is_some_and(|q| !q.is_empty()) {
                    return;
                }
                self.warnings.push_back(format!(
                    "ng session {key:?} ended: its media timed out ({reason:?})"
                ));
                self.release_session(&key);
            }
            MediaEvent::Latched { .. } | MediaEvent::NotLatched { .. } => {}
        }
    }

    /// Runs parked requests of `key` again, in order, until one waits.
    fn resume(&mut self, now: Instant, key: &Key) {
        while let Some(parked) = self.parked.get_mut(key).and_then(VecDeque::pop_front) {
            let waiting_before = self.parked.get(key).map_or(0, VecDeque::len);
            self.run(now, parked);
            if self.parked.get(key).map_or(0, VecDeque::len) > waiting_before {
                // It parked again (at the back): put it first.
                if let Some(q) = self.parked.get_mut(key)
                    && let Some(p) = q.pop_back()
                {
                    q.push_front(p);
                }
                return;
            }
        }
        self.parked.remove(key);
    }

    fn run(&mut self, now: Instant, parked: Parked) {
        let r = &parked.request;
        let outcome = match r.command {
            Some(Command::Ping) => {
                Done(Value::Dict(vec![(b"result".to_vec(), Value::str("pong"))]))
            }
            Some(Command::Offer) => self.offer_answer(r, false),
            Some(Command::Answer) => self.offer_answer(r, true),
            Some(Command::Delete) => Done(self.delete(now, r)),
            Some(Command::Query) => self.query(r, &parked.reports),
            Some(Command::List) => Done(self.list(r)),
            Some(Command::Statistics) => Done(self.statistics()),
            Some(Command::Other) => {
                self.warnings
                    .push_back(format!("ng command {:?} is not supported", r.command_name));
                Done(error_reply(&format!(
                    "Unsupported command '{}'",
                    r.command_name
                )))
            }
            None => Done(error_reply("No command given")),
        };
        match outcome {
            Done(reply) => self.finish(now, parked, reply),
            Wait => {
                let key = parked.request.call_id.clone().unwrap_or_default();
                self.in_flight.insert(parked.cookie.clone(), ());
                self.parked.entry(key).or_default().push_back(parked);
            }
        }
    }

    fn finish(&mut self, now: Instant, parked: Parked, reply: Value) {
        let result = match reply.get("result").and_then(Value::as_str) {
            Some("ok") => "ok",
            Some("pong") => "pong",
            Some("load limit") => "load limit",
            _ => "error",
        };
        let bytes = codec::encode(&parked.cookie, &reply, parked.encoding);
        self.in_flight.remove(&parked.cookie);
        let command = parked.request.command.unwrap_or(Command::Other).label();
        let cost = bytes.len() + parked.cookie.len();
        if self.cache_bytes + cost > self.settings.cache_bytes {
            self.age_cache(now);
        }
        self.cache_bytes += cost;
        self.cache[0].insert(parked.cookie, (bytes.clone(), command));
        self.replies.push_back(Reply {
            to: parked.to,
            bytes,
            command,
            result,
            latency: now.saturating_duration_since(parked.arrived),
        });
    }

    fn realm_index(&self, name: &str) -> Option<usize> {
        self.settings.realms.iter().position(|r| r.name == name)
    }

    fn offer_answer(&mut self, r: &Request, answer: bool) -> Outcome {
        let (Some(call_id), Some(from_tag), Some(body)) = (&r.call_id, &r.from_tag, &r.sdp) else {
            return Done(error_reply(
                "Incomplete message (call-id, from-tag or sdp missing)",
            ));
        };
        if answer && r.to_tag.is_none() {
            return Done(error_reply("Incomplete message (to-tag missing)"));
        }
        let sdp = match Sdp::parse(body) {
            Ok(sdp) => sdp,
            Err(e) => return Done(error_reply(&format!("Failed to parse SDP: {e}"))),
        };
        if let Some(wanted) = &r.transport_protocol {
            let secure = |p: &str| p.to_ascii_uppercase().contains("SAVP");
            if sdp
                .media()
                .any(|m| !m.is_disabled() && secure(m.proto()) != secure(wanted))
            {
                // The relay forwards SRTP as it is; it does not encrypt or
                // decrypt, so it can't translate between the two.
                return Done(error_reply(&format!(
                    "transport-protocol {wanted} would need SRTP translation, which this relay does not do"
                )));
            }
        }
        // Who sent this SDP: the offerer (leg A) unless it is an answer, or
        // a re-offer from the answerer (its tag is the session's to-tag).
        let session = self.sessions.get(call_id);
        let from = match session {
            None if answer => return Done(error_reply("Unknown call-id")),
            None => Leg::A,
            Some(s) => {
                if answer {
                    // Answer: the SDP is the to-tag side's, unless it is the
                    // answer to a re-offer the callee made.
                    if r.to_tag.as_deref() == Some(s.from_tag.as_slice()) {
                        Leg::A
                    } else {
                        Leg::B
                    }
                } else if *from_tag == s.from_tag {
                    Leg::A
                } else {
                    Leg::B
                }
            }
        };
        if session.is_none() {
            if self.settings.max_sessions > 0 && self.sessions.len() >= self.settings.max_sessions {
                return Done(out_of_ports(r));
            }
            let realms = match &r.direction {
                Some([a, b]) => match (self.realm_index(a), self.realm_index(b)) {
                    (Some(a), Some(b)) => [a, b],
                    _ => {
                        return Done(error_reply(&format!(
                            "Unknown direction (no realm named {a:?} or {b:?})"
                        )));
                    }
                },
                None => self.settings.default_direction,
            };
            let latch = |realm: usize| {
                if r.asymmetric {
                    LatchPolicy::Asymmetric
                } else if self.settings.latch == LatchPolicy::SdpOrSignaling
                    && self.settings.realms[realm].latch_from_networks
                {
                    LatchPolicy::RealmNetworks
                } else {
                    self.settings.latch
                }
            };
            let session = Session {
                from_tag: from_tag.clone(),
                to_tag: None,
                realms,
                latch: [latch(realms[0]), latch(realms[1])],
                streams: Vec::new(),
                origins: [None, None],
                delete_at: None,
                released: [LegCounters::default(); 2],
                label: r.label.clone(),
            };
            self.sessions.insert(call_id.clone(), session);
            self.totals.sessions_created += 1;
        }
        let signaling_ip = r
            .received_from
            .unwrap_or_else(|| IpAddr::from([0, 0, 0, 0]));
        let mut offers = anchor::streams(&sdp, signaling_ip);
        for offer in &mut offers {
            // media-address beats both; SIP-source-address beats the SDP.
            let ip = match (r.media_address, r.address_source, r.received_from) {
                (Some(ip), _, _) => Some(ip),
                (None, Some(AddressSource::SignalingSource), Some(ip)) => Some(ip),
                _ => None,
            };
            if let Some(ip) = ip {
                offer.remote.rtp.set_ip(ip);
                offer.remote.rtcp.set_ip(ip);
            }
        }
        let Some(session) = self.sessions.get_mut(call_id) else {
            return Done(error_reply("Unknown call-id"));
        };
        session.delete_at = None;
        if answer && from == Leg::B {
            session.to_tag = r.to_tag.clone();
        }
        if session.streams.len() < offers.len() {
            session.streams.resize(offers.len(), None);
        }
        let mut waiting = false;
        for (index, offer) in offers.iter().enumerate() {
            if offer.disabled {
                continue;
            }
            match &session.streams[index] {
                Some((_, None)) => waiting = true,
                Some((_, Some(_))) => {}
                None => {
                    let stream = StreamId(self.next_stream);
                    self.next_stream += 1;
                    self.by_stream.insert(stream, call_id.clone());
                    session.streams[index] = Some((stream, None));
                    let spec = |leg: usize| {
                        let realm = session.realms[leg];
                        LegSpec {
                            local_ip: self.settings.realms[realm].media_ip,
                            rtcp: RtcpMode::Pair,
                            latch: session.latch[leg],
                            realm: RealmTag::from_index(realm),
                        }
                    };
                    self.media.push_back(MediaCommand::Allocate {
                        stream,
                        legs: [spec(0), spec(1)],
                    });
                    waiting = true;
                }
            }
        }
        if waiting {
            return Wait;
        }
        let to = from.other();
        let mut endpoints = Vec::with_capacity(offers.len());
        for (index, offer) in offers.iter().enumerate() {
            match (
                offer.disabled,
                session.streams.get(index).copied().flatten(),
            ) {
                (false, Some((stream, Some(legs)))) => {
                    self.media.push_back(MediaCommand::SetRemote {
                        stream,
                        leg: from,
                        remote: offer.remote,
                    });
                    self.media.push_back(MediaCommand::SetDirection {
                        stream,
                        leg: from,
                        direction: offer.direction,
                    });
                    endpoints.push(Some(legs[to.index()]));
                }
                _ => endpoints.push(None),
            }
        }
        let realm = &self.settings.realms[session.realms[to.index()]];
        let media_ip = realm.advertise.unwrap_or(realm.media_ip);
        let source = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            (body, media_ip).hash(&mut h);
            for endpoint in &endpoints {
                endpoint.map(|e| (e.rtp, e.rtcp)).hash(&mut h);
            }
            h.finish()
        };
        let origin = SdpOrigin::next(session.origins[to.index()], self.next_origin, source);
        self.next_origin += 1;
        session.origins[to.index()] = Some(origin);
        match anchor::rewrite(&sdp, media_ip, &endpoints, origin, &self.cname_mask) {
            Ok(out) => Done(Value::Dict(vec![
                (b"result".to_vec(), Value::str("ok")),
                (b"sdp".to_vec(), Value::Bytes(out)),
            ])),
            Err(e) => Done(error_reply(&format!("Failed to rewrite SDP: {e}"))),
        }
    }

    fn delete(&mut self, now: Instant, r: &Request) -> Value {
        let Some(call_id) = &r.call_id else {
            return error_reply("Incomplete message (call-id missing)");
        };
        let Some(session) = self.sessions.get_mut(call_id) else {
            return error_reply("Call-ID not found");
        };
        let delay = r.delete_delay.unwrap_or(0);
        let totals = totals_value(&session.released);
        if delay == 0 {
            self.release_session(call_id);
        } else {
            session.delete_at = Some(now + Duration::from_secs(u64::from(delay)));
        }
        Value::Dict(vec![
            (b"result".to_vec(), Value::str("ok")),
            (b"totals".to_vec(), totals),
        ])
    }

    fn release_session(&mut self, key: &Key) {
        if let Some(session) = self.sessions.remove(key) {
            self.release_streams(&session);
            self.totals.sessions_deleted += 1;
        }
    }

    fn release_streams(&mut self, session: &Session) {
        for (stream, _) in session.streams.iter().flatten() {
            // The id stays in `by_stream` until Released brings the
            // final counters.
            self.media
                .push_back(MediaCommand::Release { stream: *stream });
        }
    }

    fn query(&mut self, r: &Request, reports: &HashMap<StreamId, [LegCounters; 2]>) -> Outcome {
        let Some(call_id) = &r.call_id else {
            return Done(error_reply("Incomplete message (call-id missing)"));
        };
        let Some(session) = self.sessions.get(call_id) else {
            return Done(error_reply("Call-ID not found"));
        };
        let live: Vec<StreamId> = session
            .streams
            .iter()
            .flatten()
            .filter(|(_, legs)| legs.is_some())
            .map(|(s, _)| *s)
            .collect();
        let missing: Vec<StreamId> = live
            .iter()
            .copied()
            .filter(|s| !reports.contains_key(s))
            .collect();
        if !missing.is_empty() {
            if reports.is_empty() {
                for stream in missing {
                    self.media.push_back(MediaCommand::Report { stream });
                }
            }
            return Wait;
        }
        let mut legs = session.released;
        for counters in reports.values() {
            for (sum, c) in legs.iter_mut().zip(counters) {
                add(sum, c);
            }
        }
        let tag = |t: &[u8], c: &LegCounters| {
            (
                t.to_vec(),
                Value::Dict(vec![
                    (b"tag".to_vec(), Value::Bytes(t.to_vec())),
                    (
                        b"in".to_vec(),
                        counter_value(
                            c.packets_in,
                            c.bytes_in,
                            c.dropped_source + c.dropped_malformed,
                        ),
                    ),
                ]),
            )
        };
        let mut tags = vec![tag(&session.from_tag, &legs[0])];
        if let Some(to_tag) = &session.to_tag {
            tags.push(tag(to_tag, &legs[1]));
        }
        let mut reply = vec![
            (b"result".to_vec(), Value::str("ok")),
            (b"totals".to_vec(), totals_value(&legs)),
            (b"tags".to_vec(), Value::Dict(tags)),
        ];
        if let Some(label) = &session.label {
            reply.push((b"label".to_vec(), Value::str(label)));
        }
        Done(Value::Dict(reply))
    }

    fn list(&self, r: &Request) -> Value {
        let limit = r.limit.unwrap_or(32) as usize;
        let mut ids: Vec<&Key> = self.sessions.keys().collect();
        ids.sort();
        Value::Dict(vec![
            (b"result".to_vec(), Value::str("ok")),
            (
                b"calls".to_vec(),
                Value::List(
                    ids.into_iter()
                        .take(limit)
                        .map(|k| Value::Bytes(k.clone()))
                        .collect(),
                ),
            ),
        ])
    }

    fn statistics(&self) -> Value {
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let current = Value::Dict(vec![(
            b"sessionsown".to_vec(),
            int(self.sessions.len() as u64),
        )]);
        let total = Value::Dict(vec![
            (
                b"managedsessions".to_vec(),
                int(self.totals.sessions_created),
            ),
            (
                b"deletedsessions".to_vec(),
                int(self.totals.sessions_deleted),
            ),
            (b"packets".to_vec(), int(self.totals.packets)),
            (b"bytes".to_vec(), int(self.totals.bytes)),
        ]);
        Value::Dict(vec![
            (b"result".to_vec(), Value::str("ok")),
            (
                b"statistics".to_vec(),
                Value::Dict(vec![
                    (b"currentstatistics".to_vec(), current),
                    (b"totalstatistics".to_vec(), total),
                ]),
            ),
        ])
    }
}

enum Outcome {
    Done(Value),
    Wait,
}
use Outcome::{Done, Wait};

fn add(sum: &mut LegCounters, c: &LegCounters) {
    sum.packets_in += c.packets_in;
    sum.bytes_in += c.bytes_in;
    sum.dropped_source += c.dropped_source;
    sum.dropped_malformed += c.dropped_malformed;
    sum.packets_out += c.packets_out;
    sum.bytes_out += c.bytes_out;
}

fn counter_value(packets: u64, bytes: u64, errors: u64) -> Value {
    let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    Value::Dict(vec![
        (b"packets".to_vec(), int(packets)),
        (b"bytes".to_vec(), int(bytes)),
        (b"errors".to_vec(), int(errors)),
    ])
}

/// rtpengine's `totals`: what both legs received. The relay counts RTP and
/// RTCP of a leg together, so RTCP's totals stay zero (documented in the
/// README).
fn totals_value(legs: &[LegCounters; 2]) -> Value {
    let packets = legs.iter().map(|l| l.packets_in).sum();
    let bytes = legs.iter().map(|l| l.bytes_in).sum();
    let errors = legs
        .iter()
        .map(|l| l.dropped_source + l.dropped_malformed)
        .sum();
    Value::Dict(vec![
        (b"RTP".to_vec(), counter_value(packets, bytes, errors)),
        (b"RTCP".to_vec(), counter_value(0, 0, 0)),
    ])
}

fn error_reply(reason: &str) -> Value {
    Value::Dict(vec![
        (b"result".to_vec(), Value::str("error")),
        (b"error-reason".to_vec(), Value::str(reason)),
    ])
}

/// Kamailio takes both as "try the next relay of the set"
/// (`rtpengine.c`).
fn out_of_ports(r: &Request) -> Value {
    if r.supports_load_limit {
        Value::Dict(vec![
            (b"result".to_vec(), Value::str("load limit")),
            (b"message".to_vec(), Value::str("Ran out of ports")),
        ])
    } else {
        error_reply("Ran out of ports")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &[u8] = include_bytes!("fixtures/kamailio-5.6/offer.bin");
    const ANSWER: &[u8] = include_bytes!("fixtures/kamailio-5.6/answer.bin");
    const QUERY: &[u8] = include_bytes!("fixtures/kamailio-5.6/query.bin");
    const DELETE: &[u8] = include_bytes!("fixtures/kamailio-5.6/delete.bin");
    const PING: &[u8] = include_bytes!("fixtures/kamailio-5.6/ping.bin");

    #[allow(clippy::disallowed_methods)] // the origin of the virtual clock
    fn t0() -> Instant {
        Instant::now()
    }

    fn kamailio() -> ReplyTo {
        ReplyTo::Udp("127.0.0.1:40000".parse().expect("addr"))
    }

    fn engine(max_sessions: usize) -> NgEngine {
        let realm = |name: &str, ip: &str| NgRealm {
            name: name.into(),
            media_ip: ip.parse().expect("ip"),
            advertise: None,
            latch_from_networks: false,
        };
        NgEngine::new(
            NgSettings {
                realms: vec![
                    realm("internal", "192.0.2.1"),
                    realm("external", "203.0.113.1"),
                ],
                default_direction: [0, 0],
                latch: LatchPolicy::SdpOrSignaling,
                max_sessions,
                limits: Limits::default(),
                cache_bytes: CACHE_GENERATION_BYTES,
            },
            CnameMask::new(),
        )
    }

    /// A media layer that allocates ports 30000, 30002, ... and counts
    /// 10 packets of 172 bytes per leg.
    struct FakeRelay {
        next_port: u16,
        released: Vec<StreamId>,
        allocated: Vec<(StreamId, [LegSpec; 2])>,
    }

    impl FakeRelay {
        fn new() -> FakeRelay {
            FakeRelay {
                next_port: 30000,
                released: Vec::new(),
                allocated: Vec::new(),
            }
        }

        /// Drains the engine's commands and answers them until quiet.
        fn drive(&mut self, now: Instant, e: &mut NgEngine) {
            while let Some(command) = e.poll_media() {
                let event = match command {
                    MediaCommand::Allocate { stream, legs } => {
                        self.allocated.push((stream, legs));
                        let mut local = |spec: &LegSpec| {
                            let rtp = SocketAddr::new(spec.local_ip, self.next_port);
                            let rtcp = SocketAddr::new(spec.local_ip, self.next_port + 1);
                            self.next_port += 2;
                            LocalEndpoint {
                                rtp,
                                rtcp: Some(rtcp),
                            }
                        };
                        let legs = [local(&legs[0]), local(&legs[1])];
                        Some(MediaEvent::Allocated { stream, legs })
                    }
                    MediaCommand::Report { stream } => Some(MediaEvent::Counters {
                        stream,
                        counters: [counters(), counters()],
                    }),
                    MediaCommand::Release { stream } => {
                        self.released.push(stream);
                        Some(MediaEvent::Released {
                            stream,
                            counters: [counters(), counters()],
                        })
                    }
                    _ => None,
                };
                if let Some(event) = event {
                    e.handle_media_event(now, &event);
                }
            }
        }
    }

    fn counters() -> LegCounters {
        LegCounters {
            packets_in: 10,
            bytes_in: 1720,
            ..LegCounters::default()
        }
    }

    fn replies(e: &mut NgEngine) -> Vec<Reply> {
        std::iter::from_fn(|| e.poll_reply()).collect()
    }

    fn text(r: &Reply) -> String {
        String::from_utf8_lossy(&r.bytes).into_owned()
    }

    #[test]
    fn ping_gets_pong_with_the_cookie() {
        let mut e = engine(0);
        e.handle_message(t0(), kamailio(), PING);
        let r = replies(&mut e);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].bytes, b"0_19207_1 d6:result4:ponge");
        assert_eq!((r[0].command, r[0].result), ("ping", "pong"));
    }

    #[test]
    fn a_kamailio_call_is_anchored_queried_and_deleted() {
        let now = t0();
        let mut e = engine(0);
        let mut relay = FakeRelay::new();
        e.handle_message(now, kamailio(), OFFER);
        assert!(replies(&mut e).is_empty(), "waits for its ports");
        relay.drive(now, &mut e);
        let r = replies(&mut e);
        assert_eq!(r.len(), 1);
        // The offer goes to the answerer: direction=external, leg B's port.
        let golden = "0_19207_2 d6:result2:ok3:sdp147:v=0\r\no=- 1 1 IN IP4 203.0.113.1\r\ns=-\r\n\
                      c=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\n\
                      a=rtpmap:0 PCMU/8000\r\na=rtcp:30003 IN IP4 203.0.113.1\r\ne";
        assert_eq!(text(&r[0]), golden);
        assert_eq!(r[0].result, "ok");
        // Leg A in "internal", leg B in "external", strict latching.
        let (_, legs) = relay.allocated[0];
        assert_eq!(legs[0].local_ip, "192.0.2.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            legs[1].local_ip,
            "203.0.113.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(legs[0].latch, LatchPolicy::SdpOrSignaling);

        e.handle_message(now, kamailio(), ANSWER);
        relay.drive(now, &mut e);
        let r = replies(&mut e);
        let golden = "0_19207_3 d6:result2:ok3:sdp141:v=0\r\no=- 2 1 IN IP4 192.0.2.1\r\ns=-\r\n\
                      c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n\
                      a=rtpmap:0 PCMU/8000\r\na=rtcp:30001 IN IP4 192.0.2.1\r\ne";
        assert_eq!(text(&r[0]), golden);
        assert_eq!(relay.allocated.len(), 1, "the answer allocates nothing new");

        e.handle_message(now, kamailio(), QUERY);
        relay.drive(now, &mut e);
        let r = replies(&mut e);
        assert_eq!(r.len(), 1);
        let q = codec::decode(&r[0].bytes, &Limits::default())
            .expect("decodes")
            .dict;
        let rtp = q
            .get("totals")
            .and_then(|t| t.get("RTP"))
            .expect("totals.RTP");
        assert_eq!(rtp.get("packets").and_then(Value::as_int), Some(20));
        assert_eq!(rtp.get("bytes").and_then(Value::as_int), Some(3440));
        assert_eq!(rtp.get("errors").and_then(Value::as_int), Some(0));
        assert!(q.get("totals").and_then(|t| t.get("RTCP")).is_some());

        e.handle_message(now, kamailio(), DELETE);
        relay.drive(now, &mut e);
        assert_eq!(relay.released.len(), 1);
        assert_eq!(e.sessions(), 0);
        let r = replies(&mut e);
        assert!(
            text(&r[0]).starts_with("0_19207_6 d6:result2:ok"),
            "{}",
            text(&r[0])
        );
        assert_eq!(e.totals().packets, 20);
    }

    #[test]
    fn a_retransmission_never_executes_twice() {
        let now = t0();
        let mut e = engine(0);
        let mut relay = FakeRelay::new();
        e.handle_message(now, kamailio(), OFFER);
        // Resent while its ports are being allocated: dropped.
        e.handle_message(now, kamailio(), OFFER);
        relay.drive(now, &mut e);
        let first = replies(&mut e);
        assert_eq!(first.len(), 1);
        // Resent after the reply: the same bytes, nothing allocated.
        e.handle_message(now + Duration::from_secs(1), kamailio(), OFFER);
        relay.drive(now, &mut e);
        let again = replies(&mut e);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].bytes, first[0].bytes);
        assert_eq!((again[0].command, again[0].result), ("offer", "duplicate"));
        assert_eq!(relay.allocated.len(), 1);
        // Two generations: still there after 45 s, gone after 61 s.
        e.handle_timeout(now + Duration::from_secs(31));
        e.handle_message(now + Duration::from_secs(45), kamailio(), OFFER);
        assert_eq!(replies(&mut e)[0].result, "duplicate");
        e.handle_timeout(now + Duration::from_secs(62));
        e.handle_message(now + Duration::from_secs(62), kamailio(), OFFER);
        relay.drive(now, &mut e);
        assert_eq!(replies(&mut e)[0].result, "ok", "executed as a new request");
    }

    #[test]
    fn a_flood_of_fresh_cookies_ages_the_reply_cache_instead_of_growing_it() {
        let now = t0();
        let mut e = engine(0);
        e.settings.cache_bytes = 1_000;
        for n in 0..1_000 {
            e.handle_message(
                now,
                kamailio(),
                format!("c{n} d7:command4:pinge").as_bytes(),
            );
        }
        assert_eq!(replies(&mut e).len(), 1_000, "every ping answered");
        let held: usize = e
            .cache
            .iter()
            .flat_map(|g| g.iter())
            .map(|(k, (b, _))| k.len() + b.len())
            .sum();
        assert!(held <= 2_000, "{held} bytes cached");
        // The latest are still known as retransmissions.
        e.handle_message(now, kamailio(), b"c999 d7:command4:pinge");
        assert_eq!(replies(&mut e)[0].result, "duplicate");
    }

    #[test]
    fn an_rtcp_mux_policy_the_relay_does_not_apply_is_said_not_refused() {
        let now = t0();
        let mut e = engine(0);
        let mut relay = FakeRelay::new();
        // Kamailio's offer asks for rtcp-mux demux.
        e.handle_message(now, kamailio(), OFFER);
        relay.drive(now, &mut e);
        let replies = replies(&mut e);
        assert!(
            text(&replies[0]).contains("6:result2:ok"),
            "{}",
            text(&replies[0])
        );
        let warnings: Vec<String> = std::iter::from_fn(|| e.poll_warning()).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("rtcp-mux demux not acted on")),
            "{warnings:?}"
        );
        // The next offer with the same policy is not warned about again.
        e.handle_message(now, kamailio(), &[b"2".as_slice(), &OFFER[1..]].concat());
        relay.drive(now, &mut e);
        assert!(
            std::iter::from_fn(|| e.poll_warning()).all(|w| !w.contains("rtcp-mux")),
            "once"
        );
    }

    #[test]
    fn delete_delay_keeps_the_ports_until_it_runs_out() {
        let now = t0();
        let mut e = engine(0);
        let mut relay = FakeRelay::new();
        e.handle_message(now, kamailio(), OFFER);
        relay.drive(now, &mut e);
        e.handle_message(now, kamailio(), b"d1 d7:command6:delete7:call-id17:1-19726@127.0.0.18:from-tag14:19726SIPpTag0012:delete-delayi5ee");
        relay.drive(now, &mut e);
        assert!(relay.released.is_empty());
        assert_eq!(e.poll_timeout().map(|t| t > now), Some(true));
        e.handle_timeout(now + Duration::from_secs(4));
        relay.drive(now, &mut e);
        assert!(relay.released.is_empty());
        e.handle_timeout(now + Duration::from_secs(5));
        relay.drive(now, &mut e);
        assert_eq!(relay.released.len(), 1);
        assert_eq!(e.sessions(), 0);
    }

    #[test]
    fn a_session_whose_media_timed_out_ends_without_a_delete() {
        let now = t0();
        let mut e = engine(0);
        let mut relay = FakeRelay::new();
        e.handle_message(now, kamailio(), OFFER);
        relay.drive(now, &mut e);
        assert_eq!(e.sessions(), 1);
        let stream = relay.allocated[0].0;
        e.handle_media_event(
            now,
            &MediaEvent::TimedOut {
                stream,
                reason: crate::media::command::TimeoutReason::NoMedia,
            },
        );
        relay.drive(now, &mut e);
        assert_eq!(e.sessions(), 0);
        assert_eq!(relay.released, [stream]);
        let warnings: Vec<String> = std::iter::from_fn(|| e.poll_warning()).collect();
        assert!(
            warnings.iter().any(|w| w.contains("media timed out")),
            "said so: {warnings:?}"
        );
        // A stream of nobody's changes nothing.
        e.handle_media_event(
            now,
            &MediaEvent::TimedOut {
                stream,
                reason: crate::media::command::TimeoutReason::NoMedia,
            },
        );
        assert_eq!(e.sessions(), 0);
    }

    #[test]
    fn out_of_ports_is_answered_as_rtpengine_does() {
        let now = t0();
        for (supports, want) in [(true, "load limit"), (false, "error")] {
            let mut e = engine(0);
            let message = if supports {
                OFFER.to_vec()
            } else {
                // The same offer without `supports: ["load limit"]`.
                let s = String::from_utf8_lossy(OFFER).replacen("8:supportsl10:load limite", "", 1);
                s.into_bytes()
            };
            e.handle_message(now, kamailio(), &message);
            let Some(MediaCommand::Allocate { stream, .. }) = e.poll_media() else {
                panic!("allocates");
            };
            let addr = "203.0.113.1".parse().expect("ip");
            e.handle_media_event(
                now,
                &MediaEvent::AllocationFailed {
                    stream,
                    error: MediaError::PortsExhausted { addr },
                },
            );
            let r = replies(&mut e);
            assert_eq!(r[0].result, want);
            assert!(text(&r[0]).contains("Ran out of ports"), "{}", text(&r[0]));
            assert_eq!(e.sessions(), 0);
        }
        // A session cap is answered the same way, without asking for ports.
        let mut e = engine(1);
        let mut relay = FakeRelay::new();
        e.handle_message(now, kamailio(), OFFER);
        relay.drive(now, &mut e);
        replies(&mut e);
        let other = String::from_utf8_lossy(OFFER)
            .replacen("0_19207_2", "0_19207_9", 1)
            .replacen("1-19726@127.0.0.1", "2-19726@127.0.0.1", 1);
        e.handle_message(now, kamailio(), other.as_bytes());
        assert_eq!(replies(&mut e)[0].result, "load limit");
        assert!(e.poll_media().is_none());
    }

    #[test]
    fn errors_are_replies_with_a_reason() {
        let now = t0();
        let mut e = engine(0);
        let cases: &[(&[u8], &str)] = &[
            (b"e1 d7:command6:reloade", "Unsupported command"),
            (b"e2 d4:spam4:eggse", "No command given"),
            (b"e3 d7:command5:offere", "Incomplete message"),
            (b"e4 d7:command6:answer7:call-id1:x8:from-tag1:f6:to-tag1:t3:sdp4:v=0\ne", "Failed to parse SDP"),
            (b"e5 d7:command6:delete7:call-id4:nonee", "Call-ID not found"),
            (b"e6 d7:command5:query7:call-id4:nonee", "Call-ID not found"),
            (b"e7 d7:command", "bad bencode"),
            (br#"e8 {"command":"offer","call-id":"c","from-tag":"f","direction":["nowhere","internal"],"sdp":"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"}"#, "Unknown direction"),
        ];
        for (message, reason) in cases {
            e.handle_message(now, kamailio(), message);
            let r = replies(&mut e);
            assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(message));
            assert_eq!(r[0].result, "error");
            assert!(
                text(&r[0]).contains(reason),
                "{} -> {}",
                String::from_utf8_lossy(message),
                text(&r[0])
            );
        }
        // JSON in, JSON out.
        e.handle_message(now, kamailio(), br#"j1 {"command":"ping"}"#);
        assert_eq!(replies(&mut e)[0].bytes, br#"j1 {"result":"pong"}"#);
        // No cookie: nobody to answer.
        e.handle_message(now, kamailio(), b"d7:command4:pinge");
        assert!(replies(&mut e).is_empty());
        assert!(e.poll_media().is_none());
    }

    #[test]
    fn sip_source_address_and_asymmetric_shape_the_remote_and_latching() {
        let now = t0();
        let mut e = engine(0);
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let message = format!(
            "s1 d7:command5:offer7:call-id1:c8:from-tag1:f13:received-froml3:IP410:192.0.2.77e5:flagsl18:SIP-source-address10:asymmetrice3:sdp{}:{sdp}e",
            sdp.len()
        );
        e.handle_message(now, kamailio(), message.as_bytes());
        let mut commands = Vec::new();
        while let Some(c) = e.poll_media() {
            commands.push(c.clone());
            if let MediaCommand::Allocate { stream, legs } = c {
                assert_eq!(legs[0].latch, LatchPolicy::Asymmetric);
                let ep = |p| LocalEndpoint {
                    rtp: SocketAddr::new(legs[0].local_ip, p),
                    rtcp: Some(SocketAddr::new(legs[0].local_ip, p + 1)),
                };
                e.handle_media_event(
                    now,
                    &MediaEvent::Allocated {
                        stream,
                        legs: [ep(30000), ep(30002)],
                    },
                );
            }
        }
        let remote = commands
            .into_iter()
            .find_map(|c| match c {
                MediaCommand::SetRemote {
                    leg: Leg::A,
                    remote,
                    ..
                } => Some(remote),
                _ => None,
            })
            .expect("sets leg A's remote");
        assert_eq!(remote.rtp, "192.0.2.77:4000".parse().expect("addr"));
        assert_eq!(
            remote.signaling_ip,
            "192.0.2.77".parse::<IpAddr>().expect("ip")
        );
        let r = replies(&mut e);
        assert!(!text(&r[0]).contains("10.0.0.5"), "{}", text(&r[0]));
    }
}
