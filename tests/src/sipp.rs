//! Real SIPp peers for the end-to-end tests, always bounded in time.
//!
//! Owns: building a SIPp 3.6.1 command line (Debian `sip-tester`) from a
//! [`Sipp`] builder, running it in a fresh per-run directory with its
//! message, error, screen and statistics logs switched on, killing it at a
//! wall-clock deadline if its own `-timeout` did not end it, and reading the
//! result back ([`SippResult`]: exit status, successful/failed call counts
//! from the statistics CSV, the full message log). Also the topology scan
//! [`assert_no_leak`] that proves no address or identifier of one realm
//! appears in what the other realm's peer saw.
//!
//! May not: leave a process behind (a handle that is dropped kills and reaps
//! its SIPp) or run unbounded (every run gets `-timeout` with
//! `-timeout_error`, and the harness kills at `timeout + grace`). Where the
//! peers send is the test's choice; tests give loopback addresses or
//! addresses of namespaces they made (DESIGN.md, "Test lab").
//!
//! A run's directory is deleted when the run succeeded as asserted and kept
//! (its path is in the panic message) when an assertion fails.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::netns::{Netns, enter_netns_of, isolated_loopback, netns_exec, wait_with_deadline};

/// Where Debian's sip-tester ships the pcap files the built-in `uac_pcap`
/// scenario plays (`pcap/g711a.pcap`, `pcap/dtmf_2833_1.pcap`).
pub const SIPP_PCAP_DIR: &str = "/usr/share/sip-tester";

/// The default bound of one SIPp run (its `-timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after its own `-timeout` SIPp may take to exit before the
/// harness kills it.
const GRACE: Duration = Duration::from_secs(5);

/// Lines of each log shown in a failure message.
const TAIL_LINES: usize = 40;

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// The scenario a SIPp peer plays.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// One of SIPp's embedded scenarios (`-sn`): `uac`, `uas`, `uac_pcap`,
    /// `regexp`, `branchc`, `branchs`, `3pcc-*`. `uac_pcap` (and any
    /// `play_pcap_audio`) sends through a raw socket and so needs root.
    BuiltIn(String),
    /// A scenario XML file (`-sf`).
    File(PathBuf),
}

/// SIPp's signaling transport (`-t`).
///
/// Over TCP, a SIPp UAS counts a call as failed (`FailedTcpClosed`) when
/// the UAC closes the connection while that call sits in the scenario's
/// closing `timewait` (4 s in the built-in and drachtio UAS scenarios): a
/// UAC that exits right after its last BYE fails the UAS's last call. TCP
/// tests keep the UAC's connection open past the timewait or judge the UAC
/// side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP, one socket for all calls (`-t u1`), SIPp's default.
    Udp,
    /// TCP, one connection for all calls (`-t t1`).
    Tcp,
}

/// `path` made absolute against the test's working directory: SIPp runs
/// in its own run directory, where a relative path would miss.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// Which network namespace a peer runs in.
#[derive(Debug, Clone)]
enum Place {
    /// The test's own.
    Here,
    /// A named namespace (`ip netns exec`).
    Netns(String),
    /// A fresh private namespace with only loopback ([`isolated_loopback`]).
    Isolated,
    /// The namespace of a running process (`nsenter -t PID -n`).
    NetnsOf(u32),
}

/// A SIPp peer to run: a builder of its command line.
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: Scenario,
    local: Option<(IpAddr, u16)>,
    media: Option<(IpAddr, u16)>,
    remote: Option<SocketAddr>,
    service: Option<String>,
    transport: Transport,
    calls: u32,
    rate: Option<f64>,
    limit: Option<u32>,
    rtp_echo: bool,
    inf: Vec<PathBuf>,
    keys: Vec<(String, String)>,
    extra: Vec<OsString>,
    timeout: Duration,
    deadline: Option<Duration>,
    place: Place,
    message_log: bool,
}

impl Sipp {
    fn new(scenario: Scenario) -> Sipp {
        Sipp {
            scenario,
            local: None,
            media: None,
            remote: None,
            service: None,
            transport: Transport::Udp,
            calls: 1,
            rate: None,
            limit: None,
            rtp_echo: false,
            inf: Vec::new(),
            keys: Vec::new(),
            extra: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            deadline: None,
            place: Place::Here,
            message_log: true,
        }
    }

    /// A peer playing SIPp's embedded scenario `name` (`-sn name`).
    pub fn builtin(name: &str) -> Sipp {
        Sipp::new(Scenario::BuiltIn(name.to_owned()))
    }

    /// A peer playing the scenario XML at `path` (`-sf path`; relative to
    /// the test's working directory, not SIPp's run directory).
    pub fn scenario_file(path: impl Into<PathBuf>) -> Sipp {
        Sipp::new(Scenario::File(absolute(path.into())))
    }

    /// A peer playing `tests/scenarios/<name>` shipped with this crate.
    pub fn shipped(name: &str) -> Sipp {
        Sipp::scenario_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scenarios")
                .join(name),
        )
    }

    /// Local signaling address and port (`-i`, `-p`). The media address
    /// defaults to the same IP (SIPp's own default is the host's primary
    /// address, which a loopback test must not advertise in SDP).
    pub fn local(mut self, ip: IpAddr, port: u16) -> Sipp {
        self.local = Some((ip, port));
        self
    }

    /// Local media address and port (`-mi`, `-mp`); SIPp also binds
    /// `port + 2` for a second stream.
    pub fn media(mut self, ip: IpAddr, port: u16) -> Sipp {
        self.media = Some((ip, port));
        self
    }

    /// The remote host a UAC sends to.
    pub fn remote(mut self, addr: SocketAddr) -> Sipp {
        self.remote = Some(addr);
        self
    }

    /// The request-URI user part (`-s`, `[service]` in scenarios).
    pub fn service(mut self, user: &str) -> Sipp {
        self.service = Some(user.to_owned());
        self
    }

    /// The signaling transport (`-t u1` / `-t t1`).
    pub fn transport(mut self, transport: Transport) -> Sipp {
        self.transport = transport;
        self
    }

    /// Calls to process before exiting (`-m`); 1 unless set.
    pub fn calls(mut self, calls: u32) -> Sipp {
        self.calls = calls;
        self
    }

    /// New calls per second (`-r`).
    pub fn rate(mut self, calls_per_second: f64) -> Sipp {
        self.rate = Some(calls_per_second);
        self
    }

    /// Most calls open at once (`-l`).
    pub fn limit(mut self, concurrent: u32) -> Sipp {
        self.limit = Some(concurrent);
        self
    }

    /// Echo RTP received on the media port back to its sender
    /// (`-rtp_echo`).
    pub fn rtp_echo(mut self) -> Sipp {
        self.rtp_echo = true;
        self
    }

    /// Inject values from this CSV file (`-inf`, `[field0]`… in scenarios;
    /// relative to the test's working directory).
    pub fn inf(mut self, csv: impl Into<PathBuf>) -> Sipp {
        self.inf.push(absolute(csv.into()));
        self
    }

    /// Set a custom keyword (`-key name value`, `[name]` in scenarios).
    pub fn key(mut self, name: &str, value: &str) -> Sipp {
        self.keys.push((name.to_owned(), value.to_owned()));
        self
    }

    /// No `-trace_msg` message log (a load run would write hundreds of
    /// megabytes, and SIPp spends its time writing them).
    pub fn without_message_log(mut self) -> Sipp {
        self.message_log = false;
        self
    }

    /// Pass an argument this builder has no method for.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Sipp {
        self.extra.push(arg.into());
        self
    }

    /// SIPp's global bound (`-timeout`, with `-timeout_error` so reaching
    /// it is a failure); 30 s unless set. The harness kills SIPp 5 s later
    /// if it is still running.
    pub fn timeout(mut self, timeout: Duration) -> Sipp {
        self.timeout = timeout;
        self
    }

    /// The harness's wall-clock kill, measured from start; `timeout + 5 s`
    /// unless set. Setting it below the timeout tests the kill itself.
    pub fn deadline(mut self, deadline: Duration) -> Sipp {
        self.deadline = Some(deadline);
        self
    }

    /// Run inside this network namespace (`ip netns exec`).
    pub fn in_netns(mut self, netns: &Netns) -> Sipp {
        self.place = Place::Netns(netns.name().to_owned());
        self
    }

    /// Run inside a fresh private namespace that has only loopback
    /// ([`isolated_loopback`]); other peers join it with
    /// [`in_netns_of`](Self::in_netns_of) and this run's
    /// [`SippHandle::id`].
    pub fn isolated(mut self) -> Sipp {
        self.place = Place::Isolated;
        self
    }

    /// Run inside the network namespace of process `pid`
    /// ([`enter_netns_of`]), e.g. a daemon or peer started isolated.
    pub fn in_netns_of(mut self, pid: u32) -> Sipp {
        self.place = Place::NetnsOf(pid);
        self
    }

    fn log_stem(&self) -> String {
        let name = match &self.scenario {
            Scenario::BuiltIn(name) => name.clone(),
            Scenario::File(path) => path.file_stem().map_or_else(
                || "scenario".to_owned(),
                |s| s.to_string_lossy().into_owned(),
            ),
        };
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The full command: `[namespace wrapper] sipp ARGS`, with log files
    /// named inside `dir`.
    fn command(&self, dir: &Path) -> Command {
        let mut cmd = match &self.place {
            Place::Here => Command::new("sipp"),
            Place::Netns(name) => netns_exec(name, "sipp"),
            Place::Isolated => isolated_loopback("sipp"),
            Place::NetnsOf(pid) => enter_netns_of(*pid, "sipp"),
        };
        match &self.scenario {
            Scenario::BuiltIn(name) => cmd.args(["-sn", name]),
            Scenario::File(path) => cmd.arg("-sf").arg(path),
        };
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        if let Some((ip, port)) = self.local {
            cmd.args(["-i", &ip.to_string(), "-p", &port.to_string()]);
        }
        let media_ip = self
            .media
            .map(|(ip, _)| ip)
            .or(self.local.map(|(ip, _)| ip));
        if let Some(ip) = media_ip {
            cmd.args(["-mi", &ip.to_string()]);
        }
        if let Some((_, port)) = self.media {
            cmd.args(["-mp", &port.to_string()]);
        }
        if let Some(user) = &self.service {
            cmd.args(["-s", user]);
        }
        cmd.args([
            "-t",
            match self.transport {
                Transport::Udp => "u1",
                Transport::Tcp => "t1",
            },
        ]);
        cmd.args(["-m", &self.calls.to_string()]);
        if let Some(rate) = self.rate {
            cmd.args(["-r", &rate.to_string()]);
        }
        if let Some(limit) = self.limit {
            cmd.args(["-l", &limit.to_string()]);
        }
        if self.rtp_echo {
            cmd.arg("-rtp_echo");
        }
        for csv in &self.inf {
            cmd.arg("-inf").arg(csv);
        }
        for (name, value) in &self.keys {
            cmd.args(["-key", name, value]);
        }
        // SIPp counts -timeout in seconds; round up so it never undercuts.
        let secs = self.timeout.as_millis().div_ceil(1000).max(1);
        cmd.args([
            "-timeout",
            &format!("{secs}s"),
            "-timeout_error",
            "-nostdin",
        ]);
        // Statistics every second, so a run killed at the deadline still
        // leaves counts behind.
        cmd.args(["-fd", "1"]);
        if self.message_log {
            cmd.arg("-trace_msg")
                .arg("-message_file")
                .arg(dir.join("messages.log"));
        }
        cmd.arg("-trace_err")
            .arg("-error_file")
            .arg(dir.join("errors.log"));
        cmd.arg("-trace_screen")
            .arg("-screen_file")
            .arg(dir.join("screen.log"));
        cmd.arg("-trace_stat").arg("-stf").arg(dir.join("stat.csv"));
        cmd.args(&self.extra);
        cmd.current_dir(dir).stdin(Stdio::null());
        cmd
    }

    /// Starts the peer in the background (e.g. a UAS while a UAC runs) and
    /// returns its handle. Panics if SIPp cannot be spawned.
    pub fn start(&self) -> SippHandle {
        let n = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "sbc-sipp-{}-{}-{n}",
            self.log_stem(),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create SIPp run directory {}: {e}", dir.display()));
        // SIPp 3.6.1 looks for `pcap/…` next to the scenario, then in the
        // working directory: this makes `uac_pcap` (and corpus scenarios
        // that say `pcap/g711a.pcap`) find Debian's files.
        if Path::new(SIPP_PCAP_DIR).is_dir() {
            let _ = std::os::unix::fs::symlink(SIPP_PCAP_DIR, dir.join("pcap"));
        }
        let open = |name: &str| {
            File::create(dir.join(name))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.join(name).display()))
        };
        let mut cmd = self.command(&dir);
        cmd.stdout(open("stdout.log")).stderr(open("stderr.log"));
        let command_line = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn SIPp ({command_line}): {e}"));
        SippHandle {
            child: Some(child),
            started: crate::netns::now(),
            deadline: self.deadline.unwrap_or(self.timeout + GRACE),
            dir,
            command_line,
        }
    }

    /// Runs the peer to completion (or to its deadline) and returns the
    /// result.
    pub fn run(&self) -> SippResult {
        self.start().wait()
    }
}

/// A running SIPp. Dropping it kills and reaps the process and removes its
/// run directory (kept when the thread is panicking: a failed test's logs).
#[derive(Debug)]
pub struct SippHandle {
    child: Option<Child>,
    started: std::time::Instant,
    deadline: Duration,
    dir: PathBuf,
    command_line: String,
}

impl SippHandle {
    /// The SIPp process id (namespace wrappers exec SIPp, so it is
    /// SIPp's own).
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The run directory holding the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for SIPp to exit, killing it at the deadline, and reads its
    /// logs.
    pub fn wait(mut self) -> SippResult {
        let left = self
            .deadline
            .saturating_sub(crate::netns::now() - self.started);
        self.finish(left, true)
    }

    /// Kills SIPp now and reads its logs.
    pub fn kill(mut self) -> SippResult {
        self.finish(Duration::ZERO, false)
    }

    /// Waits up to `limit`, then kills; `at_deadline` says whether such a
    /// kill is the harness deadline (rather than an asked-for kill).
    fn finish(&mut self, limit: Duration, at_deadline: bool) -> SippResult {
        let Some(mut child) = self.child.take() else {
            unreachable!("a SippHandle holds its child until wait/kill consumes it")
        };
        let (status, killed) = wait_with_deadline(&mut child, limit);
        SippResult::read(
            &self.dir,
            status,
            killed && at_deadline,
            self.started.elapsed(),
            self.command_line.clone(),
        )
    }
}

impl Drop for SippHandle {
    fn drop(&mut self) {
        // Once `wait` or `kill` took the child, the run directory is the
        // result's to remove.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            remove_run_dir(&self.dir);
        }
    }
}

/// Removes a finished run's directory unless the thread is panicking: a
/// failed assertion's report names the directory, whose logs then stay.
fn remove_run_dir(dir: &Path) {
    if !std::thread::panicking() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Final call counters from SIPp's statistics CSV (cumulative columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    /// `TotalCallCreated`.
    pub created: u64,
    /// `SuccessfulCall(C)`.
    pub successful: u64,
    /// `FailedCall(C)`.
    pub failed: u64,
}

impl CallCounts {
    /// Reads the last row of a `-trace_stat` CSV (`;`-separated, header
    /// first). `None` when SIPp wrote no row (it failed to start).
    pub fn parse(stat_csv: &str) -> Option<CallCounts> {
        let mut lines = stat_csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let get = |column: &str| -> Option<u64> {
            let i = header.iter().position(|h| *h == column)?;
            last.get(i)?.trim().parse().ok()
        };
        Some(CallCounts {
            created: get("TotalCallCreated")?,
            successful: get("SuccessfulCall(C)")?,
            failed: get("FailedCall(C)")?,
        })
    }
}

/// What one SIPp run did. Its logs are read into it; dropping it removes
/// the run directory, unless the thread is panicking (then the directory
/// stays for the failure's report to point at).
#[derive(Debug)]
pub struct SippResult {
    /// SIPp's exit status: 0 when every call succeeded, 1 when some failed,
    /// 255 on a fatal error or its own timeout; no code when killed.
    pub status: ExitStatus,
    /// The harness killed SIPp at the wall-clock deadline.
    pub killed_at_deadline: bool,
    /// Wall-clock time from start to exit.
    pub elapsed: Duration,
    /// Call counters; `None` when SIPp wrote no statistics.
    pub counts: Option<CallCounts>,
    /// The message log (`-trace_msg`): every SIP message sent and received.
    pub messages: String,
    /// The unexpected-message/error log (`-trace_err`).
    pub errors: String,
    /// The final screens (`-trace_screen`).
    pub screen: String,
    /// SIPp's stderr.
    pub stderr: String,
    /// The run directory (removed on drop, kept after a failed assertion).
    pub dir: PathBuf,
    /// The command line, for failure messages.
    pub command_line: String,
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for SippResult {
    fn drop(&mut self) {
        remove_run_dir(&self.dir);
    }
}

impl SippResult {
    fn read(
        dir: &Path,
        status: ExitStatus,
        killed_at_deadline: bool,
        elapsed: Duration,
        command_line: String,
    ) -> SippResult {
        SippResult {
            status,
            killed_at_deadline,
            elapsed,
            counts: CallCounts::parse(&read_lossy(&dir.join("stat.csv"))),
            messages: read_lossy(&dir.join("messages.log")),
            errors: read_lossy(&dir.join("errors.log")),
            screen: read_lossy(&dir.join("screen.log")),
            stderr: read_lossy(&dir.join("stderr.log")),
            dir: dir.to_path_buf(),
            command_line,
        }
    }

    /// Successful calls (0 when SIPp wrote no statistics).
    pub fn successful(&self) -> u64 {
        self.counts.map_or(0, |c| c.successful)
    }

    /// Failed calls (0 when SIPp wrote no statistics).
    pub fn failed(&self) -> u64 {
        self.counts.map_or(0, |c| c.failed)
    }

    /// How many requests of `method` the message log shows (sent or
    /// received, retransmissions included): lines that start with
    /// `METHOD sip:`.
    pub fn requests(&self, method: &str) -> usize {
        let start = format!("{method} sip:");
        self.messages
            .lines()
            .filter(|l| l.starts_with(&start))
            .count()
    }

    /// A report for failure messages: what ran, how it ended, and the tails
    /// of stderr, the error log, the screen and the message log.
    pub fn report(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "SIPp: {}", self.command_line);
        let _ = writeln!(
            r,
            "exit: {}{}, after {:.1?}; counts: {:?}; logs in {} (kept when the test fails)",
            self.status,
            if self.killed_at_deadline {
                " (killed at the harness deadline)"
            } else {
                ""
            },
            self.elapsed,
            self.counts,
            self.dir.display()
        );
        for (name, text) in [
            ("stderr", &self.stderr),
            ("errors.log", &self.errors),
            ("screen.log", &self.screen),
            ("messages.log", &self.messages),
        ] {
            if !text.trim().is_empty() {
                let _ = writeln!(
                    r,
                    "--- {name} (last {TAIL_LINES} lines) ---\n{}",
                    tail(text, TAIL_LINES)
                );
            }
        }
        r
    }

    /// Panics with [`report`](Self::report) unless SIPp exited 0 by itself
    /// with exactly `expected_calls` successful and no failed calls.
    pub fn assert_success(&self, expected_calls: u64) {
        let ok = self.status.success()
            && !self.killed_at_deadline
            && self.successful() == expected_calls
            && self.failed() == 0;
        assert!(
            ok,
            "SIPp run failed: expected {expected_calls} successful and 0 failed calls\n{}",
            self.report()
        );
    }

    /// Panics with [`report`](Self::report) unless the run failed: a
    /// non-zero exit or failed calls.
    pub fn assert_failure(&self) {
        let failed = !self.status.success() || self.failed() > 0;
        assert!(
            failed,
            "SIPp run was expected to fail but succeeded\n{}",
            self.report()
        );
    }
}

/// The first forbidden token found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The forbidden token.
    pub token: String,
    /// Byte offset of the hit in the log.
    pub offset: usize,
    /// The message around it (between SIPp's `-----` separator lines).
    pub message: String,
}

/// A byte that continues an address or identifier token.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Finds the earliest occurrence in `log` of any `forbidden` token (ASCII
/// case-insensitive, since host names and many SIP tokens are). A hit is
/// ignored when it is only part of a longer word or number, e.g.
/// `127.0.0.1` inside `127.0.0.10` or `alice` inside `malice`, so the scan
/// has no false alarms from neighbouring addresses.
pub fn find_leak(log: &str, forbidden: &[&str]) -> Option<Leak> {
    let hay = log.to_ascii_lowercase();
    let bytes = hay.as_bytes();
    let mut best: Option<(usize, &str)> = None;
    for token in forbidden.iter().filter(|t| !t.is_empty()) {
        let needle = token.to_ascii_lowercase();
        let nb = needle.as_bytes();
        let mut from = 0;
        while let Some(pos) = hay[from..].find(&needle).map(|p| p + from) {
            let end = pos + needle.len();
            let glued_before = pos > 0 && is_word(bytes[pos - 1]) && is_word(nb[0]);
            let glued_after = end < bytes.len() && is_word(bytes[end]) && is_word(nb[nb.len() - 1]);
            if !glued_before && !glued_after {
                if best.is_none_or(|(b, _)| pos < b) {
                    best = Some((pos, token));
                }
                break;
            }
            from = pos + 1;
        }
    }
    let (offset, token) = best?;
    Some(Leak {
        token: token.to_owned(),
        offset,
        message: surrounding_message(log, offset),
    })
}

/// The message holding byte `offset`: from the previous separator line
/// (SIPp's message log puts a line of dashes before each message) to the
/// next, or 600 bytes either side when there are none.
fn surrounding_message(log: &str, offset: usize) -> String {
    const SEP: &str = "\n-----";
    const SPAN: usize = 600;
    let floor = |mut i: usize| {
        while !log.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = log[..offset]
        .rfind(SEP)
        .map_or_else(|| floor(offset.saturating_sub(SPAN)), |i| i + 1);
    let end = log[offset..]
        .find(SEP)
        .map_or_else(|| floor((offset + SPAN).min(log.len())), |i| i + offset);
    log[start..end].to_owned()
}

/// Panics naming the first forbidden token found in `log` and the message
/// around it. The B2BUA tests pass a peer's message log and the addresses
/// and identifiers of the other realm, to prove none crossed the border.
pub fn assert_no_leak(log: &str, forbidden: &[&str]) {
    if let Some(leak) = find_leak(log, forbidden) {
        panic!(
            "topology leak: forbidden token `{}` at byte {} of the log, in this message:\n{}",
            leak.token, leak.offset, leak.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "----------------------------------------------- 2026-11-21 13:48:37.310\n\
UDP message sent (400 bytes):\n\n\
INVITE sip:service@127.0.0.9:15060 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.10:15061;branch=z9hG4bK-1\n\
Call-ID: 1-abc@127.0.0.10\n\n\
----------------------------------------------- 2026-11-21 13:48:37.311\n\
UDP message received [300] bytes :\n\n\
SIP/2.0 200 OK\n\
Contact: <sip:Alice@Inside.Example:5060>\n\n";

    #[test]
    fn leak_names_token_and_its_message() {
        let leak = find_leak(LOG, &["alice@inside.example", "nothing-here"]).expect("a leak");
        assert_eq!(leak.token, "alice@inside.example");
        assert!(leak.message.contains("SIP/2.0 200 OK"), "{}", leak.message);
        assert!(!leak.message.contains("INVITE"), "{}", leak.message);
    }

    #[test]
    fn earliest_hit_wins_and_word_glue_is_not_a_hit() {
        // 127.0.0.1 only occurs glued into 127.0.0.10: no hit.
        assert_eq!(find_leak(LOG, &["127.0.0.1"]), None);
        let leak = find_leak(LOG, &["alice", "127.0.0.10"]).expect("a leak");
        assert_eq!(leak.token, "127.0.0.10");
        assert!(leak.message.starts_with("-----"), "{}", leak.message);
        assert!(leak.message.contains("INVITE sip:"), "{}", leak.message);
    }

    #[test]
    fn assert_no_leak_panics_with_the_token() {
        let err = std::panic::catch_unwind(|| assert_no_leak(LOG, &["Inside.EXAMPLE"]))
            .expect_err("must panic");
        let msg = err.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.contains("`Inside.EXAMPLE`"), "{msg}");
        assert!(
            msg.contains("Contact: <sip:Alice@Inside.Example:5060>"),
            "{msg}"
        );
        assert_no_leak(LOG, &["192.0.2.1", "bob"]);
    }

    #[test]
    fn call_counts_from_the_last_row() {
        let csv = "StartTime;TotalCallCreated;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);\n\
                   t0;0;0;0;0;0;\n\
                   t1;10;3;9;1;1;\n";
        assert_eq!(
            CallCounts::parse(csv),
            Some(CallCounts {
                created: 10,
                successful: 9,
                failed: 1
            })
        );
        assert_eq!(CallCounts::parse("StartTime;TotalCallCreated\n"), None);
        assert_eq!(CallCounts::parse(""), None);
    }

    #[test]
    fn command_line_is_bounded_and_traced() {
        let sipp = Sipp::builtin("uac")
            .local("127.0.0.2".parse().expect("ip"), 5070)
            .remote("127.0.0.3:5060".parse().expect("addr"))
            .transport(Transport::Tcp)
            .calls(3)
            .rate(2.5)
            .limit(2)
            .rtp_echo()
            .key("k", "v")
            .inf("users.csv")
            .timeout(Duration::from_millis(1500));
        let cmd = format!("{:?}", sipp.command(Path::new("/run-dir")));
        for part in [
            "\"-sn\" \"uac\" \"127.0.0.3:5060\"",
            "\"-i\" \"127.0.0.2\" \"-p\" \"5070\" \"-mi\" \"127.0.0.2\"",
            "\"-t\" \"t1\" \"-m\" \"3\" \"-r\" \"2.5\" \"-l\" \"2\" \"-rtp_echo\"",
            "\"-key\" \"k\" \"v\"",
            &format!(
                "\"-inf\" {:?}",
                std::env::current_dir().expect("cwd").join("users.csv")
            ),
            "\"-timeout\" \"2s\" \"-timeout_error\"",
            "\"-message_file\" \"/run-dir/messages.log\"",
            "\"-stf\" \"/run-dir/stat.csv\"",
        ] {
            assert!(cmd.contains(part), "{part} missing from {cmd}");
        }
    }
}
