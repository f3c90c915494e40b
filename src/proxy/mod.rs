//! The transparent forwarding path: route classification, request metrics, load shedding,
//! header rewriting, the upstream connection pool, and the upgrade tunnel.
//!
//! Requests flow one way: [`ClassifyLayer`] → [`RequestMetricsLayer`] → [`ShedLayer`] →
//! (inspection) → [`Forward`] → [`UpstreamPool`]. Each layer is generic over the response body
//! and wraps it once, so nothing on the way out is boxed.

mod body;
mod classify;
mod error;
mod forward;
mod headers;
mod metrics;
mod pool;
mod request_metrics;
mod shed;
mod upgrade;

pub use body::{Guarded, ProxyBody};
pub use classify::{Classify, ClassifyLayer};
pub use error::{UpstreamError, UpstreamErrorReason};
pub use forward::{Forward, ForwardBody, UpstreamBody};
pub use headers::ClientAddr;
pub use metrics::{code_index, method_index, ProxyFamilies, ProxyMetrics};
pub use pool::{ClientConnection, PoolConfig, PooledBody, UpstreamPool};
pub use request_metrics::{RequestMetrics, RequestMetricsLayer};
pub use shed::{Shed, ShedBody, ShedLayer};
