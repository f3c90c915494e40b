//! The admin port of the sidecar binary: `/metrics` counts equal the requests made,
//! `/healthz`, `/readyz`, `/report`. (The stack's failure metrics, without a socket:
//! `src/stack/tests.rs`.)

mod support;

use http::{Method, Request, StatusCode};
use support::*;

#[tokio::test]
async fn metrics_count_exactly_the_requests_made() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let task_status_gets = [("code", "2xx"), ("method", "GET"), ("route", "task_status")];
    let before = sidecar.metrics().await;
    assert_eq!(
        before.value("consistency_proxy_inflight_requests", &[]),
        0.0
    );
    assert_eq!(
        before
            .get("consistency_proxy_requests_total", &task_status_gets)
            .unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        before.value(
            "consistency_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("mode", "fix")]
        ),
        1.0
    );
    assert!(before.has("process_resident_memory_bytes"));

    for _ in 0..7 {
        get(&sidecar.url("/test/status/t-1")).await;
    }
    for _ in 0..3 {
        get(&sidecar.url("/plain")).await;
    }
    for _ in 0..2 {
        send(
            Request::post(sidecar.url("/plain"))
                .body(full("x"))
                .expect("request"),
        )
        .await;
    }
    send(
        Request::builder()
            .method(Method::from_bytes(b"PROPFIND").expect("method"))
            .uri(sidecar.url("/plain"))
            .body(empty())
            .expect("request"),
    )
    .await;
    let connect = Request::connect("example.com:443")
        .header("host", "example.com:443")
        .body(empty())
        .expect("request");
    let refused = request_on(sidecar.addr, connect).await.expect("response");
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);

    let after = sidecar.metrics().await;
    let count = |code: &str, method: &str, route: &str| {
        let labels = [("code", code), ("method", method), ("route", route)];
        after.value("consistency_proxy_requests_total", &labels)
    };
    assert_eq!(count("2xx", "GET", "task_status"), 7.0);
    assert_eq!(count("2xx", "GET", "other"), 3.0);
    assert_eq!(count("2xx", "POST", "other"), 2.0);
    assert_eq!(count("2xx", "other", "other"), 1.0);
    assert_eq!(count("4xx", "other", "other"), 1.0);
    assert_eq!(after.sum("consistency_proxy_requests_total", &[]), 14.0);
    for route in ["task_status", "other"] {
        assert_eq!(
            after.value(
                "consistency_proxy_request_duration_seconds_count",
                &[("route", route)]
            ),
            7.0,
            "{route}"
        );
    }
    assert_eq!(after.value("consistency_proxy_inflight_requests", &[]), 0.0);
    assert_eq!(upstream.seen().len(), 13);
}

#[tokio::test]
async fn health_and_readiness() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let (status, _, body) = get(&sidecar.admin_url("/healthz")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    // Nothing proxied yet: ready through the TCP probe.
    let (status, _, body) = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(body.starts_with(b"ready: upstream accepts"));
    get(&sidecar.url("/plain")).await;
    let (status, _, body) = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(b"ready: upstream answered"));
    let (status, _, body) = get(&sidecar.admin_url("/report")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("Total checks: 0"));
    let (status, headers, body) = get(&sidecar.admin_url("/report.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let report: serde_json::Value = serde_json::from_slice(&body).expect("report is JSON");
    assert_eq!(report["consistency_ratio"], 1.0);
    let (status, _, _) = get(&sidecar.admin_url("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
