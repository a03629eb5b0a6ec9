//! Edge protection of the TCP listeners: per-source and untrusted-share
//! caps, the slowloris deadlines, and the rate-limited refusal log. The
//! pure parts (the caps' table, [`tcp::Deadlines`], [`tcp::RefusalLog`])
//! run on virtual time; the loopback tests use deadlines of a few hundred
//! milliseconds and bound every wait by [`WAIT`], so they fail rather than
//! hang, and assert what happened, not how long it took.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use super::tcp::{Deadlines, Expiry, Peer, Refusal, RefusalCounts, RefusalLog, Table};
use super::*;
use crate::config::Config;
use crate::guard::{Seed, Trust};

const WAIT: Duration = Duration::from_secs(5);

/// A short deadline for the loopback tests.
const SHORT: Duration = Duration::from_millis(200);

/// Longer than any test runs.
const NEVER: Duration = Duration::from_secs(60);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

/// Realm `test` with 127.0.0.3 trusted, and rates no test reaches.
fn shield() -> Arc<Shield> {
    let text = "[protection]\nrequest_rate = 100000\nrequest_burst = 100000\n\n\
         [[realm]]\nname = \"test\"\n\
         listen = [{ transport = \"tcp\", address = \"127.0.0.1:5060\" }]\n\
         media = { address = \"127.0.0.1\" }\nnetworks = [\"127.0.0.3/32\"]\n";
    let config = Config::from_str_named(text, "tcp-test")
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    let trust = Trust::new(&config, |_, _| None);
    Arc::new(Shield::from_config(clock(), Seed([3, 5]), &config, &trust))
}

fn start(config: TransportConfig) -> (Transports, mpsc::Receiver<Event>, SocketAddr) {
    let spec = ListenerSpec {
        realm: "test".to_owned(),
        transport: Transport::Tcp,
        addr: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        recv_buffer: None,
        send_buffer: None,
        freebind: false,
    };
    let (t, rx) = Transports::start_shielded(&[spec], config, Some(shield()))
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    let addr = t
        .local_addr(ListenerId(0))
        .unwrap_or_else(|| panic!("no listener"));
    (t, rx, addr)
}

/// Connects to `server` from address `from` (any port).
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket
        .bind(SocketAddr::new(ip(from), 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .unwrap_or_else(|_| panic!("timed out connecting from {from}"))
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"))
}

fn stats(t: &Transports) -> StatsSnapshot {
    t.stats(ListenerId(0))
        .unwrap_or_else(|| panic!("no listener"))
}

async fn until(t: &Transports, what: &str, cond: impl Fn(&StatsSnapshot) -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond(&stats(t)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", stats(t)));
}

/// Reads until the peer closes: `true` on EOF or reset.
async fn closed_by_peer(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for the close"))
}

fn options(cseq: u32) -> Vec<u8> {
    format!(
        "OPTIONS sip:sbc.example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{cseq}\r\n\
         Max-Forwards: 70\r\nTo: <sip:sbc.example.com>\r\n\
         From: <sip:probe@example.com>;tag=1928301774\r\n\
         Call-ID: a84b4c76e66710\r\nCSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

// ---- the caps, pure ---------------------------------------------------------

fn queue() -> mpsc::Sender<Vec<u8>> {
    mpsc::channel(1).0
}

fn from(ip_str: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(ip_str), port)
}

#[test]
fn per_source_cap_counts_at_accept_and_releases_at_close() {
    let config = TransportConfig {
        max_connections_per_source: 3,
        ..TransportConfig::default()
    };
    let l = ListenerId(0);
    let a = ip("192.0.2.1");
    let mut table = Table::default();
    let mut ids = Vec::new();
    for port in 1..=3 {
        let id = table
            .accept(
                l,
                from("192.0.2.1", port),
                queue(),
                Peer::Untrusted(a),
                0,
                &config,
            )
            .unwrap_or_else(|why| panic!("refused {why:?}"));
        ids.push(id);
    }
    let fourth = table.accept(
        l,
        from("192.0.2.1", 4),
        queue(),
        Peer::Untrusted(a),
        0,
        &config,
    );
    assert_eq!(fourth, Err(Refusal::PerSource));
    // Another source, the same source on another listener, and a trusted
    // or unscreened peer are not held back.
    let b = ip("192.0.2.2");
    assert!(
        table
            .accept(
                l,
                from("192.0.2.2", 1),
                queue(),
                Peer::Untrusted(b),
                0,
                &config
            )
            .is_ok()
    );
    assert!(
        table
            .accept(
                ListenerId(1),
                from("192.0.2.1", 5),
                queue(),
                Peer::Untrusted(a),
                0,
                &config
            )
            .is_ok()
    );
    for port in 6..10 {
        assert!(
            table
                .accept(
                    l,
                    from("192.0.2.1", port),
                    queue(),
                    Peer::Trusted,
                    0,
                    &config
                )
                .is_ok()
        );
    }
    // A close frees a slot; the last close removes the source's entry.
    assert_eq!(table.source_count(l, a), 3);
    assert!(table.remove(ids[0]));
    assert!(!table.remove(ids[0]), "removed twice");
    assert!(
        table
            .accept(
                l,
                from("192.0.2.1", 4),
                queue(),
                Peer::Untrusted(a),
                0,
                &config
            )
            .is_ok()
    );
    assert_eq!(table.source_count(l, a), 3);
    assert_eq!(table.source_map_size().0, 3);
}

#[test]
fn untrusted_sources_together_leave_room_for_trusted_peers() {
    let config = TransportConfig {
        max_connections: 10,
        untrusted_connection_share_percent: 50,
        ..TransportConfig::default()
    };
    let l = ListenerId(0);
    let mut table = Table::default();
    let mut open = 0;
    for i in 1..=5 {
        let src = format!("198.51.100.{i}");
        table
            .accept(
                l,
                from(&src, 1),
                queue(),
                Peer::Untrusted(ip(&src)),
                open,
                &config,
            )
            .unwrap_or_else(|why| panic!("refused {why:?}"));
        open += 1;
    }
    let sixth = Peer::Untrusted(ip("198.51.100.6"));
    assert_eq!(
        table.accept(l, from("198.51.100.6", 1), queue(), sixth, open, &config),
        Err(Refusal::UntrustedShare)
    );
    for port in 1..=5 {
        assert!(
            table
                .accept(
                    l,
                    from("192.0.2.9", port),
                    queue(),
                    Peer::Trusted,
                    open,
                    &config
                )
                .is_ok()
        );
        open += 1;
    }
    // The total cap holds for everyone.
    assert_eq!(
        table.accept(
            l,
            from("192.0.2.9", 6),
            queue(),
            Peer::Trusted,
            open,
            &config
        ),
        Err(Refusal::Limit)
    );
}

#[test]
fn the_source_map_shrinks_after_a_storm() {
    let config = TransportConfig::default();
    let l = ListenerId(0);
    let mut table = Table::default();
    let ids: Vec<ConnectionId> = (0..2_000u32)
        .map(|i| {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            table
                .accept(
                    l,
                    SocketAddr::new(a, 5060),
                    queue(),
                    Peer::Untrusted(a),
                    0,
                    &config,
                )
                .unwrap_or_else(|why| panic!("refused {why:?}"))
        })
        .collect();
    let (len, peak) = table.source_map_size();
    assert_eq!(len, 2_000);
    for id in ids {
        table.remove(id);
    }
    let (len, capacity) = table.source_map_size();
    assert_eq!(len, 0);
    assert!(capacity <= 128, "kept {capacity} of {peak} slots");
}

// ---- the refusal log, on a virtual clock ------------------------------------

#[test]
fn refusals_are_logged_at_most_once_per_interval_with_their_counts() {
    let t0 = clock();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut log = RefusalLog::new(Duration::from_secs(10));
    // The first refusal is logged at once.
    assert_eq!(
        log.refused(at(0), Refusal::PerSource),
        Some(RefusalCounts {
            per_source: 1,
            ..RefusalCounts::default()
        })
    );
    // A storm within the interval is counted, not logged.
    for i in 0..1_000 {
        let why = if i % 4 == 0 {
            Refusal::Shield
        } else {
            Refusal::Limit
        };
        assert_eq!(log.refused(at(1 + i), why), None);
    }
    assert_eq!(log.refused(at(9_999), Refusal::UntrustedShare), None);
    // The first refusal after the interval logs everything since the line.
    let line = log
        .refused(at(10_000), Refusal::PerSource)
        .unwrap_or_else(|| panic!("no line after the interval"));
    assert_eq!(
        line,
        RefusalCounts {
            limit: 750,
            untrusted_share: 1,
            per_source: 1,
            shield: 250,
        }
    );
    assert_eq!(line.total(), 1_002);
    // The interval runs from the last line, not from the last refusal.
    assert_eq!(log.refused(at(19_999), Refusal::Limit), None);
    assert_eq!(
        log.refused(at(20_000), Refusal::Limit).map(|c| c.limit),
        Some(2)
    );
    // After a quiet spell the next refusal is logged at once.
    assert_eq!(
        log.refused(at(90_000), Refusal::Limit).map(|c| c.total()),
        Some(1)
    );
}

// ---- the deadlines, on virtual time ----------------------------------------

fn deadline_config() -> TransportConfig {
    TransportConfig {
        tcp_idle_timeout: Duration::from_secs(300),
        first_message_timeout: Duration::from_secs(10),
        message_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    }
}

#[test]
fn a_trickled_message_expires_however_often_bytes_come() {
    let config = deadline_config();
    let t0 = tokio::time::Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let mut d = Deadlines::new(t0, &config, true);
    assert_eq!(d.next(), (s(10), Expiry::FirstMessage));
    // The first byte of a message starts its clock...
    d.read(s(1), &config, false, false, true);
    assert_eq!(d.next(), (s(6), Expiry::Message));
    // ...and more bytes of it don't move it.
    for secs in 2..6 {
        d.read(s(secs), &config, false, false, true);
    }
    assert_eq!(d.next(), (s(6), Expiry::Message));
}

#[test]
fn complete_messages_reset_idleness_and_partial_bytes_do_not() {
    let config = deadline_config();
    let t0 = tokio::time::Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let mut d = Deadlines::new(t0, &config, true);
    // A complete message ends the first-message deadline.
    d.read(s(2), &config, true, true, false);
    assert_eq!(d.next(), (s(302), Expiry::Idle));
    // A ping is a complete frame: idleness restarts.
    d.read(s(100), &config, true, false, false);
    assert_eq!(d.next(), (s(400), Expiry::Idle));
    // A message completes and the next begins in the same read: the new
    // one is timed from now.
    d.read(s(200), &config, false, false, true);
    d.read(s(203), &config, true, true, true);
    assert_eq!(d.next(), (s(208), Expiry::Message));
    // Finishing it clears the message deadline.
    d.read(s(204), &config, true, true, false);
    assert_eq!(d.next(), (s(504), Expiry::Idle));
    // A write keeps the connection in use.
    d.wrote(s(300), &config);
    assert_eq!(d.next(), (s(600), Expiry::Idle));
}

#[test]
fn pings_do_not_satisfy_the_first_message_deadline_and_trusted_peers_have_none() {
    let config = deadline_config();
    let t0 = tokio::time::Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let mut d = Deadlines::new(t0, &config, true);
    d.read(s(1), &config, true, false, false);
    assert_eq!(d.next(), (s(10), Expiry::FirstMessage));
    let trusted = Deadlines::new(t0, &config, false);
    assert_eq!(trusted.next(), (s(300), Expiry::Idle));
}

// ---- on loopback --------------------------------------------------------------

#[tokio::test]
async fn the_33rd_connection_from_one_source_is_refused_while_others_connect() {
    let (t, _rx, server) = start(TransportConfig::default());
    let per_source = TransportConfig::default().max_connections_per_source;
    assert_eq!(per_source, 32);
    let mut held = Vec::new();
    for _ in 0..per_source {
        held.push(connect_from("127.0.0.1", server).await);
    }
    until(&t, "32 connections", |s| s.connections_open == 32).await;
    let mut over = connect_from("127.0.0.1", server).await;
    assert!(closed_by_peer(&mut over).await);
    until(&t, "the refusal", |s| s.connections_rejected == 1).await;
    // Another untrusted source still gets in, and can talk.
    let mut other = connect_from("127.0.0.2", server).await;
    other
        .write_all(&options(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until(&t, "the other source", |s| {
        s.connections_open == 33 && s.messages_in == 1
    })
    .await;
    // Closing one frees a slot for the capped source.
    drop(held.pop());
    until(&t, "the close", |s| s.connections_open == 32).await;
    held.push(connect_from("127.0.0.1", server).await);
    until(&t, "the freed slot to be taken", |s| {
        s.connections_open == 33
    })
    .await;
    assert_eq!(stats(&t).connections_rejected, 1);
    t.shutdown().await;
}

#[tokio::test]
async fn a_trusted_source_is_not_capped() {
    let config = TransportConfig {
        max_connections_per_source: 2,
        ..TransportConfig::default()
    };
    let (t, _rx, server) = start(config);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from("127.0.0.3", server).await);
    }
    until(&t, "every trusted connection", |s| s.connections_open == 10).await;
    assert_eq!(stats(&t).connections_rejected, 0);
    t.shutdown().await;
}

#[tokio::test]
async fn a_slow_client_is_closed_at_the_message_deadline() {
    let config = TransportConfig {
        tcp_idle_timeout: NEVER,
        first_message_timeout: NEVER,
        message_timeout: SHORT,
        ..TransportConfig::default()
    };
    let (t, mut rx, server) = start(config);
    let client = connect_from("127.0.0.1", server).await;
    let (mut read, mut write) = client.into_split();
    // One byte every 100 ms: the message would take 25 s.
    let trickle = tokio::spawn(async move {
        for byte in options(1) {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(closed_by_peer(&mut read).await);
    until(&t, "the close", |s| s.connections_open == 0).await;
    assert_eq!(stats(&t).connections_too_slow, 1, "counted as too slow");
    assert!(!a_message_waits(&mut rx), "a partial message was delivered");
    trickle.abort();
    t.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_first_message_deadline() {
    let config = TransportConfig {
        tcp_idle_timeout: NEVER,
        first_message_timeout: SHORT,
        ..TransportConfig::default()
    };
    let (t, _rx, server) = start(config);
    let mut silent = connect_from("127.0.0.1", server).await;
    // Pings alone don't count as a first message.
    let mut pinging = connect_from("127.0.0.2", server).await;
    pinging
        .write_all(b"\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(closed_by_peer(&mut silent).await);
    assert!(closed_by_peer(&mut pinging).await);
    until(&t, "the closes", |s| s.connections_open == 0).await;
    assert_eq!(stats(&t).connections_too_slow, 2);
    t.shutdown().await;
}

#[tokio::test]
async fn a_client_sending_complete_messages_stays_open_and_idles_out_after() {
    let config = TransportConfig {
        tcp_idle_timeout: Duration::from_millis(300),
        first_message_timeout: SHORT,
        message_timeout: SHORT,
        ..TransportConfig::default()
    };
    let (t, mut rx, server) = start(config);
    let mut client = connect_from("127.0.0.1", server).await;
    // Ten rounds of 100 ms, longer than every deadline: a message or a
    // ping each round keeps the connection.
    for round in 0..10u32 {
        let bytes = if round % 2 == 0 {
            options(round)
        } else {
            b"\r\n\r\n".to_vec()
        };
        client
            .write_all(&bytes)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats(&t).connections_open, 1, "closed while in use");
    let mut delivered = 0;
    while let Ok(Event::Inbound(_)) = rx.try_recv() {
        delivered += 1;
    }
    assert_eq!(delivered, 5);
    // Bytes of an unfinished message don't hold off idleness for long:
    // the message deadline closes it.
    client
        .write_all(b"OPTIONS sip:")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Answered pings are the only bytes the server sent.
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, client.read_to_end(&mut buf)).await;
    assert_eq!(buf, b"\r\n".repeat(5));
    until(&t, "the close", |s| s.connections_open == 0).await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_trusted_client_may_stay_silent_until_idle() {
    let config = TransportConfig {
        tcp_idle_timeout: NEVER,
        first_message_timeout: Duration::from_millis(50),
        ..TransportConfig::default()
    };
    let (t, _rx, server) = start(config);
    let _trusted = connect_from("127.0.0.3", server).await;
    let mut untrusted = connect_from("127.0.0.2", server).await;
    // By the time the untrusted one is closed, the trusted one's deadline
    // would have passed too.
    assert!(closed_by_peer(&mut untrusted).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    until(&t, "only the trusted connection", |s| {
        s.connections_open == 1 && s.connections_total == 2
    })
    .await;
    t.shutdown().await;
}

// ---- RFC 5923 connection aliases ------------------------------------------------

fn request_via(via: &str) -> Message {
    let text = format!(
        "OPTIONS sip:sbc.example.com SIP/2.0\r\nVia: {via};branch=z9hG4bKa1\r\n\
         Max-Forwards: 70\r\nTo: <sip:sbc.example.com>\r\n\
         From: <sip:probe@example.com>;tag=1\r\nCall-ID: a1\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}: {text}"))
}

#[test]
fn a_tls_request_aliases_only_what_its_client_certificate_proves() {
    use super::tcp::alias_of;
    let remote = from("192.0.2.7", 40_312);
    let names = ["carrier.example.net".to_owned(), "192.0.2.7".to_owned()];
    let alias = |via: &str, names: &[String]| alias_of(&request_via(via), remote, names);
    // The certificate's domain, with a port or without (5061).
    assert_eq!(
        alias("SIP/2.0/TLS carrier.example.net:5071;alias", &names),
        Some(from("192.0.2.7", 5071))
    );
    assert_eq!(
        alias("SIP/2.0/TLS Carrier.Example.Net;alias", &names),
        Some(from("192.0.2.7", 5061))
    );
    // The source address, when the certificate names it.
    assert_eq!(
        alias("SIP/2.0/TLS 192.0.2.7:5061;alias", &names),
        Some(from("192.0.2.7", 5061))
    );
    // Not asked for, not TLS, a name or address not proven, no
    // certificate, another address than the source.
    for (via, names) in [
        ("SIP/2.0/TLS carrier.example.net:5061", &names[..]),
        ("SIP/2.0/TCP carrier.example.net:5061;alias", &names[..]),
        ("SIP/2.0/TLS other.example.net:5061;alias", &names[..]),
        ("SIP/2.0/TLS carrier.example.net:5061;alias", &[][..]),
        ("SIP/2.0/TLS 192.0.2.8:5061;alias", &names[..]),
    ] {
        assert_eq!(alias(via, names), None, "{via} with {names:?}");
    }
    // A response aliases nothing.
    let response = Message::parse(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS carrier.example.net;alias;branch=z9hG4bKa1\r\n\
          To: <sip:a@b>;tag=2\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: a1\r\nCSeq: 1 OPTIONS\r\n\
          Content-Length: 0\r\n\r\n",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(alias_of(&response, remote, &names), None);
}

#[test]
fn an_alias_routes_sends_to_the_connection_until_it_closes_and_never_steals_one() {
    let config = TransportConfig::default();
    let l = ListenerId(0);
    let mut table = Table::default();
    let inbound = table
        .accept(
            l,
            from("192.0.2.7", 40_312),
            queue(),
            Peer::Trusted,
            0,
            &config,
        )
        .unwrap_or_else(|why| panic!("{why:?}"));
    let listening = from("192.0.2.7", 5061);
    assert_eq!(table.lookup(l, None, listening), None);
    assert!(table.alias(inbound, listening));
    assert_eq!(table.lookup(l, None, listening), Some(inbound));
    assert_eq!(
        table.lookup(ListenerId(1), None, listening),
        None,
        "per listener"
    );
    // A second connection from the peer may not take the alias over.
    let second = table
        .accept(
            l,
            from("192.0.2.7", 40_313),
            queue(),
            Peer::Trusted,
            0,
            &config,
        )
        .unwrap_or_else(|why| panic!("{why:?}"));
    assert!(!table.alias(second, listening));
    // At most a handful per connection.
    for port in 5062..5065 {
        assert!(table.alias(second, from("192.0.2.7", port)));
    }
    assert!(table.alias(second, from("192.0.2.7", 5065)));
    assert!(!table.alias(second, from("192.0.2.7", 5066)));
    // Closing forgets the aliases with the connection.
    assert!(table.remove(inbound));
    assert_eq!(table.lookup(l, None, listening), None);
    let third = table
        .accept(
            l,
            from("192.0.2.7", 40_314),
            queue(),
            Peer::Trusted,
            0,
            &config,
        )
        .unwrap_or_else(|why| panic!("{why:?}"));
    assert!(table.alias(third, listening), "free again");
    assert!(table.remove(second));
    assert_eq!(table.lookup(l, None, from("192.0.2.7", 5062)), None);
}
