//! One Via value (RFC 3261 §20.42, §25 `via-parm`; RFC 3581 `rport`;
//! RFC 5118 §4.5 IPv6 `received`).
//!
//! `sent-protocol LWS sent-by *( SEMI via-params )`, with LWS allowed around
//! each `/` of the sent-protocol and around the `:` of sent-by (RFC 4475
//! wsinv). Any token is a transport, unknown ones included (RFC 4475
//! transports). The sent-by host follows [`Host`]: IPv6 must be bracketed.
//! `branch`, `received`, `rport`, `maddr` and `ttl` are validated and may
//! appear once; `received` takes IPv4, bracketed IPv6 or bare IPv6 (RFC 5118
//! §4.5 allows both IPv6 spellings).

use std::net::{IpAddr, Ipv6Addr};

use super::{HeaderError, expect_end, set_once, token_value};
use crate::sip::scan::{DigitsError, Params, digits, skip_lws, token, token_end};
use crate::sip::uri::{Host, scan_host};

/// A parsed Via value, borrowing from the header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a str,
    protocol_name: &'a str,
    protocol_version: &'a str,
    transport: &'a str,
    sent_by: &'a [u8],
    host: Host<'a>,
    port: Option<u16>,
    params: Params<'a>,
    branch: Option<&'a str>,
    received: Option<&'a str>,
    rport: Option<Option<u16>>,
    maddr: Option<Host<'a>>,
    ttl: Option<u8>,
}

impl<'a> Via<'a> {
    /// Parses one Via value.
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, HeaderError> {
        let s = value;
        let start = skip_lws(s, 0);
        let name_end = token_end(s, start);
        if name_end == start {
            return Err(HeaderError::new("missing Via protocol name", start));
        }
        let version_start = slash(s, name_end)?;
        let version_end = token_end(s, version_start);
        if version_end == version_start {
            return Err(HeaderError::new(
                "missing Via protocol version",
                version_start,
            ));
        }
        // One UTF-8 check for name and version: the span is tokens and LWS.
        let protocol = std::str::from_utf8(&s[start..version_end])
            .map_err(|_| HeaderError::new("bad Via sent-protocol", start))?;
        let protocol_name = protocol.get(..name_end - start).unwrap_or_default();
        let protocol_version = protocol.get(version_start - start..).unwrap_or_default();
        let i = slash(s, version_end)?;
        let (transport, transport_end) =
            token(s, i).ok_or(HeaderError::new("missing Via transport", i))?;

        let host_start = skip_lws(s, transport_end);
        if host_start == s.len() {
            return Err(HeaderError::new("missing Via sent-by", host_start));
        }
        if host_start == transport_end {
            return Err(HeaderError::new(
                "bad character in Via transport",
                host_start,
            ));
        }
        let (host, host_end) = scan_host(s, host_start)
            .map_err(|e| HeaderError::new("bad host in Via sent-by", e.at))?;
        let mut sent_by_end = host_end;
        let mut port = None;
        let colon = skip_lws(s, host_end);
        if s.get(colon) == Some(&b':') {
            let p = skip_lws(s, colon + 1);
            let (value, end) = digits(s, p, u32::from(u16::MAX)).map_err(|e| match e {
                DigitsError::Missing => HeaderError::new("missing Via sent-by port", p),
                DigitsError::TooLarge(_) => HeaderError::new("Via sent-by port out of range", p),
            })?;
            port = u16::try_from(value).ok();
            sent_by_end = end;
        }

        let mut via = Via {
            protocol,
            protocol_name,
            protocol_version,
            transport,
            sent_by: &s[host_start..sent_by_end],
            host,
            port,
            params: Params::default(),
            branch: None,
            received: None,
            rport: None,
            maddr: None,
            ttl: None,
        };
        let (params, end) = Params::parse_with(s, sent_by_end, |name, value, at| {
            via.interpret(name, value, at)
        })?;
        expect_end(s, end, "unexpected character after Via sent-by")?;
        via.params = params;
        Ok(via)
    }

    /// Validates and stores a parameter this view exposes; ignores others.
    fn interpret(
        &mut self,
        name: &'a [u8],
        value: Option<&'a [u8]>,
        at: usize,
    ) -> Result<(), HeaderError> {
        let bad = |what| HeaderError::new(what, at);
        if name.eq_ignore_ascii_case(b"branch") {
            let branch = token_value(value).ok_or(bad("bad Via branch"))?;
            set_once(&mut self.branch, branch, "duplicate Via branch", at)
        } else if name.eq_ignore_ascii_case(b"received") {
            let received = value
                .filter(|v| is_ip(v))
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or(bad("Via received is not an IP address"))?;
            set_once(&mut self.received, received, "duplicate Via received", at)
        } else if name.eq_ignore_ascii_case(b"rport") {
            let rport = match value {
                None => None,
                Some(v) => Some(
                    whole_number(v, u16::MAX.into())
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or(bad("bad Via rport"))?,
                ),
            };
            set_once(&mut self.rport, rport, "duplicate Via rport", at)
        } else if name.eq_ignore_ascii_case(b"maddr") {
            let maddr = value
                .and_then(|v| Host::parse(v).ok())
                .ok_or(bad("bad Via maddr"))?;
            set_once(&mut self.maddr, maddr, "duplicate Via maddr", at)
        } else if name.eq_ignore_ascii_case(b"ttl") {
            let ttl = value
                .and_then(|v| whole_number(v, u8::MAX.into()))
                .and_then(|t| u8::try_from(t).ok())
                .ok_or(bad("bad Via ttl"))?;
            set_once(&mut self.ttl, ttl, "duplicate Via ttl", at)
        } else {
            Ok(())
        }
    }

    /// The protocol as written, name and version: `SIP/2.0` (LWS around the
    /// `/` is kept if the sender folded it; compare
    /// [`protocol_name`](Self::protocol_name) and
    /// [`protocol_version`](Self::protocol_version) instead).
    pub const fn protocol(&self) -> &'a str {
        self.protocol
    }

    /// The protocol name, e.g. `SIP`.
    pub const fn protocol_name(&self) -> &'a str {
        self.protocol_name
    }

    /// The protocol version, e.g. `2.0`.
    pub const fn protocol_version(&self) -> &'a str {
        self.protocol_version
    }

    /// The transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or
    /// any extension).
    pub const fn transport(&self) -> &'a str {
        self.transport
    }

    /// The sent-by host.
    pub const fn host(&self) -> Host<'a> {
        self.host
    }

    /// The sent-by port, if written.
    pub const fn port(&self) -> Option<u16> {
        self.port
    }

    /// The sent-by (`host [ ":" port ]`) as written.
    pub const fn sent_by(&self) -> &'a [u8] {
        self.sent_by
    }

    /// All Via parameters, in order, as written.
    pub const fn params(&self) -> &Params<'a> {
        &self.params
    }

    /// The `branch` parameter.
    pub const fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// The `received` parameter as written (IPv6 possibly in brackets).
    pub const fn received(&self) -> Option<&'a str> {
        self.received
    }

    /// The `received` address, if it parses as one (`None` for RFC 5118's
    /// tolerated three-colon form).
    pub fn received_ip(&self) -> Option<IpAddr> {
        let text = self.received?;
        match Host::parse(text.as_bytes()) {
            Ok(host) => host.ip(),
            Err(_) => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        }
    }

    /// The `rport` parameter (RFC 3581): `Some(None)` when present without a
    /// value (a request asking for it), `Some(Some(port))` when filled in.
    pub const fn rport(&self) -> Option<Option<u16>> {
        self.rport
    }

    /// The `maddr` parameter.
    pub const fn maddr(&self) -> Option<Host<'a>> {
        self.maddr
    }

    /// The `ttl` parameter.
    pub const fn ttl(&self) -> Option<u8> {
        self.ttl
    }
}

/// `SLASH = SWS "/" SWS`: the index after it.
fn slash(s: &[u8], i: usize) -> Result<usize, HeaderError> {
    let j = skip_lws(s, i);
    if s.get(j) != Some(&b'/') {
        return Err(HeaderError::new("expected '/' in Via sent-protocol", j));
    }
    Ok(skip_lws(s, j + 1))
}

/// `v` is exactly `1*DIGIT` with a value of at most `max`.
fn whole_number(v: &[u8], max: u32) -> Option<u32> {
    match digits(v, 0, max) {
        Ok((n, end)) if end == v.len() => Some(n),
        _ => None,
    }
}

/// IPv4address / IPv6reference / IPv6address (bare IPv6 must be a real one).
fn is_ip(v: &[u8]) -> bool {
    match Host::parse(v) {
        Ok(Host::V4(_) | Host::V6(_)) => true,
        Ok(Host::Domain(_)) => false,
        Err(_) => std::str::from_utf8(v).is_ok_and(|t| t.parse::<Ipv6Addr>().is_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::scan::split_values;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn ok(s: &[u8]) -> Via<'_> {
        Via::parse(s)
            .unwrap_or_else(|e| panic!("{:?}: {e} at {}", String::from_utf8_lossy(s), e.at))
    }

    fn err(s: &[u8]) -> HeaderError {
        match Via::parse(s) {
            Ok(v) => panic!("{:?} should fail, got {v:?}", String::from_utf8_lossy(s)),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_via() {
        let v = ok(b"SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234");
        assert_eq!(v.protocol(), "SIP/2.0");
        assert_eq!((v.protocol_name(), v.protocol_version()), ("SIP", "2.0"));
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.host(), Host::V4(Ipv4Addr::new(192, 0, 2, 59)));
        assert_eq!(v.port(), Some(5050));
        assert_eq!(v.sent_by(), b"192.0.2.59:5050");
        assert_eq!(v.branch(), Some("z9hG4bKkdjuw39234"));
        assert_eq!(v.received(), None);
        assert_eq!(v.rport(), None);
        // inv2543: no branch, no params.
        let v = ok(b"SIP/2.0/UDP iftgw.example.com");
        assert_eq!(v.host(), Host::Domain("iftgw.example.com"));
        assert_eq!(v.branch(), None);
        assert!(v.params().is_empty());
        // badbranch: the bare magic cookie is syntactically fine.
        assert_eq!(
            ok(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").branch(),
            Some("z9hG4bK")
        );
        // esc02: a '%' in a branch is a token character, not an escape.
        assert_eq!(
            ok(b"SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234").branch(),
            Some("z9hG4bK209%fzsnel234")
        );
        // intmeth: every token punctuation character.
        assert_eq!(
            ok(b"SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~").branch(),
            Some("z9hG4bK-.!%66*_+`'~")
        );
    }

    #[test]
    fn wsinv_folded_vias() {
        let v = ok(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw");
        assert_eq!(v.protocol(), "SIP  /   2.0");
        assert_eq!((v.protocol_name(), v.protocol_version()), ("SIP", "2.0"));
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.host(), Host::V4(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(v.branch(), Some("390skdjuw"));

        let header = b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239";
        let vias: Vec<Via<'_>> = split_values(header).map(ok).collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].transport(), "TCP");
        assert_eq!(vias[0].host(), Host::Domain("spindle.example.com"));
        assert_eq!(vias[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(vias[1].transport(), "UDP");
        assert_eq!(vias[1].branch(), Some("z9hG4bK30239"));
        assert_eq!(vias[1].sent_by(), b"192.168.255.111");

        // COLON = SWS ":" SWS in sent-by.
        let v = ok(b"SIP/2.0/UDP host.example.com : 5060 ;branch=z9hG4bKx");
        assert_eq!(v.port(), Some(5060));
        assert_eq!(v.sent_by(), b"host.example.com : 5060");
    }

    #[test]
    fn rfc4475_transports_and_long_values() {
        for (value, transport) in [
            (
                &b"SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw"[..],
                "UDP",
            ),
            (
                b"SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
                "SCTP",
            ),
            (b"SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj", "TLS"),
            (
                b"SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
                "UNKNOWN",
            ),
            (b"SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee", "TCP"),
        ] {
            assert_eq!(ok(value).transport(), transport);
        }
        // longreq's last Via.
        let v = ok(b"SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=verylonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglonglongbranchvalue");
        assert_eq!(v.received(), Some("192.0.2.5"));
        assert_eq!(
            v.received_ip(),
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 5)))
        );
        assert!(v.branch().unwrap().ends_with("branchvalue"));
        // mpart01: rport requested.
        let v = ok(
            b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport",
        );
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.port(), Some(5070));
        // bcast: the broadcast address is a valid host here; policy is elsewhere.
        assert_eq!(
            ok(b"SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23").host(),
            Host::V4(Ipv4Addr::BROADCAST)
        );
    }

    #[test]
    fn rfc5118_vias() {
        let v = ok(b"SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111");
        assert_eq!(v.host(), Host::V6("2001:db8::9:1"));
        assert_eq!(v.port(), None);
        let v = ok(b"SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111");
        assert_eq!(
            (v.host(), v.port()),
            (Host::V6("2001:db8::9:1"), Some(6050))
        );
        assert_eq!(v.sent_by(), b"[2001:db8::9:1]:6050");
        let v = ok(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKjhja8781hjuaij65144");
        assert_eq!(v.host(), Host::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let v = ok(b"SIP/2.0/TCP [2001:db8::9:255];branch=z9hG4bK451jj;received=192.0.2.200");
        assert_eq!(v.received(), Some("192.0.2.200"));
        let v = ok(b"SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19");
        assert_eq!(v.host().ip(), Some("::ffff:192.0.2.10".parse().unwrap()));
        assert_eq!(v.port(), Some(19823));
        ok(b"SIP/2.0/UDP [::ffff:192.0.2.2];branch=z9hG4bKas3-111");
        ok(b"SIP/2.0/UDP [2001:db8::20];branch=z9hG4bKas3-111");
        ok(b"SIP/2.0/UDP lab1.east.example.com;branch=z9hG4bKas3-111");

        // §4.5: received with and without brackets.
        let with =
            ok(b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111");
        assert_eq!(with.received(), Some("[2001:db8::9:255]"));
        assert_eq!(with.branch(), Some("z9hG4bKas3-111"));
        let without = ok(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3");
        assert_eq!(without.received(), Some("2001:db8::9:255"));
        assert_eq!(without.branch(), Some("z9hG4bKas3"));
        assert_eq!(with.received_ip(), without.received_ip());
        assert_eq!(
            without.received_ip(),
            Some("2001:db8::9:255".parse().unwrap())
        );

        assert_eq!(
            err(b"SIP/2.0/UDP 2001:db8::9:1;branch=z").what,
            "bad host in Via sent-by"
        );
    }

    #[test]
    fn interpreted_params() {
        let v = ok(b"SIP/2.0/UDP h;rport=5061;maddr=224.0.1.75;ttl=16;RECEIVED=10.0.0.1;x=\"y\"");
        assert_eq!(v.rport(), Some(Some(5061)));
        assert_eq!(v.maddr(), Some(Host::V4(Ipv4Addr::new(224, 0, 1, 75))));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.received(), Some("10.0.0.1"));
        assert_eq!(v.params().get("x"), Some(Some(&b"\"y\""[..])));
        assert_eq!(
            ok(b"SIP/2.0/UDP h;maddr=[ff02::1]").maddr(),
            Some(Host::V6("ff02::1"))
        );
        assert_eq!(
            ok(b"SIP/2.0/UDP h;maddr=sip.example.com").maddr(),
            Some(Host::Domain("sip.example.com"))
        );
    }

    #[test]
    fn malformed_vias() {
        let cases: [(&[u8], &str, usize); 22] = [
            (b"", "missing Via protocol name", 0),
            (b"SIP", "expected '/' in Via sent-protocol", 3),
            (b"SIP/", "missing Via protocol version", 4),
            (b"SIP/2.0", "expected '/' in Via sent-protocol", 7),
            (b"SIP/2.0/", "missing Via transport", 8),
            (b"SIP/2.0/UDP", "missing Via sent-by", 11),
            (b"SIP/2.0/UDP ", "missing Via sent-by", 12),
            (b"SIP/2.0/UDP@host", "bad character in Via transport", 11),
            (b"SIP/2.0/UDP host:", "missing Via sent-by port", 17),
            (
                b"SIP/2.0/UDP host:65536",
                "Via sent-by port out of range",
                17,
            ),
            (
                b"SIP/2.0/UDP host:5060x",
                "unexpected character after Via sent-by",
                21,
            ),
            (
                b"SIP/2.0/UDP host extra",
                "unexpected character after Via sent-by",
                17,
            ),
            // badinv01: the values split_values yields.
            (b"SIP/2.0/UDP 192.0.2.15;;", "empty header parameter", 23),
            (b";", "missing Via protocol name", 0),
            (b"SIP/2.0/UDP h;branch", "bad Via branch", 14),
            (b"SIP/2.0/UDP h;branch=\"x\"", "bad Via branch", 14),
            (
                b"SIP/2.0/UDP h;branch=a;branch=b",
                "duplicate Via branch",
                23,
            ),
            (
                b"SIP/2.0/UDP h;received=example.com",
                "Via received is not an IP address",
                14,
            ),
            (
                b"SIP/2.0/UDP h;received=1:2",
                "Via received is not an IP address",
                14,
            ),
            (b"SIP/2.0/UDP h;rport=65536", "bad Via rport", 14),
            (b"SIP/2.0/UDP h;ttl=256", "bad Via ttl", 14),
            (b"SIP/2.0/UDP h;maddr=-x", "bad Via maddr", 14),
        ];
        for (value, what, at) in cases {
            let e = Via::parse(value).expect_err(&String::from_utf8_lossy(value));
            assert_eq!(
                (e.what, e.at),
                (what, at),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert_eq!(
            err(b"SIP/2.0/UDP h:99999").to_string(),
            "Via sent-by port out of range"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(s in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Via::parse(&s);
        }

        #[test]
        fn via_alphabet_never_panics(s in "[SIP/2.0UDTCPh:;=\\[\\]a-f0-9 \r\n\t,\"rpotbanchevd]{0,48}") {
            if let Ok(v) = Via::parse(s.as_bytes()) {
                let _ = (v.received_ip(), v.host().to_string());
                prop_assert!(!v.transport().is_empty());
            }
        }

        #[test]
        fn generated_vias_parse(
            transport in "[A-Z]{2,5}",
            host in "[a-z]{1,8}(\\.[a-z]{2,4}){0,2}",
            port in proptest::option::of(any::<u16>()),
            branch in "z9hG4bK[a-zA-Z0-9.!%*_+`'~-]{1,12}",
            sp in "( |\r\n |\t)*",
        ) {
            let mut s = format!("SIP{sp}/{sp}2.0{sp}/{sp}{transport} {host}");
            if let Some(p) = port {
                s.push_str(&format!("{sp}:{sp}{p}"));
            }
            s.push_str(&format!("{sp};{sp}branch{sp}={sp}{branch}{sp};rport"));
            let v = Via::parse(s.as_bytes()).expect("generated Via parses");
            prop_assert_eq!(v.transport(), transport.as_str());
            prop_assert_eq!(v.host(), Host::Domain(&host));
            prop_assert_eq!(v.port(), port);
            prop_assert_eq!(v.branch(), Some(branch.as_str()));
            prop_assert_eq!(v.rport(), Some(None));
        }
    }
}
