//! The lookups of RFC 3263 §4 over hickory-resolver (an IO shell: it sends
//! DNS queries and reads the clock; the daemon runs it in its own tasks).
//!
//! * `name:port`: A/AAAA only, on that port.
//! * a name without a port, `transport` given in the trunk: SRV for that
//!   transport (`_sip._udp` / `_sip._tcp` / `_sips._tcp`), else A/AAAA on
//!   the transport's default port.
//! * a name without a port or transport: NAPTR (services `SIP+D2U`,
//!   `SIP+D2T`, `SIPS+D2T`; flag `S`), by order then preference, the first
//!   usable one's replacement looked up as SRV; with no usable NAPTR, SRV for
//!   each usable transport in turn; with no SRV either, A/AAAA on 5060.
//!
//! Every SRV target is looked up as A and AAAA; the answer's TTL is the
//! shortest of every record used. Addresses of SRV targets are cached for
//! their own TTL across lookups ([`TtlCache`]), beside hickory's cache.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::{DnsTransport, Method, Resolution, Target, TtlCache};

/// Why a trunk's name gave no target.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The system's resolver configuration (`/etc/resolv.conf`) could not be
    /// read; set `[dns] servers`.
    #[error("cannot read the system's DNS configuration ({0}); set [dns] servers")]
    SystemConfig(NetError),
    /// The name is not a valid DNS name.
    #[error("\"{name}\" is not a DNS name")]
    BadName {
        /// The name as configured.
        name: String,
    },
    /// No record of any kind RFC 3263 looks for gave an address the SBC
    /// can use (the last lookup's error, if any, says why).
    #[error("{name} has no NAPTR, SRV or A/AAAA records for a transport the SBC serves{}",
        last.as_ref().map(|e| format!(" (last lookup: {e})")).unwrap_or_default())]
    NoTargets {
        /// The trunk's name.
        name: String,
        /// The last lookup error seen.
        last: Option<NetError>,
    },
}

/// An RFC 3263 resolver.
pub struct Resolver {
    inner: TokioResolver,
    /// Addresses of SRV target hosts, with their TTL.
    addresses: Mutex<TtlCache<String, Vec<IpAddr>>>,
}

/// The shell's clock.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

impl Resolver {
    /// A resolver asking `servers` (`[dns] servers`), or the system's name
    /// servers (`/etc/resolv.conf`) when there are none. Must be called in
    /// a tokio runtime.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, DnsError> {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(DnsError::SystemConfig)?
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    ns.connections = vec![udp, tcp];
                    ns
                })
                .collect();
            let mut opts = ResolverOpts::default();
            // A trunk lookup that hangs delays only its own refresh, but a
            // short timeout lets a second server answer sooner.
            opts.timeout = Duration::from_secs(2);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(opts)
        };
        let inner = builder.build().map_err(DnsError::SystemConfig)?;
        Ok(Self {
            inner,
            addresses: Mutex::new(TtlCache::default()),
        })
    }

    /// Resolves a trunk: `host` with its configured `port` and `transport`
    /// (each optional), keeping only targets over a transport in `usable`.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<DnsTransport>,
        usable: &[DnsTransport],
    ) -> Result<Resolution, DnsError> {
        let fqdn = fqdn(host)?;
        let mut last = None;
        let mut ttl = u32::MAX;
        let no_targets = |last| DnsError::NoTargets {
            name: host.to_owned(),
            last,
        };
        if let Some(port) = port {
            let transport = transport.unwrap_or(DnsTransport::Udp);
            let (ips, t) = self.addresses(&fqdn, &mut last).await;
            let targets = plain_targets(host, &ips, port, transport);
            if targets.is_empty() {
                return Err(no_targets(last));
            }
            return Ok(finish(targets, t, Method::Address));
        }
        // NAPTR only when the trunk leaves the transport to DNS (§4.1).
        if transport.is_none() {
            let mut naptrs = Vec::new();
            match self.inner.lookup(fqdn.clone(), RecordType::NAPTR).await {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        if let RData::NAPTR(n) = &record.data {
                            ttl = ttl.min(record.ttl);
                            let Some(t) = DnsTransport::from_naptr_service(&n.services) else {
                                continue;
                            };
                            if n.flags.eq_ignore_ascii_case(b"s") && usable.contains(&t) {
                                naptrs.push((n.order, n.preference, t, n.replacement.clone()));
                            }
                        }
                    }
                }
                Err(e) => last = Some(e),
            }
            naptrs.sort_by_key(|(order, preference, _, _)| (*order, *preference));
            for (_, _, t, replacement) in naptrs {
                let (targets, srv_ttl) = self.srv(&replacement, t, &mut last).await;
                if !targets.is_empty() {
                    return Ok(finish(targets, ttl.min(srv_ttl), Method::Naptr));
                }
            }
        }
        let transports: Vec<DnsTransport> = match transport {
            Some(t) => vec![t],
            None => usable.to_vec(),
        };
        for &t in &transports {
            let Ok(name) = Name::from_ascii(format!("{}.{}", t.srv_prefix(), fqdn)) else {
                continue;
            };
            let (targets, srv_ttl) = self.srv(&name, t, &mut last).await;
            if !targets.is_empty() {
                return Ok(finish(targets, srv_ttl, Method::Srv));
            }
        }
        let Some(&t) = transports.first() else {
            return Err(no_targets(last));
        };
        let (ips, a_ttl) = self.addresses(&fqdn, &mut last).await;
        let targets = plain_targets(host, &ips, t.default_port(), t);
        if targets.is_empty() {
            return Err(no_targets(last));
        }
        Ok(finish(targets, a_ttl, Method::Address))
    }

    /// The targets of one SRV name, each SRV record's host resolved to its
    /// addresses, and the shortest TTL of them all (`u32::MAX` for none).
    async fn srv(
        &self,
        name: &Name,
        transport: DnsTransport,
        last: &mut Option<NetError>,
    ) -> (Vec<Target>, u32) {
        let lookup = match self.inner.lookup(name.clone(), RecordType::SRV).await {
            Ok(lookup) => lookup,
            Err(e) => {
                *last = Some(e);
                return (Vec::new(), u32::MAX);
            }
        };
        let mut ttl = u32::MAX;
        let mut targets = Vec::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            ttl = ttl.min(record.ttl);
            // "." means "decidedly not available" (RFC 2782).
            if srv.target.is_root() {
                continue;
            }
            let host = srv.target.to_ascii();
            let (ips, a_ttl) = self.addresses(&srv.target, last).await;
            ttl = ttl.min(a_ttl);
            for ip in ips {
                targets.push(Target {
                    addr: SocketAddr::new(ip, srv.port),
                    transport,
                    priority: srv.priority,
                    weight: srv.weight,
                    host: host.trim_end_matches('.').to_owned(),
                });
            }
        }
        (targets, ttl)
    }

    /// A and AAAA of `name` (IPv4 first), and their shortest TTL; cached for
    /// that TTL.
    async fn addresses(&self, name: &Name, last: &mut Option<NetError>) -> (Vec<IpAddr>, u32) {
        let key = name.to_ascii().to_ascii_lowercase();
        if let Some((ips, left)) = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_with_ttl(now(), &key)
        {
            return (ips.clone(), left.as_secs().try_into().unwrap_or(u32::MAX));
        }
        let mut ips = Vec::new();
        let mut ttl = u32::MAX;
        for kind in [RecordType::A, RecordType::AAAA] {
            match self.inner.lookup(name.clone(), kind).await {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        let ip = match &record.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            _ => continue,
                        };
                        ttl = ttl.min(record.ttl);
                        ips.push(ip);
                    }
                }
                Err(e) => *last = Some(e),
            }
        }
        if !ips.is_empty() {
            let for_secs = Duration::from_secs(u64::from(ttl));
            self.addresses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(now(), key, ips.clone(), for_secs);
        }
        (ips, ttl)
    }
}

fn fqdn(host: &str) -> Result<Name, DnsError> {
    // Absolute, so no search domain of resolv.conf is tried first.
    let absolute = if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    };
    Name::from_ascii(absolute).map_err(|_| DnsError::BadName {
        name: host.to_owned(),
    })
}

fn plain_targets(host: &str, ips: &[IpAddr], port: u16, transport: DnsTransport) -> Vec<Target> {
    ips.iter()
        .map(|&ip| Target {
            addr: SocketAddr::new(ip, port),
            transport,
            priority: 0,
            weight: 0,
            host: host.to_owned(),
        })
        .collect()
}

fn finish(mut targets: Vec<Target>, ttl: u32, method: Method) -> Resolution {
    // Servers rotate the records of an answer; within a priority the order
    // is drawn per call anyway, so a fixed one keeps an unchanged answer
    // from looking new.
    targets.sort_by_key(|t| (t.priority, t.addr));
    Resolution {
        targets,
        ttl: Duration::from_secs(u64::from(if ttl == u32::MAX { 0 } else { ttl })),
        method,
    }
}
