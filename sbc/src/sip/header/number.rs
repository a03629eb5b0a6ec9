//! Scalar header values: Content-Length, Expires, Min-Expires and other
//! `1*DIGIT` fields (RFC 3261 §20.14, §20.19, §25 `delta-seconds`), and
//! Max-Forwards (§20.22).
//!
//! Digits only, LWS around them allowed, leading zeros fine (RFC 4475 wsinv
//! `0068`). A sign is an error (ncl's `-999`), and so is a value that does not
//! fit: 2^32-1 for the 32-bit fields (scalar02's Expires), 255 for
//! Max-Forwards (scalar02's 300). RFC 3261 lets a receiver treat a bad Expires
//! as 3600; that leniency, if wanted, belongs to the caller, who gets the
//! error and decides.

use super::HeaderError;
use crate::sip::scan::{DigitsError, digits, skip_lws};

/// Parses a `1*DIGIT` value of at most 2^32-1. `what` is the error reported
/// for any defect, naming the header (e.g. "bad Content-Length"); `at` tells
/// where it is.
pub fn parse_u32(value: &[u8], what: &'static str) -> Result<u32, HeaderError> {
    whole(value, u32::MAX).map_err(|(_, at)| HeaderError::new(what, at))
}

/// Parses Max-Forwards: `1*DIGIT`, 0 to 255.
pub fn parse_max_forwards(value: &[u8]) -> Result<u8, HeaderError> {
    whole(value, u8::MAX.into())
        .and_then(|n| u8::try_from(n).map_err(|_| (DigitsError::Missing, 0)))
        .map_err(|(e, at)| match e {
            DigitsError::TooLarge(_) => HeaderError::new("Max-Forwards above 255", at),
            DigitsError::Missing => HeaderError::new("Max-Forwards is not a number", at),
        })
}

/// `LWS 1*DIGIT LWS` with a value of at most `max`; on failure, why and where.
fn whole(value: &[u8], max: u32) -> Result<u32, (DigitsError, usize)> {
    let start = skip_lws(value, 0);
    let (n, end) = digits(value, start, max).map_err(|e| (e, start))?;
    let tail = skip_lws(value, end);
    if tail != value.len() {
        return Err((DigitsError::Missing, tail));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn u32_values() {
        assert_eq!(parse_u32(b"150", "bad Content-Length"), Ok(150));
        assert_eq!(parse_u32(b" 0 ", "bad Content-Length"), Ok(0));
        assert_eq!(
            parse_u32(b"0000000000000000000000042", "bad Expires"),
            Ok(42)
        );
        assert_eq!(parse_u32(b"4294967295", "bad Expires"), Ok(u32::MAX));
        // ncl.
        assert_eq!(
            parse_u32(b"-999", "bad Content-Length"),
            Err(HeaderError::new("bad Content-Length", 0))
        );
        // scalar02's Expires.
        let huge = b"10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(
            parse_u32(huge, "bad Expires"),
            Err(HeaderError::new("bad Expires", 0))
        );
        assert_eq!(
            parse_u32(b"4294967296", "bad Expires").unwrap_err().what,
            "bad Expires"
        );
        assert_eq!(parse_u32(b"", "bad Expires").unwrap_err().at, 0);
        assert_eq!(parse_u32(b"12 3", "bad Expires").unwrap_err().at, 3);
        assert_eq!(parse_u32(b"+5", "bad Expires").unwrap_err().at, 0);
        assert_eq!(parse_u32(b"0x10", "bad Expires").unwrap_err().at, 1);
    }

    #[test]
    fn max_forwards() {
        assert_eq!(parse_max_forwards(b"70"), Ok(70));
        assert_eq!(parse_max_forwards(b"0068"), Ok(68)); // wsinv
        assert_eq!(parse_max_forwards(b"0"), Ok(0)); // zeromf
        assert_eq!(parse_max_forwards(b"255"), Ok(255)); // intmeth
        assert_eq!(parse_max_forwards(b"     70"), Ok(70)); // baddn
        // scalar02.
        assert_eq!(
            parse_max_forwards(b"300"),
            Err(HeaderError::new("Max-Forwards above 255", 0))
        );
        assert_eq!(
            parse_max_forwards(b"256").unwrap_err().what,
            "Max-Forwards above 255"
        );
        assert_eq!(
            parse_max_forwards(b"").unwrap_err().what,
            "Max-Forwards is not a number"
        );
        assert_eq!(
            parse_max_forwards(b"7 0").unwrap_err(),
            HeaderError::new("Max-Forwards is not a number", 2)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse_u32(&s, "bad value");
            let _ = parse_max_forwards(&s);
        }

        #[test]
        fn any_u32_round_trips(n in any::<u32>()) {
            prop_assert_eq!(parse_u32(n.to_string().as_bytes(), "bad"), Ok(n));
            prop_assert_eq!(parse_max_forwards(n.to_string().as_bytes()).ok(), u8::try_from(n).ok());
        }
    }
}
