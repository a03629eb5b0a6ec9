//! The configuration schema: what an operator may write, with its defaults.
//!
//! Every struct denies unknown fields, so a misspelt key is an error that names
//! the key and lists the expected ones. Defaults are functions (one per field)
//! so that a field left out and the documented default cannot drift apart.
//! Durations are integers with the unit in the field name (`_secs`, `_ms`).
//!
//! Top-level arrays use singular names (`[[realm]]`, `[[trunk]]`, `[[route]]`):
//! each table reads as "a realm", and problems name them as `trunk[1].realm`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::ServerPolicy;

/// A whole SBC configuration, as written in TOML.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SIP behaviour knobs.
    #[serde(default)]
    pub sip: SipConfig,
    /// Global admission limits and the answer to overload.
    #[serde(default)]
    pub limits: Limits,
    /// Per-source limits, bans and scanner handling for untrusted sources
    /// (every realm's default; a realm may override fields).
    #[serde(default)]
    pub protection: Protection,
    /// Log verbosity.
    #[serde(default)]
    pub logging: Logging,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// Call detail records (off unless a path is given).
    #[serde(default)]
    pub cdr: Cdr,
    /// The media port range, timeouts, latching and the XDP fast path.
    #[serde(default)]
    pub media: Media,
    /// The default header policy applied at the border (topology hiding).
    #[serde(default)]
    pub topology_hiding: HeaderPolicy,
    /// The networks the SBC sits between (`[[realm]]`).
    #[serde(default, rename = "realm")]
    pub realms: Vec<Realm>,
    /// The peers calls are sent to (`[[trunk]]`).
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<Trunk>,
    /// Where calls go, first match wins (`[[route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// State kept across restarts.
    #[serde(default)]
    pub state: State,
    /// Draining: stop taking calls, let the calls up end, then exit.
    #[serde(default)]
    pub drain: Drain,
    /// How trunks given by DNS name are resolved.
    #[serde(default)]
    pub dns: Dns,
    /// Active/standby with a peer node, through Redis (absent: one node).
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// The rtpengine "ng" control protocol server (off when absent).
    #[serde(default)]
    pub ng: Option<Ng>,
    /// Real-time scheduling of the signaling and media threads (off unless
    /// a priority is given).
    #[serde(default)]
    pub scheduling: Scheduling,
}

/// Real-time scheduling (rtpengine's `--scheduling`/`--priority`, Kamailio's
/// `rt_policy`/`rt_prio`): threads given a priority run before every
/// ordinary process of the host, so a busy neighbour or a management agent
/// no longer delays a call's messages. Needs root, `CAP_SYS_NICE` or an
/// `RLIMIT_RTPRIO` at least the priority (systemd: `LimitRTPRIO=` and
/// `RestrictRealtime=no`); the daemon refuses to start without it rather
/// than run unprioritised.
///
/// And the CPUs each kind of thread runs on (taskset's lists): signaling
/// on CPUs of its own, so neither the media relay nor another process of
/// the host queues a call's messages behind its work; each relay thread
/// pinned to one CPU. Needs no privilege; CPUs the process may not use
/// (its cgroup's cpuset, systemd's `CPUAffinity=`, taskset) are refused at
/// start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduling {
    /// The real-time policy of the threads given a priority.
    #[serde(default)]
    pub policy: RealtimePolicy,
    /// 1-99: the real-time priority of the signaling threads (every thread
    /// but the media relay's: the runtime's workers, which receive, handle
    /// and send SIP, and the threads they start). 0: the kernel's ordinary
    /// time-sharing scheduler.
    #[serde(default)]
    pub signaling_priority: u8,
    /// 1-99: the real-time priority of the userspace media relay threads.
    /// 0: the ordinary scheduler.
    #[serde(default)]
    pub media_priority: u8,
    /// The CPUs of the signaling threads (all of them share the list).
    /// Absent: the CPUs the daemon was started with.
    #[serde(default)]
    pub signaling_cpus: Option<crate::sched::CpuList>,
    /// The CPUs of the media relay threads: relay thread k is pinned to
    /// the k-th CPU of the list (round robin when there are more threads),
    /// and `media.relay_threads = 0` makes one thread per CPU listed.
    /// Absent: the CPUs the daemon was started with.
    #[serde(default)]
    pub media_cpus: Option<crate::sched::CpuList>,
}

/// A real-time scheduling policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RealtimePolicy {
    /// `SCHED_FIFO`: a thread runs until it blocks or a higher priority
    /// wakes.
    #[default]
    Fifo,
    /// `SCHED_RR`: as FIFO, but threads of one priority share a CPU in time
    /// slices.
    Rr,
}

impl Scheduling {
    /// The class of the signaling threads; `None` leaves them as started
    /// (so a daemon run under `chrt` keeps what it was given).
    pub fn signaling(&self) -> Option<crate::sched::Class> {
        self.class(self.signaling_priority)
    }

    /// The class of the media relay threads; `None` leaves them as they
    /// start, which is the signaling class they inherit. A real-time
    /// signaling class with no media priority sets them back to normal.
    pub fn media(&self) -> Option<crate::sched::Class> {
        match (self.class(self.media_priority), self.signaling()) {
            (Some(class), _) => Some(class),
            (None, Some(_)) => Some(crate::sched::Class::Normal),
            (None, None) => None,
        }
    }

    /// The CPUs of each media relay thread, by thread (thread k takes
    /// entry k modulo the length); empty leaves them on the CPUs they
    /// inherit. `started_on`: the CPUs the daemon was started with, where
    /// the relay threads go back to when only the signaling threads were
    /// given CPUs.
    pub fn relay_cpus(&self, started_on: &crate::sched::CpuList) -> Vec<crate::sched::CpuList> {
        use crate::sched::CpuList;
        match (&self.media_cpus, &self.signaling_cpus) {
            (Some(media), _) => media
                .cpus()
                .iter()
                .filter_map(|c| CpuList::one(*c))
                .collect(),
            (None, Some(_)) => vec![started_on.clone()],
            (None, None) => Vec::new(),
        }
    }

    /// Whether every CPU named is one the process may use (`allowed`: the
    /// CPUs it was started with); else the field, the CPUs it may not use
    /// and what to change.
    pub fn check_cpus(&self, allowed: &crate::sched::CpuList) -> Result<(), String> {
        for (field, list) in [
            ("signaling_cpus", &self.signaling_cpus),
            ("media_cpus", &self.media_cpus),
        ] {
            if let Some(missing) = list.as_ref().and_then(|l| l.not_in(allowed)) {
                let (cpus, are) = if missing.len() == 1 {
                    ("CPU", "is")
                } else {
                    ("CPUs", "are")
                };
                return Err(format!(
                    "scheduling.{field}: {cpus} {missing} {are} not among the CPUs this process may use ({allowed}); \
                     list CPUs of the host that its cgroup's cpuset, systemd's CPUAffinity= or taskset allow"
                ));
            }
        }
        Ok(())
    }

    fn class(&self, priority: u8) -> Option<crate::sched::Class> {
        use crate::sched::Class;
        match (priority, self.policy) {
            (0, _) => None,
            (p, RealtimePolicy::Fifo) => Some(Class::Fifo(p)),
            (p, RealtimePolicy::Rr) => Some(Class::RoundRobin(p)),
        }
    }
}

/// The rtpengine "ng" control protocol server (`sbc::ng`): a SIP proxy
/// (Kamailio's or OpenSIPS' `rtpengine` module) anchors its calls' media
/// here. With it, realms need no SIP listener (a media-only node).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ng {
    /// The UDP address ng requests arrive on (rtpengine's `--listen-ng`).
    pub listen: SocketAddr,
    /// A TCP address for the same messages (rtpengine's `--listen-tcp-ng`).
    #[serde(default)]
    pub listen_tcp: Option<SocketAddr>,
    /// The realms of the offerer's and the answerer's legs when a request
    /// names no `direction`; the first realm for both when absent.
    #[serde(default)]
    pub direction: Option<[String; 2]>,
    /// At most this many ng sessions (calls); more are refused the way
    /// rtpengine refuses when full, so the proxy tries its next relay
    /// (0: no limit but the ports).
    #[serde(default)]
    pub max_sessions: u32,
    /// The networks the proxies that may send ng commands are in; requests
    /// from anywhere else are dropped unanswered and counted
    /// (`sbc_ng_refused_total`). Empty (the default): loopback only, a
    /// proxy on the same host. ng has no authentication: whoever reaches the
    /// port can anchor, redirect and delete media, so a listener other hosts
    /// can reach must name them here (validation refuses one that does
    /// not). `["0.0.0.0/0", "::/0"]` opens it to all, as rtpengine is.
    #[serde(default)]
    pub allow: Vec<IpNet>,
}

impl Ng {
    /// Whether `source` may send ng commands.
    pub fn permits(&self, source: IpAddr) -> bool {
        ng_permits(&self.allow, source)
    }
}

/// Whether `source` may send ng commands under the allow list `allow`
/// (empty: loopback only). An IPv4-mapped IPv6 source counts as its IPv4
/// address.
pub fn ng_permits(allow: &[IpNet], source: IpAddr) -> bool {
    let source = source.to_canonical();
    if allow.is_empty() {
        source.is_loopback()
    } else {
        allow.iter().any(|n| n.contains(&source))
    }
}

/// How the nodes of a cluster share the work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Two nodes, one serving: the node holding the lease in Redis serves,
    /// the other mirrors its calls and takes over when the lease expires.
    #[default]
    Pair,
    /// Every node serves its own addresses (behind DNS SRV or a load
    /// balancer): they share bans and per-trunk limits through Redis; a
    /// node's calls end with it.
    Active,
}

/// Nodes that share Redis: an active/standby pair (both run the same file
/// except `node_id`, and on one host the metrics listener; the node
/// holding the lease serves, the other waits and takes over once the lease
/// expires), or N active nodes sharing limits and bans.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `pair` (the default) or `active`.
    #[serde(default)]
    pub mode: ClusterMode,
    /// `redis://HOST[:PORT]` (Valkey works too).
    pub redis_url: String,
    /// This node's name, unique in the pair: letters, digits, `.`, `_`, `-`.
    pub node_id: String,
    /// The pair's name: the prefix of its keys, so pairs can share a Redis.
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// How long the lease lasts without renewal: the longest an active node
    /// that died holds its addresses.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u32,
    /// How often the active node renews the lease (the standby asks twice
    /// as often); at most a third of `lease_ms`.
    #[serde(default = "default_renew_ms")]
    pub renew_ms: u32,
    /// How long a call's record stays in Redis without a change: the
    /// longest an answered call can last and still be carried on by the
    /// other node (a record is deleted when its call ends).
    #[serde(default = "default_call_ttl_secs")]
    pub call_ttl_secs: u32,
}

fn default_call_ttl_secs() -> u32 {
    86_400
}

fn default_cluster_name() -> String {
    "sbc".to_owned()
}

fn default_lease_ms() -> u32 {
    1500
}

fn default_renew_ms() -> u32 {
    500
}

/// The resolver for trunks given by DNS name (RFC 3263), and what happens
/// to a target that fails.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers to ask (`"IP:port"`), in order; empty: the system's
    /// (`/etc/resolv.conf`).
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// How long a trunk target that timed out, could not be reached or
    /// answered 503 is tried only after the others (seconds; 0: never).
    #[serde(default = "default_target_block_secs")]
    pub target_block_secs: u32,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            target_block_secs: default_target_block_secs(),
        }
    }
}

fn default_target_block_secs() -> u32 {
    30
}

/// Draining (SIGQUIT): readiness goes false and new calls get 503 while
/// the calls up go on to their natural end; the daemon exits when the last
/// one ends, or at the deadline, where the rest are ended as SIGTERM ends
/// them (BYE on both legs, CDRs written).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// How long a drain waits for the calls up to end by themselves
    /// (seconds, 1 to 86400). Read when the drain starts, so a reload
    /// before it counts.
    #[serde(default = "default_drain_deadline_secs")]
    pub deadline_secs: u32,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            deadline_secs: default_drain_deadline_secs(),
        }
    }
}

fn default_drain_deadline_secs() -> u32 {
    1_800
}

/// State kept across restarts of the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Where the access realms' bindings are saved (every 5 s when they
    /// changed, and at shutdown) and read back at start, so phones need
    /// not all register again after an upgrade. Absent: not kept.
    #[serde(default)]
    pub bindings_file: Option<PathBuf>,
}

/// SIP behaviour knobs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Follow a 3xx from a trunk by trying its Contacts (true), or relay the
    /// 3xx to the caller (false).
    #[serde(default = "default_false")]
    pub recurse_on_3xx: bool,
    /// What to do with a request whose method the SBC does not know.
    #[serde(default)]
    pub unknown_methods: UnknownMethods,
    /// RFC 3261 T1, the round-trip estimate: first retransmission interval,
    /// and 64*T1 is how long a transaction or an unACKed 2xx lasts.
    /// Takes effect at restart.
    #[serde(default = "default_t1_ms")]
    pub t1_ms: u32,
    /// RFC 3261 T2, the longest retransmission interval. At restart.
    #[serde(default = "default_t2_ms")]
    pub t2_ms: u32,
    /// RFC 3261 T4, how long a message may linger in the network (timers I
    /// and K). At restart.
    #[serde(default = "default_t4_ms")]
    pub t4_ms: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            recurse_on_3xx: default_false(),
            unknown_methods: UnknownMethods::default(),
            t1_ms: default_t1_ms(),
            t2_ms: default_t2_ms(),
            t4_ms: default_t4_ms(),
        }
    }
}

impl SipConfig {
    /// The transaction timers these knobs give (timer D and the 100 Trying
    /// delay keep their RFC values).
    pub fn timers(&self) -> crate::sip::transaction::Timers {
        let ms = |v: u32| std::time::Duration::from_millis(u64::from(v));
        crate::sip::transaction::Timers {
            t1: ms(self.t1_ms),
            t2: ms(self.t2_ms),
            t4: ms(self.t4_ms),
            ..Default::default()
        }
    }

    /// The server policy of the SIP core (`sip::check`) under these knobs.
    pub fn server_policy(&self) -> ServerPolicy {
        ServerPolicy {
            relay_unknown_methods: self.unknown_methods == UnknownMethods::Relay,
            ..ServerPolicy::default()
        }
    }
}

/// What to do with an extension method (RFC 3261 §8.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownMethods {
    /// Answer 501 Not Implemented with an `Allow` header.
    #[default]
    #[serde(rename = "reject-501")]
    Reject501,
    /// Relay it to the other leg like any in-dialog request.
    Relay,
}

/// Global admission limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Open SIP transactions at once, both legs counted.
    #[serde(default = "default_max_transactions")]
    pub max_transactions: u32,
    /// Concurrent calls.
    #[serde(default = "default_max_calls")]
    pub max_calls: u32,
    /// The share of `max_calls` that calls from untrusted sources (not a
    /// trunk, not in a realm's `networks`) may hold together, in percent.
    #[serde(default = "default_untrusted_percent")]
    pub untrusted_calls_percent: u8,
    /// The share of `max_transactions` that requests from untrusted sources
    /// may hold together, in percent.
    #[serde(default = "default_untrusted_percent")]
    pub untrusted_transactions_percent: u8,
    /// Sources whose request rate is tracked at once (a bounded table: a
    /// flood of spoofed sources evicts the quietest, never grows memory).
    #[serde(default = "default_tracked_sources")]
    pub tracked_sources: u32,
    /// Sources banned at once (bounded like `tracked_sources`).
    #[serde(default = "default_tracked_sources")]
    pub banned_sources: u32,
    /// Past either limit a new request gets 503 with this `Retry-After`.
    #[serde(default = "default_retry_after_secs")]
    pub overload_retry_after_secs: u32,
    /// TCP connections per listener, accepted and opened.
    #[serde(default = "default_tcp_connections")]
    pub tcp_connections: u32,
    /// Accepted TCP connections one untrusted source may hold per listener.
    #[serde(default = "default_tcp_connections_per_source")]
    pub tcp_connections_per_source: u32,
    /// The share of `tcp_connections` untrusted sources may hold together,
    /// in percent; the rest is kept for trunks and realm networks.
    #[serde(default = "default_tcp_untrusted_percent")]
    pub tcp_untrusted_percent: u8,
    /// An untrusted connection's first message, and every message's bytes,
    /// must arrive within this long (slowloris).
    #[serde(default = "default_tcp_message_timeout_secs")]
    pub tcp_message_timeout_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_transactions: default_max_transactions(),
            max_calls: default_max_calls(),
            untrusted_calls_percent: default_untrusted_percent(),
            untrusted_transactions_percent: default_untrusted_percent(),
            tracked_sources: default_tracked_sources(),
            banned_sources: default_tracked_sources(),
            overload_retry_after_secs: default_retry_after_secs(),
            tcp_connections: default_tcp_connections(),
            tcp_connections_per_source: default_tcp_connections_per_source(),
            tcp_untrusted_percent: default_tcp_untrusted_percent(),
            tcp_message_timeout_secs: default_tcp_message_timeout_secs(),
        }
    }
}

/// What untrusted sources may do before they are refused or banned.
///
/// Trusted sources (a trunk's address, a realm's `networks`) are bound by
/// their trunk's limits only. Every other source is counted by its IP
/// address: a request rate (token bucket), caps on its transactions, call
/// setups and calls, and a temporary ban when it overruns them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protection {
    /// Whether any of this applies (the ACL always does).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Requests per second one untrusted source may send, sustained.
    #[serde(default = "default_request_rate")]
    pub request_rate: u32,
    /// Requests one untrusted source may send at once above the rate.
    #[serde(default = "default_request_burst")]
    pub request_burst: u32,
    /// How long a ban lasts; 0 never bans (requests over the rate are still
    /// dropped).
    #[serde(default = "default_ban_secs")]
    pub ban_secs: u32,
    /// Open transactions one untrusted source may hold.
    #[serde(default = "default_max_transactions_per_source")]
    pub max_transactions_per_source: u32,
    /// INVITEs one untrusted source may have in setup (not yet answered).
    #[serde(default = "default_max_setups_per_source")]
    pub max_setups_per_source: u32,
    /// Calls one untrusted source may have up or in setup.
    #[serde(default = "default_max_calls_per_source")]
    pub max_calls_per_source: u32,
    /// Refusals (403, 404, 405, 481, 503 for a per-source cap...) after which an
    /// untrusted source is banned; 0 never bans for refusals.
    #[serde(default = "default_ban_after_refusals")]
    pub ban_after_refusals: u32,
    /// User-Agent substrings (case-insensitive) of known scanners: their
    /// requests are dropped without an answer and their source banned.
    #[serde(default = "default_scanner_user_agents")]
    pub scanner_user_agents: Vec<String>,
    /// What an in-dialog request from anyone but the dialog's peer gets.
    #[serde(default)]
    pub foreign_in_dialog: ForeignInDialog,
    /// Answer untrusted sources' 404/480/486/403 from the far side with one
    /// status (404), so extensions cannot be enumerated through the SBC.
    #[serde(default = "default_false")]
    pub normalize_failures: bool,
    /// Accept in-dialog requests from a new port of the peer's IP (NAT
    /// rebinding); the IP must always match.
    #[serde(default = "default_false")]
    pub follow_nat_rebinding: bool,
}

impl Default for Protection {
    fn default() -> Self {
        Self {
            enabled: default_true(),
            request_rate: default_request_rate(),
            request_burst: default_request_burst(),
            ban_secs: default_ban_secs(),
            max_transactions_per_source: default_max_transactions_per_source(),
            max_setups_per_source: default_max_setups_per_source(),
            max_calls_per_source: default_max_calls_per_source(),
            ban_after_refusals: default_ban_after_refusals(),
            scanner_user_agents: default_scanner_user_agents(),
            foreign_in_dialog: ForeignInDialog::default(),
            normalize_failures: default_false(),
            follow_nat_rebinding: default_false(),
        }
    }
}

/// A realm's changes to `[protection]`: each field given replaces the
/// global one for sources on that realm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionOverride {
    /// See [`Protection::enabled`].
    #[serde(default)]
    pub enabled: Option<bool>,
    /// See [`Protection::request_rate`].
    #[serde(default)]
    pub request_rate: Option<u32>,
    /// See [`Protection::request_burst`].
    #[serde(default)]
    pub request_burst: Option<u32>,
    /// See [`Protection::ban_secs`].
    #[serde(default)]
    pub ban_secs: Option<u32>,
    /// See [`Protection::max_transactions_per_source`].
    #[serde(default)]
    pub max_transactions_per_source: Option<u32>,
    /// See [`Protection::max_setups_per_source`].
    #[serde(default)]
    pub max_setups_per_source: Option<u32>,
    /// See [`Protection::max_calls_per_source`].
    #[serde(default)]
    pub max_calls_per_source: Option<u32>,
    /// See [`Protection::ban_after_refusals`].
    #[serde(default)]
    pub ban_after_refusals: Option<u32>,
    /// See [`Protection::scanner_user_agents`].
    #[serde(default)]
    pub scanner_user_agents: Option<Vec<String>>,
    /// See [`Protection::foreign_in_dialog`].
    #[serde(default)]
    pub foreign_in_dialog: Option<ForeignInDialog>,
    /// See [`Protection::normalize_failures`].
    #[serde(default)]
    pub normalize_failures: Option<bool>,
    /// See [`Protection::follow_nat_rebinding`].
    #[serde(default)]
    pub follow_nat_rebinding: Option<bool>,
}

impl ProtectionOverride {
    /// `global` with this override's fields in place.
    pub fn apply(&self, global: &Protection) -> Protection {
        Protection {
            enabled: self.enabled.unwrap_or(global.enabled),
            request_rate: self.request_rate.unwrap_or(global.request_rate),
            request_burst: self.request_burst.unwrap_or(global.request_burst),
            ban_secs: self.ban_secs.unwrap_or(global.ban_secs),
            max_transactions_per_source: self
                .max_transactions_per_source
                .unwrap_or(global.max_transactions_per_source),
            max_setups_per_source: self
                .max_setups_per_source
                .unwrap_or(global.max_setups_per_source),
            max_calls_per_source: self
                .max_calls_per_source
                .unwrap_or(global.max_calls_per_source),
            ban_after_refusals: self.ban_after_refusals.unwrap_or(global.ban_after_refusals),
            scanner_user_agents: self
                .scanner_user_agents
                .clone()
                .unwrap_or_else(|| global.scanner_user_agents.clone()),
            foreign_in_dialog: self.foreign_in_dialog.unwrap_or(global.foreign_in_dialog),
            normalize_failures: self.normalize_failures.unwrap_or(global.normalize_failures),
            follow_nat_rebinding: self
                .follow_nat_rebinding
                .unwrap_or(global.follow_nat_rebinding),
        }
    }
}

/// What an in-dialog request from a stranger gets (RFC 3261 §8.2.2.3 leaves
/// the choice of answer to the UAS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForeignInDialog {
    /// 403 Forbidden, once, without a transaction.
    #[default]
    Reject,
    /// No answer at all.
    Drop,
}

impl Config {
    /// The protection that applies on realm `realm` (an index into
    /// `realms`): `[protection]` with the realm's override applied.
    pub fn protection_of(&self, realm: usize) -> Protection {
        match self.realms.get(realm).and_then(|r| r.protection.as_ref()) {
            Some(over) => over.apply(&self.protection),
            None => self.protection.clone(),
        }
    }
}

/// Log verbosity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// The least severe level logged.
    #[serde(default)]
    pub level: LogLevel,
    /// How each log line is written.
    #[serde(default)]
    pub format: LogFormat,
}

/// The shape of a log line (`sbc::logging`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A log level, most verbose first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-packet detail.
    Trace,
    /// Per-message detail.
    Debug,
    /// Calls, listeners, health changes.
    #[default]
    Info,
    /// Things an operator should look at.
    Warn,
    /// Failures only.
    Error,
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where `/metrics` and `/health` are served (TCP).
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

/// Call detail records: one JSON line per finished call (`sbc::cdr`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cdr {
    /// The file records are appended to (absolute); no records when absent.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// When appended records are forced to disk.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Finished calls waiting for the writer; past this, records are
    /// dropped and counted rather than slowing the calls down.
    #[serde(default = "default_cdr_queue_records")]
    pub queue_records: u32,
}

impl Default for Cdr {
    fn default() -> Self {
        Self {
            path: None,
            fsync: FsyncPolicy::default(),
            queue_records: default_cdr_queue_records(),
        }
    }
}

/// When the CDR writer calls `fsync`: the durability of a record against a
/// power loss or kernel crash, paid for in disk flushes. (A crash of the SBC
/// process alone loses only records still queued, whatever the policy.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every record (written `"every"`): nothing written is lost, at
    /// one flush per call.
    Every,
    /// At most this often, when records were written since the last flush
    /// (written `{ interval_ms = 1000 }`): at most that much is lost.
    #[serde(rename = "interval_ms")]
    IntervalMs(u32),
    /// Never (written `"never"`): the kernel writes back when it likes
    /// (typically within 30 s).
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::IntervalMs(1_000)
    }
}

/// The media relay: port range, timeouts, latching, XDP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// First port of the anchored range; even (RTP goes on even ports).
    #[serde(default = "default_port_min")]
    pub port_min: u16,
    /// Last port of the range; odd, so the range holds whole RTP/RTCP pairs.
    #[serde(default = "default_port_max")]
    pub port_max: u16,
    /// A call whose media has been silent this long in both directions is
    /// torn down.
    #[serde(default = "default_inactivity_timeout_secs")]
    pub inactivity_timeout_secs: u32,
    /// How long a released port is handed out only if no other is free
    /// (late packets of the old call then meet the new call's latching).
    /// Never a refusal: allocation fails only when every port is in use.
    #[serde(default = "default_port_quarantine_secs")]
    pub port_quarantine_secs: u32,
    /// How the relay learns a peer's real source address.
    #[serde(default)]
    pub latching: Latching,
    /// The kernel fast path.
    #[serde(default)]
    pub xdp: Xdp,
    /// Userspace relay threads when the XDP fast path is not attached (0:
    /// one per CPU of `scheduling.media_cpus`, else one per core). Each
    /// owns the sockets of its streams and a share of each address's
    /// ports. With XDP attached the relay runs one thread: the kernel
    /// carries latched media.
    #[serde(default)]
    pub relay_threads: u16,
}

impl Default for Media {
    fn default() -> Self {
        Self {
            port_min: default_port_min(),
            port_max: default_port_max(),
            inactivity_timeout_secs: default_inactivity_timeout_secs(),
            port_quarantine_secs: default_port_quarantine_secs(),
            latching: Latching::default(),
            xdp: Xdp::default(),
            relay_threads: 0,
        }
    }
}

impl Media {
    /// The number of RTP/RTCP port pairs in the range (0 when it is empty).
    pub fn port_pairs(&self) -> u32 {
        (u32::from(self.port_max) + 1).saturating_sub(u32::from(self.port_min)) / 2
    }
}

/// Symmetric-RTP latching policy (the anti-RTPBleed rules).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latching {
    /// How long after each offer or answer (either leg's: a caller learns
    /// where to send only from the answer) an unlatched leg may learn its
    /// source; after it, only the exact SDP address is accepted, and a
    /// latched source moves only on the same SSRC.
    #[serde(default = "default_learning_window_ms")]
    pub learning_window_ms: u32,
    /// Latch only on packets from the IP address that signaling announced.
    /// Off for peers behind NAT that announce a private address.
    #[serde(default = "default_true")]
    pub strict_source_ip: bool,
}

impl Default for Latching {
    fn default() -> Self {
        Self {
            learning_window_ms: default_learning_window_ms(),
            strict_source_ip: default_true(),
        }
    }
}

/// The XDP fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xdp {
    /// How to attach the program.
    #[serde(default)]
    pub mode: XdpMode,
    /// The interfaces to attach to; empty means those that carry the realms'
    /// media addresses.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// A directory on the BPF file system (e.g. `/sys/fs/bpf/sbc`) where the
    /// program's links and flow maps are pinned, so that a restart for an
    /// upgrade (SIGUSR2) leaves latched media forwarded by the kernel while
    /// no daemon runs, and the next start adopts them. Absent: nothing is
    /// pinned and every exit detaches the program. A plain stop (SIGTERM)
    /// always detaches and removes the pins.
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native, else generic, else userspace only; the fallback is logged.
    #[default]
    Auto,
    /// Driver mode or fail.
    Native,
    /// SKB mode or fail.
    Generic,
    /// Userspace relay only.
    Off,
}

impl XdpMode {
    /// The mode as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Off => "off",
        }
    }
}

/// Header policy (topology hiding): which headers cross the border.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPolicy {
    /// Headers removed from every message that crosses (names compared
    /// case-insensitively). Via, Record-Route, Contact, Call-ID and tags are
    /// always regenerated and need not be listed.
    #[serde(default = "default_strip_headers")]
    pub strip: Vec<String>,
    /// Whether `P-Asserted-Identity` crosses (RFC 3325: only toward a
    /// trusted peer).
    #[serde(default)]
    pub p_asserted_identity: PaiPolicy,
    /// What happens to `Server` (in responses, and in requests where a peer
    /// puts one).
    #[serde(default)]
    pub server: HeaderRewrite,
    /// What happens to `User-Agent`, in requests and in responses (a UAS
    /// often names itself there too).
    #[serde(default)]
    pub user_agent: HeaderRewrite,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        Self {
            strip: default_strip_headers(),
            p_asserted_identity: PaiPolicy::default(),
            server: HeaderRewrite::default(),
            user_agent: HeaderRewrite::default(),
        }
    }
}

/// Whether `P-Asserted-Identity` crosses the border.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaiPolicy {
    /// Relayed unchanged.
    Pass,
    /// Removed.
    #[default]
    Strip,
}

/// What happens to a product-identifying header (`Server`, `User-Agent`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderRewrite {
    /// Removed (written `"remove"`).
    #[default]
    Remove,
    /// Relayed unchanged (written `"keep"`).
    Keep,
    /// Replaced by this value (written `{ rewrite = "SBC" }`).
    Rewrite(String),
}

/// A realm: one network the SBC borders, with its listeners and media address.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Realm {
    /// The realm's name, referred to by trunks and routes.
    pub name: String,
    /// Signaling listeners (one per transport and address).
    #[serde(default)]
    pub listen: Vec<Listener>,
    /// `SO_RCVBUF` of the signaling sockets; the OS default when absent.
    #[serde(default)]
    pub recv_buffer_bytes: Option<u32>,
    /// `SO_SNDBUF` of the signaling sockets; the OS default when absent.
    #[serde(default)]
    pub send_buffer_bytes: Option<u32>,
    /// Where this realm's media is anchored.
    pub media: RealmMedia,
    /// Source networks that belong to this realm.
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// A leg on this realm may also learn its media source from any
    /// address in `networks` during the learning window (an endpoint on a
    /// multi-homed host sends RTP from an address that is neither its
    /// SDP's nor its signaling's). Off: only those two (RTPBleed rules).
    #[serde(default)]
    pub latch_from_networks: bool,
    /// Who may send signaling to this realm's listeners.
    #[serde(default)]
    pub acl: Acl,
    /// Changes to `[protection]` for sources on this realm.
    #[serde(default)]
    pub protection: Option<ProtectionOverride>,
    /// Phones register through this realm to a registrar (an access
    /// realm); absent on realms of trunks.
    #[serde(default)]
    pub access: Option<Access>,
    /// The certificate the realm's TLS listeners present, and how they
    /// verify clients; required when a listener speaks `tls`.
    #[serde(default)]
    pub tls: Option<RealmTls>,
}

/// A realm's TLS identity (RFC 3261 §26.2.1): the certificate chain and
/// key its TLS listeners present, and optionally the CA set client
/// certificates are verified against (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmTls {
    /// PEM file: the certificate, then any intermediates. Absolute path.
    pub certificate: PathBuf,
    /// PEM file: the certificate's private key (PKCS#8, RSA or EC).
    pub private_key: PathBuf,
    /// PEM file of the CAs that issue client certificates; without it no
    /// client certificate is asked for.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Refuse clients that present no certificate issued by `ca`.
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// How a TLS trunk is verified, and what the SBC presents to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkTls {
    /// PEM file of the CAs the trunk's certificate must chain to.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name the trunk's certificate must carry as a subjectAltName;
    /// the host (or IP) of `address` by default.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM file: a client certificate for mutual TLS; the realm's
    /// certificate is presented when absent.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// PEM file: the key of `certificate`.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

/// An access realm: phones behind NAT register through the SBC to a
/// registrar trunk, which sees only the SBC, and receive calls through it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The trunk REGISTERs go to (on another realm).
    pub registrar: String,
    /// The longest registration a phone is given: short, so it refreshes
    /// often enough to keep its NAT binding open (RFC 5626 §3.5 suggests
    /// 2 minutes or less for UDP).
    #[serde(default = "default_phone_expires")]
    pub phone_expires_secs: u32,
    /// The registration the SBC asks of the registrar for each binding;
    /// the phone's refreshes in between are answered by the SBC.
    #[serde(default = "default_registrar_expires")]
    pub registrar_expires_secs: u32,
    /// OPTIONS to each UDP binding this often (0: none); a binding that
    /// does not answer is removed and de-registered.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u32,
    /// Bindings held in this realm at most.
    #[serde(default = "default_max_bindings")]
    pub max_bindings: u32,
    /// Bindings of one address-of-record at most.
    #[serde(default = "default_max_bindings_per_aor")]
    pub max_bindings_per_aor: u32,
    /// Bindings registered from one source IP address at most (403
    /// beyond): one host, or one NAT with a site of phones behind it,
    /// cannot fill the realm.
    #[serde(default = "default_max_bindings_per_source")]
    pub max_bindings_per_source: u32,
    /// Calls up at once per address-of-record, to and from its phones
    /// (0: no limit); 486 Busy Here beyond.
    #[serde(default)]
    pub max_calls_per_user: u32,
    /// Whether a source with no binding may place calls (false: 403).
    #[serde(default)]
    pub unregistered_calls: bool,
}

fn default_phone_expires() -> u32 {
    120
}

fn default_registrar_expires() -> u32 {
    3_600
}

fn default_keepalive() -> u32 {
    30
}

fn default_max_bindings() -> u32 {
    100_000
}

fn default_max_bindings_per_aor() -> u32 {
    10
}

fn default_max_bindings_per_source() -> u32 {
    1_000
}

/// A signaling listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The transport.
    pub transport: Transport,
    /// The address and port to bind.
    pub address: SocketAddr,
    /// The address and port peers reach this listener at when it is behind
    /// a 1:1 NAT: what Via and Contact show instead of
    /// `address`.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
}

impl Listener {
    /// What the SBC writes as its own address on this listener.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.address)
    }
}

/// A SIP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (RFC 3261 §18).
    Udp,
    /// TCP with stream framing by Content-Length.
    Tcp,
    /// TLS over TCP (RFC 3261 §26.2), framed like TCP.
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// A realm's media anchor.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmMedia {
    /// The address media sockets bind to.
    pub address: IpAddr,
    /// Further addresses of this host (IP aliases, other NICs) the realm
    /// anchors on, each with its own port pool: a call leg goes to the
    /// least loaded, so a realm holds about 32,000 concurrent legs per
    /// address instead of in all.
    #[serde(default)]
    pub more_addresses: Vec<IpAddr>,
    /// The address written into SDP, when it differs (1:1 NAT in front of
    /// the SBC); `address` otherwise.
    #[serde(default)]
    pub advertise: Option<IpAddr>,
}

impl RealmMedia {
    /// Every address the realm anchors on, `address` first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.address).chain(self.more_addresses.iter().copied())
    }

    /// The address the SBC puts in SDP for this realm.
    pub fn advertised(&self) -> IpAddr {
        self.advertise.unwrap_or(self.address)
    }
}

/// Signaling access control: deny wins; an empty allow list allows all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// Sources allowed (all when empty).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Sources refused, even when allowed.
    #[serde(default)]
    pub deny: Vec<IpNet>,
}

impl Acl {
    /// Whether a source address may send signaling.
    pub fn permits(&self, source: IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(&source))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&source)))
    }
}

/// A trunk: a peer that calls are sent to and accepted from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// The trunk's name, referred to by routes.
    pub name: String,
    /// The realm the trunk lives in (whose listeners and media it uses).
    pub realm: String,
    /// Where to send: `IP:port`, `[IPv6]:port`, `host:port` (A/AAAA) or a
    /// bare `host` (RFC 3263: NAPTR, SRV, then A/AAAA).
    pub address: PeerAddress,
    /// The transport to reach it over; absent: UDP, or for a bare host name
    /// whatever its NAPTR records choose among the realm's listeners.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Seconds between OPTIONS health checks; 0 turns them off.
    #[serde(default = "default_options_interval_secs")]
    pub options_interval_secs: u32,
    /// An INVITE to one of the trunk's targets that gets no response at
    /// all (not even 100 Trying) within this many milliseconds counts as
    /// timed out: the next target (or trunk) is tried and the target is
    /// blocked, without waiting for timer B (32 s). 0: timer B only.
    #[serde(default)]
    pub response_timeout_ms: u32,
    /// Concurrent calls to and from this trunk; unlimited when absent.
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// New calls per second to and from this trunk; unlimited when absent.
    #[serde(default)]
    pub max_cps: Option<u32>,
    /// Replaces `[topology_hiding]` for messages sent to this trunk.
    #[serde(default)]
    pub header_policy: Option<HeaderPolicy>,
    /// The trunk sends media from another port than it receives on
    /// (asymmetric RTP): its leg never latches, media is accepted from any
    /// port of its SDP or signaling IP and always sent to its SDP address.
    #[serde(default = "default_false")]
    pub asymmetric_rtp: bool,
    /// How the trunk's certificate is verified: a TLS trunk, or a domain
    /// without `transport` that NAPTR may send over TLS.
    #[serde(default)]
    pub tls: Option<TrunkTls>,
}

impl Trunk {
    /// The transport configured, UDP when none is.
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or_else(default_transport)
    }

    /// Whether NAPTR chooses the trunk's transport: a domain without a
    /// port and without `transport`.
    pub fn naptr_decides(&self) -> bool {
        self.transport.is_none() && matches!(self.address, PeerAddress::Name { .. })
    }

    /// Whether the trunk may be reached over TLS: it says `transport =
    /// "tls"`, or NAPTR decides and it has a `tls` table to verify the
    /// server by.
    pub fn may_speak_tls(&self) -> bool {
        self.transport() == Transport::Tls || (self.naptr_decides() && self.tls.is_some())
    }

    /// The transports DNS may give the trunk, in the order NAPTR is asked
    /// about them (RFC 3263 §4.1): the one configured; else those the
    /// trunk's realm listens on, TLS only when the trunk may speak it.
    pub fn dns_transports(&self, realm: Option<&Realm>) -> Vec<Transport> {
        if let Some(t) = self.transport {
            return vec![t];
        }
        let Some(realm) = realm else {
            return Vec::new();
        };
        [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .filter(|t| realm.listen.iter().any(|l| l.transport == *t))
            .filter(|t| *t != Transport::Tls || self.may_speak_tls())
            .collect()
    }
}

/// A trunk's address: an IP socket address or a host name, with or without
/// a port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PeerAddress {
    /// A literal address.
    Ip(SocketAddr),
    /// A DNS name with a port: A/AAAA records, resolved at run time.
    Host {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
    /// A DNS name without a port: RFC 3263 (NAPTR, SRV, then A/AAAA),
    /// resolved at run time.
    Name {
        /// The domain name.
        host: String,
    },
}

impl TryFrom<String> for PeerAddress {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(PeerAddress::Ip(addr));
        }
        let bad = || {
            format!(
                "invalid trunk address \"{text}\": expected IP:port, [IPv6]:port, host:port or a domain name"
            )
        };
        if !text.contains(':') && is_host_name(&text) {
            return Ok(PeerAddress::Name { host: text });
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 || !is_host_name(host) {
            return Err(bad());
        }
        Ok(PeerAddress::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddress::Ip(addr) => write!(f, "{addr}"),
            PeerAddress::Host { host, port } => write!(f, "{host}:{port}"),
            PeerAddress::Name { host } => f.write_str(host),
        }
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner
/// hyphens, at most 63 bytes each and 253 in all.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // All-numeric "hosts" are mistyped IPv4 addresses.
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A route: which calls it takes and the trunks it tries, in order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The route's name, for logs and metrics.
    pub name: String,
    /// Which calls take this route; all of them when empty.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Trunks tried in order until one answers.
    pub targets: Vec<String>,
    /// Which failures move the call on to the next target.
    #[serde(default = "default_failover_on")]
    pub failover_on: Vec<FailoverCause>,
}

/// What a call must look like to take a route; every given condition must
/// hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The realm the call arrived on.
    #[serde(default)]
    pub source_realm: Option<String>,
    /// The trunk the call arrived from.
    #[serde(default)]
    pub source_trunk: Option<String>,
    /// A prefix of the Request-URI user part (e.g. `+44`).
    #[serde(default)]
    pub user_prefix: Option<String>,
    /// The Request-URI host, compared case-insensitively.
    #[serde(default)]
    pub domain: Option<String>,
}

impl RouteMatch {
    /// Whether no condition is set (the route takes every call).
    pub fn is_catch_all(&self) -> bool {
        self.source_realm.is_none()
            && self.source_trunk.is_none()
            && self.user_prefix.is_none()
            && self.domain.is_none()
    }
}

/// A failure that moves a call to the route's next target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum FailoverCause {
    /// A 408 Request Timeout from the trunk.
    #[serde(rename = "408")]
    Status408,
    /// Any 5xx from the trunk.
    #[serde(rename = "5xx")]
    Status5xx,
    /// The request could not be sent (connection refused, ICMP unreachable).
    #[serde(rename = "transport-error")]
    TransportError,
    /// No final response before the INVITE transaction timed out (Timer B).
    #[serde(rename = "timeout")]
    Timeout,
}

fn default_false() -> bool {
    false
}
fn default_true() -> bool {
    true
}
fn default_max_transactions() -> u32 {
    100_000
}
fn default_max_calls() -> u32 {
    10_000
}
fn default_retry_after_secs() -> u32 {
    5
}
fn default_t1_ms() -> u32 {
    500
}
fn default_t2_ms() -> u32 {
    4_000
}
fn default_t4_ms() -> u32 {
    5_000
}
fn default_untrusted_percent() -> u8 {
    50
}
fn default_tracked_sources() -> u32 {
    65_536
}
fn default_tcp_connections() -> u32 {
    10_000
}
fn default_tcp_connections_per_source() -> u32 {
    32
}
fn default_tcp_untrusted_percent() -> u8 {
    90
}
fn default_tcp_message_timeout_secs() -> u32 {
    10
}
fn default_request_rate() -> u32 {
    15
}
fn default_request_burst() -> u32 {
    30
}
fn default_ban_secs() -> u32 {
    300
}
fn default_max_transactions_per_source() -> u32 {
    32
}
fn default_max_setups_per_source() -> u32 {
    4
}
fn default_max_calls_per_source() -> u32 {
    16
}
fn default_ban_after_refusals() -> u32 {
    20
}
fn default_scanner_user_agents() -> Vec<String> {
    [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "vaxsipuseragent",
        "pplsip",
        "sundayddr",
        "iwar",
        "sip-scan",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9660))
}
fn default_cdr_queue_records() -> u32 {
    10_000
}
fn default_port_min() -> u16 {
    20_000
}
fn default_port_max() -> u16 {
    59_999
}
fn default_port_quarantine_secs() -> u32 {
    30
}

fn default_inactivity_timeout_secs() -> u32 {
    60
}
fn default_learning_window_ms() -> u32 {
    2_000
}
fn default_strip_headers() -> Vec<String> {
    // Headers that reveal the inside network or its equipment.
    [
        "Organization",
        "Warning",
        "History-Info",
        "P-Charging-Vector",
    ]
    .map(String::from)
    .to_vec()
}
fn default_transport() -> Transport {
    Transport::Udp
}
fn default_options_interval_secs() -> u32 {
    30
}
fn default_failover_on() -> Vec<FailoverCause> {
    vec![
        FailoverCause::Status408,
        FailoverCause::Status5xx,
        FailoverCause::TransportError,
        FailoverCause::Timeout,
    ]
}
