//! The `[evidence]`, `[redaction]` and `[capture]` tables: what is kept of inconsistent
//! records for `/evidence`, which values never leave the process, and the traffic capture that
//! `replay` reads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Per route and rule, the most recent inconsistent records kept for `/evidence` and `/tasks/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Entries kept per route and rule; 0 keeps none. Restart-only (the rings are sized once).
    pub entries_per_rule: usize,
    /// Bytes kept per route and rule, entries counted by their size; the oldest go first.
    pub bytes_per_rule: usize,
    /// Keep the whole body as received (redacted), not only the fields the rules read.
    pub whole_bodies: bool,
    /// A kept body is cut to this many bytes.
    pub max_body_bytes: usize,
    /// The instance entries name; empty: the host name.
    pub instance: String,
}

/// Values replaced by `REDACTED-<keyed hash>` in evidence, captures, logs and the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Object keys redacted wherever they appear (any depth, inside arrays, every occurrence).
    pub keys: Vec<String>,
    /// JSON pointers from the body's root (RFC 6901); a `*` segment matches any key or index.
    pub pointers: Vec<String>,
    /// A file holding the hash key (its bytes); empty: a random key per process.
    pub key_file: PathBuf,
}

/// Which inspected responses a capture keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureWhich {
    /// Responses with at least one issue (shadow included).
    Inconsistent,
    /// Every inspected response.
    All,
}

/// NDJSON capture of inspected responses, for `consistency-sidecar replay`. Off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    pub enabled: bool,
    /// The current file; rotated ones are `<path>.1`, `<path>.2`, ...
    pub path: PathBuf,
    pub which: CaptureWhich,
    /// The share of eligible responses written, from 0 to 1.
    pub sample_rate: f64,
    /// A file is rotated before it would pass this size.
    pub max_file_bytes: u64,
    /// Files kept, the current one included.
    pub max_files: usize,
    /// Lines waiting for the writer; when full, lines are dropped and counted.
    pub queue: usize,
}

// === impl EvidenceConfig ===

impl EvidenceConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.entries_per_rule > 0 && self.bytes_per_rule == 0 {
            return Err(ConfigError::new(
                "evidence.bytes_per_rule",
                "must be greater than 0 while evidence.entries_per_rule is",
            ));
        }
        Ok(())
    }
}

// === impl RedactionConfig ===

impl RedactionConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (i, key) in self.keys.iter().enumerate() {
            if key.is_empty() {
                return Err(ConfigError::new(
                    format!("redaction.keys[{i}]"),
                    "must not be empty",
                ));
            }
        }
        for (i, pointer) in self.pointers.iter().enumerate() {
            if !pointer.starts_with('/') {
                return Err(ConfigError::new(
                    format!("redaction.pointers[{i}]"),
                    format!("{pointer:?} is not a JSON pointer (it starts with '/')"),
                ));
            }
        }
        Ok(())
    }
}

// === impl CaptureConfig ===

impl CaptureConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(ConfigError::new(
                "capture.sample_rate",
                "must be between 0 and 1",
            ));
        }
        if self.enabled && self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("capture.path", "must not be empty"));
        }
        for (key, value) in [
            ("capture.max_file_bytes", self.max_file_bytes),
            ("capture.max_files", self.max_files as u64),
            ("capture.queue", self.queue as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        Ok(())
    }
}
