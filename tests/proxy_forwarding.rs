//! End-to-end forwarding through the sidecar binary against an in-test hyper upstream that
//! records what reached it: framing on the wire, headers, methods, targets, trailers, h2c and
//! upgrades. (Body bytes and uploads against an independent HTTP stack: `proxy_python.rs`.)

mod support;

use std::collections::VecDeque;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn head_204_and_304_are_framed_correctly_on_the_wire() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
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
}

#[tokio::test]
async fn repeated_request_headers_keep_their_order() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let (status, _, _) = send(
        Request::get(sidecar.url("/plain"))
            .header("x-rep", "1")
            .header("cookie", "a=1")
            .header("x-rep", "2")
            .header("x-rep", "3")
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.seen();
    let values: Vec<&str> = seen[0]
        .headers
        .get_all("x-rep")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(values, ["1", "2", "3"]);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let (status, headers, _) = send(
        Request::get(sidecar.url("/hop"))
            .header("connection", "close, X-Client-Hop")
            .header("x-client-hop", "1")
            .header("keep-alive", "timeout=9")
            .header("proxy-connection", "keep-alive")
            .header("te", "gzip")
            .header("x-end", "1")
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for name in ["x-upstream-hop", "keep-alive", "proxy-connection"] {
        assert!(headers.get(name).is_none(), "{name} reached the client");
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["via"], "1.1 consistency-sidecar");

    let seen = &upstream.seen()[0];
    for name in ["x-client-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-end"], "1");
    // No X-Forwarded-For came in: the client's own address starts the list.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn forwarded_headers_are_added() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    send(
        Request::get(sidecar.url("/plain"))
            .header("host", "shop.example:8080")
            .header("x-forwarded-for", "203.0.113.9")
            .body(empty())
            .expect("request"),
    )
    .await;
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example:8080");
    assert_eq!(seen.headers["host"], "shop.example:8080");
    assert_eq!(seen.headers["via"], "1.1 consistency-sidecar");
    assert_eq!(seen.version, Version::HTTP_11);
}

/// What a client claims about the original request, as an ingress in front would write it.
const CLAIMS: [(&str, &str); 4] = [
    ("host", "shop.example:8080"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    (
        "forwarded",
        "for=198.51.100.1;host=evil.example;proto=https",
    ),
];

fn claiming() -> Request<TestBody> {
    let mut request = Request::get("/plain");
    for (name, value) in CLAIMS {
        request = request.header(name, value);
    }
    request.body(empty()).expect("request")
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_peer_pass_and_from_another_are_set_from_the_request() {
    let upstream = TestUpstream::standard().await;
    // 127.0.0.1 is trusted; 127.0.0.2 plays a client outside the list, still on loopback.
    let config = "[proxy]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let sidecar = Sidecar::start(&upstream.url(), config).await;
    let trusted = std::net::IpAddr::from([127, 0, 0, 1]);
    let stranger = std::net::IpAddr::from([127, 0, 0, 2]);

    for from in [trusted, stranger] {
        let response = request_from(from, sidecar.addr, claiming())
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let seen = upstream.seen();
    let ingress = &seen[0].headers;
    assert_eq!(ingress["x-forwarded-proto"], "https");
    assert_eq!(ingress["x-forwarded-host"], "evil.example");
    assert_eq!(ingress["forwarded"], CLAIMS[3].1);

    let client = &seen[1].headers;
    assert_eq!(client["x-forwarded-proto"], "http", "from the connection");
    assert_eq!(client["x-forwarded-host"], "shop.example:8080", "from Host");
    assert!(client.get("forwarded").is_none(), "Forwarded is dropped");
    assert_eq!(client["x-forwarded-for"], "127.0.0.2");
}

#[tokio::test]
async fn trusted_proxies_empty_trusts_even_loopback_nothing() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "[proxy]\ntrusted_proxies = []\n").await;
    let response = request_on(sidecar.addr, claiming())
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = &upstream.seen()[0].headers;
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example:8080");
    assert!(seen.get("forwarded").is_none());
}

#[tokio::test]
async fn two_host_headers_or_none_on_http11_get_400_and_nothing_reaches_the_upstream() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    for head in [
        "GET /plain HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /plain HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /plain HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    ] {
        let answer = raw(sidecar.addr, head.as_bytes()).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.0 400"),
            "{head:?}: {text}"
        );
        assert!(text.contains("Host"), "{text}");
    }
    assert!(upstream.seen().is_empty(), "the upstream saw a request");
    // HTTP/1.0 may leave Host out: there was no Host before HTTP/1.1.
    let answer = raw(sidecar.addr, b"GET /plain HTTP/1.0\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.0 200"));
}

#[tokio::test]
async fn path_query_and_percent_encoding_are_untouched() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let target = "/a%2Fb/%7Euser/x%20y;p=1?q=%2F%20+&empty=&flag";
    get(&sidecar.url(target)).await;
    assert_eq!(upstream.seen()[0].uri.to_string(), target);
}

#[tokio::test]
async fn every_method_is_forwarded() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
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
}

#[tokio::test]
async fn host_and_absolute_form_cannot_redirect_traffic() {
    let upstream = TestUpstream::standard().await;
    // A second server that must never be reached.
    let decoy = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let decoy_authority = decoy.addr.to_string();
    // Requests built as a forward-proxy client would: a Host, or an absolute-form target,
    // naming the decoy.
    let on_the_sidecar = |target: String| {
        Request::get(target)
            .header("host", decoy_authority.as_str())
            .body(empty())
            .expect("request")
    };

    let response = request_on(sidecar.addr, on_the_sidecar("/plain".into()))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let response = request_on(
        sidecar.addr,
        on_the_sidecar(format!("http://{decoy_authority}/abs?x=1")),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), StatusCode::OK);

    assert!(decoy.seen().is_empty(), "the decoy was reached");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.to_string(), "/abs?x=1");

    let connect = Request::connect(decoy_authority.as_str())
        .header("host", decoy_authority.as_str())
        .body(empty())
        .expect("request");
    let response = request_on(sidecar.addr, connect).await.expect("response");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(decoy.seen().is_empty());
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn trailers_pass_through() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let response = request(
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
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let response = request_h2c(
        Request::get(sidecar.url("/big"))
            .body(empty())
            .expect("request"),
    )
    .await
    .expect("h2c response");
    assert_eq!(response.version(), Version::HTTP_2);
    let (_, _, body) = collect(response).await.expect("body");
    assert_eq!(body.len(), 10 * MIB);
    assert!(PatternBody::matches(&body));
    let seen = &upstream.seen()[0];
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["via"], "2 consistency-sidecar");
    assert_eq!(seen.headers["host"], sidecar.addr.to_string());
}

#[tokio::test]
async fn upgrade_is_tunneled_both_ways() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    let response = request(
        Request::get(sidecar.url("/ws"))
            .header("connection", "Upgrade")
            .header("upgrade", "echo")
            .body(empty())
            .expect("request"),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "echo");
    let upgraded = tokio::time::timeout(PATIENCE, hyper::upgrade::on(response))
        .await
        .expect("upgrade in time")
        .expect("upgraded connection");
    let mut stream = TokioIo::new(upgraded);

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
}
