//! Loopback tests of the screen before parsing and of overload shedding
//! (the shield's own rules are tested on a virtual clock in `guard`). The
//! shield's rates here are either tiny (to ban within a few packets) or
//! huge (to never limit), so the wall clock of the tasks can't flake them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::*;
use crate::config::Config;
use crate::guard::{Seed, Trust};

const WAIT: Duration = Duration::from_secs(5);

/// Realm `test`; `protection` is spliced into `[protection]`, and
/// 127.0.0.3 is trusted (the realm's networks).
fn shield(protection: &str) -> Arc<Shield> {
    let text = format!(
        "[protection]\n{protection}\n\n[[realm]]\nname = \"test\"\n\
         listen = [{{ transport = \"udp\", address = \"127.0.0.1:5060\" }}]\n\
         media = {{ address = \"127.0.0.1\" }}\nnetworks = [\"127.0.0.3/32\"]\n"
    );
    let config = Config::from_str_named(&text, "screen-test")
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
    let trust = Trust::new(&config, |_, _| None);
    Arc::new(Shield::from_config(clock(), Seed([7, 11]), &config, &trust))
}

fn spec(transport: Transport) -> ListenerSpec {
    ListenerSpec {
        realm: "test".to_owned(),
        transport,
        addr: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        recv_buffer: Some(256 * 1024),
        send_buffer: None,
        freebind: false,
    }
}

fn start(
    transport: Transport,
    config: TransportConfig,
    shield: &Arc<Shield>,
) -> (Transports, mpsc::Receiver<Event>, SocketAddr) {
    let (t, rx) = Transports::start_shielded(&[spec(transport)], config, Some(Arc::clone(shield)))
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    let addr = t
        .local_addr(ListenerId(0))
        .unwrap_or_else(|| panic!("no listener"));
    (t, rx, addr)
}

fn invite() -> Vec<u8> {
    b"INVITE sip:bob@example.com SIP/2.0\r\n\
      Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
      Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n\
      From: <sip:alice@example.com>;tag=1928301774\r\n\
      Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n"
        .to_vec()
}

fn ringing() -> Vec<u8> {
    b"SIP/2.0 180 Ringing\r\n\
      Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
      To: <sip:bob@example.com>;tag=a6c85cf\r\n\
      From: <sip:alice@example.com>;tag=1928301774\r\n\
      Call-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContent-Length: 0\r\n\r\n"
        .to_vec()
}

async fn udp_from(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"))
}

async fn send(socket: &UdpSocket, to: SocketAddr, bytes: &[u8]) {
    socket
        .send_to(bytes, to)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Polls until `cond` holds, bounded by [`WAIT`].
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = clock() + WAIT;
    while !cond() {
        assert!(clock() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn stats(t: &Transports) -> StatsSnapshot {
    t.stats(ListenerId(0))
        .unwrap_or_else(|| panic!("no listener"))
}

/// Rate 1/s, burst 1: the second message is limited (debt 1), the third
/// bans (debt 2 > a burst of 1).
const TINY: &str = "request_rate = 1\nrequest_burst = 1\nban_secs = 60";

#[tokio::test]
async fn udp_flooder_is_banned_and_its_datagrams_are_never_parsed() {
    let shield = shield(TINY);
    let (t, mut rx, server) = start(Transport::Udp, TransportConfig::default(), &shield);
    let client = udp_from("127.0.0.1").await;
    for _ in 0..3 {
        send(&client, server, &invite()).await;
    }
    // Garbage from a banned source is not even parsed.
    send(&client, server, b"\x00garbage").await;
    let realm = shield.realm("test");
    until("the ban and the drop", || {
        shield.counts().realms[0].1.banned == 2
    })
    .await;
    let counts = shield.counts().realms[0].1;
    assert_eq!((counts.rate_limited, counts.bans), (1, 1));
    assert!(shield.is_banned(
        clock(),
        realm,
        "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"))
    ));
    let s = stats(&t);
    assert_eq!((s.messages_in, s.parse_errors), (1, 0));
    assert!(matches!(rx.try_recv(), Ok(Event::Inbound(_))));
    assert!(
        rx.try_recv().is_err(),
        "a screened datagram reached the core"
    );
    // A trusted source is never screened out.
    let trusted = udp_from("127.0.0.3").await;
    for _ in 0..5 {
        send(&trusted, server, &invite()).await;
    }
    until("the trusted source's datagrams", || {
        stats(&t).messages_in == 6
    })
    .await;
    t.shutdown().await;
}

#[tokio::test]
async fn udp_sheds_untrusted_requests_past_half_the_channel() {
    // Never limits on its own.
    let shield = shield("request_rate = 100000\nrequest_burst = 100000");
    let config = TransportConfig {
        channel_capacity: 8,
        ..TransportConfig::default()
    };
    let (t, mut rx, server) = start(Transport::Udp, config, &shield);
    let untrusted = udp_from("127.0.0.2").await;
    let trusted = udp_from("127.0.0.3").await;
    // Up to half full (the fifth finds four of eight taken), untrusted
    // requests go in.
    for i in 1..=5 {
        send(&untrusted, server, &invite()).await;
        until("an untrusted request", || stats(&t).messages_in == i).await;
    }
    // Past half: shed, unparsed.
    for i in 6..=8 {
        send(&untrusted, server, &invite()).await;
        until("an untrusted request", || stats(&t).messages_in == i).await;
    }
    assert_eq!(stats(&t).shed_overload, 3);
    // Responses and trusted requests still go in, until the channel is full.
    send(&untrusted, server, &ringing()).await;
    send(&trusted, server, &invite()).await;
    send(&trusted, server, &invite()).await;
    send(&trusted, server, &invite()).await;
    send(&trusted, server, &invite()).await;
    send(&trusted, server, &invite()).await;
    until("the rest", || stats(&t).messages_in == 14).await;
    let s = stats(&t);
    assert_eq!((s.shed_overload, s.dropped_overload), (3, 3));
    let mut delivered = 0;
    while rx.try_recv().is_ok() {
        delivered += 1;
    }
    assert_eq!(delivered, 8);
    // Without a shield nothing is shed: covered by the transport tests.
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_banned_source_is_closed_at_accept() {
    let shield = shield(TINY);
    let (t, _rx, server) = start(Transport::Tcp, TransportConfig::default(), &shield);
    let realm = shield.realm("test");
    let ip = "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
    assert!(shield.ban(clock(), realm, ip));
    let mut client = TcpStream::connect(server)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    assert!(closed(&mut client).await);
    until("the drop to be counted", || {
        shield.counts().realms[0].1.banned == 1
    })
    .await;
    assert_eq!(stats(&t).connections_total, 0);
    t.shutdown().await;
}

#[tokio::test]
async fn tcp_flooder_loses_messages_then_its_connection() {
    // The connection takes the one token: every message is over the rate;
    // the second message bans.
    let shield = shield(TINY);
    let (t, mut rx, server) = start(Transport::Tcp, TransportConfig::default(), &shield);
    let mut client = TcpStream::connect(server)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"));
    let mut bytes = invite();
    bytes.extend(invite());
    bytes.extend(invite());
    client
        .write_all(&bytes)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(closed(&mut client).await);
    let counts = shield.counts().realms[0].1;
    assert_eq!((counts.rate_limited, counts.bans), (1, 1));
    assert!(
        !a_message_waits(&mut rx),
        "a screened message reached the core"
    );
    until("the close", || stats(&t).connections_open == 0).await;
    t.shutdown().await;
}

/// Reads until the peer closes: `true` on EOF or reset.
async fn closed(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
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
