//! TLS under the stream transport (RFC 3261 §26.2, RFC 5630 §3): the
//! handshakes, and nothing else. A TLS listener accepts and connects like a
//! TCP one (same table, caps, deadlines and framing, in `tcp`); the stream
//! the connection task frames is the TLS stream instead of the socket.
//!
//! Each handshake runs in its connection's own task and is bounded by
//! [`TransportConfig::message_timeout`](super::TransportConfig): a peer that
//! stalls mid-handshake holds one connection slot until then, never the
//! accept loop. The configurations come from the [`TlsSettings`] in force
//! when the handshake starts, so a reload changes what new handshakes
//! present and verify, and nothing about connections already up.
//!
//! Failures are counted per listener, direction and [`TlsFailure`] reason.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::{ListenerId, ListenerStats, Shared};

/// Why a TLS handshake failed; a closed set, for the metric's label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// Not done within the message timeout.
    Timeout,
    /// The peer's certificate does not chain to a trusted CA (or its
    /// signature is bad).
    UntrustedCertificate,
    /// The peer's certificate does not carry the name it was verified for.
    NameMismatch,
    /// The peer's certificate is expired or not yet valid.
    ExpiredCertificate,
    /// A client certificate was required and none was presented.
    NoClientCertificate,
    /// The peer sent a TLS alert (it refused our certificate, or found no
    /// protocol version or cipher suite in common).
    AlertReceived,
    /// No protocol version, cipher suite or key exchange in common, or the
    /// peer broke the protocol (including plain SIP sent to a TLS port).
    Protocol,
    /// The connection closed or failed during the handshake.
    ConnectionClosed,
    /// The realm has no certificate, or no TLS client configuration.
    NotConfigured,
}

impl TlsFailure {
    /// How many reasons there are.
    pub const COUNT: usize = 9;

    /// Every reason, in the order of the counters.
    pub const ALL: [TlsFailure; Self::COUNT] = [
        TlsFailure::Timeout,
        TlsFailure::UntrustedCertificate,
        TlsFailure::NameMismatch,
        TlsFailure::ExpiredCertificate,
        TlsFailure::NoClientCertificate,
        TlsFailure::AlertReceived,
        TlsFailure::Protocol,
        TlsFailure::ConnectionClosed,
        TlsFailure::NotConfigured,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::UntrustedCertificate => "untrusted_certificate",
            TlsFailure::NameMismatch => "name_mismatch",
            TlsFailure::ExpiredCertificate => "expired_certificate",
            TlsFailure::NoClientCertificate => "no_client_certificate",
            TlsFailure::AlertReceived => "alert_received",
            TlsFailure::Protocol => "protocol",
            TlsFailure::ConnectionClosed => "connection_closed",
            TlsFailure::NotConfigured => "not_configured",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason a handshake that ended in `error` failed: rustls' error
    /// inside it, or the IO error itself.
    pub fn of(error: &io::Error) -> TlsFailure {
        use rustls::{CertificateError, Error};
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
            return TlsFailure::ConnectionClosed;
        };
        match tls {
            Error::InvalidCertificate(cert) => match cert {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsFailure::ExpiredCertificate,
                _ => TlsFailure::UntrustedCertificate,
            },
            Error::NoCertificatesPresented => TlsFailure::NoClientCertificate,
            Error::AlertReceived(_) => TlsFailure::AlertReceived,
            _ => TlsFailure::Protocol,
        }
    }
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of the handshake the SBC was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A peer connected to a TLS listener.
    Inbound,
    /// The SBC connected to a peer.
    Outbound,
}

impl ListenerStats {
    fn tls_failed(&self, side: Side, why: TlsFailure) {
        let row = match side {
            Side::Inbound => &self.tls_failures[0],
            Side::Outbound => &self.tls_failures[1],
        };
        ListenerStats::bump(&row[why.index()]);
    }
}

/// The realm of `listener` and its counters, if it still exists.
fn listener_of(shared: &Shared, listener: ListenerId) -> Option<(String, Arc<ListenerStats>)> {
    shared
        .listener(listener)
        .map(|l| (l.spec.realm.clone(), Arc::clone(&l.stats)))
}

/// Runs the server side of a handshake on an accepted connection.
pub(super) async fn accept(
    shared: &Shared,
    listener: ListenerId,
    stream: TcpStream,
    remote: SocketAddr,
) -> Result<server::TlsStream<TcpStream>, TlsFailure> {
    let Some((realm, stats)) = listener_of(shared, listener) else {
        return Err(TlsFailure::NotConfigured);
    };
    let config = shared.tls_settings().server(&realm);
    let result = match config {
        None => Err(TlsFailure::NotConfigured),
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(shared.config.message_timeout, handshake).await {
                Err(_) => Err(TlsFailure::Timeout),
                Ok(Err(e)) => Err(TlsFailure::of(&e)),
                Ok(Ok(stream)) => Ok(stream),
            }
        }
    };
    if let Err(why) = result {
        stats.tls_failed(Side::Inbound, why);
        // Debug: a scanner probing the port would otherwise flood the log;
        // the counter is the operator's signal.
        tracing::debug!(listener = listener.0, %realm, %remote, reason = %why, "TLS handshake failed");
    }
    result
}

/// Runs the client side of a handshake on a connection opened to `to`.
pub(super) async fn connect(
    shared: &Shared,
    listener: ListenerId,
    stream: TcpStream,
    to: SocketAddr,
) -> Result<client::TlsStream<TcpStream>, TlsFailure> {
    let Some((realm, stats)) = listener_of(shared, listener) else {
        return Err(TlsFailure::NotConfigured);
    };
    let client = shared.tls_settings().client(&realm, to);
    let result = match client {
        None => Err(TlsFailure::NotConfigured),
        Some((config, name)) => {
            let handshake = TlsConnector::from(config).connect(name, stream);
            match tokio::time::timeout(shared.config.message_timeout, handshake).await {
                Err(_) => Err(TlsFailure::Timeout),
                Ok(Err(e)) => Err(TlsFailure::of(&e)),
                Ok(Ok(stream)) => Ok(stream),
            }
        }
    };
    if let Err(why) = result {
        stats.tls_failed(Side::Outbound, why);
        // A trunk that can't be verified is a configuration problem worth
        // a warning each time (calls fail over because of it).
        tracing::warn!(listener = listener.0, %realm, %to, reason = %why, "TLS handshake with a peer failed");
    }
    result
}
