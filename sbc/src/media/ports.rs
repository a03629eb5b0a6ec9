//! Media port allocation per realm media address.
//!
//! Owns: which ports of each configured range are free, in use, or in
//! quarantine (released recently). A range is split into slots of an even RTP port and the odd
//! RTCP port above it (RFC 3550 §11); a muxed leg (RFC 5761) takes one port,
//! so two muxed legs can share a slot.
//!
//! May not: open sockets or read a clock. Every call that can free ports takes
//! `now`; the backend binds what it is handed and reports bind failures by
//! releasing the lease.
//!
//! Rules:
//! * Ports go out least recently released first: never-used and long-free
//!   ports, then, only when none is left, quarantined ports, oldest release
//!   first. The quarantine (`[media] port_quarantine_secs`, 30 s by default)
//!   is a preference, never a refusal: a port reused early gets late packets
//!   of its old call, which the new flow's latching drops (they come from the
//!   old peer, not the one the new call signaled). So allocation fails only
//!   when every port is in use, and the rate of short calls is bounded by
//!   the range over the call length, not over the quarantine.
//! * Allocation and release are O(1) amortised: free slots and free single
//!   ports are FIFO queues (so the least recently used port goes first), the
//!   quarantine is a FIFO queue ordered by expiry (one fixed period). Entries
//!   are validated when popped; a per-entry "listed" flag keeps each queue no
//!   longer than the range, so memory is bounded by the range size.
//! * Exhaustion (every port in use) is an error
//!   ([`MediaError::PortsExhausted`]) naming the address; the caller answers
//!   503 and counts it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::command::{MediaError, RtcpMode};

/// An inclusive range of media ports: `first` even, `last` odd, so it holds
/// whole RTP/RTCP slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The lowest port (even).
    pub first: u16,
    /// The highest port (odd).
    pub last: u16,
}

/// A port range that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PortRangeError {
    /// RTP ports are even (RFC 3550 §11); start the range on an even port.
    #[error("media port range must start on an even port, got {0}")]
    OddFirst(u16),
    /// The range must end on the RTCP port of its last slot; end it on an odd
    /// port.
    #[error("media port range must end on an odd port, got {0}")]
    EvenLast(u16),
    /// `last` is below `first`, or the range includes port 0.
    #[error("media port range {first}-{last} is empty or includes port 0")]
    Empty {
        /// The first port.
        first: u16,
        /// The last port.
        last: u16,
    },
}

impl PortRange {
    /// A checked range.
    pub fn new(first: u16, last: u16) -> Result<PortRange, PortRangeError> {
        if first == 0 || last < first {
            return Err(PortRangeError::Empty { first, last });
        }
        if !first.is_multiple_of(2) {
            return Err(PortRangeError::OddFirst(first));
        }
        if last.is_multiple_of(2) {
            return Err(PortRangeError::EvenLast(last));
        }
        Ok(PortRange { first, last })
    }

    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.last) - usize::from(self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Never true for a range built by [`PortRange::new`].
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }

    /// Share `k` of `n` near-equal shares of whole RTP/RTCP slots, in
    /// order (the relay threads' pools of one address never overlap);
    /// `None` for a share with no slot (more shares than slots).
    pub fn share(&self, k: usize, n: usize) -> Option<PortRange> {
        let n = n.max(1);
        let slots = self.len() / 2;
        let (from, to) = (slots * k / n, slots * (k + 1) / n);
        if k >= n || from == to {
            return None;
        }
        // Both fit in u16: they are within the range.
        let first = usize::from(self.first) + 2 * from;
        let last = usize::from(self.first) + 2 * to - 1;
        Some(PortRange {
            first: u16::try_from(first).ok()?,
            last: u16::try_from(last).ok()?,
        })
    }
}

/// Ports handed to one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// An even RTP port and `rtp + 1` for RTCP.
    Pair {
        /// The RTP port.
        rtp: u16,
    },
    /// One port for RTP and RTCP (RFC 5761).
    Mux {
        /// The port.
        port: u16,
    },
}

impl Lease {
    /// The RTP (or muxed) port.
    pub fn rtp(&self) -> u16 {
        match *self {
            Lease::Pair { rtp } => rtp,
            Lease::Mux { port } => port,
        }
    }

    /// The separate RTCP port, if any.
    pub fn rtcp(&self) -> Option<u16> {
        match *self {
            // The range ends on an odd port, so an even rtp < 65535.
            Lease::Pair { rtp } => rtp.checked_add(1),
            Lease::Mux { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    InUse,
    Quarantined,
}

/// The ports of one media address.
#[derive(Debug)]
pub struct PortPool {
    range: PortRange,
    quarantine_for: Duration,
    /// Indexed by `port - range.first`.
    state: Vec<State>,
    /// Slot indexes (`(port - first) / 2`) believed to have both ports free.
    free_slots: VecDeque<u32>,
    slot_listed: Vec<bool>,
    /// Port indexes believed free whose slot sibling is not.
    free_singles: VecDeque<u32>,
    single_listed: Vec<bool>,
    /// (expiry, port index), in expiry order since the period is fixed.
    quarantine: VecDeque<(Instant, u32)>,
    in_use: usize,
}

/// Port usage of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Ports handed out and not released.
    pub in_use: usize,
    /// Released ports still in their quarantine (handed out only when no
    /// other port is free).
    pub quarantined: usize,
    /// Ports in the range.
    pub total: usize,
}

impl PoolUsage {
    /// Ports not in use, quarantined ones included (they are handed out
    /// when nothing else is free). The unit is a port: a leg takes two (RTP
    /// and RTCP) or, muxed, one.
    pub fn free(&self) -> usize {
        self.total.saturating_sub(self.in_use)
    }
}

impl PortPool {
    /// A pool with every port of `range` free.
    pub fn new(range: PortRange, quarantine_for: Duration) -> PortPool {
        let ports = range.len();
        let slots = ports / 2;
        PortPool {
            range,
            quarantine_for,
            state: vec![State::Free; ports],
            free_slots: (0..slots).filter_map(|s| u32::try_from(s).ok()).collect(),
            slot_listed: vec![true; slots],
            free_singles: VecDeque::new(),
            single_listed: vec![false; ports],
            quarantine: VecDeque::new(),
            in_use: 0,
        }
    }

    /// Current usage (after expiring quarantine up to the last `now` seen).
    pub fn usage(&self) -> PoolUsage {
        PoolUsage {
            in_use: self.in_use,
            quarantined: self.quarantine.len(),
            total: self.state.len(),
        }
    }

    /// Hand out ports for one leg, or `None` when every port is in use.
    pub fn allocate(&mut self, now: Instant, mode: RtcpMode) -> Option<Lease> {
        self.expire(now);
        loop {
            if let Some(lease) = self.allocate_free(mode) {
                return Some(lease);
            }
            // Nothing free: end the oldest quarantine early and try again
            // (a slot frees when both its ports have come out).
            let (_, index) = self.quarantine.pop_front()?;
            self.make_free(index);
        }
    }

    fn allocate_free(&mut self, mode: RtcpMode) -> Option<Lease> {
        match mode {
            RtcpMode::Pair => {
                let slot = self.pop_free_slot()?;
                let even = slot * 2;
                self.take(even);
                self.take(even + 1);
                Some(Lease::Pair {
                    rtp: self.port(even),
                })
            }
            RtcpMode::Mux => {
                let index = match self.pop_free_single() {
                    Some(index) => index,
                    None => {
                        let slot = self.pop_free_slot()?;
                        slot * 2
                    }
                };
                self.take(index);
                // The sibling is free and listed nowhere (its slot entry, if
                // any, is stale now): offer it to the next muxed leg.
                let sibling = index ^ 1;
                if self.state_of(sibling) == State::Free {
                    self.list_single(sibling);
                }
                Some(Lease::Mux {
                    port: self.port(index),
                })
            }
        }
    }

    /// Return a lease; its ports are preferred last until the quarantine
    /// period is over.
    pub fn release(&mut self, now: Instant, lease: Lease) {
        self.expire(now);
        let until = now + self.quarantine_for;
        for port in [Some(lease.rtp()), lease.rtcp()].into_iter().flatten() {
            if let Some(index) = self.index(port)
                && self.state_of(index) == State::InUse
            {
                self.set_state(index, State::Quarantined);
                self.in_use -= 1;
                self.quarantine.push_back((until, index));
            }
        }
    }

    /// Return a lease that never carried a packet (e.g. the other leg's
    /// allocation failed): free at once, no quarantine.
    pub fn cancel(&mut self, lease: Lease) {
        for port in [Some(lease.rtp()), lease.rtcp()].into_iter().flatten() {
            if let Some(index) = self.index(port)
                && self.state_of(index) == State::InUse
            {
                self.in_use -= 1;
                self.make_free(index);
            }
        }
    }

    /// Marks `port` in use without a lease having been asked for (a port a
    /// previous process's flow still uses after a restart); returns whether
    /// it was free. Give it back with [`release`](Self::release) of
    /// `Lease::Mux { port }`.
    pub fn reserve(&mut self, port: u16) -> bool {
        match self.index(port) {
            Some(index) if self.state_of(index) == State::Free => {
                self.take(index);
                true
            }
            _ => false,
        }
    }

    /// When the next quarantine ends, if any port is in quarantine.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.quarantine.front().map(|&(until, _)| until)
    }

    /// Free every port whose quarantine ended at or before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(until, index)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.make_free(index);
        }
    }

    fn make_free(&mut self, index: u32) {
        self.set_state(index, State::Free);
        if self.state_of(index ^ 1) == State::Free {
            let slot = index / 2;
            if let Some(listed) = self.slot_listed.get_mut(slot as usize)
                && !*listed
            {
                *listed = true;
                self.free_slots.push_back(slot);
            }
        } else {
            self.list_single(index);
        }
    }

    fn pop_free_slot(&mut self) -> Option<u32> {
        while let Some(slot) = self.free_slots.pop_front() {
            if let Some(listed) = self.slot_listed.get_mut(slot as usize) {
                *listed = false;
            }
            if self.state_of(slot * 2) == State::Free && self.state_of(slot * 2 + 1) == State::Free
            {
                return Some(slot);
            }
        }
        None
    }

    fn pop_free_single(&mut self) -> Option<u32> {
        while let Some(index) = self.free_singles.pop_front() {
            if let Some(listed) = self.single_listed.get_mut(index as usize) {
                *listed = false;
            }
            if self.state_of(index) == State::Free {
                return Some(index);
            }
        }
        None
    }

    fn list_single(&mut self, index: u32) {
        if let Some(listed) = self.single_listed.get_mut(index as usize)
            && !*listed
        {
            *listed = true;
            self.free_singles.push_back(index);
        }
    }

    fn take(&mut self, index: u32) {
        self.set_state(index, State::InUse);
        self.in_use += 1;
    }

    fn state_of(&self, index: u32) -> State {
        // Out of range reads as "not free", so a slot is never half outside.
        self.state
            .get(index as usize)
            .copied()
            .unwrap_or(State::InUse)
    }

    fn set_state(&mut self, index: u32, state: State) {
        if let Some(s) = self.state.get_mut(index as usize) {
            *s = state;
        }
    }

    fn port(&self, index: u32) -> u16 {
        // index < range.len() <= 65536 and first + index <= last.
        self.range
            .first
            .saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
    }

    fn index(&self, port: u16) -> Option<u32> {
        (self.range.first..=self.range.last)
            .contains(&port)
            .then(|| u32::from(port - self.range.first))
    }
}

/// The pools of every realm media address.
#[derive(Debug)]
pub struct PortAllocator {
    pools: HashMap<IpAddr, PortPool>,
    quarantine_for: Duration,
}

impl PortAllocator {
    /// One pool per media address, all with the same quarantine period.
    pub fn new(
        ranges: impl IntoIterator<Item = (IpAddr, PortRange)>,
        quarantine_for: Duration,
    ) -> PortAllocator {
        let pools = ranges
            .into_iter()
            .map(|(ip, range)| (ip, PortPool::new(range, quarantine_for)))
            .collect();
        PortAllocator {
            pools,
            quarantine_for,
        }
    }

    /// Adds a pool for a media address a reload introduced. An address that
    /// already has one keeps it (and its leases); returns whether it was new.
    pub fn add_pool(&mut self, ip: IpAddr, range: PortRange) -> bool {
        if self.pools.contains_key(&ip) {
            return false;
        }
        self.pools
            .insert(ip, PortPool::new(range, self.quarantine_for));
        true
    }

    /// Ports for one leg on `ip`.
    pub fn allocate(
        &mut self,
        now: Instant,
        ip: IpAddr,
        mode: RtcpMode,
    ) -> Result<Lease, MediaError> {
        let pool = self
            .pools
            .get_mut(&ip)
            .ok_or(MediaError::UnknownAddress { addr: ip })?;
        pool.allocate(now, mode)
            .ok_or(MediaError::PortsExhausted { addr: ip })
    }

    /// Marks `port` of `ip` in use (see [`PortPool::reserve`]); whether it
    /// was free in a pool of this allocator.
    pub fn reserve(&mut self, ip: IpAddr, port: u16) -> bool {
        self.pools
            .get_mut(&ip)
            .is_some_and(|pool| pool.reserve(port))
    }

    /// Return a lease on `ip` (quarantined).
    pub fn release(&mut self, now: Instant, ip: IpAddr, lease: Lease) {
        if let Some(pool) = self.pools.get_mut(&ip) {
            pool.release(now, lease);
        }
    }

    /// Return a lease on `ip` that never carried traffic (freed at once).
    pub fn cancel(&mut self, ip: IpAddr, lease: Lease) {
        if let Some(pool) = self.pools.get_mut(&ip) {
            pool.cancel(lease);
        }
    }

    /// Usage of the pool of `ip`.
    pub fn usage(&self, ip: IpAddr) -> Option<PoolUsage> {
        self.pools.get(&ip).map(PortPool::usage)
    }

    /// Usage of every pool, in no particular order.
    pub fn usages(&self) -> impl Iterator<Item = (IpAddr, PoolUsage)> + '_ {
        self.pools.iter().map(|(ip, pool)| (*ip, pool.usage()))
    }

    /// Free the ports of every pool whose quarantine ended at or before
    /// `now` (allocation does it for its own pool; this keeps
    /// [`usage`](Self::usage) current for pools nobody allocates from).
    pub fn expire(&mut self, now: Instant) {
        for pool in self.pools.values_mut() {
            pool.expire(now);
        }
    }

    /// When the next quarantine of any pool ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.pools.values().filter_map(PortPool::next_expiry).min()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use super::*;

    const Q: Duration = Duration::from_secs(30);

    #[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
    fn t0() -> Instant {
        Instant::now()
    }

    fn pool(first: u16, last: u16) -> PortPool {
        PortPool::new(PortRange::new(first, last).expect("valid range"), Q)
    }

    #[test]
    fn range_validation_names_the_problem() {
        assert_eq!(
            PortRange::new(10001, 10003),
            Err(PortRangeError::OddFirst(10001))
        );
        assert_eq!(
            PortRange::new(10000, 10002),
            Err(PortRangeError::EvenLast(10002))
        );
        assert!(matches!(
            PortRange::new(10000, 9999),
            Err(PortRangeError::Empty { .. })
        ));
        assert!(matches!(
            PortRange::new(0, 9),
            Err(PortRangeError::Empty { .. })
        ));
        assert_eq!(PortRange::new(65534, 65535).map(|r| r.len()), Ok(2));
    }

    #[test]
    fn a_reserved_port_is_not_handed_out_until_released_and_quarantined() {
        let now = t0();
        let mut p = pool(20000, 20007);
        // A previous process's flow on 20002 (RTP of the second pair).
        assert!(p.reserve(20002));
        assert!(!p.reserve(20002), "reserved once");
        assert!(!p.reserve(30000), "outside the range");
        let mut handed = Vec::new();
        while let Some(lease) = p.allocate(now, RtcpMode::Pair) {
            handed.push(lease.rtp());
        }
        handed.sort_unstable();
        assert_eq!(
            handed,
            vec![20000, 20004, 20006],
            "the pair of 20002 stays out"
        );
        assert_eq!(p.usage().in_use, 7);
        // Given back, it goes through the quarantine like a released port.
        p.release(now, Lease::Mux { port: 20002 });
        assert_eq!(p.usage().quarantined, 1);
        let later = now + Duration::from_secs(60);
        p.expire(later);
        assert_eq!(
            p.allocate(later, RtcpMode::Pair).map(|l| l.rtp()),
            Some(20002)
        );
    }

    #[test]
    fn pairs_are_even_rtp_odd_rtcp_and_distinct() {
        let now = t0();
        let mut p = pool(20000, 20019);
        let mut seen = HashSet::new();
        for _ in 0..10 {
            let lease = p.allocate(now, RtcpMode::Pair).expect("a slot is free");
            assert_eq!(lease.rtp() % 2, 0, "RTP port {} must be even", lease.rtp());
            assert_eq!(lease.rtcp(), Some(lease.rtp() + 1));
            assert!(
                seen.insert(lease.rtp()),
                "port {} handed out twice",
                lease.rtp()
            );
        }
        assert_eq!(
            p.allocate(now, RtcpMode::Pair),
            None,
            "10 slots, 10 pairs: exhausted"
        );
        assert_eq!(p.usage().in_use, 20);
    }

    #[test]
    fn muxed_legs_take_one_port_each_and_share_slots() {
        let now = t0();
        let mut p = pool(20000, 20003);
        let ports: Vec<u16> = (0..4)
            .map(|_| {
                p.allocate(now, RtcpMode::Mux)
                    .expect("a port is free")
                    .rtp()
            })
            .collect();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(
            unique.len(),
            4,
            "four muxed legs on four distinct ports: {ports:?}"
        );
        assert_eq!(p.allocate(now, RtcpMode::Mux), None);
        assert!(ports.iter().all(|l| (20000..=20003).contains(l)));
    }

    #[test]
    fn a_half_used_slot_is_not_handed_out_as_a_pair() {
        let now = t0();
        let mut p = pool(20000, 20003);
        let mux = p.allocate(now, RtcpMode::Mux).expect("free");
        let pair = p
            .allocate(now, RtcpMode::Pair)
            .expect("the second slot is free");
        assert_ne!(
            pair.rtp() / 2,
            mux.rtp() / 2,
            "pair {pair:?} overlaps mux {mux:?}"
        );
        assert_eq!(
            p.allocate(now, RtcpMode::Pair),
            None,
            "only a single port is left"
        );
        let last = p
            .allocate(now, RtcpMode::Mux)
            .expect("the mux sibling is free");
        assert_eq!(last.rtp() / 2, mux.rtp() / 2);
    }

    #[test]
    fn quarantined_ports_go_out_only_when_nothing_else_is_free() {
        let now = t0();
        let mut p = pool(20000, 20003);
        let a = p.allocate(now, RtcpMode::Pair).expect("free");
        p.release(now, a);
        assert_eq!(p.usage().quarantined, 2);
        assert_eq!(p.usage().free(), 4, "quarantined ports can still be had");
        let b = p.allocate(now, RtcpMode::Pair).expect("the unused slot");
        assert_ne!(b, a, "the never-used slot goes first");
        assert_eq!(
            p.allocate(now, RtcpMode::Pair),
            Some(a),
            "then the quarantined one, rather than a refusal"
        );
        assert_eq!(p.usage().quarantined, 0);
        assert_eq!(p.allocate(now, RtcpMode::Mux), None, "every port in use");
        // Released ports come back in release order, quarantine or not.
        p.release(now, b);
        p.release(now + Duration::from_secs(1), a);
        assert_eq!(
            p.allocate(now + Duration::from_secs(2), RtcpMode::Pair),
            Some(b)
        );
        assert_eq!(p.allocate(now + Q, RtcpMode::Pair), Some(a));
    }

    #[test]
    fn free_ports_are_reused_least_recently_first() {
        let now = t0();
        let mut p = pool(20000, 20005);
        let a = p.allocate(now, RtcpMode::Pair).expect("free");
        p.release(now, a);
        let later = now + Q;
        let b = p.allocate(later, RtcpMode::Pair).expect("free");
        let c = p.allocate(later, RtcpMode::Pair).expect("free");
        assert_ne!(
            b, a,
            "never-used slots go before the one just out of quarantine"
        );
        assert_ne!(c, a);
        assert_eq!(p.allocate(later, RtcpMode::Pair), Some(a));
    }

    #[test]
    fn cancel_frees_at_once() {
        let now = t0();
        let mut p = pool(20000, 20001);
        let lease = p.allocate(now, RtcpMode::Pair).expect("free");
        p.cancel(lease);
        assert_eq!(p.allocate(now, RtcpMode::Pair), Some(lease));
    }

    #[test]
    fn releasing_twice_or_foreign_ports_changes_nothing() {
        let now = t0();
        let mut p = pool(20000, 20003);
        let lease = p.allocate(now, RtcpMode::Pair).expect("free");
        p.release(now, lease);
        p.release(now, lease);
        p.release(now, Lease::Pair { rtp: 40000 });
        p.cancel(Lease::Mux { port: 1 });
        assert_eq!(
            p.usage(),
            PoolUsage {
                in_use: 0,
                quarantined: 2,
                total: 4
            }
        );
    }

    #[test]
    fn queues_stay_bounded_under_churn() {
        let mut now = t0();
        let mut p = pool(20000, 20007);
        for round in 0..1000 {
            let mode = if round % 3 == 0 {
                RtcpMode::Pair
            } else {
                RtcpMode::Mux
            };
            let leases: Vec<Lease> = (0..3).filter_map(|_| p.allocate(now, mode)).collect();
            assert!(
                !leases.is_empty(),
                "round {round}: pool of 8 ports exhausted by 3 legs"
            );
            for lease in leases {
                p.release(now, lease);
            }
            now += Q;
            assert!(
                p.free_slots.len() <= 4 && p.free_singles.len() <= 8,
                "round {round}"
            );
        }
        assert_eq!(p.usage().in_use, 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(bool),
        Release(usize),
        Cancel(usize),
        Wait(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => any::<bool>().prop_map(Op::Allocate),
            3 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::Cancel),
            2 => (0u64..40).prop_map(Op::Wait),
        ]
    }

    proptest::proptest! {
        /// Whatever the sequence: no port is held twice, a released port is
        /// handed out before its quarantine ends only if, since its release,
        /// an allocation found no fitting port out of quarantine (pressure
        /// ends quarantines early, oldest first), allocation fails only when
        /// no fitting port is out of use, and the queues stay within the
        /// range.
        #[test]
        fn ports_are_never_shared_or_reused_early(ops in proptest::collection::vec(op(), 1..300)) {
            let start = t0();
            let mut now = start;
            let mut p = pool(30000, 30011);
            let mut held: Vec<Lease> = Vec::new();
            let mut released_at: HashMap<u16, Instant> = HashMap::new();
            // Quarantined ports an allocation under pressure may have freed.
            let mut pressed: HashSet<u16> = HashSet::new();
            for op in ops {
                match op {
                    Op::Allocate(mux) => {
                        let mode = if mux { RtcpMode::Mux } else { RtcpMode::Pair };
                        let in_use: HashSet<u16> =
                            held.iter().flat_map(|l| [Some(l.rtp()), l.rtcp()]).flatten().collect();
                        let rested = |port: u16| {
                            !in_use.contains(&port)
                                && released_at.get(&port).is_none_or(|&at| now >= at + Q)
                        };
                        let unused = |port: u16| !in_use.contains(&port);
                        let fits = |ok: &dyn Fn(u16) -> bool| match mode {
                            RtcpMode::Pair => (30000..=30011).step_by(2).any(|e| ok(e) && ok(e + 1)),
                            RtcpMode::Mux => (30000..=30011).any(ok),
                        };
                        let any_rested = fits(&rested);
                        if !any_rested {
                            pressed.extend(released_at.keys().copied().filter(|&port| !rested(port) && unused(port)));
                        }
                        match p.allocate(now, mode) {
                            Some(lease) => {
                                for port in [Some(lease.rtp()), lease.rtcp()].into_iter().flatten() {
                                    proptest::prop_assert!((30000..=30011).contains(&port));
                                    proptest::prop_assert!(!in_use.contains(&port), "{port} handed out twice");
                                    if let Some(&at) = released_at.get(&port) {
                                        proptest::prop_assert!(
                                            now >= at + Q || pressed.contains(&port),
                                            "{port} reused in quarantine without pressure"
                                        );
                                    }
                                }
                                held.push(lease);
                            }
                            None => {
                                proptest::prop_assert!(!fits(&unused), "refused {mode:?} with ports out of use");
                            }
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let lease = held.swap_remove(i % held.len());
                        p.release(now, lease);
                        for port in [Some(lease.rtp()), lease.rtcp()].into_iter().flatten() {
                            released_at.insert(port, now);
                            pressed.remove(&port);
                        }
                    }
                    Op::Cancel(i) if !held.is_empty() => {
                        let lease = held.swap_remove(i % held.len());
                        p.cancel(lease);
                    }
                    Op::Release(_) | Op::Cancel(_) => {}
                    Op::Wait(secs) => now += Duration::from_secs(secs),
                }
                proptest::prop_assert!(p.free_slots.len() <= 6 && p.free_singles.len() <= 12);
                proptest::prop_assert!(p.quarantine.len() <= 12);
            }
        }
    }

    #[test]
    fn allocator_routes_by_address_and_names_exhaustion() {
        let now = t0();
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
        let range = PortRange::new(30000, 30001).expect("valid");
        let mut alloc = PortAllocator::new([(a, range), (b, range)], Q);
        assert!(alloc.allocate(now, a, RtcpMode::Pair).is_ok());
        assert!(
            alloc.allocate(now, b, RtcpMode::Pair).is_ok(),
            "pools are per address"
        );
        assert_eq!(
            alloc.allocate(now, a, RtcpMode::Pair),
            Err(MediaError::PortsExhausted { addr: a })
        );
        let c = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12));
        assert_eq!(
            alloc.allocate(now, c, RtcpMode::Mux),
            Err(MediaError::UnknownAddress { addr: c })
        );
    }

    #[test]
    fn free_ports_leave_with_a_lease_and_return_after_the_quarantine() {
        let now = t0();
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
        let range = PortRange::new(30000, 30007).expect("valid");
        let mut alloc = PortAllocator::new([(a, range), (b, range)], Q);
        let free = |alloc: &PortAllocator, ip| alloc.usage(ip).map(|u| u.free());
        assert_eq!((free(&alloc, a), free(&alloc, b)), (Some(8), Some(8)));
        assert_eq!(alloc.next_expiry(), None);
        let pair = alloc.allocate(now, a, RtcpMode::Pair).expect("pair");
        let mux = alloc.allocate(now, a, RtcpMode::Mux).expect("mux");
        assert_eq!(free(&alloc, a), Some(5), "a pair takes two ports, mux one");
        assert_eq!(free(&alloc, b), Some(8), "pools are per address");
        alloc.release(now, a, pair);
        alloc.release(now + Duration::from_secs(1), a, mux);
        let quarantined = |alloc: &PortAllocator| alloc.usage(a).map(|u| u.quarantined);
        assert_eq!(free(&alloc, a), Some(8), "quarantined ports can be had");
        assert_eq!(quarantined(&alloc), Some(3));
        assert_eq!(alloc.next_expiry(), Some(now + Q));
        // Nobody allocates from `a`: the allocator-wide expiry ends them.
        alloc.expire(now + Q);
        assert_eq!(quarantined(&alloc), Some(1));
        assert_eq!(alloc.next_expiry(), Some(now + Q + Duration::from_secs(1)));
        alloc.expire(now + Q + Duration::from_secs(1));
        assert_eq!((quarantined(&alloc), alloc.next_expiry()), (Some(0), None));
        let mut usages: Vec<_> = alloc.usages().map(|(ip, u)| (ip, u.free())).collect();
        usages.sort();
        assert_eq!(usages, vec![(a, 8), (b, 8)]);
    }

    #[test]
    fn shares_cover_the_range_in_whole_slots_without_overlap() {
        for (first, last, n) in [
            (10_000, 10_999, 2),
            (10_000, 10_005, 4),
            (2, 65_535, 3),
            (30_000, 30_001, 1),
        ] {
            let range = PortRange::new(first, last).expect("range");
            let shares: Vec<PortRange> = (0..n).filter_map(|k| range.share(k, n)).collect();
            assert_eq!(shares.first().map(|s| s.first), Some(first));
            assert_eq!(shares.last().map(|s| s.last), Some(last));
            for pair in shares.windows(2) {
                assert_eq!(pair[0].last + 1, pair[1].first, "{shares:?}");
            }
            for s in &shares {
                PortRange::new(s.first, s.last).expect("each share is a valid range");
            }
            let sizes: Vec<usize> = shares.iter().map(PortRange::len).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 2), "{sizes:?}");
        }
        let one = PortRange::new(10_000, 10_001).expect("one slot");
        assert_eq!((one.share(0, 2), one.share(1, 2)), (None, Some(one)));
        assert_eq!(one.share(0, 0), Some(one), "no shares is one");
    }
}
