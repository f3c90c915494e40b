//! The transparent forwarding path: request metrics and route classification, load shedding,
//! header rewriting, the pooled upstream client, and the upgrade tunnel.
//!
//! Requests flow one way: [`RequestMetricsLayer`] → [`ShedLayer`] → (inspection) → [`Forward`].
//! Every layer takes and returns [`ProxyBody`] so layers can be inserted between them.

mod body;
mod forward;
mod request_metrics;
mod shed;
mod upgrade;
mod upstream;

pub use body::{BoxError, Guarded, ProxyBody};
pub use forward::{ClientAddr, Forward};
pub use request_metrics::{RequestMetrics, RequestMetricsLayer};
pub use shed::{Shed, ShedLayer};
pub use upstream::{error_response, upstream_client, UpstreamClient};
