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
