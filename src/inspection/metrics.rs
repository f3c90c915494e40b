//! Per-route handles on the consistency metric families, resolved once at start.

use prometheus::{Gauge, IntCounter};

use crate::engine::Level;
use crate::metrics::{rule_labels, Metrics};
use crate::routes::Route;
use crate::settings::Settings;

/// Why a response on an inspected route was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    TooLarge,
    NotJson,
    Unparseable,
    NoRecord,
    Encoding,
    Error,
    /// The global budget for held bodies was spent (`inspect.max_held_bytes`).
    Overloaded,
}

impl Skip {
    pub const ALL: [Skip; 7] = [
        Skip::TooLarge,
        Skip::NotJson,
        Skip::Unparseable,
        Skip::NoRecord,
        Skip::Encoding,
        Skip::Error,
        Skip::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::TooLarge => "too_large",
            Skip::NotJson => "not_json",
            Skip::Unparseable => "unparseable",
            Skip::NoRecord => "no_record",
            Skip::Encoding => "encoding",
            Skip::Error => "error",
            Skip::Overloaded => "overloaded",
        }
    }
}

/// Handles for one route, so the hot path does no label lookups for configured rules.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    route: String,
    pub checks: IntCounter,
    /// Indexed by `Level as usize`.
    pub results: [IntCounter; 4],
    /// (rule, level) → counter, for every enabled rule at its configured level.
    issues: Vec<(String, Level, IntCounter)>,
    fixes: Vec<(String, IntCounter)>,
    /// Indexed by `Skip as usize`.
    pub skipped: [IntCounter; 7],
    ratio: Gauge,
}

// === impl RouteCounters ===

impl RouteCounters {
    pub fn resolve(metrics: &Metrics, settings: &Settings, config: &Route) -> RouteCounters {
        let route = config.name();
        let mut issues = Vec::new();
        let mut fixes = Vec::new();
        for (rule, level, fixable) in rule_labels(settings, config.spec().track()) {
            let counter = metrics
                .issues
                .with_label_values(&[route, rule, level.as_str()]);
            issues.push((rule.to_string(), level, counter));
            if fixable {
                fixes.push((
                    rule.to_string(),
                    metrics.fixes.with_label_values(&[route, rule]),
                ));
            }
        }
        RouteCounters {
            route: route.to_string(),
            checks: metrics.checks.with_label_values(&[route]),
            results: Level::ALL.map(|l| metrics.results.with_label_values(&[route, l.as_str()])),
            issues,
            fixes,
            skipped: Skip::ALL.map(|s| metrics.skipped.with_label_values(&[route, s.as_str()])),
            ratio: metrics.ratio.with_label_values(&[route]),
        }
    }

    pub fn skip(&self, reason: Skip) {
        self.skipped[reason as usize].inc();
    }

    /// Counts an issue; a combination not known at start (none today) still gets its series.
    pub fn issue(&self, metrics: &Metrics, rule: &str, level: Level) {
        match self
            .issues
            .iter()
            .find(|(r, l, _)| r == rule && *l == level)
        {
            Some((_, _, counter)) => counter.inc(),
            None => metrics
                .issues
                .with_label_values(&[&self.route, rule, level.as_str()])
                .inc(),
        }
    }

    pub fn fix(&self, metrics: &Metrics, rule: &str) {
        match self.fixes.iter().find(|(r, _)| r == rule) {
            Some((_, counter)) => counter.inc(),
            None => metrics.fixes.with_label_values(&[&self.route, rule]).inc(),
        }
    }

    /// consistent ÷ checked since start, the seed report's figure.
    pub fn update_ratio(&self) {
        let checked = self.checks.get();
        let consistent = self.results[Level::Consistent as usize].get();
        self.ratio.set(crate::report::ratio(consistent, checked));
    }
}
