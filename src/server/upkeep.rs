//! Background upkeep while serving: once a second, forget expired tasks, close stale idle
//! upstream connections, log held-back issue summaries and sample the status page's ratio
//! history; every `report_interval`, the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::inspection::Inspector;
use crate::proxy::UpstreamPool;

pub(super) async fn run(inspector: Arc<Inspector>, pool: UpstreamPool, report_interval: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_report = Instant::now() + report_interval;
    loop {
        tick.tick().await;
        inspector.tick();
        inspector.book().sample();
        pool.close_expired();
        // Zero turns the periodic report off.
        if !report_interval.is_zero() && Instant::now() >= next_report {
            next_report += report_interval;
            let report = inspector.book().snapshot();
            tracing::info!(
                total_checks = report.total_checks,
                issues = report.issues_found,
                critical = report.critical_issues,
                ratio = report.consistency_ratio,
                "consistency report\n{}",
                report.to_text()
            );
        }
    }
}
