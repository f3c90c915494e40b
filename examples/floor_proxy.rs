//! The floor of the HTTP stack: the least a hyper reverse proxy can do, measured beside the
//! sidecar by `benches/compare.sh` so the sidecar's speed is read against what hyper itself
//! allows on the same machine, in the same run.
//!
//! It has the sidecar's shape and nothing else: one current-thread runtime per worker thread,
//! each accepting on the shared listening socket; hyper-util's auto builder (HTTP/1.1 and h2c)
//! with header-name case preserved on both hops, as transparency needs; `TCP_NODELAY` on both;
//! upstream connections kept alive and reused. No routes, no inspection, no metrics, no
//! forwarded headers, no deadlines, no retry. Each client connection keeps the one upstream
//! connection it opened (HTTP/1.1 clients send one request at a time); BENCHMARKS.md found this
//! policy and the sidecar's shared pool equal beyond noise.
//!
//! Usage: `cargo run --release --example floor_proxy -- LISTEN UPSTREAM [WORKERS]`, for example
//! `floor_proxy 127.0.0.1:0 127.0.0.1:8080 2`. It prints `listening on ADDR` once bound.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: floor_proxy LISTEN UPSTREAM [WORKERS]";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: Arc<str> = args.next().ok_or(usage)?.into();
    let workers: usize = match args.next() {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    let threads = (0..workers.max(1))
        .map(|_| {
            let listener = listener.try_clone()?;
            let upstream = upstream.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(std::thread::spawn(move || {
                runtime.block_on(accept(listener, upstream));
            }))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

async fn accept(listener: std::net::TcpListener, upstream: Arc<str>) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .preserve_header_case(true);
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let parked = Parked {
            upstream: upstream.clone(),
            sender: Arc::new(Mutex::new(None)),
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| parked.clone().forward(req));
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One client connection's upstream connection, opened on its first request.
#[derive(Clone)]
struct Parked {
    upstream: Arc<str>,
    sender: Arc<Mutex<Option<http1::SendRequest<Incoming>>>>,
}

impl Parked {
    async fn forward(self, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
        let taken = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        let reused = match taken {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let mut sender = match reused {
            Some(sender) => sender,
            None => match self.connect().await {
                Ok(sender) => sender,
                Err(_) => return Ok(bad_gateway()),
            },
        };
        let response = sender.send_request(req).await;
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        match response {
            Ok(response) => Ok(response.map(BodyExt::boxed_unsync)),
            Err(_) => Ok(bad_gateway()),
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Incoming>, BoxError> {
        let stream = TcpStream::connect(&*self.upstream).await?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(connection.with_upgrades());
        Ok(sender)
    }
}

fn bad_gateway() -> Response<Body> {
    let body = Full::new(bytes::Bytes::from_static(b"{\"error\":\"bad gateway\"}"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
