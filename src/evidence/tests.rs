//! Unit tests for the evidence rings: bounds under a flood, the newest kept, queries.

use std::sync::Arc;

use super::*;
use crate::config::RedactionConfig;
use crate::engine::{Field, Fix, Issue, Level, RecordState, RecordVerdict};
use crate::redact::Redactor;

fn verdict(task: &str, rules: &[&str]) -> RecordVerdict {
    RecordVerdict {
        task_id: Some(task.into()),
        task_id_too_long: false,
        level: Level::MinorIssue,
        issues: rules
            .iter()
            .map(|rule| Issue {
                rule: Arc::from(*rule),
                level: Level::MinorIssue,
                message: format!("{rule} fired"),
                shadow: false,
            })
            .collect(),
        fixes: vec![Fix {
            rule: Arc::from(rules[0]),
            field: Field::Stage,
            before: "\"source_tracing\"".into(),
            after: "\"completed\"".into(),
        }],
        shadow_fixes: vec![],
        sent: RecordState {
            status: Some("completed".into()),
            stage: Some("completed".into()),
            progress: Some(100.0),
            is_completed: Some(true),
        },
    }
}

fn entry(route: &str, task: &str, rules: &[&str], redactor: &Redactor) -> Entry {
    let route: Arc<str> = Arc::from(route);
    let instance: Arc<str> = Arc::from("test-instance");
    let seen = Seen {
        route: &route,
        method: "GET",
        path: "/test/status/x",
        instance: &instance,
        redactor,
        redacted: &[],
        body: None,
    };
    Entry::new(&seen, &verdict(task, rules), None)
}

fn no_redaction() -> Redactor {
    Redactor::compile(&RedactionConfig::default()).expect("compiles")
}

#[test]
fn a_flood_stays_within_the_entry_bound_of_each_ring_and_keeps_the_newest() {
    let redactor = no_redaction();
    let book = EvidenceBook::new(16, 1 << 20);
    for i in 0..10_000 {
        book.keep(entry(
            "task_status",
            &format!("t{i}"),
            &["completed_stage"],
            &redactor,
        ));
        book.keep(entry(
            "test_history",
            &format!("h{i}"),
            &["failed_stage"],
            &redactor,
        ));
    }
    for (_, _, entries, _) in book.rings() {
        assert_eq!(entries, 16);
    }
    let found = book.find(&Query {
        route: Some("task_status".into()),
        limit: 100,
        ..Query::default()
    });
    let ids: Vec<&str> = found.iter().filter_map(|e| e.task_id.as_deref()).collect();
    let newest: Vec<String> = (10_000 - 16..10_000).map(|i| format!("t{i}")).collect();
    for id in &newest {
        assert!(
            ids.contains(&id.as_str()),
            "{id} is among the newest: {ids:?}"
        );
    }
    assert_eq!(ids.len(), 16);
}

#[test]
fn a_flood_stays_within_the_byte_bound_of_each_ring_and_keeps_the_newest() {
    let redactor = no_redaction();
    let one = entry("task_status", "t0", &["completed_stage"], &redactor).size();
    let bound = one * 5 + one / 2;
    let book = EvidenceBook::new(1000, bound);
    for i in 0..5_000 {
        book.keep(entry(
            "task_status",
            &format!("t{i:05}"),
            &["completed_stage"],
            &redactor,
        ));
        let (_, bytes) = book.held();
        assert!(bytes <= bound, "{bytes} > {bound}");
    }
    let found = book.find(&Query {
        limit: 100,
        ..Query::default()
    });
    let ids: Vec<&str> = found.iter().filter_map(|e| e.task_id.as_deref()).collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.contains(&"t04999"), "{ids:?}");
    assert!(ids.contains(&"t04995"), "{ids:?}");
}

#[test]
fn an_entry_of_two_rules_is_kept_in_both_rings_and_found_once() {
    let redactor = no_redaction();
    let book = EvidenceBook::new(4, 1 << 20);
    book.keep(entry(
        "task_status",
        "both",
        &["completed_stage", "terminal_not_marked"],
        &redactor,
    ));
    assert_eq!(book.rings().len(), 2);
    let all = book.find(&Query {
        limit: 10,
        ..Query::default()
    });
    assert_eq!(all.len(), 1);
    let by_rule = book.find(&Query {
        rule: Some("terminal_not_marked".into()),
        limit: 10,
        ..Query::default()
    });
    assert_eq!(by_rule.len(), 1);
    let other_task = book.find(&Query {
        task: Some("nope".into()),
        limit: 10,
        ..Query::default()
    });
    assert!(other_task.is_empty());
}

#[test]
fn an_entry_holds_the_fields_as_received_and_as_sent() {
    let redactor = no_redaction();
    let entry = entry("task_status", "t1", &["completed_stage"], &redactor);
    assert_eq!(entry.received["stage"], "source_tracing");
    assert_eq!(entry.sent["stage"], "completed");
    assert_eq!(entry.received["progress"], 100);
    assert_eq!(entry.fixes[0].before, "source_tracing");
}

#[test]
fn zero_entries_keeps_nothing() {
    let redactor = no_redaction();
    let book = EvidenceBook::new(0, 0);
    book.keep(entry("task_status", "t1", &["completed_stage"], &redactor));
    assert_eq!(book.held(), (0, 0));
}
