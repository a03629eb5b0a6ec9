//! The lossless SIP message layer (RFC 3261 §7, §18.3, §19, §20, §25).
//!
//! Owns: the message model ([`Message`]: start line, headers in their original
//! order, body framed by Content-Length), the parser, typed header views parsed
//! on demand, the printer/editor that changes only what it is told to, stream
//! framing for TCP/TLS, and the verdict a server owes a message it cannot
//! accept ([`ParseError::response`]).
//!
//! May not: do IO, read a clock, or allocate per header. A parsed [`Message`]
//! owns one byte buffer; every header, URI and parameter is a span or a slice
//! into it, so an unknown header passes through byte for byte and a bug in one
//! typed view never breaks forwarding.
//!
//! Layout:
//! * [`scan`]: RFC 3261 §25 lexical rules (token, LWS with folding, quoted
//!   strings, comma splitting, generic parameters).
//! * [`uri`]: SIP/SIPS/tel URIs (§19.1, RFC 3966) and opaque absolute URIs.
//! * [`header`]: typed views of header values (Via, name-addr, CSeq, ...).
//! * [`name`]: header names, compact forms, case-insensitive matching.
//! * [`message`]: the message model and parser.
//! * [`edit`]: the editor and printer.
//! * [`framing`]: stream framing and CRLF keepalives.
//! * [`error`]: parse errors and the response each one owes.
//! * [`response`]: responses to requests, and stateless answers to malformed ones.
//! * [`quote`]: the request an ICMP error quotes, which names one client transaction.
//! * [`verdict`]: the server checks on a parsed request (416, 420, 483).
//! * [`transaction`]: the RFC 3261 §17 transaction layer (sans-IO).
pub mod edit;
pub mod error;
pub mod framing;
pub mod header;
pub mod message;
pub mod name;
pub mod quote;
pub mod response;
pub mod scan;
pub mod transaction;
pub mod uri;
pub mod verdict;

pub use error::{ParseError, ParseErrorKind, Rejection, Verdict};
pub use framing::{Frame, FramingError, StreamFramer};
pub use message::{Header, Limits, Message, Method, StartLine};
pub use name::HeaderName;
pub use verdict::{ServerPolicy, check};
