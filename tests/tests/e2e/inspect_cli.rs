//! `sbc inspect` as an operator runs it: the real binary over captured
//! messages, human and JSON output, and its exit status.

use serde_json::Value;
use tests::{corpus, run_sbc};

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .expect("inspect prints UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[test]
fn every_rfc4475_message_gets_a_verdict_and_bad_ones_set_the_exit_status() {
    let dir = corpus().join("rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus present")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 50, "49 RFC 4475 messages plus test.dat");

    let out = run_sbc(
        std::iter::once("inspect".into())
            .chain(std::iter::once("--json".into()))
            .chain(files.iter().map(|p| p.clone().into_os_string())),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "some torture messages do not parse"
    );
    let reports = json_lines(&out.stdout);
    assert_eq!(reports.len(), files.len());
    let by_name = |name: &str| {
        reports
            .iter()
            .find(|r| {
                r["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(&format!("/{name}.dat")))
            })
            .unwrap_or_else(|| panic!("{name} reported"))
    };

    let clerr = by_name("clerr");
    assert_eq!(clerr["parsed"], false);
    assert_eq!(clerr["verdict"]["action"], "answer");
    assert_eq!(clerr["verdict"]["status"], 400);
    assert_eq!(
        clerr["verdict"]["reason"],
        "Bad Request (Content-Length exceeds body)"
    );

    let wsinv = by_name("wsinv");
    assert_eq!(wsinv["parsed"], true);
    assert_eq!(wsinv["verdict"]["action"], "accept");
    assert_eq!(wsinv["request"], "INVITE");
    assert_eq!(wsinv["cseq"], "9 INVITE");
    assert_eq!(wsinv["vias"].as_array().map(Vec::len), Some(3));

    // A REGISTER shows what an access realm would bind.
    let regescrt = by_name("regescrt");
    assert_eq!(regescrt["binding"]["aor"], "sip:user@example.com");
    assert_eq!(regescrt["binding"]["expires"], 3600);
    assert!(wsinv.get("binding").is_none());

    assert_eq!(by_name("badvers")["verdict"]["status"], 505);
    assert_eq!(by_name("bext01")["verdict"]["status"], 420);
    assert_eq!(by_name("zeromf")["verdict"]["status"], 483);
    assert_eq!(by_name("unkscm")["verdict"]["status"], 416);
    assert_eq!(by_name("bigcode")["verdict"]["action"], "drop");
    assert_eq!(by_name("scalarlg")["verdict"]["action"], "drop");
}

#[test]
fn human_output_names_the_defect_and_a_clean_file_exits_zero() {
    let dir = corpus().join("rfc4475");
    let out = run_sbc(["inspect".into(), dir.join("clerr.dat").into_os_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("answer 400 Bad Request (Content-Length exceeds body)"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));

    let out = run_sbc(["inspect".into(), dir.join("wsinv.dat").into_os_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wsinv.dat: accept"), "{text}");
    assert!(text.contains("call_id: "), "{text}");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unreadable_files_and_bad_arguments_exit_two() {
    let out = run_sbc(["inspect", "/nonexistent/capture.sip"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = run_sbc(["inspect"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_sbc(["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}
