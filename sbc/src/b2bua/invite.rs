//! The INVITE flow: admission of a new call, leg B towards the route's
//! trunks with failover and 3xx recursion, CANCEL (with the §9.1 wait for a
//! provisional), B's responses relayed to A, and A's final answer when the
//! call fails.

use super::*;

/// The first `sip:`/`sips:` Contact of a 3xx whose host is an IP address,
/// as a Request-URI and where to send it (port 5060 when none is given).
pub(super) fn redirect_target(response: &Message) -> Option<(String, SocketAddr)> {
    response
        .contacts()
        .filter_map(Result::ok)
        .find_map(|contact| {
            let sip::header::Contact::Addr(addr) = contact else {
                return None;
            };
            let uri = addr.uri();
            if !matches!(uri.scheme(), sip::uri::Scheme::Sip | sip::uri::Scheme::Sips) {
                return None;
            }
            let ip = uri.host()?.ip()?;
            let peer = SocketAddr::new(ip, uri.port().unwrap_or(5060));
            Some((String::from_utf8_lossy(uri.as_bytes()).into_owned(), peer))
        })
}

/// The head of A's INVITE, all of it a call needs once A has its 2xx: the
/// Request-URI, Via, From, To, Call-ID and CSeq, which a response to it
/// echoes ([`build::response`]), `RAck` renumbering reads and the CDR names
/// ([`CallSummary::invite`]). No body and no other header: leg B's INVITE
/// (the one thing written from those) is sent. `None` if it does not parse.
pub(super) fn invite_head(invite: &Message) -> Option<Message> {
    let head = invite_head_bytes(invite)?;
    let parsed = Message::parse(&head).ok()?;
    // A clone allocates its buffers at their length: the parser's header
    // table starts with room for 16 headers, the head has about 6.
    Some(parsed.clone())
}

/// The bytes of [`invite_head`].
pub(super) fn invite_head_bytes(invite: &Message) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(invite.method_bytes()?);
    head.push(b' ');
    head.extend_from_slice(invite.request_uri_bytes()?);
    head.extend_from_slice(b" SIP/2.0\r\n");
    for h in invite.headers() {
        if sip::response::copied_to_responses(h.name) {
            head.extend_from_slice(h.name_bytes);
            head.extend_from_slice(b": ");
            head.extend_from_slice(h.value);
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(head)
}

/// How many 3xx redirects one call may follow (loops end here).
pub(super) const MAX_REDIRECTS: u8 = 3;

impl Core {
    pub(super) fn on_invite(&mut self, now: Instant, meta: &Meta, id: ServerId, request: Message) {
        let realm = meta.realm;
        let refuse = |core: &mut Core, status: u16, reason: RejectReason| {
            core.refuse(now, meta, id, &request, status, Some(reason));
        };
        // (A retiring listener never gets here: `on_request` refuses what
        // is new on it.)
        if self.draining {
            return refuse(self, 503, RejectReason::Draining);
        }
        if self.calls.len() >= self.max_calls {
            return refuse(self, 503, RejectReason::Admission);
        }
        if let Some(reason) = self.invite_refusal(meta) {
            return refuse(self, 503, reason);
        }
        let source_trunk = self
            .trunks
            .iter()
            .position(|t| !t.retired && t.realm == realm && t.has_ip(meta.remote.ip()));
        if !self.may_call_out(meta) {
            // An access realm takes calls from registered phones only.
            return refuse(self, 403, RejectReason::Acl);
        }
        let Some(uri) = request.request_uri() else {
            return refuse(self, 400, RejectReason::Invalid);
        };
        let user = uri.user().unwrap_or_default().to_vec();
        // A call to a registered phone (the Contact the SBC gave the
        // registrar), or to one whose binding is gone.
        let registered = self
            .bindings
            .by_token(&user)
            .map(|b| (b.realm, b.flow, b.contact.clone(), b.aor.clone()));
        if registered.is_none() && access::is_token(&user) {
            return refuse(self, 480, RejectReason::NoRoute);
        }
        let counted = self.call_user(
            meta,
            &request,
            registered
                .as_ref()
                .map(|(realm, _, _, aor)| (*realm, aor.as_str())),
        );
        if counted.as_ref().is_some_and(|u| !self.user_may_call(u)) {
            // The user's phones have as many calls up as it may have.
            return refuse(self, 486, RejectReason::Admission);
        }
        let domain = uri.host().map(|h| h.to_string()).unwrap_or_default();
        let facts = CallFacts {
            realm: &self.realms[realm].name,
            trunk: source_trunk.map(|t| self.trunks[t].name.as_str()),
            user: &user,
            domain: domain.trim_start_matches('[').trim_end_matches(']'),
        };
        let trunks = &self.trunks;
        let plan = match &registered {
            Some(_) => Some(Plan {
                route: "registered".into(),
                targets: Vec::new(),
                failover_on: Vec::new(),
            }),
            None => routing::select(&self.routes, &facts, |name| {
                trunks.iter().position(|t| t.name == name)
            }),
        };
        let Some(plan) = plan else {
            return refuse(self, 404, RejectReason::NoRoute);
        };
        // Trunks whose health check failed are tried last, not skipped: a
        // probe can fail while calls would still work.
        let mut plan = plan;
        plan.targets
            .sort_by_key(|&t| self.trunks[t].up == Some(false));
        let Some(contact) = first_contact_uri(&request) else {
            return refuse(self, 400, RejectReason::Invalid);
        };
        let local_tag = self.ids.tag();
        let to = String::from_utf8_lossy(request.header(HeaderName::To).unwrap_or_default())
            .into_owned();
        let from = String::from_utf8_lossy(request.header(HeaderName::From).unwrap_or_default())
            .into_owned();
        let call_id = String::from_utf8_lossy(request.call_id().unwrap_or_default()).into_owned();
        let route_set: Vec<String> = request
            .values(HeaderName::RecordRoute)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let listener = &self.listeners[meta.listener.0].info;
        let a = LegState {
            realm,
            listener: meta.listener,
            transport: meta.transport,
            peer: meta.remote,
            connection: meta.connection,
            text: LegText::new([
                &call_id,
                &local_tag,
                &format!("{to};tag={local_tag}"),
                &from,
                &contact,
                &sent_by(meta.transport, listener.public()),
                &contact_uri(meta.transport, listener.public()),
            ]),
            remote_tag_known: true,
            local_cseq: self.ids.next_bytes()[0] as u32 + 1,
            route_set,
        };
        let call_no = self.next_call;
        self.next_call += 1;
        self.dialogs
            .insert(dialog_key(&call_id, &local_tag), (call_no, Side::A));
        self.servers.insert(id, call_no);
        let mut call = Box::new(Call {
            id: call_no,
            phase: Phase::Setup,
            a,
            b: None,
            a_invite: request,
            a_server: id,
            a_final: false,
            b_invite: None,
            setup: Setup::new(plan),
            trunk: None,
            source_trunk,
            owed_2xx: None,
            b_ack: None,
            a_ack: None,
            media: CallMedia::default(),
            pending: VecDeque::new(),
            relayed: HashMap::new(),
            end: Ending::default(),
            started: now,
            progressed: None,
            answered: None,
            a_status: 0,
            guarded: None,
            user: None,
            in_setup: false,
            replica: super::replica::Replica::default(),
        });
        self.count_call(&mut call, meta);
        self.count_user_call(counted.as_ref(), true);
        call.user = counted;
        match registered {
            Some((realm, flow, contact, aor)) => {
                call.setup.b_to = format!("<{aor}>");
                let listener = flow.listener.0;
                self.start_b_leg(
                    now,
                    &mut call,
                    realm,
                    flow.transport,
                    listener,
                    flow.peer,
                    contact,
                    flow.connection,
                );
            }
            None => self.try_next_target(now, &mut call),
        }
        if !call.a_final {
            // The call is on its way: 100 Trying at once, as peers expect
            // (a refusal above went out alone, with no 100 before it).
            self.tx.send_trying(now, id);
        }
        self.put_back(now, call);
    }

    /// Starts leg B towards the route's next usable trunk, or fails the call.
    pub(super) fn try_next_target(&mut self, now: Instant, call: &mut Call) {
        loop {
            let Some(&trunk) = call.setup.plan.targets.get(call.setup.next_target) else {
                let status = if call.setup.trunks_tried.is_empty() {
                    // Refused once, for the first trunk limit that held it
                    // back, or for having no usable trunk at all.
                    let reason = call.setup.held_back.unwrap_or(RejectReason::NoRoute);
                    self.event_rejected(call.a.realm, reason);
                    503
                } else {
                    call.a_status.max(480)
                };
                return self.fail_call(now, call, status, EndedBy::Sbc(SbcReason::NoRoute));
            };
            call.setup.next_target += 1;
            let state = &mut self.trunks[trunk];
            if state.targets.is_empty() {
                continue; // a DNS name not resolved (yet)
            }
            match state.admit(now) {
                Ok(()) => {}
                Err(refusal) => {
                    call.setup.held_back.get_or_insert(match refusal {
                        Refusal::Calls => RejectReason::Admission,
                        Refusal::Rate => RejectReason::RateLimit,
                    });
                    continue;
                }
            }
            // The trunk's targets in RFC 2782 order (randomness drawn only
            // when a priority has more than one), those without a listener
            // of their transport left out.
            let ids = &mut self.ids;
            let mut order = self.trunks[trunk].call_order(now, || {
                let b = ids.next_bytes();
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            });
            order.retain(|&addr| self.trunk_target_listener(trunk, addr).is_some());
            if order.is_empty() {
                self.trunks[trunk].release();
                continue;
            }
            if let Some(previous) = call.trunk.replace(trunk) {
                self.trunks[previous].release();
            }
            // One at a time: most calls take the first trunk they try.
            call.setup.trunks_tried.reserve_exact(1);
            call.setup
                .trunks_tried
                .push(self.trunks[trunk].name.clone());
            let peer = order.remove(0);
            // Kept only when there is another target to fail over to.
            call.setup.next_addrs = order;
            self.start_trunk_target(now, call, trunk, peer);
            return;
        }
    }

    /// The listener a call to `addr`, one of `trunk`'s targets, leaves from
    /// (and the transport it uses).
    fn trunk_target_listener(&self, trunk: usize, addr: SocketAddr) -> Option<(usize, Transport)> {
        let state = self.trunks.get(trunk)?;
        let transport = state
            .targets
            .iter()
            .find(|t| t.addr == addr)
            .map_or(state.transport, |t| state.transport_to(t));
        Some((
            self.realm_listener(state.realm, transport, addr)?,
            transport,
        ))
    }

    /// Starts leg B towards `peer`, one of `trunk`'s targets.
    fn start_trunk_target(
        &mut self,
        now: Instant,
        call: &mut Call,
        trunk: usize,
        peer: SocketAddr,
    ) {
        let Some((listener, transport)) = self.trunk_target_listener(trunk, peer) else {
            // (Listeners were checked when the order was made.)
            return self.fail_call(now, call, 503, EndedBy::Sbc(SbcReason::NoRoute));
        };
        let realm = self.trunks[trunk].realm;
        let user = call
            .a_invite
            .request_uri()
            .and_then(|u| u.user().map(|u| String::from_utf8_lossy(u).into_owned()))
            .unwrap_or_default();
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let host = host_port(peer);
        call.setup.b_to = format!("<sip:{at}{host}>");
        let target = format!("sip:{at}{host}");
        self.start_b_leg(now, call, realm, transport, listener, peer, target, None);
    }

    /// Starts (or restarts) leg B towards `peer`, with `target` as its
    /// Request-URI and remote target: a new Call-ID and From tag, our
    /// realm address in From (the caller's user and display name kept),
    /// Via and Contact; the INVITE goes out once its offer is anchored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_b_leg(
        &mut self,
        now: Instant,
        call: &mut Call,
        realm: usize,
        transport: Transport,
        listener: usize,
        peer: SocketAddr,
        target: String,
        connection: Option<ConnectionId>,
    ) {
        let addr = self.listeners[listener].info.public();
        let local_tag = self.ids.tag();
        let call_id = self.ids.call_id();
        let from = call.a_invite.from();
        let from_user = from
            .as_ref()
            .and_then(|f| {
                f.uri()
                    .user()
                    .map(|u| String::from_utf8_lossy(u).into_owned())
            })
            .unwrap_or_else(|| "anonymous".into());
        let display = from
            .as_ref()
            .and_then(|f| {
                f.display_name()
                    .map(|d| format!("{} ", String::from_utf8_lossy(d)))
            })
            .unwrap_or_default();
        call.media.b_answer_tag = None;
        let b = LegState {
            realm,
            listener: ListenerId(listener),
            transport,
            peer,
            connection,
            text: LegText::new([
                &call_id,
                &local_tag,
                &format!(
                    "{display}<sip:{from_user}@{}>;tag={local_tag}",
                    host_port(addr)
                ),
                &call.setup.b_to,
                &target,
                &sent_by(transport, addr),
                &contact_uri(transport, addr),
            ]),
            remote_tag_known: false,
            local_cseq: 1,
            route_set: Vec::new(),
        };
        self.events.push_back(CoreEvent::CallAttempt {
            call: call.id,
            attempt: call.setup.trunks_tried.len().max(1)
                + usize::from(call.setup.redirects)
                + usize::from(call.setup.target_retries),
            a_call_id: call.a.text.get(Part::CallId).to_owned(),
            b_call_id: call_id.clone(),
            from_realm: self.realms[call.a.realm].name.clone(),
            to_realm: self.realms[realm].name.clone(),
            trunk: call.setup.trunks_tried.last().cloned(),
        });
        self.dialogs
            .insert(dialog_key(&call_id, &local_tag), (call.id, Side::B));
        if let Some(old) = call.b.replace(b) {
            self.dialogs.remove(&old.dialog_key());
        }
        call.setup.progress = Progress::Calling;
        call.pending.push_back(Pending::Invite);
        self.run_pending(now, call);
    }

    /// The initial INVITE on B (once its offer, if any, is anchored).
    pub(super) fn send_b_invite(&mut self, now: Instant, call: &mut Call) -> Relayed {
        let body = if call.a_invite.body().is_empty() {
            Vec::new()
        } else {
            let source = call.a.peer.ip();
            let body = call.a_invite.body().to_vec();
            match self.anchor(now, call, Side::A, &body, source) {
                Anchored::Ready(body) => body,
                Anchored::Wait => return Relayed::WaitForMedia,
                Anchored::Invalid(status) => {
                    self.fail_call(now, call, status, EndedBy::Sbc(SbcReason::BadSdp));
                    return Relayed::Done;
                }
            }
        };
        let Some(b) = call.b.as_mut() else {
            return Relayed::Done;
        };
        let max_forwards = call.a_invite.max_forwards().unwrap_or(70).saturating_sub(1);
        let branch = self.ids.branch();
        let policy = call
            .trunk
            .and_then(|t| self.trunks.get(t))
            .and_then(|t| t.header_policy.as_ref())
            .unwrap_or(&self.policy);
        let bytes = b.request(
            "INVITE",
            &branch,
            max_forwards,
            true,
            policy,
            Content {
                src: Some(&call.a_invite),
                extra: &[],
                body: &body,
            },
        );
        let (listener, transport, peer, connection) =
            (b.listener, b.transport, b.peer, b.connection);
        let Some(request) =
            self.parse_built(Some((call.id, Side::B)), "INVITE towards the trunk", &bytes)
        else {
            // Nothing went out: fail the call rather than leave it waiting.
            self.fail_call(now, call, 500, EndedBy::Sbc(SbcReason::Internal));
            return Relayed::Done;
        };
        self.sip_event(call.b.as_ref().map_or(0, |b| b.realm), &request);
        match self.start_client(now, request, listener, transport, peer, connection) {
            Some(client) => {
                self.clients
                    .insert(client, (call.id, Side::B, ClientRole::Invite));
                call.b_invite = Some(client);
                if let Some(wait) = call
                    .trunk
                    .and_then(|t| self.trunks.get(t))
                    .and_then(|t| t.response_timeout)
                {
                    self.timers
                        .push(now, now + wait, (call.id, CallTimer::SilentTarget(client)));
                }
            }
            None => {
                self.event_rejected(call.a.realm, RejectReason::Admission);
                self.fail_call(now, call, 503, EndedBy::Sbc(SbcReason::Overload));
            }
        }
        Relayed::Done
    }

    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        meta: &Meta,
        id: ServerId,
        target: Option<ServerId>,
        request: &Message,
    ) {
        let Some(target) = target else {
            return self.refuse(now, meta, id, request, 481, None);
        };
        let Some(call_no) = self.servers.get(&target).copied() else {
            // The INVITE's transaction is still there but its call is over
            // (a final crossed the CANCEL): matched, and without effect
            // (§9.2), so 200 and not a refusal.
            return self.reply(now, id, request, 200, &[]);
        };
        // Matched by branch, but only the INVITE's sender may cancel it.
        if self
            .calls
            .get(&call_no)
            .is_some_and(|c| !self.is_dialog_peer(c, Side::A, meta))
        {
            return self.refuse_foreign(now, meta, Some(id), request);
        }
        self.reply(now, id, request, 200, &[]);
        let Some(mut call) = self.calls.remove(&call_no) else {
            return;
        };
        if !call.a_final {
            self.respond_a(now, &mut call, 487, None);
            call.end.ended_by = Some(EndedBy::Caller);
            call.setup.cancel_b = true;
            self.end_queued_answer(now, &mut call);
            self.abandon_pending(now, &mut call);
            self.cancel_b(now, &mut call);
        }
        self.put_back(now, call);
    }

    /// Sends the CANCEL for B's INVITE once a provisional allows it (§9.1).
    pub(super) fn cancel_b(&mut self, now: Instant, call: &mut Call) {
        let Some(client) = call.b_invite else {
            // B's INVITE was never sent (still waiting for media): nothing to cancel.
            call.b_invite = None;
            return;
        };
        if call.setup.progress == Progress::Calling {
            return; // sent when the first provisional arrives
        }
        if let Ok(cancel) = self.tx.cancel_request(client)
            && let Some(b) = call.b.as_ref()
        {
            let (listener, transport, peer, connection) =
                (b.listener, b.transport, b.peer, b.connection);
            if let Some(cancel_id) =
                self.start_client(now, cancel, listener, transport, peer, connection)
            {
                self.clients
                    .insert(cancel_id, (call.id, Side::B, ClientRole::Cancel));
            }
        }
        // 64*T1 later, give up on B's INVITE (§9.1).
        self.timers.push(
            now,
            now + self.tx.timers().t1x64(),
            (call.id, CallTimer::GiveUpOnCancel),
        );
    }

    pub(super) fn on_b_invite_response(
        &mut self,
        now: Instant,
        call: &mut Call,
        response: Message,
    ) {
        let Some(status) = response.status() else {
            return;
        };
        if let Some(b) = call.b.as_mut()
            && let Some(tag) = response.to().and_then(|t| t.tag().map(str::to_owned))
            && status > 100
            && !b.remote_tag_known
        {
            let remote = format!("{};tag={tag}", b.text.get(Part::Remote));
            b.text.set(Part::Remote, &remote);
            b.remote_tag_known = true;
        }
        if status < 200 {
            call.setup.progress = call.setup.progress.max(if status > 100 {
                Progress::Ringing
            } else {
                Progress::Trying
            });
            if status > 100 {
                self.learn_remote_target(call, Side::B, &response);
                if call.setup.cancel_b {
                    return self.cancel_b(now, call);
                }
                self.report_setup(now, call);
                let server = call.a_server;
                call.pending.push_back(Pending::Response {
                    from: Side::B,
                    server,
                    response,
                });
                self.run_pending(now, call);
            } else if call.setup.cancel_b {
                self.cancel_b(now, call);
            }
            return;
        }
        if (200..300).contains(&status) {
            if let Some(ack) = call.b_ack.clone() {
                // A retransmitted 2xx: our ACK was lost (§13.2.2.4).
                if let Some(b) = call.b.as_ref() {
                    let hop = b.hop();
                    self.send_hop(hop, ack);
                }
                return;
            }
            if matches!(call.phase, Phase::Answered | Phase::Confirmed) {
                // B retransmits its 2xx until our ACK, which waits for A's:
                // the 2xx is already relayed (and retransmitted) to A.
                return;
            }
            // The INVITE transaction is settled (Accepted: further 2xx
            // still come here, and meet the two checks above).
            call.b_invite = None;
            if call.setup.cancel_b || call.a_final || call.phase == Phase::Ending {
                // The 2xx raced our CANCEL (or the call already failed on A):
                // confirm and end B's dialog.
                self.learn_route_set(call, &response);
                self.learn_remote_target(call, Side::B, &response);
                return self.confirm_and_end_b(now, call, &response);
            }
            if call.phase != Phase::Setup {
                return; // a second 2xx (forked): ignored beyond the first
            }
            let tag = response.to().and_then(|to| to.tag().map(Box::<str>::from));
            if response.body().is_empty() && (tag.is_none() || call.media.b_answer_tag != tag) {
                // No SDP in the 2xx and none before it from this dialog: an
                // offer in the INVITE went unanswered, or a late offer got
                // no offer (RFC 3264 §4, RFC 3261 §13.2.1). An 18x's SDP
                // from another fork, or from a trunk tried before, says
                // nothing of this callee's media. Relayed, it would leave
                // the caller with a session and no media.
                return self.refuse_answer(now, call, &response);
            }
            self.learn_route_set(call, &response);
            self.learn_remote_target(call, Side::B, &response);
            let server = call.a_server;
            call.pending.push_back(Pending::Response {
                from: Side::B,
                server,
                response,
            });
            self.run_pending(now, call);
            return;
        }
        self.b_invite_failed(now, call, Some(status), None, Some(response));
    }

    /// The callee answered in a way the SBC cannot relay (no SDP where one
    /// is owed, or SDP that does not parse): the callee's dialog is
    /// confirmed and ended (ACK, then BYE, as §13.2.2.4 asks of a UAC that
    /// can't use a 2xx), and the caller gets 502 Bad Gateway (RFC 3261
    /// §21.5.3: an invalid response from downstream), counted as a call
    /// ended by the SBC for bad SDP.
    pub(super) fn refuse_answer(&mut self, now: Instant, call: &mut Call, response: &Message) {
        call.b_invite = None;
        self.fail_call(now, call, 502, EndedBy::Sbc(SbcReason::BadSdp));
        self.learn_route_set(call, response);
        self.learn_remote_target(call, Side::B, response);
        let cseq = response.cseq().map_or(1, |c| c.seq);
        self.ack_b_directly(call, cseq);
        call.phase = Phase::Ending;
        self.send_bye(now, call, Side::B, true);
    }

    pub(super) fn b_invite_failed(
        &mut self,
        now: Instant,
        call: &mut Call,
        status: Option<u16>,
        cause: Option<FailoverCause>,
        response: Option<Message>,
    ) {
        call.b_invite = None;
        if call.a_final || call.setup.cancel_b {
            return;
        }
        // Recursion on 3xx (`[sip] recurse_on_3xx`): the first Contact that
        // names an address takes the call, in the trunk's realm; bounded.
        if self.recurse_3xx
            && status.is_some_and(|s| (300..400).contains(&s))
            && call.setup.redirects < MAX_REDIRECTS
            && let Some((target, peer)) = response.as_ref().and_then(redirect_target)
            && let Some(b) = call.b.as_ref()
        {
            call.setup.redirects += 1;
            call.setup.next_addrs = Vec::new();
            let (realm, transport) = (b.realm, b.transport);
            // The realm's listener now (a reload may have retired B's).
            let listener = self
                .realm_listener(realm, transport, peer)
                .unwrap_or(b.listener.0);
            return self.start_b_leg(now, call, realm, transport, listener, peer, target, None);
        }
        // RFC 3263 §4.3: a target that timed out, could not be reached or
        // answered 503 is blocked for a while (a 503's Retry-After says how
        // long), and the trunk's next target
        // takes the call, whatever the route's `failover_on` says.
        let target_failed = status == Some(503)
            || matches!(
                cause,
                Some(FailoverCause::Timeout | FailoverCause::TransportError)
            );
        if target_failed
            && call.setup.progress != Progress::Ringing
            && let (Some(trunk), Some(b)) = (call.trunk, call.b.as_ref())
        {
            let peer = b.peer;
            let retry_after = response
                .as_ref()
                .filter(|_| status == Some(503))
                .and_then(|r| r.header(HeaderName::RetryAfter))
                .and_then(health::retry_after);
            self.block_target(now, trunk, peer, retry_after);
            if !call.setup.next_addrs.is_empty() {
                let next = call.setup.next_addrs.remove(0);
                call.a_status = status.unwrap_or(408);
                call.setup.target_retries = call.setup.target_retries.saturating_add(1);
                return self.start_trunk_target(now, call, trunk, next);
            }
        }
        if call.setup.progress != Progress::Ringing
            && routing::fails_over(&call.setup.plan, status, cause)
            && call.setup.next_target < call.setup.plan.targets.len()
        {
            call.a_status = status.unwrap_or(408);
            return self.try_next_target(now, call);
        }
        let status = status.unwrap_or(if cause == Some(FailoverCause::Timeout) {
            408
        } else {
            503
        });
        match response {
            Some(response) => {
                // Relay the trunk's failure with what may cross (3xx Contacts
                // name the far side and never do: `copy_headers` drops them).
                // An untrusted caller that could be enumerating users gets
                // one answer for every "no such user" (`normalize_failures`).
                let server = call.a_server;
                let normalized = call
                    .guarded
                    .filter(|_| {
                        self.protect
                            .policy(call.a.realm)
                            .is_some_and(|p| p.normalize_failures)
                    })
                    .and_then(|_| protect::normalized_failure(status));
                let (status, src) = match normalized {
                    Some(status) => (status, None),
                    None => (status, Some(&response)),
                };
                let local_tag = call.a.text.get(Part::LocalTag).to_owned();
                let bytes = build::response(
                    &call.a_invite,
                    status,
                    build::relayed_reason(status),
                    Some(&local_tag),
                    None,
                    src,
                    &self.policy,
                    &[],
                    b"",
                );
                call.a_status = status;
                call.a_final = true;
                call.end.ended_by = Some(EndedBy::Callee);
                let repeats = self.final_repeats(call);
                if let Some(msg) = self.parse_built(
                    Some((call.id, Side::A)),
                    "failure relayed to the caller",
                    &bytes,
                ) {
                    self.sip_event(call.a.realm, &msg);
                    self.respond_on(now, Some((call.id, Side::A)), server, msg);
                }
                self.note_repeats(server, repeats);
                if let Some(ip) = call.guarded
                    && protect::counts_as_refusal(status, None)
                {
                    self.note_refusal(now, call.a.realm, ip);
                }
            }
            None => self.fail_call(now, call, status, EndedBy::Sbc(SbcReason::NoAnswer)),
        }
    }

    pub(super) fn report_setup(&mut self, now: Instant, call: &mut Call) {
        if call.progressed.is_none() {
            call.progressed = Some(now);
            self.events.push_back(CoreEvent::CallSetup {
                call: call.id,
                setup: now.saturating_duration_since(call.started),
            });
        }
    }

    pub(super) fn respond_a(
        &mut self,
        now: Instant,
        call: &mut Call,
        status: u16,
        reason: Option<&str>,
    ) {
        let retry = self.retry_after.to_string();
        let extra: Vec<(&str, &str)> = if status == 503 {
            vec![("Retry-After", retry.as_str())]
        } else {
            Vec::new()
        };
        let reason = reason.unwrap_or(sip::error::standard_reason(status));
        let bytes = build::response(
            &call.a_invite,
            status,
            reason,
            Some(call.a.text.get(Part::LocalTag)),
            None,
            None,
            &self.policy,
            &extra,
            b"",
        );
        call.a_status = status;
        call.a_final = true;
        let repeats = self.final_repeats(call);
        if let Some(msg) = self.parse_built(
            Some((call.id, Side::A)),
            "answer to the caller's INVITE",
            &bytes,
        ) {
            self.sip_event(call.a.realm, &msg);
            self.respond_on(now, Some((call.id, Side::A)), call.a_server, msg);
        }
        self.note_repeats(call.a_server, repeats);
    }

    /// B's dialog, set up by a 2xx the caller will not get, is confirmed
    /// and ended: ACK, then BYE (§13.2.2.4 for a 2xx a UAC cannot use).
    fn confirm_and_end_b(&mut self, now: Instant, call: &mut Call, response: &Message) {
        let cseq = response.cseq().map_or(1, |c| c.seq);
        self.ack_b_directly(call, cseq);
        call.phase = Phase::Ending;
        self.send_bye(now, call, Side::B, true);
    }

    /// Before a call that is still setting up drops its queue: B's 2xx that
    /// waited there for media ports (its route set and target are already
    /// learnt) has set up B's dialog, which must not be left to retransmit
    /// its 2xx until it gives up: it is confirmed and ended.
    pub(super) fn end_queued_answer(&mut self, now: Instant, call: &mut Call) {
        if call.phase != Phase::Setup {
            return;
        }
        let answer = call.pending.iter().position(|p| {
            matches!(p, Pending::Response { from: Side::B, response, .. }
                if response.status().is_some_and(|s| (200..300).contains(&s)))
        });
        if let Some(Pending::Response { response, .. }) =
            answer.and_then(|i| call.pending.remove(i))
        {
            self.confirm_and_end_b(now, call, &response);
        }
    }

    /// Answers A's INVITE with a failure (if it has no final yet) and ends the call.
    pub(super) fn fail_call(&mut self, now: Instant, call: &mut Call, status: u16, by: EndedBy) {
        if !call.a_final {
            self.respond_a(now, call, status, None);
        }
        call.end.ended_by.get_or_insert(by);
        self.end_queued_answer(now, call);
        self.abandon_pending(now, call);
        if call.b_invite.is_some() {
            call.setup.cancel_b = true;
            self.cancel_b(now, call);
        }
    }

    /// How often the failure about to answer the caller's INVITE is sent.
    /// A trusted caller, or one over a reliable transport, gets timer G
    /// (§17.2.1). An untrusted source over UDP may be spoofed, and timer G
    /// would make a reflector of the SBC towards its victim: while it has
    /// had no provisional it still retransmits its INVITE and is answered
    /// again if it lost the final, so the final goes once; once sent a
    /// provisional it waits without retransmitting (§17.1.1.2), so the final
    /// is retransmitted, but only [`super::UNTRUSTED_FINAL_RETRANSMISSIONS`] times.
    /// Asked before the final is sent.
    pub(super) fn final_repeats(&self, call: &Call) -> Repeats {
        if call.guarded.is_none() || call.a.transport.is_reliable() {
            Repeats::TimerG
        } else if self.tx.provisional_sent(call.a_server) {
            Repeats::Few
        } else {
            Repeats::Once
        }
    }

    /// Files the caller's INVITE transaction under what
    /// [`Core::final_repeats`] said, once its final is sent.
    fn note_repeats(&mut self, server: ServerId, repeats: Repeats) {
        match repeats {
            Repeats::TimerG => {}
            Repeats::Once => self.answered_once.push((server, true)),
            Repeats::Few => self.answered_few.push(server),
        }
    }
}

/// See [`Core::final_repeats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repeats {
    TimerG,
    Once,
    Few,
}
