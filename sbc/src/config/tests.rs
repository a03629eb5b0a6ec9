//! One test per validation rule (each checks the line, the field and the
//! hint), the serde error paths, and the shipped files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::*;

/// A small valid configuration the tests break one way at a time.
const BASE: &str = r#"[[realm]]
name = "a"
listen = [{ transport = "udp", address = "127.0.0.1:5060" }]
media = { address = "127.0.0.1" }

[[realm]]
name = "b"
listen = [{ transport = "udp", address = "127.0.0.2:5060" }]
media = { address = "127.0.0.2" }

[[trunk]]
name = "t"
realm = "b"
address = "127.0.0.3:5060"

[[route]]
name = "r"
match = { source_realm = "a" }
targets = ["t"]
"#;

/// `BASE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

fn problems(text: &str) -> Vec<Problem> {
    match Config::from_str_named(text, "t.toml") {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => {
            assert!(!e.problems().is_empty(), "an Invalid error has problems");
            e.problems().to_vec()
        }
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

/// The single problem about `field`, checked to sit on the first line holding
/// `line_with`.
fn problem(text: &str, field: &str, line_with: &str) -> Problem {
    problem_on(text, field, line_of(text, line_with))
}

/// The single problem about `field`, checked to sit on `line`.
fn problem_on(text: &str, field: &str, line: usize) -> Problem {
    let all = problems(text);
    let found: Vec<&Problem> = all.iter().filter(|p| p.field == field).collect();
    assert_eq!(found.len(), 1, "one problem at {field}, got {all:#?}");
    let p = found[0].clone();
    assert_eq!(p.file, "t.toml");
    assert_eq!(p.line, line, "line of {p}");
    p
}

fn hint(p: &Problem) -> &str {
    p.hint
        .as_deref()
        .unwrap_or_else(|| panic!("no hint in {p}"))
}

#[test]
fn base_is_valid() {
    if let Err(e) = Config::from_str_named(BASE, "t.toml") {
        panic!("BASE is invalid:\n{e}");
    }
}

#[test]
fn embedded_default_is_valid_and_is_the_two_realm_lab() {
    let config = Config::embedded_default().unwrap_or_else(|e| panic!("default invalid:\n{e}"));
    let realm = |name: &str| {
        config
            .realms
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("realm {name}"))
    };
    for (name, ip) in [("outside", "127.0.0.1"), ("inside", "127.0.0.2")] {
        let ip: IpAddr = ip.parse().expect("literal");
        let r = realm(name);
        let mut listen: Vec<(Transport, SocketAddr)> =
            r.listen.iter().map(|l| (l.transport, l.address)).collect();
        listen.sort();
        let addr = SocketAddr::new(ip, 5060);
        assert_eq!(listen, [(Transport::Udp, addr), (Transport::Tcp, addr)]);
        assert_eq!(r.media.address, ip);
        assert_eq!(r.media.advertised(), ip);
    }
    for (name, realm, addr) in [
        ("pbx", "inside", "127.0.0.3:5060"),
        ("carrier", "outside", "127.0.0.4:5060"),
    ] {
        let t = config
            .trunks
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("trunk {name}"));
        assert_eq!(t.realm, realm);
        assert_eq!(t.address, PeerAddress::Ip(addr.parse().expect("literal")));
    }
    for (from, to) in [("outside", "pbx"), ("inside", "carrier")] {
        let route = config
            .routes
            .iter()
            .find(|r| r.matches.source_realm.as_deref() == Some(from))
            .unwrap_or_else(|| panic!("route from {from}"));
        assert_eq!(route.targets, [to]);
    }
    assert_eq!(
        config.metrics.listen,
        "127.0.0.1:9660".parse::<SocketAddr>().expect("literal")
    );
}

/// Every `.toml` the project ships under `config/` loads and validates.
#[test]
fn every_shipped_toml_file_is_valid() {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("default.toml")),
        "default.toml found among {files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with(root.join("examples"))),
        "examples found among {files:?}"
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| Config::load(f).err().map(|e| e.to_string()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_trunk_realm_names_file_line_column_field_and_known_realms() {
    let text = edit(r#"realm = "b""#, r#"realm = "bb""#);
    let p = problem(&text, "trunk[0].realm", r#"realm = "bb""#);
    assert_eq!(p.column, 9);
    assert_eq!(p.item.as_deref(), Some(r#"trunk "t""#));
    assert_eq!(
        p.to_string(),
        format!(
            "t.toml:{}:9: trunk \"t\": field `trunk[0].realm`: unknown realm \"bb\" (hint: known realms: a, b)",
            p.line
        )
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = edit(r#"realm = "b""#, r#"realm = "x""#)
        .replace(r#"targets = ["t"]"#, r#"targets = ["y"]"#)
        .replace(r#"name = "b""#, r#"name = "a""#);
    let all = problems(&text);
    let fields: Vec<&str> = all.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["realm[1].name", "trunk[0].realm", "route[0].targets[0]"]
    );
    assert!(all.windows(2).all(|w| w[0].line <= w[1].line), "{all:?}");
}

#[test]
fn duplicate_and_malformed_names() {
    let text = edit(r#"name = "b""#, r#"name = "a""#).replace(r#"realm = "b""#, r#"realm = "a""#);
    let p = problem_on(&text, "realm[1].name", line_of(BASE, r#"name = "b""#));
    assert!(p.message.contains("already named \"a\""), "{p}");

    let text = edit(r#"name = "t""#, r#"name = "my trunk""#)
        .replace(r#"targets = ["t"]"#, r#"targets = ["my trunk"]"#);
    let p = problem(&text, "trunk[0].name", "my trunk");
    assert!(hint(&p).contains("metric labels"), "{p}");

    let text = format!(
        "{BASE}\n[[route]]\nname = \"r\"\nmatch = {{ source_realm = \"b\" }}\ntargets = [\"t\"]\n"
    );
    let p = problem_on(&text, "route[1].name", line_of(BASE, "targets") + 3);
    assert!(p.message.contains("another route"), "{p}");
}

#[test]
fn no_realm_is_a_problem_at_the_top_of_the_file() {
    let all = problems("[logging]\nlevel = \"debug\"\n");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((all[0].line, all[0].field.as_str()), (1, "realm"));
    assert!(hint(&all[0]).contains("[[realm]]"));
}

#[test]
fn route_targets_must_be_trunks() {
    let text = edit(r#"targets = ["t"]"#, r#"targets = ["b", "t", "t", "zz"]"#);
    let all = problems(&text);
    let by = |f: &str| {
        all.iter()
            .find(|p| p.field == f)
            .unwrap_or_else(|| panic!("{f} in {all:?}"))
    };
    assert_eq!(
        by("route[0].targets[0]").message,
        "\"b\" is a realm, not a trunk"
    );
    assert_eq!(hint(by("route[0].targets[0]")), "known trunks: t");
    assert!(by("route[0].targets[2]").message.contains("listed twice"));
    assert_eq!(by("route[0].targets[3]").message, "unknown trunk \"zz\"");
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|p| p.line == line_of(&text, "targets")));
}

#[test]
fn route_without_targets_or_failover() {
    let text = edit(r#"targets = ["t"]"#, "targets = []");
    let p = problem(&text, "route[0].targets", "targets = []");
    assert_eq!(hint(&p), "known trunks: t");

    let text = format!(
        "{BASE}\n[[trunk]]\nname = \"t2\"\nrealm = \"b\"\naddress = \"pbx.example.net:5060\"\n"
    )
    .replace(
        r#"targets = ["t"]"#,
        "targets = [\"t\", \"t2\"]\nfailover_on = []",
    );
    let p = problem(&text, "route[0].failover_on", "failover_on = []");
    assert!(p.message.contains("only the first target"), "{p}");
}

#[test]
fn route_match_references_must_exist_and_agree() {
    let text = edit(r#"source_realm = "a""#, r#"source_realm = "c""#);
    let p = problem(&text, "route[0].match.source_realm", "source_realm");
    assert_eq!(hint(&p), "known realms: a, b");

    let text = edit(r#"source_realm = "a""#, r#"source_trunk = "nope""#);
    let p = problem(&text, "route[0].match.source_trunk", "source_trunk");
    assert_eq!(p.message, "unknown trunk \"nope\"");

    let text = edit(
        r#"source_realm = "a""#,
        r#"source_realm = "a", source_trunk = "t""#,
    );
    let p = problem(&text, "route[0].match.source_trunk", "source_trunk");
    assert!(p.message.contains("never taken"), "{p}");

    let text = edit(
        r#"source_realm = "a""#,
        r#"user_prefix = "4 4", domain = "a b""#,
    );
    problem(&text, "route[0].match.user_prefix", "user_prefix");
    problem(&text, "route[0].match.domain", "domain");
}

#[test]
fn a_route_after_a_catch_all_is_never_taken() {
    let text = edit("match = { source_realm = \"a\" }\n", "")
        + "\n[[route]]\nname = \"later\"\nmatch = { source_realm = \"b\" }\ntargets = [\"t\"]\n";
    // An element of an array of tables starts at its `[[route]]` header.
    let p = problem_on(&text, "route[1]", line_of(&text, r#"name = "later""#) - 1);
    assert!(p.message.contains("route \"r\" before it"), "{p}");
    assert!(hint(&p).contains("catch-all last"));
}

#[test]
fn media_port_range_rules() {
    let with = |media: &str| format!("[media]\n{media}\n{BASE}");
    let p = problem(&with("port_min = 20001"), "media.port_min", "port_min");
    assert!(hint(&p).ends_with("use 20000"), "{p}");
    let p = problem(&with("port_max = 60000"), "media.port_max", "port_max");
    assert!(hint(&p).ends_with("use 59999"), "{p}");
    let p = problem(
        &with("port_min = 1000\nport_max = 40001"),
        "media.port_min",
        "port_min",
    );
    assert!(p.message.contains("below 1024"), "{p}");
    let p = problem(
        &with("port_min = 30000\nport_max = 20001"),
        "media.port_max",
        "port_max",
    );
    assert!(p.message.contains("not above"), "{p}");
    // 100 pairs for 10000 calls.
    let p = problem(
        &with("port_min = 20000\nport_max = 20199"),
        "media.port_max",
        "port_max",
    );
    assert!(p.message.contains("holds 100 port pairs"), "{p}");
    assert!(hint(&p).contains("limits.max_calls"));
    let p = problem(
        &with("inactivity_timeout_secs = 0"),
        "media.inactivity_timeout_secs",
        "inactivity",
    );
    assert_eq!(p.message, "must be at least 1");
    let p = problem(
        &with("port_quarantine_secs = 86400"),
        "media.port_quarantine_secs",
        "port_quarantine",
    );
    assert_eq!(p.message, "must be at most 3600");
}

#[test]
fn shared_media_address_needs_two_pairs_per_call() {
    let shared = edit(
        r#"media = { address = "127.0.0.2" }"#,
        r#"media = { address = "127.0.0.1" }"#,
    );
    let text =
        format!("[limits]\nmax_calls = 60\n[media]\nport_min = 20000\nport_max = 20199\n{shared}");
    let p = problem(&text, "media.port_max", "port_max");
    assert!(p.message.contains("fewer than the 120"), "{p}");
    let distinct =
        format!("[limits]\nmax_calls = 60\n[media]\nport_min = 20000\nport_max = 20199\n{BASE}");
    assert!(Config::from_str_named(&distinct, "t.toml").is_ok());
}

#[test]
fn xdp_interface_names() {
    let text = format!(
        "[media.xdp]\nmode = \"native\"\ninterfaces = [\"eth0\", \"eth0\", \"a/b\"]\n{BASE}"
    );
    let all = problems(&text);
    let fields: Vec<&str> = all.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["media.xdp.interfaces[1]", "media.xdp.interfaces[2]"]
    );
    assert!(all.iter().all(|p| p.line == 3));
}

#[test]
fn limits_must_be_positive() {
    let text = format!("[limits]\nmax_calls = 0\n{BASE}");
    let all = problems(&text);
    assert!(
        all.iter()
            .any(|p| p.field == "limits.max_calls" && p.line == 2),
        "{all:?}"
    );
    let text = format!("[limits]\nmax_transactions = 0\n{BASE}");
    problem(&text, "limits.max_transactions", "max_transactions");
}

#[test]
fn listeners_may_not_be_bound_twice() {
    let text = edit(
        r#"address = "127.0.0.2:5060" }"#,
        r#"address = "127.0.0.1:5060" }"#,
    );
    let p = problem_on(
        &text,
        "realm[1].listen[0].address",
        line_of(BASE, "127.0.0.2:5060"),
    );
    assert!(p.message.contains("already bound by realm \"a\""), "{p}");

    // 0.0.0.0 claims every IPv4 address on that port.
    let text = edit(
        r#"address = "127.0.0.2:5060" }"#,
        r#"address = "0.0.0.0:5060" }"#,
    );
    let all = problems(&text);
    assert!(
        all.iter().any(|p| p.field == "realm[1].listen[0].address"),
        "{all:?}"
    );

    // Another transport on the same port is fine.
    let text = edit(
        r#"[{ transport = "udp", address = "127.0.0.2:5060" }]"#,
        r#"[{ transport = "tcp", address = "127.0.0.1:5060" }, { transport = "udp", address = "127.0.0.2:5060" }]"#,
    );
    assert!(Config::from_str_named(&text, "t.toml").is_ok());
}

#[test]
fn metrics_and_media_may_not_take_a_sip_port() {
    let text = format!("[metrics]\nlisten = \"127.0.0.1:5060\"\n{BASE}")
        .replace(
            r#"transport = "udp", address = "127.0.0.1:5060""#,
            r#"transport = "tcp", address = "127.0.0.1:5060""#,
        )
        .replace(
            r#"address = "127.0.0.3:5060""#,
            "address = \"127.0.0.3:5060\"\ntransport = \"udp\"",
        );
    let p = problem(&text, "metrics.listen", "listen = \"127.0.0.1:5060\"");
    assert!(hint(&p).contains("9660"));

    let text = edit(r#""127.0.0.1:5060""#, r#""127.0.0.1:20000""#);
    let p = problem(&text, "realm[0].listen[0].address", "127.0.0.1:20000");
    assert!(p.message.contains("inside the media port range"), "{p}");
}

#[test]
fn realm_listeners_buffers_and_media_addresses() {
    let text = edit(
        r#"listen = [{ transport = "udp", address = "127.0.0.1:5060" }]"#,
        "listen = []",
    );
    let p = problem(&text, "realm[0].listen", "listen = []");
    assert!(hint(&p).contains("transport"));

    let text = edit(r#""127.0.0.1:5060""#, r#""127.0.0.1:0""#);
    problem(&text, "realm[0].listen[0].address", "127.0.0.1:0");

    let text = edit(
        r#"name = "a""#,
        "name = \"a\"\nrecv_buffer_bytes = 100\nsend_buffer_bytes = 8192",
    );
    let p = problem(&text, "realm[0].recv_buffer_bytes", "recv_buffer_bytes");
    assert!(p.message.contains("outside 4096"), "{p}");

    let text = edit(
        r#"media = { address = "127.0.0.1" }"#,
        r#"media = { address = "127.0.0.1", advertise = "2001:db8::1" }"#,
    );
    let p = problem(&text, "realm[0].media.advertise", "advertise");
    assert!(p.message.contains("different families"), "{p}");

    let text = edit(
        r#"media = { address = "127.0.0.1" }"#,
        r#"media = { address = "0.0.0.0" }"#,
    );
    let p = problem(&text, "realm[0].media.address", "0.0.0.0");
    assert!(hint(&p).contains("advertise"), "{p}");
    let text = edit(
        r#"media = { address = "127.0.0.1" }"#,
        r#"media = { address = "0.0.0.0", advertise = "0.0.0.0" }"#,
    );
    problem(&text, "realm[0].media.advertise", "0.0.0.0");
    let text = edit(
        r#"media = { address = "127.0.0.1" }"#,
        r#"media = { address = "::1" }"#,
    );
    let p = problem(&text, "realm[0].media.address", "::1");
    assert!(p.message.contains("family"), "{p}");
}

#[test]
fn more_media_addresses_are_checked_one_by_one() {
    let more = |list: &str| {
        edit(
            r#"media = { address = "127.0.0.1" }"#,
            &format!("media = {{ address = \"127.0.0.1\", more_addresses = {list} }}"),
        )
    };
    let ok = Config::from_str_named(&more(r#"["127.0.0.11", "127.0.0.12"]"#), "t.toml")
        .expect("two more addresses");
    let all: Vec<String> = ok.realms[0]
        .media
        .addresses()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(all, ["127.0.0.1", "127.0.0.11", "127.0.0.12"]);
    assert!(
        ok.media_ranges().len() >= 3,
        "each address gets a port pool"
    );
    for (list, index, words) in [
        (r#"["127.0.0.11", "::1"]"#, 1, "different families"),
        (r#"["0.0.0.0"]"#, 0, "not an address"),
        (r#"["127.0.0.11", "127.0.0.1"]"#, 1, "twice"),
    ] {
        let text = more(list);
        let p = problem(
            &text,
            &format!("realm[0].media.more_addresses[{index}]"),
            "more_addresses",
        );
        assert!(p.message.contains(words), "{list}: {p}");
    }
    let text = edit(
        r#"media = { address = "127.0.0.1" }"#,
        r#"media = { address = "127.0.0.1", advertise = "192.0.2.1", more_addresses = ["127.0.0.11"] }"#,
    );
    let p = problem(&text, "realm[0].media.more_addresses[0]", "more_addresses");
    assert!(p.message.contains("advertise"), "{p}");
    // 100 pairs an address: 150 calls fit a realm only with a second one.
    let limits = |realm_media: &str| {
        format!(
            "[limits]\nmax_calls = 150\n[media]\nport_min = 20000\nport_max = 20199\n{}",
            BASE.replace(r#"media = { address = "127.0.0.1" }"#, realm_media)
                .replace(
                    r#"media = { address = "127.0.0.2" }"#,
                    r#"media = { address = "127.0.0.2", more_addresses = ["127.0.0.22"] }"#
                )
        )
    };
    let one = limits(r#"media = { address = "127.0.0.1" }"#);
    let p = problem(&one, "media.port_max", "port_max");
    assert!(p.message.contains("fewer than the 150"), "{p}");
    let two = limits(r#"media = { address = "127.0.0.1", more_addresses = ["127.0.0.11"] }"#);
    assert!(Config::from_str_named(&two, "t.toml").is_ok(), "{two}");
}

#[test]
fn networks_with_host_bits_suggest_the_network() {
    let text = edit(
        r#"media = { address = "127.0.0.1" }"#,
        "media = { address = \"127.0.0.1\" }\nnetworks = [\"10.0.0.0/8\", \"10.1.2.3/16\"]\nacl = { allow = [\"192.0.2.0/24\"], deny = [\"192.0.2.1/31\"] }",
    );
    let p = problem(&text, "realm[0].networks[1]", "networks");
    assert_eq!(hint(&p), "did you mean 10.1.0.0/16?");
    let p = problem(&text, "realm[0].acl.deny[0]", "acl");
    assert_eq!(hint(&p), "did you mean 192.0.2.0/31?");
}

#[test]
fn trunk_rules() {
    let text = edit(
        r#"address = "127.0.0.3:5060""#,
        "address = \"127.0.0.3:5060\"\ntransport = \"tcp\"",
    );
    let p = problem(&text, "trunk[0].transport", "transport = \"tcp\"");
    assert!(p.message.contains("no IPv4 tcp listener"), "{p}");

    let text = edit(r#""127.0.0.3:5060""#, r#""[2001:db8::5]:5060""#);
    let p = problem(&text, "trunk[0].transport", "[[trunk]]");
    assert!(p.message.contains("no IPv6 udp listener"), "{p}");

    let text = edit(r#""127.0.0.3:5060""#, r#""0.0.0.0:5060""#);
    problem(&text, "trunk[0].address", "0.0.0.0");

    let text = edit(
        r#"address = "127.0.0.3:5060""#,
        "address = \"127.0.0.3:5060\"\nmax_calls = 0\nmax_cps = 0",
    );
    problem(&text, "trunk[0].max_calls", "max_calls");
    let p = problem(&text, "trunk[0].max_cps", "max_cps");
    assert!(hint(&p).contains("no limit"));

    let text = format!("[limits]\nmax_calls = 10\n{BASE}").replace(
        r#"address = "127.0.0.3:5060""#,
        "address = \"127.0.0.3:5060\"\nmax_calls = 11",
    );
    let p = problem(&text, "trunk[0].max_calls", "max_calls = 11");
    assert!(p.message.contains("exceeds limits.max_calls = 10"), "{p}");
}

#[test]
fn dns_servers_and_named_trunks() {
    // A bare name: NAPTR chooses among the realm's listeners, so no
    // transport check; `[dns] servers` must be addresses a query can reach.
    let text = format!(
        "[dns]\nservers = [\"127.0.0.53:53\", \"0.0.0.0:53\"]\ntarget_block_secs = 5\n{BASE}"
    )
    .replace(r#""127.0.0.3:5060""#, r#""sip.example.net""#);
    let p = problem(&text, "dns.servers[1]", "servers");
    assert!(p.message.contains("0.0.0.0:53"), "{p}");
    assert_eq!(problems(&text).len(), 1, "the named trunk itself is fine");
    let text = format!("[dns]\nservers = [\"127.0.0.53\"]\n{BASE}");
    let p = problem(&text, "dns.servers[0]", "servers");
    assert_eq!(p.file, "t.toml");
    assert!(hint(&p).contains("IP:port"), "{p}");
    let text = format!("[dns]\nserver = []\n{BASE}");
    problem(&text, "dns.server", "server =");

    let ok = Config::from_str_named(
        &format!("[dns]\nservers = [\"127.0.0.53:5353\"]\n{BASE}").replace(
            r#""127.0.0.3:5060""#,
            "\"sip.example.net\"\ntransport = \"udp\"",
        ),
        "t.toml",
    )
    .expect("valid");
    assert_eq!(
        ok.dns.servers,
        ["127.0.0.53:5353".parse().expect("literal")]
    );
    assert_eq!(ok.dns.target_block_secs, 30);
    assert_eq!(ok.trunks[0].transport, Some(crate::config::Transport::Udp));
    assert!(
        ok.summary().contains("t (udp sip.example.net in b)"),
        "{}",
        ok.summary()
    );
    let plan = ok.dns_plan();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert!(
        plan[0].starts_with("trunk t: SRV _sip._udp.sip.example.net"),
        "{plan:?}"
    );
    assert!(plan[0].contains("name servers 127.0.0.53:5353"), "{plan:?}");

    // Without a transport, NAPTR for the services the realm listens on; a
    // name with a port asks A/AAAA only; IP trunks need no DNS.
    let teams = Config::from_str_named(
        &BASE
            .replace(r#""127.0.0.3:5060""#, r#""sip.pstnhub.example.net""#)
            .replace(
                "listen = [{ transport = \"udp\", address = \"127.0.0.2:5060\" }]",
                "listen = [{ transport = \"udp\", address = \"127.0.0.2:5060\" }, { transport = \"tcp\", address = \"127.0.0.2:5060\" }]",
            )
            .replace("[[route]]", "[[trunk]]\nname = \"u\"\nrealm = \"b\"\naddress = \"pbx.example.net:5080\"\n\n[[trunk]]\nname = \"v\"\nrealm = \"b\"\naddress = \"127.0.0.9:5060\"\n\n[[route]]"),
        "t.toml",
    )
    .expect("valid");
    let plan = teams.dns_plan();
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert!(
        plan[0].contains("NAPTR sip.pstnhub.example.net (services SIP+D2U, SIP+D2T)")
            && plan[0].contains(
                "SRV _sip._udp.sip.pstnhub.example.net then _sip._tcp.sip.pstnhub.example.net"
            )
            && plan[0].contains("the system's name servers")
            && plan[0].contains("waits 30 s behind the others"),
        "{plan:?}"
    );
    assert!(
        plan[1].starts_with("trunk u: A/AAAA of pbx.example.net, port 5080"),
        "{plan:?}"
    );
    assert!(
        teams
            .summary()
            .contains("t (naptr sip.pstnhub.example.net in b)"),
        "{}",
        teams.summary()
    );
}

#[test]
fn trunk_addresses_parse_as_ip_or_host_and_port() {
    for (text, expected) in [
        (
            "192.0.2.1:5060",
            Ok(PeerAddress::Ip("192.0.2.1:5060".parse().expect("literal"))),
        ),
        (
            "[2001:db8::1]:5080",
            Ok(PeerAddress::Ip(
                "[2001:db8::1]:5080".parse().expect("literal"),
            )),
        ),
        (
            "sip.example.net:5060",
            Ok(PeerAddress::Host {
                host: "sip.example.net".into(),
                port: 5060,
            }),
        ),
        (
            "sip.example.net",
            Ok(PeerAddress::Name {
                host: "sip.example.net".into(),
            }),
        ),
        ("192.0.2.1", Err(())),
        ("sip.example.net:0", Err(())),
        ("-bad.example", Err(())),
        ("-bad.example:5060", Err(())),
        ("192.0.2.300:5060", Err(())),
        ("", Err(())),
    ] {
        assert_eq!(
            PeerAddress::try_from(text.to_owned()).map_err(|_| ()),
            expected,
            "{text}"
        );
    }
    let text = edit(r#""127.0.0.3:5060""#, r#""pbx..example.net""#);
    let p = problem(&text, "trunk[0].address", "pbx..example.net");
    assert!(p.message.contains("expected IP:port"), "{p}");
}

#[test]
fn header_policy_rules_apply_to_defaults_and_trunks() {
    let text = format!(
        "[topology_hiding]\nstrip = [\"Via\", \"Bad Name\", \"Organization\"]\nserver = {{ rewrite = \"\" }}\n{BASE}"
    );
    let all = problems(&text);
    let fields: Vec<&str> = all.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "topology_hiding.strip[0]",
            "topology_hiding.strip[1]",
            "topology_hiding.server.rewrite"
        ]
    );
    assert!(hint(&all[0]).contains("regenerates"));
    assert_eq!(all[2].line, 3);

    let text = edit(
        r#"address = "127.0.0.3:5060""#,
        "address = \"127.0.0.3:5060\"\nheader_policy = { strip = [\"call-id\"], p_asserted_identity = \"pass\" }",
    );
    problem(&text, "trunk[0].header_policy.strip[0]", "header_policy");

    let text = edit(
        r#"address = "127.0.0.3:5060""#,
        "address = \"127.0.0.3:5060\"\nheader_policy = { user_agent = { rewrite = \"SBC\" }, server = \"keep\" }",
    );
    let config = Config::from_str_named(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let policy = config.trunks[0].header_policy.clone().expect("parsed");
    assert_eq!(policy.user_agent, HeaderRewrite::Rewrite("SBC".into()));
    assert_eq!(policy.server, HeaderRewrite::Keep);
    assert_eq!(
        policy.strip,
        HeaderPolicy::default().strip,
        "defaults by function"
    );
}

#[test]
fn unknown_field_names_the_field_lists_the_expected_and_suggests() {
    let text = edit(r#"realm = "b""#, r#"relm = "b""#);
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    let p = &all[0];
    assert_eq!((p.line, p.column), (line_of(&text, "relm"), 1));
    assert_eq!(p.field, "trunk[0].relm");
    assert_eq!(p.item.as_deref(), Some("trunk \"t\""));
    assert!(p.message.contains("unknown field `relm`"), "{p}");
    assert!(
        p.message.contains("`realm`") && p.message.contains("`max_cps`"),
        "{p}"
    );
    assert_eq!(hint(p), "did you mean `realm`?");

    // A unit suffix left out.
    let text = format!("[media]\ninactivity_timeout = 5\n{BASE}");
    let p = problem(&text, "media.inactivity_timeout", "inactivity_timeout");
    assert_eq!(hint(&p), "did you mean `inactivity_timeout_secs`?");
}

#[test]
fn serde_value_errors_are_located() {
    let text = edit(r#""127.0.0.2:5060""#, r#""127.0.0.2""#);
    let p = problem(&text, "realm[1].listen[0].address", "\"127.0.0.2\" }]");
    assert_eq!(p.column, 42);
    assert!(hint(&p).contains("IP:port"), "{p}");

    let text = format!("[sip]\nunknown_methods = \"relai\"\n{BASE}");
    let p = problem(&text, "sip.unknown_methods", "relai");
    assert_eq!(hint(&p), "did you mean `relay`?");

    let text = format!("[media]\nport_min = \"20000\"\n{BASE}");
    let p = problem(&text, "media.port_min", "port_min");
    assert!(p.message.contains("expected u16"), "{p}");

    let text = edit(
        r#"name = "t"
"#,
        "",
    );
    let p = problem(&text, "trunk[0].name", "[[trunk]]");
    assert!(p.message.contains("missing field `name`"), "{p}");
    assert_eq!(p.item.as_deref(), Some("trunk[0]"));
}

#[test]
fn syntax_errors_have_a_line_and_no_field() {
    let text = edit(r#"name = "t""#, r#"name = "t"#);
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].line, line_of(&text, r#"name = "t"#));
    assert_eq!(all[0].field, "");
    assert!(!all[0].to_string().contains("field"), "{}", all[0]);
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = format!("# é€\n{}", edit(r#"realm = "b""#, r#"realm = "é""#));
    let p = problem(&text, "trunk[0].realm", r#"realm = "é""#);
    assert_eq!(p.column, 9);
    let located = locate::Located::new("é\né€x");
    assert_eq!(located.line_col(8), (2, 3));
    assert_eq!(
        located.line_col(6),
        (2, 2),
        "inside a character rounds down"
    );
    assert_eq!(located.line_col(99), (2, 4), "past the end clamps");
}

#[test]
fn load_reports_unreadable_files_as_read_errors() {
    match Config::load("/nonexistent/sbc.toml") {
        Err(ConfigError::Read { file, .. }) => assert_eq!(file, "/nonexistent/sbc.toml"),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn acl_and_server_policy_follow_the_config() {
    let acl = Acl {
        allow: vec!["192.0.2.0/24".parse().expect("literal")],
        deny: vec!["192.0.2.128/25".parse().expect("literal")],
    };
    let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
    assert!(acl.permits(ip("192.0.2.1")));
    assert!(!acl.permits(ip("192.0.2.200")), "deny wins");
    assert!(!acl.permits(ip("198.51.100.1")), "not allowed");
    assert!(
        Acl::default().permits(ip("198.51.100.1")),
        "empty allows all"
    );

    let text = format!("[sip]\nunknown_methods = \"relay\"\n{BASE}");
    let config = Config::from_str_named(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(config.sip.server_policy().relay_unknown_methods);
    assert!(!SipConfig::default().server_policy().relay_unknown_methods);
}

#[test]
fn check_config_exit_statuses_and_output() {
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = check_config(&args, &mut out, &mut err).expect("writes to memory");
        (
            status,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    };
    let (status, out, _) = run(&[]);
    assert_eq!(status, 0);
    assert!(
        out.starts_with(&format!("{DEFAULT_NAME}: ok\n3 realms: outside")),
        "{out}"
    );
    assert!(
        out.contains("outside-to-pbx (realm outside -> pbx)"),
        "{out}"
    );
    assert!(
        out.contains("media 127.0.0.6; phones register to pbx (phones 120 s, registrar 3600 s, keepalive 30 s)"),
        "{out}"
    );
    let (status, _, err) = run(&["/nonexistent/sbc.toml"]);
    assert_eq!(status, 2);
    assert!(err.contains("cannot read"), "{err}");
    assert_eq!(run(&["a", "b"]).0, 2);
    assert_eq!(run(&["--json"]).0, 2);
}

#[test]
fn cdr_section_defaults_to_off_and_parses_each_fsync_policy() {
    let config = Config::from_str_named(BASE, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.cdr.path, None, "CDRs are off unless a path is given");
    assert_eq!(config.cdr.fsync, FsyncPolicy::IntervalMs(1_000));
    assert_eq!(config.cdr.queue_records, 10_000);
    for (written, policy) in [
        ("\"every\"", FsyncPolicy::Every),
        ("\"never\"", FsyncPolicy::Never),
        ("{ interval_ms = 250 }", FsyncPolicy::IntervalMs(250)),
    ] {
        let text = format!(
            "[cdr]\npath = \"/var/log/sbc/cdr.jsonl\"\nfsync = {written}\nqueue_records = 7\n{BASE}"
        );
        let config = Config::from_str_named(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.cdr.path.as_deref(),
            Some(Path::new("/var/log/sbc/cdr.jsonl"))
        );
        assert_eq!(config.cdr.fsync, policy, "fsync = {written}");
        assert_eq!(config.cdr.queue_records, 7);
    }
}

#[test]
fn cdr_section_rules() {
    let with = |cdr: &str| format!("[cdr]\n{cdr}\n{BASE}");
    let p = problem(&with("path = \"cdr.jsonl\""), "cdr.path", "path");
    assert!(p.message.contains("not an absolute path"), "{p}");
    assert!(hint(&p).contains("/var/log/sbc/cdr.jsonl"), "{p}");
    let p = problem(&with("path = \"/var/log/sbc/\""), "cdr.path", "path");
    assert!(p.message.contains("names a directory"), "{p}");
    let p = problem(
        &with("fsync = { interval_ms = 0 }"),
        "cdr.fsync.interval_ms",
        "interval_ms",
    );
    assert!(hint(&p).contains("\"every\""), "{p}");
    assert_eq!(p.item.as_deref(), Some("cdr"));
    let p = problem(&with("queue_records = 0"), "cdr.queue_records", "queue");
    assert_eq!(p.message, "must be at least 1");
    // A misspelt policy is a serde error naming the variants, on its line.
    let text = with("fsync = \"always\"");
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].line, line_of(&text, "always"));
    assert!(all[0].message.contains("every"), "{}", all[0]);
}

#[test]
fn logging_format_is_text_or_json() {
    let config = Config::from_str_named(BASE, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.logging.format, LogFormat::Text);
    let text = format!("[logging]\nlevel = \"debug\"\nformat = \"json\"\n{BASE}");
    let config = Config::from_str_named(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (config.logging.level, config.logging.format),
        (LogLevel::Debug, LogFormat::Json)
    );
    let text = format!("[logging]\nformat = \"yaml\"\n{BASE}");
    let all = problems(&text);
    assert_eq!(all[0].field, "logging.format", "{all:?}");
}

#[test]
fn a_listener_behind_1_to_1_nat_advertises_its_public_address() {
    let text = edit(
        r#"address = "127.0.0.1:5060" }"#,
        r#"address = "127.0.0.1:5060", advertise = "203.0.113.10:5080" }"#,
    );
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    let listener = &config.realms[0].listen[0];
    assert_eq!(
        listener.advertised(),
        "203.0.113.10:5080".parse().expect("addr")
    );
    assert_eq!(
        config.realms[1].listen[0].advertised(),
        config.realms[1].listen[0].address
    );

    let text = edit(
        r#"address = "127.0.0.1:5060" }"#,
        r#"address = "127.0.0.1:5060", advertise = "[2001:db8::1]:5060" }"#,
    );
    let p = problem(&text, "realm[0].listen[0].advertise", "advertise");
    assert!(p.message.contains("different families"), "{p}");
    let text = edit(
        r#"address = "127.0.0.1:5060" }"#,
        r#"address = "127.0.0.1:5060", advertise = "203.0.113.10:0" }"#,
    );
    problem(&text, "realm[0].listen[0].advertise", "advertise");

    // A wildcard listener would write 0.0.0.0 into Via and Contact.
    let text = edit(
        r#"address = "127.0.0.1:5060" }"#,
        r#"address = "0.0.0.0:5060" }"#,
    );
    let p = problem(&text, "realm[0].listen[0].address", "0.0.0.0:5060");
    assert!(hint(&p).contains("advertise"), "{p}");
    let text = edit(
        r#"address = "127.0.0.1:5060" }"#,
        r#"address = "0.0.0.0:5060", advertise = "203.0.113.10:5060" }"#,
    );
    assert!(
        problems(&text)
            .iter()
            .all(|p| p.field != "realm[0].listen[0].address"),
        "{:#?}",
        problems(&text)
    );
}

#[test]
fn the_summary_shows_what_a_natted_realm_binds_and_advertises() {
    let text = edit(
        r#"listen = [{ transport = "udp", address = "127.0.0.1:5060" }]
media = { address = "127.0.0.1" }"#,
        r#"listen = [{ transport = "udp", address = "127.0.0.1:5060", advertise = "203.0.113.10:5060" }]
media = { address = "127.0.0.1", advertise = "203.0.113.10" }"#,
    );
    let summary = Config::from_str_named(&text, "t.toml")
        .expect("valid")
        .summary();
    assert!(
        summary.contains(
            "a (udp 127.0.0.1:5060 as 203.0.113.10:5060; media 127.0.0.1 as 203.0.113.10)"
        ),
        "{summary}"
    );
}

#[test]
fn protection_defaults_and_realm_overrides() {
    let config = Config::from_str_named(BASE, "t.toml").expect("valid");
    let global = config.protection_of(0);
    assert!(global.enabled);
    assert_eq!((global.request_rate, global.request_burst), (15, 30));
    assert_eq!(global.ban_secs, 300);
    assert!(
        global
            .scanner_user_agents
            .iter()
            .any(|a| a == "friendly-scanner")
    );
    assert_eq!(config.limits.untrusted_calls_percent, 50);

    let text = edit(
        "media = { address = \"127.0.0.2\" }",
        "media = { address = \"127.0.0.2\" }\nprotection = { request_rate = 100, request_burst = 200, foreign_in_dialog = \"drop\" }",
    );
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    let b = config.protection_of(1);
    assert_eq!((b.request_rate, b.request_burst), (100, 200));
    assert_eq!(b.foreign_in_dialog, ForeignInDialog::Drop);
    assert_eq!(b.ban_secs, 300, "fields not given keep the global value");
    assert_eq!(config.protection_of(0).request_rate, 15);
}

#[test]
fn protection_rules_name_the_field() {
    let text = format!("[protection]\nrequest_rate = 0\n{BASE}");
    problem(&text, "protection.request_rate", "request_rate");
    let text = format!("[protection]\nrequest_rate = 100\nrequest_burst = 10\n{BASE}");
    problem(&text, "protection.request_burst", "request_burst");
    let text = format!("[protection]\nscanner_user_agents = [\"sipvicious\", \" \"]\n{BASE}");
    let all = problems(&text);
    assert!(
        all.iter()
            .any(|p| p.field == "protection.scanner_user_agents[1]"),
        "{all:?}"
    );
    let text = format!("[limits]\nuntrusted_calls_percent = 0\n{BASE}");
    problem(
        &text,
        "limits.untrusted_calls_percent",
        "untrusted_calls_percent",
    );
    let text = format!("[limits]\ntcp_connections_per_source = 0\n{BASE}");
    let p = problem(
        &text,
        "limits.tcp_connections_per_source",
        "tcp_connections_per_source",
    );
    assert!(p.message.contains("outside 1..=1000000"), "{p}");
    assert!(hint(&p).contains("trunk"), "{p}");
    let text =
        format!("[limits]\ntcp_untrusted_percent = 101\ntcp_message_timeout_secs = 0\n{BASE}");
    problem(
        &text,
        "limits.tcp_untrusted_percent",
        "tcp_untrusted_percent",
    );
    problem(
        &text,
        "limits.tcp_message_timeout_secs",
        "tcp_message_timeout_secs",
    );
    let text = edit(
        "media = { address = \"127.0.0.2\" }",
        "media = { address = \"127.0.0.2\" }\nprotection = { max_calls_per_source = 0 }",
    );
    let all = problems(&text);
    assert!(
        all.iter()
            .any(|p| p.field == "realm[1].protection.max_calls_per_source"),
        "{all:?}"
    );
}

#[test]
fn sip_timers_are_bounded_and_ordered() {
    let config = Config::from_str_named(BASE, "t.toml").expect("valid");
    assert_eq!(
        config.sip.timers(),
        crate::sip::transaction::Timers::default(),
        "the defaults are RFC 3261's"
    );
    let text = format!("[sip]\nt1_ms = 10\n{BASE}");
    problem(&text, "sip.t1_ms", "t1_ms");
    let text = format!("[sip]\nt1_ms = 3000\nt2_ms = 2000\n{BASE}");
    problem(&text, "sip.t2_ms", "t2_ms");
}

#[test]
fn a_trunk_response_timeout_is_off_or_between_t1_and_timer_b() {
    let ok = Config::from_str_named(BASE, "t.toml").expect("valid");
    assert_eq!(ok.trunks[0].response_timeout_ms, 0, "timer B by default");
    for good in ["500", "3000", "32000"] {
        let text = edit(
            "address = \"127.0.0.3:5060\"",
            &format!("address = \"127.0.0.3:5060\"\nresponse_timeout_ms = {good}"),
        );
        Config::from_str_named(&text, "t.toml").unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["100", "40000"] {
        let text = edit(
            "address = \"127.0.0.3:5060\"",
            &format!("address = \"127.0.0.3:5060\"\nresponse_timeout_ms = {bad}"),
        );
        let p = problem(&text, "trunk[0].response_timeout_ms", "response_timeout_ms");
        assert!(p.message.contains("outside 500..=32000"), "{p}");
    }
}

#[test]
fn a_cluster_names_its_redis_node_and_timings() {
    let pair =
        format!("[cluster]\nredis_url = \"redis://192.0.2.20:6379\"\nnode_id = \"sbc-a\"\n{BASE}");
    let ok = Config::from_str_named(&pair, "t.toml").expect("valid");
    let cluster = ok.cluster.as_ref().expect("cluster");
    assert_eq!(
        (
            cluster.name.as_str(),
            cluster.lease_ms,
            cluster.renew_ms,
            cluster.call_ttl_secs
        ),
        ("sbc", 1500, 500, 86_400)
    );
    assert_eq!(cluster.mode, ClusterMode::Pair);
    let active = Config::from_str_named(
        &pair.replacen(
            "node_id = \"sbc-a\"",
            "node_id = \"sbc-a\"\nmode = \"active\"",
            1,
        ),
        "t.toml",
    )
    .expect("valid");
    let line = active.cluster_plan().expect("a plan line");
    assert!(
        line.contains("active node \"sbc-a\"") && line.contains("max_cps is split"),
        "{line}"
    );
    let plan = ok.cluster_plan().expect("a plan line");
    assert!(
        plan.contains("node \"sbc-a\" of pair \"sbc\"") && plan.contains("within about 1750 ms"),
        "{plan}"
    );
    assert!(
        Config::from_str_named(BASE, "t.toml")
            .expect("valid")
            .cluster_plan()
            .is_none()
    );

    for (from, to, field) in [
        (
            "redis://192.0.2.20:6379",
            "http://192.0.2.20:6379",
            "cluster.redis_url",
        ),
        (
            "redis://192.0.2.20:6379",
            "redis://user:secret@192.0.2.20:6379",
            "cluster.redis_url",
        ),
        (
            "node_id = \"sbc-a\"",
            "node_id = \"sbc a\"",
            "cluster.node_id",
        ),
        ("node_id = \"sbc-a\"", "node_id = \"\"", "cluster.node_id"),
        (
            "node_id = \"sbc-a\"",
            "node_id = \"sbc-a\"\nlease_ms = 100",
            "cluster.lease_ms",
        ),
        (
            "node_id = \"sbc-a\"",
            "node_id = \"sbc-a\"\nrenew_ms = 600",
            "cluster.renew_ms",
        ),
        (
            "node_id = \"sbc-a\"",
            "node_id = \"sbc-a\"\ncall_ttl_secs = 10",
            "cluster.call_ttl_secs",
        ),
        (
            "node_id = \"sbc-a\"",
            "node_id = \"sbc-a\"\nmode = \"both\"",
            "cluster.mode",
        ),
    ] {
        let text = pair.replacen(from, to, 1);
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.field == field),
            "{to}: {field} in {found:#?}"
        );
    }
    // A node of a pair binds its listeners with IP_FREEBIND.
    assert!(ok.listener_specs().iter().all(|(spec, _)| spec.freebind));
    assert!(
        Config::from_str_named(BASE, "t.toml")
            .expect("valid")
            .listener_specs()
            .iter()
            .all(|(spec, _)| !spec.freebind)
    );
}

#[test]
fn drain_deadline_is_bounded_and_named_with_its_line() {
    let config = Config::from_str_named(BASE, "t.toml").expect("valid");
    assert_eq!(config.drain.deadline_secs, 1_800, "half an hour by default");
    let text = format!("{BASE}\n[drain]\ndeadline_secs = 0\n");
    let p = problem(&text, "drain.deadline_secs", "deadline_secs");
    assert!(hint(&p).contains("SIGTERM"), "{p}");
    let text = format!("{BASE}\n[drain]\ndeadline_secs = 90000\n");
    problem(&text, "drain.deadline_secs", "deadline_secs");
    let text = format!("{BASE}\n[drain]\ndeadline = 10\n");
    problem(&text, "drain.deadline", "deadline");
}

#[test]
fn scheduling_is_off_by_default_and_its_priorities_are_bounded_and_named() {
    use crate::sched::Class;
    let config = Config::from_str_named(BASE, "t.toml").expect("valid");
    assert_eq!(
        config.scheduling.signaling(),
        None,
        "threads left as started"
    );
    assert_eq!(config.scheduling.media(), None);

    let text = format!("{BASE}\n[scheduling]\nsignaling_priority = 10\n");
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    assert_eq!(config.scheduling.signaling(), Some(Class::Fifo(10)));
    // The relay threads inherit the signaling class; without a priority of
    // their own they go back to the ordinary scheduler.
    assert_eq!(config.scheduling.media(), Some(Class::Normal));

    let text = format!("{BASE}\n[scheduling]\npolicy = \"rr\"\nmedia_priority = 20\n");
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    assert_eq!(config.scheduling.signaling(), None);
    assert_eq!(config.scheduling.media(), Some(Class::RoundRobin(20)));

    let plan = config.scheduling_plan().expect("a plan line");
    assert!(
        plan.contains("signaling threads keep their class")
            && plan.contains("relay threads run SCHED_RR priority 20"),
        "{plan}"
    );
    assert_eq!(
        Config::from_str_named(BASE, "t.toml")
            .expect("valid")
            .scheduling_plan(),
        None
    );

    let text = format!("{BASE}\n[scheduling]\nsignaling_priority = 100\n");
    let p = problem(&text, "scheduling.signaling_priority", "signaling_priority");
    assert!(hint(&p).contains("1-99"), "{p}");
    let text = format!("{BASE}\n[scheduling]\nmedia_priority = 200\n");
    problem(&text, "scheduling.media_priority", "media_priority");
    let text = format!("{BASE}\n[scheduling]\npolicy = \"idle\"\n");
    problem(&text, "scheduling.policy", "policy");
}

#[test]
fn scheduling_cpus_are_lists_the_process_may_use_and_the_relay_threads_pin_to_one_each() {
    use crate::sched::CpuList;
    let list = |s: &str| s.parse::<CpuList>().expect("a CPU list");
    let started_on = list("0-7");
    let base = Config::from_str_named(BASE, "t.toml").expect("valid");
    assert!(
        base.scheduling.relay_cpus(&started_on).is_empty(),
        "left as started"
    );

    let text = format!("{BASE}\n[scheduling]\nsignaling_cpus = \"1\"\nmedia_cpus = \"2-3,6\"\n");
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    assert_eq!(config.scheduling.signaling_cpus, Some(list("1")));
    assert_eq!(
        config.scheduling.relay_cpus(&started_on),
        vec![list("2"), list("3"), list("6")],
        "one CPU per relay thread"
    );
    assert_eq!(config.scheduling.check_cpus(&started_on), Ok(()));
    let refused = config
        .scheduling
        .check_cpus(&list("0-2"))
        .expect_err("CPUs 3 and 6 are not allowed");
    assert!(
        refused.starts_with("scheduling.media_cpus: CPUs 3,6 are not among")
            && refused.contains("(0-2)"),
        "{refused}"
    );
    let refused = config
        .scheduling
        .check_cpus(&list("2-7"))
        .expect_err("CPU 1 is not");
    assert!(
        refused.starts_with("scheduling.signaling_cpus: CPU 1 "),
        "{refused}"
    );
    let plan = config.scheduling_plan().expect("a plan line");
    assert!(
        plan.contains("signaling threads keep their class on CPUs 1")
            && plan.contains("each pinned to one of CPUs 2,3,6")
            && !plan.contains("CAP_SYS_NICE"),
        "{plan}"
    );
    // One relay thread per CPU listed, unless the count is given; without
    // the list one per core.
    assert_eq!(config.relay_threads(8), 3);
    let mut given = config.clone();
    given.media.relay_threads = 2;
    assert_eq!(given.relay_threads(8), 2);
    given.media.relay_threads = 0;
    given.scheduling.media_cpus = None;
    assert_eq!(given.relay_threads(8), 8);

    // Only the signaling threads confined: the relay threads go back to
    // the CPUs the daemon was started with.
    let text = format!("{BASE}\n[scheduling]\nsignaling_cpus = \"0\"\nsignaling_priority = 5\n");
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    assert_eq!(
        config.scheduling.relay_cpus(&started_on),
        vec![started_on.clone()]
    );
    let plan = config.scheduling_plan().expect("a plan line");
    assert!(
        plan.contains("SCHED_FIFO priority 5 on CPUs 0")
            && plan.contains("on the CPUs the daemon was started with")
            && plan.contains("CAP_SYS_NICE"),
        "{plan}"
    );

    for bad in ["\"\"", "\"3-1\"", "\"0-2048\"", "\"one\"", "7"] {
        let text = format!("{BASE}\n[scheduling]\nmedia_cpus = {bad}\n");
        let p = problem(&text, "scheduling.media_cpus", "media_cpus");
        if bad != "7" {
            assert!(p.message.contains("taskset -c"), "{bad}: {p}");
        }
    }
}

#[test]
fn xdp_pin_dir_must_be_absolute() {
    let text = format!("[media.xdp]\npin_dir = \"bpf/sbc\"\n{BASE}");
    let p = problem(&text, "media.xdp.pin_dir", "pin_dir");
    assert!(hint(&p).contains("/sys/fs/bpf/sbc"), "{p}");
    let text = format!("[media.xdp]\npin_dir = \"/sys/fs/bpf/sbc\"\n{BASE}");
    let config = Config::from_str_named(&text, "t.toml").expect("valid");
    assert_eq!(
        config.media.xdp.pin_dir.as_deref(),
        Some(std::path::Path::new("/sys/fs/bpf/sbc"))
    );
}

#[test]
fn the_signals_plan_says_what_a_restart_keeps() {
    let plain = Config::from_str_named(BASE, "t.toml").expect("valid");
    let line = plain.signals_plan();
    assert!(line.contains("after 1800 s"), "{line}");
    assert!(line.contains("SIGUSR2 acts as SIGTERM"), "{line}");
    let text =
        format!("[media.xdp]\ninterfaces = [\"eth0\"]\npin_dir = \"/sys/fs/bpf/sbc\"\n{BASE}");
    let pinned = Config::from_str_named(&text, "t.toml").expect("valid");
    let line = pinned.signals_plan();
    assert!(
        line.contains("status 75") && line.contains("/sys/fs/bpf/sbc"),
        "{line}"
    );
}
