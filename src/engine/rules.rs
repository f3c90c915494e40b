//! `RuleSet`: the declarative rules compiled once, and their evaluation on one record's fields.

use std::sync::Arc;

use super::schema::{Condition, ConfigError, ModelConfig, RuleConfig, When};
use super::value::{slot_of, Slot, State, Val};
use super::vocab::{Field, Level, RuleMode};

/// The enabled rules in config order, with the enumerations `known` checks against.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    /// How many of `rules` are in shadow.
    shadow: usize,
    statuses: Vec<Box<str>>,
    /// Working stages plus the failed stage.
    stages: Vec<Box<str>>,
}

/// What metrics need to know of a rule to create its series up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLabel<'a> {
    pub name: &'a str,
    pub level: Level,
    pub fixes: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: Arc<str>,
    pub level: Level,
    /// Any of these conjunctions.
    when: Vec<Vec<Check>>,
    /// Values written in fix mode; empty: report only.
    pub fix: Vec<(usize, Slot<'static>)>,
    /// In shadow, `fix` is only counted, and the rule's issues leave the record's level alone.
    pub mode: RuleMode,
    message: Vec<Part>,
}

/// The compiled form of one `config::Condition` on one field.
#[derive(Debug, Clone)]
struct Check {
    slot: usize,
    /// `present = false`: the only check that holds on an absent field.
    absent: bool,
    is: Option<Val<'static>>,
    is_not: Option<Val<'static>>,
    one_of: Option<Vec<Val<'static>>>,
    not_one_of: Option<Vec<Val<'static>>>,
    known: Option<bool>,
    number_in: Option<(f64, f64)>,
    not_number_in: Option<(f64, f64)>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(Box<str>),
    Field(usize),
}

// === impl RuleSet ===

impl RuleSet {
    /// Compiles the enabled rules; errors name the key, e.g. `rules[3].when.progress.is`.
    pub fn compile(model: &ModelConfig, rules: &[RuleConfig]) -> Result<RuleSet, ConfigError> {
        let mut stages: Vec<Box<str>> = model.stages.iter().map(|s| s.as_str().into()).collect();
        stages.push(model.failed_stage.as_str().into());
        let compiled = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.enabled != Some(false))
            .map(|(i, r)| Rule::compile(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleSet {
            shadow: compiled
                .iter()
                .filter(|r| r.mode == RuleMode::Shadow)
                .count(),
            rules: compiled,
            statuses: model.statuses.iter().map(|s| s.as_str().into()).collect(),
            stages,
        })
    }

    /// The enabled rules as metric labels: name, level, and whether the rule fixes.
    pub fn labels(&self) -> impl Iterator<Item = RuleLabel<'_>> {
        self.rules.iter().map(|r| RuleLabel {
            name: &r.name,
            level: r.level,
            fixes: !r.fix.is_empty(),
        })
    }

    /// How many rules are enabled: bounds the fixpoint's rounds.
    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }

    /// How many enabled rules are in shadow.
    pub(crate) fn shadow_len(&self) -> usize {
        self.shadow
    }

    /// Whether `value` is in the enumeration of the field in `slot` (status or stage).
    fn known(&self, slot: usize, value: &Val<'_>) -> bool {
        let list = if slot == 0 {
            &self.statuses
        } else {
            &self.stages
        };
        matches!(value, Val::Str(s) if list.iter().any(|k| **k == **s))
    }

    pub(crate) fn fires(&self, rule: &Rule, state: &State<'_>) -> bool {
        rule.when.iter().any(|all| {
            all.iter()
                .all(|check| self.holds(check, state[check.slot].as_ref()))
        })
    }

    /// Indexes of the rules in fix mode that fire on `state`: the ones that may veto a
    /// transition fix (a rule in shadow changes nothing, so it vetoes nothing either).
    pub(crate) fn firing(&self, state: &State<'_>) -> Vec<usize> {
        (0..self.rules.len())
            .filter(|&i| self.rules[i].mode == RuleMode::Fix && self.fires(&self.rules[i], state))
            .collect()
    }

    fn holds(&self, check: &Check, slot: Option<&Slot<'_>>) -> bool {
        let Some(slot) = slot else {
            return check.absent;
        };
        if check.absent {
            return false;
        }
        let v = &slot.val;
        let number_in = |(lo, hi): (f64, f64)| matches!(v, Val::Num(n) if lo <= *n && *n <= hi);
        check.is.as_ref().is_none_or(|e| v.same(e))
            && check.is_not.as_ref().is_none_or(|e| !v.same(e))
            && check
                .one_of
                .as_ref()
                .is_none_or(|l| l.iter().any(|e| v.same(e)))
            && check
                .not_one_of
                .as_ref()
                .is_none_or(|l| !l.iter().any(|e| v.same(e)))
            && check.known.is_none_or(|k| self.known(check.slot, v) == k)
            && check.number_in.is_none_or(number_in)
            && check.not_number_in.is_none_or(|r| !number_in(r))
    }
}

// === impl Rule ===

/// A rule of a new name has no defaults to inherit these from.
const MISSING: &str = "missing: a new rule needs `level` and `when` (or `enabled = false`)";

impl Rule {
    fn compile(i: usize, config: &RuleConfig) -> Result<Rule, ConfigError> {
        let key = |k: &str| format!("rules[{i}].{k}");
        let level = config
            .level
            .ok_or_else(|| ConfigError::new(key("level"), MISSING))?;
        let when = match &config.when {
            None => return Err(ConfigError::new(key("when"), MISSING)),
            Some(When::All(all)) => vec![compile_conjunction(&key("when"), all)?],
            Some(When::Any(any)) if any.is_empty() => {
                return Err(ConfigError::new(key("when"), "an empty list never matches"))
            }
            Some(When::Any(any)) => any
                .iter()
                .enumerate()
                .map(|(j, all)| compile_conjunction(&key(&format!("when[{j}]")), all))
                .collect::<Result<_, _>>()?,
        };
        let mut fix = Vec::new();
        for (field, value) in config.fix.iter().flatten() {
            let slot = slot_of(*field);
            // Absent fields are never inserted, so such a fix could never apply.
            if when
                .iter()
                .all(|all| all.iter().any(|c| c.slot == slot && c.absent))
            {
                return Err(ConfigError::new(
                    key(&format!("fix.{field}")),
                    format!("the rule fires only when {field} is absent, and absent fields are not inserted"),
                ));
            }
            type_fits(*field, value)
                .map_err(|p| ConfigError::new(key(&format!("fix.{field}")), p))?;
            fix.push((slot, Slot::from_json(value)));
        }
        let message = match &config.message {
            Some(text) => parse_template(text),
            None => parse_template(&format!(
                "{}: status={{status}} stage={{stage}} progress={{progress}} is_completed={{is_completed}}",
                config.name
            )),
        };
        Ok(Rule {
            name: config.name.as_str().into(),
            level,
            when,
            fix,
            mode: config.mode.unwrap_or_default(),
            message,
        })
    }

    /// The message with `{status}`, `{stage}`, `{progress}`, `{is_completed}` filled in.
    pub(crate) fn message(&self, state: &State<'_>) -> String {
        let mut out = String::new();
        for part in &self.message {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(i) => {
                    out.push_str(state[*i].as_ref().map_or("<absent>", Slot::display))
                }
            }
        }
        out
    }
}

fn compile_conjunction(
    prefix: &str,
    all: &std::collections::BTreeMap<Field, Condition>,
) -> Result<Vec<Check>, ConfigError> {
    if all.is_empty() {
        return Err(ConfigError::new(prefix, "needs at least one condition"));
    }
    all.iter()
        .map(|(field, cond)| compile_condition(&format!("{prefix}.{field}"), *field, cond))
        .collect()
}

fn compile_condition(key: &str, field: Field, c: &Condition) -> Result<Check, ConfigError> {
    let err = |k: &str, problem: &str| Err(ConfigError::new(format!("{key}.{k}"), problem));
    let vals = |list: &Option<Vec<serde_json::Value>>| {
        list.as_ref()
            .map(|l| l.iter().map(|v| Slot::from_json(v).val).collect::<Vec<_>>())
    };
    let others = c.is.is_some()
        || c.is_not.is_some()
        || c.one_of.is_some()
        || c.not_one_of.is_some()
        || c.known.is_some()
        || c.number_in.is_some()
        || c.not_number_in.is_some();
    match c.present {
        None if !others => {
            return Err(ConfigError::new(
                key,
                "empty condition (say `present = true`)",
            ))
        }
        Some(false) if others => {
            return err(
                "present",
                "`present = false` cannot be combined with other conditions",
            )
        }
        _ => {}
    }
    if c.known.is_some() && !matches!(field, Field::Status | Field::Stage) {
        return err("known", "only status and stage have an enumeration");
    }
    for (k, range) in [
        ("number_in", c.number_in),
        ("not_number_in", c.not_number_in),
    ] {
        if let Some([lo, hi]) = range {
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return err(k, "must be [low, high] with low <= high");
            }
        }
    }
    let typed = |k: &str, v: &serde_json::Value| {
        type_fits(field, v).map_err(|problem| ConfigError::new(format!("{key}.{k}"), problem))
    };
    for (k, v) in [("is", &c.is), ("is_not", &c.is_not)] {
        if let Some(v) = v {
            typed(k, v)?;
        }
    }
    for (k, list) in [("one_of", &c.one_of), ("not_one_of", &c.not_one_of)] {
        for (j, v) in list.iter().flatten().enumerate() {
            typed(&format!("{k}[{j}]"), v)?;
        }
    }
    let range = |r: Option<[f64; 2]>| r.map(|[lo, hi]| (lo, hi));
    Ok(Check {
        slot: slot_of(field),
        absent: c.present == Some(false),
        is: c.is.as_ref().map(|v| Slot::from_json(v).val),
        is_not: c.is_not.as_ref().map(|v| Slot::from_json(v).val),
        one_of: vals(&c.one_of),
        not_one_of: vals(&c.not_one_of),
        known: c.known,
        number_in: range(c.number_in),
        not_number_in: range(c.not_number_in),
    })
}

/// A value compared with or written to `field` must have the field's type (or be null): a
/// string for status and stage, a number for progress, a boolean for is_completed.
fn type_fits(field: Field, value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value as V;
    let fits = matches!(
        (field, value),
        (_, V::Null)
            | (Field::Status | Field::Stage, V::String(_))
            | (Field::Progress, V::Number(_))
            | (Field::IsCompleted, V::Bool(_))
    );
    if fits {
        return Ok(());
    }
    let want = match field {
        Field::Status | Field::Stage => "a string",
        Field::Progress => "a number",
        Field::IsCompleted => "a boolean",
    };
    Err(format!("{field} takes {want} (or null), not {value}"))
}

/// Splits a message template into text and field placeholders; unknown `{…}` stays literal.
fn parse_template(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open..];
        let hit = Field::ALL.iter().enumerate().find(|(_, f)| {
            after[1..].starts_with(f.as_str()) && after[1 + f.as_str().len()..].starts_with('}')
        });
        match hit {
            Some((i, f)) => {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal).into()));
                }
                parts.push(Part::Field(i));
                rest = &after[f.as_str().len() + 2..];
            }
            None => {
                literal.push('{');
                rest = &after[1..];
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Text(literal.into()));
    }
    parts
}
