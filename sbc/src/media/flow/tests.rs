//! Flow table rules on a virtual clock: no sockets, no sleeping.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::media::command::LatchPolicy;
use crate::media::ports::PortRange;

const QUARANTINE: Duration = Duration::from_secs(30);
const S: StreamId = StreamId(7);
const SSRC_A: u32 = 0xaaaa_0001;
const SSRC_B: u32 = 0xbbbb_0002;

fn realm_a() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
}

fn realm_b() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address parses")
}

#[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
fn t0() -> Instant {
    Instant::now()
}

fn table(slots: u16) -> FlowTable {
    let range = PortRange::new(40000, 40000 + slots * 2 - 1).expect("valid range");
    let ports = PortAllocator::new([(realm_a(), range), (realm_b(), range)], QUARANTINE);
    FlowTable::new(FlowConfig::default(), ports)
}

/// The realm tag of a test leg on `ip`: unrelated to the address's
/// position, so a test that mixes them up fails.
fn tag(ip: IpAddr) -> RealmTag {
    RealmTag(if ip == realm_b() { 5 } else { 3 })
}

fn spec(ip: IpAddr, rtcp: RtcpMode) -> LegSpec {
    LegSpec {
        local_ip: ip,
        rtcp,
        latch: LatchPolicy::SdpOrSignaling,
        realm: tag(ip),
    }
}

fn rtp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 0, 0xde, 0xad];
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0, 6, 0, 0, 0, 0];
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p
}

fn drain(t: &mut FlowTable) -> Vec<MediaEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

/// A stream with pairs on both legs, confirmed, remotes signaled: leg A a
/// natted phone (SDP 10.0.0.5:4000, signaling from 203.0.113.5), leg B a
/// public carrier at 198.51.100.20:6000.
fn call(t: &mut FlowTable, now: Instant) -> [LocalEndpoint; 2] {
    let work = t.handle_command(
        now,
        MediaCommand::Allocate {
            stream: S,
            legs: [
                spec(realm_a(), RtcpMode::Pair),
                spec(realm_b(), RtcpMode::Pair),
            ],
        },
    );
    let SocketWork::Bind { legs, .. } = work else {
        panic!("allocation failed: {work:?} {:?}", drain(t))
    };
    t.confirm_allocation(S);
    let a = Remote::rtp_pair(addr("10.0.0.5:4000"), "203.0.113.5".parse().expect("ip"));
    let b = Remote::rtp_pair(
        addr("198.51.100.20:6000"),
        "198.51.100.20".parse().expect("ip"),
    );
    t.handle_command(
        now,
        MediaCommand::SetRemote {
            stream: S,
            leg: Leg::A,
            remote: a,
        },
    );
    t.handle_command(
        now,
        MediaCommand::SetRemote {
            stream: S,
            leg: Leg::B,
            remote: b,
        },
    );
    legs
}

fn counters(t: &FlowTable) -> [LegCounters; 2] {
    t.counters(S).expect("stream is allocated")
}

#[test]
fn allocation_reports_anchored_endpoints_per_leg_after_confirmation() {
    let now = t0();
    let mut t = table(4);
    let work = t.handle_command(
        now,
        MediaCommand::Allocate {
            stream: S,
            legs: [
                spec(realm_a(), RtcpMode::Mux),
                spec(realm_b(), RtcpMode::Pair),
            ],
        },
    );
    let SocketWork::Bind { stream, legs } = work else {
        panic!("expected Bind, got {work:?}")
    };
    assert_eq!(stream, S);
    assert!(
        drain(&mut t).is_empty(),
        "nothing reported before the backend bound the sockets"
    );
    assert_eq!(legs[0].rtp.ip(), realm_a());
    assert_eq!(legs[0].rtcp, None, "muxed leg has one port");
    assert_eq!(legs[1].rtp.ip(), realm_b());
    assert_eq!(legs[1].rtp.port() % 2, 0);
    assert_eq!(legs[1].rtcp.map(|a| a.port()), Some(legs[1].rtp.port() + 1));
    t.confirm_allocation(S);
    assert_eq!(
        drain(&mut t),
        vec![MediaEvent::Allocated { stream: S, legs }]
    );
}

#[test]
fn rtp_is_relayed_both_ways_between_anchored_legs() {
    let now = t0();
    let mut t = table(4);
    let local = call(&mut t, now);
    let a_src = addr("203.0.113.5:61000");
    let got = t.on_packet(now, S, Leg::A, Component::Rtp, a_src, &rtp(SSRC_A));
    let expected = Route {
        leg: Leg::B,
        component: Component::Rtp,
        from: local[1].rtp,
        to: addr("198.51.100.20:6000"),
    };
    assert_eq!(got, Forward::To(expected));
    let b_src = addr("198.51.100.20:6000");
    let got = t.on_packet(now, S, Leg::B, Component::Rtp, b_src, &rtp(SSRC_B));
    let expected = Route {
        leg: Leg::A,
        component: Component::Rtp,
        from: local[0].rtp,
        to: a_src,
    };
    assert_eq!(
        got,
        Forward::To(expected),
        "symmetric RTP: back to the latched NAT address"
    );
    let [a, b] = counters(&t);
    assert_eq!(
        (a.packets_in, a.packets_out, b.packets_in, b.packets_out),
        (1, 1, 1, 1)
    );
    assert_eq!(a.bytes_in, 14);
    let events = drain(&mut t);
    assert!(events.contains(&MediaEvent::Latched {
        stream: S,
        leg: Leg::A,
        component: Component::Rtp,
        source: a_src
    }));
}

#[test]
fn injection_is_dropped_and_counted_before_and_after_latching() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    let attacker = addr("192.0.2.66:5000");
    for ssrc in [SSRC_A, 1] {
        assert_eq!(
            t.on_packet(now, S, Leg::A, Component::Rtp, attacker, &rtp(ssrc)),
            Forward::Drop(DropCause::Source)
        );
    }
    let real = addr("203.0.113.5:61000");
    assert!(matches!(
        t.on_packet(now, S, Leg::A, Component::Rtp, real, &rtp(SSRC_A)),
        Forward::To(_)
    ));
    for ssrc in [SSRC_A, 1] {
        assert_eq!(
            t.on_packet(now, S, Leg::A, Component::Rtp, attacker, &rtp(ssrc)),
            Forward::Drop(DropCause::Source)
        );
    }
    let b = addr("198.51.100.20:6000");
    let back = t.on_packet(now, S, Leg::B, Component::Rtp, b, &rtp(SSRC_B));
    assert!(
        matches!(back, Forward::To(r) if r.to == real),
        "media still goes to the peer: {back:?}"
    );
    let [a, _] = counters(&t);
    assert_eq!(a.dropped_source, 4);
    assert_eq!(a.packets_in, 1);
}

/// Allocates [`S`] with leg A under `policy`, and signals leg A's offer at
/// `offer` and leg B's answer at `answer` (the same remotes as [`call`]).
fn ringing_call(t: &mut FlowTable, policy: LatchPolicy, offer: Instant, answer: Instant) {
    let mut a_spec = spec(realm_a(), RtcpMode::Pair);
    a_spec.latch = policy;
    let work = t.handle_command(
        offer,
        MediaCommand::Allocate {
            stream: S,
            legs: [a_spec, spec(realm_b(), RtcpMode::Pair)],
        },
    );
    assert!(matches!(work, SocketWork::Bind { .. }), "{work:?}");
    t.confirm_allocation(S);
    let a = Remote::rtp_pair(addr("10.0.0.5:4000"), "203.0.113.5".parse().expect("ip"));
    let b = Remote::rtp_pair(
        addr("198.51.100.20:6000"),
        "198.51.100.20".parse().expect("ip"),
    );
    for (now, leg, remote) in [(offer, Leg::A, a), (answer, Leg::B, b)] {
        t.handle_command(
            now,
            MediaCommand::SetRemote {
                stream: S,
                leg,
                remote,
            },
        );
    }
}

#[test]
fn a_natted_caller_latches_after_a_long_ringing() {
    // The caller's offer opens its window; it sends only once the answer
    // told it where to, 12 s later (past the table's 10 s window).
    let offer = t0();
    let answer = offer + Duration::from_secs(12);
    let mut t = table(4);
    ringing_call(&mut t, LatchPolicy::SdpOrSignaling, offer, answer);
    drain(&mut t);
    let real = addr("203.0.113.5:61000");
    let first = answer + Duration::from_millis(100);
    assert!(
        matches!(
            t.on_packet(first, S, Leg::A, Component::Rtp, real, &rtp(SSRC_A)),
            Forward::To(_)
        ),
        "the caller's first packet after the answer latches"
    );
    assert!(drain(&mut t).contains(&MediaEvent::Latched {
        stream: S,
        leg: Leg::A,
        component: Component::Rtp,
        source: real
    }));
    // RTCP on its own port too.
    assert!(matches!(
        t.on_packet(
            first,
            S,
            Leg::A,
            Component::Rtcp,
            addr("203.0.113.5:61001"),
            &rtcp(SSRC_A)
        ),
        Forward::To(_)
    ));
}

#[test]
fn a_leg_sending_from_an_unlearnable_source_is_reported_once_after_its_window() {
    let now = t0();
    let window = FlowConfig::default().learning_window;
    let mut t = table(4);
    ringing_call(&mut t, LatchPolicy::SdpOrSignaling, now, now);
    drain(&mut t);
    // A multi-homed phone: neither its SDP's nor its signaling's IP.
    let other_nic = addr("203.0.113.77:4000");
    let mut reports = 0;
    for ms in (0..window.as_millis() as u64 + 3_000).step_by(20) {
        let at = now + Duration::from_millis(ms);
        assert_eq!(
            t.on_packet(at, S, Leg::A, Component::Rtp, other_nic, &rtp(SSRC_A)),
            Forward::Drop(DropCause::Source)
        );
        for event in drain(&mut t) {
            assert_eq!(
                event,
                MediaEvent::NotLatched {
                    stream: S,
                    leg: Leg::A
                }
            );
            assert!(at >= now + window, "reported inside the window, at {ms} ms");
            assert!(
                at < now + window + Duration::from_millis(100),
                "reported late, at {ms} ms"
            );
            reports += 1;
        }
    }
    assert_eq!(reports, 1, "once per negotiation");
}

#[test]
fn realm_networks_let_a_first_latch_come_from_the_realms_other_addresses() {
    let now = t0();
    let mut t = table(4);
    let mut networks = vec![Vec::new(); 6];
    networks[tag(realm_a()).index()] = vec!["203.0.113.0/24".parse().expect("net")];
    t.set_realm_networks(networks);
    ringing_call(&mut t, LatchPolicy::RealmNetworks, now, now);
    drain(&mut t);
    let outsider = addr("192.0.2.66:4000");
    assert_eq!(
        t.on_packet(now, S, Leg::A, Component::Rtp, outsider, &rtp(SSRC_A)),
        Forward::Drop(DropCause::Source),
        "not in the realm's networks"
    );
    let other_nic = addr("203.0.113.77:4000");
    assert!(matches!(
        t.on_packet(now, S, Leg::A, Component::Rtp, other_nic, &rtp(SSRC_A)),
        Forward::To(_)
    ));
    // Re-latching keeps the strict rule: another address of the network
    // with the same SSRC, after the latched one went quiet, is refused.
    let later = now + Duration::from_secs(1);
    assert_eq!(
        t.on_packet(
            later,
            S,
            Leg::A,
            Component::Rtp,
            addr("203.0.113.78:4000"),
            &rtp(SSRC_A)
        ),
        Forward::Drop(DropCause::Source)
    );
    assert!(
        drain(&mut t)
            .iter()
            .all(|e| !matches!(e, MediaEvent::NotLatched { .. }))
    );
}

#[test]
fn rtcp_uses_the_rtcp_ports_unless_the_far_leg_is_muxed() {
    let now = t0();
    let mut t = table(4);
    let local = call(&mut t, now);
    let a_rtcp = addr("203.0.113.5:61001");
    let got = t.on_packet(now, S, Leg::A, Component::Rtcp, a_rtcp, &rtcp(SSRC_A));
    let Some(b_rtcp_local) = local[1].rtcp else {
        panic!("leg B has an RTCP port")
    };
    let expected = Route {
        leg: Leg::B,
        component: Component::Rtcp,
        from: b_rtcp_local,
        to: addr("198.51.100.20:6001"),
    };
    assert_eq!(got, Forward::To(expected));
    // Leg B's answer accepts mux: its RTCP now goes through its RTP port.
    let mut b = Remote::rtp_pair(
        addr("198.51.100.20:6000"),
        "198.51.100.20".parse().expect("ip"),
    );
    b.rtcp_mux = true;
    t.handle_command(
        now,
        MediaCommand::SetRemote {
            stream: S,
            leg: Leg::B,
            remote: b,
        },
    );
    let got = t.on_packet(now, S, Leg::A, Component::Rtcp, a_rtcp, &rtcp(SSRC_A));
    let expected = Route {
        leg: Leg::B,
        component: Component::Rtp,
        from: local[1].rtp,
        to: addr("198.51.100.20:6000"),
    };
    assert_eq!(got, Forward::To(expected));
    // Muxed RTCP arriving on B's RTP port goes out of A's RTCP port.
    let got = t.on_packet(
        now,
        S,
        Leg::B,
        Component::Rtp,
        addr("198.51.100.20:6000"),
        &rtcp(SSRC_B),
    );
    assert!(
        matches!(got, Forward::To(r) if r.component == Component::Rtcp && r.to == a_rtcp),
        "{got:?}"
    );
}

#[test]
fn hold_stops_rtp_but_not_rtcp_and_resume_restores_it() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    let a = addr("10.0.0.5:4000");
    t.handle_command(
        now,
        MediaCommand::SetDirection {
            stream: S,
            leg: Leg::B,
            direction: Direction::Inactive,
        },
    );
    assert_eq!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A)),
        Forward::Drop(DropCause::Direction)
    );
    assert!(matches!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtcp(SSRC_A)),
        Forward::To(_)
    ));
    t.handle_command(
        now,
        MediaCommand::SetDirection {
            stream: S,
            leg: Leg::B,
            direction: Direction::SendRecv,
        },
    );
    assert!(matches!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A)),
        Forward::To(_)
    ));
    let [c, _] = counters(&t);
    assert_eq!((c.dropped_direction, c.packets_in), (1, 3));
}

#[test]
fn music_on_hold_flows_one_way() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    t.handle_command(
        now,
        MediaCommand::SetDirection {
            stream: S,
            leg: Leg::A,
            direction: Direction::SendOnly,
        },
    );
    t.handle_command(
        now,
        MediaCommand::SetDirection {
            stream: S,
            leg: Leg::B,
            direction: Direction::RecvOnly,
        },
    );
    let a = addr("10.0.0.5:4000");
    let b = addr("198.51.100.20:6000");
    assert!(matches!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A)),
        Forward::To(_)
    ));
    assert_eq!(
        t.on_packet(now, S, Leg::B, Component::Rtp, b, &rtp(SSRC_B)),
        Forward::Drop(DropCause::Direction)
    );
}

#[test]
fn malformed_packets_and_missing_remotes_are_counted() {
    let now = t0();
    let mut t = table(4);
    t.handle_command(
        now,
        MediaCommand::Allocate {
            stream: S,
            legs: [
                spec(realm_a(), RtcpMode::Pair),
                spec(realm_b(), RtcpMode::Pair),
            ],
        },
    );
    t.confirm_allocation(S);
    let a = addr("10.0.0.5:4000");
    assert_eq!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A)),
        Forward::Drop(DropCause::Source),
        "no remote yet"
    );
    let remote = Remote::rtp_pair(a, a.ip());
    t.handle_command(
        now,
        MediaCommand::SetRemote {
            stream: S,
            leg: Leg::A,
            remote,
        },
    );
    assert_eq!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A)),
        Forward::Drop(DropCause::Send),
        "B has no remote"
    );
    assert_eq!(
        t.on_packet(now, S, Leg::A, Component::Rtp, a, b"\x00\x01junk"),
        Forward::Drop(DropCause::Malformed)
    );
    let [ca, cb] = counters(&t);
    assert_eq!(
        (
            ca.dropped_source,
            ca.dropped_malformed,
            ca.packets_in,
            cb.dropped_send
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(t.route(S, Leg::A, PacketKind::Rtp), None);
    assert!(t.route(S, Leg::B, PacketKind::Rtp).is_some());
}

#[test]
fn inactivity_times_out_once_and_packets_keep_it_alive() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    drain(&mut t);
    let limit = FlowConfig::default().inactivity_timeout;
    let a = addr("10.0.0.5:4000");
    let mut clock = now;
    let mut last_packet = now;
    while clock < now + limit * 2 {
        t.on_packet(clock, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A));
        last_packet = clock;
        clock += Duration::from_secs(1);
        t.handle_timeout(clock);
    }
    let events = drain(&mut t);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, MediaEvent::TimedOut { .. })),
        "media kept flowing: {events:?}"
    );
    let silent_from = last_packet;
    let mut fired = None;
    while clock < silent_from + limit * 3 {
        clock = t
            .poll_timeout()
            .expect("a stream is allocated, the timer is armed");
        t.handle_timeout(clock);
        if let Some(event) = t.poll_event() {
            assert_eq!(
                event,
                MediaEvent::TimedOut {
                    stream: S,
                    reason: TimeoutReason::NoMedia
                }
            );
            assert!(fired.is_none(), "reported twice");
            fired = Some(clock);
        }
    }
    let fired = fired.expect("the timeout fired");
    let late = fired - silent_from;
    assert!(
        late >= limit && late <= limit + limit / 4 + Duration::from_secs(1),
        "fired after {late:?}"
    );
}

#[test]
fn a_held_stream_uses_the_hold_timeout() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    for leg in [Leg::A, Leg::B] {
        t.handle_command(
            now,
            MediaCommand::SetDirection {
                stream: S,
                leg,
                direction: Direction::Inactive,
            },
        );
    }
    drain(&mut t);
    let config = FlowConfig::default();
    t.handle_timeout(now + config.inactivity_timeout * 2);
    assert!(drain(&mut t).is_empty(), "on hold, silence is expected");
    t.handle_timeout(now + config.hold_timeout);
    assert_eq!(
        drain(&mut t),
        vec![MediaEvent::TimedOut {
            stream: S,
            reason: TimeoutReason::OnHold
        }]
    );
}

#[test]
fn no_timeout_before_both_legs_are_signaled() {
    let now = t0();
    let mut t = table(4);
    t.handle_command(
        now,
        MediaCommand::Allocate {
            stream: S,
            legs: [
                spec(realm_a(), RtcpMode::Pair),
                spec(realm_b(), RtcpMode::Pair),
            ],
        },
    );
    t.confirm_allocation(S);
    drain(&mut t);
    t.handle_timeout(now + Duration::from_secs(3600));
    assert!(drain(&mut t).is_empty(), "a ringing call has no media yet");
}

#[test]
fn release_reports_counters_and_a_full_pool_reuses_the_released_ports() {
    let now = t0();
    let mut t = table(1);
    let local = call(&mut t, now);
    t.on_packet(
        now,
        S,
        Leg::A,
        Component::Rtp,
        addr("10.0.0.5:4000"),
        &rtp(SSRC_A),
    );
    drain(&mut t);
    let work = t.handle_command(now, MediaCommand::Release { stream: S });
    assert_eq!(
        work,
        SocketWork::Close {
            stream: S,
            legs: local
        }
    );
    let events = drain(&mut t);
    let [MediaEvent::Released { stream, counters }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(*stream, S);
    assert_eq!((counters[0].packets_in, counters[1].packets_out), (1, 1));
    let again = [
        spec(realm_a(), RtcpMode::Pair),
        spec(realm_b(), RtcpMode::Pair),
    ];
    // One slot per address: its quarantine ends early rather than refuse.
    let work = t.handle_command(
        now + QUARANTINE / 2,
        MediaCommand::Allocate {
            stream: StreamId(8),
            legs: again,
        },
    );
    assert!(
        matches!(work, SocketWork::Bind { legs, .. } if legs == local),
        "{work:?}"
    );
    let work = t.handle_command(
        now + QUARANTINE / 2,
        MediaCommand::Allocate {
            stream: StreamId(9),
            legs: again,
        },
    );
    assert_eq!(work, SocketWork::None, "every port in use");
    let error = MediaError::PortsExhausted { addr: realm_a() };
    assert_eq!(
        drain(&mut t),
        vec![MediaEvent::AllocationFailed {
            stream: StreamId(9),
            error
        }]
    );
}

#[test]
fn a_failed_second_leg_gives_the_first_legs_ports_back() {
    let now = t0();
    let mut t = table(1);
    let legs = [
        spec(realm_a(), RtcpMode::Pair),
        spec(IpAddr::V4(Ipv4Addr::new(127, 9, 9, 9)), RtcpMode::Pair),
    ];
    t.handle_command(now, MediaCommand::Allocate { stream: S, legs });
    assert!(matches!(
        drain(&mut t).as_slice(),
        [MediaEvent::AllocationFailed {
            error: MediaError::UnknownAddress { .. },
            ..
        }]
    ));
    assert_eq!(t.ports().usage(realm_a()).map(|u| u.in_use), Some(0));
    assert!(t.is_empty());
}

#[test]
fn abort_allocation_forgets_the_stream_and_reports_why() {
    let now = t0();
    let mut t = table(2);
    let legs = [
        spec(realm_a(), RtcpMode::Pair),
        spec(realm_b(), RtcpMode::Pair),
    ];
    let SocketWork::Bind { legs: local, .. } =
        t.handle_command(now, MediaCommand::Allocate { stream: S, legs })
    else {
        panic!("allocation failed")
    };
    let error = MediaError::Bind {
        addr: local[0].rtp,
        kind: std::io::ErrorKind::AddrInUse,
    };
    t.abort_allocation(now, S, error.clone());
    assert_eq!(
        drain(&mut t),
        vec![MediaEvent::AllocationFailed { stream: S, error }]
    );
    assert!(t.is_empty());
    assert_eq!(
        t.ports().usage(realm_a()).map(|u| u.quarantined),
        Some(2),
        "ports someone holds stay out"
    );
}

#[test]
fn commands_for_unknown_or_duplicate_streams_fail_visibly() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    drain(&mut t);
    let legs = [
        spec(realm_a(), RtcpMode::Pair),
        spec(realm_b(), RtcpMode::Pair),
    ];
    t.handle_command(now, MediaCommand::Allocate { stream: S, legs });
    let other = StreamId(99);
    t.handle_command(
        now,
        MediaCommand::SetDirection {
            stream: other,
            leg: Leg::A,
            direction: Direction::Inactive,
        },
    );
    t.handle_command(now, MediaCommand::Release { stream: other });
    assert_eq!(
        drain(&mut t),
        vec![
            MediaEvent::AllocationFailed {
                stream: S,
                error: MediaError::DuplicateStream { stream: S }
            },
            MediaEvent::CommandFailed {
                stream: other,
                error: MediaError::UnknownStream { stream: other }
            },
            MediaEvent::CommandFailed {
                stream: other,
                error: MediaError::UnknownStream { stream: other }
            },
        ]
    );
    assert_eq!(
        t.on_packet(
            now,
            other,
            Leg::A,
            Component::Rtp,
            addr("10.0.0.5:4000"),
            &rtp(1)
        ),
        Forward::Drop(DropCause::UnknownFlow)
    );
}

fn changed(t: &mut FlowTable) -> Vec<StreamId> {
    std::iter::from_fn(|| t.poll_changed()).collect()
}

#[test]
fn fast_flows_need_a_latched_source_and_follow_hold_and_release() {
    let now = t0();
    let mut t = table(4);
    let local = call(&mut t, now);
    assert_eq!(changed(&mut t), vec![S], "two remotes, one notification");
    assert!(
        t.fast_flows(S).is_empty(),
        "nothing latched: every packet goes through userspace"
    );
    let a_src = addr("203.0.113.5:61000");
    let b_src = addr("198.51.100.20:6000");
    t.on_packet(now, S, Leg::A, Component::Rtp, a_src, &rtp(SSRC_A));
    t.on_packet(now, S, Leg::A, Component::Rtp, a_src, &rtp(SSRC_A));
    assert_eq!(changed(&mut t), vec![S]);
    let a_to_b = FastFlow {
        stream: S,
        leg: Leg::A,
        realm: tag(realm_a()),
        local: local[0].rtp,
        source: a_src,
        kind: PacketKind::Rtp,
        route: Route {
            leg: Leg::B,
            component: Component::Rtp,
            from: local[1].rtp,
            to: b_src,
        },
    };
    assert_eq!(t.fast_flows(S), vec![a_to_b]);
    t.on_packet(now, S, Leg::B, Component::Rtp, b_src, &rtp(SSRC_B));
    assert_eq!(changed(&mut t), vec![S]);
    let flows = t.fast_flows(S);
    assert_eq!(flows.len(), 2, "{flows:?}");
    assert!(
        flows.iter().any(|f| f.leg == Leg::B
            && f.realm == tag(realm_b())
            && f.source == b_src
            && f.route.to == a_src),
        "leg B's flow carries leg B's tag: {flows:?}"
    );
    t.handle_command(
        now,
        MediaCommand::SetDirection {
            stream: S,
            leg: Leg::B,
            direction: Direction::Inactive,
        },
    );
    assert_eq!(changed(&mut t), vec![S]);
    assert!(
        t.fast_flows(S).is_empty(),
        "held: RTP must come back to userspace: {:?}",
        t.fast_flows(S)
    );
    t.handle_command(now, MediaCommand::Release { stream: S });
    assert_eq!(changed(&mut t), vec![S]);
    assert!(t.fast_flows(S).is_empty());
    assert!(changed(&mut t).is_empty());
}

#[test]
fn a_muxed_inbound_port_lists_rtp_and_rtcp_flows() {
    let now = t0();
    let mut t = table(4);
    let legs = [
        spec(realm_a(), RtcpMode::Mux),
        spec(realm_b(), RtcpMode::Pair),
    ];
    t.handle_command(now, MediaCommand::Allocate { stream: S, legs });
    t.confirm_allocation(S);
    let mut a = Remote::rtp_pair(addr("10.0.0.5:4000"), "10.0.0.5".parse().expect("ip"));
    a.rtcp_mux = true;
    let b = Remote::rtp_pair(
        addr("198.51.100.20:6000"),
        "198.51.100.20".parse().expect("ip"),
    );
    t.handle_command(
        now,
        MediaCommand::SetRemote {
            stream: S,
            leg: Leg::A,
            remote: a,
        },
    );
    t.handle_command(
        now,
        MediaCommand::SetRemote {
            stream: S,
            leg: Leg::B,
            remote: b,
        },
    );
    t.on_packet(
        now,
        S,
        Leg::A,
        Component::Rtp,
        addr("10.0.0.5:4000"),
        &rtp(SSRC_A),
    );
    let flows = t.fast_flows(S);
    let kinds: Vec<_> = flows
        .iter()
        .map(|f| (f.kind, f.route.component, f.route.to.port()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (PacketKind::Rtp, Component::Rtp, 6000),
            (PacketKind::Rtcp, Component::Rtcp, 6001)
        ]
    );
}

#[test]
fn fast_path_counts_add_up_and_keep_the_stream_alive() {
    let now = t0();
    let mut t = table(4);
    call(&mut t, now);
    // The first packet latches in userspace.
    let a_src = addr("203.0.113.5:61000");
    t.on_packet(now, S, Leg::A, Component::Rtp, a_src, &rtp(SSRC_A));
    drain(&mut t);
    let limit = FlowConfig::default().inactivity_timeout;
    let mut clock = now;
    while clock < now + limit * 3 {
        clock += Duration::from_secs(1);
        t.add_fast_counts(
            clock,
            FastCounts {
                stream: S,
                leg: Leg::A,
                realm: tag(realm_a()),
                packets: 50,
                bytes: 50 * 172,
            },
        );
        t.handle_timeout(clock);
    }
    let events = drain(&mut t);
    assert!(
        events.is_empty(),
        "the fast path's packets count as activity: {events:?}"
    );
    let [a, b] = counters(&t);
    let first = rtp(SSRC_A).len() as u64;
    assert_eq!(
        (a.packets_in, b.packets_out, b.bytes_out),
        (9001, 9001, 9000 * 172 + first)
    );
    assert_eq!(
        (a.fast_packets_in, a.fast_bytes_in, b.fast_packets_in),
        (9000, 9000 * 172, 0),
        "the fast path's share is kept apart (without the userspace packet), \
         on the leg it arrived on"
    );
}

#[test]
fn legs_sharing_a_media_address_keep_their_own_realm_tags() {
    // Two carriers on one public address: the tag comes from the leg.
    let now = t0();
    let mut t = table(4);
    let on = |realm| LegSpec {
        realm: RealmTag(realm),
        ..spec(realm_a(), RtcpMode::Pair)
    };
    let legs = [on(1), on(2)];
    let work = t.handle_command(now, MediaCommand::Allocate { stream: S, legs });
    let SocketWork::Bind { legs: local, .. } = work else {
        panic!("allocation failed: {work:?}")
    };
    t.confirm_allocation(S);
    assert_eq!(t.realms(S), Some([RealmTag(1), RealmTag(2)]));
    assert_eq!(t.realms(StreamId(99)), None);
    let (a_src, b_src) = (addr("192.0.2.10:4000"), addr("192.0.2.20:6000"));
    for (leg, src) in [(Leg::A, a_src), (Leg::B, b_src)] {
        let remote = Remote::rtp_pair(src, src.ip());
        t.handle_command(
            now,
            MediaCommand::SetRemote {
                stream: S,
                leg,
                remote,
            },
        );
    }
    t.on_packet(now, S, Leg::A, Component::Rtp, a_src, &rtp(SSRC_A));
    t.on_packet(now, S, Leg::B, Component::Rtp, b_src, &rtp(SSRC_B));
    let mut seen: Vec<_> = t
        .fast_flows(S)
        .iter()
        .map(|f| (f.leg == Leg::B, f.realm, f.local))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (false, RealmTag(1), local[0].rtp),
            (true, RealmTag(2), local[1].rtp)
        ]
    );
}

#[test]
fn remotes_the_relay_must_not_send_to_are_dropped() {
    let now = t0();
    let a = addr("10.0.0.5:4000");
    for bad in [
        "0.0.0.0:6000",
        "127.0.0.1:5060",
        "[::ffff:127.0.0.1]:5060",
        "224.0.0.1:6000",
        "255.255.255.255:6000",
        "198.51.100.20:0",
        "[ff02::1]:6000",
        "[::]:6000",
    ] {
        let mut t = table(4);
        call(&mut t, now);
        let remote = Remote::rtp_pair(addr(bad), "198.51.100.20".parse().expect("ip"));
        t.handle_command(
            now,
            MediaCommand::SetRemote {
                stream: S,
                leg: Leg::B,
                remote,
            },
        );
        assert_eq!(
            t.on_packet(now, S, Leg::A, Component::Rtp, a, &rtp(SSRC_A)),
            Forward::Drop(DropCause::Send),
            "sent to {bad}"
        );
        assert_eq!(counters(&t)[1].dropped_send, 1, "{bad}");
        assert_eq!(t.route(S, Leg::A, PacketKind::Rtp), None, "{bad}");
    }
}

#[test]
fn loopback_peers_are_fine_on_a_loopback_media_address() {
    let now = t0();
    let lo = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let range = PortRange::new(40000, 40007).expect("valid range");
    let mut t = FlowTable::new(
        FlowConfig::default(),
        PortAllocator::new([(lo, range)], QUARANTINE),
    );
    let legs = [spec(lo, RtcpMode::Mux), spec(lo, RtcpMode::Mux)];
    t.handle_command(now, MediaCommand::Allocate { stream: S, legs });
    for (leg, port) in [(Leg::A, 5000), (Leg::B, 6000)] {
        let remote = Remote::rtp_pair(SocketAddr::new(lo, port), lo);
        t.handle_command(
            now,
            MediaCommand::SetRemote {
                stream: S,
                leg,
                remote,
            },
        );
    }
    let got = t.on_packet(
        now,
        S,
        Leg::A,
        Component::Rtp,
        SocketAddr::new(lo, 5000),
        &rtp(SSRC_A),
    );
    assert!(
        matches!(got, Forward::To(r) if r.to == SocketAddr::new(lo, 6000)),
        "{got:?}"
    );
}

#[test]
fn stun_is_told_apart_from_junk() {
    // A binding request: type 0x0001, length 0, the magic cookie, an id.
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    assert!(super::is_stun(&stun));
    assert!(!super::is_stun(&stun[..19]), "shorter than a header");
    let mut rtp = stun.clone();
    rtp[0] = 0x80;
    assert!(!super::is_stun(&rtp), "version 2 is RTP/RTCP");
    let mut junk = stun.clone();
    junk[4] = 0;
    assert!(!super::is_stun(&junk), "no magic cookie");
}
