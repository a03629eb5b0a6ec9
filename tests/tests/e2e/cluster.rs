//! An active/standby pair on a real Redis (`[cluster]`), two real daemons
//! on one host (the lab's network): the same file except `node_id` and the
//! metrics listener. The standby binds nothing and is not ready; a call
//! goes through the active node; the active node is SIGKILLed and the
//! standby takes over its addresses within the lease; calls go through
//! it; the killed node, started again, waits as standby (neither exits
//! nor fails); a clean stop of the active node hands the lease over at
//! once. A scanner banned on one node is banned on the other after the
//! takeover. Calls answered before the active node dies go on through the
//! other: their BYEs end them normally and their media flows again.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::lab::{Host, Lab, LabConfig, Plan, Realm};
use tests::netns::{Background, skip_unless_sipp, skip_unless_tool};

use crate::edge::{exchange, options};

/// The Redis port in the lab's network.
const REDIS_PORT: u16 = 6390;
/// The lease the pair runs with (the default).
const LEASE: Duration = Duration::from_millis(1500);

/// The test's clock (an IO shell: reading it here is fine).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// One node of the pair: its process, its admin listener, its log.
struct Node {
    name: &'static str,
    admin: SocketAddr,
    log: std::path::PathBuf,
    process: Option<Background>,
}

impl Node {
    fn start(lab: &Lab, name: &'static str, admin: SocketAddr, toml: &str) -> Node {
        let config = lab.dir().join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write the node's config");
        let log = lab.dir().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = lab.net().command(tests::sbc_binary());
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        Node {
            name,
            admin,
            log,
            process: Some(Background::spawn(&mut cmd)),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ready(&self, lab: &Lab) -> bool {
        lab.http_get(self.admin, "/health/ready")
            .is_some_and(|(status, _)| status == 200)
    }

    /// The node's `sbc_cluster_role` that is 1.
    fn role(&self, lab: &Lab) -> Option<String> {
        let (_, body) = lab.http_get(self.admin, "/metrics")?;
        body.lines()
            .filter_map(|l| l.strip_prefix("sbc_cluster_role{role=\""))
            .find_map(|l| l.strip_suffix("\"} 1").map(str::to_owned))
    }

    /// Waits (at most `within`) until the node is ready; how long it took.
    fn wait_ready(&mut self, lab: &Lab, within: Duration) -> Duration {
        let start = now();
        while !self.ready(lab) {
            assert!(
                self.running(),
                "{} exited before it was ready\n{}",
                self.name,
                self.log()
            );
            assert!(
                start.elapsed() < within,
                "{} not ready within {within:?}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    fn running(&mut self) -> bool {
        let Some(process) = self.process.as_mut() else {
            return false;
        };
        process.try_wait().is_none()
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.process.as_ref().map(Background::id).expect("running");
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill {signal} {pid}");
    }

    /// SIGTERM, then the exit status (bounded).
    fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let (status, killed) = self
            .process
            .take()
            .expect("running")
            .wait(Duration::from_secs(15));
        assert!(
            !killed,
            "{} did not stop on SIGTERM\n{}",
            self.name,
            self.log()
        );
        status
    }

    fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self
            .process
            .take()
            .expect("running")
            .wait(Duration::from_secs(5));
    }
}

/// One SIPp call from the carrier through the outside realm to the PBX.
fn call_through(lab: &Lab, what: &str) {
    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let uac = lab
        .peer("caller.xml", Host::Carrier)
        .remote(lab.plan().realm(Realm::Outside))
        .run();
    let uas = lab.finish_callee(&uac, uas);
    assert_eq!(uac.failed(), 0, "{what}: {}", uac.report());
    uac.assert_success(1);
    uas.assert_success(1);
}

/// `redis-cli` with `args` against the lab's Redis; its output (an error
/// message while the server is down).
fn redis_cli(lab: &Lab, redis: SocketAddr, args: &[&str]) -> String {
    let out = lab
        .net()
        .command("redis-cli")
        .args([
            "-h",
            &redis.ip().to_string(),
            "-p",
            &redis.port().to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Who holds the pair's lease ("" for nobody).
fn lease_holder(lab: &Lab, redis: SocketAddr) -> String {
    redis_cli(lab, redis, &["GET", "pair:lease"])
}

/// A Redis server for the pair, on the inside realm's address: its
/// address, the command that starts it again, and the running server.
fn start_redis(lab: &Lab) -> (SocketAddr, Command, Background) {
    let redis = SocketAddr::new(lab.plan().realm_ip(Realm::Inside), REDIS_PORT);
    let mut server = lab.net().command("redis-server");
    server
        .args([
            "--bind",
            &redis.ip().to_string(),
            "--port",
            &redis.port().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let running = Background::spawn(&mut server);
    (redis, server, running)
}

/// The lab's configuration `base` (whose metrics listen on `admin_a`) as
/// node `node` of pair "pair" on `redis`, its metrics on `admin`.
fn pair_toml(
    base: &str,
    redis: SocketAddr,
    node: &str,
    admin_a: SocketAddr,
    admin: SocketAddr,
) -> String {
    let metrics = format!("[metrics]\nlisten = \"{admin_a}\"\n");
    assert!(base.contains(&metrics), "{base}");
    format!(
        "[cluster]\nredis_url = \"redis://{redis}\"\nnode_id = \"{node}\"\nname = \"pair\"\n\n{}",
        base.replacen(&metrics, &format!("[metrics]\nlisten = \"{admin}\"\n"), 1)
    )
}

/// Waits (at most 10 s) until `node` says it is standby.
fn wait_standby(lab: &Lab, node: &mut Node) {
    let deadline = now() + Duration::from_secs(10);
    while node.role(lab).as_deref() != Some("standby") {
        assert!(
            node.running(),
            "{} exited instead of waiting\n{}",
            node.name,
            node.log()
        );
        assert!(
            now() < deadline,
            "{} not standby\n{}",
            node.name,
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One series of a node's `/metrics`, 0 when absent.
fn node_metric(lab: &Lab, node: &Node, series: &str) -> u64 {
    lab.http_get(node.admin, "/metrics")
        .map_or(0, |(_, body)| tests::lab::series_sum(&body, series))
}

/// Whether a cluster test skips: without SIPp or Redis (never under CI).
fn skip(name: &str) -> bool {
    skip_unless_sipp(name)
        || skip_unless_tool(
            name,
            "redis-server",
            "--version",
            "apt-get install redis-server",
        )
}

/// The pair's call keys in Redis.
fn call_keys(lab: &Lab, redis: SocketAddr) -> usize {
    redis_cli(lab, redis, &["--scan", "--pattern", "pair:call:*"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[test]
fn the_standby_takes_over_when_the_active_node_dies_and_at_once_when_it_stops() {
    let name = "the_standby_takes_over_when_the_active_node_dies";
    if skip(name) {
        return;
    }
    // A starts and serves; B waits as standby: answers its admin
    // listener, not ready, binds nothing (A still has the addresses).
    let PairLab {
        lab,
        redis,
        mut server,
        redis_server,
        mut a,
        mut b,
        base,
    } = PairLab::start("pair");
    let mut redis_server = redis_server;
    let plan = *lab.plan();
    let (admin_a, admin_b) = (a.admin, b.admin);
    let node_toml = |node: &str, admin: SocketAddr| pair_toml(&base, redis, node, admin_a, admin);
    assert_eq!(a.role(&lab).as_deref(), Some("active"));
    assert!(!b.ready(&lab), "a standby is not ready");
    assert_eq!(
        lab.http_get(admin_b, "/health/ready"),
        Some((503, "standby\n".to_owned())),
        "and says why"
    );
    assert!(
        b.log()
            .contains("standby: the other node holds the cluster lease")
    );
    call_through(&lab, "through A");
    assert_eq!(lease_holder(&lab, redis), "sbc-a");

    // A scanner A banned is shared through Redis...
    let listener = plan.realm(Realm::Outside);
    let scanner = lab
        .net()
        .udp_socket(SocketAddr::new(plan.spare_ip(20), 5060));
    let scanner_at = scanner.local_addr().expect("scanner address");
    for n in 0..3 {
        let probe = options(n, scanner_at, listener, "friendly-scanner");
        assert!(exchange(&scanner, listener, &probe, Duration::from_millis(100)).is_empty());
    }
    let member = format!("outside|{}", scanner_at.ip());
    let deadline = now() + Duration::from_secs(5);
    while !redis_cli(&lab, redis, &["ZRANGE", "pair:bans", "0", "-1"]).contains(&member) {
        assert!(now() < deadline, "A's ban not in Redis\n{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A dies without a word: B takes over once the lease expires.
    a.kill();
    let killed = now();
    b.wait_ready(&lab, Duration::from_secs(10));
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL of the active node: {takeover:?} (lease {LEASE:?})");
    assert_eq!(b.role(&lab).as_deref(), Some("active"));
    assert_eq!(lease_holder(&lab, redis), "sbc-b");
    call_through(&lab, "through B after the takeover");
    // ...so B, now active, drops the scanner too, while others get answers.
    let ping = options(10, scanner_at, listener, "edge-test");
    let deadline = now() + Duration::from_secs(5);
    while !b
        .log()
        .contains("source banned by the other node of the pair")
    {
        assert!(now() < deadline, "B did not take in A's ban\n{}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        exchange(&scanner, listener, &ping, Duration::from_millis(500)).is_empty(),
        "B answered a source A banned"
    );
    let other = lab
        .net()
        .udp_socket(SocketAddr::new(plan.spare_ip(21), 5060));
    let other_at = other.local_addr().expect("address");
    let answers = exchange(
        &other,
        listener,
        &options(11, other_at, listener, "edge-test"),
        Duration::from_millis(500),
    );
    assert!(
        answers.iter().any(|m| m.starts_with("SIP/2.0 200")),
        "B answers others: {answers:?}"
    );

    // A again: it waits as standby, neither exits nor fails.
    let mut a = Node::start(&lab, "sbc-a2", admin_a, &node_toml("sbc-a", admin_a));
    wait_standby(&lab, &mut a);
    std::thread::sleep(LEASE * 2);
    assert!(a.running() && !a.ready(&lab), "A waits\n{}", a.log());

    // B stops cleanly: it hands the lease over, and A takes over without
    // waiting for the lease to expire.
    let status = b.stop();
    assert!(status.success(), "B's exit: {status}\n{}", b.log());
    assert!(b.log().contains("cluster lease released"), "{}", b.log());
    let stopped = now();
    a.wait_ready(&lab, Duration::from_secs(10));
    eprintln!("takeover after a clean stop: {:?}", stopped.elapsed());
    call_through(&lab, "through A after B stopped");

    // Redis goes away: A keeps serving and says so; Redis back (empty),
    // A holds the lease again.
    drop(redis_server.take());
    call_through(&lab, "through A while Redis is down");
    let errors = node_metric(&lab, &a, "sbc_cluster_redis_errors_total");
    assert!(errors > 0, "Redis errors counted: {errors}");
    assert!(a.ready(&lab), "still serving\n{}", a.log());
    redis_server = Some(Background::spawn(&mut server));
    let deadline = now() + Duration::from_secs(10);
    while lease_holder(&lab, redis) != "sbc-a" {
        assert!(
            now() < deadline,
            "A did not take the lease again\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another node holds the lease (A was cut off while it took over): A
    // steps down and exits with an error for its supervisor to start it
    // again as standby.
    assert_eq!(
        redis_cli(&lab, redis, &["SET", "pair:lease", "sbc-x", "PX", "60000"]),
        "OK"
    );
    let (status, killed) = a
        .process
        .take()
        .expect("running")
        .wait(Duration::from_secs(10));
    assert!(!killed, "A did not step down\n{}", a.log());
    assert!(
        !status.success(),
        "a node that steps down exits with an error"
    );
    assert!(
        a.log()
            .contains("stepped down: node \"sbc-x\" holds the cluster lease"),
        "{}",
        a.log()
    );
    assert_eq!(
        lease_holder(&lab, redis),
        "sbc-x",
        "not taken from the holder"
    );
    drop(redis_server);
    lab.shutdown();
}

/// A lab with Redis, node A active and ready and node B standby.
struct PairLab {
    lab: Lab,
    redis: SocketAddr,
    /// Starts Redis again.
    server: Command,
    redis_server: Option<Background>,
    a: Node,
    b: Node,
    /// The lab's configuration, before `[cluster]`.
    base: String,
}

impl PairLab {
    fn start(name: &str) -> PairLab {
        let plan = Plan::next();
        let lab = Lab::peers_only_with(name, plan);
        let (redis, server, redis_server) = start_redis(&lab);
        let admin_a = plan.admin();
        let admin_b = SocketAddr::new(admin_a.ip(), admin_a.port() + 1);
        let base = plan.toml(&LabConfig::default());
        let mut a = Node::start(
            &lab,
            "sbc-a",
            admin_a,
            &pair_toml(&base, redis, "sbc-a", admin_a, admin_a),
        );
        a.wait_ready(&lab, Duration::from_secs(15));
        let mut b = Node::start(
            &lab,
            "sbc-b",
            admin_b,
            &pair_toml(&base, redis, "sbc-b", admin_a, admin_b),
        );
        wait_standby(&lab, &mut b);
        PairLab {
            lab,
            redis,
            server,
            redis_server: Some(redis_server),
            a,
            b,
            base,
        }
    }
}

/// How many calls are up when the active node leaves.
const CALLS: u32 = 20;

/// How the active node leaves the pair with calls up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// SIGKILL: the standby takes over once the lease expires.
    Dies,
    /// SIGQUIT: a drain, which hands the calls to the standby.
    Drains,
}

#[test]
fn answered_calls_go_on_through_the_standby_when_the_active_node_dies() {
    calls_go_on_through_the_standby("answered_calls_go_on_when_the_active_dies", Leave::Dies);
}

#[test]
fn a_drain_in_a_pair_hands_the_calls_over_to_the_standby() {
    calls_go_on_through_the_standby("a_drain_in_a_pair_hands_the_calls_over", Leave::Drains);
}

/// [`CALLS`] SIPp calls through the active node, RTP echoed on one of
/// them; the active node leaves as `leave` says while they are up; every
/// call ends with its caller's BYE, carried to the callee by the other
/// node, and the RTP comes back through it.
fn calls_go_on_through_the_standby(name: &str, leave: Leave) {
    if skip(name) {
        return;
    }
    let PairLab {
        lab,
        redis,
        redis_server,
        mut a,
        mut b,
        ..
    } = PairLab::start("pair-calls");
    let plan = *lab.plan();

    // CALLS calls, each up 4 s after its answer, then the caller's BYE;
    // the callee echoes RTP.
    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx).rtp_echo().calls(CALLS));
    let uac = lab
        .peer("caller-long.xml", Host::Carrier)
        .remote(plan.realm(Realm::Outside))
        .calls(CALLS)
        .rate(40.0)
        .limit(CALLS)
        .timeout(Duration::from_secs(30))
        .start();
    // Every call answered is in Redis, and in B's mirror.
    let deadline = now() + Duration::from_secs(8);
    while call_keys(&lab, redis) < CALLS as usize
        || node_metric(&lab, &b, "sbc_cluster_mirrored_calls") < u64::from(CALLS)
    {
        assert!(
            now() < deadline,
            "{} calls in Redis, {} mirrored\n{}",
            call_keys(&lab, redis),
            node_metric(&lab, &b, "sbc_cluster_mirrored_calls"),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(uac.dir().join("messages.log")).unwrap_or_default();
    let port = crate::media::anchored_port(&lab, &log)
        .expect("the caller's first answer names an anchored port");

    // RTP on the first call, from the caller's address (another port, as
    // a NAT would), echoed by the callee; A dies while it flows.
    let outside = plan.realm_ip(Realm::Outside);
    let socket = lab.net().udp_socket(SocketAddr::new(
        plan.host_ip(Host::Carrier),
        tests::lab::PEER_MEDIA_PORT + 10,
    ));
    socket.set_nonblocking(true).expect("non-blocking");
    let to = SocketAddr::new(outside, port);
    let mut buf = [0u8; 2048];
    // When each echo came back.
    let mut echoes: Vec<Instant> = Vec::new();
    let mut killed: Option<Instant> = None;
    let mut ready: Option<Instant> = None;
    for seq in 0u16..150 {
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_0002u32.to_be_bytes());
        rtp.resize(12 + 160, 0xff);
        let _ = socket.send_to(&rtp, to);
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n == rtp.len() {
                echoes.push(now());
            }
        }
        if killed.is_none() && echoes.len() >= 10 {
            match leave {
                Leave::Dies => a.kill(),
                Leave::Drains => a.signal("-QUIT"),
            }
            killed = Some(now());
        }
        if killed.is_some() && ready.is_none() && seq % 5 == 0 && b.ready(&lab) {
            ready = Some(now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let uac = uac.wait();
    let uas = lab.finish_callee(&uac, uas);
    let killed = killed.expect("A was killed");
    let ready = ready.expect("B took over while the calls were up");
    let through_b = echoes.iter().filter(|&&at| at >= ready).count();
    let gap = echoes
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "{CALLS} calls up when the active node {leave:?}: B ready {:?} after it; media: {} echoes, {through_b} after B was ready, longest gap {gap:?}",
        ready - killed,
        echoes.len()
    );
    // Every call answered before the kill ended with its caller's BYE,
    // which B carried to the callee: none lost.
    assert_eq!(uac.failed(), 0, "{}\n{}", uac.report(), b.log());
    uac.assert_success(u64::from(CALLS));
    uas.assert_success(u64::from(CALLS));
    assert_eq!(
        node_metric(
            &lab,
            &b,
            "sbc_cluster_adopted_calls_total{result=\"adopted\"}"
        ),
        u64::from(CALLS),
        "{}",
        b.log()
    );
    assert!(
        through_b > 0,
        "no media through B after the takeover\n{}",
        b.log()
    );
    if leave == Leave::Drains {
        // A exited by itself, at once, leaving its calls up.
        let (status, killed) = a
            .process
            .take()
            .expect("started")
            .wait(Duration::from_secs(10));
        assert!(
            !killed && status.success(),
            "A's exit: {status}\n{}",
            a.log()
        );
        assert!(
            a.log().contains("handing the calls over to the standby"),
            "{}",
            a.log()
        );
    }
    // Ended calls leave nothing in Redis: B's own and A's retired.
    let deadline = now() + Duration::from_secs(5);
    while call_keys(&lab, redis) > 0 {
        assert!(
            now() < deadline,
            "{} call keys left",
            call_keys(&lab, redis)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b.stop().success(), "{}", b.log());
    drop(redis_server);
    lab.shutdown();
}

/// Waits (at most `within`) until `done`, failing with `what` and `log`.
fn wait_until(within: Duration, what: &str, log: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = now() + within;
    while !done() {
        assert!(now() < deadline, "{what} within {within:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn calls_answered_while_redis_was_away_go_on_after_the_active_node_dies() {
    let name = "calls_answered_while_redis_was_away";
    if skip(name) {
        return;
    }
    const EACH: u32 = 10;
    const OUTAGE: Duration = Duration::from_secs(30);
    let PairLab {
        lab,
        redis,
        mut server,
        redis_server,
        mut a,
        mut b,
        ..
    } = PairLab::start("pair-redis-away");
    let plan = *lab.plan();
    let callers = || {
        lab.peer("caller-held-for.xml", Host::Carrier)
            .remote(plan.realm(Realm::Outside))
            .calls(EACH)
            .rate(20.0)
            .limit(EACH)
            .arg("-d")
            .arg("45000")
            .timeout(Duration::from_secs(90))
            .deadline(Duration::from_secs(100))
    };
    let uas = lab.start_callee(
        &lab.peer("callee.xml", Host::Pbx)
            .calls(2 * EACH)
            .timeout(Duration::from_secs(100)),
    );
    // Calls answered before the outage are in Redis.
    let before = callers().start();
    wait_until(
        Duration::from_secs(8),
        "calls in Redis",
        || a.log(),
        || call_keys(&lab, redis) == EACH as usize,
    );
    // Redis goes away for 30 s; calls go on, and more are answered.
    drop(redis_server);
    let down = now();
    wait_until(
        Duration::from_secs(5),
        "Redis errors counted",
        || a.log(),
        || node_metric(&lab, &a, "sbc_cluster_redis_errors_total") > 0,
    );
    // (Another SIP and media port of the carrier: the first SIPp holds its own.)
    let carrier = plan.host_ip(Host::Carrier);
    let during = callers()
        .local(carrier, plan.host(Host::Carrier).port() + 2)
        .media(carrier, tests::lab::PEER_MEDIA_PORT + 20)
        .start();
    wait_until(
        Duration::from_secs(8),
        "every call up",
        || a.log(),
        || node_metric(&lab, &a, "sbc_calls_active{realm=\"outside\"}") == u64::from(2 * EACH),
    );
    // The changes wait for Redis, and A says so while it serves on.
    wait_until(
        Duration::from_secs(5),
        "A says its replication is behind",
        || a.log(),
        || {
            lab.http_get(a.admin, "/health/ready")
                == Some((
                    200,
                    "ready\nreplication behind: call changes wait for Redis\n".to_owned(),
                ))
        },
    );
    assert!(node_metric(&lab, &a, "sbc_cluster_replication_lag_milliseconds") > 1000);
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    // Redis is back, empty (no persistence): A writes every call up again,
    // and B mirrors them all.
    let redis_server = Background::spawn(&mut server);
    wait_until(
        Duration::from_secs(10),
        "every call in Redis and in B's mirror",
        || {
            format!(
                "{} keys, {} mirrored\n{}\n{}",
                call_keys(&lab, redis),
                node_metric(&lab, &b, "sbc_cluster_mirrored_calls"),
                a.log(),
                b.log()
            )
        },
        || {
            call_keys(&lab, redis) == 2 * EACH as usize
                && node_metric(&lab, &b, "sbc_cluster_mirrored_calls") == u64::from(2 * EACH)
        },
    );
    eprintln!(
        "Redis back after {:?}: every call in Redis again",
        down.elapsed()
    );
    // Now A dies; B carries every call on to its BYE.
    a.kill();
    b.wait_ready(&lab, Duration::from_secs(10));
    let before = before.wait();
    let during = during.wait();
    let uas = lab.finish_callee(&during, uas);
    assert_eq!(
        before.failed() + during.failed(),
        0,
        "{}\n{}\n{}",
        before.report(),
        during.report(),
        b.log()
    );
    before.assert_success(u64::from(EACH));
    during.assert_success(u64::from(EACH));
    uas.assert_success(u64::from(2 * EACH));
    assert_eq!(
        node_metric(
            &lab,
            &b,
            "sbc_cluster_adopted_calls_total{result=\"adopted\"}"
        ),
        u64::from(2 * EACH),
        "{}",
        b.log()
    );
    assert!(b.stop().success(), "{}", b.log());
    drop(redis_server);
    lab.shutdown();
}

#[test]
fn active_nodes_share_a_trunks_call_limit() {
    let name = "active_nodes_share_a_trunks_call_limit";
    if skip(name) {
        return;
    }
    let plan = Plan::next();
    let lab = Lab::peers_only_with("active-nodes", plan);
    let (redis, _server, redis_server) = start_redis(&lab);
    // The PBX trunk takes one call at a time, across the cluster.
    let base = plan.toml(&LabConfig::default());
    let limited = "name = \"pbx\"\n";
    assert!(base.contains(limited), "{base}");
    let base = base.replacen(limited, "name = \"pbx\"\nmax_calls = 1\n", 1);
    let active = |node: &str, base: &str| {
        format!(
            "[cluster]\nmode = \"active\"\nredis_url = \"redis://{redis}\"\nnode_id = \"{node}\"\nname = \"pair\"\n\n{base}"
        )
    };
    // Node B serves other addresses: its own realm (and admin) addresses.
    let (outside, inside) = (plan.realm_ip(Realm::Outside), plan.realm_ip(Realm::Inside));
    let (outside_b, inside_b) = (plan.spare_ip(40), plan.spare_ip(41));
    let base_b = base
        .replace(&format!("\"{outside}"), &format!("\"{outside_b}"))
        .replace(&format!("\"{inside}"), &format!("\"{inside_b}"));
    let mut a = Node::start(&lab, "sbc-a", plan.admin(), &active("sbc-a", &base));
    let mut b = Node::start(
        &lab,
        "sbc-b",
        SocketAddr::new(outside_b, plan.admin().port()),
        &active("sbc-b", &base_b),
    );
    // Both serve at once: no lease to wait for.
    a.wait_ready(&lab, Duration::from_secs(15));
    b.wait_ready(&lab, Duration::from_secs(15));
    assert_eq!(a.role(&lab).as_deref(), Some("active"));
    assert_eq!(b.role(&lab).as_deref(), Some("active"));
    let b_outside = SocketAddr::new(outside_b, plan.realm(Realm::Outside).port());

    // A call up through A...
    let uas = lab.start_callee(
        &lab.peer("callee.xml", Host::Pbx)
            .calls(2)
            .timeout(Duration::from_secs(40)),
    );
    let long = lab
        .peer("caller-held-for.xml", Host::Carrier)
        .remote(plan.realm(Realm::Outside))
        .arg("-d")
        .arg("6000")
        .timeout(Duration::from_secs(30))
        .start();
    // A's count of the PBX trunk's calls in Redis reaches `n`, and B has
    // had time to read it (a renewal period plus a tick).
    let a_counts = |n: &str| {
        wait_until(
            Duration::from_secs(5),
            &format!("A's count of {n} in Redis"),
            || a.log(),
            || redis_cli(&lab, redis, &["HGET", "pair:nodes:sbc-a", "pbx"]) == n,
        );
        std::thread::sleep(Duration::from_millis(1500));
    };
    a_counts("1");
    // ...and B refuses the trunk's second call.
    let refused = lab
        .peer("caller-rejected.xml", Host::Carrier)
        .local(
            plan.host_ip(Host::Carrier),
            plan.host(Host::Carrier).port() + 2,
        )
        .media(
            plan.host_ip(Host::Carrier),
            tests::lab::PEER_MEDIA_PORT + 20,
        )
        .remote(b_outside)
        .run();
    refused.assert_success(1);
    assert!(
        refused.messages.contains("SIP/2.0 503"),
        "B refused with 503\n{}",
        refused.messages
    );
    // A's call ends: its count goes, and B takes the trunk's next call.
    let long = long.wait();
    long.assert_success(1);
    a_counts("0");
    let through_b = lab
        .peer("caller.xml", Host::Carrier)
        .remote(b_outside)
        .run();
    let uas = lab.finish_callee(&through_b, uas);
    through_b.assert_success(1);
    uas.assert_success(2);
    assert!(a.stop().success(), "{}", a.log());
    assert!(b.stop().success(), "{}", b.log());
    drop(redis_server);
    lab.shutdown();
}
