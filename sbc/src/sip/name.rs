//! Header names: the headers the SBC reads or rewrites, their compact forms
//! (RFC 3261 §7.3.3, §20 and the extensions that registered one), and
//! case-insensitive matching (§7.3.1).
//!
//! Every other header is [`HeaderName::Other`] and is never interpreted: it
//! passes through byte for byte under whatever spelling it arrived with.

/// The one table of known headers: variant, canonical spelling (used when
/// the SBC adds the header, and matched case-insensitively), and the compact
/// form where one is registered (RFC 3261 §7.3.3 and extensions). The enum,
/// [`HeaderName::canonical`], the compact forms, [`HeaderName::ALL`] and the
/// lookup table of [`HeaderName::from_bytes`] are all generated from it.
macro_rules! standard_headers {
    ($($variant:ident => $canonical:literal $(, compact $compact:literal)?;)+) => {
        /// A header name, recognised case-insensitively in long or compact form.
        ///
        /// The message keeps the bytes of the name as written; this is only the
        /// classification used to find headers and to print headers the SBC adds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canonical, "`")]
                $variant,
            )+
            /// Any header the SBC does not interpret.
            Other,
        }

        impl HeaderName {
            /// Every known header name (all but [`HeaderName::Other`]).
            pub const ALL: &'static [HeaderName] = &[$(HeaderName::$variant),+];

            /// The canonical long form, used when the SBC adds a header of its
            /// own. `Other` has no canonical spelling; callers adding an
            /// unknown header supply its name themselves.
            pub const fn canonical(self) -> &'static str {
                match self {
                    $(HeaderName::$variant => $canonical,)+
                    HeaderName::Other => "",
                }
            }

            /// The compact forms (RFC 3261 §7.3.3 and the extensions that
            /// define one); `letter` is lower case.
            const fn compact(letter: u8) -> HeaderName {
                $($(if letter == $compact {
                    return HeaderName::$variant;
                })?)+
                HeaderName::Other
            }
        }
    };
}

standard_headers! {
    Accept => "Accept";
    AcceptEncoding => "Accept-Encoding";
    AcceptContact => "Accept-Contact", compact b'a';
    Allow => "Allow";
    AllowEvents => "Allow-Events", compact b'u';
    Authorization => "Authorization";
    CallId => "Call-ID", compact b'i';
    Contact => "Contact", compact b'm';
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", compact b'e';
    ContentLength => "Content-Length", compact b'l';
    ContentType => "Content-Type", compact b'c';
    CSeq => "CSeq";
    Date => "Date";
    Event => "Event", compact b'o';
    Expires => "Expires";
    From => "From", compact b'f';
    MaxForwards => "Max-Forwards";
    MinSe => "Min-SE";
    PAssertedIdentity => "P-Asserted-Identity";
    PPreferredIdentity => "P-Preferred-Identity";
    Privacy => "Privacy";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RAck => "RAck";
    RecordRoute => "Record-Route";
    ReferredBy => "Referred-By", compact b'b';
    ReferTo => "Refer-To", compact b'r';
    RejectContact => "Reject-Contact", compact b'j';
    ReplyTo => "Reply-To";
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    RSeq => "RSeq";
    Server => "Server";
    SessionExpires => "Session-Expires", compact b'x';
    Subject => "Subject", compact b's';
    Supported => "Supported", compact b'k';
    Timestamp => "Timestamp";
    To => "To", compact b't';
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", compact b'v';
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
}

/// The longest known name (`P-Preferred-Identity`).
const MAX_LEN: usize = 20;

/// Known names ordered by length, and where each length's run starts:
/// `from_bytes` compares a name only against the names of its own length.
const BY_LEN: ([HeaderName; HeaderName::ALL.len()], [usize; MAX_LEN + 2]) = {
    let mut names = [HeaderName::Other; HeaderName::ALL.len()];
    let mut starts = [0; MAX_LEN + 2];
    let mut n = 0;
    let mut len = 0;
    while len <= MAX_LEN {
        starts[len] = n;
        let mut i = 0;
        while i < HeaderName::ALL.len() {
            if HeaderName::ALL[i].canonical().len() == len {
                names[n] = HeaderName::ALL[i];
                n += 1;
            }
            i += 1;
        }
        len += 1;
    }
    starts[MAX_LEN + 1] = n;
    assert!(n == HeaderName::ALL.len(), "a name is longer than MAX_LEN");
    (names, starts)
};

impl HeaderName {
    /// Classifies a header name as written on the wire (without the colon).
    ///
    /// Runs for every header line of every message: it dispatches on the
    /// length first, so a name is compared against at most a handful of
    /// candidates, and hostile names cost one length check.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        match name.len() {
            1 => Self::compact(name[0].to_ascii_lowercase()),
            len @ 2..=MAX_LEN => {
                let (names, starts) = &BY_LEN;
                names[starts[len]..starts[len + 1]]
                    .iter()
                    .find(|known| known.canonical().as_bytes().eq_ignore_ascii_case(name))
                    .copied()
                    .unwrap_or(HeaderName::Other)
            }
            _ => HeaderName::Other,
        }
    }

    /// Headers that may appear at most once (RFC 3261 §7.3.1: they are not
    /// comma-separated lists). A second one makes the message malformed
    /// (RFC 4475 §3.3.8 multi01, §3.3.9 mcl01).
    pub const fn is_single(self) -> bool {
        matches!(
            self,
            HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::From
                | HeaderName::To
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
        )
    }
}

// The message parser keeps a u64 bitset indexed by `HeaderName as u32`.
const _: () = assert!((HeaderName::Other as u32) < 64);

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderName::Other => f.write_str("extension header"),
            known => f.write_str(known.canonical()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn compact_and_long_forms_agree() {
        for (compact, long) in [
            ("v", "Via"),
            ("f", "From"),
            ("t", "To"),
            ("i", "Call-ID"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("c", "Content-Type"),
            ("k", "Supported"),
            ("s", "Subject"),
            ("e", "Content-Encoding"),
            ("o", "Event"),
            ("u", "Allow-Events"),
            ("r", "Refer-To"),
            ("b", "Referred-By"),
            ("x", "Session-Expires"),
            ("a", "Accept-Contact"),
            ("j", "Reject-Contact"),
        ] {
            let a = HeaderName::from_bytes(compact.as_bytes());
            assert_ne!(a, HeaderName::Other, "{compact}");
            assert_eq!(
                a,
                HeaderName::from_bytes(long.as_bytes()),
                "{compact} vs {long}"
            );
            assert_eq!(a.canonical(), long);
        }
    }

    #[test]
    fn every_canonical_name_classifies_as_itself() {
        assert_eq!(
            HeaderName::ALL.len(),
            HeaderName::Other as usize,
            "ALL lists every variant but Other"
        );
        for &name in HeaderName::ALL {
            let canonical = name.canonical();
            assert_eq!(
                HeaderName::from_bytes(canonical.as_bytes()),
                name,
                "{canonical}"
            );
            assert_eq!(
                HeaderName::from_bytes(canonical.to_ascii_uppercase().as_bytes()),
                name,
                "{canonical} upper case"
            );
        }
    }

    #[test]
    fn matching_ignores_case() {
        assert_eq!(HeaderName::from_bytes(b"cAlL-iD"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"CSEQ"), HeaderName::CSeq);
    }

    #[test]
    fn unknown_and_escaped_names_are_other() {
        // RFC 4475 esc02: "C%6Fntact" is an extension header, not Contact.
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(
            HeaderName::from_bytes(b"NewFangledHeader"),
            HeaderName::Other
        );
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(&[b'x'; 300]), HeaderName::Other);
    }
}
