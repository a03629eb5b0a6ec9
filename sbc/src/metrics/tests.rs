use std::time::{Duration, UNIX_EPOCH};

use prometheus::proto::{MetricFamily, MetricType};

use super::*;

fn metrics() -> Metrics {
    Metrics::new(BuildInfo {
        version: "9.8.7".to_owned(),
        xdp: true,
    })
}

fn family(m: &Metrics, name: &str) -> MetricFamily {
    m.registry()
        .gather()
        .into_iter()
        .find(|f| f.get_name() == name)
        .unwrap_or_else(|| panic!("family {name} not gathered"))
}

/// The value of the series of `name` whose labels are exactly `labels`
/// (counter, gauge, or a histogram's sample count).
fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let fam = family(m, name);
    let metric = fam
        .get_metric()
        .iter()
        .find(|metric| {
            let got: Vec<(&str, &str)> = metric
                .get_label()
                .iter()
                .map(|l| (l.get_name(), l.get_value()))
                .collect();
            got.len() == labels.len() && labels.iter().all(|want| got.contains(want))
        })
        .unwrap_or_else(|| panic!("{name}{labels:?} has no series"));
    match fam.get_field_type() {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
        other => panic!("{name} has unexpected type {other:?}"),
    }
}

fn parse(text: &str) -> Message {
    Message::parse(text.as_bytes()).unwrap_or_else(|e| panic!("fixture does not parse: {e:?}"))
}

fn request(method: &str) -> Message {
    parse(&format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ))
}

fn response(code: u16) -> Message {
    parse(&format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>;tag=2\r\nCall-ID: c1\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))
}

#[test]
fn message_kind_of_requests_is_the_method_and_extensions_collapse() {
    for method in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "MESSAGE",
        "REFER",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
    ] {
        let kind = MessageKind::of(&request(method));
        assert_eq!(kind.as_str(), method, "kind of a {method} request");
    }
    for extension in ["FOO", "invite", "X-CUSTOM"] {
        let msg = request(extension);
        assert_eq!(MessageKind::from(&msg).as_str(), "other", "{extension}");
    }
}

#[test]
fn message_kind_of_responses_is_the_status_class() {
    for (code, class) in [
        (100, "1xx"),
        (183, "1xx"),
        (200, "2xx"),
        (302, "3xx"),
        (404, "4xx"),
        (486, "4xx"),
        (503, "5xx"),
        (603, "6xx"),
        (699, "6xx"),
    ] {
        assert_eq!(MessageKind::of(&response(code)).as_str(), class, "{code}");
    }
}

#[test]
fn status_class_bounds() {
    assert_eq!(StatusClass::of(99), StatusClass::Other);
    assert_eq!(StatusClass::of(100), StatusClass::Provisional);
    assert_eq!(StatusClass::of(199), StatusClass::Provisional);
    assert_eq!(StatusClass::of(200), StatusClass::Success);
    assert_eq!(StatusClass::of(600), StatusClass::GlobalFailure);
    assert_eq!(StatusClass::of(700), StatusClass::Other);
    assert_eq!(StatusClass::Other.as_str(), "other");
}

#[test]
fn call_outcome_from_final_status() {
    let cases = [
        (100, None),
        (180, None),
        (200, Some("answered")),
        (202, Some("answered")),
        (302, Some("rejected")),
        (404, Some("rejected")),
        (408, Some("no_answer")),
        (480, Some("no_answer")),
        (486, Some("busy")),
        (600, Some("busy")),
        (503, Some("rejected")),
        (603, Some("rejected")),
        (700, None),
    ];
    for (code, want) in cases {
        assert_eq!(
            CallOutcome::from_final_status(code).map(CallOutcome::as_str),
            want,
            "{code}"
        );
    }
    assert_eq!(CallOutcome::Cancelled.as_str(), "cancelled");
    assert_eq!(CallOutcome::Failed.as_str(), "failed");
}

#[test]
fn label_values_are_distinct_per_enum() {
    fn distinct(values: &[&str]) {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            values.len(),
            "duplicate label value in {values:?}"
        );
    }
    distinct(&[Direction::In.as_str(), Direction::Out.as_str()]);
    distinct(&[
        RejectReason::Acl.as_str(),
        RejectReason::RateLimit.as_str(),
        RejectReason::Admission.as_str(),
        RejectReason::NoRoute.as_str(),
        RejectReason::Invalid.as_str(),
        RejectReason::MediaPorts.as_str(),
        RejectReason::RateLimited.as_str(),
        RejectReason::Banned.as_str(),
        RejectReason::SourceLimit.as_str(),
        RejectReason::Scanner.as_str(),
        RejectReason::ForeignInDialog.as_str(),
        RejectReason::Overload.as_str(),
        RejectReason::Oversized.as_str(),
    ]);
    distinct(&[
        MediaDropReason::UnknownFlow.as_str(),
        MediaDropReason::SourceMismatch.as_str(),
        MediaDropReason::Malformed.as_str(),
        MediaDropReason::SendFailed.as_str(),
        MediaDropReason::Stun.as_str(),
    ]);
    distinct(&XdpMode::ALL.map(XdpMode::as_str));
    distinct(&[
        XdpFallbackReason::NotBuiltIn.as_str(),
        XdpFallbackReason::Unsupported.as_str(),
        XdpFallbackReason::PermissionDenied.as_str(),
        XdpFallbackReason::LoadFailed.as_str(),
        XdpFallbackReason::AttachFailed.as_str(),
    ]);
    distinct(&[
        TransportDropReason::QueueFull.as_str(),
        TransportDropReason::ConnectionLimit.as_str(),
        TransportDropReason::TooLarge.as_str(),
        TransportDropReason::Overload.as_str(),
        TransportDropReason::TooSlow.as_str(),
    ]);
    distinct(&[
        ReloadResult::Success.as_str(),
        ReloadResult::Failure.as_str(),
    ]);
    distinct(&[MediaPath::Xdp.as_str(), MediaPath::Userspace.as_str()]);
}

#[test]
fn build_info_is_one_with_its_labels() {
    let m = metrics();
    assert_eq!(
        value(
            &m,
            "sbc_build_info",
            &[("version", "9.8.7"), ("xdp", "true")]
        ),
        1.0
    );
    let without = Metrics::new(BuildInfo::current(false));
    assert_eq!(
        value(
            &without,
            "sbc_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("xdp", "false")]
        ),
        1.0
    );
}

#[test]
fn registries_are_isolated() {
    let a = metrics();
    let b = metrics();
    a.sip_parse_error("carrier");
    a.sip_parse_error("carrier");
    assert_eq!(
        value(&a, "sbc_sip_parse_errors_total", &[("realm", "carrier")]),
        2.0
    );
    // A vector with no series is not gathered at all.
    assert!(
        !b.registry()
            .gather()
            .iter()
            .any(|f| f.get_name() == "sbc_sip_parse_errors_total"),
        "a second Metrics saw the first one's counter"
    );
}

#[test]
fn sip_helpers() {
    let m = metrics();
    let invite = request("INVITE");
    m.sip_message("carrier", Direction::In, MessageKind::of(&invite));
    m.sip_message("carrier", Direction::In, MessageKind::of(&invite));
    m.sip_message("pbx", Direction::Out, MessageKind::of(&response(180)));
    assert_eq!(
        value(
            &m,
            "sbc_sip_messages_total",
            &[
                ("realm", "carrier"),
                ("direction", "in"),
                ("kind", "INVITE")
            ]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "sbc_sip_messages_total",
            &[("realm", "pbx"), ("direction", "out"), ("kind", "1xx")]
        ),
        1.0
    );
    m.sip_retransmission("pbx");
    assert_eq!(
        value(&m, "sbc_sip_retransmissions_total", &[("realm", "pbx")]),
        1.0
    );
    m.set_sip_transactions_active(7);
    assert_eq!(value(&m, "sbc_sip_transactions_active", &[]), 7.0);
    m.set_sip_transactions_active(u64::MAX);
    assert_eq!(
        value(&m, "sbc_sip_transactions_active", &[]),
        i64::MAX as f64,
        "a count beyond i64 clamps instead of wrapping negative"
    );
}

#[test]
fn call_helpers() {
    let m = metrics();
    m.set_calls_active("carrier", 3);
    m.set_calls_active("carrier", 2);
    assert_eq!(value(&m, "sbc_calls_active", &[("realm", "carrier")]), 2.0);
    m.call_finished("carrier", "pbx-trunk", CallOutcome::Answered);
    m.call_finished("carrier", "pbx-trunk", CallOutcome::Busy);
    m.call_finished("carrier", "pbx-trunk", CallOutcome::Busy);
    assert_eq!(
        value(
            &m,
            "sbc_calls_total",
            &[
                ("from_realm", "carrier"),
                ("to_trunk", "pbx-trunk"),
                ("outcome", "busy")
            ]
        ),
        2.0
    );
    m.rejected("access", RejectReason::RateLimit);
    assert_eq!(
        value(
            &m,
            "sbc_rejected_total",
            &[("realm", "access"), ("reason", "rate_limit")]
        ),
        1.0
    );
    m.set_trunk_up("pbx-trunk", true);
    assert_eq!(value(&m, "sbc_trunk_up", &[("trunk", "pbx-trunk")]), 1.0);
    m.set_trunk_up("pbx-trunk", false);
    assert_eq!(value(&m, "sbc_trunk_up", &[("trunk", "pbx-trunk")]), 0.0);
    m.set_trunk_calls_active("pbx-trunk", 5);
    assert_eq!(
        value(&m, "sbc_trunk_calls_active", &[("trunk", "pbx-trunk")]),
        5.0
    );
    // Per target; a target DNS no longer gives loses its series.
    let (sip, sip2) = ("192.0.2.21:5060", "192.0.2.22:5060");
    m.set_trunk_target_up("carrier", sip.parse().expect("literal"), false);
    m.set_trunk_target_up("carrier", sip2.parse().expect("literal"), true);
    let target = |t| [("trunk", "carrier"), ("target", t)];
    assert_eq!(value(&m, "sbc_trunk_target_up", &target(sip)), 0.0);
    assert_eq!(value(&m, "sbc_trunk_target_up", &target(sip2)), 1.0);
    m.set_trunk_targets("carrier", &[sip2.parse().expect("literal")]);
    assert_eq!(family(&m, "sbc_trunk_target_up").get_metric().len(), 1);
    assert_eq!(value(&m, "sbc_trunk_target_up", &target(sip2)), 1.0);
}

#[test]
fn sip_transit_is_one_histogram_per_kind_with_its_fine_buckets() {
    let m = metrics();
    let us = Duration::from_micros;
    m.sip_transit(TransitKind::Request, us(40));
    m.sip_transit(TransitKind::Request, us(900));
    m.sip_transit(TransitKind::Response, us(250));
    m.sip_transit(TransitKind::Malformed, Duration::from_secs(2));
    let fam = family(&m, "sbc_sip_transit_seconds");
    let of = |kind: &str| {
        fam.get_metric()
            .iter()
            .find(|s| s.get_label().iter().any(|l| l.get_value() == kind))
            .unwrap_or_else(|| panic!("no series of kind {kind}"))
            .get_histogram()
            .clone()
    };
    let cumulative = |h: &prometheus::proto::Histogram, le: f64| {
        h.get_bucket()
            .iter()
            .find(|b| b.get_upper_bound() == le)
            .map(|b| b.get_cumulative_count())
            .unwrap_or_else(|| panic!("no bucket {le}"))
    };
    let request = of("request");
    let bounds: Vec<f64> = request
        .get_bucket()
        .iter()
        .map(|b| b.get_upper_bound())
        .collect();
    assert_eq!(bounds, SIP_TRANSIT_BUCKETS);
    assert_eq!(request.get_sample_count(), 2);
    assert_eq!(cumulative(&request, 0.00005), 1);
    assert_eq!(cumulative(&request, 0.00075), 1);
    assert_eq!(cumulative(&request, 0.001), 2);
    let response = of("response");
    assert_eq!(response.get_sample_count(), 1);
    assert_eq!(cumulative(&response, 0.0002), 0);
    assert_eq!(cumulative(&response, 0.0003), 1);
    // Past the last bound: only in the count (the +Inf bucket).
    let malformed = of("malformed");
    assert_eq!(malformed.get_sample_count(), 1);
    assert_eq!(cumulative(&malformed, 1.0), 0);
}

#[test]
fn call_setup_histogram_uses_call_setup_buckets() {
    let m = metrics();
    m.call_setup(Duration::from_millis(5));
    m.call_setup(Duration::from_millis(300));
    m.call_setup(Duration::from_secs(45));
    let fam = family(&m, "sbc_call_setup_seconds");
    let h = fam.get_metric()[0].get_histogram();
    assert_eq!(h.get_sample_count(), 3);
    assert!(
        (h.get_sample_sum() - 45.305).abs() < 1e-9,
        "sum {}",
        h.get_sample_sum()
    );
    let bounds: Vec<f64> = h.get_bucket().iter().map(|b| b.get_upper_bound()).collect();
    assert_eq!(bounds, CALL_SETUP_BUCKETS);
    let cumulative = |le: f64| {
        h.get_bucket()
            .iter()
            .find(|b| b.get_upper_bound() == le)
            .map(|b| b.get_cumulative_count())
            .unwrap_or_else(|| panic!("no bucket {le}"))
    };
    assert_eq!(cumulative(0.01), 1);
    assert_eq!(cumulative(0.25), 1);
    assert_eq!(cumulative(0.5), 2);
    assert_eq!(cumulative(30.0), 2, "45 s is beyond the last bucket");
}

#[test]
fn media_helpers() {
    let m = metrics();
    m.set_media_streams_active(MediaPath::Xdp, 10);
    m.set_media_streams_active(MediaPath::Userspace, 2);
    assert_eq!(
        value(&m, "sbc_media_streams_active", &[("path", "xdp")]),
        10.0
    );
    assert_eq!(
        value(&m, "sbc_media_streams_active", &[("path", "userspace")]),
        2.0
    );
    m.media_relayed(MediaPath::Xdp, "carrier", 100, 17_200);
    m.media_relayed(MediaPath::Xdp, "carrier", 1, 172);
    let labels = [("path", "xdp"), ("realm", "carrier")];
    assert_eq!(value(&m, "sbc_media_packets_total", &labels), 101.0);
    assert_eq!(value(&m, "sbc_media_bytes_total", &labels), 17_372.0);
    m.media_dropped(MediaDropReason::SourceMismatch, 3);
    assert_eq!(
        value(
            &m,
            "sbc_media_dropped_total",
            &[("reason", "source_mismatch")]
        ),
        3.0
    );
    m.set_media_ports_free("carrier", 998);
    assert_eq!(
        value(&m, "sbc_media_ports_free", &[("realm", "carrier")]),
        998.0
    );
    m.set_media_address_ports_free("192.0.2.11".parse().expect("ip"), 400);
    assert_eq!(
        value(
            &m,
            "sbc_media_address_ports_free",
            &[("address", "192.0.2.11")]
        ),
        400.0
    );
    m.media_timeout();
    m.media_timeout();
    assert_eq!(value(&m, "sbc_media_timeouts_total", &[]), 2.0);
    m.set_media_reserve_endpoints("192.0.2.1".parse().expect("ip"), 16);
    m.set_media_reserve_endpoints("192.0.2.1".parse().expect("ip"), 15);
    assert_eq!(
        value(
            &m,
            "sbc_media_reserve_endpoints",
            &[("address", "192.0.2.1")]
        ),
        15.0
    );
    m.media_reserve_missed(3);
    m.media_reserve_missed(0);
    assert_eq!(value(&m, "sbc_media_reserve_misses_total", &[]), 3.0);
}

#[test]
fn xdp_attached_marks_exactly_one_mode() {
    let m = metrics();
    m.set_xdp_attached("eth0", XdpMode::Native);
    m.set_xdp_attached("eth0", XdpMode::Generic);
    let mode = |mode: &str| {
        value(
            &m,
            "sbc_xdp_attached",
            &[("interface", "eth0"), ("mode", mode)],
        )
    };
    assert_eq!(
        (mode("native"), mode("generic"), mode("none")),
        (0.0, 1.0, 0.0)
    );
    m.xdp_fallback("eth0", XdpFallbackReason::Unsupported);
    assert_eq!(
        value(
            &m,
            "sbc_xdp_fallback_total",
            &[("interface", "eth0"), ("reason", "unsupported")]
        ),
        1.0
    );
}

#[test]
fn config_reload_counts_and_stamps_only_successes() {
    let m = metrics();
    m.config_reload(
        ReloadResult::Success,
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    m.config_reload(
        ReloadResult::Failure,
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    assert_eq!(
        value(&m, "sbc_config_reload_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        value(&m, "sbc_config_reload_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        value(&m, "sbc_config_last_reload_success_timestamp_seconds", &[]),
        1_700_000_000.0,
        "a failed reload must not move the success timestamp"
    );
}

#[test]
fn transport_dropped_helper() {
    let m = metrics();
    m.transport_dropped("carrier", TransportDropReason::QueueFull, 1);
    assert_eq!(
        value(
            &m,
            "sbc_transport_dropped_total",
            &[("realm", "carrier"), ("reason", "queue_full")]
        ),
        1.0
    );
}

#[test]
fn encode_text_sets_uptime_and_has_help_for_every_family() {
    let m = metrics();
    m.sip_parse_error("carrier");
    let text = m
        .encode_text(m.started() + Duration::from_millis(2500))
        .unwrap_or_else(|e| panic!("encode: {e}"));
    let text = String::from_utf8(text).unwrap_or_else(|e| panic!("not UTF-8: {e}"));
    assert!(text.contains("\nsbc_uptime_seconds 2.5\n"), "{text}");
    assert!(
        text.contains("sbc_sip_parse_errors_total{realm=\"carrier\"} 1\n"),
        "{text}"
    );
    for fam in m.registry().gather() {
        assert!(
            text.contains(&format!("# HELP {} ", fam.get_name())),
            "no HELP for {}",
            fam.get_name()
        );
        assert!(
            fam.get_help().len() > 20,
            "{} has a terse HELP",
            fam.get_name()
        );
    }
    // A clock that went backwards reads as zero uptime, not a panic.
    let earlier = m.started().checked_sub(Duration::from_secs(1));
    if let Some(earlier) = earlier {
        let text = m
            .encode_text(earlier)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("\nsbc_uptime_seconds 0\n"), "{text}");
    }
}

#[test]
fn every_family_is_present_from_start_up() {
    // After zero_series, every family has a series (at zero), so rate()
    // and absent() alerts work before the first event. The exception is
    // set by the daemon's first one-second tick, where 0 would be a false
    // alarm.
    const SET_ON_THE_FIRST_TICK: [&str; 3] = [
        "sbc_media_ports_free",
        "sbc_media_address_ports_free",
        "sbc_media_reserve_endpoints",
    ];
    let m = metrics();
    let realms = ["outside".to_owned(), "inside".to_owned()];
    let trunks = ["pbx".to_owned()];
    let interfaces = ["eth0".to_owned()];
    m.zero_series(&SeriesScope {
        tls_realms: &[],
        realms: &realms,
        trunks: &trunks,
        interfaces: &interfaces,
        call_error_kinds: &["build"],
    });
    let empty: Vec<String> = m
        .registry()
        .gather()
        .into_iter()
        .filter(|f| f.get_metric().is_empty())
        .map(|f| f.get_name().to_owned())
        .filter(|name| !SET_ON_THE_FIRST_TICK.contains(&name.as_str()))
        .collect();
    assert!(
        empty.is_empty(),
        "families without a series at start-up: {empty:?}"
    );
    // At zero, and every reason of a realm is there.
    assert_eq!(
        value(
            &m,
            "sbc_rejected_total",
            &[("realm", "inside"), ("reason", "banned")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "sbc_calls_total",
            &[
                ("from_realm", "outside"),
                ("to_trunk", "pbx"),
                ("outcome", "answered")
            ]
        ),
        0.0
    );
    // A second call (a reload) keeps what was counted.
    m.rejected("inside", RejectReason::Banned);
    m.zero_series(&SeriesScope {
        tls_realms: &[],
        realms: &realms,
        trunks: &trunks,
        interfaces: &interfaces,
        call_error_kinds: &["build"],
    });
    assert_eq!(
        value(
            &m,
            "sbc_rejected_total",
            &[("realm", "inside"), ("reason", "banned")]
        ),
        1.0
    );
}

#[test]
fn the_all_lists_hold_every_label_value() {
    // Exhaustive matches: a new variant fails to compile here until it is
    // given a place, and the place must be its index in ALL.
    let reject = |r: RejectReason| match r {
        RejectReason::Acl => 0,
        RejectReason::RateLimit => 1,
        RejectReason::Admission => 2,
        RejectReason::NoRoute => 3,
        RejectReason::Invalid => 4,
        RejectReason::MediaPorts => 5,
        RejectReason::RateLimited => 6,
        RejectReason::Banned => 7,
        RejectReason::SourceLimit => 8,
        RejectReason::Scanner => 9,
        RejectReason::ForeignInDialog => 10,
        RejectReason::Overload => 11,
        RejectReason::Oversized => 12,
    };
    for (i, r) in RejectReason::ALL.into_iter().enumerate() {
        assert_eq!(reject(r), i, "{r:?}");
    }
    let transport = |r: TransportDropReason| match r {
        TransportDropReason::QueueFull => 0,
        TransportDropReason::ConnectionLimit => 1,
        TransportDropReason::TooLarge => 2,
        TransportDropReason::Overload => 3,
        TransportDropReason::TooSlow => 4,
    };
    for (i, r) in TransportDropReason::ALL.into_iter().enumerate() {
        assert_eq!(transport(r), i, "{r:?}");
    }
    let media = |r: MediaDropReason| match r {
        MediaDropReason::UnknownFlow => 0,
        MediaDropReason::SourceMismatch => 1,
        MediaDropReason::Malformed => 2,
        MediaDropReason::SendFailed => 3,
        MediaDropReason::Stun => 4,
    };
    for (i, r) in MediaDropReason::ALL.into_iter().enumerate() {
        assert_eq!(media(r), i, "{r:?}");
    }
    let outcome = |o: CallOutcome| match o {
        CallOutcome::Answered => 0,
        CallOutcome::Busy => 1,
        CallOutcome::NoAnswer => 2,
        CallOutcome::Cancelled => 3,
        CallOutcome::Rejected => 4,
        CallOutcome::Failed => 5,
    };
    for (i, o) in CallOutcome::ALL.into_iter().enumerate() {
        assert_eq!(outcome(o), i, "{o:?}");
    }
    let fallback = |r: XdpFallbackReason| match r {
        XdpFallbackReason::NotBuiltIn => 0,
        XdpFallbackReason::Unsupported => 1,
        XdpFallbackReason::PermissionDenied => 2,
        XdpFallbackReason::LoadFailed => 3,
        XdpFallbackReason::AttachFailed => 4,
    };
    for (i, r) in XdpFallbackReason::ALL.into_iter().enumerate() {
        assert_eq!(fallback(r), i, "{r:?}");
    }
}

#[test]
fn tls_failures_count_by_reason_and_certificates_are_replaced_on_each_load() {
    let m = metrics();
    m.zero_series(&SeriesScope {
        tls_realms: &["outside".to_owned()],
        realms: &["outside".to_owned(), "inside".to_owned()],
        trunks: &[],
        interfaces: &[],
        call_error_kinds: &[],
    });
    let series = |direction, reason| {
        value(
            &m,
            "sbc_tls_handshake_failures_total",
            &[
                ("realm", "outside"),
                ("direction", direction),
                ("reason", reason),
            ],
        )
    };
    // Present from start-up for realms with TLS, every reason both ways.
    assert_eq!(series("inbound", "timeout"), 0.0);
    assert_eq!(series("outbound", "name_mismatch"), 0.0);
    m.tls_handshake_failed(
        "outside",
        crate::transport::TlsSide::Outbound,
        crate::transport::TlsFailure::NameMismatch,
        3,
    );
    assert_eq!(series("outbound", "name_mismatch"), 3.0);
    let fam = family(&m, "sbc_tls_handshake_failures_total");
    assert!(
        fam.get_metric()
            .iter()
            .all(|s| s.get_label().iter().all(|l| l.get_value() != "inside")),
        "a realm without TLS has no handshake series"
    );

    let cert = |subject: &str, not_after| crate::tls::Expiry {
        owner: crate::tls::Owner::Realm,
        name: "outside".to_owned(),
        role: crate::tls::Role::Certificate,
        subject: subject.to_owned(),
        not_after,
    };
    let name = "sbc_tls_certificate_expiry_timestamp_seconds";
    m.set_tls_certificates(&[cert("old.example.net", 1_700_000_000)]);
    let labels = |subject| {
        [
            ("owner", "realm"),
            ("name", "outside"),
            ("role", "certificate"),
            ("subject", subject),
        ]
    };
    assert_eq!(value(&m, name, &labels("old.example.net")), 1.7e9);
    // A reload with a renewed certificate: only the new one is listed.
    m.set_tls_certificates(&[cert("new.example.net", 1_800_000_000)]);
    assert_eq!(value(&m, name, &labels("new.example.net")), 1.8e9);
    assert_eq!(family(&m, name).get_metric().len(), 1);
}
