//! SRTP with SDES keys (RFC 4568) passes through the SBC end to end: the
//! SDP keeps `RTP/SAVP` and each side's `a=crypto` line, and the relay
//! forwards the protected packets byte for byte (it never needs the keys).
// A test measures its own deadlines.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::lab::{Host, Lab, LabConfig, Realm};
use tests::netns::skip_unless_sipp;

use crate::edge::{header, receive_for, request, status};

const CALLER_KEY: &str = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyBlbnYKfQo=|2^20|1:32";
const CALLEE_KEY: &str = "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32";

fn savp_sdp(ip: std::net::IpAddr, port: u16, key: &str) -> String {
    format!(
        "v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}\r\n"
    )
}

/// The first message whose start line begins with `start`, within 5 s.
fn expect(socket: &UdpSocket, start: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = receive_for(socket, Duration::from_millis(200))
            .into_iter()
            .find(|m| m.starts_with(start))
        {
            return m;
        }
    }
    panic!("no {start:?} within 5 s")
}

/// The media address and port an SDP offers.
fn media_of(message: &str) -> SocketAddr {
    let ip = message
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .expect("c= address");
    let port = message
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next()?.parse().ok())
        .expect("m= port");
    SocketAddr::new(ip, port)
}

/// An SRTP-looking packet: an RTP header, `seq`-dependent "ciphertext" and
/// a 10-byte authentication tag; the relay must not change a byte of it.
fn srtp_packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..170u16).map(|i| (i.wrapping_mul(31).wrapping_add(seq) & 0xff) as u8));
    p
}

/// Sends 20 packets from `from` to `to` and counts those that reach
/// `receiver` unchanged, from `anchor` only.
fn relayed_untouched(
    from: &UdpSocket,
    to: SocketAddr,
    receiver: &UdpSocket,
    anchor: SocketAddr,
    ssrc: u32,
) -> usize {
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut same = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        let packet = srtp_packet(ssrc, seq);
        from.send_to(&packet, to).expect("send");
        while let Ok((n, at)) = receiver.recv_from(&mut buf) {
            assert_eq!(at, anchor, "media only from the SBC's anchor");
            if buf[..n] == packet[..] {
                same += 1;
                break;
            }
        }
    }
    same
}

#[test]
fn srtp_with_sdes_keys_crosses_the_userspace_relay_untouched() {
    if skip_unless_sipp("srtp_with_sdes_keys_crosses_the_userspace_relay_untouched") {
        return;
    }
    let lab = Lab::start("srtp", &LabConfig::default());
    let plan = *lab.plan();
    let (me, pbx) = (plan.host(Host::Carrier), plan.host(Host::Pbx));
    let listener = plan.realm(Realm::Outside);
    let caller = lab.net().udp_socket(me);
    let callee = lab.net().udp_socket(pbx);
    let caller_rtp = lab.net().udp_socket(SocketAddr::new(me.ip(), 16_002));
    let callee_rtp = lab.net().udp_socket(SocketAddr::new(pbx.ip(), 16_004));
    let call_id = format!("srtp-{}@{}", std::process::id(), me.ip());
    let from = format!("<sip:caller@{me}>;tag=srtp-a");
    let offer = savp_sdp(me.ip(), 16_002, CALLER_KEY);
    let invite = request(
        "INVITE",
        &format!("sip:service@{listener}"),
        me,
        "z9hG4bK-srtp-1",
        &from,
        &format!("<sip:service@{listener}>"),
        &call_id,
        "1 INVITE",
        &[],
        &offer,
    );
    caller.send_to(invite.as_bytes(), listener).expect("INVITE");

    // The callee gets RTP/SAVP and the caller's key unchanged, at the SBC.
    let b_invite = expect(&callee, "INVITE ");
    assert!(
        b_invite.contains("m=audio ") && b_invite.contains(" RTP/SAVP 0"),
        "{b_invite}"
    );
    assert!(
        b_invite.contains(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {CALLER_KEY}")),
        "{b_invite}"
    );
    let inside_anchor = media_of(&b_invite);
    assert_eq!(
        inside_anchor.ip(),
        plan.realm_ip(Realm::Inside),
        "{b_invite}"
    );
    let answer = savp_sdp(pbx.ip(), 16_004, CALLEE_KEY);
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        ok.push_str(&format!(
            "{name}: {}\r\n",
            header(&b_invite, name).expect(name)
        ));
    }
    ok.push_str(&format!(
        "To: {};tag=srtp-b\r\nContact: <sip:pbx@{pbx}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{answer}",
        header(&b_invite, "To").expect("To"),
        answer.len()
    ));
    let sbc_inside = SocketAddr::new(plan.realm_ip(Realm::Inside), listener.port());
    callee.send_to(ok.as_bytes(), sbc_inside).expect("200");

    // The caller gets the callee's key unchanged, and ACKs.
    let a_ok = expect(&caller, "SIP/2.0 200");
    assert_eq!(status(&a_ok), Some(200));
    assert!(a_ok.contains(" RTP/SAVP 0"), "{a_ok}");
    assert!(
        a_ok.contains(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {CALLEE_KEY}")),
        "{a_ok}"
    );
    let outside_anchor = media_of(&a_ok);
    let to = header(&a_ok, "To").expect("To").to_owned();
    let ack = request(
        "ACK",
        &format!("sip:service@{listener}"),
        me,
        "z9hG4bK-srtp-ack",
        &from,
        &to,
        &call_id,
        "1 ACK",
        &[],
        "",
    );
    caller.send_to(ack.as_bytes(), listener).expect("ACK");
    expect(&callee, "ACK ");

    // Both ways, byte for byte, each side hearing only its own anchor.
    let forward = relayed_untouched(
        &caller_rtp,
        outside_anchor,
        &callee_rtp,
        inside_anchor,
        0xcafe_0001,
    );
    let back = relayed_untouched(
        &callee_rtp,
        inside_anchor,
        &caller_rtp,
        outside_anchor,
        0xcafe_0002,
    );
    assert!(
        forward >= 18 && back >= 18,
        "untouched: {forward} of 20 forward, {back} of 20 back\n{}",
        lab.daemon_stderr()
    );

    let bye = request(
        "BYE",
        &format!("sip:service@{listener}"),
        me,
        "z9hG4bK-srtp-bye",
        &from,
        &to,
        &call_id,
        "2 BYE",
        &[],
        "",
    );
    caller.send_to(bye.as_bytes(), listener).expect("BYE");
    let b_bye = expect(&callee, "BYE ");
    let mut bye_ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        bye_ok.push_str(&format!(
            "{name}: {}\r\n",
            header(&b_bye, name).expect(name)
        ));
    }
    bye_ok.push_str("Content-Length: 0\r\n\r\n");
    callee
        .send_to(bye_ok.as_bytes(), sbc_inside)
        .expect("200 to BYE");
    expect(&caller, "SIP/2.0 200");
    lab.shutdown();
}
