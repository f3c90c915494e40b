//! One client connection's life: served by hyper (HTTP/1.1 or h2c) until it closes, the
//! worker asks it to finish, it has been idle (no bytes either way) for `idle`, or a request
//! head takes longer than `head` (see [`super::deadlines`]). A connection asked to finish for
//! being idle that stays idle for another `idle` (a stalled request body, a response nobody
//! reads) is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::Service;

use super::deadlines::{ActivityIo, Answering, Deadlines, Limits, Open, Verdict};
use super::limit::Place;
use crate::proxy::{ClientAddr, ClientConnection, Guarded, ProxyBody, UpstreamPool};
use crate::stack::{ProxyStack, Sidecar};
use crate::BoxError;

/// Everything one client connection needs.
pub(super) struct Connection {
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub sidecar: Arc<Sidecar>,
    /// Counts this client for the upstream pool while it is open.
    pub counted: ClientConnection,
    /// Its place under `proxy.max_client_connections`, and its clock.
    pub place: Place,
    pub peer: SocketAddr,
    pub limits: Limits,
    pub stop: watch::Receiver<bool>,
}

/// Hands each of hyper's requests to the stack of the current generation (so a reload takes
/// effect on the next request, and a request in flight keeps the stack it started with). The
/// body becomes a [`crate::proxy::ProxyBody`], the client's address rides along for
/// `X-Forwarded-For`, and the connection's deadlines learn when a request starts and ends.
struct FromClient {
    sidecar: Arc<Sidecar>,
    client: ClientAddr,
    deadlines: Arc<Deadlines>,
}

type Stack = ProxyStack<UpstreamPool>;
type StackResponse = <Stack as Service<Request<ProxyBody>>>::Response;

/// The body type inside a response type.
trait HasBody {
    type Body;
}

impl<B> HasBody for Response<B> {
    type Body = B;
}

// === impl Connection ===

impl Connection {
    pub(super) async fn serve(self, stream: TcpStream) {
        let Connection {
            builder,
            sidecar,
            counted,
            place,
            peer,
            limits,
            mut stop,
        } = self;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let deadlines = place.deadlines().clone();
        let io = TokioIo::new(ActivityIo::new(stream, deadlines.clone()));
        // Per connection: a reload of proxy.trusted_proxies applies to connections made after it.
        let client = ClientAddr::new(
            peer,
            &sidecar.current().settings.config.proxy.trusted_proxies,
        );
        let service = FromClient {
            sidecar,
            client,
            deadlines: deadlines.clone(),
        };
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let mut closing = *stop.borrow();
        if closing {
            connection.as_mut().graceful_shutdown();
        }
        // One sleep per connection, renewed when it fires (at least once per header timeout),
        // never per request.
        let mut wake = Instant::now() + limits.head.min(limits.idle);
        // Whether the connection was asked to finish for being idle.
        let mut asked_to_finish = false;
        loop {
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
                // Idle the longest at the cap: finish, so a new client is served.
                () = deadlines.reclaimed(), if !closing => {
                    tracing::debug!(%peer, "closing the longest-idle client connection to make room");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    match deadlines.check(now, limits) {
                        Verdict::WakeAt(at) => wake = at,
                        Verdict::SlowHead => {
                            tracing::debug!(%peer, "request head too slow; closing the connection");
                            break;
                        }
                        // Asked to finish for being idle, and idle for as long again: a
                        // request body that never comes, or a response nobody reads.
                        Verdict::Idle if asked_to_finish => {
                            tracing::debug!(%peer, "still idle after being asked to finish; closing the connection");
                            break;
                        }
                        Verdict::Idle => {
                            tracing::debug!(%peer, "closing idle client connection");
                            if !closing {
                                place.idle_timed_out();
                                connection.as_mut().graceful_shutdown();
                                closing = true;
                            }
                            asked_to_finish = true;
                            wake = now + limits.idle;
                        }
                    }
                }
            }
        }
        drop(counted);
        drop(place);
    }
}

// === impl FromClient ===

impl hyper::service::Service<Request<Incoming>> for FromClient {
    type Response = Response<Guarded<<StackResponse as HasBody>::Body, Open>>;
    type Error = <Stack as Service<Request<ProxyBody>>>::Error;
    type Future = Answering<<Stack as Service<Request<ProxyBody>>>::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let open = self.deadlines.request(req.version() == Version::HTTP_2);
        let mut req = req.map(|body| body.map_err(BoxError::from).boxed_unsync());
        req.extensions_mut().insert(self.client.clone());
        // Every layer of the stack is always ready (none holds back: shedding answers at once),
        // so a fresh clone is called without waiting on `poll_ready`.
        let mut app = self.sidecar.app();
        Answering::new(app.call(req), open)
    }
}
