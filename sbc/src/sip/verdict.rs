//! The checks a server makes on a request that parsed, before it does
//! anything with it (RFC 3261 §8.2.2 and §16.3), and the resulting [`Verdict`].
//!
//! Parsing decides whether the bytes are a SIP message (400, 505, or drop);
//! this decides whether the SBC will serve it: an unsupported Request-URI
//! scheme (416), option tags it does not implement in Require or
//! Proxy-Require (420 with Unsupported), Max-Forwards exhausted at a
//! forwarding hop (483), and, unless policy relays them, extension methods
//! (501, §8.2.1), a body of a session request that is not SDP (415 with
//! `Accept`, §8.2.3) and a new INVITE without a Contact to reach its caller
//! (400, §8.1.1.8). ACKs are never answered, so a failing ACK is dropped.
//!
//! The daemon and `sbc inspect` both run these checks, so what inspect says
//! of a captured message is what the daemon answers.

use super::error::{DropReason, Rejection, Verdict};
use super::message::{Message, Method};
use super::name::HeaderName;
use super::uri::Scheme;

/// What the server supports. The defaults are what the SBC's B2BUA handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Option tags the SBC implements (compared case-insensitively).
    pub supported: Vec<String>,
    /// Whether `tel:` Request-URIs are served (sip: and sips: always are).
    pub accept_tel: bool,
    /// Whether the request would be forwarded (so Max-Forwards 0 is a 483).
    pub forwarding: bool,
    /// Whether extension methods are relayed; when false they get 501.
    pub relay_unknown_methods: bool,
    /// The methods served, for the `Allow` header of a 501, a 405 and the
    /// answer to OPTIONS: what the SBC takes out of dialog, plus the
    /// in-dialog methods of a call. REFER, NOTIFY and MESSAGE are relayed
    /// inside a call's dialogs but refused (405) outside one, so they are
    /// not listed.
    pub allow: String,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        Self {
            // 100rel and timer are relayed end to end; replaces is honoured
            // by the call core.
            supported: ["100rel", "timer", "replaces"].map(String::from).to_vec(),
            accept_tel: true,
            forwarding: true,
            relay_unknown_methods: false,
            allow: "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO".into(),
        }
    }
}

/// What the server does with a parsed message. Responses are accepted here
/// (their fate is the transaction layer's); requests get the checks above,
/// in the order RFC 3261 §8.2 gives them (method, then
/// Request-URI scheme, then extensions), then the forwarding check.
pub fn check(msg: &Message, policy: &ServerPolicy) -> Verdict {
    let Some(method) = msg.method() else {
        return Verdict::Accept;
    };
    let rejection = check_request(msg, method, policy);
    match rejection {
        None => Verdict::Accept,
        Some(r) if method == Method::Ack => Verdict::Drop(DropReason::Ack(r.status)),
        Some(r) => Verdict::Reject(r),
    }
}

fn check_request(msg: &Message, method: Method, policy: &ServerPolicy) -> Option<Rejection> {
    // §8.2.1: a method the SBC does not implement (RFC 4475 intmeth, esc02).
    if method == Method::Extension && !policy.relay_unknown_methods {
        return Some(Rejection {
            status: 501,
            detail: String::new(),
            headers: vec![(HeaderName::Allow, policy.allow.clone())],
        });
    }

    // §8.2.2.1: a scheme we do not understand.
    let scheme_ok = match msg.request_uri().map(|uri| uri.scheme()) {
        Some(Scheme::Sip | Scheme::Sips) => true,
        Some(Scheme::Tel) => policy.accept_tel,
        Some(Scheme::Other(_)) | None => false,
    };
    if !scheme_ok {
        return Some(Rejection::new(416, String::new()));
    }

    // §8.2.2.3 and §16.3: Require and Proxy-Require name extensions the
    // request cannot be served without; neither applies to CANCEL or ACK.
    if !matches!(method, Method::Cancel | Method::Ack) {
        let mut unsupported: Vec<String> = Vec::new();
        for name in [HeaderName::Require, HeaderName::ProxyRequire] {
            for tag in msg.option_tags(name) {
                let known = policy.supported.iter().any(|s| s.eq_ignore_ascii_case(tag));
                if !known && !unsupported.iter().any(|u| u.eq_ignore_ascii_case(tag)) {
                    unsupported.push(tag.to_owned());
                }
            }
        }
        if !unsupported.is_empty() {
            return Some(Rejection {
                status: 420,
                detail: String::new(),
                headers: vec![(HeaderName::Unsupported, unsupported.join(", "))],
            });
        }
    }

    // §8.2.3: the bodies the SBC reads itself are SDP offers and answers.
    if let Some(rejection) = check_body(msg, method) {
        return Some(rejection);
    }

    // §8.1.1.8: a dialog-creating INVITE names where its caller is reached.
    let new_invite = method == Method::Invite && msg.to().is_none_or(|to| to.tag().is_none());
    if new_invite
        && !msg
            .contacts()
            .next()
            .is_some_and(|c| matches!(c, Ok(super::header::Contact::Addr(_))))
    {
        return Some(Rejection::new(400, "Missing Contact".into()));
    }

    // §16.3 step 3: no hops left.
    if policy.forwarding && msg.max_forwards() == Some(0) {
        return Some(Rejection::new(483, String::new()));
    }
    None
}

/// §8.2.3 for the methods whose body the SBC rewrites (INVITE, UPDATE,
/// PRACK): a body must say what it is (§20.15), be SDP (415 with `Accept`),
/// and not be encoded (415 with `Accept-Encoding`). Multipart bodies (SIP-I
/// ISUP beside the SDP) are refused too: SDP inside them would cross
/// unanchored. Other methods' bodies (INFO, MESSAGE, NOTIFY) are relayed.
fn check_body(msg: &Message, method: Method) -> Option<Rejection> {
    if !matches!(method, Method::Invite | Method::Update | Method::Prack) || msg.body().is_empty() {
        return None;
    }
    if msg.header(HeaderName::ContentType).is_none() {
        return Some(Rejection::new(400, "Missing Content-Type".into()));
    }
    // A Content-Type that is not a media type is a bad request, not an
    // unsupported one.
    let Some(content_type) = msg.content_type() else {
        return Some(Rejection::new(400, "Malformed Content-Type".into()));
    };
    if !content_type.is("application", "sdp") {
        return Some(Rejection {
            status: 415,
            detail: String::new(),
            headers: vec![(HeaderName::Accept, "application/sdp".into())],
        });
    }
    let encoded = msg
        .values(HeaderName::ContentEncoding)
        .any(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Some(Rejection {
            status: 415,
            detail: String::new(),
            headers: vec![(HeaderName::AcceptEncoding, "identity".into())],
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str, body: &str) -> Message {
        let text = format!(
            "INVITE sip:bob@198.51.100.9 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKv1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@192.0.2.1>;tag=a\r\n\
To: <sip:bob@198.51.100.9>\r\n\
Call-ID: v1\r\n\
CSeq: 1 INVITE\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Message::parse(text.as_bytes()).expect("parses")
    }

    fn verdict(msg: &Message) -> String {
        check(msg, &ServerPolicy::default()).to_string()
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const CONTACT: &str = "Contact: <sip:alice@192.0.2.1>\r\n";

    #[test]
    fn an_sdp_invite_with_a_contact_is_accepted() {
        let msg = invite(&format!("{CONTACT}Content-Type: application/sdp\r\n"), SDP);
        assert_eq!(verdict(&msg), "accept");
        assert_eq!(verdict(&invite(CONTACT, "")), "accept", "late offer");
    }

    #[test]
    fn a_body_that_is_not_sdp_gets_415_with_accept() {
        let msg = invite(
            &format!("{CONTACT}Content-Type: multipart/mixed;boundary=b\r\n"),
            "--b\r\n\r\nx\r\n--b--\r\n",
        );
        let Verdict::Reject(r) = check(&msg, &ServerPolicy::default()) else {
            panic!("refused")
        };
        assert_eq!(r.status, 415);
        assert_eq!(
            r.headers,
            vec![(HeaderName::Accept, "application/sdp".to_owned())]
        );
        let encoded = invite(
            &format!("{CONTACT}Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n"),
            SDP,
        );
        let Verdict::Reject(r) = check(&encoded, &ServerPolicy::default()) else {
            panic!("refused")
        };
        assert_eq!(
            (r.status, r.headers),
            (
                415,
                vec![(HeaderName::AcceptEncoding, "identity".to_owned())]
            )
        );
        assert!(verdict(&invite(CONTACT, SDP)).starts_with("answer 400"));
        // A Content-Type that is not a media type never gets this far: the
        // parser refuses it with 400, not 415.
        let bad = format!(
            "INVITE sip:bob@198.51.100.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKv1\r\nMax-Forwards: 70\r\nFrom: <sip:a@192.0.2.1>;tag=a\r\nTo: <sip:b@198.51.100.9>\r\nCall-ID: v1\r\nCSeq: 1 INVITE\r\n{CONTACT}Content-Type: sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        );
        let error = Message::parse(bad.as_bytes()).expect_err("malformed");
        assert!(
            matches!(error.response(), Verdict::Reject(r) if r.status == 400),
            "{error:?}"
        );
    }

    #[test]
    fn a_new_invite_without_a_contact_gets_400_and_a_reinvite_is_relayed() {
        assert_eq!(
            verdict(&invite("", "")),
            "answer 400 Bad Request (Missing Contact)"
        );
        let reinvite = invite("", "").to_bytes();
        let reinvite = String::from_utf8_lossy(&reinvite).replace(
            "To: <sip:bob@198.51.100.9>",
            "To: <sip:bob@198.51.100.9>;tag=b",
        );
        let msg = Message::parse(reinvite.as_bytes()).expect("parses");
        assert_eq!(verdict(&msg), "accept");
    }
}
