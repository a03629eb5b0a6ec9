//! The media fast path end to end: a SIPp call with RTP through the real
//! daemon in a network-namespace lab, with the XDP program attached to the
//! SBC's interfaces, and the same lab with XDP off.
//!
//! ```text
//!  caller ns                 sbc ns (ip_forward=1)                  callee ns
//!  198.51.100.10 ==veth== 198.51.100.1 [sbc] 203.0.113.1 ==veth== 203.0.113.10
//!  SIPp uac_pcap            realm outside      realm inside          SIPp uas -rtp_echo
//! ```
//!
//! With XDP, after the first packets latch in userspace the kernel forwards
//! the rest: `sbc_media_packets_total{path="xdp"}` carries the call while the
//! userspace path carries (almost) nothing, each packet under the realm it
//! arrived from (the caller's under `outside`, the echoes under `inside`),
//! and the call's CDR and log line say `xdp`. Without XDP the userspace
//! relay carries it all, and they say `userspace`. The XDP program runs in generic mode here: native mode on
//! veth delivers frames only when the peer veth runs an XDP program too
//! (DESIGN.md), and generic mode is what the daemon's `auto` falls back to.
// An end-to-end test is an IO shell: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::netns::{
    Background, Netns, Side, VethPair, in_netns, skip_unless_privileged, skip_unless_sipp,
};
use tests::sipp::Sipp;

use crate::srtp::SrtpPeers;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// GET `path` on the daemon's admin listener inside `ns`.
pub(crate) fn admin_get(ns: &Netns, path: &str) -> Option<String> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/9660 || exit 1; printf 'GET {path} HTTP/1.0\\r\\nHost: sbc\\r\\n\\r\\n' >&3; timeout 2 cat <&3"
    );
    // Not `Netns::run`: a refused connection (daemon still starting) is an
    // answer here, not a failure.
    let out = ns
        .command("bash")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of every series that begins with `series` (a metric name and
/// the start of its labels), 0 when there is none.
pub(crate) fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Packets relayed on `path` ("xdp" or "userspace") that arrived from
/// `realm`.
pub(crate) fn relayed(metrics: &str, path: &str, realm: &str) -> u64 {
    counter(
        metrics,
        &format!("sbc_media_packets_total{{path=\"{path}\",realm=\"{realm}\"}}"),
    )
}

/// Asserts what an XDP lab's call left in `metrics`: the program attached
/// in generic mode, the kernel forwarded the call's media (the pcap plays
/// 236-246 packets and the callee echoes them: ~470 relayed) and userspace
/// (almost) nothing, and the kernel's counts split by the realm each
/// packet arrived on: the caller's on the outside one, the callee's
/// echoes on the inside one, no other series carrying any (`xdp` sums
/// every realm's). `context` is added to the messages of failures.
pub(crate) fn kernel_carried_the_call(metrics: &str, label: &str, context: &str) {
    let xdp = counter(metrics, "sbc_media_packets_total{path=\"xdp\"");
    let userspace = counter(metrics, "sbc_media_packets_total{path=\"userspace\"");
    eprintln!("{label}: xdp={xdp} userspace={userspace} packets");
    for line in metrics.lines().filter(|l| l.starts_with("sbc_media_")) {
        eprintln!("  {line}");
    }
    assert!(
        metrics.contains("sbc_xdp_attached{interface=") && metrics.contains("mode=\"generic\"} 1"),
        "XDP attached in generic mode:\n{metrics}"
    );
    assert!(
        xdp >= 300,
        "the kernel forwarded the call's media: xdp={xdp} userspace={userspace}\n{context}"
    );
    assert!(
        userspace * 5 <= xdp,
        "userspace forwarded (almost) nothing: xdp={xdp} userspace={userspace}\n{context}"
    );
    let (out, inn) = (
        relayed(metrics, "xdp", "outside"),
        relayed(metrics, "xdp", "inside"),
    );
    assert!(
        out >= 150 && inn >= 150 && out + inn == xdp,
        "XDP packets per receiving realm: outside={out} inside={inn} of {xdp}\n{metrics}"
    );
}

/// What one call through the lab left behind.
struct Outcome {
    /// The metrics text after the call.
    metrics: String,
    /// The call's CDR.
    cdr: serde_json::Value,
    /// The `media` field of the daemon's "call ended" log line.
    logged_media: String,
}

/// The lab's three namespaces, two links and the running daemon.
pub(crate) struct XdpLab {
    pub(crate) caller: Netns,
    pub(crate) sbc: Netns,
    pub(crate) callee: Netns,
    links: (VethPair, VethPair),
    dir: std::path::PathBuf,
    daemon: Background,
}

/// The three namespaces of a veth lab and their links: the caller's
/// 198.51.100.10 to the SBC's outside 198.51.100.1, the SBC's inside
/// 203.0.113.1 to the callee's 203.0.113.10, forwarding on in the SBC's.
/// Namespace names start with `prefix` (then `c`, `s`, `e`).
pub(crate) struct Nets {
    pub(crate) caller: Netns,
    pub(crate) sbc: Netns,
    pub(crate) callee: Netns,
    pub(crate) outside: VethPair,
    pub(crate) inside: VethPair,
}

impl Nets {
    pub(crate) fn new(prefix: &str) -> Nets {
        let caller = Netns::new(&format!("{prefix}c"));
        let sbc = Netns::new(&format!("{prefix}s"));
        let callee = Netns::new(&format!("{prefix}e"));
        let outside = VethPair::new(
            Side::Ns(&caller),
            "198.51.100.10".parse().expect("ip"),
            Side::Ns(&sbc),
            "198.51.100.1".parse().expect("ip"),
            24,
        );
        let inside = VethPair::new(
            Side::Ns(&sbc),
            "203.0.113.1".parse().expect("ip"),
            Side::Ns(&callee),
            "203.0.113.10".parse().expect("ip"),
            24,
        );
        let out = sbc.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        assert!(
            out.status.success(),
            "ip_forward: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Nets {
            caller,
            sbc,
            callee,
            outside,
            inside,
        }
    }
}

impl XdpLab {
    /// Builds the lab and starts the daemon, with the XDP program attached
    /// in generic mode or not at all; returns once the daemon is ready.
    fn start(name: &str, xdp: bool) -> XdpLab {
        let mode = if xdp { "generic" } else { "off" };
        XdpLab::start_with(name, |out_if, in_if, dir| {
            format!(
                r#"
[metrics]
listen = "127.0.0.1:9660"
[logging]
level = "info"
format = "json"
[cdr]
path = "{cdr}"
[limits]
max_calls = 100
[media]
port_min = 30000
port_max = 30999
xdp = {{ mode = "{mode}", interfaces = ["{out_if}", "{in_if}"] }}
[[realm]]
name = "outside"
listen = [{{ transport = "udp", address = "198.51.100.1:5060" }}]
media = {{ address = "198.51.100.1" }}
[[realm]]
name = "inside"
listen = [{{ transport = "udp", address = "203.0.113.1:5060" }}]
media = {{ address = "203.0.113.1" }}
[[trunk]]
name = "pbx"
realm = "inside"
address = "203.0.113.10:5060"
# SIPp's built-in uas aborts on an OPTIONS it did not script.
options_interval_secs = 0
[[route]]
name = "in"
match = {{ source_realm = "outside" }}
targets = ["pbx"]
"#,
                cdr = dir.join("cdr.jsonl").display(),
            )
        })
    }

    /// Builds the lab and starts the daemon with the configuration `config_text`
    /// writes for the SBC's outside and inside interface names and the
    /// lab's directory (its metrics listener must be 127.0.0.1:9660);
    /// returns once the daemon is ready.
    pub(crate) fn start_with(
        name: &str,
        config_text: impl FnOnce(&str, &str, &std::path::Path) -> String,
    ) -> XdpLab {
        let Nets {
            caller,
            sbc,
            callee,
            outside,
            inside,
        } = Nets::new("x");
        let dir = std::env::temp_dir().join(format!("sbc-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("sbc.toml");
        std::fs::write(
            &config,
            config_text(&outside.b.ifname, &inside.a.ifname, &dir),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("sbc.log")).expect("log file");
        let mut cmd = sbc.command(tests::sbc_binary());
        cmd.arg("--config")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let daemon = Background::spawn(&mut cmd);
        let ready_by = Instant::now() + Duration::from_secs(10);
        // An HTTP/1.0 probe is answered in HTTP/1.0.
        while admin_get(&sbc, "/health/ready")
            .and_then(|r| tests::lab::parse_http_response(&r))
            .is_none_or(|(status, _)| status != 200)
        {
            assert!(
                Instant::now() < ready_by,
                "daemon not ready: {}",
                std::fs::read_to_string(dir.join("sbc.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        XdpLab {
            caller,
            sbc,
            callee,
            links: (outside, inside),
            dir,
            daemon,
        }
    }

    /// Waits for the relay's last counts, stops the daemon and collects
    /// what the call (exactly one) left behind.
    fn finish(self) -> Outcome {
        let Stopped {
            metrics,
            cdr_text,
            log,
        } = self.stop();
        let records: Vec<serde_json::Value> = cdr_text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("CDR line ({e}): {l}")))
            .collect();
        let [cdr] = records.as_slice() else {
            panic!("expected one CDR, got {records:?}\n--- sbc log ---\n{log}")
        };
        let ended: Vec<String> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["message"] == "call ended")
            .map(|l| l["media"].as_str().unwrap_or("?").to_owned())
            .collect();
        let [logged_media] = ended.as_slice() else {
            panic!("expected one \"call ended\" log line, got {ended:?}\n--- sbc log ---\n{log}")
        };
        Outcome {
            metrics,
            cdr: cdr.clone(),
            logged_media: logged_media.clone(),
        }
    }
}

/// What the lab's daemon left behind.
pub(crate) struct Stopped {
    /// The metrics text at the end.
    pub(crate) metrics: String,
    /// The CDR file's text.
    pub(crate) cdr_text: String,
    /// The daemon's log.
    pub(crate) log: String,
}

impl XdpLab {
    /// Waits for the relay's last counts, stops the daemon, removes the
    /// links and the lab's directory; what the daemon left behind.
    pub(crate) fn stop(self) -> Stopped {
        // Let the relay collect the last fast-path counts and the daemon
        // export them (both run on one-second cadences).
        std::thread::sleep(Duration::from_millis(2500));
        let metrics = admin_get(&self.sbc, "/metrics").expect("metrics scrape");
        // The CDR is written once the relay reported the stream's final
        // counters (well within the wait above).
        let cdr_text = std::fs::read_to_string(self.dir.join("cdr.jsonl")).unwrap_or_default();
        let _ = self.daemon.kill();
        let log = std::fs::read_to_string(self.dir.join("sbc.log")).unwrap_or_default();
        drop(self.links);
        let _ = std::fs::remove_dir_all(&self.dir);
        Stopped {
            metrics,
            cdr_text,
            log,
        }
    }
}

/// Runs one SIPp call with RTP through the lab.
fn call_through_the_lab(name: &str, xdp: bool) -> Outcome {
    let lab = XdpLab::start(name, xdp);
    let uas = Sipp::builtin("uas")
        .local(ip("203.0.113.10"), 5060)
        .media(ip("203.0.113.10"), 16000)
        .rtp_echo()
        .calls(1)
        .timeout(Duration::from_secs(40))
        .in_netns(&lab.callee)
        .start();
    std::thread::sleep(Duration::from_millis(300));
    let uac = Sipp::builtin("uac_pcap")
        .local(ip("198.51.100.10"), 5060)
        .media(ip("198.51.100.10"), 17000)
        .remote(SocketAddr::new(ip("198.51.100.1"), 5060))
        .calls(1)
        .timeout(Duration::from_secs(40))
        .in_netns(&lab.caller)
        .run();
    let uas = uas.wait();
    uac.assert_success(1);
    uas.assert_success(1);
    lab.finish()
}

#[test]
fn media_crosses_the_sbc_in_the_kernel_once_latched() {
    if skip_unless_privileged("media_crosses_the_sbc_in_the_kernel_once_latched")
        || skip_unless_sipp("media_crosses_the_sbc_in_the_kernel_once_latched")
    {
        return;
    }
    let outcome = call_through_the_lab("xdp-on", true);
    let metrics = &outcome.metrics;
    kernel_carried_the_call(metrics, "xdp lab, XDP on", "");
    assert!(
        !metrics.contains("realm=\"all\""),
        "media is split by realm:\n{metrics}"
    );
    assert_eq!(outcome.cdr["media_path"], "xdp", "CDR {}", outcome.cdr);
    assert_eq!(outcome.logged_media, "xdp", "the call-end log line");
    // The CDR's counters include the kernel's share: every packet played.
    for key in ["in_rx_packets", "out_tx_packets"] {
        assert!(
            outcome.cdr[key].as_u64().is_some_and(|n| n >= 200),
            "CDR {key}: {}",
            outcome.cdr
        );
    }
}

#[test]
fn without_xdp_the_userspace_relay_carries_the_call() {
    if skip_unless_privileged("without_xdp_the_userspace_relay_carries_the_call")
        || skip_unless_sipp("without_xdp_the_userspace_relay_carries_the_call")
    {
        return;
    }
    let outcome = call_through_the_lab("xdp-off", false);
    let metrics = &outcome.metrics;
    let xdp = counter(metrics, "sbc_media_packets_total{path=\"xdp\"");
    let userspace = counter(metrics, "sbc_media_packets_total{path=\"userspace\"");
    eprintln!("xdp lab, XDP off: xdp={xdp} userspace={userspace} packets");
    assert_eq!(xdp, 0, "XDP is off");
    assert!(
        userspace >= 400,
        "the userspace relay carried the call: {userspace}"
    );
    let (out, inn) = (
        relayed(metrics, "userspace", "outside"),
        relayed(metrics, "userspace", "inside"),
    );
    assert!(
        out >= 200 && inn >= 200 && out + inn == userspace,
        "userspace packets per receiving realm: outside={out} inside={inn} of {userspace}"
    );
    assert_eq!(
        outcome.cdr["media_path"], "userspace",
        "CDR {}",
        outcome.cdr
    );
    assert_eq!(outcome.logged_media, "userspace", "the call-end log line");
}

#[test]
fn srtp_crosses_the_kernel_untouched() {
    if skip_unless_privileged("srtp_crosses_the_kernel_untouched") {
        return;
    }
    let lab = XdpLab::start("xdp-srtp", true);
    let (caller_ns, callee_ns) = (lab.caller.name().to_owned(), lab.callee.name().to_owned());
    let bind = |ns: &str, addr: &str| {
        let addr: SocketAddr = addr.parse().expect("addr");
        in_netns(ns, move || UdpSocket::bind(addr).expect("bind"))
    };
    let peers = SrtpPeers {
        caller: bind(&caller_ns, "198.51.100.10:5060"),
        callee: bind(&callee_ns, "203.0.113.10:5060"),
        caller_rtp: bind(&caller_ns, "198.51.100.10:17000"),
        callee_rtp: bind(&callee_ns, "203.0.113.10:16000"),
        outside_sip: "198.51.100.1:5060".parse().expect("addr"),
        inside_sip: "203.0.113.1:5060".parse().expect("addr"),
        inside_media_ip: ip("203.0.113.1"),
    };
    let call = peers.answer("xdp-srtp");
    // Each packet waits for its arrival before the next is sent: the first
    // latch the anchors in userspace, the rest cross in the kernel.
    let (forward, back) = peers.exchange(&call, 200);
    let during = admin_get(&lab.sbc, "/metrics").unwrap_or_default();
    peers.hang_up(&call, "xdp-srtp");
    let outcome = lab.finish();
    let metrics = &outcome.metrics;
    let xdp = counter(metrics, "sbc_media_packets_total{path=\"xdp\"");
    let userspace = counter(metrics, "sbc_media_packets_total{path=\"userspace\"");
    eprintln!("xdp lab, SRTP: {forward}+{back} of 400 untouched, xdp={xdp} userspace={userspace}");
    assert!(
        forward >= 195 && back >= 195,
        "untouched: {forward} of 200 forward, {back} of 200 back\n{during}"
    );
    assert!(
        xdp >= 300 && userspace * 5 <= xdp,
        "the kernel forwarded the SRTP: xdp={xdp} userspace={userspace}\n{metrics}"
    );
    assert_eq!(outcome.cdr["media_path"], "xdp", "CDR {}", outcome.cdr);
}
