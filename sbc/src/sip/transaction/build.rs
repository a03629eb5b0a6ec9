//! Messages the transaction layer writes itself: the ACK for a non-2xx final
//! response (§17.1.1.3), the 100 Trying of a server INVITE transaction
//! (§17.2.1, §8.2.6.1), and the CANCEL the TU may ask for (§9.1). Values are copied from parsed messages, so they are
//! valid header values already.

use crate::sip::{HeaderName, Message};

/// The ACK for a non-2xx final `response` to `invite` (§17.1.1.3): the
/// INVITE's Request-URI, single top Via, Route set, From, Call-ID and CSeq
/// number; the response's To (with its tag).
pub(super) fn ack(invite: &Message, response: &Message) -> Vec<u8> {
    echo_request("ACK", invite, response)
}

/// The CANCEL for `invite` (§9.1): like the ACK, but every field, To
/// included, from the INVITE.
pub(super) fn cancel(invite: &Message) -> Vec<u8> {
    echo_request("CANCEL", invite, invite)
}

/// A request that echoes `invite` as §9.1 and §17.1.1.3 prescribe, with the
/// To header taken from `to_from`.
fn echo_request(method: &str, invite: &Message, to_from: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(invite.request_uri_bytes().unwrap_or_default());
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Some(via) = invite.values(HeaderName::Via).next() {
        line(&mut out, "Via", via);
    }
    for route in invite.headers().filter(|h| h.name == HeaderName::Route) {
        line(&mut out, "Route", route.value);
    }
    line(&mut out, "Max-Forwards", b"70");
    copy(&mut out, invite, HeaderName::From, "From");
    copy(&mut out, to_from, HeaderName::To, "To");
    copy(&mut out, invite, HeaderName::CallId, "Call-ID");
    let seq = invite.cseq().map(|c| c.seq).unwrap_or_default();
    line(&mut out, "CSeq", format!("{seq} {method}").as_bytes());
    line(&mut out, "Content-Length", b"0");
    out.extend_from_slice(b"\r\n");
    out
}

/// The 100 Trying for `request` (§8.2.6.1): its Vias, From, To (no tag
/// added), Call-ID, CSeq and Timestamp.
pub(super) fn trying(request: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"SIP/2.0 100 Trying\r\n");
    for via in request.headers().filter(|h| h.name == HeaderName::Via) {
        line(&mut out, "Via", via.value);
    }
    copy(&mut out, request, HeaderName::From, "From");
    copy(&mut out, request, HeaderName::To, "To");
    copy(&mut out, request, HeaderName::CallId, "Call-ID");
    copy(&mut out, request, HeaderName::CSeq, "CSeq");
    copy(&mut out, request, HeaderName::Timestamp, "Timestamp");
    line(&mut out, "Content-Length", b"0");
    out.extend_from_slice(b"\r\n");
    out
}

fn copy(out: &mut Vec<u8>, from: &Message, name: HeaderName, written: &str) {
    if let Some(value) = from.header(name) {
        line(out, written, value);
    }
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
