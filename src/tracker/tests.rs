//! Unit tests for the task memory: each transition rule, eviction by capacity and by TTL,
//! and many threads polling many tasks at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::{Config, TrackerConfig};
use crate::engine::{
    Field, Level, ModelConfig, RecordState, TransitionFinding, TransitionJudge, TransitionKind,
};

/// The shipped defaults.
fn defaults() -> (TrackerConfig, ModelConfig) {
    let config = Config::default();
    (config.tracker, config.model)
}

fn state(status: &str, stage: &str, progress: f64) -> RecordState {
    RecordState {
        status: Some(status.into()),
        stage: Some(stage.into()),
        progress: Some(progress),
        is_completed: Some(status == "completed"),
    }
}

fn tracker() -> TaskTracker {
    let (config, model) = defaults();
    TaskTracker::new(&config, &model)
}

fn tracker_with(capacity: usize, ttl: Duration) -> TaskTracker {
    let (mut config, model) = defaults();
    config.capacity = capacity;
    config.ttl = ttl;
    TaskTracker::new(&config, &model)
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

/// Judges `after` against a task last sent as `before`.
fn transition(before: &RecordState, after: &RecordState) -> Vec<TransitionFinding> {
    let t = tracker();
    assert!(poll(&t, 0, "t1", before).is_empty());
    poll(&t, 0, "t1", after)
}

#[test]
fn rules_are_indexed_like_transition_kind_all() {
    for (i, kind) in TransitionKind::ALL.into_iter().enumerate() {
        assert_eq!(kind as usize, i);
    }
}

#[test]
fn a_task_moving_forward_finds_nothing() {
    let t = tracker();
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
        assert_eq!(poll(&t, 0, "t1", s), Vec::new(), "{s:?}");
    }
    assert_eq!(t.tracked(), 1);
}

#[test]
fn the_first_poll_of_a_task_finds_nothing() {
    let t = tracker();
    assert!(poll(&t, 0, "t1", &state("completed", "completed", 100.0)).is_empty());
    assert!(poll(&t, 0, "t2", &state("running", "init", 0.0)).is_empty());
}

#[test]
fn stage_regression_fires_without_fix_by_default() {
    let findings = transition(
        &state("running", "ranking_analysis", 50.0),
        &state("running", "ai_fetching", 50.0),
    );
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "stage_regression".into(),
            level: Level::MajorIssue,
            message:
                "stage ranking_analysis → ai_fetching: earlier in the flow than the last one sent"
                    .into(),
            fix: None,
        }]
    );
}

#[test]
fn stage_regression_holds_the_last_stage_when_configured() {
    let (mut config, model) = defaults();
    config.rules.stage_regression.fix = true;
    let t = TaskTracker::new(&config, &model);
    poll(&t, 0, "t1", &state("running", "source_tracing", 60.0));
    let findings = poll(&t, 0, "t1", &state("running", "init", 60.0));
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert_eq!(
        findings[0].fix,
        Some((Field::Stage, json!("source_tracing")))
    );
}

#[test]
fn stage_regression_does_not_fire_on_same_or_later_stage_or_unknown() {
    let before = state("running", "ranking_analysis", 50.0);
    assert!(transition(&before, &state("running", "ranking_analysis", 50.0)).is_empty());
    assert!(transition(&before, &state("running", "source_tracing", 50.0)).is_empty());
    // Outside the model: the single-record rules report it; there is no position to compare.
    assert!(transition(&before, &state("running", "warming_up", 50.0)).is_empty());
    let absent = RecordState {
        stage: None,
        ..state("running", "x", 50.0)
    };
    assert!(transition(&before, &absent).is_empty());
}

#[test]
fn failing_from_any_stage_is_not_a_stage_regression() {
    for stage in ["init", "ai_fetching", "source_tracing", "completed"] {
        let findings = transition(
            &state("running", stage, 40.0),
            &state("failed", "failed", 0.0),
        );
        assert!(findings.is_empty(), "{stage}: {findings:?}");
    }
}

#[test]
fn leaving_the_failed_stage_for_a_working_stage_is_a_stage_regression() {
    let findings = transition(
        &state("failed", "failed", 0.0),
        &state("failed", "init", 0.0),
    );
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert_eq!(
        findings[0].message,
        "stage failed → init: earlier in the flow than the last one sent"
    );
}

#[test]
fn terminal_reopened_fires_when_a_completed_task_runs_again() {
    let findings = transition(
        &state("completed", "completed", 100.0),
        &state("running", "completed", 100.0),
    );
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "terminal_reopened".into(),
            level: Level::Critical,
            message: "status completed → running after the task was sent as completed".into(),
            fix: None,
        }]
    );
}

#[test]
fn terminal_reopened_fires_for_a_failed_task_and_has_no_fix_even_if_asked() {
    let (mut config, model) = defaults();
    config.rules.terminal_reopened.fix = true;
    let t = TaskTracker::new(&config, &model);
    poll(&t, 0, "t1", &state("failed", "failed", 0.0));
    let findings = poll(&t, 0, "t1", &state("pending", "failed", 0.0));
    assert_eq!(rules(&findings), ["terminal_reopened"]);
    assert_eq!(findings[0].fix, None);
}

#[test]
fn a_reopened_task_also_reports_what_else_went_back() {
    let findings = transition(
        &state("completed", "completed", 100.0),
        &state("running", "source_tracing", 80.0),
    );
    assert_eq!(
        rules(&findings),
        [
            "stage_regression",
            "terminal_reopened",
            "progress_regression"
        ]
    );
}

#[test]
fn terminal_rules_do_not_fire_before_terminal_or_on_unknown_status() {
    assert!(transition(
        &state("running", "init", 0.0),
        &state("pending", "init", 0.0)
    )
    .is_empty());
    let done = state("completed", "completed", 100.0);
    assert!(transition(&done, &state("completed", "completed", 100.0)).is_empty());
    // An unknown or absent status says nothing about being terminal: no finding here.
    assert!(transition(&done, &state("done", "completed", 100.0)).is_empty());
    let absent = RecordState {
        status: None,
        ..done.clone()
    };
    assert!(transition(&done, &absent).is_empty());
}

#[test]
fn terminal_changed_fires_both_ways() {
    let findings = transition(
        &state("completed", "completed", 100.0),
        &state("failed", "failed", 0.0),
    );
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "terminal_changed".into(),
            level: Level::Critical,
            message: "status completed → failed after the task was sent as completed".into(),
            fix: None,
        }]
    );
    let findings = transition(
        &state("failed", "failed", 0.0),
        &state("completed", "completed", 100.0),
    );
    assert_eq!(rules(&findings), ["terminal_changed"]);
    assert_eq!(
        findings[0].message,
        "status failed → completed after the task was sent as failed"
    );
}

#[test]
fn progress_regression_fixes_to_the_last_progress_sent() {
    let findings = transition(
        &state("running", "ai_fetching", 60.0),
        &state("running", "ai_fetching", 40.0),
    );
    assert_eq!(
        findings,
        vec![TransitionFinding {
            rule: "progress_regression".into(),
            level: Level::MinorIssue,
            message: "progress 60 → 40: lower than the last one sent".into(),
            fix: Some((Field::Progress, json!(60))),
        }]
    );
    let findings = transition(
        &state("running", "ai_fetching", 62.5),
        &state("running", "ai_fetching", 40.0),
    );
    assert_eq!(findings[0].fix, Some((Field::Progress, json!(62.5))));
}

#[test]
fn progress_regression_does_not_fire_on_equal_higher_or_absent_progress() {
    let before = state("running", "ai_fetching", 60.0);
    assert!(transition(&before, &state("running", "ai_fetching", 60.0)).is_empty());
    assert!(transition(&before, &state("running", "ai_fetching", 61.0)).is_empty());
    let absent = RecordState {
        progress: None,
        ..before.clone()
    };
    assert!(transition(&before, &absent).is_empty());
}

#[test]
fn a_task_that_fails_legitimately_drops_to_zero_without_progress_regression() {
    let findings = transition(
        &state("running", "source_tracing", 80.0),
        &state("failed", "failed", 0.0),
    );
    assert!(findings.is_empty(), "{findings:?}");
    // A failed stage under an unknown status fails too.
    let findings = transition(
        &state("running", "source_tracing", 80.0),
        &state("aborted", "failed", 0.0),
    );
    assert!(findings.is_empty(), "{findings:?}");
}

#[test]
fn memory_holds_the_last_known_value_of_a_field_a_record_lacked() {
    let t = tracker();
    poll(&t, 0, "t1", &state("running", "ai_fetching", 60.0));
    let no_progress = RecordState {
        progress: None,
        ..state("running", "ai_fetching", 0.0)
    };
    assert!(poll(&t, 0, "t1", &no_progress).is_empty());
    let findings = poll(&t, 0, "t1", &state("running", "ai_fetching", 50.0));
    assert_eq!(rules(&findings), ["progress_regression"]);
}

#[test]
fn memory_stores_what_was_sent_not_what_was_judged() {
    let t = tracker();
    poll(&t, 0, "t1", &state("running", "ai_fetching", 60.0));
    let mut memory = t.judge_for(0);
    let received = state("running", "ai_fetching", 40.0);
    let findings = memory.judge("t1", &received);
    assert_eq!(rules(&findings), ["progress_regression"]);
    // The engine applied the fix and sent 60.
    memory.remember("t1", &state("running", "ai_fetching", 60.0));
    assert!(poll(&t, 0, "t1", &state("running", "ai_fetching", 60.0)).is_empty());
}

#[test]
fn disabled_rules_and_configured_levels_are_honoured() {
    let (mut config, model) = defaults();
    config.rules.progress_regression.enabled = false;
    config.rules.stage_regression.level = Level::Critical;
    let t = TaskTracker::new(&config, &model);
    poll(&t, 0, "t1", &state("running", "source_tracing", 80.0));
    let findings = poll(&t, 0, "t1", &state("running", "init", 10.0));
    assert_eq!(rules(&findings), ["stage_regression"]);
    assert_eq!(findings[0].level, Level::Critical);
}

#[test]
fn rule_names_are_shared_not_allocated_per_finding() {
    let t = tracker();
    poll(&t, 0, "a", &state("running", "ai_fetching", 60.0));
    poll(&t, 0, "b", &state("running", "ai_fetching", 60.0));
    let a = poll(&t, 0, "a", &state("running", "ai_fetching", 10.0));
    let b = poll(&t, 0, "b", &state("running", "ai_fetching", 10.0));
    assert!(std::sync::Arc::ptr_eq(&a[0].rule, &b[0].rule));
}

#[test]
fn the_same_task_id_on_two_routes_is_two_tasks() {
    let t = tracker();
    poll(&t, 0, "t1", &state("completed", "completed", 100.0));
    assert!(poll(&t, 1, "t1", &state("running", "init", 0.0)).is_empty());
    assert_eq!(t.tracked(), 2);
    assert_eq!(
        rules(&poll(&t, 0, "t1", &state("running", "init", 0.0))),
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
    let first = shard.put(key("a"), at(80.0), clock, || true, rehash);
    assert_eq!(first, Changes::default());
    assert_eq!(shard.get(key("b"), clock), None);
    let second = shard.put(
        key("b"),
        at(10.0),
        clock,
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
    let mut shard = Shard::new();
    // Refused room with nothing to displace: added anyway, and counted by the shard.
    let first = shard.put(key(1, "a"), Snapshot::EMPTY, clock, || false, rehash);
    assert_eq!(
        first,
        Changes {
            added: 1,
            ..Changes::default()
        }
    );
    // Refused room again: "b" displaces "a".
    let second = shard.put(key(2, "b"), Snapshot::EMPTY, clock, || false, rehash);
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

#[test]
fn a_route_keeps_its_memory_by_name_across_reloads_and_a_removed_one_loses_it() {
    let t = tracker();
    let [a, b] = t.assign_routes(&["a", "b"])[..] else {
        panic!("two ids")
    };
    let running = state("running", "ranking_analysis", 50.0);
    assert!(poll(&t, a, "t1", &running).is_empty());
    assert!(poll(&t, b, "t1", &running).is_empty());
    assert_eq!(t.tracked(), 2);

    // A route added first moves both down the list: each keeps its id and so its memory.
    assert_eq!(t.assign_routes(&["new", "a", "b"])[1..], [a, b]);
    let back = state("running", "ai_fetching", 25.0);
    assert_eq!(
        rules(&poll(&t, a, "t1", &back)),
        ["stage_regression", "progress_regression"]
    );
    assert_eq!(t.tracked(), 2);

    // "b" removed: its memory goes at once; its id is not handed out in the same reload.
    let ids = t.assign_routes(&["new", "a", "c"]);
    assert_eq!(t.tracked(), 1);
    assert!(!ids.contains(&b), "{ids:?}");
    assert_eq!(t.remembered(), [(a, "t1".to_string())]);
    // Back later, "b" starts with no memory.
    let ids = t.assign_routes(&["a", "b"]);
    assert!(poll(&t, ids[1], "t1", &back).is_empty());
}
