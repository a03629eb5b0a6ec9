//! Header names: the headers the SBC reads or rewrites, their compact forms
//! (RFC 3261 §7.3.3, §20 and the extensions that registered one), and
//! case-insensitive matching (§7.3.1).
//!
//! Every other header is [`HeaderName::Other`] and is never interpreted: it
//! passes through byte for byte under whatever spelling it arrived with.

/// A header name, recognised case-insensitively in long or compact form.
///
/// The message keeps the bytes of the name as written; this is only the
/// classification used to find headers and to print headers the SBC adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    AcceptContact,
    Allow,
    AllowEvents,
    Authorization,
    CallId,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    Expires,
    From,
    MaxForwards,
    MinSe,
    PAssertedIdentity,
    PPreferredIdentity,
    Privacy,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    RecordRoute,
    ReferredBy,
    ReferTo,
    RejectContact,
    ReplyTo,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Subject,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    /// Any header the SBC does not interpret.
    Other,
}

impl HeaderName {
    /// Classifies a header name as written on the wire (without the colon).
    ///
    /// Runs for every header line of every message: it dispatches on the
    /// length first, so a name is compared against at most a handful of
    /// candidates, and hostile names cost one length check.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        let candidates: &[(&[u8], HeaderName)] = match name.len() {
            1 => return Self::compact(name[0].to_ascii_lowercase()),
            2 => &[(b"to", To)],
            3 => &[(b"via", Via)],
            4 => &[
                (b"from", From),
                (b"cseq", CSeq),
                (b"date", Date),
                (b"rack", RAck),
                (b"rseq", RSeq),
            ],
            5 => &[(b"route", Route), (b"allow", Allow), (b"event", Event)],
            6 => &[(b"accept", Accept), (b"min-se", MinSe), (b"server", Server)],
            7 => &[
                (b"call-id", CallId),
                (b"contact", Contact),
                (b"expires", Expires),
                (b"require", Require),
                (b"subject", Subject),
                (b"privacy", Privacy),
                (b"warning", Warning),
            ],
            8 => &[(b"refer-to", ReferTo), (b"reply-to", ReplyTo)],
            9 => &[(b"supported", Supported), (b"timestamp", Timestamp)],
            10 => &[(b"user-agent", UserAgent)],
            11 => &[
                (b"referred-by", ReferredBy),
                (b"unsupported", Unsupported),
                (b"retry-after", RetryAfter),
            ],
            12 => &[
                (b"max-forwards", MaxForwards),
                (b"record-route", RecordRoute),
                (b"content-type", ContentType),
                (b"allow-events", AllowEvents),
            ],
            13 => &[
                (b"authorization", Authorization),
                (b"proxy-require", ProxyRequire),
            ],
            14 => &[
                (b"content-length", ContentLength),
                (b"accept-contact", AcceptContact),
                (b"reject-contact", RejectContact),
            ],
            15 => &[(b"session-expires", SessionExpires)],
            16 => &[
                (b"content-encoding", ContentEncoding),
                (b"www-authenticate", WwwAuthenticate),
            ],
            18 => &[(b"proxy-authenticate", ProxyAuthenticate)],
            19 => &[
                (b"proxy-authorization", ProxyAuthorization),
                (b"content-disposition", ContentDisposition),
                (b"p-asserted-identity", PAssertedIdentity),
            ],
            20 => &[(b"p-preferred-identity", PPreferredIdentity)],
            _ => return Other,
        };
        candidates
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map_or(Other, |&(_, header)| header)
    }

    /// The compact forms (RFC 3261 §7.3.3 and the extensions that define one).
    fn compact(letter: u8) -> HeaderName {
        match letter {
            b'v' => HeaderName::Via,
            b'f' => HeaderName::From,
            b't' => HeaderName::To,
            b'i' => HeaderName::CallId,
            b'm' => HeaderName::Contact,
            b'l' => HeaderName::ContentLength,
            b'c' => HeaderName::ContentType,
            b'k' => HeaderName::Supported,
            b's' => HeaderName::Subject,
            b'e' => HeaderName::ContentEncoding,
            b'o' => HeaderName::Event,
            b'u' => HeaderName::AllowEvents,
            b'r' => HeaderName::ReferTo,
            b'b' => HeaderName::ReferredBy,
            b'x' => HeaderName::SessionExpires,
            b'a' => HeaderName::AcceptContact,
            b'j' => HeaderName::RejectContact,
            _ => HeaderName::Other,
        }
    }

    /// The canonical long form, used when the SBC adds a header of its own.
    /// `Other` has no canonical spelling; callers adding an unknown header
    /// supply its name themselves.
    pub const fn canonical(self) -> &'static str {
        match self {
            HeaderName::Accept => "Accept",
            HeaderName::AcceptContact => "Accept-Contact",
            HeaderName::Allow => "Allow",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::Authorization => "Authorization",
            HeaderName::CallId => "Call-ID",
            HeaderName::Contact => "Contact",
            HeaderName::ContentDisposition => "Content-Disposition",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::CSeq => "CSeq",
            HeaderName::Date => "Date",
            HeaderName::Event => "Event",
            HeaderName::Expires => "Expires",
            HeaderName::From => "From",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MinSe => "Min-SE",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::PPreferredIdentity => "P-Preferred-Identity",
            HeaderName::Privacy => "Privacy",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::RAck => "RAck",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::RejectContact => "Reject-Contact",
            HeaderName::ReplyTo => "Reply-To",
            HeaderName::Require => "Require",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::Route => "Route",
            HeaderName::RSeq => "RSeq",
            HeaderName::Server => "Server",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::Subject => "Subject",
            HeaderName::Supported => "Supported",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::To => "To",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Via => "Via",
            HeaderName::Warning => "Warning",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::Other => "",
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

    /// Every header name, so tests can check each one.
    const ALL: [HeaderName; 45] = {
        use HeaderName::*;
        [
            Accept,
            AcceptContact,
            Allow,
            AllowEvents,
            Authorization,
            CallId,
            Contact,
            ContentDisposition,
            ContentEncoding,
            ContentLength,
            ContentType,
            CSeq,
            Date,
            Event,
            Expires,
            From,
            MaxForwards,
            MinSe,
            PAssertedIdentity,
            PPreferredIdentity,
            Privacy,
            ProxyAuthenticate,
            ProxyAuthorization,
            ProxyRequire,
            RAck,
            RecordRoute,
            ReferredBy,
            ReferTo,
            RejectContact,
            ReplyTo,
            Require,
            RetryAfter,
            Route,
            RSeq,
            Server,
            SessionExpires,
            Subject,
            Supported,
            Timestamp,
            To,
            Unsupported,
            UserAgent,
            Via,
            Warning,
            WwwAuthenticate,
        ]
    };

    #[test]
    fn every_canonical_name_classifies_as_itself() {
        assert_eq!(
            ALL.len() + 1,
            HeaderName::Other as usize + 1,
            "ALL lists every variant but Other"
        );
        for name in ALL {
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
