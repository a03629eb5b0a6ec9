//! The XDP program as the userspace relay's fast path.
//!
//! The relay (the only place a source is ever learned) hands over the flows
//! that may bypass it: latched, routable and allowed by the stream's
//! directions ([`FastFlow`]). Each becomes one entry of the program's flow
//! map, keyed by the anchored local address: accept only from the latched
//! source, rewrite to `route.from -> route.to`. Packets the program passes up
//! (first packets, unknown flows, no neighbour...) still reach the relay's
//! sockets, so userspace stays correct on its own; the kernel only makes it
//! cheaper. The program's per-flow counters come back as deltas, so the
//! relay's counters and inactivity timeouts cover both paths.
//!
//! Counts are read from the maps, never estimated: a flow's last delta is
//! read just before its entry is removed (a stream released or changed) and
//! reported with the next collection, and a stream's own entries can be read
//! on demand ([`FastPath::collect_stream`]) so its final counters include
//! them. Each count carries the [`RealmTag`] of the leg it arrived on, taken
//! from the flow when it was installed.
//!
//! Adopted flows: after a restart with pinned maps the flow map holds the
//! previous process's flows, of calls this process does not know (calls are
//! not carried across a restart). They keep being forwarded, so those calls'
//! media goes on, until one has been idle for the inactivity timeout (its
//! counters stopped moving: the call ended), when it is removed. Their
//! local ports are kept from new calls meanwhile ([`FastPath::adopted`],
//! then [`FastPath::housekeeping`] gives them back); should a stream of
//! this process still latch on the same local address, it replaces the
//! flow. How many are held and how many expired is shared with the daemon
//! ([`AdoptedFlows`]) for its metrics.
//!
//! Runs on the relay thread, which owns it; no locks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relay_common::{Endpoint, FlowAction, FlowKey};
use tracing::warn;

use super::command::{Leg, RealmTag, StreamId};
use super::flow::{FastCounts, FastFlow};
use super::userspace::FastPath;
use super::xdp::XdpRelay;

/// One map entry installed for a stream.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FlowKey,
    /// The leg its packets arrive on, and that leg's tag.
    leg: Leg,
    realm: RealmTag,
}

/// The running totals of adopted flows, written by the relay thread and
/// read by the daemon for `sbc_xdp_adopted_flows*`.
#[derive(Debug, Default)]
pub struct AdoptedFlows {
    /// Adopted flows still forwarded.
    pub held: AtomicU64,
    /// Adopted flows removed because they went idle.
    pub expired: AtomicU64,
}

/// An adopted flow: its packet total when last read, and since when that
/// total has not moved.
#[derive(Debug, Clone, Copy)]
struct Orphan {
    packets: u64,
    idle_since: Instant,
}

/// Most flows read from a pinned map at start: the map's own size, so the
/// read is bounded by what the kernel can hold.
const ADOPT_LIMIT: usize = relay_common::MAX_FLOWS as usize;

/// The local address a flow key names (the anchored address and port).
fn local_addr(key: &FlowKey) -> std::net::SocketAddr {
    std::net::SocketAddr::new(key.ip(), key.port())
}

/// How often adopted flows are checked for idleness.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The relay thread's clock: this is an IO shell.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// The XDP backend of [`FastPath`].
pub struct XdpFastPath {
    /// Flows found in the (pinned) map at start that no stream owns.
    adopted: HashMap<FlowKey, Orphan>,
    /// How long an adopted flow may stay idle before it is removed.
    adopted_timeout: Duration,
    adopted_counts: Arc<AdoptedFlows>,
    /// When the adopted flows are next checked (`None`: there are none).
    next_sweep: Option<Instant>,
    xdp: XdpRelay,
    /// The map entries installed per stream.
    installed: HashMap<StreamId, Vec<Entry>>,
    /// The program's totals last read per key (its counters are cumulative).
    seen: HashMap<FlowKey, (u64, u64)>,
    /// Deltas read from entries just before they were removed, for the next
    /// collection.
    removed: Vec<FastCounts>,
}

impl XdpFastPath {
    /// Takes over a loaded (and attached) program. Flows already in its map
    /// (pinned by a previous process) are adopted: forwarded until idle for
    /// `adopted_timeout`, counted in `adopted_counts`.
    pub fn new(
        xdp: XdpRelay,
        adopted_timeout: Duration,
        adopted_counts: Arc<AdoptedFlows>,
    ) -> Self {
        let start = now();
        let adopted: HashMap<FlowKey, Orphan> = match xdp.flow_keys(ADOPT_LIMIT) {
            Ok(keys) => keys
                .into_iter()
                .map(|key| {
                    let packets = xdp.counters(&key).ok().flatten().map_or(0, |c| c.packets);
                    (
                        key,
                        Orphan {
                            packets,
                            idle_since: start,
                        },
                    )
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "flows of the pinned XDP map not readable; none adopted");
                HashMap::new()
            }
        };
        adopted_counts
            .held
            .store(adopted.len() as u64, Ordering::Relaxed);
        if !adopted.is_empty() {
            tracing::info!(
                flows = adopted.len(),
                "adopted the XDP flows a previous process left pinned: forwarded until idle"
            );
        }
        Self {
            next_sweep: (!adopted.is_empty()).then(|| start + SWEEP_EVERY),
            adopted,
            adopted_timeout,
            adopted_counts,
            xdp,
            installed: HashMap::new(),
            seen: HashMap::new(),
            removed: Vec::new(),
        }
    }
}

/// Appends what `entry` of `stream` relayed since it was last read (`seen`
/// holds the totals of that read).
fn read(
    xdp: &XdpRelay,
    seen: &mut HashMap<FlowKey, (u64, u64)>,
    stream: StreamId,
    entry: Entry,
    counts: &mut Vec<FastCounts>,
) {
    let Ok(Some(totals)) = xdp.counters(&entry.key) else {
        return;
    };
    let seen = seen.entry(entry.key).or_insert((0, 0));
    let packets = totals.packets.saturating_sub(seen.0);
    let bytes = totals.bytes.saturating_sub(seen.1);
    *seen = (totals.packets, totals.bytes);
    if packets > 0 {
        counts.push(FastCounts {
            stream,
            leg: entry.leg,
            realm: entry.realm,
            packets,
            bytes,
        });
    }
}

impl XdpFastPath {
    /// Removes the adopted flows idle for the timeout (their call ended)
    /// and returns their keys; the others' packet totals are refreshed.
    fn sweep_adopted(&mut self, now: Instant) -> Vec<FlowKey> {
        if self.adopted.is_empty() {
            return Vec::new();
        }
        let mut expired = Vec::new();
        for (key, orphan) in &mut self.adopted {
            let packets = self
                .xdp
                .counters(key)
                .ok()
                .flatten()
                .map_or(0, |c| c.packets);
            if packets != orphan.packets {
                *orphan = Orphan {
                    packets,
                    idle_since: now,
                };
            } else if now.saturating_duration_since(orphan.idle_since) >= self.adopted_timeout {
                expired.push(*key);
            }
        }
        for key in &expired {
            self.adopted.remove(key);
            let _ = self.xdp.remove(key);
        }
        self.adopted_counts
            .held
            .store(self.adopted.len() as u64, Ordering::Relaxed);
        self.adopted_counts
            .expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        expired
    }
}

impl FastPath for XdpFastPath {
    fn update(&mut self, stream: StreamId, flows: &[FastFlow]) {
        let mut entries: Vec<Entry> = Vec::with_capacity(flows.len());
        for flow in flows {
            let key = FlowKey::new(flow.local.ip(), flow.local.port());
            // A muxed port lists RTP and RTCP with one key and one route.
            if entries.iter().any(|e| e.key == key) {
                continue;
            }
            let endpoint = |a: std::net::SocketAddr| Endpoint {
                ip: a.ip(),
                port: a.port(),
            };
            // An adopted flow's counters are the old call's: start afresh.
            if self.adopted.remove(&key).is_some() {
                let _ = self.xdp.remove(&key);
                self.adopted_counts
                    .held
                    .store(self.adopted.len() as u64, Ordering::Relaxed);
            }
            let action = FlowAction::latched(
                endpoint(flow.source),
                endpoint(flow.route.from),
                endpoint(flow.route.to),
                0,
            );
            match self.xdp.install(&key, &action) {
                Ok(()) => entries.push(Entry {
                    key,
                    leg: flow.leg,
                    realm: flow.realm,
                }),
                // The flow stays on the userspace path, which is correct.
                Err(e) => warn!(%stream, error = %e, "XDP flow not installed; userspace relays it"),
            }
        }
        for old in self.installed.remove(&stream).unwrap_or_default() {
            if !entries.iter().any(|e| e.key == old.key) {
                read(&self.xdp, &mut self.seen, stream, old, &mut self.removed);
                let _ = self.xdp.remove(&old.key);
                self.seen.remove(&old.key);
            }
        }
        if !entries.is_empty() {
            self.installed.insert(stream, entries);
        }
    }

    fn collect(&mut self, counts: &mut Vec<FastCounts>) {
        counts.append(&mut self.removed);
        for (stream, entries) in &self.installed {
            for entry in entries {
                read(&self.xdp, &mut self.seen, *stream, *entry, counts);
            }
        }
    }

    fn next_housekeeping(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn adopted(&mut self) -> Vec<std::net::SocketAddr> {
        self.adopted.keys().map(local_addr).collect()
    }

    fn housekeeping(&mut self, now: Instant) -> Vec<std::net::SocketAddr> {
        let expired = self.sweep_adopted(now);
        self.next_sweep = (!self.adopted.is_empty()).then(|| now + SWEEP_EVERY);
        expired.iter().map(local_addr).collect()
    }

    fn collect_stream(&mut self, stream: StreamId, counts: &mut Vec<FastCounts>) {
        for entry in self.installed.get(&stream).into_iter().flatten() {
            read(&self.xdp, &mut self.seen, stream, *entry, counts);
        }
    }
}
