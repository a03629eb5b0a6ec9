//! Hash maps keyed by numbers the SBC counts itself.
//!
//! Transaction, call and stream ids are counters the SBC assigns, and no
//! peer chooses one, so the standard hasher's defence against keys chosen
//! to collide (SipHash with random keys) buys nothing on them. [`IdHasher`]
//! is one multiplication per word instead: for consecutive ids it fills a
//! table's buckets without a collision, since the low bits of `id * odd`
//! are a bijection of the id's low bits, and the top bits hashbrown keeps
//! as a tag are well mixed by the carry. Keys a peer writes (Call-IDs,
//! branches, tags, addresses) stay on the standard hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by ids the SBC counts (see the module docs).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Odd, with its bits spread over the word (2^64 divided by the golden
/// ratio, made odd).
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// Multiply-and-fold hashing of machine words; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(SPREAD);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hash};

    use super::*;

    fn hash<T: Hash>(value: T) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(value)
    }

    #[test]
    fn consecutive_ids_take_distinct_buckets_and_distinct_tags() {
        // hashbrown: the bucket from the low bits, a 7-bit tag from the top.
        let buckets: HashSet<u64> = (1..=4096u64).map(|id| hash(id) & 4095).collect();
        assert_eq!(
            buckets.len(),
            4096,
            "no two of 4,096 ids share a bucket of 4,096"
        );
        let tags: HashSet<u64> = (1..=4096u64).map(|id| hash(id) >> 57).collect();
        assert_eq!(tags.len(), 128, "every tag is used");
    }

    #[test]
    fn the_variant_of_an_id_is_part_of_its_hash() {
        #[derive(Hash)]
        enum Id {
            Client(u64),
            Server(u64),
        }
        assert_ne!(hash(Id::Client(7)), hash(Id::Server(7)));
        assert_ne!(hash(b"ab".as_slice()), hash(b"ab\0".as_slice()));
    }

    #[test]
    fn an_id_map_behaves_as_a_map() {
        let mut map: IdMap<u64, u64> = IdMap::default();
        for id in 0..10_000 {
            map.insert(id, id * 2);
        }
        for id in (0..10_000).step_by(2) {
            map.remove(&id);
        }
        assert_eq!(map.len(), 5_000);
        assert!(
            (1..10_000)
                .step_by(2)
                .all(|id| map.get(&id) == Some(&(id * 2)))
        );
    }
}
