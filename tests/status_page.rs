//! The status page in a real headless Chromium: the sidecar binary in front of the Python
//! stand-in of the legacy backend, polling traffic through it, and the page at `/status` on the
//! admin port. It must load with no console error and no request but to the admin port, show
//! exactly the figures of `/report.json`, and keep up with new traffic without being reloaded.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::browser::Browser;
use support::{get, post_json, Sidecar, StandIn};

/// Every figure the page shows, as `[data-key, text]`: the key is its path in `/report.json`.
const FIGURES: &str = "JSON.stringify(Array.from(document.querySelectorAll('[data-key]'), \
    e => [e.dataset.key, e.textContent]))";

/// What the page last rendered: the `generated_at` of the report.json it drew.
const RENDERED_AT: &str = "document.getElementById('updated').getAttribute('datetime') || ''";

/// Polling clients through the sidecar: `tasks` new tasks, each polled to its end on
/// `task_status` and a few times on `test_progress`, the history, and one answer the sidecar
/// cannot inspect (so a skip reason shows).
async fn traffic(sidecar: &Sidecar, tasks: usize) {
    let mut ids = Vec::new();
    for n in 0..tasks {
        let brand = if n % 4 == 3 { "fail-brand" } else { "brand" };
        let (status, _, body) = post_json(
            &sidecar.url("/api/perform-brand-test"),
            &format!(r#"{{"brand_list": ["{brand}-{n}"]}}"#),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let created: Value = serde_json::from_slice(&body).expect("task JSON");
        ids.push(created["execution_id"].as_str().expect("id").to_string());
    }
    for round in 0..7 {
        for id in &ids {
            assert_eq!(
                get(&sidecar.url(&format!("/test/status/{id}"))).await.0,
                200
            );
            if round % 3 == 0 {
                let path = format!("/api/test-progress?executionId={id}");
                assert_eq!(get(&sidecar.url(&path)).await.0, 200);
            }
        }
        assert_eq!(get(&sidecar.url("/api/test-history")).await.0, 200);
    }
    assert_eq!(get(&sidecar.url("/test/status/__notjson")).await.0, 200);
}

async fn report(sidecar: &Sidecar) -> Value {
    let (status, _, body) = get(&sidecar.admin_url("/report.json")).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("report.json is JSON")
}

/// The value at a dotted path (`routes.0.levels.critical`); numbers index arrays.
fn at<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(json, |v, part| match part.parse::<usize>() {
            Ok(i) if v.is_array() => v.get(i),
            _ => v.get(part),
        })
}

/// Whether `text` is how the page should show `value`: counts in full (thousands separated),
/// ratios as percentages to two decimals, strings as they are.
fn shows(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => text == s,
        Value::Bool(b) => text == if *b { "yes" } else { "no" },
        Value::Null => text == "–",
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(count), _) => text.replace(',', "").parse::<u64>() == Ok(count),
            (None, Some(ratio)) => text
                .strip_suffix('%')
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(|shown| (shown - ratio * 100.0).abs() <= 0.005 + 1e-9),
            _ => false,
        },
        _ => false,
    }
}

/// The keys the page must show for `report`: every headline figure, every route's counts and
/// levels, its top rules, fixes and skip reasons, the proxy and tracker figures, and the task
/// id of every recent issue.
fn expected_keys(report: &Value) -> Vec<String> {
    let mut keys: Vec<String> = [
        "total_checks",
        "consistency_ratio",
        "issues_found",
        "critical_issues",
        "sidecar.version",
        "sidecar.mode",
        "proxy.requests",
        "proxy.requests_by_code.2xx",
        "proxy.upstream_errors",
        "proxy.upstream_errors_by_reason.connect",
        "proxy.inflight",
        "proxy.load_shed",
        "tracker.tracked_tasks",
        "tracker.evictions.capacity",
    ]
    .map(String::from)
    .into();
    let levels = ["consistent", "minor_issue", "major_issue", "critical"];
    keys.extend(levels.map(|l| format!("levels.{l}")));
    for (i, route) in report["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .enumerate()
    {
        for field in ["name", "mode", "requests", "checks", "ratio"] {
            keys.push(format!("routes.{i}.{field}"));
        }
        keys.extend(levels.map(|l| format!("routes.{i}.levels.{l}")));
        let issues = route["issues"].as_array().expect("issues");
        for (j, _) in issues
            .iter()
            .enumerate()
            .filter(|(_, r)| r["count"] != 0)
            .take(5)
        {
            keys.push(format!("routes.{i}.issues.{j}.rule"));
            keys.push(format!("routes.{i}.issues.{j}.count"));
        }
        let fixes = route["fixes"].as_array().expect("fixes");
        for (j, _) in fixes.iter().enumerate().filter(|(_, f)| f["applied"] != 0) {
            keys.push(format!("routes.{i}.fixes.{j}.applied"));
        }
        for (reason, n) in route["skipped"].as_object().expect("skipped") {
            if n != 0 {
                keys.push(format!("routes.{i}.skipped.{reason}"));
            }
        }
    }
    let recent = report["recent_issues"].as_array().expect("recent issues");
    for i in 0..recent.len().min(10) {
        keys.push(format!("recent_issues.{i}.task_id"));
        keys.push(format!("recent_issues.{i}.rule"));
    }
    keys
}

/// Waits until the page has drawn a report.json fetched after now, then checks every figure it
/// shows against `/report.json` (the traffic has stopped, so the figures hold still); returns
/// that report.
async fn assert_page_matches_report(browser: &mut Browser, sidecar: &Sidecar) -> Value {
    // The tracker's gauge is brought up to date every second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = report(sidecar).await;
    let since = before["generated_at"]
        .as_str()
        .expect("generated_at")
        .to_string();
    browser.wait_until("the page to refresh", Duration::from_secs(10), |b| {
        // RFC 3339 with milliseconds, in UTC: the strings order as the times do.
        let rendered = b.evaluate(RENDERED_AT);
        (rendered.as_str().unwrap_or("") > since.as_str()).then_some(())
    });
    let shown: Vec<(String, String)> =
        serde_json::from_str(browser.evaluate(FIGURES).as_str().expect("figures"))
            .expect("figures are JSON");
    let report = report(sidecar).await;

    let mut wrong = Vec::new();
    for (key, text) in &shown {
        match at(&report, key) {
            Some(value) if shows(value, text) => {}
            value => wrong.push(format!(
                "{key}: page shows {text:?}, report.json has {value:?}"
            )),
        }
    }
    assert!(wrong.is_empty(), "figures differ:\n{}", wrong.join("\n"));
    for key in expected_keys(&report) {
        assert!(
            shown.iter().any(|(k, _)| *k == key),
            "the page does not show {key} ({:?})",
            at(&report, &key)
        );
    }
    // One chart point per history interval with checks.
    let with_checks = report["history"]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| !s["ratio"].is_null())
        .count();
    let points = browser.evaluate("document.querySelectorAll('#chart circle').length");
    assert_eq!(points, with_checks, "chart points");
    report
}

#[tokio::test]
async fn status_page_shows_report_json_and_refreshes_itself() {
    let Some(backend) = StandIn::start(&["--inject-rate", "0.2", "--seed", "3"]).await else {
        return;
    };
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let sidecar = Sidecar::start(&backend.url(), "").await;
    traffic(&sidecar, 12).await;

    for path in ["/", "/status"] {
        let (status, headers, body) = get(&sidecar.admin_url(path)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert!(headers["content-security-policy"]
            .to_str()
            .expect("ascii")
            .starts_with("default-src 'none'"));
        assert!(body.starts_with(b"<!doctype html>"));
    }

    let admin = sidecar.admin_url("/");
    browser.open(&format!("{admin}status"));
    let first = assert_page_matches_report(&mut browser, &sidecar).await;
    assert!(
        first["recent_issues"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "at 20% injected, some issues: {first}"
    );
    // Each recent issue leads to its task and to its evidence, and both answer.
    let issue = &first["recent_issues"][0];
    let links = browser.evaluate(
        "(() => { const row = document.querySelector('[data-key=\"recent_issues.0.task_id\"]').parentElement; \
         return [row.querySelector('td a').getAttribute('href'), row.querySelector('a.evidence').getAttribute('href')]; })()",
    );
    let task = issue["task_id"].as_str().expect("a task id");
    assert_eq!(links[0], format!("tasks/{task}"), "{links}");
    let evidence = links[1].as_str().expect("evidence link");
    assert!(evidence.starts_with("evidence?route="), "{evidence}");
    for path in [format!("/tasks/{task}"), format!("/{evidence}")] {
        let (status, _, body) = get(&sidecar.admin_url(&path)).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let found: Value = serde_json::from_slice(&body).expect("JSON");
        let entries = found
            .get("evidence")
            .or(found.get("entries"))
            .expect("entries");
        assert!(
            entries.as_array().is_some_and(|e| !e.is_empty()),
            "{path}: {found}"
        );
    }

    // More traffic: the same document catches up on its own.
    browser.evaluate("window.sameDocument = true");
    let navigations = browser.navigations();
    let checks_shown = |b: &mut Browser| {
        b.evaluate("document.querySelector('[data-key=\"total_checks\"]').textContent")
    };
    let before = checks_shown(&mut browser);
    traffic(&sidecar, 6).await;
    browser.wait_until(
        "the page to show the new checks",
        Duration::from_secs(10),
        |b| (checks_shown(b) != before).then_some(()),
    );
    assert_eq!(browser.evaluate("window.sameDocument === true"), true);
    assert_eq!(browser.navigations(), navigations, "the page was reloaded");

    // The chart has at least one interval with traffic (one point every 5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while report(&sidecar).await["history"]["samples"]
        .as_array()
        .is_none_or(|s| s.iter().all(|s| s["ratio"].is_null()))
    {
        assert!(tokio::time::Instant::now() < deadline, "no history sample");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let last = assert_page_matches_report(&mut browser, &sidecar).await;
    assert!(last["total_checks"].as_u64() > first["total_checks"].as_u64());

    let requests = browser.requests();
    let outside: Vec<&String> = requests
        .iter()
        .filter(|url| !url.starts_with(&admin))
        .collect();
    assert!(
        outside.is_empty(),
        "requests beyond the admin port: {outside:?}"
    );
    let refreshes = requests
        .iter()
        .filter(|u| u.ends_with("/report.json"))
        .count();
    assert!(refreshes >= 3, "report.json fetched {refreshes} times");
    assert_eq!(browser.failed_requests(), Vec::<String>::new());
    assert_eq!(browser.errors(), Vec::<String>::new(), "console errors");
}

#[tokio::test]
async fn stalled_tasks_are_listed_in_report_json_and_on_the_page_oldest_first() {
    // A backend whose tasks never leave their first stage: every task stalls.
    let Some(backend) = StandIn::start(&["--seed", "5", "--polls-per-stage", "100000"]).await
    else {
        return;
    };
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let sidecar = Sidecar::start(&backend.url(), "[tracker]\nstall_after = \"1s\"\n").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (_, _, body) = post_json(
            &sidecar.url("/api/perform-brand-test"),
            &format!(r#"{{"brand_list": ["brand-{n}"]}}"#),
        )
        .await;
        let created: Value = serde_json::from_slice(&body).expect("task JSON");
        let id = created["execution_id"].as_str().expect("id").to_string();
        assert_eq!(
            get(&sidecar.url(&format!("/test/status/{id}"))).await.0,
            200
        );
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Polled again, unchanged: each stalled, judged from when it was first seen.
    for id in ids.iter().rev() {
        let (status, _, body) = get(&sidecar.url(&format!("/test/status/{id}"))).await;
        assert_eq!(status, 200);
        let record: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(record["stage"], "init", "{record}");
    }
    let report = report(&sidecar).await;
    let stalled = &report["stalled"];
    assert_eq!(stalled["total"], 3, "{stalled}");
    let listed: Vec<&str> = stalled["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["task_id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, ids, "the longest stalled first");
    let first = &stalled["tasks"][0];
    assert_eq!(first["route"], "task_status");
    assert!(first["stalled_for_seconds"].as_u64() >= Some(1), "{first}");
    assert!(
        first["last_polled_seconds_ago"].as_u64() <= Some(1),
        "{first}"
    );

    browser.open(&format!("{}status", sidecar.admin_url("/")));
    browser.wait_until("the stalled tasks", Duration::from_secs(10), |b| {
        let shown = b.evaluate(
            "(document.querySelector('[data-key=\"stalled.tasks.0.task_id\"]') || {}).textContent || ''",
        );
        (shown == ids[0].as_str()).then_some(())
    });
    let total =
        browser.evaluate("document.querySelector('[data-key=\"stalled.total\"]').textContent");
    assert_eq!(total, "3");
    assert_eq!(browser.errors(), Vec::<String>::new(), "console errors");
}

#[tokio::test]
async fn with_a_token_the_browser_logs_in_once_and_the_page_runs_under_its_csp() {
    let Some(backend) = StandIn::start(&["--seed", "7"]).await else {
        return;
    };
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), "a-browser-token-0123456789\n").expect("write token");
    let config = format!("[admin]\ntoken_file = {:?}\n", token.path());
    let sidecar = Sidecar::start(&backend.url(), &config).await;
    traffic(&sidecar, 2).await;

    // Sent to the login form, which posts the token and is answered with the cookie.
    browser.open(&format!("{}status", sidecar.admin_url("/")));
    assert_eq!(
        browser.evaluate("location.pathname"),
        "/login",
        "no token yet: the login form"
    );
    browser.evaluate(
        "document.querySelector('input[name=token]').value = 'a-browser-token-0123456789'; \
         document.querySelector('form').requestSubmit(); true",
    );
    browser.wait_until("the status page, logged in", Duration::from_secs(10), |b| {
        let shown = b.evaluate(
            "location.pathname === '/status' && document.getElementById('state') !== null \
             && document.getElementById('state').className === 'live'",
        );
        (shown == true).then_some(())
    });
    let cookie_seen_by_script = browser.evaluate("document.cookie");
    assert_eq!(cookie_seen_by_script, "", "the login cookie is HttpOnly");
    // Bar widths are set through the CSSOM, which the CSP allows; inline style is refused.
    let checks =
        browser.evaluate("document.querySelector('[data-key=\"total_checks\"]').textContent");
    assert_ne!(checks, "");
    assert_eq!(browser.failed_requests(), Vec::<String>::new());
    assert_eq!(browser.errors(), Vec::<String>::new(), "console errors");
}
