//! Types and pure helpers shared by the XDP program (`relay-ebpf`) and the
//! userspace loader (`sbc::media::xdp`).
//!
//! Owns: the byte layout of every BPF map key and value of the media fast
//! path ([`FlowKey`], [`FlowAction`], [`FlowCounters`], the [`stat`] indices),
//! and the Internet checksum arithmetic the program runs ([`csum`]).
//!
//! May not: allocate, panic on any input, or do IO. Everything is `#![no_std]`,
//! `#[repr(C)]` with explicit padding, and free of `Option`, `bool` and enums,
//! so that the kernel and userspace agree on every byte of a map key or value;
//! each type carries a compile-time size assertion. The checksum helpers are
//! pure functions so the host can unit-test exactly what the kernel program
//! runs (RFC 1071 computation, RFC 1624 incremental update, RFC 768 and
//! RFC 8200 §8.1 UDP checksum rules).
//!
//! Byte order: addresses and ports are stored as they appear on the wire
//! (network byte order). Ports are `[u8; 2]` rather than `u16` so that no
//! reader can mistake them for host-order integers; the constructors take
//! `core::net` types and host-order ports.
#![no_std]

pub mod csum;

use core::mem::size_of;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// [`FlowKey::family`] of an IPv4 flow.
pub const FAMILY_V4: u8 = 4;
/// [`FlowKey::family`] of an IPv6 flow.
pub const FAMILY_V6: u8 = 6;

/// [`FlowAction::flags`]: the remote source is latched; forward in the kernel.
/// Without it the program passes the packet to userspace (learning window).
pub const FLAG_LATCHED: u32 = 1;

/// The TTL / hop limit the fast path writes into forwarded packets. The SBC
/// originates the other leg's packets, so (like the userspace relay's socket)
/// it starts a fresh hop count instead of leaking the far side's.
pub const FORWARD_TTL: u8 = 64;

/// Name of the XDP program in the object.
pub const PROGRAM: &str = "sbc_relay";
/// Map `FlowKey -> FlowAction` (hash, written by userspace).
pub const MAP_FLOWS: &str = "SBC_FLOWS";
/// Map `FlowKey -> FlowCounters` (per-CPU hash, written by the program).
pub const MAP_FLOW_COUNTERS: &str = "SBC_FLOW_CNT";
/// Map `u32 -> u64` of [`stat`] counters (per-CPU array).
pub const MAP_STATS: &str = "SBC_STATS";
/// Device map `ifindex -> ifindex` of interfaces the program may redirect to.
pub const MAP_EGRESS: &str = "SBC_EGRESS";
/// Capacity of the flow maps (four flows per call: RTP and RTCP each way).
pub const MAX_FLOWS: u32 = 65_536;
/// Capacity of the egress device map.
pub const MAX_EGRESS: u32 = 64;

/// Stores an IP address in the 16-byte wire form used by the map types: IPv6
/// as is, IPv4 in the first four bytes with the rest zero.
#[must_use]
pub const fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [o[0], o[1], o[2], o[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`addr_bytes`] for a given family byte. Any family other
/// than [`FAMILY_V4`] reads as IPv6.
#[must_use]
pub fn addr_from_bytes(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

/// The family byte of an address.
#[must_use]
pub const fn family_of(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

/// Key of the flow table: the anchored local endpoint (the SBC address and
/// port a packet is sent to). One anchored port serves one remote, so the
/// expected source lives in the value, where a mismatch can be counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Destination address, see [`addr_bytes`].
    pub addr: [u8; 16],
    /// Destination UDP port, network byte order.
    pub port: [u8; 2],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Always zero: hashed as part of the key.
    pub pad: u8,
}
const _: () = assert!(size_of::<FlowKey>() == 20);

impl FlowKey {
    /// The key of the anchored endpoint `addr:port` (host-order port).
    #[must_use]
    pub const fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            addr: addr_bytes(addr),
            port: port.to_be_bytes(),
            family: family_of(addr),
            pad: 0,
        }
    }

    /// The anchored address.
    #[must_use]
    pub fn ip(&self) -> IpAddr {
        addr_from_bytes(self.family, self.addr)
    }

    /// The anchored port, host order.
    #[must_use]
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// Value of the flow table: what to accept and how to rewrite it.
///
/// A packet to the key's endpoint is forwarded only if [`FLAG_LATCHED`] is set
/// and its source is exactly `remote_addr:remote_port` (RTPBleed protection);
/// it then leaves as `new_src -> new_dst`. All addresses are of the key's
/// family: the fast path does not translate between IPv4 and IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowAction {
    /// The latched remote source address, see [`addr_bytes`].
    pub remote_addr: [u8; 16],
    /// The SBC's address on the other leg: the new source address.
    pub new_src_addr: [u8; 16],
    /// The far peer on the other leg: the new destination address.
    pub new_dst_addr: [u8; 16],
    /// The latched remote source port, network byte order.
    pub remote_port: [u8; 2],
    /// The SBC's anchored port on the other leg, network byte order.
    pub new_src_port: [u8; 2],
    /// The far peer's port, network byte order.
    pub new_dst_port: [u8; 2],
    /// Always zero.
    pub pad: [u8; 2],
    /// Interface the packet must leave by (0: whatever the route says). If the
    /// route lookup disagrees the packet goes to userspace, which knows better.
    pub egress_ifindex: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<FlowAction>() == 64);

/// One endpoint (address and host-order port), the constructor's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address.
    pub ip: IpAddr,
    /// Port, host order.
    pub port: u16,
}

impl FlowAction {
    /// A latched action: accept only from `remote`, forward as `src -> dst`.
    #[must_use]
    pub const fn latched(
        remote: Endpoint,
        src: Endpoint,
        dst: Endpoint,
        egress_ifindex: u32,
    ) -> Self {
        Self {
            remote_addr: addr_bytes(remote.ip),
            new_src_addr: addr_bytes(src.ip),
            new_dst_addr: addr_bytes(dst.ip),
            remote_port: remote.port.to_be_bytes(),
            new_src_port: src.port.to_be_bytes(),
            new_dst_port: dst.port.to_be_bytes(),
            pad: [0; 2],
            egress_ifindex,
            flags: FLAG_LATCHED,
        }
    }
}

/// Per-flow counters (a per-CPU hash keyed by [`FlowKey`]; userspace sums the
/// CPUs and takes the latest `last_seen_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowCounters {
    /// Packets forwarded by the fast path.
    pub packets: u64,
    /// Bytes (IP header onwards) forwarded by the fast path.
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last forwarded packet.
    pub last_seen_ns: u64,
    /// Packets dropped because their source was not the latched remote.
    pub rejected: u64,
}
const _: () = assert!(size_of::<FlowCounters>() == 32);

impl FlowCounters {
    /// Adds another CPU's counters into this one.
    #[must_use]
    pub const fn merge(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
            last_seen_ns: if other.last_seen_ns > self.last_seen_ns {
                other.last_seen_ns
            } else {
                self.last_seen_ns
            },
            rejected: self.rejected.wrapping_add(other.rejected),
        }
    }
}

/// Indices of the global verdict counters (a per-CPU array of `u64`).
pub mod stat {
    /// Not IPv4/IPv6 (or a VLAN-tagged frame): passed.
    pub const PASS_NOT_IP: u32 = 0;
    /// Not UDP: passed.
    pub const PASS_NOT_UDP: u32 = 1;
    /// Shorter than its headers claim: passed (the kernel drops it properly).
    pub const PASS_TRUNCATED: u32 = 2;
    /// IPv4 with options (IHL != 5): passed.
    pub const PASS_IP_OPTIONS: u32 = 3;
    /// An IPv4 fragment: passed.
    pub const PASS_FRAGMENT: u32 = 4;
    /// IPv6 with an extension header (including fragments): passed.
    pub const PASS_IPV6_EXT: u32 = 5;
    /// No flow for the destination: passed.
    pub const PASS_NO_FLOW: u32 = 6;
    /// Flow known but not latched yet: passed to the learning relay.
    pub const PASS_UNLATCHED: u32 = 7;
    /// Route lookup failed or no neighbour entry: passed.
    pub const PASS_NO_ROUTE: u32 = 8;
    /// The route leaves by another interface than the flow allows: passed.
    pub const PASS_EGRESS_MISMATCH: u32 = 9;
    /// IPv6 UDP with a zero checksum (invalid, RFC 8200 §8.1): passed.
    pub const PASS_BAD_CHECKSUM: u32 = 10;
    /// Source differs from the latched remote: dropped (RTPBleed).
    pub const DROP_WRONG_SOURCE: u32 = 11;
    /// Forwarded out of the receiving interface.
    pub const TX: u32 = 12;
    /// Forwarded to another interface through the device map.
    pub const REDIRECT: u32 = 13;
    /// Dropped: the egress interface left the device map between the check
    /// and the redirect (a race with userspace; the packet was rewritten).
    pub const DROP_REDIRECT_FAILED: u32 = 14;
    /// RTCP from the latched source: passed to userspace, which rewrites its
    /// SDES (topology hiding).
    pub const PASS_RTCP: u32 = 15;
    /// Number of counters (the array's size).
    pub const COUNT: u32 = 16;

    /// Metric label of each counter, indexed by its constant.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
        "pass_not_udp",
        "pass_truncated",
        "pass_ip_options",
        "pass_fragment",
        "pass_ipv6_ext",
        "pass_no_flow",
        "pass_unlatched",
        "pass_no_route",
        "pass_egress_mismatch",
        "pass_bad_checksum",
        "drop_wrong_source",
        "tx",
        "redirect",
        "drop_redirect_failed",
        "pass_rtcp",
    ];
}

// SAFETY: all three are `#[repr(C)]`, made only of integers and byte arrays,
// with every padding byte an explicit field, so any bit pattern is valid and
// no byte is uninitialised: exactly what `aya::Pod` requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowAction {}
    unsafe impl aya::Pod for super::FlowCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_both_families() {
        let v4 = FlowKey::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 30_000);
        assert_eq!(v4.addr[..4], [192, 0, 2, 1]);
        assert_eq!(v4.addr[4..], [0; 12]);
        assert_eq!(v4.port, [0x75, 0x30]);
        assert_eq!(
            (v4.ip(), v4.port()),
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 30_000)
        );
        let v6: IpAddr = "2001:db8::5".parse().expect("literal");
        let k6 = FlowKey::new(v6, 40_002);
        assert_eq!((k6.family, k6.ip(), k6.port()), (FAMILY_V6, v6, 40_002));
    }

    #[test]
    fn counters_merge_sums_and_keeps_latest() {
        let a = FlowCounters {
            packets: 2,
            bytes: 100,
            last_seen_ns: 7,
            rejected: 1,
        };
        let b = FlowCounters {
            packets: 3,
            bytes: 50,
            last_seen_ns: 5,
            rejected: 0,
        };
        let m = a.merge(b);
        assert_eq!(
            m,
            FlowCounters {
                packets: 5,
                bytes: 150,
                last_seen_ns: 7,
                rejected: 1
            }
        );
        assert_eq!(b.merge(a).last_seen_ns, 7);
    }

    #[test]
    fn stat_names_are_unique() {
        for (i, a) in stat::NAMES.iter().enumerate() {
            for b in &stat::NAMES[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
