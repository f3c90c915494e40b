//! Background upkeep while serving: once a second, forget expired tasks, close stale idle
//! upstream connections, log held-back issue summaries and sample the status page's ratio
//! history; every `report_interval`, the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stack::Sidecar;

pub(super) async fn run(sidecar: Arc<Sidecar>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the report was last logged; the interval is read anew each tick, as a reload may
    // change it.
    let mut last_report = Instant::now();
    loop {
        tick.tick().await;
        let current = sidecar.current();
        current.inspector.tick();
        sidecar.book().sample();
        sidecar.pool.close_expired();
        let report_interval = current.settings.config.inspect.report_interval;
        // Zero turns the periodic report off.
        if !report_interval.is_zero() && last_report.elapsed() >= report_interval {
            last_report = Instant::now();
            let report = sidecar.book().snapshot();
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
