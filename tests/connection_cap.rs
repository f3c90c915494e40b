//! `proxy.max_client_connections` on the real binary: past the cap, idle keep-alive
//! connections are closed longest idle first so a new client is served, a connection in the
//! middle of a response is never touched, and with nothing idle a new client waits its turn.

mod support;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use support::*;
use tokio::sync::mpsc;

/// A response body whose chunks the test sends one by one: a response held open mid-body.
struct Trickle(mpsc::Receiver<Bytes>);

impl Body for Trickle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The standard upstream, with `/trickle` answering with the chunks sent on the returned sender.
async fn upstream_with_trickle() -> (TestUpstream, mpsc::Sender<Bytes>) {
    let (chunks, receiver) = mpsc::channel(4);
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let upstream = TestUpstream::start(move |req| {
        let receiver = receiver.clone();
        async move {
            if req.uri().path() == "/trickle" {
                let receiver = receiver.lock().expect("lock").take().expect("one trickle");
                return http::Response::new(Trickle(receiver).boxed_unsync());
            }
            standard_routes(req).await
        }
    })
    .await;
    (upstream, chunks)
}

fn get_request(sidecar: &Sidecar, path: &str) -> Request<TestBody> {
    Request::get(path)
        .header("host", sidecar.addr.to_string())
        .body(empty())
        .expect("request")
}

/// A keep-alive connection that has been answered once and is now idle.
async fn idle_connection(sidecar: &Sidecar) -> Connection {
    let mut connection = connect(sidecar.addr).await.expect("connect");
    let response = request_via(&mut connection, get_request(sidecar, "/plain"))
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    collect(response).await.expect("whole body");
    connection
}

async fn wait_closed(connection: &Connection, what: &str) {
    wait_for(what, || async { connection.is_closed().then_some(()) }).await;
}

#[tokio::test]
async fn past_the_cap_the_longest_idle_connections_make_room_and_a_response_in_progress_is_untouched(
) {
    let (upstream, chunks) = upstream_with_trickle().await;
    let sidecar = Sidecar::start(&upstream.url(), "[proxy]\nmax_client_connections = 4\n").await;

    let oldest = idle_connection(&sidecar).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = idle_connection(&sidecar).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let third = idle_connection(&sidecar).await;
    // The fourth is mid-response: head and a first chunk read, the rest still to come.
    let mut streaming = connect(sidecar.addr).await.expect("connect");
    let response = request_via(&mut streaming, get_request(&sidecar, "/trickle"))
        .await
        .expect("head");
    chunks
        .send(Bytes::from_static(b"begun "))
        .await
        .expect("send");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().expect("data"), "begun ");

    // At the cap: a fresh client is served, and the oldest idle connection made room.
    let (status, _, fresh) = get(&sidecar.url("/plain")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fresh, plain_body());
    wait_closed(&oldest, "the longest-idle connection to be closed").await;
    assert!(!second.is_closed() && !third.is_closed());

    // The next one takes the second oldest; the third stays.
    let (status, _, _) = get(&sidecar.url("/plain")).await;
    assert_eq!(status, StatusCode::OK);
    wait_closed(&second, "the second longest-idle connection to be closed").await;
    assert!(!third.is_closed());

    // The response in progress went on untouched, and its connection too.
    chunks
        .send(Bytes::from_static(b"and done"))
        .await
        .expect("send");
    drop(chunks);
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(rest, "and done");
    assert!(!streaming.is_closed());

    let metrics = sidecar.metrics().await;
    let proxy = [("port", "proxy")];
    assert_eq!(metrics.value("consistency_connections_limit", &proxy), 4.0);
    assert_eq!(
        metrics.value(
            "consistency_connections_reclaimed_total",
            &[("port", "proxy"), ("reason", "longest_idle")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value("consistency_connections_cap_reached_total", &proxy),
        2.0
    );
    assert!(metrics.value("consistency_connections_open", &proxy) <= 4.0);
    assert_eq!(
        metrics.value("consistency_connections_limit", &[("port", "admin")]),
        16.0
    );

    // Still up, and the cap was logged once for the window, not once per client.
    let (status, _, _) = get(&sidecar.admin_url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let logged = sidecar
        .log()
        .iter()
        .filter(|line| line.contains("client connection cap reached"))
        .count();
    assert_eq!(logged, 1, "{:#?}", sidecar.log());
}

#[tokio::test]
async fn with_nothing_idle_a_new_client_waits_for_a_connection_to_end_and_no_request_is_cut() {
    let upstream = TestUpstream::standard().await;
    let sidecar = Sidecar::start(&upstream.url(), "[proxy]\nmax_client_connections = 2\n").await;

    let slow = |url: String| tokio::spawn(async move { get(&url).await });
    let first = slow(sidecar.url("/slow?ms=1500"));
    let second = slow(sidecar.url("/slow?ms=1500"));
    upstream.wait_for(2).await;
    let started = tokio::time::Instant::now();
    let (status, _, _) = get(&sidecar.url("/plain")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served before a busy connection ended: {:?}",
        started.elapsed()
    );
    for busy in [first, second] {
        let (status, _, body) = busy.await.expect("slow request");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "slow but done");
    }
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metrics.value(
            "consistency_connections_reclaimed_total",
            &[("port", "proxy"), ("reason", "longest_idle")]
        ),
        0.0
    );
}
