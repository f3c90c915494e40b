//! Unit tests for stalled and abandoned tasks and stage durations, on both stores: the local
//! memory under paused time, and two replicas sharing a real `redis-server` taking the polls
//! in turn (their clocks moved forward together, as Redis I/O cannot run under paused time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;

use super::{redis_server::RedisServer, state, tool, Kind};
use crate::config::{Config, TrackerConfig, TrackerStore};
use crate::engine::RecordState;
use crate::settings::Settings;
use crate::tracker::{MemoryRoute, StoreMetrics, TaskMemory, TrackerCollector};

const SECOND: Duration = Duration::from_secs(1);

/// Generates `local::NAME` (paused time) and `redis::NAME` for each `async fn NAME(kind: Kind)`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(start_paused = true)]
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

/// Sidecars under test: one with local memory, or two on one `redis-server` taking turns.
struct Sidecars {
    kind: Kind,
    replicas: Vec<Replica>,
    turn: AtomicUsize,
    /// Declared last, so dropped last: the server outlives the replicas' connections.
    _redis: Option<RedisServer>,
}

struct Replica {
    memory: Arc<TaskMemory>,
    routes: Vec<Option<MemoryRoute>>,
    registry: Registry,
}

impl Sidecars {
    /// `stall_after` 60 s, `abandon_after` 10 min, with `tweak` on top.
    fn new(kind: Kind, tweak: impl FnOnce(&mut TrackerConfig)) -> Sidecars {
        let mut config = Config::default();
        config.tracker.stall_after = 60 * SECOND;
        config.tracker.abandon_after = 600 * SECOND;
        // Generous, so that a loaded machine never sends a poll to the fallback.
        config.tracker.timeout = 5 * SECOND;
        tweak(&mut config.tracker);
        let redis = (kind == Kind::Redis)
            .then(|| RedisServer::start().expect("the test checked for redis-server"));
        if let Some(server) = &redis {
            config.tracker.store = TrackerStore::Redis;
            config.tracker.redis_url = server.url();
        }
        let settings = Settings::compile(config).expect("test config is valid");
        let replicas = (0..if redis.is_some() { 2 } else { 1 })
            .map(|_| {
                let registry = Registry::new();
                let store = StoreMetrics::register(&registry).expect("register");
                let memory = Arc::new(TaskMemory::new(&settings, store));
                TrackerCollector::register(&registry, memory.clone()).expect("register");
                let routes = memory.configure(&settings);
                Replica {
                    memory,
                    routes,
                    registry,
                }
            })
            .collect();
        Sidecars {
            kind,
            replicas,
            turn: AtomicUsize::new(0),
            _redis: redis,
        }
    }

    /// One poll of task `id` on route `task_status`, answered by the replica whose turn it is.
    async fn poll(&self, id: &str, s: &RecordState) {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let replica = &self.replicas[turn % self.replicas.len()];
        let route = replica.routes[0].as_ref().expect("task_status is tracked");
        replica
            .memory
            .judged(route, |judge| {
                judge.judge(id, s);
                judge.remember(id, s);
            })
            .await;
        assert_eq!(
            self.sum("consistency_tracker_store_errors_total", None),
            0.0
        );
    }

    /// Moves every clock forward by `by`.
    async fn advance(&self, by: Duration) {
        match self.kind {
            Kind::Local => tokio::time::advance(by).await,
            Kind::Redis => {
                for replica in &self.replicas {
                    replica.memory.local().skew(by);
                }
            }
        }
    }

    /// Polls `id` as `s` every `every` for `for_`, starting now.
    async fn keep_polling(&self, id: &str, s: &RecordState, every: Duration, for_: Duration) {
        let mut waited = Duration::ZERO;
        while waited < for_ {
            self.advance(every).await;
            waited += every;
            self.poll(id, s).await;
        }
    }

    /// The periodic upkeep on every replica.
    async fn maintain(&self) {
        for replica in &self.replicas {
            replica.memory.maintain();
            replica.memory.settle().await;
        }
    }

    /// A metric summed over the replicas, over the series whose `stage` label is `stage` (or
    /// all of them). A gauge of shared memory is read from one replica: each reports it whole.
    fn sum(&self, name: &str, stage: Option<&str>) -> f64 {
        let replicas = if name == "consistency_stalled_tasks" {
            &self.replicas[..1]
        } else {
            &self.replicas[..]
        };
        replicas
            .iter()
            .flat_map(|r| r.registry.gather())
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().to_vec())
            .filter(|metric| {
                stage.is_none_or(|stage| {
                    metric
                        .get_label()
                        .iter()
                        .any(|l| l.name() == "stage" && l.value() == stage)
                })
            })
            .map(|metric| {
                if metric.get_histogram().has_sample_count() || name.ends_with("_seconds") {
                    metric.get_histogram().get_sample_sum()
                } else if name.ends_with("_total") {
                    metric.get_counter().value()
                } else {
                    metric.get_gauge().value()
                }
            })
            .sum()
    }

    /// Observations of the stage histogram in `stage`.
    fn observed(&self, stage: &str) -> u64 {
        self.replicas
            .iter()
            .flat_map(|r| r.registry.gather())
            .filter(|family| family.name() == "consistency_stage_duration_seconds")
            .flat_map(|family| family.get_metric().to_vec())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "stage" && l.value() == stage)
            })
            .map(|m| m.get_histogram().get_sample_count())
            .sum()
    }

    /// The gauge of stalled tasks, after the upkeep read the shared memory.
    async fn stalled(&self) -> f64 {
        self.replicas[0].memory.settle().await;
        self.sum("consistency_stalled_tasks", None)
    }

    /// `ms` as measured: exact in paused time; with Redis, real time runs on as well, by
    /// well under a second in these tests.
    fn about(&self, ms: u64, expected: u64) -> bool {
        match self.kind {
            Kind::Local => ms == expected,
            Kind::Redis => (expected..expected + 1000).contains(&ms),
        }
    }

    fn became_stalled(&self) -> f64 {
        self.sum("consistency_tasks_stalled_total", None)
    }

    fn recovered(&self) -> f64 {
        self.sum("consistency_tasks_recovered_total", None)
    }

    fn abandoned(&self) -> f64 {
        self.sum("consistency_tasks_abandoned_total", None)
    }

    /// The ids of the stalled tasks, longest stalled first, as the first replica lists them.
    async fn stalled_ids(&self) -> Vec<String> {
        let memory = &self.replicas[0].memory;
        memory.settle().await;
        memory
            .stalled(10)
            .oldest
            .into_iter()
            .map(|task| task.task_id)
            .collect()
    }
}

both_stores!(
    a_task_polled_without_change_stalls_at_the_limit_and_recovers_when_it_moves,
    a_task_never_seen_to_change_is_judged_from_first_seen,
    a_task_no_longer_polled_is_abandoned_once_and_forgotten,
    per_stage_limits_apply,
    terminal_tasks_are_never_stalled_nor_abandoned,
    the_histogram_records_the_stage_left_with_its_duration,
    stalled_tasks_are_listed_longest_stalled_first,
);

async fn a_task_polled_without_change_stalls_at_the_limit_and_recovers_when_it_moves(kind: Kind) {
    let t = Sidecars::new(kind, |_| {});
    let stuck = state("running", "ai_fetching", 25.0);
    t.poll("t1", &stuck).await;
    // Every 5 s for 55 s: under the limit.
    t.keep_polling("t1", &stuck, 5 * SECOND, 55 * SECOND).await;
    assert_eq!((t.became_stalled(), t.stalled_ids().await.len()), (0.0, 0));
    // 60 s unchanged: stalled, counted once however long it stays.
    t.keep_polling("t1", &stuck, 5 * SECOND, 5 * SECOND).await;
    assert_eq!(t.became_stalled(), 1.0);
    assert_eq!(
        t.sum("consistency_tasks_stalled_total", Some("ai_fetching")),
        1.0
    );
    t.keep_polling("t1", &stuck, 5 * SECOND, 60 * SECOND).await;
    assert_eq!(t.became_stalled(), 1.0);
    assert_eq!(t.stalled_ids().await, ["t1"]);
    assert_eq!(t.stalled().await, 1.0);
    // It moves: recovered, and no longer stalled.
    t.advance(5 * SECOND).await;
    t.poll("t1", &state("running", "ai_fetching", 30.0)).await;
    assert_eq!(t.recovered(), 1.0);
    assert_eq!(
        t.sum("consistency_tasks_recovered_total", Some("ai_fetching")),
        1.0
    );
    assert!(t.stalled_ids().await.is_empty());
    assert_eq!(t.stalled().await, 0.0);
    // The limit counts again from that move.
    t.keep_polling(
        "t1",
        &state("running", "ai_fetching", 30.0),
        5 * SECOND,
        55 * SECOND,
    )
    .await;
    assert_eq!(t.became_stalled(), 1.0);
}

async fn a_task_never_seen_to_change_is_judged_from_first_seen(kind: Kind) {
    let t = Sidecars::new(kind, |_| {});
    let stuck = state("running", "init", 0.0);
    t.poll("t1", &stuck).await;
    t.advance(61 * SECOND).await;
    // The second poll ever, the same as the first: stalled since it was first seen.
    t.poll("t1", &stuck).await;
    assert_eq!(t.became_stalled(), 1.0);
    assert_eq!(t.stalled_ids().await, ["t1"]);
    let listed = t.replicas[0].memory.stalled(10).oldest;
    assert!(t.about(listed[0].stalled_for_ms, 61_000), "{listed:?}");
    assert!(t.about(listed[0].polled_ago_ms, 0), "{listed:?}");
    assert_eq!(listed[0].stage, "init");
    assert_eq!(listed[0].progress, Some(0.0));
}

async fn a_task_no_longer_polled_is_abandoned_once_and_forgotten(kind: Kind) {
    let t = Sidecars::new(kind, |_| {});
    let stuck = state("running", "ranking_analysis", 60.0);
    t.poll("gone", &stuck).await;
    t.poll("stays", &stuck).await;
    // "gone" is stalled, then nobody polls it; "stays" keeps being polled.
    t.advance(61 * SECOND).await;
    t.poll("gone", &stuck).await;
    t.poll("stays", &stuck).await;
    assert_eq!(t.stalled().await, 2.0);
    t.keep_polling("stays", &stuck, 60 * SECOND, 540 * SECOND)
        .await;
    t.advance(59 * SECOND).await;
    t.poll("stays", &stuck).await;
    t.maintain().await;
    assert_eq!(t.abandoned(), 0.0, "599 s without a poll: not yet");
    t.advance(SECOND).await;
    t.poll("stays", &stuck).await;
    t.maintain().await;
    assert_eq!(t.abandoned(), 1.0);
    assert_eq!(
        t.sum(
            "consistency_tasks_abandoned_total",
            Some("ranking_analysis")
        ),
        1.0
    );
    assert_eq!(
        t.stalled_ids().await,
        ["stays"],
        "an abandoned task is no longer stalled"
    );
    assert_eq!(t.stalled().await, 1.0);
    // Counted once: later sweeps find nothing more.
    t.advance(60 * SECOND).await;
    t.poll("stays", &stuck).await;
    t.maintain().await;
    assert_eq!(t.abandoned(), 1.0);
    // Forgotten: back as a new task, judged from its new first sighting.
    t.poll("gone", &stuck).await;
    t.advance(30 * SECOND).await;
    t.poll("gone", &stuck).await;
    assert_eq!(t.stalled_ids().await, ["stays"]);
}

async fn per_stage_limits_apply(kind: Kind) {
    let t = Sidecars::new(kind, |tracker| {
        tracker
            .stall_after_stage
            .insert("ai_fetching".into(), (300 * SECOND).into());
    });
    let init = state("running", "init", 0.0);
    let ai = state("running", "ai_fetching", 25.0);
    t.poll("quick", &init).await;
    t.poll("slow", &ai).await;
    t.advance(60 * SECOND).await;
    t.poll("quick", &init).await;
    t.poll("slow", &ai).await;
    assert_eq!(t.stalled_ids().await, ["quick"], "init: the default 60 s");
    t.advance(239 * SECOND).await;
    t.poll("slow", &ai).await;
    assert_eq!(
        t.sum("consistency_tasks_stalled_total", Some("ai_fetching")),
        0.0
    );
    t.advance(SECOND).await;
    t.poll("slow", &ai).await;
    assert_eq!(
        t.sum("consistency_tasks_stalled_total", Some("ai_fetching")),
        1.0
    );
    t.stalled().await;
    assert_eq!(t.sum("consistency_stalled_tasks", Some("ai_fetching")), 1.0);
    assert_eq!(t.sum("consistency_stalled_tasks", Some("init")), 1.0);
}

async fn terminal_tasks_are_never_stalled_nor_abandoned(kind: Kind) {
    let t = Sidecars::new(kind, |_| {});
    let done = state("completed", "completed", 100.0);
    let failed = state("failed", "failed", 0.0);
    t.poll("done", &done).await;
    t.poll("failed", &failed).await;
    t.keep_polling("done", &done, 30 * SECOND, 300 * SECOND)
        .await;
    t.keep_polling("failed", &failed, 30 * SECOND, 300 * SECOND)
        .await;
    t.advance(3600 * SECOND).await;
    t.maintain().await;
    assert_eq!((t.became_stalled(), t.abandoned()), (0.0, 0.0));
    assert!(t.stalled_ids().await.is_empty());
    // Still remembered: a reopen after an hour of silence is judged.
    assert_eq!(t.replicas[0].memory.stalled(10).counts, []);
    if kind == Kind::Local {
        assert_eq!(t.replicas[0].memory.local().tracked(), 2);
    }
}

async fn the_histogram_records_the_stage_left_with_its_duration(kind: Kind) {
    let t = Sidecars::new(kind, |_| {});
    t.poll("t1", &state("running", "init", 0.0)).await;
    t.advance(30 * SECOND).await;
    t.poll("t1", &state("running", "ai_fetching", 10.0)).await;
    // Progress within a stage does not end it.
    t.keep_polling(
        "t1",
        &state("running", "ai_fetching", 20.0),
        50 * SECOND,
        100 * SECOND,
    )
    .await;
    t.advance(20 * SECOND).await;
    t.poll("t1", &state("running", "ranking_analysis", 50.0))
        .await;
    assert_eq!((t.observed("init"), t.observed("ai_fetching")), (1, 1));
    let ms = |stage| (t.sum("consistency_stage_duration_seconds", Some(stage)) * 1000.0) as u64;
    assert!(t.about(ms("init"), 30_000), "{}", ms("init"));
    assert!(t.about(ms("ai_fetching"), 120_000), "{}", ms("ai_fetching"));
    assert_eq!(t.observed("ranking_analysis"), 0, "not left yet");
    // The bucket boundaries fit minutes-long stages: 120 s is under le=300, over le=60.
    let family = t
        .replicas
        .iter()
        .flat_map(|r| r.registry.gather())
        .find(|f| f.name() == "consistency_stage_duration_seconds")
        .expect("the histogram is registered");
    let buckets: Vec<(f64, u64)> = family
        .get_metric()
        .iter()
        .filter(|m| m.get_label().iter().any(|l| l.value() == "ai_fetching"))
        .flat_map(|m| m.get_histogram().get_bucket().to_vec())
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .filter(|(le, _)| [60.0, 300.0, 3600.0].contains(le))
        .collect();
    let mut merged = std::collections::BTreeMap::new();
    for (le, n) in buckets {
        *merged.entry(le as u64).or_insert(0) += n;
    }
    assert_eq!(
        merged.into_iter().collect::<Vec<_>>(),
        [(60, 0), (300, 1), (3600, 1)]
    );
}

async fn stalled_tasks_are_listed_longest_stalled_first(kind: Kind) {
    let t = Sidecars::new(kind, |_| {});
    let stuck = state("running", "source_tracing", 80.0);
    for id in ["a", "b", "c"] {
        t.poll(id, &stuck).await;
        t.advance(10 * SECOND).await;
    }
    t.advance(60 * SECOND).await;
    for id in ["c", "a", "b"] {
        t.poll(id, &stuck).await;
    }
    assert_eq!(t.stalled_ids().await, ["a", "b", "c"]);
    let memory = &t.replicas[0].memory;
    memory.settle().await;
    let two = memory.stalled(2).oldest;
    assert_eq!(two.len(), 2);
    assert_eq!(
        (two[0].task_id.as_str(), two[1].task_id.as_str()),
        ("a", "b")
    );
    assert!(t.about(two[0].stalled_for_ms, 90_000), "{two:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_the_limits_and_keeps_the_timestamps() {
    let t = Sidecars::new(Kind::Local, |_| {});
    let stuck = state("running", "init", 0.0);
    t.poll("t1", &stuck).await;
    t.advance(45 * SECOND).await;
    t.poll("t1", &stuck).await;
    assert_eq!(t.became_stalled(), 0.0);
    let mut config = Config::default();
    config.tracker.stall_after = 30 * SECOND;
    let settings = Settings::compile(config).expect("valid");
    t.replicas[0].memory.configure(&settings);
    // Unchanged for 45 s since first seen, which the reload kept: stalled under the new limit.
    t.poll("t1", &stuck).await;
    assert_eq!(t.became_stalled(), 1.0);
}
