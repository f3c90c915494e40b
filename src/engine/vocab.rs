//! The engine's vocabulary: severity levels, the logical task fields, the modes, transition kinds.
//!
//! These names are API: the configuration file, metric labels, alerts and the report spell them
//! as `as_str()` does (snake_case).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Severity of a broken rule; a record's level is the worst among the rules it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Consistent,
    MinorIssue,
    MajorIssue,
    Critical,
}

/// The logical task fields that rules talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Status,
    Stage,
    Progress,
    IsCompleted,
}

/// Whether inspected responses are patched or only judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Fix,
    Observe,
}

// === impl Mode ===

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fix => "fix",
            Mode::Observe => "observe",
        }
    }
}

/// Whether one rule's fix is applied, or only counted (`mode = "shadow"`, to try a rule out).
///
/// A shadow rule is evaluated like any other and its issues are counted, but it changes nothing
/// a client or the SLO sees: its fix is never applied, and its issues leave the record's level
/// alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    #[default]
    Fix,
    Shadow,
}

// === impl RuleMode ===

impl RuleMode {
    pub const ALL: [RuleMode; 2] = [RuleMode::Fix, RuleMode::Shadow];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleMode::Fix => "fix",
            RuleMode::Shadow => "shadow",
        }
    }
}

impl fmt::Display for RuleMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names of the transition (cross-poll) rules: a fixed set, each configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    StageRegression,
    TerminalReopened,
    TerminalChanged,
    ProgressRegression,
}

// === impl Level ===

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Consistent,
        Level::MinorIssue,
        Level::MajorIssue,
        Level::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Consistent => "consistent",
            Level::MinorIssue => "minor_issue",
            Level::MajorIssue => "major_issue",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Field ===

impl Field {
    /// In slot order: a record's state holds one optional value per field, in this order.
    pub const ALL: [Field; 4] = [
        Field::Status,
        Field::Stage,
        Field::Progress,
        Field::IsCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Status => "status",
            Field::Stage => "stage",
            Field::Progress => "progress",
            Field::IsCompleted => "is_completed",
        }
    }

    /// The field spelt `name`, as the configuration spells it.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TransitionKind ===

impl TransitionKind {
    pub const ALL: [TransitionKind; 4] = [
        TransitionKind::StageRegression,
        TransitionKind::TerminalReopened,
        TransitionKind::TerminalChanged,
        TransitionKind::ProgressRegression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::StageRegression => "stage_regression",
            TransitionKind::TerminalReopened => "terminal_reopened",
            TransitionKind::TerminalChanged => "terminal_changed",
            TransitionKind::ProgressRegression => "progress_regression",
        }
    }
}
