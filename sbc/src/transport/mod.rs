//! The SIP transport layer: UDP, TCP and TLS listeners per realm (RFC 3261
//! §18, §26.2, RFC 3581, RFC 5626 §3.5.1 CRLF keepalives).
//!
//! TLS is TCP with a handshake in front (`tls`): the same listener
//! sockets, connection table, caps, deadlines, framing and connection
//! reuse, over the TLS stream instead of the socket. What the handshakes
//! present and verify is a [`TlsSettings`], set at start and replaced by
//! [`Transports::set_tls`] on reload.
//!
//! Owns: the sockets (built with socket2, then handed to tokio), the tasks
//! that read them, the TCP connection table, and the counters in
//! [`ListenerStats`]. Everything received goes to the core as an [`Event`]
//! on ONE bounded channel; everything sent comes in through
//! [`Transports::send`].
//!
//! May not: interpret SIP beyond framing, parsing and the §18.2.1 Via stamp
//! ([`nat::stamp_received`]); answer anything but a CRLF keepalive; buffer
//! without limit. Building responses (a 400 for a [`Received::Malformed`]
//! datagram, the target of a response via [`nat::response_target`]) is the
//! core's job.
//!
//! Screening (with a [`Shield`], [`Transports::start_shielded`]): every
//! UDP datagram, before it is parsed, and every framed TCP message is put
//! to [`Shield::admit`] for its source on the listener's realm; anything
//! but [`Verdict::Pass`] is dropped without an answer (counted by the
//! shield, not in [`StatsSnapshot::messages_in`]). A TCP connection is
//! screened at accept too, and closed at once if its source is over its
//! rate or banned, or as soon as a message gets it banned. Each new ban is
//! logged once ([`crate::guard::log_ban`]).
//!
//! TCP slots (see `tcp`): with a shield, an untrusted source may hold at
//! most [`TransportConfig::max_connections_per_source`] connections per
//! listener, and untrusted sources together at most
//! [`TransportConfig::untrusted_connection_share_percent`] of
//! [`TransportConfig::max_connections`], so trusted peers can still
//! connect during a storm. Every connection must finish each message
//! within [`TransportConfig::message_timeout`] of its first byte, and an
//! accepted untrusted one its first message within
//! [`TransportConfig::first_message_timeout`]; only complete messages and
//! keepalives hold off [`TransportConfig::tcp_idle_timeout`]. Refused
//! connections are counted in [`StatsSnapshot::connections_rejected`] and
//! logged at most once per listener every 10 s, with the count.
//!
//! Overload (the core not draining the channel):
//! * UDP: once the channel is more than half full, datagrams that are new
//!   requests from untrusted sources are shed before parsing, and counted
//!   ([`StatsSnapshot::shed_overload`]); responses (a first line starting
//!   `SIP/2.0`) and anything from a trusted source keep going. Only with a
//!   shield, which knows who is trusted. A datagram that finds the channel
//!   full is dropped and counted ([`StatsSnapshot::dropped_overload`]). UDP
//!   senders retransmit; a queue in front of an overloaded core would only
//!   add latency to doomed work.
//! * TCP: the connection stops reading until the core takes the message
//!   (backpressure through the peer's TCP window). Nothing is dropped: a
//!   stream can't lose a message and stay in sync.
//!
//! Sockets: built with socket2 (buffer sizes from the spec, non-blocking,
//! `IPV6_V6ONLY` on IPv6 so a v6 listener never takes a v4 realm's traffic),
//! then handed to tokio. TCP listeners and outbound sockets set SO_REUSEADDR
//! (rebinding despite TIME_WAIT); UDP sets neither SO_REUSEADDR nor
//! SO_REUSEPORT, see `udp::bind` for why.
//!
//! Send failures that happen later than [`Transports::send`] returns (a TCP
//! connect or write failing) come back as [`Event::SendFailed`], so the
//! transaction layer can treat them as the transport error of §17.1.4.
//!
//! Layout: [`nat`] (pure Via stamping and response targets), `udp`, `tcp`
//! and `tls` (the IO shells).

pub mod nat;
pub mod stamp;
mod tcp;
mod tls;
mod udp;

pub use tls::{Side as TlsSide, TlsFailure};

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::guard::{BanReason, RealmId, Shield, Verdict};
use crate::sip::{Limits, Message, ParseError};
use crate::tls::TlsSettings;

/// A transport protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Unreliable datagrams (§18.1.1, §18.2.1).
    Udp,
    /// A reliable byte stream framed by Content-Length (§18.3).
    Tcp,
    /// TLS over TCP (§26.2), framed like TCP.
    Tls,
}

impl Transport {
    /// Whether the transport is reliable (§18.2.2: responses go back over
    /// the request's connection; §17: no retransmissions).
    pub const fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// The Via transport token (`UDP`, `TCP`, `TLS`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One socket to listen on, as the config layer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The realm this listener belongs to (a name the core routes on).
    pub realm: String,
    /// UDP or TCP.
    pub transport: Transport,
    /// Address to bind; port 0 picks a free port (tests). Bind the realm's
    /// own address: with a wildcard (`0.0.0.0`, `::`) [`Inbound::local`] is
    /// the wildcard and outbound TCP leaves from whatever address the route
    /// picks, so the realm's address is no longer guaranteed as the source.
    pub addr: SocketAddr,
    /// SO_RCVBUF in bytes; `None` keeps the system default.
    pub recv_buffer: Option<usize>,
    /// SO_SNDBUF in bytes; `None` keeps the system default.
    pub send_buffer: Option<usize>,
    /// Bind even when the address is not (yet) on this host (IP_FREEBIND):
    /// a standby node that takes over a shared address before it moves.
    pub freebind: bool,
}

/// IP_FREEBIND (or IPV6_FREEBIND) on `socket` when `on`.
pub(crate) fn set_freebind(socket: &socket2::Socket, v6: bool, on: bool) -> std::io::Result<()> {
    match (on, v6) {
        (false, _) => Ok(()),
        (true, false) => socket.set_freebind(true),
        (true, true) => socket.set_freebind_ipv6(true),
    }
}

/// Limits and sizes that apply to every listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Capacity of the channel to the core, in events.
    pub channel_capacity: usize,
    /// A TCP connection that neither completed a message (a keepalive ping
    /// counts) nor had one written to it for this long is closed. Partial
    /// messages don't count: a byte every minute must not keep a slot.
    pub tcp_idle_timeout: Duration,
    /// Most concurrent TCP connections per listener (accepted and opened);
    /// an accept over the cap is closed at once.
    pub max_connections: usize,
    /// With a shield: most connections one untrusted source IP may hold
    /// on one listener (`usize::MAX`: no cap). A registering phone needs
    /// one, a NAT with a few dozen phones behind it a few dozen; one host
    /// opening thousands is an attack on everyone else's slots. Trusted
    /// sources (trunks, realm networks) are not capped. Without a shield
    /// nobody is known to be trusted, and there is no per-source cap.
    pub max_connections_per_source: usize,
    /// With a shield: the share of [`max_connections`](Self::max_connections),
    /// in percent (at most 100), that untrusted sources may hold together,
    /// so a storm from many addresses still leaves trusted peers room to
    /// connect. Outbound connections and trusted sources use the rest.
    pub untrusted_connection_share_percent: u8,
    /// An accepted TCP connection must complete its first SIP message
    /// (keepalive pings don't count) this soon after the accept, or it is
    /// closed. A client connects to send a request, and sends it at once;
    /// 10 s covers the first segment lost three times (TCP retransmits
    /// after 1, 2 and 4 s). Trusted sources are exempt: a trunk may open a
    /// connection ahead of its first call. Outbound connections are ours and
    /// exempt too.
    pub first_message_timeout: Duration,
    /// Once a message's first byte arrived, the whole message (header
    /// section and body) must arrive within this, or the connection is
    /// closed. A peer writes a message in one go, so 10 s is a lost segment
    /// retransmitted three times; a sender trickling a byte at a time
    /// (slowloris) loses its slot after it, however often it sends. The
    /// body is timed too: a trickled body holds the slot just the same.
    pub message_timeout: Duration,
    /// How long an outbound TCP connect may take.
    pub connect_timeout: Duration,
    /// Messages queued for writing per TCP connection before
    /// [`Transports::send`] reports [`TransportError::QueueFull`].
    pub connection_queue: usize,
    /// Message size and header count limits for parsing and framing.
    pub limits: Limits,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 4096,
            // RFC 5626 keepalives come every ~2 minutes; outlast them.
            tcp_idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_connections_per_source: 32,
            untrusted_connection_share_percent: 90,
            first_message_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(10),
            // §17.1.1.2 Timer B is 32 s; a connect should fail well before.
            connect_timeout: Duration::from_secs(10),
            connection_queue: 256,
            limits: Limits::default(),
        }
    }
}

/// A listener: the index of its spec in [`Transports::start`], or the id
/// [`Transports::add`] returned. Never reused within one [`Transports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub usize);

/// A TCP connection, unique for the life of a [`Transports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// What arrived: a message, or bytes that failed to parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A parsed message; requests already carry the §18.2.1 Via stamp.
    Message(Message),
    /// A datagram or a framed stream message that does not parse. The core
    /// answers per [`ParseError::response`], building the 400 from `bytes`.
    Malformed {
        /// Why it failed.
        error: ParseError,
        /// The bytes as received.
        bytes: Vec<u8>,
    },
}

/// One message received on a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The listener (and so the realm) it arrived on.
    pub listener: ListenerId,
    /// UDP or TCP.
    pub transport: Transport,
    /// Our address it arrived at.
    pub local: SocketAddr,
    /// The peer's address as seen on the wire (after any NAT).
    pub remote: SocketAddr,
    /// The TCP connection, to send responses back over (§18.2.2).
    pub connection: Option<ConnectionId>,
    /// The message.
    pub received: Received,
    /// When it arrived: for UDP the kernel's receive timestamp (see
    /// [`stamp`]), for TCP and TLS when its last byte was read.
    pub arrived: Instant,
}

/// Something for the core.
#[derive(Debug)]
pub enum Event {
    /// A message arrived.
    Inbound(Inbound),
    /// An [`Outbound`] accepted by [`Transports::send`] could not be
    /// delivered (connect or write failed, or, over UDP, the destination
    /// answered with an ICMP unreachable): a transport error (§17.1.4,
    /// §18.4).
    SendFailed {
        /// The listener it was to be sent from.
        listener: ListenerId,
        /// Where it was going.
        to: SocketAddr,
        /// The connection it was queued on; `None` over UDP.
        connection: Option<ConnectionId>,
        /// Over UDP, the request the ICMP error quoted: only its client
        /// transaction failed. `None` over TCP, where the connection failed
        /// and with it everything queued on it.
        request: Option<crate::sip::quote::QuotedRequest>,
        /// Why it failed.
        error: TransportError,
    },
    /// A TCP connection ended (the peer closed it, it failed, timed out or
    /// lost its framing), after the failures of what was queued on it.
    /// Not sent at shutdown. A binding registered over it is unreachable
    /// from now on (RFC 5626 §4.4.2: the flow failed).
    Closed {
        /// The listener it belonged to.
        listener: ListenerId,
        /// The connection.
        connection: ConnectionId,
        /// The peer.
        remote: SocketAddr,
    },
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    /// Must match the listener's transport.
    pub transport: Transport,
    /// The listener whose address is the source (the realm's address).
    pub from_listener: ListenerId,
    /// Destination; for TCP, where to connect if `connection` is gone.
    pub to: SocketAddr,
    /// TCP: the connection to reuse (a response goes back over the
    /// request's connection, §18.2.2). Ignored for UDP.
    pub connection: Option<ConnectionId>,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// What a reload does to the listeners, from [`plan_listeners`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerPlan {
    /// Running listeners the new configuration still has (same transport
    /// and address), with the spec to run them with from now on (realm and
    /// buffer sizes may differ: [`Transports::reconfigure`]).
    pub keep: Vec<(ListenerId, ListenerSpec)>,
    /// Listeners to bind ([`Transports::add`]).
    pub bind: Vec<ListenerSpec>,
    /// Running listeners the new configuration no longer has.
    pub retire: Vec<ListenerId>,
}

/// Matches the `wanted` listeners of a new configuration against the
/// `running` ones by transport and configured address: a listener that is
/// still wanted is kept (its socket, port and connections survive), one
/// that is new is bound, one that is gone retires. Pure, so the reload's
/// decisions are testable without sockets.
pub fn plan_listeners(
    running: &[(ListenerId, ListenerSpec)],
    wanted: &[ListenerSpec],
) -> ListenerPlan {
    let same = |a: &ListenerSpec, b: &ListenerSpec| a.transport == b.transport && a.addr == b.addr;
    let mut plan = ListenerPlan::default();
    for spec in wanted {
        match running.iter().find(|(_, r)| same(r, spec)) {
            Some((id, _)) => plan.keep.push((*id, spec.clone())),
            None => plan.bind.push(spec.clone()),
        }
    }
    plan.retire = running
        .iter()
        .filter(|(_, r)| !wanted.iter().any(|w| same(r, w)))
        .map(|(id, _)| *id)
        .collect();
    plan
}

/// Transport failures, at start-up or on send.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A listener socket could not be created, configured or bound: the
    /// address is in use, not local, or the buffer size was refused.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// The listener's transport.
        transport: Transport,
        /// The address from the spec.
        addr: SocketAddr,
        /// The system's reason.
        source: io::Error,
    },
    /// [`Outbound::from_listener`] names no listener.
    #[error("no listener {0:?}")]
    UnknownListener(ListenerId),
    /// [`Outbound::transport`] is not the listener's transport.
    #[error("listener {listener:?} speaks {actual}, not {requested}")]
    WrongTransport {
        /// The listener.
        listener: ListenerId,
        /// What it speaks.
        actual: Transport,
        /// What the outbound asked for.
        requested: Transport,
    },
    /// Sending failed; `WouldBlock` means the socket's send buffer is full
    /// (raise `send_buffer`, or the transaction layer retransmits).
    #[error("send to {to} failed: {kind}")]
    Send {
        /// The destination.
        to: SocketAddr,
        /// The system's reason.
        kind: io::ErrorKind,
    },
    /// A TCP connect failed (refused, unreachable).
    #[error("connect to {to} failed: {kind}")]
    Connect {
        /// The destination.
        to: SocketAddr,
        /// The system's reason.
        kind: io::ErrorKind,
    },
    /// A TCP connect took longer than [`TransportConfig::connect_timeout`].
    #[error("connect to {to} timed out")]
    ConnectTimeout {
        /// The destination.
        to: SocketAddr,
    },
    /// The connection's write queue is full: the peer is not reading.
    #[error("write queue of connection {0:?} is full")]
    QueueFull(ConnectionId),
    /// The listener is at [`TransportConfig::max_connections`].
    #[error("listener {listener:?} is at its limit of {limit} connections")]
    ConnectionLimit {
        /// The listener.
        listener: ListenerId,
        /// The limit.
        limit: usize,
    },
    /// The connection closed before the queued message was written.
    #[error("connection {0:?} closed before the message was written")]
    ConnectionClosed(ConnectionId),
    /// [`Transports::reconfigure`] can't change a listener's transport or
    /// address: bind a new listener and remove the old one.
    #[error(
        "listener {listener:?} is {transport} {addr}; another transport or address is a new listener"
    )]
    NotInPlace {
        /// The listener.
        listener: ListenerId,
        /// What it speaks.
        transport: Transport,
        /// Where it is bound.
        addr: SocketAddr,
    },
    /// [`Transports::shutdown`] has begun.
    #[error("transports are shutting down")]
    ShuttingDown,
    /// The TLS handshake with `to` failed (the peer's certificate is not
    /// trusted or not for its name, it refused ours, or it timed out).
    #[error("TLS handshake with {to} failed: {reason}")]
    Tls {
        /// The destination.
        to: SocketAddr,
        /// Why.
        reason: TlsFailure,
    },
}

impl TransportError {
    /// `spec`'s socket could not be created, configured or bound.
    fn bind(spec: &ListenerSpec, source: io::Error) -> TransportError {
        TransportError::Bind {
            transport: spec.transport,
            addr: spec.addr,
            source,
        }
    }
}

/// Counters of one listener. Plain atomics so a metrics exporter can read
/// them without the transport knowing about it.
#[derive(Debug, Default)]
pub struct ListenerStats {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    parse_errors: AtomicU64,
    dropped_overload: AtomicU64,
    shed_overload: AtomicU64,
    keepalives: AtomicU64,
    framing_errors: AtomicU64,
    send_errors: AtomicU64,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_rejected: AtomicU64,
    connections_too_slow: AtomicU64,
    /// Failed TLS handshakes: inbound, then outbound; by
    /// [`TlsFailure::ALL`] order.
    tls_failures: [[AtomicU64; TlsFailure::COUNT]; 2],
}

/// A copy of a listener's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Datagrams (UDP) or framed messages (TCP) received, malformed ones
    /// and dropped ones included; keepalives excluded.
    pub messages_in: u64,
    /// Datagrams or messages handed to the socket.
    pub messages_out: u64,
    /// Received messages that did not parse.
    pub parse_errors: u64,
    /// UDP datagrams dropped because the core's channel was full.
    pub dropped_overload: u64,
    /// UDP requests from untrusted sources shed unparsed because the core's
    /// channel was more than half full.
    pub shed_overload: u64,
    /// CRLF keepalives received (UDP CRLF datagrams, TCP pings).
    pub keepalives: u64,
    /// TCP connections closed for losing message framing.
    pub framing_errors: u64,
    /// Sends that failed (synchronously or later).
    pub send_errors: u64,
    /// TCP connections open now (a gauge).
    pub connections_open: u64,
    /// TCP connections ever opened or accepted.
    pub connections_total: u64,
    /// TCP connections refused by [`TransportConfig::max_connections`],
    /// [`TransportConfig::max_connections_per_source`] or
    /// [`TransportConfig::untrusted_connection_share_percent`] (a source
    /// the shield refuses is counted by the shield).
    pub connections_rejected: u64,
    /// TCP connections closed for not completing their first message, or a
    /// message they began, in time (slowloris); idle closes are not
    /// counted.
    pub connections_too_slow: u64,
    /// Failed TLS handshakes, `[inbound, outbound]`, each by reason in
    /// [`TlsFailure::ALL`] order.
    pub tls_handshake_failures: [[u64; TlsFailure::COUNT]; 2],
}

impl ListenerStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            parse_errors: get(&self.parse_errors),
            dropped_overload: get(&self.dropped_overload),
            shed_overload: get(&self.shed_overload),
            keepalives: get(&self.keepalives),
            framing_errors: get(&self.framing_errors),
            send_errors: get(&self.send_errors),
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            connections_rejected: get(&self.connections_rejected),
            connections_too_slow: get(&self.connections_too_slow),
            tls_handshake_failures: self
                .tls_failures
                .each_ref()
                .map(|row| row.each_ref().map(get)),
        }
    }
}

/// One bound listener. Shared (`Arc`) by the table and the listener's own
/// tasks; [`Transports::reconfigure`] swaps in a copy with a new spec.
#[derive(Debug)]
struct Listener {
    spec: ListenerSpec,
    local: SocketAddr,
    stats: Arc<ListenerStats>,
    /// The UDP socket's receive side (for the receive task) and a
    /// non-blocking handle on the same socket for [`Transports::send`].
    udp: Option<(Arc<tokio::net::UdpSocket>, Arc<std::net::UdpSocket>)>,
    /// A handle on the bound socket for changing its options in place.
    control: Arc<socket2::Socket>,
    /// Set by [`Transports::remove`]: the listener's tasks and connections
    /// end.
    closed: Arc<watch::Sender<bool>>,
    /// The shield's number of `spec.realm` (0 without a shield); shared by
    /// every copy, so a reload that renames the realm reaches the tasks.
    realm: Arc<AtomicU16>,
}

/// A socket bound for a listener, before its tasks start.
struct Bound {
    listener: Listener,
    tcp: Option<tokio::net::TcpListener>,
}

impl Bound {
    fn new(spec: &ListenerSpec, shield: Option<&Shield>) -> Result<Bound, TransportError> {
        let bind_error = |source| TransportError::bind(spec, source);
        let (udp, tcp, control, local) = match spec.transport {
            Transport::Udp => {
                let (socket, sender, control) = udp::bind(spec).map_err(bind_error)?;
                let local = socket.local_addr().map_err(bind_error)?;
                (
                    Some((Arc::new(socket), Arc::new(sender))),
                    None,
                    control,
                    local,
                )
            }
            Transport::Tcp | Transport::Tls => {
                let (listener, control) = tcp::bind(spec).map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                (None, Some(listener), control, local)
            }
        };
        Ok(Bound {
            listener: Listener {
                spec: spec.clone(),
                local,
                stats: Arc::default(),
                udp,
                control: Arc::new(control),
                closed: Arc::new(watch::channel(false).0),
                realm: Arc::new(AtomicU16::new(shield.map_or(0, |s| s.realm(&spec.realm).0))),
            },
            tcp,
        })
    }

    /// Starts the listener's task as `id` (the table slot must hold it
    /// already, the task looks it up).
    fn spawn(
        tcp: Option<tokio::net::TcpListener>,
        shared: &Arc<Shared>,
        id: ListenerId,
        listener: &Listener,
        alive: mpsc::Sender<()>,
    ) {
        match (tcp, &listener.udp) {
            (Some(tcp), _) => {
                tokio::spawn(tcp::accept(Arc::clone(shared), id, tcp, alive));
            }
            (None, Some((socket, _))) => {
                tokio::spawn(udp::receive(
                    Arc::clone(shared),
                    id,
                    Arc::clone(socket),
                    alive,
                ));
            }
            (None, None) => {}
        }
    }
}

/// State shared by the handle and every task.
#[derive(Debug)]
struct Shared {
    config: TransportConfig,
    /// Indexed by [`ListenerId`]; a removed listener leaves `None`, so ids
    /// are never reused.
    listeners: RwLock<Vec<Option<Arc<Listener>>>>,
    events: mpsc::Sender<Event>,
    connections: Mutex<tcp::Table>,
    shutdown: watch::Receiver<bool>,
    /// Each task holds a clone; [`Transports::shutdown`] takes this one and
    /// waits until every clone is gone. `None` once shutdown has begun.
    alive: Mutex<Option<mpsc::Sender<()>>>,
    /// Screens sources before parsing (see the module docs).
    shield: Option<Arc<Shield>>,
    /// What TLS handshakes present and verify; swapped by a reload.
    tls: RwLock<Arc<TlsSettings>>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, tcp::Table> {
        // A panic while holding the lock leaves a table that is still
        // consistent (every edit is one insert or remove): keep using it.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A token that keeps shutdown waiting, or `None` if it has begun.
    fn alive_token(&self) -> Option<mpsc::Sender<()>> {
        self.alive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn listeners(&self) -> RwLockReadGuard<'_, Vec<Option<Arc<Listener>>>> {
        // Every edit is one slot assignment: a poisoned table is consistent.
        self.listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn listeners_mut(&self) -> RwLockWriteGuard<'_, Vec<Option<Arc<Listener>>>> {
        self.listeners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The TLS settings in force now (a handshake takes them once).
    fn tls_settings(&self) -> Arc<TlsSettings> {
        Arc::clone(
            &self
                .tls
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn listener(&self, id: ListenerId) -> Option<Arc<Listener>> {
        self.listeners().get(id.0).cloned().flatten()
    }

    /// The shield's verdict on one message (or connection) from `remote`
    /// on `listener`; logs a new ban.
    fn screen(&self, listener: &Listener, remote: IpAddr) -> Verdict {
        let Some(shield) = &self.shield else {
            return Verdict::Pass;
        };
        let realm = RealmId(listener.realm.load(Ordering::Relaxed));
        let verdict = shield.admit(clock(), realm, remote);
        if verdict == Verdict::NewBan {
            crate::guard::log_ban(
                &listener.spec.realm,
                remote,
                BanReason::RateLimit,
                shield.ban_secs(realm),
            );
        }
        verdict
    }

    /// Whether a UDP datagram is shed for overload (see the module docs):
    /// the channel is more than half full and it is a request from an
    /// untrusted source. Cheap until the channel fills: one atomic load.
    fn shed(&self, listener: &Listener, remote: IpAddr, datagram: &[u8]) -> bool {
        let Some(shield) = &self.shield else {
            return false;
        };
        if self.events.capacity() * 2 >= self.events.max_capacity() {
            return false;
        }
        let start = datagram
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .map_or(&[][..], |i| &datagram[i..]);
        // A keepalive (CRLFs only) and a response are kept.
        if start.is_empty() || start.starts_with(b"SIP/2.0") {
            return false;
        }
        let realm = RealmId(listener.realm.load(Ordering::Relaxed));
        !shield.is_trusted(realm, remote)
    }
}

/// What a TCP connection does with a framed message (or, at accept, with
/// the connection) after the shield.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Screen {
    /// Deliver it.
    Pass,
    /// Drop the message, keep the connection (over its rate).
    Drop,
    /// Close the connection (banned; at accept, also over its rate).
    Close,
}

/// Screens a framed TCP message from `remote` on listener `id`.
fn screen_message(shared: &Shared, id: ListenerId, remote: SocketAddr) -> Screen {
    if shared.shield.is_none() {
        return Screen::Pass;
    }
    let Some(listener) = shared.listener(id) else {
        return Screen::Pass;
    };
    match shared.screen(&listener, remote.ip()) {
        Verdict::Pass => Screen::Pass,
        Verdict::RateLimited => Screen::Drop,
        Verdict::Banned | Verdict::NewBan => Screen::Close,
    }
}

/// Whether the shield trusts `remote` on listener `id`'s realm; `None`
/// without a shield (nobody is known to be trusted or not).
fn trusted(shared: &Shared, id: ListenerId, remote: IpAddr) -> Option<bool> {
    let shield = shared.shield.as_ref()?;
    let listener = shared.listener(id)?;
    let realm = RealmId(listener.realm.load(Ordering::Relaxed));
    Some(shield.is_trusted(realm, remote))
}

/// Whether a TCP connection just accepted from `remote` on listener `id`
/// may stay (it takes a token, like a message).
fn screen_accept(shared: &Shared, id: ListenerId, remote: SocketAddr) -> bool {
    screen_message(shared, id, remote) == Screen::Pass
}

/// The transport's clock: it is an IO shell, and the shield takes `now`.
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

/// The instant a datagram with this kernel receive timestamp arrived.
#[allow(clippy::disallowed_methods)]
fn arrived(stamp: Option<std::time::SystemTime>) -> Instant {
    stamp::arrival(stamp, Instant::now(), std::time::SystemTime::now())
}

/// Counts a received message and stamps a request's top Via (§18.2.1);
/// `bytes` is called only for a parse error, to keep what the core needs for
/// its 400.
fn classify(
    stats: &ListenerStats,
    parsed: Result<Message, ParseError>,
    bytes: impl FnOnce() -> Vec<u8>,
    remote: SocketAddr,
) -> Received {
    ListenerStats::bump(&stats.messages_in);
    match parsed {
        Ok(mut msg) => {
            if msg.is_request() {
                nat::stamp_received(&mut msg, remote);
            }
            Received::Message(msg)
        }
        Err(error) => {
            ListenerStats::bump(&stats.parse_errors);
            Received::Malformed {
                error,
                bytes: bytes(),
            }
        }
    }
}

/// The running listeners. Dropping it stops every task like
/// [`Transports::shutdown`] does, without waiting for them to end.
#[derive(Debug)]
pub struct Transports {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

impl Transports {
    /// Binds every listener and starts its task. Must be called inside a
    /// tokio runtime. Returns the handle and the receiving end of the
    /// channel to the core. Listener `i` is `ListenerId(i)`.
    pub fn start(
        specs: &[ListenerSpec],
        config: TransportConfig,
    ) -> Result<(Transports, mpsc::Receiver<Event>), TransportError> {
        Self::start_shielded(specs, config, None)
    }

    /// Like [`Transports::start`], screening every source with `shield`
    /// before parsing, and shedding untrusted requests under overload (see
    /// the module docs).
    pub fn start_shielded(
        specs: &[ListenerSpec],
        config: TransportConfig,
        shield: Option<Arc<Shield>>,
    ) -> Result<(Transports, mpsc::Receiver<Event>), TransportError> {
        Self::start_with_tls(specs, config, shield, Arc::default())
    }

    /// Like [`Transports::start_shielded`], with the TLS settings TLS
    /// listeners handshake with from their first connection on.
    pub fn start_with_tls(
        specs: &[ListenerSpec],
        config: TransportConfig,
        shield: Option<Arc<Shield>>,
        tls: Arc<TlsSettings>,
    ) -> Result<(Transports, mpsc::Receiver<Event>), TransportError> {
        let (events, events_rx) = mpsc::channel(config.channel_capacity.max(1));
        let (stop, shutdown) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);

        let bound = specs
            .iter()
            .map(|spec| Bound::new(spec, shield.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tcp = Vec::with_capacity(bound.len());
        let mut listeners = Vec::with_capacity(bound.len());
        for b in bound {
            tcp.push(b.tcp);
            listeners.push(Some(Arc::new(b.listener)));
        }
        let shared = Arc::new(Shared {
            config,
            listeners: RwLock::new(listeners),
            events,
            connections: Mutex::new(tcp::Table::default()),
            shutdown,
            alive: Mutex::new(Some(alive.clone())),
            shield,
            tls: RwLock::new(tls),
        });
        for (i, tcp) in tcp.into_iter().enumerate() {
            if let Some(listener) = shared.listener(ListenerId(i)) {
                Bound::spawn(tcp, &shared, ListenerId(i), &listener, alive.clone());
            }
        }
        Ok((Transports { shared, stop, done }, events_rx))
    }

    /// Sets what TLS handshakes present and verify from now on: a reload's
    /// new certificates reach new connections; connections up keep theirs.
    pub fn set_tls(&self, settings: Arc<TlsSettings>) {
        *self
            .shared
            .tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    /// Binds one more listener and starts its task (a reload that added
    /// one). Its id is new: ids of removed listeners are never reused.
    pub fn add(&self, spec: &ListenerSpec) -> Result<ListenerId, TransportError> {
        let alive = self
            .shared
            .alive_token()
            .ok_or(TransportError::ShuttingDown)?;
        let Bound { listener, tcp } = Bound::new(spec, self.shared.shield.as_deref())?;
        let listener = Arc::new(listener);
        let id = {
            let mut table = self.shared.listeners_mut();
            table.push(Some(Arc::clone(&listener)));
            ListenerId(table.len() - 1)
        };
        Bound::spawn(tcp, &self.shared, id, &listener, alive);
        Ok(id)
    }

    /// Changes what listener `id` is configured with, in place: its realm
    /// name and socket buffer sizes (`None` keeps the current size). The
    /// transport and address can't change in place; that is a new listener.
    pub fn reconfigure(&self, id: ListenerId, spec: &ListenerSpec) -> Result<(), TransportError> {
        let current = self
            .shared
            .listener(id)
            .ok_or(TransportError::UnknownListener(id))?;
        if current.spec.transport != spec.transport || current.spec.addr != spec.addr {
            return Err(TransportError::NotInPlace {
                listener: id,
                transport: current.spec.transport,
                addr: current.spec.addr,
            });
        }
        let bind_error = |source| TransportError::bind(spec, source);
        if let Some(size) = spec
            .recv_buffer
            .filter(|s| Some(*s) != current.spec.recv_buffer)
        {
            current
                .control
                .set_recv_buffer_size(size)
                .map_err(bind_error)?;
        }
        if let Some(size) = spec
            .send_buffer
            .filter(|s| Some(*s) != current.spec.send_buffer)
        {
            current
                .control
                .set_send_buffer_size(size)
                .map_err(bind_error)?;
        }
        let updated = Listener {
            spec: spec.clone(),
            local: current.local,
            stats: Arc::clone(&current.stats),
            udp: current.udp.clone(),
            control: Arc::clone(&current.control),
            closed: Arc::clone(&current.closed),
            realm: Arc::clone(&current.realm),
        };
        if let Some(shield) = &self.shared.shield {
            current
                .realm
                .store(shield.realm(&spec.realm).0, Ordering::Relaxed);
        }
        if let Some(slot) = self.shared.listeners_mut().get_mut(id.0) {
            *slot = Some(Arc::new(updated));
        }
        Ok(())
    }

    /// Closes listener `id`: its task ends, its TCP connections close, its
    /// socket is released, and sends from it fail with
    /// [`TransportError::UnknownListener`]. Returns whether it was open.
    pub fn remove(&self, id: ListenerId) -> bool {
        let removed = self
            .shared
            .listeners_mut()
            .get_mut(id.0)
            .and_then(Option::take);
        match removed {
            Some(listener) => {
                listener.closed.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Every open listener with the spec it runs with, by id.
    pub fn listeners(&self) -> Vec<(ListenerId, ListenerSpec)> {
        self.shared
            .listeners()
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (ListenerId(i), l.spec.clone())))
            .collect()
    }

    /// The address listener `id` is bound to (the real port if the spec
    /// said 0).
    pub fn local_addr(&self, id: ListenerId) -> Option<SocketAddr> {
        self.shared.listener(id).map(|l| l.local)
    }

    /// The spec listener `id` runs with.
    pub fn spec(&self, id: ListenerId) -> Option<ListenerSpec> {
        self.shared.listener(id).map(|l| l.spec.clone())
    }

    /// The counters of listener `id`.
    pub fn stats(&self, id: ListenerId) -> Option<StatsSnapshot> {
        self.shared.listener(id).map(|l| l.stats.snapshot())
    }

    /// Sends a message without waiting.
    ///
    /// UDP: sent now from the listener's socket. TCP: queued on
    /// `out.connection` if it is open on that listener, else on an open
    /// connection from that listener to `out.to`, else on a new connection
    /// bound to the listener's IP (any port). Errors known now are returned;
    /// later ones arrive as [`Event::SendFailed`].
    pub fn send(&self, out: Outbound) -> Result<(), TransportError> {
        let listener = self
            .shared
            .listener(out.from_listener)
            .ok_or(TransportError::UnknownListener(out.from_listener))?;
        if listener.spec.transport != out.transport {
            return Err(TransportError::WrongTransport {
                listener: out.from_listener,
                actual: listener.spec.transport,
                requested: out.transport,
            });
        }
        if *self.shared.shutdown.borrow() {
            return Err(TransportError::ShuttingDown);
        }
        let result = match &listener.udp {
            Some((_, sender)) => udp::send(sender, &out),
            None => tcp::send(&self.shared, out),
        };
        match (&result, &listener.udp) {
            // TCP counts a message out once it is written.
            (Ok(()), Some(_)) => ListenerStats::bump(&listener.stats.messages_out),
            (Ok(()), None) => {}
            (Err(_), _) => ListenerStats::bump(&listener.stats.send_errors),
        }
        result
    }

    /// Sends `outs` in order, as [`send`](Self::send) each, and hands each
    /// one refused to `refused`; `outs` is left empty. Consecutive UDP
    /// datagrams from one listener go out in one `sendmmsg` (see
    /// `udp::send_many`).
    pub fn send_all(
        &self,
        outs: &mut Vec<Outbound>,
        mut refused: impl FnMut(SocketAddr, TransportError),
    ) {
        // A run: consecutive UDP datagrams of one listener, or a single
        // message of another transport.
        let mut run: Vec<Outbound> = Vec::new();
        for out in outs.drain(..) {
            let joins = run.first().is_none_or(|r| {
                r.transport == Transport::Udp
                    && out.transport == Transport::Udp
                    && r.from_listener == out.from_listener
            });
            if !joins {
                self.send_run(&mut run, &mut refused);
            }
            run.push(out);
        }
        self.send_run(&mut run, &mut refused);
    }

    /// Sends a run of [`send_all`](Self::send_all): datagrams of one UDP
    /// listener in one `sendmmsg` as far as it goes, then one by one from
    /// the first it did not take (which reports the error, or retries past
    /// an ICMP error left pending); a single message as [`send`](Self::send).
    fn send_run(
        &self,
        run: &mut Vec<Outbound>,
        refused: &mut impl FnMut(SocketAddr, TransportError),
    ) {
        let mut sent = 0;
        if run.len() > 1
            && !*self.shared.shutdown.borrow()
            && let Some(listener) = self.shared.listener(run[0].from_listener)
            && let Some((_, sender)) = &listener.udp
        {
            sent = udp::send_many(sender, run);
            for _ in 0..sent {
                ListenerStats::bump(&listener.stats.messages_out);
            }
        }
        for out in run.drain(..).skip(sent) {
            let to = out.to;
            if let Err(e) = self.send(out) {
                refused(to, e);
            }
        }
    }

    /// Stops accepting and reading, closes every connection and socket, and
    /// returns once every task has ended. Messages still queued for TCP
    /// connections are dropped.
    pub async fn shutdown(mut self) {
        // Nothing to do if every task already ended and dropped its watcher.
        let _ = self.stop.send(true);
        drop(
            self.shared
                .alive
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        // `None` once every task has dropped its token.
        while self.done.recv().await.is_some() {}
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        // Nobody left to send or to shut down: stop the tasks rather than
        // leave sockets open until the runtime ends.
        let _ = self.stop.send(true);
    }
}

/// Whether a message (an inbound one, or a failed send) waits for the
/// core; [`Event::Closed`] reports, which every connection's end leaves, are
/// taken and ignored.
#[cfg(test)]
fn a_message_waits(rx: &mut tokio::sync::mpsc::Receiver<Event>) -> bool {
    while let Ok(event) = rx.try_recv() {
        if !matches!(event, Event::Closed { .. }) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod screen_tests;
#[cfg(test)]
mod tcp_tests;
#[cfg(test)]
mod tests;
