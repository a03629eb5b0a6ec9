//! The signaling benches' lab: SIPp UAC/UAS pairs calling through a
//! daemon (ours, or another proxy) on loopback, on the host or inside a
//! private network namespace ([`tests::lab::Net`]), and what they measure.
//!
//! Owns: the address plan (127.70.0.x: realms, SIPp pairs, the latency
//! probe), our daemon's configuration for it ([`config`]) and its process
//! ([`Daemon`], stopped on drop), SIPp processes ([`Sipp`], killed on drop)
//! and their statistics ([`Counts`]), a bounded load of built-in `uac`/`uas`
//! calls ([`run_calls`]), the in-process INVITE -> 200 probe ([`one_call`],
//! microsecond resolution where SIPp's own response times have 1 ms), and
//! CPU/RSS readings from `/proc` ([`process_cpu`], [`group_cpu`]).
//!
//! May not: send anywhere but loopback (every address is in 127.0.0.0/8),
//! leave a process behind (every child is killed and reaped on drop), or
//! wait unbounded (every SIPp run has a call count, `-timeout` and a kill
//! deadline).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use sbc::transport::stamp;

use tests::lab::Net;

/// The daemon's realms: UACs call `outside`, `inside` calls the UASes.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 1);
pub const INSIDE: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 2);
/// UAS `i` lives on 127.70.0.(10 + i), UAC `i` on 127.70.0.(30 + i).
pub const UAS_BASE: u8 = 10;
pub const UAC_BASE: u8 = 30;
/// Phase 5: the access realm, its registrar, and the phones' /24.
pub const ACCESS: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 6);
pub const REGISTRAR: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 7);
pub const PHONES: &str = "127.70.5";
/// The in-process latency client.
pub const PROBE: Ipv4Addr = Ipv4Addr::new(127, 70, 0, 60);
pub const SIP_PORT: u16 = 5060;
pub const ADMIN_PORT: u16 = 9660;
/// At most this many UAC/UAS pairs (addresses 10..30 and 30..50).
pub const MAX_PAIRS: u64 = 20;

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(clippy::disallowed_methods)] // a load harness is an IO shell
pub fn now() -> Instant {
    Instant::now()
}

/// The wall clock, which kernel receive timestamps are in.
#[allow(clippy::disallowed_methods)] // a load harness is an IO shell
pub fn wall() -> SystemTime {
    SystemTime::now()
}

pub fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 70, 0, last)
}

pub fn uas_ip(i: u64) -> Ipv4Addr {
    ip(UAS_BASE + u8::try_from(i).unwrap_or(0))
}

pub fn uac_ip(i: u64) -> Ipv4Addr {
    ip(UAC_BASE + u8::try_from(i).unwrap_or(0))
}

/// The Request-URI user of pair `i`: the daemon routes on its prefix.
pub fn service(i: u64) -> String {
    format!("b{i}x")
}

/// The workspace root (benches/ sits in it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// The `sbc` binary of this bench's profile, built (or found fresh) first;
/// or `SIGNALING_BENCH_SBC`, a binary to compare (e.g. one built from an
/// older commit, measured in the same conditions).
pub fn sbc_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SIGNALING_BENCH_SBC") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/<bench-binary> -> target/<profile>/sbc
    let exe = std::env::current_exe().expect("bench binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("bench binary lives in target/<profile>/deps");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "sbc", "--bin", "sbc"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .current_dir(workspace())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p sbc failed");
    profile_dir.join("sbc")
}

/// The daemon's configuration: one realm per side, a trunk per peer, and a
/// route per pair on the Request-URI user's prefix, so UAC `i` reaches UAS
/// `i` as it does directly.
pub fn config(pairs: u64) -> String {
    let mut t = String::new();
    let _ = write!(
        t,
        "[metrics]\nlisten = \"{OUTSIDE}:{ADMIN_PORT}\"\n\n\
         [logging]\nlevel = \"warn\"\n\n\
         [limits]\nmax_calls = 20000\nmax_transactions = 600000\n\n\
         [media]\nport_min = 10000\nport_max = 65535\n\
         xdp = {{ mode = \"off\", interfaces = [] }}\n"
    );
    for (name, addr) in [("outside", OUTSIDE), ("inside", INSIDE)] {
        let _ = write!(
            t,
            "\n[[realm]]\nname = \"{name}\"\n\
             listen = [{{ transport = \"udp\", address = \"{addr}:{SIP_PORT}\" }}]\n\
             media = {{ address = \"{addr}\" }}\n"
        );
        if name == "outside" {
            // The latency probe stands for a carrier, trusted like the
            // UAC trunks: an untrusted source may hold 32 transactions,
            // and each of its calls leaves two lingering for 64*T1.
            let _ = writeln!(t, "networks = [\"{PROBE}/32\"]");
        }
    }
    // Phones register here to the in-process registrar (phase 5); they sit
    // behind one office NAT range, trusted like a trunk.
    let _ = write!(
        t,
        "\n[[realm]]\nname = \"access\"\n\
         listen = [{{ transport = \"udp\", address = \"{ACCESS}:{SIP_PORT}\" }}]\n\
         media = {{ address = \"{ACCESS}\" }}\nnetworks = [\"{PHONES}.0/24\"]\n\
         access = {{ registrar = \"registrar\", phone_expires_secs = 120, \
         registrar_expires_secs = 3600, keepalive_secs = {KEEPALIVE_SECS}, \
         max_bindings_per_aor = 1, max_bindings_per_source = 100000 }}\n\
         \n[[trunk]]\nname = \"registrar\"\nrealm = \"inside\"\n\
         address = \"{REGISTRAR}:{SIP_PORT}\"\ntransport = \"udp\"\noptions_interval_secs = 0\n"
    );
    for i in 0..pairs {
        // No OPTIONS pings: a SIPp peer would take one for a call.
        let _ = write!(
            t,
            "\n[[trunk]]\nname = \"uas{i}\"\nrealm = \"inside\"\n\
             address = \"{}:{SIP_PORT}\"\ntransport = \"udp\"\noptions_interval_secs = 0\n\
             \n[[trunk]]\nname = \"uac{i}\"\nrealm = \"outside\"\n\
             address = \"{}:{SIP_PORT}\"\ntransport = \"udp\"\noptions_interval_secs = 0\n\
             \n[[route]]\nname = \"to-uas{i}\"\n\
             match = {{ source_realm = \"outside\", user_prefix = \"{}\" }}\n\
             targets = [\"uas{i}\"]\n",
            uas_ip(i),
            uac_ip(i),
            service(i),
        );
    }
    t
}

/// A running daemon: stopped (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Daemon {
    child: Child,
    /// The namespace anchor's pid when it runs in a [`Net`].
    netns: Option<u32>,
}

impl Daemon {
    /// Starts the daemon with [`config`] in `dir` and waits (bounded) for
    /// `/health/ready`.
    pub fn start(bin: &Path, dir: &Path, pairs: u64) -> Daemon {
        Daemon::start_in(None, bin, dir, pairs)
    }

    /// As [`start`](Self::start), inside `net` when given.
    pub fn start_in(net: Option<&Net>, bin: &Path, dir: &Path, pairs: u64) -> Daemon {
        Daemon::start_with(net, bin, dir, &config(pairs))
    }

    /// As [`start_in`](Self::start_in) with a configuration of the
    /// caller's own, whose metrics listener must be
    /// [`OUTSIDE`]:[`ADMIN_PORT`] (readiness is polled there).
    pub fn start_with(net: Option<&Net>, bin: &Path, dir: &Path, toml: &str) -> Daemon {
        fs::create_dir_all(dir).expect("daemon directory");
        let config_path = dir.join("sbc.toml");
        fs::write(&config_path, toml).expect("write config");
        let stderr = fs::File::create(dir.join("sbc.stderr")).expect("stderr file");
        let child = net
            .map_or_else(|| Command::new(bin), |net| net.command(bin))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn sbc");
        let netns = net.and_then(Net::pid);
        let mut daemon = Daemon { child, netns };
        let deadline = now() + Duration::from_secs(10);
        while !http_get_in(netns, "/health/ready")
            .is_some_and(|r| r.lines().next().is_some_and(|l| l.contains(" 200")))
        {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "sbc exited ({status}): {}",
                    fs::read_to_string(dir.join("sbc.stderr")).unwrap_or_default()
                );
            }
            assert!(now() < deadline, "sbc not ready within 10 s");
            thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// utime + stime of the daemon so far (every thread).
    pub fn cpu(&self) -> Option<Duration> {
        process_cpu(self.child.id())
    }

    /// Context switches of every thread of the daemon so far.
    pub fn switches(&self) -> Option<Switches> {
        process_switches(self.child.id())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A bounded GET to the daemon's admin listener, in its network.
    pub fn http_get(&self, path: &str) -> Option<String> {
        http_get_in(self.netns, path)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("daemon status");
        status_number(&status, "VmRSS").expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Not reaped yet, so the pid is still this child's.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may
/// hold spaces): `[0]` is the state (field 3), `[2]` the process group
/// (field 5), `[11]` and `[12]` utime and stime (fields 14 and 15).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// utime + stime of process `pid` so far, every thread of it (not its
/// children).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let fields = stat_fields(&pid.to_string())?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks_to_duration(ticks))
}

/// Context switches of a process's threads, summed over the threads alive
/// when read (`/proc/<pid>/task/*/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// The thread blocked or yielded (`voluntary_ctxt_switches`).
    pub voluntary: u64,
    /// The kernel took the CPU from a thread that could have gone on: a
    /// higher-priority or woken thread preempted it, or its slice ended
    /// (`nonvoluntary_ctxt_switches`).
    pub preempted: u64,
}

impl Switches {
    /// Each count per second from `earlier` to `self`, `secs` apart.
    pub fn rate_since(self, earlier: Switches, secs: f64) -> (f64, f64) {
        let per_second = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        (
            per_second(self.voluntary, earlier.voluntary),
            per_second(self.preempted, earlier.preempted),
        )
    }
}

/// The context switches so far of every thread of `pid`.
pub fn process_switches(pid: u32) -> Option<Switches> {
    let mut sum = Switches::default();
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended between the listing and the read
        };
        sum.voluntary += status_number(&status, "voluntary_ctxt_switches").unwrap_or(0);
        sum.preempted += status_number(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Some(sum)
}

/// The number a `/proc/<pid>/status` text gives for `field` (its unit,
/// such as `kB`, left off).
fn status_number(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime so far of every live process of process group `pgid`: a
/// forking daemon (Kamailio's main process and its workers) as a whole.
pub fn group_cpu(pgid: u32) -> Option<Duration> {
    let group = pgid.to_string();
    let mut ticks = 0;
    let mut found = false;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue; // exited between the listing and the read
        };
        if fields.get(2) != Some(&group) {
            continue;
        }
        found = true;
        ticks += fields
            .get(11)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
    }
    found.then(|| ticks_to_duration(ticks))
}

/// `sysconf(_SC_CLK_TCK)` without libc: 100 on every Linux this runs on.
pub fn clock_ticks() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A bounded HTTP/1.0 GET to the daemon's admin listener on the host.
pub fn http_get(path: &str) -> Option<String> {
    http_get_in(None, path)
}

/// A bounded HTTP/1.0 GET to the daemon's admin listener, in the network
/// namespace of process `netns` (a [`Net`]'s anchor) or on the host.
pub fn http_get_in(netns: Option<u32>, path: &str) -> Option<String> {
    let addr = SocketAddr::new(IpAddr::V4(OUTSIDE), ADMIN_PORT);
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok();
    let mut s = match netns {
        Some(pid) => tests::netns::in_netns_of(pid, connect),
        None => connect(),
    }?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `sbc_calls_active` from `/metrics`, summed over its realms.
pub fn calls_active() -> Option<u64> {
    let body = http_get("/metrics")?;
    let total: f64 = body
        .lines()
        .filter(|l| l.starts_with("sbc_calls_active{") || l.starts_with("sbc_calls_active "))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    Some(total as u64)
}

/// A SIPp process, killed and reaped on drop.
pub struct Sipp {
    child: Child,
    dir: PathBuf,
}

impl Sipp {
    /// SIPp with the built-in `scenario` (or, for a name ending in `.xml`,
    /// that file of `tests/scenarios`) on `local`, logging into `dir`.
    pub fn spawn(dir: &Path, scenario: &str, local: Ipv4Addr, args: &[String]) -> Sipp {
        Sipp::spawn_in(None, dir, scenario, local, args)
    }

    /// As [`spawn`](Self::spawn), inside `net` when given.
    pub fn spawn_in(
        net: Option<&Net>,
        dir: &Path,
        scenario: &str,
        local: Ipv4Addr,
        args: &[String],
    ) -> Sipp {
        fs::create_dir_all(dir).expect("sipp directory");
        let (kind, scenario) = if scenario.ends_with(".xml") {
            (
                "-sf",
                workspace()
                    .join("tests/scenarios")
                    .join(scenario)
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            ("-sn", scenario.to_owned())
        };
        let child = net
            .map_or_else(|| Command::new("sipp"), |net| net.command("sipp"))
            .args([kind, &scenario, "-i", &local.to_string()])
            .args(["-p", &SIP_PORT.to_string(), "-mi", &local.to_string()])
            .args(["-t", "u1", "-nostdin", "-fd", "1"])
            .args(["-trace_err", "-trace_stat", "-stf"])
            .arg(dir.join("stat.csv"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp (is it installed?)");
        Sipp {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits at most `limit` for SIPp to exit, then kills it; returns the
    /// final counts of its statistics file.
    pub fn finish(mut self, limit: Duration) -> Counts {
        let deadline = now() + limit;
        while matches!(self.child.try_wait(), Ok(None)) && now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Counts::read(&self.dir.join("stat.csv"))
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Successful and failed calls of one or more UACs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Calls that completed.
    pub ok: u64,
    /// Calls that failed.
    pub failed: u64,
}

impl Counts {
    /// The cumulative counts of the last row of a SIPp statistics file.
    pub fn read(path: &Path) -> Counts {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Counts::default();
        };
        let Some(last) = lines.next_back() else {
            return Counts::default();
        };
        let column = |name: &str| {
            let i = header.split(';').position(|h| h == name)?;
            last.split(';').nth(i)?.trim().parse::<u64>().ok()
        };
        Counts {
            ok: column("SuccessfulCall(C)").unwrap_or(0),
            failed: column("FailedCall(C)").unwrap_or(0),
        }
    }

    /// Every offered call succeeded.
    pub fn clean(&self, offered: u64) -> bool {
        self.failed == 0 && self.ok == offered
    }

    pub fn cell(&self, offered: u64) -> String {
        let missing = offered.saturating_sub(self.ok + self.failed);
        if missing > 0 {
            format!("{}/{} ({missing} lost)", self.ok, self.failed)
        } else {
            format!("{}/{}", self.ok, self.failed)
        }
    }
}

/// Runs `calls` calls at `rate` total cps split over `pairs` UAC/UAS pairs,
/// directly or through the daemon's realm at `via`.
pub fn run_calls(dir: &Path, pairs: u64, rate: u64, calls: u64, via: Option<Ipv4Addr>) -> Counts {
    run_calls_in(None, dir, pairs, rate, calls, via)
}

/// As [`run_calls`], with every SIPp inside `net` when given.
pub fn run_calls_in(
    net: Option<&Net>,
    dir: &Path,
    pairs: u64,
    rate: u64,
    calls: u64,
    via: Option<Ipv4Addr>,
) -> Counts {
    let uases: Vec<Sipp> = (0..pairs)
        .map(|i| Sipp::spawn_in(net, &dir.join(format!("uas{i}")), "uas", uas_ip(i), &[]))
        .collect();
    // Let the UASes bind before the first INVITE.
    thread::sleep(Duration::from_millis(300));
    let secs = calls.div_ceil(rate) + 10;
    let uacs: Vec<Sipp> = (0..pairs)
        .map(|i| {
            let share = calls / pairs + u64::from(i < calls % pairs);
            let target = via.unwrap_or_else(|| uas_ip(i));
            let args = vec![
                format!("{target}:{SIP_PORT}"),
                "-s".into(),
                service(i),
                "-m".into(),
                share.to_string(),
                "-r".into(),
                format!("{}", (rate / pairs).max(1)),
                "-timeout".into(),
                format!("{secs}s"),
                "-timeout_error".into(),
            ];
            Sipp::spawn_in(net, &dir.join(format!("uac{i}")), "uac", uac_ip(i), &args)
        })
        .collect();
    let limit = Duration::from_secs(secs + 5);
    let mut total = Counts::default();
    for uac in uacs {
        let c = uac.finish(limit);
        total.ok += c.ok;
        total.failed += c.failed;
    }
    drop(uases);
    total
}

/// Waits for a final response to `method` of call `call_id` (a late answer
/// to an earlier, timed-out call is skipped); returns it whole, with its
/// kernel receive timestamp when the socket has them on.
pub fn final_response(
    socket: &UdpSocket,
    call_id: &str,
    method: &str,
) -> Option<(String, Option<SystemTime>)> {
    // Bounded as a whole, not only per read: a peer that keeps
    // retransmitting other calls' messages must not hold the probe forever.
    let deadline = now() + Duration::from_secs(3);
    let mut buf = [0u8; 65536];
    loop {
        if now() > deadline {
            return None;
        }
        let got = stamp::recv_from(socket, &mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..got.len]).into_owned();
        let code: u16 = text.get(8..11)?.parse().ok()?;
        let is_ours = header(&text, "CSeq").is_some_and(|c| c.ends_with(method))
            && header(&text, "Call-ID") == Some(call_id);
        if text.starts_with("SIP/2.0 ") && is_ours && code >= 200 {
            return Some((text, got.stamp));
        }
    }
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A callee in this process for the latency probe: answers an INVITE at
/// once with 200 and SDP, a BYE with 200, and nothing else, so the probe's
/// time is the path's (the SBC's, or the kernel's alone) and not a SIPp
/// callee's scheduling, whose own jitter (milliseconds at the 99th
/// percentile under load) would hide what is measured.
pub struct EchoUas {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
    /// The last INVITE answered (the probe's calls are sequential).
    invited: std::sync::Arc<std::sync::Mutex<Option<Answered>>>,
}

/// An INVITE [`EchoUas`] answered.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    /// When this callee read it.
    pub read: Instant,
    /// When it reached this callee's socket (its kernel receive timestamp).
    pub arrived: Option<SystemTime>,
    /// When the 200 was handed to the kernel.
    pub answered: SystemTime,
}

impl EchoUas {
    /// Binds `ip`:[`SIP_PORT`] and answers until dropped.
    pub fn start(ip: Ipv4Addr) -> EchoUas {
        let socket = UdpSocket::bind((ip, SIP_PORT)).expect("echo UAS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        stamp::enable(&socket).expect("receive timestamps");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let invited = std::sync::Arc::new(std::sync::Mutex::new(None));
        let last_invite = std::sync::Arc::clone(&invited);
        let thread = thread::spawn(move || {
            let mut answered = 0;
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(got) = stamp::recv_from(&socket, &mut buf) else {
                    continue;
                };
                let read = now();
                let msg = String::from_utf8_lossy(&buf[..got.len]);
                let Some(reply) = echo_answer(&msg, ip) else {
                    continue;
                };
                let sent = wall();
                if socket.send_to(reply.as_bytes(), got.from).is_ok() {
                    answered += 1;
                    if msg.starts_with("INVITE ")
                        && let Ok(mut last) = last_invite.lock()
                    {
                        *last = Some(Answered {
                            read,
                            arrived: got.stamp,
                            answered: sent,
                        });
                    }
                }
            }
            answered
        });
        EchoUas {
            stop,
            thread: Some(thread),
            invited,
        }
    }

    /// The last INVITE this callee answered.
    pub fn last_invite(&self) -> Option<Answered> {
        self.invited.lock().ok().and_then(|at| *at)
    }
}

impl Drop for EchoUas {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The echo callee's answer to `msg`: 200 (with SDP for an INVITE) to an
/// INVITE or a BYE, nothing to anything else.
fn echo_answer(msg: &str, ip: Ipv4Addr) -> Option<String> {
    let method = msg.split(' ').next()?;
    if method != "INVITE" && method != "BYE" {
        return None;
    }
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in msg.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("Via") {
            let _ = write!(out, "Via: {}\r\n", value.trim());
        }
    }
    let to = header(msg, "To")?;
    let to = if to.contains("tag=") {
        to.to_owned()
    } else {
        format!("{to};tag=echo")
    };
    let _ = write!(
        out,
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        header(msg, "From")?,
        header(msg, "Call-ID")?,
        header(msg, "CSeq")?
    );
    if method == "INVITE" {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio 16002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        let _ = write!(
            out,
            "Contact: <sip:echo@{ip}:{SIP_PORT}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
    } else {
        out.push_str("Content-Length: 0\r\n\r\n");
    }
    Some(out)
}

/// One INVITE/200/ACK/BYE call; the INVITE -> 200 time in microseconds.
pub fn one_call(socket: &UdpSocket, target: SocketAddr, n: u64) -> Option<u64> {
    one_call_from(socket, target, n).map(|call| call.us)
}

/// A call of [`one_call_from`].
#[derive(Clone, Copy, Debug)]
pub struct ProbeCall {
    /// When the INVITE was sent.
    pub start: Instant,
    /// The same on the wall clock.
    pub invite_sent: SystemTime,
    /// INVITE -> 200, in microseconds, as this thread saw it.
    pub us: u64,
    /// When the 200 reached the probe's socket (its kernel receive
    /// timestamp, when the socket has them on: [`stamp::enable`]).
    pub ok_arrived: Option<SystemTime>,
}

/// [`one_call`], with when each end of the INVITE -> 200 happened.
pub fn one_call_from(socket: &UdpSocket, target: SocketAddr, n: u64) -> Option<ProbeCall> {
    let local = socket.local_addr().ok()?;
    let user = service(0);
    let sdp = format!(
        "v=0\r\no=- {n} 1 IN IP4 {PROBE}\r\ns=-\r\nc=IN IP4 {PROBE}\r\nt=0 0\r\n\
         m=audio 16000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let call_id = format!("lat-{n}-{}@{PROBE}", std::process::id());
    let from = format!("<sip:probe@{local}>;tag=p{n}");
    let invite = format!(
        "INVITE sip:{user}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-i{n}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: <sip:{user}@{target}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:probe@{local}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let (start, invite_sent) = (now(), wall());
    socket.send_to(invite.as_bytes(), target).ok()?;
    let (ok, ok_arrived) = final_response(socket, &call_id, "INVITE")?;
    let elapsed = now().duration_since(start);
    if !ok.starts_with("SIP/2.0 200") {
        return None;
    }
    let to = header(&ok, "To")?;
    let contact = header(&ok, "Contact")?;
    let uri = contact.split_once('<')?.1.split_once('>')?.0;
    let request = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{branch}{n}\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    socket
        .send_to(request("ACK", 1, "a").as_bytes(), target)
        .ok()?;
    socket
        .send_to(request("BYE", 2, "b").as_bytes(), target)
        .ok()?;
    final_response(socket, &call_id, "BYE")?;
    Some(ProbeCall {
        start,
        invite_sent,
        us: u64::try_from(elapsed.as_micros()).ok()?,
        ok_arrived,
    })
}

/// The `p`th percentile of sorted samples (0 when there are none).
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

/// The access realm's keepalive interval in phase 5: every binding gets an
/// OPTIONS this often, so the daemon sends `phones / KEEPALIVE_SECS` a second.
pub const KEEPALIVE_SECS: u64 = 10;

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn a_status_number_is_read_by_its_whole_field_name() {
        let status = "Name:\tsbc\nVmRSS:\t  131040 kB\nvoluntary_ctxt_switches:\t302\n\
                      nonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_number(status, "VmRSS"), Some(131_040));
        assert_eq!(status_number(status, "voluntary_ctxt_switches"), Some(302));
        assert_eq!(status_number(status, "nonvoluntary_ctxt_switches"), Some(7));
        // A field that is only the start of another's name is not that one.
        assert_eq!(status_number(status, "voluntary_ctxt"), None);
        assert_eq!(status_number(status, "Name"), None);
    }

    #[test]
    fn this_process_has_switch_counts() {
        let pid = std::process::id();
        assert!(process_switches(pid).is_some_and(|s| s.voluntary + s.preempted > 0));
        assert!(process_switches(u32::MAX).is_none());
    }
}
