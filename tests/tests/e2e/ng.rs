//! The rtpengine "ng" control protocol end to end (issue 16): an unmodified
//! Kamailio (Debian's 5.6, its `rtpengine` module) proxies SIPp calls and
//! anchors their media on our daemon, which runs as a media-only node
//! (`[ng]`, realms with media addresses and no SIP listener).
//!
//! Everything runs in the lab's private loopback-only namespace
//! ([`Lab::peers_only`]): the daemon on its ng socket, Kamailio on a spare
//! address of the slot, the caller (`uac_pcap`, RTP played from a pcap) on
//! the carrier's address and the echoing callee on the PBX's.
//!
//! Judged by: the SDP each peer received names only our relay's address in
//! its realm; the relay's metrics count the played packets and their echoes
//! relayed; Kamailio's `$rtpstat` (an ng `query` before the BYE's `delete`)
//! prints the totals; after the BYE the ng session and its streams are gone.
// An end-to-end test is an IO shell: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use tests::kamailio::{Kamailio, Memory, rtpengine_proxy_config};
use tests::lab::{Host, Lab, Net, PEER_MEDIA_PORT, Plan, Realm, SIP_PORT};
use tests::netns::{skip_unless_privileged, skip_unless_sipp, skip_unless_tool};
use tests::sipp::{Sipp, SippResult};

use crate::xdp_lab::{XdpLab, counter, kernel_carried_the_call};

/// RTP packets the built-in `uac_pcap` plays (`g711a.pcap` and an RFC 2833
/// digit).
const UAC_PCAP_PACKETS: u64 = 236 + 10;

/// The ng port (rtpengine's usual one).
const NG_PORT: u16 = 2223;

/// A media-only daemon: two realms with media addresses, no SIP listener,
/// no trunk, no route; the ng socket on the outside realm's address.
fn daemon_toml(plan: &Plan) -> String {
    let (port_min, port_max) = plan.media_ports();
    format!(
        "[ng]\nlisten = \"{ng}\"\nlisten_tcp = \"{ng}\"\n\n\
         [metrics]\nlisten = \"{admin}\"\n\n\
         [logging]\nlevel = \"debug\"\n\n[limits]\nmax_calls = 20\n\n\
         [media]\nport_min = {port_min}\nport_max = {port_max}\n\
         xdp = {{ mode = \"off\", interfaces = [] }}\n\n\
         [[realm]]\nname = \"outside\"\nmedia = {{ address = \"{outside}\" }}\n\n\
         [[realm]]\nname = \"inside\"\nmedia = {{ address = \"{inside}\" }}\n",
        ng = SocketAddr::new(plan.realm_ip(Realm::Outside), NG_PORT),
        admin = plan.admin(),
        outside = plan.realm_ip(Realm::Outside),
        inside = plan.realm_ip(Realm::Inside),
    )
}

/// [`metric`] polled until `done` holds or 3 s passed (relay totals are
/// exported every second); the last value.
fn metric_until(lab: &Lab, series: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let value = lab.metric(series);
        if done(value) || Instant::now() >= deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The `c=` addresses in SDP a peer received (its own left out).
fn connections(result: &SippResult, own: IpAddr) -> Vec<String> {
    let own = own.to_string();
    result
        .messages
        .lines()
        .filter_map(|l| l.strip_prefix("c=IN IP4 "))
        .map(|ip| ip.trim().to_owned())
        .filter(|ip| *ip != own)
        .collect()
}

#[test]
fn kamailio_with_its_rtpengine_module_anchors_calls_on_our_relay() {
    const NAME: &str = "kamailio_with_its_rtpengine_module_anchors_calls_on_our_relay";
    if skip_unless_privileged(NAME)
        || skip_unless_sipp(NAME)
        || skip_unless_tool(NAME, "kamailio", "-v", "apt-get install kamailio")
    {
        return;
    }
    let mut lab = Lab::peers_only("ng");
    let plan = *lab.plan();
    lab.start_daemon(&daemon_toml(&plan));
    let ng = SocketAddr::new(plan.realm_ip(Realm::Outside), NG_PORT);
    let proxy = SocketAddr::new(plan.spare_ip(0), SIP_PORT);
    let kamailio = Kamailio::start_with(
        lab.net(),
        lab.dir(),
        proxy,
        &rtpengine_proxy_config(proxy, 1, ng, plan.host(Host::Pbx)),
        Memory {
            shm_mb: 32,
            pkg_mb: 4,
        },
    );
    // The module pinged us at start: a relay it took as down would fail
    // every offer.
    assert_eq!(
        lab.metric("sbc_ng_commands_total{command=\"ping\",result=\"pong\"}"),
        1,
        "{}",
        kamailio.log()
    );

    let (pbx, carrier) = (plan.host_ip(Host::Pbx), plan.host_ip(Host::Carrier));
    let callee = lab.start_callee(
        &lab.net().place(
            Sipp::builtin("uas")
                .local(pbx, SIP_PORT)
                .media(pbx, PEER_MEDIA_PORT)
                .rtp_echo()
                .timeout(Duration::from_secs(20)),
        ),
    );
    let caller = lab
        .net()
        .place(
            Sipp::builtin("uac_pcap")
                .local(carrier, SIP_PORT)
                .media(carrier, PEER_MEDIA_PORT)
                .remote(proxy)
                .timeout(Duration::from_secs(20)),
        )
        .run();
    let callee = lab.finish_callee(&caller, callee);
    let context = || {
        format!(
            "{}\n{}\nkamailio:\n{}\nsbc:\n{}",
            caller.report(),
            callee.report(),
            kamailio.log(),
            lab.daemon_stderr()
        )
    };
    caller.assert_success(1);
    callee.assert_success(1);

    // Each side's SDP names our relay in its realm, nothing of the other.
    let inside = plan.realm_ip(Realm::Inside).to_string();
    let outside = plan.realm_ip(Realm::Outside).to_string();
    let callee_saw = connections(&callee, pbx);
    assert!(
        !callee_saw.is_empty() && callee_saw.iter().all(|ip| *ip == inside),
        "the callee's SDP names {callee_saw:?}, not only {inside}\n{}",
        context()
    );
    let caller_saw = connections(&caller, carrier);
    assert!(
        !caller_saw.is_empty() && caller_saw.iter().all(|ip| *ip == outside),
        "the caller's SDP names {caller_saw:?}, not only {outside}\n{}",
        context()
    );

    // Every played packet to the callee and its echo back (the last echoes
    // may still be on their way when the BYE releases the stream).
    let relayed = metric_until(&lab, "sbc_media_packets_total{path=\"userspace\",", |v| {
        v >= 2 * UAC_PCAP_PACKETS - 2
    });
    assert!(
        (2 * UAC_PCAP_PACKETS - 2..=2 * UAC_PCAP_PACKETS).contains(&relayed),
        "{relayed} packets relayed, want about {}\n{}",
        2 * UAC_PCAP_PACKETS,
        context()
    );

    // Kamailio's query before the delete saw the totals (rtpengine's shape:
    // totals.RTP.packets), which its $rtpstat prints.
    let log = kamailio.log();
    let packets: u64 = log
        .lines()
        .find_map(|l| l.split("ngstat RTP: ").nth(1))
        .and_then(|rest| rest.split(" bytes, ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no $rtpstat line in Kamailio's log\n{}", context()));
    assert!(
        (UAC_PCAP_PACKETS..=2 * UAC_PCAP_PACKETS).contains(&packets),
        "$rtpstat saw {packets} packets\n{}",
        context()
    );

    // The BYE deleted the session and released its streams.
    let series = |command: &str, result: &str| {
        format!("sbc_ng_commands_total{{command=\"{command}\",result=\"{result}\"}}")
    };
    for command in ["offer", "answer", "delete"] {
        assert_eq!(
            lab.metric(&series(command, "ok")),
            1,
            "{command}\n{}",
            context()
        );
    }
    assert!(lab.metric(&series("query", "ok")) >= 1, "{}", context());
    assert_eq!(lab.metric("sbc_ng_sessions"), 0, "{}", context());
    let active = metric_until(&lab, "sbc_media_streams_active{path=\"userspace\"}", |v| {
        v == 0
    });
    assert_eq!(
        active,
        0,
        "streams still anchored after the BYE\n{}",
        context()
    );
    for reason in ["source_mismatch", "malformed", "send_failed"] {
        assert_eq!(
            lab.metric(&format!("sbc_media_dropped_total{{reason=\"{reason}\"}}")),
            0,
            "{reason}\n{}",
            context()
        );
    }
    lab.assert_daemon_healthy();
}

/// The same Kamailio and call over real interfaces with the XDP program
/// attached ([`XdpLab`]: the caller and the callee in namespaces of their
/// own behind veths, our daemon and Kamailio in the SBC's namespace, ng on
/// its loopback). After the first packets latch in userspace the kernel
/// forwards the rest, as for calls of our own B2BUA.
#[test]
fn kamailio_anchors_calls_on_our_xdp_fast_path() {
    const NAME: &str = "kamailio_anchors_calls_on_our_xdp_fast_path";
    if skip_unless_privileged(NAME)
        || skip_unless_sipp(NAME)
        || skip_unless_tool(NAME, "kamailio", "-v", "apt-get install kamailio")
    {
        return;
    }
    let ng: SocketAddr = "127.0.0.1:2223".parse().expect("addr");
    let lab = XdpLab::start_with("ng-xdp", |out_if, in_if, _dir| {
        format!(
            "[ng]\nlisten = \"{ng}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:9660\"\n\n\
             [logging]\nlevel = \"info\"\n\n[limits]\nmax_calls = 20\n\n\
             [media]\nport_min = 30000\nport_max = 30999\n\
             xdp = {{ mode = \"generic\", interfaces = [\"{out_if}\", \"{in_if}\"] }}\n\n\
             [[realm]]\nname = \"outside\"\nmedia = {{ address = \"198.51.100.1\" }}\n\n\
             [[realm]]\nname = \"inside\"\nmedia = {{ address = \"203.0.113.1\" }}\n"
        )
    });
    // Kamailio listens on the outside address only and reaches the callee
    // from it: the callee's namespace routes that network back through the
    // SBC's.
    lab.callee.run(
        "ip",
        &["route", "add", "198.51.100.0/24", "via", "203.0.113.1"],
    );
    let proxy: SocketAddr = "198.51.100.1:5060".parse().expect("addr");
    let callee_sip: SocketAddr = "203.0.113.10:5060".parse().expect("addr");
    let sbc_net = Net::inside(&lab.sbc);
    let kamailio_dir = std::env::temp_dir().join(format!("sbc-ng-xdp-{}", std::process::id()));
    let kamailio = Kamailio::start_with(
        &sbc_net,
        &kamailio_dir,
        proxy,
        &rtpengine_proxy_config(proxy, 1, ng, callee_sip),
        Memory {
            shm_mb: 32,
            pkg_mb: 4,
        },
    );
    let callee = Sipp::builtin("uas")
        .local(callee_sip.ip(), SIP_PORT)
        .media(callee_sip.ip(), PEER_MEDIA_PORT)
        .rtp_echo()
        .timeout(Duration::from_secs(30))
        .in_netns(&lab.callee)
        .start();
    thread::sleep(Duration::from_millis(300));
    let caller = Sipp::builtin("uac_pcap")
        .local("198.51.100.10".parse().expect("ip"), SIP_PORT)
        .media("198.51.100.10".parse().expect("ip"), 17000)
        .remote(proxy)
        .timeout(Duration::from_secs(30))
        .in_netns(&lab.caller)
        .run();
    let callee = callee.wait();
    let kamailio_log = kamailio.log();
    drop(kamailio);
    drop(sbc_net);
    let _ = std::fs::remove_dir_all(&kamailio_dir);
    let stopped = lab.stop();
    let metrics = &stopped.metrics;
    let context = || {
        format!(
            "{}\n{}\nkamailio:\n{kamailio_log}\nsbc:\n{}",
            caller.report(),
            callee.report(),
            stopped.log
        )
    };
    assert!(
        caller.successful() == 1 && callee.successful() == 1,
        "the call failed\n{}",
        context()
    );
    for command in ["offer", "answer", "delete"] {
        assert_eq!(
            counter(
                metrics,
                &format!("sbc_ng_commands_total{{command=\"{command}\",result=\"ok\"}}")
            ),
            1,
            "{command}\n{}",
            context()
        );
    }
    // The xdp lab's own checks.
    kernel_carried_the_call(metrics, "ng over XDP", &context());
    assert!(
        counter(metrics, "sbc_ng_sessions ") == 0,
        "the BYE's delete ended the session\n{metrics}"
    );
}
