//! SRTP with SDES keys (RFC 4568) passes through the SBC end to end: the
//! SDP keeps `RTP/SAVP` and each side's `a=crypto` line, and the relay
//! forwards the protected packets byte for byte (it never needs the keys).
// A test measures its own deadlines.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::lab::{Host, Lab, LabConfig, Realm};
use tests::netns::skip_unless_sipp;

use crate::edge::{header, receive_for, request, status};

pub(crate) const CALLER_KEY: &str =
    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyBlbnYKfQo=|2^20|1:32";
pub(crate) const CALLEE_KEY: &str = "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32";

pub(crate) fn savp_sdp(ip: IpAddr, port: u16, key: &str) -> String {
    format!(
        "v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}\r\n"
    )
}

/// The first message whose start line begins with `start`, within 5 s.
pub(crate) fn expect(socket: &UdpSocket, start: &str) -> String {
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
pub(crate) fn media_of(message: &str) -> SocketAddr {
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

/// Sends `count` packets from `from` to `to` and counts those that reach
/// `receiver` unchanged, from `anchor` only.
pub(crate) fn relayed_untouched(
    from: &UdpSocket,
    to: SocketAddr,
    receiver: &UdpSocket,
    anchor: SocketAddr,
    ssrc: u32,
    count: u16,
) -> usize {
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut same = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..count {
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

/// The callee's side of an SRTP call: the INVITE the SBC relays carries
/// RTP/SAVP and the caller's key unchanged, with the SBC's anchor on
/// `inside_media_ip`; the callee answers 200 with its own key and media at
/// `callee_media`. Returns the anchor the callee sends its media to.
pub(crate) fn callee_answers(
    callee: &UdpSocket,
    callee_media: SocketAddr,
    inside_sip: SocketAddr,
    inside_media_ip: IpAddr,
    name: &str,
) -> SocketAddr {
    let pbx = callee.local_addr().expect("callee address");
    let b_invite = expect(callee, "INVITE ");
    assert!(
        b_invite.contains("m=audio ") && b_invite.contains(" RTP/SAVP 0"),
        "{b_invite}"
    );
    assert!(
        b_invite.contains(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {CALLER_KEY}")),
        "{b_invite}"
    );
    let inside_anchor = media_of(&b_invite);
    assert_eq!(inside_anchor.ip(), inside_media_ip, "{b_invite}");
    let answer = savp_sdp(callee_media.ip(), callee_media.port(), CALLEE_KEY);
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        ok.push_str(&format!(
            "{name}: {}\r\n",
            header(&b_invite, name).expect(name)
        ));
    }
    ok.push_str(&format!(
        "To: {};tag={name}-b\r\nContact: <sip:pbx@{pbx}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{answer}",
        header(&b_invite, "To").expect("To"),
        answer.len()
    ));
    callee.send_to(ok.as_bytes(), inside_sip).expect("200");
    inside_anchor
}

/// The callee answers the BYE the SBC relays to it.
pub(crate) fn callee_answers_bye(callee: &UdpSocket, inside_sip: SocketAddr) {
    let b_bye = expect(callee, "BYE ");
    let mut bye_ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        bye_ok.push_str(&format!(
            "{name}: {}\r\n",
            header(&b_bye, name).expect(name)
        ));
    }
    bye_ok.push_str("Content-Length: 0\r\n\r\n");
    callee
        .send_to(bye_ok.as_bytes(), inside_sip)
        .expect("200 to BYE");
}

/// The sockets of an SRTP caller and callee on either side of the SBC.
pub(crate) struct SrtpPeers {
    /// The caller's SIP socket.
    pub caller: UdpSocket,
    /// The callee's SIP socket: the trunk's address.
    pub callee: UdpSocket,
    /// The caller's media socket.
    pub caller_rtp: UdpSocket,
    /// The callee's media socket.
    pub callee_rtp: UdpSocket,
    /// The SBC's SIP listener the caller calls.
    pub outside_sip: SocketAddr,
    /// The SBC's SIP address on the callee's side.
    pub inside_sip: SocketAddr,
    /// The SBC's media address on the callee's side.
    pub inside_media_ip: IpAddr,
}

/// An answered SRTP call: where each side sends its media, and the dialog.
pub(crate) struct Answered {
    /// The SBC's anchor the caller sends to.
    pub outside_anchor: SocketAddr,
    /// The SBC's anchor the callee sends to.
    pub inside_anchor: SocketAddr,
    from: String,
    to: String,
    call_id: String,
}

impl SrtpPeers {
    fn me(&self) -> SocketAddr {
        self.caller.local_addr().expect("caller address")
    }

    /// INVITE with an `RTP/SAVP` offer, 200 with the callee's key, ACK;
    /// checks that each side gets the other's key line unchanged, with the
    /// SBC's anchor as the address.
    pub fn answer(&self, name: &str) -> Answered {
        let (me, listener) = (self.me(), self.outside_sip);
        let caller_media = self.caller_rtp.local_addr().expect("caller media");
        let callee_media = self.callee_rtp.local_addr().expect("callee media");
        let call_id = format!("{name}-{}@{}", std::process::id(), me.ip());
        let from = format!("<sip:caller@{me}>;tag={name}-a");
        let offer = savp_sdp(caller_media.ip(), caller_media.port(), CALLER_KEY);
        let invite = request(
            "INVITE",
            &format!("sip:service@{listener}"),
            me,
            &format!("z9hG4bK-{name}-1"),
            &from,
            &format!("<sip:service@{listener}>"),
            &call_id,
            "1 INVITE",
            &[],
            &offer,
        );
        self.caller
            .send_to(invite.as_bytes(), listener)
            .expect("INVITE");

        let inside_anchor = callee_answers(
            &self.callee,
            callee_media,
            self.inside_sip,
            self.inside_media_ip,
            name,
        );

        // The caller gets the callee's key unchanged, and ACKs.
        let a_ok = expect(&self.caller, "SIP/2.0 200");
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
            &format!("z9hG4bK-{name}-ack"),
            &from,
            &to,
            &call_id,
            "1 ACK",
            &[],
            "",
        );
        self.caller.send_to(ack.as_bytes(), listener).expect("ACK");
        expect(&self.callee, "ACK ");
        Answered {
            outside_anchor,
            inside_anchor,
            from,
            to,
            call_id,
        }
    }

    /// `count` packets each way; how many arrived byte for byte (forward,
    /// back), each side hearing only its own anchor.
    pub fn exchange(&self, call: &Answered, count: u16) -> (usize, usize) {
        let forward = relayed_untouched(
            &self.caller_rtp,
            call.outside_anchor,
            &self.callee_rtp,
            call.inside_anchor,
            0xcafe_0001,
            count,
        );
        let back = relayed_untouched(
            &self.callee_rtp,
            call.inside_anchor,
            &self.caller_rtp,
            call.outside_anchor,
            0xcafe_0002,
            count,
        );
        (forward, back)
    }

    /// The caller hangs up; the callee answers the BYE.
    pub fn hang_up(&self, call: &Answered, name: &str) {
        let listener = self.outside_sip;
        let bye = request(
            "BYE",
            &format!("sip:service@{listener}"),
            self.me(),
            &format!("z9hG4bK-{name}-bye"),
            &call.from,
            &call.to,
            &call.call_id,
            "2 BYE",
            &[],
            "",
        );
        self.caller.send_to(bye.as_bytes(), listener).expect("BYE");
        callee_answers_bye(&self.callee, self.inside_sip);
        expect(&self.caller, "SIP/2.0 200");
    }
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
    let peers = SrtpPeers {
        caller: lab.net().udp_socket(me),
        callee: lab.net().udp_socket(pbx),
        caller_rtp: lab.net().udp_socket(SocketAddr::new(me.ip(), 16_002)),
        callee_rtp: lab.net().udp_socket(SocketAddr::new(pbx.ip(), 16_004)),
        outside_sip: listener,
        inside_sip: SocketAddr::new(plan.realm_ip(Realm::Inside), listener.port()),
        inside_media_ip: plan.realm_ip(Realm::Inside),
    };
    let call = peers.answer("srtp");
    let (forward, back) = peers.exchange(&call, 20);
    assert!(
        forward >= 18 && back >= 18,
        "untouched: {forward} of 20 forward, {back} of 20 back\n{}",
        lab.daemon_stderr()
    );
    peers.hang_up(&call, "srtp");
    lab.shutdown();
}
