//! Task ids longer than `tracker.max_task_id_bytes` on the real binary: the records are still
//! checked and fixed by the single-record rules, the tasks are not remembered (counted under a
//! reason of their own), and memory, log lines and the report stay bounded.

mod support;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::*;

/// Each id is this long: inside `inspect.max_body_bytes`, so every body is inspected.
const ID_BYTES: usize = 900 * 1024;
const TASKS: usize = 60;

/// `/test/status/{n}`: a completed task still at a working stage (fixed by `completed_stage`),
/// whose id is `n` repeated to [`ID_BYTES`] (`short`: a short one).
async fn long_id_upstream() -> TestUpstream {
    TestUpstream::start(|req: Request<Incoming>| async move {
        let n = req.uri().path().rsplit('/').next().unwrap_or("0").to_owned();
        let id: String = match n.as_str() {
            "short" => String::new(),
            _ => n.chars().cycle().take(ID_BYTES).collect(),
        };
        let body = format!(
            r#"{{"task_id":"{n}-{id}","status":"completed","stage":"ai_fetching","progress":100,"is_completed":true}}"#
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(full(body))
            .expect("response")
    })
    .await
}

/// The resident set of `pid` in KiB, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn long_task_ids_are_checked_not_remembered_counted_and_cut_in_logs_and_report() {
    let upstream = long_id_upstream().await;
    let sidecar = Sidecar::start(&upstream.url(), "").await;
    // One short task first, so what the process holds anyway is already there.
    let (status, _, _) = get(&sidecar.url("/test/status/short")).await;
    assert_eq!(status, StatusCode::OK);
    let before = rss_kib(sidecar.pid());

    let mut connection = connect(sidecar.addr).await.expect("connect");
    for n in 0..TASKS {
        let request = Request::get(format!("/test/status/{n}"))
            .header("host", "sidecar.test")
            .body(empty())
            .expect("request");
        let response = request_via(&mut connection, request).await.expect("answer");
        let (status, _, body) = collect(response).await.expect("body");
        assert_eq!(status, StatusCode::OK);
        let record: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            record["stage"], "completed",
            "single-record rules still fix it"
        );
    }
    let grown_mib = rss_kib(sidecar.pid()).saturating_sub(before) / 1024;
    // The ids alone are 53 MiB; kept whole, 100 of them grew the process by 93 MiB.
    assert!(grown_mib < 20, "RSS grew by {grown_mib} MiB");

    let metrics = sidecar.metrics().await;
    let route = ("route", "task_status");
    assert_eq!(
        metrics.value(
            "consistency_untracked_total",
            &[route, ("reason", "task_id_too_long")]
        ),
        TASKS as f64
    );
    assert_eq!(
        metrics.value("consistency_checks_total", &[route]),
        TASKS as f64 + 1.0
    );
    assert!(
        metrics.value(
            "consistency_issues_total",
            &[route, ("rule", "completed_stage"), ("level", "minor_issue")]
        ) >= TASKS as f64
    );
    assert_eq!(
        metrics.value("consistency_tracked_tasks", &[]),
        1.0,
        "only the short id is remembered"
    );

    let longest = sidecar.log().iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");

    let (status, _, report) = get(&sidecar.admin_url("/report.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        report.len() < 64 * 1024,
        "a report of {} bytes",
        report.len()
    );
    let report: serde_json::Value = serde_json::from_slice(&report).expect("report JSON");
    let recent = report["recent_issues"].as_array().expect("recent issues");
    assert!(!recent.is_empty());
    for issue in recent {
        let id = issue["task_id"].as_str().expect("a task id");
        assert!(id.len() < 300, "an id of {} bytes in the report", id.len());
        assert!(id.ends_with(" bytes]"), "{id:.80}");
    }
}
