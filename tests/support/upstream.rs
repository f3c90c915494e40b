//! The in-test upstream: a hyper HTTP/1.1 server on 127.0.0.1:0 with routes for every case
//! the proxy tests need (fixed, chunked, huge, bodiless, failing, slow, trailers, upgrade),
//! recording each request that reached it; and bodies with known content.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::{empty, full, TestBody};
use super::{BoxError, MIB, PATIENCE};

/// What reached the upstream.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// A hyper HTTP/1.1 server on 127.0.0.1:0 answering with `handler` and recording every request.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

// === impl TestUpstream ===

impl TestUpstream {
    pub async fn start<F, Fut>(handler: F) -> TestUpstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        recorder.lock().expect("lock").push(Seen {
                            method: req.method().clone(),
                            uri: req.uri().clone(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestUpstream { addr, seen, task }
    }

    /// The standard upstream of these tests: see [`standard_routes`].
    pub async fn standard() -> TestUpstream {
        TestUpstream::start(standard_routes).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.seen.lock().expect("lock").len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "upstream never saw request {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: StatusCode, headers: &[(&str, &str)], body: TestBody) -> Response<TestBody> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("response")
}

/// The plain body of `/plain`: 1000 bytes.
pub fn plain_body() -> Bytes {
    Bytes::from(PatternBody::bytes(1000))
}

/// Routes of the standard in-test upstream, by path.
pub async fn standard_routes(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/plain" => respond(
            StatusCode::OK,
            &[("content-type", "application/octet-stream")],
            full(plain_body()),
        ),
        "/json" | "/test/status/t-1" => respond(
            StatusCode::OK,
            &[("content-type", "application/json")],
            full(
                r#"{"task_id":"t-1","status":"running","stage":"init","progress":5,"is_completed":false}"#,
            ),
        ),
        // No length: hyper sends it chunked.
        "/chunked" => respond(
            StatusCode::OK,
            &[],
            PatternBody::new(300_000, 7_000).boxed_unsync(),
        ),
        "/big" => respond(
            StatusCode::OK,
            &[],
            PatternBody::new(10 * MIB, 64 * 1024).boxed_unsync(),
        ),
        "/head" => respond(
            StatusCode::OK,
            &[("content-type", "text/plain"), ("content-length", "1000")],
            if req.method() == Method::HEAD {
                empty()
            } else {
                full(plain_body())
            },
        ),
        "/no-content" => respond(StatusCode::NO_CONTENT, &[("x-kind", "204")], empty()),
        "/not-modified" => respond(
            StatusCode::NOT_MODIFIED,
            &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
            empty(),
        ),
        "/repeated" => respond(
            StatusCode::OK,
            &[
                ("set-cookie", "a=1; Path=/"),
                ("x-multi", "first"),
                ("set-cookie", "b=2; HttpOnly"),
                ("x-multi", "second"),
                ("set-cookie", "c=3"),
            ],
            full("ok"),
        ),
        "/hop" => respond(
            StatusCode::OK,
            &[
                ("connection", "x-upstream-hop"),
                ("x-upstream-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("x-end-to-end", "kept"),
            ],
            full("ok"),
        ),
        "/upload" => {
            let mut body = req.into_body();
            let mut len = 0usize;
            let mut sum = Fnv::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            len += data.len();
                            sum.update(data);
                        }
                    }
                    Err(_) => return respond(StatusCode::BAD_REQUEST, &[], full("broken upload")),
                }
            }
            respond(StatusCode::OK, &[], full(format!("{len} {:016x}", sum.0)))
        }
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            respond(StatusCode::OK, &[], full("slow but done"))
        }
        // A length is promised, then the upstream fails after 100 KiB.
        "/die" => respond(
            StatusCode::OK,
            &[("content-length", "1000000")],
            PatternBody::failing(100 * 1024).boxed_unsync(),
        ),
        "/die-chunked" => respond(
            StatusCode::OK,
            &[],
            PatternBody::failing(100 * 1024).boxed_unsync(),
        ),
        "/trailers" => {
            let frames = vec![
                Frame::data(Bytes::from_static(b"hello ")),
                Frame::data(Bytes::from_static(b"trailers")),
                Frame::trailers({
                    let mut t = HeaderMap::new();
                    t.insert("x-checksum", "abc123".parse().expect("value"));
                    t
                }),
            ];
            respond(
                StatusCode::OK,
                &[("trailer", "x-checksum")],
                FramesBody(frames.into()).boxed_unsync(),
            )
        }
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    // Echo until the client closes.
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            respond(
                StatusCode::SWITCHING_PROTOCOLS,
                &[("connection", "upgrade"), ("upgrade", "echo")],
                empty(),
            )
        }
        _ => respond(
            StatusCode::OK,
            &[("content-type", "text/plain")],
            full(format!("path {path}")),
        ),
    }
}

/// A body made of the given frames, trailers included.
pub struct FramesBody(pub std::collections::VecDeque<Frame<Bytes>>);

// === impl FramesBody ===

impl Body for FramesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A deterministic, position-dependent byte stream, sent in chunks; optionally failing midway.
pub struct PatternBody {
    sent: usize,
    total: usize,
    chunk: usize,
    fail_at: Option<usize>,
    // Before failing, a pause: the server flushes what it has, so the peer sees a started body.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

// === impl PatternBody ===

impl PatternBody {
    pub fn new(total: usize, chunk: usize) -> PatternBody {
        PatternBody {
            sent: 0,
            total,
            chunk,
            fail_at: None,
            pause: None,
        }
    }

    /// Sends `at` bytes, then fails.
    pub fn failing(at: usize) -> PatternBody {
        PatternBody {
            sent: 0,
            total: usize::MAX,
            chunk: 16 * 1024,
            fail_at: Some(at),
            pause: None,
        }
    }

    pub fn byte(i: usize) -> u8 {
        (i ^ (i >> 7) ^ (i >> 17)).wrapping_mul(31) as u8
    }

    pub fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(PatternBody::byte).collect()
    }

    /// Checks that `data` is the pattern from offset 0.
    pub fn matches(data: &[u8]) -> bool {
        data.iter()
            .enumerate()
            .all(|(i, b)| *b == PatternBody::byte(i))
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(at) = self.fail_at {
            if self.sent >= at {
                let pause = self.pause.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(Duration::from_millis(100)))
                });
                if pause.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err("upstream died mid-body".into())));
            }
        }
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let n = self.chunk.min(self.total - self.sent);
        let start = self.sent;
        self.sent += n;
        let data: Vec<u8> = (start..start + n).map(PatternBody::byte).collect();
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
    }
}

/// FNV-1a, 64 bit: a cheap checksum to compare uploads.
pub struct Fnv(pub u64);

// === impl Fnv ===

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn of(data: &[u8]) -> u64 {
        let mut f = Fnv::new();
        f.update(data);
        f.0
    }
}
