//! One `( name-addr / addr-spec ) *( SEMI param )` value: From, To, Contact,
//! Route, Record-Route, Reply-To (RFC 3261 §20.10, §20.20, §20.39, §25).
//!
//! Rules, with the RFC 4475 case each one decides:
//! * `name-addr = [ display-name ] LAQUOT addr-spec RAQUOT`. The display name
//!   is a quoted string (kept raw, quotes included; quotbal's unterminated
//!   quote is an error) or tokens separated by LWS (`Bob Alice <sip:...>`).
//!   No LWS is needed before `<` (lwsdisp: RFC 4475 calls the grammar's demand
//!   for it a bug). Unquoted non-token characters are an error (baddn).
//! * Nothing but the URI inside `<>`: LWS there is an error (badaspec; the
//!   RFC allows either answer, we are strict so we never forward it).
//! * In the bare addr-spec form everything after the first `;` is a header
//!   parameter (cparam01), and a URI holding `?` or `,` must have been
//!   bracketed (§20.10; regbadct is an error).
//! * Header parameters follow [`Params`]: an empty one is an error
//!   (badinv01's `;;;;`). `tag` must be a token, `expires` a 32-bit
//!   delta-seconds (scalar02's 280297596632815 is an error), `q` a qvalue;
//!   none of them may repeat.

use super::{HeaderError, expect_end, set_once, token_value};
use crate::sip::scan::{
    DigitsError, Params, digits, is_wsp, quoted_string, skip_lws, token_end, trim_lws,
};
use crate::sip::uri::Uri;

/// A parsed name-addr or addr-spec with its header parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display_name: Option<&'a [u8]>,
    uri: Uri<'a>,
    bracketed: bool,
    params: Params<'a>,
    tag: Option<&'a str>,
    expires: Option<u32>,
    q: Option<u16>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value.
    pub fn parse(value: &'a [u8]) -> Result<NameAddr<'a>, HeaderError> {
        let s = value;
        let i = skip_lws(s, 0);
        let (display_name, laquot) = match s.get(i) {
            Some(b'"') => {
                let (quoted, end) = quoted_string(s, i)?;
                let laquot = skip_lws(s, end);
                if s.get(laquot) != Some(&b'<') {
                    return Err(HeaderError::new(
                        "expected '<' after quoted display name",
                        laquot,
                    ));
                }
                (Some(quoted), laquot)
            }
            Some(b'<') => (None, i),
            _ => {
                // `*(token LWS)` up to `<` is a display name; anything else
                // must be a bare addr-spec.
                let mut j = i;
                loop {
                    let next = skip_lws(s, token_end(s, j));
                    if next == j {
                        break;
                    }
                    j = next;
                }
                if s.get(j) != Some(&b'<') {
                    return Self::parse_addr_spec(s, i, j);
                }
                (Some(trim_lws(&s[i..j])), j)
            }
        };

        let uri_start = laquot + 1;
        let raquot = s
            .get(uri_start..)
            .and_then(|rest| rest.iter().position(|&b| b == b'>'))
            .map(|p| uri_start + p)
            .ok_or(HeaderError::new("missing '>' after URI", laquot))?;
        let inner = &s[uri_start..raquot];
        let is_lws_byte = |b: &u8| is_wsp(*b) || matches!(b, b'\r' | b'\n');
        if inner.first().is_some_and(is_lws_byte) || inner.last().is_some_and(is_lws_byte) {
            return Err(HeaderError::new(
                "white space inside <> around URI",
                uri_start,
            ));
        }
        let uri = Uri::parse(inner).map_err(|e| HeaderError::in_uri(e, uri_start))?;
        Self::finish(s, display_name, uri, true, raquot + 1)
    }

    /// The addr-spec form starting at `i`; `stop` is where the display-name
    /// scan gave up, which is where the defect is if this was meant to be one.
    fn parse_addr_spec(s: &'a [u8], i: usize, stop: usize) -> Result<NameAddr<'a>, HeaderError> {
        let semi = s
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| b == b';'))
            .map_or(s.len(), |p| i + p);
        let spec = trim_lws(&s[i..semi]);
        if spec.contains(&b'<') {
            return Err(HeaderError::new(
                "unquoted display name with characters that need quoting",
                stop,
            ));
        }
        if let Some(p) = spec.iter().position(|&b| b == b'?' || b == b',') {
            return Err(HeaderError::new(
                "URI with '?' or ',' must be enclosed in <>",
                i + p,
            ));
        }
        if !spec.contains(&b':') {
            // Only tokens (a display name on its own, e.g. baddn's "Bell"), or
            // something URI-like without its scheme.
            let what = if stop >= i + spec.len() {
                "missing URI in address"
            } else {
                "URI in address has no scheme"
            };
            return Err(HeaderError::new(what, stop));
        }
        let uri = Uri::parse(spec).map_err(|e| HeaderError::in_uri(e, i))?;
        Self::finish(s, None, uri, false, i + spec.len())
    }

    /// Header parameters from `i`, then the end of the value.
    fn finish(
        s: &'a [u8],
        display_name: Option<&'a [u8]>,
        uri: Uri<'a>,
        bracketed: bool,
        i: usize,
    ) -> Result<NameAddr<'a>, HeaderError> {
        let mut addr = NameAddr {
            display_name,
            uri,
            bracketed,
            params: Params::default(),
            tag: None,
            expires: None,
            q: None,
        };
        let (params, end) =
            Params::parse_with(s, i, |name, value, at| addr.interpret(name, value, at))?;
        expect_end(s, end, "unexpected character after address")?;
        addr.params = params;
        Ok(addr)
    }

    /// Validates and stores a parameter this view exposes; ignores others.
    fn interpret(
        &mut self,
        name: &'a [u8],
        value: Option<&'a [u8]>,
        at: usize,
    ) -> Result<(), HeaderError> {
        if name.eq_ignore_ascii_case(b"tag") {
            let tag = token_value(value).ok_or(HeaderError::new("bad tag parameter", at))?;
            set_once(&mut self.tag, tag, "duplicate tag parameter", at)
        } else if name.eq_ignore_ascii_case(b"expires") {
            let expires = delta_seconds(value, at)?;
            set_once(
                &mut self.expires,
                expires,
                "duplicate expires parameter",
                at,
            )
        } else if name.eq_ignore_ascii_case(b"q") {
            let q = value
                .and_then(qvalue)
                .ok_or(HeaderError::new("bad q parameter", at))?;
            set_once(&mut self.q, q, "duplicate q parameter", at)
        } else {
            Ok(())
        }
    }

    /// The display name as written: quotes included if quoted, escapes kept.
    pub const fn display_name(&self) -> Option<&'a [u8]> {
        self.display_name
    }

    /// The URI.
    pub const fn uri(&self) -> &Uri<'a> {
        &self.uri
    }

    /// Whether the URI was enclosed in `<>` (name-addr form).
    pub const fn bracketed(&self) -> bool {
        self.bracketed
    }

    /// The header parameters after the address (not the URI's own).
    pub const fn params(&self) -> &Params<'a> {
        &self.params
    }

    /// The `tag` parameter.
    pub const fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// The `expires` parameter, in seconds.
    pub const fn expires(&self) -> Option<u32> {
        self.expires
    }

    /// The `q` parameter in thousandths (`q=0.33` is 330, `q=1` is 1000).
    pub const fn q(&self) -> Option<u16> {
        self.q
    }
}

/// A Contact value: the wildcard of a REGISTER that removes every binding
/// (RFC 3261 §10.2.2), or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *`
    Star,
    /// Any other contact.
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(value: &'a [u8]) -> Result<Contact<'a>, HeaderError> {
        if trim_lws(value) == b"*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(value).map(Contact::Addr)
        }
    }
}

/// `delta-seconds = 1*DIGIT`, at most 2^32-1.
fn delta_seconds(value: Option<&[u8]>, at: usize) -> Result<u32, HeaderError> {
    let v = value.ok_or(HeaderError::new("bad expires parameter", at))?;
    match digits(v, 0, u32::MAX) {
        Ok((n, end)) if end == v.len() => Ok(n),
        Err(DigitsError::TooLarge(end)) if end == v.len() => {
            Err(HeaderError::new("expires parameter out of range", at))
        }
        _ => Err(HeaderError::new("bad expires parameter", at)),
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v {
        [int] => (*int, &[][..]),
        [int, b'.', frac @ ..] if frac.len() <= 3 => (*int, frac),
        _ => return None,
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = (0..3).fold(0u16, |acc, k| {
        acc * 10 + frac.get(k).map_or(0, |&d| u16::from(d - b'0'))
    });
    match int {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::scan::split_values;
    use crate::sip::uri::{Host, Scheme};
    use proptest::prelude::*;

    fn ok(s: &[u8]) -> NameAddr<'_> {
        NameAddr::parse(s)
            .unwrap_or_else(|e| panic!("{:?}: {e} at {}", String::from_utf8_lossy(s), e.at))
    }

    fn err(s: &[u8]) -> HeaderError {
        match NameAddr::parse(s) {
            Ok(a) => panic!("{:?} should fail, got {a:?}", String::from_utf8_lossy(s)),
            Err(e) => e,
        }
    }

    #[test]
    fn wsinv_to_from_contact_route() {
        // To: addr-spec, LWS before ';' and around '='.
        let a = ok(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n");
        assert!(!a.bracketed());
        assert_eq!(a.display_name(), None);
        assert_eq!(a.uri().as_bytes(), b"sip:vivekg@chair-dnrc.example.com");
        assert_eq!(a.tag(), Some("1918181833n"));
        // From: quoted display name with escapes, folded parameters.
        let a = ok(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        );
        assert_eq!(a.display_name(), Some(&b"\"J Rosenberg \\\\\\\"\""[..]));
        assert!(a.bracketed());
        assert_eq!(a.uri().host(), Some(Host::Domain("example.com")));
        assert_eq!(a.tag(), Some("98asjd8"));
        // m: Contact with a q value and unknown parameters.
        let a = ok(b"\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33");
        assert_eq!(a.display_name(), Some(&b"\"Quoted string \\\"\\\"\""[..]));
        assert_eq!(a.q(), Some(330));
        assert_eq!(a.params().get("newparam"), Some(Some(&b"newvalue"[..])));
        assert_eq!(a.params().get("secondparam"), Some(None));
        // Route, after the message layer dropped the leading fold.
        let a = ok(b"<sip:services.example.com;lr;unknownwith=value;unknown-no-value>");
        assert_eq!(a.uri().param("lr"), Some(None));
        assert!(a.params().is_empty());
    }

    #[test]
    fn intmeth_display_names() {
        let to = b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>";
        let a = ok(to);
        assert_eq!(a.display_name().map(<[u8]>::len), Some(22));
        assert_eq!(
            a.uri().user(),
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        let from = "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.";
        let a = ok(from.as_bytes());
        assert_eq!(
            a.display_name(),
            Some(&b"token1~` token2'+_ token3*%!.-"[..])
        );
        assert_eq!(a.tag(), Some("_token~1'+`*%!-."));
        assert_eq!(a.params().iter().count(), 2);
    }

    #[test]
    fn rfc4475_valid_addresses() {
        // lwsdisp: no LWS before '<'.
        let a = ok(b"caller<sip:caller@example.com>;tag=323");
        assert_eq!(a.display_name(), Some(&b"caller"[..]));
        assert_eq!(a.tag(), Some("323"));
        // longreq: quoted display name directly followed by '<'.
        let a = ok(b"\"I have a user name of extremeextremeextremeextremeextremeextremeextremeextremeextremeextreme proportion\"<sip:user@example.com:6000;unknownparam1=verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongvalue;longparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=shortvalue;verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongParameterNameWithNoValue>");
        assert_eq!(a.uri().port(), Some(6000));
        let a = ok(b"sip:amazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallernameamazinglylongcallername@example.net;tag=12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982424;unknownheaderparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=unknowheaderparamvaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevaluevalue;unknownValuelessparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamname");
        assert!(a.tag().unwrap().ends_with("2424"));
        assert_eq!(a.params().iter().count(), 3);
        // esc01 / escnull / esc02.
        assert_eq!(
            ok(b"sip:%75se%72@example.com").uri().user(),
            Some(&b"%75se%72"[..])
        );
        let a = ok(b"<sip:I%20have%20spaces@example.net>;tag=938");
        assert_eq!(
            (a.uri().user(), a.tag()),
            (Some(&b"I%20have%20spaces"[..]), Some("938"))
        );
        ok(b"<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>");
        assert_eq!(
            ok(b"sip:null-%00-null@example.com;tag=839923423").tag(),
            Some("839923423")
        );
        assert_eq!(
            ok(b"\"%Z%45\" <sip:resource@example.com>").display_name(),
            Some(&b"\"%Z%45\""[..])
        );
        // cparam01: ';unknownparam' outside <> is a header parameter.
        let a = ok(b"sip:+19725552222@gw1.example.net;unknownparam");
        assert!(a.uri().params().is_empty());
        assert_eq!(a.params().get("unknownparam"), Some(None));
        // cparam02: inside <> it is a URI parameter.
        let a = ok(b"<sip:+19725552222@gw1.example.net;unknownparam>");
        assert_eq!(a.uri().param("unknownparam"), Some(None));
        assert!(a.params().is_empty());
        // regescrt: escaped headers are fine inside <>.
        let a = ok(b"<sip:user@example.com?Route=%3Csip:sip.example.com%3E>");
        assert_eq!(
            a.uri().headers(),
            Some(&b"Route=%3Csip:sip.example.com%3E"[..])
        );
        // unksm2: other schemes.
        assert_eq!(ok(b"isbn:2983792873").uri().scheme(), Scheme::Other("isbn"));
        let a = ok(b"<http://www.example.com>;tag=3234233");
        assert_eq!(
            (a.uri().scheme(), a.tag()),
            (Scheme::Other("http"), Some("3234233"))
        );
        assert_eq!(
            ok(b"<name:John_Smith>").uri().scheme(),
            Scheme::Other("name")
        );
        // badaspec From: the comma is quoted.
        let a = ok(b"\"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423");
        assert_eq!(a.display_name(), Some(&b"\"Bell, Alexander\""[..]));
        // RFC 5118 Contacts.
        let a = ok(b"\"T. desk phone\" <sip:ted@[::ffff:192.0.2.2]>");
        assert_eq!(a.uri().host(), Some(Host::V6("::ffff:192.0.2.2")));
        assert_eq!(
            ok(b"sip:user@[2001:db8:::192.0.2.1]")
                .uri()
                .host()
                .and_then(|h| h.ip()),
            "2001:db8::192.0.2.1".parse().ok()
        );
        // Multi-token display name and tel URIs.
        assert_eq!(
            ok(b"Bob  Alice <sip:b@a>").display_name(),
            Some(&b"Bob  Alice"[..])
        );
        assert_eq!(ok(b"<tel:+1-201-555-0123>").uri().scheme(), Scheme::Tel);
    }

    #[test]
    fn contact_parameters() {
        let a = ok(b"<sip:user@host129.example.com>\r\n  ;expires=3600;q=1.000");
        assert_eq!((a.expires(), a.q()), (Some(3600), Some(1000)));
        assert_eq!(ok(b"<sip:a@b>;q=0").q(), Some(0));
        assert_eq!(ok(b"<sip:a@b>;q=0.5").q(), Some(500));
        assert_eq!(ok(b"<sip:a@b>;Q=0.999;EXPIRES=0").q(), Some(999));
        assert_eq!(
            ok(b"<sip:a@b>;expires=4294967295").expires(),
            Some(u32::MAX)
        );
        // scalar02.
        let e = err(b"<sip:user@host129.example.com>\r\n  ;expires=280297596632815");
        assert_eq!((e.what, e.at), ("expires parameter out of range", 35));
        for bad in [
            &b"<sip:a@b>;q=1.5"[..],
            b"<sip:a@b>;q=2",
            b"<sip:a@b>;q=0.1234",
            b"<sip:a@b>;q=.5",
            b"<sip:a@b>;q",
        ] {
            assert_eq!(err(bad).what, "bad q parameter");
        }
        assert_eq!(err(b"<sip:a@b>;expires=-1").what, "bad expires parameter");
        assert_eq!(err(b"<sip:a@b>;expires=1x").what, "bad expires parameter");
        assert_eq!(err(b"<sip:a@b>;expires").what, "bad expires parameter");
        assert_eq!(
            err(b"<sip:a@b>;tag=1;tag=2").what,
            "duplicate tag parameter"
        );
        assert_eq!(err(b"<sip:a@b>;tag=\"x\"").what, "bad tag parameter");
        assert_eq!(err(b"<sip:a@b>;tag").what, "bad tag parameter");
    }

    #[test]
    fn contact_star() {
        assert_eq!(Contact::parse(b"*"), Ok(Contact::Star));
        assert_eq!(Contact::parse(b" * "), Ok(Contact::Star));
        assert!(matches!(
            Contact::parse(b"<sip:%00@host5.example.com>"),
            Ok(Contact::Addr(_))
        ));
        assert!(Contact::parse(b"*;expires=0").is_err());
    }

    #[test]
    fn rfc4475_invalid_addresses() {
        // quotbal.
        let e = err(b"\"Mr. J. User <sip:j.user@example.com>");
        assert_eq!((e.what, e.at), ("unterminated quoted string", 0));
        // baddn: split_values cuts at the unquoted comma; "Bell" has no URI.
        let from: Vec<&[u8]> =
            split_values(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").collect();
        assert_eq!(err(from[0]).what, "missing URI in address");
        let to: Vec<&[u8]> = split_values(b"Watson, Thomas <sip:t.watson@example.org>").collect();
        assert_eq!(err(to[0]).what, "missing URI in address");
        // Given the whole value unsplit, the defect is named precisely.
        let e = err(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43");
        assert_eq!(
            (e.what, e.at),
            ("unquoted display name with characters that need quoting", 4)
        );
        // badaspec.
        let e = err(b"\"Watson, Thomas\" < sip:t.watson@example.org >");
        assert_eq!((e.what, e.at), ("white space inside <> around URI", 18));
        assert_eq!(err(b"<sip:a@b >").what, "white space inside <> around URI");
        assert_eq!(err(b"<sip:a @b>").what, "bad character in URI user part");
        // regbadct.
        let e = err(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E");
        assert_eq!(
            (e.what, e.at),
            ("URI with '?' or ',' must be enclosed in <>", 20)
        );
        assert_eq!(
            err(b"sip:a,b@c").what,
            "URI with '?' or ',' must be enclosed in <>"
        );
        // badinv01 Contact.
        let e = err(b"\"Joe\" <sip:joe@example.org>;;;;");
        assert_eq!((e.what, e.at), ("empty header parameter", 28));
    }

    #[test]
    fn other_malformed_addresses() {
        let cases: [(&[u8], &str, usize); 16] = [
            (b"", "missing URI in address", 0),
            (b"   ", "missing URI in address", 3),
            (b"alan@jasomi.com", "URI in address has no scheme", 4),
            (
                b"\"Joe\" sip:joe@example.org",
                "expected '<' after quoted display name",
                6,
            ),
            (b"\"Joe\"", "expected '<' after quoted display name", 5),
            (b"<sip:joe@example.org", "missing '>' after URI", 0),
            (b"<>", "URI does not start with a scheme", 1),
            (
                b"<sip:joe@example.org>x",
                "unexpected character after address",
                21,
            ),
            (
                b"<sip:joe@example.org> tag=1",
                "unexpected character after address",
                22,
            ),
            (
                b"Jo\xc3\xa9 <sip:joe@example.org>",
                "unquoted display name with characters that need quoting",
                2,
            ),
            (
                b"J@ne <sip:joe@example.org>",
                "unquoted display name with characters that need quoting",
                1,
            ),
            (b"Joe <sip:joe@example.org;lr", "missing '>' after URI", 4),
            (b"<sip:joe@example.org:70000>", "URI port out of range", 21),
            (b"sip:joe@example.org x", "white space in URI", 19),
            (b"sip:joe@[::1", "bad IPv6 reference", 12),
            (
                b"<sip:a@b>;tag=x y",
                "unexpected character after address",
                16,
            ),
        ];
        for (value, what, at) in cases {
            let e = err(value);
            assert_eq!(
                (e.what, e.at),
                (what, at),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue(b"0.001"), Some(1));
        assert_eq!(qvalue(b"0."), Some(0));
        assert_eq!(qvalue(b"1."), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"1.001"), None);
        assert_eq!(qvalue(b"0.a"), None);
        assert_eq!(qvalue(b""), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = NameAddr::parse(&s);
            let _ = Contact::parse(&s);
        }

        #[test]
        fn address_alphabet_never_panics(s in "[\"<>sip:@a-c;=,?* \r\n\t\\\\tagqexr0-9.\\[\\]%]{0,48}") {
            if let Ok(a) = NameAddr::parse(s.as_bytes()) {
                let _ = (a.tag(), a.q(), a.expires(), a.uri().host());
                for (name, _) in a.params() {
                    prop_assert!(!name.is_empty());
                }
            }
        }

        #[test]
        fn generated_addresses_parse(
            display in proptest::option::of("\"[ a-z,;<>@:]{0,10}\"|[a-z]{1,5}( [a-z]{1,5}){0,2}"),
            user in "[a-z0-9]{1,8}",
            tag in "[a-zA-Z0-9.!%*_+`'~-]{1,10}",
            sp in "( |\r\n )*",
        ) {
            let mut s = String::new();
            if let Some(d) = &display {
                s.push_str(d);
                s.push_str(&sp);
            }
            s.push_str(&format!("<sip:{user}@example.com>{sp};{sp}tag{sp}={sp}{tag}"));
            let a = NameAddr::parse(s.as_bytes()).expect("generated address parses");
            prop_assert_eq!(a.display_name(), display.as_deref().map(str::as_bytes));
            prop_assert_eq!(a.uri().user(), Some(user.as_bytes()));
            prop_assert_eq!(a.tag(), Some(tag.as_str()));
        }
    }
}
