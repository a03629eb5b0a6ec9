//! TLS files as the configuration names them: what loads, what each bad
//! file is reported as (and at which field and line), and what
//! `check-config` says each TLS listener and trunk presents and verifies.
//! Every key and certificate is generated here, into a scratch directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ::tests::pki::{Ca, Leaf};

use super::*;
use crate::config::{Config, Problem};

/// A scratch directory per test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sbc-tls-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::disallowed_methods)] // tests read the wall clock, like a load does
fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn a_certificate_and_its_key_load_and_say_who_they_are() {
    let dir = Scratch::new("load");
    let ca = Ca::new(dir.path(), "Lab");
    let sbc = ca.issue("sbc", &["sbc.test", "127.0.0.1"]);
    let id = Identity::load(&sbc.certificate, &sbc.private_key, now(), true)
        .unwrap_or_else(|(_, e)| panic!("loads: {e}"));
    assert_eq!(id.info.subject, "sbc.test");
    assert_eq!(id.info.issuer, "Lab");
    assert_eq!(id.info.names, ["sbc.test", "127.0.0.1"]);
    assert!(id.info.not_after > unix(now()));
    let described = id.info.describe();
    assert!(
        described.contains("names sbc.test, 127.0.0.1") && described.contains("issued by \"Lab\""),
        "{described}"
    );
    let ca_set = CaSet::load(&ca.path, now()).unwrap_or_else(|e| panic!("CA loads: {e}"));
    assert_eq!(ca_set.infos.len(), 1);
    assert_eq!(ca_set.infos[0].subject, "Lab");
}

#[test]
fn each_unusable_file_is_named_with_its_reason() {
    let dir = Scratch::new("bad");
    let ca = Ca::new(dir.path(), "Lab");
    let a = ca.issue("a", &["a.test"]);
    let b = ca.issue("b", &["b.test"]);
    let err = |cert: &Path, key: &Path| match Identity::load(cert, key, now(), true) {
        Ok(_) => panic!("{} + {} should not load", cert.display(), key.display()),
        Err(e) => e,
    };

    let (file, e) = err(&a.certificate, &b.private_key);
    assert_eq!(file, PairFile::PrivateKey);
    assert!(matches!(e, TlsFileError::KeyMismatch { .. }), "{e}");

    let missing = dir.path().join("missing.pem");
    let (file, e) = err(&missing, &a.private_key);
    assert_eq!(file, PairFile::Certificate);
    assert!(matches!(e, TlsFileError::Read { .. }), "{e}");
    assert!(e.to_string().contains("missing.pem"), "{e}");

    // A key where the certificate belongs, and the other way round.
    let (file, e) = err(&a.private_key, &a.private_key);
    assert_eq!(file, PairFile::Certificate);
    assert!(matches!(e, TlsFileError::NoCertificate { .. }), "{e}");
    let (file, e) = err(&a.certificate, &a.certificate);
    assert_eq!(file, PairFile::PrivateKey);
    assert!(matches!(e, TlsFileError::NoKey { .. }), "{e}");

    let expired = ca.issue_leaf(&Leaf {
        stem: "old",
        common_name: "old.test",
        names: &["old.test"],
        validity: Some(((2020, 1, 1), (2021, 1, 1))),
    });
    let (file, e) = err(&expired.certificate, &expired.private_key);
    assert_eq!(file, PairFile::Certificate);
    assert!(matches!(e, TlsFileError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("expired on 2021-01-01"), "{e}");

    let future = ca.issue_leaf(&Leaf {
        stem: "new",
        common_name: "new.test",
        names: &["new.test"],
        validity: Some(((2099, 1, 1), (2100, 1, 1))),
    });
    let (_, e) = err(&future.certificate, &future.private_key);
    assert!(matches!(e, TlsFileError::NotYetValid { .. }), "{e}");

    let nameless = ca.issue_leaf(&Leaf {
        stem: "nameless",
        common_name: "nameless",
        names: &[],
        validity: None,
    });
    let (_, e) = err(&nameless.certificate, &nameless.private_key);
    assert!(matches!(e, TlsFileError::NoNames { .. }), "{e}");
    // A client certificate is not verified by name: it may have none.
    assert!(Identity::load(&nameless.certificate, &nameless.private_key, now(), false).is_ok());
}

#[test]
fn a_ca_set_needs_one_valid_ca_and_the_system_bundle_loads() {
    let dir = Scratch::new("ca");
    let lapsed = dir.path().join("lapsed.pem");
    let old = Ca::new(dir.path(), "Old");
    let current = Ca::new(dir.path(), "Current");
    // A CA certificate that lapsed: issued (by Old) with a past validity.
    let expired = old.issue_leaf(&Leaf {
        stem: "expired-ca",
        common_name: "Expired",
        names: &[],
        validity: Some(((2015, 1, 1), (2016, 1, 1))),
    });
    let pem = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&lapsed, pem(&expired.certificate)).unwrap_or_else(|e| panic!("{e}"));
    match CaSet::load(&lapsed, now()) {
        Err(TlsFileError::Expired { .. }) => {}
        other => panic!("a set of lapsed CAs is refused, got {other:?}"),
    }
    let mixed = dir.path().join("mixed.pem");
    std::fs::write(&mixed, pem(&expired.certificate) + &pem(&current.path))
        .unwrap_or_else(|e| panic!("{e}"));
    let set = CaSet::load(&mixed, now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.infos.len(), 2);
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if system.exists() {
        let set = CaSet::load(system, now()).unwrap_or_else(|e| panic!("system bundle: {e}"));
        assert!(set.infos.len() > 50, "{}", set.infos.len());
    }
}

#[test]
fn utc_dates_are_civil_dates() {
    assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc_date(1_609_459_199), "2020-12-31 23:59:59 UTC");
    assert_eq!(utc_date(4_102_444_800), "2100-01-01 00:00:00 UTC");
}

/// A two-realm configuration with a TLS listener on `outside` and a TLS
/// trunk on `inside`, naming files in `dir`.
fn tls_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"[[realm]]
name = "outside"
listen = [
  {{ transport = "udp", address = "127.0.0.1:5060" }},
  {{ transport = "tls", address = "127.0.0.1:5061" }},
]
media = {{ address = "127.0.0.1" }}
tls = {{ certificate = "{d}/sbc.pem", private_key = "{d}/sbc.key", ca = "{d}/Clients-ca.pem", require_client_certificate = true }}

[[realm]]
name = "inside"
listen = [{{ transport = "tls", address = "127.0.0.2:5061" }}]
media = {{ address = "127.0.0.2" }}
tls = {{ certificate = "{d}/inside.pem", private_key = "{d}/inside.key" }}

[[trunk]]
name = "carrier"
realm = "inside"
address = "127.0.0.3:5061"
transport = "tls"
tls = {{ ca = "{d}/Carrier-ca.pem", server_name = "sip.carrier.test", certificate = "{d}/client.pem", private_key = "{d}/client.key" }}

[[route]]
name = "out"
match = {{ source_realm = "outside" }}
targets = ["carrier"]
"#
    )
}

fn problems(text: &str) -> Vec<Problem> {
    match Config::from_str_named(text, "t.toml") {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The single problem at `field`.
fn problem_at(text: &str, field: &str) -> Problem {
    let all = problems(text);
    let found: Vec<&Problem> = all.iter().filter(|p| p.field == field).collect();
    assert_eq!(found.len(), 1, "one problem at {field}, got {all:#?}");
    found[0].clone()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

/// The lab's files: a realm certificate, clients' and carrier's CAs, a
/// client certificate.
fn lab(dir: &Path) {
    let ours = Ca::new(dir, "Sbc");
    ours.issue("sbc", &["sbc.test", "127.0.0.1"]);
    ours.issue("client", &["client.sbc.test"]);
    ours.issue("inside", &["inside.sbc.test", "127.0.0.2"]);
    Ca::new(dir, "Clients");
    Ca::new(dir, "Carrier");
}

#[test]
fn a_tls_configuration_loads_and_says_what_each_side_presents_and_verifies() {
    let dir = Scratch::new("config-ok");
    lab(dir.path());
    let text = tls_config(dir.path());
    let config = Config::from_str_named(&text, "t.toml")
        .unwrap_or_else(|e| panic!("valid: {:#?}", e.problems()));
    let lines = config.tls_summary();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("realm \"outside\" tls 127.0.0.1:5061 presents \"sbc.test\"")
            && lines[0].contains("requires a client certificate issued by CA \"Clients\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("realm \"inside\" tls 127.0.0.2:5061 presents \"inside.sbc.test\"")
            && lines[1].ends_with("asks for no client certificate"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("trunk \"carrier\" tls 127.0.0.3:5061 verifies the server as \"sip.carrier.test\" against CA \"Carrier\"")
            && lines[2].contains("presents \"client.sbc.test\""),
        "{}",
        lines[2]
    );
    let settings = TlsSettings::from_config(&config, &|_| Vec::new(), now())
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert!(settings.server("outside").is_some());
    assert!(settings.server("inside").is_some());
    assert!(settings.server("nowhere").is_none());
    let trunk: SocketAddr = "127.0.0.3:5061".parse().unwrap_or_else(|e| panic!("{e}"));
    let (_, name) = settings
        .client("inside", trunk)
        .unwrap_or_else(|| panic!("the trunk has a client config"));
    assert_eq!(name.to_str(), "sip.carrier.test");
    let roles: Vec<(Owner, &str, Role)> = settings
        .expiries()
        .iter()
        .map(|e| (e.owner, e.name.as_str(), e.role))
        .collect();
    assert_eq!(
        roles,
        [
            (Owner::Realm, "outside", Role::Certificate),
            (Owner::Realm, "outside", Role::Ca),
            (Owner::Realm, "inside", Role::Certificate),
            (Owner::Trunk, "carrier", Role::Certificate),
            (Owner::Trunk, "carrier", Role::Ca),
        ]
    );
}

#[test]
fn unusable_tls_files_are_problems_at_their_field_and_line() {
    let dir = Scratch::new("config-bad");
    lab(dir.path());
    let base = tls_config(dir.path());
    let d = dir.path().display().to_string();

    // The carrier's key where the realm's belongs.
    let other = Ca::new(dir.path(), "Other");
    other.issue("stray", &["stray.test"]);
    let text = base.replacen(&format!("{d}/sbc.key"), &format!("{d}/stray.key"), 1);
    let p = problem_at(&text, "realm[0].tls.private_key");
    assert_eq!(p.line, line_of(&text, "stray.key"));
    assert!(
        p.message.contains("does not belong to the certificate"),
        "{p}"
    );

    let text = base.replacen(&format!("{d}/Carrier-ca.pem"), &format!("{d}/nope.pem"), 1);
    let p = problem_at(&text, "trunk[0].tls.ca");
    assert_eq!(p.line, line_of(&text, "nope.pem"));
    assert!(
        p.message.contains("cannot read") && p.message.contains("nope.pem"),
        "{p}"
    );

    Ca::new(dir.path(), "Sbc").issue_leaf(&Leaf {
        stem: "sbc",
        common_name: "sbc.test",
        names: &["sbc.test"],
        validity: Some(((2019, 1, 1), (2020, 1, 1))),
    });
    let p = problem_at(&base, "realm[0].tls.certificate");
    assert!(p.message.contains("expired on 2020-01-01"), "{p}");
    assert!(p.to_string().contains("renew"), "{p}");
}

#[test]
fn tls_settings_must_fit_the_transport() {
    let dir = Scratch::new("config-shape");
    lab(dir.path());
    let base = tls_config(dir.path());
    let d = dir.path().display().to_string();

    // A TLS listener on a realm without a certificate.
    let realm_tls = base
        .lines()
        .find(|l| l.starts_with("tls = "))
        .unwrap_or_else(|| panic!("realm tls line"))
        .to_owned();
    let text = base.replacen(&format!("{realm_tls}\n"), "", 1);
    let p = problem_at(&text, "realm[0].listen[1].transport");
    assert!(p.message.contains("needs the realm's certificate"), "{p}");

    let text = base.replacen(&format!(", ca = \"{d}/Clients-ca.pem\""), "", 1);
    let p = problem_at(&text, "realm[0].tls.require_client_certificate");
    assert!(p.message.contains("without a CA set"), "{p}");

    let text = base.replacen(&format!("ca = \"{d}/Carrier-ca.pem\", "), "", 1);
    let p = problem_at(&text, "trunk[0].tls.ca");
    assert!(p.message.contains("needs a CA set"), "{p}");

    let text = base.replacen("transport = \"tls\"\ntls", "transport = \"udp\"\ntls", 1);
    let all = problems(&text);
    assert!(
        all.iter()
            .any(|p| p.field == "trunk[0].tls" && p.message.contains("speaks udp, not tls")),
        "{all:#?}"
    );

    let text = base.replacen(&format!(", private_key = \"{d}/client.key\""), "", 1);
    let p = problem_at(&text, "trunk[0].tls.certificate");
    assert!(p.message.contains("needs its private_key"), "{p}");

    let text = base.replacen("sip.carrier.test", "not a name!", 1);
    let p = problem_at(&text, "trunk[0].tls.server_name");
    assert!(p.message.contains("not a DNS name"), "{p}");

    let text = base.replacen(&format!("{d}/sbc.pem"), "sbc.pem", 1);
    let p = problem_at(&text, "realm[0].tls.certificate");
    assert!(p.message.contains("not an absolute path"), "{p}");
}

#[test]
fn a_domain_trunk_without_transport_keeps_its_tls_for_what_naptr_chooses() {
    let dir = Scratch::new("naptr-tls");
    lab(dir.path());
    let base = tls_config(dir.path());
    let named = base
        .replacen(
            "address = \"127.0.0.3:5061\"\ntransport = \"tls\"\n",
            "address = \"carrier.example.net\"\n",
            1,
        )
        .replacen(", server_name = \"sip.carrier.test\"", "", 1);
    let config = Config::from_str_named(&named, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let trunk = &config.trunks[0];
    assert!(trunk.naptr_decides() && trunk.may_speak_tls());
    let realm = config.realms.iter().find(|r| r.name == "inside");
    assert_eq!(trunk.dns_transports(realm), [Transport::Tls]);
    // The addresses DNS gave get client settings that verify the domain
    // (RFC 5922 §4), not the SRV target.
    let target: SocketAddr = "192.0.2.44:5061".parse().unwrap_or_else(|e| panic!("{e}"));
    let settings = TlsSettings::from_config(&config, &|_| vec![target], now())
        .unwrap_or_else(|p| panic!("{p:?}"));
    let (_, name) = settings
        .client("inside", target)
        .unwrap_or_else(|| panic!("the resolved target has a client config"));
    assert_eq!(name.to_str(), "carrier.example.net");

    // Without the tls table, NAPTR is not asked about TLS at all.
    let plain = named.replacen(
        &named
            .lines()
            .find(|l| l.starts_with("tls = { ca = "))
            .map(|l| format!("{l}\n"))
            .unwrap_or_else(|| panic!("trunk tls line")),
        "",
        1,
    );
    // The realm listens on TLS only: such a trunk could never be reached.
    let p = problem_at(&plain, "trunk[0].address");
    assert!(p.message.contains("no tls table"), "{p}");
    let config = Config::from_str_named(
        &plain.replacen(
            "listen = [{ transport = \"tls\", address = \"127.0.0.2:5061\" }]",
            "listen = [\n  { transport = \"udp\", address = \"127.0.0.2:5060\" },\n  { transport = \"tls\", address = \"127.0.0.2:5061\" },\n]",
            1,
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let realm = config.realms.iter().find(|r| r.name == "inside");
    assert!(!config.trunks[0].may_speak_tls());
    assert_eq!(config.trunks[0].dns_transports(realm), [Transport::Udp]);

    // A port given: A/AAAA with the default transport (UDP), so the tls
    // table is refused, as for any trunk that does not speak TLS.
    let with_port = named.replacen("carrier.example.net", "carrier.example.net:5061", 1);
    assert!(
        problems(&with_port)
            .iter()
            .any(|p| p.field == "trunk[0].tls" && p.message.contains("speaks udp, not tls")),
        "{with_port}"
    );
}
