//! One client connection's life: served by hyper (HTTP/1.1 or h2c) until it closes, the
//! worker asks it to finish, or it has been idle (no bytes either way) for `idle`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::Service;

use crate::clock::LastSeen;
use crate::proxy::{BoxError, ClientAddr, ClientConnection, ProxyBody, UpstreamPool};
use crate::stack::ProxyStack;

/// Everything one client connection needs.
pub(super) struct Connection {
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub app: ProxyStack<UpstreamPool>,
    /// Counts this client for the upstream pool while it is open.
    pub counted: ClientConnection,
    pub peer: SocketAddr,
    pub idle: Duration,
    pub stop: watch::Receiver<bool>,
}

/// Adapts hyper's requests to the stack: the body becomes a [`ProxyBody`], and the client's
/// address rides along for `X-Forwarded-For`.
#[derive(Clone)]
struct FromClient<S> {
    app: S,
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
            app,
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
        let service = TowerToHyperService::new(FromClient { app, peer });
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

impl<S, B> Service<Request<Incoming>> for FromClient<S>
where
    S: Service<Request<ProxyBody>, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> S::Future {
        let mut req = req.map(|body| body.map_err(BoxError::from).boxed_unsync());
        req.extensions_mut().insert(ClientAddr(self.peer));
        self.app.call(req)
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
