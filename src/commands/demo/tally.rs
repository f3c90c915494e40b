//! The demo's closing story: rule by rule, what the stand-in injected beside what the sidecar
//! caught and fixed, what reached the simulated front ends, and the stalled task it found.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::backend::{Backend, Backwards, INJECTED_RULES, STALLED_TASK};
use crate::config::Config;
use crate::engine::{RuleMode, TransitionKind};
use crate::report::Status;

/// The task memory's rules in the order the tally lists them: a reopened task's stage goes
/// back too, so `stage_regression` comes after `terminal_reopened`.
const ACROSS_POLLS: [TransitionKind; 4] = [
    TransitionKind::ProgressRegression,
    TransitionKind::TerminalReopened,
    TransitionKind::TerminalChanged,
    TransitionKind::StageRegression,
];

/// What the simulated front ends saw.
#[derive(Debug, Default)]
pub struct ClientTally {
    pub polls: AtomicU64,
    /// Answers that contradicted themselves when they reached the client.
    pub contradictory: AtomicU64,
    /// Answers that ran their task backwards against the client's previous answer.
    pub backwards: AtomicU64,
    pub tasks_finished: AtomicU64,
}

/// One rule's line: answers injected that break it, and the sidecar's figures for it.
#[derive(Debug)]
struct RuleRow {
    rule: &'static str,
    injected: u64,
    caught: u64,
    fixed: u64,
    /// Whether the rule, as configured, fixes what it catches.
    fixes: bool,
}

/// Prints the tally; says whether every fault was caught, fixed where a rule fixes it, and
/// the stalled task found.
pub fn tell(backend: &Backend, clients: &ClientTally, status: &Status, config: &Config) {
    let caught = by_rule(status, |route| {
        route.issues.iter().map(|count| (&count.rule, count.count))
    });
    let fixed = by_rule(status, |route| {
        route.fixes.iter().map(|count| (&count.rule, count.applied))
    });
    let row = |rule: &'static str, injected: u64, fixes: bool| RuleRow {
        rule,
        injected,
        caught: caught.get(rule).copied().unwrap_or(0),
        fixed: fixed.get(rule).copied().unwrap_or(0),
        fixes,
    };
    // Each of these breaks one default rule, whose fix restores the real record.
    let single: Vec<RuleRow> = INJECTED_RULES
        .iter()
        .zip(&backend.injected)
        .map(|(rule, count)| row(rule, count.load(Ordering::Relaxed), true))
        .collect();
    let across: Vec<(RuleRow, String)> = ACROSS_POLLS
        .into_iter()
        .filter_map(|kind| {
            let causes: Vec<(Backwards, u64)> = Backwards::ALL
                .into_iter()
                .filter(|cause| cause.breaks().contains(&kind))
                .map(|cause| (cause, backend.served_backwards(cause)))
                .collect();
            let injected = causes.iter().map(|(_, n)| n).sum();
            let row = row(kind.as_str(), injected, transition_fixes(config, kind));
            let what = causes
                .iter()
                .map(|(cause, n)| format!("{} ({n})", cause.what()))
                .collect::<Vec<_>>()
                .join(", ");
            // terminal_changed: nothing injects it, listed only if it fires all the same.
            (!causes.is_empty() || row.caught > 0).then_some((row, what))
        })
        .collect();

    println!("Injected vs caught:");
    println!(
        "  records served by the backend  {}",
        backend.records.load(Ordering::Relaxed)
    );
    heading(
        "answers that contradict themselves",
        &["injected", "caught", "fixed"],
        "",
    );
    for row in &single {
        println!("    {}", row.line());
    }
    heading(
        "answers that run a task backwards",
        &["injected", "caught", "fixed"],
        "only the task memory sees these",
    );
    for (row, what) in &across {
        println!("    {}   {what}", row.line());
    }
    let mut unfixed = across.iter().filter(|(row, _)| !row.fixes).peekable();
    if unfixed.peek().is_some() {
        println!("    not fixed, only reported:");
    }
    for (row, _) in unfixed {
        println!("      {}: {}", row.rule, why_unfixed(config, row.rule));
    }
    let stalled_found = tell_stalled(backend, status, config);

    let rows = || single.iter().chain(across.iter().map(|(row, _)| row));
    let injected: u64 = rows().map(|row| row.injected).sum();
    println!(
        "\n  issues caught by the sidecar   {} (the injected answers break {injected} rules in all)",
        status.report.issues_found
    );
    let contradictory = clients.contradictory.load(Ordering::Relaxed);
    println!(
        "  answers at clients             {contradictory} of {} polls contradicted themselves, {} ran a task backwards (the ones not fixed)",
        clients.polls.load(Ordering::Relaxed),
        clients.backwards.load(Ordering::Relaxed),
    );
    let agreed = rows().all(RuleRow::agrees)
        && status.report.issues_found == injected
        && contradictory == 0
        && stalled_found;
    let verdict = if agreed {
        "every injected fault was caught, and fixed before it reached a client where a rule fixes it; the stalled task was found"
    } else {
        "caught and injected differ: look at the report above and the sidecar's logs"
    };
    println!("  => {verdict}");
}

/// Prints the stalled tasks row; whether the sidecar found exactly the task that stalls.
fn tell_stalled(backend: &Backend, status: &Status, config: &Config) -> bool {
    let injected = backend.stalls.load(Ordering::Relaxed);
    let found = &status.stalled.tasks;
    heading(
        "tasks that stand still",
        &["injected", "found", ""],
        "observation only: no answer is wrong, none is changed",
    );
    println!("    {:<33} {injected:>8} {:>8}", "stalled", found.len());
    for task in found {
        let progress = task.progress.map_or_else(String::new, |p| format!(" {p}%"));
        println!(
            "      {} at {}{progress}, unchanged for {}s (stall limit {}), last polled {}s ago",
            task.task_id,
            task.stage,
            task.stalled_for_seconds,
            humantime::format_duration(config.tracker.stall_after),
            task.last_polled_seconds_ago,
        );
    }
    let stalled_id = format!("demo-{STALLED_TASK}");
    found.len() as u64 == injected && found.iter().all(|task| task.task_id == stalled_id)
}

/// A section's title over its columns, with a note after them.
fn heading(title: &str, columns: &[&str; 3], note: &str) {
    let [a, b, c] = columns;
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("   ({note})")
    };
    println!("\n  {title:<35} {a:>8} {b:>8} {c:>8}{note}");
}

/// Sums of one per-rule figure over every route.
fn by_rule<'a, I>(
    status: &'a Status,
    figures: impl Fn(&'a crate::report::RouteStatus) -> I,
) -> BTreeMap<&'a str, u64>
where
    I: Iterator<Item = (&'a String, u64)>,
{
    let mut sums = BTreeMap::new();
    for (rule, count) in status.routes.iter().flat_map(figures) {
        *sums.entry(rule.as_str()).or_default() += count;
    }
    sums
}

/// Whether a transition rule, as configured, applies its fix.
fn transition_fixes(config: &Config, kind: TransitionKind) -> bool {
    let rule = config.tracker.rule(kind);
    rule.enabled && rule.fix && rule.mode == RuleMode::Fix && has_fix(kind)
}

/// Only the regressions have a value to hold; which of two contradicting terminal reports is
/// true is unknowable.
fn has_fix(kind: TransitionKind) -> bool {
    matches!(
        kind,
        TransitionKind::StageRegression | TransitionKind::ProgressRegression
    )
}

fn why_unfixed(config: &Config, rule: &str) -> String {
    let Some(kind) = TransitionKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == rule)
    else {
        return String::new();
    };
    if !has_fix(kind) {
        "no fix exists (which of the two answers is true is unknowable)".to_string()
    } else if config.tracker.rule(kind).mode == RuleMode::Shadow {
        "mode = shadow".to_string()
    } else {
        format!("fix = false in [tracker.rules.{rule}]")
    }
}

// === impl RuleRow ===

impl RuleRow {
    fn line(&self) -> String {
        format!(
            "{:<33} {:>8} {:>8} {:>8}",
            self.rule, self.injected, self.caught, self.fixed
        )
    }

    /// Caught what was injected, and fixed all of it if the rule fixes, none otherwise.
    fn agrees(&self) -> bool {
        self.caught == self.injected && self.fixed == if self.fixes { self.injected } else { 0 }
    }
}
