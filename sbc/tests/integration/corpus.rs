//! The shipped corpus as fixtures: every RFC 4475 and RFC 5118 torture
//! message and every RFC 3261/3665 call-flow message gets the verdict we chose
//! for it, and every message that parses prints back byte-identical and
//! re-parses to the same message.
//!
//! Where RFC 4475 lets a server read a message liberally or strictly, the
//! choice is written next to the expectation; the module docs of
//! `sbc::sip::message` give the rule behind them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sbc::sip::{self, Message, ServerPolicy, Verdict};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

/// The verdict of a datagram, as the server sees it: parse, then check.
fn verdict(bytes: &[u8]) -> Verdict {
    match Message::parse(bytes) {
        Ok(msg) => sip::check(&msg, &ServerPolicy::default()),
        Err(e) => e.response(),
    }
}

/// A short form of a verdict to compare against: `accept`, `drop`, or the
/// status code of the answer.
fn short(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop(_) => "drop".into(),
        Verdict::Reject(r) => r.status.to_string(),
    }
}

fn read_index(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Parse -> print must give the same bytes; print -> parse the same message.
fn assert_round_trip(name: &str, bytes: &[u8]) {
    let msg = Message::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let printed = msg.to_bytes();
    let leading = bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    assert!(
        bytes[leading..].starts_with(&printed),
        "{name}: printed bytes are not the message as received"
    );
    let again = Message::parse(&printed).unwrap_or_else(|e| panic!("{name}: reparse: {e}"));
    assert_eq!(again, msg, "{name}: reparse differs");
}

#[test]
fn rfc4475_torture_messages_get_the_chosen_verdicts() {
    // name -> (our verdict, why when the RFC allows a choice)
    let expected: BTreeMap<&str, &str> = [
        // §3.1.1 valid: all parse.
        ("wsinv", "accept"),
        ("intmeth", "501"), // parses; an extension method is not relayed by default
        ("esc01", "accept"),
        ("escnull", "accept"),
        ("esc02", "501"), // RE%47IST%45R is an extension method, not REGISTER
        ("lwsdisp", "accept"),
        ("longreq", "accept"),
        ("dblreq", "accept"), // the trailing INVITE-like octets are discarded
        ("semiuri", "accept"),
        ("transports", "accept"),
        ("mpart01", "accept"),
        ("unreason", "accept"),
        ("noreason", "accept"),
        // §3.1.2 invalid.
        ("badinv01", "400"),
        ("clerr", "400"),
        ("ncl", "400"),
        ("scalar02", "400"),
        ("scalarlg", "drop"),  // a response: never answered
        ("quotbal", "400"),    // strict: no guessing where a quote ends
        ("ltgtruri", "400"),   // strict start line
        ("lwsruri", "400"),    // strict start line
        ("lwsstart", "400"),   // strict start line
        ("trws", "400"),       // strict start line
        ("escruri", "400"),    // strict: headers never belong in a Request-URI
        ("baddate", "accept"), // liberal: Date is passed through, never interpreted
        ("regbadct", "400"),   // strict: Contact is rewritten, it must be well formed
        ("badaspec", "400"),   // strict: To is interpreted
        ("baddn", "400"),      // strict: From/To are interpreted
        ("badvers", "505"),
        ("mismatch01", "400"),
        ("mismatch02", "400"), // 400 (the RFC prefers 501, accepts 400): CSeq is checked at parse
        ("bigcode", "drop"),   // a response: never answered
        // §3.2, §3.3 transaction and application layer.
        ("badbranch", "accept"), // falls back to RFC 2543 matching
        ("insuf", "400"),
        ("unkscm", "416"),
        ("novelsc", "416"),   // soap.beep is never served
        ("unksm2", "accept"), // not a registrar: To/From/Contact schemes are the UAS's business
        ("bext01", "420"),
        // The SBC anchors the offer itself: a body it can't read as SDP
        // would cross unanchored (RFC 4475 §3.3.8 expects 415 with Accept).
        ("invut", "415"),
        ("regaut01", "accept"), // unknown auth scheme passes through
        ("multi01", "400"),
        ("mcl01", "400"),
        ("bcast", "accept"), // a response; never forwarded to broadcast (routing's job)
        ("zeromf", "483"),
        ("cparam01", "accept"),
        ("cparam02", "accept"),
        ("regescrt", "accept"),
        ("sdp01", "accept"), // Accept negotiation is the far UAS's business (406 is theirs)
        // No Contact: the caller's dialog has no remote target (§8.1.1.8).
        // The call core refused it with 400 before; now the verdict does.
        ("inv2543", "400"),
        ("test", "drop"), // no Via to answer to
    ]
    .into_iter()
    .collect();

    let dir = corpus().join("rfc4475");
    let index = read_index(&dir.join("index.tsv"));
    assert_eq!(index.len(), 50, "index rows");
    let mut failures = Vec::new();
    for row in &index {
        let name = row[0].as_str();
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("{name}: in index.tsv but no expectation"));
        let bytes = std::fs::read(dir.join(format!("{name}.dat"))).expect("fixture");
        let got = verdict(&bytes);
        if short(&got) != *want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
        if Message::parse(&bytes).is_ok() {
            assert_round_trip(name, &bytes);
        }
    }
    assert!(
        failures.is_empty(),
        "verdicts differ:\n{}",
        failures.join("\n")
    );
    assert_eq!(expected.len(), index.len(), "every expectation has a row");
}

#[test]
fn rfc4475_messages_carry_the_fields_the_rfc_describes() {
    let read =
        |name: &str| std::fs::read(corpus().join(format!("rfc4475/{name}.dat"))).expect("fixture");

    // dblreq: a REGISTER with an empty body; the INVITE-looking rest is gone.
    let dblreq = Message::parse(&read("dblreq")).expect("parses");
    assert_eq!(dblreq.method(), Some(sip::Method::Register));
    assert!(dblreq.body().is_empty());
    assert!(!dblreq.to_bytes().windows(6).any(|w| w == b"INVITE"));

    // semiuri: the user part is `user;par=u%40example.net`.
    let semiuri = Message::parse(&read("semiuri")).expect("parses");
    let uri = semiuri.request_uri().expect("uri");
    assert_eq!(uri.user(), Some(b"user;par=u%40example.net".as_slice()));

    // esc02: `C%6Fntact` is an extension header, so there are 2 Contacts, not 3.
    let esc02 = Message::parse(&read("esc02")).expect("parses");
    assert_eq!(esc02.contacts().count(), 2);

    // mpart01: the binary body (with NULs and bare LFs) is framed by Content-Length.
    let mpart = Message::parse(&read("mpart01")).expect("parses");
    assert_eq!(Some(mpart.body().len() as u32), mpart.content_length());
    assert!(mpart.body().contains(&0));

    // inv2543: no Content-Length over UDP: the body is the rest of the datagram.
    let inv2543 = Message::parse(&read("inv2543")).expect("parses");
    assert_eq!(inv2543.content_length(), None);
    assert!(inv2543.body().starts_with(b"v=0"));

    // transports: five Vias with five transports, UNKNOWN included.
    let transports = Message::parse(&read("transports")).expect("parses");
    let kinds: Vec<String> = transports
        .vias()
        .map(|v| v.expect("via").transport().to_owned())
        .collect();
    assert_eq!(kinds, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

    // wsinv: leading zeros, folding, compact forms.
    let wsinv = Message::parse(&read("wsinv")).expect("parses");
    assert_eq!(wsinv.cseq().map(|c| c.seq), Some(9));
    assert_eq!(wsinv.max_forwards(), Some(68));
    assert_eq!(wsinv.vias().count(), 3);

    // bext01: the 420 lists both unknown option tags.
    match verdict(&read("bext01")) {
        Verdict::Reject(r) => {
            let (name, tags) = &r.headers[0];
            assert_eq!(*name, sip::HeaderName::Unsupported);
            assert_eq!(
                tags,
                "nothingSupportsThis, nothingSupportsThisEither, noProxiesSupportThis, norDoAnyProxiesSupportThis"
            );
        }
        other => panic!("bext01: {other}"),
    }

    // noreason: an empty reason phrase.
    let noreason = Message::parse(&read("noreason")).expect("parses");
    assert_eq!(noreason.status(), Some(100));
    assert_eq!(noreason.reason(), Some(b"".as_slice()));
}

#[test]
fn rfc5118_ipv6_messages() {
    let dir = corpus().join("rfc5118");
    let index = read_index(&dir.join("index.tsv"));
    assert_eq!(index.len(), 12);
    for row in &index {
        let name = row[0].as_str();
        // Wire form: only ipv6-bad (unbracketed IPv6 in the Request-URI) is invalid.
        let wire = std::fs::read(dir.join(format!("wire/{name}.dat"))).expect("fixture");
        let want = if name == "ipv6-bad" { "400" } else { "accept" };
        assert_eq!(short(&verdict(&wire)), want, "wire/{name}");
        if want == "accept" {
            assert_round_trip(name, &wire);
        }

        // Archive form (bare LF, as published): LF line ends are tolerated, so
        // what fails is what the README lists: Content-Length larger than the
        // LF body, and two files whose header section is never closed.
        let archive = std::fs::read(dir.join(format!("archive/{name}.dat"))).expect("fixture");
        let want = match name {
            "ipv6-bad" | "ipv6-in-sdp" | "mult-ip-in-sdp" => "400",
            "ipv6-bug-abnf-3-colons" | "ipv6-correct-abnf-2-colons" => "400",
            _ => "accept",
        };
        assert_eq!(short(&verdict(&archive)), want, "archive/{name}");
        if want == "accept" {
            assert_round_trip(name, &archive);
        }
    }

    let read = |name: &str| std::fs::read(dir.join(format!("wire/{name}.dat"))).expect("fixture");
    let port = |name: &str| {
        let msg = Message::parse(&read(name)).expect("parses");
        let uri = msg.request_uri().expect("uri");
        (uri.host().expect("host").to_string(), uri.port())
    };
    assert_eq!(port("port-ambiguous"), ("[2001:db8::10:5070]".into(), None));
    assert_eq!(
        port("port-unambiguous"),
        ("[2001:db8::10]".into(), Some(5070))
    );

    for name in [
        "via-received-param-with-delim",
        "via-received-param-no-delim",
    ] {
        let msg = Message::parse(&read(name)).expect("parses");
        let via = msg.top_via().expect("via");
        assert!(
            via.received()
                .is_some_and(|r| r.contains("2001:db8::9:255")),
            "{name}"
        );
        assert!(via.branch().is_some(), "{name}: branch after received");
    }
}

#[test]
fn rfc3261_and_rfc3665_call_flows_parse_and_round_trip() {
    // Messages the corpus README documents as defective, with the verdict owed.
    let exceptions: BTreeMap<&str, &str> = [
        // RFC 3261 §24.2 prints "(SDP not shown)": Content-Length promises a body that is not there.
        ("24.2-F01-INVITE_Alice_to_atlanta_com_proxy.sip", "400"),
        (
            "24.2-F03-INVITE_atlanta_com_proxy_to_biloxi_com_proxy.sip",
            "400",
        ),
        ("24.2-F05-INVITE_biloxi_com_proxy_to_Bob.sip", "400"),
        ("24.2-F09-200_OK_Bob_to_biloxi_com_proxy.sip", "drop"),
        (
            "24.2-F10-200_OK_biloxi_com_proxy_to_atlanta_com_proxy.sip",
            "drop",
        ),
        ("24.2-F11-200_OK_atlanta_com_proxy_to_Alice.sip", "drop"),
        // The extraction kept two lines of RFC prose inside the header section.
        ("24.1-F01-REGISTER_Bob_to_Registrar.sip", "400"),
        // A Record-Route continuation line without leading whitespace (README).
        ("3.10-F04-INVITE_Proxy_2_to_Bob.sip", "400"),
    ]
    .into_iter()
    .collect();
    let mut seen = 0;
    let mut failures = Vec::new();
    for flow in ["rfc3261", "rfc3665"] {
        let dir = corpus().join("flows").join(flow);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("flows")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sip"))
            .collect();
        files.sort();
        for path in files {
            seen += 1;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned();
            let bytes = std::fs::read(&path).expect("fixture");
            let got = verdict(&bytes);
            let want = exceptions.get(name.as_str()).copied().unwrap_or("accept");
            if short(&got) != want {
                failures.push(format!("{flow}/{name}: want {want}, got {got}"));
            } else if want == "accept" {
                assert_round_trip(&name, &bytes);
            }
        }
    }
    assert_eq!(seen, 16 + 181, "all flow messages read");
    assert!(
        failures.is_empty(),
        "verdicts differ:\n{}",
        failures.join("\n")
    );
}

/// Every crash input the fuzzers ever found stays a regression fixture:
/// parsing it must not panic, and if it parses it must round-trip.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regress");
    let Ok(targets) = std::fs::read_dir(&dir) else {
        return; // no regressions recorded yet
    };
    for target in targets {
        let target = target.expect("entry").path();
        if !target.is_dir() {
            continue; // the folder's README
        }
        for file in std::fs::read_dir(&target).expect("target dir") {
            let path = file.expect("entry").path();
            let bytes = std::fs::read(&path).expect("fixture");
            let name = path.display().to_string();
            let _ = sbc::sdp::Sdp::parse(&bytes);
            let mut framer = sip::StreamFramer::new(sip::Limits::default());
            framer.push(&bytes);
            while let Ok(Some(_)) = framer.next_frame() {}
            if Message::parse(&bytes).is_ok() {
                let printed = Message::parse(&bytes).expect("parses").to_bytes();
                let again =
                    Message::parse(&printed).unwrap_or_else(|e| panic!("{name}: reparse: {e}"));
                assert_eq!(again.to_bytes(), printed, "{name}");
            }
        }
    }
}
