//! The issue log: every issue is counted, but only the first few per route and rule in each
//! window are logged in full (task id, rule, before → after); the rest are summarised once per
//! window with their count and a few task ids. A backend that makes every answer inconsistent
//! then costs a few lines a window, not a line per response. `RUST_LOG=debug` shows every one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::{Fix, Issue, SHOWN_TEXT_BYTES};

/// Task ids kept as examples in a window's summary.
const SAMPLE_IDS: usize = 3;

/// The log state of one route: a window per rule.
#[derive(Debug)]
pub struct RouteIssueLog {
    route: Box<str>,
    window: Duration,
    burst: u32,
    /// In the order rules were first seen; a rule set is small, so a scan is cheaper than a hash.
    rules: Mutex<Vec<RuleWindow>>,
}

#[derive(Debug)]
struct RuleWindow {
    rule: Box<str>,
    start: Instant,
    logged: u32,
    suppressed: u64,
    sample: Vec<Box<str>>,
}

/// What the summary of an ended window says.
struct Summary {
    rule: Box<str>,
    suppressed: u64,
    sample: Vec<Box<str>>,
    window: Duration,
}

// === impl RouteIssueLog ===

impl RouteIssueLog {
    pub fn new(route: &str, window: Duration, burst: u32) -> RouteIssueLog {
        RouteIssueLog {
            route: route.into(),
            window,
            burst,
            rules: Mutex::new(Vec::new()),
        }
    }

    /// One issue of one record, with the fix its rule made (or, for a rule in shadow, would
    /// have made), if any.
    pub fn issue(&self, task_id: &str, issue: &Issue, fix: Option<&Fix>) {
        let route = &*self.route;
        let mode = if issue.shadow { "shadow" } else { "fix" };
        tracing::debug!(
            task_id,
            route,
            rule = %issue.rule,
            severity = %issue.level,
            detail = %shown(&issue.message),
            mode,
            fix = fix.map(|f| format!("{}: {} -> {}", f.field, shown(&f.before), shown(&f.after))),
            "consistency issue"
        );
        let now = Instant::now();
        let (full, summary) = {
            let mut rules = self.lock();
            let window = match rules.iter().position(|w| *w.rule == *issue.rule) {
                Some(i) => &mut rules[i],
                None => {
                    rules.push(RuleWindow::new(&issue.rule, now));
                    rules.last_mut().expect("just pushed")
                }
            };
            let summary = window.roll(now, self.window);
            let full = window.logged < self.burst;
            if full {
                window.logged += 1;
            } else {
                window.suppressed += 1;
                if window.sample.len() < SAMPLE_IDS {
                    window.sample.push(task_id.into());
                }
            }
            (full, summary)
        };
        if let Some(summary) = summary {
            summary.log(route);
        }
        if full {
            // `level` and `message` are the log record's own keys: `severity` and `detail` keep
            // the rule's from overwriting them in JSON logs.
            let message = match (fix.is_some(), issue.shadow) {
                (true, true) => "consistency issue, would fix (shadow rule, not applied)",
                (false, true) => "consistency issue (shadow rule)",
                (true, false) => "consistency issue fixed",
                (false, false) => "consistency issue",
            };
            // Fields that are `None` (no fix) are left out of the event.
            tracing::warn!(
                task_id,
                route,
                rule = %issue.rule,
                severity = %issue.level,
                detail = %shown(&issue.message),
                field = fix.map(|f| display(f.field)),
                before = fix.map(|f| display(shown(&f.before))),
                after = fix.map(|f| display(shown(&f.after))),
                "{message}"
            );
        }
    }

    /// Logs the summaries of windows that have ended; the upkeep task calls it every second,
    /// so a burst's summary appears even when no issue follows it.
    pub fn flush(&self) {
        let now = Instant::now();
        let summaries: Vec<Summary> = self
            .lock()
            .iter_mut()
            .filter_map(|w| w.roll(now, self.window))
            .collect();
        for summary in summaries {
            summary.log(&self.route);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RuleWindow>> {
        // Plain counters: a panic elsewhere cannot leave them half-updated.
        self.rules
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === impl RuleWindow ===

impl RuleWindow {
    fn new(rule: &str, now: Instant) -> RuleWindow {
        RuleWindow {
            rule: rule.into(),
            start: now,
            logged: 0,
            suppressed: 0,
            sample: Vec::new(),
        }
    }

    /// Starts a new window if this one has ended, returning its summary if it held back any.
    fn roll(&mut self, now: Instant, window: Duration) -> Option<Summary> {
        if now.duration_since(self.start) < window {
            return None;
        }
        let summary = (self.suppressed > 0).then(|| Summary {
            rule: self.rule.clone(),
            suppressed: self.suppressed,
            sample: std::mem::take(&mut self.sample),
            window,
        });
        self.start = now;
        self.logged = 0;
        self.suppressed = 0;
        self.sample.clear();
        summary
    }
}

// === impl Summary ===

impl Summary {
    fn log(&self, route: &str) {
        let sample: Vec<&str> = self.sample.iter().map(|id| &**id).collect();
        tracing::warn!(
            route,
            rule = %self.rule,
            count = self.suppressed,
            window = %humantime::format_duration(self.window),
            task_ids = %sample.join(","),
            "more consistency issues of this rule in the window (counted in the metrics)"
        );
    }
}

/// A message or value as logged: bounded, whatever the backend sent.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    crate::engine::cut(text, SHOWN_TEXT_BYTES)
}

#[cfg(test)]
mod tests {
    //! Unit tests for the windowing; the log volume under a flood is tested end to end.

    use super::*;

    #[test]
    fn a_window_lets_the_burst_through_then_counts_and_samples() {
        let start = Instant::now();
        let mut window = RuleWindow::new("completed_stage", start);
        assert!(window.roll(start, Duration::from_secs(10)).is_none());
        window.logged = 1;
        window.suppressed = 5;
        window.sample = vec!["a".into(), "b".into(), "c".into()];
        assert!(window
            .roll(start + Duration::from_secs(9), Duration::from_secs(10))
            .is_none());
        let summary = window
            .roll(start + Duration::from_secs(10), Duration::from_secs(10))
            .expect("the window ended with issues held back");
        assert_eq!(summary.suppressed, 5);
        assert_eq!(summary.sample.len(), 3);
        assert_eq!((window.logged, window.suppressed), (0, 0));
        assert!(window.sample.is_empty());
    }

    #[test]
    fn an_ended_window_with_nothing_held_back_has_no_summary() {
        let start = Instant::now();
        let mut window = RuleWindow::new("r", start);
        window.logged = 1;
        assert!(window
            .roll(start + Duration::from_secs(60), Duration::from_secs(10))
            .is_none());
        assert_eq!(window.logged, 0);
    }
}
