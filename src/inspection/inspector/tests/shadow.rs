//! Unit tests for rules in shadow through the inspection layer: what the client gets, what is
//! counted, the shadow header, and a transition rule in shadow across polls.

use super::*;
use crate::engine::RuleMode;

/// Sets the mode of the single-record rule `name`.
fn single_rule(config: &mut Config, name: &str, mode: RuleMode) {
    let rule = config
        .rules
        .iter_mut()
        .find(|r| r.name == name)
        .expect("a default rule");
    rule.mode = Some(mode);
}

/// Takes the single-record rule `name` out.
fn without(config: &mut Config, name: &str) {
    config.rules.retain(|r| r.name != name);
}

/// The status record of task `id` as the backend sends it.
fn record(id: &str, status: &str, stage: &str, progress: u32, done: bool) -> String {
    format!(
        r#"{{"task_id": "{id}", "status": "{status}", "stage": "{stage}", "progress": {progress}, "is_completed": {done}}}"#
    )
}

#[tokio::test]
async fn a_shadow_rule_is_counted_and_the_client_gets_the_bytes_of_the_config_without_it() {
    let shadow = harness(|c| {
        single_rule(c, "completed_stage", RuleMode::Shadow);
        c.inspect.shadow_header = true;
        c.inspect.fixed_header = true;
    });
    let removed = harness(|c| without(c, "completed_stage"));
    // Only completed_stage fires: nothing is applied, so the response is the upstream's.
    let mut upstream = json_response(STALE_STAGE);
    upstream
        .headers_mut()
        .insert("etag", HeaderValue::from_static("\"v1\""));
    let (head, body) = shadow.get("/test/status/t2", upstream).await;
    let (_, without_it) = removed
        .get("/test/status/t2", json_response(STALE_STAGE))
        .await;
    let body = body.unwrap();
    assert_eq!(body, without_it.unwrap());
    assert_eq!(body, STALE_STAGE.as_bytes());
    assert_eq!(head.headers["etag"], "\"v1\"", "the body is the upstream's");
    assert_eq!(head.headers[SHADOW_HEADER], "completed_stage");
    assert!(!head.headers.contains_key(FIXED_HEADER));
    assert_eq!(shadow.fixes("completed_stage", "shadow"), 1.0);
    assert_eq!(shadow.fixes("completed_stage", "applied"), 0.0);
    assert_eq!(shadow.issues("completed_stage"), 1.0);
    // The record counts as consistent: a rule tried out in shadow does not move the ratio.
    assert_eq!(
        shadow.metric("consistency_ratio", &[("route", "task_status")]),
        1.0
    );

    // Beside a fix of another rule: that fix applies, and only it.
    let both = record("t3", "completed", "ai_fetching", 90, true);
    let (head, body) = shadow.get("/test/status/t3", json_response(&both)).await;
    let (_, without_it) = removed.get("/test/status/t3", json_response(&both)).await;
    let body = body.unwrap();
    assert_eq!(body, without_it.unwrap());
    assert_eq!(
        body,
        record("t3", "completed", "ai_fetching", 100, true).as_bytes()
    );
    assert_eq!(head.headers[SHADOW_HEADER], "completed_stage");
    assert_eq!(head.headers[FIXED_HEADER], "completed_progress");
    assert_eq!(shadow.fixes("completed_stage", "shadow"), 2.0);
    assert_eq!(shadow.fixes("completed_progress", "applied"), 1.0);
}

/// Rolling out: the same response, with the rule in shadow and then switched to fix.
#[tokio::test]
async fn switching_a_rule_from_shadow_to_fix_changes_the_bytes() {
    let mut sent = Vec::new();
    for mode in [RuleMode::Shadow, RuleMode::Fix] {
        let h = harness(|c| single_rule(c, "completed_stage", mode));
        let (_, body) = h.get("/test/status/t2", json_response(STALE_STAGE)).await;
        sent.push(body.unwrap());
        let (counted, other) = match mode {
            RuleMode::Shadow => ("shadow", "applied"),
            RuleMode::Fix => ("applied", "shadow"),
        };
        assert_eq!(h.fixes("completed_stage", counted), 1.0, "{mode}");
        assert_eq!(h.fixes("completed_stage", other), 0.0, "{mode}");
    }
    assert_eq!(sent[0], STALE_STAGE.as_bytes());
    assert_eq!(sent[1], STALE_STAGE_FIXED.as_bytes());
}

/// progress_regression in shadow: the would-be hold is counted, the client gets the backend's
/// progress, and the memory keeps what was sent, exactly as with the rule off.
#[tokio::test]
async fn a_transition_rule_in_shadow_never_holds_the_progress() {
    let shadow = harness(|c| {
        c.tracker.rules.progress_regression.mode = RuleMode::Shadow;
        c.inspect.shadow_header = true;
    });
    let off = harness(|c| c.tracker.rules.progress_regression.enabled = false);
    let fixing = harness(|_| {});
    let polls = [60, 50, 55];
    let mut sent_by_fixing = Vec::new();
    for (i, progress) in polls.into_iter().enumerate() {
        let body = record("t7", "running", "ai_fetching", progress, false);
        let (head, s) = shadow.get("/test/status/t7", json_response(&body)).await;
        let (_, o) = off.get("/test/status/t7", json_response(&body)).await;
        let (_, f) = fixing.get("/test/status/t7", json_response(&body)).await;
        let s = s.unwrap();
        assert_eq!(s, o.unwrap(), "poll {i}");
        assert_eq!(s, body.as_bytes(), "poll {i}: the backend's progress");
        assert_eq!(
            head.headers.get(SHADOW_HEADER).is_some(),
            i == 1,
            "poll {i}: only the drop would be held"
        );
        sent_by_fixing.push(f.unwrap());
    }
    let labels = |mode| {
        [
            ("route", "task_status"),
            ("rule", "progress_regression"),
            ("mode", mode),
        ]
    };
    // 60 → 50 would be held at 60; 50 → 55 is progress, since 50 was what the client saw.
    assert_eq!(
        shadow.metric("consistency_fixes_total", &labels("shadow")),
        1.0
    );
    assert_eq!(
        shadow.metric("consistency_fixes_total", &labels("applied")),
        0.0
    );
    assert_eq!(
        shadow.metric(
            "consistency_results_total",
            &[("route", "task_status"), ("level", "consistent")]
        ),
        3.0,
        "its issue leaves the records consistent"
    );
    // In fix mode the hold applies, and the client is held at 60 twice.
    let held = record("t7", "running", "ai_fetching", 60, false);
    assert_eq!(sent_by_fixing[1], held.as_bytes());
    assert_eq!(sent_by_fixing[2], held.as_bytes());
    assert_eq!(
        fixing.metric("consistency_fixes_total", &labels("applied")),
        2.0
    );
}
