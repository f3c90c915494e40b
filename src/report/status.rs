//! `/report.json`: the report, plus one section per concern (sidecar, routes, proxy, tracker,
//! ratio history), which the status page renders.
//!
//! The figures are read from the metric registry when asked, so the page and `/metrics` never
//! disagree and nothing is counted twice. A concern added later (a config reload, a task store)
//! is one more section here; the page shows any section of plain figures without changes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use prometheus::Registry;
use serde::{Deserialize, Serialize};

use super::{ratio, LevelCounts, Report, ReportBook, Sample};
use crate::coding::Coding;
use crate::engine::Mode;
use crate::settings::Settings;

/// The share of consistent records the alerts hold the sidecar to; the page colours against it.
pub const OBJECTIVE: f64 = 0.99;

/// Everything `/report.json` serves. The report's own fields stay at the top level, as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub report: Report,
    pub objective: f64,
    pub sidecar: SidecarStatus,
    /// Configured routes, in configuration order.
    pub routes: Vec<RouteStatus>,
    pub proxy: ProxyStatus,
    pub tracker: TrackerStatus,
    /// Tasks standing still, and how long each stage takes.
    pub stalled: StalledStatus,
    pub history: HistoryStatus,
    /// The last configuration reload; none when the sidecar has nothing to reload from.
    pub config: Option<ConfigStatus>,
}

/// Configuration reloads: the last one and how many there were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// None until the first reload.
    pub last_reload_successful: Option<bool>,
    /// Unix seconds of the last reload attempt.
    pub last_reload_at_unix: Option<u64>,
    /// Why the last reload changed nothing: one line naming the key.
    pub last_error: Option<String>,
    /// Keys changed in the file but kept at their running value until a restart.
    pub unchanged_keys: Vec<String>,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarStatus {
    pub version: String,
    pub mode: Mode,
    pub upstream: String,
    pub started_at: String,
    pub uptime_seconds: u64,
    /// Content codings whose bodies are inspected; any other passes through, counted as
    /// skipped with reason `encoding`.
    pub inspected_codings: Vec<String>,
}

/// One inspected route, since start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    pub mode: Mode,
    pub tracked: bool,
    /// Requests answered on the route, whatever their status.
    pub requests: u64,
    /// Records checked.
    pub checks: u64,
    /// consistent ÷ checks, 1 with none (as `consistency_ratio`).
    pub ratio: f64,
    pub levels: LevelCounts,
    /// Issues by rule, most frequent first.
    pub issues: Vec<RuleCount>,
    /// Fixes by rule, applied and in shadow, most frequent first.
    pub fixes: Vec<FixCount>,
    /// Responses passed through unchecked, by reason.
    pub skipped: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleCount {
    pub rule: String,
    pub level: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixCount {
    pub rule: String,
    /// Fixes sent to clients.
    pub applied: u64,
    /// Fixes a rule in shadow would have made; never sent.
    pub shadow: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub requests: u64,
    pub requests_by_code: BTreeMap<String, u64>,
    pub upstream_errors: u64,
    pub upstream_errors_by_reason: BTreeMap<String, u64>,
    pub inflight: u64,
    pub load_shed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackerStatus {
    pub tracked_tasks: u64,
    pub evictions: BTreeMap<String, u64>,
    /// `local` or `redis`.
    pub store: String,
    /// Whether the task store answers (always with `local`).
    pub store_up: bool,
    /// Responses the shared store left to local memory, by reason.
    pub store_errors: BTreeMap<String, u64>,
}

/// Stalled tasks now (observation only: no response is changed for them) and stage durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StalledStatus {
    /// Stalled tasks now, all routes and stages.
    pub total: u64,
    /// The longest stalled first, at most a few dozen (filled by the admin server from the
    /// task memory: ids are never metric labels).
    pub tasks: Vec<StalledRow>,
    /// Per route and stage left, from `consistency_stage_duration_seconds`.
    pub stage_durations: Vec<StageDuration>,
}

/// One stalled task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StalledRow {
    pub route: String,
    pub task_id: String,
    pub stage: String,
    pub progress: Option<f64>,
    /// Since its state last changed (or it was first seen).
    pub stalled_for_seconds: u64,
    pub last_polled_seconds_ago: u64,
}

/// How long tasks stayed in one stage, estimated from the histogram's buckets as
/// Prometheus's `histogram_quantile` does (linear within a bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDuration {
    pub route: String,
    pub stage: String,
    pub observed: u64,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
}

/// The ratio over the last minutes: one sample per `every_seconds`, `span_seconds` at most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryStatus {
    pub every_seconds: u64,
    pub span_seconds: u64,
    pub samples: Vec<Sample>,
}

/// When the sidecar started, for the uptime.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub at: Instant,
    pub wall: SystemTime,
}

// === impl Status ===

impl Status {
    /// The report of `book` and the figures of `registry`, as of now.
    pub fn collect(
        book: &ReportBook,
        registry: &Registry,
        settings: &Settings,
        started: Started,
    ) -> Status {
        let series = Series::gather(registry);
        let routes = settings
            .routes
            .iter()
            .map(|route| {
                let spec = route.spec();
                route_status(&series, route.name(), spec.mode(), spec.track())
            })
            .collect();
        let count = |family: &str| series.sum(family, &[]);
        Status {
            report: book.snapshot(),
            objective: OBJECTIVE,
            sidecar: SidecarStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                mode: settings.config.mode,
                upstream: settings.config.upstream.uri.to_string(),
                started_at: humantime::format_rfc3339_seconds(started.wall).to_string(),
                uptime_seconds: started.at.elapsed().as_secs(),
                inspected_codings: Coding::INSPECTED
                    .iter()
                    .map(|coding| coding.token().to_string())
                    .collect(),
            },
            routes,
            proxy: ProxyStatus {
                requests: count("consistency_proxy_requests_total"),
                requests_by_code: series.by("consistency_proxy_requests_total", &[], "code"),
                upstream_errors: count("consistency_proxy_upstream_errors_total"),
                upstream_errors_by_reason: series.by(
                    "consistency_proxy_upstream_errors_total",
                    &[],
                    "reason",
                ),
                inflight: count("consistency_proxy_inflight_requests"),
                load_shed: count("consistency_proxy_load_shed_total"),
            },
            tracker: TrackerStatus {
                tracked_tasks: count("consistency_tracked_tasks"),
                evictions: series.by("consistency_tracker_evictions_total", &[], "reason"),
                store: settings.config.tracker.store.as_str().to_string(),
                store_up: count("consistency_tracker_store_up") == 1,
                store_errors: series.by("consistency_tracker_store_errors_total", &[], "reason"),
            },
            stalled: StalledStatus {
                total: count("consistency_stalled_tasks"),
                tasks: Vec::new(),
                stage_durations: stage_durations(registry),
            },
            history: book.history(),
            config: None,
        }
    }
}

/// Every (route, stage) of the stage histogram with observations, with its p50 and p99.
fn stage_durations(registry: &Registry) -> Vec<StageDuration> {
    let mut out = Vec::new();
    let families = registry.gather();
    let Some(family) = families
        .iter()
        .find(|f| f.name() == "consistency_stage_duration_seconds")
    else {
        return out;
    };
    for metric in family.get_metric() {
        let histogram = metric.get_histogram();
        let observed = histogram.get_sample_count();
        if observed == 0 {
            continue;
        }
        let label = |name: &str| {
            metric
                .get_label()
                .iter()
                .find(|l| l.name() == name)
                .map_or_else(String::new, |l| l.value().to_string())
        };
        let buckets: Vec<(f64, u64)> = histogram
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        out.push(StageDuration {
            route: label("route"),
            stage: label("stage"),
            observed,
            p50_seconds: quantile(0.5, &buckets, observed),
            p99_seconds: quantile(0.99, &buckets, observed),
        });
    }
    out
}

/// The `q` quantile of `observed` samples in cumulative `buckets` (upper bound, count),
/// linear within its bucket; past the last bound, that bound.
fn quantile(q: f64, buckets: &[(f64, u64)], observed: u64) -> f64 {
    let rank = q * observed as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let within = (count - lower.1) as f64;
            let share = if within > 0.0 {
                (rank - lower.1 as f64) / within
            } else {
                1.0
            };
            return lower.0 + (bound - lower.0) * share;
        }
        lower = (bound, count);
    }
    lower.0
}

fn route_status(series: &Series, name: &str, mode: Mode, tracked: bool) -> RouteStatus {
    let route = [("route", name)];
    let levels = series.by("consistency_results_total", &route, "level");
    let level = |l: &str| levels.get(l).copied().unwrap_or(0);
    let levels = LevelCounts {
        consistent: level("consistent"),
        minor_issue: level("minor_issue"),
        major_issue: level("major_issue"),
        critical: level("critical"),
    };
    let checks = series.sum("consistency_checks_total", &route);
    let mut issues: Vec<RuleCount> = series
        .group("consistency_issues_total", &route, ["rule", "level"])
        .into_iter()
        .map(|([rule, level], count)| RuleCount { rule, level, count })
        .collect();
    issues.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
    let mut fixes: Vec<FixCount> = Vec::new();
    for ([rule, mode], count) in series.group("consistency_fixes_total", &route, ["rule", "mode"]) {
        let at = match fixes.iter().position(|f| f.rule == rule) {
            Some(at) => at,
            None => {
                fixes.push(FixCount {
                    rule,
                    applied: 0,
                    shadow: 0,
                });
                fixes.len() - 1
            }
        };
        match mode.as_str() {
            "shadow" => fixes[at].shadow += count,
            _ => fixes[at].applied += count,
        }
    }
    fixes.sort_by(|a, b| {
        (b.applied + b.shadow)
            .cmp(&(a.applied + a.shadow))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    RouteStatus {
        name: name.to_string(),
        mode,
        tracked,
        requests: series.sum("consistency_proxy_requests_total", &route),
        checks,
        ratio: ratio(levels.consistent, checks),
        levels,
        issues,
        fixes,
        skipped: series.by("consistency_skipped_total", &route, "reason"),
    }
}

/// The counter and gauge samples of a registry, by family name.
struct Series(HashMap<String, Vec<Point>>);

/// One sample: its labels (name, value) and its value.
type Point = (Vec<(String, String)>, f64);

// === impl Series ===

impl Series {
    fn gather(registry: &Registry) -> Series {
        let mut families = HashMap::new();
        for family in registry.gather() {
            let samples = family
                .get_metric()
                .iter()
                .map(|m| {
                    let labels = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_string(), l.value().to_string()))
                        .collect();
                    // A family is either a counter or a gauge here; the other field reads 0.
                    (labels, m.get_counter().value() + m.get_gauge().value())
                })
                .collect();
            families.insert(family.name().to_string(), samples);
        }
        Series(families)
    }

    /// The samples of `family` that carry every one of `labels`.
    fn matching<'a>(
        &'a self,
        family: &str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Point> + 'a {
        self.0
            .get(family)
            .into_iter()
            .flatten()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
    }

    fn sum(&self, family: &str, labels: &[(&str, &str)]) -> u64 {
        whole(self.matching(family, labels).map(|(_, v)| v).sum())
    }

    /// Sums of the matching samples, by the value of one label.
    fn by(&self, family: &str, labels: &[(&str, &str)], key: &str) -> BTreeMap<String, u64> {
        self.group(family, labels, [key])
            .into_iter()
            .map(|([value], n)| (value, n))
            .collect()
    }

    /// Sums of the matching samples, by the values of `N` labels.
    fn group<const N: usize>(
        &self,
        family: &str,
        labels: &[(&str, &str)],
        keys: [&str; N],
    ) -> Vec<([String; N], u64)> {
        let mut sums: BTreeMap<[String; N], f64> = BTreeMap::new();
        for (have, value) in self.matching(family, labels) {
            let key = keys.map(|k| {
                have.iter()
                    .find(|(hk, _)| hk == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            });
            *sums.entry(key).or_default() += value;
        }
        sums.into_iter().map(|(k, v)| (k, whole(v))).collect()
    }
}

/// A counter or gauge value as a count.
fn whole(value: f64) -> u64 {
    value.max(0.0).round() as u64
}
