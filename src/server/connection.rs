//! One client connection's life: served by hyper (HTTP/1.1 or h2c) until it closes, the
//! worker asks it to finish, or it has been idle (no bytes either way) for `idle`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::Service;

use crate::clock::LastSeen;
use crate::proxy::{BoxError, ClientAddr, ClientConnection, ProxyBody, UpstreamPool};
use crate::stack::{ProxyStack, Sidecar};

/// Everything one client connection needs.
pub(super) struct Connection {
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub sidecar: Arc<Sidecar>,
    /// Counts this client for the upstream pool while it is open.
    pub counted: ClientConnection,
    pub peer: SocketAddr,
    pub idle: Duration,
    pub stop: watch::Receiver<bool>,
}

/// Hands each of hyper's requests to the stack of the current generation (so a reload takes
/// effect on the next request, and a request in flight keeps the stack it started with). The
/// body becomes a [`crate::proxy::ProxyBody`], and the client's address rides along for
/// `X-Forwarded-For`.
struct FromClient {
    sidecar: Arc<Sidecar>,
    peer: SocketAddr,
}

pin_project! {
    /// A client socket that notes when it last moved a byte, for the idle timeout.
    struct ActivityIo {
        #[pin]
        inner: TcpStream,
        activity: Arc<LastSeen>,
    }
}

// === impl Connection ===

impl Connection {
    pub(super) async fn serve(self, stream: TcpStream) {
        let Connection {
            builder,
            sidecar,
            counted,
            peer,
            idle,
            mut stop,
        } = self;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(LastSeen::now());
        let io = TokioIo::new(ActivityIo {
            inner: stream,
            activity: activity.clone(),
        });
        let service = FromClient { sidecar, peer };
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let mut closing = *stop.borrow();
        if closing {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            let last = activity.last().unwrap_or_else(std::time::Instant::now);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "client connection ended with an error");
                    }
                    break;
                }
                _ = stop.changed(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until((last + idle).into()), if !closing => {
                    if !activity.within(idle) {
                        tracing::debug!(%peer, "closing idle client connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
        drop(counted);
    }
}

// === impl FromClient ===

impl hyper::service::Service<Request<Incoming>> for FromClient {
    type Response = <ProxyStack<UpstreamPool> as Service<Request<ProxyBody>>>::Response;
    type Error = <ProxyStack<UpstreamPool> as Service<Request<ProxyBody>>>::Error;
    type Future = <ProxyStack<UpstreamPool> as Service<Request<ProxyBody>>>::Future;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(|body| body.map_err(BoxError::from).boxed_unsync());
        req.extensions_mut().insert(ClientAddr(self.peer));
        // Every layer of the stack is always ready (none holds back: shedding answers at once),
        // so a fresh clone is called without waiting on `poll_ready`.
        let mut app = self.sidecar.app();
        app.call(req)
    }
}

// === impl ActivityIo ===

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
            this.activity.mark();
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
            this.activity.mark();
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
            this.activity.mark();
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
