//! The admin HTTP listener: `/metrics`, `/health/live`, `/health/ready`
//! (and `/health`, its alias) and `/calls`.
//!
//! Owns: a tokio TCP listener, the bounds around each connection, the routes,
//! the readiness flag ([`Readiness`]) and the `/calls` hook
//! ([`ViewProvider`]). HTTP/1.1 itself (RFC 9112 framing, keep-alive,
//! parse errors) is hyper's.
//!
//! May not: grow into a general web server, or let a client hold a slot for
//! long. It serves `GET` and `HEAD` only and reads no request body. Refusals,
//! all before any work: 400 (431) for a malformed (oversized) head as hyper
//! reports it, 405 with `Allow` for another method, 404 for an unknown path,
//! and 503 when [`AdminConfig::max_connections`] connections are already
//! open. Connections are kept alive (a Prometheus scraper reuses one) within
//! two bounds, both [`AdminConfig::read_timeout`]: the next request head
//! must arrive in full within it (a slowloris or idle keep-alive connection
//! is closed, without a response), and a response must drain to the client
//! within it (a client that stops reading is closed). It is an IO shell: it
//! reads the clock (for `sbc_uptime_seconds`) and owns sockets.
//!
//! Readiness: `/health/live` is 200 while the process serves HTTP at all;
//! `/health/ready` (and `/health`) is 200 only while the daemon has set
//! [`Readiness`] (it is false while starting and while draining), 503
//! otherwise (with the body `draining` during a drain, `standby` on the
//! node of a pair that waits for the lease), so a load balancer or
//! orchestrator stops sending traffic first.
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::b2bua::{CallSnapshot, LegSnapshot, RegistrationSnapshot};
use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};

/// Listener settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to listen, e.g. `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// Time a client has to deliver a whole request head (counted from the
    /// connection's start or the previous response, so it is also the idle
    /// timeout of a kept-alive connection), and to take a response.
    pub read_timeout: Duration,
    /// Largest request head (request line and header fields) accepted; a
    /// larger one is answered 431. An unfinished head is cut off at this
    /// or 8 KiB, whichever is larger (hyper's smallest read buffer).
    pub max_request_bytes: usize,
    /// Connections open at once (at least 1); further ones get an
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
pub struct Readiness(Arc<AtomicU8>, Arc<std::sync::atomic::AtomicBool>);

/// [`Readiness`] values.
const NOT_READY: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;
const STANDBY: u8 = 3;

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Marks the daemon ready (true) or starting/stopping (false).
    pub fn set(&self, ready: bool) {
        self.0
            .store(if ready { READY } else { NOT_READY }, Ordering::Release);
    }

    /// Marks the daemon draining: not ready, and `/health/ready` says why.
    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }

    /// Marks the daemon a standby node of a pair (`[cluster]`): not ready
    /// until it holds the lease, and `/health/ready` says so.
    pub fn set_standby(&self) {
        self.0.store(STANDBY, Ordering::Release);
    }

    /// Says on `/health/ready` (still 200 when ready) that call changes
    /// wait for Redis: a takeover now would not carry on the newest calls.
    pub fn set_replication_behind(&self, behind: bool) {
        self.1.store(behind, Ordering::Release);
    }

    /// The current state.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == READY
    }

    /// Whether the daemon drains ([`set_draining`](Self::set_draining)).
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire) == DRAINING
    }
}

/// What the call core shows on the admin listener, as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `/calls`: the calls up, with both legs.
    Calls,
    /// `/registrations`: the phones registered through access realms.
    Registrations,
}

/// The daemon's views of its call core, served as JSON on `/calls` and
/// `/registrations`.
///
/// Called on the listener's task for every request: it must not block. It
/// asks the call core (which alone can read its state) and returns where
/// the answer will arrive, so nothing is built unless someone asks.
pub trait ViewProvider: Send + Sync {
    /// Asks for `view` as JSON text; `None` when too many asks are waiting
    /// already. A receiver that never gets an answer (the core is gone or
    /// stuck) is answered 503 after [`CALLS_TIMEOUT`].
    fn request(&self, view: View) -> Option<oneshot::Receiver<Vec<u8>>>;
}

impl<F> ViewProvider for F
where
    F: Fn(View) -> Option<oneshot::Receiver<Vec<u8>>> + Send + Sync,
{
    fn request(&self, view: View) -> Option<oneshot::Receiver<Vec<u8>>> {
        self(view)
    }
}

/// The `/registrations` JSON body: an array of bindings (realm, AOR, the
/// phone's Contact, where it is reached, seconds left on each side).
pub fn registrations_json(bindings: &[RegistrationSnapshot<'_>]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = bindings
        .iter()
        .map(|b| {
            serde_json::json!({
                "realm": b.realm,
                "aor": b.aor,
                "contact": b.contact,
                "transport": b.transport.as_str(),
                "source": b.source.to_string(),
                "expires_secs": b.expires_in.as_secs(),
                "registrar_expires_secs": b.registrar_expires_in.map(|d| d.as_secs()),
            })
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

/// The `/calls` JSON body: an array of calls, each with its legs (realm,
/// transport, peer address, Call-ID), route, trunk, age and streams.
pub fn calls_json(calls: &[CallSnapshot<'_>]) -> Vec<u8> {
    let leg = |l: &LegSnapshot<'_>| {
        serde_json::json!({
            "realm": l.realm,
            "transport": l.transport.as_str(),
            "peer": l.peer.to_string(),
            "call_id": l.call_id,
        })
    };
    let calls: Vec<serde_json::Value> = calls
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "phase": c.phase,
                "age_secs": c.age.as_secs(),
                "route": c.route,
                "trunk": c.trunk,
                "a": leg(&c.a),
                "b": c.b.as_ref().map(leg),
                "streams": c.streams,
            })
        })
        .collect();
    // Values built above always serialize.
    serde_json::to_vec(&calls).unwrap_or_default()
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
    pub calls: Option<Arc<dyn ViewProvider>>,
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

/// hyper refuses a read buffer smaller than this (`max_buf_size` panics).
const HYPER_MIN_BUF: usize = 8 * 1024;

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
    /// stops accepting, closes idle connections, lets those in the middle of
    /// a request finish it, and returns once all are closed. Each connection
    /// is bounded by the read timeout for every request head and again for
    /// every response; a refusal by at most 500 ms of lingering close more.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let AdminServer {
            listener,
            config,
            state,
            ..
        } = self;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.read_timeout)
            .max_header_size(config.max_request_bytes)
            .max_buf_size(config.max_request_bytes.max(HYPER_MIN_BUF))
            // A client that shuts down its write side after the request
            // (`printf ... | nc -N`) still gets the answer.
            .half_close(true);
        let graceful = GracefulShutdown::new();
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
                                    let _ = refuse(stream, timeout).await;
                                    drop(refusal);
                                });
                            }
                            continue;
                        };
                        let state = state.clone();
                        let service = service_fn(move |request| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(respond(&request, &state).await) }
                        });
                        let io = TokioIo::new(WriteDeadline::new(stream, config.read_timeout));
                        let connection = graceful.watch(http.serve_connection(io, service));
                        tasks.spawn(async move {
                            if let Err(error) = connection.await {
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
        graceful.shutdown().await;
        while tasks.join_next().await.is_some() {}
    }
}

/// A response with its body; HEAD gets the same (hyper sends the length
/// and drops the body).
type Response = hyper::Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response {
    reply(status, "text/plain; charset=utf-8", body)
}

/// The answer to one request head (the body, if any, is never read).
async fn respond<B>(request: &hyper::Request<B>, state: &AdminState) -> Response {
    route(request.method(), request.uri().path(), state).await
}

/// The response to `method` on `path`.
async fn route(method: &Method, path: &str, state: &AdminState) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut refused = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        );
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    match path {
        "/metrics" => {
            // The scrape is the IO shell's moment to read the clock.
            #[allow(clippy::disallowed_methods)]
            let now = Instant::now();
            match state.metrics.encode_text(now) {
                Ok(body) => reply(StatusCode::OK, TEXT_CONTENT_TYPE, body),
                Err(error) => {
                    tracing::error!(%error, "rendering /metrics failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                    )
                }
            }
        }
        "/health/live" => text(StatusCode::OK, "live\n"),
        "/health" | "/health/ready" => {
            if state.readiness.is_ready() {
                if state.readiness.1.load(Ordering::Acquire) {
                    // Serving; the pair's standby is not current.
                    text(
                        StatusCode::OK,
                        "ready\nreplication behind: call changes wait for Redis\n",
                    )
                } else {
                    text(StatusCode::OK, "ready\n")
                }
            } else if state.readiness.is_draining() {
                // A drain (SIGQUIT): the calls up go on, new ones are refused.
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if state.readiness.0.load(Ordering::Acquire) == STANDBY {
                // The other node of the pair holds the lease.
                text(StatusCode::SERVICE_UNAVAILABLE, "standby\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        path @ ("/calls" | "/registrations") => match &state.calls {
            Some(provider) => {
                let view = if path == "/calls" {
                    View::Calls
                } else {
                    View::Registrations
                };
                let Some(answer) = provider.request(view) else {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many view requests waiting\n",
                    );
                };
                match tokio::time::timeout(CALLS_TIMEOUT, answer).await {
                    Ok(Ok(body)) => reply(StatusCode::OK, "application/json", body),
                    _ => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the call core did not answer\n",
                    ),
                }
            }
            None => text(StatusCode::NOT_FOUND, "no call listing in this daemon\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// What a connection over the cap gets, written before its request is read:
/// refusing must not cost parsing or waiting on the client.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 27\r\n\
    Cache-Control: no-store\r\n\
    Connection: close\r\n\
    \r\n\
    too many admin connections\n";

/// Longest and largest lingering drain after a refusal (see [`refuse`]).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Writes [`BUSY`] within `timeout`, closes the write side, then briefly
/// drains what the client still sends: closing with unread bytes makes the
/// kernel send a RST, which can destroy the response before the client reads
/// it (the "lingering close" of RFC 9112 §9.6). The drain is bounded by
/// [`LINGER`] and [`LINGER_BYTES`].
async fn refuse(mut stream: TcpStream, timeout: Duration) -> io::Result<()> {
    let write = async {
        stream.write_all(BUSY).await?;
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

/// A stream whose writes must drain within a limit: the clock starts when a
/// write first has to wait for the client, and stops only when a flush
/// completes (hyper flushes after each response), so a response, or a
/// burst of pipelined ones, has the limit to reach a client that has
/// stopped reading or reads a trickle. Past it, writes fail with `TimedOut`
/// and hyper closes the connection. hyper's header read timeout bounds the
/// reading side; it has no bound of its own for this one.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Armed while the client is behind; allocated only then, so a client
    /// that keeps up costs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            deadline: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> WriteDeadline<T> {
    /// Runs one write-side operation; a wait arms the deadline (if it is
    /// not already running) and fails once it has passed.
    fn poll_bounded<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let polled = op(Pin::new(&mut self.inner), cx);
        if polled.is_ready() {
            return polled;
        }
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        // Polling the sleep registers the waker, so a stuck write is woken
        // at the deadline even if the socket never turns writable.
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not take the response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_bounded(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_bounded(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = self.poll_bounded(cx, |inner, cx| inner.poll_flush(cx));
        if let Poll::Ready(Ok(())) = flushed {
            self.deadline = None; // all out: the next response gets a fresh limit
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_bounded(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::transport::Transport;

    #[test]
    fn the_calls_view_lists_both_legs() {
        let leg = |realm, peer: &str, call_id| LegSnapshot {
            realm: Some(realm),
            transport: Transport::Udp,
            peer: peer.parse().expect("addr"),
            call_id,
        };
        let calls = [CallSnapshot {
            id: 7,
            phase: "confirmed",
            age: Duration::from_millis(2_500),
            route: "to-pbx",
            trunk: Some("pbx"),
            a: leg("outside", "203.0.113.7:5062", "a-id"),
            b: Some(leg("inside", "198.51.100.3:5060", "b-id")),
            streams: vec![1, 2],
        }];
        let json: serde_json::Value =
            serde_json::from_slice(&calls_json(&calls)).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!([{
                "id": 7, "phase": "confirmed", "age_secs": 2, "route": "to-pbx",
                "trunk": "pbx", "streams": [1, 2],
                "a": {"realm": "outside", "transport": "UDP", "peer": "203.0.113.7:5062", "call_id": "a-id"},
                "b": {"realm": "inside", "transport": "UDP", "peer": "198.51.100.3:5060", "call_id": "b-id"},
            }])
        );
        assert_eq!(calls_json(&[]), b"[]");
    }

    fn state(calls: Option<Arc<dyn ViewProvider>>) -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new(crate::metrics::BuildInfo::current(false))),
            readiness: Readiness::new(),
            calls,
        }
    }

    async fn get(path: &str, state: &AdminState) -> Response {
        route(&Method::GET, path, state).await
    }

    async fn body(response: Response) -> Bytes {
        match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn routes() {
        let s = state(None);
        assert_eq!(get("/nope", &s).await.status(), 404);
        assert_eq!(
            get("/calls", &s).await.status(),
            404,
            "no provider, no /calls"
        );
        assert_eq!(get("/health/live", &s).await.status(), 200);
        assert_eq!(get("/health/ready", &s).await.status(), 503);
        assert_eq!(get("/health", &s).await.status(), 503);
        s.readiness.set(true);
        assert_eq!(get("/health/ready", &s).await.status(), 200);
        assert_eq!(get("/health", &s).await.status(), 200);
        s.readiness.set(true);
        s.readiness.set_replication_behind(true);
        let behind = get("/health/ready", &s).await;
        assert_eq!(behind.status(), 200, "still serving");
        assert_eq!(
            &body(behind).await[..],
            b"ready\nreplication behind: call changes wait for Redis\n"
        );
        s.readiness.set_replication_behind(false);
        s.readiness.set_standby();
        let standby = get("/health/ready", &s).await;
        assert_eq!(standby.status(), 503);
        assert_eq!(&body(standby).await[..], b"standby\n");
        s.readiness.set_draining();
        let draining = get("/health/ready", &s).await;
        assert_eq!(draining.status(), 503);
        let body = http_body_util::BodyExt::collect(draining.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        assert_eq!(&body[..], b"draining\n");
        s.readiness.set(true);
        let metrics = get("/metrics", &s).await;
        assert_eq!(metrics.status(), 200);
        assert_eq!(metrics.headers()[CONTENT_TYPE], TEXT_CONTENT_TYPE);
        assert_eq!(metrics.headers()[CACHE_CONTROL], "no-store");
        let head = route(&Method::HEAD, "/health/live", &s).await;
        assert_eq!(head.status(), 200);
        for method in [Method::PUT, Method::POST, Method::OPTIONS] {
            let refused = route(&method, "/metrics", &s).await;
            assert_eq!(refused.status(), 405, "{method}");
            assert_eq!(refused.headers()[ALLOW], "GET, HEAD", "{method}");
        }
    }

    #[tokio::test]
    async fn view_routes_render_what_the_core_answers() {
        let provider = |view: View| {
            let (tx, rx) = oneshot::channel();
            let json = match view {
                View::Calls => br#"[{"id":1}]"#.to_vec(),
                View::Registrations => br#"[{"aor":"sip:100@pbx"}]"#.to_vec(),
            };
            let _ = tx.send(json);
            Some(rx)
        };
        let s = state(Some(Arc::new(provider)));
        let r = get("/calls", &s).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(body(r).await, &br#"[{"id":1}]"#[..]);
        let r = get("/registrations", &s).await;
        assert_eq!(r.status(), 200);
        assert_eq!(body(r).await, &br#"[{"aor":"sip:100@pbx"}]"#[..]);

        // A core that drops the ask, or has too many waiting: 503.
        let gone = |_: View| Some(oneshot::channel::<Vec<u8>>().1);
        let s = state(Some(Arc::new(gone)));
        assert_eq!(get("/calls", &s).await.status(), 503);
        let busy = |_: View| None;
        let s = state(Some(Arc::new(busy)));
        assert_eq!(get("/registrations", &s).await.status(), 503);
    }

    #[test]
    fn busy_response_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap_or_else(|e| panic!("BUSY: {e}"));
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head end in {text:?}"));
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nConnection: close"), "{head}");
        let length = format!("\r\nContent-Length: {}\r\n", body.len());
        assert!(head.contains(&length), "{head:?} lacks {length:?}");
    }

    /// A writer that never takes a byte, like a client that stopped reading
    /// once its socket buffer filled.
    struct Stalled;

    impl AsyncWrite for Stalled {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_at_the_deadline() {
        let limit = Duration::from_secs(5);
        let mut stream = WriteDeadline::new(Stalled, limit);
        let started = tokio::time::Instant::now();
        let error = stream
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .err()
            .unwrap_or_else(|| panic!("a stalled write succeeded"));
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), limit);
    }

    /// A writer that makes every write wait `delay`, like a client that
    /// reads slowly but keeps up.
    struct Slow {
        delay: Duration,
        wait: Option<Pin<Box<Sleep>>>,
        taken: usize,
    }

    impl AsyncWrite for Slow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let delay = self.delay;
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
            self.taken += buf.len();
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_flush_restarts_the_clock() {
        let limit = Duration::from_secs(5);
        let slow = Slow {
            delay: Duration::from_secs(3),
            wait: None,
            taken: 0,
        };
        let mut stream = WriteDeadline::new(slow, limit);
        // Three responses of 3 s each: 9 s in all, but each drains within
        // the limit, and the flush after each starts the next afresh.
        for _ in 0..3 {
            stream
                .write_all(b"response")
                .await
                .unwrap_or_else(|e| panic!("write: {e}"));
            assert!(
                stream.deadline.is_some(),
                "a write waited, yet no clock runs"
            );
            stream
                .flush()
                .await
                .unwrap_or_else(|e| panic!("flush: {e}"));
            assert!(stream.deadline.is_none(), "flushed, yet the clock runs");
        }
        assert_eq!(stream.inner.taken, 3 * b"response".len());

        // Without a flush in between, the waits add up and the second
        // write runs past the limit.
        stream
            .write_all(b"one")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let error = stream
            .write_all(b"two")
            .await
            .err()
            .unwrap_or_else(|| panic!("6 s of writes without a flush passed a 5 s limit"));
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
