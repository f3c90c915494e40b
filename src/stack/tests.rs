//! Unit tests for the whole tower stack, driven with `oneshot` against an in-test upstream
//! service, with paused time: load shedding, upstream failures (502, 504, mid-body) and their
//! metrics, and one inspected response fixed on its way through.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use prometheus_parse::{Sample, Value};
use tower::{service_fn, Service, ServiceExt};

use super::*;
use crate::config::Config;
use crate::proxy::{ProxyBody, UpstreamError};
use crate::BoxError;

/// The in-test upstream's response body.
type TestBody = UnsyncBoxBody<Bytes, BoxError>;

const STALE_STAGE: &str = r#"{"task_id": "t2", "status": "completed", "stage": "ai_fetching", "progress": 100, "is_completed": true}"#;
const STALE_STAGE_FIXED: &str = r#"{"task_id": "t2", "status": "completed", "stage": "completed", "progress": 100, "is_completed": true}"#;

/// A sidecar over the shipped defaults, edited by `edit`.
fn sidecar(edit: impl FnOnce(&mut Config)) -> Sidecar {
    let mut config = Config::default();
    edit(&mut config);
    let settings = Settings::compile(config).expect("valid test config");
    Sidecar::new(Arc::new(settings)).expect("families register")
}

/// An HTTP/1.1 GET with its one `Host`, as a client sends it.
fn get(path: &str) -> Request<ProxyBody> {
    Request::get(path)
        .header(http::header::HOST, "sidecar.test")
        .body(ProxyBody::default())
        .expect("request")
}

fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// The upstream's `200 OK` with `body`.
fn ok(body: TestBody) -> Response<TestBody> {
    Response::new(body)
}

/// The paths that reached an upstream, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

// === impl Seen ===

impl Seen {
    fn record<B>(&self, req: &Request<B>) {
        self.0.lock().expect("lock").push(req.uri().to_string());
    }

    fn paths(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

/// Reads a response body to its end, or to its error.
async fn read<B>(body: B) -> Result<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    body.collect().await.map(|collected| collected.to_bytes())
}

/// The `{"error": ...}` of a response the proxy made itself.
async fn json_error<B>(response: Response<B>) -> String
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = read(response.into_body()).await.expect("whole body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert!(json["detail"].is_string(), "{json}");
    json["error"]
        .as_str()
        .expect("error is a string")
        .to_string()
}

/// The value of the one series of `name` carrying all of `labels`, read from the exposition.
fn metric(sidecar: &Sidecar, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = String::from_utf8(crate::metrics::encode(&sidecar.registry)).expect("utf-8");
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("reading from memory");
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .collect();
    assert_eq!(found.len(), 1, "one series {name}{labels:?}");
    match found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        Value::Histogram(_) | Value::Summary(_) => panic!("{name} is not a scalar"),
    }
}

fn upstream_errors(sidecar: &Sidecar, reason: &str) -> f64 {
    metric(
        sidecar,
        "consistency_proxy_upstream_errors_total",
        &[("reason", reason)],
    )
}

fn requests(sidecar: &Sidecar, code: &str, route: &str) -> f64 {
    metric(
        sidecar,
        "consistency_proxy_requests_total",
        &[("code", code), ("method", "GET"), ("route", route)],
    )
}

/// The stack keeps tower's contract (readiness before the call), so a standard layer that
/// holds back in `poll_ready` works in front of it, as the connection drives it (`oneshot`).
#[tokio::test(start_paused = true)]
async fn tower_concurrency_limit_in_front_of_the_stack_holds_back_until_a_response() {
    let sidecar = sidecar(|_| {});
    let seen = Seen::default();
    let upstream = {
        let seen = seen.clone();
        service_fn(move |req: Request<ProxyBody>| {
            seen.record(&req);
            async move { Ok::<_, UpstreamError>(ok(full("answered"))) }
        })
    };
    let mut limited = tower::limit::ConcurrencyLimit::new(sidecar.app_with(upstream), 1);

    let first = limited.ready().await.expect("ready").call(get("/a"));
    // One request is in flight (its future not yet polled): the limit holds the next back.
    let mut second = limited.clone();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), second.ready())
            .await
            .is_err(),
        "a second request waits for the first"
    );
    let answered = first.await.expect("response");
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(read(answered.into_body()).await.expect("body"), "answered");

    let again = second
        .ready()
        .await
        .expect("ready once the first answered")
        .call(get("/b"))
        .await
        .expect("response");
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(seen.paths(), ["/a", "/b"]);
}

#[tokio::test(start_paused = true)]
async fn past_the_concurrency_cap_requests_are_shed_until_a_body_ends() {
    let sidecar = sidecar(|c| c.proxy.max_concurrent_requests = 2);
    let seen = Seen::default();
    let upstream = {
        let seen = seen.clone();
        service_fn(move |req: Request<ProxyBody>| {
            seen.record(&req);
            async move { Ok::<_, UpstreamError>(ok(full("streamed"))) }
        })
    };

    // Unread bodies keep their requests in flight, and their permits taken.
    let first = sidecar
        .app_with(upstream.clone())
        .oneshot(get("/a"))
        .await
        .expect("response");
    let second = sidecar
        .app_with(upstream.clone())
        .oneshot(get("/b"))
        .await
        .expect("response");
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );

    let shed = sidecar
        .app_with(upstream.clone())
        .oneshot(get("/c"))
        .await
        .expect("response");
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(json_error(shed).await, "overloaded");
    assert_eq!(
        metric(&sidecar, "consistency_proxy_load_shed_total", &[]),
        1.0
    );
    assert_eq!(
        seen.paths(),
        ["/a", "/b"],
        "a shed request reaches no upstream"
    );
    assert_eq!(
        metric(&sidecar, "consistency_proxy_inflight_requests", &[]),
        2.0
    );

    // A body dropped unfinished gives its permit back.
    drop(first);
    let admitted = sidecar
        .app_with(upstream.clone())
        .oneshot(get("/d"))
        .await
        .expect("response");
    assert_eq!(admitted.status(), StatusCode::OK);
    assert_eq!(
        read(admitted.into_body()).await.expect("whole body"),
        "streamed"
    );
    // A body read to its end gives its permit back too.
    assert_eq!(
        read(second.into_body()).await.expect("whole body"),
        "streamed"
    );
    // Both permits are back: two requests may be held at once again.
    let third = sidecar
        .app_with(upstream.clone())
        .oneshot(get("/e"))
        .await
        .expect("response");
    let fourth = sidecar
        .app_with(upstream)
        .oneshot(get("/f"))
        .await
        .expect("response");
    assert_eq!(
        (third.status(), fourth.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    drop((third, fourth));
    assert_eq!(
        metric(&sidecar, "consistency_proxy_load_shed_total", &[]),
        1.0
    );
    assert_eq!(seen.paths(), ["/a", "/b", "/d", "/e", "/f"]);
    assert_eq!(
        metric(&sidecar, "consistency_proxy_inflight_requests", &[]),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_slower_than_the_header_timeout_is_a_504() {
    let sidecar = sidecar(|c| c.proxy.response_header_timeout = Duration::from_secs(2));
    let upstream = service_fn(|_req: Request<ProxyBody>| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, UpstreamError>(ok(full("too late")))
    });

    let start = tokio::time::Instant::now();
    let response = sidecar
        .app_with(upstream)
        .oneshot(get("/slow"))
        .await
        .expect("response");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "gave up at the timeout"
    );
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_error(response).await, "upstream_timeout");
    assert_eq!(upstream_errors(&sidecar, "timeout"), 1.0);
    assert_eq!(requests(&sidecar, "5xx", "other"), 1.0);
    assert_eq!(requests(&sidecar, "2xx", "other"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_upstream_is_a_502() {
    let sidecar = sidecar(|_| {});
    let upstream = service_fn(|_req: Request<ProxyBody>| async {
        Err::<Response<TestBody>, _>(UpstreamError::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    });

    let response = sidecar
        .app_with(upstream)
        .oneshot(get("/test/status/t1"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_error(response).await, "upstream_unreachable");
    assert_eq!(upstream_errors(&sidecar, "connect"), 1.0);
    assert_eq!(upstream_errors(&sidecar, "timeout"), 0.0);
    assert_eq!(requests(&sidecar, "5xx", "task_status"), 1.0);
    assert_eq!(
        metric(&sidecar, "consistency_proxy_inflight_requests", &[]),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_body_failing_mid_stream_fails_the_client_body() {
    let sidecar = sidecar(|_| {});
    let upstream = service_fn(|_req: Request<ProxyBody>| async {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"first half, "))),
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
            Ok(Frame::data(Bytes::from_static(b"never sent"))),
        ];
        let mut response = ok(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
        response
            .headers_mut()
            .insert("content-length", HeaderValue::from_static("1000"));
        Ok::<_, UpstreamError>(response)
    });

    let response = sidecar
        .app_with(upstream)
        .oneshot(get("/download"))
        .await
        .expect("response");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the head was already sent"
    );
    assert_eq!(response.headers()["content-length"], "1000");
    assert_eq!(
        metric(&sidecar, "consistency_proxy_inflight_requests", &[]),
        1.0
    );
    let (_, mut body) = response.into_parts();
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("the first frame is data");
    assert_eq!(
        first.into_data().expect("data"),
        Bytes::from_static(b"first half, ")
    );
    let failure = body.frame().await.expect("a frame");
    assert!(
        failure.is_err(),
        "the failure reaches the client: {failure:?}"
    );
    assert_eq!(upstream_errors(&sidecar, "body"), 1.0);
    drop(body);
    assert_eq!(
        metric(&sidecar, "consistency_proxy_inflight_requests", &[]),
        0.0
    );
    // The head was 200: the request counts as answered, its failure as an upstream error.
    assert_eq!(requests(&sidecar, "2xx", "other"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn an_inconsistent_task_status_is_fixed_through_the_stack() {
    let sidecar = sidecar(|_| {});
    let seen = Seen::default();
    let upstream = {
        let seen = seen.clone();
        service_fn(move |req: Request<ProxyBody>| {
            seen.record(&req);
            async {
                let mut response = ok(full(STALE_STAGE));
                let headers = response.headers_mut();
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                headers.insert("content-length", HeaderValue::from(STALE_STAGE.len()));
                Ok::<_, UpstreamError>(response)
            }
        })
    };

    let response = sidecar
        .app_with(upstream)
        .oneshot(get("/test/status/t2"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        STALE_STAGE_FIXED.len().to_string().as_str()
    );
    assert_ne!(STALE_STAGE.len(), STALE_STAGE_FIXED.len());
    let body = read(response.into_body()).await.expect("whole body");
    assert_eq!(body, STALE_STAGE_FIXED.as_bytes());
    assert_eq!(seen.paths(), ["/test/status/t2"]);
    assert_eq!(
        metric(
            &sidecar,
            "consistency_fixes_total",
            &[
                ("route", "task_status"),
                ("rule", "completed_stage"),
                ("mode", "applied"),
            ]
        ),
        1.0
    );
    assert_eq!(requests(&sidecar, "2xx", "task_status"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_task_is_counted_and_its_responses_pass_byte_for_byte() {
    const STUCK: &str = r#"{"task_id": "t9", "status": "running", "stage": "ai_fetching", "progress": 25, "is_completed": false}"#;
    let sidecar = sidecar(|config| config.tracker.stall_after = Duration::from_secs(60));
    let upstream = service_fn(|_: Request<ProxyBody>| async {
        let mut response = ok(full(STUCK));
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from(STUCK.len()));
        Ok::<_, UpstreamError>(response)
    });
    let stalled = |sidecar: &Sidecar| {
        metric(
            sidecar,
            "consistency_stalled_tasks",
            &[("route", "task_status"), ("stage", "ai_fetching")],
        )
    };
    // Polled every 10 s for two minutes: stalled from the 60 s poll on.
    for poll in 0..=12 {
        if poll > 0 {
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        let response = sidecar
            .app_with(upstream)
            .oneshot(get("/test/status/t9"))
            .await
            .expect("response");
        assert_eq!(
            response.headers()["content-length"],
            STUCK.len().to_string().as_str()
        );
        assert!(response.headers().get("x-consistency-fixed").is_none());
        let body = read(response.into_body()).await.expect("whole body");
        assert_eq!(
            body,
            STUCK.as_bytes(),
            "observation only: the bytes are the upstream's"
        );
        assert_eq!(
            stalled(&sidecar),
            if poll >= 6 { 1.0 } else { 0.0 },
            "poll {poll}"
        );
    }
    assert_eq!(
        metric(
            &sidecar,
            "consistency_tasks_stalled_total",
            &[("route", "task_status"), ("stage", "ai_fetching")],
        ),
        1.0
    );
    assert_eq!(stalled(&sidecar), 1.0);
    assert_eq!(
        metric(
            &sidecar,
            "consistency_stalled_tasks",
            &[("route", "test_progress"), ("stage", "init")],
        ),
        0.0,
        "every stage of every tracked route is shown, at zero"
    );
}

mod evidence;
