//! Tasks that stand still: stalled (still polled, unchanged past its stage's limit), abandoned
//! (nobody polls it any more), and how long each stage takes. Seen from the polls alone, with no
//! heartbeat from the backend; observation only, no response is changed for it.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use super::transition::UNKNOWN;
use crate::config::TrackerConfig;
use crate::engine::ModelConfig;

/// Buckets of `consistency_stage_duration_seconds`: AI stages take minutes, so the buckets run
/// from a second to two hours, closest where stall limits usually sit (5 to 30 minutes).
const STAGE_BUCKETS: [f64; 14] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0,
];

/// Stalled tasks listed at most (the longest stalled), on the status page and `/report.json`.
pub const LISTED: usize = 50;

/// The stall and abandonment limits of one configuration, with the model's terminal statuses.
#[derive(Debug, Clone)]
pub(crate) struct StallLimits {
    /// `tracker.stall_after`, in ms.
    default_ms: u64,
    /// Indexed by stage code: `tracker.stall_after_stage` or the default.
    per_stage: Box<[u64]>,
    /// `tracker.abandon_after`, in ms.
    pub abandon_ms: u64,
    /// Indexed by status code.
    terminal: Box<[bool]>,
}

/// What one poll did to a task's activity, for the counters and the histogram.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Activity {
    /// It became stalled at this poll, in this stage.
    pub stalled: Option<u16>,
    /// It moved again after being stalled in this stage.
    pub recovered: Option<u16>,
    /// It left this stage after this many ms in it.
    pub left: Option<(u16, u64)>,
}

/// A stalled task as the status page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StalledTask {
    pub route: String,
    pub task_id: String,
    pub stage: String,
    /// `None` when no progress was ever sent.
    pub progress: Option<f64>,
    /// Since its state last changed (or it was first seen, if it never changed).
    pub stalled_for_ms: u64,
    /// Since it was last polled.
    pub polled_ago_ms: u64,
    /// Since it was first seen.
    pub tracked_for_ms: u64,
}

/// The families of task activity: counters of stalls, recoveries and abandonments, the stage
/// duration histogram, and the gauge of stalled tasks (set from the memory at scrape time).
#[derive(Debug, Clone)]
pub(crate) struct ActivityMetrics {
    pub stalled_now: IntGaugeVec,
    pub stalled: IntCounterVec,
    pub recovered: IntCounterVec,
    pub abandoned: IntCounterVec,
    pub stage_seconds: HistogramVec,
}

// === impl StallLimits ===

impl StallLimits {
    pub fn new(config: &TrackerConfig, model: &ModelConfig) -> StallLimits {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let default_ms = ms(config.stall_after);
        StallLimits {
            default_ms,
            per_stage: model
                .stages
                .iter()
                .map(|stage| {
                    config
                        .stall_after_stage
                        .get(stage)
                        .map_or(default_ms, |limit| ms(**limit))
                })
                .collect(),
            abandon_ms: ms(config.abandon_after),
            terminal: model
                .statuses
                .iter()
                .map(|s| model.terminal_statuses.contains(s))
                .collect(),
        }
    }

    /// How long a task in `stage` may stay unchanged before it is stalled.
    pub fn stall_ms(&self, stage: u16) -> u64 {
        self.per_stage
            .get(usize::from(stage))
            .copied()
            .unwrap_or(self.default_ms)
    }

    /// The stall limits for the judge script: by stage code, then the default, comma-separated.
    pub fn limits_arg(&self) -> String {
        let mut text = String::new();
        for ms in self.per_stage.iter().chain([&self.default_ms]) {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(&ms.to_string());
        }
        text
    }

    /// The terminal status codes for the scripts, comma-separated.
    pub fn terminal_arg(&self) -> String {
        let codes: Vec<String> = (0..self.terminal.len())
            .filter(|&code| self.terminal[code])
            .map(|code| code.to_string())
            .collect();
        codes.join(",")
    }

    /// Whether `status` ends a task: such a task is never stalled nor abandoned.
    pub fn is_terminal(&self, status: u16) -> bool {
        status != UNKNOWN
            && self
                .terminal
                .get(usize::from(status))
                .copied()
                .unwrap_or(false)
    }
}

// === impl ActivityMetrics ===

impl ActivityMetrics {
    /// The families, unregistered: the tracker's collector gathers them with its own.
    pub fn new() -> prometheus::Result<ActivityMetrics> {
        let labels = &["route", "stage"];
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), labels);
        Ok(ActivityMetrics {
            stalled_now: IntGaugeVec::new(
                Opts::new(
                    "consistency_stalled_tasks",
                    "Tasks still polled whose state has not changed for their stage's stall limit, by stage.",
                ),
                labels,
            )?,
            stalled: counter(
                "consistency_tasks_stalled_total",
                "Tasks that became stalled, by the stage they stood still in.",
            )?,
            recovered: counter(
                "consistency_tasks_recovered_total",
                "Stalled tasks that moved again, by the stage they had stood still in.",
            )?,
            abandoned: counter(
                "consistency_tasks_abandoned_total",
                "Non-terminal tasks nobody polled for tracker.abandon_after, then forgotten, by their last stage.",
            )?,
            stage_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "consistency_stage_duration_seconds",
                    "Time a task spent in a stage, observed when a poll shows it in the next one.",
                )
                .buckets(STAGE_BUCKETS.to_vec()),
                labels,
            )?,
        })
    }

    /// Creates every series of `route` at zero, so that dashboards and alerts see the route
    /// before its first stall.
    pub fn touch(&self, route: &str, stages: &[Box<str>]) {
        for stage in stages {
            let labels = [route, &**stage];
            self.stalled.with_label_values(&labels);
            self.recovered.with_label_values(&labels);
            self.abandoned.with_label_values(&labels);
            self.stage_seconds.with_label_values(&labels);
        }
    }

    /// Counts one poll's activity on a task of `route`; `stage` names a stage code.
    pub fn record(&self, route: &str, activity: Activity, stage: impl Fn(u16) -> String) {
        if let Some(code) = activity.stalled {
            self.stalled.with_label_values(&[route, &stage(code)]).inc();
        }
        if let Some(code) = activity.recovered {
            self.recovered
                .with_label_values(&[route, &stage(code)])
                .inc();
        }
        if let Some((code, ms)) = activity.left {
            self.stage_seconds
                .with_label_values(&[route, &stage(code)])
                .observe(ms as f64 / 1000.0);
        }
    }

    pub fn descs(&self) -> Vec<&Desc> {
        let mut descs = self.stalled_now.desc();
        descs.extend(self.stalled.desc());
        descs.extend(self.recovered.desc());
        descs.extend(self.abandoned.desc());
        descs.extend(self.stage_seconds.desc());
        descs
    }

    pub fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.stalled_now.collect();
        families.extend(self.stalled.collect());
        families.extend(self.recovered.collect());
        families.extend(self.abandoned.collect());
        families.extend(self.stage_seconds.collect());
        families
    }
}
