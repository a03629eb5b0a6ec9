//! The ng server inside the daemon (IO shell): the sockets, the engine, its
//! metrics, and the hand-off of media commands to the daemon's one media
//! relay. The daemon's loop calls [`NgService::handle`] for each message,
//! [`NgService::media_event`] for each relay event and [`NgService::tick`]
//! every second; each drains the engine completely.
//!
//! Metrics: `sbc_ng_commands_total{command,result}`,
//! `sbc_ng_reply_seconds{command}` (from a request's arrival to its reply,
//! ports allocation included), `sbc_ng_sessions`,
//! `sbc_ng_refused_total{transport}` (sources outside `[ng] allow`). The media of ng sessions
//! counts in the relay's own metrics like any call's.

use std::collections::VecDeque;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Config;
use crate::media::cname::CnameMask;
use crate::media::command::{MediaCommand, MediaError, MediaEvent};
use crate::media::userspace::{Offered, UserspaceRelay};

use super::engine::{NgEngine, NgSettings};
use super::server::{Inbound, NgSockets};

/// Reply latency buckets (seconds): rtpengine answers in well under a
/// millisecond; Kamailio gives up after `rtpengine_tout_ms` (1 s).
const REPLY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// The ng metrics, registered in the daemon's registry.
pub struct NgMetrics {
    commands: IntCounterVec,
    reply: HistogramVec,
    sessions: IntGauge,
    refused: IntCounterVec,
}

impl NgMetrics {
    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<NgMetrics> {
        let commands = IntCounterVec::new(
            Opts::new(
                "sbc_ng_commands_total",
                "ng (rtpengine control protocol) requests answered, per command (ping, offer, answer, delete, query, list, statistics, other) and result (ok, pong, error, load_limit, duplicate = a retransmission answered from the reply cache).",
            ),
            &["command", "result"],
        )?;
        let reply = HistogramVec::new(
            HistogramOpts::new(
                "sbc_ng_reply_seconds",
                "Time from receiving an ng request to sending its reply, per command (media port allocation included).",
            )
            .buckets(REPLY_BUCKETS.to_vec()),
            &["command"],
        )?;
        let sessions = IntGauge::new("sbc_ng_sessions", "ng sessions (calls) currently anchored.")?;
        let refused = IntCounterVec::new(
            Opts::new(
                "sbc_ng_refused_total",
                "ng datagrams (transport udp) and connections (tcp) dropped unanswered because their source is outside [ng] allow (loopback only when it is empty).",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(reply.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        // The series a dashboard plots from the start.
        for (command, result) in [
            ("ping", "pong"),
            ("offer", "ok"),
            ("offer", "error"),
            ("offer", "load_limit"),
            ("answer", "ok"),
            ("answer", "error"),
            ("delete", "ok"),
            ("delete", "error"),
            ("query", "ok"),
        ] {
            reply.with_label_values(&[command]);
            commands.with_label_values(&[command, result]);
        }
        for transport in ["udp", "tcp"] {
            refused.with_label_values(&[transport]);
        }
        Ok(NgMetrics {
            commands,
            reply,
            sessions,
            refused,
        })
    }
}

/// The running ng server.
pub struct NgService {
    engine: NgEngine,
    sockets: NgSockets,
    metrics: NgMetrics,
    /// Commands the relay's queue refused, sent again in order.
    backlog: VecDeque<MediaCommand>,
}

impl NgService {
    /// Starts the server `config` asks for (`None` without `[ng]`).
    pub async fn start(
        config: &Config,
        cname_mask: CnameMask,
        registry: &Registry,
    ) -> anyhow::Result<Option<(NgService, mpsc::Receiver<Inbound>)>> {
        let Some(ng) = &config.ng else {
            return Ok(None);
        };
        let settings = NgSettings::from_config(config);
        let metrics = NgMetrics::new(registry)?;
        let (sockets, inbound) = NgSockets::bind(
            ng.listen,
            ng.listen_tcp,
            settings.limits,
            ng.allow.clone(),
            metrics.refused.clone(),
        )
        .await?;
        info!(
            udp = %ng.listen,
            tcp = ?ng.listen_tcp,
            allow = ?ng.allow,
            "ng control protocol server listening (an empty allow list: loopback only)"
        );
        let service = NgService {
            engine: NgEngine::new(settings, cname_mask),
            sockets,
            metrics,
            backlog: VecDeque::new(),
        };
        Ok(Some((service, inbound)))
    }

    /// One message from a client.
    pub fn handle(&mut self, now: Instant, message: Inbound, relay: &UserspaceRelay) {
        self.engine
            .handle_message(now, message.from, &message.bytes);
        self.drain(now, relay);
    }

    /// A media relay event (the engine takes only its own streams').
    pub fn media_event(&mut self, now: Instant, event: &MediaEvent, relay: &UserspaceRelay) {
        self.engine.handle_media_event(now, event);
        self.drain(now, relay);
    }

    /// Every second: delete delays, the reply cache, the backlog.
    pub fn tick(&mut self, now: Instant, relay: &UserspaceRelay) {
        if self.engine.poll_timeout().is_none_or(|at| at <= now) {
            self.engine.handle_timeout(now);
        }
        self.drain(now, relay);
    }

    fn drain(&mut self, now: Instant, relay: &UserspaceRelay) {
        loop {
            while let Some(command) = self.backlog.pop_front() {
                if let Err(Offered::Full(command)) = relay.offer(command) {
                    self.backlog.push_front(command);
                    break;
                }
            }
            let mut refused = Vec::new();
            while let Some(command) = self.engine.poll_media() {
                if let MediaCommand::Allocate { stream, .. } = &command {
                    let stream = *stream;
                    if let Err(error) = relay.send(command) {
                        refused.push(MediaEvent::AllocationFailed { stream, error });
                    }
                } else if !self.backlog.is_empty() {
                    self.backlog.push_back(command);
                } else if let Err(Offered::Full(command)) = relay.offer(command) {
                    // A release must not be lost (its ports would stay held).
                    self.backlog.push_back(command);
                }
            }
            while let Some(warning) = self.engine.poll_warning() {
                warn!("{warning}");
            }
            while let Some(reply) = self.engine.poll_reply() {
                let result = if reply.result == "load limit" {
                    "load_limit"
                } else {
                    reply.result
                };
                self.metrics
                    .commands
                    .with_label_values(&[reply.command, result])
                    .inc();
                if reply.result != "duplicate" {
                    self.metrics
                        .reply
                        .with_label_values(&[reply.command])
                        .observe(reply.latency.as_secs_f64());
                }
                self.sockets.send(reply.to, reply.bytes);
            }
            self.metrics
                .sessions
                .set(i64::try_from(self.engine.sessions()).unwrap_or(i64::MAX));
            if refused.is_empty() {
                return;
            }
            for event in refused {
                if let MediaEvent::AllocationFailed {
                    error: MediaError::QueueFull,
                    ..
                } = &event
                {
                    warn!("media relay queue full: ng offer refused");
                }
                self.engine.handle_media_event(now, &event);
            }
        }
    }
}
