//! The operations files under `config/` checked by the tools that consume
//! them, and against the code they describe:
//!
//! * `promtool check config` on a prometheus.yml made of the shipped scrape
//!   config and alert rules; `promtool check rules` on the rules;
//!   `promtool test rules` on `sbc-alerts.test.yml` (two alerts' behaviour);
//! * the Grafana dashboard parses, and its queries and the alert rules name
//!   only metrics a real `sbc::metrics::Metrics` registry exports, while
//!   every exported family has a panel (so neither can drift from the code);
//! * `systemd-analyze verify` on the unit, where systemd is installed.
//!
//! promtool is required under CI (`CI=true` or `SBC_REQUIRE_PRIVILEGED=1`)
//! and skipped with a notice elsewhere; systemd-analyze is never required.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use sbc::metrics::{
    BuildInfo, CallOutcome, Direction, MediaDropReason, MediaPath, MessageKind, Metrics,
    RejectReason, ReloadResult, StatusClass, TransportDropReason, XdpFallbackReason, XdpMode,
};
use sbc::transport::{TlsFailure, TlsSide};
use serde_json::Value;
use tests::netns::privileged_required;

fn config_dir() -> PathBuf {
    tests::workspace().join("config")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Whether `tool` runs; when it does not, skips (returns false) with a
/// notice, or fails when `required`.
fn have(tool: &str, test: &str, required: bool) -> bool {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        assert!(
            !required,
            "{test}: {tool} is not installed, and it is required here (CI=true or \
             SBC_REQUIRE_PRIVILEGED=1): scripts/test.sh --install-only installs it"
        );
        eprintln!("SKIPPED {test}: {tool} is not installed");
    }
    runs
}

fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sbc-packaging-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn promtool_accepts_the_scrape_config_with_the_alert_rules() {
    if !have("promtool", "promtool_check_config", privileged_required()) {
        return;
    }
    let scrape = read(&config_dir().join("prometheus/sbc-scrape.yml"));
    assert!(
        scrape.contains("job_name: sbc"),
        "the alerts match job=\"sbc\""
    );
    let rules = config_dir().join("prometheus/sbc-alerts.yml");
    let scratch = Scratch::new("config");
    let prometheus = scratch.0.join("prometheus.yml");
    // What an operator on Prometheus < 2.43 writes: the rules referenced,
    // the scrape_configs pasted in (the file is a complete top-level key).
    let text = format!(
        "global:\n  evaluation_interval: 15s\nrule_files:\n  - {}\n{scrape}",
        rules.display()
    );
    std::fs::write(&prometheus, text).expect("write prometheus.yml");
    let out = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&prometheus)
        .output()
        .expect("run promtool");
    check(&out, "promtool check config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("18 rules found"), "{stdout}");
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    if !have("promtool", "promtool_rules", privileged_required()) {
        return;
    }
    let dir = config_dir().join("prometheus");
    let out = Command::new("promtool")
        .args(["check", "rules", "sbc-alerts.yml"])
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    check(&out, "promtool check rules");
    let out = Command::new("promtool")
        .args(["test", "rules", "sbc-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    check(&out, "promtool test rules sbc-alerts.test.yml");
    let rules = read(&dir.join("sbc-alerts.yml"));
    for alert in [
        "SbcDown",
        "SbcTrunkDown",
        "SbcSipParseErrorsSpike",
        "SbcRejectedCallsSpike",
        "SbcMediaTimeouts",
        "SbcXdpNotAttached",
        "SbcMediaPortsNearlyExhausted",
        "SbcConfigReloadFailed",
        "SbcSignalingSlow",
        "SbcOverloaded",
        "SbcTlsCertificateExpiring",
        "SbcTlsHandshakesFailing",
        "SbcClusterSteppingDown",
        "SbcClusterNoActiveNode",
        "SbcClusterRedisUnreachable",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}\n")),
            "{alert} missing"
        );
    }
}

/// The exposition of a registry in which every family has a series.
fn exposition() -> String {
    let m = Metrics::new(BuildInfo::current(true));
    m.sip_message(
        "outside",
        Direction::In,
        MessageKind::Response(StatusClass::Success),
    );
    m.sip_parse_error("outside");
    m.sip_retransmission("outside");
    m.set_sip_transactions_active(1);
    m.set_calls_active("outside", 1);
    m.call_finished("outside", "pbx", CallOutcome::Answered);
    m.call_setup(std::time::Duration::from_millis(300));
    m.rejected("outside", RejectReason::Acl);
    m.set_media_streams_active(MediaPath::Xdp, 1);
    m.media_relayed(MediaPath::Xdp, "outside", 1, 172);
    m.media_dropped(MediaDropReason::UnknownFlow, 1);
    m.set_media_ports_free("outside", 100);
    m.set_media_reserve_endpoints("192.0.2.1".parse().expect("literal"), 16);
    m.media_reserve_missed(1);
    m.media_timeout();
    m.set_xdp_attached("eth0", XdpMode::Native);
    m.xdp_fallback("eth0", XdpFallbackReason::Unsupported);
    m.set_trunk_up("pbx", true);
    m.set_trunk_target_up("pbx", "127.0.0.3:5060".parse().expect("literal"), true);
    m.set_trunk_calls_active("pbx", 1);
    m.config_reload(ReloadResult::Success, SystemTime::UNIX_EPOCH);
    m.transport_dropped("outside", TransportDropReason::QueueFull, 1);
    m.call_error("build");
    m.tls_handshake_failed("outside", TlsSide::Inbound, TlsFailure::Timeout, 1);
    m.set_tls_certificates(&[sbc::tls::Expiry {
        owner: sbc::tls::Owner::Realm,
        name: "outside".to_owned(),
        role: sbc::tls::Role::Certificate,
        subject: "sbc.example.net".to_owned(),
        not_after: 1_800_000_000,
    }]);
    // A node of a pair registers these beside the rest.
    sbc::cluster::ClusterMetrics::register(m.registry());
    sbc::cluster::calls::ReplicationMetrics::register(m.registry());
    let text = m.encode_text(m.started()).expect("encode");
    String::from_utf8(text).expect("exposition is UTF-8")
}

/// Every `sbc_*` identifier in `text`.
fn sbc_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("sbc_") {
        let start = i + at;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        // Only a whole identifier (not the tail of `xsbc_...`), and a name
        // rather than the `sbc_*` of prose.
        if (start == 0 || !ident(bytes[start - 1])) && end > start + "sbc_".len() {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// Every `expr` of every panel and target in a dashboard.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics_and_cover_every_family() {
    let exposition = exposition();
    // Series names as exported (histograms as _bucket/_sum/_count).
    let series: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let families: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    assert!(families.len() >= 20, "families: {families:?}");

    let path = config_dir().join("grafana/sbc-dashboard.json");
    let dashboard: Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() > 20, "dashboard queries: {queries:?}");
    let used: BTreeSet<String> = queries.iter().flat_map(|q| sbc_names(q)).collect();
    let unknown: Vec<&String> = used.difference(&series).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the SBC does not export: {unknown:?}"
    );
    let uncovered: Vec<&String> = families
        .iter()
        .filter(|f| !used.iter().any(|u| u.starts_with(f.as_str())))
        .collect();
    assert!(
        uncovered.is_empty(),
        "metric families without a dashboard panel: {uncovered:?}"
    );

    let alerts = read(&config_dir().join("prometheus/sbc-alerts.yml"));
    let alert_names = sbc_names(&alerts);
    assert!(alert_names.len() >= 7, "{alert_names:?}");
    let unknown: Vec<&String> = alert_names.difference(&series).collect();
    assert!(
        unknown.is_empty(),
        "the alert rules name metrics the SBC does not export: {unknown:?}"
    );
}

#[test]
fn sbc_names_finds_whole_identifiers_only() {
    let names = sbc_names("rate(sbc_calls_total{x=\"y\"}[5m]) / xsbc_no + sbc_up, sbc_*");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["sbc_calls_total", "sbc_up"]
    );
}

#[test]
fn systemd_unit_verifies() {
    if !have("systemd-analyze", "systemd_unit_verifies", false) {
        return;
    }
    let unit = read(&config_dir().join("sbc.service"));
    for needle in [
        "ExecStart=/usr/local/bin/sbc --config /etc/sbc/sbc.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_SYS_RESOURCE CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(needle), "sbc.service lacks {needle}");
    }
    // verify insists the ExecStart binary exists: point it at this build's.
    let binary = tests::sbc_binary();
    let scratch = Scratch::new("unit");
    let copy = scratch.0.join("sbc.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sbc", &binary.display().to_string()),
    )
    .expect("write unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    check(&out, "systemd-analyze verify sbc.service");
    // verify exits 0 on some warnings; a line naming our unit is a problem.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sbc.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {stderr}");
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_metric_is_fed_by_the_daemon() {
    // The metric contract: a family is exported only if something feeds
    // it. Every method of `impl Metrics` that records (all but the
    // constructor and the scrape side) must be called from the product's
    // code, outside metrics.rs and its tests: a family whose feeder nobody
    // calls (sbc_transport_dropped_total once, sbc_sip_retransmissions_total
    // too) fails here, and is fed or deleted.
    const NOT_FEEDERS: [&str; 5] = ["current", "new", "registry", "started", "encode_text"];
    let src = tests::workspace().join("sbc/src");
    let metrics = read(&src.join("metrics.rs"));
    let body = &metrics[metrics.find("impl Metrics {").expect("impl Metrics")..];
    let feeders: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub fn "))
        .filter_map(|l| l.split('(').next())
        .filter(|name| !NOT_FEEDERS.contains(name))
        .collect();
    assert!(feeders.len() > 20, "found only {feeders:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let product: String = files
        .iter()
        .filter(|p| !p.ends_with("metrics.rs") && !p.to_string_lossy().contains("metrics/"))
        .map(|p| read(p))
        .collect();
    let unfed: Vec<&&str> = feeders
        .iter()
        .filter(|name| !product.contains(&format!(".{name}(")))
        .collect();
    assert!(unfed.is_empty(), "Metrics methods nothing calls: {unfed:?}");
}
