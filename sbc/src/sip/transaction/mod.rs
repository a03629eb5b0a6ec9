//! The SIP transaction layer (RFC 3261 §17, with RFC 6026's Accepted state).
//!
//! Owns: every client and server transaction of one SIP endpoint (the
//! [`Transactions`] table), their state machines (§17.1.1 client INVITE,
//! §17.1.2 client non-INVITE, §17.2.1 server INVITE, §17.2.2 server
//! non-INVITE; Figures 5-8 as amended by RFC 6026 §7.1, §7.2 and §8), the timers A, B,
//! D, E, F, G, H, I, J, K (and RFC 6026's L and M), matching of responses to
//! client transactions (§17.1.3) and of requests to server transactions
//! (§17.2.3, including the RFC 2543 fallback when the branch lacks the magic
//! cookie `z9hG4bK`), the ACK for a non-2xx final response (§17.1.1.3), and the
//! 100 Trying a server INVITE transaction owes when the TU is slow (§17.2.1).
//!
//! May not: do IO or read a clock. Time comes in as `now` on every call;
//! bytes to send come out of [`Transactions::poll_transmit`], things the TU
//! must know come out of [`Transactions::poll_event`], and the next deadline
//! out of [`Transactions::poll_timeout`].
//!
//! # Driving it
//!
//! After every `handle_*`/`send_*`/[`terminate`](Transactions::terminate)
//! call, drain [`poll_transmit`](Transactions::poll_transmit) until `None`
//! (hand each [`Transmit`] to the transport), then
//! [`poll_event`](Transactions::poll_event) until `None` (hand each to the
//! TU), then (re)arm one timer at [`poll_timeout`](Transactions::poll_timeout)
//! and call [`handle_timeout`](Transactions::handle_timeout) when it fires
//! (firing late is fine; firing early does nothing). Transmits are produced
//! in the order they must be sent; events in the order they happened.
//!
//! # What stays with the TU (the B2BUA)
//!
//! * **2xx to INVITE.** A server INVITE transaction sends the first 2xx and
//!   moves to Accepted (RFC 6026 §7.1); it never retransmits a 2xx itself.
//!   The TU retransmits its 2xx (§13.3.1.4) by calling
//!   [`send_response`](Transactions::send_response) again on the same id until
//!   the ACK arrives: that ACK carries its own branch, so it reaches the TU as
//!   [`Inbound::Ack`] (with `transaction: None`), or with the transaction's id
//!   when it matched one in Accepted (RFC 2543 peers reuse the branch-less
//!   key). On the client side every 2xx, retransmissions included, is passed
//!   up as [`Event::Response`] while the transaction is Accepted (timer M), and
//!   [`Transactions::handle_response`] returns [`ResponseOutcome::Stray`] for
//!   a 2xx after that; the TU sends the ACK for a 2xx itself (§13.2.2.4),
//!   directly through the transport, since that ACK is no transaction.
//! * **Branches.** The TU puts a unique `branch=z9hG4bK...` in the top Via of
//!   every request it sends (the RNG is injected there, not here).
//! * **CANCEL.** A CANCEL is a non-INVITE request of its own: the TU gets it
//!   from [`cancel_request`](Transactions::cancel_request) once a provisional
//!   arrived (§9.1) and sends it with
//!   [`send_request`](Transactions::send_request); on the server side
//!   [`Inbound::Cancel`] names the INVITE transaction it matched so the TU can
//!   answer 200 to the CANCEL and 487 to the INVITE.
//! * **100 Trying.** A server INVITE transaction sends 100 Trying itself when
//!   the TU has sent no response [`Timers::trying`] (200 ms) after the INVITE
//!   arrived, or at once when the INVITE is retransmitted before then
//!   (§17.2.1). Any response from the TU cancels it.
//! * **Giving up.** A client INVITE transaction that got a provisional
//!   response has no timer of its own (§17.1.1.2); the TU CANCELs it, and if
//!   no final response follows within 64*T1 (§9.1) it calls
//!   [`terminate`](Transactions::terminate).
//! * **Where bytes go.** Each transaction remembers the `remote` it was given:
//!   the next hop the TU resolved for a request (§18.1.1, RFC 3263), or for a
//!   server transaction the address its responses go to, which the transport
//!   computes from the request's source and top Via (§18.2.2, RFC 3581).
//!
//! # Choices where the RFC leaves room
//!
//! * Branches compare byte for byte (case-sensitive); the sent-by host
//!   compares case-insensitively, its port as written (absent is not 5060).
//! * RFC 2543 matching compares the Request-URI and the top Via byte for byte
//!   rather than by §19.1.4 URI equality: a retransmission is a copy, so this
//!   errs only towards a new transaction for a peer that rewrites them.
//! * A CANCEL's `target` is only ever an INVITE server transaction (§9.2:
//!   cancelling anything else has no effect), in whatever state it is.
//! * A response matching nothing is not forwarded anywhere: it goes to the
//!   TU as [`ResponseOutcome::Stray`] (RFC 6026 stops proxies forwarding
//!   such responses; a UA uses a stray 2xx to ACK again).
//!
//! # Bounds
//!
//! The table holds at most [`Transactions::max_transactions`] transactions;
//! when full, [`Transactions::handle_request`] returns [`Inbound::Full`] so the
//! caller answers 503 statelessly, and [`Transactions::send_request`] fails
//! with [`TransactionError::Full`]. Each timer is filed in
//! [`Deadlines`](crate::deadlines::Deadlines) when it is set, and an entry
//! whose timer moved or ended is dropped when it surfaces (lazy deletion), so
//! setting and firing a timer cost O(1) however many transactions exist.

mod build;
mod key;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Message, Method};
use crate::deadlines::Deadlines;
use crate::idmap::IdMap;

/// Timer values (RFC 3261 §17.1.1.1, Table 4). Every timer of §17 derives
/// from these. No value makes the layer panic or spin: retransmission
/// intervals below 1 ms act as 1 ms, and a deadline past what `Instant` can
/// hold never fires (the configuration layer should refuse such values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// T1, the RTT estimate: first retransmission interval (A, E, G) and the
    /// unit of B, F, H, J, L, M (64*T1). Default 500 ms.
    pub t1: Duration,
    /// T2, the cap on non-INVITE request and INVITE response retransmission
    /// intervals (E, G). Default 4 s.
    pub t2: Duration,
    /// T4, how long a message may linger in the network: timers I and K.
    /// Default 5 s.
    pub t4: Duration,
    /// Timer D, how long a client INVITE transaction absorbs retransmitted
    /// non-2xx finals over an unreliable transport ("at least 32 s").
    pub d: Duration,
    /// How long a server INVITE transaction waits for a provisional from the
    /// TU before sending 100 Trying itself (§17.2.1: "within 200 ms").
    pub trying: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d: Duration::from_secs(32),
            trying: Duration::from_millis(200),
        }
    }
}

impl Timers {
    /// 64*T1: timers B, F, H, J, L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// A client transaction (a request this endpoint sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

/// A server transaction (a request this endpoint received).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(u64);

impl ServerId {
    /// An id no transaction ever has: the INVITE of a call adopted from
    /// another node, whose transaction ended there.
    pub const DETACHED: ServerId = ServerId(u64::MAX);
}

/// Either kind of transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransactionId {
    /// A client transaction.
    Client(ClientId),
    /// A server transaction.
    Server(ServerId),
}

impl From<ClientId> for TransactionId {
    fn from(id: ClientId) -> Self {
        TransactionId::Client(id)
    }
}

impl From<ServerId> for TransactionId {
    fn from(id: ServerId) -> Self {
        TransactionId::Server(id)
    }
}

/// Bytes for the transport to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The transaction that sends them.
    pub id: TransactionId,
    /// Where: the `remote` the transaction was created with.
    pub remote: SocketAddr,
    /// Whether the transaction runs over a reliable transport (TCP, TLS,
    /// SCTP, WS): the transport must use the same one.
    pub reliable: bool,
    /// One whole SIP message.
    pub bytes: Vec<u8>,
    /// A message this transaction sent before (timers A, E, G, or an
    /// answer to a retransmitted request), for retransmission counts.
    pub retransmission: bool,
}

/// Something the TU must know, drained with [`Transactions::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A response for a client transaction: every provisional, the final
    /// (once; retransmissions of a non-2xx final are absorbed), and in the
    /// Accepted state every further 2xx (retransmissions and forks, RFC 6026
    /// §7.2) so the TU can ACK each.
    Response {
        /// The client transaction.
        id: ClientId,
        /// The response as received.
        response: Message,
    },
    /// A transaction timed out: timer B or F (a client got no final
    /// response; the TU acts as on a 408, §8.1.3.1), timer H (a server
    /// INVITE transaction sent a non-2xx final and never got the ACK), or a
    /// server non-INVITE transaction its TU never answered within
    /// [`ABANDONED_AFTER_T1X64`] × 64·T1 (the client gave up at timer F long
    /// before; without this bound a lost answer would keep it forever).
    Timeout {
        /// The transaction; it is terminated (a `Terminated` event follows).
        id: TransactionId,
    },
    /// The transport reported a failure for this transaction
    /// ([`Transactions::handle_transport_error`]); the TU acts as on a 503
    /// (§8.1.3.1). Unless the transaction was Accepted, it is terminated.
    TransportError {
        /// The transaction.
        id: TransactionId,
    },
    /// The transaction is gone: its id is no longer known, and messages that
    /// would have matched it are now new requests or stray responses.
    Terminated {
        /// The transaction.
        id: TransactionId,
    },
}

/// What [`Transactions::handle_request`] made of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A new request (not ACK, not CANCEL): a server transaction was created;
    /// the TU answers with [`Transactions::send_response`].
    Request {
        /// The new server transaction.
        id: ServerId,
        /// The request.
        request: Message,
    },
    /// A CANCEL: a non-INVITE server transaction was created for it (the TU
    /// answers it 200, or 481 when `target` is `None`, §9.2).
    Cancel {
        /// The CANCEL's own server transaction.
        id: ServerId,
        /// The INVITE server transaction it matched, if any is live.
        target: Option<ServerId>,
        /// The CANCEL.
        request: Message,
    },
    /// An ACK the TU must see: the ACK for a 2xx (its own transaction by
    /// §17.1.1.3), or one that matched no transaction.
    Ack {
        /// The INVITE server transaction it matched in the Accepted state
        /// (RFC 6026 §7.1), or `None` when it matched none (the usual case:
        /// an ACK for a 2xx has a branch of its own).
        transaction: Option<ServerId>,
        /// The ACK.
        request: Message,
    },
    /// A retransmitted request or an ACK for a non-2xx final, absorbed by
    /// this transaction (which may have queued a response retransmission).
    Absorbed(ServerId),
    /// The table is full: no transaction was created. Answer 503 with
    /// Retry-After statelessly (§21.5.4), or drop the request.
    Full(Message),
}

/// What [`Transactions::handle_response`] made of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// It matched this client transaction; any [`Event::Response`] is queued
    /// (none for an absorbed retransmission).
    Matched(ClientId),
    /// It matched no transaction (a 2xx retransmission after the client
    /// transaction ended, or a late or misrouted response): the TU decides
    /// (a UA ACKs a 2xx again for its dialog, §13.2.2.4; anything else is
    /// usually dropped).
    Stray(Message),
}

/// A call on [`Transactions`] that does not fit its state. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The id names no live transaction: it terminated (watch for
    /// [`Event::Terminated`]) or belongs to another table.
    #[error("no live transaction {0:?}; it has terminated or was never created here")]
    Unknown(TransactionId),
    /// A response was given where a request belongs, or the other way round.
    #[error("expected a {expected}, got the other kind of message")]
    WrongKind {
        /// `"request"` or `"response"`.
        expected: &'static str,
    },
    /// `send_request` was given an ACK: an ACK for a 2xx is no transaction
    /// (§17.1.1.3), send it through the transport directly; the ACK for a
    /// non-2xx is built by the client INVITE transaction itself.
    #[error(
        "an ACK is not a transaction: send the ACK for a 2xx directly, the one for a non-2xx is automatic"
    )]
    AckRequest,
    /// The message lacks a header the transaction layer keys on (Via with a
    /// branch for requests we send, Via/CSeq/Call-ID/From/To otherwise). A
    /// parsed message always has them; an edit removed one.
    #[error("the message lacks {0}, which transaction matching needs")]
    Missing(&'static str),
    /// `send_request` was given a branch (and method) already in use by a
    /// live client transaction: branches must be unique (§8.1.1.7).
    #[error(
        "a live client transaction already uses this branch and method; generate a fresh branch"
    )]
    DuplicateBranch,
    /// The table already holds `max_transactions`; try later or fail the
    /// request upstream with 503.
    #[error("the transaction table is full ({0} transactions)")]
    Full(usize),
    /// `send_response` was given a response whose top Via branch or CSeq
    /// differs from the request of that server transaction: it was built
    /// for another request (§8.2.6.2 copies Via and CSeq from the request).
    #[error(
        "the response does not answer this transaction's request (top Via branch or CSeq differ)"
    )]
    Mismatch,
    /// `cancel_request` on a transaction that cannot be cancelled: not an
    /// INVITE, or its final response already arrived (§9.1).
    #[error("only an INVITE client transaction without a final response can be cancelled")]
    NotCancellable,
    /// `cancel_request` before any provisional response: §9.1 forbids the
    /// CANCEL until one arrives; ask again after the first
    /// [`Event::Response`].
    #[error("no provisional response yet: §9.1 forbids sending the CANCEL before one")]
    NoProvisionalYet,
    /// `send_response` on a server transaction that can take no more
    /// responses: a non-2xx final was already sent, or a non-2xx or
    /// provisional after a 2xx (only 2xx retransmissions may follow a 2xx).
    #[error("the server transaction already sent its final response")]
    FinalSent,
}

/// The role and method class of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

/// The states of Figures 5-8 (Terminated is removal from the table). Client
/// INVITE "Calling" and non-INVITE "Trying" are both `Trying`; server INVITE
/// starts in `Proceeding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

/// One transaction.
#[derive(Debug)]
struct Tx {
    kind: Kind,
    state: State,
    reliable: bool,
    remote: SocketAddr,
    /// The key it is filed under (client or server map by `kind`).
    key: Box<[u8]>,
    /// What a retransmission sends: the request (client), the ACK for a
    /// non-2xx final (client INVITE, Completed), or the latest response
    /// (server). Empty in Accepted, which retransmits nothing.
    last: Vec<u8>,
    /// Client INVITE: the request, kept to build the ACK (§17.1.1.3).
    /// Boxed: only a client INVITE before its final response has one.
    request: Option<Box<Message>>,
    /// Server: top Via branch and CSeq of the request, which every response
    /// must echo (see [`key::echo`]); empty for clients.
    echo: Box<[u8]>,
    /// Server INVITE: the 100 Trying to send if the TU is slow.
    trying: Option<Vec<u8>>,
    /// RFC 2543 matching: the To tags of the request and of the final
    /// response sent (the ACK must carry the latter).
    to_tag: Option<Box<str>>,
    response_tag: Option<Box<str>>,
    /// Timers A, E, G: next firing and current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timers B, F, H.
    timeout_at: Option<Instant>,
    /// Timers D, I, J, K, L, M: the end of a lingering state.
    linger_at: Option<Instant>,
    /// The 100 Trying timer.
    trying_at: Option<Instant>,
    /// Server INVITE: retransmissions of the final the TU still allows
    /// (see [`Transactions::limit_retransmissions`]); `None`: timer G runs
    /// until timer H, as §17.2.1 has it.
    retransmissions_left: Option<u8>,
    /// The timers as last filed in the deadlines, so an unchanged timer is
    /// not filed twice (a flood of matching messages must not grow them).
    filed: [Option<Instant>; 4],
}

impl Tx {
    /// Every timer: retransmission, timeout, linger, 100 Trying.
    fn timers(&self) -> [Option<Instant>; 4] {
        [
            self.retransmit_at,
            self.timeout_at,
            self.linger_at,
            self.trying_at,
        ]
    }

    /// The timers set since they were last filed (each `None` otherwise),
    /// all counted as filed from now on.
    fn unfiled(&mut self) -> [Option<Instant>; 4] {
        let timers = self.timers();
        let mut fresh = [None; 4];
        for ((fresh, at), filed) in fresh.iter_mut().zip(timers).zip(self.filed) {
            if at != filed {
                *fresh = at;
            }
        }
        self.filed = timers;
        fresh
    }
}

/// A server non-INVITE transaction its TU has not answered after this many
/// 64·T1 periods is dropped with [`Event::Timeout`]. Twice timer F: the
/// TU's own relay timeout (a client transaction's timer F on the other leg)
/// always comes first.
pub const ABANDONED_AFTER_T1X64: u32 = 2;

/// The transaction layer of one endpoint. See the module docs.
#[derive(Debug)]
pub struct Transactions {
    timers: Timers,
    max: usize,
    next_id: u64,
    /// Boxed, so the table's empty slots (it grows by doubling) cost a
    /// pointer each rather than a whole `Tx`.
    txs: IdMap<TransactionId, Box<Tx>>,
    client_keys: HashMap<Box<[u8]>, ClientId>,
    server_keys: HashMap<Box<[u8]>, ServerId>,
    /// Every timer set, filed when set; an entry is stale when its
    /// transaction is gone or that timer moved (lazy deletion).
    deadlines: Deadlines<TransactionId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Reused to build lookup keys without allocating.
    scratch: Vec<u8>,
}

/// The default cap on live transactions.
pub const DEFAULT_MAX_TRANSACTIONS: usize = 100_000;

impl Transactions {
    /// An empty table with these timers and [`DEFAULT_MAX_TRANSACTIONS`].
    pub fn new(timers: Timers) -> Self {
        Transactions {
            timers,
            max: DEFAULT_MAX_TRANSACTIONS,
            next_id: 0,
            txs: IdMap::default(),
            client_keys: HashMap::new(),
            server_keys: HashMap::new(),
            deadlines: Deadlines::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::with_capacity(256),
        }
    }

    /// Sets the cap on live transactions (client and server together).
    /// Existing transactions are kept when lowering it.
    pub fn with_max_transactions(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The cap on live transactions.
    pub fn max_transactions(&self) -> usize {
        self.max
    }

    /// The timers in use.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// How many transactions are live.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether this transaction is live.
    pub fn contains(&self, id: impl Into<TransactionId>) -> bool {
        self.txs.contains_key(&id.into())
    }

    /// The live client transaction whose request an ICMP error quoted (its
    /// top Via branch and method, §17.1.3), if any.
    pub fn client_of_quote(
        &mut self,
        quote: &crate::sip::quote::QuotedRequest,
    ) -> Option<ClientId> {
        key::client_key(&quote.branch, quote.method.as_bytes(), &mut self.scratch);
        let id = *self.client_keys.get(self.scratch.as_slice())?;
        self.contains(id).then_some(id)
    }

    /// Starts a client transaction for `request` (any method but ACK) and
    /// queues its first transmission to `remote`. The top Via must carry the
    /// branch the TU generated. Over an unreliable transport timer A (INVITE)
    /// or E (non-INVITE) retransmits it; over a reliable one only B/F run.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        remote: SocketAddr,
        reliable: bool,
    ) -> Result<ClientId, TransactionError> {
        let method = request.method().ok_or(TransactionError::WrongKind {
            expected: "request",
        })?;
        if method == Method::Ack {
            return Err(TransactionError::AckRequest);
        }
        if self.txs.len() >= self.max {
            return Err(TransactionError::Full(self.max));
        }
        key::client_key_of_request(&request, &mut self.scratch)?;
        if self.client_keys.contains_key(self.scratch.as_slice()) {
            return Err(TransactionError::DuplicateBranch);
        }
        let id = ClientId(self.fresh_id());
        let key: Box<[u8]> = self.scratch.as_slice().into();
        self.client_keys.insert(key.clone(), id);
        let invite = method == Method::Invite;
        let t1 = self.timers.t1;
        let tx = Tx {
            kind: if invite {
                Kind::InviteClient
            } else {
                Kind::NonInviteClient
            },
            state: State::Trying,
            reliable,
            remote,
            key,
            last: request.to_bytes(),
            request: invite.then(|| Box::new(request)),
            echo: Box::default(),
            trying: None,
            to_tag: None,
            response_tag: None,
            retransmit_at: later(now, t1).filter(|_| !reliable),
            interval: t1,
            timeout_at: later(now, self.timers.t1x64()),
            linger_at: None,
            trying_at: None,
            retransmissions_left: None,
            filed: [None; 4],
        };
        let id_any = TransactionId::Client(id);
        queue(&mut self.transmits, id_any, &tx, tx.last.clone(), false);
        self.insert(now, id_any, tx);
        Ok(id)
    }

    /// Takes a received request. `remote` is where responses to it go
    /// (§18.2.2, computed by the transport); `reliable` says whether it came
    /// over a reliable transport.
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: Message,
        remote: SocketAddr,
        reliable: bool,
    ) -> Result<Inbound, TransactionError> {
        let method = request.method().ok_or(TransactionError::WrongKind {
            expected: "request",
        })?;
        let matched = key::server_key(&request, &mut self.scratch)?;
        let found = self.server_keys.get(self.scratch.as_slice()).copied();
        // RFC 2543 keys leave the To tag out (an ACK carries the response's
        // tag, not the request's); check it on the transaction.
        let found = found.filter(|&id| {
            matched.tags_agree(
                method,
                self.txs.get(&TransactionId::Server(id)).map(Box::as_ref),
            )
        });
        if method == Method::Ack {
            return Ok(self.server_ack(now, found, request));
        }
        if let Some(id) = found {
            self.server_retransmission(now, id);
            return Ok(Inbound::Absorbed(id));
        }
        if self.txs.len() >= self.max {
            return Ok(Inbound::Full(request));
        }
        let target = if method == Method::Cancel {
            key::server_key_as_invite(&request, &mut self.scratch)?;
            self.server_keys
                .get(self.scratch.as_slice())
                .copied()
                .filter(|&id| {
                    matched.tags_agree(
                        Method::Invite,
                        self.txs.get(&TransactionId::Server(id)).map(Box::as_ref),
                    )
                })
        } else {
            None
        };
        // Rebuild this request's own key (the CANCEL lookup reused scratch).
        key::server_key(&request, &mut self.scratch)?;
        let id = ServerId(self.fresh_id());
        let key: Box<[u8]> = self.scratch.as_slice().into();
        self.server_keys.insert(key.clone(), id);
        let invite = method == Method::Invite;
        let tx = Tx {
            kind: if invite {
                Kind::InviteServer
            } else {
                Kind::NonInviteServer
            },
            state: if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            reliable,
            remote,
            key,
            last: Vec::new(),
            request: None,
            echo: {
                key::echo(&request, &mut self.scratch);
                self.scratch.as_slice().into()
            },
            trying: invite.then(|| build::trying(&request)),
            to_tag: matched.to_tag.map(Into::into),
            response_tag: None,
            retransmit_at: None,
            interval: self.timers.t1,
            timeout_at: later(
                now,
                self.timers.t1x64().saturating_mul(ABANDONED_AFTER_T1X64),
            )
            .filter(|_| !invite),
            linger_at: None,
            trying_at: later(now, self.timers.trying).filter(|_| invite),
            retransmissions_left: None,
            filed: [None; 4],
        };
        self.insert(now, TransactionId::Server(id), tx);
        Ok(match method {
            Method::Cancel => Inbound::Cancel {
                id,
                target,
                request,
            },
            _ => Inbound::Request { id, request },
        })
    }

    /// An ACK: absorbed by an INVITE server transaction waiting for it, or
    /// passed to the TU.
    fn server_ack(&mut self, now: Instant, found: Option<ServerId>, request: Message) -> Inbound {
        let Some(id) = found else {
            return Inbound::Ack {
                transaction: None,
                request,
            };
        };
        let i_timer = self.timers.t4;
        let Some(tx) = self.txs.get_mut(&TransactionId::Server(id)) else {
            return Inbound::Ack {
                transaction: None,
                request,
            };
        };
        match tx.state {
            State::Accepted => Inbound::Ack {
                transaction: Some(id),
                request,
            },
            State::Completed => {
                // §17.2.1: Confirmed; G stops, I starts (0 when reliable).
                tx.state = State::Confirmed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if tx.reliable {
                    self.terminate_tx(TransactionId::Server(id));
                } else {
                    tx.linger_at = later(now, i_timer);
                    self.rearm(now, TransactionId::Server(id));
                }
                Inbound::Absorbed(id)
            }
            _ => Inbound::Absorbed(id),
        }
    }

    /// A retransmitted request: resend the latest response (§17.2.1,
    /// §17.2.2), if the state has one to resend.
    fn server_retransmission(&mut self, now: Instant, id: ServerId) {
        let any = TransactionId::Server(id);
        let Some(tx) = self.txs.get_mut(&any) else {
            return;
        };
        let bytes = match tx.state {
            // RFC 6026 §7.1: the TU retransmits 2xx; the INVITE is absorbed.
            State::Accepted | State::Confirmed | State::Trying => return,
            State::Proceeding if tx.last.is_empty() => {
                // No provisional from the TU yet: the peer is retransmitting
                // already, so send the 100 Trying now rather than at 200 ms.
                let Some(trying) = tx.trying.take() else {
                    return;
                };
                tx.trying_at = None;
                tx.last = trying;
                tx.last.clone()
            }
            State::Proceeding | State::Completed => {
                let bytes = tx.last.clone();
                self.send_again(any, bytes);
                self.rearm(now, any);
                return;
            }
        };
        self.send(any, bytes);
        self.rearm(now, any);
    }

    /// Sends a response on a server transaction: provisionals keep it
    /// Proceeding, a 2xx to INVITE moves it to Accepted (further 2xx are the
    /// TU's retransmissions and are sent as given), any other final moves it
    /// to Completed and starts timers G/H (INVITE) or J (non-INVITE).
    pub fn send_response(
        &mut self,
        now: Instant,
        id: ServerId,
        response: Message,
    ) -> Result<(), TransactionError> {
        let any = TransactionId::Server(id);
        let code = response.status().ok_or(TransactionError::WrongKind {
            expected: "response",
        })?;
        let timers = self.timers;
        let tx = self
            .txs
            .get_mut(&any)
            .ok_or(TransactionError::Unknown(any))?;
        key::echo(&response, &mut self.scratch);
        if *tx.echo != *self.scratch {
            return Err(TransactionError::Mismatch);
        }
        let provisional = code < 200;
        let success = (200..300).contains(&code);
        match tx.state {
            State::Completed | State::Confirmed => return Err(TransactionError::FinalSent),
            State::Accepted if !success => return Err(TransactionError::FinalSent),
            _ => {}
        }
        let bytes = response.to_bytes();
        tx.trying = None;
        tx.trying_at = None;
        if !provisional {
            tx.response_tag = response.to().and_then(|to| to.tag()).map(Into::into);
        }
        let mut end_now = false;
        match (tx.kind, provisional, success) {
            (_, true, _) => tx.state = State::Proceeding,
            (Kind::InviteServer, false, true) => {
                if tx.state != State::Accepted {
                    tx.state = State::Accepted;
                    tx.linger_at = later(now, timers.t1x64());
                }
            }
            (Kind::InviteServer, false, false) => {
                tx.state = State::Completed;
                tx.timeout_at = later(now, timers.t1x64());
                if !tx.reliable {
                    tx.interval = timers.t1;
                    tx.retransmit_at = later(now, timers.t1);
                }
            }
            _ => {
                tx.state = State::Completed;
                tx.timeout_at = None;
                if tx.reliable {
                    end_now = true;
                } else {
                    tx.linger_at = later(now, timers.t1x64());
                }
            }
        }
        // What a retransmitted request gets again. Accepted resends nothing
        // (RFC 6026 §7.1: the TU retransmits its 2xx), so it keeps nothing:
        // the transaction lives 64*T1 after every answered call.
        tx.last = if tx.state == State::Accepted {
            Vec::new()
        } else {
            bytes.clone()
        };
        self.send(any, bytes);
        if end_now {
            self.terminate_tx(any);
        } else {
            self.rearm(now, any);
        }
        Ok(())
    }

    /// The TU has taken server INVITE transaction `id` on: its 100 Trying
    /// goes out now rather than at [`Timers::trying`]. §17.2.1 only bounds
    /// the delay (200 ms), but peers that wait for a 100 before anything
    /// else fail on the wait, and every major SIP server answers at once. A
    /// transaction that already sent a provisional, or has a final, sends
    /// nothing; so does an unknown `id`.
    pub fn send_trying(&mut self, now: Instant, id: ServerId) {
        let any = TransactionId::Server(id);
        let Some(tx) = self.txs.get_mut(&any) else {
            return;
        };
        if tx.state != State::Proceeding || !tx.last.is_empty() {
            return;
        }
        let Some(trying) = tx.trying.take() else {
            return;
        };
        tx.trying_at = None;
        tx.last = trying.clone();
        self.send(any, trying);
        self.rearm(now, any);
    }

    /// Whether server INVITE transaction `id`, still without a final, has
    /// sent a provisional (the TU's, or its own 100 Trying): its peer is then
    /// in Proceeding and waits for the final without retransmitting the
    /// INVITE (§17.1.1.2), so a lost final would never be asked for again.
    pub fn provisional_sent(&self, id: ServerId) -> bool {
        self.txs
            .get(&TransactionId::Server(id))
            .is_some_and(|tx| tx.state == State::Proceeding && !tx.last.is_empty())
    }

    /// Builds the CANCEL for a client INVITE transaction (§9.1): its
    /// Request-URI, top Via (so the same branch), Route set, From, To,
    /// Call-ID and CSeq number, method CANCEL. The TU sends it with
    /// [`send_request`](Self::send_request), where it becomes a non-INVITE
    /// transaction of its own; the INVITE transaction then gets its 487.
    pub fn cancel_request(&self, id: ClientId) -> Result<Message, TransactionError> {
        let any = TransactionId::Client(id);
        let tx = self.txs.get(&any).ok_or(TransactionError::Unknown(any))?;
        match (tx.kind, tx.state, &tx.request) {
            (Kind::InviteClient, State::Proceeding, Some(invite)) => {
                Message::parse(&build::cancel(invite))
                    .map_err(|_| TransactionError::Missing("a well-formed INVITE to cancel"))
            }
            (Kind::InviteClient, State::Trying, _) => Err(TransactionError::NoProvisionalYet),
            _ => Err(TransactionError::NotCancellable),
        }
    }

    /// Takes a received response and matches it to a client transaction by
    /// top Via branch and CSeq method (§17.1.3).
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: Message,
    ) -> Result<ResponseOutcome, TransactionError> {
        let code = response.status().ok_or(TransactionError::WrongKind {
            expected: "response",
        })?;
        if key::client_key_of_response(&response, &mut self.scratch).is_err() {
            return Ok(ResponseOutcome::Stray(response));
        }
        let Some(&id) = self.client_keys.get(self.scratch.as_slice()) else {
            return Ok(ResponseOutcome::Stray(response));
        };
        let any = TransactionId::Client(id);
        let timers = self.timers;
        let Some(tx) = self.txs.get_mut(&any) else {
            return Ok(ResponseOutcome::Stray(response));
        };
        let provisional = code < 200;
        let success = (200..300).contains(&code);
        let invite = tx.kind == Kind::InviteClient;
        let mut end_now = false;
        let mut send = None;
        let pass_up = match tx.state {
            State::Trying | State::Proceeding if provisional => {
                tx.state = State::Proceeding;
                if invite {
                    // §17.1.1.2: A stops; B only guards Calling.
                    tx.retransmit_at = None;
                    tx.timeout_at = None;
                }
                true
            }
            State::Trying | State::Proceeding => {
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if invite && success {
                    // RFC 6026 §7.2: Accepted for timer M.
                    tx.state = State::Accepted;
                    tx.linger_at = later(now, timers.t1x64());
                    // Nothing is retransmitted from here on.
                    tx.request = None;
                    tx.last = Vec::new();
                } else if invite {
                    tx.state = State::Completed;
                    let ack = tx
                        .request
                        .take()
                        .map(|request| build::ack(&request, &response))
                        .unwrap_or_default();
                    tx.last = ack.clone();
                    send = Some(ack);
                    if tx.reliable {
                        end_now = true;
                    } else {
                        tx.linger_at = later(now, timers.d);
                    }
                } else {
                    tx.state = State::Completed;
                    if tx.reliable {
                        end_now = true;
                    } else {
                        tx.linger_at = later(now, timers.t4);
                    }
                }
                true
            }
            State::Completed => {
                // §17.1.1.2: a retransmitted non-2xx final gets the ACK again.
                if invite && !provisional && !success {
                    send = Some(tx.last.clone());
                }
                false
            }
            State::Accepted => success,
            State::Confirmed => false,
        };
        if let Some(bytes) = send {
            self.send_again(any, bytes);
        }
        if pass_up {
            self.events.push_back(Event::Response { id, response });
        }
        if end_now {
            self.terminate_tx(any);
        } else {
            self.rearm(now, any);
        }
        Ok(ResponseOutcome::Matched(id))
    }

    /// Fires every timer due at `now`. Calling it early, late or twice is
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, id)) = self.deadlines.pop_due(now) {
            if live(&self.txs, at, id) {
                self.fire(now, id);
                self.rearm(now, id);
            }
        }
    }

    /// Runs every timer of `id` that is due.
    fn fire(&mut self, now: Instant, id: TransactionId) {
        let timers = self.timers;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(tx.linger_at) {
            // D, I, J, K, L, M: the lingering state ends.
            self.terminate_tx(id);
            return;
        }
        if due(tx.timeout_at) {
            // B, F, H, or a server non-INVITE its TU abandoned.
            self.events.push_back(Event::Timeout { id });
            self.terminate_tx(id);
            return;
        }
        let mut send = None;
        let mut again = None;
        if due(tx.trying_at) {
            tx.trying_at = None;
            if let Some(trying) = tx.trying.take() {
                tx.last = trying.clone();
                send = Some(trying);
            }
        }
        if due(tx.retransmit_at) && tx.retransmissions_left == Some(0) {
            // The TU's allowance is spent: silent until timer H or the ACK.
            tx.retransmit_at = None;
        } else if due(tx.retransmit_at) {
            if let Some(left) = &mut tx.retransmissions_left {
                *left -= 1;
            }
            // A doubles without a cap (B ends it); E and G double up to T2,
            // and E in Proceeding stays at T2 (§17.1.2.2).
            tx.interval = match (tx.kind, tx.state) {
                (Kind::InviteClient, _) => tx.interval.saturating_mul(2),
                (Kind::NonInviteClient, State::Proceeding) => timers.t2,
                _ => tx.interval.saturating_mul(2).min(timers.t2),
            };
            // A zero interval (a misconfigured T1/T2) must not spin.
            tx.interval = tx.interval.max(MIN_INTERVAL);
            tx.retransmit_at = later(now, tx.interval);
            again = Some(tx.last.clone());
        }
        if let Some(bytes) = send {
            self.send(id, bytes);
        }
        if let Some(bytes) = again {
            self.send_again(id, bytes);
        }
    }

    /// The transport failed to send for this transaction (§17.1.1.2,
    /// §17.1.2.2, §17.2.1, §17.2.2, §18.4): the TU is told, and the
    /// transaction ends unless it is Accepted (RFC 6026: the 2xx and its ACK
    /// are the TU's business, and timer L/M still bounds it). `now` is taken
    /// like on every input although no timer depends on it today.
    pub fn handle_transport_error(
        &mut self,
        _now: Instant,
        id: impl Into<TransactionId>,
    ) -> Result<(), TransactionError> {
        let id = id.into();
        let tx = self.txs.get(&id).ok_or(TransactionError::Unknown(id))?;
        self.events.push_back(Event::TransportError { id });
        if tx.state != State::Accepted {
            self.terminate_tx(id);
        }
        Ok(())
    }

    /// Ends a server transaction that has its final response without
    /// retransmitting it (for a source that may be spoofed: timer G would
    /// make a reflector of the SBC). A non-INVITE one is removed at once (a
    /// retransmitted request is answered again, as a stateless server
    /// would). An INVITE one stays `linger` to absorb retransmissions of
    /// the INVITE, each answered with the final once (never more datagrams
    /// out than in), then ends without a timeout event; its ACK ends it as
    /// usual. Anything else is left alone.
    pub fn quiet(
        &mut self,
        now: Instant,
        id: ServerId,
        linger: Duration,
    ) -> Result<(), TransactionError> {
        let (any, tx) = self.server_tx(id)?;
        match (tx.kind, tx.state) {
            (Kind::NonInviteServer, State::Completed) => self.terminate(any),
            (Kind::InviteServer, State::Completed) => {
                tx.retransmit_at = None;
                tx.timeout_at = None;
                tx.linger_at = later(now, linger);
                self.rearm(now, any);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The TU allows a server INVITE's final response at most
    /// `retransmissions` more retransmissions (timer G), for a source that
    /// may be spoofed but was sent a provisional, and so waits without
    /// retransmitting its INVITE (§17.1.1.2): it still gets the final again
    /// if one is lost, and a spoofed source's victim gets a bounded number of
    /// datagrams instead of timer G's ten. Timer H still ends the
    /// transaction; the ACK ends it sooner. Anything but a server INVITE
    /// transaction is left alone.
    pub fn limit_retransmissions(
        &mut self,
        id: ServerId,
        retransmissions: u8,
    ) -> Result<(), TransactionError> {
        let (_, tx) = self.server_tx(id)?;
        if tx.kind == Kind::InviteServer {
            tx.retransmissions_left = Some(retransmissions);
        }
        Ok(())
    }

    /// Server transaction `id`, live.
    fn server_tx(&mut self, id: ServerId) -> Result<(TransactionId, &mut Tx), TransactionError> {
        let any = TransactionId::Server(id);
        let tx = self
            .txs
            .get_mut(&any)
            .ok_or(TransactionError::Unknown(any))?;
        Ok((any, tx))
    }

    /// The TU abandons a transaction (e.g. §9.1: no final response 64*T1
    /// after its CANCEL). It is removed at once; an [`Event::Terminated`]
    /// follows like for any other ending.
    pub fn terminate(&mut self, id: impl Into<TransactionId>) -> Result<(), TransactionError> {
        let id = id.into();
        if !self.txs.contains_key(&id) {
            return Err(TransactionError::Unknown(id));
        }
        self.terminate_tx(id);
        Ok(())
    }

    /// The next message to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline of any live transaction (`None`: no timer is
    /// needed). Stale entries found first are dropped here.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some((at, id)) = self.deadlines.peek() {
            if live(&self.txs, at, id) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn insert(&mut self, now: Instant, id: TransactionId, tx: Tx) {
        self.txs.insert(id, Box::new(tx));
        self.rearm(now, id);
    }

    /// Files the timers of `id` set at `now` since it was last filed (the
    /// entries of timers that moved or ended go stale and are dropped when
    /// they surface). A timer is set as `now` plus a configured interval,
    /// which is what keeps [`Deadlines`] in O(1).
    fn rearm(&mut self, now: Instant, id: TransactionId) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        for at in tx.unfiled().into_iter().flatten() {
            self.deadlines.push(now, at, id);
        }
        // Stale entries of ended transactions wait for their instant; under
        // heavy churn, sweep them rather than let them pile up. A live
        // transaction has at most four entries, so the sweep is amortised
        // over at least as many new ones as there were live.
        if self.deadlines.len() > 8 * self.txs.len() + 1024 {
            let txs = &self.txs;
            self.deadlines.retain(|at, id| live(txs, at, id));
        }
    }

    /// How many deadlines are filed, stale ones included (bounded by a
    /// small multiple of [`len`](Self::len)).
    pub fn pending_deadlines(&self) -> usize {
        self.deadlines.len()
    }

    /// Queues bytes for a live transaction.
    fn send(&mut self, id: TransactionId, bytes: Vec<u8>) {
        if let Some(tx) = self.txs.get(&id) {
            queue(&mut self.transmits, id, tx, bytes, false);
        }
    }

    /// Queues a retransmission of `id`'s.
    fn send_again(&mut self, id: TransactionId, bytes: Vec<u8>) {
        if let Some(tx) = self.txs.get(&id) {
            queue(&mut self.transmits, id, tx, bytes, true);
        }
    }

    /// Removes a transaction and tells the TU.
    fn terminate_tx(&mut self, id: TransactionId) {
        if let Some(tx) = self.txs.remove(&id) {
            // A key may have been taken over by a newer transaction (RFC
            // 2543 keys whose To tags differ): remove only our own entry.
            match id {
                TransactionId::Client(cid) => {
                    if self.client_keys.get(&tx.key) == Some(&cid) {
                        self.client_keys.remove(&tx.key);
                    }
                }
                TransactionId::Server(sid) => {
                    if self.server_keys.get(&tx.key) == Some(&sid) {
                        self.server_keys.remove(&tx.key);
                    }
                }
            }
            self.events.push_back(Event::Terminated { id });
        }
    }
}

/// Whether the deadline `at` filed for `id` is live: the transaction is
/// still there and one of its timers runs out then.
fn live(txs: &IdMap<TransactionId, Box<Tx>>, at: Instant, id: TransactionId) -> bool {
    txs.get(&id)
        .is_some_and(|tx| tx.timers().contains(&Some(at)))
}

/// The shortest retransmission interval, whatever the configuration says.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// `now + d`, or `None` (never) when that is past what `Instant` can hold:
/// an absurd configured timer never fires rather than panicking.
fn later(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// Queues bytes for the transport on behalf of `tx`.
fn queue(
    transmits: &mut VecDeque<Transmit>,
    id: TransactionId,
    tx: &Tx,
    bytes: Vec<u8>,
    retransmission: bool,
) {
    transmits.push_back(Transmit {
        id,
        remote: tx.remote,
        reliable: tx.reliable,
        bytes,
        retransmission,
    });
}
