//! The XDP fast path in the kernel: `BPF_PROG_TEST_RUN` of the real program on
//! crafted packets (IPv4 and IPv6 hits checked against from-scratch
//! checksums, misses, RTPBleed drops, truncations, non-UDP, options,
//! fragments, extension headers, counters), map pinning across a reload, and
//! a namespace smoke test with real veth traffic.
//!
//! These need root (BPF, netns). Without it they skip with a message, unless
//! `CI=true` or `SBC_REQUIRE_PRIVILEGED=1`, where they fail: the fast path is
//! required there. Every test works in network namespaces it creates: the
//! `BPF_PROG_TEST_RUN` ones in an anonymous namespace of their own thread
//! (it dies with the thread), the smoke test in named ones a guard deletes.
//! Traffic goes only to TEST-NET addresses inside those namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;
use tests::netns::in_netns;

use relay_common::{Endpoint, FlowAction, FlowKey, csum, stat};
use sbc::media::xdp::{self, ModePolicy, XdpConfig, XdpMode, XdpRelay};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

// ---------------------------------------------------------------------------------------------
// Privileges and namespaces
// ---------------------------------------------------------------------------------------------

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SBC_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Whether this test can run; panics instead of skipping where it is required.
fn can_run(test: &str) -> bool {
    let why = if !xdp::BUILT_IN {
        Some(format!(
            "XDP object not built in: {}",
            xdp::not_built_in_reason().unwrap_or("?")
        ))
    } else if !is_root() {
        Some("not root (BPF and network namespaces need it)".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if required() => {
            panic!("{test}: required (CI / SBC_REQUIRE_PRIVILEGED) but {why}")
        }
        Some(why) => {
            eprintln!("{test}: SKIPPED: {why}");
            false
        }
    }
}

#[allow(unsafe_code)] // one libc call
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `body` on a new thread moved into a new, empty network namespace
/// that dies with the thread; a panic in `body` fails the test.
fn in_fresh_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    #[allow(unsafe_code)] // unshare(2) of the calling thread only
    fn unshare_net() {
        // SAFETY: plain syscall; affects only this (fresh) thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
    }
    std::thread::spawn(move || {
        unshare_net();
        body()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs a command line (split on whitespace; in the calling thread's
/// namespaces), panicking with its output if it fails; returns stdout.
fn sh(command: &str) -> String {
    let mut args = command.split_whitespace();
    let program = args.next().expect("a command");
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    assert!(
        out.status.success(),
        "{command} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an `ip link show` until it shows no XDP program, at most 2 s, and
/// returns its last output. The link goes away when its last file reference
/// does, and a child forked meanwhile by a parallel test holds copies of our
/// descriptors until it execs: a short, bounded wait.
fn eventually_detached(show: &str) -> String {
    let mut link = sh(show);
    for _ in 0..40 {
        if !link.contains("xdp") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        link = sh(show);
    }
    link
}

fn sysctl(path: &str, value: &str) {
    std::fs::write(format!("/proc/sys/{path}"), value)
        .unwrap_or_else(|e| panic!("writing {value} to /proc/sys/{path}: {e}"));
}

fn ifindex(name: &str) -> u32 {
    let json = sh(&format!("ip -j link show dev {name}"));
    let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output is JSON");
    v[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .expect("ifindex in ip -j output")
}

// ---------------------------------------------------------------------------------------------
// The BPF_PROG_TEST_RUN lab: lo is the ingress, v0 the way to the far peers
// ---------------------------------------------------------------------------------------------

const V0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbb, 0x20];
const IN_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const IN_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

const SBC_A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const REMOTE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
const SBC_B4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const SBC_A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x77);
const SBC_B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x20);

const ANCHOR_PORT: u16 = 30_000;
const REMOTE_PORT: u16 = 40_000;
const OUT_PORT: u16 = 30_002;
const PEER_PORT: u16 = 50_000;

/// Sets up the namespace (call inside [`in_fresh_netns`]) and loads the
/// program: v0 (with PEER4/PEER6 as permanent neighbours) is an allowed
/// egress. Returns the relay and v0's index.
fn lab() -> (XdpRelay, u32) {
    sh("ip link set lo up");
    sh("ip link add v0 type veth peer name v1");
    sh("ip link set v0 address 02:00:00:00:aa:01");
    sh("ip link set v0 up");
    sh("ip link set v1 up");
    sh("ip addr add 198.51.100.1/24 dev v0");
    sh("ip -6 addr add 2001:db8:2::1/64 dev v0 nodad");
    let peer_mac = "02:00:00:00:bb:20";
    sh(&format!(
        "ip neigh replace 198.51.100.20 lladdr {peer_mac} dev v0 nud permanent"
    ));
    sh(&format!(
        "ip -6 neigh replace 2001:db8:2::20 lladdr {peer_mac} dev v0 nud permanent"
    ));
    // The program's route lookup is an input lookup: forwarding must be on.
    sysctl("net/ipv4/conf/all/forwarding", "1");
    sysctl("net/ipv6/conf/all/forwarding", "1");
    let mut relay = XdpRelay::load(&XdpConfig::default())
        .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
    let v0 = ifindex("v0");
    relay
        .allow_egress(v0)
        .unwrap_or_else(|e| panic!("allow_egress(v0): {e}"));
    (relay, v0)
}

fn ep(ip: impl Into<IpAddr>, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.into(),
        port,
    }
}

fn flow4() -> (FlowKey, FlowAction) {
    (
        FlowKey::new(SBC_A4.into(), ANCHOR_PORT),
        FlowAction::latched(
            ep(REMOTE4, REMOTE_PORT),
            ep(SBC_B4, OUT_PORT),
            ep(PEER4, PEER_PORT),
            0,
        ),
    )
}

fn flow6() -> (FlowKey, FlowAction) {
    (
        FlowKey::new(SBC_A6.into(), ANCHOR_PORT),
        FlowAction::latched(
            ep(REMOTE6, REMOTE_PORT),
            ep(SBC_B6, OUT_PORT),
            ep(PEER6, PEER_PORT),
            0,
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Packets, built and checked from scratch
// ---------------------------------------------------------------------------------------------

const PAYLOAD: &[u8] = b"\x80\x00\x12\x34RTP payload of a test packet, 44 bytes long";

fn eth(proto: [u8; 2]) -> Vec<u8> {
    [&IN_DST_MAC[..], &IN_SRC_MAC, &proto].concat()
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small payload");
    [
        &sport.to_be_bytes()[..],
        &dport.to_be_bytes(),
        &len.to_be_bytes(),
        &[0, 0],
        payload,
    ]
    .concat()
}

/// An Ethernet/IPv4/UDP frame with correct checksums (UDP checksum zero if
/// `!udp_check`).
fn v4_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, udp_check: bool) -> Vec<u8> {
    let mut u = udp(sport, dport, PAYLOAD);
    if udp_check {
        let c = csum::udp4_checksum(src.octets(), dst.octets(), &u);
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    let tot = u16::try_from(20 + u.len()).expect("small packet");
    let mut ip = [
        &[0x45, 0x00][..],
        &tot.to_be_bytes(),
        &[0x12, 0x34, 0x40, 0x00, 57, 17, 0, 0],
        &src.octets(),
        &dst.octets(),
    ]
    .concat();
    let c = csum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    [eth([0x08, 0x00]), ip, u].concat()
}

/// An Ethernet/IPv6/UDP frame with a correct checksum.
fn v6_packet(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut u = udp(sport, dport, PAYLOAD);
    let c = csum::udp6_checksum(src.octets(), dst.octets(), &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let plen = u16::try_from(u.len()).expect("small packet");
    let ip = [
        &[0x60, 0, 0, 0][..],
        &plen.to_be_bytes(),
        &[17, 57],
        &src.octets(),
        &dst.octets(),
    ]
    .concat();
    [eth([0x86, 0xdd]), ip, u].concat()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks a forwarded IPv4 frame field by field, checksums recomputed here.
fn assert_forwarded_v4(out: &[u8], input: &[u8], udp_check: bool) {
    assert_eq!(out.len(), input.len(), "length changed");
    assert_eq!(out[0..6], PEER_MAC, "destination MAC is the neighbour's");
    assert_eq!(out[6..12], V0_MAC, "source MAC is the egress interface's");
    let ip = &out[14..34];
    assert_eq!(ip[8], relay_common::FORWARD_TTL, "TTL reset");
    assert_eq!(ip[12..16], SBC_B4.octets(), "new source address");
    assert_eq!(ip[16..20], PEER4.octets(), "new destination address");
    assert_eq!(ip[..8], input[14..22], "untouched IPv4 fields");
    let mut zeroed = ip.to_vec();
    zeroed[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(
        be16(ip, 10),
        csum::checksum(&zeroed),
        "IPv4 header checksum"
    );
    let u = &out[34..];
    assert_eq!((be16(u, 0), be16(u, 2)), (OUT_PORT, PEER_PORT), "new ports");
    assert_eq!(u[8..], *PAYLOAD, "payload untouched");
    if udp_check {
        let mut zeroed = u.to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(
            be16(u, 6),
            csum::udp4_checksum(SBC_B4.octets(), PEER4.octets(), &zeroed),
            "UDP checksum"
        );
    } else {
        assert_eq!(be16(u, 6), 0, "a zero UDP checksum over IPv4 stays zero");
    }
}

fn run(relay: &XdpRelay, packet: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; packet.len() + 256];
    let r = relay
        .test_run(packet, &mut out)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
    out.truncate(r.len);
    (r.action, out)
}

/// Runs with the ingress interface set to `ifindex` (an `xdp_md` context).
fn run_on(relay: &XdpRelay, packet: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; packet.len() + 256];
    let r = relay
        .test_run_on(packet, &mut out, ifindex)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on ifindex {ifindex}: {e}"));
    out.truncate(r.len);
    (r.action, out)
}

fn stats(relay: &XdpRelay) -> [u64; stat::COUNT as usize] {
    relay
        .stats()
        .unwrap_or_else(|e| panic!("reading stats: {e}"))
}

/// Asserts that exactly one verdict counter moved, by one, between two reads.
fn assert_one_stat(before: &[u64], after: &[u64], which: u32) {
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let expect = if i == which as usize { b + 1 } else { *b };
        assert_eq!(
            *a,
            expect,
            "stat {} (expected only {} to move)",
            stat::NAMES[i],
            stat::NAMES[which as usize]
        );
    }
}

/// Runs a packet the program must pass untouched, and checks its counter.
fn assert_passed(relay: &XdpRelay, packet: &[u8], why: u32) {
    let before = stats(relay);
    let (action, out) = run(relay, packet);
    assert_eq!(
        action,
        XDP_PASS,
        "expected PASS ({})",
        stat::NAMES[why as usize]
    );
    assert_eq!(out, packet, "a passed packet is untouched");
    assert_one_stat(&before, &stats(relay), why);
}

// ---------------------------------------------------------------------------------------------
// BPF_PROG_TEST_RUN tests
// ---------------------------------------------------------------------------------------------

#[test]
fn ipv4_hit_is_rewritten_and_redirected() {
    if !can_run("ipv4_hit_is_rewritten_and_redirected") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow4();
        relay.install(&key, &action).expect("install");
        for udp_check in [true, false] {
            let input = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, udp_check);
            let before = stats(&relay);
            let (verdict, out) = run(&relay, &input);
            assert_eq!(verdict, XDP_REDIRECT, "ingress lo, egress v0: redirect");
            assert_forwarded_v4(&out, &input, udp_check);
            assert_one_stat(&before, &stats(&relay), stat::REDIRECT);
        }
        let c = relay.counters(&key).expect("counters").expect("counted");
        let l3 = (v4_packet(REMOTE4, SBC_A4, 1, 1, true).len() - 14) as u64;
        assert_eq!((c.packets, c.bytes, c.rejected), (2, 2 * l3, 0));
        assert!(c.last_seen_ns > 0, "last seen set");
    });
}

#[test]
fn ipv4_hit_back_out_of_the_same_interface_is_tx() {
    if !can_run("ipv4_hit_back_out_of_the_same_interface_is_tx") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, v0) = lab();
        let (key, action) = flow4();
        relay.install(&key, &action).expect("install");
        let input = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true);
        let before = stats(&relay);
        let (verdict, out) = run_on(&relay, &input, v0);
        assert_eq!(verdict, XDP_TX, "ingress v0, egress v0: TX");
        assert_forwarded_v4(&out, &input, true);
        assert_one_stat(&before, &stats(&relay), stat::TX);
    });
}

#[test]
fn ipv6_hit_is_rewritten_with_a_valid_checksum() {
    if !can_run("ipv6_hit_is_rewritten_with_a_valid_checksum") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow6();
        relay.install(&key, &action).expect("install");
        // Several source ports so the checksum takes different values.
        for sport_delta in 0..4u16 {
            let remote_port = REMOTE_PORT + sport_delta;
            let mut a = action;
            a.remote_port = remote_port.to_be_bytes();
            relay.install(&key, &a).expect("re-install");
            let input = v6_packet(REMOTE6, SBC_A6, remote_port, ANCHOR_PORT);
            let (verdict, out) = run(&relay, &input);
            assert_eq!(verdict, XDP_REDIRECT);
            assert_eq!(out.len(), input.len());
            assert_eq!(
                (&out[0..6], &out[6..12]),
                (&PEER_MAC[..], &V0_MAC[..]),
                "MACs"
            );
            let ip = &out[14..54];
            assert_eq!(
                ip[..7],
                input[14..21],
                "version, class, flow, length, next header"
            );
            assert_eq!(ip[7], relay_common::FORWARD_TTL, "hop limit reset");
            assert_eq!(ip[8..24], SBC_B6.octets());
            assert_eq!(ip[24..40], PEER6.octets());
            let u = &out[54..];
            assert_eq!((be16(u, 0), be16(u, 2)), (OUT_PORT, PEER_PORT));
            let mut zeroed = u.to_vec();
            zeroed[6..8].copy_from_slice(&[0, 0]);
            assert_eq!(
                be16(u, 6),
                csum::udp6_checksum(SBC_B6.octets(), PEER6.octets(), &zeroed)
            );
        }
        let c = relay.counters(&key).expect("counters").expect("counted");
        assert_eq!(c.packets, 4);
    });
}

#[test]
fn the_verifier_accepts_the_program_well_within_limits() {
    if !can_run("the_verifier_accepts_the_program_well_within_limits") {
        return;
    }
    let relay = XdpRelay::load(&XdpConfig::default()).unwrap_or_else(|e| panic!("load: {e}"));
    let size = relay.program_size().expect("program info");
    eprintln!("relay-ebpf: {size:?}");
    let verified = size
        .verified_instructions
        .expect("kernel reports verified instructions");
    // The verifier's complexity limit is 1M instructions; stay far below it.
    assert!(
        (1..100_000).contains(&verified),
        "verified instructions: {verified}"
    );
}

#[test]
fn unknown_and_unlatched_flows_pass() {
    if !can_run("unknown_and_unlatched_flows_pass") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let input = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true);
        assert_passed(&relay, &input, stat::PASS_NO_FLOW);
        let (key, mut action) = flow4();
        action.flags = 0;
        relay.install(&key, &action).expect("install unlatched");
        assert_passed(&relay, &input, stat::PASS_UNLATCHED);
        // Another port on the same address is another flow.
        let other = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT + 2, true);
        assert_passed(&relay, &other, stat::PASS_NO_FLOW);
        let input6 = v6_packet(REMOTE6, SBC_A6, REMOTE_PORT, ANCHOR_PORT);
        assert_passed(&relay, &input6, stat::PASS_NO_FLOW);
        assert!(
            relay.counters(&key).expect("counters").is_none(),
            "a passed packet is not a flow's"
        );
    });
}

#[test]
fn wrong_source_is_dropped_and_counted() {
    if !can_run("wrong_source_is_dropped_and_counted") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow4();
        relay.install(&key, &action).expect("install");
        let attackers = [
            v4_packet(
                Ipv4Addr::new(192, 0, 2, 66),
                SBC_A4,
                REMOTE_PORT,
                ANCHOR_PORT,
                true,
            ),
            v4_packet(REMOTE4, SBC_A4, REMOTE_PORT + 1, ANCHOR_PORT, true),
        ];
        for packet in &attackers {
            let before = stats(&relay);
            let (verdict, _) = run(&relay, packet);
            assert_eq!(verdict, XDP_DROP, "RTPBleed: a foreign source is dropped");
            assert_one_stat(&before, &stats(&relay), stat::DROP_WRONG_SOURCE);
        }
        let (key6, action6) = flow6();
        relay.install(&key6, &action6).expect("install v6");
        let (verdict, _) = run(&relay, &v6_packet(PEER6, SBC_A6, REMOTE_PORT, ANCHOR_PORT));
        assert_eq!(verdict, XDP_DROP);
        let c = relay.counters(&key).expect("counters").expect("counted");
        assert_eq!(
            (c.packets, c.bytes, c.rejected, c.last_seen_ns),
            (0, 0, 2, 0)
        );
        // The real remote still gets through.
        let (verdict, _) = run(
            &relay,
            &v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true),
        );
        assert_eq!(verdict, XDP_REDIRECT);
        let c = relay.counters(&key).expect("counters").expect("counted");
        assert_eq!((c.packets, c.rejected), (1, 2));
    });
}

#[test]
fn rtcp_from_the_latched_source_goes_to_userspace() {
    // Userspace hides RTCP's SDES items; RTP keeps the fast path.
    if !can_run("rtcp_from_the_latched_source_goes_to_userspace") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow4();
        relay.install(&key, &action).expect("install");
        let rtcp_at = 14 + 20 + 8;
        for (second, rtcp) in [
            (200u8, true),
            (202, true),
            (223, true),
            (0, false),
            (96, false),
        ] {
            let mut packet = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, false);
            packet[rtcp_at] = 0x81;
            packet[rtcp_at + 1] = second;
            let before = stats(&relay);
            let (verdict, out) = run(&relay, &packet);
            if rtcp {
                assert_eq!(verdict, XDP_PASS, "packet type {second}");
                assert_eq!(out, packet, "passed untouched");
                assert_one_stat(&before, &stats(&relay), stat::PASS_RTCP);
            } else {
                assert_eq!(verdict, XDP_REDIRECT, "RTP payload type {second}");
            }
        }
        // RTCP from a foreign source is still dropped in the kernel.
        let mut foreign = v4_packet(
            Ipv4Addr::new(192, 0, 2, 66),
            SBC_A4,
            REMOTE_PORT,
            ANCHOR_PORT,
            false,
        );
        foreign[rtcp_at] = 0x81;
        foreign[rtcp_at + 1] = 201;
        assert_eq!(run(&relay, &foreign).0, XDP_DROP);
    });
}

#[test]
fn truncated_packets_pass_untouched() {
    if !can_run("truncated_packets_pass_untouched") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow4();
        relay.install(&key, &action).expect("install");
        let (key6, action6) = flow6();
        relay.install(&key6, &action6).expect("install v6");
        // Every cut of a hit: the kernel refuses frames shorter than an
        // Ethernet header, everything else must pass as truncated.
        for full in [
            v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true),
            v6_packet(REMOTE6, SBC_A6, REMOTE_PORT, ANCHOR_PORT),
        ] {
            for len in 14..full.len() {
                assert_passed(&relay, &full[..len], stat::PASS_TRUNCATED);
            }
        }
        // Lengths that lie: UDP length beyond the IP length, and shorter than
        // a UDP header.
        let mut p = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true);
        p[38..40].copy_from_slice(&200u16.to_be_bytes());
        assert_passed(&relay, &p, stat::PASS_TRUNCATED);
        p[38..40].copy_from_slice(&7u16.to_be_bytes());
        assert_passed(&relay, &p, stat::PASS_TRUNCATED);
        let mut p6 = v6_packet(REMOTE6, SBC_A6, REMOTE_PORT, ANCHOR_PORT);
        p6[18..20].copy_from_slice(&500u16.to_be_bytes());
        assert_passed(&relay, &p6, stat::PASS_TRUNCATED);
        assert!(relay.counters(&key).expect("counters").is_none());
    });
}

#[test]
fn what_the_fast_path_does_not_handle_passes() {
    if !can_run("what_the_fast_path_does_not_handle_passes") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow4();
        relay.install(&key, &action).expect("install");
        let (key6, action6) = flow6();
        relay.install(&key6, &action6).expect("install v6");
        let hit = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true);

        let mut arp = hit.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_passed(&relay, &arp, stat::PASS_NOT_IP);
        let mut vlan = hit.clone();
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_passed(&relay, &vlan, stat::PASS_NOT_IP);
        let mut v5 = hit.clone();
        v5[14] = 0x55;
        assert_passed(&relay, &v5, stat::PASS_NOT_IP);

        let mut tcp = hit.clone();
        tcp[23] = 6;
        assert_passed(&relay, &tcp, stat::PASS_NOT_UDP);

        // IHL 6: one word of options (a NOP and an end-of-list and padding).
        let mut opts = hit[..34].to_vec();
        opts.extend_from_slice(&[1, 0, 0, 0]);
        opts.extend_from_slice(&hit[34..]);
        opts[14] = 0x46;
        let tot = be16(&opts, 16) + 4;
        opts[16..18].copy_from_slice(&tot.to_be_bytes());
        assert_passed(&relay, &opts, stat::PASS_IP_OPTIONS);

        for frag in [0x2000u16, 0x0001, 0x2010, 0x6000] {
            let mut f = hit.clone();
            f[20..22].copy_from_slice(&frag.to_be_bytes());
            assert_passed(&relay, &f, stat::PASS_FRAGMENT);
        }

        let hit6 = v6_packet(REMOTE6, SBC_A6, REMOTE_PORT, ANCHOR_PORT);
        for ext in [0u8, 43, 44, 60] {
            let mut e = hit6.clone();
            e[20] = ext;
            assert_passed(&relay, &e, stat::PASS_IPV6_EXT);
        }
        let mut icmp6 = hit6.clone();
        icmp6[20] = 58;
        assert_passed(&relay, &icmp6, stat::PASS_NOT_UDP);
        let mut no_check = hit6.clone();
        no_check[60..62].copy_from_slice(&[0, 0]);
        assert_passed(&relay, &no_check, stat::PASS_BAD_CHECKSUM);

        assert!(relay.counters(&key).expect("counters").is_none());
        assert!(relay.counters(&key6).expect("counters").is_none());
    });
}

#[test]
fn no_route_no_neighbour_or_wrong_egress_pass() {
    if !can_run("no_route_no_neighbour_or_wrong_egress_pass") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, v0) = lab();
        let (key, mut action) = flow4();
        let input = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true);
        // No route to TEST-NET-3 in this namespace.
        action.new_dst_addr = relay_common::addr_bytes(Ipv4Addr::new(203, 0, 113, 9).into());
        relay.install(&key, &action).expect("install");
        assert_passed(&relay, &input, stat::PASS_NO_ROUTE);
        // On-link but no neighbour entry.
        action.new_dst_addr = relay_common::addr_bytes(Ipv4Addr::new(198, 51, 100, 99).into());
        relay.install(&key, &action).expect("install");
        assert_passed(&relay, &input, stat::PASS_NO_ROUTE);
        // The route leaves by v0 but the flow is pinned to another interface.
        let (_, mut pinned) = flow4();
        pinned.egress_ifindex = v0 + 100;
        relay.install(&key, &pinned).expect("install");
        assert_passed(&relay, &input, stat::PASS_EGRESS_MISMATCH);
        pinned.egress_ifindex = v0;
        relay.install(&key, &pinned).expect("install");
        assert_eq!(
            run(&relay, &input).0,
            XDP_REDIRECT,
            "pinned to the right interface"
        );
        // Forwarding off: the kernel refuses the lookup.
        sysctl("net/ipv4/conf/all/forwarding", "0");
        assert_passed(&relay, &input, stat::PASS_NO_ROUTE);
    });
}

#[test]
fn flows_install_replace_remove() {
    if !can_run("flows_install_replace_remove") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let (key, action) = flow4();
        assert_eq!(relay.flow(&key).expect("lookup"), None);
        relay.install(&key, &action).expect("install");
        assert_eq!(relay.flow(&key).expect("lookup"), Some(action));
        let input = v4_packet(REMOTE4, SBC_A4, REMOTE_PORT, ANCHOR_PORT, true);
        for _ in 0..3 {
            assert_eq!(run(&relay, &input).0, XDP_REDIRECT);
        }
        assert_eq!(
            relay.counters(&key).expect("counters").map(|c| c.packets),
            Some(3)
        );
        let mut moved = action;
        moved.new_dst_port = 50_010u16.to_be_bytes();
        relay.install(&key, &moved).expect("replace");
        let (_, out) = run(&relay, &input);
        assert_eq!(be16(&out, 36), 50_010, "the replaced action applies");
        assert!(relay.remove(&key).expect("remove"), "it existed");
        assert!(!relay.remove(&key).expect("remove again"), "gone");
        assert_eq!(
            relay.counters(&key).expect("counters"),
            None,
            "counters go with the flow"
        );
        assert_passed(&relay, &input, stat::PASS_NO_FLOW);
        assert_ne!(XDP_ABORTED, run(&relay, &input).0);
    });
}

#[test]
fn pinned_flows_survive_a_reload() {
    if !can_run("pinned_flows_survive_a_reload") {
        return;
    }
    // A bpffs of our own (the host may not mount one at /sys/fs/bpf), with
    // the daemon's layout below it; unmounted (pins gone) by the guard.
    let mount = std::env::temp_dir().join(format!("sbc-xdp-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&mount).expect("mount point");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).output();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _guard = Unmount(mount.clone());
    sh(&format!("mount -t bpf bpf {}", mount.display()));
    let dir = mount.join("sbc");
    let config = XdpConfig {
        pin_dir: Some(dir.clone()),
    };
    let (key, action) = flow4();
    {
        let mut relay = XdpRelay::load(&config).unwrap_or_else(|e| panic!("load pinned: {e:?}"));
        relay.install(&key, &action).expect("install");
        // Dropped without a plain stop (a restart): the pins stay.
    }
    assert!(
        dir.join(relay_common::MAP_FLOWS).exists(),
        "flow map pinned"
    );
    let relay = XdpRelay::load(&config).unwrap_or_else(|e| panic!("reload pinned: {e:?}"));
    assert_eq!(
        relay.flow(&key).expect("lookup"),
        Some(action),
        "flow survived the reload"
    );
    relay.exit_policy().detach();
    drop(relay);
    assert!(
        !dir.join(relay_common::MAP_FLOWS).exists(),
        "a plain stop removes the pins"
    );
    let fresh = XdpRelay::load(&XdpConfig::default()).expect("load unpinned");
    assert_eq!(
        fresh.flow(&key).expect("lookup"),
        None,
        "unpinned maps start empty"
    );
}

#[test]
fn attach_falls_back_and_reports_why() {
    if !can_run("attach_falls_back_and_reports_why") {
        return;
    }
    in_fresh_netns(|| {
        let (mut relay, _) = lab();
        let missing = relay.attach("no-such-if0", ModePolicy::Auto);
        assert_eq!(missing.mode, XdpMode::Userspace);
        assert!(matches!(
            missing.fallbacks[0].reason,
            xdp::FallbackReason::UnknownInterface
        ));
        // veth has native XDP.
        let native = relay.attach("v0", ModePolicy::Auto);
        assert_eq!(native.mode, XdpMode::Native, "{native:?}");
        assert!(native.fallbacks.is_empty());
        let generic = relay.attach("v1", ModePolicy::GenericOnly);
        assert_eq!(generic.mode, XdpMode::Generic, "{generic:?}");
        assert!(matches!(
            generic.fallbacks[..],
            [xdp::Fallback {
                skipped: XdpMode::Native,
                ..
            }]
        ));
        // lo has no native XDP: generic after a refusal, or nothing if only
        // native is allowed.
        let lo = relay.attach("lo", ModePolicy::NativeOnly);
        assert_eq!(lo.mode, XdpMode::Userspace, "{lo:?}");
        assert!(matches!(
            lo.fallbacks[0].reason,
            xdp::FallbackReason::Refused {
                mode: XdpMode::Native,
                ..
            }
        ));
        assert!(matches!(
            lo.fallbacks[1].reason,
            xdp::FallbackReason::ExcludedByPolicy(XdpMode::Generic)
        ));
        let lo = relay.attach("lo", ModePolicy::Auto);
        assert_eq!(lo.mode, XdpMode::Generic, "{lo:?}");
        assert!(
            sh("ip link show v0").contains("xdp"),
            "attached: {}",
            sh("ip link show v0")
        );
        drop(relay);
        for dev in ["v0", "v1", "lo"] {
            let link = eventually_detached(&format!("ip link show {dev}"));
            assert!(!link.contains("xdp"), "detached on drop: {link}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Namespace smoke test: real packets through veth
// ---------------------------------------------------------------------------------------------

/// Deletes the named namespaces when dropped, also on panic.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// `recv_from`, retried when a signal interrupts it (at most a few times;
/// the socket's read timeout bounds each try).
fn recv_retrying(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    let mut tries = 0;
    loop {
        match sock.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

#[test]
fn veth_smoke_generic_mode_forwards_rewritten_packets() {
    if can_run("veth_smoke_generic_mode_forwards_rewritten_packets") {
        veth_smoke(XdpMode::Generic);
    }
}

#[test]
fn veth_smoke_native_mode_forwards_rewritten_packets() {
    if can_run("veth_smoke_native_mode_forwards_rewritten_packets") {
        veth_smoke(XdpMode::Native);
    }
}

/// A sends RTP to the SBC's anchored port on its side; the program on the
/// SBC's interface rewrites it and redirects it out of the other interface
/// to B, where a socket checks what arrived.
fn veth_smoke(mode: XdpMode) {
    let (policy, tag) = match mode {
        XdpMode::Native => (ModePolicy::NativeOnly, "n"),
        _ => (ModePolicy::GenericOnly, "g"),
    };
    let id = std::process::id();
    let (a, s, b) = (
        format!("sbcx{tag}a{id}"),
        format!("sbcx{tag}s{id}"),
        format!("sbcx{tag}b{id}"),
    );
    let _guard = Netns(vec![a.clone(), s.clone(), b.clone()]);
    for ns in [&a, &s, &b] {
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip -n {ns} link set lo up"));
    }
    // A (192.0.2.2, 2001:db8:a::2) -- xa/sa | SBC | sb/xb -- B (198.51.100.2, 2001:db8:b::2)
    sh(&format!(
        "ip link add xa netns {a} type veth peer name sa netns {s}"
    ));
    sh(&format!(
        "ip link add xb netns {b} type veth peer name sb netns {s}"
    ));
    for (ns, dev, v4, v6) in [
        (&a, "xa", "192.0.2.2/24", "2001:db8:a::2/64"),
        (&s, "sa", "192.0.2.1/24", "2001:db8:a::1/64"),
        (&s, "sb", "198.51.100.1/24", "2001:db8:b::1/64"),
        (&b, "xb", "198.51.100.2/24", "2001:db8:b::2/64"),
    ] {
        sh(&format!("ip -n {ns} addr add {v4} dev {dev}"));
        sh(&format!("ip -n {ns} addr add {v6} dev {dev} nodad"));
        sh(&format!("ip -n {ns} link set {dev} up"));
    }
    // Full checksums from the local sender (DESIGN: "XDP on veth").
    sh(&format!("ip netns exec {a} ethtool -K xa tx off"));
    for knob in [
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
    ] {
        sh(&format!("ip netns exec {s} sysctl -qw {knob}"));
    }
    let b_mac = {
        let json = sh(&format!("ip -n {b} -j link show xb"));
        let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j is JSON");
        v[0]["address"].as_str().expect("MAC of xb").to_string()
    };
    for peer in ["198.51.100.2", "2001:db8:b::2"] {
        sh(&format!(
            "ip -n {s} neigh replace {peer} lladdr {b_mac} dev sb nud permanent"
        ));
    }

    // (remote in A, SBC anchor on A's side, SBC address on B's side, peer in B)
    let legs: [(IpAddr, IpAddr, IpAddr, IpAddr); 2] = [
        (
            Ipv4Addr::new(192, 0, 2, 2).into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(198, 51, 100, 1).into(),
            Ipv4Addr::new(198, 51, 100, 2).into(),
        ),
        (
            "2001:db8:a::2".parse().expect("literal"),
            "2001:db8:a::1".parse().expect("literal"),
            "2001:db8:b::1".parse().expect("literal"),
            "2001:db8:b::2".parse().expect("literal"),
        ),
    ];
    let sockets: Vec<(UdpSocket, UdpSocket)> = legs
        .iter()
        .map(|&(remote, _, _, peer)| {
            let receiver = in_netns(&b, move || {
                let sock = UdpSocket::bind((peer, PEER_PORT)).expect("bind in B");
                sock.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                sock
            });
            let sender = in_netns(&a, move || {
                UdpSocket::bind((remote, REMOTE_PORT)).expect("bind in A")
            });
            (sender, receiver)
        })
        .collect();

    const PACKETS: u64 = 20;
    let (keys, relay, attachment) = in_netns(&s, move || {
        let mut relay =
            XdpRelay::load(&XdpConfig::default()).unwrap_or_else(|e| panic!("load: {e}"));
        let attachment = relay.attach("sa", policy);
        let out = relay.attach("sb", policy);
        assert_eq!(
            (attachment.mode, out.mode),
            (mode, mode),
            "{attachment:?} {out:?}"
        );
        let keys = legs.map(|(remote, anchor, out, peer)| {
            let key = FlowKey::new(anchor, ANCHOR_PORT);
            let action = FlowAction::latched(
                ep(remote, REMOTE_PORT),
                ep(out, OUT_PORT),
                ep(peer, PEER_PORT),
                0,
            );
            relay.install(&key, &action).expect("install");
            key
        });
        (keys, relay, attachment)
    });
    assert_eq!(attachment.interface, "sa");
    // Native XDP on veth delivers a redirected frame only if the receiving
    // peer runs an XDP program too (DESIGN "XDP on veth"); ours passes
    // everything that is not a flow, so it serves.
    let relay = if mode == XdpMode::Native {
        in_netns(&b, move || {
            let mut relay = relay;
            let peer = relay.attach("xb", ModePolicy::NativeOnly);
            assert_eq!(peer.mode, XdpMode::Native, "{peer:?}");
            relay
        })
    } else {
        relay
    };

    let mut buf = [0u8; 1500];
    for ((sender, receiver), (_, anchor, out, _)) in sockets.iter().zip(legs) {
        for i in 0..PACKETS {
            let payload = format!("rtp {i:04}");
            sender
                .send_to(payload.as_bytes(), (anchor, ANCHOR_PORT))
                .expect("send");
            let (n, from) = recv_retrying(receiver, &mut buf)
                .unwrap_or_else(|e| panic!("{anchor}: packet {i} not forwarded: {e}"));
            assert_eq!(from, SocketAddr::from((out, OUT_PORT)), "rewritten source");
            assert_eq!(&buf[..n], payload.as_bytes(), "payload");
        }
    }
    for (key, ip_header) in keys.iter().zip([20, 40]) {
        let c = relay.counters(key).expect("counters").expect("counted");
        assert_eq!(c.packets, PACKETS, "every packet took the fast path");
        assert_eq!(c.bytes, PACKETS * (ip_header + 8 + 8));
    }
    let st = relay.stats().expect("stats");
    assert_eq!(st[stat::REDIRECT as usize], 2 * PACKETS);
    // Dropping the relay detaches the program (and the guard then deletes
    // the namespaces).
    drop(relay);
    for (ns, dev) in [(&s, "sa"), (&s, "sb"), (&b, "xb")] {
        let link = eventually_detached(&format!("ip -n {ns} link show {dev}"));
        assert!(!link.contains("xdp"), "detached: {link}");
    }
}

/// The id of the XDP program `ip -d link show dev` reports, if any.
fn xdp_prog_id(dev: &str) -> Option<u32> {
    let text = sh(&format!("ip -d link show dev {dev}"));
    let rest = text.split("prog/xdp id ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn pinned_links_are_adopted_replaced_and_removed_on_a_plain_stop() {
    if !can_run("pinned_links_are_adopted_replaced_and_removed_on_a_plain_stop") {
        return;
    }
    let mount = std::env::temp_dir().join(format!("sbc-xdp-links-{}", std::process::id()));
    std::fs::create_dir_all(&mount).expect("mount point");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).output();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _guard = Unmount(mount.clone());
    sh(&format!("mount -t bpf bpf {}", mount.display()));
    let dir = mount.join("sbc");
    in_fresh_netns(move || {
        sh("ip link set lo up");
        sh("ip link add v0 type veth peer name v1");
        sh("ip link set v0 up");
        sh("ip link set v1 up");
        let config = XdpConfig {
            pin_dir: Some(dir.clone()),
        };
        let pins = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };

        // A first process attaches and is dropped without a plain stop.
        let mut first = XdpRelay::load(&config).unwrap_or_else(|e| panic!("load: {e}"));
        for dev in ["v0", "v1"] {
            let a = first.attach(dev, ModePolicy::GenericOnly);
            assert_eq!(a.mode, XdpMode::Generic, "{a:?}");
            assert!(!a.adopted && a.pin_error.is_none(), "{a:?}");
        }
        let old = xdp_prog_id("v0").expect("attached");
        drop(first);
        assert_eq!(
            xdp_prog_id("v0"),
            Some(old),
            "still attached after the drop"
        );
        assert!(
            pins().contains(&"link_v0_generic".to_owned())
                && pins().contains(&"link_v1_generic".to_owned()),
            "{:?}",
            pins()
        );

        // The next adopts v0's link and swaps its program in; v1 is no
        // longer configured: its pin goes and it detaches.
        let mut second = XdpRelay::load(&config).unwrap_or_else(|e| panic!("reload: {e}"));
        let a = second.attach("v0", ModePolicy::Auto);
        assert!(a.adopted && a.mode == XdpMode::Generic, "{a:?}");
        let new = xdp_prog_id("v0").expect("still attached");
        assert_ne!(new, old, "the new program replaced the old one in the link");
        let stale = second.forget_stale_links();
        assert_eq!(stale, vec![dir.join("link_v1_generic")]);
        let v1 = eventually_detached("ip link show v1");
        assert!(!v1.contains("xdp"), "a stale link detaches: {v1}");

        // A mode the configuration no longer allows is attached anew.
        drop(second);
        let mut third = XdpRelay::load(&config).unwrap_or_else(|e| panic!("reload: {e}"));
        let a = third.attach("v0", ModePolicy::NativeOnly);
        assert!(!a.adopted && a.mode == XdpMode::Native, "{a:?}");
        assert!(
            pins().contains(&"link_v0_native".to_owned())
                && !pins().contains(&"link_v0_generic".to_owned()),
            "{:?}",
            pins()
        );

        // A plain stop: no program, no pin.
        third.exit_policy().detach();
        drop(third);
        let v0 = eventually_detached("ip link show v0");
        assert!(!v0.contains("xdp"), "detached on a plain stop: {v0}");
        assert!(pins().is_empty(), "pins removed: {:?}", pins());
    });
}
