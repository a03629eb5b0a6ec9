//! The XDP program of the media fast path.
//!
//! For UDP over IPv4 or IPv6 to an anchored (address, port) whose flow
//! userspace has latched, it checks the source against the latched remote
//! (RTPBleed: a mismatch is dropped and counted), resolves the next hop with
//! `bpf_fib_lookup`, rewrites MACs, addresses, ports and TTL/hop limit, fixes
//! the IPv4 header and UDP checksums incrementally (RFC 1624), and forwards
//! with `XDP_TX` (same interface) or `XDP_REDIRECT` through the egress device
//! map. Everything else is `XDP_PASS`ed, untouched, to the kernel and so to the
//! userspace relay: unknown or unlatched flows, non-UDP, IPv4 options or
//! fragments, IPv6 extension headers, truncated packets, no route or no
//! neighbour. Each packet bumps exactly one verdict counter (`SBC_STATS`).
//!
//! Owns nothing but the per-packet decision; the maps' layouts are in
//! `relay-common`, which the host tests. The packet is modified only after
//! every check has passed, so a `XDP_PASS` always hands over the original.
//!
//! The route lookup is an input lookup on the receiving interface, so the
//! kernel requires IP forwarding enabled on it (`net.ipv4.conf.IF.forwarding`,
//! `net.ipv6.conf.IF.forwarding`); without it every flow is passed
//! (`pass_no_route`) and userspace relays it.
//!
//! The object also carries two benchmark programs the daemon never loads:
//! `sbc_bounce` (redirect every frame unparsed: the lab's physical limit) and
//! `sbc_sink` (count and drop: the benchmark's receiver).
//!
//! Built only for `bpfel-unknown-none` by `sbc/build.rs`.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_ktime_get_ns};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, DevMap, DevMapHash, HashMap, PerCpuArray, PerCpuHashMap};
use aya_ebpf::programs::XdpContext;
use relay_common::{
    FAMILY_V4, FAMILY_V6, FLAG_LATCHED, FORWARD_TTL, FlowAction, FlowCounters, FlowKey, MAX_EGRESS,
    MAX_FLOWS, csum, stat,
};

#[map(name = "SBC_FLOWS")]
static FLOWS: HashMap<FlowKey, FlowAction> = HashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "SBC_FLOW_CNT")]
static FLOW_COUNTERS: PerCpuHashMap<FlowKey, FlowCounters> =
    PerCpuHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "SBC_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[map(name = "SBC_EGRESS")]
static EGRESS: DevMapHash = DevMapHash::with_max_entries(MAX_EGRESS, 0);

// bpf_fib_lookup and bpf_redirect_map are GPL-only helpers: the kernel loads
// the program only with a GPL-compatible license string. "Dual MIT/GPL" is
// one (the crate is MIT OR GPL-2.0).
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

const ETH_HLEN: usize = 14;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const IPPROTO_UDP: u8 = 17;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// IPv6 next-header values that are extension headers (RFC 8200 §4, and the
/// IANA "IPv6 Extension Header Types" registry).
const IPV6_EXT: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    proto: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

#[repr(C)]
struct UdpHdr {
    src: [u8; 2],
    dst: [u8; 2],
    len: [u8; 2],
    check: [u8; 2],
}

/// The decision for one packet: the XDP action and the counter it bumps.
struct Verdict {
    action: u32,
    stat: u32,
}

const fn pass(stat: u32) -> Verdict {
    Verdict {
        action: xdp_action::XDP_PASS,
        stat,
    }
}

/// What the header checks of either family extract: the flow key (the
/// destination), the source to compare with the latched remote, and the
/// length from the IP header on (what the counters and the MTU check use).
struct Parsed {
    key: FlowKey,
    src: [u8; 16],
    sport: [u8; 2],
    l3_len: u16,
}

#[xdp]
pub fn sbc_relay(ctx: XdpContext) -> u32 {
    let verdict = relay(&ctx);
    if let Some(counter) = STATS.get_ptr_mut(verdict.stat) {
        // SAFETY: a per-CPU array slot, valid for this CPU while we run.
        unsafe { *counter += 1 };
    }
    verdict.action
}

// ---------------------------------------------------------------------------
// Benchmark baselines (benches/benches/xdp.rs), not part of the relay: the
// daemon never loads them.
// ---------------------------------------------------------------------------

/// The one egress device of `sbc_bounce` (index 0).
#[map(name = "SBC_BOUNCE_DEV")]
static BOUNCE_DEV: DevMap = DevMap::with_max_entries(1, 0);

/// The MACs `sbc_bounce` writes: destination (0..6), then source (6..12).
#[map(name = "SBC_BOUNCE_MAC")]
static BOUNCE_MAC: Array<[u8; 12]> = Array::with_max_entries(1, 0);

/// The physical limit of a lab: every frame is redirected, unparsed, out of
/// one device with its MACs set, the same redirect the relay's forwarded
/// packets take, without the parse, lookup, route and rewrite.
#[xdp]
pub fn sbc_bounce(ctx: XdpContext) -> u32 {
    let (Some(eth), Some(macs)) = (ptr_at::<EthHdr>(&ctx, 0), BOUNCE_MAC.get(0)) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    unsafe {
        (*eth).dst = [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]];
        (*eth).src = [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]];
    }
    BOUNCE_DEV.redirect(0, 0).unwrap_or(xdp_action::XDP_DROP)
}

/// Frames `sbc_sink` saw (index 0).
#[map(name = "SBC_SINK_CNT")]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The benchmark's receiver: counts and drops every frame at the receiving
/// interface, so the receiver's own stack costs nothing the benchmark
/// measures (and native XDP on veth delivers redirected frames only to a
/// peer that runs a program: DESIGN "XDP on veth").
#[xdp]
pub fn sbc_sink(_ctx: XdpContext) -> u32 {
    if let Some(count) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: a per-CPU array slot, valid for this CPU while we run.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}

/// A bounds-checked pointer to a `T` at `offset` into the packet (aya book).
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
fn relay(ctx: &XdpContext) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(stat::PASS_TRUNCATED);
    };
    // SAFETY: ptr_at checked the header lies inside the packet.
    let proto = unsafe { (*eth).proto };
    let parsed = if proto == ETH_P_IP {
        parse_v4(ctx)
    } else if proto == ETH_P_IPV6 {
        parse_v6(ctx)
    } else {
        Err(pass(stat::PASS_NOT_IP))
    };
    let p = match parsed {
        Ok(p) => p,
        Err(verdict) => return verdict,
    };

    // SAFETY: the value stays valid for this run (RCU); userspace replaces
    // values whole, so a concurrent update is seen either before or after.
    let Some(action) = (unsafe { FLOWS.get(p.key) }) else {
        return pass(stat::PASS_NO_FLOW);
    };
    if action.flags & FLAG_LATCHED == 0 {
        return pass(stat::PASS_UNLATCHED);
    }
    let from_remote = action.remote_addr == p.src && action.remote_port == p.sport;
    if !from_remote {
        count_flow(&p.key, 0, false);
        return Verdict {
            action: xdp_action::XDP_DROP,
            stat: stat::DROP_WRONG_SOURCE,
        };
    }
    // RTCP (second octet 192-223, RFC 5761 §4) goes to userspace, which
    // hides its SDES items. Its cost there: RFC 3550 §6.2 sends RTCP every
    // 5 s on average per sender (the minimum interval, randomised 0.5-1.5x;
    // voice's 5% bandwidth share never asks for more), so a two-way stream
    // brings 2 x 0.2 = 0.4 RTCP packets/s against 2 x 50 = 100 RTP packets/s
    // (20 ms ptime): 0.4% of its packets. 10,000 streams give 4,000 RTCP
    // packets/s to the relay thread (its bench carries 50,000 pps on one
    // thread), while 1,000,000 RTP packets/s stay in the kernel.
    let l4 = if p.key.family == FAMILY_V4 {
        ETH_HLEN + size_of::<Ipv4Hdr>() + size_of::<UdpHdr>()
    } else {
        ETH_HLEN + size_of::<Ipv6Hdr>() + size_of::<UdpHdr>()
    };
    if let Some(head) = ptr_at::<[u8; 2]>(ctx, l4) {
        // SAFETY: ptr_at checked both octets lie inside the packet.
        let (first, second) = unsafe { ((*head)[0], (*head)[1]) };
        if first >> 6 == 2 && (192..=223).contains(&second) {
            return pass(stat::PASS_RTCP);
        }
    }

    // SAFETY: bpf_fib_lookup is plain old data; all-zero is its "unset" state.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    if p.key.family == FAMILY_V4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(narrow(&action.new_src_addr));
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(narrow(&action.new_dst_addr));
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = words(&action.new_src_addr);
        fib.__bindgen_anon_4.ipv6_dst = words(&action.new_dst_addr);
    }
    fib.l4_protocol = IPPROTO_UDP;
    fib.sport = u16::from_ne_bytes(action.new_src_port);
    fib.dport = u16::from_ne_bytes(action.new_dst_port);
    fib.__bindgen_anon_1.tot_len = p.l3_len;
    let ingress = ctx.ingress_ifindex() as u32;
    fib.ifindex = ingress;
    // SAFETY: fib is a valid, initialised bpf_fib_lookup of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx.cast(), &mut fib, size_of::<FibParams>() as i32, 0) };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return pass(stat::PASS_NO_ROUTE);
    }
    let egress = fib.ifindex;
    if action.egress_ifindex != 0 && action.egress_ifindex != egress {
        return pass(stat::PASS_EGRESS_MISMATCH);
    }
    if egress != ingress && EGRESS.get(egress).is_none() {
        return pass(stat::PASS_EGRESS_MISMATCH);
    }

    // Every check passed: from here on the packet is modified.
    let rewritten = if p.key.family == FAMILY_V4 {
        rewrite_v4(ctx, action)
    } else {
        rewrite_v6(ctx, action)
    };
    if rewritten.is_none() {
        // Unreachable (the parse checked the same bounds); keeps the verifier
        // and the reader sure the packet was not half rewritten.
        return Verdict {
            action: xdp_action::XDP_ABORTED,
            stat: stat::PASS_TRUNCATED,
        };
    }
    // SAFETY: eth was bounds-checked above.
    unsafe {
        (*eth).dst = fib.dmac;
        (*eth).src = fib.smac;
    }
    count_flow(&p.key, u64::from(p.l3_len), true);
    if egress == ingress {
        return Verdict {
            action: xdp_action::XDP_TX,
            stat: stat::TX,
        };
    }
    match EGRESS.redirect(egress, 0) {
        Ok(action) => Verdict {
            action,
            stat: stat::REDIRECT,
        },
        // Only if userspace removed the interface since the check above; the
        // packet is already rewritten, so it must not reach the stack.
        Err(_) => Verdict {
            action: xdp_action::XDP_DROP,
            stat: stat::DROP_REDIRECT_FAILED,
        },
    }
}

/// Counts a forwarded (`bytes` long) or a rejected packet of a flow.
#[inline(always)]
fn count_flow(key: &FlowKey, bytes: u64, forwarded: bool) {
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (packets, rejected) = if forwarded { (1, 0) } else { (0, 1) };
    match FLOW_COUNTERS.get_ptr_mut(key) {
        Some(c) => {
            // SAFETY: a per-CPU value, written only by this CPU.
            unsafe {
                (*c).packets += packets;
                (*c).bytes += bytes;
                (*c).rejected += rejected;
                if forwarded {
                    (*c).last_seen_ns = now;
                }
            }
        }
        None => {
            let last_seen_ns = if forwarded { now } else { 0 };
            let first = FlowCounters {
                packets,
                bytes,
                last_seen_ns,
                rejected,
            };
            // A full map only loses counts, never packets.
            let _ = FLOW_COUNTERS.insert(key, first, 0);
        }
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext) -> Result<Parsed, Verdict> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN).ok_or(pass(stat::PASS_TRUNCATED))?;
    // SAFETY (all derefs of ip and udp below): bounds-checked by ptr_at.
    let (version_ihl, frag, proto, tot_len) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).frag,
            (*ip).proto,
            u16::from_be_bytes((*ip).tot_len),
        )
    };
    if version_ihl >> 4 != 4 {
        return Err(pass(stat::PASS_NOT_IP));
    }
    if version_ihl != 0x45 {
        return Err(pass(stat::PASS_IP_OPTIONS));
    }
    // More-fragments flag or a fragment offset.
    if u16::from_be_bytes(frag) & 0x3fff != 0 {
        return Err(pass(stat::PASS_FRAGMENT));
    }
    if proto != IPPROTO_UDP {
        return Err(pass(stat::PASS_NOT_UDP));
    }
    let udp =
        ptr_at::<UdpHdr>(ctx, ETH_HLEN + size_of::<Ipv4Hdr>()).ok_or(pass(stat::PASS_TRUNCATED))?;
    let udp_len = unsafe { u16::from_be_bytes((*udp).len) } as usize;
    let frame_len = ctx.data_end() - ctx.data();
    if udp_len < size_of::<UdpHdr>()
        || (tot_len as usize) < size_of::<Ipv4Hdr>() + udp_len
        || frame_len < ETH_HLEN + tot_len as usize
    {
        return Err(pass(stat::PASS_TRUNCATED));
    }
    unsafe {
        Ok(Parsed {
            key: FlowKey {
                addr: widen((*ip).dst),
                port: (*udp).dst,
                family: FAMILY_V4,
                pad: 0,
            },
            src: widen((*ip).src),
            sport: (*udp).src,
            l3_len: tot_len,
        })
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext) -> Result<Parsed, Verdict> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN).ok_or(pass(stat::PASS_TRUNCATED))?;
    // SAFETY (all derefs of ip and udp below): bounds-checked by ptr_at.
    let (version, next, payload_len) = unsafe {
        (
            (*ip).version_class_flow[0] >> 4,
            (*ip).next,
            u16::from_be_bytes((*ip).payload_len),
        )
    };
    if version != 6 {
        return Err(pass(stat::PASS_NOT_IP));
    }
    if next != IPPROTO_UDP {
        let mut i = 0;
        while i < IPV6_EXT.len() {
            if IPV6_EXT[i] == next {
                return Err(pass(stat::PASS_IPV6_EXT));
            }
            i += 1;
        }
        return Err(pass(stat::PASS_NOT_UDP));
    }
    let udp =
        ptr_at::<UdpHdr>(ctx, ETH_HLEN + size_of::<Ipv6Hdr>()).ok_or(pass(stat::PASS_TRUNCATED))?;
    let (udp_len, udp_check) = unsafe {
        (
            u16::from_be_bytes((*udp).len),
            u16::from_be_bytes((*udp).check),
        )
    };
    let frame_len = ctx.data_end() - ctx.data();
    if (udp_len as usize) < size_of::<UdpHdr>()
        || payload_len < udp_len
        || frame_len < ETH_HLEN + size_of::<Ipv6Hdr>() + payload_len as usize
    {
        return Err(pass(stat::PASS_TRUNCATED));
    }
    // Mandatory over IPv6 (RFC 8200 §8.1); the kernel drops such packets.
    if udp_check == 0 {
        return Err(pass(stat::PASS_BAD_CHECKSUM));
    }
    unsafe {
        Ok(Parsed {
            key: FlowKey {
                addr: (*ip).dst,
                port: (*udp).dst,
                family: FAMILY_V6,
                pad: 0,
            },
            src: (*ip).src,
            sport: (*udp).src,
            l3_len: payload_len.saturating_add(size_of::<Ipv6Hdr>() as u16),
        })
    }
}

/// Rewrites an IPv4/UDP packet parse_v4 accepted: addresses, ports, TTL and
/// both checksums. `None` only if the headers are not where parse_v4 saw them.
#[inline(always)]
fn rewrite_v4(ctx: &XdpContext, action: &FlowAction) -> Option<()> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
    let udp = ptr_at::<UdpHdr>(ctx, ETH_HLEN + size_of::<Ipv4Hdr>())?;
    let new_src = narrow(&action.new_src_addr);
    let new_dst = narrow(&action.new_dst_addr);
    // SAFETY: both headers bounds-checked just above.
    unsafe {
        let ip_check = u16::from_be_bytes((*ip).check);
        let mut c = csum::replace(ip_check, &(*ip).src, &new_src);
        c = csum::replace(c, &(*ip).dst, &new_dst);
        c = csum::replace(c, &[(*ip).ttl, (*ip).proto], &[FORWARD_TTL, (*ip).proto]);
        (*ip).check = c.to_be_bytes();

        let udp_check = u16::from_be_bytes((*udp).check);
        // Zero over IPv4: the sender sent no checksum; keep it that way.
        if udp_check != 0 {
            let mut c = csum::replace(udp_check, &(*ip).src, &new_src);
            c = csum::replace(c, &(*ip).dst, &new_dst);
            c = csum::replace(c, &(*udp).src, &action.new_src_port);
            c = csum::replace(c, &(*udp).dst, &action.new_dst_port);
            (*udp).check = csum::udp_nonzero(c).to_be_bytes();
        }
        (*ip).src = new_src;
        (*ip).dst = new_dst;
        (*ip).ttl = FORWARD_TTL;
        (*udp).src = action.new_src_port;
        (*udp).dst = action.new_dst_port;
    }
    Some(())
}

/// Rewrites an IPv6/UDP packet parse_v6 accepted: addresses, ports, hop limit
/// and the UDP checksum (IPv6 has no header checksum; the hop limit is not in
/// the pseudo-header).
#[inline(always)]
fn rewrite_v6(ctx: &XdpContext, action: &FlowAction) -> Option<()> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    let udp = ptr_at::<UdpHdr>(ctx, ETH_HLEN + size_of::<Ipv6Hdr>())?;
    // SAFETY: both headers bounds-checked just above.
    unsafe {
        let mut c = csum::replace(
            u16::from_be_bytes((*udp).check),
            &(*ip).src,
            &action.new_src_addr,
        );
        c = csum::replace(c, &(*ip).dst, &action.new_dst_addr);
        c = csum::replace(c, &(*udp).src, &action.new_src_port);
        c = csum::replace(c, &(*udp).dst, &action.new_dst_port);
        (*udp).check = csum::udp_nonzero(c).to_be_bytes();
        (*ip).src = action.new_src_addr;
        (*ip).dst = action.new_dst_addr;
        (*ip).hop_limit = FORWARD_TTL;
        (*udp).src = action.new_src_port;
        (*udp).dst = action.new_dst_port;
    }
    Some(())
}

/// An IPv4 address in the 16-byte map form.
#[inline(always)]
const fn widen(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// The IPv4 address of the 16-byte map form.
#[inline(always)]
const fn narrow(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// An IPv6 address as the `__u32[4]` (network order words) of bpf_fib_lookup.
#[inline(always)]
const fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // No code path panics (the verifier would reject this loop otherwise).
    loop {}
}
