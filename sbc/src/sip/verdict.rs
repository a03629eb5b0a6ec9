//! The checks a server makes on a request that parsed, before it does
//! anything with it (RFC 3261 §8.2.2 and §16.3), and the resulting [`Verdict`].
//!
//! Parsing decides whether the bytes are a SIP message (400, 505, or drop);
//! this decides whether the SBC will serve it: an unsupported Request-URI
//! scheme (416), option tags it does not implement in Require or
//! Proxy-Require (420 with Unsupported), Max-Forwards exhausted at a
//! forwarding hop (483), and, unless policy relays them, extension methods
//! (501, §8.2.1). ACKs are never answered, so a failing ACK is dropped.

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
    /// The methods served, for the `Allow` header of a 501.
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
            allow: "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY, MESSAGE"
                .into(),
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

    // §16.3 step 3: no hops left.
    if policy.forwarding && msg.max_forwards() == Some(0) {
        return Some(Rejection::new(483, String::new()));
    }
    None
}
