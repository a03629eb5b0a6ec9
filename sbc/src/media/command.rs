//! The interface between the call core and a media backend.
//!
//! Owns: the commands the call core (B2BUA) emits for media
//! ([`MediaCommand`]), the events a backend answers with ([`MediaEvent`]), the
//! vocabulary both use (streams, legs, components, directions, counters) and
//! the media layer's error type ([`MediaError`]).
//!
//! May not: do IO or read a clock. These are plain values: the call core
//! produces commands from `poll_*()` and a backend (the userspace relay, or
//! the XDP loader with the userspace relay as its slow path) consumes them in
//! order and reports back through events, so the same call flow runs against
//! a simulated backend in tests.
//!
//! Contract, per stream (one `m=` line of one call):
//! 1. [`MediaCommand::Allocate`] names a [`StreamId`] chosen by the core and,
//!    per leg, the realm media address to anchor on, whether that leg gets
//!    one muxed port (RFC 5761) or an RTP/RTCP pair (RFC 3550 §11), and the
//!    [`RealmTag`] its received packets count under in the totals. The
//!    backend answers [`MediaEvent::Allocated`] with the local addresses to
//!    write into each leg's SDP, or [`MediaEvent::AllocationFailed`]
//!    ([`MediaError::PortsExhausted`] means: answer 503 and count it).
//! 2. [`MediaCommand::SetRemote`] after every offer or answer from a leg: the
//!    address its SDP names and the IP its signaling came from. This (re)opens
//!    that leg's latching window (see [`latch`](super::latch)).
//! 3. [`MediaCommand::SetDirection`] for hold and resume (RFC 3264 §8.4).
//! 4. [`MediaCommand::Release`] when the call ends; the backend answers
//!    [`MediaEvent::Released`] with the final counters. Ports return to the
//!    pool only after a quarantine (see [`ports`](super::ports)).
//!
//! Unprompted events: [`MediaEvent::Latched`] when a leg's real source is
//! learned, [`MediaEvent::TimedOut`] when a stream carried no media for too
//! long (the core decides whether to hang up).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One anchored media stream (one `m=` line of one call), named by the core.
///
/// The core must not reuse an id while the backend still knows it (before
/// [`MediaEvent::Released`] or a failed allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// A side of an anchored stream. `A` is the leg the call arrived on, `B` the
/// leg the B2BUA created; media received on one is relayed out of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The inbound (calling) leg.
    A,
    /// The outbound (called) leg.
    B,
}

impl Leg {
    /// The other leg of the same stream.
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    /// 0 for `A`, 1 for `B`: an index into per-leg arrays.
    pub fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

/// Which of a leg's two flows a packet or socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// RTP, and RTCP too when the leg is muxed (RFC 5761).
    Rtp,
    /// RTCP on its own port (RFC 3550 §11: the odd port above RTP).
    Rtcp,
}

/// How a leg carries RTCP on the SBC's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpMode {
    /// An even RTP port and the odd RTCP port above it. Use this for every
    /// offer the SBC makes (the answerer may refuse mux, RFC 5761 §5.1.1).
    Pair,
    /// One port for RTP and RTCP: only when the leg offered `a=rtcp-mux` and
    /// the SBC's answer accepts it.
    Mux,
}

/// How the media layer may learn a leg's real source address (symmetric RTP
/// behind NAT) without opening the anchored port to injection (RTPBleed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchPolicy {
    /// Latch only onto a source whose IP is the SDP connection address.
    SdpAddress,
    /// Latch only onto a source whose IP is the IP signaling came from (the
    /// usual NAT case: the SDP names a private address).
    SignalingSource,
    /// Latch onto a source whose IP is either of the two.
    SdpOrSignaling,
    /// As [`LatchPolicy::SdpOrSignaling`], and a first latch in the
    /// learning window may also come from any address of the leg realm's
    /// `networks` (a softphone on a multi-homed host sends from an address
    /// that is neither its SDP's nor its signaling's). Re-latching keeps
    /// the stricter rule. Per realm: `latch_from_networks`.
    RealmNetworks,
    /// Asymmetric RTP (a per-trunk option): never latch; accept from any port
    /// of the SDP or signaling IP and always send to the SDP address.
    Asymmetric,
}

/// Which per-realm totals a leg's packets count under
/// ([`RelayStats::realm_totals`](super::userspace::RelayStats::realm_totals)):
/// the call core passes the index of the leg's realm, which it keeps stable
/// for the life of the process, and the daemon turns it back into the
/// realm's name for the `realm` label. The tag, not the media address,
/// says which realm a packet belongs to: realms may share one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealmTag(pub u16);

impl RealmTag {
    /// The tag of realm number `index`. Indexes beyond `u16::MAX` (no
    /// configuration has 65536 realms) share the last tag.
    pub fn from_index(index: usize) -> RealmTag {
        RealmTag(u16::try_from(index).unwrap_or(u16::MAX))
    }

    /// The realm index this tag was made from.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What the core asks for one leg of a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegSpec {
    /// The realm media address to anchor on (must be a configured one).
    pub local_ip: IpAddr,
    /// One muxed port or an RTP/RTCP pair.
    pub rtcp: RtcpMode,
    /// How this leg's source may be learned (per realm or trunk).
    pub latch: LatchPolicy,
    /// The totals packets received on this leg count under.
    pub realm: RealmTag,
}

/// A leg's remote media address, from its latest SDP and its signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// The `c=` address and `m=` port.
    pub rtp: SocketAddr,
    /// Where that leg wants RTCP: `a=rtcp` (RFC 3605), else the RTP port + 1;
    /// ignored when `rtcp_mux` is set.
    pub rtcp: SocketAddr,
    /// The leg's SDP has `a=rtcp-mux` and the negotiation accepted it.
    pub rtcp_mux: bool,
    /// The source IP of the SIP message that carried this SDP.
    pub signaling_ip: IpAddr,
    /// The leg's media is SRTP (an `RTP/SAVP`, `RTP/SAVPF` or DTLS `m=`
    /// profile): its RTCP is SRTCP, encrypted and authenticated, which the
    /// relay forwards as it is (no SDES rewriting).
    pub secure: bool,
}

impl Remote {
    /// RTP at `rtp`, RTCP on the next port (RFC 3550 §11), no mux.
    pub fn rtp_pair(rtp: SocketAddr, signaling_ip: IpAddr) -> Remote {
        let rtcp = SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1));
        Remote {
            rtp,
            rtcp,
            rtcp_mux: false,
            signaling_ip,
            secure: false,
        }
    }
}

/// The media direction a leg's latest SDP declares, from that leg's point of
/// view (RFC 3264 §5.1, §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`: the leg sends, e.g. music on hold.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`, or the RFC 2543 hold `c=0.0.0.0`.
    Inactive,
}

impl Direction {
    /// The leg may send RTP.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The leg may receive RTP.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// What the call core asks the media layer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Anchor a new stream: one local endpoint per leg.
    Allocate {
        /// The id the core chose.
        stream: StreamId,
        /// Leg A's and leg B's requirements, in that order.
        legs: [LegSpec; 2],
    },
    /// A leg's SDP (offer or answer) named this remote; reopens its latching
    /// window.
    SetRemote {
        /// The stream.
        stream: StreamId,
        /// The leg whose SDP it was.
        leg: Leg,
        /// Its remote media address.
        remote: Remote,
    },
    /// A leg's SDP declared this direction (hold: `sendonly`/`inactive`;
    /// resume: `sendrecv`). RTP from X to Y flows only while X sends and Y
    /// receives; RTCP keeps flowing (RFC 3264 §5.1).
    SetDirection {
        /// The stream.
        stream: StreamId,
        /// The leg whose SDP it was.
        leg: Leg,
        /// The declared direction.
        direction: Direction,
    },
    /// The call ended: stop relaying and free the ports (after quarantine).
    Release {
        /// The stream.
        stream: StreamId,
    },
    /// Report the stream's counters so far ([`MediaEvent::Counters`]; an
    /// ng `query`). Changes nothing.
    Report {
        /// The stream.
        stream: StreamId,
    },
    /// Anchor a stream on exactly these local endpoints: a call another
    /// node anchored, adopted after a takeover, whose peers already send
    /// to them. Answered like [`MediaCommand::Allocate`]; fails when a port
    /// is not free in this relay's pools (or belongs to another relay
    /// thread than the stream's).
    Restore {
        /// The id the core chose.
        stream: StreamId,
        /// Leg A's and leg B's requirements (`local_ip` as in `at`).
        legs: [LegSpec; 2],
        /// Leg A's and leg B's endpoints, as the other node anchored them
        /// (boxed: every command in a queue is as large as the largest).
        at: Box<[LocalEndpoint; 2]>,
    },
}

impl MediaCommand {
    /// The stream the command is about.
    pub fn stream(&self) -> StreamId {
        match self {
            MediaCommand::Allocate { stream, .. }
            | MediaCommand::SetRemote { stream, .. }
            | MediaCommand::SetDirection { stream, .. }
            | MediaCommand::Release { stream }
            | MediaCommand::Report { stream }
            | MediaCommand::Restore { stream, .. } => *stream,
        }
    }
}

/// A leg's local, anchored endpoint: what the SBC writes in that leg's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    /// The RTP address (and RTCP when muxed).
    pub rtp: SocketAddr,
    /// The RTCP address; `None` when the leg was allocated [`RtcpMode::Mux`].
    pub rtcp: Option<SocketAddr>,
}

/// Packet counters of one leg of a stream, as seen by the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Packets received on this leg's anchored ports and accepted.
    pub packets_in: u64,
    /// Bytes of those packets (UDP payload).
    pub bytes_in: u64,
    /// Of `packets_in`, those the fast path (XDP) relayed without the
    /// userspace relay (they count in the other leg's `packets_out` too).
    pub fast_packets_in: u64,
    /// Bytes of those packets.
    pub fast_bytes_in: u64,
    /// Packets relayed out of this leg towards its remote.
    pub packets_out: u64,
    /// Bytes of those packets.
    pub bytes_out: u64,
    /// Packets dropped because their source is not (or no longer) this leg's
    /// peer: injection attempts, RTPBleed probes, stale NAT bindings.
    pub dropped_source: u64,
    /// RTP dropped because the stream's directions forbid it (hold).
    pub dropped_direction: u64,
    /// Packets too short or not RTP/RTCP version 2 (RFC 3550 §5.1).
    pub dropped_malformed: u64,
    /// Packets that could not be sent out (no remote yet, send buffer full).
    pub dropped_send: u64,
}

/// Why a stream timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutReason {
    /// No packet was accepted on either leg for the configured inactivity
    /// timeout while media was expected to flow.
    NoMedia,
    /// The stream was on hold (no RTP direction open) for longer than the
    /// hold timeout and sent no RTCP either.
    OnHold,
}

/// What a media backend reports to the call core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The stream is anchored: write these endpoints into each leg's SDP.
    Allocated {
        /// The stream.
        stream: StreamId,
        /// Leg A's and leg B's local endpoints.
        legs: [LocalEndpoint; 2],
    },
    /// The stream could not be anchored; the backend knows nothing of it.
    AllocationFailed {
        /// The stream.
        stream: StreamId,
        /// Why (ports exhausted: answer 503 and count it).
        error: MediaError,
    },
    /// A leg's real source was learned (symmetric RTP); media for that leg is
    /// now sent there.
    Latched {
        /// The stream.
        stream: StreamId,
        /// The leg.
        leg: Leg,
        /// RTP or a separate RTCP flow.
        component: Component,
        /// The source address latched onto.
        source: SocketAddr,
    },
    /// A leg's learning window closed with nothing latched while packets
    /// kept coming from sources it may not learn: media from that leg is
    /// being dropped (one-way or no audio). Reported once per negotiation.
    ///
    /// A leg that sends nothing at all is not reported: at window close the
    /// relay can't tell it from a caller that waits for the 200 while a 183
    /// with SDP reopened its window, a held or `recvonly` peer, or silence
    /// suppression; a call silent both ways is [`MediaEvent::TimedOut`].
    NotLatched {
        /// The stream.
        stream: StreamId,
        /// The leg whose source is unknown.
        leg: Leg,
    },
    /// The stream carried no media for too long. Reported once per stream;
    /// the stream stays anchored until the core releases it.
    TimedOut {
        /// The stream.
        stream: StreamId,
        /// Which timeout fired.
        reason: TimeoutReason,
    },
    /// The stream is released; final counters per leg (A, B).
    Released {
        /// The stream.
        stream: StreamId,
        /// Leg A's and leg B's counters.
        counters: [LegCounters; 2],
    },
    /// The counters of a stream that stays anchored, as asked by
    /// [`MediaCommand::Report`].
    Counters {
        /// The stream.
        stream: StreamId,
        /// Leg A's and leg B's counters.
        counters: [LegCounters; 2],
    },
    /// A command could not be applied (unknown stream, duplicate id, ...).
    CommandFailed {
        /// The stream the command named.
        stream: StreamId,
        /// Why.
        error: MediaError,
    },
}

/// Errors of the media layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    /// Every port of this media address is in use. The call
    /// should be refused with 503 and the event counted; widen the port range
    /// or add a media address if it recurs.
    #[error("no free media port on {addr}: every port in range is in use")]
    PortsExhausted {
        /// The realm media address that ran out.
        addr: IpAddr,
    },
    /// The command named a media address with no configured port range.
    #[error("{addr} is not a configured media address")]
    UnknownAddress {
        /// The address asked for.
        addr: IpAddr,
    },
    /// The core reused a stream id that is still allocated.
    #[error("{stream} is already allocated")]
    DuplicateStream {
        /// The id.
        stream: StreamId,
    },
    /// The command named a stream the media layer does not know (never
    /// allocated, or already released).
    #[error("{stream} is not allocated")]
    UnknownStream {
        /// The id.
        stream: StreamId,
    },
    /// Binding an anchored socket failed (another process holds the port, or
    /// the address is not configured on this host). The ports stay in
    /// quarantine and the next allocation tries others.
    #[error("binding media socket {addr} failed: {kind}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The OS error kind.
        kind: std::io::ErrorKind,
    },
    /// The relay's command queue is full: the relay thread is behind. Retry
    /// later or refuse the call.
    #[error("media relay command queue is full")]
    QueueFull,
    /// The relay thread has stopped; no command can be applied any more.
    #[error("media relay is not running")]
    RelayStopped,
}
