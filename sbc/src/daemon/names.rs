//! Trunks given by DNS name: one task per name keeps it resolved (RFC 3263
//! through [`crate::dns::resolve`]) and looks it up again when its TTL runs
//! out; the core loop takes each answer off a channel and hands the targets
//! to the core ([`Core::set_trunk_targets`]) and the shield's trust. The
//! core never waits for DNS: a trunk whose name has not resolved yet is
//! skipped by routing like one with no address, and a name that stops
//! resolving keeps its last targets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::b2bua::Core;
use crate::b2bua::routing::TrunkTarget;
use crate::config::{Config, PeerAddress, Trunk};
use crate::dns::resolve::{DnsError, Resolver};
use crate::dns::{DnsTransport, Resolution, refresh_at};
use crate::guard::Trust;
use crate::transport::Transport;

/// The shortest wait between two lookups of one name (a TTL of 0 must not
/// become a query loop).
const TTL_FLOOR: Duration = Duration::from_secs(1);
/// The longest (a huge TTL still gets a look now and then).
const TTL_CEILING: Duration = Duration::from_secs(3600);
/// The wait after a failed lookup (the last targets stay in use).
const RETRY: Duration = Duration::from_secs(5);

/// One lookup's outcome, for the core loop.
pub(super) struct Answer {
    generation: u64,
    trunk: String,
    /// What was resolved (see [`resolved_what`]).
    what: String,
    result: Result<Resolution, DnsError>,
}

/// A trunk's name and transport as configured: what its targets depend on.
fn resolved_what(trunk: &Trunk) -> String {
    format!("{} {:?}", trunk.address, trunk.transport)
}

/// The tasks keeping every DNS-named trunk resolved, and their last answers.
pub(super) struct TrunkNames {
    resolver: Option<Arc<Resolver>>,
    servers: Vec<std::net::SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    generation: u64,
    tx: mpsc::Sender<Answer>,
    /// The last targets of each trunk (by name), with what was resolved
    /// (address and transport as configured).
    resolved: HashMap<String, (String, Vec<TrunkTarget>)>,
}

impl TrunkNames {
    /// Starts a task per trunk of `config` given by name; answers arrive on
    /// the returned receiver (feed them to [`TrunkNames::accept`]).
    pub(super) fn start(config: &Config) -> (Self, mpsc::Receiver<Answer>) {
        let (tx, rx) = mpsc::channel(64);
        let mut names = TrunkNames {
            resolver: None,
            servers: Vec::new(),
            tasks: Vec::new(),
            generation: 0,
            tx,
            resolved: HashMap::new(),
        };
        names.configure(config);
        (names, rx)
    }

    /// A new configuration: every lookup starts again (with new name
    /// servers if `[dns] servers` changed); the last answers of trunks that
    /// keep their name stay in use meanwhile.
    pub(super) fn configure(&mut self, config: &Config) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.generation += 1;
        let named: Vec<&Trunk> = config
            .trunks
            .iter()
            .filter(|t| !matches!(t.address, PeerAddress::Ip(_)))
            .collect();
        // A trunk whose name or transport changed starts afresh (the core
        // dropped its targets too).
        self.resolved.retain(|name, (what, _)| {
            named
                .iter()
                .any(|t| &t.name == name && *what == resolved_what(t))
        });
        if named.is_empty() {
            return;
        }
        if self.resolver.is_none() || self.servers != config.dns.servers {
            match Resolver::new(&config.dns.servers) {
                Ok(resolver) => {
                    self.resolver = Some(Arc::new(resolver));
                    self.servers = config.dns.servers.clone();
                }
                Err(e) => {
                    warn!(error = %e, "no DNS resolver: trunks given by name get no address");
                    return;
                }
            }
        }
        let Some(resolver) = self.resolver.clone() else {
            return;
        };
        for trunk in named {
            let (host, port) = match &trunk.address {
                PeerAddress::Host { host, port } => (host.clone(), Some(*port)),
                PeerAddress::Name { host } => (host.clone(), None),
                PeerAddress::Ip(_) => continue,
            };
            let transport = trunk.transport.map(|t| dns_transport(t.into()));
            let usable = usable_transports(config, trunk);
            let (tx, generation, resolver) = (self.tx.clone(), self.generation, resolver.clone());
            let name = trunk.name.clone();
            let what = resolved_what(trunk);
            self.tasks.push(tokio::spawn(async move {
                loop {
                    let result = resolver.resolve(&host, port, transport, &usable).await;
                    let wait = match &result {
                        Ok(r) => refresh_at(super::now(), r.ttl, TTL_FLOOR, TTL_CEILING)
                            .saturating_duration_since(super::now()),
                        Err(_) => RETRY,
                    };
                    let answer = Answer {
                        generation,
                        trunk: name.clone(),
                        what: what.clone(),
                        result,
                    };
                    if tx.send(answer).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }));
        }
    }

    /// Takes a lookup's answer: new targets go to the core (and `true`
    /// says the trust must be rebuilt); a failure keeps the last ones.
    pub(super) fn accept(&mut self, core: &mut Core, answer: Answer) -> bool {
        if answer.generation != self.generation {
            return false; // from before a reload
        }
        let resolution = match answer.result {
            Ok(resolution) => resolution,
            Err(e) => {
                warn!(trunk = %answer.trunk, error = %e, "trunk name does not resolve; its last targets stay in use");
                return false;
            }
        };
        let targets: Vec<TrunkTarget> = resolution
            .targets
            .iter()
            .filter_map(|t| {
                Some(TrunkTarget {
                    transport: Some(sip_transport(t.transport)?),
                    priority: t.priority,
                    weight: t.weight,
                    ..TrunkTarget::at(t.addr)
                })
            })
            .collect();
        let same = self.resolved.get(&answer.trunk).is_some_and(|(_, old)| {
            old.len() == targets.len()
                && old.iter().zip(&targets).all(|(a, b)| {
                    (a.addr, a.transport, a.priority, a.weight)
                        == (b.addr, b.transport, b.priority, b.weight)
                })
        });
        if same {
            return false;
        }
        let list: Vec<String> = resolution
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{} {} ({}, priority {}, weight {})",
                    t.transport, t.addr, t.host, t.priority, t.weight
                )
            })
            .collect();
        info!(
            trunk = %answer.trunk,
            method = %resolution.method,
            ttl_secs = resolution.ttl.as_secs(),
            targets = %list.join(", "),
            "trunk resolved"
        );
        core.set_trunk_targets(super::now(), &answer.trunk, targets.clone());
        self.resolved.insert(answer.trunk, (answer.what, targets));
        true
    }

    /// The addresses resolved so far for `trunk` (none before its first
    /// answer).
    pub(super) fn targets_of(&self, trunk: &str) -> Vec<std::net::SocketAddr> {
        self.resolved
            .get(trunk)
            .map(|(_, targets)| targets.iter().map(|t| t.addr).collect())
            .unwrap_or_default()
    }

    /// The shield's trust for `config` with the targets resolved so far.
    pub(super) fn trust(&self, config: &Config) -> Trust {
        Trust::with_targets(config, |trunk| {
            self.resolved
                .get(trunk)
                .map(|(_, targets)| targets.iter().map(|t| t.addr.ip()).collect::<Vec<IpAddr>>())
                .unwrap_or_default()
        })
    }
}

impl Drop for TrunkNames {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The transports a trunk's name may resolve to
/// ([`Trunk::dns_transports`]); NAPTR's records' order decides among them.
fn usable_transports(config: &Config, trunk: &Trunk) -> Vec<DnsTransport> {
    let realm = config.realms.iter().find(|r| r.name == trunk.realm);
    trunk
        .dns_transports(realm)
        .into_iter()
        .map(|t| dns_transport(t.into()))
        .collect()
}

fn dns_transport(t: Transport) -> DnsTransport {
    match t {
        Transport::Udp => DnsTransport::Udp,
        Transport::Tcp => DnsTransport::Tcp,
        Transport::Tls => DnsTransport::Tls,
    }
}

fn sip_transport(t: DnsTransport) -> Option<Transport> {
    match t {
        DnsTransport::Udp => Some(Transport::Udp),
        DnsTransport::Tcp => Some(Transport::Tcp),
        DnsTransport::Tls => Some(Transport::Tls),
    }
}
