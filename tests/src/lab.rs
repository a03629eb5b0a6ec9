//! A per-test SBC lab for the signaling tests: the real `sbc` daemon between
//! SIPp peers, all on loopback.
//!
//! Owns: the address plan of one test ([`Plan`]: the realms' listeners, the
//! trunks' addresses, the admin listener and the media port range, unique per
//! test so tests run in parallel), the daemon's TOML configuration written to
//! the test's own directory ([`Plan::toml`]), the network the lab runs in
//! ([`Net`]: a private namespace with only loopback when the machine allows
//! one, plain loopback otherwise), starting the daemon and waiting for its
//! `/health/ready` ([`Lab::start`]), reloading it ([`Lab::rewrite_config`],
//! [`Lab::sighup`]), stopping it (SIGTERM, then SIGKILL after
//! a bounded wait) and the topology scan across the border
//! ([`Lab::assert_topology_hidden`], [`dialog_identifiers`]).
//!
//! May not: send anywhere but loopback (every address it hands out is in
//! 127.0.0.0/8, and in a private namespace nothing else is even routable),
//! leave a process behind (the daemon and the namespace anchor are killed
//! and reaped on drop, also when the test panics), or wait unbounded.
//!
//! The plan, per test slot `n` (20..=250; the harness's own tests use
//! 127.0.10-14.x):
//!
//! | what | address |
//! | --- | --- |
//! | realm `outside` (udp+tcp) | 127.0.n.1:5060, media anchored on 127.0.n.1 |
//! | realm `inside` (udp+tcp) | 127.0.n.2:5060, media anchored on 127.0.n.2 |
//! | trunk `pbx` (inside) | 127.0.n.3:5060 |
//! | trunk `carrier` (outside) | 127.0.n.4:5060 |
//! | trunk `pbx2` (inside) | 127.0.n.5:5060 |
//! | admin (`/health/ready`, `/metrics`) | 127.0.n.1:9660 |
//!
//! A call from the carrier arrives on `outside` and goes to `pbx` (then
//! `pbx2` when the route fails over); a call from the PBX arrives on
//! `inside` and goes to `carrier`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use crate::netns::{
    Background, enter_netns_of, in_netns_of, isolated_loopback, now, wait_with_deadline,
};
use crate::sipp::{Sipp, SippHandle, SippResult, find_leak};

/// How long the daemon may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// The SIP port of every listener and peer (each has its own address).
pub const SIP_PORT: u16 = 5060;

/// The RTP port each SIPp peer offers (on its own address).
pub const PEER_MEDIA_PORT: u16 = 16000;

/// The lowest and highest test slot: the third octet of 127.0.n.x.
const SLOT_MIN: u32 = 20;
const SLOT_MAX: u32 = 250;

/// Lines of the daemon's stderr shown when a test fails.
const TAIL_LINES: usize = 60;

/// Identifiers shorter than this are not scanned for: too likely to occur
/// by chance in an unrelated message.
const MIN_IDENTIFIER_LEN: usize = 6;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// SIPp arguments a shipped scenario cannot run without.
const SCENARIO_ARGS: &[(&str, &[&str])] = &[
    // SIPp would discard the retransmitted 200 as a copy of the first one.
    ("caller-drop-200.xml", &["-nr"]),
    // Retransmitted INVITEs must not count as unexpected while it waits.
    ("callee-silent.xml", &["-pause_msg_ign"]),
];

/// A SIPp peer's host in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Trunk `carrier`, in realm `outside`.
    Carrier,
    /// Trunk `pbx`, in realm `inside`.
    Pbx,
    /// Trunk `pbx2`, in realm `inside` (the failover target).
    Pbx2,
}

/// One of the two realms of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// The carrier side.
    Outside,
    /// The PBX side.
    Inside,
}

/// Where one test's lab lives: slot `n` gives every address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The third octet of every address (127.0.n.x).
    pub slot: u8,
}

impl Plan {
    /// The plan of slot `n`. Panics outside 20..=250.
    pub fn for_slot(n: u8) -> Plan {
        assert!(
            (SLOT_MIN..=SLOT_MAX).contains(&u32::from(n)),
            "lab slot {n} outside {SLOT_MIN}..={SLOT_MAX}"
        );
        Plan { slot: n }
    }

    /// A fresh plan for the next lab of this process: the slot comes from a
    /// per-process counter offset by the process id, so parallel tests of
    /// one binary never share one, and two binaries rarely do (a clash
    /// matters only outside a private namespace, see [`Net`]).
    pub fn next() -> Plan {
        let count = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let span = SLOT_MAX - SLOT_MIN + 1;
        let n = SLOT_MIN + (std::process::id().wrapping_mul(7).wrapping_add(count)) % span;
        Plan::for_slot(u8::try_from(n).unwrap_or(u8::MAX))
    }

    fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, self.slot, host))
    }

    /// A realm's SIP listener (UDP and TCP share it).
    pub fn realm(&self, realm: Realm) -> SocketAddr {
        SocketAddr::new(self.realm_ip(realm), SIP_PORT)
    }

    /// A realm's address: its listeners and its media anchor.
    pub fn realm_ip(&self, realm: Realm) -> IpAddr {
        match realm {
            Realm::Outside => self.ip(1),
            Realm::Inside => self.ip(2),
        }
    }

    /// A peer's SIP address.
    pub fn host(&self, host: Host) -> SocketAddr {
        SocketAddr::new(self.host_ip(host), SIP_PORT)
    }

    /// A peer's address (signaling and media).
    pub fn host_ip(&self, host: Host) -> IpAddr {
        match host {
            Host::Pbx => self.ip(3),
            Host::Carrier => self.ip(4),
            Host::Pbx2 => self.ip(5),
        }
    }

    /// The realm a peer lives in.
    pub fn realm_of(host: Host) -> Realm {
        match host {
            Host::Carrier => Realm::Outside,
            Host::Pbx | Host::Pbx2 => Realm::Inside,
        }
    }

    /// A spare address of the slot for a test's own hosts (a caller behind
    /// a proxy, a softphone): 127.0.n.(10 + i), for `i` below 90. Nothing
    /// of the plan uses these.
    pub fn spare_ip(&self, i: u8) -> IpAddr {
        assert!(i < 90, "spare address {i} outside 0..90");
        self.ip(10 + i)
    }

    /// The admin listener (`/health/ready`, `/metrics`).
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::new(self.ip(1), 9660)
    }

    /// The daemon's media port range, distinct per slot (100 RTP/RTCP pairs,
    /// plenty for the 20 calls the lab admits): 200 ports from
    /// 10000 + 200 * (n - 20).
    pub fn media_ports(&self) -> (u16, u16) {
        let min = 10_000 + 200 * (u16::from(self.slot) - 20);
        (min, min + 199)
    }

    /// Every address of one side of the border: the realm's own and its
    /// peers'.
    pub fn side_ips(&self, realm: Realm) -> Vec<IpAddr> {
        let hosts: &[Host] = match realm {
            Realm::Outside => &[Host::Carrier],
            Realm::Inside => &[Host::Pbx, Host::Pbx2],
        };
        std::iter::once(self.realm_ip(realm))
            .chain(hosts.iter().map(|h| self.host_ip(*h)))
            .collect()
    }

    /// The daemon's configuration for this plan.
    pub fn toml(&self, config: &LabConfig) -> String {
        let (port_min, port_max) = self.media_ports();
        let quoted = |items: &[&str]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut t = String::new();
        let _ = write!(
            t,
            "# Generated by tests::lab for slot {slot}.\n\n\
             [metrics]\nlisten = \"{admin}\"\n\n\
             [logging]\nlevel = \"debug\"\n\n\
             [limits]\nmax_calls = 20\n\n\
             [media]\nport_min = {port_min}\nport_max = {port_max}\n\
             xdp = {{ mode = \"off\", interfaces = [] }}\n",
            slot = self.slot,
            admin = self.admin(),
        );
        if let Some(secs) = config.media_inactivity_timeout_secs {
            let _ = writeln!(t, "inactivity_timeout_secs = {secs}");
        }
        if let Some(path) = &config.cdr_path {
            // Every record on disk at once: the test reads it right after
            // the call.
            let _ = write!(t, "\n[cdr]\npath = {path:?}\nfsync = \"every\"\n");
        }
        for (name, realm) in [("outside", Realm::Outside), ("inside", Realm::Inside)] {
            let addr = self.realm(realm);
            let _ = write!(
                t,
                "\n[[realm]]\nname = \"{name}\"\nlisten = [\n  \
                 {{ transport = \"udp\", address = \"{addr}\" }},\n  \
                 {{ transport = \"tcp\", address = \"{addr}\" }},\n]\n\
                 media = {{ address = \"{ip}\" }}\n",
                ip = addr.ip(),
            );
        }
        for (name, host) in [
            ("pbx", Host::Pbx),
            ("pbx2", Host::Pbx2),
            ("carrier", Host::Carrier),
        ] {
            let realm = match Plan::realm_of(host) {
                Realm::Outside => "outside",
                Realm::Inside => "inside",
            };
            // No OPTIONS pings: a SIPp peer would take one for a call.
            let _ = write!(
                t,
                "\n[[trunk]]\nname = \"{name}\"\nrealm = \"{realm}\"\n\
                 address = \"{addr}\"\ntransport = \"udp\"\noptions_interval_secs = 0\n",
                addr = self.host(host),
            );
        }
        let _ = write!(
            t,
            "\n[[route]]\nname = \"outside-to-pbx\"\nmatch = {{ source_realm = \"outside\" }}\n\
             targets = [{targets}]\nfailover_on = [{failover}]\n\
             \n[[route]]\nname = \"inside-to-carrier\"\nmatch = {{ source_realm = \"inside\" }}\n\
             targets = [\"carrier\"]\n",
            targets = quoted(&config.outside_targets),
            failover = quoted(&config.failover_on),
        );
        t
    }
}

/// What differs between labs: where calls from `outside` go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Trunks a call from `outside` tries, in order (`pbx`, `pbx2`).
    pub outside_targets: Vec<&'static str>,
    /// Failures that move such a call to the next target (`"408"`,
    /// `"5xx"`, `"transport-error"`, `"timeout"`).
    pub failover_on: Vec<&'static str>,
    /// `[media] inactivity_timeout_secs`; the daemon's default when `None`.
    pub media_inactivity_timeout_secs: Option<u32>,
    /// `[cdr] path` (absolute); no CDRs when `None`.
    pub cdr_path: Option<PathBuf>,
}

impl Default for LabConfig {
    /// Calls from `outside` go to `pbx` only; the failover causes are the
    /// schema's defaults (with one target they never apply).
    fn default() -> Self {
        LabConfig {
            outside_targets: vec!["pbx"],
            failover_on: vec!["408", "5xx", "transport-error", "timeout"],
            media_inactivity_timeout_secs: None,
            cdr_path: None,
        }
    }
}

impl LabConfig {
    /// `pbx` first, `pbx2` when `pbx` fails for one of these causes.
    pub fn failover(causes: &[&'static str]) -> LabConfig {
        LabConfig {
            outside_targets: vec!["pbx", "pbx2"],
            failover_on: causes.to_vec(),
            ..LabConfig::default()
        }
    }
}

/// Whether [`isolated_loopback`] works here (root, or unprivileged user
/// namespaces allowed).
fn isolation_works() -> bool {
    isolated_loopback("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The network a lab runs in: a private namespace with only loopback,
/// held open by an anchor process that every member joins, or (where this
/// machine cannot make one) the host's own loopback, where the plan's
/// unique addresses keep tests apart.
#[derive(Debug)]
pub struct Net {
    anchor: Option<Background>,
}

impl Net {
    /// A private loopback-only namespace when possible, else plain
    /// loopback.
    pub fn new() -> Net {
        if !isolation_works() {
            eprintln!("lab: no private network namespace here; using the host's loopback");
            return Net { anchor: None };
        }
        // The anchor only holds the namespace; a lab never lives this long.
        // Until the wrapper has unshared and brought lo up it still runs as
        // `unshare`/`sh`; joining it earlier would join the host's
        // namespace.
        Net::anchored(&mut isolated_loopback("sleep"), "the namespace anchor")
    }

    /// A [`Net`] held by `sleep 600` started from `command` (which enters
    /// the namespace, then execs `sleep`), once it runs as `sleep`: until
    /// then its pid may still be in the caller's namespace.
    fn anchored(command: &mut Command, what: &str) -> Net {
        let anchor = Background::spawn(
            command
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let pid = anchor.id();
        let deadline = now() + Duration::from_secs(5);
        loop {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break;
            }
            assert!(
                now() < deadline,
                "{what} (pid {pid}) did not start within 5 s"
            );
            thread::sleep(Duration::from_millis(5));
        }
        Net {
            anchor: Some(anchor),
        }
    }

    /// The named namespace `netns` (made by the test, e.g. one end of a
    /// veth lab) as a [`Net`], so what starts in a [`Net`] (Kamailio, SIPp
    /// peers) can run there: an anchor process sits in it until drop. The
    /// namespace itself stays `netns`'s to delete.
    pub fn inside(netns: &crate::netns::Netns) -> Net {
        // `ip netns exec` enters the namespace, then execs `sleep`.
        Net::anchored(
            &mut netns.command("sleep"),
            &format!("the anchor in {}", netns.name()),
        )
    }

    /// The process holding the private namespace open (join it with
    /// [`in_netns_of`]); `None` on the host's loopback.
    pub fn pid(&self) -> Option<u32> {
        self.anchor.as_ref().map(Background::id)
    }

    /// Whether this is a private namespace.
    pub fn is_isolated(&self) -> bool {
        self.anchor.is_some()
    }

    /// A command that runs `program` in this network.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match &self.anchor {
            Some(anchor) => enter_netns_of(anchor.id(), program),
            None => Command::new(program),
        }
    }

    /// A UDP socket bound to `addr` in this network, for a test that plays
    /// a peer (or an attacker) itself. Any 127.0.0.0/8 address binds: all
    /// of it is local on loopback.
    pub fn udp_socket(&self, addr: SocketAddr) -> std::net::UdpSocket {
        let bind = move || {
            std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind UDP {addr}: {e}"))
        };
        match &self.anchor {
            Some(anchor) => in_netns_of(anchor.id(), bind),
            None => bind(),
        }
    }

    /// A TCP listener bound to `addr` in this network (a TLS test peer).
    pub fn tcp_listener(&self, addr: SocketAddr) -> std::net::TcpListener {
        let bind = move || {
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind TCP {addr}: {e}"))
        };
        match &self.anchor {
            Some(anchor) => in_netns_of(anchor.id(), bind),
            None => bind(),
        }
    }

    /// A TCP connection from `from` (any port) to `to` in this network, or
    /// the error of the connect.
    pub fn tcp_connect(
        &self,
        from: IpAddr,
        to: SocketAddr,
    ) -> std::io::Result<std::net::TcpStream> {
        let connect = move || {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(to),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.bind(&SocketAddr::new(from, 0).into())?;
            socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
            Ok(socket.into())
        };
        match &self.anchor {
            Some(anchor) => in_netns_of(anchor.id(), connect),
            None => connect(),
        }
    }

    /// The peer, placed in this network.
    pub fn place(&self, sipp: Sipp) -> Sipp {
        match &self.anchor {
            Some(anchor) => sipp.in_netns_of(anchor.id()),
            None => sipp,
        }
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

/// The running daemon: killed and reaped on drop.
#[derive(Debug)]
struct Daemon {
    child: Child,
    stderr_path: PathBuf,
}

impl Daemon {
    fn stderr(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. Returns the exit status
    /// and whether it had to be killed.
    fn stop(&mut self) -> (ExitStatus, bool) {
        if let Ok(Some(status)) = self.child.try_wait() {
            return (status, false);
        }
        // Not reaped yet, so the pid is still this child's.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        wait_with_deadline(&mut self.child, STOP_TIMEOUT)
    }
}

/// One test's lab: its plan, its network, its directory and (unless
/// [`Lab::peers_only`]) the running daemon.
#[derive(Debug)]
pub struct Lab {
    plan: Plan,
    dir: PathBuf,
    config_path: PathBuf,
    daemon: Option<Daemon>,
    /// The daemon after [`Lab::wait_exit`], for its stderr.
    exited: Option<Daemon>,
    // Dropped after the daemon (field order): the namespace outlives it.
    net: Net,
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn lab_dir(name: &str, plan: Plan) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sbc-lab-{name}-{}-{}",
        std::process::id(),
        plan.slot
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create lab directory {}: {e}", dir.display()));
    dir
}

impl Lab {
    /// Writes the configuration for a fresh plan, starts `sbc --config` in
    /// the lab's network and waits (at most 10 s) until `/health/ready`
    /// answers 200. Panics with the daemon's stderr if it exits or is not
    /// ready in time.
    pub fn start(name: &str, config: &LabConfig) -> Lab {
        let plan = Plan::next();
        Lab::start_toml(name, plan, &plan.toml(config))
    }

    /// [`start`](Self::start) with a configuration of the caller's own
    /// (e.g. a broken one) for `plan`.
    pub fn start_toml(name: &str, plan: Plan, toml: &str) -> Lab {
        let mut lab = Lab::peers_only_with(name, plan);
        lab.start_daemon(toml);
        lab
    }

    /// Starts the daemon in a lab made with [`Lab::peers_only`] (after the
    /// test has started what the daemon needs first, e.g. a DNS server in
    /// the lab's network), with `toml`, and waits until it is ready.
    pub fn start_daemon(&mut self, toml: &str) {
        assert!(self.daemon.is_none(), "the lab's daemon is already running");
        let lab = self;
        fs::write(&lab.config_path, toml).unwrap_or_else(|e| {
            panic!("cannot write {}: {e}", lab.config_path.display());
        });
        let stderr_path = lab.dir.join("sbc.stderr");
        let open = |path: &Path| {
            File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
        };
        let mut cmd = lab.net.command(crate::sbc_binary());
        cmd.arg("--config")
            .arg(&lab.config_path)
            .stdin(Stdio::null())
            .stdout(open(&lab.dir.join("sbc.stdout")))
            .stderr(open(&stderr_path));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        lab.daemon = Some(Daemon { child, stderr_path });
        lab.wait_ready();
    }

    /// A lab with no daemon: the plan and the network only, for running
    /// peers against each other (the scenario self-check).
    pub fn peers_only(name: &str) -> Lab {
        Lab::peers_only_with(name, Plan::next())
    }

    pub fn peers_only_with(name: &str, plan: Plan) -> Lab {
        let dir = lab_dir(name, plan);
        Lab {
            plan,
            config_path: dir.join("sbc.toml"),
            dir,
            daemon: None,
            exited: None,
            net: Net::new(),
        }
    }

    /// The address plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The lab's network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The lab's own directory (removed with the lab): where a test puts
    /// its peers' configurations.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file the daemon runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the configuration file the daemon runs with (it rereads
    /// it on [`sighup`](Self::sighup)). Written beside it and renamed over
    /// it, so the daemon never reads half a file.
    pub fn rewrite_config(&self, toml: &str) {
        let next = self.config_path.with_extension("toml.next");
        fs::write(&next, toml)
            .and_then(|()| fs::rename(&next, &self.config_path))
            .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", self.config_path.display()));
    }

    /// Sends signal `name` (as `kill -<name>` spells it: `QUIT`, `USR2`) to
    /// the daemon. Panics when there is no running daemon to send it to.
    pub fn signal(&mut self, name: &str) {
        let daemon = self
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("SIG{name}: this lab has no daemon"));
        assert!(
            matches!(daemon.child.try_wait(), Ok(None)),
            "SIG{name}: the daemon has exited\n--- sbc stderr ---\n{}",
            tail(&daemon.stderr(), TAIL_LINES)
        );
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &daemon.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{name} {} failed", daemon.child.id());
    }

    /// Waits up to `limit` for the daemon to exit by itself (killing it
    /// after): its exit status and whether it had to be killed. The lab
    /// has no daemon afterwards (its stderr stays readable through
    /// [`daemon_stderr`](Self::daemon_stderr) until the lab is dropped).
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, bool) {
        let daemon = self
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("wait_exit: this lab has no daemon"));
        let outcome = wait_with_deadline(&mut daemon.child, limit);
        self.exited = self.daemon.take();
        outcome
    }

    /// Sends SIGHUP to the daemon (reload). Panics when there is no
    /// running daemon to send it to.
    pub fn sighup(&mut self) {
        let daemon = self
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("SIGHUP: this lab has no daemon"));
        // Not reaped, so the pid is still the daemon's (the namespace
        // wrapper execs it).
        assert!(
            matches!(daemon.child.try_wait(), Ok(None)),
            "SIGHUP: the daemon has exited\n--- sbc stderr ---\n{}",
            tail(&daemon.stderr(), TAIL_LINES)
        );
        let sent = Command::new("kill")
            .args(["-HUP", &daemon.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -HUP {} failed", daemon.child.id());
    }

    /// A SIPp peer on `host` playing the shipped scenario
    /// `tests/scenarios/<scenario>`, placed in the lab's network, bound to
    /// the host's SIP and media addresses, with a 20 s bound and any
    /// argument the scenario needs. Add `.remote(...)` for a caller.
    pub fn peer(&self, scenario: &str, host: Host) -> Sipp {
        let ip = self.plan.host_ip(host);
        let mut sipp = Sipp::shipped(scenario)
            .local(ip, SIP_PORT)
            .media(ip, PEER_MEDIA_PORT)
            .timeout(Duration::from_secs(20));
        for (_, args) in SCENARIO_ARGS.iter().filter(|(s, _)| *s == scenario) {
            for arg in *args {
                sipp = sipp.arg(arg);
            }
        }
        self.net.place(sipp)
    }

    /// Starts a callee and gives it a moment to bind before calls arrive.
    pub fn start_callee(&self, sipp: &Sipp) -> SippHandle {
        let handle = sipp.start();
        thread::sleep(Duration::from_millis(300));
        handle
    }

    /// The callee's result once the caller is done: waited for when the
    /// caller succeeded (it has its last messages to exchange), killed at
    /// once otherwise, so a failing test does not sit out the callee's
    /// timeout. The log it kept is the same either way.
    pub fn finish_callee(&self, caller: &SippResult, callee: SippHandle) -> SippResult {
        let caller_ok =
            caller.status.success() && !caller.killed_at_deadline && caller.failed() == 0;
        if caller_ok {
            callee.wait()
        } else {
            callee.kill()
        }
    }

    /// The running daemon's process id.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon
            .as_ref()
            .expect("the lab's daemon runs")
            .child
            .id()
    }

    /// The daemon's stderr so far (empty without a daemon).
    pub fn daemon_stderr(&self) -> String {
        self.daemon
            .as_ref()
            .or(self.exited.as_ref())
            .map(Daemon::stderr)
            .unwrap_or_default()
    }

    /// One GET to the admin listener: `(status, body)`, or `None` when
    /// nothing answered. Runs in the lab's network (bash's `/dev/tcp`, so
    /// nothing beyond bash is needed inside a namespace), bounded to 2 s.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        self.http_get(self.plan.admin(), path)
    }

    /// One series of the daemon's `/metrics` ([`series_sum`]); fails the
    /// test when the admin listener does not answer 200.
    pub fn metric(&self, series: &str) -> u64 {
        let (status, body) = self
            .admin_get("/metrics")
            .unwrap_or_else(|| panic!("no answer from /metrics on {}", self.plan.admin()));
        assert_eq!(status, 200, "GET /metrics: {body}");
        series_sum(&body, series)
    }

    /// One GET to an admin listener at `admin` in the lab's network (a
    /// second daemon's), as [`admin_get`](Self::admin_get) does.
    pub fn http_get(&self, admin: SocketAddr, path: &str) -> Option<(u16, String)> {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{port} || exit 1; \
             printf 'GET {path} HTTP/1.0\\r\\nHost: sbc\\r\\n\\r\\n' >&3; cat <&3",
            ip = admin.ip(),
            port = admin.port(),
        );
        let out_path = self.dir.join(format!("admin-{}.out", admin.port()));
        let out = File::create(&out_path).ok()?;
        let mut child = self
            .net
            .command("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let (status, killed) = wait_with_deadline(&mut child, Duration::from_secs(2));
        if killed || !status.success() {
            return None;
        }
        let response = fs::read_to_string(&out_path).ok()?;
        parse_http_response(&response)
    }

    fn wait_ready(&mut self) {
        let deadline = now() + READY_TIMEOUT;
        loop {
            let exited = self
                .daemon
                .as_mut()
                .and_then(|d| d.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "sbc exited before it was ready ({status}); config {}\n--- sbc stderr ---\n{}",
                    self.config_path.display(),
                    tail(&self.daemon_stderr(), TAIL_LINES)
                );
            }
            if self
                .admin_get("/health/ready")
                .is_some_and(|(s, _)| s == 200)
            {
                return;
            }
            if now() >= deadline {
                panic!(
                    "sbc not ready within {READY_TIMEOUT:?} (GET http://{}/health/ready); \
                     config {}\n--- sbc stderr ---\n{}",
                    self.plan.admin(),
                    self.config_path.display(),
                    tail(&self.daemon_stderr(), TAIL_LINES)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Panics (with the daemon's stderr) unless the daemon is still
    /// running and has logged no panic: a test calls it after its calls.
    pub fn assert_daemon_healthy(&mut self) {
        let Some(daemon) = self.daemon.as_mut() else {
            return;
        };
        let exited = daemon.child.try_wait().ok().flatten();
        let stderr = daemon.stderr();
        assert!(
            exited.is_none() && !stderr.contains("panicked at"),
            "sbc died or panicked during the test (exit: {exited:?})\n--- sbc stderr ---\n{}",
            tail(&stderr, TAIL_LINES)
        );
    }

    /// Ends the test: the daemon must still be healthy, must exit by
    /// itself within 5 s of SIGTERM with status 0, and must not have
    /// panicked. Removes the lab directory.
    pub fn shutdown(mut self) {
        self.assert_daemon_healthy();
        if let Some(daemon) = self.daemon.as_mut() {
            let (status, killed) = daemon.stop();
            let stderr = daemon.stderr();
            assert!(
                !killed && status.success() && !stderr.contains("panicked at"),
                "sbc did not shut down cleanly on SIGTERM ({status}{})\n--- sbc stderr ---\n{}",
                if killed { ", killed after 5 s" } else { "" },
                tail(&stderr, TAIL_LINES)
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The topology scan: no message a peer on one side saw may name an
    /// address of the other side (its realm's address or a peer's), an
    /// identifier (Call-ID, tag, branch) that appears in any log of the
    /// other side, or a fingerprint the other side sent ([`fingerprints`]:
    /// SDP origin user and session id, session name, `a=tool`, `a=ssrc`
    /// CNAMEs, User-Agent and Server, a reason phrase of its own), unless
    /// the seeing side said the same itself (two SIPp scenarios often share
    /// `o=user1 53655765`; a caller's own From says `sipp`). `outside` and
    /// `inside` are the finished peers of each side. Panics naming the
    /// token, the peer and the message.
    pub fn assert_topology_hidden(&self, outside: &[&SippResult], inside: &[&SippResult]) {
        if let Some(leak) = self.topology_leak(outside, inside) {
            panic!("{leak}");
        }
    }

    /// [`assert_topology_hidden`](Self::assert_topology_hidden) as a value:
    /// the first leak found, described, or `None`.
    pub fn topology_leak(&self, outside: &[&SippResult], inside: &[&SippResult]) -> Option<String> {
        self.topology_leak_with(outside, inside, &[], &[])
    }

    /// [`topology_leak`](Self::topology_leak) for a lab with hosts of its
    /// own beyond the plan's: `more_outside` and `more_inside` are further
    /// tokens of each side that the other must never see (a proxy's or a
    /// phone's address, a product string).
    pub fn topology_leak_with(
        &self,
        outside: &[&SippResult],
        inside: &[&SippResult],
        more_outside: &[String],
        more_inside: &[String],
    ) -> Option<String> {
        let side = |realm: Realm, logs: &[&SippResult]| {
            let mut tokens: Vec<String> = self
                .plan
                .side_ips(realm)
                .iter()
                .map(IpAddr::to_string)
                .collect();
            tokens.extend(
                match realm {
                    Realm::Outside => more_outside,
                    Realm::Inside => more_inside,
                }
                .iter()
                .cloned(),
            );
            let mut sent = Vec::new();
            for log in logs {
                tokens.extend(dialog_identifiers(&log.messages));
                sent.extend(fingerprints(&log.messages));
            }
            (tokens, sent)
        };
        let (ids_outside, sent_outside) = side(Realm::Outside, outside);
        let (ids_inside, sent_inside) = side(Realm::Inside, inside);
        for (name, logs, ids, theirs) in [
            ("inside", inside, &ids_outside, &sent_outside),
            ("outside", outside, &ids_inside, &sent_inside),
        ] {
            // A fingerprint of the far side is no leak where this side said
            // the same itself.
            let said: Vec<&str> = logs
                .iter()
                .flat_map(|l| sent_messages(&l.messages))
                .collect();
            let mut tokens: Vec<&str> = ids.iter().map(String::as_str).collect();
            tokens.extend(
                theirs
                    .iter()
                    .filter(|t| said.iter().all(|m| find_leak(m, &[t.as_str()]).is_none()))
                    .map(String::as_str),
            );
            for log in logs {
                if let Some(leak) = find_leak(&log.messages, &tokens) {
                    return Some(format!(
                        "topology leak: the {name} peer ({}) saw `{}` from the other side, \
                         at byte {} of its message log, in:\n{}",
                        peer_name(&log.command_line),
                        leak.token,
                        leak.offset,
                        leak.message
                    ));
                }
            }
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        if let Some(daemon) = self.daemon.as_mut() {
            daemon.stop();
            if panicking {
                eprintln!(
                    "--- sbc stderr (lab {}, config {}) ---\n{}",
                    self.dir.display(),
                    self.config_path.display(),
                    tail(&daemon.stderr(), TAIL_LINES)
                );
            }
        }
        if !panicking {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `scenario.xml on IP` from a SIPp command line (as [`Sipp`] writes it),
/// for failure messages.
fn peer_name(command_line: &str) -> String {
    let arg = |flag: &str| {
        command_line
            .split(&format!("\"{flag}\" \""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?")
            .to_owned()
    };
    let scenario = arg("-sf");
    let file = scenario.rsplit('/').next().unwrap_or("?");
    format!("{file} on {}", arg("-i"))
}

/// The messages of a SIPp message log in order, each as its method
/// (requests) or its status code (responses), retransmissions included:
/// `["INVITE", "100", "180", "200", "ACK", ...]`.
pub fn flow(result: &SippResult) -> Vec<String> {
    flow_of(&result.messages)
}

fn flow_of(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            if let Some(status) = l.strip_prefix("SIP/2.0 ") {
                return status.split_whitespace().next().map(str::to_owned);
            }
            let (method, rest) = l.split_once(' ')?;
            (rest.starts_with("sip:") && l.ends_with(" SIP/2.0")).then(|| method.to_owned())
        })
        .collect()
}

/// `(status, body)` of an HTTP/1.x response.
pub fn parse_http_response(response: &str) -> Option<(u16, String)> {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The dialog and transaction identifiers in a SIPp message log: every
/// Call-ID (`Call-ID:` or compact `i:`), every `tag=` and every `branch=`
/// value, each once, in order of appearance; values shorter than 6
/// characters are left out (too likely to occur by chance).
pub fn dialog_identifiers(log: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if id.len() >= MIN_IDENTIFIER_LEN && !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    };
    for line in log.lines() {
        let line = line.trim();
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
                add(value.trim());
            }
        }
        let lower = line.to_ascii_lowercase();
        for param in ["tag=", "branch="] {
            let mut from = 0;
            while let Some(pos) = lower[from..].find(param) {
                let start = from + pos + param.len();
                let end = line[start..]
                    .find(|c: char| matches!(c, ';' | '>' | ',' | '?') || c.is_whitespace())
                    .map_or(line.len(), |e| start + e);
                add(&line[start..end]);
                from = end.max(start);
            }
        }
    }
    ids
}

/// The messages of a SIPp message log that the peer itself sent (not
/// those it received), each from its first line to the next separator.
pub fn sent_messages(log: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(pos) = rest.find("message sent") {
        let after = &rest[pos..];
        // Skip the "... sent (N bytes):" line itself.
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        let end = body.find("\n-----").unwrap_or(body.len());
        let message = body[..end].trim_matches('\n');
        if !message.is_empty() {
            out.push(message);
        }
        rest = &body[end..];
    }
    out
}

/// The RFC 3261 reason phrase of a status code (the common ones), so a
/// phrase of a peer's own making can be told from the standard one.
fn standard_phrase(code: &str) -> Option<&'static str> {
    Some(match code {
        "100" => "Trying",
        "180" => "Ringing",
        "181" => "Call Is Being Forwarded",
        "182" => "Queued",
        "183" => "Session Progress",
        "200" => "OK",
        "202" => "Accepted",
        "400" => "Bad Request",
        "401" => "Unauthorized",
        "403" => "Forbidden",
        "404" => "Not Found",
        "405" => "Method Not Allowed",
        "407" => "Proxy Authentication Required",
        "408" => "Request Timeout",
        "415" => "Unsupported Media Type",
        "480" => "Temporarily Unavailable",
        "481" => "Call/Transaction Does Not Exist",
        "486" => "Busy Here",
        "487" => "Request Terminated",
        "488" => "Not Acceptable Here",
        "491" => "Request Pending",
        "500" => "Server Internal Error",
        "501" => "Not Implemented",
        "502" => "Bad Gateway",
        "503" => "Service Unavailable",
        "603" => "Decline",
        _ => return None,
    })
}

/// What a peer's messages say about the peer itself, beyond addresses and
/// dialog identifiers, in what it sent: the SDP origin's user name and
/// session id (`o=`), the session name (`s=`), `a=tool:` and `a=ssrc:...
/// cname:` values, User-Agent and Server header values, and reason phrases
/// that the standard phrase of their code does not contain. Values shorter
/// than 4 characters are left out; each once, in order.
pub fn fingerprints(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: &str| {
        let v = v.trim();
        if v.len() >= 4 && !out.iter().any(|o| o == v) {
            out.push(v.to_owned());
        }
    };
    for message in sent_messages(log) {
        for (i, line) in message.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if i == 0 {
                if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
                    let (code, phrase) = rest.split_once(' ').unwrap_or((rest, ""));
                    let own = standard_phrase(code).is_some_and(|p| {
                        !p.to_ascii_lowercase()
                            .contains(&phrase.trim().to_ascii_lowercase())
                    });
                    if own {
                        add(phrase);
                    }
                }
                continue;
            }
            if let Some(o) = line.strip_prefix("o=") {
                let mut fields = o.split_whitespace();
                if let Some(user) = fields.next() {
                    add(user);
                }
                if let Some(session) = fields.next() {
                    add(session);
                }
            } else if let Some(s) = line.strip_prefix("s=") {
                add(s);
            } else if let Some(tool) = line.strip_prefix("a=tool:") {
                add(tool);
            } else if let Some(ssrc) = line.strip_prefix("a=ssrc:") {
                if let Some((_, cname)) = ssrc.split_once("cname:") {
                    add(cname.split_whitespace().next().unwrap_or(""));
                }
            } else if let Some((name, value)) = line.split_once(':') {
                let name = name.trim();
                if name.eq_ignore_ascii_case("user-agent") || name.eq_ignore_ascii_case("server") {
                    add(value);
                }
            }
        }
    }
    out
}

/// The value of one series in a Prometheus text `exposition`
/// (`name{labels}` exactly as written), 0 when it is absent; for a series
/// cut after a label and its comma (`name{a="x",`) or after its brace
/// (`name{`), the sum of every series it begins.
pub fn series_sum(exposition: &str, series: &str) -> u64 {
    exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            if series.ends_with(',') || series.ends_with('{') {
                rest.rsplit_once(' ').map(|(_, v)| v)
            } else {
                rest.strip_prefix(' ')
            }
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        // Counters are integers carried as floats.
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_unique_per_slot_and_on_loopback() {
        let a = Plan::for_slot(20);
        let b = Plan::for_slot(250);
        assert_eq!(a.realm(Realm::Outside).to_string(), "127.0.20.1:5060");
        assert_eq!(a.realm(Realm::Inside).to_string(), "127.0.20.2:5060");
        assert_eq!(a.host(Host::Pbx).to_string(), "127.0.20.3:5060");
        assert_eq!(a.host(Host::Carrier).to_string(), "127.0.20.4:5060");
        assert_eq!(a.host(Host::Pbx2).to_string(), "127.0.20.5:5060");
        assert_eq!(a.admin().to_string(), "127.0.20.1:9660");
        assert_eq!(a.media_ports(), (10_000, 10_199));
        assert_eq!(b.media_ports(), (56_000, 56_199));
        assert_eq!(
            a.side_ips(Realm::Inside)
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>(),
            ["127.0.20.2", "127.0.20.3", "127.0.20.5"]
        );
        assert!(std::panic::catch_unwind(|| Plan::for_slot(14)).is_err());
        let (p, q) = (Plan::next(), Plan::next());
        assert_ne!(p, q, "two labs of one process share a slot");
    }

    #[test]
    fn toml_routes_and_addresses() {
        let plan = Plan::for_slot(33);
        let t = plan.toml(&LabConfig::failover(&["5xx", "timeout"]));
        for part in [
            "listen = \"127.0.33.1:9660\"",
            "{ transport = \"udp\", address = \"127.0.33.1:5060\" }",
            "{ transport = \"tcp\", address = \"127.0.33.2:5060\" }",
            "media = { address = \"127.0.33.2\" }",
            "address = \"127.0.33.5:5060\"",
            "options_interval_secs = 0",
            "[limits]\nmax_calls = 20\n",
            "targets = [\"pbx\", \"pbx2\"]\nfailover_on = [\"5xx\", \"timeout\"]",
            "port_min = 12600\nport_max = 12799",
        ] {
            assert!(t.contains(part), "{part:?} missing from\n{t}");
        }
        let t = plan.toml(&LabConfig::default());
        assert!(t.contains("targets = [\"pbx\"]\n"), "{t}");
        assert!(
            !t.contains("inactivity_timeout_secs") && !t.contains("[cdr]"),
            "{t}"
        );
        let t = plan.toml(&LabConfig {
            media_inactivity_timeout_secs: Some(2),
            cdr_path: Some(PathBuf::from("/tmp/lab/cdr.jsonl")),
            ..LabConfig::default()
        });
        for part in [
            "port_max = 12799\nxdp = { mode = \"off\", interfaces = [] }\ninactivity_timeout_secs = 2\n",
            "[cdr]\npath = \"/tmp/lab/cdr.jsonl\"\nfsync = \"every\"\n",
        ] {
            assert!(t.contains(part), "{part:?} missing from\n{t}");
        }
    }

    #[test]
    fn identifiers_from_a_sipp_log() {
        let log = "----- 2026-11-21 14:00:00.000\nUDP message sent (300 bytes):\n\n\
                   INVITE sip:service@127.0.20.1:5060 SIP/2.0\n\
                   Via: SIP/2.0/UDP 127.0.20.4:5060;branch=z9hG4bK-77-1-0\n\
                   From: \"Caller\" <sip:caller@127.0.20.4:5060>;tag=77SIPpTag001\n\
                   To: <sip:service@127.0.20.1:5060>;tag=Ab3xYz9q\n\
                   Call-ID: 1-77@127.0.20.4\n\
                   i: compact-call-id-1\n\
                   CSeq: 1 INVITE\n\n\
                   v=0\n";
        assert_eq!(
            dialog_identifiers(log),
            [
                "z9hG4bK-77-1-0",
                "77SIPpTag001",
                "Ab3xYz9q",
                "1-77@127.0.20.4",
                "compact-call-id-1"
            ]
        );
        assert!(dialog_identifiers("To: <sip:a@b>;tag=x1\n").is_empty());
    }

    #[test]
    fn fingerprints_come_from_what_the_peer_sent() {
        let log = "----- 2026-12-04 10:00:00.000\nUDP message sent (500 bytes):\n\n\
                   SIP/2.0 183 Early Media From Pbx-7\nServer: PBX-Acme 9.1\n\
                   User-Agent: softphone/2.0\n\n\
                   v=0\no=alice 998877 1 IN IP4 127.0.20.3\ns=Acme session\n\
                   a=tool:libfoo 1.2\na=ssrc:1234 cname:alice@host.example\n\n\
                   ----- 2026-12-04 10:00:00.001\nUDP message received [300] bytes :\n\n\
                   SIP/2.0 200 Fine Thanks\nServer: the-other-side\no=bob 1234567 1 IN IP4 x\n\n\
                   ----- 2026-12-04 10:00:00.002\nUDP message sent (300 bytes):\n\n\
                   SIP/2.0 481 Transaction does not exist\ns=-\n\n";
        assert_eq!(
            fingerprints(log),
            [
                "Early Media From Pbx-7",
                "PBX-Acme 9.1",
                "softphone/2.0",
                "alice",
                "998877",
                "Acme session",
                "libfoo 1.2",
                "alice@host.example"
            ]
        );
        assert_eq!(sent_messages(log).len(), 2);
    }

    #[test]
    fn flow_of_requests_and_responses() {
        let log = "UDP message sent:\n\nINVITE sip:service@127.0.20.1:5060 SIP/2.0\n\
                   Via: SIP/2.0/UDP 127.0.20.4:5060\n\n\
                   UDP message received:\n\nSIP/2.0 100 Trying\nCSeq: 1 INVITE\n\n\
                   SIP/2.0 200 OK\n\nACK sip:callee@127.0.20.1:5060;transport=UDP SIP/2.0\n\
                   s=SIP/2.0 call\n";
        assert_eq!(flow_of(log), ["INVITE", "100", "200", "ACK"]);
    }

    #[test]
    fn peer_name_from_the_command_line() {
        let cmd = r#"cd "/tmp/x" && "nsenter" "-t" "9" "-n" "--" "sipp" "-sf" "/w/tests/scenarios/callee.xml" "-i" "127.0.58.3" "-p" "5060""#;
        assert_eq!(peer_name(cmd), "callee.xml on 127.0.58.3");
        assert_eq!(peer_name("sipp"), "? on ?");
    }

    #[test]
    fn http_status_and_body() {
        assert_eq!(
            parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n"),
            Some((200, "ready\n".to_owned()))
        );
        assert_eq!(
            parse_http_response("HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n"),
            Some((503, "not ready\n".to_owned()))
        );
        assert_eq!(parse_http_response(""), None);
        assert_eq!(parse_http_response("SIP/2.0 200 OK\r\n\r\n"), None);
    }
}
