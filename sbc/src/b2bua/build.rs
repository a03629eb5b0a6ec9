//! Writing the messages the B2BUA sends, with topology hiding (pure).
//!
//! Every message on a leg is written from that leg's own dialog state: the
//! start line, Via (ours, with a fresh branch), Max-Forwards, From, To,
//! Call-ID, CSeq, Route and Contact are regenerated and never copied from the
//! other leg. The other headers of the message being relayed are copied,
//! except those the header policy strips (the configured list,
//! `P-Asserted-Identity` unless trusted, `Server`/`User-Agent` removed or
//! rewritten) and those that can only carry the other side's topology
//! (Record-Route, Path, Service-Route, Reply-To...). Bodies are supplied by
//! the caller (SDP already anchored).

use std::io::Write;

use crate::config::{HeaderPolicy, HeaderRewrite, PaiPolicy};
use crate::sip::{HeaderName, Message};

/// Headers the B2BUA writes itself on every message, or that only carry the
/// other side's topology: never copied across.
fn regenerated(name: HeaderName, raw: &[u8]) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::Contact
            | HeaderName::Route
            | HeaderName::RecordRoute
            | HeaderName::MaxForwards
            | HeaderName::ContentLength
            | HeaderName::RAck
            | HeaderName::ReplyTo
    ) || [
        "path",
        "service-route",
        "p-visited-network-id",
        "p-charging-vector",
    ]
    .iter()
    .any(|n| raw.eq_ignore_ascii_case(n.as_bytes()))
}

/// Headers that describe a body (RFC 3261 §20.11-20.15): they cross only
/// with one, so a body the SBC dropped leaves no Content-Type naming it.
fn describes_body(name: HeaderName, raw: &[u8]) -> bool {
    matches!(
        name,
        HeaderName::ContentType | HeaderName::ContentDisposition | HeaderName::ContentEncoding
    ) || raw.eq_ignore_ascii_case(b"content-language")
}

/// Appends the headers of `src` that may cross under `policy`, byte for
/// byte: a header the SBC does not interpret crosses with whatever bytes it
/// arrived with (a non-UTF-8 display name included). `body` is what the
/// message being written carries: without one, no Content-* header crosses.
pub(crate) fn copy_headers(out: &mut Vec<u8>, src: &Message, policy: &HeaderPolicy, body: &[u8]) {
    for h in src.headers() {
        if regenerated(h.name, h.name_bytes)
            || (body.is_empty() && describes_body(h.name, h.name_bytes))
            || policy
                .strip
                .iter()
                .any(|s| s.as_bytes().eq_ignore_ascii_case(h.name_bytes))
        {
            continue;
        }
        let rewrite = match h.name {
            HeaderName::PAssertedIdentity | HeaderName::PPreferredIdentity
                if policy.p_asserted_identity == PaiPolicy::Strip =>
            {
                continue;
            }
            // Either header names a product in requests and responses
            // alike (a UAS often sends User-Agent in its responses).
            HeaderName::UserAgent => &policy.user_agent,
            HeaderName::Server => &policy.server,
            _ => {
                header(out, h.name_bytes, h.value);
                continue;
            }
        };
        match rewrite {
            HeaderRewrite::Remove => {}
            HeaderRewrite::Keep => header(out, h.name_bytes, h.value),
            HeaderRewrite::Rewrite(text) => header(out, h.name_bytes, text.as_bytes()),
        }
    }
}

/// One `Name: value` line; a CR or LF in the value becomes a space, so a
/// copied header can't smuggle a line break.
pub(crate) fn header(out: &mut Vec<u8>, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    out.extend_from_slice(name.as_ref());
    out.extend_from_slice(b": ");
    out.extend(
        value
            .as_ref()
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// The dialog-forming parts of a request on one leg.
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a str,
    pub(crate) request_uri: &'a str,
    /// `SIP/2.0/UDP 203.0.113.1:5060` (our sent-by on this leg).
    pub(crate) via_sent_by: &'a str,
    pub(crate) branch: &'a str,
    pub(crate) max_forwards: u8,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) call_id: &'a str,
    pub(crate) cseq: u32,
    pub(crate) route_set: &'a [String],
    pub(crate) contact: Option<&'a str>,
}

/// A request: the regenerated head, the headers `src` may pass, and `body`
/// (with `src`'s Content-Type, which is copied like any header).
pub(crate) fn request(
    head: &RequestHead<'_>,
    src: Option<&Message>,
    policy: &HeaderPolicy,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(768);
    let _ = write!(out, "{} {} SIP/2.0\r\n", head.method, head.request_uri);
    // Over TLS the peer may send its requests back over our connection
    // (RFC 5923 §6), as we accept on its connections.
    let alias = if head.via_sent_by.starts_with("SIP/2.0/TLS ") {
        ";alias"
    } else {
        ""
    };
    let _ = write!(
        out,
        "Via: {};branch={};rport{alias}\r\n",
        head.via_sent_by, head.branch
    );
    let _ = write!(out, "Max-Forwards: {}\r\n", head.max_forwards);
    header(&mut out, "From", head.from);
    header(&mut out, "To", head.to);
    header(&mut out, "Call-ID", head.call_id);
    let _ = write!(out, "CSeq: {} {}\r\n", head.cseq, head.method);
    for route in head.route_set {
        header(&mut out, "Route", route);
    }
    if let Some(contact) = head.contact {
        header(&mut out, "Contact", contact);
    }
    for (name, value) in extra {
        header(&mut out, name, value);
    }
    if let Some(src) = src {
        copy_headers(&mut out, src, policy, body);
    }
    finish(out, body)
}

/// A response on the leg whose request is `request`: its Via, From, To (with
/// `to_tag` added if it has none), Call-ID and CSeq, its Record-Route in
/// order on a 101-299 (RFC 3261 §12.1.1: the proxies that record-routed the
/// request learn the dialog's route set from it; they are this leg's own
/// proxies, so nothing crosses), then our Contact if given, then what `src`
/// (the response being relayed) may pass, and `body`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn response(
    request: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact: Option<&str>,
    src: Option<&Message>,
    policy: &HeaderPolicy,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(768);
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
    for h in request.headers() {
        let value = h.value;
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                header(&mut out, h.name.canonical(), value);
            }
            HeaderName::RecordRoute if (101..300).contains(&status) => {
                header(&mut out, h.name.canonical(), value);
            }
            HeaderName::To => {
                let has_tag = request.to().is_some_and(|t| t.tag().is_some());
                match to_tag {
                    Some(tag) if !has_tag && status > 100 => {
                        let mut tagged = value.to_vec();
                        tagged.extend_from_slice(b";tag=");
                        tagged.extend_from_slice(tag.as_bytes());
                        header(&mut out, "To", tagged)
                    }
                    _ => header(&mut out, "To", value),
                }
            }
            _ => {}
        }
    }
    if let Some(contact) = contact {
        header(&mut out, "Contact", contact);
    }
    for (name, value) in extra {
        header(&mut out, name, value);
    }
    if let Some(src) = src {
        copy_headers(&mut out, src, policy, body);
    }
    finish(out, body)
}

/// The reason phrase of a response relayed from the other leg: the
/// standard phrase of its code, never the far side's. A phrase is free text
/// (RFC 3261 §21: informative only) where PBXs put their product name and
/// version, or a host name; the cause that peers act on crosses in the
/// status code and in the `Reason` header (RFC 3326), which is copied.
pub(crate) fn relayed_reason(status: u16) -> &'static str {
    crate::sip::error::standard_reason(status)
}

fn finish(mut out: Vec<u8>, body: &[u8]) -> Vec<u8> {
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@10.0.0.9 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@10.0.0.1>;tag=a1\r\n\
To: <sip:bob@10.0.0.9>\r\n\
Call-ID: secret@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.1>\r\n\
Record-Route: <sip:10.0.0.2;lr>\r\n\
P-Asserted-Identity: <sip:alice@10.0.0.1>\r\n\
User-Agent: InternalPBX 1.0\r\n\
X-Custom: kept\r\n\
Organization: Internal Corp\r\n\
Supported: 100rel\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn nothing_of_the_source_leg_topology_is_copied() {
        let src = Message::parse(INVITE).expect("parses");
        let policy = HeaderPolicy {
            strip: vec!["Organization".into()],
            ..HeaderPolicy::default()
        };
        let head = RequestHead {
            method: "INVITE",
            request_uri: "sip:bob@203.0.113.9:5060",
            via_sent_by: "SIP/2.0/UDP 203.0.113.1:5060",
            branch: "z9hG4bKsbc",
            max_forwards: 69,
            from: "Alice <sip:alice@203.0.113.1>;tag=b1",
            to: "<sip:bob@203.0.113.9>",
            call_id: "0123abcd",
            cseq: 1,
            route_set: &[],
            contact: Some("<sip:sbc@203.0.113.1:5060>"),
        };
        let out = request(&head, Some(&src), &policy, &[], b"");
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert!(!text.contains("10.0.0."), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(
            !text.contains("InternalPBX") && !text.contains("Internal Corp"),
            "{text}"
        );
        assert!(
            text.contains("X-Custom: kept\r\n") && text.contains("Supported: 100rel\r\n"),
            "{text}"
        );
        let msg = Message::parse(&out).expect("our request parses");
        assert_eq!(msg.max_forwards(), Some(69));
        assert_eq!(msg.top_via().and_then(|v| v.rport()), Some(None));
    }

    #[test]
    fn responses_answer_their_own_leg() {
        let req = Message::parse(INVITE).expect("parses");
        let relayed = Message::parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@192.0.2.1>;tag=q\r\nTo: <sip:b@192.0.2.2>;tag=r\r\nCall-ID: other\r\nCSeq: 7 INVITE\r\nServer: Far 2.0\r\nRSeq: 1\r\nRequire: 100rel\r\nContent-Length: 0\r\n\r\n").expect("parses");
        let out = response(
            &req,
            180,
            "Ringing",
            Some("t9"),
            Some("<sip:sbc@198.51.100.1>"),
            Some(&relayed),
            &HeaderPolicy::default(),
            &[],
            b"",
        );
        let msg = Message::parse(&out).expect("parses");
        assert_eq!(msg.call_id(), Some(b"secret@10.0.0.1".as_slice()));
        assert_eq!(
            msg.to().and_then(|t| t.tag().map(str::to_owned)).as_deref(),
            Some("t9")
        );
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            !text.contains("192.0.2") && !text.contains("Far 2.0"),
            "{text}"
        );
        assert!(
            text.contains("RSeq: 1\r\n") && text.contains("Require: 100rel\r\n"),
            "{text}"
        );
    }

    #[test]
    fn dialog_forming_responses_carry_the_request_record_route_in_order() {
        let two = String::from_utf8_lossy(INVITE).replace(
            "Record-Route: <sip:10.0.0.2;lr>\r\n",
            "Record-Route: <sip:10.0.0.2;lr;ftag=a1>\r\nRecord-Route: <sip:10.0.0.3;lr>, <sip:10.0.0.4;lr>\r\n",
        );
        let req = Message::parse(two.as_bytes()).expect("parses");
        let policy = HeaderPolicy::default();
        for (status, carries) in [(100, false), (180, true), (200, true), (486, false)] {
            let out = response(&req, status, "x", Some("t9"), None, None, &policy, &[], b"");
            let msg = Message::parse(&out).expect("parses");
            let rr: Vec<_> = msg
                .values(HeaderName::RecordRoute)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            let expected: Vec<String> = if carries {
                vec![
                    "<sip:10.0.0.2;lr;ftag=a1>".into(),
                    "<sip:10.0.0.3;lr>".into(),
                    "<sip:10.0.0.4;lr>".into(),
                ]
            } else {
                vec![]
            };
            assert_eq!(rr, expected, "{status}");
        }
    }

    #[test]
    fn headers_the_sbc_does_not_read_cross_byte_for_byte() {
        // Latin-1 (not UTF-8) in an unknown header and in a Subject.
        let mut raw = INVITE.to_vec();
        let at = raw
            .windows(9)
            .position(|w| w == b"X-Custom:")
            .expect("has X-Custom");
        raw.splice(
            at..at,
            b"X-Name: M\xfcller\r\nSubject: Gr\xfc\xdfe\r\n"
                .iter()
                .copied(),
        );
        let src = Message::parse(&raw).expect("parses");
        let mut out = Vec::new();
        copy_headers(&mut out, &src, &HeaderPolicy::default(), b"v=0");
        let find = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
        assert!(
            find(b"X-Name: M\xfcller\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(find(b"Subject: Gr\xfc\xdfe\r\n"));
        assert!(!find("\u{FFFD}".as_bytes()));
        let mut line = Vec::new();
        header(&mut line, "X-Evil", b"a\r\nInjected: 1");
        assert_eq!(line, b"X-Evil: a  Injected: 1\r\n");
    }
}
