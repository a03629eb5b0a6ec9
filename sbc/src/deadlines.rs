//! Pending deadlines of a protocol engine, taken earliest first, in O(1).
//!
//! The engines of this crate arm their timers as `now + d` for a handful of
//! distances `d` that configuration fixes: T1 and its doublings up to T2,
//! T4, 64*T1, the 100 Trying delay. Deadlines filed at one distance arrive
//! in order as `now` advances, so [`Deadlines`] keeps one FIFO per distance:
//! filing is a push at the back of its FIFO, and the earliest deadline is
//! the least of a few fronts.
//!
//! A binary heap over the same deadlines costs O(log n) a step, and once it
//! holds the 590,000 deadlines of a node at 2,000 calls a second (four
//! transactions a call, each lingering 32 s after it ends, some filed twice)
//! most of those steps are cache misses: the heap's `pop` was the core's
//! hottest function in the steady state.
//!
//! Order never depends on that pattern. A deadline filed out of order (a
//! tie at one instant with a smaller item, a `now` that went back, or more
//! distinct distances than [`MAX_RUNS`]) is inserted in its place at the
//! cost of a shift, and entries come out in exactly the order of a
//! `BinaryHeap<Reverse<(Instant, T)>>`: by instant, then by item.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The most FIFOs kept. Past it, a deadline at a new distance joins the
/// FIFO of the nearest one (sorted in, so still in order).
pub const MAX_RUNS: usize = 32;

/// Pending deadlines with an item each; see the module docs.
#[derive(Debug)]
pub struct Deadlines<T> {
    runs: Vec<Run<T>>,
    len: usize,
}

/// The deadlines filed at one distance, sorted by `(instant, item)`.
#[derive(Debug)]
struct Run<T> {
    after: Duration,
    queue: VecDeque<(Instant, T)>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            runs: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Copy + Ord> Deadlines<T> {
    /// No deadlines.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files `item` to come out at `at`; `now` is when it is filed (only the
    /// distance `at - now` is used, to pick a FIFO).
    pub fn push(&mut self, now: Instant, at: Instant, item: T) {
        let after = at.saturating_duration_since(now);
        let run = self.run_for(after);
        let queue = &mut self.runs[run].queue;
        let entry = (at, item);
        match queue.back() {
            Some(last) if *last > entry => {
                // Mostly a tie with the last one: two timers set at one
                // instant (a BYE answered and relayed in one step), the
                // later filed with the smaller item. Only search further
                // back when it is more.
                let back = queue.len() - 1;
                let index = if back == 0 || queue[back - 1] <= entry {
                    back
                } else {
                    queue.partition_point(|e| *e <= entry)
                };
                queue.insert(index, entry);
            }
            _ => queue.push_back(entry),
        }
        self.len += 1;
    }

    /// The FIFO for deadlines `after` from now: its own, a new one, an
    /// emptied one taken over, or past [`MAX_RUNS`] the nearest.
    fn run_for(&mut self, after: Duration) -> usize {
        if let Some(i) = self.runs.iter().position(|r| r.after == after) {
            return i;
        }
        if self.runs.len() < MAX_RUNS {
            self.runs.push(Run {
                after,
                queue: VecDeque::new(),
            });
            return self.runs.len() - 1;
        }
        if let Some(i) = self.runs.iter().position(|r| r.queue.is_empty()) {
            self.runs[i].after = after;
            return i;
        }
        let distance = |r: &Run<T>| r.after.abs_diff(after);
        (0..self.runs.len())
            .min_by_key(|&i| distance(&self.runs[i]))
            .unwrap_or(0)
    }

    /// The FIFO whose front comes out next.
    fn first(&self) -> Option<usize> {
        self.runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.queue.front().map(|e| (e, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The earliest deadline and its item, left in place.
    pub fn peek(&self) -> Option<(Instant, T)> {
        self.first()
            .and_then(|i| self.runs[i].queue.front().copied())
    }

    /// Takes the earliest deadline and its item.
    pub fn pop(&mut self) -> Option<(Instant, T)> {
        let i = self.first()?;
        let entry = self.runs[i].queue.pop_front();
        self.len -= usize::from(entry.is_some());
        entry
    }

    /// Takes the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        let i = self.first()?;
        let queue = &mut self.runs[i].queue;
        if queue.front().is_some_and(|&(at, _)| at <= now) {
            self.len -= 1;
            queue.pop_front()
        } else {
            None
        }
    }

    /// Keeps only the entries `keep` accepts (order unchanged), and hands
    /// back the memory of FIFOs that emptied.
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, T) -> bool) {
        for run in &mut self.runs {
            run.queue.retain(|&(at, item)| keep(at, item));
            run.queue.shrink_to(run.queue.len() * 2);
        }
        self.len = self.runs.iter().map(|r| r.queue.len()).sum();
    }

    /// How many deadlines are filed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Any instant will do: only distances between them matter.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn deadlines_at_one_distance_share_a_fifo_and_come_out_in_order() {
        let t0 = start();
        let mut d = Deadlines::new();
        for i in 0..10u64 {
            let now = t0 + ms(i);
            d.push(now, now + ms(500), i);
            d.push(now, now + ms(32_000), 100 + i);
        }
        assert_eq!(d.runs.len(), 2);
        assert_eq!(d.len(), 20);
        assert_eq!(d.pop_due(t0 + ms(499)), None);
        let due: Vec<u64> = std::iter::from_fn(|| d.pop_due(t0 + ms(505)))
            .map(|(_, i)| i)
            .collect();
        assert_eq!(due, [0, 1, 2, 3, 4, 5]);
        assert_eq!(d.peek(), Some((t0 + ms(506), 6)));
        assert_eq!(d.len(), 14);
    }

    #[test]
    fn a_deadline_filed_out_of_order_is_sorted_in() {
        let t0 = start();
        let mut d = Deadlines::new();
        d.push(t0 + ms(10), t0 + ms(510), 1u32);
        // A clock that went back: same distance, earlier instant.
        d.push(t0, t0 + ms(500), 2);
        // Same instant, smaller item: the heap's tie-break.
        d.push(t0 + ms(10), t0 + ms(510), 0);
        let order: Vec<u32> = std::iter::from_fn(|| d.pop()).map(|(_, i)| i).collect();
        assert_eq!(order, [2, 0, 1]);
        assert!(d.is_empty());
    }

    #[test]
    fn past_the_cap_a_new_distance_joins_the_nearest_fifo_or_an_empty_one() {
        let t0 = start();
        let mut d = Deadlines::new();
        for i in 0..MAX_RUNS as u64 {
            d.push(t0, t0 + ms(1000 * (i + 1)), i);
        }
        d.push(t0, t0 + ms(1400), 99);
        assert_eq!(d.runs.len(), MAX_RUNS);
        let first_two: Vec<u64> = std::iter::from_fn(|| d.pop())
            .take(3)
            .map(|(_, i)| i)
            .collect();
        assert_eq!(first_two, [0, 99, 1]);
        // The 1 s FIFO is empty now: a new distance takes it over.
        d.push(t0, t0 + ms(1), 7);
        assert_eq!(d.runs.len(), MAX_RUNS);
        assert_eq!(d.pop(), Some((t0 + ms(1), 7)));
    }

    #[test]
    fn retain_drops_what_it_rejects_and_keeps_order() {
        let t0 = start();
        let mut d = Deadlines::new();
        for i in 0..100u32 {
            d.push(t0, t0 + ms(u64::from(i % 7) * 10), i);
        }
        d.retain(|_, i| i % 3 == 0);
        assert_eq!(d.len(), 34);
        let out: Vec<(Instant, u32)> = std::iter::from_fn(|| d.pop()).collect();
        assert_eq!(out.len(), 34);
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
        assert!(out.iter().all(|(_, i)| i % 3 == 0));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Advance the clock, then file at `now + distances[d]`.
        Push {
            advance: u64,
            d: usize,
            item: u8,
        },
        /// A clock that went back this far, then a push.
        PushBack {
            back: u64,
            d: usize,
            item: u8,
        },
        Pop,
        PopDue {
            advance: u64,
        },
        Retain {
            modulo: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..50u64, 0..40usize, any::<u8>())
                .prop_map(|(advance, d, item)| Op::Push { advance, d, item }),
            1 => (0..50u64, 0..40usize, any::<u8>())
                .prop_map(|(back, d, item)| Op::PushBack { back, d, item }),
            2 => Just(Op::Pop),
            2 => (0..200u64).prop_map(|advance| Op::PopDue { advance }),
            1 => (2..5u8).prop_map(|modulo| Op::Retain { modulo }),
        ]
    }

    proptest! {
        /// Whatever is filed, in whatever order, comes out as from a
        /// binary heap: by instant, then by item. 40 distances exceed
        /// [`MAX_RUNS`], so the nearest-FIFO path is exercised too.
        #[test]
        fn comes_out_as_from_a_binary_heap(ops in proptest::collection::vec(op(), 1..400)) {
            let t0 = start() + ms(10_000);
            let distances: Vec<Duration> = (0..40u64).map(|i| ms(i * i * 3)).collect();
            let mut now = t0;
            let mut d = Deadlines::new();
            let mut heap = BinaryHeap::new();
            for op in ops {
                match op {
                    Op::Push { advance, d: k, item } => {
                        now += ms(advance);
                        d.push(now, now + distances[k], item);
                        heap.push(Reverse((now + distances[k], item)));
                    }
                    Op::PushBack { back, d: k, item } => {
                        let then = now - ms(back);
                        d.push(then, then + distances[k], item);
                        heap.push(Reverse((then + distances[k], item)));
                    }
                    Op::Pop => {
                        prop_assert_eq!(d.pop(), heap.pop().map(|Reverse(e)| e));
                    }
                    Op::PopDue { advance } => {
                        now += ms(advance);
                        loop {
                            let want = heap.peek().filter(|Reverse((at, _))| *at <= now).copied();
                            let got = d.pop_due(now);
                            prop_assert_eq!(got, want.map(|Reverse(e)| e));
                            if want.is_none() {
                                break;
                            }
                            heap.pop();
                        }
                    }
                    Op::Retain { modulo } => {
                        d.retain(|_, item| item % modulo != 0);
                        heap.retain(|Reverse((_, item))| item % modulo != 0);
                    }
                }
                prop_assert_eq!(d.len(), heap.len());
                prop_assert_eq!(d.peek(), heap.peek().map(|Reverse(e)| *e));
            }
        }
    }
}
