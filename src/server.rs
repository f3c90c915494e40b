//! The listeners and the tower stack: the proxy port (HTTP/1.1 and h2c on one port), the admin
//! port, and graceful shutdown.
//!
//! [`serve`] takes its listeners and its shutdown signal as arguments, so tests bind
//! `127.0.0.1:0` and stop it when they like; [`run_until_signal`] is what the binary runs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder};

use crate::admin::Admin;
use crate::inspection::{InspectBody, InspectLayer, Inspector};
use crate::metrics::Metrics;
use crate::proxy::{
    upstream_client, BoxError, ClientAddr, Forward, ProxyBody, RequestMetricsLayer, ShedLayer,
};
use crate::settings::Settings;

/// The proxy stack as one type: requests and responses in [`ProxyBody`], a boxed error.
pub type ProxyService = BoxCloneService<Request<ProxyBody>, Response<ProxyBody>, BoxError>;

/// The proxy's tower stack, outermost first: route classification and request metrics, load
/// shedding, inspection of configured routes' responses, then forwarding through the pooled
/// upstream client.
///
/// Boxed, so the accept loop has one concrete type whatever layers are inserted here.
pub fn app(
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    inspector: Arc<Inspector>,
) -> ProxyService {
    let client = upstream_client(&settings.config.proxy);
    ServiceBuilder::new()
        .boxed_clone()
        .layer(RequestMetricsLayer::new(settings.clone(), metrics.clone()))
        .layer(ShedLayer::new(
            settings.config.proxy.max_concurrent_requests,
            metrics.clone(),
        ))
        .map_response(|response: Response<InspectBody<ProxyBody>>| {
            response.map(BodyExt::boxed_unsync)
        })
        .layer(InspectLayer::new(inspector))
        .service(Forward::new(client, &settings, metrics))
}

/// Runs the proxy and admin servers until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish for up to `proxy.shutdown_grace`, and closes what is left.
pub async fn serve(
    listener: TcpListener,
    admin_listener: TcpListener,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let inspector = Arc::new(Inspector::new(&settings, metrics.clone()));
    let admin = Admin::new(settings.clone(), metrics.clone(), inspector.book());
    let upkeep = tokio::spawn(upkeep(
        inspector.clone(),
        settings.config.inspect.report_interval.0,
    ));
    let proxy = &settings.config.proxy;
    tracing::info!(
        proxy = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        upstream = %settings.config.upstream.uri,
        mode = ?settings.config.mode,
        "listening"
    );
    let app = app(settings.clone(), metrics, inspector);
    let builder = Arc::new(connection_builder(&settings));
    let idle = proxy.client_idle_timeout.0;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut admin_connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_proxy_connection(
                        builder.clone(),
                        stream,
                        peer,
                        app.clone(),
                        idle,
                        stop_rx.clone(),
                    ));
                }
                Err(err) => accept_failed(err).await,
            },
            accepted = admin_listener.accept() => match accepted {
                Ok((stream, _)) => {
                    admin_connections.spawn(serve_admin_connection(stream, admin.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            Some(_) = connections.join_next() => {}
            Some(_) = admin_connections.join_next() => {}
        }
    }

    drop(listener);
    drop(admin_listener);
    let grace = proxy.shutdown_grace.0;
    tracing::info!(
        connections = connections.len(),
        grace = %humantime::format_duration(grace),
        "shutting down: no new connections, draining"
    );
    // The receivers see this even if they never looked at the channel before.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "grace period over; closing the remaining connections"
        );
        connections.abort_all();
    }
    admin_connections.abort_all();
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Background upkeep while serving: tracker expiry and gauges every second, the status page's
/// ratio history, and the consistency report in the log every `report_interval` (zero: never).
async fn upkeep(inspector: Arc<Inspector>, report_interval: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_report = Instant::now() + report_interval;
    loop {
        tick.tick().await;
        inspector.maintain();
        inspector.book().sample();
        if !report_interval.is_zero() && Instant::now() >= next_report {
            next_report += report_interval;
            let report = inspector.book().snapshot();
            tracing::info!(
                total_checks = report.total_checks,
                issues = report.issues_found,
                critical = report.critical_issues,
                ratio = report.consistency_ratio,
                "consistency report\n{}",
                report.to_text()
            );
        }
    }
}

/// What the binary runs: binds the configured addresses, serves, and stops on SIGTERM or SIGINT.
pub fn run_until_signal(settings: Settings) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        // Before binding, so a signal that arrives once we are listening is never fatal.
        let signals = ShutdownSignals::install()?;
        let listener = bind(settings.config.listen, "listen").await?;
        let admin_listener = bind(settings.config.admin_listen, "admin_listen").await?;
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new(&settings));
        serve(listener, admin_listener, settings, metrics, signals.wait()).await
    });
    // Upgraded tunnels are the only tasks left; they do not hold up the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {key} {addr}: {e}")))
}

/// HTTP/1.1 and h2c, with the client-side limits from `[proxy]`.
fn connection_builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let proxy = &settings.config.proxy;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // hyper enforces the header-read timeout only when it has a timer.
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.client_header_timeout.0)
        .max_buf_size(proxy.max_header_bytes)
        .max_headers(proxy.max_headers)
        .preserve_header_case(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves one client connection until it closes, shutdown asks it to finish, or it has been
/// idle (no bytes either way) for `idle`.
async fn serve_proxy_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    app: ProxyService,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
    }
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service = FromClient { app, peer };
    // Owned, so the connection does not borrow the shared builder across awaits.
    let connection = builder
        .serve_connection_with_upgrades(io, TowerToHyperService::new(service))
        .into_owned();
    tokio::pin!(connection);
    let mut closing = *stop.borrow();
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "client connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(activity.idle_deadline(idle)), if !closing => {
                if activity.idle_for() >= idle {
                    tracing::debug!(%peer, "closing idle client connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Adapts hyper's requests to the stack: the body becomes a [`ProxyBody`], and the client's
/// address rides along for `X-Forwarded-For`.
#[derive(Clone)]
struct FromClient {
    app: ProxyService,
    peer: SocketAddr,
}

impl Service<Request<Incoming>> for FromClient {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = <ProxyService as Service<Request<ProxyBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(|body| body.map_err(BoxError::from).boxed_unsync());
        req.extensions_mut().insert(ClientAddr(self.peer));
        self.app.call(req)
    }
}

async fn serve_admin_connection(stream: TcpStream, admin: Admin) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.handle(req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = result {
        tracing::debug!(error = %err, "admin connection ended with an error");
    }
}

/// Accept fails on transient conditions (out of file descriptors, a connection reset before
/// it was accepted); pausing keeps us from spinning while it lasts.
async fn accept_failed(err: io::Error) {
    tracing::warn!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// SIGTERM and SIGINT, installed up front so neither kills the process once we listen.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

// === impl ShutdownSignals ===

impl ShutdownSignals {
    fn install() -> io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

/// When a connection last moved a byte, as milliseconds since it was accepted.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

// === impl Activity ===

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn idle_for(&self) -> Duration {
        self.last().elapsed()
    }

    fn idle_deadline(&self, idle: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.last() + idle)
    }
}

pin_project! {
    /// A client socket that notes when it last moved a byte, for the idle timeout.
    struct ActivityIo {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
