//! `sbc check-config` as an operator runs it: the real binary on the shipped
//! files, on a deliberately broken file, and with bad arguments.

use std::path::PathBuf;

use tests::{run_sbc, workspace};

/// A scratch directory for this test process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sbc-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("sbc prints UTF-8")
}

#[test]
fn shipped_files_are_ok_with_a_summary() {
    let default = workspace().join("config/default.toml");
    let out = run_sbc(["check-config".as_ref(), default.as_os_str()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("{}: ok\n", default.display())),
        "{stdout}"
    );
    for part in [
        "outside (udp 127.0.0.1:5060, tcp 127.0.0.1:5060; media 127.0.0.1)",
        "inside (udp 127.0.0.2:5060, tcp 127.0.0.2:5060; media 127.0.0.2)",
        "pbx (udp 127.0.0.3:5060 in inside)",
        "carrier (udp 127.0.0.4:5060 in outside)",
        "(realm outside -> pbx)",
        "(realm inside -> carrier)",
        "metrics on 127.0.0.1:9660",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from {stdout}");
    }

    // No file: the embedded default, which is the same lab.
    let out = run_sbc(["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(embedded): ok"),
        "{}",
        text(&out.stdout)
    );

    let example = workspace().join("config/examples/carrier-and-pbx.toml");
    let out = run_sbc(["check-config".as_ref(), example.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_broken_file_gets_every_problem_with_file_line_and_field() {
    let scratch = Scratch::new("check-config");
    let file = scratch.0.join("broken.toml");
    let default = std::fs::read_to_string(workspace().join("config/default.toml"))
        .expect("read default.toml");
    // Two validation problems: a misspelt realm and an odd media port.
    let broken = default
        .replacen("realm = \"inside\"", "realm = \"insde\"", 1)
        .replacen("port_min = 20000", "port_min = 20001", 1);
    assert_ne!(broken, default, "the edits applied");
    std::fs::write(&file, &broken).expect("write broken config");
    let line_of = |needle: &str| {
        broken
            .lines()
            .position(|l| l.contains(needle))
            .expect("edited line present")
            + 1
    };

    let out = run_sbc(["check-config".as_ref(), file.as_os_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let name = file.display();
    let realm = format!(
        "{name}:{}:9: trunk \"pbx\": field `trunk[0].realm`: unknown realm \"insde\" (hint: known realms: outside, inside, access)",
        line_of("realm = \"insde\"")
    );
    let port = format!(
        "{name}:{}:12: media: field `media.port_min`: port_min 20001 is odd",
        line_of("port_min = 20001")
    );
    assert!(stderr.contains(&realm), "{realm:?} missing from\n{stderr}");
    assert!(stderr.contains(&port), "{port:?} missing from\n{stderr}");
    assert!(stderr.contains(&format!("{name}: 2 problems")), "{stderr}");

    // An unknown key: serde's list of expected keys plus a suggestion.
    let misspelt = default.replacen("options_interval_secs", "options_interval", 1);
    std::fs::write(&file, &misspelt).expect("write misspelt config");
    let out = run_sbc(["check-config".as_ref(), file.as_os_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = misspelt
        .lines()
        .position(|l| l.starts_with("options_interval ="))
        .expect("edited line present")
        + 1;
    assert!(
        stderr.contains(&format!(
            "{name}:{line}:1: trunk \"pbx\": field `trunk[0].options_interval`: unknown field `options_interval`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean `options_interval_secs`?"),
        "{stderr}"
    );
}

#[test]
fn unreadable_files_and_bad_arguments_exit_2() {
    let out = run_sbc(["check-config", "/nonexistent/sbc.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/sbc.toml: cannot read"));

    let out = run_sbc(["check-config", "a.toml", "b.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("usage: sbc check-config"));
}

/// A realm with a TLS listener and mutual TLS, and a TLS trunk, naming
/// files in `dir`.
fn tls_config(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        r#"[[realm]]
name = "carrier"
listen = [{{ transport = "tls", address = "127.0.0.1:5061" }}]
media = {{ address = "127.0.0.1" }}
tls = {{ certificate = "{d}/sbc.pem", private_key = "{d}/sbc.key", ca = "{d}/Clients-ca.pem", require_client_certificate = true }}

[[trunk]]
name = "carrier-tls"
realm = "carrier"
address = "127.0.0.4:5061"
transport = "tls"
tls = {{ ca = "{d}/Carrier-ca.pem", server_name = "sip.carrier.test" }}

[[route]]
name = "all"
targets = ["carrier-tls"]
"#
    )
}

#[test]
fn tls_files_are_checked_and_what_each_side_presents_is_said() {
    let scratch = Scratch::new("check-config-tls");
    let dir = &scratch.0;
    let sbc_ca = tests::pki::Ca::new(dir, "Sbc");
    sbc_ca.issue("sbc", &["sbc.test", "127.0.0.1"]);
    tests::pki::Ca::new(dir, "Clients");
    tests::pki::Ca::new(dir, "Carrier");
    let file = dir.join("tls.toml");
    let toml = tls_config(dir);
    std::fs::write(&file, &toml).expect("write config");
    let out = run_sbc(["check-config".as_ref(), file.as_os_str()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for part in [
        "realm \"carrier\" tls 127.0.0.1:5061 presents \"sbc.test\" (names sbc.test, 127.0.0.1; issued by \"Sbc\"; valid until ",
        "requires a client certificate issued by CA \"Clients\"",
        "trunk \"carrier-tls\" tls 127.0.0.4:5061 verifies the server as \"sip.carrier.test\" against CA \"Carrier\"; presents realm \"carrier\"'s \"sbc.test\"",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from {stdout}");
    }

    // Another certificate's key: a problem at the line of private_key.
    sbc_ca.issue("other", &["other.test"]);
    let broken = toml.replacen("/sbc.key", "/other.key", 1);
    std::fs::write(&file, &broken).expect("write config");
    let out = run_sbc(["check-config".as_ref(), file.as_os_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = broken
        .lines()
        .position(|l| l.contains("/other.key"))
        .expect("the tls line")
        + 1;
    assert!(
        stderr.contains(&format!("tls.toml:{line}:"))
            && stderr.contains("field `realm[0].tls.private_key`")
            && stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
}
