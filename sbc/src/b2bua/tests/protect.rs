//! Edge protection in the core: per-source books, answers that keep no
//! transaction, the dialog-peer rule, bans asked for, overload levels.

use super::*;

/// A third party on the outside realm that learned a call's identifiers.
const STRANGER: &str = "203.0.113.99:5062";

/// First lines of what went to `to` since the last look (no topology scan:
/// strangers send the caller's own identifiers).
fn lines_to(lab: &mut Lab, to: &str) -> Vec<String> {
    let to = addr(to);
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut lab.sent)
        .into_iter()
        .partition(|(a, _)| *a == to);
    lab.sent = rest;
    mine.iter()
        .map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

fn options(n: u32, agent: &str) -> String {
    format!(
        "OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.8:5060;branch=z9hG4bKo{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@203.0.113.8>;tag=o{n}\r\nTo: <sip:192.0.2.1>\r\n\
Call-ID: opt-{n}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {agent}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn register(n: u32) -> String {
    options(n, "Phone")
        .replace("OPTIONS sip", "REGISTER sip")
        .replace("1 OPTIONS", "1 REGISTER")
}

fn rejected(lab: &Lab, reason: RejectReason) -> usize {
    lab.events
        .iter()
        .filter(|e| matches!(e, CoreEvent::Rejected { reason: r, .. } if *r == reason))
        .count()
}

fn bans(lab: &Lab) -> Vec<(IpAddr, BanReason)> {
    lab.events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::Banned { source, reason, .. } => Some((*source, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn answers_of_the_sbc_keep_no_transaction_and_are_given_again() {
    let mut lab = Lab::new(CONFIG);
    for n in 0..50 {
        lab.deliver(0, "203.0.113.8:5060", options(n, "Phone").as_bytes());
    }
    // A retransmission is a new request, answered again.
    lab.deliver(0, "203.0.113.8:5060", options(0, "Phone").as_bytes());
    lab.deliver(0, "203.0.113.8:5060", register(1000).as_bytes());
    let answers = lines_to(&mut lab, "203.0.113.8:5060");
    assert_eq!(answers.len(), 52, "{answers:?}");
    assert!(answers[..51].iter().all(|l| l == "SIP/2.0 200 OK"));
    assert_eq!(answers[51], "SIP/2.0 405 Method Not Allowed");
    assert_eq!(lab.core.transactions(), 0, "nothing held");
    assert_eq!(lab.core.untrusted_load().transactions, 0);
    // And nothing is retransmitted later.
    lab.advance(Duration::from_secs(40));
    assert!(lines_to(&mut lab, "203.0.113.8:5060").is_empty());
}

#[test]
fn one_untrusted_source_holds_at_most_its_setups_and_others_still_call() {
    let mut lab = Lab::new(&CONFIG.replace("max_calls = 10", "max_calls = 100"));
    for n in 1..=4 {
        lab.caller_sends(&another_invite(n));
        lab.take_one(PBX, "INVITE");
    }
    lab.caller_sends(&another_invite(5));
    let refused = lines_to(&mut lab, CALLER);
    assert!(
        refused.iter().any(|l| l.starts_with("SIP/2.0 503")),
        "{refused:?}"
    );
    assert!(
        lab.take(PBX).is_empty(),
        "the fifth setup never reaches the PBX"
    );
    assert_eq!(rejected(&lab, RejectReason::SourceLimit), 1);
    // Another source is not affected.
    lab.deliver(0, "203.0.113.20:5062", another_invite(6).as_bytes());
    lab.take_one(PBX, "INVITE");
    let load = lab.core.untrusted_load();
    assert_eq!((load.calls, load.sources), (5, 2));
}

#[test]
fn a_call_ends_and_its_source_holds_nothing() {
    let mut lab = Lab::new(CONFIG);
    let (b_invite, _ok) = establish(&mut lab);
    assert_eq!(lab.core.untrusted_load().calls, 1);
    callee_hangs_up(&mut lab, &b_invite);
    lab.advance(Duration::from_secs(40));
    assert_eq!(lab.core.untrusted_load(), UntrustedLoad::default());
    assert_eq!(lab.core.transactions(), 0);
}

#[test]
fn refusals_ask_for_one_ban_at_the_limit() {
    let mut lab = Lab::new(CONFIG);
    for n in 0..19 {
        lab.deliver(0, "203.0.113.8:5060", register(n).as_bytes());
    }
    assert!(bans(&lab).is_empty());
    lab.deliver(0, "203.0.113.8:5060", register(19).as_bytes());
    assert_eq!(
        bans(&lab),
        vec![("203.0.113.8".parse().unwrap(), BanReason::Refusals)]
    );
    // Trusted sources are never banned: the PBX's refusals don't count.
    for n in 0..40 {
        lab.trunk_sends(PBX, register(100 + n).as_bytes());
    }
    assert_eq!(bans(&lab).len(), 1);
}

#[test]
fn scanners_get_no_answer_and_are_banned() {
    let mut lab = Lab::new(CONFIG);
    lab.deliver(
        0,
        "203.0.113.8:5060",
        options(1, "friendly-scanner").as_bytes(),
    );
    lab.deliver(
        0,
        "203.0.113.8:5060",
        options(2, "SIPVicious 0.3").as_bytes(),
    );
    assert!(lines_to(&mut lab, "203.0.113.8:5060").is_empty());
    assert_eq!(rejected(&lab, RejectReason::Scanner), 2);
    assert_eq!(bans(&lab)[0].1, BanReason::Scanner);
    assert_eq!(lab.core.transactions(), 0);
}

#[test]
fn a_stranger_can_neither_end_nor_move_a_call() {
    let mut lab = Lab::new(CONFIG);
    let (b_invite, ok) = establish(&mut lab);
    // BYE and re-INVITE from a third address on the caller's realm.
    lab.deliver(
        0,
        STRANGER,
        in_dialog("BYE", &ok, false, 11, None).as_bytes(),
    );
    let reinvite = in_dialog("INVITE", &ok, false, 12, Some(CALLEE_SDP));
    lab.deliver(0, STRANGER, reinvite.as_bytes());
    assert_eq!(
        lines_to(&mut lab, STRANGER),
        vec!["SIP/2.0 403 Forbidden", "SIP/2.0 403 Forbidden"]
    );
    // The caller's own BYE, but through the other realm's listener.
    lab.deliver(1, CALLER, in_dialog("BYE", &ok, false, 13, None).as_bytes());
    assert_eq!(lines_to(&mut lab, CALLER), vec!["SIP/2.0 403 Forbidden"]);
    // An ACK from the stranger: nothing.
    lab.deliver(
        0,
        STRANGER,
        in_dialog("ACK", &ok, false, 10, None).as_bytes(),
    );
    assert!(lab.take(PBX).is_empty(), "nothing reached the PBX");
    assert!(
        lab.media
            .iter()
            .all(|c| !matches!(c, MediaCommand::Release { .. }))
    );
    assert_eq!(rejected(&lab, RejectReason::ForeignInDialog), 4);
    assert!(lab.ended().is_none());
    // The PBX's BYE from its own address still works, and so would the
    // caller's: the call is intact.
    callee_hangs_up(&mut lab, &b_invite);
    assert!(lab.ended().is_some());
}

#[test]
fn only_the_inviter_may_cancel() {
    let mut lab = Lab::new(CONFIG);
    let invite_text = invite(true);
    lab.caller_sends(&invite_text);
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 180, None));
    lab.take_one(CALLER, "180");
    let head = &invite_text[..invite_text.find("\r\n\r\n").expect("head")];
    let mut cancel: String = head
        .lines()
        .filter(|l| !l.starts_with("Content-"))
        .map(|l| {
            l.replacen("INVITE sip", "CANCEL sip", 1)
                .replace("CSeq: 10 INVITE", "CSeq: 10 CANCEL")
                + "\r\n"
        })
        .collect();
    cancel.push_str("Content-Length: 0\r\n\r\n");
    lab.deliver(0, STRANGER, cancel.as_bytes());
    assert_eq!(lines_to(&mut lab, STRANGER), vec!["SIP/2.0 403 Forbidden"]);
    assert!(lab.take(PBX).is_empty(), "no CANCEL towards the PBX");
    assert!(
        lines_to(&mut lab, CALLER).is_empty(),
        "the caller still rings"
    );
    lab.caller_sends(&cancel);
    let got = lines_to(&mut lab, CALLER);
    assert!(got.contains(&"SIP/2.0 200 OK".to_owned()), "{got:?}");
    assert!(got.iter().any(|l| l.starts_with("SIP/2.0 487")), "{got:?}");
    lab.take_one(PBX, "CANCEL");
}

#[test]
fn a_caller_that_never_acks_frees_its_slot_after_64_t1() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    lab.take_one(CALLER, "200");
    lab.advance(Duration::from_secs(37));
    let bye = lab.take_one(PBX, "BYE");
    lab.trunk_sends(PBX, &answer(&bye, 200, None));
    // The caller got its BYE, never answers it, and the call is over anyway.
    assert!(
        lines_to(&mut lab, CALLER)
            .iter()
            .any(|l| l.starts_with("BYE"))
    );
    let ended = lab.ended().expect("ended without the caller's answer");
    assert_eq!(ended.ended_by, EndedBy::Sbc(SbcReason::NoAck));
    assert_eq!(lab.core.active_calls(), 0);
    assert_eq!(lab.core.untrusted_load().calls, 0);
}

#[test]
fn a_refusal_goes_to_an_untrusted_caller_once_and_a_routed_failure_a_bounded_number_of_times() {
    // A call the SBC takes on gets its 100 Trying at once, trusted or not;
    // the caller then waits in Proceeding without retransmitting, so the
    // trunk's failure must be retransmitted: until acknowledged (timer G,
    // then H) for a trusted caller, five times in all for an untrusted
    // one, whose source may be spoofed (no more than that reaches a victim).
    for (config, trusted) in [
        (CONFIG.to_owned(), false),
        (
            CONFIG.replace(
                "media = { address = \"192.0.2.1\" }",
                "media = { address = \"192.0.2.1\" }\nnetworks = [\"203.0.113.0/24\"]",
            ),
            true,
        ),
    ] {
        let mut lab = Lab::new(&config);
        lab.caller_sends(&invite(true));
        let b_invite = lab.take_one(PBX, "INVITE");
        assert_eq!(lines_to(&mut lab, CALLER), vec!["SIP/2.0 100 Trying"]);
        lab.trunk_sends(PBX, &answer(&b_invite, 486, None));
        let mut busy = 0;
        for _ in 0..40 {
            lab.advance(Duration::from_millis(1_000));
            busy += lines_to(&mut lab, CALLER)
                .iter()
                .filter(|l| l.starts_with("SIP/2.0 486"))
                .count();
        }
        if trusted {
            // Timer G: 0.5, 1, 2, 4 s, then every 4 s until H at 32 s.
            assert!(busy >= 9, "trusted: {busy} 486s, expected timer G's");
        } else {
            assert_eq!(busy, 5, "untrusted: the final and four retransmissions");
        }
        // Timer H ended the transaction either way.
        assert_eq!(lab.core.transactions(), 0, "trusted: {trusted}");
    }
    // A refusal of the SBC's own (here: every trunk at its rate limit) has
    // no 100 before it, and goes to an untrusted caller once.
    let mut lab = both_trunks_busy_this_second();
    lab.deliver(0, "203.0.113.40:5060", another_invite(3).as_bytes());
    lab.advance(Duration::from_millis(5_000));
    assert_eq!(
        lines_to(&mut lab, "203.0.113.40:5060"),
        vec!["SIP/2.0 503 Service Unavailable"]
    );
}

#[test]
fn normalized_failures_hide_which_users_exist() {
    let config = CONFIG.replace(
        "[media]",
        "[protection]\nnormalize_failures = true\n[media]",
    );
    let mut lab = Lab::new(&config);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 486, None));
    assert_eq!(
        lines_to(&mut lab, CALLER),
        vec!["SIP/2.0 100 Trying", "SIP/2.0 404 Not Found"]
    );
}

#[test]
fn untrusted_sources_share_half_the_calls_and_trunks_keep_the_rest() {
    let config = CONFIG.replace("max_calls = 10", "max_calls = 4").replace(
        "media = { address = \"192.0.2.1\" }",
        "media = { address = \"192.0.2.1\" }\nnetworks = [\"192.0.2.0/24\"]",
    );
    let mut lab = Lab::new(&config);
    for (n, source) in [(1, "203.0.113.21:5060"), (2, "203.0.113.22:5060")] {
        lab.deliver(0, source, another_invite(n).as_bytes());
        lab.take_one(PBX, "INVITE");
    }
    lab.deliver(0, "203.0.113.23:5060", another_invite(3).as_bytes());
    assert!(
        lines_to(&mut lab, "203.0.113.23:5060")
            .iter()
            .any(|l| l.starts_with("SIP/2.0 503"))
    );
    assert_eq!(rejected(&lab, RejectReason::Overload), 1);
    // A source in the realm's networks still gets through.
    lab.deliver(0, "192.0.2.77:5060", another_invite(4).as_bytes());
    lab.take_one(PBX, "INVITE");
}

#[test]
fn overload_sheds_untrusted_invites_first_and_keeps_dialogs() {
    let config = CONFIG.replace(
        "media = { address = \"192.0.2.1\" }",
        "media = { address = \"192.0.2.1\" }\nnetworks = [\"192.0.2.0/24\"]",
    );
    let mut lab = Lab::new(&config);
    let (_b_invite, ok) = establish(&mut lab);
    lab.core.set_overload(1);
    lab.deliver(0, "203.0.113.30:5060", another_invite(1).as_bytes());
    assert!(
        lines_to(&mut lab, "203.0.113.30:5060")
            .iter()
            .any(|l| l.starts_with("SIP/2.0 503"))
    );
    lab.deliver(0, "192.0.2.77:5060", another_invite(2).as_bytes());
    lab.take_one(PBX, "INVITE");
    lab.core.set_overload(2);
    lab.deliver(0, "192.0.2.78:5060", another_invite(3).as_bytes());
    assert!(
        lines_to(&mut lab, "192.0.2.78:5060")
            .iter()
            .any(|l| l.starts_with("SIP/2.0 503"))
    );
    // The call up still hangs up.
    caller_hangs_up(&mut lab, &ok, 11, PBX);
    assert_eq!(rejected(&lab, RejectReason::Overload), 2);
}

/// Both trunks limited to one call a second, and each has had its call
/// (from two untrusted sources): the next INVITE has nowhere to go.
fn both_trunks_busy_this_second() -> Lab {
    let config = CONFIG
        .replace(
            "address = \"198.51.100.3:5060\"",
            "address = \"198.51.100.3:5060\"\nmax_cps = 1",
        )
        .replace(
            "address = \"198.51.100.5:5060\"",
            "address = \"198.51.100.5:5060\"\nmax_cps = 1",
        );
    let mut lab = Lab::new(&config);
    lab.caller_sends(&another_invite(1));
    lab.take_one(PBX, "INVITE");
    lab.deliver(0, "203.0.113.41:5060", another_invite(2).as_bytes());
    lab.take_one(PBX2, "INVITE");
    lab
}

#[test]
fn a_call_held_back_by_trunk_limits_is_refused_once_for_the_first_limit() {
    let mut lab = both_trunks_busy_this_second();
    // Both trunks have had their call this second.
    lab.deliver(0, "203.0.113.40:5060", another_invite(3).as_bytes());
    assert!(
        lines_to(&mut lab, "203.0.113.40:5060")
            .iter()
            .any(|l| l.starts_with("SIP/2.0 503"))
    );
    assert_eq!(rejected(&lab, RejectReason::RateLimit), 1);
    assert_eq!(rejected(&lab, RejectReason::NoRoute), 0);
    assert_eq!(rejected(&lab, RejectReason::Admission), 0);
}

#[test]
fn configured_timers_drive_the_2xx_retransmissions_and_the_give_up() {
    let config = CONFIG.replace("[media]", "[sip]\nt1_ms = 100\nt2_ms = 1000\n[media]");
    let mut lab = Lab::new(&config);
    lab.caller_sends(&invite(true));
    let b_invite = lab.take_one(PBX, "INVITE");
    lab.trunk_sends(PBX, &answer(&b_invite, 200, Some(CALLEE_SDP)));
    lab.take_one(CALLER, "200");
    // 64*T1 = 6.4 s: the caller is given up on well before the default 32 s.
    lab.advance(Duration::from_secs(8));
    let to_caller = lines_to(&mut lab, CALLER);
    let retransmits = to_caller
        .iter()
        .filter(|l| l.starts_with("SIP/2.0 200"))
        .count();
    assert!((6..=12).contains(&retransmits), "{to_caller:?}");
    assert!(
        to_caller.iter().any(|l| l.starts_with("BYE")),
        "{to_caller:?}"
    );
}
