//! The proxy's tower stack, and what every worker shares: the metric registry, the task memory
//! and report (through the inspection state), the upstream pool, and the current configuration
//! with the stack built for it.
//!
//! A configuration lives in a [`Generation`]. A reload builds a new one over the same shared
//! state and swaps it in atomically: requests already in flight keep the generation they
//! started with, new ones get the new one, and no counter or task memory is lost.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::Registry;
use tower::ServiceBuilder;

use crate::clock::LastSeen;
use crate::inspection::{InspectLayer, InspectService, InspectionState, Inspector};
use crate::metrics::BuildInfo;
use crate::proxy::{
    Classify, ClassifyLayer, Forward, PoolConfig, ProxyFamilies, ProxyMetrics, RequestMetrics,
    RequestMetricsLayer, Shed, ShedLayer, UpstreamPool,
};
use crate::report::ReportBook;
use crate::routes::OTHER;
use crate::settings::Settings;

/// The stack, outermost first: route classification, request metrics, load shedding,
/// inspection of configured routes' responses, then forwarding to the upstream service `U`.
pub type ProxyStack<U> = Classify<RequestMetrics<Shed<InspectService<Forward<U>>>>>;

/// What the proxy's workers share; built once per sidecar.
#[derive(Debug)]
pub struct Sidecar {
    pub registry: Registry,
    /// When the upstream last answered; `/readyz` reads it.
    pub answered: Arc<LastSeen>,
    pub pool: UpstreamPool,
    build_info: BuildInfo,
    proxy_families: ProxyFamilies,
    inspection: InspectionState,
    /// The concurrency cap is one for the process, whatever the configuration.
    shed: ShedLayer,
    current: ArcSwap<Generation>,
}

/// One configuration and everything built from it.
#[derive(Debug)]
pub struct Generation {
    pub settings: Arc<Settings>,
    pub proxy_metrics: ProxyMetrics,
    pub inspector: Arc<Inspector>,
    /// The stack in front of the upstream pool; cloned per request.
    pub app: ProxyStack<UpstreamPool>,
}

// === impl Sidecar ===

impl Sidecar {
    /// Registers every metric family and creates the shared state and the first generation.
    pub fn new(settings: Arc<Settings>) -> prometheus::Result<Sidecar> {
        let (registry, build_info) = crate::metrics::registry(settings.config.mode)?;
        let proxy_families = ProxyFamilies::register(&registry)?;
        let inspection = InspectionState::new(&settings, &registry)?;
        let proxy = &settings.config.proxy;
        let authority = settings.config.upstream.authority();
        let pool = UpstreamPool::new(PoolConfig {
            authority: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            connect_timeout: proxy.connect_timeout,
            idle_timeout: proxy.upstream_idle_timeout,
            max_idle: proxy.upstream_max_idle,
            max_connections: proxy.upstream_max_connections,
        });
        let shed = ShedLayer::new(proxy.max_concurrent_requests, proxy_families.load_shed());
        let answered = Arc::new(LastSeen::never());
        let first = build(
            settings,
            &proxy_families,
            &inspection,
            &shed,
            &answered,
            pool.clone(),
        );
        Ok(Sidecar {
            registry,
            answered,
            pool,
            build_info,
            proxy_families,
            inspection,
            shed,
            current: ArcSwap::from_pointee(first),
        })
    }

    /// The generation new requests get.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The current generation's stack, for one request.
    pub fn app(&self) -> ProxyStack<UpstreamPool> {
        self.current.load().app.clone()
    }

    /// Builds a generation for `settings` and makes it the current one.
    pub fn swap(&self, settings: Arc<Settings>) {
        self.build_info.set_mode(settings.config.mode);
        let next = build(
            settings,
            &self.proxy_families,
            &self.inspection,
            &self.shed,
            &self.answered,
            self.pool.clone(),
        );
        self.current.store(Arc::new(next));
    }

    /// The current stack in front of any upstream service: tests drive it with `oneshot`.
    #[cfg(test)]
    pub(crate) fn app_with<U>(&self, upstream: U) -> ProxyStack<U> {
        let current = self.current();
        stack(
            &current.settings,
            &current.proxy_metrics,
            &current.inspector,
            &self.shed,
            &self.answered,
            upstream,
        )
    }

    /// The task memory, kept across generations.
    pub fn memory(&self) -> Arc<crate::tracker::TaskMemory> {
        self.inspection.memory.clone()
    }

    /// The evidence rings, kept across generations.
    pub fn evidence(&self) -> Arc<crate::evidence::EvidenceBook> {
        self.inspection.evidence.clone()
    }

    /// The report book, kept across generations.
    pub fn book(&self) -> Arc<ReportBook> {
        self.inspection.book.clone()
    }
}

fn build(
    settings: Arc<Settings>,
    families: &ProxyFamilies,
    inspection: &InspectionState,
    shed: &ShedLayer,
    answered: &Arc<LastSeen>,
    pool: UpstreamPool,
) -> Generation {
    let route_names: Vec<&str> = settings.routes.names().chain([OTHER]).collect();
    let proxy_metrics = ProxyMetrics::resolve(families, &route_names);
    let inspector = Arc::new(Inspector::new(&settings, inspection));
    let app = stack(&settings, &proxy_metrics, &inspector, shed, answered, pool);
    Generation {
        settings,
        proxy_metrics,
        inspector,
        app,
    }
}

fn stack<U>(
    settings: &Arc<Settings>,
    proxy_metrics: &ProxyMetrics,
    inspector: &Arc<Inspector>,
    shed: &ShedLayer,
    answered: &Arc<LastSeen>,
    upstream: U,
) -> ProxyStack<U> {
    let config = &settings.config;
    ServiceBuilder::new()
        .layer(ClassifyLayer::new(settings.clone()))
        .layer(RequestMetricsLayer::new(proxy_metrics.clone()))
        .layer(shed.clone())
        .layer(InspectLayer::new(inspector.clone()))
        .service(Forward::new(
            upstream,
            config.upstream.authority().clone(),
            config.proxy.response_header_timeout,
            proxy_metrics.clone(),
            answered.clone(),
        ))
}

#[cfg(test)]
mod tests;
