//! `RouteSpec`: where a route's records are, what its fields are called, and its mode.

use super::schema::{ConfigError, FieldsConfig};
use super::vocab::{Field, Mode};

/// One step of a record pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// An object member by name, or an array element when the name is an index (`/items/0`).
    Member {
        name: Box<str>,
        index: Option<usize>,
    },
    /// `*`: every element of an array (or every member value of an object).
    Each,
}

/// A record key the engine looks for, with its first eight bytes packed for a quick compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyName {
    text: Box<str>,
    head: u64,
}

// === impl KeyName ===

impl KeyName {
    fn new(text: &str) -> KeyName {
        KeyName {
            text: text.into(),
            head: head(text.as_bytes()),
        }
    }

    /// Whether `key` (with `head(key)` precomputed) is this name.
    #[inline]
    pub(crate) fn matches(&self, key: &[u8], key_head: u64) -> bool {
        let name = self.text.as_bytes();
        name.len() == key.len()
            && self.head == key_head
            && (name.len() <= 8 || name[8..] == key[8..])
    }
}

/// The first (up to) eight bytes of a key, little-endian, zero-padded.
#[inline]
pub(crate) fn head(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = key.len().min(8);
    buf[..n].copy_from_slice(&key[..n]);
    u64::from_le_bytes(buf)
}

/// A route compiled for the engine: record selector, field keys, mode.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    mode: Mode,
    track: bool,
    /// Empty: the whole body is the record.
    pub(crate) selector: Vec<Segment>,
    /// Record keys of status, stage, progress, is_completed (slot order).
    pub(crate) keys: [KeyName; 4],
    /// Task id keys, the first present one wins.
    pub(crate) task_ids: Vec<KeyName>,
    /// Longer task ids are not remembered (`tracker.max_task_id_bytes`), and are cut in the
    /// verdict.
    pub(crate) max_task_id_bytes: usize,
}

// === impl RouteSpec ===

impl RouteSpec {
    /// Compiles where a route's records are (`records`: `""`, `/data`, `/history/*`) and what
    /// their fields are called. Error keys are relative to the route: `records`, `fields.stage`,
    /// `fields.task_id[1]`.
    pub fn compile(
        records: &str,
        fields: &FieldsConfig,
        mode: Mode,
        track: bool,
        max_task_id_bytes: usize,
    ) -> Result<RouteSpec, ConfigError> {
        let selector =
            parse_pointer(records).map_err(|problem| ConfigError::new("records", problem))?;
        let named = Field::ALL.map(|field| (field, fields.key(field)));
        for (i, (field, key)) in named.iter().enumerate() {
            if key.is_empty() {
                return Err(ConfigError::new(
                    format!("fields.{field}"),
                    "must not be empty",
                ));
            }
            // Two logical fields on one key would patch the same bytes twice.
            if let Some((other, _)) = named[..i].iter().find(|(_, k)| k == key) {
                return Err(ConfigError::new(
                    format!("fields.{field}"),
                    format!("{key:?} is already the key of {other}"),
                ));
            }
        }
        for (i, id) in fields.task_id.iter().enumerate() {
            if id.is_empty() {
                return Err(ConfigError::new(
                    format!("fields.task_id[{i}]"),
                    "must not be empty",
                ));
            }
        }
        Ok(RouteSpec {
            mode,
            track,
            selector,
            keys: named.map(|(_, key)| KeyName::new(key)),
            task_ids: fields.task_id.iter().map(|k| KeyName::new(k)).collect(),
            max_task_id_bytes,
        })
    }

    /// `fix` patches bodies; `observe` only judges them.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the route remembers tasks across polls (then callers pass a real judge).
    pub fn track(&self) -> bool {
        self.track
    }
}

/// Parses `""`, `/data` or `/history/*` (RFC 6901, with `*` as "every element").
fn parse_pointer(text: &str) -> Result<Vec<Segment>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = text.strip_prefix('/') else {
        return Err("must be \"\" (whole body) or a JSON pointer starting with '/'".into());
    };
    rest.split('/')
        .map(|raw| {
            if raw == "*" {
                return Ok(Segment::Each);
            }
            let mut name = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => name.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => name.push('~'),
                        Some('1') => name.push('/'),
                        _ => return Err(format!("{raw:?}: '~' must be followed by 0 or 1")),
                    },
                }
            }
            let index = (name == "0" || (!name.starts_with('0') && !name.is_empty()))
                .then(|| name.parse::<usize>().ok())
                .flatten();
            Ok(Segment::Member {
                name: name.into(),
                index,
            })
        })
        .collect()
}
