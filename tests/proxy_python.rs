//! Forwarding against a Python standard-library upstream (`tests/upstreams/echo_upstream.py`),
//! an HTTP stack independent of hyper: bodies, headers, uploads and failures; curl as a client.

mod support;

use std::process::Command;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

async fn both(
    upstream: &PythonUpstream,
    sidecar: &Sidecar,
    method: Method,
    path: &str,
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let request = |base: String| {
        Request::builder()
            .method(method.clone())
            .uri(format!("{base}{path}"))
            .body(empty())
            .expect("request")
    };
    let direct = send(request(upstream.url())).await;
    let proxied = send(request(format!("http://{}", sidecar.addr))).await;
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

#[tokio::test]
async fn python_bodies_are_byte_identical() {
    if !have_tool("python3") {
        return;
    }
    let upstream = PythonUpstream::start();
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let (_, _, body) = both(&upstream, &sidecar, Method::GET, "/plain").await;
    assert_eq!(body.len(), 1000);
    assert!(
        PatternBody::matches(&body),
        "python and rust patterns agree"
    );
    let (_, headers, body) = both(&upstream, &sidecar, Method::GET, "/chunked").await;
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert_eq!(body.len(), 300_000);
    let (_, _, body) = both(&upstream, &sidecar, Method::GET, "/big").await;
    assert_eq!(body.len(), 10 * MIB);
    assert!(PatternBody::matches(&body));
    let (_, headers, body) = both(&upstream, &sidecar, Method::HEAD, "/head").await;
    assert_eq!(headers["content-length"], "1000");
    assert!(body.is_empty());
    let (status, _, _) = both(&upstream, &sidecar, Method::GET, "/no-content").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = both(&upstream, &sidecar, Method::GET, "/not-modified").await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (_, headers, _) = both(&upstream, &sidecar, Method::GET, "/repeated").await;
    let cookies: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; HttpOnly", "c=3"]);
    sidecar.stop().await;
}

#[tokio::test]
async fn python_sees_forwarded_headers_and_no_hop_by_hop() {
    if !have_tool("python3") {
        return;
    }
    let upstream = PythonUpstream::start();
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let response = raw(
        sidecar.addr,
        b"GET /echo?x=%2F HTTP/1.1\r\nHost: front.example\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nX-Keep: yes\r\n\r\n",
    )
    .await;
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let echo: serde_json::Value = serde_json::from_slice(&response[start..]).expect("echo JSON");
    assert_eq!(echo["target"], "/echo?x=%2F");
    let headers: Vec<(String, String)> = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("name").to_ascii_lowercase(),
                pair[1].as_str().expect("value").to_string(),
            )
        })
        .collect();
    // Header-name case survives the hop.
    assert!(
        echo["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|pair| pair[0] == "X-Keep"),
        "{echo}"
    );
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(get("x-forwarded-proto"), Some("http"));
    assert_eq!(get("x-forwarded-host"), Some("front.example"));
    assert_eq!(get("host"), Some("front.example"));
    assert_eq!(get("via"), Some("1.1 consistency-sidecar"));
    assert_eq!(get("x-keep"), Some("yes"));
    assert_eq!(get("x-hop"), None);
    assert_eq!(get("keep-alive"), None);
    sidecar.stop().await;
}

#[tokio::test]
async fn python_receives_a_streamed_10_mib_upload() {
    if !have_tool("python3") {
        return;
    }
    let upstream = PythonUpstream::start();
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
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
    for length in [Some(10 * MIB), None] {
        let proxied = send(upload(sidecar.url(""), length)).await;
        assert_eq!(proxied.0, StatusCode::OK);
        assert_eq!(proxied.2, direct.2, "length {length:?}");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn python_failures_reach_the_client() {
    if !have_tool("python3") {
        return;
    }
    let upstream = PythonUpstream::start();
    let sidecar = Sidecar::start(&upstream.url(), |c| {
        c.proxy.response_header_timeout = Duration::from_millis(300);
    })
    .await;
    for path in ["/die", "/die-chunked"] {
        let result = send_expect_broken_body(
            Request::get(sidecar.url(path))
                .body(empty())
                .expect("request"),
        )
        .await;
        assert!(result.is_err(), "{path}: looked complete");
    }
    let (status, _, body) = get(&sidecar.url("/slow?ms=2000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(json["error"], "upstream_timeout");
    sidecar.stop().await;
}

#[tokio::test]
async fn curl_download_and_expect_100_continue_upload() {
    if !have_tool("python3") || !have_tool("curl") {
        return;
    }
    let upstream = PythonUpstream::start();
    let sidecar = Sidecar::start(&upstream.url(), |_| {}).await;
    let dir = std::env::temp_dir().join(format!("sidecar-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("upload.bin");
    std::fs::write(&file, PatternBody::bytes(3 * MIB)).expect("write upload");

    let curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "20"])
                .args(&args)
                .output()
                .expect("run curl");
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        })
    };
    let direct = curl(vec![format!("{}/big", upstream.url())])
        .await
        .expect("curl");
    let proxied = curl(vec![sidecar.url("/big")]).await.expect("curl");
    assert_eq!(proxied.len(), 10 * MIB);
    assert!(proxied == direct, "curl bodies differ");

    let upload = |base: String| {
        vec![
            "-H".into(),
            "Expect: 100-continue".into(),
            "--data-binary".into(),
            format!("@{}", file.display()),
            format!("{base}/upload"),
        ]
    };
    let direct = curl(upload(upstream.url())).await.expect("curl");
    let proxied = curl(upload(sidecar.url(""))).await.expect("curl");
    assert_eq!(proxied, direct);
    let _ = std::fs::remove_dir_all(&dir);
    sidecar.stop().await;
}
