//! CSeq (RFC 3261 §20.16, §8.1.1.5): `1*DIGIT LWS Method`.
//!
//! The number is a 32-bit unsigned integer: leading zeros are fine (RFC 4475
//! wsinv `0009`), more than 2^32-1 is an error (scalar02). The method is any
//! token; matching it against the request line is the message layer's job.

use super::{HeaderError, expect_end};
use crate::sip::scan::{DigitsError, digits, skip_lws, token};

/// A parsed CSeq value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number.
    pub seq: u32,
    /// The method, as written (methods are case-sensitive, §7.1).
    pub method: &'a str,
}

impl<'a> CSeq<'a> {
    /// Parses a CSeq value.
    pub fn parse(value: &'a [u8]) -> Result<CSeq<'a>, HeaderError> {
        let s = value;
        let start = skip_lws(s, 0);
        let (seq, end) = digits(s, start, u32::MAX).map_err(|e| match e {
            DigitsError::Missing => HeaderError::new("CSeq does not start with a number", start),
            DigitsError::TooLarge(_) => HeaderError::new("CSeq number out of range", start),
        })?;
        let m = skip_lws(s, end);
        if m == end {
            let what = match s.get(m) {
                None => "missing CSeq method",
                Some(_) => "bad character in CSeq number",
            };
            return Err(HeaderError::new(what, m));
        }
        let (method, method_end) = token(s, m).ok_or(HeaderError::new("bad CSeq method", m))?;
        expect_end(s, method_end, "unexpected character after CSeq method")?;
        Ok(CSeq { seq, method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_cseqs() {
        assert_eq!(
            CSeq::parse(b"98176 REGISTER"),
            Ok(CSeq {
                seq: 98176,
                method: "REGISTER"
            })
        );
        // wsinv: leading zeros and a fold.
        assert_eq!(
            CSeq::parse(b"0009\r\n  INVITE"),
            Ok(CSeq {
                seq: 9,
                method: "INVITE"
            })
        );
        // baddn: extra LWS.
        assert_eq!(CSeq::parse(b"   3923239 OPTIONS  ").unwrap().seq, 3923239);
        // intmeth: extension method with every token punctuation character.
        let c = CSeq::parse(b"139122385 !interesting-Method0123456789_*+`.%indeed'~").unwrap();
        assert_eq!(c.method, "!interesting-Method0123456789_*+`.%indeed'~");
        // esc02: escapes are not decoded in methods.
        assert_eq!(
            CSeq::parse(b"29344 RE%47IST%45R").unwrap().method,
            "RE%47IST%45R"
        );
        assert_eq!(CSeq::parse(b"4294967295 ACK").unwrap().seq, u32::MAX);
        assert_eq!(CSeq::parse(b"0 INVITE").unwrap().seq, 0);
    }

    #[test]
    fn invalid_cseqs() {
        let cases: [(&[u8], &str, usize); 9] = [
            // scalar02 / scalarlg.
            (
                b"36893488147419103232 REGISTER",
                "CSeq number out of range",
                0,
            ),
            (b"4294967296 INVITE", "CSeq number out of range", 0),
            (b"INVITE", "CSeq does not start with a number", 0),
            (b"-1 INVITE", "CSeq does not start with a number", 0),
            (b"", "CSeq does not start with a number", 0),
            (b"12", "missing CSeq method", 2),
            (b"12INVITE", "bad character in CSeq number", 2),
            (b"12 <INVITE>", "bad CSeq method", 3),
            (
                b"12 INVITE extra",
                "unexpected character after CSeq method",
                10,
            ),
        ];
        for (value, what, at) in cases {
            let e = CSeq::parse(value).expect_err(&String::from_utf8_lossy(value));
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
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = CSeq::parse(&s);
        }

        #[test]
        fn round_trip(seq in any::<u32>(), zeros in 0usize..3, method in "[A-Za-z!%*_+`'~.-]{1,12}", sp in "( |\t|\r\n )+") {
            let text = format!("{}{seq}{sp}{method}", "0".repeat(zeros));
            prop_assert_eq!(CSeq::parse(text.as_bytes()), Ok(CSeq { seq, method: &method }));
        }
    }
}
