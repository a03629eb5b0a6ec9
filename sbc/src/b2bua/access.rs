//! Access realms: phones behind NAT register through the SBC to a registrar
//! trunk and receive calls through it (the role of a "mid-registrar").
//!
//! Owns: the bindings (address-of-record, the phone's Contact, the flow it
//! registered on, both expiries), the REGISTERs relayed to the registrar,
//! the keepalive OPTIONS to UDP bindings, and the timers of all three.
//!
//! How a REGISTER is handled:
//! * The registrar sees only the SBC: its REGISTER has our Via, a Call-ID,
//!   From tag and CSeq of the binding's own, and a Contact that is a token
//!   of the binding at the SBC's address on the registrar's realm. The
//!   Request-URI, the address-of-record and the phone's credentials
//!   (`Authorization`) pass unchanged, so digest authentication works end
//!   to end: the SBC never needs a password.
//! * Registration throttling: the phone is given at most
//!   `phone_expires_secs` (to keep its NAT binding open), the registrar is
//!   asked for `registrar_expires_secs`, and a refresh from the same flow
//!   for the same Contact, while the registrar's binding outlives what the
//!   phone is granted, is answered by the SBC itself. Any other REGISTER
//!   (a new binding, a moved flow, an expiring registrar binding, a
//!   removal) goes to the registrar, so it authenticates every change.
//! * A phone whose Contact names a private address is reached where its
//!   REGISTER came from (the flow: listener, transport, source, connection).
//! * A binding whose phone stops refreshing, or stops answering the
//!   keepalive OPTIONS (UDP), is removed and de-registered (best effort:
//!   the de-REGISTER carries the phone's last credentials, which a
//!   registrar that challenges again will refuse; its binding then lapses
//!   at its own expiry, and calls to it meanwhile get 480 here).
//!
//! May not: route calls (the core asks [`Bindings::by_token`] for a call
//! to a binding's token, and [`Bindings::on_flow`] whether a caller is
//! registered), or see the registrar's or the phone's addresses in any
//! message to the other side.

use super::*;

/// What every binding's token starts with: a call to a token whose
/// binding is gone is answered 480 here, never routed on.
const TOKEN_PREFIX: &str = "reg-";

/// Whether `user` (a Request-URI user part) has the form of a binding's
/// token.
pub(super) fn is_token(user: &[u8]) -> bool {
    user.strip_prefix(TOKEN_PREFIX.as_bytes())
        .is_some_and(|hex| hex.len() == 16 && hex.iter().all(u8::is_ascii_hexdigit))
}

/// How long a binding the registrar has not confirmed yet (a REGISTER
/// challenged, or on its way) is kept for the phone's retry.
const UNCONFIRMED: Duration = Duration::from_secs(32);

/// A refresh is answered by the SBC only while the registrar's binding
/// outlives the phone's new expiry by this much.
const REGISTRAR_MARGIN: Duration = Duration::from_secs(30);

/// Where a phone is reached: the flow its REGISTER came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Flow {
    pub(super) listener: ListenerId,
    pub(super) transport: Transport,
    pub(super) peer: SocketAddr,
    pub(super) connection: Option<ConnectionId>,
}

/// One phone's registration of one Contact for one address-of-record.
#[derive(Debug)]
pub(super) struct Binding {
    /// The user part of the SBC's Contact at the registrar: how a call to
    /// this binding is recognised. 16 random hex digits.
    pub(super) token: String,
    /// The access realm.
    pub(super) realm: usize,
    /// The address-of-record (the To URI of the phone's REGISTER).
    pub(super) aor: String,
    /// The phone's Contact URI (the Request-URI of calls to it).
    pub(super) contact: String,
    pub(super) flow: Flow,
    /// When the phone's registration ends.
    pub(super) expires_at: Instant,
    /// When the registrar's binding ends; `None` until it confirmed one.
    pub(super) registrar_until: Option<Instant>,
    /// The binding's own REGISTER dialog towards the registrar.
    pub(super) call_id: String,
    pub(super) from_tag: String,
    pub(super) cseq: u32,
    /// The phone's last credentials, for the de-REGISTER.
    pub(super) credentials: Vec<(String, Vec<u8>)>,
    /// The next keepalive OPTIONS (UDP bindings of realms that ping).
    pub(super) next_ping: Option<Instant>,
}

impl Binding {
    fn deadline(&self) -> Instant {
        self.next_ping
            .map_or(self.expires_at, |ping| ping.min(self.expires_at))
    }
}

/// A REGISTER at the registrar, waiting for its final response.
#[derive(Debug)]
pub(super) struct Relayed {
    /// The phone's transaction and request (`None`: the SBC's own
    /// de-REGISTER of a dead binding).
    pub(super) phone: Option<(ServerId, Message)>,
    pub(super) binding: u64,
    /// What the phone asked for (0: removal).
    pub(super) asked: u32,
}

/// Every binding of every access realm.
#[derive(Debug, Default)]
pub(super) struct Bindings {
    pub(super) by_id: IdMap<u64, Binding>,
    tokens: HashMap<String, u64>,
    /// (realm, AOR, phone Contact) → binding.
    keys: HashMap<(usize, String, String), u64>,
    /// (realm, AOR) → its bindings: caps, listings and `*` removals look
    /// at one AOR's, never at every binding.
    aors: HashMap<(usize, String), Vec<u64>>,
    /// Bindings per realm index, confirmed or not (the realm's cap).
    per_realm: HashMap<usize, usize>,
    /// Confirmed bindings per realm index (the gauge).
    confirmed: HashMap<usize, usize>,
    /// Confirmed bindings per (realm, source): who may call out.
    flows: HashMap<(usize, SocketAddr), usize>,
    /// Bindings per (realm, source IP), confirmed or not (the per-source
    /// cap).
    sources: HashMap<(usize, IpAddr), usize>,
    /// The bindings registered over each TCP connection: they go when it
    /// closes.
    connections: HashMap<ConnectionId, Vec<u64>>,
    pub(super) relayed: IdMap<ClientId, Relayed>,
    /// Keepalive OPTIONS in flight → binding.
    pub(super) pings: IdMap<ClientId, u64>,
    /// Deadlines, lazily deleted: an entry whose binding's deadline moved
    /// is filed again when it comes up.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    /// Bumped by every change worth saving ([`Core::bindings_generation`]).
    generation: u64,
}

/// A binding as it is saved across a restart ([`Core::export_bindings`]):
/// what the registrar knows (token, REGISTER dialog) and where the phone is.
/// Only UDP bindings the registrar confirmed are saved: a TCP connection
/// does not outlive the process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindingRecord {
    /// The access realm's name.
    pub realm: String,
    /// The address of the listener the phone registered on.
    pub listener: SocketAddr,
    /// The phone's source address.
    pub source: SocketAddr,
    /// The address-of-record.
    pub aor: String,
    /// The phone's Contact URI.
    pub contact: String,
    /// The user part of the SBC's Contact at the registrar.
    pub token: String,
    /// Seconds left of the phone's registration when saved.
    pub expires_secs: u64,
    /// Seconds left of the registrar's binding when saved.
    pub registrar_secs: u64,
    /// The binding's REGISTER dialog towards the registrar.
    pub call_id: String,
    /// Its From tag.
    pub from_tag: String,
    /// Its last CSeq.
    pub cseq: u32,
    /// The phone's last credentials (header name, value), for the
    /// de-REGISTER.
    pub credentials: Vec<(String, String)>,
}

impl Bindings {
    /// The binding a call to `user` (the user part of a Request-URI) is for.
    pub(super) fn by_token(&self, user: &[u8]) -> Option<&Binding> {
        let user = std::str::from_utf8(user).ok()?;
        self.tokens.get(user).and_then(|id| self.by_id.get(id))
    }

    /// Whether some binding of `realm` was registered from `peer`.
    pub(super) fn on_flow(&self, realm: usize, peer: SocketAddr) -> bool {
        self.flows.contains_key(&(realm, peer))
    }

    /// Confirmed bindings of a realm index.
    pub(super) fn count(&self, realm: usize) -> usize {
        self.confirmed.get(&realm).copied().unwrap_or(0)
    }

    /// The bindings of one AOR.
    fn of_aor(&self, realm: usize, aor: &str) -> &[u64] {
        self.aors
            .get(&(realm, aor.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Counts a binding of `realm` from `peer` in (`add`) or out of the
    /// confirmed indexes.
    fn count_confirmed(&mut self, realm: usize, peer: SocketAddr, add: bool) {
        if add {
            *self.confirmed.entry(realm).or_default() += 1;
            *self.flows.entry((realm, peer)).or_default() += 1;
        } else {
            decrement(&mut self.confirmed, &realm);
            decrement(&mut self.flows, &(realm, peer));
        }
    }

    /// Sets when the registrar's binding of `id` ends (`None`: not, or no
    /// longer, confirmed), keeping the indexes.
    pub(super) fn set_registrar_until(&mut self, id: u64, until: Option<Instant>) {
        let Some(b) = self.by_id.get_mut(&id) else {
            return;
        };
        let was = b.registrar_until.is_some();
        b.registrar_until = until;
        let (realm, peer) = (b.realm, b.flow.peer);
        match (was, until.is_some()) {
            (false, true) => self.count_confirmed(realm, peer, true),
            (true, false) => self.count_confirmed(realm, peer, false),
            _ => {}
        }
        self.generation += 1;
    }

    /// Moves binding `id` to `flow` (a phone whose NAT rebound).
    fn set_flow(&mut self, id: u64, flow: Flow) {
        let Some(b) = self.by_id.get_mut(&id) else {
            return;
        };
        let (realm, old) = (b.realm, b.flow);
        let confirmed = b.registrar_until.is_some();
        b.flow = flow;
        if confirmed && old.peer != flow.peer {
            self.count_confirmed(realm, old.peer, false);
            self.count_confirmed(realm, flow.peer, true);
        }
        self.index_flow(realm, id, &old, false);
        self.index_flow(realm, id, &flow, true);
    }

    /// Counts binding `id` on `flow` in (`add`) or out of the per-source
    /// and per-connection indexes.
    fn index_flow(&mut self, realm: usize, id: u64, flow: &Flow, add: bool) {
        let source = (realm, flow.peer.ip());
        if add {
            *self.sources.entry(source).or_default() += 1;
        } else {
            decrement(&mut self.sources, &source);
        }
        let Some(connection) = flow.connection else {
            return;
        };
        if add {
            self.connections.entry(connection).or_default().push(id);
        } else if let Some(ids) = self.connections.get_mut(&connection) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.connections.remove(&connection);
            }
        }
    }

    /// Bindings of `realm` registered from `ip`.
    fn of_source(&self, realm: usize, ip: IpAddr) -> usize {
        self.sources.get(&(realm, ip)).copied().unwrap_or(0)
    }

    /// The bindings registered over `connection`.
    pub(super) fn on_connection(&self, connection: ConnectionId) -> Vec<u64> {
        self.connections
            .get(&connection)
            .cloned()
            .unwrap_or_default()
    }

    fn insert(&mut self, binding: Binding) -> u64 {
        self.generation += 1;
        self.next_id += 1;
        let id = self.next_id;
        self.tokens.insert(binding.token.clone(), id);
        self.keys.insert(
            (binding.realm, binding.aor.clone(), binding.contact.clone()),
            id,
        );
        self.aors
            .entry((binding.realm, binding.aor.clone()))
            .or_default()
            .push(id);
        *self.per_realm.entry(binding.realm).or_default() += 1;
        if binding.registrar_until.is_some() {
            self.count_confirmed(binding.realm, binding.flow.peer, true);
        }
        self.index_flow(binding.realm, id, &binding.flow, true);
        self.timers.push(Reverse((binding.deadline(), id)));
        self.by_id.insert(id, binding);
        id
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Binding> {
        let binding = self.by_id.remove(&id)?;
        self.generation += 1;
        self.tokens.remove(&binding.token);
        self.keys
            .remove(&(binding.realm, binding.aor.clone(), binding.contact.clone()));
        let aor = (binding.realm, binding.aor.clone());
        if let Some(ids) = self.aors.get_mut(&aor) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.aors.remove(&aor);
            }
        }
        decrement(&mut self.per_realm, &binding.realm);
        if binding.registrar_until.is_some() {
            self.count_confirmed(binding.realm, binding.flow.peer, false);
        }
        self.index_flow(binding.realm, id, &binding.flow, false);
        Some(binding)
    }

    /// Files binding `id`'s (changed) deadline; its state changed too.
    fn file(&mut self, id: u64) {
        self.generation += 1;
        if let Some(b) = self.by_id.get(&id) {
            self.timers.push(Reverse((b.deadline(), id)));
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The bindings whose deadline has come (each once).
    fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match self.by_id.get(&id) {
                Some(b) if b.deadline() <= now && !due.contains(&id) => due.push(id),
                // Moved later: file it again (once per entry popped).
                Some(b) if b.deadline() > at => self.timers.push(Reverse((b.deadline(), id))),
                _ => {}
            }
        }
        due
    }

    /// The table sizes, for the simulations' leak check.
    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize, usize) {
        // The indexes agree with a scan of every binding.
        let mut per_realm: HashMap<usize, usize> = HashMap::new();
        let mut confirmed: HashMap<usize, usize> = HashMap::new();
        let mut flows: HashMap<(usize, SocketAddr), usize> = HashMap::new();
        for b in self.by_id.values() {
            *per_realm.entry(b.realm).or_default() += 1;
            if b.registrar_until.is_some() {
                *confirmed.entry(b.realm).or_default() += 1;
                *flows.entry((b.realm, b.flow.peer)).or_default() += 1;
            }
        }
        assert_eq!(per_realm, self.per_realm, "bindings per realm");
        assert_eq!(confirmed, self.confirmed, "confirmed bindings per realm");
        assert_eq!(flows, self.flows, "confirmed bindings per flow");
        let mut sources: HashMap<(usize, IpAddr), usize> = HashMap::new();
        let mut connections: HashMap<ConnectionId, Vec<u64>> = HashMap::new();
        for (id, b) in &self.by_id {
            *sources.entry((b.realm, b.flow.peer.ip())).or_default() += 1;
            if let Some(c) = b.flow.connection {
                connections.entry(c).or_default().push(*id);
            }
        }
        assert_eq!(sources, self.sources, "bindings per source");
        let mut indexed_connections = self.connections.clone();
        for ids in connections
            .values_mut()
            .chain(indexed_connections.values_mut())
        {
            ids.sort_unstable();
        }
        assert_eq!(connections, indexed_connections, "bindings per connection");
        let indexed: usize = self.aors.values().map(Vec::len).sum();
        assert_eq!(indexed, self.by_id.len(), "bindings per AOR");
        (self.by_id.len(), self.relayed.len(), self.pings.len())
    }
}

/// What a REGISTER asks.
struct Ask {
    aor: String,
    /// The first Contact URI; `None` for `*`.
    contact: Option<String>,
    /// Seconds; 0 removes.
    expires: u32,
}

fn read_register(request: &Message) -> Option<Ask> {
    let to = request.to()?;
    // A REGISTER without a From is refused (400), as RFC 3261 §8.1.1 asks.
    request.from()?;
    let aor = String::from_utf8_lossy(to.uri().as_bytes()).into_owned();
    let header_expires = request.expires();
    let (contact, expires) = match request.contacts().next() {
        None => (None, None),
        Some(Ok(sip::header::Contact::Star)) => (None, Some(0)),
        Some(Ok(sip::header::Contact::Addr(addr))) => (
            Some(String::from_utf8_lossy(addr.uri().as_bytes()).into_owned()),
            addr.expires(),
        ),
        Some(Err(_)) => return None,
    };
    Some(Ask {
        aor,
        contact,
        expires: expires.or(header_expires).unwrap_or(3_600),
    })
}

/// The `expires` the registrar gave our Contact (the one with `token`),
/// else its `Expires` header.
fn granted(response: &Message, token: &str) -> Option<u32> {
    let ours = response.contacts().find_map(|c| match c {
        Ok(sip::header::Contact::Addr(addr)) if addr.uri().user() == Some(token.as_bytes()) => {
            addr.expires()
        }
        _ => None,
    });
    ours.or(response.expires())
}

impl Core {
    /// A REGISTER on `meta.realm`, an access realm.
    pub(super) fn on_register(
        &mut self,
        now: Instant,
        meta: &Meta,
        id: ServerId,
        request: Message,
    ) {
        let Some(access) = self.realms[meta.realm].access.clone() else {
            let allow = self.server_policy.allow.clone();
            self.answer_once(now, id, &request, 405, &[(HeaderName::Allow, &allow)]);
            self.note_refusal(now, meta.realm, meta.remote.ip());
            return;
        };
        let Some(ask) = read_register(&request) else {
            return self.refuse(now, meta, id, &request, 400, Some(RejectReason::Invalid));
        };
        let flow = Flow {
            listener: meta.listener,
            transport: meta.transport,
            peer: meta.remote,
            connection: meta.connection,
        };
        let Some(contact) = ask.contact.clone() else {
            if ask.expires == 0 {
                // `Contact: *`: every binding of this AOR on this flow goes.
                let gone: Vec<u64> = self
                    .bindings
                    .of_aor(meta.realm, &ask.aor)
                    .iter()
                    .copied()
                    .filter(|id| {
                        self.bindings
                            .by_id
                            .get(id)
                            .is_some_and(|b| b.flow.peer == flow.peer)
                    })
                    .collect();
                for binding in gone {
                    self.unregister(now, binding);
                }
            }
            // A query (no Contact) or a removal: the phone's own bindings.
            let listed = self.listed_contacts(now, meta.realm, &ask.aor, flow.peer);
            return self.answer_register(now, id, &request, 200, None, &listed);
        };
        let key = (meta.realm, ask.aor.clone(), contact.clone());
        let existing = self.bindings.keys.get(&key).copied();
        let phone_expires = ask.expires.min(access.phone_expires_secs);
        if ask.expires == 0 {
            let Some(binding) = existing else {
                return self.answer_register(now, id, &request, 200, None, &[]);
            };
            return self.relay_register(now, binding, Some((id, request)), 0);
        }
        if let Some(binding) = existing.and_then(|b| self.bindings.by_id.get_mut(&b))
            && binding.flow == flow
            && binding
                .registrar_until
                .is_some_and(|until| until > now + secs(phone_expires) + REGISTRAR_MARGIN)
        {
            // Throttled: the registrar's binding outlives this refresh. A
            // phone that refreshes is alive: its keepalive moves on.
            binding.expires_at = now + secs(phone_expires);
            if binding.next_ping.is_some() {
                binding.next_ping = Some(now + secs(access.keepalive_secs));
            }
            binding.credentials = credentials(&request);
            let listed = [(binding.contact.clone(), phone_expires)];
            let id_b = existing.unwrap_or_default();
            self.bindings.file(id_b);
            self.events.push_back(CoreEvent::Register {
                realm: self.realms[meta.realm].name.clone(),
                outcome: RegisterOutcome::Absorbed,
            });
            return self.answer_register(now, id, &request, 200, None, &listed);
        }
        let binding = match existing {
            Some(binding) => {
                self.bindings.set_flow(binding, flow);
                if let Some(b) = self.bindings.by_id.get_mut(&binding) {
                    b.credentials = credentials(&request);
                }
                binding
            }
            None => {
                let held = self.bindings.per_realm.get(&meta.realm).copied();
                let realm_full = held.unwrap_or(0) >= access.max_bindings as usize;
                if realm_full
                    || self.bindings.of_aor(meta.realm, &ask.aor).len()
                        >= access.max_bindings_per_aor as usize
                    || self.bindings.of_source(meta.realm, meta.remote.ip())
                        >= access.max_bindings_per_source as usize
                {
                    self.events.push_back(CoreEvent::Register {
                        realm: self.realms[meta.realm].name.clone(),
                        outcome: RegisterOutcome::Refused,
                    });
                    let status = if realm_full { 503 } else { 403 };
                    return self.refuse(
                        now,
                        meta,
                        id,
                        &request,
                        status,
                        Some(RejectReason::Admission),
                    );
                }
                let token = format!("{TOKEN_PREFIX}{}", self.ids.tag());
                let call_id = self.ids.call_id();
                let from_tag = self.ids.tag();
                self.bindings.insert(Binding {
                    token,
                    realm: meta.realm,
                    aor: ask.aor.clone(),
                    contact,
                    flow,
                    expires_at: now + UNCONFIRMED,
                    registrar_until: None,
                    call_id,
                    from_tag,
                    cseq: 0,
                    credentials: credentials(&request),
                    next_ping: None,
                })
            }
        };
        self.relay_register(now, binding, Some((id, request)), ask.expires);
    }

    /// The Contacts a 200 to this phone lists: its own bindings of `aor`
    /// (never another device's address).
    fn listed_contacts(
        &self,
        now: Instant,
        realm: usize,
        aor: &str,
        peer: SocketAddr,
    ) -> Vec<(String, u32)> {
        self.bindings
            .of_aor(realm, aor)
            .iter()
            .filter_map(|id| self.bindings.by_id.get(id))
            .filter(|b| b.flow.peer == peer && b.registrar_until.is_some())
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs() as u32;
                (b.contact.clone(), left)
            })
            .filter(|(_, left)| *left > 0)
            .collect()
    }

    /// A response of the SBC's own to a phone's REGISTER: `contacts` with
    /// their expiries, what `src` (the registrar's answer) may pass.
    fn answer_register(
        &mut self,
        now: Instant,
        id: ServerId,
        request: &Message,
        status: u16,
        src: Option<&Message>,
        contacts: &[(String, u32)],
    ) {
        let tag = self.ids.tag();
        let lines: Vec<String> = contacts
            .iter()
            .map(|(uri, expires)| format!("<{uri}>;expires={expires}"))
            .collect();
        let extra: Vec<(&str, &str)> = lines.iter().map(|l| ("Contact", l.as_str())).collect();
        let bytes = build::response(
            request,
            status,
            build::relayed_reason(status),
            Some(&tag),
            None,
            src,
            &self.policy,
            &extra,
            b"",
        );
        if let Some(msg) = self.parse_built(None, "answer to a REGISTER", &bytes) {
            self.respond_on(now, None, id, msg);
        }
    }

    /// Sends binding `id`'s REGISTER to the registrar: for the phone's
    /// `phone` request (or the SBC's own de-REGISTER), asking `asked`.
    fn relay_register(
        &mut self,
        now: Instant,
        binding_id: u64,
        phone: Option<(ServerId, Message)>,
        asked: u32,
    ) {
        let answer_phone = |core: &mut Core, status: u16, phone: Option<(ServerId, Message)>| {
            if let Some((server, request)) = phone {
                core.answer_register(now, server, &request, status, None, &[]);
            }
        };
        let Some(binding) = self.bindings.by_id.get(&binding_id) else {
            return answer_phone(self, 500, phone);
        };
        let Some(access) = self
            .realms
            .get(binding.realm)
            .and_then(|r| r.access.clone())
        else {
            return answer_phone(self, 503, phone);
        };
        let Some(trunk) = self
            .trunks
            .iter()
            .position(|t| !t.retired && t.name == access.registrar)
        else {
            return answer_phone(self, 503, phone);
        };
        // A registrar given by DNS name: its first target, over the
        // transport DNS chose for it.
        let Some(first) = self.trunks[trunk].targets.first() else {
            return answer_phone(self, 503, phone);
        };
        let (peer, transport) = (first.addr, self.trunks[trunk].transport_to(first));
        let realm = self.trunks[trunk].realm;
        let Some(listener) = self.realm_listener(realm, transport, peer) else {
            return answer_phone(self, 503, phone);
        };
        let addr = self.listeners[listener].info.public();
        let registrar_expires = if asked == 0 {
            0
        } else {
            access.registrar_expires_secs
        };
        let branch = self.ids.branch();
        let Some(binding) = self.bindings.by_id.get_mut(&binding_id) else {
            return;
        };
        binding.cseq += 1;
        let request_uri = match &phone {
            Some((_, request)) => {
                String::from_utf8_lossy(request.request_uri_bytes().unwrap_or_default())
                    .into_owned()
            }
            None => registrar_uri(&binding.aor),
        };
        let from = format!("<{}>;tag={}", binding.aor, binding.from_tag);
        let to = format!("<{}>", binding.aor);
        let contact = match transport {
            Transport::Udp => format!("<sip:{}@{}>", binding.token, host_port(addr)),
            Transport::Tcp => format!("<sip:{}@{};transport=tcp>", binding.token, host_port(addr)),
            Transport::Tls => format!("<sip:{}@{};transport=tls>", binding.token, host_port(addr)),
        };
        let expires = registrar_expires.to_string();
        let head = build::RequestHead {
            method: "REGISTER",
            request_uri: &request_uri,
            via_sent_by: &sent_by(transport, addr),
            branch: &branch,
            max_forwards: 70,
            from: &from,
            to: &to,
            call_id: &binding.call_id,
            cseq: binding.cseq,
            route_set: &[],
            contact: Some(&contact),
        };
        // The phone's other headers cross under the header policy, but for
        // the ones this REGISTER sets itself.
        let src = phone.as_ref().map(|(_, request)| {
            let mut src = request.clone();
            src.remove_headers(HeaderName::Expires);
            src
        });
        let own_credentials: Vec<(&str, &[u8])> = if phone.is_none() {
            binding
                .credentials
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect()
        } else {
            Vec::new()
        };
        let mut extra: Vec<(&str, String)> = vec![("Expires", expires)];
        for (name, value) in &own_credentials {
            extra.push((name, String::from_utf8_lossy(value).into_owned()));
        }
        let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let bytes = build::request(&head, src.as_ref(), &self.policy, &extra, b"");
        let Some(request) = self.parse_built(None, "REGISTER towards the registrar", &bytes) else {
            return answer_phone(self, 500, phone);
        };
        self.sip_event(self.trunks[trunk].realm, &request);
        match self.start_client(now, request, ListenerId(listener), transport, peer, None) {
            Some(client) => {
                self.events.push_back(CoreEvent::Register {
                    realm: self.realms[access_realm(&self.bindings, binding_id)]
                        .name
                        .clone(),
                    outcome: RegisterOutcome::Relayed,
                });
                self.bindings.relayed.insert(
                    client,
                    Relayed {
                        phone,
                        binding: binding_id,
                        asked,
                    },
                );
            }
            None => answer_phone(self, 503, phone),
        }
    }

    /// The registrar's final response to a relayed REGISTER.
    pub(super) fn on_registrar_response(
        &mut self,
        now: Instant,
        relayed: Relayed,
        response: Option<Message>,
    ) {
        let status = response.as_ref().and_then(Message::status).unwrap_or(408);
        let Relayed {
            phone,
            binding: binding_id,
            asked,
        } = relayed;
        let realm = self.bindings.by_id.get(&binding_id).map(|b| b.realm);
        let access = realm
            .and_then(|r| self.realms.get(r))
            .and_then(|r| r.access.clone());
        let mut listed = Vec::new();
        if (200..300).contains(&status) {
            if asked == 0 {
                self.bindings.remove(binding_id);
            } else if let (Some(binding), Some(access)) =
                (self.bindings.by_id.get_mut(&binding_id), access.as_ref())
            {
                let given = response
                    .as_ref()
                    .and_then(|r| granted(r, &binding.token))
                    .unwrap_or(access.registrar_expires_secs);
                if given == 0 {
                    self.bindings.remove(binding_id);
                } else {
                    let phone_expires = asked.min(access.phone_expires_secs).min(given);
                    binding.expires_at = now + secs(phone_expires);
                    binding.next_ping = (access.keepalive_secs > 0
                        && binding.flow.transport == Transport::Udp)
                        .then(|| now + secs(access.keepalive_secs));
                    listed.push((binding.contact.clone(), phone_expires));
                    self.bindings
                        .set_registrar_until(binding_id, Some(now + secs(given)));
                    self.bindings.file(binding_id);
                }
            }
        } else if status >= 300
            && !matches!(status, 401 | 407)
            && self
                .bindings
                .by_id
                .get(&binding_id)
                .is_some_and(|b| b.registrar_until.is_none())
        {
            // Refused outright: an unconfirmed binding goes. (A challenge
            // keeps it for the phone's retry with credentials.)
            self.bindings.remove(binding_id);
        }
        if let Some((server, request)) = phone {
            let status = if response.is_some() { status } else { 408 };
            self.answer_register(now, server, &request, status, response.as_ref(), &listed);
        }
    }

    /// Binding `id` is gone (expired, dead, or removed by `*`): the
    /// registrar is told, and calls to it get 480 from now on.
    fn unregister(&mut self, now: Instant, id: u64) {
        let confirmed = self
            .bindings
            .by_id
            .get(&id)
            .is_some_and(|b| b.registrar_until.is_some_and(|until| until > now));
        if confirmed {
            // Removed when the registrar answers (or its transaction ends).
            if let Some(b) = self.bindings.by_id.get_mut(&id) {
                b.expires_at = now + UNCONFIRMED;
                b.next_ping = None;
            }
            self.bindings.set_registrar_until(id, None);
            self.relay_register(now, id, None, 0);
        } else {
            self.bindings.remove(id);
        }
    }

    /// A TCP connection closed: the bindings registered over it can no
    /// longer be reached (a phone behind a NAT takes no new connection; RFC
    /// 5626 §4.4.2: the flow failed), so they are removed and the registrar
    /// told. One whose REGISTER is at the registrar right now is left to
    /// that answer and its own expiry.
    pub fn handle_connection_closed(&mut self, now: Instant, connection: ConnectionId) {
        for id in self.bindings.on_connection(connection) {
            if self.bindings.relayed.values().any(|r| r.binding == id) {
                continue;
            }
            self.unregister(now, id);
        }
        self.pump(now);
    }

    /// Fires the bindings' deadlines: phone expiries and keepalives.
    pub(super) fn binding_timers(&mut self, now: Instant) {
        for id in self.bindings.due(now) {
            let Some(binding) = self.bindings.by_id.get(&id) else {
                continue;
            };
            if binding.expires_at <= now {
                if self.bindings.relayed.values().any(|r| r.binding == id) {
                    // Its REGISTER is still at the registrar; that ends it.
                    continue;
                }
                self.unregister(now, id);
                continue;
            }
            if binding.next_ping.is_some_and(|at| at <= now) {
                self.ping_binding(now, id);
            }
        }
    }

    /// A keepalive OPTIONS to a UDP binding: it keeps the phone's NAT
    /// binding open, and a phone that never answers is gone.
    fn ping_binding(&mut self, now: Instant, id: u64) {
        let Some(binding) = self.bindings.by_id.get_mut(&id) else {
            return;
        };
        binding.next_ping = None;
        let flow = binding.flow;
        let (contact, aor) = (binding.contact.clone(), binding.aor.clone());
        let addr = self.listeners[flow.listener.0].info.public();
        let (branch, call_id, tag) = (self.ids.branch(), self.ids.call_id(), self.ids.tag());
        let from = format!("<sip:sbc@{}>;tag={tag}", host_port(addr));
        let to = format!("<{aor}>");
        let head = build::RequestHead {
            method: "OPTIONS",
            request_uri: &contact,
            via_sent_by: &sent_by(flow.transport, addr),
            branch: &branch,
            max_forwards: 70,
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            route_set: &[],
            contact: None,
        };
        let bytes = build::request(&head, None, &self.policy, &[], b"");
        let Some(request) = self.parse_built(None, "keepalive OPTIONS", &bytes) else {
            return;
        };
        if let Some(client) = self.start_client(
            now,
            request,
            flow.listener,
            flow.transport,
            flow.peer,
            flow.connection,
        ) {
            self.bindings.pings.insert(client, id);
            self.events
                .push_back(CoreEvent::Keepalive { failed: false });
        }
    }

    /// A keepalive's outcome: any response is a live phone; none is a dead
    /// one.
    pub(super) fn on_binding_ping(&mut self, now: Instant, id: u64, answered: bool) {
        if !answered {
            self.events.push_back(CoreEvent::Keepalive { failed: true });
            return self.unregister(now, id);
        }
        let every = self
            .bindings
            .by_id
            .get(&id)
            .and_then(|b| self.realms.get(b.realm))
            .and_then(|r| r.access.as_ref())
            .map(|a| a.keepalive_secs)
            .unwrap_or(0);
        if let Some(b) = self.bindings.by_id.get_mut(&id)
            && every > 0
        {
            b.next_ping = Some(now + secs(every));
            self.bindings.file(id);
        }
    }

    /// A number that changes whenever the bindings do: the shell saves
    /// them when it moved.
    pub fn bindings_generation(&self) -> u64 {
        self.bindings.generation
    }

    /// The bindings worth keeping across a restart (see [`BindingRecord`]).
    pub fn export_bindings(&self, now: Instant) -> Vec<BindingRecord> {
        self.bindings
            .by_id
            .values()
            .filter(|b| b.flow.transport == Transport::Udp)
            .filter_map(|b| {
                let registrar = b.registrar_until?.saturating_duration_since(now);
                let realm = self.realms.get(b.realm)?.name.clone();
                let listener = self.listeners.get(b.flow.listener.0)?.info.addr;
                Some(BindingRecord {
                    realm,
                    listener,
                    source: b.flow.peer,
                    aor: b.aor.clone(),
                    contact: b.contact.clone(),
                    token: b.token.clone(),
                    expires_secs: b.expires_at.saturating_duration_since(now).as_secs(),
                    registrar_secs: registrar.as_secs(),
                    call_id: b.call_id.clone(),
                    from_tag: b.from_tag.clone(),
                    cseq: b.cseq,
                    credentials: b
                        .credentials
                        .iter()
                        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect(),
                })
            })
            .collect()
    }

    /// Takes back saved bindings: each whose realm is still an access realm
    /// with a UDP listener at the saved address, that has time left, and
    /// whose token and Contact are not bound already. Returns how many.
    pub fn import_bindings(&mut self, now: Instant, records: Vec<BindingRecord>) -> usize {
        let mut taken = 0;
        for r in records {
            let Some(realm) = self
                .realms
                .iter()
                .position(|x| x.name == r.realm && x.access.is_some())
            else {
                continue;
            };
            let Some(listener) = self.listeners.iter().position(|l| {
                l.info.addr == r.listener
                    && l.info.transport == Transport::Udp
                    && l.state == ListenerState::Active
            }) else {
                continue;
            };
            let key = (realm, r.aor.clone(), r.contact.clone());
            if r.expires_secs == 0
                || r.registrar_secs == 0
                || !is_token(r.token.as_bytes())
                || self.bindings.tokens.contains_key(&r.token)
                || self.bindings.keys.contains_key(&key)
            {
                continue;
            }
            let keepalive = self.realms[realm]
                .access
                .as_ref()
                .map_or(0, |a| a.keepalive_secs);
            self.bindings.insert(Binding {
                token: r.token,
                realm,
                aor: r.aor,
                contact: r.contact,
                flow: Flow {
                    listener: ListenerId(listener),
                    transport: Transport::Udp,
                    peer: r.source,
                    connection: None,
                },
                expires_at: now + Duration::from_secs(r.expires_secs),
                registrar_until: Some(now + Duration::from_secs(r.registrar_secs)),
                call_id: r.call_id,
                from_tag: r.from_tag,
                cseq: r.cseq,
                credentials: r
                    .credentials
                    .into_iter()
                    .map(|(n, v)| (n, v.into_bytes()))
                    .collect(),
                next_ping: (keepalive > 0).then(|| now + secs(keepalive)),
            });
            taken += 1;
        }
        taken
    }

    /// The address-of-record a call on an access realm counts against:
    /// the binding's it goes to, else (a phone calling out) its From URI,
    /// as a REGISTER's To names it. `None` off access realms.
    pub(super) fn call_user(
        &self,
        meta: &Meta,
        request: &Message,
        to_binding: Option<(usize, &str)>,
    ) -> Option<(usize, String)> {
        if let Some((realm, aor)) = to_binding {
            return Some((realm, aor.to_owned()));
        }
        self.realms.get(meta.realm)?.access.as_ref()?;
        let from = request.from()?;
        Some((
            meta.realm,
            String::from_utf8_lossy(from.uri().as_bytes()).into_owned(),
        ))
    }

    /// Whether `user` may have one more call up (`max_calls_per_user`).
    pub(super) fn user_may_call(&self, user: &(usize, String)) -> bool {
        let limit = self
            .realms
            .get(user.0)
            .and_then(|r| r.access.as_ref())
            .map_or(0, |a| a.max_calls_per_user);
        limit == 0 || self.user_calls.get(user).copied().unwrap_or(0) < limit as usize
    }

    /// Counts `call` against its user (in at its start, out when it ends).
    pub(super) fn count_user_call(&mut self, user: Option<&(usize, String)>, add: bool) {
        let Some(user) = user else {
            return;
        };
        if add {
            *self.user_calls.entry(user.clone()).or_default() += 1;
        } else {
            decrement(&mut self.user_calls, user);
        }
    }

    /// Whether a caller on an access realm may place calls: registered
    /// from this flow, or the realm lets unregistered sources call.
    pub(super) fn may_call_out(&self, meta: &Meta) -> bool {
        match self.realms.get(meta.realm).and_then(|r| r.access.as_ref()) {
            None => true,
            Some(access) => {
                access.unregistered_calls || self.bindings.on_flow(meta.realm, meta.remote)
            }
        }
    }
}

/// The phone's credentials, kept for the de-REGISTER of its binding.
fn credentials(request: &Message) -> Vec<(String, Vec<u8>)> {
    request
        .headers()
        .filter(|h| {
            matches!(
                h.name,
                HeaderName::Authorization | HeaderName::ProxyAuthorization
            )
        })
        .map(|h| (h.name.canonical().to_owned(), h.value.to_vec()))
        .collect()
}

/// The Request-URI of a de-REGISTER: the AOR's domain (RFC 3261 §10.2).
fn registrar_uri(aor: &str) -> String {
    match aor.split_once('@') {
        Some((scheme_user, host)) => {
            let scheme = scheme_user.split(':').next().unwrap_or("sip");
            format!("{scheme}:{host}")
        }
        None => aor.to_owned(),
    }
}

/// Takes one from a count, dropping it at zero.
pub(super) fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn access_realm(bindings: &Bindings, id: u64) -> usize {
    bindings.by_id.get(&id).map_or(0, |b| b.realm)
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_de_register_goes_to_the_aor_domain() {
        assert_eq!(
            registrar_uri("sip:100@pbx.example.com"),
            "sip:pbx.example.com"
        );
        assert_eq!(
            registrar_uri("sips:alice@example.org:5061"),
            "sips:example.org:5061"
        );
    }
}
