//! The reserve of pre-bound media endpoints (pure bookkeeping).
//!
//! Owns: which anchored endpoints (an RTP/RTCP port pair, sockets already
//! bound by a relay thread) are set aside for new streams, per relay thread
//! ("lane") and media address, how many more were asked for, and when to
//! ask again.
//!
//! Why: a new stream used to wait for a round trip to the relay thread that
//! binds its ports (`Allocate` -> bind -> `Allocated`), and under load that
//! thread is not always on a CPU when the INVITE needs it. With endpoints
//! bound ahead of time, the shell answers the core's allocation at once and
//! tells the relay which reserved endpoints the stream took; the relay
//! binds replacements in the background. When the reserve has nothing for
//! a leg, the allocation takes the round trip as before (a miss).
//!
//! May not: do IO or read a clock. The IO shell asks the relay for the
//! endpoints [`Reserve::wanted`] lists, feeds back what the relay bound
//! ([`Reserve::filled`]), and gives back whatever a call returns of this
//! type. An endpoint is owned by exactly one of: the relay's reserve (bound,
//! its ports leased from the pool, no stream), this bookkeeping's copy of
//! it (the same endpoint, named), or a stream (after a claim). A standby
//! node runs no relay, so nothing is asked for or bound there.
//!
//! Every endpoint is a pair (RFC 3550 §11): the core offers a pair on every
//! leg; a muxed leg allocates by the round trip.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::command::LocalEndpoint;

/// Endpoints kept ready per media address, over all relay threads, by
/// default: at 2,000 calls a second that is 8 ms of new calls, while a
/// refill takes one relay turn.
pub const DEFAULT_PER_ADDRESS: usize = 16;

/// How long a lane and address that could not be filled (ports exhausted,
/// a bind failed, the relay's queue full) waits before it is asked again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Slot {
    /// Bound and unclaimed, oldest first.
    ready: VecDeque<LocalEndpoint>,
    /// Asked of the relay and not answered yet.
    asked: usize,
    /// Not asked again before this (the last fill came up short).
    retry_at: Option<Instant>,
}

/// One allocation's claim on the reserve: per leg (A, B), the endpoint it
/// took, if the reserve had one.
pub type Claim = [Option<LocalEndpoint>; 2];

/// The reserve of pre-bound endpoints, as the call side sees it.
#[derive(Debug)]
pub struct Reserve {
    lanes: usize,
    per_lane: usize,
    /// By (lane, address); an address is here only while configured.
    slots: HashMap<(usize, IpAddr), Slot>,
    /// Allocations that took the round trip for at least one leg.
    misses: u64,
    /// Something changed since [`wanted`](Self::wanted) last looked.
    dirty: bool,
    /// The earliest pause that ends, if any.
    next_retry: Option<Instant>,
}

impl Reserve {
    /// A reserve of about `per_address` endpoints per media address, shared
    /// among `lanes` relay threads (at least one each), for `addresses`.
    /// `per_address` 0 turns it off: every allocation takes the round trip.
    pub fn new(lanes: usize, per_address: usize, addresses: &[IpAddr]) -> Reserve {
        let lanes = lanes.max(1);
        let per_lane = if per_address == 0 {
            0
        } else {
            per_address.div_ceil(lanes)
        };
        let mut reserve = Reserve {
            lanes,
            per_lane,
            slots: HashMap::new(),
            misses: 0,
            dirty: true,
            next_retry: None,
        };
        reserve.set_addresses(addresses);
        reserve
    }

    /// The most endpoints this reserve holds or asks for at once (each is
    /// two sockets), for `addresses` media addresses.
    pub fn capacity(&self, addresses: usize) -> usize {
        self.per_lane * self.lanes * addresses
    }

    /// The media addresses in use changed (a reload): addresses no longer
    /// configured lose their reserve, and the endpoints returned, by lane,
    /// must go back to the relay ([`give back`](Self::filled) also returns
    /// late fills for them). New addresses are filled from now on.
    pub fn set_addresses(&mut self, addresses: &[IpAddr]) -> Vec<(usize, LocalEndpoint)> {
        let mut dropped = Vec::new();
        self.slots.retain(|(lane, ip), slot| {
            let keep = addresses.contains(ip);
            if !keep {
                dropped.extend(slot.ready.drain(..).map(|e| (*lane, e)));
            }
            keep
        });
        for &ip in addresses {
            for lane in 0..self.lanes {
                self.slots.entry((lane, ip)).or_default();
            }
        }
        self.dirty = true;
        dropped
    }

    /// What to ask the relay for now: (lane, address, count) per slot down
    /// to half its target or less, topped up to the target (in batches, so
    /// the relay thread is not woken for every call), counted as asked. A
    /// request the relay refused goes back with [`filled`](Self::filled) and
    /// no endpoints.
    pub fn wanted(&mut self, now: Instant) -> Vec<(usize, IpAddr, usize)> {
        let mut asks = Vec::new();
        // Called after every batch of work: cheap when nothing changed.
        if !self.dirty && self.next_retry.is_none_or(|at| now < at) {
            return asks;
        }
        self.dirty = false;
        self.next_retry = None;
        for (&(lane, ip), slot) in &mut self.slots {
            if let Some(at) = slot.retry_at.filter(|at| now < *at) {
                self.next_retry = Some(self.next_retry.map_or(at, |next| next.min(at)));
                continue;
            }
            slot.retry_at = None;
            let have = slot.ready.len() + slot.asked;
            if have <= self.per_lane / 2 && have < self.per_lane {
                let count = self.per_lane - have;
                slot.asked += count;
                asks.push((lane, ip, count));
            }
        }
        asks.sort_unstable();
        asks
    }

    /// The relay answered a request of `asked` endpoints on `lane` for `ip`
    /// with `endpoints`. Returns the ones nobody wants any more (the address
    /// left the configuration meanwhile), which must go back to the relay. A
    /// short answer pauses the slot for [`RETRY_AFTER`].
    pub fn filled(
        &mut self,
        now: Instant,
        lane: usize,
        ip: IpAddr,
        asked: usize,
        endpoints: Vec<LocalEndpoint>,
    ) -> Vec<LocalEndpoint> {
        let Some(slot) = self.slots.get_mut(&(lane, ip)) else {
            return endpoints;
        };
        slot.asked = slot.asked.saturating_sub(asked);
        if endpoints.len() < asked {
            let at = now + RETRY_AFTER;
            slot.retry_at = Some(at);
            self.next_retry = Some(self.next_retry.map_or(at, |next| next.min(at)));
        }
        slot.ready.extend(endpoints);
        self.dirty = true;
        Vec::new()
    }

    /// Takes, for a stream on `lane` whose legs anchor on `ips` (A, B), one
    /// ready endpoint per leg where there is one. A leg left `None` is
    /// allocated by the relay (the round trip); such a claim counts as a
    /// miss.
    pub fn claim(&mut self, lane: usize, ips: [IpAddr; 2]) -> Claim {
        let mut claim: Claim = [None, None];
        for (leg, ip) in ips.into_iter().enumerate() {
            claim[leg] = self
                .slots
                .get_mut(&(lane, ip))
                .and_then(|slot| slot.ready.pop_front());
        }
        if claim.iter().any(Option::is_none) {
            self.misses += 1;
        }
        self.dirty |= claim.iter().any(Option::is_some);
        claim
    }

    /// Puts back what a claim took, when the allocation could not be sent
    /// after all (the relay's queue was full): the relay still holds them.
    pub fn unclaim(&mut self, lane: usize, claim: Claim) {
        for endpoint in claim.into_iter().flatten() {
            if let Some(slot) = self.slots.get_mut(&(lane, endpoint.rtp.ip())) {
                slot.ready.push_front(endpoint);
            }
        }
    }

    /// Endpoints ready for `ip`, over every lane.
    pub fn ready(&self, ip: IpAddr) -> usize {
        self.slots
            .iter()
            .filter(|((_, addr), _)| *addr == ip)
            .map(|(_, slot)| slot.ready.len())
            .sum()
    }

    /// Allocations so far that found no ready endpoint for some leg.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Every endpoint held, by lane (at shutdown, or to empty it).
    pub fn drain(&mut self) -> Vec<(usize, LocalEndpoint)> {
        let mut all = Vec::new();
        for (&(lane, _), slot) in &mut self.slots {
            all.extend(slot.ready.drain(..).map(|e| (lane, e)));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn endpoint(addr: IpAddr, port: u16) -> LocalEndpoint {
        LocalEndpoint {
            rtp: SocketAddr::new(addr, port),
            rtcp: Some(SocketAddr::new(addr, port + 1)),
        }
    }

    #[allow(clippy::disallowed_methods)] // a start for virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn asks_up_to_the_target_per_lane_and_address_and_not_twice() {
        let now = t0();
        let mut r = Reserve::new(2, 5, &[ip(1), ip(2)]);
        assert_eq!(r.capacity(2), 12, "5 over 2 lanes rounds up to 3 each");
        let asks = r.wanted(now);
        assert_eq!(
            asks,
            vec![(0, ip(1), 3), (0, ip(2), 3), (1, ip(1), 3), (1, ip(2), 3)]
        );
        assert!(r.wanted(now).is_empty(), "asked already: nothing more");
        let back = r.filled(now, 0, ip(1), 3, vec![endpoint(ip(1), 100)]);
        assert!(back.is_empty());
        assert_eq!(r.ready(ip(1)), 1);
        assert!(
            r.wanted(now).is_empty(),
            "a short fill waits before asking again"
        );
        assert_eq!(r.wanted(now + RETRY_AFTER), vec![(0, ip(1), 2)]);
    }

    #[test]
    fn a_claim_takes_from_the_streams_lane_and_refills() {
        let now = t0();
        let mut r = Reserve::new(2, 4, &[ip(1), ip(2)]);
        for (lane, addr, count) in r.wanted(now) {
            let port = 1000 * (lane as u16 + 1) + if addr == ip(1) { 0 } else { 100 };
            let endpoints = (0..count as u16)
                .map(|i| endpoint(addr, port + 2 * i))
                .collect();
            assert!(r.filled(now, lane, addr, count, endpoints).is_empty());
        }
        assert_eq!((r.ready(ip(1)), r.ready(ip(2))), (4, 4));
        let claim = r.claim(1, [ip(1), ip(2)]);
        assert_eq!(
            claim,
            [Some(endpoint(ip(1), 2000)), Some(endpoint(ip(2), 2100))],
            "lane 1's, oldest first"
        );
        assert_eq!(r.misses(), 0);
        assert_eq!(r.wanted(now), vec![(1, ip(1), 1), (1, ip(2), 1)]);
        // Both legs on one address take two of its endpoints.
        let claim = r.claim(0, [ip(1), ip(1)]);
        assert_eq!(
            claim,
            [Some(endpoint(ip(1), 1000)), Some(endpoint(ip(1), 1002))]
        );
    }

    #[test]
    fn an_empty_reserve_falls_back_per_leg_and_counts_the_miss() {
        let now = t0();
        let mut r = Reserve::new(1, 1, &[ip(1), ip(2)]);
        let _ = r.wanted(now);
        r.filled(now, 0, ip(1), 1, vec![endpoint(ip(1), 100)]);
        r.filled(now, 0, ip(2), 1, Vec::new());
        let claim = r.claim(0, [ip(1), ip(2)]);
        assert_eq!(claim, [Some(endpoint(ip(1), 100)), None]);
        assert_eq!(r.misses(), 1);
        assert_eq!(r.claim(0, [ip(1), ip(2)]), [None, None]);
        assert_eq!(r.misses(), 2);
        assert_eq!(r.claim(0, [ip(3), ip(1)]), [None, None], "unknown address");
        // A claim that could not be sent goes back, first in line.
        r.unclaim(0, [Some(endpoint(ip(1), 100)), None]);
        assert_eq!(r.ready(ip(1)), 1);
        assert_eq!(r.claim(0, [ip(1), ip(1)])[0], Some(endpoint(ip(1), 100)));
    }

    #[test]
    fn a_reload_drops_the_reserve_of_a_removed_address_and_late_fills() {
        let now = t0();
        let mut r = Reserve::new(2, 2, &[ip(1), ip(2)]);
        let _ = r.wanted(now);
        r.filled(now, 0, ip(1), 1, vec![endpoint(ip(1), 100)]);
        r.filled(now, 1, ip(1), 1, vec![endpoint(ip(1), 200)]);
        r.filled(now, 0, ip(2), 1, vec![endpoint(ip(2), 300)]);
        let mut dropped = r.set_addresses(&[ip(2), ip(3)]);
        dropped.sort_by_key(|(lane, _)| *lane);
        assert_eq!(
            dropped,
            vec![(0, endpoint(ip(1), 100)), (1, endpoint(ip(1), 200))]
        );
        assert_eq!((r.ready(ip(1)), r.ready(ip(2))), (0, 1));
        // Lane 1's fill for ip 1 was under way: it goes back too.
        let late = r.filled(now, 1, ip(1), 0, vec![endpoint(ip(1), 202)]);
        assert_eq!(late, vec![endpoint(ip(1), 202)]);
        assert_eq!(
            r.wanted(now),
            vec![(0, ip(3), 1), (1, ip(3), 1)],
            "the new address is filled; lane 1's request for ip 2 is still under way"
        );
        let mut all = r.drain();
        all.sort_by_key(|(lane, _)| *lane);
        assert_eq!(all, vec![(0, endpoint(ip(2), 300))]);
        assert_eq!(r.ready(ip(2)), 0);
    }

    #[test]
    fn a_slot_is_topped_up_in_batches_once_half_empty() {
        let now = t0();
        let mut r = Reserve::new(1, 8, &[ip(1)]);
        assert_eq!(r.wanted(now), vec![(0, ip(1), 8)]);
        let endpoints = (0..8).map(|i| endpoint(ip(1), 100 + 2 * i)).collect();
        r.filled(now, 0, ip(1), 8, endpoints);
        for _ in 0..3 {
            assert!(r.claim(0, [ip(1), ip(1)]).iter().all(Option::is_some));
            if r.ready(ip(1)) > 4 {
                assert!(r.wanted(now).is_empty(), "{} ready", r.ready(ip(1)));
            }
        }
        assert_eq!(r.ready(ip(1)), 2);
        assert_eq!(r.wanted(now), vec![(0, ip(1), 6)]);
    }

    #[test]
    fn size_zero_asks_for_nothing() {
        let now = t0();
        let mut r = Reserve::new(4, 0, &[ip(1)]);
        assert!(r.wanted(now).is_empty());
        assert_eq!(r.claim(2, [ip(1), ip(1)]), [None, None]);
        assert_eq!(r.capacity(1), 0);
    }
}
