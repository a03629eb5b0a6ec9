//! Call control: the back-to-back user agent (sans-IO).
//!
//! Owns: every call the SBC carries, each as two independent legs (the
//! inbound leg `A` on the realm the call arrived on, the outbound leg `B`
//! towards a trunk), each with its own Call-ID, tags, CSeq space, Via,
//! Contact and route set; routing and failover between a route's trunks;
//! per-trunk and global admission limits; topology hiding of every message
//! that crosses (see [`build`]); and SDP anchoring through the media layer
//! (see [`anchor`] and [`crate::media::command`]).
//!
//! May not: do IO, read a clock or draw randomness. Inputs come in through
//! `handle_*(now, ...)`; identifiers come from an injected [`IdSource`].
//!
//! # Driving it
//!
//! After every `handle_*` call (and [`Core::drain`]), drain
//! [`poll_transmit`](Core::poll_transmit) (to the transports),
//! [`poll_media`](Core::poll_media) (to the media backend) and
//! [`poll_event`](Core::poll_event) (to metrics, logs and CDRs) until each is
//! empty, then arm one timer at [`poll_timeout`](Core::poll_timeout) and call
//! [`handle_timeout`](Core::handle_timeout) when it fires.
//!
//! # What it does with each message
//!
//! * Out-of-dialog INVITE: ACL, admission (global and trunk limits: 503 with
//!   Retry-After), routing (404 when no route matches), media allocation for
//!   its offer, then a new INVITE on leg B. Provisional and final responses
//!   are relayed to A (2xx retransmitted to A until its ACK, §13.3.1.4); the
//!   ACK is relayed to B. A 408/5xx, timeout or transport error listed in the
//!   route's `failover_on` tries the next trunk.
//! * CANCEL from A: 200 to the CANCEL, 487 to the INVITE at once, then CANCEL
//!   on B once it is allowed (§9.1); a 2xx racing the CANCEL is ACKed and
//!   BYEd on B.
//! * In-dialog requests (BYE, re-INVITE, UPDATE, PRACK, INFO, OPTIONS,
//!   NOTIFY, MESSAGE, REFER...) are relayed to the other leg as new requests
//!   of that leg's dialog, their responses relayed back; SDP in either is
//!   anchored. BYE ends the call. `RAck` is renumbered into the other leg's
//!   CSeq space (RFC 3262).
//! * Out-of-dialog OPTIONS is answered by the SBC itself (200); other
//!   out-of-dialog requests get 405 with Allow; a request for an unknown
//!   dialog gets 481.
//!
//! Choices: in-dialog requests towards leg A go to the address A's signaling
//! came from (NAT traversal, RFC 3581 in spirit) rather than A's Contact
//! host; towards B they go to the trunk. A 3xx from a trunk is relayed with
//! its Contacts removed (they name the trunk's side), or, with `[sip]
//! recurse_on_3xx`, followed: its first Contact naming an address becomes
//! leg B's new target (at most three redirects per call).
//!
//! # Layout
//!
//! This file keeps the tables, dispatch and the `handle_*`/`poll_*` surface;
//! each concern lives in its own file as more `impl Core`: `call` (a call
//! and its legs), `invite` (the INVITE flow, failover, CANCEL), `dialog`
//! (the in-dialog relay and glare), `teardown` (BYEs, the call's timers and
//! the one exit of a finished call), `anchor` (SDP anchoring), `listeners`,
//! `health` (trunk OPTIONS checks), `protect` (edge protection), `view`
//! (what the shell reads, `/calls`), `event` (the output vocabulary),
//! `build` and `text` (the messages a leg writes).

mod access;
pub(crate) mod anchor;
mod build;
mod call;
mod dialog;
mod event;
mod health;
pub mod ids;
mod invite;
mod listeners;
mod protect;
pub mod replica;
pub mod routing;
mod teardown;
#[cfg(test)]
mod tests;
mod text;
mod view;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::deadlines::Deadlines;
pub use crate::guard::BanReason;
use crate::idmap::IdMap;
pub use access::BindingRecord;
use anchor::{AnchorFail, Anchored};
use call::*;
pub use event::{
    CallError, CallSummary, CoreEvent, EndedBy, RegisterOutcome, RejectReason, SbcReason,
};
pub use ids::{IdSource, RandomIds, SequentialIds};
use listeners::{CoreListener, ListenerState};
pub use protect::UntrustedLoad;
pub use routing::Plan;
pub use view::{CallSnapshot, LegSnapshot, RegistrationSnapshot};

use crate::config::{Acl, Config, FailoverCause, HeaderPolicy, PeerAddress};
use crate::media::cname::CnameMask;
use crate::media::command::{
    LatchPolicy, Leg, LegSpec, LocalEndpoint, MediaCommand, MediaEvent, RtcpMode, StreamId,
};
use crate::sip::transaction::{
    self, ClientId, Inbound as TxInbound, ResponseOutcome, ServerId, TransactionId, Transactions,
};
use crate::sip::{self, HeaderName, Message, Method, ServerPolicy, Verdict};
use crate::transport::{ConnectionId, Inbound, ListenerId, Outbound, Received, Transport};
use routing::{CallFacts, Refusal, TrunkState};
use text::{LegText, Part};

/// One listener as the core sees it: its realm, transport and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The realm's name (as in the config).
    pub realm: String,
    /// UDP or TCP.
    pub transport: Transport,
    /// The address it is bound to (the realm's signaling address).
    pub addr: SocketAddr,
    /// The address peers reach it at, when that differs (1:1 NAT).
    pub advertise: Option<SocketAddr>,
}

impl ListenerInfo {
    /// What the SBC writes as its own address (Via, Contact) on this
    /// listener.
    pub fn public(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.addr)
    }
}

/// A realm as the core knows it. Realms keep their index for the life of
/// the core (calls and trunks hold it): a reload updates a realm by name,
/// appends new ones and keeps removed ones, never reorders.
#[derive(Clone, Debug)]
struct RealmInfo {
    name: String,
    /// Where its media is anchored (each a relay port range's address),
    /// the configured `address` first.
    media_addresses: Vec<IpAddr>,
    /// What SDP shows instead of the anchored address (1:1 NAT).
    media_advertise: Option<IpAddr>,
    acl: Acl,
    /// Set on an access realm (phones register through it).
    access: Option<crate::config::Access>,
    /// Its legs may learn media sources from its networks.
    latch_from_networks: bool,
}

/// The B2BUA. See the module docs.
pub struct Core {
    realms: Vec<RealmInfo>,
    /// Indexed by [`ListenerId`]; never shrinks, so ids stay valid.
    listeners: Vec<CoreListener>,
    trunks: Vec<TrunkState>,
    routes: Vec<crate::config::Route>,
    policy: HeaderPolicy,
    server_policy: ServerPolicy,
    max_calls: usize,
    retry_after: u32,
    /// Follow a trunk's 3xx instead of relaying it.
    recurse_3xx: bool,
    latch: LatchPolicy,
    tx: Transactions,
    ids: Box<dyn IdSource>,
    /// The stand-ins for RTCP CNAMEs in SDP `a=ssrc` (shared with the
    /// media relay, which rewrites RTCP SDES with the same key).
    cname_mask: CnameMask,
    /// Boxed: a table of calls inline would hold up to twice the calls up
    /// in empty slots of a `Call`'s size (hash tables grow by doubling).
    calls: IdMap<u64, Box<Call>>,
    next_call: u64,
    next_stream: u64,
    /// (Call-ID, our tag) of each leg → call and side.
    /// Keyed by [`dialog_key`].
    dialogs: HashMap<Box<str>, (u64, Side)>,
    servers: IdMap<ServerId, u64>,
    clients: IdMap<ClientId, (u64, Side, ClientRole)>,
    streams: IdMap<StreamId, u64>,
    /// OPTIONS health checks in flight, by the trunk and target they probe.
    pings: IdMap<ClientId, (usize, SocketAddr)>,
    /// How long a trunk target that failed a call (timeout, unreachable,
    /// 503) waits behind the others.
    target_block: Duration,
    /// Phones registered through access realms.
    bindings: access::Bindings,
    /// Calls up per (access realm, address-of-record), for
    /// `max_calls_per_user`.
    user_calls: HashMap<(usize, String), usize>,
    /// Call legs anchored on each media address, for the choice among a
    /// realm's addresses (the least loaded).
    media_load: HashMap<IpAddr, usize>,
    /// The listener, transport and connection a transaction sends from
    /// ("route" is kept for the configured `[[route]]`s and a dialog's
    /// route set).
    sent_from: IdMap<TransactionId, (ListenerId, Transport, Option<ConnectionId>)>,
    timers: Deadlines<(u64, CallTimer)>,
    out: VecDeque<Outbound>,
    media_out: VecDeque<MediaCommand>,
    events: VecDeque<CoreEvent>,
    draining: bool,
    /// Answered calls are written out for the other node of a pair
    /// ([`replica`]).
    replicate: bool,
    protect: protect::Protect,
    /// Server transactions whose final answer goes out once: non-INVITE ones
    /// end as soon as that answer is on its way, INVITE ones stop
    /// retransmitting and answer only the INVITE's own retransmissions (see
    /// [`Core::pump`] and [`transaction::Transactions::quiet`]): for 8*T1
    /// after a refusal (answering again has no effect), and for 64*T1 (the
    /// caller's whole timer B) after the final of a call, so a retransmitted
    /// INVITE never becomes a second call. The flag: a call's final.
    answered_once: Vec<(ServerId, bool)>,
    /// Server INVITE transactions whose failure, to an untrusted caller over
    /// UDP that was sent a provisional, is retransmitted only
    /// [`UNTRUSTED_FINAL_RETRANSMISSIONS`] times (see
    /// [`Core::final_repeats`]).
    answered_few: Vec<ServerId>,
}

/// Retransmissions of a failure to an untrusted UDP caller that was sent a
/// provisional (so waits without retransmitting its INVITE): five sends
/// over 7.5 s (timer G's 0.5, 1, 2, 4 s) survive four lost in a row, where
/// timer G then H would send eleven over 32 s to a source that may be
/// spoofed. (The simulation's 10% loss wire passes 5,000 seeds with it;
/// with two, seed 29 of 500 left a caller waiting for a final.)
pub(crate) const UNTRUSTED_FINAL_RETRANSMISSIONS: u8 = 4;

impl Core {
    /// A core for `config`, sending through `listeners` (indexed by
    /// [`ListenerId`]). `resolve` may give a first address for a trunk given
    /// as `host:port`; IP trunks need none. Trunks given by DNS name get
    /// their targets from the IO shell's resolver through
    /// [`Core::set_trunk_targets`] (the daemon passes no `resolve` at all).
    pub fn new(
        config: &Config,
        listeners: Vec<ListenerInfo>,
        resolve: impl Fn(&str, u16) -> Option<SocketAddr>,
        ids: Box<dyn IdSource>,
    ) -> Core {
        let mut core = Core {
            realms: Vec::new(),
            listeners: listeners
                .into_iter()
                .map(|info| CoreListener {
                    info,
                    state: ListenerState::Active,
                })
                .collect(),
            trunks: Vec::new(),
            routes: Vec::new(),
            policy: HeaderPolicy::default(),
            server_policy: ServerPolicy::default(),
            max_calls: 0,
            retry_after: 5,
            recurse_3xx: false,
            latch: LatchPolicy::SdpOrSignaling,
            tx: Transactions::new(config.sip.timers())
                .with_max_transactions(config.limits.max_transactions as usize),
            ids,
            cname_mask: CnameMask::new(),
            calls: IdMap::default(),
            next_call: 1,
            next_stream: 1,
            dialogs: HashMap::new(),
            servers: IdMap::default(),
            clients: IdMap::default(),
            streams: IdMap::default(),
            pings: IdMap::default(),
            target_block: Duration::ZERO,
            bindings: access::Bindings::default(),
            user_calls: HashMap::new(),
            media_load: HashMap::new(),
            sent_from: IdMap::default(),
            timers: Deadlines::new(),
            out: VecDeque::new(),
            media_out: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            replicate: false,
            protect: protect::Protect::default(),
            answered_once: Vec::new(),
            answered_few: Vec::new(),
        };
        core.apply(config, resolve);
        core
    }

    /// The CNAME mask of this core's SDP rewrites: give the media relay a
    /// clone, so RTCP SDES carries the same stand-ins as `a=ssrc`.
    pub fn cname_mask(&self) -> &CnameMask {
        &self.cname_mask
    }

    /// This core with `mask` for its CNAME stand-ins (the one the media
    /// relay was given).
    pub fn with_cname_mask(mut self, mask: CnameMask) -> Core {
        self.cname_mask = mask;
        self
    }

    /// Takes a new configuration's realms, routes, trunks, limits and
    /// policies; calls in progress keep their legs (and a removed realm
    /// stays known to them). Listeners change through
    /// [`Core::set_listeners`].
    pub fn reload(
        &mut self,
        now: Instant,
        config: &Config,
        resolve: impl Fn(&str, u16) -> Option<SocketAddr>,
    ) {
        self.apply(config, resolve);
        self.start(now);
    }

    fn apply(&mut self, config: &Config, resolve: impl Fn(&str, u16) -> Option<SocketAddr>) {
        // A realm the file dropped stays (its listeners retire, so it takes
        // no new calls) for the calls that hold its index.
        for r in &config.realms {
            let info = RealmInfo {
                name: r.name.clone(),
                media_addresses: r.media.addresses().collect(),
                media_advertise: r.media.advertise,
                acl: r.acl.clone(),
                access: r.access.clone(),
                latch_from_networks: r.latch_from_networks,
            };
            match self.realms.iter_mut().find(|known| known.name == r.name) {
                Some(known) => *known = info,
                None => self.realms.push(info),
            }
        }
        let realm_index = |name: &str| self.realms.iter().position(|r| r.name == name);
        let mut fresh: Vec<Option<TrunkState>> = config
            .trunks
            .iter()
            .map(|t| {
                let address = match &t.address {
                    PeerAddress::Ip(addr) => Some(*addr),
                    PeerAddress::Host { host, port } => resolve(host, *port),
                    // Resolved by the shell (RFC 3263), handed over
                    // through `set_trunk_targets`.
                    PeerAddress::Name { .. } => None,
                };
                let mut state = TrunkState::new(
                    t.name.clone(),
                    realm_index(&t.realm).unwrap_or(0),
                    address,
                    t.max_calls,
                    t.max_cps,
                );
                state.ping_every = (t.options_interval_secs > 0)
                    .then(|| Duration::from_secs(u64::from(t.options_interval_secs)));
                state.transport = t.transport().into();
                state.dns_name = match &t.address {
                    PeerAddress::Ip(_) => None,
                    name => Some(name.to_string()),
                };
                state.asymmetric_rtp = t.asymmetric_rtp;
                state.header_policy = t.header_policy.clone();
                state.response_timeout = (t.response_timeout_ms > 0)
                    .then(|| Duration::from_millis(u64::from(t.response_timeout_ms)));
                Some(state)
            })
            .collect();
        // Trunks keep their index for the life of the core, like realms:
        // calls, routing plans and health checks hold it. A trunk the file
        // still has is updated in place (keeping its live counts), a new one
        // is appended, a removed one retires.
        for previous in std::mem::take(&mut self.trunks) {
            let update = fresh
                .iter_mut()
                .find(|f| f.as_ref().is_some_and(|f| f.name == previous.name))
                .and_then(Option::take);
            self.trunks.push(match update {
                Some(mut state) => {
                    state.carry_over(&previous);
                    state
                }
                None => {
                    let mut state = previous;
                    state.retire();
                    state
                }
            });
        }
        self.trunks.extend(fresh.into_iter().flatten());
        self.routes = config.routes.clone();
        self.policy = config.topology_hiding.clone();
        self.server_policy = config.sip.server_policy();
        self.max_calls = config.limits.max_calls as usize;
        self.recurse_3xx = config.sip.recurse_on_3xx;
        self.retry_after = config.limits.overload_retry_after_secs;
        self.target_block = Duration::from_secs(u64::from(config.dns.target_block_secs));
        self.latch = if config.media.latching.strict_source_ip {
            LatchPolicy::SdpOrSignaling
        } else {
            LatchPolicy::Asymmetric
        };
        let realms: Vec<&str> = self.realms.iter().map(|r| r.name.as_str()).collect();
        self.protect
            .apply(config, realms.into_iter(), self.tx.max_transactions());
    }

    /// Starts the trunks' OPTIONS health checks (each due at once, then on
    /// its interval). Call once after [`Core::new`].
    pub fn start(&mut self, now: Instant) {
        for trunk in &mut self.trunks {
            if trunk.ping_every.is_some() && trunk.next_ping.is_none() {
                trunk.next_ping = Some(now);
            }
        }
    }

    /// Stops taking calls: a new INVITE (and an OPTIONS health check) gets
    /// 503 with `Retry-After`, while everything of the calls up (in-dialog
    /// requests, re-INVITEs, BYEs, their media) goes on. The start of a drain; [`Core::drain`] ends it.
    pub fn stop_taking_calls(&mut self) {
        self.draining = true;
    }

    /// Whether new calls are refused ([`Core::stop_taking_calls`]).
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Stops taking calls (new INVITEs get 503) and ends the ones up with BYE
    /// on both legs.
    pub fn drain(&mut self, now: Instant) {
        self.draining = true;
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(mut call) = self.calls.remove(&id) {
                self.teardown(now, &mut call, EndedBy::Sbc(SbcReason::Shutdown));
                self.put_back(now, call);
            }
        }
        self.pump(now);
    }

    /// Bytes for a transport.
    pub fn poll_transmit(&mut self) -> Option<Outbound> {
        self.out.pop_front()
    }

    /// A command for the media backend.
    pub fn poll_media(&mut self) -> Option<MediaCommand> {
        self.media_out.pop_front()
    }

    /// Something for metrics, logs and CDRs.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let ping = self
            .trunks
            .iter()
            .filter_map(|t| t.next_ping)
            .chain(self.bindings.next_deadline())
            .min();
        let own = self.timers.peek().map(|(at, _)| at);
        let own = match (own, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (own, self.tx.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: transaction timers, 2xx retransmissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.ping_trunks(now);
        self.binding_timers(now);
        while let Some((_, (id, kind))) = self.timers.pop_due(now) {
            let Some(mut call) = self.calls.remove(&id) else {
                continue;
            };
            self.call_timer(now, &mut call, kind);
            self.put_back(now, call);
        }
        self.pump(now);
    }

    /// A transport could not deliver to `to` (a TCP connect or write
    /// failed): every client transaction sending there, a call's or a trunk
    /// health check's, ends with a transport error (§17.1.4). An INVITE then fails
    /// over at once where its route allows `transport-error`, or the caller
    /// gets 503 (§8.1.3.1), instead of waiting for timer B.
    pub fn handle_send_failed(&mut self, now: Instant, to: SocketAddr) {
        let failed: Vec<TransactionId> = self
            .clients
            .keys()
            .chain(self.pings.keys())
            .chain(self.bindings.pings.keys())
            .chain(self.bindings.relayed.keys())
            .map(|id| TransactionId::Client(*id))
            .filter(|id| self.tx.contains(*id) && self.client_remote(*id) == Some(to))
            .collect();
        for id in failed {
            let _ = self.tx.handle_transport_error(now, id);
        }
        self.pump(now);
    }

    /// An ICMP unreachable came back on UDP listener `listener` for a
    /// datagram to `to` that quoted `request`: the one client transaction
    /// that sent that request there ends with a transport error (§17.1.4),
    /// and nothing else. A forged ICMP error cannot know the branch, so it
    /// fails nothing; a genuine one fails what it reports at once, instead
    /// of after timer B.
    pub fn handle_unreachable(
        &mut self,
        now: Instant,
        listener: ListenerId,
        to: SocketAddr,
        request: &sip::quote::QuotedRequest,
    ) {
        let Some(client) = self.tx.client_of_quote(request) else {
            return;
        };
        let id = TransactionId::Client(client);
        let sent = self.sent_from.get(&id).copied();
        if sent.map(|(l, t, _)| (l, t)) != Some((listener, Transport::Udp))
            || self.client_remote(id) != Some(to)
        {
            return;
        }
        let _ = self.tx.handle_transport_error(now, id);
        self.pump(now);
    }

    fn client_remote(&self, id: TransactionId) -> Option<SocketAddr> {
        let TransactionId::Client(client) = id else {
            return None;
        };
        if let Some((_, target)) = self.pings.get(&client) {
            return Some(*target);
        }
        if let Some(binding) = self.bindings.pings.get(&client) {
            return Some(self.bindings.by_id.get(binding)?.flow.peer);
        }
        if let Some(relayed) = self.bindings.relayed.get(&client) {
            let realm = self.bindings.by_id.get(&relayed.binding)?.realm;
            let registrar = &self.realms.get(realm)?.access.as_ref()?.registrar;
            return self.trunks.iter().find(|t| &t.name == registrar)?.address();
        }
        let (call, side, _) = self.clients.get(&client)?;
        let call = self.calls.get(call)?;
        Some(match side {
            Side::A => call.a.peer,
            Side::B => call.b.as_ref()?.peer,
        })
    }

    /// Something arrived from a transport.
    pub fn handle_inbound(&mut self, now: Instant, inbound: Inbound) {
        let Some(realm) = self.listener_realm(inbound.listener) else {
            return;
        };
        if !self.realms[realm].acl.permits(inbound.remote.ip()) {
            // Scanners get no answer at all (no reflection, no fingerprint).
            self.event_rejected(realm, RejectReason::Acl);
            return;
        }
        let meta = inbound_meta(&inbound, realm);
        match inbound.received {
            Received::Malformed { error, bytes } => {
                self.events.push_back(CoreEvent::ParseError {
                    realm: self.realms[realm].name.clone(),
                });
                if matches!(error.kind, sip::ParseErrorKind::TooLarge { .. }) {
                    self.event_rejected(realm, RejectReason::Oversized);
                }
                if let Verdict::Reject(rejection) = error.response() {
                    let tag = self.ids.tag();
                    if let Some(answer) = sip::response::reject_malformed(&bytes, &rejection, &tag)
                    {
                        self.send_direct(
                            inbound.listener,
                            inbound.transport,
                            inbound.remote,
                            inbound.connection,
                            answer,
                        );
                    }
                }
            }
            Received::Message(msg) => {
                self.events.push_back(CoreEvent::Sip {
                    realm: self.realms[realm].name.clone(),
                    inbound: true,
                    method: msg.method(),
                    status: msg.status(),
                });
                if msg.is_request() {
                    self.on_request(now, &meta, msg);
                } else if let Ok(ResponseOutcome::Stray(response)) =
                    self.tx.handle_response(now, msg)
                {
                    self.on_stray_response(now, response);
                }
            }
        }
        self.pump(now);
    }

    /// The media backend reports.
    pub fn handle_media_event(&mut self, now: Instant, event: MediaEvent) {
        match event {
            MediaEvent::Allocated { stream, legs } => {
                let Some(&id) = self.streams.get(&stream) else {
                    return;
                };
                let Some(mut call) = self.calls.remove(&id) else {
                    return;
                };
                for slot in call.media.streams.iter_mut().flatten() {
                    if slot.0 == stream {
                        slot.1 = Some(legs);
                    }
                }
                self.run_pending(now, &mut call);
                self.put_back(now, call);
            }
            MediaEvent::AllocationFailed { stream, .. } => {
                let Some(id) = self.streams.remove(&stream) else {
                    return;
                };
                let Some(mut call) = self.calls.remove(&id) else {
                    return;
                };
                // The relay never had it: nothing to release or wait for.
                for slot in &mut call.media.streams {
                    if slot.is_some_and(|(s, _)| s == stream) {
                        *slot = None;
                    }
                }
                if call.phase == Phase::Setup {
                    self.event_rejected(call.a.realm, RejectReason::MediaPorts);
                    self.fail_call(now, &mut call, 503, EndedBy::Sbc(SbcReason::MediaPorts));
                } else {
                    // A call adopted from another node whose ports are not
                    // to be had here: without its media it ends.
                    self.teardown(now, &mut call, EndedBy::Sbc(SbcReason::MediaPorts));
                }
                self.put_back(now, call);
            }
            MediaEvent::TimedOut { stream, .. } => {
                let Some(&id) = self.streams.get(&stream) else {
                    return;
                };
                let Some(mut call) = self.calls.remove(&id) else {
                    return;
                };
                self.teardown(now, &mut call, EndedBy::Sbc(SbcReason::MediaTimeout));
                self.put_back(now, call);
            }
            MediaEvent::Released { stream, .. } => {
                self.streams.remove(&stream);
            }
            MediaEvent::NotLatched { stream, leg } => {
                let Some(&id) = self.streams.get(&stream) else {
                    return;
                };
                if let Some(call) = self.calls.get_mut(&id)
                    && !call.media.not_latched[leg.index()]
                {
                    call.media.not_latched[leg.index()] = true;
                    let side = if leg == Leg::A { Side::A } else { Side::B };
                    if let Some(state) = leg_ref(call, side) {
                        self.events.push_back(CoreEvent::MediaNotLatched {
                            call: id,
                            leg,
                            realm: self.realms[state.realm].name.clone(),
                            call_id: state.text.get(Part::CallId).to_owned(),
                        });
                    }
                }
            }
            MediaEvent::Latched { .. }
            | MediaEvent::CommandFailed { .. }
            | MediaEvent::Counters { .. } => {}
        }
        self.pump(now);
    }

    fn event_rejected(&mut self, realm: usize, reason: RejectReason) {
        self.events.push_back(CoreEvent::Rejected {
            realm: self.realms[realm].name.clone(),
            reason,
        });
    }

    // ---- requests --------------------------------------------------------------

    fn on_request(&mut self, now: Instant, meta: &Meta, msg: Message) {
        let method = msg.method();
        match sip::check(&msg, &self.server_policy) {
            Verdict::Accept => {}
            Verdict::Drop(_) => return,
            Verdict::Reject(rejection) => {
                if self.screen_scanner(meta, &msg) {
                    return;
                }
                self.event_rejected(meta.realm, RejectReason::Invalid);
                let tag = self.ids.tag();
                let answer = sip::response::respond_rejection(&msg, &rejection, Some(&tag));
                self.send_direct(
                    meta.listener,
                    meta.transport,
                    meta.reply_to(&msg),
                    meta.connection,
                    answer,
                );
                return;
            }
        }
        if self.screen_scanner(meta, &msg) {
            return;
        }
        let reliable = meta.transport.is_reliable();
        let reply_to = meta.reply_to(&msg);
        let inbound = match self.tx.handle_request(now, msg, reply_to, reliable) {
            Ok(inbound) => inbound,
            Err(_) => return,
        };
        match inbound {
            TxInbound::Absorbed(_) => {}
            TxInbound::Full(msg) => {
                self.event_rejected(meta.realm, RejectReason::Admission);
                let retry = self.retry_after.to_string();
                let tag = self.ids.tag();
                let answer = sip::response::respond(
                    &msg,
                    503,
                    "",
                    Some(&tag),
                    &[(HeaderName::RetryAfter, &retry)],
                );
                self.send_direct(
                    meta.listener,
                    meta.transport,
                    reply_to,
                    meta.connection,
                    answer,
                );
            }
            TxInbound::Cancel {
                id,
                target,
                request,
            } => {
                self.remember_server(id, meta);
                self.count_transaction(meta, id);
                self.on_cancel(now, meta, id, target, &request);
            }
            TxInbound::Ack { request, .. } => self.on_ack(now, meta, request),
            TxInbound::Request { id, request } => {
                self.remember_server(id, meta);
                if !self.listener_active(meta.listener) && self.dialog_of(&request).is_none() {
                    // A retired address takes nothing new, and keeps no
                    // transaction for it: peers that still ping it must not
                    // hold it open.
                    self.event_rejected(meta.realm, RejectReason::Draining);
                    self.reply(now, id, &request, 503, &[]);
                    self.answered_once.push((id, false));
                    return;
                }
                let in_dialog = request.to().is_some_and(|to| to.tag().is_some());
                if !in_dialog && let Some(reason) = self.transaction_refusal(meta) {
                    return self.refuse(now, meta, id, &request, 503, Some(reason));
                }
                self.count_transaction(meta, id);
                if in_dialog {
                    self.on_in_dialog(now, meta, id, request);
                } else if method == Some(Method::Invite) {
                    self.on_invite(now, meta, id, request);
                } else if method == Some(Method::Register) {
                    self.on_register(now, meta, id, request);
                } else if method == Some(Method::Options) && self.draining {
                    // A draining node looks down to SIP health checks (a
                    // load balancer's OPTIONS pings), so peers that ping
                    // before they send stop choosing it.
                    let retry = self.retry_after.to_string();
                    self.answer_once(
                        now,
                        id,
                        &request,
                        503,
                        &[(HeaderName::RetryAfter, retry.as_str())],
                    );
                } else if method == Some(Method::Options) {
                    // Answered once, statelessly: a retransmission is
                    // answered again, and nothing is held meanwhile.
                    let allow = self.server_policy.allow.clone();
                    let supported = self.server_policy.supported.join(", ");
                    self.answer_once(
                        now,
                        id,
                        &request,
                        200,
                        &[
                            (HeaderName::Allow, &allow),
                            (HeaderName::Accept, "application/sdp"),
                            (HeaderName::Supported, &supported),
                        ],
                    );
                } else {
                    let allow = self.server_policy.allow.clone();
                    self.answer_once(now, id, &request, 405, &[(HeaderName::Allow, &allow)]);
                    self.note_refusal(now, meta.realm, meta.remote.ip());
                }
            }
        }
    }

    fn remember_server(&mut self, id: ServerId, meta: &Meta) {
        self.sent_from.insert(
            TransactionId::Server(id),
            (meta.listener, meta.transport, meta.connection),
        );
    }

    /// Parses a message the core wrote for leg `at` of a call (`None`: no
    /// call's); a failure is a [`CallError::Build`].
    fn parse_built(
        &mut self,
        at: Option<(u64, Side)>,
        what: &'static str,
        bytes: &[u8],
    ) -> Option<Message> {
        match Message::parse(bytes) {
            Ok(msg) => Some(msg),
            Err(_) => {
                self.call_error(at, CallError::Build { what });
                None
            }
        }
    }

    /// Reports a failure inside the core, on leg `at` of a call if any.
    fn call_error(&mut self, at: Option<(u64, Side)>, error: CallError) {
        self.events.push_back(CoreEvent::CallError {
            call: at.map(|(call, _)| call),
            leg: at.map(|(_, side)| side.media()),
            error,
        });
    }

    /// A response on server transaction `server` (of leg `at`); the layer's
    /// refusal is a [`CallError::TransactionRefused`].
    fn respond_on(
        &mut self,
        now: Instant,
        at: Option<(u64, Side)>,
        server: ServerId,
        response: Message,
    ) {
        if let Err(e) = self.tx.send_response(now, server, response) {
            self.call_error(
                at,
                CallError::TransactionRefused {
                    what: "send a response",
                    detail: e.to_string(),
                },
            );
        }
    }

    /// A final or provisional answer of the SBC's own to a server transaction.
    fn reply(
        &mut self,
        now: Instant,
        id: ServerId,
        request: &Message,
        status: u16,
        extra: &[(HeaderName, &str)],
    ) {
        let tag = self.ids.tag();
        let bytes = sip::response::respond(request, status, "", Some(&tag), extra);
        if let Some(response) = self.parse_built(None, "answer of the SBC's own", &bytes) {
            self.respond_on(now, None, id, response);
        }
    }

    /// A final answer of the SBC's own that keeps no transaction: sent
    /// once, never retransmitted (no reflection); a retransmitted request
    /// is answered again.
    fn answer_once(
        &mut self,
        now: Instant,
        id: ServerId,
        request: &Message,
        status: u16,
        extra: &[(HeaderName, &str)],
    ) {
        self.reply(now, id, request, status, extra);
        self.answered_once.push((id, false));
    }

    /// Refuses a request on the SBC's own account: counted (when `reason`
    /// is given), answered once, and noted against a guarded source.
    fn refuse(
        &mut self,
        now: Instant,
        meta: &Meta,
        id: ServerId,
        request: &Message,
        status: u16,
        reason: Option<RejectReason>,
    ) {
        if let Some(reason) = reason {
            self.event_rejected(meta.realm, reason);
        }
        let retry = self.retry_after.to_string();
        let extra: Vec<(HeaderName, &str)> = if status == 503 {
            vec![(HeaderName::RetryAfter, retry.as_str())]
        } else {
            Vec::new()
        };
        self.answer_once(now, id, request, status, &extra);
        if protect::counts_as_refusal(status, reason) {
            self.note_refusal(now, meta.realm, meta.remote.ip());
        }
    }

    // ---- responses -----------------------------------------------------------

    fn on_tx_event(&mut self, now: Instant, event: transaction::Event) {
        match event {
            transaction::Event::Response { id, response } => {
                let is_final = response.status().is_some_and(|s| s >= 200);
                if is_final && let Some(relayed) = self.bindings.relayed.remove(&id) {
                    return self.on_registrar_response(now, relayed, Some(response));
                }
                // A keepalive or health check is done with its first final:
                // its transaction ends now rather than lingering timer K
                // (T4, 5 s) for retransmitted answers nobody needs, which at
                // 100,000 bindings pinged every 5 s would hold 100,000
                // transactions.
                if is_final && let Some(binding) = self.bindings.pings.remove(&id) {
                    let _ = self.tx.terminate(id);
                    return self.on_binding_ping(now, binding, true);
                }
                if let Some(&(trunk, target)) = self.pings.get(&id) {
                    if response.status().is_some_and(|s| s >= 200) {
                        self.pings.remove(&id);
                        let _ = self.tx.terminate(id);
                        self.target_health(trunk, target, true);
                    }
                    return;
                }
                let Some(&(call_no, side, role)) = self.clients.get(&id) else {
                    return;
                };
                let Some(mut call) = self.calls.remove(&call_no) else {
                    return;
                };
                match role {
                    ClientRole::Invite => self.on_b_invite_response(now, &mut call, response),
                    ClientRole::Relay(server)
                        if response.status().is_some_and(|s| (200..300).contains(&s))
                            && !call.relayed.contains_key(&server) =>
                    {
                        self.ack_again(&call, side, &response);
                    }
                    ClientRole::Relay(server) => {
                        if response.status().is_some_and(|s| s >= 200) {
                            self.learn_remote_target(&mut call, side, &response);
                        }
                        call.pending.push_back(Pending::Response {
                            from: side,
                            server,
                            response,
                        });
                        self.run_pending(now, &mut call);
                    }
                    ClientRole::Cancel | ClientRole::Courtesy => {}
                    ClientRole::Bye => {
                        if response.status().is_some_and(|s| s >= 200) {
                            call.end.byes = call.end.byes.saturating_sub(1);
                        }
                    }
                }
                self.put_back(now, call);
            }
            transaction::Event::Timeout { id } | transaction::Event::TransportError { id } => {
                let TransactionId::Client(client) = id else {
                    return;
                };
                if let Some((trunk, target)) = self.pings.remove(&client) {
                    return self.target_health(trunk, target, false);
                }
                if let Some(relayed) = self.bindings.relayed.remove(&client) {
                    return self.on_registrar_response(now, relayed, None);
                }
                if let Some(binding) = self.bindings.pings.remove(&client) {
                    return self.on_binding_ping(now, binding, false);
                }
                let Some(&(call_no, _, role)) = self.clients.get(&client) else {
                    return;
                };
                let Some(mut call) = self.calls.remove(&call_no) else {
                    return;
                };
                let cause = if matches!(event, transaction::Event::Timeout { .. }) {
                    FailoverCause::Timeout
                } else {
                    FailoverCause::TransportError
                };
                match role {
                    // Only the INVITE of B's current attempt: an earlier
                    // one (answered, waiting out timer D) may share the
                    // destination a send failure is reported for.
                    ClientRole::Invite if call.b_invite != Some(client) => {}
                    ClientRole::Invite => {
                        self.b_invite_failed(now, &mut call, None, Some(cause), None)
                    }
                    ClientRole::Relay(server) => {
                        let status = if cause == FailoverCause::Timeout {
                            408
                        } else {
                            503
                        };
                        if let Some(request) = call.answered_relay(server) {
                            self.reply(now, server, &request, status, &[]);
                        }
                    }
                    ClientRole::Bye => call.end.byes = call.end.byes.saturating_sub(1),
                    ClientRole::Cancel | ClientRole::Courtesy => {}
                }
                self.put_back(now, call);
            }
            transaction::Event::Terminated { id } => {
                self.sent_from.remove(&id);
                match id {
                    TransactionId::Client(client) => {
                        let role = self.clients.remove(&client);
                        self.pings.remove(&client);
                        self.bindings.pings.remove(&client);
                        if let Some(relayed) = self.bindings.relayed.remove(&client) {
                            self.on_registrar_response(now, relayed, None);
                        }
                        // B's INVITE transaction outlived B's 2xx
                        // retransmissions (timer M, 64*T1 from the first
                        // 2xx we got; B stops 64*T1 after sending it,
                        // §13.3.1.4): no 2xx is left to ACK again, unless
                        // the ACK kept is already one for a re-INVITE
                        // (B's CSeq moved on).
                        if let Some((call_no, Side::B, ClientRole::Invite)) = role
                            && let Some(call) = self.calls.get_mut(&call_no)
                            && call.phase == Phase::Confirmed
                            && call.b.as_ref().is_some_and(|b| b.local_cseq == 1)
                        {
                            call.b_ack = None;
                        }
                    }
                    TransactionId::Server(server) => {
                        self.servers.remove(&server);
                        self.uncount_transaction(server);
                    }
                }
            }
        }
    }

    // ---- teardown --------------------------------------------------------------

    // ---- media -------------------------------------------------------------------

    // ---- output ------------------------------------------------------------------

    /// Moves transaction output into the core's queues and reacts to
    /// transaction events until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.tx.poll_transmit() {
                progressed = true;
                if let Some(&(listener, transport, connection)) = self.sent_from.get(&t.id) {
                    if t.retransmission
                        && let Some(realm) = self.listener_realm(listener)
                    {
                        self.events.push_back(CoreEvent::Retransmitted {
                            realm: self.realms[realm].name.clone(),
                        });
                    }
                    self.out.push_back(Outbound {
                        transport,
                        from_listener: listener,
                        to: t.remote,
                        connection,
                        bytes: t.bytes,
                    });
                }
            }
            // Their answer is out: end them, or for an INVITE stop its
            // retransmissions and keep it a moment for the caller's own
            // (the transaction's route goes with its Terminated event).
            let (short, long) = (self.tx.timers().t1 * 8, self.tx.timers().t1x64());
            for (id, call) in std::mem::take(&mut self.answered_once) {
                let linger = if call { long } else { short };
                progressed |= self.tx.quiet(now, id, linger).is_ok();
            }
            for id in std::mem::take(&mut self.answered_few) {
                let _ = self
                    .tx
                    .limit_retransmissions(id, UNTRUSTED_FINAL_RETRANSMISSIONS);
            }
            // One event at a time: what it sends is drained above before
            // the next event, which may be the Terminated of the very
            // transaction it answered (a non-INVITE server transaction over
            // TCP ends as its final goes out) and takes its route away.
            if let Some(event) = self.tx.poll_event() {
                progressed = true;
                self.on_tx_event(now, event);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Sends a request through the transaction layer and records where its
    /// transmits go out; `None` when the layer refused it (table full).
    fn start_client(
        &mut self,
        now: Instant,
        request: Message,
        listener: ListenerId,
        transport: Transport,
        peer: SocketAddr,
        connection: Option<ConnectionId>,
    ) -> Option<ClientId> {
        let client = self
            .tx
            .send_request(now, request, peer, transport.is_reliable())
            .ok()?;
        self.sent_from.insert(
            TransactionId::Client(client),
            (listener, transport, connection),
        );
        Some(client)
    }

    fn send_direct(
        &mut self,
        listener: ListenerId,
        transport: Transport,
        to: SocketAddr,
        connection: Option<ConnectionId>,
        bytes: Vec<u8>,
    ) {
        self.out.push_back(Outbound {
            transport,
            from_listener: listener,
            to,
            connection,
            bytes,
        });
    }

    /// Sends bytes outside any transaction to where a leg's messages go.
    fn send_hop(&mut self, hop: Hop, bytes: Vec<u8>) {
        self.send_direct(hop.listener, hop.transport, hop.to, hop.connection, bytes);
    }

    fn sip_event(&mut self, realm: usize, msg: &Message) {
        self.events.push_back(CoreEvent::Sip {
            realm: self.realms[realm].name.clone(),
            inbound: false,
            method: msg.method(),
            status: msg.status(),
        });
    }
}

/// Where an inbound message came from and arrived.
struct Meta {
    realm: usize,
    listener: ListenerId,
    transport: Transport,
    remote: SocketAddr,
    connection: Option<ConnectionId>,
}

impl Meta {
    /// Where responses to `request` go (§18.2.2, RFC 3581).
    fn reply_to(&self, request: &Message) -> SocketAddr {
        match request.top_via() {
            Some(via) => crate::transport::nat::response_target(&via, self.remote, self.transport),
            None => self.remote,
        }
    }
}

fn inbound_meta(inbound: &Inbound, realm: usize) -> Meta {
    Meta {
        realm,
        listener: inbound.listener,
        transport: inbound.transport,
        remote: inbound.remote,
        connection: inbound.connection,
    }
}
