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
    /// Names longer than any known name are [`HeaderName::Other`] without
    /// further work, so hostile names cost one length check.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        const LONGEST: usize = "p-preferred-identity".len();
        if name.len() > LONGEST || name.is_empty() {
            return HeaderName::Other;
        }
        let mut lower = [0u8; LONGEST];
        let lower = &mut lower[..name.len()];
        for (dst, src) in lower.iter_mut().zip(name) {
            *dst = src.to_ascii_lowercase();
        }
        match &*lower {
            b"v" | b"via" => HeaderName::Via,
            b"f" | b"from" => HeaderName::From,
            b"t" | b"to" => HeaderName::To,
            b"i" | b"call-id" => HeaderName::CallId,
            b"cseq" => HeaderName::CSeq,
            b"m" | b"contact" => HeaderName::Contact,
            b"l" | b"content-length" => HeaderName::ContentLength,
            b"c" | b"content-type" => HeaderName::ContentType,
            b"max-forwards" => HeaderName::MaxForwards,
            b"route" => HeaderName::Route,
            b"record-route" => HeaderName::RecordRoute,
            b"k" | b"supported" => HeaderName::Supported,
            b"require" => HeaderName::Require,
            b"proxy-require" => HeaderName::ProxyRequire,
            b"unsupported" => HeaderName::Unsupported,
            b"expires" => HeaderName::Expires,
            b"s" | b"subject" => HeaderName::Subject,
            b"e" | b"content-encoding" => HeaderName::ContentEncoding,
            b"content-disposition" => HeaderName::ContentDisposition,
            b"o" | b"event" => HeaderName::Event,
            b"u" | b"allow-events" => HeaderName::AllowEvents,
            b"r" | b"refer-to" => HeaderName::ReferTo,
            b"b" | b"referred-by" => HeaderName::ReferredBy,
            b"x" | b"session-expires" => HeaderName::SessionExpires,
            b"a" | b"accept-contact" => HeaderName::AcceptContact,
            b"j" | b"reject-contact" => HeaderName::RejectContact,
            b"min-se" => HeaderName::MinSe,
            b"allow" => HeaderName::Allow,
            b"accept" => HeaderName::Accept,
            b"rack" => HeaderName::RAck,
            b"rseq" => HeaderName::RSeq,
            b"authorization" => HeaderName::Authorization,
            b"proxy-authorization" => HeaderName::ProxyAuthorization,
            b"www-authenticate" => HeaderName::WwwAuthenticate,
            b"proxy-authenticate" => HeaderName::ProxyAuthenticate,
            b"user-agent" => HeaderName::UserAgent,
            b"server" => HeaderName::Server,
            b"p-asserted-identity" => HeaderName::PAssertedIdentity,
            b"p-preferred-identity" => HeaderName::PPreferredIdentity,
            b"privacy" => HeaderName::Privacy,
            b"date" => HeaderName::Date,
            b"timestamp" => HeaderName::Timestamp,
            b"warning" => HeaderName::Warning,
            b"retry-after" => HeaderName::RetryAfter,
            b"reply-to" => HeaderName::ReplyTo,
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
