//! One client connection's life: its protocol told by [`super::protocol`], then served by hyper
//! (HTTP/1.1 or h2c) until it closes, the
//! worker asks it to finish, it has been idle (no bytes either way) for `idle`, or a request
//! head takes longer than `head` (see [`super::deadlines`]). A connection asked to finish for
//! being idle that stays idle for another `idle` (a stalled request body, a response nobody
//! reads) is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::deadlines::{ActivityIo, Answering, Deadlines, Limits, Open, Verdict};
use super::limit::Place;
use super::protocol::{self, Protocol, Protocols};
use crate::proxy::{ClientAddr, ClientConnection, Guarded, ProxyBody, UpstreamPool};
use crate::stack::{ProxyStack, Sidecar};
use crate::BoxError;

/// Everything one client connection needs.
pub(super) struct Connection {
    pub protocols: Arc<Protocols>,
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

/// The client's socket as hyper reads and writes it.
type ClientIo = TokioIo<ActivityIo<TcpStream>>;

pin_project! {
    /// The connection served by hyper, in the protocol the client speaks. HTTP/2's state is
    /// boxed: it is several times HTTP/1's, and only h2c clients should carry it in their task.
    #[project = ServedProj]
    enum Served {
        Http1 {
            #[pin]
            connection: http1::UpgradeableConnection<ClientIo, FromClient>,
        },
        Http2 {
            connection: Pin<Box<http2::Connection<ClientIo, FromClient, TokioExecutor>>>,
        },
    }
}

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
            protocols,
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
        if *stop.borrow() {
            return;
        }
        // The first head is due within the header timeout of the accept, the preface with it.
        let protocol = tokio::select! {
            sniffed = tokio::time::timeout(limits.head, protocol::sniff(&stream)) => match sniffed {
                Ok(Ok(protocol)) => protocol,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "client connection ended before its first request");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "request head too slow; closing the connection");
                    return;
                }
            },
            // Nothing was asked yet: stopping closes it.
            _ = stop.changed() => return,
        };
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
        let connection = Served::new(&protocols, protocol, io, service);
        tokio::pin!(connection);
        let mut closing = false;
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

// === impl Served ===

impl Served {
    fn new(protocols: &Protocols, protocol: Protocol, io: ClientIo, service: FromClient) -> Served {
        match protocol {
            Protocol::Http1 => Served::Http1 {
                connection: protocols
                    .http1
                    .serve_connection(io, service)
                    .with_upgrades(),
            },
            Protocol::Http2 => Served::Http2 {
                connection: Box::pin(protocols.http2.serve_connection(io, service)),
            },
        }
    }

    /// Finishes after the requests in flight, taking no new ones.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServedProj::Http1 { connection } => connection.graceful_shutdown(),
            ServedProj::Http2 { connection } => connection.as_mut().graceful_shutdown(),
        }
    }
}

impl Future for Served {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServedProj::Http1 { connection } => connection.poll(cx),
            ServedProj::Http2 { connection } => connection.as_mut().poll(cx),
        }
    }
}

// === impl FromClient ===

impl hyper::service::Service<Request<Incoming>> for FromClient {
    type Response = Response<Guarded<<StackResponse as HasBody>::Body, Open>>;
    type Error = <Stack as Service<Request<ProxyBody>>>::Error;
    type Future = Answering<Oneshot<Stack, Request<ProxyBody>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let open = self.deadlines.request(req.version() == Version::HTTP_2);
        let mut req = req.map(|body| body.map_err(BoxError::from).boxed_unsync());
        req.extensions_mut().insert(self.client.clone());
        // tower's contract, readiness before the call: `oneshot` drives the fresh clone's
        // `poll_ready` first, so a layer that holds back (a concurrency limit) works here too.
        Answering::new(self.sidecar.app().oneshot(req), open)
    }
}
