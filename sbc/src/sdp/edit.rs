//! The editor: records edits against a parsed [`Sdp`] and prints a new body
//! by copying every byte no edit touches.
//!
//! Edits are field replacements inside a line, line removals, and line
//! insertions. Repeating an edit replaces the earlier one (the last call
//! wins); an edit on a removed line is dropped. Inserted lines use the body's
//! [`LineEnding`](super::LineEnding); after an unterminated last line they
//! keep the body unterminated.
//!
//! Where a level has no line to rewrite, the editor inserts one:
//! * a session-level `c=` after the last of the `v= o= s= i= u= e= p=` lines,
//!   where RFC 8866 §5 puts it;
//! * a media-level `c=` right after `m=` (and its `i=`), so that changing one
//!   stream's address never moves the others, which inherit the session `c=`;
//! * `a=rtcp` and a direction attribute at the end of the media section.
//!
//! Lines inserted at the same place come out in RFC 8866 §5 order (`c=`
//! before `a=`), whatever order the calls came in; attributes among
//! themselves keep call order.
//!
//! Moving connections ([`SdpEditor::set_connection`] and its per-level
//! variants) follows two rules:
//! * An unspecified address (`0.0.0.0`, `::`) is left as it is: it is the
//!   RFC 2543 hold (RFC 3264 §8.4), and it reveals no topology.
//! * The address part of `a=rtcp` moves with the `c=` lines, so it cannot
//!   leak the far end, unless [`SdpEditor::set_rtcp`] set that `a=rtcp`:
//!   an explicit edit wins, whichever call came first.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::error::{EditError, SdpError};
use super::parse::{MediaEntry, Sdp};
use super::scan::{Span, bytes, fields, split_once, text};
use super::view::{AddrType, Direction, ICE_ATTRIBUTES};

/// Records edits against an [`Sdp`] and prints the rewritten body.
///
/// Methods chain: `editor.set_connection(ip).strip_ice()`. Methods that
/// address a media section by index return [`EditError::NoSuchMedia`] for an
/// index past [`Sdp::media_count`] rather than panicking.
#[derive(Debug, Clone)]
pub struct SdpEditor<'a> {
    sdp: &'a Sdp,
    /// Sorted by [`Edit::key`]; equal keys keep call order.
    edits: Vec<Edit>,
    /// The text of every replacement and inserted line, back to back.
    scratch: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    /// Index of the line edited, removed, or inserted after.
    line: u32,
    op: Op,
    /// `scratch[text.0..text.1]`.
    text: (usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Replace `buf[start..end]` within the line.
    Replace { start: u32, end: u32 },
    /// Drop the line and its terminator.
    Remove,
    /// Insert a line after the line; the slot says which edit made it, so a
    /// repeated call replaces its own line instead of adding another.
    Insert(Slot),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    SessionConnection,
    MediaConnection(usize),
    Rtcp(usize),
    Direction(usize),
}

impl Slot {
    /// Where an inserted line goes among lines inserted at the same place:
    /// RFC 8866 §5 puts `c=` before `b=`, `k=` and `a=`.
    fn rank(self) -> u32 {
        match self {
            Self::SessionConnection | Self::MediaConnection(_) => 0,
            Self::Rtcp(_) | Self::Direction(_) => 1,
        }
    }
}

impl Edit {
    /// Print order: by line; within a line, removal first (so replacements
    /// know to skip), then replacements left to right, then insertions by
    /// line kind ([`Slot::rank`]).
    fn key(&self) -> (u32, u8, u32) {
        match self.op {
            Op::Remove => (self.line, 0, 0),
            Op::Replace { start, .. } => (self.line, 0, start),
            Op::Insert(slot) => (self.line, 1, slot.rank()),
        }
    }
}

impl<'a> SdpEditor<'a> {
    pub(super) fn new(sdp: &'a Sdp) -> Self {
        Self {
            sdp,
            edits: Vec::new(),
            scratch: String::new(),
        }
    }

    /// Sets the `o=` address (and its address type from `ip`'s family),
    /// e.g. to hide the far end's host behind the SBC.
    pub fn set_origin_address(&mut self, ip: IpAddr) -> &mut Self {
        let o = self.sdp.origin;
        let span = Span {
            start: o.nettype.start,
            end: o.address.end,
        };
        self.replace(o.line, span, ConnectionValue { ip })
    }

    /// Sets `<sess-version>` of `o=`.
    pub fn set_origin_version(&mut self, version: u64) -> &mut Self {
        let o = self.sdp.origin;
        self.replace(o.line, o.version, version)
    }

    /// Sets `<sess-version>` to the version as written plus one, as a
    /// changed offer requires (RFC 3264 §8). Idempotent: calling it twice
    /// still adds one. The sum is computed on the decimal digits, so a
    /// version of any length (RFC 8866 §5.2), `u64::MAX` included, goes up
    /// by exactly one and never wraps.
    pub fn bump_origin_version(&mut self) -> &mut Self {
        let o = self.sdp.origin;
        let digits = bytes(&self.sdp.buf, o.version);
        self.replace(o.line, o.version, Incremented { digits })
    }

    /// Sets the address of every `c=` line, session and media level, to `ip`
    /// (`c=IN IP4 <ip>` or `c=IN IP6 <ip>`), and the address of every
    /// `a=rtcp` that has one. Every enabled stream has a `c=` at some level
    /// (the parser checks), so afterwards all media goes to `ip`, except
    /// streams on RFC 2543 hold (`0.0.0.0` or `::`), which stay on hold. A
    /// multicast `/ttl/count` is dropped: `ip` is a relay address. See the
    /// module docs for how this meets [`set_rtcp`](Self::set_rtcp).
    pub fn set_connection(&mut self, ip: IpAddr) -> &mut Self {
        let all = self.sdp.lines.len();
        self.set_connections(0, all, ip);
        self.set_rtcp_connections(0, all, ip);
        self
    }

    /// Sets the session-level `c=` address to `ip`, inserting a `c=` line if
    /// the session has none. Media-level `c=` lines still override it. An
    /// unspecified (hold) address is left as it is.
    pub fn set_session_connection(&mut self, ip: IpAddr) -> &mut Self {
        let session_end = self.sdp.session_end as usize;
        if self.set_connections(0, session_end, ip) {
            return self;
        }
        let anchor = self
            .sdp
            .lines
            .get(..session_end)
            .unwrap_or_default()
            .iter()
            .rposition(|line| b"vosiuep".contains(&line.kind))
            .unwrap_or_default();
        self.insert(
            anchor,
            Slot::SessionConnection,
            format_args!("c={}", ConnectionValue { ip }),
        )
    }

    /// Sets the `c=` address of media section `index`, and the address of
    /// its `a=rtcp` if it has one, inserting a media-level `c=` if the
    /// section inherits the session's. A stream on RFC 2543 hold (its `c=`,
    /// own or inherited, is `0.0.0.0` or `::`) keeps its connection.
    pub fn set_media_connection(
        &mut self,
        index: usize,
        ip: IpAddr,
    ) -> Result<&mut Self, EditError> {
        let m = self.entry(index)?;
        let (from, to) = (m.line as usize + 1, m.end as usize);
        self.set_rtcp_connections(from, to, ip);
        let held = self
            .sdp
            .connection
            .is_some_and(|c| c.ip.is_some_and(|address| address.is_unspecified()));
        if self.set_connections(from, to, ip) || held {
            return Ok(self);
        }
        let after_info = self
            .sdp
            .lines
            .get(m.line as usize + 1)
            .is_some_and(|line| line.kind == b'i');
        let anchor = m.line as usize + usize::from(after_info);
        Ok(self.insert(
            anchor,
            Slot::MediaConnection(index),
            format_args!("c={}", ConnectionValue { ip }),
        ))
    }

    /// Sets the port of media section `index`, keeping any `/<count>`.
    /// Port 0 disables the stream (RFC 3264 §8.2).
    pub fn set_media_port(&mut self, index: usize, port: u16) -> Result<&mut Self, EditError> {
        let m = self.entry(index)?;
        Ok(self.replace(m.line, m.port_span, port))
    }

    /// Sets `a=rtcp` of media section `index` to `port`, with an
    /// `IN <addrtype> <ip>` part when `ip` is given (RFC 3605 §2.1). Replaces
    /// the existing `a=rtcp` or appends one to the section. Wins over the
    /// `a=rtcp` address [`set_connection`](Self::set_connection) writes.
    pub fn set_rtcp(
        &mut self,
        index: usize,
        port: u16,
        ip: Option<IpAddr>,
    ) -> Result<&mut Self, EditError> {
        let m = self.entry(index)?;
        let existing = m.rtcp.map(|r| r.line);
        Ok(self.set_attribute(m, existing, Slot::Rtcp(index), RtcpValue { port, ip }))
    }

    /// Sets the direction attribute of media section `index`, replacing the
    /// existing one or appending one to the section.
    pub fn set_direction(
        &mut self,
        index: usize,
        direction: Direction,
    ) -> Result<&mut Self, EditError> {
        let m = self.entry(index)?;
        let existing = m.direction.map(|(_, line)| line);
        Ok(self.set_attribute(m, existing, Slot::Direction(index), direction.as_str()))
    }

    /// Removes every ICE attribute (RFC 8839: candidates, credentials,
    /// options, `ice-lite`, `ice-mismatch`, `remote-candidates`,
    /// `end-of-candidates`, `ice-pacing`) at session and media level, for an
    /// SBC that anchors media itself and does not do ICE towards this leg.
    pub fn strip_ice(&mut self) -> &mut Self {
        let sdp = self.sdp;
        for attribute in sdp.attributes_in(0, sdp.lines.len()) {
            if ICE_ATTRIBUTES.contains(&attribute.name) {
                // `Attribute::line` is 1-based.
                self.record(attribute.line as u32 - 1, Op::Remove, "");
            }
        }
        self
    }

    /// Sets the `<username>`, `<sess-id>` and `<sess-version>` of `o=`: an
    /// origin of the SBC's own in place of the far side's (its user name and
    /// session id identify its product and host). The address is left to
    /// [`set_origin_address`](Self::set_origin_address).
    pub fn set_origin(&mut self, username: &str, session_id: u64, version: u64) -> &mut Self {
        let o = self.sdp.origin;
        self.replace(o.line, o.username, username);
        self.replace(o.line, o.session_id, session_id);
        self.replace(o.line, o.version, version)
    }

    /// Sets the `s=` text (RFC 8866 §5.3: `-` when the session has no
    /// meaningful name). PBXs and phones put their product name there.
    pub fn set_session_name(&mut self, name: &str) -> &mut Self {
        match self.sdp.session_name.and_then(|line| self.line_value(line)) {
            Some((line, span)) => self.replace(line, span, name),
            None => self,
        }
    }

    /// Removes every attribute named in `names` (compared exactly, as RFC
    /// 8866 attribute names are case-sensitive), at session and media level.
    pub fn remove_attributes(&mut self, names: &[&str]) -> &mut Self {
        let sdp = self.sdp;
        for attribute in sdp.attributes_in(0, sdp.lines.len()) {
            if names.contains(&attribute.name) {
                // `Attribute::line` is 1-based.
                self.record(attribute.line as u32 - 1, Op::Remove, "");
            }
        }
        self
    }

    /// Replaces the CNAME of every `a=ssrc:<id> cname:<cname>` (RFC 5576
    /// §4.1; the CNAME runs to the end of the line) with `mask(cname)`.
    pub fn mask_ssrc_cnames(&mut self, mask: impl Fn(&[u8]) -> String) -> &mut Self {
        let sdp = self.sdp;
        for attribute in sdp.attributes_in(0, sdp.lines.len()) {
            if attribute.name != "ssrc" {
                continue;
            }
            let line = attribute.line as u32 - 1;
            let Some((_, span)) = self.line_value(line) else {
                continue;
            };
            let raw = bytes(&sdp.buf, span);
            let Some(at) = raw.windows(7).position(|w| w == b" cname:") else {
                continue;
            };
            let start = span.start + (at + 7) as u32;
            let cname = Span {
                start,
                end: span.end,
            };
            let masked = mask(bytes(&sdp.buf, cname));
            self.replace(line, cname, masked);
        }
        self
    }

    /// The rewritten body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.sdp.buf.len() + self.scratch.len() + 16);
        self.write_to(&mut out);
        out
    }

    /// Appends the rewritten body to `out`, copying untouched bytes.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let buf = &self.sdp.buf;
        let copy = |out: &mut Vec<u8>, from: u32, to: u32| {
            out.extend_from_slice(buf.get(from as usize..to as usize).unwrap_or_default());
        };
        let eol = self.sdp.eol.as_bytes();
        let mut pending = self.edits.as_slice();
        for (idx, line) in self.sdp.lines.iter().enumerate() {
            let count = pending
                .iter()
                .take_while(|e| e.line as usize == idx)
                .count();
            let (here, rest) = pending.split_at(count);
            pending = rest;

            let removed = here.iter().any(|e| e.op == Op::Remove);
            if !removed {
                let mut pos = line.start;
                for edit in here {
                    if let Op::Replace { start, end } = edit.op {
                        copy(out, pos, start);
                        out.extend_from_slice(self.text(edit));
                        pos = end;
                    }
                }
                copy(out, pos, line.next);
            }
            // After an unterminated last line, a new line needs a terminator
            // before it and none after it, so the body stays unterminated.
            let open = !removed && line.end == line.next;
            for edit in here.iter().filter(|e| matches!(e.op, Op::Insert(_))) {
                if open {
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(self.text(edit));
                if !open {
                    out.extend_from_slice(eol);
                }
            }
        }
        copy(out, self.sdp.trailer, buf.len() as u32);
    }

    /// Prints and parses the rewritten body. Parsing fails only when the
    /// edits push the body past the limits ([`MAX_LINES`](super::MAX_LINES),
    /// [`MAX_BODY_LEN`](super::MAX_BODY_LEN)).
    pub fn to_sdp(&self) -> Result<Sdp, SdpError> {
        Sdp::parse(&self.to_bytes())
    }

    fn entry(&self, index: usize) -> Result<&'a MediaEntry, EditError> {
        self.sdp.media.get(index).ok_or(EditError::NoSuchMedia {
            index,
            count: self.sdp.media.len(),
        })
    }

    /// The line index and value span of line `line`.
    fn line_value(&self, line: u32) -> Option<(u32, Span)> {
        self.sdp.lines.get(line as usize).map(|l| (line, l.value()))
    }

    /// Sets the attribute `a=<value>` of section `m`: replaces the whole
    /// value of line `existing` (dropping any narrower rewrite of that line,
    /// so the explicit edit wins), or inserts a line at the section end.
    fn set_attribute(
        &mut self,
        m: &MediaEntry,
        existing: Option<u32>,
        slot: Slot,
        value: impl fmt::Display,
    ) -> &mut Self {
        match existing.and_then(|line| self.line_value(line)) {
            Some((line, span)) => {
                self.edits
                    .retain(|e| !(e.line == line && matches!(e.op, Op::Replace { .. })));
                self.replace(line, span, value)
            }
            None => self.insert(m.end as usize - 1, slot, format_args!("a={value}")),
        }
    }

    /// Rewrites the value of every `c=` line among `lines[from..to]` whose
    /// address is not unspecified (RFC 2543 hold); false if there is no `c=`
    /// line at all.
    fn set_connections(&mut self, from: usize, to: usize, ip: IpAddr) -> bool {
        let sdp = self.sdp;
        let lines = sdp.lines.get(from..to).unwrap_or_default();
        let mut found = false;
        for (offset, line) in lines.iter().enumerate() {
            if line.kind != b'c' {
                continue;
            }
            found = true;
            // The parser validated every c=: the address is the third field.
            let held = fields(&sdp.buf, line.value())
                .nth(2)
                .map(|address| split_once(&sdp.buf, address, b'/').0)
                .and_then(|host| text(&sdp.buf, host).parse::<IpAddr>().ok())
                .is_some_and(|address| address.is_unspecified());
            if !held {
                self.replace((from + offset) as u32, line.value(), ConnectionValue { ip });
            }
        }
        found
    }

    /// Rewrites the address part of every `a=rtcp` among `lines[from..to]`
    /// that has one, keeping the port, unless the address is unspecified or
    /// [`set_rtcp`](Self::set_rtcp) already replaced the line.
    fn set_rtcp_connections(&mut self, from: usize, to: usize, ip: IpAddr) {
        let sdp = self.sdp;
        for rtcp in sdp.media.iter().filter_map(|m| m.rtcp) {
            let Some(conn) = rtcp.connection else {
                continue;
            };
            let in_range = (from..to).contains(&(rtcp.line as usize));
            let held = conn.ip.is_some_and(|address| address.is_unspecified());
            if in_range && !held && !self.replaced_whole(rtcp.line) {
                self.replace(rtcp.line, conn.fields, ConnectionValue { ip });
            }
        }
    }

    /// Whether an edit replaces the whole value of line `line` (what
    /// [`set_attribute`](Self::set_attribute) records).
    fn replaced_whole(&self, line: u32) -> bool {
        let Some((_, value)) = self.line_value(line) else {
            return false;
        };
        let whole = Op::Replace {
            start: value.start,
            end: value.end,
        };
        self.edits.iter().any(|e| e.line == line && e.op == whole)
    }

    fn text(&self, edit: &Edit) -> &[u8] {
        self.scratch
            .get(edit.text.0..edit.text.1)
            .unwrap_or_default()
            .as_bytes()
    }

    fn replace(&mut self, line: u32, span: Span, text: impl fmt::Display) -> &mut Self {
        let op = Op::Replace {
            start: span.start,
            end: span.end,
        };
        self.record(line, op, text)
    }

    fn insert(&mut self, after: usize, slot: Slot, line: impl fmt::Display) -> &mut Self {
        self.record(after as u32, Op::Insert(slot), line)
    }

    fn record(&mut self, line: u32, op: Op, text: impl fmt::Display) -> &mut Self {
        let start = self.scratch.len();
        // Formatting into a String cannot fail.
        let _ = write!(self.scratch, "{text}");
        let edit = Edit {
            line,
            op,
            text: (start, self.scratch.len()),
        };
        let key = edit.key();
        let first = self.edits.partition_point(|e| e.key() < key);
        let past = first
            + self
                .edits
                .get(first..)
                .unwrap_or_default()
                .iter()
                .take_while(|e| e.key() == key)
                .count();
        match self
            .edits
            .get_mut(first..past)
            .and_then(|same_key| same_key.iter_mut().find(|e| e.op == op))
        {
            Some(earlier) => *earlier = edit,
            None => self.edits.insert(past, edit),
        }
        self
    }
}

/// `IN <addrtype> <ip>`: the value of a `c=` line, or the tail of `o=` and
/// `a=rtcp`.
struct ConnectionValue {
    ip: IpAddr,
}

impl fmt::Display for ConnectionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IN {} {}", AddrType::of(self.ip).as_str(), self.ip)
    }
}

/// `rtcp:<port>[ IN <addrtype> <ip>]`, the attribute after `a=`.
struct RtcpValue {
    port: u16,
    ip: Option<IpAddr>,
}

impl fmt::Display for RtcpValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rtcp:{}", self.port)?;
        match self.ip {
            Some(ip) => write!(f, " {}", ConnectionValue { ip }),
            None => Ok(()),
        }
    }
}

/// The decimal number `digits` (ASCII digits, as the parser checked) plus
/// one, of any length: `0099` becomes `0100`, `99` becomes `100`.
struct Incremented<'a> {
    digits: &'a [u8],
}

impl fmt::Display for Incremented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The trailing nines become zeros; the digit before them goes up by
        // one, or a 1 is prepended when every digit is a nine.
        let nines = self.digits.iter().rev().take_while(|&&d| d == b'9').count();
        let (head, _) = self.digits.split_at(self.digits.len() - nines);
        match head.split_last() {
            Some((&last, kept)) => {
                for &d in kept {
                    f.write_char(char::from(d))?;
                }
                f.write_char(char::from(last + 1))?;
            }
            None => f.write_char('1')?,
        }
        for _ in 0..nines {
            f.write_char('0')?;
        }
        Ok(())
    }
}
