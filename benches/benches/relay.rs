//! Load harness for the userspace media relay on loopback, side by side with
//! a bare forwarder and with rtpengine.
//!
//! `cargo bench -p benches --bench relay` anchors many concurrent streams
//! (default 1000, RTP/RTCP pairs on both legs) on 127.78.0.1/127.78.0.2, then
//! a paced generator sends one 172-byte RTP packet (G.711, 20 ms) per stream
//! every 20 ms from a "caller" socket to the stream's leg-A port, and a
//! receiver counts what arrives at the "callee" sockets. It reports packets
//! per second and the forwarding CPU time per packet delivered to the
//! callees, so the number is the forwarder's own cost whatever the generator
//! and receiver cost. The same load, in the same invocation, runs through:
//!
//! - `relay`, `relay/2t`: the SBC's userspace relay with one thread, then
//!   two (`RELAY_BENCH_THREADS`, default `1,2`; each thread owns its
//!   streams' sockets); CPU of its relay threads (the kernel's per-thread
//!   `schedstat`). At a load one thread cannot carry (raise
//!   `RELAY_BENCH_STREAMS`), compare loss and packets a second.
//! - `baseline`: a bare mio forwarder (recv_from/send_to to a fixed address,
//!   no flow table): the syscalls every userspace relay pays. CPU of its
//!   thread.
//! - `rtpengine/Nt`: rtpengine (Debian's 10.5) started as a child process,
//!   userspace forwarding only (`--table=-1`, no kernel module),
//!   `--num-threads=N` (default 1, like our one relay thread; set
//!   `RELAY_BENCH_RTPENGINE_THREADS=1,2` for more), media interfaces
//!   127.78.0.5 and 127.78.0.6, ports 40000-59999, ng control on 127.78.0.7.
//!   Each stream is set up over the ng protocol like a SIP proxy would (an
//!   `offer` with the caller's SDP, an `answer` with the callee's; plain
//!   RTP/AVP, ICE removed, default symmetric latching). CPU is the whole
//!   process: the sum of every thread's `schedstat` (its worker thread does
//!   nearly all of it; the row below it names the threads).
//!   `benches/scripts/install-rtpengine.sh` installs it; without it the bench
//!   says so in one line and measures the other paths.
//!   `RELAY_BENCH_RTPENGINE` names another binary. It logs errors only, to a
//!   file in the temp directory that the row names if anything was logged
//!   (an overloaded rtpengine logs each socket that fell behind).
//!
//! Each path runs `RELAY_BENCH_ROUNDS` times (default 2), in mirrored order
//! (relay, rtpengine, baseline; then baseline, rtpengine, relay) so no path
//! always runs first or last on a noisy machine. The totals divide all
//! rounds' CPU by all rounds' packets, and the ratios relay / baseline and
//! relay / rtpengine (the target: <= 1.0) come from those totals.
//!
//! Bounded: `RELAY_BENCH_STREAMS` streams (default 1000) for
//! `RELAY_BENCH_SECS` seconds (default 5) at `RELAY_BENCH_PPS` packets per
//! second per stream (default 50): 250 000 packets per path and round by
//! default. Loopback only. Under `cargo test --benches` (no `--bench`
//! argument) it runs one small round of relay and baseline so the harness
//! keeps working; it never starts rtpengine then.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::rtpengine::{self, Rtpengine, RtpengineError, audio_sdp};
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
const RTPE_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 5));
const RTPE_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 6));
const RTPE_NG: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 78, 0, 7));
/// rtpengine's media ports, per interface: RTP+RTCP for one leg of each of
/// up to 8000 streams, clear of the SBC relay's 20000.. range.
const RTPE_PORTS: (u16, u16) = (40000, 59999);
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

/// One way of forwarding the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The SBC's relay with this many threads.
    Relay(usize),
    Baseline,
    /// rtpengine with this many worker threads.
    Rtpengine(u32),
}

impl Path {
    fn name(self) -> String {
        match self {
            Self::Relay(1) => "relay".to_owned(),
            Self::Relay(threads) => format!("relay/{threads}t"),
            Self::Baseline => "baseline".to_owned(),
            Self::Rtpengine(threads) => format!("rtpengine/{threads}t"),
        }
    }
}

/// The load every path carries.
#[derive(Debug, Clone, Copy)]
struct Load {
    streams: u16,
    pps: u32,
    duration: Duration,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (streams, secs, pps, rounds) = if full {
        (
            env_or("RELAY_BENCH_STREAMS", 1000),
            env_or("RELAY_BENCH_SECS", 5),
            env_or("RELAY_BENCH_PPS", 50),
            env_or("RELAY_BENCH_ROUNDS", 2),
        )
    } else {
        (20, 1, 50, 1)
    };
    let load = Load {
        streams: u16::try_from(streams.clamp(1, 8000)).unwrap_or(8000),
        pps: u32::try_from(pps.clamp(1, 1000)).unwrap_or(50),
        duration: Duration::from_secs(secs.clamp(1, 60)),
    };
    let rounds = rounds.clamp(1, 10);
    println!(
        "{} streams x {} pps for {:?} (one direction, {PACKET_LEN}-byte RTP packets), {rounds} round(s)",
        load.streams, load.pps, load.duration
    );

    let binary = std::env::var("RELAY_BENCH_RTPENGINE").unwrap_or_else(|_| "rtpengine".to_owned());
    // `RELAY_BENCH_THREADS=1,2` (the default in a full run): the relay
    // with one thread, then with two.
    let relay_threads = if full {
        std::env::var("RELAY_BENCH_THREADS").unwrap_or_else(|_| "1,2".to_owned())
    } else {
        "1".to_owned()
    };
    let mut order: Vec<Path> = relay_threads
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .map(|t: usize| Path::Relay(t.clamp(1, 64)))
        .collect();
    if order.is_empty() {
        order.push(Path::Relay(1));
    }
    if full {
        match rtpengine::version(&binary) {
            Ok(version) => {
                println!("rtpengine: {version}, userspace forwarding only");
                let threads = std::env::var("RELAY_BENCH_RTPENGINE_THREADS")
                    .unwrap_or_else(|_| "1".to_owned());
                for t in threads.split(',').filter_map(|t| t.trim().parse().ok()) {
                    order.push(Path::Rtpengine(u32::clamp(t, 1, 16)));
                }
            }
            Err(e) => println!("{e}"),
        }
    }
    order.push(Path::Baseline);

    println!(
        "{:<5} {:<13} {:>9} {:>9} {:>9} {:>7} {:>8} {:>9} {:>6} {:>8}",
        "round",
        "path",
        "sent",
        "relayed",
        "received",
        "loss",
        "pkt/s",
        "CPU ms",
        "%core",
        "us/pkt"
    );
    let mut results: Vec<(Path, Outcome)> = Vec::new();
    for round in 1..=rounds {
        if round % 2 == 0 {
            order.reverse();
        }
        for &path in &order {
            let outcome = match path {
                Path::Relay(threads) => relay_load(load, threads),
                Path::Baseline => baseline_load(load),
                Path::Rtpengine(threads) => rtpengine_load(&binary, threads, round, load),
            };
            outcome.print_row(round, path);
            results.push((path, outcome));
        }
        if round % 2 == 0 {
            order.reverse();
        }
    }

    println!("totals over {rounds} round(s), CPU per packet received:");
    // `order` is back to round 1's: relay, rtpengine, baseline.
    let paths = order;
    let total = |path: Path| -> Option<f64> {
        let mut cpu = Duration::ZERO;
        let mut received = 0;
        for (_, o) in results.iter().filter(|(p, _)| *p == path) {
            cpu += o.cpu?;
            received += o.received;
        }
        (received > 0).then(|| cpu.as_secs_f64() * 1e6 / received as f64)
    };
    for &path in &paths {
        match total(path) {
            Some(us) => println!("  {:<13} {us:.2} us/packet", path.name()),
            None => println!("  {:<13} CPU time unavailable", path.name()),
        }
    }
    if let Some(relay) = total(Path::Relay(1)) {
        for &path in &paths {
            if let (Path::Rtpengine(_) | Path::Baseline, Some(other)) = (path, total(path)) {
                let target = if path == Path::Baseline {
                    ""
                } else {
                    " (target <= 1.0)"
                };
                println!(
                    "relay / {} CPU per packet: {:.2}{target}",
                    path.name(),
                    relay / other
                );
            }
        }
    }
    // Throughput of more relay threads against one, at the same offered load.
    let rate = |path: Path| -> Option<(f64, f64)> {
        let runs: Vec<&Outcome> = results
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, o)| o)
            .collect();
        let secs: f64 = runs.iter().map(|o| o.elapsed.as_secs_f64()).sum();
        let received: u64 = runs.iter().map(|o| o.received).sum();
        let sent: u64 = runs.iter().map(|o| o.sent).sum();
        (secs > 0.0 && sent > 0).then(|| {
            (
                received as f64 / secs,
                100.0 * sent.saturating_sub(received) as f64 / sent as f64,
            )
        })
    };
    if let Some((one, one_loss)) = rate(Path::Relay(1)) {
        for &path in &paths {
            if let (Path::Relay(threads @ 2..), Some((more, loss))) = (path, rate(path)) {
                println!(
                    "relay/{threads}t / relay received packets per second: {:.2} \
                     (loss {loss:.2}% vs {one_loss:.2}%)",
                    more / one
                );
            }
        }
    }
    for (path, outcome) in &results {
        assert!(outcome.received > 0, "{}: nothing arrived", path.name());
    }
}

/// What one run of one path measured.
struct Outcome {
    sent: u64,
    /// What the forwarder says it forwarded, where it says.
    relayed: Option<u64>,
    /// What arrived at the callees: the denominator of CPU per packet for
    /// every path, counted by the same receiver.
    received: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
    /// A line under the row (rtpengine: CPU by thread).
    detail: Option<String>,
}

impl Outcome {
    fn us_per_packet(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.received > 0).then(|| cpu.as_secs_f64() * 1e6 / self.received as f64)
    }

    fn print_row(&self, round: u64, path: Path) {
        let secs = self.elapsed.as_secs_f64();
        let relayed = self
            .relayed
            .map_or_else(|| "-".to_owned(), |r| r.to_string());
        let loss = 100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent.max(1) as f64;
        let (cpu, core, us) = match (self.cpu, self.us_per_packet()) {
            (Some(cpu), Some(us)) => (
                format!("{:.1}", cpu.as_secs_f64() * 1e3),
                format!("{:.1}", 100.0 * cpu.as_secs_f64() / secs),
                format!("{us:.2}"),
            ),
            _ => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "{round:<5} {:<13} {:>9} {relayed:>9} {:>9} {:>6.2}% {:>8.0} {cpu:>9} {core:>6} {us:>8}",
            path.name(),
            self.sent,
            self.received,
            loss,
            self.received as f64 / secs,
        );
        if let Some(detail) = &self.detail {
            println!("      {detail}");
        }
    }
}

/// The SBC relay: streams anchored through commands, like the call core
/// does, on `threads` relay threads (CPU: all of them).
fn relay_load(load: Load, threads: usize) -> Outcome {
    let Load {
        streams,
        pps,
        duration,
    } = load;
    let range = PortRange::new(20000, 20000 + streams * 2 - 1).expect("port range fits");
    let mut config = RelayConfig::new(vec![(REALM_A, range), (REALM_B, range)]);
    config.command_capacity = usize::from(streams) * 4;
    config.threads = threads;
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
        relayed: Some(relayed),
        received,
        elapsed,
        cpu,
        detail: None,
    }
}

/// The same load through the least a userspace forwarder can do: a mio loop
/// that reads each socket and sends to a fixed address, no flow table.
fn baseline_load(load: Load) -> Outcome {
    let Load {
        streams,
        pps,
        duration,
    } = load;
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
        relayed: Some(relayed),
        received,
        elapsed,
        cpu,
        detail: None,
    }
}

/// The same load through rtpengine: a fresh daemon per run (killed when
/// `engine` drops, also on a panic), every stream set up with an ng
/// `offer`/`answer` pair as a SIP proxy would, then the same generator and
/// receiver. CPU is the whole daemon's across the same window.
fn rtpengine_load(binary: &str, threads: u32, round: u64, load: Load) -> Outcome {
    let Load {
        streams,
        pps,
        duration,
    } = load;
    // A free port for its ng listener (a concurrent run of this bench may
    // hold another).
    let ng = UdpSocket::bind(SocketAddr::new(RTPE_NG, 0))
        .and_then(|s| s.local_addr())
        .expect("a free ng port");
    let options = rtpengine::Options {
        binary: binary.to_owned(),
        ng,
        interfaces: vec![("a".to_owned(), RTPE_A), ("b".to_owned(), RTPE_B)],
        ports: RTPE_PORTS,
        threads,
        // Errors only: it logs nothing per packet at this level unless it
        // falls behind.
        delete_delay: None,
        log_level: 3,
        log: std::env::temp_dir().join(format!(
            "relay-bench-rtpengine-{}-{round}-{threads}t.log",
            std::process::id()
        )),
    };
    let mut engine = match Rtpengine::start(&options) {
        Ok(engine) => engine,
        Err(e) => panic!("rtpengine {:?}: {e}", options.args()),
    };
    let mut callers = Vec::new();
    let mut callees = Vec::new();
    for id in 0..streams {
        let caller = UdpSocket::bind(SocketAddr::new(CALLER, 0)).expect("caller socket");
        let callee = UdpSocket::bind(SocketAddr::new(CALLEE, 0)).expect("callee socket");
        let call_id = format!("relay-bench-{round}-{id}");
        let offer = audio_sdp(caller.local_addr().expect("address"));
        let answer = audio_sdp(callee.local_addr().expect("address"));
        let setup = |engine: &mut Rtpengine| -> Result<SocketAddr, RtpengineError> {
            let towards_callee =
                engine.offer_answer(&call_id, "caller", None, &offer, Some(["a", "b"]))?;
            assert_eq!(towards_callee.ip(), RTPE_B, "offer went out on interface b");
            engine.offer_answer(&call_id, "caller", Some("callee"), &answer, None)
        };
        let to = setup(&mut engine)
            .unwrap_or_else(|e| panic!("stream {id}: {e} (its log: {})", options.log.display()));
        assert_eq!(to.ip(), RTPE_A, "the caller sends to interface a");
        callers.push((caller, to));
        callees.push(callee);
    }
    let before = engine.thread_cpu();
    let (sent, received, elapsed) = drive(&callers, callees, pps, duration);
    let after = engine.thread_cpu();
    drop(engine);
    let mut detail = Vec::new();
    let cpu = before.zip(after).map(|(before, after)| {
        let by_name = cpu_by_thread_name(&before, after);
        let parts: Vec<String> = by_name
            .iter()
            .map(|(name, count, t)| {
                let count = if *count > 1 {
                    format!(" x{count}")
                } else {
                    String::new()
                };
                format!("{name}{count} {:.1}", t.as_secs_f64() * 1e3)
            })
            .collect();
        detail.push(format!("rtpengine CPU ms by thread: {}", parts.join(", ")));
        by_name.iter().map(|(_, _, t)| *t).sum()
    });
    let logged = std::fs::read_to_string(&options.log).unwrap_or_default();
    match logged.lines().next() {
        None => {
            // Nothing logged, nothing to keep.
            let _ = std::fs::remove_file(&options.log);
        }
        Some(first) => detail.push(format!(
            "rtpengine logged {} line(s) to {}, the first: {first}",
            logged.lines().count(),
            options.log.display()
        )),
    }
    Outcome {
        sent,
        relayed: None,
        received,
        elapsed,
        cpu,
        detail: (!detail.is_empty()).then(|| detail.join("\n      ")),
    }
}

/// CPU used between two `Rtpengine::thread_cpu` readings, per thread id
/// (names repeat: one "poller" per worker), summed by name, busiest first:
/// (name, threads, time).
fn cpu_by_thread_name(
    before: &[(u32, String, Duration)],
    after: Vec<(u32, String, Duration)>,
) -> Vec<(String, u32, Duration)> {
    let mut by_name: Vec<(String, u32, Duration)> = Vec::new();
    for (tid, name, t) in after {
        let start = before
            .iter()
            .find(|(id, _, _)| *id == tid)
            .map_or(Duration::ZERO, |(_, _, b)| *b);
        let used = t.saturating_sub(start);
        match by_name.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, count, total)) => {
                *count += 1;
                *total += used;
            }
            None => by_name.push((name, 1, used)),
        }
    }
    by_name.sort_by_key(|(_, _, t)| std::cmp::Reverse(*t));
    by_name
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
