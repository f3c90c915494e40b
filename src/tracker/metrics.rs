//! The tracker's metrics, read from the tracker itself at scrape time: never stale, never
//! mirrored by a background task.

use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::memory::EvictionReason;
use super::store::TaskMemory;

/// A `prometheus` collector over the local memory of a [`TaskMemory`].
#[derive(Debug)]
pub struct TrackerCollector {
    memory: Arc<TaskMemory>,
    tracked: IntGauge,
    evictions: IntCounterVec,
    descs: Vec<Desc>,
    /// Two scrapes at once must not interleave their copying of the figures.
    collecting: Mutex<()>,
}

// === impl TrackerCollector ===

impl TrackerCollector {
    /// Registers `consistency_tracked_tasks`, `consistency_tracker_evictions_total{reason}`
    /// and the activity families: `consistency_stalled_tasks{route,stage}`,
    /// `consistency_tasks_{stalled,recovered,abandoned}_total{route,stage}` and
    /// `consistency_stage_duration_seconds{route,stage}`.
    pub fn register(registry: &Registry, memory: Arc<TaskMemory>) -> prometheus::Result<()> {
        let tracked = IntGauge::new(
            "consistency_tracked_tasks",
            "Tasks remembered across polls.",
        )?;
        let evictions = IntCounterVec::new(
            Opts::new(
                "consistency_tracker_evictions_total",
                "Tasks forgotten to stay within capacity (capacity) or after their TTL (ttl).",
            ),
            &["reason"],
        )?;
        let descs = tracked
            .desc()
            .into_iter()
            .chain(evictions.desc())
            .chain(memory.local().activity().descs())
            .cloned()
            .collect();
        registry.register(Box::new(TrackerCollector {
            memory,
            tracked,
            evictions,
            descs,
            collecting: Mutex::new(()),
        }))
    }
}

impl TrackerCollector {
    /// `consistency_stalled_tasks`: every stage of every tracked route, at zero where none is
    /// stalled, so that a healthy sidecar still shows the series.
    fn set_stalled(&self, memory: &TaskMemory) {
        let tracker = memory.local();
        let gauge = &tracker.activity().stalled_now;
        gauge.reset();
        let stages = tracker.transitions();
        for route in tracker.route_names() {
            for stage in stages.stages() {
                gauge.with_label_values(&[route.as_str(), stage]).set(0);
            }
        }
        for (route, stage, n) in memory.stalled(0).counts {
            gauge.with_label_values(&[&route, &stage]).set(n as i64);
        }
    }
}

impl Collector for TrackerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self
            .collecting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tracker = self.memory.local();
        self.tracked.set(tracker.tracked() as i64);
        for reason in EvictionReason::ALL {
            let counter = self.evictions.with_label_values(&[reason.as_str()]);
            counter.reset();
            counter.inc_by(tracker.evictions(reason));
        }
        self.set_stalled(&self.memory);
        let mut families = self.tracked.collect();
        families.extend(self.evictions.collect());
        families.extend(tracker.activity().collect());
        families
    }
}
