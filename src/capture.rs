//! Capture: one NDJSON line per inspected response, with what `replay` needs, written off the
//! response path.
//!
//! A response only ever offers its line to a bounded queue (`try_send`): a full queue, a full
//! disk or an unwritable file drops the line, counts it
//! (`consistency_capture_lines_total{outcome}`) and logs once per window; it never fails or
//! delays the response. One writer thread owns the file: it appends, rotates by size
//! (`<path>.1`, `<path>.2`, ...), keeps `max_files`, and creates files with mode 0600.
//!
//! - `writer`: the thread and its rotation.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::config::{CaptureConfig, CaptureWhich};

mod writer;

/// Drops and failures are logged at most once per window, with their count.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// One captured response, as a line of the file. `replay` reads the same type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureLine {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    pub route: String,
    pub method: String,
    /// Path and query of the request.
    pub path: String,
    pub status: u16,
    pub content_type: String,
    /// The first record's task id, if any.
    #[serde(default)]
    pub task_id: Option<String>,
    /// The body as received, after its content coding was undone, redacted.
    pub body: String,
    /// `base64` when the body is not UTF-8 (and nothing was redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// An issue was found on it (shadow included).
    #[serde(default)]
    pub inconsistent: bool,
}

/// Why a line was not written, or that it was: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The writer's queue was full.
    QueueFull,
    /// The file could not be opened, written or rotated.
    WriteFailed,
}

/// The capture handle shared by every connection; `None` in the inspector when capture is off.
#[derive(Debug)]
pub struct Capture {
    queue: SyncSender<Vec<u8>>,
    which: CaptureWhich,
    /// `sample_rate` as a threshold on a 64-bit pseudo-random draw.
    threshold: u64,
    draws: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
    counters: CaptureCounters,
    dropped_log: DropLog,
}

/// `consistency_capture_lines_total`, one handle per outcome.
#[derive(Debug, Clone)]
pub struct CaptureCounters {
    written: IntCounter,
    queue_full: IntCounter,
    write_failed: IntCounter,
}

/// Counts drops and logs them at most once per [`LOG_WINDOW`].
#[derive(Debug)]
struct DropLog {
    what: &'static str,
    state: Mutex<(Option<Instant>, u64)>,
}

// === impl Outcome ===

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Written, Outcome::QueueFull, Outcome::WriteFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::QueueFull => "queue_full",
            Outcome::WriteFailed => "write_failed",
        }
    }
}

// === impl CaptureCounters ===

impl CaptureCounters {
    /// Registers `consistency_capture_lines_total{outcome}`, every outcome at 0.
    pub fn register(registry: &Registry) -> prometheus::Result<CaptureCounters> {
        let lines = IntCounterVec::new(
            Opts::new(
                "consistency_capture_lines_total",
                "Capture lines of inspected responses, by outcome (written, or dropped: queue_full, write_failed).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(lines.clone()))?;
        let [written, queue_full, write_failed] =
            Outcome::ALL.map(|outcome| lines.with_label_values(&[outcome.as_str()]));
        Ok(CaptureCounters {
            written,
            queue_full,
            write_failed,
        })
    }

    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Written => self.written.inc(),
            Outcome::QueueFull => self.queue_full.inc(),
            Outcome::WriteFailed => self.write_failed.inc(),
        }
    }
}

// === impl Capture ===

impl Capture {
    /// Starts the writer thread when capture is on; `None` when it is off.
    pub fn start(config: &CaptureConfig, counters: CaptureCounters) -> Option<Capture> {
        if !config.enabled {
            return None;
        }
        let (queue, lines) = mpsc::sync_channel(config.queue);
        writer::spawn(config, lines, counters.clone());
        Some(Capture {
            queue,
            which: config.which,
            threshold: (config.sample_rate * u64::MAX as f64) as u64,
            draws: AtomicU64::new(0),
            hasher: Default::default(),
            counters,
            dropped_log: DropLog::new("capture queue full: lines dropped"),
        })
    }

    /// Whether a response with (`inconsistent`) or without issues is captured this time.
    pub fn wants(&self, inconsistent: bool) -> bool {
        if self.which == CaptureWhich::Inconsistent && !inconsistent {
            return false;
        }
        if self.threshold == u64::MAX {
            return true;
        }
        let mut draw = self.hasher.build_hasher();
        draw.write_u64(self.draws.fetch_add(1, Ordering::Relaxed));
        draw.finish() < self.threshold
    }

    /// Offers a line to the writer; never waits.
    pub fn offer(&self, line: &CaptureLine) {
        let Ok(mut text) = serde_json::to_vec(line) else {
            return;
        };
        text.push(b'\n');
        match self.queue.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.count(Outcome::QueueFull);
                self.dropped_log.dropped(None);
            }
        }
    }
}

// === impl DropLog ===

impl DropLog {
    fn new(what: &'static str) -> DropLog {
        DropLog {
            what,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one drop; logs the count once the window since the last log has passed.
    fn dropped(&self, error: Option<&std::io::Error>) {
        let now = Instant::now();
        let due = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.1 += 1;
            let due = state
                .0
                .is_none_or(|last| now.duration_since(last) >= LOG_WINDOW);
            if due {
                let count = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(count)
            } else {
                None
            }
        };
        if let Some(count) = due {
            match error {
                Some(error) => {
                    tracing::warn!(count, error = %error, window = "10s", "{}", self.what)
                }
                None => tracing::warn!(count, window = "10s", "{}", self.what),
            }
        }
    }
}

#[cfg(test)]
mod tests;
