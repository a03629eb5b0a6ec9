//! TCP listeners and connections (RFC 3261 §18.3 framing, §18.2.2
//! connection reuse, RFC 5626 §3.5.1 CRLF keepalives), and the same for
//! TLS: a TLS listener's connections are framed and run by this code over
//! the stream `tls` hands back after the handshake.
//!
//! One accept task per listener, one task per connection that reads, frames
//! ([`StreamFramer`]), writes its queue and enforces its [`Deadlines`]. The
//! [`Table`] maps connection ids (and `(listener, remote)`) to write queues,
//! so a response finds the request's connection and a request to a peer
//! that already has a connection to us reuses it.
//!
//! Edge protection (with a shield, which knows who is trusted): at accept,
//! besides the listener's total cap, an untrusted source may hold at most
//! [`TransportConfig::max_connections_per_source`] connections and all
//! untrusted sources together at most their share of the total, so trusted
//! peers keep room ([`Table::accept`]). Every connection is timed from the
//! first byte of each message to its end, an accepted untrusted one from
//! the accept to its first message, and all from the last complete message
//! to idleness ([`Deadlines`]). Refusals are counted per connection and
//! logged at most once per [`REFUSAL_LOG_EVERY`] per listener
//! ([`RefusalLog`]).
//!
//! Memory: a connection holds no read buffer while idle (reads go through
//! one scratch buffer per runtime thread into the framer, which frees its
//! buffer once everything in it is framed), and the table's maps shrink
//! when a storm is over.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::{
    ConnectionId, Event, Inbound, ListenerId, ListenerSpec, ListenerStats, Outbound, Shared,
    Transport, TransportConfig, TransportError, classify,
};
use crate::sip::{Frame, Message, StreamFramer};

/// Read chunk size; the framer reassembles messages across reads.
const READ_CHUNK: usize = 16 * 1024;

/// At most one "connections refused" line per listener this often.
pub(super) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Addresses one connection may alias (RFC 5923): a peer's listeners,
/// a handful at most.
const MAX_ALIASES: usize = 4;

/// Maps at or below this capacity are never shrunk (not worth the rehash).
const MIN_SHRINK_CAPACITY: usize = 64;

thread_local! {
    /// One read buffer per runtime thread, shared by every connection the
    /// thread runs: bytes go from it into the connection's framer at once,
    /// so an idle connection holds no read buffer.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Who an accepted connection comes from, for the caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Peer {
    /// No shield, so no idea: only the listener's total cap applies.
    Unscreened,
    /// The shield trusts the source: only the total cap, and no deadline
    /// for the first message.
    Trusted,
    /// Any other source (its canonical address): the per-source cap and
    /// the untrusted share too.
    Untrusted(IpAddr),
}

/// Why an accepted connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The listener is at [`TransportConfig::max_connections`].
    Limit,
    /// Untrusted sources hold their whole share of the listener.
    UntrustedShare,
    /// The source is at [`TransportConfig::max_connections_per_source`].
    PerSource,
    /// The shield refused the source (banned or over its rate).
    Shield,
}

/// Refusals counted since the last log line, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RefusalCounts {
    pub(super) limit: u64,
    pub(super) untrusted_share: u64,
    pub(super) per_source: u64,
    pub(super) shield: u64,
}

impl RefusalCounts {
    pub(super) fn total(&self) -> u64 {
        self.limit + self.untrusted_share + self.per_source + self.shield
    }
}

/// Rate-limits the log line about refused connections: a storm of refusals
/// is one line per `every` with the counts since the line before, not one
/// line per connection. Pure: takes `now`.
#[derive(Debug)]
pub(super) struct RefusalLog {
    every: Duration,
    last: Option<Instant>,
    since: RefusalCounts,
}

impl RefusalLog {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            since: RefusalCounts::default(),
        }
    }

    /// Counts a refusal at `now`. Returns the counts to log, this refusal
    /// included, when a line is due: at the first refusal, then at the
    /// first one at least `every` after the last line. Refusals in between
    /// wait for the next line (the counter in [`ListenerStats`] is exact).
    pub(super) fn refused(&mut self, now: Instant, why: Refusal) -> Option<RefusalCounts> {
        let counter = match why {
            Refusal::Limit => &mut self.since.limit,
            Refusal::UntrustedShare => &mut self.since.untrusted_share,
            Refusal::PerSource => &mut self.since.per_source,
            Refusal::Shield => &mut self.since.shield,
        };
        *counter += 1;
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

/// Why a connection's timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No complete message for [`TransportConfig::tcp_idle_timeout`].
    Idle,
    /// No first message within [`TransportConfig::first_message_timeout`].
    FirstMessage,
    /// A message begun and not finished within
    /// [`TransportConfig::message_timeout`].
    Message,
}

/// The deadlines of one connection (see [`TransportConfig`]): idleness,
/// the first message of an accepted untrusted connection, and the message
/// in progress. Partial reads move none of them forward: only a complete
/// frame (message or keepalive) or a write resets idleness. Pure: every
/// input takes `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Deadlines {
    idle: tokio::time::Instant,
    first_message: Option<tokio::time::Instant>,
    message: Option<tokio::time::Instant>,
}

impl Deadlines {
    pub(super) fn new(
        now: tokio::time::Instant,
        config: &TransportConfig,
        first_message: bool,
    ) -> Self {
        Self {
            idle: now + config.tcp_idle_timeout,
            first_message: first_message.then(|| now + config.first_message_timeout),
            message: None,
        }
    }

    /// Bytes were read and framed: `frames` complete frames came out,
    /// `message` if one of them was a SIP message; `started` if a message
    /// is now partly buffered ([`StreamFramer::message_started`]).
    pub(super) fn read(
        &mut self,
        now: tokio::time::Instant,
        config: &TransportConfig,
        frames: bool,
        message: bool,
        started: bool,
    ) {
        if frames {
            self.idle = now + config.tcp_idle_timeout;
        }
        if message {
            self.first_message = None;
        }
        // A message that began in this read (after a complete frame, or
        // after nothing) is timed from now; one that was already under way
        // keeps its deadline however many bytes trickle in.
        self.message = match (started, self.message) {
            (false, _) => None,
            (true, Some(at)) if !frames => Some(at),
            (true, _) => Some(now + config.message_timeout),
        };
    }

    /// A message was written: the connection is in use.
    pub(super) fn wrote(&mut self, now: tokio::time::Instant, config: &TransportConfig) {
        self.idle = now + config.tcp_idle_timeout;
    }

    /// The earliest deadline and what it means.
    pub(super) fn next(&self) -> (tokio::time::Instant, Expiry) {
        let mut next = (self.idle, Expiry::Idle);
        for (at, why) in [
            (self.first_message, Expiry::FirstMessage),
            (self.message, Expiry::Message),
        ] {
            if let Some(at) = at.filter(|at| *at < next.0) {
                next = (at, why);
            }
        }
        next
    }
}

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections and their write queues, and what the caps count.
#[derive(Debug, Default)]
pub(super) struct Table {
    next_id: u64,
    by_id: HashMap<ConnectionId, Entry>,
    /// The newest connection from a listener to a remote address.
    by_remote: HashMap<(ListenerId, SocketAddr), ConnectionId>,
    /// Accepted connections per untrusted source and listener; an entry
    /// exists only while its source holds a connection.
    per_source: HashMap<(ListenerId, IpAddr), u32>,
    /// Accepted connections from untrusted sources, per listener (no
    /// entry at zero).
    untrusted: HashMap<ListenerId, usize>,
}

#[derive(Debug)]
struct Entry {
    listener: ListenerId,
    remote: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
    /// The untrusted source this connection is counted against.
    counted: Option<IpAddr>,
    /// Addresses the peer aliased to this connection (RFC 5923).
    aliases: Vec<SocketAddr>,
}

/// Gives a storm's high-water mark back once `map` is a quarter full,
/// keeping room to double; amortised O(1) per removal.
fn shrink<K: Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > MIN_SHRINK_CAPACITY && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// How many connections untrusted sources may hold together.
fn untrusted_share(config: &TransportConfig) -> usize {
    let percent = config.untrusted_connection_share_percent.min(100);
    (config.max_connections as u128 * u128::from(percent) / 100) as usize
}

impl Table {
    fn insert(
        &mut self,
        listener: ListenerId,
        remote: SocketAddr,
        queue: mpsc::Sender<Vec<u8>>,
        counted: Option<IpAddr>,
    ) -> ConnectionId {
        self.next_id += 1;
        let id = ConnectionId(self.next_id);
        self.by_id.insert(
            id,
            Entry {
                listener,
                remote,
                queue,
                counted,
                aliases: Vec::new(),
            },
        );
        self.by_remote.insert((listener, remote), id);
        id
    }

    /// Admits a connection accepted on `listener` from `remote`, with
    /// `open` connections open there now, or says why not: the total cap
    /// first, then for an untrusted source the untrusted share and its own
    /// cap. An admitted untrusted connection is counted until
    /// [`Table::remove`].
    pub(super) fn accept(
        &mut self,
        listener: ListenerId,
        remote: SocketAddr,
        queue: mpsc::Sender<Vec<u8>>,
        peer: Peer,
        open: u64,
        config: &TransportConfig,
    ) -> Result<ConnectionId, Refusal> {
        if open >= config.max_connections as u64 {
            return Err(Refusal::Limit);
        }
        let counted = match peer {
            Peer::Unscreened | Peer::Trusted => None,
            Peer::Untrusted(ip) => {
                let all = self.untrusted.get(&listener).copied().unwrap_or(0);
                if all >= untrusted_share(config) {
                    return Err(Refusal::UntrustedShare);
                }
                let mine = self.per_source.get(&(listener, ip)).copied().unwrap_or(0);
                if mine as usize >= config.max_connections_per_source {
                    return Err(Refusal::PerSource);
                }
                *self.untrusted.entry(listener).or_default() += 1;
                *self.per_source.entry((listener, ip)).or_default() += 1;
                Some(ip)
            }
        };
        Ok(self.insert(listener, remote, queue, counted))
    }

    /// Removes `id`; returns whether it was there.
    pub(super) fn remove(&mut self, id: ConnectionId) -> bool {
        let Some(entry) = self.by_id.remove(&id) else {
            return false;
        };
        for remote in std::iter::once(entry.remote).chain(entry.aliases) {
            let key = (entry.listener, remote);
            if self.by_remote.get(&key) == Some(&id) {
                self.by_remote.remove(&key);
            }
        }
        if let Some(ip) = entry.counted {
            release(&mut self.per_source, (entry.listener, ip));
            release(&mut self.untrusted, entry.listener);
        }
        shrink(&mut self.by_id);
        shrink(&mut self.by_remote);
        shrink(&mut self.per_source);
        true
    }

    /// RFC 5923: requests from the connection's listener to `alias` may
    /// use connection `id` while it lasts, unless another open connection
    /// has that address already (one the SBC opened, or an earlier alias,
    /// is kept); at most [`MAX_ALIASES`] per connection. Returns whether
    /// the alias was taken.
    pub(super) fn alias(&mut self, id: ConnectionId, alias: SocketAddr) -> bool {
        let Some(listener) = self.by_id.get(&id).map(|e| e.listener) else {
            return false;
        };
        let key = (listener, alias);
        if self
            .by_remote
            .get(&key)
            .is_some_and(|other| *other != id && self.by_id.contains_key(other))
        {
            return false;
        }
        let Some(entry) = self.by_id.get_mut(&id) else {
            return false;
        };
        if entry.aliases.len() >= MAX_ALIASES && !entry.aliases.contains(&alias) {
            return false;
        }
        if !entry.aliases.contains(&alias) && alias != entry.remote {
            entry.aliases.push(alias);
        }
        self.by_remote.insert(key, id);
        true
    }

    /// Connections counted against untrusted source `ip` on `listener`.
    #[cfg(test)]
    pub(super) fn source_count(&self, listener: ListenerId, ip: IpAddr) -> u32 {
        self.per_source.get(&(listener, ip)).copied().unwrap_or(0)
    }

    /// Entries in the per-source map and its capacity (tests).
    #[cfg(test)]
    pub(super) fn source_map_size(&self) -> (usize, usize) {
        (self.per_source.len(), self.per_source.capacity())
    }

    /// The connection to reuse for a send from `listener`: `wanted` if it is
    /// open on that listener, else the newest one to `to`.
    pub(super) fn lookup(
        &self,
        listener: ListenerId,
        wanted: Option<ConnectionId>,
        to: SocketAddr,
    ) -> Option<ConnectionId> {
        wanted
            .filter(|id| self.by_id.get(id).is_some_and(|e| e.listener == listener))
            .or_else(|| self.by_remote.get(&(listener, to)).copied())
    }
}

/// Takes one from `key`'s count, removing the entry at zero.
fn release<K: Hash + Eq, V: Copy + PartialEq + From<u8> + std::ops::SubAssign>(
    map: &mut HashMap<K, V>,
    key: K,
) {
    if let Some(count) = map.get_mut(&key) {
        *count -= V::from(1);
        if *count == V::from(0) {
            map.remove(&key);
        }
    }
}

/// Builds the listening socket with socket2 and hands it to tokio, with a
/// second handle on it for changing its options later.
/// SO_REUSEADDR so a restart rebinds despite TIME_WAIT; no SO_REUSEPORT,
/// which would let a second process silently take half the connections.
pub(super) fn bind(spec: &ListenerSpec) -> io::Result<(TcpListener, Socket)> {
    let socket = Socket::new(
        Domain::for_address(spec.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if spec.addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit these from the listener.
    if let Some(size) = spec.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = spec.send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    super::set_freebind(&socket, spec.addr.is_ipv6(), spec.freebind)?;
    socket.bind(&spec.addr.into())?;
    socket.listen(1024)?;
    let control = socket.try_clone()?;
    Ok((TcpListener::from_std(socket.into())?, control))
}

/// Queues `out` on a connection, opening one if needed (see
/// [`Transports::send`](super::Transports::send)).
pub(super) fn send(shared: &Arc<Shared>, out: Outbound) -> Result<(), TransportError> {
    let listener_id = out.from_listener;
    let listener = shared
        .listener(listener_id)
        .ok_or(TransportError::UnknownListener(listener_id))?;
    let mut table = shared.table();
    let mut bytes = out.bytes;
    if let Some(id) = table.lookup(listener_id, out.connection, out.to) {
        let queued = match table.by_id.get(&id) {
            Some(entry) => entry.queue.try_send(bytes),
            None => return Err(TransportError::ConnectionClosed(id)),
        };
        match queued {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => return Err(TransportError::QueueFull(id)),
            // The task is ending; open a new connection instead.
            Err(TrySendError::Closed(returned)) => {
                if table.remove(id) {
                    close_count(&listener.stats);
                }
                bytes = returned;
            }
        }
    }

    let limit = shared.config.max_connections;
    if listener
        .stats
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed)
        >= limit as u64
    {
        ListenerStats::bump(&listener.stats.connections_rejected);
        return Err(TransportError::ConnectionLimit {
            listener: listener_id,
            limit,
        });
    }
    let alive = shared.alive_token().ok_or(TransportError::ShuttingDown)?;
    let (queue, rx) = mpsc::channel(shared.config.connection_queue.max(1));
    // A fresh queue has room for one message.
    queue
        .try_send(bytes)
        .map_err(|_| TransportError::ShuttingDown)?;
    let id = table.insert(listener_id, out.to, queue, None);
    open_count(&listener.stats);
    drop(table);
    tokio::spawn(connect_and_run(
        Arc::clone(shared),
        listener_id,
        id,
        out.to,
        rx,
        alive,
    ));
    Ok(())
}

fn open_count(stats: &ListenerStats) {
    ListenerStats::bump(&stats.connections_open);
    ListenerStats::bump(&stats.connections_total);
}

fn close_count(stats: &ListenerStats) {
    stats
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Accepts connections until shutdown or the listener's removal.
pub(super) async fn accept(
    shared: Arc<Shared>,
    id: ListenerId,
    listener: TcpListener,
    alive: mpsc::Sender<()>,
) {
    let Some((stats, mut closed)) = shared
        .listener(id)
        .map(|l| (Arc::clone(&l.stats), l.closed.subscribe()))
    else {
        return;
    };
    let mut shutdown = shared.shutdown.clone();
    let mut refusals = RefusalLog::new(REFUSAL_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = closed.wait_for(|closed| *closed) => break,
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(listener = id.0, error = %e, "TCP accept failed");
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if !super::screen_accept(&shared, id, remote) {
            drop(stream);
            log_refusal(&mut refusals, id, remote, Refusal::Shield);
            continue;
        }
        let peer = match super::trusted(&shared, id, remote.ip()) {
            None => Peer::Unscreened,
            Some(true) => Peer::Trusted,
            Some(false) => Peer::Untrusted(remote.ip().to_canonical()),
        };
        let (queue, rx) = mpsc::channel(shared.config.connection_queue.max(1));
        let admitted = {
            let mut table = shared.table();
            let open = stats
                .connections_open
                .load(std::sync::atomic::Ordering::Relaxed);
            let admitted = table.accept(id, remote, queue, peer, open, &shared.config);
            if admitted.is_ok() {
                open_count(&stats);
            }
            admitted
        };
        let conn = match admitted {
            Ok(conn) => conn,
            Err(why) => {
                ListenerStats::bump(&stats.connections_rejected);
                drop(stream);
                log_refusal(&mut refusals, id, remote, why);
                continue;
            }
        };
        // SIP messages are small and latency-bound.
        let _ = stream.set_nodelay(true);
        let first_message = peer != Peer::Trusted;
        let tls = shared
            .listener(id)
            .is_some_and(|l| l.spec.transport == Transport::Tls);
        // Two tasks, so a plain TCP connection's task holds no room for a
        // TLS handshake and stream.
        if tls {
            tokio::spawn(serve_tls_accepted(
                Arc::clone(&shared),
                id,
                conn,
                stream,
                remote,
                rx,
                alive.clone(),
                first_message,
            ));
        } else {
            let at = Origin {
                transport: Transport::Tcp,
                local: stream.local_addr().ok(),
                aliasing: NoAliases,
            };
            tokio::spawn(run(
                Arc::clone(&shared),
                id,
                conn,
                stream,
                at,
                remote,
                rx,
                alive.clone(),
                first_message,
            ));
        }
    }
}

/// Runs a connection accepted on a TLS listener once its handshake is done
/// (in this task, so a stalled handshake holds this connection only). A
/// peer that proved a name with a client certificate may alias the
/// connection (RFC 5923).
#[allow(clippy::too_many_arguments)]
async fn serve_tls_accepted(
    shared: Arc<Shared>,
    listener: ListenerId,
    id: ConnectionId,
    stream: TcpStream,
    remote: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    alive: mpsc::Sender<()>,
    first_message: bool,
) {
    let local = stream.local_addr().ok();
    let mut shutdown = shared.shutdown.clone();
    let handshake = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => Err(TransportError::ShuttingDown),
        r = super::tls::accept(&shared, listener, stream, remote) => {
            r.map_err(|reason| TransportError::Tls { to: remote, reason })
        }
    };
    match handshake {
        Ok(tls) => {
            let at = Origin {
                transport: Transport::Tls,
                local,
                aliasing: CertifiedAliases {
                    names: client_names(&tls),
                    last: None,
                },
            };
            run(
                shared,
                listener,
                id,
                tls,
                at,
                remote,
                rx,
                alive,
                first_message,
            )
            .await
        }
        Err(error) => abandon(&shared, listener, id, remote, rx, error).await,
    }
}

/// The names (subjectAltName DNS names and addresses) of the client
/// certificate a TLS peer presented, which the handshake verified against
/// the realm's CA set; none when it presented none.
fn client_names(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Vec<String> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::tls::CertInfo::parse(leaf.as_ref()).ok())
        .map(|info| info.names)
        .unwrap_or_default()
}

/// The address a request on an accepted TLS connection asks to alias to
/// it (RFC 5923 §5): its top Via says TLS and `alias`, and its sent-by
/// host is one of the names of the client certificate the peer proved
/// (§10.1), an IP address only if it is also the connection's source.
/// The alias is the source IP with the sent-by port (5061 when absent): a
/// peer can claim ports of its own address only, and only with a
/// certificate for the name it claims.
pub(super) fn alias_of(
    message: &Message,
    remote: SocketAddr,
    client_names: &[String],
) -> Option<SocketAddr> {
    use crate::sip::uri::Host;
    if !message.is_request() || client_names.is_empty() {
        return None;
    }
    let via = message.top_via()?;
    if !via.transport().eq_ignore_ascii_case("TLS") || via.params().get("alias").is_none() {
        return None;
    }
    let named = |name: &str| client_names.iter().any(|n| n.eq_ignore_ascii_case(name));
    let proven = match via.host() {
        Host::Domain(domain) => named(domain.trim_end_matches('.')),
        host => host.ip().is_some_and(|ip| {
            ip.to_canonical() == remote.ip().to_canonical() && named(&ip.to_string())
        }),
    };
    proven.then(|| SocketAddr::new(remote.ip(), via.port().unwrap_or(5061)))
}

/// Forgets connection `id`, which never ran, and reports every message
/// queued on it as failed (the first with `error`).
async fn abandon(
    shared: &Shared,
    listener: ListenerId,
    id: ConnectionId,
    to: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    error: TransportError,
) {
    let mut shutdown = shared.shutdown.clone();
    // Removed whether or not the listener still exists (it may have been
    // removed meanwhile).
    if shared.table().remove(id)
        && let Some(l) = shared.listener(listener)
    {
        close_count(&l.stats);
    }
    rx.close();
    let mut error = Some(error);
    while let Ok(_bytes) = rx.try_recv() {
        // The first message gets the real reason; any that queued behind
        // it failed for the same one.
        let error = error.take().unwrap_or(TransportError::ConnectionClosed(id));
        fail(shared, listener, to, id, error, &mut shutdown).await;
    }
}

/// Counts a refused connection and logs the refusals since the last line,
/// if one is due (see [`RefusalLog`]).
fn log_refusal(log: &mut RefusalLog, listener: ListenerId, remote: SocketAddr, why: Refusal) {
    let Some(c) = log.refused(super::clock(), why) else {
        return;
    };
    tracing::warn!(
        listener = listener.0,
        last_source = %remote.ip().to_canonical(),
        refused = c.total(),
        limit = c.limit,
        untrusted_share = c.untrusted_share,
        per_source = c.per_source,
        shield = c.shield,
        "TCP connections refused since the last report"
    );
}

/// Connects to `to` from the listener's IP (and over a TLS listener,
/// handshakes), then runs the connection; if the connect or handshake
/// fails, every queued message is reported as failed.
async fn connect_and_run(
    shared: Arc<Shared>,
    listener: ListenerId,
    id: ConnectionId,
    to: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    alive: mpsc::Sender<()>,
) {
    let mut shutdown = shared.shutdown.clone();
    let connected = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => Err(TransportError::ShuttingDown),
        r = connect(&shared, listener, to) => r,
    };
    let stream = match connected {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(listener = listener.0, %to, %error, "TCP connect failed");
            return abandon(&shared, listener, id, to, rx, error).await;
        }
    };
    let local = stream.local_addr().ok();
    let transport = shared
        .listener(listener)
        .map_or(Transport::Tcp, |l| l.spec.transport);
    // The peer may alias only connections it opened (RFC 5923 §5).
    let at = Origin {
        transport,
        local,
        aliasing: NoAliases,
    };
    if transport != Transport::Tls {
        return run(shared, listener, id, stream, at, to, rx, alive, false).await;
    }
    let handshake = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => Err(TransportError::ShuttingDown),
        r = super::tls::connect(&shared, listener, stream, to) => {
            r.map_err(|reason| TransportError::Tls { to, reason })
        }
    };
    match handshake {
        Ok(tls) => run(shared, listener, id, tls, at, to, rx, alive, false).await,
        Err(error) => abandon(&shared, listener, id, to, rx, error).await,
    }
}

async fn connect(
    shared: &Shared,
    listener: ListenerId,
    to: SocketAddr,
) -> Result<TcpStream, TransportError> {
    let failed = |e: io::Error| TransportError::Connect { to, kind: e.kind() };
    let l = shared
        .listener(listener)
        .ok_or(TransportError::UnknownListener(listener))?;
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    socket.set_reuseaddr(true).map_err(failed)?;
    if let Some(size) = l.spec.recv_buffer.and_then(|s| u32::try_from(s).ok()) {
        socket.set_recv_buffer_size(size).map_err(failed)?;
    }
    if let Some(size) = l.spec.send_buffer.and_then(|s| u32::try_from(s).ok()) {
        socket.set_send_buffer_size(size).map_err(failed)?;
    }
    // The realm's address as source, any port (§18.1.1: the listener port
    // can't be shared by an outbound socket without SO_REUSEPORT tricks).
    socket
        .bind(SocketAddr::new(l.local.ip(), 0))
        .map_err(failed)?;
    let stream = tokio::time::timeout(shared.config.connect_timeout, socket.connect(to))
        .await
        .map_err(|_| TransportError::ConnectTimeout { to })?
        .map_err(failed)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends an event to the core, unless shutdown comes first. `false` if the
/// core is gone or shutting down.
async fn deliver(shared: &Shared, event: Event, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => false,
        r = shared.events.send(event) => r.is_ok(),
    }
}

async fn fail(
    shared: &Shared,
    listener: ListenerId,
    to: SocketAddr,
    connection: ConnectionId,
    error: TransportError,
    shutdown: &mut watch::Receiver<bool>,
) {
    if let Some(l) = shared.listener(listener) {
        ListenerStats::bump(&l.stats.send_errors);
    }
    let event = Event::SendFailed {
        listener,
        to,
        connection: Some(connection),
        request: None,
        error,
    };
    deliver(shared, event, shutdown).await;
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    Shutdown,
    /// A deadline passed (see [`Deadlines`]).
    Expired(Expiry),
    PeerClosed,
    CoreGone,
    Io(io::Error),
    Framing(crate::sip::FramingError),
    /// The shield banned the source.
    Banned,
}

/// What woke the connection task.
enum Step {
    Stop(End),
    Write(Vec<u8>),
    /// Bytes were read into the framer (0: the peer closed).
    Read(usize),
}

/// Reads what `reader` has into `framer`, through the thread's scratch
/// buffer, which is borrowed only while the read is polled (never across
/// an await), so an idle connection holds no buffer, over TCP or TLS.
/// Cancel-safe: a poll that returns `Pending` has consumed nothing.
async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    framer: &mut StreamFramer,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|buf| {
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    framer.push(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// Writes `bytes` and pushes them out (a TLS stream buffers records
/// until flushed).
async fn write_flush<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// How long a closing connection may take to say goodbye (a TLS
/// close_notify to a peer that does not read must not hold the task).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a connection's messages arrive: the transport, the socket's
/// local address, and what may alias the connection (RFC 5923).
struct Origin<A> {
    transport: Transport,
    local: Option<SocketAddr>,
    aliasing: A,
}

/// What a connection does with each message it receives about RFC 5923
/// aliases: a type, so connections that never alias (plain TCP, the ones
/// the SBC opens) carry no state for it and run the code they ran before.
trait Aliasing: Send + 'static {
    fn message(
        &mut self,
        shared: &Shared,
        listener: ListenerId,
        id: ConnectionId,
        remote: SocketAddr,
        message: &Message,
    );
}

/// No aliases.
struct NoAliases;

impl Aliasing for NoAliases {
    #[inline(always)]
    fn message(&mut self, _: &Shared, _: ListenerId, _: ConnectionId, _: SocketAddr, _: &Message) {}
}

/// An accepted TLS connection: the names its client certificate proved,
/// and the alias taken last (so a peer's every request does not lock the
/// table).
struct CertifiedAliases {
    names: Vec<String>,
    last: Option<SocketAddr>,
}

impl Aliasing for CertifiedAliases {
    fn message(
        &mut self,
        shared: &Shared,
        listener: ListenerId,
        id: ConnectionId,
        remote: SocketAddr,
        message: &Message,
    ) {
        if let Some(alias) = alias_of(message, remote, &self.names)
            && self.last != Some(alias)
            && shared.table().alias(id, alias)
        {
            self.last = Some(alias);
            tracing::debug!(listener = listener.0, %remote, %alias, "TLS connection aliased (RFC 5923)");
        }
    }
}

/// Runs one connection: reads and frames, answers pings, delivers
/// messages (waiting, and so not reading, while the core's channel is
/// full), writes the queue, and closes when one of its [`Deadlines`]
/// passes (`first_message`: whether the first-message deadline applies).
/// `stream` is the socket, or the TLS stream on it; `at` is the
/// transport the messages arrive over and the socket's local address.
#[allow(clippy::too_many_arguments)]
async fn run<S: AsyncRead + AsyncWrite + Send + 'static, A: Aliasing>(
    shared: Arc<Shared>,
    listener: ListenerId,
    id: ConnectionId,
    stream: S,
    at: Origin<A>,
    remote: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    _alive: mpsc::Sender<()>,
    first_message: bool,
) {
    let Origin {
        transport,
        local,
        mut aliasing,
    } = at;
    let Some(l) = shared.listener(listener) else {
        // Removed since the accept or connect: the connection goes with it,
        // and what was queued on it is reported as failed.
        shared.table().remove(id);
        rx.close();
        let mut shutdown = shared.shutdown.clone();
        while let Ok(_bytes) = rx.try_recv() {
            let error = TransportError::UnknownListener(listener);
            fail(&shared, listener, remote, id, error, &mut shutdown).await;
        }
        return;
    };
    let stats = Arc::clone(&l.stats);
    let local = local.unwrap_or(l.local);
    let mut closed = l.closed.subscribe();
    drop(l);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut shutdown = shared.shutdown.clone();
    let config = &shared.config;
    let mut framer = StreamFramer::new(config.limits);
    let mut deadlines = Deadlines::new(tokio::time::Instant::now(), config, first_message);
    let (at, mut expiry) = deadlines.next();
    let timer = tokio::time::sleep_until(at);
    tokio::pin!(timer);

    let end = 'conn: loop {
        // Biased: queued writes go out first, and bytes already waiting
        // are read before a deadline is honoured, so time spent waiting on
        // a full core channel (when the connection does not read) is not
        // held against the peer.
        let step = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => Step::Stop(End::Shutdown),
            _ = closed.wait_for(|closed| *closed) => Step::Stop(End::Shutdown),
            queued = rx.recv() => match queued {
                Some(bytes) => Step::Write(bytes),
                None => Step::Stop(End::Shutdown),
            },
            read = read_into(&mut reader, &mut framer) => match read {
                Ok(n) => Step::Read(n),
                Err(e) => Step::Stop(End::Io(e)),
            },
            () = &mut timer => Step::Stop(End::Expired(expiry)),
        };
        match step {
            Step::Stop(end) => break end,
            Step::Write(bytes) => {
                if let Err(e) = write_flush(&mut writer, &bytes).await {
                    let error = TransportError::Send {
                        to: remote,
                        kind: e.kind(),
                    };
                    fail(&shared, listener, remote, id, error, &mut shutdown).await;
                    break End::Io(e);
                }
                ListenerStats::bump(&stats.messages_out);
                deadlines.wrote(tokio::time::Instant::now(), config);
            }
            Step::Read(0) => break End::PeerClosed,
            Step::Read(_) => {
                // The messages this read completed arrived with it.
                let arrived = super::clock();
                let (mut frames, mut message) = (false, false);
                loop {
                    let frame = match framer.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => break 'conn End::Framing(e),
                    };
                    frames = true;
                    message |= matches!(frame, Frame::Message(_) | Frame::Malformed { .. });
                    if !matches!(frame, Frame::Ping | Frame::Pong) {
                        match super::screen_message(&shared, listener, remote) {
                            super::Screen::Pass => {}
                            super::Screen::Drop => continue,
                            super::Screen::Close => break 'conn End::Banned,
                        }
                    }
                    let received = match frame {
                        Frame::Ping => {
                            ListenerStats::bump(&stats.keepalives);
                            if let Err(e) = write_flush(&mut writer, b"\r\n").await {
                                break 'conn End::Io(e);
                            }
                            continue;
                        }
                        Frame::Pong => continue,
                        Frame::Message(msg) => {
                            aliasing.message(&shared, listener, id, remote, &msg);
                            classify(&stats, Ok(msg), Vec::new, remote)
                        }
                        Frame::Malformed { error, bytes } => {
                            classify(&stats, Err(error), || bytes, remote)
                        }
                    };
                    let event = Event::Inbound(Inbound {
                        listener,
                        transport,
                        local,
                        remote,
                        connection: Some(id),
                        received,
                        arrived,
                    });
                    if !deliver(&shared, event, &mut shutdown).await {
                        break 'conn End::CoreGone;
                    }
                }
                // Read after the deliveries, which may have waited.
                let now = tokio::time::Instant::now();
                deadlines.read(now, config, frames, message, framer.message_started());
                framer.release();
            }
        }
        let (at, why) = deadlines.next();
        if at != timer.deadline() {
            timer.as_mut().reset(at);
        }
        expiry = why;
    };

    match &end {
        End::Framing(e) => {
            ListenerStats::bump(&stats.framing_errors);
            tracing::warn!(listener = listener.0, %remote, error = %e, "TCP framing lost, closing connection");
        }
        End::Io(e) => {
            tracing::debug!(listener = listener.0, %remote, error = %e, "TCP connection failed")
        }
        // Debug, not warn: a slowloris storm would otherwise be a log storm.
        End::Expired(why) => {
            if *why != Expiry::Idle {
                ListenerStats::bump(&stats.connections_too_slow);
            }
            tracing::debug!(listener = listener.0, %remote, expired = ?why, "TCP connection timed out, closing")
        }
        // The ban was logged once, by the screen.
        End::Banned => {}
        End::Shutdown | End::PeerClosed | End::CoreGone => {}
    }
    if shared.table().remove(id) {
        close_count(&stats);
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.shutdown()).await;
    // Messages queued behind the end never went out: say so.
    rx.close();
    while let Ok(_bytes) = rx.try_recv() {
        fail(
            &shared,
            listener,
            remote,
            id,
            TransportError::ConnectionClosed(id),
            &mut shutdown,
        )
        .await;
    }
    if !matches!(end, End::Shutdown | End::CoreGone) {
        let event = Event::Closed {
            listener,
            connection: id,
            remote,
        };
        deliver(&shared, event, &mut shutdown).await;
    }
}
