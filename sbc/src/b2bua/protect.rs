//! Edge protection inside the call core: what one untrusted source may hold.
//!
//! Owns: the per-source books of untrusted sources (open server
//! transactions, call setups, calls, recent refusals), the untrusted share of
//! the call and transaction tables, the overload level, and the dialog-peer
//! rule for in-dialog requests, ACK and CANCEL.
//!
//! May not: see a packet before the parser (the transport's per-source
//! shield, [`crate::guard`], rate-limits and drops banned sources before
//! any of this runs); remember bans (it asks for them with
//! [`CoreEvent::Banned`] and the shield enforces them).
//!
//! A source is *trusted* on a realm when it is the address of one of the
//! realm's trunks or lies in the realm's `networks`; trusted sources are
//! bound by their trunk limits only. Every other source is *guarded* (unless
//! the realm turned protection off) and counted by its IP address.
//!
//! Memory: a book exists only while its source holds something or was
//! refused recently; books that only remember refusals are capped at
//! `[limits] tracked_sources` (beyond that, new sources' refusals are not
//! counted, and ban-by-refusals waits for the table to empty).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Call, Core, CoreEvent, Meta, RejectReason, Side, leg_ref};
use crate::config::{Config, ForeignInDialog, Protection};
use crate::guard::{BanReason, is_scanner};
use crate::sip::transaction::ServerId;
use crate::sip::{HeaderName, Message};

/// How long refusals of a source are added up before they are forgotten.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// What untrusted sources hold in the core ([`Core::untrusted_load`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UntrustedLoad {
    /// Calls (in setup or up) from untrusted sources.
    pub calls: usize,
    /// Their open server transactions.
    pub transactions: usize,
    /// Sources with anything open or recently refused.
    pub sources: usize,
}

/// What one guarded source holds now.
#[derive(Clone, Copy, Debug, Default)]
struct Book {
    transactions: u32,
    setups: u32,
    calls: u32,
    refusals: u32,
    refusals_since: Option<Instant>,
}

impl Book {
    fn holds_nothing(&self) -> bool {
        self.transactions == 0 && self.setups == 0 && self.calls == 0
    }
}

/// The protection state of the core. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Protect {
    /// Per realm index: `[protection]` with the realm's override.
    policies: Vec<Protection>,
    /// Per realm index: the realm's `networks`.
    networks: Vec<Vec<IpNet>>,
    books: HashMap<IpAddr, Book>,
    /// Open server transactions of guarded sources.
    tx_source: HashMap<ServerId, IpAddr>,
    untrusted_calls: usize,
    untrusted_transactions: usize,
    max_untrusted_calls: usize,
    max_untrusted_transactions: usize,
    tracked_sources: usize,
    /// 0: normal; 1: new INVITEs from guarded sources get 503; 2: every new
    /// INVITE gets 503.
    overload: u8,
}

impl Protect {
    /// Takes (or re-takes, on reload) the configuration for the core's
    /// realms (by name: a realm the file dropped keeps the global policy and
    /// no networks); the books stay.
    /// `max_transactions` is the table's size (fixed at start).
    pub(super) fn apply<'a>(
        &mut self,
        config: &Config,
        realms: impl Iterator<Item = &'a str>,
        max_transactions: usize,
    ) {
        (self.policies, self.networks) = realms
            .map(
                |name| match config.realms.iter().position(|r| r.name == name) {
                    Some(i) => (config.protection_of(i), config.realms[i].networks.clone()),
                    None => (config.protection.clone(), Vec::new()),
                },
            )
            .unzip();
        let limits = &config.limits;
        // Rounded up: a tiny table still admits one untrusted call.
        let share = |of: usize, percent: u8| (of * usize::from(percent)).div_ceil(100);
        self.max_untrusted_calls = share(limits.max_calls as usize, limits.untrusted_calls_percent);
        self.max_untrusted_transactions =
            share(max_transactions, limits.untrusted_transactions_percent);
        self.tracked_sources = limits.tracked_sources as usize;
    }

    pub(super) fn policy(&self, realm: usize) -> Option<&Protection> {
        self.policies.get(realm).filter(|p| p.enabled)
    }

    /// Calls of guarded sources now (for tests and `/calls`).
    pub(super) fn untrusted_calls(&self) -> usize {
        self.untrusted_calls
    }

    /// Server transactions of guarded sources now.
    pub(super) fn untrusted_transactions(&self) -> usize {
        self.untrusted_transactions
    }

    /// Sources with a book.
    pub(super) fn sources(&self) -> usize {
        self.books.len()
    }

    fn book(&mut self, ip: IpAddr) -> &mut Book {
        self.books.entry(ip).or_default()
    }

    fn settle(&mut self, ip: IpAddr) {
        if self
            .books
            .get(&ip)
            .is_some_and(|b| b.holds_nothing() && b.refusals == 0)
        {
            self.books.remove(&ip);
        }
    }
}

/// Whether a refusal the core gives counts towards a ban: the source's own
/// doing (its caps, probing for users or dialogs), not the SBC's state.
pub(super) fn counts_as_refusal(status: u16, reason: Option<RejectReason>) -> bool {
    match reason {
        Some(RejectReason::SourceLimit | RejectReason::ForeignInDialog) => true,
        Some(
            RejectReason::Overload
            | RejectReason::Admission
            | RejectReason::Draining
            | RejectReason::MediaPorts,
        ) => false,
        _ => matches!(status, 403 | 404 | 405 | 481 | 484 | 485 | 604),
    }
}

/// A far-side failure that an enumerating caller learns from, and what
/// `normalize_failures` turns it into.
pub(super) fn normalized_failure(status: u16) -> Option<u16> {
    matches!(
        status,
        403 | 404 | 410 | 480 | 484 | 485 | 486 | 600 | 603 | 604
    )
    .then_some(404)
}

impl Core {
    /// Whether `ip` is a trunk of realm `realm` or in its networks.
    pub(super) fn trusted(&self, realm: usize, ip: IpAddr) -> bool {
        self.trunks
            .iter()
            .any(|t| !t.retired && t.realm == realm && t.has_ip(ip))
            || self
                .protect
                .networks
                .get(realm)
                .is_some_and(|nets| nets.iter().any(|n| n.contains(&ip)))
    }

    /// Whether protection applies to `ip` on `realm`.
    pub(super) fn guarded(&self, realm: usize, ip: IpAddr) -> bool {
        self.protect.policy(realm).is_some() && !self.trusted(realm, ip)
    }

    /// What untrusted sources hold now.
    pub fn untrusted_load(&self) -> UntrustedLoad {
        UntrustedLoad {
            calls: self.protect.untrusted_calls(),
            transactions: self.protect.untrusted_transactions(),
            sources: self.protect.sources(),
        }
    }

    /// Sets the overload level (the IO shell measures saturation).
    pub fn set_overload(&mut self, level: u8) {
        self.protect.overload = level.min(2);
    }

    /// The overload level in force.
    pub fn overload(&self) -> u8 {
        self.protect.overload
    }

    /// A scanner's request: dropped without an answer, its source banned.
    /// True when `request` was one.
    pub(super) fn screen_scanner(&mut self, meta: &Meta, request: &Message) -> bool {
        let Some(policy) = self.protect.policy(meta.realm) else {
            return false;
        };
        let Some(agent) = request.header(HeaderName::UserAgent) else {
            return false;
        };
        if !is_scanner(agent, &policy.scanner_user_agents)
            || self.trusted(meta.realm, meta.remote.ip())
        {
            return false;
        }
        self.event_rejected(meta.realm, RejectReason::Scanner);
        self.ask_ban(meta.realm, meta.remote.ip(), BanReason::Scanner);
        true
    }

    fn ask_ban(&mut self, realm: usize, source: IpAddr, reason: BanReason) {
        self.events.push_back(CoreEvent::Banned {
            realm: self.realms[realm].name.clone(),
            source,
            reason,
        });
    }

    /// Counts a refusal of a guarded source; asks for a ban at the limit.
    pub(super) fn note_refusal(&mut self, now: Instant, realm: usize, ip: IpAddr) {
        let Some(limit) = self
            .protect
            .policy(realm)
            .map(|p| p.ban_after_refusals)
            .filter(|&l| l > 0)
        else {
            return;
        };
        if self.trusted(realm, ip) {
            return;
        }
        if !self.protect.books.contains_key(&ip)
            && self.protect.books.len() >= self.protect.tracked_sources
        {
            // Full: forget sources that only had old refusals.
            self.protect.books.retain(|_, b| {
                !b.holds_nothing()
                    || b.refusals_since
                        .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_WINDOW)
            });
            if self.protect.books.len() >= self.protect.tracked_sources {
                return;
            }
        }
        let book = self.protect.book(ip);
        if book
            .refusals_since
            .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_WINDOW)
        {
            book.refusals = 0;
            book.refusals_since = Some(now);
        }
        book.refusals += 1;
        if book.refusals >= limit {
            book.refusals = 0;
            book.refusals_since = None;
            self.protect.settle(ip);
            self.ask_ban(realm, ip, BanReason::Refusals);
        }
    }

    /// An out-of-dialog request of a guarded source asks for a transaction:
    /// the refusal it gets when its source, or all guarded sources together,
    /// hold too many.
    pub(super) fn transaction_refusal(&self, meta: &Meta) -> Option<RejectReason> {
        let policy = self.protect.policy(meta.realm)?;
        if self.trusted(meta.realm, meta.remote.ip()) {
            return None;
        }
        let held = self
            .protect
            .books
            .get(&meta.remote.ip())
            .map_or(0, |b| b.transactions);
        if held >= policy.max_transactions_per_source {
            return Some(RejectReason::SourceLimit);
        }
        (self.protect.untrusted_transactions >= self.protect.max_untrusted_transactions)
            .then_some(RejectReason::Overload)
    }

    /// A server transaction of `meta`'s source opened.
    pub(super) fn count_transaction(&mut self, meta: &Meta, id: ServerId) {
        if !self.guarded(meta.realm, meta.remote.ip()) {
            return;
        }
        let ip = meta.remote.ip();
        self.protect.tx_source.insert(id, ip);
        self.protect.book(ip).transactions += 1;
        self.protect.untrusted_transactions += 1;
    }

    /// A server transaction ended.
    pub(super) fn uncount_transaction(&mut self, id: ServerId) {
        let Some(ip) = self.protect.tx_source.remove(&id) else {
            return;
        };
        self.protect.untrusted_transactions = self.protect.untrusted_transactions.saturating_sub(1);
        if let Some(book) = self.protect.books.get_mut(&ip) {
            book.transactions = book.transactions.saturating_sub(1);
        }
        self.protect.settle(ip);
    }

    /// Whether a new INVITE from `meta`'s source may start a call: the
    /// refusal otherwise (checked after the global limits).
    pub(super) fn invite_refusal(&self, meta: &Meta) -> Option<RejectReason> {
        let guarded = self.guarded(meta.realm, meta.remote.ip());
        match self.protect.overload {
            2.. => return Some(RejectReason::Overload),
            1 if guarded => return Some(RejectReason::Overload),
            _ => {}
        }
        // The last tenth of the transaction table is kept for what calls
        // up need (BYE, re-INVITE, their responses).
        if self.tx.len() * 10 >= self.tx.max_transactions() * 9 {
            return Some(RejectReason::Overload);
        }
        if !guarded {
            return None;
        }
        let policy = self.protect.policy(meta.realm)?;
        let book = self
            .protect
            .books
            .get(&meta.remote.ip())
            .copied()
            .unwrap_or_default();
        if book.setups >= policy.max_setups_per_source || book.calls >= policy.max_calls_per_source
        {
            return Some(RejectReason::SourceLimit);
        }
        (self.protect.untrusted_calls >= self.protect.max_untrusted_calls)
            .then_some(RejectReason::Overload)
    }

    /// A call from a guarded source started: count it.
    pub(super) fn count_call(&mut self, call: &mut Call, meta: &Meta) {
        if !self.guarded(meta.realm, meta.remote.ip()) {
            return;
        }
        let ip = meta.remote.ip();
        let book = self.protect.book(ip);
        book.setups += 1;
        book.calls += 1;
        self.protect.untrusted_calls += 1;
        call.guarded = Some(ip);
        call.in_setup = true;
    }

    /// Keeps the books of `call`'s source in step with its state: its setup
    /// ends with A's final response, its call when it is finished.
    pub(super) fn settle_call(&mut self, call: &mut Call, finished: bool) {
        let Some(ip) = call.guarded else {
            return;
        };
        if call.in_setup && (call.a_final || finished) {
            call.in_setup = false;
            if let Some(book) = self.protect.books.get_mut(&ip) {
                book.setups = book.setups.saturating_sub(1);
            }
        }
        if finished {
            call.guarded = None;
            self.protect.untrusted_calls = self.protect.untrusted_calls.saturating_sub(1);
            if let Some(book) = self.protect.books.get_mut(&ip) {
                book.calls = book.calls.saturating_sub(1);
            }
            self.protect.settle(ip);
        }
    }

    /// Whether a request (or ACK, or CANCEL) for `side` of `call` comes from
    /// that leg's signaling peer: the leg's realm, and its peer's address
    /// (any port over TCP, with `follow_nat_rebinding`, or from a trusted
    /// source); a trunk's leg also takes any trusted source of its realm.
    pub(super) fn is_dialog_peer(&self, call: &Call, side: Side, meta: &Meta) -> bool {
        let Some(leg) = leg_ref(call, side) else {
            return false;
        };
        if leg.realm != meta.realm {
            return false;
        }
        let Some(policy) = self.protect.policy(meta.realm) else {
            return true;
        };
        let trunk_leg = match side {
            Side::A => call.source_trunk.is_some(),
            Side::B => call.trunk.is_some(),
        };
        let from = meta.remote;
        let trusted = self.trusted(meta.realm, from.ip());
        if from.ip() == leg.peer.ip() {
            return from.port() == leg.peer.port()
                || meta.transport.is_reliable()
                || policy.follow_nat_rebinding
                || trusted;
        }
        trunk_leg && trusted
    }

    /// A request for a dialog from someone who is not its peer: 403 (or
    /// nothing, by policy), once, without a transaction; nothing changes.
    pub(super) fn refuse_foreign(
        &mut self,
        now: Instant,
        meta: &Meta,
        id: Option<ServerId>,
        request: &Message,
    ) {
        self.event_rejected(meta.realm, RejectReason::ForeignInDialog);
        let answer = self
            .protect
            .policy(meta.realm)
            .is_none_or(|p| p.foreign_in_dialog == ForeignInDialog::Reject);
        if let Some(id) = id {
            if answer {
                self.reply(now, id, request, 403, &[]);
            }
            self.answered_once.push((id, false));
        }
        self.note_refusal(now, meta.realm, meta.remote.ip());
    }
}
