//! Unit tests: every accessor and edit, the RFC 4317 / RFC 3264 corpus, and
//! the RFC 5118 IPv6 bodies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus/sdp");

/// A WebRTC-style offer exercising most of what the views report.
const RICH: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=ice-options:trickle\r\n\
a=ice-lite\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n\
c=IN IP4 203.0.113.5\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:EsAw\r\n\
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
a=candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host generation 0\r\n\
a=candidate:2 1 udp 1686052607 198.51.100.7 54400 typ srflx raddr 192.0.2.10 rport 54400\r\n\
a=end-of-candidates\r\n\
a=rtcp-mux\r\n\
a=sendrecv\r\n\
m=video 49170/2 RTP/SAVP 96\r\n\
c=IN IP6 2001:db8::5\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32 KDR=1\r\n\
a=crypto:2  AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32\r\n\
a=ice-mismatch\r\n\
a=remote-candidates:1 192.0.2.3 45664\r\n\
a=recvonly\r\n";

/// RFC 5118 §4.6 (`ipv6-in-sdp`), the body after the blank line.
const RFC5118_IPV6_IN_SDP: &[u8] = b"v=0\r\n\
o=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\n\
s=Live video feed for today's meeting\r\n\
c=IN IP6 2001:db8::20\r\n\
t=3338481189 3370017201\r\n\
m=audio 6000 RTP/AVP 2\r\n\
a=rtpmap:2 G726-32/8000\r\n\
m=video 6024 RTP/AVP 107\r\n\
a=rtpmap:107 H263-1998/90000\r\n";

/// RFC 5118 §4.7 (`mult-ip-in-sdp`): no session c=, one IP4 and one IP6 stream.
const RFC5118_MULT_IP_IN_SDP: &[u8] = b"v=0\r\n\
o=bob 280744730 28977631 IN IP4 host.example.com\r\n\
s=\r\n\
t=0 0\r\n\
m=audio 22334 RTP/AVP 0\r\n\
c=IN IP4 192.0.2.1\r\n\
m=video 6024 RTP/AVP 107\r\n\
c=IN IP6 2001:db8::1\r\n\
a=rtpmap:107 H263-1998/90000\r\n";

/// RFC 5118 §4.8 (`ipv4-mapped-ipv6`).
const RFC5118_IPV4_MAPPED: &[u8] = b"v=0\r\n\
o=assistant 971731711378798081 0 IN IP6 ::ffff:192.0.2.2\r\n\
s=Call me soon, please!\r\n\
c=IN IP6 ::ffff:192.0.2.2\r\n\
t=3338481189 3370017201\r\n\
m=audio 6000 RTP/AVP 2\r\n\
a=rtpmap:2 G726-32/8000\r\n\
m=video 6024 RTP/AVP 107\r\n\
a=rtpmap:107 H263-1998/90000\r\n";

fn parse(body: impl AsRef<[u8]>) -> Sdp {
    let body = body.as_ref();
    Sdp::parse(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn parse_err(body: &str) -> SdpError {
    match Sdp::parse(body.as_bytes()) {
        Ok(_) => panic!("accepted: {body:?}"),
        Err(e) => e,
    }
}

fn media(sdp: &Sdp, index: usize) -> MediaSection<'_> {
    sdp.media_section(index)
        .unwrap_or_else(|| panic!("no media section {index}"))
}

fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn ip6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().expect("test IPv6 literal"))
}

fn rewrite(editor: &SdpEditor<'_>) -> (String, Sdp) {
    let bytes = editor.to_bytes();
    let text = String::from_utf8(bytes.clone()).expect("rewritten body is UTF-8");
    (text, parse(bytes))
}

// ---------------------------------------------------------------- accessors

#[test]
fn session_level_accessors() {
    let sdp = parse(RICH);
    assert_eq!(sdp.version(), 0);
    assert_eq!(
        sdp.origin(),
        Origin {
            username: "-",
            session_id: "4611731400430051336",
            session_version: 2,
            session_version_text: "2",
            nettype: "IN",
            addrtype: "IP4",
            address: "127.0.0.1",
            ip: Some(ip4(127, 0, 0, 1)),
            line: 2,
        }
    );
    assert_eq!(sdp.session_name(), Some(&b"-"[..]));
    assert_eq!(sdp.connection(), None);
    assert_eq!(sdp.direction(), None);
    assert_eq!(sdp.line_ending(), LineEnding::CrLf);
    assert_eq!(sdp.media_count(), 2);
    assert_eq!(sdp.media().len(), 2);
    assert_eq!(
        sdp.attribute("group").and_then(|a| a.value),
        Some("BUNDLE 0 1")
    );
    assert_eq!(sdp.attributes().count(), 3);
    let ice = sdp.ice();
    assert!(ice.lite);
    assert_eq!(ice.options, Some("trickle"));
    assert_eq!(ice.candidates, 0);
    assert!(sdp.has_ice());
    assert!(sdp.media_section(2).is_none());
}

#[test]
fn media_line_fields() {
    let sdp = parse(RICH);
    let audio = media(&sdp, 0);
    assert_eq!(audio.index(), 0);
    assert_eq!(audio.line(), 8);
    assert_eq!(audio.kind(), MediaKind::Audio);
    assert_eq!(audio.media_type(), "audio");
    assert_eq!(audio.port(), 9);
    assert_eq!(audio.port_count(), None);
    assert_eq!(audio.proto(), "UDP/TLS/RTP/SAVPF");
    assert_eq!(audio.formats().collect::<Vec<_>>(), ["111", "0", "8"]);

    let video = media(&sdp, 1);
    assert_eq!(video.kind(), MediaKind::Video);
    assert_eq!(video.port(), 49170);
    assert_eq!(video.port_count(), Some(2));
    assert_eq!(video.proto(), "RTP/SAVP");
    assert_eq!(video.formats().collect::<Vec<_>>(), ["96"]);

    let other = parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=image 5000 udptl t38\r\nm=foo 0 bar x\r\n",
    );
    assert_eq!(media(&other, 0).kind(), MediaKind::Image);
    assert_eq!(media(&other, 0).proto(), "udptl");
    assert_eq!(media(&other, 1).kind(), MediaKind::Other);
    assert_eq!(media(&other, 1).media_type(), "foo");
}

#[test]
fn connections_at_both_levels() {
    let sdp = parse(RFC5118_MULT_IP_IN_SDP);
    assert_eq!(sdp.connection(), None);
    let audio = media(&sdp, 0).connection().expect("audio c=");
    assert_eq!(audio.addrtype, AddrType::Ip4);
    assert_eq!(audio.ip, Some(ip4(192, 0, 2, 1)));
    assert_eq!(audio.line, 6);
    let video = media(&sdp, 1).effective_connection().expect("video c=");
    assert_eq!(video.addrtype, AddrType::Ip6);
    assert_eq!(video.ip, Some(ip6("2001:db8::1")));

    // Media level overrides session level; FQDNs and multicast stay raw.
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 host.example.com\r\nt=0 0\r\n\
         m=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 31\r\nc=IN IP4 224.2.36.42/127/3\r\n",
    );
    let session = sdp.connection().expect("session c=");
    assert_eq!(session.ip, None);
    assert_eq!(session.host(), "host.example.com");
    assert_eq!(media(&sdp, 0).connection(), None);
    assert_eq!(media(&sdp, 0).effective_connection(), Some(session));
    let multicast = media(&sdp, 1).effective_connection().expect("c=");
    assert_eq!(multicast.address, "224.2.36.42/127/3");
    assert_eq!(multicast.host(), "224.2.36.42");
    assert_eq!(multicast.ip, Some(ip4(224, 2, 36, 42)));
}

#[test]
fn directions_fall_back_to_session_then_sendrecv() {
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=recvonly\r\n\
         m=audio 1 RTP/AVP 0\r\nm=audio 2 RTP/AVP 0\r\na=inactive\r\n",
    );
    assert_eq!(sdp.direction(), Some(Direction::RecvOnly));
    assert_eq!(media(&sdp, 0).own_direction(), None);
    assert_eq!(media(&sdp, 0).direction(), Direction::RecvOnly);
    assert_eq!(media(&sdp, 1).direction(), Direction::Inactive);

    let sdp = parse(RFC5118_IPV6_IN_SDP);
    assert_eq!(media(&sdp, 0).direction(), Direction::SendRecv);
    let sdp = parse(RICH);
    assert_eq!(media(&sdp, 0).own_direction(), Some(Direction::SendRecv));
    assert_eq!(media(&sdp, 1).direction(), Direction::RecvOnly);
}

#[test]
fn rtcp_and_rtcp_mux() {
    let sdp = parse(RICH);
    let rtcp = media(&sdp, 0).rtcp().expect("a=rtcp");
    assert_eq!(rtcp.port, 9);
    assert_eq!(rtcp.line, 10);
    let conn = rtcp.connection.expect("a=rtcp address");
    assert_eq!(conn.ip, Some(ip4(0, 0, 0, 0)));
    assert!(media(&sdp, 0).rtcp_mux());
    assert_eq!(media(&sdp, 1).rtcp(), None);
    assert!(!media(&sdp, 1).rtcp_mux());

    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:53020\r\n",
    );
    let rtcp = media(&sdp, 0).rtcp().expect("a=rtcp");
    assert_eq!((rtcp.port, rtcp.connection), (53020, None));
}

#[test]
fn ice_attributes_and_candidates() {
    let sdp = parse(RICH);
    let audio = media(&sdp, 0);
    let ice = audio.ice();
    assert_eq!(ice.ufrag, Some("EsAw"));
    assert_eq!(ice.pwd, Some("P2uYro0UCOQ4zxjKXaWCBui1"));
    assert!(ice.end_of_candidates);
    assert!(!ice.mismatch);
    assert_eq!(ice.candidates, 2);
    let candidates: Vec<Candidate<'_>> = audio
        .candidates()
        .map(|c| c.expect("valid candidate"))
        .collect();
    assert_eq!(
        candidates[0],
        Candidate {
            foundation: "1",
            component: 1,
            transport: "udp",
            priority: 2122260223,
            address: "192.0.2.10",
            ip: Some(ip4(192, 0, 2, 10)),
            port: 54400,
            kind: "host",
            related_address: None,
            related_port: None,
            line: 13,
        }
    );
    assert_eq!(candidates[1].kind, "srflx");
    assert_eq!(candidates[1].related_address, Some("192.0.2.10"));
    assert_eq!(candidates[1].related_port, Some(54400));

    let video = media(&sdp, 1).ice();
    assert!(video.mismatch);
    assert_eq!(video.remote_candidates, Some("1 192.0.2.3 45664"));

    let bad = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\na=candidate:1 1 udp x 192.0.2.1 9 typ host\r\n",
    );
    let err = media(&bad, 0)
        .candidates()
        .next()
        .expect("one candidate")
        .expect_err("priority is not a number");
    assert_eq!(err.line(), Some(5));
}

#[test]
fn crypto_lines() {
    let sdp = parse(RICH);
    let crypto: Vec<Crypto<'_>> = media(&sdp, 1)
        .crypto()
        .map(|c| c.expect("valid crypto"))
        .collect();
    assert_eq!(crypto.len(), 2);
    assert_eq!(crypto[0].tag, 1);
    assert_eq!(crypto[0].suite, "AES_CM_128_HMAC_SHA1_80");
    assert_eq!(
        crypto[0].key_params,
        "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
    );
    assert_eq!(crypto[0].session_params, Some("KDR=1"));
    assert_eq!(crypto[1].tag, 2);
    assert_eq!(crypto[1].session_params, None);
    assert_eq!(media(&sdp, 0).crypto().count(), 0);

    let bad = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/SAVP 0\r\na=crypto:1234567890 AES inline:x\r\n",
    );
    assert!(media(&bad, 0).crypto().all(|c| c.is_err()));
}

#[test]
fn hold_and_disabled_streams() {
    let hold_c = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 23442 RTP/AVP 97\r\n",
    );
    assert!(hold_c.connection().is_some_and(|c| c.is_unspecified()));
    assert!(media(&hold_c, 0).is_hold());
    assert!(hold_c.is_hold());

    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 1 RTP/AVP 0\r\na=sendonly\r\nm=audio 2 RTP/AVP 0\r\na=recvonly\r\nm=video 0 RTP/AVP 31\r\n",
    );
    assert!(media(&sdp, 0).is_hold());
    assert!(!media(&sdp, 1).is_hold());
    assert!(media(&sdp, 2).is_disabled());
    assert!(!media(&sdp, 2).is_hold());
    assert!(!sdp.is_hold());

    let no_media = parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n");
    assert!(!no_media.is_hold());
}

#[test]
fn line_endings_are_kept() {
    let lf = "v=0\no=- 1 1 IN IP4 h\ns=\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 1 RTP/AVP 0\n";
    let sdp = parse(lf);
    assert_eq!(sdp.line_ending(), LineEnding::Lf);
    assert_eq!(sdp.to_bytes(), lf.as_bytes());

    // Mixed endings, an unterminated last line, trailing blank lines.
    for body in [
        "v=0\r\no=- 1 1 IN IP4 h\ns=\r\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0",
        "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n\r\n\r\n",
    ] {
        let sdp = parse(body);
        assert_eq!(sdp.to_bytes(), body.as_bytes());
        assert_eq!(sdp.editor().to_bytes(), body.as_bytes());
    }
}

#[test]
fn write_to_appends() {
    let sdp = parse(RICH);
    let mut out = b"prefix".to_vec();
    sdp.write_to(&mut out);
    assert_eq!(out.get(6..), Some(RICH.as_bytes()));
    assert_eq!(sdp.as_bytes(), RICH.as_bytes());
    let mut out = Vec::new();
    sdp.editor().write_to(&mut out);
    assert_eq!(out, RICH.as_bytes());
}

// ------------------------------------------------------------------- errors

#[test]
fn syntax_errors_are_400() {
    let cases: &[(&str, Option<usize>)] = &[
        ("", None),
        ("\r\n\r\n", None),
        ("o=- 1 1 IN IP4 h\r\nv=0\r\n", Some(1)),
        ("v=1\r\no=- 1 1 IN IP4 h\r\n", Some(1)),
        ("v=0\r\n", None),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nv=0\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\no=- 1 1 IN IP4 h\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4\r\n", Some(2)),
        ("v=0\r\no=- x 1 IN IP4 h\r\n", Some(2)),
        ("v=0\r\no=- 1 9x IN IP4 h\r\n", Some(2)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nX=y\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nab\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\n\r\ns=\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=a\rb\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=a\0b\r\n", Some(3)),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", Some(3)),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 2001:db8::1\r\n",
            Some(3),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 224.2.1.1/x\r\n",
            Some(3),
        ),
        (
            "v=0\r\no=- 1 1 IN IP6 h\r\nc=IN IP6 ff15::1/3/2\r\n",
            Some(3),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP\r\n",
            Some(4),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 65536 RTP/AVP 0\r\n",
            Some(4),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio -1 RTP/AVP 0\r\n",
            Some(4),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1/0 RTP/AVP 0\r\n",
            Some(4),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\no=- 1 1 IN IP4 h\r\n",
            Some(5),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:x\r\n",
            Some(5),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=rtcp\r\n",
            Some(5),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:9 IN IP4\r\n",
            Some(5),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:9\r\na=rtcp:9\r\n",
            Some(6),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=sendonly\r\na=inactive\r\n",
            Some(6),
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\na=sendonly\r\na=sendonly\r\n",
            Some(4),
        ),
    ];
    for &(body, line) in cases {
        let err = parse_err(body);
        assert_eq!(err.status_code(), 400, "{body:?}: {err}");
        assert!(
            matches!(err.reason(), "Malformed SDP" | "Empty SDP"),
            "{err}"
        );
        assert_eq!(err.line(), line, "{body:?}: {err}");
    }
    // Non-UTF-8 is fine in free text, not in an interpreted line.
    let latin1 = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=caf\xe9\r\n";
    assert_eq!(parse(latin1).session_name(), Some(&b"caf\xe9"[..]));
    let err =
        Sdp::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\na=ice-ufrag:caf\xe9\r\n").expect_err("not UTF-8");
    assert_eq!((err.status_code(), err.line()), (400, Some(3)));
}

#[test]
fn unusable_sdp_is_488() {
    let cases: &[(&str, usize)] = &[
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=ATM NSAP 47.0005\r\n", 3),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IPX 1.2.3.4\r\n", 3),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n",
            5,
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=rtcp:9 TN IP4 h\r\n",
            5,
        ),
    ];
    for &(body, line) in cases {
        let err = parse_err(body);
        assert_eq!(err.status_code(), 488, "{body:?}: {err}");
        assert_ne!(err.reason(), "Malformed SDP");
        assert_eq!(err.line(), Some(line), "{body:?}: {err}");
    }
    // A disabled stream needs no connection.
    parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n");
}

#[test]
fn limits_are_enforced() {
    let header = "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 192.0.2.1\r\n";
    let mut body = header.to_owned();
    body.push_str(&"m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA));
    assert_eq!(parse(&body).media_count(), MAX_MEDIA);
    body.push_str("m=audio 1 RTP/AVP 0\r\n");
    let err = parse_err(&body);
    assert!(matches!(err, SdpError::TooManyMedia { .. }), "{err}");
    assert_eq!(err.status_code(), 488);

    let mut body = header.to_owned();
    body.push_str(&"a=x\r\n".repeat(MAX_LINES - 3));
    assert!(Sdp::parse(body.as_bytes()).is_ok());
    body.push_str("a=x\r\n");
    let err = parse_err(&body);
    assert_eq!(
        err,
        SdpError::TooManyLines {
            line: MAX_LINES + 1,
            max: MAX_LINES
        }
    );

    let huge = vec![b'a'; MAX_BODY_LEN + 1];
    let err = Sdp::parse(&huge).expect_err("too large");
    assert_eq!(err.status_code(), 488);
    assert_eq!(err.line(), None);
}

// ------------------------------------------------------------------- edits

#[test]
fn unedited_editor_is_identity() {
    let sdp = parse(RICH);
    assert_eq!(sdp.editor().to_bytes(), RICH.as_bytes());
}

#[test]
fn origin_edits() {
    let sdp = parse(RICH);
    let mut editor = sdp.editor();
    editor
        .set_origin_address(ip6("2001:db8::1"))
        .bump_origin_version()
        .bump_origin_version();
    let (text, out) = rewrite(&editor);
    assert!(text.contains("\r\no=- 4611731400430051336 3 IN IP6 2001:db8::1\r\n"));
    assert_eq!(out.origin().session_version, 3);
    assert_eq!(out.origin().ip, Some(ip6("2001:db8::1")));
    assert_eq!(out.origin().addrtype, "IP6");

    editor.set_origin_version(u64::MAX);
    assert_eq!(rewrite(&editor).1.origin().session_version, u64::MAX);
    let (_, saturated) = rewrite(&editor);
    assert_eq!(
        saturated
            .editor()
            .bump_origin_version()
            .to_sdp()
            .map(|s| s.origin().session_version),
        Ok(u64::MAX)
    );
}

#[test]
fn connection_edits() {
    let relay = ip4(192, 0, 2, 99);
    let sdp = parse(RFC5118_MULT_IP_IN_SDP);

    // Every c= line, session and media level.
    let (text, out) = rewrite(sdp.editor().set_connection(relay));
    assert_eq!(text.matches("c=IN IP4 192.0.2.99\r\n").count(), 2);
    assert!(
        out.media()
            .all(|m| m.effective_connection().and_then(|c| c.ip) == Some(relay))
    );

    // No session c= yet: one is inserted before t=; media c= still win.
    let (text, out) = rewrite(sdp.editor().set_session_connection(relay));
    assert!(
        text.contains("s=\r\nc=IN IP4 192.0.2.99\r\nt=0 0\r\n"),
        "{text}"
    );
    assert_eq!(out.connection().and_then(|c| c.ip), Some(relay));
    assert_eq!(
        media(&out, 1).effective_connection().and_then(|c| c.ip),
        Some(ip6("2001:db8::1"))
    );

    // A media-level c= is replaced in place, the IP4 one becomes IP6.
    let mut editor = sdp.editor();
    editor
        .set_media_connection(0, ip6("2001:db8::99"))
        .expect("media 0");
    let (text, out) = rewrite(&editor);
    assert!(text.contains("m=audio 22334 RTP/AVP 0\r\nc=IN IP6 2001:db8::99\r\n"));
    assert_eq!(
        media(&out, 0).connection().map(|c| c.addrtype),
        Some(AddrType::Ip6)
    );

    // Inheriting sections get their own c=, after m= and i=; others keep
    // the session c=.
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 1 RTP/AVP 0\r\ni=voice\r\na=rtpmap:0 PCMU/8000\r\nm=audio 2 RTP/AVP 0\r\n",
    );
    let mut editor = sdp.editor();
    editor.set_media_connection(0, relay).expect("media 0");
    editor
        .set_media_connection(0, relay)
        .expect("repeat replaces");
    let (text, out) = rewrite(&editor);
    assert!(
        text.contains("i=voice\r\nc=IN IP4 192.0.2.99\r\na=rtpmap"),
        "{text}"
    );
    assert_eq!(text.matches("192.0.2.99").count(), 1);
    assert_eq!(media(&out, 0).connection().and_then(|c| c.ip), Some(relay));
    assert_eq!(media(&out, 1).connection(), None);
    assert_eq!(
        media(&out, 1).effective_connection().and_then(|c| c.ip),
        Some(ip4(192, 0, 2, 1))
    );
}

#[test]
fn port_edits_keep_the_count() {
    let sdp = parse(RICH);
    let mut editor = sdp.editor();
    editor.set_media_port(0, 40000).expect("media 0");
    editor.set_media_port(1, 0).expect("media 1");
    let (text, out) = rewrite(&editor);
    assert!(text.contains("m=audio 40000 UDP/TLS/RTP/SAVPF 111 0 8\r\n"));
    assert!(text.contains("m=video 0/2 RTP/SAVP 96\r\n"));
    assert_eq!(media(&out, 0).port(), 40000);
    assert!(media(&out, 1).is_disabled());
    assert_eq!(media(&out, 1).port_count(), Some(2));
}

#[test]
fn rtcp_edits_replace_or_append() {
    let sdp = parse(RICH);
    let relay = ip4(192, 0, 2, 99);
    let mut editor = sdp.editor();
    editor.set_rtcp(0, 40001, Some(relay)).expect("media 0");
    editor.set_rtcp(1, 40003, None).expect("media 1");
    let (text, out) = rewrite(&editor);
    assert!(text.contains("\r\na=rtcp:40001 IN IP4 192.0.2.99\r\na=ice-ufrag"));
    assert!(text.ends_with("a=recvonly\r\na=rtcp:40003\r\n"), "{text}");
    let rtcp = media(&out, 0).rtcp().expect("a=rtcp");
    assert_eq!(rtcp.port, 40001);
    assert_eq!(rtcp.connection.and_then(|c| c.ip), Some(relay));
    assert_eq!(
        media(&out, 1).rtcp().map(|r| (r.port, r.connection)),
        Some((40003, None))
    );
}

#[test]
fn direction_edits_replace_or_append() {
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 1 RTP/AVP 0\r\na=sendrecv\r\na=ptime:20\r\nm=audio 2 RTP/AVP 0\r\n",
    );
    let mut editor = sdp.editor();
    editor
        .set_direction(0, Direction::SendOnly)
        .expect("media 0");
    editor
        .set_direction(1, Direction::RecvOnly)
        .expect("media 1");
    editor
        .set_direction(1, Direction::Inactive)
        .expect("last call wins");
    let (text, out) = rewrite(&editor);
    assert!(text.contains("a=sendonly\r\na=ptime:20\r\n"));
    assert!(text.ends_with("m=audio 2 RTP/AVP 0\r\na=inactive\r\n"));
    assert_eq!(media(&out, 0).direction(), Direction::SendOnly);
    assert_eq!(media(&out, 1).direction(), Direction::Inactive);
    assert!(out.is_hold());
}

#[test]
fn strip_ice_removes_every_ice_line() {
    let sdp = parse(RICH);
    let mut editor = sdp.editor();
    editor.strip_ice().strip_ice();
    let (text, out) = rewrite(&editor);
    assert!(!out.has_ice());
    assert_eq!(out.ice(), IceAttributes::default());
    assert_eq!(media(&out, 0).candidates().count(), 0);
    for kept in [
        "a=group:BUNDLE 0 1",
        "a=rtcp-mux",
        "a=crypto:2",
        "a=recvonly",
    ] {
        assert!(text.contains(kept), "{kept} removed");
    }
    // Nine ICE lines: ice-options, ice-lite, ufrag, pwd, two candidates,
    // end-of-candidates, ice-mismatch, remote-candidates.
    assert_eq!(text.lines().count() + 9, RICH.lines().count());
}

#[test]
fn edits_on_removed_lines_and_at_the_end() {
    // The section ends with an ICE line; appended lines still land in it.
    let body =
        "v=0\no=- 1 1 IN IP4 h\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\na=end-of-candidates";
    let sdp = parse(body);
    let mut editor = sdp.editor();
    editor.strip_ice();
    editor.set_rtcp(0, 2, None).expect("media 0");
    editor
        .set_direction(0, Direction::Inactive)
        .expect("media 0");
    let (text, out) = rewrite(&editor);
    assert_eq!(
        text,
        "v=0\no=- 1 1 IN IP4 h\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\na=rtcp:2\na=inactive\n"
    );
    assert_eq!(media(&out, 0).direction(), Direction::Inactive);

    // After an unterminated last line that stays, the body stays unterminated.
    let sdp = parse("v=0\no=- 1 1 IN IP4 h\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0");
    let mut editor = sdp.editor();
    editor.set_rtcp(0, 2, None).expect("media 0");
    assert_eq!(
        rewrite(&editor).0,
        "v=0\no=- 1 1 IN IP4 h\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\na=rtcp:2"
    );
}

#[test]
fn bad_media_index_is_an_edit_error() {
    let sdp = parse(RFC5118_IPV6_IN_SDP);
    let mut editor = sdp.editor();
    let expected = EditError::NoSuchMedia { index: 2, count: 2 };
    assert_eq!(editor.set_media_port(2, 1).err(), Some(expected));
    assert_eq!(
        editor.set_media_connection(2, ip4(1, 2, 3, 4)).err(),
        Some(expected)
    );
    assert_eq!(editor.set_rtcp(2, 1, None).err(), Some(expected));
    assert_eq!(
        editor.set_direction(2, Direction::Inactive).err(),
        Some(expected)
    );
    assert_eq!(editor.to_bytes(), RFC5118_IPV6_IN_SDP);
}

/// The rewrite an SBC does on every offer it relays.
fn sbc_rewrite(sdp: &Sdp, relay: IpAddr, base_port: u16) -> Vec<u8> {
    let mut editor = sdp.editor();
    editor
        .set_origin_address(relay)
        .bump_origin_version()
        .set_connection(relay)
        .strip_ice();
    for index in 0..sdp.media_count() {
        if media(sdp, index).is_disabled() {
            continue;
        }
        let port = base_port + 2 * index as u16;
        editor
            .set_media_port(index, port)
            .and_then(|e| e.set_rtcp(index, port + 1, Some(relay)))
            .expect("index in range");
    }
    editor.to_bytes()
}

fn assert_sbc_rewrite(sdp: &Sdp, relay: IpAddr) {
    let out = parse(sbc_rewrite(sdp, relay, 30000));
    assert_eq!(out.origin().ip, Some(relay));
    assert_eq!(
        out.origin().session_version,
        sdp.origin().session_version + 1
    );
    assert!(!out.has_ice());
    assert_eq!(out.media_count(), sdp.media_count());
    for (before, after) in sdp.media().zip(out.media()) {
        assert_eq!(
            before.formats().collect::<Vec<_>>(),
            after.formats().collect::<Vec<_>>()
        );
        assert_eq!(before.direction(), after.direction());
        if before.is_disabled() {
            assert!(after.is_disabled());
            continue;
        }
        assert_eq!(after.port(), 30000 + 2 * after.index() as u16);
        // An RFC 2543 hold (RFC 4317 §5.2, §5.3) stays on hold.
        let expected = before
            .effective_connection()
            .filter(|c| c.is_unspecified())
            .map_or(Some(relay), |c| c.ip);
        assert_eq!(after.effective_connection().and_then(|c| c.ip), expected);
        assert_eq!(before.is_hold(), after.is_hold());
        let rtcp = after.rtcp().expect("a=rtcp");
        assert_eq!(rtcp.port, after.port() + 1);
        assert_eq!(rtcp.connection.and_then(|c| c.ip), Some(relay));
    }
}

#[test]
fn typical_sbc_rewrite() {
    let sdp = parse(RICH);
    assert_sbc_rewrite(&sdp, ip4(192, 0, 2, 99));
    assert_sbc_rewrite(&sdp, ip6("2001:db8::99"));
}

// ------------------------------------------------------------------ corpus

fn corpus_files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(CORPUS).join(dir);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sdp"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, body)
        })
        .collect();
    files.sort();
    // index.tsv lists every file: header line plus one row each.
    let index = std::fs::read_to_string(dir.join("index.tsv")).expect("index.tsv");
    assert_eq!(index.lines().count() - 1, files.len(), "{}", dir.display());
    files
}

fn corpus(dir: &str, name: &str) -> Sdp {
    let path = Path::new(CORPUS).join(dir).join(name);
    parse(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn corpus_parses_and_prints_identically() {
    for (dir, count) in [("rfc4317", 54), ("rfc3264", 9)] {
        let files = corpus_files(dir);
        assert_eq!(files.len(), count, "{dir}");
        for (name, body) in files {
            let sdp = Sdp::parse(&body).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
            assert_eq!(sdp.to_bytes(), body, "{dir}/{name}");
            assert_eq!(sdp.editor().to_bytes(), body, "{dir}/{name}");
            assert_eq!(sdp.line_ending(), LineEnding::CrLf, "{dir}/{name}");
            assert_sbc_rewrite(&sdp, ip4(192, 0, 2, 99));
        }
    }
}

#[test]
fn corpus_rfc4317_facts() {
    // §2.1: Alice's offer, empty s=, FQDN session c=.
    let sdp = corpus("rfc4317", "2.1-offer.sdp");
    assert_eq!(sdp.origin().username, "alice");
    assert_eq!(sdp.origin().session_id, "2890844526");
    assert_eq!(sdp.session_name(), Some(&b""[..]));
    assert_eq!(
        sdp.connection().map(|c| c.host()),
        Some("host.atlanta.example.com")
    );
    assert_eq!(sdp.connection().and_then(|c| c.ip), None);
    let ports: Vec<u16> = sdp.media().map(|m| m.port()).collect();
    assert_eq!(ports, [49170, 51372]);
    assert_eq!(
        media(&sdp, 0).formats().collect::<Vec<_>>(),
        ["0", "8", "97"]
    );

    // §2.2: video declined with port 0.
    let sdp = corpus("rfc4317", "2.2-answer.sdp");
    assert!(media(&sdp, 1).is_disabled());
    assert!(!media(&sdp, 0).is_disabled());

    // §2.4: a separate sendonly telephone-event stream.
    let sdp = corpus("rfc4317", "2.4-offer.sdp");
    assert_eq!(media(&sdp, 0).direction(), Direction::SendRecv);
    assert_eq!(media(&sdp, 1).direction(), Direction::SendOnly);

    // §2.8: media-level c= for video only.
    let sdp = corpus("rfc4317", "2.8-answer.sdp");
    assert_eq!(media(&sdp, 0).connection(), None);
    assert_eq!(
        media(&sdp, 0).effective_connection().map(|c| c.host()),
        Some("host.biloxi.example.com")
    );
    assert_eq!(
        media(&sdp, 1).connection().map(|c| c.host()),
        Some("otherhost.biloxi.example.com")
    );

    // §3.1: hold by a=sendonly.
    let sdp = corpus("rfc4317", "3.1-answer.sdp");
    assert!(sdp.is_hold());

    // §4.1: Bob's second offer bumps sess-version and adds a recvonly stream.
    let sdp = corpus("rfc4317", "4.1-offer-2.sdp");
    assert_eq!(sdp.origin().session_version, 2808844565);
    assert_eq!(media(&sdp, 1).direction(), Direction::RecvOnly);
    assert_eq!(
        media(&sdp, 1).connection().map(|c| c.host()),
        Some("mediaserver.biloxi.example.com")
    );

    // §5.1: no media at all (3pcc).
    assert_eq!(corpus("rfc4317", "5.1-offer.sdp").media_count(), 0);

    // §5.2 / §5.3: black-hole hold with c=IN IP4 0.0.0.0.
    for name in ["5.2-offer.sdp", "5.3-answer.sdp"] {
        let sdp = corpus("rfc4317", name);
        assert!(
            sdp.connection().is_some_and(|c| c.is_unspecified()),
            "{name}"
        );
        assert!(sdp.is_hold(), "{name}");
        assert_eq!(media(&sdp, 0).direction(), Direction::SendRecv, "{name}");
    }
    assert_eq!(media(&corpus("rfc4317", "5.2-offer.sdp"), 0).port(), 23442);
}

#[test]
fn corpus_rfc3264_facts() {
    // Figure 1: c= after t=, every stream at port 0.
    let sdp = corpus("rfc3264", "9-1-capabilities-figure1.sdp");
    assert_eq!(sdp.origin().session_id, "28908764872");
    assert_eq!(sdp.connection().and_then(|c| c.ip), Some(ip4(192, 0, 2, 4)));
    assert!(sdp.media().all(|m| m.is_disabled()));

    // §10.1: Bob's second offer.
    let sdp = corpus("rfc3264", "10.1-3-offer-2-bob.sdp");
    let ports: Vec<u16> = sdp.media().map(|m| m.port()).collect();
    assert_eq!(ports, [65422, 0, 53000, 51434]);
    assert_eq!(media(&sdp, 3).direction(), Direction::RecvOnly);
    assert_eq!(media(&sdp, 3).formats().collect::<Vec<_>>(), ["110"]);

    // §10.2: an inactive offer is a hold.
    let sdp = corpus("rfc3264", "10.2-1-offer-alice-inactive.sdp");
    assert_eq!(media(&sdp, 0).direction(), Direction::Inactive);
    assert!(sdp.is_hold());
    assert_eq!(media(&sdp, 0).formats().count(), 3);
}

// ------------------------------------------------------------- RFC 5118

#[test]
fn rfc5118_ipv6_bodies() {
    let sdp = parse(RFC5118_IPV6_IN_SDP);
    assert_eq!(sdp.to_bytes(), RFC5118_IPV6_IN_SDP);
    assert_eq!(sdp.origin().session_id, "971731711378798081");
    assert_eq!(sdp.origin().session_version, 0);
    assert_eq!(sdp.origin().ip, Some(ip6("2001:db8::20")));
    let c = sdp.connection().expect("session c=");
    assert_eq!(
        (c.addrtype, c.ip),
        (AddrType::Ip6, Some(ip6("2001:db8::20")))
    );
    assert_eq!(
        sdp.session_name(),
        Some(&b"Live video feed for today's meeting"[..])
    );

    let sdp = parse(RFC5118_IPV4_MAPPED);
    assert_eq!(sdp.to_bytes(), RFC5118_IPV4_MAPPED);
    let mapped = ip6("::ffff:192.0.2.2");
    assert_eq!(sdp.connection().and_then(|c| c.ip), Some(mapped));
    assert_eq!(sdp.origin().ip, Some(mapped));

    let sdp = parse(RFC5118_MULT_IP_IN_SDP);
    assert_eq!(sdp.to_bytes(), RFC5118_MULT_IP_IN_SDP);

    // IP6 → IP4 relay and back: the address type follows the address.
    for body in [
        RFC5118_IPV6_IN_SDP,
        RFC5118_IPV4_MAPPED,
        RFC5118_MULT_IP_IN_SDP,
    ] {
        let sdp = parse(body);
        assert_sbc_rewrite(&sdp, ip4(192, 0, 2, 99));
        assert_sbc_rewrite(&sdp, ip6("2001:db8::99"));
    }
    let (text, _) = rewrite(
        parse(RFC5118_IPV6_IN_SDP)
            .editor()
            .set_connection(ip4(192, 0, 2, 99)),
    );
    assert!(text.contains("\r\nc=IN IP4 192.0.2.99\r\n"));
}

// ------------------------------------------------- review findings

/// An audio section that is the last line of the body, under a session c=.
fn last_line_section(tail: &str) -> Sdp {
    parse(format!(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n{tail}"
    ))
}

#[test]
fn inserted_connection_precedes_inserted_attributes() {
    let v6 = ip6("2001:db8::1");
    type Step = fn(&mut SdpEditor<'_>, IpAddr);
    let rtcp: Step = |e, ip| {
        e.set_rtcp(0, 4001, Some(ip)).expect("media 0");
    };
    let direction: Step = |e, _| {
        e.set_direction(0, Direction::SendOnly).expect("media 0");
    };
    let connection: Step = |e, ip| {
        e.set_media_connection(0, ip).expect("media 0");
    };
    // RFC 8866 §5: m= i= c= b= k= a=, whatever order the edits come in.
    for (tail, head) in [("", ""), ("i=voice\r\n", "i=voice\r\n")] {
        let sdp = last_line_section(tail);
        for order in [
            [rtcp, direction, connection],
            [connection, rtcp, direction],
            [direction, connection, rtcp],
        ] {
            let mut editor = sdp.editor();
            for step in order {
                step(&mut editor, v6);
            }
            let (text, out) = rewrite(&editor);
            assert!(
                text.contains(&format!(
                    "m=audio 4000 RTP/AVP 0\r\n{head}c=IN IP6 2001:db8::1\r\na="
                )),
                "{text}"
            );
            assert!(
                text.contains("\r\na=rtcp:4001 IN IP6 2001:db8::1\r\n"),
                "{text}"
            );
            assert!(text.contains("\r\na=sendonly\r\n"), "{text}");
            assert_eq!(media(&out, 0).connection().and_then(|c| c.ip), Some(v6));
        }
    }
}

#[test]
fn inserted_session_connection_keeps_rfc8866_order() {
    // v o s i u e p c b t r z k a: the c= goes after p=, before b=.
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\ni=info\r\nu=http://example.com/\r\n\
         e=a@example.com\r\np=+1 555\r\nb=AS:64\r\nt=0 0\r\nr=604800 3600 0\r\n\
         z=2882844526 -1h\r\nk=prompt\r\na=recvonly\r\nm=audio 0 RTP/AVP 0\r\n",
    );
    let (text, out) = rewrite(sdp.editor().set_session_connection(ip4(192, 0, 2, 9)));
    assert!(
        text.contains("p=+1 555\r\nc=IN IP4 192.0.2.9\r\nb=AS:64\r\n"),
        "{text}"
    );
    assert_eq!(out.connection().and_then(|c| c.ip), Some(ip4(192, 0, 2, 9)));
}

#[test]
fn set_connection_keeps_rfc2543_hold() {
    let relay = ip4(192, 0, 2, 1);
    for (hold, body) in [
        // Session-level hold, inherited by the stream.
        (
            "c=IN IP4 0.0.0.0",
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        ),
        // Media-level hold, IPv6 by analogy.
        (
            "c=IN IP6 ::",
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP6 ::\r\n",
        ),
    ] {
        let sdp = parse(body);
        assert!(sdp.is_hold(), "{body}");
        let (text, out) = rewrite(sdp.editor().set_connection(relay));
        assert!(out.is_hold(), "{text}");
        assert!(text.contains(hold), "{text}");
        assert!(!text.contains("192.0.2.1"), "{text}");
        // Neither level's setter takes the stream off hold.
        let mut editor = sdp.editor();
        editor
            .set_session_connection(relay)
            .set_media_connection(0, relay)
            .expect("media 0");
        let (text, out) = rewrite(&editor);
        assert!(out.is_hold(), "{text}");
    }
    // A held stream next to a live one: only the live one moves.
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\nc=IN IP4 0.0.0.0\r\n",
    );
    let (_, out) = rewrite(sdp.editor().set_connection(relay));
    assert_eq!(
        media(&out, 0).effective_connection().and_then(|c| c.ip),
        Some(relay)
    );
    assert!(media(&out, 1).is_hold());
}

#[test]
fn set_connection_rewrites_rtcp_addresses() {
    let relay = ip6("2001:db8::99");
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 10.0.0.1\r\n\
         m=video 4002 RTP/AVP 31\r\na=rtcp:4003  IN IP4 far.example.com\r\n",
    );
    // Both a=rtcp follow the relay; the port stays, the addrtype follows.
    let (text, out) = rewrite(sdp.editor().set_connection(relay));
    assert!(
        !text.contains("10.0.0.1") && !text.contains("far.example"),
        "{text}"
    );
    assert!(
        text.contains("a=rtcp:4001 IN IP6 2001:db8::99\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtcp:4003  IN IP6 2001:db8::99\r\n"),
        "{text}"
    );
    for m in out.media() {
        let rtcp = m.rtcp().expect("a=rtcp");
        assert_eq!(rtcp.port, m.port() + 1);
        assert_eq!(rtcp.connection.and_then(|c| c.ip), Some(relay));
    }

    // set_media_connection: only its own section's a=rtcp.
    let mut editor = sdp.editor();
    editor.set_media_connection(1, relay).expect("media 1");
    let (text, _) = rewrite(&editor);
    assert!(text.contains("a=rtcp:4001 IN IP4 10.0.0.1\r\n"), "{text}");
    assert!(
        text.contains("a=rtcp:4003  IN IP6 2001:db8::99\r\n"),
        "{text}"
    );

    // An explicit set_rtcp wins over set_connection, in either order.
    let other = ip4(198, 51, 100, 1);
    let mut before = sdp.editor();
    before.set_rtcp(0, 5001, Some(other)).expect("media 0");
    before.set_connection(relay);
    let mut after = sdp.editor();
    after.set_connection(relay);
    after.set_rtcp(0, 5001, Some(other)).expect("media 0");
    for editor in [&before, &after] {
        let (text, out) = rewrite(editor);
        assert!(
            text.contains("a=rtcp:5001 IN IP4 198.51.100.1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("a=rtcp:4003  IN IP6 2001:db8::99\r\n"),
            "{text}"
        );
        assert_eq!(
            media(&out, 0)
                .rtcp()
                .and_then(|r| r.connection)
                .and_then(|c| c.ip),
            Some(other)
        );
    }
    // Repeating set_connection: the last call wins.
    let (text, _) = rewrite(sdp.editor().set_connection(other).set_connection(relay));
    // One session c= and two a=rtcp.
    assert_eq!(text.matches("IN IP6 2001:db8::99").count(), 3, "{text}");
    assert!(!text.contains("198.51.100.1"), "{text}");
}

#[test]
fn long_session_ids_and_versions_are_accepted() {
    // RFC 8866 §5.2: sess-id and sess-version are 1*DIGIT, any length.
    let body = "v=0\r\no=- 12345678901234567890123 99999999999999999999 IN IP4 192.0.2.1\r\n\
                s=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";
    let sdp = parse(body);
    assert_eq!(sdp.to_bytes(), body.as_bytes());
    let origin = sdp.origin();
    assert_eq!(origin.session_id, "12345678901234567890123");
    assert_eq!(origin.session_version, u64::MAX);
    assert_eq!(origin.session_version_text, "99999999999999999999");
    let (text, _) = rewrite(sdp.editor().bump_origin_version().bump_origin_version());
    assert!(
        text.contains("o=- 12345678901234567890123 100000000000000000000 IN IP4"),
        "{text}"
    );
    // The u64 edge: one past u64::MAX, printed exactly.
    let sdp = parse("v=0\r\no=- 1 18446744073709551615 IN IP4 h\r\n");
    let (text, _) = rewrite(sdp.editor().bump_origin_version());
    assert!(text.contains("o=- 1 18446744073709551616 IN"), "{text}");
    // Leading zeros are digits like any other.
    let sdp = parse("v=0\r\no=- 1 0099 IN IP4 h\r\n");
    let (text, _) = rewrite(sdp.editor().bump_origin_version());
    assert!(text.contains("o=- 1 0100 IN"), "{text}");
    // Still 1*DIGIT: signs, letters and empty fields are 400.
    for bad in [
        "v=0\r\no=- 1x 1 IN IP4 h\r\n",
        "v=0\r\no=- +1 1 IN IP4 h\r\n",
        "v=0\r\no=- 1 1x IN IP4 h\r\n",
    ] {
        let err = parse_err(bad);
        assert_eq!((err.status_code(), err.line()), (400, Some(2)), "{bad}");
    }
}

#[test]
fn uninterpreted_attributes_may_be_non_utf8() {
    let body: &[u8] = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
a=tool:Ger\xe4t\r\nm=audio 4000 RTP/AVP 0\r\na=label:caf\xe9\r\na=x-\xff\r\n";
    let sdp = parse(body);
    assert_eq!(sdp.to_bytes(), body);
    let tool = sdp.attribute("tool").expect("a=tool");
    assert_eq!(
        (tool.value, tool.raw),
        (Some("\u{FFFD}"), &b"tool:Ger\xe4t"[..])
    );
    let label = media(&sdp, 0).attribute("label").expect("a=label");
    assert_eq!(label.raw, b"label:caf\xe9");
    let mut editor = sdp.editor();
    editor.set_connection(ip4(192, 0, 2, 1)).strip_ice();
    editor.set_rtcp(0, 4001, None).expect("media 0");
    let out = editor.to_bytes();
    for kept in [
        &b"a=tool:Ger\xe4t\r\n"[..],
        b"a=label:caf\xe9\r\n",
        b"a=x-\xff\r\n",
    ] {
        assert!(out.windows(kept.len()).any(|w| w == kept), "{kept:?} lost");
    }
    // The attributes the SBC reads must still be UTF-8.
    for name in [
        "rtcp:9 IN IP4 h\u{e4}",
        "candidate:1 1 UDP 1 h\u{e4} 9 typ host",
        "ice-ufrag:\u{e4}",
        "ice-pwd:\u{e4}",
        "ice-options:\u{e4}",
        "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:\u{e4}",
    ] {
        let mut body =
            b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\na=".to_vec();
        // `name` holds U+00E4; turn it into a lone Latin-1 byte.
        body.extend(name.chars().map(|c| c as u32 as u8));
        body.extend_from_slice(b"\r\n");
        let err = Sdp::parse(&body).expect_err(name);
        assert_eq!((err.status_code(), err.line()), (400, Some(5)), "{name}");
    }
}

#[test]
fn fields_allow_runs_of_spaces_everywhere() {
    let sdp = parse(
        "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP  0   8 \r\n\
         a=candidate:1  1 UDP   7 192.0.2.10 9 typ  host  raddr 192.0.2.1   rport 7 \r\n\
         a=crypto:1  AES_CM_128_HMAC_SHA1_80   inline:abc  KDR=1  \r\n",
    );
    let audio = media(&sdp, 0);
    assert_eq!(audio.formats().collect::<Vec<_>>(), ["0", "8"]);
    let c = audio
        .candidates()
        .next()
        .expect("a=candidate")
        .expect("valid");
    assert_eq!((c.component, c.priority, c.port, c.kind), (1, 7, 9, "host"));
    assert_eq!(
        (c.related_address, c.related_port),
        (Some("192.0.2.1"), Some(7))
    );
    let k = audio.crypto().next().expect("a=crypto").expect("valid");
    assert_eq!(
        (k.tag, k.suite, k.key_params, k.session_params),
        (1, "AES_CM_128_HMAC_SHA1_80", "inline:abc", Some("KDR=1"))
    );
}

#[test]
fn origin_name_tool_and_cnames_of_the_far_side_are_replaced() {
    let body = "v=0\r\n\
o=alice-pbx 2890844526 2890844527 IN IP4 10.0.0.1\r\n\
s=Asterisk PBX 18.2\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
a=tool:Asterisk PBX 18.2\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=ssrc:1234 cname:alice@10.0.0.1:5060\r\n\
a=ssrc:1234 msid:stream track\r\n\
a=tool:libwebrtc\r\n\
a=sendrecv\r\n";
    let sdp = Sdp::parse(body.as_bytes()).expect("parses");
    let mut editor = sdp.editor();
    editor
        .set_origin("-", 77, 5)
        .set_session_name("-")
        .remove_attributes(&["tool"])
        .mask_ssrc_cnames(|cname| format!("masked{}", cname.len()));
    let out = String::from_utf8(editor.to_bytes()).expect("utf8");
    assert_eq!(
        out,
        "v=0\r\n\
o=- 77 5 IN IP4 10.0.0.1\r\n\
s=-\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=ssrc:1234 cname:masked19\r\n\
a=ssrc:1234 msid:stream track\r\n\
a=sendrecv\r\n"
    );
    let again = Sdp::parse(out.as_bytes()).expect("the result parses");
    assert_eq!(again.origin().session_version, 5);
}
