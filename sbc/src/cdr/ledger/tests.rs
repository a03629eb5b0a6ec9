use super::*;
use crate::sip::Message;

#[allow(clippy::disallowed_methods)] // the test picks an arbitrary origin
fn t0() -> Instant {
    Instant::now()
}

fn epoch(t0: Instant) -> (Instant, SystemTime) {
    (
        t0,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

fn summary(call: u64, t0: Instant, streams: &[u64]) -> CallSummary {
    let invite = Message::parse(
        b"INVITE sip:+4930555@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK1\r\n\
          From: <sip:alice@203.0.113.7>;tag=a\r\nTo: <sip:+4930555@192.0.2.1>\r\n\
          Call-ID: a-leg@203.0.113.7\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("parses");
    CallSummary {
        call,
        from_realm: "outside".into(),
        from_trunk: None,
        route: Some("to-pbx".into()),
        trunks_tried: vec!["pbx".into()],
        call_ids: ("a-leg@203.0.113.7".into(), Some("b-leg".into())),
        invite,
        to_realm: Some("inside".into()),
        streams: streams.iter().map(|s| StreamId(*s)).collect(),
        started: t0,
        progressed: Some(t0 + Duration::from_millis(300)),
        answered: Some(t0 + Duration::from_secs(1)),
        ended: t0 + Duration::from_secs(61),
        status: 200,
        ended_by: EndedBy::Caller,
        not_latched: [false; 2],
    }
}

fn counters(packets: u64, fast: u64) -> [LegCounters; 2] {
    let leg = LegCounters {
        packets_in: packets,
        bytes_in: packets * 172,
        fast_packets_in: fast,
        packets_out: packets,
        bytes_out: packets * 172,
        ..LegCounters::default()
    };
    [leg, leg]
}

#[test]
fn a_call_waits_for_every_stream_then_finishes_with_their_sums() {
    let t0 = t0();
    let mut ledger = Ledger::new(epoch(t0));
    let end = t0 + Duration::from_secs(61);
    assert!(ledger.call_ended(end, &summary(7, t0, &[1, 2])).is_none());
    assert_eq!(ledger.waiting(), 1);
    assert!(
        ledger
            .stream_released(end, StreamId(1), &counters(100, 0))
            .is_none()
    );
    let done = ledger
        .stream_released(end, StreamId(2), &counters(50, 0))
        .expect("the last stream finishes the call");
    assert_eq!((done.call, done.missing_streams), (7, 0));
    assert_eq!(done.record.media_in.rx_packets, 150);
    assert_eq!(done.record.media_out.tx_bytes, 150 * 172);
    assert_eq!(done.record.media_path, Some(MediaPath::Userspace));
    assert_eq!(done.duration, Some(Duration::from_secs(60)));
    assert_eq!(
        done.record.answer,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001))
    );
    assert_eq!(ledger.waiting(), 0);
}

#[test]
fn counters_that_come_before_the_call_ends_are_claimed() {
    let t0 = t0();
    let mut ledger = Ledger::new(epoch(t0));
    let at = t0 + Duration::from_secs(60);
    assert!(
        ledger
            .stream_released(at, StreamId(1), &counters(10, 9))
            .is_none()
    );
    assert!(
        ledger
            .stream_released(at, StreamId(2), &counters(10, 9))
            .is_none()
    );
    let done = ledger
        .call_ended(at, &summary(1, t0, &[1, 2]))
        .expect("every stream had reported");
    assert_eq!(done.record.media_in.rx_packets, 20);
    assert_eq!(
        done.record.media_path,
        Some(MediaPath::Xdp),
        "18 of 40 relayed packets on each side by the fast path: most"
    );
}

#[test]
fn a_call_without_media_finishes_at_once() {
    let t0 = t0();
    let mut ledger = Ledger::new(epoch(t0));
    let mut call = summary(3, t0, &[]);
    call.answered = None;
    call.status = 486;
    call.ended_by = EndedBy::Callee;
    let done = ledger.call_ended(t0, &call).expect("nothing to wait for");
    assert_eq!(done.record.media_path, None);
    assert_eq!(done.record.outcome, CallOutcome::Busy);
    assert_eq!(done.duration, None);
}

#[test]
fn overdue_calls_finish_without_what_never_came_and_stray_counters_go() {
    let t0 = t0();
    let wait = Duration::from_secs(60);
    let mut ledger = Ledger::new(epoch(t0));
    assert!(ledger.call_ended(t0, &summary(1, t0, &[1, 2])).is_none());
    assert!(
        ledger
            .stream_released(t0, StreamId(1), &counters(5, 0))
            .is_none()
    );
    assert!(
        ledger
            .stream_released(t0, StreamId(99), &counters(5, 0))
            .is_none()
    );
    assert!(ledger.overdue(t0 + wait / 2, wait).is_empty());
    let late = ledger.overdue(t0 + wait, wait);
    assert_eq!(late.len(), 1);
    assert_eq!((late[0].call, late[0].missing_streams), (1, 1));
    assert_eq!(late[0].record.media_in.rx_packets, 5);
    // Stream 2's counters now find no call; stream 99's were forgotten.
    assert!(
        ledger
            .stream_released(t0 + wait, StreamId(2), &counters(1, 0))
            .is_none()
    );
    assert!(ledger.early.len() == 1 && ledger.early.contains_key(&StreamId(2)));
}

#[test]
fn flush_finishes_everything_in_call_order() {
    let t0 = t0();
    let mut ledger = Ledger::new(epoch(t0));
    for call in [5, 2, 9] {
        assert!(ledger.call_ended(t0, &summary(call, t0, &[call])).is_none());
    }
    let calls: Vec<u64> = ledger.flush().iter().map(|f| f.call).collect();
    assert_eq!(calls, [2, 5, 9]);
    assert_eq!(ledger.waiting(), 0);
}

#[test]
fn outcomes_and_hangups_say_who_ended_the_call_and_how() {
    let t0 = t0();
    let mut call = summary(1, t0, &[]);
    call.answered = None;
    call.status = 487;
    assert_eq!(outcome_of(&call), CallOutcome::Cancelled);
    call.ended_by = EndedBy::Sbc(SbcReason::NoRoute);
    call.status = 503;
    assert_eq!(outcome_of(&call), CallOutcome::Failed);
    assert_eq!(
        hangup_of(call.ended_by),
        Hangup::Sbc(SbcHangup::Refused(RejectReason::NoRoute))
    );
    call.ended_by = EndedBy::Callee;
    call.status = 404;
    assert_eq!(outcome_of(&call), CallOutcome::Rejected);
    call.answered = Some(t0);
    call.status = 200;
    call.ended_by = EndedBy::Sbc(SbcReason::MediaTimeout);
    assert_eq!(outcome_of(&call), CallOutcome::Answered);
    assert_eq!(
        hangup_of(call.ended_by),
        Hangup::Sbc(SbcHangup::MediaTimeout)
    );
}
