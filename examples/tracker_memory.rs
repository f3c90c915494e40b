//! Measures the task memory: RSS with 100,000 tracked tasks against an empty tracker, and
//! judge + remember throughput with one thread per CPU on the same tasks.
//!
//! `cargo run --release --example tracker_memory [uuid|short]` (Linux: reads /proc/self/status).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use consistency_sidecar::config::Config;
use consistency_sidecar::engine::{RecordState, TransitionJudge};
use consistency_sidecar::tracker::TaskTracker;

const TASKS: usize = 100_000;
const POLLS_PER_THREAD: usize = 2_000_000;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn state(progress: f64) -> RecordState {
    RecordState {
        status: Some("running".into()),
        stage: Some("ranking_analysis".into()),
        progress: Some(progress),
        is_completed: Some(false),
    }
}

/// Fills a fresh tracker with `TASKS` ids made by `id`; returns RSS growth per task.
fn bytes_per_task(label: &str, id: impl Fn(&mut String, usize)) -> Arc<TaskTracker> {
    let config = Config::default();
    let tracker = Arc::new(TaskTracker::new(&config.tracker, &config.model));
    let sent = state(60.0);
    let mut buf = String::new();
    let before = rss_bytes();
    for i in 0..TASKS {
        id(&mut buf, i);
        tracker.judge_for(0).remember(&buf, &sent);
    }
    let after = rss_bytes();
    assert_eq!(tracker.tracked(), TASKS);
    println!(
        "{label:<28} RSS empty {:>7.1} MiB, with {TASKS} tasks {:>7.1} MiB: {:>5.1} bytes/task",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after - before) as f64 / TASKS as f64
    );
    tracker
}

fn uuid(out: &mut String, i: usize) {
    out.clear();
    let _ = write!(out, "{:08x}-7c1e-4b2a-9f00-{:012x}", i, i * 7919);
}

fn short(out: &mut String, i: usize) {
    out.clear();
    let _ = write!(out, "task-{i}");
}

fn main() {
    // One fill per process: a second would reuse the heap the first freed and hide its cost.
    let (label, make): (&str, fn(&mut String, usize)) = match std::env::args().nth(1).as_deref() {
        Some("short") => ("short ids (\"task-12345\")", short),
        _ => ("UUID ids (36 bytes)", uuid),
    };
    let tracker = bytes_per_task(label, make);

    // Contended: one thread per CPU polling the same tasks, each poll judge + remember.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let ids: Arc<Vec<String>> = Arc::new(
        (0..TASKS)
            .map(|i| {
                let mut id = String::new();
                make(&mut id, i);
                id
            })
            .collect(),
    );
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (tracker, ids) = (Arc::clone(&tracker), Arc::clone(&ids));
            std::thread::spawn(move || {
                let sent = state(60.0);
                let mut findings = 0;
                for n in 0..POLLS_PER_THREAD {
                    let id = &ids[(n * 7 + t * 12_503) % TASKS];
                    let mut memory = tracker.judge_for(0);
                    findings += memory.judge(id, &sent).len();
                    memory.remember(id, &sent);
                }
                findings
            })
        })
        .collect();
    let findings: usize = handles.into_iter().map(|h| h.join().unwrap_or(1)).sum();
    let elapsed = started.elapsed();
    let polls = threads * POLLS_PER_THREAD;
    println!(
        "{threads} threads x {POLLS_PER_THREAD} polls: {:.1} ns per judge+remember per thread, {:.1} M polls/s in all ({findings} findings)",
        elapsed.as_nanos() as f64 * threads as f64 / polls as f64,
        polls as f64 / elapsed.as_secs_f64() / 1e6
    );
}
