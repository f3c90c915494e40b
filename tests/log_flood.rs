//! The log under a flood of inconsistent answers: bounded by default, exact in the metrics, and
//! every event still there with `RUST_LOG=debug`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use support::*;

/// Needs two fixes under the default rules: `completed_stage` and `completed_progress`.
const INCONSISTENT: &str = r#"{"task_id": "flood-1", "status": "completed", "stage": "ai_fetching", "progress": 90, "is_completed": true}"#;
const RULES: [&str; 2] = ["completed_stage", "completed_progress"];

/// The sidecar binary with its log (stderr) collected line by line; killed on drop.
struct LoggedSidecar {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _config: tempfile::NamedTempFile,
}

impl LoggedSidecar {
    fn start(
        upstream: SocketAddr,
        config: &str,
        rust_log: Option<&str>,
        json: bool,
    ) -> LoggedSidecar {
        let file = tempfile::NamedTempFile::new().expect("temp config");
        std::fs::write(file.path(), config).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"));
        command
            .arg("run")
            .arg("--config")
            .arg(file.path())
            .args(["--upstream", &format!("http://{upstream}")])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        if json {
            command.args(["--log-format", "json"]);
        }
        let mut child = command.spawn().expect("sidecar starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tell, listening) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tell = Some(tell);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(tell) = tell.take() {
                        let _ = tell.send(line.clone());
                    }
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        let line = listening
            .recv_timeout(Duration::from_secs(15))
            .expect("sidecar listens");
        let addr = |key: &str| -> SocketAddr {
            line.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                .find_map(|word| word.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} address in {line:?}"))
        };
        let (proxy, admin) = if json {
            let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
            let field = |key: &str| -> SocketAddr {
                event[key]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {line}"))
            };
            (field("proxy"), field("admin"))
        } else {
            (addr("proxy="), addr("admin="))
        };
        LoggedSidecar {
            child,
            proxy,
            admin,
            log,
            _config: file,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for LoggedSidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
                let client = client_keep_alive();
                while Instant::now() < deadline && answered.load(Ordering::Relaxed) < count {
                    let response = client
                        .request(
                            Request::get(format!("http://{proxy}/test/status/flood-1"))
                                .body(empty())
                                .expect("request"),
                        )
                        .await
                        .expect("answer");
                    assert_eq!(response.status(), StatusCode::OK);
                    let body = http_body_util::BodyExt::collect(response.into_body())
                        .await
                        .expect("body")
                        .to_bytes();
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

fn client_keep_alive(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn issues_counted(admin: SocketAddr, rule: &str) -> f64 {
    let (_, _, body) = get(&format!("http://{admin}/metrics")).await;
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    sample(
        &text,
        &format!(
            "consistency_issues_total{{level=\"minor_issue\",route=\"task_status\",rule=\"{rule}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_inconsistent_answers_logs_a_few_lines_and_counts_every_issue() {
    let upstream = inconsistent_upstream().await;
    // The default configuration and the default log filter.
    let sidecar = LoggedSidecar::start(upstream.addr, "", None, false);
    let started = Instant::now();
    let answered = flood(sidecar.proxy, 4, 20_000, Duration::from_secs(3)).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        answered >= 200,
        "only {answered} answers: the flood did not flood"
    );
    for rule in RULES {
        assert_eq!(
            issues_counted(sidecar.admin, rule).await,
            answered as f64,
            "{rule}"
        );
    }
    let lines = sidecar.lines();
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
    let sidecar = LoggedSidecar::start(upstream.addr, config, None, true);
    let answered = flood(sidecar.proxy, 2, 3_000, Duration::from_millis(2500)).await;
    // The upkeep logs a window's summary within a second of its end.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events: Vec<serde_json::Value> = sidecar
        .lines()
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
    let sidecar = LoggedSidecar::start(upstream.addr, "", Some("debug"), true);
    let answered = flood(sidecar.proxy, 1, 40, Duration::from_secs(10)).await;
    assert_eq!(answered, 40);
    let lines = sidecar.lines();
    for rule in RULES {
        let debug_events = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["level"] == "DEBUG" && e["message"] == "consistency issue" && e["rule"] == rule
            })
            .count();
        assert_eq!(debug_events, answered, "{rule}");
    }
}
