//! Times ng control requests to their replies from outside both ends: a
//! packet socket on the loopback of the bench's private namespace sees
//! every datagram to and from the ng port, with the kernel's receive
//! timestamp, so the time from a request (Kamailio's) to its reply (the
//! media server's) is measured the same way whichever server answers, and
//! adds no hop to the path: neither side knows it is watched.
//!
//! Owns: the packet socket (a classic BPF filter hands it only UDP
//! datagrams to or from the ng port, so RTP costs it nothing), the thread
//! that reads it until [`NgTap::finish`], and the matching of requests to
//! replies by cookie (a retransmission keeps its first sending time; a
//! reply that answers nothing seen is ignored). [`parse`] is pure and
//! unit-tested here.
//!
//! May not: send anything, or watch any network but the namespace it is
//! given (the socket is bound to that namespace's `lo`).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use ::tests::lab::Net;

use crate::rtpengine::Bencode;

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, Linux 4.20): loopback
/// shows every datagram twice, going out and coming in; only the second.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// What one datagram on the ng port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    /// A request to the ng port: its cookie and command.
    Request { cookie: Vec<u8>, command: String },
    /// A reply from the ng port: its cookie.
    Reply { cookie: Vec<u8> },
}

/// An IPv4 packet (as a `SOCK_DGRAM` packet socket delivers it, from the IP
/// header on) carrying a UDP datagram to or from `port`, as an ng request
/// or reply; `None` for anything else.
pub fn parse(packet: &[u8], port: u16) -> Option<Datagram> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet.first()? >> 4 != 4 || *packet.get(9)? != 17 {
        return None;
    }
    let udp = packet.get(ihl..)?;
    let sport = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let payload = udp.get(8..)?;
    let space = payload.iter().position(|&b| b == b' ')?;
    let cookie = payload[..space].to_vec();
    if dport == port {
        let command = Bencode::decode(&payload[space + 1..])
            .ok()
            .and_then(|d| {
                d.get("command")
                    .and_then(Bencode::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "?".to_owned());
        Some(Datagram::Request { cookie, command })
    } else if sport == port {
        Some(Datagram::Reply { cookie })
    } else {
        None
    }
}

/// Request -> reply times seen by one tap.
#[derive(Debug, Default, Clone)]
pub struct Timings {
    /// (command, microseconds from the request's first sending to its
    /// reply), in the order the replies came.
    pub answered: Vec<(String, u64)>,
    /// Requests seen with no reply by the end (cookies).
    pub unanswered: u64,
    /// Requests sent more than once (the same cookie again).
    pub retransmitted: u64,
}

impl Timings {
    /// The sorted times of `command`'s replies, or of every command's for
    /// `None`.
    pub fn micros(&self, command: Option<&str>) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .answered
            .iter()
            .filter(|(c, _)| command.is_none_or(|want| c == want))
            .map(|&(_, us)| us)
            .collect();
        v.sort_unstable();
        v
    }
}

/// A running tap: reads until [`finish`](Self::finish) (or drop).
#[derive(Debug)]
pub struct NgTap {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Timings>>,
}

impl NgTap {
    /// Opens the packet socket in `net` (root) and starts timing the ng
    /// exchanges on `port`.
    pub fn start(net: &Net, port: u16) -> io::Result<NgTap> {
        let open = move || open_socket(port);
        let socket = match net.pid() {
            Some(pid) => ::tests::netns::in_netns_of(pid, open),
            None => open(),
        }?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || read(&socket, port, &stopped));
        Ok(NgTap {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops reading; what was seen.
    pub fn finish(mut self) -> Timings {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for NgTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[allow(unsafe_code)] // setsockopt(2); no safe wrapper for these options in our dependencies
fn set_option<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// The classic BPF filter: IPv4, UDP, first fragment, source or destination
/// port `port`. (A `SOCK_DGRAM` packet socket's filter sees the packet from
/// its IP header.)
fn filter(port: u16) -> [libc::sock_filter; 11] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let port = u32::from(port);
    [
        op(0x30, 0, 0, 9),       // 0: ldb [9]            (protocol)
        op(0x15, 0, 8, 17),      // 1: jeq #17 ? 2 : drop
        op(0x28, 0, 0, 6),       // 2: ldh [6]            (fragment offset)
        op(0x45, 6, 0, 0x1fff),  // 3: jset #0x1fff ? drop : 4
        op(0xb1, 0, 0, 0),       // 4: ldxb 4*([0]&0xf)   (header length)
        op(0x48, 0, 0, 0),       // 5: ldh [x+0]          (source port)
        op(0x15, 2, 0, port),    // 6: jeq #port ? accept : 7
        op(0x48, 0, 0, 2),       // 7: ldh [x+2]          (destination port)
        op(0x15, 0, 1, port),    // 8: jeq #port ? accept : drop
        op(0x06, 0, 0, 0x40000), // 9: accept
        op(0x06, 0, 0, 0),       // 10: drop
    ]
}

#[allow(unsafe_code)] // a packet socket; no safe wrapper in our dependencies
fn open_socket(port: u16) -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::c_int::from(protocol),
        )
    };
    check(raw)?;
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let program = filter(port);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // Before the bind: no unfiltered packet queues up in between.
    set_option(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    set_option(
        &fd,
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    )?;
    set_option(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &1 as &libc::c_int,
    )?;
    set_option(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        &(4 << 20) as &libc::c_int,
    )?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if lo == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = lo as libc::c_int;
    // SAFETY: `addr` is a sockaddr_ll of the size passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// One datagram and its kernel receive time (nanoseconds, realtime clock);
/// `None` on timeout.
#[allow(unsafe_code)] // recvmsg(2) with control messages
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, u64)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` describes live buffers.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    let n = usize::try_from(n).ok()?;
    let mut at = None;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                at = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Some((n, at?))
}

fn read(fd: &OwnedFd, port: u16, stop: &AtomicBool) -> Timings {
    let mut pending: HashMap<Vec<u8>, (String, u64)> = HashMap::new();
    let mut timings = Timings::default();
    let mut buf = vec![0u8; 65_536];
    // A bound on the bookkeeping, not on the run: cookies never answered
    // would otherwise pile up without end.
    const MAX_PENDING: usize = 100_000;
    while !stop.load(Ordering::Relaxed) {
        let Some((n, at)) = receive(fd, &mut buf) else {
            continue;
        };
        match parse(&buf[..n], port) {
            Some(Datagram::Request { cookie, command }) => {
                if pending.contains_key(&cookie) {
                    timings.retransmitted += 1;
                } else if pending.len() < MAX_PENDING {
                    pending.insert(cookie, (command, at));
                }
            }
            Some(Datagram::Reply { cookie }) => {
                if let Some((command, sent)) = pending.remove(&cookie) {
                    let us = Duration::from_nanos(at.saturating_sub(sent)).as_micros();
                    timings
                        .answered
                        .push((command, u64::try_from(us).unwrap_or(u64::MAX)));
                }
            }
            None => {}
        }
    }
    timings.unanswered = pending.len() as u64;
    timings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/UDP packet from `sport` to `dport` carrying `payload`.
    fn packet(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 2]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn requests_and_replies_are_told_apart_by_port_and_keyed_by_cookie() {
        let request = packet(40000, 2223, b"5_1 d7:command5:offere");
        assert_eq!(
            parse(&request, 2223),
            Some(Datagram::Request {
                cookie: b"5_1".to_vec(),
                command: "offer".to_owned()
            })
        );
        let reply = packet(2223, 40000, b"5_1 d6:result2:oke");
        assert_eq!(
            parse(&reply, 2223),
            Some(Datagram::Reply {
                cookie: b"5_1".to_vec()
            })
        );
        // A request whose dictionary does not parse is still timed.
        assert_eq!(
            parse(&packet(40000, 2223, b"7 {json"), 2223),
            Some(Datagram::Request {
                cookie: b"7".to_vec(),
                command: "?".to_owned()
            })
        );
        assert_eq!(parse(&packet(40000, 5060, b"x y"), 2223), None);
        assert_eq!(parse(&packet(40000, 2223, b"nocookie"), 2223), None);
        assert_eq!(parse(&reply[..20], 2223), None);
    }

    #[test]
    fn timings_sort_per_command() {
        let t = Timings {
            answered: vec![
                ("offer".into(), 30),
                ("answer".into(), 10),
                ("offer".into(), 20),
            ],
            ..Timings::default()
        };
        assert_eq!(t.micros(Some("offer")), [20, 30]);
        assert_eq!(t.micros(None), [10, 20, 30]);
    }
}
