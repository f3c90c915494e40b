//! Unit tests for the report book and its text layout.

use std::sync::Arc;

use super::*;
use crate::engine::{Issue, RecordState};

fn verdict(task: &str, level: Level, rules: &[&str]) -> RecordVerdict {
    RecordVerdict {
        task_id: Some(task.into()),
        level,
        issues: rules
            .iter()
            .map(|r| Issue {
                rule: Arc::from(*r),
                level,
                message: format!("{r} broke"),
            })
            .collect(),
        fixes: Vec::new(),
        sent: RecordState::default(),
    }
}

#[test]
fn empty_book_reports_full_consistency() {
    let report = ReportBook::new(10).snapshot();
    assert_eq!(report.total_checks, 0);
    assert_eq!(report.consistency_ratio, 1.0);
    assert!(report.to_text().contains("Consistency ratio: 100.00%"));
}

#[test]
fn counts_levels_and_keeps_newest_issues_first() {
    let book = ReportBook::new(3);
    for i in 0..995 {
        book.record(
            "task_status",
            &verdict(&format!("ok_{i}"), Level::Consistent, &[]),
        );
    }
    for i in 0..5 {
        book.record(
            "task_status",
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

#[test]
fn json_round_trips() {
    let book = ReportBook::new(10);
    book.record(
        "task_status",
        &verdict("t1", Level::Critical, &["missing_field"]),
    );
    let report = book.snapshot();
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert_eq!(back.critical_issues, 1);
}
