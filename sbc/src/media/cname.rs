//! The CNAME a side sees instead of the other side's.
//!
//! An RTCP CNAME (RFC 3550 §6.5.1) is usually `user@host`, often the
//! endpoint's private address, and it travels twice: in SDP `a=ssrc:<ssrc>
//! cname:<value>` (RFC 5576) and in every RTCP SDES packet. Topology hiding
//! replaces it in both places with the same stand-in, so an endpoint that
//! matches SDP SSRCs to RTCP sources still finds them equal.
//!
//! The stand-in is a keyed hash of the original: the SDP rewrite (call core)
//! and the RTCP rewrite (relay thread) compute it independently from a
//! shared [`CnameMask`], with no table between them, and a peer can't invert
//! it or test a guess without the per-process key.
//!
//! Owns: the mapping. May not: parse SDP or RTCP (its callers do).

use std::hash::{BuildHasher, RandomState};

/// Length of every stand-in CNAME, in bytes.
pub const MASKED_LEN: usize = 16;

/// A keyed map from original CNAMEs to stand-ins; clones share the key.
#[derive(Debug, Clone, Default)]
pub struct CnameMask {
    key: RandomState,
}

impl CnameMask {
    /// A mask with a fresh random key.
    pub fn new() -> CnameMask {
        CnameMask::default()
    }

    /// The stand-in for `original`: [`MASKED_LEN`] lowercase hex digits,
    /// the same for the same original under the same key.
    pub fn mask(&self, original: &[u8]) -> [u8; MASKED_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hash = self.key.hash_one(original);
        let mut out = [0u8; MASKED_LEN];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_original_gets_the_same_stand_in_under_one_key() {
        let mask = CnameMask::new();
        let shared = mask.clone();
        let a = mask.mask(b"alice@192.168.1.20");
        assert_eq!(a, shared.mask(b"alice@192.168.1.20"));
        assert_ne!(a, mask.mask(b"alice@192.168.1.21"));
        assert!(a.iter().all(|b| b.is_ascii_hexdigit()));
        assert!(!String::from_utf8_lossy(&a).contains("192.168"));
    }

    #[test]
    fn another_key_gives_another_stand_in() {
        let original = b"bob@10.0.0.7";
        assert_ne!(
            CnameMask::new().mask(original),
            CnameMask::new().mask(original)
        );
    }
}
