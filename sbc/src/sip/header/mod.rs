//! Typed views of header field values (RFC 3261 §20, grammar of §25).
//!
//! Owns: parsing ONE header value, as the message layer hands it over (a slice
//! of the message from after the colon to before the line's final CRLF,
//! possibly folded; comma lists already split with
//! [`split_values`](crate::sip::scan::split_values)), into a view that borrows
//! from it: [`Via`], [`NameAddr`] / [`Contact`] (From, To, Contact, Route,
//! Record-Route, Reply-To), [`CSeq`], [`MediaType`] (Content-Type),
//! [`OptionTags`] (Require, Proxy-Require, Supported, Unsupported), Call-ID and
//! the scalar headers (Content-Length, Expires, Max-Forwards).
//!
//! May not: allocate, panic on any input, or decode what the SBC does not
//! need (escapes and quoted strings stay as written). Each view validates
//! everything it exposes once, in `parse`, so its accessors are infallible;
//! parameters the SBC interprets (Via `branch`/`received`/`rport`/`maddr`/
//! `ttl`, `tag`, `expires`, `q`) are checked and must not repeat, because two
//! elements reading two different copies of a `tag` or `branch` is an attack
//! surface, not a tolerance.

mod call_id;
mod content_type;
mod cseq;
mod name_addr;
mod number;
mod option_tags;
mod via;

pub use call_id::parse_call_id;
pub use content_type::MediaType;
pub use cseq::CSeq;
pub use name_addr::{Contact, NameAddr};
pub use number::{parse_max_forwards, parse_u32};
pub use option_tags::{OptionTags, OptionTagsIter, option_tags};
pub use via::Via;

use crate::sip::scan::{ScanError, is_token_char, skip_lws};
use crate::sip::uri::UriError;

/// A malformed header value: the defect in words an operator understands and
/// its byte offset in the value. `Copy` and allocation-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct HeaderError {
    /// The defect, e.g. "Via sent-by port out of range".
    pub what: &'static str,
    /// Byte offset of the defect in the header value.
    pub at: usize,
}

impl HeaderError {
    /// A defect `what` at offset `at` of the value.
    pub const fn new(what: &'static str, at: usize) -> Self {
        Self { what, at }
    }

    /// A URI defect, for a URI that starts at offset `base` of the value.
    const fn in_uri(e: UriError, base: usize) -> Self {
        Self::new(e.what, base + e.at)
    }
}

impl From<ScanError> for HeaderError {
    fn from(e: ScanError) -> Self {
        Self::new(e.what, e.at)
    }
}

/// Requires that only LWS remains of `s` from `i`.
fn expect_end(s: &[u8], i: usize, what: &'static str) -> Result<(), HeaderError> {
    let end = skip_lws(s, i);
    if end == s.len() {
        Ok(())
    } else {
        Err(HeaderError::new(what, end))
    }
}

/// Stores an interpreted parameter, refusing a second copy.
fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    duplicate: &'static str,
    at: usize,
) -> Result<(), HeaderError> {
    match slot.replace(value) {
        Some(_) => Err(HeaderError::new(duplicate, at)),
        None => Ok(()),
    }
}

/// A parameter value that must be a token, as text.
fn token_value(value: Option<&[u8]>) -> Option<&str> {
    let v = value?;
    if v.is_empty() || !v.iter().all(|&b| is_token_char(b)) {
        return None;
    }
    std::str::from_utf8(v).ok()
}
