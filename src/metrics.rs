//! Every metric family of the sidecar, registered into one `prometheus::Registry`.
//!
//! Metric names are API (alerts and dashboards use them), so they are all spelled here and
//! nowhere else. Families are registered beside their handles, there is no global registry, and
//! every label combination known from the configuration exists at 0 from the start. The hot path
//! uses handles resolved here, never a label lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{Level, TransitionKind};
use crate::inspection::Skip;
use crate::routes::OTHER;
use crate::settings::Settings;
use crate::tracker::StoreErrorReason;

/// The Content-Type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Values of the `method` label; anything else is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// Values of the `code` label.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Values of `consistency_tracker_evictions_total`'s `reason` label.
pub const EVICTION_REASONS: [&str; 2] = ["capacity", "ttl"];

/// Why the proxy could not relay the upstream's answer: the `reason` label of
/// `consistency_proxy_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorReason {
    /// Refused, unreachable, or the name did not resolve.
    Connect,
    /// No connection or no response head within the configured time.
    Timeout,
    /// A body stream failed after the response began (either direction).
    Body,
    /// The upstream broke HTTP: closed early, sent garbage, reset.
    Protocol,
}

impl UpstreamErrorReason {
    pub const ALL: [UpstreamErrorReason; 4] = [
        UpstreamErrorReason::Connect,
        UpstreamErrorReason::Timeout,
        UpstreamErrorReason::Body,
        UpstreamErrorReason::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorReason::Connect => "connect",
            UpstreamErrorReason::Timeout => "timeout",
            UpstreamErrorReason::Body => "body",
            UpstreamErrorReason::Protocol => "protocol",
        }
    }
}

/// All metric families, plus the one observation `/readyz` needs.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,

    /// `consistency_proxy_requests_total{route,method,code}`.
    pub requests: IntCounterVec,
    /// `consistency_proxy_request_duration_seconds{route}`: from request head to the end (or
    /// abandonment) of the response body.
    pub request_duration: HistogramVec,
    /// `consistency_proxy_upstream_errors_total{reason}`.
    pub upstream_errors: IntCounterVec,
    /// `consistency_proxy_load_shed_total`.
    pub load_shed: IntCounter,
    /// `consistency_proxy_inflight_requests`.
    pub inflight: IntGauge,
    /// `consistency_build_info{version}`, always 1.
    pub build_info: IntGaugeVec,

    /// `consistency_checks_total{route}`.
    pub checks: IntCounterVec,
    /// `consistency_results_total{route,level}`.
    pub results: IntCounterVec,
    /// `consistency_issues_total{route,rule,level}`.
    pub issues: IntCounterVec,
    /// `consistency_fixes_total{route,rule}`.
    pub fixes: IntCounterVec,
    /// `consistency_skipped_total{route,reason}`.
    pub skipped: IntCounterVec,
    /// `consistency_ratio{route}`: consistent ÷ checked since start, 1 with no checks.
    pub ratio: GaugeVec,
    /// `consistency_inspect_duration_seconds`, microsecond buckets.
    pub inspect_duration: Histogram,
    /// `consistency_tracked_tasks`.
    pub tracked_tasks: IntGauge,
    /// `consistency_tracker_evictions_total{reason}`.
    pub tracker_evictions: IntCounterVec,
    /// `consistency_tracker_store_errors_total{reason}`: see [`StoreErrorReason`].
    pub tracker_store_errors: IntCounterVec,
    /// `consistency_tracker_store_up`: 1 while the configured task store answers.
    pub tracker_store_up: IntGauge,

    /// When the upstream last sent a response head; `/readyz` reads it.
    pub upstream_seen: UpstreamSeen,

    /// Per route (configuration order, then `other` last): resolved proxy handles.
    proxy_routes: Vec<ProxyRouteMetrics>,
    upstream_error_handles: [IntCounter; 4],
}

/// The proxy handles of one route, resolved at start.
#[derive(Debug, Clone)]
pub struct ProxyRouteMetrics {
    /// Indexed by [`method_index`], then [`code_index`].
    pub requests: [[IntCounter; 5]; 8],
    pub duration: Histogram,
}

/// The last time the upstream answered, as milliseconds since the sidecar started (0: never).
#[derive(Debug)]
pub struct UpstreamSeen {
    start: Instant,
    last_ms: AtomicU64,
}

// === impl Metrics ===

impl Metrics {
    /// Registers every family and resolves every label combination the configuration names.
    pub fn new(settings: &Settings) -> Metrics {
        // Registration only fails on a duplicate or malformed name; both are bugs in this file.
        Metrics::register(settings).expect("metric families are well-formed and unique")
    }

    fn register(settings: &Settings) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels)?,
            )
        };

        // Request latency: from a cached hit (ms) to the legacy backend's slow task creation.
        let request_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        // Inspection takes microseconds; the default buckets start at 5 ms and would see nothing.
        let inspect_buckets = vec![
            5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
        ];

        let requests = counter(
            "consistency_proxy_requests_total",
            "Requests answered by the proxy, by route, method and status class.",
            &["route", "method", "code"],
        )?;
        let request_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "consistency_proxy_request_duration_seconds",
                    "Time from request head to the end of the response body.",
                )
                .buckets(request_buckets),
                &["route"],
            )?,
        )?;
        let upstream_errors = counter(
            "consistency_proxy_upstream_errors_total",
            "Upstream failures, by reason.",
            &["reason"],
        )?;
        let load_shed = register(
            &registry,
            IntCounter::new(
                "consistency_proxy_load_shed_total",
                "Requests answered 503 at once because the concurrency cap was reached.",
            )?,
        )?;
        let inflight = register(
            &registry,
            IntGauge::new(
                "consistency_proxy_inflight_requests",
                "Requests whose response has not ended yet.",
            )?,
        )?;
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("consistency_build_info", "Build information; always 1."),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

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
            "Values fixed in flight, by rule.",
            &["route", "rule"],
        )?;
        let skipped = counter(
            "consistency_skipped_total",
            "Responses on inspected routes passed through unchecked, by reason.",
            &["route", "reason"],
        )?;
        let ratio = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "consistency_ratio",
                    "Consistent records divided by checked records since start (1 with none).",
                ),
                &["route"],
            )?,
        )?;
        let inspect_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "consistency_inspect_duration_seconds",
                    "Time spent inspecting one response body.",
                )
                .buckets(inspect_buckets),
            )?,
        )?;
        let tracked_tasks = register(
            &registry,
            IntGauge::new(
                "consistency_tracked_tasks",
                "Tasks remembered across polls.",
            )?,
        )?;
        let tracker_evictions = counter(
            "consistency_tracker_evictions_total",
            "Tasks forgotten to stay within capacity (capacity) or after their TTL (ttl).",
            &["reason"],
        )?;
        let tracker_store_errors = counter(
            "consistency_tracker_store_errors_total",
            "Responses the shared task store (Redis) did not judge, left to local memory, by reason.",
            &["reason"],
        )?;
        let tracker_store_up = register(
            &registry,
            IntGauge::new(
                "consistency_tracker_store_up",
                "1 while the task store answers (always with store = \"local\"), else 0.",
            )?,
        )?;
        for reason in StoreErrorReason::ALL {
            tracker_store_errors.with_label_values(&[reason.as_str()]);
        }

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let route_names: Vec<&str> = settings.routes.names().chain([OTHER]).collect();
        let proxy_routes = route_names
            .iter()
            .map(|route| ProxyRouteMetrics {
                requests: METHODS.map(|method| {
                    CODE_CLASSES.map(|code| requests.with_label_values(&[route, method, code]))
                }),
                duration: request_duration.with_label_values(&[route]),
            })
            .collect();
        let upstream_error_handles =
            UpstreamErrorReason::ALL.map(|r| upstream_errors.with_label_values(&[r.as_str()]));
        for reason in EVICTION_REASONS {
            tracker_evictions.with_label_values(&[reason]);
        }
        for (i, route) in settings.config.routes.iter().enumerate() {
            let name = route_names[i];
            checks.with_label_values(&[name]);
            ratio.with_label_values(&[name]).set(1.0);
            for level in Level::ALL {
                results.with_label_values(&[name, level.as_str()]);
            }
            for reason in Skip::ALL {
                skipped.with_label_values(&[name, reason.as_str()]);
            }
            for (rule, level, fixable) in rule_labels(settings, route.track) {
                issues.with_label_values(&[name, rule, level.as_str()]);
                if fixable {
                    fixes.with_label_values(&[name, rule]);
                }
            }
        }

        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_errors,
            load_shed,
            inflight,
            build_info,
            checks,
            results,
            issues,
            fixes,
            skipped,
            ratio,
            inspect_duration,
            tracked_tasks,
            tracker_evictions,
            tracker_store_errors,
            tracker_store_up,
            upstream_seen: UpstreamSeen::new(),
            proxy_routes,
            upstream_error_handles,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The proxy handles of a route index from [`crate::routes::MatchedRoute`] (`None`: `other`).
    pub fn proxy_route(&self, index: Option<usize>) -> &ProxyRouteMetrics {
        let other = self.proxy_routes.len() - 1;
        &self.proxy_routes[index.map_or(other, |i| i.min(other))]
    }

    pub fn upstream_error(&self, reason: UpstreamErrorReason) {
        self.upstream_error_handles[reason as usize].inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on a malformed family, which registration rules out.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        out
    }
}

/// `(rule, level, can_fix)` of every enabled rule that may fire on a route: the single-record
/// rules, plus the transition rules when the route is tracked.
pub fn rule_labels(settings: &Settings, tracked: bool) -> Vec<(&str, Level, bool)> {
    let mut labels: Vec<(&str, Level, bool)> = settings
        .config
        .rules
        .iter()
        .filter(|rule| rule.enabled != Some(false))
        .filter_map(|rule| {
            let fixable = rule.fix.as_ref().is_some_and(|fix| !fix.is_empty());
            Some((rule.name.as_str(), rule.level?, fixable))
        })
        .collect();
    if tracked {
        for kind in TransitionKind::ALL {
            let rule = settings.config.tracker.rule(kind);
            if rule.enabled {
                labels.push((kind.as_str(), rule.level, rule.fix));
            }
        }
    }
    labels
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Index of a method in [`METHODS`].
pub fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Index of a status in [`CODE_CLASSES`]; hyper allows codes up to 999, which count as `5xx`.
pub fn code_index(status: StatusCode) -> usize {
    (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1
}

// === impl ProxyRouteMetrics ===

impl ProxyRouteMetrics {
    pub fn request(&self, method: usize, status: StatusCode) -> &IntCounter {
        &self.requests[method.min(7)][code_index(status)]
    }
}

// === impl UpstreamSeen ===

impl UpstreamSeen {
    fn new() -> UpstreamSeen {
        UpstreamSeen {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records that the upstream just answered.
    pub fn mark(&self) {
        // +1 keeps "answered in the first millisecond" apart from "never".
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether the upstream answered within `window`.
    pub fn within(&self, window: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        now.saturating_add(1).saturating_sub(last) <= window
    }
}

#[cfg(test)]
mod tests;
