//! Test support: a virtual wire for deterministic simulations.
//!
//! One lossy, duplicating, reordering wire on a virtual clock, shared by the
//! transaction layer's simulations (`sip::transaction::tests`) and the
//! B2BUA's (`b2bua::tests::sim`). Packets are put on it in a direction `K`
//! (whatever the test uses to tell links apart) and come off in time order.
//! Faults are chosen two ways: by a packet's index among those sent in its
//! direction (0 = first), for sweeps such as "every single loss", or at
//! random from a seeded [`Lcg`], for chaos runs. Nothing reads a clock or
//! the OS's randomness: the same faults give the same run.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A 64-bit linear congruential generator (Knuth's MMIX constants): small,
/// seedable and the same on every platform.
#[derive(Clone, Debug)]
pub(crate) struct Lcg(u64);

impl Lcg {
    pub(crate) fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    /// The next 31 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random faults on every packet.
#[derive(Clone, Debug)]
pub(crate) struct Chaos {
    pub(crate) rng: Lcg,
    /// Percent of packets lost.
    pub(crate) loss: u64,
    /// Extra delay, uniform in `0..=max_delay_ms` (reorders packets).
    pub(crate) max_delay_ms: u64,
    /// Percent of packets delivered twice.
    pub(crate) duplicate: u64,
}

/// A packet on its way.
#[derive(Clone, Debug)]
pub(crate) struct Packet<K> {
    pub(crate) at: Instant,
    /// Order of sending: ties in `at` go in this order.
    pub(crate) seq: u64,
    pub(crate) dir: K,
    pub(crate) bytes: Vec<u8>,
    pub(crate) reliable: bool,
}

/// The wire. See the module docs.
pub(crate) struct Wire<K> {
    /// Every packet takes at least this long.
    pub(crate) latency: Duration,
    /// Lose the packet with this index in this direction.
    pub(crate) drop: HashSet<(K, usize)>,
    /// Lose every packet in this direction from this index on.
    pub(crate) drop_from: HashMap<K, usize>,
    /// Deliver this packet twice.
    pub(crate) duplicate: HashSet<(K, usize)>,
    /// Delay this packet by this much more than the latency.
    pub(crate) delay: HashMap<(K, usize), Duration>,
    pub(crate) chaos: Option<Chaos>,
    /// Every packet put on the wire, lost ones too: when and which way.
    pub(crate) log: Vec<(Instant, K, Vec<u8>)>,
    in_flight: Vec<Packet<K>>,
    seq: u64,
    sent: HashMap<K, usize>,
}

impl<K: Copy + Eq + Hash> Wire<K> {
    pub(crate) fn new(latency: Duration) -> Wire<K> {
        Wire {
            latency,
            drop: HashSet::new(),
            drop_from: HashMap::new(),
            duplicate: HashSet::new(),
            delay: HashMap::new(),
            chaos: None,
            log: Vec::new(),
            in_flight: Vec::new(),
            seq: 0,
            sent: HashMap::new(),
        }
    }

    /// Puts `bytes` on the wire at `now`, going `dir`; returns the packet's
    /// index in that direction.
    pub(crate) fn put(&mut self, now: Instant, dir: K, bytes: Vec<u8>, reliable: bool) -> usize {
        let n = self.sent.entry(dir).or_default();
        let index = *n;
        *n += 1;
        self.log.push((now, dir, bytes.clone()));
        let lost = self.drop.contains(&(dir, index))
            || self.drop_from.get(&dir).is_some_and(|&from| index >= from);
        let mut jitter = Duration::ZERO;
        let mut copies = if self.duplicate.contains(&(dir, index)) {
            2
        } else {
            1
        };
        if let Some(chaos) = self.chaos.as_mut() {
            // Reliable transports neither lose nor duplicate.
            if chaos.rng.below(100) < chaos.loss && !reliable {
                return index;
            }
            jitter = Duration::from_millis(chaos.rng.below(chaos.max_delay_ms + 1));
            if chaos.duplicate > 0 && chaos.rng.below(100) < chaos.duplicate && !reliable {
                copies = 2;
            }
        }
        if lost {
            return index;
        }
        let at = now
            + self.latency
            + jitter
            + self.delay.get(&(dir, index)).copied().unwrap_or_default();
        for _ in 0..copies {
            self.seq += 1;
            self.in_flight.push(Packet {
                at,
                seq: self.seq,
                dir,
                bytes: bytes.clone(),
                reliable,
            });
        }
        index
    }

    /// When the next packet arrives.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.in_flight.iter().map(|p| p.at).min()
    }

    /// The next packet due by `now`, if any (earliest first, then in the
    /// order sent).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Packet<K>> {
        let (i, _) = self
            .in_flight
            .iter()
            .enumerate()
            .filter(|(_, p)| p.at <= now)
            .min_by_key(|(_, p)| (p.at, p.seq))?;
        Some(self.in_flight.remove(i))
    }
}
