//! The checks a configuration must pass before the SBC uses it: cross
//! references (a trunk's realm, a route's targets), uniqueness, sockets that
//! could not all be bound, and values that parse but make no sense.
//!
//! Runs once, after deserialization (pingora's `validate`), and collects every
//! finding rather than stopping at the first. Each finding names its field by
//! path; [`super::Config::from_str_named`] turns paths into lines.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::locate::FieldPath;
use super::schema::{
    Access, Config, FsyncPolicy, HeaderPolicy, HeaderRewrite, Listener, PeerAddress, Protection,
    Realm, Route, Transport, Trunk,
};

/// One thing validation rejects, before it is given a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) path: FieldPath,
    pub(crate) item: Option<String>,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// Lowest port the media range may use: below are the well-known ports.
const MEDIA_PORT_FLOOR: u16 = 1024;
/// Socket buffers: below a page a datagram may not fit; above 256 MiB is a
/// typo for a smaller number.
const BUFFER_BYTES: std::ops::RangeInclusive<u32> = 4096..=256 * 1024 * 1024;
/// Headers the B2BUA regenerates on every message; stripping them would break
/// SIP, and they never leak anyway.
const MANDATORY_HEADERS: [&str; 10] = [
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "max-forwards",
    "content-length",
    "content-type",
    "record-route",
];

/// Every problem in `config`, in no particular order.
pub(crate) fn validate(config: &Config) -> Vec<Finding> {
    let mut v = Validator {
        config,
        findings: Vec::new(),
    };
    v.limits();
    v.sip_timers();
    v.protection(&FieldPath::root("protection"), None, &config.protection);
    v.cdr();
    v.state();
    v.drain();
    v.media();
    v.header_policy(
        &FieldPath::root("topology_hiding"),
        None,
        &config.topology_hiding,
    );
    v.realms();
    v.listeners();
    v.dns();
    v.cluster();
    v.trunks();
    v.routes();
    v.ng();
    v.scheduling();
    v.findings
}

struct Validator<'a> {
    config: &'a Config,
    findings: Vec<Finding>,
}

/// How a named element is called in messages: `trunk "pbx"`, or `trunk[1]`
/// when it has no usable name.
fn item_name(kind: &str, index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{kind}[{index}]")
    } else {
        format!("{kind} \"{name}\"")
    }
}

fn list(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.map(|n| n.as_ref().to_owned()).collect();
    if names.is_empty() {
        "none are defined".to_owned()
    } else {
        names.join(", ")
    }
}

impl Validator<'_> {
    /// `[scheduling]`: priorities the kernel accepts for SCHED_FIFO/RR.
    fn scheduling(&mut self) {
        let scheduling = &self.config.scheduling;
        let at = FieldPath::root("scheduling");
        for (field, priority) in [
            ("signaling_priority", scheduling.signaling_priority),
            ("media_priority", scheduling.media_priority),
        ] {
            if priority > 99 {
                self.report(
                    at.key(field),
                    Some("scheduling"),
                    format!("{priority} is outside 0..=99"),
                    Some(
                        "real-time priorities run 1-99 (99 first); 0 keeps the ordinary scheduler. \
                         Stay below the kernel's own threads (50 for interrupt threads), e.g. 10"
                            .into(),
                    ),
                );
            }
        }
    }

    /// `[ng]`: fixed ports, and a default direction naming two realms.
    fn ng(&mut self) {
        let Some(ng) = &self.config.ng else { return };
        let at = FieldPath::root("ng");
        for (field, addr) in [("listen", Some(ng.listen)), ("listen_tcp", ng.listen_tcp)] {
            if addr.is_some_and(|a| a.port() == 0) {
                self.report(
                    at.key(field),
                    None,
                    "port 0",
                    Some("give the port proxies send to, usually 2223 (rtpengine's)".into()),
                );
            }
        }
        // ng has no authentication: a listener other hosts reach is a door
        // to every call's media unless the proxies are named.
        if ng.allow.is_empty() {
            for (field, addr) in [("listen", Some(ng.listen)), ("listen_tcp", ng.listen_tcp)] {
                if let Some(addr) = addr.filter(|a| !a.ip().to_canonical().is_loopback()) {
                    self.report(
                        at.key(field),
                        None,
                        format!(
                            "listens on {addr}, which other hosts can reach, but ng.allow is empty: \
                             only loopback may send commands"
                        ),
                        Some(
                            "list the networks of the proxies that drive this relay in ng.allow, \
                             e.g. allow = [\"10.0.0.0/24\"]; [\"0.0.0.0/0\", \"::/0\"] lets anyone \
                             who reaches the port anchor and delete media, as rtpengine does"
                                .into(),
                        ),
                    );
                }
            }
        }
        if self.config.realms.is_empty() {
            self.report(
                at.clone(),
                None,
                "the ng server has no realm to anchor media in",
                Some("add a [[realm]] with a media address".into()),
            );
        }
        if let Some(direction) = &ng.direction {
            for (j, name) in direction.iter().enumerate() {
                if !self.config.realms.iter().any(|r| &r.name == name) {
                    self.report(
                        at.key("direction").index(j),
                        None,
                        format!("no realm is named \"{name}\""),
                        Some(format!(
                            "name one of the realms: {}",
                            list(self.config.realms.iter().map(|r| &r.name))
                        )),
                    );
                }
            }
        }
    }

    fn report(
        &mut self,
        path: FieldPath,
        item: Option<&str>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.findings.push(Finding {
            path,
            item: item.map(str::to_owned),
            message: message.into(),
            hint,
        });
    }

    fn limits(&mut self) {
        self.limits_shares();
        self.limits_tcp();
        let limits = &self.config.limits;
        let at = FieldPath::root("limits");
        for (field, value) in [
            ("max_transactions", limits.max_transactions),
            ("max_calls", limits.max_calls),
        ] {
            if value == 0 {
                self.report(
                    at.key(field),
                    Some("limits"),
                    "must be at least 1",
                    Some("0 would refuse every call; leave the field out for the default".into()),
                );
            }
        }
    }

    fn sip_timers(&mut self) {
        let sip = &self.config.sip;
        let at = FieldPath::root("sip");
        for (field, value, range) in [
            ("t1_ms", sip.t1_ms, 50..=5_000),
            ("t2_ms", sip.t2_ms, 1_000..=60_000),
            ("t4_ms", sip.t4_ms, 1_000..=60_000),
        ] {
            if !range.contains(&value) {
                self.report(
                    at.key(field),
                    Some("sip"),
                    format!(
                        "{value} ms is outside {}..={} ms",
                        range.start(),
                        range.end()
                    ),
                    Some("RFC 3261 defaults: T1 500, T2 4000, T4 5000".into()),
                );
            }
        }
        if sip.t2_ms < sip.t1_ms {
            self.report(
                at.key("t2_ms"),
                Some("sip"),
                format!(
                    "T2 ({} ms) is shorter than T1 ({} ms)",
                    sip.t2_ms, sip.t1_ms
                ),
                Some("T2 caps the retransmission interval that starts at T1".into()),
            );
        }
    }

    fn limits_shares(&mut self) {
        let limits = &self.config.limits;
        let at = FieldPath::root("limits");
        for (field, value) in [
            ("untrusted_calls_percent", limits.untrusted_calls_percent),
            (
                "untrusted_transactions_percent",
                limits.untrusted_transactions_percent,
            ),
            ("tcp_untrusted_percent", limits.tcp_untrusted_percent),
        ] {
            if !(1..=100).contains(&value) {
                self.report(
                    at.key(field),
                    Some("limits"),
                    format!("{value} is not a percentage from 1 to 100"),
                    Some("100 lets untrusted sources take the whole table".into()),
                );
            }
        }
        for (field, value) in [
            ("tracked_sources", limits.tracked_sources),
            ("banned_sources", limits.banned_sources),
        ] {
            if !(64..=16_777_216).contains(&value) {
                self.report(
                    at.key(field),
                    Some("limits"),
                    format!("{value} is outside 64..=16777216"),
                    Some("each entry takes about 32 bytes; the default is 65536".into()),
                );
            }
        }
    }

    fn limits_tcp(&mut self) {
        let limits = &self.config.limits;
        let at = FieldPath::root("limits");
        for (field, value, range, hint) in [
            (
                "tcp_connections",
                limits.tcp_connections,
                1..=1_000_000,
                "each connection takes a file descriptor and a few KiB; 10000 is the default",
            ),
            (
                "tcp_connections_per_source",
                limits.tcp_connections_per_source,
                1..=1_000_000,
                "a phone needs one; a proxy with many should be a trunk (trusted, not capped)",
            ),
            (
                "tcp_message_timeout_secs",
                limits.tcp_message_timeout_secs,
                1..=300,
                "a SIP message takes a segment or a few: 10 s covers three lost segments",
            ),
        ] {
            if !range.contains(&value) {
                self.report(
                    at.key(field),
                    Some("limits"),
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                    Some(hint.into()),
                );
            }
        }
    }

    /// `[protection]`, or a realm's `protection` override resolved against it.
    fn protection(&mut self, at: &FieldPath, item: Option<&str>, p: &Protection) {
        let item = item.or(Some("protection"));
        for (field, value) in [
            ("request_rate", p.request_rate),
            ("request_burst", p.request_burst),
            ("max_transactions_per_source", p.max_transactions_per_source),
            ("max_setups_per_source", p.max_setups_per_source),
            ("max_calls_per_source", p.max_calls_per_source),
        ] {
            if value == 0 {
                self.report(
                    at.key(field),
                    item,
                    "must be at least 1",
                    Some("to trust every source, set enabled = false".into()),
                );
            }
        }
        if p.request_burst != 0 && p.request_burst < p.request_rate.min(1_000) / 2 {
            self.report(
                at.key("request_burst"),
                item,
                format!(
                    "a burst of {} is below half the rate of {} per second",
                    p.request_burst, p.request_rate
                ),
                Some(
                    "a call's INVITE, ACK and BYE arrive together; allow at least 2 s of rate"
                        .into(),
                ),
            );
        }
        if p.ban_secs > 86_400 {
            self.report(
                at.key("ban_secs"),
                item,
                format!("{} s is more than a day", p.ban_secs),
                Some("bans are kept in memory and forgotten on restart; use a firewall for longer ones".into()),
            );
        }
        for (j, agent) in p.scanner_user_agents.iter().enumerate() {
            if agent.trim().is_empty() {
                self.report(
                    at.key("scanner_user_agents").index(j),
                    item,
                    "an empty pattern would match every User-Agent",
                    None,
                );
            }
        }
    }

    fn cdr(&mut self) {
        let cdr = &self.config.cdr;
        let at = FieldPath::root("cdr");
        let item = Some("cdr");
        if let Some(path) = &cdr.path {
            self.file_path(at.key("path"), item, path, "/var/log/sbc/cdr.jsonl");
        }
        if cdr.fsync == FsyncPolicy::IntervalMs(0) {
            self.report(
                at.key("fsync").key("interval_ms"),
                item,
                "must be at least 1",
                Some("to flush after every record write fsync = \"every\"".into()),
            );
        }
        if cdr.queue_records == 0 {
            self.report(
                at.key("queue_records"),
                item,
                "must be at least 1",
                Some("0 would drop every record; leave the field out for the default".into()),
            );
        }
    }

    /// A file the daemon writes or reads: absolute (under systemd the
    /// working directory is `/`), and a file, not a directory.
    fn file_path(
        &mut self,
        at: FieldPath,
        item: Option<&str>,
        path: &std::path::Path,
        example: &str,
    ) {
        if !path.is_absolute() {
            self.report(
                at,
                item,
                format!("\"{}\" is not an absolute path", path.display()),
                Some(format!("write the full path, e.g. \"{example}\"")),
            );
        } else if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
            self.report(
                at,
                item,
                format!("\"{}\" names a directory, not a file", path.display()),
                Some(format!("name the file, e.g. \"{example}\"")),
            );
        }
    }

    fn state(&mut self) {
        if let Some(path) = &self.config.state.bindings_file {
            let at = FieldPath::root("state").key("bindings_file");
            self.file_path(at, Some("state"), path, "/var/lib/sbc/bindings.json");
        }
    }

    fn drain(&mut self) {
        let deadline = self.config.drain.deadline_secs;
        if !(1..=86_400).contains(&deadline) {
            self.report(
                FieldPath::root("drain").key("deadline_secs"),
                Some("drain"),
                format!("{deadline} s is outside 1..=86400 s"),
                Some(
                    "a drain waits at most a day; SIGTERM ends the calls at once, no drain needed"
                        .into(),
                ),
            );
        }
    }

    fn xdp_pin_dir(&mut self) {
        let Some(dir) = &self.config.media.xdp.pin_dir else {
            return;
        };
        let at = FieldPath::root("media").key("xdp").key("pin_dir");
        if !dir.is_absolute() {
            self.report(
                at,
                Some("media"),
                format!("\"{}\" is not an absolute path", dir.display()),
                Some("use a directory on the BPF file system, e.g. \"/sys/fs/bpf/sbc\"".into()),
            );
        }
    }

    fn media(&mut self) {
        self.xdp_pin_dir();
        let media = &self.config.media;
        let at = FieldPath::root("media");
        let item = Some("media");
        if media.port_min < MEDIA_PORT_FLOOR {
            self.report(
                at.key("port_min"),
                item,
                format!("port {} is below {MEDIA_PORT_FLOOR}", media.port_min),
                Some(
                    "media ports must not collide with well-known services; use e.g. 20000".into(),
                ),
            );
        }
        if !media.port_min.is_multiple_of(2) {
            self.report(
                at.key("port_min"),
                item,
                format!("port_min {} is odd", media.port_min),
                Some(format!(
                    "RTP uses even ports and RTCP the next odd one; use {}",
                    media.port_min.saturating_sub(1)
                )),
            );
        }
        if media.port_max.is_multiple_of(2) {
            self.report(
                at.key("port_max"),
                item,
                format!("port_max {} is even", media.port_max),
                Some(format!(
                    "the range must end on the RTCP port of a pair; use {}",
                    media.port_max.saturating_sub(1)
                )),
            );
        }
        if media.port_min >= media.port_max {
            self.report(
                at.key("port_max"),
                item,
                format!(
                    "port_max {} is not above port_min {}",
                    media.port_max, media.port_min
                ),
                Some("write the range as port_min < port_max".into()),
            );
        } else {
            // A call anchors one RTP/RTCP pair per leg on one of its
            // realm's media addresses; two realms sharing an address need
            // two pairs from it, a realm with several addresses spreads its
            // legs over them. The tightest realm says how many pairs each
            // address needs.
            let mut per_address: HashMap<IpAddr, u64> = HashMap::new();
            for address in self.config.realms.iter().flat_map(|r| r.media.addresses()) {
                *per_address.entry(address).or_default() += 1;
            }
            let pairs = u64::from(media.port_pairs()).max(1);
            let max_calls = u64::from(self.config.limits.max_calls);
            let needed = self
                .config
                .realms
                .iter()
                .map(|r| {
                    // The share of an address's pairs this realm may count on.
                    let shares: f64 = r
                        .media
                        .addresses()
                        .map(|a| 1.0 / per_address.get(&a).copied().unwrap_or(1) as f64)
                        .sum();
                    (max_calls as f64 / shares.max(f64::MIN_POSITIVE)).ceil() as u64
                })
                .max()
                .unwrap_or(max_calls);
            if pairs < needed {
                self.report(
                    at.key("port_max"),
                    item,
                    format!(
                        "the range {}-{} holds {} port pairs, fewer than the {needed} that \
                         limits.max_calls = {} needs",
                        media.port_min,
                        media.port_max,
                        media.port_pairs(),
                        self.config.limits.max_calls
                    ),
                    Some("widen the range or lower limits.max_calls".into()),
                );
            }
        }
        if media.inactivity_timeout_secs == 0 {
            self.report(
                at.key("inactivity_timeout_secs"),
                item,
                "must be at least 1",
                Some("a call with silent media is torn down after this long; e.g. 60".into()),
            );
        }
        if media.port_quarantine_secs > 3_600 {
            self.report(
                at.key("port_quarantine_secs"),
                item,
                "must be at most 3600",
                Some(
                    "released ports are preferred last for this long (never refused); 30 is typical"
                        .into(),
                ),
            );
        }
        let xdp = at.key("xdp");
        let mut seen = HashSet::new();
        for (i, name) in media.xdp.interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 with the NUL; names cannot hold '/' or spaces.
            if name.is_empty()
                || name.len() > 15
                || name.contains(|c: char| c == '/' || c.is_whitespace())
            {
                self.report(
                    xdp.key("interfaces").index(i),
                    item,
                    format!("\"{name}\" is not an interface name"),
                    Some("use the name `ip link` shows, e.g. \"eth0\"".into()),
                );
            } else if !seen.insert(name) {
                self.report(
                    xdp.key("interfaces").index(i),
                    item,
                    format!("interface \"{name}\" is listed twice"),
                    None,
                );
            }
        }
    }

    fn header_policy(&mut self, at: &FieldPath, item: Option<&str>, policy: &HeaderPolicy) {
        for (i, name) in policy.strip.iter().enumerate() {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
            if !token {
                self.report(
                    at.key("strip").index(i),
                    item,
                    format!("\"{name}\" is not a header name"),
                    Some(
                        "header names are tokens such as \"Organization\" (RFC 3261 §25.1)".into(),
                    ),
                );
            } else if MANDATORY_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                self.report(
                    at.key("strip").index(i),
                    item,
                    format!("\"{name}\" cannot be stripped"),
                    Some(
                        "the SBC regenerates it on every message, so it never crosses; remove it \
                         from the list"
                            .into(),
                    ),
                );
            }
        }
        for (field, rewrite) in [
            ("server", &policy.server),
            ("user_agent", &policy.user_agent),
        ] {
            if let HeaderRewrite::Rewrite(value) = rewrite
                && (value.trim().is_empty() || value.contains(['\r', '\n']))
            {
                self.report(
                    at.key(field).key("rewrite"),
                    item,
                    "the rewrite value must be a non-empty single line",
                    Some("write e.g. { rewrite = \"SBC\" }, or \"remove\"".into()),
                );
            }
        }
    }

    fn names<'n>(
        &mut self,
        kind: &str,
        array: &str,
        names: impl Iterator<Item = &'n str>,
    ) -> HashSet<&'n str> {
        let mut seen = HashSet::new();
        for (i, name) in names.enumerate() {
            let at = FieldPath::item(array, i).key("name");
            let item = item_name(kind, i, name);
            let plain = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !plain {
                self.report(
                    at,
                    Some(&item),
                    format!("{kind} name \"{name}\" is empty or has characters other than letters, digits, '-', '_', '.'"),
                    Some("names appear in logs and metric labels; use e.g. \"carrier-a\"".into()),
                );
            } else if !seen.insert(name) {
                self.report(
                    at,
                    Some(&item),
                    format!("another {kind} is already named \"{name}\""),
                    Some(format!("{kind} names must be unique")),
                );
            }
        }
        seen
    }

    fn access(&mut self, at: &FieldPath, item: Option<&str>, realm: &Realm, access: &Access) {
        let config = self.config;
        match config.trunks.iter().find(|t| t.name == access.registrar) {
            None => self.report(
                at.key("registrar"),
                item,
                format!("unknown trunk \"{}\"", access.registrar),
                Some(format!(
                    "known trunks: {}",
                    list(config.trunks.iter().map(|t| &t.name))
                )),
            ),
            Some(trunk) if trunk.realm == realm.name => self.report(
                at.key("registrar"),
                item,
                format!(
                    "the registrar \"{}\" is in this same realm: it would see the phones",
                    trunk.name
                ),
                Some("put the registrar's trunk in the realm on the other side".into()),
            ),
            Some(_) => {}
        }
        if !(30..=3_600).contains(&access.phone_expires_secs) {
            self.report(
                at.key("phone_expires_secs"),
                item,
                format!("{} s is outside 30-3600 s", access.phone_expires_secs),
                Some("120 s keeps most NAT bindings open".into()),
            );
        }
        if access.registrar_expires_secs < access.phone_expires_secs
            || access.registrar_expires_secs > 86_400
        {
            self.report(
                at.key("registrar_expires_secs"),
                item,
                format!(
                    "{} s must be between phone_expires_secs ({} s) and 86400 s",
                    access.registrar_expires_secs, access.phone_expires_secs
                ),
                Some("3600 s is usual".into()),
            );
        }
        let zero = [
            ("max_bindings", access.max_bindings),
            ("max_bindings_per_aor", access.max_bindings_per_aor),
            ("max_bindings_per_source", access.max_bindings_per_source),
        ]
        .into_iter()
        .find(|(_, n)| *n == 0);
        if let Some((field, _)) = zero {
            self.report(
                at.key(field),
                item,
                "0 bindings would refuse every phone",
                None,
            );
        }
    }

    fn realms(&mut self) {
        let config = self.config;
        if config.realms.is_empty() {
            self.report(
                FieldPath::root("realm"),
                None,
                "no realm is defined",
                Some(
                    "an SBC borders at least one network: add a [[realm]] with a name, \
                     listen and media"
                        .into(),
                ),
            );
        }
        self.names(
            "realm",
            "realm",
            config.realms.iter().map(|r| r.name.as_str()),
        );
        for (i, realm) in config.realms.iter().enumerate() {
            self.realm(i, realm);
        }
    }

    fn realm(&mut self, i: usize, realm: &Realm) {
        let at = FieldPath::item("realm", i);
        let item = item_name("realm", i, &realm.name);
        let item = Some(item.as_str());
        if let Some(access) = &realm.access {
            self.access(&at.key("access"), item, realm, access);
        }
        if realm.latch_from_networks && realm.networks.is_empty() {
            self.report(
                at.key("latch_from_networks"),
                item,
                "the realm has no networks to learn media sources from",
                Some("list the realm's networks = [\"CIDR\"], or drop latch_from_networks".into()),
            );
        }
        if realm.protection.is_some() {
            let resolved = self.config.protection_of(i);
            self.protection(&at.key("protection"), item, &resolved);
        }
        // A media-only node (ng) needs no SIP listener.
        if realm.listen.is_empty() && self.config.ng.is_none() {
            self.report(
                at.key("listen"),
                item,
                "the realm has no listener",
                Some(
                    "add listen = [{ transport = \"udp\", address = \"IP:5060\" }]: the realm \
                     must receive calls and responses"
                        .into(),
                ),
            );
        }
        self.realm_tls(&at, item, realm);
        for (j, listener) in realm.listen.iter().enumerate() {
            if listener.address.port() == 0 {
                self.report(
                    at.key("listen").index(j).key("address"),
                    item,
                    format!("{} has port 0", listener.address),
                    Some("SIP listens on a fixed port, usually 5060".into()),
                );
            }
            if let Some(advertise) = listener.advertise {
                let problem = if advertise.is_ipv4() != listener.address.is_ipv4() {
                    Some(format!(
                        "advertised address {advertise} and listen address {} are of different \
                         families",
                        listener.address
                    ))
                } else if advertise.ip().is_unspecified() || advertise.port() == 0 {
                    Some(format!(
                        "{advertise} cannot be advertised in Via and Contact"
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    self.report(
                        at.key("listen").index(j).key("advertise"),
                        item,
                        problem,
                        Some(
                            "give the public IP:port a 1:1 NAT forwards to this listener, \
                             e.g. \"203.0.113.10:5060\""
                                .into(),
                        ),
                    );
                }
            } else if listener.address.ip().is_unspecified() {
                self.report(
                    at.key("listen").index(j).key("address"),
                    item,
                    format!(
                        "a listener bound to {} needs an address to advertise",
                        listener.address
                    ),
                    Some(
                        "bind the realm's own address, or add advertise = \"<IP:port peers reach>\""
                            .into(),
                    ),
                );
            }
        }
        for (field, value) in [
            ("recv_buffer_bytes", realm.recv_buffer_bytes),
            ("send_buffer_bytes", realm.send_buffer_bytes),
        ] {
            if let Some(bytes) = value.filter(|b| !BUFFER_BYTES.contains(b)) {
                self.report(
                    at.key(field),
                    item,
                    format!(
                        "{bytes} bytes is outside {}..={}",
                        BUFFER_BYTES.start(),
                        BUFFER_BYTES.end()
                    ),
                    Some("leave it out for the OS default, or give e.g. 4194304".into()),
                );
            }
        }
        let media = &realm.media;
        if let Some(advertise) = media.advertise {
            if advertise.is_ipv4() != media.address.is_ipv4() {
                self.report(
                    at.key("media").key("advertise"),
                    item,
                    format!(
                        "advertised address {advertise} and media address {} are of different \
                         families",
                        media.address
                    ),
                    Some("a 1:1 NAT maps IPv4 to IPv4 and IPv6 to IPv6".into()),
                );
            }
            if advertise.is_unspecified() {
                self.report(
                    at.key("media").key("advertise"),
                    item,
                    format!("{advertise} cannot be advertised in SDP"),
                    Some("give the address peers send media to".into()),
                );
            }
        } else if media.address.is_unspecified() {
            self.report(
                at.key("media").key("address"),
                item,
                format!(
                    "media bound to {} needs an address to advertise",
                    media.address
                ),
                Some("add advertise = \"<address peers reach>\" or bind a concrete address".into()),
            );
        }
        for (i, more) in media.more_addresses.iter().enumerate() {
            let problem = if more.is_ipv4() != media.address.is_ipv4() {
                Some((
                    format!(
                        "{more} and media address {} are of different families",
                        media.address
                    ),
                    "a realm's media addresses are all IPv4 or all IPv6",
                ))
            } else if more.is_unspecified() {
                Some((
                    format!("{more} is not an address to anchor on"),
                    "give addresses of this host (IP aliases or other NICs)",
                ))
            } else if media.addresses().filter(|a| a == more).count() > 1 {
                Some((format!("{more} is listed twice"), "list each address once"))
            } else if media.advertise.is_some() {
                Some((
                    "more_addresses cannot be combined with advertise".to_owned(),
                    "a 1:1 NAT maps one public address to `address`; anchor behind it on one",
                ))
            } else {
                None
            };
            if let Some((message, hint)) = problem {
                self.report(
                    at.key("media").key("more_addresses").index(i),
                    item,
                    message,
                    Some(hint.into()),
                );
            }
        }
        if !realm
            .listen
            .iter()
            .any(|l| l.address.is_ipv4() == media.address.is_ipv4())
            && !realm.listen.is_empty()
        {
            self.report(
                at.key("media").key("address"),
                item,
                format!(
                    "media address {} is of a family no listener of the realm uses",
                    media.address
                ),
                Some("signaling and media of a realm use the same IP family".into()),
            );
        }
        for (field, nets) in [
            ("networks", &realm.networks),
            ("acl.allow", &realm.acl.allow),
            ("acl.deny", &realm.acl.deny),
        ] {
            let base = field.split('.').fold(at.clone(), |p, k| p.key(k));
            for (j, net) in nets.iter().enumerate() {
                self.network(base.index(j), item, net);
            }
        }
    }

    /// A realm with a TLS listener has a certificate; the files are
    /// absolute paths; mutual TLS has a CA set to verify clients with.
    /// (Whether the files are usable is checked when they are read:
    /// `tls::TlsSettings::from_config`.)
    fn realm_tls(&mut self, at: &FieldPath, item: Option<&str>, realm: &Realm) {
        let tls_listener = realm
            .listen
            .iter()
            .position(|l| l.transport == Transport::Tls);
        let Some(tls) = &realm.tls else {
            if let Some(j) = tls_listener {
                self.report(
                    at.key("listen").index(j).key("transport"),
                    item,
                    "a tls listener needs the realm's certificate",
                    Some(
                        "add tls = { certificate = \"/etc/sbc/tls/sbc.pem\", private_key = \
                         \"/etc/sbc/tls/sbc.key\" } to the realm"
                            .into(),
                    ),
                );
            }
            return;
        };
        let tls_at = at.key("tls");
        self.file_path(
            tls_at.key("certificate"),
            item,
            &tls.certificate,
            "/etc/sbc/tls/sbc.pem",
        );
        self.file_path(
            tls_at.key("private_key"),
            item,
            &tls.private_key,
            "/etc/sbc/tls/sbc.key",
        );
        if let Some(ca) = &tls.ca {
            self.file_path(tls_at.key("ca"), item, ca, "/etc/sbc/tls/clients-ca.pem");
        } else if tls.require_client_certificate {
            self.report(
                tls_at.key("require_client_certificate"),
                item,
                "client certificates can't be required without a CA set to verify them",
                Some("add ca = \"/etc/sbc/tls/clients-ca.pem\" to the realm's tls".into()),
            );
        }
    }

    /// A trunk's `tls` belongs to a TLS trunk, which needs a CA set to
    /// verify the server; a client certificate comes with its key.
    fn trunk_tls(&mut self, at: &FieldPath, item: Option<&str>, trunk: &Trunk) {
        let tls_at = at.key("tls");
        match (&trunk.tls, trunk.transport()) {
            (Some(_), transport) if !trunk.may_speak_tls() => {
                self.report(
                    tls_at,
                    item,
                    format!("the trunk speaks {transport}, not tls"),
                    Some(
                        "set transport = \"tls\", or remove the tls table (a domain without \
                         port and transport may keep it: NAPTR may choose TLS)"
                            .into(),
                    ),
                );
                return;
            }
            (None, Transport::Tls) | (Some(super::TrunkTls { ca: None, .. }), _)
                if trunk.may_speak_tls() =>
            {
                self.report(
                    if trunk.tls.is_some() {
                        tls_at.key("ca")
                    } else {
                        at.key("transport")
                    },
                    item,
                    "a tls trunk needs a CA set to verify its certificate",
                    Some(
                        "add tls = { ca = \"/etc/sbc/tls/carrier-ca.pem\" } (the CA that \
                         issued the trunk's certificate)"
                            .into(),
                    ),
                );
            }
            _ => {}
        }
        let Some(tls) = &trunk.tls else {
            return;
        };
        if let Some(ca) = &tls.ca {
            self.file_path(tls_at.key("ca"), item, ca, "/etc/sbc/tls/carrier-ca.pem");
        }
        match (&tls.certificate, &tls.private_key) {
            (Some(cert), Some(key)) => {
                self.file_path(
                    tls_at.key("certificate"),
                    item,
                    cert,
                    "/etc/sbc/tls/client.pem",
                );
                self.file_path(
                    tls_at.key("private_key"),
                    item,
                    key,
                    "/etc/sbc/tls/client.key",
                );
            }
            (Some(_), None) => self.report(
                tls_at.key("certificate"),
                item,
                "a client certificate needs its private_key",
                Some("add private_key = \"/etc/sbc/tls/client.key\"".into()),
            ),
            (None, Some(_)) => self.report(
                tls_at.key("private_key"),
                item,
                "a private_key without its certificate",
                Some("add certificate = \"/etc/sbc/tls/client.pem\"".into()),
            ),
            (None, None) => {}
        }
        if let Some(name) = &tls.server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            self.report(
                tls_at.key("server_name"),
                item,
                format!("\"{name}\" is not a DNS name or IP address"),
                Some(
                    "give the name the trunk's certificate carries, e.g. \"sip.example.net\""
                        .into(),
                ),
            );
        }
    }

    fn network(&mut self, at: FieldPath, item: Option<&str>, net: &IpNet) {
        if net.addr() != net.network() {
            self.report(
                at,
                item,
                format!("{net} has host bits set"),
                Some(format!("did you mean {}?", net.trunc())),
            );
        }
    }

    /// No two listeners (nor the metrics endpoint) may claim the same
    /// transport, port and address; an unspecified address claims every
    /// address of its family.
    fn listeners(&mut self) {
        let config = self.config;
        let mut bound: Vec<(Transport, SocketAddr, FieldPath, String)> = Vec::new();
        for (i, realm) in config.realms.iter().enumerate() {
            for (
                j,
                &Listener {
                    transport, address, ..
                },
            ) in realm.listen.iter().enumerate()
            {
                let at = FieldPath::item("realm", i)
                    .key("listen")
                    .index(j)
                    .key("address");
                let item = item_name("realm", i, &realm.name);
                if let Some((_, other, _, owner)) = bound
                    .iter()
                    .find(|(t, a, _, _)| *t == transport && overlaps(*a, address))
                {
                    let message =
                        format!("{transport} {address} is already bound by {owner} ({other})");
                    self.report(
                        at.clone(),
                        Some(&item),
                        message,
                        Some("each transport, address and port can be bound once".into()),
                    );
                }
                bound.push((transport, address, at, item));
            }
        }
        if let Some((_, other, _, owner)) = bound
            .iter()
            .find(|(t, a, _, _)| *t == Transport::Tcp && overlaps(*a, config.metrics.listen))
        {
            let message = format!(
                "{} is already bound for SIP over tcp by {owner} ({other})",
                config.metrics.listen
            );
            self.report(
                FieldPath::root("metrics").key("listen"),
                Some("metrics"),
                message,
                Some("serve metrics on another port, e.g. 9660".into()),
            );
        }
        // SIP over UDP inside the media range would be taken by the relay.
        let media = &config.media;
        for (transport, address, at, item) in &bound {
            let in_range = (media.port_min..=media.port_max).contains(&address.port());
            let on_media = config
                .realms
                .iter()
                .flat_map(|r| r.media.addresses())
                .any(|media| overlaps_ip(media, address.ip()));
            if *transport == Transport::Udp && in_range && on_media {
                let message = format!(
                    "udp {address} lies inside the media port range {}-{}",
                    media.port_min, media.port_max
                );
                self.report(
                    at.clone(),
                    Some(item),
                    message,
                    Some("move the listener or the media range".into()),
                );
            }
        }
    }

    fn dns(&mut self) {
        let at = FieldPath::root("dns").key("servers");
        for (i, server) in self.config.dns.servers.iter().enumerate() {
            if server.port() == 0 || server.ip().is_unspecified() || server.ip().is_multicast() {
                self.report(
                    at.index(i),
                    Some("dns"),
                    format!("{server} is not a name server a query can be sent to"),
                    Some("give the server's IP and port, e.g. \"192.0.2.53:53\"".into()),
                );
            }
        }
    }

    fn cluster(&mut self) {
        let Some(cluster) = &self.config.cluster else {
            return;
        };
        let at = FieldPath::root("cluster");
        let item = Some("cluster");
        if crate::cluster::resp::parse_url(&cluster.redis_url).is_none() {
            self.report(
                at.key("redis_url"),
                item,
                format!("\"{}\" is not redis://HOST[:PORT]", cluster.redis_url),
                Some("e.g. \"redis://192.0.2.20:6379\"; credentials, paths and options are not supported".into()),
            );
        }
        for (field, value) in [("node_id", &cluster.node_id), ("name", &cluster.name)] {
            let fine = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !fine {
                self.report(
                    at.key(field),
                    item,
                    format!("\"{value}\" is not 1-64 letters, digits, '.', '_' or '-'"),
                    Some("e.g. \"sbc-a\" on one node and \"sbc-b\" on the other".into()),
                );
            }
        }
        if !(500..=60_000).contains(&cluster.lease_ms) {
            self.report(
                at.key("lease_ms"),
                item,
                format!("{} ms is outside 500..=60000", cluster.lease_ms),
                Some("1500 takes over within about 2 s of a node's death".into()),
            );
        } else if cluster.renew_ms < 50 || cluster.renew_ms.saturating_mul(3) > cluster.lease_ms {
            self.report(
                at.key("renew_ms"),
                item,
                format!(
                    "{} ms is not between 50 ms and a third of lease_ms ({} ms)",
                    cluster.renew_ms,
                    cluster.lease_ms / 3
                ),
                Some("renewing three times per lease survives a lost round trip".into()),
            );
        }
        if !(60..=2_592_000).contains(&cluster.call_ttl_secs) {
            self.report(
                at.key("call_ttl_secs"),
                item,
                format!("{} s is outside 60..=2592000", cluster.call_ttl_secs),
                Some(
                    "longer than the longest call the pair should carry over; 86400 is a day"
                        .into(),
                ),
            );
        }
    }

    fn trunks(&mut self) {
        let config = self.config;
        self.names(
            "trunk",
            "trunk",
            config.trunks.iter().map(|t| t.name.as_str()),
        );
        for (i, trunk) in config.trunks.iter().enumerate() {
            self.trunk(i, trunk);
        }
    }

    fn trunk(&mut self, i: usize, trunk: &Trunk) {
        let config = self.config;
        let at = FieldPath::item("trunk", i);
        let item = item_name("trunk", i, &trunk.name);
        let item = Some(item.as_str());
        if trunk.response_timeout_ms != 0
            && !(MIN_RESPONSE_TIMEOUT_MS..=MAX_RESPONSE_TIMEOUT_MS)
                .contains(&trunk.response_timeout_ms)
        {
            self.report(
                at.key("response_timeout_ms"),
                item,
                format!(
                    "{} ms is outside {MIN_RESPONSE_TIMEOUT_MS}..={MAX_RESPONSE_TIMEOUT_MS}",
                    trunk.response_timeout_ms
                ),
                Some(
                    "0 waits for timer B (32 s); below 500 ms a target that answers within \
                     a retransmission or two is given up"
                        .into(),
                ),
            );
        }
        match config.realms.iter().find(|r| r.name == trunk.realm) {
            None => self.report(
                at.key("realm"),
                item,
                format!("unknown realm \"{}\"", trunk.realm),
                Some(format!(
                    "known realms: {}",
                    list(config.realms.iter().map(|r| &r.name))
                )),
            ),
            Some(realm) => {
                let family = match trunk.address {
                    PeerAddress::Ip(addr) => Some(addr.is_ipv4()),
                    PeerAddress::Host { .. } | PeerAddress::Name { .. } => None,
                };
                // A bare name without a transport lets NAPTR choose among the
                // realm's listeners (TLS only with a tls table to verify by).
                let usable = if trunk.naptr_decides() {
                    !trunk.dns_transports(Some(realm)).is_empty()
                } else {
                    realm.listen.iter().any(|l| {
                        l.transport == trunk.transport()
                            && family.is_none_or(|v4| l.address.is_ipv4() == v4)
                    })
                };
                if trunk.naptr_decides() && !usable && !realm.listen.is_empty() {
                    self.report(
                        at.key("address"),
                        item,
                        format!(
                            "realm \"{}\" listens on TLS only, and the trunk has no tls table to \
                             verify a TLS server by",
                            realm.name
                        ),
                        Some(
                            "add tls = { ca = \"/etc/sbc/tls/carrier-ca.pem\" } to the trunk"
                                .into(),
                        ),
                    );
                } else if !usable && !realm.listen.is_empty() {
                    let family = match family {
                        Some(true) => " IPv4",
                        Some(false) => " IPv6",
                        None => "",
                    };
                    self.report(
                        at.key("transport"),
                        item,
                        format!(
                            "realm \"{}\" has no{family} {} listener to reach {} from",
                            realm.name,
                            trunk.transport(),
                            trunk.address
                        ),
                        Some(format!(
                            "add one to realm \"{}\" or change the trunk's transport",
                            realm.name
                        )),
                    );
                }
            }
        }
        match &trunk.address {
            PeerAddress::Ip(addr) if addr.port() == 0 || addr.ip().is_unspecified() => self.report(
                at.key("address"),
                item,
                format!("{addr} is not an address a request can be sent to"),
                Some("give the peer's IP and port, e.g. \"192.0.2.10:5060\"".into()),
            ),
            _ => {}
        }
        for (field, value) in [("max_calls", trunk.max_calls), ("max_cps", trunk.max_cps)] {
            if value == Some(0) {
                self.report(
                    at.key(field),
                    item,
                    "must be at least 1 when set",
                    Some("leave the field out for no limit".into()),
                );
            }
        }
        if let Some(max) = trunk.max_calls.filter(|&m| m > config.limits.max_calls) {
            self.report(
                at.key("max_calls"),
                item,
                format!(
                    "{max} exceeds limits.max_calls = {}",
                    config.limits.max_calls
                ),
                Some("the global limit caps it anyway; lower it or raise limits.max_calls".into()),
            );
        }
        if let Some(policy) = &trunk.header_policy {
            self.header_policy(&at.key("header_policy"), item, policy);
        }
        self.trunk_tls(&at, item, trunk);
    }

    fn routes(&mut self) {
        let config = self.config;
        self.names(
            "route",
            "route",
            config.routes.iter().map(|r| r.name.as_str()),
        );
        let mut catch_all: Option<&str> = None;
        for (i, route) in config.routes.iter().enumerate() {
            self.route(i, route);
            if let Some(earlier) = catch_all {
                let item = item_name("route", i, &route.name);
                self.report(
                    FieldPath::item("route", i),
                    Some(&item),
                    format!("never taken: route \"{earlier}\" before it matches every call"),
                    Some("routes are tried in file order; move the catch-all last".into()),
                );
            } else if route.matches.is_catch_all() {
                catch_all = Some(&route.name);
            }
        }
    }

    fn route(&mut self, i: usize, route: &Route) {
        let config = self.config;
        let at = FieldPath::item("route", i);
        let item = item_name("route", i, &route.name);
        let item = Some(item.as_str());
        let known_trunks = || {
            format!(
                "known trunks: {}",
                list(config.trunks.iter().map(|t| &t.name))
            )
        };
        if route.targets.is_empty() {
            self.report(
                at.key("targets"),
                item,
                "the route has no target",
                Some(known_trunks()),
            );
        }
        let mut seen = HashSet::new();
        for (j, target) in route.targets.iter().enumerate() {
            if !config.trunks.iter().any(|t| &t.name == target) {
                let message = if config.realms.iter().any(|r| &r.name == target) {
                    format!("\"{target}\" is a realm, not a trunk")
                } else {
                    format!("unknown trunk \"{target}\"")
                };
                self.report(
                    at.key("targets").index(j),
                    item,
                    message,
                    Some(known_trunks()),
                );
            } else if !seen.insert(target) {
                self.report(
                    at.key("targets").index(j),
                    item,
                    format!("trunk \"{target}\" is listed twice"),
                    Some("a failed trunk is not retried; list each trunk once".into()),
                );
            }
        }
        if route.targets.len() > 1 && route.failover_on.is_empty() {
            self.report(
                at.key("failover_on"),
                item,
                "no failover cause is given, so only the first target is ever tried",
                Some(
                    "list causes, e.g. [\"408\", \"5xx\", \"transport-error\", \"timeout\"]".into(),
                ),
            );
        }
        let m = &route.matches;
        let at_match = at.key("match");
        if let Some(realm) = &m.source_realm
            && !config.realms.iter().any(|r| &r.name == realm)
        {
            self.report(
                at_match.key("source_realm"),
                item,
                format!("unknown realm \"{realm}\""),
                Some(format!(
                    "known realms: {}",
                    list(config.realms.iter().map(|r| &r.name))
                )),
            );
        }
        if let Some(name) = &m.source_trunk {
            match config.trunks.iter().find(|t| &t.name == name) {
                None => self.report(
                    at_match.key("source_trunk"),
                    item,
                    format!("unknown trunk \"{name}\""),
                    Some(known_trunks()),
                ),
                Some(trunk) => {
                    if let Some(realm) = m.source_realm.as_ref().filter(|r| **r != trunk.realm) {
                        self.report(
                            at_match.key("source_trunk"),
                            item,
                            format!(
                                "trunk \"{name}\" is in realm \"{}\", so a call from it never \
                                 arrives on realm \"{realm}\": the route is never taken",
                                trunk.realm
                            ),
                            Some("drop source_realm; source_trunk implies it".into()),
                        );
                    }
                }
            }
        }
        if let Some(prefix) = &m.user_prefix {
            // RFC 3261 §25.1 user: unreserved / escaped / user-unreserved.
            let ok = !prefix.is_empty()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,;?/".contains(&b));
            if !ok {
                self.report(
                    at_match.key("user_prefix"),
                    item,
                    format!("\"{prefix}\" cannot begin a SIP URI user part"),
                    Some("e.g. \"+44\" or \"00\"; leave it out to match every user".into()),
                );
            }
        }
        if let Some(domain) = &m.domain {
            let ok = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
            if !ok {
                self.report(
                    at_match.key("domain"),
                    item,
                    format!("\"{domain}\" is not a host name or address"),
                    Some("give the Request-URI host, e.g. \"pbx.example.net\"".into()),
                );
            }
        }
    }
}

fn overlaps_ip(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a == b || a.is_unspecified() || b.is_unspecified())
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && overlaps_ip(a.ip(), b.ip())
}

/// The shortest `response_timeout_ms`: T1 (500 ms), one retransmission.
const MIN_RESPONSE_TIMEOUT_MS: u32 = 500;
/// The longest: timer B (64*T1) would end the transaction first.
const MAX_RESPONSE_TIMEOUT_MS: u32 = 32_000;
