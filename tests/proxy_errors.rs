//! Failure paths that only a socket shows, through the sidecar binary: the real pool refused
//! by an upstream that is down, a body cut off on the wire, slow and oversized client heads,
//! and idle keep-alive clients.
//!
//! Shedding, 504, 502 and mid-body failures with their metrics are tested on the stack itself,
//! with `oneshot` and paused time (`src/stack/tests.rs`); graceful shutdown in
//! `proxy_shutdown.rs`.

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502_naming_it_and_not_ready() {
    let down = free_port();
    let sidecar = Sidecar::start(&format!("http://{down}"), "").await;
    let (status, _, body) = get(&sidecar.url("/anything")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(json["error"], "upstream_unreachable");
    assert!(
        json["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&down.to_string())),
        "{json}"
    );
    // Nothing answered and nothing listens: not ready.
    let (status, _, _) = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_upstream_dying_mid_body_breaks_the_response_on_the_wire() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    // A length was promised: the client must see the connection end short of it.
    let result = send_expect_broken_body(
        Request::get(sidecar.url("/die"))
            .body(empty())
            .expect("request"),
    )
    .await;
    assert!(
        result.is_err(),
        "/die: client saw a complete body of {:?} bytes",
        result.map(|b| b.len())
    );
    // Chunked: the response must not end with the last-chunk marker.
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
}

#[tokio::test]
async fn byte_by_byte_headers_are_cut_off() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(
        &upstream.url(),
        "[proxy]\nclient_header_timeout = \"200ms\"\n",
    )
    .await;
    let stream = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut sink = Vec::new();
        read.read_to_end(&mut sink).await.map(|_| sink)
    });
    // 400 bytes at one per 10 ms would take 4 s; the sidecar must hang up after 200 ms.
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
        tokio::time::sleep(Duration::from_millis(10)).await;
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

/// Sends one `GET /json` on `stream` and reads its whole response (by its `Content-Length`).
async fn exchange(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    stream
        .write_all(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(n > 0, "closed mid-response: {response:?}");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if response.len() >= end + 4 + length {
                return response;
            }
        }
    }
}

/// Whether the sidecar closed `stream` within `within` (reading nothing else).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A sidecar with these client timeouts, and a keep-alive connection to it that has had one
/// answer.
async fn answered_once(
    header_timeout: &str,
    idle_timeout: &str,
) -> (TestUpstream, Sidecar, tokio::net::TcpStream) {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(
        &upstream.url(),
        &format!(
            "[proxy]\nclient_header_timeout = \"{header_timeout}\"\nclient_idle_timeout = \"{idle_timeout}\"\n"
        ),
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    assert!(exchange(&mut stream).await.starts_with(b"HTTP/1.1 200"));
    (upstream, sidecar, stream)
}

/// How long until the sidecar closes `stream` (at most `PATIENCE`).
async fn time_to_close(stream: &mut tokio::net::TcpStream) -> Duration {
    let started = std::time::Instant::now();
    assert!(closed_within(stream, PATIENCE).await, "never closed");
    started.elapsed()
}

#[tokio::test]
async fn a_keep_alive_client_between_requests_is_held_by_the_idle_timeout_not_the_header_one() {
    let (_upstream, _sidecar, mut stream) = answered_once("200ms", "1500ms").await;
    // Idle three header timeouts, well inside the idle timeout: still open, still served.
    assert!(!closed_within(&mut stream, Duration::from_millis(600)).await);
    assert!(exchange(&mut stream).await.starts_with(b"HTTP/1.1 200"));
    // Idle past the idle timeout: closed (checked at most one header timeout late).
    let idled = time_to_close(&mut stream).await;
    assert!(
        idled >= Duration::from_millis(1400) && idled < Duration::from_secs(5),
        "closed after {idled:?}"
    );
}

#[tokio::test]
async fn a_slow_head_after_a_first_request_is_cut_off_from_its_first_byte() {
    let (upstream, _sidecar, mut stream) = answered_once("300ms", "60s").await;
    // A while idle (no deadline runs), then a head that never ends, a byte per 50 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut cut_off = false;
    for byte in b"GET /json HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if stream.write_all(&[*byte]).await.is_err()
            || closed_within(&mut stream, Duration::from_millis(50)).await
        {
            cut_off = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(cut_off, "the slow head was never cut off");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "cut off after {took:?}"
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the first request went upstream"
    );
}

#[tokio::test]
async fn a_request_body_that_stalls_is_dropped_after_the_idle_timeout() {
    let (_upstream, _sidecar, mut stream) = answered_once("300ms", "500ms").await;
    // 10 of the 1,000 bytes promised, then nothing: the upstream waits for the rest, and no
    // byte moves. Idle, the connection is asked to finish; still idle, it is dropped, long
    // before the upstream's 60 s response timeout would have ended the request.
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .expect("write");
    let took = time_to_close(&mut stream).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
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
