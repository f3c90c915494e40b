//! [`inspect`]: scan the body, check each record, fix to a fixpoint, ask the transition judge,
//! and patch only the bytes of changed values.
//!
//! A rule in shadow is reported like any other, but the record goes through the fixpoint and
//! the judge exactly as it would with that rule removed; what it would fix comes from a second
//! run in which it applies its fix, never sent.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use super::json::{self, Kind, RecordSpans, ValueSpan};
use super::route::RouteSpec;
use super::rules::{Rule, RuleSet};
use super::value::{record_state, slot_of, Slot, State, Val};
use super::verdict::{
    Fix, Inspection, Issue, Outcome, RecordVerdict, SkipReason, TransitionFinding, TransitionJudge,
};
use super::vocab::{Field, Level, Mode, RuleMode};

/// Rule name of the issue raised when a rule set's fixes keep changing a record.
pub const FIX_NOT_CONVERGING: &str = "fix_not_converging";

/// Checks every record of `body` against `rules`; in fix mode returns the patched body.
///
/// The returned body is `body` itself (same buffer) when nothing changed. Records with a task id
/// are shown to `judge` after the single-record fixes, and what is sent is remembered.
pub fn inspect(
    rules: &RuleSet,
    route: &RouteSpec,
    body: &Bytes,
    judge: &mut dyn TransitionJudge,
) -> Inspection {
    let skipped = |reason| Inspection {
        outcome: Outcome::Skipped(reason),
        body: body.clone(),
    };
    let text: &[u8] = body;
    let Ok(records) = json::scan(text, route) else {
        return skipped(SkipReason::Unparseable);
    };
    if records.is_empty() {
        return skipped(SkipReason::NoRecord);
    }
    let fix = route.mode() == Mode::Fix;
    let mut edits = Vec::new();
    let verdicts = records
        .iter()
        .map(|rec| {
            check_record(
                rules,
                text,
                rec,
                (fix, route.max_task_id_bytes),
                judge,
                &mut edits,
            )
        })
        .collect();
    let body = if edits.is_empty() {
        body.clone()
    } else {
        patch(body, edits)
    };
    Inspection {
        outcome: Outcome::Checked(verdicts),
        body,
    }
}

/// Replace `start..end` with `text` (borrowed from the body or a rule, as a rule's fix value
/// usually is).
struct Edit<'a> {
    start: usize,
    end: usize,
    text: Cow<'a, str>,
}

/// What checking one record found: every issue, the fixes applied, the fixes shadow rules
/// would have made.
#[derive(Default)]
struct Found {
    issues: Vec<Issue>,
    fixes: Vec<Fix>,
    shadow_fixes: Vec<Fix>,
}

/// Which rules' fixes a run of the fixpoint applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// Observe mode: none.
    Nothing,
    /// Fix mode: the rules in fix mode. Rules in shadow are only reported, so the state, the
    /// fixes and the rounds are those of the same rule set without them.
    FixMode,
    /// What would happen if the rules in shadow were switched to fix: every rule.
    Every,
}

fn check_record<'a>(
    rules: &'a RuleSet,
    text: &'a [u8],
    rec: &RecordSpans,
    (fix, max_task_id_bytes): (bool, usize),
    judge: &mut dyn TransitionJudge,
    edits: &mut Vec<Edit<'a>>,
) -> RecordVerdict {
    let original = || -> State<'_> {
        std::array::from_fn(|i| rec.fields[i].last.map(|span| slot_at(text, &span)))
    };
    let task_id = rec.task_id.map(|(_, span)| match span.kind {
        Kind::Str => json::string_text(text, &span),
        _ => Cow::Borrowed(json::str_at(text, span.start, span.end)),
    });
    // An id past the bound is not remembered: the single-record rules still run.
    let task_id_too_long = task_id
        .as_ref()
        .is_some_and(|id| id.len() > max_task_id_bytes);
    let task_id = task_id.map(|id| super::cut(&id, max_task_id_bytes).into_owned());
    let mut found = Found::default();
    let mut state = original();
    let apply = if fix { Apply::FixMode } else { Apply::Nothing };
    if let Err(unsettled) = fix_to_fixpoint(rules, &mut state, apply, &mut found) {
        // A rule set whose fixes keep changing the record: send it as it came, and say so.
        state = original();
        found.fixes.clear();
        let names: Vec<&str> = unsettled.iter().map(|&i| &*rules.rules[i].name).collect();
        let names = names.join(", ");
        found.issues.push(Issue {
            rule: FIX_NOT_CONVERGING.into(),
            level: worst(&found.issues),
            message: format!(
                "fixes of {names} do not settle within {} rounds; record left unfixed",
                rounds(rules, apply)
            ),
            shadow: false,
        });
    }
    if fix {
        would_fix(rules, original(), &mut found);
    }
    let sent = match &task_id {
        Some(id) if !task_id_too_long => {
            judge_transitions(rules, id, &mut state, fix, judge, &mut found)
        }
        _ => record_state(&state),
    };
    if fix {
        for (slot, spans) in rec.fields.iter().enumerate() {
            let (Some(span), Some(now)) = (spans.last, &state[slot]) else {
                continue;
            };
            if text.get(span.start..span.end) != Some(now.raw.as_bytes()) {
                // A duplicated key is rewritten everywhere, whichever occurrence a client reads.
                for s in spans.earlier.iter().chain(std::iter::once(&span)) {
                    edits.push(Edit {
                        start: s.start,
                        end: s.end,
                        text: now.raw.clone(),
                    });
                }
            }
        }
    }
    RecordVerdict {
        task_id,
        task_id_too_long,
        level: worst(&found.issues),
        issues: found.issues,
        fixes: found.fixes,
        shadow_fixes: found.shadow_fixes,
        sent,
    }
}

/// The worst level among issues of rules not in shadow.
fn worst(issues: &[Issue]) -> Level {
    issues
        .iter()
        .filter(|i| !i.shadow)
        .map(|i| i.level)
        .max()
        .unwrap_or(Level::Consistent)
}

/// The rounds a fixpoint may take: one more than the rules that take part in it.
fn rounds(rules: &RuleSet, apply: Apply) -> usize {
    match apply {
        Apply::FixMode => rules.len() - rules.shadow_len() + 1,
        Apply::Nothing | Apply::Every => rules.len() + 1,
    }
}

/// Reports every rule that fires on the record or on any intermediate fixed state (once each),
/// and applies the fixes `apply` allows until nothing fixable fires. If it does not settle
/// within [`rounds`] (a rule set whose fixes oscillate or cannot clear their own rule), returns
/// the fixable rules still firing in the last round.
fn fix_to_fixpoint<'a>(
    rules: &'a RuleSet,
    state: &mut State<'a>,
    apply: Apply,
    found: &mut Found,
) -> Result<(), Vec<usize>> {
    let mut active: Vec<usize> = Vec::new();
    for _ in 0..rounds(rules, apply) {
        let mut changed = false;
        active.clear();
        for (i, rule) in rules.rules.iter().enumerate() {
            if !rules.fires(rule, state) {
                continue;
            }
            let shadow = rule.mode == RuleMode::Shadow;
            // Each rule is reported once per run: `found` holds this run's issues only.
            let reported = found
                .issues
                .iter()
                .any(|issue| Arc::ptr_eq(&issue.rule, &rule.name));
            if !reported {
                found.issues.push(Issue {
                    rule: rule.name.clone(),
                    level: rule.level,
                    message: rule.message(state),
                    shadow,
                });
            }
            let applies = match apply {
                Apply::Nothing => false,
                Apply::FixMode => !shadow,
                Apply::Every => true,
            };
            if !applies {
                continue;
            }
            for (slot, value) in &rule.fix {
                let Some(current) = &state[*slot] else {
                    continue;
                };
                if !active.contains(&i) {
                    active.push(i);
                }
                if current.val.same(&value.val) {
                    continue;
                }
                found.fixes.push(Fix {
                    rule: rule.name.clone(),
                    field: Field::ALL[*slot],
                    before: current.raw.to_string(),
                    after: value.raw.to_string(),
                });
                state[*slot] = Some(value.borrowed());
                changed = true;
            }
        }
        if !changed {
            // Nothing changed: a fixable rule that still fires cannot be fixed by its own values.
            return if active.is_empty() {
                Ok(())
            } else {
                Err(active)
            };
        }
    }
    Err(active)
}

/// Adds the fixes the rules in shadow would make if they were switched to fix: their fixes in
/// a run from the original record where every rule applies its own. Nothing to do when no rule
/// in shadow with a fix fired (that run would be the real one). If that run would not settle,
/// a shadow `fix_not_converging` issue says so instead, before the switch makes it real.
fn would_fix<'a>(rules: &'a RuleSet, mut state: State<'a>, found: &mut Found) {
    let shadow_fired = |rule: &Rule| {
        rule.mode == RuleMode::Shadow
            && !rule.fix.is_empty()
            && found.issues.iter().any(|i| i.rule == rule.name)
    };
    if rules.shadow_len() == 0 || !rules.rules.iter().any(shadow_fired) {
        return;
    }
    let mut all = Found::default();
    match fix_to_fixpoint(rules, &mut state, Apply::Every, &mut all) {
        Ok(()) => {
            let in_shadow = |fix: &Fix| {
                rules
                    .rules
                    .iter()
                    .any(|r| r.name == fix.rule && r.mode == RuleMode::Shadow)
            };
            found
                .shadow_fixes
                .extend(all.fixes.into_iter().filter(in_shadow));
        }
        // Already said of the record as it is sent.
        Err(_) if found.issues.iter().any(|i| &*i.rule == FIX_NOT_CONVERGING) => {}
        Err(unsettled) => {
            let names: Vec<&str> = unsettled.iter().map(|&i| &*rules.rules[i].name).collect();
            found.issues.push(Issue {
                rule: FIX_NOT_CONVERGING.into(),
                level: all.issues.iter().map(|i| i.level).max().unwrap_or(Level::Consistent),
                message: format!(
                    "with the rules in shadow switched to fix, fixes of {} would not settle within {} rounds",
                    names.join(", "),
                    rounds(rules, Apply::Every)
                ),
                shadow: true,
            });
        }
    }
}

/// Shows the fixed state to the judge, applies the fixes it proposes that the single-record
/// rules accept (a finding in shadow only counts the fix it would make), remembers what is
/// sent, and returns it.
fn judge_transitions(
    rules: &RuleSet,
    task_id: &str,
    state: &mut State<'_>,
    fix: bool,
    judge: &mut dyn TransitionJudge,
    found: &mut Found,
) -> super::verdict::RecordState {
    let mut sent = record_state(state);
    let findings = judge.judge(task_id, &sent);
    if !findings.is_empty() {
        let mut accepted = false;
        for finding in findings {
            let TransitionFinding {
                rule,
                level,
                message,
                fix: proposal,
                shadow,
            } = finding;
            found.issues.push(Issue {
                rule: Arc::clone(&rule),
                level,
                message,
                shadow,
            });
            let (true, Some((field, value))) = (fix, proposal) else {
                continue;
            };
            let slot = slot_of(field);
            let new = Slot::from_json(&value);
            let before = match &state[slot] {
                Some(current) if !current.val.same(&new.val) => current.raw.to_string(),
                // Absent fields are never inserted; an equal value needs no fix.
                _ => continue,
            };
            let mut tentative = state.clone();
            tentative[slot] = Some(new.clone());
            let base = rules.firing(state);
            if rules.firing(&tentative).iter().all(|i| base.contains(i)) {
                let made = Fix {
                    rule,
                    field,
                    before,
                    after: new.raw.to_string(),
                };
                if shadow {
                    found.shadow_fixes.push(made);
                } else {
                    found.fixes.push(made);
                    *state = tentative;
                    accepted = true;
                }
            }
        }
        if accepted {
            sent = record_state(state);
        }
    }
    judge.remember(task_id, &sent);
    sent
}

fn slot_at<'a>(text: &'a [u8], span: &ValueSpan) -> Slot<'a> {
    let raw = json::str_at(text, span.start, span.end);
    let val = match span.kind {
        Kind::Str => Val::Str(json::string_text(text, span)),
        Kind::Num => raw
            .parse::<f64>()
            .map_or(Val::Composite(Cow::Borrowed(raw)), Val::Num),
        Kind::Bool(b) => Val::Bool(b),
        Kind::Null => Val::Null,
        Kind::Object | Kind::Array => Val::Composite(Cow::Borrowed(raw)),
    };
    Slot {
        raw: Cow::Borrowed(raw),
        val,
    }
}

/// Copies `body` with the edits applied; edits never overlap (distinct keys, disjoint records).
fn patch(body: &Bytes, mut edits: Vec<Edit<'_>>) -> Bytes {
    edits.sort_unstable_by_key(|e| e.start);
    let grow: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = Vec::with_capacity(body.len() + grow);
    let mut at = 0;
    for edit in &edits {
        out.extend_from_slice(&body[at..edit.start]);
        out.extend_from_slice(edit.text.as_bytes());
        at = edit.end;
    }
    out.extend_from_slice(&body[at..]);
    Bytes::from(out)
}
