//! The admin port: `/metrics` counts equal the requests made, `/healthz`, `/readyz`; and the
//! stack driven with `oneshot`, without a client socket.

mod support;

use std::sync::Arc;

use consistency_sidecar::config::Config;
use consistency_sidecar::inspection::Inspector;
use consistency_sidecar::metrics::Metrics;
use consistency_sidecar::settings::Settings;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tower::ServiceExt;

#[tokio::test]
async fn metrics_count_exactly_the_requests_made() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let before = sidecar.metrics().await;
    assert_eq!(sample(&before, "consistency_proxy_inflight_requests"), 0.0);
    assert_eq!(
        sample(
            &before,
            r#"consistency_proxy_requests_total{code="2xx",method="GET",route="task_status"}"#
        ),
        0.0
    );
    assert!(before.contains(r#"consistency_build_info{mode="fix",version=""#));
    assert!(before.contains("process_resident_memory_bytes"));

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
    raw(
        sidecar.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;

    let after = sidecar.metrics().await;
    let count = |labels: &str| {
        sample(
            &after,
            &format!("consistency_proxy_requests_total{{{labels}}}"),
        )
    };
    assert_eq!(count(r#"code="2xx",method="GET",route="task_status""#), 7.0);
    assert_eq!(count(r#"code="2xx",method="GET",route="other""#), 3.0);
    assert_eq!(count(r#"code="2xx",method="POST",route="other""#), 2.0);
    assert_eq!(count(r#"code="2xx",method="other",route="other""#), 1.0);
    assert_eq!(count(r#"code="4xx",method="other",route="other""#), 1.0);
    let total: f64 = after
        .lines()
        .filter(|l| l.starts_with("consistency_proxy_requests_total{"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .expect("value")
                .parse::<f64>()
                .expect("number")
        })
        .sum();
    assert_eq!(total, 14.0);
    assert_eq!(
        sample(
            &after,
            r#"consistency_proxy_request_duration_seconds_count{route="task_status"}"#
        ),
        7.0
    );
    assert_eq!(
        sample(
            &after,
            r#"consistency_proxy_request_duration_seconds_count{route="other"}"#
        ),
        7.0
    );
    assert_eq!(sample(&after, "consistency_proxy_inflight_requests"), 0.0);
    assert_eq!(upstream.seen().len(), 13);
    sidecar.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
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
    sidecar.stop().await;
}

#[tokio::test]
async fn the_stack_answers_without_a_client_socket() {
    let down = closed_port().await;
    let config = Config {
        upstream: format!("http://{down}").parse().expect("url"),
        ..Config::default()
    };
    let settings = Arc::new(Settings::compile(config).expect("settings"));
    let metrics = Arc::new(Metrics::new(&settings));
    let inspector = Arc::new(Inspector::new(&settings, metrics.clone()));
    let app = consistency_sidecar::server::app(settings, metrics.clone(), inspector);

    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::CONNECT)
                .uri("example.com:443")
                .body(consistency_sidecar::proxy::ProxyBody::default())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The response body holds the request in flight until it is dropped.
    drop(response);

    let response = app
        .oneshot(
            Request::get("/test/status/abc")
                .body(consistency_sidecar::proxy::ProxyBody::default())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(json["error"], "upstream_unreachable");
    let text = String::from_utf8(metrics.encode()).expect("utf-8");
    assert_eq!(
        sample(
            &text,
            r#"consistency_proxy_requests_total{code="5xx",method="GET",route="task_status"}"#
        ),
        1.0
    );
    assert_eq!(sample(&text, "consistency_proxy_inflight_requests"), 0.0);
}
