//! Unit tests for rules in shadow: the body is what the same rules without that rule give, the
//! rule's issues are reported without moving the record's level, and its would-be fixes are
//! what it fixes once switched to fix.

use super::*;

/// The shipped rules with `extra` laid over them (a TOML `[[rules]]` list).
fn rules_with(extra: &str) -> RuleSet {
    let config = config::parse(extra).expect("config parses");
    RuleSet::compile(&config.model, &config.rules).expect("rules compile")
}

/// The shipped rules with `rule` given `key = value`.
fn rule_set(rule: &str, key: &str, value: &str) -> RuleSet {
    rules_with(&format!("[[rules]]\nname = \"{rule}\"\n{key} = {value}"))
}

/// The default rules that fix something.
fn fixing_rules() -> Vec<String> {
    let rules = default_rules();
    let names: Vec<String> = rules
        .labels()
        .filter(|l| l.fixes)
        .map(|l| l.name.to_string())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    names
}

/// Every body of the rule table, plus bodies where several rules fire and chain, several
/// records, and duplicated keys.
fn bodies() -> Vec<(&'static str, String)> {
    let mut bodies: Vec<(&str, String)> =
        RULE_CASES.iter().map(|c| ("", c.1.to_string())).collect();
    for body in [
        r#"{"status":"completed","stage":"source_tracing","progress":80,"is_completed":false}"#,
        r#"{"status":"failed","stage":"ai_fetching","progress":35,"is_completed":false}"#,
        r#"{"status":"completed","stage":"init","progress":"x","is_completed":false}"#,
        r#"{"stage":"x","status":"completed","stage":"init","progress":10,"is_completed":true}"#,
    ] {
        bodies.push(("", body.to_string()));
    }
    bodies.push((
        "/history/*",
        r#"{"history":[{"status":"completed","stage":"init","progress":5,"is_completed":false},{"status":"running","stage":"init","progress":5,"is_completed":false},{"status":"failed","stage":"failed","progress":9,"is_completed":true}]}"#
            .to_string(),
    ));
    bodies
}

fn fix_tuples(fixes: &[Fix]) -> Vec<(&str, Field, &str, &str)> {
    fixes
        .iter()
        .map(|f| (&*f.rule, f.field, f.before.as_str(), f.after.as_str()))
        .collect()
}

/// The heart of shadow mode, for every fixing rule and every body: the bytes, the other issues,
/// the fixes and the level are those of the same rules with that rule removed; the rule's own
/// issues are flagged; its would-be fixes are exactly its fixes once switched to fix.
#[test]
fn a_rule_in_shadow_changes_nothing_and_would_fix_what_it_fixes_in_fix_mode() {
    for rule in fixing_rules() {
        let shadow = rule_set(&rule, "mode", "\"shadow\"");
        let removed = rule_set(&rule, "enabled", "false");
        let fixing = default_rules();
        let mut would_fix = 0;
        for (records, body) in bodies() {
            let case = format!("{rule} in shadow on {body}");
            let (s, input) = run_with(&shadow, records, Mode::Fix, &body);
            let (r, r_input) = run_with(&removed, records, Mode::Fix, &body);
            let (f, _) = run_with(&fixing, records, Mode::Fix, &body);
            assert_eq!(text(&s.body), text(&r.body), "{case}");
            assert_eq!(
                same_buffer(&s.body, &input),
                same_buffer(&r.body, &r_input),
                "{case}: an unchanged body is the same buffer"
            );
            for ((vs, vr), vf) in verdicts(&s).iter().zip(verdicts(&r)).zip(verdicts(&f)) {
                let live: Vec<&Issue> = vs.issues.iter().filter(|i| !i.shadow).collect();
                assert_eq!(live, vr.issues.iter().collect::<Vec<_>>(), "{case}");
                assert!(
                    vs.issues
                        .iter()
                        .filter(|i| i.shadow)
                        .all(|i| *i.rule == *rule),
                    "{case}: only {rule} is in shadow"
                );
                assert_eq!(vs.level, vr.level, "{case}");
                assert_eq!(vs.fixes, vr.fixes, "{case}");
                assert_eq!(vs.sent, vr.sent, "{case}");
                // Switched to fix, the rule makes exactly the fixes it would have made.
                let own: Vec<Fix> = vf
                    .fixes
                    .iter()
                    .filter(|x| *x.rule == *rule)
                    .cloned()
                    .collect();
                assert_eq!(fix_tuples(&vs.shadow_fixes), fix_tuples(&own), "{case}");
                would_fix += vs.shadow_fixes.len();
            }
            // Rolling out: the switch to fix changes the bytes exactly when it would fix.
            let changes = verdicts(&s).iter().any(|v| !v.shadow_fixes.is_empty());
            assert_eq!(text(&f.body) != text(&s.body), changes, "{case}");
        }
        assert!(would_fix > 0, "no body shows what {rule} would fix");
    }
}

#[test]
fn a_shadow_issue_is_reported_with_its_level_but_leaves_the_record_consistent() {
    let shadow = rule_set("completed_stage", "mode", "\"shadow\"");
    let body = r#"{"task_id":"t","status":"completed","stage":"ai_fetching","progress":100,"is_completed":true}"#;
    let (out, input) = run_with(&shadow, "", Mode::Fix, body);
    assert!(same_buffer(&out.body, &input), "nothing applied");
    let v = &verdicts(&out)[0];
    assert_eq!(v.level, Level::Consistent, "the SLO does not move");
    assert_eq!(v.issues.len(), 1);
    assert_eq!(
        (&*v.issues[0].rule, v.issues[0].level, v.issues[0].shadow),
        ("completed_stage", Level::MinorIssue, true)
    );
    assert!(v.fixes.is_empty());
    assert_eq!(
        fix_tuples(&v.shadow_fixes),
        [(
            "completed_stage",
            Field::Stage,
            "\"ai_fetching\"",
            "\"completed\""
        )]
    );
    assert_eq!(
        v.sent.stage.as_deref(),
        Some("ai_fetching"),
        "sent as it came"
    );

    // Beside a rule in fix mode, the record's level is that rule's; only its fix is applied.
    let body = r#"{"status":"completed","stage":"ai_fetching","progress":90,"is_completed":true}"#;
    let (out, _) = run_with(&shadow, "", Mode::Fix, body);
    let v = &verdicts(&out)[0];
    assert_eq!(
        text(&out.body),
        r#"{"status":"completed","stage":"ai_fetching","progress":100,"is_completed":true}"#
    );
    assert_eq!(v.level, Level::MinorIssue);
    assert_eq!(fix_tuples(&v.fixes)[0].0, "completed_progress");
    assert_eq!(fix_tuples(&v.shadow_fixes)[0].0, "completed_stage");

    // Observe mode fixes nothing, so nothing would be fixed either; the issue is still flagged.
    let (out, _) = run_with(&shadow, "", Mode::Observe, body);
    let v = &verdicts(&out)[0];
    assert!(v.fixes.is_empty() && v.shadow_fixes.is_empty());
    assert!(v
        .issues
        .iter()
        .any(|i| i.shadow && &*i.rule == "completed_stage"));
}

/// A rule in shadow whose fix would make a rule in fix mode fire: neither fires for real.
/// And a fix that makes a rule in shadow fire: reported, its fix only counted.
#[test]
fn chains_through_a_shadow_rule_happen_only_in_the_would_be_run() {
    // terminal_not_marked would set is_completed, which completed_progress needs.
    let shadow = rule_set("terminal_not_marked", "mode", "\"shadow\"");
    let body = r#"{"status":"completed","stage":"completed","progress":80,"is_completed":false}"#;
    let (out, input) = run_with(&shadow, "", Mode::Fix, body);
    assert!(same_buffer(&out.body, &input));
    let v = &verdicts(&out)[0];
    let fired: Vec<_> = v.issues.iter().map(|i| (&*i.rule, i.shadow)).collect();
    assert_eq!(fired, [("terminal_not_marked", true)]);
    assert_eq!(
        fix_tuples(&v.shadow_fixes),
        [("terminal_not_marked", Field::IsCompleted, "false", "true")],
        "only its own fix: completed_progress would follow, but is not in shadow"
    );
    // Switched to fix: both apply.
    let (out, _) = run(body);
    assert_eq!(
        text(&out.body),
        r#"{"status":"completed","stage":"completed","progress":100,"is_completed":true}"#
    );

    // completed_stage (fix) reaches a state where a new rule in shadow fires.
    let rules = rules_with(
        r#"
[[rules]]
name = "completed_stage_progress"
level = "major_issue"
when = { stage = { is = "completed" }, progress = { is_not = 100 } }
fix = { progress = 100 }
mode = "shadow"
"#,
    );
    let body = r#"{"status":"completed","stage":"init","progress":40}"#;
    let (out, _) = run_with(&rules, "", Mode::Fix, body);
    assert_eq!(
        text(&out.body),
        r#"{"status":"completed","stage":"completed","progress":40}"#
    );
    let v = &verdicts(&out)[0];
    assert_eq!(
        v.level,
        Level::MinorIssue,
        "the major shadow issue does not count"
    );
    let shadow: Vec<_> = v
        .issues
        .iter()
        .filter(|i| i.shadow)
        .map(|i| &*i.rule)
        .collect();
    assert_eq!(shadow, ["completed_stage_progress"]);
    assert_eq!(
        fix_tuples(&v.shadow_fixes),
        [("completed_stage_progress", Field::Progress, "40", "100")]
    );
}

/// Fixes that would not settle once the rule is switched to fix are said now, in shadow.
#[test]
fn a_shadow_rule_that_would_not_settle_is_reported_in_shadow() {
    let rules = rules_with(
        r#"
[[rules]]
name = "to_y"
level = "minor_issue"
when = { stage = { is = "x" } }
fix = { stage = "y" }
[[rules]]
name = "to_x"
level = "major_issue"
when = { stage = { is = "y" } }
fix = { stage = "x" }
mode = "shadow"
"#,
    );
    let body = r#"{"status":"running","stage":"x"}"#;
    let (out, _) = run_with(&rules, "", Mode::Fix, body);
    assert_eq!(text(&out.body), r#"{"status":"running","stage":"y"}"#);
    let v = &verdicts(&out)[0];
    // unknown_value (y is outside the model); neither shadow issue counts.
    assert_eq!(v.level, Level::Critical);
    let removed = rules_with(
        "[[rules]]\nname = \"to_y\"\nlevel = \"minor_issue\"\nwhen = { stage = { is = \"x\" } }\nfix = { stage = \"y\" }",
    );
    let (r, _) = run_with(&removed, "", Mode::Fix, body);
    assert_eq!(text(&r.body), text(&out.body));
    assert_eq!(verdicts(&r)[0].level, v.level);
    assert!(v.shadow_fixes.is_empty());
    let last = v.issues.last().expect("issues");
    assert_eq!((&*last.rule, last.shadow), (FIX_NOT_CONVERGING, true));
    assert!(
        last.message.starts_with(
            "with the rules in shadow switched to fix, fixes of to_y, to_x would not settle"
        ),
        "{}",
        last.message
    );
}

/// A transition finding in shadow: reported, its fix only counted, the memory keeps what was
/// sent (the backend's value), and a rule in shadow cannot veto a transition fix.
#[test]
fn a_transition_rule_in_shadow_is_judged_but_never_applied() {
    let body = Bytes::from_static(
        br#"{"task_id":"t","status":"running","stage":"init","progress":30,"is_completed":false}"#,
    );
    let mut judge = ScriptedJudge {
        findings: vec![TransitionFinding {
            shadow: true,
            ..finding(
                "progress_regression",
                Level::MinorIssue,
                Some((Field::Progress, serde_json::json!(60))),
            )
        }],
        ..Default::default()
    };
    let out = inspect(&default_rules(), &route("", Mode::Fix), &body, &mut judge);
    assert!(same_buffer(&out.body, &body));
    let v = &verdicts(&out)[0];
    assert_eq!(v.level, Level::Consistent);
    assert!(v.issues[0].shadow);
    assert!(v.fixes.is_empty());
    assert_eq!(
        fix_tuples(&v.shadow_fixes),
        [("progress_regression", Field::Progress, "30", "60")]
    );
    assert_eq!(
        judge.remembered[0].1.progress,
        Some(30.0),
        "progress not held"
    );

    // A single-record rule in shadow that the transition fix would make fire does not veto it:
    // without that rule, the fix applies.
    let rules = rules_with(
        r#"
[[rules]]
name = "sixty"
level = "critical"
when = { progress = { is = 60 } }
mode = "shadow"
"#,
    );
    let mut judge = ScriptedJudge {
        findings: vec![finding(
            "progress_regression",
            Level::MinorIssue,
            Some((Field::Progress, serde_json::json!(60))),
        )],
        ..Default::default()
    };
    let out = inspect(&rules, &route("", Mode::Fix), &body, &mut judge);
    assert_eq!(
        &out.body[..],
        br#"{"task_id":"t","status":"running","stage":"init","progress":60,"is_completed":false}"#
    );
    assert_eq!(judge.remembered[0].1.progress, Some(60.0));
}
