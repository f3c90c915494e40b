//! End-to-end forwarding through real sockets against an in-test hyper upstream: bodies,
//! headers, methods, targets, trailers, h2c and upgrades.

mod support;

use std::collections::VecDeque;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fetches `path` directly and through the sidecar; both must agree on status and body bytes.
async fn same_both_ways(
    upstream: &TestUpstream,
    sidecar: &Sidecar,
    method: Method,
    path: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let direct = send(
        Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", upstream.url()))
            .body(empty())
            .expect("request"),
    )
    .await;
    let proxied = send(
        Request::builder()
            .method(method)
            .uri(sidecar.url(path))
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(proxied.0, direct.0, "{path}: status");
    assert_eq!(proxied.2, direct.2, "{path}: body bytes");
    proxied
}

#[tokio::test]
async fn bodies_are_byte_identical() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;

    let (status, headers, body) = same_both_ways(&upstream, &sidecar, Method::GET, "/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "1000");
    assert_eq!(body, plain_body());

    let (_, headers, body) = same_both_ways(&upstream, &sidecar, Method::GET, "/chunked").await;
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert_eq!(body.len(), 300_000);
    assert!(PatternBody::matches(&body));

    let (_, _, body) = same_both_ways(&upstream, &sidecar, Method::GET, "/big").await;
    assert_eq!(body.len(), 10 * MIB);
    assert!(PatternBody::matches(&body));

    let (status, headers, body) = same_both_ways(&upstream, &sidecar, Method::HEAD, "/head").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "1000");
    assert!(body.is_empty());

    let (status, headers, body) =
        same_both_ways(&upstream, &sidecar, Method::GET, "/no-content").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["x-kind"], "204");
    assert!(body.is_empty());

    let (status, headers, body) =
        same_both_ways(&upstream, &sidecar, Method::GET, "/not-modified").await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers["etag"], "\"v1\"");
    assert!(body.is_empty());
    sidecar.stop().await;
}

#[tokio::test]
async fn head_204_and_304_are_framed_correctly_on_the_wire() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    // Two requests on one connection: if a bodiless response carried bytes, the second
    // response would not parse.
    for path in ["/head", "/no-content", "/not-modified"] {
        let method = if path == "/head" { "HEAD" } else { "GET" };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\n\r\nGET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        let response = raw(sidecar.addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&response);
        assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{path}: {text}");
        let second = text.rfind("HTTP/1.1 200").expect("second response");
        assert!(second > 0, "{path}");
        assert!(
            response.ends_with(&plain_body()),
            "{path}: second body intact"
        );
        if path == "/no-content" {
            assert!(text.starts_with("HTTP/1.1 204"));
        }
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn repeated_headers_keep_their_order() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let (_, headers, _) = get(&sidecar.url("/repeated")).await;
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    };
    assert_eq!(all("set-cookie"), ["a=1; Path=/", "b=2; HttpOnly", "c=3"]);
    assert_eq!(all("x-multi"), ["first", "second"]);

    // And on the request side.
    let response = raw(
        sidecar.addr,
        b"GET /plain HTTP/1.1\r\nHost: a\r\nX-Rep: 1\r\nCookie: a=1\r\nX-Rep: 2\r\nX-Rep: 3\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw_head(&response).starts_with("HTTP/1.1 200"));
    let seen = upstream.seen();
    let values: Vec<&str> = seen[1]
        .headers
        .get_all("x-rep")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(values, ["1", "2", "3"]);
    sidecar.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let response = raw(
        sidecar.addr,
        b"GET /hop HTTP/1.1\r\nHost: a\r\nConnection: close, X-Client-Hop\r\nX-Client-Hop: 1\r\n\
          Keep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nX-End: 1\r\n\r\n",
    )
    .await;
    let head = raw_head(&response).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("x-upstream-hop"), "{head}");
    assert!(!head.contains("keep-alive: timeout"), "{head}");
    assert!(!head.contains("proxy-connection"), "{head}");
    assert!(head.contains("x-end-to-end: kept"), "{head}");
    assert!(head.contains("via: 1.1 consistency-sidecar"), "{head}");

    let seen = &upstream.seen()[0];
    for name in ["x-client-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-end"], "1");
    sidecar.stop().await;
}

#[tokio::test]
async fn forwarded_headers_are_added() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    raw(
        sidecar.addr,
        b"GET /plain HTTP/1.1\r\nHost: shop.example:8080\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    )
    .await;
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example:8080");
    assert_eq!(seen.headers["host"], "shop.example:8080");
    assert_eq!(seen.headers["via"], "1.1 consistency-sidecar");
    assert_eq!(seen.version, Version::HTTP_11);
    sidecar.stop().await;
}

#[tokio::test]
async fn path_query_and_percent_encoding_are_untouched() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let target = "/a%2Fb/%7Euser/x%20y;p=1?q=%2F%20+&empty=&flag";
    raw(
        sidecar.addr,
        format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(upstream.seen()[0].uri.to_string(), target);
    sidecar.stop().await;
}

#[tokio::test]
async fn every_method_is_forwarded() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
    ] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (status, _, _) = send(
            Request::builder()
                .method(method.clone())
                .uri(sidecar.url("/any"))
                .body(full("x"))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{method}");
    }
    let methods: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.method.to_string())
        .collect();
    assert_eq!(
        methods,
        ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"]
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn a_10_mib_upload_streams_through() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let expected = format!(
        "{} {:016x}",
        10 * MIB,
        Fnv::of(&PatternBody::bytes(10 * MIB))
    );
    // Chunked (no length known up front) and with a Content-Length.
    for length in [None, Some(10 * MIB)] {
        let mut request = Request::post(sidecar.url("/upload"));
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        let body = PatternBody::new(10 * MIB, 64 * 1024).boxed_unsync();
        let (status, _, body) = send(request.body(body).expect("request")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, expected.as_bytes(), "length {length:?}");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn host_and_absolute_form_cannot_redirect_traffic() {
    let upstream = TestUpstream::standard().await;
    // A second server that must never be reached.
    let decoy = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let decoy_authority = decoy.addr.to_string();

    let response = raw(
        sidecar.addr,
        format!("GET /plain HTTP/1.1\r\nHost: {decoy_authority}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(raw_head(&response).starts_with("HTTP/1.1 200"));
    let response = raw(
        sidecar.addr,
        format!(
            "GET http://{decoy_authority}/abs?x=1 HTTP/1.1\r\nHost: {decoy_authority}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(raw_head(&response).starts_with("HTTP/1.1 200"));

    assert!(decoy.seen().is_empty(), "the decoy was reached");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.to_string(), "/abs?x=1");

    let response = raw(
        sidecar.addr,
        format!("CONNECT {decoy_authority} HTTP/1.1\r\nHost: {decoy_authority}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        raw_head(&response).starts_with("HTTP/1.1 405"),
        "{}",
        raw_head(&response)
    );
    assert!(decoy.seen().is_empty());
    assert_eq!(upstream.seen().len(), 2);
    sidecar.stop().await;
}

#[tokio::test]
async fn trailers_pass_through() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let response = client()
        .request(
            Request::get(sidecar.url("/trailers"))
                .header("te", "trailers")
                .body(empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(collected.to_bytes(), "hello trailers");

    // Request trailers reach the upstream as well (hyper reads them into the body).
    let frames = VecDeque::from([
        Frame::data(Bytes::from_static(b"abc")),
        Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-sum", "3".parse().expect("value"));
            t
        }),
    ]);
    let (status, _, body) = send(
        Request::post(sidecar.url("/upload"))
            .body(FramesBody(frames).boxed_unsync())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("3 {:016x}", Fnv::of(b"abc")).as_bytes());
    sidecar.stop().await;
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let response = h2
        .request(
            Request::get(sidecar.url("/big"))
                .body(empty())
                .expect("request"),
        )
        .await
        .expect("h2c response");
    assert_eq!(response.version(), Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body.len(), 10 * MIB);
    assert!(PatternBody::matches(&body));
    let seen = &upstream.seen()[0];
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["via"], "2 consistency-sidecar");
    assert_eq!(seen.headers["host"], sidecar.addr.to_string());
    sidecar.stop().await;
}

#[tokio::test]
async fn upgrade_is_tunneled_both_ways() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "head too long");
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        assert_eq!(n, 1, "closed before the 101 head ended");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");

    for message in [&b"ping"[..], b"second message", &[0u8, 255, 10, 13]] {
        stream
            .write_all(message)
            .await
            .expect("write through tunnel");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert_eq!(echoed, message);
    }
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["upgrade"], "echo");
    assert_eq!(seen.headers["connection"], "upgrade");
    sidecar.stop().await;
}
