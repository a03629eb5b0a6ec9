//! Loopback tests of the TCP edge protections: per-source caps, the
//! untrusted share, slow clients, the refusal log limiter.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::*;
use crate::config::Config;
use crate::guard::{Seed, Trust};

const WAIT: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn spec() -> ListenerSpec {
    ListenerSpec {
        realm: "test".to_owned(),
        transport: Transport::Tcp,
        addr: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        recv_buffer: None,
        send_buffer: None,
    }
}

/// A shield trusting 127.0.0.5 on realm `test`, with rates that never
/// limit these tests.
fn shield() -> Arc<Shield> {
    let text = "[protection]\nrequest_rate = 100000\nrequest_burst = 100000\n\n\
                [[realm]]\nname = \"test\"\n\
                listen = [{ transport = \"tcp\", address = \"127.0.0.1:5060\" }]\n\
                media = { address = \"127.0.0.1\" }\nnetworks = [\"127.0.0.5/32\"]\n";
    let config = Config::from_str_named(text, "tcp-test").unwrap_or_else(|e| panic!("{e}"));
    let trust = Trust::new(&config, |_, _| None);
    Arc::new(Shield::from_config(clock(), Seed([3, 5]), &config, &trust))
}

fn start(config: TransportConfig) -> (Transports, mpsc::Receiver<Event>, SocketAddr) {
    let (t, rx) = Transports::start_shielded(&[spec()], config, Some(shield()))
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    let addr = t
        .local_addr(ListenerId(0))
        .unwrap_or_else(|| panic!("no listener"));
    (t, rx, addr)
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket
        .bind(format!("{ip}:0").parse().unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    within("connect", socket.connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect from {ip}: {e}"))
}

/// Whether the SBC closes `stream` within `wait` (true) or keeps it open.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    read.is_ok()
}

fn stats(t: &Transports) -> StatsSnapshot {
    t.stats(ListenerId(0)).unwrap_or_else(|| panic!("no stats"))
}

async fn until(t: &Transports, what: &str, cond: impl Fn(&StatsSnapshot) -> bool) {
    within(what, async {
        while !cond(&stats(t)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

fn options(n: u32) -> Vec<u8> {
    format!(
        "OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.9;branch=z9hG4bK-tcp-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.9>;tag={n}\r\nTo: <sip:ping@127.0.0.1>\r\n\
         Call-ID: tcp-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn one_source_holds_its_cap_untrusted_ones_their_share_and_trunks_the_rest() {
    let config = TransportConfig {
        max_connections: 10,
        max_connections_per_source: 3,
        untrusted_connections_percent: 50,
        ..TransportConfig::default()
    };
    let (t, _rx, addr) = start(config);
    // One untrusted source: 3, then refused.
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(connect_from("127.0.0.1", addr).await);
    }
    until(&t, "3 connections", |s| s.connections_open == 3).await;
    let mut fourth = connect_from("127.0.0.1", addr).await;
    assert!(
        closed_within(&mut fourth, WAIT).await,
        "the 4th from one source"
    );
    // Another untrusted source: 2 fill the untrusted share of 5.
    let mut second = vec![connect_from("127.0.0.2", addr).await];
    second.push(connect_from("127.0.0.2", addr).await);
    until(&t, "5 connections", |s| s.connections_open == 5).await;
    let mut over_share = connect_from("127.0.0.3", addr).await;
    assert!(closed_within(&mut over_share, WAIT).await, "over the share");
    // The trusted peer still gets in, beyond the untrusted share.
    let mut trunk = Vec::new();
    for _ in 0..5 {
        trunk.push(connect_from("127.0.0.5", addr).await);
    }
    until(&t, "10 connections", |s| s.connections_open == 10).await;
    assert_eq!(stats(&t).connections_rejected, 2);
    assert!(
        !closed_within(&mut trunk[0], Duration::from_millis(100)).await,
        "a trunk's connection stays"
    );
    {
        let table = t.shared.table();
        assert_eq!(table.untrusted_of(ListenerId(0)), (5, 2));
    }
    // A source's slot comes back when one of its connections closes.
    drop(first.pop());
    until(&t, "the close", |s| s.connections_open == 9).await;
    let mut again = connect_from("127.0.0.1", addr).await;
    until(&t, "the new one", |s| s.connections_open == 10).await;
    assert!(!closed_within(&mut again, Duration::from_millis(100)).await);
    drop((first, second, trunk, again));
    until(&t, "every close", |s| s.connections_open == 0).await;
    assert_eq!(t.shared.table().untrusted_of(ListenerId(0)), (0, 0));
    within("shutdown", t.shutdown()).await;
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_and_talking_ones_stay() {
    let config = TransportConfig {
        message_timeout: Duration::from_millis(300),
        tcp_idle_timeout: Duration::from_secs(30),
        ..TransportConfig::default()
    };
    let (t, mut rx, addr) = start(config);
    // Silent: no first message within 300 ms.
    let mut silent = connect_from("127.0.0.1", addr).await;
    let started = clock();
    assert!(closed_within(&mut silent, WAIT).await);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Slowloris: after one whole message (past the first-message
    // deadline), a byte every 100 ms never completes the next.
    let mut slow = connect_from("127.0.0.1", addr).await;
    slow.write_all(&options(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = within("the first message", rx.recv()).await;
    assert!(matches!(first, Some(Event::Inbound(_))));
    let message = options(1);
    let trickle = async {
        for byte in message.iter().take(40) {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut = within("the trickle", trickle).await;
    assert!(
        cut || closed_within(&mut slow, WAIT).await,
        "the slow client is closed"
    );
    until(&t, "two too slow", |s| s.connections_too_slow == 2).await;
    // Talking: a whole message every 100 ms for a second stays up, well
    // past the message timeout.
    let mut talking = connect_from("127.0.0.1", addr).await;
    for n in 0..10 {
        talking
            .write_all(&options(n))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!closed_within(&mut talking, Duration::from_millis(100)).await);
    let mut delivered = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        delivered += 1;
    }
    assert_eq!(delivered, 10);
    assert_eq!(stats(&t).connections_too_slow, 2);
    within("shutdown", t.shutdown()).await;
}

#[test]
fn refusals_are_logged_once_per_period_with_the_count_held_back() {
    let t0 = clock();
    let mut log = RefusalLog::default();
    assert_eq!(log.refused(t0), Some(1), "the first is logged");
    for ms in 1..=500 {
        assert_eq!(log.refused(t0 + Duration::from_millis(ms)), None);
    }
    assert_eq!(
        log.refused(t0 + REFUSAL_LOG_EVERY),
        Some(501),
        "the next line carries every refusal since the last"
    );
    assert_eq!(log.refused(t0 + REFUSAL_LOG_EVERY * 3), Some(1));
}
