//! Access realms: a phone registers through the SBC to the PBX (the
//! registrar), refreshes are absorbed, calls reach it on its flow, and a
//! phone that goes away is de-registered. The caller of the other tests is
//! the phone here, on the `outside` realm made an access realm.

use super::*;

/// The `outside` realm as an access realm: phones get `phone` seconds,
/// keepalives every `keepalive` seconds.
fn config_with(phone: u32, keepalive: u32) -> String {
    CONFIG.replace(
        "media = { address = \"192.0.2.1\" }",
        &format!(
            "media = {{ address = \"192.0.2.1\" }}\n\
             access = {{ registrar = \"pbx\", phone_expires_secs = {phone}, \
             registrar_expires_secs = 600, keepalive_secs = {keepalive} }}"
        ),
    )
}

fn config() -> String {
    config_with(60, 0)
}

/// The phone's REGISTER, CSeq `cseq`, Contact expiring in `expires`.
fn register(cseq: u32, expires: u32, authorization: bool) -> String {
    let auth = if authorization {
        "Authorization: Digest username=\"100\", realm=\"pbx.example\", nonce=\"n1\", uri=\"sip:pbx.example\", response=\"0123\"\r\n"
    } else {
        ""
    };
    format!(
        "REGISTER sip:pbx.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.9.8.7:5062;branch=z9hG4bKcaller{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:100@pbx.example>;tag=atag1\r\n\
To: <sip:100@pbx.example>\r\n\
Call-ID: caller-call-id-reg@10.9.8.7\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:100@10.9.8.7:5062>;expires={expires}\r\n\
User-Agent: PhoneAgent 3\r\n\
{auth}Content-Length: 0\r\n\r\n"
    )
}

/// The registrar's answer to the REGISTER it got.
fn registrar_answers(lab: &mut Lab, request: &Message, status: u16) {
    let contact =
        String::from_utf8_lossy(request.header(HeaderName::Contact).expect("contact")).into_owned();
    let expires = request.expires().unwrap_or(0);
    let mut extra: Vec<(HeaderName, String)> = vec![(HeaderName::Server, "PbxServer 1".into())];
    match status {
        200 => extra.push((HeaderName::Contact, format!("{contact};expires={expires}"))),
        401 => extra.push((
            HeaderName::WwwAuthenticate,
            "Digest realm=\"pbx.example\", nonce=\"n1\"".into(),
        )),
        _ => {}
    }
    let extra: Vec<(HeaderName, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
    lab.trunk_sends(PBX, &respond(request, status, "", Some("btag9"), &extra));
}

/// Registers the phone (challenge, then credentials); returns the token
/// URI the registrar knows it by.
fn registered(lab: &mut Lab) -> String {
    lab.caller_sends(&register(1, 3600, false));
    let first = lab.take_one(PBX, "REGISTER");
    registrar_answers(lab, &first, 401);
    let challenge = lab.take_one(CALLER, "401");
    assert!(challenge.header(HeaderName::WwwAuthenticate).is_some());
    lab.caller_sends(&register(2, 3600, true));
    let second = lab.take_one(PBX, "REGISTER");
    assert!(second.header(HeaderName::Authorization).is_some());
    assert_eq!(second.call_id(), first.call_id(), "one REGISTER dialog");
    assert!(second.cseq().map(|c| c.seq) > first.cseq().map(|c| c.seq));
    registrar_answers(lab, &second, 200);
    let ok = lab.take_one(CALLER, "200");
    let contact =
        String::from_utf8_lossy(ok.header(HeaderName::Contact).expect("contact")).into_owned();
    assert!(
        contact.starts_with("<sip:100@10.9.8.7:5062>;expires="),
        "{contact}"
    );
    contact_uri(&second)
}

/// The URI of a REGISTER's first Contact (the token the registrar knows).
fn contact_uri(register: &Message) -> String {
    register
        .contacts()
        .find_map(|c| match c {
            Ok(sip::header::Contact::Addr(a)) => {
                Some(String::from_utf8_lossy(a.uri().as_bytes()).into_owned())
            }
            _ => None,
        })
        .expect("our contact")
}

/// The PBX calls `target` (a registered phone's token URI).
fn pbx_invite(target: &str) -> String {
    invite(true)
        .replacen(
            "INVITE sip:+4930555@192.0.2.1",
            &format!("INVITE {target}"),
            1,
        )
        .replace("10.9.8.7", "198.51.100.3")
        .replace("caller-call-id", "pbx-call")
        .replace("atag1", "ptag")
        .replace("z9hG4bKcaller1", "z9hG4bKpbx1")
        .replace("PhoneAgent", "PbxServer")
}

fn outcomes(lab: &Lab) -> Vec<RegisterOutcome> {
    lab.events
        .iter()
        .filter_map(|e| match e {
            CoreEvent::Register { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

#[test]
fn the_registrar_sees_only_the_sbc_and_refreshes_are_absorbed() {
    let mut lab = Lab::new(&config());
    let token = registered(&mut lab);
    // The registrar knows a token at the SBC's inside address, asked for
    // the registrar expiry (the phone asked 3600, gets 60).
    assert!(
        token.starts_with("sip:reg-") && token.ends_with("@198.51.100.1:5060"),
        "{token}"
    );
    assert_eq!(
        lab.core.registrations_per_realm()[0],
        ("outside".to_owned(), 1)
    );
    // Refreshes within the registrar's binding are answered here.
    for cseq in 3..8 {
        lab.advance(Duration::from_secs(50));
        lab.caller_sends(&register(cseq, 3600, true));
        lab.take_one(CALLER, "200");
        let to_pbx: Vec<String> = lab
            .take(PBX)
            .iter()
            .map(describe)
            .filter(|d| d == "REGISTER")
            .collect();
        assert!(to_pbx.is_empty(), "refresh {cseq} reached the registrar");
    }
    assert_eq!(
        outcomes(&lab),
        [
            RegisterOutcome::Relayed,
            RegisterOutcome::Relayed,
            RegisterOutcome::Absorbed,
            RegisterOutcome::Absorbed,
            RegisterOutcome::Absorbed,
            RegisterOutcome::Absorbed,
            RegisterOutcome::Absorbed,
        ]
    );
    // 250 s later, the registrar's binding (600 s) no longer outlives a
    // refresh by the margin after another 300 s: that one is relayed.
    for cseq in 8..14 {
        lab.advance(Duration::from_secs(50));
        lab.caller_sends(&register(cseq, 3600, true));
        if let Some(refresh) = lab
            .take(PBX)
            .into_iter()
            .find(|m| describe(m) == "REGISTER")
        {
            registrar_answers(&mut lab, &refresh, 200);
        }
        lab.take_one(CALLER, "200");
    }
    assert!(
        outcomes(&lab)
            .iter()
            .filter(|o| **o == RegisterOutcome::Relayed)
            .count()
            == 3,
        "{:?}",
        outcomes(&lab)
    );
}

#[test]
fn a_call_to_the_token_reaches_the_phone_where_it_registered_from() {
    let mut lab = Lab::new(&config());
    let token = registered(&mut lab);
    lab.trunk_sends(PBX, pbx_invite(&token).as_bytes());
    let to_phone = lab.take_one(CALLER, "INVITE");
    assert_eq!(
        to_phone.request_uri_bytes(),
        Some(b"sip:100@10.9.8.7:5062".as_slice())
    );
    assert_eq!(
        to_phone.header(HeaderName::To),
        Some(b"<sip:100@pbx.example>".as_slice())
    );
}

#[test]
fn only_a_registered_phone_may_call_out() {
    let mut lab = Lab::new(&config());
    lab.caller_sends(&invite(true));
    lab.take_one(CALLER, "403");
    assert!(lab.take(PBX).is_empty());
    registered(&mut lab);
    lab.caller_sends(&invite(true).replace("z9hG4bKcaller1", "z9hG4bKcaller2"));
    lab.take_one(PBX, "INVITE");
}

#[test]
fn a_phone_that_stops_answering_is_de_registered_and_its_calls_get_480() {
    let mut lab = Lab::new(&config_with(300, 30));
    let token = registered(&mut lab);
    // The keepalive at 30 s goes unanswered (its transaction times out
    // 32 s later): the binding is removed and the registrar told.
    lab.advance(Duration::from_secs(31));
    let ping = lab.take_one(CALLER, "OPTIONS");
    assert_eq!(
        ping.request_uri_bytes(),
        Some(b"sip:100@10.9.8.7:5062".as_slice())
    );
    let mut de_register = None;
    for _ in 0..40 {
        lab.advance(Duration::from_secs(1));
        if let Some(r) = lab
            .take(PBX)
            .into_iter()
            .find(|m| describe(m) == "REGISTER")
        {
            de_register = Some(r);
            break;
        }
    }
    let de_register = de_register.expect("a de-REGISTER");
    assert_eq!(de_register.expires(), Some(0));
    assert!(
        de_register.header(HeaderName::Authorization).is_some(),
        "last credentials"
    );
    registrar_answers(&mut lab, &de_register, 200);
    assert_eq!(lab.core.registrations_per_realm()[0].1, 0);
    assert!(
        lab.events
            .iter()
            .any(|e| matches!(e, CoreEvent::Keepalive { failed: true }))
    );
    lab.trunk_sends(PBX, pbx_invite(&token).as_bytes());
    lab.take_one(PBX, "480");
    // (What reached the phone before were the keepalive's retransmissions.)
    assert!(!lab.take(CALLER).iter().any(|m| describe(m) == "INVITE"));
    assert_eq!(lab.core.census().bindings, (0, 0, 0));
}

#[test]
fn a_phone_that_answers_keepalives_stays_and_one_that_removes_itself_goes() {
    let mut lab = Lab::new(&config_with(300, 30));
    registered(&mut lab);
    lab.advance(Duration::from_secs(31));
    let ping = lab.take_one(CALLER, "OPTIONS");
    lab.caller_sends(std::str::from_utf8(&respond(&ping, 200, "", None, &[])).expect("utf8"));
    assert_eq!(lab.core.registrations_per_realm()[0].1, 1);
    // Expires 0 from the phone: relayed, and gone on the registrar's 200.
    lab.caller_sends(&register(3, 0, true));
    let removal = lab.take_one(PBX, "REGISTER");
    assert_eq!(removal.expires(), Some(0));
    registrar_answers(&mut lab, &removal, 200);
    lab.take_one(CALLER, "200");
    assert_eq!(lab.core.registrations_per_realm()[0].1, 0);
    lab.advance(Duration::from_secs(60));
    assert!(
        lab.take(CALLER).is_empty(),
        "no keepalive to a removed binding"
    );
    assert_eq!(lab.core.census().bindings, (0, 0, 0));
}

#[test]
fn a_realm_without_access_still_answers_register_405() {
    let mut lab = Lab::new(CONFIG);
    lab.caller_sends(&register(1, 3600, false));
    lab.take_one(CALLER, "405");
    assert!(lab.take(PBX).is_empty());
}

#[test]
fn bindings_saved_by_one_core_are_served_by_the_next() {
    let mut lab = Lab::new(&config_with(120, 30));
    let token = registered(&mut lab);
    let generation = lab.core.bindings_generation();
    lab.advance(Duration::from_secs(10));
    let saved = lab.core.export_bindings(lab.now);
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].expires_secs, 110);
    assert_eq!(saved[0].source, addr(CALLER));
    assert!(!saved[0].credentials.is_empty());
    // A restart: a new core takes them back once (not twice).
    let mut next = Lab::new(&config_with(120, 30));
    let records = saved.clone();
    assert_eq!(next.core.import_bindings(next.now, records), 1);
    assert_eq!(next.core.import_bindings(next.now, saved), 0);
    assert_eq!(next.core.census().bindings.0, 1);
    assert_ne!(next.core.bindings_generation(), 0);
    next.trunk_sends(PBX, pbx_invite(&token).as_bytes());
    let to_phone = next.take_one(CALLER, "INVITE");
    assert_eq!(
        to_phone.request_uri_bytes(),
        Some(b"sip:100@10.9.8.7:5062".as_slice())
    );
    // The phone's next refresh is absorbed by the new core too.
    next.caller_sends(&register(9, 3600, true));
    next.take_one(CALLER, "200");
    assert!(!next.take(PBX).iter().any(|m| describe(m) == "REGISTER"));
    assert!(lab.core.bindings_generation() >= generation);
}

#[test]
fn a_phone_on_tcp_gets_the_registrar_answer_over_its_connection() {
    // A non-INVITE server transaction over TCP ends as its final goes out:
    // the answer relayed from the registrar must still leave first.
    let mut lab = Lab::new(&tcp_config());
    let connection = Some(crate::transport::ConnectionId(7));
    let tcp = register(1, 3600, false).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    lab.deliver_on(0, CALLER, tcp.as_bytes(), Transport::Tcp, connection);
    let relayed = lab.take_one(PBX, "REGISTER");
    registrar_answers(&mut lab, &relayed, 200);
    let ok = lab.take_one(CALLER, "200");
    assert!(ok.header(HeaderName::Contact).is_some());
}

/// `config()` with a TCP listener beside the UDP one on the access realm.
fn tcp_config() -> String {
    config().replace(
        "listen = [{ transport = \"udp\", address = \"192.0.2.1:5060\" }]",
        "listen = [{ transport = \"udp\", address = \"192.0.2.1:5060\" }, \
         { transport = \"tcp\", address = \"192.0.2.1:5060\" }]",
    )
}

/// `config()` with `extra` added to the access realm's settings.
fn config_plus(extra: &str) -> String {
    config().replace(
        "keepalive_secs = 0 }",
        &format!("keepalive_secs = 0, {extra} }}"),
    )
}

/// The REGISTER of phone `user` (an AOR and a Contact of its own).
fn register_user(user: u32) -> String {
    register(1, 3600, false)
        .replace("sip:100@", &format!("sip:{user}@"))
        .replace("caller-call-id-reg", &format!("reg-{user}"))
        .replace("z9hG4bKcaller1", &format!("z9hG4bKreg{user}"))
}

#[test]
fn one_source_registers_no_more_bindings_than_its_cap() {
    let mut lab = Lab::new(&config_plus("max_bindings_per_source = 2"));
    // Three phones behind one NAT (one address, three ports).
    for (user, port) in [(100, 5062), (101, 5063)] {
        lab.deliver(
            0,
            &format!("203.0.113.50:{port}"),
            register_user(user).as_bytes(),
        );
        lab.take_one(PBX, "REGISTER");
    }
    lab.deliver(0, "203.0.113.50:5064", register_user(102).as_bytes());
    // (Its own answer, which names its own addresses: not scanned.)
    let third = addr("203.0.113.50:5064");
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut lab.sent)
        .into_iter()
        .partition(|(to, _)| *to == third);
    lab.sent = rest;
    let answers: Vec<String> = mine
        .iter()
        .map(|(_, bytes)| describe(&Message::parse(bytes).expect("parses")))
        .collect();
    assert_eq!(answers, ["403"]);
    assert!(lab.take(PBX).is_empty(), "the registrar never hears of it");
    assert_eq!(outcomes(&lab).last(), Some(&RegisterOutcome::Refused));
    // Another source is not held by this one's cap.
    lab.deliver(0, "203.0.113.51:5062", register_user(103).as_bytes());
    lab.take_one(PBX, "REGISTER");
}

#[test]
fn a_binding_whose_tcp_connection_closes_is_de_registered() {
    let mut lab = Lab::new(&tcp_config());
    let connection = crate::transport::ConnectionId(7);
    let tcp = register(1, 3600, false).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    lab.deliver_on(0, CALLER, tcp.as_bytes(), Transport::Tcp, Some(connection));
    let relayed = lab.take_one(PBX, "REGISTER");
    registrar_answers(&mut lab, &relayed, 200);
    lab.take_one(CALLER, "200");
    let token = contact_uri(&relayed);
    // Another connection closing changes nothing.
    let now = lab.now;
    lab.core
        .handle_connection_closed(now, crate::transport::ConnectionId(8));
    lab.settle();
    assert!(lab.take(PBX).is_empty());
    // The phone's connection closes: a phone behind NAT can't be reached
    // by a new one, so the registrar is told at once.
    lab.core.handle_connection_closed(now, connection);
    lab.settle();
    let gone = lab.take_one(PBX, "REGISTER");
    assert_eq!(gone.expires(), Some(0));
    registrar_answers(&mut lab, &gone, 200);
    lab.trunk_sends(PBX, pbx_invite(&token).as_bytes());
    lab.take_one(PBX, "480");
    assert!(lab.take(CALLER).is_empty());
}

#[test]
fn a_user_with_its_calls_up_gets_486_both_ways() {
    let mut lab = Lab::new(&config_plus("max_calls_per_user = 1"));
    let token = registered(&mut lab);
    lab.trunk_sends(PBX, pbx_invite(&token).as_bytes());
    let to_phone = lab.take_one(CALLER, "INVITE");
    // A second call to the user, and one from its phone, while it is up.
    let second = pbx_invite(&token)
        .replace("pbx-call", "pbx-call-2")
        .replace("z9hG4bKpbx1", "z9hG4bKpbx2");
    lab.trunk_sends(PBX, second.as_bytes());
    let busy: Vec<String> = lab.take(PBX).iter().map(describe).collect();
    assert!(busy.contains(&"486".to_owned()), "{busy:?}");
    // (A phone calls as its address-of-record.)
    let from_phone = |branch: &str| {
        invite(true)
            .replace("z9hG4bKcaller1", branch)
            .replace("<sip:alice@10.9.8.7>", "<sip:100@pbx.example>")
    };
    lab.caller_sends(&from_phone("z9hG4bKcaller9"));
    lab.take_one(CALLER, "486");
    // The first call ends (the phone refuses it): the user may call again.
    lab.caller_sends(
        std::str::from_utf8(&respond(&to_phone, 486, "", Some("p1"), &[])).expect("utf8"),
    );
    lab.settle();
    let _ = lab.take(PBX);
    let _ = lab.take(CALLER);
    assert_eq!(lab.core.active_calls(), 0);
    lab.caller_sends(&from_phone("z9hG4bKcaller10"));
    lab.take_one(PBX, "INVITE");
}
