//! Trunks found by DNS (RFC 3263 §4): what a name resolves to, in which
//! order its targets are tried, and how long an answer may be used.
//!
//! Owns: the resolved-target vocabulary ([`Target`], [`Resolution`]), the
//! RFC 2782 order of SRV targets ([`order`]: priority, then a weighted random
//! pick within a priority, randomness injected), and a TTL cache on an
//! injected clock ([`TtlCache`]). Pure: no sockets, no clock, no RNG.
//!
//! The lookups themselves (NAPTR, SRV, A/AAAA over hickory-resolver) live in
//! [`resolve`], an IO shell the daemon runs in its own tasks; the call core
//! only ever receives finished [`Resolution`]s and never waits for DNS.

pub mod resolve;

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The transport a DNS answer chose for a target (RFC 3263 §4.1 NAPTR
/// services `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, or the SRV prefix). TLS is
/// carried so a TLS transport can use it; the SBC does not speak it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsTransport {
    /// `SIP+D2U`, `_sip._udp`.
    Udp,
    /// `SIP+D2T`, `_sip._tcp`.
    Tcp,
    /// `SIPS+D2T`, `_sips._tcp`.
    Tls,
}

impl DnsTransport {
    /// The NAPTR service field (RFC 3263 §4.1) naming this transport.
    pub fn naptr_service(self) -> &'static str {
        match self {
            DnsTransport::Udp => "SIP+D2U",
            DnsTransport::Tcp => "SIP+D2T",
            DnsTransport::Tls => "SIPS+D2T",
        }
    }

    /// The transport a NAPTR service field names, if the SBC knows it
    /// (`SIP+D2S`, SCTP, is skipped).
    pub fn from_naptr_service(service: &[u8]) -> Option<Self> {
        [DnsTransport::Udp, DnsTransport::Tcp, DnsTransport::Tls]
            .into_iter()
            .find(|t| service.eq_ignore_ascii_case(t.naptr_service().as_bytes()))
    }

    /// The SRV name prefix (RFC 3263 §4.1, RFC 2782) for this transport.
    pub fn srv_prefix(self) -> &'static str {
        match self {
            DnsTransport::Udp => "_sip._udp",
            DnsTransport::Tcp => "_sip._tcp",
            DnsTransport::Tls => "_sips._tcp",
        }
    }

    /// The port when nothing names one (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            DnsTransport::Udp | DnsTransport::Tcp => 5060,
            DnsTransport::Tls => 5061,
        }
    }
}

impl fmt::Display for DnsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
            DnsTransport::Tls => "tls",
        })
    }
}

/// One address a trunk's name resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where to send.
    pub addr: SocketAddr,
    /// Over what.
    pub transport: DnsTransport,
    /// SRV priority (lower first); 0 for targets found without SRV.
    pub priority: u16,
    /// SRV weight within its priority; 0 for targets found without SRV.
    pub weight: u16,
    /// The SRV target host (or the trunk's name), for logs and
    /// `check-config`.
    pub host: String,
}

/// How a name was resolved, for logs and `sbc check-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// NAPTR, then SRV, then A/AAAA.
    Naptr,
    /// SRV (no NAPTR usable), then A/AAAA.
    Srv,
    /// A/AAAA only (`name:port`, or nothing else published).
    Address,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Naptr => "NAPTR -> SRV -> A/AAAA",
            Method::Srv => "SRV -> A/AAAA",
            Method::Address => "A/AAAA",
        })
    }
}

/// A trunk name's answer: its targets in RFC 2782 form (priority and
/// weight kept, not yet ordered: each call orders them afresh) and how long
/// it may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The targets, by ascending priority.
    pub targets: Vec<Target>,
    /// The shortest TTL of every record used.
    pub ttl: Duration,
    /// Which records gave them.
    pub method: Method,
}

/// Orders `targets` as RFC 2782 asks of a client: by ascending priority, and
/// within one priority by repeated weighted random selection (each pick
/// draws a number in `0..=sum of the remaining weights` with `random`, and
/// takes the first target whose running sum reaches it; weight 0 targets
/// come first in the list so they are picked only when the draw is 0, i.e.
/// rarely when others weigh more). Returns indices into `targets`.
pub fn order(targets: &[Target], mut random: impl FnMut() -> u32) -> Vec<usize> {
    let mut out = Vec::with_capacity(targets.len());
    let mut priorities: Vec<u16> = targets.iter().map(|t| t.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    for priority in priorities {
        // Zero weights first (RFC 2782: "arrange all SRV RRs ... in any
        // order, except that all those with weight 0 are placed at the
        // beginning of the list").
        let mut left: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].priority == priority)
            .collect();
        left.sort_by_key(|&i| targets[i].weight != 0);
        while left.len() > 1 {
            let total: u64 = left.iter().map(|&i| u64::from(targets[i].weight)).sum();
            let draw = u64::from(random()) % (total + 1);
            let mut running = 0u64;
            let pick = left
                .iter()
                .position(|&i| {
                    running += u64::from(targets[i].weight);
                    running >= draw
                })
                .unwrap_or(0);
            out.push(left.remove(pick));
        }
        // The last one needs no draw (nor does a priority of one target).
        out.append(&mut left);
    }
    out
}

/// A cache whose entries expire after their TTL, on a clock the caller
/// passes in (`now`), so tests drive it without sleeping.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
}

impl<K: Eq + Hash, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, V> TtlCache<K, V> {
    /// The entry for `key` if it has not expired at `now`; an expired one is
    /// dropped.
    pub fn get(&mut self, now: Instant, key: &K) -> Option<&V> {
        if self
            .entries
            .get(key)
            .is_some_and(|(_, until)| *until <= now)
        {
            self.entries.remove(key);
        }
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Like [`TtlCache::get`], with the time the entry has left: what is
    /// passed on from a cache is the TTL that remains, not the original.
    pub fn get_with_ttl(&mut self, now: Instant, key: &K) -> Option<(&V, Duration)> {
        self.get(now, key)?;
        self.entries
            .get(key)
            .map(|(v, until)| (v, until.saturating_duration_since(now)))
    }

    /// Keeps `value` for `ttl` from `now`.
    pub fn insert(&mut self, now: Instant, key: K, value: V, ttl: Duration) {
        self.entries.insert(key, (value, now + ttl));
    }

    /// When the soonest entry expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().map(|(_, until)| *until).min()
    }

    /// How many entries are held (expired ones included until looked up).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// When a name resolved at `now` with `ttl` must be looked up again: at its
/// expiry, but never sooner than `floor` (a TTL of 0 must not become a
/// query loop) nor later than `ceiling`.
pub fn refresh_at(now: Instant, ttl: Duration, floor: Duration, ceiling: Duration) -> Instant {
    now + ttl.clamp(floor, ceiling)
}

#[cfg(test)]
mod tests;
