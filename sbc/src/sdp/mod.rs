//! The line-preserving SDP parser and rewriter.
//!
//! Owns: the session description model ([`Sdp`]: one owned copy of the body
//! plus an index of line spans), typed views of the lines an SBC acts on, the
//! editor ([`SdpEditor`]) that rewrites them, and the verdict owed to a body
//! it cannot accept ([`SdpError::status_code`]).
//!
//! May not: do IO, read a clock, or allocate per line. Parsing allocates the
//! body copy, the line index and the media index; every view borrows from the
//! [`Sdp`]. Printing copies untouched bytes, so an unedited description prints
//! byte for byte as received and an edit changes only the field it names.
//!
//! Implements:
//! * RFC 8866 §5 (and RFC 4566, which it obsoletes): `<type>=<value>` lines,
//!   `v=`, `o=` (§5.2), `s=`, `c=` at session and media level (§5.7), `m=`
//!   (§5.14), attributes (§5.13, §6); bare LF accepted as a line end (§5).
//! * RFC 3264 §5.1 and §8.4: direction attributes and hold (`sendonly`,
//!   `inactive`, or the RFC 2543 style `c=IN IP4 0.0.0.0`, which the editor
//!   never rewrites); port 0 disables a stream (§8.2); sess-version bumps on
//!   a changed offer (§8).
//! * RFC 3605: `a=rtcp:<port> [IN <addrtype> <address>]`.
//! * RFC 5761 §5.1.1: `a=rtcp-mux`.
//! * RFC 8839 §5: ICE attributes (typed views, and removal when the SBC
//!   terminates media itself).
//! * RFC 4568 §9.1: `a=crypto` (typed view; the key stays opaque).
//!
//! Liberal where deployed SDP needs it: bare LF or mixed line ends, an empty
//! `s=` (RFC 4317 prints one), session lines in any order (RFC 3264 Figure 1
//! puts `c=` after `t=`), runs of spaces between fields, trailing blank lines,
//! an FQDN in `c=`, a sess-id or sess-version of any length (`1*DIGIT`),
//! unknown line types and attributes (passed through), and attributes the
//! SBC does not interpret in a charset other than UTF-8 (passed through as
//! bytes; `v=`, `o=`, `c=`, `m=` and the interpreted attributes must be
//! UTF-8).
//! Strict where a wrong guess would misroute media: `v=0` first, one `o=` with
//! six fields, `m=` with a 16-bit port and at least one format, `c=` with
//! three fields of network type `IN` and address type `IP4`/`IP6`, one
//! direction attribute and one `a=rtcp` per level, and a connection address
//! for every enabled stream.
//!
//! Layout:
//! * [`error`]: [`SdpError`] (with the SIP status it maps to) and [`EditError`].
//! * `scan`: spans, field splitting, decimal numbers.
//! * `parse`: [`Sdp`], the parser and the size limits.
//! * [`view`]: typed, borrowed views (origin, connection, media, ICE, crypto).
//! * [`edit`]: [`SdpEditor`] and the printer.
//!
//! A typical SBC rewrite of an offer towards the other leg:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use sbc::sdp::Sdp;
//!
//! let offer = Sdp::parse(
//!     b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
//!       m=audio 4000 RTP/AVP 0\r\na=rtcp:4001\r\na=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\r\n",
//! )?;
//! let relay = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
//! let mut editor = offer.editor();
//! editor
//!     .set_origin_address(relay)
//!     .bump_origin_version()
//!     .set_connection(relay)
//!     .strip_ice();
//! editor.set_media_port(0, 30000)?.set_rtcp(0, 30001, Some(relay))?;
//! let rewritten = editor.to_sdp()?;
//! assert_eq!(rewritten.media_section(0).map(|m| m.port()), Some(30000));
//! assert!(!rewritten.has_ice());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod edit;
pub mod error;
mod parse;
mod scan;
pub mod view;

pub use edit::SdpEditor;
pub use error::{EditError, SdpError};
pub use parse::{MAX_BODY_LEN, MAX_LINES, MAX_MEDIA, Sdp};
pub use view::{
    AddrType, Attribute, Candidate, Connection, Crypto, Direction, IceAttributes, LineEnding,
    MediaKind, MediaSection, Origin, Rtcp,
};

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
