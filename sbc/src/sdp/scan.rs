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
///
/// The one field splitter of the module: the parser, the on-demand views
/// (`a=candidate`, `a=crypto`, `m=` formats) and the editor all use it, so
/// they agree on what a field is.
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

impl Fields<'_> {
    /// What the fields not yet taken span, leading and trailing spaces
    /// excluded; empty when none is left.
    pub(super) fn rest(mut self) -> Span {
        self.skip_spaces();
        let mut end = self.end;
        while end > self.pos && self.buf.get(end as usize - 1) == Some(&b' ') {
            end -= 1;
        }
        Span {
            start: self.pos,
            end,
        }
    }

    fn skip_spaces(&mut self) {
        while self.pos < self.end && self.buf.get(self.pos as usize) == Some(&b' ') {
            self.pos += 1;
        }
    }
}

impl Iterator for Fields<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        let at = |pos: u32| self.buf.get(pos as usize).copied();
        self.skip_spaces();
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

/// Whether `field` is `1*DIGIT`: non-empty, ASCII digits only. Signs,
/// spaces and hex are rejected.
pub(super) fn is_digits(field: &[u8]) -> bool {
    !field.is_empty() && field.iter().all(u8::is_ascii_digit)
}

/// A `1*DIGIT` number ([`is_digits`]) that fits `T`.
pub(super) fn decimal<T: TryFrom<u64>>(digits: &[u8]) -> Option<T> {
    if !is_digits(digits) {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    T::try_from(value).ok()
}
