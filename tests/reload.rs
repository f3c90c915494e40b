//! Hot reload end to end: the real binary in front of the Python stand-in (injection on), its
//! config file rewritten and reloaded by `POST /-/reload`, SIGHUP and `--watch-config` while
//! keep-alive clients keep polling: a rule rolled out (added in shadow, then switched to fix), a
//! route added, a bad file. No request fails, each change holds from the next request, counters
//! and task memory survive, a bad file changes nothing, and the reload metrics say so.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use consistency_sidecar::reload::WATCH_EVERY;
use http::{Request, StatusCode};
use serde_json::Value;
use support::*;

/// Clients polling while the configuration changes under them.
const CLIENTS: usize = 4;
/// Requests per client at most, and how long the loop may run at most.
const CLIENT_REQUESTS: u64 = 5_000;
const LOOP_LIMIT: Duration = Duration::from_secs(25);
/// Tasks the clients poll on `test_progress` (tracked): the task memory holds exactly these and
/// the probe's `__inconsistent` on `task_status`.
const TASKS: usize = 8;
/// Answers the loop must give between two reloads, so that every reload lands under load.
const BETWEEN_RELOADS: u64 = 40;

/// The rule rolled out by the reloads, a new version of the default `completed_stage` (same
/// check, same fix).
const NEW_RULE: &str = "completed_stage_v2";

/// The rules while `NEW_RULE` is rolled out in `mode` (`shadow`, then `fix`): the default
/// `completed_stage` is switched off (rules are overlaid by name), so that `NEW_RULE` alone
/// judges the stand-in's `completed_stage` injection and every answer of
/// `/test/status/__inconsistent`.
fn rollout(mode: &str) -> String {
    format!(
        r#"
[[rules]]
name = "completed_stage"
enabled = false

[[rules]]
name = "{NEW_RULE}"
level = "minor_issue"
when = {{ status = {{ is = "completed" }}, stage = {{ is_not = "completed" }} }}
fix = {{ stage = "completed" }}
mode = "{mode}"
message = "status=completed but stage={{stage}}"
"#
    )
}

/// The new rule with a field of `when` misspelt: the file is invalid.
const MISSPELT_RULE: &str = r#"
[[rules]]
name = "completed_stage_v2"
level = "minor_issue"
when = { statuz = { is = "completed" }, stage = { is_not = "completed" } }
fix = { stage = "completed" }
message = "status=completed but stage={stage}"
"#;

/// A route the stand-in serves (its health check), listed first so that every route after it
/// moves one place down.
const HEALTH_ROUTE: &str = r#"
[[routes]]
name = "health"
method = "GET"
path = "/health"
records = ""
"#;

const TASK_STATUS_ROUTE: &str = r#"
[[routes]]
name = "task_status"
method = "GET"
path = "/test/status/{task_id}"
records = ""
track = true
"#;

const TEST_PROGRESS_ROUTE: &str = r#"
[[routes]]
name = "test_progress"
method = "GET"
path = "/api/test-progress"
records = ""
track = true
"#;

const TEST_HISTORY_ROUTE: &str = r#"
[[routes]]
name = "test_history"
method = "GET"
path = "/api/test-history"
records = "/history/*"
"#;

/// The routes of the stand-in, as the defaults have them.
const ROUTES: [&str; 3] = [TASK_STATUS_ROUTE, TEST_PROGRESS_ROUTE, TEST_HISTORY_ROUTE];

/// The routes after the new one is added at the top.
const ROUTES_WITH_HEALTH: [&str; 4] = [
    HEALTH_ROUTE,
    TASK_STATUS_ROUTE,
    TEST_PROGRESS_ROUTE,
    TEST_HISTORY_ROUTE,
];

/// A config file: the global `mode`, then extra top-level text (tables), routes and rules.
fn config(mode: &str, tables: &str, routes: &[&str], rules: &str) -> String {
    format!("mode = \"{mode}\"\n{tables}\n{}\n{rules}", routes.concat())
}

/// One answer of the loop that was not a 200.
type Failure = String;

/// Keep-alive clients polling the tracked tasks, the history and an uninspected path until told
/// to stop, bounded in count and time.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<Failure>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

// === impl ClientLoop ===

impl ClientLoop {
    fn start(proxy: SocketAddr, tasks: Arc<Vec<String>>) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + LOOP_LIMIT;
        let clients = (0..CLIENTS)
            .map(|client| {
                let (stop, answered, failures, tasks) = (
                    stop.clone(),
                    answered.clone(),
                    failures.clone(),
                    tasks.clone(),
                );
                tokio::spawn(async move {
                    let fail = |what: String| failures.lock().expect("failures").push(what);
                    let mut connection = match connect(proxy).await {
                        Ok(connection) => connection,
                        Err(err) => return fail(format!("client {client}: connect: {err}")),
                    };
                    for n in 0..CLIENT_REQUESTS {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let path = match n % 3 {
                            0 => "/api/test-history".to_string(),
                            1 => "/api/test".to_string(),
                            _ => {
                                let task = &tasks[(client + n as usize) % tasks.len()];
                                format!("/api/test-progress?executionId={task}")
                            }
                        };
                        let request = Request::get(&path)
                            .header("host", "sidecar.test")
                            .body(empty())
                            .expect("request");
                        let answer = match request_via(&mut connection, request).await {
                            Ok(response) => collect(response).await,
                            Err(err) => Err(err),
                        };
                        match answer {
                            Ok((StatusCode::OK, _, _)) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, _, body)) => {
                                let body = String::from_utf8_lossy(&body);
                                return fail(format!("client {client}: {path}: {status} {body}"));
                            }
                            // The connection is gone: nothing more can be sent on it.
                            Err(err) => return fail(format!("client {client}: {path}: {err}")),
                        }
                    }
                })
            })
            .collect();
        ClientLoop {
            stop,
            answered,
            failures,
            clients,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until the clients have had `n` more answers, so that what comes next happens
    /// while they are busy; fails early if one of them failed.
    async fn progress(&self, n: u64) {
        let target = self.answered() + n;
        wait_for("the client loop to make progress", || async {
            let failures = self.failures.lock().expect("failures").clone();
            assert!(failures.is_empty(), "the client loop failed: {failures:#?}");
            (self.answered() >= target).then_some(())
        })
        .await;
    }

    /// Stops the clients; returns how many answers they had and what failed.
    async fn finish(self) -> (u64, Vec<Failure>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("a client panicked");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

/// One GET on an existing keep-alive connection: the status and the body as JSON.
async fn get_json(connection: &mut Connection, path: &str) -> (StatusCode, Value) {
    let request = Request::get(path)
        .header("host", "sidecar.test")
        .body(empty())
        .expect("request");
    let response = request_via(connection, request)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let (status, _, body) = collect(response)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// The stand-in's probe: always the same completed record with the `completed_stage` injection
/// (stage `source_tracing`), task id `__inconsistent`.
const PROBE: &str = "/test/status/__inconsistent";

/// `PROBE` through the sidecar: the body the client got.
async fn probe(connection: &mut Connection) -> Bytes {
    let request = Request::get(PROBE)
        .header("host", "sidecar.test")
        .body(empty())
        .expect("request");
    let response = request_via(connection, request)
        .await
        .unwrap_or_else(|e| panic!("{PROBE}: {e}"));
    let (status, _, body) = collect(response)
        .await
        .unwrap_or_else(|e| panic!("{PROBE}: {e}"));
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    body
}

/// The stage in a probe's body: `completed` when fixed, `source_tracing` when not.
fn stage(body: &[u8]) -> String {
    let record: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{PROBE}: {e}: {}", String::from_utf8_lossy(body)));
    record["stage"].as_str().expect("a stage").to_string()
}

/// The stage the client got on `PROBE`.
async fn probe_stage(connection: &mut Connection) -> String {
    stage(&probe(connection).await)
}

/// `POST /-/reload` on the admin port: the status and the one-line body.
async fn post_reload(sidecar: &Sidecar) -> (StatusCode, String) {
    let request = Request::post(sidecar.admin_url("/-/reload"))
        .body(empty())
        .expect("request");
    let (status, _, body) = send(request).await;
    (status, String::from_utf8(body.to_vec()).expect("UTF-8"))
}

async fn report_config(sidecar: &Sidecar) -> Value {
    let (status, _, body) = get(&sidecar.admin_url("/report.json")).await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&body).expect("report.json is JSON");
    report["config"].clone()
}

/// The reload metrics: (successes, failures, last successful, last success timestamp).
fn reloads(metrics: &Scrape) -> (f64, f64, f64, f64) {
    (
        metrics.value("consistency_config_reloads_total", &[("result", "success")]),
        metrics.value("consistency_config_reloads_total", &[("result", "failure")]),
        metrics.value("consistency_config_last_reload_successful", &[]),
        metrics.value(
            "consistency_config_last_reload_success_timestamp_seconds",
            &[],
        ),
    )
}

fn issues(metrics: &Scrape, route: &str, rule: &str) -> Option<f64> {
    metrics.get(
        "consistency_issues_total",
        &[("route", route), ("rule", rule)],
    )
}

/// `consistency_fixes_total` of `rule` on `task_status` (the probe's route), `applied` or
/// `shadow`.
fn fixes(metrics: &Scrape, rule: &str, mode: &str) -> Option<f64> {
    metrics.get(
        "consistency_fixes_total",
        &[("route", "task_status"), ("rule", rule), ("mode", mode)],
    )
}

fn tracked(metrics: &Scrape) -> f64 {
    metrics.value("consistency_tracked_tasks", &[])
}

/// Every counter of `earlier` is still there in `later`, at least as high.
fn assert_no_counter_went_back(earlier: &BTreeMap<String, f64>, later: &BTreeMap<String, f64>) {
    for (series, before) in earlier {
        let after = later
            .get(series)
            .unwrap_or_else(|| panic!("{series} disappeared after a reload"));
        assert!(
            after >= before,
            "{series} went back from {before} to {after}"
        );
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The success timestamp has whole seconds: waits until the clock is past `timestamp`, so the
/// next successful reload must move it.
async fn next_second(timestamp: f64) {
    while unix_now() < timestamp + 1.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `n` tasks through the sidecar and polls each once on `test_progress`, so the task
/// memory knows them; returns their ids.
async fn tasks(sidecar: &Sidecar, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, _, body) = post_json(
            &sidecar.url("/api/perform-brand-test"),
            &format!(r#"{{"brand_list": ["brand-{i}"], "selectedModels": ["m"]}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let created: Value = serde_json::from_slice(&body).expect("JSON");
        let id = created["execution_id"].as_str().expect("an id").to_string();
        let (status, _, _) =
            get(&sidecar.url(&format!("/api/test-progress?executionId={id}"))).await;
        assert_eq!(status, StatusCode::OK);
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_change_what_they_say_and_keep_counters_and_task_memory() {
    let Some(kill) = tool("kill") else {
        return;
    };
    let Some(standin) = StandIn::start(&["--inject-rate", "1", "--seed", "12"]).await else {
        return;
    };
    let started = Instant::now();
    let v1 = config("fix", "", &ROUTES, "");
    let sidecar = Sidecar::start(&standin.url(), &v1).await;
    let ids = Arc::new(tasks(&sidecar, TASKS).await);
    let mut prober = connect(sidecar.addr).await.expect("connect");
    let fixed_body = probe(&mut prober).await;
    assert_eq!(stage(&fixed_body), "completed", "completed_stage fixes");
    let (status, _, upstream_body) = get(&format!("{}{PROBE}", standin.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stage(&upstream_body), "source_tracing", "the injection");

    let metrics = sidecar.metrics().await;
    let (successes, failures, successful, start_timestamp) = reloads(&metrics);
    assert_eq!(
        (successes, failures, successful),
        (0.0, 0.0, 1.0),
        "no reload yet: the load at start counts as successful"
    );
    let memory = (TASKS + 1) as f64;
    assert_eq!(tracked(&metrics), memory);
    let mut snapshots = vec![metrics.counters()];

    let load = ClientLoop::start(sidecar.addr, ids.clone());
    load.progress(BETWEEN_RELOADS).await;

    // 1. The new rule added in shadow (and the default it replaces switched off), by SIGHUP: it
    // judges the next request and counts what it would fix, and the client gets the bytes the
    // stand-in sent, as without any stage rule. The task memory kept what was sent before the
    // reload (stage completed, fixed), so the unfixed answer after it is a stage regression.
    let regressions = issues(&metrics, "task_status", "stage_regression").expect("a series");
    let replaced = issues(&metrics, "task_status", "completed_stage").expect("a series");
    assert_eq!(fixes(&metrics, NEW_RULE, "shadow"), None, "not a rule yet");
    sidecar.rewrite_config(&config("fix", "", &ROUTES, &rollout("shadow")));
    sidecar.hangup(&kill);
    wait_for("the SIGHUP reload", || async {
        (reloads(&sidecar.metrics().await).0 == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        probe(&mut prober).await,
        upstream_body,
        "a rule in shadow changes nothing the client gets"
    );
    let metrics = sidecar.metrics().await;
    assert_eq!(
        (
            fixes(&metrics, NEW_RULE, "shadow"),
            fixes(&metrics, NEW_RULE, "applied")
        ),
        (Some(1.0), Some(0.0)),
        "the first request after the reload: one would-be fix, none applied"
    );
    assert_eq!(issues(&metrics, "task_status", NEW_RULE), Some(1.0));
    assert_eq!(
        issues(&metrics, "task_status", "completed_stage"),
        Some(replaced),
        "the default rule is off"
    );
    assert_eq!(
        issues(&metrics, "task_status", "stage_regression"),
        Some(regressions + 1.0),
        "a task polled before the reload is judged against what was sent before it"
    );
    snapshots.push(metrics.counters());
    load.progress(BETWEEN_RELOADS).await;

    // 2. The same rule switched to fix, by POST /-/reload: it fixes from the next request on,
    // the bytes the default rule sent, and its applied series continues from 0.
    sidecar.rewrite_config(&config("fix", "", &ROUTES, &rollout("fix")));
    assert_eq!(
        post_reload(&sidecar).await,
        (StatusCode::OK, "configuration reloaded\n".to_string())
    );
    assert_eq!(
        probe(&mut prober).await,
        fixed_body,
        "fixed as completed_stage fixed it"
    );
    let metrics = sidecar.metrics().await;
    assert_eq!(
        (
            fixes(&metrics, NEW_RULE, "shadow"),
            fixes(&metrics, NEW_RULE, "applied")
        ),
        (Some(1.0), Some(1.0)),
        "the first request after the reload: applied, no longer shadow"
    );
    assert_eq!(issues(&metrics, "task_status", NEW_RULE), Some(2.0));
    assert_eq!(reloads(&metrics).0, 2.0);
    snapshots.push(metrics.counters());
    load.progress(BETWEEN_RELOADS).await;

    // 3. A new route, listed first (every other route moves down one place).
    let health = [("route", "health"), ("method", "GET"), ("code", "2xx")];
    assert_eq!(
        metrics.get("consistency_proxy_requests_total", &health),
        None
    );
    sidecar.rewrite_config(&config("fix", "", &ROUTES_WITH_HEALTH, &rollout("fix")));
    assert_eq!(
        post_reload(&sidecar).await,
        (StatusCode::OK, "configuration reloaded\n".to_string())
    );
    let (status, body) = get_json(&mut prober, "/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        probe_stage(&mut prober).await,
        "completed",
        "the new rule still fixes"
    );
    let metrics = sidecar.metrics().await;
    assert_eq!(
        metrics.value("consistency_proxy_requests_total", &health),
        1.0,
        "the new route counted the first request after the reload"
    );
    assert_eq!(
        metrics.value("consistency_checks_total", &[("route", "health")]),
        1.0
    );
    let (successes, _, _, good_timestamp) = reloads(&metrics);
    assert_eq!(successes, 3.0);
    snapshots.push(metrics.counters());
    load.progress(BETWEEN_RELOADS).await;

    // 4. An invalid file (in observe mode, without the route, the default rule back on):
    // refused with the key named, nothing changes.
    sidecar.rewrite_config(&config("observe", "", &ROUTES, MISSPELT_RULE));
    let (status, line) = post_reload(&sidecar).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{line}");
    assert!(
        line.starts_with("config error: rules[0].when.statuz: unknown field `statuz`;"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    let applied = fixes(&metrics, NEW_RULE, "applied").expect("a series");
    assert_eq!(
        probe_stage(&mut prober).await,
        "completed",
        "still fix mode, not the file's observe"
    );
    let (status, _) = get_json(&mut prober, "/health").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = sidecar.metrics().await;
    assert_eq!(
        fixes(&metrics, NEW_RULE, "applied"),
        Some(applied + 1.0),
        "the running rules still judge and fix"
    );
    assert_eq!(
        issues(&metrics, "task_status", "completed_stage"),
        Some(replaced),
        "the default rule is still off"
    );
    assert_eq!(
        metrics.value("consistency_proxy_requests_total", &health),
        2.0,
        "the running routes still classify"
    );
    assert_eq!(reloads(&metrics), (3.0, 1.0, 0.0, good_timestamp));
    let report = report_config(&sidecar).await;
    assert_eq!(report["last_reload_successful"], false, "{report}");
    assert_eq!(report["last_error"], line.trim_end(), "{report}");
    assert_eq!(report["reloads_failed"], 1, "{report}");
    snapshots.push(metrics.counters());
    load.progress(BETWEEN_RELOADS).await;

    // 5. Restart-only keys changed beside reloadable ones (the mode, a transition rule): the
    // reload applies those, names the others and keeps their running value; the sidecar stays
    // where it listens.
    next_second(good_timestamp).await;
    let regressions = issues(&metrics, "task_status", "stage_regression").expect("a series");
    sidecar.rewrite_config(&config(
        "observe",
        "[proxy]\nworkers = 3\n[tracker]\ncapacity = 5000\n\
         [tracker.rules.stage_regression]\nenabled = false\n",
        &ROUTES_WITH_HEALTH,
        &rollout("fix"),
    ));
    assert_eq!(
        post_reload(&sidecar).await,
        (
            StatusCode::OK,
            "configuration reloaded; kept at their running value until a restart: \
             proxy.workers, tracker.capacity\n"
                .to_string()
        )
    );
    let mut fresh = connect(sidecar.addr).await.expect("a new connection");
    assert_eq!(
        probe_stage(&mut fresh).await,
        "source_tracing",
        "the mode changed"
    );
    let metrics = sidecar.metrics().await;
    assert_eq!(
        issues(&metrics, "task_status", "stage_regression"),
        Some(regressions),
        "stage_regression is disabled by the reload: completed, then source_tracing is not counted"
    );
    let (successes, failures, successful, timestamp) = reloads(&metrics);
    assert_eq!((successes, failures, successful), (4.0, 1.0, 1.0));
    assert!(
        timestamp > good_timestamp && good_timestamp >= start_timestamp,
        "the success timestamp moves: {start_timestamp} -> {good_timestamp} -> {timestamp}"
    );
    let report = report_config(&sidecar).await;
    assert_eq!(report["last_reload_successful"], true, "{report}");
    assert_eq!(report["last_error"], Value::Null, "{report}");
    assert_eq!(
        report["unchanged_keys"],
        serde_json::json!(["proxy.workers", "tracker.capacity"])
    );
    assert_eq!(report["reloads_succeeded"], 4, "{report}");
    load.progress(BETWEEN_RELOADS).await;

    let (answered, failures) = load.finish().await;
    assert!(failures.is_empty(), "requests failed: {failures:#?}");
    let metrics = sidecar.metrics().await;
    snapshots.push(metrics.counters());
    for pair in snapshots.windows(2) {
        assert_no_counter_went_back(&pair[0], &pair[1]);
    }
    // The same tasks under the same routes: not one forgotten, not one remembered twice.
    assert_eq!(tracked(&metrics), memory, "tracked tasks after the reloads");

    // 6. A route removed: its task memory goes with it, the other routes keep theirs.
    sidecar.rewrite_config(&config(
        "fix",
        "",
        &[HEALTH_ROUTE, TASK_STATUS_ROUTE, TEST_HISTORY_ROUTE],
        &rollout("fix"),
    ));
    assert_eq!(
        post_reload(&sidecar).await,
        (StatusCode::OK, "configuration reloaded\n".to_string())
    );
    let metrics = sidecar.metrics().await;
    assert_eq!(
        tracked(&metrics),
        1.0,
        "only `__inconsistent` on task_status"
    );
    assert_no_counter_went_back(snapshots.last().expect("snapshots"), &metrics.counters());
    eprintln!(
        "{answered} answers from {CLIENTS} keep-alive clients over 5 reloads in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes_and_only_then() {
    let Some(standin) = StandIn::start(&["--inject-rate", "1", "--seed", "13"]).await else {
        return;
    };
    let sidecar = Sidecar::launch(
        &standin.url(),
        &config("fix", "", &ROUTES, ""),
        &["--watch-config"],
        Some(sidecar::QUIET),
    )
    .await;
    let mut probe = connect(sidecar.addr).await.expect("connect");
    assert_eq!(probe_stage(&mut probe).await, "completed");

    let reloaded = |successes: f64, failures: f64| {
        let sidecar = &sidecar;
        async move {
            wait_for("the watcher to reload", || async {
                let (s, f, _, _) = reloads(&sidecar.metrics().await);
                (s == successes && f == failures).then_some(())
            })
            .await;
        }
    };

    // Rewriting the file is all it takes.
    let changed = Instant::now();
    sidecar.rewrite_config(&config("observe", "", &ROUTES, ""));
    reloaded(1.0, 0.0).await;
    let picked_up = changed.elapsed();
    assert_eq!(probe_stage(&mut probe).await, "source_tracing");

    // A broken file is refused the same way.
    sidecar.rewrite_config(&config("fix", "", &ROUTES, MISSPELT_RULE));
    reloaded(1.0, 1.0).await;
    assert_eq!(reloads(&sidecar.metrics().await).2, 0.0);
    assert_eq!(probe_stage(&mut probe).await, "source_tracing", "unchanged");
    let error = sidecar
        .wait_for_log("the reload error in the log", |line| {
            line.contains("configuration reload failed")
                .then(|| line.to_string())
        })
        .await;
    assert!(error.contains("rules[0].when.statuz"), "{error}");

    // Fixed: reloaded, and successful again.
    sidecar.rewrite_config(&config("fix", "", &ROUTES, ""));
    reloaded(2.0, 1.0).await;
    assert_eq!(reloads(&sidecar.metrics().await).2, 1.0);
    assert_eq!(probe_stage(&mut probe).await, "completed");

    // The same bytes in a new file (a ConfigMap update touching another key) are no change.
    sidecar.rewrite_config(&config("fix", "", &ROUTES, ""));
    tokio::time::sleep(WATCH_EVERY + Duration::from_millis(500)).await;
    assert_eq!(reloads(&sidecar.metrics().await).0, 2.0, "no reload");
    eprintln!("the watcher picked a change up in {picked_up:?}");
}
