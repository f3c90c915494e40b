//! The metric registry: each layer registers its own families into it, beside the handles it
//! uses (`proxy::ProxyMetrics`, `inspection::InspectionMetrics`, `tracker::TrackerCollector`);
//! this module adds what belongs to no layer (build information, the process) and encodes it.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::engine::Mode;

/// The Content-Type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `consistency_build_info{version,mode}`: always 1, for the running mode only.
#[derive(Debug, Clone)]
pub struct BuildInfo(IntGaugeVec);

// === impl BuildInfo ===

impl BuildInfo {
    /// A reload may change the mode; the old series goes, so one series is always 1.
    pub fn set_mode(&self, mode: Mode) {
        self.0.reset();
        self.0
            .with_label_values(&[env!("CARGO_PKG_VERSION"), mode.as_str()])
            .set(1);
    }
}

/// A registry holding `consistency_build_info{version,mode}` and the `process_*` collector.
pub fn registry(mode: Mode) -> prometheus::Result<(Registry, BuildInfo)> {
    let registry = Registry::new();
    let build_info = IntGaugeVec::new(
        Opts::new(
            "consistency_build_info",
            "Build information and the configured mode (fix or observe); always 1.",
        ),
        &["version", "mode"],
    )?;
    registry.register(Box::new(build_info.clone()))?;
    let build_info = BuildInfo(build_info);
    build_info.set_mode(mode);
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok((registry, build_info))
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec only fails on a malformed family, which registration rules out.
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %err, "cannot encode metrics");
    }
    out
}

#[cfg(test)]
mod tests;
