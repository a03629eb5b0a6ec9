//! The SBC's Prometheus metrics: one [`prometheus::Registry`] owned by a
//! [`Metrics`] value, typed handles for every family, and helper methods so
//! callers never spell a metric or label name.
//!
//! Owns: the registry (never the process-global one, so each test and each
//! daemon instance counts in isolation), the metric names, HELP texts, label
//! names and the bounded sets of label values ([`Direction`],
//! [`MessageKind`], [`CallOutcome`], [`RejectReason`], ...), and the text
//! exposition (format 0.0.4) that `/metrics` serves ([`Metrics::encode_text`]).
//!
//! May not: be reached from the sans-IO core. `sip`, `sdp`, `b2bua` and the
//! media flow state do not depend on `prometheus` or on this module; they emit
//! plain events and report plain counts through their `poll_*` outputs, and
//! the IO shell (`daemon`, with the transports and media backends it owns) is
//! the only holder of a `Metrics` and translates those events into the
//! helper calls below. That keeps the core deterministic and testable without a
//! registry, and keeps the metric contract in one file.
//!
//! Cardinality: every label value is either a member of a closed enum defined
//! here, or an operator-configured name (realm, trunk, XDP interface) whose
//! count is fixed by the configuration. Call-IDs, tags, URIs, addresses and
//! ports never become label values, with one exception: the `target` of
//! `sbc_trunk_target_up{trunk,target}`, the `IP:port` a trunk is reached at
//! (its configured address, or those its DNS name resolves to), bounded by
//! the configuration and the trunk's DNS answer; the series of a target a new
//! answer no longer has is removed. Extension SIP methods collapse to
//! `"other"` for the same reason.
//!
//! XDP fallback: the attach mode in use is a gauge,
//! `sbc_xdp_attached{interface,mode}` (1 for the mode in use, 0 for the
//! others, so a dashboard can alert on `mode="none"`), and each step down the
//! native → generic → userspace ladder is counted, with its reason, in
//! `sbc_xdp_fallback_total{interface,reason}`. The reason lives on a counter
//! rather than on the gauge so that the gauge keeps exactly three series per
//! interface however many reasons there are.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::sip::{Message, Method, StartLine};
use crate::transport::{TlsFailure, TlsSide};

/// The `direction` label of a TLS handshake.
const fn tls_side(side: TlsSide) -> &'static str {
    match side {
        TlsSide::Inbound => "inbound",
        TlsSide::Outbound => "outbound",
    }
}

/// The `Content-Type` of [`Metrics::encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) of `sbc_call_setup_seconds`: from a fast local
/// answer (10 ms) to a carrier's post-dial delay limit (30 s).
pub const CALL_SETUP_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// Bucket bounds (seconds) of `sbc_sip_transit_seconds`: fine from 50 us to
/// 2 ms, where a healthy daemon's messages fall and the tail that matters
/// for call setup lies, then coarse up to an overload's queueing (1 s).
pub const SIP_TRANSIT_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.005, 0.01, 0.025,
    0.1, 1.0,
];

/// What a message handled by the core was, for `sbc_sip_transit_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitKind {
    /// A request.
    Request,
    /// A response.
    Response,
    /// Bytes that did not parse (answered 400 when they look like a
    /// request).
    Malformed,
}

impl TransitKind {
    /// Every kind, in the order `Metrics` keeps their histograms.
    const ALL: [TransitKind; 3] = [
        TransitKind::Request,
        TransitKind::Response,
        TransitKind::Malformed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitKind::Request => "request",
            TransitKind::Response => "response",
            TransitKind::Malformed => "malformed",
        }
    }
}

/// Errors of the metrics layer.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The text encoder refused the gathered families (a metric family with
    /// inconsistent contents); the scrape cannot be served.
    #[error("encoding the metrics as Prometheus text failed: {0}")]
    Encode(#[from] prometheus::Error),
}

/// What the running binary is, exported as `sbc_build_info{version,xdp} 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate version, e.g. `"0.1.0"`.
    pub version: String,
    /// Whether the XDP fast path was compiled in (label value `"true"` or
    /// `"false"`); whether it is attached is `sbc_xdp_attached`.
    pub xdp: bool,
}

impl BuildInfo {
    /// This crate's version, with the given XDP build flag.
    pub fn current(xdp: bool) -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            xdp,
        }
    }
}

/// Which way a SIP message crossed the SBC's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from a peer.
    In,
    /// Sent to a peer.
    Out,
}

impl Direction {
    /// The label value: `"in"` or `"out"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The class of a SIP status code (RFC 3261 §21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx.
    Provisional,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// 6xx.
    GlobalFailure,
    /// Outside 100..=699 (the parser never yields one; an editor might).
    Other,
}

impl StatusClass {
    /// Every class a parsed message can have.
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Provisional,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::GlobalFailure,
    ];

    /// Classifies a status code.
    pub const fn of(code: u16) -> StatusClass {
        match code {
            100..=199 => StatusClass::Provisional,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            600..=699 => StatusClass::GlobalFailure,
            _ => StatusClass::Other,
        }
    }

    /// The label value: `"1xx"` ... `"6xx"`, or `"other"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatusClass::Provisional => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::GlobalFailure => "6xx",
            StatusClass::Other => "other",
        }
    }
}

/// The `kind` label of `sbc_sip_messages_total`: a request's method or a
/// response's status class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A request; [`Method::Extension`] is exported as `"other"`.
    Request(Method),
    /// A response.
    Response(StatusClass),
}

impl MessageKind {
    /// The kind of a parsed message.
    pub fn of(message: &Message) -> MessageKind {
        match message.start_line() {
            StartLine::Request { method } => MessageKind::Request(method),
            StartLine::Response { code } => MessageKind::Response(StatusClass::of(code)),
        }
    }

    /// The label value: `"INVITE"`, `"BYE"`, ..., `"other"` for extension
    /// methods (a peer may invent any number of them), or `"2xx"` etc.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageKind::Request(method) => match method.as_str() {
                Some(name) => name,
                None => "other",
            },
            MessageKind::Response(class) => class.as_str(),
        }
    }
}

impl From<&Message> for MessageKind {
    fn from(message: &Message) -> MessageKind {
        MessageKind::of(message)
    }
}

/// How a call ended, for `sbc_calls_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A 2xx answered the INVITE.
    Answered,
    /// The callee was busy (486 Busy Here, 600 Busy Everywhere).
    Busy,
    /// Nobody answered in time (408 Request Timeout, 480 Temporarily
    /// Unavailable, 487 after our own no-answer timer).
    NoAnswer,
    /// The caller cancelled before an answer.
    Cancelled,
    /// Another final failure response (3xx-6xx).
    Rejected,
    /// No response at all (transaction timeout, transport error).
    Failed,
}

impl CallOutcome {
    /// Every outcome, for series present from start-up.
    pub const ALL: [CallOutcome; 6] = [
        CallOutcome::Answered,
        CallOutcome::Busy,
        CallOutcome::NoAnswer,
        CallOutcome::Cancelled,
        CallOutcome::Rejected,
        CallOutcome::Failed,
    ];

    /// The outcome a final response to the INVITE means; `None` for a
    /// provisional (1xx) or out-of-range code.
    pub const fn from_final_status(code: u16) -> Option<CallOutcome> {
        Some(match code {
            200..=299 => CallOutcome::Answered,
            486 | 600 => CallOutcome::Busy,
            408 | 480 => CallOutcome::NoAnswer,
            300..=699 => CallOutcome::Rejected,
            _ => return None,
        })
    }

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Busy => "busy",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Failed => "failed",
        }
    }
}

/// Why the SBC itself refused a request, for `sbc_rejected_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The source is not allowed by the realm's ACL.
    Acl,
    /// The source or trunk exceeded its request rate.
    RateLimit,
    /// Call admission control: a realm or trunk call limit was reached.
    Admission,
    /// No route matched the request, or none of its trunks could be
    /// tried.
    NoRoute,
    /// The request failed the server checks (400, 416, 420, 483).
    Invalid,
    /// No media port was free to anchor the call (widen `[media]` ports).
    MediaPorts,
    /// An untrusted source sent over its request rate (dropped before the
    /// parser, no answer).
    RateLimited,
    /// A banned source sent something (dropped before the parser).
    Banned,
    /// An untrusted source held its share of transactions, setups or calls.
    SourceLimit,
    /// A known scanner's User-Agent (dropped, the source banned).
    Scanner,
    /// An in-dialog request, ACK or CANCEL from someone other than the
    /// dialog's peer.
    ForeignInDialog,
    /// The SBC was saturated, or untrusted sources held their share of it.
    Overload,
    /// Larger than the parser takes.
    Oversized,
}

/// The call core's reasons under their labels: each has one (a new core
/// reason fails to compile here until it is given one). Draining counts as
/// admission: the SBC takes no new call, as at its limit.
impl From<crate::b2bua::RejectReason> for RejectReason {
    fn from(reason: crate::b2bua::RejectReason) -> RejectReason {
        use crate::b2bua::RejectReason as Core;
        match reason {
            Core::Acl => RejectReason::Acl,
            Core::RateLimit => RejectReason::RateLimit,
            Core::NoRoute => RejectReason::NoRoute,
            Core::Invalid => RejectReason::Invalid,
            Core::MediaPorts => RejectReason::MediaPorts,
            Core::Admission | Core::Draining => RejectReason::Admission,
            Core::SourceLimit => RejectReason::SourceLimit,
            Core::Scanner => RejectReason::Scanner,
            Core::ForeignInDialog => RejectReason::ForeignInDialog,
            Core::Overload => RejectReason::Overload,
            Core::Oversized => RejectReason::Oversized,
        }
    }
}

impl RejectReason {
    /// Every reason, for series present from start-up.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Acl,
        RejectReason::RateLimit,
        RejectReason::Admission,
        RejectReason::NoRoute,
        RejectReason::Invalid,
        RejectReason::MediaPorts,
        RejectReason::RateLimited,
        RejectReason::Banned,
        RejectReason::SourceLimit,
        RejectReason::Scanner,
        RejectReason::ForeignInDialog,
        RejectReason::Overload,
        RejectReason::Oversized,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Acl => "acl",
            RejectReason::RateLimit => "rate_limit",
            RejectReason::Admission => "admission",
            RejectReason::NoRoute => "no_route",
            RejectReason::Invalid => "invalid",
            RejectReason::MediaPorts => "media_ports",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Banned => "banned",
            RejectReason::SourceLimit => "source_limit",
            RejectReason::Scanner => "scanner",
            RejectReason::ForeignInDialog => "foreign_in_dialog",
            RejectReason::Overload => "overload",
            RejectReason::Oversized => "oversized",
        }
    }
}

/// Who moves a media stream's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaPath {
    /// The XDP fast path in the kernel.
    Xdp,
    /// The userspace relay.
    Userspace,
}

impl MediaPath {
    /// The label value: `"xdp"` or `"userspace"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaPath::Xdp => "xdp",
            MediaPath::Userspace => "userspace",
        }
    }
}

/// Why the relay dropped a media packet, for `sbc_media_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaDropReason {
    /// No flow is anchored on the destination port.
    UnknownFlow,
    /// The source is not the latched (or expected) peer: the RTP injection
    /// guard.
    SourceMismatch,
    /// Not an RTP/RTCP packet of acceptable size.
    Malformed,
    /// Forwarding to the other leg failed (socket error, full buffer).
    SendFailed,
    /// A STUN message: an endpoint doing ICE, which the SBC strips.
    Stun,
}

impl MediaDropReason {
    /// Every reason, for series present from start-up.
    pub const ALL: [MediaDropReason; 5] = [
        MediaDropReason::UnknownFlow,
        MediaDropReason::SourceMismatch,
        MediaDropReason::Malformed,
        MediaDropReason::SendFailed,
        MediaDropReason::Stun,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaDropReason::UnknownFlow => "unknown_flow",
            MediaDropReason::SourceMismatch => "source_mismatch",
            MediaDropReason::Malformed => "malformed",
            MediaDropReason::SendFailed => "send_failed",
            MediaDropReason::Stun => "stun",
        }
    }
}

/// The XDP attach mode of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Driver (native) mode.
    Native,
    /// Generic (SKB) mode.
    Generic,
    /// Not attached: userspace relay only.
    None,
}

impl XdpMode {
    /// Every mode, in the order the gauge exports them.
    pub const ALL: [XdpMode; 3] = [XdpMode::Native, XdpMode::Generic, XdpMode::None];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::None => "none",
        }
    }
}

/// Why an interface fell back one step (native → generic → userspace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpFallbackReason {
    /// The binary was built without the XDP program.
    NotBuiltIn,
    /// The driver has no native XDP support.
    Unsupported,
    /// Missing privileges (CAP_BPF / CAP_NET_ADMIN).
    PermissionDenied,
    /// The kernel refused to load the program (verifier, map creation).
    LoadFailed,
    /// The program loaded but attaching it to the interface failed.
    AttachFailed,
}

impl XdpFallbackReason {
    /// Every reason, for series present from start-up.
    pub const ALL: [XdpFallbackReason; 5] = [
        XdpFallbackReason::NotBuiltIn,
        XdpFallbackReason::Unsupported,
        XdpFallbackReason::PermissionDenied,
        XdpFallbackReason::LoadFailed,
        XdpFallbackReason::AttachFailed,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            XdpFallbackReason::NotBuiltIn => "not_built_in",
            XdpFallbackReason::Unsupported => "unsupported",
            XdpFallbackReason::PermissionDenied => "permission_denied",
            XdpFallbackReason::LoadFailed => "load_failed",
            XdpFallbackReason::AttachFailed => "attach_failed",
        }
    }
}

/// Why the transport dropped signaling under load, for
/// `sbc_transport_dropped_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportDropReason {
    /// The queue into the core was full.
    QueueFull,
    /// The connection limit of the listener was reached.
    ConnectionLimit,
    /// A datagram or framed message exceeded the size limit.
    TooLarge,
    /// An untrusted request shed unparsed because the queue into the core
    /// was more than half full.
    Overload,
    /// A TCP connection closed for not completing a message in time
    /// (slowloris).
    TooSlow,
}

impl TransportDropReason {
    /// Every reason, for series present from start-up.
    pub const ALL: [TransportDropReason; 5] = [
        TransportDropReason::QueueFull,
        TransportDropReason::ConnectionLimit,
        TransportDropReason::TooLarge,
        TransportDropReason::Overload,
        TransportDropReason::TooSlow,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportDropReason::QueueFull => "queue_full",
            TransportDropReason::ConnectionLimit => "connection_limit",
            TransportDropReason::TooLarge => "too_large",
            TransportDropReason::Overload => "overload",
            TransportDropReason::TooSlow => "too_slow",
        }
    }
}

/// The result of a configuration reload (SIGHUP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    /// The new configuration is in force.
    Success,
    /// The new configuration was refused; the old one stays in force.
    Failure,
}

impl ReloadResult {
    /// The label value: `"success"` or `"failure"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// The label values the configuration makes known: see
/// [`Metrics::zero_series`].
#[derive(Clone, Copy, Debug)]
pub struct SeriesScope<'a> {
    /// Realm names.
    pub realms: &'a [String],
    /// Trunk names.
    pub trunks: &'a [String],
    /// Interfaces the XDP fast path is configured on.
    pub interfaces: &'a [String],
    /// The `kind` values of `sbc_call_errors_total`.
    pub call_error_kinds: &'a [&'a str],
    /// Realms with a TLS listener or trunk (their handshake failure
    /// series).
    pub tls_realms: &'a [String],
}

/// The daemon's metrics: a private registry and a typed handle per family.
///
/// Only the IO shell holds one (see the module docs). Cloning the handles is
/// cheap; share a `Metrics` behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: Gauge,
    sip_messages: IntCounterVec,
    sip_parse_errors: IntCounterVec,
    sip_retransmissions: IntCounterVec,
    sip_transactions_active: IntGauge,
    overload_level: IntGauge,
    call_errors: IntCounterVec,
    untrusted_calls: IntGauge,
    calls_active: IntGaugeVec,
    calls: IntCounterVec,
    call_setup: HistogramVec,
    /// `sbc_sip_transit_seconds`, one histogram per [`TransitKind`] in its
    /// order, resolved once: observed for every message.
    sip_transit: [prometheus::Histogram; 3],
    rejected: IntCounterVec,
    media_streams_active: IntGaugeVec,
    media_packets: IntCounterVec,
    media_bytes: IntCounterVec,
    media_dropped: IntCounterVec,
    media_ports_free: IntGaugeVec,
    media_address_ports_free: IntGaugeVec,
    media_timeouts: IntCounter,
    media_reserve_endpoints: IntGaugeVec,
    media_reserve_misses: IntCounter,
    xdp_attached: IntGaugeVec,
    xdp_fallback: IntCounterVec,
    xdp_adopted_flows: IntGauge,
    xdp_adopted_flows_expired: IntCounter,
    draining: IntGauge,
    trunk_up: IntGaugeVec,
    trunk_target_up: IntGaugeVec,
    /// The targets each trunk has a `sbc_trunk_target_up` series for.
    trunk_targets: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
    trunk_calls_active: IntGaugeVec,
    config_reloads: IntCounterVec,
    config_last_reload_success: Gauge,
    transport_dropped: IntCounterVec,
    banned_sources: IntGauge,
    registrations_active: IntGaugeVec,
    registers: IntCounterVec,
    keepalives: IntCounterVec,
    media_not_latched: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    tls_certificate_expiry: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// Registers a collector. The names, HELP texts and label names are the
/// constants of this file, so a failure is a bug in this file (duplicate or
/// invalid name) that every test constructing a `Metrics` catches.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric definitions in metrics.rs are valid and unique");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric definitions in metrics.rs are valid");
    register(registry, vec)
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric definitions in metrics.rs are valid");
    register(registry, vec)
}

/// Clamps a count into an `i64` gauge value.
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A fresh registry with every family registered, `sbc_build_info` set
    /// and the uptime clock started.
    pub fn new(build: BuildInfo) -> Metrics {
        let r = Registry::new();
        let build_info = gauge_vec(
            &r,
            "sbc_build_info",
            "Always 1; the labels say which SBC version runs and whether the XDP fast path is compiled in.",
            &["version", "xdp"],
        );
        build_info
            .with_label_values(&[
                build.version.as_str(),
                if build.xdp { "true" } else { "false" },
            ])
            .set(1);
        let uptime = register(
            &r,
            Gauge::new(
                "sbc_uptime_seconds",
                "Seconds since the SBC process started its metrics registry.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let sip_messages = counter_vec(
            &r,
            "sbc_sip_messages_total",
            "SIP messages received (direction=in) and sent (direction=out) per realm; kind is the request method (extension methods count as other) or the response status class such as 2xx.",
            &["realm", "direction", "kind"],
        );
        let call_errors = counter_vec(
            &r,
            "sbc_call_errors_total",
            "Failures inside the call core that a correct run never has, per kind (build = a message the core wrote did not parse back, transaction_refused = the transaction layer refused an operation); each is also a warning in the log.",
            &["kind"],
        );
        let sip_parse_errors = counter_vec(
            &r,
            "sbc_sip_parse_errors_total",
            "SIP messages received that could not be parsed, per realm.",
            &["realm"],
        );
        let sip_retransmissions = counter_vec(
            &r,
            "sbc_sip_retransmissions_total",
            "SIP retransmissions sent or absorbed by the transaction layer, per realm; a rising rate points at packet loss or an unresponsive peer.",
            &["realm"],
        );
        let sip_transactions_active = register(
            &r,
            IntGauge::new(
                "sbc_sip_transactions_active",
                "SIP transactions currently in progress.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let overload_level = register(
            &r,
            IntGauge::new(
                "sbc_overload_level",
                "Where saturation starts: 0 normal; 1 the call core's inbound queue is a quarter full, or the media relay refused commands in the last second, and new INVITEs from untrusted sources get 503; 2 the queue is three quarters full and every new INVITE gets 503 (the transport also sheds untrusted requests from half full).",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let untrusted_calls = register(
            &r,
            IntGauge::new(
                "sbc_untrusted_calls_active",
                "Calls from sources that are neither a trunk nor in a realm's networks (capped at [limits] untrusted_calls_percent of max_calls).",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let media_not_latched = counter_vec(
            &r,
            "sbc_media_not_latched_total",
            "Call legs whose media kept coming from a source the relay may not learn after the learning window (that direction's audio is dropped), per realm of the leg.",
            &["realm"],
        );
        let registrations_active = gauge_vec(
            &r,
            "sbc_registrations_active",
            "Phones registered through the SBC, per access realm (bindings the registrar confirmed).",
            &["realm"],
        );
        let registers = counter_vec(
            &r,
            "sbc_registers_total",
            "Phones' REGISTERs per access realm and outcome: relayed to the registrar, absorbed (a refresh the SBC answered itself), refused (binding limits).",
            &["realm", "outcome"],
        );
        let keepalives = counter_vec(
            &r,
            "sbc_keepalives_total",
            "Keepalive OPTIONS to registered UDP phones: sent, and failed (unanswered: the binding was removed).",
            &["result"],
        );
        let calls_active = gauge_vec(
            &r,
            "sbc_calls_active",
            "Calls currently set up or in progress, per realm the call arrived from.",
            &["realm"],
        );
        let calls = counter_vec(
            &r,
            "sbc_calls_total",
            "Calls finished, per realm the call came from, trunk it was routed to, and outcome (answered, busy, no_answer, cancelled, rejected, failed).",
            &["from_realm", "to_trunk", "outcome"],
        );
        let call_setup = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sbc_call_setup_seconds",
                    "Time from receiving an INVITE to relaying its first 18x or 2xx response (post-dial delay as the SBC sees it).",
                )
                .buckets(CALL_SETUP_BUCKETS.to_vec()),
                &[],
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let sip_transit = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "sbc_sip_transit_seconds",
                    "Time a SIP message spent in the SBC, per kind (request, response, malformed): from its arrival (the kernel's receive timestamp for UDP; for TCP and TLS, the read that completed it) to the end of the core loop's turn that handled it, when what it caused has been sent.",
                )
                .buckets(SIP_TRANSIT_BUCKETS.to_vec()),
                &["kind"],
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let sip_transit =
            TransitKind::ALL.map(|kind| sip_transit.with_label_values(&[kind.as_str()]));
        let rejected = counter_vec(
            &r,
            "sbc_rejected_total",
            "Requests the SBC refused or dropped itself, per realm and reason (acl, rate_limit = a trunk's max_cps, admission, no_route, invalid, media_ports, rate_limited / banned = an untrusted source dropped before the parser, source_limit, scanner, foreign_in_dialog, overload, oversized).",
            &["realm", "reason"],
        );
        let media_streams_active = gauge_vec(
            &r,
            "sbc_media_streams_active",
            "Anchored media streams currently relayed, per path (xdp = in-kernel fast path, userspace = relay sockets).",
            &["path"],
        );
        let media_packets = counter_vec(
            &r,
            "sbc_media_packets_total",
            "Media (RTP/RTCP) packets relayed, per path (xdp = in-kernel fast path, counted from its maps; userspace = relay sockets) and the realm of the leg they were received on.",
            &["path", "realm"],
        );
        let media_bytes = counter_vec(
            &r,
            "sbc_media_bytes_total",
            "Media (RTP/RTCP) bytes relayed (UDP payload), per path and the realm of the leg they were received on.",
            &["path", "realm"],
        );
        let media_dropped = counter_vec(
            &r,
            "sbc_media_dropped_total",
            "Media packets dropped, per reason (unknown_flow, source_mismatch = not the latched peer, malformed, send_failed, stun = an ICE check the SBC does not answer).",
            &["reason"],
        );
        let media_ports_free = gauge_vec(
            &r,
            "sbc_media_ports_free",
            "Media ports (not RTP/RTCP pairs: a call leg takes two) not in use on each realm's media addresses, summed (recently released ones included: they go out last); realms sharing an address count its pool each. At 0 new calls are refused.",
            &["realm"],
        );
        let media_address_ports_free = gauge_vec(
            &r,
            "sbc_media_address_ports_free",
            "Media ports not in use on each media address (a realm with more_addresses has several; a call leg goes to its realm's least loaded).",
            &["address"],
        );
        let media_reserve_endpoints = gauge_vec(
            &r,
            "sbc_media_reserve_endpoints",
            "Media endpoints (an RTP/RTCP port pair) bound ahead on each media address for the next call legs, so a call's setup does not wait for the media relay; their ports count as free, not as calls.",
            &["address"],
        );
        let media_reserve_misses = register(
            &r,
            IntCounter::new(
                "sbc_media_reserve_misses_total",
                "New media streams that found no endpoint bound ahead for a leg and waited for the media relay to bind one (a burst of calls beyond the reserve, or a muxed leg).",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let media_timeouts = register(
            &r,
            IntCounter::new(
                "sbc_media_timeouts_total",
                "Calls torn down because their media stopped flowing for longer than the media timeout.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let xdp_attached = gauge_vec(
            &r,
            "sbc_xdp_attached",
            "1 for the XDP attach mode in use on each interface (native, generic, or none = userspace relay only), 0 for the others.",
            &["interface", "mode"],
        );
        let xdp_fallback = counter_vec(
            &r,
            "sbc_xdp_fallback_total",
            "Times an interface fell back one attach mode (native to generic, or to userspace relay only), per reason.",
            &["interface", "reason"],
        );
        let xdp_adopted_flows = register(
            &r,
            IntGauge::new(
                "sbc_xdp_adopted_flows",
                "Flows this process found in the pinned XDP maps at start (left by the process before a restart, for calls it does not know) and still forwards; each is removed once idle for media.inactivity_timeout_secs.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let xdp_adopted_flows_expired = register(
            &r,
            IntCounter::new(
                "sbc_xdp_adopted_flows_expired_total",
                "Adopted XDP flows (see sbc_xdp_adopted_flows) removed because their media stopped.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let draining = register(
            &r,
            IntGauge::new(
                "sbc_draining",
                "1 while the daemon drains (SIGQUIT): new calls get 503, the calls up go on, and it exits when they have ended or at drain.deadline_secs.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let trunk_up = gauge_vec(
            &r,
            "sbc_trunk_up",
            "1 if the trunk answers its OPTIONS health check (or has none), 0 if it is marked down.",
            &["trunk"],
        );
        let trunk_target_up = gauge_vec(
            &r,
            "sbc_trunk_target_up",
            "1 if this target of the trunk (its address, or one its DNS name resolved to) answers its OPTIONS health check, 0 if not.",
            &["trunk", "target"],
        );
        let trunk_calls_active = gauge_vec(
            &r,
            "sbc_trunk_calls_active",
            "Calls currently routed to each trunk.",
            &["trunk"],
        );
        let config_reloads = counter_vec(
            &r,
            "sbc_config_reload_total",
            "Configuration reloads (SIGHUP), per result; on failure the previous configuration stays in force.",
            &["result"],
        );
        let config_last_reload_success = register(
            &r,
            Gauge::new(
                "sbc_config_last_reload_success_timestamp_seconds",
                "Unix time of the last configuration load or reload that succeeded.",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let transport_dropped = counter_vec(
            &r,
            "sbc_transport_dropped_total",
            "SIP datagrams, messages or connections dropped by the transport under overload, per realm and reason (queue_full, connection_limit = a TCP connection refused by a cap, too_large, overload = an untrusted request shed unparsed while the queue into the core was more than half full, too_slow = a TCP connection closed for not completing a message in time).",
            &["realm", "reason"],
        );
        let banned_sources = register(
            &r,
            IntGauge::new(
                "sbc_banned_sources",
                "Sources banned now, every realm (bans end after ban_secs; the table holds [limits] banned_sources).",
            )
            .expect("metric definitions in metrics.rs are valid"),
        );
        let tls_handshake_failures = counter_vec(
            &r,
            "sbc_tls_handshake_failures_total",
            "TLS handshakes that failed, per realm, direction (inbound = a peer connecting to a TLS listener, outbound = the SBC connecting to a peer) and reason (timeout, untrusted_certificate, name_mismatch, expired_certificate, no_client_certificate, alert_received = the peer refused, protocol, connection_closed, not_configured).",
            &["realm", "direction", "reason"],
        );
        let tls_certificate_expiry = gauge_vec(
            &r,
            "sbc_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which a certificate in use expires, per owner (realm or trunk), its name, role (certificate = presented by the SBC, ca = trusted to verify peers; CA files of more than 8 certificates, public bundles, are left out) and the certificate's subject. Reset on every load, so only certificates in use are listed.",
            &["owner", "name", "role", "subject"],
        );
        // The clock is read here because `Metrics` lives only in the IO shell
        // (see the module docs); the scrape passes its own `now`.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        Metrics {
            registry: r,
            started,
            uptime,
            sip_messages,
            sip_parse_errors,
            sip_retransmissions,
            sip_transactions_active,
            overload_level,
            call_errors,
            untrusted_calls,
            calls_active,
            calls,
            call_setup,
            sip_transit,
            rejected,
            media_streams_active,
            media_packets,
            media_bytes,
            media_dropped,
            media_ports_free,
            media_address_ports_free,
            media_timeouts,
            media_reserve_endpoints,
            media_reserve_misses,
            xdp_attached,
            xdp_fallback,
            xdp_adopted_flows,
            xdp_adopted_flows_expired,
            draining,
            trunk_up,
            trunk_target_up,
            trunk_targets: std::sync::Mutex::default(),
            trunk_calls_active,
            config_reloads,
            config_last_reload_success,
            transport_dropped,
            banned_sources,
            registrations_active,
            registers,
            keepalives,
            media_not_latched,
            tls_handshake_failures,
            tls_certificate_expiry,
        }
    }

    /// The registry, for gathering or registering daemon-specific extras.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// When the registry was created (the zero of `sbc_uptime_seconds`).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Updates `sbc_uptime_seconds` to `now` and renders every family in the
    /// Prometheus text format 0.0.4 ([`TEXT_CONTENT_TYPE`]).
    pub fn encode_text(&self, now: Instant) -> Result<Vec<u8>, MetricsError> {
        self.uptime
            .set(now.saturating_duration_since(self.started).as_secs_f64());
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// Counts one SIP message: `sbc_sip_messages_total`.
    pub fn sip_message(&self, realm: &str, direction: Direction, kind: MessageKind) {
        self.sip_messages
            .with_label_values(&[realm, direction.as_str(), kind.as_str()])
            .inc();
    }

    /// Counts one unparseable SIP message: `sbc_sip_parse_errors_total`.
    pub fn sip_parse_error(&self, realm: &str) {
        self.sip_parse_errors.with_label_values(&[realm]).inc();
    }

    /// Counts one retransmission: `sbc_sip_retransmissions_total`.
    pub fn sip_retransmission(&self, realm: &str) {
        self.sip_retransmissions.with_label_values(&[realm]).inc();
    }

    /// Sets `sbc_sip_transactions_active` from the core's count.
    pub fn set_sip_transactions_active(&self, n: u64) {
        self.sip_transactions_active.set(gauge_value(n));
    }

    /// Counts a failure inside the call core: `sbc_call_errors_total`.
    pub fn call_error(&self, kind: &str) {
        self.call_errors.with_label_values(&[kind]).inc();
    }

    /// Sets `sbc_overload_level`.
    pub fn set_overload_level(&self, level: u8) {
        self.overload_level.set(i64::from(level));
    }

    /// Sets `sbc_untrusted_calls_active` from the core's count.
    pub fn set_untrusted_calls(&self, n: u64) {
        self.untrusted_calls.set(gauge_value(n));
    }

    /// Sets `sbc_calls_active{realm}` from the core's count.
    pub fn set_calls_active(&self, realm: &str, n: u64) {
        self.calls_active
            .with_label_values(&[realm])
            .set(gauge_value(n));
    }

    /// Counts one finished call: `sbc_calls_total`.
    pub fn call_finished(&self, from_realm: &str, to_trunk: &str, outcome: CallOutcome) {
        self.calls
            .with_label_values(&[from_realm, to_trunk, outcome.as_str()])
            .inc();
    }

    /// Observes one call's setup time (INVITE to first 18x/2xx):
    /// `sbc_call_setup_seconds`.
    pub fn call_setup(&self, elapsed: Duration) {
        self.call_setup
            .with_label_values(&[])
            .observe(elapsed.as_secs_f64());
    }

    /// Observes the time one SIP message spent in the SBC:
    /// `sbc_sip_transit_seconds{kind}`.
    pub fn sip_transit(&self, kind: TransitKind, elapsed: Duration) {
        // (`ALL` lists the kinds in declaration order: the index is the
        // discriminant.)
        self.sip_transit[kind as usize].observe(elapsed.as_secs_f64());
    }

    /// Counts a call leg whose media source was never learned:
    /// `sbc_media_not_latched_total{realm}`.
    pub fn media_not_latched(&self, realm: &str) {
        self.media_not_latched.with_label_values(&[realm]).inc();
    }

    /// Sets `sbc_registrations_active{realm}` from the core's count.
    pub fn set_registrations_active(&self, realm: &str, n: u64) {
        self.registrations_active
            .with_label_values(&[realm])
            .set(gauge_value(n));
    }

    /// Counts a phone's REGISTER: `sbc_registers_total{realm,outcome}`.
    pub fn register(&self, realm: &str, outcome: crate::b2bua::RegisterOutcome) {
        self.registers
            .with_label_values(&[realm, outcome.as_str()])
            .inc();
    }

    /// Counts a keepalive sent, or one unanswered: `sbc_keepalives_total`.
    pub fn keepalive(&self, failed: bool) {
        let result = if failed { "failed" } else { "sent" };
        self.keepalives.with_label_values(&[result]).inc();
    }

    /// Counts one request the SBC refused: `sbc_rejected_total`.
    pub fn rejected(&self, realm: &str, reason: RejectReason) {
        self.rejected
            .with_label_values(&[realm, reason.as_str()])
            .inc();
    }

    /// Creates, at zero, every series whose labels are known from the
    /// configuration, so `rate()` and `absent()` work from start-up, not
    /// from the first event: per realm, per trunk, per XDP interface and
    /// per reason, outcome or kind. Called at start-up and after a reload
    /// (existing series keep their values). `sbc_sip_messages_total` gets
    /// the methods of a call (INVITE, ACK, BYE, CANCEL, OPTIONS) and every
    /// response class.
    pub fn zero_series(&self, scope: &SeriesScope<'_>) {
        for realm in scope.realms {
            let realm = realm.as_str();
            self.sip_parse_errors.with_label_values(&[realm]);
            self.sip_retransmissions.with_label_values(&[realm]);
            self.calls_active.with_label_values(&[realm]);
            self.registrations_active.with_label_values(&[realm]);
            self.media_not_latched.with_label_values(&[realm]);
            for outcome in crate::b2bua::RegisterOutcome::ALL {
                self.registers.with_label_values(&[realm, outcome.as_str()]);
            }
            for direction in [Direction::In, Direction::Out] {
                let kinds = [
                    Method::Invite,
                    Method::Ack,
                    Method::Bye,
                    Method::Cancel,
                    Method::Options,
                ]
                .map(MessageKind::Request)
                .into_iter()
                .chain(StatusClass::ALL.map(MessageKind::Response));
                for kind in kinds {
                    self.sip_messages.with_label_values(&[
                        realm,
                        direction.as_str(),
                        kind.as_str(),
                    ]);
                }
            }
            for reason in RejectReason::ALL {
                self.rejected.with_label_values(&[realm, reason.as_str()]);
            }
            for path in [MediaPath::Xdp, MediaPath::Userspace] {
                self.media_packets
                    .with_label_values(&[path.as_str(), realm]);
                self.media_bytes.with_label_values(&[path.as_str(), realm]);
            }
            for reason in TransportDropReason::ALL {
                self.transport_dropped
                    .with_label_values(&[realm, reason.as_str()]);
            }
            if scope.tls_realms.iter().any(|r| r == realm) {
                for side in [TlsSide::Inbound, TlsSide::Outbound] {
                    for reason in TlsFailure::ALL {
                        self.tls_handshake_failures.with_label_values(&[
                            realm,
                            tls_side(side),
                            reason.as_str(),
                        ]);
                    }
                }
            }
            for trunk in scope.trunks.iter().map(String::as_str).chain(["none"]) {
                for outcome in CallOutcome::ALL {
                    self.calls
                        .with_label_values(&[realm, trunk, outcome.as_str()]);
                }
            }
        }
        for trunk in scope.trunks {
            self.trunk_calls_active.with_label_values(&[trunk.as_str()]);
        }
        for interface in scope.interfaces {
            for mode in XdpMode::ALL {
                self.xdp_attached
                    .with_label_values(&[interface.as_str(), mode.as_str()]);
            }
            for reason in XdpFallbackReason::ALL {
                self.xdp_fallback
                    .with_label_values(&[interface.as_str(), reason.as_str()]);
            }
        }
        for reason in MediaDropReason::ALL {
            self.media_dropped.with_label_values(&[reason.as_str()]);
        }
        for result in ["sent", "failed"] {
            self.keepalives.with_label_values(&[result]);
        }
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            self.config_reloads.with_label_values(&[result.as_str()]);
        }
        for kind in scope.call_error_kinds {
            self.call_errors.with_label_values(&[kind]);
        }
        for path in [MediaPath::Xdp, MediaPath::Userspace] {
            self.media_streams_active
                .with_label_values(&[path.as_str()]);
        }
        self.call_setup.with_label_values(&[]);
    }

    /// Sets `sbc_media_streams_active{path}` from the relay's count.
    pub fn set_media_streams_active(&self, path: MediaPath, n: u64) {
        self.media_streams_active
            .with_label_values(&[path.as_str()])
            .set(gauge_value(n));
    }

    /// Adds relayed media: `sbc_media_packets_total` and
    /// `sbc_media_bytes_total`, under the realm of the leg the packets were
    /// received on (so the sum over realms is everything relayed). XDP map
    /// counters are cumulative: pass the delta since the previous read.
    pub fn media_relayed(&self, path: MediaPath, realm: &str, packets: u64, bytes: u64) {
        let labels = [path.as_str(), realm];
        self.media_packets
            .with_label_values(&labels)
            .inc_by(packets);
        self.media_bytes.with_label_values(&labels).inc_by(bytes);
    }

    /// Counts dropped media packets: `sbc_media_dropped_total`.
    pub fn media_dropped(&self, reason: MediaDropReason, packets: u64) {
        self.media_dropped
            .with_label_values(&[reason.as_str()])
            .inc_by(packets);
    }

    /// Sets `sbc_media_address_ports_free{address}` from the port
    /// allocator.
    pub fn set_media_address_ports_free(&self, address: std::net::IpAddr, n: u64) {
        self.media_address_ports_free
            .with_label_values(&[&address.to_string()])
            .set(gauge_value(n));
    }

    /// Sets `sbc_media_ports_free{realm}` from the port allocator: ports
    /// (a leg takes two, RTP and RTCP) of the realm's media address.
    pub fn set_media_ports_free(&self, realm: &str, n: u64) {
        self.media_ports_free
            .with_label_values(&[realm])
            .set(gauge_value(n));
    }

    /// Counts one call torn down for media inactivity:
    /// `sbc_media_timeouts_total`.
    pub fn media_timeout(&self) {
        self.media_timeouts.inc();
    }

    /// Sets `sbc_media_reserve_endpoints{address}`: endpoints bound ahead.
    pub fn set_media_reserve_endpoints(&self, address: std::net::IpAddr, n: u64) {
        self.media_reserve_endpoints
            .with_label_values(&[&address.to_string()])
            .set(gauge_value(n));
    }

    /// Counts `n` streams that waited for the relay to bind a leg's
    /// endpoint: `sbc_media_reserve_misses_total`.
    pub fn media_reserve_missed(&self, n: u64) {
        self.media_reserve_misses.inc_by(n);
    }

    /// Records the attach mode in use on `interface`: its series for `mode`
    /// becomes 1 and the other modes' series 0 (`sbc_xdp_attached`).
    pub fn set_xdp_attached(&self, interface: &str, mode: XdpMode) {
        for m in XdpMode::ALL {
            self.xdp_attached
                .with_label_values(&[interface, m.as_str()])
                .set(i64::from(m == mode));
        }
    }

    /// Counts one fallback step on `interface`: `sbc_xdp_fallback_total`.
    pub fn xdp_fallback(&self, interface: &str, reason: XdpFallbackReason) {
        self.xdp_fallback
            .with_label_values(&[interface, reason.as_str()])
            .inc();
    }

    /// Sets `sbc_xdp_adopted_flows` and raises
    /// `sbc_xdp_adopted_flows_expired_total` to `expired` (both read from
    /// the fast path's running totals).
    pub fn set_xdp_adopted_flows(&self, held: u64, expired: u64) {
        self.xdp_adopted_flows.set(gauge_value(held));
        let seen = self.xdp_adopted_flows_expired.get();
        self.xdp_adopted_flows_expired
            .inc_by(expired.saturating_sub(seen));
    }

    /// Sets `sbc_draining`.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// Sets `sbc_trunk_up{trunk}`.
    pub fn set_trunk_up(&self, trunk: &str, up: bool) {
        self.trunk_up.with_label_values(&[trunk]).set(i64::from(up));
    }

    /// Sets `sbc_trunk_target_up{trunk,target}`.
    pub fn set_trunk_target_up(&self, trunk: &str, target: std::net::SocketAddr, up: bool) {
        let target = target.to_string();
        self.trunk_target_up
            .with_label_values(&[trunk, &target])
            .set(i64::from(up));
        let mut known = self.trunk_targets.lock().unwrap_or_else(|e| e.into_inner());
        let list = known.entry(trunk.to_owned()).or_default();
        if !list.contains(&target) {
            list.push(target);
        }
    }

    /// A trunk's targets are now `targets`: the `sbc_trunk_target_up`
    /// series of any other target of it is removed.
    pub fn set_trunk_targets(&self, trunk: &str, targets: &[std::net::SocketAddr]) {
        let keep: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let mut known = self.trunk_targets.lock().unwrap_or_else(|e| e.into_inner());
        let list = known.entry(trunk.to_owned()).or_default();
        list.retain(|target| {
            let stays = keep.contains(target);
            if !stays {
                let _ = self.trunk_target_up.remove_label_values(&[trunk, target]);
            }
            stays
        });
    }

    /// Sets `sbc_trunk_calls_active{trunk}` from the core's count.
    pub fn set_trunk_calls_active(&self, trunk: &str, n: u64) {
        self.trunk_calls_active
            .with_label_values(&[trunk])
            .set(gauge_value(n));
    }

    /// Counts one configuration reload (`sbc_config_reload_total`); on
    /// success also sets `sbc_config_last_reload_success_timestamp_seconds`
    /// to `at` (the caller's wall clock; the initial load counts as a
    /// success too).
    pub fn config_reload(&self, result: ReloadResult, at: SystemTime) {
        self.config_reloads
            .with_label_values(&[result.as_str()])
            .inc();
        if result == ReloadResult::Success {
            // A clock before 1970 exports 0 rather than failing the reload.
            let secs = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_last_reload_success.set(secs);
        }
    }

    /// Adds `n` drops to `sbc_transport_dropped_total` (the transport keeps
    /// cumulative counters: pass the delta since the last export).
    pub fn transport_dropped(&self, realm: &str, reason: TransportDropReason, n: u64) {
        self.transport_dropped
            .with_label_values(&[realm, reason.as_str()])
            .inc_by(n);
    }

    /// Adds `n` refusals to `sbc_rejected_total` (the shield keeps
    /// cumulative counters: pass the delta since the last export).
    pub fn rejected_by(&self, realm: &str, reason: RejectReason, n: u64) {
        self.rejected
            .with_label_values(&[realm, reason.as_str()])
            .inc_by(n);
    }

    /// Sets `sbc_banned_sources` from the shield's count.
    pub fn set_banned_sources(&self, n: u64) {
        self.banned_sources.set(gauge_value(n));
    }

    /// Adds `n` failed handshakes to `sbc_tls_handshake_failures_total`
    /// (the transport keeps cumulative counters: pass the delta).
    pub fn tls_handshake_failed(&self, realm: &str, side: TlsSide, reason: TlsFailure, n: u64) {
        self.tls_handshake_failures
            .with_label_values(&[realm, tls_side(side), reason.as_str()])
            .inc_by(n);
    }

    /// Replaces `sbc_tls_certificate_expiry_timestamp_seconds` with the
    /// certificates in use now (a reload's new set; old ones disappear).
    pub fn set_tls_certificates(&self, certificates: &[crate::tls::Expiry]) {
        self.tls_certificate_expiry.reset();
        for c in certificates {
            self.tls_certificate_expiry
                .with_label_values(&[c.owner.as_str(), &c.name, c.role.as_str(), &c.subject])
                .set(c.not_after);
        }
    }
}

#[cfg(test)]
mod tests;
