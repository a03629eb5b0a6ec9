//! The transaction layer's timers in a node's steady state:
//! `cargo bench -p benches --bench timers`.
//!
//! Files and fires the deadlines of calls arriving at 2,000 a second on a
//! virtual clock, in two structures, alternating rounds in the same run:
//!
//! - `binary heap`: `BinaryHeap<Reverse<(Instant, u64)>>`, what the
//!   transaction layer used before;
//! - `deadlines`: [`sbc::deadlines::Deadlines`], one FIFO per distance.
//!
//! A call files the ten deadlines the transaction layer files for a call of
//! the signaling bench (SIPp's `uac` and `uas`, 100 Trying at once, the
//! callee's BYE): the INVITE server's 100 Trying (200 ms) and timer L (32 s),
//! the INVITE client's A (500 ms), B and M (32 s), the BYE server's
//! abandonment (128 s) and J (32 s), the BYE client's E (500 ms), F (32 s)
//! and K (5 s). After a warm-up of `TIMERS_BENCH_WARMUP_SECS` virtual seconds
//! (default 300, past the longest deadline) about 590,000 are pending, as in
//! the daemon; each round then runs `TIMERS_BENCH_CALLS` calls (default
//! 200,000) and every deadline they make due. The report is nanoseconds per
//! call for each and the heap's time over the FIFOs'. Under `cargo test
//! --benches` it runs a few thousand calls, only to keep the harness working.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use benches::siplab::{env_or, now};
use sbc::deadlines::Deadlines;

/// The distances of one call's deadlines (see the module docs).
const PER_CALL_MS: [u64; 10] = [
    200, 32_000, 500, 32_000, 32_000, 128_000, 32_000, 500, 32_000, 5_000,
];

/// One call every 500 us: 2,000 a second.
const CALL_GAP: Duration = Duration::from_micros(500);

/// A timer structure as the transaction layer drives it.
trait Timers {
    fn file(&mut self, now: Instant, at: Instant, id: u64);
    /// Takes every deadline due at `now`; returns how many.
    fn fire(&mut self, now: Instant) -> usize;
    fn pending(&self) -> usize;
}

impl Timers for BinaryHeap<Reverse<(Instant, u64)>> {
    fn file(&mut self, _now: Instant, at: Instant, id: u64) {
        self.push(Reverse((at, id)));
    }

    fn fire(&mut self, now: Instant) -> usize {
        let mut fired = 0;
        while self.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            black_box(self.pop());
            fired += 1;
        }
        fired
    }

    fn pending(&self) -> usize {
        self.len()
    }
}

impl Timers for Deadlines<u64> {
    fn file(&mut self, now: Instant, at: Instant, id: u64) {
        self.push(now, at, id);
    }

    fn fire(&mut self, now: Instant) -> usize {
        let mut fired = 0;
        while let Some(due) = self.pop_due(now) {
            black_box(due);
            fired += 1;
        }
        fired
    }

    fn pending(&self) -> usize {
        self.len()
    }
}

/// A structure under test, its virtual clock and its next id.
struct Lane<T> {
    timers: T,
    clock: Instant,
    next: u64,
}

impl<T: Timers> Lane<T> {
    fn new(timers: T, start: Instant) -> Self {
        Lane {
            timers,
            clock: start,
            next: 0,
        }
    }

    /// Places `calls` calls; returns the deadlines that fired.
    fn run(&mut self, calls: u64) -> usize {
        let mut fired = 0;
        for _ in 0..calls {
            self.clock += CALL_GAP;
            for ms in PER_CALL_MS {
                self.next += 1;
                let at = self.clock + Duration::from_millis(ms);
                self.timers.file(self.clock, at, self.next);
            }
            fired += self.timers.fire(self.clock);
        }
        fired
    }
}

fn main() {
    // `cargo test --benches` passes no `--bench`: keep it to a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let (warmup, calls, rounds) = if full {
        (
            env_or("TIMERS_BENCH_WARMUP_SECS", 300),
            env_or("TIMERS_BENCH_CALLS", 200_000),
            env_or("TIMERS_BENCH_ROUNDS", 5).max(1),
        )
    } else {
        (2, 2_000, 1)
    };
    let start = now();
    let mut heap = Lane::new(BinaryHeap::new(), start);
    let mut fifos = Lane::new(Deadlines::new(), start);
    let warm_calls = warmup * 2_000;
    heap.run(warm_calls);
    fifos.run(warm_calls);
    assert_eq!(
        heap.timers.pending(),
        fifos.timers.pending(),
        "both hold the same deadlines"
    );
    println!(
        "timers: {} deadlines pending after {warmup} virtual seconds at 2,000 calls a second",
        heap.timers.pending()
    );
    let mut best = [f64::MAX; 2];
    for round in 1..=rounds {
        let mut times = [0.0; 2];
        let mut fired = [0; 2];
        for (i, time) in times.iter_mut().enumerate() {
            let begun = now();
            fired[i] = if i == 0 {
                heap.run(calls)
            } else {
                fifos.run(calls)
            };
            *time = begun.elapsed().as_secs_f64() * 1e9 / calls as f64;
        }
        assert_eq!(fired[0], fired[1], "both fire the same deadlines");
        println!(
            "round {round}: binary heap {:.0} ns a call, deadlines {:.0} ns a call ({} fired each)",
            times[0], times[1], fired[0]
        );
        best = [best[0].min(times[0]), best[1].min(times[1])];
    }
    println!(
        "best of {rounds}: binary heap {:.0} ns a call, deadlines {:.0} ns a call: the heap takes {:.1}x as long",
        best[0],
        best[1],
        best[0] / best[1]
    );
}
