//! The parser: splits the body into lines, validates the lines an SBC acts on
//! and indexes them; everything else is kept as an opaque span.

use std::net::IpAddr;

use super::error::SdpError;
use super::scan::{Span, bytes, decimal, fields, is_digits, split_once, text};
use super::view::{AddrType, Direction, LineEnding, is_interpreted};

/// Longest body [`Sdp::parse`] accepts. Generous for WebRTC offers with many
/// candidates, and small enough that `u32` offsets can never overflow.
pub const MAX_BODY_LEN: usize = 256 * 1024;
/// Most lines [`Sdp::parse`] accepts; this also bounds the attributes.
pub const MAX_LINES: usize = 4096;
/// Most media sections [`Sdp::parse`] accepts.
pub const MAX_MEDIA: usize = 64;

/// A parsed session description.
///
/// Owns a copy of the body and an index of its lines, so the call-control
/// layer can keep it for the life of a dialog. Views borrow from it; the
/// [`editor`](Sdp::editor) prints a rewritten copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    pub(super) buf: Vec<u8>,
    pub(super) lines: Vec<Line>,
    pub(super) media: Vec<MediaEntry>,
    /// `lines[..session_end]` is the session section.
    pub(super) session_end: u32,
    /// Offset of trailing blank lines (`buf.len()` when there are none).
    pub(super) trailer: u32,
    pub(super) eol: LineEnding,
    pub(super) origin: OriginEntry,
    pub(super) session_name: Option<u32>,
    pub(super) connection: Option<ConnEntry>,
    pub(super) direction: Option<(Direction, u32)>,
}

/// One `<type>=<value>` line: `buf[start..end]` is the line without its
/// terminator, `buf[end..next]` the terminator (CRLF, LF, or nothing on an
/// unterminated last line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) next: u32,
    pub(super) kind: u8,
}

impl Line {
    /// The value after `<type>=`.
    pub(super) fn value(self) -> Span {
        Span {
            start: self.start + 2,
            end: self.end,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OriginEntry {
    pub(super) line: u32,
    pub(super) username: Span,
    /// `<sess-id>`, checked to be `1*DIGIT`; nothing needs its value, so it
    /// may be any length (RFC 8866 §5.2).
    pub(super) session_id: Span,
    /// `<sess-version>`, saturated at `u64::MAX` when longer; `version` has
    /// it as written.
    pub(super) session_version: u64,
    pub(super) version: Span,
    pub(super) nettype: Span,
    pub(super) addrtype: Span,
    pub(super) address: Span,
    pub(super) ip: Option<IpAddr>,
}

/// A validated connection: `IN`, an address type, and an address that is an
/// IP literal of that family (`ip` is `Some`) or a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnEntry {
    pub(super) line: u32,
    pub(super) addrtype: AddrType,
    /// The connection-address as written, TTL and count included.
    pub(super) address: Span,
    /// From `<nettype>` to the end of the connection-address: what the
    /// editor replaces to move the connection.
    pub(super) fields: Span,
    pub(super) ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RtcpEntry {
    pub(super) line: u32,
    pub(super) port: u16,
    pub(super) connection: Option<ConnEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MediaEntry {
    /// Index of the `m=` line; the section is `lines[line..end]`.
    pub(super) line: u32,
    pub(super) end: u32,
    pub(super) media: Span,
    pub(super) port: u16,
    pub(super) port_span: Span,
    pub(super) port_count: Option<u16>,
    pub(super) proto: Span,
    /// From the first format to the end of the last one.
    pub(super) formats: Span,
    /// The first media-level `c=` line.
    pub(super) connection: Option<ConnEntry>,
    pub(super) direction: Option<(Direction, u32)>,
    pub(super) rtcp: Option<RtcpEntry>,
    pub(super) rtcp_mux: bool,
}

impl Sdp {
    /// Parses an SDP body (RFC 8866), keeping a copy of it.
    ///
    /// Allocates the copy, the line index and the media index, nothing per
    /// line. Fails with an [`SdpError`] whose
    /// [`status_code`](SdpError::status_code) is the SIP response to send.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        if body.len() > MAX_BODY_LEN {
            return Err(SdpError::TooLarge {
                len: body.len(),
                max: MAX_BODY_LEN,
            });
        }
        let (lines, trailer) = split_lines(body)?;
        let Some(first) = lines.first() else {
            return Err(SdpError::Empty);
        };
        if first.kind != b'v' || bytes(body, first.value()) != b"0" {
            return Err(syntax(0, "first line must be v=0"));
        }
        let eol = if first.next - first.end == 1 {
            LineEnding::Lf
        } else {
            // CRLF, or a one-line body without a terminator: the RFC's choice.
            LineEnding::CrLf
        };

        let mut index = Index::default();
        for (idx, line) in lines.iter().enumerate().skip(1) {
            index.add(body, idx, *line)?;
        }
        let line_count = lines.len() as u32;
        if let Some(last) = index.media.last_mut() {
            last.end = line_count;
        }
        let origin = index.origin.ok_or(SdpError::Missing { what: "o=" })?;
        if index.connection.is_none() {
            // RFC 8866 §5.7: c= in every media section or at session level.
            // Disabled streams (port 0) carry no media, so they may omit it.
            if let Some(m) = index
                .media
                .iter()
                .find(|m| m.port != 0 && m.connection.is_none())
            {
                return Err(SdpError::NoConnection {
                    line: m.line as usize + 1,
                });
            }
        }
        Ok(Sdp {
            buf: body.to_vec(),
            session_end: index.media.first().map_or(line_count, |m| m.line),
            lines,
            media: index.media,
            trailer,
            eol,
            origin,
            session_name: index.session_name,
            connection: index.connection,
            direction: index.direction,
        })
    }
}

/// Splits the body into lines at LF (a CR before it belongs to the
/// terminator) and checks the `<type>=<value>` shape of each. Returns the
/// lines and the offset of trailing blank lines.
fn split_lines(body: &[u8]) -> Result<(Vec<Line>, u32), SdpError> {
    // One Vec sized up front: LF count bounds the line count.
    let estimate = body.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut lines = Vec::with_capacity(estimate.min(MAX_LINES));
    let mut pos = 0;
    while pos < body.len() {
        let rest = body.get(pos..).unwrap_or_default();
        // Blank lines after the last line are padding (a Content-Length that
        // counts an extra CRLF); keep them as an opaque trailer.
        if rest.iter().all(|&b| b == b'\r' || b == b'\n') {
            break;
        }
        let idx = lines.len();
        if idx == MAX_LINES {
            return Err(SdpError::TooManyLines {
                line: idx + 1,
                max: MAX_LINES,
            });
        }
        let (len, terminator) = match rest.iter().position(|&b| b == b'\n') {
            Some(lf) if lf > 0 && rest.get(lf - 1) == Some(&b'\r') => (lf - 1, 2),
            Some(lf) => (lf, 1),
            None => (rest.len(), 0),
        };
        let content = rest.get(..len).unwrap_or_default();
        check_line(idx, content)?;
        lines.push(Line {
            start: pos as u32,
            end: (pos + len) as u32,
            next: (pos + len + terminator) as u32,
            kind: content.first().copied().unwrap_or_default(),
        });
        pos += len + terminator;
    }
    Ok((lines, pos as u32))
}

fn check_line(idx: usize, content: &[u8]) -> Result<(), SdpError> {
    let (Some(&kind), Some(b'=')) = (content.first(), content.get(1)) else {
        return Err(if content.is_empty() {
            syntax(idx, "blank line inside the description")
        } else {
            syntax(idx, "line is not <type>=<value>")
        });
    };
    if !kind.is_ascii_lowercase() {
        return Err(syntax(idx, "line type is not a lowercase letter"));
    }
    // NUL and CR are excluded from every SDP value (RFC 8866 §9 `byte-string`);
    // letting them through would let a peer smuggle line breaks.
    if content.contains(&0) {
        return Err(syntax(idx, "NUL byte in line"));
    }
    if content.contains(&b'\r') {
        return Err(syntax(idx, "bare CR in line"));
    }
    // The lines the SBC interprets hand out `&str` views; free text (s=, i=,
    // attributes it does not read, ...) may be in another charset
    // (a=charset, RFC 8866 §6.10) and passes through as bytes.
    let interpreted = match kind {
        b'v' | b'o' | b'c' | b'm' => true,
        b'a' => {
            let value = content.get(2..).unwrap_or_default();
            let name = value.split(|&b| b == b':').next().unwrap_or_default();
            is_interpreted(name)
        }
        _ => false,
    };
    if interpreted && std::str::from_utf8(content).is_err() {
        return Err(syntax(idx, "line is not valid UTF-8"));
    }
    Ok(())
}

/// What the parser collects while walking the lines after `v=`.
#[derive(Default)]
struct Index {
    origin: Option<OriginEntry>,
    session_name: Option<u32>,
    connection: Option<ConnEntry>,
    direction: Option<(Direction, u32)>,
    media: Vec<MediaEntry>,
}

impl Index {
    fn add(&mut self, buf: &[u8], idx: usize, line: Line) -> Result<(), SdpError> {
        let value = line.value();
        match line.kind {
            b'v' => return Err(duplicate(idx, "v=")),
            b'o' if !self.media.is_empty() => {
                return Err(syntax(idx, "o= inside a media section"));
            }
            b'o' if self.origin.is_some() => return Err(duplicate(idx, "o=")),
            b'o' => self.origin = Some(parse_origin(buf, idx, value)?),
            b's' if self.media.is_empty() && self.session_name.is_none() => {
                self.session_name = Some(idx as u32);
            }
            b'c' => {
                let conn = parse_c_line(buf, idx, value)?;
                // Later c= lines at the same level (multicast layers) are
                // validated; the first is the one the views report.
                let slot = match self.media.last_mut() {
                    Some(m) => &mut m.connection,
                    None => &mut self.connection,
                };
                slot.get_or_insert(conn);
            }
            b'm' => {
                if self.media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia {
                        line: idx + 1,
                        max: MAX_MEDIA,
                    });
                }
                if let Some(previous) = self.media.last_mut() {
                    previous.end = idx as u32;
                }
                self.media.push(parse_m_line(buf, idx, value)?);
            }
            b'a' => self.add_attribute(buf, idx, value)?,
            _ => {}
        }
        Ok(())
    }

    fn add_attribute(&mut self, buf: &[u8], idx: usize, value: Span) -> Result<(), SdpError> {
        let (name, att_value) = split_once(buf, value, b':');
        let name = bytes(buf, name);
        if att_value.is_none()
            && let Some(direction) = Direction::from_name(name)
        {
            let slot = match self.media.last_mut() {
                Some(m) => &mut m.direction,
                None => &mut self.direction,
            };
            if slot.is_some() {
                return Err(duplicate(idx, "direction attribute"));
            }
            *slot = Some((direction, idx as u32));
            return Ok(());
        }
        // a=rtcp and a=rtcp-mux are media-level (RFC 3605 §2.1, RFC 5761
        // §5.1.1); at session level they pass through uninterpreted.
        let Some(media) = self.media.last_mut() else {
            return Ok(());
        };
        match (name, att_value) {
            (b"rtcp", Some(att_value)) => {
                if media.rtcp.is_some() {
                    return Err(duplicate(idx, "a=rtcp"));
                }
                media.rtcp = Some(parse_rtcp(buf, idx, att_value)?);
            }
            (b"rtcp", None) => return Err(field(idx, "a=rtcp", "missing port")),
            (b"rtcp-mux", None) => media.rtcp_mux = true,
            _ => {}
        }
        Ok(())
    }
}

fn parse_origin(buf: &[u8], idx: usize, value: Span) -> Result<OriginEntry, SdpError> {
    let mut f = fields(buf, value);
    let (
        Some(username),
        Some(session_id),
        Some(version),
        Some(nettype),
        Some(addrtype),
        Some(address),
        None,
    ) = (
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
    )
    else {
        return Err(field(
            idx,
            "o=",
            "expected <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
        ));
    };
    // RFC 8866 §5.2: both are 1*DIGIT, of any length.
    if !is_digits(bytes(buf, session_id)) {
        return Err(field(idx, "o=", "sess-id is not a decimal number"));
    }
    let version_digits = bytes(buf, version);
    if !is_digits(version_digits) {
        return Err(field(idx, "o=", "sess-version is not a decimal number"));
    }
    Ok(OriginEntry {
        line: idx as u32,
        username,
        session_id,
        session_version: decimal::<u64>(version_digits).unwrap_or(u64::MAX),
        version,
        nettype,
        addrtype,
        address,
        // o= only names the session; an unusual type there does not stop
        // media, so it is kept as written rather than rejected.
        ip: text(buf, address).parse().ok(),
    })
}

fn parse_c_line(buf: &[u8], idx: usize, value: Span) -> Result<ConnEntry, SdpError> {
    let mut f = fields(buf, value);
    let (Some(nettype), Some(addrtype), Some(address), None) =
        (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(field(
            idx,
            "c=",
            "expected <nettype> <addrtype> <connection-address>",
        ));
    };
    parse_connection(buf, idx, "c=", [nettype, addrtype, address])
}

/// Validates `<nettype> <addrtype> <connection-address>` (RFC 8866 §5.7),
/// shared by `c=` and `a=rtcp`.
fn parse_connection(
    buf: &[u8],
    idx: usize,
    what: &'static str,
    [nettype, addrtype, address]: [Span; 3],
) -> Result<ConnEntry, SdpError> {
    if bytes(buf, nettype) != b"IN" {
        return Err(unsupported(idx, "network type (only IN)"));
    }
    let addrtype = match bytes(buf, addrtype) {
        b"IP4" => AddrType::Ip4,
        b"IP6" => AddrType::Ip6,
        _ => return Err(unsupported(idx, "address type (only IP4 and IP6)")),
    };
    // <host>[/<ttl>[/<count>]] for IP4 multicast, <host>[/<count>] for IP6.
    let (host, mut suffix) = split_once(buf, address, b'/');
    let max_suffixes = match addrtype {
        AddrType::Ip4 => 2,
        AddrType::Ip6 => 1,
    };
    for _ in 0..max_suffixes {
        let Some(rest) = suffix else { break };
        let (number, next) = split_once(buf, rest, b'/');
        if decimal::<u32>(bytes(buf, number)).is_none() {
            return Err(field(idx, what, "multicast TTL or count is not a number"));
        }
        suffix = next;
    }
    if suffix.is_some() {
        return Err(field(idx, what, "too many /-separated parts in address"));
    }
    let host_text = text(buf, host);
    if host_text.is_empty() {
        return Err(field(idx, what, "empty address"));
    }
    // Not an IP literal: a host name (RFC 8866 allows an FQDN); kept raw.
    let ip = host_text.parse::<IpAddr>().ok();
    if let Some(ip) = ip
        && AddrType::of(ip) != addrtype
    {
        return Err(field(idx, what, "address does not match its address type"));
    }
    Ok(ConnEntry {
        line: idx as u32,
        addrtype,
        address,
        fields: Span {
            start: nettype.start,
            end: address.end,
        },
        ip,
    })
}

fn parse_m_line(buf: &[u8], idx: usize, value: Span) -> Result<MediaEntry, SdpError> {
    let mut f = fields(buf, value);
    let (Some(media), Some(port_field), Some(proto), Some(first_format)) =
        (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(field(
            idx,
            "m=",
            "expected <media> <port> <proto> <fmt> ...",
        ));
    };
    let last_format = f.last().unwrap_or(first_format);
    let (port_span, count) = split_once(buf, port_field, b'/');
    let port = decimal::<u16>(bytes(buf, port_span)).ok_or(field(
        idx,
        "m= port",
        "not a number from 0 to 65535",
    ))?;
    let port_count = match count {
        None => None,
        Some(count) => Some(
            decimal::<u16>(bytes(buf, count))
                .filter(|&n| n > 0)
                .ok_or(field(idx, "m= port count", "not a number from 1 to 65535"))?,
        ),
    };
    Ok(MediaEntry {
        line: idx as u32,
        // Fixed up when the next m= line or the end of the body is reached.
        end: idx as u32 + 1,
        media,
        port,
        port_span,
        port_count,
        proto,
        formats: Span {
            start: first_format.start,
            end: last_format.end,
        },
        connection: None,
        direction: None,
        rtcp: None,
        rtcp_mux: false,
    })
}

/// `a=rtcp:<port> [<nettype> <addrtype> <connection-address>]` (RFC 3605 §2.1).
fn parse_rtcp(buf: &[u8], idx: usize, value: Span) -> Result<RtcpEntry, SdpError> {
    let mut f = fields(buf, value);
    let port = f
        .next()
        .and_then(|port| decimal::<u16>(bytes(buf, port)))
        .ok_or(field(idx, "a=rtcp", "port is not a number from 0 to 65535"))?;
    let connection = match (f.next(), f.next(), f.next(), f.next()) {
        (None, ..) => None,
        (Some(nettype), Some(addrtype), Some(address), None) => Some(parse_connection(
            buf,
            idx,
            "a=rtcp",
            [nettype, addrtype, address],
        )?),
        _ => {
            return Err(field(
                idx,
                "a=rtcp",
                "expected <port> [<nettype> <addrtype> <connection-address>]",
            ));
        }
    };
    Ok(RtcpEntry {
        line: idx as u32,
        port,
        connection,
    })
}

fn syntax(idx: usize, what: &'static str) -> SdpError {
    SdpError::Syntax {
        line: idx + 1,
        what,
    }
}

fn field(idx: usize, field: &'static str, what: &'static str) -> SdpError {
    SdpError::Field {
        line: idx + 1,
        field,
        what,
    }
}

fn duplicate(idx: usize, what: &'static str) -> SdpError {
    SdpError::Duplicate {
        line: idx + 1,
        what,
    }
}

fn unsupported(idx: usize, what: &'static str) -> SdpError {
    SdpError::Unsupported {
        line: idx + 1,
        what,
    }
}
