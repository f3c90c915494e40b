//! The upstream connection pool against real sockets: stale keep-alive connections, the cap on
//! upstream connections, and reuse bounded by the client connections.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections an upstream accepted in all, and has open now (with the most at once).
#[derive(Debug, Default)]
struct Connections {
    accepted: AtomicUsize,
    open: AtomicUsize,
    most: AtomicUsize,
}

impl Connections {
    fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An upstream that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), a moment after the response: the keep-alive race a pooled proxy
/// must survive.
async fn closing_upstream() -> (SocketAddr, Arc<Connections>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(Connections::default());
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.opened();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.is_empty() {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                drop(stream);
                counted.closed();
            });
        }
    });
    (addr, connections)
}

/// A keep-alive hyper upstream whose answers take `delay`, counting its connections.
async fn slow_upstream(delay: Duration) -> (SocketAddr, Arc<Connections>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(Connections::default());
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.opened();
            let counted = counted.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from_static(
                            b"ok",
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                counted.closed();
            });
        }
    });
    (addr, connections)
}

/// One keep-alive client connection: requests go one after another on it.
async fn keep_alive_client(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    path: &str,
) -> (StatusCode, bytes::Bytes) {
    sender.ready().await.expect("client connection ready");
    let response = tokio::time::timeout(
        PATIENCE,
        sender.send_request(
            Request::get(path)
                .header("host", "sidecar.test")
                .body(Empty::new())
                .expect("request"),
        ),
    )
    .await
    .expect("answer in time")
    .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

#[tokio::test]
async fn an_upstream_closing_each_connection_after_answering_never_causes_a_502() {
    let (upstream, connections) = closing_upstream().await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), |_| {}).await;
    let mut client = keep_alive_client(sidecar.addr).await;
    for i in 0..200 {
        let (status, body) = get_on(&mut client, &format!("/plain/{i}")).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body:?}");
        assert_eq!(&body[..], b"ok");
    }
    // Every request needed a connection of its own: the stale ones were noticed or retried.
    assert_eq!(connections.accepted.load(Ordering::SeqCst), 200);
    let metrics = sidecar.metrics().await;
    for reason in ["connect", "timeout", "body", "protocol"] {
        let series = format!("consistency_proxy_upstream_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&metrics, &series), 0.0, "{series}");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn upstream_connections_stay_under_the_cap_and_requests_wait_for_one() {
    let (upstream, connections) = slow_upstream(Duration::from_millis(100)).await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), |config| {
        config.proxy.upstream_max_connections = 2;
    })
    .await;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = sidecar.addr;
            tokio::spawn(async move {
                let mut client = keep_alive_client(addr).await;
                get_on(&mut client, &format!("/slow/{i}")).await
            })
        })
        .collect();
    for client in clients {
        let (status, body) = client.await.expect("client task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"ok");
    }
    assert!(connections.most.load(Ordering::SeqCst) <= 2);
    assert!(connections.accepted.load(Ordering::SeqCst) <= 2);
    sidecar.stop().await;
}

#[tokio::test]
async fn one_client_connection_uses_one_upstream_connection() {
    let (upstream, connections) = slow_upstream(Duration::ZERO).await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), |_| {}).await;
    let mut client = keep_alive_client(sidecar.addr).await;
    for i in 0..50 {
        let (status, _) = get_on(&mut client, &format!("/seq/{i}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(connections.accepted.load(Ordering::SeqCst), 1);
    // When the client goes, its upstream connection is not kept for nobody.
    drop(client);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while connections.open.load(Ordering::SeqCst) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle upstream connection outlived every client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn a_request_with_a_body_is_not_replayed() {
    // A POST meets a connection the upstream closes; it is answered, never sent twice.
    let (upstream, connections) = closing_upstream().await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), |_| {}).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut answered = 0;
    for i in 0..20 {
        let response = client
            .request(
                Request::post(sidecar.url(&format!("/post/{i}")))
                    .body(Full::new(bytes::Bytes::from_static(b"payload")))
                    .expect("request"),
            )
            .await
            .expect("an answer, a 502 at worst");
        if response.status() == StatusCode::OK {
            answered += 1;
        } else {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        }
    }
    assert!(connections.accepted.load(Ordering::SeqCst) <= 20);
    assert!(answered >= 1);
    sidecar.stop().await;
}
