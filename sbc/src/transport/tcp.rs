//! TCP listeners and connections (RFC 3261 §18.3 framing, §18.2.2
//! connection reuse, RFC 5626 §3.5.1 CRLF keepalives).
//!
//! One accept task per listener, one task per connection that reads, frames
//! ([`StreamFramer`]), writes its queue and enforces its deadlines. The
//! [`Table`] maps connection ids (and `(listener, remote)`) to write queues,
//! so a response finds the request's connection and a request to a peer
//! that already has a connection to us reuses it.
//!
//! Edge protection: an accepted connection from a source the shield does
//! not trust counts against a per-source cap and against the untrusted
//! share of the listener's cap, so one address (or many) can't take the
//! slots trunks need; refusals are counted and logged at most once per
//! [`super::REFUSAL_LOG_EVERY`]. An accepted connection must complete its
//! first message, and every message its bytes, within
//! `message_timeout`; the idle timeout restarts on complete messages and
//! writes, not on every byte, so trickling bytes holds nothing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::{
    ConnectionId, Event, Inbound, ListenerId, ListenerSpec, ListenerStats, Outbound, Shared,
    Transport, TransportError, classify,
};
use crate::sip::{Frame, StreamFramer};

/// Read chunk size; the framer reassembles messages across reads.
const READ_CHUNK: usize = 16 * 1024;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections and their write queues.
#[derive(Debug, Default)]
pub(super) struct Table {
    next_id: u64,
    by_id: HashMap<ConnectionId, Entry>,
    /// The newest connection from a listener to a remote address.
    by_remote: HashMap<(ListenerId, SocketAddr), ConnectionId>,
    /// Accepted connections of untrusted sources, per listener and address
    /// (an entry only while the source has one).
    untrusted: HashMap<(ListenerId, IpAddr), usize>,
    /// Their sum per listener.
    untrusted_total: HashMap<ListenerId, usize>,
}

#[derive(Debug)]
struct Entry {
    listener: ListenerId,
    remote: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
    /// Counted in [`Table::untrusted`].
    untrusted: bool,
}

/// Why an accepted connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    UntrustedShare,
    PerSource,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "connection limit",
            Refusal::UntrustedShare => "untrusted sources' share",
            Refusal::PerSource => "per-source limit",
        }
    }
}

impl Table {
    fn insert(
        &mut self,
        listener: ListenerId,
        remote: SocketAddr,
        queue: mpsc::Sender<Vec<u8>>,
    ) -> ConnectionId {
        self.next_id += 1;
        let id = ConnectionId(self.next_id);
        self.by_id.insert(
            id,
            Entry {
                listener,
                remote,
                queue,
                untrusted: false,
            },
        );
        self.by_remote.insert((listener, remote), id);
        id
    }

    /// Admits an accepted connection from `remote`, counting it when its
    /// source is untrusted, or says why not.
    fn admit(
        &mut self,
        listener: ListenerId,
        remote: SocketAddr,
        queue: mpsc::Sender<Vec<u8>>,
        untrusted: bool,
        open: usize,
        config: &super::TransportConfig,
    ) -> Result<ConnectionId, Refusal> {
        if open >= config.max_connections {
            return Err(Refusal::Total);
        }
        if untrusted {
            let share = (config.max_connections
                * usize::from(config.untrusted_connections_percent))
            .div_ceil(100);
            if self.untrusted_total.get(&listener).copied().unwrap_or(0) >= share {
                return Err(Refusal::UntrustedShare);
            }
            let key = (listener, remote.ip());
            if self.untrusted.get(&key).copied().unwrap_or(0) >= config.max_connections_per_source {
                return Err(Refusal::PerSource);
            }
            *self.untrusted.entry(key).or_default() += 1;
            *self.untrusted_total.entry(listener).or_default() += 1;
        }
        let id = self.insert(listener, remote, queue);
        if let Some(entry) = self.by_id.get_mut(&id) {
            entry.untrusted = untrusted;
        }
        Ok(id)
    }

    /// Removes `id`; returns whether it was there.
    fn remove(&mut self, id: ConnectionId) -> bool {
        let Some(entry) = self.by_id.remove(&id) else {
            return false;
        };
        let key = (entry.listener, entry.remote);
        if self.by_remote.get(&key) == Some(&id) {
            self.by_remote.remove(&key);
        }
        if entry.untrusted {
            let source = (entry.listener, entry.remote.ip());
            if let Some(n) = self.untrusted.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    self.untrusted.remove(&source);
                }
            }
            if let Some(n) = self.untrusted_total.get_mut(&entry.listener) {
                *n = n.saturating_sub(1);
            }
        }
        // After a storm, give the tables' memory back.
        if self.by_id.capacity() > 64 && self.by_id.len() * 4 < self.by_id.capacity() {
            self.by_id.shrink_to_fit();
            self.by_remote.shrink_to_fit();
            self.untrusted.shrink_to_fit();
        }
        true
    }

    /// Untrusted connections of `listener`, and how many sources hold them.
    #[cfg(test)]
    pub(super) fn untrusted_of(&self, listener: ListenerId) -> (usize, usize) {
        (
            self.untrusted_total.get(&listener).copied().unwrap_or(0),
            self.untrusted
                .keys()
                .filter(|(l, _)| *l == listener)
                .count(),
        )
    }

    /// The connection to reuse for a send from `listener`: `wanted` if it is
    /// open on that listener, else the newest one to `to`.
    fn lookup(
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
    let id = table.insert(listener_id, out.to, queue);
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
    let Some((stats, mut closed, refusals)) = shared.listener(id).map(|l| {
        (
            Arc::clone(&l.stats),
            l.closed.subscribe(),
            Arc::clone(&l.refusals),
        )
    }) else {
        return;
    };
    let mut shutdown = shared.shutdown.clone();
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
            continue;
        }
        let untrusted = shared
            .listener(id)
            .is_none_or(|l| !shared.trusted(&l, remote.ip()));
        let (queue, rx) = mpsc::channel(shared.config.connection_queue.max(1));
        let conn = {
            let mut table = shared.table();
            let open = stats
                .connections_open
                .load(std::sync::atomic::Ordering::Relaxed);
            let admitted = table.admit(
                id,
                remote,
                queue,
                untrusted,
                usize::try_from(open).unwrap_or(usize::MAX),
                &shared.config,
            );
            if admitted.is_ok() {
                open_count(&stats);
            }
            admitted
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(refusal) => {
                ListenerStats::bump(&stats.connections_rejected);
                let due = refusals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .refused(super::clock());
                if let Some(refused) = due {
                    tracing::warn!(
                        listener = id.0,
                        %remote,
                        reason = refusal.as_str(),
                        refused,
                        "TCP connections refused (one line per 10 s at most; refused = since the last)"
                    );
                }
                drop(stream);
                continue;
            }
        };
        // SIP messages are small and latency-bound.
        let _ = stream.set_nodelay(true);
        tokio::spawn(run(
            Arc::clone(&shared),
            id,
            conn,
            stream,
            remote,
            rx,
            alive.clone(),
            true,
        ));
    }
}

/// Connects to `to` from the listener's IP, then runs the connection; if the
/// connect fails, every queued message is reported as failed.
async fn connect_and_run(
    shared: Arc<Shared>,
    listener: ListenerId,
    id: ConnectionId,
    to: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    alive: mpsc::Sender<()>,
) {
    let mut shutdown = shared.shutdown.clone();
    let connected = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => Err(TransportError::ShuttingDown),
        r = connect(&shared, listener, to) => r,
    };
    match connected {
        Ok(stream) => run(shared, listener, id, stream, to, rx, alive, false).await,
        Err(error) => {
            tracing::debug!(listener = listener.0, %to, %error, "TCP connect failed");
            // Removed whether or not the listener still exists (it may have
            // been removed while connecting).
            if shared.table().remove(id)
                && let Some(l) = shared.listener(listener)
            {
                close_count(&l.stats);
            }
            rx.close();
            let mut error = Some(error);
            while let Ok(_bytes) = rx.try_recv() {
                // The first message gets the real reason; any that queued
                // behind it failed for the same one.
                let error = error.take().unwrap_or(TransportError::ConnectionClosed(id));
                fail(&shared, listener, to, id, error, &mut shutdown).await;
            }
        }
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
        connection,
        error,
    };
    deliver(shared, event, shutdown).await;
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    Shutdown,
    Idle,
    PeerClosed,
    CoreGone,
    Io(io::Error),
    Framing(crate::sip::FramingError),
    /// The shield banned the source.
    Banned,
    /// No complete message within `message_timeout` (slowloris).
    TooSlow,
}

/// What woke the connection task.
enum Step {
    Stop(End),
    Write(Vec<u8>),
    Read(usize),
}

/// Runs one connection: reads and frames, answers pings, delivers
/// messages (waiting, and so not reading, while the core's channel is
/// full), writes the queue, and closes after the idle timeout, or when an
/// `accepted` connection is too slow with its first message or any
/// message's bytes (see the module docs).
#[allow(clippy::too_many_arguments)]
async fn run(
    shared: Arc<Shared>,
    listener: ListenerId,
    id: ConnectionId,
    stream: TcpStream,
    remote: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    _alive: mpsc::Sender<()>,
    accepted: bool,
) {
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
    let local = stream.local_addr().unwrap_or(l.local);
    let mut closed = l.closed.subscribe();
    drop(l);
    let (mut reader, mut writer) = stream.into_split();
    let mut shutdown = shared.shutdown.clone();
    let mut framer = StreamFramer::new(shared.config.limits);
    let mut buf = vec![0u8; READ_CHUNK];
    let idle_timeout = shared.config.tcp_idle_timeout;
    let message_timeout = shared.config.message_timeout;
    let mut idle_at = tokio::time::Instant::now() + idle_timeout;
    // Until the first complete message (accepted connections), then from
    // the first byte of each message until it is complete.
    let mut slow_at = accepted.then(|| tokio::time::Instant::now() + message_timeout);
    let deadline = tokio::time::sleep_until(slow_at.map_or(idle_at, |s| s.min(idle_at)));
    tokio::pin!(deadline);

    let end = 'conn: loop {
        let step = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => Step::Stop(End::Shutdown),
            _ = closed.wait_for(|closed| *closed) => Step::Stop(End::Shutdown),
            () = &mut deadline => Step::Stop(if slow_at.is_some_and(|s| s <= idle_at) {
                End::TooSlow
            } else {
                End::Idle
            }),
            queued = rx.recv() => match queued {
                Some(bytes) => Step::Write(bytes),
                None => Step::Stop(End::Shutdown),
            },
            read = reader.read(&mut buf) => match read {
                Ok(0) => Step::Stop(End::PeerClosed),
                Ok(n) => Step::Read(n),
                Err(e) => Step::Stop(End::Io(e)),
            },
        };
        match step {
            Step::Stop(end) => break end,
            Step::Write(bytes) => {
                if let Err(e) = writer.write_all(&bytes).await {
                    let error = TransportError::Send {
                        to: remote,
                        kind: e.kind(),
                    };
                    fail(&shared, listener, remote, id, error, &mut shutdown).await;
                    break End::Io(e);
                }
                ListenerStats::bump(&stats.messages_out);
                idle_at = tokio::time::Instant::now() + idle_timeout;
            }
            Step::Read(n) => {
                framer.push(&buf[..n]);
                loop {
                    let frame = match framer.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => break 'conn End::Framing(e),
                    };
                    // A complete message (or keepalive): the connection is
                    // alive, and no message is half-sent.
                    idle_at = tokio::time::Instant::now() + idle_timeout;
                    slow_at = None;
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
                            if let Err(e) = writer.write_all(b"\r\n").await {
                                break 'conn End::Io(e);
                            }
                            continue;
                        }
                        Frame::Pong => continue,
                        Frame::Message(msg) => classify(&stats, Ok(msg), Vec::new, remote),
                        Frame::Malformed { error, bytes } => {
                            classify(&stats, Err(error), || bytes, remote)
                        }
                    };
                    let event = Event::Inbound(Inbound {
                        listener,
                        transport: Transport::Tcp,
                        local,
                        remote,
                        connection: Some(id),
                        received,
                    });
                    if !deliver(&shared, event, &mut shutdown).await {
                        break 'conn End::CoreGone;
                    }
                }
                // Bytes of a message not complete yet: they have until
                // message_timeout after the first of them.
                if framer.buffered() == 0 {
                    slow_at = None;
                } else if slow_at.is_none() {
                    slow_at = Some(tokio::time::Instant::now() + message_timeout);
                }
            }
        }
        deadline
            .as_mut()
            .reset(slow_at.map_or(idle_at, |s| s.min(idle_at)));
    };

    match &end {
        End::Framing(e) => {
            ListenerStats::bump(&stats.framing_errors);
            tracing::warn!(listener = listener.0, %remote, error = %e, "TCP framing lost, closing connection");
        }
        End::Io(e) => {
            tracing::debug!(listener = listener.0, %remote, error = %e, "TCP connection failed")
        }
        End::Idle => {
            tracing::debug!(listener = listener.0, %remote, "TCP connection idle, closing")
        }
        End::TooSlow => {
            ListenerStats::bump(&stats.connections_too_slow);
            tracing::debug!(listener = listener.0, %remote, "TCP message not complete in time, closing")
        }
        // The ban was logged once, by the screen.
        End::Banned => {}
        End::Shutdown | End::PeerClosed | End::CoreGone => {}
    }
    if shared.table().remove(id) {
        close_count(&stats);
    }
    let _ = writer.shutdown().await;
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
}
