//! Identifiers the B2BUA invents: Call-IDs, tags and Via branches.
//!
//! The core never calls an RNG itself (sans-IO): it draws from an injected
//! [`IdSource`]. Tests use [`SequentialIds`] so every byte they see is
//! reproducible; the daemon uses [`RandomIds`], seeded from the OS, because
//! guessable tags and branches let an off-path attacker forge in-dialog
//! requests. No identifier carries a host part: a Call-ID of ours names no
//! address of ours (topology hiding).

use std::io::Read;

/// Where new identifiers come from. `Sync` so the core can be borrowed
/// across an await of the daemon's main loop, which runs as a task.
pub trait IdSource: Send + Sync {
    /// 16 fresh random bytes.
    fn next_bytes(&mut self) -> [u8; 16];

    /// A Call-ID for a new leg: 32 hex digits, no host part.
    fn call_id(&mut self) -> String {
        hex(&self.next_bytes())
    }

    /// A From/To tag: 16 hex digits.
    fn tag(&mut self) -> String {
        hex(&self.next_bytes()[..8])
    }

    /// A Via branch with the RFC 3261 magic cookie.
    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", hex(&self.next_bytes()[..12]))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Predictable identifiers for tests: a counter, spread over the bytes.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: u64,
}

impl IdSource for SequentialIds {
    fn next_bytes(&mut self) -> [u8; 16] {
        self.next += 1;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next.to_be_bytes());
        out[8..].copy_from_slice(&self.next.to_be_bytes());
        out
    }
}

/// Unpredictable identifiers: a xoshiro256** generator seeded from
/// `/dev/urandom` (falling back to the process's hash-map keys, which the
/// standard library itself seeds from the OS).
#[derive(Debug)]
pub struct RandomIds {
    state: [u64; 4],
}

impl RandomIds {
    /// Seeds from the operating system.
    pub fn from_os() -> Self {
        let mut seed = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        if read.is_err() {
            use std::hash::{BuildHasher, Hasher};
            for chunk in seed.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(chunk.as_ptr() as usize);
                chunk.copy_from_slice(&h.finish().to_le_bytes());
            }
        }
        let mut state = [0u64; 4];
        for (word, bytes) in state.iter_mut().zip(seed.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            *word = u64::from_le_bytes(b);
        }
        if state == [0; 4] {
            state[0] = 1; // xoshiro must not start from all zeros
        }
        Self { state }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl IdSource for RandomIds {
    fn next_bytes(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_have_the_right_shape_and_no_host() {
        let mut ids = RandomIds::from_os();
        let call_id = ids.call_id();
        assert_eq!(call_id.len(), 32);
        assert!(call_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ids.branch().starts_with("z9hG4bK"));
        assert_eq!(ids.tag().len(), 16);
        let a = ids.call_id();
        assert_ne!(a, ids.call_id(), "fresh every time");
    }

    #[test]
    fn sequential_ids_are_reproducible() {
        let (mut a, mut b) = (SequentialIds::default(), SequentialIds::default());
        assert_eq!(a.call_id(), b.call_id());
        assert_eq!(a.branch(), b.branch());
    }
}
