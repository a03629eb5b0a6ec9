//! Network-namespace labs and bounded child processes for the end-to-end
//! tests.
//!
//! Owns: creating uniquely named namespaces (`ip netns add`) and deleting
//! them on drop (also when the test panics), veth pairs between two
//! namespaces or a namespace and the root namespace with TEST-NET addresses
//! only (RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), turning
//! veth tx checksum offload off (DESIGN.md "XDP on veth"), running commands
//! inside a namespace, and running one command in a throw-away private
//! namespace that has nothing but loopback ([`isolated_loopback`]), which is
//! how corpus messages naming foreign hosts are replayed at a daemon without
//! any chance of a packet leaving the machine.
//!
//! May not: touch an interface or namespace it did not create, or give an
//! address outside TEST-NET to a veth (it panics instead, so a typo cannot
//! put a real network's address on a test link).
//!
//! Privilege: namespaces and veths need root (`CAP_NET_ADMIN`). A test
//! calls [`skip_unless_privileged`] first: on a laptop without root it
//! prints why and skips; under CI (`CI=true` or `SBC_REQUIRE_PRIVILEGED=1`)
//! a missing privilege fails the test, because a skipped lab proves nothing.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often a bounded wait looks at its child.
const POLL: Duration = Duration::from_millis(20);

/// Names made by this process are `<prefix>-<pid>-<n>`: unique across the
/// parallel tests of one binary and across binaries running at once.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The wall clock of the harness. Tests and the harness are IO shells, so
/// reading the clock here is fine (clippy.toml keeps it out of the core).
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Whether suites that need root, network namespaces or XDP must run rather
/// than skip: `SBC_REQUIRE_PRIVILEGED=1` (set by `scripts/test.sh` under CI)
/// or `CI=true`.
pub fn privileged_required() -> bool {
    std::env::var("SBC_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The effective uid of this process, from `/proc/self/status`.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:\treal\teffective\tsaved\tfs"
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `program` runs at all (found on PATH and executable).
fn tool_present(program: &str, probe_arg: &str) -> bool {
    Command::new(program)
        .arg(probe_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Returns `true` when the test should be skipped because this machine
/// cannot run it (`missing` says what is missing), after printing why;
/// panics instead when [`privileged_required`], so CI cannot pass by
/// skipping.
fn skip_or_fail(test_name: &str, missing: Option<String>) -> bool {
    let Some(missing) = missing else {
        return false;
    };
    assert!(
        !privileged_required(),
        "{test_name}: {missing}, and privileged suites are required here \
         (CI=true or SBC_REQUIRE_PRIVILEGED=1): run as root with iproute2, \
         util-linux and sip-tester installed (scripts/test.sh --install-only)"
    );
    eprintln!(
        "SKIPPED {test_name}: {missing} (set SBC_REQUIRE_PRIVILEGED=1 to make this a failure)"
    );
    true
}

/// Returns `true` ("skip") when `program` (run with `probe_arg`) is not
/// installed, after printing why and how to get it (`hint`, e.g.
/// `apt-get install kamailio`). Panics when privileged suites are required:
/// the test command installs the lab's peers, so under CI they must be
/// there.
pub fn skip_unless_tool(test_name: &str, program: &str, probe_arg: &str, hint: &str) -> bool {
    let missing = (!tool_present(program, probe_arg))
        .then(|| format!("`{program}` is not installed ({hint})"));
    skip_or_fail(test_name, missing)
}

/// Returns `true` ("skip") when `missing` says something this test needs
/// is absent, after printing it; panics instead when privileged suites are
/// required ([`privileged_required`]).
pub fn skip_unless(test_name: &str, missing: Option<String>) -> bool {
    skip_or_fail(test_name, missing)
}

/// Returns `true` ("skip") when this process is not root or `ip`/`unshare`
/// is missing, after printing why. Panics when privileged suites are
/// required ([`privileged_required`]): under CI a skip is a failure.
pub fn skip_unless_privileged(test_name: &str) -> bool {
    let missing = if effective_uid() != Some(0) {
        Some("not running as root (network namespaces need CAP_NET_ADMIN)".to_owned())
    } else if !tool_present("ip", "-V") {
        Some("`ip` (iproute2) is not installed".to_owned())
    } else if !tool_present("unshare", "--version") {
        Some("`unshare` (util-linux) is not installed".to_owned())
    } else {
        None
    };
    skip_or_fail(test_name, missing)
}

/// Returns `true` ("skip") when SIPp (`sipp`, Debian `sip-tester`) is not
/// installed, after printing why. Panics when privileged suites are
/// required: the test command installs SIPp, so under CI it must be there.
pub fn skip_unless_sipp(test_name: &str) -> bool {
    let missing = (!tool_present("sipp", "-v"))
        .then(|| "`sipp` is not installed (apt-get install sip-tester)".to_owned());
    skip_or_fail(test_name, missing)
}

/// Runs a setup command and panics with its output unless it succeeds.
fn run_checked(cmd: &mut Command) -> Output {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ip(args: &[&str]) -> Output {
    run_checked(Command::new("ip").args(args))
}

/// Waits for `child` until `limit` has passed; kills and reaps it if it is
/// still running then. Returns the exit status and whether the deadline
/// killed it. The child is always reaped, so no zombie is left behind.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> (ExitStatus, bool) {
    let deadline = now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if now() >= deadline => {
                // SIGKILL: a child that ignored its own timeout gets no
                // second chance to hang the test.
                let _ = child.kill();
                let status = child
                    .wait()
                    .unwrap_or_else(|e| panic!("cannot reap child {}: {e}", child.id()));
                return (status, true);
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => panic!("cannot poll child {}: {e}", child.id()),
        }
    }
}

/// A long-running child (a daemon, a peer) that is killed and reaped when
/// dropped, so a panicking test leaves no process behind.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
}

impl Background {
    /// Spawns `cmd`. Panics if it cannot start.
    pub fn spawn(cmd: &mut Command) -> Background {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Background { child: Some(child) }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child's exit status if it has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `limit` for the child to exit by itself, then kills it.
    /// Returns its exit status and whether the deadline killed it.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, bool) {
        let mut child = self
            .child
            .take()
            .expect("a Background holds its child until consumed");
        wait_with_deadline(&mut child, limit)
    }

    /// Kills the child now and reaps it.
    pub fn kill(self) -> ExitStatus {
        self.wait(Duration::ZERO).0
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `addr` is in one of the RFC 5737 documentation networks.
pub fn is_test_net(addr: Ipv4Addr) -> bool {
    matches!(
        addr.octets(),
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
    )
}

/// A network namespace made by this test, deleted (with every interface in
/// it, which also destroys the peers of its veths) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `<prefix>-<pid>-<n>` with `lo` up. Panics
    /// with `ip`'s output if it cannot (call [`skip_unless_privileged`]
    /// first).
    pub fn new(name_prefix: &str) -> Netns {
        let name = format!("{name_prefix}-{}-{}", std::process::id(), next_id());
        ip(&["netns", "add", &name]);
        // From here on Drop deletes it, even if bringing lo up fails.
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace
    /// (`ip netns exec <name> <program>`); add arguments to it. `ip` execs
    /// the program, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_exec(&self.name, program)
    }

    /// Runs `program args…` inside the namespace to completion and returns
    /// its output; panics with that output unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        run_checked(self.command(program).args(args))
    }

    /// Spawns `program args…` inside the namespace as a [`Background`]
    /// child (killed and reaped on drop).
    pub fn spawn(&self, program: &str, args: &[&str]) -> Background {
        Background::spawn(self.command(program).args(args))
    }

    /// As [`Netns::spawn`], with the program's stderr written to `log`
    /// (and nothing read from stdin or kept of stdout).
    pub fn spawn_with_stderr(
        &self,
        program: impl AsRef<OsStr>,
        args: &[&str],
        log: &std::path::Path,
    ) -> Background {
        let stderr =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        Background::spawn(
            self.command(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr),
        )
    }

    /// Turns tx checksum offload off on `ifname` in this namespace
    /// (`ethtool -K <if> tx off`): local senders on veth otherwise leave
    /// partial checksums that an XDP rewrite turns into bad ones
    /// (DESIGN.md, "XDP on veth").
    pub fn tx_checksum_off(&self, ifname: &str) {
        self.run("ethtool", &["-K", ifname, "tx", "off"]);
    }

    /// The namespace's UDP counters (`/proc/net/snmp` read inside it):
    /// namespaces have their own, so a test can count the datagrams its
    /// peers exchanged.
    pub fn udp_counters(&self) -> UdpCounters {
        let output = self.run("cat", &["/proc/net/snmp"]);
        UdpCounters::parse(&String::from_utf8_lossy(&output.stdout))
            .unwrap_or_else(|| panic!("no Udp lines in /proc/net/snmp of {}", self.name))
    }

    /// Interface names in this namespace (`ip -o link`).
    pub fn links(&self) -> Vec<String> {
        let output = ip(&["-n", &self.name, "-o", "link", "show"]);
        parse_link_names(&String::from_utf8_lossy(&output.stdout))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The kernel destroys a deleted namespace's interfaces later, in a
        // work queue; deleting them first makes a veth peer in another
        // namespace disappear before drop returns. Errors are ignored
        // because Drop may run while a test is already panicking.
        let quiet =
            |cmd: &mut Command| cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok();
        let listed = quiet(Command::new("ip").args(["-n", &self.name, "-o", "link", "show"]));
        let links = listed.map_or_else(Vec::new, |o| {
            parse_link_names(&String::from_utf8_lossy(&o.stdout))
        });
        for link in links.iter().filter(|l| *l != "lo") {
            quiet(Command::new("ip").args(["-n", &self.name, "link", "del", link]));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A command that runs `program` inside the named namespace
/// (`ip netns exec <name> <program>`).
pub fn netns_exec(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", name]).arg(program);
    cmd
}

/// Whether a namespace of this name exists (`ip netns list`).
pub fn netns_exists(name: &str) -> bool {
    let output = ip(&["netns", "list"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Whether an interface of this name exists in the root namespace.
pub fn root_link_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Interface names from `ip -o link` output ("1: lo: <LOOPBACK,...").
/// A veth shows as `name@peer`; the `@peer` part is dropped.
pub fn parse_link_names(ip_o_link: &str) -> Vec<String> {
    ip_o_link
        .lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect()
}

/// UDP counters of one network namespace (`Udp:` lines of
/// `/proc/net/snmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams delivered to a socket.
    pub in_datagrams: u64,
    /// Datagrams to a port nobody listened on.
    pub no_ports: u64,
    /// Datagrams dropped on receive (includes full receive buffers).
    pub in_errors: u64,
    /// Datagrams sent through UDP sockets (raw-socket sends not included).
    pub out_datagrams: u64,
}

impl UdpCounters {
    /// Parses the header and value `Udp:` lines of `/proc/net/snmp`.
    pub fn parse(snmp: &str) -> Option<UdpCounters> {
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let names: Vec<&str> = udp.next()?.split_whitespace().collect();
        let values: Vec<&str> = udp.next()?.split_whitespace().collect();
        let get = |field: &str| -> Option<u64> {
            let i = names.iter().position(|n| *n == field)?;
            values.get(i)?.parse().ok()
        };
        Some(UdpCounters {
            in_datagrams: get("InDatagrams")?,
            no_ports: get("NoPorts")?,
            in_errors: get("InErrors")?,
            out_datagrams: get("OutDatagrams")?,
        })
    }
}

/// Where one end of a veth pair lives.
#[derive(Debug, Clone, Copy)]
pub enum Side<'a> {
    /// The root namespace (where the test runs).
    Root,
    /// A namespace made by the test.
    Ns(&'a Netns),
}

/// One end of a veth pair: its namespace (`None` = root), interface name
/// and TEST-NET address.
#[derive(Debug, Clone)]
pub struct VethEnd {
    /// The namespace's name, or `None` for the root namespace.
    pub netns: Option<String>,
    /// The interface name.
    pub ifname: String,
    /// The address given to it.
    pub addr: Ipv4Addr,
}

/// A veth pair made by the test. Dropping it deletes the link (which
/// deletes both ends); deleting a namespace that holds one end does too.
#[derive(Debug)]
pub struct VethPair {
    /// The first end.
    pub a: VethEnd,
    /// The second end.
    pub b: VethEnd,
}

impl VethPair {
    /// Creates a veth pair between `a` and `b`, brings both ends up with
    /// `addr_a`/`addr_b` and `prefix_len`, and turns tx checksum offload off
    /// on both (see [`Netns::tx_checksum_off`]). Panics if an address is
    /// not TEST-NET or if `ip` fails.
    pub fn new(
        a: Side<'_>,
        addr_a: Ipv4Addr,
        b: Side<'_>,
        addr_b: Ipv4Addr,
        prefix_len: u8,
    ) -> VethPair {
        for addr in [addr_a, addr_b] {
            assert!(
                is_test_net(addr),
                "{addr} is not a TEST-NET address (192.0.2.0/24, 198.51.100.0/24, \
                 203.0.113.0/24): test links never carry real networks' addresses"
            );
        }
        // Interface names are at most 15 bytes and must be unique in the
        // root namespace when an end lives there: "s<pid>v<id>" + a/b.
        let id = format!("s{:x}v{:x}", std::process::id(), next_id());
        let end = |side: Side<'_>, suffix: &str, addr| VethEnd {
            netns: match side {
                Side::Root => None,
                Side::Ns(ns) => Some(ns.name.clone()),
            },
            ifname: format!("{id}{suffix}"),
            addr,
        };
        let (a, b) = (end(a, "a", addr_a), end(b, "b", addr_b));
        // Create each end directly in its namespace: nothing appears in
        // the root namespace unless asked for.
        let mut args = vec!["link", "add", "name", &a.ifname];
        if let Some(ns) = &a.netns {
            args.extend(["netns", ns]);
        }
        args.extend(["type", "veth", "peer", "name", &b.ifname]);
        if let Some(ns) = &b.netns {
            args.extend(["netns", ns]);
        }
        ip(&args);
        // Only now does Drop own the link: had `ip link add` failed on a
        // name that exists, dropping would delete someone else's link.
        let pair = VethPair { a, b };
        for end in [&pair.a, &pair.b] {
            let cidr = format!("{}/{prefix_len}", end.addr);
            let ns_args: Vec<&str> = end.netns.as_deref().map_or(Vec::new(), |ns| vec!["-n", ns]);
            ip(&[
                ns_args.as_slice(),
                &["addr", "add", &cidr, "dev", &end.ifname],
            ]
            .concat());
            ip(&[ns_args.as_slice(), &["link", "set", &end.ifname, "up"]].concat());
            let mut ethtool = match &end.netns {
                Some(ns) => netns_exec(ns, "ethtool"),
                None => Command::new("ethtool"),
            };
            run_checked(ethtool.args(["-K", &end.ifname, "tx", "off"]));
        }
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.a.netns {
            cmd.args(["-n", ns]);
        }
        // Fails harmlessly when the namespace holding the end is gone.
        let _ = cmd
            .args(["link", "del", &self.a.ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A command that runs `program` in a fresh private network namespace with
/// only loopback up: it can reach 127.0.0.1 (and its own listeners there)
/// and nothing else, so even a bug that answers a Via or follows a Contact
/// naming a foreign host sends no packet off the machine. The namespace
/// dies with the process. Add arguments to the returned command.
///
/// As root this is `unshare -n`; otherwise `unshare -r -n` (a user
/// namespace maps the caller to root so `lo` can be brought up).
pub fn isolated_loopback(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    if effective_uid() != Some(0) {
        cmd.arg("-r");
    }
    // `exec "$@"` keeps the pid: killing the child kills the program.
    cmd.args([
        "-n",
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$@\"",
        "sh",
    ])
    .arg(program);
    cmd
}

/// A command that runs `program` in the network namespace of process `pid`
/// (`nsenter -t <pid> -n`): how a second peer joins a daemon started with
/// [`isolated_loopback`], so both share that private loopback. Without root
/// it also enters the process's user namespace (which [`isolated_loopback`]
/// made), keeping the caller's credentials.
pub fn enter_netns_of(pid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n"]);
    if effective_uid() != Some(0) {
        cmd.args(["-U", "--preserve-credentials"]);
    }
    cmd.arg("--").arg(program);
    cmd
}

/// Runs `body` on a thread that has entered the named network namespace
/// (`setns(2)`); sockets and threads made there stay in it. For tests and
/// benches that drive sockets in a namespace from Rust, not a child process.
pub fn in_netns<T: Send + 'static>(ns: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file);
        body()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `body` on a thread that has entered the network namespace of
/// process `pid` (`/proc/<pid>/ns/net`), as [`in_netns`] does for a named
/// one. A socket made there stays in that namespace after the thread ends,
/// so a test can bind sockets in a lab's private namespace and use them
/// from its own thread.
pub fn in_netns_of<T: Send + 'static>(pid: u32, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/proc/{pid}/ns/net");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file);
        body()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[allow(unsafe_code)] // setns(2) of the calling thread only
fn setns(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace fd, borrowed for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_net_ranges() {
        assert!(is_test_net(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(is_test_net(Ipv4Addr::new(198, 51, 100, 254)));
        assert!(is_test_net(Ipv4Addr::new(203, 0, 113, 7)));
        assert!(!is_test_net(Ipv4Addr::new(192, 0, 3, 1)));
        assert!(!is_test_net(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!is_test_net(Ipv4Addr::new(127, 0, 0, 1)));
    }

    #[test]
    fn link_names_drop_the_veth_peer() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback 00:00:00:00:00:00\n\
                   7: sv1a@if6: <BROADCAST,MULTICAST,UP> mtu 1500\\    link/ether 02:00:00:00:00:01\n";
        assert_eq!(parse_link_names(out), ["lo", "sv1a"]);
    }

    #[test]
    fn udp_counters_parse_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 2 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 252 3 80 251 80\n\
                    UdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        assert_eq!(
            UdpCounters::parse(snmp),
            Some(UdpCounters {
                in_datagrams: 252,
                no_ports: 3,
                in_errors: 80,
                out_datagrams: 251
            })
        );
        assert_eq!(UdpCounters::parse("Ip: 1\nIp: 2\n"), None);
    }
}
