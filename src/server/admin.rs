//! The admin port: one small HTTP/1.1 server for `/metrics`, health and the report, on the
//! caller's runtime, apart from the proxy's workers. It has its own small connection cap
//! ([`ADMIN_MAX_CONNECTIONS`]): probes and a scraper need a few, and a flood of the admin port
//! must not cost the proxy's memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::deadlines::{ActivityIo, Answering};
use super::limit::{ConnectionLimit, Place};
use crate::admin::Admin;

/// Admin connections open at most; at the cap the longest idle is closed, as on the proxy port.
pub const ADMIN_MAX_CONNECTIONS: usize = 16;

/// The largest request head the admin port reads.
pub const ADMIN_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves the admin port until told to stop.
pub(super) async fn serve(
    listener: TcpListener,
    admin: Admin,
    cap: ConnectionLimit,
    stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let stopping = super::stopped(stop);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let place = tokio::select! {
                        () = &mut stopping => break,
                        place = cap.admit() => place,
                    };
                    connections.spawn(serve_connection(stream, peer, admin.clone(), place));
                }
                Err(err) => super::accept_failed(err).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, admin: Admin, place: Place) {
    let deadlines = place.deadlines().clone();
    let io = TokioIo::new(ActivityIo::new(stream, deadlines.clone()));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let admin = admin.clone();
        let open = deadlines.request(false);
        Answering::new(
            async move { Ok::<_, Infallible>(admin.handle(req, peer).await) },
            open,
        )
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        // Admin requests are a line and a few headers; hyper's default would let each
        // connection's read buffer grow to 400 KiB.
        .max_buf_size(ADMIN_MAX_HEAD_BYTES)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = place.deadlines().reclaimed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "admin connection ended with an error");
    }
}
