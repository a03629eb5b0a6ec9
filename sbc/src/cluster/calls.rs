//! The calls of a pair in Redis: the active node writes, the standby
//! mirrors, the node that takes over adopts.
//!
//! Keys (`{name}` is the pair's name, `{instance}` the writing process:
//! its node id and start time, so a restarted node never reuses the
//! numbers of its previous life):
//! * `{name}:call:{instance}:{call}`: `"{seq} {record}"`, the latest
//!   [`CallRecord`] of a call up, as JSON, with a TTL (`call_ttl_secs`);
//!   deleted when the call ends.
//! * `{name}:calls`: a Stream of every change, in order (`i` instance,
//!   `c` call, `s` seq, `o` `put` or `gone`, `r` record), trimmed to about
//!   [`STREAM_MAXLEN`] entries.
//!
//! One Lua script writes a batch: each key and its Stream entry together,
//! so the mirror never sees one without the other. `seq` grows with every
//! write of an instance: the mirror keeps the newest of each call, and a
//! gap in an instance's numbers (entries trimmed away while the standby
//! was behind) makes it read every key again.
//!
//! The standby reads the Stream through a consumer group named after
//! itself (at-least-once: an entry is acknowledged once applied, and
//! entries delivered but not acknowledged before a reconnect are read
//! again), after reading every key once at start ("seeding"). When it
//! takes over it reads the Stream to its end, adopts what it holds and
//! writes those calls again under its own instance, then retires the dead
//! instance's keys (a `gone` each, so a later standby forgets them too).
//!
//! Writing never blocks calls: changes go through a bounded queue into
//! the writer task (a full queue drops the change, counted); while Redis
//! is away the writer keeps the newest change of each call and retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::Role;
use super::resp::{Redis, Reply};
use crate::b2bua::replica::CallRecord;

/// About how many entries the Stream keeps (`XADD MAXLEN ~`): with two
/// writes per call, the changes of the last 50,000 calls or so.
pub const STREAM_MAXLEN: u32 = 100_000;

/// How many changes go into one script call.
const BATCH: usize = 128;

/// The queue of changes from the core loop to the writer: room for every
/// call of a large node at once (a takeover writes each adopted call, a
/// Redis outage's end every call up). Its blocks are allocated as used.
pub const QUEUE: usize = 262_144;

/// Writes a batch. KEYS[1] = the Stream; ARGV[1] = the key prefix
/// (`{name}:call:`), ARGV[2] = the TTL in ms, ARGV[3] = the Stream's
/// length, then five per change: instance, call, seq, op, record.
pub const WRITE: &str = "local n = 0 \
for i = 4, #ARGV, 5 do \
local inst, call, seq, op, rec = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4] \
local key = ARGV[1] .. inst .. ':' .. call \
if op == 'put' then redis.call('SET', key, seq .. ' ' .. rec, 'PX', ARGV[2]) \
else redis.call('DEL', key) end \
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'i', inst, 'c', call, 's', seq, 'o', op, 'r', rec) \
n = n + 1 end \
return n";

/// What the core loop hands the writer.
#[derive(Debug)]
pub enum Change {
    /// A call's record, new or changed.
    Put(Box<CallRecord>),
    /// A call ended.
    Gone(u64),
    /// Calls of a dead instance this node adopted: forget them (after
    /// this node's own records of them are written).
    Retire(Vec<(String, u64)>),
}

/// Hands call changes to the writer, never waiting: a full queue drops
/// the change (counted).
#[derive(Clone, Debug)]
pub struct Replicator {
    pub(super) changes: mpsc::Sender<Change>,
    pub(super) dropped: prometheus::IntCounter,
    pub(super) resync: Arc<AtomicBool>,
}

impl Replicator {
    /// Queues `change`; a full queue drops it (counted: the call's next
    /// change carries its whole record again, and a lost end leaves a
    /// record that expires with its TTL).
    pub fn send(&self, change: Change) {
        if self.changes.try_send(change).is_err() {
            self.dropped.inc();
        }
    }

    /// Whether every call up should be written again: Redis answered after
    /// failing, and may have restarted empty. Asked once a second; true
    /// once per recovery.
    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::Relaxed)
    }
}

/// A call the mirror holds: whose it was and its latest record.
#[derive(Clone, Debug)]
pub struct Mirrored {
    /// The instance that wrote it.
    pub instance: String,
    /// Its number there.
    pub call: u64,
    /// The record.
    pub record: CallRecord,
}

/// The metrics of replication.
#[derive(Clone, Debug)]
pub struct ReplicationMetrics {
    /// Changes by result: written, dropped (queue full), failed (a batch
    /// Redis did not take; retried).
    pub writes: IntCounterVec,
    /// How long the oldest change not yet in Redis has waited.
    pub lag_ms: IntGauge,
    /// Calls the standby holds, ready to adopt.
    pub mirrored: IntGauge,
    /// Calls adopted at a takeover, by result.
    pub adopted: IntCounterVec,
}

impl ReplicationMetrics {
    /// Registers the families on `registry`.
    pub fn register(registry: &prometheus::Registry) -> ReplicationMetrics {
        let writes = IntCounterVec::new(
            Opts::new(
                "sbc_cluster_replication_writes_total",
                "Call changes for the other node of the pair, by result: written to Redis, dropped (the queue to the writer was full), failed (Redis did not take them; the newest change of each call is retried).",
            ),
            &["result"],
        )
        .expect("metric definitions in cluster/calls.rs are valid");
        let lag_ms = IntGauge::new(
            "sbc_cluster_replication_lag_milliseconds",
            "How long the oldest call change not yet written to Redis has waited (0: the standby's source is current).",
        )
        .expect("metric definitions in cluster/calls.rs are valid");
        let mirrored = IntGauge::new(
            "sbc_cluster_mirrored_calls",
            "Calls of the active node this standby holds, ready to adopt at a takeover.",
        )
        .expect("metric definitions in cluster/calls.rs are valid");
        let adopted = IntCounterVec::new(
            Opts::new(
                "sbc_cluster_adopted_calls_total",
                "Calls of the other node this node carried on after taking over, by result (adopted, or failed: a realm, listener or trunk of the call is not configured here, or its media ports are not free).",
            ),
            &["result"],
        )
        .expect("metric definitions in cluster/calls.rs are valid");
        let _ = registry.register(Box::new(writes.clone()));
        let _ = registry.register(Box::new(lag_ms.clone()));
        let _ = registry.register(Box::new(mirrored.clone()));
        let _ = registry.register(Box::new(adopted.clone()));
        for result in ["written", "dropped", "failed"] {
            writes.with_label_values(&[result]);
        }
        for result in ["adopted", "failed"] {
            adopted.with_label_values(&[result]);
        }
        ReplicationMetrics {
            writes,
            lag_ms,
            mirrored,
            adopted,
        }
    }
}

/// The names a pair's calls live under.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `{name}:call:`
    pub prefix: String,
    /// `{name}:calls`
    pub stream: String,
    /// `{name}:standby`: the standby with a current mirror, if any.
    pub standby: String,
}

impl Keys {
    /// The keys of the pair `name`.
    pub fn new(name: &str) -> Keys {
        Keys {
            prefix: format!("{name}:call:"),
            stream: format!("{name}:calls"),
            standby: format!("{name}:standby"),
        }
    }

    /// The instance and call of a call key.
    fn parse<'a>(&self, key: &'a str) -> Option<(&'a str, u64)> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (instance, call) = rest.rsplit_once(':')?;
        Some((instance, call.parse().ok()?))
    }
}

/// A pending write: the newest change of one call.
#[derive(Debug)]
enum Pending {
    Put(Box<CallRecord>),
    Gone,
}

/// The writer's state (pure apart from the Redis calls in [`Writer::flush`]).
#[derive(Debug)]
pub struct Writer {
    keys: Keys,
    instance: String,
    ttl_ms: String,
    seq: u64,
    /// The newest change of each call of ours not yet written.
    pending: BTreeMap<u64, (Pending, tokio::time::Instant)>,
    /// Calls of other instances to forget, once ours are written.
    retire: Vec<(String, u64)>,
}

impl Writer {
    /// A writer for `instance`.
    pub fn new(keys: Keys, instance: String, ttl: Duration) -> Writer {
        Writer {
            keys,
            instance,
            ttl_ms: ttl.as_millis().to_string(),
            seq: 0,
            pending: BTreeMap::new(),
            retire: Vec::new(),
        }
    }

    /// Takes a change in (the newest of a call replaces the older).
    pub fn take(&mut self, change: Change, now: tokio::time::Instant) {
        let (call, pending) = match change {
            Change::Put(record) => (record.call, Pending::Put(record)),
            Change::Gone(call) => (call, Pending::Gone),
            Change::Retire(calls) => {
                self.retire.extend(calls);
                return;
            }
        };
        let since = self.pending.get(&call).map_or(now, |(_, at)| *at);
        self.pending.insert(call, (pending, since));
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.retire.is_empty()
    }

    /// How long the oldest change has waited.
    pub fn lag(&self, now: tokio::time::Instant) -> Duration {
        self.pending
            .values()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .max()
            .unwrap_or_default()
    }

    /// Writes what waits, a batch at a time; returns how many changes were
    /// written, or the error that stopped it (what was not written waits).
    pub async fn flush(&mut self, redis: &mut Redis) -> Result<usize, String> {
        let mut written = 0;
        while !self.pending.is_empty() || !self.retire.is_empty() {
            let mut args: Vec<Vec<u8>> = vec![
                b"EVAL".to_vec(),
                WRITE.as_bytes().to_vec(),
                b"1".to_vec(),
                self.keys.stream.clone().into_bytes(),
                self.keys.prefix.clone().into_bytes(),
                self.ttl_ms.clone().into_bytes(),
                STREAM_MAXLEN.to_string().into_bytes(),
            ];
            let mut taken = Vec::new();
            let mut retired = 0;
            if !self.pending.is_empty() {
                let calls: Vec<u64> = self.pending.keys().take(BATCH).copied().collect();
                for call in calls {
                    self.seq += 1;
                    let (pending, _) = &self.pending[&call];
                    let (op, record) = match pending {
                        Pending::Put(record) => (
                            "put",
                            serde_json::to_vec(record).map_err(|e| e.to_string())?,
                        ),
                        Pending::Gone => ("gone", Vec::new()),
                    };
                    args.push(self.instance.clone().into_bytes());
                    args.push(call.to_string().into_bytes());
                    args.push(self.seq.to_string().into_bytes());
                    args.push(op.as_bytes().to_vec());
                    args.push(record);
                    taken.push(call);
                }
            } else {
                // Another instance's calls: after every write of ours.
                for (instance, call) in self.retire.iter().take(BATCH) {
                    self.seq += 1;
                    args.push(instance.clone().into_bytes());
                    args.push(call.to_string().into_bytes());
                    args.push(self.seq.to_string().into_bytes());
                    args.push(b"gone".to_vec());
                    args.push(Vec::new());
                    retired += 1;
                }
            }
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            match redis.command(&refs).await {
                Ok(Reply::Integer(_)) => {}
                Ok(other) => return Err(format!("unexpected reply {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
            for call in &taken {
                self.pending.remove(call);
            }
            self.retire.drain(..retired);
            written += taken.len() + retired;
        }
        Ok(written)
    }
}

/// Writes the changes of an active node: waits until the node is
/// active, then takes changes from `changes` and writes them; while Redis
/// fails, retries every `retry`. Ends when `changes` closes, after a last
/// flush (bounded by the Redis timeout).
pub async fn write_changes(
    mut writer: Writer,
    mut redis: Redis,
    mut changes: mpsc::Receiver<Change>,
    mut role: watch::Receiver<Role>,
    retry: Duration,
    metrics: ReplicationMetrics,
    resync: Arc<AtomicBool>,
) {
    if role.wait_for(|r| *r == Role::Active).await.is_err() {
        return;
    }
    // While Redis fails: when to try again.
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut open = true;
    while open || !writer.is_empty() {
        let lag = |writer: &Writer| {
            i64::try_from(writer.lag(tokio::time::Instant::now()).as_millis()).unwrap_or(i64::MAX)
        };
        if writer.is_empty() {
            match changes.recv().await {
                Some(change) => writer.take(change, tokio::time::Instant::now()),
                None => break,
            }
        } else if let Some(at) = retry_at
            && open
            && at > tokio::time::Instant::now()
        {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(change) => writer.take(change, tokio::time::Instant::now()),
                    None => open = false,
                },
                () = tokio::time::sleep_until(at) => {}
            }
            metrics.lag_ms.set(lag(&writer));
            continue;
        }
        while let Ok(change) = changes.try_recv() {
            writer.take(change, tokio::time::Instant::now());
        }
        if *role.borrow() != Role::Active {
            // The lease went to the other node, which carries on what
            // Redis had: nothing more of ours may overwrite it.
            return;
        }
        match writer.flush(&mut redis).await {
            Ok(n) => {
                metrics
                    .writes
                    .with_label_values(&["written"])
                    .inc_by(n as u64);
                if retry_at.take().is_some() {
                    info!("call replication writes to Redis again; writing every call up again");
                    resync.store(true, Ordering::Relaxed);
                }
            }
            Err(error) => {
                metrics.writes.with_label_values(&["failed"]).inc();
                if retry_at.is_none() {
                    warn!(%error, "call replication to Redis failed; calls go on here, the changes are retried");
                }
                retry_at = Some(tokio::time::Instant::now() + retry);
                if !open {
                    // Stopping, and Redis does not take them: they are lost.
                    break;
                }
            }
        }
        metrics.lag_ms.set(lag(&writer));
    }
}

/// The standby's copy of the active node's calls.
#[derive(Debug, Default)]
pub struct Mirror {
    /// By (instance, call): the newest seq and record.
    calls: HashMap<(String, u64), (u64, CallRecord)>,
    /// The last seq applied from the Stream, by instance.
    last: HashMap<String, u64>,
}

/// What a Stream entry asked of the mirror.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Taken in (or older than what the mirror holds).
    Ok,
    /// The instance's numbers skipped some: entries were lost (trimmed);
    /// read every key again.
    Gap,
}

impl Mirror {
    /// How many calls it holds.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Takes a key's value in (`"{seq} {record}"`); false if it does not
    /// parse.
    pub fn seed(&mut self, instance: &str, call: u64, value: &[u8]) -> bool {
        let Some((seq, record)) = parse_value(value) else {
            return false;
        };
        self.put(instance, call, seq, record);
        true
    }

    fn put(&mut self, instance: &str, call: u64, seq: u64, record: CallRecord) {
        let key = (instance.to_owned(), call);
        if self.calls.get(&key).is_none_or(|(s, _)| *s < seq) {
            self.calls.insert(key, (seq, record));
        }
    }

    /// Applies one Stream entry's fields.
    pub fn apply(&mut self, fields: &HashMap<&str, &[u8]>) -> Applied {
        let text = |name: &str| fields.get(name).and_then(|v| std::str::from_utf8(v).ok());
        let (Some(instance), Some(call), Some(seq), Some(op)) = (
            text("i"),
            text("c").and_then(|c| c.parse::<u64>().ok()),
            text("s").and_then(|s| s.parse::<u64>().ok()),
            text("o"),
        ) else {
            return Applied::Ok;
        };
        let last = self.last.insert(instance.to_owned(), seq);
        let gap = last.is_some_and(|last| seq > last + 1);
        match op {
            "put" => {
                if let Some(record) = fields
                    .get("r")
                    .and_then(|r| serde_json::from_slice::<CallRecord>(r).ok())
                {
                    self.put(instance, call, seq, record);
                }
            }
            _ => {
                self.calls.remove(&(instance.to_owned(), call));
            }
        }
        if gap { Applied::Gap } else { Applied::Ok }
    }

    /// Forgets everything (before seeding again).
    pub fn clear(&mut self) {
        self.calls.clear();
        self.last.clear();
    }

    /// Everything it holds, oldest call first.
    pub fn take(self) -> Vec<Mirrored> {
        let mut calls: Vec<Mirrored> = self
            .calls
            .into_iter()
            .map(|((instance, call), (_, record))| Mirrored {
                instance,
                call,
                record,
            })
            .collect();
        calls.sort_by(|a, b| (&a.instance, a.call).cmp(&(&b.instance, b.call)));
        calls
    }
}

fn parse_value(value: &[u8]) -> Option<(u64, CallRecord)> {
    let space = value.iter().position(|&b| b == b' ')?;
    let seq = std::str::from_utf8(&value[..space]).ok()?.parse().ok()?;
    let record = serde_json::from_slice(&value[space + 1..]).ok()?;
    Some((seq, record))
}

/// Reads every call key into `mirror`.
async fn seed(redis: &mut Redis, keys: &Keys, mirror: &mut Mirror) -> Result<(), String> {
    mirror.clear();
    let pattern = format!("{}*", keys.prefix);
    let mut cursor = b"0".to_vec();
    loop {
        let reply = redis
            .command(&[
                b"SCAN",
                &cursor,
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                b"500",
            ])
            .await
            .map_err(|e| e.to_string())?;
        let Reply::Array(Some(parts)) = reply else {
            return Err(format!("SCAN: unexpected reply {reply:?}"));
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(found))] = parts.as_slice() else {
            return Err("SCAN: unexpected reply".to_owned());
        };
        let found: Vec<Vec<u8>> = found
            .iter()
            .filter_map(|k| match k {
                Reply::Bulk(Some(k)) => Some(k.clone()),
                _ => None,
            })
            .collect();
        if !found.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(found.iter().map(Vec::as_slice));
            let values = redis.command(&args).await.map_err(|e| e.to_string())?;
            let Reply::Array(Some(values)) = values else {
                return Err("MGET: unexpected reply".to_owned());
            };
            for (key, value) in found.iter().zip(values) {
                let (Ok(key), Reply::Bulk(Some(value))) = (std::str::from_utf8(key), value) else {
                    continue;
                };
                if let Some((instance, call)) = keys.parse(key) {
                    mirror.seed(instance, call, &value);
                }
            }
        }
        if next.as_slice() == b"0" {
            return Ok(());
        }
        cursor.clone_from(next);
    }
}

/// Reads Stream entries for consumer group `group` (pending ones first
/// when `pending`), applies and acknowledges them; returns how many were
/// read and whether one showed a gap.
async fn read_entries(
    redis: &mut Redis,
    keys: &Keys,
    group: &str,
    mirror: &mut Mirror,
    block_ms: Option<u64>,
    pending: bool,
) -> Result<(usize, bool), String> {
    let block = block_ms.map(|ms| ms.to_string());
    let from: &[u8] = if pending { b"0" } else { b">" };
    let mut args: Vec<&[u8]> = vec![
        b"XREADGROUP",
        b"GROUP",
        group.as_bytes(),
        group.as_bytes(),
        b"COUNT",
        b"512",
    ];
    if let Some(block) = &block {
        args.push(b"BLOCK");
        args.push(block.as_bytes());
    }
    args.extend([b"STREAMS" as &[u8], keys.stream.as_bytes(), from]);
    let reply = redis.command(&args).await.map_err(|e| e.to_string())?;
    let streams = match reply {
        Reply::Array(None) | Reply::Bulk(None) => return Ok((0, false)),
        Reply::Array(Some(streams)) => streams,
        Reply::Error(e) => return Err(format!("XREADGROUP: {e}")),
        other => return Err(format!("XREADGROUP: unexpected reply {other:?}")),
    };
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut gap = false;
    for stream in streams {
        let Reply::Array(Some(parts)) = stream else {
            continue;
        };
        let Some(Reply::Array(Some(entries))) = parts.into_iter().nth(1) else {
            continue;
        };
        for entry in entries {
            let Reply::Array(Some(entry)) = entry else {
                continue;
            };
            let mut entry = entry.into_iter();
            let (Some(Reply::Bulk(Some(id))), Some(Reply::Array(Some(values)))) =
                (entry.next(), entry.next())
            else {
                continue;
            };
            let mut fields = HashMap::new();
            for pair in values.chunks(2) {
                if let [Reply::Bulk(Some(name)), Reply::Bulk(Some(value))] = pair
                    && let Ok(name) = std::str::from_utf8(name)
                {
                    fields.insert(name, value.as_slice());
                }
            }
            gap |= mirror.apply(&fields) == Applied::Gap;
            ids.push(id);
        }
    }
    if !ids.is_empty() {
        let mut args: Vec<&[u8]> = vec![b"XACK", keys.stream.as_bytes(), group.as_bytes()];
        args.extend(ids.iter().map(Vec::as_slice));
        redis.command(&args).await.map_err(|e| e.to_string())?;
    }
    Ok((ids.len(), gap))
}

/// Creates the consumer group (reading from now on), or keeps it.
async fn join_group(redis: &mut Redis, keys: &Keys, group: &str) -> Result<(), String> {
    match redis
        .command(&[
            b"XGROUP",
            b"CREATE",
            keys.stream.as_bytes(),
            group.as_bytes(),
            b"$",
            b"MKSTREAM",
        ])
        .await
    {
        Ok(Reply::Simple(_)) => Ok(()),
        Ok(Reply::Error(e)) if e.starts_with("BUSYGROUP") => Ok(()),
        Ok(other) => Err(format!("XGROUP CREATE: unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Says, for three renewal periods, that this standby holds a current
/// mirror (`{name}:standby`): the active node hands its calls over on a
/// drain only when one does.
async fn announce(redis: &mut Redis, keys: &Keys, me: &str, retry: Duration) -> Result<(), String> {
    let ttl = (retry * 3).as_millis().to_string();
    match redis
        .command(&[
            b"SET",
            keys.standby.as_bytes(),
            me.as_bytes(),
            b"PX",
            ttl.as_bytes(),
        ])
        .await
    {
        Ok(Reply::Simple(_)) => Ok(()),
        Ok(other) => Err(format!("SET: unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps a standby's mirror: joins the group, seeds, then follows the
/// Stream until asked for the calls (the node took over): reads to the
/// end and answers with everything it holds. Any failure starts over
/// (join, seed) after `retry`. While current, it says so
/// ([`announce`]).
pub async fn mirror_calls(
    mut redis: Redis,
    keys: Keys,
    group: String,
    mut asked: oneshot::Receiver<oneshot::Sender<Vec<Mirrored>>>,
    retry: Duration,
    metrics: ReplicationMetrics,
) {
    let mut mirror = Mirror::default();
    let mut synced = false;
    let mut complained = false;
    let mut announced: Option<tokio::time::Instant> = None;
    loop {
        if synced
            && announced.is_none_or(|at| at.elapsed() >= retry)
            && announce(&mut redis, &keys, &group, retry).await.is_ok()
        {
            announced = Some(tokio::time::Instant::now());
        }
        if !synced {
            let result = async {
                join_group(&mut redis, &keys, &group).await?;
                seed(&mut redis, &keys, &mut mirror).await?;
                // Delivered before, never acknowledged: read them again.
                while read_entries(&mut redis, &keys, &group, &mut mirror, None, true)
                    .await?
                    .0
                    > 0
                {}
                Ok::<(), String>(())
            }
            .await;
            match result {
                Ok(()) => {
                    synced = true;
                    complained = false;
                    info!(
                        calls = mirror.len(),
                        "standby: mirroring the active node's calls"
                    );
                }
                Err(error) => {
                    if !complained {
                        warn!(%error, "standby: cannot mirror the calls from Redis yet; retrying");
                        complained = true;
                    }
                }
            }
        }
        metrics.mirrored.set(mirror.len() as i64);
        let step = async {
            if synced {
                read_entries(&mut redis, &keys, &group, &mut mirror, Some(200), false).await
            } else {
                tokio::time::sleep(retry).await;
                Ok((0, false))
            }
        };
        tokio::select! {
            answer = &mut asked => {
                // Taking over: everything the dead node wrote is in the
                // Stream by now; read to its end (a failure leaves the
                // mirror as it is: the keys are read again first).
                if !synced {
                    let _ = seed(&mut redis, &keys, &mut mirror).await;
                }
                for _ in 0..10_000 {
                    match read_entries(&mut redis, &keys, &group, &mut mirror, None, false).await {
                        Ok((0, _)) | Err(_) => break,
                        Ok((_, true)) => {
                            let _ = seed(&mut redis, &keys, &mut mirror).await;
                        }
                        Ok(_) => {}
                    }
                }
                metrics.mirrored.set(0);
                // Active now: no longer a standby to hand calls to.
                let _ = redis
                    .command(&[
                        b"EVAL",
                        super::RELEASE.as_bytes(),
                        b"1",
                        keys.standby.as_bytes(),
                        group.as_bytes(),
                    ])
                    .await;
                if let Ok(answer) = answer {
                    let _ = answer.send(std::mem::take(&mut mirror).take());
                }
                return;
            }
            result = step => match result {
                Ok((_, false)) => {}
                Ok((_, true)) => {
                    warn!("standby: call changes were trimmed from the stream before it read them; reading every call again");
                    synced = false;
                }
                Err(error) => {
                    warn!(%error, "standby: reading the call changes failed; starting over");
                    synced = false;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(pairs: &[(&'a str, &'a [u8])]) -> HashMap<&'a str, &'a [u8]> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn keys_name_the_instance_and_call() {
        let keys = Keys::new("pair");
        assert_eq!(keys.parse("pair:call:sbc-a.17:42"), Some(("sbc-a.17", 42)));
        assert_eq!(keys.parse("pair:call:sbc-a.17:x"), None);
        assert_eq!(keys.parse("other:call:a:1"), None);
    }

    #[test]
    fn the_mirror_keeps_the_newest_and_forgets_ended_calls_and_sees_gaps() {
        let mut mirror = Mirror::default();
        // A record not in the format: nothing taken in.
        assert!(!mirror.seed("a.1", 1, b"7 {not json"));
        assert!(mirror.is_empty());
        let gone = fields(&[("i", b"a.1"), ("c", b"1"), ("s", b"8"), ("o", b"gone")]);
        assert_eq!(mirror.apply(&gone), Applied::Ok);
        let next = fields(&[("i", b"a.1"), ("c", b"2"), ("s", b"9"), ("o", b"gone")]);
        assert_eq!(mirror.apply(&next), Applied::Ok);
        let skipped = fields(&[("i", b"a.1"), ("c", b"3"), ("s", b"12"), ("o", b"gone")]);
        assert_eq!(
            mirror.apply(&skipped),
            Applied::Gap,
            "10 and 11 are missing"
        );
        let other = fields(&[("i", b"b.1"), ("c", b"3"), ("s", b"40"), ("o", b"gone")]);
        assert_eq!(mirror.apply(&other), Applied::Ok, "first of its instance");
    }
}
