//! Matching keys (§17.1.3, §17.2.3).
//!
//! A key is a byte string built into a reused scratch buffer, so a lookup
//! allocates nothing; a transaction files an owned copy of its key. Fields
//! are separated by NUL, which no SIP token, host or header value contains.

use std::io::Write;

use super::{Kind, State, TransactionError, Tx};
use crate::sip::message::{Message, Method};

/// The RFC 3261 magic cookie: a branch starting with it is unique (§8.1.1.7).
const MAGIC_COOKIE: &str = "z9hG4bK";

/// What the server-side key of a request left to check on the transaction.
#[derive(Clone, Copy, Debug)]
pub(super) struct Matched<'a> {
    /// The branch lacks the magic cookie: RFC 2543 matching, whose key leaves
    /// the To tag out.
    rfc2543: bool,
    /// The request's To tag.
    pub(super) to_tag: Option<&'a str>,
}

impl Matched<'_> {
    /// Whether a transaction found by key also matches on the To tag (RFC
    /// 2543 rules only): an ACK carries the tag of the final response the
    /// transaction sent, anything else the tag of the original request.
    pub(super) fn tags_agree(self, method: Method, tx: Option<&Tx>) -> bool {
        let Some(tx) = tx else {
            return false;
        };
        if !self.rfc2543 {
            return true;
        }
        let expected = match method {
            Method::Ack if tx.kind == Kind::InviteServer && tx.state != State::Proceeding => {
                tx.response_tag.as_deref()
            }
            _ => tx.to_tag.as_deref(),
        };
        expected == self.to_tag
    }
}

/// Client key of a request we send: top Via branch and method.
pub(super) fn client_key_of_request(
    request: &Message,
    out: &mut Vec<u8>,
) -> Result<(), TransactionError> {
    let via = request
        .top_via()
        .ok_or(TransactionError::Missing("a Via"))?;
    let branch = via
        .branch()
        .ok_or(TransactionError::Missing("a branch in the top Via"))?;
    let method = request.method_bytes().ok_or(TransactionError::WrongKind {
        expected: "request",
    })?;
    client_key(branch, method, out);
    Ok(())
}

/// Client key of a received response: top Via branch and CSeq method
/// (§17.1.3).
pub(super) fn client_key_of_response(
    response: &Message,
    out: &mut Vec<u8>,
) -> Result<(), TransactionError> {
    let via = response
        .top_via()
        .ok_or(TransactionError::Missing("a Via"))?;
    let branch = via
        .branch()
        .ok_or(TransactionError::Missing("a branch in the top Via"))?;
    let cseq = response.cseq().ok_or(TransactionError::Missing("CSeq"))?;
    client_key(branch, cseq.method.as_bytes(), out);
    Ok(())
}

pub(super) fn client_key(branch: &str, method: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(branch.as_bytes());
    out.push(0);
    out.extend_from_slice(method);
}

/// Server key of a received request (§17.2.3), ACK filed under INVITE.
pub(super) fn server_key<'a>(
    request: &'a Message,
    out: &mut Vec<u8>,
) -> Result<Matched<'a>, TransactionError> {
    let method = request.method_bytes().ok_or(TransactionError::WrongKind {
        expected: "request",
    })?;
    let method: &[u8] = if request.method() == Some(Method::Ack) {
        b"INVITE"
    } else {
        method
    };
    server_key_with(request, method, out)
}

/// The key of the INVITE transaction a CANCEL targets (§9.2: same matching,
/// method INVITE).
pub(super) fn server_key_as_invite<'a>(
    request: &'a Message,
    out: &mut Vec<u8>,
) -> Result<Matched<'a>, TransactionError> {
    server_key_with(request, b"INVITE", out)
}

fn server_key_with<'a>(
    request: &'a Message,
    method: &[u8],
    out: &mut Vec<u8>,
) -> Result<Matched<'a>, TransactionError> {
    let via = request
        .top_via()
        .ok_or(TransactionError::Missing("a Via"))?;
    let to_tag = request.to().and_then(|to| to.tag());
    out.clear();
    match via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
        Some(branch) => {
            // §17.2.3: branch, sent-by (host case-insensitive) and method.
            out.push(b'3');
            out.extend_from_slice(branch.as_bytes());
            out.push(0);
            let sent_by = via.sent_by();
            let host_len = match via.port() {
                Some(_) => sent_by
                    .iter()
                    .rposition(|&b| b == b':')
                    .unwrap_or(sent_by.len()),
                None => sent_by.len(),
            };
            out.extend(
                sent_by[..host_len]
                    .iter()
                    .filter(|b| !b.is_ascii_whitespace())
                    .map(u8::to_ascii_lowercase),
            );
            if let Some(port) = via.port() {
                // Writing into a Vec cannot fail.
                let _ = write!(out, ":{port}");
            }
            out.push(0);
            out.extend_from_slice(method);
            Ok(Matched {
                rfc2543: false,
                to_tag,
            })
        }
        None => {
            // §17.2.3 RFC 2543 fallback: Request-URI, From tag, Call-ID,
            // CSeq number, top Via and method; the To tag is checked on the
            // transaction (see `Matched`).
            let uri = request
                .request_uri_bytes()
                .ok_or(TransactionError::WrongKind {
                    expected: "request",
                })?;
            let from_tag = request
                .from()
                .ok_or(TransactionError::Missing("From"))?
                .tag();
            let call_id = request
                .call_id()
                .ok_or(TransactionError::Missing("Call-ID"))?;
            let cseq = request.cseq().ok_or(TransactionError::Missing("CSeq"))?;
            let top_via = request
                .values(crate::sip::HeaderName::Via)
                .next()
                .ok_or(TransactionError::Missing("a Via"))?;
            out.push(b'2');
            for part in [uri, from_tag.unwrap_or_default().as_bytes(), call_id] {
                out.extend_from_slice(part);
                out.push(0);
            }
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}", cseq.seq);
            for part in [top_via, method] {
                out.push(0);
                out.extend_from_slice(part);
            }
            Ok(Matched {
                rfc2543: true,
                to_tag,
            })
        }
    }
}

/// What a response must echo of its request (§8.2.6.2): the top Via branch
/// (empty when absent) and the CSeq number and method. Written into `out`;
/// a message missing either header yields a key no real request has.
pub(super) fn echo(message: &Message, out: &mut Vec<u8>) {
    out.clear();
    let via = message.top_via();
    out.extend_from_slice(via.and_then(|v| v.branch()).unwrap_or_default().as_bytes());
    out.push(0);
    if let Some(cseq) = message.cseq() {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{} {}", cseq.seq, cseq.method);
    }
}
