//! Parse errors, and the answer a server owes for each (RFC 3261 §8.2, §16.3,
//! §18.3, §21; RFC 4475 §3.1.2).
//!
//! A [`ParseError`] is `Copy` and never allocates: the parser runs on every
//! datagram, hostile ones included. Turning it into a [`Verdict`] (with a reason
//! phrase naming the defect) happens only when a response is actually built.

use super::header::HeaderError;
use super::name::HeaderName;
use super::uri::UriError;

/// What the bytes looked like when the defect was found. It decides whether a
/// response is owed at all: responses and ACKs are never answered (RFC 3261
/// §17.1.3, §17.2.1), and a request without a Via has nowhere to send one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The start line was not recognisable as a request or a response.
    Unknown,
    /// A request; `is_ack` because an ACK is never answered.
    Request {
        /// The method is ACK.
        is_ack: bool,
    },
    /// A response (the start line began with a SIP-Version).
    Response,
}

/// Why a message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Nothing but line breaks (or nothing at all) was received.
    #[error("empty message")]
    Empty,
    /// The message is larger than [`Limits::max_message_bytes`](super::Limits).
    #[error("message exceeds {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: u32,
    },
    /// More header lines than [`Limits::max_headers`](super::Limits).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: u32,
    },
    /// The header section is not closed by an empty line.
    #[error("header section not terminated by an empty line")]
    Unterminated,
    /// The Request-Line is malformed; the text says how.
    #[error("malformed Request-Line: {0}")]
    BadRequestLine(&'static str),
    /// The Status-Line is malformed; the text says how.
    #[error("malformed Status-Line: {0}")]
    BadStatusLine(&'static str),
    /// A well-formed SIP-Version other than SIP/2.0 (answered with 505).
    #[error("SIP version not supported")]
    UnsupportedVersion,
    /// The Request-URI does not parse.
    #[error("malformed Request-URI: {0}")]
    BadRequestUri(UriError),
    /// The Request-URI carries `?headers`, which RFC 3261 §19.1.1 forbids there.
    #[error("Request-URI carries escaped headers")]
    HeadersInRequestUri,
    /// A header line is not `name: value`.
    #[error("malformed header line: {0}")]
    BadHeaderLine(&'static str),
    /// A header every request and response must carry is missing (§8.1.1).
    #[error("missing {0} header")]
    MissingHeader(HeaderName),
    /// A header that may appear once appears more than once (§7.3.1).
    #[error("multiple {0} headers")]
    DuplicateHeader(HeaderName),
    /// A header the SBC interprets has a malformed value.
    #[error("malformed {name} header: {error}")]
    BadHeader {
        /// Which header.
        name: HeaderName,
        /// What is wrong with its value.
        error: HeaderError,
    },
    /// The CSeq method differs from the request method (§8.1.1.5).
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// Content-Length promises more bytes than the datagram holds (§18.3).
    #[error("Content-Length exceeds body")]
    ContentLengthExceedsBody,
    /// A message on a stream transport has no Content-Length (§18.3).
    #[error("Content-Length required on stream transports")]
    MissingContentLength,
}

/// A message that could not be parsed, with enough context to decide the
/// answer it is owed. See [`ParseError::response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// What was wrong.
    pub kind: ParseErrorKind,
    /// What the message looked like.
    pub shape: Shape,
    /// Whether a Via header line was seen, i.e. whether a response could be
    /// routed back at all (§18.2.2).
    pub has_via: bool,
}

impl ParseError {
    pub(crate) const fn new(kind: ParseErrorKind, shape: Shape, has_via: bool) -> Self {
        Self {
            kind,
            shape,
            has_via,
        }
    }

    /// What a server owes the sender of this malformed message.
    ///
    /// Responses are dropped (§16.7 / RFC 4475 §3.1.2.5); so are ACKs and
    /// requests without a Via (no response could be routed). Everything else
    /// gets a final response whose reason phrase names the defect.
    pub fn response(&self) -> Verdict {
        match self.shape {
            Shape::Response => return Verdict::Drop(DropReason::MalformedResponse(self.kind)),
            Shape::Request { is_ack: true } => {
                return Verdict::Drop(DropReason::MalformedAck(self.kind));
            }
            Shape::Unknown | Shape::Request { .. } if !self.has_via => {
                return Verdict::Drop(DropReason::Unroutable(self.kind));
            }
            Shape::Unknown | Shape::Request { .. } => {}
        }
        let status = match self.kind {
            ParseErrorKind::UnsupportedVersion => 505,
            ParseErrorKind::TooLarge { .. } => 513,
            _ => 400,
        };
        Verdict::Reject(Rejection::new(status, self.kind.to_string()))
    }
}

/// What a server does with a message it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well formed and acceptable: process it.
    Accept,
    /// Answer with this final response and process nothing else.
    Reject(Rejection),
    /// Discard silently.
    Drop(DropReason),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Reject(r) => write!(f, "answer {} {}", r.status, r.reason_phrase()),
            Verdict::Drop(why) => write!(f, "drop {why}"),
        }
    }
}

/// A final response the server sends instead of processing the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The status code (400, 416, 420, 483, 505, 513, ...).
    pub status: u16,
    /// The defect in words; empty when the standard phrase says it all.
    pub detail: String,
    /// Headers the response must carry: `Unsupported` for 420 (RFC 3261
    /// §8.2.2.3), `Allow` for 501 (§8.2.1).
    pub headers: Vec<(HeaderName, String)>,
}

impl Rejection {
    /// A rejection with a detail and no extra headers.
    pub fn new(status: u16, detail: String) -> Self {
        Self {
            status,
            detail,
            headers: Vec::new(),
        }
    }

    /// The reason phrase to send: the standard phrase, then the defect in
    /// parentheses so the peer's logs say what to fix, e.g.
    /// `Bad Request (Content-Length exceeds body)`.
    pub fn reason_phrase(&self) -> String {
        let standard = standard_reason(self.status);
        if self.detail.is_empty() {
            standard.to_owned()
        } else {
            // A reason phrase is one line of TEXT-UTF8: keep it printable.
            let detail: String = self
                .detail
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            format!("{standard} ({detail})")
        }
    }
}

/// Why a message is discarded without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A malformed response: nobody answers a response.
    MalformedResponse(ParseErrorKind),
    /// A malformed ACK: an ACK is never answered.
    MalformedAck(ParseErrorKind),
    /// A malformed request without a usable Via: a response could not be routed.
    Unroutable(ParseErrorKind),
    /// A well-formed ACK that fails a server check: ACKs are never answered.
    Ack(u16),
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::MalformedResponse(kind) => write!(f, "response ({kind})"),
            DropReason::MalformedAck(kind) => write!(f, "ACK ({kind})"),
            DropReason::Unroutable(kind) => write!(f, "request, no Via to answer ({kind})"),
            DropReason::Ack(status) => {
                write!(f, "ACK (would be {status} {})", standard_reason(*status))
            }
        }
    }
}

/// The standard reason phrase of a status code (RFC 3261 §21 and extensions).
pub fn standard_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_acks_and_unroutable_requests_are_dropped() {
        let kind = ParseErrorKind::ContentLengthExceedsBody;
        for shape in [Shape::Response, Shape::Request { is_ack: true }] {
            assert!(matches!(
                ParseError::new(kind, shape, true).response(),
                Verdict::Drop(_)
            ));
        }
        let no_via = ParseError::new(kind, Shape::Request { is_ack: false }, false);
        assert!(matches!(
            no_via.response(),
            Verdict::Drop(DropReason::Unroutable(_))
        ));
    }

    #[test]
    fn requests_get_a_reason_naming_the_defect() {
        let err = ParseError::new(
            ParseErrorKind::ContentLengthExceedsBody,
            Shape::Request { is_ack: false },
            true,
        );
        assert_eq!(
            err.response().to_string(),
            "answer 400 Bad Request (Content-Length exceeds body)"
        );
        let version = ParseError::new(
            ParseErrorKind::UnsupportedVersion,
            Shape::Request { is_ack: false },
            true,
        );
        assert!(
            version
                .response()
                .to_string()
                .starts_with("answer 505 Version Not Supported")
        );
    }

    #[test]
    fn reason_phrase_never_carries_control_characters() {
        let r = Rejection::new(400, "bad\r\nInjected: header".into());
        assert_eq!(r.reason_phrase(), "Bad Request (bad  Injected: header)");
    }
}
