//! `RouteSpec`: where a route's records are, what its fields are called, and its mode.

use std::sync::Arc;

use crate::config::{ConfigError, FieldsConfig, Mode, RouteConfig};

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
    name: Arc<str>,
    mode: Mode,
    track: bool,
    /// Empty: the whole body is the record.
    pub(crate) selector: Vec<Segment>,
    /// Record keys of status, stage, progress, is_completed (slot order).
    pub(crate) keys: [KeyName; 4],
    /// Task id keys, the first present one wins.
    pub(crate) task_ids: Vec<KeyName>,
}

impl RouteSpec {
    /// Compiles one route; error keys read `routes[<name>].records` (use [`RouteSpec::compile_all`]
    /// for index-based keys such as `routes[1].records`).
    pub fn compile(
        route: &RouteConfig,
        fields: &FieldsConfig,
        global_mode: Mode,
    ) -> Result<RouteSpec, ConfigError> {
        Self::compile_at(
            &format!("routes[{}]", route.name),
            route,
            fields,
            global_mode,
        )
    }

    /// Compiles every route; errors name the key as `routes[i].…`.
    pub fn compile_all(
        routes: &[RouteConfig],
        fields: &FieldsConfig,
        global_mode: Mode,
    ) -> Result<Vec<RouteSpec>, ConfigError> {
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| Self::compile_at(&format!("routes[{i}]"), r, fields, global_mode))
            .collect()
    }

    /// A route whose record is the whole body, with the given fields and mode.
    pub fn whole_body(
        name: &str,
        fields: &FieldsConfig,
        mode: Mode,
    ) -> Result<RouteSpec, ConfigError> {
        let route = RouteConfig {
            name: name.into(),
            method: "GET".into(),
            path: "/".into(),
            records: String::new(),
            mode: Some(mode),
            track: false,
            fields: Default::default(),
        };
        Self::compile(&route, fields, mode)
    }

    fn compile_at(
        prefix: &str,
        route: &RouteConfig,
        global: &FieldsConfig,
        global_mode: Mode,
    ) -> Result<RouteSpec, ConfigError> {
        let selector = parse_pointer(&route.records)
            .map_err(|problem| ConfigError::new(format!("{prefix}.records"), problem))?;
        let fields = route.fields.apply(global);
        // A key set on the route is reported there; an inherited one at the global table.
        let key_of = |name: &str, overridden: bool| {
            if overridden {
                format!("{prefix}.fields.{name}")
            } else {
                format!("fields.{name}")
            }
        };
        let o = &route.fields;
        let named = [
            ("status", &fields.status, o.status.is_some()),
            ("stage", &fields.stage, o.stage.is_some()),
            ("progress", &fields.progress, o.progress.is_some()),
            (
                "is_completed",
                &fields.is_completed,
                o.is_completed.is_some(),
            ),
        ];
        for (i, (name, key, overridden)) in named.iter().enumerate() {
            if key.is_empty() {
                return Err(ConfigError::new(
                    key_of(name, *overridden),
                    "must not be empty",
                ));
            }
            // Two logical fields on one key would patch the same bytes twice.
            if let Some((other, _, _)) = named[..i].iter().find(|(_, k, _)| k == key) {
                return Err(ConfigError::new(
                    key_of(name, *overridden),
                    format!("{key:?} is already the key of {other}"),
                ));
            }
        }
        for (i, id) in fields.task_id.iter().enumerate() {
            if id.is_empty() {
                let key = key_of("task_id", o.task_id.is_some());
                return Err(ConfigError::new(format!("{key}[{i}]"), "must not be empty"));
            }
        }
        Ok(RouteSpec {
            name: route.name.as_str().into(),
            mode: route.mode.unwrap_or(global_mode),
            track: route.track,
            selector,
            keys: [
                KeyName::new(&fields.status),
                KeyName::new(&fields.stage),
                KeyName::new(&fields.progress),
                KeyName::new(&fields.is_completed),
            ],
            task_ids: fields.task_id.iter().map(|k| KeyName::new(k)).collect(),
        })
    }

    /// `fix` patches bodies; `observe` only judges them.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn name(&self) -> &str {
        &self.name
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
