//! Every caller/callee scenario pair of the signaling suite, played
//! directly SIPp to SIPp (no SBC in between), so that a failure of the SBC
//! tests in `signaling.rs` is the daemon's and not the scenarios'. Each
//! pair runs in its own lab network ([`Lab::peers_only`]): the carrier's
//! address calls the PBX's.
//!
//! What this cannot check: that a callee scenario needs nothing of the
//! caller's identifiers. That holds by construction (callees only copy
//! `[last_*]` headers of what they received) and the SBC tests prove it.

use std::time::Duration;

use tests::lab::{Host, Lab, flow};
use tests::netns::skip_unless_sipp;
use tests::sipp::{SippResult, Transport};

/// Runs `callee` on the PBX and `caller` from the carrier straight at it;
/// returns (caller, callee) results.
fn pair(name: &str, caller: &str, callee: &str) -> (SippResult, SippResult) {
    pair_with(name, caller, callee, Transport::Udp)
}

fn pair_with(
    name: &str,
    caller: &str,
    callee: &str,
    transport: Transport,
) -> (SippResult, SippResult) {
    let lab = Lab::peers_only(name);
    let pbx = lab.plan().host(Host::Pbx);
    let uas = lab.start_callee(
        &lab.peer(callee, Host::Pbx)
            .transport(transport)
            .timeout(Duration::from_secs(15)),
    );
    let uac = lab
        .peer(caller, Host::Carrier)
        .transport(transport)
        .remote(pbx)
        .timeout(Duration::from_secs(10))
        .run();
    let uas = lab.finish_callee(&uac, uas);
    (uac, uas)
}

fn assert_both_succeed(name: &str, caller: &str, callee: &str) -> (SippResult, SippResult) {
    let (uac, uas) = pair(name, caller, callee);
    uac.assert_success(1);
    uas.assert_success(1);
    (uac, uas)
}

#[test]
fn basic_call() {
    if skip_unless_sipp("basic_call") {
        return;
    }
    let lab = Lab::peers_only("basic");
    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let uac = lab
        .peer("caller.xml", Host::Carrier)
        .remote(lab.plan().host(Host::Pbx))
        .timeout(Duration::from_secs(10))
        .run();
    let uas = uas.wait();
    uac.assert_success(1);
    uas.assert_success(1);
    assert_eq!(
        flow(&uas),
        ["INVITE", "180", "200", "ACK", "BYE", "200"],
        "{}",
        uas.report()
    );
    // In-dialog requests went to the callee's Contact.
    assert!(uac.messages.contains("BYE sip:callee@"), "{}", uac.report());
}

#[test]
fn basic_call_over_tcp() {
    if skip_unless_sipp("basic_call_over_tcp") {
        return;
    }
    // Over TCP the callee counts its call failed when the caller closes
    // the connection during its closing timewait (see tests::sipp), so
    // only the caller is judged, and the callee by what it received.
    let (uac, uas) = pair_with("tcp", "caller.xml", "callee.xml", Transport::Tcp);
    uac.assert_success(1);
    assert!(
        uas.messages.contains("BYE sip:callee@") && uas.messages.contains("TCP message"),
        "{}",
        uas.report()
    );
    let _ = std::fs::remove_dir_all(&uas.dir);
}

#[test]
fn callee_rings_before_answering() {
    if skip_unless_sipp("callee_rings_before_answering") {
        return;
    }
    let (uac, _) = assert_both_succeed("rings", "caller.xml", "callee-rings.xml");
    assert!(
        uac.elapsed >= std::time::Duration::from_secs(3),
        "answered after {:?}, not after 3 s of ringing",
        uac.elapsed
    );
}

#[test]
fn callee_hangs_up() {
    if skip_unless_sipp("callee_hangs_up") {
        return;
    }
    let (uac, _) = assert_both_succeed("bye", "caller-wait-bye.xml", "callee-sends-bye.xml");
    // The BYE went to the caller's Contact, with From/To swapped.
    assert!(uac.messages.contains("BYE sip:caller@"), "{}", uac.report());
}

#[test]
fn cancel_while_ringing() {
    if skip_unless_sipp("cancel_while_ringing") {
        return;
    }
    let (uac, uas) = assert_both_succeed("cancel", "caller-cancel.xml", "callee-cancel.xml");
    assert_eq!(
        flow(&uac),
        ["INVITE", "180", "CANCEL", "200", "487", "ACK"],
        "{}",
        uac.report()
    );
    assert_eq!(uas.requests("ACK"), 1, "{}", uas.report());
}

#[test]
fn hold_and_unhold() {
    if skip_unless_sipp("hold_and_unhold") {
        return;
    }
    let (uac, uas) = assert_both_succeed("hold", "caller-hold.xml", "callee-hold.xml");
    assert_eq!(uas.requests("INVITE"), 3, "{}", uas.report());
    assert!(uac.messages.contains("a=recvonly"), "{}", uac.report());
}

#[test]
fn hold_and_unhold_by_the_callee() {
    if skip_unless_sipp("hold_and_unhold_by_the_callee") {
        return;
    }
    let (uac, uas) = assert_both_succeed("held", "caller-held.xml", "callee-holds.xml");
    assert_eq!(uac.requests("INVITE"), 3, "{}", uac.report());
    assert_eq!(uac.requests("BYE"), 1, "{}", uac.report());
    assert!(uas.messages.contains("a=recvonly"), "{}", uas.report());
}

#[test]
fn late_offer() {
    if skip_unless_sipp("late_offer") {
        return;
    }
    assert_both_succeed("late", "caller-late-offer.xml", "callee-late-offer.xml");
}

#[test]
fn reliable_provisional_and_prack() {
    if skip_unless_sipp("reliable_provisional_and_prack") {
        return;
    }
    let (uac, uas) = assert_both_succeed("prack", "caller-100rel.xml", "callee-100rel.xml");
    assert_eq!(uas.requests("PRACK"), 1, "{}", uas.report());
    assert!(
        uac.messages.contains("RAck: 1 1 INVITE"),
        "{}",
        uac.report()
    );
}

fn rejected(name: &str, callee: &str, status: &str) {
    if skip_unless_sipp(name) {
        return;
    }
    let (uac, uas) = assert_both_succeed(name, "caller-rejected.xml", callee);
    assert_eq!(flow(&uac), ["INVITE", status, "ACK"], "{}", uac.report());
    assert_eq!(uas.requests("ACK"), 1, "{}", uas.report());
}

#[test]
fn rejected_404() {
    rejected("rejected_404", "callee-404-unknown.xml", "404");
}

#[test]
fn rejected_486() {
    rejected("rejected_486", "callee-486-busy.xml", "486");
}

#[test]
fn rejected_503() {
    rejected("rejected_503", "callee-503-unavailable.xml", "503");
}

#[test]
fn first_200_dropped_waits_for_the_retransmission() {
    if skip_unless_sipp("first_200_dropped_waits_for_the_retransmission") {
        return;
    }
    let (uac, _) = assert_both_succeed("drop200", "caller-drop-200.xml", "callee.xml");
    // INVITE, 180, the 200 dropped, its retransmission, then the ACK.
    assert_eq!(
        flow(&uac).iter().take(5).collect::<Vec<_>>(),
        ["INVITE", "180", "200", "200", "ACK"],
        "{}",
        uac.report()
    );
}

#[test]
fn silent_callee_sends_nothing() {
    if skip_unless_sipp("silent_callee_sends_nothing") {
        return;
    }
    let lab = Lab::peers_only("silent");
    let uas = lab.start_callee(&lab.peer("callee-silent.xml", Host::Pbx));
    let uac = lab
        .peer("caller.xml", Host::Carrier)
        .remote(lab.plan().host(Host::Pbx))
        .timeout(Duration::from_secs(3))
        .run();
    let uas = uas.kill();
    uac.assert_failure();
    // The caller retransmitted (timer A), the callee took every copy and
    // answered none.
    assert!(uas.requests("INVITE") >= 2, "{}", uas.report());
    assert!(!uas.messages.contains("message sent"), "{}", uas.report());
    assert!(
        !uac.messages.contains("message received"),
        "{}",
        uac.report()
    );
    let _ = std::fs::remove_dir_all(&uac.dir);
    let _ = std::fs::remove_dir_all(&uas.dir);
}
