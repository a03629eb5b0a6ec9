//! A minimal SIP-over-TLS peer for the TLS tests (the packaged SIPp has no
//! TLS): rustls configurations from [`crate::pki`] files, a framed SIP
//! stream over any async byte stream, and the few message builders a
//! caller (INVITE, ACK, BYE) and a callee (100/200 to an INVITE, 200 to a
//! BYE) need. Good enough for calls through the SBC, nothing more: one
//! dialog per connection, no retransmissions (TLS is reliable).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pki::Issued;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("open CA file") {
        roots
            .add(cert.expect("CA PEM"))
            .expect("CA is a trust anchor");
    }
    Arc::new(roots)
}

fn identity(issued: &Issued) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_file_iter(&issued.certificate)
        .expect("open certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(&issued.private_key).expect("key PEM");
    (chain, key)
}

/// A client that trusts `ca` and presents `client` when asked.
pub fn client_config(ca: &Path, client: Option<&Issued>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots(ca));
    let config = match client {
        Some(issued) => {
            let (chain, key) = identity(issued);
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A server presenting `server`, requiring a client certificate issued by
/// `client_ca` when given.
pub fn server_config(server: &Issued, client_ca: Option<&Path>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = identity(server);
    Arc::new(
        builder
            .with_single_cert(chain, key)
            .expect("server certificate"),
    )
}

/// SIP messages over a stream, framed by Content-Length; CRLF keepalives
/// are skipped.
pub struct SipStream<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SipStream<S> {
    /// Frames `stream`.
    pub fn new(stream: S) -> Self {
        SipStream {
            stream,
            buf: Vec::new(),
        }
    }

    /// The stream underneath (e.g. to look at the TLS session).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Writes one message.
    pub async fn send(&mut self, message: &str) {
        self.stream
            .write_all(message.as_bytes())
            .await
            .expect("write a SIP message");
        self.stream.flush().await.expect("flush");
    }

    /// The next message, or `None` when the peer closed or nothing came
    /// within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.next()).await.ok().flatten()
    }

    async fn next(&mut self) -> Option<String> {
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let length: usize = header(&head, "Content-Length")
                    .or_else(|| header(&head, "l"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + length {
                    let message: Vec<u8> = self.buf.drain(..end + 4 + length).collect();
                    return Some(String::from_utf8_lossy(&message).into_owned());
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// The value of the first header `name` (case-insensitive) in `message`.
pub fn header<'m>(message: &'m str, name: &str) -> Option<&'m str> {
    headers(message, name).into_iter().next()
}

/// Every value of header `name` (one per header line).
pub fn headers<'m>(message: &'m str, name: &str) -> Vec<&'m str> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// The status code of a response, `None` for a request.
pub fn status(message: &str) -> Option<u16> {
    message
        .strip_prefix("SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

/// The method of a request.
pub fn method(message: &str) -> Option<&str> {
    (!message.starts_with("SIP/2.0"))
        .then(|| message.split(' ').next())
        .flatten()
}

/// The URI inside `<...>` of a name-addr value.
pub fn uri_of(value: &str) -> &str {
    value
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or(value, |(uri, _)| uri)
}

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// A response to `request`: its Via, From, Call-ID and CSeq, its To with
/// `to_tag` added, and for a 2xx to an INVITE a Contact and SDP.
pub fn respond(
    request: &str,
    code: u16,
    to_tag: &str,
    contact: &str,
    media: Option<(&str, u16)>,
) -> String {
    let reason = match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        _ => "Whatever",
    };
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in headers(request, "Via") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    let to = header(request, "To").unwrap_or_default();
    let to = if code > 100 && !to.contains("tag=") {
        format!("{to};tag={to_tag}")
    } else {
        to.to_owned()
    };
    for (name, value) in [
        ("From", header(request, "From").unwrap_or_default()),
        ("To", to.as_str()),
        ("Call-ID", header(request, "Call-ID").unwrap_or_default()),
        ("CSeq", header(request, "CSeq").unwrap_or_default()),
    ] {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = match media {
        Some((ip, port)) if code == 200 => {
            out.push_str(&format!(
                "Contact: <{contact}>\r\nContent-Type: application/sdp\r\n"
            ));
            sdp(ip, port)
        }
        _ => String::new(),
    };
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

/// A caller's dialog: what its in-dialog requests need.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Our address as written in Via and Contact (`ip:port`).
    pub local: String,
    /// The Request-URI of the INVITE.
    pub target: String,
    /// Call-ID.
    pub call_id: String,
    /// From tag.
    pub tag: String,
    /// The remote target (the 2xx's Contact) once answered.
    pub remote_target: Option<String>,
    /// The To header of the 2xx (with the callee's tag).
    pub to: Option<String>,
    /// The last CSeq number used.
    pub cseq: u32,
}

impl Caller {
    /// A new dialog from `local` to `target` (e.g. `sips:100@127.0.20.1:5061`).
    pub fn new(local: &str, target: &str, call_id: &str) -> Caller {
        Caller {
            local: local.to_owned(),
            target: target.to_owned(),
            call_id: call_id.to_owned(),
            tag: format!("{call_id}-tag"),
            remote_target: None,
            to: None,
            cseq: 0,
        }
    }

    fn request(&mut self, method: &str, uri: &str, cseq: u32, body: &str) -> String {
        let to = self
            .to
            .clone()
            .unwrap_or_else(|| format!("<{}>", self.target));
        let ip = self.local.rsplit_once(':').map_or("", |(ip, _)| ip);
        let mut out = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{call}{method}{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{ip}>;tag={tag}\r\nTo: {to}\r\n\
             Call-ID: {call}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local};transport=tls>\r\n",
            local = self.local,
            call = self.call_id,
            tag = self.tag,
        );
        if !body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        out
    }

    /// The INVITE, offering media at `media`.
    pub fn invite(&mut self, media: (&str, u16)) -> String {
        self.invite_with(&sdp(media.0, media.1))
    }

    /// The INVITE, offering `sdp`.
    pub fn invite_with(&mut self, sdp: &str) -> String {
        self.cseq = 1;
        let target = self.target.clone();
        self.request("INVITE", &target, 1, sdp)
    }

    /// Takes the 2xx's remote target and To tag.
    pub fn answered(&mut self, ok: &str) {
        self.remote_target = header(ok, "Contact").map(|c| uri_of(c).to_owned());
        self.to = header(ok, "To").map(str::to_owned);
    }

    /// The ACK of the 2xx.
    pub fn ack(&mut self) -> String {
        let uri = self
            .remote_target
            .clone()
            .unwrap_or_else(|| self.target.clone());
        self.request("ACK", &uri, 1, "")
    }

    /// A BYE.
    pub fn bye(&mut self) -> String {
        self.cseq += 1;
        let uri = self
            .remote_target
            .clone()
            .unwrap_or_else(|| self.target.clone());
        let cseq = self.cseq;
        self.request("BYE", &uri, cseq, "")
    }
}
