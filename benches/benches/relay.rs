//! Load harness for the userspace media relay on loopback.
//!
//! `cargo bench -p benches --bench relay` anchors many concurrent streams
//! (default 1000, RTP/RTCP pairs on both legs) on 127.78.0.1/127.78.0.2, then
//! a paced generator sends one 172-byte RTP packet (G.711, 20 ms) per stream
//! every 20 ms from a "caller" socket to the stream's leg-A port, and a
//! receiver counts what arrives at the "callee" sockets. It reports packets
//! per second relayed and the relay thread's CPU time per relayed packet
//! (from the kernel's per-thread `schedstat`), so the number is the relay's
//! own cost whatever the generator and receiver cost. The same load then runs
//! through a bare mio forwarder (recv_from/send_to to a fixed address, no
//! flow table) as a baseline measured in the same invocation, and the ratio
//! of CPU per packet is printed: the cost of the SBC's logic over the
//! syscalls every userspace relay pays.
//!
//! Bounded: `RELAY_BENCH_STREAMS` streams (default 1000) for
//! `RELAY_BENCH_SECS` seconds (default 5) at `RELAY_BENCH_PPS` packets per
//! second per stream (default 50): 250 000 packets by default. Loopback only.
//! Under `cargo test --benches` (no `--bench` argument) it runs a small smoke
//! load so the harness keeps working.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use sbc::media::command::{
    LatchPolicy, Leg, LegSpec, MediaCommand, MediaEvent, RealmTag, Remote, RtcpMode, StreamId,
};
use sbc::media::ports::PortRange;
use sbc::media::userspace::{RelayConfig, UserspaceRelay};

const REALM_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 1));
const REALM_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 2));
const CALLER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 1, 1));
const CALLEE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 2, 1));
const BASE_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 3));
const BASE_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 4));
const PACKET_LEN: usize = 172;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(clippy::disallowed_methods)] // a load harness is an IO shell
fn now() -> Instant {
    Instant::now()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (streams, secs, pps) = if full {
        (
            env_or("RELAY_BENCH_STREAMS", 1000),
            env_or("RELAY_BENCH_SECS", 5),
            env_or("RELAY_BENCH_PPS", 50),
        )
    } else {
        (20, 1, 50)
    };
    let streams = u16::try_from(streams.clamp(1, 8000)).unwrap_or(8000);
    let duration = Duration::from_secs(secs.clamp(1, 60));
    let pps = u32::try_from(pps.clamp(1, 1000)).unwrap_or(50);
    println!(
        "{streams} streams x {pps} pps for {duration:?} (one direction, {PACKET_LEN}-byte RTP packets)"
    );

    let relay = relay_load(streams, pps, duration);
    relay.print("relay   ");
    let baseline = baseline_load(streams, pps, duration);
    baseline.print("baseline");
    if let (Some(r), Some(b)) = (relay.us_per_packet(), baseline.us_per_packet()) {
        println!("relay / baseline CPU per packet: {:.2}", r / b);
    }
    assert!(relay.relayed > 0, "nothing was relayed");
}

/// What one run measured.
struct Outcome {
    sent: u64,
    relayed: u64,
    received: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
}

impl Outcome {
    fn us_per_packet(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.relayed > 0).then(|| cpu.as_secs_f64() * 1e6 / self.relayed as f64)
    }

    fn print(&self, name: &str) {
        let rate = self.relayed as f64 / self.elapsed.as_secs_f64();
        print!(
            "{name}: sent {}, relayed {}, received {}, {rate:.0} pkt/s",
            self.sent, self.relayed, self.received
        );
        match (self.cpu, self.us_per_packet()) {
            (Some(cpu), Some(us)) => println!(
                ", forwarding thread CPU {cpu:.2?} ({:.1}% of a core), {us:.2} us/packet",
                100.0 * cpu.as_secs_f64() / self.elapsed.as_secs_f64()
            ),
            _ => println!(", thread CPU time unavailable"),
        }
    }
}

/// The SBC relay: streams anchored through commands, like the call core does.
fn relay_load(streams: u16, pps: u32, duration: Duration) -> Outcome {
    let range = PortRange::new(20000, 20000 + streams * 2 - 1).expect("port range fits");
    let mut config = RelayConfig::new(vec![(REALM_A, range), (REALM_B, range)]);
    config.command_capacity = usize::from(streams) * 4;
    let relay = UserspaceRelay::start(config).expect("relay starts");
    let mut callers = Vec::new();
    let mut callees = Vec::new();
    for id in 0..u64::from(streams) {
        let leg = |ip| LegSpec {
            local_ip: ip,
            rtcp: RtcpMode::Pair,
            latch: LatchPolicy::SdpOrSignaling,
            realm: RealmTag::default(),
        };
        let stream = StreamId(id);
        relay
            .send(MediaCommand::Allocate {
                stream,
                legs: [leg(REALM_A), leg(REALM_B)],
            })
            .expect("queued");
        let local = match relay.event_timeout(Duration::from_secs(5)) {
            Some(MediaEvent::Allocated { legs, .. }) => legs,
            other => panic!("stream {id}: {other:?}"),
        };
        let caller = UdpSocket::bind(SocketAddr::new(CALLER, 0)).expect("caller socket");
        let callee = UdpSocket::bind(SocketAddr::new(CALLEE, 0)).expect("callee socket");
        for (leg, peer) in [(Leg::A, &caller), (Leg::B, &callee)] {
            let addr = peer.local_addr().expect("address");
            let remote = Remote::rtp_pair(addr, addr.ip());
            relay
                .send(MediaCommand::SetRemote {
                    stream,
                    leg,
                    remote,
                })
                .expect("queued");
        }
        callers.push((caller, local[0].rtp));
        callees.push(callee);
    }
    while relay.try_event().is_some() {}
    let cpu_before = relay.thread_cpu_time();
    let (sent, received, elapsed) = drive(&callers, callees, pps, duration);
    let cpu = relay
        .thread_cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let relayed = relay.stats().packets_relayed.load(Ordering::Relaxed);
    relay.shutdown();
    Outcome {
        sent,
        relayed,
        received,
        elapsed,
        cpu,
    }
}

/// The same load through the least a userspace forwarder can do: a mio loop
/// that reads each socket and sends to a fixed address, no flow table.
fn baseline_load(streams: u16, pps: u32, duration: Duration) -> Outcome {
    let mut callers = Vec::new();
    let mut callees = Vec::new();
    let mut routes = Vec::new();
    for _ in 0..streams {
        let inbound = UdpSocket::bind(SocketAddr::new(BASE_A, 0)).expect("inbound socket");
        let outbound = UdpSocket::bind(SocketAddr::new(BASE_B, 0)).expect("outbound socket");
        let caller = UdpSocket::bind(SocketAddr::new(CALLER, 0)).expect("caller socket");
        let callee = UdpSocket::bind(SocketAddr::new(CALLEE, 0)).expect("callee socket");
        let to = callee.local_addr().expect("address");
        callers.push((caller, inbound.local_addr().expect("address")));
        callees.push(callee);
        routes.push((inbound, outbound, to));
    }
    let done = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || forward(routes, &done))
    };
    let (sent, received, elapsed) = drive(&callers, callees, pps, duration);
    done.store(true, Ordering::Relaxed);
    let (relayed, cpu) = forwarder.join().expect("forwarder thread");
    Outcome {
        sent,
        relayed,
        received,
        elapsed,
        cpu,
    }
}

fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}

fn forward(
    routes: Vec<(UdpSocket, UdpSocket, SocketAddr)>,
    done: &AtomicBool,
) -> (u64, Option<Duration>) {
    let cpu_before = thread_cpu();
    let mut poll = Poll::new().expect("poll");
    let mut routes: Vec<(mio::net::UdpSocket, UdpSocket, SocketAddr)> = routes
        .into_iter()
        .map(|(i, o, to)| {
            i.set_nonblocking(true).expect("non-blocking");
            (mio::net::UdpSocket::from_std(i), o, to)
        })
        .collect();
    for (n, (inbound, _, _)) in routes.iter_mut().enumerate() {
        poll.registry()
            .register(inbound, Token(n), Interest::READABLE)
            .expect("register");
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let mut forwarded = 0u64;
    while !done.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in &events {
            let Some((inbound, outbound, to)) = routes.get(event.token().0) else {
                continue;
            };
            while let Ok((n, _)) = inbound.recv_from(&mut buf) {
                if outbound.send_to(&buf[..n], to).is_ok() {
                    forwarded += 1;
                }
            }
        }
    }
    let cpu = thread_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    (forwarded, cpu)
}

/// Send `pps` packets per second from every caller for `duration`, count
/// what the callees receive. Returns (sent, received, elapsed).
fn drive(
    callers: &[(UdpSocket, SocketAddr)],
    callees: Vec<UdpSocket>,
    pps: u32,
    duration: Duration,
) -> (u64, u64, Duration) {
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (received, done) = (Arc::clone(&received), Arc::clone(&done));
        std::thread::spawn(move || receive(callees, &received, &done))
    };
    let started = now();
    let tick = Duration::from_secs(1) / pps;
    let ticks = u32::try_from(duration.as_nanos() / tick.as_nanos().max(1)).unwrap_or(u32::MAX);
    let mut packet = [0u8; PACKET_LEN];
    packet[0] = 0x80;
    let mut sent = 0u64;
    for n in 0..ticks {
        packet[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        for (i, (socket, to)) in callers.iter().enumerate() {
            packet[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            if socket.send_to(&packet, to).is_ok() {
                sent += 1;
            }
        }
        let next = started + tick * (n + 1);
        std::thread::sleep(next.saturating_duration_since(now()));
    }
    // Let the last packets drain through the forwarder: until everything
    // arrived, or nothing more did for 200 ms (bounded at 3 s).
    let drain_deadline = now() + Duration::from_secs(3);
    let mut last = u64::MAX;
    while now() < drain_deadline {
        let got = received.load(Ordering::Relaxed);
        if got >= sent || got == last {
            break;
        }
        last = got;
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = now() - started;
    done.store(true, Ordering::Relaxed);
    receiver.join().expect("receiver thread");
    (sent, received.load(Ordering::Relaxed), elapsed)
}

/// Count packets arriving at the callee sockets until told to stop.
fn receive(sockets: Vec<UdpSocket>, received: &AtomicU64, done: &AtomicBool) {
    let mut poll = Poll::new().expect("poll");
    let mut sockets: Vec<mio::net::UdpSocket> = sockets
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true).expect("non-blocking");
            mio::net::UdpSocket::from_std(s)
        })
        .collect();
    for (i, socket) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(socket, Token(i), Interest::READABLE)
            .expect("register");
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !done.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for event in &events {
            let Some(socket) = sockets.get(event.token().0) else {
                continue;
            };
            while socket.recv_from(&mut buf).is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
