//! Media types: Content-Type (RFC 3261 §20.15, §25 `media-type`) and each
//! Accept value (§20.1, where `*` is a valid type and subtype).
//!
//! `m-type SLASH m-subtype *( SEMI m-parameter )` with `SLASH = SWS "/" SWS`;
//! an `m-parameter` is `m-attribute EQUAL m-value` (token or quoted string),
//! so a parameter without a value is an error. Types compare
//! case-insensitively; parameter values are kept as written.

use super::{HeaderError, expect_end};
use crate::sip::scan::{Params, skip_lws, token};

/// A parsed media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    main_type: &'a str,
    subtype: &'a str,
    params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parses one media type.
    pub fn parse(value: &'a [u8]) -> Result<MediaType<'a>, HeaderError> {
        let s = value;
        let start = skip_lws(s, 0);
        let (main_type, i) =
            token(s, start).ok_or(HeaderError::new("missing media type", start))?;
        let slash = skip_lws(s, i);
        if s.get(slash) != Some(&b'/') {
            return Err(HeaderError::new("expected '/' in media type", slash));
        }
        let sub = skip_lws(s, slash + 1);
        let (subtype, i) = token(s, sub).ok_or(HeaderError::new("missing media subtype", sub))?;
        let (params, end) = Params::parse_with(s, i, |_, value, at| match value {
            Some(_) => Ok(()),
            None => Err(HeaderError::new("media type parameter without value", at)),
        })?;
        expect_end(s, end, "unexpected character in media type")?;
        Ok(MediaType {
            main_type,
            subtype,
            params,
        })
    }

    /// The type, e.g. `application`.
    pub const fn main_type(&self) -> &'a str {
        self.main_type
    }

    /// The subtype, e.g. `sdp`.
    pub const fn subtype(&self) -> &'a str {
        self.subtype
    }

    /// Whether this is `main_type/subtype`, ignoring ASCII case.
    pub fn is(&self, main_type: &str, subtype: &str) -> bool {
        self.main_type.eq_ignore_ascii_case(main_type) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// The parameters, in order, as written.
    pub const fn params(&self) -> &Params<'a> {
        &self.params
    }

    /// The value of parameter `name` (case-insensitive), as written (quoted
    /// strings keep their quotes).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        self.params.get(name).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::scan::split_values;
    use proptest::prelude::*;

    #[test]
    fn content_types() {
        let m = MediaType::parse(b"application/sdp").unwrap();
        assert_eq!((m.main_type(), m.subtype()), ("application", "sdp"));
        assert!(m.is("APPLICATION", "SDP"));
        assert!(m.params().is_empty());
        // mpart01.
        let m = MediaType::parse(b"multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert_eq!(m.param("Boundary"), Some(&b"7a9cbec02ceef655"[..]));
        // RFC 3261 §20.15 example shape with a quoted value.
        let m = MediaType::parse(
            b"multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha1; boundary=boundary42",
        )
        .unwrap();
        assert!(m.is("multipart", "signed"));
        assert_eq!(
            m.param("protocol"),
            Some(&b"\"application/pkcs7-signature\""[..])
        );
        assert_eq!(m.param("micalg"), Some(&b"sha1"[..]));
        assert_eq!(m.param("boundary"), Some(&b"boundary42"[..]));
        assert_eq!(m.param("charset"), None);
        // invut, and LWS around '/'.
        assert!(
            MediaType::parse(b"application/unknownformat")
                .unwrap()
                .is("application", "unknownformat")
        );
        assert!(
            MediaType::parse(b" text / plain ; charset = \"utf-8\" ")
                .unwrap()
                .is("text", "plain")
        );
        // Accept values (semiuri, sdp01), wildcards.
        for value in split_values(b"application/sdp, application/pkcs7-mime,\r\n        multipart/mixed, multipart/signed,\r\n        message/sip, message/sipfrag") {
            MediaType::parse(value).unwrap();
        }
        assert!(MediaType::parse(b"text/nobodyKnowsThis").is_ok());
        assert!(MediaType::parse(b"*/*;q=0.5").unwrap().is("*", "*"));
    }

    #[test]
    fn malformed_media_types() {
        let cases: [(&[u8], &str, usize); 8] = [
            (b"", "missing media type", 0),
            (b"application", "expected '/' in media type", 11),
            (b"application/", "missing media subtype", 12),
            (b"application/sdp;", "empty header parameter", 16),
            (
                b"application/sdp;charset",
                "media type parameter without value",
                16,
            ),
            (
                b"application/sdp x",
                "unexpected character in media type",
                16,
            ),
            (
                b"application/sdp/x",
                "unexpected character in media type",
                15,
            ),
            (
                b"multipart/mixed;boundary=\"x",
                "unterminated quoted string",
                25,
            ),
        ];
        for (value, what, at) in cases {
            let e = MediaType::parse(value).expect_err(&String::from_utf8_lossy(value));
            assert_eq!(
                (e.what, e.at),
                (what, at),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..48)) {
            if let Ok(m) = MediaType::parse(&s) {
                prop_assert!(!m.main_type().is_empty() && !m.subtype().is_empty());
                prop_assert!(m.params().iter().all(|(_, v)| v.is_some()));
            }
        }
    }
}
