//! Loopback tests of the transport shells. Every listener binds port 0 (or
//! a distinct 127.0.0.x), so tests run in parallel; every wait is bounded by
//! [`WAIT`], which fails the test rather than measuring time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::*;
use crate::sip::ParseErrorKind;

/// Upper bound on any single wait.
const WAIT: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/corpus/flows/rfc3665/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// RFC 3665 §3.1 F1, with `rport` asked for.
fn invite() -> Vec<u8> {
    let text = String::from_utf8(fixture("3.1-F01-INVITE_Alice_to_Bob.sip"))
        .unwrap_or_else(|e| panic!("fixture is not UTF-8: {e}"));
    let with_rport = text.replacen(";branch=z9hG4bK74bf9", ";rport;branch=z9hG4bK74bf9", 1);
    assert_ne!(with_rport, text, "fixture Via changed; update the test");
    with_rport.into_bytes()
}

fn ringing() -> Vec<u8> {
    fixture("3.1-F02-180_Ringing_Bob_to_Alice.sip")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

fn spec(transport: Transport, addr: &str) -> ListenerSpec {
    ListenerSpec {
        realm: "test".to_owned(),
        transport,
        addr: sa(addr),
        recv_buffer: Some(256 * 1024),
        send_buffer: Some(256 * 1024),
        freebind: false,
    }
}

fn start(specs: &[ListenerSpec], config: TransportConfig) -> (Transports, mpsc::Receiver<Event>) {
    Transports::start(specs, config).unwrap_or_else(|e| panic!("start failed: {e}"))
}

fn local(t: &Transports, id: usize) -> SocketAddr {
    t.local_addr(ListenerId(id))
        .unwrap_or_else(|| panic!("no listener {id}"))
}

fn stats(t: &Transports, id: usize) -> StatsSnapshot {
    t.stats(ListenerId(id))
        .unwrap_or_else(|| panic!("no listener {id}"))
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn next_event(rx: &mut mpsc::Receiver<Event>) -> Event {
    within("an event", rx.recv())
        .await
        .unwrap_or_else(|| panic!("event channel closed"))
}

async fn next_inbound(rx: &mut mpsc::Receiver<Event>) -> Inbound {
    match next_event(rx).await {
        Event::Inbound(inbound) => inbound,
        other => panic!("expected an inbound message, got {other:?}"),
    }
}

fn message(inbound: &Inbound) -> &Message {
    match &inbound.received {
        Received::Message(msg) => msg,
        Received::Malformed { error, .. } => panic!("expected a message, got {error}"),
    }
}

/// Polls a condition on the counters until it holds (bounded by [`WAIT`]).
async fn until(t: &Transports, id: usize, what: &str, cond: impl Fn(&StatsSnapshot) -> bool) {
    within(what, async {
        while !cond(&stats(t, id)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within("bytes on the TCP stream", stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|e| panic!("read failed: {e}"));
    buf
}

/// Reads until the peer closes: `true` on EOF or reset.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    within("the connection to close", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn udp_invite_round_trip_is_stamped_and_answered_from_the_listener() {
    let (t, mut rx) = start(
        &[spec(Transport::Udp, "127.0.0.1:0")],
        TransportConfig::default(),
    );
    let server = local(&t, 0);
    let client = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client_addr = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    client
        .send_to(&invite(), server)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let inbound = next_inbound(&mut rx).await;
    assert_eq!(inbound.listener, ListenerId(0));
    assert_eq!(inbound.transport, Transport::Udp);
    assert_eq!(inbound.local, server);
    assert_eq!(inbound.remote, client_addr);
    assert_eq!(inbound.connection, None);
    let msg = message(&inbound);
    assert_eq!(msg.method(), Some(crate::sip::Method::Invite));
    let via = msg.top_via().unwrap_or_else(|| panic!("no top Via"));
    assert_eq!(via.received(), Some("127.0.0.1"));
    assert_eq!(via.rport(), Some(Some(client_addr.port())));
    assert_eq!(via.branch(), Some("z9hG4bK74bf9"));
    // The SDP body came through untouched.
    assert!(msg.body().starts_with(b"v=0\r\n"));

    // The response goes where RFC 3581 says, from the realm's socket.
    let to = nat::response_target(&via, inbound.remote, inbound.transport);
    assert_eq!(to, client_addr);
    t.send(Outbound {
        transport: Transport::Udp,
        from_listener: ListenerId(0),
        to,
        connection: None,
        bytes: ringing(),
    })
    .unwrap_or_else(|e| panic!("send failed: {e}"));
    let mut buf = vec![0u8; 65_535];
    let (n, from) = within("the response", client.recv_from(&mut buf))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], ringing().as_slice());
    assert_eq!(from, server);

    let s = stats(&t, 0);
    assert_eq!((s.messages_in, s.messages_out, s.parse_errors), (1, 1, 0));
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn udp_ipv6_gets_an_unbracketed_received() {
    let (t, mut rx) = start(
        &[spec(Transport::Udp, "[::1]:0")],
        TransportConfig::default(),
    );
    let client = UdpSocket::bind("[::1]:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client_addr = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    client
        .send_to(&invite(), local(&t, 0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let inbound = next_inbound(&mut rx).await;
    assert_eq!(inbound.remote, client_addr);
    let wire = message(&inbound).to_bytes();
    let text = String::from_utf8_lossy(&wire);
    let want = format!(
        ";rport={};branch=z9hG4bK74bf9;received=::1\r\n",
        client_addr.port()
    );
    assert!(text.contains(&want), "{text}");
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn udp_malformed_datagram_arrives_with_its_bytes_and_keepalives_do_not() {
    let (t, mut rx) = start(
        &[spec(Transport::Udp, "127.0.0.1:0")],
        TransportConfig::default(),
    );
    let client = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let junk = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nCSeq: x INVITE\r\n\r\n";
    for datagram in [&b"\r\n\r\n"[..], junk] {
        client
            .send_to(datagram, local(&t, 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let inbound = next_inbound(&mut rx).await;
    match &inbound.received {
        Received::Malformed { error, bytes } => {
            assert_eq!(bytes.as_slice(), &junk[..]);
            assert!(error.has_via, "{error:?}");
            assert_ne!(error.kind, ParseErrorKind::Empty);
        }
        Received::Message(_) => panic!("junk parsed as a message"),
    }
    let s = stats(&t, 0);
    assert_eq!((s.messages_in, s.parse_errors, s.keepalives), (1, 1, 1));
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn udp_overload_drops_and_counts() {
    let config = TransportConfig {
        channel_capacity: 1,
        ..TransportConfig::default()
    };
    let (t, mut rx) = start(&[spec(Transport::Udp, "127.0.0.1:0")], config);
    let client = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    const SENT: u64 = 20;
    for _ in 0..SENT {
        client
            .send_to(&invite(), local(&t, 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    until(&t, 0, "every datagram to be read", |s| {
        s.messages_in == SENT
    })
    .await;
    assert_eq!(stats(&t, 0).dropped_overload, SENT - 1);
    // Exactly one made it into the channel.
    next_inbound(&mut rx).await;
    assert!(rx.try_recv().is_err(), "more than one datagram was queued");
    within("shutdown", t.shutdown()).await;
}

/// A TCP listener and a client connected to it.
async fn tcp_pair(config: TransportConfig) -> (Transports, mpsc::Receiver<Event>, TcpStream) {
    let (t, rx) = start(&[spec(Transport::Tcp, "127.0.0.1:0")], config);
    let client = within("connect", TcpStream::connect(local(&t, 0)))
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    (t, rx, client)
}

#[tokio::test]
async fn tcp_message_split_across_writes() {
    let (t, mut rx, mut client) = tcp_pair(TransportConfig::default()).await;
    let bytes = invite();
    for chunk in [&bytes[..10], &bytes[10..200], &bytes[200..]] {
        client
            .write_all(chunk)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client.flush().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let inbound = next_inbound(&mut rx).await;
    assert_eq!(inbound.transport, Transport::Tcp);
    assert!(inbound.connection.is_some());
    assert_eq!(Some(inbound.remote), client.local_addr().ok());
    assert_eq!(inbound.local, local(&t, 0));
    let via = message(&inbound)
        .top_via()
        .unwrap_or_else(|| panic!("no top Via"));
    assert_eq!(via.received(), Some("127.0.0.1"));
    assert_eq!(via.rport(), Some(Some(inbound.remote.port())));
    assert_eq!(message(&inbound).body().len(), 151);
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_two_messages_in_one_write() {
    let (t, mut rx, mut client) = tcp_pair(TransportConfig::default()).await;
    let mut both = invite();
    both.extend_from_slice(&fixture("3.1-F04-ACK_Alice_to_Bob.sip"));
    client
        .write_all(&both)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = next_inbound(&mut rx).await;
    let second = next_inbound(&mut rx).await;
    assert_eq!(message(&first).method(), Some(crate::sip::Method::Invite));
    assert_eq!(message(&second).method(), Some(crate::sip::Method::Ack));
    assert_eq!(first.connection, second.connection);
    assert_eq!(stats(&t, 0).messages_in, 2);
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_ping_is_answered_with_a_pong() {
    let (t, mut rx, mut client) = tcp_pair(TransportConfig::default()).await;
    client
        .write_all(b"\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read_exactly(&mut client, 2).await, b"\r\n");
    // The connection is still in sync after the ping.
    client
        .write_all(&invite())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    next_inbound(&mut rx).await;
    assert_eq!(stats(&t, 0).keepalives, 1);
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_framing_error_closes_the_connection() {
    let (t, mut rx, mut client) = tcp_pair(TransportConfig::default()).await;
    // No Content-Length: the end of the message can't be found (§18.3).
    let text = String::from_utf8(invite()).unwrap_or_else(|e| panic!("{e}"));
    let no_length = text.replacen("Content-Length: 151\r\n", "", 1);
    assert_ne!(no_length, text, "fixture Content-Length changed");
    client
        .write_all(no_length.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(closed_by_peer(&mut client).await);
    until(&t, 0, "the framing error count", |s| {
        s.framing_errors == 1 && s.connections_open == 0
    })
    .await;
    assert!(
        !a_message_waits(&mut rx),
        "a desynchronised message was delivered"
    );
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_response_reuses_the_request_connection() {
    let (t, mut rx, mut client) = tcp_pair(TransportConfig::default()).await;
    client
        .write_all(&invite())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let inbound = next_inbound(&mut rx).await;
    let via = message(&inbound)
        .top_via()
        .unwrap_or_else(|| panic!("no top Via"));
    // The fallback target (sent-by port 5060) is never used while the
    // connection is open.
    let to = nat::response_target(&via, inbound.remote, inbound.transport);
    assert_eq!(to, sa("127.0.0.1:5060"));
    t.send(Outbound {
        transport: Transport::Tcp,
        from_listener: ListenerId(0),
        to,
        connection: inbound.connection,
        bytes: ringing(),
    })
    .unwrap_or_else(|e| panic!("send failed: {e}"));
    assert_eq!(read_exactly(&mut client, ringing().len()).await, ringing());
    let s = stats(&t, 0);
    assert_eq!((s.connections_total, s.connections_open), (1, 1));
    until(&t, 0, "the write count", |s| s.messages_out == 1).await;
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_outbound_connects_from_the_realm_address_and_is_reused() {
    // The realm listens on 127.0.0.3; the peer on 127.0.0.4.
    let (t, mut rx) = start(
        &[spec(Transport::Tcp, "127.0.0.3:0")],
        TransportConfig::default(),
    );
    let peer = TcpListener::bind("127.0.0.4:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let peer_addr = peer.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let request = invite();
    let outbound = |bytes: Vec<u8>| Outbound {
        transport: Transport::Tcp,
        from_listener: ListenerId(0),
        to: peer_addr,
        connection: None,
        bytes,
    };
    t.send(outbound(request.clone()))
        .unwrap_or_else(|e| panic!("send failed: {e}"));
    let (mut conn, from) = within("the SBC to connect", peer.accept())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        from.ip(),
        local(&t, 0).ip(),
        "not bound to the realm address"
    );
    assert_eq!(read_exactly(&mut conn, request.len()).await, request);

    // The answer comes back over the same connection...
    conn.write_all(&ringing())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let inbound = next_inbound(&mut rx).await;
    assert_eq!(inbound.remote, peer_addr);
    assert_eq!(inbound.local, from);
    assert!(inbound.connection.is_some());
    assert_eq!(message(&inbound).status(), Some(180));

    // ...and a second request to the same peer reuses it.
    let ack = fixture("3.1-F04-ACK_Alice_to_Bob.sip");
    t.send(outbound(ack.clone()))
        .unwrap_or_else(|e| panic!("send failed: {e}"));
    assert_eq!(read_exactly(&mut conn, ack.len()).await, ack);
    assert_eq!(stats(&t, 0).connections_total, 1);
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn send_all_keeps_the_order_per_peer_and_reports_what_it_refuses() {
    let (t, _rx) = start(
        &[spec(Transport::Udp, "127.0.0.1:0")],
        TransportConfig::default(),
    );
    let peers: Vec<std::net::UdpSocket> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")))
        .collect();
    for peer in &peers {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let to = |i: usize| peers[i].local_addr().unwrap_or_else(|e| panic!("{e}"));
    let out = |listener: usize, peer: usize, n: usize| Outbound {
        transport: Transport::Udp,
        from_listener: ListenerId(listener),
        to: to(peer),
        connection: None,
        bytes: format!("datagram {n}").into_bytes(),
    };
    // Two batches of one listener around a datagram of a listener that
    // does not exist: the batches go, in order, and the odd one is refused.
    let mut outs = vec![
        out(0, 0, 0),
        out(0, 1, 1),
        out(0, 0, 2),
        out(9, 1, 3),
        out(0, 1, 4),
        out(0, 0, 5),
        out(0, 1, 6),
    ];
    let mut refused = Vec::new();
    t.send_all(&mut outs, |to, e| refused.push((to, e)));
    assert!(outs.is_empty());
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, to(1));
    assert!(matches!(
        refused[0].1,
        TransportError::UnknownListener(ListenerId(9))
    ));
    let mut buf = [0u8; 64];
    for (peer, expected) in [(0, [0, 2, 5]), (1, [1, 4, 6])] {
        for n in expected {
            let (len, from) = peers[peer]
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("peer {peer} waiting for {n}: {e}"));
            assert_eq!(&buf[..len], format!("datagram {n}").as_bytes());
            assert_eq!(from, local(&t, 0));
        }
    }
    assert_eq!(stats(&t, 0).messages_out, 6);
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn udp_to_a_closed_port_is_reported_as_an_event() {
    // The kernel answers a datagram to a closed loopback port with ICMP
    // port unreachable; the listener hears of it through IP_RECVERR, with
    // the datagram quoted. Only a quote of a request names a transaction:
    // the others are counted, not reported.
    let (t, mut rx) = start(
        &[spec(Transport::Udp, "127.0.0.5:0")],
        TransportConfig::default(),
    );
    let closed = {
        let probe = std::net::UdpSocket::bind("127.0.0.6:0").unwrap_or_else(|e| panic!("{e}"));
        probe.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    for bytes in [
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        invite(),
    ] {
        t.send(Outbound {
            transport: Transport::Udp,
            from_listener: ListenerId(0),
            to: closed,
            connection: None,
            bytes,
        })
        .unwrap_or_else(|e| panic!("send failed at once: {e}"));
    }
    match next_event(&mut rx).await {
        Event::SendFailed {
            listener,
            to,
            connection,
            request,
            error,
        } => {
            assert_eq!((listener, to, connection), (ListenerId(0), closed, None));
            assert_eq!(request, crate::sip::quote::quoted_request(&invite()));
            assert!(request.is_some());
            assert!(
                matches!(
                    error,
                    TransportError::Send {
                        kind: std::io::ErrorKind::ConnectionRefused,
                        ..
                    }
                ),
                "{error:?}"
            );
        }
        other => panic!("expected SendFailed, got {other:?}"),
    }
    // The listener still receives after the error.
    let peer = std::net::UdpSocket::bind("127.0.0.6:0").unwrap_or_else(|e| panic!("{e}"));
    peer.send_to(&invite(), local(&t, 0))
        .unwrap_or_else(|e| panic!("{e}"));
    let inbound = next_inbound(&mut rx).await;
    assert_eq!(message(&inbound).method(), Some(crate::sip::Method::Invite));
    assert_eq!(stats(&t, 0).send_errors, 3);
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn a_tcp_connection_the_peer_closes_is_reported_after_its_messages() {
    let (t, mut rx) = start(
        &[spec(Transport::Tcp, "127.0.0.5:0")],
        TransportConfig::default(),
    );
    let mut client = TcpStream::connect(local(&t, 0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let me = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
    client
        .write_all(&invite())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let inbound = next_inbound(&mut rx).await;
    drop(client);
    match next_event(&mut rx).await {
        Event::Closed {
            listener,
            connection,
            remote,
        } => {
            assert_eq!((listener, remote), (ListenerId(0), me));
            assert_eq!(Some(connection), inbound.connection);
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_connect_failure_is_reported_as_an_event() {
    let (t, mut rx) = start(
        &[spec(Transport::Tcp, "127.0.0.5:0")],
        TransportConfig::default(),
    );
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let probe = TcpListener::bind("127.0.0.6:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        probe.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    t.send(Outbound {
        transport: Transport::Tcp,
        from_listener: ListenerId(0),
        to: closed,
        connection: None,
        bytes: invite(),
    })
    .unwrap_or_else(|e| panic!("send failed at once: {e}"));
    match next_event(&mut rx).await {
        Event::SendFailed {
            listener,
            to,
            error,
            ..
        } => {
            assert_eq!((listener, to), (ListenerId(0), closed));
            assert!(
                matches!(
                    error,
                    TransportError::Connect {
                        kind: std::io::ErrorKind::ConnectionRefused,
                        ..
                    }
                ),
                "{error:?}"
            );
        }
        other => panic!("expected SendFailed, got {other:?}"),
    }
    until(&t, 0, "the connection to be forgotten", |s| {
        s.connections_open == 0 && s.send_errors == 1
    })
    .await;
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_connection_cap_and_idle_timeout() {
    let config = TransportConfig {
        max_connections: 1,
        tcp_idle_timeout: Duration::from_millis(300),
        ..TransportConfig::default()
    };
    let (t, _rx, mut first) = tcp_pair(config).await;
    until(&t, 0, "the first connection", |s| s.connections_open == 1).await;
    let mut second = within("connect", TcpStream::connect(local(&t, 0)))
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    assert!(closed_by_peer(&mut second).await);
    assert_eq!(stats(&t, 0).connections_rejected, 1);
    // The first, silent, is closed for idleness.
    assert!(closed_by_peer(&mut first).await);
    until(&t, 0, "the idle close", |s| s.connections_open == 0).await;
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn wrong_transport_and_unknown_listener_are_refused() {
    let (t, _rx) = start(
        &[spec(Transport::Udp, "127.0.0.1:0")],
        TransportConfig::default(),
    );
    let out = |transport, id| Outbound {
        transport,
        from_listener: ListenerId(id),
        to: sa("127.0.0.1:9"),
        connection: None,
        bytes: Vec::new(),
    };
    assert!(matches!(
        t.send(out(Transport::Tcp, 0)),
        Err(TransportError::WrongTransport { .. })
    ));
    assert!(matches!(
        t.send(out(Transport::Udp, 7)),
        Err(TransportError::UnknownListener(ListenerId(7)))
    ));
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn bind_conflict_is_a_typed_error() {
    let taken = std::net::TcpListener::bind("127.0.0.7:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let spec = ListenerSpec {
        addr,
        ..spec(Transport::Tcp, "127.0.0.7:0")
    };
    match Transports::start(&[spec], TransportConfig::default()) {
        Err(TransportError::Bind { addr: a, .. }) => assert_eq!(a, addr),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("bound a port that is in use"),
    }
}

#[tokio::test]
async fn shutdown_closes_connections_and_ends_the_channel() {
    let (t, mut rx) = start(
        &[
            spec(Transport::Udp, "127.0.0.8:0"),
            spec(Transport::Tcp, "127.0.0.8:0"),
        ],
        TransportConfig::default(),
    );
    let tcp_addr = local(&t, 1);
    let mut client = within("connect", TcpStream::connect(tcp_addr))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .write_all(&invite())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    next_inbound(&mut rx).await;

    within("shutdown", t.shutdown()).await;
    assert!(closed_by_peer(&mut client).await);
    // Every task is gone, so every sender is gone.
    assert!(within("the channel to end", rx.recv()).await.is_none());
    // The listening socket is closed: nobody accepts there any more.
    assert!(TcpStream::connect(tcp_addr).await.is_err());
}

#[tokio::test]
async fn udp_port_conflict_is_a_bind_error() {
    // A second daemon (or two realms on one address) must not silently
    // share a UDP port.
    let (t, _rx) = start(
        &[spec(Transport::Udp, "127.0.0.10:0")],
        TransportConfig::default(),
    );
    let taken = ListenerSpec {
        addr: local(&t, 0),
        ..spec(Transport::Udp, "127.0.0.10:0")
    };
    match Transports::start(&[taken], TransportConfig::default()) {
        Err(TransportError::Bind { addr, .. }) => assert_eq!(addr, local(&t, 0)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second UDP socket bound the same port"),
    }
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn tcp_backpressure_delivers_everything_in_order() {
    // A one-slot channel and a core that is not reading: the connection
    // waits instead of dropping, and every message arrives once drained.
    let config = TransportConfig {
        channel_capacity: 1,
        ..TransportConfig::default()
    };
    let (t, mut rx, mut client) = tcp_pair(config).await;
    const SENT: usize = 50;
    let mut burst = Vec::new();
    for _ in 0..SENT {
        burst.extend_from_slice(&invite());
        burst.extend_from_slice(b"\r\n\r\n");
    }
    client
        .write_all(&burst)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..SENT {
        let inbound = next_inbound(&mut rx).await;
        assert_eq!(
            message(&inbound).method(),
            Some(crate::sip::Method::Invite),
            "message {i}"
        );
    }
    // Every ping was answered, none lost while the connection waited.
    assert_eq!(
        read_exactly(&mut client, 2 * SENT).await,
        b"\r\n".repeat(SENT)
    );
    let s = stats(&t, 0);
    assert_eq!((s.messages_in, s.dropped_overload), (SENT as u64, 0));
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn dropping_the_handle_stops_the_tasks() {
    let (t, mut rx, mut client) = tcp_pair(TransportConfig::default()).await;
    client
        .write_all(&invite())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    next_inbound(&mut rx).await;
    drop(t);
    assert!(closed_by_peer(&mut client).await);
    assert!(within("the channel to end", rx.recv()).await.is_none());
}

#[tokio::test]
async fn listeners_are_added_reconfigured_and_removed_while_others_run() {
    let (t, mut rx) = start(
        &[spec(Transport::Udp, "127.0.0.9:0")],
        TransportConfig::default(),
    );
    let first = local(&t, 0);
    let peer = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A new UDP listener and a new TCP listener take traffic at once.
    let udp = t
        .add(&spec(Transport::Udp, "127.0.0.9:0"))
        .unwrap_or_else(|e| panic!("add failed: {e}"));
    let tcp = t
        .add(&spec(Transport::Tcp, "127.0.0.9:0"))
        .unwrap_or_else(|e| panic!("add failed: {e}"));
    assert_eq!((udp, tcp), (ListenerId(1), ListenerId(2)));
    peer.send_to(&invite(), local(&t, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_inbound(&mut rx).await.listener, udp);
    let mut client = within("connect", TcpStream::connect(local(&t, 2)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .write_all(&invite())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_inbound(&mut rx).await.listener, tcp);

    // In place: a new realm name and buffer size; the configured address
    // can't change.
    let renamed = ListenerSpec {
        realm: "renamed".to_owned(),
        recv_buffer: Some(512 * 1024),
        ..spec(Transport::Udp, "127.0.0.9:0")
    };
    t.reconfigure(udp, &renamed)
        .unwrap_or_else(|e| panic!("reconfigure failed: {e}"));
    assert_eq!(t.spec(udp).map(|s| s.realm), Some("renamed".to_owned()));
    let moved = ListenerSpec {
        addr: first,
        ..renamed.clone()
    };
    assert!(matches!(
        t.reconfigure(udp, &moved),
        Err(TransportError::NotInPlace { .. })
    ));
    peer.send_to(&invite(), local(&t, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_inbound(&mut rx).await.listener, udp);

    // Removing the TCP listener closes its connections and its socket;
    // removing the UDP one frees its port for a new bind.
    let tcp_addr = local(&t, 2);
    assert!(t.remove(tcp));
    assert!(!t.remove(tcp), "removed twice");
    assert!(closed_by_peer(&mut client).await);
    assert!(t.local_addr(tcp).is_none());
    let udp_addr = local(&t, 1);
    assert!(t.remove(udp));
    let out = Outbound {
        transport: Transport::Udp,
        from_listener: udp,
        to: peer.local_addr().unwrap_or_else(|e| panic!("{e}")),
        connection: None,
        bytes: ringing(),
    };
    assert!(matches!(
        t.send(out),
        Err(TransportError::UnknownListener(_))
    ));
    let rebound = within("the removed ports to be free", async {
        loop {
            let again = t.add(&ListenerSpec {
                addr: udp_addr,
                ..spec(Transport::Udp, "127.0.0.9:0")
            });
            let tcp_again = std::net::TcpListener::bind(tcp_addr);
            if let (Ok(id), Ok(_)) = (&again, &tcp_again) {
                return *id;
            }
            if let Ok(id) = again {
                t.remove(id);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Each retry that found the TCP port still busy used an id too.
    assert!(rebound.0 >= 3, "ids are never reused: {rebound:?}");

    // The first listener never noticed.
    peer.send_to(&invite(), first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next_inbound(&mut rx).await.listener, ListenerId(0));
    within("shutdown", t.shutdown()).await;
}

#[test]
fn a_reload_keeps_rebinds_and_retires_by_transport_and_address() {
    let running = vec![
        (ListenerId(0), spec(Transport::Udp, "192.0.2.1:5060")),
        (ListenerId(1), spec(Transport::Tcp, "192.0.2.1:5060")),
        (ListenerId(4), spec(Transport::Udp, "192.0.2.2:5060")),
    ];
    let renamed = ListenerSpec {
        realm: "carrier".to_owned(),
        recv_buffer: Some(1 << 20),
        ..spec(Transport::Udp, "192.0.2.1:5060")
    };
    let wanted = vec![
        renamed.clone(),
        // The port moved: a new listener, the old one retires.
        spec(Transport::Tcp, "192.0.2.1:5070"),
        spec(Transport::Udp, "192.0.2.2:5060"),
        spec(Transport::Tcp, "[2001:db8::1]:5060"),
    ];
    let plan = plan_listeners(&running, &wanted);
    assert_eq!(
        plan.keep,
        vec![
            (ListenerId(0), renamed),
            (ListenerId(4), spec(Transport::Udp, "192.0.2.2:5060")),
        ]
    );
    assert_eq!(
        plan.bind,
        vec![
            spec(Transport::Tcp, "192.0.2.1:5070"),
            spec(Transport::Tcp, "[2001:db8::1]:5060"),
        ]
    );
    assert_eq!(plan.retire, vec![ListenerId(1)]);
    // The same configuration again changes nothing.
    let specs: Vec<ListenerSpec> = running.iter().map(|(_, s)| s.clone()).collect();
    let again = plan_listeners(&running, &specs);
    assert_eq!(
        (again.keep.len(), again.bind.len(), again.retire.len()),
        (3, 0, 0)
    );
}
