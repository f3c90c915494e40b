//! Shared helpers for the proxy and inspection tests: an in-process sidecar on port 0, an
//! in-test hyper upstream that records what reached it, the Python upstreams, and small clients.
#![allow(dead_code)] // each test binary uses a different subset

pub mod redis_server;
pub mod standin;
mod tool;

pub use tool::have_tool;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use consistency_sidecar::config::Config;
use consistency_sidecar::metrics::Metrics;
use consistency_sidecar::settings::Settings;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Upper bound for any single wait in these tests; hitting it is a failure, not a timing claim.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const MIB: usize = 1024 * 1024;

// === the sidecar under test ===

/// A sidecar served in-process on 127.0.0.1:0, stopped when dropped or by [`Sidecar::stop`].
pub struct Sidecar {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sidecar {
    pub async fn start(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Sidecar {
        let mut config = Config {
            upstream: upstream.parse().expect("upstream URL"),
            ..Config::default()
        };
        tweak(&mut config);
        let settings = Arc::new(Settings::compile(config).expect("test config is valid"));
        let metrics = Arc::new(Metrics::new(&settings));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr = listener.local_addr().expect("addr");
        let admin = admin_listener.local_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(consistency_sidecar::server::serve(
            listener,
            admin_listener,
            settings,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Sidecar {
            addr,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("sidecar stops in time")
                .expect("serve task")
                .expect("serve result");
        }
    }

    pub async fn metrics(&self) -> String {
        let (status, headers, body) = get(&self.admin_url("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        String::from_utf8(body.to_vec()).expect("metrics are UTF-8")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The value of one sample line (`name{labels}` exactly as exposed), or 0 if absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("sample value"))
        .unwrap_or(0.0)
}

// === the in-test upstream ===

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

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
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

// === bodies with known content ===

/// A deterministic, position-dependent byte stream, sent in chunks; optionally failing midway.
pub struct PatternBody {
    sent: usize,
    total: usize,
    chunk: usize,
    fail_at: Option<usize>,
    // Before failing, a pause: the server flushes what it has, so the peer sees a started body.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

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

// === clients ===

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// Sends a request and collects the whole response; panics on a transport error.
pub async fn send(req: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
    let response = tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("body in time")
        .expect("complete body")
        .to_bytes();
    (parts.status, parts.headers, body)
}

pub async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(Request::get(url).body(empty()).expect("request")).await
}

/// Like [`send`], but reports whether the body ended in an error instead of panicking.
pub async fn send_expect_broken_body(req: Request<TestBody>) -> Result<Bytes, String> {
    let response = tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .expect("response in time")
        .expect("response head");
    match tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("body ends in time")
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) => Err(err.to_string()),
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it (bounded).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out))
        .await
        .expect("server closes in time");
    out
}

/// The status line and head of a raw response, lowercased header names.
pub fn raw_head(response: &[u8]) -> String {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete head");
    String::from_utf8_lossy(&response[..end]).to_string()
}

// === the Python stand-in ===

/// `tests/upstreams/echo_upstream.py` on 127.0.0.1:0; killed when dropped.
pub struct PythonUpstream {
    pub addr: SocketAddr,
    child: Child,
}

impl PythonUpstream {
    pub fn start() -> PythonUpstream {
        use std::io::BufRead;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/upstreams/echo_upstream.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read port line");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected 'PORT n', got {line:?}"));
        PythonUpstream {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}
