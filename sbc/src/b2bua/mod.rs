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

mod anchor;
mod build;
pub mod ids;
mod protect;
pub mod routing;
#[cfg(test)]
mod tests;
mod text;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use ids::{IdSource, RandomIds, SequentialIds};
pub use protect::{BanReason, UntrustedLoad, is_scanner};
pub use routing::Plan;

use crate::config::{Acl, Config, FailoverCause, HeaderPolicy, PeerAddress};
use crate::media::command::{
    LatchPolicy, Leg, LegSpec, LocalEndpoint, MediaCommand, MediaEvent, RtcpMode, StreamId,
};
use crate::sdp::Sdp;
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

/// Something the IO shell reports (metrics, logs, CDRs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreEvent {
    /// A SIP message was received or sent on a realm.
    Sip {
        /// The realm's name.
        realm: String,
        /// Received (true) or sent.
        inbound: bool,
        /// The method of a request.
        method: Option<Method>,
        /// The status of a response.
        status: Option<u16>,
    },
    /// A message on a realm failed to parse.
    ParseError {
        /// The realm's name.
        realm: String,
    },
    /// A request was refused before it became a call.
    Rejected {
        /// The realm's name.
        realm: String,
        /// Why.
        reason: RejectReason,
    },
    /// A call got its first 18x or 2xx, `setup` after its INVITE.
    CallSetup {
        /// The call.
        call: u64,
        /// INVITE to first 18x/2xx.
        setup: Duration,
    },
    /// A call's leg B was started towards a trunk (the first attempt, or a
    /// failover or redirect to another).
    CallAttempt {
        /// The call.
        call: u64,
        /// 1 for the first attempt.
        attempt: usize,
        /// Leg A's Call-ID (the caller's).
        a_call_id: String,
        /// Leg B's Call-ID (ours, new per attempt).
        b_call_id: String,
        /// Where the call came from.
        from_realm: String,
        /// The realm of leg B.
        to_realm: String,
        /// The trunk tried, if the target is one.
        trunk: Option<String>,
    },
    /// A call ended.
    CallEnded(Box<CallSummary>),
    /// The core asks for a source to be banned (the transport's shield
    /// enforces it, [`crate::guard`]).
    Banned {
        /// The realm's name.
        realm: String,
        /// The source address.
        source: IpAddr,
        /// Why.
        reason: BanReason,
    },
    /// A trunk's OPTIONS health check changed its verdict (or gave its first).
    TrunkState {
        /// The trunk's name.
        trunk: String,
        /// Whether it answers.
        up: bool,
    },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The source is not allowed on the realm.
    Acl,
    /// A trunk's calls-per-second limit.
    RateLimit,
    /// A global or trunk concurrent-call or transaction limit.
    Admission,
    /// No route matched, or every target was unusable.
    NoRoute,
    /// Media ports ran out.
    MediaPorts,
    /// The SBC is shutting down.
    Draining,
    /// The request failed a server check (416, 420, 483, 501) or was malformed.
    Invalid,
    /// An untrusted source holds its share of transactions, setups or calls
    /// (`[protection] max_*_per_source`).
    SourceLimit,
    /// The User-Agent of a known scanner: dropped, the source banned.
    Scanner,
    /// An in-dialog request, ACK or CANCEL from someone other than the
    /// dialog's peer.
    ForeignInDialog,
    /// The SBC is saturated, or untrusted sources hold their share of it.
    Overload,
    /// The message was larger than the parser takes.
    Oversized,
}

/// What a finished call leaves behind (the CDR's raw material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSummary {
    /// The call's number within this core.
    pub call: u64,
    /// The realm it arrived on.
    pub from_realm: String,
    /// The trunk it arrived from, if the source matched one.
    pub from_trunk: Option<String>,
    /// The route taken.
    pub route: Option<String>,
    /// Trunks tried, in order; the last is the one used.
    pub trunks_tried: Vec<String>,
    /// Leg A's and leg B's Call-IDs.
    pub call_ids: (String, Option<String>),
    /// The INVITE as received on leg A (From, To, Request-URI, Call-ID);
    /// of an answered call only its head (start line, Via, From, To,
    /// Call-ID, CSeq): no body, no other header.
    pub invite: Message,
    /// The realm of the last B leg.
    pub to_realm: Option<String>,
    /// The media streams the call had (their final counters follow as
    /// `MediaEvent::Released`).
    pub streams: Vec<StreamId>,
    /// INVITE received.
    pub started: Instant,
    /// First 18x/2xx relayed.
    pub progressed: Option<Instant>,
    /// First 2xx relayed.
    pub answered: Option<Instant>,
    /// Call torn down.
    pub ended: Instant,
    /// The final status A got for its INVITE (200 for answered calls).
    pub status: u16,
    /// Who hung up.
    pub ended_by: EndedBy,
}

/// Who ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// Leg A (BYE or CANCEL).
    Caller,
    /// Leg B (BYE), or the trunk's final failure response.
    Callee,
    /// The SBC itself.
    Sbc(SbcReason),
}

/// Why the SBC ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbcReason {
    /// Shutting down.
    Shutdown,
    /// The media layer saw no media for too long.
    MediaTimeout,
    /// No media ports were free.
    MediaPorts,
    /// No route, or no usable trunk on it.
    NoRoute,
    /// The offer could not be anchored (malformed or unusable SDP).
    BadSdp,
    /// The transaction table was full.
    Overload,
    /// The trunk never answered (timer B) or could not be reached.
    NoAnswer,
    /// The caller never ACKed our 2xx (64*T1, RFC 3261 §13.3.1.4).
    NoAck,
    /// A state the core should not reach; the call was cleaned up.
    Internal,
}

/// Either leg of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn media(self) -> Leg {
        match self {
            Side::A => Leg::A,
            Side::B => Leg::B,
        }
    }
}

/// A realm as the core knows it. Realms keep their index for the life of
/// the core (calls and trunks hold it): a reload updates a realm by name,
/// appends new ones and keeps removed ones, never reorders.
#[derive(Clone, Debug)]
struct RealmInfo {
    name: String,
    /// Where its media is anchored (a relay port range's address).
    media_address: IpAddr,
    /// What SDP shows instead of the anchored address (1:1 NAT).
    media_advertise: Option<IpAddr>,
    acl: Acl,
}

/// A listener and whether it takes new calls.
#[derive(Clone, Debug)]
struct CoreListener {
    info: ListenerInfo,
    state: ListenerState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListenerState {
    /// Serves everything.
    Active,
    /// Gone from the configuration: serves the dialogs and transactions
    /// that use it, refuses new calls with 503, and closes once unused.
    Retiring,
    /// Closed by the IO shell (or an id the core never had).
    Closed,
}

/// One leg's dialog and where its messages go.
#[derive(Clone, Debug)]
struct LegState {
    realm: usize,
    listener: ListenerId,
    transport: Transport,
    /// Next hop for requests on this leg.
    peer: SocketAddr,
    connection: Option<ConnectionId>,
    /// Call-ID, tags, From, To, target, Via sent-by and Contact.
    text: LegText,
    remote_tag_known: bool,
    local_cseq: u32,
    route_set: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for media allocation or B's answer.
    Setup,
    /// A got our 2xx; waiting for its ACK.
    Answered,
    /// Both legs confirmed.
    Confirmed,
    /// BYEs sent; waiting for them to finish.
    Ending,
}

/// A message waiting for media allocation before it can be relayed.
#[derive(Debug)]
enum Pending {
    /// The initial INVITE towards B.
    Invite,
    /// A response from `from` to relay onto the other leg's server transaction.
    Response {
        from: Side,
        server: ServerId,
        response: Message,
    },
    /// An in-dialog request from `from` to relay onto the other leg.
    Request {
        from: Side,
        server: ServerId,
        request: Message,
    },
    /// An ACK (carrying a late-offer answer) from `from`.
    Ack { from: Side, ack: Message },
}

/// Why a client transaction on a leg exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientRole {
    /// The initial INVITE on B.
    Invite,
    /// The CANCEL of B's INVITE.
    Cancel,
    /// A relayed in-dialog request, answering into this server transaction.
    Relay(ServerId),
    /// A BYE the SBC sends on its own (teardown).
    Bye,
    /// A BYE nobody waits for (to a caller that never ACKed).
    Courtesy,
}

#[derive(Debug)]
struct Call {
    id: u64,
    phase: Phase,
    a: LegState,
    b: Option<LegState>,
    /// The initial INVITE as received on A, and its server transaction.
    /// Once A has its 2xx only its head is kept (see [`invite_head`]).
    a_invite: Message,
    a_server: ServerId,
    /// A's INVITE has its final response.
    a_final: bool,
    /// B's INVITE client transaction and whether a provisional arrived.
    b_invite: Option<ClientId>,
    b_provisional: bool,
    /// A cancelled: CANCEL B as soon as §9.1 allows.
    cancel_b: bool,
    plan: Plan,
    next_target: usize,
    trunk: Option<usize>,
    source_trunk: Option<usize>,
    trunks_tried: Vec<String>,
    /// To of leg B's INVITE (the original target, kept across redirects
    /// until A has its 2xx).
    b_to: String,
    /// 3xx recursions so far.
    redirects: u8,
    /// Our 2xx to A and its retransmission schedule.
    a_2xx: Option<(Vec<u8>, Duration, Instant)>,
    /// The ACK we last sent for a 2xx of B's (re-sent for a retransmitted
    /// 2xx); the one for the initial INVITE goes when its transaction ends.
    b_ack: Option<Vec<u8>>,
    /// Per `m=` line: its stream and, once allocated, both legs' endpoints.
    streams: Vec<Option<(StreamId, Option<[LocalEndpoint; 2]>)>>,
    /// The realm of the B side the streams are allocated on.
    media_realm_b: Option<usize>,
    pending: VecDeque<Pending>,
    /// Streams released so far (their counters arrive as `Released`).
    released: Vec<StreamId>,
    /// In-dialog server transactions waiting for the relayed response:
    /// their request, to build the response from.
    relayed: HashMap<ServerId, Message>,
    /// BYE client transactions still open during teardown.
    byes: u8,
    started: Instant,
    /// First 18x/2xx relayed to A.
    progressed: Option<Instant>,
    answered: Option<Instant>,
    a_status: u16,
    ended_by: Option<EndedBy>,
    /// The untrusted source this call is counted against ([`protect`]).
    guarded: Option<IpAddr>,
    /// Counted as a setup of that source (until A has its final response).
    in_setup: bool,
    /// The first trunk limit that held the call back from a target.
    held_back: Option<RejectReason>,
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
    /// Boxed: a table of calls inline would hold up to twice the calls up
    /// in empty slots of a `Call`'s size (hash tables grow by doubling).
    calls: HashMap<u64, Box<Call>>,
    next_call: u64,
    next_stream: u64,
    /// (Call-ID, our tag) of each leg → call and side.
    /// Keyed by [`dialog_key`].
    dialogs: HashMap<Box<str>, (u64, Side)>,
    servers: HashMap<ServerId, u64>,
    clients: HashMap<ClientId, (u64, Side, ClientRole)>,
    streams: HashMap<StreamId, u64>,
    /// OPTIONS health checks in flight, by the trunk they probe.
    pings: HashMap<ClientId, usize>,
    /// Where a transaction's transmits go out.
    routes_of: HashMap<TransactionId, (ListenerId, Transport, Option<ConnectionId>)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    out: VecDeque<Outbound>,
    media_out: VecDeque<MediaCommand>,
    events: VecDeque<CoreEvent>,
    draining: bool,
    protect: protect::Protect,
    /// Server transactions whose final answer goes out once: ended as soon
    /// as that answer is on its way (see [`Core::pump`]).
    answered_once: Vec<ServerId>,
}

impl Core {
    /// A core for `config`, sending through `listeners` (indexed by
    /// [`ListenerId`]). `resolve` gives the address of a trunk whose address
    /// is a host name (the IO shell resolves names); IP trunks need none.
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
            calls: HashMap::new(),
            next_call: 1,
            next_stream: 1,
            dialogs: HashMap::new(),
            servers: HashMap::new(),
            clients: HashMap::new(),
            streams: HashMap::new(),
            pings: HashMap::new(),
            routes_of: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            media_out: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            protect: protect::Protect::default(),
            answered_once: Vec::new(),
        };
        core.apply(config, resolve);
        core
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
                media_address: r.media.address,
                media_advertise: r.media.advertise,
                acl: r.acl.clone(),
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
                state.transport = match t.transport {
                    crate::config::Transport::Udp => Transport::Udp,
                    crate::config::Transport::Tcp => Transport::Tcp,
                };
                state.asymmetric_rtp = t.asymmetric_rtp;
                state.header_policy = t.header_policy.clone();
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

    /// Sends the health checks that are due (RFC 3261 §11: any response
    /// means the peer is alive; a timeout or transport error that it is not).
    fn ping_trunks(&mut self, now: Instant) {
        for index in 0..self.trunks.len() {
            let trunk = &mut self.trunks[index];
            let (Some(every), Some(due), Some(peer)) =
                (trunk.ping_every, trunk.next_ping, trunk.address)
            else {
                continue;
            };
            if due > now {
                continue;
            }
            trunk.next_ping = Some(now + every);
            if self.pings.values().any(|t| *t == index) {
                continue; // the previous one is still out
            }
            let Some(listener) = self.trunk_listener(index, peer) else {
                continue;
            };
            let transport = self.trunks[index].transport;
            let addr = self.listeners[listener].info.public();
            let (branch, tag, call_id) = (self.ids.branch(), self.ids.tag(), self.ids.call_id());
            let uri = format!("sip:{}", host_port(peer));
            let bytes = build::request(
                &build::RequestHead {
                    method: "OPTIONS",
                    request_uri: &uri,
                    via_sent_by: &sent_by(transport, addr),
                    branch: &branch,
                    max_forwards: 70,
                    from: &format!("<sip:sbc@{}>;tag={tag}", host_port(addr)),
                    to: &format!("<{uri}>"),
                    call_id: &call_id,
                    cseq: 1,
                    route_set: &[],
                    contact: Some(&contact_uri(transport, addr)),
                },
                None,
                &self.policy,
                &[],
                b"",
            );
            let Ok(request) = Message::parse(&bytes) else {
                continue;
            };
            self.sip_event(self.trunks[index].realm, &request);
            if let Some(client) =
                self.start_client(now, request, ListenerId(listener), transport, peer, None)
            {
                self.pings.insert(client, index);
            }
        }
    }

    fn trunk_health(&mut self, trunk: usize, up: bool) {
        let Some(state) = self.trunks.get_mut(trunk) else {
            return;
        };
        if state.up != Some(up) {
            state.up = Some(up);
            self.events.push_back(CoreEvent::TrunkState {
                trunk: state.name.clone(),
                up,
            });
        }
    }

    /// The listener a trunk is reached from: its realm's, of its transport
    /// and address family.
    fn trunk_listener(&self, trunk: usize, peer: SocketAddr) -> Option<usize> {
        let trunk = &self.trunks[trunk];
        self.realm_listener(trunk.realm, trunk.transport, peer)
    }

    /// An active listener of `realm` for `transport` in `peer`'s address
    /// family.
    fn realm_listener(
        &self,
        realm: usize,
        transport: Transport,
        peer: SocketAddr,
    ) -> Option<usize> {
        let realm = &self.realms.get(realm)?.name;
        self.listeners.iter().position(|l| {
            let l_info = &l.info;
            l.state == ListenerState::Active
                && &l_info.realm == realm
                && l_info.transport == transport
                && l_info.addr.is_ipv4() == peer.is_ipv4()
        })
    }

    /// The listeners after a reload: `active` are those that take new calls
    /// (ids from the transports, old and new). Every other listener the core
    /// knew retires: it keeps serving the dialogs and transactions that use
    /// it, and [`Core::poll_closable_listener`] says when it is unused.
    pub fn set_listeners(&mut self, active: &[(ListenerId, ListenerInfo)]) {
        for listener in &mut self.listeners {
            if listener.state == ListenerState::Active {
                listener.state = ListenerState::Retiring;
            }
        }
        for (id, info) in active {
            if self.listeners.len() <= id.0 {
                self.listeners.resize(
                    id.0 + 1,
                    CoreListener {
                        info: info.clone(),
                        state: ListenerState::Closed,
                    },
                );
            }
            self.listeners[id.0] = CoreListener {
                info: info.clone(),
                state: ListenerState::Active,
            };
        }
    }

    /// A retiring listener that no call leg, transaction or health check
    /// uses any more: the IO shell closes it now. Marked closed here, so
    /// each comes out once.
    pub fn poll_closable_listener(&mut self) -> Option<ListenerId> {
        let index = self.listeners.iter().enumerate().position(|(i, l)| {
            l.state == ListenerState::Retiring && !self.listener_in_use(ListenerId(i))
        })?;
        self.listeners[index].state = ListenerState::Closed;
        Some(ListenerId(index))
    }

    fn listener_active(&self, id: ListenerId) -> bool {
        self.listeners
            .get(id.0)
            .is_some_and(|l| l.state == ListenerState::Active)
    }

    fn listener_in_use(&self, id: ListenerId) -> bool {
        self.routes_of.values().any(|(l, _, _)| *l == id)
            || self
                .calls
                .values()
                .any(|c| c.a.listener == id || c.b.as_ref().is_some_and(|b| b.listener == id))
    }

    /// Listeners retiring (waiting for their calls to end).
    pub fn retiring_listeners(&self) -> usize {
        self.listeners
            .iter()
            .filter(|l| l.state == ListenerState::Retiring)
            .count()
    }

    /// Calls up now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The name and media address of the realm with this index (the index
    /// a realm keeps for the life of the process, which media totals are
    /// tagged with); `None` past the last realm.
    pub fn realm_media(&self, index: usize) -> Option<(&str, IpAddr)> {
        self.realms
            .get(index)
            .map(|r| (r.name.as_str(), r.media_address))
    }

    /// Calls up per realm of their A leg.
    pub fn calls_per_realm(&self) -> Vec<(String, usize)> {
        self.realms
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    r.name.clone(),
                    self.calls.values().filter(|c| c.a.realm == i).count(),
                )
            })
            .collect()
    }

    /// Calls up per trunk.
    pub fn calls_per_trunk(&self) -> Vec<(String, u32)> {
        self.trunks
            .iter()
            .map(|t| (t.name.clone(), t.active))
            .collect()
    }

    /// Open SIP transactions.
    pub fn transactions(&self) -> usize {
        self.tx.len()
    }

    /// A JSON view of the calls up (for the admin `/calls` endpoint only:
    /// it shows both legs' addresses).
    pub fn calls_json(&self, now: Instant) -> Vec<u8> {
        let mut calls: Vec<&Call> = self.calls.values().map(|c| &**c).collect();
        calls.sort_by_key(|c| c.id);
        let realms = &self.realms;
        fn leg<'a>(l: &'a LegState, realms: &'a [RealmInfo]) -> LegView<'a> {
            LegView {
                realm: realms.get(l.realm).map(|r| r.name.as_str()),
                transport: match l.transport {
                    Transport::Udp => "UDP",
                    Transport::Tcp => "TCP",
                },
                peer: l.peer,
                call_id: l.text.get(Part::CallId),
            }
        }
        let views: Vec<CallView<'_>> = calls
            .into_iter()
            .map(|c| CallView {
                id: c.id,
                phase: match c.phase {
                    Phase::Setup => "setup",
                    Phase::Answered => "answered",
                    Phase::Confirmed => "confirmed",
                    Phase::Ending => "ending",
                },
                age_secs: now.saturating_duration_since(c.started).as_secs(),
                route: &c.plan.route,
                trunk: c
                    .trunk
                    .and_then(|t| self.trunks.get(t))
                    .map(|t| t.name.as_str()),
                a: leg(&c.a, realms),
                b: c.b.as_ref().map(|b| leg(b, realms)),
                streams: c.streams.iter().flatten().map(|(s, _)| s.0).collect(),
            })
            .collect();
        // Plain structs of borrowed fields cannot fail to serialize.
        serde_json::to_vec(&views).unwrap_or_default()
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
        let ping = self.trunks.iter().filter_map(|t| t.next_ping).min();
        let own = self.timers.peek().map(|Reverse((at, _))| *at);
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
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(mut call) = self.calls.remove(&id) else {
                continue;
            };
            self.call_timer(now, &mut call);
            self.put_back(now, call);
        }
        self.pump(now);
    }

    /// A transport could not deliver to `to`.
    pub fn handle_send_failed(&mut self, now: Instant, to: SocketAddr) {
        let failed: Vec<TransactionId> = self
            .clients
            .keys()
            .filter(|id| {
                let id = TransactionId::Client(**id);
                self.tx.contains(id) && self.client_remote(id) == Some(to)
            })
            .map(|id| TransactionId::Client(*id))
            .collect();
        for id in failed {
            let _ = self.tx.handle_transport_error(now, id);
        }
        self.pump(now);
    }

    fn client_remote(&self, id: TransactionId) -> Option<SocketAddr> {
        let TransactionId::Client(client) = id else {
            return None;
        };
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
                for slot in call.streams.iter_mut().flatten() {
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
                for slot in &mut call.streams {
                    if slot.is_some_and(|(s, _)| s == stream) {
                        *slot = None;
                    }
                }
                self.event_rejected(call.a.realm, RejectReason::MediaPorts);
                self.fail_call(now, &mut call, 503, EndedBy::Sbc(SbcReason::MediaPorts));
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
            MediaEvent::Latched { .. } | MediaEvent::CommandFailed { .. } => {}
        }
        self.pump(now);
    }

    fn listener_realm(&self, listener: ListenerId) -> Option<usize> {
        let listener = self.listeners.get(listener.0)?;
        if listener.state == ListenerState::Closed {
            return None;
        }
        self.realms
            .iter()
            .position(|r| r.name == listener.info.realm)
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
        let reliable = meta.transport == Transport::Tcp;
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
                    self.answered_once.push(id);
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
                } else if method == Some(Method::Options) {
                    // Answered once, statelessly: a retransmission is
                    // answered again, and nothing is held meanwhile.
                    let allow = self.server_policy.allow.clone();
                    self.answer_once(
                        now,
                        id,
                        &request,
                        200,
                        &[
                            (HeaderName::Allow, &allow),
                            (HeaderName::Accept, "application/sdp"),
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
        self.routes_of.insert(
            TransactionId::Server(id),
            (meta.listener, meta.transport, meta.connection),
        );
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
        if let Ok(response) = Message::parse(&bytes) {
            let _ = self.tx.send_response(now, id, response);
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
        self.answered_once.push(id);
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

    fn on_invite(&mut self, now: Instant, meta: &Meta, id: ServerId, request: Message) {
        let realm = meta.realm;
        let refuse = |core: &mut Core, status: u16, reason: RejectReason| {
            core.refuse(now, meta, id, &request, status, Some(reason));
        };
        // (A retiring listener never gets here: `on_request` refuses what
        // is new on it.)
        if self.draining {
            return refuse(self, 503, RejectReason::Draining);
        }
        if self.calls.len() >= self.max_calls {
            return refuse(self, 503, RejectReason::Admission);
        }
        if let Some(reason) = self.invite_refusal(meta) {
            return refuse(self, 503, reason);
        }
        let source_trunk = self.trunks.iter().position(|t| {
            !t.retired && t.realm == realm && t.address.is_some_and(|a| a.ip() == meta.remote.ip())
        });
        let Some(uri) = request.request_uri() else {
            return refuse(self, 400, RejectReason::Invalid);
        };
        let user = uri.user().unwrap_or_default().to_vec();
        let domain = uri.host().map(|h| h.to_string()).unwrap_or_default();
        let facts = CallFacts {
            realm: &self.realms[realm].name,
            trunk: source_trunk.map(|t| self.trunks[t].name.as_str()),
            user: &user,
            domain: domain.trim_start_matches('[').trim_end_matches(']'),
        };
        let trunks = &self.trunks;
        let Some(plan) = routing::select(&self.routes, &facts, |name| {
            trunks.iter().position(|t| t.name == name)
        }) else {
            return refuse(self, 404, RejectReason::NoRoute);
        };
        // Trunks whose health check failed are tried last, not skipped: a
        // probe can fail while calls would still work.
        let mut plan = plan;
        plan.targets
            .sort_by_key(|&t| self.trunks[t].up == Some(false));
        let Some(contact) = request
            .contacts()
            .next()
            .and_then(Result::ok)
            .and_then(|c| match c {
                sip::header::Contact::Addr(addr) => {
                    Some(String::from_utf8_lossy(addr.uri().as_bytes()).into_owned())
                }
                sip::header::Contact::Star => None,
            })
        else {
            return refuse(self, 400, RejectReason::Invalid);
        };
        let local_tag = self.ids.tag();
        let to = String::from_utf8_lossy(request.header(HeaderName::To).unwrap_or_default())
            .into_owned();
        let from = String::from_utf8_lossy(request.header(HeaderName::From).unwrap_or_default())
            .into_owned();
        let call_id = String::from_utf8_lossy(request.call_id().unwrap_or_default()).into_owned();
        let route_set: Vec<String> = request
            .values(HeaderName::RecordRoute)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let listener = &self.listeners[meta.listener.0].info;
        let a = LegState {
            realm,
            listener: meta.listener,
            transport: meta.transport,
            peer: meta.remote,
            connection: meta.connection,
            text: LegText::new([
                &call_id,
                &local_tag,
                &format!("{to};tag={local_tag}"),
                &from,
                &contact,
                &sent_by(meta.transport, listener.public()),
                &contact_uri(meta.transport, listener.public()),
            ]),
            remote_tag_known: true,
            local_cseq: self.ids.next_bytes()[0] as u32 + 1,
            route_set,
        };
        let call_no = self.next_call;
        self.next_call += 1;
        self.dialogs
            .insert(dialog_key(&call_id, &local_tag), (call_no, Side::A));
        self.servers.insert(id, call_no);
        let mut call = Box::new(Call {
            id: call_no,
            phase: Phase::Setup,
            a,
            b: None,
            a_invite: request,
            a_server: id,
            a_final: false,
            b_invite: None,
            b_provisional: false,
            cancel_b: false,
            plan,
            next_target: 0,
            trunk: None,
            source_trunk,
            trunks_tried: Vec::new(),
            b_to: String::new(),
            redirects: 0,
            a_2xx: None,
            b_ack: None,
            streams: Vec::new(),
            media_realm_b: None,
            pending: VecDeque::new(),
            released: Vec::new(),
            relayed: HashMap::new(),
            byes: 0,
            started: now,
            progressed: None,
            answered: None,
            a_status: 0,
            ended_by: None,
            guarded: None,
            in_setup: false,
            held_back: None,
        });
        self.count_call(&mut call, meta);
        self.try_next_target(now, &mut call);
        self.put_back(now, call);
    }

    /// Starts leg B towards the route's next usable trunk, or fails the call.
    fn try_next_target(&mut self, now: Instant, call: &mut Call) {
        loop {
            let Some(&trunk) = call.plan.targets.get(call.next_target) else {
                let status = if call.trunks_tried.is_empty() {
                    // Refused once, for the first trunk limit that held it
                    // back, or for having no usable trunk at all.
                    let reason = call.held_back.unwrap_or(RejectReason::NoRoute);
                    self.event_rejected(call.a.realm, reason);
                    503
                } else {
                    call.a_status.max(480)
                };
                return self.fail_call(now, call, status, EndedBy::Sbc(SbcReason::NoRoute));
            };
            call.next_target += 1;
            let state = &mut self.trunks[trunk];
            let Some(peer) = state.address else { continue };
            match state.admit(now) {
                Ok(()) => {}
                Err(refusal) => {
                    call.held_back.get_or_insert(match refusal {
                        Refusal::Calls => RejectReason::Admission,
                        Refusal::Rate => RejectReason::RateLimit,
                    });
                    continue;
                }
            }
            let realm = state.realm;
            let transport = self.trunks[trunk].transport;
            let Some(listener) = self.trunk_listener(trunk, peer) else {
                self.trunks[trunk].release();
                continue;
            };
            if let Some(previous) = call.trunk.replace(trunk) {
                self.trunks[previous].release();
            }
            // One at a time: most calls take the first trunk they try.
            call.trunks_tried.reserve_exact(1);
            call.trunks_tried.push(self.trunks[trunk].name.clone());
            let user = call
                .a_invite
                .request_uri()
                .and_then(|u| u.user().map(|u| String::from_utf8_lossy(u).into_owned()))
                .unwrap_or_default();
            let at = if user.is_empty() {
                String::new()
            } else {
                format!("{user}@")
            };
            let host = host_port(peer);
            call.b_to = format!("<sip:{at}{host}>");
            let target = format!("sip:{at}{host}");
            self.start_b_leg(now, call, realm, transport, listener, peer, target);
            return;
        }
    }

    /// Starts (or restarts) leg B towards `peer`, with `target` as its
    /// Request-URI and remote target: a new Call-ID and From tag, our
    /// realm address in From (the caller's user and display name kept),
    /// Via and Contact; the INVITE goes out once its offer is anchored.
    #[allow(clippy::too_many_arguments)]
    fn start_b_leg(
        &mut self,
        now: Instant,
        call: &mut Call,
        realm: usize,
        transport: Transport,
        listener: usize,
        peer: SocketAddr,
        target: String,
    ) {
        let addr = self.listeners[listener].info.public();
        let local_tag = self.ids.tag();
        let call_id = self.ids.call_id();
        let from = call.a_invite.from();
        let from_user = from
            .as_ref()
            .and_then(|f| {
                f.uri()
                    .user()
                    .map(|u| String::from_utf8_lossy(u).into_owned())
            })
            .unwrap_or_else(|| "anonymous".into());
        let display = from
            .as_ref()
            .and_then(|f| {
                f.display_name()
                    .map(|d| format!("{} ", String::from_utf8_lossy(d)))
            })
            .unwrap_or_default();
        let b = LegState {
            realm,
            listener: ListenerId(listener),
            transport,
            peer,
            connection: None,
            text: LegText::new([
                &call_id,
                &local_tag,
                &format!(
                    "{display}<sip:{from_user}@{}>;tag={local_tag}",
                    host_port(addr)
                ),
                &call.b_to,
                &target,
                &sent_by(transport, addr),
                &contact_uri(transport, addr),
            ]),
            remote_tag_known: false,
            local_cseq: 1,
            route_set: Vec::new(),
        };
        self.events.push_back(CoreEvent::CallAttempt {
            call: call.id,
            attempt: call.trunks_tried.len().max(1) + usize::from(call.redirects),
            a_call_id: call.a.text.get(Part::CallId).to_owned(),
            b_call_id: call_id.clone(),
            from_realm: self.realms[call.a.realm].name.clone(),
            to_realm: self.realms[realm].name.clone(),
            trunk: call.trunks_tried.last().cloned(),
        });
        self.dialogs
            .insert(dialog_key(&call_id, &local_tag), (call.id, Side::B));
        if let Some(old) = call.b.replace(b) {
            self.dialogs.remove(&old.dialog_key());
        }
        call.b_provisional = false;
        call.pending.push_back(Pending::Invite);
        self.run_pending(now, call);
    }

    /// The initial INVITE on B (once its offer, if any, is anchored).
    fn send_b_invite(&mut self, now: Instant, call: &mut Call) -> Result<(), ()> {
        let body = if call.a_invite.body().is_empty() {
            Vec::new()
        } else {
            let source = call.a.peer.ip();
            let body = call.a_invite.body().to_vec();
            match self.anchor(now, call, Side::A, &body, source) {
                Anchored::Ready(body) => body,
                Anchored::Wait => return Err(()),
                Anchored::Invalid(status) => {
                    self.fail_call(now, call, status, EndedBy::Sbc(SbcReason::BadSdp));
                    return Ok(());
                }
            }
        };
        let Some(b) = call.b.as_mut() else {
            return Ok(());
        };
        let max_forwards = call.a_invite.max_forwards().unwrap_or(70).saturating_sub(1);
        let branch = self.ids.branch();
        let policy = call
            .trunk
            .and_then(|t| self.trunks.get(t))
            .and_then(|t| t.header_policy.as_ref())
            .unwrap_or(&self.policy);
        let bytes = b.request(
            "INVITE",
            &branch,
            max_forwards,
            true,
            policy,
            Content {
                src: Some(&call.a_invite),
                extra: &[],
                body: &body,
            },
        );
        let (listener, transport, peer) = (b.listener, b.transport, b.peer);
        let Ok(request) = Message::parse(&bytes) else {
            return Ok(());
        };
        self.sip_event(call.b.as_ref().map_or(0, |b| b.realm), &request);
        match self.start_client(now, request, listener, transport, peer, None) {
            Some(client) => {
                self.clients
                    .insert(client, (call.id, Side::B, ClientRole::Invite));
                call.b_invite = Some(client);
            }
            None => {
                self.event_rejected(call.a.realm, RejectReason::Admission);
                self.fail_call(now, call, 503, EndedBy::Sbc(SbcReason::Overload));
            }
        }
        Ok(())
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        meta: &Meta,
        id: ServerId,
        target: Option<ServerId>,
        request: &Message,
    ) {
        let call = target.and_then(|t| self.servers.get(&t).copied());
        let Some(call_no) = call else {
            return self.refuse(now, meta, id, request, 481, None);
        };
        // Matched by branch, but only the INVITE's sender may cancel it.
        if self
            .calls
            .get(&call_no)
            .is_some_and(|c| !self.is_dialog_peer(c, Side::A, meta))
        {
            return self.refuse_foreign(now, meta, Some(id), request);
        }
        self.reply(now, id, request, 200, &[]);
        let Some(mut call) = self.calls.remove(&call_no) else {
            return;
        };
        if !call.a_final {
            self.respond_a(now, &mut call, 487, None);
            call.ended_by = Some(EndedBy::Caller);
            call.cancel_b = true;
            self.abandon_pending(now, &mut call);
            self.cancel_b(now, &mut call);
        }
        self.put_back(now, call);
    }

    /// Sends the CANCEL for B's INVITE once a provisional allows it (§9.1).
    fn cancel_b(&mut self, now: Instant, call: &mut Call) {
        let Some(client) = call.b_invite else {
            // B's INVITE was never sent (still waiting for media): nothing to cancel.
            call.b_invite = None;
            return;
        };
        if !call.b_provisional {
            return; // sent when the first provisional arrives
        }
        if let Ok(cancel) = self.tx.cancel_request(client)
            && let Some(b) = call.b.as_ref()
        {
            let (listener, transport, peer) = (b.listener, b.transport, b.peer);
            if let Some(cancel_id) = self.start_client(now, cancel, listener, transport, peer, None)
            {
                self.clients
                    .insert(cancel_id, (call.id, Side::B, ClientRole::Cancel));
            }
        }
        // 64*T1 later, give up on B's INVITE (§9.1).
        self.timers
            .push(Reverse((now + self.tx.timers().t1x64(), call.id)));
    }

    fn on_ack(&mut self, now: Instant, meta: &Meta, ack: Message) {
        let Some((call_no, side)) = self.dialog_of(&ack) else {
            return;
        };
        if self
            .calls
            .get(&call_no)
            .is_some_and(|c| !self.is_dialog_peer(c, side, meta))
        {
            return self.refuse_foreign(now, meta, None, &ack);
        }
        let Some(mut call) = self.calls.remove(&call_no) else {
            return;
        };
        if side == Side::A && meta.remote.ip() == call.a.peer.ip() {
            call.a.peer = meta.remote; // follow a NAT rebinding
        }
        let initial = side == Side::A && call.a_2xx.take().is_some();
        if initial && call.phase == Phase::Answered {
            call.phase = Phase::Confirmed;
        }
        // The ACK for the initial 2xx, or for a relayed re-INVITE's 2xx.
        if (initial || call.phase == Phase::Confirmed) && leg_ref(&call, side.other()).is_some() {
            call.pending.push_back(Pending::Ack { from: side, ack });
            self.run_pending(now, &mut call);
        }
        self.put_back(now, call);
    }

    fn dialog_of(&self, msg: &Message) -> Option<(u64, Side)> {
        let call_id = String::from_utf8_lossy(msg.call_id()?);
        let tag = msg.to()?.tag()?;
        self.dialogs.get(&dialog_key(&call_id, tag)).copied()
    }

    fn on_in_dialog(&mut self, now: Instant, meta: &Meta, id: ServerId, request: Message) {
        let Some((call_no, side)) = self.dialog_of(&request) else {
            return self.refuse(now, meta, id, &request, 481, None);
        };
        // Only the leg's own peer may act in its dialog: a stranger who
        // learned the Call-ID and tags changes nothing.
        match self.calls.get(&call_no) {
            None => return self.refuse(now, meta, id, &request, 481, None),
            Some(call) if !self.is_dialog_peer(call, side, meta) => {
                return self.refuse_foreign(now, meta, Some(id), &request);
            }
            Some(_) => {}
        }
        let Some(mut call) = self.calls.remove(&call_no) else {
            return;
        };
        self.servers.insert(id, call.id);
        let method = request.method();
        let other_ready = match side.other() {
            Side::A => true,
            Side::B => call.b.as_ref().is_some_and(|b| b.remote_tag_known),
        };
        if call.phase == Phase::Ending || !other_ready {
            let status = if method == Some(Method::Bye) {
                200
            } else {
                481
            };
            self.reply(now, id, &request, status, &[]);
        } else if method == Some(Method::Bye) {
            // Answer at once; the other leg is told independently.
            self.reply(now, id, &request, 200, &[]);
            let by = if side == Side::A {
                EndedBy::Caller
            } else {
                EndedBy::Callee
            };
            call.ended_by.get_or_insert(by);
            call.phase = Phase::Ending;
            call.a_2xx = None;
            self.send_bye(now, &mut call, side.other(), true);
            self.release_media(&mut call);
        } else if method == Some(Method::Invite) && call.invite_in_progress(side) {
            // RFC 3261 §14.2: a second INVITE before the first has its
            // final response gets 500 with a random Retry-After of 0-10 s.
            let retry = (self.ids.next_bytes()[0] % 11).to_string();
            self.reply(now, id, &request, 500, &[(HeaderName::RetryAfter, &retry)]);
        } else if method == Some(Method::Invite) && call.invite_in_progress(side.other()) {
            // Glare (§14.2): both sides re-INVITE at once. Each gets 491 and
            // retries after its own random wait (§14.1).
            self.reply(now, id, &request, 491, &[]);
        } else {
            call.pending.push_back(Pending::Request {
                from: side,
                server: id,
                request,
            });
            self.run_pending(now, &mut call);
        }
        self.put_back(now, call);
    }

    /// Relays an in-dialog request from `from` onto the other leg.
    fn relay_request(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        server: ServerId,
        request: Message,
    ) -> Result<(), ()> {
        let body = match self.maybe_anchor(now, call, from, &request) {
            Ok(body) => body,
            Err(AnchorFail::Wait) => return Err(()),
            Err(AnchorFail::Status(status)) => {
                self.reply(now, server, &request, status, &[]);
                return Ok(());
            }
        };
        let method =
            String::from_utf8_lossy(request.method_bytes().unwrap_or(b"INFO")).into_owned();
        let to = from.other();
        let rack = request
            .header(HeaderName::RAck)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let rack = rack.map(|rack| renumber_rack(&rack, call, to));
        let Some(leg) = leg_mut(call, to) else {
            return Ok(());
        };
        leg.local_cseq += 1;
        let refreshes = matches!(
            request.method(),
            Some(
                Method::Invite
                    | Method::Update
                    | Method::Subscribe
                    | Method::Notify
                    | Method::Refer
            )
        );
        let branch = self.ids.branch();
        let extra: Vec<(&str, &str)> = rack.as_deref().map(|r| ("RAck", r)).into_iter().collect();
        let bytes = leg.request(
            &method,
            &branch,
            request.max_forwards().unwrap_or(70).saturating_sub(1),
            refreshes,
            &self.policy,
            Content {
                src: Some(&request),
                extra: &extra,
                body: &body,
            },
        );
        let (listener, transport, peer, connection, realm) = (
            leg.listener,
            leg.transport,
            leg.peer,
            leg.connection,
            leg.realm,
        );
        let Ok(out) = Message::parse(&bytes) else {
            return Ok(());
        };
        self.sip_event(realm, &out);
        match self.start_client(now, out, listener, transport, peer, connection) {
            Some(client) => {
                self.clients
                    .insert(client, (call.id, to, ClientRole::Relay(server)));
                call.relayed.insert(server, request);
            }
            None => self.reply(now, server, &request, 503, &[]),
        }
        Ok(())
    }

    /// Relays the ACK for a 2xx from `from` to the other leg (with the
    /// answer of a late offer anchored).
    fn relay_ack(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        ack: Message,
    ) -> Result<(), ()> {
        let body = match self.maybe_anchor(now, call, from, &ack) {
            Ok(body) => body,
            Err(AnchorFail::Wait) => return Err(()),
            Err(AnchorFail::Status(_)) => Vec::new(),
        };
        let to = from.other();
        let Some(leg) = leg_ref(call, to) else {
            return Ok(());
        };
        let branch = self.ids.branch();
        let bytes = leg.request(
            "ACK",
            &branch,
            70,
            false,
            &self.policy,
            Content {
                src: Some(&ack),
                extra: &[],
                body: &body,
            },
        );
        let (listener, transport, peer, connection, realm) = (
            leg.listener,
            leg.transport,
            leg.peer,
            leg.connection,
            leg.realm,
        );
        if let Ok(msg) = Message::parse(&bytes) {
            self.sip_event(realm, &msg);
        }
        if to == Side::B {
            call.b_ack = Some(bytes.clone());
        }
        self.send_direct(listener, transport, peer, connection, bytes);
        Ok(())
    }

    // ---- responses -----------------------------------------------------------

    fn on_tx_event(&mut self, now: Instant, event: transaction::Event) {
        match event {
            transaction::Event::Response { id, response } => {
                if let Some(&trunk) = self.pings.get(&id) {
                    if response.status().is_some_and(|s| s >= 200) {
                        self.pings.remove(&id);
                        self.trunk_health(trunk, true);
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
                            call.byes = call.byes.saturating_sub(1);
                        }
                    }
                }
                self.put_back(now, call);
            }
            transaction::Event::Timeout { id } | transaction::Event::TransportError { id } => {
                let TransactionId::Client(client) = id else {
                    return;
                };
                if let Some(trunk) = self.pings.remove(&client) {
                    return self.trunk_health(trunk, false);
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
                    ClientRole::Bye => call.byes = call.byes.saturating_sub(1),
                    ClientRole::Cancel | ClientRole::Courtesy => {}
                }
                self.put_back(now, call);
            }
            transaction::Event::Terminated { id } => {
                self.routes_of.remove(&id);
                match id {
                    TransactionId::Client(client) => {
                        let role = self.clients.remove(&client);
                        self.pings.remove(&client);
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

    fn on_b_invite_response(&mut self, now: Instant, call: &mut Call, response: Message) {
        let Some(status) = response.status() else {
            return;
        };
        if let Some(b) = call.b.as_mut()
            && let Some(tag) = response.to().and_then(|t| t.tag().map(str::to_owned))
            && status > 100
            && !b.remote_tag_known
        {
            let remote = format!("{};tag={tag}", b.text.get(Part::Remote));
            b.text.set(Part::Remote, &remote);
            b.remote_tag_known = true;
        }
        if status < 200 {
            if status > 100 {
                call.b_provisional = true;
                self.learn_remote_target(call, Side::B, &response);
                if call.cancel_b {
                    return self.cancel_b(now, call);
                }
                self.report_setup(now, call);
                let server = call.a_server;
                call.pending.push_back(Pending::Response {
                    from: Side::B,
                    server,
                    response,
                });
                self.run_pending(now, call);
            } else if call.cancel_b {
                call.b_provisional = true;
                self.cancel_b(now, call);
            }
            return;
        }
        if (200..300).contains(&status) {
            if let Some(ack) = call.b_ack.clone() {
                // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
                if let Some(b) = call.b.as_ref() {
                    self.send_direct(b.listener, b.transport, b.peer, b.connection, ack);
                }
                return;
            }
            if matches!(call.phase, Phase::Answered | Phase::Confirmed) {
                // B retransmits its 2xx until our ACK, which waits for A's:
                // the 2xx is already relayed (and retransmitted) to A.
                return;
            }
            // The INVITE transaction is settled (Accepted: further 2xx
            // still come here, and meet the two checks above).
            call.b_invite = None;
            if call.cancel_b || call.a_final || call.phase == Phase::Ending {
                // The 2xx raced our CANCEL (or the call already failed on A):
                // confirm and end B's dialog.
                self.learn_route_set(call, &response);
                self.learn_remote_target(call, Side::B, &response);
                self.ack_b_directly(call);
                call.phase = Phase::Ending;
                self.send_bye(now, call, Side::B, true);
                return;
            }
            if call.phase != Phase::Setup {
                return; // a second 2xx (forked): ignored beyond the first
            }
            self.learn_route_set(call, &response);
            self.learn_remote_target(call, Side::B, &response);
            let server = call.a_server;
            call.pending.push_back(Pending::Response {
                from: Side::B,
                server,
                response,
            });
            self.run_pending(now, call);
            return;
        }
        self.b_invite_failed(now, call, Some(status), None, Some(response));
    }

    fn b_invite_failed(
        &mut self,
        now: Instant,
        call: &mut Call,
        status: Option<u16>,
        cause: Option<FailoverCause>,
        response: Option<Message>,
    ) {
        call.b_invite = None;
        if call.a_final || call.cancel_b {
            return;
        }
        // Recursion on 3xx (`[sip] recurse_on_3xx`): the first Contact that
        // names an address takes the call, in the trunk's realm; bounded.
        if self.recurse_3xx
            && status.is_some_and(|s| (300..400).contains(&s))
            && call.redirects < MAX_REDIRECTS
            && let Some((target, peer)) = response.as_ref().and_then(redirect_target)
            && let Some(b) = call.b.as_ref()
        {
            call.redirects += 1;
            let (realm, transport) = (b.realm, b.transport);
            // The realm's listener now (a reload may have retired B's).
            let listener = self
                .realm_listener(realm, transport, peer)
                .unwrap_or(b.listener.0);
            return self.start_b_leg(now, call, realm, transport, listener, peer, target);
        }
        if !call.b_provisional
            && routing::fails_over(&call.plan, status, cause)
            && call.next_target < call.plan.targets.len()
        {
            call.a_status = status.unwrap_or(408);
            return self.try_next_target(now, call);
        }
        let status = status.unwrap_or(if cause == Some(FailoverCause::Timeout) {
            408
        } else {
            503
        });
        match response {
            Some(response) => {
                // Relay the trunk's failure with what may cross (3xx Contacts
                // name the far side and never do: `copy_headers` drops them).
                // An untrusted caller that could be enumerating users gets
                // one answer for every "no such user" (`normalize_failures`).
                let server = call.a_server;
                let normalized = call
                    .guarded
                    .filter(|_| {
                        self.protect
                            .policy(call.a.realm)
                            .is_some_and(|p| p.normalize_failures)
                    })
                    .and_then(|_| protect::normalized_failure(status));
                let (status, reason, src) = match normalized {
                    Some(status) => (status, sip::error::standard_reason(status).to_owned(), None),
                    None => (
                        status,
                        String::from_utf8_lossy(response.reason().unwrap_or_default()).into_owned(),
                        Some(&response),
                    ),
                };
                let local_tag = call.a.text.get(Part::LocalTag).to_owned();
                let bytes = build::response(
                    &call.a_invite,
                    status,
                    &reason,
                    Some(&local_tag),
                    None,
                    src,
                    &self.policy,
                    &[],
                    b"",
                );
                call.a_status = status;
                call.a_final = true;
                call.ended_by = Some(EndedBy::Callee);
                if let Ok(msg) = Message::parse(&bytes) {
                    self.sip_event(call.a.realm, &msg);
                    let _ = self.tx.send_response(now, server, msg);
                }
                if let Some(ip) = call.guarded {
                    self.finals_once(call);
                    if protect::counts_as_refusal(status, None) {
                        self.note_refusal(now, call.a.realm, ip);
                    }
                }
            }
            None => self.fail_call(now, call, status, EndedBy::Sbc(SbcReason::NoAnswer)),
        }
    }

    /// Relays a response from `from` onto `server` (a transaction of the other leg).
    fn relay_response(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        server: ServerId,
        response: Message,
    ) -> Result<(), ()> {
        let Some(status) = response.status() else {
            return Ok(());
        };
        let body = match self.maybe_anchor(now, call, from, &response) {
            Ok(body) => body,
            Err(AnchorFail::Wait) => return Err(()),
            Err(AnchorFail::Status(_)) => Vec::new(),
        };
        let to = from.other();
        let request = if server == call.a_server {
            call.a_invite.clone()
        } else {
            match call.relayed.get(&server) {
                Some(r) => r.clone(),
                None => return Ok(()),
            }
        };
        let Some(leg) = leg_ref(call, to) else {
            return Ok(());
        };
        let contact = (status > 100 && status < 300).then_some(leg.text.get(Part::Contact));
        let tag = leg.text.get(Part::LocalTag);
        let realm = leg.realm;
        let reason = String::from_utf8_lossy(response.reason().unwrap_or_default()).into_owned();
        let bytes = build::response(
            &request,
            status,
            &reason,
            Some(tag),
            contact,
            Some(&response),
            &self.policy,
            &[],
            &body,
        );
        let Ok(msg) = Message::parse(&bytes) else {
            return Ok(());
        };
        self.sip_event(realm, &msg);
        if server == call.a_server && (200..300).contains(&status) {
            call.a_status = status;
            call.a_final = true;
            call.phase = Phase::Answered;
            call.answered = Some(now);
            self.report_setup(now, call);
            let t1 = self.tx.timers().t1;
            call.a_2xx = Some((bytes, t1, now + self.tx.timers().t1x64()));
            // Leg B is up: no failover or redirect writes from the INVITE
            // again, so a held call keeps only what A's dialog still needs.
            if let Some(head) = invite_head(&call.a_invite) {
                call.a_invite = head;
            }
            call.b_to = String::new();
            self.timers.push(Reverse((now + t1, call.id)));
        } else if status >= 200 {
            call.answered_relay(server);
        }
        let _ = self.tx.send_response(now, server, msg);
        Ok(())
    }

    fn report_setup(&mut self, now: Instant, call: &mut Call) {
        if call.progressed.is_none() {
            call.progressed = Some(now);
            self.events.push_back(CoreEvent::CallSetup {
                call: call.id,
                setup: now.saturating_duration_since(call.started),
            });
        }
    }

    fn learn_remote_target(&mut self, call: &mut Call, side: Side, msg: &Message) {
        let target = msg
            .contacts()
            .next()
            .and_then(Result::ok)
            .and_then(|c| match c {
                sip::header::Contact::Addr(addr) => {
                    Some(String::from_utf8_lossy(addr.uri().as_bytes()).into_owned())
                }
                sip::header::Contact::Star => None,
            });
        if let (Some(target), Some(leg)) = (target, leg_mut(call, side)) {
            leg.text.set(Part::RemoteTarget, &target);
        }
    }

    fn learn_route_set(&mut self, call: &mut Call, response: &Message) {
        // A UAC's route set is the Record-Route of the 2xx, reversed (§12.1.2).
        let mut routes: Vec<String> = response
            .values(HeaderName::RecordRoute)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        routes.reverse();
        if let Some(b) = call.b.as_mut() {
            b.route_set = routes;
        }
    }

    fn on_stray_response(&mut self, _now: Instant, response: Message) {
        // A 2xx for B's INVITE after its transaction ended: re-ACK it.
        if !response.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(call_id) = response.call_id().map(String::from_utf8_lossy) else {
            return;
        };
        let Some(from) = response.from() else {
            return;
        };
        let Some(tag) = from.tag() else {
            return;
        };
        let Some(&(call_no, Side::B)) = self.dialogs.get(&dialog_key(&call_id, tag)) else {
            return;
        };
        let Some(call) = self.calls.get(&call_no) else {
            return;
        };
        if let (Some(ack), Some(b)) = (call.b_ack.clone(), call.b.as_ref()) {
            let (listener, transport, peer, connection) =
                (b.listener, b.transport, b.peer, b.connection);
            self.send_direct(listener, transport, peer, connection, ack);
        }
    }

    /// ACKs B's 2xx without anything from A (a 2xx that raced a CANCEL).
    fn ack_b_directly(&mut self, call: &mut Call) {
        let Some(b) = call.b.as_ref() else { return };
        let branch = self.ids.branch();
        let bytes = b.request(
            "ACK",
            &branch,
            70,
            false,
            &self.policy,
            Content {
                src: None,
                extra: &[],
                body: b"",
            },
        );
        let (listener, transport, peer, connection) =
            (b.listener, b.transport, b.peer, b.connection);
        call.b_ack = Some(bytes.clone());
        self.send_direct(listener, transport, peer, connection, bytes);
    }

    // ---- teardown --------------------------------------------------------------

    /// Drops what waited for media allocation; requests among it are
    /// answered 487, so their transactions end.
    fn abandon_pending(&mut self, now: Instant, call: &mut Call) {
        for pending in std::mem::take(&mut call.pending) {
            if let Pending::Request {
                server, request, ..
            } = pending
            {
                self.reply(now, server, &request, 487, &[]);
                self.servers.remove(&server);
            }
        }
    }

    /// Answers A's INVITE with a failure (if it has no final yet) and ends the call.
    fn fail_call(&mut self, now: Instant, call: &mut Call, status: u16, by: EndedBy) {
        if !call.a_final {
            self.respond_a(now, call, status, None);
        }
        call.ended_by.get_or_insert(by);
        self.abandon_pending(now, call);
        if call.b_invite.is_some() {
            call.cancel_b = true;
            self.cancel_b(now, call);
        }
    }

    fn respond_a(&mut self, now: Instant, call: &mut Call, status: u16, reason: Option<&str>) {
        let retry = self.retry_after.to_string();
        let extra: Vec<(&str, &str)> = if status == 503 {
            vec![("Retry-After", retry.as_str())]
        } else {
            Vec::new()
        };
        let reason = reason.unwrap_or(sip::error::standard_reason(status));
        let bytes = build::response(
            &call.a_invite,
            status,
            reason,
            Some(call.a.text.get(Part::LocalTag)),
            None,
            None,
            &self.policy,
            &extra,
            b"",
        );
        call.a_status = status;
        call.a_final = true;
        if let Ok(msg) = Message::parse(&bytes) {
            self.sip_event(call.a.realm, &msg);
            let _ = self.tx.send_response(now, call.a_server, msg);
        }
        self.finals_once(call);
    }

    /// An untrusted caller's INVITE got a failure: sent once, not
    /// retransmitted until an ACK that a spoofed source never sends (the
    /// reflection RFC 3261's timer G would otherwise make of it). A caller
    /// that lost it retransmits its INVITE and is answered again.
    fn finals_once(&mut self, call: &Call) {
        if call.guarded.is_some() && !call.a.transport.is_reliable() {
            self.answered_once.push(call.a_server);
        }
    }

    /// Ends an established (or establishing) call from the SBC's side.
    fn teardown(&mut self, now: Instant, call: &mut Call, by: EndedBy) {
        call.ended_by.get_or_insert(by);
        match call.phase {
            Phase::Setup => self.fail_call(now, call, 503, by),
            Phase::Answered | Phase::Confirmed => {
                call.phase = Phase::Ending;
                call.a_2xx = None;
                // A caller that never ACKed our 2xx gets its BYE (§13.3.1.4),
                // but the call does not wait another 64*T1 for an answer
                // from a peer that has shown it does not answer.
                let awaited = by != EndedBy::Sbc(SbcReason::NoAck);
                self.send_bye(now, call, Side::A, awaited);
                self.send_bye(now, call, Side::B, true);
                self.release_media(call);
            }
            Phase::Ending => {}
        }
    }

    /// Sends a BYE on `side`; the call waits for its answer when `awaited`.
    fn send_bye(&mut self, now: Instant, call: &mut Call, side: Side, awaited: bool) {
        let Some(leg) = leg_mut(call, side) else {
            return;
        };
        if side == Side::B && !leg.remote_tag_known {
            return;
        }
        leg.local_cseq += 1;
        let branch = self.ids.branch();
        let bytes = leg.request(
            "BYE",
            &branch,
            70,
            false,
            &self.policy,
            Content {
                src: None,
                extra: &[],
                body: b"",
            },
        );
        let (listener, transport, peer, connection, realm) = (
            leg.listener,
            leg.transport,
            leg.peer,
            leg.connection,
            leg.realm,
        );
        let Ok(msg) = Message::parse(&bytes) else {
            return;
        };
        self.sip_event(realm, &msg);
        if let Some(client) = self.start_client(now, msg, listener, transport, peer, connection) {
            let role = if awaited {
                call.byes += 1;
                ClientRole::Bye
            } else {
                ClientRole::Courtesy
            };
            self.clients.insert(client, (call.id, side, role));
        }
    }

    fn release_media(&mut self, call: &mut Call) {
        for (stream, _) in call.streams.iter().flatten() {
            self.media_out
                .push_back(MediaCommand::Release { stream: *stream });
            call.released.push(*stream);
        }
        call.streams.clear();
    }

    /// Whether nothing of the call is left in flight: A has its final
    /// response and B's INVITE is settled (setup), or every BYE is answered.
    fn finished(call: &Call) -> bool {
        match call.phase {
            Phase::Setup => call.a_final && call.b_invite.is_none(),
            Phase::Ending => call.byes == 0 && call.b_invite.is_none(),
            Phase::Answered | Phase::Confirmed => false,
        }
    }

    fn call_timer(&mut self, now: Instant, call: &mut Call) {
        // 2xx retransmission to A until its ACK (§13.3.1.4).
        if let Some((bytes, interval, give_up)) = call.a_2xx.clone() {
            if now >= give_up {
                call.a_2xx = None;
                self.teardown(now, call, EndedBy::Sbc(SbcReason::NoAck));
                return;
            }
            if let Ok(msg) = Message::parse(&bytes) {
                let _ = self.tx.send_response(now, call.a_server, msg);
            }
            let next = (interval * 2).min(self.tx.timers().t2);
            call.a_2xx = Some((bytes, next, give_up));
            self.timers.push(Reverse((now + next, call.id)));
            return;
        }
        // 64*T1 after our CANCEL: give up on B's INVITE (§9.1).
        if call.cancel_b
            && let Some(client) = call.b_invite.take()
        {
            let _ = self.tx.terminate(client);
        }
    }

    /// Puts a call back in the table, or reports and forgets it if it ended.
    fn put_back(&mut self, now: Instant, mut call: Box<Call>) {
        let finished = Self::finished(&call);
        self.settle_call(&mut call, finished);
        if !finished {
            self.calls.insert(call.id, call);
            return;
        }
        self.release_media(&mut call);
        if let Some(trunk) = call.trunk.take() {
            self.trunks[trunk].release();
        }
        // Only this call's own keys: ending a call must not cost a scan of
        // every call up.
        self.dialogs.remove(&call.a.dialog_key());
        if let Some(b) = &call.b {
            self.dialogs.remove(&b.dialog_key());
        }
        self.servers.remove(&call.a_server);
        // RFC 3261 §15.1.2: requests still pending in a dialog that ended
        // get 487; without an answer their transactions would never end.
        self.abandon_pending(now, &mut call);
        for (server, request) in std::mem::take(&mut call.relayed) {
            self.reply(now, server, &request, 487, &[]);
            self.servers.remove(&server);
        }
        self.events
            .push_back(CoreEvent::CallEnded(Box::new(CallSummary {
                call: call.id,
                from_realm: self.realms[call.a.realm].name.clone(),
                from_trunk: call.source_trunk.map(|t| self.trunks[t].name.clone()),
                route: Some(call.plan.route.clone()),
                trunks_tried: call.trunks_tried.clone(),
                call_ids: (
                    call.a.text.get(Part::CallId).to_owned(),
                    call.b.as_ref().map(|b| b.text.get(Part::CallId).to_owned()),
                ),
                invite: call.a_invite.clone(),
                to_realm: call.b.as_ref().map(|b| self.realms[b.realm].name.clone()),
                streams: std::mem::take(&mut call.released),
                started: call.started,
                progressed: call.progressed,
                answered: call
                    .answered
                    .filter(|_| (200..300).contains(&call.a_status)),
                ended: now,
                status: call.a_status,
                ended_by: call.ended_by.unwrap_or(EndedBy::Sbc(SbcReason::Internal)),
            })));
    }

    // ---- media -------------------------------------------------------------------

    fn run_pending(&mut self, now: Instant, call: &mut Call) {
        while let Some(next) = call.pending.pop_front() {
            let waiting = match next {
                Pending::Invite => self
                    .send_b_invite(now, call)
                    .err()
                    .map(|()| Pending::Invite),
                Pending::Response {
                    from,
                    server,
                    response,
                } => {
                    let keep = response.clone();
                    self.relay_response(now, call, from, server, response)
                        .err()
                        .map(|()| Pending::Response {
                            from,
                            server,
                            response: keep,
                        })
                }
                Pending::Request {
                    from,
                    server,
                    request,
                } => {
                    let keep = request.clone();
                    self.relay_request(now, call, from, server, request)
                        .err()
                        .map(|()| Pending::Request {
                            from,
                            server,
                            request: keep,
                        })
                }
                Pending::Ack { from, ack } => {
                    let keep = ack.clone();
                    self.relay_ack(now, call, from, ack)
                        .err()
                        .map(|()| Pending::Ack { from, ack: keep })
                }
            };
            if let Some(waiting) = waiting {
                call.pending.push_front(waiting);
                return;
            }
        }
        // Most calls queue a message only while media is allocated: don't
        // keep the room for them for the rest of the call.
        call.pending.shrink_to_fit();
    }

    /// The body of `msg` as the other leg gets it: anchored SDP, or as is.
    fn maybe_anchor(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        msg: &Message,
    ) -> Result<Vec<u8>, AnchorFail> {
        let body = msg.body();
        let is_sdp = msg
            .content_type()
            .is_some_and(|ct| ct.is("application", "sdp"));
        if body.is_empty() || !is_sdp {
            return Ok(body.to_vec());
        }
        let source = leg_ref(call, from).map_or(call.a.peer.ip(), |l| l.peer.ip());
        let body = body.to_vec();
        match self.anchor(now, call, from, &body, source) {
            Anchored::Ready(out) => Ok(out),
            Anchored::Wait => Err(AnchorFail::Wait),
            Anchored::Invalid(status) => Err(AnchorFail::Status(status)),
        }
    }

    /// Anchors an SDP from `from`: allocates streams it adds, tells the media
    /// layer where `from` wants media, and rewrites it for the other leg.
    fn anchor(
        &mut self,
        _now: Instant,
        call: &mut Call,
        from: Side,
        body: &[u8],
        source: IpAddr,
    ) -> Anchored {
        let sdp = match Sdp::parse(body) {
            Ok(sdp) => sdp,
            Err(e) => return Anchored::Invalid(e.status_code()),
        };
        let offers = anchor::streams(&sdp, source);
        let Some(b_realm) = call.b.as_ref().map(|b| b.realm) else {
            return Anchored::Invalid(500);
        };
        if call.media_realm_b.is_some_and(|r| r != b_realm) {
            // Failover to a trunk on another realm: anchor afresh there.
            self.release_media(call);
        }
        call.media_realm_b = Some(b_realm);
        if call.streams.len() < offers.len() {
            // Exactly: a call keeps these as long as it is up.
            call.streams
                .reserve_exact(offers.len() - call.streams.len());
            call.streams.resize(offers.len(), None);
        }
        let mut waiting = false;
        for (index, offer) in offers.iter().enumerate() {
            if offer.disabled {
                continue;
            }
            match &call.streams[index] {
                Some((_, None)) => waiting = true,
                Some((_, Some(_))) => {}
                None => {
                    let stream = StreamId(self.next_stream);
                    self.next_stream += 1;
                    self.streams.insert(stream, call.id);
                    call.streams[index] = Some((stream, None));
                    // A leg facing an asymmetric-RTP trunk never latches.
                    let asymmetric = |trunk: Option<usize>| {
                        trunk.is_some_and(|t| self.trunks.get(t).is_some_and(|t| t.asymmetric_rtp))
                    };
                    let spec = |realm: usize, trunk: Option<usize>| LegSpec {
                        local_ip: self.realms[realm].media_address,
                        rtcp: RtcpMode::Pair,
                        latch: if asymmetric(trunk) {
                            LatchPolicy::Asymmetric
                        } else {
                            self.latch
                        },
                        // Media counts under the realm index (stable across
                        // reloads); `realm_media` names it for metrics.
                        realm: crate::media::command::RealmTag::from_index(realm),
                    };
                    self.media_out.push_back(MediaCommand::Allocate {
                        stream,
                        legs: [
                            spec(call.a.realm, call.source_trunk),
                            spec(b_realm, call.trunk),
                        ],
                    });
                    waiting = true;
                }
            }
        }
        if waiting {
            return Anchored::Wait;
        }
        let to = from.other();
        let mut endpoints = Vec::with_capacity(offers.len());
        for (index, offer) in offers.iter().enumerate() {
            let slot = call.streams.get(index).copied().flatten();
            match (offer.disabled, slot) {
                (false, Some((stream, Some(legs)))) => {
                    self.media_out.push_back(MediaCommand::SetRemote {
                        stream,
                        leg: from.media(),
                        remote: offer.remote,
                    });
                    self.media_out.push_back(MediaCommand::SetDirection {
                        stream,
                        leg: from.media(),
                        direction: offer.direction,
                    });
                    endpoints.push(Some(legs[to.media().index()]));
                }
                _ => endpoints.push(None),
            }
        }
        // SDP shows the realm's advertised address (1:1 NAT), else the
        // address the streams were anchored on, which a reload that moved
        // the realm's media address does not change for this call.
        let realm = match to {
            Side::A => call.a.realm,
            Side::B => b_realm,
        };
        let anchored = endpoints.iter().flatten().map(|e| e.rtp.ip()).next();
        let media_ip = self.realms[realm]
            .media_advertise
            .or(anchored)
            .unwrap_or(self.realms[realm].media_address);
        match anchor::rewrite(&sdp, media_ip, &endpoints) {
            Ok(out) => Anchored::Ready(out),
            Err(e) => Anchored::Invalid(e.status_code()),
        }
    }

    // ---- output ------------------------------------------------------------------

    /// Moves transaction output into the core's queues and reacts to
    /// transaction events until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.tx.poll_transmit() {
                progressed = true;
                if let Some(&(listener, transport, connection)) = self.routes_of.get(&t.id) {
                    self.out.push_back(Outbound {
                        transport,
                        from_listener: listener,
                        to: t.remote,
                        connection,
                        bytes: t.bytes,
                    });
                }
            }
            // Their answer is out: end them (the transaction's route goes
            // with its Terminated event).
            for id in std::mem::take(&mut self.answered_once) {
                progressed |= self.tx.terminate(id).is_ok();
            }
            while let Some(event) = self.tx.poll_event() {
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
            .send_request(now, request, peer, transport == Transport::Tcp)
            .ok()?;
        self.routes_of.insert(
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

    fn sip_event(&mut self, realm: usize, msg: &Message) {
        self.events.push_back(CoreEvent::Sip {
            realm: self.realms[realm].name.clone(),
            inbound: false,
            method: msg.method(),
            status: msg.status(),
        });
    }
}

enum Anchored {
    Ready(Vec<u8>),
    Wait,
    Invalid(u16),
}

enum AnchorFail {
    Wait,
    Status(u16),
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

/// How many 3xx redirects one call may follow (loops end here).
const MAX_REDIRECTS: u8 = 3;

/// The first `sip:`/`sips:` Contact of a 3xx whose host is an IP address,
/// as a Request-URI and where to send it (port 5060 when none is given).
fn redirect_target(response: &Message) -> Option<(String, SocketAddr)> {
    response
        .contacts()
        .filter_map(Result::ok)
        .find_map(|contact| {
            let sip::header::Contact::Addr(addr) = contact else {
                return None;
            };
            let uri = addr.uri();
            if !matches!(uri.scheme(), sip::uri::Scheme::Sip | sip::uri::Scheme::Sips) {
                return None;
            }
            let ip = uri.host()?.ip()?;
            let peer = SocketAddr::new(ip, uri.port().unwrap_or(5060));
            Some((String::from_utf8_lossy(uri.as_bytes()).into_owned(), peer))
        })
}

/// The head of A's INVITE, all of it a call needs once A has its 2xx: the
/// Request-URI, Via, From, To, Call-ID and CSeq, which a response to it
/// echoes ([`build::response`]), `RAck` renumbering reads and the CDR names
/// ([`CallSummary::invite`]). No body and no other header: leg B's INVITE
/// (the one thing written from those) is sent. `None` if it does not parse.
fn invite_head(invite: &Message) -> Option<Message> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(invite.method_bytes()?);
    head.push(b' ');
    head.extend_from_slice(invite.request_uri_bytes()?);
    head.extend_from_slice(b" SIP/2.0\r\n");
    for h in invite.headers() {
        if sip::response::copied_to_responses(h.name) {
            head.extend_from_slice(h.name_bytes);
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value);
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let parsed = Message::parse(&head).ok()?;
    // A clone allocates its buffers at their length: the parser's header
    // table starts with room for 16 headers, the head has about 6.
    Some(parsed.clone())
}

/// What a request on a leg carries besides the leg's own dialog state.
struct Content<'a> {
    /// The message being relayed, whose other headers may cross.
    src: Option<&'a Message>,
    /// Headers of the SBC's own (e.g. a renumbered RAck).
    extra: &'a [(&'a str, &'a str)],
    /// The body, already anchored.
    body: &'a [u8],
}

impl LegState {
    /// This leg's key in [`Core::dialogs`].
    fn dialog_key(&self) -> Box<str> {
        dialog_key(self.text.get(Part::CallId), self.text.get(Part::LocalTag))
    }

    /// A request in this leg's dialog (its initial INVITE included), written
    /// from the leg's own state only: Request-URI (the peer's target), Via,
    /// From, To, Call-ID, CSeq (the leg's current number), route set and,
    /// for target refreshes, Contact.
    fn request(
        &self,
        method: &str,
        branch: &str,
        max_forwards: u8,
        with_contact: bool,
        policy: &HeaderPolicy,
        content: Content<'_>,
    ) -> Vec<u8> {
        build::request(
            &build::RequestHead {
                method,
                request_uri: self.text.get(Part::RemoteTarget),
                via_sent_by: self.text.get(Part::SentBy),
                branch,
                max_forwards,
                from: self.text.get(Part::Local),
                to: self.text.get(Part::Remote),
                call_id: self.text.get(Part::CallId),
                cseq: self.local_cseq,
                route_set: &self.route_set,
                contact: with_contact.then_some(self.text.get(Part::Contact)),
            },
            content.src,
            policy,
            content.extra,
            content.body,
        )
    }
}

/// A dialog's key (Call-ID and our tag) as one string, so each costs one
/// allocation: the tag's length first keeps the pair unambiguous.
fn dialog_key(call_id: &str, tag: &str) -> Box<str> {
    format!("{}:{tag}{call_id}", tag.len()).into_boxed_str()
}

impl Call {
    /// Forgets the request of a relayed server transaction that has its
    /// final response; returns it.
    /// Whether a re-INVITE from `side` is waiting for its final response
    /// (relayed, or queued behind media allocation). Relayed requests are
    /// told apart by their Call-ID: each leg has its own.
    fn invite_in_progress(&self, side: Side) -> bool {
        let a_call_id = self.a.text.get(Part::CallId).as_bytes();
        let relayed = self.relayed.values().any(|r| {
            r.method() == Some(Method::Invite)
                && (r.call_id() == Some(a_call_id)) == (side == Side::A)
        });
        relayed
            || self.pending.iter().any(|p| {
                matches!(p, Pending::Request { from, request, .. }
                    if *from == side && request.method() == Some(Method::Invite))
            })
    }

    fn answered_relay(&mut self, server: ServerId) -> Option<Message> {
        let request = self.relayed.remove(&server);
        if self.relayed.is_empty() {
            // A session refresh every few minutes must not leave a table
            // behind for the rest of the call.
            self.relayed.shrink_to_fit();
        }
        request
    }
}

fn leg_ref(call: &Call, side: Side) -> Option<&LegState> {
    match side {
        Side::A => Some(&call.a),
        Side::B => call.b.as_ref(),
    }
}

fn leg_mut(call: &mut Call, side: Side) -> Option<&mut LegState> {
    match side {
        Side::A => Some(&mut call.a),
        Side::B => call.b.as_mut(),
    }
}

fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

fn sent_by(transport: Transport, addr: SocketAddr) -> String {
    let name = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    format!("SIP/2.0/{name} {}", host_port(addr))
}

fn contact_uri(transport: Transport, addr: SocketAddr) -> String {
    match transport {
        Transport::Udp => format!("<sip:sbc@{}>", host_port(addr)),
        Transport::Tcp => format!("<sip:sbc@{};transport=tcp>", host_port(addr)),
    }
}

/// `RAck: rseq cseq method` names the INVITE's CSeq on the leg it came
/// from; on the other leg the INVITE had that leg's CSeq (RFC 3262 §7.2).
fn renumber_rack(rack: &str, call: &Call, to: Side) -> String {
    let mut parts = rack.split_whitespace();
    let (Some(rseq), Some(_), Some(method)) = (parts.next(), parts.next(), parts.next()) else {
        return rack.to_owned();
    };
    // Reliable provisionals answer the initial INVITE: CSeq 1 on leg B
    // (every B leg starts there), as received on leg A.
    let cseq = match to {
        Side::B => 1,
        Side::A => call.a_invite.cseq().map_or(1, |c| c.seq),
    };
    format!("{rseq} {cseq} {method}")
}

/// One call as `/calls` lists it.
#[derive(serde::Serialize)]
struct CallView<'a> {
    id: u64,
    phase: &'static str,
    age_secs: u64,
    route: &'a str,
    trunk: Option<&'a str>,
    a: LegView<'a>,
    b: Option<LegView<'a>>,
    streams: Vec<u64>,
}

/// One leg of a call as `/calls` lists it (the peer's address is internal:
/// shown only on the admin listener).
#[derive(serde::Serialize)]
struct LegView<'a> {
    realm: Option<&'a str>,
    transport: &'static str,
    peer: SocketAddr,
    call_id: &'a str,
}
