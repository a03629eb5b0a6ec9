//! The XDP fast path against the userspace relay and the lab's physical limit,
//! in one run on a namespace lab.
//!
//! ```text
//!  sender ns                    sbc ns (ip_forward=1)                   receiver ns
//!  192.0.2.2 xa ==veth== sa 192.0.2.1 [path] 198.51.100.1 sb ==veth== xb 198.51.100.2
//!  (tx checksum offload off)                                           (sbc_sink)
//! ```
//!
//! A paced generator in the sender namespace (`XDP_BENCH_SENDERS` threads,
//! default 2, on one socket: the flow's latched source) sends 172-byte
//! RTP-sized UDP packets to the SBC's anchored address. The receiver is
//! `sbc_sink` on `xb`: an XDP program that counts and drops every frame, so
//! the receiver's own stack costs nothing here and "arrived" means "reached
//! the receiver's interface" (the rewrite itself is checked by the tests in
//! `sbc/tests/integration/xdp.rs`). Four paths run in turn on the same lab:
//! - `send-only`: `sbc_sink` on `sa`, nothing forwarded: the generator's own
//!   cost (syscall, veth), subtracted from the others to give the sbc side.
//! - `noop`: `sbc_bounce`, a baseline program that redirects every frame
//!   unparsed out of `sb` with its MACs set: the same devmap redirect the
//!   relay's forwarded packets take, without parse, flow lookup, route lookup
//!   or rewrite, so it is the most any XDP forwarder can do here. (`XDP_TX`
//!   would bounce packets back into the sender namespace, a different path
//!   than the relay's.)
//! - `xdp`: the real program (`XdpRelay`) with one latched flow installed by
//!   hand: 192.0.2.1:30000 from 192.0.2.2:40000, rewritten to
//!   198.51.100.1:30002 -> 198.51.100.2:50000.
//! - `userspace`: `UserspaceRelay` with a stream allocated and both remotes
//!   set by `MediaCommand`s, XDP off.
//!
//! Each path steps the offered rate up (20k to 800k pps, each rate
//! `XDP_BENCH_REPEAT` times, default 2, in bounded steps of `XDP_BENCH_SECS`,
//! 1-2 s, default 2) until a step loses a packet; its zero-loss rate is the
//! highest rate the generator achieved at an offered rate where no step lost
//! anything.
//!
//! CPU is per thread (`schedstat`): the generator threads, plus the relay
//! thread for userspace. This kernel has no IRQ time accounting, so a
//! thread's time includes the softirq work run in its context, and veth runs
//! the receiving side's NAPI (where XDP runs, and the kernel's UDP receive)
//! in the sender's context when it re-enables bottom halves: the generator
//! threads' time covers the sbc namespace's kernel work. `/proc/stat`'s
//! softirq figure was tried first: it is tick-sampled and shared with
//! everything else on the machine, too coarse and noisy here. Work deferred
//! to `ksoftirqd` under overload is not counted (it shows as loss first).
//! `sbc` = a path's CPU per packet minus `send-only`'s at the same rate.
//! Each rate's figure is the cheapest of its repeats (other work on the
//! machine only adds), and the paths are compared at the highest offered
//! rate all of them carried without loss.
//!
//! Mode: `XDP_BENCH_MODE=native` (default; native XDP on veth delivers
//! redirected frames only to a peer running a program, which the sink is) or
//! `generic`; the sink on `xb` and the programs on `sa`/`sb` use it alike.
//!
//! Needs root (namespaces, BPF); without it the bench skips with a notice,
//! unless `CI=true` or `SBC_REQUIRE_PRIVILEGED=1`. Under `cargo test
//! --benches` (no `--bench` argument) it runs a smoke load: 500 packets at
//! 2000 pps per path, all of which must arrive. Traffic goes only to the
//! namespaces it creates; a guard deletes them.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tests::netns::in_netns;

use aya::maps::{Array, PerCpuArray, xdp::DevMap};
use aya::programs::{Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader};
use relay_common::{Endpoint, FlowAction, FlowKey, stat};
use sbc::media::command::{
    LatchPolicy, Leg, LegSpec, MediaCommand, MediaEvent, RealmTag, Remote, RtcpMode, StreamId,
};
use sbc::media::ports::PortRange;
use sbc::media::userspace::{RelayConfig, UserspaceRelay};
use sbc::media::xdp::{self, ModePolicy, XdpConfig, XdpMode, XdpRelay};

const SENDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const ANCHOR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SBC_OUT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const RECEIVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const SENDER_PORT: u16 = 40_000;
const ANCHOR_PORT: u16 = 30_000;
const OUT_PORT: u16 = 30_002;
const RECEIVER_PORT: u16 = 50_000;
const PACKET_LEN: usize = 172;
const MAC_XA: &str = "02:00:00:00:0a:01";
const MAC_SA: &str = "02:00:00:00:0a:02";
const MAC_SB: &str = "02:00:00:00:0b:02";
const MAC_XB: &str = "02:00:00:00:0b:01";

#[allow(clippy::disallowed_methods)] // a load harness is an IO shell
fn now() -> Instant {
    Instant::now()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("SBC_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

#[allow(unsafe_code)] // one libc call
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let why_not = if !xdp::BUILT_IN {
        Some(format!(
            "XDP object not built in: {}",
            xdp::not_built_in_reason().unwrap_or("?")
        ))
    } else if !is_root() {
        Some("not root (BPF and network namespaces need it)".to_string())
    } else {
        None
    };
    if let Some(why) = why_not {
        assert!(
            !required(),
            "xdp bench: required (CI / SBC_REQUIRE_PRIVILEGED) but {why}"
        );
        println!("xdp bench: SKIPPED: {why}");
        return;
    }
    let mode = match std::env::var("XDP_BENCH_MODE").as_deref() {
        Ok("generic") => XdpMode::Generic,
        _ => XdpMode::Native,
    };
    let (rates, load): (&[u64], Load) = if full {
        (
            &[
                20_000, 50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 600_000,
                800_000,
            ],
            Load {
                step: Duration::from_secs(env_or("XDP_BENCH_SECS", 2).clamp(1, 2)),
                senders: env_or("XDP_BENCH_SENDERS", 2).clamp(1, 4),
                repeat: env_or("XDP_BENCH_REPEAT", 2).clamp(1, 3),
            },
        )
    } else {
        (
            &[2_000],
            Load {
                step: Duration::from_millis(250),
                senders: 1,
                repeat: 1,
            },
        )
    };
    let Load {
        step,
        senders,
        repeat,
    } = load;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "XDP bench, {} mode, {PACKET_LEN}-byte packets, steps of {step:?} x {repeat}, {senders} \
         generator thread(s); this machine has {cpus} CPUs, shared with other work: generator, forwarding \
         and whatever else runs here compete for them",
        mode.as_str()
    );

    let lab = Lab::new(mode);
    let mut results = Vec::new();
    for path in [Path::Floor, Path::Noop, Path::Xdp, Path::Userspace] {
        results.push(run_path(&lab, path, rates, load));
    }
    report(&results);
    if !full {
        for r in &results {
            let s = r.steps.first().expect("one step");
            assert!(
                s.sent > 0 && s.received == s.sent,
                "{}: smoke load lost packets: sent {}, received {}",
                r.path.name(),
                s.sent,
                s.received
            );
            // The forwarder's own count: the packets took the path measured.
            if matches!(r.path, Path::Xdp | Path::Userspace) {
                assert_eq!(s.forwarded, s.sent, "{}: forwarded count", r.path.name());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------------

/// Runs a command line (split on whitespace), panicking with its output if it fails.
fn sh(command: &str) {
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
}

/// The three namespaces; deleted on drop, also on panic.
struct Lab {
    sender: String,
    sbc: String,
    receiver: String,
    mode: XdpMode,
    /// `sbc_sink` on `xb`: the receiver, for every path alike.
    sink: Option<Ebpf>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.sink = None;
        for ns in [&self.sender, &self.sbc, &self.receiver] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Lab {
    fn new(mode: XdpMode) -> Lab {
        let id = std::process::id();
        let mut lab = Lab {
            sender: format!("sbcxb-a{id}"),
            sbc: format!("sbcxb-s{id}"),
            receiver: format!("sbcxb-b{id}"),
            mode,
            sink: None,
        };
        let (a, s, b) = (&lab.sender, &lab.sbc, &lab.receiver);
        for ns in [a, s, b] {
            sh(&format!("ip netns add {ns}"));
            // No IPv6: no router solicitations or MLD for the bounce to carry.
            for knob in ["all", "default"] {
                sh(&format!(
                    "ip netns exec {ns} sysctl -qw net.ipv6.conf.{knob}.disable_ipv6=1"
                ));
            }
            sh(&format!("ip -n {ns} link set lo up"));
        }
        sh(&format!(
            "ip link add xa netns {a} type veth peer name sa netns {s}"
        ));
        sh(&format!(
            "ip link add xb netns {b} type veth peer name sb netns {s}"
        ));
        for (ns, dev, mac, addr) in [
            (a, "xa", MAC_XA, "192.0.2.2/24"),
            (s, "sa", MAC_SA, "192.0.2.1/24"),
            (s, "sb", MAC_SB, "198.51.100.1/24"),
            (b, "xb", MAC_XB, "198.51.100.2/24"),
        ] {
            sh(&format!("ip -n {ns} link set {dev} address {mac}"));
            sh(&format!("ip -n {ns} addr add {addr} dev {dev}"));
            sh(&format!("ip -n {ns} link set {dev} up"));
        }
        // Full checksums from the local sender (DESIGN "XDP on veth").
        sh(&format!("ip netns exec {a} ethtool -K xa tx off"));
        sh(&format!(
            "ip netns exec {s} sysctl -qw net.ipv4.conf.all.forwarding=1"
        ));
        // Permanent neighbours: no ARP during a run (the bounce would carry it).
        for (ns, ip, mac, dev) in [
            (a, "192.0.2.1", MAC_SA, "xa"),
            (s, "192.0.2.2", MAC_XA, "sa"),
            (s, "198.51.100.2", MAC_XB, "sb"),
            (b, "198.51.100.1", MAC_SB, "xb"),
        ] {
            sh(&format!(
                "ip -n {ns} neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
            ));
        }
        let aya_mode = lab.aya_mode();
        let sink = in_netns(b, move || {
            let mut ebpf = load_object();
            attach(&mut ebpf, "sbc_sink", "xb", aya_mode);
            ebpf
        });
        lab.sink = Some(sink);
        lab
    }

    fn aya_mode(&self) -> AyaXdpMode {
        match self.mode {
            XdpMode::Native => AyaXdpMode::Driver,
            _ => AyaXdpMode::Skb,
        }
    }
}

/// Frames a loaded `sbc_sink` has counted so far.
fn sink_count(ebpf: &Ebpf) -> u64 {
    let map = ebpf.map("SBC_SINK_CNT").expect("the sink's counter");
    let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(map).expect("a per-CPU array");
    counts
        .get(&0, 0)
        .map(|per_cpu| per_cpu.iter().sum())
        .unwrap_or(0)
}

fn load_object() -> Ebpf {
    let object = xdp::object().expect("built in (checked at start)");
    EbpfLoader::new()
        .load(object)
        .unwrap_or_else(|e| panic!("loading the XDP object: {e}"))
}

/// Loads `program` of `ebpf` and attaches it to `dev` (in the calling
/// thread's namespace); it stays attached while `ebpf` lives.
fn attach(ebpf: &mut Ebpf, program: &str, dev: &str, mode: AyaXdpMode) {
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .unwrap_or_else(|| panic!("no {program} in the object"))
        .try_into()
        .unwrap_or_else(|e| panic!("{program} is not XDP: {e}"));
    prog.load()
        .unwrap_or_else(|e| panic!("loading {program}: {e}"));
    prog.attach(dev, mode)
        .unwrap_or_else(|e| panic!("attaching {program} to {dev} ({mode:?}): {e}"));
}

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("literal MAC");
    }
    out
}

fn ifindex(dev: &str) -> u32 {
    let name = std::ffi::CString::new(dev).expect("literal name");
    if_nametoindex(&name)
}

#[allow(unsafe_code)] // one libc call
fn if_nametoindex(name: &std::ffi::CStr) -> u32 {
    // SAFETY: a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Floor,
    Noop,
    Xdp,
    Userspace,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Floor => "send-only",
            Path::Noop => "noop",
            Path::Xdp => "xdp",
            Path::Userspace => "userspace",
        }
    }
}

/// What forwards during one path's steps; dropping it detaches or stops it.
enum Forwarder {
    /// `sbc_sink` on `sa`: nothing forwards, the generator's own cost.
    Floor(Ebpf),
    /// Attached while it lives.
    Bounce {
        _program: Ebpf,
    },
    Xdp(Box<XdpRelay>),
    Userspace(UserspaceRelay),
}

impl Forwarder {
    /// Packets this forwarder says it moved so far.
    fn forwarded(&self) -> u64 {
        match self {
            // The bounce keeps no counters; the receiver is the judge.
            Forwarder::Floor(_) | Forwarder::Bounce { .. } => 0,
            Forwarder::Xdp(relay) => relay
                .stats()
                .map(|s| s[stat::REDIRECT as usize] + s[stat::TX as usize])
                .unwrap_or(0),
            Forwarder::Userspace(relay) => relay.stats().packets_relayed.load(Ordering::Relaxed),
        }
    }

    /// Frames the receiver counted: the sink on `xb`, or on `sa` for the floor.
    fn received(&self, lab: &Lab) -> u64 {
        match self {
            Forwarder::Floor(sink) => sink_count(sink),
            _ => lab.sink.as_ref().map_or(0, sink_count),
        }
    }

    fn thread_cpu(&self) -> Duration {
        match self {
            Forwarder::Userspace(relay) => relay.thread_cpu_time().unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }
}

/// Sets up `path` in the lab; returns it with the anchored address to send to.
fn forwarder(lab: &Lab, path: Path) -> (Forwarder, SocketAddr) {
    let anchor = SocketAddr::from((ANCHOR, ANCHOR_PORT));
    let mode = lab.aya_mode();
    match path {
        Path::Floor => {
            let sink = in_netns(&lab.sbc, move || {
                let mut ebpf = load_object();
                attach(&mut ebpf, "sbc_sink", "sa", mode);
                ebpf
            });
            (Forwarder::Floor(sink), anchor)
        }
        Path::Noop => {
            let ebpf = in_netns(&lab.sbc, move || {
                let mut ebpf = load_object();
                let sb = ifindex("sb");
                let mut dev = DevMap::try_from(ebpf.map_mut("SBC_BOUNCE_DEV").expect("map"))
                    .expect("a devmap");
                dev.set(0, sb, None, 0).expect("devmap entry");
                let mut macs: Array<_, [u8; 12]> =
                    Array::try_from(ebpf.map_mut("SBC_BOUNCE_MAC").expect("map"))
                        .expect("an array");
                let mut value = [0u8; 12];
                value[..6].copy_from_slice(&mac(MAC_XB));
                value[6..].copy_from_slice(&mac(MAC_SB));
                macs.set(0, value, 0).expect("MACs");
                attach(&mut ebpf, "sbc_bounce", "sa", mode);
                ebpf
            });
            (Forwarder::Bounce { _program: ebpf }, anchor)
        }
        Path::Xdp => {
            let policy = match lab.mode {
                XdpMode::Native => ModePolicy::NativeOnly,
                _ => ModePolicy::GenericOnly,
            };
            let want = lab.mode;
            let relay = in_netns(&lab.sbc, move || {
                let mut relay = XdpRelay::load(&XdpConfig::default())
                    .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
                for dev in ["sa", "sb"] {
                    let a = relay.attach(dev, policy);
                    assert_eq!(a.mode, want, "{a:?}");
                }
                let ep = |ip: Ipv4Addr, port| Endpoint {
                    ip: IpAddr::V4(ip),
                    port,
                };
                relay
                    .install(
                        &FlowKey::new(IpAddr::V4(ANCHOR), ANCHOR_PORT),
                        &FlowAction::latched(
                            ep(SENDER, SENDER_PORT),
                            ep(SBC_OUT, OUT_PORT),
                            ep(RECEIVER, RECEIVER_PORT),
                            0,
                        ),
                    )
                    .unwrap_or_else(|e| panic!("installing the flow: {e}"));
                relay
            });
            (Forwarder::Xdp(Box::new(relay)), anchor)
        }
        Path::Userspace => {
            let (relay, local) = in_netns(&lab.sbc, move || {
                let a = PortRange::new(ANCHOR_PORT, ANCHOR_PORT + 1).expect("range");
                let b = PortRange::new(OUT_PORT, OUT_PORT + 1).expect("range");
                let mut config =
                    RelayConfig::new(vec![(IpAddr::V4(ANCHOR), a), (IpAddr::V4(SBC_OUT), b)]);
                // The sizes a loaded relay would be given; the default
                // buffer overflows at a few thousand packets of burst.
                config.recv_buffer = Some(4 << 20);
                config.send_buffer = Some(4 << 20);
                let relay = UserspaceRelay::start(config).expect("relay starts");
                let leg = |ip| LegSpec {
                    local_ip: IpAddr::V4(ip),
                    rtcp: RtcpMode::Pair,
                    latch: LatchPolicy::SdpOrSignaling,
                    realm: RealmTag::default(),
                };
                let stream = StreamId(1);
                relay
                    .send(MediaCommand::Allocate {
                        stream,
                        legs: [leg(ANCHOR), leg(SBC_OUT)],
                    })
                    .expect("queued");
                let local = match relay.event_timeout(Duration::from_secs(5)) {
                    Some(MediaEvent::Allocated { legs, .. }) => legs,
                    other => panic!("allocate: {other:?}"),
                };
                for (leg, peer) in [
                    (Leg::A, SocketAddr::from((SENDER, SENDER_PORT))),
                    (Leg::B, SocketAddr::from((RECEIVER, RECEIVER_PORT))),
                ] {
                    relay
                        .send(MediaCommand::SetRemote {
                            stream,
                            leg,
                            remote: Remote::rtp_pair(peer, peer.ip()),
                        })
                        .expect("queued");
                }
                (relay, local[0].rtp)
            });
            while relay.try_event().is_some() {}
            (Forwarder::Userspace(relay), local)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load and measurement
// ---------------------------------------------------------------------------------------------

/// One rate step of one path.
struct Step {
    offered: u64,
    sent: u64,
    received: u64,
    forwarded: u64,
    send_time: Duration,
    /// The generator threads' CPU.
    generator: Duration,
    /// The relay thread's CPU (userspace only).
    relay: Duration,
}

impl Step {
    fn achieved(&self) -> f64 {
        self.sent as f64 / self.send_time.as_secs_f64()
    }

    fn lossless(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }

    fn us(&self, cpu: Duration) -> f64 {
        if self.received == 0 {
            return f64::NAN;
        }
        cpu.as_secs_f64() * 1e6 / self.received as f64
    }

    /// Everything the path cost this process per packet.
    fn cpu_us(&self) -> f64 {
        self.us(self.generator + self.relay)
    }
}

struct PathResult {
    path: Path,
    steps: Vec<Step>,
}

impl PathResult {
    /// Whether every step at `offered` lost nothing.
    fn clean(&self, offered: u64) -> bool {
        self.steps
            .iter()
            .filter(|s| s.offered == offered)
            .all(Step::lossless)
    }

    /// The highest achieved rate of a lossless step at a clean offered rate.
    fn zero_loss_rate(&self) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.lossless() && self.clean(s.offered))
            .map(Step::achieved)
            .reduce(f64::max)
    }

    /// The highest clean offered rate.
    fn zero_loss_offered(&self) -> u64 {
        self.steps
            .iter()
            .filter(|s| s.lossless() && self.clean(s.offered))
            .map(|s| s.offered)
            .max()
            .unwrap_or(0)
    }

    /// The cheapest CPU per packet of the steps at `offered`.
    fn cpu_us_at(&self, offered: u64) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.offered == offered)
            .map(Step::cpu_us)
            .reduce(f64::min)
    }
}

/// How each rate is offered.
#[derive(Clone, Copy)]
struct Load {
    /// How long one step sends.
    step: Duration,
    /// Generator threads.
    senders: u64,
    /// Steps per rate (the CPU figures take the cheapest: the least disturbed
    /// by other work on the machine).
    repeat: u64,
}

fn run_path(lab: &Lab, path: Path, rates: &[u64], load: Load) -> PathResult {
    let Load {
        step,
        senders,
        repeat,
    } = load;
    let (fwd, to) = forwarder(lab, path);
    let sender = in_netns(&lab.sender, move || {
        let s = UdpSocket::bind((SENDER, SENDER_PORT)).expect("bind the sender");
        // Connected: no route lookup per packet in the generator.
        s.connect(to).expect("connect the sender");
        s
    });
    let sender = Arc::new(sender);
    let mut steps = Vec::new();
    'rates: for &rate in rates
        .iter()
        .flat_map(|r| std::iter::repeat_n(r, repeat as usize))
    {
        let got_before = fwd.received(lab);
        let fwd_before = fwd.forwarded();
        let thread_before = fwd.thread_cpu();
        // One socket (the flow's latched source), `senders` threads on it.
        let generators: Vec<_> = (0..senders)
            .map(|_| {
                let sender = Arc::clone(&sender);
                std::thread::spawn(move || generate(&sender, rate / senders, step))
            })
            .collect();
        let (mut sent, mut send_time, mut generator) = (0, Duration::ZERO, Duration::ZERO);
        for g in generators {
            let (n, took, cpu) = g.join().expect("generator thread");
            sent += n;
            send_time = send_time.max(took);
            generator += cpu;
        }
        // Drain: until everything arrived, or nothing more for 100 ms (at most 1 s).
        let deadline = now() + Duration::from_secs(1);
        let mut last = u64::MAX;
        while now() < deadline {
            let got = fwd.received(lab) - got_before;
            if got >= sent || got == last {
                break;
            }
            last = got;
            std::thread::sleep(Duration::from_millis(100));
        }
        let s = Step {
            offered: rate,
            sent,
            received: fwd.received(lab) - got_before,
            forwarded: fwd.forwarded() - fwd_before,
            send_time,
            generator,
            relay: fwd.thread_cpu().saturating_sub(thread_before),
        };
        let lossy = !s.lossless();
        steps.push(s);
        if lossy {
            break 'rates;
        }
    }
    if let Forwarder::Userspace(relay) = fwd {
        relay.shutdown();
    }
    PathResult { path, steps }
}

/// Sends `rate` packets per second for `duration` in 1 ms batches; returns
/// (sent, time it took, this thread's CPU). Bounded: `rate * duration` packets, and stops at
/// twice the duration even if the sender cannot keep up.
fn generate(socket: &UdpSocket, rate: u64, duration: Duration) -> (u64, Duration, Duration) {
    let cpu_before = thread_cpu();
    let tick = Duration::from_millis(1);
    let ticks = u64::try_from(duration.as_millis()).unwrap_or(1000);
    let total = rate * ticks / 1000;
    let mut packet = [0u8; PACKET_LEN];
    packet[0] = 0x80;
    let started = now();
    let hard_stop = started + duration * 2;
    let mut sent = 0u64;
    'ticks: for n in 1..=ticks {
        let due = total * n / ticks;
        while sent < due {
            packet[4..12].copy_from_slice(&sent.to_be_bytes());
            match socket.send(&packet) {
                Ok(_) => sent += 1,
                // A full veth queue: the sender is at its limit; try again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("send: {e}"),
            }
            if sent.is_multiple_of(64) && now() > hard_stop {
                break 'ticks;
            }
        }
        let next = started + tick * u32::try_from(n).unwrap_or(u32::MAX);
        std::thread::sleep(next.saturating_duration_since(now()));
    }
    (
        sent,
        now() - started,
        thread_cpu().saturating_sub(cpu_before),
    )
}

/// The calling thread's CPU time (`schedstat`, ns). Without IRQ time
/// accounting (this kernel) it includes the softirq work run in the thread's
/// context: for the generator, the veth NAPI of `sa`, where XDP runs.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn report(results: &[PathResult]) {
    let find = |p: Path| results.iter().find(|r| r.path == p);
    let floor_at = |offered: u64| find(Path::Floor).and_then(|r| r.cpu_us_at(offered));
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "path", "offered", "achieved", "sent", "received", "fwd-ctr", "gen", "relay", "cpu", "sbc"
    );
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "", "pps", "pps", "", "", "", "us/pkt", "us/pkt", "us/pkt", "us/pkt"
    );
    for r in results {
        for s in &r.steps {
            let sbc = floor_at(s.offered).map_or(f64::NAN, |f| s.cpu_us() - f);
            println!(
                "{:<10} {:>8} {:>9.0} {:>9} {:>9} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>8.3}{}",
                r.path.name(),
                s.offered,
                s.achieved(),
                s.sent,
                s.received,
                s.forwarded,
                s.us(s.generator),
                s.us(s.relay),
                s.cpu_us(),
                sbc,
                if s.lossless() { "" } else { "  LOSS" }
            );
        }
    }
    for r in results {
        match r.zero_loss_rate() {
            Some(rate) => println!("{:<10} zero-loss rate {rate:.0} pps", r.path.name()),
            None => println!("{:<10} lost packets at every step", r.path.name()),
        }
    }
    if let (Some(x), Some(n)) = (find(Path::Xdp), find(Path::Noop))
        && let (Some(xr), Some(nr)) = (x.zero_loss_rate(), n.zero_loss_rate())
    {
        println!(
            "xdp zero-loss rate / noop zero-loss rate: {:.2} (target >= 0.90)",
            xr / nr
        );
    }
    // CPU per packet at the highest offered rate every path carried without loss.
    let common = results
        .iter()
        .map(PathResult::zero_loss_offered)
        .min()
        .unwrap_or(0);
    let at = |p: Path| find(p).and_then(|r| r.cpu_us_at(common));
    if let (Some(f), Some(n), Some(x), Some(u)) = (
        at(Path::Floor),
        at(Path::Noop),
        at(Path::Xdp),
        at(Path::Userspace),
    ) {
        println!(
            "at {common} pps (all lossless; cheapest of the repeats), us/pkt: send-only {f:.3}; over it (sbc side): \
             noop {:.3}, xdp {:.3}, userspace {:.3}",
            n - f,
            x - f,
            u - f
        );
        println!(
            "xdp / userspace CPU per packet: sbc side {:.3} (target <= 0.20), \
             including the generator {:.3}",
            (x - f) / (u - f),
            x / u
        );
    } else {
        println!("no rate was lossless on every path: no CPU comparison");
    }
    // The same ratio at every rate both carried without loss: how much the
    // single figure above depends on the rate and on the machine's noise.
    if let (Some(f), Some(x), Some(u)) = (find(Path::Floor), find(Path::Xdp), find(Path::Userspace))
    {
        let per_rate: Vec<String> = u
            .steps
            .iter()
            .map(|s| s.offered)
            .filter(|&r| u.clean(r) && x.clean(r) && x.cpu_us_at(r).is_some())
            .fold(Vec::new(), |mut v, r| {
                if !v.contains(&r) {
                    v.push(r);
                }
                v
            })
            .into_iter()
            .filter_map(|r| {
                let floor = f.cpu_us_at(r)?;
                let ratio = (x.cpu_us_at(r)? - floor) / (u.cpu_us_at(r)? - floor);
                Some(format!("{r}: {ratio:.2}"))
            })
            .collect();
        println!(
            "xdp / userspace sbc-side CPU per packet by rate: {}",
            per_rate.join(", ")
        );
    }
}
