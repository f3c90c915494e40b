//! The proxy path's metric families, registered beside the handles the layers use.

use std::ops::Deref;
use std::sync::Arc;

use http::{Method, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use super::error::UpstreamErrorReason;

/// Values of the `method` label; anything else is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// Values of the `code` label.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request latency buckets: from a cached hit (ms) to the legacy backend's slow task creation.
const REQUEST_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The proxy families, registered once; each configuration resolves its route handles from them.
#[derive(Debug, Clone)]
pub struct ProxyFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: [IntCounter; UpstreamErrorReason::ALL.len()],
    load_shed: IntCounter,
    inflight: IntGauge,
}

/// Handles for the request, shedding and upstream metrics. Cloned with every service clone (hyper
/// clones the stack per request), so it is one reference count, not hundreds of handles.
#[derive(Debug, Clone)]
pub struct ProxyMetrics(Arc<Handles>);

#[derive(Debug)]
pub struct Handles {
    /// Per route (the classifier's order: configured routes, then `other`).
    routes: Vec<RouteRequests>,
    upstream_errors: [IntCounter; UpstreamErrorReason::ALL.len()],
    /// `consistency_proxy_inflight_requests`.
    pub inflight: IntGauge,
}

/// `consistency_proxy_requests_total` and the duration histogram of one route.
#[derive(Debug)]
pub struct RouteRequests {
    /// Indexed by [`method_index`], then [`code_index`].
    requests: [[IntCounter; CODE_CLASSES.len()]; METHODS.len()],
    pub duration: Histogram,
}

// === impl ProxyFamilies ===

impl ProxyFamilies {
    /// Registers the families, with every method, code and reason at 0 from the start.
    pub fn register(registry: &Registry) -> prometheus::Result<ProxyFamilies> {
        let requests = IntCounterVec::new(
            Opts::new(
                "consistency_proxy_requests_total",
                "Requests answered by the proxy, by route, method and status class.",
            ),
            &["route", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "consistency_proxy_request_duration_seconds",
                "Time from request head to the end of the response body.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "consistency_proxy_upstream_errors_total",
                "Upstream failures, by reason.",
            ),
            &["reason"],
        )?;
        let load_shed = IntCounter::new(
            "consistency_proxy_load_shed_total",
            "Requests answered 503 at once because the concurrency cap was reached.",
        )?;
        let inflight = IntGauge::new(
            "consistency_proxy_inflight_requests",
            "Requests whose response has not ended yet.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(load_shed.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        Ok(ProxyFamilies {
            upstream_errors: UpstreamErrorReason::ALL
                .map(|reason| upstream_errors.with_label_values(&[reason.as_str()])),
            requests,
            duration,
            load_shed,
            inflight,
        })
    }
}

impl ProxyFamilies {
    /// `consistency_proxy_load_shed_total`, for the one shedding layer of the process.
    pub fn load_shed(&self) -> IntCounter {
        self.load_shed.clone()
    }
}

// === impl ProxyMetrics ===

impl ProxyMetrics {
    /// The handles of `routes` (the classifier's route names, `other` last), every method and
    /// code at 0 from the start.
    pub fn resolve(families: &ProxyFamilies, routes: &[&str]) -> ProxyMetrics {
        let ProxyFamilies {
            requests,
            duration,
            upstream_errors,
            inflight,
            ..
        } = families;
        ProxyMetrics(Arc::new(Handles {
            routes: routes
                .iter()
                .map(|route| RouteRequests {
                    requests: METHODS.map(|method| {
                        CODE_CLASSES.map(|code| requests.with_label_values(&[route, method, code]))
                    }),
                    duration: duration.with_label_values(&[route]),
                })
                .collect(),
            upstream_errors: upstream_errors.clone(),
            inflight: inflight.clone(),
        }))
    }
}

// === impl Handles ===

impl Handles {
    /// The handles of a classified route; `None` (and an index past the end) is `other`.
    pub fn route(&self, index: Option<usize>) -> &RouteRequests {
        let other = self.routes.len() - 1;
        &self.routes[index.map_or(other, |i| i.min(other))]
    }

    pub fn upstream_error(&self, reason: UpstreamErrorReason) -> &IntCounter {
        &self.upstream_errors[reason as usize]
    }
}

impl Deref for ProxyMetrics {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

// === impl RouteRequests ===

impl RouteRequests {
    pub fn request(&self, method: usize, status: StatusCode) -> &IntCounter {
        &self.requests[method.min(METHODS.len() - 1)][code_index(status)]
    }
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
        _ => METHODS.len() - 1,
    }
}

/// Index of a status in [`CODE_CLASSES`]; hyper allows codes up to 999, which count as `5xx`.
pub fn code_index(status: StatusCode) -> usize {
    (usize::from(status.as_u16() / 100)).clamp(1, CODE_CLASSES.len()) - 1
}
