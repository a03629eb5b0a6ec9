//! URIs: SIP and SIPS (RFC 3261 §19.1, §25 `SIP-URI`/`SIPS-URI`), tel
//! (RFC 3966) and any other `absoluteURI` (RFC 3261 §25, after RFC 2396).
//!
//! Owns: checking that a whole byte slice is one URI and exposing its parts as
//! borrowed slices ([`Uri`]), and host syntax ([`Host`]), which Via's
//! `sent-by` and `maddr` reuse.
//!
//! Contract: the input is the URI and nothing else: no LWS inside (RFC 4475
//! lwsruri), no enclosing `<>` (ltgtruri), no trailing bytes. Nothing is
//! unescaped: `%HH` is validated where RFC 3261 allows it (user, password,
//! parameters, headers) and kept raw, so `sip:user;par=u%40example.net@example.com`
//! has user `user;par=u%40example.net` (RFC 4475 semiuri). No allocation, no
//! panic on any input.
//!
//! Choices, per RFC:
//! * Any syntactically valid scheme parses ([`Scheme::Other`]); whether to
//!   answer 416 is decided above this layer (RFC 4475 unkscm, novelsc, unksm2).
//! * IPv6 must be bracketed in SIP URIs (RFC 5118 §4.2 ipv6-bad fails). Inside
//!   the brackets only the character set is checked, so RFC 5118 §4.10's
//!   three-colon `[2001:db8:::192.0.2.1]` is tolerated; [`Host::ip`] is `None`
//!   for it. `sip:[2001:db8::10:5070]` is an address without port (§4.9).
//! * Host names follow RFC 3261 `hostname` strictly (labels of alphanumerics
//!   and inner hyphens, top label starting with a letter, one trailing dot
//!   allowed); an all-numeric host must be a valid dotted quad.
//! * The user part takes exactly RFC 3261's `user` characters: a `#` in a
//!   telephone-subscriber must be escaped (§19.1.2).
//! * tel: the number must be a `global-number-digits` or a
//!   `local-number-digits`; `phone-context` is not required for a local
//!   number (many peers omit it) and parameter names take the URI parameter
//!   character set.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::sip::scan::{DigitsError, Params, ScanError, digits};

/// Why a URI was rejected: the defect in words and its byte offset in the URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct UriError {
    /// The defect, e.g. "bad port in URI".
    pub what: &'static str,
    /// Byte offset of the defect in the URI.
    pub at: usize,
}

impl UriError {
    /// A defect `what` at offset `at` of the URI.
    pub const fn new(what: &'static str, at: usize) -> Self {
        Self { what, at }
    }
}

impl From<ScanError> for UriError {
    fn from(e: ScanError) -> Self {
        Self::new(e.what, e.at)
    }
}

/// A URI scheme, matched case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme<'a> {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other syntactically valid scheme, as written (without the colon).
    Other(&'a str),
}

/// The host of a SIP URI or Via `sent-by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name as written (case not folded).
    Domain(&'a str),
    /// A dotted-quad IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference, without the brackets, as written.
    V6(&'a str),
}

impl<'a> Host<'a> {
    /// Parses `s` as exactly one host: `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &'a [u8]) -> Result<Host<'a>, UriError> {
        let (host, end) = scan_host(s, 0)?;
        if end != s.len() {
            return Err(UriError::new("bad character in host", end));
        }
        Ok(host)
    }

    /// The address, if the host is a literal address that parses as one
    /// (`None` for names and for tolerated malformed IPv6 such as RFC 5118's
    /// three-colon form).
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Domain(_) => None,
            Host::V4(v4) => Some(IpAddr::V4(v4)),
            Host::V6(text) => parse_ipv6(text).map(IpAddr::V6),
        }
    }
}

impl fmt::Display for Host<'_> {
    /// As it would be written in a URI: IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(name) => f.write_str(name),
            Host::V4(v4) => write!(f, "{v4}"),
            Host::V6(text) => write!(f, "[{text}]"),
        }
    }
}

/// A validated URI borrowed from the message. See the module docs for what
/// is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a [u8],
    scheme: Scheme<'a>,
    user: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
    host: Option<Host<'a>>,
    port: Option<u16>,
    params: Params<'a>,
    headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    /// Parses `input`, which must be exactly one URI.
    pub fn parse(input: &'a [u8]) -> Result<Uri<'a>, UriError> {
        let colon = scheme_end(input)?;
        let name = &input[..colon];
        let scheme = if name.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if name.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if name.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            let name = std::str::from_utf8(name)
                .map_err(|_| UriError::new("bad character in URI scheme", 0))?;
            Scheme::Other(name)
        };
        let mut uri = Uri {
            raw: input,
            scheme,
            user: None,
            password: None,
            host: None,
            port: None,
            params: Params::default(),
            headers: None,
        };
        let rest = colon + 1;
        let end = match scheme {
            Scheme::Sip | Scheme::Sips => uri.parse_sip(rest)?,
            Scheme::Tel => uri.parse_tel(rest)?,
            Scheme::Other(_) => {
                let end = run(input, rest, URIC)?;
                if end == rest {
                    return Err(UriError::new("nothing after URI scheme", rest));
                }
                end
            }
        };
        match input.get(end) {
            None => Ok(uri),
            Some(b' ' | b'\t' | b'\r' | b'\n') => Err(UriError::new("white space in URI", end)),
            Some(_) => Err(UriError::new("unexpected character in URI", end)),
        }
    }

    /// `userinfo@hostport uri-parameters [headers]`, from `i` (after `sip:`).
    fn parse_sip(&mut self, mut i: usize) -> Result<usize, UriError> {
        let s = self.raw;
        // `@` can appear only once (escaped everywhere else), so the first one
        // ends the userinfo.
        if let Some(at) = s[i..].iter().position(|&b| b == b'@').map(|p| i + p) {
            let user_end = run(s, i, USER)?;
            if user_end == i {
                return Err(UriError::new("empty user part in URI", i));
            }
            self.user = Some(&s[i..user_end]);
            match s.get(user_end) {
                Some(b'@') => {}
                Some(b':') => {
                    let pw_end = run(s, user_end + 1, PASSWORD)?;
                    if pw_end != at {
                        return Err(UriError::new("bad character in URI password", pw_end));
                    }
                    self.password = Some(&s[user_end + 1..pw_end]);
                }
                _ => return Err(UriError::new("bad character in URI user part", user_end)),
            }
            i = at + 1;
        }
        let host_start = i;
        let bare_ipv6 = |e: UriError| {
            if looks_like_bare_ipv6(s, host_start) {
                UriError::new("IPv6 address in URI not enclosed in []", host_start)
            } else {
                e
            }
        };
        let (host, mut i) = scan_host(s, i).map_err(bare_ipv6)?;
        self.host = Some(host);
        if s.get(i) == Some(&b':') {
            let (port, end) = port(s, i + 1).map_err(bare_ipv6)?;
            self.port = Some(port);
            i = end;
        }
        let (params, mut i) = uri_params(s, i)?;
        self.params = params;
        if s.get(i) == Some(&b'?') {
            let start = i + 1;
            i = start;
            loop {
                let name_end = run(s, i, HEADER)?;
                if name_end == i {
                    return Err(UriError::new("empty URI header name", i));
                }
                if s.get(name_end) != Some(&b'=') {
                    return Err(UriError::new("URI header without '='", name_end));
                }
                i = run(s, name_end + 1, HEADER)?;
                if s.get(i) != Some(&b'&') {
                    break;
                }
                i += 1;
            }
            self.headers = Some(&s[start..i]);
        }
        Ok(i)
    }

    /// `telephone-subscriber` (RFC 3966 §3), from `i` (after `tel:`).
    fn parse_tel(&mut self, i: usize) -> Result<usize, UriError> {
        let s = self.raw;
        let (end, has_digit) = if s.get(i) == Some(&b'+') {
            let end = run_while(s, i + 1, |b| b.is_ascii_digit() || is_visual_separator(b));
            (end, s[i + 1..end].iter().any(u8::is_ascii_digit))
        } else {
            let is_dial = |b: u8| b.is_ascii_hexdigit() || b == b'*' || b == b'#';
            let end = run_while(s, i, |b| is_dial(b) || is_visual_separator(b));
            (end, s[i..end].iter().any(|&b| is_dial(b)))
        };
        if !has_digit {
            return Err(UriError::new("bad telephone number in tel URI", i));
        }
        self.user = Some(&s[i..end]);
        let (params, end) = uri_params(s, end)?;
        self.params = params;
        Ok(end)
    }

    /// The scheme.
    pub const fn scheme(&self) -> Scheme<'a> {
        self.scheme
    }

    /// The user part, still %-escaped (for tel: the number, without its
    /// parameters); `None` if absent or not applicable.
    pub const fn user(&self) -> Option<&'a [u8]> {
        self.user
    }

    /// The password after `user:` (SIP/SIPS only), still %-escaped.
    pub const fn password(&self) -> Option<&'a [u8]> {
        self.password
    }

    /// The host (SIP/SIPS only).
    pub const fn host(&self) -> Option<Host<'a>> {
        self.host
    }

    /// The explicit port, if any (SIP/SIPS only).
    pub const fn port(&self) -> Option<u16> {
        self.port
    }

    /// The URI parameters (SIP/SIPS and tel).
    pub const fn params(&self) -> &Params<'a> {
        &self.params
    }

    /// The URI parameter `name` (case-insensitive): `Some(None)` if present
    /// without a value.
    pub fn param(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.params.get(name)
    }

    /// The escaped headers after `?`, raw (SIP/SIPS only).
    pub const fn headers(&self) -> Option<&'a [u8]> {
        self.headers
    }

    /// The whole URI as written.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// The index of the `:` ending a valid `scheme` at the start of `s`.
fn scheme_end(s: &[u8]) -> Result<usize, UriError> {
    if !s.first().is_some_and(u8::is_ascii_alphabetic) {
        return Err(UriError::new("URI does not start with a scheme", 0));
    }
    let end = run_while(s, 1, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
    });
    match s.get(end) {
        Some(b':') => Ok(end),
        None => Err(UriError::new("missing ':' after URI scheme", end)),
        Some(_) => Err(UriError::new("bad character in URI scheme", end)),
    }
}

/// Scans `host` at `i`: the host and the index after it.
pub(crate) fn scan_host(s: &[u8], i: usize) -> Result<(Host<'_>, usize), UriError> {
    if s.get(i) == Some(&b'[') {
        let close = run_while(s, i + 1, |b| {
            b.is_ascii_hexdigit() || b == b':' || b == b'.'
        });
        if s.get(close) != Some(&b']') {
            return Err(UriError::new("bad IPv6 reference", close));
        }
        let inner = &s[i + 1..close];
        // Validated now, so a response routed by Via or `received` later
        // can't fail on an address that only looked like one.
        let text = std::str::from_utf8(inner)
            .ok()
            .filter(|text| parse_ipv6(text).is_some())
            .ok_or(UriError::new("bad IPv6 reference", i))?;
        return Ok((Host::V6(text), close + 1));
    }
    // One pass over the host: its extent, whether it is all digits and dots
    // (an IPv4 candidate), and the hostname rules (hosts are on every Via,
    // URI and Route, so this is among the hottest loops of the parser).
    let rest = s.get(i..).unwrap_or_default();
    let mut len = 0;
    let mut numeric = true;
    let mut valid_name = true;
    let mut prev = b'.';
    let mut top_label_start = 0;
    for &b in rest {
        if CLASS[usize::from(b)] & HOST == 0 {
            break;
        }
        numeric &= b.is_ascii_digit() || b == b'.';
        if b == b'.' {
            // No empty label, no label ending with a hyphen.
            valid_name &= prev != b'.' && prev != b'-';
            top_label_start = len + 1;
        } else if b == b'-' {
            // No label starting with a hyphen.
            valid_name &= prev != b'.';
        }
        prev = b;
        len += 1;
    }
    let end = i + len;
    let name = &rest[..len];
    if name.is_empty() {
        return Err(UriError::new("missing host", i));
    }
    if numeric {
        let v4 = parse_ipv4(name).ok_or(UriError::new("bad IPv4 address", i))?;
        return Ok((Host::V4(v4), end));
    }
    // An optional trailing dot (a fully qualified name) ends the last label;
    // the top label is then the one before it and must start with a letter.
    let top = if prev == b'.' && len > 1 {
        name[..len - 1]
            .iter()
            .rposition(|&b| b == b'.')
            .map_or(0, |dot| dot + 1)
    } else {
        top_label_start
    };
    // (A leading '.' or '-' already failed: `prev` starts as '.'.)
    valid_name &= prev != b'-';
    if !valid_name || !name.get(top).is_some_and(u8::is_ascii_alphabetic) {
        return Err(UriError::new("bad host name", i));
    }
    let text = std::str::from_utf8(name).map_err(|_| UriError::new("bad host name", i))?;
    Ok((Host::Domain(text), end))
}

/// An IPv6 address in RFC 4291 text form, or in the form RFC 5118 §4.10 says
/// to tolerate: the buggy RFC 3261 ABNF admits a third colon before an
/// embedded IPv4 address (`2001:db8:::192.0.2.1`), read as `::`.
fn parse_ipv6(text: &str) -> Option<Ipv6Addr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let at = text.find(":::")?;
    // Without allocating: IPv6 text is at most 45 bytes.
    let mut fixed = [0u8; 64];
    let (head, tail) = (&text.as_bytes()[..at], &text.as_bytes()[at + 1..]);
    let len = head.len() + tail.len();
    fixed.get_mut(..head.len())?.copy_from_slice(head);
    fixed.get_mut(head.len()..len)?.copy_from_slice(tail);
    std::str::from_utf8(&fixed[..len]).ok()?.parse().ok()
}

/// `port = 1*DIGIT` at `i`, at most 65535.
fn port(s: &[u8], i: usize) -> Result<(u16, usize), UriError> {
    match digits(s, i, u32::from(u16::MAX)) {
        Ok((value, end)) => {
            let value =
                u16::try_from(value).map_err(|_| UriError::new("URI port out of range", i))?;
            Ok((value, end))
        }
        Err(DigitsError::Missing) => Err(UriError::new("bad port in URI", i)),
        Err(DigitsError::TooLarge(_)) => Err(UriError::new("URI port out of range", i)),
    }
}

/// `*( ";" pname [ "=" pvalue ] )` at `i` (RFC 3261 `uri-parameters`; RFC 3966
/// parameters are a subset). Stops at the first byte that is not `;`.
fn uri_params(s: &[u8], start: usize) -> Result<(Params<'_>, usize), UriError> {
    let mut i = start;
    while s.get(i) == Some(&b';') {
        let name_end = run(s, i + 1, PARAM)?;
        if name_end == i + 1 {
            return Err(UriError::new("empty URI parameter", i + 1));
        }
        i = name_end;
        if s.get(i) == Some(&b'=') {
            let value_end = run(s, i + 1, PARAM)?;
            if value_end == i + 1 {
                return Err(UriError::new("URI parameter without value", i + 1));
            }
            i = value_end;
        }
    }
    Ok((Params::from_validated(&s[start..i]), i))
}

/// Whether the host part at `i` holds two or more colons before any `;`, `?`
/// or end: an unbracketed IPv6 address (RFC 5118 §4.2). Only called on the
/// error path, to name the defect.
fn looks_like_bare_ipv6(s: &[u8], i: usize) -> bool {
    s.get(i..).is_some_and(|rest| {
        rest.first() != Some(&b'[')
            && rest
                .iter()
                .take_while(|&&b| b != b';' && b != b'?')
                .filter(|&&b| b == b':')
                .count()
                >= 2
    })
}

/// A dotted quad of 1-3 digit decimal octets (RFC 3261 `IPv4address`; leading
/// zeros allowed, each octet at most 255).
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = part
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

const fn is_visual_separator(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'(' | b')')
}

fn run_while(s: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while s.get(i).is_some_and(|&b| keep(b)) {
        i += 1;
    }
    i
}

/// Scans characters of `class` or `%HH` escapes from `i`; returns where the
/// run ends. A `%` not followed by two hex digits is an error.
fn run(s: &[u8], mut i: usize, class: u8) -> Result<usize, UriError> {
    loop {
        match s.get(i) {
            Some(&b) if CLASS[usize::from(b)] & class != 0 => i += 1,
            Some(b'%') => {
                let hex = |k: usize| s.get(k).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(UriError::new("bad %-escape in URI", i));
                }
                i += 3;
            }
            _ => return Ok(i),
        }
    }
}

// Character classes of RFC 3261 §25, one bit each; `%HH` is handled by `run`.
/// `user`: unreserved / `& = + $ , ; ? /`
const USER: u8 = 1;
/// `password`: unreserved / `& = + $ ,`
const PASSWORD: u8 = 1 << 1;
/// `paramchar`: unreserved / `[ ] / : & + $`
const PARAM: u8 = 1 << 2;
/// `hname`/`hvalue`: unreserved / `[ ] / ? : + $`
const HEADER: u8 = 1 << 3;
/// `uric`: unreserved / reserved (`; / ? : @ & = + $ ,`)
const URIC: u8 = 1 << 4;
/// `hostname` / `IPv4address` characters: alphanumerics, `-`, `.`
const HOST: u8 = 1 << 5;

static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let unreserved = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        let mut bits = 0;
        if unreserved || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            bits |= USER;
        }
        if unreserved || matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            bits |= PASSWORD;
        }
        if unreserved || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            bits |= PARAM;
        }
        if unreserved || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            bits |= HEADER;
        }
        if unreserved
            || matches!(
                b,
                b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
            )
        {
            bits |= URIC;
        }
        // RFC 3261 hostnames are letters, digits and '-'; '_' is accepted
        // because deployed hosts and container names use it.
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' {
            bits |= HOST;
        }
        table[i] = bits;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn ok(s: &str) -> Uri<'_> {
        Uri::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?} should parse: {e} at {}", e.at))
    }

    fn err(s: &str) -> UriError {
        match Uri::parse(s.as_bytes()) {
            Ok(uri) => panic!("{s:?} should fail, got {uri:?}"),
            Err(e) => e,
        }
    }

    fn domain(s: &str) -> Option<Host<'_>> {
        Some(Host::Domain(s))
    }

    #[test]
    fn plain_sip_uris() {
        let u = ok("sip:vivekg@chair-dnrc.example.com;unknownparam");
        assert_eq!(u.scheme(), Scheme::Sip);
        assert_eq!(u.user(), Some(&b"vivekg"[..]));
        assert_eq!(u.host(), domain("chair-dnrc.example.com"));
        assert_eq!(u.port(), None);
        assert_eq!(u.param("unknownparam"), Some(None));
        assert_eq!(u.headers(), None);
        assert_eq!(
            u.as_bytes(),
            b"sip:vivekg@chair-dnrc.example.com;unknownparam"
        );

        let u = ok("sip:registrar.example.com");
        assert_eq!(u.user(), None);
        assert!(u.params().is_empty());

        assert_eq!(ok("sip:a-b.c--d.e").host(), domain("a-b.c--d.e"));
        assert_eq!(ok("sip:x").host(), domain("x"));
        assert_eq!(ok("sip:3com.com").host(), domain("3com.com"));
        let u = ok("SIPS:Alice@Atlanta.COM.");
        assert_eq!(u.scheme(), Scheme::Sips);
        assert_eq!(u.host(), domain("Atlanta.COM."));

        // mpart01 Route and Contact.
        let u = ok("sip:127.0.0.1:5080");
        assert_eq!(u.host(), Some(Host::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(u.port(), Some(5080));
        assert_eq!(ok("sip:fluffy@127.0.0.1:5070").port(), Some(5070));
        // inv2543 From.
        let u = ok("sip:+13035551111@ift.client.example.net;user=phone");
        assert_eq!(u.user(), Some(&b"+13035551111"[..]));
        assert_eq!(u.param("USER"), Some(Some(&b"phone"[..])));
        // wsinv Route.
        let u = ok("sip:services.example.com;lr;unknownwith=value;unknown-no-value");
        let params: Vec<_> = u.params().iter().collect();
        assert_eq!(
            params,
            [
                (&b"lr"[..], None),
                (b"unknownwith", Some(&b"value"[..])),
                (b"unknown-no-value", None)
            ]
        );
        // Leading zeros in IPv4 octets and port are digits all the same.
        let u = ok("sip:010.0.0.1:05060");
        assert_eq!(u.host(), Some(Host::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(u.port(), Some(5060));
        assert_eq!(ok("sip:h:65535").port(), Some(65535));
        assert_eq!(ok("sip:h:0").port(), Some(0));
    }

    #[test]
    fn intmeth_unusual_characters() {
        let u = ok(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(
            u.user(),
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        assert_eq!(
            u.password(),
            Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
        );
        assert_eq!(u.host(), domain("example.com"));
        let u = ok("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com");
        assert_eq!(u.password(), None);
    }

    #[test]
    fn escapes_are_validated_and_kept_raw() {
        // esc01
        let u = ok("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user(), Some(&b"sips%3Auser%40example.com"[..]));
        assert_eq!(u.host(), domain("example.net"));
        assert_eq!(
            ok("sip:%75se%72@example.com").user(),
            Some(&b"%75se%72"[..])
        );
        assert_eq!(
            ok("sip:I%20have%20spaces@example.net").user(),
            Some(&b"I%20have%20spaces"[..])
        );
        let u = ok("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        let params: Vec<_> = u.params().iter().collect();
        assert_eq!(
            params,
            [
                (&b"%6C%72"[..], None),
                (b"n%61me", Some(&b"v%61lue%25%34%31"[..]))
            ]
        );
        // No unescaping: `lr` is not found under its escaped spelling.
        assert_eq!(u.param("lr"), None);
        // escnull
        assert_eq!(
            ok("sip:null-%00-null@example.com").user(),
            Some(&b"null-%00-null"[..])
        );
        assert_eq!(
            ok("sip:%00%00@host5.example.com").user(),
            Some(&b"%00%00"[..])
        );
        // semiuri
        let u = ok("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user(), Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host(), domain("example.com"));
        assert!(u.params().is_empty());

        assert_eq!(err("sip:u%4@h").what, "bad %-escape in URI");
        assert_eq!(err("sip:u%zz@h").at, 5);
        assert_eq!(err("sip:h;a=%").what, "bad %-escape in URI");
    }

    #[test]
    fn headers_after_question_mark() {
        // regescrt / regbadct / escruri (the Request-URI ban is the message layer's).
        let u = ok("sip:user@example.com?Route=%3Csip:sip.example.com%3E");
        assert_eq!(u.headers(), Some(&b"Route=%3Csip:sip.example.com%3E"[..]));
        assert_eq!(u.host(), domain("example.com"));
        let u = ok("sip:a@b;transport=tcp?subject=x&priority=urgent&body=");
        assert_eq!(u.param("transport"), Some(Some(&b"tcp"[..])));
        assert_eq!(u.headers(), Some(&b"subject=x&priority=urgent&body="[..]));
        assert_eq!(err("sip:a@b?").what, "empty URI header name");
        assert_eq!(err("sip:a@b?x").what, "URI header without '='");
        assert_eq!(err("sip:a@b?x=1&").what, "empty URI header name");
        assert_eq!(err("sip:a@b?x=1,2").what, "unexpected character in URI");
    }

    #[test]
    fn longreq_long_parameters() {
        let s = "sip:user@example.com:6000;unknownparam1=verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongvalue;longparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=shortvalue;verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongParameterNameWithNoValue";
        let u = ok(s);
        assert_eq!(u.port(), Some(6000));
        assert_eq!(u.params().iter().count(), 3);
    }

    #[test]
    fn other_schemes_parse_opaquely() {
        for (s, name) in [
            (
                "nobodyKnowsThisScheme:totallyopaquecontent",
                "nobodyKnowsThisScheme",
            ),
            ("soap.beep://192.0.2.103:3002", "soap.beep"),
            ("isbn:2983792873", "isbn"),
            ("http://www.example.com", "http"),
            ("name:John_Smith", "name"),
            ("urn:service:sos", "urn"),
        ] {
            let u = ok(s);
            assert_eq!(u.scheme(), Scheme::Other(name));
            assert_eq!(u.host(), None);
            assert_eq!(u.user(), None);
            assert!(u.params().is_empty());
        }
        assert_eq!(err("http:").what, "nothing after URI scheme");
        assert_eq!(err("http://a b").what, "white space in URI");
        assert_eq!(err("mailto:a>").what, "unexpected character in URI");
    }

    #[test]
    fn tel_uris() {
        let u = ok("tel:+1-201-555-0123");
        assert_eq!(u.scheme(), Scheme::Tel);
        assert_eq!(u.user(), Some(&b"+1-201-555-0123"[..]));
        assert_eq!(u.host(), None);
        let u = ok("TEL:863-1234;phone-context=+1-914-555");
        assert_eq!(u.user(), Some(&b"863-1234"[..]));
        assert_eq!(u.param("phone-context"), Some(Some(&b"+1-914-555"[..])));
        let u = ok("tel:7042;phone-context=example.com;ext=22");
        assert_eq!(u.params().iter().count(), 2);
        assert_eq!(ok("tel:*67#").user(), Some(&b"*67#"[..]));
        assert_eq!(err("tel:+").what, "bad telephone number in tel URI");
        assert_eq!(err("tel:").what, "bad telephone number in tel URI");
        assert_eq!(err("tel:+1 234").what, "white space in URI");
        assert_eq!(err("tel:+1234?x=y").what, "unexpected character in URI");
    }

    #[test]
    fn rfc5118_ipv6() {
        let v6 = |u: &Uri<'_>| u.host().and_then(|h| h.ip());
        // §4.1 ipv6-good, §4.3 port-unambiguous, §4.4 port-ambiguous.
        let u = ok("sip:[2001:db8::10]");
        assert_eq!(u.host(), Some(Host::V6("2001:db8::10")));
        assert_eq!(
            v6(&u),
            Some("2001:db8::10".parse::<Ipv6Addr>().unwrap().into())
        );
        let u = ok("sip:[2001:db8::10]:5070");
        assert_eq!(
            (u.host(), u.port()),
            (Some(Host::V6("2001:db8::10")), Some(5070))
        );
        let u = ok("sip:[2001:db8::10:5070]");
        assert_eq!(
            (u.host(), u.port()),
            (Some(Host::V6("2001:db8::10:5070")), None)
        );
        // §4.2 ipv6-bad.
        let e = err("sip:2001:db8::10");
        assert_eq!(
            e,
            UriError::new("IPv6 address in URI not enclosed in []", 4)
        );
        assert_eq!(
            err("sip:user@fe80::1;lr").what,
            "IPv6 address in URI not enclosed in []"
        );
        // Contacts and To of §4.6-§4.10.
        for s in [
            "sip:caller@[2001:db8::1]",
            "sip:user@[2001:db8::10]",
            "sip:caller@[2001:db8::20]",
            "sip:caller@[2001:db8::9:1]",
            "sip:user@[2001:db8::192.0.2.1]",
        ] {
            assert!(v6(&ok(s)).is_some(), "{s}");
        }
        // §4.8 IPv4-mapped.
        let u = ok("sip:ted@[::ffff:192.0.2.2]");
        assert_eq!(
            v6(&u),
            Some("::ffff:192.0.2.2".parse::<Ipv6Addr>().unwrap().into())
        );
        // §4.10: three colons are tolerated, read as the `::` meant.
        let u = ok("sip:user@[2001:db8:::192.0.2.1]");
        assert_eq!(u.host(), Some(Host::V6("2001:db8:::192.0.2.1")));
        assert_eq!(
            v6(&u),
            Some("2001:db8::192.0.2.1".parse::<Ipv6Addr>().unwrap().into())
        );
        // Only that one slip: anything else that is no IPv6 address fails.
        for bad in [
            "sip:[::::::::::]",
            "sip:[1:2:3:4:5:6:7:8:9]",
            "sip:[:.]",
            "sip:[2001:db8::1::2]",
            "sip:[fffff::1]",
        ] {
            assert_eq!(err(bad).what, "bad IPv6 reference", "{bad}");
        }

        // '_' is tolerated in host names (deployed hosts use it).
        assert_eq!(
            ok("sip:under_score.com").host(),
            Some(Host::Domain("under_score.com"))
        );
        assert_eq!(err("sip:[2001:db8::1").what, "bad IPv6 reference");
        assert_eq!(err("sip:[]").what, "bad IPv6 reference");
        assert_eq!(err("sip:[1.2.3.4]").what, "bad IPv6 reference");
        assert_eq!(err("sip:[::1]x").what, "unexpected character in URI");
    }

    #[test]
    fn host_display_and_ip() {
        assert_eq!(Host::V6("::1").to_string(), "[::1]");
        assert_eq!(Host::V4(Ipv4Addr::LOCALHOST).to_string(), "127.0.0.1");
        assert_eq!(Host::Domain("a.example").to_string(), "a.example");
        assert_eq!(Host::Domain("a.example").ip(), None);
        assert_eq!(
            Host::parse(b"[::1]").unwrap().ip(),
            Some(IpAddr::from(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            Host::parse(b"192.0.2.1").unwrap(),
            Host::V4(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert_eq!(
            Host::parse(b"a.b:5060").unwrap_err().what,
            "bad character in host"
        );
        assert_eq!(Host::parse(b"").unwrap_err().what, "missing host");
    }

    #[test]
    fn malformed_uris() {
        let cases = [
            ("", "URI does not start with a scheme"),
            ("<sip:user@example.com>", "URI does not start with a scheme"), // ltgtruri
            ("1sip:x", "URI does not start with a scheme"),
            ("sip", "missing ':' after URI scheme"),
            ("Bell", "missing ':' after URI scheme"),
            ("s p:x", "bad character in URI scheme"),
            ("sip:user@example.com; lr", "empty URI parameter"), // lwsruri
            ("sip:user@example.com ;lr", "white space in URI"),
            ("sip:user@example.com ", "white space in URI"),
            (" sip:user@example.com", "URI does not start with a scheme"),
            ("sip:", "missing host"),
            ("sip:user@", "missing host"),
            ("sip:@example.com", "empty user part in URI"),
            ("sip:a b@example.com", "bad character in URI user part"),
            ("sip:a:b c@example.com", "bad character in URI password"),
            ("sip:a:b@c@example.com", "unexpected character in URI"),
            ("sip:host:", "bad port in URI"),
            ("sip:host:x", "bad port in URI"),
            ("sip:host:65536", "URI port out of range"),
            ("sip:host:99999999999999999999", "URI port out of range"),
            ("sip:256.1.1.1", "bad IPv4 address"),
            ("sip:1.2.3", "bad IPv4 address"),
            ("sip:1.2.3.4.5", "bad IPv4 address"),
            ("sip:-bad.example.com", "bad host name"),
            ("sip:bad-.example.com", "bad host name"),
            ("sip:a..example.com", "bad host name"),
            ("sip:example.123", "bad host name"),
            (".example.com", "URI does not start with a scheme"),
            ("sip:.example.com", "bad host name"),
            ("sip:example.com..", "bad host name"),
            ("sip:a.-b.com", "bad host name"),
            ("sip:a-.b.com", "bad host name"),
            ("sip:ab.com-", "bad host name"),
            ("sip:.", "bad IPv4 address"),
            ("sip:h;", "empty URI parameter"),
            ("sip:h;;lr", "empty URI parameter"),
            ("sip:h;a=", "URI parameter without value"),
            ("sip:h;a=b=c", "unexpected character in URI"),
            ("sip:h>", "unexpected character in URI"),
            ("sip:h#frag", "unexpected character in URI"),
            ("sip:*67#@h", "bad character in URI user part"),
        ];
        for (s, what) in cases {
            assert_eq!(err(s).what, what, "{s:?}");
        }
        assert_eq!(err("sip:host:65536").to_string(), "URI port out of range");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..48)) {
            if let Ok(u) = Uri::parse(&s) {
                prop_assert_eq!(u.as_bytes(), &s[..]);
                let _ = u.host().map(|h| (h.ip(), h.to_string()));
                let _ = u.params().iter().count();
            }
            let _ = Host::parse(&s);
        }

        #[test]
        fn uri_alphabet_never_panics(s in "[sipt:el@\\[\\]0-9a-f.;=?&%+# <>-]{0,40}") {
            if let Ok(u) = Uri::parse(s.as_bytes()) {
                for (name, value) in u.params() {
                    prop_assert!(!name.is_empty());
                    prop_assert!(value.is_none_or(|v| !v.is_empty()));
                }
            }
        }

        #[test]
        fn generated_sip_uris_parse(
            user in proptest::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,10}"),
            host in "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]{1,5}){0,3}",
            port in proptest::option::of(any::<u16>()),
            params in proptest::collection::vec(("[a-z0-9%]{1,6}", proptest::option::of("[a-z0-9:\\[\\]/&+$]{1,6}")), 0..4),
        ) {
            let params: Vec<_> = params.into_iter().filter(|(n, _)| !n.contains('%')).collect();
            let mut s = String::from("sip:");
            if let Some(u) = &user {
                s.push_str(u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (n, v) in &params {
                s.push(';');
                s.push_str(n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(v);
                }
            }
            let u = Uri::parse(s.as_bytes()).expect("generated URI parses");
            prop_assert_eq!(u.user(), user.as_deref().map(str::as_bytes));
            prop_assert_eq!(u.host(), Some(Host::Domain(&host)));
            prop_assert_eq!(u.port(), port);
            prop_assert_eq!(u.params().iter().count(), params.len());
        }
    }
}
