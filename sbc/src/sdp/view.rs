//! Typed, borrowed views of a parsed [`Sdp`].
//!
//! Views of the lines the parser validates (`o=`, `c=`, `m=`, direction,
//! `a=rtcp`) are infallible. Views of lines the SBC only inspects
//! (`a=candidate`, `a=crypto`) are parsed on demand and report their own
//! [`SdpError`], so a malformed candidate never blocks forwarding a body whose
//! ICE the SBC is about to strip anyway.

use std::net::IpAddr;

use super::edit::SdpEditor;
use super::error::SdpError;
use super::parse::{ConnEntry, Line, MediaEntry, Sdp};
use super::scan::{Span, bytes, decimal, fields, split_once, text};

/// The line terminator a body uses; inserted lines copy it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\r\n`, as RFC 8866 §5 requires.
    CrLf,
    /// A bare `\n`, which RFC 8866 §5 asks parsers to accept.
    Lf,
}

impl LineEnding {
    /// The terminator's bytes.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::CrLf => b"\r\n",
            Self::Lf => b"\n",
        }
    }
}

/// The `<addrtype>` of a connection the SBC can relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrType {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
}

impl AddrType {
    /// The address type that names `ip`'s family.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::Ip4,
            IpAddr::V6(_) => Self::Ip6,
        }
    }

    /// The token as written in SDP.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip4 => "IP4",
            Self::Ip6 => "IP6",
        }
    }
}

/// A media direction attribute (RFC 3264 §5.1, RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`, the default when no direction attribute is present.
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name as written in SDP.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    pub(super) fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"sendrecv" => Some(Self::SendRecv),
            b"sendonly" => Some(Self::SendOnly),
            b"recvonly" => Some(Self::RecvOnly),
            b"inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// The `<media>` field of an `m=` line (RFC 8866 §5.14, RFC 6466 for `image`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `audio`.
    Audio,
    /// `video`.
    Video,
    /// `text`.
    Text,
    /// `application`.
    Application,
    /// `message`.
    Message,
    /// `image` (T.38 fax).
    Image,
    /// Anything else; [`MediaSection::media_type`] has the token.
    Other,
}

/// The `o=` line (RFC 8866 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// `<username>`, `-` when the host has no user ids.
    pub username: &'a str,
    /// `<sess-id>`: ASCII digits, as written. RFC 8866 §5.2 allows any
    /// length, and nothing needs its value, so it stays text.
    pub session_id: &'a str,
    /// `<sess-version>`, bumped on every changed offer (RFC 3264 §8).
    /// Saturates at `u64::MAX` for a longer number, which RFC 8866 allows;
    /// compare [`session_version_text`](Self::session_version_text) to tell
    /// two such versions apart.
    pub session_version: u64,
    /// `<sess-version>` as written: ASCII digits of any length.
    pub session_version_text: &'a str,
    /// `<nettype>` as written.
    pub nettype: &'a str,
    /// `<addrtype>` as written.
    pub addrtype: &'a str,
    /// `<unicast-address>` as written.
    pub address: &'a str,
    /// The address if it is an IP literal.
    pub ip: Option<IpAddr>,
    /// 1-based line number.
    pub line: usize,
}

/// A connection: a `c=` line or the address part of `a=rtcp`. The network
/// type is always `IN` (the parser rejects others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// `IP4` or `IP6`.
    pub addrtype: AddrType,
    /// The connection-address as written, multicast `/ttl/count` included.
    pub address: &'a str,
    /// The address without `/ttl/count` if it is an IP literal of
    /// `addrtype`'s family; `None` for a host name.
    pub ip: Option<IpAddr>,
    /// 1-based line number.
    pub line: usize,
}

impl<'a> Connection<'a> {
    /// The address without multicast `/ttl/count`.
    pub fn host(&self) -> &'a str {
        self.address
            .split_once('/')
            .map_or(self.address, |(host, _)| host)
    }

    /// Whether this is the RFC 2543 hold address (`0.0.0.0`, or `::` by
    /// analogy), still sent by older UAs instead of `a=sendonly`.
    pub fn is_unspecified(&self) -> bool {
        self.ip.is_some_and(|ip| ip.is_unspecified())
    }
}

/// `a=rtcp` (RFC 3605 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtcp<'a> {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media connection.
    pub connection: Option<Connection<'a>>,
    /// 1-based line number.
    pub line: usize,
}

/// One `a=` line: `a=<name>` or `a=<name>:<value>`.
///
/// The attributes the SBC interprets (direction, `rtcp`, `rtcp-mux`, ICE,
/// `crypto`) are UTF-8: the parser checks them. Any other attribute may be in
/// another charset (`a=charset`, RFC 8866 §6.10); a `name` or `value` of such
/// a line that is not UTF-8 reads as `"\u{FFFD}"`, and [`raw`](Self::raw)
/// has its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute name.
    pub name: &'a str,
    /// The value after the first `:`, if there is one.
    pub value: Option<&'a str>,
    /// Everything after `a=`, as written.
    pub raw: &'a [u8],
    /// 1-based line number.
    pub line: usize,
}

/// The ICE attributes of one level (RFC 8839 §5). Session-level values apply
/// to every media section that does not repeat them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IceAttributes<'a> {
    /// `a=ice-ufrag`.
    pub ufrag: Option<&'a str>,
    /// `a=ice-pwd`.
    pub pwd: Option<&'a str>,
    /// `a=ice-options`, the space-separated option tags.
    pub options: Option<&'a str>,
    /// `a=ice-lite` (session level).
    pub lite: bool,
    /// `a=ice-mismatch` (media level).
    pub mismatch: bool,
    /// `a=end-of-candidates`.
    pub end_of_candidates: bool,
    /// `a=remote-candidates`, as written.
    pub remote_candidates: Option<&'a str>,
    /// How many `a=candidate` lines there are.
    pub candidates: usize,
}

/// The attributes RFC 8839 (and RFC 8838 for `end-of-candidates`, RFC 9429
/// for `ice-pacing`) defines; [`SdpEditor::strip_ice`] removes them all.
pub(super) const ICE_ATTRIBUTES: [&str; 9] = [
    "candidate",
    "remote-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "end-of-candidates",
];

/// Whether the SBC reads attribute `name`, so that its line must be UTF-8:
/// a direction, `rtcp`, `rtcp-mux`, an ICE attribute, or `crypto`.
pub(super) fn is_interpreted(name: &[u8]) -> bool {
    Direction::from_name(name).is_some()
        || matches!(name, b"rtcp" | b"rtcp-mux" | b"crypto")
        || ICE_ATTRIBUTES.iter().any(|ice| ice.as_bytes() == name)
}

/// `a=candidate` (RFC 8839 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// `<foundation>`.
    pub foundation: &'a str,
    /// `<component-id>`: 1 for RTP, 2 for RTCP.
    pub component: u16,
    /// `<transport>`, e.g. `UDP`.
    pub transport: &'a str,
    /// `<priority>`.
    pub priority: u32,
    /// `<connection-address>`: an IP literal, or a host name such as an mDNS
    /// `.local` name.
    pub address: &'a str,
    /// The address if it is an IP literal.
    pub ip: Option<IpAddr>,
    /// `<port>`.
    pub port: u16,
    /// `<cand-type>` after `typ`: `host`, `srflx`, `prflx` or `relay`.
    pub kind: &'a str,
    /// `raddr`, if present.
    pub related_address: Option<&'a str>,
    /// `rport`, if present.
    pub related_port: Option<u16>,
    /// 1-based line number.
    pub line: usize,
}

impl<'a> Candidate<'a> {
    /// Parses the value of the `a=candidate` line `line` (1-based), which
    /// spans `value` of `buf`.
    fn parse(buf: &'a [u8], value: Span, line: usize) -> Result<Self, SdpError> {
        let bad = |what| SdpError::Field {
            line,
            field: "a=candidate",
            what,
        };
        let mut f = fields(buf, value).map(|span| text(buf, span));
        let (
            Some(foundation),
            Some(component),
            Some(transport),
            Some(priority),
            Some(address),
            Some(port),
            Some("typ"),
            Some(kind),
        ) = (
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
        )
        else {
            return Err(bad(
                "expected <foundation> <component> <transport> <priority> <address> <port> typ <type>",
            ));
        };
        let mut candidate = Candidate {
            foundation,
            component: decimal(component.as_bytes()).ok_or(bad("component is not a number"))?,
            transport,
            priority: decimal(priority.as_bytes()).ok_or(bad("priority is not a 32-bit number"))?,
            address,
            ip: address.parse().ok(),
            port: decimal(port.as_bytes()).ok_or(bad("port is not a number from 0 to 65535"))?,
            kind,
            related_address: None,
            related_port: None,
            line,
        };
        // Extension attributes come in name/value pairs; only two are typed.
        while let (Some(name), Some(value)) = (f.next(), f.next()) {
            match name {
                "raddr" => candidate.related_address = Some(value),
                "rport" => {
                    candidate.related_port =
                        Some(decimal(value.as_bytes()).ok_or(bad("rport is not a port number"))?);
                }
                _ => {}
            }
        }
        Ok(candidate)
    }
}

/// `a=crypto` (RFC 4568 §9.1): SDES keying. The key material is opaque here;
/// the SBC passes it through or replaces the whole line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto<'a> {
    /// `<tag>`.
    pub tag: u32,
    /// `<crypto-suite>`, e.g. `AES_CM_128_HMAC_SHA1_80`.
    pub suite: &'a str,
    /// `<key-params>`, e.g. `inline:<key>|2^20|1:32` (`;`-separated when
    /// there are several keys).
    pub key_params: &'a str,
    /// The `<session-param>`s after the key params, as written.
    pub session_params: Option<&'a str>,
    /// 1-based line number.
    pub line: usize,
}

impl<'a> Crypto<'a> {
    /// Parses the value of the `a=crypto` line `line` (1-based), which spans
    /// `value` of `buf`.
    fn parse(buf: &'a [u8], value: Span, line: usize) -> Result<Self, SdpError> {
        let bad = |what| SdpError::Field {
            line,
            field: "a=crypto",
            what,
        };
        let mut f = fields(buf, value);
        let (Some(tag), Some(suite), Some(key_params)) = (f.next(), f.next(), f.next()) else {
            return Err(bad("expected <tag> <crypto-suite> <key-params>"));
        };
        let session_params = Some(text(buf, f.rest())).filter(|s| !s.is_empty());
        // RFC 4568: tag = 1*9DIGIT.
        let tag = Some(bytes(buf, tag))
            .filter(|t| t.len() <= 9)
            .and_then(decimal)
            .ok_or(bad("tag is not a number of at most 9 digits"))?;
        Ok(Crypto {
            tag,
            suite: text(buf, suite),
            key_params: text(buf, key_params),
            session_params,
            line,
        })
    }
}

/// One media description: the `m=` line and the lines up to the next one.
#[derive(Debug, Clone, Copy)]
pub struct MediaSection<'a> {
    sdp: &'a Sdp,
    index: usize,
    entry: &'a MediaEntry,
}

impl<'a> MediaSection<'a> {
    /// Position of this section among the `m=` lines, from 0. RFC 3264 §6
    /// pairs offer and answer sections by this position.
    pub fn index(&self) -> usize {
        self.index
    }

    /// 1-based line number of the `m=` line.
    pub fn line(&self) -> usize {
        self.entry.line as usize + 1
    }

    /// The media type.
    pub fn kind(&self) -> MediaKind {
        match self.media_type() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "text" => MediaKind::Text,
            "application" => MediaKind::Application,
            "message" => MediaKind::Message,
            "image" => MediaKind::Image,
            _ => MediaKind::Other,
        }
    }

    /// The `<media>` token as written.
    pub fn media_type(&self) -> &'a str {
        self.text(self.entry.media)
    }

    /// The transport port; 0 means the stream is disabled (RFC 3264 §8.2).
    pub fn port(&self) -> u16 {
        self.entry.port
    }

    /// The `/<number of ports>` of `m=audio 49170/2 ...`, if present.
    pub fn port_count(&self) -> Option<u16> {
        self.entry.port_count
    }

    /// The `<proto>` token: `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`,
    /// `udptl`, ...
    pub fn proto(&self) -> &'a str {
        self.text(self.entry.proto)
    }

    /// The `<fmt>` tokens in order (payload types for RTP).
    pub fn formats(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let buf = self.sdp.buf.as_slice();
        fields(buf, self.entry.formats).map(|span| text(buf, span))
    }

    /// The media-level `c=` line (the first, if there are several).
    pub fn connection(&self) -> Option<Connection<'a>> {
        self.entry.connection.map(|c| self.sdp.connection_view(c))
    }

    /// The connection media goes to: media-level `c=`, else session-level.
    /// `None` only for a disabled stream in a body without any `c=`.
    pub fn effective_connection(&self) -> Option<Connection<'a>> {
        self.connection().or_else(|| self.sdp.connection())
    }

    /// The direction attribute of this section, if it has one.
    pub fn own_direction(&self) -> Option<Direction> {
        self.entry.direction.map(|(direction, _)| direction)
    }

    /// The effective direction: media level, else session level, else
    /// `sendrecv` (RFC 3264 §5.1).
    pub fn direction(&self) -> Direction {
        self.own_direction()
            .or_else(|| self.sdp.direction())
            .unwrap_or(Direction::SendRecv)
    }

    /// `a=rtcp`, if present.
    pub fn rtcp(&self) -> Option<Rtcp<'a>> {
        self.entry.rtcp.map(|r| Rtcp {
            port: r.port,
            connection: r.connection.map(|c| self.sdp.connection_view(c)),
            line: r.line as usize + 1,
        })
    }

    /// Whether `a=rtcp-mux` is present (RFC 5761 §5.1.1).
    pub fn rtcp_mux(&self) -> bool {
        self.entry.rtcp_mux
    }

    /// Whether the stream is disabled: port 0 (RFC 3264 §8.2).
    pub fn is_disabled(&self) -> bool {
        self.entry.port == 0
    }

    /// Whether the sender of this description puts the stream on hold: it is
    /// enabled, and either its direction is `sendonly` or `inactive`
    /// (RFC 3264 §8.4) or its connection is `0.0.0.0` (RFC 2543 style).
    pub fn is_hold(&self) -> bool {
        !self.is_disabled()
            && (matches!(self.direction(), Direction::SendOnly | Direction::Inactive)
                || self
                    .effective_connection()
                    .is_some_and(|c| c.is_unspecified()))
    }

    /// The attributes of this section, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'a>> + use<'a> {
        self.sdp
            .attributes_in(self.entry.line as usize + 1, self.entry.end as usize)
    }

    /// The first attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'a>> {
        self.attributes().find(|a| a.name == name)
    }

    /// The media-level ICE attributes.
    pub fn ice(&self) -> IceAttributes<'a> {
        ice_of(self.attributes())
    }

    /// The `a=candidate` lines, each parsed on demand.
    pub fn candidates(&self) -> impl Iterator<Item = Result<Candidate<'a>, SdpError>> + use<'a> {
        let buf = self.sdp.buf.as_slice();
        self.attribute_spans(b"candidate")
            .map(move |(value, line)| Candidate::parse(buf, value, line))
    }

    /// The `a=crypto` lines, each parsed on demand.
    pub fn crypto(&self) -> impl Iterator<Item = Result<Crypto<'a>, SdpError>> + use<'a> {
        let buf = self.sdp.buf.as_slice();
        self.attribute_spans(b"crypto")
            .map(move |(value, line)| Crypto::parse(buf, value, line))
    }

    /// The value span (empty without a value) and 1-based line number of
    /// each attribute named `name` in this section.
    fn attribute_spans(
        &self,
        name: &'static [u8],
    ) -> impl Iterator<Item = (Span, usize)> + use<'a> {
        let from = self.entry.line as usize + 1;
        let lines: &'a [Line] = self
            .sdp
            .lines
            .get(from..self.entry.end as usize)
            .unwrap_or_default();
        let buf = self.sdp.buf.as_slice();
        lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.kind == b'a')
            .filter_map(move |(offset, line)| {
                let value = line.value();
                let (found, att_value) = split_once(buf, value, b':');
                (bytes(buf, found) == name).then(|| {
                    let empty = Span {
                        start: value.end,
                        end: value.end,
                    };
                    (att_value.unwrap_or(empty), from + offset + 1)
                })
            })
    }

    fn text(&self, span: Span) -> &'a str {
        text(&self.sdp.buf, span)
    }
}

fn ice_of<'a>(attributes: impl Iterator<Item = Attribute<'a>>) -> IceAttributes<'a> {
    let mut ice = IceAttributes::default();
    for a in attributes {
        match a.name {
            "ice-ufrag" => ice.ufrag = a.value,
            "ice-pwd" => ice.pwd = a.value,
            "ice-options" => ice.options = a.value,
            "ice-lite" => ice.lite = true,
            "ice-mismatch" => ice.mismatch = true,
            "end-of-candidates" => ice.end_of_candidates = true,
            "remote-candidates" => ice.remote_candidates = a.value,
            "candidate" => ice.candidates += 1,
            _ => {}
        }
    }
    ice
}

impl Sdp {
    /// The body exactly as parsed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// A copy of the body; byte-identical to the input.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.buf.clone()
    }

    /// Appends the body to `out`; byte-identical to the input.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf);
    }

    /// The terminator of the first line; lines the editor inserts use it.
    pub fn line_ending(&self) -> LineEnding {
        self.eol
    }

    /// The protocol version: always 0, the only one the parser accepts.
    pub fn version(&self) -> u32 {
        0
    }

    /// The `o=` line.
    pub fn origin(&self) -> Origin<'_> {
        let o = &self.origin;
        Origin {
            username: self.text(o.username),
            session_id: self.text(o.session_id),
            session_version: o.session_version,
            session_version_text: self.text(o.version),
            nettype: self.text(o.nettype),
            addrtype: self.text(o.addrtype),
            address: self.text(o.address),
            ip: o.ip,
            line: o.line as usize + 1,
        }
    }

    /// The `s=` text, as bytes: it may be in a non-UTF-8 charset. Empty for
    /// `s=` with nothing after it (RFC 4317 prints those); `None` without `s=`.
    pub fn session_name(&self) -> Option<&[u8]> {
        self.session_name
            .and_then(|idx| self.lines.get(idx as usize))
            .map(|line| bytes(&self.buf, line.value()))
    }

    /// The session-level `c=` line (the first, if there are several).
    pub fn connection(&self) -> Option<Connection<'_>> {
        self.connection.map(|c| self.connection_view(c))
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        self.direction.map(|(direction, _)| direction)
    }

    /// The session-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        self.attributes_in(0, self.session_end as usize)
    }

    /// The first session-level attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        self.attributes().find(|a| a.name == name)
    }

    /// The session-level ICE attributes.
    pub fn ice(&self) -> IceAttributes<'_> {
        ice_of(self.attributes())
    }

    /// Whether any ICE attribute appears at any level.
    pub fn has_ice(&self) -> bool {
        self.attributes_in(0, self.lines.len())
            .any(|a| ICE_ATTRIBUTES.contains(&a.name))
    }

    /// How many media sections there are.
    pub fn media_count(&self) -> usize {
        self.media.len()
    }

    /// The media section at `index` (0-based, in `m=` order).
    pub fn media_section(&self, index: usize) -> Option<MediaSection<'_>> {
        self.media.get(index).map(|entry| MediaSection {
            sdp: self,
            index,
            entry,
        })
    }

    /// All media sections in `m=` order.
    pub fn media(&self) -> impl ExactSizeIterator<Item = MediaSection<'_>> {
        self.media
            .iter()
            .enumerate()
            .map(|(index, entry)| MediaSection {
                sdp: self,
                index,
                entry,
            })
    }

    /// Whether this description puts the call on hold: at least one stream
    /// is enabled and every enabled stream is on hold
    /// ([`MediaSection::is_hold`]).
    pub fn is_hold(&self) -> bool {
        let mut enabled = self.media().filter(|m| !m.is_disabled()).peekable();
        enabled.peek().is_some() && enabled.all(|m| m.is_hold())
    }

    /// An editor that rewrites a copy of this description.
    pub fn editor(&self) -> SdpEditor<'_> {
        SdpEditor::new(self)
    }

    pub(super) fn connection_view(&self, c: ConnEntry) -> Connection<'_> {
        Connection {
            addrtype: c.addrtype,
            address: self.text(c.address),
            ip: c.ip,
            line: c.line as usize + 1,
        }
    }

    /// The `a=` lines among `lines[from..to]`.
    pub(super) fn attributes_in(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = Attribute<'_>> {
        let lines: &[Line] = self.lines.get(from..to).unwrap_or_default();
        lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.kind == b'a')
            .map(move |(offset, line)| {
                let (name, value) = split_once(&self.buf, line.value(), b':');
                // Uninterpreted attributes may be in another charset.
                let lossy =
                    |span| std::str::from_utf8(bytes(&self.buf, span)).unwrap_or("\u{FFFD}");
                Attribute {
                    name: lossy(name),
                    value: value.map(lossy),
                    raw: bytes(&self.buf, line.value()),
                    line: from + offset + 1,
                }
            })
    }

    fn text(&self, span: Span) -> &str {
        text(&self.buf, span)
    }
}
