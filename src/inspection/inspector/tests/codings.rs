//! Unit tests for content codings through the inspection layer: br and zstd fixed like gzip,
//! `Accept-Encoding` narrowed on inspected routes, a patched body re-encoded in a coding the
//! client accepts, `Vary`, and bombs passed through.

use super::*;

const BROWSER: &str = "gzip, deflate, br, zstd";

/// An upstream answer of `body` in `coding`, length-framed, with no `Vary`.
fn coded(coding: Coding, body: &str) -> (Response<TestBody>, Bytes) {
    let encoded = coding.encode(body.as_bytes()).unwrap();
    let mut response = json_upstream(full(encoded.clone()));
    let headers = response.headers_mut();
    headers.insert("content-length", HeaderValue::from(encoded.len()));
    if coding != Coding::Identity {
        headers.insert("content-encoding", HeaderValue::from_static(coding.token()));
    }
    (response, encoded)
}

/// An upstream answer of `raw` as it is, labelled with `coding`'s Content-Encoding.
fn labelled(coding: Coding, raw: &Bytes) -> Response<TestBody> {
    let mut response = json_upstream(full(raw.clone()));
    response
        .headers_mut()
        .insert("content-encoding", HeaderValue::from_static(coding.token()));
    response
}

fn decoded(head: &http::response::Parts, body: &Bytes) -> Bytes {
    let coding = Coding::from_header(
        head.headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
    )
    .expect("a coding we read");
    coding.decode(body, 1 << 20).unwrap().0
}

fn varies_on_accept_encoding(head: &http::response::Parts) -> bool {
    head.headers
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().eq_ignore_ascii_case("accept-encoding"))
}

#[tokio::test]
async fn br_and_zstd_bodies_are_fixed_and_sent_back_in_their_own_coding() {
    let h = harness(|_| {});
    for coding in [Coding::Brotli, Coding::Zstd] {
        let (upstream, _) = coded(coding, STALE_STAGE);
        let (head, body, _) = h
            .exchange("/test/status/t2", &[("accept-encoding", BROWSER)], upstream)
            .await;
        let body = body.unwrap();
        assert_eq!(head.headers["content-encoding"], coding.token());
        assert_eq!(
            head.headers["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(
            decoded(&head, &body),
            STALE_STAGE_FIXED.as_bytes(),
            "{coding:?}"
        );
        assert!(varies_on_accept_encoding(&head), "{coding:?} gains Vary");
    }
    assert_eq!(h.fixes("completed_stage", "applied"), 2.0);
    assert_eq!(h.skipped("encoding"), 0.0);
}

#[tokio::test]
async fn nothing_to_fix_leaves_every_coding_byte_for_byte() {
    let h = harness(|_| {});
    for coding in Coding::INSPECTED {
        let (mut upstream, encoded) = coded(coding, CONSISTENT);
        upstream
            .headers_mut()
            .insert("vary", HeaderValue::from_static("Accept-Encoding"));
        let (head, body, _) = h
            .exchange(
                "/test/status/t1",
                &[("accept-encoding", "identity")],
                upstream,
            )
            .await;
        assert_eq!(body.unwrap(), encoded, "{coding:?}");
        assert_eq!(head.headers.get_all("vary").iter().count(), 1, "{coding:?}");
    }
}

#[tokio::test]
async fn a_backend_that_ignores_accept_encoding_is_fixed_into_a_coding_the_client_reads() {
    let h = harness(|_| {});
    for (accept, expected) in [
        ("gzip, deflate, br", Some("gzip")),
        ("br;q=1, gzip;q=0.5", Some("br")),
        ("identity", None),
        ("zstd;q=0, gzip;q=0", None),
    ] {
        let (upstream, _) = coded(Coding::Zstd, STALE_STAGE);
        let (head, body, _) = h
            .exchange("/test/status/t2", &[("accept-encoding", accept)], upstream)
            .await;
        let body = body.unwrap();
        assert_eq!(
            head.headers
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            expected,
            "{accept}"
        );
        assert_eq!(
            decoded(&head, &body),
            STALE_STAGE_FIXED.as_bytes(),
            "{accept}"
        );
        assert_eq!(
            head.headers["content-length"],
            body.len().to_string().as_str()
        );
        assert!(varies_on_accept_encoding(&head), "{accept}");
    }
}

#[tokio::test]
async fn inspected_routes_ask_the_upstream_only_for_codings_we_read() {
    let h = harness(|_| {});
    let accept = "gzip, deflate, br, zstd, dcb, dcz";
    let (_, _, sent) = h
        .exchange(
            "/test/status/t1",
            &[("accept-encoding", accept)],
            json_response(CONSISTENT),
        )
        .await;
    assert_eq!(sent["accept-encoding"], BROWSER);

    // A route that is not inspected forwards what the client sent.
    let (_, _, sent) = h
        .exchange(
            "/static/app.js",
            &[("accept-encoding", accept)],
            json_response(CONSISTENT),
        )
        .await;
    assert_eq!(sent["accept-encoding"], accept);

    // And with narrowing off, inspected routes do too.
    let off = harness(|c| c.inspect.narrow_accept_encoding = false);
    let (_, _, sent) = off
        .exchange(
            "/test/status/t1",
            &[("accept-encoding", accept)],
            json_response(CONSISTENT),
        )
        .await;
    assert_eq!(sent["accept-encoding"], accept);
}

#[tokio::test]
async fn br_and_zstd_bombs_and_corrupt_streams_pass_through_counted() {
    let h = harness(|c| c.inspect.max_decoded_bytes = 1 << 20);
    let inflated = vec![b' '; 8 << 20];
    for coding in [Coding::Brotli, Coding::Zstd] {
        let bomb = coding.encode(&inflated).unwrap();
        assert!(
            bomb.len() < 64 << 10,
            "{coding:?} bomb is small on the wire"
        );
        let (_, body) = h.get("/test/status/x", labelled(coding, &bomb)).await;
        assert_eq!(body.unwrap(), bomb, "{coding:?}");
    }
    assert_eq!(h.skipped("too_large"), 2.0);

    let junk = Bytes::from_static(b"certainly not compressed");
    for coding in [Coding::Brotli, Coding::Zstd] {
        let (_, body) = h.get("/test/status/x", labelled(coding, &junk)).await;
        assert_eq!(body.unwrap(), junk, "{coding:?}");
    }
    assert_eq!(h.skipped("unparseable"), 2.0);
    assert_eq!(h.skipped("encoding"), 0.0);
}
