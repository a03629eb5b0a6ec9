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
//! Runs on the relay thread, which owns it; no locks.

use std::collections::HashMap;

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

/// The XDP backend of [`FastPath`].
pub struct XdpFastPath {
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
    /// Takes over a loaded (and attached) program.
    pub fn new(xdp: XdpRelay) -> Self {
        Self {
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

    fn collect_stream(&mut self, stream: StreamId, counts: &mut Vec<FastCounts>) {
        for entry in self.installed.get(&stream).into_iter().flatten() {
            read(&self.xdp, &mut self.seen, stream, *entry, counts);
        }
    }
}
