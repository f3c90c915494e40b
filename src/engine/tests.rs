//! Unit tests for the inspection engine: each rule, the scanner, the patch, the judge hook.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use super::inspect::FIX_NOT_CONVERGING;
use super::*;
// The default rules and field keys are the shipped configuration's.
use crate::config::{self, Config};
use crate::settings::Settings;

mod shadow;

fn route(records: &str, mode: Mode) -> RouteSpec {
    let config = Config::default();
    RouteSpec::compile(
        records,
        &config.fields,
        mode,
        false,
        config.tracker.max_task_id_bytes,
    )
    .expect("route compiles")
}

fn default_rules() -> RuleSet {
    let config = Config::default();
    RuleSet::compile(&config.model, &config.rules).expect("the default rules compile")
}

fn run_with(rules: &RuleSet, records: &str, mode: Mode, body: &str) -> (Inspection, Bytes) {
    let input = Bytes::copy_from_slice(body.as_bytes());
    let out = inspect(rules, &route(records, mode), &input, &mut NoMemory);
    (out, input)
}

fn run(body: &str) -> (Inspection, Bytes) {
    run_with(&default_rules(), "", Mode::Fix, body)
}

fn verdicts(i: &Inspection) -> &[RecordVerdict] {
    match &i.outcome {
        Outcome::Checked(v) => v,
        Outcome::Skipped(r) => panic!("skipped: {r:?}"),
    }
}

fn fired(i: &Inspection) -> BTreeSet<String> {
    verdicts(i)
        .iter()
        .flat_map(|v| v.issues.iter().map(|i| i.rule.to_string()))
        .collect()
}

fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).expect("utf-8")
}

/// `(rule, body, fires, patched body)`; `None`: the body comes back as the same buffer.
const RULE_CASES: &[(&str, &str, bool, Option<&str>)] = &[
    // completed_stage
    (
        "completed_stage",
        r#"{"status":"completed","stage":"ai_fetching","progress":100,"is_completed":true}"#,
        true,
        Some(r#"{"status":"completed","stage":"completed","progress":100,"is_completed":true}"#),
    ),
    (
        "completed_stage",
        r#"{"status":"running","stage":"ai_fetching","progress":40,"is_completed":false}"#,
        false,
        None,
    ),
    (
        "completed_stage",
        r#"{"status":"completed","progress":100,"is_completed":true}"#,
        false,
        None,
    ),
    // failed_stage
    (
        "failed_stage",
        r#"{"status":"failed","stage":"ranking_analysis","progress":0,"is_completed":true}"#,
        true,
        Some(r#"{"status":"failed","stage":"failed","progress":0,"is_completed":true}"#),
    ),
    (
        "failed_stage",
        r#"{"status":"failed","stage":"failed","progress":0,"is_completed":true}"#,
        false,
        None,
    ),
    // completed_progress
    (
        "completed_progress",
        r#"{"status":"completed","stage":"completed","progress":90,"is_completed":true}"#,
        true,
        Some(r#"{"status":"completed","stage":"completed","progress":100,"is_completed":true}"#),
    ),
    (
        "completed_progress",
        r#"{"status":"completed","stage":"completed","progress":1.0e2,"is_completed":true}"#,
        false,
        None,
    ),
    (
        "completed_progress",
        r#"{"status":"completed","stage":"completed","is_completed":true}"#,
        false,
        None,
    ),
    // failed_progress
    (
        "failed_progress",
        r#"{"status":"failed","stage":"failed","progress":35,"is_completed":true}"#,
        true,
        Some(r#"{"status":"failed","stage":"failed","progress":0,"is_completed":true}"#),
    ),
    (
        "failed_progress",
        r#"{"status":"failed","stage":"failed","progress":-0.0,"is_completed":true}"#,
        false,
        None,
    ),
    // terminal_not_marked
    (
        "terminal_not_marked",
        r#"{"status":"completed","stage":"completed","progress":100,"is_completed":false}"#,
        true,
        Some(r#"{"status":"completed","stage":"completed","progress":100,"is_completed":true}"#),
    ),
    (
        "terminal_not_marked",
        r#"{"status":"running","stage":"init","progress":0,"is_completed":false}"#,
        false,
        None,
    ),
    // running_marked_complete: reported, never fixed
    (
        "running_marked_complete",
        r#"{"status":"running","stage":"ai_fetching","progress":50,"is_completed":true}"#,
        true,
        None,
    ),
    (
        "running_marked_complete",
        r#"{"status":"running","stage":"ai_fetching","progress":50,"is_completed":false}"#,
        false,
        None,
    ),
    // stage_ahead_of_status
    (
        "stage_ahead_of_status",
        r#"{"status":"running","stage":"completed","progress":50,"is_completed":false}"#,
        true,
        None,
    ),
    (
        "stage_ahead_of_status",
        r#"{"status":"pending","stage":"init","progress":0,"is_completed":false}"#,
        false,
        None,
    ),
    // progress_range: wrong type is checked, not unparseable
    (
        "progress_range",
        r#"{"status":"running","stage":"init","progress":"90","is_completed":false}"#,
        true,
        None,
    ),
    (
        "progress_range",
        r#"{"status":"running","stage":"init","progress":100.5,"is_completed":false}"#,
        true,
        None,
    ),
    (
        "progress_range",
        r#"{"status":"running","stage":"init","progress":-1,"is_completed":false}"#,
        true,
        None,
    ),
    (
        "progress_range",
        r#"{"status":"running","stage":"init","progress":0,"is_completed":false}"#,
        false,
        None,
    ),
    (
        "progress_range",
        r#"{"status":"running","stage":"init","is_completed":false}"#,
        false,
        None,
    ),
    // unknown_value: a non-string is unknown
    (
        "unknown_value",
        r#"{"status":"paused","stage":"init","progress":0,"is_completed":false}"#,
        true,
        None,
    ),
    (
        "unknown_value",
        r#"{"status":"running","stage":3,"progress":0,"is_completed":false}"#,
        true,
        None,
    ),
    (
        "unknown_value",
        r#"{"status":"failed","stage":"failed","progress":0,"is_completed":true}"#,
        false,
        None,
    ),
    // missing_field
    (
        "missing_field",
        r#"{"status":"running","progress":0,"is_completed":false}"#,
        true,
        None,
    ),
    ("missing_field", r#"{}"#, true, None),
    (
        "missing_field",
        r#"{"status":null,"stage":null}"#,
        false,
        None,
    ),
];

#[test]
fn each_rule_fires_holds_and_fixes() {
    for &(rule, body, fires, patched) in RULE_CASES {
        let (out, input) = run(body);
        assert_eq!(
            fired(&out).contains(rule),
            fires,
            "{rule} on {body}: {:?}",
            fired(&out)
        );
        match patched {
            Some(expected) => assert_eq!(text(&out.body), expected, "{rule} on {body}"),
            None => assert!(
                same_buffer(&out.body, &input),
                "{rule} on {body}: changed to {}",
                text(&out.body)
            ),
        }
        // Observe mode: same verdict issues, no fixes, same buffer.
        let (observed, input) = run_with(&default_rules(), "", Mode::Observe, body);
        assert_eq!(
            fired(&observed).contains(rule),
            fires,
            "observe {rule} on {body}"
        );
        assert!(same_buffer(&observed.body, &input));
        assert!(verdicts(&observed)[0].fixes.is_empty());
    }
}

#[test]
fn every_default_rule_has_cases() {
    let names: BTreeSet<_> = RULE_CASES.iter().map(|c| c.0).collect();
    let rules = default_rules();
    for name in rules.labels().map(|l| l.name) {
        assert!(names.contains(name), "no cases for {name}");
    }
}

#[test]
fn consistent_body_is_the_same_buffer() {
    let body = r#"{"task_id":"t1","status":"running","stage":"ai_fetching","progress":40,"is_completed":false}"#;
    let (out, input) = run(body);
    assert!(same_buffer(&out.body, &input));
    let v = &verdicts(&out)[0];
    assert_eq!(v.level, Level::Consistent);
    assert_eq!(v.task_id.as_deref(), Some("t1"));
    assert!(v.issues.is_empty() && v.fixes.is_empty());
    assert_eq!(
        v.sent,
        RecordState {
            status: Some("running".into()),
            stage: Some("ai_fetching".into()),
            progress: Some(40.0),
            is_completed: Some(false),
        }
    );
}

#[test]
fn fixes_chain_to_a_fixpoint() {
    // terminal_not_marked makes completed_progress apply; both are reported and fixed.
    let body =
        r#"{"status":"completed","stage":"source_tracing","progress":80,"is_completed":false}"#;
    let (out, _) = run(body);
    assert_eq!(
        text(&out.body),
        r#"{"status":"completed","stage":"completed","progress":100,"is_completed":true}"#
    );
    let v = &verdicts(&out)[0];
    let rules: Vec<_> = v.issues.iter().map(|i| &*i.rule).collect();
    assert_eq!(
        rules,
        [
            "completed_stage",
            "terminal_not_marked",
            "completed_progress"
        ]
    );
    let fixes: Vec<_> = v
        .fixes
        .iter()
        .map(|f| (&*f.rule, f.field, f.before.as_str(), f.after.as_str()))
        .collect();
    assert_eq!(
        fixes,
        [
            (
                "completed_stage",
                Field::Stage,
                "\"source_tracing\"",
                "\"completed\""
            ),
            ("terminal_not_marked", Field::IsCompleted, "false", "true"),
            ("completed_progress", Field::Progress, "80", "100"),
        ]
    );
    assert_eq!(v.level, Level::MinorIssue);
    assert_eq!(
        v.issues[0].message,
        "status=completed but stage=source_tracing"
    );
    assert_eq!(v.sent.progress, Some(100.0));
    assert_eq!(v.sent.is_completed, Some(true));
}

#[test]
fn record_level_is_the_worst_issue() {
    let (out, _) =
        run(r#"{"status":"running","stage":"completed","progress":"x","is_completed":true}"#);
    let v = &verdicts(&out)[0];
    assert_eq!(v.level, Level::MajorIssue);
    let (out, _) = run(
        r#"{"status":"completed","stage":"ai_fetching","progress":100,"is_completed":true,"x":1}"#,
    );
    assert_eq!(verdicts(&out)[0].level, Level::MinorIssue);
    let (out, _) = run(r#"{"status":"zzz","stage":"init"}"#);
    assert_eq!(verdicts(&out)[0].level, Level::Critical);
}

#[test]
fn messages_use_raw_text_or_absent() {
    let (out, _) = run(r#"{"status":"completed","stage":"ai_fetching"}"#);
    assert_eq!(
        verdicts(&out)[0].issues[0].message,
        "status=completed but stage=ai_fetching"
    );
    let (out, _) = run(r#"{"status":"running","stage":"init","progress":1.5e3}"#);
    let v = &verdicts(&out)[0];
    assert_eq!(
        v.issues[0].message,
        "progress=1.5e3 is not a number in 0..=100"
    );
    let (out, _) = run(r#"{"status":"x\u0041","stage":"init"}"#);
    assert_eq!(
        verdicts(&out)[0].issues[0].message,
        "status=xA or stage=init is outside its enumeration"
    );
}

#[test]
fn patch_keeps_every_other_byte() {
    let body = "{ \"detail\" : {\"status\":\"running\"},\n  \"status\" :\"\\u0063ompleted\",\t\"note\":\"\\u4e2d\\/\",\n  \"stage\":  \"ai_fetching\" , \"progress\": 1.0E2, \"is_completed\" : true, \"extra\":[1,2.50,{}] }\n";
    let (out, _) = run(body);
    let expected = body.replace("\"ai_fetching\"", "\"completed\"");
    assert_eq!(text(&out.body), expected);
    assert_eq!(fired(&out), BTreeSet::from(["completed_stage".to_string()]));
}

#[test]
fn nested_fields_are_not_the_records() {
    // Only top-level fields count: the nested status is ignored, so stage is missing.
    let (out, _) = run(r#"{"detail":{"status":"completed","stage":"init"},"status":"running"}"#);
    assert_eq!(fired(&out), BTreeSet::from(["missing_field".to_string()]));
}

#[test]
fn record_pointers() {
    let rules = default_rules();
    let bad = r#"{"status":"completed","stage":"init","progress":100,"is_completed":true}"#;
    let good = r#"{"status":"running","stage":"init","progress":5,"is_completed":false}"#;

    let body = format!(r#"{{"code":0,"data":{bad},"status":"ignored"}}"#);
    let (out, _) = run_with(&rules, "/data", Mode::Fix, &body);
    assert_eq!(verdicts(&out).len(), 1);
    assert_eq!(text(&out.body), body.replace("\"init\"", "\"completed\""));

    let body = format!(r#"{{"history":[{good},{bad},7,{good}],"total":4}}"#);
    let (out, _) = run_with(&rules, "/history/*", Mode::Fix, &body);
    let levels: Vec<_> = verdicts(&out).iter().map(|v| v.level).collect();
    // Non-object elements are not records.
    assert_eq!(
        levels,
        [Level::Consistent, Level::MinorIssue, Level::Consistent]
    );
    assert_eq!(
        text(&out.body),
        body.replacen(
            r#""stage":"init","progress":100"#,
            r#""stage":"completed","progress":100"#,
            1
        )
    );

    let body = format!(r#"{{"items":[{good},{bad}]}}"#);
    let (out, _) = run_with(&rules, "/items/1", Mode::Fix, &body);
    assert_eq!(verdicts(&out).len(), 1);
    assert_eq!(verdicts(&out)[0].level, Level::MinorIssue);

    let body = format!(r#"{{"a/b":{{"m~n":{good}}}}}"#);
    let (out, _) = run_with(&rules, "/a~1b/m~0n", Mode::Fix, &body);
    assert_eq!(verdicts(&out).len(), 1);

    // Duplicate pointer key: the last one is the record, as JSON parsers read it.
    let body = format!(r#"{{"data":{bad},"data":{good}}}"#);
    let (out, input) = run_with(&rules, "/data", Mode::Fix, &body);
    assert_eq!(verdicts(&out).len(), 1);
    assert_eq!(verdicts(&out)[0].level, Level::Consistent);
    assert!(same_buffer(&out.body, &input));
}

#[test]
fn nothing_to_check_is_no_record() {
    let rules = default_rules();
    for (records, body) in [
        ("/data", r#"{"code":0}"#),
        ("/data", r#"{"data":[1,2]}"#),
        ("/data", r#"{"data":null}"#),
        ("/history/*", r#"{"history":[]}"#),
        ("/history/*", r#"{"history":[1,"x",null]}"#),
        ("/history/*", r#"[1,2]"#),
        ("", r#"[{"status":"running","stage":"init"}]"#),
        ("", r#""completed""#),
        ("", "42"),
    ] {
        let (out, input) = run_with(&rules, records, Mode::Fix, body);
        assert_eq!(
            out.outcome,
            Outcome::Skipped(SkipReason::NoRecord),
            "{records} {body}"
        );
        assert!(same_buffer(&out.body, &input));
    }
}

fn nested(depth: usize) -> String {
    format!(
        r#"{{"status":"running","stage":"init","d":{}1{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

#[test]
fn bad_input_is_unparseable_and_untouched() {
    let bad: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        b"not json".to_vec(),
        br#"{"status":"completed","stage":"init""#.to_vec(),
        br#"{"status":"completed","stage":"init"} x"#.to_vec(),
        br#"{"status":"completed","stage":"init",}"#.to_vec(),
        br#"{"status":"completed" "stage":"init"}"#.to_vec(),
        br#"{"status":'completed'}"#.to_vec(),
        br#"{"progress":01}"#.to_vec(),
        br#"{"progress":1.}"#.to_vec(),
        br#"{"progress":.5}"#.to_vec(),
        br#"{"progress":1e}"#.to_vec(),
        br#"{"progress":+1}"#.to_vec(),
        br#"{"progress":1e400}"#.to_vec(),
        format!(r#"{{"progress":{}}}"#, "9".repeat(400)).into_bytes(),
        br#"{"progress":NaN}"#.to_vec(),
        br#"{"status":"a\x"}"#.to_vec(),
        br#"{"status":"\ud800"}"#.to_vec(),
        br#"{"status":"\udc00\ud800"}"#.to_vec(),
        br#"{"status":"\u12"}"#.to_vec(),
        b"{\"status\":\"tab\there\"}".to_vec(),
        b"{\"status\":\"\xff\"}".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        br#"{"a":tru}"#.to_vec(),
        br#"{"a":[1,2}"#.to_vec(),
        br#"{"a":{"b":1]}"#.to_vec(),
        br#"{1:2}"#.to_vec(),
        nested(128).into_bytes(),
        "[".repeat(100_000).into_bytes(),
    ];
    for body in bad {
        let input = Bytes::from(body);
        for records in ["", "/data", "/history/*"] {
            let out = inspect(
                &default_rules(),
                &route(records, Mode::Fix),
                &input,
                &mut NoMemory,
            );
            assert_eq!(
                out.outcome,
                Outcome::Skipped(SkipReason::Unparseable),
                "{records} {:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
            assert!(same_buffer(&out.body, &input));
        }
        if input.len() < 1000 {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&input).is_err(),
                "serde_json agrees"
            );
        }
    }
}

#[test]
fn accepted_like_serde_json() {
    let good = [
        nested(127),
        r#"{"status":"running","stage":"init","x":"\ud83d\ude00\u0000\"\\\/\b\f\n\r\t","n":[-0,0.5e-3,1E+2,123456789012345678901234567890,1e-400]}"#.into(),
        " \r\n\t{\"status\" : \"running\" , \"stage\":\"init\"} \n".into(),
        format!(r#"{{"status":"running","stage":"init","p":{}}}"#, "9".repeat(300)),
    ];
    for body in good {
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "{body}"
        );
        let (out, _) = run(&body);
        assert!(matches!(out.outcome, Outcome::Checked(_)), "{body}");
    }
}

#[test]
fn escaped_keys_and_values_match() {
    let body = r#"{"st\u0061tus":"\u0063ompleted","stage":"ai_fetching","progress":100,"is_completed":true}"#;
    let (out, _) = run(body);
    assert_eq!(
        text(&out.body),
        body.replace("\"ai_fetching\"", "\"completed\"")
    );
    assert_eq!(verdicts(&out)[0].sent.status.as_deref(), Some("completed"));
}

#[test]
fn duplicate_keys_last_wins_and_all_are_patched() {
    // The last occurrence is judged (serde_json, Python): stage "init" under completed.
    let body = r#"{"stage":"completed","status":"completed","stage":"init","progress":100,"is_completed":true}"#;
    let (out, _) = run(body);
    assert_eq!(fired(&out), BTreeSet::from(["completed_stage".to_string()]));
    assert_eq!(
        text(&out.body),
        r#"{"stage":"completed","status":"completed","stage":"completed","progress":100,"is_completed":true}"#
    );
    // Every occurrence is rewritten, whichever one a client reads.
    let body =
        r#"{"stage":"x","status":"completed","stage":"init","progress":100,"is_completed":true}"#;
    let (out, _) = run(body);
    assert_eq!(
        text(&out.body),
        r#"{"stage":"completed","status":"completed","stage":"completed","progress":100,"is_completed":true}"#
    );
    // A stale earlier occurrence alone is not judged: the record as parsed is consistent.
    let body = r#"{"stage":"x","status":"completed","stage":"completed","progress":100,"is_completed":true}"#;
    let (out, input) = run(body);
    assert!(same_buffer(&out.body, &input));
}

#[test]
fn task_id_falls_back_and_renders_numbers() {
    let cases = [
        (
            r#"{"task_id":"a","execution_id":"b","status":"running","stage":"init"}"#,
            Some("a"),
        ),
        (
            r#"{"execution_id":"b","task_id":"a","status":"running","stage":"init"}"#,
            Some("a"),
        ),
        (
            r#"{"execution_id":"b","status":"running","stage":"init"}"#,
            Some("b"),
        ),
        (
            r#"{"task_id":null,"execution_id":"b","status":"running","stage":"init"}"#,
            Some("b"),
        ),
        (
            r#"{"task_id":1.50e1,"status":"running","stage":"init"}"#,
            Some("1.50e1"),
        ),
        (
            r#"{"task_id":"\u4e2d","status":"running","stage":"init"}"#,
            Some("中"),
        ),
        (
            r#"{"detail":{"task_id":"x"},"status":"running","stage":"init"}"#,
            None,
        ),
    ];
    for (body, id) in cases {
        let (out, _) = run(body);
        assert_eq!(verdicts(&out)[0].task_id.as_deref(), id, "{body}");
    }
}

#[test]
fn fix_values_render_compact_and_numbers_compare_by_value() {
    // TOML 100 equals JSON 100.0 and 1.0e2; nothing to fix, nothing rewritten.
    for p in ["100", "100.0", "1.0e2", "1e2", "100.000"] {
        let body = format!(
            r#"{{"status":"completed","stage":"completed","progress":{p},"is_completed":true}}"#
        );
        let (out, input) = run(&body);
        assert!(same_buffer(&out.body, &input), "{p}");
    }
}

#[test]
fn oscillating_rules_are_reported_not_looped() {
    let config = config::parse(
        r#"
[[rules]]
name = "to_y"
level = "minor_issue"
when = { stage = { is = "x" } }
fix = { stage = "y" }
[[rules]]
name = "to_x"
level = "minor_issue"
when = { stage = { is = "y" } }
fix = { stage = "x" }
[[rules]]
name = "cannot_clear"
level = "major_issue"
when = { progress = { number_in = [0, 100] }, status = { is = "pending" } }
fix = { progress = 50 }
"#,
    )
    .expect("config parses");
    let rules = RuleSet::compile(&config.model, &config.rules).expect("compiles");
    for (body, names) in [
        (
            r#"{"status":"running","stage":"x"}"#,
            "fixes of to_y, to_x do not settle",
        ),
        (
            r#"{"status":"pending","stage":"init","progress":50}"#,
            "fixes of cannot_clear do not settle",
        ),
    ] {
        let (out, input) = run_with(&rules, "", Mode::Fix, body);
        let v = &verdicts(&out)[0];
        assert!(same_buffer(&out.body, &input), "{body}");
        assert!(v.fixes.is_empty());
        let last = v.issues.last().expect("issues");
        assert_eq!(&*last.rule, FIX_NOT_CONVERGING, "{body}");
        assert!(last.message.starts_with(names), "{}", last.message);
        assert_eq!(last.level, v.level);
    }
}

#[test]
fn absent_fields_are_not_inserted() {
    let config = config::parse(
        r#"
[[rules]]
name = "needs_progress"
level = "minor_issue"
when = { status = { is = "completed" } }
fix = { progress = 100 }
"#,
    )
    .expect("config parses");
    let rules = RuleSet::compile(&config.model, &config.rules).expect("compiles");
    let (out, input) = run_with(
        &rules,
        "",
        Mode::Fix,
        r#"{"status":"completed","stage":"completed"}"#,
    );
    assert!(same_buffer(&out.body, &input));
    assert!(fired(&out).contains("needs_progress"));
}

#[test]
fn disabled_rules_are_skipped() {
    let config =
        config::parse("[[rules]]\nname = \"completed_stage\"\nenabled = false").expect("parses");
    let rules = RuleSet::compile(&config.model, &config.rules).expect("compiles");
    assert!(!rules
        .labels()
        .map(|l| l.name)
        .any(|n| n == "completed_stage"));
    assert_eq!(rules.labels().count(), 9);
    let (out, input) = run_with(
        &rules,
        "",
        Mode::Fix,
        r#"{"status":"completed","stage":"init"}"#,
    );
    assert!(same_buffer(&out.body, &input));
    assert!(!fired(&out).contains("completed_stage"));
}

#[test]
fn conditions_any_of_and_present() {
    let config = config::parse(
        r#"
[[rules]]
name = "custom"
level = "major_issue"
message = "p={progress} c={is_completed} {other}"
when = [ { progress = { number_in = [10, 20] } }, { is_completed = { present = false }, status = { one_of = ["pending"] } } ]
"#,
    )
    .expect("parses");
    let rules = RuleSet::compile(&config.model, &config.rules).expect("compiles");
    let fires = |body: &str| fired(&run_with(&rules, "", Mode::Fix, body).0).contains("custom");
    assert!(fires(
        r#"{"status":"running","stage":"init","progress":15,"is_completed":false}"#
    ));
    assert!(fires(
        r#"{"status":"running","stage":"init","progress":1.5e1,"is_completed":false}"#
    ));
    assert!(!fires(
        r#"{"status":"running","stage":"init","progress":25,"is_completed":false}"#
    ));
    assert!(!fires(
        r#"{"status":"running","stage":"init","progress":"15","is_completed":false}"#
    ));
    assert!(fires(r#"{"status":"pending","stage":"init","progress":0}"#));
    assert!(!fires(
        r#"{"status":"pending","stage":"init","progress":0,"is_completed":null}"#
    ));
    let (out, _) = run_with(
        &rules,
        "",
        Mode::Fix,
        r#"{"status":"pending","stage":"init"}"#,
    );
    let issue = verdicts(&out)[0]
        .issues
        .iter()
        .find(|i| &*i.rule == "custom")
        .cloned();
    assert_eq!(
        issue.map(|i| i.message).as_deref(),
        Some("p=<absent> c=<absent> {other}")
    );
}

#[test]
fn custom_field_names_per_route() {
    let config = config::parse(
        r#"
[fields]
status = "state"
task_id = ["id"]
[[routes]]
name = "r"
path = "/x"
records = "/data"
fields = { stage = "phase" }
"#,
    )
    .expect("parses");
    let settings = Settings::compile(config).expect("compiles");
    let spec = settings.routes.iter().next().expect("one route").spec();
    let body =
        Bytes::from_static(br#"{"data":{"id":7,"state":"completed","phase":"init","stage":"x"}}"#);
    let out = inspect(&default_rules(), spec, &body, &mut NoMemory);
    assert_eq!(
        &out.body[..],
        br#"{"data":{"id":7,"state":"completed","phase":"completed","stage":"x"}}"#
    );
    assert_eq!(verdicts(&out)[0].task_id.as_deref(), Some("7"));
}

#[test]
fn config_errors_name_the_key() {
    let rule_cases = [
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { progress = { is = \"90\" } }", "rules[10].when.progress.is"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { status = { one_of = [\"a\", 1] } }", "rules[10].when.status.one_of[1]"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { progress = { known = true } }", "rules[10].when.progress.known"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { progress = {} }", "rules[10].when.progress"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { stage = { present = false, is = \"x\" } }", "rules[10].when.stage.present"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = [{ status = { is = \"a\" } }, { progress = { number_in = [5, 1] } }]", "rules[10].when[1].progress.number_in"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = []", "rules[10].when"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { status = { is = \"a\" } }\nfix = { is_completed = 1 }", "rules[10].fix.is_completed"),
        ("[[rules]]\nname = \"r\"\nlevel = \"critical\"\nwhen = { stage = { present = false } }\nfix = { stage = \"init\" }", "rules[10].fix.stage"),
        ("[[rules]]\nname = \"progress_range\"\nwhen = { progress = { is_not = true } }", "rules[7].when.progress.is_not"),
    ];
    for (text, key) in rule_cases {
        let config = config::parse(text).expect(text);
        let err = RuleSet::compile(&config.model, &config.rules).expect_err(text);
        assert_eq!(err.key, key, "{text}: {err}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn defaults_compile_and_are_thread_safe() {
    fn shareable<T: Send + Sync + std::fmt::Debug>() {}
    shareable::<RuleSet>();
    shareable::<RouteSpec>();
    let rules = default_rules();
    assert_eq!(rules.labels().count(), 10);
    let settings = Settings::compile(Config {
        mode: Mode::Observe,
        ..Config::default()
    })
    .expect("compiles");
    let routes: Vec<_> = settings.routes.iter().collect();
    assert_eq!(routes[2].name(), "test_history");
    assert_eq!(routes[0].spec().mode(), Mode::Observe);
}

/// Records judge calls; proposes the given findings for every record.
#[derive(Default)]
struct ScriptedJudge {
    findings: Vec<TransitionFinding>,
    judged: Vec<(String, RecordState)>,
    remembered: Vec<(String, RecordState)>,
}

impl TransitionJudge for ScriptedJudge {
    fn judge(&mut self, task_id: &str, state: &RecordState) -> Vec<TransitionFinding> {
        self.judged.push((task_id.into(), state.clone()));
        self.findings.clone()
    }
    fn remember(&mut self, task_id: &str, sent: &RecordState) {
        self.remembered.push((task_id.into(), sent.clone()));
    }
}

fn finding(rule: &str, level: Level, fix: Option<(Field, serde_json::Value)>) -> TransitionFinding {
    TransitionFinding {
        rule: Arc::from(rule),
        level,
        message: format!("{rule} happened"),
        fix,
        shadow: false,
    }
}

#[test]
fn transition_judge_sees_fixed_state_and_remembers_sent() {
    let body = Bytes::from_static(
        br#"{"task_id":"t","status":"completed","stage":"ranking_analysis","progress":70,"is_completed":true}"#,
    );
    let mut judge = ScriptedJudge {
        findings: vec![
            // Accepted: progress 100 → 100 is no change; use stage regression hold instead.
            finding(
                "progress_regression",
                Level::MinorIssue,
                Some((Field::Progress, serde_json::json!(100))),
            ),
            // Rejected: running would make running_marked_complete fire (new issue).
            finding(
                "terminal_reopened",
                Level::Critical,
                Some((Field::Status, serde_json::json!("running"))),
            ),
            finding("stage_regression", Level::MajorIssue, None),
        ],
        ..Default::default()
    };
    let out = inspect(&default_rules(), &route("", Mode::Fix), &body, &mut judge);
    let v = &verdicts(&out)[0];
    // The judge saw the state after single-record fixes.
    assert_eq!(judge.judged[0].1.stage.as_deref(), Some("completed"));
    assert_eq!(judge.judged[0].1.progress, Some(100.0));
    let rules: Vec<_> = v.issues.iter().map(|i| &*i.rule).collect();
    assert_eq!(
        rules,
        [
            "completed_stage",
            "completed_progress",
            "progress_regression",
            "terminal_reopened",
            "stage_regression"
        ]
    );
    assert_eq!(v.level, Level::Critical);
    assert!(v.fixes.iter().all(|f| &*f.rule != "terminal_reopened"));
    assert_eq!(judge.remembered, vec![("t".to_string(), v.sent.clone())]);
    assert_eq!(v.sent.status.as_deref(), Some("completed"));
}

#[test]
fn transition_fix_applies_when_rules_allow() {
    let body = Bytes::from_static(
        br#"{"task_id":"t","status":"running","stage":"init","progress":30,"is_completed":false}"#,
    );
    let mut judge = ScriptedJudge {
        findings: vec![finding(
            "progress_regression",
            Level::MinorIssue,
            Some((Field::Progress, serde_json::json!(60))),
        )],
        ..Default::default()
    };
    let out = inspect(&default_rules(), &route("", Mode::Fix), &body, &mut judge);
    assert_eq!(
        &out.body[..],
        br#"{"task_id":"t","status":"running","stage":"init","progress":60,"is_completed":false}"#
    );
    let v = &verdicts(&out)[0];
    assert_eq!(v.fixes.len(), 1);
    assert_eq!(
        (v.fixes[0].before.as_str(), v.fixes[0].after.as_str()),
        ("30", "60")
    );
    assert_eq!(judge.remembered[0].1.progress, Some(60.0));

    // Observe mode: reported, not applied; the original is remembered.
    let mut judge = ScriptedJudge {
        findings: vec![finding(
            "progress_regression",
            Level::MinorIssue,
            Some((Field::Progress, serde_json::json!(60))),
        )],
        ..Default::default()
    };
    let out = inspect(
        &default_rules(),
        &route("", Mode::Observe),
        &body,
        &mut judge,
    );
    assert!(same_buffer(&out.body, &body));
    assert_eq!(verdicts(&out)[0].level, Level::MinorIssue);
    assert_eq!(judge.remembered[0].1.progress, Some(30.0));
}

#[test]
fn records_without_task_id_are_not_judged() {
    let body = Bytes::from_static(br#"{"history":[{"status":"running","stage":"init"},{"execution_id":"e","status":"running","stage":"init"}]}"#);
    let mut judge = ScriptedJudge::default();
    inspect(
        &default_rules(),
        &route("/history/*", Mode::Fix),
        &body,
        &mut judge,
    );
    let ids: Vec<_> = judge.judged.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["e"]);
    assert_eq!(judge.remembered.len(), 1);
}

#[test]
fn a_task_id_past_the_bound_is_cut_checked_and_not_judged() {
    let max = Config::default().tracker.max_task_id_bytes;
    let long = "x".repeat(max + 44);
    let body = Bytes::from(format!(
        r#"{{"task_id":"{long}","status":"completed","stage":"init","progress":100,"is_completed":true}}"#
    ));
    let mut judge = ScriptedJudge::default();
    let out = inspect(&default_rules(), &route("", Mode::Fix), &body, &mut judge);
    assert!(judge.judged.is_empty() && judge.remembered.is_empty());
    let verdict = &verdicts(&out)[0];
    assert!(verdict.task_id_too_long);
    assert_eq!(
        verdict.task_id.as_deref(),
        Some(format!("{}…[+44 bytes]", "x".repeat(max)).as_str())
    );
    assert!(verdict.issues.iter().any(|i| &*i.rule == "completed_stage"));
}

/// The error on a misspelt `when` field lists the fields and conditions: all of them, so a
/// condition added to `Condition` must be added to the message too.
#[test]
fn a_misspelt_when_field_lists_every_field_and_condition() {
    let err = toml::from_str::<RuleConfig>("name = \"r\"\nwhen = { statuz = { is = 1 } }")
        .expect_err("statuz is no field");
    let message = err.message();
    assert!(message.contains("unknown field `statuz`"), "{message}");
    for field in Field::ALL {
        assert!(message.contains(field.as_str()), "{field} in {message}");
    }
    let every = Condition {
        present: Some(true),
        is: Some(1.into()),
        is_not: Some(1.into()),
        one_of: Some(vec![]),
        not_one_of: Some(vec![]),
        known: Some(true),
        number_in: Some([0.0, 1.0]),
        not_number_in: Some([0.0, 1.0]),
    };
    let serde_json::Value::Object(conditions) = serde_json::to_value(every).expect("serializes")
    else {
        panic!("a condition serializes as an object")
    };
    for condition in conditions.keys() {
        assert!(
            message.contains(condition.as_str()),
            "{condition} in {message}"
        );
    }
}
