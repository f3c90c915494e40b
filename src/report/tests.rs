//! Unit tests for the report book and its text layout.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::Opts;

use super::*;
use crate::engine::{Issue, RecordState};

/// A book over families of its own, fed as inspection feeds them: each record counted in the
/// tallies, then listed.
struct Book {
    book: ReportBook,
    tallies: Tallies,
}

impl Book {
    fn new(keep: usize) -> Book {
        let family = |name: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, "test"), labels).expect("family")
        };
        let tallies = Tallies {
            results: family("consistency_results_total", &["route", "level"]),
            issues: family("consistency_issues_total", &["route", "rule", "level"]),
        };
        Book {
            book: ReportBook::new(keep, tallies.clone()),
            tallies,
        }
    }

    fn record(&self, route: &Arc<str>, verdict: &RecordVerdict) {
        self.tallies
            .results
            .with_label_values(&[route, verdict.level.as_str()])
            .inc();
        for issue in &verdict.issues {
            self.tallies
                .issues
                .with_label_values(&[route, &issue.rule, issue.level.as_str()])
                .inc();
        }
        self.book.record(route, verdict);
    }

    fn snapshot(&self) -> Report {
        self.book.snapshot()
    }
}

fn verdict(task: &str, level: Level, rules: &[&str]) -> RecordVerdict {
    RecordVerdict {
        task_id: Some(task.into()),
        task_id_too_long: false,
        level,
        issues: rules
            .iter()
            .map(|r| Issue {
                rule: Arc::from(*r),
                level,
                message: format!("{r} broke"),
                shadow: false,
            })
            .collect(),
        fixes: Vec::new(),
        shadow_fixes: Vec::new(),
        sent: RecordState::default(),
    }
}

#[test]
fn empty_book_reports_full_consistency() {
    let report = Book::new(10).snapshot();
    assert_eq!(report.total_checks, 0);
    assert_eq!(report.consistency_ratio, 1.0);
    assert!(report.to_text().contains("Consistency ratio: 100.00%"));
}

#[test]
fn counts_levels_and_keeps_newest_issues_first() {
    let book = Book::new(3);
    for i in 0..995 {
        book.record(
            &Arc::from("task_status"),
            &verdict(&format!("ok_{i}"), Level::Consistent, &[]),
        );
    }
    for i in 0..5 {
        book.record(
            &Arc::from("task_status"),
            &verdict(&format!("bad_{i}"), Level::MinorIssue, &["completed_stage"]),
        );
    }
    let report = book.snapshot();
    assert_eq!(report.total_checks, 1000);
    assert_eq!(report.issues_found, 5);
    assert_eq!(report.levels.minor_issue, 5);
    assert_eq!(report.consistency_ratio, 0.995);
    let ids: Vec<_> = report
        .recent_issues
        .iter()
        .map(|i| i.task_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["bad_4", "bad_3", "bad_2"]);
    let text = report.to_text();
    assert!(text.contains("Total checks: 1000"), "{text}");
    assert!(text.contains("Consistency ratio: 99.50%"), "{text}");
    assert!(text.contains("  minor_issue: 5"), "{text}");
    assert!(
        text.contains("[minor_issue] task_id=bad_4 completed_stage: completed_stage broke"),
        "{text}"
    );
}

/// `inspect.recent_issues = 0` lists no issue, but still counts every one.
#[test]
fn a_book_keeping_no_recent_issues_still_counts_them() {
    let book = Book::new(0);
    book.record(
        &Arc::from("task_status"),
        &verdict(
            "bad_1",
            Level::MinorIssue,
            &["completed_stage", "completed_progress"],
        ),
    );
    book.record(
        &Arc::from("task_status"),
        &verdict("ok_1", Level::Consistent, &[]),
    );
    let report = book.snapshot();
    assert_eq!(report.issues_found, 2);
    assert_eq!(report.total_checks, 2);
    assert!(report.recent_issues.is_empty());
    let text = report.to_text();
    assert!(text.contains("Issues found: 2"), "{text}");
}

#[test]
fn a_shadow_issue_is_listed_as_such_and_old_reports_still_read() {
    let book = Book::new(10);
    let mut record = verdict("t-1", Level::Consistent, &["completed_stage"]);
    record.issues[0].shadow = true;
    book.record(&Arc::from("task_status"), &record);
    let report = book.snapshot();
    assert_eq!(report.issues_found, 1, "counted like any other");
    assert_eq!(report.levels.consistent, 1, "at the record's level");
    assert!(report.recent_issues[0].shadow);
    let text = report.to_text();
    assert!(
        text.contains("task_id=t-1 completed_stage (shadow): completed_stage broke"),
        "{text}"
    );
    // A report from a sidecar without shadow rules reads as no shadow.
    let mut json = serde_json::to_value(&report).unwrap();
    json["recent_issues"][0]
        .as_object_mut()
        .unwrap()
        .remove("shadow");
    let back: Report = serde_json::from_value(json).unwrap();
    assert!(!back.recent_issues[0].shadow);
}

#[test]
fn json_round_trips() {
    let book = Book::new(10);
    book.record(
        &Arc::from("task_status"),
        &verdict("t1", Level::Critical, &["missing_field"]),
    );
    let report = book.snapshot();
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert_eq!(back.critical_issues, 1);
}

#[test]
fn history_keeps_one_sample_per_interval_and_forgets_the_oldest() {
    let start = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let every = Duration::from_secs(5);
    let mut history = RatioHistory::new(every, 3, start);
    // Not due yet: nothing recorded, and the totals are not consumed.
    history.observe(start + Duration::from_secs(4), wall, 10, 10);
    assert!(history.samples().is_empty());
    history.observe(start + every, wall, 100, 99);
    // An interval without checks is a gap, not 100%.
    history.observe(start + every * 2, wall, 100, 99);
    history.observe(start + every * 3, wall, 150, 139);
    let samples = history.samples();
    assert_eq!(
        samples
            .iter()
            .map(|s| (s.checks, s.consistent, s.ratio))
            .collect::<Vec<_>>(),
        [(100, 99, Some(0.99)), (0, 0, None), (50, 40, Some(0.8))]
    );
    assert_eq!(samples[0].at_unix_ms, 1_000_000);
    history.observe(start + every * 4, wall, 160, 149);
    let samples = history.samples();
    assert_eq!(samples.len(), 3, "bounded");
    assert_eq!(samples[0].ratio, None, "the oldest went first");
    assert_eq!(samples[2].ratio, Some(1.0));
}

#[test]
fn status_reads_every_section_from_the_registry() {
    use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

    use crate::config::Config;
    use crate::engine::Mode;
    use crate::settings::Settings;

    let settings = Settings::compile(Config::default()).expect("defaults compile");
    let book = Book::new(10);
    book.record(
        &Arc::from("task_status"),
        &verdict("t-9", Level::MinorIssue, &["completed_stage"]),
    );
    // The families under the names the layers register, filled by hand.
    let registry = Registry::new();
    let family = |name: &str, labels: &[&str]| {
        let family = IntCounterVec::new(Opts::new(name, "test"), labels).expect("family");
        registry
            .register(Box::new(family.clone()))
            .expect("register");
        family
    };
    let gauge = |name: &str, value: i64| {
        let gauge = IntGauge::new(name, "test").expect("gauge");
        gauge.set(value);
        registry.register(Box::new(gauge)).expect("register");
    };
    family("consistency_checks_total", &["route"])
        .with_label_values(&["task_status"])
        .inc_by(4);
    let results = family("consistency_results_total", &["route", "level"]);
    for (level, n) in [("consistent", 3), ("minor_issue", 1)] {
        results.with_label_values(&["task_status", level]).inc_by(n);
    }
    let issues = family("consistency_issues_total", &["route", "rule", "level"]);
    issues
        .with_label_values(&["task_status", "completed_stage", "minor_issue"])
        .inc();
    issues
        .with_label_values(&["task_status", "completed_progress", "minor_issue"])
        .inc_by(2);
    let fixes = family("consistency_fixes_total", &["route", "rule", "mode"]);
    fixes
        .with_label_values(&["task_status", "completed_stage", "applied"])
        .inc();
    fixes.with_label_values(&["task_status", "completed_stage", "shadow"]);
    fixes.with_label_values(&["task_status", "failed_stage", "applied"]);
    fixes
        .with_label_values(&["task_status", "failed_stage", "shadow"])
        .inc_by(3);
    let skipped = family("consistency_skipped_total", &["route", "reason"]);
    skipped.with_label_values(&["task_status", "not_json"]);
    skipped
        .with_label_values(&["test_history", "not_json"])
        .inc_by(5);
    let requests = family(
        "consistency_proxy_requests_total",
        &["route", "method", "code"],
    );
    requests
        .with_label_values(&["task_status", "GET", "2xx"])
        .inc_by(6);
    requests.with_label_values(&["other", "POST", "5xx"]).inc();
    let upstream_errors = family("consistency_proxy_upstream_errors_total", &["reason"]);
    upstream_errors.with_label_values(&["connect"]).inc();
    upstream_errors.with_label_values(&["timeout"]);
    let load_shed =
        prometheus::IntCounter::new("consistency_proxy_load_shed_total", "test").expect("counter");
    load_shed.inc();
    registry.register(Box::new(load_shed)).expect("register");
    gauge("consistency_proxy_inflight_requests", 2);
    gauge("consistency_tracked_tasks", 7);
    family("consistency_tracker_evictions_total", &["reason"]).with_label_values(&["ttl"]);

    let started = Started {
        at: Instant::now(),
        wall: SystemTime::now(),
    };
    let status = Status::collect(&book.book, &registry, &settings, started);
    assert_eq!(status.report.total_checks, 1, "the book's own counts");
    assert_eq!(status.objective, OBJECTIVE);
    assert_eq!(status.sidecar.mode, Mode::Fix);
    assert_eq!(status.sidecar.version, env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = status.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["task_status", "test_progress", "test_history"]);

    let route = &status.routes[0];
    assert!(route.tracked);
    assert_eq!((route.requests, route.checks, route.ratio), (6, 4, 0.75));
    assert_eq!(route.levels.consistent, 3);
    assert_eq!(route.levels.minor_issue, 1);
    // Most frequent first; rules that never fired are listed at 0.
    assert_eq!(route.issues[0].rule, "completed_progress");
    assert_eq!(route.issues[0].count, 2);
    assert_eq!(route.issues[1].rule, "completed_stage");
    assert!(route.issues[2..].iter().all(|r| r.count == 0));
    // Applied and shadow fixes of a rule side by side, most fixes first.
    let fixes: Vec<(&str, u64, u64)> = route
        .fixes
        .iter()
        .map(|f| (f.rule.as_str(), f.applied, f.shadow))
        .collect();
    assert_eq!(fixes, [("failed_stage", 0, 3), ("completed_stage", 1, 0)]);
    assert_eq!(route.skipped["not_json"], 0);
    assert_eq!(status.routes[2].skipped["not_json"], 5);
    assert!(!status.routes[2].tracked);
    // A route with no checks reads 100%, as consistency_ratio does.
    assert_eq!(status.routes[1].ratio, 1.0);

    assert_eq!(status.proxy.requests, 7);
    assert_eq!(status.proxy.requests_by_code["2xx"], 6);
    assert_eq!(status.proxy.requests_by_code["5xx"], 1);
    assert_eq!(status.proxy.upstream_errors, 1);
    assert_eq!(status.proxy.upstream_errors_by_reason["connect"], 1);
    assert_eq!(status.proxy.upstream_errors_by_reason["timeout"], 0);
    assert_eq!((status.proxy.inflight, status.proxy.load_shed), (2, 1));
    assert_eq!(status.tracker.tracked_tasks, 7);
    assert_eq!(status.tracker.store, "local");
    assert!(
        !status.tracker.store_up,
        "no store_up series in this registry"
    );
    assert_eq!(status.tracker.evictions["ttl"], 0);

    // The report's fields stay at the top level of the JSON, beside the sections.
    let json = serde_json::to_value(&status).expect("serialises");
    assert_eq!(json["total_checks"], 1);
    assert_eq!(json["routes"][0]["name"], "task_status");
    let back: Status = serde_json::from_value(json.clone()).expect("round trips");
    assert_eq!(back, status);
    let report: Report = serde_json::from_value(json).expect("still reads as a Report");
    assert_eq!(report, status.report);
}

/// The report's totals are the registry's (the families `/metrics` serves and the status page
/// reads per route): the book counts nothing, so the two cannot disagree, whatever it lists.
#[test]
fn the_report_totals_are_the_registry_counts_even_listing_no_issue() {
    use prometheus::Registry;

    use crate::config::Config;
    use crate::inspection::InspectionFamilies;
    use crate::settings::Settings;

    let registry = Registry::new();
    let families = InspectionFamilies::register(&registry).expect("register");
    let book = ReportBook::new(0, families.tallies());
    let tallies = families.tallies();
    for (route, level, n) in [
        ("task_status", Level::Consistent, 7),
        ("task_status", Level::Critical, 2),
        ("test_progress", Level::MinorIssue, 1),
    ] {
        tallies
            .results
            .with_label_values(&[route, level.as_str()])
            .inc_by(n);
    }
    tallies
        .issues
        .with_label_values(&["task_status", "missing_field", "critical"])
        .inc_by(3);
    tallies
        .issues
        .with_label_values(&["test_progress", "completed_stage", "minor_issue"])
        .inc();
    book.record(
        &Arc::from("task_status"),
        &verdict("t-1", Level::Critical, &["missing_field"]),
    );

    let report = book.snapshot();
    assert_eq!(report.total_checks, 10);
    assert_eq!(report.issues_found, 4);
    assert_eq!(report.critical_issues, 2);
    assert_eq!(report.levels.consistent, 7);
    assert_eq!(report.consistency_ratio, 0.7);
    assert!(
        report.recent_issues.is_empty(),
        "recent_issues = 0 lists none"
    );

    let settings = Settings::compile(Config::default()).expect("defaults compile");
    let started = Started {
        at: Instant::now(),
        wall: SystemTime::now(),
    };
    let status = Status::collect(&book, &registry, &settings, started);
    let routes = |level: fn(&LevelCounts) -> u64| -> u64 {
        status.routes.iter().map(|r| level(&r.levels)).sum()
    };
    assert_eq!(routes(|l| l.consistent), status.report.levels.consistent);
    assert_eq!(routes(|l| l.critical), status.report.critical_issues);
    assert_eq!(routes(|l| l.minor_issue), status.report.levels.minor_issue);
    let issues: u64 = status
        .routes
        .iter()
        .flat_map(|r| &r.issues)
        .map(|r| r.count)
        .sum();
    assert_eq!(issues, status.report.issues_found);
}
