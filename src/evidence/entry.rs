//! One evidence entry: an inconsistent record as received and as sent, its issues and fixes,
//! and what the task memory held before when a transition rule fired.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{Field, Level, RecordState, RecordVerdict};
use crate::redact::Redactor;

/// One inconsistent record. Values of redacted keys are already hashed.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    /// Unix milliseconds, for ordering.
    pub time_ms: u64,
    pub route: Arc<str>,
    pub method: String,
    /// Path and query of the request.
    pub path: String,
    pub task_id: Option<String>,
    /// The fields the rules read, as the backend sent them.
    pub received: Map<String, Value>,
    /// The same fields as the client got them.
    pub sent: Map<String, Value>,
    /// The whole body as received (`evidence.whole_bodies`), cut to `evidence.max_body_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
    pub issues: Vec<EntryIssue>,
    pub fixes: Vec<EntryFix>,
    /// What the task memory held before this record, when a transition rule fired on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<Map<String, Value>>,
    pub instance: Arc<str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryIssue {
    pub rule: Arc<str>,
    pub level: Level,
    pub message: String,
    pub shadow: bool,
}

/// A fix applied, or with `shadow` one a rule in shadow would have made (never sent).
#[derive(Debug, Clone, Serialize)]
pub struct EntryFix {
    pub rule: Arc<str>,
    pub field: Field,
    pub before: Value,
    pub after: Value,
    pub shadow: bool,
}

/// What an entry says besides the record: where and when it was seen, and how to redact it.
#[derive(Debug)]
pub struct Seen<'a> {
    pub route: &'a Arc<str>,
    pub method: &'a str,
    pub path: &'a str,
    pub instance: &'a Arc<str>,
    pub redactor: &'a Redactor,
    /// The task fields redacted on this route.
    pub redacted: &'a [Field],
    /// The whole body, already redacted and cut, when whole bodies are kept.
    pub body: Option<(&'a str, bool)>,
}

// === impl Entry ===

impl Entry {
    /// The entry for `record`, seen now; `prior` is what the task memory held before it.
    pub fn new(seen: &Seen<'_>, record: &RecordVerdict, prior: Option<&RecordState>) -> Entry {
        let now = SystemTime::now();
        let time_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let hide = |field: Field, value: Value| {
            if seen.redacted.contains(&field) {
                seen.redactor.hash_value(&value)
            } else {
                value
            }
        };
        let fields = |state: &RecordState| -> Map<String, Value> {
            state_values(state)
                .into_iter()
                .map(|(field, value)| (field_key(field).to_owned(), hide(field, value)))
                .collect()
        };
        let mut received = state_values(&record.sent);
        // The first fix of a field holds what the backend sent for it.
        let mut restored: Vec<Field> = Vec::new();
        for fix in &record.fixes {
            if restored.contains(&fix.field) {
                continue;
            }
            restored.push(fix.field);
            let before = serde_json::from_str(&fix.before).unwrap_or(Value::Null);
            match received.iter_mut().find(|(field, _)| *field == fix.field) {
                Some(slot) => slot.1 = before,
                None => received.push((fix.field, before)),
            }
        }
        let fix_value =
            |field: Field, raw: &str| hide(field, serde_json::from_str(raw).unwrap_or(Value::Null));
        let fixes = record
            .fixes
            .iter()
            .map(|f| (f, false))
            .chain(record.shadow_fixes.iter().map(|f| (f, true)))
            .map(|(fix, shadow)| EntryFix {
                rule: fix.rule.clone(),
                field: fix.field,
                before: fix_value(fix.field, &fix.before),
                after: fix_value(fix.field, &fix.after),
                shadow,
            })
            .collect();
        let scrubbed = seen.redactor.verdict(seen.redacted, record);
        Entry {
            time: humantime::format_rfc3339_millis(now).to_string(),
            time_ms,
            route: seen.route.clone(),
            method: seen.method.to_owned(),
            path: seen.path.to_owned(),
            task_id: record.task_id.clone(),
            received: received
                .into_iter()
                .map(|(field, value)| (field_key(field).to_owned(), hide(field, value)))
                .collect(),
            sent: fields(&record.sent),
            body: seen.body.map(|(body, _)| body.to_owned()),
            body_truncated: seen.body.is_some_and(|(_, cut)| cut),
            issues: scrubbed
                .issues
                .iter()
                .map(|issue| EntryIssue {
                    rule: issue.rule.clone(),
                    level: issue.level,
                    message: issue.message.clone(),
                    shadow: issue.shadow,
                })
                .collect(),
            fixes,
            prior: prior.map(fields),
            instance: seen.instance.clone(),
        }
    }

    /// About what the entry costs in memory: its strings and values, and its own size.
    pub fn size(&self) -> usize {
        let map = |m: &Map<String, Value>| -> usize {
            m.iter().map(|(k, v)| k.len() + value_size(v) + 48).sum()
        };
        std::mem::size_of::<Entry>()
            + self.time.len()
            + self.method.len()
            + self.path.len()
            + self.task_id.as_ref().map_or(0, String::len)
            + map(&self.received)
            + map(&self.sent)
            + self.prior.as_ref().map_or(0, map)
            + self.body.as_ref().map_or(0, String::len)
            + self
                .issues
                .iter()
                .map(|i| std::mem::size_of::<EntryIssue>() + i.message.len())
                .sum::<usize>()
            + self
                .fixes
                .iter()
                .map(|f| {
                    std::mem::size_of::<EntryFix>() + value_size(&f.before) + value_size(&f.after)
                })
                .sum::<usize>()
    }

    /// The rules an entry is kept under: every rule with an issue on the record.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<str>> {
        self.issues.iter().map(|issue| &issue.rule)
    }
}

/// The known task fields of a state, in field order.
fn state_values(state: &RecordState) -> Vec<(Field, Value)> {
    let mut values = Vec::with_capacity(4);
    if let Some(status) = &state.status {
        values.push((Field::Status, Value::from(status.as_str())));
    }
    if let Some(stage) = &state.stage {
        values.push((Field::Stage, Value::from(stage.as_str())));
    }
    if let Some(progress) = state.progress {
        values.push((Field::Progress, number(progress)));
    }
    if let Some(done) = state.is_completed {
        values.push((Field::IsCompleted, Value::from(done)));
    }
    values
}

/// A progress as the backend most likely wrote it: whole numbers without a fraction.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

fn field_key(field: Field) -> &'static str {
    match field {
        Field::Status => "status",
        Field::Stage => "stage",
        Field::Progress => "progress",
        Field::IsCompleted => "is_completed",
    }
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::String(s) => 24 + s.len(),
        Value::Array(items) => 24 + items.iter().map(value_size).sum::<usize>(),
        Value::Object(map) => {
            24 + map
                .iter()
                .map(|(k, v)| 48 + k.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 8,
    }
}
