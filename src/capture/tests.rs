//! Unit tests for the capture: rotation and its bounds, file mode, drops counted.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use prometheus::Registry;

use super::*;

fn config(path: std::path::PathBuf, max_file_bytes: u64, max_files: usize) -> CaptureConfig {
    CaptureConfig {
        enabled: true,
        path,
        which: CaptureWhich::All,
        sample_rate: 1.0,
        max_file_bytes,
        max_files,
        queue: 64,
    }
}

fn line(i: usize) -> CaptureLine {
    CaptureLine {
        time: "2026-12-02T12:00:00.000Z".into(),
        route: "task_status".into(),
        method: "GET".into(),
        path: format!("/test/status/t{i}"),
        status: 200,
        content_type: "application/json".into(),
        task_id: Some(format!("t{i}")),
        body: format!("{{\"task_id\":\"t{i}\",\"status\":\"running\"}}"),
        encoding: None,
        inconsistent: false,
    }
}

fn lines_total(registry: &Registry, outcome: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "consistency_capture_lines_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == outcome))
        .map(|m| m.get_counter().value() as u64)
        .sum()
}

/// Waits (bounded) until `done` holds.
fn eventually(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn files_rotate_by_size_only_max_files_are_kept_and_each_is_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.ndjson");
    let registry = Registry::new();
    let counters = CaptureCounters::register(&registry).expect("registers");
    let max_file_bytes = 1024;
    let capture = Capture::start(&config(path.clone(), max_file_bytes, 3), counters).expect("on");
    for i in 0..200 {
        capture.offer(&line(i));
        if i % 32 == 31 {
            // The queue is bounded: let the writer catch up so that no line is dropped.
            eventually(|| lines_total(&registry, "written") == i as u64 + 1);
        }
    }
    eventually(|| lines_total(&registry, "written") == 200);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["capture.ndjson", "capture.ndjson.1", "capture.ndjson.2"]
    );
    let mut newest_last = Vec::new();
    for name in ["capture.ndjson.2", "capture.ndjson.1", "capture.ndjson"] {
        let file = dir.path().join(name);
        let meta = std::fs::metadata(&file).expect("metadata");
        assert!(meta.len() <= max_file_bytes, "{name}: {}", meta.len());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        let text = std::fs::read_to_string(&file).expect("read");
        for l in text.lines() {
            let parsed: CaptureLine = serde_json::from_str(l).expect("each line is one record");
            newest_last.push(parsed.task_id.expect("task id"));
        }
    }
    // The newest lines are kept, in order, ending with the last one offered.
    assert_eq!(newest_last.last().map(String::as_str), Some("t199"));
    let first: usize = newest_last[0][1..].parse().expect("number");
    let expected: Vec<String> = (first..200).map(|i| format!("t{i}")).collect();
    assert_eq!(newest_last, expected);
}

#[test]
fn an_unwritable_path_drops_and_counts_lines_without_blocking_the_caller() {
    let registry = Registry::new();
    let counters = CaptureCounters::register(&registry).expect("registers");
    let path = std::path::PathBuf::from("/proc/capture-here-is-not-writable/capture.ndjson");
    let capture = Capture::start(&config(path, 1 << 20, 2), counters).expect("on");
    let started = Instant::now();
    for i in 0..5_000 {
        capture.offer(&line(i));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "offering never waits: {:?}",
        started.elapsed()
    );
    eventually(|| {
        lines_total(&registry, "write_failed") + lines_total(&registry, "queue_full") == 5_000
    });
    assert_eq!(lines_total(&registry, "written"), 0);
}

#[test]
fn inconsistent_only_and_a_zero_rate_capture_nothing_else() {
    let registry = Registry::new();
    let counters = CaptureCounters::register(&registry).expect("registers");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut only = config(dir.path().join("a"), 1 << 20, 2);
    only.which = CaptureWhich::Inconsistent;
    let capture = Capture::start(&only, counters.clone()).expect("on");
    assert!(capture.wants(true));
    assert!(!capture.wants(false));
    let mut none = config(dir.path().join("b"), 1 << 20, 2);
    none.sample_rate = 0.0;
    let capture = Capture::start(&none, counters.clone()).expect("on");
    assert!((0..1000).all(|_| !capture.wants(true)));
    let mut half = config(dir.path().join("c"), 1 << 20, 2);
    half.sample_rate = 0.5;
    let capture = Capture::start(&half, counters).expect("on");
    let taken = (0..10_000).filter(|_| capture.wants(true)).count();
    assert!((4_000..6_000).contains(&taken), "{taken}");
}
