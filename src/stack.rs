//! The proxy's tower stack, and the parts every worker shares: the settings, the metric
//! registry, the inspector with its task memory, and the upstream pool.

use std::sync::Arc;

use prometheus::Registry;
use tower::ServiceBuilder;

use crate::admin::Admin;
use crate::clock::LastSeen;
use crate::inspection::{InspectLayer, InspectService, Inspector};
use crate::proxy::{
    Classify, ClassifyLayer, Forward, PoolConfig, ProxyMetrics, RequestMetrics,
    RequestMetricsLayer, Shed, ShedLayer, UpstreamPool,
};
use crate::routes::OTHER;
use crate::settings::Settings;

/// The stack, outermost first: route classification, request metrics, load shedding,
/// inspection of configured routes' responses, then forwarding to the upstream service `U`.
pub type ProxyStack<U> = Classify<RequestMetrics<Shed<InspectService<Forward<U>>>>>;

/// What the proxy's workers share; built once per sidecar.
#[derive(Debug)]
pub struct Sidecar {
    pub settings: Arc<Settings>,
    pub registry: Registry,
    pub proxy_metrics: ProxyMetrics,
    pub inspector: Arc<Inspector>,
    /// When the upstream last answered; `/readyz` reads it.
    pub answered: Arc<LastSeen>,
    pub pool: UpstreamPool,
    shed: ShedLayer,
}

// === impl Sidecar ===

impl Sidecar {
    /// Registers every metric family and creates the shared state.
    pub fn new(settings: Arc<Settings>) -> prometheus::Result<Sidecar> {
        let registry = crate::metrics::registry(settings.config.mode)?;
        let route_names: Vec<&str> = settings.routes.names().chain([OTHER]).collect();
        let proxy_metrics = ProxyMetrics::register(&registry, &route_names)?;
        let inspector = Arc::new(Inspector::new(&settings, &registry)?);
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
        let shed = ShedLayer::new(proxy.max_concurrent_requests, proxy_metrics.clone());
        Ok(Sidecar {
            settings,
            registry,
            proxy_metrics,
            inspector,
            answered: Arc::new(LastSeen::never()),
            pool,
            shed,
        })
    }

    /// The stack in front of the upstream pool.
    pub fn app(&self) -> ProxyStack<UpstreamPool> {
        self.app_with(self.pool.clone())
    }

    /// The stack in front of any upstream service: tests drive it with `oneshot` and a fake.
    pub fn app_with<U>(&self, upstream: U) -> ProxyStack<U> {
        let config = &self.settings.config;
        ServiceBuilder::new()
            .layer(ClassifyLayer::new(self.settings.clone()))
            .layer(RequestMetricsLayer::new(self.proxy_metrics.clone()))
            .layer(self.shed.clone())
            .layer(InspectLayer::new(self.inspector.clone()))
            .service(Forward::new(
                upstream,
                config.upstream.authority().clone(),
                config.proxy.response_header_timeout,
                self.proxy_metrics.clone(),
                self.answered.clone(),
            ))
    }

    /// The admin port's service.
    pub fn admin(&self) -> Admin {
        Admin::new(
            self.settings.clone(),
            self.registry.clone(),
            self.answered.clone(),
            self.inspector.book(),
        )
    }
}
