//! Edge protection end to end: the real `sbc` daemon, SIPp trunks, and the
//! test itself playing strangers from raw UDP sockets in the lab's private
//! loopback namespace ([`Net::udp_socket`](tests::lab::Net::udp_socket)).
//!
//! In the lab's plan only the trunks' addresses (127.0.n.3-5) are trusted;
//! every stranger here sends from another loopback address (127.0.n.9, or
//! 127.1.x.y for the many-source flood), so it is guarded: limited per
//! source, refused in dialogs it is not a peer of, and (with the
//! transport's shield) rate-limited and banned.
//!
//! What each test proves:
//! - a forged BYE, re-INVITE and CANCEL carrying a call's real Call-ID and
//!   tags, from a stranger on either side, and the caller's own BYE sent to
//!   the other realm's listener, each get one `403` and change nothing: the
//!   call ends normally later, and `foreign_in_dialog` counts them;
//! - a scanner (`User-Agent: friendly-scanner`, and `svmap`/`svwar` when
//!   installed) gets no answer and is counted as `scanner`;
//! - a half-open INVITE flood (answered by the callee, never ACKed) from one
//!   stranger holds at most its per-source caps while the carrier's calls
//!   still succeed;
//! - floods of OPTIONS, REGISTER, INVITEs the SBC refuses and junk, at 15x
//!   the carrier's rate, from one stranger (banned once, answered fewer
//!   than 200 times) and then from 1,000: >= 99% of the carrier's calls
//!   succeed and nothing is amplified.
//!
//! Every stranger sends a bounded number of datagrams at a bounded rate,
//! only to the lab's listeners.

// The tests are an IO shell: they read the wall clock to pace and bound
// their sends.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use tests::lab::{Host, Lab, LabConfig, Plan, Realm};
use tests::netns::skip_unless_sipp;
use tests::sipp::SippResult;

/// The stranger's host octet in 127.0.n.x: no trunk, no realm network.
const STRANGER_HOST: u8 = 9;

/// `sbc_rejected_total` of one reason, summed over realms.
fn rejected(lab: &Lab, reason: &str) -> u64 {
    let (_, body) = lab.admin_get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| {
            l.starts_with("sbc_rejected_total{") && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A stranger's address in the lab: 127.0.n.`host`.
fn stranger_ip(lab: &Lab, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, lab.plan().slot, host))
}

/// The status code of a response, `None` for a request.
pub(crate) fn status(message: &str) -> Option<u16> {
    message
        .strip_prefix("SIP/2.0 ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of the first header `name` (case-insensitive, full name).
pub(crate) fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `tag=` parameter of a From/To value.
pub(crate) fn tag(value: &str) -> Option<&str> {
    let at = value.find(";tag=")? + 5;
    value[at..].split([';', '>', ' ']).next()
}

/// Datagrams received on `socket` until `window` passes with none.
pub(crate) fn receive_for(socket: &UdpSocket, window: Duration) -> Vec<String> {
    socket
        .set_read_timeout(Some(window))
        .expect("set the read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

/// One request of a stranger or of the test's caller, CRLF-terminated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn request(
    method: &str,
    uri: &str,
    via: SocketAddr,
    branch: &str,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: &str,
    extra: &[&str],
    body: &str,
) -> String {
    let mut m = format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq}\r\nContact: <sip:caller@{via}>\r\n"
    );
    for h in extra {
        m.push_str(h);
        m.push_str("\r\n");
    }
    if body.is_empty() {
        m.push_str("Content-Length: 0\r\n\r\n");
    } else {
        m.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    m
}

fn sdp(ip: IpAddr, port: u16, version: u32) -> String {
    format!(
        "v=0\r\no=caller 1 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// Sends `message` from `socket` to `to` and returns what came back within
/// `window` of quiet.
pub(crate) fn exchange(
    socket: &UdpSocket,
    to: SocketAddr,
    message: &str,
    window: Duration,
) -> Vec<String> {
    socket.send_to(message.as_bytes(), to).expect("send");
    receive_for(socket, window)
}

/// The caller on the carrier's address, played by the test: what it knows
/// of the dialog the SBC answered.
struct RawCall {
    socket: UdpSocket,
    listener: SocketAddr,
    call_id: String,
    from: String,
    /// To with the SBC's tag.
    to: String,
    invite_branch: String,
}

/// Places one call from the carrier's address (the trunk, trusted) to
/// the `outside` listener, ACKs the 200 and returns the dialog.
fn raw_call(lab: &Lab) -> RawCall {
    let plan = lab.plan();
    let me = plan.host(Host::Carrier);
    let listener = plan.realm(Realm::Outside);
    let socket = lab.net().udp_socket(me);
    let call_id = format!("edge-forged-{}@{}", std::process::id(), me.ip());
    let from = format!("<sip:caller@{me}>;tag=edge-caller-tag-1");
    let invite_branch = "z9hG4bK-edge-invite-1".to_owned();
    let invite = request(
        "INVITE",
        &format!("sip:service@{listener}"),
        me,
        &invite_branch,
        &from,
        &format!("<sip:service@{listener}>"),
        &call_id,
        "1 INVITE",
        &[],
        &sdp(me.ip(), 16_002, 1),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let ok = loop {
        let got = exchange(&socket, listener, &invite, Duration::from_millis(500));
        if let Some(ok) = got.into_iter().find(|m| status(m) == Some(200)) {
            break ok;
        }
        assert!(
            Instant::now() < deadline,
            "the raw caller's INVITE got no 200 within 5 s\n--- sbc stderr ---\n{}",
            lab.daemon_stderr()
        );
    };
    let to = header(&ok, "To").expect("To in the 200").to_owned();
    assert!(tag(&to).is_some(), "200 without a To tag:\n{ok}");
    let call = RawCall {
        socket,
        listener,
        call_id,
        from,
        to,
        invite_branch,
    };
    let ack = request(
        "ACK",
        &format!("sip:service@{listener}"),
        me,
        "z9hG4bK-edge-ack-1",
        &call.from,
        &call.to,
        &call.call_id,
        "1 ACK",
        &[],
        "",
    );
    call.socket.send_to(ack.as_bytes(), listener).expect("ACK");
    call
}

/// The responses' status codes, for messages.
fn codes(got: &[String]) -> Vec<Option<u16>> {
    got.iter().map(|m| status(m)).collect()
}

/// Panics unless `got` is exactly one `403`. A 200 to the call's INVITE
/// is left out: the SBC retransmits it every T1 until the ACK arrives, and
/// one sent just before the test's ACK was taken may arrive during a later
/// exchange (RFC 3261 §13.3.1.4); it answers nothing the test sent there.
fn assert_one_403(what: &str, sent: &str, got: &[String], lab: &Lab) {
    let got: Vec<String> = got
        .iter()
        .filter(|m| !(status(m) == Some(200) && header(m, "CSeq") == Some("1 INVITE")))
        .cloned()
        .collect();
    let got = got.as_slice();
    assert!(
        got.len() == 1 && status(&got[0]) == Some(403),
        "{what}: expected exactly one 403, got {:?}\n--- sent ---\n{sent}\n--- received ---\n{}\n\
         --- sbc stderr (tail) ---\n{}",
        codes(got),
        got.join("\n---\n"),
        tail(&lab.daemon_stderr(), 30)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The dialog identifiers the callee saw (Call-ID, the SBC's From tag, the
/// callee's own To tag), read from its live message log once its ACK came.
fn callee_dialog(dir: &std::path::Path) -> Option<(String, String, String)> {
    let log = std::fs::read_to_string(dir.join("messages.log")).ok()?;
    if !log.contains("\nACK sip:") {
        return None;
    }
    let invite = &log[log.find("\nINVITE sip:")?..];
    let call_id = header(invite, "Call-ID")?.to_owned();
    let from_tag = tag(header(invite, "From")?)?.to_owned();
    let ok = &log[log.find("\nSIP/2.0 200 OK")?..];
    let to_tag = tag(header(ok, "To")?)?.to_owned();
    Some((call_id, from_tag, to_tag))
}

#[test]
fn forged_in_dialog_requests_get_403_and_change_nothing() {
    if skip_unless_sipp("forged_in_dialog_requests_get_403_and_change_nothing") {
        return;
    }
    let lab = Lab::start("edge-forged", &LabConfig::default());
    let plan = *lab.plan();
    let callee = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let call = raw_call(&lab);

    // The inside leg as the callee saw it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (in_call_id, sbc_tag, callee_tag) = loop {
        if let Some(d) = callee_dialog(callee.dir()) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the callee's log shows no ACK within 5 s (is SIPp's -message_file flushed?)"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let before = rejected(&lab, "foreign_in_dialog");

    let window = Duration::from_millis(400);
    let outside = plan.realm(Realm::Outside);
    let inside = plan.realm(Realm::Inside);
    let stranger = lab
        .net()
        .udp_socket(SocketAddr::new(stranger_ip(&lab, STRANGER_HOST), 5060));
    let stranger_at = stranger.local_addr().expect("local addr");
    let ruri = format!("sip:service@{outside}");
    let mut forged = 0;

    // 1. A BYE for the caller's dialog, from a stranger on the outside.
    let bye = request(
        "BYE",
        &ruri,
        stranger_at,
        "z9hG4bK-forged-bye",
        &call.from,
        &call.to,
        &call.call_id,
        "2 BYE",
        &[],
        "",
    );
    assert_one_403(
        "forged BYE",
        &bye,
        &exchange(&stranger, outside, &bye, window),
        &lab,
    );
    forged += 1;

    // 2. A re-INVITE moving the caller's media to the stranger.
    let reinvite = request(
        "INVITE",
        &ruri,
        stranger_at,
        "z9hG4bK-forged-reinvite",
        &call.from,
        &call.to,
        &call.call_id,
        "3 INVITE",
        &[],
        &sdp(stranger_at.ip(), 40_000, 2),
    );
    assert_one_403(
        "forged re-INVITE",
        &reinvite,
        &exchange(&stranger, outside, &reinvite, window),
        &lab,
    );
    forged += 1;

    // 3. A CANCEL of the caller's INVITE (same branch, as RFC 3261 9.1).
    // It copies the INVITE's Via (sent-by the caller) as a sniffer would:
    // with its own sent-by it would match no transaction at all.
    let cancel = request(
        "CANCEL",
        &ruri,
        plan.host(Host::Carrier),
        &call.invite_branch,
        &call.from,
        &format!("<sip:service@{outside}>"),
        &call.call_id,
        "1 CANCEL",
        &[],
        "",
    );
    // The INVITE is answered, so the CANCEL matches no pending transaction:
    // RFC 3261 9.2's 481 is as harmless as the stranger's 403 (a CANCEL
    // during setup is `forged_cancel_during_setup_gets_403`).
    let got = exchange(&stranger, outside, &cancel, window);
    assert!(
        got.len() == 1 && matches!(status(&got[0]), Some(403 | 481)),
        "forged CANCEL of an answered INVITE: expected one 403 or 481, got {:?}\n{}",
        codes(&got),
        got.join("\n---\n")
    );
    if status(&got[0]) == Some(403) {
        forged += 1;
    }

    // 4. A BYE for the callee's dialog, from a stranger on the inside (as if
    //    the callee hung up).
    let inside_stranger = lab
        .net()
        .udp_socket(SocketAddr::new(stranger_ip(&lab, STRANGER_HOST + 1), 5060));
    let inside_at = inside_stranger.local_addr().expect("local addr");
    let bye_in = request(
        "BYE",
        &format!("sip:service@{inside}"),
        inside_at,
        "z9hG4bK-forged-bye-in",
        &format!("<sip:callee@{}>;tag={callee_tag}", plan.host(Host::Pbx)),
        &format!("<sip:caller@{inside}>;tag={sbc_tag}"),
        &in_call_id,
        "1 BYE",
        &[],
        "",
    );
    assert_one_403(
        "forged BYE on the inside",
        &bye_in,
        &exchange(&inside_stranger, inside, &bye_in, window),
        &lab,
    );
    forged += 1;

    // 5. The caller's own BYE, from its own address, to the other realm's
    //    listener.
    let wrong_listener = request(
        "BYE",
        &format!("sip:service@{inside}"),
        plan.host(Host::Carrier),
        "z9hG4bK-wrong-listener-bye",
        &call.from,
        &call.to,
        &call.call_id,
        "4 BYE",
        &[],
        "",
    );
    assert_one_403(
        "the caller's BYE to the inside listener",
        &wrong_listener,
        &exchange(&call.socket, inside, &wrong_listener, window),
        &lab,
    );
    forged += 1;

    let after = rejected(&lab, "foreign_in_dialog");
    assert_eq!(
        after - before,
        forged,
        "sbc_rejected_total{{reason=\"foreign_in_dialog\"}} went {before} -> {after} for \
         {forged} forged requests"
    );

    // The call is still up: the caller's own BYE, to its own listener,
    // ends it, and the callee (SIPp) sees exactly one BYE.
    let bye = request(
        "BYE",
        &ruri,
        plan.host(Host::Carrier),
        "z9hG4bK-real-bye",
        &call.from,
        &call.to,
        &call.call_id,
        "5 BYE",
        &[],
        "",
    );
    let got = exchange(
        &call.socket,
        call.listener,
        &bye,
        Duration::from_millis(1500),
    );
    assert!(
        got.iter().any(|m| status(m) == Some(200)),
        "the real BYE after the forgeries got {:?}: the call did not survive\n{}",
        codes(&got),
        got.join("\n---\n")
    );
    let uas = callee.wait();
    uas.assert_success(1);
    assert_eq!(uas.requests("BYE"), 1, "{}", uas.report());
    assert_eq!(uas.requests("INVITE"), 1, "{}", uas.report());
    assert!(
        !uas.messages.contains(&stranger_at.ip().to_string()),
        "the stranger's address reached the callee\n{}",
        uas.report()
    );
    let mut lab = lab;
    lab.assert_daemon_healthy();
    lab.shutdown();
}

/// What a flood did: datagrams sent and responses received.
#[derive(Debug, Default)]
struct FloodCount {
    sent: u64,
    received: u64,
    /// Responses per status code class (1xx..6xx) at index 1..=6.
    classes: [u64; 7],
}

/// Floods `target` from `sockets` (round-robin) at `rate` requests per
/// second for `duration` with requests `make(n, from)` (distinct Call-IDs
/// and branches), counting every datagram that comes back to any of them
/// (also for a second after the last send: retransmissions). One thread,
/// non-blocking sockets drained between sends, however many sources.
fn flood(
    sockets: Vec<UdpSocket>,
    target: SocketAddr,
    rate: u32,
    duration: Duration,
    make: impl Fn(u64, SocketAddr) -> String + Send + 'static,
) -> thread::JoinHandle<FloodCount> {
    thread::spawn(move || {
        let mut count = FloodCount::default();
        let mut buf = [0u8; 65_536];
        for socket in &sockets {
            socket.set_nonblocking(true).expect("non-blocking");
        }
        let mut drain = |count: &mut FloodCount| {
            for socket in &sockets {
                while let Ok((n, _)) = socket.recv_from(&mut buf) {
                    count.received += 1;
                    if let Some(code) = status(&String::from_utf8_lossy(&buf[..n])) {
                        count.classes[usize::from(code / 100).min(6)] += 1;
                    }
                }
            }
        };
        let total = u64::from(rate) * duration.as_secs();
        let interval = Duration::from_secs(1) / rate;
        let start = Instant::now();
        for n in 0..total {
            let socket = &sockets[usize::try_from(n).unwrap_or(0) % sockets.len()];
            let from = socket.local_addr().expect("local addr");
            if socket.send_to(make(n, from).as_bytes(), target).is_ok() {
                count.sent += 1;
            }
            drain(&mut count);
            let next = start + interval * u32::try_from(n + 1).unwrap_or(u32::MAX);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            drain(&mut count);
            thread::sleep(Duration::from_millis(10));
        }
        count
    })
}

/// An OPTIONS of a stranger, unique per `n`.
pub(crate) fn options(n: u64, from: SocketAddr, to: SocketAddr, user_agent: &str) -> String {
    request(
        "OPTIONS",
        &format!("sip:ping@{to}"),
        from,
        &format!("z9hG4bK-flood-{n}"),
        &format!("<sip:flood@{from}>;tag=flood-{n}"),
        &format!("<sip:ping@{to}>"),
        &format!("flood-{n}@{}", from.ip()),
        "1 OPTIONS",
        &[&format!("User-Agent: {user_agent}")],
        "",
    )
}

/// The carrier's load while a flood runs: `calls` calls at `rate` cps
/// (SIPp `caller.xml` to `callee.xml` on the PBX).
fn trunk_calls(lab: &Lab, calls: u32, rate: f64) -> (SippResult, SippResult) {
    let uas = lab.start_callee(
        &lab.peer("callee.xml", Host::Pbx)
            .calls(calls)
            .timeout(Duration::from_secs(40)),
    );
    let uac = lab
        .peer("caller.xml", Host::Carrier)
        .remote(lab.plan().realm(Plan::realm_of(Host::Carrier)))
        .calls(calls)
        .rate(rate)
        .limit(15)
        .timeout(Duration::from_secs(40))
        .run();
    let uas = lab.finish_callee(&uac, uas);
    (uac, uas)
}

/// Panics unless at least 99% of the carrier's calls succeeded.
fn assert_trunk_calls_succeeded(uac: &SippResult, calls: u32) -> f64 {
    let share = uac.successful() as f64 / f64::from(calls);
    assert!(
        share >= 0.99 && !uac.killed_at_deadline,
        "only {}/{calls} of the carrier's calls succeeded during the flood ({:.1}%)\n{}",
        uac.successful(),
        share * 100.0,
        uac.report()
    );
    share
}

#[test]
fn scanners_get_no_answer() {
    if skip_unless_sipp("scanners_get_no_answer") {
        return;
    }
    let lab = Lab::start("edge-scanner", &LabConfig::default());
    let listener = lab.plan().realm(Realm::Outside);
    let socket = lab
        .net()
        .udp_socket(SocketAddr::new(stranger_ip(&lab, STRANGER_HOST), 5060));
    let from = socket.local_addr().expect("local addr");
    let mut answers = Vec::new();
    for n in 0..5 {
        answers.extend(exchange(
            &socket,
            listener,
            &options(n, from, listener, "friendly-scanner"),
            Duration::from_millis(200),
        ));
    }
    assert!(
        answers.is_empty(),
        "a friendly-scanner OPTIONS was answered: {:?}\n{}",
        codes(&answers),
        answers.join("\n---\n")
    );
    let scanner = rejected(&lab, "scanner");
    assert!(
        scanner >= 1,
        "no sbc_rejected_total{{reason=\"scanner\"}} after 5 scanner OPTIONS"
    );
    eprintln!("scanner OPTIONS: 0 answers to 5, rejected scanner = {scanner}");

    // SIPVicious itself, when installed (Debian `sipvicious`): from its
    // own address (the raw stranger above may already be banned), it must
    // find no SIP device and no extension.
    let sipvicious = std::process::Command::new("svmap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if sipvicious {
        let scanner_ip = stranger_ip(&lab, STRANGER_HOST + 2).to_string();
        let target = listener.ip().to_string();
        let run = |program: &str, args: &[&str]| {
            let out = lab
                .net()
                .command("timeout")
                .arg("20")
                .arg(program)
                .args(args)
                .env("HOME", std::env::temp_dir())
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("run {program}: {e}"));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("--- {program} {args:?} ---\n{text}");
            text
        };
        let svmap = run("svmap", &["-b", &scanner_ip, "-p", "5060", &target]);
        assert!(
            !svmap.contains(&format!("{target}:5060")),
            "svmap found the SBC:\n{svmap}"
        );
        let svwar = run(
            "svwar",
            &[
                "-b",
                &scanner_ip,
                "-p",
                "5060",
                "-m",
                "INVITE",
                "-e",
                "100-120",
                "-t",
                "0.5",
                &target,
            ],
        );
        assert!(
            !svwar.contains("| reqauth") && !svwar.contains("| noauth"),
            "svwar found extensions:\n{svwar}"
        );
    } else {
        eprintln!("svmap/svwar not installed (apt-get install sipvicious): scanned by hand only");
    }
    let mut lab = lab;
    lab.assert_daemon_healthy();
    lab.shutdown();
}

/// An INVITE of a stranger, unique per `n`.
fn invite(n: u64, from: SocketAddr, to: SocketAddr) -> String {
    request(
        "INVITE",
        &format!("sip:service@{to}"),
        from,
        &format!("z9hG4bK-halfopen-{n}"),
        &format!("<sip:flood@{from}>;tag=halfopen-{n}"),
        &format!("<sip:service@{to}>"),
        &format!("halfopen-{n}@{}", from.ip()),
        "1 INVITE",
        &[],
        &sdp(from.ip(), 30_000, 1),
    )
}

#[test]
fn half_open_invite_flood_holds_its_caps() {
    if skip_unless_sipp("half_open_invite_flood_holds_its_caps") {
        return;
    }
    // max_calls 40: the untrusted share (50%) is 20, so the per-source cap
    // (16 calls) is what binds.
    let plan = Plan::next();
    let toml = plan
        .toml(&LabConfig::default())
        .replace("[limits]\nmax_calls = 20\n", "[limits]\nmax_calls = 40\n");
    assert!(toml.contains("max_calls = 40"), "{toml}");
    let lab = Lab::start_toml("edge-half-open", plan, &toml);
    let listener = lab.plan().realm(Realm::Outside);
    let source = stranger_ip(&lab, STRANGER_HOST);
    let socket = lab.net().udp_socket(SocketAddr::new(source, 5060));
    // The callee answers every INVITE, the stranger's too: they become
    // calls the stranger never ACKs. The callee is killed at the end, so
    // its own count is not judged; the carrier's is.
    let uas = lab.start_callee(
        &lab.peer("callee.xml", Host::Pbx)
            .calls(10_000)
            .timeout(Duration::from_secs(40)),
    );
    let attack = flood(
        vec![socket],
        listener,
        40,
        Duration::from_secs(8),
        move |n, from| invite(n, from, listener),
    );
    let calls = 60;
    let uac = thread::scope(|s| {
        let uac = s.spawn(|| {
            lab.peer("caller.xml", Host::Carrier)
                .remote(listener)
                .calls(calls)
                .rate(10.0)
                .limit(15)
                .timeout(Duration::from_secs(30))
                .run()
        });
        // The stranger's calls, sampled while it floods.
        let mut most = 0;
        while !uac.is_finished() {
            most = most.max(lab.metric("sbc_untrusted_calls_active"));
            thread::sleep(Duration::from_millis(250));
        }
        eprintln!("sbc_untrusted_calls_active peaked at {most}");
        assert!(
            most <= 16,
            "one untrusted source held {most} calls (max_calls_per_source = 16)"
        );
        uac.join().expect("caller thread")
    });
    let count = attack.join().expect("flood thread");
    let uas = uas.kill();
    let share = assert_trunk_calls_succeeded(&uac, calls);
    let limited = rejected(&lab, "source_limit");
    let (_, metrics) = lab.admin_get("/metrics").unwrap_or_default();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("sbc_rejected_total{"))
    {
        eprintln!("{line}");
    }
    let reached = uas.requests("INVITE");
    eprintln!(
        "half-open INVITE flood: {count:?}; source_limit rejections {limited}; \
         INVITEs at the callee {reached} (of which {} the carrier's); trunk calls {:.1}%",
        calls,
        share * 100.0
    );
    assert!(count.sent >= 300, "the flood sent only {}", count.sent);
    assert!(
        limited >= 1,
        "{} INVITEs from one source and no source_limit rejection",
        count.sent
    );
    // The SBC let at most a cap's worth of the stranger's INVITEs through
    // (retransmissions by the SBC aside).
    let strangers_at_callee = reached.saturating_sub(usize::try_from(calls).unwrap_or(0));
    assert!(
        strangers_at_callee <= 2 * 16,
        "{strangers_at_callee} of the stranger's INVITEs reached the callee"
    );
    // No clean-shutdown check here: the stranger's 16 calls are still
    // waiting for its ACK, and it never answers the BYEs a shutdown sends,
    // so the daemon rightly spends its whole 5 s grace on them, the lab's
    // own SIGTERM bound.
    let mut lab = lab;
    lab.assert_daemon_healthy();
}

#[test]
fn forged_cancel_during_setup_gets_403() {
    if skip_unless_sipp("forged_cancel_during_setup_gets_403") {
        return;
    }
    let lab = Lab::start("edge-cancel", &LabConfig::default());
    let plan = *lab.plan();
    // The callee rings and waits for a CANCEL.
    let callee = lab.start_callee(&lab.peer("callee-cancel.xml", Host::Pbx));
    let me = plan.host(Host::Carrier);
    let listener = plan.realm(Realm::Outside);
    let caller = lab.net().udp_socket(me);
    let call_id = format!("edge-cancel-{}@{}", std::process::id(), me.ip());
    let from = format!("<sip:caller@{me}>;tag=edge-cancel-tag");
    let to = format!("<sip:service@{listener}>");
    let branch = "z9hG4bK-edge-cancel-invite";
    let ruri = format!("sip:service@{listener}");
    let invite = request(
        "INVITE",
        &ruri,
        me,
        branch,
        &from,
        &to,
        &call_id,
        "1 INVITE",
        &[],
        &sdp(me.ip(), 16_002, 1),
    );
    let got = exchange(&caller, listener, &invite, Duration::from_millis(500));
    assert!(
        got.iter().all(|m| status(m).is_some_and(|c| c < 200)),
        "the INVITE to a silent callee was answered {:?}",
        codes(&got)
    );
    let callee_log =
        || std::fs::read_to_string(callee.dir().join("messages.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !callee_log().contains("\nINVITE sip:") {
        assert!(
            Instant::now() < deadline,
            "the INVITE did not reach the callee"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let before = rejected(&lab, "foreign_in_dialog");
    let stranger = lab
        .net()
        .udp_socket(SocketAddr::new(stranger_ip(&lab, STRANGER_HOST), 5060));
    let cancel_from = |via: SocketAddr| {
        request(
            "CANCEL",
            &ruri,
            via,
            branch,
            &from,
            &to,
            &call_id,
            "1 CANCEL",
            &[],
            "",
        )
    };
    // The INVITE's own Via (sent-by the caller), as a sniffer copies it,
    // but sent from the stranger's address.
    let forged = cancel_from(me);
    assert_one_403(
        "forged CANCEL during setup",
        &forged,
        &exchange(&stranger, listener, &forged, Duration::from_millis(500)),
        &lab,
    );
    assert_eq!(rejected(&lab, "foreign_in_dialog"), before + 1);
    assert!(
        !callee_log().contains("\nCANCEL sip:"),
        "the forged CANCEL reached the callee"
    );
    // The caller's own CANCEL still works: 200 to it, 487 to the INVITE.
    let got = exchange(
        &caller,
        listener,
        &cancel_from(me),
        Duration::from_millis(800),
    );
    let got_codes = codes(&got);
    assert!(
        got_codes.contains(&Some(200)) && got_codes.contains(&Some(487)),
        "the caller's CANCEL after the forged one got {got_codes:?}"
    );
    let ack = request(
        "ACK",
        &ruri,
        me,
        branch,
        &from,
        header(
            got.iter().find(|m| status(m) == Some(487)).expect("487"),
            "To",
        )
        .unwrap_or(&to),
        &call_id,
        "1 ACK",
        &[],
        "",
    );
    caller.send_to(ack.as_bytes(), listener).expect("ACK");
    // The callee saw the caller's CANCEL (one, not the stranger's too) and
    // finished its scenario.
    let uas = callee.wait();
    uas.assert_success(1);
    assert_eq!(uas.requests("CANCEL"), 1, "{}", uas.report());
    let mut lab = lab;
    lab.assert_daemon_healthy();
    lab.shutdown();
}

/// A REGISTER of a stranger, unique per `n` (the SBC has no registrar yet:
/// it answers 405 itself, keeping no transaction).
fn register(n: u64, from: SocketAddr, to: SocketAddr) -> String {
    request(
        "REGISTER",
        &format!("sip:{}", to.ip()),
        from,
        &format!("z9hG4bK-reg-{n}"),
        &format!("<sip:user{n}@{}>;tag=reg-{n}", to.ip()),
        &format!("<sip:user{n}@{}>", to.ip()),
        &format!("reg-{n}@{}", from.ip()),
        "1 REGISTER",
        &["Expires: 3600"],
        "",
    )
}

/// An INVITE the SBC refuses itself (Max-Forwards 0: 483), so the flood
/// never reaches the PBX's SIPp.
fn refused_invite(n: u64, from: SocketAddr, to: SocketAddr) -> String {
    request(
        "INVITE",
        &format!("sip:service@{to}"),
        from,
        &format!("z9hG4bK-inv-{n}"),
        &format!("<sip:flood@{from}>;tag=inv-{n}"),
        &format!("<sip:service@{to}>"),
        &format!("inv-{n}@{}", from.ip()),
        "1 INVITE",
        &[],
        &sdp(from.ip(), 40_000, 1),
    )
    .replacen("Max-Forwards: 70", "Max-Forwards: 0", 1)
}

/// Junk: a datagram that is not SIP (a first line no parser accepts, then
/// bytes), different each time.
fn junk(n: u64, _from: SocketAddr, _to: SocketAddr) -> String {
    format!(
        "\u{1}\u{2}JUNK {n} {}\r\n\r\n",
        "x".repeat(usize::try_from(n % 200).unwrap_or(0))
    )
}

/// 1,000 stranger sockets: 127.k.slot.h for k in 1..=4, h in 1..=250.
fn thousand_strangers(lab: &Lab) -> Vec<UdpSocket> {
    (1..=4u8)
        .flat_map(|k| (1..=250u8).map(move |h| (k, h)))
        .map(|(k, h)| {
            let ip = IpAddr::V4(Ipv4Addr::new(127, k, lab.plan().slot, h));
            lab.net().udp_socket(SocketAddr::new(ip, 5060))
        })
        .collect()
}

/// One kind of flood at 150 requests/s for 10 s (15x the carrier's rate),
/// first from one stranger, then from 1,000, each while the carrier places
/// 100 calls: >= 99% of them must succeed, the SBC must never send more
/// datagrams than it got, and the one-source flood must end in one ban.
fn flood_leaves_trunk_calls_alone(
    name: &str,
    make: fn(u64, SocketAddr, SocketAddr) -> String,
    stranger: u8,
) {
    if skip_unless_sipp(name) {
        return;
    }
    let lab = Lab::start(name, &LabConfig::default());
    let listener = lab.plan().realm(Realm::Outside);
    let source = stranger_ip(&lab, stranger);
    for (label, sockets) in [
        (
            "one source",
            vec![lab.net().udp_socket(SocketAddr::new(source, 5060))],
        ),
        ("1,000 sources", thousand_strangers(&lab)),
    ] {
        let attack = flood(
            sockets,
            listener,
            150,
            Duration::from_secs(10),
            move |n, from| make(n, from, listener),
        );
        let calls = 100;
        let (uac, _uas) = trunk_calls(&lab, calls, 10.0);
        let count = attack.join().expect("flood thread");
        let share = assert_trunk_calls_succeeded(&uac, calls);
        eprintln!(
            "{name}, {label}: {count:?}; trunk calls {:.1}% ({}/{calls})",
            share * 100.0,
            uac.successful()
        );
        assert!(count.sent >= 1400, "the flood sent only {}", count.sent);
        assert!(
            count.received <= count.sent,
            "amplification: {} datagrams back for {} sent",
            count.received,
            count.sent
        );
        assert_eq!(
            count.classes[1], 0,
            "what the SBC answers itself (or refuses) needs no 100 Trying"
        );
        if label == "one source" {
            // Burst 30 + 15/s until the debt passes another burst, then
            // nothing: a banned source gets no answer.
            assert!(
                count.received < 200,
                "a banned source got {} answers",
                count.received
            );
            assert!(lab.metric("sbc_banned_sources") >= 1, "no ban held");
            assert!(rejected(&lab, "rate_limited") + rejected(&lab, "banned") > 0);
        }
    }
    let bans = lab
        .daemon_stderr()
        .lines()
        .filter(|l| l.contains("source banned") && l.contains(&format!("source={source} ")))
        .count();
    assert_eq!(bans, 1, "the one-source flood must end in one logged ban");
    let mut lab = lab;
    lab.assert_daemon_healthy();
    lab.shutdown();
}

/// An OPTIONS flood request (the SBC answers OPTIONS itself).
fn options_ping(n: u64, from: SocketAddr, to: SocketAddr) -> String {
    options(n, from, to, "edge-test")
}

#[test]
fn options_floods_leave_trunk_calls_alone() {
    flood_leaves_trunk_calls_alone("options_floods_leave_trunk_calls_alone", options_ping, 9);
}

#[test]
fn register_floods_leave_trunk_calls_alone() {
    flood_leaves_trunk_calls_alone("register_floods_leave_trunk_calls_alone", register, 11);
}

#[test]
fn refused_invite_floods_leave_trunk_calls_alone() {
    flood_leaves_trunk_calls_alone(
        "refused_invite_floods_leave_trunk_calls_alone",
        refused_invite,
        12,
    );
}

#[test]
fn junk_floods_leave_trunk_calls_alone() {
    flood_leaves_trunk_calls_alone("junk_floods_leave_trunk_calls_alone", junk, 13);
}
