//! What the IO shell reads of the core: counts for gauges, and a snapshot
//! of each call's legs for the admin `/calls` view (built on demand, never
//! kept; `admin` renders it).

use super::*;

/// One call up, as the admin view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSnapshot<'a> {
    /// The core's number for the call (stable while it is up).
    pub id: u64,
    /// `setup`, `answered` (2xx sent, no ACK yet), `confirmed` or `ending`.
    pub phase: &'static str,
    /// Since the INVITE arrived.
    pub age: Duration,
    /// The configured `[[route]]` that placed it.
    pub route: &'a str,
    /// The trunk of leg B, once chosen.
    pub trunk: Option<&'a str>,
    /// The caller's leg.
    pub a: LegSnapshot<'a>,
    /// The callee's leg, once started.
    pub b: Option<LegSnapshot<'a>>,
    /// The media streams anchored for it.
    pub streams: Vec<u64>,
}

/// One leg of a call up. The peer's address is internal: only the admin
/// listener shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegSnapshot<'a> {
    /// Its realm (`None` if a reload removed the realm).
    pub realm: Option<&'a str>,
    /// UDP or TCP.
    pub transport: Transport,
    /// Where its signaling goes.
    pub peer: SocketAddr,
    /// This leg's own Call-ID.
    pub call_id: &'a str,
}

/// A phone registered through an access realm, as the admin view shows
/// it (internal addresses: only the admin listener shows them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationSnapshot<'a> {
    /// The access realm.
    pub realm: &'a str,
    /// The address-of-record.
    pub aor: &'a str,
    /// The phone's Contact URI.
    pub contact: &'a str,
    /// The transport of the flow it registered on.
    pub transport: Transport,
    /// Where its REGISTER came from (where it is reached).
    pub source: SocketAddr,
    /// Until the phone's registration ends.
    pub expires_in: Duration,
    /// Until the registrar's binding ends (`None`: not confirmed).
    pub registrar_expires_in: Option<Duration>,
}

impl Core {
    /// The phones registered, by realm and AOR.
    pub fn registrations(&self, now: Instant) -> Vec<RegistrationSnapshot<'_>> {
        let mut list: Vec<RegistrationSnapshot<'_>> = self
            .bindings
            .by_id
            .values()
            .map(|b| RegistrationSnapshot {
                realm: self.realms.get(b.realm).map_or("", |r| r.name.as_str()),
                aor: &b.aor,
                contact: &b.contact,
                transport: b.flow.transport,
                source: b.flow.peer,
                expires_in: b.expires_at.saturating_duration_since(now),
                registrar_expires_in: b.registrar_until.map(|u| u.saturating_duration_since(now)),
            })
            .collect();
        list.sort_by(|a, b| (a.realm, a.aor, a.contact).cmp(&(b.realm, b.aor, b.contact)));
        list
    }

    /// Calls up now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The name and media address of the realm with this index (the index
    /// a realm keeps for the life of the process, which media totals are
    /// tagged with); `None` past the last realm.
    pub fn realm_media(&self, index: usize) -> Option<(&str, &[IpAddr])> {
        self.realms
            .get(index)
            .map(|r| (r.name.as_str(), r.media_addresses.as_slice()))
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

    /// Phones registered (bindings the registrar confirmed) per realm.
    pub fn registrations_per_realm(&self) -> Vec<(String, usize)> {
        self.realms
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), self.bindings.count(i)))
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

    /// The calls up, by id (for the admin `/calls` view: it shows both
    /// legs' addresses).
    pub fn calls(&self, now: Instant) -> Vec<CallSnapshot<'_>> {
        let mut calls: Vec<&Call> = self.calls.values().map(|c| &**c).collect();
        calls.sort_by_key(|c| c.id);
        fn leg<'a>(l: &'a LegState, realms: &'a [RealmInfo]) -> LegSnapshot<'a> {
            LegSnapshot {
                realm: realms.get(l.realm).map(|r| r.name.as_str()),
                transport: l.transport,
                peer: l.peer,
                call_id: l.text.get(Part::CallId),
            }
        }
        let realms = &self.realms;
        calls
            .into_iter()
            .map(|c| CallSnapshot {
                id: c.id,
                phase: match c.phase {
                    Phase::Setup => "setup",
                    Phase::Answered => "answered",
                    Phase::Confirmed => "confirmed",
                    Phase::Ending => "ending",
                },
                age: now.saturating_duration_since(c.started),
                route: &c.setup.plan.route,
                trunk: c
                    .trunk
                    .and_then(|t| self.trunks.get(t))
                    .map(|t| t.name.as_str()),
                a: leg(&c.a, realms),
                b: c.b.as_ref().map(|b| leg(b, realms)),
                streams: c.media.streams.iter().flatten().map(|(s, _)| s.0).collect(),
            })
            .collect()
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
    pub(crate) sent_from: usize,
    pub(crate) timers: usize,
    pub(crate) transactions: usize,
    pub(crate) answered_once: usize,
    pub(crate) answered_few: usize,
    /// Calls counted per user, legs per media address.
    pub(crate) user_calls: usize,
    pub(crate) media_load: usize,
    pub(crate) untrusted: UntrustedLoad,
    /// Bindings, REGISTERs at the registrar, keepalives in flight.
    pub(crate) bindings: (usize, usize, usize),
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
            sent_from: self.sent_from.len(),
            timers: self.timers.len(),
            transactions: self.tx.len(),
            answered_once: self.answered_once.len(),
            answered_few: self.answered_few.len(),
            user_calls: self.user_calls.len(),
            media_load: self.media_load.len(),
            untrusted: self.untrusted_load(),
            bindings: self.bindings.sizes(),
        }
    }
}
