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
//! Runs on the relay thread, which owns it; no locks.

use std::collections::HashMap;

use relay_common::{Endpoint, FlowAction, FlowKey};
use tracing::warn;

use super::command::{Leg, StreamId};
use super::flow::{FastCounts, FastFlow};
use super::userspace::FastPath;
use super::xdp::XdpRelay;

/// The XDP backend of [`FastPath`].
pub struct XdpFastPath {
    xdp: XdpRelay,
    /// The map keys installed per stream, with the leg each arrives on.
    installed: HashMap<StreamId, Vec<(FlowKey, Leg)>>,
    /// The program's totals last read per key (its counters are cumulative).
    seen: HashMap<FlowKey, (u64, u64)>,
}

impl XdpFastPath {
    /// Takes over a loaded (and attached) program.
    pub fn new(xdp: XdpRelay) -> Self {
        Self {
            xdp,
            installed: HashMap::new(),
            seen: HashMap::new(),
        }
    }
}

impl FastPath for XdpFastPath {
    fn update(&mut self, stream: StreamId, flows: &[FastFlow]) {
        let mut keys: Vec<(FlowKey, Leg)> = Vec::with_capacity(flows.len());
        for flow in flows {
            let key = FlowKey::new(flow.local.ip(), flow.local.port());
            // A muxed port lists RTP and RTCP with one key and one route.
            if keys.iter().any(|(k, _)| *k == key) {
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
                Ok(()) => keys.push((key, flow.leg)),
                // The flow stays on the userspace path, which is correct.
                Err(e) => warn!(%stream, error = %e, "XDP flow not installed; userspace relays it"),
            }
        }
        for (old, _) in self.installed.remove(&stream).unwrap_or_default() {
            if !keys.iter().any(|(k, _)| *k == old) {
                let _ = self.xdp.remove(&old);
                self.seen.remove(&old);
            }
        }
        if !keys.is_empty() {
            self.installed.insert(stream, keys);
        }
    }

    fn collect(&mut self, counts: &mut Vec<FastCounts>) {
        for (stream, keys) in &self.installed {
            for (key, leg) in keys {
                let Ok(Some(totals)) = self.xdp.counters(key) else {
                    continue;
                };
                let seen = self.seen.entry(*key).or_insert((0, 0));
                let packets = totals.packets.saturating_sub(seen.0);
                let bytes = totals.bytes.saturating_sub(seen.1);
                *seen = (totals.packets, totals.bytes);
                if packets > 0 {
                    counts.push(FastCounts {
                        stream: *stream,
                        leg: *leg,
                        packets,
                        bytes,
                    });
                }
            }
        }
    }
}
