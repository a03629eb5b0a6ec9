//! Self-tests of the end-to-end harness: real SIPp peers on loopback, with
//! RTP, across a two-namespace veth lab, the private loopback-only
//! namespace, and runs that must fail (a dead peer, the wall-clock kill).
//!
//! Each test uses its own 127.0.x.y addresses so the tests run in parallel.
//! SIPp binds its control port (8888 and up) on 0.0.0.0 and moves to the
//! next one when taken, so parallel peers do not collide there either.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::Duration;

use tests::netns::{
    Netns, Side, VethPair, enter_netns_of, isolated_loopback, netns_exists, parse_link_names,
    root_link_exists, skip_unless_privileged, skip_unless_sipp,
};
use tests::sipp::{Sipp, SippHandle, assert_no_leak};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal IP address")
}

fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Starts a UAS and gives it a moment to bind before a UAC sends (SIPp
/// retransmits the INVITE over UDP anyway; this just avoids the 500 ms
/// first retransmission in the common case).
fn start_uas(uas: &Sipp) -> SippHandle {
    let handle = uas.start();
    thread::sleep(Duration::from_millis(300));
    handle
}

#[test]
fn uac_to_uas_on_loopback_ten_calls() {
    if skip_unless_sipp("uac_to_uas_on_loopback_ten_calls") {
        return;
    }
    let (uas_ip, uac_ip) = (ip("127.0.10.1"), ip("127.0.10.2"));
    let uas = start_uas(
        &Sipp::builtin("uas")
            .local(uas_ip, 5060)
            .media(uas_ip, 16000)
            .calls(10)
            .timeout(Duration::from_secs(30)),
    );
    let uac = Sipp::builtin("uac")
        .local(uac_ip, 5061)
        .media(uac_ip, 17000)
        .remote(addr(uas_ip, 5060))
        .calls(10)
        .rate(20.0)
        .limit(5)
        .timeout(Duration::from_secs(20))
        .run();
    let uas = uas.wait();
    uac.assert_success(10);
    uas.assert_success(10);
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(
            uas.requests(method),
            10,
            "{method} in the UAS log\n{}",
            uas.report()
        );
    }
    assert!(
        uas.messages.contains("SIP/2.0 180 Ringing"),
        "{}",
        uas.report()
    );
    // The topology scan on a real SIPp log: the UAC's address is in the
    // UAS's log (no B2BUA in between), a neighbouring one is not.
    assert_no_leak(&uas.messages, &["127.0.10.3", "127.0.10.20"]);
    let err =
        std::panic::catch_unwind(|| assert_no_leak(&uas.messages, &["127.0.10.3", "127.0.10.2"]))
            .expect_err("the UAC's address must be found");
    let msg = err.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("`127.0.10.2`"), "{msg}");
    assert!(
        msg.contains("INVITE sip:service@127.0.10.1:5060"),
        "first message is the INVITE: {msg}"
    );
    assert!(
        !msg.contains("SIP/2.0 180 Ringing"),
        "one message only: {msg}"
    );
    assert!(uac.elapsed < Duration::from_secs(20), "{:?}", uac.elapsed);
}

#[test]
fn pcap_call_with_rtp_echo() {
    // SIPp plays pcap files through a raw socket, which needs root.
    if skip_unless_privileged("pcap_call_with_rtp_echo")
        || skip_unless_sipp("pcap_call_with_rtp_echo")
    {
        return;
    }
    let (uas_ip, uac_ip) = (ip("127.0.11.1"), ip("127.0.11.2"));
    let uas = start_uas(
        &Sipp::builtin("uas")
            .local(uas_ip, 5060)
            .media(uas_ip, 16100)
            .rtp_echo()
            .timeout(Duration::from_secs(40)),
    );
    let uac = Sipp::builtin("uac_pcap")
        .local(uac_ip, 5061)
        .media(uac_ip, 17100)
        .remote(addr(uas_ip, 5060))
        .timeout(Duration::from_secs(30))
        .run();
    let uas = uas.wait();
    uac.assert_success(1);
    uas.assert_success(1);
    // The offer is the pcap scenario's PCMA + telephone-event on the UAC's
    // media address; the UAS answered with its own.
    assert!(
        uas.messages.contains("m=audio 17100 RTP/AVP 8 101"),
        "{}",
        uas.report()
    );
    assert!(
        uas.messages.contains("c=IN IP4 127.0.11.2"),
        "{}",
        uas.report()
    );
    assert!(
        uac.messages.contains("m=audio 16100 RTP/AVP"),
        "{}",
        uac.report()
    );
    // g711a.pcap lasts about 4.7 s: a call that played it cannot be quick.
    assert!(
        uac.elapsed > Duration::from_secs(4),
        "pcap not played: {:?}",
        uac.elapsed
    );
}

/// SIPp 3.6.1 prints its RTP counters only on interactive screens, so RTP
/// is counted by the kernel: inside a namespace of its own, the UDP
/// datagrams delivered are the call's SIP messages plus the RTP packets.
#[test]
fn pcap_rtp_is_delivered_and_counted() {
    if skip_unless_privileged("pcap_rtp_is_delivered_and_counted")
        || skip_unless_sipp("pcap_rtp_is_delivered_and_counted")
    {
        return;
    }
    let ns = Netns::new("sbc-rtp");
    let before = ns.udp_counters();
    let lo = ip("127.0.0.1");
    let uas = start_uas(
        &Sipp::builtin("uas")
            .in_netns(&ns)
            .local(lo, 5060)
            .media(lo, 16000)
            .rtp_echo()
            .timeout(Duration::from_secs(40)),
    );
    let uac = Sipp::builtin("uac_pcap")
        .in_netns(&ns)
        .local(ip("127.0.0.2"), 5060)
        .media(ip("127.0.0.2"), 17000)
        .remote(addr(lo, 5060))
        .timeout(Duration::from_secs(30))
        .run();
    let uas = uas.wait();
    uac.assert_success(1);
    uas.assert_success(1);
    let after = ns.udp_counters();
    // 236 PCMA packets of g711a.pcap + 10 RFC 4733 events; SIP is 6.
    let delivered = after.in_datagrams - before.in_datagrams;
    assert!(
        delivered >= 236 + 6,
        "only {delivered} UDP datagrams delivered: {after:?}"
    );
    // -rtp_echo sent them back.
    let sent = after.out_datagrams - before.out_datagrams;
    assert!(
        sent >= 236,
        "only {sent} UDP datagrams sent (echo missing): {after:?}"
    );
}

#[test]
fn uac_to_uas_across_two_namespaces() {
    if skip_unless_privileged("uac_to_uas_across_two_namespaces")
        || skip_unless_sipp("uac_to_uas_across_two_namespaces")
    {
        return;
    }
    let (uac_ip, uas_ip) = (
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(198, 51, 100, 2),
    );
    let uac_ns = Netns::new("sbc-uac");
    let uas_ns = Netns::new("sbc-uas");
    let names = [uac_ns.name().to_owned(), uas_ns.name().to_owned()];
    let veth = VethPair::new(Side::Ns(&uac_ns), uac_ip, Side::Ns(&uas_ns), uas_ip, 24);
    let ifnames = [veth.a.ifname.clone(), veth.b.ifname.clone()];

    // Each namespace sees lo and its end of the veth, and nothing of the
    // root namespace: the veth was created straight inside them.
    assert_eq!(uac_ns.links(), ["lo".to_owned(), ifnames[0].clone()]);
    assert_eq!(uas_ns.links(), ["lo".to_owned(), ifnames[1].clone()]);
    assert!(
        !ifnames.iter().any(|i| root_link_exists(i)),
        "veth end in the root namespace"
    );
    let offload = uac_ns.run("ethtool", &["-k", &ifnames[0]]);
    assert!(
        String::from_utf8_lossy(&offload.stdout).contains("tx-checksumming: off"),
        "tx checksum offload still on"
    );

    let uas = start_uas(
        &Sipp::builtin("uas")
            .in_netns(&uas_ns)
            .local(IpAddr::V4(uas_ip), 5060)
            .calls(3)
            .timeout(Duration::from_secs(30)),
    );
    let uac = Sipp::builtin("uac")
        .in_netns(&uac_ns)
        .local(IpAddr::V4(uac_ip), 5060)
        .remote(addr(IpAddr::V4(uas_ip), 5060))
        .calls(3)
        .rate(10.0)
        .timeout(Duration::from_secs(20))
        .run();
    let uas = uas.wait();
    uac.assert_success(3);
    uas.assert_success(3);
    assert_eq!(uas.requests("INVITE"), 3, "{}", uas.report());
    // The UAS saw the UAC's TEST-NET address, i.e. the call crossed the veth.
    assert!(
        uas.messages.contains("Via: SIP/2.0/UDP 198.51.100.1:5060"),
        "{}",
        uas.report()
    );

    drop(veth);
    drop(uac_ns);
    drop(uas_ns);
    for name in &names {
        assert!(!netns_exists(name), "namespace {name} left behind");
    }
    for ifname in &ifnames {
        assert!(!root_link_exists(ifname), "interface {ifname} left behind");
    }
}

#[test]
fn veth_to_root_namespace_is_deleted_with_the_namespace() {
    if skip_unless_privileged("veth_to_root_namespace_is_deleted_with_the_namespace") {
        return;
    }
    let ns = Netns::new("sbc-root");
    let name = ns.name().to_owned();
    let (root_ip, ns_ip) = (Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2));
    let veth = VethPair::new(Side::Root, root_ip, Side::Ns(&ns), ns_ip, 30);
    let root_end = veth.a.ifname.clone();
    assert!(root_link_exists(&root_end));
    // A datagram from inside the namespace reaches a socket in the root
    // namespace over the veth.
    let socket = UdpSocket::bind((root_ip, 0)).expect("bind on the root end");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let port = socket.local_addr().expect("local addr").port();
    ns.run(
        "bash",
        &["-c", &format!("echo across >/dev/udp/{root_ip}/{port}")],
    );
    let mut buf = [0u8; 64];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("datagram from the namespace");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"across\n"[..], IpAddr::V4(ns_ip))
    );
    // A long-running child inside is killed at its deadline and reaped;
    // one that ends by itself reports its own status.
    let sleeper = ns.spawn("sleep", &["30"]);
    let pid = sleeper.id();
    let (status, killed) = sleeper.wait(Duration::from_millis(300));
    assert!(killed && status.code().is_none(), "{status:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped"
    );
    let (status, killed) = ns
        .spawn("sh", &["-c", "exit 7"])
        .wait(Duration::from_secs(5));
    assert!(!killed && status.code() == Some(7), "{status:?}");

    // Dropping the namespace first: its end goes, and with it the pair.
    drop(ns);
    assert!(!netns_exists(&name), "namespace {name} left behind");
    assert!(
        !root_link_exists(&root_end),
        "{root_end} outlived its namespace"
    );
    drop(veth);
}

#[test]
fn veth_refuses_non_test_net_addresses() {
    if skip_unless_privileged("veth_refuses_non_test_net_addresses") {
        return;
    }
    let ns = Netns::new("sbc-addr");
    let err = std::panic::catch_unwind(|| {
        VethPair::new(
            Side::Root,
            Ipv4Addr::new(10, 0, 0, 1),
            Side::Ns(&ns),
            Ipv4Addr::new(10, 0, 0, 2),
            24,
        )
    })
    .expect_err("10.0.0.0/8 must be refused");
    let msg = err.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("not a TEST-NET address"), "{msg}");
    assert_eq!(ns.links(), ["lo"]);
}

#[test]
fn isolated_loopback_has_only_lo() {
    // Without root, isolated_loopback uses a user namespace; where those
    // are disabled, this needs root like the other labs.
    let works = isolated_loopback("true")
        .status()
        .is_ok_and(|s| s.success());
    if !works && skip_unless_privileged("isolated_loopback_has_only_lo") {
        return;
    }
    let out = isolated_loopback("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links = parse_link_names(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        links,
        ["lo"],
        "interfaces seen inside the private namespace"
    );
    // The root namespace has more than lo (the machine's own interfaces),
    // so the check above is not true of every namespace.
    let root = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip");
    assert!(parse_link_names(&String::from_utf8_lossy(&root.stdout)).len() > 1);

    if skip_unless_sipp("isolated_loopback_has_only_lo") {
        return;
    }
    // Loopback is up inside: a UAS started isolated and a UAC that joins
    // its namespace call each other over 127.0.0.1, while a foreign
    // address has no route there at all.
    let lo = ip("127.0.0.1");
    let uas = start_uas(
        &Sipp::builtin("uas")
            .isolated()
            .local(lo, 5060)
            .timeout(Duration::from_secs(20)),
    );
    let route = enter_netns_of(uas.id(), "ip")
        .args(["route", "get", "192.0.2.1"])
        .output()
        .expect("run nsenter");
    assert!(
        !route.status.success(),
        "192.0.2.1 is routable inside the isolated namespace: {}",
        String::from_utf8_lossy(&route.stdout)
    );
    let inside = enter_netns_of(uas.id(), "ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("nsenter");
    assert_eq!(
        parse_link_names(&String::from_utf8_lossy(&inside.stdout)),
        ["lo"]
    );
    let uac = Sipp::builtin("uac")
        .in_netns_of(uas.id())
        .local(lo, 5061)
        .remote(addr(lo, 5060))
        .timeout(Duration::from_secs(10))
        .run();
    let uas = uas.wait();
    uac.assert_success(1);
    uas.assert_success(1);
}

#[test]
fn uac_to_dead_port_fails_within_its_bound() {
    if skip_unless_sipp("uac_to_dead_port_fails_within_its_bound") {
        return;
    }
    // Nothing listens on 127.0.12.1:5060.
    let uac = Sipp::builtin("uac")
        .local(ip("127.0.12.2"), 5061)
        .remote(addr(ip("127.0.12.1"), 5060))
        .timeout(Duration::from_secs(3))
        .run();
    uac.assert_failure();
    assert!(
        !uac.killed_at_deadline,
        "SIPp's own -timeout should end it\n{}",
        uac.report()
    );
    assert!(
        uac.elapsed < Duration::from_secs(8),
        "not bounded: {:?}",
        uac.elapsed
    );
    assert_eq!(uac.successful(), 0, "{}", uac.report());
    assert!(
        uac.requests("INVITE") >= 1,
        "the INVITE was sent\n{}",
        uac.report()
    );
    // And assert_success turns that into a test failure carrying the logs.
    let err = std::panic::catch_unwind(|| uac.assert_success(1)).expect_err("must panic");
    let msg = err.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("expected 1 successful"), "{msg}");
    assert!(
        msg.contains("timed out"),
        "SIPp's error log tail missing: {msg}"
    );
    assert!(
        msg.contains("INVITE sip:service@127.0.12.1:5060"),
        "message log tail missing: {msg}"
    );
    let _ = std::fs::remove_dir_all(&uac.dir);
}

#[test]
fn harness_kills_at_the_wall_clock_deadline_and_reaps() {
    if skip_unless_sipp("harness_kills_at_the_wall_clock_deadline_and_reaps") {
        return;
    }
    // A UAS waits for calls that never come; SIPp's own bound is 60 s, the
    // harness's is 1 s.
    let uas = Sipp::builtin("uas")
        .local(ip("127.0.13.1"), 5060)
        .timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(1))
        .start();
    let pid = uas.id();
    let result = uas.wait();
    assert!(result.killed_at_deadline, "{}", result.report());
    assert_eq!(result.status.code(), None, "killed by a signal");
    assert!(
        result.elapsed < Duration::from_secs(5),
        "{:?}",
        result.elapsed
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped (zombie)"
    );
    let err = std::panic::catch_unwind(|| result.assert_success(0)).expect_err("must panic");
    let msg = err.downcast_ref::<String>().expect("a formatted message");
    assert!(msg.contains("killed at the harness deadline"), "{msg}");

    // kill() and Drop reap too.
    let uas = Sipp::builtin("uas").local(ip("127.0.13.2"), 5060).start();
    let pid = uas.id();
    let killed = uas.kill();
    assert!(!killed.killed_at_deadline && killed.status.code().is_none());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped by kill()"
    );
    let uas = Sipp::builtin("uas").local(ip("127.0.13.3"), 5060).start();
    let (pid, dir) = (uas.id(), uas.dir().to_path_buf());
    drop(uas);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} not reaped by drop"
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(&result.dir);
    let _ = std::fs::remove_dir_all(&killed.dir);
}

#[test]
fn shipped_file_scenarios() {
    if skip_unless_sipp("shipped_file_scenarios") {
        return;
    }
    let (uas_ip, uac_ip) = (ip("127.0.14.1"), ip("127.0.14.2"));
    let uas = start_uas(
        &Sipp::shipped("drachtio-uas.xml")
            .local(uas_ip, 5060)
            .media(uas_ip, 16200)
            .calls(2)
            .timeout(Duration::from_secs(30)),
    );
    let uac = Sipp::shipped("drachtio-uac.xml")
        .local(uac_ip, 5061)
        .media(uac_ip, 17200)
        .remote(addr(uas_ip, 5060))
        .service("callee")
        .calls(2)
        .rate(10.0)
        .timeout(Duration::from_secs(20))
        .run();
    let uas = uas.wait();
    uac.assert_success(2);
    uas.assert_success(2);
    assert_eq!(uas.requests("INVITE"), 2, "{}", uas.report());
    assert!(
        uas.messages.contains("INVITE sip:callee@127.0.14.1:5060"),
        "{}",
        uas.report()
    );
}
