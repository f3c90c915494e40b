//! The upstream connection pool against real sockets: stale keep-alive connections, the cap on
//! upstream connections, and reuse bounded by the client connections.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

async fn get_on(connection: &mut Connection, path: &str) -> (StatusCode, bytes::Bytes) {
    let request = Request::get(path)
        .header("host", "sidecar.test")
        .body(empty())
        .expect("request");
    let response = request_via(connection, request).await.expect("response");
    let (status, _, body) = collect(response).await.expect("body");
    (status, body)
}

#[tokio::test]
async fn an_upstream_closing_each_connection_after_answering_never_causes_a_502() {
    let (upstream, connections) = closing_upstream().await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), "").await;
    let mut client = connect(sidecar.addr).await.expect("connect");
    for i in 0..200 {
        let (status, body) = get_on(&mut client, &format!("/plain/{i}")).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body:?}");
        assert_eq!(&body[..], b"ok");
    }
    // Every request needed a connection of its own: the stale ones were noticed or retried.
    assert_eq!(connections.accepted.load(Ordering::SeqCst), 200);
    let metrics = sidecar.metrics().await;
    for reason in ["connect", "timeout", "body", "protocol"] {
        let errors = metrics.get(
            "consistency_proxy_upstream_errors_total",
            &[("reason", reason)],
        );
        assert_eq!(errors.unwrap_or(0.0), 0.0, "{reason}");
    }
}

#[tokio::test]
async fn upstream_connections_stay_under_the_cap_and_requests_wait_for_one() {
    let (upstream, connections) = slow_upstream(Duration::from_millis(100)).await;
    let sidecar = Sidecar::start(
        &format!("http://{upstream}"),
        "[proxy]\nupstream_max_connections = 2\n",
    )
    .await;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = sidecar.addr;
            tokio::spawn(async move {
                let mut client = connect(addr).await.expect("connect");
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
}

#[tokio::test]
async fn one_client_connection_uses_one_upstream_connection() {
    let (upstream, connections) = slow_upstream(Duration::ZERO).await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), "").await;
    let mut client = connect(sidecar.addr).await.expect("connect");
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
}

#[tokio::test]
async fn a_request_with_a_body_is_not_replayed() {
    // A POST meets a connection the upstream closes; it is answered, never sent twice.
    let (upstream, connections) = closing_upstream().await;
    let sidecar = Sidecar::start(&format!("http://{upstream}"), "").await;
    let mut answered = 0;
    for i in 0..20 {
        let response = request(
            Request::post(sidecar.url(&format!("/post/{i}")))
                .body(full("payload"))
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
}
