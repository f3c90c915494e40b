//! The log under a flood of inconsistent answers: bounded by default, exact in the metrics, and
//! every event still there with `RUST_LOG=debug`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::*;

/// Needs two fixes under the default rules: `completed_stage` and `completed_progress`.
const INCONSISTENT: &str = r#"{"task_id": "flood-1", "status": "completed", "stage": "ai_fetching", "progress": 90, "is_completed": true}"#;
const RULES: [&str; 2] = ["completed_stage", "completed_progress"];

async fn inconsistent_upstream() -> TestUpstream {
    TestUpstream::start(|_req: Request<Incoming>| async {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(full(INCONSISTENT))
            .expect("response")
    })
    .await
}

/// Polls `/test/status/flood-1` from `clients` keep-alive connections until `count` answers or
/// `limit` passes; returns the answers, every one checked to be fixed.
async fn flood(proxy: SocketAddr, clients: usize, count: usize, limit: Duration) -> usize {
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut connection = connect(proxy).await.expect("connect");
                while Instant::now() < deadline && answered.load(Ordering::Relaxed) < count {
                    let request = Request::get("/test/status/flood-1")
                        .header("host", "sidecar.test")
                        .body(empty())
                        .expect("request");
                    let response = request_via(&mut connection, request).await.expect("answer");
                    let (status, _, body) = collect(response).await.expect("body");
                    assert_eq!(status, StatusCode::OK);
                    let record: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                    assert_eq!(record["stage"], "completed");
                    assert_eq!(record["progress"], 100);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    answered.load(Ordering::Relaxed)
}

async fn issues_counted(sidecar: &Sidecar, rule: &str) -> f64 {
    let labels = [
        ("level", "minor_issue"),
        ("route", "task_status"),
        ("rule", rule),
    ];
    let metrics = sidecar.metrics().await;
    metrics
        .get("consistency_issues_total", &labels)
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_inconsistent_answers_logs_a_few_lines_and_counts_every_issue() {
    let upstream = inconsistent_upstream().await;
    // The default configuration and the default log filter.
    let sidecar = Sidecar::launch(&upstream.url(), "", &[], None).await;
    let started = Instant::now();
    let answered = flood(sidecar.addr, 4, 20_000, Duration::from_secs(3)).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        answered >= 200,
        "only {answered} answers: the flood did not flood"
    );
    for rule in RULES {
        assert_eq!(
            issues_counted(&sidecar, rule).await,
            answered as f64,
            "{rule}"
        );
    }
    let lines = sidecar.log();
    let issue_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("consistency issue"))
        .collect();
    let bytes: usize = issue_lines.iter().map(|l| l.len() + 1).sum();
    // About 1 KB/s per route and rule at most, whatever the request rate.
    let budget = 1024.0 * elapsed.max(1.0) * RULES.len() as f64;
    assert!(
        (bytes as f64) < budget,
        "{bytes} bytes of issue log for {answered} answers in {elapsed:.1}s: {issue_lines:#?}"
    );
    // The first issue of each rule is there in full: task id, rule, before -> after.
    for rule in RULES {
        assert!(
            issue_lines.iter().any(|l| l.contains(rule)
                && l.contains("task_id=\"flood-1\"")
                && l.contains("before=")
                && l.contains("after=")),
            "no full line for {rule}: {issue_lines:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_issues_are_summarised_once_per_window_with_their_count() {
    let upstream = inconsistent_upstream().await;
    let config = "[inspect]\nlog_window = \"1s\"\nlog_burst = 2\n";
    let sidecar = Sidecar::launch(&upstream.url(), config, &["--log-format", "json"], None).await;
    let answered = flood(sidecar.addr, 2, 3_000, Duration::from_millis(2500)).await;
    // The upkeep logs a window's summary within a second of its end.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events: Vec<serde_json::Value> = sidecar
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for rule in RULES {
        let of_rule = |e: &&serde_json::Value| e["rule"] == rule;
        let full = events
            .iter()
            .filter(of_rule)
            .filter(|e| e["message"] == "consistency issue fixed")
            .count();
        let summaries: Vec<&serde_json::Value> = events
            .iter()
            .filter(of_rule)
            .filter(|e| e["count"].is_u64())
            .collect();
        let summarised: u64 = summaries
            .iter()
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum();
        // Every issue is either logged in full or counted in a summary.
        assert_eq!(full as u64 + summarised, answered as u64, "{rule}");
        // At most `log_burst` full lines per window.
        assert!(full <= 2 * 6, "{rule}: {full} full lines");
        assert!(!summaries.is_empty(), "{rule}: no summary");
        for summary in summaries {
            let ids = summary["task_ids"].as_str().unwrap_or("");
            assert!(ids.split(',').all(|id| id == "flood-1"), "{summary}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rust_log_debug_every_issue_is_an_event() {
    let upstream = inconsistent_upstream().await;
    let sidecar = Sidecar::launch(
        &upstream.url(),
        "",
        &["--log-format", "json"],
        Some("debug"),
    )
    .await;
    let answered = flood(sidecar.addr, 1, 40, Duration::from_secs(10)).await;
    assert_eq!(answered, 40);
    let debug_events = |rule: &str| {
        sidecar
            .log()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["level"] == "DEBUG" && e["message"] == "consistency issue" && e["rule"] == rule
            })
            .count()
    };
    // A line may still be on its way through the pipe when the last answer arrives.
    wait_for("every debug event to be logged", || async {
        RULES
            .iter()
            .all(|rule| debug_events(rule) >= answered)
            .then_some(())
    })
    .await;
    for rule in RULES {
        assert_eq!(debug_events(rule), answered, "{rule}");
    }
}
