//! The flow table: every anchored stream's state and the per-packet decision.
//!
//! Owns: the streams the call core allocated (their ports, remotes,
//! directions, latches, counters and activity), the application of
//! [`MediaCommand`]s, the decision for each received packet
//! ([`FlowTable::on_packet`]), media-inactivity timeouts, and the queue of
//! [`MediaEvent`]s for the core.
//!
//! May not: do IO or read a clock. It is shared by every backend: the
//! userspace relay asks it about every packet; the XDP backend asks it about
//! the packets the kernel passes up and installs [`FlowTable::route`] into its
//! maps once a flow latches.
//!
//! Drain order: after every `handle_command`, `on_packet` or `handle_timeout`,
//! drain [`FlowTable::poll_event`] until `None`, then
//! [`FlowTable::poll_changed`] until `None` (with or without a fast path: it
//! is bounded only when drained), and re-arm the timer from
//! [`FlowTable::poll_timeout`].
//!
//! Socket work: `handle_command` returns [`SocketWork`]: a backend binds the
//! endpoints of a new stream and then calls [`FlowTable::confirm_allocation`]
//! (which reports [`MediaEvent::Allocated`]) or
//! [`FlowTable::abort_allocation`]; it closes the endpoints of a released one.
//!
//! Fast path: [`FlowTable::poll_changed`] names streams whose installable
//! flows ([`FlowTable::fast_flows`]) changed; a fast path (XDP maps) replaces
//! what it holds for them, and reports what it relayed itself through
//! [`FlowTable::add_fast_counts`] so counters and inactivity stay right.
//!
//! Forwarding rules (per packet received on leg X, relayed out of leg Y):
//! * not RTP/RTCP version 2 → dropped (malformed);
//! * the source fails X's [`Latch`] → dropped (source); see [`super::latch`];
//! * RTP while X does not send or Y does not receive (hold, RFC 3264 §5.1,
//!   §8.4) → dropped (direction); RTCP still flows;
//! * Y has no remote yet, or one the relay must not send to (unspecified,
//!   as in the RFC 2543 hold `c=0.0.0.0`; multicast or broadcast; port 0;
//!   loopback from a non-loopback media address) → dropped (send);
//! * else relayed from Y's socket (RTP port, or the RTCP port for RTCP when Y
//!   is not muxed) to Y's latched source or signaled address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use ipnet::IpNet;

use super::command::{
    Component, Direction, LatchPolicy, Leg, LegCounters, LegSpec, LocalEndpoint, MediaCommand,
    MediaError, MediaEvent, RealmTag, Remote, RtcpMode, StreamId, TimeoutReason,
};
use super::latch::{Latch, PacketKind, Verdict, classify};
use super::ports::{Lease, PortAllocator};

/// Timing of the flow rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// How long after each offer/answer a leg's source may be learned.
    pub learning_window: Duration,
    /// A stream with media expected and no packet accepted for this long
    /// times out.
    pub inactivity_timeout: Duration,
    /// A stream on hold (no RTP direction open) with no packet, not even
    /// RTCP, for this long times out.
    pub hold_timeout: Duration,
    /// A latched source must be silent this long before another source with
    /// its SSRC may take over (NAT rebinding; see [`super::latch`]).
    pub relatch_quiet: Duration,
}

impl Default for FlowConfig {
    fn default() -> FlowConfig {
        FlowConfig {
            learning_window: Duration::from_secs(10),
            inactivity_timeout: Duration::from_secs(60),
            hold_timeout: Duration::from_secs(2 * 3600),
            relatch_quiet: Duration::from_millis(500),
        }
    }
}

/// What a backend must do with sockets after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketWork {
    /// Nothing.
    None,
    /// Bind these endpoints (leg A, leg B), then confirm or abort.
    Bind {
        /// The new stream.
        stream: StreamId,
        /// Its endpoints.
        legs: [LocalEndpoint; 2],
    },
    /// Close these endpoints (leg A, leg B): the stream is released.
    Close {
        /// The released stream.
        stream: StreamId,
        /// Its endpoints.
        legs: [LocalEndpoint; 2],
    },
}

/// Where one flow of a leg is relayed to: out of `from` (the SBC's socket on
/// the other leg) to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The leg the packet leaves on.
    pub leg: Leg,
    /// Which of that leg's sockets sends it.
    pub component: Component,
    /// The SBC's local address of that socket.
    pub from: SocketAddr,
    /// The peer's address.
    pub to: SocketAddr,
}

/// A flow a fast path may forward without userspace: packets of `kind`
/// arriving at `local` (the SBC's anchored address on `leg`) from `source`
/// leave along `route`, unchanged but for the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastFlow {
    /// The stream.
    pub stream: StreamId,
    /// The leg the packets arrive on.
    pub leg: Leg,
    /// That leg's [`RealmTag`]: the totals its packets count under.
    pub realm: RealmTag,
    /// The anchored address they arrive at.
    pub local: SocketAddr,
    /// The latched peer they come from (the only source allowed).
    pub source: SocketAddr,
    /// RTP or RTCP (a muxed port lists both; RFC 5761 §4 tells them apart).
    pub kind: PacketKind,
    /// Where they go.
    pub route: Route,
}

/// Packets a fast path relayed for one inbound leg of a stream since it last
/// reported (deltas, not totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastCounts {
    /// The stream.
    pub stream: StreamId,
    /// The leg the packets arrived on.
    pub leg: Leg,
    /// That leg's [`RealmTag`], as its [`FastFlow`] said (so counts that
    /// arrive after the stream is released are still attributed).
    pub realm: RealmTag,
    /// Packets relayed.
    pub packets: u64,
    /// Bytes relayed.
    pub bytes: u64,
}

/// The decision for one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Send the packet unchanged along this route.
    To(Route),
    /// Drop it (already counted in its stream's counters), and why: the
    /// relay tallies causes per turn so metrics see drops as they happen,
    /// not when the stream is released.
    Drop(DropCause),
}

/// Why a packet was dropped (the discriminants index per-cause tallies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// For a stream the table does not have (released, or never was).
    UnknownFlow = 0,
    /// Too short, or not RTP/RTCP version 2.
    Malformed = 1,
    /// Not from the leg's peer (or the leg has no remote yet).
    Source = 2,
    /// RTP the stream's directions forbid (hold).
    Direction = 3,
    /// The other leg has no address to send to.
    Send = 4,
    /// A STUN message (RFC 8489): an endpoint doing ICE towards the SBC,
    /// which anchors media itself and strips ICE from the SDP.
    Stun = 5,
}

#[derive(Debug)]
struct LegState {
    spec: LegSpec,
    lease: Lease,
    local: LocalEndpoint,
    remote: Option<Remote>,
    direction: Direction,
    rtp: Latch,
    rtcp: Latch,
    counters: LegCounters,
}

impl LegState {
    fn muxed(&self) -> bool {
        self.spec.rtcp == RtcpMode::Mux || self.remote.is_some_and(|r| r.rtcp_mux)
    }
}

#[derive(Debug)]
struct Stream {
    legs: [LegState; 2],
    /// Set once both legs have a remote: media is expected from then on.
    armed: bool,
    last_activity: Instant,
    timed_out: bool,
    /// Queued in `changed` (its fast flows must be pushed again).
    dirty: bool,
}

impl Stream {
    fn on_hold(&self) -> bool {
        let [a, b] = &self.legs;
        let a_to_b = a.direction.sends() && b.direction.receives();
        let b_to_a = b.direction.sends() && a.direction.receives();
        !a_to_b && !b_to_a
    }
}

/// Every anchored stream of one media backend.
#[derive(Debug)]
pub struct FlowTable {
    config: FlowConfig,
    ports: PortAllocator,
    /// Boxed: a `Stream` is over 1 KB and the map keeps up to twice as many
    /// slots as entries, so inline entries would cost ~2 KB per stream.
    streams: HashMap<StreamId, Box<Stream>>,
    events: VecDeque<MediaEvent>,
    next_check: Option<Instant>,
    /// Streams whose [`FastFlow`]s may have changed, each queued once.
    changed: VecDeque<StreamId>,
    /// Per realm tag: the networks a [`LatchPolicy::RealmNetworks`] leg may
    /// also learn its source from.
    realm_networks: Vec<Arc<[IpNet]>>,
}

impl FlowTable {
    /// An empty table allocating from `ports`.
    pub fn new(config: FlowConfig, ports: PortAllocator) -> FlowTable {
        FlowTable {
            config,
            ports,
            streams: HashMap::new(),
            events: VecDeque::new(),
            next_check: None,
            changed: VecDeque::new(),
            realm_networks: Vec::new(),
        }
    }

    /// The networks of each realm tag (by index), for legs that latch
    /// under [`LatchPolicy::RealmNetworks`]; applies to streams allocated
    /// from now on.
    pub fn set_realm_networks(&mut self, networks: Vec<Vec<IpNet>>) {
        self.realm_networks = networks.into_iter().map(Arc::from).collect();
    }

    /// Number of streams allocated (confirmed or not).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// No stream is allocated.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The port allocator (for usage metrics).
    pub fn ports(&self) -> &PortAllocator {
        &self.ports
    }

    /// Free the ports whose quarantine ended at or before `now`, so
    /// [`ports`](Self::ports) reports them free without waiting for the next
    /// allocation. A backend that exports free ports calls this at
    /// `ports().next_expiry()`.
    pub fn expire_ports(&mut self, now: Instant) {
        self.ports.expire(now);
    }

    /// Keeps the local port `addr` from being handed out (a flow a previous
    /// process left in the kernel uses it); whether it was in a pool and
    /// free. [`unreserve_port`](Self::unreserve_port) gives it back.
    pub fn reserve_port(&mut self, addr: std::net::SocketAddr) -> bool {
        self.ports.reserve(addr.ip(), addr.port())
    }

    /// Gives back a port [`reserve_port`](Self::reserve_port) took, through
    /// the quarantine like any released port.
    pub fn unreserve_port(&mut self, now: Instant, addr: std::net::SocketAddr) {
        self.ports
            .release(now, addr.ip(), Lease::Mux { port: addr.port() });
    }

    /// Adds a port pool for a new media address (see
    /// [`PortAllocator::add_pool`]).
    pub fn add_pool(&mut self, ip: std::net::IpAddr, range: super::ports::PortRange) -> bool {
        self.ports.add_pool(ip, range)
    }

    /// The [`RealmTag`]s of leg A and leg B of `stream`.
    pub fn realms(&self, stream: StreamId) -> Option<[RealmTag; 2]> {
        self.streams
            .get(&stream)
            .map(|s| [s.legs[0].spec.realm, s.legs[1].spec.realm])
    }

    /// Apply one command from the call core. Failures are reported as events.
    pub fn handle_command(&mut self, now: Instant, command: MediaCommand) -> SocketWork {
        match command {
            MediaCommand::Allocate { stream, legs } => self.bind(now, stream, legs, None),
            MediaCommand::Restore { stream, legs, at } => self.bind(now, stream, legs, Some(*at)),
            MediaCommand::SetRemote {
                stream,
                leg,
                remote,
            } => {
                let window = self.config.learning_window;
                self.update(stream, now, |s| {
                    let state = &mut s.legs[leg.index()];
                    state
                        .rtp
                        .set_remote(now, remote.rtp, remote.signaling_ip, window);
                    state
                        .rtcp
                        .set_remote(now, remote.rtcp, remote.signaling_ip, window);
                    state.remote = Some(remote);
                    // The other peer learns the SBC's address from this
                    // SDP (the caller from the answer, after ringing):
                    // its first latch may only come now.
                    let other = &mut s.legs[leg.other().index()];
                    other.rtp.reopen(now, window);
                    other.rtcp.reopen(now, window);
                    s.armed = s.legs.iter().all(|l| l.remote.is_some());
                });
                SocketWork::None
            }
            MediaCommand::SetDirection {
                stream,
                leg,
                direction,
            } => {
                self.update(stream, now, |s| s.legs[leg.index()].direction = direction);
                SocketWork::None
            }
            MediaCommand::Release { stream } => match self.streams.remove(&stream) {
                Some(s) => {
                    if !s.dirty {
                        self.changed.push_back(stream);
                    }
                    let legs = [s.legs[0].local, s.legs[1].local];
                    for leg in &s.legs {
                        self.ports.release(now, leg.spec.local_ip, leg.lease);
                    }
                    let counters = [s.legs[0].counters, s.legs[1].counters];
                    self.events
                        .push_back(MediaEvent::Released { stream, counters });
                    SocketWork::Close { stream, legs }
                }
                None => {
                    let error = MediaError::UnknownStream { stream };
                    self.events
                        .push_back(MediaEvent::CommandFailed { stream, error });
                    SocketWork::None
                }
            },
            MediaCommand::Report { stream } => {
                let event = match self.streams.get(&stream) {
                    Some(s) => MediaEvent::Counters {
                        stream,
                        counters: [s.legs[0].counters, s.legs[1].counters],
                    },
                    None => MediaEvent::CommandFailed {
                        stream,
                        error: MediaError::UnknownStream { stream },
                    },
                };
                self.events.push_back(event);
                SocketWork::None
            }
        }
    }

    /// The backend bound every endpoint of `stream`: report it allocated.
    pub fn confirm_allocation(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get(&stream) {
            let legs = [s.legs[0].local, s.legs[1].local];
            self.events
                .push_back(MediaEvent::Allocated { stream, legs });
        }
    }

    /// The backend could not bind `stream`: forget it and report `error`.
    /// Its ports go to quarantine (something else may hold them).
    pub fn abort_allocation(&mut self, now: Instant, stream: StreamId, error: MediaError) {
        if let Some(s) = self.streams.remove(&stream) {
            for leg in &s.legs {
                self.ports.release(now, leg.spec.local_ip, leg.lease);
            }
            self.events
                .push_back(MediaEvent::AllocationFailed { stream, error });
        }
    }

    /// Decide about a packet received on `stream`'s `leg`, on its `socket`
    /// component, from `source`. Counts it either way.
    pub fn on_packet(
        &mut self,
        now: Instant,
        stream: StreamId,
        leg: Leg,
        socket: Component,
        source: SocketAddr,
        packet: &[u8],
    ) -> Forward {
        let Some(s) = self.streams.get_mut(&stream) else {
            return Forward::Drop(DropCause::UnknownFlow);
        };
        let len = packet.len() as u64;
        let Some(info) = classify(packet) else {
            s.legs[leg.index()].counters.dropped_malformed += 1;
            return Forward::Drop(if is_stun(packet) {
                DropCause::Stun
            } else {
                DropCause::Malformed
            });
        };
        let inbound = &mut s.legs[leg.index()];
        let latch = match socket {
            Component::Rtp => &mut inbound.rtp,
            Component::Rtcp => &mut inbound.rtcp,
        };
        match latch.check(now, source, info.ssrc) {
            Verdict::Accept => {}
            Verdict::Latched(source) => {
                let component = socket;
                if !s.dirty {
                    s.dirty = true;
                    self.changed.push_back(stream);
                }
                self.events.push_back(MediaEvent::Latched {
                    stream,
                    leg,
                    component,
                    source,
                });
            }
            Verdict::NoRemote | Verdict::UnexpectedSource => {
                inbound.counters.dropped_source += 1;
                if latch.note_unlatched(now) {
                    self.events
                        .push_back(MediaEvent::NotLatched { stream, leg });
                }
                return Forward::Drop(DropCause::Source);
            }
        }
        inbound.counters.packets_in += 1;
        inbound.counters.bytes_in += len;
        s.last_activity = now;
        let sends = inbound.direction.sends();
        let outbound = &s.legs[leg.other().index()];
        if info.kind == PacketKind::Rtp && !(sends && outbound.direction.receives()) {
            s.legs[leg.index()].counters.dropped_direction += 1;
            return Forward::Drop(DropCause::Direction);
        }
        match route_out(outbound, leg.other(), info.kind) {
            Some(route) => {
                let counters = &mut s.legs[leg.other().index()].counters;
                counters.packets_out += 1;
                counters.bytes_out += len;
                Forward::To(route)
            }
            None => {
                s.legs[leg.other().index()].counters.dropped_send += 1;
                Forward::Drop(DropCause::Send)
            }
        }
    }

    /// Whether RTCP received on `stream`'s `leg` may be rewritten (its SDES
    /// hidden, [`super::rtcp`]): not when that leg's SDP says SRTP, whose
    /// SRTCP is encrypted and authenticated.
    pub fn rtcp_rewritable(&self, stream: StreamId, leg: Leg) -> bool {
        self.streams
            .get(&stream)
            .and_then(|s| s.legs[leg.index()].remote)
            .is_some_and(|r| !r.secure)
    }

    /// The backend could not send a packet [`on_packet`](Self::on_packet)
    /// routed out of `leg` (send buffer full, ICMP error): move it from the
    /// sent to the dropped count.
    pub fn send_failed(&mut self, stream: StreamId, leg: Leg, len: usize) {
        if let Some(s) = self.streams.get_mut(&stream) {
            let counters = &mut s.legs[leg.index()].counters;
            counters.packets_out = counters.packets_out.saturating_sub(1);
            counters.bytes_out = counters.bytes_out.saturating_sub(len as u64);
            counters.dropped_send += 1;
        }
    }

    /// Where packets of `kind` received on `from` are relayed now, if
    /// anywhere (for a backend that installs flows, e.g. XDP maps).
    pub fn route(&self, stream: StreamId, from: Leg, kind: PacketKind) -> Option<Route> {
        let s = self.streams.get(&stream)?;
        route_out(&s.legs[from.other().index()], from.other(), kind)
    }

    /// Counters of leg A and leg B of `stream`.
    pub fn counters(&self, stream: StreamId) -> Option<[LegCounters; 2]> {
        self.streams
            .get(&stream)
            .map(|s| [s.legs[0].counters, s.legs[1].counters])
    }

    /// A stream whose fast-path flows may have changed (a latch, a remote,
    /// a direction, a release) since it was last returned; push
    /// [`fast_flows`](Self::fast_flows) of it to the fast path. Each stream
    /// is queued at most once.
    pub fn poll_changed(&mut self) -> Option<StreamId> {
        let stream = self.changed.pop_front()?;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.dirty = false;
        }
        Some(stream)
    }

    /// The flows of `stream` a fast path (XDP) may forward on its own right
    /// now; empty for an unknown (released) stream. A flow is listed only
    /// when its inbound source is latched (so the fast path never learns a
    /// source, and RTPBleed defences stay here), it has a route out, and,
    /// for RTP, the directions allow it. Everything else, asymmetric legs
    /// included, stays on the slow path through [`on_packet`](Self::on_packet).
    pub fn fast_flows(&self, stream: StreamId) -> Vec<FastFlow> {
        let Some(s) = self.streams.get(&stream) else {
            return Vec::new();
        };
        let mut flows = Vec::new();
        for leg in [Leg::A, Leg::B] {
            let inbound = &s.legs[leg.index()];
            let outbound = &s.legs[leg.other().index()];
            let rtp_allowed = inbound.direction.sends() && outbound.direction.receives();
            let sockets = [
                (inbound.local.rtp, &inbound.rtp, Component::Rtp),
                (
                    inbound.local.rtcp.unwrap_or(inbound.local.rtp),
                    &inbound.rtcp,
                    Component::Rtcp,
                ),
            ];
            for (local, latch, component) in sockets {
                if component == Component::Rtcp && inbound.local.rtcp.is_none() {
                    continue;
                }
                let Some(source) = latch.latched() else {
                    continue;
                };
                let kinds: &[PacketKind] = match component {
                    Component::Rtp if inbound.muxed() => &[PacketKind::Rtp, PacketKind::Rtcp],
                    Component::Rtp => &[PacketKind::Rtp],
                    Component::Rtcp => &[PacketKind::Rtcp],
                };
                for &kind in kinds {
                    if kind == PacketKind::Rtp && !rtp_allowed {
                        continue;
                    }
                    if let Some(route) = route_out(outbound, leg.other(), kind) {
                        flows.push(FastFlow {
                            stream,
                            leg,
                            realm: inbound.spec.realm,
                            local,
                            source,
                            kind,
                            route,
                        });
                    }
                }
            }
        }
        flows
    }

    /// Count packets the fast path relayed itself: they keep the stream
    /// alive and add to its counters as if relayed here.
    pub fn add_fast_counts(&mut self, now: Instant, counts: FastCounts) {
        let Some(s) = self.streams.get_mut(&counts.stream) else {
            return;
        };
        if counts.packets == 0 {
            return;
        }
        let inbound = &mut s.legs[counts.leg.index()].counters;
        inbound.packets_in += counts.packets;
        inbound.bytes_in += counts.bytes;
        inbound.fast_packets_in += counts.packets;
        inbound.fast_bytes_in += counts.bytes;
        let outbound = &mut s.legs[counts.leg.other().index()].counters;
        outbound.packets_out += counts.packets;
        outbound.bytes_out += counts.bytes;
        s.last_activity = now;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_check
    }

    /// Check inactivity. Streams are scanned at most every quarter of the
    /// shorter timeout (and at least every second), so a timeout fires within
    /// 25% of its configured value and a scan costs O(streams) per interval,
    /// not per packet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_check.is_some_and(|at| now < at) {
            return;
        }
        for (&stream, s) in &mut self.streams {
            if !s.armed || s.timed_out {
                continue;
            }
            let (limit, reason) = if s.on_hold() {
                (self.config.hold_timeout, TimeoutReason::OnHold)
            } else {
                (self.config.inactivity_timeout, TimeoutReason::NoMedia)
            };
            if now.saturating_duration_since(s.last_activity) >= limit {
                s.timed_out = true;
                self.events
                    .push_back(MediaEvent::TimedOut { stream, reason });
            }
        }
        self.schedule(now);
    }

    /// The next event for the call core, in the order they happened.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// Allocates `stream` (on `at`, for a restored one) and asks the
    /// backend to bind it, or reports the failure.
    fn bind(
        &mut self,
        now: Instant,
        stream: StreamId,
        legs: [LegSpec; 2],
        at: Option<[LocalEndpoint; 2]>,
    ) -> SocketWork {
        match self.allocate(now, stream, legs, at) {
            Ok(endpoints) => SocketWork::Bind {
                stream,
                legs: endpoints,
            },
            Err(error) => {
                self.events
                    .push_back(MediaEvent::AllocationFailed { stream, error });
                SocketWork::None
            }
        }
    }

    /// One leg's ports: from the pool, or exactly `at` (a restored stream).
    fn lease(
        &mut self,
        now: Instant,
        spec: LegSpec,
        at: Option<LocalEndpoint>,
    ) -> Result<Lease, MediaError> {
        let Some(at) = at else {
            return self.ports.allocate(now, spec.local_ip, spec.rtcp);
        };
        let ip = at.rtp.ip();
        let taken = |ports: &mut PortAllocator, port: u16| {
            if ports.reserve(ip, port) {
                Ok(())
            } else {
                Err(MediaError::Bind {
                    addr: SocketAddr::new(ip, port),
                    kind: std::io::ErrorKind::AddrInUse,
                })
            }
        };
        match (spec.rtcp, at.rtcp) {
            (RtcpMode::Pair, Some(rtcp))
                if rtcp.ip() == ip
                    && at.rtp.port() % 2 == 0
                    && rtcp.port() == at.rtp.port().wrapping_add(1) =>
            {
                taken(&mut self.ports, at.rtp.port())?;
                if let Err(e) = taken(&mut self.ports, rtcp.port()) {
                    self.ports.cancel(
                        ip,
                        Lease::Mux {
                            port: at.rtp.port(),
                        },
                    );
                    return Err(e);
                }
                Ok(Lease::Pair { rtp: at.rtp.port() })
            }
            (RtcpMode::Mux, None) => {
                taken(&mut self.ports, at.rtp.port())?;
                Ok(Lease::Mux {
                    port: at.rtp.port(),
                })
            }
            _ => Err(MediaError::Bind {
                addr: at.rtp,
                kind: std::io::ErrorKind::InvalidInput,
            }),
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        stream: StreamId,
        specs: [LegSpec; 2],
        at: Option<[LocalEndpoint; 2]>,
    ) -> Result<[LocalEndpoint; 2], MediaError> {
        if self.streams.contains_key(&stream) {
            return Err(MediaError::DuplicateStream { stream });
        }
        let a = self.lease(now, specs[0], at.map(|at| at[0]))?;
        let b = match self.lease(now, specs[1], at.map(|at| at[1])) {
            Ok(b) => b,
            Err(error) => {
                self.ports.cancel(specs[0].local_ip, a);
                return Err(error);
            }
        };
        let quiet = self.config.relatch_quiet;
        let realm_networks = &self.realm_networks;
        let leg = |spec: LegSpec, lease: Lease| {
            let ip = spec.local_ip;
            let networks = (spec.latch == LatchPolicy::RealmNetworks)
                .then(|| realm_networks.get(spec.realm.index()).cloned())
                .flatten();
            LegState {
                spec,
                lease,
                local: LocalEndpoint {
                    rtp: SocketAddr::new(ip, lease.rtp()),
                    rtcp: lease.rtcp().map(|p| SocketAddr::new(ip, p)),
                },
                remote: None,
                direction: Direction::SendRecv,
                rtp: Latch::new(spec.latch, quiet).with_networks(networks.clone()),
                rtcp: Latch::new(spec.latch, quiet).with_networks(networks),
                counters: LegCounters::default(),
            }
        };
        let legs = [leg(specs[0], a), leg(specs[1], b)];
        let endpoints = [legs[0].local, legs[1].local];
        let state = Stream {
            legs,
            armed: false,
            last_activity: now,
            timed_out: false,
            dirty: false,
        };
        self.streams.insert(stream, Box::new(state));
        if self.next_check.is_none() {
            self.schedule(now);
        }
        Ok(endpoints)
    }

    /// Apply a signaled change to a stream; restarts its activity
    /// clock (a renegotiation is a sign of life) or reports an unknown id.
    fn update(&mut self, stream: StreamId, now: Instant, change: impl FnOnce(&mut Stream)) {
        match self.streams.get_mut(&stream) {
            Some(s) => {
                change(s);
                s.last_activity = now;
                s.timed_out = false;
                if !s.dirty {
                    s.dirty = true;
                    self.changed.push_back(stream);
                }
            }
            None => {
                let error = MediaError::UnknownStream { stream };
                self.events
                    .push_back(MediaEvent::CommandFailed { stream, error });
            }
        }
    }

    fn schedule(&mut self, now: Instant) {
        self.next_check = (!self.streams.is_empty()).then(|| {
            let shortest = self.config.inactivity_timeout.min(self.config.hold_timeout);
            now + (shortest / 4).clamp(Duration::from_millis(1), Duration::from_secs(1))
        });
    }
}

fn route_out(out: &LegState, leg: Leg, kind: PacketKind) -> Option<Route> {
    let separate_rtcp = kind == PacketKind::Rtcp && !out.muxed();
    let (component, latch, from) = match (separate_rtcp, out.local.rtcp) {
        (true, Some(rtcp)) => (Component::Rtcp, &out.rtcp, rtcp),
        _ => (Component::Rtp, &out.rtp, out.local.rtp),
    };
    let to = latch
        .destination()
        .filter(|&to| sendable(out.spec.local_ip, to))?;
    Some(Route {
        leg,
        component,
        from,
        to,
    })
}

/// A STUN message (RFC 8489 §5): the two top bits zero, the magic cookie
/// at octets 4-7, a 20-octet header at least.
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= 20
        && packet[0] >> 6 == 0
        && packet.get(4..8) == Some(&[0x21, 0x12, 0xa4, 0x42][..])
}

/// Whether the relay may send to `to` from a media address `local`. An SDP
/// is input from the network: it must not turn the relay into a packet
/// cannon aimed at the SBC host itself (`127.0.0.1:5060`), at a group
/// (multicast, broadcast), or at "nowhere" (`0.0.0.0`, the RFC 2543 hold,
/// which Linux would deliver locally). Loopback peers are accepted only on a
/// loopback media address (a lab), where they are the only peers there are.
fn sendable(local: IpAddr, to: SocketAddr) -> bool {
    let ip = to.ip().to_canonical();
    let group = match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    to.port() != 0
        && !ip.is_unspecified()
        && !group
        && (!ip.is_loopback() || local.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests;
