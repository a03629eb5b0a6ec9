//! Draining a node (SIGQUIT) end to end, with the real daemon and SIPp:
//!
//! - A call is up when the drain begins: readiness turns 503 and
//!   `sbc_draining` 1, a new call is refused 503 with `Retry-After`, the call
//!   up goes on (a re-INVITE to hold and one to take it back, then its
//!   caller's BYE, all through the SBC), and once it has ended the daemon
//!   exits by itself, status 0, within its 1 s tick.
//! - A call outlives `drain.deadline_secs`: at the deadline the SBC ends it
//!   as SIGTERM does (BYE to both sides, a CDR saying `shutdown`) and exits.
//! - SIGUSR2 (exit for a restart) on a node without a pinned XDP fast path
//!   has nothing to hand over: it stops as SIGTERM does. The restart with
//!   the fast path pinned is `restart.rs`.
// A test measures its own deadlines.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::lab::{Host, Lab, LabConfig, Plan};
use tests::netns::skip_unless_sipp;
use tests::sipp::{Sipp, SippHandle};

/// How long a condition the daemon reaches on its 1 s tick is polled for.
const SETTLE: Duration = Duration::from_secs(5);

fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn peer_logged(dir: &Path, line: &str) -> bool {
    fs::read_to_string(dir.join("messages.log")).is_ok_and(|log| log.contains(line))
}

/// A lab whose daemon drains with `deadline_secs` and writes CDRs into
/// the lab's directory; returns the lab and the CDR path.
fn draining_lab(name: &str, deadline_secs: u32) -> (Lab, std::path::PathBuf) {
    let plan = Plan::next();
    let mut lab = Lab::peers_only_with(name, plan);
    let cdr = lab.dir().join("cdr.jsonl");
    let toml = format!(
        "{}\n[cdr]\npath = {:?}\n\n[drain]\ndeadline_secs = {deadline_secs}\n",
        plan.toml(&LabConfig::default()),
        cdr.display().to_string()
    );
    lab.start_daemon(&toml);
    (lab, cdr)
}

fn cdr_records(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("CDR line ({e}): {l}")))
        .collect()
}

/// The value of the series `series` (name and labels, exactly), if any.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.split(' ').next() == Some(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A caller that holds and takes back the call 3 s after it is answered,
/// then hangs up: `caller-hold.xml` with its first pause made 3 s, so a
/// drain can begin while the call is up and before its re-INVITEs.
fn slow_hold_caller(lab: &Lab) -> Sipp {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/caller-hold.xml");
    let text = fs::read_to_string(&shipped).expect("caller-hold.xml");
    let slow = text.replacen(
        "<pause milliseconds=\"200\"/>",
        "<pause milliseconds=\"3000\"/>",
        1,
    );
    assert_ne!(slow, text, "caller-hold.xml has a first pause");
    let path = lab.dir().join("caller-slow-hold.xml");
    fs::write(&path, slow).expect("write scenario");
    let plan = lab.plan();
    lab.net().place(
        Sipp::scenario_file(path)
            .local(plan.host_ip(Host::Carrier), tests::lab::SIP_PORT)
            .media(plan.host_ip(Host::Carrier), tests::lab::PEER_MEDIA_PORT)
            .remote(plan.realm(Plan::realm_of(Host::Carrier)))
            .timeout(Duration::from_secs(20)),
    )
}

#[test]
fn drain_refuses_new_calls_lets_the_call_up_finish_and_exits() {
    const NAME: &str = "drain_refuses_new_calls_lets_the_call_up_finish_and_exits";
    if skip_unless_sipp(NAME) {
        return;
    }
    let (mut lab, cdr) = draining_lab("drain", 60);
    let callee = lab.start_callee(&lab.peer("callee-hold.xml", Host::Pbx));
    let caller = slow_hold_caller(&lab).start();
    assert!(
        poll(SETTLE, || peer_logged(caller.dir(), "ACK sip:")
            .then_some(()))
        .is_some(),
        "the call was not answered\n--- sbc stderr ---\n{}",
        lab.daemon_stderr()
    );

    let drained = Instant::now();
    lab.signal("QUIT");
    let not_ready = poll(Duration::from_secs(2), || {
        lab.admin_get("/health/ready")
            .filter(|(status, _)| *status == 503)
    });
    assert!(
        not_ready
            .as_ref()
            .is_some_and(|(_, body)| body.trim() == "draining"),
        "readiness turns false when draining, and says why: {not_ready:?}"
    );
    let metrics = lab
        .admin_get("/metrics")
        .map(|(_, m)| m)
        .unwrap_or_default();
    assert_eq!(
        metric(&metrics, "sbc_draining"),
        Some(1.0),
        "sbc_draining:\n{metrics}"
    );

    // A new call is refused with 503 and a Retry-After.
    let carrier = lab.plan().host_ip(Host::Carrier);
    let refused = lab
        .peer("caller-rejected.xml", Host::Carrier)
        .local(carrier, tests::lab::SIP_PORT + 2)
        .media(carrier, tests::lab::PEER_MEDIA_PORT + 10)
        .remote(lab.plan().realm(Plan::realm_of(Host::Carrier)))
        .timeout(Duration::from_secs(10))
        .run();
    refused.assert_success(1);
    let log = &refused.messages;
    assert!(
        log.contains("SIP/2.0 503") && log.contains("Retry-After:"),
        "503 with Retry-After:\n{log}"
    );

    // The call up holds, takes back and hangs up through the draining SBC.
    let caller = caller.wait();
    let ended = Instant::now();
    let callee = lab.finish_callee(&caller, callee);
    caller.assert_success(1);
    callee.assert_success(1);
    assert!(
        ended.duration_since(drained) >= Duration::from_secs(1),
        "the call went on well after the drain began"
    );

    // Then the daemon exits by itself.
    let (status, killed) = lab.wait_exit(Duration::from_secs(5));
    let exit_after_last_call = ended.elapsed();
    eprintln!(
        "drain: call ended {:?} after SIGQUIT, daemon gone {exit_after_last_call:?} after the call ended",
        ended.duration_since(drained)
    );
    assert!(
        status.success() && !killed,
        "the daemon exits once the last call ended ({status}, killed: {killed})\n{}",
        lab.daemon_stderr()
    );
    assert!(
        lab.daemon_stderr().contains("drain complete"),
        "{}",
        lab.daemon_stderr()
    );
    let records = cdr_records(&cdr);
    let answered: Vec<&Value> = records
        .iter()
        .filter(|r| r["hangup_by"] == "caller" && r["answer_time"].is_string())
        .collect();
    assert_eq!(answered.len(), 1, "the call's CDR: {records:?}");
    lab.shutdown();
}

/// A call from the carrier to the PBX whose peers wait for the SBC's BYE
/// (`caller-wait-bye.xml`), once answered: (callee, caller).
fn call_waiting_for_bye(lab: &Lab) -> (SippHandle, SippHandle) {
    let callee = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let caller = lab
        .peer("caller-wait-bye.xml", Host::Carrier)
        .remote(lab.plan().realm(Plan::realm_of(Host::Carrier)))
        .start();
    assert!(
        poll(SETTLE, || peer_logged(caller.dir(), "ACK sip:")
            .then_some(()))
        .is_some(),
        "the call was not answered\n--- sbc stderr ---\n{}",
        lab.daemon_stderr()
    );
    (callee, caller)
}

/// The peers of [`call_waiting_for_bye`] both got their BYE and answered
/// it; the CDRs written at `cdr`.
fn both_hung_up(lab: &Lab, caller: SippHandle, callee: SippHandle, cdr: &Path) -> Vec<Value> {
    let caller = caller.wait();
    let callee = lab.finish_callee(&caller, callee);
    caller.assert_success(1);
    callee.assert_success(1);
    cdr_records(cdr)
}

#[test]
fn drain_deadline_ends_the_calls_left_with_bye_and_exits() {
    const NAME: &str = "drain_deadline_ends_the_calls_left_with_bye_and_exits";
    if skip_unless_sipp(NAME) {
        return;
    }
    const DEADLINE_SECS: u32 = 2;
    let (mut lab, cdr) = draining_lab("drain-deadline", DEADLINE_SECS);
    // Both peers wait for a BYE the SBC sends at the deadline.
    let (callee, caller) = call_waiting_for_bye(&lab);
    let drained = Instant::now();
    lab.signal("QUIT");
    let (status, killed) = lab.wait_exit(Duration::from_secs(u64::from(DEADLINE_SECS) + 10));
    let exited = drained.elapsed();
    eprintln!("drain deadline {DEADLINE_SECS} s: daemon gone {exited:?} after SIGQUIT");
    assert!(
        status.success() && !killed,
        "the daemon exits after the deadline ({status}, killed: {killed})\n{}",
        lab.daemon_stderr()
    );
    assert!(
        exited >= Duration::from_secs(u64::from(DEADLINE_SECS)),
        "not before the deadline: {exited:?}"
    );
    let records = both_hung_up(&lab, caller, callee, &cdr);
    assert!(
        records.len() == 1
            && records[0]["hangup_by"] == "sbc"
            && records[0]["hangup_reason"] == "shutdown",
        "one CDR, ended by the SBC's shutdown: {records:?}"
    );
    lab.shutdown();
}

#[test]
fn sigusr2_without_a_pinned_fast_path_stops_as_sigterm() {
    const NAME: &str = "sigusr2_without_a_pinned_fast_path_stops_as_sigterm";
    if skip_unless_sipp(NAME) {
        return;
    }
    // The lab runs without XDP: a restart has nothing to hand over, so the
    // calls up are ended (not abandoned) and the exit status is 0, not 75.
    let (mut lab, cdr) = draining_lab("usr2-no-pin", 60);
    let (callee, caller) = call_waiting_for_bye(&lab);
    lab.signal("USR2");
    let (status, killed) = lab.wait_exit(Duration::from_secs(10));
    assert!(
        status.code() == Some(0) && !killed,
        "exit as for SIGTERM ({status}, killed: {killed})\n{}",
        lab.daemon_stderr()
    );
    let records = both_hung_up(&lab, caller, callee, &cdr);
    assert!(
        records.len() == 1 && records[0]["hangup_reason"] == "shutdown",
        "the call was ended by the stop: {records:?}"
    );
    lab.shutdown();
}
