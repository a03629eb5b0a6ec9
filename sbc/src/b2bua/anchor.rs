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

use std::net::{IpAddr, SocketAddr};

use crate::media::command::{Direction, LocalEndpoint, Remote};
use crate::sdp::{self, Sdp, SdpError};

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
                },
                direction,
            }
        })
        .collect()
}

/// `sdp` as the other leg sees it: the SBC's `media_ip` everywhere and
/// `endpoints[i]` (this leg's anchored endpoint of stream `i`) as ports.
/// A stream without an endpoint (disabled) keeps port 0.
pub(crate) fn rewrite(
    sdp: &Sdp,
    media_ip: IpAddr,
    endpoints: &[Option<LocalEndpoint>],
) -> Result<Vec<u8>, SdpError> {
    let mut editor = sdp.editor();
    editor
        .set_origin_address(media_ip)
        .set_connection(media_ip)
        .strip_ice();
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
        let out = rewrite(&sdp, ip, &[Some(endpoint), None]).expect("rewrites");
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert!(!text.contains("10.0.0.1"), "{text}");
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
    fn rfc2543_hold_is_inactive() {
        let held = Sdp::parse(b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n").expect("parses");
        let offers = streams(&held, "192.0.2.1".parse().expect("ip"));
        assert_eq!(offers[0].direction, Direction::Inactive);
    }
}
