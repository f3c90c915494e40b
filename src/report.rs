//! The consistency report, in the layout of the seed's in-process monitor report.
//!
//! `ReportBook` is fed once per checked record by the inspection layer and read by the admin
//! server (`/report`, `/report.json`, the status page), the periodic report log and
//! `consistency-sidecar report`. `/report.json` is the report plus one section per concern
//! ([`Status`]).
//!
//! The book counts nothing itself: its totals are read from the metric families inspection
//! counts into ([`Tallies`]), so the report and `/metrics` never disagree. It keeps only the
//! ring of recent issues and the ratio history.

mod history;
mod status;

pub use history::{RatioHistory, Sample, SAMPLES_KEPT, SAMPLE_EVERY};
pub use status::{
    ConfigStatus, FixCount, HistoryStatus, ProxyStatus, RouteStatus, RuleCount, SidecarStatus,
    StageDuration, StalledRow, StalledStatus, Started, Status, TrackerStatus, OBJECTIVE,
};

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use prometheus::core::Collector;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::engine::{Level, RecordVerdict};

/// One issue as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentIssue {
    pub at: String,
    pub route: String,
    pub task_id: Option<String>,
    pub rule: String,
    pub level: Level,
    pub message: String,
    /// Raised by a rule in shadow (counted, never applied, the record's level left alone).
    #[serde(default)]
    pub shadow: bool,
}

/// A recent issue as the book holds it: shared names and a time, made into a [`RecentIssue`]
/// only when the report is read (issues are noted per response; the report is read rarely).
#[derive(Debug)]
struct Noted {
    at: SystemTime,
    route: Arc<str>,
    task_id: Option<String>,
    rule: Arc<str>,
    level: Level,
    message: String,
    shadow: bool,
}

/// The families the report's totals are read from, registered and counted by inspection:
/// `consistency_results_total{route, level}` and `consistency_issues_total{route, rule, level}`.
#[derive(Debug, Clone)]
pub struct Tallies {
    /// Checked records by their worst level (a `level` label of [`Level::as_str`]).
    pub results: IntCounterVec,
    /// Issues found, each counted once.
    pub issues: IntCounterVec,
}

/// The most recent issues and the ratio history; the totals since start, read from [`Tallies`].
#[derive(Debug)]
pub struct ReportBook {
    tallies: Tallies,
    recent: Mutex<VecDeque<Noted>>,
    keep: usize,
    /// The ratio over the last minutes, for the status page's chart.
    history: Mutex<RatioHistory>,
}

/// A point-in-time copy of the book, serialisable as `/report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: String,
    pub total_checks: u64,
    pub issues_found: u64,
    pub critical_issues: u64,
    /// consistent ÷ checked; 1 with no checks.
    pub consistency_ratio: f64,
    pub levels: LevelCounts,
    pub recent_issues: Vec<RecentIssue>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCounts {
    pub consistent: u64,
    pub minor_issue: u64,
    pub major_issue: u64,
    pub critical: u64,
}

// === impl ReportBook ===

impl ReportBook {
    /// `keep`: how many recent issues are listed; `tallies`: where the totals are counted.
    pub fn new(keep: usize, tallies: Tallies) -> Self {
        ReportBook {
            tallies,
            recent: Mutex::new(VecDeque::with_capacity(keep)),
            keep,
            history: Mutex::new(RatioHistory::new(
                SAMPLE_EVERY,
                SAMPLES_KEPT,
                Instant::now(),
            )),
        }
    }

    /// Called every second or so by the upkeep loop: adds a history sample when one is due.
    pub fn sample(&self) {
        let levels = self.levels();
        let checks = levels.consistent + levels.minor_issue + levels.major_issue + levels.critical;
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(Instant::now(), SystemTime::now(), checks, levels.consistent);
    }

    /// The ratio samples, oldest first, with their interval.
    pub fn history(&self) -> HistoryStatus {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        HistoryStatus {
            every_seconds: history.every().as_secs(),
            span_seconds: history.every().as_secs() * history.keep() as u64,
            samples: history.samples(),
        }
    }

    /// Checked records by level, every route summed, from `consistency_results_total`.
    fn levels(&self) -> LevelCounts {
        let mut levels = LevelCounts::default();
        for family in self.tallies.results.collect() {
            for metric in family.get_metric() {
                let level = metric
                    .get_label()
                    .iter()
                    .find(|label| label.name() == "level")
                    .and_then(|label| Level::ALL.into_iter().find(|l| l.as_str() == label.value()));
                let count = metric.get_counter().value() as u64;
                match level {
                    Some(Level::Consistent) => levels.consistent += count,
                    Some(Level::MinorIssue) => levels.minor_issue += count,
                    Some(Level::MajorIssue) => levels.major_issue += count,
                    Some(Level::Critical) => levels.critical += count,
                    None => {}
                }
            }
        }
        levels
    }

    /// Issues found, every route and rule summed, from `consistency_issues_total`.
    fn issues(&self) -> u64 {
        self.tallies
            .issues
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().value() as u64)
            .sum()
    }

    /// Lists the issues of one checked record (inspection counts it in the [`Tallies`]).
    pub fn record(&self, route: &Arc<str>, verdict: &RecordVerdict) {
        // Listing none (`inspect.recent_issues = 0`) leaves the counts alone: they are not here.
        if verdict.issues.is_empty() || self.keep == 0 {
            return;
        }
        let at = SystemTime::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for issue in &verdict.issues {
            if recent.len() == self.keep {
                recent.pop_front();
            }
            recent.push_back(Noted {
                at,
                route: route.clone(),
                task_id: verdict.task_id.clone(),
                rule: issue.rule.clone(),
                level: issue.level,
                // Bounded, as the task id is: the report keeps what a backend sent.
                message: crate::engine::cut(&issue.message, crate::engine::SHOWN_TEXT_BYTES)
                    .into_owned(),
                shadow: issue.shadow,
            });
        }
    }

    pub fn snapshot(&self) -> Report {
        let levels = self.levels();
        let total = levels.consistent + levels.minor_issue + levels.major_issue + levels.critical;
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        Report {
            generated_at: now_rfc3339(),
            total_checks: total,
            issues_found: self.issues(),
            critical_issues: levels.critical,
            consistency_ratio: ratio(levels.consistent, total),
            levels,
            recent_issues: recent.iter().rev().map(Noted::to_recent_issue).collect(),
        }
    }
}

/// consistent ÷ checked, 1 when nothing was checked (no evidence of inconsistency).
pub fn ratio(consistent: u64, checked: u64) -> f64 {
    if checked == 0 {
        1.0
    } else {
        consistent as f64 / checked as f64
    }
}

fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

// === impl Noted ===

impl Noted {
    fn to_recent_issue(&self) -> RecentIssue {
        RecentIssue {
            at: rfc3339(self.at),
            route: self.route.to_string(),
            task_id: self.task_id.clone(),
            rule: self.rule.to_string(),
            level: self.level,
            message: self.message.clone(),
            shadow: self.shadow,
        }
    }
}

// === impl Report ===

impl Report {
    /// The seed monitor's text layout, in English.
    pub fn to_text(&self) -> String {
        let rule = "=".repeat(60);
        let mut out = String::new();
        let _ = writeln!(out, "{rule}\nState consistency report\n{rule}");
        let _ = writeln!(out, "Generated at: {}\n", self.generated_at);
        let _ = writeln!(out, "Statistics:");
        let _ = writeln!(out, "  Total checks: {}", self.total_checks);
        let _ = writeln!(out, "  Issues found: {}", self.issues_found);
        let _ = writeln!(out, "  Critical issues: {}", self.critical_issues);
        let _ = writeln!(
            out,
            "  Consistency ratio: {:.2}%\n",
            self.consistency_ratio * 100.0
        );
        let _ = writeln!(out, "Level distribution:");
        let l = &self.levels;
        for (name, n) in [
            ("consistent", l.consistent),
            ("minor_issue", l.minor_issue),
            ("major_issue", l.major_issue),
            ("critical", l.critical),
        ] {
            let _ = writeln!(out, "  {name}: {n}");
        }
        let _ = writeln!(out, "\nRecent issues (newest first):");
        if self.recent_issues.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for issue in &self.recent_issues {
            let _ = writeln!(
                out,
                "  - [{}] task_id={} {}{}: {} ({})",
                issue.level,
                issue.task_id.as_deref().unwrap_or("-"),
                issue.rule,
                if issue.shadow { " (shadow)" } else { "" },
                issue.message,
                issue.route
            );
        }
        let _ = writeln!(out, "\n{rule}");
        out
    }
}

#[cfg(test)]
mod tests;
