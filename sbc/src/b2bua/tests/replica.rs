//! Calls carried on by another core: the record an answered call writes,
//! and what adopting it does.

use super::*;
use crate::b2bua::replica::{CSEQ_LEAP, CallRecord};

fn replicating() -> Lab {
    let mut lab = Lab::new(CONFIG);
    lab.core.replicate = true;
    lab
}

fn records(lab: &Lab) -> Vec<&CallRecord> {
    lab.events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::Replicate(record) => Some(&**record),
            _ => None,
        })
        .collect()
}

fn unreplicated(lab: &Lab) -> usize {
    lab.events
        .iter()
        .filter(|e| matches!(e, CoreEvent::Unreplicate { .. }))
        .count()
}

/// The `o=` session id and version of an SDP body.
fn origin(msg: &Message) -> (String, u64) {
    let text = String::from_utf8_lossy(msg.body()).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("o="))
        .expect("an o= line")
        .to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[1].to_owned(), fields[2].parse().expect("a version"))
}

#[test]
fn without_replication_nothing_is_written() {
    let mut lab = Lab::new(CONFIG);
    let (_, ok) = establish(&mut lab);
    caller_hangs_up(&mut lab, &ok, 11, PBX);
    assert!(records(&lab).is_empty());
    assert_eq!(unreplicated(&lab), 0);
}

#[test]
fn an_answered_call_is_written_when_it_changes_and_forgotten_when_it_ends() {
    let mut lab = replicating();
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 180, None));
    assert!(records(&lab).is_empty(), "a ringing call is not written");
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    let _ = lab.take_one(PBX, "ACK");
    assert_eq!(records(&lab).len(), 1, "written once, at the answer");
    let first = records(&lab)[0].clone();
    assert_eq!(first.a.text[0], "caller-call-id@10.9.8.7");
    assert_eq!(first.streams.len(), 1);
    let stream = first.streams[0].as_ref().expect("anchored");
    assert!(
        stream.remote.iter().all(Option::is_some),
        "both legs' remotes: {stream:?}"
    );
    // JSON both ways, as Redis keeps it.
    let json = serde_json::to_vec(&first).expect("serializes");
    assert_eq!(
        serde_json::from_slice::<CallRecord>(&json).expect("parses"),
        first
    );

    // An in-dialog OPTIONS changes nothing a successor needs.
    lab.trunk_sends(
        PBX,
        in_dialog("OPTIONS", &b_invite, true, 2, None).as_bytes(),
    );
    let options = lab.take_one(CALLER, "OPTIONS");
    lab.caller_sends(std::str::from_utf8(&respond(&options, 200, "", None, &[])).expect("utf8"));
    let _ = lab.take_one(PBX, "200");
    assert_eq!(records(&lab).len(), 1);

    // A re-INVITE (hold) does: the new direction is in the next record.
    let hold = CALLEE_SDP.replace("a=sendrecv", "a=sendonly");
    lab.trunk_sends(
        PBX,
        in_dialog("INVITE", &b_invite, true, 3, Some(&hold)).as_bytes(),
    );
    assert_eq!(records(&lab).len(), 2);
    let held = records(&lab)[1].streams[0].clone().expect("anchored");
    assert_eq!(
        held.remote[1].map(|(_, d)| d),
        Some(crate::media::command::Direction::SendOnly)
    );

    callee_hangs_up(&mut lab, &b_invite);
    assert_eq!(unreplicated(&lab), 1, "the end is written once");
}

#[test]
fn an_adopted_call_serves_both_legs_on_the_same_ports_and_dialogs() {
    let mut first = replicating();
    let (b_invite, ok) = establish(&mut first);
    let record = records(&first).last().copied().cloned().expect("written");
    let anchored = record.streams[0].clone().expect("anchored");

    // Another core (the node that takes over) carries it on.
    let mut second = replicating();
    second.now = first.now;
    let id = second
        .core
        .adopt(second.now, &record, &|_| Some((1, 2)))
        .expect("adopted");
    second.settle();
    assert_eq!(second.core.active_calls(), 1);
    let restore = second
        .media
        .iter()
        .find_map(|c| match c {
            MediaCommand::Restore { stream, legs, at } => Some((*stream, *legs, **at)),
            _ => None,
        })
        .expect("its media restored");
    assert_eq!(restore.2, anchored.local, "on the very ports the peers use");
    assert_eq!(
        restore.0.0 % 2,
        1,
        "a stream id the owning relay thread gets"
    );
    assert_eq!(restore.1[0].local_ip, anchored.local[0].rtp.ip());
    let remotes: Vec<_> = second
        .media
        .iter()
        .filter_map(|c| match c {
            MediaCommand::SetRemote {
                stream,
                leg,
                remote,
            } if *stream == restore.0 => Some((*leg, *remote)),
            _ => None,
        })
        .collect();
    assert_eq!(
        remotes,
        vec![
            (Leg::A, anchored.remote[0].expect("A's").0),
            (Leg::B, anchored.remote[1].expect("B's").0)
        ]
    );
    // Written again under the new node.
    assert_eq!(records(&second).len(), 1);
    assert_eq!(records(&second)[0].call, id);
    // Adopting it twice would make two calls of one dialog.
    assert_eq!(
        second.core.adopt(second.now, &record, &|_| Some((1, 2))),
        Err(crate::b2bua::replica::AdoptError::Duplicate)
    );

    // The PBX puts the call on hold: the re-INVITE crosses to the caller
    // in A's dialog, its SDP the next version of the same session.
    let hold = CALLEE_SDP.replace("a=sendrecv", "a=sendonly");
    second.trunk_sends(
        PBX,
        in_dialog("INVITE", &b_invite, true, 3, Some(&hold)).as_bytes(),
    );
    let a_reinvite = second.take_one(CALLER, "INVITE");
    assert_eq!(
        a_reinvite.call_id(),
        Some(b"caller-call-id@10.9.8.7".as_slice())
    );
    let (session, version) = origin(&ok);
    assert_eq!(origin(&a_reinvite), (session, version + 1));
    assert!(
        a_reinvite.cseq().is_some_and(|c| c.seq > CSEQ_LEAP),
        "above anything the dead node sent"
    );
    second.caller_sends(
        std::str::from_utf8(&respond(&a_reinvite, 488, "", None, &[])).expect("utf8"),
    );
    let _ = second.take_one(PBX, "488");

    // The caller hangs up: its BYE reaches the PBX in B's dialog.
    second.caller_sends(&in_dialog("BYE", &ok, false, 11, None));
    assert_eq!(
        second.take_one(CALLER, "200").cseq().map(|c| c.seq),
        Some(11)
    );
    let bye = second.take_one(PBX, "BYE");
    assert_eq!(bye.call_id(), b_invite.call_id());
    assert!(bye.cseq().is_some_and(|c| c.seq > CSEQ_LEAP));
    second.trunk_sends(PBX, &answer(&bye, 200, None));
    assert_eq!(second.core.active_calls(), 0);
    assert!(
        second
            .media
            .iter()
            .any(|c| matches!(c, MediaCommand::Release { stream } if *stream == restore.0))
    );
    assert_eq!(unreplicated(&second), 1);
    assert_eq!(
        second.ended().map(|s| (s.status, s.ended_by)),
        Some((200, EndedBy::Caller))
    );
}

#[test]
fn a_record_naming_what_is_not_configured_is_refused() {
    let mut first = replicating();
    let _ = establish(&mut first);
    let mut record = records(&first).last().copied().cloned().expect("written");
    let mut second = replicating();
    let mut stranger = record.clone();
    stranger.a.realm = "elsewhere".into();
    assert!(matches!(
        second.core.adopt(second.now, &stranger, &|_| Some((0, 1))),
        Err(crate::b2bua::replica::AdoptError::Unknown(_))
    ));
    // Legs on ports of two relay threads can't be restored.
    let lanes = |addr: SocketAddr| Some((usize::from(addr.port().is_multiple_of(4)), 2));
    let ports = record.streams[0].as_ref().expect("anchored").local;
    assert_ne!(lanes(ports[0].rtp), lanes(ports[1].rtp), "{ports:?}");
    assert!(matches!(
        second.core.adopt(second.now, &record, &lanes),
        Err(crate::b2bua::replica::AdoptError::Lanes(..))
    ));
    record.format += 1;
    assert!(matches!(
        second.core.adopt(second.now, &record, &|_| Some((0, 1))),
        Err(crate::b2bua::replica::AdoptError::Format(_))
    ));
    assert_eq!(second.core.active_calls(), 0, "nothing half adopted");
}

#[test]
fn after_a_redis_outage_every_answered_call_is_written_again() {
    let mut lab = replicating();
    let _ = establish(&mut lab);
    // A second call, still ringing: not written.
    lab.caller_sends(&another_invite(2));
    let _ = lab.take_one(PBX, "INVITE");
    lab.events.clear();
    lab.core.replicate_all(lab.now);
    lab.settle();
    assert_eq!(records(&lab).len(), 1, "only the answered call");
    assert_eq!(records(&lab)[0].a.text[0], "caller-call-id@10.9.8.7");
}
