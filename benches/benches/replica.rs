//! What call replication (`[cluster]`, a pair) costs the call core:
//! `cargo bench -p benches --bench replica`.
//!
//! Through the call core alone (`sbc::harness`: virtual clock, media
//! anchored at once), in alternating rounds, `REPLICA_BENCH_CALLS` calls
//! (default 20,000) each placed, answered and hung up by the caller:
//!
//! - without replication: the baseline;
//! - with it: every record the core writes (at the answer; the end is a
//!   number) serialized to JSON as the writer sends it to Redis.
//!
//! and, once, the takeover: a fresh core adopting the answered records of
//! up to 5,000 held calls (parsed from JSON, as the mirror holds them). It prints CPU
//! time per call (this thread's, from `/proc/thread-self`) for each, the
//! ratio with/without (the target: a few percent), the record's size, and
//! the time to adopt a call. Redis itself is not part of it: its round
//! trips run on the writer's task, batched, off the call path. Under
//! `cargo test --benches` it runs 500 calls so the harness keeps working.

use std::time::Duration;

use sbc::b2bua::replica::CallRecord;
use sbc::harness::{CALLER, PBX, Sim, pick};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This thread's CPU time (user + system), from `/proc/thread-self/stat`.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based): 11 and 12 here.
    let hz = 100;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

/// `calls` calls through `sim`: placed, answered, hung up by the caller.
/// With `serialize`, each record written is turned into JSON; returns the
/// JSON sizes.
fn run(sim: &mut Sim, calls: u32, first: u32, serialize: bool) -> Vec<usize> {
    let mut sizes = Vec::new();
    for n in first..first + calls {
        let held = sim.call(n);
        // The caller's BYE is answered at once and crosses to the callee.
        let (to_caller, to_callee): (Vec<_>, Vec<_>) = sim
            .caller_request(&held, "BYE", 2, None)
            .into_iter()
            .partition(|(at, _)| at.to_string() == CALLER);
        drop(pick(to_caller, CALLER, "200"));
        let bye = pick(to_callee, PBX, "BYE");
        drop(sim.callee_answers(&bye, "200 OK", None));
        for record in sim.records.drain(..) {
            if serialize {
                sizes.push(
                    serde_json::to_vec(&record)
                        .expect("a record serializes")
                        .len(),
                );
            }
        }
    }
    sizes
}

fn main() {
    let quick = std::env::args()
        .any(|a| a == "--bench")
        .then_some(())
        .is_none();
    let calls = if quick {
        500
    } else {
        env_or("REPLICA_BENCH_CALLS", 20_000) as u32
    };
    let rounds = if quick {
        1
    } else {
        env_or("REPLICA_BENCH_ROUNDS", 3)
    };
    let mut plain = Vec::new();
    let mut replicated = Vec::new();
    let mut sizes = Vec::new();
    for round in 0..rounds {
        let first = (round as u32) * calls;
        // Alternate which goes first: the machine is shared and noisy.
        for with in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let mut sim = if with {
                Sim::new().replicating()
            } else {
                Sim::new()
            };
            let start = thread_cpu();
            let s = run(&mut sim, calls, first, with);
            let per_call = (thread_cpu() - start) / calls;
            if with {
                replicated.push(per_call);
                sizes = s;
            } else {
                plain.push(per_call);
            }
        }
    }
    plain.sort();
    replicated.sort();
    let (p, r) = (plain[plain.len() / 2], replicated[replicated.len() / 2]);

    // The takeover: the records of answered calls, as JSON, adopted by a
    // fresh core (at most 5,000 held: the harness's configuration admits
    // 10,000 calls).
    let held = calls.min(5_000);
    let mut active = Sim::new().replicating();
    for n in 0..held {
        drop(active.call(n));
    }
    let json: Vec<Vec<u8>> = active
        .records
        .drain(..)
        .map(|r| serde_json::to_vec(&r).expect("a record serializes"))
        .collect();
    let mut taker = Sim::new().replicating();
    let start = thread_cpu();
    let mut adopted = 0u32;
    for bytes in &json {
        let record: CallRecord = serde_json::from_slice(bytes).expect("a record parses");
        if taker
            .core
            .adopt(taker.now, &record, &|_| Some((0, 1)))
            .is_ok()
        {
            adopted += 1;
        }
    }
    drop(taker.settle());
    let adopt = (thread_cpu() - start) / held.max(1);
    assert_eq!(adopted, held, "every answered call adopted");
    assert_eq!(taker.core.active_calls(), held as usize);

    sizes.sort_unstable();
    let size = sizes.get(sizes.len() / 2).copied().unwrap_or(0);
    println!(
        "call replication, {calls} calls x {rounds} rounds (CPU of the core's thread per call, medians):"
    );
    println!("| | per call | ratio |");
    println!("| --- | --- | --- |");
    println!(
        "| without replication | {:.1} us | 1.00 |",
        p.as_secs_f64() * 1e6
    );
    println!(
        "| with replication (records built and serialized) | {:.1} us | {:.2} |",
        r.as_secs_f64() * 1e6,
        r.as_secs_f64() / p.as_secs_f64().max(1e-9)
    );
    println!(
        "| takeover: parse and adopt an answered call | {:.1} us | {:.2} |",
        adopt.as_secs_f64() * 1e6,
        adopt.as_secs_f64() / p.as_secs_f64().max(1e-9)
    );
    println!("record size (JSON, median): {size} bytes");
}
