//! The signaling plane end to end: the real `sbc` daemon as a B2BUA between
//! real SIPp peers (issue 3, item 7).
//!
//! Each test starts its own lab ([`Lab::start`]: the daemon with a
//! generated configuration, in a private loopback-only namespace with
//! addresses of its own), starts the callee(s) in the background, runs the
//! caller to completion (every peer bounded), and judges the call by the
//! peers' own message logs: call counts on both sides, the messages each
//! side saw, the SDP naming the SBC's media address of that side's realm,
//! and the topology scan ([`Lab::assert_topology_hidden`]): no address,
//! Call-ID, tag or branch of one side appears in what the other side saw.
//! Each test ends with [`Lab::shutdown`]: the daemon must have survived and
//! must exit cleanly on SIGTERM.
//!
//! The scenario pairs are checked without the SBC in
//! `scenarios_selfcheck.rs`, so a failure here is the daemon's. The first
//! two tests check the lab itself and run without the daemon.

use std::time::Duration;

use tests::lab::{Host, Lab, LabConfig, Plan, Realm, flow};
use tests::netns::skip_unless_sipp;
use tests::sipp::{Sipp, SippResult, Transport};

/// A caller on `from` dialling the SBC's listener in `from`'s realm.
fn caller(lab: &Lab, scenario: &str, from: Host) -> Sipp {
    lab.peer(scenario, from)
        .remote(lab.plan().realm(Plan::realm_of(from)))
        .timeout(Duration::from_secs(15))
}

/// Panics unless every SDP connection line the peer on `host` received
/// names the SBC's media address in the peer's realm (and there is one).
fn assert_media_anchored(lab: &Lab, result: &SippResult, host: Host) {
    let own = lab.plan().realm_ip(Plan::realm_of(host)).to_string();
    let mine = lab.plan().host_ip(host).to_string();
    let seen: Vec<&str> = result
        .messages
        .lines()
        .filter_map(|l| l.strip_prefix("c=IN IP4 "))
        .filter(|ip| *ip != mine)
        .collect();
    assert!(
        !seen.is_empty() && seen.iter().all(|ip| *ip == own),
        "SDP received on {host:?} names {seen:?}, not the SBC's media address {own}\n{}",
        result.report()
    );
}

/// The usual call: callee on `to`, caller on `from`, both must succeed once.
fn one_call(
    lab: &Lab,
    caller_scenario: &str,
    from: Host,
    callee_scenario: &str,
    to: Host,
) -> (SippResult, SippResult) {
    let uas = lab.start_callee(&lab.peer(callee_scenario, to));
    let uac = caller(lab, caller_scenario, from).run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    (uac, uas)
}

// --- the lab itself (no daemon needed) ---------------------------------

#[test]
fn lab_configurations_pass_check_config() {
    for (what, config) in [
        ("default", LabConfig::default()),
        ("failover", LabConfig::failover(&["5xx", "timeout"])),
    ] {
        let plan = Plan::next();
        let path = std::env::temp_dir().join(format!(
            "sbc-lab-config-{what}-{}-{}.toml",
            std::process::id(),
            plan.slot
        ));
        std::fs::write(&path, plan.toml(&config)).expect("write the lab config");
        let out = tests::run_sbc(["check-config".as_ref(), path.as_os_str()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for part in [
            format!("outside (udp {0}, tcp {0}", plan.realm(Realm::Outside)),
            format!("pbx2 (udp {} in inside)", plan.host(Host::Pbx2)),
            format!("metrics on {}", plan.admin()),
        ] {
            assert!(
                stdout.contains(&part),
                "{what}: {part:?} missing from {stdout}"
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn lab_start_reports_a_daemon_that_exits() {
    // A route to a trunk that does not exist: the daemon must refuse it
    // and exit, and the lab must say so with the daemon's stderr rather
    // than wait for readiness.
    let plan = Plan::next();
    let broken = plan
        .toml(&LabConfig::default())
        .replace("targets = [\"carrier\"]", "targets = [\"nowhere\"]");
    let err = std::panic::catch_unwind(|| Lab::start_toml("broken", plan, &broken))
        .expect_err("a daemon that exits must fail the lab");
    let msg = err
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(msg.contains("sbc exited before it was ready"), "{msg}");
    assert!(msg.contains("--- sbc stderr ---"), "{msg}");
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!(
        "sbc-lab-broken-{}-{}",
        std::process::id(),
        plan.slot
    )));
}

// --- calls through the B2BUA ---------------------------------------------

#[test]
fn basic_call_outside_to_inside() {
    if skip_unless_sipp("basic_call_outside_to_inside") {
        return;
    }
    let lab = Lab::start("basic-out", &LabConfig::default());
    let (uac, uas) = one_call(&lab, "caller.xml", Host::Carrier, "callee.xml", Host::Pbx);
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(uas.requests(method), 1, "{method}\n{}", uas.report());
    }
    assert_media_anchored(&lab, &uac, Host::Carrier);
    assert_media_anchored(&lab, &uas, Host::Pbx);
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn basic_call_inside_to_outside() {
    if skip_unless_sipp("basic_call_inside_to_outside") {
        return;
    }
    let lab = Lab::start("basic-in", &LabConfig::default());
    let (uac, uas) = one_call(&lab, "caller.xml", Host::Pbx, "callee.xml", Host::Carrier);
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(uas.requests(method), 1, "{method}\n{}", uas.report());
    }
    assert_media_anchored(&lab, &uac, Host::Pbx);
    assert_media_anchored(&lab, &uas, Host::Carrier);
    lab.assert_topology_hidden(&[&uas], &[&uac]);
    lab.shutdown();
}

#[test]
fn basic_call_caller_over_tcp_trunk_over_udp() {
    if skip_unless_sipp("basic_call_caller_over_tcp_trunk_over_udp") {
        return;
    }
    let lab = Lab::start("basic-tcp", &LabConfig::default());
    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let uac = caller(&lab, "caller.xml", Host::Carrier)
        .transport(Transport::Tcp)
        .run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    // The trunk is UDP whatever the caller used.
    assert!(
        uas.messages.contains("Via: SIP/2.0/UDP ") && !uas.messages.contains("TCP message"),
        "{}",
        uas.report()
    );
    assert!(uac.messages.contains("TCP message"), "{}", uac.report());
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn bye_from_callee() {
    if skip_unless_sipp("bye_from_callee") {
        return;
    }
    let lab = Lab::start("bye", &LabConfig::default());
    let (uac, uas) = one_call(
        &lab,
        "caller-wait-bye.xml",
        Host::Carrier,
        "callee-sends-bye.xml",
        Host::Pbx,
    );
    // The caller got the BYE at its own Contact, and answered it.
    assert_eq!(uac.requests("BYE"), 1, "{}", uac.report());
    assert!(
        uac.messages.contains("BYE sip:caller@"),
        "BYE not sent to the caller's Contact\n{}",
        uac.report()
    );
    assert_eq!(
        flow(&uas).last().map(String::as_str),
        Some("200"),
        "{}",
        uas.report()
    );
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn cancel_while_ringing() {
    if skip_unless_sipp("cancel_while_ringing") {
        return;
    }
    let lab = Lab::start("cancel", &LabConfig::default());
    let (uac, uas) = one_call(
        &lab,
        "caller-cancel.xml",
        Host::Carrier,
        "callee-cancel.xml",
        Host::Pbx,
    );
    // The callee's INVITE was cancelled and its 487 ACKed (by the SBC);
    // the caller got its own 487 and no 200 for the INVITE.
    assert_eq!(uas.requests("CANCEL"), 1, "{}", uas.report());
    assert_eq!(uas.requests("ACK"), 1, "{}", uas.report());
    let caller_flow = flow(&uac);
    assert!(caller_flow.iter().any(|m| m == "487"), "{}", uac.report());
    assert_eq!(
        caller_flow.iter().filter(|m| *m == "200").count(),
        1,
        "one 200, the CANCEL's\n{}",
        uac.report()
    );
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn reinvite_hold_and_unhold() {
    if skip_unless_sipp("reinvite_hold_and_unhold") {
        return;
    }
    let lab = Lab::start("hold", &LabConfig::default());
    // The scenarios themselves fail the call unless the callee is offered
    // a=sendonly then a=sendrecv and the caller is answered a=recvonly.
    let (uac, uas) = one_call(
        &lab,
        "caller-hold.xml",
        Host::Carrier,
        "callee-hold.xml",
        Host::Pbx,
    );
    assert_eq!(uas.requests("INVITE"), 3, "{}", uas.report());
    assert_eq!(uas.requests("ACK"), 3, "{}", uas.report());
    assert!(uas.messages.contains("a=sendonly"), "{}", uas.report());
    assert!(uac.messages.contains("a=recvonly"), "{}", uac.report());
    // Every offer and answer, re-INVITEs included, anchored on the SBC.
    assert_media_anchored(&lab, &uac, Host::Carrier);
    assert_media_anchored(&lab, &uas, Host::Pbx);
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn late_offer() {
    if skip_unless_sipp("late_offer") {
        return;
    }
    let lab = Lab::start("late", &LabConfig::default());
    // The callee's scenario fails unless its INVITE has no SDP and its ACK
    // has one: the offer-less INVITE is relayed as such.
    let (uac, uas) = one_call(
        &lab,
        "caller-late-offer.xml",
        Host::Carrier,
        "callee-late-offer.xml",
        Host::Pbx,
    );
    assert_media_anchored(&lab, &uac, Host::Carrier);
    assert_media_anchored(&lab, &uas, Host::Pbx);
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn reliable_provisional_and_prack() {
    if skip_unless_sipp("reliable_provisional_and_prack") {
        return;
    }
    let lab = Lab::start("prack", &LabConfig::default());
    // The caller requires 100rel: it must get a reliable 180 with RSeq and
    // its PRACK answered; the callee must be PRACKed with RAck 1.
    let (uac, uas) = one_call(
        &lab,
        "caller-100rel.xml",
        Host::Carrier,
        "callee-100rel.xml",
        Host::Pbx,
    );
    assert_eq!(uas.requests("PRACK"), 1, "{}", uas.report());
    assert_eq!(uac.requests("PRACK"), 1, "{}", uac.report());
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

/// The callee refuses with `status`; the caller must get that status, the
/// callee's final response must be ACKed once.
fn rejection_propagates(name: &str, callee: &str, status: &str) {
    if skip_unless_sipp(name) {
        return;
    }
    let lab = Lab::start(name, &LabConfig::default());
    let (uac, uas) = one_call(
        &lab,
        "caller-rejected.xml",
        Host::Carrier,
        callee,
        Host::Pbx,
    );
    let finals: Vec<String> = flow(&uac)
        .into_iter()
        .filter(|m| m.bytes().all(|b| b.is_ascii_digit()) && !m.starts_with('1'))
        .collect();
    assert_eq!(finals, [status], "{}", uac.report());
    assert_eq!(uas.requests("ACK"), 1, "{}", uas.report());
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

#[test]
fn busy_486_propagates() {
    rejection_propagates("busy_486_propagates", "callee-486-busy.xml", "486");
}

#[test]
fn not_found_404_propagates() {
    rejection_propagates("not_found_404_propagates", "callee-404-unknown.xml", "404");
}

#[test]
fn unavailable_503_propagates() {
    // One target only, so a 5xx has nowhere to fail over to.
    rejection_propagates(
        "unavailable_503_propagates",
        "callee-503-unavailable.xml",
        "503",
    );
}

#[test]
fn failover_to_second_trunk_on_503() {
    if skip_unless_sipp("failover_to_second_trunk_on_503") {
        return;
    }
    let lab = Lab::start("failover", &LabConfig::failover(&["5xx"]));
    let pbx = lab.start_callee(&lab.peer("callee-503-unavailable.xml", Host::Pbx));
    let pbx2 = lab.start_callee(&lab.peer("callee.xml", Host::Pbx2));
    let uac = caller(&lab, "caller.xml", Host::Carrier).run();
    let (pbx, pbx2) = (lab.finish_callee(&uac, pbx), lab.finish_callee(&uac, pbx2));
    uac.assert_success(1);
    pbx.assert_success(1);
    pbx2.assert_success(1);
    // pbx refused (and was ACKed), pbx2 took the call; the caller never
    // heard of the 503.
    assert_eq!(pbx.requests("ACK"), 1, "{}", pbx.report());
    assert_eq!(pbx2.requests("BYE"), 1, "{}", pbx2.report());
    assert!(!flow(&uac).iter().any(|m| m == "503"), "{}", uac.report());
    lab.assert_topology_hidden(&[&uac], &[&pbx, &pbx2]);
    lab.shutdown();
}

#[test]
fn a_closed_trunk_port_fails_over_at_once() {
    if skip_unless_sipp("a_closed_trunk_port_fails_over_at_once") {
        return;
    }
    // Nothing listens on pbx: the kernel answers the INVITE with ICMP port
    // unreachable, which quotes it; the SBC fails that transaction over at
    // once (RFC 3261 §8.1.3.1, §18.4) instead of after timer B.
    let lab = Lab::start("closed-port", &LabConfig::failover(&["transport-error"]));
    let pbx2 = lab.start_callee(&lab.peer("callee.xml", Host::Pbx2));
    let uac = caller(&lab, "caller.xml", Host::Carrier).run();
    let pbx2 = lab.finish_callee(&uac, pbx2);
    uac.assert_success(1);
    pbx2.assert_success(1);
    // Timer B is 32 s; a call that waited for it would take that long.
    assert!(
        uac.elapsed < Duration::from_secs(16),
        "failed over after {:?}: the ICMP error was not used\n{}",
        uac.elapsed,
        uac.report()
    );
    lab.assert_topology_hidden(&[&uac], &[&pbx2]);
    lab.shutdown();
}

#[test]
fn trunk_that_never_answers_fails_over_after_timer_b() {
    if skip_unless_sipp("trunk_that_never_answers_fails_over_after_timer_b") {
        return;
    }
    // Timer B is 64*T1 = 32 s with the default T1 of 500 ms, so this test
    // takes that long.
    let lab = Lab::start("timer-b", &LabConfig::failover(&["timeout"]));
    let silent = lab.start_callee(
        &lab.peer("callee-silent.xml", Host::Pbx)
            .timeout(Duration::from_secs(60)),
    );
    let pbx2 = lab.start_callee(
        &lab.peer("callee.xml", Host::Pbx2)
            .timeout(Duration::from_secs(60)),
    );
    let uac = caller(&lab, "caller.xml", Host::Carrier)
        .timeout(Duration::from_secs(50))
        .run();
    let (silent, pbx2) = (silent.kill(), lab.finish_callee(&uac, pbx2));
    uac.assert_success(1);
    pbx2.assert_success(1);
    // The SBC retransmitted to the silent trunk (timer A) and gave up on it
    // only at timer B, not before.
    assert!(silent.requests("INVITE") >= 2, "{}", silent.report());
    assert!(
        !silent.messages.contains("message sent"),
        "{}",
        silent.report()
    );
    assert!(
        uac.elapsed >= Duration::from_secs(30),
        "failed over after {:?}, before timer B (32 s)\n{}",
        uac.elapsed,
        uac.report()
    );
    lab.assert_topology_hidden(&[&uac], &[&silent, &pbx2]);
    let _ = std::fs::remove_dir_all(&silent.dir);
    lab.shutdown();
}

#[test]
fn dropped_200_is_retransmitted_until_ack() {
    if skip_unless_sipp("dropped_200_is_retransmitted_until_ack") {
        return;
    }
    let lab = Lab::start("drop-200", &LabConfig::default());
    // The caller ignores the first 200; its scenario fails unless a second
    // one comes within 5 s (RFC 3261 13.3.1.4: the UAS core retransmits the
    // 2xx until the ACK).
    let (uac, uas) = one_call(
        &lab,
        "caller-drop-200.xml",
        Host::Carrier,
        "callee.xml",
        Host::Pbx,
    );
    let before_ack: Vec<String> = flow(&uac)
        .into_iter()
        .take_while(|m| m != "ACK")
        .filter(|m| m == "200")
        .collect();
    assert!(before_ack.len() >= 2, "{}", uac.report());
    // The callee's leg is the SBC's business alone: one ACK there, or two
    // when the callee's own 200 retransmission crossed that ACK (the SBC
    // then ACKs again, RFC 3261 13.2.2.4).
    let acks = uas.requests("ACK");
    assert!((1..=2).contains(&acks), "{acks} ACKs: {}", uas.report());
    lab.assert_topology_hidden(&[&uac], &[&uas]);
    lab.shutdown();
}

/// The README's lab exactly as written: `sbc` with no config (the embedded
/// default) and the two SIPp commands, in a private network namespace so
/// its fixed addresses (127.0.0.1-4:5060) can't meet another test's.
/// The daemon on its embedded default, alone in a namespace with only
/// loopback (as the README runs it), ready; with its log file.
fn embedded_default_daemon() -> (tests::netns::Background, std::path::PathBuf) {
    daemon_in_private_loopback(&[])
}

/// The daemon with `args` in a network namespace of its own with only
/// loopback, ready (its admin listener answers); its stderr goes to the
/// returned log file.
fn daemon_in_private_loopback(args: &[&str]) -> (tests::netns::Background, std::path::PathBuf) {
    use std::process::Stdio;
    use std::time::Instant;
    use tests::netns::{Background, enter_netns_of, isolated_loopback};

    let log = std::env::temp_dir().join(format!(
        "sbc-default-lab-{}-{}-{}.log",
        std::process::id(),
        args.len(),
        std::thread::current()
            .name()
            .unwrap_or("t")
            .replace("::", "-")
    ));
    let mut cmd = isolated_loopback(tests::sbc_binary());
    cmd.args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let daemon = Background::spawn(&mut cmd);
    // Ready, and in its own namespace: the admin listener answers there.
    #[allow(clippy::disallowed_methods)] // an e2e test waits on real time
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = enter_netns_of(daemon.id(), "bash")
            .args([
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9660 && printf 'GET /health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 2 cat <&3",
            ])
            .stdin(Stdio::null())
            .output();
        // An HTTP/1.0 probe is answered in HTTP/1.0.
        let ready = probe.is_ok_and(|o| {
            tests::lab::parse_http_response(&String::from_utf8_lossy(&o.stdout))
                .is_some_and(|(status, _)| status == 200)
        });
        if ready {
            break;
        }
        #[allow(clippy::disallowed_methods)]
        let late = Instant::now() > deadline;
        assert!(
            !late,
            "daemon not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (daemon, log)
}

#[test]
fn the_embedded_default_carries_the_readme_calls() {
    use std::net::{IpAddr, SocketAddr};
    use tests::netns::skip_unless_privileged;
    use tests::sipp::assert_no_leak;

    const NAME: &str = "the_embedded_default_carries_the_readme_calls";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let (daemon, log) = embedded_default_daemon();
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    // sipp -sn uas -i 127.0.0.3 -p 5060 ... and sipp -sn uac 127.0.0.1:5060 -i 127.0.0.5 -p 5070 ...
    let uas = Sipp::builtin("uas")
        .local(ip("127.0.0.3"), 5060)
        .media(ip("127.0.0.3"), 16000)
        .calls(3)
        .timeout(Duration::from_secs(20))
        .in_netns_of(daemon.id())
        .start();
    std::thread::sleep(Duration::from_millis(300));
    let uac = Sipp::builtin("uac")
        .local(ip("127.0.0.5"), 5070)
        .media(ip("127.0.0.5"), 17000)
        .remote(SocketAddr::new(ip("127.0.0.1"), 5060))
        .calls(3)
        .rate(5.0)
        .timeout(Duration::from_secs(20))
        .in_netns_of(daemon.id())
        .run();
    let uas = uas.wait();
    uac.assert_success(3);
    uas.assert_success(3);
    // Neither side sees the other's addresses: the caller's and the outside
    // realm's on the PBX side, the PBX's and the inside realm's on the other.
    assert_no_leak(&uas.messages, &["127.0.0.5", "127.0.0.1"]);
    assert_no_leak(&uac.messages, &["127.0.0.3", "127.0.0.2"]);
    daemon.kill();
    let _ = std::fs::remove_file(&log);
}

#[test]
fn the_embedded_default_carries_400_short_calls_a_second_for_40_s() {
    use std::net::{IpAddr, SocketAddr};
    use tests::netns::skip_unless_privileged;

    const NAME: &str = "the_embedded_default_carries_400_short_calls_a_second_for_40_s";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    // 16,000 calls that hang up at once: 2 x 16,000 media port pairs
    // released against 5,000 per address, so ports are reused well within
    // their quarantine (once a hard block capping this at about 166 cps).
    const RATE: u32 = 400;
    const CALLS: u32 = RATE * 40;
    let (daemon, log) = embedded_default_daemon();
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let uas = Sipp::builtin("uas")
        .local(ip("127.0.0.3"), 5060)
        .media(ip("127.0.0.3"), 16000)
        .calls(CALLS)
        .timeout(Duration::from_secs(75))
        .without_message_log()
        .in_netns_of(daemon.id())
        .start();
    std::thread::sleep(Duration::from_millis(300));
    // From the carrier trunk's address: a trunk is trusted within its own
    // limits, where one untrusted source gets 15 requests a second.
    let uac = Sipp::builtin("uac")
        .local(ip("127.0.0.4"), 5060)
        .media(ip("127.0.0.4"), 17000)
        .remote(SocketAddr::new(ip("127.0.0.1"), 5060))
        .calls(CALLS)
        .rate(f64::from(RATE))
        .timeout(Duration::from_secs(70))
        .without_message_log()
        .in_netns_of(daemon.id())
        .run();
    let uas = uas.wait();
    let answered = uac.successful();
    eprintln!(
        "embedded default, {RATE} cps for 40 s: {answered}/{CALLS} calls answered ({:.2}%), \
         the callee saw {}",
        answered as f64 * 100.0 / f64::from(CALLS),
        uas.successful()
    );
    assert!(
        answered * 1000 >= u64::from(CALLS) * 999 && !uac.killed_at_deadline,
        "under 99.9% answered\n{}\n{}",
        uac.report(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    daemon.kill();
    let _ = std::fs::remove_file(&log);
}

/// A phone of the embedded default's access realm, written out by hand: it
/// registers from 127.0.0.20 with a Contact naming a private address it is
/// not reachable at (192.168.1.20, as a phone behind NAT does), answers the
/// one call that comes, then removes its registration.
struct Phone {
    socket: PhoneSocket,
    sbc: std::net::SocketAddr,
    /// Every message it received, for the topology scan.
    seen: String,
    /// Received, not yet expected.
    waiting: Vec<String>,
}

/// How the phone talks to the SBC: a UDP socket, or one TCP connection it
/// opened (the SBC must call it back over that connection).
enum PhoneSocket {
    Udp(std::net::UdpSocket),
    Tcp {
        stream: std::net::TcpStream,
        /// Bytes read and not yet framed into a message.
        pending: Vec<u8>,
    },
}

impl Phone {
    fn transport(&self) -> &'static str {
        match self.socket {
            PhoneSocket::Udp(_) => "UDP",
            PhoneSocket::Tcp { .. } => "TCP",
        }
    }

    fn send(&mut self, text: &str) {
        use std::io::Write as _;
        match &mut self.socket {
            PhoneSocket::Udp(socket) => {
                socket
                    .send_to(text.as_bytes(), self.sbc)
                    .expect("phone sends");
            }
            PhoneSocket::Tcp { stream, .. } => {
                stream.write_all(text.as_bytes()).expect("phone sends")
            }
        }
    }

    /// One whole message, if one arrived within 100 ms.
    fn receive(&mut self) -> Option<String> {
        use std::io::Read as _;
        let mut buf = vec![0u8; 65_535];
        match &mut self.socket {
            PhoneSocket::Udp(socket) => match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, self.sbc, "only the SBC talks to the phone");
                    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
                }
                Err(_) => None,
            },
            PhoneSocket::Tcp { stream, pending } => loop {
                // A message is its head and Content-Length bytes of body.
                let text = String::from_utf8_lossy(pending).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            if name.trim().eq_ignore_ascii_case("content-length") {
                                value.trim().parse::<usize>().ok()
                            } else {
                                None
                            }
                        })
                        .unwrap_or(0);
                    if pending.len() >= end + 4 + length {
                        let message: Vec<u8> = pending.drain(..end + 4 + length).collect();
                        return Some(String::from_utf8_lossy(&message).into_owned());
                    }
                }
                match stream.read(&mut buf) {
                    Ok(0) => panic!("the SBC closed the phone's connection"),
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(_) => return None,
                }
            },
        }
    }

    /// The next message whose first line starts with `start`, within 10 s;
    /// others wait for their own `expect` (a call may come in while a
    /// refresh is answered).
    fn expect(&mut self, start: &str) -> String {
        if let Some(at) = self.waiting.iter().position(|m| m.starts_with(start)) {
            return self.waiting.remove(at);
        }
        for _ in 0..100 {
            if let Some(text) = self.receive() {
                self.seen.push_str(&text);
                if text.starts_with(start) {
                    return text;
                }
                self.waiting.push(text);
            }
        }
        panic!("the phone got no {start:?}; it saw:\n{}", self.seen)
    }

    fn register(&mut self, cseq: u32, expires: u32) -> String {
        let transport = self.transport();
        self.send(&format!(
            "REGISTER sip:pbx.example SIP/2.0\r\n\
Via: SIP/2.0/{transport} 192.168.1.20:5062;branch=z9hG4bKphone{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:100@pbx.example>;tag=phonetag\r\n\
To: <sip:100@pbx.example>\r\n\
Call-ID: phone-registration@192.168.1.20\r\n\
CSeq: {cseq} REGISTER\r\n\
Contact: <sip:100@192.168.1.20:5062>;expires={expires}\r\n\
User-Agent: LabPhone 1.0\r\n\
Content-Length: 0\r\n\r\n"
        ));
        self.expect("SIP/2.0 200")
    }

    /// A response to `request` (its Via, From, To + tag, Call-ID, CSeq).
    fn answer(&mut self, request: &str, status: &str, body: &str) {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for line in request.lines() {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            match name.as_str() {
                "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
                "to" => out.push_str(&format!("{line};tag=phoneanswer\r\n")),
                _ => {}
            }
        }
        out.push_str("Contact: <sip:100@192.168.1.20:5062>\r\nUser-Agent: LabPhone 1.0\r\n");
        if !body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(&out);
    }
}

/// Audio both ways with a registrar that echoes RTP: 50 packets from the
/// phone's `rtp` socket to the SBC's address and port in `invite`'s offer;
/// returns how many came back, each from that address and port only.
fn rtp_echoed(rtp: &std::net::UdpSocket, invite: &str) -> usize {
    use std::net::{IpAddr, SocketAddr};
    let sdp_line = |prefix: &str| {
        invite
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix} in\n{invite}"))
    };
    let media_ip: IpAddr = sdp_line("c=IN IP4 ").trim().parse().expect("c= address");
    let media_port: u16 = sdp_line("m=audio ")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("m= port");
    let to = SocketAddr::new(media_ip, media_port);
    let mut echoed = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..50u16 {
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        packet.extend_from_slice(&[0xd5; 160]);
        let _ = rtp.send_to(&packet, to);
        while let Ok((n, from)) = rtp.recv_from(&mut buf) {
            assert_eq!(from, to, "media only from the SBC's anchored port");
            if n == packet.len() {
                echoed += 1;
            }
        }
    }
    echoed
}

#[test]
fn a_phone_registers_through_the_embedded_default_and_takes_a_call() {
    phone_registers_and_takes_a_call(
        "a_phone_registers_through_the_embedded_default_and_takes_a_call",
        false,
    );
}

#[test]
fn a_phone_registers_over_tcp_and_is_called_over_its_connection() {
    phone_registers_and_takes_a_call(
        "a_phone_registers_over_tcp_and_is_called_over_its_connection",
        true,
    );
}

/// A phone registers through the embedded default's access realm (over
/// UDP, or over one TCP connection it opens), the PBX calls it, it leaves.
fn phone_registers_and_takes_a_call(name: &str, tcp: bool) {
    use std::net::{IpAddr, SocketAddr};
    use tests::netns::{in_netns_of, skip_unless_privileged};
    use tests::sipp::assert_no_leak;

    if skip_unless_privileged(name) || skip_unless_sipp(name) {
        return;
    }
    let (daemon, log) = embedded_default_daemon();
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    // The PBX (the access realm's registrar) at 127.0.0.3.
    let registrar = Sipp::shipped("registrar-calls-phone.xml")
        .local(ip("127.0.0.3"), 5060)
        .media(ip("127.0.0.3"), 16000)
        .rtp_echo()
        .calls(1)
        .timeout(Duration::from_secs(30))
        .in_netns_of(daemon.id())
        .start();
    std::thread::sleep(Duration::from_millis(300));
    let sbc = SocketAddr::new(ip("127.0.0.6"), 5060);
    let rtp = in_netns_of(daemon.id(), || {
        let r = std::net::UdpSocket::bind("127.0.0.20:7000").expect("phone RTP binds");
        r.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        r
    });
    let (socket, local) = in_netns_of(daemon.id(), move || {
        if tcp {
            let s = std::net::TcpStream::connect(sbc).expect("phone connects");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let local = s.local_addr().expect("local address");
            (
                PhoneSocket::Tcp {
                    stream: s,
                    pending: Vec::new(),
                },
                local,
            )
        } else {
            let s = std::net::UdpSocket::bind("127.0.0.20:5062").expect("phone binds");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let local = s.local_addr().expect("local address");
            (PhoneSocket::Udp(s), local)
        }
    });
    let mut phone = Phone {
        socket,
        sbc,
        seen: String::new(),
        waiting: Vec::new(),
    };
    let ok = phone.register(1, 3600);
    assert!(
        ok.contains("Contact: <sip:100@192.168.1.20:5062>;expires=120"),
        "the phone gets the access realm's short expiry:\n{ok}"
    );
    // A refresh is answered by the SBC (the registrar scenario takes one
    // REGISTER before the call, and would fail on a second).
    phone.register(2, 3600);
    // The registrar calls the Contact it was given; the INVITE reaches the
    // phone at its real address, addressed to the Contact it registered.
    let invite = phone.expect("INVITE ");
    assert!(
        invite.starts_with("INVITE sip:100@192.168.1.20:5062 SIP/2.0"),
        "{invite}"
    );
    phone.answer(&invite, "180 Ringing", "");
    let sdp = "v=0\r\no=phone 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    phone.answer(&invite, "200 OK", sdp);
    phone.expect("ACK ");
    // Audio both ways: the registrar echoes what reaches it.
    let echoed = rtp_echoed(&rtp, &invite);
    eprintln!(
        "{} phone: {echoed} of 50 RTP packets echoed back",
        phone.transport()
    );
    let bye = phone.expect("BYE ");
    phone.answer(&bye, "200 OK", "");
    assert!(
        echoed >= 40,
        "{echoed} of 50 RTP packets came back\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The phone leaves: relayed to the registrar, which takes it.
    phone.register(3, 0);
    let registrar = registrar.wait();
    registrar.assert_success(1);
    // Nothing of the phone reached the registrar, nothing of the registrar
    // reached the phone.
    let source = local.ip().to_string();
    assert_no_leak(
        &registrar.messages,
        &[
            source.as_str(),
            "192.168.1.20",
            "LabPhone",
            "phonetag",
            "phone-registration",
        ],
    );
    // (The registrar's From user, pbx, is the caller's identity: it crosses.)
    assert_no_leak(&phone.seen, &["127.0.0.3", "127.0.0.2"]);
    daemon.kill();
    let _ = std::fs::remove_file(&log);
}

#[test]
fn registered_phones_are_reached_after_a_restart() {
    use std::net::{IpAddr, SocketAddr};
    use tests::netns::{in_netns_of, skip_unless_privileged};

    const NAME: &str = "registered_phones_are_reached_after_a_restart";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let dir = std::env::temp_dir().join(format!("sbc-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("bindings.json");
    let config = dir.join("sbc.toml");
    let default = std::fs::read_to_string(tests::workspace().join("config/default.toml"))
        .expect("the embedded default");
    std::fs::write(
        &config,
        format!(
            "{default}\n[state]\nbindings_file = \"{}\"\n",
            state.display()
        ),
    )
    .expect("config");
    let args = ["--config", config.to_str().expect("utf-8 path")];
    let phone_at = |pid: u32| {
        let socket = in_netns_of(pid, || {
            let s = std::net::UdpSocket::bind("127.0.0.20:5062").expect("phone binds");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            s
        });
        Phone {
            socket: PhoneSocket::Udp(socket),
            sbc: SocketAddr::new(ip("127.0.0.6"), 5060),
            seen: String::new(),
            waiting: Vec::new(),
        }
    };

    // Before: the phone registers; the registrar learns its token.
    let (first, log) = daemon_in_private_loopback(&args);
    let registrar = Sipp::shipped("registrar.xml")
        .local(ip("127.0.0.3"), 5060)
        .calls(1)
        .timeout(Duration::from_secs(15))
        .in_netns_of(first.id())
        .start();
    std::thread::sleep(Duration::from_millis(300));
    phone_at(first.id()).register(1, 3600);
    let registrar = registrar.wait();
    registrar.assert_success(1);
    let token = registrar
        .messages
        .split("sip:")
        .find_map(|s| s.strip_prefix("reg-").map(|t| format!("reg-{}", &t[..16])))
        .expect("the registrar saw the token");
    // A clean stop saves the bindings.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let (status, killed) = first.wait(Duration::from_secs(10));
    assert!(
        !killed && status.success(),
        "the daemon stopped on SIGTERM: {status:?}"
    );
    assert!(
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains(&token)),
        "saved: {:?}",
        std::fs::read_to_string(&state)
    );
    let _ = std::fs::remove_file(&log);

    // After: a new daemon calls the phone at once, without a new REGISTER.
    let (second, log) = daemon_in_private_loopback(&args);
    let mut phone = phone_at(second.id());
    let caller = Sipp::shipped("caller.xml")
        .local(ip("127.0.0.3"), 5060)
        .media(ip("127.0.0.3"), 16000)
        .remote(SocketAddr::new(ip("127.0.0.2"), 5060))
        .service(&token)
        .calls(1)
        .timeout(Duration::from_secs(15))
        .in_netns_of(second.id())
        .start();
    let invite = phone.expect("INVITE ");
    assert!(
        invite.starts_with("INVITE sip:100@192.168.1.20:5062 SIP/2.0"),
        "{invite}"
    );
    phone.answer(&invite, "180 Ringing", "");
    let sdp = "v=0\r\no=phone 1 1 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    phone.answer(&invite, "200 OK", sdp);
    phone.expect("ACK ");
    let bye = phone.expect("BYE ");
    phone.answer(&bye, "200 OK", "");
    caller.wait().assert_success(1);
    second.kill();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The access realm behind a real NAT: a phone in its own namespace on
/// 198.51.100.20/24 reaches the SBC's access address 203.0.113.6 through a
/// router namespace that masquerades it (nftables), registers with its
/// private Contact, and takes the PBX's call with audio both ways (the
/// PBX echoes RTP) through the NAT binding its REGISTER opened.
#[test]
fn a_phone_behind_a_real_nat_registers_and_takes_a_call_with_audio() {
    phone_behind_a_real_nat(
        "a_phone_behind_a_real_nat_registers_and_takes_a_call_with_audio",
        false,
    );
}

/// As above, the phone registered over one TCP connection it opened through
/// the NAT: the call comes back over that connection.
#[test]
fn a_phone_behind_a_real_nat_over_tcp_takes_a_call_with_audio() {
    phone_behind_a_real_nat(
        "a_phone_behind_a_real_nat_over_tcp_takes_a_call_with_audio",
        true,
    );
}

fn phone_behind_a_real_nat(name: &str, tcp: bool) {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
    use tests::netns::{Netns, Side, VethPair, in_netns, skip_unless_privileged};
    use tests::sipp::assert_no_leak;

    if skip_unless_privileged(name) || skip_unless_sipp(name) {
        return;
    }
    let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
    let (phone_ns, nat_ns, sbc_ns) = (
        Netns::new("natphone"),
        Netns::new("natbox"),
        Netns::new("natsbc"),
    );
    let _home = VethPair::new(
        Side::Ns(&phone_ns),
        v4("198.51.100.20"),
        Side::Ns(&nat_ns),
        v4("198.51.100.1"),
        24,
    );
    let wan = VethPair::new(
        Side::Ns(&nat_ns),
        v4("203.0.113.1"),
        Side::Ns(&sbc_ns),
        v4("203.0.113.6"),
        24,
    );
    phone_ns.run("ip", &["route", "add", "default", "via", "198.51.100.1"]);
    nat_ns.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    nat_ns.run("nft", &["add", "table", "ip", "nat"]);
    nat_ns.run(
        "nft",
        &[
            "add",
            "chain",
            "ip",
            "nat",
            "post",
            "{ type nat hook postrouting priority 100 ; }",
        ],
    );
    nat_ns.run(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            "oifname",
            &wan.a.ifname,
            "masquerade",
        ],
    );

    // The SBC: phones on the WAN side, the PBX on its own loopback.
    let dir = std::env::temp_dir().join(format!("sbc-nat-{}-{tcp}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("sbc.toml");
    std::fs::write(
        &config,
        r#"
[metrics]
listen = "127.0.0.1:9660"
[limits]
max_calls = 100
[media]
port_min = 20000
port_max = 20999
xdp = { mode = "off", interfaces = [] }
[[realm]]
name = "access"
listen = [{ transport = "udp", address = "203.0.113.6:5060" }, { transport = "tcp", address = "203.0.113.6:5060" }]
media = { address = "203.0.113.6" }
access = { registrar = "pbx", keepalive_secs = 30 }
[[realm]]
name = "inside"
listen = [{ transport = "udp", address = "127.0.0.2:5060" }]
media = { address = "127.0.0.2" }
[[trunk]]
name = "pbx"
realm = "inside"
address = "127.0.0.3:5060"
options_interval_secs = 0
[[route]]
name = "phones"
match = { source_realm = "access" }
targets = ["pbx"]
"#,
    )
    .expect("config");
    let log = dir.join("sbc.log");
    let _daemon = sbc_ns.spawn_with_stderr(
        tests::sbc_binary(),
        &["--config", config.to_str().expect("utf-8")],
        &log,
    );
    std::thread::sleep(Duration::from_millis(500));
    let registrar = Sipp::shipped("registrar-calls-phone.xml")
        .local(IpAddr::V4(v4("127.0.0.3")), 5060)
        .media(IpAddr::V4(v4("127.0.0.3")), 16000)
        .rtp_echo()
        .calls(1)
        .timeout(Duration::from_secs(30))
        .in_netns(&sbc_ns)
        .start();
    std::thread::sleep(Duration::from_millis(300));

    let phone_ns_name = phone_ns.name().to_owned();
    let sbc = SocketAddr::new(IpAddr::V4(v4("203.0.113.6")), 5060);
    let (signaling, rtp) = in_netns(&phone_ns_name, move || {
        let s = if tcp {
            let s = std::net::TcpStream::connect(sbc).expect("phone connects");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            PhoneSocket::Tcp {
                stream: s,
                pending: Vec::new(),
            }
        } else {
            let s = UdpSocket::bind("198.51.100.20:5062").expect("phone binds");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            PhoneSocket::Udp(s)
        };
        let r = UdpSocket::bind("198.51.100.20:7000").expect("phone RTP binds");
        r.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        (s, r)
    });
    let mut phone = Phone {
        socket: signaling,
        sbc,
        seen: String::new(),
        waiting: Vec::new(),
    };
    phone.register(1, 3600);
    let invite = phone.expect("INVITE ");
    phone.answer(&invite, "180 Ringing", "");
    let sdp = "v=0\r\no=phone 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    phone.answer(&invite, "200 OK", sdp);
    phone.expect("ACK ");
    // Audio: 50 packets out through the NAT; the PBX echoes what reaches it.
    let echoed = rtp_echoed(&rtp, &invite);
    eprintln!(
        "behind NAT over {}: {echoed} of 50 RTP packets echoed back",
        phone.transport()
    );
    let bye = phone.expect("BYE ");
    phone.answer(&bye, "200 OK", "");
    phone.register(2, 0);
    let registrar = registrar.wait();
    registrar.assert_success(1);
    assert!(
        echoed >= 40,
        "{echoed} of 50 RTP packets came back through the NAT\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The registrar saw neither the phone's private nor its public address.
    assert_no_leak(
        &registrar.messages,
        &["198.51.100.20", "203.0.113.1", "203.0.113.6"],
    );
    assert_no_leak(&phone.seen, &["127.0.0.3", "127.0.0.2"]);
    let _ = std::fs::remove_dir_all(&dir);
}
