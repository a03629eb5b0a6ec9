//! What the IO shell reads of the core: counts for gauges, and the `/calls`
//! JSON view (a snapshot of each call's legs, built on demand, never kept).

use super::*;

/// One call as `/calls` lists it.
#[derive(serde::Serialize)]
pub(super) struct CallView<'a> {
    pub(super) id: u64,
    pub(super) phase: &'static str,
    pub(super) age_secs: u64,
    pub(super) route: &'a str,
    pub(super) trunk: Option<&'a str>,
    pub(super) a: LegView<'a>,
    pub(super) b: Option<LegView<'a>>,
    pub(super) streams: Vec<u64>,
}

/// One leg of a call as `/calls` lists it (the peer's address is internal:
/// shown only on the admin listener).
#[derive(serde::Serialize)]
pub(super) struct LegView<'a> {
    pub(super) realm: Option<&'a str>,
    pub(super) transport: &'static str,
    pub(super) peer: SocketAddr,
    pub(super) call_id: &'a str,
}

impl Core {
    /// Calls up now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The name and media address of the realm with this index (the index
    /// a realm keeps for the life of the process, which media totals are
    /// tagged with); `None` past the last realm.
    pub fn realm_media(&self, index: usize) -> Option<(&str, IpAddr)> {
        self.realms
            .get(index)
            .map(|r| (r.name.as_str(), r.media_address))
    }

    /// Calls up per realm of their A leg.
    pub fn calls_per_realm(&self) -> Vec<(String, usize)> {
        self.realms
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    r.name.clone(),
                    self.calls.values().filter(|c| c.a.realm == i).count(),
                )
            })
            .collect()
    }

    /// Per configured trunk, whether the core would use it now: not marked
    /// down by its health check (unchecked counts as usable).
    pub fn trunks_usable(&self) -> Vec<(String, bool)> {
        self.trunks
            .iter()
            .filter(|t| !t.retired)
            .map(|t| (t.name.clone(), t.up != Some(false)))
            .collect()
    }

    /// Calls up per trunk.
    pub fn calls_per_trunk(&self) -> Vec<(String, u32)> {
        self.trunks
            .iter()
            .map(|t| (t.name.clone(), t.active))
            .collect()
    }

    /// Open SIP transactions.
    pub fn transactions(&self) -> usize {
        self.tx.len()
    }

    /// A JSON view of the calls up (for the admin `/calls` endpoint only:
    /// it shows both legs' addresses).
    pub fn calls_json(&self, now: Instant) -> Vec<u8> {
        let mut calls: Vec<&Call> = self.calls.values().map(|c| &**c).collect();
        calls.sort_by_key(|c| c.id);
        let realms = &self.realms;
        fn leg<'a>(l: &'a LegState, realms: &'a [RealmInfo]) -> LegView<'a> {
            LegView {
                realm: realms.get(l.realm).map(|r| r.name.as_str()),
                transport: match l.transport {
                    Transport::Udp => "UDP",
                    Transport::Tcp => "TCP",
                },
                peer: l.peer,
                call_id: l.text.get(Part::CallId),
            }
        }
        let views: Vec<CallView<'_>> = calls
            .into_iter()
            .map(|c| CallView {
                id: c.id,
                phase: match c.phase {
                    Phase::Setup => "setup",
                    Phase::Answered => "answered",
                    Phase::Confirmed => "confirmed",
                    Phase::Ending => "ending",
                },
                age_secs: now.saturating_duration_since(c.started).as_secs(),
                route: &c.plan.route,
                trunk: c
                    .trunk
                    .and_then(|t| self.trunks.get(t))
                    .map(|t| t.name.as_str()),
                a: leg(&c.a, realms),
                b: c.b.as_ref().map(|b| leg(b, realms)),
                streams: c.streams.iter().flatten().map(|(s, _)| s.0).collect(),
            })
            .collect();
        // Plain structs of borrowed fields cannot fail to serialize.
        serde_json::to_vec(&views).unwrap_or_default()
    }
}

/// The size of each of the core's tables: what a finished simulation
/// checks is all zero (nothing of any call, transaction or source left).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub(crate) calls: usize,
    pub(crate) dialogs: usize,
    pub(crate) servers: usize,
    pub(crate) clients: usize,
    pub(crate) streams: usize,
    pub(crate) pings: usize,
    pub(crate) routes: usize,
    pub(crate) timers: usize,
    pub(crate) transactions: usize,
    pub(crate) answered_once: usize,
    pub(crate) untrusted: UntrustedLoad,
}

#[cfg(test)]
impl Core {
    pub(crate) fn census(&self) -> Census {
        Census {
            calls: self.calls.len(),
            dialogs: self.dialogs.len(),
            servers: self.servers.len(),
            clients: self.clients.len(),
            streams: self.streams.len(),
            pings: self.pings.len(),
            routes: self.routes_of.len(),
            timers: self.timers.len(),
            transactions: self.tx.len(),
            answered_once: self.answered_once.len(),
            untrusted: self.untrusted_load(),
        }
    }
}
