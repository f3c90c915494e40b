//! Stack tests of what inspection keeps: a task seen through transitions as `/tasks/{id}`
//! tells it, redacted evidence, and a capture that cannot write never failing a response.

use std::collections::VecDeque;
use std::time::Instant;

use super::*;
use crate::admin::Admin;
use crate::config::CaptureWhich;

/// An upstream answering the bodies in turn, as JSON.
fn answering(
    bodies: &[&'static str],
) -> impl tower::Service<
    Request<ProxyBody>,
    Response = Response<TestBody>,
    Error = UpstreamError,
    Future = impl Send,
> + Clone {
    let bodies = Arc::new(Mutex::new(bodies.iter().copied().collect::<VecDeque<_>>()));
    service_fn(move |_: Request<ProxyBody>| {
        let body = bodies.lock().expect("lock").pop_front().unwrap_or("{}");
        async move {
            let mut response = ok(full(body));
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            headers.insert("content-length", HeaderValue::from(body.len()));
            Ok::<_, UpstreamError>(response)
        }
    })
}

async fn admin_json(admin: &Admin, path: &str) -> (StatusCode, serde_json::Value) {
    let response = admin
        .handle(
            Request::get(path)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request"),
            std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
        )
        .await;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON"))
}

#[tokio::test]
async fn tasks_id_tells_a_task_seen_through_transitions_its_last_state_times_and_evidence() {
    const POLLS: [&str; 4] = [
        r#"{"task_id": "t7", "status": "running", "stage": "ai_fetching", "progress": 25, "is_completed": false, "brand": "Acme"}"#,
        r#"{"task_id": "t7", "status": "running", "stage": "ranking_analysis", "progress": 50, "is_completed": false, "brand": "Acme"}"#,
        r#"{"task_id": "t7", "status": "running", "stage": "ai_fetching", "progress": 50, "is_completed": false, "brand": "Acme"}"#,
        r#"{"task_id": "t7", "status": "completed", "stage": "source_tracing", "progress": 100, "is_completed": true, "brand": "Acme"}"#,
    ];
    let sidecar = Arc::new(sidecar(|config| {
        config.evidence.whole_bodies = true;
        config.redaction.keys = vec!["brand".into()];
    }));
    let upstream = answering(&POLLS);
    for _ in POLLS {
        let response = sidecar
            .app_with(upstream.clone())
            .oneshot(get("/test/status/t7"))
            .await
            .expect("response");
        read(response.into_body()).await.expect("whole body");
    }
    let admin = Admin::new(sidecar.clone(), None);
    let (status, task) = admin_json(&admin, "/tasks/t7").await;
    assert_eq!(status, StatusCode::OK, "{task}");
    let memory = &task["memory"][0];
    assert_eq!(memory["route"], "task_status");
    assert_eq!(memory["store"], "local");
    assert_eq!(memory["last_sent"]["status"], "completed");
    assert_eq!(memory["last_sent"]["stage"], "completed");
    assert_eq!(memory["last_sent"]["progress"], 100);
    for key in ["first_seen", "last_change", "stage_since", "last_polled"] {
        let time = memory[key].as_str().expect("a time");
        humantime::parse_rfc3339(time).expect("RFC 3339");
    }
    assert!(memory["first_seen"].as_str() <= memory["last_change"].as_str());

    // Newest first: the completed stage fixed, then the stage regression with the memory before it.
    let evidence = task["evidence"].as_array().expect("entries");
    assert_eq!(evidence.len(), 2, "{task}");
    let fixed = &evidence[0];
    assert_eq!(fixed["issues"][0]["rule"], "completed_stage");
    assert_eq!(fixed["received"]["stage"], "source_tracing");
    assert_eq!(fixed["sent"]["stage"], "completed");
    assert_eq!(fixed["fixes"][0]["before"], "source_tracing");
    assert_eq!(fixed["path"], "/test/status/t7");
    assert_eq!(fixed["method"], "GET");
    assert!(fixed["instance"].is_string());
    let regressed = &evidence[1];
    assert_eq!(regressed["issues"][0]["rule"], "stage_regression");
    assert_eq!(regressed["prior"]["stage"], "ranking_analysis");
    assert_eq!(regressed["prior"]["progress"], 50);
    assert_eq!(regressed["received"]["stage"], "ai_fetching");
    // The whole body is kept, with the brand hashed: equal values, equal hashes.
    let bodies: Vec<&str> = evidence
        .iter()
        .map(|e| e["body"].as_str().expect("body"))
        .collect();
    let hash = |body: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(body).expect("JSON");
        value["brand"].as_str().expect("string").to_owned()
    };
    assert!(bodies.iter().all(|b| !b.contains("Acme")), "{bodies:?}");
    assert!(hash(bodies[0]).starts_with("REDACTED-"));
    assert_eq!(hash(bodies[0]), hash(bodies[1]));

    let (status, found) =
        admin_json(&admin, "/evidence?rule=stage_regression&task=t7&limit=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found["entries"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let (status, _) = admin_json(&admin, "/tasks/never-seen").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin_json(&admin, "/evidence?limit=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unwritable_capture_path_never_fails_a_response_and_is_counted() {
    let sidecar = sidecar(|config| {
        config.capture.enabled = true;
        config.capture.which = CaptureWhich::All;
        config.capture.path = "/proc/not-a-place-for-captures/capture.ndjson".into();
    });
    for _ in 0..20 {
        let response = sidecar
            .app_with(answering(&[STALE_STAGE]))
            .oneshot(get("/test/status/t2"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = read(response.into_body()).await.expect("whole body");
        assert_eq!(body, STALE_STAGE_FIXED.as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = || {
        metric(
            &sidecar,
            "consistency_capture_lines_total",
            &[("outcome", "write_failed")],
        ) + metric(
            &sidecar,
            "consistency_capture_lines_total",
            &[("outcome", "queue_full")],
        )
    };
    while dropped() < 20.0 {
        assert!(Instant::now() < deadline, "drops counted within 10s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        metric(
            &sidecar,
            "consistency_capture_lines_total",
            &[("outcome", "written")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_capture_line_holds_the_body_as_received_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.ndjson");
    const WITH_OWNER: &str = r#"{"task_id": "t3", "status": "completed", "stage": "ai_fetching", "progress": 100, "is_completed": true, "owner": {"email": "a@example.com"}}"#;
    let sidecar = sidecar(|config| {
        config.capture.enabled = true;
        config.capture.path = path.clone();
        config.redaction.pointers = vec!["/owner/email".into()];
    });
    let response = sidecar
        .app_with(answering(&[WITH_OWNER]))
        .oneshot(get("/test/status/t3?x=1"))
        .await
        .expect("response");
    read(response.into_body()).await.expect("whole body");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(Instant::now() < deadline, "a line within 10s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let line: crate::capture::CaptureLine = serde_json::from_str(text.trim()).expect("one line");
    assert_eq!(line.route, "task_status");
    assert_eq!(line.path, "/test/status/t3?x=1");
    assert_eq!(line.status, 200);
    assert_eq!(line.content_type, "application/json");
    assert_eq!(line.task_id.as_deref(), Some("t3"));
    assert!(line.inconsistent);
    assert!(!line.body.contains("example.com"), "{}", line.body);
    let body: serde_json::Value = serde_json::from_str(&line.body).expect("JSON");
    // As received: the stale stage, not the fix.
    assert_eq!(body["stage"], "ai_fetching");
    assert!(body["owner"]["email"]
        .as_str()
        .is_some_and(|e| e.starts_with("REDACTED-")));
}
