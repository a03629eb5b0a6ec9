//! The core's output vocabulary: events for metrics, logs and CDRs, and the
//! reasons they carry. Each reason owns its label string.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::BanReason;
use crate::media::command::{Leg, StreamId};
use crate::sip::{Message, Method};

/// Something the IO shell reports (metrics, logs, CDRs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreEvent {
    /// A SIP message was received or sent on a realm.
    Sip {
        /// The realm's name.
        realm: String,
        /// Received (true) or sent.
        inbound: bool,
        /// The method of a request.
        method: Option<Method>,
        /// The status of a response.
        status: Option<u16>,
    },
    /// The SBC sent a message on a realm again (a transaction's
    /// retransmission, or a 2xx retransmitted until its ACK).
    Retransmitted {
        /// The realm's name.
        realm: String,
    },
    /// A message on a realm failed to parse.
    ParseError {
        /// The realm's name.
        realm: String,
    },
    /// A request was refused before it became a call.
    Rejected {
        /// The realm's name.
        realm: String,
        /// Why.
        reason: RejectReason,
    },
    /// A call got its first 18x or 2xx, `setup` after its INVITE.
    CallSetup {
        /// The call.
        call: u64,
        /// INVITE to first 18x/2xx.
        setup: Duration,
    },
    /// A call's leg B was started towards a trunk (the first attempt, or a
    /// failover or redirect to another).
    CallAttempt {
        /// The call.
        call: u64,
        /// 1 for the first attempt.
        attempt: usize,
        /// Leg A's Call-ID (the caller's).
        a_call_id: String,
        /// Leg B's Call-ID (ours, new per attempt).
        b_call_id: String,
        /// Where the call came from.
        from_realm: String,
        /// The realm of leg B.
        to_realm: String,
        /// The trunk tried, if the target is one.
        trunk: Option<String>,
    },
    /// A call ended.
    CallEnded(Box<CallSummary>),
    /// An answered call, for the other node of a pair to carry on
    /// (replication on): written when answered and whenever it changes.
    Replicate(Box<super::replica::CallRecord>),
    /// A call [`CoreEvent::Replicate`] wrote is ending.
    Unreplicate {
        /// The call.
        call: u64,
    },
    /// Media on a leg of a call kept coming from a source the relay may not
    /// learn after its learning window: that leg's audio is being dropped.
    MediaNotLatched {
        /// The call.
        call: u64,
        /// The leg (`A`: the caller's).
        leg: Leg,
        /// That leg's realm.
        realm: String,
        /// That leg's Call-ID (for the log line).
        call_id: String,
    },
    /// A phone's REGISTER on an access realm was handled.
    Register {
        /// The access realm's name.
        realm: String,
        /// What became of it.
        outcome: RegisterOutcome,
    },
    /// A keepalive OPTIONS went to a registered phone, or one went
    /// unanswered (the binding is then removed).
    Keepalive {
        /// Unanswered.
        failed: bool,
    },
    /// The core asks for a source to be banned (the transport's shield
    /// enforces it, [`crate::guard`]).
    Banned {
        /// The realm's name.
        realm: String,
        /// The source address.
        source: IpAddr,
        /// Why.
        reason: BanReason,
    },
    /// Something inside the core failed that a correct run never sees; the
    /// call went on where it could, or was ended cleanly.
    CallError {
        /// The call it happened on, if any.
        call: Option<u64>,
        /// The leg of that call (`A`: the caller's), if the failure was on
        /// one.
        leg: Option<Leg>,
        /// What failed.
        error: CallError,
    },
    /// A trunk's OPTIONS health check changed its verdict (or gave its first).
    TrunkState {
        /// The trunk's name.
        trunk: String,
        /// Whether it answers.
        up: bool,
    },
    /// One of a trunk's targets (its address, or one its DNS name resolved
    /// to) changed its health-check verdict (or gave its first).
    TargetState {
        /// The trunk's name.
        trunk: String,
        /// The target.
        target: std::net::SocketAddr,
        /// Whether it answers.
        up: bool,
    },
    /// A trunk's DNS name resolved to a different set of targets (those
    /// gone have no health any more).
    TrunkTargets {
        /// The trunk's name.
        trunk: String,
        /// Its targets now, by ascending SRV priority.
        targets: Vec<std::net::SocketAddr>,
    },
}

/// What became of a phone's REGISTER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Sent on to the registrar (a new binding, a change, a removal, or a
    /// refresh the registrar's binding would not outlive).
    Relayed,
    /// A refresh the SBC answered itself (registration throttling).
    Absorbed,
    /// Refused by the SBC (binding limits).
    Refused,
}

impl RegisterOutcome {
    /// Every outcome, for series present from start-up.
    pub const ALL: [RegisterOutcome; 3] = [
        RegisterOutcome::Relayed,
        RegisterOutcome::Absorbed,
        RegisterOutcome::Refused,
    ];

    /// The label value of `sbc_registers_total{outcome}`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RegisterOutcome::Relayed => "relayed",
            RegisterOutcome::Absorbed => "absorbed",
            RegisterOutcome::Refused => "refused",
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The source is not allowed on the realm.
    Acl,
    /// A trunk's calls-per-second limit.
    RateLimit,
    /// A global or trunk concurrent-call or transaction limit.
    Admission,
    /// No route matched, or every target was unusable.
    NoRoute,
    /// Media ports ran out.
    MediaPorts,
    /// The SBC is shutting down.
    Draining,
    /// The request failed a server check (416, 420, 483, 501) or was malformed.
    Invalid,
    /// An untrusted source holds its share of transactions, setups or calls
    /// (`[protection] max_*_per_source`).
    SourceLimit,
    /// The User-Agent of a known scanner: dropped, the source banned.
    Scanner,
    /// An in-dialog request, ACK or CANCEL from someone other than the
    /// dialog's peer.
    ForeignInDialog,
    /// The SBC is saturated, or untrusted sources hold their share of it.
    Overload,
    /// The message was larger than the parser takes.
    Oversized,
}

/// What a finished call leaves behind (the CDR's raw material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSummary {
    /// The call's number within this core.
    pub call: u64,
    /// The realm it arrived on.
    pub from_realm: String,
    /// The trunk it arrived from, if the source matched one.
    pub from_trunk: Option<String>,
    /// The route taken.
    pub route: Option<String>,
    /// Trunks tried, in order; the last is the one used.
    pub trunks_tried: Vec<String>,
    /// Leg A's and leg B's Call-IDs.
    pub call_ids: (String, Option<String>),
    /// The INVITE as received on leg A (From, To, Request-URI, Call-ID);
    /// of an answered call only its head (start line, Via, From, To,
    /// Call-ID, CSeq): no body, no other header.
    pub invite: Message,
    /// The realm of the last B leg.
    pub to_realm: Option<String>,
    /// The media streams the call had (their final counters follow as
    /// `MediaEvent::Released`).
    pub streams: Vec<StreamId>,
    /// INVITE received.
    pub started: Instant,
    /// First 18x/2xx relayed.
    pub progressed: Option<Instant>,
    /// First 2xx relayed.
    pub answered: Option<Instant>,
    /// Call torn down.
    pub ended: Instant,
    /// The final status A got for its INVITE (200 for answered calls).
    pub status: u16,
    /// Who hung up.
    pub ended_by: EndedBy,
    /// Per leg (A, B): media kept coming from sources the relay could not
    /// learn (one-way or no audio; see `MediaEvent::NotLatched`).
    pub not_latched: [bool; 2],
}

/// Who ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// Leg A (BYE or CANCEL).
    Caller,
    /// Leg B (BYE), or the trunk's final failure response.
    Callee,
    /// The SBC itself.
    Sbc(SbcReason),
}

/// Why the SBC ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbcReason {
    /// Shutting down.
    Shutdown,
    /// The media layer saw no media for too long.
    MediaTimeout,
    /// No media ports were free.
    MediaPorts,
    /// No route, or no usable trunk on it.
    NoRoute,
    /// The offer could not be anchored (malformed or unusable SDP).
    BadSdp,
    /// The transaction table was full.
    Overload,
    /// The trunk never answered (timer B) or could not be reached.
    NoAnswer,
    /// The caller never ACKed our 2xx (64*T1, RFC 3261 §13.3.1.4).
    NoAck,
    /// A state the core should not reach; the call was cleaned up.
    Internal,
}

/// A failure inside the call core (reported as [`CoreEvent::CallError`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// A message the core wrote did not parse back: a writer bug, or input
    /// the writer could not carry. `what` names the message.
    Build {
        /// Which message.
        what: &'static str,
    },
    /// The transaction layer refused an operation the core asked for (the
    /// transaction had already ended, or the table was full).
    TransactionRefused {
        /// Which operation.
        what: &'static str,
        /// The layer's error.
        detail: String,
    },
}

impl CallError {
    /// Every [`CallError::kind`], for series present from start-up.
    pub const KINDS: [&'static str; 2] = ["build", "transaction_refused"];

    /// The label value of `sbc_call_errors_total{kind}`.
    pub const fn kind(&self) -> &'static str {
        match self {
            CallError::Build { .. } => "build",
            CallError::TransactionRefused { .. } => "transaction_refused",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Build { what } => write!(f, "the {what} the core wrote does not parse"),
            CallError::TransactionRefused { what, detail } => {
                write!(f, "the transaction layer refused to {what}: {detail}")
            }
        }
    }
}
