//! Failure paths through the sidecar binary: upstream down, slow, dying mid-body; slow and
//! oversized client heads; load shedding; and the metrics that count them. (Graceful shutdown:
//! `proxy_shutdown.rs`.)

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn upstream_down_is_a_502_with_json() {
    let down = free_port();
    let sidecar = Sidecar::start(&format!("http://{down}"), "").await;
    let (status, headers, body) = get(&sidecar.url("/anything")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["error"], "upstream_unreachable");
    assert!(
        json["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&down.to_string())),
        "{json}"
    );

    let metrics = sidecar.metrics().await;
    assert_eq!(
        metrics.value(
            "consistency_proxy_upstream_errors_total",
            &[("reason", "connect")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "consistency_proxy_requests_total",
            &[("code", "5xx"), ("method", "GET"), ("route", "other")]
        ),
        1.0
    );
    // Nothing answered and nothing listens: not ready.
    let (status, _, _) = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn slow_upstream_is_a_504_with_json() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(
        &upstream.url(),
        "[proxy]\nresponse_header_timeout = \"300ms\"\n",
    )
    .await;
    let (status, headers, body) = get(&sidecar.url("/slow?ms=3000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["error"], "upstream_timeout");
    assert!(json["detail"].is_string());
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metrics.value(
            "consistency_proxy_upstream_errors_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
}

#[tokio::test]
async fn upstream_dying_mid_body_breaks_the_client_response() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    for path in ["/die", "/die-chunked"] {
        let result = send_expect_broken_body(
            Request::get(sidecar.url(path))
                .body(empty())
                .expect("request"),
        )
        .await;
        assert!(
            result.is_err(),
            "{path}: client saw a complete body of {:?} bytes",
            result.map(|b| b.len())
        );
    }
    // On the wire: a chunked response must not end with the last-chunk marker.
    let response = raw(
        sidecar.addr,
        b"GET /die-chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response[..response.len().min(300)])
    );
    assert!(!response.ends_with(b"0\r\n\r\n"), "looks complete");
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metrics.value(
            "consistency_proxy_upstream_errors_total",
            &[("reason", "body")]
        ),
        3.0
    );
}

#[tokio::test]
async fn byte_by_byte_headers_are_cut_off() {
    let upstream = TestUpstream::standard().await;
    let sidecar =
        Sidecar::start(&upstream.url(), "[proxy]\nclient_header_timeout = \"1s\"\n").await;
    let stream = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut sink = Vec::new();
        read.read_to_end(&mut sink).await.map(|_| sink)
    });
    // 400 bytes at one per 50 ms would take 20 s; the sidecar must hang up long before.
    let head = format!(
        "GET /plain HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(360)
    );
    let mut sent = 0;
    for byte in head.as_bytes() {
        if closed.is_finished() || write.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent < head.len(), "the whole slow head was accepted");
    let answer = tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("closed in time")
        .expect("reader task");
    if let Ok(bytes) = answer {
        // hyper may say 408 before closing; it must never have forwarded the request.
        assert!(
            bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 408"),
            "{bytes:?}"
        );
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn too_many_headers_or_too_large_a_head_are_refused() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(
        &upstream.url(),
        "[proxy]\nmax_headers = 10\nmax_header_bytes = 8192\n",
    )
    .await;
    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let response = raw(
        sidecar.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        response.is_empty() || response.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let big = "b".repeat(20_000);
    let response = raw(
        sidecar.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        response.is_empty() || response.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn past_the_concurrency_cap_requests_are_shed() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "[proxy]\nmax_concurrent_requests = 1\n").await;
    let slow_url = sidecar.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    upstream.wait_for(1).await;
    let (status, headers, body) = get(&sidecar.url("/plain")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["error"], "overloaded");
    let (status, _, body) = slow.await.expect("slow request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow but done");
    // The permit is back once the slow response ended.
    let (status, _, _) = get(&sidecar.url("/plain")).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = sidecar.metrics().await;
    assert_eq!(metrics.value("consistency_proxy_load_shed_total", &[]), 1.0);
    assert_eq!(upstream.seen().len(), 2);
}
