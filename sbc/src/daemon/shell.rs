//! Where the call core's outputs go: transports, the media relay, metrics,
//! logs and call records.

use super::*;
use crate::media::command::{LegSpec, LocalEndpoint, RtcpMode, StreamId};
use crate::media::reserve::Reserve;
use crate::media::userspace::Reserved;
use crate::transport::Outbound;

/// Where the core's outputs go.
pub(super) struct Shell<'a> {
    pub(super) transports: &'a Transports,
    /// Enforces the bans the core asks for; its counts are exported each
    /// second.
    pub(super) shield: &'a Shield,
    /// The shield's counts already exported, by its realm number (the
    /// counters take deltas).
    pub(super) shield_seen: Vec<RealmCounts>,
    /// Transport drops already exported, per listener: queue full, shed for
    /// overload, connections refused by a cap, connections too slow.
    pub(super) transport_seen: HashMap<ListenerId, [u64; 4]>,
    /// Failed TLS handshakes already exported, per listener (inbound,
    /// outbound; by reason).
    pub(super) tls_seen: HashMap<ListenerId, [[u64; TlsFailure::COUNT]; 2]>,
    /// The relay's drop totals already exported (unknown flow, source,
    /// malformed, send).
    pub(super) media_dropped: [u64; 5],
    pub(super) relay: &'a UserspaceRelay,
    pub(super) metrics: &'a Metrics,
    /// Relay totals already exported per realm tag (the counters take
    /// deltas).
    pub(super) relayed: Vec<MediaTotals>,
    pub(super) cdr: Option<&'a CdrWriter>,
    /// Ended calls waiting for their streams' final counters: their log
    /// line and CDR say which path carried the media, which only the
    /// counters tell.
    pub(super) ledger: Ledger,
    /// Media commands the relay's full queue handed back, in order.
    pub(super) relay_backlog: VecDeque<MediaCommand>,
    /// The relay refused a command since the last tick: it is saturated.
    pub(super) relay_saturated: bool,
    /// Endpoints the relay bound ahead, so a new stream needs no round trip
    /// to a relay thread ([`crate::media::reserve`]).
    pub(super) reserve: Reserve,
    /// Reserved endpoints to give back to the relay (by lane), waiting
    /// while its queue is full.
    pub(super) reserve_returns: Vec<(usize, LocalEndpoint)>,
    /// The reserve's misses already exported (the counter takes deltas).
    pub(super) reserve_misses_seen: u64,
    /// Where answered calls go for the other node of a pair, if any.
    pub(super) replicator: Option<crate::cluster::calls::Replicator>,
    /// When the relay threads are woken for the commands queued quietly.
    pub(super) relay_wakes: RelayWakes,
    /// The core's messages of one turn, sent together.
    pub(super) outbox: Vec<Outbound>,
}

/// When the relay threads are woken for the commands queued for them
/// without a wake: after the SIP messages of a burst, not between them.
///
/// Each wake is a syscall on the core's thread (an eventfd write), which on
/// a virtual machine costs an interrupt to an idle CPU: 13-15 us each,
/// measured in a trace of the daemon, taken before the message they
/// followed went out. While more SIP messages wait for the core, the wake
/// waits for the end of the burst, up to [`RELAY_WAKE_MAX_DELAY`]. No relay
/// command is urgent at that scale: a new stream's sockets are bound
/// already (the reserve), its first packet follows the SIP answer, and a
/// release only frees ports.
pub(super) struct RelayWakes {
    woken_at: Instant,
}

/// The longest a relay command waits for its thread's wake while SIP
/// messages keep the core busy.
const RELAY_WAKE_MAX_DELAY: Duration = Duration::from_millis(1);

impl RelayWakes {
    pub(super) fn new(now: Instant) -> RelayWakes {
        RelayWakes { woken_at: now }
    }

    /// Whether to wake the relay threads now, at the end of a turn of the
    /// loop; `more_waiting`: SIP messages are queued for the core already.
    fn due(&mut self, now: Instant, more_waiting: bool) -> bool {
        if more_waiting && now.saturating_duration_since(self.woken_at) < RELAY_WAKE_MAX_DELAY {
            return false;
        }
        self.woken_at = now;
        true
    }
}

/// Commands waiting for the relay beyond which no new call is taken (each
/// call adds a few; releases and remotes of calls up must still all go).
pub(super) const RELAY_BACKLOG_REFUSE_ALL: usize = 4_096;

/// How soon commands the relay handed back are offered again, while some
/// wait: a remote address late by this much is that much of lost audio.
pub(super) const RELAY_RETRY: Duration = Duration::from_millis(5);

impl Shell<'_> {
    /// Sends what the relay handed back, in order, until it is full again
    /// (quietly: the next [`drain`](Self::drain) wakes the relay).
    pub(super) fn retry_relay_backlog(&mut self) {
        while let Some(command) = self.relay_backlog.pop_front() {
            if let Err(Offered::Full(command)) = self.relay.offer_quietly(command) {
                self.relay_backlog.push_front(command);
                self.relay_saturated = true;
                break;
            }
        }
    }

    /// Wakes the relay threads for the commands queued since the last
    /// wake, unless more SIP messages wait and the last wake is recent
    /// ([`RelayWakes`]).
    pub(super) fn wake_relay(&mut self, more_waiting: bool) {
        if self.relay_wakes.due(now(), more_waiting) {
            self.relay.flush();
        }
    }

    /// The overload floor the relay asks for: 2 (every new call refused)
    /// while more than [`RELAY_BACKLOG_REFUSE_ALL`] commands wait, so the
    /// backlog, which must lose nothing, stops growing with new calls; 1
    /// (untrusted calls refused) if the relay was saturated since the last
    /// call (a command was refused, or some still wait); else 0. The
    /// saturation is cleared for the next second.
    pub(super) fn relay_pressure(&mut self) -> u8 {
        self.retry_relay_backlog();
        let saturated = self.relay_saturated || !self.relay_backlog.is_empty();
        self.relay_saturated = false;
        if self.relay_backlog.len() > RELAY_BACKLOG_REFUSE_ALL {
            2
        } else {
            u8::from(saturated)
        }
    }

    /// Drains every output of the core (which may produce more input: a
    /// media command the relay refuses comes back as a failure event).
    /// `more_waiting`: SIP messages are queued for the core already, so
    /// the relay's wake may wait for the end of the burst
    /// ([`wake_relay`](Self::wake_relay)).
    pub(super) fn drain(&mut self, core: &mut Core, more_waiting: bool) {
        loop {
            let mut refused = Vec::new();
            while let Some(out) = core.poll_transmit() {
                self.outbox.push(out);
            }
            self.transports.send_all(&mut self.outbox, |to, e| {
                warn!(%to, error = %e, "send refused");
            });
            self.retry_relay_backlog();
            while let Some(command) = core.poll_media() {
                // (A restored stream, of a call adopted from the other node,
                // waits its turn like a release: a takeover restores many at
                // once, more than the relay's queue holds.)
                if let MediaCommand::Allocate { stream, legs } = command {
                    // A new stream: refused now, its call fails (503).
                    match self.allocate(stream, legs) {
                        Ok(Some(allocated)) => refused.push(allocated),
                        Ok(None) => {}
                        Err(error) => {
                            self.relay_saturated |= error == MediaError::QueueFull;
                            refused.push(MediaEvent::AllocationFailed { stream, error });
                        }
                    }
                } else if !self.relay_backlog.is_empty() {
                    // Behind ones already waiting: keep their order.
                    self.relay_backlog.push_back(command);
                } else if let Err(Offered::Full(command)) = self.relay.offer_quietly(command) {
                    // A release or a remote the relay must not miss (a lost
                    // release would hold its ports forever): sent again as
                    // soon as the relay takes commands.
                    self.relay_saturated = true;
                    self.relay_backlog.push_back(command);
                }
            }
            while let Some(event) = core.poll_event() {
                self.report(event);
            }
            if refused.is_empty() {
                self.refill_reserve();
                // The commands of this batch, after its SIP messages.
                self.wake_relay(more_waiting);
                return;
            }
            for event in refused {
                core.handle_media_event(now(), event);
            }
        }
    }

    /// Sends a new stream's allocation: with endpoints from the reserve
    /// where it has them for the stream's relay thread, and when it has
    /// both legs' the allocation is answered here and now (the `Allocated`
    /// returned), without waiting for the relay thread. Otherwise the relay
    /// answers, after binding what the reserve did not have.
    fn allocate(
        &mut self,
        stream: StreamId,
        legs: [LegSpec; 2],
    ) -> Result<Option<MediaEvent>, MediaError> {
        let plain = MediaCommand::Allocate { stream, legs };
        if legs.iter().any(|l| l.rtcp != RtcpMode::Pair) {
            // The reserve holds pairs; a muxed leg takes the round trip.
            return self.relay.send_quietly(plain).map(|()| None);
        }
        let lane = self.relay.lane_of_stream(stream);
        let claim = self
            .reserve
            .claim(lane, [legs[0].local_ip, legs[1].local_ip]);
        if claim.iter().all(Option::is_none) {
            return self.relay.send_quietly(plain).map(|()| None);
        }
        match self.relay.send_claimed(stream, legs, claim) {
            Ok(()) => Ok(match claim {
                [Some(a), Some(b)] => Some(MediaEvent::Allocated {
                    stream,
                    legs: [a, b],
                }),
                _ => None,
            }),
            Err(error) => {
                self.reserve.unclaim(lane, claim);
                Err(error)
            }
        }
    }

    /// Asks the relay to bind what the reserve lacks, and gives back what
    /// it holds for addresses no longer configured.
    pub(super) fn refill_reserve(&mut self) {
        if !self.reserve_returns.is_empty() {
            let mut by_lane: Vec<(usize, Vec<LocalEndpoint>)> = Vec::new();
            for (lane, endpoint) in self.reserve_returns.drain(..) {
                match by_lane.iter_mut().find(|(l, _)| *l == lane) {
                    Some((_, endpoints)) => endpoints.push(endpoint),
                    None => by_lane.push((lane, vec![endpoint])),
                }
            }
            for (lane, endpoints) in by_lane {
                if self.relay.unreserve(lane, endpoints.clone()).is_err() {
                    // Full queue: next time (a stopped relay closed them).
                    self.reserve_returns
                        .extend(endpoints.into_iter().map(|e| (lane, e)));
                }
            }
        }
        let now = now();
        // Commands still waiting for the relay may be restores of adopted
        // calls (a takeover), whose exact ports the reserve must not take
        // first: it is filled once they are all queued.
        let wanted = if self.relay_backlog.is_empty() {
            self.reserve.wanted(now)
        } else {
            Vec::new()
        };
        for (lane, ip, count) in wanted {
            if self.relay.reserve(lane, ip, count).is_err() {
                // Not asked after all: the slot waits before asking again.
                let _ = self.reserve.filled(now, lane, ip, count, Vec::new());
            }
        }
    }

    /// A relay thread bound endpoints for the reserve.
    pub(super) fn reserve_filled(&mut self, reserved: Reserved) {
        let lane = reserved.lane;
        let unwanted =
            self.reserve
                .filled(now(), lane, reserved.ip, reserved.asked, reserved.endpoints);
        self.reserve_returns
            .extend(unwanted.into_iter().map(|e| (lane, e)));
    }

    /// After a reload: the reserve follows the configured media addresses
    /// (an address that left gives its endpoints back, a new one is filled).
    pub(super) fn reserve_addresses(&mut self, addresses: &[std::net::IpAddr]) {
        let dropped = self.reserve.set_addresses(addresses);
        self.reserve_returns.extend(dropped);
        self.refill_reserve();
    }

    /// The core asks for a ban (a scanner, a source refused too often):
    /// the shield drops the source's messages before parsing from now on.
    /// Logged once, when the ban begins.
    pub(super) fn ban(&mut self, realm: &str, source: std::net::IpAddr, reason: guard::BanReason) {
        let id = self.shield.realm(realm);
        if self.shield.ban(now(), id, source) {
            guard::log_ban(realm, source, reason, self.shield.ban_secs(id));
        }
    }

    /// Once a second: forgets ended bans and drained sources, and exports
    /// what the shield and the transports dropped since the last time.
    pub(super) fn edge(&mut self) {
        self.shield.sweep(now());
        let counts = self.shield.counts();
        self.metrics.set_banned_sources(counts.banned_now);
        if self.shield_seen.len() < counts.realms.len() {
            self.shield_seen
                .resize(counts.realms.len(), RealmCounts::default());
        }
        for ((realm, now), seen) in counts.realms.iter().zip(&mut self.shield_seen) {
            let limited = now.rate_limited.saturating_sub(seen.rate_limited);
            let banned = now.banned.saturating_sub(seen.banned);
            if limited > 0 {
                self.metrics
                    .rejected_by(realm, metrics::RejectReason::RateLimited, limited);
            }
            if banned > 0 {
                self.metrics
                    .rejected_by(realm, metrics::RejectReason::Banned, banned);
            }
            *seen = *now;
        }
        for (id, spec) in self.transports.listeners() {
            let Some(stats) = self.transports.stats(id) else {
                continue;
            };
            let seen = self.transport_seen.entry(id).or_default();
            let now = [
                stats.dropped_overload,
                stats.shed_overload,
                stats.connections_rejected,
                stats.connections_too_slow,
            ];
            let reasons = [
                metrics::TransportDropReason::QueueFull,
                metrics::TransportDropReason::Overload,
                metrics::TransportDropReason::ConnectionLimit,
                metrics::TransportDropReason::TooSlow,
            ];
            for ((reason, now), seen) in reasons.into_iter().zip(now).zip(seen.iter_mut()) {
                if now > *seen {
                    self.metrics
                        .transport_dropped(&spec.realm, reason, now - *seen);
                }
                *seen = now;
            }
            let seen = self.tls_seen.entry(id).or_default();
            let sides = [TlsSide::Inbound, TlsSide::Outbound];
            for ((side, now), seen) in sides
                .into_iter()
                .zip(stats.tls_handshake_failures)
                .zip(seen.iter_mut())
            {
                for ((reason, now), seen) in TlsFailure::ALL.into_iter().zip(now).zip(seen) {
                    if now > *seen {
                        self.metrics
                            .tls_handshake_failed(&spec.realm, side, reason, now - *seen);
                    }
                    *seen = now;
                }
            }
        }
    }

    pub(super) fn report(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Sip {
                realm,
                inbound,
                method,
                status,
            } => {
                let direction = if inbound {
                    metrics::Direction::In
                } else {
                    metrics::Direction::Out
                };
                let kind = match (method, status) {
                    (Some(method), _) => metrics::MessageKind::Request(method),
                    (None, Some(code)) => {
                        metrics::MessageKind::Response(metrics::StatusClass::of(code))
                    }
                    (None, None) => return,
                };
                self.metrics.sip_message(&realm, direction, kind);
            }
            CoreEvent::ParseError { realm } => self.metrics.sip_parse_error(&realm),
            CoreEvent::Retransmitted { realm } => self.metrics.sip_retransmission(&realm),
            CoreEvent::Rejected { realm, reason } => {
                self.metrics.rejected(&realm, reason.into());
            }
            CoreEvent::MediaNotLatched {
                call,
                leg,
                realm,
                call_id,
            } => {
                let leg = if leg == Leg::A { "caller" } else { "callee" };
                warn!(
                    call,
                    leg,
                    %realm,
                    call_id,
                    "media keeps coming from a source the relay may not learn: this leg's audio is dropped \
                     (a multi-homed endpoint? see latch_from_networks)"
                );
                self.metrics.media_not_latched(&realm);
            }
            CoreEvent::Register { realm, outcome } => self.metrics.register(&realm, outcome),
            CoreEvent::Keepalive { failed } => self.metrics.keepalive(failed),
            CoreEvent::CallError { call, leg, error } => {
                let leg = leg.map(|leg| match leg {
                    Leg::A => "caller",
                    Leg::B => "callee",
                });
                warn!(call, leg, kind = error.kind(), %error, "call core error");
                self.metrics.call_error(error.kind());
            }
            CoreEvent::Banned {
                realm,
                source,
                reason,
            } => self.ban(&realm, source, reason),
            CoreEvent::CallSetup { setup, .. } => self.metrics.call_setup(setup),
            CoreEvent::CallAttempt {
                call,
                attempt,
                a_call_id,
                b_call_id,
                from_realm,
                to_realm,
                trunk,
            } => {
                let trunk = trunk.as_deref().unwrap_or("-");
                if attempt == 1 {
                    info!(call, %a_call_id, %b_call_id, %from_realm, %to_realm, trunk, "call started");
                } else {
                    info!(call, attempt, %a_call_id, %b_call_id, %from_realm, %to_realm, trunk, "call rerouted");
                }
            }
            CoreEvent::TrunkState { trunk, up } => {
                self.metrics.set_trunk_up(&trunk, up);
                if up {
                    info!(%trunk, "trunk answers its OPTIONS health check");
                } else {
                    warn!(%trunk, "trunk does not answer its OPTIONS health check; it is tried last");
                }
            }
            CoreEvent::TargetState { trunk, target, up } => {
                self.metrics.set_trunk_target_up(&trunk, target, up);
                if up {
                    info!(%trunk, %target, "trunk target answers its OPTIONS health check");
                } else {
                    warn!(%trunk, %target, "trunk target does not answer its OPTIONS health check; it is tried after the others");
                }
            }
            CoreEvent::TrunkTargets { trunk, targets } => {
                self.metrics.set_trunk_targets(&trunk, &targets);
            }
            CoreEvent::CallEnded(summary) => self.call_ended(&summary),
            CoreEvent::Replicate(record) => {
                if let Some(replicator) = &self.replicator {
                    replicator.send(crate::cluster::calls::Change::Put(record));
                }
            }
            CoreEvent::Unreplicate { call } => {
                if let Some(replicator) = &self.replicator {
                    replicator.send(crate::cluster::calls::Change::Gone(call));
                }
            }
        }
    }

    pub(super) fn call_ended(&mut self, call: &CallSummary) {
        let trunk = call.trunks_tried.last().map_or("none", String::as_str);
        self.metrics
            .call_finished(&call.from_realm, trunk, cdr::outcome_of(call));
        if let Some(done) = self.ledger.call_ended(now(), call) {
            self.finish(done);
        }
    }

    /// Logs an ended call and writes its CDR, now that its media counters
    /// are in (or will not come).
    pub(super) fn finish(&self, done: Finished) {
        let record = &done.record;
        if done.missing_streams > 0 {
            warn!(
                call = done.call,
                streams = done.missing_streams,
                "media counters of an ended call never arrived; logged without them"
            );
        }
        info!(
            call = done.call,
            a_call_id = %done.a_call_id,
            b_call_id = record.out_call_id.as_deref().unwrap_or("-"),
            from_realm = %record.in_realm,
            trunk = record.out_trunks_tried.last().map_or("none", String::as_str),
            status = record.sip_status,
            outcome = record.outcome.as_str(),
            ended_by = record.hangup.by(),
            reason = record.hangup.reason().unwrap_or("-"),
            duration_ms = done.duration.map_or(0, |d| d.as_millis() as u64),
            media = record.media_path.map_or("none", metrics::MediaPath::as_str),
            "call ended"
        );
        if let Some(cdr) = self.cdr {
            cdr.write(done.record);
        }
    }

    /// Logs and writes the calls still waiting for media counters (at
    /// shutdown), with what arrived.
    pub(super) fn flush_cdrs(&mut self) {
        for done in self.ledger.flush() {
            self.finish(done);
        }
    }

    /// A released stream completes its call's record; timeouts are
    /// counted when they happen (drops live, from the relay's totals: see
    /// [`Shell::gauges`]).
    pub(super) fn media_event(&mut self, event: &MediaEvent) {
        match event {
            MediaEvent::Released { stream, counters } => {
                if let Some(done) = self.ledger.stream_released(now(), *stream, counters) {
                    self.finish(done);
                }
            }
            MediaEvent::TimedOut { .. } => self.metrics.media_timeout(),
            _ => {}
        }
    }

    pub(super) fn gauges(&mut self, core: &Core) {
        for done in self.ledger.overdue(now(), MEDIA_REPORT_WAIT) {
            self.finish(done);
        }
        let stats = self.relay.stats();
        self.media_totals(core, &stats.realm_totals());
        // Drops as they happen (an attack on a stream shows while it lasts,
        // not when the stream is released); hold's RTP is not a drop here.
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let dropped = [
            load(&stats.dropped_unknown_flow),
            load(&stats.dropped_source),
            load(&stats.dropped_malformed),
            load(&stats.dropped_send),
            load(&stats.dropped_stun),
        ];
        let reasons = [
            metrics::MediaDropReason::UnknownFlow,
            metrics::MediaDropReason::SourceMismatch,
            metrics::MediaDropReason::Malformed,
            metrics::MediaDropReason::SendFailed,
            metrics::MediaDropReason::Stun,
        ];
        for ((reason, now), seen) in reasons
            .into_iter()
            .zip(dropped)
            .zip(&mut self.media_dropped)
        {
            self.metrics
                .media_dropped(reason, now.saturating_sub(*seen));
            *seen = now;
        }
        self.metrics.set_media_streams_active(
            metrics::MediaPath::Userspace,
            stats.streams.load(Ordering::Relaxed),
        );
        for (realm, calls) in core.calls_per_realm() {
            self.metrics.set_calls_active(&realm, calls as u64);
        }
        for (realm, bindings) in core.registrations_per_realm() {
            self.metrics
                .set_registrations_active(&realm, bindings as u64);
        }
        self.metrics
            .set_untrusted_calls(core.untrusted_load().calls as u64);
        for (trunk, calls) in core.calls_per_trunk() {
            self.metrics
                .set_trunk_calls_active(&trunk, u64::from(calls));
        }
        self.metrics
            .set_sip_transactions_active(core.transactions() as u64);
        let misses = self.reserve.misses();
        self.metrics
            .media_reserve_missed(misses.saturating_sub(self.reserve_misses_seen));
        self.reserve_misses_seen = misses;
    }

    /// Exports the relay's per-realm totals (`totals[i]` is realm `i`'s: the
    /// core tags legs with realm indexes; deltas since the last export) and
    /// each realm's free media ports. Every realm gets its series, at 0
    /// until media flows. Realms sharing a media address share its port
    /// pool, so they show the same free count (a reload that adds a media
    /// address gives it a pool before any call can use it).
    pub(super) fn media_totals(&mut self, core: &Core, totals: &[MediaTotals]) {
        for (index, (name, media_ips)) in (0..).map_while(|i| core.realm_media(i)).enumerate() {
            let now = totals.get(index).copied().unwrap_or_default();
            if self.relayed.len() <= index {
                self.relayed.resize(index + 1, MediaTotals::default());
            }
            let before = self.relayed[index];
            self.metrics.media_relayed(
                metrics::MediaPath::Userspace,
                name,
                now.userspace_packets
                    .saturating_sub(before.userspace_packets),
                now.userspace_bytes.saturating_sub(before.userspace_bytes),
            );
            self.metrics.media_relayed(
                metrics::MediaPath::Xdp,
                name,
                now.xdp_packets.saturating_sub(before.xdp_packets),
                now.xdp_bytes.saturating_sub(before.xdp_bytes),
            );
            self.relayed[index] = now;
            let stats = self.relay.stats();
            let mut realm_free = None;
            for &ip in media_ips {
                if let Some(free) = stats.ports_free(ip) {
                    self.metrics.set_media_address_ports_free(ip, free);
                    *realm_free.get_or_insert(0) += free;
                }
                self.metrics
                    .set_media_reserve_endpoints(ip, self.reserve.ready(ip) as u64);
            }
            if let Some(free) = realm_free {
                self.metrics.set_media_ports_free(name, free);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_wakes_wait_for_the_end_of_a_burst_but_not_long() {
        let start = now();
        let mut wakes = RelayWakes::new(start);
        let at = |us| start + Duration::from_micros(us);
        // Messages still queued: the wake waits, while the last is recent.
        assert!(!wakes.due(at(10), true));
        assert!(!wakes.due(at(999), true));
        // The burst is over: wake now.
        assert!(wakes.due(at(1_000), false));
        // A burst that lasts: at most one wake a millisecond.
        assert!(!wakes.due(at(1_500), true));
        assert!(wakes.due(at(2_000), true));
        assert!(!wakes.due(at(2_999), true));
        assert!(wakes.due(at(3_000), true));
        // Nothing queued: every turn wakes (a no-op when nothing was queued).
        assert!(wakes.due(at(3_001), false));
        assert!(wakes.due(at(3_002), false));
    }
}
