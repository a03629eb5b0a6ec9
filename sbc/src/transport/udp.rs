//! UDP listeners (RFC 3261 §18.1.1, §18.2.1): one socket per listener, one
//! receive task, sends straight from the same socket so the source address
//! is the realm's address.

use std::io;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{
    Event, Inbound, ListenerId, ListenerSpec, ListenerStats, Outbound, Shared, Transport,
    TransportError, classify,
};
use crate::sip::{Message, ParseErrorKind};

/// Largest UDP payload (IPv4: 65,535 - 8 - 20).
const MAX_DATAGRAM: usize = 65_535;

/// Builds the socket with socket2 and hands it to tokio; also returns a
/// second handle on the same socket for [`send`], and a third for changing
/// its options later.
///
/// Neither SO_REUSEADDR nor SO_REUSEPORT: on Linux either one lets a second
/// socket bind the same UDP address and port without an error (checked on
/// this kernel: both options, alone or together, let the second bind
/// succeed), after which unicast datagrams go to one of them. A second
/// daemon, or two realms configured on one address, must fail at start
/// instead. UDP has no TIME_WAIT, so a restart rebinds at once without them.
/// SO_REUSEPORT would make sense for several receive sockets per port in one
/// process (one per core); this module runs one per listener.
pub(super) fn bind(spec: &ListenerSpec) -> io::Result<(UdpSocket, std::net::UdpSocket, Socket)> {
    let socket = Socket::new(
        Domain::for_address(spec.addr),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if spec.addr.is_ipv6() {
        // A v6 listener must not also take v4 traffic that belongs to
        // another realm's v4 listener.
        socket.set_only_v6(true)?;
    }
    if let Some(size) = spec.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = spec.send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&spec.addr.into())?;
    let sender = socket.try_clone()?;
    let control = socket.try_clone()?;
    Ok((UdpSocket::from_std(socket.into())?, sender.into(), control))
}

/// Sends one datagram now from the listener's socket; a full send buffer is
/// an error, not a wait (the transaction layer retransmits, §17.1.1.2).
///
/// Sends go through a plain non-blocking handle rather than tokio's
/// `try_send_to`, which reports `WouldBlock` until the reactor has seen the
/// socket become writable, i.e. spuriously right after start.
pub(super) fn send(socket: &std::net::UdpSocket, out: &Outbound) -> Result<(), TransportError> {
    match socket.send_to(&out.bytes, out.to) {
        Ok(_) => Ok(()),
        Err(e) => Err(TransportError::Send {
            to: out.to,
            kind: e.kind(),
        }),
    }
}

/// Reads datagrams until shutdown or the listener's removal; each is
/// screened by the shield (if any), then becomes an [`Event::Inbound`] or,
/// if the core's channel is full (or half full, for an untrusted request),
/// a counted drop.
pub(super) async fn receive(
    shared: Arc<Shared>,
    id: ListenerId,
    socket: Arc<UdpSocket>,
    _alive: mpsc::Sender<()>,
) {
    let Some(listener) = shared.listener(id) else {
        return;
    };
    let stats: &ListenerStats = &listener.stats;
    let local = listener.local;
    let mut shutdown = shared.shutdown.clone();
    let mut closed = listener.closed.subscribe();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, remote) = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = closed.wait_for(|closed| *closed) => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                Err(e) => {
                    // E.g. ICMP errors surfacing on Linux; the socket is fine.
                    tracing::debug!(listener = id.0, error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        let datagram = &buf[..n];
        // Before anything is parsed: a banned or flooding source costs a
        // table probe, an overloaded core sheds untrusted requests.
        if !shared.screen(&listener, remote.ip()).passes() {
            continue;
        }
        if shared.shed(&listener, remote.ip(), datagram) {
            ListenerStats::bump(&stats.messages_in);
            ListenerStats::bump(&stats.shed_overload);
            continue;
        }
        let parsed = Message::parse_owned(datagram.to_vec(), &shared.config.limits);
        if matches!(&parsed, Err(e) if e.kind == ParseErrorKind::Empty) {
            // A CRLF keepalive some UAs send over UDP: nothing to answer.
            ListenerStats::bump(&stats.keepalives);
            continue;
        }
        let received = classify(stats, parsed, || datagram.to_vec(), remote);
        let event = Event::Inbound(Inbound {
            listener: id,
            transport: Transport::Udp,
            local,
            remote,
            connection: None,
            received,
        });
        match shared.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => ListenerStats::bump(&stats.dropped_overload),
            // The core is gone: nobody to read for.
            Err(TrySendError::Closed(_)) => break,
        }
    }
}
