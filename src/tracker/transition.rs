//! The transition rules: what the last state sent for a task says about the next one.

use std::sync::Arc;

use serde_json::Value;

use crate::config::{TrackerConfig, TransitionRule};
use crate::engine::{
    Field, ModelConfig, RecordState, RuleLabel, RuleMode, TransitionFinding, TransitionKind,
};

/// Code of a stage or status that is absent or outside the model.
pub(crate) const UNKNOWN: u16 = u16::MAX;
/// Stage code of `model.failed_stage`, which is not a position in the flow.
pub(crate) const FAILED: u16 = u16::MAX - 1;

/// What the tracker keeps of a task: codes into the model instead of strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    /// Position in `model.stages`, [`FAILED`], or [`UNKNOWN`].
    pub stage: u16,
    /// Index into `model.statuses`, or [`UNKNOWN`].
    pub status: u16,
    /// NaN when no progress was ever sent (JSON cannot carry NaN, so it is free as a marker).
    pub progress: f64,
}

impl Snapshot {
    pub const EMPTY: Snapshot = Snapshot {
        stage: UNKNOWN,
        status: UNKNOWN,
        progress: f64::NAN,
    };

    /// The memory after `sent`: its known fields replace ours, its unknown ones keep ours,
    /// so one record with a missing field does not wipe what the client last saw.
    pub fn merge(self, sent: Snapshot) -> Snapshot {
        Snapshot {
            stage: if sent.stage == UNKNOWN {
                self.stage
            } else {
                sent.stage
            },
            status: if sent.status == UNKNOWN {
                self.status
            } else {
                sent.status
            },
            progress: if sent.progress.is_nan() {
                self.progress
            } else {
                sent.progress
            },
        }
    }
}

/// The model and the transition rules, compiled once.
#[derive(Debug)]
pub(crate) struct Transitions {
    stages: Box<[Box<str>]>,
    failed_stage: Box<str>,
    statuses: Box<[Box<str>]>,
    /// Indexed like `statuses`.
    terminal: Box<[bool]>,
    /// The status named like `failed_stage`, or [`UNKNOWN`].
    failed_status: u16,
    /// Indexed like `TransitionKind::ALL`; the name is shared by every finding.
    rules: [(TransitionRule, Arc<str>); 4],
}

impl Transitions {
    pub fn new(config: &TrackerConfig, model: &ModelConfig) -> Transitions {
        let boxed = |items: &[String]| items.iter().map(|s| s.as_str().into()).collect();
        let statuses: Box<[Box<str>]> = boxed(&model.statuses);
        let terminal = statuses
            .iter()
            .map(|s| model.terminal_statuses.iter().any(|t| **t == **s))
            .collect();
        let failed_status = code(statuses.iter().position(|s| **s == *model.failed_stage));
        Transitions {
            stages: boxed(&model.stages),
            failed_stage: model.failed_stage.as_str().into(),
            statuses,
            terminal,
            failed_status,
            rules: TransitionKind::ALL.map(|kind| (config.rule(kind), Arc::from(kind.as_str()))),
        }
    }

    /// Encodes the task fields of a record; values outside the model become [`UNKNOWN`].
    pub fn snapshot(&self, state: &RecordState) -> Snapshot {
        // Models are a handful of names: a linear scan beats hashing the string.
        let stage = match state.stage.as_deref() {
            None => UNKNOWN,
            Some(name) => match self.stages.iter().position(|s| **s == *name) {
                Some(pos) => code(Some(pos)),
                None if name == &*self.failed_stage => FAILED,
                None => UNKNOWN,
            },
        };
        let status = match state.status.as_deref() {
            None => UNKNOWN,
            Some(name) => code(self.statuses.iter().position(|s| **s == *name)),
        };
        Snapshot {
            stage,
            status,
            progress: state.progress.unwrap_or(f64::NAN),
        }
    }

    /// The fields a snapshot holds, named as the model names them.
    pub fn state_of(&self, memory: &Snapshot) -> RecordState {
        RecordState {
            status: (memory.status != UNKNOWN).then(|| self.status_name(memory.status).to_owned()),
            stage: (memory.stage != UNKNOWN).then(|| self.stage_name(memory.stage).to_owned()),
            progress: (!memory.progress.is_nan()).then_some(memory.progress),
            is_completed: None,
        }
    }

    /// Judges `now` (the record as it would be sent) against `last` (what was sent before).
    pub fn judge(&self, last: &Snapshot, now: &Snapshot) -> Vec<TransitionFinding> {
        let mut findings = Vec::new();

        if let (Some(before), Some(after)) = (self.rank(last.stage), self.rank(now.stage)) {
            if after < before {
                let message = format!(
                    "stage {} → {}: earlier in the flow than the last one sent",
                    self.stage_name(last.stage),
                    self.stage_name(now.stage)
                );
                let hold = Value::String(self.stage_name(last.stage).to_owned());
                self.push(
                    &mut findings,
                    TransitionKind::StageRegression,
                    message,
                    (Field::Stage, hold),
                );
            }
        }

        if self.is_terminal(last.status) && now.status != UNKNOWN && now.status != last.status {
            let kind = if self.is_terminal(now.status) {
                TransitionKind::TerminalChanged
            } else {
                TransitionKind::TerminalReopened
            };
            let message = format!(
                "status {} → {} after the task was sent as {}",
                self.status_name(last.status),
                self.status_name(now.status),
                self.status_name(last.status)
            );
            // Neither terminal rule has a fix: which of the two contradicting reports is true
            // is unknowable here, so they are only reported.
            self.report(&mut findings, kind, message);
        }

        // NaN on either side (never sent, or absent now) compares false: no finding.
        if now.progress < last.progress && !self.is_failing(now) {
            let message = format!(
                "progress {} → {}: lower than the last one sent",
                last.progress, now.progress
            );
            let hold = (Field::Progress, number(last.progress));
            self.push(
                &mut findings,
                TransitionKind::ProgressRegression,
                message,
                hold,
            );
        }

        findings
    }

    /// The position in the flow given to `model.failed_stage` (see [`rank`](Self::rank)).
    pub fn failed_rank(&self) -> usize {
        self.stages.len().saturating_sub(1)
    }

    /// Whether `kind` is enabled and set to fix: the engine then applies its fix in fix mode
    /// unless a single-record rule objects.
    pub fn fixes(&self, kind: TransitionKind) -> bool {
        let (rule, _) = self.rule(kind);
        // A rule in shadow proposes its fix, but the engine never applies it.
        rule.enabled && rule.fix && rule.mode == RuleMode::Fix
    }

    /// Position in the flow. The success stage and the failed stage both end the flow, so
    /// leaving the failed stage for a working stage is a regression, while completed ↔ failed
    /// is left to `terminal_changed`.
    fn rank(&self, stage: u16) -> Option<usize> {
        match stage {
            UNKNOWN => None,
            FAILED => Some(self.failed_rank()),
            pos => Some(usize::from(pos)),
        }
    }

    /// The working stages, in flow order.
    pub fn stages(&self) -> &[Box<str>] {
        &self.stages
    }

    /// A stage as a metric label: its name, or `unknown` when absent or outside the model.
    pub fn stage_label(&self, stage: u16) -> String {
        match stage {
            UNKNOWN => "unknown".to_owned(),
            stage => self.stage_name(stage).to_owned(),
        }
    }

    fn stage_name(&self, stage: u16) -> &str {
        match stage {
            FAILED => &self.failed_stage,
            pos => self.stages.get(usize::from(pos)).map_or("?", |s| s),
        }
    }

    fn status_name(&self, status: u16) -> &str {
        self.statuses.get(usize::from(status)).map_or("?", |s| s)
    }

    fn is_terminal(&self, status: u16) -> bool {
        self.terminal
            .get(usize::from(status))
            .copied()
            .unwrap_or(false)
    }

    /// A failing task legitimately drops its progress (to 0): its status or its stage is
    /// named `model.failed_stage`.
    pub fn is_failing(&self, now: &Snapshot) -> bool {
        now.stage == FAILED || (now.status != UNKNOWN && now.status == self.failed_status)
    }

    fn rule(&self, kind: TransitionKind) -> &(TransitionRule, Arc<str>) {
        &self.rules[kind as usize]
    }

    fn report(&self, findings: &mut Vec<TransitionFinding>, kind: TransitionKind, message: String) {
        let (rule, name) = self.rule(kind);
        if rule.enabled {
            findings.push(TransitionFinding {
                rule: Arc::clone(name),
                level: rule.level,
                message,
                fix: None,
                shadow: rule.mode == RuleMode::Shadow,
            });
        }
    }

    fn push(
        &self,
        findings: &mut Vec<TransitionFinding>,
        kind: TransitionKind,
        message: String,
        fix: (Field, Value),
    ) {
        let (rule, name) = self.rule(kind);
        if rule.enabled {
            findings.push(TransitionFinding {
                rule: Arc::clone(name),
                level: rule.level,
                message,
                fix: rule.fix.then_some(fix),
                shadow: rule.mode == RuleMode::Shadow,
            });
        }
    }
}

/// A model position as a code; models past 65,533 names treat the rest as unknown.
fn code(pos: Option<usize>) -> u16 {
    pos.and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p < FAILED)
        .unwrap_or(UNKNOWN)
}

/// A progress value as JSON: whole numbers as integers (`40`, not `40.0`), as backends send them.
fn number(progress: f64) -> Value {
    // Below 2^53 every whole f64 is an exact integer.
    if progress.fract() == 0.0 && progress.abs() < 9.0e15 {
        Value::from(progress as i64)
    } else {
        Value::from(progress)
    }
}

/// The enabled transition rules of `config` as metric labels.
pub fn rule_labels(config: &TrackerConfig) -> Vec<RuleLabel<'static>> {
    TransitionKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let rule = config.rule(kind);
            rule.enabled.then_some(RuleLabel {
                name: kind.as_str(),
                level: rule.level,
                fixes: rule.fix,
            })
        })
        .collect()
}
