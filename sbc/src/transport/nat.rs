//! Where a request really came from, and where its response must go
//! (RFC 3261 §18.2.1, §18.2.2; RFC 3581 §4; RFC 5118 §4.5).
//!
//! Owns: stamping the top Via of a received request with `received` and a
//! filled-in `rport`, and choosing the address a response is sent to.
//!
//! May not: do IO, resolve names, or touch any Via but the top one. PURE.
//!
//! Choices, each documented where it is made:
//! * `received` is written for IPv6 without brackets: RFC 3261 §25
//!   `via-received = "received" EQUAL (IPv4address / IPv6address)`.
//!   RFC 5118 §4.5 notes the bracketed form is sent in practice but is not
//!   what the ABNF allows; the parser accepts both, we emit the strict one.
//! * A `received` or a filled-in `rport` that the client wrote itself is
//!   overwritten with the observed source: otherwise a spoofed Via could make
//!   the SBC reflect responses at a third party.
//! * No DNS: where §18.2.2 would resolve a host name (a `maddr` or sent-by
//!   that is a name, on a request that was never stamped), the source address
//!   is used instead; the stamped `received` makes this the normal case.

use std::net::{IpAddr, SocketAddr};

use super::Transport;
use crate::sip::header::Via;
use crate::sip::scan::split_values;
use crate::sip::{HeaderName, Message};

/// The port SIP over UDP and TCP uses when none is written (§19.1.2).
pub const DEFAULT_PORT: u16 = 5060;

/// The port a TLS sent-by without one means (RFC 3261 §18.2.2, §19.1.2).
pub const DEFAULT_TLS_PORT: u16 = 5061;

/// Stamps the top Via of a request received from `source` (§18.2.1,
/// RFC 3581 §4) and returns whether it changed anything.
///
/// * `received=<source ip>` is added when the sent-by host is not the source
///   IP (a name always differs), when `rport` is present, or when the client
///   wrote a `received` itself (it is then overwritten).
/// * `rport` is set to the source port when present, with or without a value.
///
/// Only the top Via value is rewritten; if it shares a header line with other
/// Via values, they stay byte-identical. A message without a parseable top
/// Via is left alone (the parser already rejected it, so this does not
/// happen for a message from [`Message::parse_owned`]).
pub fn stamp_received(msg: &mut Message, source: SocketAddr) -> bool {
    let ip = source.ip().to_canonical();
    let Some((index, value, start, end)) = top_via_location(msg) else {
        return false;
    };
    let Some(element) = value.get(start..end) else {
        return false;
    };
    let Ok(via) = Via::parse(element) else {
        return false;
    };
    let host_is_source = via.host().ip().map(|h| h.to_canonical()) == Some(ip);
    let add_received = !host_is_source || via.rport().is_some();
    if !add_received && via.received().is_none() {
        return false;
    }
    let Some(stamped) = stamp(element, &via, ip, source.port()) else {
        return false;
    };
    let mut new_value = Vec::with_capacity(value.len() + 48);
    new_value.extend_from_slice(&value[..start]);
    new_value.extend_from_slice(&stamped);
    new_value.extend_from_slice(&value[end..]);
    msg.set_header(index, &new_value);
    true
}

/// The address a response to a request whose top Via is `top_via`, received
/// from `source` over `transport`, is sent to (§18.2.2, RFC 3581 §4).
///
/// * Reliable (TCP): the response goes back over the connection the request
///   came on; this returns the address to open a new connection to if that
///   one is gone: the `received` IP (else the source IP) and the sent-by port
///   (default 5060).
/// * Unreliable (UDP): `maddr` (an IP literal) with the sent-by port; else
///   `received` with `rport` if rport carries a value; else `received` with
///   the sent-by port; else the sent-by IP literal and port.
///
/// Where the rules would need DNS (a host name in `maddr`, or in sent-by
/// without `received`), the source IP is used. Multicast `maddr` TTL is the
/// sender's concern, not the address's.
pub fn response_target(top_via: &Via<'_>, source: SocketAddr, transport: Transport) -> SocketAddr {
    let default_port = match transport {
        Transport::Tls => DEFAULT_TLS_PORT,
        Transport::Udp | Transport::Tcp => DEFAULT_PORT,
    };
    let sent_by_port = top_via.port().unwrap_or(default_port);
    let received = top_via.received_ip();
    match transport {
        Transport::Tcp | Transport::Tls => {
            SocketAddr::new(received.unwrap_or(source.ip()), sent_by_port)
        }
        Transport::Udp => {
            if let Some(maddr) = top_via.maddr().and_then(|m| m.ip()) {
                return SocketAddr::new(maddr, sent_by_port);
            }
            match (received, top_via.rport()) {
                (Some(ip), Some(Some(rport))) => SocketAddr::new(ip, rport),
                (Some(ip), _) => SocketAddr::new(ip, sent_by_port),
                (None, _) => {
                    let ip = top_via.host().ip().unwrap_or(source.ip());
                    SocketAddr::new(ip, sent_by_port)
                }
            }
        }
    }
}

/// The header index of the top Via, a copy of that header's value, and the
/// byte range of the top Via value in it.
fn top_via_location(msg: &Message) -> Option<(usize, Vec<u8>, usize, usize)> {
    msg.headers()
        .enumerate()
        .filter(|(_, h)| h.name == HeaderName::Via)
        .find_map(|(index, h)| {
            let element = split_values(h.value).find(|v| !v.is_empty())?;
            let start = offset_in(h.value, element)?;
            Some((index, h.value.to_vec(), start, start + element.len()))
        })
}

/// Where `inner` starts inside `outer`, if it is a sub-slice of it. The
/// views hand out sub-slices; this turns one back into an index.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let at = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (at + inner.len() <= outer.len()).then_some(at)
}

/// `element` (one Via value, parsed as `via`) with `received` and a present
/// `rport` set in place, and `received` appended if it was absent. Every
/// other byte is copied as written.
fn stamp(element: &[u8], via: &Via<'_>, ip: IpAddr, port: u16) -> Option<Vec<u8>> {
    let received = ip.to_string();
    let rport = port.to_string();
    let mut out = Vec::with_capacity(element.len() + 48);
    let mut cursor = 0;
    let mut wrote_received = false;
    for (name, value) in via.params() {
        let name_end = offset_in(element, name)? + name.len();
        let param_end = match value {
            Some(v) => offset_in(element, v)? + v.len(),
            None => name_end,
        };
        let replacement = if name.eq_ignore_ascii_case(b"received") {
            wrote_received = true;
            &received
        } else if name.eq_ignore_ascii_case(b"rport") {
            &rport
        } else {
            continue;
        };
        out.extend_from_slice(element.get(cursor..name_end)?);
        out.push(b'=');
        out.extend_from_slice(replacement.as_bytes());
        cursor = param_end;
    }
    // Trailing LWS after the last parameter (if any) stays outside the
    // element: split_values trims it.
    out.extend_from_slice(element.get(cursor..)?);
    if !wrote_received {
        out.extend_from_slice(b";received=");
        out.extend_from_slice(received.as_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(vias: &str) -> Message {
        let text = format!(
            "OPTIONS sip:bob@example.com SIP/2.0\r\n{vias}Max-Forwards: 70\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("test message does not parse: {e}: {text}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse()
            .unwrap_or_else(|e| panic!("bad socket address {s}: {e}"))
    }

    fn text(msg: &Message) -> String {
        String::from_utf8_lossy(&msg.to_bytes()).into_owned()
    }

    fn top(msg: &Message) -> Via<'_> {
        msg.top_via()
            .unwrap_or_else(|| panic!("no parseable top Via in {}", text(msg)))
    }

    #[test]
    fn same_ip_without_rport_is_left_alone() {
        let mut msg = request("Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\r\n");
        let before = msg.to_bytes();
        assert!(!stamp_received(&mut msg, sa("192.0.2.1:5070")));
        assert_eq!(msg.to_bytes(), before);
    }

    #[test]
    fn different_ip_adds_received() {
        let mut msg = request("Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\n");
        assert!(stamp_received(&mut msg, sa("192.0.2.9:1024")));
        assert!(
            text(&msg)
                .contains("Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.9\r\n"),
            "{}",
            text(&msg)
        );
        let via = top(&msg);
        assert_eq!(
            via.received_ip(),
            Some("192.0.2.9".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(via.rport(), None);
    }

    #[test]
    fn host_name_always_gets_received() {
        let mut msg = request("Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1\r\n");
        assert!(stamp_received(&mut msg, sa("192.0.2.9:5060")));
        assert_eq!(top(&msg).received(), Some("192.0.2.9"));
    }

    #[test]
    fn empty_rport_is_filled_in_place_and_received_added_even_for_same_ip() {
        // RFC 3581 §4: with rport, received is added even if it equals sent-by.
        let mut msg = request("Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1\r\n");
        assert!(stamp_received(&mut msg, sa("192.0.2.1:61000")));
        assert!(
            text(&msg).contains(
                "Via: SIP/2.0/UDP 192.0.2.1:5060;rport=61000;branch=z9hG4bK1;received=192.0.2.1\r\n"
            ),
            "{}",
            text(&msg)
        );
    }

    #[test]
    fn nat_example_from_rfc3581() {
        // RFC 3581 §4 example: a client behind a NAT at 10.1.1.1:5060 seen
        // from 192.0.2.1:9988.
        let mut msg = request("Via: SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff\r\n");
        assert!(stamp_received(&mut msg, sa("192.0.2.1:9988")));
        assert!(
            text(&msg).contains(
                "Via: SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKkjshdyff;received=192.0.2.1\r\n"
            ),
            "{}",
            text(&msg)
        );
        let via = top(&msg);
        assert_eq!(
            response_target(&via, sa("192.0.2.1:9988"), Transport::Udp),
            sa("192.0.2.1:9988")
        );
    }

    #[test]
    fn spoofed_received_and_rport_are_overwritten() {
        let mut msg =
            request("Via: SIP/2.0/UDP 192.0.2.1;received=203.0.113.66;rport=9;branch=z9hG4bK1\r\n");
        assert!(stamp_received(&mut msg, sa("192.0.2.1:5060")));
        assert!(
            text(&msg).contains(
                "Via: SIP/2.0/UDP 192.0.2.1;received=192.0.2.1;rport=5060;branch=z9hG4bK1\r\n"
            ),
            "{}",
            text(&msg)
        );
    }

    #[test]
    fn only_the_top_value_of_a_shared_line_changes() {
        // wsinv-style folding and LWS in the second value must survive.
        let mut msg = request(
            "Via: SIP/2.0/UDP 10.0.0.1 ;rport ; branch=z9hG4bKa ,\r\n SIP  / 2.0 / TCP  198.51.100.7 ; branch = z9hG4bKb\r\nVia: SIP/2.0/UDP 198.51.100.8;branch=z9hG4bKc\r\n",
        );
        assert!(stamp_received(&mut msg, sa("192.0.2.9:40000")));
        assert!(
            text(&msg).contains(
                "Via: SIP/2.0/UDP 10.0.0.1 ;rport=40000 ; branch=z9hG4bKa;received=192.0.2.9 ,\r\n SIP  / 2.0 / TCP  198.51.100.7 ; branch = z9hG4bKb\r\nVia: SIP/2.0/UDP 198.51.100.8;branch=z9hG4bKc\r\n"
            ),
            "{}",
            text(&msg)
        );
        let vias: Vec<_> = msg.vias().map(|v| v.map(|v| v.branch())).collect();
        assert_eq!(
            vias,
            [
                Ok(Some("z9hG4bKa")),
                Ok(Some("z9hG4bKb")),
                Ok(Some("z9hG4bKc"))
            ]
        );
    }

    #[test]
    fn compact_form_and_later_lines_untouched() {
        let mut msg = request(
            "v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa\r\nv: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n",
        );
        assert!(stamp_received(&mut msg, sa("192.0.2.9:5060")));
        let t = text(&msg);
        // The editor writes the value; the name as received stays.
        assert!(
            t.contains("v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa;received=192.0.2.9\r\n"),
            "{t}"
        );
        assert!(
            t.contains("v: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n"),
            "{t}"
        );
    }

    #[test]
    fn ipv6_received_is_written_without_brackets() {
        let mut msg = request("Via: SIP/2.0/UDP [2001:db8::9:1];rport;branch=z9hG4bKas3\r\n");
        assert!(stamp_received(&mut msg, sa("[2001:db8::9:255]:5062")));
        assert!(
            text(&msg).contains(
                "Via: SIP/2.0/UDP [2001:db8::9:1];rport=5062;branch=z9hG4bKas3;received=2001:db8::9:255\r\n"
            ),
            "{}",
            text(&msg)
        );
        // It reparses, and the target is the observed address.
        let reparsed = Message::parse(&msg.to_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let via = top(&reparsed);
        assert_eq!(
            response_target(&via, sa("[2001:db8::9:255]:5062"), Transport::Udp),
            sa("[2001:db8::9:255]:5062")
        );
    }

    #[test]
    fn ipv6_same_address_in_other_spelling_matches() {
        let mut msg = request("Via: SIP/2.0/UDP [2001:DB8:0::1];branch=z9hG4bK1\r\n");
        assert!(!stamp_received(&mut msg, sa("[2001:db8::1]:5060")));
    }

    #[test]
    fn ipv4_mapped_source_compares_as_ipv4() {
        let mut msg = request("Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n");
        assert!(!stamp_received(&mut msg, sa("[::ffff:192.0.2.1]:5060")));
        let mut msg = request("Via: SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bK1\r\n");
        assert!(stamp_received(&mut msg, sa("[::ffff:192.0.2.7]:5060")));
        assert_eq!(top(&msg).received(), Some("192.0.2.7"));
    }

    #[test]
    fn target_udp_rules() {
        let via = |v: &'static str| Via::parse(v.as_bytes()).unwrap_or_else(|e| panic!("{v}: {e}"));
        let src = sa("198.51.100.1:7777");
        // received + rport value.
        let v = via("SIP/2.0/UDP 10.0.0.1:5070;received=192.0.2.1;rport=9988");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("192.0.2.1:9988")
        );
        // received without rport: sent-by port.
        let v = via("SIP/2.0/UDP 10.0.0.1:5070;received=192.0.2.1");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("192.0.2.1:5070")
        );
        // received, empty rport, no sent-by port: default port.
        let v = via("SIP/2.0/UDP 10.0.0.1;received=192.0.2.1;rport");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("192.0.2.1:5060")
        );
        // maddr wins over received/rport, with the sent-by port.
        let v =
            via("SIP/2.0/UDP 10.0.0.1:5070;maddr=239.255.255.1;ttl=16;received=192.0.2.1;rport=1");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("239.255.255.1:5070")
        );
        // maddr that is a name needs DNS: ignored.
        let v = via("SIP/2.0/UDP 10.0.0.1:5070;maddr=mc.example.com;received=192.0.2.1");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("192.0.2.1:5070")
        );
        // Nothing stamped, IP sent-by.
        let v = via("SIP/2.0/UDP 192.0.2.5:5072");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("192.0.2.5:5072")
        );
        // Nothing stamped, name sent-by: the source IP.
        let v = via("SIP/2.0/UDP pc.example.com:5072");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("198.51.100.1:5072")
        );
        // Bracketed IPv6 received (RFC 5118 §4.5) is understood.
        let v = via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3");
        assert_eq!(
            response_target(&v, src, Transport::Udp),
            sa("[2001:db8::9:255]:5060")
        );
    }

    #[test]
    fn target_tcp_ignores_rport_and_uses_sent_by_port() {
        let v = Via::parse(b"SIP/2.0/TCP 10.0.0.1:5070;received=192.0.2.1;rport=9988")
            .unwrap_or_else(|e| panic!("{e}"));
        let src = sa("192.0.2.1:40000");
        assert_eq!(
            response_target(&v, src, Transport::Tcp),
            sa("192.0.2.1:5070")
        );
        let v = Via::parse(b"SIP/2.0/TCP client.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            response_target(&v, src, Transport::Tcp),
            sa("192.0.2.1:5060")
        );
    }

    #[test]
    fn every_rfc3665_request_stamps_and_reparses() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/corpus/flows/rfc3665"
        );
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let mut stamped = 0;
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let Ok(mut msg) = Message::parse(&bytes) else {
                continue;
            };
            if !msg.is_request() {
                continue;
            }
            let vias_before = msg.vias().count();
            let changed = stamp_received(&mut msg, sa("127.0.0.9:40001"));
            let again = Message::parse(&msg.to_bytes())
                .unwrap_or_else(|e| panic!("{} no longer parses: {e}", path.display()));
            assert_eq!(again.vias().count(), vias_before, "{}", path.display());
            if changed {
                stamped += 1;
                assert_eq!(
                    top(&again).received(),
                    Some("127.0.0.9"),
                    "{}",
                    path.display()
                );
            }
        }
        assert!(stamped > 50, "only {stamped} requests were stamped");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("10.0.0.1".to_owned()),
                Just("192.0.2.9".to_owned()),
                Just("[2001:db8::1]".to_owned()),
                Just("pc33.example.com".to_owned()),
            ]
        }

        fn param() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(";rport".to_owned()),
                (1u16..).prop_map(|p| format!(";rport={p}")),
                Just(";received=203.0.113.1".to_owned()),
                Just(";received=[2001:db8::7]".to_owned()),
                Just(";maddr=239.1.1.1".to_owned()),
                Just(";ttl=3".to_owned()),
                Just(" ; lr".to_owned()),
                Just(";x-tag=\"a, b\"".to_owned()),
                "[a-z]{1,5}".prop_map(|n| format!(";{n}")),
            ]
        }

        proptest! {
            #[test]
            fn stamping_reparses_and_touches_only_the_top_via(
                host in host(),
                port in proptest::option::of(1u16..),
                params in proptest::collection::vec(param(), 0..4),
                same_line in any::<bool>(),
                v6 in any::<bool>(),
                src_port in 1u16..,
            ) {
                // Keep only the first of each once-only parameter.
                let mut seen = Vec::new();
                let params: String = params
                    .into_iter()
                    .filter(|p| {
                        let name: String = p.trim_start_matches([' ', ';']).chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                        let dup = seen.contains(&name);
                        seen.push(name);
                        !dup
                    })
                    .collect();
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let first = format!("SIP/2.0/UDP {host}{port}{params};branch=z9hG4bKtop");
                let second = "SIP/2.0/TCP 198.51.100.7 ;branch=z9hG4bKnext";
                let vias = if same_line {
                    format!("Via: {first} ,  {second}\r\n")
                } else {
                    format!("Via: {first}\r\nVia: {second}\r\n")
                };
                let mut msg = request(&vias);
                let before: Vec<Vec<u8>> = msg.values(HeaderName::Via).map(<[u8]>::to_vec).collect();
                let source = if v6 {
                    SocketAddr::new("2001:db8::99".parse().unwrap_or_else(|e| panic!("{e}")), src_port)
                } else {
                    SocketAddr::new("192.0.2.9".parse().unwrap_or_else(|e| panic!("{e}")), src_port)
                };
                let had_rport = msg.top_via().and_then(|v| v.rport()).is_some();
                let changed = stamp_received(&mut msg, source);
                let again = Message::parse(&msg.to_bytes())
                    .unwrap_or_else(|e| panic!("stamped message does not parse: {e}: {}", text(&msg)));
                let after: Vec<Vec<u8>> = again.values(HeaderName::Via).map(<[u8]>::to_vec).collect();
                prop_assert_eq!(after.len(), before.len());
                prop_assert_eq!(&after[1..], &before[1..]);
                let via = top(&again);
                prop_assert_eq!(via.branch(), Some("z9hG4bKtop"));
                if changed {
                    prop_assert_eq!(via.received_ip(), Some(source.ip()));
                } else {
                    prop_assert_eq!(&after[0], &before[0]);
                }
                if had_rport {
                    prop_assert!(changed);
                    prop_assert_eq!(via.rport(), Some(Some(src_port)));
                    prop_assert_eq!(response_target(&via, source, Transport::Udp),
                        if via.maddr().is_some() { SocketAddr::new("239.1.1.1".parse().unwrap_or_else(|e| panic!("{e}")), via.port().unwrap_or(DEFAULT_PORT)) } else { source });
                }
            }
        }
    }
}
