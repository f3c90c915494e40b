//! The consistency metric families, registered beside the per-route handles inspection uses, so
//! the hot path never looks a label up.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::engine::{Level, RuleLabel, RuleMode};
use crate::report::Tallies;

/// Inspection takes microseconds; the default buckets start at 5 ms and would see nothing.
const INSPECT_BUCKETS: [f64; 11] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
];

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

/// The consistency families, registered once; every configuration (the first, and each one a
/// reload swaps in) resolves its per-route handles from them, so counters are never reset.
#[derive(Debug, Clone)]
pub struct InspectionFamilies {
    checks: IntCounterVec,
    results: IntCounterVec,
    issues: IntCounterVec,
    fixes: IntCounterVec,
    skipped: IntCounterVec,
    untracked: IntCounterVec,
    ratio: GaugeVec,
    /// `consistency_inspect_duration_seconds`.
    duration: Histogram,
}

/// Handles for every inspected route of one configuration, and the inspection time histogram.
#[derive(Debug)]
pub struct InspectionMetrics {
    /// `consistency_inspect_duration_seconds`.
    pub duration: Histogram,
    /// In route order.
    routes: Vec<RouteCounters>,
}

/// What a route is, for its metrics: its name, and the rules that may fire on it.
#[derive(Debug, Clone)]
pub struct RouteLabels<'a> {
    pub name: &'a str,
    pub rules: Vec<RuleLabel<'a>>,
}

/// Handles for one route.
#[derive(Debug)]
pub struct RouteCounters {
    pub checks: IntCounter,
    /// Indexed by `Level as usize`.
    pub results: [IntCounter; Level::ALL.len()],
    /// (rule, level) → counter, for every rule at its configured level.
    issues: Vec<(Box<str>, Level, IntCounter)>,
    /// (rule, mode) → counter, for every rule that fixes, in both modes.
    fixes: Vec<(Box<str>, RuleMode, IntCounter)>,
    /// Indexed by `Skip as usize`.
    skipped: [IntCounter; Skip::ALL.len()],
    /// Records checked but whose task was not remembered: its id was longer than
    /// `tracker.max_task_id_bytes`.
    pub untracked_task_id_too_long: IntCounter,
    ratio: Gauge,
    /// For a combination not known at start (none today), so it still gets its series.
    route: Box<str>,
    issue_family: IntCounterVec,
    fix_family: IntCounterVec,
}

// === impl Skip ===

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

/// The `mode` label of `consistency_fixes_total`: what happened to the fix, `applied` or
/// `shadow` (counted, not applied).
fn fix_label(mode: RuleMode) -> &'static str {
    match mode {
        RuleMode::Fix => "applied",
        RuleMode::Shadow => "shadow",
    }
}

// === impl InspectionFamilies ===

impl InspectionFamilies {
    pub fn register(registry: &Registry) -> prometheus::Result<InspectionFamilies> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let family = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(family.clone()))?;
            Ok::<_, prometheus::Error>(family)
        };
        let checks = counter(
            "consistency_checks_total",
            "Task records checked.",
            &["route"],
        )?;
        let results = counter(
            "consistency_results_total",
            "Checked records by their worst level.",
            &["route", "level"],
        )?;
        let issues = counter(
            "consistency_issues_total",
            "Rule violations found, by rule.",
            &["route", "rule", "level"],
        )?;
        let fixes = counter(
            "consistency_fixes_total",
            "Values fixed in flight by rule (mode=\"applied\"), or that a rule in shadow would have fixed (mode=\"shadow\").",
            &["route", "rule", "mode"],
        )?;
        let skipped = counter(
            "consistency_skipped_total",
            "Responses on inspected routes passed through unchecked, by reason.",
            &["route", "reason"],
        )?;
        let untracked = counter(
            "consistency_untracked_total",
            "Records checked by the single-record rules but whose task was not remembered, by reason (task_id_too_long: longer than tracker.max_task_id_bytes).",
            &["route", "reason"],
        )?;
        let ratio = GaugeVec::new(
            Opts::new(
                "consistency_ratio",
                "Consistent records divided by checked records since start (1 with none).",
            ),
            &["route"],
        )?;
        registry.register(Box::new(ratio.clone()))?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "consistency_inspect_duration_seconds",
                "Time spent inspecting one response body.",
            )
            .buckets(INSPECT_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(InspectionFamilies {
            checks,
            results,
            issues,
            fixes,
            skipped,
            untracked,
            ratio,
            duration,
        })
    }

    /// The families the report reads its totals from.
    pub fn tallies(&self) -> Tallies {
        Tallies {
            results: self.results.clone(),
            issues: self.issues.clone(),
        }
    }
}

// === impl InspectionMetrics ===

impl InspectionMetrics {
    /// The handles of `routes`, with every route × level, reason and rule at 0 from the start.
    pub fn resolve(families: &InspectionFamilies, routes: &[RouteLabels<'_>]) -> InspectionMetrics {
        let InspectionFamilies {
            checks,
            results,
            issues,
            fixes,
            skipped,
            untracked,
            ratio,
            duration,
        } = families;
        let routes = routes
            .iter()
            .map(|route| {
                let name = route.name;
                let ratio = ratio.with_label_values(&[name]);
                // consistent ÷ checked, 1 with none: the counters may already hold a route that
                // a reload brings back.
                let route_checks = checks.with_label_values(&[name]);
                let consistent = results.with_label_values(&[name, Level::Consistent.as_str()]);
                ratio.set(crate::report::ratio(consistent.get(), route_checks.get()));
                RouteCounters {
                    checks: checks.with_label_values(&[name]),
                    results: Level::ALL.map(|l| results.with_label_values(&[name, l.as_str()])),
                    issues: route
                        .rules
                        .iter()
                        .map(|rule| {
                            let counter =
                                issues.with_label_values(&[name, rule.name, rule.level.as_str()]);
                            (rule.name.into(), rule.level, counter)
                        })
                        .collect(),
                    // Both modes from the start, whatever a rule's mode: a panel of shadow fixes
                    // reads 0 rather than nothing, and a rule switched from shadow to fix
                    // continues series that already exist.
                    fixes: route
                        .rules
                        .iter()
                        .filter(|rule| rule.fixes)
                        .flat_map(|rule| RuleMode::ALL.map(|mode| (rule.name, mode)))
                        .map(|(rule, mode)| {
                            let counter = fixes.with_label_values(&[name, rule, fix_label(mode)]);
                            (rule.into(), mode, counter)
                        })
                        .collect(),
                    skipped: Skip::ALL.map(|s| skipped.with_label_values(&[name, s.as_str()])),
                    untracked_task_id_too_long: untracked
                        .with_label_values(&[name, "task_id_too_long"]),
                    ratio,
                    route: name.into(),
                    issue_family: issues.clone(),
                    fix_family: fixes.clone(),
                }
            })
            .collect();
        InspectionMetrics {
            duration: duration.clone(),
            routes,
        }
    }

    pub fn route(&self, index: usize) -> Option<&RouteCounters> {
        self.routes.get(index)
    }
}

// === impl RouteCounters ===

impl RouteCounters {
    pub fn skip(&self, reason: Skip) {
        self.skipped[reason as usize].inc();
    }

    pub fn issue(&self, rule: &str, level: Level) {
        match counted(&self.issues, rule, level) {
            Some(counter) => counter.inc(),
            None => self
                .issue_family
                .with_label_values(&[&self.route, rule, level.as_str()])
                .inc(),
        }
    }

    /// One value fixed by `rule` (in fix mode), or that it would have fixed (in shadow).
    pub fn fix(&self, rule: &str, mode: RuleMode) {
        match counted(&self.fixes, rule, mode) {
            Some(counter) => counter.inc(),
            None => self
                .fix_family
                .with_label_values(&[&self.route, rule, fix_label(mode)])
                .inc(),
        }
    }

    /// consistent ÷ checked since start, the seed report's figure.
    pub fn update_ratio(&self) {
        let checked = self.checks.get();
        let consistent = self.results[Level::Consistent as usize].get();
        self.ratio.set(crate::report::ratio(consistent, checked));
    }
}

/// The counter resolved for `rule` and `key`; `None` for a rule the configuration did not name
/// (the family makes its counter then).
fn counted<'a, K: PartialEq>(
    resolved: &'a [(Box<str>, K, IntCounter)],
    rule: &str,
    key: K,
) -> Option<&'a IntCounter> {
    resolved
        .iter()
        .find(|(r, k, _)| **r == *rule && *k == key)
        .map(|(_, _, counter)| counter)
}
