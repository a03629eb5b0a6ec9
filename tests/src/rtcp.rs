//! RTCP for the topology scan: building the compound packet an endpoint
//! sends (SR + SDES naming itself, RFC 3550 §6.4.1 and §6.5) and decoding
//! what arrived on the other side of the SBC, so a test can prove that no
//! SDES item (CNAME, NAME, TOOL, ...) or byte of a packet names the sender.
//!
//! Owns: encoding and decoding of SR, RR and SDES packets of a compound
//! packet ([`Packet`], [`decode`]), and [`rtcp_leak`], the scan. Pure: no
//! sockets (the tests own theirs).

use std::fmt::Write as _;

/// SDES item types (RFC 3550 §6.5).
pub mod item {
    /// Canonical end-point identifier, `user@host`.
    pub const CNAME: u8 = 1;
    /// User name.
    pub const NAME: u8 = 2;
    /// E-mail address.
    pub const EMAIL: u8 = 3;
    /// Application or tool name.
    pub const TOOL: u8 = 6;
}

/// RTCP packet types.
const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;

/// One SDES chunk: its SSRC and its items (type, value).
pub type Chunk = (u32, Vec<(u8, Vec<u8>)>);

/// One packet of a compound RTCP packet, as far as the scan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A sender report (PT 200) of this SSRC.
    SenderReport {
        /// The sender's SSRC.
        ssrc: u32,
    },
    /// A receiver report (PT 201) of this SSRC.
    ReceiverReport {
        /// The reporter's SSRC.
        ssrc: u32,
    },
    /// Source descriptions (PT 202): per chunk, its SSRC and its items
    /// (type, value).
    SourceDescription(Vec<Chunk>),
    /// Any other packet type (BYE, APP, feedback...), kept as its type.
    Other(u8),
}

fn header(count: u8, pt: u8, body_len: usize) -> [u8; 4] {
    // Length in 32-bit words minus one, counting the header.
    let words = u16::try_from((body_len + 4) / 4 - 1).unwrap_or(u16::MAX);
    let [hi, lo] = words.to_be_bytes();
    [0x80 | (count & 0x1f), pt, hi, lo]
}

/// A compound RTCP packet as an endpoint sends it: a sender report from
/// `ssrc` (no report blocks) followed by an SDES chunk with `items`
/// (type, text).
pub fn sender_report_with_sdes(ssrc: u32, items: &[(u8, &str)]) -> Vec<u8> {
    let mut sr = Vec::new();
    sr.extend_from_slice(&ssrc.to_be_bytes());
    // NTP timestamp, RTP timestamp, packet and octet counts.
    sr.extend_from_slice(&[0x83, 0xaa, 0x7e, 0x80, 0, 0, 0, 0]);
    sr.extend_from_slice(&160u32.to_be_bytes());
    sr.extend_from_slice(&10u32.to_be_bytes());
    sr.extend_from_slice(&1600u32.to_be_bytes());
    let mut out = header(0, SR, sr.len()).to_vec();
    out.extend(sr);

    let mut chunk = ssrc.to_be_bytes().to_vec();
    for (kind, text) in items {
        let bytes = &text.as_bytes()[..text.len().min(255)];
        chunk.push(*kind);
        chunk.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
        chunk.extend_from_slice(bytes);
    }
    // The end item, then zeros to the next 32-bit boundary.
    chunk.push(0);
    while !chunk.len().is_multiple_of(4) {
        chunk.push(0);
    }
    out.extend(header(1, SDES, chunk.len()));
    out.extend(chunk);
    out
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn sdes_chunks(count: u8, mut body: &[u8]) -> Option<Vec<Chunk>> {
    let mut chunks = Vec::new();
    for _ in 0..count {
        let ssrc = be32(body)?;
        let mut at = 4;
        let mut items = Vec::new();
        loop {
            let kind = *body.get(at)?;
            if kind == 0 {
                at += 1;
                break;
            }
            let len = usize::from(*body.get(at + 1)?);
            items.push((kind, body.get(at + 2..at + 2 + len)?.to_vec()));
            at += 2 + len;
        }
        // A chunk ends on a 32-bit boundary.
        at = at.div_ceil(4) * 4;
        chunks.push((ssrc, items));
        body = body.get(at.min(body.len())..)?;
    }
    Some(chunks)
}

/// The packets of a compound RTCP packet; `None` when it is not one (a
/// version other than 2, a length past the end, a broken SDES chunk).
pub fn decode(datagram: &[u8]) -> Option<Vec<Packet>> {
    let mut packets = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let first = *rest.first()?;
        if first >> 6 != 2 {
            return None;
        }
        let count = first & 0x1f;
        let pt = *rest.get(1)?;
        let words = usize::from(u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]));
        let len = (words + 1) * 4;
        let body = rest.get(4..len)?;
        packets.push(match pt {
            SR => Packet::SenderReport { ssrc: be32(body)? },
            RR => Packet::ReceiverReport { ssrc: be32(body)? },
            SDES => Packet::SourceDescription(sdes_chunks(count, body)?),
            other => Packet::Other(other),
        });
        rest = &rest[len..];
    }
    Some(packets)
}

/// The SDES items of every packet, as `(type, text)`.
pub fn sdes_items(packets: &[Packet]) -> Vec<(u8, String)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::SourceDescription(chunks) => Some(chunks),
            _ => None,
        })
        .flatten()
        .flat_map(|(_, items)| items.iter())
        .map(|(kind, value)| (*kind, String::from_utf8_lossy(value).into_owned()))
        .collect()
}

/// The scan: the first of `datagrams` (RTCP as received on one side of the
/// SBC) that does not decode, or that names one of `forbidden` (addresses,
/// names, product strings of the other side) in an SDES item or anywhere
/// in its bytes (ASCII case-insensitive), described; `None` when all are
/// clean.
pub fn rtcp_leak(datagrams: &[Vec<u8>], forbidden: &[&str]) -> Option<String> {
    for (i, datagram) in datagrams.iter().enumerate() {
        let Some(packets) = decode(datagram) else {
            return Some(format!(
                "RTCP datagram {i} does not decode: {}",
                hex(datagram)
            ));
        };
        let text = String::from_utf8_lossy(datagram).to_ascii_lowercase();
        for token in forbidden.iter().filter(|t| !t.is_empty()) {
            if text.contains(&token.to_ascii_lowercase()) {
                return Some(format!(
                    "RTCP datagram {i} names `{token}`: SDES items {:?}, bytes {}",
                    sdes_items(&packets),
                    hex(datagram)
                ));
            }
        }
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_report_with_sdes_round_trips() {
        let packet = sender_report_with_sdes(
            0x1234_5678,
            &[
                (item::CNAME, "alice@198.51.100.7"),
                (item::TOOL, "alice-phone 1.0"),
            ],
        );
        assert_eq!(packet.len() % 4, 0);
        let decoded = decode(&packet).expect("decodes");
        assert_eq!(decoded[0], Packet::SenderReport { ssrc: 0x1234_5678 });
        assert_eq!(
            sdes_items(&decoded),
            [
                (item::CNAME, "alice@198.51.100.7".to_owned()),
                (item::TOOL, "alice-phone 1.0".to_owned())
            ]
        );
    }

    #[test]
    fn the_scan_names_what_it_found() {
        let clean = sender_report_with_sdes(7, &[(item::CNAME, "sbc-3f9a1c")]);
        let leaky = sender_report_with_sdes(7, &[(item::CNAME, "alice@198.51.100.7")]);
        assert_eq!(
            rtcp_leak(std::slice::from_ref(&clean), &["198.51.100.7", "alice"]),
            None
        );
        let leak = rtcp_leak(&[clean, leaky], &["198.51.100.7"]).expect("a leak");
        assert!(
            leak.starts_with("RTCP datagram 1 names `198.51.100.7`"),
            "{leak}"
        );
        let broken = rtcp_leak(&[vec![0x40, 200, 0, 0]], &[]).expect("not RTCP");
        assert!(broken.contains("does not decode"), "{broken}");
        // A length past the end of the datagram.
        assert_eq!(decode(&[0x80, 200, 0, 9, 0, 0, 0, 1]), None);
    }
}
