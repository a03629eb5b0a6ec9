//! The in-dialog relay: requests, ACKs and responses of either leg carried
//! to the other as messages of that leg's own dialog (CSeq, tags, route set,
//! remote target learnt from the peer), with re-INVITE glare answered (RFC
//! 3261 §14.2) and `RAck` renumbered (RFC 3262).

use super::invite::invite_head;
use super::*;

/// `RAck: rseq cseq method` names the INVITE's CSeq on the leg it came
/// from; on the other leg the INVITE had that leg's CSeq (RFC 3262 §7.2).
pub(super) fn renumber_rack(rack: &str, call: &Call, to: Side) -> String {
    let mut parts = rack.split_whitespace();
    let (Some(rseq), Some(_), Some(method)) = (parts.next(), parts.next(), parts.next()) else {
        return rack.to_owned();
    };
    // Reliable provisionals answer the initial INVITE: CSeq 1 on leg B
    // (every B leg starts there), as received on leg A.
    let cseq = match to {
        Side::B => 1,
        Side::A => call.a_invite.cseq().map_or(1, |c| c.seq),
    };
    format!("{rseq} {cseq} {method}")
}

impl Core {
    pub(super) fn on_ack(&mut self, now: Instant, meta: &Meta, ack: Message) {
        let Some((call_no, side)) = self.dialog_of(&ack) else {
            return;
        };
        if self
            .calls
            .get(&call_no)
            .is_some_and(|c| !self.is_dialog_peer(c, side, meta))
        {
            return self.refuse_foreign(now, meta, None, &ack);
        }
        let Some(mut call) = self.calls.remove(&call_no) else {
            return;
        };
        if side == Side::A && meta.remote.ip() == call.a.peer.ip() {
            call.a.peer = meta.remote; // follow a NAT rebinding
        }
        // The ACK that settles the 2xx we owe this side, if any; a
        // retransmitted ACK (for our retransmitted 2xx) settles nothing and
        // stays here: the other side's 2xx retransmissions get the ACK we
        // relayed again (`ack_again`, `on_stray_response`).
        let owed = call.owed_2xx.take_if(|o| o.to == side);
        if let Some(owed) = owed {
            if owed.server == call.a_server && call.phase == Phase::Answered {
                call.phase = Phase::Confirmed;
            }
            if std::mem::take(&mut call.end.bye_a_after_ack) {
                // The call ended while this ACK was awaited: now A's BYE.
                self.send_bye(now, &mut call, Side::A, true);
            } else if call.phase != Phase::Ending && leg_ref(&call, side.other()).is_some() {
                call.pending.push_back(Pending::Ack {
                    from: side,
                    ack,
                    cseq: owed.ack_cseq,
                });
                self.run_pending(now, &mut call);
            }
        }
        self.put_back(now, call);
    }

    pub(super) fn dialog_of(&self, msg: &Message) -> Option<(u64, Side)> {
        let call_id = String::from_utf8_lossy(msg.call_id()?);
        let tag = msg.to()?.tag()?;
        self.dialogs.get(&dialog_key(&call_id, tag)).copied()
    }

    pub(super) fn on_in_dialog(
        &mut self,
        now: Instant,
        meta: &Meta,
        id: ServerId,
        request: Message,
    ) {
        let Some((call_no, side)) = self.dialog_of(&request) else {
            return self.refuse(now, meta, id, &request, 481, None);
        };
        // Only the leg's own peer may act in its dialog: a stranger who
        // learned the Call-ID and tags changes nothing.
        match self.calls.get(&call_no) {
            None => return self.refuse(now, meta, id, &request, 481, None),
            Some(call) if !self.is_dialog_peer(call, side, meta) => {
                return self.refuse_foreign(now, meta, Some(id), &request);
            }
            Some(_) => {}
        }
        let Some(mut call) = self.calls.remove(&call_no) else {
            return;
        };
        self.servers.insert(id, call.id);
        let method = request.method();
        let other_ready = match side.other() {
            Side::A => true,
            Side::B => call.b.as_ref().is_some_and(|b| b.remote_tag_known),
        };
        if call.phase == Phase::Ending || !other_ready {
            let status = if method == Some(Method::Bye) {
                200
            } else {
                481
            };
            self.reply(now, id, &request, status, &[]);
        } else if method == Some(Method::Bye) && side == Side::B && call.phase == Phase::Setup {
            // The callee ends a dialog the caller has no 2xx for (an early
            // dialog, which §15 forbids a callee to end with BYE, or a 2xx
            // of B's that never reached us): A's INVITE gets a final
            // answer, since A can't be sent a BYE for it.
            self.reply(now, id, &request, 200, &[]);
            self.fail_call(now, &mut call, 480, EndedBy::Callee);
        } else if method == Some(Method::Bye) {
            // Answer at once; the other leg is told independently.
            self.reply(now, id, &request, 200, &[]);
            let by = if side == Side::A {
                EndedBy::Caller
            } else {
                EndedBy::Callee
            };
            call.end.ended_by.get_or_insert(by);
            // A 2xx still owed keeps going until its ACK (§13.3.1.4).
            if side == Side::A && call.phase == Phase::Answered && call.b_ack.is_none() {
                // B's 2xx waited for A's ACK, which will not come now: B
                // gets its ACK before its BYE.
                self.ack_b_directly(&mut call, 1);
            }
            call.phase = Phase::Ending;
            self.abandon_pending(now, &mut call);
            self.send_bye(now, &mut call, side.other(), true);
            self.release_media(&mut call);
        } else if method == Some(Method::Invite) && call.invite_in_progress(side) {
            // RFC 3261 §14.2: a second INVITE before the first has its
            // final response gets 500 with a random Retry-After of 0-10 s.
            let retry = (self.ids.next_bytes()[0] % 11).to_string();
            self.reply(now, id, &request, 500, &[(HeaderName::RetryAfter, &retry)]);
        } else if method == Some(Method::Invite) && call.invite_in_progress(side.other()) {
            // Glare (§14.2): both sides re-INVITE at once. Each gets 491 and
            // retries after its own random wait (§14.1).
            self.reply(now, id, &request, 491, &[]);
        } else {
            call.pending.push_back(Pending::Request {
                from: side,
                server: id,
                request,
            });
            self.run_pending(now, &mut call);
        }
        self.put_back(now, call);
    }

    /// Relays an in-dialog request from `from` onto the other leg.
    pub(super) fn relay_request(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        server: ServerId,
        request: Message,
    ) -> Relayed {
        let body = match self.maybe_anchor(now, call, from, &request) {
            Ok(body) => body,
            Err(AnchorFail::Wait) => return Relayed::WaitForMedia,
            Err(AnchorFail::Status(status)) => {
                self.reply(now, server, &request, status, &[]);
                return Relayed::Done;
            }
        };
        let method =
            String::from_utf8_lossy(request.method_bytes().unwrap_or(b"INFO")).into_owned();
        let to = from.other();
        let rack = request
            .header(HeaderName::RAck)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let rack = rack.map(|rack| renumber_rack(&rack, call, to));
        let Some(leg) = leg_mut(call, to) else {
            return Relayed::Done;
        };
        leg.local_cseq += 1;
        let refreshes = matches!(
            request.method(),
            Some(
                Method::Invite
                    | Method::Update
                    | Method::Subscribe
                    | Method::Notify
                    | Method::Refer
            )
        );
        let branch = self.ids.branch();
        let extra: Vec<(&str, &str)> = rack.as_deref().map(|r| ("RAck", r)).into_iter().collect();
        let bytes = leg.request(
            &method,
            &branch,
            request.max_forwards().unwrap_or(70).saturating_sub(1),
            refreshes,
            &self.policy,
            Content {
                src: Some(&request),
                extra: &extra,
                body: &body,
            },
        );
        let (listener, transport, peer, connection, realm) = (
            leg.listener,
            leg.transport,
            leg.peer,
            leg.connection,
            leg.realm,
        );
        let Some(out) = self.parse_built(Some((call.id, to)), "relayed request", &bytes) else {
            self.reply(now, server, &request, 500, &[]);
            return Relayed::Done;
        };
        self.sip_event(realm, &out);
        match self.start_client(now, out, listener, transport, peer, connection) {
            Some(client) => {
                self.clients
                    .insert(client, (call.id, to, ClientRole::Relay(server)));
                call.relayed.insert(server, request);
            }
            None => self.reply(now, server, &request, 503, &[]),
        }
        Relayed::Done
    }

    /// Relays the ACK for a 2xx from `from` to the other leg (with the
    /// answer of a late offer anchored).
    pub(super) fn relay_ack(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        ack: Message,
        cseq: u32,
    ) -> Relayed {
        let (body, unusable) = match self.maybe_anchor(now, call, from, &ack) {
            Ok(body) => (body, false),
            Err(AnchorFail::Wait) => return Relayed::WaitForMedia,
            // An answer the SBC cannot read or anchor (bad SDP, another
            // body type): the other side's 2xx still gets its ACK, which
            // stops its retransmissions, but its offer has no answer, so
            // the session cannot go on; both dialogs are ended below.
            Err(AnchorFail::Status(_)) => (Vec::new(), true),
        };
        let to = from.other();
        let Some(leg) = leg_ref(call, to) else {
            return Relayed::Done;
        };
        let branch = self.ids.branch();
        let bytes = leg.request_numbered(
            "ACK",
            cseq,
            &branch,
            70,
            false,
            &self.policy,
            Content {
                src: Some(&ack),
                extra: &[],
                body: &body,
            },
        );
        let (listener, transport, peer, connection, realm) = (
            leg.listener,
            leg.transport,
            leg.peer,
            leg.connection,
            leg.realm,
        );
        if let Some(msg) = self.parse_built(Some((call.id, to)), "relayed ACK", &bytes) {
            self.sip_event(realm, &msg);
        }
        match to {
            Side::B => call.b_ack = Some(bytes.clone()),
            Side::A => call.a_ack = Some(bytes.clone()),
        }
        self.send_direct(listener, transport, peer, connection, bytes);
        if unusable {
            self.teardown(now, call, EndedBy::Sbc(SbcReason::BadSdp));
        }
        Relayed::Done
    }

    /// A retransmitted 2xx from `side` for a re-INVITE we relayed and
    /// already answered: our ACK was lost, so it goes again (§13.2.2.4) if
    /// the ACK we keep for that leg is for this 2xx's CSeq. Before that ACK
    /// exists (the other side's has not come), the 2xx we owe the other
    /// side is being retransmitted by its own timer.
    pub(super) fn ack_again(&mut self, call: &Call, side: Side, response: &Message) {
        let kept = match side {
            Side::A => call.a_ack.as_ref(),
            Side::B => call.b_ack.as_ref(),
        };
        let (Some(kept), Some(leg)) = (kept, leg_ref(call, side)) else {
            return;
        };
        let seq = |m: &Message| m.cseq().map(|c| c.seq);
        let Ok(ack) = Message::parse(kept) else {
            return;
        };
        if seq(&ack).is_none() || seq(&ack) != seq(response) {
            return;
        }
        let hop = leg.hop();
        self.send_hop(hop, kept.clone());
    }

    /// `from` answered an in-dialog offer relayed to it (a re-INVITE,
    /// UPDATE or PRACK from the other side, waiting on `server`) with a 2xx
    /// whose answer the SBC cannot anchor. A re-INVITE's 2xx is ACKed on
    /// `from`'s leg; the offerer gets 502 Bad Gateway (§21.5.3), so by
    /// §14.1 its session stays as it was, and the call goes on with the
    /// media already anchored.
    fn refuse_dialog_answer(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        server: ServerId,
        response: &Message,
    ) {
        let Some(request) = call.answered_relay(server) else {
            return;
        };
        if response.cseq().is_some_and(|c| c.method == "INVITE") {
            let cseq = response.cseq().map_or(1, |c| c.seq);
            self.ack_directly(call, from, cseq);
        }
        self.reply(now, server, &request, 502, &[]);
    }

    /// Relays a response from `from` onto `server` (a transaction of the other leg).
    pub(super) fn relay_response(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        server: ServerId,
        response: Message,
    ) -> Relayed {
        let Some(status) = response.status() else {
            return Relayed::Done;
        };
        let body = match self.maybe_anchor(now, call, from, &response) {
            Ok(body) => body,
            Err(AnchorFail::Wait) => return Relayed::WaitForMedia,
            Err(AnchorFail::Status(_))
                if server == call.a_server && (200..300).contains(&status) =>
            {
                // The answer to the caller's INVITE is unreadable SDP.
                self.refuse_answer(now, call, &response);
                return Relayed::Done;
            }
            Err(AnchorFail::Status(_)) if (200..300).contains(&status) => {
                // The answer to a re-INVITE, UPDATE or PRACK is unreadable
                // or not SDP: relayed without it, the offerer would hold an
                // offer with no answer.
                self.refuse_dialog_answer(now, call, from, server, &response);
                return Relayed::Done;
            }
            // A provisional's SDP is early media, not binding: it crosses
            // without it.
            Err(AnchorFail::Status(_)) => Vec::new(),
        };
        let to = from.other();
        let request = if server == call.a_server {
            call.a_invite.clone()
        } else {
            match call.relayed.get(&server) {
                Some(r) => r.clone(),
                None => return Relayed::Done,
            }
        };
        let Some(leg) = leg_ref(call, to) else {
            return Relayed::Done;
        };
        let contact = (status > 100 && status < 300).then_some(leg.text.get(Part::Contact));
        let tag = leg.text.get(Part::LocalTag);
        let realm = leg.realm;
        let bytes = build::response(
            &request,
            status,
            build::relayed_reason(status),
            Some(tag),
            contact,
            Some(&response),
            &self.policy,
            &[],
            &body,
        );
        let Some(msg) = self.parse_built(Some((call.id, to)), "relayed response", &bytes) else {
            return Relayed::Done;
        };
        // A 2xx's ACK, when it comes, goes to `from` with this number.
        let ack_cseq = response.cseq().map_or(1, |c| c.seq);
        self.sip_event(realm, &msg);
        if server == call.a_server && (200..300).contains(&status) {
            call.a_status = status;
            call.a_final = true;
            call.phase = Phase::Answered;
            call.answered = Some(now);
            call.replica.dirty = true;
            self.report_setup(now, call);
            let t1 = self.tx.timers().t1;
            call.owed_2xx = Some(Owed2xx {
                server,
                to: Side::A,
                ack_cseq,
                bytes,
                interval: t1,
                give_up: now + self.tx.timers().t1x64(),
            });
            // Leg B is up: no failover or redirect writes from the INVITE
            // again, so a held call keeps only what A's dialog still needs.
            if let Some(head) = invite_head(&call.a_invite) {
                call.a_invite = head;
            }
            call.setup.b_to = String::new();
            self.timers
                .push(now, now + t1, (call.id, CallTimer::Retransmit2xx));
        } else if status >= 200 {
            let request = call.answered_relay(server);
            // A re-INVITE's 2xx: we are the UAS of `to`'s re-INVITE and
            // retransmit it until `to` ACKs (§13.3.1.4), as for the
            // initial INVITE; the ACK then crosses to `from`.
            if status < 300
                && request.is_some_and(|r| r.method() == Some(Method::Invite))
                && call.phase == Phase::Confirmed
            {
                let t1 = self.tx.timers().t1;
                call.owed_2xx = Some(Owed2xx {
                    server,
                    to,
                    ack_cseq,
                    bytes,
                    interval: t1,
                    give_up: now + self.tx.timers().t1x64(),
                });
                self.timers
                    .push(now, now + t1, (call.id, CallTimer::Retransmit2xx));
            }
        }
        self.respond_on(now, Some((call.id, to)), server, msg);
        Relayed::Done
    }

    pub(super) fn learn_remote_target(&mut self, call: &mut Call, side: Side, msg: &Message) {
        if let (Some(target), Some(leg)) = (first_contact_uri(msg), leg_mut(call, side))
            && leg.text.get(Part::RemoteTarget) != target
        {
            leg.text.set(Part::RemoteTarget, &target);
            call.replica.dirty = true;
        }
    }

    pub(super) fn learn_route_set(&mut self, call: &mut Call, response: &Message) {
        // A UAC's route set is the Record-Route of the 2xx, reversed (§12.1.2).
        let mut routes: Vec<String> = response
            .values(HeaderName::RecordRoute)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        routes.reverse();
        if let Some(b) = call.b.as_mut() {
            b.route_set = routes;
        }
    }

    pub(super) fn on_stray_response(&mut self, _now: Instant, response: Message) {
        // A 2xx for B's INVITE after its transaction ended: re-ACK it.
        if !response.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(call_id) = response.call_id().map(String::from_utf8_lossy) else {
            return;
        };
        let Some(from) = response.from() else {
            return;
        };
        let Some(tag) = from.tag() else {
            return;
        };
        let Some(&(call_no, Side::B)) = self.dialogs.get(&dialog_key(&call_id, tag)) else {
            return;
        };
        let Some(call) = self.calls.get(&call_no) else {
            return;
        };
        if let (Some(ack), Some(b)) = (call.b_ack.clone(), call.b.as_ref()) {
            let hop = b.hop();
            self.send_hop(hop, ack);
        }
    }

    /// ACKs B's 2xx to the INVITE numbered `cseq` without anything from A
    /// (a 2xx that raced a CANCEL, or a call A ended before ACKing).
    pub(super) fn ack_b_directly(&mut self, call: &mut Call, cseq: u32) {
        self.ack_directly(call, Side::B, cseq);
    }

    /// ACKs a 2xx that `side` sent for INVITE number `cseq`, on the SBC's
    /// own account (nothing crosses from the other side), and keeps the ACK
    /// for the 2xx's retransmissions.
    pub(super) fn ack_directly(&mut self, call: &mut Call, side: Side, cseq: u32) {
        let Some(leg) = leg_ref(call, side) else {
            return;
        };
        let branch = self.ids.branch();
        let bytes =
            leg.request_numbered("ACK", cseq, &branch, 70, false, &self.policy, Content::NONE);
        let hop = leg.hop();
        match side {
            Side::A => call.a_ack = Some(bytes.clone()),
            Side::B => call.b_ack = Some(bytes.clone()),
        }
        self.send_hop(hop, bytes);
    }
}
