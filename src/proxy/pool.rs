//! The upstream connection pool: HTTP/1.1 connections to the one upstream, reused newest first,
//! capped, and never more than the client connections that need them.
//!
//! hyper-util's pooled client is general (any host, any scheme, a checkout future and a spawned
//! dispatcher per request); we talk to one upstream, so a plain list of idle
//! `hyper::client::conn::http1` senders behind a short lock does the job with less work per
//! request. An idle connection is preferably reused on the worker thread that opened it, so its
//! dispatcher task and the request run on the same thread without a cross-thread wake-up.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower::Service;

use super::body::ProxyBody;
use super::error::UpstreamError;
use crate::runtime;

/// How the pool reaches the upstream and how much it keeps.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// `host:port` of the upstream.
    pub authority: String,
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed, below the backend's keep-alive.
    pub idle_timeout: Duration,
    /// Idle connections kept at most.
    pub max_idle: usize,
    /// Open connections at most, busy or idle; past it a request waits for one to come back.
    pub max_connections: usize,
}

/// A cloneable handle on the pool; a tower `Service` that sends one request upstream.
#[derive(Debug, Clone)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

/// Open client connections, counted by the server: the pool never keeps more upstream
/// connections than there are clients to use them.
#[derive(Debug, Default)]
pub struct ClientConnections(AtomicUsize);

/// Holds one client connection in [`ClientConnections`] until dropped.
#[derive(Debug)]
pub struct ClientConnection {
    pool: UpstreamPool,
}

#[derive(Debug)]
struct Shared {
    config: PoolConfig,
    clients: ClientConnections,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    idle: Vec<Idle>,
    /// Connections open or being opened.
    open: usize,
    /// Requests waiting for a connection while `open` is at the cap, oldest first.
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
    worker: usize,
}

/// What a waiting request is handed.
#[derive(Debug)]
enum Grant {
    /// A connection that just finished a response.
    Reuse(Conn),
    /// A freed slot: open a new connection.
    Open(Slot),
}

/// One open upstream connection's sender; leaving the pool's count when dropped.
#[derive(Debug)]
struct Conn {
    sender: http1::SendRequest<ProxyBody>,
    worker: usize,
    _slot: Slot,
}

/// A place under `max_connections`; given back (to a waiter, or to the count) on drop.
#[derive(Debug)]
struct Slot {
    shared: Option<Arc<Shared>>,
}

/// The upstream's response body; gives its connection back to the pool once it has ended.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(Conn, Arc<Shared>)>,
}

type Sending = Pin<Box<dyn Future<Output = Result<Response<PooledBody>, UpstreamError>> + Send>>;

// === impl UpstreamPool ===

impl UpstreamPool {
    pub fn new(config: PoolConfig) -> UpstreamPool {
        UpstreamPool {
            shared: Arc::new(Shared {
                config,
                clients: ClientConnections::default(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Counts a client connection for as long as the returned guard lives.
    pub fn client_connection(&self) -> ClientConnection {
        self.shared.clients.0.fetch_add(1, Ordering::Relaxed);
        ClientConnection { pool: self.clone() }
    }

    /// Closes idle connections past the idle timeout; the server calls it now and then so a
    /// quiet sidecar does not hold sockets the backend has long given up on.
    pub fn close_expired(&self) {
        let expired: Vec<Idle> = {
            let mut state = self.shared.lock();
            let timeout = self.shared.config.idle_timeout;
            let (keep, expired) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|idle| idle.since.elapsed() < timeout);
            state.idle = keep;
            expired
        };
        // Dropped outside the lock: a dropped connection takes the lock to give its slot back.
        drop(expired);
    }

    async fn send(
        shared: Arc<Shared>,
        req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        // The paths taken rarely under load (connecting, waiting, the retry) are boxed: this
        // future is allocated per request, and a small one stays in the allocator's fast path.
        let (conn, reused) = match shared.checkout() {
            Checkout::Idle(conn) => (conn, true),
            Checkout::Open(slot) => (Box::pin(shared.connect(slot)).await?, false),
            Checkout::Wait(granted) => match Box::pin(granted).await {
                Ok(Grant::Reuse(conn)) => (conn, true),
                Ok(Grant::Open(slot)) => (Box::pin(shared.connect(slot)).await?, false),
                Err(_) => return Err(UpstreamError::PoolClosed),
            },
        };
        // A reused connection may be one the backend is closing as we write. A request that can
        // be sent again unchanged (idempotent, no body) gets a second chance on a new connection.
        let replay = (reused && is_replayable(&req)).then(|| head_of(&req));
        match shared.clone().send_on(conn, req).await {
            Err(Failed { error, unsent }) if error.is_stale_connection() => {
                let retry = match (unsent, replay) {
                    (Some(req), _) => req,
                    (None, Some(head)) => head,
                    (None, None) => return Err(error),
                };
                tracing::debug!(error = %error, "stale upstream connection; retrying once on a new one");
                Box::pin(async move {
                    let slot = shared.checkout_for_retry();
                    let conn = shared.connect(slot).await?;
                    shared.send_on(conn, retry).await.map_err(|f| f.error)
                })
                .await
            }
            Err(failed) => Err(failed.error),
            Ok(response) => Ok(response),
        }
    }
}

impl Service<Request<ProxyBody>> for UpstreamPool {
    type Response = Response<PooledBody>;
    type Error = UpstreamError;
    type Future = Sending;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Sending {
        Box::pin(UpstreamPool::send(self.shared.clone(), req))
    }
}

/// A request that failed on a connection, with the request itself when it was never written.
struct Failed {
    error: UpstreamError,
    unsent: Option<Request<ProxyBody>>,
}

enum Checkout {
    Idle(Conn),
    Open(Slot),
    Wait(oneshot::Receiver<Grant>),
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock guards plain bookkeeping; a panic elsewhere cannot leave it half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn checkout(self: &Arc<Self>) -> Checkout {
        let here = runtime::current_worker();
        let mut closed = Vec::new();
        let checkout = {
            let mut state = self.lock();
            loop {
                // Newest first, and this worker's own if one of the newest few is.
                let len = state.idle.len();
                let Some(pick) = state
                    .idle
                    .iter()
                    .rev()
                    .take(4)
                    .position(|idle| idle.worker == here)
                    .map(|from_end| len - 1 - from_end)
                    .or_else(|| len.checked_sub(1))
                else {
                    break self.open_or_wait(&mut state);
                };
                let idle = state.idle.swap_remove(pick);
                if idle.conn.sender.is_closed() || idle.since.elapsed() >= self.config.idle_timeout
                {
                    closed.push(idle);
                    continue;
                }
                break Checkout::Idle(idle.conn);
            }
        };
        // Outside the lock: a dropped connection takes it to give its slot back.
        drop(closed);
        checkout
    }

    fn open_or_wait(self: &Arc<Self>, state: &mut State) -> Checkout {
        if state.open < self.config.max_connections {
            state.open += 1;
            Checkout::Open(Slot::new(self.clone()))
        } else {
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            Checkout::Wait(rx)
        }
    }

    /// A slot for the one retry: a new connection, even at the cap (it replaces the stale one,
    /// whose slot is being given back).
    fn checkout_for_retry(self: &Arc<Self>) -> Slot {
        self.lock().open += 1;
        Slot::new(self.clone())
    }

    async fn connect(self: &Arc<Self>, slot: Slot) -> Result<Conn, UpstreamError> {
        let authority = self.config.authority.as_str();
        let stream =
            match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(authority))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return Err(UpstreamError::Connect(err)),
                Err(_) => return Err(UpstreamError::ConnectTimeout(self.config.connect_timeout)),
            };
        // Small requests and responses: waiting to coalesce only adds latency.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            // Header-name case as the client sent it, and as the upstream sent it back: legacy
            // backends sometimes care.
            .preserve_header_case(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            sender,
            worker: runtime::current_worker(),
            _slot: slot,
        })
    }

    async fn send_on(
        self: Arc<Self>,
        mut conn: Conn,
        req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, Failed> {
        if let Err(error) = conn.sender.ready().await {
            return Err(Failed {
                error: UpstreamError::Request(error),
                unsent: Some(req),
            });
        }
        match conn.sender.try_send_request(req).await {
            Ok(response) => {
                let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                // A connection handed over to an upgrade is never pooled again.
                let conn = (!upgraded).then_some((conn, self));
                Ok(response.map(|inner| PooledBody { inner, conn }))
            }
            Err(mut err) => Err(Failed {
                unsent: err.take_message(),
                error: UpstreamError::Request(err.into_error()),
            }),
        }
    }

    /// A connection whose response ended: to a waiting request, to the idle list, or closed.
    fn release(self: &Arc<Self>, mut conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(Grant::Reuse(conn)) {
                Ok(()) => return,
                // That request gave up waiting; the next one may not have.
                Err(Grant::Reuse(back)) => conn = back,
                Err(Grant::Open(_)) => unreachable!("a reuse grant comes back as sent"),
            }
        }
        let clients = self.clients.0.load(Ordering::Relaxed).max(1);
        if state.idle.len() < self.config.max_idle && state.open <= clients {
            let worker = conn.worker;
            state.idle.push(Idle {
                conn,
                since: Instant::now(),
                worker,
            });
            return;
        }
        // Closed outside the lock: its slot takes the lock on drop.
        drop(state);
        drop(conn);
    }
}

/// Idempotent (RFC 9110 §9.2.2) and without a body: safe to send again as it is.
fn is_replayable(req: &Request<ProxyBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && req.body().is_end_stream()
}

/// A copy of a body-less request, for the retry.
fn head_of(req: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(ProxyBody::default());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

// === impl Slot ===

impl Slot {
    fn new(shared: Arc<Shared>) -> Slot {
        Slot {
            shared: Some(shared),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let mut state = shared.lock();
        // The place passes to the oldest request still waiting; `open` stays as it is.
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(Grant::Open(Slot::new(shared.clone()))) {
                Ok(()) => return,
                Err(Grant::Open(mut unclaimed)) => {
                    // Not a second place: forget it without running this again under the lock.
                    unclaimed.shared = None;
                }
                Err(Grant::Reuse(_)) => unreachable!("an open grant comes back as sent"),
            }
        }
        state.open = state.open.saturating_sub(1);
    }
}

// === impl ClientConnection ===

impl Drop for ClientConnection {
    fn drop(&mut self) {
        let shared = &self.pool.shared;
        let clients = shared.clients.0.fetch_sub(1, Ordering::Relaxed) - 1;
        // Fewer clients now: idle upstream connections beyond them are closed.
        let surplus: Vec<Idle> = {
            let mut state = shared.lock();
            let excess = state
                .open
                .saturating_sub(clients.max(1))
                .min(state.idle.len());
            state.idle.drain(..excess).collect()
        };
        drop(surplus);
    }
}

// === impl PooledBody ===

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((conn, shared)) = self.conn.take() {
            shared.release(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            // The connection is broken or mid-message: it is not reused.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) may never be polled: it is still a finished response.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
