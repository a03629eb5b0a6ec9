//! A call and its two legs: each leg's dialog state (Call-ID, tags, CSeq,
//! route set, peer, connection) and what the call waits for (pending
//! messages behind media allocation, relayed requests, BYEs in flight).

use super::*;

/// The `o=` line the SBC shows one leg in place of the other side's (RFC
/// 3264 §5 and §8): one session id for the call, and a version that goes up
/// by one exactly when the SDP sent to that leg changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SdpOrigin {
    pub(super) session_id: u64,
    pub(super) version: u64,
    /// A hash of what the last SDP was made from (the far side's body and
    /// the anchored endpoints): the same input keeps the version.
    pub(super) source: u64,
}

impl SdpOrigin {
    /// The origin for an SDP made from `source`: the first one starts at
    /// version 1, an unchanged one keeps its version, a changed one bumps it.
    pub(crate) fn next(previous: Option<SdpOrigin>, session_id: u64, source: u64) -> SdpOrigin {
        match previous {
            Some(o) if o.source == source => o,
            Some(o) => SdpOrigin {
                version: o.version + 1,
                source,
                ..o
            },
            None => SdpOrigin {
                session_id,
                version: 1,
                source,
            },
        }
    }
}

/// Either leg of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Side {
    A,
    B,
}

impl Side {
    pub(super) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 0 for A, 1 for B: an index into per-leg arrays.
    pub(super) fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub(super) fn media(self) -> Leg {
        match self {
            Side::A => Leg::A,
            Side::B => Leg::B,
        }
    }
}

/// One leg's dialog and where its messages go.
#[derive(Clone, Debug)]
pub(super) struct LegState {
    pub(super) realm: usize,
    pub(super) listener: ListenerId,
    pub(super) transport: Transport,
    /// Next hop for requests on this leg.
    pub(super) peer: SocketAddr,
    pub(super) connection: Option<ConnectionId>,
    /// Call-ID, tags, From, To, target, Via sent-by and Contact.
    pub(super) text: LegText,
    pub(super) remote_tag_known: bool,
    pub(super) local_cseq: u32,
    pub(super) route_set: Vec<String>,
}

impl LegState {
    /// This leg's key in [`Core::dialogs`].
    pub(super) fn dialog_key(&self) -> Box<str> {
        dialog_key(self.text.get(Part::CallId), self.text.get(Part::LocalTag))
    }

    /// A request in this leg's dialog (its initial INVITE included), written
    /// from the leg's own state only: Request-URI (the peer's target), Via,
    /// From, To, Call-ID, CSeq (the leg's current number), route set and,
    /// for target refreshes, Contact.
    pub(super) fn request(
        &self,
        method: &str,
        branch: &str,
        max_forwards: u8,
        with_contact: bool,
        policy: &HeaderPolicy,
        content: Content<'_>,
    ) -> Vec<u8> {
        self.request_numbered(
            method,
            self.local_cseq,
            branch,
            max_forwards,
            with_contact,
            policy,
            content,
        )
    }

    /// [`LegState::request`] with CSeq number `cseq`: an ACK carries the
    /// number of the INVITE it acknowledges (§13.2.2.4), whatever the leg
    /// sent since.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_numbered(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        max_forwards: u8,
        with_contact: bool,
        policy: &HeaderPolicy,
        content: Content<'_>,
    ) -> Vec<u8> {
        build::request(
            &build::RequestHead {
                method,
                request_uri: self.text.get(Part::RemoteTarget),
                via_sent_by: self.text.get(Part::SentBy),
                branch,
                max_forwards,
                from: self.text.get(Part::Local),
                to: self.text.get(Part::Remote),
                call_id: self.text.get(Part::CallId),
                cseq,
                route_set: &self.route_set,
                contact: with_contact.then_some(self.text.get(Part::Contact)),
            },
            content.src,
            policy,
            content.extra,
            content.body,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for media allocation or B's answer.
    Setup,
    /// A got our 2xx; waiting for its ACK.
    Answered,
    /// Both legs confirmed.
    Confirmed,
    /// BYEs sent; waiting for them to finish.
    Ending,
}

/// A message waiting for media allocation before it can be relayed.
#[derive(Debug)]
pub(super) enum Pending {
    /// The initial INVITE towards B.
    Invite,
    /// A response from `from` to relay onto the other leg's server transaction.
    Response {
        from: Side,
        server: ServerId,
        response: Message,
    },
    /// An in-dialog request from `from` to relay onto the other leg.
    Request {
        from: Side,
        server: ServerId,
        request: Message,
    },
    /// An ACK (carrying a late-offer answer) from `from`.
    /// `cseq`: the number of the INVITE the relayed ACK acknowledges on
    /// the other leg.
    Ack { from: Side, ack: Message, cseq: u32 },
}

/// What became of a message the call queued: relayed (or answered, or
/// given up on), or still waiting for media ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Relayed {
    /// Done with: it leaves the queue.
    Done,
    /// Its SDP waits for an allocation: it stays at the head of the queue.
    WaitForMedia,
}

/// Why a call's timer was set: each kind fires into its own handler, so a
/// timer never has to be guessed from the call's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CallTimer {
    /// Retransmit our 2xx to A (T1 doubling to T2), or give up on A's ACK
    /// after 64*T1 (RFC 3261 §13.3.1.4).
    Retransmit2xx,
    /// 64*T1 after our CANCEL, stop waiting for B's INVITE to end (§9.1).
    GiveUpOnCancel,
    /// The trunk's `response_timeout_ms` after this INVITE to B went out:
    /// still no response at all, so its target counts as timed out.
    SilentTarget(ClientId),
}

/// Why a client transaction on a leg exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientRole {
    /// The initial INVITE on B.
    Invite,
    /// The CANCEL of B's INVITE.
    Cancel,
    /// A relayed in-dialog request, answering into this server transaction.
    Relay(ServerId),
    /// A BYE the SBC sends on its own (teardown).
    Bye,
    /// A BYE nobody waits for (to a caller that never ACKed).
    Courtesy,
}

#[derive(Debug)]
pub(super) struct Call {
    pub(super) id: u64,
    pub(super) phase: Phase,
    pub(super) a: LegState,
    pub(super) b: Option<LegState>,
    /// The initial INVITE as received on A, and its server transaction.
    /// Once A has its 2xx only its head is kept (see [`invite_head`]).
    pub(super) a_invite: Message,
    pub(super) a_server: ServerId,
    /// A's INVITE has its final response.
    pub(super) a_final: bool,
    /// B's INVITE client transaction, while it is open.
    pub(super) b_invite: Option<ClientId>,
    /// Where leg B is being placed, and how far it got.
    pub(super) setup: Setup,
    pub(super) trunk: Option<usize>,
    pub(super) source_trunk: Option<usize>,
    /// The 2xx we owe an ACK for (to A for its INVITE, or to either side
    /// for a re-INVITE it sent) and its retransmission schedule.
    pub(super) owed_2xx: Option<Owed2xx>,
    /// The ACK we last sent for a 2xx of B's (re-sent for a retransmitted
    /// 2xx); the one for the initial INVITE goes when its transaction ends.
    pub(super) b_ack: Option<Vec<u8>>,
    /// The ACK we last relayed to A for a 2xx of A's (A answered a
    /// re-INVITE of B's), re-sent for a retransmitted 2xx.
    pub(super) a_ack: Option<Vec<u8>>,
    /// The streams anchored for it and the SDP the SBC showed each leg.
    pub(super) media: CallMedia,
    pub(super) pending: VecDeque<Pending>,
    /// In-dialog server transactions waiting for the relayed response:
    /// their request, to build the response from.
    pub(super) relayed: HashMap<ServerId, Message>,
    /// How the call is being ended.
    pub(super) end: Ending,
    pub(super) started: Instant,
    /// First 18x/2xx relayed to A.
    pub(super) progressed: Option<Instant>,
    pub(super) answered: Option<Instant>,
    pub(super) a_status: u16,
    /// The untrusted source this call is counted against ([`protect`]).
    pub(super) guarded: Option<IpAddr>,
    /// The access realm and address-of-record this call counts against
    /// (`max_calls_per_user`), if any.
    pub(super) user: Option<(usize, String)>,
    /// Counted as a setup of that source (until A has its final response).
    pub(super) in_setup: bool,
    /// Its record for the other node of a pair ([`replica`](super::replica)).
    pub(super) replica: super::replica::Replica,
}

/// How far leg B's INVITE got: a CANCEL may go from `Trying` on (§9.1),
/// and from `Ringing` on the far end has the call, so no failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Progress {
    /// Sent, nothing back yet.
    Calling,
    /// A provisional came back (100 Trying included).
    Trying,
    /// A provisional beyond 100 came back.
    Ringing,
}

/// The INVITE/failover flow of leg B: the route's targets, the trunks tried,
/// redirects followed. Only meaningful until A has its final response.
#[derive(Debug)]
pub(super) struct Setup {
    pub(super) plan: Plan,
    /// The index in `plan.targets` of the next trunk to try.
    pub(super) next_target: usize,
    pub(super) trunks_tried: Vec<String>,
    /// The current trunk's targets still to try, in order, when its first
    /// fails (RFC 3263 §4.3); empty for a trunk of one address.
    pub(super) next_addrs: Vec<SocketAddr>,
    /// Attempts on another target of the same trunk so far.
    pub(super) target_retries: u8,
    /// To of leg B's INVITE (the original target, kept across redirects
    /// until A has its 2xx).
    pub(super) b_to: String,
    /// 3xx recursions so far.
    pub(super) redirects: u8,
    /// The first trunk limit that held the call back from a target.
    pub(super) held_back: Option<RejectReason>,
    /// B's INVITE progress (reset for each target).
    pub(super) progress: Progress,
    /// A cancelled: CANCEL B as soon as §9.1 allows.
    pub(super) cancel_b: bool,
}

impl Setup {
    pub(super) fn new(plan: Plan) -> Setup {
        Setup {
            plan,
            next_target: 0,
            trunks_tried: Vec::new(),
            next_addrs: Vec::new(),
            target_retries: 0,
            b_to: String::new(),
            redirects: 0,
            held_back: None,
            progress: Progress::Calling,
            cancel_b: false,
        }
    }
}

/// A call's media: per `m=` line its stream and, once allocated, both
/// legs' endpoints; and the `o=` the SBC showed each leg.
#[derive(Debug, Default)]
pub(super) struct CallMedia {
    pub(super) streams: Vec<Option<(StreamId, Option<[LocalEndpoint; 2]>)>>,
    /// The realm of the B side the streams are allocated on.
    pub(super) media_realm_b: Option<usize>,
    /// The `o=` the SBC shows each leg (indexed by [`Side::index`]), once
    /// it has sent that leg an SDP.
    pub(super) origins: [Option<SdpOrigin>; 2],
    /// Streams released so far (their counters arrive as `Released`).
    pub(super) released: Vec<StreamId>,
    /// Per leg (by [`Side::index`]): the media relay never learned where
    /// that leg's media comes from while it kept sending.
    pub(super) not_latched: [bool; 2],
    /// The To tag of the B response whose SDP was last anchored, during
    /// setup: a 2xx without SDP is usable only from the dialog that already
    /// gave one (not from another fork, nor from a trunk tried after the one
    /// that sent it). Cleared when B's leg starts afresh.
    pub(super) b_answer_tag: Option<Box<str>>,
    /// Per leg (by [`Side::index`]): the media address its streams are
    /// anchored on, chosen among its realm's at the first allocation and
    /// counted in the core's load until the streams are released.
    pub(super) addresses: [Option<IpAddr>; 2],
    /// Per `m=` line, each leg's latest remote and direction: kept only
    /// with replication on (a successor sets them again).
    pub(super) remotes: Vec<
        [Option<(
            crate::media::command::Remote,
            crate::media::command::Direction,
        )>; 2],
    >,
}

/// The end of a call: BYEs in flight, and who ended it.
#[derive(Debug, Default)]
pub(super) struct Ending {
    /// The call ended before A ACKed our 2xx: A's BYE waits for that ACK
    /// (or for the 2xx to time out), as §15 requires of a callee.
    pub(super) bye_a_after_ack: bool,
    /// A BYE went on each leg (by [`Side::index`]): never a second.
    pub(super) bye_sent: [bool; 2],
    /// BYE client transactions still open during teardown.
    pub(super) byes: u8,
    pub(super) ended_by: Option<EndedBy>,
}

impl Call {
    /// Forgets the request of a relayed server transaction that has its
    /// final response; returns it.
    /// Whether a re-INVITE from `side` is waiting for its final response
    /// (relayed, or queued behind media allocation). Relayed requests are
    /// told apart by their Call-ID: each leg has its own.
    /// Whether A has not yet ACKed the 2xx to its initial INVITE.
    pub(super) fn awaiting_a_ack(&self) -> bool {
        self.owed_2xx
            .as_ref()
            .is_some_and(|o| o.to == Side::A && o.server == self.a_server)
    }

    pub(super) fn invite_in_progress(&self, side: Side) -> bool {
        let a_call_id = self.a.text.get(Part::CallId).as_bytes();
        let relayed = self.relayed.values().any(|r| {
            r.method() == Some(Method::Invite)
                && (r.call_id() == Some(a_call_id)) == (side == Side::A)
        });
        // An INVITE whose 2xx awaits its ACK is still in progress (its
        // sender's next INVITE gets 500, the other side's 491).
        relayed
            || self.owed_2xx.as_ref().is_some_and(|o| o.to == side)
            || self.pending.iter().any(|p| {
                matches!(p, Pending::Request { from, request, .. }
                    if *from == side && request.method() == Some(Method::Invite))
            })
    }

    pub(super) fn answered_relay(&mut self, server: ServerId) -> Option<Message> {
        let request = self.relayed.remove(&server);
        if self.relayed.is_empty() {
            // A session refresh every few minutes must not leave a table
            // behind for the rest of the call.
            self.relayed.shrink_to_fit();
        }
        request
    }
}

/// A 2xx the SBC sent as a UAS and retransmits until its ACK (§13.3.1.4):
/// T1 doubling up to T2, for 64*T1, then the call ends (no ACK is a dead
/// peer).
#[derive(Debug)]
pub(super) struct Owed2xx {
    /// The INVITE's server transaction (Accepted, RFC 6026).
    pub(super) server: ServerId,
    /// The leg it went to, whose ACK settles it.
    pub(super) to: Side,
    /// The CSeq number of the other leg's 2xx it relays (0: ours, nothing
    /// to acknowledge there): the relayed ACK carries it.
    pub(super) ack_cseq: u32,
    pub(super) bytes: Vec<u8>,
    pub(super) interval: Duration,
    pub(super) give_up: Instant,
}

pub(super) fn leg_ref(call: &Call, side: Side) -> Option<&LegState> {
    match side {
        Side::A => Some(&call.a),
        Side::B => call.b.as_ref(),
    }
}

pub(super) fn leg_mut(call: &mut Call, side: Side) -> Option<&mut LegState> {
    match side {
        Side::A => Some(&mut call.a),
        Side::B => call.b.as_mut(),
    }
}

/// A dialog's key (Call-ID and our tag) as one string, so each costs one
/// allocation: the tag's length first keeps the pair unambiguous.
pub(super) fn dialog_key(call_id: &str, tag: &str) -> Box<str> {
    format!("{}:{tag}{call_id}", tag.len()).into_boxed_str()
}

pub(super) fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

pub(super) fn sent_by(transport: Transport, addr: SocketAddr) -> String {
    format!("SIP/2.0/{} {}", transport.as_str(), host_port(addr))
}

pub(super) fn contact_uri(transport: Transport, addr: SocketAddr) -> String {
    match transport {
        Transport::Udp => format!("<sip:sbc@{}>", host_port(addr)),
        Transport::Tcp => format!("<sip:sbc@{};transport=tcp>", host_port(addr)),
        // transport=tls rather than a sips: URI: SIPS would promise TLS on
        // every hop beyond the SBC too (RFC 5630 §3.1.3), which is the
        // peer's to ask for, not ours.
        Transport::Tls => format!("<sip:sbc@{};transport=tls>", host_port(addr)),
    }
}

/// What a request on a leg carries besides the leg's own dialog state.
pub(super) struct Content<'a> {
    /// The message being relayed, whose other headers may cross.
    pub(super) src: Option<&'a Message>,
    /// Headers of the SBC's own (e.g. a renumbered RAck).
    pub(super) extra: &'a [(&'a str, &'a str)],
    /// The body, already anchored.
    pub(super) body: &'a [u8],
}

impl Content<'static> {
    /// A request of the SBC's own: nothing relayed, no extra header, no
    /// body (an ACK or BYE it writes itself).
    pub(super) const NONE: Content<'static> = Content {
        src: None,
        extra: &[],
        body: b"",
    };
}

/// Where a leg's messages go, copied out of the leg so the call may stay
/// borrowed while the core sends.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hop {
    pub(super) listener: ListenerId,
    pub(super) transport: Transport,
    pub(super) to: SocketAddr,
    pub(super) connection: Option<ConnectionId>,
}

impl LegState {
    /// Where this leg's messages go.
    pub(super) fn hop(&self) -> Hop {
        Hop {
            listener: self.listener,
            transport: self.transport,
            to: self.peer,
            connection: self.connection,
        }
    }
}

/// The URI of a message's first Contact, if it has one that is not `*`.
pub(super) fn first_contact_uri(msg: &Message) -> Option<String> {
    msg.contacts()
        .next()
        .and_then(Result::ok)
        .and_then(|c| match c {
            sip::header::Contact::Addr(addr) => {
                Some(String::from_utf8_lossy(addr.uri().as_bytes()).into_owned())
            }
            sip::header::Contact::Star => None,
        })
}
