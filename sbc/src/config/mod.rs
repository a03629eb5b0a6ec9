//! The SBC's typed TOML configuration: schema, defaults, validation, and
//! errors that name the file, the line and the field.
//!
//! Owns: turning a file (or the embedded default, `config/default.toml`) into
//! a [`Config`] that has been checked once, up front, so the rest of the SBC
//! never meets a dangling reference or an impossible value. It reads files
//! only in [`Config::load`] (and the TLS files it names, in step 3
//! below); it binds nothing, resolves no host name and
//! starts nothing (whether an address can really be bound is the transport's
//! business at start-up).
//!
//! RFC rules it enforces on values: RTP on even ports with RTCP on the next
//! odd one (RFC 3550 §11), so the media range starts even and ends odd;
//! header names are tokens (RFC 3261 §25.1); the 501-or-relay choice for
//! unknown methods (RFC 3261 §8.2.1); `P-Asserted-Identity` only by policy
//! (RFC 3325 §5).
//!
//! How a text becomes a `Config`:
//!
//! 1. `toml` + serde deserialize it into the schema (`schema.rs`): every
//!    struct has `deny_unknown_fields`, so a misspelt key fails with the list
//!    of expected keys. Serde stops at the first such error.
//! 2. `validate` (`validate.rs`) checks cross references and sanity and
//!    reports *every* problem.
//! 3. When that found nothing, the TLS certificates, keys and CA sets it
//!    names are read and checked (`crate::tls`: readable, key matches
//!    certificate, inside the validity period, names present).
//! 4. Each problem's field path (`trunk[1].realm`) is located in the text
//!    (`locate.rs`) to give it a line and a column.
//!
//! Words, for operators coming from commercial SBCs: realm-config and
//! sip-interface are a `[[realm]]` with its `listen` sockets; a session-agent
//! is a `[[trunk]]`; local-policy is `[[route]]`; a steering-pool is the
//! `[media]` port range with each realm's `media.address`; sip-manipulation
//! is the header policy (`[topology_hiding]`, a trunk's `header_policy`).

mod check;
mod error;
mod locate;
mod reload;
mod runtime;
mod schema;
mod validate;

#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::path::Path;

pub use check::{USAGE, run as check_config};
pub use error::{ConfigError, Problem};
pub use schema::{
    Access, Acl, Cdr, Cluster, ClusterMode, Config, FailoverCause, ForeignInDialog, FsyncPolicy,
    HeaderPolicy, HeaderRewrite, Latching, Limits, Listener, LogFormat, LogLevel, Logging, Media,
    Metrics, PaiPolicy, PeerAddress, Protection, ProtectionOverride, Realm, RealmMedia, RealmTls,
    RealtimePolicy, Route, RouteMatch, Scheduling, SipConfig, State, Transport, Trunk, TrunkTls,
    UnknownMethods, Xdp, XdpMode, ng_permits,
};

use locate::{FieldPath, Located, Seg};

/// Certificates are checked against the wall clock when a file is loaded:
/// loading is IO, like reading the file.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// The embedded default: a two-realm loopback lab (see `config/README.md`).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// The name problems in the embedded default are reported under.
pub const DEFAULT_NAME: &str = "config/default.toml (embedded)";

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_str_named(&text, &file)
    }

    /// The embedded default configuration, parsed and validated (a test
    /// guarantees it is valid).
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_str_named(DEFAULT_TOML, DEFAULT_NAME)
    }

    /// Parses and validates a configuration text; `name` is the file name
    /// problems are reported under.
    pub fn from_str_named(text: &str, name: &str) -> Result<Config, ConfigError> {
        let located = Located::new(text);
        let config = toml::from_str::<Config>(text).map_err(|e| ConfigError::Invalid {
            problems: vec![serde_problem(&e, &located, name)],
        })?;
        config.validate(&located, name)
    }

    /// Runs every check once (pingora style) and hands the config back, or
    /// every problem sorted by position.
    fn validate(self, located: &Located<'_>, name: &str) -> Result<Config, ConfigError> {
        let mut findings = validate::validate(&self);
        if findings.is_empty() {
            findings = self.tls_findings();
        }
        let mut problems: Vec<Problem> = findings
            .into_iter()
            .map(|finding| {
                let (line, column) = located.position_of(&finding.path);
                Problem {
                    file: name.to_owned(),
                    line,
                    column,
                    field: finding.path.to_string(),
                    item: finding.item,
                    message: finding.message,
                    hint: finding.hint,
                }
            })
            .collect();
        if problems.is_empty() {
            return Ok(self);
        }
        problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError::Invalid { problems })
    }

    /// What is wrong with the TLS files this configuration names, each at
    /// the field that names the file.
    fn tls_findings(&self) -> Vec<validate::Finding> {
        let Err(problems) =
            crate::tls::TlsSettings::from_config(self, &|_| Vec::new(), wall_clock())
        else {
            return Vec::new();
        };
        problems
            .into_iter()
            .map(|p| {
                let (array, name) = match p.owner {
                    crate::tls::Owner::Realm => ("realm", &self.realms[p.index].name),
                    crate::tls::Owner::Trunk => ("trunk", &self.trunks[p.index].name),
                };
                let hint = match &p.error {
                    crate::tls::TlsFileError::Expired { .. }
                    | crate::tls::TlsFileError::NotYetValid { .. } => {
                        "renew the certificate (and check the host's clock)"
                    }
                    crate::tls::TlsFileError::KeyMismatch { .. } => {
                        "give the key the certificate was issued for"
                    }
                    crate::tls::TlsFileError::Read { .. } => {
                        "check the path and that the daemon's user may read it"
                    }
                    _ => "give a PEM file as the README's TLS section shows",
                };
                validate::Finding {
                    path: FieldPath::item(array, p.index).key("tls").key(p.field),
                    item: Some(format!("{array} \"{name}\"")),
                    message: p.error.to_string(),
                    hint: Some(hint.to_owned()),
                }
            })
            .collect()
    }

    /// What each TLS listener and trunk presents and verifies, one line
    /// each (`check-config`); empty without TLS or when a file is unusable.
    pub fn tls_summary(&self) -> Vec<String> {
        crate::tls::TlsSettings::from_config(self, &|_| Vec::new(), wall_clock())
            .map(|s| s.describe().to_vec())
            .unwrap_or_default()
    }

    /// What `[cluster]` makes of this node, in one line (none without it):
    /// nothing is asked of Redis.
    pub fn cluster_plan(&self) -> Option<String> {
        let pair = self.cluster.as_ref()?;
        if pair.mode == ClusterMode::Active {
            return Some(format!(
                "cluster: active node \"{}\" of cluster \"{}\" in {}; serves at once; shares bans \
                 (\"{}:bans\") and per-trunk limits with the other active nodes (\"{}:nodes\", every {} ms): \
                 their calls count against max_calls, max_cps is split among the nodes alive; calls are \
                 not replicated",
                pair.node_id, pair.name, pair.redis_url, pair.name, pair.name, pair.renew_ms,
            ));
        }
        Some(format!(
            "cluster: node \"{}\" of pair \"{}\"; lease \"{}:lease\" in {}; standby until it holds the lease, \
             then serves; renews every {} ms, so a dead active node is replaced within about {} ms; \
             listeners and media bind with IP_FREEBIND; answered calls are written to \"{}:call:*\" \
             (kept {} s) and the stream \"{}:calls\", and carried on by the node that takes over",
            pair.node_id,
            pair.name,
            pair.name,
            pair.redis_url,
            pair.renew_ms,
            pair.lease_ms + pair.renew_ms / 2,
            pair.name,
            pair.call_ttl_secs,
            pair.name,
        ))
    }

    /// Media relay threads to start (`media.relay_threads`; 0: one per CPU
    /// of `scheduling.media_cpus`, else one per core: `cores`, the
    /// parallelism the daemon started with, before `signaling_cpus`
    /// narrowed it).
    pub fn relay_threads(&self, cores: usize) -> usize {
        match (self.media.relay_threads, &self.scheduling.media_cpus) {
            (0, Some(cpus)) => cpus.len(),
            (0, None) => cores.max(1),
            (n, _) => usize::from(n),
        }
    }

    /// Which threads run in a real-time class and on which CPUs, in one
    /// line (for `sbc check-config`); `None` when nothing is set.
    pub fn scheduling_plan(&self) -> Option<String> {
        let s = &self.scheduling;
        let realtime = s.signaling().is_some() || s.media().is_some();
        if !realtime && s.signaling_cpus.is_none() && s.media_cpus.is_none() {
            return None;
        }
        let mut signaling = match s.signaling() {
            Some(class) => format!("the signaling threads run {class}"),
            None => "the signaling threads keep their class".to_owned(),
        };
        if let Some(cpus) = &s.signaling_cpus {
            signaling.push_str(&format!(" on CPUs {cpus}"));
        }
        let mut media = match s.media() {
            Some(crate::sched::Class::Normal) => {
                "the media relay threads go back to SCHED_OTHER".to_owned()
            }
            Some(class) => format!("the media relay threads run {class}"),
            None => "the media relay threads keep their class".to_owned(),
        };
        match (&s.media_cpus, &s.signaling_cpus) {
            (Some(cpus), _) => media.push_str(&format!(", each pinned to one of CPUs {cpus}")),
            (None, Some(_)) => media.push_str(" on the CPUs the daemon was started with"),
            (None, None) => {}
        }
        let privilege = if realtime {
            "; needs root, CAP_SYS_NICE or RLIMIT_RTPRIO, or the daemon refuses to start"
        } else {
            ""
        };
        Some(format!("scheduling: {signaling}; {media}{privilege}"))
    }

    /// What the stop, drain and restart signals do with this configuration,
    /// in one line (for `sbc check-config`).
    pub fn signals_plan(&self) -> String {
        let restart = match (&self.media.xdp.pin_dir, self.media.xdp.mode) {
            (Some(dir), mode) if mode != XdpMode::Off => format!(
                "SIGUSR2 exits with status 75 leaving the calls up and the XDP links and flow maps pinned in {}, \
                 so latched media flows on until the next start adopts them",
                dir.display()
            ),
            _ => "SIGUSR2 acts as SIGTERM (no XDP pin directory: nothing to hand over)".to_owned(),
        };
        let hand_over = if self.cluster.is_some() {
            "; in the pair, with a standby mirroring the calls, it hands them over instead (exits at once, \
             leaving them up for the standby to carry on)"
        } else {
            ""
        };
        format!(
            "signals: SIGTERM ends the calls up with BYE and exits; SIGQUIT drains (new calls 503, exits when the \
             calls up have ended or after {} s){hand_over}; {restart}",
            self.drain.deadline_secs
        )
    }

    /// One line per trunk given by DNS name saying how it will be resolved
    /// (RFC 3263): which records are asked, for which transports, of which
    /// name servers. Nothing is looked up.
    pub fn dns_plan(&self) -> Vec<String> {
        let servers = if self.dns.servers.is_empty() {
            "the system's name servers (/etc/resolv.conf)".to_owned()
        } else {
            let list: Vec<String> = self.dns.servers.iter().map(ToString::to_string).collect();
            format!("name servers {}", list.join(", "))
        };
        let block = match self.dns.target_block_secs {
            0 => "a failed target is not blocked".to_owned(),
            secs => {
                format!("a target that times out or answers 503 waits {secs} s behind the others")
            }
        };
        self.trunks
            .iter()
            .filter_map(|t| {
                let how = match (&t.address, t.transport) {
                    (PeerAddress::Ip(_), _) => return None,
                    (PeerAddress::Host { host, port }, _) => format!(
                        "A/AAAA of {host}, port {port}, over {} (no NAPTR or SRV: the port is given)",
                        t.transport()
                    ),
                    (PeerAddress::Name { host }, Some(transport)) => {
                        let prefix = match transport {
                            Transport::Udp => "_sip._udp",
                            Transport::Tcp => "_sip._tcp",
                            Transport::Tls => "_sips._tcp",
                        };
                        format!(
                            "SRV {prefix}.{host} (transport {transport} given: no NAPTR), targets by priority then weight, then A/AAAA of each; without SRV, A/AAAA of {host} port {}",
                            if transport == Transport::Tls { 5061 } else { 5060 }
                        )
                    }
                    (PeerAddress::Name { host }, None) => {
                        let realm = self.realms.iter().find(|r| r.name == t.realm);
                        let services: Vec<(&str, &str)> = t
                            .dns_transports(realm)
                            .into_iter()
                            .map(|transport| match transport {
                                Transport::Udp => ("SIP+D2U", "_sip._udp"),
                                Transport::Tcp => ("SIP+D2T", "_sip._tcp"),
                                Transport::Tls => ("SIPS+D2T", "_sips._tcp"),
                            })
                            .collect();
                        let naptr: Vec<&str> = services.iter().map(|(s, _)| *s).collect();
                        let srv: Vec<String> =
                            services.iter().map(|(_, p)| format!("{p}.{host}")).collect();
                        format!(
                            "NAPTR {host} (services {}), then SRV of the chosen replacement; without NAPTR, SRV {}; SRV targets by priority then weight, then A/AAAA of each; without SRV, A/AAAA of {host} port 5060",
                            naptr.join(", "),
                            srv.join(" then ")
                        )
                    }
                };
                Some(format!(
                    "trunk {}: {how}; asked of {servers}; re-resolved when the TTL runs out; {block}",
                    t.name
                ))
            })
            .collect()
    }

    /// One paragraph saying what this configuration sets up: realms with
    /// their listeners, trunks, routes, media and metrics.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let realms: Vec<String> = self
            .realms
            .iter()
            .map(|r| {
                let listeners: Vec<String> = r
                    .listen
                    .iter()
                    .map(|l| match l.advertise {
                        Some(public) => format!("{} {} as {public}", l.transport, l.address),
                        None => format!("{} {}", l.transport, l.address),
                    })
                    .collect();
                let media = match r.media.advertise {
                    Some(public) => format!("{} as {public}", r.media.address),
                    None => r
                        .media
                        .addresses()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let access = r.access.as_ref().map_or(String::new(), |a| {
                    format!(
                        "; phones register to {} (phones {} s, registrar {} s, keepalive {} s)",
                        a.registrar,
                        a.phone_expires_secs,
                        a.registrar_expires_secs,
                        a.keepalive_secs
                    )
                });
                format!(
                    "{} ({}; media {media}{access})",
                    r.name,
                    listeners.join(", ")
                )
            })
            .collect();
        let _ = write!(
            s,
            "{}: {}. ",
            plural(self.realms.len(), "realm"),
            realms.join(", ")
        );
        let trunks: Vec<String> = self
            .trunks
            .iter()
            .map(|t| {
                let transport = match (&t.address, t.transport) {
                    (PeerAddress::Name { .. }, None) => "naptr".to_owned(),
                    _ => t.transport().to_string(),
                };
                format!("{} ({transport} {} in {})", t.name, t.address, t.realm)
            })
            .collect();
        let _ = write!(
            s,
            "{}: {}. ",
            plural(self.trunks.len(), "trunk"),
            if trunks.is_empty() {
                "none".to_owned()
            } else {
                trunks.join(", ")
            }
        );
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                let m = &r.matches;
                let mut from = Vec::new();
                if let Some(realm) = &m.source_realm {
                    from.push(format!("realm {realm}"));
                }
                if let Some(trunk) = &m.source_trunk {
                    from.push(format!("trunk {trunk}"));
                }
                if let Some(prefix) = &m.user_prefix {
                    from.push(format!("user {prefix}*"));
                }
                if let Some(domain) = &m.domain {
                    from.push(format!("domain {domain}"));
                }
                let from = if from.is_empty() {
                    "any call".to_owned()
                } else {
                    from.join(" + ")
                };
                format!("{} ({from} -> {})", r.name, r.targets.join(" then "))
            })
            .collect();
        let _ = write!(
            s,
            "{}: {}. ",
            plural(self.routes.len(), "route"),
            if routes.is_empty() {
                "none".to_owned()
            } else {
                routes.join(", ")
            }
        );
        let _ = write!(
            s,
            "Media ports {}-{} ({} pairs), XDP {}; metrics on {}.",
            self.media.port_min,
            self.media.port_max,
            self.media.port_pairs(),
            self.media.xdp.mode.as_str(),
            self.metrics.listen
        );
        for (i, realm) in self.realms.iter().enumerate() {
            let p = self.protection_of(i);
            let _ = if p.enabled {
                write!(
                    s,
                    " Protection on {}: untrusted sources {}/s (burst {}), ban {} s, per source {} \
                     transactions, {} setups, {} calls, ban after {} refusals; {} scanner patterns; \
                     strangers in dialogs {}.",
                    realm.name,
                    p.request_rate,
                    p.request_burst,
                    p.ban_secs,
                    p.max_transactions_per_source,
                    p.max_setups_per_source,
                    p.max_calls_per_source,
                    p.ban_after_refusals,
                    p.scanner_user_agents.len(),
                    match p.foreign_in_dialog {
                        ForeignInDialog::Reject => "get 403",
                        ForeignInDialog::Drop => "are dropped",
                    }
                )
            } else {
                write!(s, " Protection on {}: off.", realm.name)
            };
        }
        s
    }
}

/// A toml/serde error as a problem: its span located, the field named, and a
/// suggestion for a misspelt key.
fn serde_problem(error: &toml::de::Error, located: &Located<'_>, name: &str) -> Problem {
    let message = error.message().trim().to_owned();
    let span = error.span();
    let (line, column) = span.clone().map_or((1, 1), |s| located.line_col(s.start));
    let mut path = span
        .clone()
        .map(|s| located.path_at(s.start))
        .unwrap_or_default();
    let mut hint = None;
    if let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    {
        // "unknown field `reaml`, expected one of `name`, `realm`, ...": the
        // span of an unknown field is the key itself, inside its table.
        let words: Vec<&str> = rest.split('`').step_by(2).collect();
        if let Some((unknown, expected)) = words.split_first() {
            if message.starts_with("unknown field")
                && path.0.last() != Some(&Seg::Key((*unknown).to_owned()))
            {
                path = path.key(unknown);
            }
            hint = did_you_mean(unknown, expected);
        }
    } else if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        path = path.key(missing);
        hint = Some(format!("add `{missing} = ...` to this table"));
    } else if message.contains("socket address syntax") {
        hint = Some("write IP:port, e.g. \"127.0.0.1:5060\" or \"[::1]:5060\"".into());
    } else if message.contains("IP address syntax") {
        hint = Some("write an address, or a network as ADDRESS/PREFIX, e.g. \"10.0.0.0/8\"".into());
    }
    Problem {
        file: name.to_owned(),
        line,
        column,
        field: path.to_string(),
        item: item_of(&path, located),
        message,
        hint,
    }
}

/// `trunk "pbx"` for a path under `trunk[i]` whose table has a name.
fn item_of(path: &FieldPath, located: &Located<'_>) -> Option<String> {
    match path.0.as_slice() {
        [Seg::Key(array), Seg::Index(i), ..] => {
            let element = FieldPath(path.0[..2].to_vec());
            Some(match located.string_at(&element.key("name")) {
                Some(name) => format!("{array} \"{name}\""),
                None => format!("{array}[{i}]"),
            })
        }
        [Seg::Key(section), _, ..] => Some(section.clone()),
        _ => None,
    }
}

/// The expected word closest to a misspelt one: a missing or extra unit
/// suffix (`timeout` for `timeout_secs`), or a couple of typos.
fn did_you_mean(unknown: &str, expected: &[&str]) -> Option<String> {
    expected
        .iter()
        .filter(|e| !e.is_empty())
        .map(|e| {
            let affix = e.starts_with(unknown) || unknown.starts_with(*e);
            (if affix { 0 } else { edit_distance(unknown, e) }, *e)
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, e)| format!("did you mean `{e}`?"))
}

/// Levenshtein distance, for "did you mean" on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
