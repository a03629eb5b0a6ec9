//! Held-call scale of the call core: `cargo bench -p benches --bench held`.
//!
//! Places `HELD_BENCH_CALLS` confirmed calls (default 100,000) through the
//! call core alone (`sbc::harness`: the core on a virtual clock, media
//! anchored at once by a stand-in backend, calls placed as SIPp's `uac` and
//! `uas` do), beside a baseline of 1,000 calls measured in the same run, and
//! reports:
//!
//! - process RSS per call once the calls' INVITE transactions are gone;
//! - idle cost: one `poll_timeout` + `handle_timeout` with nothing due, and
//!   one virtual minute with every call up (the timers must not scan the
//!   calls, so the big core costs what the small one does);
//! - in-dialog latency: a re-INVITE (hold, relayed and answered) and a BYE
//!   of sampled calls, p50 and p99, against the same on the baseline.
//!
//! The media relay's sockets are not part of it: a held call with media
//! also holds four UDP sockets (two ports per leg), and this machine's hard
//! limit of 20,000 open files stops the relay at about 4,500 calls; its own
//! memory per stream is in the relay bench's territory. Under `cargo test
//! --benches` it runs 2,000 calls so the harness keeps working.

use std::time::Duration;

use benches::siplab::{env_or, now};
use sbc::harness::{CALLER, CALLS_CONFIG, PBX, Sim, pick};

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

/// Port pairs of each media address in the bench's configuration.
const PAIRS: u32 = 29_000;

/// `CALLS_CONFIG` for `calls` calls: the widest port range, and as many
/// media addresses per realm as those calls' legs need (`more_addresses`).
fn config(calls: u32) -> String {
    let more = |base: &str| {
        (1..calls.div_ceil(PAIRS))
            .map(|i| format!("\"{base}.{}\"", 10 + i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    CALLS_CONFIG
        .replace(
            "max_calls = 10000",
            &format!("max_calls = {calls}\n[media]\nport_min = 6000\nport_max = 65535"),
        )
        .replace(
            r#"media = { address = "192.0.2.1" }"#,
            &format!(
                r#"media = {{ address = "192.0.2.1", more_addresses = [{}] }}"#,
                more("192.0.2")
            ),
        )
        .replace(
            r#"media = { address = "198.51.100.1" }"#,
            &format!(
                r#"media = {{ address = "198.51.100.1", more_addresses = [{}] }}"#,
                more("198.51.100")
            ),
        )
}

/// A core holding `calls` confirmed calls, their INVITE transactions gone.
fn hold(calls: u32) -> (Sim, Vec<sbc::harness::Held>, Duration) {
    let mut sim = Sim::with(&config(calls));
    let started = now();
    // At 1,000 calls a second of the virtual clock, so the transactions of
    // a call's setup end (64*T1) as they would at that rate.
    let held: Vec<_> = (0..calls)
        .map(|n| {
            let call = sim.call(n);
            if n % 1000 == 999 {
                sim.advance(Duration::from_secs(1));
            }
            call
        })
        .collect();
    let setup = now().saturating_duration_since(started);
    sim.advance(Duration::from_secs(40));
    assert_eq!(sim.core.active_calls(), calls as usize, "every call is up");
    (sim, held, setup)
}

/// Nanoseconds per idle timer turn (nothing due), over `turns` turns.
fn idle_turn(sim: &mut Sim, turns: u32) -> f64 {
    let at = sim.now;
    let started = now();
    for _ in 0..turns {
        let next = sim.core.poll_timeout();
        sim.core.handle_timeout(at);
        std::hint::black_box(next);
    }
    now().saturating_duration_since(started).as_nanos() as f64 / f64::from(turns)
}

/// Microseconds of one virtual minute with every call up.
fn idle_minute(sim: &mut Sim) -> f64 {
    let started = now();
    sim.advance(Duration::from_secs(60));
    now().saturating_duration_since(started).as_secs_f64() * 1e6
}

/// A hold re-INVITE and a BYE of each sampled call, end to end through the
/// core: (re-INVITE us, BYE us) per call.
fn in_dialog(sim: &mut Sim, held: &[sbc::harness::Held], samples: usize) -> (Vec<f64>, Vec<f64>) {
    let hold_sdp = "v=0\r\no=user1 53655765 2353687638 IN IP4 203.0.113.7\r\ns=-\r\n\
                    c=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendonly\r\n";
    let answer = hold_sdp
        .replace("203.0.113.7", "198.51.100.3")
        .replace("sendonly", "recvonly");
    let step = (held.len() / samples.max(1)).max(1);
    let (mut reinvites, mut byes) = (Vec::new(), Vec::new());
    for call in held.iter().step_by(step).take(samples) {
        let started = now();
        let sent = sim.caller_request(call, "INVITE", 2, Some(hold_sdp));
        let relayed = pick(sent, PBX, "INVITE");
        let sent = sim.callee_answers(&relayed, "200 OK", Some(&answer));
        let _ok = pick(sent, CALLER, "200");
        let sent = sim.caller_request(call, "ACK", 2, None);
        let _ack = pick(sent, PBX, "ACK");
        reinvites.push(now().saturating_duration_since(started).as_secs_f64() * 1e6);
        let started = now();
        let mut sent = sim.caller_request(call, "BYE", 3, None);
        let relayed = pick(sent.clone(), PBX, "BYE");
        // (The caller's 200 may go before the callee's answer or after it.)
        sent.extend(sim.callee_answers(&relayed, "200 OK", None));
        let _ok = pick(sent, CALLER, "200");
        byes.push(now().saturating_duration_since(started).as_secs_f64() * 1e6);
    }
    (reinvites, byes)
}

fn percentile(values: &mut [f64], p: usize) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() * p / 100).min(values.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let calls = if full {
        env_or("HELD_BENCH_CALLS", 100_000).clamp(2_000, 1_000_000)
    } else {
        2_000
    } as u32;
    let baseline_calls = 1_000;
    let samples = 200;

    let (mut small, small_held, small_setup) = hold(baseline_calls);
    let rss_before = rss_kib();
    let (mut big, big_held, big_setup) = hold(calls);
    let rss_after = rss_kib();
    println!(
        "held calls: {calls} through the call core (baseline {baseline_calls}), \
         setup {:.1} us a call ({:.1} us on the baseline)",
        big_setup.as_secs_f64() * 1e6 / f64::from(calls),
        small_setup.as_secs_f64() * 1e6 / f64::from(baseline_calls),
    );
    let per_call = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / f64::from(calls);
    println!(
        "RSS: {:.0} MiB for {calls} calls, {per_call:.0} B a call \
         ({:.0} MiB at 100,000; target under 1 GiB)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        per_call * 100_000.0 / 1024.0 / 1024.0
    );
    let (small_turn, big_turn) = (idle_turn(&mut small, 100_000), idle_turn(&mut big, 100_000));
    let (small_minute, big_minute) = (idle_minute(&mut small), idle_minute(&mut big));
    println!(
        "idle timer turn: {big_turn:.0} ns ({small_turn:.0} ns on the baseline, ratio {:.2}); \
         one virtual minute with every call up: {big_minute:.0} us ({small_minute:.0} us, ratio {:.2})",
        big_turn / small_turn.max(1.0),
        big_minute / small_minute.max(1.0),
    );
    let (mut small_re, mut small_bye) = in_dialog(&mut small, &small_held, samples);
    let (mut big_re, mut big_bye) = in_dialog(&mut big, &big_held, samples);
    println!(
        "re-INVITE (hold, relayed and answered): p50 {:.1} us, p99 {:.1} us \
         (baseline p50 {:.1} us, p99 {:.1} us)",
        percentile(&mut big_re, 50),
        percentile(&mut big_re, 99),
        percentile(&mut small_re, 50),
        percentile(&mut small_re, 99),
    );
    println!(
        "BYE (relayed and answered): p50 {:.1} us, p99 {:.1} us \
         (baseline p50 {:.1} us, p99 {:.1} us)",
        percentile(&mut big_bye, 50),
        percentile(&mut big_bye, 99),
        percentile(&mut small_bye, 50),
        percentile(&mut small_bye, 99),
    );
    println!(
        "in-dialog p50 ratio {calls} / {baseline_calls} calls: re-INVITE {:.2}, BYE {:.2}",
        percentile(&mut big_re, 50) / percentile(&mut small_re, 50).max(0.001),
        percentile(&mut big_bye, 50) / percentile(&mut small_bye, 50).max(0.001),
    );
    assert_eq!(
        big.core.active_calls(),
        calls as usize - samples.min(calls as usize),
        "the sampled calls ended, the others stay up"
    );
}
