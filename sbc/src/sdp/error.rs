//! Errors of the SDP layer and the SIP response each one owes.
//!
//! A parse error never allocates: it carries the 1-based line number and
//! `&'static str` descriptions, so rejecting a hostile body costs no more than
//! reading it.
//!
//! Status mapping ([`SdpError::status_code`]), in the spirit of RFC 3261
//! §21.4.1 and §21.4.26:
//! * **400 Bad Request**: the body is not SDP by the RFC 8866 grammar (a line
//!   that is not `<type>=<value>`, a missing or repeated `o=`, a field that is
//!   not a number, ...). The sender has a bug; retrying will not help.
//! * **488 Not Acceptable Here**: the body is SDP, but this SBC cannot relay
//!   it (a network type other than `IN`, an address type other than
//!   `IP4`/`IP6`, an enabled stream with no connection address, or a body past
//!   the size limits). Another offer may succeed.

use thiserror::Error;

/// Why a body is not an SDP this SBC can relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The body is empty, or holds only line ends.
    #[error("empty SDP body")]
    Empty,

    /// The body is longer than [`MAX_BODY_LEN`](super::MAX_BODY_LEN).
    #[error("SDP body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the body in bytes.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },

    /// The body has more than [`MAX_LINES`](super::MAX_LINES) lines.
    #[error("line {line}: SDP has more than {max} lines")]
    TooManyLines {
        /// The first line past the limit.
        line: usize,
        /// The limit.
        max: usize,
    },

    /// The body has more than [`MAX_MEDIA`](super::MAX_MEDIA) `m=` sections.
    #[error("line {line}: SDP has more than {max} media sections")]
    TooManyMedia {
        /// The first `m=` line past the limit.
        line: usize,
        /// The limit.
        max: usize,
    },

    /// A line breaks the RFC 8866 §5 line grammar: it is not
    /// `<lowercase letter>=<value>`, holds a NUL or a bare CR, is blank in the
    /// middle of the body, is out of place (`v=` not first, `o=` inside a media
    /// section), or is a line the SBC interprets that is not UTF-8.
    #[error("line {line}: {what}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        what: &'static str,
    },

    /// A line the SBC interprets (`o=`, `c=`, `m=`, `a=rtcp`, `a=candidate`,
    /// `a=crypto`) has a missing or malformed field.
    #[error("line {line}: malformed {field}: {what}")]
    Field {
        /// 1-based line number.
        line: usize,
        /// The line or field, e.g. `"m= port"`.
        field: &'static str,
        /// What is wrong with it.
        what: &'static str,
    },

    /// A line that may appear once per section appears again (`v=`, `o=`, a
    /// direction attribute, `a=rtcp`). Two of them leave it ambiguous which
    /// one the sender meant.
    #[error("line {line}: duplicate {what}")]
    Duplicate {
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The line or attribute, e.g. `"a=rtcp"`.
        what: &'static str,
    },

    /// A mandatory line is absent (`o=`).
    #[error("missing {what} line")]
    Missing {
        /// The line, e.g. `"o="`.
        what: &'static str,
    },

    /// A connection (`c=` or the address of `a=rtcp`) uses a network or
    /// address type the SBC cannot relay: only `IN` with `IP4` or `IP6`.
    #[error("line {line}: unsupported {what}")]
    Unsupported {
        /// 1-based line number.
        line: usize,
        /// What is unsupported, e.g. `"network type (only IN)"`.
        what: &'static str,
    },

    /// An enabled media section (port other than 0) has no `c=` line, and
    /// neither has the session (RFC 8866 §5.7).
    #[error("line {line}: media section has no connection address (c=) at media or session level")]
    NoConnection {
        /// 1-based line number of the `m=` line.
        line: usize,
    },
}

impl SdpError {
    /// The SIP status code a UAS owes the request that carried this body; see
    /// the module docs for the rationale.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Empty
            | Self::Syntax { .. }
            | Self::Field { .. }
            | Self::Duplicate { .. }
            | Self::Missing { .. } => 400,
            Self::TooLarge { .. }
            | Self::TooManyLines { .. }
            | Self::TooManyMedia { .. }
            | Self::Unsupported { .. }
            | Self::NoConnection { .. } => 488,
        }
    }

    /// A short reason phrase for the status line, more specific than the
    /// RFC 3261 default so that an operator reading a trace sees the cause.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "Empty SDP",
            Self::Syntax { .. }
            | Self::Field { .. }
            | Self::Duplicate { .. }
            | Self::Missing { .. } => "Malformed SDP",
            Self::TooLarge { .. } | Self::TooManyLines { .. } | Self::TooManyMedia { .. } => {
                "SDP Too Large"
            }
            Self::Unsupported { .. } => "Unsupported SDP Address Type",
            Self::NoConnection { .. } => "No SDP Connection Address",
        }
    }

    /// The 1-based line the error points at, if it points at one.
    pub fn line(&self) -> Option<usize> {
        match *self {
            Self::Empty | Self::TooLarge { .. } | Self::Missing { .. } => None,
            Self::TooManyLines { line, .. }
            | Self::TooManyMedia { line, .. }
            | Self::Syntax { line, .. }
            | Self::Field { line, .. }
            | Self::Duplicate { line, .. }
            | Self::Unsupported { line, .. }
            | Self::NoConnection { line } => Some(line),
        }
    }
}

/// Why an [`SdpEditor`](super::SdpEditor) refused an edit. This is a bug in
/// the caller, not in the peer's SDP, so it has no status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EditError {
    /// The media index is not below [`Sdp::media_count`](super::Sdp::media_count).
    #[error("no media section {index}: the description has {count}")]
    NoSuchMedia {
        /// The index asked for.
        index: usize,
        /// How many media sections there are.
        count: usize,
    },
}
