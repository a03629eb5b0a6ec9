//! Kernel receive timestamps on UDP sockets (`SO_TIMESTAMPNS`, socket(7)):
//! when a datagram reached the host, not when a thread got round to reading
//! it. The difference is the time it waited in the socket's queue and for
//! its reader to be scheduled, which is most of a loaded daemon's latency
//! and which no clock read in user space can see.
//!
//! The listeners read every datagram with [`recv_from`], so each
//! [`Inbound`](super::Inbound) carries its arrival; the load benchmarks read
//! their own sockets with it too, which takes their own wake-ups out of what
//! they measure.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

/// Asks the kernel to stamp every datagram this socket receives with the
/// wall-clock time it arrived (`SO_TIMESTAMPNS`). Costs one clock read per
/// packet received on the host, in the kernel.
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    set_flag(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Turns on a boolean socket option that socket2 has no setter for.
#[allow(unsafe_code)] // one setsockopt of a c_int
pub(super) fn set_flag(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, and a c_int option of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram read by [`recv_from`].
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    /// Its length (at most the buffer's: a longer one is cut).
    pub len: usize,
    /// Who sent it.
    pub from: SocketAddr,
    /// When it reached the host; `None` when the socket does not have
    /// [`enable`] on (or the kernel gave no stamp).
    pub stamp: Option<SystemTime>,
}

/// `recv_from` that also returns the datagram's kernel receive timestamp.
/// Non-blocking or not as the socket is; its errors are `recvmsg`'s.
pub fn recv_from(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut stamp = None;
    let (len, from) = recv_msg(socket, buf, 0, |level, kind, data| {
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            stamp = read_struct::<libc::timespec>(data).and_then(|at| wall_time(&at));
        }
    })?;
    let from = from.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a datagram without a source address",
        )
    })?;
    Ok(Datagram { len, from, stamp })
}

/// One `recvmsg(2)` into `buf` with `flags`: how many bytes it stored (a
/// longer datagram is cut to the buffer) and the address the kernel gave.
/// Each control message it came with goes to `each(level, type, data)`.
#[allow(unsafe_code)] // recvmsg with a control buffer: no safe wrapper in std or socket2
pub(super) fn recv_msg(
    socket: &impl AsRawFd,
    buf: &mut [u8],
    flags: libc::c_int,
    mut each: impl FnMut(libc::c_int, libc::c_int, &[u8]),
) -> io::Result<(usize, Option<SocketAddr>)> {
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // Room for a few control messages, aligned as cmsghdr wants.
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at live buffers of the lengths it states.
    let rc = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: walking the control messages recvmsg wrote with libc's own
    // macros, which stay within `msg_controllen`; each one's data is handed
    // on as the bytes its `cmsg_len` covers, within the control buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let header = unsafe { &*cmsg };
        let head = unsafe { libc::CMSG_LEN(0) } as usize;
        let len = (header.cmsg_len as usize).saturating_sub(head);
        let data = unsafe { std::slice::from_raw_parts(libc::CMSG_DATA(cmsg), len) };
        each(header.cmsg_level, header.cmsg_type, data);
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let len = usize::try_from(rc).unwrap_or(0).min(buf.len());
    Ok((len, socket_addr(&name)))
}

/// The plain C struct a control message's `data` holds, when it is long
/// enough for one.
#[allow(unsafe_code)] // an unaligned read of a C struct from bytes the kernel wrote
pub(super) fn read_struct<T: Copy>(data: &[u8]) -> Option<T> {
    // SAFETY: `data` holds at least size_of::<T>() bytes, read unaligned;
    // the callers name C structs of plain integers, valid for any bits.
    (data.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// A kernel timespec as a `SystemTime` (`None` before the epoch or out of
/// range).
fn wall_time(at: &libc::timespec) -> Option<SystemTime> {
    let secs = u64::try_from(at.tv_sec).ok()?;
    let nanos = u32::try_from(at.tv_nsec)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The longest a stamp may lie in the past and still be believed: a
/// datagram does not wait that long in a socket queue, so an older stamp
/// means the wall clock was stepped forward since.
const BELIEVABLE: Duration = Duration::from_secs(60);

/// The monotonic instant a datagram stamped `stamp` arrived, given the two
/// clocks read together now (`now`, `wall`). A stamp in the future or older
/// than a minute (the wall clock was stepped between the two reads) gives
/// `now`: the arrival is then taken as the read, as without a stamp.
pub fn arrival(stamp: Option<SystemTime>, now: Instant, wall: SystemTime) -> Instant {
    stamp
        .and_then(|stamp| wall.duration_since(stamp).ok())
        .filter(|waited| *waited <= BELIEVABLE)
        .and_then(|waited| now.checked_sub(waited))
        .unwrap_or(now)
}

/// The address in a `sockaddr_storage` the kernel filled.
#[allow(unsafe_code)] // reading the sockaddr variant its family names
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in, which fits.
            let sin: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6, which fits.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a test of the clocks themselves
    fn a_datagram_carries_the_time_it_reached_the_host_not_the_time_it_was_read() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 64];

        // Without the option: the datagram, its source, no stamp.
        sender
            .send_to(b"first", receiver.local_addr().unwrap())
            .unwrap();
        let got = recv_from(&receiver, &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"first");
        assert_eq!(got.from, sender.local_addr().unwrap());
        assert!(got.stamp.is_none());

        // With it: stamped when sent, however late it is read. (The kernel
        // stamps on arrival once a work item has switched timestamping on
        // after the first socket asked for it, moments later; until then it
        // stamps datagrams when they are read, so a few tries may be
        // needed.)
        enable(&receiver).unwrap();
        let mut tries = 0;
        let (got, before, after) = loop {
            let before = SystemTime::now();
            sender
                .send_to(b"second", receiver.local_addr().unwrap())
                .unwrap();
            let after = SystemTime::now();
            std::thread::sleep(Duration::from_millis(50));
            let got = recv_from(&receiver, &mut buf).unwrap();
            assert_eq!(&buf[..got.len], b"second");
            let stamp = got.stamp.expect("a stamped datagram");
            tries += 1;
            if stamp <= after || tries == 20 {
                break (got, before, after);
            }
        };
        let stamp = got.stamp.expect("a stamped datagram");
        assert!(
            stamp >= before && stamp <= after,
            "{stamp:?} not within the send ({before:?} to {after:?}), {tries} tries"
        );
        let (now, wall) = (Instant::now(), SystemTime::now());
        let waited = now.duration_since(arrival(got.stamp, now, wall));
        assert!(waited >= Duration::from_millis(50), "waited {waited:?}");

        // A longer datagram is cut to the buffer.
        sender
            .send_to(&[7u8; 100], receiver.local_addr().unwrap())
            .unwrap();
        assert_eq!(recv_from(&receiver, &mut buf).unwrap().len, 64);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // any instant will do
    fn a_stamp_the_wall_clock_contradicts_counts_as_read_now() {
        let now = Instant::now() + Duration::from_secs(3600);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ms = Duration::from_millis;
        assert_eq!(arrival(Some(wall - ms(3)), now, wall), now - ms(3));
        assert_eq!(arrival(None, now, wall), now);
        // In the future (the clock stepped back), or too old (stepped on).
        assert_eq!(arrival(Some(wall + ms(3)), now, wall), now);
        assert_eq!(arrival(Some(wall - BELIEVABLE - ms(1)), now, wall), now);
        assert_eq!(
            arrival(Some(wall - BELIEVABLE), now, wall),
            now - BELIEVABLE
        );
    }
}
