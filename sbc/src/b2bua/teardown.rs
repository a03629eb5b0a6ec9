//! How calls end: BYEs on the legs that are up (awaited, or not for a peer
//! that never ACKed), media released, requests still pending answered 487,
//! the call's timers (2xx retransmission to A, the CANCEL give-up), and the
//! one place a finished call leaves the tables and reports `CallEnded`.

use super::*;

impl Core {
    /// Drops what waited for media allocation; requests among it are
    /// answered 487, so their transactions end.
    pub(super) fn abandon_pending(&mut self, now: Instant, call: &mut Call) {
        // Requests relayed and not answered yet: the dialog is going, and
        // each still gets its final (§15.1.2 recommends 487).
        for (server, request) in std::mem::take(&mut call.relayed) {
            self.reply(now, server, &request, 487, &[]);
            self.servers.remove(&server);
        }
        for pending in std::mem::take(&mut call.pending) {
            if let Pending::Request {
                server, request, ..
            } = pending
            {
                self.reply(now, server, &request, 487, &[]);
                self.servers.remove(&server);
            }
        }
    }

    /// Ends an established (or establishing) call from the SBC's side.
    pub(super) fn teardown(&mut self, now: Instant, call: &mut Call, by: EndedBy) {
        call.end.ended_by.get_or_insert(by);
        match call.phase {
            Phase::Setup => self.fail_call(now, call, 503, by),
            Phase::Answered | Phase::Confirmed => {
                if call.phase == Phase::Answered && call.b_ack.is_none() {
                    // B's 2xx waited for A's ACK: B gets its ACK first.
                    self.ack_b_directly(call, 1);
                }
                // A 2xx still owed keeps being retransmitted until its ACK
                // (§13.3.1.4 does not end with the dialog).
                call.phase = Phase::Ending;
                // A caller that never ACKed our 2xx gets its BYE (§13.3.1.4),
                // but the call does not wait another 64*T1 for an answer
                // from a peer that has shown it does not answer.
                let awaited = by != EndedBy::Sbc(SbcReason::NoAck);
                self.abandon_pending(now, call);
                self.send_bye(now, call, Side::A, awaited);
                self.send_bye(now, call, Side::B, true);
                self.release_media(call);
            }
            Phase::Ending => {}
        }
    }

    /// Sends a BYE on `side`; the call waits for its answer when `awaited`.
    /// A BYE to A while A has not ACKed our 2xx waits for that ACK (or for
    /// the 2xx retransmissions to give up), §15; the 2xx keeps going.
    pub(super) fn send_bye(&mut self, now: Instant, call: &mut Call, side: Side, awaited: bool) {
        if side == Side::A && call.awaiting_a_ack() {
            call.end.bye_a_after_ack = true;
            return;
        }
        if call.end.bye_sent[side.index()] {
            return; // one BYE per leg
        }
        let Some(leg) = leg_mut(call, side) else {
            return;
        };
        if side == Side::B && !leg.remote_tag_known {
            return;
        }
        leg.local_cseq += 1;
        let branch = self.ids.branch();
        let bytes = leg.request("BYE", &branch, 70, false, &self.policy, Content::NONE);
        let (listener, transport, peer, connection, realm) = (
            leg.listener,
            leg.transport,
            leg.peer,
            leg.connection,
            leg.realm,
        );
        let Some(msg) = self.parse_built(Some((call.id, side)), "BYE", &bytes) else {
            return;
        };
        self.sip_event(realm, &msg);
        call.end.bye_sent[side.index()] = true;
        if let Some(client) = self.start_client(now, msg, listener, transport, peer, connection) {
            let role = if awaited {
                call.end.byes += 1;
                ClientRole::Bye
            } else {
                ClientRole::Courtesy
            };
            self.clients.insert(client, (call.id, side, role));
        }
    }

    pub(super) fn release_media(&mut self, call: &mut Call) {
        for (stream, _) in call.media.streams.iter().flatten() {
            self.media_out
                .push_back(MediaCommand::Release { stream: *stream });
            call.media.released.push(*stream);
        }
        call.media.streams.clear();
        self.forget_media_addresses(call);
    }

    /// Whether nothing of the call is left in flight: A has its final
    /// response and B's INVITE is settled (setup), or every BYE is answered.
    pub(super) fn finished(call: &Call) -> bool {
        match call.phase {
            Phase::Setup => call.a_final && call.b_invite.is_none(),
            Phase::Ending => {
                call.end.byes == 0
                    && call.b_invite.is_none()
                    && !call.end.bye_a_after_ack
                    && call.owed_2xx.is_none()
            }
            Phase::Answered | Phase::Confirmed => false,
        }
    }

    pub(super) fn call_timer(&mut self, now: Instant, call: &mut Call, kind: CallTimer) {
        match kind {
            // 2xx retransmission until its ACK (§13.3.1.4); nothing once
            // the ACK came.
            CallTimer::Retransmit2xx => {
                let Some(mut owed) = call.owed_2xx.take() else {
                    return;
                };
                if now >= owed.give_up {
                    if std::mem::take(&mut call.end.bye_a_after_ack) {
                        // Ended meanwhile: the BYE that waited goes now,
                        // unawaited (A has shown it does not answer).
                        self.send_bye(now, call, Side::A, false);
                    } else if call.phase != Phase::Ending {
                        self.teardown(now, call, EndedBy::Sbc(SbcReason::NoAck));
                    }
                    return;
                }
                if let Some(msg) =
                    self.parse_built(Some((call.id, owed.to)), "2xx retransmission", &owed.bytes)
                {
                    self.respond_on(now, Some((call.id, owed.to)), owed.server, msg);
                    let realm = leg_ref(call, owed.to).map_or(call.a.realm, |leg| leg.realm);
                    self.events.push_back(CoreEvent::Retransmitted {
                        realm: self.realms[realm].name.clone(),
                    });
                }
                owed.interval = (owed.interval * 2).min(self.tx.timers().t2);
                let next = now + owed.interval;
                call.owed_2xx = Some(owed);
                self.timers
                    .push(now, next, (call.id, CallTimer::Retransmit2xx));
            }
            // Not even a 100 from B's target in the trunk's
            // response_timeout_ms: the target counts as timed out (RFC 3263
            // §4.3) and the next one is tried now, not after timer B. The
            // INVITE ends here: without a provisional there is nothing to
            // CANCEL (§9.1); a 2xx the target still sends matches nothing
            // and the target ends that dialog itself when no ACK comes.
            CallTimer::SilentTarget(client) => {
                if call.b_invite == Some(client)
                    && call.setup.progress == Progress::Calling
                    && !call.setup.cancel_b
                    && !call.a_final
                {
                    let _ = self.tx.terminate(client);
                    self.b_invite_failed(now, call, None, Some(FailoverCause::Timeout), None);
                }
            }
            // 64*T1 after our CANCEL: give up on B's INVITE (§9.1).
            CallTimer::GiveUpOnCancel => {
                if call.setup.cancel_b
                    && let Some(client) = call.b_invite.take()
                {
                    let _ = self.tx.terminate(client);
                }
            }
        }
    }

    /// Puts a call back in the table, or reports and forgets it if it ended.
    pub(super) fn put_back(&mut self, now: Instant, mut call: Box<Call>) {
        let finished = Self::finished(&call);
        self.settle_call(&mut call, finished);
        self.replicate_call(now, &mut call);
        if !finished {
            self.calls.insert(call.id, call);
            return;
        }
        self.release_media(&mut call);
        if let Some(trunk) = call.trunk.take() {
            self.trunks[trunk].release();
        }
        let user = call.user.take();
        self.count_user_call(user.as_ref(), false);
        // Only this call's own keys: ending a call must not cost a scan of
        // every call up.
        self.dialogs.remove(&call.a.dialog_key());
        if let Some(b) = &call.b {
            self.dialogs.remove(&b.dialog_key());
        }
        self.servers.remove(&call.a_server);
        // RFC 3261 §15.1.2: requests still pending in a dialog that ended
        // get 487; without an answer their transactions would never end.
        self.abandon_pending(now, &mut call);
        for (server, request) in std::mem::take(&mut call.relayed) {
            self.reply(now, server, &request, 487, &[]);
            self.servers.remove(&server);
        }
        self.events
            .push_back(CoreEvent::CallEnded(Box::new(CallSummary {
                call: call.id,
                from_realm: self.realms[call.a.realm].name.clone(),
                from_trunk: call.source_trunk.map(|t| self.trunks[t].name.clone()),
                route: Some(call.setup.plan.route.clone()),
                trunks_tried: call.setup.trunks_tried.clone(),
                call_ids: (
                    call.a.text.get(Part::CallId).to_owned(),
                    call.b.as_ref().map(|b| b.text.get(Part::CallId).to_owned()),
                ),
                invite: call.a_invite.clone(),
                to_realm: call.b.as_ref().map(|b| self.realms[b.realm].name.clone()),
                streams: std::mem::take(&mut call.media.released),
                started: call.started,
                progressed: call.progressed,
                answered: call
                    .answered
                    .filter(|_| (200..300).contains(&call.a_status)),
                ended: now,
                status: call.a_status,
                ended_by: call
                    .end
                    .ended_by
                    .unwrap_or(EndedBy::Sbc(SbcReason::Internal)),
                not_latched: call.media.not_latched,
            })));
    }
}
