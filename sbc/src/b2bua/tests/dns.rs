//! Trunks found by DNS (RFC 3263) in the core: the shell hands over the
//! resolved targets; a call fails over across them within the trunk, a
//! target that failed waits behind the others for `[dns] target_block_secs`,
//! and each target has its own health check.

use super::*;
use crate::b2bua::routing::TrunkTarget;

const SIP1: &str = "198.51.100.21:5060";
const SIP2: &str = "198.51.100.22:5060";
const SIP3: &str = "198.51.100.23:5060";

fn named_config(options_secs: u32) -> String {
    CONFIG
        .replace(
            "address = \"198.51.100.3:5060\"",
            &format!("address = \"pbx.example.net\"\noptions_interval_secs = {options_secs}"),
        )
        .replace(
            "address = \"198.51.100.5:5060\"",
            "address = \"198.51.100.5:5060\"\noptions_interval_secs = 0",
        )
        .replace("[limits]", "[dns]\ntarget_block_secs = 60\n[limits]")
}

/// SRV-style targets: sip (priority 10), sip2 (20), sip3 (30).
fn targets() -> Vec<TrunkTarget> {
    [SIP1, SIP2, SIP3]
        .iter()
        .enumerate()
        .map(|(i, a)| TrunkTarget {
            priority: 10 * (i as u16 + 1),
            weight: 1,
            transport: Some(Transport::Udp),
            ..TrunkTarget::at(addr(a))
        })
        .collect()
}

fn end_call(lab: &mut Lab, at: &str, invite: &Message) {
    lab.trunk_sends(at, &answer(invite, 486, None));
    lab.take(CALLER);
    lab.take(at);
}

#[test]
fn a_named_trunk_without_targets_is_skipped_until_the_shell_resolves_it() {
    let mut lab = Lab::new(&named_config(0));
    lab.caller_sends(&invite(true));
    // Not resolved yet: the route's next trunk takes the call.
    lab.take_one(PBX2, "INVITE");
    assert!(lab.take(SIP1).is_empty());
}

#[test]
fn a_call_fails_over_across_the_targets_of_one_trunk_and_blocks_the_failed_one() {
    let mut lab = Lab::new(&named_config(0));
    let now = lab.now;
    lab.core.set_trunk_targets(now, "pbx", targets());
    assert!(
        lab.events
            .iter()
            .all(|e| !matches!(e, CoreEvent::CallAttempt { .. }))
    );
    lab.caller_sends(&invite(true));
    let first = lab.take_one(SIP1, "INVITE");
    // 503 from sip: sip2 of the same trunk, not the route's next trunk.
    lab.trunk_sends(SIP1, &answer(&first, 503, None));
    let second = lab.take_one(SIP2, "INVITE");
    assert_ne!(second.call_id(), first.call_id(), "a new leg");
    // sip2 is unreachable (ICMP): sip3.
    let now = lab.now;
    lab.core.handle_send_failed(now, addr(SIP2));
    lab.settle();
    let third = lab.take_one(SIP3, "INVITE");
    let to_pbx2: Vec<String> = lab.take(PBX2).iter().map(describe).collect();
    assert!(
        to_pbx2.is_empty(),
        "pbx2 is not tried while pbx has targets: {to_pbx2:?}"
    );
    lab.trunk_sends(SIP3, &answer(&third, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    lab.take_one(SIP3, "ACK");
    // One trunk tried, three attempts.
    let attempts: Vec<usize> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::CallAttempt {
                trunk: Some(t),
                attempt,
                ..
            } if t == "pbx" => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    // sip and sip2 are blocked for 60 s: the next call starts on sip3.
    lab.caller_sends(&another_invite(2));
    let next = lab.take_one(SIP3, "INVITE");
    end_call(&mut lab, SIP3, &next);

    // A new answer from DNS keeps the blocks of targets it still has.
    let now = lab.now;
    let mut fresh = targets();
    fresh[2].weight = 5;
    lab.core.set_trunk_targets(now, "pbx", fresh);
    lab.caller_sends(&another_invite(3));
    let next = lab.take_one(SIP3, "INVITE");
    end_call(&mut lab, SIP3, &next);

    // After the block, priority order again.
    lab.advance(Duration::from_secs(61));
    lab.take(SIP1);
    lab.take(SIP2);
    lab.take(SIP3);
    lab.caller_sends(&another_invite(4));
    lab.take_one(SIP1, "INVITE");
}

#[test]
fn every_target_has_its_own_health_check_and_the_trunk_is_up_while_one_answers() {
    let mut lab = Lab::new(&named_config(30));
    lab.core.start(lab.now);
    let now = lab.now;
    lab.core.set_trunk_targets(now, "pbx", targets());
    lab.advance(Duration::from_millis(1));
    let pings: Vec<Message> = [SIP1, SIP2, SIP3]
        .iter()
        .map(|t| lab.take_one(t, "OPTIONS"))
        .collect();
    // sip answers; the others stay silent until timer F.
    lab.trunk_sends(SIP1, &respond(&pings[0], 200, "", Some("p1"), &[]));
    lab.advance(Duration::from_secs(33));
    let verdicts: Vec<(String, bool)> = lab
        .events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::TargetState { target, up, .. } => Some((target.to_string(), *up)),
            CoreEvent::TrunkState { trunk, up } => Some((trunk.clone(), *up)),
            _ => None,
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (SIP1.to_owned(), true),
            ("pbx".to_owned(), true),
            (SIP2.to_owned(), false),
            (SIP3.to_owned(), false),
        ]
    );
    // A call tries the target that answers first, whatever its priority
    // says about the others.
    lab.take(SIP1);
    lab.take(SIP2);
    lab.take(SIP3);
    lab.caller_sends(&invite(true));
    lab.take_one(SIP1, "INVITE");

    // DNS drops sip3: its series goes (TrunkTargets), and its probes stop.
    let now = lab.now;
    lab.core
        .set_trunk_targets(now, "pbx", targets()[..2].to_vec());
    lab.settle();
    assert!(lab.events.iter().any(|e| matches!(
        e,
        CoreEvent::TrunkTargets { trunk, targets } if trunk == "pbx" && targets.len() == 2
    )));
    lab.advance(Duration::from_millis(1));
    lab.take_one(SIP2, "OPTIONS");
    assert!(
        lab.take(SIP3).is_empty(),
        "no probe to a target DNS dropped"
    );
}

#[test]
fn a_reload_keeps_the_targets_of_a_name_it_keeps_and_drops_those_of_a_changed_one() {
    let mut lab = Lab::new(&named_config(0));
    let now = lab.now;
    lab.core.set_trunk_targets(now, "pbx", targets());
    let same = Config::from_str_named(&named_config(0), "test.toml").expect("valid");
    lab.core.reload(now, &same, |_, _| None);
    lab.caller_sends(&invite(true));
    let b = lab.take_one(SIP1, "INVITE");
    end_call(&mut lab, SIP1, &b);

    // Another name: its targets come from the shell's next answer; until
    // then the route's next trunk takes calls.
    let moved = Config::from_str_named(
        &named_config(0).replace("pbx.example.net", "pbx2.example.net"),
        "test.toml",
    )
    .expect("valid");
    lab.core.reload(now, &moved, |_, _| None);
    lab.caller_sends(&another_invite(2));
    lab.take_one(PBX2, "INVITE");
    assert!(lab.take(SIP1).is_empty());
    // An empty answer (the name stopped resolving) changes nothing; a new
    // one is used at once.
    lab.core.set_trunk_targets(now, "pbx", Vec::new());
    lab.core
        .set_trunk_targets(now, "pbx", targets()[1..].to_vec());
    lab.caller_sends(&another_invite(3));
    lab.take_one(SIP2, "INVITE");
}

#[test]
fn a_503_with_retry_after_blocks_its_target_for_that_long() {
    let mut lab = Lab::new(&named_config(0));
    let now = lab.now;
    lab.core.set_trunk_targets(now, "pbx", targets());
    lab.caller_sends(&invite(true));
    let first = lab.take_one(SIP1, "INVITE");
    let busy = respond(
        &first,
        503,
        "",
        Some("b503"),
        &[(HeaderName::RetryAfter, "5 (maintenance);duration=60")],
    );
    lab.trunk_sends(SIP1, &busy);
    let second = lab.take_one(SIP2, "INVITE");
    end_call(&mut lab, SIP2, &second);

    // Within the 5 s sip waits behind sip2; after them (not after the
    // configured 60 s) it leads again.
    lab.advance(Duration::from_secs(3));
    lab.caller_sends(&another_invite(2));
    let next = lab.take_one(SIP2, "INVITE");
    end_call(&mut lab, SIP2, &next);
    lab.advance(Duration::from_secs(3));
    lab.take(SIP1);
    lab.take(SIP2);
    lab.caller_sends(&another_invite(3));
    lab.take_one(SIP1, "INVITE");
}

#[test]
fn retry_after_reads_delta_seconds_and_ignores_the_rest() {
    use crate::b2bua::health::retry_after;
    let secs = |v: &str| retry_after(v.as_bytes()).map(|d| d.as_secs());
    assert_eq!(secs("120"), Some(120));
    assert_eq!(secs(" 18000;duration=3600"), Some(18000));
    assert_eq!(secs("5 (I'm in a meeting)"), Some(5));
    assert_eq!(secs("0"), None, "0: the operator's block time");
    assert_eq!(secs("soon"), None);
    assert_eq!(secs(""), None);
    assert_eq!(
        secs("99999999999999999999"),
        Some(9_999_999_999),
        "no overflow"
    );
}

/// `named_config` whose `pbx` trunk gives up on a silent target after
/// 2 s instead of timer B.
fn impatient_config() -> String {
    named_config(0).replacen(
        "options_interval_secs = 0\n",
        "options_interval_secs = 0\nresponse_timeout_ms = 2000\n",
        1,
    )
}

#[test]
fn a_target_silent_for_the_response_timeout_is_given_up_and_the_next_one_tried() {
    let mut lab = Lab::new(&impatient_config());
    let now = lab.now;
    lab.core.set_trunk_targets(now, "pbx", targets());
    lab.caller_sends(&invite(true));
    let first = lab.take_one(SIP1, "INVITE");
    // Retransmissions (T1 = 500 ms, 1 s) but no answer: after 2 s, sip2.
    lab.advance(Duration::from_millis(1900));
    assert!(lab.take(SIP2).is_empty(), "sip2 waits for the timeout");
    assert_eq!(lab.take(SIP1).len(), 2, "two retransmissions to sip");
    lab.advance(Duration::from_millis(200));
    let second = lab.take_one(SIP2, "INVITE");
    assert_ne!(second.call_id(), first.call_id(), "a new leg");
    // sip's INVITE is over: no more retransmissions to it.
    lab.advance(Duration::from_secs(1));
    assert!(lab.take(SIP1).is_empty(), "sip's INVITE ended");

    // sip2 answers 100 within the timeout: it is alive, and rings as long
    // as it likes.
    lab.trunk_sends(SIP2, &respond(&second, 100, "", None, &[]));
    lab.advance(Duration::from_secs(5));
    assert!(lab.take(SIP3).is_empty(), "a target that said 100 is kept");
    lab.trunk_sends(SIP2, &answer(&second, 200, Some(CALLEE_SDP)));
    let ok = lab.take_one(CALLER, "200");
    lab.caller_sends(&in_dialog("ACK", &ok, false, 10, None));
    lab.take_one(SIP2, "ACK");

    // sip is blocked like a target that timed out: the next call starts
    // on sip2.
    lab.caller_sends(&another_invite(2));
    let next = lab.take_one(SIP2, "INVITE");
    end_call(&mut lab, SIP2, &next);
}

#[test]
fn when_every_target_is_silent_the_caller_gets_408_well_before_timer_b() {
    let mut lab = Lab::new(&impatient_config().replace(
        "failover_on = [\"5xx\", \"timeout\", \"transport-error\"]",
        "failover_on = [\"5xx\"]",
    ));
    let now = lab.now;
    lab.core
        .set_trunk_targets(now, "pbx", targets()[..2].to_vec());
    lab.caller_sends(&invite(true));
    lab.take_one(SIP1, "INVITE");
    lab.advance(Duration::from_millis(2100));
    lab.take_one(SIP2, "INVITE");
    lab.advance(Duration::from_millis(2100));
    let refused = lab.take_one(CALLER, "408");
    assert_eq!(refused.status(), Some(408));
    assert!(
        lab.take(PBX2).is_empty(),
        "the route does not fail over on timeout"
    );
}
