//! A restart for an upgrade keeps latched media flowing (issue "HA",
//! item 4): the real daemon in the XDP lab of `xdp_lab.rs`, with its links
//! and flow maps pinned (`media.xdp.pin_dir` on a bpffs the test mounts).
//!
//! ```text
//!  caller ns                 sbc ns (ip_forward=1)                  callee ns
//!  198.51.100.10 ==veth== 198.51.100.1 [sbc] 203.0.113.1 ==veth== 203.0.113.10
//! ```
//!
//! A call is set up (scripted SIP, as `srtp.rs` does) and its media latched
//! both ways; then both sides send at a steady 50 packets/s while the
//! daemon gets SIGUSR2 (exit for a restart), exits, no daemon runs for a
//! second, and a new process is started on the same configuration. Every packet sent must arrive: the
//! kernel forwards the latched flows while no daemon runs, and the new one
//! adopts the pinned links (its program replacing the old one in place)
//! and the flows (which it does not know: calls are not restored). Once
//! the media stops the adopted flows expire after the inactivity timeout
//! and are counted. A plain stop (SIGTERM) at the end leaves no program on
//! the interfaces and no pin behind.
//!
//! The lab is built here rather than shared with `xdp_lab.rs`: it needs a
//! pin directory, two daemon lifetimes and its own timings.
// An end-to-end test is an IO shell: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tests::netns::{Background, Netns, VethPair, in_netns, skip_unless_privileged};

use crate::srtp::SrtpPeers;
use crate::xdp_lab::Nets;

/// Packets each side sends during the restart.
const PACKETS: u16 = 300;
/// Their pace (50 packets/s, a G.711 stream's).
const PACE: Duration = Duration::from_millis(20);
/// How long after the first paced packet the restart begins.
const RESTART_AFTER: Duration = Duration::from_millis(1000);
/// How long the test keeps any daemon from running during the restart.
const NO_DAEMON: Duration = Duration::from_millis(1000);
/// `media.inactivity_timeout_secs`: how soon adopted flows expire.
const INACTIVITY_SECS: u64 = 3;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// GET `path` on the daemon's admin listener inside `ns`: the body, or
/// `None` when nothing answered (the daemon is not up).
fn admin_get(ns: &Netns, path: &str) -> Option<(u16, String)> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/9661 || exit 1; printf 'GET {path} HTTP/1.0\\r\\nHost: sbc\\r\\n\\r\\n' >&3; timeout 2 cat <&3"
    );
    let out = ns
        .command("bash")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    tests::lab::parse_http_response(&String::from_utf8_lossy(&out.stdout))
}

/// The value of the series `series` (name and labels, exactly), if any.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.split(' ').next() == Some(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The SBC's media addresses (1000 ports each: 30000-30999).
const OUTSIDE: &str = "198.51.100.1";
const INSIDE: &str = "203.0.113.1";

/// Scrapes `/metrics` until `done` holds (at most 5 s); the last scrape.
fn poll_metrics(lab: &RestartLab, done: impl Fn(&str) -> bool) -> String {
    let by = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = admin_get(&lab.sbc, "/metrics")
            .map(|(_, m)| m)
            .unwrap_or_default();
        if done(&metrics) || Instant::now() >= by {
            return metrics;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A bpffs of the test's own (the host may not mount one at /sys/fs/bpf,
/// and `ip netns exec` remounts /sys): unmounted, with every pin in it, on
/// drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(name: &str) -> Bpffs {
        let dir = std::env::temp_dir().join(format!("sbc-{name}-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount -t bpf: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bpffs(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The names of the link pins in `dir`.
fn link_pins(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("link_"))
        .collect()
}

/// The lab: three namespaces, two links, a pin directory, the config.
struct RestartLab {
    caller: Netns,
    sbc: Netns,
    callee: Netns,
    _links: (VethPair, VethPair),
    dir: PathBuf,
    config: PathBuf,
    pin_dir: PathBuf,
    // Dropped last: the pins go with it.
    _bpffs: Bpffs,
}

impl RestartLab {
    fn new(name: &str) -> RestartLab {
        let bpffs = Bpffs::mount(name);
        let pin_dir = bpffs.0.join("sbc");
        let Nets {
            caller,
            sbc,
            callee,
            outside,
            inside,
        } = Nets::new("r");
        let dir = std::env::temp_dir().join(format!("sbc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("sbc.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[metrics]
listen = "127.0.0.1:9661"
[logging]
level = "info"
format = "json"
[limits]
max_calls = 10
[media]
port_min = 30000
port_max = 30999
inactivity_timeout_secs = {INACTIVITY_SECS}
xdp = {{ mode = "generic", interfaces = ["{out_if}", "{in_if}"], pin_dir = "{pins}" }}
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
options_interval_secs = 0
[[route]]
name = "in"
match = {{ source_realm = "outside" }}
targets = ["pbx"]
"#,
                out_if = outside.b.ifname,
                in_if = inside.a.ifname,
                pins = pin_dir.display(),
            ),
        )
        .expect("write config");
        RestartLab {
            caller,
            sbc,
            callee,
            _links: (outside, inside),
            dir,
            config,
            pin_dir,
            _bpffs: bpffs,
        }
    }

    /// Starts a daemon logging to `sbc-<n>.log`; returns it once ready
    /// (at most 10 s).
    fn start(&self, n: u32) -> Background {
        let log = std::fs::File::create(self.log_path(n)).expect("log file");
        let mut cmd = self.sbc.command(tests::sbc_binary());
        cmd.arg("--config")
            .arg(&self.config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let daemon = Background::spawn(&mut cmd);
        let ready_by = Instant::now() + Duration::from_secs(10);
        while admin_get(&self.sbc, "/health/ready").is_none_or(|(status, _)| status != 200) {
            assert!(
                Instant::now() < ready_by,
                "daemon {n} not ready: {}",
                self.log(n)
            );
            thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("sbc-{n}.log"))
    }

    fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// The ids of the XDP programs attached in the SBC's namespace (`ip -d
    /// link` shows `prog/xdp id N` per attached interface).
    fn xdp_programs(&self) -> Vec<u32> {
        let out = self.sbc.run("ip", &["-d", "link", "show"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("prog/xdp id ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    }

    fn xdp_on_any_interface(&self) -> bool {
        !self.xdp_programs().is_empty()
    }
}

impl Drop for RestartLab {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn signal(daemon: &Background, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &daemon.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -{name} {}", daemon.id());
}

/// A paced sender: `PACKETS` packets of stream `ssrc` from `from` to `to`,
/// one every `PACE` from `start`.
fn send_paced(
    from: UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    start: Instant,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for seq in 0..PACKETS {
            let at = start + PACE * u32::from(seq);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let mut packet = vec![0x80, 0x00];
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            packet.extend_from_slice(&ssrc.to_be_bytes());
            packet.extend_from_slice(&[0xd5; 160]);
            from.send_to(&packet, to).expect("send");
        }
    })
}

/// A receiver counting the distinct packets of stream `ssrc` that arrive
/// from `anchor` until `until`.
fn receive_counting(
    socket: UdpSocket,
    anchor: SocketAddr,
    ssrc: u32,
    until: Instant,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut seen = vec![false; usize::from(PACKETS)];
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if from != anchor || n < 12 || buf[8..12] != ssrc.to_be_bytes() {
                continue;
            }
            let seq = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if let Some(slot) = seen.get_mut(seq) {
                *slot = true;
            }
        }
        seen.iter().filter(|s| **s).count()
    })
}

#[test]
fn restart_keeps_latched_media_forwarded_by_the_kernel() {
    const NAME: &str = "restart_keeps_latched_media_forwarded_by_the_kernel";
    if skip_unless_privileged(NAME) {
        return;
    }
    let lab = RestartLab::new("restart");
    let first = lab.start(1);
    assert!(
        !link_pins(&lab.pin_dir).is_empty(),
        "links pinned at start: {}",
        lab.log(1)
    );

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
    let call = peers.answer("restart");
    // Lockstep packets latch both anchors in userspace; the relay then
    // installs the flows in the kernel.
    let (forward, back) = peers.exchange(&call, 20);
    assert!(forward >= 18 && back >= 18, "latched: {forward} / {back}");
    thread::sleep(Duration::from_millis(500));

    let start = Instant::now() + Duration::from_millis(100);
    let until = start + PACE * u32::from(PACKETS) + Duration::from_secs(1);
    let clone = |s: &UdpSocket| s.try_clone().expect("clone");
    let receivers = [
        receive_counting(
            clone(&peers.callee_rtp),
            call.inside_anchor,
            0xfeed_0001,
            until,
        ),
        receive_counting(
            clone(&peers.caller_rtp),
            call.outside_anchor,
            0xfeed_0002,
            until,
        ),
    ];
    let senders = [
        send_paced(
            clone(&peers.caller_rtp),
            call.outside_anchor,
            0xfeed_0001,
            start,
        ),
        send_paced(
            clone(&peers.callee_rtp),
            call.inside_anchor,
            0xfeed_0002,
            start,
        ),
    ];

    // The restart, in the middle of the stream.
    thread::sleep((start + RESTART_AFTER).saturating_duration_since(Instant::now()));
    let asked = Instant::now();
    signal(&first, "USR2");
    let (status, killed) = first.wait(Duration::from_secs(5));
    let exited = asked.elapsed();
    assert!(
        status.code() == Some(75) && !killed,
        "the first daemon exits for the restart with status 75 ({status}, killed: {killed}): {}",
        lab.log(1)
    );
    let pins = link_pins(&lab.pin_dir);
    assert_eq!(pins.len(), 2, "both links left pinned: {pins:?}");
    let before = lab.xdp_programs();
    assert_eq!(
        before.len(),
        2,
        "the program stays attached to both interfaces while no daemon runs"
    );
    // No daemon at all for a while: only the kernel carries the media.
    thread::sleep(NO_DAEMON);
    let second = lab.start(2);
    let after = lab.xdp_programs();
    assert!(
        after.len() == 2 && after.iter().all(|id| !before.contains(id)),
        "the new process's program replaced the old one in the links: {before:?} -> {after:?}"
    );
    let ready = asked.elapsed();
    // The adopted flows' ports are kept from new calls while they run.
    let free = |metrics: &str| {
        [OUTSIDE, INSIDE].map(|a| {
            metric(
                metrics,
                &format!("sbc_media_address_ports_free{{address=\"{a}\"}}"),
            )
        })
    };
    // The gauges follow the daemon's 1 s tick: polled (the media is still
    // flowing, so nothing expires meanwhile).
    let scrape = poll_metrics(&lab, |m| {
        metric(m, "sbc_xdp_adopted_flows").is_some_and(|n| n >= 2.0)
            && free(m) == [Some(999.0), Some(999.0)]
    });
    let adopted_then = metric(&scrape, "sbc_xdp_adopted_flows").unwrap_or(-1.0);
    let free_then = free(&scrape);

    for sender in senders {
        sender.join().expect("sender");
    }
    let [forward, back] = receivers.map(|r| r.join().expect("receiver"));
    let lost = 2 * usize::from(PACKETS) - forward - back;
    // Sent each way while no daemon was running (first gone, second not
    // yet ready): carried by the kernel alone.
    let no_daemon = ready.saturating_sub(exited);
    let alone = no_daemon.as_millis() / PACE.as_millis();
    eprintln!(
        "restart with XDP pinned: first daemon gone {exited:?} after SIGUSR2, second ready {ready:?} after it \
         (no daemon for {NO_DAEMON:?} by design); \
         delivered {forward}/{PACKETS} forward, {back}/{PACKETS} back: {lost} lost \
         (about {alone} each way sent during the {no_daemon:?} without a ready daemon); adopted flows {adopted_then}"
    );
    let adopted_logged = lab
        .log(2)
        .lines()
        .filter(|l| l.contains("XDP fast path attached") && l.contains("\"adopted\":true"))
        .count();
    assert_eq!(adopted_logged, 2, "both links adopted: {}", lab.log(2));
    assert_eq!(
        (forward, back),
        (usize::from(PACKETS), usize::from(PACKETS)),
        "every packet crossed the restart\n--- first ---\n{}\n--- second ---\n{}",
        lab.log(1),
        lab.log(2)
    );
    assert!(
        adopted_then >= 2.0,
        "the new process adopted the call's flows: {adopted_then}"
    );
    assert_eq!(
        free_then,
        [Some(999.0), Some(999.0)],
        "one port of each address kept for the adopted flows:\n{scrape}"
    );

    // The media stopped: the adopted flows go after the inactivity timeout.
    let media_stopped = Instant::now();
    let by = media_stopped + Duration::from_secs(INACTIVITY_SECS + 5);
    let mut metrics = String::new();
    while Instant::now() < by {
        metrics = admin_get(&lab.sbc, "/metrics")
            .map(|(_, m)| m)
            .unwrap_or_default();
        if metric(&metrics, "sbc_xdp_adopted_flows") == Some(0.0) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let expired = metric(&metrics, "sbc_xdp_adopted_flows_expired_total").unwrap_or(-1.0);
    eprintln!(
        "adopted flows expired: {expired}, seen {:?} after the media stopped (timeout {INACTIVITY_SECS} s)",
        media_stopped.elapsed()
    );
    assert_eq!(
        metric(&metrics, "sbc_xdp_adopted_flows"),
        Some(0.0),
        "adopted flows expire once idle:\n{metrics}"
    );
    assert!(
        (expired - adopted_then).abs() < 0.5,
        "each adopted flow is counted when it expires: {expired} of {adopted_then}"
    );
    // Their ports are free again (quarantined ones count as free).
    let freed = poll_metrics(&lab, |m| free(m) == [Some(1000.0), Some(1000.0)]);
    assert_eq!(
        free(&freed),
        [Some(1000.0), Some(1000.0)],
        "the adopted flows' ports are given back:\n{freed}"
    );

    // A plain stop leaves the NIC clean.
    signal(&second, "TERM");
    let (status, killed) = second.wait(Duration::from_secs(5));
    assert!(status.success() && !killed, "plain stop: {}", lab.log(2));
    assert!(
        link_pins(&lab.pin_dir).is_empty() && !lab.pin_dir.join("SBC_FLOWS").exists(),
        "a plain stop removes the pins: {:?}",
        std::fs::read_dir(&lab.pin_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(
        !lab.xdp_on_any_interface(),
        "a plain stop detaches the program"
    );
}
