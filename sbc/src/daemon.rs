//! The daemon: the IO shell around the sans-IO core.
//!
//! One task owns the [`Core`] and is the only thing that touches it: it
//! feeds the core what the transports receive, what the media relay reports
//! and timer expiries, and after every input drains the core's outputs to
//! the transports, the relay and metrics. The transports (tokio tasks), the
//! media relay (its own mio thread) and the admin listener run beside it and
//! talk to it through bounded channels.
//!
//! Signals: SIGTERM/SIGINT stop taking calls (readiness goes false, new
//! INVITEs get 503), end the calls up with BYE, wait a bounded grace period
//! for the BYEs and exit. SIGHUP reloads routes, trunks, limits and header
//! policy from the config file; a config that fails validation is refused
//! and the old one kept (logged, and counted in `sbc_config_reload_total`).
//! Listener changes need a restart.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::admin::{AdminConfig, AdminServer, AdminState, Readiness};
use crate::b2bua::{CallSummary, Core, CoreEvent, EndedBy, ListenerInfo, RandomIds, RejectReason};
use crate::config::{Config, ConfigError, PeerAddress};
use crate::media::command::{MediaCommand, MediaEvent};
use crate::media::ports::PortRange;
use crate::media::userspace::{RelayConfig, UserspaceRelay};
use crate::metrics::{self, BuildInfo, CallOutcome, Metrics, ReloadResult};
use crate::transport::{Event, ListenerSpec, TransportConfig, Transports};

/// How long a shutdown waits for the BYEs of the calls it ends.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the SBC until SIGTERM/SIGINT. `config_path` is reread on SIGHUP;
/// without one the embedded default runs (and SIGHUP has nothing to reread).
pub fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sbc")
        .build()?;
    runtime.block_on(serve(config, config_path))
}

/// The address of each trunk given by host name, resolved now (blocking
/// DNS is fine at start-up and reload, never on the call path).
fn resolver(config: &Config) -> impl Fn(&str, u16) -> Option<SocketAddr> + use<> {
    let resolved: Vec<(String, u16, SocketAddr)> = config
        .trunks
        .iter()
        .filter_map(|t| match &t.address {
            PeerAddress::Host { host, port } => match (host.as_str(), *port).to_socket_addrs() {
                Ok(mut addrs) => addrs.next().map(|a| (host.clone(), *port, a)),
                Err(e) => {
                    warn!(trunk = %t.name, %host, error = %e, "trunk host name does not resolve; the trunk is skipped");
                    None
                }
            },
            PeerAddress::Ip(_) => None,
        })
        .collect();
    move |host: &str, port: u16| {
        resolved
            .iter()
            .find(|(h, p, _)| h == host && *p == port)
            .map(|(_, _, a)| *a)
    }
}

async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    // ---- transports ------------------------------------------------------------
    let mut specs = Vec::new();
    let mut listeners = Vec::new();
    for realm in &config.realms {
        for listen in &realm.listen {
            let transport = match listen.transport {
                crate::config::Transport::Udp => crate::transport::Transport::Udp,
                crate::config::Transport::Tcp => crate::transport::Transport::Tcp,
            };
            specs.push(ListenerSpec {
                realm: realm.name.clone(),
                transport,
                addr: listen.address,
                recv_buffer: realm.recv_buffer_bytes.map(|b| b as usize),
                send_buffer: realm.send_buffer_bytes.map(|b| b as usize),
            });
            listeners.push(ListenerInfo {
                realm: realm.name.clone(),
                transport,
                addr: listen.address,
            });
        }
    }
    let (transports, mut inbound) = Transports::start(&specs, TransportConfig::default())?;

    // ---- media relay -------------------------------------------------------------
    let media_wake = Arc::new(Notify::new());
    let mut ranges: Vec<(std::net::IpAddr, PortRange)> = Vec::new();
    for realm in &config.realms {
        let range = PortRange {
            first: config.media.port_min,
            last: config.media.port_max,
        };
        if !ranges.iter().any(|(ip, _)| *ip == realm.media.address) {
            ranges.push((realm.media.address, range));
        }
    }
    let mut relay_config = RelayConfig::new(ranges);
    relay_config.flow.inactivity_timeout =
        Duration::from_secs(u64::from(config.media.inactivity_timeout_secs));
    relay_config.flow.learning_window =
        Duration::from_millis(u64::from(config.media.latching.learning_window_ms));
    let wake = Arc::clone(&media_wake);
    relay_config.notify = Some(Arc::new(move || wake.notify_one()));
    let relay = UserspaceRelay::start(relay_config)?;

    // ---- metrics and admin -----------------------------------------------------------
    // The XDP fast path is not built into this binary yet.
    let metrics = Arc::new(Metrics::new(BuildInfo::current(false)));
    let readiness = Readiness::new();
    let calls_view = Arc::new(Mutex::new(serde_json::Value::Array(Vec::new())));
    let view = Arc::clone(&calls_view);
    let provider = move || {
        view.lock()
            .map(|v| v.clone())
            .unwrap_or(serde_json::Value::Null)
    };
    let admin = AdminServer::bind(
        AdminConfig::new(config.metrics.listen),
        AdminState {
            metrics: Arc::clone(&metrics),
            readiness: readiness.clone(),
            calls: Some(Arc::new(provider)),
        },
    )
    .await?;
    let (stop_admin, admin_stop) = watch::channel(false);
    let admin_task = tokio::spawn(admin.serve(admin_stop));

    // ---- the core ------------------------------------------------------------------------
    let mut core = Core::new(
        &config,
        listeners.clone(),
        resolver(&config),
        Box::new(RandomIds::from_os()),
    );
    let mut shell = Shell {
        transports: &transports,
        relay: &relay,
        metrics: &metrics,
        relayed: (0, 0),
    };
    readiness.set(true);
    info!(
        realms = config.realms.len(),
        trunks = config.trunks.len(),
        routes = config.routes.len(),
        metrics = %config.metrics.listen,
        "sbc running"
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown_at: Option<Instant> = None;
    loop {
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = inbound.recv() => match event {
                Some(Event::Inbound(message)) => core.handle_inbound(now(), message),
                Some(Event::SendFailed { to, error, .. }) => {
                    warn!(%to, %error, "send failed");
                    core.handle_send_failed(now(), to);
                }
                None => break,
            },
            () = media_wake.notified() => {
                while let Some(event) = relay.try_event() {
                    shell.media_event(&event);
                    core.handle_media_event(now(), event);
                }
            }
            () = sleep => core.handle_timeout(now()),
            _ = tick.tick() => {
                shell.gauges(&core);
                if let Ok(mut view) = calls_view.lock() {
                    *view = core.calls_json(now());
                }
                if shutdown_at.is_some_and(|at| now() >= at || core.active_calls() == 0) {
                    break;
                }
            }
            _ = terminate.recv() => shutdown_at = Some(begin_shutdown(&mut core, &readiness)),
            _ = interrupt.recv() => shutdown_at = Some(begin_shutdown(&mut core, &readiness)),
            _ = hangup.recv() => reload(&mut core, config_path.as_ref(), &metrics),
        }
        shell.drain(&mut core);
    }
    info!(calls = core.active_calls(), "sbc stopping");
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    transports.shutdown().await;
    relay.shutdown();
    Ok(())
}

fn begin_shutdown(core: &mut Core, readiness: &Readiness) -> Instant {
    info!(
        calls = core.active_calls(),
        "shutdown requested: no new calls, ending the calls up"
    );
    readiness.set(false);
    core.drain(now());
    now() + SHUTDOWN_GRACE
}

fn reload(core: &mut Core, path: Option<&PathBuf>, metrics: &Metrics) {
    let Some(path) = path else {
        warn!("SIGHUP: running on the embedded default; there is no file to reload");
        return;
    };
    match Config::load(path) {
        Ok(config) => {
            core.reload(&config, resolver(&config));
            metrics.config_reload(ReloadResult::Success, wall_clock());
            info!(file = %path.display(), "configuration reloaded (routes, trunks, limits, header policy)");
        }
        Err(ConfigError::Invalid { problems }) => {
            metrics.config_reload(ReloadResult::Failure, wall_clock());
            for problem in &problems {
                error!(%problem, "reload refused, the running configuration is kept");
            }
        }
        Err(e) => {
            metrics.config_reload(ReloadResult::Failure, wall_clock());
            error!(error = %e, "reload refused, the running configuration is kept");
        }
    }
}

/// The daemon's clock: the IO shell is where time is read.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// Where the core's outputs go.
struct Shell<'a> {
    transports: &'a Transports,
    relay: &'a UserspaceRelay,
    metrics: &'a Metrics,
    /// Relay totals already exported (the counters take deltas).
    relayed: (u64, u64),
}

impl Shell<'_> {
    /// Drains every output of the core (which may produce more input: a
    /// media command the relay refuses comes back as a failure event).
    fn drain(&mut self, core: &mut Core) {
        loop {
            let mut refused = Vec::new();
            while let Some(out) = core.poll_transmit() {
                let to = out.to;
                if let Err(e) = self.transports.send(out) {
                    warn!(%to, error = %e, "send refused");
                }
            }
            while let Some(command) = core.poll_media() {
                let stream = match &command {
                    MediaCommand::Allocate { stream, .. } => Some(*stream),
                    _ => None,
                };
                if let Err(error) = self.relay.send(command)
                    && let Some(stream) = stream
                {
                    refused.push(MediaEvent::AllocationFailed { stream, error });
                }
            }
            while let Some(event) = core.poll_event() {
                self.report(event);
            }
            if refused.is_empty() {
                return;
            }
            for event in refused {
                core.handle_media_event(now(), event);
            }
        }
    }

    fn report(&self, event: CoreEvent) {
        match event {
            CoreEvent::Sip {
                realm,
                inbound,
                method,
                status,
            } => {
                let direction = if inbound {
                    metrics::Direction::In
                } else {
                    metrics::Direction::Out
                };
                let kind = match (method, status) {
                    (Some(method), _) => metrics::MessageKind::Request(method),
                    (None, Some(code)) => {
                        metrics::MessageKind::Response(metrics::StatusClass::of(code))
                    }
                    (None, None) => return,
                };
                self.metrics.sip_message(&realm, direction, kind);
            }
            CoreEvent::ParseError { realm } => self.metrics.sip_parse_error(&realm),
            CoreEvent::Rejected { realm, reason } => {
                let reason = match reason {
                    RejectReason::Acl => metrics::RejectReason::Acl,
                    RejectReason::RateLimit => metrics::RejectReason::RateLimit,
                    RejectReason::NoRoute => metrics::RejectReason::NoRoute,
                    RejectReason::Invalid => metrics::RejectReason::Invalid,
                    RejectReason::Admission | RejectReason::MediaPorts | RejectReason::Draining => {
                        metrics::RejectReason::Admission
                    }
                };
                self.metrics.rejected(&realm, reason);
            }
            CoreEvent::CallSetup { setup, .. } => self.metrics.call_setup(setup),
            CoreEvent::CallEnded(summary) => self.call_ended(&summary),
        }
    }

    fn call_ended(&self, call: &CallSummary) {
        let outcome = match call.ended_by {
            EndedBy::Caller if call.answered.is_none() => CallOutcome::Cancelled,
            EndedBy::Sbc(_) if call.answered.is_none() && call.status >= 500 => CallOutcome::Failed,
            _ => CallOutcome::from_final_status(call.status).unwrap_or(CallOutcome::Failed),
        };
        let trunk = call.trunks_tried.last().map_or("none", String::as_str);
        self.metrics.call_finished(&call.from_realm, trunk, outcome);
        let duration = call
            .answered
            .map(|a| call.ended.saturating_duration_since(a));
        let ended_by = match call.ended_by {
            EndedBy::Caller => "caller",
            EndedBy::Callee => "callee",
            EndedBy::Sbc(why) => why,
        };
        info!(
            call = call.call,
            a_call_id = %call.call_ids.0,
            b_call_id = call.call_ids.1.as_deref().unwrap_or("-"),
            from_realm = %call.from_realm,
            trunk,
            status = call.status,
            outcome = outcome.as_str(),
            ended_by,
            duration_ms = duration.map_or(0, |d| d.as_millis() as u64),
            media = "userspace",
            "call ended"
        );
    }

    /// Drop reasons are only known per stream, so they are counted when a
    /// stream is released; timeouts when they happen.
    fn media_event(&self, event: &MediaEvent) {
        match event {
            MediaEvent::Released { counters, .. } => {
                for leg in counters {
                    self.metrics.media_dropped(
                        metrics::MediaDropReason::SourceMismatch,
                        leg.dropped_source,
                    );
                    self.metrics
                        .media_dropped(metrics::MediaDropReason::Malformed, leg.dropped_malformed);
                    self.metrics
                        .media_dropped(metrics::MediaDropReason::SendFailed, leg.dropped_send);
                }
            }
            MediaEvent::TimedOut { .. } => self.metrics.media_timeout(),
            _ => {}
        }
    }

    fn gauges(&mut self, core: &Core) {
        // Relay totals move while calls are up; they are not split by realm
        // yet, so they are exported under realm "all".
        let stats = self.relay.stats();
        let packets = stats.packets_relayed.load(Ordering::Relaxed);
        let bytes = stats.bytes_relayed.load(Ordering::Relaxed);
        self.metrics.media_relayed(
            metrics::MediaPath::Userspace,
            "all",
            packets.saturating_sub(self.relayed.0),
            bytes.saturating_sub(self.relayed.1),
        );
        self.relayed = (packets, bytes);
        self.metrics.set_media_streams_active(
            metrics::MediaPath::Userspace,
            stats.streams.load(Ordering::Relaxed),
        );
        for (realm, calls) in core.calls_per_realm() {
            self.metrics.set_calls_active(&realm, calls as u64);
        }
        for (trunk, calls) in core.calls_per_trunk() {
            self.metrics
                .set_trunk_calls_active(&trunk, u64::from(calls));
        }
        self.metrics
            .set_sip_transactions_active(core.transactions() as u64);
    }
}
