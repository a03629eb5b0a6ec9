//! SIP over TLS through the real daemon (issue 14 part 1): a TLS caller
//! through a TLS listener to a UDP trunk, a UDP caller to a TLS trunk,
//! mutual TLS both ways, refusals counted by reason, a stalled handshake
//! that blocks nobody, and a certificate changed by SIGHUP under a call.
//!
//! The CAs and certificates are made by the test itself (`tests::pki`)
//! into the lab's directory; the TLS peers are `tests::tls_peer` (the
//! packaged SIPp has no TLS), the UDP ones SIPp. Everything runs in the
//! lab's network (a private loopback-only namespace where possible).
//!
//! Who is who (slot n): the realm `outside` listens on 127.0.n.1:5060 (UDP,
//! TCP) and 127.0.n.1:5061 (TLS, certificate "sbc.test" from CA "Sbc",
//! client certificates from CA "Clients" required); trunk `carrier` is a
//! TLS peer on 127.0.n.4:5061 ("carrier.test" from CA "Carrier"), trunk
//! `pbx` a SIPp peer on 127.0.n.3:5060 over UDP.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::lab::{Host, Lab, LabConfig, Plan, Realm};
use tests::netns::{skip_unless_sipp, skip_unless_tool};
use tests::pki::{Ca, Issued};
use tests::tls_peer::{self, Caller, SipStream, header, method, respond, status};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::dns::{DNS_PORT, TTL, dnsmasq_serving};

const TLS_PORT: u16 = 5061;

/// The wall clock: an e2e test waits on real time.
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}
const WAIT: Duration = Duration::from_secs(5);

/// The lab's PKI: what the SBC presents, what it trusts, and the peers'.
struct Pki {
    sbc_ca: Ca,
    sbc: Issued,
    clients_ca: Ca,
    caller: Issued,
    carrier_ca: Ca,
    carrier: Issued,
}

impl Pki {
    fn new(dir: &Path, plan: &Plan) -> Pki {
        let outside = plan.realm_ip(Realm::Outside).to_string();
        let sbc_ca = Ca::new(dir, "Sbc");
        let sbc = sbc_ca.issue("sbc", &["sbc.test", &outside]);
        let clients_ca = Ca::new(dir, "Clients");
        let caller = clients_ca.issue("caller", &["caller.test"]);
        let carrier_ca = Ca::new(dir, "Carrier");
        let carrier = carrier_ca.issue("carrier", &["carrier.test"]);
        Pki {
            sbc_ca,
            sbc,
            clients_ca,
            caller,
            carrier_ca,
            carrier,
        }
    }
}

/// The lab's configuration with the TLS listener on `outside` and the
/// carrier trunk over TLS.
fn tls_toml(plan: &Plan, pki: &Pki, extra_limits: &str) -> String {
    let outside = plan.realm(Realm::Outside);
    let tls_listener = SocketAddr::new(outside.ip(), TLS_PORT);
    let carrier = plan.host(Host::Carrier);
    let carrier_tls = SocketAddr::new(carrier.ip(), TLS_PORT);
    let toml = plan.toml(&LabConfig::default());
    let edits = [
        (
            "[limits]\nmax_calls = 20\n".to_owned(),
            format!("[limits]\nmax_calls = 20\n{extra_limits}"),
        ),
        (
            format!(
                "  {{ transport = \"tcp\", address = \"{outside}\" }},\n]\nmedia = {{ address = \"{}\" }}\n",
                outside.ip()
            ),
            format!(
                "  {{ transport = \"tcp\", address = \"{outside}\" }},\n  \
                 {{ transport = \"tls\", address = \"{tls_listener}\" }},\n]\n\
                 media = {{ address = \"{}\" }}\n\
                 tls = {{ certificate = {:?}, private_key = {:?}, ca = {:?}, require_client_certificate = true }}\n",
                outside.ip(),
                pki.sbc.certificate,
                pki.sbc.private_key,
                pki.clients_ca.path,
            ),
        ),
        (
            format!("address = \"{carrier}\"\ntransport = \"udp\"\n"),
            format!(
                "address = \"{carrier_tls}\"\ntransport = \"tls\"\n\
                 tls = {{ ca = {:?}, server_name = \"carrier.test\" }}\n",
                pki.carrier_ca.path
            ),
        ),
    ];
    let mut toml = toml;
    for (from, to) in edits {
        assert!(
            toml.contains(&from),
            "the lab config lacks {from:?}:\n{toml}"
        );
        toml = toml.replacen(&from, &to, 1);
    }
    toml
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// What the TLS callee saw.
#[derive(Default)]
struct CalleeLog {
    messages: Vec<String>,
    /// Whether the SBC presented a client certificate.
    client_certificate: bool,
}

/// A TLS callee on `addr` (the carrier): answers INVITEs 200 with SDP,
/// BYEs 200; requires a client certificate from `client_ca` when given.
/// Serves every connection until the runtime ends.
fn start_tls_callee(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    server: &Issued,
    client_ca: Option<&Path>,
) -> Arc<Mutex<CalleeLog>> {
    let log = Arc::new(Mutex::new(CalleeLog::default()));
    let listener = lab.net().tcp_listener(addr);
    listener.set_nonblocking(true).expect("nonblocking");
    let acceptor = TlsAcceptor::from(tls_peer::server_config(server, client_ca));
    let shared = Arc::clone(&log);
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = Arc::clone(&shared);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                log.lock().expect("log").client_certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                serve_as_callee(&mut SipStream::new(tls), addr, &log).await;
            });
        }
    });
    log
}

/// Waits, up to [`WAIT`], for the callee to have read a BYE. The SBC
/// answers the caller's BYE and relays it in one step, so the caller's SIPp
/// may be done before the BYE has crossed the TLS connection.
fn wait_for_bye(log: &Mutex<CalleeLog>) {
    let deadline = now() + WAIT;
    while now() < deadline
        && !log
            .lock()
            .expect("log")
            .messages
            .iter()
            .any(|m| method(m) == Some("BYE"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Answers what comes over `sip` as a callee at `addr` would: INVITEs 100
/// then 200 with SDP, BYEs and OPTIONS 200; logs every message; returns
/// when the connection is quiet for 30 s or closes.
async fn serve_as_callee<S>(sip: &mut SipStream<S>, addr: SocketAddr, log: &Mutex<CalleeLog>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let ip = addr.ip().to_string();
    let contact = format!("sip:callee@{addr};transport=tls");
    while let Some(message) = sip.recv(Duration::from_secs(30)).await {
        log.lock().expect("log").messages.push(message.clone());
        let answer = match method(&message) {
            Some("INVITE") => {
                sip.send(&respond(&message, 100, "callee", &contact, None))
                    .await;
                respond(&message, 200, "callee", &contact, Some((&ip, 16000)))
            }
            Some("BYE" | "OPTIONS") => respond(&message, 200, "callee", &contact, None),
            _ => continue,
        };
        sip.send(&answer).await;
    }
}

/// A TLS connection from `from` to the SBC's TLS listener, presenting
/// `client`; `Err` with the reason when the handshake fails.
async fn connect_tls(
    lab: &Lab,
    pki: &Pki,
    from: IpAddr,
    client: Option<&Issued>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let to = SocketAddr::new(lab.plan().realm_ip(Realm::Outside), TLS_PORT);
    let tcp = lab.net().tcp_connect(from, to)?;
    tcp.set_nonblocking(true)?;
    let tcp = TcpStream::from_std(tcp)?;
    let connector = TlsConnector::from(tls_peer::client_config(&pki.sbc_ca.path, client));
    let name = rustls::pki_types::ServerName::try_from("sbc.test").expect("a DNS name");
    connector.connect(name, tcp).await
}

/// Places a call over `sip` up to its ACK; returns the dialog.
async fn call_up<S>(sip: &mut SipStream<S>, local: SocketAddr, plan: &Plan, id: &str) -> Caller
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let outside = plan.realm_ip(Realm::Outside);
    // A SIPS Request-URI: the caller asks for TLS to the SBC.
    let target = format!("sips:service@{outside}:{TLS_PORT}");
    let mut caller = Caller::new(&local.to_string(), &target, id);
    sip.send(&caller.invite((&local.ip().to_string(), 17000)))
        .await;
    loop {
        let response = sip
            .recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("{id}: no final response to the INVITE"));
        match status(&response) {
            Some(code) if code < 200 => continue,
            Some(200) => {
                assert!(
                    header(&response, "Contact").is_some_and(|c| c.contains("transport=tls")),
                    "{id}: the SBC's Contact says transport=tls:\n{response}"
                );
                assert!(
                    header(&response, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TLS ")),
                    "{id}: our own Via comes back:\n{response}"
                );
                caller.answered(&response);
                break;
            }
            other => panic!("{id}: INVITE answered {other:?}:\n{response}"),
        }
    }
    sip.send(&caller.ack()).await;
    caller
}

/// Ends the call with a BYE over `sip` and checks its 200.
async fn hang_up<S>(sip: &mut SipStream<S>, caller: &mut Caller, id: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    sip.send(&caller.bye()).await;
    loop {
        let response = sip
            .recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("{id}: no answer to the BYE"));
        if header(&response, "CSeq").is_some_and(|c| c.ends_with("BYE")) {
            assert_eq!(status(&response), Some(200), "{id}: {response}");
            return;
        }
    }
}

/// The value of the metric series `series` (name with its labels, in the
/// exposition's order), once it reaches at least `min` (polled for 5 s:
/// transport counters are exported each second); panics with the scrape.
fn metric_at_least(lab: &Lab, series: &str, min: f64) -> f64 {
    let deadline = now() + WAIT;
    loop {
        let body = lab
            .admin_get("/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
        if value.is_some_and(|v| v >= min) {
            return value.unwrap_or_default();
        }
        assert!(
            now() < deadline,
            "{series} did not reach {min} (got {value:?}):\n{}",
            body.lines()
                .filter(|l| l.contains("tls"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn failures(realm: &str, direction: &str, reason: &str) -> String {
    format!(
        "sbc_tls_handshake_failures_total{{direction=\"{direction}\",realm=\"{realm}\",reason=\"{reason}\"}}"
    )
}

#[test]
fn tls_calls_cross_both_ways_with_mutual_tls() {
    if skip_unless_sipp("tls_calls_cross_both_ways_with_mutual_tls") {
        return;
    }
    let TlsLab {
        plan,
        scratch,
        pki,
        lab,
        rt,
    } = TlsLab::start("tls-both", "");

    // A UDP caller (the PBX) reaches the TLS carrier, which insists on
    // the SBC's client certificate.
    let carrier = SocketAddr::new(plan.host_ip(Host::Carrier), TLS_PORT);
    let callee = start_tls_callee(&lab, &rt, carrier, &pki.carrier, Some(&pki.sbc_ca.path));
    let uac = lab
        .peer("caller.xml", Host::Pbx)
        .remote(plan.realm(Realm::Inside))
        .run();
    uac.assert_success(1);
    wait_for_bye(&callee);
    {
        let log = callee.lock().expect("log");
        let invite = log
            .messages
            .iter()
            .find(|m| method(m) == Some("INVITE"))
            .unwrap_or_else(|| panic!("no INVITE reached the TLS carrier"));
        let outside = plan.realm_ip(Realm::Outside);
        assert!(
            header(invite, "Via")
                .is_some_and(|v| v.starts_with(&format!("SIP/2.0/TLS {outside}:{TLS_PORT};"))),
            "{invite}"
        );
        assert!(
            header(invite, "Contact").is_some_and(|c| c.contains("transport=tls")),
            "{invite}"
        );
        assert!(
            log.messages.iter().any(|m| method(m) == Some("ACK"))
                && log.messages.iter().any(|m| method(m) == Some("BYE")),
            "the dialog went on over the same connection: {:#?}",
            log.messages
        );
        assert!(log.client_certificate, "the SBC presented its certificate");
    }

    // A TLS caller with a client certificate reaches the UDP PBX.
    let uas = lab.start_callee(&lab.peer("callee.xml", Host::Pbx));
    let from = plan.spare_ip(0);
    rt.block_on(async {
        let tls = connect_tls(&lab, &pki, from, Some(&pki.caller))
            .await
            .expect("handshake with a client certificate");
        let local = tls.get_ref().0.local_addr().expect("local address");
        let mut sip = SipStream::new(tls);
        let mut caller = call_up(&mut sip, local, &plan, "tls-in").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        hang_up(&mut sip, &mut caller, "tls-in").await;
    });
    let uas = lab.finish_callee(&uac, uas);
    uas.assert_success(1);
    assert!(
        uas.messages.contains("Via: SIP/2.0/UDP ") && !uas.messages.contains("TLS"),
        "the PBX sees UDP only:\n{}",
        uas.report()
    );

    for (realm, direction) in [("outside", "inbound"), ("outside", "outbound")] {
        assert_eq!(
            metric_at_least(
                &lab,
                &failures(realm, direction, "untrusted_certificate"),
                0.0
            ),
            0.0
        );
    }
    let expiry = "sbc_tls_certificate_expiry_timestamp_seconds{name=\"outside\",owner=\"realm\",role=\"certificate\",subject=\"sbc.test\"}";
    assert!(metric_at_least(&lab, expiry, 1.0) > 1.7e9);
    finish(rt, lab, scratch);
}

#[test]
fn untrusted_misnamed_certificateless_and_stalled_peers_are_refused_and_counted() {
    if skip_unless_sipp("untrusted_misnamed_certificateless_and_stalled_peers") {
        return;
    }
    let TlsLab {
        plan,
        scratch,
        pki,
        lab,
        rt,
    } = TlsLab::start("tls-refused", "tcp_message_timeout_secs = 2\n");
    let carrier = SocketAddr::new(plan.host_ip(Host::Carrier), TLS_PORT);

    // The carrier presents a certificate from a CA the trunk does not
    // trust: the call fails at once (no route left) and is counted.
    let rogue = Ca::new(&scratch, "Rogue").issue("rogue", &["carrier.test"]);
    let listener = lab.net().tcp_listener(carrier);
    let serve = |listener: std::net::TcpListener, server: Issued| {
        listener.set_nonblocking(true).expect("nonblocking");
        let acceptor = TlsAcceptor::from(tls_peer::server_config(&server, None));
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let mut sip = SipStream::new(tls);
                        while sip.recv(Duration::from_secs(10)).await.is_some() {}
                    }
                });
            }
        })
    };
    let task = serve(listener, rogue);
    let uac = lab
        .peer("caller-rejected.xml", Host::Pbx)
        .remote(plan.realm(Realm::Inside))
        .run();
    uac.assert_success(1);
    assert!(uac.messages.contains("SIP/2.0 503"), "{}", uac.report());
    metric_at_least(
        &lab,
        &failures("outside", "outbound", "untrusted_certificate"),
        1.0,
    );
    task.abort();

    // The right CA, the wrong name.
    let misnamed = pki.carrier_ca.issue("misnamed", &["other.test"]);
    // The aborted task's listener closes once the task is dropped.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    let task = serve(lab.net().tcp_listener(carrier), misnamed);
    let uac = lab
        .peer("caller-rejected.xml", Host::Pbx)
        .remote(plan.realm(Realm::Inside))
        .run();
    uac.assert_success(1);
    metric_at_least(&lab, &failures("outside", "outbound", "name_mismatch"), 1.0);
    task.abort();

    rt.block_on(async {
        // A client without a certificate, and one whose certificate no
        // trusted CA issued, get nothing through.
        let untrusted_client = Ca::new(&scratch, "Strangers").issue("stranger", &["stranger.test"]);
        for (i, client) in [None, Some(&untrusted_client)].into_iter().enumerate() {
            let from = plan.spare_ip(1 + i as u8);
            if let Ok(tls) = connect_tls(&lab, &pki, from, client).await {
                // TLS 1.3: the client finishes first; the server's refusal
                // arrives as an alert instead of an answer.
                let mut sip = SipStream::new(tls);
                let local = sip.get_ref().get_ref().0.local_addr().expect("local");
                let mut caller =
                    Caller::new(&local.to_string(), "sips:service@sbc.test", "refused");
                sip.send(&caller.invite((&from.to_string(), 17000))).await;
                assert_eq!(sip.recv(Duration::from_secs(2)).await, None);
            }
        }
    });
    metric_at_least(
        &lab,
        &failures("outside", "inbound", "no_client_certificate"),
        1.0,
    );
    metric_at_least(
        &lab,
        &failures("outside", "inbound", "untrusted_certificate"),
        1.0,
    );

    // A peer that connects and never handshakes holds one connection: a
    // good client handshakes and is answered meanwhile; the stalled one
    // is closed after the message timeout (2 s) and counted.
    let to = SocketAddr::new(plan.realm_ip(Realm::Outside), TLS_PORT);
    let stalled = lab
        .net()
        .tcp_connect(plan.spare_ip(5), to)
        .expect("connect the stalled peer");
    let started = now();
    rt.block_on(async {
        let tls = connect_tls(&lab, &pki, plan.spare_ip(6), Some(&pki.caller))
            .await
            .expect("a good handshake beside the stalled one");
        let local = tls.get_ref().0.local_addr().expect("local");
        let mut sip = SipStream::new(tls);
        let mut caller = Caller::new(&local.to_string(), &format!("sip:{to}"), "probe");
        let options = caller
            .invite((&local.ip().to_string(), 17000))
            .replacen("INVITE", "OPTIONS", 1)
            .replace("1 INVITE", "1 OPTIONS");
        sip.send(&options).await;
        let answer = sip.recv(WAIT).await.expect("the SBC answers OPTIONS");
        assert_eq!(status(&answer), Some(200), "{answer}");
    });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the good client waited for the stalled one: {:?}",
        started.elapsed()
    );
    metric_at_least(&lab, &failures("outside", "inbound", "timeout"), 1.0);
    drop(stalled);
    finish(rt, lab, scratch);
}

#[test]
fn a_certificate_changed_by_sighup_reaches_new_handshakes_and_the_call_stays_up() {
    if skip_unless_sipp("a_certificate_changed_by_sighup") {
        return;
    }
    let TlsLab {
        plan,
        scratch,
        pki,
        mut lab,
        rt,
    } = TlsLab::start("tls-reload", "");
    let uas = lab.start_callee(
        &lab.peer("callee.xml", Host::Pbx)
            .timeout(Duration::from_secs(30)),
    );
    let presented = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    };
    let der = |path: &Path| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(path)
            .expect("certificate PEM")
            .as_ref()
            .to_vec()
    };
    let old_der = der(&pki.sbc.certificate);
    let (mut sip, mut caller) = rt.block_on(async {
        let tls = connect_tls(&lab, &pki, plan.spare_ip(0), Some(&pki.caller))
            .await
            .expect("handshake");
        assert_eq!(presented(&tls), old_der);
        let local = tls.get_ref().0.local_addr().expect("local");
        let mut sip = SipStream::new(tls);
        let caller = call_up(&mut sip, local, &plan, "reload").await;
        (sip, caller)
    });

    // The certificate renewed in place (same files, new certificate), and
    // the daemon told.
    let outside = plan.realm_ip(Realm::Outside).to_string();
    let renewed = pki.sbc_ca.issue_leaf(&tests::pki::Leaf {
        stem: "sbc",
        common_name: "sbc-renewed.test",
        names: &["sbc.test", &outside],
        validity: None,
    });
    assert_eq!(renewed, pki.sbc);
    let new_der = der(&pki.sbc.certificate);
    assert_ne!(new_der, old_der);
    lab.sighup();
    let expiry = "sbc_tls_certificate_expiry_timestamp_seconds{name=\"outside\",owner=\"realm\",role=\"certificate\",subject=\"sbc-renewed.test\"}";
    metric_at_least(&lab, expiry, 1.0);

    rt.block_on(async {
        // A new handshake gets the new certificate...
        let tls = connect_tls(&lab, &pki, plan.spare_ip(1), Some(&pki.caller))
            .await
            .expect("handshake after the reload");
        assert_eq!(presented(&tls), new_der);
    });

    // A key that is not the certificate's: the reload is refused and the
    // running certificate stays.
    let stray = Ca::new(&scratch, "Stray").issue("stray", &["stray.test"]);
    std::fs::copy(&stray.private_key, &pki.sbc.private_key).expect("replace the key");
    lab.sighup();
    metric_at_least(&lab, "sbc_config_reload_total{result=\"failure\"}", 1.0);
    rt.block_on(async {
        let tls = connect_tls(&lab, &pki, plan.spare_ip(2), Some(&pki.caller))
            .await
            .expect("handshake after the refused reload");
        assert_eq!(presented(&tls), new_der);
        // ...and the call on the old connection is still up: its BYE goes
        // through and is answered.
        hang_up(&mut sip, &mut caller, "reload").await;
    });
    let uas = uas.wait();
    uas.assert_success(1);
    assert_eq!(uas.requests("BYE"), 1, "{}", uas.report());
    assert!(
        lab.daemon_stderr().contains("configuration reloaded"),
        "{}",
        lab.daemon_stderr()
    );
    finish(rt, lab, scratch);
}

/// A TLS trunk given by a domain (RFC 3263 with RFC 5922 names): NAPTR
/// `SIPS+D2T` -> `_sips._tcp` SRV with two targets; the first refuses the
/// connection, the second is the TLS carrier, whose certificate names the
/// domain only (not the SRV target host, not its address). The call from
/// the UDP PBX reaches it, with the SBC's client certificate.
#[test]
fn a_tls_trunk_found_by_dns_fails_over_and_is_verified_against_its_domain() {
    let name = "a_tls_trunk_found_by_dns_fails_over_and_is_verified_against_its_domain";
    if skip_unless_sipp(name)
        || skip_unless_tool(name, "dnsmasq", "--version", "apt-get install dnsmasq-base")
    {
        return;
    }
    const DOMAIN: &str = "carrier.sbc-lab.test";
    let plan = Plan::next();
    let scratch = tempdir("tls-dns", &plan);
    let mut pki = Pki::new(&scratch, &plan);
    pki.carrier = pki.carrier_ca.issue("carrier-dns", &[DOMAIN]);
    let carrier_tls = SocketAddr::new(plan.host_ip(Host::Carrier), TLS_PORT);
    let fixed = format!(
        "address = \"{carrier_tls}\"\ntransport = \"tls\"\n\
         tls = {{ ca = {:?}, server_name = \"carrier.test\" }}\n",
        pki.carrier_ca.path
    );
    let toml = tls_toml(&plan, &pki, "");
    assert!(toml.contains(&fixed), "{toml}");
    let dns = SocketAddr::new(plan.realm_ip(Realm::Outside), DNS_PORT);
    let toml = format!(
        "[dns]\nservers = [\"{dns}\"]\n\n{}",
        toml.replacen(
            &fixed,
            &format!(
                "address = \"{DOMAIN}\"\ntls = {{ ca = {:?} }}\n",
                pki.carrier_ca.path
            ),
            1
        )
    );
    let mut lab = Lab::peers_only_with("tls-dns", plan);
    let down = plan.spare_ip(5);
    let records = [
        format!("--naptr-record={DOMAIN},10,10,S,SIPS+D2T,,_sips._tcp.{DOMAIN}"),
        format!("--srv-host=_sips._tcp.{DOMAIN},first.sbc-lab.test,{TLS_PORT},10,10"),
        format!("--srv-host=_sips._tcp.{DOMAIN},second.sbc-lab.test,{TLS_PORT},20,10"),
        format!("--host-record=first.sbc-lab.test,{down},{TTL}"),
        format!(
            "--host-record=second.sbc-lab.test,{},{TTL}",
            carrier_tls.ip()
        ),
    ];
    let _dns = dnsmasq_serving(&lab, dns, &records, "dnsmasq-tls.log");
    lab.start_daemon(&toml);
    let deadline = now() + Duration::from_secs(10);
    while !lab.daemon_stderr().contains("trunk resolved") {
        assert!(
            now() < deadline,
            "the carrier did not resolve within 10 s\n{}",
            lab.daemon_stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resolved = lab.daemon_stderr();
    assert!(
        resolved.contains(&format!("tls {down}:{TLS_PORT}"))
            && resolved.contains(&format!("tls {carrier_tls}")),
        "both SRV targets, over TLS:\n{resolved}"
    );

    let rt = runtime();
    let callee = start_tls_callee(&lab, &rt, carrier_tls, &pki.carrier, Some(&pki.sbc_ca.path));
    let uac = lab
        .peer("caller.xml", Host::Pbx)
        .remote(plan.realm(Realm::Inside))
        .run();
    uac.assert_success(1);
    wait_for_bye(&callee);
    {
        let log = callee.lock().expect("log");
        assert!(
            log.messages.iter().any(|m| method(m) == Some("INVITE"))
                && log.messages.iter().any(|m| method(m) == Some("BYE")),
            "the call reached the second target over TLS: {:#?}",
            log.messages
        );
        assert!(log.client_certificate, "the SBC presented its certificate");
    }
    let log = lab.daemon_stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("call rerouted") && l.contains("attempt=2")),
        "the refused first target was tried first\n{log}"
    );
    assert_eq!(
        metric_at_least(&lab, &failures("outside", "outbound", "name_mismatch"), 0.0),
        0.0,
        "the domain, not the SRV target, is the name checked"
    );
    finish(rt, lab, scratch);
}

/// TLS on one side, UDP on the other, SRTP end to end (a Teams-style
/// call): a TLS caller with a client certificate offers RTP/SAVP with its
/// SDES key; the UDP PBX gets the key unchanged and answers with its own;
/// SRTP packets cross the relay byte for byte both ways; the BYE ends it.
#[test]
fn a_tls_caller_with_srtp_reaches_a_udp_callee_and_the_srtp_crosses_untouched() {
    use crate::srtp::{
        CALLEE_KEY, CALLER_KEY, callee_answers, callee_answers_bye, media_of, relayed_untouched,
        savp_sdp,
    };
    if skip_unless_sipp("a_tls_caller_with_srtp_reaches_a_udp_callee") {
        return;
    }
    let TlsLab {
        plan,
        scratch,
        pki,
        lab,
        rt,
    } = TlsLab::start("tls-srtp", "");
    let pbx = plan.host(Host::Pbx);
    let inside_ip = plan.realm_ip(Realm::Inside);
    let callee = lab.net().udp_socket(pbx);
    let callee_rtp = lab.net().udp_socket(SocketAddr::new(pbx.ip(), 16_010));
    let from = plan.spare_ip(0);
    let caller_rtp = lab.net().udp_socket(SocketAddr::new(from, 17_010));
    let inside_sip = SocketAddr::new(inside_ip, plan.realm(Realm::Inside).port());

    rt.block_on(async {
        let tls = connect_tls(&lab, &pki, from, Some(&pki.caller))
            .await
            .expect("handshake with a client certificate");
        let local = tls.get_ref().0.local_addr().expect("local address");
        let mut sip = SipStream::new(tls);
        let outside = plan.realm_ip(Realm::Outside);
        let mut caller = Caller::new(
            &local.to_string(),
            &format!("sips:service@{outside}:{TLS_PORT}"),
            "tls-srtp",
        );
        sip.send(&caller.invite_with(&savp_sdp(from, 17_010, CALLER_KEY)))
            .await;
        // The PBX answers on its own thread while the TLS side waits.
        let inside_anchor = tokio::task::block_in_place(|| {
            callee_answers(
                &callee,
                callee_rtp.local_addr().expect("callee media"),
                inside_sip,
                inside_ip,
                "tls-srtp",
            )
        });
        let ok = loop {
            let response = sip.recv(WAIT).await.expect("an answer to the INVITE");
            match status(&response) {
                Some(code) if code < 200 => continue,
                Some(200) => break response,
                other => panic!("INVITE answered {other:?}:\n{response}"),
            }
        };
        assert!(
            ok.contains(" RTP/SAVP 0")
                && ok.contains(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 {CALLEE_KEY}")),
            "the TLS caller gets the PBX's key unchanged:\n{ok}"
        );
        let outside_anchor = media_of(&ok);
        assert_eq!(outside_anchor.ip(), outside, "{ok}");
        caller.answered(&ok);
        sip.send(&caller.ack()).await;

        let (forward, back) = tokio::task::block_in_place(|| {
            (
                relayed_untouched(
                    &caller_rtp,
                    outside_anchor,
                    &callee_rtp,
                    inside_anchor,
                    0xcafe_0011,
                    20,
                ),
                relayed_untouched(
                    &callee_rtp,
                    inside_anchor,
                    &caller_rtp,
                    outside_anchor,
                    0xcafe_0012,
                    20,
                ),
            )
        });
        assert!(
            forward >= 18 && back >= 18,
            "SRTP untouched: {forward} of 20 forward, {back} of 20 back"
        );

        let pbx = callee.try_clone().expect("the PBX's socket");
        let answering = std::thread::spawn(move || callee_answers_bye(&pbx, inside_sip));
        hang_up(&mut sip, &mut caller, "tls-srtp").await;
        answering.join().expect("the PBX answered the BYE");
    });
    finish(rt, lab, scratch);
}

/// RFC 5923 connection reuse: the carrier connects to the SBC's TLS
/// listener with a client certificate naming `carrier.test` and asks, with
/// `alias` in its Via, that requests to its listener come over this
/// connection. Nothing listens on the carrier's 5061, so the PBX's call
/// can only reach it that way. The SBC's own Via says `alias` too.
#[test]
fn a_carrier_that_aliases_its_connection_gets_the_calls_over_it() {
    if skip_unless_sipp("a_carrier_that_aliases_its_connection_gets_the_calls_over_it") {
        return;
    }
    let TlsLab {
        plan,
        scratch,
        pki,
        lab,
        rt,
    } = TlsLab::start("tls-alias", "");
    let carrier_ip = plan.host_ip(Host::Carrier);
    let carrier = SocketAddr::new(carrier_ip, TLS_PORT);
    let client = pki.clients_ca.issue("carrier-client", &["carrier.test"]);
    let log = Arc::new(Mutex::new(CalleeLog::default()));
    let served = {
        let log = Arc::clone(&log);
        let tls = rt
            .block_on(connect_tls(&lab, &pki, carrier_ip, Some(&client)))
            .expect("the carrier's handshake with its client certificate");
        rt.spawn(async move {
            let mut sip = SipStream::new(tls);
            let options = format!(
                "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TLS carrier.test:{TLS_PORT};branch=z9hG4bKalias1;alias\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:carrier.test>;tag=a1\r\nTo: <sip:sbc.test>\r\n\
                 Call-ID: alias-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                SocketAddr::new(plan.realm_ip(Realm::Outside), TLS_PORT)
            );
            sip.send(&options).await;
            serve_as_callee(&mut sip, carrier, &log).await;
        })
    };
    // The OPTIONS is answered (and the alias taken) before the call.
    let deadline = now() + WAIT;
    while !log
        .lock()
        .expect("log")
        .messages
        .iter()
        .any(|m| status(m) == Some(200))
    {
        assert!(now() < deadline, "the carrier's OPTIONS was not answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let uac = lab
        .peer("caller.xml", Host::Pbx)
        .remote(plan.realm(Realm::Inside))
        .run();
    uac.assert_success(1);
    wait_for_bye(&log);
    {
        let log = log.lock().expect("log");
        let invite = log
            .messages
            .iter()
            .find(|m| method(m) == Some("INVITE"))
            .unwrap_or_else(|| {
                panic!("no INVITE over the aliased connection: {:#?}", log.messages)
            });
        assert!(
            header(invite, "Via")
                .is_some_and(|v| v.starts_with("SIP/2.0/TLS ") && v.contains(";alias")),
            "the SBC offers its connection back:\n{invite}"
        );
        assert!(
            log.messages.iter().any(|m| method(m) == Some("BYE")),
            "the whole dialog came over it: {:#?}",
            log.messages
        );
    }
    served.abort();
    finish(rt, lab, scratch);
}

/// A lab running [`tls_toml`] (with `extra_limits`), its PKI in a scratch
/// directory beside it, and a runtime for the TLS peers.
struct TlsLab {
    plan: Plan,
    scratch: std::path::PathBuf,
    pki: Pki,
    lab: Lab,
    rt: tokio::runtime::Runtime,
}

impl TlsLab {
    fn start(name: &str, extra_limits: &str) -> TlsLab {
        let plan = Plan::next();
        let scratch = tempdir(name, &plan);
        let pki = Pki::new(&scratch, &plan);
        let lab = Lab::start_toml(name, plan, &tls_toml(&plan, &pki, extra_limits));
        TlsLab {
            plan,
            scratch,
            pki,
            lab,
            rt: runtime(),
        }
    }
}

/// Stops the peers' runtime and the lab, and removes the keys.
fn finish(rt: tokio::runtime::Runtime, lab: Lab, scratch: std::path::PathBuf) {
    drop(rt);
    lab.shutdown();
    let _ = std::fs::remove_dir_all(scratch);
}

/// A directory for the test's keys, beside (not inside) the lab's, which
/// the lab clears when it starts.
fn tempdir(name: &str, plan: &Plan) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sbc-tls-{name}-{}-{}",
        std::process::id(),
        plan.slot
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the PKI directory");
    dir
}
