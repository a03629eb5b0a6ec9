//! SDP anchoring (pure): what a leg's SDP asks of the media layer, and the
//! SDP the other leg gets, naming only the SBC's media address and ports.
//!
//! Per `m=` line: the remote the media layer needs (effective `c=` and port,
//! `a=rtcp` or port + 1, rtcp-mux, and the signaling source for latching) and
//! the declared direction (`c=0.0.0.0` and `a=inactive` are both hold). The
//! rewrite sets `o=` and every `c=` (and `a=rtcp` address) to the realm's
//! media address, each enabled stream's port to its anchored port and its
//! `a=rtcp` to the anchored RTCP port, and strips ICE (the SBC terminates the
//! media path, so the far side's candidates would both leak and mislead).
//! Disabled streams (port 0) stay disabled and get no ports.
//!
//! The pure part comes first; then the core's side: a message whose SDP
//! needs ports waits in the call's queue until the media layer allocated
//! them, and is relayed with its SDP rewritten.

use std::net::{IpAddr, SocketAddr};

use crate::media::cname::CnameMask;
use crate::media::command::{Direction, LocalEndpoint, Remote};
use crate::sdp::{self, Sdp, SdpError};

pub(crate) use super::call::SdpOrigin;
use super::*;

/// What one `m=` line of a leg's SDP asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamOffer {
    /// Port 0: no media, no allocation.
    pub(crate) disabled: bool,
    /// Where this leg wants media (meaningless when disabled).
    pub(crate) remote: Remote,
    /// What this leg declared.
    pub(crate) direction: Direction,
}

/// Reads what each stream of `sdp` asks for; `signaling_ip` is where the SIP
/// message carrying it came from (for latching).
pub(crate) fn streams(sdp: &Sdp, signaling_ip: IpAddr) -> Vec<StreamOffer> {
    sdp.media()
        .map(|m| {
            let connection = m.effective_connection();
            let ip = connection.and_then(|c| c.ip).unwrap_or(signaling_ip);
            let held = connection.is_some_and(|c| c.ip.is_some_and(|ip| ip.is_unspecified()));
            let rtp = SocketAddr::new(ip, m.port());
            let rtcp = match m.rtcp() {
                Some(rtcp) => {
                    SocketAddr::new(rtcp.connection.and_then(|c| c.ip).unwrap_or(ip), rtcp.port)
                }
                None => SocketAddr::new(ip, m.port().wrapping_add(1)),
            };
            let direction = if held {
                Direction::Inactive
            } else {
                match m.direction() {
                    sdp::Direction::SendRecv => Direction::SendRecv,
                    sdp::Direction::SendOnly => Direction::SendOnly,
                    sdp::Direction::RecvOnly => Direction::RecvOnly,
                    sdp::Direction::Inactive => Direction::Inactive,
                }
            };
            StreamOffer {
                disabled: m.is_disabled(),
                remote: Remote {
                    rtp,
                    rtcp,
                    rtcp_mux: m.rtcp_mux(),
                    signaling_ip,
                    secure: srtp(m.proto(), |name| {
                        m.attribute(name).is_some() || sdp.attribute(name).is_some()
                    }),
                },
                direction,
            }
        })
        .collect()
}

/// Whether a stream's RTCP may be SRTCP, which the relay must forward as
/// it is (encrypted SDES, authenticated header): an SRTP profile (`RTP/SAVP`,
/// `RTP/SAVPF`, `UDP/TLS/RTP/SAVP(F)`, in any case), or keys offered on a
/// plain profile (`a=crypto` on `RTP/AVP`: "best effort" SRTP, which some
/// PBXs send) or a DTLS `a=fingerprint`. In doubt the CNAME crosses
/// unmasked rather than every SRTCP packet being dropped as malformed.
fn srtp(proto: &str, has_attribute: impl Fn(&str) -> bool) -> bool {
    proto.to_ascii_uppercase().contains("SAVP")
        || has_attribute("crypto")
        || has_attribute("fingerprint")
}

/// `sdp` as the other leg sees it: the SBC's `media_ip` everywhere and
/// `endpoints[i]` (this leg's anchored endpoint of stream `i`) as ports.
/// A stream without an endpoint (disabled) keeps port 0.
///
/// Nothing of the far side's product or host stays: `o=` is the SBC's own
/// (`-`, its session id and version for this leg), `s=` is `-`, `a=tool` is
/// removed, and the CNAME of each `a=ssrc` (RFC 5576) becomes its stand-in
/// under `mask`, the one the relay writes into RTCP SDES.
pub(crate) fn rewrite(
    sdp: &Sdp,
    media_ip: IpAddr,
    endpoints: &[Option<LocalEndpoint>],
    origin: SdpOrigin,
    mask: &CnameMask,
) -> Result<Vec<u8>, SdpError> {
    let mut editor = sdp.editor();
    editor
        .set_origin("-", origin.session_id, origin.version)
        .set_origin_address(media_ip)
        .set_session_name("-")
        .set_connection(media_ip)
        .strip_ice()
        .remove_attributes(&["tool"])
        .mask_ssrc_cnames(|cname| String::from_utf8_lossy(&mask.mask(cname)).into_owned());
    for (index, endpoint) in endpoints.iter().enumerate() {
        let Some(endpoint) = endpoint else { continue };
        // Indices come from this same SDP, so these edits can't miss.
        let _ = editor.set_media_port(index, endpoint.rtp.port());
        if let Some(rtcp) = endpoint.rtcp {
            let _ = editor.set_rtcp(index, rtcp.port(), Some(media_ip));
        }
    }
    Ok(editor.to_bytes())
}

pub(super) enum Anchored {
    Ready(Vec<u8>),
    Wait,
    Invalid(u16),
}

pub(super) enum AnchorFail {
    Wait,
    Status(u16),
}

impl Core {
    pub(super) fn run_pending(&mut self, now: Instant, call: &mut Call) {
        while let Some(next) = call.pending.pop_front() {
            let outcome = match &next {
                Pending::Invite => self.send_b_invite(now, call),
                Pending::Response {
                    from,
                    server,
                    response,
                } => self.relay_response(now, call, *from, *server, response.clone()),
                Pending::Request {
                    from,
                    server,
                    request,
                } => self.relay_request(now, call, *from, *server, request.clone()),
                Pending::Ack { from, ack, cseq } => {
                    self.relay_ack(now, call, *from, ack.clone(), *cseq)
                }
            };
            if outcome == Relayed::WaitForMedia {
                call.pending.push_front(next);
                return;
            }
        }
        // Most calls queue a message only while media is allocated: don't
        // keep the room for them for the rest of the call.
        call.pending.shrink_to_fit();
    }

    /// The media address `side`'s streams anchor on: the one the leg
    /// already has (every stream of a leg on one address, so its SDP names
    /// one), else the least loaded of `realm`'s, now counted.
    fn leg_media_address(&mut self, call: &mut Call, side: Side, realm: usize) -> IpAddr {
        let addresses = &self.realms[realm].media_addresses;
        let slot = &mut call.media.addresses[side.index()];
        if let Some(ip) = *slot
            && addresses.contains(&ip)
        {
            return ip;
        }
        let ip = addresses
            .iter()
            .copied()
            .min_by_key(|ip| self.media_load.get(ip).copied().unwrap_or(0))
            .unwrap_or(addresses[0]);
        if let Some(old) = slot.replace(ip) {
            // (Another realm's, before a failover re-anchored the call.)
            access::decrement(&mut self.media_load, &old);
        }
        *self.media_load.entry(ip).or_default() += 1;
        ip
    }

    /// The leg addresses of `call` leave the load count (its streams are
    /// released).
    pub(super) fn forget_media_addresses(&mut self, call: &mut Call) {
        for ip in call.media.addresses.iter_mut().filter_map(Option::take) {
            access::decrement(&mut self.media_load, &ip);
        }
    }

    /// The body of `msg` as the other leg gets it: anchored SDP, or as is.
    pub(super) fn maybe_anchor(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        msg: &Message,
    ) -> Result<Vec<u8>, AnchorFail> {
        let body = msg.body();
        let is_sdp = msg
            .content_type()
            .is_some_and(|ct| ct.is("application", "sdp"));
        if body.is_empty() {
            return Ok(Vec::new());
        }
        if !is_sdp {
            // The offer/answer methods carry SDP or nothing: another body
            // (multipart with SDP inside, say) would cross unanchored.
            // INFO, MESSAGE, NOTIFY... bodies are the endpoints' business.
            let session = msg
                .cseq()
                .is_some_and(|c| matches!(c.method, "INVITE" | "ACK" | "PRACK" | "UPDATE"));
            return if session {
                Err(AnchorFail::Status(415))
            } else {
                Ok(body.to_vec())
            };
        }
        let source = leg_ref(call, from).map_or(call.a.peer.ip(), |l| l.peer.ip());
        let body = body.to_vec();
        match self.anchor(now, call, from, &body, source) {
            Anchored::Ready(out) => {
                if from == Side::B && call.phase == Phase::Setup && !msg.is_request() {
                    call.media.b_answer_tag = msg.to().and_then(|to| to.tag().map(Into::into));
                }
                Ok(out)
            }
            Anchored::Wait => Err(AnchorFail::Wait),
            Anchored::Invalid(status) => Err(AnchorFail::Status(status)),
        }
    }

    /// What a leg on `realm` (facing `trunk`, if any) asks of the media
    /// layer on `local_ip`: an RTP/RTCP pair, latching by the realm's and
    /// trunk's rules, counted under the realm.
    pub(super) fn leg_spec(&self, realm: usize, trunk: Option<usize>, local_ip: IpAddr) -> LegSpec {
        // A leg facing an asymmetric-RTP trunk never latches.
        let asymmetric =
            trunk.is_some_and(|t| self.trunks.get(t).is_some_and(|t| t.asymmetric_rtp));
        LegSpec {
            local_ip,
            rtcp: RtcpMode::Pair,
            latch: if asymmetric {
                LatchPolicy::Asymmetric
            } else if self.latch == LatchPolicy::SdpOrSignaling
                && self.realms[realm].latch_from_networks
            {
                LatchPolicy::RealmNetworks
            } else {
                self.latch
            },
            // Media counts under the realm index (stable across reloads);
            // `realm_media` names it for metrics.
            realm: crate::media::command::RealmTag::from_index(realm),
        }
    }

    /// Anchors an SDP from `from`: allocates streams it adds, tells the media
    /// layer where `from` wants media, and rewrites it for the other leg.
    pub(super) fn anchor(
        &mut self,
        _now: Instant,
        call: &mut Call,
        from: Side,
        body: &[u8],
        source: IpAddr,
    ) -> Anchored {
        let sdp = match Sdp::parse(body) {
            Ok(sdp) => sdp,
            Err(e) => return Anchored::Invalid(e.status_code()),
        };
        let offers = anchor::streams(&sdp, source);
        let Some(b_realm) = call.b.as_ref().map(|b| b.realm) else {
            return Anchored::Invalid(500);
        };
        if call.media.media_realm_b.is_some_and(|r| r != b_realm) {
            // Failover to a trunk on another realm: anchor afresh there.
            self.release_media(call);
        }
        call.media.media_realm_b = Some(b_realm);
        if call.media.streams.len() < offers.len() {
            // Exactly: a call keeps these as long as it is up.
            call.media
                .streams
                .reserve_exact(offers.len() - call.media.streams.len());
            call.media.streams.resize(offers.len(), None);
        }
        let mut waiting = false;
        for (index, offer) in offers.iter().enumerate() {
            if offer.disabled {
                continue;
            }
            match &call.media.streams[index] {
                Some((_, None)) => waiting = true,
                Some((_, Some(_))) => {}
                None => {
                    let stream = StreamId(self.next_stream);
                    self.next_stream += 1;
                    self.streams.insert(stream, call.id);
                    call.media.streams[index] = Some((stream, None));
                    let ips = [
                        self.leg_media_address(call, Side::A, call.a.realm),
                        self.leg_media_address(call, Side::B, b_realm),
                    ];
                    self.media_out.push_back(MediaCommand::Allocate {
                        stream,
                        legs: [
                            self.leg_spec(call.a.realm, call.source_trunk, ips[0]),
                            self.leg_spec(b_realm, call.trunk, ips[1]),
                        ],
                    });
                    waiting = true;
                }
            }
        }
        if waiting {
            return Anchored::Wait;
        }
        let to = from.other();
        let mut endpoints = Vec::with_capacity(offers.len());
        for (index, offer) in offers.iter().enumerate() {
            let slot = call.media.streams.get(index).copied().flatten();
            match (offer.disabled, slot) {
                (false, Some((stream, Some(legs)))) => {
                    if self.replicate {
                        let remotes = &mut call.media.remotes;
                        if remotes.len() <= index {
                            remotes.resize(index + 1, [None; 2]);
                        }
                        remotes[index][from.index()] = Some((offer.remote, offer.direction));
                    }
                    call.replica.dirty = true;
                    self.media_out.push_back(MediaCommand::SetRemote {
                        stream,
                        leg: from.media(),
                        remote: offer.remote,
                    });
                    self.media_out.push_back(MediaCommand::SetDirection {
                        stream,
                        leg: from.media(),
                        direction: offer.direction,
                    });
                    endpoints.push(Some(legs[to.media().index()]));
                }
                _ => endpoints.push(None),
            }
        }
        // SDP shows the realm's advertised address (1:1 NAT), else the
        // address the streams were anchored on, which a reload that moved
        // the realm's media address does not change for this call.
        let realm = match to {
            Side::A => call.a.realm,
            Side::B => b_realm,
        };
        let anchored = endpoints.iter().flatten().map(|e| e.rtp.ip()).next();
        let media_ip = self.realms[realm]
            .media_advertise
            .or(anchored)
            .unwrap_or(self.realms[realm].media_addresses[0]);
        let source = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            (body, media_ip).hash(&mut h);
            for endpoint in &endpoints {
                endpoint.map(|e| (e.rtp, e.rtcp)).hash(&mut h);
            }
            h.finish()
        };
        let fresh_id =
            u64::from_be_bytes(self.ids.next_bytes()[..8].try_into().unwrap_or_default()) >> 1;
        let origin = SdpOrigin::next(call.media.origins[to.index()], fresh_id, source);
        call.media.origins[to.index()] = Some(origin);
        match anchor::rewrite(&sdp, media_ip, &endpoints, origin, &self.cname_mask) {
            Ok(out) => Anchored::Ready(out),
            Err(e) => Anchored::Invalid(e.status_code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &[u8] = b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 10.0.0.1\r\na=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\r\n\
m=video 0 RTP/AVP 96\r\n";

    #[test]
    fn offers_are_read_and_rewritten_without_the_far_address() {
        let sdp = Sdp::parse(OFFER).expect("parses");
        let signaling: IpAddr = "198.51.100.7".parse().expect("ip");
        let offers = streams(&sdp, signaling);
        assert_eq!(offers.len(), 2);
        assert!(!offers[0].disabled && offers[1].disabled);
        assert_eq!(offers[0].remote.rtp, "10.0.0.1:4000".parse().expect("addr"));
        assert_eq!(
            offers[0].remote.rtcp,
            "10.0.0.1:4001".parse().expect("addr")
        );
        assert_eq!(offers[0].direction, Direction::SendRecv);

        let ip: IpAddr = "203.0.113.1".parse().expect("ip");
        let endpoint = LocalEndpoint {
            rtp: SocketAddr::new(ip, 30000),
            rtcp: Some(SocketAddr::new(ip, 30001)),
        };
        let origin = SdpOrigin::next(None, 42, 7);
        let mask = CnameMask::new();
        let out = rewrite(&sdp, ip, &[Some(endpoint), None], origin, &mask).expect("rewrites");
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert!(!text.contains("10.0.0.1"), "{text}");
        assert!(
            text.starts_with("v=0\r\no=- 42 1 IN IP4 203.0.113.1\r\ns=-\r\n"),
            "{text}"
        );
        assert!(!text.contains("candidate"), "{text}");
        let again = Sdp::parse(&out).expect("reparses");
        let ports: Vec<u16> = again.media().map(|m| m.port()).collect();
        assert_eq!(ports, [30000, 0]);
        assert_eq!(
            again
                .media_section(0)
                .and_then(|m| m.rtcp())
                .map(|r| r.port),
            Some(30001)
        );
    }

    #[test]
    fn srtcp_is_recognised_by_profile_or_keys() {
        let secure = |m: &str| {
            let text = format!(
                "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{m}"
            );
            let sdp = Sdp::parse(text.as_bytes()).expect("parses");
            streams(&sdp, "198.51.100.7".parse().expect("ip"))[0]
                .remote
                .secure
        };
        assert!(!secure("m=audio 4000 RTP/AVP 0\r\n"));
        assert!(secure("m=audio 4000 RTP/SAVP 0\r\n"));
        assert!(secure("m=audio 4000 rtp/savpf 0\r\n"));
        assert!(secure("m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n"));
        assert!(secure(
            "m=audio 4000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
        ));
        assert!(secure(
            "m=audio 4000 RTP/AVP 0\r\na=fingerprint:sha-256 AB:CD\r\n"
        ));
    }

    #[test]
    fn the_origin_version_moves_exactly_when_the_sdp_does() {
        let first = SdpOrigin::next(None, 9, 100);
        assert_eq!((first.session_id, first.version), (9, 1));
        let same = SdpOrigin::next(Some(first), 10, 100);
        assert_eq!(same, first, "a resent SDP keeps its version");
        let changed = SdpOrigin::next(Some(same), 11, 200);
        assert_eq!((changed.session_id, changed.version), (9, 2));
        let back = SdpOrigin::next(Some(changed), 12, 100);
        assert_eq!(back.version, 3, "going back is a change too");
    }

    #[test]
    fn rfc2543_hold_is_inactive() {
        let held = Sdp::parse(b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n").expect("parses");
        let offers = streams(&held, "192.0.2.1".parse().expect("ip"));
        assert_eq!(offers[0].direction, Direction::Inactive);
    }
}
