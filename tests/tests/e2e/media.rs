//! The media plane end to end: calls with and without RTP through the real
//! `sbc` daemon's userspace relay, between SIPp peers (issue 4, item 6).
//!
//! Each test runs its own lab ([`Lab::start`]: the daemon in a private
//! loopback-only namespace with addresses of its own, see `tests::lab`), with
//! a CDR file for the call's hangup fields. RTP comes from SIPp's
//! `play_pcap_audio` (the built-in `uac_pcap`, or `caller-hold-rtp.xml`)
//! playing Debian's `/usr/share/sip-tester` pcaps; SIPp plays pcaps on a raw
//! socket, so those tests need root and are marked with
//! [`skip_unless_privileged`]. The callee echoes RTP (`-rtp_echo`) to where
//! it came from.
//!
//! What a peer received and from where is judged without a packet capture
//! (none is installed in CI): the SDP each peer saw names only its own
//! realm's media address; the relay's metrics count what it relayed and
//! dropped; and the callee's echo proves where the callee's packets came
//! from: it answers to their source, and the relay accepts an echo only on
//! the callee leg's own anchored socket from the callee's address (on any
//! other anchored socket it is a `source_mismatch` drop). So "every packet
//! and its echo relayed, nothing dropped" means everything the callee
//! received came from the SBC's inside address. The relay's metrics also
//! split it per realm (each packet counts under the realm it arrived from),
//! and the CDR says which path carried it.
//!
//! Every peer, wait and sending loop is bounded; the only traffic is on the
//! lab namespace's loopback.
// An end-to-end test is an IO shell: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::lab::{Host, Lab, LabConfig, PEER_MEDIA_PORT, Plan, Realm};
use tests::netns::{skip_unless_privileged, skip_unless_sipp, wait_with_deadline};
use tests::sipp::{Sipp, SippResult};

/// RTP packets in `g711a.pcap` (what `caller-hold-rtp.xml` plays).
const PCAP_PACKETS: u64 = 236;

/// RTP packets the built-in `uac_pcap` plays: `g711a.pcap`, then the 10 of
/// `dtmf_2833_1.pcap` (an RFC 2833 digit).
const UAC_PCAP_PACKETS: u64 = PCAP_PACKETS + 10;

/// The bound of every SIPp peer: well above the slowest call here (about
/// 10 s), so hitting it is a failure, never the way a test ends.
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the daemon may take to write a call's CDR once the call ended.
const CDR_TIMEOUT: Duration = Duration::from_secs(5);

/// Packets the injector sends.
const INJECTED: u64 = 50;

/// A CDR file of this test's own, outside the lab directory (which exists
/// only once the lab has started, after its configuration is written).
fn cdr_path(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("sbc-media-{name}-{}.cdr.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A lab whose daemon writes CDRs to `cdr`, with `[media]
/// inactivity_timeout_secs` when given.
fn start_lab(name: &str, cdr: &Path, inactivity_timeout_secs: Option<u32>) -> Lab {
    Lab::start(
        name,
        &LabConfig {
            media_inactivity_timeout_secs: inactivity_timeout_secs,
            cdr_path: Some(cdr.to_path_buf()),
            ..LabConfig::default()
        },
    )
}

/// SIPp's built-in scenario `name` on `host`, placed in the lab's network.
fn builtin_peer(lab: &Lab, name: &str, host: Host) -> Sipp {
    let ip = lab.plan().host_ip(host);
    lab.net().place(
        Sipp::builtin(name)
            .local(ip, tests::lab::SIP_PORT)
            .media(ip, PEER_MEDIA_PORT)
            .timeout(PEER_TIMEOUT),
    )
}

/// The carrier playing the pcaps at the SBC (`uac_pcap`: INVITE, ACK,
/// [`UAC_PCAP_PACKETS`] RTP packets, BYE).
fn pcap_caller(lab: &Lab) -> Sipp {
    builtin_peer(lab, "uac_pcap", Host::Carrier).remote(lab.plan().realm(Realm::Outside))
}

/// The PBX answering and echoing RTP (`uas -rtp_echo`).
fn echo_callee(lab: &Lab) -> Sipp {
    builtin_peer(lab, "uas", Host::Pbx).rtp_echo()
}

/// The one CDR of the lab's call (the daemon writes it once the relay
/// reported the call's streams released, at the latest when it stops).
fn read_cdr(path: &Path) -> Value {
    let deadline = Instant::now() + CDR_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if let [line] = records.as_slice() {
            let _ = std::fs::remove_file(path);
            return serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("CDR line is not JSON ({e}): {line}"));
        }
        assert!(
            records.len() <= 1 && Instant::now() < deadline,
            "expected one CDR in {} within {CDR_TIMEOUT:?}, found {}:\n{text}",
            path.display(),
            records.len(),
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// [`metric`], polled until it reaches `at_least` or 3 s have passed (the
/// daemon exports relay totals on a one-second cadence); the last value.
fn metric_at_least(lab: &Lab, series: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let value = lab.metric(series);
        if value >= at_least || Instant::now() >= deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Panics unless every SDP connection line the peer on `host` received
/// names the SBC's media address in that peer's realm (and there is one).
fn assert_media_anchored(lab: &Lab, result: &SippResult, host: Host) {
    let own = lab.plan().realm_ip(Plan::realm_of(host)).to_string();
    let mine = lab.plan().host_ip(host).to_string();
    let seen: Vec<&str> = result
        .messages
        .lines()
        .filter_map(|l| l.strip_prefix("c=IN IP4 "))
        .map(str::trim)
        .filter(|ip| *ip != mine)
        .collect();
    assert!(
        !seen.is_empty() && seen.iter().all(|ip| *ip == own),
        "SDP received on {host:?} names {seen:?}, not only the SBC's media address {own}\n{}",
        result.report()
    );
}

/// Relayed media packets, both directions: the sum over the realms (each
/// counts what its legs received).
const RELAYED: &str = "sbc_media_packets_total{path=\"userspace\",";

/// Relayed media packets received on the caller's realm's legs.
const RELAYED_OUTSIDE: &str = "sbc_media_packets_total{path=\"userspace\",realm=\"outside\"}";

/// Relayed media packets received on the callee's realm's legs.
const RELAYED_INSIDE: &str = "sbc_media_packets_total{path=\"userspace\",realm=\"inside\"}";

/// What a call whose caller plays `played` RTP packets through the echoing
/// callee relays: each packet to the callee and its echo back, at most 2
/// fewer (the last echoes may still be on their way when the BYE releases
/// the stream).
fn call_packets(played: u64) -> std::ops::RangeInclusive<u64> {
    2 * played - 2..=2 * played
}

/// Panics unless no media packet was dropped, for any reason.
fn assert_nothing_dropped(lab: &Lab) {
    for reason in ["source_mismatch", "malformed", "send_failed"] {
        assert_eq!(
            lab.metric(&format!("sbc_media_dropped_total{{reason=\"{reason}\"}}")),
            0,
            "{reason} drops"
        );
    }
}

#[test]
fn a_silent_call_ends_by_the_media_timeout() {
    const NAME: &str = "a_silent_call_ends_by_the_media_timeout";
    if skip_unless_sipp(NAME) {
        return;
    }
    let cdr = cdr_path("silent");
    let lab = start_lab("silent", &cdr, Some(2));
    // Neither peer sends RTP, and neither hangs up: each waits for a BYE,
    // which only the SBC's media timeout can send.
    let uas = lab.start_callee(&builtin_peer(&lab, "uas", Host::Pbx));
    let uac = lab
        .peer("caller-wait-bye.xml", Host::Carrier)
        .remote(lab.plan().realm(Realm::Outside))
        .timeout(PEER_TIMEOUT)
        .run();
    let uas = lab.finish_callee(&uac, uas);
    eprintln!(
        "silent call: the caller got the SBC's BYE and finished after {:?}",
        uac.elapsed
    );
    uac.assert_success(1);
    uas.assert_success(1);
    assert_eq!(uac.requests("BYE"), 1, "{}", uac.report());
    assert_eq!(uas.requests("BYE"), 1, "{}", uas.report());
    // Not before the timeout, and well before any peer bound: the caller's
    // run is the call (about 0.3 s), the timeout (2 s), the relay's timer
    // cadence and its 0.5 s timewait.
    assert!(
        uac.elapsed >= Duration::from_secs(2) && uac.elapsed < Duration::from_secs(8),
        "the SBC's BYE reached the caller after {:?}, not 2-8 s\n{}",
        uac.elapsed,
        uac.report()
    );
    assert_eq!(lab.metric("sbc_media_timeouts_total"), 1);
    assert_eq!(lab.metric(RELAYED), 0, "media relayed on a silent call");
    lab.shutdown();
    let record = read_cdr(&cdr);
    assert_eq!(record["hangup_by"], "sbc", "CDR {record}");
    assert_eq!(record["hangup_reason"], "media_timeout", "CDR {record}");
    assert_eq!(record["outcome"], "answered", "CDR {record}");
}

#[test]
fn media_reaches_each_peer_from_its_realm_address_and_counts_match() {
    const NAME: &str = "media_reaches_each_peer_from_its_realm_address_and_counts_match";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let cdr = cdr_path("rtp");
    let lab = start_lab("rtp", &cdr, None);
    let uas = lab.start_callee(&echo_callee(&lab));
    let uac = pcap_caller(&lab).run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    // Each peer was told to send its media to the SBC's address of its own
    // realm, and to nothing else.
    assert_media_anchored(&lab, &uac, Host::Carrier);
    assert_media_anchored(&lab, &uas, Host::Pbx);

    // Every packet the caller played reached the callee and every echo the
    // caller, and nothing was dropped: in particular no echo arrived on a
    // socket other than the callee leg's, so everything the callee received
    // came from the SBC's inside address (see the module docs).
    let expected = call_packets(UAC_PCAP_PACKETS);
    let relayed = metric_at_least(&lab, RELAYED, *expected.start());
    eprintln!("media: {relayed} packets relayed for {UAC_PCAP_PACKETS} played and echoed");
    assert!(
        expected.contains(&relayed),
        "{relayed} packets relayed, expected {expected:?}"
    );
    // Each packet counts under the realm it arrived from: the caller's
    // under outside, the callee's echoes under inside.
    let (outside, inside) = (lab.metric(RELAYED_OUTSIDE), lab.metric(RELAYED_INSIDE));
    assert_eq!(outside, UAC_PCAP_PACKETS, "received from the caller");
    assert!(
        (UAC_PCAP_PACKETS - 2..=UAC_PCAP_PACKETS).contains(&inside),
        "{inside} echoes received from the callee, expected about {UAC_PCAP_PACKETS}"
    );
    assert_eq!(
        lab.metric("sbc_media_packets_total{path=\"xdp\","),
        0,
        "no XDP in this lab"
    );
    assert_nothing_dropped(&lab);
    lab.shutdown();
    let record = read_cdr(&cdr);
    assert_eq!(record["media_path"], "userspace", "CDR {record}");
    assert_eq!(record["hangup_by"], "caller", "CDR {record}");
}

#[test]
fn media_flows_after_a_hold_and_resume() {
    const NAME: &str = "media_flows_after_a_hold_and_resume";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let cdr = cdr_path("hold");
    let lab = start_lab("hold", &cdr, None);
    let uas = lab.start_callee(&lab.peer("callee-hold.xml", Host::Pbx).rtp_echo());
    let uac = lab
        .peer("caller-hold-rtp.xml", Host::Carrier)
        .remote(lab.plan().realm(Realm::Outside))
        .timeout(PEER_TIMEOUT)
        .start();
    // The caller plays its pcap only once the resume is ACKed (CSeq 3).
    let messages = uac.dir().join("messages.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&messages)
        .unwrap_or_default()
        .contains("CSeq: 3 ACK")
    {
        assert!(
            Instant::now() < deadline,
            "the caller did not resume within 10 s; its log is in {}",
            uac.dir().display()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let before = lab.metric(RELAYED);
    let uac = uac.wait();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    assert_eq!(uas.requests("INVITE"), 3, "{}", uas.report());
    assert_media_anchored(&lab, &uac, Host::Carrier);
    assert_media_anchored(&lab, &uas, Host::Pbx);

    // All of the pcap and its echo crossed the stream after the resume.
    let expected = call_packets(PCAP_PACKETS);
    let after = metric_at_least(&lab, RELAYED, before + *expected.start());
    eprintln!("hold/resume: {before} packets relayed before the resume, {after} after");
    assert!(
        expected.contains(&(after - before)),
        "{} packets relayed after the resume ({before} before, {after} after), expected {expected:?}",
        after - before
    );
    assert_nothing_dropped(&lab);
    lab.shutdown();
    let record = read_cdr(&cdr);
    assert_eq!(record["hangup_by"], "caller", "CDR {record}");
}

/// The SBC's anchored RTP port towards the caller, from the first SDP the
/// caller received that names one in the plan's media range (the caller's
/// own offer names its own port, outside it).
pub(crate) fn anchored_port(lab: &Lab, messages: &str) -> Option<u16> {
    let (min, max) = lab.plan().media_ports();
    messages
        .lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u16>().ok())
        .find(|port| (min..=max).contains(port))
}

/// Sends [`INJECTED`] RTP-looking datagrams (version 2, PCMA, an SSRC the
/// caller does not use) to `port` on the SBC's outside address, from the
/// lab network's 127.0.0.1, which is neither the caller's SDP nor its
/// signaling address. bash's `/dev/udp` sends each `printf` as one
/// datagram from one socket; the whole run is bounded to 5 s.
fn inject(lab: &Lab, port: u16) {
    let script = format!(
        "exec 3>/dev/udp/{ip}/{port} || exit 1; \
         for i in $(seq 1 {INJECTED}); do \
         printf '\\x80\\x08\\x00\\x01\\x00\\x00\\x00\\x00\\xde\\xad\\xbe\\xefinjected-by-the-test' >&3 \
         || exit 1; done",
        ip = lab.plan().realm_ip(Realm::Outside),
    );
    let mut child = lab
        .net()
        .command("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn the injector: {e}"));
    let (status, killed) = wait_with_deadline(&mut child, Duration::from_secs(5));
    assert!(
        status.success() && !killed,
        "the injector failed ({status}, killed: {killed})"
    );
}

#[test]
fn rtp_injected_by_a_third_party_is_not_relayed() {
    const NAME: &str = "rtp_injected_by_a_third_party_is_not_relayed";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let cdr = cdr_path("inject");
    let lab = start_lab("inject", &cdr, None);
    let uas = lab.start_callee(&echo_callee(&lab));
    let uac = pcap_caller(&lab).start();
    // Wait for the SBC's answer in the caller's log, then a moment more so
    // the caller's stream is latched and playing when the injection comes.
    let messages = uac.dir().join("messages.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let port = loop {
        let log = std::fs::read_to_string(&messages).unwrap_or_default();
        if let Some(port) = anchored_port(&lab, &log) {
            break port;
        }
        assert!(
            Instant::now() < deadline,
            "no SDP answer from the SBC in the caller's log within 5 s: {}",
            uac.dir().display()
        );
        thread::sleep(Duration::from_millis(20));
    };
    thread::sleep(Duration::from_millis(500));
    inject(&lab, port);
    let uac = uac.wait();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);

    // Exported live, within a second of the drops.
    let dropped = metric_at_least(
        &lab,
        "sbc_media_dropped_total{reason=\"source_mismatch\"}",
        INJECTED,
    );
    // Had the injected packets been relayed, the callee would have got (and
    // echoed) them too: 2 x 50 more.
    let expected = call_packets(UAC_PCAP_PACKETS);
    let relayed = metric_at_least(&lab, RELAYED, *expected.start());
    eprintln!("injection at port {port}: {dropped} dropped, {relayed} relayed");
    assert!(
        dropped >= INJECTED,
        "{dropped} source_mismatch drops for {INJECTED} injected packets"
    );
    assert!(
        expected.contains(&relayed),
        "{relayed} packets relayed, expected only the call's own {expected:?}"
    );
    lab.shutdown();
    let record = read_cdr(&cdr);
    assert_eq!(record["hangup_by"], "caller", "CDR {record}");
}

/// An integer field of a CDR.
fn field(cdr: &Value, key: &str) -> u64 {
    cdr.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("CDR has no integer `{key}`: {cdr}"))
}

#[test]
fn the_cdr_counts_each_legs_media_right_after_the_call() {
    const NAME: &str = "the_cdr_counts_each_legs_media_right_after_the_call";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let cdr = cdr_path("cdr-counts");
    let lab = start_lab("cdr-counts", &cdr, None);
    let uas = lab.start_callee(&echo_callee(&lab));
    let uac = pcap_caller(&lab).run();
    let uas = lab.finish_callee(&uac, uas);
    uac.assert_success(1);
    uas.assert_success(1);
    // Within CDR_TIMEOUT of the call's end, with the daemon still up.
    let record = read_cdr(&cdr);
    let from_caller = field(&record, "in_rx_packets");
    let from_callee = field(&record, "out_rx_packets");
    assert_eq!(from_caller, UAC_PCAP_PACKETS, "CDR {record}");
    assert_eq!(
        field(&record, "out_tx_packets"),
        from_caller,
        "CDR {record}"
    );
    assert!(
        from_callee <= from_caller && from_callee + 2 >= from_caller,
        "echoes: CDR {record}"
    );
    assert_eq!(field(&record, "in_tx_packets"), from_callee, "CDR {record}");
    lab.shutdown();
}

/// The second address of the caller's multi-homed host, in its realm's
/// network (`127.0.n.8/29`) but neither its SDP's nor its signaling's.
fn second_nic(lab: &Lab) -> std::net::IpAddr {
    let IpAddr::V4(carrier) = lab.plan().host_ip(Host::Carrier) else {
        unreachable!("the plan is IPv4")
    };
    let [a, b, c, _] = carrier.octets();
    IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 9))
}

/// What [`caller_sending_from`] saw.
struct Multihomed {
    /// RTP packets the test sent from the second address.
    sent: u64,
    /// Echoes relayed back to it.
    echoed: u64,
    /// When the SBC's answer reached the caller.
    answered: Instant,
    /// When `sbc_media_not_latched_total{realm="outside"}` first read 1.
    reported: Option<Instant>,
    /// The caller's Call-ID.
    call_id: String,
    /// The call's record.
    cdr: Value,
    /// The daemon's log.
    log: String,
}

/// A call from a caller whose RTP leaves from [`second_nic`] (a softphone
/// bound to 0.0.0.0 on a multi-homed host): the outside realm has
/// `networks = ["127.0.n.8/29"]` and, when `learn`, `latch_from_networks`.
fn multihomed_caller(name: &str, learn: bool) -> Multihomed {
    caller_sending_from(name, Some(learn), "callee.xml", |lab| {
        SocketAddr::new(second_nic(lab), PEER_MEDIA_PORT)
    })
}

/// A call whose caller (`caller-long.xml`, up 4 s after the answer) sends
/// no RTP itself: the test does, from `source`, every 20 ms for 3.5 s from
/// the answer, to the caller leg's anchored port, and counts the echoes of
/// the callee (`callee`, with `-rtp_echo`) that come back, polling the
/// not-latched counter as it goes. With `learn`, the outside realm gets
/// `networks = ["127.0.n.8/29"]` and `latch_from_networks = learn`.
fn caller_sending_from(
    name: &str,
    learn: Option<bool>,
    callee: &str,
    source: impl Fn(&Lab) -> SocketAddr,
) -> Multihomed {
    let cdr = cdr_path(name);
    let plan = Plan::next();
    let outside_ip = plan.realm_ip(Realm::Outside);
    let IpAddr::V4(v4) = outside_ip else {
        unreachable!("the plan is IPv4")
    };
    let [a, b, c, _] = v4.octets();
    let base = plan.toml(&LabConfig {
        cdr_path: Some(cdr.clone()),
        ..LabConfig::default()
    });
    let media = format!("media = {{ address = \"{outside_ip}\" }}\n");
    let extra = match learn {
        Some(learn) => {
            format!("{media}networks = [\"{a}.{b}.{c}.8/29\"]\nlatch_from_networks = {learn}\n")
        }
        None => media.clone(),
    };
    assert!(base.contains(&media), "no outside media line in\n{base}");
    let lab = Lab::start_toml(name, plan, &base.replacen(&media, &extra, 1));
    let uas = lab.start_callee(&lab.peer(callee, Host::Pbx).rtp_echo());
    let uac = lab
        .peer("caller-long.xml", Host::Carrier)
        .remote(lab.plan().realm(Realm::Outside))
        .timeout(PEER_TIMEOUT)
        .start();
    let messages = uac.dir().join("messages.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (port, call_id) = loop {
        let log = std::fs::read_to_string(&messages).unwrap_or_default();
        if let Some(port) = anchored_port(&lab, &log) {
            let call_id = log
                .lines()
                .find_map(|l| l.strip_prefix("Call-ID: "))
                .map(|id| id.trim().to_owned())
                .unwrap_or_default();
            break (port, call_id);
        }
        assert!(
            Instant::now() < deadline,
            "no SDP answer from the SBC in the caller's log within 5 s: {}",
            uac.dir().display()
        );
        thread::sleep(Duration::from_millis(10));
    };
    let answered = Instant::now();
    let socket = lab.net().udp_socket(source(&lab));
    socket
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("non-blocking socket: {e}"));
    let to = SocketAddr::new(outside_ip, port);
    let (mut sent, mut echoed, mut reported) = (0u64, 0u64, None);
    let mut buf = [0u8; 2048];
    let mut next_poll = answered;
    for seq in 0u16..175 {
        // PCMU, SSRC 0x5eed0001, 160 bytes of silence.
        let mut rtp = vec![0x80, 0x00];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
        rtp.resize(12 + 160, 0xff);
        if socket.send_to(&rtp, to).is_ok() {
            sent += 1;
        }
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            echoed += u64::from(n == rtp.len());
        }
        if reported.is_none() && Instant::now() >= next_poll {
            next_poll += Duration::from_millis(250);
            if lab.metric("sbc_media_not_latched_total{realm=\"outside\"}") > 0 {
                reported = Some(Instant::now());
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(100));
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        echoed += u64::from(n == 172);
    }
    let uac = uac.wait();
    let uas = lab.finish_callee(&uac, uas);
    // Never hung up by the SBC: the caller's own BYE ends the call.
    uac.assert_success(1);
    uas.assert_success(1);
    let log = lab.daemon_stderr();
    lab.shutdown();
    Multihomed {
        sent,
        echoed,
        answered,
        reported,
        call_id,
        cdr: read_cdr(&cdr),
        log,
    }
}

#[test]
fn a_multihomed_caller_is_latched_from_its_realms_networks() {
    const NAME: &str = "a_multihomed_caller_is_latched_from_its_realms_networks";
    if skip_unless_sipp(NAME) {
        return;
    }
    let call = multihomed_caller("multihomed-learn", true);
    eprintln!(
        "latch_from_networks: {} sent from the second address, {} echoed back",
        call.sent, call.echoed
    );
    // The last few echoes may still be on their way at the BYE.
    assert!(
        call.echoed + 5 >= call.sent && call.sent > 150,
        "{} of {} packets came back",
        call.echoed,
        call.sent
    );
    assert_eq!(call.reported, None, "reported although it latched");
    assert_eq!(
        call.cdr["media_not_latched"],
        serde_json::json!([]),
        "CDR {}",
        call.cdr
    );
    assert_eq!(call.cdr["hangup_by"], "caller", "CDR {}", call.cdr);
}

#[test]
fn a_multihomed_caller_under_strict_latching_is_reported_within_seconds() {
    const NAME: &str = "a_multihomed_caller_under_strict_latching_is_reported_within_seconds";
    if skip_unless_sipp(NAME) {
        return;
    }
    let call = multihomed_caller("multihomed-strict", false);
    let after = call.reported.map(|at| at - call.answered);
    eprintln!(
        "strict: {} sent, {} echoed, reported {after:?} after the answer",
        call.sent, call.echoed
    );
    assert_eq!(
        call.echoed, 0,
        "media from an unlearnable source was relayed"
    );
    // The learning window (2 s from the answer), then the next refused
    // packet, then the one-second metrics cadence at most.
    let after = after.unwrap_or_else(|| {
        panic!(
            "not reported during the call; the daemon's log:\n{}",
            call.log
        )
    });
    assert!(
        after >= Duration::from_millis(1_500) && after <= Duration::from_millis(3_500),
        "reported {after:?} after the answer, not within the window and a second or so"
    );
    let warning = call
        .log
        .lines()
        .find(|l| l.contains("may not learn"))
        .unwrap_or_else(|| panic!("no warning in the daemon's log:\n{}", call.log));
    assert!(
        !call.call_id.is_empty() && warning.contains(&call.call_id),
        "the warning does not name the caller's Call-ID {:?}: {warning}",
        call.call_id
    );
    assert_eq!(
        call.cdr["media_not_latched"],
        serde_json::json!(["in"]),
        "CDR {}",
        call.cdr
    );
    // The call stayed up until the caller hung up.
    assert_eq!(call.cdr["hangup_by"], "caller", "CDR {}", call.cdr);
}

#[test]
fn a_natted_caller_latches_when_it_sends_after_a_long_ringing() {
    const NAME: &str = "a_natted_caller_latches_when_it_sends_after_a_long_ringing";
    if skip_unless_sipp(NAME) {
        return;
    }
    // The callee rings 3 s, past the 2 s learning window its offer opened;
    // the caller sends from its own IP but another port (a NAT's mapping),
    // only once the answer names the SBC's port. Strict latching, the
    // embedded default: the answer gives the caller its window.
    let call = caller_sending_from("ringing", None, "callee-rings.xml", |lab| {
        SocketAddr::new(lab.plan().host_ip(Host::Carrier), PEER_MEDIA_PORT + 10)
    });
    eprintln!(
        "after 3 s of ringing: {} sent from a NAT port, {} echoed back",
        call.sent, call.echoed
    );
    assert!(
        call.echoed + 5 >= call.sent && call.sent > 150,
        "{} of {} packets came back",
        call.echoed,
        call.sent
    );
    assert_eq!(call.reported, None, "reported although it latched");
    assert_eq!(
        call.cdr["media_not_latched"],
        serde_json::json!([]),
        "CDR {}",
        call.cdr
    );
}
