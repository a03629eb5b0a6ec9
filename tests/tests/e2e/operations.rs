//! Operating the daemon end to end (the operations issue's "Done when"):
//! what an operator sees while calls run, and what a reload does to them.
//!
//! - A live scrape during a SIPp call that plays RTP: `/metrics` shows the
//!   call, its media on the userspace path and the packet counters of both
//!   realms moving (each counts what it received), and each realm's free
//!   media ports down by the call's two;
//!   `/calls` lists it with both legs' realms; `promtool check metrics`
//!   accepts the exposition; afterwards the call is counted as answered and
//!   its CDR line names the realms, the trunk and the media it carried.
//! - SIGHUP with a changed route: the next call follows the new route while
//!   the call that was up when the signal came completes normally.
//! - SIGHUP with a broken configuration: refused and counted, the daemon
//!   keeps running and routes the next call by the old configuration.
//! - SIGHUP that moves a realm's listener to another port: the new port
//!   takes calls at once, the old one refuses new calls with 503 but carries
//!   the call that was up to its end, then closes.
//! - SIGHUP that adds a realm with its own listener and media address: a
//!   call to it is answered with media anchored on the new address.
//! - `[scheduling]`: every signaling thread and every relay thread runs in
//!   the real-time class asked for, and a call with RTP still crosses;
//!   without the privilege the daemon refuses to start and says what is
//!   missing.
//! - `sbc_sip_transit_seconds` starts at the kernel's receive timestamp: an
//!   OPTIONS that waits 300 ms in the socket queue while the daemon is
//!   stopped is counted as 300 ms in the SBC.
//!
//! Every lab has its own addresses ([`Plan::next`]) and every SIPp peer is
//! bounded (20 s at most), so these run in parallel with the other suites.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sbc::sched::{self, CpuList};
use serde_json::Value;
use tests::lab::{Host, Lab, LabConfig, PEER_MEDIA_PORT, Plan, Realm, SIP_PORT, flow};
use tests::netns::{privileged_required, skip_unless_privileged, skip_unless_sipp};
use tests::sipp::{Sipp, SippHandle, SippResult};

/// The longest any peer of these tests may run.
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a condition the daemon should reach soon (a gauge updated on
/// its 1 s tick, a counter, a CDR line) is polled for.
const SETTLE: Duration = Duration::from_secs(5);

/// The test's wall clock (tests are IO shells).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One GET that must answer 200; the body.
fn get_ok(lab: &Lab, path: &str) -> String {
    match lab.admin_get(path) {
        Some((200, body)) => body,
        other => panic!(
            "GET {path} on {} answered {other:?}\n--- sbc stderr ---\n{}",
            lab.plan().admin(),
            lab.daemon_stderr()
        ),
    }
}

/// The sum of every sample of `name` whose labels include all of `labels`
/// (`None` when no sample matches). Exposition lines look like
/// `name{a="x",b="y"} 3`.
fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_set) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric_name != name {
            continue;
        }
        let has_all = labels.iter().all(|(k, v)| {
            label_set
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if let (true, Ok(v)) = (has_all, value.parse::<f64>()) {
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}

/// `metric` on a fresh scrape, polled until it equals `want`; panics with
/// the last scrape otherwise.
fn wait_metric(lab: &Lab, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    let mut last = String::new();
    let found = poll(SETTLE, || {
        last = get_ok(lab, "/metrics");
        (metric(&last, name, labels) == Some(want)).then(|| last.clone())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name}{labels:?} never reached {want} within {SETTLE:?}; last scrape:\n{last}\n\
             --- sbc stderr ---\n{}",
            lab.daemon_stderr()
        )
    })
}

/// Runs `promtool check metrics` on the exposition saved at `path`. Skips
/// with a notice where promtool is missing, unless this run must have it
/// (CI=true or SBC_REQUIRE_PRIVILEGED=1).
fn promtool_check(path: &Path) {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let out = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !privileged_required(),
                "promtool is required (CI=true or SBC_REQUIRE_PRIVILEGED=1) but could not run: \
                 {e}; install Debian's `prometheus` package (scripts/test.sh does)"
            );
            eprintln!("NOTICE: promtool not runnable ({e}); skipping `promtool check metrics`");
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool check metrics {} failed ({}):\n{}{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A caller on `from` dialling the SBC's listener in `from`'s realm.
fn caller(lab: &Lab, scenario: &str, from: Host) -> Sipp {
    lab.peer(scenario, from)
        .remote(lab.plan().realm(Plan::realm_of(from)))
        .timeout(Duration::from_secs(15))
}

/// Whether the running peer's message log already shows `line`.
fn peer_logged(dir: &Path, line: &str) -> bool {
    fs::read_to_string(dir.join("messages.log")).is_ok_and(|log| log.contains(line))
}

/// The lab configuration with calls from `outside` going to `targets`.
fn routed_to(targets: &[&'static str]) -> LabConfig {
    LabConfig {
        outside_targets: targets.to_vec(),
        ..LabConfig::default()
    }
}

/// A lab whose daemon writes CDRs: the lab and the CDR file (in a scratch
/// directory of the test's own, removed by [`Scratch`]'s drop).
fn lab_with_cdrs(name: &str) -> (Lab, Scratch, std::path::PathBuf) {
    let plan = Plan::next();
    let scratch = Scratch::new(&format!("{name}-{}-{}", std::process::id(), plan.slot));
    let cdr_path = scratch.0.join("cdr.jsonl");
    let toml = format!(
        "{}\n[cdr]\npath = {:?}\n",
        plan.toml(&LabConfig::default()),
        cdr_path.display().to_string()
    );
    (Lab::start_toml(name, plan, &toml), scratch, cdr_path)
}

/// A scratch directory under the system temp dir, removed on drop unless
/// the test failed (then it is kept for a look).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sbc-ops-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts a call from the carrier to the PBX that carries RTP: the callee
/// echoes what it gets, the caller plays g711a.pcap (about 4.7 s after the
/// answer). Returns `(caller, callee)`.
fn start_call_with_media(lab: &Lab) -> (SippHandle, SippHandle) {
    let plan = lab.plan();
    let (pbx, carrier) = (plan.host_ip(Host::Pbx), plan.host_ip(Host::Carrier));
    let uas = lab.start_callee(
        &lab.net().place(
            Sipp::builtin("uas")
                .local(pbx, SIP_PORT)
                .media(pbx, PEER_MEDIA_PORT)
                .rtp_echo()
                .timeout(PEER_TIMEOUT),
        ),
    );
    let uac = lab
        .net()
        .place(
            Sipp::builtin("uac_pcap")
                .local(carrier, SIP_PORT)
                .media(carrier, PEER_MEDIA_PORT)
                .remote(plan.realm(Realm::Outside))
                .timeout(PEER_TIMEOUT),
        )
        .start();
    (uac, uas)
}

/// Waits for both peers of a call; both must have succeeded once.
fn finish_call(lab: &Lab, uac: SippHandle, uas: SippHandle) {
    let uac = uac.wait();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
}

/// The records of a CDR file, each parsed.
fn cdr_records(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("CDR line is not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn live_scrape_during_a_call_with_media() {
    const NAME: &str = "live_scrape_during_a_call_with_media";
    // uac_pcap sends RTP through a raw socket: root only.
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let (lab, scratch, cdr_path) = lab_with_cdrs("ops-scrape");
    // Before the call: every media port of each realm's address is free.
    let (port_min, port_max) = lab.plan().media_ports();
    let pool = f64::from(port_max - port_min) + 1.0;
    let ports_free =
        |text: &str, realm: &str| metric(text, "sbc_media_ports_free", &[("realm", realm)]);
    let idle = wait_metric(&lab, "sbc_media_ports_free", &[("realm", "outside")], pool);
    assert_eq!(ports_free(&idle, "inside"), Some(pool), "{idle}");
    let (uac, uas) = start_call_with_media(&lab);

    // The gauges move on the daemon's 1 s tick: wait until the call and
    // its media show, then scrape twice, 1.5 s apart.
    let packets = |text: &str| {
        metric(text, "sbc_media_packets_total", &[("path", "userspace")]).unwrap_or(0.0)
    };
    let received = |text: &str, realm: &str| {
        metric(
            text,
            "sbc_media_packets_total",
            &[("path", "userspace"), ("realm", realm)],
        )
        .unwrap_or(0.0)
    };
    let mut last = String::new();
    let first = poll(SETTLE, || {
        last = get_ok(&lab, "/metrics");
        let up = metric(&last, "sbc_calls_active", &[("realm", "outside")]) == Some(1.0);
        let echoed = received(&last, "inside") > 0.0;
        (up && received(&last, "outside") > 0.0 && echoed).then(|| last.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no call with media showed within {SETTLE:?}; last scrape:\n{last}\n\
             --- sbc stderr ---\n{}",
            lab.daemon_stderr()
        )
    });
    let calls = get_ok(&lab, "/calls");
    thread::sleep(Duration::from_millis(1500));
    let second = get_ok(&lab, "/metrics");
    for line in second.lines().filter(|l| l.starts_with("sbc_media_")) {
        eprintln!("live scrape: {line}");
    }

    for (which, text) in [("first", &first), ("second", &second)] {
        for (name, labels, want) in [
            ("sbc_calls_active", &[("realm", "outside")][..], 1.0),
            (
                "sbc_media_streams_active",
                &[("path", "userspace")][..],
                1.0,
            ),
        ] {
            assert_eq!(
                metric(text, name, labels),
                Some(want),
                "{which} scrape: {name}{labels:?}\n{text}"
            );
        }
        assert!(
            metric(text, "sbc_sip_messages_total", &[("kind", "INVITE")]).is_some_and(|v| v >= 1.0),
            "{which} scrape: no INVITE counted\n{text}"
        );
        // The call holds one RTP/RTCP pair on each realm's address.
        for realm in ["outside", "inside"] {
            assert_eq!(
                ports_free(text, realm),
                Some(pool - 2.0),
                "{which} scrape: free media ports of {realm} during the call\n{text}"
            );
        }
        for path in ["userspace", "xdp"] {
            assert_eq!(
                metric(
                    text,
                    "sbc_media_packets_total",
                    &[("path", path), ("realm", "all")]
                ),
                None,
                "{which} scrape: media is split by realm, never lumped under \"all\"\n{text}"
            );
        }
    }
    assert!(
        packets(&second) > packets(&first),
        "sbc_media_packets_total{{path=\"userspace\"}} did not move in 1.5 s of RTP: \
         {} then {}\n{second}",
        packets(&first),
        packets(&second)
    );
    for realm in ["outside", "inside"] {
        assert!(
            received(&second, realm) > received(&first, realm),
            "sbc_media_packets_total{{path=\"userspace\",realm=\"{realm}\"}} did not move \
             in 1.5 s of RTP: {} then {}\n{second}",
            received(&first, realm),
            received(&second, realm)
        );
    }
    // The two realms carry every packet: no other series (e.g. a catch-all
    // realm) counts any.
    assert_eq!(
        received(&second, "outside") + received(&second, "inside"),
        packets(&second),
        "{second}"
    );

    // /calls: the one call, its inbound leg on `outside`, its outbound leg
    // on `inside` toward trunk `pbx`.
    let listed: Value = serde_json::from_str(&calls)
        .unwrap_or_else(|e| panic!("/calls is not JSON ({e}): {calls}"));
    let list = listed
        .as_array()
        .unwrap_or_else(|| panic!("/calls is not a list: {calls}"));
    assert_eq!(list.len(), 1, "/calls: {calls}");
    assert_eq!(list[0]["a"]["realm"], "outside", "/calls: {calls}");
    assert_eq!(list[0]["b"]["realm"], "inside", "/calls: {calls}");
    assert_eq!(list[0]["trunk"], "pbx", "/calls: {calls}");

    let exposition = scratch.0.join("metrics.txt");
    fs::File::create(&exposition)
        .and_then(|mut f| f.write_all(second.as_bytes()))
        .unwrap_or_else(|e| panic!("write {}: {e}", exposition.display()));
    promtool_check(&exposition);

    finish_call(&lab, uac, uas);

    // After the call: counted once, as answered, and no call left up.
    let after = wait_metric(
        &lab,
        "sbc_calls_total",
        &[
            ("from_realm", "outside"),
            ("to_trunk", "pbx"),
            ("outcome", "answered"),
        ],
        1.0,
    );
    assert_eq!(
        metric(&after, "sbc_calls_total", &[]),
        Some(1.0),
        "one call, counted once\n{after}"
    );
    wait_metric(&lab, "sbc_calls_active", &[("realm", "outside")], 0.0);

    // Its CDR (written at the latest when the daemon stops; see
    // `cdr_is_written_when_the_call_ends_with_its_media_counts`).
    lab.shutdown();
    let records = cdr_records(&cdr_path);
    assert_eq!(records.len(), 1, "CDRs: {records:?}");
    for (key, want) in [
        ("in_realm", "outside"),
        ("in_trunk", "carrier"),
        ("out_realm", "inside"),
        ("out_trunk", "pbx"),
        ("outcome", "answered"),
        ("hangup_by", "caller"),
        ("media_path", "userspace"),
    ] {
        assert_eq!(records[0][key], want, "CDR {key}: {}", records[0]);
    }
}

#[test]
fn cdr_is_written_when_the_call_ends_with_its_media_counts() {
    const NAME: &str = "cdr_is_written_when_the_call_ends_with_its_media_counts";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let (lab, _scratch, cdr_path) = lab_with_cdrs("ops-cdr");
    let (uac, uas) = start_call_with_media(&lab);
    finish_call(&lab, uac, uas);
    // While the daemon still runs: the record of the finished call, with
    // the RTP it relayed both ways on both legs.
    let records = poll(SETTLE, || {
        Some(cdr_records(&cdr_path)).filter(|r| !r.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "no CDR in {} within {SETTLE:?} of the call's end\n--- sbc stderr ---\n{}",
            cdr_path.display(),
            lab.daemon_stderr()
        )
    });
    assert_eq!(records.len(), 1, "CDRs: {records:?}");
    for key in [
        "in_rx_packets",
        "in_tx_packets",
        "out_rx_packets",
        "out_tx_packets",
    ] {
        assert!(
            records[0][key].as_u64().is_some_and(|n| n > 0),
            "CDR {key} is not a positive count: {}",
            records[0]
        );
    }
    lab.shutdown();
}

/// A SIPp call with RTP both ways crosses `lab`'s daemon, its packets
/// relayed in userspace.
fn a_call_crosses_with_media_relayed_in_userspace(lab: &Lab) {
    let (uac, uas) = start_call_with_media(lab);
    finish_call(lab, uac, uas);
    let metrics = get_ok(lab, "/metrics");
    let relayed = metric(
        &metrics,
        "sbc_media_packets_total",
        &[("path", "userspace")],
    );
    assert!(relayed.is_some_and(|n| n > 0.0), "{metrics}");
}

/// Runs `cmd` (the daemon, perhaps behind a wrapper) on `lab`'s
/// configuration and returns its stderr once it has exited unsuccessfully
/// within 10 s; panics with `started` if it keeps running.
fn refused_start(lab: &Lab, mut cmd: std::process::Command, started: &str) -> String {
    let mut child = cmd
        .arg("--config")
        .arg(lab.config_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let status = poll(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{started}");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert!(!status.success(), "{status}: {stderr}");
    stderr
}

/// Each thread of process `pid`: its name, scheduling policy and real-time
/// priority, from `/proc/<pid>/task/*/stat` (proc(5): fields 40 and 41).
fn thread_classes(pid: u32) -> Vec<(String, u32, u32)> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's tasks");
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let (Ok(name), Ok(stat)) = (
            fs::read_to_string(task.path().join("comm")),
            fs::read_to_string(task.path().join("stat")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        // Fields after the name (which may hold spaces) start at field 3.
        let rest: Vec<&str> = stat
            .rsplit_once(") ")
            .expect("stat has a name")
            .1
            .split(' ')
            .collect();
        let field = |n: usize| rest[n - 3].parse::<u32>().expect("a number");
        threads.push((name.trim().to_owned(), field(41), field(40)));
    }
    threads
}

#[test]
fn real_time_scheduling_puts_each_thread_in_its_class_and_calls_still_cross() {
    const NAME: &str = "real_time_scheduling_puts_each_thread_in_its_class_and_calls_still_cross";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let plan = Plan::next();
    let toml = format!(
        "{}\n[scheduling]\nsignaling_priority = 7\nmedia_priority = 9\n",
        plan.toml(&LabConfig::default())
    );
    let lab = Lab::start_toml("ops-realtime", plan, &toml);
    const SCHED_FIFO: u32 = 1;
    let threads = thread_classes(lab.daemon_pid());
    let (relay, signaling): (Vec<_>, Vec<_>) = threads
        .iter()
        .partition(|(name, _, _)| name.starts_with("media-relay"));
    assert!(!relay.is_empty(), "no relay thread in {threads:?}");
    assert!(signaling.len() >= 3, "main, two workers: {threads:?}");
    for (name, policy, priority) in &relay {
        assert_eq!(
            (*policy, *priority),
            (SCHED_FIFO, 9),
            "{name} in {threads:?}"
        );
    }
    for (name, policy, priority) in &signaling {
        assert_eq!(
            (*policy, *priority),
            (SCHED_FIFO, 7),
            "{name} in {threads:?}"
        );
    }
    // Nothing starves: a call with RTP both ways crosses as ever.
    a_call_crosses_with_media_relayed_in_userspace(&lab);
    lab.shutdown();
}

#[test]
fn real_time_scheduling_without_the_privilege_refuses_to_start_and_says_what_is_missing() {
    let lab = Lab::peers_only("ops-realtime-refused");
    let toml = format!(
        "{}\n[scheduling]\nsignaling_priority = 7\n",
        lab.plan().toml(&LabConfig::default())
    );
    fs::write(lab.config_path(), toml).expect("config written");
    // No RLIMIT_RTPRIO, and for root no CAP_SYS_NICE either.
    let mut cmd = lab.net().command("prlimit");
    cmd.arg("--rtprio=0");
    if tests::netns::effective_uid() == Some(0) {
        cmd.args([
            "setpriv",
            "--inh-caps=-sys_nice",
            "--bounding-set=-sys_nice",
        ]);
    }
    cmd.arg(tests::sbc_binary());
    let stderr = refused_start(
        &lab,
        cmd,
        "the daemon started without the privilege its scheduling needs",
    );
    for needed in [
        "scheduling.signaling_priority",
        "SCHED_FIFO priority 7",
        "CAP_SYS_NICE",
    ] {
        assert!(stderr.contains(needed), "{needed:?} not in:\n{stderr}");
    }
}

/// Each thread of process `pid`: its name and the CPUs it may run on, as
/// the kernel writes them (`Cpus_allowed_list` of
/// `/proc/<pid>/task/*/status`).
fn thread_cpus(pid: u32) -> Vec<(String, CpuList)> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's tasks");
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let (Ok(name), Ok(status)) = (
            fs::read_to_string(task.path().join("comm")),
            fs::read_to_string(task.path().join("status")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("status has the CPU list")
            .parse()
            .expect("the kernel writes a CPU list");
        threads.push((name.trim().to_owned(), cpus));
    }
    threads
}

#[test]
fn scheduling_cpus_confine_the_signaling_threads_and_pin_each_relay_thread() {
    const NAME: &str = "scheduling_cpus_confine_the_signaling_threads_and_pin_each_relay_thread";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    // The first CPU for signaling, the others (or the same one, on a
    // single CPU) for media: one relay thread pinned to each.
    let own = sched::current_thread_cpus().expect("this test's CPUs");
    let cpus = own.cpus();
    let signaling = cpus[0];
    let media: Vec<usize> = if cpus.len() > 1 {
        cpus[1..].to_vec()
    } else {
        cpus.to_vec()
    };
    let media_list: Vec<String> = media.iter().map(ToString::to_string).collect();
    let plan = Plan::next();
    let toml = format!(
        "{}\n[scheduling]\nsignaling_cpus = \"{signaling}\"\nmedia_cpus = \"{}\"\n",
        plan.toml(&LabConfig::default()),
        media_list.join(",")
    );
    let lab = Lab::start_toml("ops-cpus", plan, &toml);
    let threads = thread_cpus(lab.daemon_pid());
    let (relay, others): (Vec<_>, Vec<_>) = threads
        .iter()
        .partition(|(name, _)| name.starts_with("media-relay"));
    assert_eq!(
        relay.len(),
        media.len(),
        "one relay thread per media CPU: {threads:?}"
    );
    for (name, allowed) in &relay {
        // "media-relay" alone when there is one thread.
        let k: usize = name
            .strip_prefix("media-relay-")
            .map_or(0, |k| k.parse().expect("k"));
        assert_eq!(
            Some(allowed),
            CpuList::one(media[k % media.len()]).as_ref(),
            "{name} in {threads:?}"
        );
    }
    assert!(others.len() >= 3, "main, two workers: {threads:?}");
    for (name, allowed) in &others {
        assert_eq!(
            Some(allowed),
            CpuList::one(signaling).as_ref(),
            "{name} in {threads:?}"
        );
    }
    // Calls cross as ever, media relayed by the pinned threads.
    a_call_crosses_with_media_relayed_in_userspace(&lab);
    lab.shutdown();
}

#[test]
fn scheduling_cpus_the_process_may_not_use_refuse_the_start_and_name_the_field() {
    let lab = Lab::peers_only("ops-cpus-refused");
    let toml = format!(
        "{}\n[scheduling]\nmedia_cpus = \"1000-1003\"\n",
        lab.plan().toml(&LabConfig::default())
    );
    fs::write(lab.config_path(), toml).expect("config written");
    let stderr = refused_start(
        &lab,
        lab.net().command(tests::sbc_binary()),
        "the daemon started with media CPUs it may not use",
    );
    for needed in [
        "scheduling.media_cpus",
        "CPUs 1000-1003 are not among the CPUs this process may use",
    ] {
        assert!(stderr.contains(needed), "{needed:?} not in:\n{stderr}");
    }
}

/// `sbc_sip_transit_seconds` starts at the kernel's receive timestamp, not
/// at the read: an OPTIONS sent while the daemon is stopped (SIGSTOP) for
/// 300 ms waits in the socket's queue, and is counted as having spent that
/// long in the SBC.
#[test]
fn sip_transit_counts_the_wait_in_the_socket_queue() {
    const NAME: &str = "sip_transit_counts_the_wait_in_the_socket_queue";
    if skip_unless_privileged(NAME) {
        return;
    }
    let mut lab = Lab::start("ops-transit", &routed_to(&["pbx"]));
    let carrier = lab.plan().host(Host::Carrier);
    let realm = lab.plan().realm(Plan::realm_of(Host::Carrier));
    let socket = lab
        .net()
        .udp_socket(std::net::SocketAddr::new(carrier.ip(), 0));
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let from = socket.local_addr().expect("local address");
    let requests = |text: &str, le: Option<&str>| {
        let value = match le {
            Some(le) => metric(
                text,
                "sbc_sip_transit_seconds_bucket",
                &[("kind", "request"), ("le", le)],
            ),
            None => metric(
                text,
                "sbc_sip_transit_seconds_count",
                &[("kind", "request")],
            ),
        };
        value.unwrap_or_else(|| panic!("no sbc_sip_transit_seconds for requests:\n{text}"))
    };
    let ask = |n: u64| {
        let options = crate::edge::options(n, from, realm, "transit-test");
        socket
            .send_to(options.as_bytes(), realm)
            .expect("send OPTIONS");
    };
    let answered = |lab: &Lab| {
        let mut buf = [0u8; 4096];
        let (len, _) = socket.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no answer to the OPTIONS ({e})\n--- sbc stderr ---\n{}",
                lab.daemon_stderr()
            )
        });
        let answer = String::from_utf8_lossy(&buf[..len]).into_owned();
        assert_eq!(crate::edge::status(&answer), Some(200), "{answer}");
    };

    // One answered at once: counted, and well under 100 ms.
    ask(1);
    answered(&lab);
    let first = wait_metric(
        &lab,
        "sbc_sip_transit_seconds_count",
        &[("kind", "request")],
        1.0,
    );
    assert_eq!(requests(&first, Some("0.1")), 1.0, "{first}");

    // One that waits in the queue while the daemon is stopped.
    lab.signal("STOP");
    ask(2);
    thread::sleep(Duration::from_millis(300));
    lab.signal("CONT");
    answered(&lab);
    let second = wait_metric(
        &lab,
        "sbc_sip_transit_seconds_count",
        &[("kind", "request")],
        2.0,
    );
    assert_eq!(
        requests(&second, Some("0.1")),
        1.0,
        "the OPTIONS that waited 300 ms was counted under 100 ms:\n{second}"
    );
    assert_eq!(requests(&second, Some("1")), 2.0, "{second}");
    assert_eq!(requests(&second, None), 2.0, "{second}");
    lab.assert_daemon_healthy();
}

/// A call from the carrier to pbx that stays up 4 s once answered (the
/// callee is started here): `(caller, callee)`, once the caller has ACKed.
fn long_call_up(lab: &Lab) -> (SippHandle, SippHandle) {
    let on_pbx = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let call = caller(lab, "caller-long.xml", Host::Carrier).start();
    let answered = poll(SETTLE, || peer_logged(call.dir(), "ACK sip:").then_some(()));
    assert!(
        answered.is_some(),
        "the long call was not answered within {SETTLE:?}\n--- sbc stderr ---\n{}",
        lab.daemon_stderr()
    );
    (call, on_pbx)
}

/// Writes `toml` as the daemon's configuration, sends SIGHUP and waits for
/// the reload to be counted as a success.
fn reload_with(lab: &mut Lab, toml: &str) {
    lab.rewrite_config(toml);
    lab.sighup();
    wait_metric(
        lab,
        "sbc_config_reload_total",
        &[("result", "success")],
        1.0,
    );
}

/// A second call from the carrier (its other port: the long call holds
/// 5060) to `remote` (the outside realm when `None`), answered by `callee`;
/// both must succeed while `long` is still up.
fn call_while_up(
    lab: &Lab,
    long: &SippHandle,
    remote: Option<std::net::SocketAddr>,
    callee: SippHandle,
) -> (SippResult, SippResult) {
    let carrier = lab.plan().host_ip(Host::Carrier);
    let mut uac = caller(lab, "caller.xml", Host::Carrier)
        .local(carrier, SIP_PORT + 2)
        .media(carrier, PEER_MEDIA_PORT + 10);
    if let Some(remote) = remote {
        uac = uac.remote(remote);
    }
    let uac = uac.run();
    let uas = lab.finish_callee(&uac, callee);
    uac.assert_success(1);
    uas.assert_success(1);
    assert!(
        !peer_logged(long.dir(), "BYE sip:"),
        "the long call ended before the second one was placed: the test did not overlap them"
    );
    (uac, uas)
}

/// Waits for the long call to end normally.
fn finish_long_call(lab: &Lab, call: SippHandle, callee: SippHandle) -> (SippResult, SippResult) {
    let uac = call.wait();
    let uas = lab.finish_callee(&uac, callee);
    uac.assert_success(1);
    uas.assert_success(1);
    (uac, uas)
}

#[test]
fn sighup_reroutes_the_next_call_and_keeps_the_current_one() {
    const NAME: &str = "sighup_reroutes_the_next_call_and_keeps_the_current_one";
    if skip_unless_sipp(NAME) {
        return;
    }
    let mut lab = Lab::start("ops-reload", &routed_to(&["pbx"]));
    let on_pbx2 = lab.start_callee(&lab.peer("callee.xml", Host::Pbx2));
    let (call_a, on_pbx) = long_call_up(&lab);

    // Reroute to pbx2 while A is up; call B goes there.
    let toml = lab.plan().toml(&routed_to(&["pbx2"]));
    reload_with(&mut lab, &toml);
    let (uac_b, uas_b) = call_while_up(&lab, &call_a, None, on_pbx2);

    // Call A completes normally: its BYE crossed after the reload.
    let (uac_a, uas_a) = finish_long_call(&lab, call_a, on_pbx);
    for (peer, result, invites) in [("pbx", &uas_a, 1), ("pbx2", &uas_b, 1)] {
        assert_eq!(
            result.requests("INVITE"),
            invites,
            "{peer} INVITEs\n{}",
            result.report()
        );
        assert_eq!(
            result.requests("BYE"),
            1,
            "{peer} BYEs\n{}",
            result.report()
        );
    }
    let text = get_ok(&lab, "/metrics");
    for trunk in ["pbx", "pbx2"] {
        assert_eq!(
            metric(
                &text,
                "sbc_calls_total",
                &[("to_trunk", trunk), ("outcome", "answered")]
            ),
            Some(1.0),
            "calls answered on {trunk}\n{text}"
        );
    }
    // One line per call start and end, each naming the trunk.
    let log = lab.daemon_stderr();
    for (trunk, what) in [
        ("pbx", "call started"),
        ("pbx2", "call started"),
        ("pbx", "call ended"),
        ("pbx2", "call ended"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(what)
                && l.contains(&format!("trunk=\"{trunk}\""))
                && l.contains("b_call_id=")),
            "no {what:?} line for {trunk}\n{log}"
        );
    }
    lab.assert_topology_hidden(&[&uac_a, &uac_b], &[&uas_a, &uas_b]);
    lab.shutdown();
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    const NAME: &str = "sighup_with_a_broken_config_keeps_the_running_one";
    if skip_unless_sipp(NAME) {
        return;
    }
    let mut lab = Lab::start("ops-reload-bad", &routed_to(&["pbx"]));
    // A route to two trunks that do not exist: two problems, one refused
    // reload (counted once).
    let broken = lab.plan().toml(&routed_to(&["nowhere", "elsewhere"]));
    assert!(
        broken.contains("targets = [\"nowhere\", \"elsewhere\"]"),
        "{broken}"
    );
    lab.rewrite_config(&broken);
    lab.sighup();
    let text = wait_metric(
        &lab,
        "sbc_config_reload_total",
        &[("result", "failure")],
        1.0,
    );
    assert_eq!(
        metric(&text, "sbc_config_reload_total", &[("result", "success")]).unwrap_or(0.0),
        0.0,
        "a refused reload counted as a success\n{text}"
    );
    let log = lab.daemon_stderr();
    for trunk in ["nowhere", "elsewhere"] {
        assert!(
            log.lines()
                .any(|l| l.contains("problem in the new configuration") && l.contains(trunk)),
            "the problem with {trunk} is not logged\n{log}"
        );
    }
    lab.assert_daemon_healthy();
    assert_eq!(
        lab.admin_get("/health/ready").map(|(status, _)| status),
        Some(200),
        "not ready after a refused reload"
    );

    // The next call still goes to pbx, by the old route.
    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let uac: SippResult = caller(&lab, "caller.xml", Host::Carrier).run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    assert_eq!(uas.requests("INVITE"), 1, "{}", uas.report());
    lab.shutdown();
}

/// Whether a UDP socket is bound to `addr` in the lab's network (`ss`).
fn udp_bound(lab: &Lab, addr: std::net::SocketAddr) -> bool {
    let out = lab
        .net()
        .command("ss")
        .args(["-H", "-l", "-u", "-n"])
        .output()
        .unwrap_or_else(|e| panic!("ss: {e} (iproute2 is installed by scripts/test.sh)"));
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|column| column == addr.to_string())
}

#[test]
fn sighup_moves_a_listener_and_the_call_up_finishes_on_the_old_one() {
    const NAME: &str = "sighup_moves_a_listener_and_the_call_up_finishes_on_the_old_one";
    if skip_unless_sipp(NAME) {
        return;
    }
    let mut lab = Lab::start("ops-rebind", &routed_to(&["pbx"]));
    let old = lab.plan().realm(Realm::Outside);
    let new = std::net::SocketAddr::new(old.ip(), SIP_PORT + 10);
    assert!(
        udp_bound(&lab, old),
        "the lab's listener is not where the test looks"
    );
    let on_pbx2 = lab.start_callee(&lab.peer("callee.xml", Host::Pbx2));
    let (call_a, on_pbx) = long_call_up(&lab);

    // The outside realm moves (UDP and TCP) to another port, and its calls
    // to pbx2 (pbx is busy with call A).
    let moved = lab.plan().toml(&routed_to(&["pbx2"])).replace(
        &format!("address = \"{old}\""),
        &format!("address = \"{new}\""),
    );
    assert_eq!(moved.matches(&new.to_string()).count(), 2, "{moved}");
    reload_with(&mut lab, &moved);

    // A new call at the old address is refused with 503...
    let carrier = lab.plan().host_ip(Host::Carrier);
    let refused = caller(&lab, "caller-rejected.xml", Host::Carrier)
        .local(carrier, SIP_PORT + 4)
        .media(carrier, PEER_MEDIA_PORT + 20)
        .run();
    refused.assert_success(1);
    assert!(
        flow(&refused).iter().any(|m| m == "503"),
        "{}",
        refused.report()
    );
    // ...and one at the new address is answered by pbx2.
    let (uac_b, uas_b) = call_while_up(&lab, &call_a, Some(new), on_pbx2);

    // Call A ends normally through the old address.
    let (uac_a, uas_a) = finish_long_call(&lab, call_a, on_pbx);
    lab.assert_topology_hidden(&[&uac_a, &uac_b, &refused], &[&uas_a, &uas_b]);

    // The old TCP listener had no calls and closed at once; the UDP one
    // closes once the last transaction on it is over (Timer J, 32 s after
    // the BYE), and its port is free again.
    let free = poll(Duration::from_secs(45), || {
        (!udp_bound(&lab, old)).then_some(())
    });
    assert!(
        free.is_some(),
        "{old} is still bound 45 s after its last call\n--- sbc stderr ---\n{}",
        lab.daemon_stderr()
    );
    let log = lab.daemon_stderr();
    assert!(
        log.lines().any(|l| l.contains("retired listener closed")
            && l.contains("transport=UDP")
            && l.contains(&old.to_string())),
        "{log}"
    );
    assert!(udp_bound(&lab, new), "the new listener is not bound");
    lab.assert_daemon_healthy();
    lab.shutdown();
}

#[test]
fn sighup_adds_a_realm_whose_calls_anchor_media_on_its_new_address() {
    const NAME: &str = "sighup_adds_a_realm_whose_calls_anchor_media_on_its_new_address";
    if skip_unless_sipp(NAME) {
        return;
    }
    let mut lab = Lab::start("ops-new-realm", &routed_to(&["pbx"]));
    // 127.0.n.9: an address of the slot no other part of the lab uses.
    let ip = match lab.plan().realm_ip(Realm::Outside) {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 9))
        }
        std::net::IpAddr::V6(_) => unreachable!("the lab is IPv4"),
    };
    let listener = std::net::SocketAddr::new(ip, SIP_PORT);
    let toml = format!(
        "{}\n[[realm]]\nname = \"partner\"\nlisten = [{{ transport = \"udp\", address = \"{listener}\" }}]\n\
         media = {{ address = \"{ip}\" }}\n\n[[route]]\nname = \"partner-to-pbx2\"\n\
         match = {{ source_realm = \"partner\" }}\ntargets = [\"pbx2\"]\n",
        lab.plan().toml(&routed_to(&["pbx"]))
    );
    reload_with(&mut lab, &toml);

    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx2));
    let uac = caller(&lab, "caller.xml", Host::Carrier)
        .remote(listener)
        .run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    let log = &uac.messages;
    assert!(
        log.contains(&format!("c=IN IP4 {ip}")),
        "the caller's answer is not anchored on the new realm's address\n{log}"
    );
    let text = get_ok(&lab, "/metrics");
    assert!(
        metric(&text, "sbc_media_ports_free", &[("realm", "partner")]).is_some(),
        "no free-ports gauge for the new realm\n{text}"
    );
    lab.shutdown();
}
