//! Option-tag lists: Require, Proxy-Require, Supported, Unsupported
//! (RFC 3261 §20.29, §20.32, §20.37, §20.40, §25 `option-tag = token`).
//!
//! Accepts a whole header value (`tag *( COMMA tag )`, LWS around commas) or
//! one element already split by the message layer. An empty value is an empty
//! list (valid for Supported); an empty element (`a,,b`) is an error. Tags are
//! returned as written: RFC 4475 bext01's unknown tags must be echoed in
//! Unsupported exactly.

use super::HeaderError;
use crate::sip::scan::{skip_lws, token, token_end};

/// A validated option-tag list, borrowing from the header value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionTags<'a> {
    raw: &'a [u8],
}

/// Validates an option-tag list: see [`OptionTags`].
pub fn option_tags(value: &[u8]) -> Result<OptionTags<'_>, HeaderError> {
    OptionTags::parse(value)
}

impl<'a> OptionTags<'a> {
    /// Validates an option-tag list.
    pub fn parse(value: &'a [u8]) -> Result<OptionTags<'a>, HeaderError> {
        let s = value;
        let mut i = skip_lws(s, 0);
        if i == s.len() {
            return Ok(OptionTags { raw: s });
        }
        loop {
            let end = token_end(s, i);
            if end == i {
                let what = match s.get(i) {
                    None | Some(b',') => "empty option tag",
                    Some(_) => "bad character in option tag",
                };
                return Err(HeaderError::new(what, i));
            }
            let next = skip_lws(s, end);
            match s.get(next) {
                None => return Ok(OptionTags { raw: s }),
                Some(b',') => i = skip_lws(s, next + 1),
                Some(_) => return Err(HeaderError::new("bad character in option tag", next)),
            }
        }
    }

    /// Whether the list has no tags.
    pub fn is_empty(&self) -> bool {
        skip_lws(self.raw, 0) == self.raw.len()
    }

    /// Iterates over the tags in order.
    pub fn iter(&self) -> OptionTagsIter<'a> {
        OptionTagsIter {
            s: self.raw,
            pos: 0,
        }
    }
}

impl<'a> IntoIterator for &OptionTags<'a> {
    type Item = &'a str;
    type IntoIter = OptionTagsIter<'a>;

    fn into_iter(self) -> OptionTagsIter<'a> {
        self.iter()
    }
}

/// Iterator over a validated [`OptionTags`].
#[derive(Clone, Debug)]
pub struct OptionTagsIter<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for OptionTagsIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (tag, end) = token(self.s, skip_lws(self.s, self.pos))?;
        // Past the comma (if any); the list was validated.
        self.pos = skip_lws(self.s, end) + 1;
        Some(tag)
    }
}

impl std::iter::FusedIterator for OptionTagsIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tags(s: &[u8]) -> Vec<&str> {
        option_tags(s).unwrap().iter().collect()
    }

    #[test]
    fn valid_lists() {
        // bext01.
        assert_eq!(
            tags(b"nothingSupportsThis, nothingSupportsThisEither"),
            ["nothingSupportsThis", "nothingSupportsThisEither"]
        );
        assert_eq!(
            tags(b"noProxiesSupportThis, norDoAnyProxiesSupportThis"),
            ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
        );
        assert_eq!(
            tags(b"100rel,timer ,\r\n replaces "),
            ["100rel", "timer", "replaces"]
        );
        assert_eq!(tags(b"path"), ["path"]);
        assert!(option_tags(b"").unwrap().is_empty());
        assert!(option_tags(b"  ").unwrap().is_empty());
        assert_eq!(option_tags(b" ").unwrap().iter().count(), 0);
        assert!(!option_tags(b"timer").unwrap().is_empty());
        assert_eq!((&option_tags(b"a,b").unwrap()).into_iter().count(), 2);
    }

    #[test]
    fn invalid_lists() {
        let cases: [(&[u8], &str, usize); 6] = [
            (b"a,,b", "empty option tag", 2),
            (b"a,", "empty option tag", 2),
            (b",a", "empty option tag", 0),
            (b"a b", "bad character in option tag", 2),
            (b"a;x=1", "bad character in option tag", 1),
            (b"\"a\"", "bad character in option tag", 0),
        ];
        for (value, what, at) in cases {
            assert_eq!(
                option_tags(value),
                Err(HeaderError::new(what, at)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(t) = option_tags(&s) {
                prop_assert!(t.iter().all(|tag| !tag.is_empty()));
            }
        }

        #[test]
        fn round_trip(list in proptest::collection::vec("[a-zA-Z0-9.!%*_+`'~-]{1,10}", 1..6), sp in "( |\r\n )*") {
            let text = list.join(&format!("{sp},{sp}"));
            let got: Vec<&str> = option_tags(text.as_bytes()).unwrap().iter().collect();
            prop_assert_eq!(got, list);
        }
    }
}
