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
//! for the BYEs and exit. SIGQUIT drains: readiness goes false and new
//! INVITEs get 503 with `Retry-After`, while the calls up go on (in-dialog
//! requests, re-INVITEs, BYEs, media); the daemon exits once the last call
//! has ended, or at `drain.deadline_secs`, where it ends the rest as
//! SIGTERM does (`sbc_draining` is 1 meanwhile; SIGTERM during a drain
//! ends it at once). SIGUSR2 exits for a restart: with
//! `media.xdp.pin_dir` the XDP links and flow maps stay pinned and the
//! calls up are left alone (no BYE), so their latched media is forwarded
//! by the kernel until the next process adopts the links; the exit status
//! is [`RESTART_EXIT_STATUS`] so a supervisor starts the process again.
//! Without a pin directory there is nothing to hand over and it acts as
//! SIGTERM.
//! SIGHUP reloads realms, listeners, routes, trunks,
//! ACLs, limits and header policy from the config file, without touching the
//! calls up:
//! * a listener the new file still has (same transport and address) keeps
//!   its socket and connections; its realm and buffer sizes change in place;
//! * a new listener is bound before the core changes: if any bind fails,
//!   the whole reload is refused;
//! * a listener the new file dropped retires: it keeps serving the dialogs
//!   and transactions that use it, answers anything new with 503 (keeping
//!   no transaction for it, so peers that still probe it can't hold it
//!   open), and is closed once its last call and transaction have ended.
//!
//! A new realm media address gets a port pool (with the file's port range);
//! addresses in use keep theirs. A reload that fails validation, names a
//! media address this host can't bind, or can't bind a listener is refused
//! and the old configuration kept (logged, and counted in
//! `sbc_config_reload_total`). The port range of existing media addresses,
//! media timeouts, the metrics listener, XDP, CDR and logging settings take
//! effect at restart (a reload that changes them says so in the log).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::admin::{self, AdminConfig, AdminServer, AdminState, Readiness};
use crate::b2bua::{CallSummary, Core, CoreEvent, ListenerInfo, RandomIds};
use crate::cdr::{self, CdrWriter, Finished, Ledger};
use crate::cluster;
use crate::config::{Config, ConfigError};
use crate::guard::{self, RealmCounts, Seed, Shield};
use crate::media::command::{Leg, MediaCommand, MediaError, MediaEvent};
use crate::media::fast::{AdoptedFlows, XdpFastPath};
use crate::media::ports::PortRange;
use crate::media::reserve::{DEFAULT_PER_ADDRESS, Reserve};
use crate::media::userspace::{FastPath, MediaTotals, Offered, RelayConfig, UserspaceRelay};
use crate::media::xdp::{self, ExitPolicy, ModePolicy, XdpConfig, XdpRelay};
use crate::metrics::{self, BuildInfo, Metrics, ReloadResult, TransitKind};
use crate::tls::TlsSettings;
use crate::transport::{
    Event, ListenerId, ListenerSpec, Received, TlsFailure, TlsSide, Transports,
};

mod names;
mod overload;
mod saved;
mod shell;

use names::TrunkNames;
use overload::Overload;
use saved::SavedBindings;
use shell::Shell;

/// How long a shutdown waits for the BYEs of the calls it ends.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long an ended call waits for its streams' final counters before its
/// log line and CDR go out with what arrived (the relay answers a release
/// within a turn; this only bounds memory if an answer is lost).
const MEDIA_REPORT_WAIT: Duration = Duration::from_secs(60);

/// How the daemon ended, for the process's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT, or a drain that completed: exit status 0.
    Stopped,
    /// SIGUSR2 with the fast path pinned: [`RESTART_EXIT_STATUS`], which the
    /// systemd unit lists in `RestartForceExitStatus` so the service starts
    /// again (with the binary now installed) and adopts what was pinned.
    Restart,
}

/// The most messages the main loop handles in one turn before it sends
/// what they produced and looks at its other inputs (timers, the relay).
const INBOUND_PER_TURN: usize = 16;

/// One event of the transports, handed to the core.
fn handle_transport_event(
    core: &mut Core,
    overload: &mut Overload,
    inbound: &tokio::sync::mpsc::Receiver<Event>,
    metrics: &Metrics,
    arrivals: &mut Vec<(Instant, TransitKind)>,
    event: Event,
) {
    match event {
        Event::Inbound(message) => {
            overload.raise(core, inbound.len(), inbound.max_capacity(), metrics);
            let kind = match &message.received {
                Received::Message(m) if m.is_request() => TransitKind::Request,
                Received::Message(_) => TransitKind::Response,
                Received::Malformed { .. } => TransitKind::Malformed,
            };
            arrivals.push((message.arrived, kind));
            core.handle_inbound(now(), message);
        }
        Event::SendFailed {
            listener,
            to,
            error,
            request,
            ..
        } => {
            // A UDP peer's closed port is an everyday event (a phone gone
            // away); a failed TCP connection is worth a warning.
            match request {
                Some(request) => {
                    debug!(%to, %error, "destination unreachable");
                    core.handle_unreachable(now(), listener, to, &request);
                }
                None => {
                    warn!(%to, %error, "send failed");
                    core.handle_send_failed(now(), to);
                }
            }
        }
        Event::Closed { connection, .. } => {
            core.handle_connection_closed(now(), connection);
        }
    }
}

/// The exit status of [`Exit::Restart`] (`EX_TEMPFAIL`: "try again").
pub const RESTART_EXIT_STATUS: i32 = 75;

/// Runs the SBC until SIGTERM/SIGINT. `config_path` is reread on SIGHUP;
/// without one the embedded default runs (and SIGHUP has nothing to reread).
pub fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Exit> {
    // Before the runtime: its workers, and every thread they start, inherit
    // the CPUs and the class (the media relay threads then set their own).
    let started_on = crate::sched::current_thread_cpus()
        .map_err(|e| anyhow::anyhow!("reading the CPUs this process may use: {e}"))?;
    // The cores the relay threads default to, before signaling_cpus
    // narrows this thread's (a cgroup's CPU quota counts too).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    config
        .scheduling
        .check_cpus(&started_on)
        .map_err(anyhow::Error::msg)?;
    if let Some(cpus) = &config.scheduling.signaling_cpus {
        crate::sched::set_current_thread_cpus(cpus).map_err(|e| {
            anyhow::anyhow!("scheduling.signaling_cpus: the kernel refused CPUs {cpus} for the signaling threads ({e})")
        })?;
        info!(%cpus, "signaling threads confined to their CPUs");
    }
    if let Some(class) = config.scheduling.signaling() {
        crate::sched::set_current_thread(class).map_err(|e| {
            anyhow::anyhow!(
                "scheduling.signaling_priority: the kernel refused {class} for the signaling threads ({e}); \
                 run as root or with CAP_SYS_NICE, or raise RLIMIT_RTPRIO (systemd: LimitRTPRIO={} and RestrictRealtime=no), \
                 or set the priority to 0",
                config.scheduling.signaling_priority
            )
        })?;
        info!(class = %class, "signaling threads scheduled in real time");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sbc")
        .build()?;
    // The main loop runs as a task, not on this thread: a message a receive
    // task hands it then runs on the same worker, next, instead of waking
    // another thread (a futex wake and a context switch per message, which
    // on a busy host is where a call's setup waited longest).
    runtime.block_on(async {
        match tokio::spawn(serve(config, config_path, started_on, cores)).await {
            Ok(exit) => exit,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(anyhow::anyhow!("the main loop was cancelled: {e}")),
        }
    })
}

/// File descriptors a configuration may need: four media sockets per call
/// (RTP and RTCP on each leg), two per endpoint of the reserve of
/// pre-bound endpoints, plus signaling, admin and headroom.
fn descriptors_needed(config: &Config, relay_threads: usize) -> u64 {
    let reserve =
        Reserve::new(relay_threads, DEFAULT_PER_ADDRESS, &[]).capacity(config.media_ranges().len());
    u64::from(config.limits.max_calls) * 4 + 2 * reserve as u64 + 4096
}

/// Every configured media address (each has a port pool).
fn media_addresses(config: &Config) -> Vec<std::net::IpAddr> {
    config
        .media_ranges()
        .into_iter()
        .map(|(ip, _)| ip)
        .collect()
}

/// Raises RLIMIT_NOFILE's soft limit to what the configuration needs (up to
/// the hard limit), or says why it can't: running out of descriptors
/// mid-call would fail allocations with confusing errors.
#[allow(unsafe_code)] // two libc calls; no safe wrapper in our dependencies
fn raise_fd_limit(config: &Config, relay_threads: usize) {
    let needed = descriptors_needed(config, relay_threads);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot read RLIMIT_NOFILE");
        return;
    }
    if limit.rlim_cur >= needed {
        return;
    }
    let wanted = needed.min(limit.rlim_max);
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit from a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), soft = limit.rlim_cur, needed, "cannot raise RLIMIT_NOFILE");
        return;
    }
    if wanted < needed {
        warn!(
            limit = wanted,
            needed,
            "RLIMIT_NOFILE's hard limit is below what limits.max_calls needs; raise it (systemd: LimitNOFILE) or lower max_calls"
        );
    } else {
        info!(
            from = limit.rlim_cur,
            to = wanted,
            "raised RLIMIT_NOFILE for limits.max_calls"
        );
    }
}

/// `started_on`: the CPUs the process was started with (where the relay
/// threads go when only the signaling threads were given CPUs); `cores`:
/// its parallelism then (the relay threads' default count).
async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    started_on: crate::sched::CpuList,
    cores: usize,
) -> anyhow::Result<Exit> {
    let relay_threads = config.relay_threads(cores);
    raise_fd_limit(&config, relay_threads);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut quit = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit())?;
    let mut restart =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
    // The admin listener first: a standby node answers /metrics and /health
    // (not ready) while it waits.
    let metrics = Arc::new(Metrics::new(BuildInfo::current(xdp::BUILT_IN)));
    // ---- admin -------------------------------------------------------------------------
    let readiness = Readiness::new();
    // `/calls` asks the core loop, which answers between two events: built
    // only when asked, never held.
    let (calls_asks, mut calls_asked) =
        tokio::sync::mpsc::channel::<(admin::View, tokio::sync::oneshot::Sender<Vec<u8>>)>(8);
    let provider = move |view| {
        let (answer, answered) = tokio::sync::oneshot::channel();
        calls_asks.try_send((view, answer)).ok().map(|()| answered)
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

    // ---- cluster: a node of a pair binds nothing until it holds the lease --------------
    let mut cluster = match &config.cluster {
        None => None,
        Some(pair) => {
            let mut node = cluster::Node::start(pair, metrics.registry());
            readiness.set_standby();
            info!(node = %pair.node_id, redis = %pair.redis_url, "cluster: waiting for the lease");
            let stopped = tokio::select! {
                () = node.active() => false,
                _ = terminate.recv() => true,
                _ = interrupt.recv() => true,
                // A standby has no calls to drain and nothing pinned.
                _ = quit.recv() => true,
                _ = restart.recv() => true,
            };
            // Active now: not ready until it serves.
            readiness.set(false);
            if stopped {
                info!("stopped while standby");
                node.stop().await;
                let _ = stop_admin.send(true);
                let _ = admin_task.await;
                return Ok(Exit::Stopped);
            }
            Some(node)
        }
    };
    let mut lease_lost: Option<String> = None;

    // ---- transports ------------------------------------------------------------
    let (specs, listeners): (Vec<ListenerSpec>, Vec<ListenerInfo>) =
        config.listener_specs().into_iter().unzip();
    // Trunks given by DNS name are resolved by their own tasks; their
    // targets reach the shield's trust and the core as answers come in.
    let (mut names, mut resolved) = TrunkNames::start(&config);
    let shield = Arc::new(Shield::from_config(
        now(),
        random_seed(),
        &config,
        &names.trust(&config),
    ));
    info!(
        tracked_sources = config.limits.tracked_sources,
        banned_sources = config.limits.banned_sources,
        bytes = shield.memory_bytes(),
        "source shield ready"
    );
    if let Some(node) = &cluster {
        node.share_bans(Arc::clone(&shield));
    }
    let tls = load_tls(&config, &|t| names.targets_of(&t.name)).map_err(anyhow::Error::msg)?;
    let (transports, mut inbound) = Transports::start_with_tls(
        &specs,
        config.transport_config(),
        Some(Arc::clone(&shield)),
        Arc::clone(&tls),
    )?;

    metrics.set_tls_certificates(tls.expiries());

    // ---- media relay -------------------------------------------------------------
    let media_wake = Arc::new(Notify::new());
    let mut relay_config = RelayConfig::new(config.media_ranges());
    relay_config.flow.inactivity_timeout =
        Duration::from_secs(u64::from(config.media.inactivity_timeout_secs));
    relay_config.quarantine = Duration::from_secs(u64::from(config.media.port_quarantine_secs));
    relay_config.flow.learning_window =
        Duration::from_millis(u64::from(config.media.latching.learning_window_ms));
    let wake = Arc::clone(&media_wake);
    relay_config.notify = Some(Arc::new(move || wake.notify_one()));
    // One key for the CNAME stand-ins in SDP (the core) and RTCP (the relay).
    let cname_mask = crate::media::cname::CnameMask::new();
    relay_config.cname_mask = Some(cname_mask.clone());
    // By realm index, which is config order at start (the core keeps it).
    relay_config.realm_networks = config.realms.iter().map(|r| r.networks.clone()).collect();
    relay_config.freebind = config.cluster.is_some();
    relay_config.threads = relay_threads;
    relay_config.scheduling = config.scheduling.media();
    relay_config.cpus = config.scheduling.relay_cpus(&started_on);
    let adopted_timeout = relay_config.flow.inactivity_timeout;
    let (fast_path, fast_exit, adopted) =
        match start_fast_path(&config.media.xdp, &metrics, adopted_timeout) {
            Some((fast_path, exit, adopted)) => (Some(fast_path), Some(exit), Some(adopted)),
            None => (None, None, None),
        };
    let relay = UserspaceRelay::start_with_fast_path(relay_config, fast_path)?;
    info!(threads = relay.threads(), "media relay running");

    // ---- call detail records ---------------------------------------------------------------
    let cdr = CdrWriter::from_config(&config.cdr)?;

    // ---- ng control protocol (optional: `[ng]`) ------------------------------------------
    let (mut ng, mut ng_inbound) =
        match crate::ng::service::NgService::start(&config, cname_mask.clone(), metrics.registry())
            .await?
        {
            Some((service, inbound)) => (Some(service), Some(inbound)),
            None => (None, None),
        };

    // ---- the core ------------------------------------------------------------------------
    let mut core = Core::new(
        &config,
        listeners.clone(),
        |_, _| None,
        Box::new(RandomIds::from_os()),
    )
    .with_cname_mask(cname_mask)
    .with_replication(
        config
            .cluster
            .as_ref()
            .is_some_and(|c| c.mode == crate::config::ClusterMode::Pair),
    );
    // What the other active nodes carry, for the trunks' shared limits.
    let mut cluster_load = cluster.as_ref().map(cluster::Node::load);
    // Taking over: the calls the other node answered go on here, before a
    // request of theirs is read.
    let retire = match cluster.as_mut() {
        Some(node) => adopt_calls(&mut core, node, &relay).await,
        None => Vec::new(),
    };
    let mut shell = Shell {
        transports: &transports,
        shield: &shield,
        shield_seen: Vec::new(),
        transport_seen: HashMap::new(),
        tls_seen: HashMap::new(),
        media_dropped: [0; 5],
        relay: &relay,
        metrics: &metrics,
        relayed: Vec::new(),
        cdr: cdr.as_ref(),
        ledger: Ledger::new((now(), wall_clock())),
        relay_backlog: VecDeque::new(),
        relay_saturated: false,
        reserve: Reserve::new(
            relay.threads(),
            DEFAULT_PER_ADDRESS,
            &media_addresses(&config),
        ),
        reserve_returns: Vec::new(),
        reserve_misses_seen: 0,
        replicator: cluster.as_ref().and_then(cluster::Node::replicator),
        relay_wakes: shell::RelayWakes::new(now()),
        outbox: Vec::new(),
    };
    // The adopted calls' media anchored again, their records written
    // under this node; then the other node's retired (the same queue, so
    // in that order). The drain's end asks for the reserve of pre-bound
    // endpoints, once their ports are taken.
    shell.drain(&mut core, false);
    if let Some(replicator) = &shell.replicator
        && !retire.is_empty()
    {
        replicator.send(cluster::calls::Change::Retire(retire));
    }
    core.start(now());
    let mut bindings = SavedBindings::start(&config, &mut core);
    zero_series(&metrics, &config, &core);
    readiness.set(true);
    let mut running_config = config.clone();
    info!(
        realms = config.realms.len(),
        trunks = config.trunks.len(),
        routes = config.routes.len(),
        metrics = %config.metrics.listen,
        "sbc running"
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown_at: Option<Instant> = None;
    // While draining: when the calls still up are ended as by SIGTERM.
    let mut drain_until: Option<Instant> = None;
    // SIGUSR2: the exit leaves the calls and the pinned fast path alone.
    let mut restarting = false;
    // SIGQUIT in a pair with a standby: the exit leaves the calls to it.
    let mut handing_over = false;
    let mut overload = Overload::default();
    // The arrival of each message the current turn handled.
    let mut arrivals: Vec<(Instant, TransitKind)> = Vec::with_capacity(INBOUND_PER_TURN);
    loop {
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = inbound.recv() => {
                let Some(event) = event else { break };
                // What else is queued already, up to a bound, in the same
                // turn: its answers then leave together (one `sendmmsg`
                // per listener), and the peers they wake do not preempt
                // the loop between two of them.
                handle_transport_event(&mut core, &mut overload, &inbound, &metrics, &mut arrivals, event);
                for _ in 1..INBOUND_PER_TURN {
                    let Ok(next) = inbound.try_recv() else { break };
                    handle_transport_event(&mut core, &mut overload, &inbound, &metrics, &mut arrivals, next);
                }
            }
            () = media_wake.notified() => {
                while let Some(reserved) = relay.try_reserved() {
                    shell.reserve_filled(reserved);
                }
                while let Some(event) = relay.try_event() {
                    if let Some(ng) = ng.as_mut() {
                        ng.media_event(now(), &event, &relay);
                    }
                    shell.media_event(&event);
                    core.handle_media_event(now(), event);
                }
            }
            () = sleep => core.handle_timeout(now()),
            Ok(()) = async {
                match cluster_load.as_mut() {
                    Some(load) => load.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(load) = &cluster_load {
                    let load = load.borrow().clone();
                    core.set_cluster_load(load.nodes, &load.elsewhere);
                }
            }
            Some(message) = async {
                match ng_inbound.as_mut() {
                    Some(inbound) => inbound.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(ng) = ng.as_mut() {
                    ng.handle(now(), message, &relay);
                }
            }
            Some(answer) = resolved.recv() => {
                if names.accept(&mut core, answer) {
                    shield.configure(&running_config, &names.trust(&running_config));
                    // A TLS trunk's new targets need its client settings.
                    if running_config.trunks.iter().any(crate::config::Trunk::may_speak_tls) {
                        match TlsSettings::from_config(&running_config, &|t| names.targets_of(&t.name), wall_clock()) {
                            Ok(settings) => transports.set_tls(Arc::new(settings)),
                            Err(problems) => warn!(problems = problems.len(), "TLS files unusable since the last load; TLS trunks keep their settings"),
                        }
                    }
                }
            }
            Some((view, answer)) = calls_asked.recv() => {
                let json = match view {
                    admin::View::Calls => admin::calls_json(&core.calls(now())),
                    admin::View::Registrations => {
                        admin::registrations_json(&core.registrations(now()))
                    }
                };
                let _ = answer.send(json);
            }
            () = tokio::time::sleep(shell::RELAY_RETRY), if !shell.relay_backlog.is_empty() => {
                shell.retry_relay_backlog();
            }
            _ = tick.tick() => {
                if let Some(ng) = ng.as_mut() {
                    ng.tick(now(), &relay);
                }
                let pressure = shell.relay_pressure();
                overload.relay(&mut core, pressure, &metrics);
                overload.settle(&mut core, inbound.len(), inbound.max_capacity(), &metrics);
                shell.gauges(&core);
                shell.edge();
                if shell.replicator.as_ref().is_some_and(crate::cluster::calls::Replicator::take_resync) {
                    core.replicate_all(now());
                }
                if let Some(node) = &cluster {
                    node.publish_load(core.trunk_calls());
                    readiness.set_replication_behind(node.replication_behind());
                }
                close_retired_listeners(&mut core, &transports);
                bindings.save_if_changed(&core);
                if let Some(adopted) = &adopted {
                    metrics.set_xdp_adopted_flows(
                        adopted.held.load(Ordering::Relaxed),
                        adopted.expired.load(Ordering::Relaxed),
                    );
                }
                if shutdown_at.is_some_and(|at| now() >= at || core.active_calls() == 0) {
                    break;
                }
                if let Some(until) = drain_until {
                    if core.active_calls() == 0 {
                        info!("drain complete: the last call has ended");
                        break;
                    }
                    if now() >= until {
                        warn!(calls = core.active_calls(), "drain deadline reached: ending the calls still up");
                        drain_until = None;
                        shutdown_at = Some(begin_shutdown(&mut core, &readiness));
                    }
                }
            }
            _ = terminate.recv() => {
                drain_until = None;
                shutdown_at = Some(begin_shutdown(&mut core, &readiness));
            }
            _ = interrupt.recv() => {
                drain_until = None;
                shutdown_at = Some(begin_shutdown(&mut core, &readiness));
            }
            _ = quit.recv() => {
                if shutdown_at.is_none() && drain_until.is_none() {
                    // In a pair with a standby that mirrors the calls, a
                    // drain hands them over: this node leaves them up and
                    // releases the lease once their last changes are
                    // written; the standby carries them on.
                    let standby = match &cluster {
                        Some(node) => node.standby(Duration::from_millis(500)).await,
                        None => None,
                    };
                    if let Some(standby) = standby {
                        info!(calls = core.active_calls(), %standby, "drain requested: handing the calls over to the standby");
                        readiness.set_draining();
                        metrics.set_draining(true);
                        handing_over = true;
                        break;
                    }
                    drain_until = Some(begin_drain(&mut core, &readiness, &metrics, running_config.drain.deadline_secs));
                }
            }
            _ = restart.recv() => {
                match &fast_exit {
                    Some(_) if running_config.media.xdp.pin_dir.is_some() => {
                        info!(calls = core.active_calls(), "restart requested: the calls up and the XDP fast path are left to the next process");
                        readiness.set(false);
                        restarting = true;
                        break;
                    }
                    _ => {
                        warn!("SIGUSR2 without an XDP fast path pinned (media.xdp.pin_dir): nothing to hand over; stopping as for SIGTERM");
                        if shutdown_at.is_none() {
                            shutdown_at = Some(begin_shutdown(&mut core, &readiness));
                        }
                    }
                }
            }
            // (Once stopping for another reason, the lease no longer matters.)
            holder = lease_taken(&mut cluster), if lease_lost.is_none() && shutdown_at.is_none() => {
                // The other node adopted the calls Redis had of this one:
                // a BYE from here would end them there too. Calls only
                // this node knew (answered while it was cut off from
                // Redis) are left to their peers' timers.
                error!(active = %holder, calls = core.active_calls(), "the other node of the pair holds the cluster lease: exiting, leaving the calls to it");
                lease_lost = Some(holder);
                readiness.set(false);
                handing_over = true;
                break;
            }
            _ = hangup.recv() => {
                let running = Running {
                    transports: &transports,
                    shield: &shield,
                    relay: &relay,
                    config: &running_config,
                    metrics: &metrics,
                };
                if let Some(config) = reload(&mut core, config_path.as_ref(), &running, &mut names) {
                    shell.reserve_addresses(&media_addresses(&config));
                    running_config = config;
                }
                if let Some(cdr) = &cdr {
                    cdr.reopen(); // after logrotate moved the file away
                }
            }
        }
        shell.drain(&mut core, !inbound.is_empty());
        // The turn's sends are out: how long its messages were in here.
        if !arrivals.is_empty() {
            let done = now();
            for (arrived, kind) in arrivals.drain(..) {
                metrics.sip_transit(kind, done.saturating_duration_since(arrived));
            }
        }
        if shell.relay_backlog.len() > shell::RELAY_BACKLOG_REFUSE_ALL && overload.relay < 2 {
            overload.relay(&mut core, 2, &metrics);
        }
    }
    // Commands left for a wake at the end of a burst.
    shell.wake_relay(false);
    if !restarting && let Some(exit) = &fast_exit {
        // An orderly stop leaves the NIC clean: the pins go, the links detach.
        exit.detach();
    }
    shell.flush_cdrs();
    drop(shell);
    bindings.save_now(&core).await;
    if let Some(cdr) = cdr {
        let counts = cdr.close();
        info!(?counts, "call detail records closed");
    }
    if handing_over {
        info!(
            calls = core.active_calls(),
            "sbc stopping: the calls up go on at the standby"
        );
    } else {
        info!(calls = core.active_calls(), "sbc stopping");
    }
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    transports.shutdown().await;
    relay.shutdown();
    // Last, once the addresses are free: the other node may take them.
    if let Some(node) = cluster {
        node.stop().await;
    }
    match lease_lost {
        Some(holder) => Err(anyhow::anyhow!(
            "stepped down: node \"{holder}\" holds the cluster lease"
        )),
        None if restarting => Ok(Exit::Restart),
        None => Ok(Exit::Stopped),
    }
}

/// Carries on the calls the other node of the pair wrote (it died or
/// stopped): each is adopted by the core. Returns the calls to retire
/// from Redis once their records are written again under this node.
async fn adopt_calls(
    core: &mut Core,
    node: &mut cluster::Node,
    relay: &UserspaceRelay,
) -> Vec<(String, u64)> {
    let calls = node.take_calls(Duration::from_secs(5)).await;
    if calls.is_empty() {
        return Vec::new();
    }
    let n = relay.threads();
    let lane = |addr: std::net::SocketAddr| relay.lane_of(addr).map(|k| (k, n));
    let (mut adopted, mut failed) = (0usize, 0usize);
    let mut retire = Vec::with_capacity(calls.len());
    let at = now();
    for call in calls {
        match core.adopt(at, &call.record, &lane) {
            Ok(_) => {
                adopted += 1;
                node.adopted(true);
            }
            Err(error) => {
                failed += 1;
                node.adopted(false);
                warn!(instance = %call.instance, call = call.call, a_call_id = %call.record.a.text[0], %error, "call of the other node not carried on");
            }
        }
        // Not ours to carry on either way: forgotten after our own writes.
        if call.instance != node.instance() {
            retire.push((call.instance, call.call));
        }
    }
    info!(
        adopted,
        failed, "carried on the calls of the other node of the pair"
    );
    retire
}

/// Resolves with the holder once this node's cluster lease is found taken
/// by the other node; never without a cluster.
async fn lease_taken(cluster: &mut Option<cluster::Node>) -> String {
    match cluster {
        Some(node) => node.lost().await,
        None => std::future::pending().await,
    }
}

/// Loads the XDP program and attaches it to the configured interfaces:
/// native mode, else generic, else none (userspace only), each fallback
/// logged with its reason and exported. `None` when no interface runs it.
fn start_fast_path(
    config: &crate::config::Xdp,
    metrics: &Metrics,
    adopted_timeout: Duration,
) -> Option<(Box<dyn FastPath>, ExitPolicy, Arc<AdoptedFlows>)> {
    use crate::config::XdpMode as Wanted;
    if config.mode == Wanted::Off || config.interfaces.is_empty() {
        for interface in &config.interfaces {
            metrics.set_xdp_attached(interface, metrics::XdpMode::None);
        }
        info!(
            "XDP fast path off (mode off or no interfaces configured): media on the userspace relay"
        );
        return None;
    }
    let fall_back_everywhere = |reason: metrics::XdpFallbackReason| {
        for interface in &config.interfaces {
            metrics.set_xdp_attached(interface, metrics::XdpMode::None);
            metrics.xdp_fallback(interface, reason);
        }
    };
    if let Some(why) = xdp::not_built_in_reason() {
        warn!(
            why,
            "XDP fast path not built into this binary: media on the userspace relay"
        );
        fall_back_everywhere(metrics::XdpFallbackReason::NotBuiltIn);
        return None;
    }
    let xdp_config = XdpConfig {
        pin_dir: config.pin_dir.clone(),
    };
    let mut program = match XdpRelay::load(&xdp_config) {
        Ok(program) => program,
        Err(e) => {
            warn!(error = %e, "XDP program did not load: media on the userspace relay");
            let reason = if e.is_permission_denied() {
                metrics::XdpFallbackReason::PermissionDenied
            } else {
                metrics::XdpFallbackReason::LoadFailed
            };
            fall_back_everywhere(reason);
            return None;
        }
    };
    let policy = match config.mode {
        Wanted::Native => ModePolicy::NativeOnly,
        Wanted::Generic => ModePolicy::GenericOnly,
        Wanted::Auto | Wanted::Off => ModePolicy::Auto,
    };
    let mut attached = 0;
    for interface in &config.interfaces {
        let attachment = program.attach(interface, policy);
        for fallback in &attachment.fallbacks {
            warn!(%interface, skipped = fallback.skipped.as_str(), reason = %fallback.reason, "XDP mode fallback");
            metrics.xdp_fallback(
                interface,
                match fallback.reason {
                    xdp::FallbackReason::Refused { .. } => metrics::XdpFallbackReason::AttachFailed,
                    _ => metrics::XdpFallbackReason::Unsupported,
                },
            );
        }
        let mode = match attachment.mode {
            xdp::XdpMode::Native => metrics::XdpMode::Native,
            xdp::XdpMode::Generic => metrics::XdpMode::Generic,
            xdp::XdpMode::Userspace => metrics::XdpMode::None,
        };
        metrics.set_xdp_attached(interface, mode);
        if attachment.mode != xdp::XdpMode::Userspace {
            attached += 1;
            if let Err(e) = program.allow_egress(attachment.ifindex) {
                warn!(%interface, error = %e, "XDP redirect to this interface not allowed; XDP_TX only");
            }
            info!(%interface, mode = attachment.mode.as_str(), adopted = attachment.adopted, "XDP fast path attached");
            if let Some(e) = &attachment.pin_error {
                warn!(%interface, error = %e, "XDP link not pinned: it detaches at exit, and a restart interrupts this interface's media");
            }
        }
    }
    for stale in program.forget_stale_links() {
        info!(pin = %stale.display(), "removed the pinned XDP link of an interface no longer configured");
    }
    if attached == 0 {
        return None;
    }
    let exit = program.exit_policy();
    let adopted = Arc::new(AdoptedFlows::default());
    let fast_path = XdpFastPath::new(program, adopted_timeout, Arc::clone(&adopted));
    Some((Box::new(fast_path), exit, adopted))
}

/// Starts a drain (SIGQUIT): no new calls, the calls up go on; returns the
/// deadline after which the rest are ended.
fn begin_drain(
    core: &mut Core,
    readiness: &Readiness,
    metrics: &Metrics,
    deadline_secs: u32,
) -> Instant {
    info!(
        calls = core.active_calls(),
        deadline_secs, "drain requested: no new calls; exiting when the calls up have ended"
    );
    readiness.set_draining();
    metrics.set_draining(true);
    core.stop_taking_calls();
    now() + Duration::from_secs(u64::from(deadline_secs))
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

/// What a reload changes besides the core.
struct Running<'a> {
    transports: &'a Transports,
    shield: &'a Shield,
    relay: &'a UserspaceRelay,
    /// The configuration in force (the last one loaded).
    config: &'a Config,
    metrics: &'a Metrics,
}

/// Rereads the config file and applies it (see the module docs); returns
/// the configuration now in force, or `None` if the reload was refused.
fn reload(
    core: &mut Core,
    path: Option<&PathBuf>,
    running: &Running<'_>,
    names: &mut TrunkNames,
) -> Option<Config> {
    let Some(path) = path else {
        warn!("SIGHUP: running on the embedded default; there is no file to reload");
        return None;
    };
    let refuse = |why: &dyn std::fmt::Display| {
        running
            .metrics
            .config_reload(ReloadResult::Failure, wall_clock());
        error!(file = %path.display(), problem = %why, "reload refused, the running configuration is kept");
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(ConfigError::Invalid { problems }) => {
            // Every problem is logged; the refusal is counted once.
            for problem in &problems {
                error!(file = %path.display(), %problem, "problem in the new configuration");
            }
            refuse(&format_args!("{} problem(s) in the file", problems.len()));
            return None;
        }
        Err(e) => {
            refuse(&e);
            return None;
        }
    };
    // New certificates are read before anything changes: an unusable one
    // refuses the reload, and the running ones stay.
    let tls = match load_tls(&config, &|t| names.targets_of(&t.name)) {
        Ok(tls) => tls,
        Err(e) => {
            refuse(&e);
            return None;
        }
    };

    // A new media address gets a port pool, once it is known to be one of
    // this host's: otherwise every call's allocation would fail.
    let pools = running.config.media_ranges();
    let new_pools: Vec<(std::net::IpAddr, PortRange)> = config
        .media_ranges()
        .into_iter()
        .filter(|(ip, _)| !pools.iter().any(|(known, _)| known == ip))
        .collect();
    for (ip, _) in &new_pools {
        if let Err(e) = std::net::UdpSocket::bind((*ip, 0)) {
            let realm = config
                .realms
                .iter()
                .find(|r| r.media.addresses().any(|a| a == *ip))
                .map_or("?", |r| r.name.as_str());
            refuse(&format_args!(
                "realm {realm}: media address {ip} can't be bound here ({e}); is it an address of this host?"
            ));
            return None;
        }
    }
    for (ip, range) in &new_pools {
        if let Err(e) = running.relay.add_pool(*ip, *range) {
            refuse(&format_args!("media address {ip}: {e}"));
            return None;
        }
        info!(address = %ip, first = range.first, last = range.last, "media address added");
    }
    raise_fd_limit(&config, running.relay.threads()); // limits.max_calls may have grown
    for setting in running.config.restart_only_changes(&config) {
        warn!(
            setting,
            "changed in the file; takes effect at the next restart"
        );
    }

    // Bind what is new before changing anything: a bind that fails (address
    // in use, not local) refuses the whole reload.
    let (wanted, infos): (Vec<ListenerSpec>, Vec<ListenerInfo>) =
        config.listener_specs().into_iter().unzip();
    let plan = crate::transport::plan_listeners(&running.transports.listeners(), &wanted);
    let mut added: Vec<(ListenerId, ListenerSpec)> = Vec::new();
    for spec in &plan.bind {
        match running.transports.add(spec) {
            Ok(id) => added.push((id, spec.clone())),
            Err(e) => {
                for (id, _) in &added {
                    running.transports.remove(*id);
                }
                refuse(&e);
                return None;
            }
        }
    }
    for (id, spec) in &plan.keep {
        if running.transports.spec(*id).as_ref() != Some(spec)
            && let Err(e) = running.transports.reconfigure(*id, spec)
        {
            warn!(listener = %spec.addr, error = %e, "listener socket options not changed");
        }
    }
    let active: Vec<(ListenerId, ListenerInfo)> = plan
        .keep
        .iter()
        .chain(&added)
        .filter_map(|(id, spec)| {
            let index = wanted.iter().position(|w| w == spec)?;
            Some((*id, infos[index].clone()))
        })
        .collect();
    // New handshakes get the new certificates; connections up keep theirs.
    running.transports.set_tls(Arc::clone(&tls));
    running.metrics.set_tls_certificates(tls.expiries());
    names.configure(&config);
    running.shield.configure(&config, &names.trust(&config));
    // Names keep their last targets in the core until new answers come.
    core.reload(now(), &config, |_, _| None);
    core.set_listeners(&active);
    zero_series(running.metrics, &config, core);
    running
        .metrics
        .config_reload(ReloadResult::Success, wall_clock());
    for (_, spec) in &added {
        info!(realm = %spec.realm, transport = %spec.transport, address = %spec.addr, "listener bound");
    }
    for id in &plan.retire {
        if let Some(spec) = running.transports.spec(*id) {
            info!(realm = %spec.realm, transport = %spec.transport, address = %spec.addr, "listener retiring: serves its calls up, closes when they end");
        }
    }
    info!(
        file = %path.display(),
        realms = config.realms.len(),
        trunks = config.trunks.len(),
        routes = config.routes.len(),
        listeners_bound = added.len(),
        listeners_retiring = plan.retire.len(),
        "configuration reloaded"
    );
    Some(config)
}

/// Every series the configuration makes known, at zero (existing ones
/// keep their values), and each trunk's health as the core sees it.
fn zero_series(metrics: &Metrics, config: &Config, core: &Core) {
    let realms: Vec<String> = config.realms.iter().map(|r| r.name.clone()).collect();
    let trunks: Vec<String> = config.trunks.iter().map(|t| t.name.clone()).collect();
    let tls = crate::config::Transport::Tls;
    let tls_realms: Vec<String> = config
        .realms
        .iter()
        .filter(|r| {
            r.listen.iter().any(|l| l.transport == tls)
                || config
                    .trunks
                    .iter()
                    .any(|t| t.realm == r.name && t.may_speak_tls())
        })
        .map(|r| r.name.clone())
        .collect();
    metrics.zero_series(&metrics::SeriesScope {
        tls_realms: &tls_realms,
        realms: &realms,
        trunks: &trunks,
        interfaces: &config.media.xdp.interfaces,
        call_error_kinds: &crate::b2bua::CallError::KINDS,
    });
    for (trunk, usable) in core.trunks_usable() {
        metrics.set_trunk_up(&trunk, usable);
    }
}

/// A certificate this close to its end gets a warning at each load.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// Reads the TLS files `config` names into the settings the transports
/// handshake with, and logs what each TLS listener and trunk presents and
/// verifies; the error names every unusable file.
fn load_tls(
    config: &Config,
    targets: &dyn Fn(&crate::config::Trunk) -> Vec<std::net::SocketAddr>,
) -> Result<Arc<TlsSettings>, String> {
    let settings = TlsSettings::from_config(config, targets, wall_clock()).map_err(|problems| {
        let all: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{} {}: tls.{}: {}",
                    p.owner.as_str(),
                    p.index,
                    p.field,
                    p.error
                )
            })
            .collect();
        all.join("; ")
    })?;
    for line in settings.describe() {
        info!("{line}");
    }
    let now = wall_clock()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for c in settings.expiries() {
        if c.not_after - now < EXPIRY_WARNING_SECS {
            warn!(
                owner = c.owner.as_str(),
                name = %c.name,
                role = c.role.as_str(),
                subject = %c.subject,
                expires = %crate::tls::utc_date(c.not_after),
                "TLS certificate expires soon"
            );
        }
    }
    Ok(Arc::new(settings))
}

/// Closes the listeners a reload retired once nothing uses them.
fn close_retired_listeners(core: &mut Core, transports: &Transports) {
    while let Some(id) = core.poll_closable_listener() {
        if let Some(spec) = transports.spec(id) {
            info!(realm = %spec.realm, transport = %spec.transport, address = %spec.addr, "retired listener closed: its last call and transaction ended");
        }
        transports.remove(id);
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

/// A secret key for the shield's hash, so a sender can't aim its
/// addresses at one bucket: std's per-process random hasher keys (from the
/// OS), read twice.
fn random_seed() -> Seed {
    use std::hash::BuildHasher;
    let key = |n: u64| std::collections::hash_map::RandomState::new().hash_one(n);
    Seed([key(1), key(2)])
}
