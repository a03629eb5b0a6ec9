//! Load harness for the daemon's signaling: SIPp UAC -> `sbc` -> SIPp UAS.
//!
//! `cargo bench -p benches --bench signaling` builds the `sbc` binary of the
//! bench's profile (`cargo build --release -p sbc --bin sbc`, a no-op when it
//! is fresh), then on its own loopback addresses (127.70.0.x, used by no test)
//! measures, each against a baseline taken in the same run:
//!
//! 1. Throughput: `SIGNALING_BENCH_UACS` SIPp UACs (default 2, one SIPp tops
//!    out near 1 000 cps), each with its own SIPp UAS, offer calls at stepped
//!    total rates (`SIGNALING_BENCH_RATES`, default `500,1000,1500,2000`) for
//!    `SIGNALING_BENCH_SECS` seconds a step (default 5, at most 10): first
//!    directly, then through a freshly started daemon (fresh so the media
//!    ports quarantined after each call never run out across steps). Per step
//!    it prints successful/failed calls both ways and the daemon's CPU time per
//!    call (`/proc/<pid>/stat` utime+stime, over the whole step), and at the
//!    end the highest rate with zero failed calls through the daemon over the
//!    direct one's. Calls SIPp neither completed nor failed by its deadline
//!    (still retransmitting when killed) show as "lost" and count against
//!    the step.
//! 2. Setup latency: sequential calls (`SIGNALING_BENCH_LATENCY_CALLS`,
//!    default 1000) from a UDP client in this process to a callee in this
//!    process that answers at once ([`EchoUas`]; a SIPp callee's own
//!    scheduling jitter, milliseconds at p99 under load, hid the SBC's),
//!    timing INVITE -> 200 in microseconds, direct and through the daemon;
//!    median and p90 and their difference, then the same while pair 1
//!    carries `SIGNALING_BENCH_LOAD_CPS` (2,000) calls a second of SIPp
//!    load: median and p99 and their difference. The probe starts once the
//!    load has run `SIGNALING_BENCH_WARMUP_SECS` (default 35; 2 in the
//!    smoke run), longer than the 32 s (64*T1) the longest-lived
//!    transactions of a call linger, so the daemon's tables have reached
//!    the size they keep at that rate: a fresh daemon's first seconds
//!    under load include its tables' growth, which is measured, and
//!    described in the README, apart. A probe call starts
//!    every `SIGNALING_BENCH_LATENCY_GAP_US` microseconds (default 5000:
//!    200 calls a second, a tenth of the load); 0 starts each as soon as
//!    the last ended, which makes the probe itself a closed-loop load of
//!    thousands of calls a second through the daemon, so the "under load"
//!    figure is then no longer at the load's rate. Each row also reports
//!    the time in transit: both sockets of the probe read kernel receive
//!    timestamps (`sbc::transport::stamp`), so from the INVITE's send to
//!    its arrival at the callee plus from the 200's send to its arrival
//!    back, leaving out both ends' own wake-ups (on a loaded generator,
//!    hundreds of microseconds at p99, which the INVITE -> 200 figure
//!    counts against the path). Under load it adds the daemon's own
//!    `sbc_sip_transit_seconds` over the row (every message of the load
//!    and the probe): median, p99 and p99.9, and how many calls' media
//!    waited for a relay round trip (`sbc_media_reserve_misses_total`: the
//!    reserve of pre-bound ports was empty), then the daemon's CPU per call
//!    and its threads' context switches a second over the probe
//!    (preempted: the kernel gave a thread's CPU to another, as a peer
//!    woken on the daemon's CPU does when they share one).
//! 3. Memory per concurrent call: the daemon's RSS before and while
//!    `SIGNALING_BENCH_HOLD` calls (default 2000) are held up (SIPp's built-in
//!    UAC with a long `-d` pause), then the same with half as many, as a
//!    linearity check. This counts everything a call holds in the daemon:
//!    dialogs, transactions and its media relay sockets. The reading is
//!    taken 1 s after the last call is up, so every call's two INVITE
//!    transactions are still in RFC 6026's Accepted state (64*T1 = 32 s);
//!    `SIGNALING_BENCH_HOLD_SETTLE=35` (seconds, at most 50) adds a second
//!    reading that long after the first, once they have ended (calls are
//!    still up: no RTP flows, and the media inactivity timeout is 60 s).
//!
//! 4. Under attack: legitimate calls from the trusted UAC trunks
//!    (`SIGNALING_BENCH_ATTACK_CPS`, default 200, for
//!    `SIGNALING_BENCH_ATTACK_SECS`, default 10) while an in-process attacker
//!    floods the outside realm from untrusted loopback addresses
//!    (127.70.1.x-127.70.4.x) at `SIGNALING_BENCH_ATTACK_RATE` datagrams a
//!    second (default 5000): OPTIONS, INVITE (refused: Max-Forwards 0), INVITE
//!    to unknown numbers, REGISTER and junk, from one source and from 1,000.
//!    Per row, against a no-attack baseline in the same run: legitimate calls
//!    ok/failed and their share, the daemon's CPU time over the row, its RSS
//!    at the end of the flood and 5 s later, and datagrams the attacker got
//!    back per one sent (above 1 would be amplification).
//!
//! 5. Registrations: `SIGNALING_BENCH_PHONES` phones (default 5000) on 100
//!    UDP sockets of this process register through an access realm to an
//!    in-process registrar (closed loop, one REGISTER outstanding per
//!    socket), then each refreshes once. Per round: REGISTERs a second, the
//!    daemon's CPU per REGISTER, how many reached the registrar (the rest
//!    were absorbed by the SBC), and the daemon's RSS per binding (which
//!    includes the REGISTER transactions still lingering). Then the
//!    keepalives: every binding gets an OPTIONS every 10 s, which the
//!    phones answer; pings a second (against the expected bindings / 10),
//!    retransmissions (answers later than T1), and the daemon's CPU per ping.
//!    `SIGNALING_BENCH_PHONES=100000` gives the issue's 100k bindings.
//!
//! 6. Soak (`soak`, not in the default phases): `SIGNALING_BENCH_SOAK_SECS`
//!    (default 600) of calls at `SIGNALING_BENCH_SOAK_CPS` (default 20)
//!    calls a second: 70% answered and held 20 s, 10% refused 486 by the
//!    callee, 10% cancelled by the caller while ringing, 10% to a callee
//!    that never answers (408 after timer B). Prints the daemon's RSS every
//!    30 s; checks every call ended as its kind should, and that once the
//!    last transaction could linger (64*T1) nothing is left: calls,
//!    transactions, media streams at 0 and every media port free.
//!
//! `SIGNALING_BENCH_PHASES` (default `throughput,latency,memory,attack,register`)
//! picks the phases to run; `SIGNALING_BENCH_SBC` names another `sbc` binary to
//! measure instead of this tree's; `SIGNALING_BENCH_RT_PRIORITY` (1-99) runs
//! the daemon's signaling and relay threads at that `SCHED_FIFO` priority
//! (`[scheduling]`; needs root); `SIGNALING_BENCH_DAEMON_CPUS` (a CPU list,
//! e.g. `1`) gives the daemon those CPUs (`signaling_cpus` and
//! `media_cpus`) and keeps this bench and its SIPp peers on the others, as
//! a deployment keeps the load off the SBC's cores.
//!
//! Every SIPp run is bounded by call count, `-timeout` and a kill deadline;
//! every daemon is stopped (SIGTERM, then SIGKILL) when its phase ends.
//! Under `cargo test --benches` (no `--bench` argument) it runs a small smoke
//! load (20 calls each way, a few latency calls, 20 held calls) and asserts
//! that nothing failed, so the plumbing keeps working.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime};

use sbc::sched::{self, CpuList};

use benches::siplab::{
    ACCESS, Counts, Daemon, EchoUas, KEEPALIVE_SECS, MAX_PAIRS, OUTSIDE, PHONES, PROBE, REGISTRAR,
    SIP_PORT, Sipp, calls_active, config, env_or, header, http_get, now, one_call_from, percentile,
    run_calls, sbc_binary, service, uac_ip, uas_ip,
};

/// Starts the daemon of a phase: the lab configuration, plus
/// `[scheduling]` when `SIGNALING_BENCH_RT_PRIORITY` asks for real time or
/// `SIGNALING_BENCH_DAEMON_CPUS` for CPUs of its own.
fn start_daemon(bin: &Path, dir: &Path, pairs: u64) -> Daemon {
    let mut toml = config(pairs);
    let priority = env_or("SIGNALING_BENCH_RT_PRIORITY", 0).min(99);
    let cpus = daemon_cpus();
    if priority > 0 || cpus.is_some() {
        toml.push_str("\n[scheduling]\n");
    }
    if priority > 0 {
        toml.push_str(&format!(
            "signaling_priority = {priority}\nmedia_priority = {priority}\n"
        ));
    }
    if let Some(cpus) = cpus {
        toml.push_str(&format!(
            "signaling_cpus = \"{cpus}\"\nmedia_cpus = \"{cpus}\"\n"
        ));
    }
    // The daemon inherits the spawning thread's CPUs: all this bench
    // started with, not the ones it keeps to.
    let Some(all) = STARTED_ON.get() else {
        return Daemon::start_with(None, bin, dir, &toml);
    };
    let own = sched::current_thread_cpus().expect("this thread's CPUs");
    sched::set_current_thread_cpus(all).expect("back to every CPU");
    let daemon = Daemon::start_with(None, bin, dir, &toml);
    sched::set_current_thread_cpus(&own).expect("back to the bench's CPUs");
    daemon
}

/// The CPUs this bench was started with, once it keeps off the daemon's.
static STARTED_ON: std::sync::OnceLock<CpuList> = std::sync::OnceLock::new();

/// `SIGNALING_BENCH_DAEMON_CPUS`: the CPUs the daemon runs on (signaling
/// and media), as a deployment gives it cores of its own.
fn daemon_cpus() -> Option<CpuList> {
    let text = std::env::var("SIGNALING_BENCH_DAEMON_CPUS").ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|e| panic!("SIGNALING_BENCH_DAEMON_CPUS={text:?}: {e}")),
    )
}

/// With `SIGNALING_BENCH_DAEMON_CPUS`, confines this process (the probes,
/// the in-process callee) and the SIPp peers it starts to the other CPUs,
/// so the load generator never runs on the daemon's; with no CPU left
/// over, everything shares them.
fn keep_off_the_daemons_cpus() {
    let Some(daemon) = daemon_cpus() else { return };
    let own = sched::current_thread_cpus().expect("this process's CPUs");
    match own.not_in(&daemon) {
        Some(rest) => {
            let _ = STARTED_ON.set(own);
            sched::set_current_thread_cpus(&rest).expect("confined to the other CPUs");
            println!("daemon on CPUs {daemon}; this bench and its SIPp peers on CPUs {rest}");
        }
        None => println!("daemon on CPUs {daemon}, shared with this bench: no CPU is left over"),
    }
}

fn main() {
    // Before any thread or peer starts: they inherit it.
    keep_off_the_daemons_cpus();
    let full = std::env::args().any(|a| a == "--bench");
    let phases = std::env::var("SIGNALING_BENCH_PHASES")
        .unwrap_or_else(|_| "throughput,latency,memory,attack,register".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    let settle = Duration::from_secs(env_or("SIGNALING_BENCH_HOLD_SETTLE", 0).min(50));
    let pairs = env_or("SIGNALING_BENCH_UACS", 2).clamp(1, MAX_PAIRS);
    let (rates, secs, latency_calls, hold) = if full {
        let rates: Vec<u64> = std::env::var("SIGNALING_BENCH_RATES")
            .unwrap_or_else(|_| "500,1000,1500,2000".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .map(|r: u64| r.clamp(pairs, 20_000))
            .collect();
        (
            rates,
            env_or("SIGNALING_BENCH_SECS", 5).clamp(1, 10),
            env_or("SIGNALING_BENCH_LATENCY_CALLS", 1000).clamp(10, 5000),
            env_or("SIGNALING_BENCH_HOLD", 2000).clamp(10, 20_000),
        )
    } else {
        (vec![10 * pairs], 1, 10, 20)
    };
    let work = std::env::temp_dir().join(format!("sbc-signaling-bench-{}", std::process::id()));
    fs::create_dir_all(&work).expect("work directory");
    let bin = sbc_binary();
    println!("sbc binary: {}", bin.display());
    println!("work directory: {}", work.display());

    if phase("throughput") {
        throughput(&bin, &work, full, pairs, &rates, secs);
    }
    if phase("latency") {
        setup_latency(&bin, &work, full, pairs, latency_calls);
    }
    if phase("memory") {
        memory(&bin, &work, full, pairs, hold, settle);
    }
    if phase("attack") {
        attack(&bin, &work, full, pairs);
    }
    if phase("register") {
        let phones = if full {
            env_or("SIGNALING_BENCH_PHONES", 5_000).clamp(100, 100_000)
        } else {
            100
        };
        register(&bin, &work, pairs, phones);
    }
    if phase("soak") {
        let secs = if full {
            env_or("SIGNALING_BENCH_SOAK_SECS", 600).clamp(30, 3600)
        } else {
            30
        };
        soak(
            &bin,
            &work,
            secs,
            env_or("SIGNALING_BENCH_SOAK_CPS", 20).clamp(10, 200),
        );
    }
    let _ = fs::remove_dir_all(&work);
}

/// 1. Throughput steps.
fn throughput(bin: &Path, work: &Path, full: bool, pairs: u64, rates: &[u64], secs: u64) {
    println!(
        "\nthroughput: {pairs} SIPp UAC/UAS pairs, {secs} s of calls per step, built-in uac/uas (INVITE with SDP, 180, 200, ACK, BYE)"
    );
    println!(
        "{:>8} | {:>22} | {:>22} | {:>14}",
        "rate", "direct ok/failed", "via sbc ok/failed", "sbc CPU/call"
    );
    let mut best_direct = None;
    let mut best_sbc = None;
    for &rate in rates {
        let calls = rate * secs;
        let dir = work.join(format!("direct-{rate}"));
        let direct = run_calls(&dir, pairs, rate, calls, None);
        let dir = work.join(format!("sbc-{rate}"));
        let daemon = start_daemon(bin, &dir, pairs);
        let cpu_before = daemon.cpu();
        let via = run_calls(&dir, pairs, rate, calls, Some(OUTSIDE));
        let cpu = daemon
            .cpu()
            .zip(cpu_before)
            .map(|(a, b)| a.saturating_sub(b));
        drop(daemon);
        let cpu_per_call = cpu
            .filter(|_| via.ok > 0)
            .map(|c| format!("{:.1} us", c.as_secs_f64() * 1e6 / via.ok as f64))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "{rate:>8} | {:>22} | {:>22} | {cpu_per_call:>14}",
            direct.cell(calls),
            via.cell(calls)
        );
        if direct.clean(calls) {
            best_direct = Some(rate);
        }
        if via.clean(calls) {
            best_sbc = Some(rate);
        }
        if !full {
            assert!(direct.clean(calls), "direct smoke calls failed: {direct:?}");
            assert!(
                via.clean(calls),
                "smoke calls through the sbc failed: {via:?}"
            );
        }
    }
    let show = |r: Option<u64>| r.map_or_else(|| "none".into(), |r| format!("{r} cps"));
    println!(
        "highest zero-failure rate: direct {}, via sbc {}",
        show(best_direct),
        show(best_sbc)
    );
    if let (Some(d), Some(s)) = (best_direct, best_sbc) {
        println!("via sbc / direct: {:.2}", s as f64 / d as f64);
        if best_direct == rates.iter().max().copied() {
            println!(
                "(the direct baseline never failed: raise SIGNALING_BENCH_RATES to find its limit)"
            );
        }
    }
}

/// 2. Call setup latency.
fn setup_latency(bin: &Path, work: &Path, full: bool, pairs: u64, latency_calls: u64) {
    let gap = Duration::from_micros(if full {
        env_or("SIGNALING_BENCH_LATENCY_GAP_US", 5000).min(10_000)
    } else {
        0
    });
    println!(
        "\nsetup latency: {latency_calls} sequential calls, one every {} us at most, \
         INVITE -> 200 measured in-process, to a callee in-process that answers at once",
        gap.as_micros()
    );
    let direct = latency(uas_ip(0), latency_calls, None, gap);
    let dir = work.join("latency-sbc");
    let daemon = start_daemon(bin, &dir, pairs);
    let via = latency(uas_ip(0), latency_calls, Some(OUTSIDE), gap);
    // The same probes while pair 1 carries a steady load of calls.
    let load_cps = if full {
        env_or("SIGNALING_BENCH_LOAD_CPS", 2000).clamp(10, 10_000)
    } else {
        20
    };
    let warmup = Duration::from_secs(if full {
        env_or("SIGNALING_BENCH_WARMUP_SECS", 35).min(600)
    } else {
        2
    });
    let loaded = (pairs >= 2).then(|| {
        let direct = under_load(&work.join("loaded-direct"), load_cps, warmup, None, || {
            latency(uas_ip(0), latency_calls, None, gap)
        });
        let via = under_load(&dir.join("loaded"), load_cps, warmup, Some(OUTSIDE), || {
            let before = daemon.http_get("/metrics").unwrap_or_default();
            let cpu_before = daemon.cpu();
            let switches_before = daemon.switches();
            let probe_start = now();
            let via = latency(uas_ip(0), latency_calls, Some(OUTSIDE), gap);
            let probe_secs = probe_start.elapsed().as_secs_f64();
            let cpu_after = daemon.cpu();
            let switches = daemon
                .switches()
                .zip(switches_before)
                .map(|(after, before)| after.rate_since(before, probe_secs));
            let after = daemon.http_get("/metrics").unwrap_or_default();
            // Every message of the load and the probe, as the daemon
            // itself timed it (see `sbc_sip_transit_seconds`).
            let inside = [0.5, 0.99, 0.999].map(|q| transit_quantile(&before, &after, q));
            // Setups whose media waited for a relay round trip (the
            // reserve of pre-bound ports was empty).
            let delta = |name| {
                metric_sum(&after, name).unwrap_or(0.0) - metric_sum(&before, name).unwrap_or(0.0)
            };
            let misses = delta("sbc_media_reserve_misses_total");
            // The daemon's CPU per call in its steady state: every thread,
            // over the probe, per call it ended meanwhile (load and probe).
            let calls = delta("sbc_calls_total");
            let cpu_per_call = cpu_before
                .zip(cpu_after)
                .filter(|_| calls > 0.0)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e6 / calls);
            (via, inside, (misses, cpu_per_call, switches))
        });
        (direct, via)
    });
    drop(daemon);
    let (dm, d90) = (percentile(&direct.times, 50), percentile(&direct.times, 90));
    let (sm, s90) = (percentile(&via.times, 50), percentile(&via.times, 90));
    println!(
        "direct:  {} calls, median {dm} us, p90 {d90} us",
        direct.times.len()
    );
    println!(
        "via sbc: {} calls, median {sm} us, p90 {s90} us",
        via.times.len()
    );
    println!(
        "added by the sbc: median {} us, p90 {} us",
        i128::from(sm) - i128::from(dm),
        i128::from(s90) - i128::from(d90)
    );
    let transit = |probed: &Probed| {
        format!(
            "median {} us, p99 {} us",
            percentile(&probed.transit, 50),
            percentile(&probed.transit, 99)
        )
    };
    println!(
        "in transit (sends to kernel receive timestamps, both ends' wake-ups left out): \
         direct {}; via sbc {}",
        transit(&direct),
        transit(&via)
    );
    if let Some((direct, (via, inside, (misses, cpu_per_call, switches)))) = &loaded {
        let (dm, d99) = (percentile(&direct.times, 50), percentile(&direct.times, 99));
        let (sm, s99) = (percentile(&via.times, 50), percentile(&via.times, 99));
        println!(
            "under {load_cps} cps of other calls: direct median {dm} us, p99 {d99} us; \
             via sbc median {sm} us, p99 {s99} us; added median {} us, p99 {} us",
            i128::from(sm) - i128::from(dm),
            i128::from(s99) - i128::from(d99)
        );
        let (dt, st) = (
            percentile(&direct.transit, 99),
            percentile(&via.transit, 99),
        );
        println!(
            "  in transit: direct {}; via sbc {}; p99 added {} us \
             (target: p99 added under 1000 us)",
            transit(direct),
            transit(via),
            i128::from(st) - i128::from(dt)
        );
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} us"));
        println!(
            "  each message inside the daemon (sbc_sip_transit_seconds, load and probe): \
             median {}, p99 {}, p99.9 {}",
            us(inside[0]),
            us(inside[1]),
            us(inside[2])
        );
        println!("  calls whose media waited for the relay (reserve empty): {misses:.0}");
        println!(
            "  daemon CPU per call over the probe (steady state): {}",
            us(*cpu_per_call)
        );
        // How often the daemon's threads were preempted: when they share
        // CPUs with the load generator, peers their own sends woke are
        // among those that take the CPU from them.
        if let Some((voluntary, preempted)) = switches {
            println!(
                "  daemon context switches over the probe (every thread): \
                 {preempted:.0} preempted and {voluntary:.0} voluntary a second"
            );
        }
    }
    if !full {
        assert_eq!(
            direct.times.len() as u64,
            latency_calls,
            "direct latency calls failed"
        );
        assert_eq!(
            via.times.len() as u64,
            latency_calls,
            "latency calls via the sbc failed"
        );
        assert_eq!(
            via.transit.len() as u64,
            latency_calls,
            "latency calls via the sbc without receive timestamps at both ends"
        );
        if let Some((_, (_, inside, _))) = &loaded {
            assert!(
                inside[1].is_some(),
                "the daemon's sbc_sip_transit_seconds observed nothing under load"
            );
        }
    }
}

/// Runs `probe` while pair 1 places calls at `cps` (through the daemon's
/// realm at `via`, or straight to its UAS), the load started `warmup` before
/// the probe and stopped after it.
fn under_load<T>(
    dir: &Path,
    cps: u64,
    warmup: Duration,
    via: Option<Ipv4Addr>,
    probe: impl FnOnce() -> T,
) -> T {
    let uas = Sipp::spawn(&dir.join("load-uas"), "uas", uas_ip(1), &[]);
    thread::sleep(Duration::from_millis(300));
    let target = via.unwrap_or_else(|| uas_ip(1));
    // Enough calls for the warm-up and a probe of up to a minute; the load
    // is stopped when the probe ends.
    let secs = warmup.as_secs() + 60;
    let args = vec![
        format!("{target}:{SIP_PORT}"),
        "-s".into(),
        service(1),
        "-m".into(),
        (cps * secs).to_string(),
        "-r".into(),
        cps.to_string(),
        "-timeout".into(),
        format!("{}s", secs + 10),
    ];
    let uac = Sipp::spawn(&dir.join("load-uac"), "uac", uac_ip(1), &args);
    let started = now();
    thread::sleep(warmup);
    let out = probe();
    // What the load really was (SIPp writes its counts once a second).
    let secs = started.elapsed().as_secs_f64();
    let load = uac.finish(Duration::ZERO);
    println!(
        "  load {}: {} calls completed, {} failed, in {secs:.1} s (about {:.0} a second)",
        if via.is_some() { "via sbc" } else { "direct" },
        load.ok,
        load.failed,
        load.ok as f64 / secs
    );
    drop(uas);
    out
}

/// 3. Memory per concurrent call.
fn memory(bin: &Path, work: &Path, full: bool, pairs: u64, hold: u64, settle: Duration) {
    println!("\nmemory: RSS of the daemon before and while calls are held up");
    for held in [hold, hold / 2] {
        let dir = work.join(format!("hold-{held}"));
        let m = hold_calls(bin, &dir, pairs, held, settle);
        let per_call = |kib: u64| (kib as f64 - m.before_kib as f64) * 1024.0 / m.active as f64;
        println!(
            "{held:>6} calls asked, {} active: RSS {} KiB -> {} KiB, {:.0} bytes per call",
            m.active,
            m.before_kib,
            m.during_kib,
            per_call(m.during_kib)
        );
        if let Some((kib, active)) = m.settled {
            println!(
                "{:>6} {} s later, {active} active: RSS {kib} KiB, {:.0} bytes per call",
                "",
                settle.as_secs(),
                per_call(kib)
            );
        }
        if !full {
            assert_eq!(m.active, held, "not every smoke call was held up");
        }
    }
}

/// What one hold phase measured.
struct Held {
    before_kib: u64,
    during_kib: u64,
    active: u64,
    /// RSS and calls up `settle` after `during_kib`, if asked.
    settled: Option<(u64, u64)>,
}

/// Holds `held` calls up through a fresh daemon and reads its RSS, and
/// again `settle` later if that is not zero.
fn hold_calls(bin: &Path, dir: &Path, pairs: u64, held: u64, settle: Duration) -> Held {
    let daemon = start_daemon(bin, dir, pairs);
    // Let the daemon settle after start-up before the reference reading.
    thread::sleep(Duration::from_millis(500));
    let before_kib = daemon.rss_kib();
    let uas = Sipp::spawn(&dir.join("uas0"), "uas", uas_ip(0), &[]);
    thread::sleep(Duration::from_millis(300));
    let rate = 500;
    let ramp = held.div_ceil(rate) + 5;
    let args = vec![
        format!("{OUTSIDE}:{SIP_PORT}"),
        "-s".into(),
        service(0),
        "-m".into(),
        held.to_string(),
        "-l".into(),
        held.to_string(),
        "-r".into(),
        rate.to_string(),
        // The built-in uac pauses this long between ACK and BYE.
        "-d".into(),
        format!("{}", (ramp + 30 + settle.as_secs()) * 1000),
        "-timeout".into(),
        format!("{}s", ramp + 60 + settle.as_secs()),
    ];
    let uac = Sipp::spawn(&dir.join("uac0"), "uac", uac_ip(0), &args);
    let deadline = now() + Duration::from_secs(ramp + 10);
    let mut active = 0;
    while now() < deadline {
        active = calls_active().unwrap_or(0);
        if active >= held {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // Let in-flight transactions of the last calls complete.
    thread::sleep(Duration::from_secs(1));
    let during_kib = daemon.rss_kib();
    let settled = (!settle.is_zero()).then(|| {
        thread::sleep(settle);
        (daemon.rss_kib(), calls_active().unwrap_or(0))
    });
    drop(uac);
    drop(uas);
    drop(daemon);
    Held {
        before_kib,
        during_kib,
        active: active.max(1),
        settled,
    }
}

/// What [`latency`] measured, each sorted, in microseconds.
struct Probed {
    /// INVITE -> 200 as the probe's thread saw it.
    times: Vec<u64>,
    /// INVITE -> 200 in transit only: from the INVITE's send to its kernel
    /// receive timestamp at the callee, plus from the 200's send to its
    /// timestamp at the probe. The two ends' own wake-ups and work are
    /// left out, so a busy load generator does not count against the path.
    transit: Vec<u64>,
}

/// Runs `calls` sequential calls from an in-process UDP client to the UAS
/// at `uas` (directly or through `via`), each starting `gap` after the last
/// one started (or when it ended, if later), and returns each INVITE -> 200
/// time in microseconds, whole and in transit; failed calls are left out.
fn latency(uas: Ipv4Addr, calls: u64, via: Option<Ipv4Addr>, gap: Duration) -> Probed {
    let server = EchoUas::start(uas);
    let socket = UdpSocket::bind((PROBE, 0)).expect("probe socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    sbc::transport::stamp::enable(&socket).expect("receive timestamps");
    let target = SocketAddr::new(IpAddr::V4(via.unwrap_or(uas)), SIP_PORT);
    let mut times = Vec::new();
    let mut transit = Vec::new();
    // Through the daemon: how much of each is the INVITE's way to the
    // callee (routing, media anchoring), the rest the 200's way back.
    let mut forward = Vec::new();
    let micros = |from: SystemTime, to: SystemTime| {
        to.duration_since(from)
            .ok()
            .and_then(|d| u64::try_from(d.as_micros()).ok())
    };
    for n in 0..calls {
        let began = now();
        if let Some(call) = one_call_from(&socket, target, n) {
            times.push(call.us);
            let answer = server.last_invite().filter(|a| a.read >= call.start);
            if let Some(answer) = answer {
                forward.push(
                    u64::try_from(answer.read.duration_since(call.start).as_micros()).unwrap_or(0),
                );
                let there = answer.arrived.and_then(|at| micros(call.invite_sent, at));
                let back = call.ok_arrived.and_then(|at| micros(answer.answered, at));
                if let (Some(there), Some(back)) = (there, back) {
                    transit.push(there + back);
                }
            }
        }
        if let Some(rest) = gap.checked_sub(began.elapsed()) {
            thread::sleep(rest);
        }
    }
    drop(server);
    times.sort_unstable();
    transit.sort_unstable();
    forward.sort_unstable();
    if via.is_some() && !forward.is_empty() {
        println!(
            "  of which the INVITE's way to the callee: median {} us, p99 {} us",
            percentile(&forward, 50),
            percentile(&forward, 99)
        );
    }
    Probed { times, transit }
}

/// The `q` quantile (0-1) of `sbc_sip_transit_seconds`, every kind
/// together, over what was observed between two scrapes, in microseconds:
/// interpolated within its bucket as Prometheus' `histogram_quantile` does.
fn transit_quantile(before: &str, after: &str, q: f64) -> Option<f64> {
    // Cumulative counts per upper bound, summed over the kinds.
    let buckets = |text: &str| {
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("sbc_sip_transit_seconds_bucket{") else {
                continue;
            };
            let (labels, value) = rest.rsplit_once("} ")?;
            let le = labels.split(',').find_map(|l| l.strip_prefix("le=\""))?;
            let le = le.trim_end_matches('"');
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let value: f64 = value.parse().ok()?;
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += value,
                None => by_le.push((le, value)),
            }
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(by_le)
    };
    let (before, after) = (buckets(before)?, buckets(after)?);
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, m)| *m);
            (*le, n - earlier)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, n) in counts {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower * 1e6);
            }
            let share = if n > below {
                (rank - below) / (n - below)
            } else {
                1.0
            };
            return Some((lower + (le - lower) * share) * 1e6);
        }
        (lower, below) = (le, n);
    }
    None
}

/// One kind of flood of the attack phase.
#[derive(Clone, Copy)]
enum Flood {
    None,
    Options,
    RefusedInvite,
    UnknownNumber,
    Register,
    Junk,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::None => "none (baseline)",
            Flood::Options => "OPTIONS",
            Flood::RefusedInvite => "INVITE, Max-Forwards 0",
            Flood::UnknownNumber => "INVITE, unknown number",
            Flood::Register => "REGISTER",
            Flood::Junk => "junk",
        }
    }

    /// Datagram `n` from `from`, unique per `n`.
    fn datagram(self, n: u64, from: SocketAddr) -> String {
        let to = SocketAddr::new(IpAddr::V4(OUTSIDE), SIP_PORT);
        let head = |method: &str, uri: &str, forwards: u8| {
            format!(
                "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-atk-{n}\r\n\
                 Max-Forwards: {forwards}\r\nFrom: <sip:atk@{from}>;tag=atk-{n}\r\n\
                 To: <{uri}>\r\nCall-ID: atk-{n}@{}\r\nCSeq: 1 {method}\r\n\
                 Contact: <sip:atk@{from}>\r\nContent-Length: 0\r\n\r\n",
                from.ip()
            )
        };
        match self {
            Flood::None => String::new(),
            Flood::Options => head("OPTIONS", &format!("sip:ping@{to}"), 70),
            Flood::RefusedInvite => head("INVITE", &format!("sip:service@{to}"), 0),
            Flood::UnknownNumber => head("INVITE", &format!("sip:9{n:09}@{to}"), 70),
            Flood::Register => head("REGISTER", &format!("sip:{}", to.ip()), 70),
            Flood::Junk => format!("\u{1}JUNK {n} {}\r\n\r\n", "x".repeat((n % 300) as usize)),
        }
    }
}

/// What the attacker sent and got back.
#[derive(Default)]
struct Flooded {
    sent: u64,
    received: u64,
}

/// Floods the outside realm from `sources` sockets at `rate` datagrams a
/// second for `secs` seconds (bounded: `rate * secs` datagrams), counting
/// what comes back.
fn flood(kind: Flood, sources: &[UdpSocket], rate: u64, secs: u64) -> Flooded {
    let mut out = Flooded::default();
    if matches!(kind, Flood::None) {
        thread::sleep(Duration::from_secs(secs));
        return out;
    }
    let to = SocketAddr::new(IpAddr::V4(OUTSIDE), SIP_PORT);
    let mut buf = [0u8; 65_536];
    let start = now();
    let total = rate * secs;
    for n in 0..total {
        let socket = &sources[(n % sources.len() as u64) as usize];
        let from = socket.local_addr().expect("local address");
        if socket
            .send_to(kind.datagram(n, from).as_bytes(), to)
            .is_ok()
        {
            out.sent += 1;
        }
        // Paced in bursts of 64, draining what came back between them.
        if n % 64 == 63 {
            for socket in sources {
                while socket.recv_from(&mut buf).is_ok() {
                    out.received += 1;
                }
            }
            let next = start + Duration::from_secs_f64((n + 1) as f64 / rate as f64);
            if let Some(wait) = next.checked_duration_since(now()) {
                thread::sleep(wait);
            }
        }
    }
    thread::sleep(Duration::from_millis(500));
    for socket in sources {
        while socket.recv_from(&mut buf).is_ok() {
            out.received += 1;
        }
    }
    out
}

/// `count` non-blocking attacker sockets on 127.70.1.1 onwards (never a
/// trunk's address, so untrusted).
fn attackers(count: usize) -> Vec<UdpSocket> {
    (0..count)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 70, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
            let socket = UdpSocket::bind((ip, 0)).expect("bind an attacker socket");
            socket.set_nonblocking(true).expect("non-blocking");
            socket
        })
        .collect()
}

/// 4. Legitimate calls while the daemon is flooded.
fn attack(bin: &Path, work: &Path, full: bool, pairs: u64) {
    let (cps, secs, rate) = if full {
        (
            env_or("SIGNALING_BENCH_ATTACK_CPS", 200).clamp(pairs, 2_000),
            env_or("SIGNALING_BENCH_ATTACK_SECS", 10).clamp(2, 30),
            env_or("SIGNALING_BENCH_ATTACK_RATE", 5_000).clamp(10, 50_000),
        )
    } else {
        (10 * pairs, 2, 200)
    };
    println!(
        "\nunder attack: {cps} legitimate cps from the trusted UAC trunks for {secs} s, floods at {rate}/s"
    );
    println!(
        "{:<24} | {:>7} | {:>16} | {:>7} | {:>9} | {:>17} | {:>9}",
        "flood",
        "sources",
        "legit ok/failed",
        "legit %",
        "sbc CPU",
        "RSS end/+5 s MiB",
        "back/sent"
    );
    let rows = [
        (Flood::None, 1),
        (Flood::Options, 1),
        (Flood::RefusedInvite, 1),
        (Flood::UnknownNumber, 1),
        (Flood::Register, 1000),
        (Flood::Junk, 1000),
        (Flood::UnknownNumber, 1000),
    ];
    for (i, (kind, sources)) in rows.into_iter().enumerate() {
        let dir = work.join(format!("attack-{i}"));
        let daemon = start_daemon(bin, &dir, pairs);
        let sockets = attackers(sources);
        let cpu_before = daemon.cpu();
        let calls = cps * secs;
        let legit = thread::scope(|scope| {
            let calls_dir = dir.clone();
            let legit =
                scope.spawn(move || run_calls(&calls_dir, pairs, cps, calls, Some(OUTSIDE)));
            // Let the UASes bind and the calls start, then flood for as long.
            thread::sleep(Duration::from_millis(300));
            let flooded = flood(kind, &sockets, rate, secs);
            (legit.join().expect("legitimate calls"), flooded)
        });
        let (legit, flooded) = legit;
        let cpu = daemon.cpu().zip(cpu_before).map_or_else(
            || "n/a".into(),
            |(a, b)| format!("{:.2} s", a.saturating_sub(b).as_secs_f64()),
        );
        let rss_end = daemon.rss_kib();
        thread::sleep(Duration::from_secs(if full { 5 } else { 1 }));
        let rss_after = daemon.rss_kib();
        drop(daemon);
        let share = legit.ok as f64 * 100.0 / calls.max(1) as f64;
        let back = if flooded.sent == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", flooded.received as f64 / flooded.sent as f64)
        };
        println!(
            "{:<24} | {sources:>7} | {:>16} | {share:>6.1}% | {cpu:>9} | {:>8.1} / {:>6.1} | {back:>9}",
            kind.name(),
            legit.cell(calls),
            rss_end as f64 / 1024.0,
            rss_after as f64 / 1024.0,
        );
        assert!(
            flooded.received <= flooded.sent,
            "amplification: {} back for {} sent",
            flooded.received,
            flooded.sent
        );
        if !full {
            assert!(
                legit.clean(calls),
                "smoke calls under {} failed: {legit:?}",
                kind.name()
            );
        }
    }
}

/// A phone's 200 to the SBC's keepalive OPTIONS `msg`.
fn options_ok(msg: &str) -> String {
    let h = |name: &str| header(msg, name).unwrap_or_default().to_owned();
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=k\r\nCall-ID: {}\r\n\
         CSeq: {}\r\nContent-Length: 0\r\n\r\n",
        h("Via"),
        h("From"),
        h("To"),
        h("Call-ID"),
        h("CSeq"),
    )
}

/// Phase 5, registrations through the access realm: cold, then one refresh
/// each, then the keepalives the daemon sends to every binding.
fn register(bin: &Path, work: &Path, pairs: u64, phones: u64) {
    const SOCKETS: u64 = 100;
    let dir = work.join("register");
    let daemon = start_daemon(bin, &dir, pairs);
    let registrar = UdpSocket::bind((REGISTRAR, SIP_PORT)).expect("registrar binds");
    registrar
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop_registrar, seen) = (
        stop.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let seen_by_registrar = seen.clone();
    // The registrar: 200 to every REGISTER, its Contact echoed for 3600 s.
    let registrar = thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        while !stop_registrar.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, from)) = registrar.recv_from(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !msg.starts_with("REGISTER ") {
                continue;
            }
            seen_by_registrar.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let h = |name: &str| header(&msg, name).unwrap_or_default().to_owned();
            let ok = format!(
                "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=r\r\nCall-ID: {}\r\n\
                 CSeq: {}\r\nContact: {};expires=3600\r\nContent-Length: 0\r\n\r\n",
                h("Via"),
                h("From"),
                h("To"),
                h("Call-ID"),
                h("CSeq"),
                h("Contact"),
            );
            let _ = registrar.send_to(ok.as_bytes(), from);
        }
    });
    let rss_before = daemon.rss_kib();
    println!("\nregistrations: {phones} phones on {SOCKETS} sockets through the access realm");
    println!(
        "{:<8} | {:>9} | {:>10} | {:>14} | {:>16} | {:>12}",
        "round", "ok/failed", "REGISTER/s", "CPU/REGISTER", "to the registrar", "RSS/binding"
    );
    // The phones' sockets stay open from the first REGISTER to the last
    // keepalive: a keepalive that met a closed port would end its binding.
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|s| {
            let socket = UdpSocket::bind((
                format!("{PHONES}.{}", 1 + s % 250)
                    .parse::<Ipv4Addr>()
                    .expect("ip"),
                20_000 + s as u16,
            ))
            .expect("phone binds");
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            socket
        })
        .collect();
    for (round, cseq) in [("cold", 1), ("refresh", 2)] {
        let cpu_before = daemon.cpu();
        let seen_before = seen.load(std::sync::atomic::Ordering::Relaxed);
        let started = now();
        let results: Vec<(u64, u64)> = thread::scope(|scope| {
            let workers: Vec<_> = (0..SOCKETS)
                .map(|s| {
                    let socket = &sockets[s as usize];
                    scope.spawn(move || {
                        let (mut ok, mut failed) = (0, 0);
                        let mut buf = vec![0u8; 65_535];
                        for n in (s..phones).step_by(SOCKETS as usize) {
                            let call_id = format!("reg-{n}");
                            let register = format!(
                                "REGISTER sip:pbx.example SIP/2.0\r\n\
                                 Via: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK-{n}-{cseq};rport\r\n\
                                 From: <sip:{n}@pbx.example>;tag=p{n}\r\nTo: <sip:{n}@pbx.example>\r\n\
                                 Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
                                 Contact: <sip:{n}@192.168.1.20:5062>;expires=3600\r\n\
                                 Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                            );
                            let _ = socket.send_to(register.as_bytes(), (ACCESS, SIP_PORT));
                            let answered = loop {
                                match socket.recv_from(&mut buf) {
                                    Ok((len, from)) => {
                                        let text = String::from_utf8_lossy(&buf[..len]);
                                        if text.starts_with("OPTIONS ") {
                                            let _ = socket.send_to(options_ok(&text).as_bytes(), from);
                                        } else if text.contains(&call_id)
                                            && text.starts_with("SIP/2.0 ")
                                        {
                                            break text.starts_with("SIP/2.0 200");
                                        }
                                    }
                                    Err(_) => break false,
                                }
                            };
                            if answered {
                                ok += 1;
                            } else {
                                failed += 1;
                            }
                        }
                        (ok, failed)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("phones"))
                .collect()
        });
        let elapsed = now().saturating_duration_since(started);
        let (ok, failed) = results
            .iter()
            .fold((0, 0), |(a, b), (ok, failed)| (a + ok, b + failed));
        let relayed = seen.load(std::sync::atomic::Ordering::Relaxed) - seen_before;
        let cpu = daemon.cpu().zip(cpu_before).map_or_else(
            || "n/a".into(),
            |(a, b)| {
                format!(
                    "{:.1} us",
                    a.saturating_sub(b).as_secs_f64() * 1e6 / ok.max(1) as f64
                )
            },
        );
        let rss = if round == "cold" {
            format!(
                "{:.0} B",
                daemon.rss_kib().saturating_sub(rss_before) as f64 * 1024.0 / ok.max(1) as f64
            )
        } else {
            "-".into()
        };
        println!(
            "{round:<8} | {:>9} | {:>10.0} | {cpu:>14} | {:>16} | {rss:>12}",
            format!("{ok}/{failed}"),
            ok as f64 / elapsed.as_secs_f64(),
            format!(
                "{relayed} ({:.1}%)",
                relayed as f64 * 100.0 / ok.max(1) as f64
            ),
        );
        assert_eq!(failed, 0, "{round}: {failed} REGISTERs unanswered");
    }
    keepalives(&daemon, phones, &sockets);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = registrar.join();
    drop(daemon);
}

/// The keepalives of `phones` bindings: the phones' sockets answer every
/// OPTIONS for `3 * KEEPALIVE_SECS`; pings a second and the daemon's CPU
/// per ping are read over the last two intervals, when every binding's
/// cycle has begun.
fn keepalives(daemon: &Daemon, phones: u64, sockets: &[UdpSocket]) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (answered, again, done) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let (pings, repeats, cpu, elapsed) = thread::scope(|scope| {
        for socket in sockets {
            let (answered, again, done) = (&answered, &again, &done);
            scope.spawn(move || {
                let mut seen = std::collections::HashSet::new();
                let mut buf = vec![0u8; 65_535];
                while !done.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = socket.recv_from(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..len]);
                        if text.starts_with("OPTIONS ") {
                            let _ = socket.send_to(options_ok(&text).as_bytes(), from);
                            // A retransmission (its answer was late) is not
                            // another ping.
                            let call_id = header(&text, "Call-ID").unwrap_or_default();
                            if seen.insert(call_id.to_owned()) {
                                answered.fetch_add(1, Ordering::Relaxed);
                            } else {
                                again.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
        thread::sleep(Duration::from_secs(KEEPALIVE_SECS));
        let (pings_before, again_before, cpu_before, started) = (
            answered.load(Ordering::Relaxed),
            again.load(Ordering::Relaxed),
            daemon.cpu(),
            now(),
        );
        thread::sleep(Duration::from_secs(2 * KEEPALIVE_SECS));
        let result = (
            answered.load(Ordering::Relaxed) - pings_before,
            again.load(Ordering::Relaxed) - again_before,
            daemon
                .cpu()
                .zip(cpu_before)
                .map(|(a, b)| a.saturating_sub(b)),
            now().saturating_duration_since(started),
        );
        done.store(true, Ordering::Relaxed);
        result
    });
    let cpu = cpu.map_or_else(
        || "n/a".into(),
        |cpu| format!("{:.1} us", cpu.as_secs_f64() * 1e6 / pings.max(1) as f64),
    );
    println!(
        "keepalive: {phones} bindings, one OPTIONS each every {KEEPALIVE_SECS} s: \
         {:.0} pings/s answered (expected {}), {repeats} retransmitted (answer late), \
         daemon CPU {cpu} per ping",
        pings as f64 / elapsed.as_secs_f64(),
        phones / KEEPALIVE_SECS,
    );
}

/// A family's samples from a `/metrics` text, summed (`None`: no sample).
fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// 6. Soak: a steady mix of calls for `secs` at `cps`, then the leak check.
fn soak(bin: &Path, work: &Path, secs: u64, cps: u64) {
    const HOLD_SECS: u64 = 20;
    // (callee scenario, caller scenario, share of the calls in %, what the
    // caller's SIPp counts: true = successful calls).
    let kinds: [(&str, &str, u64, bool, &str); 4] = [
        ("uas", "uac", 70, true, "answered, held 20 s"),
        (
            "callee-486-busy.xml",
            "uac",
            10,
            false,
            "486 from the callee",
        ),
        (
            "callee-cancel.xml",
            "caller-cancel.xml",
            10,
            true,
            "cancelled while ringing",
        ),
        (
            "callee-silent.xml",
            "uac",
            10,
            false,
            "callee silent: 408 at timer B",
        ),
    ];
    let pairs = kinds.len() as u64;
    let dir = work.join("soak");
    let daemon = start_daemon(bin, &dir, pairs);
    thread::sleep(Duration::from_millis(500));
    let idle = http_get("/metrics").unwrap_or_default();
    let ports_idle = metric_sum(&idle, "sbc_media_ports_free");
    let rss_start = daemon.rss_kib();
    println!(
        "\nsoak: {secs} s at {cps} calls/s ({}), then the leak check",
        kinds
            .iter()
            .map(|(_, _, share, _, what)| format!("{share}% {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let uases: Vec<Sipp> = kinds
        .iter()
        .enumerate()
        .map(|(i, (callee, ..))| {
            Sipp::spawn(&dir.join(format!("uas{i}")), callee, uas_ip(i as u64), &[])
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let limit = secs + HOLD_SECS + 60;
    let offered: Vec<u64> = kinds
        .iter()
        .map(|(_, _, share, _, _)| (cps * share).div_ceil(100) * secs)
        .collect();
    let uacs: Vec<Sipp> = kinds
        .iter()
        .enumerate()
        .map(|(i, (_, caller, share, _, _))| {
            let args = vec![
                format!("{OUTSIDE}:{SIP_PORT}"),
                "-s".into(),
                service(i as u64),
                "-m".into(),
                offered[i].to_string(),
                "-r".into(),
                (cps * share).div_ceil(100).to_string(),
                // The built-in uac pauses this long between ACK and BYE.
                "-d".into(),
                (HOLD_SECS * 1000).to_string(),
                "-timeout".into(),
                format!("{limit}s"),
            ];
            Sipp::spawn(
                &dir.join(format!("uac{i}")),
                caller,
                uac_ip(i as u64),
                &args,
            )
        })
        .collect();
    println!("{:>6} | {:>10} | {:>9}", "second", "calls up", "RSS KiB");
    let started = now();
    let mut rss = Vec::new();
    while now().saturating_duration_since(started) < Duration::from_secs(secs + HOLD_SECS + 35) {
        thread::sleep(Duration::from_secs(30));
        let at = now().saturating_duration_since(started).as_secs();
        let kib = daemon.rss_kib();
        rss.push(kib);
        println!(
            "{at:>6} | {:>10} | {kib:>9}",
            calls_active().map_or("-".into(), |n| n.to_string())
        );
    }
    let counts: Vec<Counts> = uacs
        .into_iter()
        .map(|uac| uac.finish(Duration::from_secs(30)))
        .collect();
    drop(uases);
    // Every transaction of the last calls may linger 64*T1.
    thread::sleep(Duration::from_secs(33));
    let end = http_get("/metrics").unwrap_or_default();
    let left = |name: &str| metric_sum(&end, name).unwrap_or(-1.0);
    let mut unexpected = Vec::new();
    for (i, ((_, _, _, succeeds, what), c)) in kinds.iter().zip(&counts).enumerate() {
        let (good, bad) = if *succeeds {
            (c.ok, c.failed)
        } else {
            (c.failed, c.ok)
        };
        println!(
            "  {what}: {good} of {} as expected, {bad} otherwise",
            offered[i]
        );
        if good != offered[i] {
            unexpected.push(format!("{what}: {good} of {} as expected", offered[i]));
        }
    }
    let rss_end = daemon.rss_kib();
    let peak = rss.iter().copied().max().unwrap_or(rss_end);
    println!(
        "RSS: {rss_start} KiB at start, peak {peak} KiB, {rss_end} KiB at the end; left over: \
         calls {}, transactions {}, media streams {}, media ports free {} of {}",
        left("sbc_calls_active"),
        left("sbc_sip_transactions_active"),
        left("sbc_media_streams_active"),
        left("sbc_media_ports_free"),
        ports_idle.unwrap_or(-1.0),
    );
    drop(daemon);
    assert!(unexpected.is_empty(), "unexpected outcomes: {unexpected:?}");
    assert_eq!(left("sbc_calls_active"), 0.0, "calls left");
    assert_eq!(
        left("sbc_sip_transactions_active"),
        0.0,
        "transactions left"
    );
    assert_eq!(left("sbc_media_streams_active"), 0.0, "media streams left");
    assert_eq!(
        metric_sum(&end, "sbc_media_ports_free"),
        ports_idle,
        "media ports not back"
    );
}
