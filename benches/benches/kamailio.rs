//! Signaling side by side with Kamailio: the same SIPp load through our
//! `sbc`, through Kamailio as a plain stateful proxy, and through Kamailio
//! hiding the topology with `topos` on Redis.
//!
//! `cargo bench -p benches --bench kamailio` (root: network namespaces;
//! Debian packages `kamailio`, `kamailio-redis-modules`, `redis-server` and
//! `sip-tester`, which `scripts/test.sh --install-only` installs) builds the
//! bench profile's `sbc` binary, then for each rate of
//! `KAMAILIO_BENCH_RATES` (total calls a second, default `350,1000,1700`)
//! and each of `KAMAILIO_BENCH_ROUNDS` rounds (default 2) runs the three
//! systems one after the other, the order rotated every round so none
//! always runs first or last on this shared machine. Each run has a fresh
//! private network namespace (loopback only, [`tests::lab::Net`]) holding
//! the system, its SIPp peers and the latency probe, and the same load:
//!
//! - `KAMAILIO_BENCH_UACS` SIPp built-in `uac` (INVITE with SDP, ACK, BYE)
//!   to as many built-in `uas` (default 2; one SIPp tops out near 1,000
//!   cps), `KAMAILIO_BENCH_SECS` seconds of calls (default 10, at most 30);
//! - meanwhile the in-process probe of the signaling bench places
//!   `KAMAILIO_BENCH_PROBE_CPS` sequential calls a second (default 50) and
//!   times INVITE -> 200 in microseconds: setup latency under that load.
//!
//! Per run it prints calls ok/failed (and lost: neither, when SIPp gave up),
//! CPU seconds per 1,000 completed calls of the system's whole process
//! (ours: `/proc/<pid>/stat`, every thread; Kamailio: every process of its
//! process group, the main one and its forked workers; with topos, plus the
//! Redis server's, shown apart too) and the probe's p50/p99. At the end a
//! summary per rate (median over the rounds) and the table of ratios,
//! Kamailio's over ours, each ratio taken between runs of the same round
//! (median, then min-max over the rounds), and each system's highest rate
//! with no failed call in any round. Ratios, not absolute numbers, are the
//! result: the machine is shared and noisy. Nothing here is asserted on
//! time.
//!
//! What it does not compare: our SBC anchors the media of every call (it
//! allocates a port pair per leg and rewrites the SDP); Kamailio, without
//! rtpengine, relays the SDP untouched. Kamailio runs
//! `KAMAILIO_BENCH_CHILDREN` UDP workers (default 4), ours its default
//! runtime.
//!
//! `KAMAILIO_BENCH_SYSTEMS` (default `sbc,proxy,topos`) picks the systems;
//! `KAMAILIO_BENCH_KEEP=1` keeps each run's directory (SIPp's statistics
//! and error logs, Kamailio's and our daemon's logs) and prints where.
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a smoke load
//! instead (30 calls at 10 a second and 5 probe calls per system, one round) and asserts
//! that every call of every system completed and that the CPU readings
//! exist: the harness still works. It needs root like the full run; it
//! skips (printing why) without it, unless `SBC_REQUIRE_PRIVILEGED=1` or
//! `CI=true`, where a missing privilege or package fails it.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::Duration;

use benches::kamailio::{self, Mode, Redis};
use benches::siplab::{
    Counts, Daemon, OUTSIDE, PROBE, SIP_PORT, env_or, group_cpu, now, one_call, percentile,
    process_cpu, run_calls_in, sbc_binary, service, uas_ip,
};
use benches::{Measured, median, number_cell, per_round, ratio_cell, runs_of};
use tests::lab::Net;
use tests::netns::{skip_unless, skip_unless_privileged, skip_unless_sipp, skip_unless_tool};

const NAME: &str = "kamailio bench";
/// Where topos' Redis listens, inside each run's namespace.
const REDIS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 70, 0, 5)), 6379);

/// The systems under the same load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Sbc,
    Kamailio(Mode),
}

const SYSTEMS: [System; 3] = [
    System::Sbc,
    System::Kamailio(Mode::Proxy),
    System::Kamailio(Mode::ToposRedis),
];

impl System {
    /// Its name in `KAMAILIO_BENCH_SYSTEMS`.
    fn key(self) -> &'static str {
        match self {
            System::Sbc => "sbc",
            System::Kamailio(Mode::Proxy) => "proxy",
            System::Kamailio(Mode::ToposRedis) => "topos",
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::Sbc => "ours (sbc)",
            System::Kamailio(mode) => mode.name(),
        }
    }
}

/// What one run of one system measured.
#[derive(Debug, Clone)]
struct Run {
    system: System,
    round: u64,
    offered: u64,
    calls: Counts,
    probe_ok: u64,
    probe_failed: u64,
    /// CPU of the system over the run: the daemon (or Kamailio's process
    /// group), and Redis apart (topos only).
    cpu: Option<Duration>,
    redis_cpu: Option<Duration>,
    /// Probe INVITE -> 200 times, microseconds, sorted.
    latency: Vec<u64>,
}

impl Run {
    /// Every SIPp call and every probe call completed.
    fn clean(&self) -> bool {
        self.calls.clean(self.offered) && self.probe_failed == 0
    }

    /// CPU seconds (system + Redis) per 1,000 completed calls.
    fn cpu_per_1000(&self) -> Option<f64> {
        let done = self.calls.ok + self.probe_ok;
        let cpu = self.cpu? + self.redis_cpu.unwrap_or_default();
        (done > 0).then(|| cpu.as_secs_f64() * 1000.0 / done as f64)
    }

    fn p(&self, p: usize) -> Option<u64> {
        (!self.latency.is_empty()).then(|| percentile(&self.latency, p))
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if skip_unless_privileged(NAME)
        || skip_unless_sipp(NAME)
        || skip_unless_tool(NAME, "kamailio", "-v", "apt-get install kamailio")
        || skip_unless_tool(
            NAME,
            "redis-server",
            "--version",
            "apt-get install redis-server",
        )
        || skip_unless(
            NAME,
            (!Path::new(tests::kamailio::MODULES)
                .join("topos_redis.so")
                .exists())
            .then(|| {
                "Kamailio's topos_redis module is not installed \
                 (apt-get install kamailio-redis-modules)"
                    .to_owned()
            }),
        )
    {
        return;
    }
    let pairs = env_or("KAMAILIO_BENCH_UACS", 2).clamp(1, 10);
    let children = env_or("KAMAILIO_BENCH_CHILDREN", 4).clamp(1, 32) as u32;
    let (rates, secs, rounds, probe_cps) = if full {
        let rates: Vec<u64> = std::env::var("KAMAILIO_BENCH_RATES")
            .unwrap_or_else(|_| "350,1000,1700".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .map(|r: u64| r.clamp(pairs, 10_000))
            .collect();
        (
            rates,
            env_or("KAMAILIO_BENCH_SECS", 10).clamp(1, 30),
            env_or("KAMAILIO_BENCH_ROUNDS", 2).clamp(1, 5),
            env_or("KAMAILIO_BENCH_PROBE_CPS", 50).clamp(1, 200),
        )
    } else {
        (vec![10], 3, 1, 5)
    };
    let chosen: Vec<System> = match std::env::var("KAMAILIO_BENCH_SYSTEMS") {
        Ok(list) => SYSTEMS
            .into_iter()
            .filter(|s| list.split(',').any(|n| n.trim() == s.key()))
            .collect(),
        Err(_) => SYSTEMS.to_vec(),
    };
    // Set to keep every run's logs (SIPp's error logs, Kamailio's, ours).
    let keep = std::env::var_os("KAMAILIO_BENCH_KEEP");
    let work = std::env::temp_dir().join(format!("sbc-kamailio-bench-{}", std::process::id()));
    fs::create_dir_all(&work).expect("work directory");
    let bin = sbc_binary();
    println!("sbc binary: {}", bin.display());
    println!("work directory: {}", work.display());
    println!(
        "load: {pairs} SIPp uac/uas pairs (built-in scenarios, INVITE with SDP), {secs} s of calls \
         per run, probe {probe_cps} calls/s; kamailio: {children} UDP workers; rounds: {rounds}"
    );
    println!(
        "{:>6} | {:>5} | {:<21} | {:>20} | {:>13} | {:>22} | {:>9} | {:>9}",
        "rate",
        "round",
        "system",
        "calls ok/failed",
        "probe ok/fail",
        "CPU-s/1000 calls",
        "p50 us",
        "p99 us"
    );
    let mut runs: Vec<(u64, Run)> = Vec::new();
    for (r, &rate) in rates.iter().enumerate() {
        for round in 0..rounds {
            // Rotate the order every round (and every rate), so no system
            // always runs first, last, or right after the same one.
            let start = (round as usize + r) % SYSTEMS.len();
            for k in 0..SYSTEMS.len() {
                let system = SYSTEMS[(start + k) % SYSTEMS.len()];
                if !chosen.contains(&system) {
                    continue;
                }
                let dir = work.join(format!("{rate}-{round}-{k}"));
                let mut run = run_one(system, &bin, &dir, pairs, children, rate, secs, probe_cps);
                run.round = round;
                print_run(rate, round, &run);
                if !full {
                    // Ours must lose nothing. Kamailio (topos on Redis
                    // above all) loses the odd call under any load, which
                    // the full comparison reports: the smoke only asks
                    // that the harness carried its calls.
                    let carried = match system {
                        System::Sbc => run.clean(),
                        System::Kamailio(_) => {
                            run.probe_ok > 0 && run.calls.ok * 10 >= run.offered * 9
                        }
                    };
                    assert!(
                        carried,
                        "smoke: calls through {} failed: {run:?}",
                        system.name()
                    );
                    assert!(
                        run.cpu.is_some(),
                        "smoke: no CPU reading of {}",
                        system.name()
                    );
                    assert!(
                        run.system != System::Kamailio(Mode::ToposRedis) || run.redis_cpu.is_some(),
                        "smoke: no CPU reading of redis"
                    );
                }
                if keep.is_none() {
                    let _ = fs::remove_dir_all(&dir);
                }
                runs.push((rate, run));
            }
        }
    }
    println!("{}", summary(&rates, &runs));
    println!("{}", ratios(&rates, &runs));
    if keep.is_none() {
        let _ = fs::remove_dir_all(&work);
    } else {
        println!("kept (KAMAILIO_BENCH_KEEP): {}", work.display());
    }
}

/// One run of `system` at `rate` in a namespace of its own.
#[allow(clippy::too_many_arguments)] // the bench's knobs, passed through
fn run_one(
    system: System,
    bin: &Path,
    dir: &Path,
    pairs: u64,
    children: u32,
    rate: u64,
    secs: u64,
    probe_cps: u64,
) -> Run {
    let net = Net::new();
    assert!(
        net.is_isolated(),
        "no private network namespace: the comparison runs each system in one"
    );
    let targets: Vec<(String, SocketAddr)> = (0..pairs)
        .map(|i| (service(i), SocketAddr::new(IpAddr::V4(uas_ip(i)), SIP_PORT)))
        .collect();
    let listen = SocketAddr::new(IpAddr::V4(OUTSIDE), SIP_PORT);
    // Started in this order, dropped in reverse (Kamailio before Redis).
    let mut redis = None;
    let mut kamailio = None;
    let mut daemon = None;
    match system {
        System::Sbc => daemon = Some(Daemon::start_in(Some(&net), bin, dir, pairs)),
        System::Kamailio(mode) => {
            if mode == Mode::ToposRedis {
                redis = Some(Redis::start(&net, &dir.join("redis"), REDIS));
            }
            kamailio = Some(kamailio::start(
                &net, dir, mode, listen, children, &targets, REDIS,
            ));
        }
    }
    let cpu = || match (&daemon, &kamailio) {
        (Some(d), _) => process_cpu(d.pid()),
        (_, Some(k)) => group_cpu(k.pid()),
        _ => None,
    };
    let redis_cpu = || redis.as_ref().and_then(|r| process_cpu(r.pid()));
    let (cpu_before, redis_before) = (cpu(), redis_cpu());
    let offered = rate * secs;
    let (calls, (latency, probe_failed)) = thread::scope(|scope| {
        let load = scope.spawn(|| {
            run_calls_in(
                Some(&net),
                &dir.join("load"),
                pairs,
                rate,
                offered,
                Some(OUTSIDE),
            )
        });
        let probe = probe(&net, listen, secs, probe_cps);
        (load.join().expect("load"), probe)
    });
    let diff = |after: Option<Duration>, before: Option<Duration>| {
        after.zip(before).map(|(a, b)| a.saturating_sub(b))
    };
    let run = Run {
        system,
        round: 0,
        offered,
        calls,
        probe_ok: latency.len() as u64,
        probe_failed,
        cpu: diff(cpu(), cpu_before),
        redis_cpu: diff(redis_cpu(), redis_before),
        latency,
    };
    if !run.clean()
        && let Some(k) = &kamailio
    {
        let log = k.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        if let Some(first) = errors.first() {
            println!(
                "       ({} ERROR lines in kamailio's log, the first: {first})",
                errors.len()
            );
        }
    }
    drop(daemon);
    drop(kamailio);
    drop(redis);
    drop(net);
    run
}

/// Sequential probe calls at `cps` for `secs - 2` seconds (at least one),
/// from 1.3 s after the load starts (its UASes bind for 0.3 s first), so
/// they end before the load and its UASes do: the INVITE -> 200 times and
/// the count of failed probe calls.
fn probe(net: &Net, target: SocketAddr, secs: u64, cps: u64) -> (Vec<u64>, u64) {
    let socket = net.udp_socket(SocketAddr::new(IpAddr::V4(PROBE), 0));
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    // Let the UASes bind and the load ramp up.
    thread::sleep(Duration::from_millis(1300));
    let started = now();
    let interval = Duration::from_secs_f64(1.0 / cps as f64);
    let (mut times, mut failed) = (Vec::new(), 0);
    let count = secs.saturating_sub(2).max(1) * cps;
    let end = started + Duration::from_secs(secs + 5);
    for n in 0..count {
        if now() > end {
            break; // a failing system made the probe calls slow
        }
        match one_call(&socket, target, n) {
            Some(us) => times.push(us),
            None => failed += 1,
        }
        let next = started + interval * u32::try_from(n + 1).unwrap_or(u32::MAX);
        if let Some(wait) = next.checked_duration_since(now()) {
            thread::sleep(wait);
        }
    }
    times.sort_unstable();
    (times, failed)
}

fn print_run(rate: u64, round: u64, run: &Run) {
    let cpu = match (run.cpu_per_1000(), run.redis_cpu) {
        (Some(c), Some(redis)) => format!(
            "{c:.3} ({:.3} redis)",
            redis.as_secs_f64() * 1000.0 / (run.calls.ok + run.probe_ok).max(1) as f64
        ),
        (Some(c), None) => format!("{c:.3}"),
        (None, _) => "n/a".into(),
    };
    println!(
        "{rate:>6} | {round:>5} | {:<21} | {:>20} | {:>13} | {cpu:>22} | {:>9} | {:>9}{}",
        run.system.name(),
        run.calls.cell(run.offered),
        format!("{}/{}", run.probe_ok, run.probe_failed),
        run.p(50).map_or("-".into(), |v| v.to_string()),
        run.p(99).map_or("-".into(), |v| v.to_string()),
        if run.clean() { "" } else { "  <- not clean" },
    );
}

impl Measured for Run {
    type System = System;
    fn system(&self) -> System {
        self.system
    }
    fn round(&self) -> u64 {
        self.round
    }
}

/// Per rate and system: clean rounds, median CPU per 1,000 calls, median
/// p50 and p99.
fn summary(rates: &[u64], runs: &[(u64, Run)]) -> String {
    let mut t = String::from(
        "\nsummary (median over rounds)\n\n\
         | rate (cps) | system | clean rounds | calls not completed | CPU-s per 1,000 calls | setup p50 (us) | setup p99 (us) |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for &rate in rates {
        for system in SYSTEMS {
            let these = runs_of(runs, rate, system);
            let med = |f: &dyn Fn(&Run) -> Option<f64>| {
                median(these.iter().filter_map(|r| f(r)).collect())
            };
            let _ = writeln!(
                t,
                "| {rate} | {} | {}/{} | {} | {} | {} | {} |",
                system.name(),
                these.iter().filter(|r| r.clean()).count(),
                these.len(),
                number_cell(
                    med(&|r| Some(
                        100.0 * r.offered.saturating_sub(r.calls.ok) as f64
                            / r.offered.max(1) as f64
                    ))
                    .map(|v| v.max(0.0)),
                    2
                ) + "%",
                number_cell(med(&Run::cpu_per_1000), 3),
                number_cell(med(&|r| r.p(50).map(|v| v as f64)), 0),
                number_cell(med(&|r| r.p(99).map(|v| v as f64)), 0),
            );
        }
    }
    t
}

/// Kamailio's numbers over ours, ratio per round, then median and range.
fn ratios(rates: &[u64], runs: &[(u64, Run)]) -> String {
    let mut t = String::from(
        "\nratios: each Kamailio mode over ours, same round (median, min-max over rounds); \
         above 1 = Kamailio uses more CPU / takes longer\n\n\
         | rate (cps) | vs | CPU per call | setup p50 | setup p99 | clean rounds (kamailio / ours) |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let highest_clean = |system: System| {
        rates
            .iter()
            .copied()
            .filter(|&rate| {
                let these = runs_of(runs, rate, system);
                !these.is_empty() && these.iter().all(|r| r.clean())
            })
            .max()
    };
    for &rate in rates {
        let ours = runs_of(runs, rate, System::Sbc);
        for mode in [Mode::Proxy, Mode::ToposRedis] {
            let theirs = runs_of(runs, rate, System::Kamailio(mode));
            let ratio = |f: &dyn Fn(&Run) -> Option<f64>| ratio_cell(&per_round(&ours, &theirs, f));
            let _ = writeln!(
                t,
                "| {rate} | {} | {} | {} | {} | {}/{} / {}/{} |",
                mode.name(),
                ratio(&Run::cpu_per_1000),
                ratio(&|r| r.p(50).map(|v| v as f64)),
                ratio(&|r| r.p(99).map(|v| v as f64)),
                theirs.iter().filter(|r| r.clean()).count(),
                theirs.len(),
                ours.iter().filter(|r| r.clean()).count(),
                ours.len(),
            );
        }
    }
    let show = |r: Option<u64>| r.map_or_else(|| "none".into(), |r| format!("{r} cps"));
    let top = rates.iter().copied().max();
    let ours = highest_clean(System::Sbc);
    let _ = writeln!(
        t,
        "\nhighest rate with every call completed in every round (of {}): ours {}{}",
        rates
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        show(ours),
        if ours.is_some() && ours == top {
            " (the highest tried: raise KAMAILIO_BENCH_RATES to find the limit)"
        } else {
            ""
        }
    );
    for mode in [Mode::Proxy, Mode::ToposRedis] {
        let theirs = highest_clean(System::Kamailio(mode));
        let ratio = match (ours, theirs) {
            (Some(o), Some(k)) => format!(", ours/theirs {:.2}", o as f64 / k as f64),
            _ => String::new(),
        };
        let _ = writeln!(t, "  {}: {}{ratio}", mode.name(), show(theirs));
    }
    t
}
