//! Benchmarks of the task memory: one judge + remember, as the engine makes per tracked record.

use std::fmt::Write;

use consistency_sidecar::config::Config;
use consistency_sidecar::engine::{RecordState, TransitionJudge};
use consistency_sidecar::tracker::TaskTracker;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const TASKS: usize = 100_000;

fn state(status: &str, stage: &str, progress: f64) -> RecordState {
    RecordState {
        status: Some(status.into()),
        stage: Some(stage.into()),
        progress: Some(progress),
        is_completed: Some(false),
    }
}

/// A UUID-shaped task id, as the legacy backend hands out.
fn task_id(out: &mut String, i: usize) {
    out.clear();
    let _ = write!(out, "{:08x}-7c1e-4b2a-9f00-{:012x}", i, i * 7919);
}

/// A tracker of default capacity (100,000 tasks) holding `ids`, every task at 60 %.
fn full_tracker(ids: &[String]) -> TaskTracker {
    let config = Config::default();
    let tracker = TaskTracker::new(&config.tracker, &config.model);
    let sent = state("running", "ranking_analysis", 60.0);
    for id in ids {
        tracker.judge_for(0).remember(id, &sent);
    }
    tracker
}

fn judge_and_remember(c: &mut Criterion) {
    let ids: Vec<String> = (0..TASKS)
        .map(|i| {
            let mut id = String::new();
            task_id(&mut id, i);
            id
        })
        .collect();
    let tracker = full_tracker(&ids);
    let mut group = c.benchmark_group("tracker");
    group.throughput(Throughput::Elements(1));

    // The common case: a known task moving forward (or standing still), no finding.
    let steady = state("running", "ranking_analysis", 60.0);
    let mut i = 0;
    group.bench_function("known_task_no_finding", |b| {
        b.iter(|| {
            i = (i + 1) % TASKS;
            let mut memory = tracker.judge_for(0);
            let findings = memory.judge(&ids[i], black_box(&steady));
            memory.remember(&ids[i], &steady);
            findings
        })
    });

    // The same with 1,000 tasks: the memory stays in cache, leaving the CPU cost alone.
    let hot = full_tracker(&ids[..1000]);
    group.bench_function("known_task_no_finding_1000_tasks", |b| {
        b.iter(|| {
            i = (i + 1) % 1000;
            let mut memory = hot.judge_for(0);
            let findings = memory.judge(&ids[i], black_box(&steady));
            memory.remember(&ids[i], &steady);
            findings
        })
    });

    // A progress regression: the finding and its message are built, the fix is sent.
    let back = state("running", "ranking_analysis", 40.0);
    group.bench_function("known_task_progress_regression", |b| {
        b.iter(|| {
            i = (i + 1) % TASKS;
            let mut memory = tracker.judge_for(0);
            let findings = memory.judge(&ids[i], black_box(&back));
            memory.remember(&ids[i], &steady);
            findings
        })
    });

    // A task never seen, at capacity: each one evicts the least recently seen.
    let mut next = TASKS;
    let mut id = String::new();
    group.bench_function("new_task_evicting", |b| {
        b.iter(|| {
            next += 1;
            task_id(&mut id, next);
            let mut memory = tracker.judge_for(0);
            let findings = memory.judge(&id, black_box(&steady));
            memory.remember(&id, &steady);
            findings
        })
    });
    group.finish();
}

criterion_group!(benches, judge_and_remember);
criterion_main!(benches);
