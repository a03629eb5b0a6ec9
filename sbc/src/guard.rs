//! The per-source shield of edge protection: request rates, bans and trust,
//! screened before the SIP parser so that a banned or flooding source costs
//! a hash and a table probe, not a parse.
//!
//! Owns:
//! * [`SourceTable`]: a bounded, set-associative table keyed by (realm, IP
//!   address), 4 ways per bucket, buckets picked by a hash keyed with a
//!   secret [`Seed`] so a sender can't aim its addresses at one bucket. Its
//!   memory is allocated once, at construction, and never grows: a full
//!   bucket evicts its least valuable entry. A slot is
//!   [`RATE_ENTRY_BYTES`] (32) bytes in the rate table and
//!   [`BAN_ENTRY_BYTES`] (24) in the ban table, so the defaults (65,536 of
//!   each) take 2 MiB + 1.5 MiB whatever the traffic.
//! * [`Shield`]: per realm, a token bucket per untrusted source and bans.
//!   Sharded ([`SHARDS`] mutexes, picked by the same hash) so the UDP and TCP
//!   tasks of the transport don't serialise on one lock.
//! * [`Trust`]: which sources skip all of it (a trunk's address in the
//!   trunk's realm, a realm's `networks`), pure and built from a
//!   [`Config`], so the call core can reuse it.
//! * [`is_scanner`]: the User-Agent test of `scanner_user_agents`.
//!
//! The rate rule: a source has a bucket of `request_burst` tokens refilled
//! at `request_rate` per second; a request takes a token or, with none left,
//! is [`Verdict::RateLimited`] and adds one to the source's *debt*, which
//! drains at the same `request_rate`. A source whose debt exceeds another
//! `request_burst` is banned for `ban_secs` ([`Verdict::NewBan`] once, then
//! [`Verdict::Banned`] until the ban ends). So a source sending at up to
//! twice its rate is limited but never banned (its debt drains as fast as it
//! grows); at three times its rate the debt grows by `request_rate` a second
//! and the ban comes `request_burst / request_rate` seconds after the bucket
//! ran dry (2 s with the defaults). Every message counts, responses and
//! keepalives too: the screen runs before anything is parsed.
//!
//! Eviction, and what holds under a flood of spoofed sources:
//! * the rate table evicts, within the full bucket, the entry with the least
//!   tokens taken plus debt (the quietest source; the longest unseen on a
//!   tie). A one-packet source holds one token, which drains within a
//!   second, so a source at or over its rate is evicted only if all four
//!   sources of its bucket are at least as loaded. An evicted source starts
//!   again with a full bucket.
//! * bans live in their own table, which only a ban fills (a source must
//!   overrun its rate from one address, or the call core must ban it), so
//!   one-packet sources never evict a ban; a full ban bucket drops the ban
//!   that ends first.
//!
//! Time is kept as milliseconds since the shield's `epoch` in a `u32`, which
//! wraps after 49 days: differences are taken wrapping, which is right while
//! every entry is younger than 24 days. [`Shield::sweep`] removes drained
//! rate entries and ended bans (bans last at most a day, `ban_secs` is
//! validated), so drive it at least daily (the daemon does every second).
//!
//! May not: read a clock (every call takes `now`), do IO, allocate in
//! [`Shield::admit`], grow its tables after construction, or log (its
//! drivers log a ban with [`log_ban`]).
//!
//! Driving it: build a [`Trust`] and a [`Shield`] from the configuration;
//! the transport asks [`Shield::realm`] once per listener for the realm's
//! [`RealmId`], then calls [`Shield::admit`] per datagram (before parsing)
//! or TCP message and drops anything but [`Verdict::Pass`], logging one line
//! per [`Verdict::NewBan`]. Bans decided elsewhere (scanners, sources that
//! keep being refused) go through [`Shield::ban`]. Every second,
//! [`Shield::sweep`], then [`Shield::counts`] for metrics. On reload,
//! [`Shield::configure`]: new policies apply at once to existing entries;
//! bans stay, except on a realm whose protection is now disabled.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Instant;

use ipnet::IpNet;

use crate::config::{Config, PeerAddress, Protection};

/// Entries per bucket of a [`SourceTable`].
pub const WAYS: usize = 4;

/// Mutex-protected shards of a [`Shield`].
pub const SHARDS: usize = 8;

/// Bytes per slot of the rate table.
pub const RATE_ENTRY_BYTES: usize = size_of::<Slot<Rate>>();

/// Bytes per slot of the ban table.
pub const BAN_ENTRY_BYTES: usize = size_of::<Slot<Ban>>();

const _: () = assert!(RATE_ENTRY_BYTES == 32);
const _: () = assert!(BAN_ENTRY_BYTES == 24);

/// One token (one request) in the buckets' fixed point: milli-tokens.
const TOKEN: u32 = 1_000;

/// Bursts above this are clamped, so that two bursts of milli-tokens fit a
/// `u32`.
const MAX_BURST: u32 = 1_000_000;

/// Bans longer than this are clamped (wrapping time stays unambiguous).
const MAX_BAN_MS: u32 = 7 * 86_400_000;

/// The secret key of the table hash. Give each process a random one (the
/// daemon draws it from std's `RandomState`): with a known key a sender
/// could pick addresses that all land in one bucket and evict a flooder's
/// entry at will.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed(pub [u64; 2]);

/// A multiply-fold mix (as in foldhash/wyhash): fast, and good enough once
/// the inputs are keyed with a secret. Not a cryptographic MAC.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Seed {
    /// The key of `ip` on realm `realm`, with its hash.
    pub fn source(self, realm: RealmId, ip: IpAddr) -> Source {
        let octets = match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let word = |i: usize| {
            u32::from_be_bytes([
                octets[i * 4],
                octets[i * 4 + 1],
                octets[i * 4 + 2],
                octets[i * 4 + 3],
            ])
        };
        let ip = [word(0), word(1), word(2), word(3)];
        let hi = (u64::from(ip[0]) << 32) | u64::from(ip[1]);
        let lo = (u64::from(ip[2]) << 32) | u64::from(ip[3]);
        let mixed = fold(hi ^ self.0[0], lo ^ self.0[1]);
        let hash = fold(
            mixed ^ u64::from(realm.0),
            self.0[0].rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
        );
        Source {
            realm: realm.0,
            ip,
            hash,
        }
    }
}

/// A realm as the shield numbers it: stable for the life of the [`Shield`]
/// (a realm a reload removed keeps its number), from [`Shield::realm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealmId(pub u16);

/// A table key: a source address on a realm, with its keyed hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    realm: u16,
    /// The address as IPv6 (IPv4 mapped), in four big-endian words.
    ip: [u32; 4],
    hash: u64,
}

impl Source {
    /// The shard this source lives in (the hash's top bits; the bucket
    /// within a shard uses the others).
    fn shard(&self) -> usize {
        (self.hash >> (64 - SHARDS.trailing_zeros())) as usize
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot<V> {
    ip: [u32; 4],
    realm: u16,
    used: bool,
    value: V,
}

/// A bounded, set-associative table of per-source values (see the module
/// docs). Lookups and inserts touch one bucket of [`WAYS`] slots.
#[derive(Debug)]
pub struct SourceTable<V> {
    slots: Box<[Slot<V>]>,
    buckets: usize,
    len: usize,
}

impl<V: Copy + Default> SourceTable<V> {
    /// A table of at least `capacity` entries (rounded up to whole
    /// buckets), all of its memory allocated now.
    pub fn with_capacity(capacity: usize) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1);
        SourceTable {
            slots: vec![Slot::default(); buckets * WAYS].into_boxed_slice(),
            buckets,
            len: 0,
        }
    }

    /// How many entries fit.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of the slots (fixed at construction).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    fn bucket(&self, source: &Source) -> std::ops::Range<usize> {
        // Lemire's multiply-shift range reduction over the bits the shard
        // choice did not use.
        let bits = source.hash << SHARDS.trailing_zeros();
        let bucket = ((u128::from(bits) * self.buckets as u128) >> 64) as usize;
        bucket * WAYS..(bucket + 1) * WAYS
    }

    fn find(&self, source: &Source) -> Option<usize> {
        self.bucket(source).find(|&i| {
            let slot = &self.slots[i];
            slot.used && slot.realm == source.realm && slot.ip == source.ip
        })
    }

    /// The value of `source`, if it is held.
    pub fn get_mut(&mut self, source: &Source) -> Option<&mut V> {
        let i = self.find(source)?;
        Some(&mut self.slots[i].value)
    }

    /// Stores `value` for `source` (replacing its value if held). In a full
    /// bucket the entry with the lowest `worth` goes (the first of equals);
    /// its value is returned.
    pub fn insert(
        &mut self,
        source: &Source,
        value: V,
        worth: impl Fn(&V) -> u64,
    ) -> (&mut V, Option<V>) {
        let range = self.bucket(source);
        let mut evicted = None;
        let i = match self.find(source) {
            Some(i) => i,
            None => match range.clone().find(|&i| !self.slots[i].used) {
                Some(i) => {
                    self.len += 1;
                    i
                }
                None => {
                    let i = range
                        .min_by_key(|&i| worth(&self.slots[i].value))
                        .unwrap_or(0);
                    evicted = Some(self.slots[i].value);
                    i
                }
            },
        };
        self.slots[i] = Slot {
            ip: source.ip,
            realm: source.realm,
            used: true,
            value,
        };
        (&mut self.slots[i].value, evicted)
    }

    /// Removes `source`; returns its value.
    pub fn remove(&mut self, source: &Source) -> Option<V> {
        let i = self.find(source)?;
        self.slots[i].used = false;
        self.len -= 1;
        Some(self.slots[i].value)
    }

    /// Every entry: its realm, its address and its value.
    pub fn for_each(&self, mut each: impl FnMut(RealmId, IpAddr, &V)) {
        // Stops after the last entry, as `retain` does.
        for slot in self.slots.iter().filter(|s| s.used).take(self.len) {
            let [a, b, c, d] = slot.ip;
            let bits = (u128::from(a) << 96)
                | (u128::from(b) << 64)
                | (u128::from(c) << 32)
                | u128::from(d);
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(bits)).to_canonical();
            each(RealmId(slot.realm), ip, &slot.value);
        }
    }

    /// Keeps the entries for which `keep(realm, value)` holds.
    ///
    /// Stops once it has seen every entry: the tables are allocated whole
    /// for the configured bound (65,536 sources each by default, 2 MiB),
    /// and the once-a-second sweep of an empty or nearly empty one used to
    /// walk all of it, stalling the core loop for up to a millisecond.
    pub fn retain(&mut self, mut keep: impl FnMut(RealmId, &V) -> bool) {
        let mut removed = 0;
        for slot in self.slots.iter_mut().filter(|s| s.used).take(self.len) {
            if !keep(RealmId(slot.realm), &slot.value) {
                slot.used = false;
                removed += 1;
            }
        }
        self.len -= removed;
    }
}

/// What to do with a message from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through (trusted, protection off, or within its rate).
    Pass,
    /// Over its rate: drop it, without an answer.
    RateLimited,
    /// The source is banned: drop it, without an answer.
    Banned,
    /// This message got the source banned (returned once per ban): drop
    /// it, and log the ban.
    NewBan,
}

impl Verdict {
    /// Whether the message goes on.
    pub const fn passes(self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// Why a source was banned, for the `source banned` log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    /// It kept sending over its request rate ([`Shield::admit`]).
    RateLimit,
    /// Its User-Agent matched `scanner_user_agents`.
    Scanner,
    /// It was refused `ban_after_refusals` times.
    Refusals,
}

impl BanReason {
    /// The `reason` field of the log line.
    pub const fn as_str(self) -> &'static str {
        match self {
            BanReason::RateLimit => "rate_limit",
            BanReason::Scanner => "scanner",
            BanReason::Refusals => "refusals",
        }
    }
}

/// Logs a new ban: one `warn` line per ban, whoever decided it, with the
/// address in a field of its own so fail2ban (or any log shipper) can act on
/// it: `source banned source=203.0.113.9 realm=outside reason=rate_limit
/// seconds=300`. The shield never logs; its drivers call this once per
/// [`Verdict::NewBan`] or successful [`Shield::ban`].
pub fn log_ban(realm: &str, source: IpAddr, reason: BanReason, seconds: u32) {
    tracing::warn!(
        source = %source.to_canonical(),
        realm,
        reason = reason.as_str(),
        seconds,
        "source banned"
    );
}

/// Whether `user_agent` contains one of `patterns`, ASCII case ignored
/// (`scanner_user_agents`). Allocates nothing.
pub fn is_scanner(user_agent: &[u8], patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.as_bytes();
        !p.is_empty()
            && user_agent
                .windows(p.len())
                .any(|w| w.eq_ignore_ascii_case(p))
    })
}

/// The trusted sources of one realm.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealmTrust {
    name: String,
    /// The realm's trunks' addresses, sorted and deduplicated.
    trunks: Vec<IpAddr>,
    networks: Vec<IpNet>,
}

impl RealmTrust {
    /// The realm's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `ip` is one of the realm's trunks or in its networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trunks.binary_search(&ip).is_ok() || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// Which sources are trusted, per realm: the addresses of the realm's trunks
/// (any port; host names resolved by the caller's `resolve`, as for the
/// call core) and the realm's `networks`. Trusted sources skip the shield
/// and the untrusted shares of the tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Indexed like `Config::realms`.
    realms: Vec<RealmTrust>,
}

impl Trust {
    /// The trust of `config`; `resolve` gives the address of a trunk named
    /// by host (a name that does not resolve trusts nothing).
    pub fn new(config: &Config, resolve: impl Fn(&str, u16) -> Option<SocketAddr>) -> Trust {
        Self::build(config, |t| match &t.address {
            PeerAddress::Ip(addr) => vec![addr.ip()],
            PeerAddress::Host { host, port } => {
                resolve(host, *port).map(|a| a.ip()).into_iter().collect()
            }
            // Trusted once resolved: see `Trust::with_targets`.
            PeerAddress::Name { .. } => Vec::new(),
        })
    }

    /// The trust of `config` with every trunk given by DNS name trusting
    /// the addresses `targets` gives for the trunk's name (what its name
    /// resolved to, RFC 3263).
    pub fn with_targets(config: &Config, targets: impl Fn(&str) -> Vec<IpAddr>) -> Trust {
        Self::build(config, |t| match &t.address {
            PeerAddress::Ip(addr) => vec![addr.ip()],
            PeerAddress::Host { .. } | PeerAddress::Name { .. } => targets(&t.name),
        })
    }

    fn build(config: &Config, addresses: impl Fn(&crate::config::Trunk) -> Vec<IpAddr>) -> Trust {
        let realms = config
            .realms
            .iter()
            .map(|realm| {
                let mut trunks: Vec<IpAddr> = config
                    .trunks
                    .iter()
                    .filter(|t| t.realm == realm.name)
                    .flat_map(&addresses)
                    .map(|ip| ip.to_canonical())
                    .collect();
                trunks.sort_unstable();
                trunks.dedup();
                RealmTrust {
                    name: realm.name.clone(),
                    trunks,
                    networks: realm.networks.clone(),
                }
            })
            .collect();
        Trust { realms }
    }

    /// Whether `ip` is trusted on realm `realm` (an index into
    /// `Config::realms`); `false` for an unknown realm.
    pub fn is_trusted(&self, realm: usize, ip: IpAddr) -> bool {
        self.realms.get(realm).is_some_and(|r| r.contains(ip))
    }

    /// The index of the realm named `name`.
    pub fn realm_index(&self, name: &str) -> Option<usize> {
        self.realms.iter().position(|r| r.name == name)
    }

    /// The trust of realm `realm` (an index into `Config::realms`).
    pub fn realm(&self, realm: usize) -> Option<&RealmTrust> {
        self.realms.get(realm)
    }
}

/// A realm's rate policy in the buckets' units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Policy {
    enabled: bool,
    /// Tokens per second, which is also milli-tokens per millisecond.
    rate: u32,
    /// The bucket, and the debt that bans, in milli-tokens.
    burst: u32,
    /// 0: never ban.
    ban_ms: u32,
}

impl From<&Protection> for Policy {
    fn from(p: &Protection) -> Policy {
        Policy {
            enabled: p.enabled,
            rate: p.request_rate.max(1),
            burst: p.request_burst.clamp(1, MAX_BURST) * TOKEN,
            ban_ms: p.ban_secs.saturating_mul(1_000).min(MAX_BAN_MS),
        }
    }
}

/// A source's bucket: milli-tokens taken and debt, both draining at the
/// realm's rate since `at`.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    taken: u32,
    debt: u32,
    at: u32,
}

impl Rate {
    /// `taken` and `debt` drained up to `now`.
    fn drained(&self, now: u32, rate: u32) -> (u32, u32) {
        let elapsed = now.wrapping_sub(self.at);
        // A time before `at` (an older `now` from another task) drains
        // nothing.
        let elapsed = if elapsed > u32::MAX / 2 { 0 } else { elapsed };
        let drain = u64::from(elapsed) * u64::from(rate);
        let sub = |v: u32| u64::from(v).saturating_sub(drain) as u32;
        (sub(self.taken), sub(self.debt))
    }

    /// What eviction keeps: load first, then recency.
    fn worth(&self, now: u32, rate: u32) -> u64 {
        let (taken, debt) = self.drained(now, rate);
        let load = u64::from(taken) + u64::from(debt);
        let age = now.wrapping_sub(self.at);
        (load << 32) | u64::from(u32::MAX - age)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Ban {
    until: u32,
}

impl Ban {
    fn remaining(&self, now: u32) -> u32 {
        let left = self.until.wrapping_sub(now);
        if left > u32::MAX / 2 { 0 } else { left }
    }
}

#[derive(Debug)]
struct Shard {
    rates: SourceTable<Rate>,
    bans: SourceTable<Ban>,
}

impl Shard {
    /// The ban of `source` if it still runs (an ended one is removed).
    fn banned(&mut self, source: &Source, now: u32) -> bool {
        match self.bans.get_mut(source) {
            Some(ban) if ban.remaining(now) > 0 => true,
            Some(_) => {
                self.bans.remove(source);
                false
            }
            None => false,
        }
    }

    fn ban(&mut self, source: &Source, now: u32, policy: &Policy) {
        self.rates.remove(source);
        let ban = Ban {
            until: now.wrapping_add(policy.ban_ms),
        };
        self.bans
            .insert(source, ban, |b| u64::from(b.remaining(now)));
    }

    fn admit(&mut self, source: &Source, now: u32, policy: &Policy) -> Verdict {
        if self.banned(source, now) {
            return Verdict::Banned;
        }
        let rate = policy.rate;
        let bucket = match self.rates.get_mut(source) {
            Some(bucket) => bucket,
            None => {
                let fresh = Rate {
                    taken: 0,
                    debt: 0,
                    at: now,
                };
                self.rates.insert(source, fresh, |r| r.worth(now, rate)).0
            }
        };
        let (taken, debt) = bucket.drained(now, rate);
        bucket.at = now;
        if taken + TOKEN <= policy.burst {
            bucket.taken = taken + TOKEN;
            bucket.debt = debt;
            return Verdict::Pass;
        }
        bucket.taken = taken;
        bucket.debt = debt.saturating_add(TOKEN);
        if policy.ban_ms > 0 && bucket.debt > policy.burst {
            self.ban(source, now, policy);
            return Verdict::NewBan;
        }
        Verdict::RateLimited
    }
}

/// Drops counted per realm (cumulative).
#[derive(Debug, Default)]
struct Counters {
    rate_limited: AtomicU64,
    banned: AtomicU64,
    bans: AtomicU64,
}

/// Cumulative counts of one realm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealmCounts {
    /// Messages dropped for being over the source's rate.
    pub rate_limited: u64,
    /// Messages dropped because their source was banned.
    pub banned: u64,
    /// Bans begun (by the rate rule or [`Shield::ban`]).
    pub bans: u64,
}

/// What [`Shield::counts`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Per realm, by [`RealmId`]: its name and cumulative counts.
    pub realms: Vec<(String, RealmCounts)>,
    /// Bans held now, every realm (a gauge; bans that ended since the last
    /// [`Shield::sweep`] included).
    pub banned_now: u64,
}

#[derive(Debug)]
struct RealmState {
    name: String,
    policy: Policy,
    trust: RealmTrust,
    counters: Counters,
}

#[derive(Debug)]
struct Realms {
    list: Vec<RealmState>,
    /// `[protection]`: the policy of a realm the configuration doesn't have
    /// (yet, or any more).
    global: Policy,
}

/// The per-source shield (see the module docs). Shared by the transport's
/// tasks (`Arc<Shield>`); every method takes `&self`.
#[derive(Debug)]
pub struct Shield {
    seed: Seed,
    epoch: Instant,
    realms: RwLock<Realms>,
    shards: Box<[Mutex<Shard>]>,
}

impl Shield {
    /// A shield tracking up to `tracked` sources' rates and `banned` bans
    /// (`[limits] tracked_sources`, `banned_sources`; every byte allocated
    /// now), with no realm configured: everything passes until
    /// [`Shield::configure`]. `now` is the zero of its clock.
    pub fn new(now: Instant, seed: Seed, tracked: usize, banned: usize) -> Shield {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    rates: SourceTable::with_capacity(tracked.div_ceil(SHARDS)),
                    bans: SourceTable::with_capacity(banned.div_ceil(SHARDS)),
                })
            })
            .collect();
        Shield {
            seed,
            epoch: now,
            realms: RwLock::new(Realms {
                list: Vec::new(),
                global: Policy {
                    enabled: false,
                    rate: 1,
                    burst: TOKEN,
                    ban_ms: 0,
                },
            }),
            shards,
        }
    }

    /// A shield sized by `config`'s `[limits]` and configured with it.
    pub fn from_config(now: Instant, seed: Seed, config: &Config, trust: &Trust) -> Shield {
        let shield = Shield::new(
            now,
            seed,
            config.limits.tracked_sources as usize,
            config.limits.banned_sources as usize,
        );
        shield.configure(config, trust);
        shield
    }

    /// The bytes of its tables (fixed at construction).
    pub fn memory_bytes(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let shard = self.shard(i);
                shard.rates.memory_bytes() + shard.bans.memory_bytes()
            })
            .sum()
    }

    /// Applies `config`'s protection and `trust` (built from the same
    /// config): policies change at once, for tracked sources too. Bans stay,
    /// except on realms whose protection is now disabled (their sources are
    /// forgotten). Table sizes don't change (a restart does that).
    pub fn configure(&self, config: &Config, trust: &Trust) {
        let mut realms = self.realms_mut();
        realms.global = Policy::from(&config.protection);
        let global = realms.global;
        for state in &mut realms.list {
            state.policy = global;
            state.trust = RealmTrust::default();
        }
        for (i, realm) in config.realms.iter().enumerate() {
            let id = Self::intern(&mut realms, &realm.name);
            let state = &mut realms.list[usize::from(id.0)];
            state.policy = Policy::from(&config.protection_of(i));
            state.trust = trust.realm(i).cloned().unwrap_or_default();
        }
        let disabled: Vec<u16> = (0..)
            .zip(&realms.list)
            .filter(|(_, s)| !s.policy.enabled)
            .map(|(i, _)| i)
            .collect();
        drop(realms);
        if disabled.is_empty() {
            return;
        }
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            shard.rates.retain(|r, _| !disabled.contains(&r.0));
            shard.bans.retain(|r, _| !disabled.contains(&r.0));
        }
    }

    /// The number of the realm named `name` (the transport asks once per
    /// listener); a realm not configured yet gets `[protection]`'s policy
    /// and no trusted sources until it is.
    pub fn realm(&self, name: &str) -> RealmId {
        if let Some(i) = self.realms().list.iter().position(|s| s.name == name) {
            return RealmId(i as u16);
        }
        Self::intern(&mut self.realms_mut(), name)
    }

    /// The name of realm `id`.
    pub fn realm_name(&self, id: RealmId) -> Option<String> {
        self.realms()
            .list
            .get(usize::from(id.0))
            .map(|s| s.name.clone())
    }

    /// How long a ban lasts on realm `id`, in seconds (0: never bans).
    pub fn ban_secs(&self, id: RealmId) -> u32 {
        self.realms()
            .list
            .get(usize::from(id.0))
            .map_or(0, |s| s.policy.ban_ms / 1_000)
    }

    fn intern(realms: &mut Realms, name: &str) -> RealmId {
        if let Some(i) = realms.list.iter().position(|s| s.name == name) {
            return RealmId(i as u16);
        }
        // Realms come from the configuration: thousands at most.
        let id = RealmId(u16::try_from(realms.list.len()).unwrap_or(u16::MAX));
        realms.list.push(RealmState {
            name: name.to_owned(),
            policy: realms.global,
            trust: RealmTrust::default(),
            counters: Counters::default(),
        });
        id
    }

    /// Whether `ip` is trusted on realm `realm` (skips the shield).
    pub fn is_trusted(&self, realm: RealmId, ip: IpAddr) -> bool {
        self.realms()
            .list
            .get(usize::from(realm.0))
            .is_some_and(|s| s.trust.contains(ip))
    }

    /// The verdict on one message from `ip` on `realm` at `now`, counted.
    /// Trusted sources, realms with protection disabled and unknown realms
    /// always pass. Allocates nothing: a read lock, one shard's mutex and
    /// two bucket probes.
    pub fn admit(&self, now: Instant, realm: RealmId, ip: IpAddr) -> Verdict {
        let realms = self.realms();
        let Some(state) = realms.list.get(usize::from(realm.0)) else {
            return Verdict::Pass;
        };
        if !state.policy.enabled || state.trust.contains(ip) {
            return Verdict::Pass;
        }
        let source = self.seed.source(realm, ip);
        let now = self.ms(now);
        let verdict = self
            .shard(source.shard())
            .admit(&source, now, &state.policy);
        let counter = match verdict {
            Verdict::Pass => return verdict,
            Verdict::RateLimited => &state.counters.rate_limited,
            Verdict::Banned => &state.counters.banned,
            Verdict::NewBan => {
                state.counters.bans.fetch_add(1, Ordering::Relaxed);
                &state.counters.banned
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    /// Bans `ip` on `realm` for the realm's `ban_secs`, for a reason found
    /// elsewhere (a scanner, too many refusals). Returns whether this began
    /// a ban (then the caller logs it): not if the source is already
    /// banned, trusted, or the realm doesn't ban (protection disabled,
    /// `ban_secs = 0`).
    pub fn ban(&self, now: Instant, realm: RealmId, ip: IpAddr) -> bool {
        let realms = self.realms();
        let Some(state) = realms.list.get(usize::from(realm.0)) else {
            return false;
        };
        if !state.policy.enabled || state.policy.ban_ms == 0 || state.trust.contains(ip) {
            return false;
        }
        let source = self.seed.source(realm, ip);
        let now = self.ms(now);
        let mut shard = self.shard(source.shard());
        if shard.banned(&source, now) {
            return false;
        }
        shard.ban(&source, now, &state.policy);
        state.counters.bans.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The bans running at `now`: realm name, address and milliseconds
    /// left (for sharing them with the other node of a pair).
    pub fn bans(&self, now: Instant) -> Vec<(String, IpAddr, u32)> {
        let names: Vec<String> = self.realms().list.iter().map(|s| s.name.clone()).collect();
        let now = self.ms(now);
        let mut bans = Vec::new();
        for i in 0..SHARDS {
            self.shard(i).bans.for_each(|realm, ip, ban| {
                let left = ban.remaining(now);
                if let (true, Some(name)) = (left > 0, names.get(usize::from(realm.0))) {
                    bans.push((name.clone(), ip, left));
                }
            });
        }
        bans
    }

    /// Bans `ip` on the realm named `realm` for `ms` milliseconds (at most
    /// a week), a ban another node began: as [`Shield::ban`], not when the
    /// source is trusted or the realm doesn't ban, and a running ban is
    /// only ever lengthened. Returns whether the ban is new.
    pub fn ban_for(&self, now: Instant, realm: &str, ip: IpAddr, ms: u32) -> bool {
        let realms = self.realms();
        let Some(index) = realms.list.iter().position(|s| s.name == realm) else {
            return false;
        };
        let state = &realms.list[index];
        if !state.policy.enabled || state.policy.ban_ms == 0 || state.trust.contains(ip) || ms == 0
        {
            return false;
        }
        let source = self.seed.source(RealmId(index as u16), ip);
        let now = self.ms(now);
        let policy = Policy {
            ban_ms: ms.min(MAX_BAN_MS),
            ..state.policy
        };
        let mut shard = self.shard(source.shard());
        let running = shard
            .bans
            .get_mut(&source)
            .map(|ban| ban.remaining(now))
            .filter(|left| *left > 0);
        match running {
            Some(left) if left >= policy.ban_ms => false,
            Some(_) => {
                shard.ban(&source, now, &policy);
                false
            }
            None => {
                shard.ban(&source, now, &policy);
                state.counters.bans.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Whether `ip` is banned on `realm` now (no token taken).
    pub fn is_banned(&self, now: Instant, realm: RealmId, ip: IpAddr) -> bool {
        let source = self.seed.source(realm, ip);
        let now = self.ms(now);
        self.shard(source.shard()).banned(&source, now)
    }

    /// Forgets ended bans and rate entries that have drained (a source
    /// quiet long enough to have its whole bucket back). Touches every slot:
    /// call it about once a second, and at least daily.
    pub fn sweep(&self, now: Instant) {
        let rates: Vec<u32> = self.realms().list.iter().map(|s| s.policy.rate).collect();
        let now = self.ms(now);
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            shard.bans.retain(|_, ban| ban.remaining(now) > 0);
            shard.rates.retain(|realm, bucket| {
                let rate = rates.get(usize::from(realm.0)).copied().unwrap_or(1);
                bucket.drained(now, rate) != (0, 0)
            });
        }
    }

    /// Cumulative drop and ban counts per realm, and the bans held now.
    pub fn counts(&self) -> Counts {
        let realms = self
            .realms()
            .list
            .iter()
            .map(|s| {
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let counts = RealmCounts {
                    rate_limited: get(&s.counters.rate_limited),
                    banned: get(&s.counters.banned),
                    bans: get(&s.counters.bans),
                };
                (s.name.clone(), counts)
            })
            .collect();
        let banned_now = (0..SHARDS).map(|i| self.shard(i).bans.len() as u64).sum();
        Counts { realms, banned_now }
    }

    /// Rate entries held now, every shard (for tests and debugging).
    pub fn tracked(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).rates.len()).sum()
    }

    fn ms(&self, now: Instant) -> u32 {
        // Wraps after 49 days, on purpose (see the module docs).
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // Every edit leaves the shard consistent (one slot at a time): a
        // panic elsewhere while holding it does not poison the shield.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn realms(&self) -> RwLockReadGuard<'_, Realms> {
        self.realms
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn realms_mut(&self) -> std::sync::RwLockWriteGuard<'_, Realms> {
        self.realms
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
