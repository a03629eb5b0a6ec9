//! The userspace media relay: a mio event loop on its own thread.
//!
//! Owns: the UDP sockets of every anchored endpoint (built with socket2:
//! non-blocking, optional `SO_REUSEADDR` and buffer sizes), the thread that
//! polls them, and the channels to the call core: a bounded command queue
//! into the thread (with a [`mio::Waker`] so a command wakes the poll at
//! once) and an event channel out of it.
//!
//! May not: decide anything about a packet: every packet goes to the shared
//! [`FlowTable`], which says where it goes. It never runs on tokio (a relay
//! thread blocked in `epoll_wait` would starve a runtime worker, and the
//! packet path must not share a scheduler with signaling).
//!
//! Packet I/O is plain `recv_from`/`send_to` in a drain loop. Measured on
//! this machine (2 vCPU VM, loopback; `cargo bench -p benches --bench relay`
//! under `perf`), 1000 streams at 50 pps: about 110 packets per
//! `epoll_wait`, 1.5 `recvfrom` and 1 `sendto` per relayed packet, 95% of the
//! relay thread's CPU in the kernel's UDP send/receive paths and under 1% in
//! the flow table; the relay costs 0.9-1.2x a bare forwarder with no logic
//! at all. `recvmmsg` could save only the trailing empty read per socket
//! (RTP at 50 pps rarely queues more than one packet per socket per wake),
//! and `sendmmsg` batches per socket while every relayed packet leaves by a
//! different one; both need `unsafe` FFI, which the workspace denies. The
//! XDP fast path is the answer when the per-packet kernel cost matters.
//!
//! Events leave by an unbounded channel so the relay never blocks on the
//! core; what it carries is bounded by the flow table: one event per
//! command, one per (re)latch (rate-limited by the re-latch quiet period),
//! one timeout per stream.
//!
//! Fast path: with [`UserspaceRelay::start_with_fast_path`], the relay pushes
//! each changed stream's [`FastFlow`]s to a [`FastPath`] (the XDP backend)
//! after every turn and takes in its counts at the timeout cadence, and a
//! stream's own counts just before it is released (so its final counters
//! include them).
//!
//! Totals for metrics ([`RelayStats`]): a turn tallies what it relayed, per
//! path and per [`RealmTag`] of the leg each packet was received on (so the
//! realms' totals add up to the relay's), and publishes the tally once at
//! its end: global totals to atomics, per-realm totals under one lock (see
//! [`RelayStats::realm_totals`]); nothing is shared per packet. Free ports
//! per media address are republished after every turn that applied commands
//! and when quarantines end (at most once a second for those).
//!
//! Fairness: each ready socket is drained at most [`DRAIN_BUDGET`] packets per
//! turn; a socket with more waiting is revisited after the others, so one
//! flooded port cannot starve the rest.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

use super::cname::CnameMask;
use super::command::{
    Component, Leg, LegSpec, LocalEndpoint, MediaCommand, MediaError, MediaEvent, RealmTag,
    StreamId,
};
use super::flow::{DropCause, FastCounts, FastFlow, FlowConfig, FlowTable, Forward, SocketWork};
use super::latch::{PacketKind, classify};
use super::ports::{PortAllocator, PortRange};
use super::reserve::Claim;
use super::rtcp;

/// Packets read from one socket per turn before the others get theirs.
pub const DRAIN_BUDGET: usize = 64;

/// The receive buffer: the largest UDP payload, so nothing is truncated.
const MAX_DATAGRAM: usize = 65_535;

const WAKER: Token = Token(usize::MAX);

/// How often, at most, free ports are republished for quarantines that
/// ended (commands republish them at once).
const PORTS_CADENCE: Duration = Duration::from_secs(1);

/// Configuration of the userspace relay.
#[derive(Clone)]
pub struct RelayConfig {
    /// Learning window and timeouts.
    pub flow: FlowConfig,
    /// The port range of each realm media address.
    pub ports: Vec<(std::net::IpAddr, PortRange)>,
    /// How long a released port stays unused.
    pub quarantine: Duration,
    /// Capacity of the command queue into the relay thread.
    pub command_capacity: usize,
    /// `SO_RCVBUF` for each media socket (`None`: the kernel default).
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF` for each media socket (`None`: the kernel default).
    pub send_buffer: Option<usize>,
    /// Set `SO_REUSEADDR`. Off by default: UDP has no TIME_WAIT, and on Linux
    /// the option would let two sockets share a port, which the allocator
    /// never does. Turn it on only to take over ports from a previous
    /// instance during a restart.
    pub reuse_address: bool,
    /// Bind media sockets even when the address is not (yet) on this
    /// host (IP_FREEBIND), for a node that takes over shared addresses.
    pub freebind: bool,
    /// Called on the relay thread after events were queued, so an async
    /// driver can wake (e.g. `tokio::sync::Notify::notify_one`). Keep it
    /// cheap and non-blocking.
    pub notify: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Rewrite the SDES of relayed RTCP with these CNAME stand-ins (the
    /// call core's, so SDP `a=ssrc` and RTCP agree; [`super::rtcp`]).
    /// `None`: RTCP crosses unchanged.
    pub cname_mask: Option<CnameMask>,
    /// Per realm tag (by index): the networks a leg latching under
    /// [`LatchPolicy::RealmNetworks`](super::command::LatchPolicy) may
    /// learn its source from.
    pub realm_networks: Vec<Vec<ipnet::IpNet>>,
    /// Relay threads (at least 1). Each owns the sockets of the streams
    /// given to it (by stream id) and a share of every address's ports, so
    /// no packet crosses threads. With a fast path there is one: the fast
    /// path carries the load there.
    pub threads: usize,
    /// The scheduling class each relay thread puts itself in as it starts
    /// (`None`: the one it inherits from the thread that starts the relay).
    pub scheduling: Option<crate::sched::Class>,
    /// The CPUs each relay thread confines itself to as it starts: thread
    /// k takes entry k modulo the length. Empty: the CPUs it inherits.
    pub cpus: Vec<crate::sched::CpuList>,
}

impl RelayConfig {
    /// Defaults (60 s inactivity, 10 s learning window, 30 s quarantine, a
    /// queue of 1024 commands) for these port ranges.
    pub fn new(ports: Vec<(std::net::IpAddr, PortRange)>) -> RelayConfig {
        RelayConfig {
            flow: FlowConfig::default(),
            ports,
            quarantine: Duration::from_secs(30),
            command_capacity: 1024,
            recv_buffer: None,
            send_buffer: None,
            reuse_address: false,
            freebind: false,
            notify: None,
            cname_mask: None,
            realm_networks: Vec::new(),
            threads: 1,
            scheduling: None,
            cpus: Vec::new(),
        }
    }

    /// The ports relay thread `k` of `n` owns: its share of each range.
    fn ports_of(&self, k: usize, n: usize) -> Vec<(IpAddr, PortRange)> {
        shares(&self.ports, k, n)
    }
}

/// Share `k` of `n` of each address's range (see [`PortRange::share`]).
fn shares(ports: &[(IpAddr, PortRange)], k: usize, n: usize) -> Vec<(IpAddr, PortRange)> {
    ports
        .iter()
        .filter_map(|(ip, range)| Some((*ip, range.share(k, n)?)))
        .collect()
}

/// Why the relay could not start.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Creating the poll, the waker or the thread failed (out of file
    /// descriptors or threads: raise the limits).
    #[error("starting the media relay failed at {step}: {source}")]
    Start {
        /// What was being created.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A relay thread could not take its scheduling class (a real-time
    /// priority without root, `CAP_SYS_NICE` or `RLIMIT_RTPRIO`).
    #[error(
        "scheduling.media_priority: the kernel refused {class} for the media relay threads ({source}); \
         run as root or with CAP_SYS_NICE, or raise RLIMIT_RTPRIO (systemd: LimitRTPRIO= and RestrictRealtime=no), \
         or set the priority to 0"
    )]
    Scheduling {
        /// The class asked for.
        class: crate::sched::Class,
        /// The OS error.
        source: io::Error,
    },
    /// A relay thread could not confine itself to its CPUs.
    #[error(
        "scheduling.media_cpus: the kernel refused CPUs {cpus} for media relay thread {thread} ({source})"
    )]
    Affinity {
        /// The CPUs asked for.
        cpus: crate::sched::CpuList,
        /// The relay thread (0-based).
        thread: usize,
        /// The OS error.
        source: io::Error,
    },
}

/// Media relayed under one [`RealmTag`], per path: cumulative since the
/// relay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaTotals {
    /// Packets the userspace relay relayed.
    pub userspace_packets: u64,
    /// Bytes (UDP payload) of those packets.
    pub userspace_bytes: u64,
    /// Packets the fast path (XDP) relayed, as read from its maps.
    pub xdp_packets: u64,
    /// Bytes of those packets.
    pub xdp_bytes: u64,
}

impl MediaTotals {
    fn add(&mut self, other: &MediaTotals) {
        self.userspace_packets += other.userspace_packets;
        self.userspace_bytes += other.userspace_bytes;
        self.xdp_packets += other.xdp_packets;
        self.xdp_bytes += other.xdp_bytes;
    }
}

/// Totals over every stream, readable from any thread (for metrics).
///
/// The global totals are atomics. The per-realm totals sit in a vector
/// indexed by [`RealmTag`] behind a mutex: realms come and go with the
/// configuration, so there is no fixed set to make atomics of, and the lock
/// is taken once per relay turn that relayed something (a turn handles
/// every ready socket, ~100 packets under load) and once per scrape by the
/// reader, never per packet, so it is uncontended in practice.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Packets relayed (userspace path).
    pub packets_relayed: AtomicU64,
    /// Bytes relayed (userspace path).
    pub bytes_relayed: AtomicU64,
    /// Packets dropped, for any reason.
    pub packets_dropped: AtomicU64,
    /// Of those: for a stream the relay does not have.
    pub dropped_unknown_flow: AtomicU64,
    /// Of those: too short, or not RTP/RTCP version 2.
    pub dropped_malformed: AtomicU64,
    /// Of those: not from the leg's peer (injection, RTPBleed probes, late
    /// packets of an old call on a reused port).
    pub dropped_source: AtomicU64,
    /// Of those: RTP a held stream does not carry.
    pub dropped_direction: AtomicU64,
    /// Of those: no address to send to, or the send failed.
    pub dropped_send: AtomicU64,
    /// Of those: STUN (ICE connectivity checks the SBC does not answer).
    pub dropped_stun: AtomicU64,
    /// Allocations refused because a port pool was exhausted.
    pub ports_exhausted: AtomicU64,
    /// Streams currently allocated.
    pub streams: AtomicU64,
    /// Packets the fast path (XDP) relayed, as it reported them.
    pub fast_packets: AtomicU64,
    /// Bytes of those packets.
    pub fast_bytes: AtomicU64,
    /// Per realm tag (the index), both paths.
    realms: Mutex<Vec<MediaTotals>>,
    /// Ports not in use (quarantined ones included: they go out last), per
    /// media address and relay thread (a reload may add addresses; one lock
    /// per publication, never per packet).
    ports_free: Mutex<Vec<(IpAddr, usize, u64)>>,
    /// Of those, ports bound ahead for new streams (the reserve of
    /// pre-bound endpoints, [`super::reserve`]), per address and thread.
    ports_reserved: Mutex<Vec<(IpAddr, usize, u64)>>,
}

impl RelayStats {
    /// Zero totals, and every port of `ports` free, shared among `threads`.
    fn new(ports: &[(IpAddr, PortRange)], threads: usize) -> RelayStats {
        RelayStats {
            ports_free: Mutex::new(
                (0..threads)
                    .flat_map(|k| {
                        shares(ports, k, threads)
                            .into_iter()
                            .map(move |(ip, range)| (ip, k, range.len() as u64))
                    })
                    .collect(),
            ),
            ..RelayStats::default()
        }
    }

    /// What was relayed under each realm tag, cumulative: entry `i` is
    /// [`RealmTag`]`(i)`'s, up to the highest tag that relayed anything.
    /// Ingress attribution: a packet counts under the tag of the leg it was
    /// received on, so the sum over tags is the global total (for the fast
    /// path: every count it reported).
    pub fn realm_totals(&self) -> Vec<MediaTotals> {
        self.realms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Of [`ports_free`](Self::ports_free), the ports bound ahead in the
    /// reserve of pre-bound endpoints (two per endpoint): free for the next
    /// calls, bound to no call.
    pub fn ports_reserved(&self, ip: IpAddr) -> u64 {
        self.ports_reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(addr, _, _)| *addr == ip)
            .map(|(_, _, n)| *n)
            .sum()
    }

    /// Ports of `ip`'s pool not in use, quarantined ones included (a leg takes
    /// two ports, RTP and RTCP, or one when muxed), and the reserve's (bound
    /// ahead for the next calls, see [`ports_reserved`](Self::ports_reserved)
    /// and [`super::reserve`]); `None` for an address the relay has no pool
    /// for.
    pub fn ports_free(&self, ip: IpAddr) -> Option<u64> {
        self.ports_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(addr, _, _)| *addr == ip)
            .map(|(_, _, free)| *free)
            .reduce(|a, b| a + b)
    }
}

/// A fast path the relay drives (the XDP backend implements it): the relay
/// stays the slow path for every packet the fast path passes up, and the
/// only place sources are learned.
///
/// Called on the relay thread; keep both methods non-blocking.
pub trait FastPath: Send {
    /// Replace every flow installed for `stream` with `flows` (empty: the
    /// stream was released, or nothing of it may bypass userspace now).
    fn update(&mut self, stream: StreamId, flows: &[FastFlow]);

    /// Append what the fast path relayed since the last call (deltas),
    /// including what flows removed since then relayed before they went.
    /// Called at the flow table's timeout cadence (at most every second).
    fn collect(&mut self, counts: &mut Vec<FastCounts>);

    /// Append what `stream`'s flows relayed since they were last read. Called
    /// just before the stream is released, so its final counters include
    /// the fast path.
    fn collect_stream(&mut self, stream: StreamId, counts: &mut Vec<FastCounts>);

    /// The local addresses of flows the fast path carries for no stream of
    /// this relay (a previous process's, after a restart): the relay keeps
    /// their ports from being handed out until
    /// [`housekeeping`](Self::housekeeping) gives them back. Asked once, at
    /// start.
    fn adopted(&mut self) -> Vec<std::net::SocketAddr> {
        Vec::new()
    }

    /// When [`housekeeping`](Self::housekeeping) is next due, if ever (the
    /// relay thread wakes for it even without streams).
    fn next_housekeeping(&self) -> Option<Instant> {
        None
    }

    /// Work of the fast path's own, not tied to a stream (e.g. expiring the
    /// flows a previous process left). Called once it is due; returns the
    /// local addresses of adopted flows it removed, whose ports are free
    /// again.
    fn housekeeping(&mut self, _now: Instant) -> Vec<std::net::SocketAddr> {
        Vec::new()
    }
}

enum Control {
    Command(MediaCommand),
    /// An allocation whose legs may use endpoints of the reserve.
    Claimed {
        stream: StreamId,
        legs: [LegSpec; 2],
        claim: Claim,
    },
    /// Bind this many endpoints ahead for the reserve.
    Reserve(IpAddr, usize),
    /// Close these reserved endpoints and give their ports back.
    Unreserve(Vec<LocalEndpoint>),
    AddPool(std::net::IpAddr, PortRange),
    Shutdown,
}

/// A relay thread's answer to a reserve request
/// ([`UserspaceRelay::reserve`]): the endpoints it bound ahead, now held for
/// claims ([`UserspaceRelay::send_claimed`]). Fewer than asked means the
/// pool is exhausted or a bind failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The relay thread holding them (see [`UserspaceRelay::lane_of_stream`]).
    pub lane: usize,
    /// The media address.
    pub ip: IpAddr,
    /// How many were asked for.
    pub asked: usize,
    /// The endpoints bound (RTP/RTCP pairs).
    pub endpoints: Vec<LocalEndpoint>,
}

/// A command the relay could not take.
#[derive(Debug)]
pub enum Offered {
    /// The queue is full (the relay thread is behind): here it is back.
    Full(MediaCommand),
    /// The relay thread has stopped.
    Stopped,
}

/// The command queue into one relay thread, and the waker of its poll.
#[derive(Clone)]
struct Lane {
    tx: SyncSender<Control>,
    waker: Arc<Waker>,
    /// Commands were queued without waking the thread
    /// ([`UserspaceRelay::flush`] wakes it).
    unwoken: Arc<AtomicBool>,
}

impl Lane {
    fn control(&self, control: Control) -> Result<(), MediaError> {
        self.queue(control)?;
        self.wake()
    }

    /// Queues without waking the thread: the caller flushes.
    fn queue(&self, control: Control) -> Result<(), MediaError> {
        match self.tx.try_send(control) {
            Ok(()) => {
                self.unwoken.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(MediaError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(MediaError::RelayStopped),
        }
    }

    fn wake(&self) -> Result<(), MediaError> {
        self.unwoken.store(false, Ordering::Relaxed);
        self.waker.wake().map_err(|_| MediaError::RelayStopped)
    }
}

/// A cloneable handle that sends commands into the relay threads: every
/// command of a stream goes to the thread that owns it (by stream id), so
/// they apply in the order sent.
#[derive(Clone)]
pub struct CommandSender {
    lanes: Vec<Lane>,
}

impl CommandSender {
    fn lane(&self, command: &MediaCommand) -> &Lane {
        &self.lanes[self.lane_of(command.stream())]
    }

    /// The relay thread that owns `stream`'s sockets.
    pub fn lane_of(&self, stream: StreamId) -> usize {
        (stream.0 % self.lanes.len() as u64) as usize
    }

    /// Queue a command without blocking.
    pub fn send(&self, command: MediaCommand) -> Result<(), MediaError> {
        self.lane(&command).control(Control::Command(command))
    }

    /// Queue a command without blocking; a full queue hands it back, so the
    /// caller can send it again later rather than lose it.
    pub fn offer(&self, command: MediaCommand) -> Result<(), Offered> {
        let lane = self.lane(&command);
        self.offer_quietly(command)?;
        lane.wake().map_err(|_| Offered::Stopped)
    }

    /// [`offer`](Self::offer) without waking the relay thread: it applies
    /// the command at its next wake-up, which [`flush`](Self::flush) brings.
    pub fn offer_quietly(&self, command: MediaCommand) -> Result<(), Offered> {
        let lane = self.lane(&command);
        match lane.tx.try_send(Control::Command(command)) {
            Ok(()) => {
                lane.unwoken.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(Control::Command(command))) => Err(Offered::Full(command)),
            Err(TrySendError::Full(_)) => Err(Offered::Stopped),
            Err(TrySendError::Disconnected(_)) => Err(Offered::Stopped),
        }
    }

    /// [`send`](Self::send) without waking the relay thread (see
    /// [`offer_quietly`](Self::offer_quietly)).
    pub fn send_quietly(&self, command: MediaCommand) -> Result<(), MediaError> {
        self.lane(&command).queue(Control::Command(command))
    }

    /// Wakes every relay thread that has commands queued quietly. One wake
    /// per batch instead of one per command: each wake is a syscall, and a
    /// relay thread woken on the caller's core preempts it, in the middle
    /// of the signaling a call's setup waits for.
    pub fn flush(&self) {
        for lane in &self.lanes {
            if lane.unwoken.load(Ordering::Relaxed) {
                // A stopped relay fails the next command instead.
                let _ = lane.wake();
            }
        }
    }
}

/// The running relay. Dropping it stops the threads and closes every socket.
pub struct UserspaceRelay {
    sender: CommandSender,
    // Behind locks (taken by one reader, uncontended) so the relay handle is
    // `Sync` and the daemon's main loop can run as a task on the runtime.
    events: Mutex<Receiver<MediaEvent>>,
    reserved: Mutex<Receiver<Reserved>>,
    stats: Arc<RelayStats>,
    threads: Vec<JoinHandle<()>>,
    /// `/proc/<pid>/task/<tid>` of each relay thread, for its CPU time.
    task_dirs: Vec<PathBuf>,
    /// The port ranges it started with (see [`UserspaceRelay::lane_of`]).
    ranges: Vec<(IpAddr, PortRange)>,
}

impl UserspaceRelay {
    /// Start the relay thread.
    pub fn start(config: RelayConfig) -> Result<UserspaceRelay, RelayError> {
        UserspaceRelay::start_with_fast_path(config, None)
    }

    /// Start the relay threads (`config.threads`, one with a fast path),
    /// driving `fast_path` as streams latch, change and end.
    pub fn start_with_fast_path(
        config: RelayConfig,
        mut fast_path: Option<Box<dyn FastPath>>,
    ) -> Result<UserspaceRelay, RelayError> {
        let n = if fast_path.is_some() {
            1
        } else {
            config.threads.max(1)
        };
        let (event_tx, events) = mpsc::channel();
        // Unbounded like events: one answer per reserve request, and the
        // requests are bounded by the reserve's size.
        let (reserved_tx, reserved) = mpsc::channel();
        let ranges = config.ports.clone();
        let stats = Arc::new(RelayStats::new(&config.ports, n));
        let mut lanes = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut task_dirs = Vec::with_capacity(n);
        for k in 0..n {
            let poll = Poll::new().map_err(|source| RelayError::Start {
                step: "poll",
                source,
            })?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|source| {
                RelayError::Start {
                    step: "waker",
                    source,
                }
            })?);
            let (tx, rx) = mpsc::sync_channel(config.command_capacity.max(1));
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let ports = PortAllocator::new(config.ports_of(k, n), config.quarantine);
            let mut table = FlowTable::new(config.flow, ports);
            table.set_realm_networks(config.realm_networks.clone());
            let fast_path = fast_path.take().map(|mut fast_path| {
                // A previous process's flows keep their ports until they end.
                for addr in fast_path.adopted() {
                    table.reserve_port(addr);
                }
                fast_path
            });
            let relay = Relay {
                index: k,
                poll,
                table,
                sockets: Vec::new(),
                free_tokens: Vec::new(),
                streams: HashMap::new(),
                commands: rx,
                events: event_tx.clone(),
                reserved_tx: reserved_tx.clone(),
                reserved: HashMap::new(),
                stats: Arc::clone(&stats),
                config: config.clone(),
                fast_path,
                fast_counts: Vec::new(),
                tally: Tally::default(),
                ports_check: None,
                published_streams: 0,
                scratch: Vec::with_capacity(2048),
            };
            let name = if n == 1 {
                "media-relay".to_owned()
            } else {
                format!("media-relay-{k}")
            };
            let scheduling = config.scheduling;
            let cpus =
                (!config.cpus.is_empty()).then(|| config.cpus[k % config.cpus.len()].clone());
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    if let Some(cpus) = &cpus
                        && let Err(source) = crate::sched::set_current_thread_cpus(cpus)
                    {
                        let _ = ready_tx.send(Err(RelayError::Affinity {
                            cpus: cpus.clone(),
                            thread: k,
                            source,
                        }));
                        return;
                    }
                    if let Some(class) = scheduling
                        && let Err(source) = crate::sched::set_current_thread(class)
                    {
                        let _ = ready_tx.send(Err(RelayError::Scheduling { class, source }));
                        return;
                    }
                    // Readable only by this thread: where the kernel keeps its CPU time.
                    // (The link is relative: "<pid>/task/<tid>".)
                    let task = std::fs::read_link("/proc/thread-self").ok();
                    let _ = ready_tx.send(Ok(task.map(|t| PathBuf::from("/proc").join(t))));
                    relay.run();
                })
                .map_err(|source| RelayError::Start {
                    step: "thread",
                    source,
                })?;
            match ready_rx.recv() {
                Ok(Ok(task)) => task_dirs.extend(task),
                Ok(Err(refused)) => {
                    let _ = thread.join();
                    return Err(refused);
                }
                Err(_) => {}
            }
            lanes.push(Lane {
                tx,
                waker,
                unwoken: Arc::new(AtomicBool::new(false)),
            });
            threads.push(thread);
        }
        Ok(UserspaceRelay {
            sender: CommandSender { lanes },
            events: Mutex::new(events),
            reserved: Mutex::new(reserved),
            stats,
            threads,
            task_dirs,
            ranges,
        })
    }

    /// A handle for sending commands from other threads.
    pub fn sender(&self) -> CommandSender {
        self.sender.clone()
    }

    /// Queue a command without blocking.
    pub fn send(&self, command: MediaCommand) -> Result<(), MediaError> {
        self.sender.send(command)
    }

    /// Queue a command without blocking, or have it back if the queue is
    /// full ([`CommandSender::offer`]).
    pub fn offer(&self, command: MediaCommand) -> Result<(), Offered> {
        self.sender.offer(command)
    }

    /// [`CommandSender::send_quietly`].
    pub fn send_quietly(&self, command: MediaCommand) -> Result<(), MediaError> {
        self.sender.send_quietly(command)
    }

    /// [`CommandSender::offer_quietly`].
    pub fn offer_quietly(&self, command: MediaCommand) -> Result<(), Offered> {
        self.sender.offer_quietly(command)
    }

    /// Wakes the relay threads that have commands queued quietly
    /// ([`CommandSender::flush`]).
    pub fn flush(&self) {
        self.sender.flush();
    }

    /// Gives a media address that a reload introduced its port pool; an
    /// address that has one keeps it. Applied in order with commands, so an
    /// allocation sent after this finds the pool.
    pub fn add_pool(&self, ip: std::net::IpAddr, range: PortRange) -> Result<(), MediaError> {
        let n = self.sender.lanes.len();
        for (k, lane) in self.sender.lanes.iter().enumerate() {
            if let Some(share) = range.share(k, n) {
                lane.control(Control::AddPool(ip, share))?;
            }
        }
        Ok(())
    }

    /// How many relay threads run.
    pub fn threads(&self) -> usize {
        self.sender.lanes.len()
    }

    /// The relay thread that owns `stream`'s sockets: a claim for it must
    /// take endpoints that thread reserved.
    pub fn lane_of_stream(&self, stream: StreamId) -> usize {
        self.sender.lane_of(stream)
    }

    /// Asks relay thread `lane` to bind `count` endpoints (RTP/RTCP pairs)
    /// of `ip` ahead, in the background; it answers with a [`Reserved`]
    /// ([`try_reserved`](Self::try_reserved)). Their ports leave the pool
    /// but count as free ([`RelayStats::ports_free`]). Queued quietly:
    /// [`flush`](Self::flush) wakes the thread.
    pub fn reserve(&self, lane: usize, ip: IpAddr, count: usize) -> Result<(), MediaError> {
        self.lane(lane)?.queue(Control::Reserve(ip, count))
    }

    /// Closes reserved endpoints of `lane` no stream took, and gives their
    /// ports back to the pool at once (no SDP named them). On an error
    /// (queue full) nothing was done: offer them again later. Queued
    /// quietly: [`flush`](Self::flush) wakes the thread.
    pub fn unreserve(&self, lane: usize, endpoints: Vec<LocalEndpoint>) -> Result<(), MediaError> {
        self.lane(lane)?.queue(Control::Unreserve(endpoints))
    }

    /// [`MediaCommand::Allocate`] for `stream` with, per leg, an endpoint the
    /// stream's thread reserved (or `None`: a port pair from the pool, bound
    /// now). With an endpoint for both legs the relay reports no
    /// [`MediaEvent::Allocated`]: the caller knows the endpoints already and
    /// reports it to the core itself. A failure is reported as for
    /// `Allocate`. Queued quietly: [`flush`](Self::flush) wakes the thread.
    pub fn send_claimed(
        &self,
        stream: StreamId,
        legs: [LegSpec; 2],
        claim: Claim,
    ) -> Result<(), MediaError> {
        self.lane(self.lane_of_stream(stream))?
            .queue(Control::Claimed {
                stream,
                legs,
                claim,
            })
    }

    /// The next answer to a reserve request, if one is waiting (the
    /// [`RelayConfig::notify`] callback announces them like events).
    pub fn try_reserved(&self) -> Option<Reserved> {
        self.reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_recv()
            .ok()
    }

    fn lane(&self, lane: usize) -> Result<&Lane, MediaError> {
        self.sender.lanes.get(lane).ok_or(MediaError::RelayStopped)
    }

    /// The relay thread whose share of the start's port ranges holds
    /// `local`: a [`MediaCommand::Restore`] of a stream on that port must
    /// have a stream id `k` modulo [`threads`](Self::threads) to reach it.
    pub fn lane_of(&self, local: SocketAddr) -> Option<usize> {
        let n = self.threads();
        let (_, range) = self
            .ranges
            .iter()
            .find(|(ip, range)| *ip == local.ip() && range.contains(local.port()))?;
        (0..n).find(|&k| range.share(k, n).is_some_and(|s| s.contains(local.port())))
    }

    /// The next event, if one is waiting.
    pub fn try_event(&self) -> Option<MediaEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_recv()
            .ok()
    }

    /// The next event, waiting at most `timeout`.
    pub fn event_timeout(&self, timeout: Duration) -> Option<MediaEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(timeout)
            .ok()
    }

    /// Totals over every stream.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// CPU time the relay thread has used, from the kernel's scheduler
    /// statistics (`schedstat`, nanoseconds); `None` where unavailable.
    pub fn thread_cpu_time(&self) -> Option<Duration> {
        let mut total = Duration::ZERO;
        for dir in &self.task_dirs {
            let text = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            total += Duration::from_nanos(text.split_whitespace().next()?.parse().ok()?);
        }
        (!self.task_dirs.is_empty()).then_some(total)
    }

    /// Stop the thread and close every socket; waits for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let threads = std::mem::take(&mut self.threads);
        for (lane, thread) in self.sender.lanes.iter().zip(threads) {
            // A full queue still takes Shutdown once the thread drains it;
            // block (briefly) rather than leak the thread.
            if lane.tx.send(Control::Shutdown).is_ok() {
                let _ = lane.waker.wake();
            }
            let _ = thread.join();
        }
    }
}

impl Drop for UserspaceRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

struct SocketEntry {
    socket: UdpSocket,
    stream: StreamId,
    leg: Leg,
    component: Component,
    /// The leg's tag: what it receives counts under.
    realm: RealmTag,
}

/// Tokens of one stream's sockets, by `[leg][component]`.
type StreamSockets = [[Option<usize>; 2]; 2];

fn component_index(component: Component) -> usize {
    match component {
        Component::Rtp => 0,
        Component::Rtcp => 1,
    }
}

struct Relay {
    /// Which relay thread this is (its share of ports, its line of stats).
    index: usize,
    poll: Poll,
    table: FlowTable,
    /// Indexed by token.
    sockets: Vec<Option<SocketEntry>>,
    free_tokens: Vec<usize>,
    streams: HashMap<StreamId, StreamSockets>,
    commands: Receiver<Control>,
    events: mpsc::Sender<MediaEvent>,
    reserved_tx: mpsc::Sender<Reserved>,
    /// Endpoints bound ahead for new streams (RTP, RTCP sockets), by RTP
    /// address; not registered with the poll until a stream takes them.
    reserved: HashMap<SocketAddr, [UdpSocket; 2]>,
    stats: Arc<RelayStats>,
    config: RelayConfig,
    fast_path: Option<Box<dyn FastPath>>,
    fast_counts: Vec<FastCounts>,
    /// What this turn relayed, published at its end.
    tally: Tally,
    /// When free ports must be republished for quarantines that end.
    ports_check: Option<Instant>,
    /// Where a rewritten RTCP packet is built.
    scratch: Vec<u8>,
    /// The stream count this thread last added to the shared total.
    published_streams: u64,
}

/// Totals of one turn, published to [`RelayStats`] once per turn.
#[derive(Default)]
struct Tally {
    relayed: u64,
    bytes: u64,
    dropped: u64,
    /// By [`DropCause`], in its declaration order.
    causes: [u64; 6],
    fast_packets: u64,
    fast_bytes: u64,
    /// Per realm tag (the index); kept between turns, zeroed when published.
    realms: Vec<MediaTotals>,
    /// Something was added to `realms` this turn.
    any_realm: bool,
}

impl Tally {
    fn realm(&mut self, tag: RealmTag) -> &mut MediaTotals {
        let index = tag.index();
        if index >= self.realms.len() {
            self.realms.resize(index + 1, MediaTotals::default());
        }
        self.any_realm = true;
        &mut self.realms[index]
    }

    /// One packet of `len` bytes relayed by userspace, received on a leg
    /// tagged `tag`.
    fn relayed(&mut self, tag: RealmTag, len: usize) {
        let len = len as u64;
        self.relayed += 1;
        self.bytes += len;
        let realm = self.realm(tag);
        realm.userspace_packets += 1;
        realm.userspace_bytes += len;
    }

    /// One packet dropped.
    fn dropped(&mut self, cause: DropCause) {
        self.dropped += 1;
        self.causes[cause as usize] += 1;
    }

    /// What the fast path reported for one leg.
    fn fast(&mut self, counts: &FastCounts) {
        self.fast_packets += counts.packets;
        self.fast_bytes += counts.bytes;
        let realm = self.realm(counts.realm);
        realm.xdp_packets += counts.packets;
        realm.xdp_bytes += counts.bytes;
    }

    /// Adds this turn to `stats` and starts the next one at zero.
    fn publish(&mut self, stats: &RelayStats) {
        let add = |counter: &AtomicU64, n: &mut u64| {
            if *n > 0 {
                counter.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        };
        add(&stats.packets_relayed, &mut self.relayed);
        add(&stats.bytes_relayed, &mut self.bytes);
        add(&stats.packets_dropped, &mut self.dropped);
        let [unknown, malformed, source, direction, send, stun] = &mut self.causes;
        add(&stats.dropped_unknown_flow, unknown);
        add(&stats.dropped_malformed, malformed);
        add(&stats.dropped_source, source);
        add(&stats.dropped_direction, direction);
        add(&stats.dropped_send, send);
        add(&stats.dropped_stun, stun);
        add(&stats.fast_packets, &mut self.fast_packets);
        add(&stats.fast_bytes, &mut self.fast_bytes);
        if std::mem::take(&mut self.any_realm) {
            let mut totals = stats.realms.lock().unwrap_or_else(PoisonError::into_inner);
            if totals.len() < self.realms.len() {
                totals.resize(self.realms.len(), MediaTotals::default());
            }
            for (total, turn) in totals.iter_mut().zip(&mut self.realms) {
                total.add(turn);
                *turn = MediaTotals::default();
            }
        }
    }
}

impl Relay {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut pending: Vec<usize> = Vec::new();
        let mut ready: Vec<usize> = Vec::new();
        // The pools as they start (ports kept for adopted flows included).
        #[allow(clippy::disallowed_methods)]
        self.publish_ports(Instant::now());
        loop {
            // The IO shell: the only clock reads of the media layer.
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            let timeout = if pending.is_empty() {
                [
                    self.table.poll_timeout(),
                    self.ports_check,
                    self.fast_path.as_ref().and_then(|f| f.next_housekeeping()),
                ]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                // epoll_wait fails only on a broken epoll fd: nothing to poll.
                return;
            }
            ready.clear();
            ready.append(&mut pending);
            let mut wake = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => wake = true,
                    Token(token) => ready.push(token),
                }
            }
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            if wake && self.drain_commands(now).is_break() {
                return;
            }
            for &token in &ready {
                if self.drain_socket(now, token, &mut buf) {
                    pending.push(token);
                }
            }
            self.sync_fast_path(now);
            self.table.handle_timeout(now);
            if wake || self.ports_check.is_some_and(|at| at <= now) {
                self.publish_ports(now);
            }
            self.publish();
        }
    }

    fn drain_commands(&mut self, now: Instant) -> std::ops::ControlFlow<()> {
        loop {
            match self.commands.try_recv() {
                Ok(Control::Command(command)) => self.apply(now, command),
                Ok(Control::Claimed {
                    stream,
                    legs,
                    claim,
                }) => self.apply_claimed(now, stream, legs, claim),
                Ok(Control::Reserve(ip, count)) => self.fill_reserve(now, ip, count),
                Ok(Control::Unreserve(endpoints)) => {
                    for endpoint in endpoints {
                        if self.reserved.remove(&endpoint.rtp).is_some() {
                            self.table.return_reserve(endpoint);
                        }
                    }
                }
                // Its free ports are published at the end of this turn,
                // like after any command.
                Ok(Control::AddPool(ip, range)) => {
                    self.table.add_pool(ip, range);
                }
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => {
                    return std::ops::ControlFlow::Break(());
                }
                Err(TryRecvError::Empty) => return std::ops::ControlFlow::Continue(()),
            }
        }
    }

    fn apply(&mut self, now: Instant, command: MediaCommand) {
        if let (
            MediaCommand::Release { stream } | MediaCommand::Report { stream },
            Some(fast_path),
        ) = (&command, self.fast_path.as_mut())
        {
            // Before the table forgets the stream: its final counters
            // include what the fast path relayed since the last collection.
            fast_path.collect_stream(*stream, &mut self.fast_counts);
            self.take_fast_counts(now);
        }
        match self.table.handle_command(now, command) {
            SocketWork::None => {}
            SocketWork::Bind { stream, legs } => match self.bind_stream(stream, legs, [None, None])
            {
                Ok(tokens) => {
                    self.streams.insert(stream, tokens);
                    self.table.confirm_allocation(stream);
                }
                Err(error) => self.table.abort_allocation(now, stream, error),
            },
            SocketWork::Close { stream, .. } => {
                if let Some(tokens) = self.streams.remove(&stream) {
                    self.close_all(&tokens);
                }
            }
        }
    }

    /// A claimed allocation: the stream takes the reserved sockets of the
    /// claimed legs and binds the others. With both legs claimed the core
    /// was told the endpoints already: no `Allocated` again.
    fn apply_claimed(&mut self, now: Instant, stream: StreamId, legs: [LegSpec; 2], claim: Claim) {
        // Out of the reserve whatever happens: on failure they close.
        let mut sockets = claim.map(|c| c.and_then(|e| self.reserved.remove(&e.rtp)));
        // An endpoint the reserve no longer holds (not expected) is bound
        // afresh below, as if unclaimed.
        let claim: Claim = [0, 1].map(|i| claim[i].filter(|_| sockets[i].is_some()));
        let answered = claim.iter().all(Option::is_some);
        match self.table.allocate_claimed(now, stream, legs, claim) {
            SocketWork::Bind { stream, legs } => {
                match self.bind_stream(stream, legs, [sockets[0].take(), sockets[1].take()]) {
                    Ok(tokens) => {
                        self.streams.insert(stream, tokens);
                        if !answered {
                            self.table.confirm_allocation(stream);
                        }
                    }
                    Err(error) => self.table.abort_allocation(now, stream, error),
                }
            }
            SocketWork::None | SocketWork::Close { .. } => {}
        }
    }

    /// Binds up to `count` endpoints of `ip` ahead and reports them.
    fn fill_reserve(&mut self, now: Instant, ip: IpAddr, count: usize) {
        let mut endpoints = Vec::with_capacity(count);
        for _ in 0..count {
            let Ok(endpoint) = self.table.lease_reserve(now, ip) else {
                break; // exhausted (or an unknown address): answer short
            };
            let rtcp = endpoint.rtcp.unwrap_or(endpoint.rtp);
            match (
                bind_socket(endpoint.rtp, &self.config),
                bind_socket(rtcp, &self.config),
            ) {
                (Ok(rtp), Ok(rtcp)) => {
                    self.reserved.insert(endpoint.rtp, [rtp, rtcp]);
                    endpoints.push(endpoint);
                }
                _ => {
                    // Something else holds a port: quarantined like a
                    // failed allocation's.
                    self.table.fail_reserve(now, endpoint);
                    break;
                }
            }
        }
        let answer = Reserved {
            lane: self.index,
            ip,
            asked: count,
            endpoints,
        };
        if self.reserved_tx.send(answer).is_ok()
            && let Some(notify) = &self.config.notify
        {
            notify();
        }
    }

    fn bind_stream(
        &mut self,
        stream: StreamId,
        legs: [LocalEndpoint; 2],
        mut given: [Option<[UdpSocket; 2]>; 2],
    ) -> Result<StreamSockets, MediaError> {
        let mut tokens: StreamSockets = [[None; 2]; 2];
        let realms = self.table.realms(stream).unwrap_or_default();
        for (leg, local) in [(Leg::A, legs[0]), (Leg::B, legs[1])] {
            let wanted = [
                (Component::Rtp, Some(local.rtp)),
                (Component::Rtcp, local.rtcp),
            ];
            let mut given = given[leg.index()]
                .take()
                .map(|[rtp, rtcp]| [Some(rtp), Some(rtcp)]);
            for (component, addr) in wanted {
                let Some(addr) = addr else { continue };
                let key = SocketEntryKey {
                    stream,
                    leg,
                    component,
                    realm: realms[leg.index()],
                };
                let socket = given
                    .as_mut()
                    .and_then(|g| g[component_index(component)].take());
                let opened = match socket {
                    Some(socket) => {
                        discard_queued(&socket);
                        self.register(socket, key)
                    }
                    None => self.open(addr, key),
                };
                match opened {
                    Ok(token) => tokens[leg.index()][component_index(component)] = Some(token),
                    Err(kind) => {
                        self.close_all(&tokens);
                        return Err(MediaError::Bind { addr, kind });
                    }
                }
            }
        }
        Ok(tokens)
    }

    fn open(&mut self, addr: SocketAddr, key: SocketEntryKey) -> Result<usize, io::ErrorKind> {
        let socket = bind_socket(addr, &self.config).map_err(|e| e.kind())?;
        self.register(socket, key)
    }

    fn register(
        &mut self,
        mut socket: UdpSocket,
        key: SocketEntryKey,
    ) -> Result<usize, io::ErrorKind> {
        let token = self.free_tokens.pop().unwrap_or(self.sockets.len());
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(token), Interest::READABLE)
        {
            if token < self.sockets.len() {
                self.free_tokens.push(token);
            }
            return Err(e.kind());
        }
        let entry = SocketEntry {
            socket,
            stream: key.stream,
            leg: key.leg,
            component: key.component,
            realm: key.realm,
        };
        if token == self.sockets.len() {
            self.sockets.push(Some(entry));
        } else if let Some(slot) = self.sockets.get_mut(token) {
            *slot = Some(entry);
        }
        Ok(token)
    }

    fn close_all(&mut self, tokens: &StreamSockets) {
        for token in tokens.iter().flatten().flatten().copied() {
            if let Some(mut entry) = self.sockets.get_mut(token).and_then(Option::take) {
                let _ = self.poll.registry().deregister(&mut entry.socket);
                self.free_tokens.push(token);
            }
        }
    }

    /// Read up to [`DRAIN_BUDGET`] packets from one socket and relay them.
    /// Returns whether packets may remain.
    fn drain_socket(&mut self, now: Instant, token: usize, buf: &mut [u8]) -> bool {
        for _ in 0..DRAIN_BUDGET {
            let Some(Some(entry)) = self.sockets.get(token) else {
                return false; // closed by a command in this turn
            };
            let (len, source) = match entry.socket.recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors from earlier sends surface here; the packet
                // queue behind them is intact.
                Err(_) => continue,
            };
            let (stream, leg, component, realm) =
                (entry.stream, entry.leg, entry.component, entry.realm);
            let packet = buf.get(..len).unwrap_or_default();
            let route = match self
                .table
                .on_packet(now, stream, leg, component, source, packet)
            {
                Forward::To(route) => route,
                Forward::Drop(cause) => {
                    self.tally.dropped(cause);
                    continue;
                }
            };
            // RTCP's SDES names its sender: rewritten unless it is SRTCP.
            let mut packet = packet;
            if let Some(mask) = &self.config.cname_mask
                && classify(packet).is_some_and(|info| info.kind == PacketKind::Rtcp)
                && self.table.rtcp_rewritable(stream, leg)
            {
                match rtcp::hide_sdes(packet, mask, &mut self.scratch) {
                    Ok(true) => packet = &self.scratch,
                    Ok(false) => {}
                    Err(_) => {
                        // Not relayed with a CNAME in it.
                        self.table.send_failed(stream, route.leg, len);
                        self.tally.dropped(DropCause::Malformed);
                        continue;
                    }
                }
            }
            let len = packet.len();
            let out = self
                .streams
                .get(&stream)
                .and_then(|t| t[route.leg.index()][component_index(route.component)])
                .and_then(|t| self.sockets.get(t))
                .and_then(Option::as_ref);
            let sent = out.is_some_and(
                |out| matches!(out.socket.send_to(packet, route.to), Ok(n) if n == len),
            );
            if sent {
                self.tally.relayed(realm, len);
            } else {
                self.table.send_failed(stream, route.leg, len);
                self.tally.dropped(DropCause::Send);
            }
        }
        true
    }

    /// Push changed flows to the fast path, and take its counts in when the
    /// table is about to check timeouts.
    fn sync_fast_path(&mut self, now: Instant) {
        // Drained with or without a fast path, so the queue stays bounded.
        while let Some(stream) = self.table.poll_changed() {
            if let Some(fast_path) = self.fast_path.as_mut() {
                fast_path.update(stream, &self.table.fast_flows(stream));
            }
        }
        let Some(fast_path) = self.fast_path.as_mut() else {
            return;
        };
        let freed = if fast_path.next_housekeeping().is_some_and(|at| at <= now) {
            fast_path.housekeeping(now)
        } else {
            Vec::new()
        };
        if self.table.poll_timeout().is_some_and(|at| at <= now) {
            fast_path.collect(&mut self.fast_counts);
            self.take_fast_counts(now);
        }
        if !freed.is_empty() {
            for addr in freed {
                self.table.unreserve_port(now, addr);
            }
            // The port gauges show them free in this turn.
            self.ports_check = Some(now);
        }
    }

    /// Adds the fast path's counts to this turn and to their streams (a
    /// count for a stream already released still adds to the totals).
    fn take_fast_counts(&mut self, now: Instant) {
        for counts in self.fast_counts.drain(..) {
            self.tally.fast(&counts);
            self.table.add_fast_counts(now, counts);
        }
    }

    /// Republishes free ports per media address, after freeing those whose
    /// quarantine ended, and schedules the next check for the next end.
    fn publish_ports(&mut self, now: Instant) {
        self.table.expire_ports(now);
        let ports = self.table.ports();
        let mut published = self
            .stats
            .ports_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut reserved_now: Vec<(IpAddr, u64)> = Vec::new();
        for addr in self.reserved.keys() {
            match reserved_now.iter_mut().find(|(ip, _)| *ip == addr.ip()) {
                Some((_, n)) => *n += 2,
                None => reserved_now.push((addr.ip(), 2)),
            }
        }
        let reserved_of = |ip: IpAddr| {
            reserved_now
                .iter()
                .find(|(a, _)| *a == ip)
                .map_or(0, |(_, n)| *n)
        };
        let mut reserved = self
            .stats
            .ports_reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (ip, _) in ports.usages() {
            let n = reserved_of(ip);
            match reserved
                .iter_mut()
                .find(|(a, k, _)| *a == ip && *k == self.index)
            {
                Some((_, _, known)) => *known = n,
                None => reserved.push((ip, self.index, n)),
            }
        }
        drop(reserved);
        for (ip, usage) in ports.usages() {
            let free = usage.free() as u64 + reserved_of(ip);
            match published
                .iter_mut()
                .find(|(a, k, _)| *a == ip && *k == self.index)
            {
                Some((_, _, known)) => *known = free,
                None => published.push((ip, self.index, free)),
            }
        }
        drop(published);
        self.ports_check = ports.next_expiry().map(|at| at.max(now + PORTS_CADENCE));
    }

    fn publish(&mut self) {
        self.tally.publish(&self.stats);
        let stats = &self.stats;
        // Each thread adds the change in its own count to the total.
        let streams = self.table.len() as u64;
        if streams > self.published_streams {
            stats
                .streams
                .fetch_add(streams - self.published_streams, Ordering::Relaxed);
        } else if streams < self.published_streams {
            stats
                .streams
                .fetch_sub(self.published_streams - streams, Ordering::Relaxed);
        }
        self.published_streams = streams;
        let mut any = false;
        while let Some(event) = self.table.poll_event() {
            if let MediaEvent::AllocationFailed {
                error: MediaError::PortsExhausted { .. },
                ..
            } = event
            {
                stats.ports_exhausted.fetch_add(1, Ordering::Relaxed);
            }
            // The core dropped its receiver: it is shutting down; keep
            // relaying until told to stop.
            let _ = self.events.send(event);
            any = true;
        }
        if any && let Some(notify) = &self.config.notify {
            notify();
        }
    }
}

struct SocketEntryKey {
    stream: StreamId,
    leg: Leg,
    component: Component,
    realm: RealmTag,
}

/// Reads and drops what reached a reserved socket before its stream took
/// it (late packets of a port's previous call): not this stream's media.
fn discard_queued(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    for _ in 0..DRAIN_BUDGET {
        match socket.recv_from(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {}
        }
    }
}

fn bind_socket(addr: SocketAddr, config: &RelayConfig) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if config.reuse_address {
        socket.set_reuse_address(true)?;
    }
    if let Some(size) = config.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = config.send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    crate::transport::set_freebind(&socket, addr.is_ipv6(), config.freebind)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_tally_is_published_once_per_realm_and_path() {
        let stats = RelayStats::default();
        let mut tally = Tally::default();
        tally.relayed(RealmTag(2), 100);
        tally.relayed(RealmTag(2), 50);
        tally.relayed(RealmTag(0), 10);
        tally.fast(&FastCounts {
            stream: StreamId(1),
            leg: Leg::B,
            realm: RealmTag(0),
            packets: 40,
            bytes: 4000,
        });
        tally.publish(&stats);
        // A turn that relayed nothing adds nothing.
        tally.publish(&stats);
        tally.relayed(RealmTag(2), 1);
        tally.publish(&stats);
        let want = vec![
            MediaTotals {
                userspace_packets: 1,
                userspace_bytes: 10,
                xdp_packets: 40,
                xdp_bytes: 4000,
            },
            MediaTotals::default(),
            MediaTotals {
                userspace_packets: 3,
                userspace_bytes: 151,
                ..MediaTotals::default()
            },
        ];
        assert_eq!(stats.realm_totals(), want);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            (
                load(&stats.packets_relayed),
                load(&stats.bytes_relayed),
                load(&stats.fast_packets),
                load(&stats.fast_bytes)
            ),
            (4, 161, 40, 4000),
            "the global totals are the sums over realms"
        );
    }
}
