//! Redaction: configured keys and JSON pointers whose values never leave the process.
//!
//! A redacted value becomes `REDACTED-` and the first 12 hex digits of an HMAC-SHA256 of its
//! JSON text, so equal values stay correlatable across entries, captures and log lines while
//! the value itself is gone. The key is a per-process random key unless `redaction.key_file`
//! names one (then hashes also correlate across replicas and restarts). Evidence, captures,
//! the issue log and the report all redact through one [`Redactor`].

use std::borrow::Cow;
use std::io::Read;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::config::{ConfigError, RedactionConfig};
use crate::engine::{Field, FieldsConfig, RecordVerdict};

/// What every redacted value starts with.
pub const PREFIX: &str = "REDACTED-";

/// Hex digits of the hash kept: 48 bits tell apart far more values than one ring or file holds.
const HASH_DIGITS: usize = 12;

/// The compiled `[redaction]` table.
#[derive(Clone)]
pub struct Redactor {
    keys: Box<[Box<str>]>,
    /// Each pointer's unescaped segments; `*` matches any key or index.
    pointers: Box<[Box<[Box<str>]>]>,
    key: Arc<[u8]>,
}

// === impl Redactor ===

impl Redactor {
    /// Compiles the table; a key file that cannot be read is an error naming `redaction.key_file`.
    pub fn compile(config: &RedactionConfig) -> Result<Redactor, ConfigError> {
        let key: Arc<[u8]> = if config.key_file.as_os_str().is_empty() {
            process_key()
        } else {
            let key = std::fs::read(&config.key_file).map_err(|e| {
                ConfigError::new(
                    "redaction.key_file",
                    format!("cannot read {}: {e}", config.key_file.display()),
                )
            })?;
            if key.is_empty() {
                return Err(ConfigError::new("redaction.key_file", "the file is empty"));
            }
            key.into()
        };
        Ok(Redactor {
            keys: config.keys.iter().map(|k| k.as_str().into()).collect(),
            pointers: config
                .pointers
                .iter()
                .map(|p| p.split('/').skip(1).map(unescape).collect())
                .collect(),
            key,
        })
    }

    /// Nothing is redacted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.pointers.is_empty()
    }

    /// Whether values under object key `key` are redacted wherever they appear.
    pub fn redacts_key(&self, key: &str) -> bool {
        self.keys.iter().any(|k| **k == *key)
    }

    /// `REDACTED-` and the keyed hash of `text`.
    pub fn hash(&self, text: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC takes a key of any length; this is unreachable, and still yields no value.
            return format!("{PREFIX}{}", "0".repeat(HASH_DIGITS));
        };
        mac.update(text);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(PREFIX.len() + HASH_DIGITS);
        out.push_str(PREFIX);
        for byte in digest.iter().take(HASH_DIGITS / 2) {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// The hash a value gets: that of its JSON text, so `"a"` and `"a"` anywhere agree.
    pub fn hash_value(&self, value: &Value) -> Value {
        Value::String(self.hash(value.to_string().as_bytes()))
    }

    /// Redacts `value` in place: the listed keys at any depth, then the pointers from its root.
    pub fn redact(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        self.redact_keys(value);
        for pointer in self.pointers.iter() {
            self.redact_at(value, pointer);
        }
    }

    /// Redacts only the listed keys, at any depth (for values that are not a body's root).
    pub fn redact_keys(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if self.redacts_key(key) {
                        *value = self.hash_value(value);
                    } else {
                        self.redact_keys(value);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_keys(v)),
            _ => {}
        }
    }

    fn redact_at(&self, value: &mut Value, pointer: &[Box<str>]) {
        let Some((first, rest)) = pointer.split_first() else {
            if !is_redacted(value) {
                *value = self.hash_value(value);
            }
            return;
        };
        match value {
            Value::Object(map) if &**first == "*" => {
                map.values_mut().for_each(|v| self.redact_at(v, rest));
            }
            Value::Object(map) => {
                if let Some(v) = map.get_mut(&**first) {
                    self.redact_at(v, rest);
                }
            }
            Value::Array(items) if &**first == "*" => {
                items.iter_mut().for_each(|v| self.redact_at(v, rest));
            }
            Value::Array(items) => {
                if let Some(v) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    self.redact_at(v, rest);
                }
            }
            _ => {}
        }
    }

    /// A body as it may leave the process: itself when nothing is redacted (lossy only where
    /// it is not UTF-8), else the JSON redacted and re-serialised (a repeated key keeps its
    /// last value, as JSON readers do), or, when it is not JSON, one hash for all of it.
    pub fn body<'a>(&self, body: &'a [u8]) -> Cow<'a, str> {
        if self.is_empty() {
            return String::from_utf8_lossy(body);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(mut value) => {
                self.redact(&mut value);
                Cow::Owned(value.to_string())
            }
            Err(_) => Cow::Owned(Value::String(self.hash(body)).to_string()),
        }
    }

    /// The logical task fields whose values are redacted on a route with these field keys:
    /// by their key in the body, or by their logical name.
    pub fn task_fields(&self, fields: &FieldsConfig) -> Vec<Field> {
        [
            (Field::Status, &fields.status),
            (Field::Stage, &fields.stage),
            (Field::Progress, &fields.progress),
            (Field::IsCompleted, &fields.is_completed),
        ]
        .into_iter()
        .filter(|(field, key)| self.redacts_key(key) || self.redacts_key(field_name(*field)))
        .map(|(field, _)| field)
        .collect()
    }

    /// A verdict as it may be logged or reported: the values of `fields` in its fixes and
    /// messages replaced by their hashes. Itself when none of its fields is redacted.
    pub fn verdict<'a>(
        &self,
        fields: &[Field],
        verdict: &'a RecordVerdict,
    ) -> Cow<'a, RecordVerdict> {
        if fields.is_empty() {
            return Cow::Borrowed(verdict);
        }
        let mut scrubbed = verdict.clone();
        // The values as the messages spell them, longest first so no hash eats part of another.
        let mut values: Vec<(String, String)> = Vec::new();
        for field in fields {
            let text = match field {
                Field::Status => verdict.sent.status.clone(),
                Field::Stage => verdict.sent.stage.clone(),
                Field::Progress => verdict.sent.progress.map(number_text),
                Field::IsCompleted => verdict.sent.is_completed.map(|b| b.to_string()),
            };
            values.extend(text.map(|t| {
                let json = match field {
                    Field::Status | Field::Stage => Value::String(t.clone()).to_string(),
                    Field::Progress | Field::IsCompleted => t.clone(),
                };
                (t, self.hash(json.as_bytes()))
            }));
        }
        for fix in scrubbed
            .fixes
            .iter_mut()
            .chain(scrubbed.shadow_fixes.iter_mut())
        {
            if fields.contains(&fix.field) {
                for raw in [&mut fix.before, &mut fix.after] {
                    let text = serde_json::from_str::<Value>(raw)
                        .map(|v| match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .unwrap_or_else(|_| raw.clone());
                    *raw = self.hash(raw.as_bytes());
                    values.push((text, raw.clone()));
                }
            }
        }
        values.retain(|(text, _)| !text.is_empty());
        values.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        for issue in &mut scrubbed.issues {
            for (text, hashed) in &values {
                if issue.message.contains(text.as_str()) {
                    issue.message = issue.message.replace(text.as_str(), hashed);
                }
            }
        }
        Cow::Owned(scrubbed)
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Redactor")
            .field("keys", &self.keys)
            .field("pointers", &self.pointers)
            .finish_non_exhaustive()
    }
}

/// The logical name of a field, as `[redaction] keys` may list it.
fn field_name(field: Field) -> &'static str {
    match field {
        Field::Status => "status",
        Field::Stage => "stage",
        Field::Progress => "progress",
        Field::IsCompleted => "is_completed",
    }
}

/// A number as JSON and the rule messages spell it: `40`, not `40.0`.
pub fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn is_redacted(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.starts_with(PREFIX))
}

/// RFC 6901: `~1` is `/`, `~0` is `~`.
fn unescape(segment: &str) -> Box<str> {
    segment.replace("~1", "/").replace("~0", "~").into()
}

/// One random key per process, the same across reloads.
fn process_key() -> Arc<[u8]> {
    static KEY: OnceLock<Arc<[u8]>> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
        if read.is_err() {
            // std seeds each RandomState from the OS: four of them make 32 unpredictable bytes.
            use std::hash::{BuildHasher, Hasher};
            for chunk in key.chunks_mut(8) {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(0);
                chunk.copy_from_slice(&hasher.finish().to_le_bytes());
            }
        }
        key.into()
    })
    .clone()
}

#[cfg(test)]
mod tests;
