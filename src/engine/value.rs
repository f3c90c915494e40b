//! Field values as the rules see them: decoded text, numbers by value, raw JSON kept for patches.

use std::borrow::Cow;

use super::verdict::RecordState;
use super::vocab::Field;

/// Slot index of a logical field: its place in [`Field::ALL`].
pub(crate) fn slot_of(field: Field) -> usize {
    match field {
        Field::Status => 0,
        Field::Stage => 1,
        Field::Progress => 2,
        Field::IsCompleted => 3,
    }
}

/// A JSON value reduced to what conditions compare.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Null,
    /// An array or object, kept as JSON text; compared structurally (rare).
    Composite(Cow<'a, str>),
}

impl Val<'_> {
    /// Value equality: strings by decoded text, numbers by value (`1.0e2` equals `100`).
    pub(crate) fn same(&self, other: &Val<'_>) -> bool {
        match (self, other) {
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::Num(a), Val::Num(b)) => a == b,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Null, Val::Null) => true,
            (Val::Composite(a), Val::Composite(b)) => {
                a == b
                    || matches!(
                        (
                            serde_json::from_str::<serde_json::Value>(a),
                            serde_json::from_str::<serde_json::Value>(b),
                        ),
                        (Ok(x), Ok(y)) if x == y
                    )
            }
            _ => false,
        }
    }

    pub(crate) fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s)),
            Val::Num(n) => Val::Num(*n),
            Val::Bool(b) => Val::Bool(*b),
            Val::Null => Val::Null,
            Val::Composite(s) => Val::Composite(Cow::Borrowed(s)),
        }
    }
}

/// A present field: its raw JSON text (what a patch writes or leaves) and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot<'a> {
    pub raw: Cow<'a, str>,
    pub val: Val<'a>,
}

impl<'a> Slot<'a> {
    /// A slot owning a configured value, rendered as compact JSON.
    pub(crate) fn from_json(value: &serde_json::Value) -> Slot<'static> {
        let raw = value.to_string();
        let val = match value {
            serde_json::Value::String(s) => Val::Str(Cow::Owned(s.clone())),
            serde_json::Value::Number(n) => n
                .as_f64()
                .map(Val::Num)
                .unwrap_or_else(|| Val::Composite(Cow::Owned(raw.clone()))),
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Null => Val::Null,
            _ => Val::Composite(Cow::Owned(raw.clone())),
        };
        Slot {
            raw: Cow::Owned(raw),
            val,
        }
    }

    pub(crate) fn borrowed(&self) -> Slot<'_> {
        Slot {
            raw: Cow::Borrowed(&self.raw),
            val: self.val.borrowed(),
        }
    }

    /// The text a message shows: a string's decoded text, any other value's JSON.
    pub(crate) fn display(&self) -> &str {
        match &self.val {
            Val::Str(s) => s,
            _ => &self.raw,
        }
    }
}

/// One record's task fields, indexed by [`slot_of`].
pub(crate) type State<'a> = [Option<Slot<'a>>; 4];

/// The typed view of a state that the verdict and the transition judge see.
pub(crate) fn record_state(state: &State<'_>) -> RecordState {
    let text = |i: usize| match state[i].as_ref().map(|s| &s.val) {
        Some(Val::Str(s)) => Some(s.to_string()),
        _ => None,
    };
    RecordState {
        status: text(0),
        stage: text(1),
        progress: match state[2].as_ref().map(|s| &s.val) {
            Some(Val::Num(n)) => Some(*n),
            _ => None,
        },
        is_completed: match state[3].as_ref().map(|s| &s.val) {
            Some(Val::Bool(b)) => Some(*b),
            _ => None,
        },
    }
}
