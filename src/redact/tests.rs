//! Unit tests for redaction: keys at any depth, inside arrays, repeated; pointers; the hash.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::engine::{Fix, Issue, Level, RecordState};

fn redactor(keys: &[&str], pointers: &[&str]) -> Redactor {
    Redactor::compile(&RedactionConfig {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        pointers: pointers.iter().map(|p| p.to_string()).collect(),
        key_file: Default::default(),
    })
    .expect("compiles")
}

fn hashed(value: &Value) -> &str {
    let text = value.as_str().expect("a redacted value is a string");
    assert!(text.starts_with(PREFIX), "{text}");
    assert_eq!(text.len(), PREFIX.len() + HASH_DIGITS);
    text
}

#[test]
fn listed_keys_are_hashed_at_every_depth_inside_arrays_and_every_time_they_appear() {
    let r = redactor(&["email"], &[]);
    let mut body = json!({
        "email": "a@example.com",
        "owner": {"email": "a@example.com", "name": "Ann"},
        "history": [{"email": "b@example.com"}, {"email": "a@example.com", "tags": [{"email": 7}]}],
    });
    r.redact(&mut body);
    let text = body.to_string();
    assert!(!text.contains("example.com"), "{text}");
    // Equal values hash alike, wherever they are; different values differ.
    let top = hashed(&body["email"]).to_owned();
    assert_eq!(hashed(&body["owner"]["email"]), top);
    assert_eq!(hashed(&body["history"][1]["email"]), top);
    assert_ne!(hashed(&body["history"][0]["email"]), top);
    hashed(&body["history"][1]["tags"][0]["email"]);
    assert_eq!(body["owner"]["name"], "Ann");
}

#[test]
fn a_key_repeated_in_one_object_leaves_neither_value_in_the_redacted_body() {
    let r = redactor(&["token"], &[]);
    let body = br#"{"token":"first-secret","status":"running","token":"second-secret"}"#;
    let text = r.body(body);
    assert!(!text.contains("secret"), "{text}");
    let value: Value = serde_json::from_str(&text).expect("JSON");
    hashed(&value["token"]);
    assert_eq!(value["status"], "running");
}

#[test]
fn pointers_redact_one_place_and_a_star_matches_every_index() {
    let r = redactor(&[], &["/owner/name", "/history/*/brand", "/a~1b"]);
    let mut body = json!({
        "owner": {"name": "Ann", "city": "Oslo"},
        "name": "kept",
        "history": [{"brand": "x"}, {"brand": "y", "other": 1}],
        "a/b": true,
    });
    r.redact(&mut body);
    hashed(&body["owner"]["name"]);
    hashed(&body["history"][0]["brand"]);
    hashed(&body["history"][1]["brand"]);
    hashed(&body["a/b"]);
    assert_eq!(body["owner"]["city"], "Oslo");
    assert_eq!(body["name"], "kept");
    assert_eq!(body["history"][1]["other"], 1);
}

#[test]
fn whole_subtrees_hash_as_one_value_and_non_json_hashes_whole() {
    let r = redactor(&["profile"], &[]);
    let mut a = json!({"profile": {"email": "a@example.com"}});
    let mut b = json!({"x": [{"profile": {"email": "a@example.com"}}]});
    r.redact(&mut a);
    r.redact(&mut b);
    assert_eq!(hashed(&a["profile"]), hashed(&b["x"][0]["profile"]));
    let text = r.body(b"not json, secret");
    assert!(!text.contains("secret"));
    hashed(&serde_json::from_str::<Value>(&text).expect("a JSON string"));
}

#[test]
fn the_hash_is_keyed_stable_within_a_key_and_different_across_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("key");
    std::fs::write(&file, b"one key").expect("write");
    let config = RedactionConfig {
        keys: vec!["email".into()],
        pointers: vec![],
        key_file: file.clone(),
    };
    let keyed = Redactor::compile(&config).expect("compiles");
    let again = Redactor::compile(&config).expect("compiles");
    assert_eq!(keyed.hash(b"\"v\""), again.hash(b"\"v\""));
    let random = redactor(&["email"], &[]);
    assert_ne!(keyed.hash(b"\"v\""), random.hash(b"\"v\""));
    assert_eq!(random.hash(b"\"v\""), redactor(&[], &[]).hash(b"\"v\""));

    std::fs::write(&file, b"").expect("write");
    let err = Redactor::compile(&config).expect_err("an empty key file is refused");
    assert!(err.to_string().contains("redaction.key_file"), "{err}");
}

#[test]
fn nothing_listed_leaves_a_body_as_it_came() {
    let r = redactor(&[], &[]);
    let body = br#"{"b":1,  "a":2}"#;
    assert_eq!(r.body(body), r#"{"b":1,  "a":2}"#);
}

#[test]
fn a_redacted_task_field_leaves_logged_fixes_and_messages_without_its_value() {
    let r = redactor(&["stage"], &[]);
    let fields = FieldsConfig {
        status: "status".into(),
        stage: "stage".into(),
        progress: "progress".into(),
        is_completed: "is_completed".into(),
        task_id: vec!["task_id".into()],
    };
    let redacted = r.task_fields(&fields);
    assert_eq!(redacted, vec![Field::Stage]);
    let verdict = RecordVerdict {
        task_id: Some("t1".into()),
        task_id_too_long: false,
        level: Level::MinorIssue,
        issues: vec![Issue {
            rule: Arc::from("completed_stage"),
            level: Level::MinorIssue,
            message: "status=completed but stage=source_tracing".into(),
            shadow: false,
        }],
        fixes: vec![Fix {
            rule: Arc::from("completed_stage"),
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
    };
    let scrubbed = r.verdict(&redacted, &verdict);
    let fix = &scrubbed.fixes[0];
    assert_eq!(fix.before, r.hash(b"\"source_tracing\""));
    assert_eq!(fix.after, r.hash(b"\"completed\""));
    let message = &scrubbed.issues[0].message;
    assert!(!message.contains("source_tracing"), "{message}");
    assert!(message.contains(&fix.before), "{message}");
}
