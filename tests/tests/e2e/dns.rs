//! Trunks found by DNS (RFC 3263), end to end: a real DNS server (dnsmasq)
//! in the lab's private loopback-only namespace serves NAPTR and SRV records
//! for a trunk of two targets; the SBC, pointed at it by `[dns] servers`,
//! resolves the trunk, finds the first target down (a closed port: ICMP
//! unreachable), and the call (SIPp caller -> SBC -> SIPp callee) reaches the
//! second. Then the records change (dnsmasq restarted with a new SRV target)
//! and, once the answer's TTL has run out, the next call reaches the new
//! target.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::lab::{Host, Lab, LabConfig, PEER_MEDIA_PORT, Plan, Realm, SIP_PORT};
use tests::netns::{Background, skip_unless_sipp, skip_unless_tool};
use tests::sipp::Sipp;

/// The trunk's domain (`.test` is reserved: it never leaves the lab).
const DOMAIN: &str = "pbx.sbc-lab.test";
/// The TTL of every record dnsmasq serves, in seconds.
pub(crate) const TTL: u64 = 2;
/// The port the lab's DNS server listens on.
pub(crate) const DNS_PORT: u16 = 5353;

/// dnsmasq serving `DOMAIN`: NAPTR `SIP+D2U` -> `_sip._udp.DOMAIN`, whose
/// SRV records name `targets` (address, priority) on port 5060, in the
/// lab's network on `listen`. Logs to `log`.
fn dnsmasq(lab: &Lab, listen: SocketAddr, targets: &[(IpAddr, u16)], log: &str) -> Background {
    let mut records = vec![format!(
        "--naptr-record={DOMAIN},10,10,S,SIP+D2U,,_sip._udp.{DOMAIN}"
    )];
    for (i, (ip, priority)) in targets.iter().enumerate() {
        let host = format!("t{i}-{}.sbc-lab.test", ip.to_string().replace('.', "-"));
        records.push(format!(
            "--srv-host=_sip._udp.{DOMAIN},{host},{SIP_PORT},{priority},10"
        ));
        records.push(format!("--host-record={host},{ip},{TTL}"));
    }
    dnsmasq_serving(lab, listen, &records, log)
}

/// dnsmasq in the lab's network on `listen`, serving `records` (its own
/// options) with a TTL of [`TTL`], nothing else; logs to `log`.
pub(crate) fn dnsmasq_serving(
    lab: &Lab,
    listen: SocketAddr,
    records: &[String],
    log: &str,
) -> Background {
    let mut cmd = lab.net().command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
    ])
    .arg(format!("--log-facility={}", lab.dir().join(log).display()))
    .arg(format!(
        "--pid-file={}",
        lab.dir().join(format!("{log}.pid")).display()
    ))
    .arg(format!("--listen-address={}", listen.ip()))
    .arg(format!("--port={}", listen.port()))
    .arg(format!("--local-ttl={TTL}"))
    .args(records);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Background::spawn(&mut cmd);
    // Up once it answers on its port: give it a moment (it binds at once).
    std::thread::sleep(Duration::from_millis(300));
    server
}

/// The lab's configuration with trunk `pbx` given by name (its transport
/// left to NAPTR) and the lab's DNS server as the resolver.
fn config(plan: &Plan, dns: SocketAddr) -> String {
    let toml = plan.toml(&LabConfig::default());
    let pbx = format!(
        "address = \"{}\"\ntransport = \"udp\"",
        plan.host(Host::Pbx)
    );
    assert!(toml.contains(&pbx), "the lab's pbx trunk: {toml}");
    let toml = toml.replacen(&pbx, &format!("address = \"{DOMAIN}\""), 1);
    format!("[dns]\nservers = [\"{dns}\"]\ntarget_block_secs = 30\n\n{toml}")
}

fn callee_at(lab: &Lab, ip: IpAddr) -> Sipp {
    lab.net().place(
        Sipp::shipped("callee.xml")
            .local(ip, SIP_PORT)
            .media(ip, PEER_MEDIA_PORT)
            .timeout(Duration::from_secs(20)),
    )
}

fn caller(lab: &Lab) -> Sipp {
    lab.peer("caller.xml", Host::Carrier)
        .remote(lab.plan().realm(Realm::Outside))
        .timeout(Duration::from_secs(15))
}

/// The test's clock (an IO shell: reading it here is fine).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Lines of the daemon's log saying the trunk resolved.
fn resolutions(lab: &Lab) -> Vec<String> {
    lab.daemon_stderr()
        .lines()
        .filter(|l| l.contains("trunk resolved"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_trunk_found_by_naptr_and_srv_fails_over_to_its_second_target_and_follows_the_ttl() {
    let name = "a_trunk_found_by_naptr_and_srv_fails_over_to_its_second_target";
    if skip_unless_sipp(name)
        || skip_unless_tool(name, "dnsmasq", "--version", "apt-get install dnsmasq-base")
    {
        return;
    }
    let mut lab = Lab::peers_only("dns-trunk");
    let plan = *lab.plan();
    let dns = SocketAddr::new(plan.realm_ip(Realm::Outside), DNS_PORT);
    // sip (priority 10): the pbx host, where nothing listens (the port is
    // closed); sip2 (priority 20): pbx2, where the callee answers.
    let (down, up) = (plan.host_ip(Host::Pbx), plan.host_ip(Host::Pbx2));
    let server = dnsmasq(&lab, dns, &[(down, 10), (up, 20)], "dnsmasq-1.log");
    let served = now();
    lab.start_daemon(&config(&plan, dns));

    // The SBC resolves the trunk at start, without blocking anything.
    let deadline = now() + Duration::from_secs(10);
    while resolutions(&lab).is_empty() {
        assert!(
            now() < deadline,
            "the trunk did not resolve within 10 s\n{}",
            lab.daemon_stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = resolutions(&lab).remove(0);
    for part in [
        "NAPTR -> SRV -> A/AAAA".to_owned(),
        format!("ttl_secs={TTL}"),
        format!("udp {down}:{SIP_PORT}"),
        format!("udp {up}:{SIP_PORT}"),
    ] {
        assert!(first.contains(&part), "{part:?} missing from: {first}");
    }

    // The call tries sip, finds its port closed, and reaches sip2.
    let uas = lab.start_callee(&callee_at(&lab, up));
    let uac = caller(&lab).run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    let log = lab.daemon_stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("call rerouted") && l.contains("attempt=2")),
        "the second target took the call as the second attempt\n{log}"
    );

    // New records: one SRV target, a third host. The SBC keeps its last
    // answer until the TTL runs out, then asks again and uses the new one.
    // Within a TTL the answer is reused, not asked again per call: the
    // server saw one NAPTR query per TTL at most (and the first).
    let alive = served.elapsed().as_secs();
    drop(server);
    let queries = std::fs::read_to_string(lab.dir().join("dnsmasq-1.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("query[NAPTR]"))
        .count() as u64;
    assert!(
        (1..=alive / TTL + 2).contains(&queries),
        "{queries} NAPTR queries in {alive} s with a TTL of {TTL} s"
    );
    let moved = plan.spare_ip(1);
    let restarted = now();
    let _server = dnsmasq(&lab, dns, &[(moved, 10)], "dnsmasq-2.log");
    // (A refresh that finds the server restarting retries 5 s later.)
    let deadline = restarted + Duration::from_secs(TTL + 15);
    while resolutions(&lab).len() < 2 {
        assert!(
            now() < deadline,
            "the new records were not picked up within the TTL ({TTL} s) and 15 s of slack\n{}",
            lab.daemon_stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = resolutions(&lab).remove(1);
    assert!(
        second.contains(&format!("udp {moved}:{SIP_PORT}")) && !second.contains(&up.to_string()),
        "{second}"
    );
    let uas = lab.start_callee(&callee_at(&lab, moved));
    let uac = caller(&lab).run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    lab.shutdown();
}

/// sbc's RFC 3263 resolver itself against dnsmasq, in the lab's namespace:
/// NAPTR order and the transports a realm serves, SRV without NAPTR, SRV
/// only when the trunk names its transport, A/AAAA only for `name:port`,
/// A/AAAA on 5060 when nothing else is published, priorities, weights and
/// TTLs as served, and a name with nothing at all.
#[test]
fn the_resolver_follows_rfc_3263_against_a_real_server() {
    use sbc::dns::resolve::Resolver;
    use sbc::dns::{DnsTransport, Method};

    let name = "the_resolver_follows_rfc_3263_against_a_real_server";
    if skip_unless_tool(name, "dnsmasq", "--version", "apt-get install dnsmasq-base") {
        return;
    }
    let lab = Lab::peers_only("dns-resolver");
    // Without a private namespace the server is on the host's loopback,
    // which is fine too: the addresses are the lab's own.
    run_resolver_checks(&lab, lab.net().pid());

    fn run_resolver_checks(lab: &Lab, pid: Option<u32>) {
        let plan = *lab.plan();
        let dns = SocketAddr::new(plan.realm_ip(Realm::Outside), DNS_PORT);
        let (a, b, c) = (plan.spare_ip(1), plan.spare_ip(2), plan.spare_ip(3));
        let records: Vec<String> = [
            // "both": TCP preferred by NAPTR order, UDP second.
            "--naptr-record=both.sbc-lab.test,10,10,S,SIP+D2T,,_sip._tcp.both.sbc-lab.test"
                .to_owned(),
            "--naptr-record=both.sbc-lab.test,20,10,S,SIP+D2U,,_sip._udp.both.sbc-lab.test"
                .to_owned(),
            // SCTP and TLS are not served: skipped.
            "--naptr-record=both.sbc-lab.test,5,10,S,SIP+D2S,,_sip._sctp.both.sbc-lab.test"
                .to_owned(),
            "--srv-host=_sip._tcp.both.sbc-lab.test,ha.sbc-lab.test,5070,10,60".to_owned(),
            "--srv-host=_sip._tcp.both.sbc-lab.test,hb.sbc-lab.test,5071,10,40".to_owned(),
            "--srv-host=_sip._tcp.both.sbc-lab.test,hc.sbc-lab.test,5072,20,0".to_owned(),
            "--srv-host=_sip._udp.both.sbc-lab.test,hc.sbc-lab.test,5080,10,0".to_owned(),
            // "srvonly": no NAPTR, an SRV for UDP.
            "--srv-host=_sip._udp.srvonly.sbc-lab.test,hb.sbc-lab.test,5090,10,0".to_owned(),
            // "plain": an address only.
            format!("--host-record=plain.sbc-lab.test,{c},{TTL}"),
            format!("--host-record=ha.sbc-lab.test,{a},{TTL}"),
            format!("--host-record=hb.sbc-lab.test,{b},{TTL}"),
            format!("--host-record=hc.sbc-lab.test,{c},{TTL}"),
        ]
        .to_vec();
        let _server = dnsmasq_serving(lab, dns, &records, "dnsmasq-resolver.log");
        let checks = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                use DnsTransport::{Tcp, Udp};
                let resolver = Resolver::new(&[dns]).expect("a resolver");
                let both = [Udp, Tcp];
                let got = |r: &sbc::dns::Resolution| -> Vec<(String, DnsTransport, u16, u16)> {
                    r.targets
                        .iter()
                        .map(|t| (t.addr.to_string(), t.transport, t.priority, t.weight))
                        .collect()
                };

                let r = resolver
                    .resolve("both.sbc-lab.test", None, None, &both)
                    .await
                    .expect("both resolves");
                assert_eq!(r.method, Method::Naptr);
                assert_eq!(r.ttl, Duration::from_secs(TTL));
                assert_eq!(
                    got(&r),
                    [
                        (format!("{a}:5070"), Tcp, 10, 60),
                        (format!("{b}:5071"), Tcp, 10, 40),
                        (format!("{c}:5072"), Tcp, 20, 0),
                    ]
                );
                // A realm with only UDP listeners follows the UDP NAPTR.
                let r = resolver
                    .resolve("both.sbc-lab.test", None, None, &[Udp])
                    .await
                    .expect("both over UDP");
                assert_eq!(
                    (r.method, got(&r)),
                    (Method::Naptr, vec![(format!("{c}:5080"), Udp, 10, 0)])
                );
                // A transport given: SRV of that transport, no NAPTR.
                let r = resolver
                    .resolve("both.sbc-lab.test", None, Some(Udp), &[Udp])
                    .await
                    .expect("both, UDP given");
                assert_eq!(
                    (r.method, got(&r)),
                    (Method::Srv, vec![(format!("{c}:5080"), Udp, 10, 0)])
                );
                // No NAPTR: SRV for each transport in turn.
                let r = resolver
                    .resolve("srvonly.sbc-lab.test", None, None, &both)
                    .await
                    .expect("srvonly");
                assert_eq!(
                    (r.method, got(&r)),
                    (Method::Srv, vec![(format!("{b}:5090"), Udp, 10, 0)])
                );
                // Nothing but an address: 5060 over the first transport.
                let r = resolver
                    .resolve("plain.sbc-lab.test", None, None, &both)
                    .await
                    .expect("plain");
                assert_eq!(
                    (r.method, got(&r)),
                    (Method::Address, vec![(format!("{c}:5060"), Udp, 0, 0)])
                );
                // name:port: A/AAAA only, even where SRV exists.
                let r = resolver
                    .resolve("ha.sbc-lab.test", Some(5099), Some(Tcp), &[Tcp])
                    .await
                    .expect("ha:5099");
                assert_eq!(
                    (r.method, got(&r)),
                    (Method::Address, vec![(format!("{a}:5099"), Tcp, 0, 0)])
                );
                // Nothing at all.
                let e = resolver
                    .resolve("nothing.sbc-lab.test", None, None, &both)
                    .await
                    .expect_err("nothing resolves");
                assert!(e.to_string().contains("nothing.sbc-lab.test"), "{e}");
            });
        };
        match pid {
            Some(pid) => tests::netns::in_netns_of(pid, checks),
            None => checks(),
        }
    }
}
