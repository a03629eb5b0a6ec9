//! The admin HTTP listener: `/metrics`, `/health/live`, `/health/ready`
//! (and `/health`, its alias) and `/calls`.
//!
//! Owns: a tokio TCP listener, a deliberately small HTTP/1.1 server (RFC 9112
//! request line and header fields, RFC 9110 status codes) that reads one
//! request head per connection, answers it and closes (`Connection: close`,
//! with a short bounded lingering close so the answer is not lost to a RST),
//! the readiness flag ([`Readiness`]) and the `/calls` hook ([`CallsProvider`]).
//!
//! May not: grow into a general web server. It only understands `GET` and
//! `HEAD` with an origin-form target and no body. Everything else is refused
//! before any work: 400 for a malformed or oversized head, 405 for another
//! method, 404 for an unknown path, 408 when the head does not arrive within
//! the read timeout (a slowloris client holds a slot for at most that long),
//! and 503 when [`AdminConfig::max_connections`] requests are already in
//! flight. It is an IO shell: it reads the clock (for `sbc_uptime_seconds`)
//! and owns sockets; request parsing ([`parse_request`]) is pure.
//!
//! Readiness: `/health/live` is 200 while the process serves HTTP at all;
//! `/health/ready` (and `/health`) is 200 only while the daemon has set
//! [`Readiness`] (it is false while starting and while draining), 503
//! otherwise, so a load balancer or orchestrator stops sending traffic first.
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};

/// Listener settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to listen, e.g. `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// Time a client has to deliver its whole request head, and to take the
    /// response.
    pub read_timeout: Duration,
    /// Largest request head (request line and header fields) accepted.
    pub max_request_bytes: usize,
    /// Connections served at once (at least 1); further ones get an
    /// immediate 503, and past twice this many they are just closed.
    pub max_connections: usize,
}

impl AdminConfig {
    /// Defaults suited to a Prometheus scraper and a few probes on `listen`.
    pub fn new(listen: SocketAddr) -> AdminConfig {
        AdminConfig {
            listen,
            read_timeout: Duration::from_secs(5),
            max_request_bytes: 8 * 1024,
            max_connections: 16,
        }
    }
}

/// Errors of the admin listener.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listen socket could not be bound: the address is in use, not
    /// local, or needs privileges. Change `metrics.listen` in the config.
    #[error("binding the admin listener to {addr} failed: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// Whether the daemon is ready for traffic; shared between the daemon (which
/// sets it) and the listener (which reports it). Starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Marks the daemon ready (true) or starting/draining (false).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// The current state.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The daemon's view of its calls, served as JSON on `/calls`.
///
/// Called on the listener's task for every request: it must not block. It
/// asks the call core (which alone can read its calls) and returns where
/// the answer will arrive, so nothing is built unless someone asks.
pub trait CallsProvider: Send + Sync {
    /// Asks for the current calls as JSON text; `None` when too many asks
    /// are waiting already. A receiver that never gets an answer (the core
    /// is gone or stuck) is answered 503 after [`CALLS_TIMEOUT`].
    fn request(&self) -> Option<oneshot::Receiver<Vec<u8>>>;
}

impl<F> CallsProvider for F
where
    F: Fn() -> Option<oneshot::Receiver<Vec<u8>>> + Send + Sync,
{
    fn request(&self) -> Option<oneshot::Receiver<Vec<u8>>> {
        self()
    }
}

/// How long `/calls` waits for the call core.
pub const CALLS_TIMEOUT: Duration = Duration::from_secs(2);

/// What the listener serves.
#[derive(Clone)]
pub struct AdminState {
    /// The registry `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// The flag `/health/ready` reports.
    pub readiness: Readiness,
    /// The `/calls` source; without one `/calls` is 404.
    pub calls: Option<Arc<dyn CallsProvider>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("metrics", &self.metrics)
            .field("readiness", &self.readiness)
            .field("calls", &self.calls.is_some())
            .finish()
    }
}

/// A bound admin listener; run it with [`AdminServer::serve`].
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: AdminConfig,
    state: AdminState,
}

impl AdminServer {
    /// Binds `config.listen`.
    pub async fn bind(config: AdminConfig, state: AdminState) -> Result<AdminServer, AdminError> {
        let bind_err = |source| AdminError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        tracing::info!(%local_addr, "admin listener bound");
        Ok(AdminServer {
            listener,
            local_addr,
            config,
            state,
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` turns true or its sender is dropped, then
    /// stops accepting and waits for the connections in flight before
    /// returning. Each connection is bounded: the read timeout for its head,
    /// the same again for writing the response, and at most 500 ms of
    /// lingering close.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let AdminServer {
            listener,
            config,
            state,
            ..
        } = self;
        let config = Arc::new(config);
        // A cap of 0 would refuse every scrape; serve at least one at a time.
        let cap = config.max_connections.max(1);
        let slots = Arc::new(Semaphore::new(cap));
        let refusals = Arc::new(Semaphore::new(cap));
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break; // sender gone: the daemon is exiting
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                            tracing::debug!(%peer, "admin connection limit reached");
                            // A 503 costs a short task of its own (write and
                            // lingering close); past a second cap of as many
                            // refusals, a connection is just closed.
                            if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
                                let timeout = config.read_timeout;
                                tasks.spawn(async move {
                                    let busy = Response::text(503, "too many admin connections\n");
                                    let _ = write_response(stream, &busy, false, timeout).await;
                                    drop(refusal);
                                });
                            }
                            continue;
                        };
                        let config = Arc::clone(&config);
                        let state = state.clone();
                        tasks.spawn(async move {
                            if let Err(error) = handle_connection(stream, &config, &state).await {
                                tracing::debug!(%peer, %error, "admin connection ended with an error");
                            }
                            drop(permit); // the slot frees when the connection is done
                        });
                    }
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections so the set stays small.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!(in_flight = tasks.len(), "admin listener draining");
        while tasks.join_next().await.is_some() {}
    }
}

/// A request method the listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `HEAD`: the `GET` headers without the body.
    Head,
}

/// A request head that parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, or the token as written when it is neither GET nor HEAD
    /// (answered with 405).
    pub method: Result<HttpMethod, &'a str>,
    /// The path, without the query.
    pub path: &'a str,
}

/// Why a request head was refused with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line is not `method SP origin-form SP HTTP/1.x CRLF`.
    #[error("malformed request line")]
    RequestLine,
    /// The version is not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// A header field line is not `token ":" OWS value OWS CRLF` (including
    /// obsolete line folding and bare LF line ends).
    #[error("malformed header field")]
    HeaderField,
    /// An HTTP/1.1 request without exactly one Host field (RFC 9112 §3.2).
    #[error("missing or repeated Host header")]
    Host,
    /// The request announces a body; the admin endpoints take none.
    #[error("request body not allowed")]
    Body,
    /// The head exceeded the size cap.
    #[error("request head too large")]
    TooLarge,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Parses a complete request head: everything up to and including the empty
/// line (`\r\n\r\n`). Strict: CRLF line ends only, single spaces in the
/// request line, origin-form targets of visible ASCII.
pub fn parse_request(head: &[u8]) -> Result<Request<'_>, HttpError> {
    // Keep the last line's CR so that every line below ends in CR.
    let head = head.strip_suffix(b"\n\r\n").ok_or(HttpError::RequestLine)?;
    let mut lines = head.split(|&b| b == b'\n');
    let (method, target, http11) = parse_request_line(lines.next().unwrap_or_default())?;
    let mut hosts = 0usize;
    for line in lines {
        let line = line.strip_suffix(b"\r").ok_or(HttpError::HeaderField)?;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::HeaderField)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // A name that is not a token also rejects obs-fold (leading SP/HTAB).
        if !is_token(name)
            || !value
                .iter()
                .all(|&b| b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80)
        {
            return Err(HttpError::HeaderField);
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
        {
            return Err(HttpError::Body);
        }
    }
    if http11 && hosts != 1 {
        return Err(HttpError::Host);
    }
    // parse_request_line checked both to be ASCII, so these are valid UTF-8.
    let method = std::str::from_utf8(method).map_err(|_| HttpError::RequestLine)?;
    let target = std::str::from_utf8(target).map_err(|_| HttpError::RequestLine)?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let method = match method {
        "GET" => Ok(HttpMethod::Get),
        "HEAD" => Ok(HttpMethod::Head),
        other => Err(other),
    };
    Ok(Request { method, path })
}

/// Splits a request line (with its CR, without its LF) into a token method,
/// an origin-form target of visible ASCII and whether the version is
/// HTTP/1.1.
fn parse_request_line(line: &[u8]) -> Result<(&[u8], &[u8], bool), HttpError> {
    let line = line.strip_suffix(b"\r").ok_or(HttpError::RequestLine)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::RequestLine);
    };
    if !is_token(method)
        || target.first() != Some(&b'/')
        || !target.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(HttpError::RequestLine);
    }
    match version {
        b"HTTP/1.1" => Ok((method, target, true)),
        b"HTTP/1.0" => Ok((method, target, false)),
        v if v.starts_with(b"HTTP/") => Err(HttpError::Version),
        _ => Err(HttpError::RequestLine),
    }
}

/// A response to write.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    allow: bool,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: false,
            body: body.as_bytes().to_vec(),
        }
    }

    /// The wire form; `head_only` for HEAD (the GET headers, no body).
    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        self.head(&mut out);
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }

    fn head(&self, out: &mut Vec<u8>) {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            500 => "Internal Server Error",
            _ => "Service Unavailable",
        };
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
                 Cache-Control: no-store\r\nConnection: close\r\n",
                self.status,
                self.content_type,
                self.body.len()
            )
            .as_bytes(),
        );
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The response to a parsed request.
async fn route(request: &Request<'_>, state: &AdminState) -> Response {
    if request.method.is_err() {
        let mut r = Response::text(405, "only GET and HEAD are served\n");
        r.allow = true;
        return r;
    }
    match request.path {
        "/metrics" => {
            // The scrape is the IO shell's moment to read the clock.
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            match state.metrics.encode_text(now) {
                Ok(body) => Response {
                    status: 200,
                    content_type: TEXT_CONTENT_TYPE,
                    allow: false,
                    body,
                },
                Err(error) => {
                    tracing::error!(%error, "rendering /metrics failed");
                    Response::text(500, "metrics encoding failed\n")
                }
            }
        }
        "/health/live" => Response::text(200, "live\n"),
        "/health" | "/health/ready" => {
            if state.readiness.is_ready() {
                Response::text(200, "ready\n")
            } else {
                Response::text(503, "not ready\n")
            }
        }
        "/calls" => match &state.calls {
            Some(provider) => {
                let answer = match provider.request() {
                    Some(answer) => tokio::time::timeout(CALLS_TIMEOUT, answer).await,
                    None => return Response::text(503, "too many /calls requests waiting\n"),
                };
                match answer {
                    Ok(Ok(body)) => Response {
                        status: 200,
                        content_type: "application/json",
                        allow: false,
                        body,
                    },
                    _ => Response::text(503, "the call core did not answer\n"),
                }
            }
            None => Response::text(404, "no call listing in this daemon\n"),
        },
        _ => Response::text(404, "not found\n"),
    }
}

/// Reads one request head (bounded in size and time), answers it, closes.
async fn handle_connection(
    mut stream: TcpStream,
    config: &AdminConfig,
    state: &AdminState,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + config.read_timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut line_checked = false;
    let head_len = loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break Some(end + 4);
        }
        // Refuse a bad request line without waiting for the rest of the head.
        if !line_checked && let Some(eol) = memchr::memchr(b'\n', &buf) {
            line_checked = true;
            if parse_request_line(&buf[..eol]).is_err() {
                break None;
            }
        }
        if buf.len() > config.max_request_bytes {
            break None;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => return Ok(()), // closed before a full head: nothing to answer
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let timeout = Response::text(408, "request head not received in time\n");
                return write_response(stream, &timeout, false, config.read_timeout).await;
            }
        }
    };
    let parsed = match head_len {
        Some(len) if len <= config.max_request_bytes => parse_request(&buf[..len]),
        Some(_) => Err(HttpError::TooLarge),
        None if buf.len() > config.max_request_bytes => Err(HttpError::TooLarge),
        None => Err(HttpError::RequestLine),
    };
    let (response, head_only) = match parsed {
        Ok(request) => (
            route(&request, state).await,
            request.method == Ok(HttpMethod::Head),
        ),
        Err(error) => (Response::text(400, &format!("{error}\n")), false),
    };
    write_response(stream, &response, head_only, config.read_timeout).await
}

/// Longest and largest lingering drain after a response (see
/// [`write_response`]).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Writes a response within `timeout`, closes the write side, then briefly
/// drains what the client still sends: closing with unread bytes makes the
/// kernel send a RST, which can destroy the response before the client reads
/// it (the "lingering close" of RFC 9112 §9.6). The drain is bounded by
/// [`LINGER`] and [`LINGER_BYTES`].
async fn write_response(
    mut stream: TcpStream,
    response: &Response,
    head_only: bool,
    timeout: Duration,
) -> io::Result<()> {
    let out = response.to_bytes(head_only);
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    // Hitting the linger limit is not an error: the response is out.
    let _ = tokio::time::timeout(LINGER.min(timeout), drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(head: &str) -> Request<'_> {
        parse_request(head.as_bytes()).unwrap_or_else(|e| panic!("{head:?} refused: {e}"))
    }

    fn err(head: &str) -> HttpError {
        match parse_request(head.as_bytes()) {
            Ok(r) => panic!("{head:?} accepted as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_get_and_head_with_query_stripped() {
        let r = ok("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
        assert_eq!((r.method, r.path), (Ok(HttpMethod::Get), "/metrics"));
        let r = ok("HEAD /health HTTP/1.0\r\n\r\n");
        assert_eq!((r.method, r.path), (Ok(HttpMethod::Head), "/health"));
        let r = ok("GET / HTTP/1.1\r\nhOsT:   a  \r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.path, "/");
    }

    #[test]
    fn other_methods_parse_for_a_405() {
        let r = ok("POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.method, Err("POST"));
        let r = ok("get /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.method, Err("get"), "methods are case-sensitive");
    }

    #[test]
    fn refuses_malformed_request_lines() {
        for head in [
            "garbage\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1 \r\nHost: a\r\n\r\n",
            "GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://x/metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /m\u{e9}trics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1\nHost: a\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics SIP/2.0\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(err(head), HttpError::RequestLine, "{head:?}");
        }
        assert_eq!(err("GET / HTTP/2.0\r\n\r\n"), HttpError::Version);
        assert_eq!(err("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), HttpError::Version);
    }

    #[test]
    fn refuses_malformed_fields_missing_host_and_bodies() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: b\x01\r\n\r\n",
            "GET / HTTP/1.1\r\n: a\r\n\r\n",
        ] {
            assert_eq!(err(head), HttpError::HeaderField, "{head:?}");
        }
        assert_eq!(err("GET / HTTP/1.1\r\n\r\n"), HttpError::Host);
        assert_eq!(
            err("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HttpError::Host
        );
        assert_eq!(
            err("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            HttpError::Body
        );
        assert_eq!(
            err("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::Body
        );
    }

    fn state(calls: Option<Arc<dyn CallsProvider>>) -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new(crate::metrics::BuildInfo::current(false))),
            readiness: Readiness::new(),
            calls,
        }
    }

    fn get(path: &str) -> Request<'_> {
        Request {
            method: Ok(HttpMethod::Get),
            path,
        }
    }

    #[tokio::test]
    async fn routes() {
        let s = state(None);
        assert_eq!(route(&get("/nope"), &s).await.status, 404);
        assert_eq!(
            route(&get("/calls"), &s).await.status,
            404,
            "no provider, no /calls"
        );
        assert_eq!(route(&get("/health/live"), &s).await.status, 200);
        assert_eq!(route(&get("/health/ready"), &s).await.status, 503);
        assert_eq!(route(&get("/health"), &s).await.status, 503);
        s.readiness.set(true);
        assert_eq!(route(&get("/health/ready"), &s).await.status, 200);
        assert_eq!(route(&get("/health"), &s).await.status, 200);
        let metrics = route(&get("/metrics"), &s).await;
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, TEXT_CONTENT_TYPE);
        let put = Request {
            method: Err("PUT"),
            path: "/metrics",
        };
        let refused = route(&put, &s).await;
        assert_eq!((refused.status, refused.allow), (405, true));
    }

    #[tokio::test]
    async fn calls_route_renders_what_the_core_answers() {
        let provider = || {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(br#"[{"id":1}]"#.to_vec());
            Some(rx)
        };
        let s = state(Some(Arc::new(provider)));
        let r = route(&get("/calls"), &s).await;
        assert_eq!((r.status, r.content_type), (200, "application/json"));
        assert_eq!(r.body, br#"[{"id":1}]"#);

        // A core that drops the ask, or has too many waiting: 503.
        let gone = || Some(oneshot::channel::<Vec<u8>>().1);
        let s = state(Some(Arc::new(gone)));
        assert_eq!(route(&get("/calls"), &s).await.status, 503);
        let busy = || None;
        let s = state(Some(Arc::new(busy)));
        assert_eq!(route(&get("/calls"), &s).await.status, 503);
    }

    #[test]
    fn response_head_has_length_and_close() {
        let mut r = Response::text(405, "no\n");
        r.allow = true;
        let mut out = Vec::new();
        r.head(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 3\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\nAllow: GET, HEAD\r\n\r\n"), "{text}");
    }
}
