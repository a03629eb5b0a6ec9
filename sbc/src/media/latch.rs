//! Source latching: symmetric RTP for NAT without RTPBleed.
//!
//! Owns: what one anchored flow (a leg's RTP port, or its separate RTCP port)
//! accepts as its peer's source, and where media for that peer is sent. Also
//! the minimal RTP/RTCP header reading latching needs ([`classify`]).
//!
//! May not: do IO or read a clock: every input carries `now`.
//!
//! Implements symmetric RTP (RFC 4961: a peer behind NAT receives on the
//! address it sends from) with the defences against RTP injection known as
//! RTPBleed (CVE-2017 rtpproxy/Asterisk: a relay that latches onto the first
//! source of any packet lets a third party hijack the stream):
//! 1. **No remote, no media.** Until signaling has named the leg's remote
//!    ([`Latch::set_remote`]), every packet is dropped.
//! 2. **Learn only from the expected IP.** A source may be latched only if
//!    its IP is the one signaling expects: the SDP connection address, the
//!    signaling source IP, or either ([`LatchPolicy`]). The exact SDP address
//!    (IP and port) is always acceptable, in or out of the window.
//! 3. **Learn only in a short window** after each (re)negotiation: the window
//!    opens at every `set_remote` and closes after the configured duration;
//!    an unlatched flow gets it again when the other leg's SDP arrives
//!    ([`Latch::reopen`]: that is when this peer learns where to send). A
//!    changed remote (re-INVITE moving media) forgets the old latch; an
//!    unchanged one (session refresh) keeps it.
//! 4. **Once latched, only the latched source is accepted.** Packets from any
//!    other source are dropped (and counted by the caller), except:
//! 5. **Re-latch only for the same SSRC**, only from an IP the policy
//!    allows, and only once the latched source has been silent for a short
//!    quiet period: a NAT that rebinds the peer's port keeps the SSRC (RFC
//!    3550 §8) and the old binding goes quiet; an injector does not know the
//!    SSRC (32 random bits); the IP check keeps an on-path observer of the
//!    SSRC on another host out; and the quiet period keeps one that shares
//!    the peer's IP from taking over while the peer still talks (and stops
//!    two paths of one peer from flapping the latch per packet).
//! 6. **Asymmetric RTP** ([`LatchPolicy::Asymmetric`], per trunk): nothing is
//!    learned; packets from any port of the SDP or signaling IP are accepted
//!    and media is always sent to the SDP address.
//!
//! RTCP: when a leg has its own RTCP port, that port has its own [`Latch`]
//! with the same rules, its expected address being the leg's RTCP address
//! (RFC 3605) and its SSRC the RTCP sender SSRC (RFC 3550 §6.4.1, the same
//! value as the sender's RTP SSRC). On a muxed port (RFC 5761) one latch
//! serves both: RTP and RTCP from one peer share a source and an SSRC.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::command::LatchPolicy;

/// What a packet on an anchored port is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// RTP (RFC 3550 §5.1).
    Rtp,
    /// RTCP (RFC 3550 §6.4), told apart from RTP by its packet type per
    /// RFC 5761 §4 (second byte 192..=223).
    Rtcp,
}

/// The fields of a packet that latching and forwarding need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// RTP or RTCP.
    pub kind: PacketKind,
    /// The RTP SSRC, or the RTCP sender SSRC.
    pub ssrc: u32,
}

/// Read the kind and SSRC of an RTP or RTCP packet; `None` if it is neither
/// (too short, or not version 2: STUN and DTLS are not relayed).
pub fn classify(packet: &[u8]) -> Option<PacketInfo> {
    let first = *packet.first()?;
    if first >> 6 != 2 {
        return None;
    }
    let second = *packet.get(1)?;
    let (kind, at) = if (192..=223).contains(&second) {
        (PacketKind::Rtcp, 4)
    } else {
        // RTP: 12-byte fixed header, SSRC at 8.
        packet.get(11)?;
        (PacketKind::Rtp, 8)
    };
    let bytes = packet.get(at..at + 4)?;
    let ssrc = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Some(PacketInfo { kind, ssrc })
}

/// What [`Latch::check`] decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accept; nothing changed.
    Accept,
    /// Accept, and the flow (re)latched onto this source: report it.
    Latched(SocketAddr),
    /// Drop: no remote has been signaled yet.
    NoRemote,
    /// Drop: the source is not the latched peer, not the signaled address,
    /// and may not be learned (wrong IP, window closed, or another SSRC).
    UnexpectedSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    sdp: SocketAddr,
    signaling_ip: IpAddr,
    window_until: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Latched {
    source: SocketAddr,
    /// The SSRC last seen from `source`.
    ssrc: u32,
    /// When `source` last sent.
    last_seen: Instant,
}

/// The latching state of one anchored flow.
#[derive(Debug, Clone)]
pub struct Latch {
    policy: LatchPolicy,
    relatch_quiet: Duration,
    expected: Option<Expected>,
    latched: Option<Latched>,
    /// Where else a first latch may come from ([`LatchPolicy::RealmNetworks`]).
    networks: Option<Arc<[IpNet]>>,
    /// A [`Latch::note_unlatched`] was reported for this negotiation.
    reported: bool,
}

impl Latch {
    /// A flow that accepts nothing until its remote is signaled. A re-latch
    /// needs the latched source to have been silent for `relatch_quiet`.
    pub fn new(policy: LatchPolicy, relatch_quiet: Duration) -> Latch {
        Latch {
            policy,
            relatch_quiet,
            expected: None,
            latched: None,
            networks: None,
            reported: false,
        }
    }

    /// This latch with the networks a first latch may also come from under
    /// [`LatchPolicy::RealmNetworks`] (ignored by the other policies).
    pub fn with_networks(mut self, networks: Option<Arc<[IpNet]>>) -> Latch {
        self.networks = networks;
        self
    }

    /// Whether this flow is failing to learn its source: the window of the
    /// latest negotiation has closed, nothing is latched, and a packet was
    /// just refused. True once per negotiation (the caller reports it).
    pub fn note_unlatched(&mut self, now: Instant) -> bool {
        let due = self.policy != LatchPolicy::Asymmetric
            && self.latched.is_none()
            && !self.reported
            && self.expected.is_some_and(|e| now >= e.window_until);
        self.reported |= due;
        due
    }

    /// Signaling named this remote (offer or answer): open the learning
    /// window until `now + window`. A changed address forgets the latch.
    pub fn set_remote(
        &mut self,
        now: Instant,
        sdp: SocketAddr,
        signaling_ip: IpAddr,
        window: Duration,
    ) {
        let changed = self
            .expected
            .is_none_or(|e| e.sdp != sdp || e.signaling_ip != signaling_ip);
        if changed {
            self.latched = None;
        }
        self.reported = false;
        self.expected = Some(Expected {
            sdp,
            signaling_ip,
            window_until: now + window,
        });
    }

    /// The other leg of the stream was (re)negotiated: this peer has just
    /// been told where to send (the caller learns the SBC's address only
    /// from the answer, often many seconds of ringing after its own offer
    /// opened this window), so an unlatched flow gets its learning window
    /// again, until `now + window`. A latched flow is left alone: only a
    /// first latch depends on the window, re-latching has its own rules.
    pub fn reopen(&mut self, now: Instant, window: Duration) {
        if self.latched.is_some() || self.policy == LatchPolicy::Asymmetric {
            return;
        }
        if let Some(expected) = &mut self.expected {
            expected.window_until = expected.window_until.max(now + window);
            self.reported = false;
        }
    }

    /// Decide about a packet from `source` carrying `ssrc`.
    pub fn check(&mut self, now: Instant, source: SocketAddr, ssrc: u32) -> Verdict {
        let Some(expected) = self.expected else {
            return Verdict::NoRemote;
        };
        let ip_allowed = self.ip_allowed(&expected, source.ip());
        if self.policy == LatchPolicy::Asymmetric {
            return if ip_allowed {
                Verdict::Accept
            } else {
                Verdict::UnexpectedSource
            };
        }
        let latch_here = Some(Latched {
            source,
            ssrc,
            last_seen: now,
        });
        match self.latched {
            Some(latched) if latched.source == source => {
                // The peer may start a new SSRC (RFC 3550 §8.2); follow it so
                // a later re-latch is judged against the current one.
                self.latched = latch_here;
                Verdict::Accept
            }
            Some(latched) => {
                let quiet = now.saturating_duration_since(latched.last_seen) >= self.relatch_quiet;
                if ssrc == latched.ssrc && ip_allowed && quiet {
                    self.latched = latch_here;
                    Verdict::Latched(source)
                } else {
                    Verdict::UnexpectedSource
                }
            }
            None => {
                let in_window = now < expected.window_until;
                let learnable = ip_allowed || self.in_networks(source.ip());
                if source == expected.sdp || (in_window && learnable) {
                    self.latched = latch_here;
                    Verdict::Latched(source)
                } else {
                    Verdict::UnexpectedSource
                }
            }
        }
    }

    /// Where media for this peer goes: the latched source, else the signaled
    /// address; `None` before any remote is signaled.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.latched {
            Some(latched) => Some(latched.source),
            None => self.expected.map(|e| e.sdp),
        }
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched.map(|latched| latched.source)
    }

    fn ip_allowed(&self, expected: &Expected, ip: IpAddr) -> bool {
        let sdp = expected.sdp.ip() == ip;
        let signaling = expected.signaling_ip == ip;
        match self.policy {
            LatchPolicy::SdpAddress => sdp,
            LatchPolicy::SignalingSource => signaling,
            LatchPolicy::SdpOrSignaling | LatchPolicy::RealmNetworks | LatchPolicy::Asymmetric => {
                sdp || signaling
            }
        }
    }

    fn in_networks(&self, ip: IpAddr) -> bool {
        self.policy == LatchPolicy::RealmNetworks
            && self
                .networks
                .as_ref()
                .is_some_and(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(500);
    const SSRC: u32 = 0x1234_5678;

    #[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
    fn t0() -> Instant {
        Instant::now()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address parses")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP parses")
    }

    /// A phone behind NAT: SDP names its private address, signaling came from
    /// the NAT's public IP 203.0.113.5, media arrives from 203.0.113.5:61000.
    fn natted(policy: LatchPolicy, now: Instant) -> Latch {
        let mut latch = Latch::new(policy, QUIET);
        latch.set_remote(now, addr("10.0.0.5:4000"), ip("203.0.113.5"), WINDOW);
        latch
    }

    #[test]
    fn classify_reads_rtp_and_rtcp_ssrc() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 0;
        rtp[8..12].copy_from_slice(&SSRC.to_be_bytes());
        assert_eq!(
            classify(&rtp),
            Some(PacketInfo {
                kind: PacketKind::Rtp,
                ssrc: SSRC
            })
        );
        let mut rtcp = [0u8; 8];
        rtcp[0] = 0x80;
        rtcp[1] = 200; // SR
        rtcp[4..8].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            classify(&rtcp),
            Some(PacketInfo {
                kind: PacketKind::Rtcp,
                ssrc: 7
            })
        );
        assert_eq!(classify(&rtp[..11]), None, "short RTP header");
        assert_eq!(classify(&rtcp[..7]), None, "short RTCP header");
        assert_eq!(classify(&[]), None);
        assert_eq!(
            classify(&[0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None,
            "STUN is not RTP"
        );
        assert_eq!(classify(&[0x16; 12]), None, "DTLS is not RTP");
    }

    #[test]
    fn nothing_is_accepted_before_signaling() {
        let mut latch = Latch::new(LatchPolicy::SdpOrSignaling, QUIET);
        assert_eq!(
            latch.check(t0(), addr("10.0.0.5:4000"), SSRC),
            Verdict::NoRemote
        );
        assert_eq!(latch.destination(), None);
    }

    #[test]
    fn natted_peer_latches_from_the_signaling_ip_in_the_window() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SignalingSource, now);
        assert_eq!(
            latch.destination(),
            Some(addr("10.0.0.5:4000")),
            "SDP until latched"
        );
        let real = addr("203.0.113.5:61000");
        assert_eq!(latch.check(now, real, SSRC), Verdict::Latched(real));
        assert_eq!(latch.check(now, real, SSRC), Verdict::Accept);
        assert_eq!(
            latch.destination(),
            Some(real),
            "symmetric RTP: send where it sends from"
        );
    }

    #[test]
    fn policy_decides_which_ip_may_be_learned() {
        let now = t0();
        let sdp_ip_other_port = addr("10.0.0.5:5555");
        let sig_ip = addr("203.0.113.5:61000");
        let cases = [
            (LatchPolicy::SdpAddress, sdp_ip_other_port, true),
            (LatchPolicy::SdpAddress, sig_ip, false),
            (LatchPolicy::SignalingSource, sdp_ip_other_port, false),
            (LatchPolicy::SignalingSource, sig_ip, true),
            (LatchPolicy::SdpOrSignaling, sdp_ip_other_port, true),
            (LatchPolicy::SdpOrSignaling, sig_ip, true),
        ];
        for (policy, source, learns) in cases {
            let mut latch = natted(policy, now);
            let verdict = latch.check(now, source, SSRC);
            assert_eq!(
                verdict == Verdict::Latched(source),
                learns,
                "{policy:?} from {source}: {verdict:?}"
            );
        }
    }

    #[test]
    fn the_exact_sdp_address_is_accepted_even_after_the_window() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SignalingSource, now);
        let sdp = addr("10.0.0.5:4000");
        assert_eq!(
            latch.check(now + WINDOW * 10, sdp, SSRC),
            Verdict::Latched(sdp)
        );
    }

    #[test]
    fn no_learning_after_the_window_closes() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let real = addr("203.0.113.5:61000");
        assert_eq!(
            latch.check(now + WINDOW, real, SSRC),
            Verdict::UnexpectedSource
        );
        assert_eq!(latch.destination(), Some(addr("10.0.0.5:4000")));
    }

    #[test]
    fn renegotiation_reopens_the_window() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let later = now + WINDOW * 3;
        latch.set_remote(later, addr("10.0.0.5:4000"), ip("203.0.113.5"), WINDOW);
        let real = addr("203.0.113.5:61000");
        assert_eq!(latch.check(later, real, SSRC), Verdict::Latched(real));
    }

    #[test]
    fn the_other_legs_answer_reopens_an_unlatched_window_only() {
        let now = t0();
        let real = addr("203.0.113.5:61000");
        // The caller's offer opened the window; the callee rang for 8 s.
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let answer = now + WINDOW + Duration::from_secs(3);
        latch.reopen(answer, WINDOW);
        assert_eq!(
            latch.check(answer + WINDOW / 2, real, SSRC),
            Verdict::Latched(real),
            "the caller starts sending once it has the answer"
        );
        // Closed again after the window.
        let mut late = natted(LatchPolicy::SdpOrSignaling, now);
        late.reopen(answer, WINDOW);
        assert_eq!(
            late.check(answer + WINDOW, real, SSRC),
            Verdict::UnexpectedSource
        );
        // A latched flow keeps its latch and its rules: no new first latch
        // for another source of an allowed IP.
        let mut latched = natted(LatchPolicy::SdpOrSignaling, now);
        assert_eq!(latched.check(now, real, SSRC), Verdict::Latched(real));
        latched.reopen(answer, WINDOW);
        assert_eq!(
            latched.check(answer, addr("203.0.113.5:7000"), SSRC ^ 1),
            Verdict::UnexpectedSource
        );
        assert_eq!(latched.latched(), Some(real));
        // Nothing signaled yet: nothing to reopen.
        let mut fresh = Latch::new(LatchPolicy::SdpOrSignaling, QUIET);
        fresh.reopen(now, WINDOW);
        assert_eq!(fresh.check(now, real, SSRC), Verdict::NoRemote);
    }

    #[test]
    fn rtpbleed_third_party_before_latching_is_dropped() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let attacker = addr("198.51.100.66:4000");
        assert_eq!(latch.check(now, attacker, SSRC), Verdict::UnexpectedSource);
        assert_eq!(latch.latched(), None, "the attacker was not learned");
        let real = addr("203.0.113.5:61000");
        assert_eq!(
            latch.check(now, real, SSRC),
            Verdict::Latched(real),
            "the peer still latches"
        );
    }

    #[test]
    fn rtpbleed_third_party_after_latching_is_dropped_whatever_the_ssrc() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let real = addr("203.0.113.5:61000");
        assert_eq!(latch.check(now, real, SSRC), Verdict::Latched(real));
        let attacker = addr("198.51.100.66:4000");
        for ssrc in [SSRC, SSRC ^ 1] {
            assert_eq!(
                latch.check(now, attacker, ssrc),
                Verdict::UnexpectedSource,
                "ssrc {ssrc:#x}"
            );
        }
        assert_eq!(
            latch.destination(),
            Some(real),
            "media still goes to the peer"
        );
    }

    #[test]
    fn same_ip_other_port_relatches_only_with_the_same_ssrc() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let real = addr("203.0.113.5:61000");
        assert_eq!(latch.check(now, real, SSRC), Verdict::Latched(real));
        let later = now + WINDOW * 2;
        let rebound = addr("203.0.113.5:61002");
        assert_eq!(
            latch.check(later, rebound, SSRC ^ 0xff),
            Verdict::UnexpectedSource
        );
        assert_eq!(
            latch.check(later, rebound, SSRC),
            Verdict::Latched(rebound),
            "NAT rebinding"
        );
        assert_eq!(
            latch.check(later + QUIET, real, SSRC),
            Verdict::Latched(real),
            "and back again once the other went quiet"
        );
    }

    #[test]
    fn relatch_follows_the_latest_ssrc_of_the_latched_source() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let real = addr("203.0.113.5:61000");
        latch.check(now, real, SSRC);
        assert_eq!(latch.check(now, real, 99), Verdict::Accept);
        let rebound = addr("203.0.113.5:61002");
        let later = now + QUIET;
        assert_eq!(
            latch.check(later, rebound, SSRC),
            Verdict::UnexpectedSource,
            "old SSRC"
        );
        assert_eq!(latch.check(later, rebound, 99), Verdict::Latched(rebound));
    }

    #[test]
    fn no_relatch_while_the_latched_source_still_talks() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let real = addr("203.0.113.5:61000");
        let same_ip = addr("203.0.113.5:7777");
        latch.check(now, real, SSRC);
        let mut clock = now;
        for _ in 0..20 {
            clock += QUIET / 4;
            assert_eq!(latch.check(clock, real, SSRC), Verdict::Accept);
            assert_eq!(
                latch.check(clock, same_ip, SSRC),
                Verdict::UnexpectedSource,
                "a sender on the peer's IP that learned the SSRC cannot take over"
            );
        }
        assert_eq!(latch.latched(), Some(real));
        assert_eq!(
            latch.check(clock + QUIET, same_ip, SSRC),
            Verdict::Latched(same_ip),
            "once the peer is quiet, the same SSRC re-latches"
        );
    }

    #[test]
    fn a_moved_remote_forgets_the_latch_and_an_unchanged_one_keeps_it() {
        let now = t0();
        let mut latch = natted(LatchPolicy::SdpOrSignaling, now);
        let real = addr("203.0.113.5:61000");
        latch.check(now, real, SSRC);
        latch.set_remote(now, addr("10.0.0.5:4000"), ip("203.0.113.5"), WINDOW);
        assert_eq!(
            latch.latched(),
            Some(real),
            "session refresh keeps the latch"
        );
        latch.set_remote(now, addr("10.0.0.9:6000"), ip("203.0.113.5"), WINDOW);
        assert_eq!(latch.latched(), None);
        assert_eq!(latch.destination(), Some(addr("10.0.0.9:6000")));
    }

    #[test]
    fn asymmetric_accepts_the_expected_ips_and_never_latches() {
        let now = t0();
        let mut latch = natted(LatchPolicy::Asymmetric, now);
        for source in ["10.0.0.5:7000", "203.0.113.5:9", "203.0.113.5:61000"] {
            assert_eq!(
                latch.check(now + WINDOW * 9, addr(source), SSRC),
                Verdict::Accept,
                "{source}"
            );
        }
        assert_eq!(
            latch.check(now, addr("198.51.100.66:4000"), SSRC),
            Verdict::UnexpectedSource
        );
        assert_eq!(latch.latched(), None);
        assert_eq!(
            latch.destination(),
            Some(addr("10.0.0.5:4000")),
            "always the SDP address"
        );
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
    fn t0() -> Instant {
        Instant::now()
    }

    const WINDOW: Duration = Duration::from_secs(2);
    const QUIET: Duration = Duration::from_millis(500);

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    /// A softphone on a multi-homed host: SDP and signaling say
    /// 198.51.100.20, RTP comes from its other address 198.51.100.77.
    fn softphone(policy: LatchPolicy, now: Instant) -> Latch {
        let nets: Arc<[IpNet]> = Arc::from(vec!["198.51.100.0/24".parse::<IpNet>().expect("net")]);
        let mut latch = Latch::new(policy, QUIET).with_networks(Some(nets));
        latch.set_remote(
            now,
            addr("198.51.100.20:4000"),
            "198.51.100.20".parse().expect("ip"),
            WINDOW,
        );
        latch
    }

    #[test]
    fn a_source_in_the_realm_networks_latches_in_the_window_only_with_the_policy() {
        let now = t0();
        let other = addr("198.51.100.77:4000");
        let mut strict = softphone(LatchPolicy::SdpOrSignaling, now);
        assert_eq!(strict.check(now, other, 1), Verdict::UnexpectedSource);
        let mut networks = softphone(LatchPolicy::RealmNetworks, now);
        assert_eq!(networks.check(now, other, 1), Verdict::Latched(other));
        // Outside the realm's networks: never.
        let mut outside = softphone(LatchPolicy::RealmNetworks, now);
        let stranger = addr("203.0.113.9:4000");
        assert_eq!(outside.check(now, stranger, 1), Verdict::UnexpectedSource);
        // After the window: not even inside the networks.
        let mut late = softphone(LatchPolicy::RealmNetworks, now);
        assert_eq!(
            late.check(now + WINDOW, other, 1),
            Verdict::UnexpectedSource
        );
    }

    #[test]
    fn a_re_latch_keeps_the_strict_rule() {
        let now = t0();
        let mut latch = softphone(LatchPolicy::RealmNetworks, now);
        let sdp = addr("198.51.100.20:4000");
        assert_eq!(latch.check(now, sdp, 7), Verdict::Latched(sdp));
        // Same SSRC from another network address after the quiet period:
        // a re-latch needs the SDP or signaling IP.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            latch.check(later, addr("198.51.100.77:4000"), 7),
            Verdict::UnexpectedSource
        );
    }

    #[test]
    fn a_flow_that_never_latches_is_reported_once_per_negotiation() {
        let now = t0();
        let mut latch = softphone(LatchPolicy::SdpOrSignaling, now);
        let other = addr("198.51.100.77:4000");
        assert_eq!(latch.check(now, other, 1), Verdict::UnexpectedSource);
        assert!(!latch.note_unlatched(now), "the window is still open");
        let after = now + WINDOW;
        assert!(
            latch.note_unlatched(after),
            "reported when the window closed"
        );
        assert!(!latch.note_unlatched(after), "once");
        // A new negotiation opens a new window and a new report.
        latch.set_remote(
            after,
            addr("198.51.100.20:4000"),
            "198.51.100.20".parse().expect("ip"),
            WINDOW,
        );
        assert!(!latch.note_unlatched(after));
        assert!(latch.note_unlatched(after + WINDOW));
        // A latched flow, and an asymmetric one, never are.
        let mut ok = softphone(LatchPolicy::SdpOrSignaling, now);
        let sdp = addr("198.51.100.20:4000");
        ok.check(now, sdp, 1);
        assert!(!ok.note_unlatched(after));
        let mut asymmetric = softphone(LatchPolicy::Asymmetric, now);
        assert!(!asymmetric.note_unlatched(after));
    }
}
