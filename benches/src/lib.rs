//! Benchmarks for the SBC. Micro-benchmarks (criterion) live in `benches/`,
//! beside load harnesses that drive a running daemon (SIPp, packet
//! blasters).
//!
//! Numbers are reported as time per operation by criterion; where a target
//! is stated as a ratio it is computed against a baseline measured in the
//! same run, never asserted as a timed test.
//!
//! [`rtpengine`] starts and drives rtpengine, the media proxy the relay
//! bench compares against; [`kamailio`] writes the configurations of
//! Kamailio, the SIP proxy the signaling comparison bench runs against, and
//! starts it with the Redis its topology hiding stores to; [`siplab`] is
//! the SIPp lab both signaling benches drive; [`ngtap`] times ng requests
//! to their replies from the wire, for the comparison of our ng server
//! with rtpengine under the same Kamailio.

pub mod kamailio;
pub mod ngtap;
pub mod rtpengine;
pub mod siplab;

/// The captured messages the benchmarks use, from the test fixtures.
pub mod fixtures {
    /// A typical INVITE with SDP (RFC 3665 §3.1 F1).
    pub const INVITE_WITH_SDP: &[u8] = include_bytes!(
        "../../sbc/tests/fixtures/corpus/flows/rfc3665/3.1-F01-INVITE_Alice_to_Bob.sip"
    );
    /// A 200 OK with SDP answering it (RFC 3665 §3.1 F3).
    pub const OK_200: &[u8] = include_bytes!(
        "../../sbc/tests/fixtures/corpus/flows/rfc3665/3.1-F03-200_OK_Bob_to_Alice.sip"
    );
    /// The long torture message of RFC 4475 §3.1.1.7.
    pub const LONGREQ: &[u8] =
        include_bytes!("../../sbc/tests/fixtures/corpus/rfc4475/longreq.dat");
    /// The short tortuous INVITE of RFC 4475 §3.1.1.1.
    pub const WSINV: &[u8] = include_bytes!("../../sbc/tests/fixtures/corpus/rfc4475/wsinv.dat");
}

/// A carrier-style INVITE as an SBC sees it: a Via stack of two, Record-Route,
/// identity and session-timer headers, and an SDP offer with two media lines
/// and ICE candidates. About 1.6 KB, like real traffic.
pub const CARRIER_INVITE: &[u8] = b"INVITE sip:+4930555123@198.51.100.20:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1---6b1e2f3c4d5e6f70;rport\r\n\
Via: SIP/2.0/UDP 10.20.30.40:5060;received=198.51.100.99;branch=z9hG4bK-d8754z-1a2b3c4d5e6f;rport=5062\r\n\
Record-Route: <sip:198.51.100.7;lr;ftag=as6e7c8d9a>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice Example\" <sip:+4930555000@carrier.example.net;user=phone>;tag=as6e7c8d9a\r\n\
To: <sip:+4930555123@pbx.example.com;user=phone>\r\n\
Call-ID: 7f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f@198.51.100.7\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:+4930555000@198.51.100.7:5060;transport=udp>\r\n\
P-Asserted-Identity: <sip:+4930555000@carrier.example.net;user=phone>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, PRACK, UPDATE\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: CarrierSwitch 9.4.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 775\r\n\
\r\n\
v=0\r\n\
o=switch 1733942291 1733942292 IN IP4 198.51.100.7\r\n\
s=SIP Call\r\n\
c=IN IP4 198.51.100.8\r\n\
t=0 0\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
m=audio 16384 RTP/AVP 8 0 18 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=rtcp:16385 IN IP4 198.51.100.8\r\n\
a=candidate:1 1 UDP 2130706431 198.51.100.8 16384 typ host\r\n\
a=candidate:1 2 UDP 2130706430 198.51.100.8 16385 typ host\r\n\
a=sendrecv\r\n\
m=video 16386 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n\
a=rtcp:16387 IN IP4 198.51.100.8\r\n\
a=candidate:1 1 UDP 2130706431 198.51.100.8 16386 typ host\r\n\
a=candidate:1 2 UDP 2130706430 198.51.100.8 16387 typ host\r\n\
a=sendrecv\r\n";

/// The median of `values` (the mean of the two middle ones for an even
/// count); `None` for none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// One run of a side-by-side comparison: which system it measured.
pub trait Measured {
    /// The systems compared.
    type System: PartialEq;
    /// The one this run measured.
    fn system(&self) -> Self::System;
    /// The round it belongs to (every system runs once a round).
    fn round(&self) -> u64;
}

/// Per round that measured both, `f` of `theirs` over `f` of `ours`.
pub fn per_round<R: Measured>(
    ours: &[&R],
    theirs: &[&R],
    f: &dyn Fn(&R) -> Option<f64>,
) -> Vec<f64> {
    ours.iter()
        .filter_map(|o| {
            let t = theirs.iter().find(|t| t.round() == o.round())?;
            Some(f(t)? / f(o)?)
        })
        .collect()
}

/// A table cell of ratios over rounds: `1.23x (1.10-1.40)`, the median and
/// the range (the range left out for one round, `-` for none).
pub fn ratio_cell(values: &[f64]) -> String {
    let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    match median(values.to_vec()) {
        None => "-".to_owned(),
        Some(m) if values.len() > 1 => format!("{m:.2}x ({lo:.2}-{hi:.2})"),
        Some(m) => format!("{m:.2}x"),
    }
}

/// A table cell of a number with `digits` decimals, `-` for none.
pub fn number_cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The runs at `rate` of `system`, in order, from (rate, run) pairs.
pub fn runs_of<R: Measured>(runs: &[(u64, R)], rate: u64, system: R::System) -> Vec<&R> {
    runs.iter()
        .filter(|(r, run)| *r == rate && run.system() == system)
        .map(|(_, run)| run)
        .collect()
}

/// The SDP rewrite an SBC applies to every offer and answer: parse, point
/// origin and connections at the relay, bump the version, give each stream an
/// anchored port pair, strip ICE, and print.
pub fn anchor_sdp(body: &[u8]) -> Vec<u8> {
    use std::net::{IpAddr, Ipv4Addr};
    let relay = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    let Ok(sdp) = sbc::sdp::Sdp::parse(body) else {
        return Vec::new();
    };
    let mut editor = sdp.editor();
    editor
        .set_origin_address(relay)
        .bump_origin_version()
        .set_connection(relay)
        .strip_ice();
    for (index, port) in (0..sdp.media_count()).zip((30_000u16..).step_by(2)) {
        if editor.set_media_port(index, port).is_ok() {
            let _ = editor.set_rtcp(index, port + 1, Some(relay));
        }
    }
    editor.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_inputs_are_valid_and_the_rewrite_anchors() {
        let invite = sbc::sip::Message::parse(CARRIER_INVITE).expect("carrier INVITE parses");
        let raw_body = CARRIER_INVITE.len()
            - (CARRIER_INVITE
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("blank line")
                + 4);
        assert_eq!(
            invite.content_length(),
            Some(raw_body as u32),
            "Content-Length matches the body"
        );
        for bytes in [
            fixtures::INVITE_WITH_SDP,
            fixtures::OK_200,
            fixtures::LONGREQ,
            fixtures::WSINV,
        ] {
            sbc::sip::Message::parse(bytes).expect("fixture parses");
        }
        let anchored = sbc::sdp::Sdp::parse(&anchor_sdp(invite.body())).expect("rewrite reparses");
        assert!(!anchored.has_ice());
        let ports: Vec<u16> = anchored.media().map(|m| m.port()).collect();
        assert_eq!(ports, [30_000, 30_002]);
        assert!(!String::from_utf8_lossy(anchored.as_bytes()).contains("198.51.100.8"));
    }

    struct Run {
        system: u8,
        round: u64,
        value: Option<f64>,
    }

    impl Measured for Run {
        type System = u8;
        fn system(&self) -> u8 {
            self.system
        }
        fn round(&self) -> u64 {
            self.round
        }
    }

    #[test]
    fn ratios_pair_runs_by_round_and_print_median_and_range() {
        let run = |system, round, value| Run {
            system,
            round,
            value,
        };
        let runs = [
            (10, run(0, 0, Some(2.0))),
            (10, run(1, 0, Some(3.0))),
            (10, run(0, 1, Some(4.0))),
            (10, run(1, 1, Some(8.0))),
            // A round only one side finished, and a run without the value.
            (10, run(0, 2, Some(1.0))),
            (10, run(1, 3, Some(9.0))),
            (10, run(0, 4, None)),
            (10, run(1, 4, Some(5.0))),
        ];
        let ours = runs_of(&runs, 10, 0);
        let theirs = runs_of(&runs, 10, 1);
        let ratios = per_round(&ours, &theirs, &|r| r.value);
        assert_eq!(ratios, [1.5, 2.0]);
        assert_eq!(ratio_cell(&ratios), "1.75x (1.50-2.00)");
        assert_eq!(ratio_cell(&ratios[..1]), "1.50x");
        assert_eq!(ratio_cell(&[]), "-");
        assert_eq!(number_cell(Some(1.2345), 2), "1.23");
        assert_eq!(number_cell(None, 2), "-");
    }
}
