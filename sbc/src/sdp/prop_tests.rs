//! Property tests: no input panics the parser; any accepted body prints back
//! byte for byte and survives every rewrite; generated SDPs report what was
//! generated and reflect what was rewritten.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

/// A connection address as generated: an IP literal or a host name.
#[derive(Debug, Clone)]
enum Addr {
    Ip(IpAddr),
    Host(String),
}

impl Addr {
    fn render(&self) -> String {
        match self {
            Addr::Ip(ip) => format!("IN {} {ip}", AddrType::of(*ip).as_str()),
            Addr::Host(host) => format!("IN IP4 {host}"),
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Addr::Ip(ip) => Some(*ip),
            Addr::Host(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
struct GenMedia {
    media: &'static str,
    port: u16,
    port_count: Option<u16>,
    proto: &'static str,
    formats: Vec<u8>,
    connection: Option<Addr>,
    direction: Option<Direction>,
    rtcp: Option<(u16, Option<IpAddr>)>,
    candidates: Vec<(u16, IpAddr)>,
    crypto: bool,
}

#[derive(Debug, Clone)]
struct GenSdp {
    eol: &'static str,
    session_id: u64,
    session_version: u64,
    connection: Option<Addr>,
    direction: Option<Direction>,
    ice_lite: bool,
    media: Vec<GenMedia>,
}

const DIRECTIONS: [Direction; 4] = [
    Direction::SendRecv,
    Direction::SendOnly,
    Direction::RecvOnly,
    Direction::Inactive,
];

fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        any::<IpAddr>().prop_map(Addr::Ip),
        "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}".prop_map(Addr::Host),
    ]
}

fn direction() -> impl Strategy<Value = Option<Direction>> {
    proptest::option::of(proptest::sample::select(&DIRECTIONS[..]))
}

fn media() -> impl Strategy<Value = GenMedia> {
    (
        (
            proptest::sample::select(&["audio", "video", "image", "application", "x-foo"][..]),
            any::<u16>(),
            proptest::option::of(1..=4u16),
            proptest::sample::select(&["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udptl"][..]),
            proptest::collection::vec(any::<u8>(), 1..5),
        ),
        (
            proptest::option::of(addr()),
            direction(),
            proptest::option::of((any::<u16>(), proptest::option::of(any::<IpAddr>()))),
            proptest::collection::vec((any::<u16>(), any::<IpAddr>()), 0..3),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (media, port, port_count, proto, formats),
                (connection, direction, rtcp, candidates, crypto),
            )| GenMedia {
                media,
                port,
                port_count,
                proto,
                formats,
                connection,
                direction,
                rtcp,
                candidates,
                crypto,
            },
        )
}

fn sdp() -> impl Strategy<Value = GenSdp> {
    (
        proptest::sample::select(&["\r\n", "\n"][..]),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(addr()),
        direction(),
        any::<bool>(),
        proptest::collection::vec(media(), 0..5),
    )
        .prop_map(
            |(eol, session_id, session_version, connection, direction, ice_lite, mut media)| {
                // RFC 8866 §5.7: without a session c=, every stream has one.
                if connection.is_none() {
                    for m in &mut media {
                        m.connection
                            .get_or_insert_with(|| Addr::Host("fallback.example".into()));
                    }
                }
                GenSdp {
                    eol,
                    session_id,
                    session_version,
                    connection,
                    direction,
                    ice_lite,
                    media,
                }
            },
        )
}

impl GenSdp {
    fn render(&self) -> String {
        let eol = self.eol;
        let mut out = format!(
            "v=0{eol}o=- {} {} IN IP4 192.0.2.1{eol}s=-{eol}",
            self.session_id, self.session_version
        );
        if let Some(c) = &self.connection {
            out += &format!("c={}{eol}", c.render());
        }
        out += &format!("t=0 0{eol}");
        if self.ice_lite {
            out += &format!("a=ice-lite{eol}");
        }
        if let Some(d) = self.direction {
            out += &format!("a={}{eol}", d.as_str());
        }
        for m in &self.media {
            let count = m.port_count.map(|n| format!("/{n}")).unwrap_or_default();
            let formats: Vec<String> = m.formats.iter().map(u8::to_string).collect();
            out += &format!(
                "m={} {}{count} {} {}{eol}",
                m.media,
                m.port,
                m.proto,
                formats.join(" ")
            );
            if let Some(c) = &m.connection {
                out += &format!("c={}{eol}", c.render());
            }
            out += &format!("a=rtpmap:0 PCMU/8000{eol}");
            if let Some((port, ip)) = m.rtcp {
                match ip {
                    Some(ip) => {
                        out += &format!("a=rtcp:{port} IN {} {ip}{eol}", AddrType::of(ip).as_str());
                    }
                    None => out += &format!("a=rtcp:{port}{eol}"),
                }
            }
            if !m.candidates.is_empty() {
                out += &format!("a=ice-ufrag:abcd{eol}a=ice-pwd:0123456789abcdef012345{eol}");
            }
            for (i, (port, ip)) in m.candidates.iter().enumerate() {
                out += &format!(
                    "a=candidate:{i} 1 UDP {} {ip} {port} typ host{eol}",
                    100 + i
                );
            }
            if m.crypto {
                out += &format!(
                    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32{eol}"
                );
            }
            if let Some(d) = m.direction {
                out += &format!("a={}{eol}", d.as_str());
            }
        }
        out
    }
}

/// Applies every edit the editor offers; the result must parse.
fn rewrite_everything(sdp: &Sdp, relay: IpAddr) -> Result<Sdp, SdpError> {
    let mut editor = sdp.editor();
    editor
        .set_origin_address(relay)
        .bump_origin_version()
        .set_session_connection(relay)
        .strip_ice();
    for index in 0..sdp.media_count() {
        editor
            .set_media_connection(index, relay)
            .and_then(|e| e.set_media_port(index, 4000))
            .and_then(|e| e.set_rtcp(index, 4001, Some(relay)))
            .and_then(|e| e.set_direction(index, Direction::SendOnly))
            .expect("index in range");
    }
    editor.to_sdp()
}

/// For a body the parser accepted: lossless print and a parseable rewrite.
fn check_accepted(body: &[u8], sdp: &Sdp) {
    assert_eq!(sdp.to_bytes(), body);
    assert_eq!(sdp.editor().to_bytes(), body);
    // Exercise every view; none may panic.
    let _ = (
        sdp.origin(),
        sdp.session_name(),
        sdp.connection(),
        sdp.ice(),
    );
    for m in sdp.media() {
        let _ = (
            m.kind(),
            m.formats().count(),
            m.effective_connection(),
            m.rtcp(),
        );
        let _ = (
            m.is_hold(),
            m.ice(),
            m.candidates().count(),
            m.crypto().count(),
        );
    }
    // Near the line limit, inserted lines may push a rewrite past it.
    if sdp.lines.len() + 3 * sdp.media_count() + 1 < MAX_LINES {
        let relay: IpAddr = "2001:db8::1".parse().expect("IPv6 literal");
        let out = rewrite_everything(sdp, relay).expect("rewrite parses");
        assert!(!out.has_ice());
        assert!(out.media().all(|m| m.port() == 4000));
    }
}

/// Lines that look like SDP, behind a header that is sometimes valid, so
/// that many bodies get past the first checks and into the media sections.
fn sdp_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("o=- 1 1 IN IP4 192.0.2.1".to_owned()),
        "c=IN IP(4|6) [0-9a-f:./]{1,12}",
        "m=(audio|video) [0-9]{1,5}(/[0-9])? RTP/AVP [0-9]{1,3}( [0-9]{1,3}){0,2}",
        "a=(rtcp|rtcp-mux|sendonly|inactive|candidate|crypto|ice-ufrag)(:[ -~]{0,20})?",
        "[a-z]=[ -~]{0,20}",
        "[ -~]{0,10}",
    ];
    let eol = prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r"), 1 => Just("")];
    let header = proptest::sample::select(
        &[
            "",
            "v=0\r\n",
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n",
        ][..],
    );
    (header, proptest::collection::vec((line, eol), 0..12)).prop_map(|(header, lines)| {
        let mut body = header.as_bytes().to_vec();
        for (line, eol) in lines {
            body.extend_from_slice(line.as_bytes());
            body.extend_from_slice(eol.as_bytes());
        }
        body
    })
}

/// Byte-level damage to a valid body: overwrite, insert or delete at random
/// positions, with bytes that matter to the grammar.
fn mutated_sdp() -> impl Strategy<Value = Vec<u8>> {
    let byte = proptest::sample::select(&b" \r\n\0=:/.0159aczmIP\xff"[..]);
    let damage = (any::<proptest::sample::Index>(), 0..3u8, byte);
    (sdp(), proptest::collection::vec(damage, 1..4)).prop_map(|(model, damage)| {
        let mut body = model.render().into_bytes();
        for (at, how, byte) in damage {
            let at = at.index(body.len() + 1);
            match how {
                0 if at < body.len() => body[at] = byte,
                1 => body.insert(at, byte),
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => body.push(byte),
            }
        }
        body
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(sdp) = Sdp::parse(&body) {
            check_accepted(&body, &sdp);
        }
    }

    #[test]
    fn sdp_like_input_never_panics(body in sdp_like()) {
        match Sdp::parse(&body) {
            Ok(sdp) => check_accepted(&body, &sdp),
            Err(e) => prop_assert!(matches!(e.status_code(), 400 | 488)),
        }
    }

    #[test]
    fn mutated_sdp_never_panics(body in mutated_sdp()) {
        match Sdp::parse(&body) {
            Ok(sdp) => check_accepted(&body, &sdp),
            Err(e) => prop_assert!(matches!(e.status_code(), 400 | 488)),
        }
    }

    #[test]
    fn generated_sdp_round_trips(model in sdp()) {
        let body = model.render();
        let sdp = Sdp::parse(body.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        check_accepted(body.as_bytes(), &sdp);

        prop_assert_eq!(sdp.origin().session_id, model.session_id.to_string());
        prop_assert_eq!(sdp.origin().session_version, model.session_version);
        prop_assert_eq!(sdp.connection().and_then(|c| c.ip), model.connection.as_ref().and_then(Addr::ip));
        prop_assert_eq!(sdp.ice().lite, model.ice_lite);
        prop_assert_eq!(sdp.media_count(), model.media.len());
        for (m, spec) in sdp.media().zip(&model.media) {
            prop_assert_eq!(m.media_type(), spec.media);
            prop_assert_eq!(m.port(), spec.port);
            prop_assert_eq!(m.port_count(), spec.port_count);
            prop_assert_eq!(m.proto(), spec.proto);
            let formats: Vec<String> = spec.formats.iter().map(u8::to_string).collect();
            prop_assert_eq!(m.formats().collect::<Vec<_>>(), formats);
            prop_assert_eq!(m.connection().and_then(|c| c.ip), spec.connection.as_ref().and_then(Addr::ip));
            let direction = spec.direction.or(model.direction).unwrap_or(Direction::SendRecv);
            prop_assert_eq!(m.direction(), direction);
            prop_assert_eq!(m.rtcp().map(|r| (r.port, r.connection.and_then(|c| c.ip))), spec.rtcp);
            prop_assert_eq!(m.ice().candidates, spec.candidates.len());
            let candidates: Vec<(u16, Option<IpAddr>)> =
                m.candidates().map(|c| c.map(|c| (c.port, c.ip))).collect::<Result<_, _>>()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected: Vec<(u16, Option<IpAddr>)> = spec.candidates.iter().map(|&(p, ip)| (p, Some(ip))).collect();
            prop_assert_eq!(candidates, expected);
            prop_assert_eq!(m.crypto().count(), usize::from(spec.crypto));
        }
    }

    #[test]
    fn generated_sdp_rewrites(model in sdp(), relay in any::<IpAddr>(), ports in proptest::collection::vec(any::<u16>(), 5), strip in any::<bool>()) {
        let body = model.render();
        let sdp = Sdp::parse(body.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
        let mut editor = sdp.editor();
        editor.set_origin_address(relay).bump_origin_version().set_connection(relay);
        if strip {
            editor.strip_ice();
        }
        for (index, &port) in ports.iter().enumerate().take(sdp.media_count()) {
            editor.set_media_port(index, port)
                .and_then(|e| e.set_rtcp(index, port.wrapping_add(1), Some(relay)))
                .and_then(|e| e.set_direction(index, DIRECTIONS[index % 4]))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let out = editor.to_sdp().map_err(|e| TestCaseError::fail(e.to_string()))?;

        prop_assert_eq!(out.origin().ip, Some(relay));
        prop_assert_eq!(out.origin().session_version, model.session_version.saturating_add(1));
        prop_assert_eq!(out.origin().session_id, model.session_id.to_string());
        prop_assert_eq!(out.has_ice(), !strip && (model.ice_lite || model.media.iter().any(|m| !m.candidates.is_empty())));
        prop_assert_eq!(out.media_count(), model.media.len());
        for ((m, spec), &port) in out.media().zip(&model.media).zip(&ports) {
            prop_assert_eq!(m.port(), port);
            prop_assert_eq!(m.port_count(), spec.port_count);
            // set_connection leaves an RFC 2543 hold address as it is.
            let before = spec.connection.as_ref().or(model.connection.as_ref()).and_then(Addr::ip);
            let expected = before.filter(|ip| ip.is_unspecified()).unwrap_or(relay);
            prop_assert_eq!(m.effective_connection().and_then(|c| c.ip), Some(expected));
            prop_assert_eq!(m.rtcp().map(|r| (r.port, r.connection.and_then(|c| c.ip))), Some((port.wrapping_add(1), Some(relay))));
            prop_assert_eq!(m.direction(), DIRECTIONS[m.index() % 4]);
            prop_assert_eq!(m.crypto().count(), usize::from(spec.crypto));
        }
    }
}
