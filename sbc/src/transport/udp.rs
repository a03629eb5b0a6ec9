//! UDP listeners (RFC 3261 §18.1.1, §18.2.1): one socket per listener, one
//! receive task, sends straight from the same socket so the source address
//! is the realm's address.

use std::io;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
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
    super::set_freebind(&socket, spec.addr.is_ipv6(), spec.freebind)?;
    set_recverr(&socket, spec.addr.is_ipv6())?;
    super::stamp::enable(&socket)?;
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
///
/// With `IP_RECVERR` on, an ICMP error for an earlier datagram, to any
/// destination, also sets the socket's pending error, and the next send
/// returns that error instead of sending (udp(7)). Its details are already
/// in the error queue, where the receive task reports them; this datagram
/// was not the one that failed, so it is sent again, a bounded number of
/// times.
pub(super) fn send(socket: &std::net::UdpSocket, out: &Outbound) -> Result<(), TransportError> {
    let mut tries = 0;
    loop {
        match socket.send_to(&out.bytes, out.to) {
            Ok(_) => return Ok(()),
            Err(e) if tries < 4 && is_pending_icmp_error(&e) => tries += 1,
            Err(e) => {
                return Err(TransportError::Send {
                    to: out.to,
                    kind: e.kind(),
                });
            }
        }
    }
}

/// Sends as many of `outs` as one `sendmmsg(2)` takes, in order, and
/// returns how many went (0 on an error, which [`send`] then meets and
/// reports on the first one not sent).
///
/// One syscall for a burst of datagrams: each `sendto` on a busy host
/// wakes its receiver, which the kernel places on the sender's CPU (a
/// socket wake-up is a synchronous one) where it runs before the sender's
/// next message, two context switches per datagram. Through one
/// `sendmmsg` the receivers are woken once the whole burst is out.
#[allow(unsafe_code)] // sendmmsg: no safe wrapper in std or socket2
pub(super) fn send_many(socket: &std::net::UdpSocket, outs: &[Outbound]) -> usize {
    use std::os::fd::AsRawFd;
    let outs = &outs[..outs.len().min(MAX_BATCH)];
    let addrs: Vec<socket2::SockAddr> = outs.iter().map(|o| o.to.into()).collect();
    let mut iovs: Vec<libc::iovec> = outs
        .iter()
        .map(|o| libc::iovec {
            iov_base: o.bytes.as_ptr() as *mut libc::c_void,
            iov_len: o.bytes.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(&addrs)
        .map(|(iov, addr)| {
            // SAFETY: an all-zero msghdr is valid (no name, no control).
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_namelen = addr.len();
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    // SAFETY: every header points at an iovec and an address that outlive
    // the call, the iovecs at message bytes that do too; the kernel only
    // reads them (and writes each header's msg_len).
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(sent).unwrap_or(0)
}

/// The most datagrams [`send_many`] hands the kernel at once (its own
/// limit, `UIO_MAXIOV`, is 1024).
const MAX_BATCH: usize = 64;

/// An errno an ICMP error leaves pending on the socket.
fn is_pending_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
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
    let mut budget = ReportBudget::new();
    loop {
        let (n, remote, arrived) = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = closed.wait_for(|closed| *closed) => break,
            ready = socket.ready(Interest::ERROR) => {
                if ready.is_ok() && !report_unreachable(&shared, id, &socket, &mut budget) {
                    break;
                }
                continue;
            }
            r = socket.async_io(Interest::READABLE, || super::stamp::recv_from(&*socket, &mut buf)) => match r {
                Ok(got) => (got.len, got.from, super::arrived(got.stamp)),
                Err(e) => {
                    // The pending error of an ICMP message: its details are
                    // in the error queue.
                    tracing::debug!(listener = id.0, error = %e, "UDP receive error");
                    if !report_unreachable(&shared, id, &socket, &mut budget) {
                        break;
                    }
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
            arrived,
        });
        match shared.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => ListenerStats::bump(&stats.dropped_overload),
            // The core is gone: nobody to read for.
            Err(TrySendError::Closed(_)) => break,
        }
    }
}

/// Asks the kernel for the ICMP errors of this socket's datagrams
/// (`IP_RECVERR`, ip(7)): an unconnected UDP socket hears of none without
/// it. A request sent to a closed port then fails at once (RFC 3261
/// §18.4: a transport error, which §8.1.3.1 makes a 503 and routes may fail
/// over on), not after timer B's 32 s.
fn set_recverr(socket: &Socket, ipv6: bool) -> io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    super::stamp::set_flag(socket, level, name)
}

/// Most ICMP error reports one listener forwards to the core per second. A
/// genuine burst (every retransmission of every request to a dead peer is
/// quoted back) needs one report per transaction; forged ones are dropped by
/// the core for want of a branch it knows, and this keeps a flood of them
/// from costing the core more than a table probe each, a thousand times a
/// second. Reports over it are lost, not calls: timer B still ends those
/// transactions.
const MAX_REPORTS_PER_SECOND: u32 = 1_000;

/// The per-listener budget of [`MAX_REPORTS_PER_SECOND`], in one-second
/// windows.
#[derive(Debug)]
struct ReportBudget {
    window: std::time::Instant,
    used: u32,
}

impl ReportBudget {
    fn new() -> Self {
        Self {
            window: super::clock(),
            used: 0,
        }
    }

    fn take(&mut self, now: std::time::Instant) -> bool {
        if now.duration_since(self.window) >= std::time::Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        self.used += 1;
        self.used <= MAX_REPORTS_PER_SECOND
    }
}

/// Drains the socket's error queue; each "unreachable" (port, host or
/// network; not "fragmentation needed") whose quoted datagram is one of our
/// requests (a method and a top Via branch, see [`crate::sip::quote`])
/// becomes an [`Event::SendFailed`] naming that request. Returns false when
/// the core is gone.
///
/// Drained once directly, then again inside `try_io`, which clears tokio's
/// error readiness only if no new error arrived since it looked: an error
/// queued between the last read and the clearing is never left unread.
fn report_unreachable(
    shared: &Shared,
    id: ListenerId,
    socket: &UdpSocket,
    budget: &mut ReportBudget,
) -> bool {
    let mut alive = drain_errors(shared, id, socket, budget);
    let _: io::Result<()> = socket.try_io(Interest::ERROR, || {
        alive &= drain_errors(shared, id, socket, budget);
        Err(io::ErrorKind::WouldBlock.into())
    });
    alive
}

fn drain_errors(
    shared: &Shared,
    id: ListenerId,
    socket: &UdpSocket,
    budget: &mut ReportBudget,
) -> bool {
    let mut quote = [0u8; QUOTE_BUFFER];
    // Bounded: the queue holds at most a receive buffer's worth.
    while let Ok(Some(error)) = next_queued_error(socket, &mut quote) {
        // (ICMP "fragmentation needed" is EMSGSIZE: the kernel lowers the
        // path MTU; that is not a failed destination.)
        if !is_pending_icmp_error(&io::Error::from_raw_os_error(error.errno)) {
            continue;
        }
        if let Some(l) = shared.listener(id) {
            ListenerStats::bump(&l.stats.send_errors);
        }
        // Only a quote of our own request can fail a transaction; with the
        // core's channel half full, inbound messages go first.
        let Some(request) = crate::sip::quote::quoted_request(&quote[..error.quoted]) else {
            continue;
        };
        if shared.events.capacity() * 2 < shared.events.max_capacity()
            || !budget.take(super::clock())
        {
            continue;
        }
        let to = error.to;
        let kind = io::Error::from_raw_os_error(error.errno).kind();
        let event = Event::SendFailed {
            listener: id,
            to,
            connection: None,
            request: Some(request),
            error: TransportError::Send { to, kind },
        };
        // A full channel loses the report, not the call: timer B still
        // ends the transaction.
        if let Err(TrySendError::Closed(_)) = shared.events.try_send(event) {
            return false;
        }
    }
    true
}

/// Room for the quoted datagram: an IPv4 ICMP error holds at most 576 bytes
/// (RFC 1812 §4.3.2.3), an ICMPv6 one at most 1,280 (RFC 4443 §2.4 (c)).
const QUOTE_BUFFER: usize = 1_280;

/// One entry of the error queue.
#[derive(Debug)]
struct QueuedError {
    /// The destination of the datagram that failed.
    to: std::net::SocketAddr,
    /// The error's errno; 0 if the entry carried no `IP_RECVERR` message.
    errno: i32,
    /// How many bytes of the failed datagram's payload were quoted.
    quoted: usize,
}

/// Reads one entry of the error queue, its quoted payload into `quote`;
/// `None` when the queue is empty.
fn next_queued_error(socket: &UdpSocket, quote: &mut [u8]) -> io::Result<Option<QueuedError>> {
    let mut errno = None;
    // MSG_DONTWAIT keeps the call from blocking the runtime.
    let read = super::stamp::recv_msg(
        socket,
        quote,
        libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        |level, kind, data| {
            let recverr = (level == libc::SOL_IP && kind == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR);
            if recverr && errno.is_none() {
                errno = super::stamp::read_struct::<libc::sock_extended_err>(data)
                    .map(|err| err.ee_errno as i32);
            }
        },
    );
    // (MSG_TRUNC in msg_flags would say the quote was longer.)
    let (quoted, to) = match read {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(QueuedError {
        to: to.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        errno: errno.unwrap_or(0),
        quoted,
    }))
}
