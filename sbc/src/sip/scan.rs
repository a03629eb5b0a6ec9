//! RFC 3261 §25 lexical rules shared by the URI and header grammars.
//!
//! Owns: the `token` character class, linear white space with line folding
//! (`LWS = [*WSP CRLF] 1*WSP`, and a bare-LF fold for peers that end lines
//! with LF alone),
//! quoted strings with quoted-pairs, splitting comma-separated header values
//! (§7.3.1), `1*DIGIT` scalars, and validated `;name[=value]` parameter lists
//! ([`Params`], §25 `generic-param`), validated once and iterated for free.
//!
//! Contract: every function works on bytes, borrows from its input, never
//! allocates and never panics, whatever the input (indices past the end are
//! treated as "end of input"). Only spans whose grammar guarantees ASCII are
//! turned into `&str`, through a checked [`std::str::from_utf8`].
//!
//! Liberal on purpose: inside a quoted string any octet but `"` and `\` is
//! accepted as `qdtext` (including raw controls and non-UTF-8): a display name
//! is opaque to the SBC and is forwarded byte for byte. Line breaks are the
//! exception: a CR or LF is accepted only as part of a fold, so a value can
//! never smuggle a header line.

/// A lexical defect: what was expected, and the offset (in the slice that was
/// scanned) where it went wrong. `Copy` and allocation-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct ScanError {
    /// The defect in words, e.g. "unterminated quoted string".
    pub what: &'static str,
    /// Byte offset of the defect in the scanned slice.
    pub at: usize,
}

impl ScanError {
    /// A defect `what` at offset `at`.
    pub const fn new(what: &'static str, at: usize) -> Self {
        Self { what, at }
    }
}

/// `token` characters (RFC 3261 §25): alphanumerics and `-.!%*_+` `` ` `` `'~`.
pub const fn is_token_char(b: u8) -> bool {
    TOKEN[b as usize]
}

/// One lookup per byte on the hottest loop of the parser.
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    table
};

/// Whether `b` is SP or HT.
pub const fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// The index of the first byte at or after `i` that is not LWS. Skips SP, HT
/// and folds (CRLF or bare LF followed by SP/HT). A CR or LF that is not a
/// fold is not LWS and stops the scan.
pub fn skip_lws(s: &[u8], mut i: usize) -> usize {
    loop {
        match s.get(i) {
            Some(b' ' | b'\t') => i += 1,
            Some(b'\r')
                if s.get(i + 1) == Some(&b'\n') && s.get(i + 2).is_some_and(|&b| is_wsp(b)) =>
            {
                i += 3
            }
            Some(b'\n') if s.get(i + 1).is_some_and(|&b| is_wsp(b)) => i += 2,
            _ => return i,
        }
    }
}

/// `s` without leading and trailing LWS.
pub fn trim_lws(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let mut end = s.len();
    loop {
        let before = end;
        while end > start && is_wsp(s[end - 1]) {
            end -= 1;
        }
        if end == before {
            break;
        }
        // The white space just removed may have been the tail of a fold.
        if end >= start + 2 && &s[end - 2..end] == b"\r\n" {
            end -= 2;
        } else if end > start && s[end - 1] == b'\n' {
            end -= 1;
        }
    }
    &s[start..end]
}

/// The index after the run of token characters starting at `i` (`i` itself if
/// there is none).
pub fn token_end(s: &[u8], i: usize) -> usize {
    let mut j = i;
    while s.get(j).is_some_and(|&b| is_token_char(b)) {
        j += 1;
    }
    j
}

/// The token starting at `i` and the index after it, or `None` if no token
/// character is at `i`.
pub fn token(s: &[u8], i: usize) -> Option<(&str, usize)> {
    let end = token_end(s, i);
    if end == i {
        return None;
    }
    let text = std::str::from_utf8(s.get(i..end)?).ok()?;
    Some((text, end))
}

/// The quoted string starting at `i` (`s[i]` must be `"`): the whole string
/// including both quotes, and the index after the closing quote. Quoted-pairs
/// (`\` + any octet but CR/LF) are skipped, so `\"` does not close it.
pub fn quoted_string(s: &[u8], i: usize) -> Result<(&[u8], usize), ScanError> {
    if s.get(i) != Some(&b'"') {
        return Err(ScanError::new("expected quoted string", i));
    }
    let mut j = i + 1;
    loop {
        match s.get(j) {
            None => return Err(ScanError::new("unterminated quoted string", i)),
            Some(b'"') => return Ok((&s[i..=j], j + 1)),
            Some(b'\\') => match s.get(j + 1) {
                None => return Err(ScanError::new("unterminated quoted string", i)),
                Some(b'\r' | b'\n') => {
                    return Err(ScanError::new("line break escaped in quoted string", j));
                }
                Some(_) => j += 2,
            },
            Some(b'\r' | b'\n') => {
                let next = skip_lws(s, j);
                if next == j {
                    return Err(ScanError::new("line break in quoted string", j));
                }
                j = next;
            }
            Some(_) => j += 1,
        }
    }
}

/// Why [`digits`] found no number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigitsError {
    /// No digit at the starting index.
    Missing,
    /// The digits (all consumed, ending at the index given) exceed the maximum.
    TooLarge(usize),
}

/// Reads `1*DIGIT` at `i` (leading zeros allowed): its value and the index
/// after the last digit. The whole digit run is consumed even when it
/// overflows, so a 100-digit Expires is one error, not a number and garbage.
pub fn digits(s: &[u8], i: usize, max: u32) -> Result<(u32, usize), DigitsError> {
    let mut j = i;
    let mut value: u32 = 0;
    let mut overflow = false;
    while let Some(&b) = s.get(j).filter(|b| b.is_ascii_digit()) {
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(b - b'0')))
        {
            Some(v) if v <= max => value = v,
            _ => overflow = true,
        }
        j += 1;
    }
    match (j == i, overflow) {
        (true, _) => Err(DigitsError::Missing),
        (false, true) => Err(DigitsError::TooLarge(j)),
        (false, false) => Ok((value, j)),
    }
}

/// Splits a header value on the commas that separate list elements (RFC 3261
/// §7.3.1), ignoring commas inside quoted strings and inside `<...>`. Yields
/// each element trimmed of LWS; there is always one more element than there
/// are separating commas, so an empty element (`a,,b`, a trailing `,`, or an
/// empty value) is yielded as an empty slice for the caller to reject.
///
/// An unterminated quote or `<` runs to the end of the value: that element
/// then fails its own parse, which names the defect.
pub fn split_values(value: &[u8]) -> SplitValues<'_> {
    SplitValues {
        s: value,
        pos: 0,
        done: false,
    }
}

/// Iterator returned by [`split_values`].
#[derive(Clone, Debug)]
pub struct SplitValues<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Iterator for SplitValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        // Jump between the only bytes that matter (memchr): a quote opens a
        // quoted string (commas inside don't split), '<' opens a URI (commas
        // and quotes inside don't count until '>'), and a comma splits.
        let mut j = start;
        while let Some(k) = s
            .get(j..)
            .and_then(|rest| memchr::memchr3(b'"', b'<', b',', rest))
        {
            j += k;
            match s[j] {
                b'"' => {
                    j += 1;
                    loop {
                        match s
                            .get(j..)
                            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                        {
                            Some(k) if s[j + k] == b'"' => {
                                j += k + 1;
                                break;
                            }
                            // A quoted-pair: skip the escaped byte.
                            Some(k) => j += k + 2,
                            // Unterminated: the rest of the value is one element.
                            None => {
                                j = s.len();
                                break;
                            }
                        }
                    }
                }
                b'<' => match s.get(j..).and_then(|rest| memchr::memchr(b'>', rest)) {
                    Some(k) => j += k + 1,
                    None => break,
                },
                _ => {
                    self.pos = j + 1;
                    return Some(trim_lws(&s[start..j]));
                }
            }
        }
        self.done = true;
        Some(trim_lws(s.get(start..).unwrap_or_default()))
    }
}

impl std::iter::FusedIterator for SplitValues<'_> {}

/// A validated parameter list: `*( SEMI name [ EQUAL value ] )`, borrowed from
/// the message.
///
/// Built by [`Params::parse`] for header parameters (RFC 3261 §25
/// `generic-param`: `token [ EQUAL ( token / host / quoted-string ) ]`, with
/// LWS allowed around `;` and `=`) or by the URI parser for URI parameters
/// (§19.1.1, no LWS). Validation happens once; iterating is infallible and
/// yields `(name, value)` with the value as written (quoted strings keep their
/// quotes, escapes are not decoded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
}

impl<'a> Params<'a> {
    /// Parses header parameters at the start of `s`: see [`Params::parse_at`].
    pub fn parse(s: &'a [u8]) -> Result<(Params<'a>, usize), ScanError> {
        Self::parse_at(s, 0)
    }

    /// Parses header parameters starting at index `start` of `s` (LWS before
    /// the first `;` is allowed) and returns them with the index where they
    /// end: the first byte that does not continue the list, which the caller
    /// checks (trailing LWS is not consumed). Errors are offsets into `s`.
    ///
    /// An empty name (`;;`, a trailing `;`: RFC 4475 badinv01), a name that
    /// is not a token, or `=` without a value is an error. A value is a token,
    /// a quoted string or a bracketed IPv6 reference; for `received` a bare
    /// IPv6 address is accepted too (RFC 3261 §20.42 `via-received`,
    /// RFC 5118 §4.5), the one place a value holds unquoted colons.
    pub fn parse_at(s: &'a [u8], start: usize) -> Result<(Params<'a>, usize), ScanError> {
        Self::parse_with(s, start, |_, _, _| Ok(()))
    }

    /// [`Params::parse_at`], calling `visit(name, value, offset of name)` for
    /// each parameter as it is validated, so a typed view can interpret the
    /// ones it knows without scanning the list twice. An error from `visit`
    /// stops the parse.
    pub fn parse_with<E: From<ScanError>>(
        s: &'a [u8],
        start: usize,
        mut visit: impl FnMut(&'a [u8], Option<&'a [u8]>, usize) -> Result<(), E>,
    ) -> Result<(Params<'a>, usize), E> {
        let mut end = start;
        loop {
            let semi = skip_lws(s, end);
            if s.get(semi) != Some(&b';') {
                break;
            }
            let name_start = skip_lws(s, semi + 1);
            let name_end = token_end(s, name_start);
            if name_end == name_start {
                let what = match s.get(name_start) {
                    None | Some(b';' | b',') => "empty header parameter",
                    Some(_) => "bad character in header parameter name",
                };
                return Err(ScanError::new(what, name_start).into());
            }
            let name = &s[name_start..name_end];
            let eq = skip_lws(s, name_end);
            let value = if s.get(eq) == Some(&b'=') {
                let v = skip_lws(s, eq + 1);
                end = match s.get(v) {
                    Some(b'"') => quoted_string(s, v)?.1,
                    Some(b'[') => ipv6_reference_end(s, v)
                        .ok_or(ScanError::new("bad IPv6 reference in header parameter", v))?,
                    _ => {
                        let received = name.eq_ignore_ascii_case(b"received");
                        let e = run_end(s, v, |b| is_token_char(b) || (received && b == b':'));
                        if e == v {
                            return Err(ScanError::new("header parameter without value", v).into());
                        }
                        e
                    }
                };
                Some(&s[v..end])
            } else {
                end = name_end;
                None
            };
            visit(name, value, name_start)?;
        }
        // `start` past the end leaves `end == start`: an empty list.
        let raw = s.get(start..end).unwrap_or_default();
        Ok((Params { raw }, end))
    }

    /// Wraps a span that a stricter grammar (the URI parser) has already
    /// validated: names and values hold none of `;`, `=`, `"`, SP, HT, CR, LF.
    pub(crate) const fn from_validated(raw: &'a [u8]) -> Self {
        Self { raw }
    }

    /// The parameters as written, from the first `;` (or the LWS before it).
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether there are no parameters.
    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The first parameter named `name` (ASCII case-insensitive): `None` if
    /// absent, `Some(None)` if present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Iterates over `(name, value)` in order of appearance.
    pub fn iter(&self) -> ParamsIter<'a> {
        ParamsIter {
            s: self.raw,
            pos: 0,
        }
    }
}

impl<'a> IntoIterator for &Params<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    type IntoIter = ParamsIter<'a>;

    fn into_iter(self) -> ParamsIter<'a> {
        self.iter()
    }
}

/// Iterator over a validated [`Params`].
#[derive(Clone, Debug)]
pub struct ParamsIter<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for ParamsIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        // The span was validated, so this only has to find the boundaries.
        let s = self.s;
        let semi = skip_lws(s, self.pos);
        if s.get(semi) != Some(&b';') {
            return None;
        }
        let name_start = skip_lws(s, semi + 1);
        let name_end = run_end(s, name_start, |b| !is_param_delim(b) && b != b'=');
        let name = s.get(name_start..name_end)?;
        self.pos = name_end;
        let eq = skip_lws(s, name_end);
        if s.get(eq) != Some(&b'=') {
            return Some((name, None));
        }
        let v = skip_lws(s, eq + 1);
        let end = if s.get(v) == Some(&b'"') {
            quoted_string(s, v).ok()?.1
        } else {
            run_end(s, v, |b| !is_param_delim(b))
        };
        self.pos = end;
        Some((name, Some(s.get(v..end)?)))
    }
}

impl std::iter::FusedIterator for ParamsIter<'_> {}

/// Bytes that end an unquoted parameter name or value in a validated list.
const fn is_param_delim(b: u8) -> bool {
    matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n')
}

fn run_end(s: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while s.get(i).is_some_and(|&b| keep(b)) {
        i += 1;
    }
    i
}

/// The index after `[` IPv6 characters `]` starting at `i`, if well formed.
/// Only the character set is checked here; the URI layer decides what an
/// address is.
fn ipv6_reference_end(s: &[u8], i: usize) -> Option<usize> {
    let close = run_end(s, i + 1, |b| {
        b.is_ascii_hexdigit() || b == b':' || b == b'.'
    });
    (close > i + 1 && s.get(close) == Some(&b']')).then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(s: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
        let (p, end) = Params::parse(s).expect("params parse");
        assert_eq!(skip_lws(s, end), s.len(), "params consumed everything");
        p.iter().collect()
    }

    #[test]
    fn token_chars_are_exactly_rfc3261() {
        let expected: Vec<u8> = (0u8..=255)
            .filter(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b))
            .collect();
        let actual: Vec<u8> = (0u8..=255).filter(|&b| is_token_char(b)).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn skip_lws_handles_folds() {
        assert_eq!(skip_lws(b"  \t x", 0), 4);
        assert_eq!(skip_lws(b" \r\n  x", 0), 5);
        assert_eq!(skip_lws(b"\n\tx", 0), 2);
        // CRLF not followed by white space is a line end, not LWS.
        assert_eq!(skip_lws(b" \r\nx", 0), 1);
        assert_eq!(skip_lws(b"\r", 0), 0);
        assert_eq!(skip_lws(b"ab", 7), 7);
    }

    #[test]
    fn trim_lws_strips_folds_at_both_ends() {
        assert_eq!(trim_lws(b"\r\n sip:a@b ;x \r\n\t "), b"sip:a@b ;x");
        assert_eq!(trim_lws(b"a\n "), b"a");
        assert_eq!(trim_lws(b" \r\n "), b"");
        assert_eq!(trim_lws(b""), b"");
        // A trailing line end without white space after it is not LWS.
        assert_eq!(trim_lws(b"a\r\n"), b"a\r\n");
    }

    #[test]
    fn token_returns_ascii_text() {
        assert_eq!(token(b"INVITE sip", 0), Some(("INVITE", 6)));
        assert_eq!(token(b" x", 0), None);
        assert_eq!(token(b"", 3), None);
    }

    #[test]
    fn quoted_strings() {
        // wsinv From: "J Rosenberg \\\"" (an escaped backslash, then an escaped quote).
        let s = br#""J Rosenberg \\\""       <sip:jdrosen@example.com>"#;
        let (q, end) = quoted_string(s, 0).unwrap();
        assert_eq!(q, br#""J Rosenberg \\\"""#);
        assert_eq!(s[end], b' ');
        // intmeth To: quoted NUL, BEL and DEL.
        let s = b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:x@y>";
        assert_eq!(quoted_string(s, 0).unwrap().1, 22);
        // UTF-8 and a fold inside the quotes are fine.
        assert!(quoted_string("\"Jos\u{e9}\r\n Doe\"".as_bytes(), 0).is_ok());
        // quotbal: never closed.
        let err = quoted_string(b"\"Mr. J. User <sip:j.user@example.com>", 0).unwrap_err();
        assert_eq!(err, ScanError::new("unterminated quoted string", 0));
        assert!(quoted_string(b"\"a\\", 0).is_err());
        assert!(quoted_string(b"\"a\r\nX: y\"", 0).is_err());
        assert!(quoted_string(b"\"a\\\r\n b\"", 0).is_err());
        assert!(quoted_string(b"abc", 0).is_err());
        assert!(quoted_string(b"", 5).is_err());
    }

    #[test]
    fn digits_with_leading_zeros_and_overflow() {
        assert_eq!(digits(b"0009 INVITE", 0, u32::MAX), Ok((9, 4)));
        assert_eq!(digits(b"4294967295", 0, u32::MAX), Ok((u32::MAX, 10)));
        assert_eq!(
            digits(b"4294967296", 0, u32::MAX),
            Err(DigitsError::TooLarge(10))
        );
        // scalar02's CSeq.
        assert_eq!(
            digits(b"36893488147419103232 REGISTER", 0, u32::MAX),
            Err(DigitsError::TooLarge(20))
        );
        assert_eq!(digits(b"256", 0, 255), Err(DigitsError::TooLarge(3)));
        assert_eq!(digits(b"-999", 0, u32::MAX), Err(DigitsError::Missing));
        assert_eq!(digits(b"", 0, u32::MAX), Err(DigitsError::Missing));
    }

    #[test]
    fn split_values_respects_quotes_and_brackets() {
        // wsinv's two Via values.
        let via = b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239";
        let v: Vec<&[u8]> = split_values(via).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8"
        );
        assert_eq!(
            v[1],
            b"SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239"
        );

        // badaspec From: the comma is inside quotes.
        let v: Vec<&[u8]> =
            split_values(br#""Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423"#).collect();
        assert_eq!(v.len(), 1);
        // baddn From: the comma is not quoted, so there are two values.
        let v: Vec<&[u8]> =
            split_values(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").collect();
        assert_eq!(
            v,
            [&b"Bell"[..], b"Alexander <sip:a.g.bell@example.com>;tag=43"]
        );
        // intmeth: commas inside <...> (the URI's user part) and escaped quotes.
        let to = b"\"BEL:\\\x07 \\\" ,\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>";
        assert_eq!(split_values(to).count(), 1);
        // semiuri Accept, folded over three lines.
        let accept = b"application/sdp, application/pkcs7-mime,\r\n        multipart/mixed, multipart/signed,\r\n        message/sip, message/sipfrag";
        let v: Vec<&[u8]> = split_values(accept).collect();
        assert_eq!(v.len(), 6);
        assert_eq!(v[2], b"multipart/mixed");
        assert_eq!(v[5], b"message/sipfrag");
    }

    #[test]
    fn split_values_yields_empty_elements() {
        // badinv01 Via and wsinv's UnknownHeaderWithUnusualValue.
        let v: Vec<&[u8]> = split_values(b"SIP/2.0/UDP 192.0.2.15;;,;,,").collect();
        assert_eq!(v, [&b"SIP/2.0/UDP 192.0.2.15;;"[..], b";", b"", b""]);
        assert_eq!(split_values(b";;,,;;,;").count(), 4);
        assert_eq!(split_values(b"").collect::<Vec<_>>(), [&b""[..]]);
        assert_eq!(split_values(b"a, ").collect::<Vec<_>>(), [&b"a"[..], b""]);
        // Unterminated quote: the rest is one element.
        assert_eq!(split_values(b"\"a, b").count(), 1);
    }

    #[test]
    fn header_params_with_lws_and_quotes() {
        // wsinv To, From and m: parameters.
        assert_eq!(
            params(b" ;   tag    = 1918181833n"),
            [(&b"tag"[..], Some(&b"1918181833n"[..]))]
        );
        assert_eq!(
            params(b"\r\n  ;\r\n  tag = 98asjd8"),
            [(&b"tag"[..], Some(&b"98asjd8"[..]))]
        );
        assert_eq!(
            params(b" ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33"),
            [
                (&b"newparam"[..], Some(&b"newvalue"[..])),
                (b"secondparam", None),
                (b"q", Some(b"0.33")),
            ]
        );
        // intmeth From: token punctuation in the name, UTF-8 in a quoted value.
        let s = ";fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.";
        let p = params(s.as_bytes());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, b"fromParam''~+*_!.-%");
        assert!(p[0].1.unwrap().starts_with(b"\""));
        assert_eq!(p[1], (&b"tag"[..], Some(&b"_token~1'+`*%!-."[..])));
        // RFC 5118 received, bracketed and bare.
        assert_eq!(
            params(b";received=[2001:db8::9:255];branch=z9hG4bKas3-111")[0].1,
            Some(&b"[2001:db8::9:255]"[..])
        );
        assert_eq!(
            params(b";received=2001:db8::9:255;branch=z9hG4bKas3")[0].1,
            Some(&b"2001:db8::9:255"[..])
        );
    }

    #[test]
    fn header_params_stop_at_the_first_foreign_byte() {
        let s = b";a=b  ,c";
        let (p, end) = Params::parse(s).unwrap();
        assert_eq!(end, 4);
        assert_eq!(p.as_bytes(), b";a=b");
        let (p, end) = Params::parse_at(b"host ", 4).unwrap();
        assert!(p.is_empty());
        assert_eq!(end, 4);
        // Colons are only allowed unquoted in `received`.
        assert_eq!(Params::parse(b";maddr=2001:db8::1").unwrap().1, 11);
    }

    #[test]
    fn header_param_errors() {
        // badinv01 Via and Contact.
        let err = Params::parse(b";;").unwrap_err();
        assert_eq!(err, ScanError::new("empty header parameter", 1));
        assert_eq!(
            Params::parse(b";;;;").unwrap_err().what,
            "empty header parameter"
        );
        assert_eq!(Params::parse(b";a ; ").unwrap_err().at, 5);
        assert_eq!(
            Params::parse(b";").unwrap_err().what,
            "empty header parameter"
        );
        assert_eq!(
            Params::parse(b";tag=").unwrap_err().what,
            "header parameter without value"
        );
        assert_eq!(
            Params::parse(b";tag= ;x").unwrap_err().what,
            "header parameter without value"
        );
        assert_eq!(
            Params::parse(b";\"x\"=1").unwrap_err().what,
            "bad character in header parameter name"
        );
        assert_eq!(
            Params::parse(b";x=\"abc").unwrap_err().what,
            "unterminated quoted string"
        );
        assert_eq!(
            Params::parse(b";x=[2001:db8::1").unwrap_err().what,
            "bad IPv6 reference in header parameter"
        );
    }

    #[test]
    fn params_lookup_is_case_insensitive() {
        let (p, _) = Params::parse(b";Tag=abc;lr;Q=0.5").unwrap();
        assert_eq!(p.get("tag"), Some(Some(&b"abc"[..])));
        assert_eq!(p.get("LR"), Some(None));
        assert_eq!(p.get("q"), Some(Some(&b"0.5"[..])));
        assert_eq!(p.get("expires"), None);
        assert_eq!((&p).into_iter().count(), 3);
        assert!(!p.is_empty());
        assert!(Params::default().is_empty());
        assert_eq!(Params::default().iter().next(), None);
    }

    proptest! {
        #[test]
        fn scanners_never_panic(s in proptest::collection::vec(any::<u8>(), 0..64), i in 0usize..80) {
            let _ = skip_lws(&s, i);
            let _ = trim_lws(&s);
            let _ = token(&s, i);
            let _ = quoted_string(&s, i);
            let _ = digits(&s, i, u32::MAX);
            prop_assert!(split_values(&s).count() >= 1);
            if let Ok((p, end)) = Params::parse_at(&s, i) {
                prop_assert!(end == i || end <= s.len());
                for (name, _) in p.iter() {
                    prop_assert!(!name.is_empty());
                }
            }
        }

        #[test]
        fn params_round_trip(
            items in proptest::collection::vec(
                ("[a-zA-Z0-9!%*_+`'~.-]{1,8}", proptest::option::of("[a-z0-9.]{1,6}|\"[ a-z,;=]{0,6}\"")),
                0..6,
            ),
            lws in "( |\r\n |\t)?",
        ) {
            let mut text = String::new();
            for (name, value) in &items {
                text.push_str(&lws);
                text.push(';');
                text.push_str(&lws);
                text.push_str(name);
                if let Some(v) = value {
                    text.push_str(&lws);
                    text.push('=');
                    text.push_str(&lws);
                    text.push_str(v);
                }
            }
            let (p, end) = Params::parse(text.as_bytes()).expect("valid params");
            prop_assert_eq!(end, text.len());
            let got: Vec<_> = p.iter().collect();
            prop_assert_eq!(got.len(), items.len());
            for ((n, v), (name, value)) in got.iter().zip(&items) {
                prop_assert_eq!(*n, name.as_bytes());
                prop_assert_eq!(*v, value.as_ref().map(|v| v.as_bytes()));
            }
        }

        #[test]
        fn split_values_without_quotes_splits_on_every_comma(parts in proptest::collection::vec("[a-z; =]{0,6}", 1..5)) {
            let joined = parts.join(",");
            let got: Vec<&[u8]> = split_values(joined.as_bytes()).collect();
            let want: Vec<&[u8]> = parts.iter().map(|p| trim_lws(p.as_bytes())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
