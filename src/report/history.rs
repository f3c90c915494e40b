//! The consistency ratio over the last minutes, kept in the process for the status page's chart.
//!
//! A bounded ring: one sample per interval, each the records checked and found consistent
//! during that interval (not since start), so a bad minute shows as a dip instead of being
//! averaged away by hours of good traffic.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One sample every this often (the upkeep loop asks every second).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples kept: 15 minutes at one every 5 s.
pub const SAMPLES_KEPT: usize = 180;

/// What happened during one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The end of the interval, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Records checked during the interval.
    pub checks: u64,
    /// Of those, consistent.
    pub consistent: u64,
    /// consistent ÷ checks; `None` when nothing was checked (a gap in the chart, not 100%).
    pub ratio: Option<f64>,
}

/// The ring, and the running totals at the last sample.
#[derive(Debug)]
pub struct RatioHistory {
    every: Duration,
    keep: usize,
    last_at: Instant,
    last_checks: u64,
    last_consistent: u64,
    samples: VecDeque<Sample>,
}

// === impl RatioHistory ===

impl RatioHistory {
    /// An empty ring whose first interval starts at `now` with nothing counted.
    pub fn new(every: Duration, keep: usize, now: Instant) -> RatioHistory {
        RatioHistory {
            every,
            keep,
            last_at: now,
            last_checks: 0,
            last_consistent: 0,
            samples: VecDeque::with_capacity(keep),
        }
    }

    /// Closes the interval if it has lasted `every`: `checks` and `consistent` are the running
    /// totals since start, `wall` the time the sample is stamped with.
    pub fn observe(&mut self, now: Instant, wall: SystemTime, checks: u64, consistent: u64) {
        if now.saturating_duration_since(self.last_at) < self.every {
            return;
        }
        let checked = checks.saturating_sub(self.last_checks);
        let good = consistent.saturating_sub(self.last_consistent);
        if self.samples.len() == self.keep {
            self.samples.pop_front();
        }
        if self.keep > 0 {
            self.samples.push_back(Sample {
                at_unix_ms: wall
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                checks: checked,
                consistent: good,
                ratio: (checked > 0).then(|| good as f64 / checked as f64),
            });
        }
        self.last_at = now;
        self.last_checks = checks;
        self.last_consistent = consistent;
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    pub fn keep(&self) -> usize {
        self.keep
    }
}
