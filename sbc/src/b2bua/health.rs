//! Trunk health checks: an OPTIONS to each trunk on its interval, and the
//! verdict (`CoreEvent::TrunkState`) when the answer (or its absence) changes
//! it. Routing tries trunks that fail their checks last.

use super::*;

impl Core {
    /// Sends the health checks that are due (RFC 3261 §11: any response
    /// means the peer is alive; a timeout or transport error that it is not).
    pub(super) fn ping_trunks(&mut self, now: Instant) {
        for index in 0..self.trunks.len() {
            let trunk = &mut self.trunks[index];
            let (Some(every), Some(due), Some(peer)) =
                (trunk.ping_every, trunk.next_ping, trunk.address)
            else {
                continue;
            };
            if due > now {
                continue;
            }
            trunk.next_ping = Some(now + every);
            if self.pings.values().any(|t| *t == index) {
                continue; // the previous one is still out
            }
            let Some(listener) = self.trunk_listener(index, peer) else {
                continue;
            };
            let transport = self.trunks[index].transport;
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
                continue;
            };
            self.sip_event(self.trunks[index].realm, &request);
            if let Some(client) =
                self.start_client(now, request, ListenerId(listener), transport, peer, None)
            {
                self.pings.insert(client, index);
            }
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
}
