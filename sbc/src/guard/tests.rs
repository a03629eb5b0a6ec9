//! The shield on a virtual clock: rates, bans, eviction under a spoofed
//! flood, trust and reload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;

const CONFIG: &str = r#"
[limits]
tracked_sources = 4096
banned_sources = 1024

[protection]
request_rate = 10
request_burst = 20
ban_secs = 60

[[realm]]
name = "outside"
listen = [{ transport = "udp", address = "127.0.0.1:5060" }]
media = { address = "127.0.0.1" }
networks = ["10.1.0.0/16"]

[[realm]]
name = "inside"
listen = [{ transport = "udp", address = "127.0.0.2:5060" }]
media = { address = "127.0.0.2" }
protection = { enabled = false }

[[trunk]]
name = "carrier"
realm = "outside"
address = "192.0.2.10:5060"

[[trunk]]
name = "pbx"
realm = "outside"
address = "pbx.example.net:5060"

[[trunk]]
name = "core"
realm = "inside"
address = "192.0.2.20:5060"

[[route]]
name = "all"
targets = ["carrier"]
"#;

fn config(text: &str) -> Config {
    Config::from_str_named(text, "guard-test")
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host == "pbx.example.net" && port == 5060).then(|| SocketAddr::from(([192, 0, 2, 11], 5060)))
}

/// An arbitrary zero for the virtual clock.
#[allow(clippy::disallowed_methods)] // the test owns the clock
fn epoch() -> Instant {
    Instant::now()
}

const SEED: Seed = Seed([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);

struct Lab {
    t0: Instant,
    shield: Shield,
    outside: RealmId,
}

impl Lab {
    fn new(text: &str) -> Lab {
        let config = config(text);
        let t0 = epoch();
        let shield = Shield::from_config(t0, SEED, &config, &Trust::new(&config, resolve));
        let outside = shield.realm("outside");
        Lab {
            t0,
            shield,
            outside,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Sends one message every `every` from `ip` for `secs`; returns the
    /// verdicts in order.
    fn flood(&self, ip: IpAddr, every: Duration, secs: u64) -> Vec<(Duration, Verdict)> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(secs) {
            out.push((t, self.shield.admit(self.t0 + t, self.outside, ip)));
            t += every;
        }
        out
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn count(verdicts: &[(Duration, Verdict)], which: Verdict) -> usize {
    verdicts.iter().filter(|(_, v)| *v == which).count()
}

#[test]
fn exactly_the_burst_passes_at_once_then_the_rate() {
    let lab = Lab::new(CONFIG);
    let ip = v4(203, 0, 113, 1);
    for i in 0..20 {
        assert_eq!(
            lab.shield.admit(lab.at(0), lab.outside, ip),
            Verdict::Pass,
            "request {i} of the burst"
        );
    }
    assert_eq!(
        lab.shield.admit(lab.at(0), lab.outside, ip),
        Verdict::RateLimited
    );
    // 10/s: one token back every 100 ms, not before.
    assert_eq!(
        lab.shield.admit(lab.at(99), lab.outside, ip),
        Verdict::RateLimited
    );
    assert_eq!(
        lab.shield.admit(lab.at(101), lab.outside, ip),
        Verdict::Pass
    );
    assert_eq!(
        lab.shield.admit(lab.at(102), lab.outside, ip),
        Verdict::RateLimited
    );
    let counts = lab.shield.counts();
    assert_eq!(counts.realms[0].0, "outside");
    assert_eq!(counts.realms[0].1.rate_limited, 3);
    assert_eq!(counts.realms[0].1.bans, 0);
}

#[test]
fn at_the_rate_nothing_is_dropped() {
    let lab = Lab::new(CONFIG);
    let verdicts = lab.flood(v4(203, 0, 113, 2), Duration::from_millis(100), 120);
    assert_eq!(count(&verdicts, Verdict::Pass), verdicts.len());
}

#[test]
fn twice_the_rate_is_limited_but_never_banned() {
    let lab = Lab::new(CONFIG);
    let verdicts = lab.flood(v4(203, 0, 113, 3), Duration::from_millis(50), 600);
    assert_eq!(count(&verdicts, Verdict::NewBan), 0, "banned at 2x");
    assert_eq!(count(&verdicts, Verdict::Banned), 0);
    // The burst, then the rate: 20 + 10/s.
    let passed = count(&verdicts, Verdict::Pass);
    assert!(
        (20 + 10 * 600 - 2..=20 + 10 * 600 + 2).contains(&passed),
        "{passed} passed"
    );
}

#[test]
fn three_times_the_rate_is_banned_once_within_seconds() {
    let lab = Lab::new(CONFIG);
    let ip = v4(203, 0, 113, 4);
    let verdicts = lab.flood(ip, Duration::from_micros(33_333), 30);
    let bans: Vec<Duration> = verdicts
        .iter()
        .filter(|(_, v)| *v == Verdict::NewBan)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(bans.len(), 1, "one NewBan per ban: {bans:?}");
    // Bucket dry after 1 s (net +20/s on 20), then debt grows 10/s past 20.
    assert!(
        (Duration::from_millis(2_500)..Duration::from_millis(3_500)).contains(&bans[0]),
        "banned at {:?}",
        bans[0]
    );
    assert!(
        verdicts
            .iter()
            .filter(|(t, _)| *t > bans[0])
            .all(|(_, v)| *v == Verdict::Banned),
        "everything after the ban is dropped as banned"
    );
    let counts = lab.shield.counts();
    assert_eq!(counts.realms[0].1.bans, 1);
    assert_eq!(counts.banned_now, 1);
    assert_eq!(lab.shield.ban_secs(lab.outside), 60);
}

#[test]
fn no_ban_when_ban_secs_is_zero() {
    let lab = Lab::new(&CONFIG.replace("ban_secs = 60", "ban_secs = 0"));
    let verdicts = lab.flood(v4(203, 0, 113, 5), Duration::from_millis(1), 10);
    assert_eq!(count(&verdicts, Verdict::NewBan), 0);
    assert!(count(&verdicts, Verdict::RateLimited) > 9_000);
    assert!(!lab.shield.ban(lab.at(0), lab.outside, v4(203, 0, 113, 6)));
}

#[test]
fn bans_expire_and_sweep_forgets_them() {
    let lab = Lab::new(CONFIG);
    let ip = v4(198, 51, 100, 7);
    assert!(lab.shield.ban(lab.at(0), lab.outside, ip));
    assert!(
        !lab.shield.ban(lab.at(1), lab.outside, ip),
        "a second ban of a banned source is not new"
    );
    assert_eq!(
        lab.shield.admit(lab.at(59_999), lab.outside, ip),
        Verdict::Banned
    );
    assert!(lab.shield.is_banned(lab.at(59_999), lab.outside, ip));
    assert_eq!(lab.shield.counts().banned_now, 1);
    lab.shield.sweep(lab.at(60_000));
    assert_eq!(lab.shield.counts().banned_now, 0);
    assert_eq!(
        lab.shield.admit(lab.at(60_000), lab.outside, ip),
        Verdict::Pass
    );
    let counts = lab.shield.counts().realms[0].1;
    assert_eq!((counts.bans, counts.banned), (1, 1));
}

#[test]
fn an_ended_ban_is_lifted_without_a_sweep() {
    let lab = Lab::new(CONFIG);
    let ip = v4(198, 51, 100, 8);
    assert!(lab.shield.ban(lab.at(0), lab.outside, ip));
    assert_eq!(
        lab.shield.admit(lab.at(60_001), lab.outside, ip),
        Verdict::Pass
    );
}

#[test]
fn sweep_forgets_drained_sources_only() {
    let lab = Lab::new(CONFIG);
    for i in 0..100 {
        lab.shield.admit(lab.at(0), lab.outside, v4(203, 0, 113, i));
    }
    let busy = v4(203, 0, 114, 1);
    for _ in 0..20 {
        lab.shield.admit(lab.at(0), lab.outside, busy);
    }
    assert_eq!(lab.shield.tracked(), 101);
    // One token drains in 100 ms; twenty take 2 s.
    lab.shield.sweep(lab.at(100));
    assert_eq!(lab.shield.tracked(), 1);
    lab.shield.sweep(lab.at(2_000));
    assert_eq!(lab.shield.tracked(), 0);
}

#[test]
fn a_spoofed_flood_keeps_memory_fixed_and_neither_evicts_bans_nor_hides_a_flooder() {
    let lab = Lab::new(CONFIG);
    let memory = lab.shield.memory_bytes();
    // 4096 rate slots of 32 bytes, 1024 ban slots of 24.
    assert_eq!(memory, 4096 * RATE_ENTRY_BYTES + 1024 * BAN_ENTRY_BYTES);
    // Sources banned before the flood.
    let banned: Vec<IpAddr> = (0..200).map(|i| v4(198, 51, 100, i)).collect();
    for ip in &banned {
        assert!(lab.shield.ban(lab.at(0), lab.outside, *ip));
    }
    // 400,000 one-packet sources over 40 s (10 per ms), and a real source
    // at 3x its rate among them.
    let flooder = v4(203, 0, 113, 99);
    let mut flooder_ban = None;
    for n in 0u32..400_000 {
        let at = lab.at(u64::from(n / 10));
        let [_, b, c, d] = n.to_be_bytes();
        let spoofed = IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            u16::from(b),
            u16::from(c),
            u16::from(d),
        ));
        assert_eq!(lab.shield.admit(at, lab.outside, spoofed), Verdict::Pass);
        if n % 333 == 0 {
            let verdict = lab.shield.admit(at, lab.outside, flooder);
            if verdict == Verdict::NewBan {
                flooder_ban.get_or_insert(at - lab.t0);
            }
        }
        if n % 100_000 == 0 {
            lab.shield.sweep(at);
        }
        if n % 1000 == 0 {
            assert!(lab.shield.tracked() <= 4096, "the rate table grew");
        }
    }
    assert!(lab.shield.tracked() <= 4096, "the rate table never grows");
    assert_eq!(lab.shield.memory_bytes(), memory);
    let banned_at = flooder_ban.unwrap_or_else(|| panic!("the flooder was never banned"));
    assert!(
        banned_at < Duration::from_secs(5),
        "the flooder was banned late ({banned_at:?}): the flood evicted its bucket"
    );
    for ip in &banned {
        assert_eq!(
            lab.shield.admit(lab.at(40_000), lab.outside, *ip),
            Verdict::Banned,
            "{ip}'s ban was evicted by one-packet sources"
        );
    }
    assert_eq!(lab.shield.counts().banned_now, 201);
}

#[test]
fn a_full_ban_table_drops_the_ban_that_ends_first() {
    let config = config(&CONFIG.replace("banned_sources = 1024", "banned_sources = 64"));
    let t0 = epoch();
    let shield = Shield::from_config(t0, SEED, &config, &Trust::new(&config, resolve));
    let outside = shield.realm("outside");
    for i in 0..10_000u32 {
        let [_, _, c, d] = i.to_be_bytes();
        shield.ban(
            t0 + Duration::from_millis(u64::from(i)),
            outside,
            v4(198, 18, c, d),
        );
    }
    let held = shield.counts().banned_now;
    assert!(held <= 64, "{held} bans held in a table of 64");
    // The newest ban (ending last) is held.
    assert!(shield.is_banned(
        t0 + Duration::from_secs(11),
        outside,
        v4(198, 18, 0x27, 0x0f)
    ));
}

#[test]
fn trusted_sources_are_never_limited() {
    let lab = Lab::new(CONFIG);
    for ip in [v4(192, 0, 2, 10), v4(192, 0, 2, 11), v4(10, 1, 2, 3)] {
        let verdicts = lab.flood(ip, Duration::from_millis(1), 5);
        assert_eq!(
            count(&verdicts, Verdict::Pass),
            verdicts.len(),
            "{ip} limited"
        );
        assert!(!lab.shield.ban(lab.at(0), lab.outside, ip), "{ip} banned");
        assert!(lab.shield.is_trusted(lab.outside, ip));
    }
    // A trunk is trusted in its own realm only.
    let inside = lab.shield.realm("inside");
    assert!(!lab.shield.is_trusted(lab.outside, v4(192, 0, 2, 20)));
    assert!(lab.shield.is_trusted(inside, v4(192, 0, 2, 20)));
    assert_eq!(lab.shield.tracked(), 0);
    assert_eq!(lab.shield.counts().realms[0].1, RealmCounts::default());
}

#[test]
fn trust_is_per_realm_index_and_ignores_the_port() {
    let config = config(CONFIG);
    let trust = Trust::new(&config, resolve);
    assert_eq!(trust.realm_index("outside"), Some(0));
    assert_eq!(trust.realm_index("inside"), Some(1));
    assert!(trust.is_trusted(0, v4(192, 0, 2, 10)));
    assert!(trust.is_trusted(0, v4(192, 0, 2, 11)), "resolved host name");
    assert!(trust.is_trusted(0, v4(10, 1, 255, 255)));
    assert!(!trust.is_trusted(0, v4(10, 2, 0, 1)));
    assert!(trust.is_trusted(1, v4(192, 0, 2, 20)));
    assert!(!trust.is_trusted(1, v4(192, 0, 2, 10)));
    assert!(!trust.is_trusted(7, v4(192, 0, 2, 10)));
    // IPv4-mapped IPv6 is the same source.
    assert!(
        trust.is_trusted(
            0,
            "::ffff:192.0.2.10"
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        )
    );
    // An unresolved host name trusts nothing.
    let none = Trust::new(&config, |_, _| None);
    assert!(!none.is_trusted(0, v4(192, 0, 2, 11)));
    // Names resolved by the daemon (RFC 3263): every target is trusted,
    // looked up by trunk name; literal addresses stay trusted.
    let resolved = Trust::with_targets(&config, |trunk| {
        let named: Vec<&str> = config
            .trunks
            .iter()
            .filter(|t| !matches!(t.address, crate::config::PeerAddress::Ip(_)))
            .map(|t| t.name.as_str())
            .collect();
        if named.contains(&trunk) {
            vec![v4(192, 0, 2, 31), v4(192, 0, 2, 32)]
        } else {
            Vec::new()
        }
    });
    assert!(resolved.is_trusted(0, v4(192, 0, 2, 10)));
    assert!(resolved.is_trusted(0, v4(192, 0, 2, 31)));
    assert!(resolved.is_trusted(0, v4(192, 0, 2, 32)));
    assert!(
        !resolved.is_trusted(0, v4(192, 0, 2, 11)),
        "the old answer is gone"
    );
}

#[test]
fn a_disabled_realm_passes_everything() {
    let lab = Lab::new(CONFIG);
    let inside = lab.shield.realm("inside");
    let ip = v4(203, 0, 113, 50);
    for i in 0..10_000 {
        assert_eq!(lab.shield.admit(lab.at(i / 10), inside, ip), Verdict::Pass);
    }
    assert!(!lab.shield.ban(lab.at(0), inside, ip));
    assert_eq!(lab.shield.tracked(), 0);
}

#[test]
fn an_unconfigured_realm_gets_the_global_protection() {
    let lab = Lab::new(CONFIG);
    let retired = lab.shield.realm("gone");
    assert_ne!(retired, lab.outside);
    assert_eq!(lab.shield.realm("gone"), retired, "interned once");
    assert_eq!(lab.shield.realm_name(retired).as_deref(), Some("gone"));
    let ip = v4(203, 0, 113, 51);
    for _ in 0..20 {
        assert_eq!(lab.shield.admit(lab.at(0), retired, ip), Verdict::Pass);
    }
    assert_eq!(
        lab.shield.admit(lab.at(0), retired, ip),
        Verdict::RateLimited
    );
    // An unknown id passes.
    assert_eq!(lab.shield.admit(lab.at(0), RealmId(999), ip), Verdict::Pass);
}

#[test]
fn a_shield_before_configure_passes_everything() {
    let t0 = epoch();
    let shield = Shield::new(t0, SEED, 64, 64);
    let realm = shield.realm("any");
    for _ in 0..1_000 {
        assert_eq!(shield.admit(t0, realm, v4(203, 0, 113, 1)), Verdict::Pass);
    }
}

#[test]
fn reload_keeps_bans_and_applies_new_rates() {
    let lab = Lab::new(CONFIG);
    let banned = v4(198, 51, 100, 1);
    let limited = v4(198, 51, 100, 2);
    assert!(lab.shield.ban(lab.at(0), lab.outside, banned));
    for _ in 0..21 {
        lab.shield.admit(lab.at(0), lab.outside, limited);
    }
    // Realms reordered, rates raised.
    let reordered = CONFIG
        .replace("request_rate = 10", "request_rate = 100")
        .replace("request_burst = 20", "request_burst = 200")
        .replacen("name = \"outside\"", "name = \"tmp\"", 1)
        .replacen("name = \"inside\"", "name = \"outside\"", 1)
        .replacen("name = \"tmp\"", "name = \"inside\"", 1)
        .replace("realm = \"outside\"", "realm = \"x\"")
        .replace("realm = \"inside\"", "realm = \"outside\"")
        .replace("realm = \"x\"", "realm = \"inside\"")
        .replacen("protection = { enabled = false }\n", "", 1);
    let reloaded = config(&reordered);
    lab.shield
        .configure(&reloaded, &Trust::new(&reloaded, resolve));
    assert_eq!(lab.shield.realm("outside"), lab.outside, "ids are stable");
    assert_eq!(
        lab.shield.admit(lab.at(1), lab.outside, banned),
        Verdict::Banned,
        "the ban outlived the reload"
    );
    assert_eq!(
        lab.shield.admit(lab.at(1), lab.outside, limited),
        Verdict::Pass,
        "the bigger burst applies to a tracked source"
    );
    // Disabling protection lifts the realm's bans.
    let disabled = config(&CONFIG.replace("[protection]\n", "[protection]\nenabled = false\n"));
    lab.shield
        .configure(&disabled, &Trust::new(&disabled, resolve));
    assert_eq!(lab.shield.counts().banned_now, 0);
    assert_eq!(
        lab.shield.admit(lab.at(2), lab.outside, banned),
        Verdict::Pass
    );
    // And enabling it again does not bring them back.
    let config = config(CONFIG);
    lab.shield.configure(&config, &Trust::new(&config, resolve));
    assert_eq!(
        lab.shield.admit(lab.at(3), lab.outside, banned),
        Verdict::Pass
    );
}

#[test]
fn realms_are_separate() {
    let lab = Lab::new(&CONFIG.replace("protection = { enabled = false }", ""));
    let inside = lab.shield.realm("inside");
    let ip = v4(203, 0, 113, 60);
    assert!(lab.shield.ban(lab.at(0), lab.outside, ip));
    assert_eq!(lab.shield.admit(lab.at(0), inside, ip), Verdict::Pass);
}

#[test]
fn scanner_patterns_match_case_insensitively_anywhere() {
    let patterns: Vec<String> = ["friendly-scanner", "sipvicious"]
        .map(String::from)
        .to_vec();
    assert!(is_scanner(b"friendly-scanner", &patterns));
    assert!(is_scanner(b"Friendly-Scanner 1.0", &patterns));
    assert!(is_scanner(b"x SIPVicious/0.3", &patterns));
    assert!(!is_scanner(b"Linphone/5.2", &patterns));
    assert!(!is_scanner(b"", &patterns));
    assert!(!is_scanner(b"friendly", &patterns));
    assert!(!is_scanner(b"anything", &[]));
    assert!(
        !is_scanner(b"anything", &[String::new()]),
        "empty patterns match nothing"
    );
}

#[test]
fn a_full_bucket_evicts_its_least_worth() {
    // One bucket (4 ways): every source lands in it.
    let mut table: SourceTable<u64> = SourceTable::with_capacity(WAYS);
    assert_eq!(table.capacity(), WAYS);
    let key = |i: u8| SEED.source(RealmId(0), v4(203, 0, 113, i));
    for (i, worth) in [(1, 50), (2, 10), (3, 70), (4, 30)] {
        let (_, evicted) = table.insert(&key(i), worth, |v| *v);
        assert_eq!(evicted, None);
    }
    let (_, evicted) = table.insert(&key(5), 40, |v| *v);
    assert_eq!(evicted, Some(10));
    assert!(table.get_mut(&key(2)).is_none());
    assert_eq!(table.get_mut(&key(5)).copied(), Some(40));
    assert_eq!(table.len(), 4);
    assert_eq!(table.remove(&key(1)), Some(50));
    assert_eq!(table.len(), 3);
    table.retain(|_, v| *v > 35);
    assert_eq!(table.len(), 2);
    assert!(!table.is_empty());
    // The same address on another realm is another key.
    assert!(
        table
            .get_mut(&SEED.source(RealmId(1), v4(203, 0, 113, 5)))
            .is_none()
    );
}

#[test]
fn retain_sees_every_entry_wherever_it_lies_and_stops_after_the_last() {
    // A large table, sparsely used: entries land all over it.
    let mut table: SourceTable<u64> = SourceTable::with_capacity(4096);
    let key = |i: u16| SEED.source(RealmId(0), v4(198, 51, 100 + (i / 256) as u8, i as u8));
    for i in 0..300 {
        table.insert(&key(i), u64::from(i), |v| *v);
    }
    let stored = table.len();
    assert!(stored > 250, "{stored} of 300 stored");
    let mut seen = 0;
    table.retain(|_, _| {
        seen += 1;
        true
    });
    assert_eq!(seen, stored, "every entry visited once");
    table.retain(|_, v| v % 2 == 0);
    let mut left = 0;
    table.for_each(|_, _, v| {
        assert_eq!(v % 2, 0);
        left += 1;
    });
    assert_eq!(left, table.len());
    table.retain(|_, _| false);
    assert!(table.is_empty());
    // An empty table: nothing to visit.
    table.retain(|_, _| panic!("visited an empty table"));
}

#[test]
fn the_seed_decides_the_bucket() {
    let a = Seed([1, 2]).source(RealmId(0), v4(203, 0, 113, 1));
    let b = Seed([3, 4]).source(RealmId(0), v4(203, 0, 113, 1));
    assert_ne!(a.hash, b.hash);
    assert_eq!(
        a,
        Seed([1, 2]).source(
            RealmId(0),
            "::ffff:203.0.113.1"
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        )
    );
}

#[test]
fn admit_is_shared_by_threads() {
    let lab = Lab::new(CONFIG);
    let shield = &lab.shield;
    let outside = lab.outside;
    let t0 = lab.t0;
    std::thread::scope(|s| {
        for thread in 0..4u8 {
            s.spawn(move || {
                for i in 0..20_000u32 {
                    let [_, _, c, d] = i.to_be_bytes();
                    shield.admit(t0, outside, v4(100, thread, c, d));
                }
            });
        }
    });
    assert!(shield.tracked() <= 4096);
}

#[test]
fn bans_are_listed_with_their_time_left_and_taken_in_by_another_shield() {
    let a = Lab::new(CONFIG);
    let v6: IpAddr = "2001:db8::7".parse().expect("v6");
    let stranger = v4(198, 51, 100, 7);
    assert!(a.shield.ban(a.at(0), a.outside, stranger));
    assert!(a.shield.ban(a.at(0), a.outside, v6));
    let mut bans = a.shield.bans(a.at(20_000));
    bans.sort();
    assert_eq!(
        bans,
        [
            ("outside".to_owned(), stranger, 40_000),
            ("outside".to_owned(), v6, 40_000)
        ]
    );

    // Another node's shield (its own seed and clock) takes them in.
    let config = config(CONFIG);
    let t0 = epoch();
    let b = Shield::from_config(t0, Seed([7, 9]), &config, &Trust::new(&config, resolve));
    let outside = b.realm("outside");
    for (realm, ip, left) in &bans {
        assert!(b.ban_for(t0, realm, *ip, *left));
    }
    assert!(b.is_banned(t0 + Duration::from_millis(39_999), outside, stranger));
    // Taken in again: not new, and never shortened.
    assert!(!b.ban_for(t0, "outside", stranger, 1_000));
    assert!(b.is_banned(t0 + Duration::from_millis(30_000), outside, stranger));
    // Lengthened by a later, longer one; over at its end.
    assert!(!b.ban_for(t0, "outside", stranger, 50_000));
    assert!(b.is_banned(t0 + Duration::from_millis(45_000), outside, stranger));
    assert!(!b.is_banned(t0 + Duration::from_millis(50_000), outside, stranger));
    // Not on a realm that doesn't ban, nor a trusted source, nor an
    // unknown realm.
    assert!(!b.ban_for(t0, "inside", stranger, 10_000));
    assert!(!b.ban_for(t0, "outside", v4(10, 1, 2, 3), 10_000));
    assert!(!b.ban_for(t0, "elsewhere", stranger, 10_000));
    assert_eq!(b.counts().realms[0].1.bans, 2, "two bans begun on b");
}
