//! Trunk health checks: an OPTIONS to each of a trunk's targets (its
//! address, or every address its DNS name resolved to) on its interval, and
//! the verdicts (`CoreEvent::TargetState` per target, `CoreEvent::TrunkState`
//! for the trunk: up while any target answers) when an answer (or its
//! absence) changes them. Routing tries trunks that fail their checks last,
//! and within a trunk, targets that fail theirs last.

use super::*;
use routing::TrunkTarget;

impl Core {
    /// Sends the health checks that are due (RFC 3261 §11: any response
    /// means the peer is alive; a timeout or transport error that it is not).
    pub(super) fn ping_trunks(&mut self, now: Instant) {
        for index in 0..self.trunks.len() {
            let trunk = &mut self.trunks[index];
            let (Some(every), Some(due)) = (trunk.ping_every, trunk.next_ping) else {
                continue;
            };
            if due > now || trunk.targets.is_empty() {
                continue;
            }
            trunk.next_ping = Some(now + every);
            let targets: Vec<TrunkTarget> = trunk.targets.clone();
            for target in targets {
                self.ping_target(now, index, &target);
            }
        }
    }

    fn ping_target(&mut self, now: Instant, index: usize, target: &TrunkTarget) {
        let peer = target.addr;
        if self.pings.values().any(|p| *p == (index, peer)) {
            return; // the previous one is still out
        }
        let transport = self.trunks[index].transport_to(target);
        let realm = self.trunks[index].realm;
        let Some(listener) = self.realm_listener(realm, transport, peer) else {
            return;
        };
        let addr = self.listeners[listener].info.public();
        let (branch, tag, call_id) = (self.ids.branch(), self.ids.tag(), self.ids.call_id());
        let uri = format!("sip:{}", host_port(peer));
        let bytes = build::request(
            &build::RequestHead {
                method: "OPTIONS",
                request_uri: &uri,
                via_sent_by: &sent_by(transport, addr),
                branch: &branch,
                max_forwards: 70,
                from: &format!("<sip:sbc@{}>;tag={tag}", host_port(addr)),
                to: &format!("<{uri}>"),
                call_id: &call_id,
                cseq: 1,
                route_set: &[],
                contact: Some(&contact_uri(transport, addr)),
            },
            None,
            &self.policy,
            &[],
            b"",
        );
        let Some(request) = self.parse_built(None, "OPTIONS health check", &bytes) else {
            return;
        };
        self.sip_event(realm, &request);
        if let Some(client) =
            self.start_client(now, request, ListenerId(listener), transport, peer, None)
        {
            self.pings.insert(client, (index, peer));
        }
    }

    /// A target's health check answered (`up`) or did not; the trunk is up
    /// while any of its targets is.
    pub(super) fn target_health(&mut self, trunk: usize, target: SocketAddr, up: bool) {
        let Some(state) = self.trunks.get_mut(trunk) else {
            return;
        };
        let Some(t) = state.targets.iter_mut().find(|t| t.addr == target) else {
            return; // no longer one of its targets
        };
        if t.up != Some(up) {
            t.up = Some(up);
            self.events.push_back(CoreEvent::TargetState {
                trunk: state.name.clone(),
                target,
                up,
            });
        }
        let trunk_up = state.targets.iter().any(|t| t.up == Some(true));
        let all_down = state.targets.iter().all(|t| t.up == Some(false));
        if trunk_up || all_down {
            self.trunk_health(trunk, trunk_up);
        }
    }

    pub(super) fn trunk_health(&mut self, trunk: usize, up: bool) {
        let Some(state) = self.trunks.get_mut(trunk) else {
            return;
        };
        if state.up != Some(up) {
            state.up = Some(up);
            self.events.push_back(CoreEvent::TrunkState {
                trunk: state.name.clone(),
                up,
            });
        }
    }

    /// The shell resolved the DNS name of trunk `name` (RFC 3263): these are
    /// its targets now, by ascending SRV priority. Targets it keeps keep
    /// their health and blocks; new ones are probed at once. An empty list
    /// (the name no longer resolves) is ignored: the last answer stays in
    /// use until a new one comes.
    pub fn set_trunk_targets(&mut self, now: Instant, name: &str, targets: Vec<TrunkTarget>) {
        let Some(index) = self
            .trunks
            .iter()
            .position(|t| !t.retired && t.name == name && t.dns_name.is_some())
        else {
            return;
        };
        if targets.is_empty() {
            return;
        }
        let trunk = &mut self.trunks[index];
        let same = trunk.targets.len() == targets.len()
            && trunk.targets.iter().zip(&targets).all(|(a, b)| {
                (a.addr, a.transport, a.priority, a.weight)
                    == (b.addr, b.transport, b.priority, b.weight)
            });
        if same {
            return;
        }
        trunk.set_targets(targets);
        let fresh: Vec<SocketAddr> = trunk.targets.iter().map(|t| t.addr).collect();
        self.events.push_back(CoreEvent::TrunkTargets {
            trunk: trunk.name.clone(),
            targets: fresh,
        });
        if trunk.ping_every.is_some() {
            trunk.next_ping = Some(now);
        }
        // Verdicts of targets gone no longer count.
        self.pings.retain(|_, (t, addr)| {
            *t != index || self.trunks[index].targets.iter().any(|x| x.addr == *addr)
        });
        let trunk = &self.trunks[index];
        if trunk.targets.iter().any(|t| t.up == Some(true)) {
            self.trunk_health(index, true);
        }
    }

    /// A call's INVITE to `target` of `trunk` timed out, could not be sent
    /// or got 503: it waits behind the trunk's other targets for
    /// `[dns] target_block_secs`, or for as long as the 503's Retry-After
    /// asked (RFC 3263 §4.3), at most [`MAX_RETRY_AFTER`]. A block time of
    /// zero turns blocking off, Retry-After included.
    pub(super) fn block_target(
        &mut self,
        now: Instant,
        trunk: usize,
        target: SocketAddr,
        retry_after: Option<Duration>,
    ) {
        if self.target_block.is_zero() {
            return;
        }
        let block = retry_after.map_or(self.target_block, |d| d.min(MAX_RETRY_AFTER));
        if let Some(t) = self
            .trunks
            .get_mut(trunk)
            .and_then(|s| s.targets.iter_mut().find(|t| t.addr == target))
        {
            t.blocked_until = Some(now + block);
        }
    }
}

/// The longest a 503's Retry-After blocks a target: a peer that asks for a
/// day is tried again within the hour.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delta-seconds of a Retry-After value (RFC 3261 §20.33:
/// `delta-seconds [comment] *(; retry-param)`); `None` when it has none or
/// says 0 (then the operator's block time applies).
pub(super) fn retry_after(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii_start();
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    let secs: u64 = std::str::from_utf8(&value[..digits.min(10)])
        .ok()?
        .parse()
        .ok()?;
    (secs > 0).then(|| Duration::from_secs(secs))
}
