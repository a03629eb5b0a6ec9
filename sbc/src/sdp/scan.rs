//! Byte-level helpers shared by the parser, the views and the editor.
//!
//! Every slice access goes through `get`, so a wrong span (a bug, never an
//! input) yields an empty slice rather than a panic.

use std::ops::Range;

/// A byte range of the body. `u32` keeps the index small; the parser caps the
/// body far below `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) end: u32,
}

impl Span {
    pub(super) fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

pub(super) fn bytes(buf: &[u8], span: Span) -> &[u8] {
    buf.get(span.range()).unwrap_or_default()
}

/// The text of a span the parser validated as UTF-8. The fallback is never
/// taken for such spans; it keeps a bug from becoming a panic.
pub(super) fn text(buf: &[u8], span: Span) -> &str {
    std::str::from_utf8(bytes(buf, span)).unwrap_or_default()
}

/// Splits `span` at the first `sep`: the part before, and the part after if
/// `sep` occurs.
pub(super) fn split_once(buf: &[u8], span: Span, sep: u8) -> (Span, Option<Span>) {
    match bytes(buf, span).iter().position(|&b| b == sep) {
        Some(at) => {
            let at = span.start + at as u32;
            (
                Span {
                    start: span.start,
                    end: at,
                },
                Some(Span {
                    start: at + 1,
                    end: span.end,
                }),
            )
        }
        None => (span, None),
    }
}

/// The space-separated fields of a line value. RFC 8866 §5 asks for exactly
/// one SP between fields; runs of spaces (and trailing spaces) are accepted
/// because deployed stacks emit them and nothing is ambiguous about them.
pub(super) fn fields(buf: &[u8], span: Span) -> Fields<'_> {
    Fields {
        buf,
        pos: span.start,
        end: span.end,
    }
}

pub(super) struct Fields<'a> {
    buf: &'a [u8],
    pos: u32,
    end: u32,
}

impl Iterator for Fields<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        let at = |pos: u32| self.buf.get(pos as usize).copied();
        while self.pos < self.end && at(self.pos) == Some(b' ') {
            self.pos += 1;
        }
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        while self.pos < self.end && at(self.pos).is_some_and(|b| b != b' ') {
            self.pos += 1;
        }
        Some(Span {
            start,
            end: self.pos,
        })
    }
}

/// A non-empty string of ASCII digits that fits `T`. Signs, spaces and hex
/// are rejected: SDP numbers are `1*DIGIT`.
pub(super) fn decimal<T: TryFrom<u64>>(digits: &[u8]) -> Option<T> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    T::try_from(value).ok()
}

/// [`decimal`] for a `&str` field of an on-demand view.
pub(super) fn decimal_str<T: TryFrom<u64>>(digits: &str) -> Option<T> {
    decimal(digits.as_bytes())
}
