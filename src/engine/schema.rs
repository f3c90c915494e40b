//! The engine's input as the configuration file spells it: the task model, where the task
//! fields live, the declarative rules, and [`ConfigError`], which every compiler raises.
//!
//! `config` composes these into the file's schema; the engine compiles them into a
//! [`RuleSet`](super::RuleSet) and [`RouteSpec`](super::RouteSpec)s.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::vocab::{Field, Level, RuleMode};

/// A configuration problem: which key, and what is wrong with it. Shown as one log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

/// The task model: which values exist and in what order stages flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub statuses: Vec<String>,
    /// Working stages in flow order, ending with the success stage.
    pub stages: Vec<String>,
    /// The stage any working stage may fall to.
    pub failed_stage: String,
    /// Statuses after which a task never changes again.
    pub terminal_statuses: Vec<String>,
}

/// Where the task fields live in a record (top-level keys of the record object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsConfig {
    pub status: String,
    pub stage: String,
    pub progress: String,
    pub is_completed: String,
    /// Tried in order; the first present names the task.
    pub task_id: Vec<String>,
}

/// A declarative rule. Overriding a rule of the same name, unset keys keep its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Stable name: metrics and alerts use it. `[a-z0-9_]+`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// Values written when the rule fires in fix mode; empty: report only.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "fix_table"
    )]
    pub fix: Option<BTreeMap<Field, serde_json::Value>>,
    /// Message template; `{status}`, `{stage}`, `{progress}`, `{is_completed}` are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `shadow`: evaluated and counted, its fix never applied (unset: `fix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RuleMode>,
}

/// All conditions of one table must hold.
pub type Conjunction = BTreeMap<Field, Condition>;

/// `when = { ... }` (all of) or `when = [{ ... }, { ... }]` (any of the tables).
///
/// Read by hand rather than as an untagged enum, so that a mistake inside names its key
/// instead of "data did not match any variant".
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum When {
    All(Conjunction),
    Any(Vec<Conjunction>),
}

/// A condition on one field. Every condition but `present = false` requires the field present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Condition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Equal to this value (numbers by value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is: Option<serde_json::Value>,
    /// Present and not equal to this value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_not: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_one_of: Option<Vec<serde_json::Value>>,
    /// Whether the value is within the field's enumeration (`model.statuses` / stages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<bool>,
    /// Present and a number within `[lo, hi]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_in: Option<[f64; 2]>,
    /// Present and not a number within `[lo, hi]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_number_in: Option<[f64; 2]>,
}

/// What a `when` table takes (the fields of [`Field`], the conditions of [`Condition`]).
const WHEN_TAKES: &str = "a `when` table takes the fields status, stage, progress, is_completed, \
    each with the conditions present, is, is_not, one_of, not_one_of, known, number_in, not_number_in";

/// What `fix` takes.
const FIX_TAKES: &str = "`fix` takes the fields status, stage, progress, is_completed, \
    each set to the value to write";

/// A table keyed by field name (a `when` table, or `fix`), read with the key path kept.
struct FieldTable<V> {
    /// What the table takes; ends the error on a misspelt field.
    takes: &'static str,
    value: PhantomData<V>,
}

/// Reads `when`: a table is all of, an array of tables any of.
struct WhenVisitor;

/// One key of a [`FieldTable`].
struct FieldName {
    takes: &'static str,
}

// === impl ConfigError ===

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

// === impl FieldsConfig ===

impl FieldsConfig {
    /// The record key of a logical field.
    pub fn key(&self, field: Field) -> &str {
        match field {
            Field::Status => &self.status,
            Field::Stage => &self.stage,
            Field::Progress => &self.progress,
            Field::IsCompleted => &self.is_completed,
        }
    }
}

// === impl RuleConfig ===

impl RuleConfig {
    /// Sets the keys `over` sets; the others keep their values.
    pub fn overlay(&mut self, over: &RuleConfig) {
        if over.enabled.is_some() {
            self.enabled = over.enabled;
        }
        if over.level.is_some() {
            self.level = over.level;
        }
        if over.when.is_some() {
            self.when = over.when.clone();
        }
        if over.fix.is_some() {
            self.fix = over.fix.clone();
        }
        if over.message.is_some() {
            self.message = over.message.clone();
        }
        if over.mode.is_some() {
            self.mode = over.mode;
        }
    }
}

fn fix_table<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<Field, serde_json::Value>>, D::Error> {
    FieldTable::new(FIX_TAKES).deserialize(d).map(Some)
}

// === impl When ===

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<When, D::Error> {
        d.deserialize_any(WhenVisitor)
    }
}

impl<'de> Visitor<'de> for WhenVisitor {
    type Value = When;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of field conditions (all hold) or an array of such tables (any holds)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<When, A::Error> {
        FieldTable::new(WHEN_TAKES).visit_map(map).map(When::All)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<When, A::Error> {
        let mut any = Vec::new();
        while let Some(all) = seq.next_element_seed(FieldTable::new(WHEN_TAKES))? {
            any.push(all);
        }
        Ok(When::Any(any))
    }
}

// === impl FieldTable ===

impl<V> FieldTable<V> {
    fn new(takes: &'static str) -> Self {
        FieldTable {
            takes,
            value: PhantomData,
        }
    }
}

impl<'de, V: Deserialize<'de>> DeserializeSeed<'de> for FieldTable<V> {
    type Value = BTreeMap<Field, V>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, V: Deserialize<'de>> Visitor<'de> for FieldTable<V> {
    type Value = BTreeMap<Field, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table: {}", self.takes)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut table = BTreeMap::new();
        while let Some(field) = map.next_key_seed(FieldName { takes: self.takes })? {
            table.insert(field, map.next_value()?);
        }
        Ok(table)
    }
}

// === impl FieldName ===

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name: status, stage, progress or is_completed")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
        Field::from_name(name)
            .ok_or_else(|| E::custom(format!("unknown field `{name}`; {}", self.takes)))
    }
}
