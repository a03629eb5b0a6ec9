//! The ng sockets (IO shell): a UDP socket, and optionally a TCP listener
//! whose connections carry the same messages back to back (rtpengine's
//! `--listen-tcp-ng`, `docs/tcpng_control_protocol.md`: each message is
//! `<cookie> <bencoded dictionary>`, the dictionary delimiting itself).
//!
//! A datagram or connection from outside `[ng] allow` (loopback only when
//! empty) is dropped before it is read, and counted.
//!
//! Received messages go to the daemon's loop (which owns the
//! [`NgEngine`](super::NgEngine), beside the B2BUA core and the media
//! relay) through a bounded channel; replies come back through
//! [`NgSockets::send`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;
use prometheus::IntCounterVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::ReplyTo;
use super::codec::Limits;
use crate::config::ng_permits;

/// A message received from a client.
#[derive(Debug)]
pub struct Inbound {
    /// Where the reply goes.
    pub from: ReplyTo,
    /// The message.
    pub bytes: Vec<u8>,
}

type TcpWriters = Arc<Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>>;

/// The bound sockets.
pub struct NgSockets {
    udp: Arc<UdpSocket>,
    tcp: TcpWriters,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NgSockets {
    /// Binds `udp` (and `tcp`), and starts receiving into the returned
    /// channel what sources in `allow` send (see
    /// [`ng_permits`]); others are counted in `refused` (label: `udp` or
    /// `tcp`) and dropped.
    pub async fn bind(
        udp: SocketAddr,
        tcp: Option<SocketAddr>,
        limits: Limits,
        allow: Vec<IpNet>,
        refused: IntCounterVec,
    ) -> std::io::Result<(NgSockets, mpsc::Receiver<Inbound>)> {
        let allow: Arc<[IpNet]> = allow.into();
        let (tx, rx) = mpsc::channel(1024);
        let socket = Arc::new(UdpSocket::bind(udp).await?);
        let mut tasks = Vec::new();
        let receiver = Arc::clone(&socket);
        let udp_tx = tx.clone();
        let (udp_allow, udp_refused) = (Arc::clone(&allow), refused.with_label_values(&["udp"]));
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match receiver.recv_from(&mut buf).await {
                    Ok((_, from)) if !ng_permits(&udp_allow, from.ip()) => {
                        udp_refused.inc();
                        debug!(%from, "ng message dropped: source not in ng.allow");
                    }
                    Ok((n, from)) => {
                        let message = Inbound {
                            from: ReplyTo::Udp(from),
                            bytes: buf[..n].to_vec(),
                        };
                        // Full: the loop is behind; the client retransmits.
                        if udp_tx.try_send(message).is_err() {
                            debug!(%from, "ng message dropped: queue full");
                        }
                    }
                    Err(e) => debug!(error = %e, "ng UDP receive failed"),
                }
            }
        }));
        let writers: TcpWriters = Arc::default();
        if let Some(addr) = tcp {
            let listener = TcpListener::bind(addr).await?;
            let writers = Arc::clone(&writers);
            let refused = refused.with_label_values(&["tcp"]);
            tasks.push(tokio::spawn(accept(
                listener, tx, writers, limits, allow, refused,
            )));
        }
        Ok((
            NgSockets {
                udp: socket,
                tcp: writers,
                tasks,
            },
            rx,
        ))
    }

    /// The UDP socket's address.
    pub fn udp_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Sends a reply (UDP: at once, dropped if the socket is full; TCP:
    /// queued to its connection).
    pub fn send(&self, to: ReplyTo, bytes: Vec<u8>) {
        match to {
            ReplyTo::Udp(addr) => {
                if let Err(e) = self.udp.try_send_to(&bytes, addr) {
                    debug!(%addr, error = %e, "ng reply not sent");
                }
            }
            ReplyTo::Tcp(id) => {
                let writer = self
                    .tcp
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                    .cloned();
                if let Some(writer) = writer {
                    let _ = writer.try_send(bytes);
                }
            }
        }
    }
}

impl Drop for NgSockets {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept(
    listener: TcpListener,
    tx: mpsc::Sender<Inbound>,
    writers: TcpWriters,
    limits: Limits,
    allow: Arc<[IpNet]>,
    refused: prometheus::IntCounter,
) {
    let mut next = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "ng TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if !ng_permits(&allow, peer.ip()) {
            refused.inc();
            debug!(%peer, "ng TCP connection closed: source not in ng.allow");
            drop(stream);
            continue;
        }
        next += 1;
        let id = next;
        let (mut read, mut write) = stream.into_split();
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
        writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, out_tx);
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let tx = tx.clone();
        let writers = Arc::clone(&writers);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16_384];
            loop {
                let n = match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(len) = message_len(&buf) {
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    let _ = tx
                        .send(Inbound {
                            from: ReplyTo::Tcp(id),
                            bytes,
                        })
                        .await;
                }
                if buf.len() > limits.max_message {
                    debug!(%peer, "ng TCP message too large: connection closed");
                    break;
                }
            }
            writers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }
}

/// The length of the first complete message in `buf` (cookie, space and
/// one bencoded dictionary), leading whitespace included; `None` until it
/// is all there. A message that can never complete is cut at the first
/// byte that breaks it, so a broken client gets an error reply rather than
/// a hang.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|b| !b.is_ascii_whitespace())?;
    let space = start + memchr::memchr(b' ', &buf[start..])?;
    let body = &buf[space + 1..];
    let end = bencode_end(body, 0, 0)?;
    match end {
        Ok(end) => Some(space + 1 + end),
        Err(at) => Some(space + 1 + at.max(1).min(body.len())),
    }
}

/// `Some(Ok(end))` past one value at `at`; `Some(Err(at))` where it is
/// broken; `None` when more bytes are needed.
fn bencode_end(b: &[u8], at: usize, depth: usize) -> Option<Result<usize, usize>> {
    if depth > Limits::default().max_depth {
        return Some(Err(at));
    }
    match *b.get(at)? {
        b'd' | b'l' => {
            let mut i = at + 1;
            loop {
                if *b.get(i)? == b'e' {
                    return Some(Ok(i + 1));
                }
                match bencode_end(b, i, depth + 1)? {
                    Ok(end) => i = end,
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        b'i' => {
            let end = memchr::memchr(b'e', &b[at..])?;
            Some(Ok(at + end + 1))
        }
        b'0'..=b'9' => {
            let colon = memchr::memchr(b':', &b[at..b.len().min(at + 9)]);
            let Some(colon) = colon else {
                return if b.len() >= at + 9 {
                    Some(Err(at))
                } else {
                    None
                };
            };
            let len: usize = std::str::from_utf8(&b[at..at + colon]).ok()?.parse().ok()?;
            let end = at + colon + 1 + len;
            (end <= b.len()).then_some(Ok(end))
        }
        _ => Some(Err(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_messages_are_cut_where_each_dictionary_ends() {
        let two = b"a1 d7:command4:pinge a2 d7:command4:pinge";
        let first = message_len(two).expect("complete");
        assert_eq!(&two[..first], b"a1 d7:command4:pinge");
        let rest = &two[first..];
        assert_eq!(message_len(rest), Some(rest.len()));
        for cut in 0..first {
            assert_eq!(message_len(&two[..cut]), None, "prefix {cut}");
        }
        let offer = include_bytes!("fixtures/kamailio-5.6/offer.bin");
        assert_eq!(message_len(offer), Some(offer.len()));
        // Broken: cut so the codec answers an error.
        assert!(message_len(b"c x").is_some());
    }

    /// Sources outside the allow list are dropped before the loop sees
    /// them, and counted per transport; listed ones pass.
    #[tokio::test]
    async fn only_allowed_sources_reach_the_loop() {
        use std::time::Duration;
        let refused = IntCounterVec::new(
            prometheus::Opts::new("refused_total", "test"),
            &["transport"],
        )
        .expect("counter");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let probe = std::net::TcpListener::bind(any).expect("free port");
        let tcp = probe.local_addr().expect("addr");
        drop(probe);
        let (sockets, mut inbound) = NgSockets::bind(
            any,
            Some(tcp),
            Limits::default(),
            vec!["127.0.0.2/32".parse().expect("net")],
            refused.clone(),
        )
        .await
        .expect("bind");
        let udp = sockets.udp_addr().expect("addr");
        let ping = b"c1 d7:command4:pinge";

        let outsider = UdpSocket::bind("127.0.0.3:0").await.expect("bind");
        outsider.send_to(ping, udp).await.expect("send");
        let insider = UdpSocket::bind("127.0.0.2:0").await.expect("bind");
        insider.send_to(ping, udp).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
            .await
            .expect("the allowed source's message arrives")
            .expect("open");
        match got.from {
            ReplyTo::Udp(from) => assert_eq!(from, insider.local_addr().expect("addr")),
            ReplyTo::Tcp(_) => panic!("came over UDP"),
        }
        assert_eq!(refused.with_label_values(&["udp"]).get(), 1);

        // TCP: an outsider's connection is closed unread.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.3:0".parse().expect("addr"))
            .expect("bind");
        let mut stream = socket.connect(tcp).await.expect("connect");
        let _ = stream.write_all(ping).await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0, "no reply to an outsider");
        assert_eq!(refused.with_label_values(&["tcp"]).get(), 1);
        assert!(
            inbound.try_recv().is_err(),
            "nothing of the outsider's reached the loop"
        );
    }
}
