//! RTCP SDES rewriting for topology hiding (RFC 3550 §6.5).
//!
//! An SDES packet says who sends: its CNAME is usually `user@host` with the
//! endpoint's (often private) address, and its other items name the person
//! and the product (NAME, EMAIL, PHONE, LOC, TOOL, NOTE, PRIV). Relayed as
//! they are, they tell each side the other's address and software, past
//! every rewrite of SIP and SDP. [`hide_sdes`] rewrites a compound RTCP
//! packet so that each CNAME is its keyed stand-in ([`CnameMask`], the same
//! one SDP `a=ssrc ... cname:` carries) and every other SDES item is gone:
//! RFC 3550 requires only the CNAME, and a receiver needs nothing else to
//! tie SSRCs together. Every other RTCP packet (SR, RR, BYE, APP, RTPFB,
//! PSFB, XR, ...) is copied byte for byte.
//!
//! SRTCP is never given here: its SDES is encrypted and its authentication
//! tag covers the header (the relay knows a leg is SRTP from its SDP).
//!
//! Owns: the compound packet format. May not: decide which packets to
//! rewrite (the relay does), or allocate beyond `out`.

use super::cname::{CnameMask, MASKED_LEN};

/// SDES packet type (RFC 3550 §6.5).
const SDES: u8 = 202;
/// The CNAME item type.
const CNAME: u8 = 1;

/// Why a packet can't be rewritten: it is dropped (counted as malformed)
/// rather than relayed with a CNAME inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// A packet's header is cut, or its length runs past the datagram.
    #[error("an RTCP packet runs past the datagram")]
    Truncated,
    /// Not RTCP version 2.
    #[error("not RTCP version 2")]
    Version,
    /// An SDES chunk or item runs past its packet.
    #[error("an SDES chunk runs past its packet")]
    Chunk,
}

/// Writes `packet` (a compound RTCP packet) into `out` with every SDES
/// CNAME replaced by `mask`'s stand-in and every other SDES item removed.
/// `out` is cleared first. Returns whether anything changed.
pub fn hide_sdes(packet: &[u8], mask: &CnameMask, out: &mut Vec<u8>) -> Result<bool, RtcpError> {
    out.clear();
    let mut changed = false;
    let mut rest = packet;
    while !rest.is_empty() {
        let header = rest.get(..4).ok_or(RtcpError::Truncated)?;
        if header[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let len = (words + 1) * 4;
        let this = rest.get(..len).ok_or(RtcpError::Truncated)?;
        rest = &rest[len..];
        if header[1] != SDES {
            out.extend_from_slice(this);
            continue;
        }
        changed = true;
        // Padding (P bit) counts in the length; its last octet says how
        // much. The rewritten packet has none.
        let padded = header[0] & 0x20 != 0;
        let body_end = if padded {
            let pad = usize::from(*this.last().ok_or(RtcpError::Chunk)?);
            len.checked_sub(pad)
                .filter(|end| *end >= 4)
                .ok_or(RtcpError::Chunk)?
        } else {
            len
        };
        let chunks = usize::from(header[0] & 0x1f);
        let start = out.len();
        out.extend_from_slice(&[header[0] & !0x20, SDES, 0, 0]);
        let mut body = &this[4..body_end];
        for _ in 0..chunks {
            let ssrc = body.get(..4).ok_or(RtcpError::Chunk)?;
            out.extend_from_slice(ssrc);
            let mut at = 4;
            // Items until the END item (type 0), then padding to 32 bits.
            loop {
                let kind = *body.get(at).ok_or(RtcpError::Chunk)?;
                if kind == 0 {
                    at += 1;
                    break;
                }
                let item_len = usize::from(*body.get(at + 1).ok_or(RtcpError::Chunk)?);
                let text = body
                    .get(at + 2..at + 2 + item_len)
                    .ok_or(RtcpError::Chunk)?;
                if kind == CNAME {
                    out.extend_from_slice(&[CNAME, MASKED_LEN as u8]);
                    out.extend_from_slice(&mask.mask(text));
                }
                at += 2 + item_len;
            }
            // The chunk ends on a 32-bit boundary (null octets).
            at = at.div_ceil(4) * 4;
            body = body.get(at..).unwrap_or_default();
            // END, then nulls up to a 32-bit boundary (at least one).
            out.push(0);
            while !(out.len() - start).is_multiple_of(4) {
                out.push(0);
            }
        }
        let words = (out.len() - start) / 4 - 1;
        let words = u16::try_from(words).map_err(|_| RtcpError::Chunk)?;
        out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDES packet of one chunk with these items, padded per RFC 3550.
    fn sdes(ssrc: u32, items: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![0x81, SDES, 0, 0];
        p.extend_from_slice(&ssrc.to_be_bytes());
        for (kind, text) in items {
            p.push(*kind);
            p.push(text.len() as u8);
            p.extend_from_slice(text);
        }
        p.push(0);
        while p.len() % 4 != 0 {
            p.push(0);
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        p
    }

    fn receiver_report(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p
    }

    /// The items of the first SDES chunk of `out`'s SDES packet at `at`.
    fn items(out: &[u8], at: usize) -> Vec<(u8, Vec<u8>)> {
        let mut i = at + 8;
        let mut items = Vec::new();
        while out[i] != 0 {
            let len = usize::from(out[i + 1]);
            items.push((out[i], out[i + 2..i + 2 + len].to_vec()));
            i += 2 + len;
        }
        items
    }

    #[test]
    fn cnames_become_stand_ins_and_other_items_go() {
        let mask = CnameMask::new();
        let mut packet = receiver_report(7);
        let rr_len = packet.len();
        packet.extend(sdes(
            7,
            &[
                (CNAME, b"alice@192.168.1.20"),
                (2, b"Alice"),
                (6, b"PhoneAgent 3.1"),
            ],
        ));
        let mut out = Vec::new();
        assert_eq!(hide_sdes(&packet, &mask, &mut out), Ok(true));
        assert_eq!(&out[..rr_len], &packet[..rr_len], "the RR is untouched");
        let items = items(&out, rr_len);
        assert_eq!(
            items,
            vec![(CNAME, mask.mask(b"alice@192.168.1.20").to_vec())]
        );
        // Whole words, and the length field says so.
        let sdes = &out[rr_len..];
        assert_eq!(sdes.len() % 4, 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([sdes[2], sdes[3]])),
            sdes.len() / 4 - 1
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("192.168") && !text.contains("PhoneAgent") && !text.contains("Alice")
        );
    }

    #[test]
    fn packets_without_sdes_pass_unchanged() {
        let mask = CnameMask::new();
        let packet = receiver_report(9);
        let mut out = Vec::new();
        assert_eq!(hide_sdes(&packet, &mask, &mut out), Ok(false));
        assert_eq!(out, packet);
    }

    #[test]
    fn several_chunks_and_padding_are_handled() {
        let mask = CnameMask::new();
        let mut packet = sdes(1, &[(CNAME, b"a@10.0.0.1")]);
        // A second chunk in the same packet.
        let second = sdes(2, &[(CNAME, b"b@10.0.0.2"), (4, b"+4930")]);
        packet.extend_from_slice(&second[4..]);
        packet[0] = 0x82;
        // Padding of 4 octets (P bit), as an encrypting sender might add.
        packet[0] |= 0x20;
        packet.extend_from_slice(&[0, 0, 0, 4]);
        let words = (packet.len() / 4 - 1) as u16;
        packet[2..4].copy_from_slice(&words.to_be_bytes());
        let mut out = Vec::new();
        assert_eq!(hide_sdes(&packet, &mask, &mut out), Ok(true));
        assert_eq!(out[0], 0x82, "two chunks, no padding");
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("10.0.0") && !text.contains("+4930"),
            "{text}"
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([out[2], out[3]])),
            out.len() / 4 - 1
        );
    }

    #[test]
    fn broken_packets_are_refused_and_nothing_panics() {
        let mask = CnameMask::new();
        let mut out = Vec::new();
        let good = sdes(1, &[(CNAME, b"a@10.0.0.1")]);
        assert_eq!(
            hide_sdes(&good[..6], &mask, &mut out),
            Err(RtcpError::Truncated)
        );
        let mut v1 = good.clone();
        v1[0] = 0x41;
        assert_eq!(hide_sdes(&v1, &mask, &mut out), Err(RtcpError::Version));
        // An item longer than its packet.
        let mut long = good.clone();
        long[9] = 200;
        assert_eq!(hide_sdes(&long, &mask, &mut out), Err(RtcpError::Chunk));
        // Every prefix and every single-byte corruption: an answer, no panic.
        for n in 0..good.len() {
            let _ = hide_sdes(&good[..n], &mask, &mut out);
            for b in [0u8, 1, 0x20, 0x81, 0xff] {
                let mut bad = good.clone();
                bad[n] = b;
                let _ = hide_sdes(&bad, &mask, &mut out);
            }
        }
    }

    /// A deterministic xorshift generator: reproducible cases, no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    /// What a generated compound packet holds, to check the rewrite by.
    enum Part {
        Other(Vec<u8>),
        /// Per chunk: its SSRC and its CNAMEs' texts.
        Sdes(Vec<(u32, Vec<Vec<u8>>)>),
    }

    /// A valid compound packet of random SR/RR/APP and SDES packets: random
    /// items (CNAMEs and the rest) of random lengths, some packets padded.
    fn compound(rng: &mut Rng) -> (Vec<u8>, Vec<Part>) {
        let mut packet = Vec::new();
        let mut parts = Vec::new();
        for _ in 0..1 + rng.below(4) {
            if rng.below(2) == 0 {
                let words = rng.below(8);
                let mut p = vec![0x80, [200, 201, 204][rng.below(3)], 0, words as u8];
                p.extend((0..words * 4).map(|_| rng.next() as u8));
                packet.extend_from_slice(&p);
                parts.push(Part::Other(p));
                continue;
            }
            let chunks = rng.below(4);
            let start = packet.len();
            packet.extend_from_slice(&[0x80 | chunks as u8, SDES, 0, 0]);
            let mut want = Vec::new();
            for _ in 0..chunks {
                let ssrc = rng.next() as u32;
                packet.extend_from_slice(&ssrc.to_be_bytes());
                let mut cnames = Vec::new();
                for _ in 0..rng.below(5) {
                    let kind = 1 + rng.below(8) as u8;
                    let text: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
                    packet.extend_from_slice(&[kind, text.len() as u8]);
                    packet.extend_from_slice(&text);
                    if kind == CNAME {
                        cnames.push(text);
                    }
                }
                packet.push(0);
                while (packet.len() - start) % 4 != 0 {
                    packet.push(0);
                }
                want.push((ssrc, cnames));
            }
            if rng.below(3) == 0 {
                let pad = 4 * (1 + rng.below(3));
                packet.extend(std::iter::repeat_n(0, pad - 1));
                packet.push(pad as u8);
                packet[start] |= 0x20;
            }
            let words = ((packet.len() - start) / 4 - 1) as u16;
            packet[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
            parts.push(Part::Sdes(want));
        }
        (packet, parts)
    }

    /// Splits `out` into its packets by their length fields, checking that
    /// they tile it exactly.
    fn packets(out: &[u8]) -> Vec<&[u8]> {
        let mut rest = out;
        let mut all = Vec::new();
        while !rest.is_empty() {
            assert!(
                rest.len() >= 4 && rest[0] >> 6 == 2,
                "a bad header in {out:x?}"
            );
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            assert!(len <= rest.len(), "a length past the end in {out:x?}");
            all.push(&rest[..len]);
            rest = &rest[len..];
        }
        all
    }

    #[test]
    fn random_compounds_come_out_well_formed_with_only_stand_ins() {
        let mask = CnameMask::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        for case in 0..5_000 {
            let (packet, parts) = compound(&mut rng);
            let changed = hide_sdes(&packet, &mask, &mut out)
                .unwrap_or_else(|e| panic!("case {case}: {e} for {packet:x?}"));
            let got = packets(&out);
            assert_eq!(got.len(), parts.len(), "case {case}");
            assert_eq!(changed, parts.iter().any(|p| matches!(p, Part::Sdes(_))));
            for (got, part) in got.iter().zip(&parts) {
                match part {
                    Part::Other(p) => assert_eq!(got, p, "case {case}: copied as it was"),
                    Part::Sdes(chunks) => {
                        assert_eq!(got[0], 0x80 | chunks.len() as u8, "case {case}: no padding");
                        let mut at = 4;
                        for (ssrc, cnames) in chunks {
                            assert_eq!(got[at..at + 4], ssrc.to_be_bytes(), "case {case}");
                            at += 4;
                            for cname in cnames {
                                assert_eq!(got[at..at + 2], [CNAME, MASKED_LEN as u8]);
                                assert_eq!(got[at + 2..at + 2 + MASKED_LEN], mask.mask(cname));
                                at += 2 + MASKED_LEN;
                            }
                            // END and nulls to the next word, nothing else.
                            let end = (at + 1).div_ceil(4) * 4;
                            assert!(got[at..end].iter().all(|b| *b == 0), "case {case}");
                            at = end;
                        }
                        assert_eq!(at, got.len(), "case {case}: nothing after the chunks");
                    }
                }
            }
        }
    }

    #[test]
    fn random_corruptions_are_refused_or_come_out_well_formed() {
        let mask = CnameMask::new();
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let (mut packet, _) = compound(&mut rng);
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(packet.len() as u64);
                packet[at] = rng.next() as u8;
            }
            packet.truncate(packet.len() - rng.below(3).min(packet.len()));
            if hide_sdes(&packet, &mask, &mut out).is_ok() {
                packets(&out);
            }
        }
    }
}
