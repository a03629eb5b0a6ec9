//! Our relay side by side with rtpengine under the same Kamailio: issue
//! 16's comparison. One Kamailio configuration (Debian's 5.6 with its
//! `rtpengine` module: offer on the INVITE, answer on the 200, query and
//! delete on the BYE; [`tests::kamailio::rtpengine_proxy_config`], the one
//! the ng end-to-end test runs) drives either rtpengine 10.5 or our
//! daemon's ng server, and SIPp calls with audio cross it.
//!
//! `cargo bench -p benches --bench ng` (root: network namespaces and a
//! packet socket; Debian packages `kamailio`, `sip-tester`, `nftables` and
//! `rtpengine-daemon`, which `scripts/test.sh --install-only` installs)
//! builds the bench profile's `sbc` binary, then for each rate of
//! `NG_BENCH_RATES` (new calls a second, default `10,30`) and each of
//! `NG_BENCH_ROUNDS` rounds (default 3) runs both media servers one after
//! the other, the order alternating every round. Each run has a fresh
//! private network namespace (loopback only, [`tests::lab::Net`]) holding
//! the media server, Kamailio (`NG_BENCH_CHILDREN` UDP workers, default 4),
//! the SIPp peers and the measurements, and the same load: a SIPp
//! `uac_pcap` (RTP played from Debian's `g711a.pcap`, 246 packets over
//! about 5 s, then BYE) places `NG_BENCH_SECS` (default 10) seconds of calls
//! to a SIPp callee (`uas` answering the offered PCMA, [`CALLEE_SCENARIO`])
//! with `-rtp_echo`, which sends every packet back.
//!
//! Both servers relay in userspace with `NG_BENCH_THREADS` worker threads
//! (default 2, one per core here; rtpengine with `--table=-1`, no kernel
//! module; ours with XDP off), release a deleted call at once (rtpengine
//! `--delete-delay=0`, ours' default) and listen for ng on the same
//! address. Measured per run, the same way for both:
//!
//! - CPU per relayed packet: utime + stime of the media server's whole
//!   process (every thread; `/proc/<pid>/stat`) from before the first call
//!   to after the last, over the packets it sent out;
//! - packets: nftables counters in the namespace's output hook count the
//!   UDP datagrams sent to the relay's two media addresses (by the peers)
//!   and sent from them (by the relay); loss is the share of the first that
//!   never left again (the echoes of a call's last packets may meet a
//!   deleted call on either server);
//! - ng reply latency: a packet socket on the namespace's loopback sees
//!   each ng request (Kamailio's) and its reply (the server's) with the
//!   kernel's receive timestamps ([`benches::ngtap`]), so nothing is added
//!   to the path and neither server reports on itself; p50 and p99 over
//!   every offer, answer, query and delete of the run;
//! - Kamailio's own CPU (its process group), to show the proxy side did the
//!   same work.
//!
//! It prints each run, a summary (median over the rounds) and a table of
//! ratios, rtpengine's over ours, each taken between the runs of the same
//! round (median, min-max over the rounds). Ratios, not absolute numbers,
//! are the result: the machine is shared and noisy. Nothing here is
//! asserted on time. `NG_BENCH_KEEP=1` keeps each run's directory (logs of
//! both servers and of Kamailio).
//!
//! Under `cargo test --benches` (no `--bench` argument) it runs a smoke
//! load instead (4 calls at 2 a second per system, one round) and asserts
//! that every call completed, packets were relayed, every ng request was
//! answered and timed, and the CPU readings exist: the harness still works.
//! It needs root like the full run; it skips (printing why) without it,
//! unless `SBC_REQUIRE_PRIVILEGED=1` or `CI=true`, where a missing
//! privilege or package fails it.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use benches::ngtap::{NgTap, Timings};
use benches::rtpengine::{self, Rtpengine};
use benches::siplab::{
    ADMIN_PORT, Daemon, OUTSIDE, env_or, group_cpu, percentile, process_cpu, sbc_binary,
};
use benches::{Measured, median, number_cell, per_round, ratio_cell, runs_of};
use tests::kamailio::{Kamailio, Memory, rtpengine_proxy_config};
use tests::lab::Net;
use tests::netns::{skip_unless_privileged, skip_unless_sipp, skip_unless_tool};
use tests::sipp::{Sipp, SippResult};

const NAME: &str = "ng bench";

/// The relay's media addresses (realms / rtpengine interfaces `outside`
/// and `inside`), the ng socket, Kamailio and the two SIPp peers, inside
/// each run's namespace.
const MEDIA_OUTSIDE: Ipv4Addr = OUTSIDE;
const MEDIA_INSIDE: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 2);
const NG: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 70, 0, 3)), 2223);
const PROXY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 70, 0, 4)), 5060);
const CALLER: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 30);
const CALLEE: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 10);
const PEER_MEDIA_PORT: u16 = 16000;
const SIP_PORT: u16 = 5060;
/// Both servers' media port range.
const PORTS: (u16, u16) = (20000, 39999);

/// The callee: SIPp's built-in `uas` with the answer `uac_pcap`'s offer
/// asks for (PCMA and telephone-event; the built-in one answers PCMU,
/// which was not offered, and rtpengine then transcodes every packet while
/// ours passes them through: not the comparison meant here). It echoes the
/// audio with `-rtp_echo`.
const CALLEE_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ng bench callee: answer PCMA, wait for BYE">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=callee 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-11,16

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="500"/>
</scenario>
"#;

/// The media servers under the same Kamailio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Sbc,
    Rtpengine,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Sbc => "ours (sbc)",
            System::Rtpengine => "rtpengine 10.5",
        }
    }
}

/// What one run of one system measured.
#[derive(Debug)]
struct Run {
    system: System,
    round: u64,
    offered: u64,
    ok: u64,
    failed: u64,
    /// CPU of the media server's process over the run.
    cpu: Option<Duration>,
    /// CPU of Kamailio's process group over the run.
    kamailio_cpu: Option<Duration>,
    /// UDP datagrams sent to the relay's media addresses, and from them.
    to_relay: u64,
    from_relay: u64,
    ng: Timings,
}

impl Run {
    fn clean(&self) -> bool {
        self.ok == self.offered && self.failed == 0 && self.ng.unanswered == 0
    }

    /// Microseconds of the media server's CPU per relayed packet.
    fn cpu_per_packet(&self) -> Option<f64> {
        (self.from_relay > 0).then(|| {
            self.cpu
                .map(|c| c.as_secs_f64() * 1e6 / self.from_relay as f64)
        })?
    }

    /// The share of the packets sent to the relay that it did not send on,
    /// in percent.
    fn loss(&self) -> Option<f64> {
        (self.to_relay > 0).then(|| {
            100.0 * self.to_relay.saturating_sub(self.from_relay) as f64 / self.to_relay as f64
        })
    }

    fn ng_p(&self, p: usize) -> Option<f64> {
        let all = self.ng.micros(None);
        (!all.is_empty()).then(|| percentile(&all, p) as f64)
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if skip_unless_privileged(NAME)
        || skip_unless_sipp(NAME)
        || skip_unless_tool(NAME, "kamailio", "-v", "apt-get install kamailio")
        || skip_unless_tool(NAME, "nft", "--version", "apt-get install nftables")
        || skip_unless_tool(
            NAME,
            "rtpengine",
            "--version",
            "benches/scripts/install-rtpengine.sh",
        )
    {
        return;
    }
    let threads = env_or("NG_BENCH_THREADS", 2).clamp(1, 16) as u32;
    let children = env_or("NG_BENCH_CHILDREN", 4).clamp(1, 32) as u32;
    let (rates, secs, rounds) = if full {
        let rates: Vec<u64> = std::env::var("NG_BENCH_RATES")
            .unwrap_or_else(|_| "10,30".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .map(|r: u64| r.clamp(1, 200))
            .collect();
        (
            rates,
            env_or("NG_BENCH_SECS", 10).clamp(1, 60),
            env_or("NG_BENCH_ROUNDS", 3).clamp(1, 9),
        )
    } else {
        (vec![2], 2, 1)
    };
    let keep = std::env::var_os("NG_BENCH_KEEP");
    let work = std::env::temp_dir().join(format!("sbc-ng-bench-{}", std::process::id()));
    fs::create_dir_all(&work).expect("work directory");
    let bin = sbc_binary();
    println!("sbc binary: {}", bin.display());
    println!(
        "rtpengine: {}",
        rtpengine::version("rtpengine").unwrap_or_else(|e| e.to_string())
    );
    println!("work directory: {}", work.display());
    println!(
        "load: SIPp uac_pcap -> Kamailio ({children} UDP workers, rtpengine module) -> SIPp uas -rtp_echo, \
         {secs} s of calls per run; media servers: {threads} relay threads, userspace; rounds: {rounds}"
    );
    println!(
        "{:>4} | {:>5} | {:<15} | {:>9} | {:>19} | {:>7} | {:>12} | {:>11} | {:>11} | {:>13}",
        "cps",
        "round",
        "system",
        "calls ok",
        "pkts to/from relay",
        "loss %",
        "CPU us/pkt",
        "ng p50 us",
        "ng p99 us",
        "kamailio CPU"
    );
    let mut runs: Vec<(u64, Run)> = Vec::new();
    for (r, &rate) in rates.iter().enumerate() {
        for round in 0..rounds {
            // Alternate which system runs first, every round and rate.
            let order = if (round as usize + r).is_multiple_of(2) {
                [System::Sbc, System::Rtpengine]
            } else {
                [System::Rtpengine, System::Sbc]
            };
            for (k, system) in order.into_iter().enumerate() {
                let dir = work.join(format!("{rate}-{round}-{k}"));
                let mut run = run_one(system, &bin, &dir, threads, children, rate, secs);
                run.round = round;
                print_run(rate, &run);
                if !full {
                    assert!(
                        run.clean(),
                        "smoke: calls through {} failed: {run:?}",
                        system.name()
                    );
                    assert!(
                        run.from_relay > 0,
                        "smoke: {} relayed nothing: {run:?}",
                        system.name()
                    );
                    assert!(
                        run.cpu.is_some(),
                        "smoke: no CPU reading of {}",
                        system.name()
                    );
                    for command in ["offer", "answer", "delete"] {
                        assert!(
                            !run.ng.micros(Some(command)).is_empty(),
                            "smoke: no {command} timed for {}: {run:?}",
                            system.name()
                        );
                    }
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
        println!("kept (NG_BENCH_KEEP): {}", work.display());
    }
}

/// Our daemon as a media-only node: the two realms with media addresses,
/// the ng socket, no SIP listener.
fn daemon_toml(threads: u32) -> String {
    format!(
        "[ng]\nlisten = \"{NG}\"\n\n\
         [metrics]\nlisten = \"{OUTSIDE}:{ADMIN_PORT}\"\n\n\
         [logging]\nlevel = \"warn\"\n\n\
         [media]\nport_min = {}\nport_max = {}\nrelay_threads = {threads}\n\
         xdp = {{ mode = \"off\", interfaces = [] }}\n\n\
         [[realm]]\nname = \"outside\"\nmedia = {{ address = \"{MEDIA_OUTSIDE}\" }}\n\n\
         [[realm]]\nname = \"inside\"\nmedia = {{ address = \"{MEDIA_INSIDE}\" }}\n",
        PORTS.0, PORTS.1
    )
}

/// nftables counters in the namespace's output hook: datagrams sent to the
/// relay's media addresses and sent from them (the ng port is elsewhere).
const NFT_RULES: &str = "table ip ngbench {\n\
     counter to_relay {}\n\
     counter from_relay {}\n\
     chain out {\n\
       type filter hook output priority 0; policy accept;\n\
       ip daddr { 127.70.0.1, 127.70.0.2 } meta l4proto udp counter name \"to_relay\"\n\
       ip saddr { 127.70.0.1, 127.70.0.2 } meta l4proto udp counter name \"from_relay\"\n\
     }\n\
     }\n";

fn nft_load(net: &Net) {
    let mut child = net
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("nft stdin")
        .write_all(NFT_RULES.as_bytes())
        .expect("write nft rules");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The packet count of counter `name`.
fn nft_counter(net: &Net, name: &str) -> u64 {
    let out = net
        .command("nft")
        .args(["list", "counter", "ip", "ngbench", name])
        .stdin(Stdio::null())
        .output()
        .expect("nft list counter");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in `nft list counter {name}`: {text}"))
}

/// One run of `system` at `rate` in a namespace of its own.
fn run_one(
    system: System,
    bin: &Path,
    dir: &Path,
    threads: u32,
    children: u32,
    rate: u64,
    secs: u64,
) -> Run {
    fs::create_dir_all(dir).expect("run directory");
    let net = Net::new();
    assert!(
        net.is_isolated(),
        "no private network namespace: the comparison runs each system in one"
    );
    nft_load(&net);
    let (mut daemon, mut engine) = (None, None);
    match system {
        System::Sbc => {
            daemon = Some(Daemon::start_with(
                Some(&net),
                bin,
                dir,
                &daemon_toml(threads),
            ))
        }
        System::Rtpengine => {
            let options = rtpengine::Options {
                binary: "rtpengine".to_owned(),
                ng: NG,
                interfaces: vec![
                    ("outside".to_owned(), IpAddr::V4(MEDIA_OUTSIDE)),
                    ("inside".to_owned(), IpAddr::V4(MEDIA_INSIDE)),
                ],
                ports: PORTS,
                threads,
                // Released at the delete, as ours does.
                delete_delay: Some(0),
                // Warnings and errors, as ours logs.
                log_level: 4,
                log: dir.join("rtpengine.log"),
            };
            engine =
                Some(Rtpengine::start_in(Some(&net), &options).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    let pid = daemon
        .as_ref()
        .map_or_else(|| engine.as_ref().map_or(0, Rtpengine::pid), Daemon::pid);
    // The tap runs before Kamailio starts: its start-up ping is timed too.
    let tap = NgTap::start(&net, NG.port()).expect("packet socket (root?)");
    let kamailio = Kamailio::start_with(
        &net,
        dir,
        PROXY,
        &rtpengine_proxy_config(
            PROXY,
            children,
            NG,
            SocketAddr::new(IpAddr::V4(CALLEE), SIP_PORT),
        ),
        Memory {
            shm_mb: 128,
            pkg_mb: 8,
        },
    );
    let offered = rate * secs;
    // Each call plays about 5 s of audio; SIPp's own bound covers the
    // last call's setup, audio and teardown with room to spare.
    let timeout = Duration::from_secs(secs + 30);
    let scenario = dir.join("callee.xml");
    fs::write(&scenario, CALLEE_SCENARIO).expect("write the callee's scenario");
    let callee = net
        .place(
            Sipp::scenario_file(&scenario)
                .local(IpAddr::V4(CALLEE), SIP_PORT)
                .media(IpAddr::V4(CALLEE), PEER_MEDIA_PORT)
                .rtp_echo()
                .without_message_log()
                .calls(u32::try_from(offered).unwrap_or(u32::MAX))
                .timeout(timeout),
        )
        .start();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu_before, kamailio_before) = (process_cpu(pid), group_cpu(kamailio.pid()));
    let caller = net
        .place(
            Sipp::builtin("uac_pcap")
                .local(IpAddr::V4(CALLER), SIP_PORT)
                .media(IpAddr::V4(CALLER), PEER_MEDIA_PORT)
                .remote(PROXY)
                .calls(u32::try_from(offered).unwrap_or(u32::MAX))
                .rate(rate as f64)
                .without_message_log()
                .timeout(timeout),
        )
        .run();
    // The last echoes cross the relay right after the BYE.
    std::thread::sleep(Duration::from_millis(200));
    let (cpu_after, kamailio_after) = (process_cpu(pid), group_cpu(kamailio.pid()));
    let callee = callee.kill();
    let diff = |after: Option<Duration>, before: Option<Duration>| {
        after.zip(before).map(|(a, b)| a.saturating_sub(b))
    };
    let run = Run {
        system,
        round: 0,
        offered,
        ok: caller.successful(),
        failed: caller.failed(),
        cpu: diff(cpu_after, cpu_before),
        kamailio_cpu: diff(kamailio_after, kamailio_before),
        to_relay: nft_counter(&net, "to_relay"),
        from_relay: nft_counter(&net, "from_relay"),
        ng: tap.finish(),
    };
    if !run.clean() {
        report_failure(&run, &caller, &callee, &kamailio.log());
    }
    drop(kamailio);
    drop(daemon);
    drop(engine);
    drop(net);
    run
}

fn report_failure(run: &Run, caller: &SippResult, callee: &SippResult, kamailio_log: &str) {
    println!(
        "       not clean ({} unanswered ng requests): caller:\n{}\n       callee:\n{}",
        run.ng.unanswered,
        caller.report(),
        callee.report()
    );
    let errors: Vec<&str> = kamailio_log
        .lines()
        .filter(|l| l.contains("ERROR"))
        .collect();
    if let Some(first) = errors.first() {
        println!(
            "       ({} ERROR lines in kamailio's log, the first: {first})",
            errors.len()
        );
    }
}

fn print_run(rate: u64, run: &Run) {
    println!(
        "{rate:>4} | {:>5} | {:<15} | {:>9} | {:>19} | {:>7} | {:>12} | {:>11} | {:>11} | {:>13}{}",
        run.round,
        run.system.name(),
        format!("{}/{}", run.ok, run.offered),
        format!("{}/{}", run.to_relay, run.from_relay),
        number_cell(run.loss(), 3),
        number_cell(run.cpu_per_packet(), 2),
        number_cell(run.ng_p(50), 0),
        number_cell(run.ng_p(99), 0),
        run.kamailio_cpu
            .map_or_else(|| "-".into(), |c| format!("{:.2} s", c.as_secs_f64())),
        if run.clean() { "" } else { "  <- not clean" },
    );
    // Where a tail comes from: each command's own p50/p99.
    let mut by_command = String::new();
    for command in ["offer", "answer", "query", "delete"] {
        let times = run.ng.micros(Some(command));
        if !times.is_empty() {
            let _ = write!(
                by_command,
                " {command} {}/{}",
                percentile(&times, 50),
                percentile(&times, 99)
            );
        }
    }
    println!("       ng p50/p99 us by command:{by_command}");
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

/// Per rate and system: clean rounds and the medians.
fn summary(rates: &[u64], runs: &[(u64, Run)]) -> String {
    let mut t = String::from(
        "\nsummary (median over rounds)\n\n\
         | new calls/s | system | clean rounds | packets relayed | loss | CPU per relayed packet (us) | ng reply p50 (us) | ng reply p99 (us) | Kamailio CPU (s) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for &rate in rates {
        for system in [System::Sbc, System::Rtpengine] {
            let these = runs_of(runs, rate, system);
            let med = |f: &dyn Fn(&Run) -> Option<f64>| {
                median(these.iter().filter_map(|r| f(r)).collect())
            };
            let _ = writeln!(
                t,
                "| {rate} | {} | {}/{} | {} | {}% | {} | {} | {} | {} |",
                system.name(),
                these.iter().filter(|r| r.clean()).count(),
                these.len(),
                number_cell(med(&|r| Some(r.from_relay as f64)), 0),
                number_cell(med(&Run::loss), 3),
                number_cell(med(&Run::cpu_per_packet), 2),
                number_cell(med(&|r| r.ng_p(50)), 0),
                number_cell(med(&|r| r.ng_p(99)), 0),
                number_cell(med(&|r| r.kamailio_cpu.map(|c| c.as_secs_f64())), 2),
            );
        }
    }
    t
}

/// rtpengine's numbers over ours, ratio per round, then median and range.
fn ratios(rates: &[u64], runs: &[(u64, Run)]) -> String {
    let mut t = String::from(
        "\nratios: rtpengine over ours, same round (median, min-max over rounds); \
         above 1 = rtpengine uses more CPU per packet / answers ng slower\n\n\
         | new calls/s | CPU per relayed packet | ng reply p50 | ng reply p99 | clean rounds (rtpengine / ours) |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for &rate in rates {
        let ours = runs_of(runs, rate, System::Sbc);
        let theirs = runs_of(runs, rate, System::Rtpengine);
        let ratio = |f: &dyn Fn(&Run) -> Option<f64>| ratio_cell(&per_round(&ours, &theirs, f));
        let _ = writeln!(
            t,
            "| {rate} | {} | {} | {} | {}/{} / {}/{} |",
            ratio(&Run::cpu_per_packet),
            ratio(&|r| r.ng_p(50)),
            ratio(&|r| r.ng_p(99)),
            theirs.iter().filter(|r| r.clean()).count(),
            theirs.len(),
            ours.iter().filter(|r| r.clean()).count(),
            ours.len(),
        );
    }
    t
}
