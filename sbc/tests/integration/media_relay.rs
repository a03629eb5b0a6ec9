//! The userspace relay on loopback: real sockets, fake peers.
//!
//! Every test uses its own 127.77.N.x addresses (so tests running in parallel
//! never share a port), sends a bounded number of packets, and waits for
//! anything with a deadline of a few seconds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sbc::media::command::{
    Direction, LatchPolicy, Leg, LegCounters, LegSpec, LocalEndpoint, MediaCommand, MediaError,
    MediaEvent, RealmTag, Remote, RtcpMode, StreamId, TimeoutReason,
};
use sbc::media::flow::{FastCounts, FastFlow, FlowConfig};
use sbc::media::ports::PortRange;
use sbc::media::userspace::{FastPath, MediaTotals, RelayConfig, Reserved, UserspaceRelay};
use std::sync::{Arc, Mutex};

const WAIT: Duration = Duration::from_secs(3);
const S: StreamId = StreamId(1);

fn ip(n: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, n, host))
}

/// A relay anchoring on 127.77.n.1 (leg A's realm) and 127.77.n.2 (leg B's).
fn relay(n: u8, slots: u16, flow: FlowConfig, quarantine: Duration) -> UserspaceRelay {
    let range = PortRange::new(41000, 41000 + slots * 2 - 1).expect("valid range");
    let mut config = RelayConfig::new(vec![(ip(n, 1), range), (ip(n, 2), range)]);
    config.flow = flow;
    config.quarantine = quarantine;
    UserspaceRelay::start(config).expect("relay starts")
}

fn peer(addr: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(addr, 0)).expect("peer socket binds");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    socket
}

fn wait_for(
    relay: &UserspaceRelay,
    what: &str,
    mut matches: impl FnMut(&MediaEvent) -> bool,
) -> MediaEvent {
    #[allow(clippy::disallowed_methods)] // a test deadline
    let deadline = Instant::now() + WAIT;
    loop {
        #[allow(clippy::disallowed_methods)]
        let left = deadline.saturating_duration_since(Instant::now());
        match relay.event_timeout(left) {
            Some(event) if matches(&event) => return event,
            Some(_) => {}
            None => panic!("no {what} event within {WAIT:?}"),
        }
    }
}

fn allocate(
    relay: &UserspaceRelay,
    n: u8,
    stream: StreamId,
) -> Result<[LocalEndpoint; 2], MediaError> {
    // Tagged with the host number: leg A's realm 1, leg B's realm 2.
    let leg = |host| LegSpec {
        local_ip: ip(n, host),
        rtcp: RtcpMode::Pair,
        latch: LatchPolicy::SdpOrSignaling,
        realm: RealmTag(u16::from(host)),
    };
    relay
        .send(MediaCommand::Allocate {
            stream,
            legs: [leg(1), leg(2)],
        })
        .expect("command queued");
    match wait_for(
        relay,
        "allocation",
        |e| matches!(e, MediaEvent::Allocated { stream: s, .. } | MediaEvent::AllocationFailed { stream: s, .. } if *s == stream),
    ) {
        MediaEvent::Allocated { legs, .. } => Ok(legs),
        MediaEvent::AllocationFailed { error, .. } => Err(error),
        other => panic!("unexpected {other:?}"),
    }
}

fn set_remote(relay: &UserspaceRelay, leg: Leg, peer: &UdpSocket) {
    set_remote_of(relay, S, leg, peer);
}

/// Points `stream`'s `leg` at `peer` (RTCP on the next port).
fn set_remote_of(relay: &UserspaceRelay, stream: StreamId, leg: Leg, peer: &UdpSocket) {
    let addr = peer.local_addr().expect("peer address");
    relay
        .send(MediaCommand::SetRemote {
            stream,
            leg,
            remote: Remote::rtp_pair(addr, addr.ip()),
        })
        .expect("command queued");
}

/// Wait until the relay applied every command sent so far: commands are
/// applied in order, and one for an unknown stream answers with an event.
fn barrier(relay: &UserspaceRelay) {
    let probe = StreamId(u64::MAX);
    relay
        .send(MediaCommand::Release { stream: probe })
        .expect("command queued");
    wait_for(
        relay,
        "barrier",
        |e| matches!(e, MediaEvent::CommandFailed { stream, .. } if *stream == probe),
    );
}

fn rtp(ssrc: u32, seq: u16) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

fn seq_of(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[2], packet[3]])
}

/// Receive one packet; panics on timeout.
fn recv(socket: &UdpSocket) -> (u16, SocketAddr) {
    let mut buf = [0u8; 1500];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) if n >= 4 => (seq_of(&buf[..n]), from),
        other => panic!(
            "expected a relayed packet at {:?}, got {other:?}",
            socket.local_addr()
        ),
    }
}

fn release(relay: &UserspaceRelay) -> [LegCounters; 2] {
    relay
        .send(MediaCommand::Release { stream: S })
        .expect("command queued");
    match wait_for(relay, "release", |e| {
        matches!(e, MediaEvent::Released { .. })
    }) {
        MediaEvent::Released { counters, .. } => counters,
        other => panic!("unexpected {other:?}"),
    }
}

/// A call: caller on 127.77.n.10, callee on 127.77.n.20, remotes signaled.
fn call(n: u8, flow: FlowConfig) -> (UserspaceRelay, [LocalEndpoint; 2], UdpSocket, UdpSocket) {
    let relay = relay(n, 4, flow, Duration::from_secs(30));
    let local = allocate(&relay, n, S).expect("allocated");
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    set_remote(&relay, Leg::A, &caller);
    set_remote(&relay, Leg::B, &callee);
    barrier(&relay);
    (relay, local, caller, callee)
}

#[test]
fn rtp_is_relayed_both_ways_from_the_anchored_addresses() {
    let (relay, local, caller, callee) = call(1, FlowConfig::default());
    assert_eq!(local[0].rtp.ip(), ip(1, 1));
    assert_eq!(local[1].rtp.ip(), ip(1, 2));
    const N: u16 = 50;
    for seq in 0..N {
        caller.send_to(&rtp(0xa, seq), local[0].rtp).expect("send");
        let (got, from) = recv(&callee);
        assert_eq!(
            (got, from),
            (seq, local[1].rtp),
            "callee sees the SBC's leg-B address"
        );
    }
    for seq in 0..N {
        callee.send_to(&rtp(0xb, seq), local[1].rtp).expect("send");
        let (got, from) = recv(&caller);
        assert_eq!(
            (got, from),
            (seq, local[0].rtp),
            "caller sees the SBC's leg-A address"
        );
    }
    let [a, b] = release(&relay);
    let bytes = u64::from(N) * 20;
    assert_eq!(
        (a.packets_in, a.bytes_in, b.packets_out, b.bytes_out),
        (50, bytes, 50, bytes)
    );
    assert_eq!((b.packets_in, a.packets_out), (50, 50));
    assert_eq!(a.dropped_source + b.dropped_source, 0);
    assert_eq!(
        relay
            .stats()
            .packets_relayed
            .load(std::sync::atomic::Ordering::Relaxed),
        100
    );
}

#[test]
fn third_party_injection_is_not_relayed_and_is_counted() {
    let (relay, local, caller, callee) = call(2, FlowConfig::default());
    let attacker = peer(ip(2, 66));
    // Before latching, with the caller's SSRC and with another.
    attacker
        .send_to(&rtp(0xa, 1000), local[0].rtp)
        .expect("send");
    attacker
        .send_to(&rtp(0xbad, 1001), local[0].rtp)
        .expect("send");
    caller.send_to(&rtp(0xa, 1), local[0].rtp).expect("send");
    assert_eq!(
        recv(&callee).0,
        1,
        "the first packet relayed is the caller's"
    );
    // After latching.
    attacker
        .send_to(&rtp(0xa, 1002), local[0].rtp)
        .expect("send");
    attacker
        .send_to(&rtp(0xbad, 1003), local[0].rtp)
        .expect("send");
    caller.send_to(&rtp(0xa, 2), local[0].rtp).expect("send");
    assert_eq!(recv(&callee).0, 2, "injected packets were not relayed");
    // Injection towards the callee side too.
    attacker
        .send_to(&rtp(0xb, 1004), local[1].rtp)
        .expect("send");
    callee.send_to(&rtp(0xb, 3), local[1].rtp).expect("send");
    assert_eq!(recv(&caller).0, 3);
    // Counted as they happen, before the stream is released.
    barrier(&relay);
    let live = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(live(&relay.stats().dropped_source), 5);
    assert_eq!(live(&relay.stats().packets_dropped), 5);
    let [a, b] = release(&relay);
    assert_eq!((a.dropped_source, a.packets_in), (4, 2));
    assert_eq!((b.dropped_source, b.packets_in), (1, 1));
}

#[test]
fn hold_stops_forwarding_and_resume_restores_it() {
    let (relay, local, caller, callee) = call(3, FlowConfig::default());
    caller.send_to(&rtp(0xa, 1), local[0].rtp).expect("send");
    assert_eq!(recv(&callee).0, 1);
    let held = MediaCommand::SetDirection {
        stream: S,
        leg: Leg::B,
        direction: Direction::Inactive,
    };
    relay.send(held).expect("command queued");
    barrier(&relay);
    for seq in 100..110 {
        caller.send_to(&rtp(0xa, seq), local[0].rtp).expect("send");
    }
    // Let the relay read every held packet before resuming.
    #[allow(clippy::disallowed_methods)] // a test deadline
    let deadline = Instant::now() + WAIT;
    #[allow(clippy::disallowed_methods)]
    while relay
        .stats()
        .packets_dropped
        .load(std::sync::atomic::Ordering::Relaxed)
        < 10
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let resumed = MediaCommand::SetDirection {
        stream: S,
        leg: Leg::B,
        direction: Direction::SendRecv,
    };
    barrier(&relay);
    relay.send(resumed).expect("command queued");
    barrier(&relay);
    caller.send_to(&rtp(0xa, 2), local[0].rtp).expect("send");
    assert_eq!(
        recv(&callee).0,
        2,
        "media flows again after resume, and nothing held got through"
    );
    let [a, _] = release(&relay);
    assert_eq!(a.dropped_direction, 10);
}

#[test]
fn inactivity_timeout_is_reported() {
    let flow = FlowConfig {
        inactivity_timeout: Duration::from_millis(200),
        ..FlowConfig::default()
    };
    let (relay, local, caller, callee) = call(4, flow);
    caller.send_to(&rtp(0xa, 1), local[0].rtp).expect("send");
    assert_eq!(recv(&callee).0, 1);
    let event = wait_for(&relay, "timeout", |e| {
        matches!(e, MediaEvent::TimedOut { .. })
    });
    assert_eq!(
        event,
        MediaEvent::TimedOut {
            stream: S,
            reason: TimeoutReason::NoMedia
        }
    );
}

#[test]
fn exhaustion_only_when_every_port_is_in_use_and_released_ports_come_back_at_once() {
    // One slot per address and a long quarantine: the quarantine is a
    // preference, so the released slot is handed out again rather than the
    // call refused.
    let relay = relay(5, 1, FlowConfig::default(), Duration::from_secs(30));
    let first = allocate(&relay, 5, S).expect("one slot per address");
    let exhausted = allocate(&relay, 5, StreamId(2));
    assert_eq!(
        exhausted,
        Err(MediaError::PortsExhausted { addr: ip(5, 1) })
    );
    assert_eq!(relay.stats().ports_free(ip(5, 1)), Some(0));
    release(&relay);
    assert_eq!(
        allocate(&relay, 5, StreamId(3)),
        Ok(first),
        "the same ports, in quarantine but the only ones left"
    );
    assert_eq!(
        relay
            .stats()
            .ports_exhausted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn late_packets_of_an_old_call_on_a_reused_port_are_dropped_by_latching() {
    let n = 12;
    let relay = relay(n, 1, FlowConfig::default(), Duration::from_secs(30));
    let old = allocate(&relay, n, S).expect("allocated");
    let old_caller = peer(ip(n, 10));
    let old_callee = peer(ip(n, 20));
    set_remote(&relay, Leg::A, &old_caller);
    set_remote(&relay, Leg::B, &old_callee);
    barrier(&relay);
    old_caller.send_to(&rtp(0xa, 1), old[0].rtp).expect("send");
    assert_eq!(recv(&old_callee).0, 1);
    release(&relay);

    // The next call gets the same ports at once (the pool has no other).
    let next = StreamId(2);
    let local = allocate(&relay, n, next).expect("reused");
    assert_eq!(local, old, "the released ports, reused in quarantine");
    let caller = peer(ip(n, 11));
    let callee = peer(ip(n, 21));
    for (leg, socket) in [(Leg::A, &caller), (Leg::B, &callee)] {
        set_remote_of(&relay, next, leg, socket);
    }
    barrier(&relay);
    // The old caller's late packets reach the reused port first, in the
    // new call's learning window; then the new caller speaks.
    for seq in 2..6 {
        old_caller
            .send_to(&rtp(0xa, seq), local[0].rtp)
            .expect("send");
    }
    caller.send_to(&rtp(0xc, 100), local[0].rtp).expect("send");
    assert_eq!(
        recv(&callee).0,
        100,
        "the first packet the new callee hears is the new caller's"
    );
    old_callee
        .send_to(&rtp(0xb, 7), local[1].rtp)
        .expect("send");
    callee.send_to(&rtp(0xd, 200), local[1].rtp).expect("send");
    assert_eq!(recv(&caller).0, 200);
    assert!(
        old_callee.recv_from(&mut [0u8; 64]).is_err()
            && old_caller.recv_from(&mut [0u8; 64]).is_err(),
        "nothing of the new call reaches the old peers"
    );
    relay
        .send(MediaCommand::Release { stream: next })
        .expect("command queued");
    let MediaEvent::Released { counters, .. } = wait_for(
        &relay,
        "release",
        |e| matches!(e, MediaEvent::Released { stream, .. } if *stream == next),
    ) else {
        panic!("not released")
    };
    assert_eq!(
        (counters[0].dropped_source, counters[0].packets_in),
        (4, 1),
        "the old caller's 4 late packets dropped, the new caller's relayed"
    );
    assert_eq!((counters[1].dropped_source, counters[1].packets_in), (1, 1));
}

#[test]
fn muxed_leg_carries_rtcp_on_its_rtp_port() {
    let relay = relay(6, 4, FlowConfig::default(), Duration::from_secs(30));
    let legs = [
        LegSpec {
            local_ip: ip(6, 1),
            rtcp: RtcpMode::Mux,
            latch: LatchPolicy::SdpOrSignaling,
            realm: RealmTag(1),
        },
        LegSpec {
            local_ip: ip(6, 2),
            rtcp: RtcpMode::Pair,
            latch: LatchPolicy::SdpOrSignaling,
            realm: RealmTag(2),
        },
    ];
    relay
        .send(MediaCommand::Allocate { stream: S, legs })
        .expect("command queued");
    let MediaEvent::Allocated { legs: local, .. } = wait_for(&relay, "allocation", |e| {
        matches!(e, MediaEvent::Allocated { .. })
    }) else {
        panic!("not allocated")
    };
    assert_eq!(local[0].rtcp, None);
    let caller = peer(ip(6, 10));
    let callee_rtp = peer(ip(6, 20));
    let callee_rtcp = peer(ip(6, 21));
    let caller_addr = caller.local_addr().expect("address");
    let mut a = Remote::rtp_pair(caller_addr, caller_addr.ip());
    a.rtcp_mux = true;
    let b = Remote {
        rtp: callee_rtp.local_addr().expect("address"),
        rtcp: callee_rtcp.local_addr().expect("address"),
        rtcp_mux: false,
        signaling_ip: ip(6, 20),
        secure: false,
    };
    relay
        .send(MediaCommand::SetRemote {
            stream: S,
            leg: Leg::A,
            remote: a,
        })
        .expect("queued");
    relay
        .send(MediaCommand::SetRemote {
            stream: S,
            leg: Leg::B,
            remote: b,
        })
        .expect("queued");
    barrier(&relay);
    let mut sr = [0u8; 28];
    sr[0] = 0x80;
    sr[1] = 200;
    sr[2..4].copy_from_slice(&7u16.to_be_bytes());
    sr[4..8].copy_from_slice(&0xau32.to_be_bytes());
    caller.send_to(&sr, local[0].rtp).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = callee_rtcp
        .recv_from(&mut buf)
        .expect("RTCP relayed to the callee's RTCP port");
    assert_eq!(
        (n, Some(from)),
        (28, local[1].rtcp),
        "out of the SBC's leg-B RTCP port"
    );
    callee_rtcp.send_to(&buf[..n], from).expect("send");
    let (n, from) = caller
        .recv_from(&mut buf)
        .expect("RTCP relayed back over the muxed port");
    assert_eq!((n, from), (28, local[0].rtp));
}

#[test]
fn shutdown_closes_every_socket() {
    let (relay, local, _caller, _callee) = call(7, FlowConfig::default());
    relay.shutdown();
    for addr in [local[0].rtp, local[1].rtp] {
        UdpSocket::bind(addr).unwrap_or_else(|e| panic!("{addr} still held after shutdown: {e}"));
    }
}

/// Every update the relay pushed to the fast path, in order.
type Installed = Arc<Mutex<Vec<(StreamId, Vec<FastFlow>)>>>;

/// A fast path that records what the relay installs and reports a fixed
/// number of packets once, as the XDP backend would from its maps, and a
/// last count for a stream when asked just before its release.
struct Recorder {
    installed: Installed,
    report_once: Option<FastCounts>,
    before_release: Option<FastCounts>,
}

impl FastPath for Recorder {
    fn update(&mut self, stream: StreamId, flows: &[FastFlow]) {
        self.installed
            .lock()
            .expect("test lock")
            .push((stream, flows.to_vec()));
    }

    fn collect(&mut self, counts: &mut Vec<FastCounts>) {
        counts.extend(self.report_once.take());
    }

    fn collect_stream(&mut self, stream: StreamId, counts: &mut Vec<FastCounts>) {
        if self.before_release.is_some_and(|c| c.stream == stream) {
            counts.extend(self.before_release.take());
        }
    }
}

/// The relay's per-realm totals once `want` shows up (they are published at
/// the end of each relay turn); panics with what was there otherwise.
fn wait_totals(relay: &UserspaceRelay, want: &[(RealmTag, MediaTotals)]) {
    #[allow(clippy::disallowed_methods)] // a test deadline
    let deadline = Instant::now() + WAIT;
    loop {
        let got: Vec<_> = relay
            .stats()
            .realm_totals()
            .into_iter()
            .enumerate()
            .map(|(i, t)| (RealmTag(u16::try_from(i).expect("few tags")), t))
            .filter(|(_, t)| *t != MediaTotals::default())
            .collect();
        if got == want {
            return;
        }
        #[allow(clippy::disallowed_methods)]
        let late = Instant::now() >= deadline;
        assert!(!late, "realm totals {got:?}, expected {want:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn userspace(packets: u64, bytes: u64) -> MediaTotals {
    MediaTotals {
        userspace_packets: packets,
        userspace_bytes: bytes,
        ..MediaTotals::default()
    }
}

#[test]
fn the_fast_path_gets_latched_flows_and_its_counts_are_merged() {
    let n = 8;
    let range = PortRange::new(41000, 41007).expect("valid range");
    let mut config = RelayConfig::new(vec![(ip(n, 1), range), (ip(n, 2), range)]);
    config.flow.inactivity_timeout = Duration::from_millis(400);
    let installed: Installed = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        installed: Arc::clone(&installed),
        report_once: Some(FastCounts {
            stream: S,
            leg: Leg::A,
            realm: RealmTag(1),
            packets: 1000,
            bytes: 20_000,
        }),
        before_release: Some(FastCounts {
            stream: S,
            leg: Leg::B,
            realm: RealmTag(2),
            packets: 7,
            bytes: 140,
        }),
    };
    let relay = UserspaceRelay::start_with_fast_path(config, Some(Box::new(recorder)))
        .expect("relay starts");
    let local = allocate(&relay, n, S).expect("allocated");
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    set_remote(&relay, Leg::A, &caller);
    set_remote(&relay, Leg::B, &callee);
    barrier(&relay);
    caller.send_to(&rtp(0xa, 1), local[0].rtp).expect("send");
    assert_eq!(recv(&callee).0, 1);
    callee.send_to(&rtp(0xb, 2), local[1].rtp).expect("send");
    assert_eq!(recv(&caller).0, 2);
    barrier(&relay);
    let last = installed.lock().expect("test lock").last().cloned();
    let Some((stream, flows)) = last else {
        panic!("nothing installed")
    };
    assert_eq!(stream, S);
    let caller_addr = caller.local_addr().expect("address");
    let callee_addr = callee.local_addr().expect("address");
    let mut seen: Vec<_> = flows
        .iter()
        .map(|f| (f.leg, f.realm, f.local, f.source, f.route.from, f.route.to))
        .collect();
    seen.sort_by_key(|f| f.0 == Leg::B);
    let (a_tag, b_tag) = (RealmTag(1), RealmTag(2));
    assert_eq!(
        seen,
        vec![
            (
                Leg::A,
                a_tag,
                local[0].rtp,
                caller_addr,
                local[1].rtp,
                callee_addr
            ),
            (
                Leg::B,
                b_tag,
                local[1].rtp,
                callee_addr,
                local[0].rtp,
                caller_addr
            ),
        ]
    );
    // The fast path's report is taken in at the next timeout check.
    std::thread::sleep(Duration::from_millis(300));
    let [a, b] = release(&relay);
    assert_eq!((a.packets_in, b.packets_out), (1001, 1001));
    assert_eq!(
        (
            b.packets_in,
            a.packets_out,
            b.fast_packets_in,
            b.fast_bytes_in
        ),
        (8, 8, 7, 140),
        "what the fast path relayed since its last report is in the final counters"
    );
    assert_eq!((a.fast_packets_in, a.fast_bytes_in), (1000, 20_000));
    // Each count under the realm of the leg it arrived on, per path.
    let both = |userspace_packets, xdp_packets, xdp_bytes| MediaTotals {
        userspace_packets,
        userspace_bytes: 20 * userspace_packets,
        xdp_packets,
        xdp_bytes,
    };
    wait_totals(
        &relay,
        &[(a_tag, both(1, 1000, 20_000)), (b_tag, both(1, 7, 140))],
    );
    let stats = relay.stats();
    let fast = stats
        .fast_packets
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fast, 1007, "global totals: every fast count");
    barrier(&relay);
    let last = installed.lock().expect("test lock").last().cloned();
    assert_eq!(last, Some((S, Vec::new())), "release uninstalls");
}

#[test]
fn a_natted_caller_is_answered_at_its_real_source() {
    let n = 9;
    let relay = relay(n, 4, FlowConfig::default(), Duration::from_secs(30));
    let local = allocate(&relay, n, S).expect("allocated");
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    // The caller's SDP names an address nobody listens on (its private
    // side); its signaling came from the IP it really sends from.
    let sdp = SocketAddr::new(ip(n, 99), 4000);
    let remote = Remote::rtp_pair(sdp, ip(n, 10));
    relay
        .send(MediaCommand::SetRemote {
            stream: S,
            leg: Leg::A,
            remote,
        })
        .expect("queued");
    set_remote(&relay, Leg::B, &callee);
    barrier(&relay);
    caller.send_to(&rtp(0xa, 1), local[0].rtp).expect("send");
    assert_eq!(recv(&callee).0, 1);
    let latched = wait_for(&relay, "latch", |e| {
        matches!(e, MediaEvent::Latched { leg: Leg::A, .. })
    });
    let caller_addr = caller.local_addr().expect("address");
    assert!(
        matches!(latched, MediaEvent::Latched { source, .. } if source == caller_addr),
        "{latched:?}"
    );
    callee.send_to(&rtp(0xb, 2), local[1].rtp).expect("send");
    assert_eq!(
        recv(&caller),
        (2, local[0].rtp),
        "symmetric RTP reaches the NAT binding"
    );
}

#[test]
fn ipv6_loopback_streams_are_relayed() {
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let range = PortRange::new(41200, 41207).expect("valid range");
    let relay = UserspaceRelay::start(RelayConfig::new(vec![(v6, range)])).expect("relay starts");
    let leg = LegSpec {
        local_ip: v6,
        rtcp: RtcpMode::Mux,
        latch: LatchPolicy::SdpAddress,
        realm: RealmTag(0),
    };
    relay
        .send(MediaCommand::Allocate {
            stream: S,
            legs: [leg, leg],
        })
        .expect("queued");
    let event = wait_for(&relay, "allocation", |e| {
        matches!(
            e,
            MediaEvent::Allocated { .. } | MediaEvent::AllocationFailed { .. }
        )
    });
    let MediaEvent::Allocated { legs: local, .. } = event else {
        panic!("{event:?}")
    };
    assert_ne!(local[0].rtp, local[1].rtp, "two muxed legs, two ports");
    let caller = peer(v6);
    let callee = peer(v6);
    set_remote(&relay, Leg::A, &caller);
    set_remote(&relay, Leg::B, &callee);
    barrier(&relay);
    caller.send_to(&rtp(0xa, 1), local[0].rtp).expect("send");
    assert_eq!(recv(&callee), (1, local[1].rtp));
}

#[test]
fn a_flooded_port_does_not_starve_other_streams() {
    let n = 10;
    let relay = relay(n, 4, FlowConfig::default(), Duration::from_secs(30));
    let victim = allocate(&relay, n, StreamId(1)).expect("allocated");
    let other = allocate(&relay, n, StreamId(2)).expect("allocated");
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    for stream in [StreamId(1), StreamId(2)] {
        for (leg, p) in [(Leg::A, &caller), (Leg::B, &callee)] {
            set_remote_of(&relay, stream, leg, p);
        }
    }
    barrier(&relay);
    let attacker = peer(ip(n, 66));
    let flood = std::thread::spawn(move || {
        for seq in 0..20_000u16 {
            let _ = attacker.send_to(&rtp(0xbad, seq), victim[0].rtp);
        }
    });
    for seq in 0..20 {
        caller.send_to(&rtp(0xa, seq), other[0].rtp).expect("send");
        assert_eq!(
            recv(&callee),
            (seq, other[1].rtp),
            "stream 2 starved by the flood on stream 1"
        );
    }
    flood.join().expect("flood thread");
    #[allow(clippy::disallowed_methods)] // a test deadline
    let deadline = Instant::now() + WAIT;
    let dropped = || {
        relay
            .stats()
            .packets_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    #[allow(clippy::disallowed_methods)]
    while dropped() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(dropped() > 0, "the flood was read and dropped");
}

#[test]
fn packets_count_under_the_realm_of_the_leg_they_arrived_on() {
    // Three realms on one media address (carriers sharing a public IP): the
    // split can only come from the legs' tags.
    let n = 11;
    let range = PortRange::new(41000, 41015).expect("valid range");
    let mut config = RelayConfig::new(vec![(ip(n, 1), range)]);
    config.quarantine = Duration::from_millis(200);
    let relay = UserspaceRelay::start(config).expect("relay starts");
    let free = || relay.stats().ports_free(ip(n, 1));
    assert_eq!(free(), Some(16), "every port free before any call");
    assert_eq!(relay.stats().ports_free(ip(n, 2)), None, "no such pool");
    let leg = |realm| LegSpec {
        local_ip: ip(n, 1),
        rtcp: RtcpMode::Pair,
        latch: LatchPolicy::SdpOrSignaling,
        realm: RealmTag(realm),
    };
    let mut local = Vec::new();
    for (stream, tags) in [(StreamId(1), [1, 2]), (StreamId(2), [2, 3])] {
        relay
            .send(MediaCommand::Allocate {
                stream,
                legs: [leg(tags[0]), leg(tags[1])],
            })
            .expect("queued");
        match wait_for(&relay, "allocation", |e| {
            matches!(
                e,
                MediaEvent::Allocated { .. } | MediaEvent::AllocationFailed { .. }
            )
        }) {
            MediaEvent::Allocated { legs, .. } => local.push(legs),
            other => panic!("{other:?}"),
        }
    }
    barrier(&relay);
    assert_eq!(free(), Some(8), "two streams, four pair legs: eight ports");
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    for stream in [StreamId(1), StreamId(2)] {
        for (leg, p) in [(Leg::A, &caller), (Leg::B, &callee)] {
            set_remote_of(&relay, stream, leg, p);
        }
    }
    barrier(&relay);
    // Stream 1: 3 packets in on leg A (realm 1), 5 in on leg B (realm 2).
    // Stream 2: 2 in on leg A (realm 2), none on leg B (realm 3).
    for seq in 0..3 {
        caller
            .send_to(&rtp(0xa, seq), local[0][0].rtp)
            .expect("send");
        assert_eq!(recv(&callee).1, local[0][1].rtp);
    }
    for seq in 0..5 {
        callee
            .send_to(&rtp(0xb, seq), local[0][1].rtp)
            .expect("send");
        assert_eq!(recv(&caller).1, local[0][0].rtp);
    }
    for seq in 0..2 {
        caller
            .send_to(&rtp(0xc, seq), local[1][0].rtp)
            .expect("send");
        assert_eq!(recv(&callee).1, local[1][1].rtp);
    }
    wait_totals(
        &relay,
        &[
            (RealmTag(1), userspace(3, 60)),
            (RealmTag(2), userspace(7, 140)),
        ],
    );
    let relayed = relay
        .stats()
        .packets_relayed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(relayed, 10, "the realms' totals add up to the relay's");

    relay
        .send(MediaCommand::Release {
            stream: StreamId(1),
        })
        .expect("queued");
    barrier(&relay);
    // Quarantined ports can be had (they go out last), so they count as
    // free at once.
    assert_eq!(free(), Some(12), "released ports are free again at once");
}

#[test]
fn a_pool_added_while_running_serves_allocations_and_reports_free_ports() {
    let n = 21;
    let range = PortRange::new(41000, 41007).expect("valid range");
    // Leg A's address has a pool from the start; leg B's comes later (a
    // reload that added a realm).
    let relay =
        UserspaceRelay::start(RelayConfig::new(vec![(ip(n, 1), range)])).expect("relay starts");
    assert!(matches!(
        allocate(&relay, n, StreamId(1)),
        Err(MediaError::UnknownAddress { .. })
    ));
    assert_eq!(relay.stats().ports_free(ip(n, 2)), None);

    relay.add_pool(ip(n, 2), range).expect("queued");
    let legs = allocate(&relay, n, StreamId(2)).expect("allocated on the new pool");
    assert_eq!(legs[1].rtp.ip(), ip(n, 2));
    barrier(&relay);
    assert_eq!(relay.stats().ports_free(ip(n, 2)), Some(8 - 2));
    // Adding it again keeps the pool and its lease.
    relay.add_pool(ip(n, 2), range).expect("queued");
    barrier(&relay);
    assert_eq!(relay.stats().ports_free(ip(n, 2)), Some(8 - 2));
}

#[test]
fn rtcp_sdes_is_hidden_unless_the_leg_is_srtp() {
    use sbc::media::cname::CnameMask;
    let n = 30;
    let range = PortRange::new(41000, 41009).expect("valid range");
    let mask = CnameMask::new();
    let mut config = RelayConfig::new(vec![(ip(n, 1), range), (ip(n, 2), range)]);
    config.cname_mask = Some(mask.clone());
    let relay = UserspaceRelay::start(config).expect("relay starts");
    let legs = allocate(&relay, n, S).expect("allocated");
    let (a, b) = (peer(ip(n, 10)), peer(ip(n, 20)));
    // Both legs mux RTCP on the RTP port (RFC 5761).
    let remote = |socket: &UdpSocket, secure: bool| {
        let addr = socket.local_addr().expect("address");
        let mut r = Remote::rtp_pair(addr, addr.ip());
        r.rtcp_mux = true;
        r.secure = secure;
        r
    };
    for (leg, socket) in [(Leg::A, &a), (Leg::B, &b)] {
        relay
            .send(MediaCommand::SetRemote {
                stream: S,
                leg,
                remote: remote(socket, false),
            })
            .expect("queued");
    }
    barrier(&relay);
    // A receiver report and an SDES with a CNAME naming A's host, a NAME
    // and a TOOL.
    let mut compound = vec![0x80, 201, 0, 1, 0, 0, 0, 7];
    let mut sdes = vec![0x81, 202, 0, 0, 0, 0, 0, 7];
    for (kind, text) in [
        (1u8, &b"alice@10.1.2.3"[..]),
        (2, b"Alice"),
        (6, b"PhoneAgent 3"),
    ] {
        sdes.push(kind);
        sdes.push(text.len() as u8);
        sdes.extend_from_slice(text);
    }
    sdes.push(0);
    while sdes.len() % 4 != 0 {
        sdes.push(0);
    }
    let words = (sdes.len() / 4 - 1) as u16;
    sdes[2..4].copy_from_slice(&words.to_be_bytes());
    compound.extend_from_slice(&sdes);
    let receive = |socket: &UdpSocket| {
        let mut buf = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buf).expect("relayed RTCP");
        buf[..len].to_vec()
    };
    a.send_to(&compound, legs[0].rtp).expect("sent");
    let got = receive(&b);
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("10.1.2.3") && !text.contains("Alice") && !text.contains("PhoneAgent"),
        "{text:?}"
    );
    let stand_in = mask.mask(b"alice@10.1.2.3");
    assert!(
        got.windows(stand_in.len()).any(|w| w == stand_in),
        "the CNAME's stand-in is there: {got:?}"
    );
    assert_eq!(&got[..8], &compound[..8], "the RR is untouched");
    // SRTCP (the leg's SDP says RTP/SAVP) crosses untouched.
    relay
        .send(MediaCommand::SetRemote {
            stream: S,
            leg: Leg::A,
            remote: remote(&a, true),
        })
        .expect("queued");
    barrier(&relay);
    a.send_to(&compound, legs[0].rtp).expect("sent");
    assert_eq!(receive(&b), compound);
    release(&relay);
}

#[test]
fn a_source_in_the_realm_networks_is_learned_only_where_the_realm_allows_it() {
    // Leg A's SDP and signaling say 127.77.31.10; its RTP comes from
    // 127.77.31.11, another address of the same (loopback) network.
    for (policy, learned) in [
        (LatchPolicy::RealmNetworks, true),
        (LatchPolicy::SdpOrSignaling, false),
    ] {
        let n = 31;
        let range = PortRange::new(41000, 41009).expect("valid range");
        let mut config = RelayConfig::new(vec![(ip(n, 1), range), (ip(n, 2), range)]);
        config.flow.learning_window = Duration::from_millis(300);
        config.realm_networks = vec![vec!["127.77.31.0/24".parse().expect("net")]];
        let relay = UserspaceRelay::start(config).expect("relay starts");
        let leg = |host: u8, latch| LegSpec {
            local_ip: ip(n, host),
            rtcp: RtcpMode::Pair,
            latch,
            realm: RealmTag(0),
        };
        relay
            .send(MediaCommand::Allocate {
                stream: S,
                legs: [leg(1, policy), leg(2, LatchPolicy::SdpOrSignaling)],
            })
            .expect("queued");
        let MediaEvent::Allocated { legs, .. } = wait_for(&relay, "allocation", |e| {
            matches!(e, MediaEvent::Allocated { .. })
        }) else {
            unreachable!()
        };
        let signaled = peer(ip(n, 10));
        let sender = peer(ip(n, 11));
        let callee = peer(ip(n, 20));
        set_remote(&relay, Leg::A, &signaled);
        set_remote(&relay, Leg::B, &callee);
        barrier(&relay);
        sender.send_to(&rtp(0xabc, 1), legs[0].rtp).expect("sent");
        if learned {
            assert_eq!(recv(&callee).0, 1, "relayed once learned");
            wait_for(&relay, "latch", |e| {
                matches!(e, MediaEvent::Latched { leg: Leg::A, .. })
            });
        } else {
            // Dropped; once the window has closed the relay says so.
            std::thread::sleep(Duration::from_millis(400));
            sender.send_to(&rtp(0xabc, 2), legs[0].rtp).expect("sent");
            wait_for(&relay, "not latched", |e| {
                matches!(e, MediaEvent::NotLatched { leg: Leg::A, .. })
            });
            let mut buf = [0u8; 64];
            assert!(callee.recv_from(&mut buf).is_err(), "nothing relayed");
        }
        release(&relay);
    }
}

#[test]
fn two_relay_threads_each_carry_their_own_streams_on_their_own_ports() {
    let n = 40;
    let range = PortRange::new(41000, 41007).expect("valid range");
    let mut config = RelayConfig::new(vec![(ip(n, 1), range), (ip(n, 2), range)]);
    config.threads = 2;
    let relay = UserspaceRelay::start(config).expect("relay starts");
    assert_eq!(relay.threads(), 2);
    // Streams 1 and 2 belong to different threads (by id), each of which
    // owns half of every address's ports.
    let (one, two) = (StreamId(1), StreamId(2));
    let a = allocate(&relay, n, one).expect("stream 1");
    let b = allocate(&relay, n, two).expect("stream 2");
    let half = |port: u16| port >= 41004;
    assert_ne!(half(a[0].rtp.port()), half(b[0].rtp.port()), "{a:?} {b:?}");
    for (stream, local, host) in [(one, a, 10), (two, b, 30)] {
        let caller = peer(ip(n, host));
        let callee = peer(ip(n, host + 10));
        for (leg, p) in [(Leg::A, &caller), (Leg::B, &callee)] {
            set_remote_of(&relay, stream, leg, p);
        }
        // Each thread applies its stream's commands in order: the relayed
        // packets prove it took them.
        let mut relayed = 0;
        for seq in 0..20u16 {
            caller
                .send_to(&rtp(7, seq), local[0].rtp)
                .expect("caller sends");
            let mut buf = [0u8; 1500];
            if let Ok((_, from)) = callee.recv_from(&mut buf) {
                assert_eq!(from, local[1].rtp, "from the anchor of leg B");
                relayed += 1;
            }
        }
        assert!(relayed >= 15, "stream {stream:?}: {relayed} of 20 relayed");
    }
    // Free ports add up over both threads' shares: 8 per address, less
    // one RTP/RTCP pair per leg and stream.
    #[allow(clippy::disallowed_methods)] // a test deadline
    let deadline = Instant::now() + WAIT;
    while relay.stats().ports_free(ip(n, 1)) != Some(4) {
        #[allow(clippy::disallowed_methods)]
        let late = Instant::now() > deadline;
        assert!(
            !late,
            "free ports: {:?}",
            relay.stats().ports_free(ip(n, 1))
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        relay
            .stats()
            .streams
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(relay.thread_cpu_time().is_some());
    relay.shutdown();
}

/// The next answer to a reserve request; panics after [`WAIT`].
fn reserved(relay: &UserspaceRelay) -> Reserved {
    #[allow(clippy::disallowed_methods)] // a test deadline
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(answer) = relay.try_reserved() {
            return answer;
        }
        #[allow(clippy::disallowed_methods)]
        let late = Instant::now() > deadline;
        assert!(!late, "no answer to a reserve request within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every event up to a barrier (commands apply in order).
fn events_until_barrier(relay: &UserspaceRelay) -> Vec<MediaEvent> {
    let probe = StreamId(u64::MAX);
    relay
        .send(MediaCommand::Release { stream: probe })
        .expect("command queued");
    let mut seen = Vec::new();
    loop {
        match relay.event_timeout(WAIT) {
            Some(MediaEvent::CommandFailed { stream, .. }) if stream == probe => return seen,
            Some(event) => seen.push(event),
            None => panic!("no barrier event within {WAIT:?}"),
        }
    }
}

fn pair_spec(n: u8, host: u8) -> LegSpec {
    LegSpec {
        local_ip: ip(n, host),
        rtcp: RtcpMode::Pair,
        latch: LatchPolicy::SdpOrSignaling,
        realm: RealmTag(u16::from(host)),
    }
}

fn bindable(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok()
}

#[test]
fn a_stream_on_reserved_endpoints_is_not_allocated_again_and_relays_media() {
    let n = 50;
    let relay = relay(n, 4, FlowConfig::default(), Duration::from_secs(30));
    relay.reserve(0, ip(n, 1), 2).expect("queued");
    relay.flush();
    relay.reserve(0, ip(n, 2), 1).expect("queued");
    relay.flush();
    let mut answers = [reserved(&relay), reserved(&relay)];
    answers.sort_by_key(|r| r.ip);
    assert_eq!((answers[0].ip, answers[0].asked), (ip(n, 1), 2));
    assert_eq!(answers[0].endpoints.len(), 2);
    assert_eq!(answers[1].endpoints.len(), 1);
    let a = answers[0].endpoints[0];
    let b = answers[1].endpoints[0];
    for endpoint in [a, b] {
        assert_eq!(
            endpoint.rtcp.map(|r| r.port()),
            Some(endpoint.rtp.port() + 1)
        );
        assert!(!bindable(endpoint.rtp), "{endpoint:?} is bound ahead");
    }
    // Bound ahead, not in use by a call: free in the gauges.
    barrier(&relay);
    assert_eq!(relay.stats().ports_reserved(ip(n, 1)), 4);
    assert_eq!(relay.stats().ports_free(ip(n, 1)), Some(8));
    assert_eq!(
        relay
            .stats()
            .streams
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    relay
        .send_claimed(S, [pair_spec(n, 1), pair_spec(n, 2)], [Some(a), Some(b)])
        .expect("queued");
    relay.flush();
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    set_remote(&relay, Leg::A, &caller);
    set_remote(&relay, Leg::B, &callee);
    let events = events_until_barrier(&relay);
    assert!(
        !events.iter().any(|e| matches!(
            e,
            MediaEvent::Allocated { .. }
                | MediaEvent::AllocationFailed { .. }
                | MediaEvent::CommandFailed { .. }
        )),
        "the claim was answered by the caller, and the stream exists: {events:?}"
    );
    assert_eq!(relay.stats().ports_reserved(ip(n, 1)), 2, "one left");
    assert_eq!(relay.stats().ports_free(ip(n, 1)), Some(6));
    for seq in 0..5 {
        caller.send_to(&rtp(0xa, seq), a.rtp).expect("send");
        assert_eq!(recv(&callee), (seq, b.rtp));
        callee.send_to(&rtp(0xb, seq), b.rtp).expect("send");
        assert_eq!(recv(&caller), (seq, a.rtp));
    }
    let [counted_a, counted_b] = release(&relay);
    assert_eq!((counted_a.packets_in, counted_b.packets_in), (5, 5));
}

#[test]
fn a_leg_the_reserve_lacks_is_bound_by_the_relay_which_then_reports_allocated() {
    let n = 51;
    let relay = relay(n, 4, FlowConfig::default(), Duration::from_secs(30));
    relay.reserve(0, ip(n, 2), 1).expect("queued");
    relay.flush();
    let b = reserved(&relay).endpoints[0];
    relay
        .send_claimed(S, [pair_spec(n, 1), pair_spec(n, 2)], [None, Some(b)])
        .expect("queued");
    relay.flush();
    let legs = match wait_for(&relay, "allocation", |e| {
        matches!(e, MediaEvent::Allocated { .. })
    }) {
        MediaEvent::Allocated { legs, .. } => legs,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(legs[1], b, "leg B on the reserved endpoint");
    assert_eq!(legs[0].rtp.ip(), ip(n, 1), "leg A bound now");
    assert!(!bindable(legs[0].rtp));
    // A reserve request the pool can't fill is answered short; an unknown
    // address gets nothing.
    relay.reserve(0, ip(n, 2), 10).expect("queued");
    relay.flush();
    let short = reserved(&relay);
    assert_eq!(
        (short.asked, short.endpoints.len()),
        (10, 3),
        "4 slots, 1 in use"
    );
    relay.reserve(0, ip(n, 9), 1).expect("queued");
    relay.flush();
    assert!(reserved(&relay).endpoints.is_empty());
}

#[test]
fn reserved_ports_leave_the_pool_and_come_back_when_given_back_or_at_shutdown() {
    let n = 52;
    let relay = relay(n, 2, FlowConfig::default(), Duration::from_secs(30));
    relay.reserve(0, ip(n, 1), 2).expect("queued");
    relay.flush();
    let held = reserved(&relay).endpoints;
    assert_eq!(held.len(), 2, "the whole pool of ip 1");
    // A plain allocation finds no port: the reserve has them.
    assert_eq!(
        allocate(&relay, n, S),
        Err(MediaError::PortsExhausted { addr: ip(n, 1) })
    );
    // Given back: closed and free at once (no SDP named them).
    relay.unreserve(0, vec![held[0]]).expect("queued");
    relay.flush();
    barrier(&relay);
    assert!(bindable(held[0].rtp), "its socket is closed");
    assert_eq!(relay.stats().ports_reserved(ip(n, 1)), 2);
    let legs = allocate(&relay, n, S).expect("a port pair is back");
    assert_eq!(legs[0], held[0], "the given-back pair, out of quarantine");
    // An endpoint given back twice, or one never reserved, changes nothing.
    relay.unreserve(0, vec![held[0]]).expect("queued");
    relay.flush();
    barrier(&relay);
    assert!(!bindable(held[0].rtp), "still the stream's");
    assert!(!bindable(held[1].rtp), "still reserved");
    relay.shutdown();
    for endpoint in held {
        assert!(bindable(endpoint.rtp), "{endpoint:?} closed at shutdown");
        assert!(endpoint.rtcp.is_some_and(bindable));
    }
}

#[test]
fn each_relay_thread_reserves_from_its_own_share_for_its_own_streams() {
    let n = 53;
    let range = PortRange::new(41000, 41007).expect("valid range");
    let mut config = RelayConfig::new(vec![(ip(n, 1), range), (ip(n, 2), range)]);
    config.threads = 2;
    let relay = UserspaceRelay::start(config).expect("relay starts");
    let stream = StreamId(3);
    let lane = relay.lane_of_stream(stream);
    assert_eq!(lane, 1);
    let mut claim = [None, None];
    for (leg, host) in [(0, 1), (1, 2)] {
        relay.reserve(lane, ip(n, host), 1).expect("queued");
        relay.flush();
        let answer = reserved(&relay);
        assert_eq!(answer.lane, 1);
        let endpoint = answer.endpoints[0];
        assert!(
            endpoint.rtp.port() >= 41004,
            "thread 1's half: {endpoint:?}"
        );
        claim[leg] = Some(endpoint);
    }
    relay
        .send_claimed(stream, [pair_spec(n, 1), pair_spec(n, 2)], claim)
        .expect("queued");
    relay.flush();
    let caller = peer(ip(n, 10));
    let callee = peer(ip(n, 20));
    for (leg, p) in [(Leg::A, &caller), (Leg::B, &callee)] {
        set_remote_of(&relay, stream, leg, p);
    }
    let [Some(a), Some(b)] = claim else {
        panic!("both legs were reserved above: {claim:?}")
    };
    // Thread 1 has the stream: its packets are relayed.
    let mut relayed = 0;
    for seq in 0..20u16 {
        caller.send_to(&rtp(7, seq), a.rtp).expect("caller sends");
        let mut buf = [0u8; 1500];
        if let Ok((_, from)) = callee.recv_from(&mut buf) {
            assert_eq!(from, b.rtp);
            relayed += 1;
        }
    }
    assert!(relayed >= 15, "{relayed} of 20 relayed");
    relay.shutdown();
}

#[test]
fn relay_threads_take_the_cpus_given_or_refuse_to_start_naming_the_field() {
    use sbc::media::userspace::RelayError;
    use sbc::sched::{CpuList, current_thread_cpus};
    let range = PortRange::new(41300, 41307).expect("valid range");
    let allowed = current_thread_cpus().expect("this thread's CPUs");
    let (first, last) = (allowed.cpus()[0], allowed.cpus()[allowed.len() - 1]);
    let mut config = RelayConfig::new(vec![(ip(7, 1), range)]);
    config.threads = 2;
    config.cpus = vec![
        CpuList::one(first).expect("one"),
        CpuList::one(last).expect("one"),
    ];
    let relay = UserspaceRelay::start(config).expect("CPUs this process may use");
    assert_eq!(relay.threads(), 2);
    relay.shutdown();

    let mut config = RelayConfig::new(vec![(ip(7, 1), range)]);
    config.cpus = vec![CpuList::one(sbc::sched::MAX_CPUS - 1).expect("one")];
    match UserspaceRelay::start(config) {
        Err(e @ RelayError::Affinity { thread: 0, .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(
                    "scheduling.media_cpus: the kernel refused CPUs 1023 for media relay thread 0"
                ),
                "{text}"
            );
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(relay) => {
            relay.shutdown();
            panic!("a relay thread started on a CPU this host lacks");
        }
    }
}
