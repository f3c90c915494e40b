//! The admin port: one small HTTP/1.1 server for `/metrics`, health and the report, on the
//! caller's runtime, apart from the proxy's workers.

use std::convert::Infallible;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Admin;

/// Serves the admin port until told to stop.
pub(super) async fn serve(listener: TcpListener, admin: Admin, stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let stopping = super::stopped(stop);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, admin.clone()));
                }
                Err(err) => super::accept_failed(err).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, admin: Admin) {
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
