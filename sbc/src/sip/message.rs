//! The SIP message model and its parser (RFC 3261 §7, §18.3, §20).
//!
//! A [`Message`] owns exactly the bytes it was parsed from (leading CRLFs and
//! any datagram bytes past Content-Length removed) and describes them with
//! spans: the start line, each header line in its original order (name, value,
//! and the whole line including folding and terminator), the empty line, and
//! the body. Printing an unedited message therefore reproduces its bytes
//! exactly, and an unknown header is never touched.
//!
//! Parsing is one pass over the lines plus one pass over the headers the SBC
//! relies on (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length,
//! Contact, Route, Record-Route, Expires, the option-tag headers and
//! Content-Type), so that a message that parses is one the rest of the SBC can
//! use without a second line of defence. Typed views are re-derived on demand
//! from the spans; they borrow from the message and allocate nothing.
//!
//! Liberal/strict choices (RFC 4475 §3.1.2 lets a server pick) are documented
//! where they are made; the rule of thumb is: strict on the start line and on
//! every header the SBC interprets (it rewrites them and must not propagate a
//! defect), liberal on everything it passes through untouched.

use super::error::{ParseError, ParseErrorKind, Shape};
use super::header::{self, CSeq, Contact, HeaderError, MediaType, NameAddr, Via};
use super::name::HeaderName;
use super::scan;
use super::uri::{Scheme, Uri};

/// The defect named when Content-Length or Expires is not a number.
pub(crate) const NOT_U32: &str = "not a decimal number below 2^32";

/// An empty element in a comma-separated list (`a,,b`, RFC 4475 badinv01).
const EMPTY_VALUE: HeaderError = HeaderError {
    what: "empty value between commas",
    at: 0,
};

/// Size and count limits, so that no input makes the parser allocate without
/// bound. The defaults fit any legitimate SIP message (RFC 4475 longreq is
/// 3.5 KB) while capping a hostile one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, header section and body together (a UDP datagram can't
    /// exceed 65,535 bytes; TCP gets the same cap).
    pub max_message_bytes: usize,
    /// Most header lines in one message.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 65_535,
            max_headers: 256,
        }
    }
}

/// A request method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Message,
    Refer,
    Subscribe,
    Notify,
    Publish,
    /// Any other token; its spelling is in [`Message::method_bytes`].
    Extension,
}

impl Method {
    /// Classifies a method token exactly as written.
    pub fn from_bytes(token: &[u8]) -> Method {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"MESSAGE" => Method::Message,
            b"REFER" => Method::Refer,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            _ => Method::Extension,
        }
    }

    /// The method name, or `None` for an extension method.
    pub const fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Extension => return None,
        })
    }
}

/// A byte range in one of the message's buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Self {
        // Messages are capped far below 4 GiB (Limits), so offsets fit in u32.
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Where a piece of the message lives: the received bytes, or bytes an edit
/// added (see [`super::edit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    Orig(Span),
    Added(Span),
}

/// The first line of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`.
    Request {
        /// The classified method.
        method: Method,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    Response {
        /// 100..=699.
        code: u16,
    },
}

/// One header line: its classified name and where its parts live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: HeaderName,
    /// The name as written; `Added` for headers an edit introduced.
    pub(crate) name_at: Loc,
    /// The value, from after `:` and its whitespace to the end of the last
    /// (folded) line, excluding the terminator.
    pub(crate) value_at: Loc,
    /// The whole original line(s) including the terminator, while the field
    /// is unedited; `None` once an edit touched it (then it is re-printed as
    /// `name: value`).
    pub(crate) line: Option<Span>,
}

/// A read-only view of one header line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The classified name.
    pub name: HeaderName,
    /// The name exactly as written (compact form, odd case and all).
    pub name_bytes: &'a [u8],
    /// The value with surrounding whitespace trimmed; folding inside is kept.
    pub value: &'a [u8],
}

/// A parsed SIP request or response. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The received bytes, exactly the message.
    pub(crate) buf: Vec<u8>,
    /// Bytes introduced by edits; spans tagged [`Loc::Added`] point here.
    pub(crate) added: Vec<u8>,
    pub(crate) start: StartLine,
    /// The start line including its terminator, while unedited.
    pub(crate) start_line: Option<Span>,
    /// Method token (requests) or SIP-Version (responses), as written.
    pub(crate) first: Span,
    /// Request-URI (requests) or Reason-Phrase (responses).
    pub(crate) third: Loc,
    /// SIP-Version (requests) or Status-Code (responses).
    pub(crate) second: Span,
    pub(crate) fields: Vec<Field>,
    /// The empty line closing the header section.
    pub(crate) blank: Span,
    pub(crate) body: Loc,
    /// The line terminator this message uses (CRLF, or LF from a liberal
    /// peer); lines the editor adds use the same.
    pub(crate) crlf: bool,
}

/// How the message was delimited by its transport (RFC 3261 §18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// A datagram: Content-Length bounds the body, bytes past it are
    /// discarded; without Content-Length the body is the rest of the datagram.
    Datagram,
    /// Exactly one message cut from a stream by the framer, which has already
    /// required and applied Content-Length.
    Stream,
}

impl Message {
    /// Parses one message received as a datagram, with the default [`Limits`].
    ///
    /// Leading CRLFs are ignored (§7.5); bytes past Content-Length are
    /// discarded (§18.3, RFC 4475 dblreq). The bytes are copied once into the
    /// message's own buffer; use [`Message::parse_owned`] to avoid the copy.
    pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
        Self::parse_owned(datagram.to_vec(), &Limits::default())
    }

    /// Parses a datagram already in a buffer the message may keep.
    pub fn parse_owned(datagram: Vec<u8>, limits: &Limits) -> Result<Message, ParseError> {
        parse(datagram, limits, Framing::Datagram)
    }

    pub(crate) fn parse_framed(bytes: Vec<u8>, limits: &Limits) -> Result<Message, ParseError> {
        parse(bytes, limits, Framing::Stream)
    }

    pub(crate) fn bytes(&self, loc: Loc) -> &[u8] {
        Self::bytes_in(&self.buf, &self.added, loc)
    }

    fn bytes_in<'a>(buf: &'a [u8], added: &'a [u8], loc: Loc) -> &'a [u8] {
        match loc {
            Loc::Orig(span) => &buf[span.range()],
            Loc::Added(span) => &added[span.range()],
        }
    }

    /// The start line's kind.
    pub fn start_line(&self) -> StartLine {
        self.start
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request.
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The method token as written (requests), e.g. for extension methods.
    pub fn method_bytes(&self) -> Option<&[u8]> {
        self.is_request().then(|| &self.buf[self.first.range()])
    }

    /// The Request-URI bytes (requests).
    pub fn request_uri_bytes(&self) -> Option<&[u8]> {
        self.is_request().then(|| self.bytes(self.third))
    }

    /// The parsed Request-URI (requests). Always `Some` for a parsed request
    /// unless an edit set an invalid one.
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        Uri::parse(self.request_uri_bytes()?).ok()
    }

    /// The status code (responses).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase as written (responses; may be empty or non-ASCII).
    pub fn reason(&self) -> Option<&[u8]> {
        (!self.is_request()).then(|| self.bytes(self.third))
    }

    /// Every header line in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> + '_ {
        self.fields.iter().map(|f| self.view(f))
    }

    pub(crate) fn view(&self, field: &Field) -> Header<'_> {
        Self::view_in(&self.buf, &self.added, field)
    }

    /// A header view from the buffers alone (for the editor, which holds the
    /// field list mutably at the same time).
    pub(crate) fn view_in<'a>(buf: &'a [u8], added: &'a [u8], field: &Field) -> Header<'a> {
        Header {
            name: field.name,
            name_bytes: Self::bytes_in(buf, added, field.name_at),
            value: scan::trim_lws(Self::bytes_in(buf, added, field.value_at)),
        }
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        let field = self.fields.iter().find(|f| f.name == name)?;
        Some(scan::trim_lws(self.bytes(field.value_at)))
    }

    /// The index (in [`Message::headers`] order) of the first header with this name.
    pub fn position(&self, name: HeaderName) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Every comma-separated value of every header with this name, in order
    /// (RFC 3261 §7.3.1: `Via: a, b` is the same as two Via lines). Only
    /// meaningful for list headers; empty elements are skipped.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .flat_map(|f| scan::split_values(scan::trim_lws(self.bytes(f.value_at))))
            .filter(|v| !v.is_empty())
    }

    /// The Via stack, topmost first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, HeaderError>> + '_ {
        self.values(HeaderName::Via).map(Via::parse)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.vias().next()?.ok()
    }

    /// From (§20.20). `None` only if an edit removed or broke it.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse(self.header(HeaderName::From)?).ok()
    }

    /// To (§20.39).
    pub fn to(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse(self.header(HeaderName::To)?).ok()
    }

    /// Call-ID (§20.8).
    pub fn call_id(&self) -> Option<&[u8]> {
        header::parse_call_id(self.header(HeaderName::CallId)?).ok()
    }

    /// CSeq (§20.16).
    pub fn cseq(&self) -> Option<CSeq<'_>> {
        CSeq::parse(self.header(HeaderName::CSeq)?).ok()
    }

    /// Max-Forwards (§20.22); `None` when absent (RFC 2543 peers omit it).
    pub fn max_forwards(&self) -> Option<u8> {
        header::parse_max_forwards(self.header(HeaderName::MaxForwards)?).ok()
    }

    /// Content-Length (§20.14) as written; the body is framed by it.
    pub fn content_length(&self) -> Option<u32> {
        header::parse_u32(self.header(HeaderName::ContentLength)?, NOT_U32).ok()
    }

    /// Content-Type (§20.15).
    pub fn content_type(&self) -> Option<MediaType<'_>> {
        MediaType::parse(self.header(HeaderName::ContentType)?).ok()
    }

    /// Expires (§20.19).
    pub fn expires(&self) -> Option<u32> {
        header::parse_u32(self.header(HeaderName::Expires)?, NOT_U32).ok()
    }

    /// Contact values (§20.10), including `*`.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, HeaderError>> + '_ {
        self.values(HeaderName::Contact).map(Contact::parse)
    }

    /// Route values (§20.34), in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> + '_ {
        self.values(HeaderName::Route).map(NameAddr::parse)
    }

    /// Record-Route values (§20.30), in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, HeaderError>> + '_ {
        self.values(HeaderName::RecordRoute).map(NameAddr::parse)
    }

    /// Option tags of every header with this name (Require, Proxy-Require,
    /// Supported, Unsupported). Malformed tags are skipped; a parsed message
    /// has none.
    pub fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.headers()
            .filter(move |h| h.name == name)
            .filter_map(|h| header::option_tags(h.value).ok())
            .flat_map(|tags| tags.iter())
    }

    /// The body (framed by Content-Length).
    pub fn body(&self) -> &[u8] {
        self.bytes(self.body)
    }
}

/// The parser proper. `buf` may start with CRLFs and (datagrams) carry bytes
/// past the message; both are cut away so that `buf` is exactly the message.
fn parse(mut buf: Vec<u8>, limits: &Limits, framing: Framing) -> Result<Message, ParseError> {
    let mut shape = Shape::Unknown;
    let mut has_via = false;
    let fail = |kind, shape, has_via| ParseError::new(kind, shape, has_via);

    // §7.5: ignore CRLFs before the start line (keepalives, sloppy peers).
    let lead = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if lead == buf.len() {
        return Err(fail(ParseErrorKind::Empty, shape, has_via));
    }
    // Spans are u32 offsets: no limit may let a message outgrow them.
    let max_bytes = limits.max_message_bytes.min(u32::MAX as usize);
    if buf.len() - lead > max_bytes {
        let limit = max_bytes as u32;
        return Err(fail(ParseErrorKind::TooLarge { limit }, shape, has_via));
    }
    if lead > 0 {
        buf.drain(..lead);
    }

    // ---- start line -------------------------------------------------------
    let Some((line_end, next)) = line_at(&buf, 0) else {
        return Err(fail(ParseErrorKind::Unterminated, shape, has_via));
    };
    let crlf = line_end < next - 1;
    let start = parse_start_line(&buf[..line_end]);
    shape = start.shape;
    let parts = match start.result {
        Ok(parts) => parts,
        // Whether a 400/505 can be routed back depends on a Via further down.
        Err(kind) => return Err(fail(kind, shape, has_via_line(&buf, next))),
    };

    // ---- header lines -------------------------------------------------------
    // One Vec for the whole message, no allocation per header; 32 entries
    // cover a carrier INVITE without growing.
    let mut fields: Vec<Field> = Vec::with_capacity(32);
    let mut lines = HeaderLines::new(&buf, next);
    for line in &mut lines {
        // Whether a 400 can be routed back depends on a Via anywhere below.
        let line = line.map_err(|kind| fail(kind, shape, has_via_line(&buf, next)))?;
        if fields.len() == limits.max_headers {
            let limit = u32::try_from(limits.max_headers).unwrap_or(u32::MAX);
            let kind = ParseErrorKind::TooManyHeaders { limit };
            return Err(fail(kind, shape, has_via_line(&buf, next)));
        }
        has_via |= line.name == HeaderName::Via;
        fields.push(Field {
            name: line.name,
            name_at: Loc::Orig(line.name_span),
            value_at: Loc::Orig(line.value),
            line: Some(line.whole),
        });
    }
    let Some(blank) = lines.blank else {
        return Err(fail(ParseErrorKind::Unterminated, shape, has_via));
    };

    let mut msg = Message {
        buf,
        added: Vec::new(),
        start: parts.start,
        start_line: Some(Span::new(0, next)),
        first: parts.first,
        second: parts.second,
        third: Loc::Orig(parts.third),
        fields,
        blank,
        body: Loc::Orig(Span::default()),
        crlf,
    };

    // ---- headers the SBC interprets ------------------------------------------
    let content_length = validate(&msg).map_err(|kind| fail(kind, shape, has_via))?;

    // ---- body (§18.3) ---------------------------------------------------------
    let body_start = blank.end as usize;
    let available = msg.buf.len() - body_start;
    let body_len = match (content_length, framing) {
        (Some(len), _) if len as usize > available => {
            return Err(fail(
                ParseErrorKind::ContentLengthExceedsBody,
                shape,
                has_via,
            ));
        }
        (Some(len), _) => len as usize,
        // RFC 2543 peers (RFC 4475 inv2543): the body is the rest of the datagram.
        (None, Framing::Datagram) => available,
        (None, Framing::Stream) => {
            return Err(fail(ParseErrorKind::MissingContentLength, shape, has_via));
        }
    };
    msg.buf.truncate(body_start + body_len);
    msg.body = Loc::Orig(Span::new(body_start, body_start + body_len));
    Ok(msg)
}

/// Finds the line starting at `pos`: returns (end of content, start of next
/// line). Accepts CRLF and, liberally, bare LF. `None` if no terminator.
pub(crate) fn line_at(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let rest = buf.get(pos..)?;
    let lf = memchr::memchr(b'\n', rest)?;
    let end = if lf > 0 && rest[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some((pos + end, pos + lf + 1))
}

/// Whether any well-formed header line from `pos` on is a Via; used only
/// when the message is already known to be bad, to decide whether an answer
/// is routable.
fn has_via_line(buf: &[u8], pos: usize) -> bool {
    HeaderLines::new(buf, pos)
        .filter_map(Result::ok)
        .any(|line| line.name == HeaderName::Via)
}

/// One logical header line: continuation lines (folding, §7.3.1) joined.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeaderLine {
    pub(crate) name: HeaderName,
    /// The name as written, without whitespace before the colon.
    pub(crate) name_span: Span,
    /// From after the colon and its whitespace to the end of the last
    /// continuation line, excluding its terminator.
    pub(crate) value: Span,
    /// The whole line(s), terminator included.
    pub(crate) whole: Span,
}

/// The header lines of a header section, from `pos` (just past the start
/// line) to the empty line that closes it. The one place that splits header
/// lines, so the parser and the stream framer can't disagree about folding
/// or names. A malformed line is an `Err` item and iteration goes on past
/// it; a missing empty line ends iteration with `blank` unset.
pub(crate) struct HeaderLines<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The empty line, once reached.
    pub(crate) blank: Option<Span>,
    done: bool,
}

impl<'a> HeaderLines<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Self {
            buf,
            pos,
            blank: None,
            done: false,
        }
    }
}

impl Iterator for HeaderLines<'_> {
    type Item = Result<HeaderLine, ParseErrorKind>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let buf = self.buf;
        let start = self.pos;
        let Some((end, mut next)) = line_at(buf, start) else {
            self.done = true;
            return Some(Err(ParseErrorKind::Unterminated));
        };
        if end == start {
            self.done = true;
            self.blank = Some(Span::new(start, next));
            return None;
        }
        // Join continuation lines (the value runs on to their end).
        let mut value_end = end;
        while matches!(buf.get(next), Some(b' ' | b'\t')) {
            match line_at(buf, next) {
                Some((end, after)) => (value_end, next) = (end, after),
                None => break,
            }
        }
        self.pos = next;
        if matches!(buf[start], b' ' | b'\t') {
            return Some(Err(ParseErrorKind::BadHeaderLine(
                "continuation line before any header",
            )));
        }
        let line = &buf[start..end];
        let Some(colon) = memchr::memchr(b':', line) else {
            return Some(Err(ParseErrorKind::BadHeaderLine(
                "header line without a colon",
            )));
        };
        // HCOLON allows whitespace before the colon (§25.1).
        let name = line[..colon].trim_ascii_end();
        if name.is_empty() || !name.iter().all(|&b| scan::is_token_char(b)) {
            return Some(Err(ParseErrorKind::BadHeaderLine(
                "header name is not a token",
            )));
        }
        let value_start = start
            + colon
            + 1
            + line[colon + 1..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
        Some(Ok(HeaderLine {
            name: HeaderName::from_bytes(name),
            name_span: Span::new(start, start + name.len()),
            value: Span::new(value_start, value_end),
            whole: Span::new(start, next),
        }))
    }
}

struct StartParts {
    start: StartLine,
    first: Span,
    second: Span,
    third: Span,
}

struct ParsedStart {
    shape: Shape,
    result: Result<StartParts, ParseErrorKind>,
}

/// Parses the start line (§7.1, §7.2), which begins at offset 0.
///
/// Strict by choice (RFC 4475 §3.1.2.7-11 allow either): one SP between the
/// elements (lwsstart, trws), no LWS or angle brackets in the Request-URI
/// (lwsruri, ltgtruri), no headers in it (escruri). The SBC regenerates the
/// start line on the other leg, so tolerating these would buy interop with
/// broken peers at the price of guessing what they meant.
fn parse_start_line(line: &[u8]) -> ParsedStart {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return ParsedStart {
            shape: Shape::Response,
            result: parse_status_line(line),
        };
    }
    let method_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let method = &line[..method_end];
    let method_kind = Method::from_bytes(method);
    let shape = Shape::Request {
        is_ack: method_kind == Method::Ack,
    };
    ParsedStart {
        shape,
        result: parse_request_line(line, method_end, method_kind),
    }
}

fn parse_request_line(
    line: &[u8],
    method_end: usize,
    method: Method,
) -> Result<StartParts, ParseErrorKind> {
    use ParseErrorKind::BadRequestLine;
    if method_end == 0 || !line[..method_end].iter().all(|&b| scan::is_token_char(b)) {
        return Err(BadRequestLine("method is not a token"));
    }
    let Some(last_sp) = line.iter().rposition(|&b| b == b' ') else {
        return Err(BadRequestLine(
            "expected Method SP Request-URI SP SIP-Version",
        ));
    };
    let version = &line[last_sp + 1..];
    if version.is_empty() {
        return Err(BadRequestLine("whitespace after SIP-Version"));
    }
    if last_sp <= method_end {
        return Err(BadRequestLine("missing SIP-Version"));
    }
    check_version(version)?;
    let uri_start = method_end + 1;
    let uri = &line[uri_start..last_sp];
    if uri.is_empty() || uri[0] == b' ' || uri[uri.len() - 1] == b' ' {
        return Err(BadRequestLine("more than one SP between elements"));
    }
    if uri.iter().any(|&b| b == b' ' || b == b'\t') {
        return Err(BadRequestLine("whitespace inside the Request-URI"));
    }
    let parsed = Uri::parse(uri).map_err(ParseErrorKind::BadRequestUri)?;
    if matches!(parsed.scheme(), Scheme::Sip | Scheme::Sips) && parsed.headers().is_some() {
        return Err(ParseErrorKind::HeadersInRequestUri);
    }
    Ok(StartParts {
        start: StartLine::Request { method },
        first: Span::new(0, method_end),
        second: Span::new(last_sp + 1, line.len()),
        third: Span::new(uri_start, last_sp),
    })
}

/// `SIP-Version SP Status-Code SP Reason-Phrase`. Liberal where the only
/// alternative is dropping a final response and leaving a call hanging: extra
/// SPs before the code (RFC 3665 §3.9 prints `SIP/2.0  486 Busy Here`) and a
/// missing SP before an empty reason phrase are tolerated.
fn parse_status_line(line: &[u8]) -> Result<StartParts, ParseErrorKind> {
    use ParseErrorKind::BadStatusLine;
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Err(BadStatusLine("expected SIP-Version SP Status-Code"));
    };
    check_version(&line[..sp]).map_err(|kind| match kind {
        ParseErrorKind::BadRequestLine(what) => BadStatusLine(what),
        other => other,
    })?;
    let code_start = sp + line[sp..].iter().take_while(|&&b| b == b' ').count();
    let digits = line[code_start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let code_end = code_start + digits;
    if digits != 3 {
        return Err(BadStatusLine("Status-Code is not three digits"));
    }
    let code = line[code_start..code_end]
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return Err(BadStatusLine("Status-Code out of range 100-699"));
    }
    let reason_start = match line.get(code_end) {
        None => code_end,
        Some(b' ') => code_end + 1,
        Some(_) => return Err(BadStatusLine("expected SP after Status-Code")),
    };
    Ok(StartParts {
        start: StartLine::Response { code },
        first: Span::new(0, sp),
        second: Span::new(code_start, code_end),
        third: Span::new(reason_start, line.len()),
    })
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`; only 2.0 is supported.
fn check_version(version: &[u8]) -> Result<(), ParseErrorKind> {
    let malformed = ParseErrorKind::BadRequestLine("malformed SIP-Version");
    if version.len() < 7 || !version[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(malformed);
    }
    let numbers = &version[4..];
    let Some(dot) = numbers.iter().position(|&b| b == b'.') else {
        return Err(malformed);
    };
    let (major, minor) = (&numbers[..dot], &numbers[dot + 1..]);
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !all_digits(major) || !all_digits(minor) {
        return Err(malformed);
    }
    if major != b"2" || minor != b"0" {
        return Err(ParseErrorKind::UnsupportedVersion);
    }
    Ok(())
}

/// Validates the headers the SBC interprets and returns Content-Length.
fn validate(msg: &Message) -> Result<Option<u32>, ParseErrorKind> {
    // Which headers were seen, one bit per `HeaderName` (fewer than 64).
    let mut seen: u64 = 0;
    let bit = |name: HeaderName| 1u64 << (name as u32);
    let mut content_length = None;
    let mut cseq_method: Option<&[u8]> = None;
    for field in &msg.fields {
        let name = field.name;
        if name == HeaderName::Other {
            continue;
        }
        if name.is_single() && seen & bit(name) != 0 {
            return Err(ParseErrorKind::DuplicateHeader(name));
        }
        seen |= bit(name);
        let value = || scan::trim_lws(msg.bytes(field.value_at));
        let bad = |error: HeaderError| ParseErrorKind::BadHeader { name, error };
        match name {
            HeaderName::Via => each_value(value(), |v| Via::parse(v).map(drop)).map_err(bad)?,
            HeaderName::From | HeaderName::To => {
                NameAddr::parse(value()).map_err(bad)?;
            }
            HeaderName::CallId => {
                header::parse_call_id(value()).map_err(bad)?;
            }
            HeaderName::CSeq => {
                cseq_method = Some(CSeq::parse(value()).map_err(bad)?.method.as_bytes());
            }
            HeaderName::MaxForwards => {
                header::parse_max_forwards(value()).map_err(bad)?;
            }
            HeaderName::ContentLength => {
                content_length = Some(header::parse_u32(value(), NOT_U32).map_err(bad)?);
            }
            HeaderName::Expires => {
                header::parse_u32(value(), NOT_U32).map_err(bad)?;
            }
            HeaderName::ContentType => {
                MediaType::parse(value()).map_err(bad)?;
            }
            HeaderName::Contact => {
                let mut star = false;
                let mut count = 0usize;
                each_value(value(), |v| {
                    star |= matches!(Contact::parse(v)?, Contact::Star);
                    count += 1;
                    Ok(())
                })
                .map_err(bad)?;
                // §10.2.2: `*` only in a REGISTER removing every binding.
                if star && (count > 1 || msg.method() != Some(Method::Register)) {
                    return Err(bad(HeaderError {
                        what: "Contact '*' outside a REGISTER or mixed with addresses",
                        at: 0,
                    }));
                }
            }
            HeaderName::Route | HeaderName::RecordRoute => each_value(value(), |v| {
                if NameAddr::parse(v)?.bracketed() {
                    Ok(())
                } else {
                    Err(HeaderError {
                        what: "route address not enclosed in <>",
                        at: 0,
                    })
                }
            })
            .map_err(bad)?,
            // Supported may be empty (§20.37); the others need a tag.
            HeaderName::Supported => {
                header::option_tags(value()).map_err(bad)?;
            }
            HeaderName::Require | HeaderName::ProxyRequire | HeaderName::Unsupported
                if header::option_tags(value()).map_err(bad)?.is_empty() =>
            {
                return Err(bad(HeaderError {
                    what: "no option tag",
                    at: 0,
                }));
            }
            _ => {}
        }
    }
    let required = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    if let Some(missing) = required.into_iter().find(|&name| seen & bit(name) == 0) {
        return Err(ParseErrorKind::MissingHeader(missing));
    }
    if let (Some(method), Some(cseq_method)) = (msg.method_bytes(), cseq_method)
        && method != cseq_method
    {
        return Err(ParseErrorKind::CSeqMethodMismatch);
    }
    Ok(content_length)
}

/// Checks every comma-separated element of a list header; an empty element
/// (`a,,b`, RFC 4475 badinv01) is an error.
fn each_value(
    value: &[u8],
    mut check: impl FnMut(&[u8]) -> Result<(), HeaderError>,
) -> Result<(), HeaderError> {
    for element in scan::split_values(value) {
        if element.is_empty() {
            return Err(EMPTY_VALUE);
        }
        check(element)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{ServerPolicy, check};

    const OPTIONS: &str = "OPTIONS sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 63104 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

    fn verdict(text: &str) -> String {
        match Message::parse(text.as_bytes()) {
            Ok(msg) => check(&msg, &ServerPolicy::default()).to_string(),
            Err(e) => e.response().to_string(),
        }
    }

    #[test]
    fn a_bad_line_above_the_via_still_gets_an_answer() {
        let text = OPTIONS.replace("Via:", "Garbage line\r\nVia:");
        assert_eq!(
            verdict(&text),
            "answer 400 Bad Request (malformed header line: header line without a colon)"
        );
    }

    #[test]
    fn the_method_is_checked_before_the_scheme() {
        let text = OPTIONS
            .replace(
                "OPTIONS sip:bob@biloxi.example.com",
                "FOO mailto:bob@example.com",
            )
            .replace("63104 OPTIONS", "63104 FOO");
        assert!(
            verdict(&text).starts_with("answer 501"),
            "{}",
            verdict(&text)
        );
    }

    #[test]
    fn contact_star_belongs_to_register_only() {
        let invite = OPTIONS
            .replace("OPTIONS sip", "INVITE sip")
            .replace("63104 OPTIONS", "63104 INVITE")
            .replace("Content-Length", "Contact: *\r\nContent-Length");
        assert!(
            verdict(&invite).starts_with("answer 400"),
            "{}",
            verdict(&invite)
        );
        let register = OPTIONS
            .replace(
                "OPTIONS sip:bob@biloxi.example.com",
                "REGISTER sip:biloxi.example.com",
            )
            .replace("63104 OPTIONS", "63104 REGISTER")
            .replace(
                "Content-Length",
                "Contact: *\r\nExpires: 0\r\nContent-Length",
            );
        assert_eq!(verdict(&register), "accept");
    }

    #[test]
    fn require_needs_a_tag_supported_may_be_empty() {
        let empty_require = OPTIONS.replace("Content-Length", "Require:\r\nContent-Length");
        assert!(
            verdict(&empty_require).starts_with("answer 400"),
            "{}",
            verdict(&empty_require)
        );
        let empty_supported = OPTIONS.replace("Content-Length", "Supported:\r\nContent-Length");
        assert_eq!(verdict(&empty_supported), "accept");
    }

    #[test]
    fn folding_and_header_lookup_agree_with_the_framer() {
        let folded = OPTIONS.replace("Content-Length: 0", "Content-Length:\r\n  0");
        let msg = Message::parse(folded.as_bytes()).expect("folded Content-Length parses");
        assert_eq!(msg.content_length(), Some(0));
        assert_eq!(msg.to_bytes(), folded.as_bytes());
        let continuation_first = OPTIONS.replace("Via:", " Via:");
        assert!(matches!(
            Message::parse(continuation_first.as_bytes()),
            Err(ParseError {
                kind: ParseErrorKind::BadHeaderLine(_),
                ..
            })
        ));
    }

    #[test]
    fn duplicates_are_caught_for_every_single_valued_header() {
        for line in [
            "Call-ID: x\r\n",
            "CSeq: 1 OPTIONS\r\n",
            "From: <sip:a@b>;tag=1\r\n",
            "To: <sip:a@b>\r\n",
            "Max-Forwards: 1\r\n",
            "Content-Length: 0\r\n",
            "Content-Type: application/sdp\r\n",
            "Expires: 1\r\n",
        ] {
            let text = OPTIONS.replace("Via:", &format!("{line}{line}Via:"));
            let err = Message::parse(text.as_bytes()).expect_err(line);
            assert!(
                matches!(err.kind, ParseErrorKind::DuplicateHeader(_)),
                "{line}: {err}"
            );
        }
        // List headers may repeat.
        let text = OPTIONS.replace("Via:", "Supported: timer\r\nSupported: 100rel\r\nVia:");
        assert!(Message::parse(text.as_bytes()).is_ok());
        assert_eq!(verdict(&text), "accept");
    }
}
