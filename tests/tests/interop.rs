//! The interop lab of issue 12, as tests: what an interop lab would try
//! against the SBC, with real third-party peers.
//!
//! - Kamailio as a record-routing stateful proxy in front of the SBC and
//!   another behind it, SIPp at both ends: whole dialogs (INVITE, hold and
//!   resume re-INVITEs from either side, BYE from either side) and the
//!   topology scan.
//! - baresip on both sides, each playing a tone and recording what it
//!   hears: two-way audio through the anchors, also when a phone's RTP
//!   comes from an address its SDP does not name.
//! - RTCP: an endpoint written here sends SR + SDES naming itself through an
//!   anchored call; what arrives on the other side must not name it.
//! - The SIPp corpus sweep: every caller/callee pair of
//!   `../shared/corpus/sipp`, judged against `tests/corpus-sipp.tsv`.
//!
//! `SBC_BINARY=/path/to/sbc` runs them against another build of the daemon
//! (one from before a fix shows what the lab catches).
//!
//! Every test runs in a lab of its own ([`Lab`]: the real daemon in a
//! private loopback-only namespace), bounds every peer in time, and
//! removes what it made. Under CI (`SBC_REQUIRE_PRIVILEGED=1`) a missing
//! peer program, corpus or privilege fails the test instead of skipping
//! it.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tests::corpus::{CorpusCopy, Outcome, Row, Status, Table, corpus_dir, why_failed};
use tests::lab::{Host, Lab, LabConfig, PEER_MEDIA_PORT, Plan, Realm, SIP_PORT, flow};
use tests::netns::{skip_unless_privileged, skip_unless_sipp, skip_unless_tool};
use tests::sipp::{Sipp, SippResult};

/// Whether a SIPp run completed its scenario: exit 0 by itself, at least
/// one call and no failed one.
fn ok(result: &SippResult) -> bool {
    result.status.success()
        && !result.killed_at_deadline
        && result.successful() >= 1
        && result.failed() == 0
}

/// The text of a caught panic.
fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

// --- the SIPp corpus sweep ------------------------------------------------

/// The bound of one SIPp run of the sweep. The slowest pairs
/// (`drachtio/uac-drop-all-200.xml`, which waits for the SBC's BYE after
/// 64*T1, and a callee's 400 the SBC drops, answered 408 at timer B) take
/// 33-41 s.
const PAIR_TIMEOUT: Duration = Duration::from_secs(45);

/// Pairs played at once, each in a lab (namespace and daemon) of its own.
const SWEEP_WORKERS: usize = 4;

/// A lab for one row: calls from `outside` go to `pbx`; a row without a
/// caller has the SBC ping the callee with OPTIONS every second.
fn row_lab(row: &Row) -> Lab {
    let plan = Plan::next();
    let mut toml = plan.toml(&LabConfig::default());
    if row.caller.is_none() {
        // The first trunk of the plan's configuration is `pbx`.
        toml = toml.replacen("options_interval_secs = 0", "options_interval_secs = 1", 1);
    }
    Lab::start_toml(&format!("corpus-{}", row.slug()), plan, &toml)
}

/// A corpus peer on `host`, with the row's extra arguments.
fn corpus_peer(lab: &Lab, copy: &CorpusCopy, scenario: &str, args: &[String], host: Host) -> Sipp {
    let ip = lab.plan().host_ip(host);
    let mut sipp = Sipp::scenario_file(copy.path(scenario))
        .local(ip, SIP_PORT)
        .media(ip, PEER_MEDIA_PORT)
        .timeout(PAIR_TIMEOUT);
    for arg in copy.resolve_args(args) {
        sipp = sipp.arg(arg);
    }
    lab.net().place(sipp)
}

/// Plays one row in a fresh lab and judges it: the peers do what the row
/// expects, nothing crosses the border, the daemon survives and stops
/// cleanly. Returns the verdict and the SIPp runs (whose directories the
/// caller removes or keeps).
fn play(copy: &CorpusCopy, row: &Row) -> (Outcome, Vec<SippResult>) {
    let mut lab = row_lab(row);
    let callee = row.callee.as_ref().map(|scenario| {
        lab.start_callee(&corpus_peer(
            &lab,
            copy,
            scenario,
            &row.callee_args,
            Host::Pbx,
        ))
    });
    let caller = row.caller.as_ref().map(|scenario| {
        corpus_peer(&lab, copy, scenario, &row.caller_args, Host::Carrier)
            .remote(lab.plan().realm(Realm::Outside))
            .run()
    });
    let callee = match (callee, &caller) {
        (Some(handle), Some(caller)) => Some(lab.finish_callee(caller, handle)),
        (Some(handle), None) => Some(handle.wait()),
        (None, _) => None,
    };
    let mut problems = Vec::new();
    match (&row.status, &caller) {
        (Status::Refused(code), Some(c)) => {
            let code = code.to_string();
            if !flow(c).contains(&code) {
                problems.push(format!(
                    "the caller never got the {code} it must: {}",
                    why_failed("caller", c)
                ));
            }
        }
        (_, Some(c)) if !ok(c) => problems.push(why_failed("caller", c)),
        _ => {}
    }
    if let Some(c) = &callee
        && !ok(c)
        && !matches!(row.status, Status::Refused(_))
    {
        problems.push(why_failed("callee", c));
    }
    let outside: Vec<&SippResult> = caller.iter().collect();
    let inside: Vec<&SippResult> = callee.iter().collect();
    if problems.is_empty()
        && let Some(leak) = lab.topology_leak(&outside, &inside)
    {
        problems.push(leak.lines().take(12).collect::<Vec<_>>().join("\n    "));
    }
    let stderr = lab.daemon_stderr();
    if stderr.contains("panicked at") {
        problems.push("the daemon panicked".to_owned());
    }
    let stopped = std::panic::catch_unwind(AssertUnwindSafe(|| {
        lab.assert_daemon_healthy();
        lab.shutdown();
    }));
    if let Err(e) = stopped {
        let msg = panic_text(&*e);
        problems.push(format!(
            "the daemon: {}",
            msg.lines().next().unwrap_or("did not stop cleanly")
        ));
    }
    if !problems.is_empty() {
        // What the daemon itself said about the call.
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(4)
            .collect();
        if !said.is_empty() {
            problems.push(format!("sbc: {}", said.join("\n    sbc: ")));
        }
        // SBC_CORPUS_VERBOSE=1: the daemon's whole log of a failed row.
        if std::env::var_os("SBC_CORPUS_VERBOSE").is_some() {
            problems.push(format!("--- sbc stderr ---\n{stderr}"));
        }
    }
    let outcome = if problems.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed(problems.join("\n    "))
    };
    (outcome, caller.into_iter().chain(callee).collect())
}

/// Every pair of the corpus through the SBC. Fails listing every `pass`
/// or `refused` row that failed, and when a corpus scenario is in no row of
/// the table; reports the `pending` rows apart, and loudly when one of them
/// now passes.
#[test]
fn corpus_pairs_through_the_sbc() {
    const NAME: &str = "corpus_pairs_through_the_sbc";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let corpus = corpus_dir();
    let index_path = corpus.join("index.tsv");
    if !index_path.is_file() {
        // The corpus lives beside the repository, not in it (some of its
        // scenarios carry no licence to copy them here): a clone without it
        // skips the sweep, under CI too, and says so.
        eprintln!(
            "{NAME}: skipped: the SIPp corpus is not at {} (set SBC_SIPP_CORPUS)",
            corpus.display()
        );
        return;
    }
    let table = Table::shipped();
    let index = std::fs::read_to_string(&index_path).expect("the corpus index");
    let problems = table.check_against_index(&index);
    assert!(
        problems.is_empty(),
        "tests/corpus-sipp.tsv and {} disagree:\n  {}",
        index_path.display(),
        problems.join("\n  ")
    );

    // SBC_CORPUS_ROWS=text[,text...] plays only the rows whose pair names
    // one of them (a developer's filter; the check above still runs).
    let only: Option<Vec<String>> = std::env::var("SBC_CORPUS_ROWS")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let rows: Vec<&Row> = table
        .rows
        .iter()
        .filter(|r| r.status != Status::Skip)
        .filter(|r| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|o| r.name().contains(o.as_str())))
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("sbc-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("sweep directory");
    let copy = CorpusCopy::new(&corpus, &dir);

    let next = AtomicUsize::new(0);
    let verdicts: Mutex<Vec<(usize, Outcome, Duration)>> = Mutex::new(Vec::new());
    #[allow(clippy::disallowed_methods)] // the sweep's wall time, for the report
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..SWEEP_WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(row) = rows.get(i) else { break };
                    #[allow(clippy::disallowed_methods)]
                    let t0 = std::time::Instant::now();
                    let played = std::panic::catch_unwind(AssertUnwindSafe(|| play(&copy, row)));
                    let (outcome, results) = played.unwrap_or_else(|e| {
                        let msg = panic_text(&*e);
                        let first: Vec<&str> = msg.lines().take(6).collect();
                        (
                            Outcome::Failed(format!("the lab failed: {}", first.join("\n    "))),
                            Vec::new(),
                        )
                    });
                    // A row that must pass keeps the SIPp logs of its
                    // failure (named in the report); all else is removed.
                    let keep = matches!(row.status, Status::Pass | Status::Refused(_))
                        && !outcome.passed();
                    for r in &results {
                        if keep {
                            eprintln!("  logs of {}: {}", row.name(), r.dir.display());
                        } else {
                            let _ = std::fs::remove_dir_all(&r.dir);
                        }
                    }
                    verdicts
                        .lock()
                        .expect("verdicts")
                        .push((i, outcome, t0.elapsed()));
                }
            });
        }
    });
    let mut verdicts = verdicts.into_inner().expect("verdicts");
    verdicts.sort_by_key(|(i, _, _)| *i);
    drop(copy);
    let _ = std::fs::remove_dir_all(&dir);

    let mut failed = Vec::new();
    let mut report = String::new();
    let (mut passed, mut pending_failing, mut pending_passing) = (0, 0, 0);
    for (i, outcome, took) in &verdicts {
        let row = rows[*i];
        let line = match (&row.status, outcome) {
            (Status::Pass | Status::Refused(_), Outcome::Passed) => {
                passed += 1;
                format!("ok       {took:>5.1?}  {} ({})", row.name(), row.status)
            }
            (Status::Pass | Status::Refused(_), Outcome::Failed(why)) => {
                failed.push(format!("{} (line {})\n    {why}", row.name(), row.line));
                format!(
                    "FAILED   {took:>5.1?}  {} ({})\n    {why}",
                    row.name(),
                    row.status
                )
            }
            (Status::Pending(item), Outcome::Passed) => {
                pending_passing += 1;
                eprintln!(
                    "\n!!!!! PENDING PAIR NOW PASSES: {} (line {} of tests/corpus-sipp.tsv, \
                     waiting for issue 12 item {item}): flip it to `pass` !!!!!\n",
                    row.name(),
                    row.line
                );
                format!(
                    "PASSES   {took:>5.1?}  {} (pending {item}: flip to pass)",
                    row.name()
                )
            }
            (Status::Pending(item), Outcome::Failed(why)) => {
                pending_failing += 1;
                format!(
                    "pending  {took:>5.1?}  {} (item {item})\n    {why}",
                    row.name()
                )
            }
            (Status::Skip, _) => unreachable!("skip rows are not played"),
        };
        report.push_str(&line);
        report.push('\n');
    }
    let skipped = table.rows.len() - rows.len();
    eprintln!(
        "corpus sweep: {} rows played in {:.1?} ({passed} as expected, {} failed, \
         {pending_failing} pending still failing, {pending_passing} pending now passing; \
         {skipped} rows not played)\n{report}",
        rows.len(),
        started.elapsed(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} corpus pair(s) marked `pass` or `refused` failed through the SBC:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// --- Kamailio in front of and behind the SBC -----------------------------

/// The product strings the two proxies put in what they send themselves:
/// neither may cross the SBC.
const FRONT_PROXY: &str = "front-proxy-k7f3";
const BACK_PROXY: &str = "back-proxy-q9d2";

/// Kamailio record-routing in front of the SBC (the carrier's proxy, on
/// the carrier trunk's address) and behind it (the PBX's, on the pbx
/// trunk's address), SIPp at both ends: a call the caller holds and
/// resumes by re-INVITE and ends, one the callee holds and resumes and the
/// caller ends, and one the callee ends. Before
/// the SBC copied the INVITE's Record-Route into its 1xx/2xx on the
/// caller's leg (RFC 3261 §12.1.1, issue 12 item 1), the front proxy
/// dropped the ACK and no call completed.
#[test]
fn kamailio_record_routing_in_front_and_behind_carries_whole_dialogs() {
    use tests::kamailio::{Kamailio, record_routed_scenario};

    const NAME: &str = "kamailio_record_routing_in_front_and_behind_carries_whole_dialogs";
    if skip_unless_privileged(NAME)
        || skip_unless_sipp(NAME)
        || skip_unless_tool(NAME, "kamailio", "-v", "apt-get install kamailio")
    {
        return;
    }
    let lab = Lab::start("kamailio", &LabConfig::default());
    let plan = *lab.plan();
    // caller -> front proxy (trunk `carrier`) -> SBC outside | inside ->
    // back proxy (trunk `pbx`) -> callee.
    let caller_ip = plan.spare_ip(1);
    let callee_ip = plan.spare_ip(0);
    let front = Kamailio::start(
        lab.net(),
        lab.dir(),
        plan.host(Host::Carrier),
        plan.realm(Realm::Outside),
        FRONT_PROXY,
    );
    let back = Kamailio::start(
        lab.net(),
        lab.dir(),
        plan.host(Host::Pbx),
        std::net::SocketAddr::new(callee_ip, SIP_PORT),
        BACK_PROXY,
    );
    for (caller_scenario, callee_scenario, ended_by_callee, held_by_callee) in [
        ("caller-hold.xml", "callee-hold.xml", false, false),
        ("caller-held.xml", "callee-holds.xml", false, true),
        ("caller-wait-bye.xml", "callee-sends-bye.xml", true, false),
    ] {
        let peer = |scenario: &str, ip| {
            lab.net().place(
                Sipp::scenario_file(record_routed_scenario(scenario, lab.dir()))
                    .local(ip, SIP_PORT)
                    .media(ip, PEER_MEDIA_PORT)
                    .timeout(Duration::from_secs(20)),
            )
        };
        let uas = lab.start_callee(&peer(callee_scenario, callee_ip));
        let uac = peer(caller_scenario, caller_ip)
            .remote(plan.host(Host::Carrier))
            .service("4930555")
            .run();
        let uas = lab.finish_callee(&uac, uas);
        let context = || {
            format!(
                "{caller_scenario} -> {callee_scenario}\n--- caller ---\n{}\n--- callee ---\n{}\n\
                 --- front proxy ---\n{}\n--- back proxy ---\n{}",
                uac.report(),
                uas.report(),
                front.log(),
                back.log()
            )
        };
        assert!(
            ok(&uac) && ok(&uas) && uac.successful() == 1 && uas.successful() == 1,
            "{}",
            context()
        );
        // Item 1: the caller's dialog-forming responses carry its own
        // proxy's Record-Route.
        let front_rr = format!("Record-Route: <sip:{}", plan.host(Host::Carrier).ip());
        assert!(
            uac.messages.contains(&front_rr),
            "the caller's responses lack the front proxy's Record-Route\n{}",
            context()
        );
        if ended_by_callee {
            assert_eq!(uac.requests("BYE"), 1, "{}", context());
        } else if held_by_callee {
            // The callee's hold and resume crossed both proxies and the
            // SBC the other way.
            assert_eq!(uac.requests("INVITE"), 3, "{}", context());
            assert_eq!(uac.requests("ACK"), 3, "{}", context());
        } else {
            // Hold and resume crossed both proxies and the SBC.
            assert_eq!(uas.requests("INVITE"), 3, "{}", context());
            assert_eq!(uas.requests("ACK"), 3, "{}", context());
        }
        let leak = lab.topology_leak_with(
            &[&uac],
            &[&uas],
            &[caller_ip.to_string(), FRONT_PROXY.to_owned()],
            &[callee_ip.to_string(), BACK_PROXY.to_owned()],
        );
        assert!(
            leak.is_none(),
            "{}\n{}",
            leak.unwrap_or_default(),
            context()
        );
        let _ = std::fs::remove_dir_all(&uac.dir);
        let _ = std::fs::remove_dir_all(&uas.dir);
    }
    drop(front);
    drop(back);
    lab.shutdown();
}

// --- RTCP across the border -----------------------------------------------

/// A callee written out by hand on the pbx trunk's address: answers the
/// one INVITE that comes with SDP of its own, and ends the call when the
/// BYE comes. It knows the SBC's offer, so the test can send media to it.
struct HandCallee {
    socket: std::net::UdpSocket,
    /// Everything it received, for failure messages.
    seen: String,
}

impl HandCallee {
    /// The next request starting with `method`, within `limit`; anything
    /// else is kept in `seen` and skipped.
    fn expect(&mut self, method: &str, limit: Duration) -> (String, std::net::SocketAddr) {
        let mut buf = vec![0u8; 65_535];
        let tries = limit.as_millis() / 100;
        for _ in 0..tries {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push_str(&text);
                if text.starts_with(method) {
                    return (text, from);
                }
            }
        }
        panic!(
            "the hand-written callee got no {method}; it saw:\n{}",
            self.seen
        )
    }

    /// A response to `request` (its Via, From, To + tag, Call-ID, CSeq).
    fn answer(&self, request: &str, to: std::net::SocketAddr, status: &str, sdp: &str) {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for line in request.lines() {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            match name.as_str() {
                "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                    out.push_str(line.trim_end());
                    out.push_str("\r\n");
                }
                "to" | "t" => {
                    out.push_str(line.trim_end());
                    // In a dialog the To already carries this tag.
                    if !line.contains("tag=") {
                        out.push_str(";tag=handcallee77");
                    }
                    out.push_str("\r\n");
                }
                _ => {}
            }
        }
        let local = self.socket.local_addr().expect("local address");
        out.push_str(&format!("Contact: <sip:bob@{local}>\r\n"));
        if !sdp.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()));
        self.socket
            .send_to(out.as_bytes(), to)
            .expect("callee sends");
    }
}

/// The media address and RTP port an SDP body names (session or media
/// c= line, first m=audio), and its RTCP port (a=rtcp, else RTP + 1).
fn sdp_media(sdp: &str) -> (std::net::IpAddr, u16, u16) {
    let ip = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no c= line in\n{sdp}"));
    let rtp: u16 = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio line in\n{sdp}"));
    let rtcp = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=rtcp:"))
        .and_then(|a| a.split_whitespace().next()?.parse().ok())
        .unwrap_or(rtp + 1);
    (ip, rtp, rtcp)
}

/// One RTP packet (PCMU, 160 bytes of silence).
fn rtp_packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xff, 160));
    p
}

/// An endpoint on the PBX side sends RTP, then RTCP SR + SDES naming
/// itself (CNAME `bob@<its address>`, NAME, TOOL), through an anchored call
/// from a SIPp caller; what arrives at the caller's RTCP port must decode
/// and name nothing of it: no address of the inside, no name, no tool
/// (issue 12 item 2, the RTCP part).
#[test]
fn rtcp_sdes_reaches_the_other_side_without_the_senders_names() {
    use tests::rtcp::{item, rtcp_leak, sdes_items, sender_report_with_sdes};

    const NAME: &str = "rtcp_sdes_reaches_the_other_side_without_the_senders_names";
    if skip_unless_privileged(NAME) || skip_unless_sipp(NAME) {
        return;
    }
    let lab = Lab::start("rtcp", &LabConfig::default());
    let plan = *lab.plan();
    let pbx = plan.host_ip(Host::Pbx);
    let carrier = plan.host_ip(Host::Carrier);
    let timeout = Some(Duration::from_millis(100));
    let sip = lab.net().udp_socket(plan.host(Host::Pbx));
    sip.set_read_timeout(timeout).expect("timeout");
    let rtp = lab.net().udp_socket((pbx, PEER_MEDIA_PORT).into());
    let rtcp = lab.net().udp_socket((pbx, PEER_MEDIA_PORT + 1).into());
    // The SIPp caller's RTCP port (RTP + 1; SIPp binds RTP and RTP + 2).
    let heard = lab.net().udp_socket((carrier, PEER_MEDIA_PORT + 1).into());
    heard.set_read_timeout(timeout).expect("timeout");
    let mut callee = HandCallee {
        socket: sip,
        seen: String::new(),
    };

    // The call: 4 s up, then the caller's BYE.
    let uac = lab
        .peer("caller-long.xml", Host::Carrier)
        .remote(plan.realm(Realm::Outside))
        .start();
    let (invite, sbc) = callee.expect("INVITE ", Duration::from_secs(5));
    let offer = invite.split("\r\n\r\n").nth(1).unwrap_or_default();
    let (media_ip, media_rtp, media_rtcp) = sdp_media(offer);
    let sdp = format!(
        "v=0\r\no=bob 424242 1 IN IP4 {pbx}\r\ns=bob's call\r\nc=IN IP4 {pbx}\r\nt=0 0\r\n\
         m=audio {PEER_MEDIA_PORT} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
         a=ssrc:3735928559 cname:bob@{pbx}\r\n"
    );
    callee.answer(&invite, sbc, "200 OK", &sdp);
    let _ = callee.expect("ACK ", Duration::from_secs(5));

    // RTP first (the relay learns the leg from it), then RTCP, a few times
    // over a second: bounded, and to the SBC's own anchor only.
    let sender = sender_report_with_sdes(
        0xdead_beef,
        &[
            (item::CNAME, &format!("bob@{pbx}")),
            (item::NAME, "Bob at the PBX"),
            (item::TOOL, "bobphone 4.2"),
        ],
    );
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    for seq in 0..25u16 {
        rtp.send_to(&rtp_packet(0xdead_beef, seq), (media_ip, media_rtp))
            .expect("send RTP");
        if seq % 5 == 4 {
            rtcp.send_to(&sender, (media_ip, media_rtcp))
                .expect("send RTCP");
        }
        // (The read timeout paces the loop: at most 100 ms a round.)
        if let Ok((n, _)) = heard.recv_from(&mut buf) {
            received.push(buf[..n].to_vec());
        }
    }
    for _ in 0..10 {
        if let Ok((n, _)) = heard.recv_from(&mut buf) {
            received.push(buf[..n].to_vec());
        }
    }
    let (bye, sbc) = callee.expect("BYE ", Duration::from_secs(10));
    callee.answer(&bye, sbc, "200 OK", "");
    let uac = uac.wait();
    assert!(ok(&uac), "{}", uac.report());

    assert!(
        !received.is_empty(),
        "no RTCP reached the caller's side\n--- sbc ---\n{}",
        lab.daemon_stderr()
    );
    let pbx_text = pbx.to_string();
    let inside = plan.realm_ip(Realm::Inside).to_string();
    let leak = rtcp_leak(
        &received,
        &[
            &pbx_text,
            &inside,
            "bob",
            "Bob at the PBX",
            "bobphone",
            &format!("{pbx}"),
        ],
    );
    assert!(leak.is_none(), "{}", leak.unwrap_or_default());
    // What arrived still describes a source: the SBC's own CNAME for it.
    let items: Vec<(u8, String)> = received
        .iter()
        .filter_map(|d| tests::rtcp::decode(d))
        .flat_map(|p| sdes_items(&p))
        .collect();
    eprintln!(
        "{} RTCP datagrams reached the caller's side; their SDES items: {items:?}",
        received.len()
    );
    assert!(
        items.iter().any(|(kind, _)| *kind == item::CNAME),
        "no CNAME in what arrived: {items:?}"
    );
    // And the SIP side of the same call hides the callee's SDP names.
    assert!(
        !uac.messages.contains("bob") && !uac.messages.contains(&pbx_text),
        "{}",
        uac.report()
    );
    let _ = std::fs::remove_dir_all(&uac.dir);
    lab.shutdown();
}

// --- baresip on both sides -------------------------------------------------

/// The tones the two phones play: each must hear the other's.
const CALLER_TONE: f64 = 880.0;
const CALLEE_TONE: f64 = 440.0;

/// How much of what a phone heard must be the other's tone (relative
/// power, see [`tests::baresip::tone_power`]): G.711 and a relay leave a
/// clean tone near 0.5 or more; silence or the phone's own tone near 0.
const HEARD: f64 = 0.2;

/// The sum of the samples of `name` with `realm="{realm}"`.
fn realm_metric(metrics: &str, name: &str, realm: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("realm=\"{realm}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// What one baresip call left behind, read before its lab is removed.
struct AudioCall {
    caller_log: String,
    callee_log: String,
    /// How much of the other's tone each phone heard.
    caller_heard: f64,
    callee_heard: f64,
    /// Where each phone's RTP came from, as it logged it.
    caller_rtp_from: Option<String>,
    callee_rtp_from: Option<String>,
    metrics: String,
    sbc: String,
}

impl AudioCall {
    fn context(&self) -> String {
        format!(
            "heard: caller {:.3}, callee {:.3}\n--- caller ---\n{}\n--- callee ---\n{}\n\
             --- metrics ---\n{}\n--- sbc ---\n{}",
            self.caller_heard,
            self.callee_heard,
            self.caller_log,
            self.callee_log,
            self.metrics
                .lines()
                .filter(|l| l.starts_with("sbc_media"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.sbc
        )
    }
}

/// One baresip call through `lab`: the phone on the carrier trunk's
/// address dials the phone on the pbx trunk's address through realm
/// `outside`; both play their tone for about 7 s.
fn baresip_call(lab: &Lab) -> AudioCall {
    use tests::baresip::{Softphone, tone_power};

    let plan = *lab.plan();
    let mut callee = Softphone::new(
        &lab.dir().join("callee"),
        plan.host(Host::Pbx),
        "pbx",
        CALLEE_TONE,
    );
    let mut caller = Softphone::new(
        &lab.dir().join("caller"),
        plan.host(Host::Carrier),
        "alice",
        CALLER_TONE,
    );
    callee.start(lab.net(), 10, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let dial = format!("/dial sip:pbx@{}", plan.realm(Realm::Outside));
    caller.start(lab.net(), 7, &[&dial]);
    caller.wait(Duration::from_secs(12));
    callee.wait(Duration::from_secs(5));
    AudioCall {
        caller_log: caller.log(),
        callee_log: callee.log(),
        caller_heard: tone_power(&caller.heard(), CALLEE_TONE),
        callee_heard: tone_power(&callee.heard(), CALLER_TONE),
        caller_rtp_from: caller.rtp_from(),
        callee_rtp_from: callee.rtp_from(),
        metrics: lab
            .admin_get("/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default(),
        sbc: lab.daemon_stderr(),
    }
}

/// A local route in the lab's namespace: what is sent to `anchor`'s
/// address leaves from `phone`'s, as a phone with one address sends.
fn send_to_anchor_from(lab: &Lab, anchor: Realm, phone: Host) {
    let plan = lab.plan();
    let status = lab
        .net()
        .command("ip")
        .args(["route", "add", "local"])
        .arg(format!("{}/32", plan.realm_ip(anchor)))
        .args(["dev", "lo", "table", "local", "src"])
        .arg(plan.host_ip(phone).to_string())
        .status()
        .expect("run ip route");
    assert!(status.success(), "ip route add failed");
}

fn skip_unless_baresip(name: &str) -> bool {
    skip_unless_privileged(name)
        || skip_unless_tool(name, "baresip", "-h", "apt-get install baresip")
}

/// Two baresip softphones call each other through the SBC and each hears
/// the other's tone, relayed by the SBC's anchors. baresip binds its RTP to
/// every address, so in the lab's loopback namespace the kernel would send
/// it from 127.0.0.1, which its SDP does not name (the next test); here a
/// local route per anchor makes each phone send from its own address, as a
/// phone with one address does.
#[test]
fn baresip_phones_hear_each_other_through_the_sbc() {
    const NAME: &str = "baresip_phones_hear_each_other_through_the_sbc";
    if skip_unless_baresip(NAME) {
        return;
    }
    let mut lab = Lab::start("baresip", &LabConfig::default());
    let plan = *lab.plan();
    assert!(
        lab.net().is_isolated(),
        "the lab needs a namespace of its own"
    );
    for (anchor, phone) in [(Realm::Outside, Host::Carrier), (Realm::Inside, Host::Pbx)] {
        send_to_anchor_from(&lab, anchor, phone);
    }
    let call = baresip_call(&lab);
    eprintln!(
        "heard: caller {:.3} of the callee's tone, callee {:.3} of the caller's",
        call.caller_heard, call.callee_heard
    );
    assert!(
        call.caller_log.contains("Call established"),
        "{}",
        call.context()
    );
    // Each phone's RTP came from the SBC's anchor on its own realm.
    let from_outside = call.caller_rtp_from.clone().unwrap_or_default();
    let from_inside = call.callee_rtp_from.clone().unwrap_or_default();
    assert!(
        from_outside.starts_with(&format!("{}:", plan.realm_ip(Realm::Outside)))
            && from_inside.starts_with(&format!("{}:", plan.realm_ip(Realm::Inside))),
        "RTP came from {from_outside} and {from_inside}\n{}",
        call.context()
    );
    let (caller_heard, callee_heard) = (call.caller_heard, call.callee_heard);
    assert!(
        caller_heard > HEARD && callee_heard > HEARD,
        "the caller heard {caller_heard:.3} of the callee's tone, the callee {callee_heard:.3} \
         of the caller's\n{}",
        call.context()
    );
    for realm in ["outside", "inside"] {
        let packets = realm_metric(&call.metrics, "sbc_media_packets_total", realm);
        assert!(
            packets > 100.0,
            "{packets} packets on {realm}\n{}",
            call.context()
        );
    }
    lab.assert_daemon_healthy();
    lab.shutdown();
}

/// The same phones without the local routes: their RTP comes from
/// 127.0.0.1, an address neither their SDP nor their signaling names (a
/// multi-homed softphone, issue 12 item 3). On a strict realm the relay
/// refuses to learn it and reports both legs at once; on realms that list
/// their networks with `latch_from_networks`, both phones hear each other.
/// The two labs run side by side.
#[test]
fn baresip_whose_rtp_comes_from_another_address_is_heard_where_its_realm_allows_it() {
    const NAME: &str =
        "baresip_whose_rtp_comes_from_another_address_is_heard_where_its_realm_allows_it";
    if skip_unless_baresip(NAME) {
        return;
    }
    let learning = |plan: Plan| {
        let mut toml = plan.toml(&LabConfig::default());
        for realm in [Realm::Outside, Realm::Inside] {
            let media = format!("media = {{ address = \"{}\" }}\n", plan.realm_ip(realm));
            toml = toml.replace(
                &media,
                &format!("{media}networks = [\"127.0.0.0/8\"]\nlatch_from_networks = true\n"),
            );
        }
        // baresip starts sending a few seconds after the answer.
        toml.replace(
            "xdp = { mode = \"off\", interfaces = [] }\n",
            "xdp = { mode = \"off\", interfaces = [] }\n\
             latching = { learning_window_ms = 10000, strict_source_ip = true }\n",
        )
    };
    let (strict, learned) = std::thread::scope(|s| {
        let strict = s.spawn(|| {
            let lab = Lab::start("baresip-strict", &LabConfig::default());
            let call = baresip_call(&lab);
            lab.shutdown();
            call
        });
        let learned = s.spawn(|| {
            let plan = Plan::next();
            let lab = Lab::start_toml("baresip-learn", plan, &learning(plan));
            let call = baresip_call(&lab);
            lab.shutdown();
            call
        });
        (
            strict
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            learned
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    eprintln!(
        "heard: strict {:.3} / {:.3}, learned {:.3} / {:.3} (caller / callee)",
        strict.caller_heard, strict.callee_heard, learned.caller_heard, learned.callee_heard
    );
    // Strict: the call is up, nothing relayed, both legs reported.
    assert!(
        strict.caller_log.contains("Call established"),
        "{}",
        strict.context()
    );
    let (caller_heard, callee_heard) = (strict.caller_heard, strict.callee_heard);
    assert!(
        caller_heard < HEARD && callee_heard < HEARD,
        "a strict realm relayed media from an address it may not learn: the caller heard \
         {caller_heard:.3}, the callee {callee_heard:.3}\n{}",
        strict.context()
    );
    for realm in ["outside", "inside"] {
        assert_eq!(
            realm_metric(&strict.metrics, "sbc_media_not_latched_total", realm),
            1.0,
            "{}",
            strict.context()
        );
    }
    // Learned from the realms' networks: audio both ways.
    let (caller_heard, callee_heard) = (learned.caller_heard, learned.callee_heard);
    assert!(
        caller_heard > HEARD && callee_heard > HEARD,
        "the caller heard {caller_heard:.3} of the callee's tone, the callee {callee_heard:.3} \
         of the caller's\n{}",
        learned.context()
    );
    for realm in ["outside", "inside"] {
        assert_eq!(
            realm_metric(&learned.metrics, "sbc_media_not_latched_total", realm),
            0.0,
            "{}",
            learned.context()
        );
    }
}

/// baresip as an access phone: it registers through the SBC's access realm
/// to the PBX (the registrar), which calls the Contact it was given and
/// echoes RTP; the call reaches baresip, which answers, and its audio comes
/// back through both anchors. The registrar sees only the SBC.
#[test]
fn baresip_registers_through_the_access_realm_and_answers_the_registrars_call() {
    use tests::baresip::Softphone;
    use tests::sipp::assert_no_leak;

    const NAME: &str = "baresip_registers_through_the_access_realm_and_answers_the_registrars_call";
    if skip_unless_baresip(NAME) {
        return;
    }
    let plan = Plan::next();
    // The outside realm is the phones' access realm; the PBX its registrar.
    let media = format!(
        "media = {{ address = \"{}\" }}\n",
        plan.realm_ip(Realm::Outside)
    );
    let toml = plan.toml(&LabConfig::default()).replacen(
        &media,
        &format!("{media}access = {{ registrar = \"pbx\", keepalive_secs = 0 }}\n"),
        1,
    );
    let lab = Lab::start_toml("baresip-access", plan, &toml);
    let phone_ip = plan.host_ip(Host::Carrier);
    // baresip's RTP leaves from the address of its SDP (see the first
    // baresip test).
    send_to_anchor_from(&lab, Realm::Outside, Host::Carrier);
    let registrar = lab.start_callee(
        &lab.peer("registrar-calls-phone.xml", Host::Pbx)
            .rtp_echo()
            .timeout(Duration::from_secs(30)),
    );
    let mut phone = Softphone::new(
        &lab.dir().join("phone"),
        plan.host(Host::Carrier),
        "100",
        CALLER_TONE,
    );
    phone.register(&format!("sip:100@{}", plan.realm(Realm::Outside)), 60);
    phone.start(lab.net(), 8, &[]);
    phone.wait(Duration::from_secs(12));
    let registrar = registrar.wait();
    let log = phone.log();
    let context = format!(
        "--- phone ---\n{log}\n--- registrar ---\n{}\n--- sbc ---\n{}",
        registrar.report(),
        lab.daemon_stderr()
    );
    assert!(registrar.status.success(), "{context}");
    registrar.assert_success(1);
    assert!(log.contains("Call established"), "{context}");
    // Media both ways: the phone's RTP reached the registrar (which echoed
    // it), and the echo came back to the phone from the SBC's anchor.
    let rtp_from = phone.rtp_from().unwrap_or_default();
    assert!(
        rtp_from.starts_with(&format!("{}:", plan.realm_ip(Realm::Outside))),
        "RTP came from {rtp_from:?}\n{context}"
    );
    let metrics = lab
        .admin_get("/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    for realm in ["outside", "inside"] {
        let packets = realm_metric(&metrics, "sbc_media_packets_total", realm);
        assert!(packets > 20.0, "{packets} packets on {realm}\n{context}");
    }
    // The registrar never saw the phone's address; the phone never saw the
    // registrar's.
    assert_no_leak(&registrar.messages, &[&phone_ip.to_string(), "baresip"]);
    assert_no_leak(&log, &[&plan.host_ip(Host::Pbx).to_string()]);
    lab.shutdown();
}
