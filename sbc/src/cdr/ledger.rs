//! The call-record join: an ended call's record waits for the final media
//! counters of its streams, which the relay reports on its own thread and
//! in its own time, before it is logged and written.
//!
//! Owns: the calls that ended and wait for counters, which stream belongs
//! to which of them, and counters that arrived before their call ended (a
//! BYE releases the streams while the call still waits for its BYEs'
//! answers). What a [`CallSummary`] means for the record: the outcome (as
//! `sbc_calls_total` counts it), who hung up and why, wall-clock times.
//!
//! May not: read a clock (every method takes `now`; wall time comes from an
//! epoch pair the shell takes once), log, or write: it hands back
//! [`Finished`] calls and the shell logs and writes them.
//!
//! Driving it: [`Ledger::call_ended`] for each `CoreEvent::CallEnded`,
//! [`Ledger::stream_released`] for each `MediaEvent::Released`,
//! [`Ledger::overdue`] once a second (a call whose counters never came is
//! finished without them after `wait`, and stray early counters are
//! forgotten), [`Ledger::flush`] at shutdown.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::{CallRecord, Hangup, MediaCounts, Parties, SbcHangup};
use crate::b2bua::{CallSummary, EndedBy, SbcReason};
use crate::media::command::{LegCounters, StreamId};
use crate::metrics::{CallOutcome, MediaPath, RejectReason};

/// A call whose record is complete (or given up on): log it, write it.
#[derive(Debug)]
pub struct Finished {
    /// The call's number in the core.
    pub call: u64,
    /// Leg A's Call-ID, for the log line.
    pub a_call_id: String,
    /// Answer to end.
    pub duration: Option<Duration>,
    /// The record, media counts and path filled in.
    pub record: CallRecord,
    /// Streams whose counters never arrived (0 for a complete record).
    pub missing_streams: usize,
}

/// What `sbc_calls_total{outcome}` and the CDR say of a call.
pub fn outcome_of(call: &CallSummary) -> CallOutcome {
    match call.ended_by {
        EndedBy::Caller if call.answered.is_none() => CallOutcome::Cancelled,
        EndedBy::Sbc(_) if call.answered.is_none() && call.status >= 500 => CallOutcome::Failed,
        _ => CallOutcome::from_final_status(call.status).unwrap_or(CallOutcome::Failed),
    }
}

/// Who hung up, and why when it was the SBC.
pub fn hangup_of(ended_by: EndedBy) -> Hangup {
    match ended_by {
        EndedBy::Caller => Hangup::Caller,
        EndedBy::Callee => Hangup::Callee,
        EndedBy::Sbc(reason) => Hangup::Sbc(match reason {
            SbcReason::Shutdown => SbcHangup::Shutdown,
            SbcReason::MediaTimeout => SbcHangup::MediaTimeout,
            SbcReason::NoAnswer => SbcHangup::NoAnswerTimeout,
            SbcReason::NoAck | SbcReason::Internal => SbcHangup::TransactionTimeout,
            SbcReason::NoRoute => SbcHangup::Refused(RejectReason::NoRoute),
            SbcReason::BadSdp => SbcHangup::Refused(RejectReason::Invalid),
            SbcReason::MediaPorts => SbcHangup::Refused(RejectReason::MediaPorts),
            SbcReason::Overload => SbcHangup::Refused(RejectReason::Admission),
        }),
    }
}

/// An ended call waiting for its streams' final counters.
#[derive(Debug)]
struct Waiting {
    a_call_id: String,
    duration: Option<Duration>,
    record: CallRecord,
    /// Media streams the call had.
    streams: usize,
    /// Streams still to report.
    waiting: usize,
    /// Of the packets relayed (both legs), those the XDP fast path relayed.
    fast_packets: u64,
    /// When the call ended (for the bound on waiting).
    since: Instant,
}

impl Waiting {
    /// Adds one stream's final counters: leg A is the inbound leg, B the
    /// outbound one.
    fn add(&mut self, counters: &[LegCounters; 2]) {
        for (total, leg) in [&mut self.record.media_in, &mut self.record.media_out]
            .into_iter()
            .zip(counters)
        {
            total.rx_packets += leg.packets_in;
            total.rx_bytes += leg.bytes_in;
            total.tx_packets += leg.packets_out;
            total.tx_bytes += leg.bytes_out;
            self.fast_packets += leg.fast_packets_in;
        }
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// Which path carried the call's media: `xdp` when the fast path
    /// relayed more than half of its packets (the first packets of every
    /// flow go through userspace, which latches them, so a call the fast
    /// path took over is mostly but never entirely XDP), else `userspace`
    /// (also for a call with streams but no packet); `None` when no media
    /// was anchored.
    fn media_path(&self) -> Option<MediaPath> {
        if self.streams == 0 {
            return None;
        }
        let relayed = self.record.media_in.tx_packets + self.record.media_out.tx_packets;
        Some(if self.fast_packets * 2 > relayed {
            MediaPath::Xdp
        } else {
            MediaPath::Userspace
        })
    }

    fn finish(mut self, call: u64) -> Finished {
        self.record.media_path = self.media_path();
        Finished {
            call,
            a_call_id: self.a_call_id,
            duration: self.duration,
            record: self.record,
            missing_streams: self.waiting,
        }
    }
}

/// The join (see the module docs).
#[derive(Debug)]
pub struct Ledger {
    /// A moment on both clocks, to turn core `Instant`s into wall time.
    epoch: (Instant, SystemTime),
    ended: HashMap<u64, Waiting>,
    of_stream: HashMap<StreamId, u64>,
    /// Final counters of streams released before their call ended.
    early: HashMap<StreamId, (Instant, [LegCounters; 2])>,
}

impl Ledger {
    /// An empty ledger; `epoch` is one moment read on both clocks.
    pub fn new(epoch: (Instant, SystemTime)) -> Ledger {
        Ledger {
            epoch,
            ended: HashMap::new(),
            of_stream: HashMap::new(),
            early: HashMap::new(),
        }
    }

    /// Calls waiting for counters now.
    pub fn waiting(&self) -> usize {
        self.ended.len()
    }

    /// The wall-clock time of a core `Instant`.
    fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.epoch.0) {
            Some(after) => self.epoch.1 + after,
            None => self.epoch.1 - self.epoch.0.duration_since(at),
        }
    }

    /// A call ended: finished at once if it had no media stream or every
    /// stream already reported, else held until they do.
    pub fn call_ended(&mut self, now: Instant, call: &CallSummary) -> Option<Finished> {
        let record = CallRecord {
            start: self.wall(call.started),
            progress: call.progressed.map(|t| self.wall(t)),
            answer: call.answered.map(|t| self.wall(t)),
            end: self.wall(call.ended),
            parties: Parties::of_invite(&call.invite),
            in_realm: call.from_realm.clone(),
            in_trunk: call.from_trunk.clone(),
            out_realm: call.to_realm.clone(),
            out_trunks_tried: call.trunks_tried.clone(),
            out_call_id: call.call_ids.1.clone(),
            outcome: outcome_of(call),
            sip_status: call.status,
            sip_reason: crate::sip::error::standard_reason(call.status).to_owned(),
            hangup: hangup_of(call.ended_by),
            media_path: None,
            media_in: MediaCounts::default(),
            media_out: MediaCounts::default(),
            media_not_latched: call.not_latched,
        };
        let mut waiting = Waiting {
            a_call_id: call.call_ids.0.clone(),
            duration: call
                .answered
                .map(|a| call.ended.saturating_duration_since(a)),
            record,
            streams: call.streams.len(),
            waiting: call.streams.len(),
            fast_packets: 0,
            since: now,
        };
        let mut pending = Vec::new();
        for stream in &call.streams {
            match self.early.remove(stream) {
                Some((_, counters)) => waiting.add(&counters),
                None => pending.push(*stream),
            }
        }
        if waiting.waiting == 0 {
            return Some(waiting.finish(call.call));
        }
        for stream in pending {
            self.of_stream.insert(stream, call.call);
        }
        self.ended.insert(call.call, waiting);
        None
    }

    /// A stream's final counters: added to its ended call, which finishes
    /// once every stream has reported; kept for a call that has not ended
    /// yet.
    pub fn stream_released(
        &mut self,
        now: Instant,
        stream: StreamId,
        counters: &[LegCounters; 2],
    ) -> Option<Finished> {
        let Some(call) = self.of_stream.remove(&stream) else {
            self.early.insert(stream, (now, *counters));
            return None;
        };
        let waiting = self.ended.get_mut(&call)?;
        waiting.add(counters);
        if waiting.waiting > 0 {
            return None;
        }
        self.ended.remove(&call).map(|w| w.finish(call))
    }

    /// Calls that waited `wait` or longer, finished without the counters
    /// that never came; early counters older than `wait` are forgotten
    /// (their call never ended in this ledger: a restart, or a release of a
    /// stream the core never reported).
    pub fn overdue(&mut self, now: Instant, wait: Duration) -> Vec<Finished> {
        let stale = now.checked_sub(wait);
        let late = |since: Instant| stale.is_some_and(|stale| since <= stale);
        self.early.retain(|_, (at, _)| !late(*at));
        let overdue: Vec<u64> = self
            .ended
            .iter()
            .filter(|(_, w)| late(w.since))
            .map(|(call, _)| *call)
            .collect();
        overdue
            .into_iter()
            .filter_map(|call| {
                let waiting = self.ended.remove(&call)?;
                self.of_stream.retain(|_, c| *c != call);
                Some(waiting.finish(call))
            })
            .collect()
    }

    /// Every call still waiting, finished with what arrived (shutdown).
    pub fn flush(&mut self) -> Vec<Finished> {
        self.of_stream.clear();
        self.early.clear();
        let mut calls: Vec<(u64, Waiting)> = self.ended.drain().collect();
        calls.sort_by_key(|(call, _)| *call);
        calls
            .into_iter()
            .map(|(call, waiting)| waiting.finish(call))
            .collect()
    }
}

#[cfg(test)]
mod tests;
