//! Call-ID (RFC 3261 §20.8, §25 `callid = word [ "@" word ]`).
//!
//! `word` is wide (it includes `<>:\"/[]?{}()`: RFC 4475 intmeth uses them
//! all) but excludes LWS, `@` inside a word, `;`, `,` and non-ASCII. The
//! Call-ID is compared byte for byte, so it is returned exactly as written.

use super::HeaderError;
use crate::sip::scan::{skip_lws, trim_lws};

/// Validates a Call-ID value and returns it without surrounding LWS.
pub fn parse_call_id(value: &[u8]) -> Result<&[u8], HeaderError> {
    let start = skip_lws(value, 0);
    let id = trim_lws(value);
    let first = word_end(id, 0);
    if first == 0 {
        return Err(HeaderError::new("empty Call-ID", start));
    }
    let end = if id.get(first) == Some(&b'@') {
        let second = word_end(id, first + 1);
        if second == first + 1 {
            return Err(HeaderError::new(
                "empty host part in Call-ID",
                start + first + 1,
            ));
        }
        second
    } else {
        first
    };
    if end != id.len() {
        return Err(HeaderError::new("bad character in Call-ID", start + end));
    }
    Ok(id)
}

/// `word` characters: token characters plus `()<>:\"/[]?{}`.
const fn is_word_char(b: u8) -> bool {
    crate::sip::scan::is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

fn word_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_word_char(b)) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_call_ids() {
        for (value, id) in [
            (
                &b"wsinv.ndaksdj@192.0.2.1"[..],
                &b"wsinv.ndaksdj@192.0.2.1"[..],
            ),
            (
                b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
                b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            ),
            (
                b" transports.kijh4akdnaqjkwendsasfdj",
                b"transports.kijh4akdnaqjkwendsasfdj",
            ),
            (
                b"3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
                b"3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
            ),
            (
                b"SSG9559905523997077@hlau_4100 ",
                b"SSG9559905523997077@hlau_4100",
            ),
            (b"a", b"a"),
        ] {
            assert_eq!(
                parse_call_id(value),
                Ok(id),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn invalid_call_ids() {
        let cases: [(&[u8], &str, usize); 7] = [
            (b"", "empty Call-ID", 0),
            (b"  ", "empty Call-ID", 2),
            (b"@host", "empty Call-ID", 0),
            (b"abc@", "empty host part in Call-ID", 4),
            (b"a@b@c", "bad character in Call-ID", 3),
            (b" a b", "bad character in Call-ID", 2),
            (b"a;b", "bad character in Call-ID", 1),
        ];
        for (value, what, at) in cases {
            assert_eq!(
                parse_call_id(value),
                Err(HeaderError::new(what, at)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert!(parse_call_id("caf\u{e9}".as_bytes()).is_err());
        assert!(parse_call_id(b"a,b").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(id) = parse_call_id(&s) {
                prop_assert!(!id.is_empty());
                prop_assert!(id.is_ascii());
            }
        }
    }
}
