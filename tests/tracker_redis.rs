//! End-to-end tests of the shared task memory: two real sidecar binaries, each in front of its
//! own Python stand-in of the legacy backend, sharing one real `redis-server`, with a client
//! alternating its polls between them. Then Redis is killed, restarted and stopped.
//!
//! The two backend replicas disagree the way real ones do: one runs behind (a lagging
//! worker: `--polls-per-stage 2`), and for one task they even end differently (one fails it,
//! the other completes it). Both stand-ins use the same seed, so the same task id is created
//! on each.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis_server::RedisServer;
use support::{get, post_json, tool, try_get, wait_for, Sidecar, StandIn};

const TRANSITION_RULES: [&str; 4] = [
    "stage_regression",
    "terminal_reopened",
    "terminal_changed",
    "progress_regression",
];

/// Two backend replicas and a sidecar in front of each, all sharing `[tracker]` settings.
struct Replicas {
    sidecars: [Sidecar; 2],
    _standins: [StandIn; 2],
}

// === impl Replicas ===

impl Replicas {
    /// `None` when python3 is missing outside CI.
    async fn start(tracker: &str) -> Option<Replicas> {
        let ahead = StandIn::start(&["--seed", "7", "--polls-per-stage", "1"]).await?;
        let behind = StandIn::start(&["--seed", "7", "--polls-per-stage", "2"]).await?;
        // Fix mode (the default, said here because the tests rely on it).
        let config = format!("mode = \"fix\"\n\n[tracker]\n{tracker}\n");
        let sidecars = [
            Sidecar::start(&ahead.url(), &config).await,
            Sidecar::start(&behind.url(), &config).await,
        ];
        Some(Replicas {
            sidecars,
            _standins: [ahead, behind],
        })
    }

    /// Creates a task on both replicas (through their sidecars): the same id, since the
    /// stand-ins share a seed. A brand with "fail" in it makes a replica fail the task.
    async fn create(&self, brands: [&str; 2]) -> String {
        let mut ids = Vec::new();
        for (sidecar, brand) in self.sidecars.iter().zip(brands) {
            let (status, _, body) = post_json(
                &sidecar.url("/api/perform-brand-test"),
                &format!(r#"{{"brand_list": ["{brand}"]}}"#),
            )
            .await;
            assert_eq!(status, 200);
            let created: Value = serde_json::from_slice(&body).expect("JSON");
            ids.push(created["execution_id"].as_str().expect("id").to_owned());
        }
        assert_eq!(ids[0], ids[1], "the stand-ins create the same ids");
        ids.remove(0)
    }

    /// The transition issues both sidecars counted on `task_status`, per rule.
    async fn transition_issues(&self) -> [f64; 4] {
        let mut totals = [0.0; 4];
        for sidecar in &self.sidecars {
            let metrics = sidecar.metrics().await;
            for (total, rule) in totals.iter_mut().zip(TRANSITION_RULES) {
                *total += metrics.value(
                    "consistency_issues_total",
                    &[("route", "task_status"), ("rule", rule)],
                );
            }
        }
        totals
    }

    async fn store_errors(&self, reason: &str) -> f64 {
        let mut total = 0.0;
        for sidecar in &self.sidecars {
            total += sidecar.metrics().await.value(
                "consistency_tracker_store_errors_total",
                &[("reason", reason)],
            );
        }
        total
    }

    /// Waits until every sidecar's `consistency_tracker_store_up` is `up`.
    async fn wait_store_up(&self, up: f64) {
        for sidecar in &self.sidecars {
            wait_for(&format!("store_up to become {up}"), || async move {
                let scrape = sidecar.metrics().await;
                (scrape.value("consistency_tracker_store_up", &[]) == up).then_some(())
            })
            .await;
        }
    }
}

/// What the client saw of a task in one answer.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: String,
    stage: String,
    progress: f64,
}

// === impl Seen ===

impl Seen {
    fn failing(&self) -> bool {
        self.status == "failed" || self.stage == "failed"
    }
}

/// Polls `task` `rounds` times on each replica, alternating, and returns what the client saw.
async fn alternate(replicas: &Replicas, task: &str, rounds: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..rounds {
        for sidecar in &replicas.sidecars {
            let (status, _, body) = get(&sidecar.url(&format!("/test/status/{task}"))).await;
            assert_eq!(status, 200);
            let record: Value = serde_json::from_slice(&body).expect("a JSON record");
            seen.push(Seen {
                status: record["status"].as_str().expect("status").to_owned(),
                stage: record["stage"].as_str().expect("stage").to_owned(),
                progress: record["progress"].as_f64().expect("progress"),
            });
        }
    }
    seen
}

/// Whether the client ever saw progress move back, other than into a failing record.
fn progress_went_back(seen: &[Seen]) -> Option<(Seen, Seen)> {
    seen.windows(2)
        .find(|w| !w[1].failing() && w[1].progress < w[0].progress)
        .map(|w| (w[0].clone(), w[1].clone()))
}

fn redis_config(server: &RedisServer, extra: &str) -> String {
    format!(
        "store = \"redis\"\nredis_url = \"{}\"\n{extra}",
        server.url()
    )
}

#[tokio::test]
async fn replicas_sharing_redis_catch_what_each_alone_cannot() {
    let Some(redis) = RedisServer::start() else {
        return;
    };

    // Each replica alone (local memory): every backend moves forward, so nothing is caught,
    // and the client sees the replicas disagree.
    let Some(local) = Replicas::start("store = \"local\"").await else {
        return;
    };
    let lagging = local.create(["acme", "acme"]).await;
    let split = local.create(["fail-co", "good-co"]).await;
    let seen_lagging = alternate(&local, &lagging, 10).await;
    alternate(&local, &split, 10).await;
    assert_eq!(local.transition_issues().await, [0.0; 4]);
    assert!(progress_went_back(&seen_lagging).is_some());
    drop(local);

    // The same traffic with the memory shared.
    let shared = Replicas::start(&redis_config(&redis, "timeout = \"2s\"\n"))
        .await
        .expect("started once already");
    shared.wait_store_up(1.0).await;
    let lagging = shared.create(["acme", "acme"]).await;
    let split = shared.create(["fail-co", "good-co"]).await;
    let seen_lagging = alternate(&shared, &lagging, 10).await;
    let seen_split = alternate(&shared, &split, 10).await;
    let [stage, reopened, changed, progress] = shared.transition_issues().await;
    eprintln!(
        "caught across replicas: stage_regression {stage}, terminal_reopened {reopened}, terminal_changed {changed}, progress_regression {progress}"
    );
    assert!(stage > 0.0, "stage_regression");
    assert!(reopened > 0.0, "terminal_reopened");
    assert!(changed > 0.0, "terminal_changed");
    assert!(progress > 0.0, "progress_regression");
    // Fix mode: whichever replica answers, the client never sees progress move back.
    assert_eq!(progress_went_back(&seen_lagging), None, "{seen_lagging:?}");
    assert_eq!(progress_went_back(&seen_split), None, "{seen_split:?}");
    // The task one replica failed and the other completed was reported as such.
    assert!(seen_split.iter().any(|s| s.status == "failed"));
    assert!(seen_split.iter().any(|s| s.status == "completed"));
    assert_eq!(shared.store_errors("connection").await, 0.0);
    assert_eq!(shared.store_errors("timeout").await, 0.0);

    // Either replica's /tasks/{id} reads the shared memory: both tell the same state and times.
    let mut told = Vec::new();
    for sidecar in &shared.sidecars {
        let (status, _, body) = get(&sidecar.admin_url(&format!("/tasks/{split}"))).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let task: Value = serde_json::from_slice(&body).expect("JSON");
        let memory = task["memory"]
            .as_array()
            .expect("memory")
            .iter()
            .find(|m| m["route"] == "task_status")
            .cloned()
            .unwrap_or_else(|| panic!("task_status memory: {task}"));
        assert_eq!(memory["store"], "redis", "{task}");
        told.push((
            memory["last_sent"].clone(),
            memory["first_seen"].clone(),
            memory["last_change"].clone(),
        ));
    }
    assert_eq!(told[0], told[1]);
}

#[tokio::test]
async fn redis_killed_mid_run_fails_no_request_and_tracking_resumes_after_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let config = redis_config(&redis, "timeout = \"500ms\"\nretry_interval = \"200ms\"\n");
    let Some(replicas) = Replicas::start(&config).await else {
        return;
    };
    replicas.wait_store_up(1.0).await;
    let before = replicas.create(["acme", "acme"]).await;
    alternate(&replicas, &before, 3).await;
    let caught_before = replicas.transition_issues().await;
    assert!(caught_before[0] > 0.0, "{caught_before:?}");

    // Redis dies mid-run: every poll is still answered, judged by local memory.
    let task = replicas.create(["acme", "acme"]).await;
    let mut answered = 0;
    for round in 0..20 {
        if round == 5 {
            redis.kill();
        }
        for sidecar in &replicas.sidecars {
            let (status, _, body) = try_get(&sidecar.url(&format!("/test/status/{task}")))
                .await
                .expect("answered");
            assert_eq!(status, 200);
            serde_json::from_slice::<Value>(&body).expect("a JSON record");
            answered += 1;
        }
    }
    assert_eq!(answered, 40);
    assert!(replicas.store_errors("connection").await > 0.0);
    assert!(replicas.store_errors("down").await > 0.0);
    replicas.wait_store_up(0.0).await;
    // Readiness is about the backend, not Redis: the replicas stay in the Service. The status
    // page's data shows the store down and what it left to local memory.
    for sidecar in &replicas.sidecars {
        assert_eq!(get(&sidecar.admin_url("/readyz")).await.0, 200);
        let (_, _, body) = get(&sidecar.admin_url("/report.json")).await;
        let report: serde_json::Value = serde_json::from_slice(&body).expect("report.json");
        assert_eq!(report["tracker"]["store"], "redis");
        assert_eq!(report["tracker"]["store_up"], false);
        assert!(report["tracker"]["store_errors"]["down"].as_u64() > Some(0));
    }

    // Back, empty: the sidecars reconnect on their own, and memory is shared again.
    redis.restart();
    replicas.wait_store_up(1.0).await;
    let after = replicas.create(["acme", "acme"]).await;
    let caught_down = replicas.transition_issues().await;
    alternate(&replicas, &after, 3).await;
    let caught_after = replicas.transition_issues().await;
    // The lagging replica's first step back is caught again: stage and progress.
    assert!(caught_after[0] > caught_down[0], "{caught_after:?}");
    assert!(caught_after[3] > caught_down[3], "{caught_after:?}");
}

#[tokio::test]
async fn a_redis_slower_than_the_timeout_delays_a_response_by_at_most_the_timeout() {
    const TIMEOUT_MS: u64 = 200;
    let Some(_) = tool("kill") else { return };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let config = redis_config(
        &redis,
        &format!("timeout = \"{TIMEOUT_MS}ms\"\nretry_interval = \"300ms\"\n"),
    );
    let Some(replicas) = Replicas::start(&config).await else {
        return;
    };
    replicas.wait_store_up(1.0).await;
    let task = replicas.create(["acme", "acme"]).await;
    let url = replicas.sidecars[0].url(&format!("/test/status/{task}"));
    get(&url).await;

    // Stopped, Redis keeps its connections and answers nothing: 8 polls at once, each must
    // come back within about the timeout.
    redis.signal("STOP");
    let started = Instant::now();
    let polls: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let (status, _, _) = get(&url).await;
                (status, sent.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for poll in polls {
        answers.push(poll.await.expect("poll task"));
    }
    let slowest = answers.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!("Redis stopped: 8 concurrent polls, slowest {slowest:?} (timeout {TIMEOUT_MS}ms)");
    for (status, elapsed) in &answers {
        assert_eq!(*status, 200);
        assert!(
            *elapsed < Duration::from_millis(TIMEOUT_MS + 400),
            "a poll waited {elapsed:?}"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(TIMEOUT_MS - 20));
    // The store is down now: the next polls do not wait at all.
    let sent = Instant::now();
    for _ in 0..5 {
        get(&url).await;
    }
    let five = sent.elapsed();
    eprintln!("then 5 polls in {five:?}");
    assert!(five < Duration::from_millis(TIMEOUT_MS), "{five:?}");
    assert!(replicas.store_errors("timeout").await > 0.0);
    assert!(replicas.store_errors("down").await > 0.0);

    redis.signal("CONT");
    replicas.wait_store_up(1.0).await;
}
