//! Unit tests for the inspection layer, driven with `oneshot` against a fake upstream service.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use prometheus::{Encoder, Registry};
use tower::{service_fn, ServiceExt};

use super::*;
use crate::config::Config;
use crate::inspection::InspectLayer;
use crate::routes::RouteTable;

mod codings;
mod shadow;

const CONSISTENT: &str = r#"{"task_id": "t1", "status": "running", "stage": "ai_fetching", "progress": 25, "is_completed": false, "brand": "\u54c1\u724c"}"#;
const STALE_STAGE: &str = r#"{"task_id": "t2", "status": "completed", "stage": "ai_fetching", "progress": 100, "is_completed": true}"#;
const STALE_STAGE_FIXED: &str = r#"{"task_id": "t2", "status": "completed", "stage": "completed", "progress": 100, "is_completed": true}"#;

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

struct Harness {
    registry: Registry,
    inspector: Arc<Inspector>,
    routes: RouteTable,
}

fn harness(edit: impl FnOnce(&mut Config)) -> Harness {
    let mut config = Config::default();
    edit(&mut config);
    let settings = Settings::compile(config).expect("valid test config");
    let registry = Registry::new();
    let state = InspectionState::new(&settings, &registry).expect("families register");
    let inspector = Arc::new(Inspector::new(&settings, &state));
    let routes = settings.routes.clone();
    Harness {
        registry,
        inspector,
        routes,
    }
}

fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// An upstream answer with a JSON content type.
fn json_upstream(body: TestBody) -> Response<TestBody> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// A body that yields `frames` one by one, as a chunked upstream would.
fn streamed(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> TestBody {
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// A length-framed JSON answer, as the legacy backend sends.
fn json_response(body: &str) -> Response<TestBody> {
    let mut response = json_upstream(full(body.to_string()));
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from(body.len()));
    response
}

impl Harness {
    /// Sends `GET path` through the layer to an upstream answering `upstream`.
    async fn get(
        &self,
        path: &str,
        upstream: Response<TestBody>,
    ) -> (http::response::Parts, Result<Bytes, BoxError>) {
        let (head, body, _) = self.exchange(path, &[], upstream).await;
        (head, body)
    }

    /// Sends `GET path` with `headers` through the layer to an upstream answering `upstream`;
    /// also returns the request headers the upstream was sent.
    async fn exchange(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        upstream: Response<TestBody>,
    ) -> (http::response::Parts, Result<Bytes, BoxError>, HeaderMap) {
        let mut request = Request::get(path).body(()).unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        if let Some(route) = self.routes.classify(request.method(), path) {
            request.extensions_mut().insert(route);
        }
        let slot = std::sync::Mutex::new(Some(upstream));
        let sent = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        let seen = sent.clone();
        let inner = service_fn(move |req: Request<()>| {
            *seen.lock().unwrap() = req.headers().clone();
            let response = slot
                .lock()
                .unwrap()
                .take()
                .expect("one request per harness call");
            async move { Ok::<_, Infallible>(response) }
        });
        let service = InspectLayer::new(self.inspector.clone()).layer(inner);
        let response = service.oneshot(request).await.unwrap();
        let (head, body) = response.into_parts();
        let bytes = body.collect().await.map(|c| c.to_bytes());
        let sent = sent.lock().unwrap().clone();
        (head, bytes, sent)
    }

    /// `consistency_issues_total` of a minor rule on `task_status`.
    fn issues(&self, rule: &str) -> f64 {
        let labels = [
            ("route", "task_status"),
            ("rule", rule),
            ("level", "minor_issue"),
        ];
        self.metric("consistency_issues_total", &labels)
    }

    /// `consistency_fixes_total` of `rule` on `task_status` with mode `applied` or `shadow`.
    fn fixes(&self, rule: &str, mode: &str) -> f64 {
        let labels = [("route", "task_status"), ("rule", rule), ("mode", mode)];
        self.metric("consistency_fixes_total", &labels)
    }

    fn skipped(&self, reason: &str) -> f64 {
        let labels = [("route", "task_status"), ("reason", reason)];
        self.metric("consistency_skipped_total", &labels)
    }

    /// The value of the one series of `name` carrying all of `labels`, from the text exposition.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        let found: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(found.len(), 1, "one series {name}{labels:?} in\n{text}");
        found[0]
    }
}

use tower::Layer as _;

#[tokio::test]
async fn consistent_body_passes_byte_for_byte() {
    let h = harness(|_| {});
    let mut upstream = json_response(CONSISTENT);
    upstream
        .headers_mut()
        .insert("etag", HeaderValue::from_static("\"abc\""));
    let (head, body) = h.get("/test/status/t1", upstream).await;
    assert_eq!(body.unwrap(), CONSISTENT.as_bytes());
    assert_eq!(head.headers["etag"], "\"abc\"");
    assert_eq!(
        head.headers["content-length"],
        CONSISTENT.len().to_string().as_str()
    );
    assert_eq!(
        h.metric("consistency_checks_total", &[("route", "task_status")]),
        1.0
    );
    assert_eq!(
        h.metric(
            "consistency_results_total",
            &[("route", "task_status"), ("level", "consistent")]
        ),
        1.0
    );
    assert_eq!(
        h.metric("consistency_ratio", &[("route", "task_status")]),
        1.0
    );
}

#[tokio::test]
async fn stale_stage_is_fixed_in_flight_and_headers_follow() {
    let h = harness(|_| {});
    let mut upstream = json_response(STALE_STAGE);
    upstream
        .headers_mut()
        .insert("etag", HeaderValue::from_static("\"v1\""));
    for (name, value) in [
        ("digest", "sha-256=abc"),
        ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
        ("repr-digest", "sha-256=:abc:"),
        ("x-kept", "1"),
    ] {
        upstream
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    let (head, body) = h.get("/test/status/t2", upstream).await;
    assert_eq!(body.unwrap(), STALE_STAGE_FIXED.as_bytes());
    assert_eq!(
        head.headers["content-length"],
        STALE_STAGE_FIXED.len().to_string().as_str()
    );
    assert_eq!(head.headers["etag"], "W/\"v1\"");
    for digest in ["digest", "content-md5", "repr-digest"] {
        assert!(!head.headers.contains_key(digest), "{digest} kept");
    }
    assert_eq!(head.headers["x-kept"], "1");
    assert!(!head.headers.contains_key(FIXED_HEADER), "off by default");
    let fixes = h.fixes("completed_stage", "applied");
    assert_eq!(fixes, 1.0);
    let issues = h.issues("completed_stage");
    assert_eq!(issues, 1.0);
    assert_eq!(
        h.metric("consistency_ratio", &[("route", "task_status")]),
        0.0
    );
}

#[tokio::test]
async fn fixed_header_names_the_rules_when_enabled() {
    let h = harness(|c| c.inspect.fixed_header = true);
    let (head, _) = h.get("/test/status/t2", json_response(STALE_STAGE)).await;
    assert_eq!(head.headers[FIXED_HEADER], "completed_stage");
}

#[tokio::test]
async fn observe_mode_counts_but_never_touches() {
    let h = harness(|c| c.mode = crate::engine::Mode::Observe);
    let (_, body) = h.get("/test/status/t2", json_response(STALE_STAGE)).await;
    assert_eq!(body.unwrap(), STALE_STAGE.as_bytes());
    let issues = h.issues("completed_stage");
    assert_eq!(issues, 1.0);
    assert_eq!(h.fixes("completed_stage", "applied"), 0.0);
}

#[tokio::test]
async fn unrouted_and_non_json_responses_pass_through() {
    let h = harness(|_| {});
    let (_, body) = h.get("/api/other", json_response(STALE_STAGE)).await;
    assert_eq!(body.unwrap(), STALE_STAGE.as_bytes(), "unrouted: untouched");
    let mut html = json_response(STALE_STAGE);
    html.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/html"));
    let (_, body) = h.get("/test/status/t2", html).await;
    assert_eq!(body.unwrap(), STALE_STAGE.as_bytes());
    assert_eq!(h.skipped("not_json"), 1.0);
    let mut error = json_response(STALE_STAGE);
    *error.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    let (_, body) = h.get("/test/status/t2", error).await;
    assert_eq!(
        body.unwrap(),
        STALE_STAGE.as_bytes(),
        "non-2xx: not a status record"
    );
    assert_eq!(
        h.metric("consistency_checks_total", &[("route", "task_status")]),
        0.0
    );
}

#[tokio::test]
async fn problem_json_is_json() {
    let mut headers = HeaderMap::new();
    for (value, json) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("Application/Problem+JSON", true),
        ("text/json", false),
        ("application/jsonx", false),
        ("application/+json", false),
    ] {
        headers.insert("content-type", HeaderValue::from_static(value));
        assert_eq!(is_json(&headers), json, "{value}");
    }
}

#[tokio::test]
async fn oversize_bodies_stream_through_whole() {
    let h = harness(|c| c.inspect.max_body_bytes = 64);
    // Declared too large: never read into memory.
    let (_, body) = h.get("/test/status/t2", json_response(STALE_STAGE)).await;
    assert_eq!(body.unwrap(), STALE_STAGE.as_bytes());
    // Undeclared (chunked): passes the limit mid-stream; what was read goes out ahead of the rest.
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = STALE_STAGE
        .as_bytes()
        .chunks(10)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let chunked = json_upstream(streamed(chunks));
    let (_, body) = h.get("/test/status/t2", chunked).await;
    assert_eq!(body.unwrap(), STALE_STAGE.as_bytes());
    assert_eq!(h.skipped("too_large"), 2.0);
}

#[tokio::test]
async fn gzip_is_decoded_patched_and_reencoded() {
    let h = harness(|_| {});
    let compressed = Coding::Gzip.encode(STALE_STAGE.as_bytes()).unwrap();
    let mut upstream = json_upstream(full(compressed.clone()));
    upstream
        .headers_mut()
        .insert("content-encoding", HeaderValue::from_static("gzip"));
    upstream
        .headers_mut()
        .insert("content-length", HeaderValue::from(compressed.len()));
    let (head, body) = h.get("/test/status/t2", upstream).await;
    let body = body.unwrap();
    assert_eq!(head.headers["content-encoding"], "gzip");
    assert_eq!(
        head.headers["content-length"],
        body.len().to_string().as_str()
    );
    let (decoded, _) = Coding::Gzip.decode(&body, 1 << 20).unwrap();
    assert_eq!(decoded, STALE_STAGE_FIXED.as_bytes());

    // Nothing to fix: the original compressed bytes go out.
    let compressed = Coding::Gzip.encode(CONSISTENT.as_bytes()).unwrap();
    let mut upstream = json_upstream(full(compressed.clone()));
    upstream
        .headers_mut()
        .insert("content-encoding", HeaderValue::from_static("gzip"));
    let (_, body) = h.get("/test/status/t1", upstream).await;
    assert_eq!(body.unwrap(), compressed);
}

#[tokio::test]
async fn bombs_unknown_codings_and_bad_json_are_counted_and_untouched() {
    let h = harness(|c| c.inspect.max_decoded_bytes = 1 << 20);
    let bomb = Coding::Gzip.encode(&vec![b' '; 8 << 20]).unwrap();
    let cases: [(&str, Bytes, &str); 3] = [
        ("gzip", bomb, "too_large"),
        ("dcz", Bytes::from_static(b"\x5e\x2a\x4d\x18{}"), "encoding"),
        (
            "identity",
            Bytes::from_static(b"{\"status\": \"completed\", "),
            "unparseable",
        ),
    ];
    for (coding, raw, reason) in cases {
        let mut upstream = json_upstream(full(raw.clone()));
        upstream
            .headers_mut()
            .insert("content-encoding", HeaderValue::from_static(coding));
        let (_, body) = h.get("/test/status/x", upstream).await;
        assert_eq!(body.unwrap(), raw, "{coding}");
        assert_eq!(h.skipped(reason), 1.0, "{reason}");
    }
}

#[tokio::test]
async fn upstream_failure_mid_body_reaches_the_client_as_an_error() {
    let h = harness(|_| {});
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{\"status\": "))),
        Err("upstream reset".into()),
    ];
    let upstream = json_upstream(streamed(frames));
    let (_, body) = h.get("/test/status/t2", upstream).await;
    assert!(body.is_err(), "a broken body must not look complete");
}

#[tokio::test]
async fn trailers_survive_inspection() {
    let h = harness(|_| {});
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("42"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(STALE_STAGE.as_bytes()))),
        Ok(Frame::trailers(trailers)),
    ];
    let upstream = json_upstream(streamed(frames));
    let mut request = Request::get("/test/status/t2").body(()).unwrap();
    let route = h.routes.classify(request.method(), "/test/status/t2");
    request
        .extensions_mut()
        .insert(route.expect("a configured route"));
    let slot = std::sync::Mutex::new(Some(upstream));
    let inner = service_fn(move |_req: Request<()>| {
        let response = slot.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    let response = InspectLayer::new(h.inspector.clone())
        .layer(inner)
        .oneshot(request)
        .await
        .unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "42");
    assert_eq!(collected.to_bytes(), STALE_STAGE_FIXED.as_bytes());
}

#[tokio::test]
async fn a_spent_budget_streams_the_body_through_whole() {
    let budget = Budget::new(1024);
    let mut other_response = budget.reservation();
    assert!(other_response.cover(1024));
    let mut reservation = budget.reservation();
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = STALE_STAGE
        .as_bytes()
        .chunks(16)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = streamed(chunks);
    let Held::Overflow(held, rest, reason) = hold(body, 1 << 20, &mut reservation).await else {
        panic!("the budget is spent: the body must not be held");
    };
    assert_eq!(reason, Skip::Overloaded);
    let replayed = InspectBody::replay(held, Some(rest), None).holding(reservation);
    let bytes = replayed.collect().await.unwrap().to_bytes();
    assert_eq!(bytes, STALE_STAGE.as_bytes());
    drop(other_response);
    assert!(
        budget.reservation().cover(1024),
        "both reservations were given back"
    );
}

#[test]
fn held_bytes_budget_must_fit_one_compressed_body() {
    let mut config = Config::default();
    config.inspect.max_held_bytes = config.inspect.max_body_bytes;
    let err = Settings::compile(config).unwrap_err();
    assert_eq!(err.key, "inspect.max_held_bytes");
}
