//! Unit tests for the task memory: each transition rule, eviction by capacity and by TTL, many
//! threads polling many tasks at once, and the shared store on a real `redis-server`.
//!
//! The rules' suite runs against both stores (`local::*` and `redis::*`, see
//! [`both_stores!`]); the Redis tests start a `redis-server` of their own on a free loopback
//! port and fail in CI without one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;
use prometheus::Registry;

use crate::config::{Config, TrackerConfig, TrackerStore};
use crate::engine::{
    Field, Level, ModelConfig, RecordState, RuleMode, TransitionFinding, TransitionJudge,
    TransitionKind,
};
use crate::settings::Settings;

#[path = "../../tests/support/tool.rs"]
mod tool;
// The integration tests use more of it.
#[allow(dead_code)]
#[path = "../../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

mod agreement;
mod stall;

fn state(status: &str, stage: &str, progress: f64) -> RecordState {
    RecordState {
        status: Some(status.into()),
        stage: Some(stage.into()),
        progress: Some(progress),
        is_completed: Some(status == "completed"),
    }
}

/// The shipped defaults.
fn default_tracker() -> TrackerConfig {
    Config::default().tracker
}

fn default_model() -> ModelConfig {
    Config::default().model
}

fn tracker() -> TaskTracker {
    TaskTracker::new(&default_tracker(), &default_model())
}

fn tracker_with(capacity: usize, ttl: Duration) -> TaskTracker {
    let config = TrackerConfig {
        capacity,
        ttl,
        ..default_tracker()
    };
    TaskTracker::new(&config, &default_model())
}

/// One poll as the engine makes it: judge, then remember what was sent (here: as received).
fn poll(tracker: &TaskTracker, route: u16, id: &str, s: &RecordState) -> Vec<TransitionFinding> {
    let mut memory = tracker.judge_for(route);
    let findings = memory.judge(id, s);
    memory.remember(id, s);
    findings
}

fn rules(findings: &[TransitionFinding]) -> Vec<&str> {
    findings.iter().map(|f| &*f.rule).collect()
}

// === the suite of both stores ===

/// Which store a test of the shared suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Redis,
}

/// Generates `local::NAME` and `redis::NAME` for each `async fn NAME(kind: Kind)`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Kind::Local).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    if super::tool::tool("redis-server").is_some() {
                        super::$name(super::Kind::Redis).await;
                    }
                }
            )*
        }
    };
}

/// A task memory under test. With [`Kind::Redis`], two replicas on a `redis-server` of their
/// own, taking the polls in turn: each replica's local memory sees only half of them, so only
/// the shared memory can give the answers the local store gives.
struct Memory {
    replicas: Vec<Replica>,
    turn: AtomicUsize,
    /// Declared last, so dropped last: the server outlives the replicas' connections.
    redis: Option<RedisServer>,
    ids: AtomicUsize,
}

impl Memory {
    /// The suite's memory. With Redis, the timeout is generous, so that a loaded machine
    /// never sends a poll to the fallback: the suite proves the Redis path.
    fn new(kind: Kind, tracker: TrackerConfig) -> Memory {
        let redis = (kind == Kind::Redis)
            .then(|| RedisServer::start().expect("the test checked for redis-server"));
        let tracker = TrackerConfig {
            timeout: Duration::from_secs(5),
            ..tracker
        };
        Memory::with(
            Config {
                tracker,
                ..Config::default()
            },
            redis,
        )
    }

    /// Replicas of `config` on `redis`, or one local replica without.
    fn with(mut config: Config, redis: Option<RedisServer>) -> Memory {
        if let Some(server) = &redis {
            config.tracker.store = TrackerStore::Redis;
            config.tracker.redis_url = server.url();
        }
        let replicas = if redis.is_some() { 2 } else { 1 };
        let settings = Settings::compile(config).expect("test config is valid");
        Memory {
            replicas: (0..replicas).map(|_| Replica::new(&settings)).collect(),
            turn: AtomicUsize::new(0),
            redis,
            ids: AtomicUsize::new(0),
        }
    }

    /// The replica whose turn it is.
    fn next(&self) -> &Replica {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.replicas[turn % self.replicas.len()]
    }

    /// One response of `route` with one record: judged as `judged`, sent as `sent`.
    ///
    /// With Redis, it must have been judged there, not by the fallback; and the judge
    /// script's value must be what the engine's memory became, so that no correction was
    /// needed, unless a fix was proposed and not applied (`sent` is as judged).
    async fn exchange(
        &self,
        route: usize,
        id: &str,
        judged: &RecordState,
        sent: &RecordState,
    ) -> Vec<TransitionFinding> {
        let replica = self.next();
        let corrected = replica.corrected();
        let findings = replica
            .judged(route, |judge| {
                let findings = judge.judge(id, judged);
                judge.remember(id, sent);
                findings
            })
            .await;
        assert_eq!(self.store_errors(), 0, "a poll fell back to local memory");
        let vetoed = judged == sent && findings.iter().any(|f| f.fix.is_some());
        assert_eq!(
            replica.corrected() - corrected,
            u64::from(vetoed && self.redis.is_some()),
            "the judge script's value differs from the engine's memory"
        );
        findings
    }

    /// One poll: judged, then remembered as received.
    async fn poll(&self, route: usize, id: &str, s: &RecordState) -> Vec<TransitionFinding> {
        self.exchange(route, id, s, s).await
    }

    /// Judges `after` against a task of its own last sent as `before`.
    async fn transition(
        &self,
        before: &RecordState,
        after: &RecordState,
    ) -> Vec<TransitionFinding> {
        let id = format!("t{}", self.ids.fetch_add(1, Ordering::Relaxed));
        assert!(self.poll(0, &id, before).await.is_empty());
        self.poll(0, &id, after).await
    }

    /// Tasks remembered: by the local memory, or as keys in Redis.
    async fn tracked(&self) -> usize {
        match &self.redis {
            None => self.replicas[0].memory.local().tracked(),
            Some(server) => task_keys(server).await.len(),
        }
    }

    fn store_errors(&self) -> u64 {
        self.replicas.iter().map(Replica::store_errors).sum()
    }
}

/// One sidecar's task memory, with its view of the configured routes and its metrics.
struct Replica {
    memory: TaskMemory,
    routes: Vec<Option<MemoryRoute>>,
    registry: Registry,
}

impl Replica {
    fn new(settings: &Settings) -> Replica {
        let registry = Registry::new();
        let metrics = StoreMetrics::register(&registry).expect("register");
        let memory = TaskMemory::new(settings, metrics);
        let routes = memory.configure(settings);
        Replica {
            memory,
            routes,
            registry,
        }
    }

    /// Runs `run` with the judge of configured route `route` (a tracked one).
    async fn judged<R>(&self, route: usize, run: impl FnMut(&mut dyn TransitionJudge) -> R) -> R {
        let route = self.routes[route].as_ref().expect("a tracked route");
        self.memory.judged(route, run).await
    }

    fn corrected(&self) -> u64 {
        self.memory.corrected()
    }

    fn store_errors(&self) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|family| family.name() == "consistency_tracker_store_errors_total")
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().value() as u64)
            .sum()
    }
}

both_stores!(
    a_task_moving_forward_finds_nothing,
    the_first_poll_of_a_task_finds_nothing,
    stage_regression_fires_without_fix_by_default,
    stage_regression_holds_the_last_stage_when_configured,
    stage_regression_does_not_fire_on_same_or_later_stage_or_unknown,
    failing_from_any_stage_is_not_a_stage_regression,
    leaving_the_failed_stage_for_a_working_stage_is_a_stage_regression,
    terminal_reopened_fires_when_a_completed_task_runs_again,
    terminal_reopened_fires_for_a_failed_task,
    a_reopened_task_also_reports_what_else_went_back,
    terminal_rules_do_not_fire_before_terminal_or_on_unknown_status,
    terminal_changed_fires_both_ways,
    progress_regression_fixes_to_the_last_progress_sent,
    progress_regression_does_not_fire_on_equal_higher_or_absent_progress,
    a_task_that_fails_legitimately_drops_to_zero_without_progress_regression,
    memory_holds_the_last_known_value_of_a_field_a_record_lacked,
    memory_stores_what_was_sent_not_what_was_judged,
    a_fix_the_engine_did_not_apply_is_not_remembered,
    a_task_seen_twice_in_one_response_is_judged_in_record_order,
    disabled_rules_and_configured_levels_are_honoured,
    rule_names_are_shared_not_allocated_per_finding,
    the_same_task_id_on_two_routes_is_two_tasks,
    a_task_not_seen_for_the_ttl_starts_afresh,
);

#[test]
fn rules_are_indexed_like_transition_kind_all() {
    for (i, kind) in TransitionKind::ALL.into_iter().enumerate() {
        assert_eq!(kind as usize, i);
    }
}

async fn a_task_moving_forward_finds_nothing(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let flow = [
        state("pending", "init", 0.0),
        state("running", "ai_fetching", 20.0),
        state("running", "ai_fetching", 20.0),
        state("running", "ranking_analysis", 50.0),
        state("running", "source_tracing", 80.0),
        state("completed", "completed", 100.0),
        state("completed", "completed", 100.0),
    ];
    for s in &flow {
        assert_eq!(t.poll(0, "t1", s).await, Vec::new(), "{s:?}");
    }
    assert_eq!(t.tracked().await, 1);
}

async fn the_first_poll_of_a_task_finds_nothing(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    assert!(t
        .poll(0, "t1", &state("completed", "completed", 100.0))
        .await
        .is_empty());
    assert!(t
        .poll(0, "t2", &state("running", "init", 0.0))
        .await
        .is_empty());
}

async fn stage_regression_fires_without_fix_by_default(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("running", "ranking_analysis", 50.0),
            &state("running", "ai_fetching", 50.0),
        )
        .await;
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "stage_regression".into(),
            level: Level::MajorIssue,
            message:
                "stage ranking_analysis → ai_fetching: earlier in the flow than the last one sent"
                    .into(),
            fix: None,
            shadow: false,
        }]
    );
}

async fn stage_regression_holds_the_last_stage_when_configured(kind: Kind) {
    let mut config = default_tracker();
    config.rules.stage_regression.fix = true;
    let t = Memory::new(kind, config);
    t.poll(0, "t1", &state("running", "source_tracing", 60.0))
        .await;
    let findings = t.poll(0, "t1", &state("running", "init", 60.0)).await;
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert_eq!(
        findings[0].fix,
        Some((Field::Stage, json!("source_tracing")))
    );
}

async fn stage_regression_does_not_fire_on_same_or_later_stage_or_unknown(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let before = state("running", "ranking_analysis", 50.0);
    assert!(t
        .transition(&before, &state("running", "ranking_analysis", 50.0))
        .await
        .is_empty());
    assert!(t
        .transition(&before, &state("running", "source_tracing", 50.0))
        .await
        .is_empty());
    // Outside the model: the single-record rules report it; there is no position to compare.
    assert!(t
        .transition(&before, &state("running", "warming_up", 50.0))
        .await
        .is_empty());
    let absent = RecordState {
        stage: None,
        ..state("running", "x", 50.0)
    };
    assert!(t.transition(&before, &absent).await.is_empty());
}

async fn failing_from_any_stage_is_not_a_stage_regression(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    for stage in ["init", "ai_fetching", "source_tracing", "completed"] {
        let findings = t
            .transition(
                &state("running", stage, 40.0),
                &state("failed", "failed", 0.0),
            )
            .await;
        assert!(findings.is_empty(), "{stage}: {findings:?}");
    }
}

async fn leaving_the_failed_stage_for_a_working_stage_is_a_stage_regression(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("failed", "failed", 0.0),
            &state("failed", "init", 0.0),
        )
        .await;
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert_eq!(
        findings[0].message,
        "stage failed → init: earlier in the flow than the last one sent"
    );
}

async fn terminal_reopened_fires_when_a_completed_task_runs_again(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("completed", "completed", 100.0),
            &state("running", "completed", 100.0),
        )
        .await;
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "terminal_reopened".into(),
            level: Level::Critical,
            message: "status completed → running after the task was sent as completed".into(),
            fix: None,
            shadow: false,
        }]
    );
}

async fn terminal_reopened_fires_for_a_failed_task(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "t1", &state("failed", "failed", 0.0)).await;
    let findings = t.poll(0, "t1", &state("pending", "failed", 0.0)).await;
    assert_eq!(rules(&findings), ["terminal_reopened"]);
    assert_eq!(findings[0].fix, None);
}

/// Local only: the configuration refuses this fix, so only a tracker built by hand can ask.
#[test]
fn terminal_reopened_has_no_fix_even_if_asked() {
    let mut config = default_tracker();
    config.rules.terminal_reopened.fix = true;
    let t = TaskTracker::new(&config, &default_model());
    poll(&t, 0, "t1", &state("failed", "failed", 0.0));
    let findings = poll(&t, 0, "t1", &state("pending", "failed", 0.0));
    assert_eq!(rules(&findings), ["terminal_reopened"]);
    assert_eq!(findings[0].fix, None);
}

async fn a_reopened_task_also_reports_what_else_went_back(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("completed", "completed", 100.0),
            &state("running", "source_tracing", 80.0),
        )
        .await;
    assert_eq!(
        rules(&findings),
        [
            "stage_regression",
            "terminal_reopened",
            "progress_regression"
        ]
    );
}

async fn terminal_rules_do_not_fire_before_terminal_or_on_unknown_status(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    assert!(t
        .transition(
            &state("running", "init", 0.0),
            &state("pending", "init", 0.0)
        )
        .await
        .is_empty());
    let done = state("completed", "completed", 100.0);
    assert!(t
        .transition(&done, &state("completed", "completed", 100.0))
        .await
        .is_empty());
    // An unknown or absent status says nothing about being terminal: no finding here.
    assert!(t
        .transition(&done, &state("done", "completed", 100.0))
        .await
        .is_empty());
    let absent = RecordState {
        status: None,
        ..done.clone()
    };
    assert!(t.transition(&done, &absent).await.is_empty());
}

async fn terminal_changed_fires_both_ways(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("completed", "completed", 100.0),
            &state("failed", "failed", 0.0),
        )
        .await;
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "terminal_changed".into(),
            level: Level::Critical,
            message: "status completed → failed after the task was sent as completed".into(),
            fix: None,
            shadow: false,
        }]
    );
    let findings = t
        .transition(
            &state("failed", "failed", 0.0),
            &state("completed", "completed", 100.0),
        )
        .await;
    assert_eq!(rules(&findings), ["terminal_changed"]);
    assert_eq!(
        findings[0].message,
        "status failed → completed after the task was sent as failed"
    );
}

async fn progress_regression_fixes_to_the_last_progress_sent(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("running", "ai_fetching", 60.0),
            &state("running", "ai_fetching", 40.0),
        )
        .await;
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "progress_regression".into(),
            level: Level::MinorIssue,
            message: "progress 60 → 40: lower than the last one sent".into(),
            fix: Some((Field::Progress, json!(60))),
            shadow: false,
        }]
    );
    let findings = t
        .transition(
            &state("running", "ai_fetching", 62.5),
            &state("running", "ai_fetching", 40.0),
        )
        .await;
    assert_eq!(findings[0].fix, Some((Field::Progress, json!(62.5))));
}

async fn progress_regression_does_not_fire_on_equal_higher_or_absent_progress(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let before = state("running", "ai_fetching", 60.0);
    assert!(t
        .transition(&before, &state("running", "ai_fetching", 60.0))
        .await
        .is_empty());
    assert!(t
        .transition(&before, &state("running", "ai_fetching", 61.0))
        .await
        .is_empty());
    let absent = RecordState {
        progress: None,
        ..before.clone()
    };
    assert!(t.transition(&before, &absent).await.is_empty());
}

async fn a_task_that_fails_legitimately_drops_to_zero_without_progress_regression(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    let findings = t
        .transition(
            &state("running", "source_tracing", 80.0),
            &state("failed", "failed", 0.0),
        )
        .await;
    assert!(findings.is_empty(), "{findings:?}");
    // A failed stage under an unknown status fails too.
    let findings = t
        .transition(
            &state("running", "source_tracing", 80.0),
            &state("aborted", "failed", 0.0),
        )
        .await;
    assert!(findings.is_empty(), "{findings:?}");
}

async fn memory_holds_the_last_known_value_of_a_field_a_record_lacked(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "t1", &state("running", "ai_fetching", 60.0))
        .await;
    let no_progress = RecordState {
        progress: None,
        ..state("running", "ai_fetching", 0.0)
    };
    assert!(t.poll(0, "t1", &no_progress).await.is_empty());
    let findings = t
        .poll(0, "t1", &state("running", "ai_fetching", 50.0))
        .await;
    assert_eq!(rules(&findings), ["progress_regression"]);
}

async fn memory_stores_what_was_sent_not_what_was_judged(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "t1", &state("running", "ai_fetching", 60.0))
        .await;
    let received = state("running", "ai_fetching", 40.0);
    // The engine applied the fix and sent 60.
    let sent = state("running", "ai_fetching", 60.0);
    let findings = t.exchange(0, "t1", &received, &sent).await;
    assert_eq!(rules(&findings), ["progress_regression"]);
    assert!(t
        .poll(0, "t1", &state("running", "ai_fetching", 60.0))
        .await
        .is_empty());
    // 60 is what the client saw last: 55 goes back.
    let findings = t
        .poll(0, "t1", &state("running", "ai_fetching", 55.0))
        .await;
    assert_eq!(rules(&findings), ["progress_regression"]);
}

async fn a_fix_the_engine_did_not_apply_is_not_remembered(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "t1", &state("running", "ai_fetching", 60.0))
        .await;
    // A single-record rule vetoed the fix: 40 went out. (Redis predicted 60 and must learn 40.)
    let received = state("running", "ai_fetching", 40.0);
    let findings = t.exchange(0, "t1", &received, &received).await;
    assert_eq!(rules(&findings), ["progress_regression"]);
    assert!(t
        .poll(0, "t1", &state("running", "ai_fetching", 45.0))
        .await
        .is_empty());
    let findings = t
        .poll(0, "t1", &state("running", "ai_fetching", 42.0))
        .await;
    assert_eq!(rules(&findings), ["progress_regression"]);
}

async fn a_task_seen_twice_in_one_response_is_judged_in_record_order(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "t1", &state("running", "ai_fetching", 30.0))
        .await;
    let records = [
        state("running", "ranking_analysis", 50.0),
        state("running", "ai_fetching", 40.0),
    ];
    // The second record goes back from the first: stage and progress.
    let replica = t.next();
    let findings = replica
        .judged(0, |judge| {
            records
                .iter()
                .map(|record| {
                    let found = rules(&judge.judge("t1", record))
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>();
                    judge.remember("t1", record);
                    found
                })
                .collect::<Vec<_>>()
        })
        .await;
    assert_eq!(
        findings,
        [
            vec![],
            vec!["stage_regression".to_string(), "progress_regression".into()]
        ]
    );
    // Sent unfixed: with Redis, the script's prediction of a held progress is corrected.
    assert_eq!(replica.corrected(), u64::from(kind == Kind::Redis));
    // The memory holds the last record sent.
    assert_eq!(
        rules(&t.poll(0, "t1", &state("running", "init", 45.0)).await),
        ["stage_regression"]
    );
}

async fn a_task_not_seen_for_the_ttl_starts_afresh(kind: Kind) {
    // Real time, as Redis expires keys by its own clock; margins of 0.8 s either side.
    let config = TrackerConfig {
        ttl: Duration::from_secs(2),
        abandon_after: Duration::from_secs(1),
        ..default_tracker()
    };
    let t = Memory::new(kind, config);
    let done = state("completed", "completed", 100.0);
    let back = state("running", "init", 0.0);
    t.poll(0, "old", &done).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    t.poll(0, "young", &done).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // "old" was last seen 2.4 s ago: forgotten; "young" 1.2 s ago: remembered.
    assert!(t.poll(0, "old", &back).await.is_empty());
    assert_eq!(t.poll(0, "young", &back).await.len(), 3);
}

async fn disabled_rules_and_configured_levels_are_honoured(kind: Kind) {
    let mut config = default_tracker();
    config.rules.progress_regression.enabled = false;
    config.rules.stage_regression.level = Level::Critical;
    let t = Memory::new(kind, config);
    t.poll(0, "t1", &state("running", "source_tracing", 80.0))
        .await;
    let findings = t.poll(0, "t1", &state("running", "init", 10.0)).await;
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert_eq!(findings[0].level, Level::Critical);
}

async fn rule_names_are_shared_not_allocated_per_finding(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "a", &state("running", "ai_fetching", 60.0)).await;
    t.poll(0, "b", &state("running", "ai_fetching", 60.0)).await;
    let a = t.poll(0, "a", &state("running", "ai_fetching", 10.0)).await;
    // Names are shared within a process: with two replicas taking turns, a poll in between
    // brings "b" to the replica that judged "a".
    t.poll(0, "c", &state("running", "ai_fetching", 10.0)).await;
    let b = t.poll(0, "b", &state("running", "ai_fetching", 10.0)).await;
    assert!(std::sync::Arc::ptr_eq(&a[0].rule, &b[0].rule));
}

#[test]
fn rules_in_shadow_propose_their_fix_marked_as_shadow() {
    let (mut config, model) = (default_tracker(), default_model());
    config.rules.progress_regression.mode = RuleMode::Shadow;
    config.rules.terminal_reopened.mode = RuleMode::Shadow;
    let t = TaskTracker::new(&config, &model);
    poll(&t, 0, "t1", &state("running", "source_tracing", 80.0));
    let findings = poll(&t, 0, "t1", &state("running", "source_tracing", 70.0));
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "progress_regression".into(),
            level: Level::MinorIssue,
            message: "progress 80 → 70: lower than the last one sent".into(),
            fix: Some((Field::Progress, json!(80))),
            shadow: true,
        }]
    );
    // A rule with no fix in shadow: reported, marked.
    poll(&t, 0, "t2", &state("completed", "completed", 100.0));
    let findings = poll(&t, 0, "t2", &state("running", "completed", 100.0));
    assert_eq!(rules(&findings), ["terminal_reopened"]);
    assert!(findings[0].shadow && findings[0].fix.is_none());
    // The others stay in fix mode.
    poll(&t, 0, "t3", &state("running", "source_tracing", 80.0));
    let findings = poll(&t, 0, "t3", &state("running", "init", 80.0));
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert!(!findings[0].shadow);
}

async fn the_same_task_id_on_two_routes_is_two_tasks(kind: Kind) {
    let t = Memory::new(kind, default_tracker());
    t.poll(0, "t1", &state("completed", "completed", 100.0))
        .await;
    assert!(t
        .poll(1, "t1", &state("running", "init", 0.0))
        .await
        .is_empty());
    assert_eq!(t.tracked().await, 2);
    assert_eq!(
        rules(&t.poll(0, "t1", &state("running", "init", 0.0)).await),
        [
            "stage_regression",
            "terminal_reopened",
            "progress_regression"
        ]
    );
}

#[test]
fn capacity_evicts_the_least_recently_seen_task() {
    let t = tracker_with(3, Duration::from_secs(3600));
    assert_eq!(t.shard_count(), 1);
    let s = state("running", "source_tracing", 80.0);
    for id in ["a", "b", "c"] {
        poll(&t, 0, id, &s);
    }
    // Seeing "a" again makes "b" the least recently seen.
    poll(&t, 0, "a", &s);
    poll(&t, 0, "d", &s);
    assert_eq!(
        t.remembered(),
        [(0, "d".into()), (0, "a".into()), (0, "c".into())]
    );
    assert_eq!(t.tracked(), 3);
    assert_eq!(t.evictions(EvictionReason::Capacity), 1);
    assert_eq!(t.evictions(EvictionReason::Ttl), 0);

    // Judging alone does not count as seen: "c" is still next out.
    let back = state("running", "init", 10.0);
    assert_eq!(t.judge_for(0).judge("c", &back).len(), 2);
    // "b" was forgotten: its regression is unseen, and it comes back as a new task, evicting "c".
    assert!(poll(&t, 0, "b", &back).is_empty());
    assert_eq!(
        t.remembered(),
        [(0, "b".into()), (0, "d".into()), (0, "a".into())]
    );
    assert_eq!(t.evictions(EvictionReason::Capacity), 2);
    assert_eq!(poll(&t, 0, "a", &back).len(), 2);
}

#[test]
fn capacity_is_global_across_shards() {
    let capacity = 32 * 1024;
    let t = tracker_with(capacity, Duration::from_secs(3600));
    assert_eq!(t.shard_count(), 32);
    let s = state("running", "init", 0.0);
    for i in 0..capacity {
        poll(&t, 0, &format!("old-{i}"), &s);
    }
    // Exactly `capacity` tasks fit, however unevenly the hash spreads them.
    assert_eq!(t.tracked(), capacity);
    assert_eq!(t.evictions(EvictionReason::Capacity), 0);

    for i in 0..capacity {
        poll(&t, 0, &format!("new-{i}"), &s);
    }
    assert_eq!(t.tracked(), capacity);
    assert_eq!(t.remembered().len(), capacity);
    assert_eq!(t.evictions(EvictionReason::Capacity), capacity as u64);
    // Each new task displaced the oldest of its shard: nearly all of the old ones are gone
    // (about 1 % survive, in shards that drew fewer new tasks than they held; 5 % is ~40σ).
    let old_left = t
        .remembered()
        .iter()
        .filter(|(_, id)| id.starts_with("old-"))
        .count();
    assert!(old_left < capacity / 20, "{old_left} old tasks left");
}

#[test]
fn shard_counts_follow_capacity() {
    for (capacity, shards) in [
        (1, 1),
        (2047, 1),
        (2048, 2),
        (5000, 4),
        (100_000, 32),
        (10_000_000, 32),
    ] {
        assert_eq!(
            tracker_with(capacity, Duration::from_secs(1)).shard_count(),
            shards,
            "{capacity}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn ttl_forgets_a_task_not_seen_for_that_long() {
    let t = tracker_with(100, Duration::from_secs(60));
    let s = state("running", "source_tracing", 80.0);
    let back = state("running", "init", 10.0);
    poll(&t, 0, "old", &s);
    tokio::time::advance(Duration::from_secs(30)).await;
    poll(&t, 0, "young", &s);
    tokio::time::advance(Duration::from_millis(29_999)).await;
    // 59.999 s after "old" was seen: still remembered.
    assert_eq!(t.judge_for(0).judge("old", &back).len(), 2);
    tokio::time::advance(Duration::from_millis(1)).await;
    // 60 s: forgotten, even before any sweep.
    assert!(t.judge_for(0).judge("old", &back).is_empty());
    assert_eq!(t.tracked(), 2);
    assert_eq!(t.purge_expired(), 1);
    assert_eq!(t.remembered(), [(0, "young".into())]);
    assert_eq!(t.tracked(), 1);
    assert_eq!(t.evictions(EvictionReason::Ttl), 1);
    assert_eq!(t.evictions(EvictionReason::Capacity), 0);
    assert_eq!(poll(&t, 0, "young", &back).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn ttl_expiry_is_swept_by_writes_and_a_returning_task_starts_afresh() {
    let t = tracker_with(100, Duration::from_secs(60));
    let s = state("completed", "completed", 100.0);
    poll(&t, 0, "a", &s);
    poll(&t, 0, "b", &s);
    tokio::time::advance(Duration::from_secs(61)).await;
    // Writing "c" sweeps "a" and "b" from the old end of the shard.
    poll(&t, 0, "c", &s);
    assert_eq!(t.remembered(), [(0, "c".into())]);
    assert_eq!(t.evictions(EvictionReason::Ttl), 2);
    // "a" returns as a new task: a reopen after the TTL is not judged.
    assert!(poll(&t, 0, "a", &state("running", "init", 0.0)).is_empty());
    assert_eq!(t.tracked(), 2);
}

#[test]
fn many_threads_polling_many_tasks_find_exactly_the_injected_regressions() {
    const THREADS: usize = 8;
    const TASKS: usize = 500;
    const POLLS: usize = 5;

    // Poll k of a clean task; task `i` gets one of five scripts by `i % 5`.
    fn script(i: usize, k: usize) -> RecordState {
        let clean = [
            state("pending", "init", 0.0),
            state("running", "ai_fetching", 25.0),
            state("running", "ranking_analysis", 50.0),
            state("running", "source_tracing", 75.0),
            state("completed", "completed", 100.0),
        ];
        match (i % 5, k) {
            // progress_regression: 25 → 10.
            (1, 2) => state("running", "ranking_analysis", 10.0),
            // stage_regression: ranking_analysis → ai_fetching.
            (2, 3) => state("running", "ai_fetching", 75.0),
            // Completed early, then reopened: stage, terminal_reopened and progress at once.
            (3, 3) => state("completed", "completed", 100.0),
            (3, 4) => state("running", "source_tracing", 75.0),
            // Fails legitimately (no finding), then claims success: terminal_changed.
            (4, 3) => state("failed", "failed", 0.0),
            _ => clean[k].clone(),
        }
    }

    let t = std::sync::Arc::new(tracker());
    let counts: Vec<BTreeMap<String, usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let t = std::sync::Arc::clone(&t);
                scope.spawn(move || {
                    let mut counts = BTreeMap::new();
                    // Round-robin over the thread's tasks, so all threads hit all shards at once.
                    for k in 0..POLLS {
                        for i in 0..TASKS {
                            let id = format!("{thread}-{i}");
                            for f in poll(&t, 1, &id, &script(i, k)) {
                                *counts.entry(f.rule.to_string()).or_default() += 1;
                            }
                        }
                    }
                    counts
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("poller panicked"))
            .collect()
    });

    let mut total = BTreeMap::new();
    for per_thread in &counts {
        // Each thread: 100 tasks per script.
        assert_eq!(
            per_thread,
            &BTreeMap::from([
                ("progress_regression".to_string(), 200),
                ("stage_regression".to_string(), 200),
                ("terminal_changed".to_string(), 100),
                ("terminal_reopened".to_string(), 100),
            ])
        );
        for (rule, n) in per_thread {
            *total.entry(rule.clone()).or_insert(0) += n;
        }
    }
    assert_eq!(total.values().sum::<usize>(), 4800);
    assert_eq!(t.tracked(), THREADS * TASKS);
    assert_eq!(t.evictions(EvictionReason::Capacity), 0);
}

#[test]
fn a_hash_collision_forgets_the_other_task_instead_of_mixing_them() {
    use super::shard::{Changes, Clock, Key, Shard};
    use super::transition::{Snapshot, UNKNOWN};

    let clock = Clock {
        now_ms: 0,
        ttl_ms: 1000,
    };
    let rehash = |_: u16, _: &str| 7;
    let limits = super::stall::StallLimits::new(&default_tracker(), &default_model());
    let at = |progress| Snapshot {
        progress,
        ..Snapshot::EMPTY
    };
    let key = |id| Key {
        hash: 7,
        route: 0,
        id,
    };
    let mut shard = Shard::new();
    // Two different tasks forced onto one hash.
    let first = shard.put(key("a"), at(80.0), clock, &limits, || true, rehash);
    assert_eq!(first, Changes::default());
    assert_eq!(shard.get(key("b"), clock), None);
    let second = shard.put(
        key("b"),
        at(10.0),
        clock,
        &limits,
        || unreachable!("not a new entry"),
        rehash,
    );
    assert_eq!(second, Changes::default());
    assert_eq!(shard.get(key("a"), clock), None);
    assert_eq!(
        shard.get(key("b"), clock),
        Some(Snapshot {
            stage: UNKNOWN,
            status: UNKNOWN,
            progress: 10.0
        })
    );
    assert_eq!(shard.len(), 1);
}

#[test]
fn a_full_tracker_displaces_within_the_shard_and_an_empty_shard_overshoots_by_one() {
    use super::shard::{Changes, Clock, Key, Shard};
    use super::transition::Snapshot;

    let clock = Clock {
        now_ms: 0,
        ttl_ms: 1000,
    };
    let key = |hash, id| Key { hash, route: 0, id };
    let rehash = |_: u16, id: &str| if id == "a" { 1 } else { 2 };
    let limits = super::stall::StallLimits::new(&default_tracker(), &default_model());
    let mut shard = Shard::new();
    // Refused room with nothing to displace: added anyway, and counted by the shard.
    let first = shard.put(
        key(1, "a"),
        Snapshot::EMPTY,
        clock,
        &limits,
        || false,
        rehash,
    );
    assert_eq!(
        first,
        Changes {
            added: 1,
            ..Changes::default()
        }
    );
    // Refused room again: "b" displaces "a".
    let second = shard.put(
        key(2, "b"),
        Snapshot::EMPTY,
        clock,
        &limits,
        || false,
        rehash,
    );
    assert_eq!(
        second,
        Changes {
            evicted_capacity: 1,
            ..Changes::default()
        }
    );
    assert_eq!(shard.ids(), [(0, "b".to_string())]);
    assert_eq!(shard.get(key(1, "a"), clock), None);
}

#[test]
fn the_tracker_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<TaskTracker>();
    shared::<std::sync::Arc<TaskTracker>>();
}

// === the shared store only ===

/// A client of `server`, for looking at what the store wrote.
async fn connect(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(server.url())
        .expect("server URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis-server")
}

/// The keys of remembered tasks (`<prefix><route>:<model>:<id>`), sorted.
async fn task_keys(server: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("consistency:*:*:*")
        .query_async(&mut connect(server).await)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// Two replicas sharing a `redis-server` of their own, or `None` outside CI without one.
fn shared(tweak: impl FnOnce(&mut Config)) -> Option<Memory> {
    tool::tool("redis-server")?;
    let mut config = Config::default();
    config.tracker.timeout = Duration::from_secs(5);
    tweak(&mut config);
    let server = RedisServer::start()?;
    Some(Memory::with(config, Some(server)))
}

/// What the engine does with a record: judges it, applies the fixes proposed, and remembers
/// what it sends.
fn send(
    judge: &mut dyn TransitionJudge,
    id: &str,
    received: &RecordState,
) -> Vec<TransitionFinding> {
    let findings = judge.judge(id, received);
    let mut sent = received.clone();
    for finding in &findings {
        match &finding.fix {
            Some((Field::Progress, value)) => sent.progress = value.as_f64(),
            Some((Field::Stage, value)) => sent.stage = value.as_str().map(str::to_owned),
            _ => {}
        }
    }
    judge.remember(id, &sent);
    findings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_to_a_terminal_status_never_both_win() {
    let Some(t) = shared(|_| {}) else { return };
    let (a, b) = (&t.replicas[0], &t.replicas[1]);
    for trial in 0..200 {
        let id = format!("race-{trial}");
        let running = state("running", "source_tracing", 75.0);
        assert!(a.judged(0, |j| send(j, &id, &running)).await.is_empty());
        // Both answer at once, one `completed`, the other `failed`: both requests are in
        // flight on their own connections before either is answered.
        let (on_a, on_b) = tokio::join!(
            a.judged(0, |j| send(j, &id, &state("completed", "completed", 100.0))),
            b.judged(0, |j| send(j, &id, &state("failed", "failed", 0.0))),
        );
        // Redis ran one script first: that one won, and the other saw its terminal status.
        let mut outcomes = [rules(&on_a), rules(&on_b)];
        outcomes.sort();
        assert_eq!(
            outcomes,
            [vec![], vec!["terminal_changed"]],
            "trial {trial}: {on_a:?} / {on_b:?}"
        );
    }
    assert_eq!(t.store_errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_never_lose_a_progress_regression() {
    let Some(t) = shared(|_| {}) else { return };
    let (a, b) = (&t.replicas[0], &t.replicas[1]);
    let at = |progress| state("running", "ranking_analysis", progress);
    for trial in 0..200 {
        let id = format!("race-{trial}");
        assert!(a.judged(0, |j| send(j, &id, &at(50.0))).await.is_empty());
        // 80 and 60 at once. If 80 went first, 60 was a regression and was held at 80;
        // if 60 went first, both moved forward. Either way a client has seen 80.
        let (on_a, on_b) = tokio::join!(
            a.judged(0, |j| send(j, &id, &at(80.0))),
            b.judged(0, |j| send(j, &id, &at(60.0))),
        );
        assert!(on_a.is_empty(), "trial {trial}: {on_a:?}");
        assert!(
            on_b.is_empty() || on_b[0].fix == Some((Field::Progress, json!(80))),
            "trial {trial}: {on_b:?}"
        );
        // So 70 goes back, whichever replica answers.
        let replica = if trial % 2 == 0 { a } else { b };
        let after = replica.judged(0, |j| send(j, &id, &at(70.0))).await;
        assert_eq!(rules(&after), ["progress_regression"], "trial {trial}");
        assert_eq!(after[0].fix, Some((Field::Progress, json!(80))));
    }
    assert_eq!(t.store_errors(), 0);
}

#[tokio::test]
async fn keys_are_per_route_and_model_and_expire_with_the_ttl() {
    let Some(t) = shared(|c| c.tracker.ttl = Duration::from_secs(3600)) else {
        return;
    };
    let server = t.redis.as_ref().expect("shared");
    let done = state("completed", "completed", 100.0);
    t.poll(0, "t-1", &done).await;
    t.poll(1, "t-1", &done).await;
    let keys = task_keys(server).await;
    let fingerprint = |key: &str| key.split(':').nth(2).map(str::to_owned);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        keys[0],
        format!(
            "consistency:task_status:{}:t-1",
            fingerprint(&keys[0]).expect("fingerprint")
        )
    );
    assert!(keys[1].starts_with("consistency:test_progress:"));
    let mut redis = connect(server).await;
    let value: String = ::redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .expect("GET");
    // completed is stage 4 and status 2 of the default model; then first seen, last changed
    // and in its stage since (the same: one poll), not stalled, and the progress.
    let parts: Vec<&str> = value.split(':').collect();
    assert_eq!(
        (parts[0], parts[1], parts[5], parts[6]),
        ("4", "2", "0", "100"),
        "{value}"
    );
    assert!(
        parts[2].len() >= 13 && parts[2] == parts[3] && parts[3] == parts[4],
        "{value}"
    );
    let ttl_ms: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert!((3_590_000..=3_600_000).contains(&ttl_ms), "{ttl_ms}");

    // A replica with another model (a stage added) reads none of it: its codes would differ.
    let mut other = Config::default();
    other.model.stages.insert(4, "reviewing".into());
    other.tracker.store = TrackerStore::Redis;
    other.tracker.redis_url = server.url();
    other.tracker.timeout = Duration::from_secs(5);
    let settings = Settings::compile(other).expect("valid");
    let memory = Replica::new(&settings);
    let reopened = state("running", "init", 0.0);
    assert!(memory
        .judged(0, |j| send(j, "t-1", &reopened))
        .await
        .is_empty());
    assert_eq!(task_keys(server).await.len(), 3);
    // The first model's memory is untouched.
    assert_eq!(t.poll(0, "t-1", &reopened).await.len(), 3);
}

#[tokio::test]
async fn a_flushed_script_cache_and_a_foreign_value_are_survived() {
    let Some(t) = shared(|_| {}) else { return };
    let server = t.redis.as_ref().expect("shared");
    let mut redis = connect(server).await;
    t.poll(0, "t-1", &state("running", "source_tracing", 75.0))
        .await;
    // A restarted or failed-over Redis has no scripts: EVALSHA says NOSCRIPT, the script is
    // loaded again and the call goes through.
    let () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .expect("FLUSH");
    let findings = t.poll(0, "t-1", &state("running", "init", 75.0)).await;
    assert_eq!(rules(&findings), ["stage_regression"]);
    // A value that is not ours, for a task no replica has seen: it starts afresh, and is
    // remembered properly again.
    let key = task_keys(server).await.remove(0).replace(":t-1", ":t-2");
    let () = ::redis::cmd("SET")
        .arg(&key)
        .arg("not:ours")
        .query_async(&mut redis)
        .await
        .expect("SET");
    assert!(t
        .poll(0, "t-2", &state("running", "ai_fetching", 25.0))
        .await
        .is_empty());
    let findings = t.poll(0, "t-2", &state("running", "init", 25.0)).await;
    assert_eq!(rules(&findings), ["stage_regression"]);
}

#[tokio::test]
async fn bytes_per_task_in_redis() {
    const TASKS: usize = 5_000;
    let Some(t) = shared(|_| {}) else { return };
    let server = t.redis.as_ref().expect("shared");
    let mut redis = connect(server).await;
    let used = |info: String| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    };
    let info: String = ::redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis)
        .await
        .expect("INFO");
    let before = used(info);
    // UUID task ids, like the legacy backend's, on its main route.
    let uuid = |i: usize| {
        format!(
            "{:08x}-7d3c-4b2a-9f1e-{:012x}",
            i * 2_654_435_761 % (1 << 32),
            i
        )
    };
    let record = state("running", "ranking_analysis", 62.5);
    for i in 0..TASKS {
        t.poll(0, &uuid(i), &record).await;
    }
    let info: String = ::redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis)
        .await
        .expect("INFO");
    let per_task = (used(info) - before) / TASKS as i64;
    let key = task_keys(server).await.remove(0);
    let usage: i64 = ::redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut redis)
        .await
        .expect("MEMORY USAGE");
    eprintln!(
        "{TASKS} tasks: MEMORY USAGE of one key {usage} B ({} B key); used_memory grew {per_task} B per task",
        key.len()
    );
    // The README quotes these (36-character ids, 69-byte keys): the key and its value (with
    // its three timestamps), then everything (the TTL's entry, hash table slots, allocator
    // rounding, and the running task's entry in its route's `polled` index).
    assert!((150..=220).contains(&usage), "{usage}");
    assert!((300..=550).contains(&per_task), "{per_task}");
}

#[test]
fn values_encode_and_decode_exactly() {
    use super::redis::{decode, restate};
    use super::transition::{Snapshot, FAILED, UNKNOWN};
    let encode = |memory: &Snapshot| {
        restate("0:0:1700000000000:1700000000001:1700000000002:1:", memory).expect("ours")
    };
    for progress in [0.0, 40.0, 62.5, 99.99, 0.1, 1e-7, 1e21, f64::MAX, f64::NAN] {
        let memory = Snapshot {
            stage: FAILED,
            status: UNKNOWN,
            progress,
        };
        let value = encode(&memory);
        let back = decode(&value).expect(&value);
        assert_eq!((back.stage, back.status), (FAILED, UNKNOWN), "{value}");
        assert!(
            back.progress == progress || progress.is_nan() && back.progress.is_nan(),
            "{value}"
        );
    }
    assert_eq!(
        encode(&Snapshot {
            stage: 2,
            status: 1,
            progress: 40.0
        }),
        "2:1:1700000000000:1700000000001:1700000000002:1:40",
        "the timestamps stay"
    );
    assert_eq!(
        encode(&Snapshot::EMPTY),
        "65535:65535:1700000000000:1700000000001:1700000000002:1:"
    );
    assert_eq!(restate("1:2:3", &Snapshot::EMPTY), None);
    for foreign in [
        "",
        "1:2",
        "1:2:3",
        "a:1:1:1:1:0:2",
        "+1:2:1:1:1:0:3",
        "70000:1:1:1:1:0:2",
        "1:2:1:1:1:0:x",
        "1:2:1:1:1:0:inf",
        "1:2:1:1:1:0:NaN",
        "1:2:1:1:1:2:3",
        "1:2::1:1:0:3",
        "1:2:1:x:1:0:3",
    ] {
        assert!(decode(foreign).is_none(), "{foreign:?}");
    }
}
