//! What the engine says about a body: per-record verdicts, issues, fixes, and the memory hook.

use std::sync::Arc;

use bytes::Bytes;

use super::vocab::{Field, Level};

/// The result of inspecting one body.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub outcome: Outcome,
    /// The body to send: the input buffer itself when nothing changed.
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// One verdict per record found.
    Checked(Vec<RecordVerdict>),
    /// Nothing could be checked, and the body is untouched.
    Skipped(SkipReason),
}

/// Why a body could not be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Not valid JSON (truncated, invalid UTF-8, too deep, ...).
    Unparseable,
    /// Valid JSON, but the route's record pointer matches no object.
    NoRecord,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unparseable => "unparseable",
            SkipReason::NoRecord => "no_record",
        }
    }
}

/// The verdict on one task record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordVerdict {
    /// Cut to `tracker.max_task_id_bytes` (with a marker) when longer.
    pub task_id: Option<String>,
    /// The id was longer than `tracker.max_task_id_bytes`: the task was not remembered.
    pub task_id_too_long: bool,
    /// Worst level among `issues` of rules not in shadow; `Consistent` when there are none.
    pub level: Level,
    pub issues: Vec<Issue>,
    /// Fixes applied (empty in observe mode).
    pub fixes: Vec<Fix>,
    /// What the rules in shadow would have fixed had they been in fix mode; never applied
    /// (empty in observe mode).
    pub shadow_fixes: Vec<Fix>,
    /// The record's fields as sent to the client.
    pub sent: RecordState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub rule: Arc<str>,
    pub level: Level,
    pub message: String,
    /// Raised by a rule in shadow: counted, but it leaves the record's level alone.
    pub shadow: bool,
}

/// One replaced value; `before` and `after` are raw JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub rule: Arc<str>,
    pub field: Field,
    pub before: String,
    pub after: String,
}

/// The task fields of a record, as far as they are present and of the expected type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordState {
    pub status: Option<String>,
    pub stage: Option<String>,
    pub progress: Option<f64>,
    pub is_completed: Option<bool>,
}

/// A finding of the cross-poll memory about one record.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionFinding {
    pub rule: Arc<str>,
    pub level: Level,
    pub message: String,
    /// A proposed value; applied only if no single-record rule fires on the result.
    pub fix: Option<(Field, serde_json::Value)>,
    /// The rule is in shadow: the fix is judged and reported as a shadow fix, never applied,
    /// and the finding leaves the record's level alone.
    pub shadow: bool,
}

/// Memory across responses; the engine calls it once per record that has a task id.
pub trait TransitionJudge {
    /// `state` is the record as it would be sent after single-record fixes.
    fn judge(&mut self, task_id: &str, state: &RecordState) -> Vec<TransitionFinding>;
    /// The state actually sent (after every accepted fix; the original in observe mode).
    fn remember(&mut self, task_id: &str, sent: &RecordState);
    /// What the last `judge` call compared its record with (the task's memory before it), for
    /// evidence; `None` when nothing was remembered or the judge does not say.
    fn compared_with(&self) -> Option<RecordState> {
        None
    }
}

/// A judge for untracked routes: finds nothing, remembers nothing.
pub struct NoMemory;

impl TransitionJudge for NoMemory {
    fn judge(&mut self, _: &str, _: &RecordState) -> Vec<TransitionFinding> {
        Vec::new()
    }
    fn remember(&mut self, _: &str, _: &RecordState) {}
}
