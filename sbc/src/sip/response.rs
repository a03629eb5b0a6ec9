//! Building responses to requests (RFC 3261 §8.2.6): the status line, then
//! the Via stack, From, To (with a tag added when the request's To has none),
//! Call-ID and CSeq copied from the request, then any extra headers, then
//! `Content-Length: 0`.
//!
//! Two entry points: [`respond`] for a request that parsed, and
//! [`reject_malformed`] for one that did not, where the SBC still owes the
//! sender a 400 naming the defect (RFC 4475 §3.1.2). The second works on the
//! raw bytes: it copies those five headers line by line as received (the
//! sender's own bytes go back to the sender, nothing else is reflected) and
//! gives up, returning `None`, when there is no Via to route the answer by.
//!
//! Pure: the caller supplies the To tag (from its RNG) and sends the bytes.

use super::error::{Rejection, standard_reason};
use super::header::NameAddr;
use super::message::{Limits, Message};
use super::name::HeaderName;

/// The headers a response copies from its request (§8.2.6.2): Via, From,
/// To, Call-ID and CSeq. Also what a UAS must keep of a request to answer
/// it later.
pub fn copied_to_responses(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
    )
}

/// A response to `request` with this status, reason phrase and extra headers
/// (`(name, value)`, e.g. `Unsupported`, `Allow`, `Retry-After`). `to_tag` is
/// added to To when the request's To carries no tag and the status is not
/// 100 (§8.2.6.2: 100 Trying never adds a tag).
pub fn respond(
    request: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(HeaderName, &str)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, status, reason);
    for h in request.headers() {
        let add_tag = h.name == HeaderName::To
            && status != 100
            && request.to().is_some_and(|to| to.tag().is_none());
        if copied_to_responses(h.name) {
            header(&mut out, h.name, h.value, to_tag.filter(|_| add_tag));
        }
    }
    finish(&mut out, extra);
    out
}

/// A response for a rejection decided by [`super::check`] or by parsing.
pub fn respond_rejection(
    request: &Message,
    rejection: &Rejection,
    to_tag: Option<&str>,
) -> Vec<u8> {
    let extra: Vec<(HeaderName, &str)> = rejection
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    respond(
        request,
        rejection.status,
        &rejection.reason_phrase(),
        to_tag,
        &extra,
    )
}

/// The stateless answer to a request that failed to parse, built from its
/// raw bytes, or `None` when it has no Via line (the answer could not be
/// routed) or its header section is not even line-delimited.
///
/// The copied lines are re-emitted as `Name: value` (folding joined into one
/// line) so that a broken line ending or a stray CR can't corrupt the answer.
/// A To line without `;tag=` gets `to_tag` appended.
pub fn reject_malformed(datagram: &[u8], rejection: &Rejection, to_tag: &str) -> Option<Vec<u8>> {
    let head_len = datagram.len().min(Limits::default().max_message_bytes);
    let head = &datagram[..head_len];
    let mut out = Vec::with_capacity(512);
    status_line(&mut out, rejection.status, &rejection.reason_phrase());
    let mut saw_via = false;
    let mut lines = head
        .split(|&b| b == b'\n')
        .skip_while(|l| l.iter().all(|&b| b == b'\r'))
        .skip(1)
        .peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        if !matches!(
            name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            continue;
        }
        // Join continuation lines into one value.
        let mut value: Vec<u8> = line[colon + 1..].trim_ascii().to_vec();
        while let Some(next) =
            lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        {
            value.push(b' ');
            value.extend_from_slice(next.strip_suffix(b"\r").unwrap_or(next).trim_ascii());
        }
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            continue;
        }
        saw_via |= name == HeaderName::Via;
        let needs_tag = name == HeaderName::To && !contains_tag(&value);
        header(&mut out, name, &value, needs_tag.then_some(to_tag));
    }
    if !saw_via {
        return None;
    }
    let extra: Vec<(HeaderName, &str)> = rejection
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    finish(&mut out, &extra);
    Some(out)
}

/// Whether a To value already carries a tag; for a value too broken to
/// parse, a textual `;tag=` decides.
fn contains_tag(value: &[u8]) -> bool {
    match NameAddr::parse(value) {
        Ok(addr) => addr.tag().is_some(),
        Err(_) => value
            .windows(5)
            .any(|w| w[0] == b';' && w[1..4].eq_ignore_ascii_case(b"tag") && w[4] == b'='),
    }
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    let status = status.clamp(100, 699);
    let reason = if reason.is_empty() {
        standard_reason(status)
    } else {
        reason
    };
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    // A reason phrase is one line: never let a caller's text break it.
    out.extend(
        reason
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: HeaderName, value: &[u8], tag: Option<&str>) {
    out.extend_from_slice(name.canonical().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    if let Some(tag) = tag {
        out.extend_from_slice(b";tag=");
        out.extend_from_slice(tag.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn finish(out: &mut Vec<u8>, extra: &[(HeaderName, &str)]) {
    for (name, value) in extra {
        header(out, *name, value.as_bytes(), None);
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{ServerPolicy, Verdict, check};

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
Via: SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1,\r\n SIP/2.0/UDP 192.0.2.1\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Require: nothingSupportsThis\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn response_copies_the_dialog_headers_and_tags_to() {
        let request = Message::parse(INVITE).expect("parses");
        let bytes = respond(&request, 486, "", Some("sbc7"), &[]);
        let response = Message::parse(&bytes).expect("response parses");
        assert_eq!(response.status(), Some(486));
        assert_eq!(response.reason(), Some(b"Busy Here".as_slice()));
        assert_eq!(response.vias().count(), 3);
        assert_eq!(
            response
                .to()
                .and_then(|t| t.tag().map(str::to_owned))
                .as_deref(),
            Some("sbc7")
        );
        assert_eq!(
            response
                .from()
                .and_then(|f| f.tag().map(str::to_owned))
                .as_deref(),
            Some("1928301774")
        );
        assert_eq!(response.call_id(), request.call_id());
        assert_eq!(response.cseq(), request.cseq());
        assert!(response.header(HeaderName::Contact).is_none());
        assert!(response.body().is_empty());
    }

    #[test]
    fn trying_never_adds_a_tag() {
        let request = Message::parse(INVITE).expect("parses");
        let bytes = respond(&request, 100, "", Some("sbc7"), &[]);
        let response = Message::parse(&bytes).expect("parses");
        assert_eq!(response.to().and_then(|t| t.tag().map(str::to_owned)), None);
    }

    #[test]
    fn a_420_carries_unsupported() {
        let request = Message::parse(INVITE).expect("parses");
        let Verdict::Reject(rejection) = check(&request, &ServerPolicy::default()) else {
            panic!("Require: nothingSupportsThis must be rejected");
        };
        let response =
            Message::parse(&respond_rejection(&request, &rejection, Some("t"))).expect("parses");
        assert_eq!(response.status(), Some(420));
        assert_eq!(
            response.header(HeaderName::Unsupported),
            Some(b"nothingSupportsThis".as_slice())
        );
    }

    #[test]
    fn malformed_requests_get_a_routable_400() {
        let clerr = include_bytes!("../../tests/fixtures/corpus/rfc4475/clerr.dat");
        let error = Message::parse(clerr).expect_err("clerr is malformed");
        let Verdict::Reject(rejection) = error.response() else {
            panic!("clerr deserves an answer");
        };
        let bytes = reject_malformed(clerr, &rejection, "sbc1").expect("has a Via");
        let response = Message::parse(&bytes).expect("the answer itself is well formed");
        assert_eq!(response.status(), Some(400));
        assert_eq!(
            response.reason(),
            Some(b"Bad Request (Content-Length exceeds body)".as_slice())
        );
        assert!(response.top_via().is_some());
        assert!(response.to().is_some_and(|t| t.tag().is_some()));

        // No Via: nothing to route an answer by.
        let no_via = include_bytes!("../../tests/fixtures/corpus/rfc4475/test.dat");
        assert!(reject_malformed(no_via, &rejection, "sbc1").is_none());
    }

    #[test]
    fn every_rfc4475_request_answer_is_well_formed() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/rfc4475");
        for entry in std::fs::read_dir(dir).expect("corpus") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "dat") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("fixture");
            let Err(error) = Message::parse(&bytes) else {
                continue;
            };
            if let Verdict::Reject(rejection) = error.response()
                && let Some(answer) = reject_malformed(&bytes, &rejection, "t1")
            {
                let parsed = Message::parse(&answer);
                // Copying a request's malformed Via/From/To may leave the
                // answer malformed too; it must then still be a response.
                if let Err(e) = &parsed {
                    assert_eq!(
                        e.shape,
                        crate::sip::error::Shape::Response,
                        "{}",
                        path.display()
                    );
                }
            }
        }
    }
}
