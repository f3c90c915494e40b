//! Graceful shutdown of the real binary: on SIGTERM it lets an in-flight slow request finish,
//! then exits 0.

mod support;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let Some(kill) = tool("kill") else {
        return;
    };
    let upstream = TestUpstream::standard().await;
    let mut sidecar = Sidecar::launch(
        &upstream.url(),
        "[proxy]\nshutdown_grace = \"15s\"\n",
        &[],
        Some("info"),
    )
    .await;
    let (status, _, _) = get(&sidecar.admin_url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);

    let url = sidecar.url("/slow?ms=1500");
    let in_flight = tokio::spawn(async move { get(&url).await });
    upstream.wait_for(1).await;
    sidecar.terminate(&kill);
    sidecar
        .wait_for_log("the drain starting", |line| {
            line.contains("shutting down").then_some(())
        })
        .await;
    // Draining while the slow request still runs, and no longer accepting: every worker lets go
    // of the listening socket as it stops.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while tokio::net::TcpStream::connect(sidecar.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections while draining"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!in_flight.is_finished(), "the slow request ended too early");

    let (status, _, body) = in_flight.await.expect("in-flight request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow but done");
    let exit = sidecar.exit_status().await;
    assert!(exit.success(), "exit status {exit:?}");
    let log = sidecar.log();
    assert!(log.iter().any(|l| l.contains("SIGTERM")), "{log:#?}");
}
