//! Active/standby pairs on Redis (`[cluster]`).
//!
//! Two nodes run the same configuration except `node_id`. One key in Redis,
//! `{name}:lease`, says which of them serves: the node that holds it is
//! *active* (binds the listeners and media addresses and takes calls), the
//! other is *standby* (binds nothing, reports not ready, and asks for the
//! lease twice per renewal period). The active node renews the lease every
//! `renew_ms`; it expires `lease_ms` after the last renewal, so a node that
//! dies (SIGKILL, power) is replaced within about `lease_ms` plus half a
//! renewal period, and a node that stops cleanly hands the lease over at
//! once by deleting it.
//!
//! One Lua script both renews and takes the lease, atomically, and answers
//! who holds it ([`ACQUIRE`]); a node can only renew or delete its own. A
//! Redis that restarted empty gives the serving node one lease period to
//! take its lease back before a standby may.
//!
//! When Redis can't be reached the active node keeps serving (a Redis
//! outage must not stop calls; the standby can't take the lease either) and
//! says so (`sbc_cluster_redis_errors_total`, a warning every 10 s). An
//! active node that finds the lease held by the other node (Redis came back
//! after a partition during which the other took over) steps down: it
//! exits with an error, so its supervisor starts it again, as standby,
//! without a BYE (the other node carries on the calls Redis had of it).
//!
//! Listeners and media sockets of a node in a pair bind with IP_FREEBIND,
//! so the standby that becomes active can bind shared addresses before
//! they move to its host (keepalived or the like moves them; its check is
//! the node's `/health/ready`, true only on the active node once it
//! serves). On one host nothing moves: the standby binds what the dead
//! node released.
//!
//! Bans are shared too ([`SharedBans`]): a source one node banned is banned
//! on the other, so an attacker gains nothing from a takeover.
//!
//! And so are the calls ([`calls`]): the active node writes every answered
//! call to Redis as it changes, the standby mirrors them, and the node that
//! takes over carries them on (their dialogs and their media ports), so
//! BYEs and re-INVITEs of calls answered before a node died are served by
//! the other.

pub mod calls;
pub mod load;
pub mod resp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGaugeVec, Opts};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Cluster as ClusterConfig, ClusterMode};
use crate::guard::Shield;
use resp::{Redis, Reply};

/// Renews the lease if this node holds it, else takes it if nobody does;
/// answers who holds it now ("" for nobody yet). KEYS[1] = the lease,
/// KEYS[2] = the epoch, KEYS[3] = the grace; ARGV[1] = this node, ARGV[2]
/// = the lease in milliseconds, ARGV[3] = `active` when this node serves.
///
/// A lease that is missing because it expired goes to whoever asks first.
/// One missing because Redis lost its data (restarted empty: the epoch key,
/// which never expires, is gone too) does not: for one lease period (the
/// grace) only a node that serves may take it, so the active node, alive
/// all along, renews its lease rather than a standby snatching it and
/// making it step down.
pub const ACQUIRE: &str = "local v = redis.call('GET', KEYS[1]) \
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return v end \
if v then return v end \
if redis.call('EXISTS', KEYS[2]) == 0 then \
redis.call('SET', KEYS[2], '1') redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) end \
if ARGV[3] ~= 'active' and redis.call('EXISTS', KEYS[3]) == 1 then return '' end \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
return ARGV[1]";

/// Deletes the lease if this node holds it.
pub const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// What a node of a pair is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the lease; the other node (named, once known) holds it.
    Standby { holder: Option<String> },
    /// Holding the lease: serving.
    Active,
    /// Held the lease and found it taken by `holder`: stepping down.
    Lost { holder: String },
}

/// The pure part: what an answer from Redis changes.
#[derive(Debug)]
pub struct Lease {
    me: String,
    role: Role,
}

impl Lease {
    /// A node named `me`, standby until Redis says otherwise.
    pub fn new(me: &str) -> Lease {
        Lease {
            me: me.to_owned(),
            role: Role::Standby { holder: None },
        }
    }

    /// The role now.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Redis answered that `holder` holds the lease (`None`: Redis could
    /// not be asked, which changes nothing). Returns the new role when it
    /// changed.
    pub fn answered(&mut self, holder: Option<&str>) -> Option<&Role> {
        let holder = holder?;
        let next = match (&self.role, holder == self.me) {
            (Role::Standby { .. }, true) => Role::Active,
            (Role::Standby { holder: known }, false) if known.as_deref() == Some(holder) => {
                return None;
            }
            (Role::Standby { .. }, false) => Role::Standby {
                holder: Some(holder.to_owned()),
            },
            (Role::Active, true) => return None,
            (Role::Active, false) => Role::Lost {
                holder: holder.to_owned(),
            },
            // Stepping down is final for this process.
            (Role::Lost { .. }, _) => return None,
        };
        self.role = next;
        Some(&self.role)
    }

    /// How long until the next question: the active node renews every
    /// `renew`, the standby asks twice as often (it takes over within half
    /// a renewal period of the expiry).
    pub fn interval(&self, renew: Duration) -> Duration {
        match self.role {
            Role::Active => renew,
            _ => renew / 2,
        }
    }
}

/// The metrics of the pair, registered on the daemon's registry when
/// `[cluster]` is set (and by the packaging test, which checks the
/// dashboard and alerts against every family).
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    role: IntGaugeVec,
    redis_errors: IntCounter,
    takeovers: IntCounter,
}

impl ClusterMetrics {
    /// Registers the families on `registry`, the role at standby.
    pub fn register(registry: &prometheus::Registry) -> ClusterMetrics {
        let role = IntGaugeVec::new(
            Opts::new(
                "sbc_cluster_role",
                "1 for this node's role in its active/standby pair ([cluster]): active serves, standby waits for the lease, lost found the lease taken and is stepping down.",
            ),
            &["role"],
        )
        .expect("metric definitions in cluster.rs are valid");
        let redis_errors = IntCounter::new(
            "sbc_cluster_redis_errors_total",
            "Lease requests to Redis that failed (unreachable, timed out, refused); an active node keeps serving meanwhile.",
        )
        .expect("metric definitions in cluster.rs are valid");
        let takeovers = IntCounter::new(
            "sbc_cluster_takeovers_total",
            "Times this node took the lease and became active.",
        )
        .expect("metric definitions in cluster.rs are valid");
        // Registered once per process; a second registration (tests that
        // build two nodes on one registry) keeps the first.
        let _ = registry.register(Box::new(role.clone()));
        let _ = registry.register(Box::new(redis_errors.clone()));
        let _ = registry.register(Box::new(takeovers.clone()));
        let metrics = ClusterMetrics {
            role,
            redis_errors,
            takeovers,
        };
        metrics.show(&Role::Standby { holder: None });
        metrics
    }

    fn show(&self, role: &Role) {
        let now = match role {
            Role::Active => "active",
            Role::Standby { .. } => "standby",
            Role::Lost { .. } => "lost",
        };
        for name in ["active", "standby", "lost"] {
            self.role
                .with_label_values(&[name])
                .set(i64::from(name == now));
        }
    }
}

/// A node of a pair: the task that keeps asking Redis for the lease, and
/// its role as it changes.
#[derive(Debug)]
pub struct Node {
    role: watch::Receiver<Role>,
    shield: watch::Sender<Option<Arc<Shield>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    bans: tokio::task::JoinHandle<()>,
    /// Call changes to the writer (`None` once stopping).
    changes: Option<tokio::sync::mpsc::Sender<calls::Change>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Asks the mirror for its calls (once, at the takeover).
    mirror:
        Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<Vec<calls::Mirrored>>>>,
    replication: calls::ReplicationMetrics,
    /// Set when every call should be written again.
    resync: Arc<std::sync::atomic::AtomicBool>,
    /// This process in the pair's keys: the node id and its start time.
    instance: String,
    keys: calls::Keys,
    redis_addr: String,
    me: String,
    /// The renewal period.
    renew: Duration,
    load: watch::Receiver<load::ClusterLoad>,
    local_load: watch::Sender<Vec<(String, u32)>>,
}

/// The clocks the ban exchange reads (an IO shell).
#[allow(clippy::disallowed_methods)]
fn clocks() -> (std::time::Instant, u64) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (std::time::Instant::now(), unix_ms)
}

/// While this node is active and its shield is known, exchanges bans
/// with the other node every `every` ([`SharedBans`]).
async fn share_bans(
    mut redis: Redis,
    key: String,
    every: Duration,
    mut role: watch::Receiver<Role>,
    shield: watch::Receiver<Option<Arc<Shield>>>,
    errors: IntCounter,
) {
    let mut bans = SharedBans::default();
    loop {
        if role.wait_for(|r| *r == Role::Active).await.is_err() {
            return;
        }
        let current = shield.borrow().clone();
        if let Some(shield) = current
            && bans.exchange(&mut redis, &key, &shield).await.is_err()
        {
            errors.inc();
        }
        tokio::time::sleep(every).await;
    }
}

/// The bans of the pair: a sorted set `{name}:bans` of `realm|address`
/// scored by the Unix millisecond the ban ends. Each round a node adds the
/// bans it began (each once), takes in those the other began, and drops
/// ended ones; so a source banned on one node is banned on the other,
/// across a takeover too.
#[derive(Debug, Default)]
struct SharedBans {
    /// What this node wrote, with the end it wrote.
    published: HashMap<(String, IpAddr), u64>,
}

impl SharedBans {
    async fn exchange(&mut self, redis: &mut Redis, key: &str, shield: &Shield) -> Result<(), ()> {
        let (now, unix_ms) = clocks();
        self.published.retain(|_, until| *until > unix_ms);
        let mut add: Vec<Vec<u8>> = Vec::new();
        for (realm, ip, left) in shield.bans(now) {
            let until = unix_ms + u64::from(left);
            let member = (realm, ip);
            // Each ban once (a ban taken in from the other node included:
            // writing it back changes nothing).
            if self
                .published
                .get(&member)
                .is_some_and(|t| t.abs_diff(until) < 2_000)
            {
                continue;
            }
            add.push(until.to_string().into_bytes());
            add.push(format!("{}|{}", member.0, member.1).into_bytes());
            self.published.insert(member, until);
        }
        for chunk in add.chunks(2 * 256) {
            let mut args: Vec<&[u8]> = vec![b"ZADD", key.as_bytes(), b"GT"];
            args.extend(chunk.iter().map(Vec::as_slice));
            match redis.command(&args).await {
                Ok(Reply::Integer(_)) => {}
                _ => return Err(()),
            }
        }
        let floor = unix_ms.to_string();
        if !matches!(
            redis
                .command(&[
                    b"ZREMRANGEBYSCORE",
                    key.as_bytes(),
                    b"-inf",
                    floor.as_bytes()
                ])
                .await,
            Ok(Reply::Integer(_))
        ) {
            return Err(());
        }
        let bans = match redis
            .command(&[
                b"ZRANGEBYSCORE",
                key.as_bytes(),
                floor.as_bytes(),
                b"+inf",
                b"WITHSCORES",
            ])
            .await
        {
            Ok(Reply::Array(Some(items))) => items,
            _ => return Err(()),
        };
        for pair in bans.chunks(2) {
            let [Reply::Bulk(Some(member)), Reply::Bulk(Some(score))] = pair else {
                continue;
            };
            let (Ok(member), Ok(score)) = (std::str::from_utf8(member), std::str::from_utf8(score))
            else {
                continue;
            };
            let (Some((realm, ip)), Ok(until)) = (member.rsplit_once('|'), score.parse::<f64>())
            else {
                continue;
            };
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            let left = (until as u64)
                .saturating_sub(unix_ms)
                .min(u64::from(u32::MAX)) as u32;
            if shield.ban_for(now, realm, ip, left) {
                info!(%realm, source = %ip, seconds = left / 1_000, "source banned by the other node of the pair");
                self.published.insert((realm.to_owned(), ip), until as u64);
            }
        }
        Ok(())
    }
}

/// How often a failing Redis is complained about in the log.
const COMPLAIN_EVERY: Duration = Duration::from_secs(10);

impl Node {
    /// Starts asking for the lease (standby until it is granted).
    pub fn start(config: &ClusterConfig, registry: &prometheus::Registry) -> Node {
        let metrics = ClusterMetrics::register(registry);
        let replication = calls::ReplicationMetrics::register(registry);
        let addr = resp::parse_url(&config.redis_url).unwrap_or_else(|| config.redis_url.clone());
        let renew = Duration::from_millis(u64::from(config.renew_ms));
        let lease_ms = config.lease_ms.to_string();
        let key = format!("{}:lease", config.name);
        let epoch = format!("{}:epoch", config.name);
        let grace = format!("{}:grace", config.name);
        let me = config.node_id.clone();
        // A request that takes longer than a renewal period has failed.
        let mut redis = Redis::new(addr.clone(), renew);
        let pair = config.mode == ClusterMode::Pair;
        // N active nodes serve from the start; a node of a pair waits.
        let (role_tx, role) = watch::channel(if pair {
            Role::Standby { holder: None }
        } else {
            Role::Active
        });
        if !pair {
            metrics.show(&Role::Active);
        }
        let (shield, shield_rx) = watch::channel::<Option<Arc<Shield>>>(None);
        // The bans go over a connection of their own, so however slow they
        // are, they never delay a renewal of the lease.
        let bans = tokio::spawn(share_bans(
            Redis::new(addr.clone(), renew),
            format!("{}:bans", config.name),
            renew,
            role.clone(),
            shield_rx,
            metrics.redis_errors.clone(),
        ));
        // Limits: each active node's calls per trunk, for the others.
        let (load_tx, load) = watch::channel(load::ClusterLoad::default());
        let (local_load, local_rx) = watch::channel(Vec::new());
        tokio::spawn(load::share_load(
            Redis::new(addr.clone(), renew),
            load::Sharing {
                key: format!("{}:nodes", config.name),
                me: config.node_id.clone(),
                every: renew,
            },
            role.clone(),
            local_rx,
            load_tx,
            metrics.redis_errors.clone(),
        ));
        // Calls (a pair): a writer while active, a mirror while standby,
        // each on a connection of its own (a slow write never delays the
        // lease).
        let keys = calls::Keys::new(&config.name);
        let instance = format!("{}.{}", config.node_id, clocks().1);
        let (changes, changes_rx) = tokio::sync::mpsc::channel(calls::QUEUE);
        let resync = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = pair.then(|| {
            tokio::spawn(calls::write_changes(
                calls::Writer::new(
                    keys.clone(),
                    instance.clone(),
                    Duration::from_secs(u64::from(config.call_ttl_secs)),
                ),
                Redis::new(addr.clone(), renew.max(Duration::from_secs(1))),
                changes_rx,
                role.clone(),
                renew,
                replication.clone(),
                Arc::clone(&resync),
            ))
        });
        let (mirror, asked) = tokio::sync::oneshot::channel();
        if pair {
            tokio::spawn(calls::mirror_calls(
                Redis::new(addr.clone(), Duration::from_secs(2)),
                keys.clone(),
                config.node_id.clone(),
                asked,
                renew,
                replication.clone(),
            ));
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        if !pair {
            let task = tokio::spawn(async move {
                // The role never changes; the channel lives as long as the node.
                let _role = role_tx;
                let _ = stopped.await;
            });
            return Node {
                role,
                shield,
                stop: Some(stop),
                task,
                bans,
                changes: None,
                writer: None,
                mirror: None,
                replication,
                resync,
                instance,
                keys,
                redis_addr: addr,
                me,
                renew,
                load,
                local_load,
            };
        }
        let task = tokio::spawn(async move {
            let mut lease = Lease::new(&me);
            let mut complained: Option<tokio::time::Instant> = None;
            loop {
                let serving: &[u8] = if *lease.role() == Role::Active {
                    b"active"
                } else {
                    b"standby"
                };
                let answer = redis
                    .command(&[
                        b"EVAL",
                        ACQUIRE.as_bytes(),
                        b"3",
                        key.as_bytes(),
                        epoch.as_bytes(),
                        grace.as_bytes(),
                        me.as_bytes(),
                        lease_ms.as_bytes(),
                        serving,
                    ])
                    .await;
                let holder = match answer {
                    // Nobody yet, in the grace after Redis lost its data.
                    Ok(Reply::Bulk(Some(holder))) if holder.is_empty() => None,
                    Ok(Reply::Bulk(Some(holder))) => String::from_utf8(holder).ok(),
                    other => {
                        metrics.redis_errors.inc();
                        let now = tokio::time::Instant::now();
                        if complained.is_none_or(|at| now.duration_since(at) >= COMPLAIN_EVERY) {
                            complained = Some(now);
                            let error = match other {
                                Err(e) => e.to_string(),
                                Ok(reply) => format!("unexpected reply {reply:?}"),
                            };
                            warn!(redis = %redis.addr(), %error, role = ?lease.role(), "cluster lease request failed; an active node keeps serving");
                        }
                        None
                    }
                };
                if let Some(role) = lease.answered(holder.as_deref()) {
                    metrics.show(role);
                    match role {
                        Role::Active => {
                            metrics.takeovers.inc();
                            info!(node = %me, "cluster lease taken: active");
                        }
                        Role::Standby {
                            holder: Some(holder),
                        } => {
                            info!(node = %me, active = %holder, "standby: the other node holds the cluster lease")
                        }
                        Role::Standby { holder: None } => {}
                        Role::Lost { holder } => {
                            warn!(node = %me, active = %holder, "the cluster lease is held by the other node: stepping down")
                        }
                    }
                    let _ = role_tx.send(role.clone());
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(lease.interval(renew)) => {}
                }
            }
            // A clean stop hands the lease over at once.
            if *lease.role() == Role::Active {
                let released = redis
                    .command(&[
                        b"EVAL",
                        RELEASE.as_bytes(),
                        b"1",
                        key.as_bytes(),
                        me.as_bytes(),
                    ])
                    .await;
                match released {
                    Ok(Reply::Integer(1)) => info!(node = %me, "cluster lease released"),
                    other => {
                        warn!(node = %me, result = ?other, "cluster lease not released; it expires on its own")
                    }
                }
            }
        });
        Node {
            role,
            shield,
            stop: Some(stop),
            task,
            bans,
            changes: Some(changes),
            writer,
            mirror: Some(mirror),
            replication,
            resync,
            instance,
            keys,
            redis_addr: addr,
            me: config.node_id.clone(),
            renew,
            load,
            local_load,
        }
    }

    /// The standby node that holds a current mirror of this node's calls,
    /// if Redis names one within `within`.
    pub async fn standby(&self, within: Duration) -> Option<String> {
        let mut redis = Redis::new(self.redis_addr.clone(), within);
        match redis.command(&[b"GET", self.keys.standby.as_bytes()]).await {
            Ok(Reply::Bulk(Some(name))) => String::from_utf8(name).ok().filter(|n| *n != self.me),
            _ => None,
        }
    }

    /// Hands this node's calls up per trunk to the other active nodes
    /// (the daemon, once a second).
    pub fn publish_load(&self, calls: Vec<(String, u32)>) {
        self.local_load.send_if_modified(|now| {
            let changed = *now != calls;
            *now = calls;
            changed
        });
    }

    /// What the other active nodes carry, as it changes.
    pub fn load(&self) -> watch::Receiver<load::ClusterLoad> {
        self.load.clone()
    }

    /// This process's name in the pair's keys.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// What hands call changes to the writer (the daemon's shell holds
    /// it; drop it before [`Node::stop`], which waits for the writer).
    pub fn replicator(&self) -> Option<calls::Replicator> {
        Some(calls::Replicator {
            changes: self.changes.clone()?,
            dropped: self.replication.writes.with_label_values(&["dropped"]),
            resync: Arc::clone(&self.resync),
        })
    }

    /// The calls the other node wrote, for this node to carry on: asked
    /// once, when it has become active (the mirror reads the Stream to its
    /// end first). Empty when the mirror does not answer within `within`.
    pub async fn take_calls(&mut self, within: Duration) -> Vec<calls::Mirrored> {
        let Some(mirror) = self.mirror.take() else {
            return Vec::new();
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        if mirror.send(answer).is_err() {
            return Vec::new();
        }
        match tokio::time::timeout(within, answered).await {
            Ok(Ok(calls)) => calls,
            _ => {
                warn!("the mirror of the other node's calls did not answer; none carried on");
                Vec::new()
            }
        }
    }

    /// Whether call changes have waited for Redis more than two renewal
    /// periods: a takeover now would not carry on the newest calls.
    pub fn replication_behind(&self) -> bool {
        let lag = Duration::from_millis(u64::try_from(self.replication.lag_ms.get()).unwrap_or(0));
        lag > 2 * self.renew
    }

    /// Counts the result of carrying on one call of the other node.
    pub fn adopted(&self, ok: bool) {
        self.replication
            .adopted
            .with_label_values(&[if ok { "adopted" } else { "failed" }])
            .inc();
    }

    /// Shares `shield`'s bans with the other node from now on (the daemon
    /// builds its shield once it is active).
    pub fn share_bans(&self, shield: Arc<Shield>) {
        let _ = self.shield.send(Some(shield));
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Waits until this node is active.
    pub async fn active(&mut self) {
        let _ = self.role.wait_for(|r| *r == Role::Active).await;
    }

    /// Waits until this node, active, finds the lease taken; returns the
    /// node that holds it. Never returns while the lease is ours.
    pub async fn lost(&mut self) -> String {
        match self
            .role
            .wait_for(|r| matches!(r, Role::Lost { .. }))
            .await
            .map(|r| r.clone())
        {
            Ok(Role::Lost { holder }) => holder,
            // The task ended (it never does while the node runs).
            _ => std::future::pending().await,
        }
    }

    /// Stops asking, and hands the lease over if this node holds it: after
    /// the last call changes are written (at most 2 s), so the node that
    /// takes over finds every call as it is.
    pub async fn stop(mut self) {
        drop(self.changes.take());
        let active = *self.role.borrow() == Role::Active;
        if let Some(writer) = self.writer.as_mut() {
            if !active {
                // A standby wrote nothing; its writer waits for a lease.
                writer.abort();
            } else if tokio::time::timeout(Duration::from_secs(2), &mut *writer)
                .await
                .is_err()
            {
                warn!("call changes not all written to Redis before the stop");
                writer.abort();
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.bans.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

#[cfg(test)]
mod tests;
