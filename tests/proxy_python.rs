//! Forwarding against the Python echo upstream (`tests/upstreams/echo_upstream.py`), an HTTP
//! stack independent of hyper: body bytes and framing, response headers, header-name case, a
//! streamed upload; curl as a client for `Expect: 100-continue`.

mod support;

use std::process::Command;

use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

/// Fetches `path` directly and through the sidecar; status, body bytes and the framing and
/// caching headers must agree.
async fn both(upstream: &EchoUpstream, sidecar: &Sidecar, method: Method, path: &str) -> Answer {
    let request = |base: String| {
        Request::builder()
            .method(method.clone())
            .uri(format!("{base}{path}"))
            .body(empty())
            .expect("request")
    };
    let direct = send(request(upstream.url())).await;
    let proxied = send(request(sidecar.url(""))).await;
    assert_eq!(proxied.0, direct.0, "{path}: status");
    assert_eq!(proxied.2, direct.2, "{path}: body bytes");
    for name in [
        "content-length",
        "content-type",
        "etag",
        "transfer-encoding",
    ] {
        assert_eq!(proxied.1.get(name), direct.1.get(name), "{path}: {name}");
    }
    proxied
}

fn all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[tokio::test]
async fn bodies_and_response_headers_pass_byte_for_byte() {
    let Some(upstream) = EchoUpstream::start().await else {
        return;
    };
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let (status, headers, body) = both(&upstream, &sidecar, Method::GET, "/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "1000");
    assert_eq!(body, plain_body(), "python and rust patterns agree");

    let (_, headers, body) = both(&upstream, &sidecar, Method::GET, "/chunked").await;
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert_eq!(body.len(), 300_000);
    assert!(PatternBody::matches(&body));

    let (_, _, body) = both(&upstream, &sidecar, Method::GET, "/big").await;
    assert_eq!(body.len(), 10 * MIB);
    assert!(PatternBody::matches(&body));

    let (status, headers, body) = both(&upstream, &sidecar, Method::HEAD, "/head").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "1000");
    assert!(body.is_empty());

    let (status, headers, body) = both(&upstream, &sidecar, Method::GET, "/no-content").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["x-kind"], "204");
    assert!(body.is_empty());

    let (status, headers, body) = both(&upstream, &sidecar, Method::GET, "/not-modified").await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers["etag"], "\"v1\"");
    assert!(body.is_empty());

    // Repeated response headers, interleaved on the wire, keep their order.
    let (_, headers, _) = both(&upstream, &sidecar, Method::GET, "/repeated").await;
    assert_eq!(
        all(&headers, "set-cookie"),
        ["a=1; Path=/", "b=2; HttpOnly", "c=3"]
    );
    assert_eq!(all(&headers, "x-multi"), ["first", "second"]);
}

#[tokio::test]
async fn header_names_reach_the_upstream_in_their_case() {
    let Some(upstream) = EchoUpstream::start().await else {
        return;
    };
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    // Raw bytes: the case of a header name exists only on the wire (hyper's client lowercases).
    let response = raw(
        sidecar.addr,
        b"GET /echo HTTP/1.1\r\nHost: front.example\r\nX-Keep: yes\r\nConnection: close\r\n\r\n",
    )
    .await;
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let echo: serde_json::Value = serde_json::from_slice(&response[start..]).expect("echo JSON");
    let names: Vec<&str> = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| pair[0].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"X-Keep"), "{echo}");
}

#[tokio::test]
async fn a_streamed_10_mib_upload_arrives_whole() {
    let Some(upstream) = EchoUpstream::start().await else {
        return;
    };
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let upload = |base: String, length: Option<usize>| {
        let mut request = Request::post(format!("{base}/upload"));
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        request
            .body(PatternBody::new(10 * MIB, 64 * 1024).boxed_unsync())
            .expect("request")
    };
    let direct = send(upload(upstream.url(), Some(10 * MIB))).await;
    assert!(direct.2.starts_with(format!("{} ", 10 * MIB).as_bytes()));
    // With a Content-Length, and chunked (no length known up front).
    for length in [Some(10 * MIB), None] {
        let proxied = send(upload(sidecar.url(""), length)).await;
        assert_eq!(proxied.0, StatusCode::OK);
        assert_eq!(proxied.2, direct.2, "length {length:?}");
    }
}

#[tokio::test]
async fn curl_upload_with_expect_100_continue() {
    let Some(curl) = tool("curl") else {
        return;
    };
    let Some(upstream) = EchoUpstream::start().await else {
        return;
    };
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, PatternBody::bytes(3 * MIB)).expect("write upload");

    let upload = |base: String| {
        let (curl, file) = (curl.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new(curl)
                .args(["-sS", "--fail", "--max-time", "20"])
                .args(["-H", "Expect: 100-continue", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .arg(format!("{base}/upload"))
                .output()
                .expect("run curl");
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        })
    };
    let direct = upload(upstream.url()).await.expect("curl");
    let proxied = upload(sidecar.url("")).await.expect("curl");
    assert!(direct.starts_with(format!("{} ", 3 * MIB).as_bytes()));
    assert_eq!(proxied, direct);
}
