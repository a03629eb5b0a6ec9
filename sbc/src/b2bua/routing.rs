//! Route selection and per-trunk admission (pure).
//!
//! A call takes the first route, in configuration order, whose every given
//! condition holds: source realm, source trunk (the peer whose address the
//! request came from), Request-URI user prefix and domain. The route's
//! targets are tried in order; a failure listed in its `failover_on` moves
//! the call to the next target. A trunk admits a call only under its
//! concurrent-call limit and its calls-per-second limit (a token bucket,
//! driven by `now`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{FailoverCause, HeaderPolicy, Route};
use crate::transport::Transport;

/// A route chosen for a call: trunk indices to try, and when to move on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The route's name (for logs and CDRs).
    pub route: String,
    /// Indices into the core's trunk table, in order.
    pub targets: Vec<usize>,
    /// Which failures move to the next target.
    pub failover_on: Vec<FailoverCause>,
}

/// What a call looks like to routing.
#[derive(Clone, Copy, Debug)]
pub struct CallFacts<'a> {
    /// The realm it arrived on.
    pub realm: &'a str,
    /// The trunk it came from, if the source matched one.
    pub trunk: Option<&'a str>,
    /// The Request-URI user part (as written; escapes are not decoded).
    pub user: &'a [u8],
    /// The Request-URI host.
    pub domain: &'a str,
}

/// The first route matching `call`, with its targets resolved to indices by
/// `trunk_index`; `None` when no route matches (the caller answers 404).
pub fn select(
    routes: &[Route],
    call: &CallFacts<'_>,
    trunk_index: impl Fn(&str) -> Option<usize>,
) -> Option<Plan> {
    let route = routes.iter().find(|r| {
        let m = &r.matches;
        m.source_realm
            .as_deref()
            .is_none_or(|realm| realm == call.realm)
            && m.source_trunk
                .as_deref()
                .is_none_or(|trunk| Some(trunk) == call.trunk)
            && m.user_prefix
                .as_deref()
                .is_none_or(|p| call.user.starts_with(p.as_bytes()))
            && m.domain
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case(call.domain))
    })?;
    Some(Plan {
        route: route.name.clone(),
        targets: route
            .targets
            .iter()
            .filter_map(|t| trunk_index(t))
            .collect(),
        failover_on: route.failover_on.clone(),
    })
}

/// Whether a failure moves a call on to the next target.
pub fn fails_over(plan: &Plan, status: Option<u16>, cause: Option<FailoverCause>) -> bool {
    let wanted = |c: FailoverCause| plan.failover_on.contains(&c);
    match (status, cause) {
        (_, Some(cause)) => wanted(cause),
        (Some(408), None) => wanted(FailoverCause::Status408),
        (Some(500..=599), None) => wanted(FailoverCause::Status5xx),
        _ => false,
    }
}

/// One address a trunk is reached at: its IP address, or one its DNS name
/// resolved to (RFC 3263), with that target's own health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkTarget {
    /// Where requests go.
    pub addr: SocketAddr,
    /// The transport DNS chose for it; `None`: the trunk's own.
    pub transport: Option<Transport>,
    /// SRV priority (lower first).
    pub priority: u16,
    /// SRV weight within its priority.
    pub weight: u16,
    /// The OPTIONS health check's verdict for this target; `None` before
    /// the first answer.
    pub up: Option<bool>,
    /// Tried only after the others until then: it timed out, could not be
    /// reached or answered 503.
    pub blocked_until: Option<Instant>,
}

impl TrunkTarget {
    /// A target at `addr` over the trunk's own transport, unweighted.
    pub fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            transport: None,
            priority: 0,
            weight: 0,
            up: None,
            blocked_until: None,
        }
    }

    /// Whether it should wait behind the others at `now`.
    pub fn shunned(&self, now: Instant) -> bool {
        self.up == Some(false) || self.blocked_until.is_some_and(|until| until > now)
    }
}

/// A trunk's live state: its addresses, its limits and what it is carrying.
#[derive(Clone, Debug)]
pub struct TrunkState {
    /// The trunk's name.
    pub name: String,
    /// Its realm (index into the core's realm table).
    pub realm: usize,
    /// Where requests go, by ascending SRV priority: one target for an IP
    /// address, what the name resolved to for a DNS name (empty until it
    /// resolves).
    pub targets: Vec<TrunkTarget>,
    /// The configured address when it is a DNS name (its targets come from
    /// the shell's resolver and survive a reload that keeps the name).
    pub dns_name: Option<String>,
    /// Concurrent-call limit.
    pub max_calls: Option<u32>,
    /// Calls-per-second limit.
    pub max_cps: Option<u32>,
    /// Calls up now.
    pub active: u32,
    /// Calls up on the other active nodes of the cluster, as they last
    /// said ([`Core::set_cluster_load`](super::Core::set_cluster_load)).
    pub elsewhere: u32,
    /// Active nodes sharing its limits (this one included): each takes
    /// that share of `max_cps`.
    pub nodes: u32,
    /// The OPTIONS health check's verdict; `None` before the first answer
    /// (or when health checks are off).
    pub up: Option<bool>,
    /// How often the health check runs; `None`: never.
    pub ping_every: Option<Duration>,
    /// When the next health check goes out.
    pub next_ping: Option<Instant>,
    /// Gone from the configuration: kept (with its index) for the calls up
    /// on it, never chosen, matched or probed.
    pub retired: bool,
    /// The transport it is reached over.
    pub transport: Transport,
    /// Its media leg never latches (asymmetric RTP).
    pub asymmetric_rtp: bool,
    /// Its own header policy, instead of the global one.
    pub header_policy: Option<HeaderPolicy>,
    /// How long an INVITE to one of its targets may go without any
    /// response before the target counts as timed out; `None`: timer B.
    pub response_timeout: Option<Duration>,
    tokens: f64,
    refilled: Option<Instant>,
}

/// Why a trunk refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// At its concurrent-call limit.
    Calls,
    /// Over its calls-per-second rate.
    Rate,
}

impl TrunkState {
    /// A trunk with nothing up.
    pub fn new(
        name: String,
        realm: usize,
        address: Option<SocketAddr>,
        max_calls: Option<u32>,
        max_cps: Option<u32>,
    ) -> Self {
        Self {
            name,
            realm,
            targets: address.into_iter().map(TrunkTarget::at).collect(),
            dns_name: None,
            max_calls,
            max_cps,
            active: 0,
            elsewhere: 0,
            nodes: 1,
            up: None,
            ping_every: None,
            next_ping: None,
            retired: false,
            transport: Transport::Udp,
            asymmetric_rtp: false,
            header_policy: None,
            response_timeout: None,
            tokens: max_cps.map_or(0.0, f64::from),
            refilled: None,
        }
    }

    /// Its first address (for what needs one: the registrar an access realm
    /// relays to); `None` until a DNS name resolves.
    pub fn address(&self) -> Option<SocketAddr> {
        self.targets.first().map(|t| t.addr)
    }

    /// Whether `ip` is one of its addresses.
    pub fn has_ip(&self, ip: std::net::IpAddr) -> bool {
        self.targets.iter().any(|t| t.addr.ip() == ip)
    }

    /// The transport towards `target`.
    pub fn transport_to(&self, target: &TrunkTarget) -> Transport {
        target.transport.unwrap_or(self.transport)
    }

    /// New targets for a DNS name: health and blocks of addresses it still
    /// has are kept.
    pub fn set_targets(&mut self, mut targets: Vec<TrunkTarget>) {
        for t in &mut targets {
            if let Some(old) = self.targets.iter().find(|o| o.addr == t.addr) {
                t.up = old.up;
                t.blocked_until = old.blocked_until;
            }
        }
        self.targets = targets;
    }

    /// The order in which a call tries the targets: RFC 2782 (priority,
    /// then weighted random with `random`), then the ones that failed a
    /// health check or are blocked moved behind the others (tried last,
    /// not skipped: a probe can fail while calls would still work).
    pub fn call_order(&self, now: Instant, random: impl FnMut() -> u32) -> Vec<SocketAddr> {
        let srv: Vec<crate::dns::Target> = self
            .targets
            .iter()
            .map(|t| crate::dns::Target {
                addr: t.addr,
                transport: crate::dns::DnsTransport::Udp,
                priority: t.priority,
                weight: t.weight,
                host: String::new(),
            })
            .collect();
        let mut order = crate::dns::order(&srv, random);
        order.sort_by_key(|&i| self.targets[i].shunned(now));
        order.into_iter().map(|i| self.targets[i].addr).collect()
    }

    /// Takes one call if the limits allow (and counts it as active).
    pub fn admit(&mut self, now: Instant) -> Result<(), Refusal> {
        if self
            .max_calls
            .is_some_and(|max| self.active.saturating_add(self.elsewhere) >= max)
        {
            return Err(Refusal::Calls);
        }
        if let Some(rate) = self.max_cps {
            // A bucket of one second's worth of calls, refilled continuously;
            // with several active nodes, this node's share of the rate.
            let rate = f64::from(rate) / f64::from(self.nodes.max(1));
            let elapsed = self
                .refilled
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(rate.max(1.0));
            self.refilled = Some(now);
            if self.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            self.tokens -= 1.0;
        }
        self.active += 1;
        Ok(())
    }

    /// Counts a call another node admitted (adopted at a takeover):
    /// active, whatever the limits, and no rate token taken.
    pub fn adopt(&mut self) {
        self.active += 1;
    }

    /// A call this trunk admitted has ended.
    pub fn release(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    /// The configuration no longer has this trunk.
    pub fn retire(&mut self) {
        self.retired = true;
        self.ping_every = None;
        self.next_ping = None;
    }

    /// Carries the live counts over from the same trunk of an older config.
    pub fn carry_over(&mut self, old: &TrunkState) {
        self.active = old.active;
        self.elsewhere = old.elsewhere;
        self.nodes = old.nodes;
        self.up = old.up;
        if self.dns_name.is_some() && self.dns_name == old.dns_name && self.targets.is_empty() {
            self.targets = old.targets.clone();
        } else {
            let fresh = std::mem::take(&mut self.targets);
            self.targets = old.targets.clone();
            self.set_targets(fresh);
        }
        if self.ping_every.is_some() {
            self.next_ping = old.next_ping;
        }
        self.tokens = old.tokens.min(self.max_cps.map_or(0.0, f64::from));
        self.refilled = old.refilled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMatch;

    fn route(name: &str, m: RouteMatch, targets: &[&str]) -> Route {
        Route {
            name: name.into(),
            matches: m,
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            failover_on: vec![FailoverCause::Status5xx, FailoverCause::Timeout],
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let routes = vec![
            route(
                "uk",
                RouteMatch {
                    user_prefix: Some("+44".into()),
                    ..RouteMatch::default()
                },
                &["uk-carrier", "backup"],
            ),
            route(
                "from-outside",
                RouteMatch {
                    source_realm: Some("outside".into()),
                    ..RouteMatch::default()
                },
                &["pbx"],
            ),
        ];
        let index = |name: &str| {
            ["uk-carrier", "backup", "pbx"]
                .iter()
                .position(|t| *t == name)
        };
        let call = |user: &'static str, realm: &'static str| CallFacts {
            realm,
            trunk: None,
            user: user.as_bytes(),
            domain: "example.com",
        };
        let uk = select(&routes, &call("+4420", "inside"), index).expect("uk route");
        assert_eq!(
            (uk.route.as_str(), uk.targets.as_slice()),
            ("uk", [0, 1].as_slice())
        );
        let pbx = select(&routes, &call("+4930", "outside"), index).expect("realm route");
        assert_eq!(pbx.targets, [2]);
        assert!(select(&routes, &call("+4930", "inside"), index).is_none());
        assert!(fails_over(&uk, Some(503), None));
        assert!(!fails_over(&uk, Some(486), None));
        assert!(!fails_over(&uk, Some(408), None));
        assert!(fails_over(&uk, None, Some(FailoverCause::Timeout)));
        assert!(!fails_over(&uk, None, Some(FailoverCause::TransportError)));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a virtual clock's origin
    fn trunk_limits_refuse_and_recover() {
        let t0 = Instant::now();
        let mut trunk = TrunkState::new("t".into(), 0, None, Some(2), Some(2));
        assert_eq!(trunk.admit(t0), Ok(()));
        assert_eq!(trunk.admit(t0), Ok(()));
        assert_eq!(trunk.admit(t0), Err(Refusal::Calls));
        trunk.release();
        trunk.release();
        // The two tokens of this second are spent.
        assert_eq!(trunk.admit(t0), Err(Refusal::Rate));
        // Half a second refills one.
        assert_eq!(trunk.admit(t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(
            trunk.admit(t0 + Duration::from_millis(500)),
            Err(Refusal::Rate)
        );
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a virtual clock's origin
    fn other_active_nodes_count_against_the_limits() {
        let t0 = Instant::now();
        let mut trunk = TrunkState::new("t".into(), 0, None, Some(3), Some(4));
        // Two calls up on the other node, two nodes in all.
        trunk.elsewhere = 2;
        trunk.nodes = 2;
        assert_eq!(trunk.admit(t0), Ok(()));
        assert_eq!(trunk.admit(t0), Err(Refusal::Calls), "3 up in the cluster");
        trunk.elsewhere = 0;
        // This node's share of 4 per second is 2: the bucket holds 2.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(trunk.admit(later), Ok(()));
        assert_eq!(trunk.admit(later), Ok(()));
        assert_eq!(trunk.admit(later), Err(Refusal::Calls));
        trunk.release();
        trunk.release();
        trunk.release();
        assert_eq!(trunk.admit(later), Err(Refusal::Rate));
        // Half a second refills one call of the 2-per-second share.
        let half = later + Duration::from_millis(500);
        assert_eq!(trunk.admit(half), Ok(()));
        assert_eq!(trunk.admit(half), Err(Refusal::Rate));
        // A share below one call per second still admits one now and then.
        let mut slow = TrunkState::new("s".into(), 0, None, None, Some(1));
        slow.nodes = 4;
        assert_eq!(slow.admit(t0), Ok(()));
        assert_eq!(slow.admit(t0 + Duration::from_secs(1)), Err(Refusal::Rate));
        assert_eq!(slow.admit(t0 + Duration::from_secs(5)), Ok(()));
    }
}
