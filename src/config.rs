//! The TOML configuration: the file's schema, the shipped defaults, and how a file is laid over them.
//!
//! The built-in defaults are `config/sidecar.toml`, compiled into the binary and parsed once. A
//! file is laid over them key by key, and its `[[rules]]` over the default rules by name.
//! Parsed into typed values (`SocketAddr`, `Duration`, `Uri`); nothing downstream re-parses
//! strings. Every error is one line naming the offending key, because the operator reads it as
//! one log line. [`Settings::compile`](crate::settings::Settings::compile) validates and
//! compiles a `Config`, once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::{FieldsConfig, Level, Mode, ModelConfig, RuleConfig, RuleMode, TransitionKind};

pub use crate::engine::ConfigError;
pub use evidence::{CaptureConfig, CaptureWhich, EvidenceConfig, RedactionConfig};

mod evidence;

/// The shipped configuration file: every key at its default.
const SHIPPED: &str = include_str!("../config/sidecar.toml");

/// The shipped file, parsed once: as a table to lay files over, and as the default `Config`.
static DEFAULTS: LazyLock<(toml::Table, Config)> = LazyLock::new(|| {
    let table: toml::Table = SHIPPED
        .parse()
        .expect("config/sidecar.toml is valid TOML (config::tests)");
    let config = deserialize(toml::Value::Table(table.clone()), "")
        .expect("config/sidecar.toml matches the schema (config::tests)");
    (table, config)
});

/// How log events are written: human-readable lines, or one JSON object per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// The upstream base URL; only plain `http://host:port` (the backend sits beside us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub uri: http::Uri,
}

// === impl Upstream ===

impl Upstream {
    /// `host:port` of the upstream, used for the TCP readiness probe and the Host header.
    pub fn authority(&self) -> &http::uri::Authority {
        self.uri
            .authority()
            .expect("validated at parse time: upstream has an authority")
    }

    fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("scheme {other:?} not supported, use http://")),
            None => return Err("missing scheme, expected http://host:port".into()),
        }
        let Some(authority) = uri.authority() else {
            return Err("missing host".into());
        };
        // Refused rather than redacted: the sidecar never sends credentials upstream, and a URL
        // with a password would show in every place the upstream is named.
        if authority.as_str().contains('@') {
            return Err(
                "must not carry credentials (user:password@): the sidecar sends none upstream"
                    .into(),
            );
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("must not carry a path or query; requests keep their own".into());
        }
        Ok(Upstream { uri })
    }
}

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Upstream::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Upstream::parse(s)
    }
}

/// The whole configuration file. In a file every key is optional: unset keys keep the shipped
/// defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// The legacy backend.
    pub upstream: Upstream,
    /// Admin port: /healthz, /readyz, /metrics, /report.
    pub admin_listen: SocketAddr,
    /// `fix` patches inconsistent responses; `observe` only counts them.
    pub mode: Mode,
    pub log_format: LogFormat,
    /// Re-read the config file when its content changes (checked every few seconds), as a
    /// Kubernetes ConfigMap changes under a running pod; SIGHUP and `POST /-/reload` always work.
    pub watch_config: bool,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub inspect: InspectConfig,
    pub model: ModelConfig,
    pub fields: FieldsConfig,
    pub tracker: TrackerConfig,
    /// What is kept of inconsistent records for `/evidence` and `/tasks/{id}`.
    pub evidence: EvidenceConfig,
    /// Values that never leave the process: evidence, captures, logs and the report hash them.
    pub redaction: RedactionConfig,
    /// NDJSON capture of inspected responses for `replay`; off by default.
    pub capture: CaptureConfig,
    /// Routes whose responses are inspected; given in a file, they replace the defaults.
    pub routes: Vec<RouteConfig>,
    /// Rules; given in a file, each entry overrides the default rule of the same name
    /// (only the keys it sets) or adds a new rule.
    pub rules: Vec<RuleConfig>,
}

/// Timeouts and limits of the proxy path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// TCP connect to the upstream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// From sending the request to receiving the upstream's response head.
    #[serde(with = "humantime_serde")]
    pub response_header_timeout: Duration,
    /// How long a client may take to send a request head (slowloris guard).
    #[serde(with = "humantime_serde")]
    pub client_header_timeout: Duration,
    /// A keep-alive client connection idle this long is closed.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// Client connections open at most (HTTP/1.1 and h2c); at the cap the longest-idle one is
    /// closed for a new client, and with none idle new clients wait in the kernel's backlog.
    pub max_client_connections: usize,
    /// Largest request head accepted from a client, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request.
    pub max_headers: usize,
    /// Idle pooled upstream connections are closed after this; keep it below the backend's keep-alive.
    #[serde(with = "humantime_serde")]
    pub upstream_idle_timeout: Duration,
    /// Idle pooled upstream connections kept at most.
    pub upstream_max_idle: usize,
    /// Upstream connections open at most, busy or idle; never more than the client connections.
    pub upstream_max_connections: usize,
    /// Worker threads serving connections; 0: one per available core.
    pub workers: usize,
    /// Concurrent upstream requests; past this, requests get 503 at once (load shedding).
    pub max_concurrent_requests: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may still run.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// /readyz answers ready if the upstream answered within this window (else it tries a TCP connect).
    #[serde(with = "humantime_serde")]
    pub ready_window: Duration,
    /// Peers whose `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` are passed on; from
    /// any other peer they are set from the connection (or dropped). `[]`: nobody.
    pub trusted_proxies: Vec<IpNet>,
}

/// Who may use the admin port, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Peers that may `POST /-/reload` (SIGHUP and `watch_config` need no network).
    pub reload_from: Vec<IpNet>,
    /// Host names the admin port answers to; IP literals always pass (DNS rebinding guard).
    pub allowed_hosts: Vec<String>,
    /// A file holding the bearer token every path but `/healthz` and `/readyz` then needs; "":
    /// no token.
    pub token_file: String,
}

// === impl AdminConfig ===

impl AdminConfig {
    /// Host names are compared as DNS names: lower case, no port, no scheme.
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            let name_safe = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
            if host.is_empty() || !host.bytes().all(name_safe) {
                return Err(ConfigError::new(
                    format!("admin.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name (no port, no scheme)"),
                ));
            }
        }
        Ok(())
    }
}

/// What is inspected and how much of it may be held in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectConfig {
    /// Larger bodies (declared or actual) stream through uninspected.
    pub max_body_bytes: usize,
    /// A compressed body that inflates past this is skipped (decompression-bomb guard).
    pub max_decoded_bytes: usize,
    /// On inspected routes, ask the upstream only for the codings the inspector reads.
    pub narrow_accept_encoding: bool,
    /// All bodies held for inspection at once, together; past it responses stream through.
    pub max_held_bytes: usize,
    /// Add `x-consistency-fixed: rule,rule` to patched responses.
    pub fixed_header: bool,
    /// Add `x-consistency-shadow: rule,rule` to responses that rules in shadow would have patched.
    pub shadow_header: bool,
    /// Log the report this often; "0s" turns it off.
    #[serde(with = "humantime_serde")]
    pub report_interval: Duration,
    /// How many recent issues the report keeps.
    pub recent_issues: usize,
    /// Per route and rule, issues are logged in full only for the first `log_burst` in each
    /// window of this length; the rest are summarised once per window.
    #[serde(with = "humantime_serde")]
    pub log_window: Duration,
    pub log_burst: u32,
}

/// Per-route overrides of the global field names; unset keys inherit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Vec<String>>,
}

// === impl FieldOverrides ===

impl FieldOverrides {
    /// The route's field keys: its own where set, the global `[fields]` elsewhere.
    pub fn apply(&self, base: &FieldsConfig) -> FieldsConfig {
        FieldsConfig {
            status: self.status.clone().unwrap_or_else(|| base.status.clone()),
            stage: self.stage.clone().unwrap_or_else(|| base.stage.clone()),
            progress: self
                .progress
                .clone()
                .unwrap_or_else(|| base.progress.clone()),
            is_completed: self
                .is_completed
                .clone()
                .unwrap_or_else(|| base.is_completed.clone()),
            task_id: self.task_id.clone().unwrap_or_else(|| base.task_id.clone()),
        }
    }

    /// Whether the route sets the key of `[fields]` named `name` (`status`, ..., `task_id`).
    pub fn sets(&self, name: &str) -> bool {
        match name {
            "status" => self.status.is_some(),
            "stage" => self.stage.is_some(),
            "progress" => self.progress.is_some(),
            "is_completed" => self.is_completed.is_some(),
            "task_id" => self.task_id.is_some(),
            _ => false,
        }
    }
}

/// A route whose JSON responses are inspected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Metric label and log name: `[a-z0-9_]+`.
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Path pattern; `{param}` matches one segment. The query string is ignored.
    pub path: String,
    /// Where the records are: "" (whole body), a JSON pointer ("/data"), or "/history/*" (every element).
    #[serde(default)]
    pub records: String,
    /// Overrides the global mode for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Remember each task across polls and check its transitions.
    #[serde(default)]
    pub track: bool,
    #[serde(default)]
    pub fields: FieldOverrides,
}

fn default_method() -> String {
    "GET".into()
}

/// Task memory across polls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// Tasks remembered at most; the least recently seen is evicted past it.
    pub capacity: usize,
    /// A longer task id is not remembered (its record is still checked by the single-record
    /// rules), so each remembered task costs a bounded number of bytes, here and in Redis.
    pub max_task_id_bytes: usize,
    /// A task not seen for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// `local`, or `redis` to share the memory between replicas.
    pub store: TrackerStore,
    /// store = "redis": `redis://[[user]:password@]host[:port][/db]` or `redis+unix:///path`.
    pub redis_url: String,
    /// store = "redis", `rediss://`: a PEM file of the CA that signed Redis's certificate; "":
    /// the system's roots.
    pub redis_ca_file: String,
    /// store = "redis": the ACL user, over the URL's; "": the URL's (or `default`).
    pub redis_username: String,
    /// store = "redis": a file holding the password (a mounted Secret); "": none.
    pub redis_password_file: String,
    /// store = "redis": an environment variable holding the password (a Secret as env); "":
    /// none. At most one of the two.
    pub redis_password_env: String,
    /// store = "redis": prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// store = "redis": the longest a response waits for Redis before local memory judges it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// store = "redis": the longest one connection attempt may take (in the background).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// store = "redis": while Redis is down, how often to try it again.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// A non-terminal task still polled whose state stays the same this long is stalled.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// A non-terminal task nobody polls this long is abandoned, counted and forgotten.
    #[serde(with = "humantime_serde")]
    pub abandon_after: Duration,
    /// Per-stage overrides of `stall_after`, by stage name (AI stages take longer).
    pub stall_after_stage: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// One table per transition rule, named as [`TransitionKind::as_str`] spells it.
    pub rules: TransitionRules,
}

/// The transition rules' settings, one field per [`TransitionKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRules {
    pub stage_regression: TransitionRule,
    pub terminal_reopened: TransitionRule,
    pub terminal_changed: TransitionRule,
    pub progress_regression: TransitionRule,
}

/// One transition rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRule {
    pub enabled: bool,
    pub level: Level,
    /// stage_regression: hold the last stage sent; progress_regression: hold the last progress.
    pub fix: bool,
    /// `shadow`: judged and counted, its fix never applied.
    pub mode: RuleMode,
}

// === impl TrackerConfig ===

impl TrackerConfig {
    /// The settings of one transition rule.
    pub fn rule(&self, kind: TransitionKind) -> TransitionRule {
        let rules = &self.rules;
        match kind {
            TransitionKind::StageRegression => rules.stage_regression,
            TransitionKind::TerminalReopened => rules.terminal_reopened,
            TransitionKind::TerminalChanged => rules.terminal_changed,
            TransitionKind::ProgressRegression => rules.progress_regression,
        }
    }

    /// The stall limits: positive, known stages, and abandonment before the TTL forgets a task.
    fn validate_stalls(&self, model: &ModelConfig) -> Result<(), ConfigError> {
        if self.stall_after.is_zero() {
            return Err(ConfigError::new(
                "tracker.stall_after",
                "must be greater than 0s",
            ));
        }
        if self.abandon_after.is_zero() || self.abandon_after > self.ttl {
            return Err(ConfigError::new(
                "tracker.abandon_after",
                format!(
                    "must be greater than 0s and at most tracker.ttl ({}), or a task is forgotten before it is found abandoned",
                    humantime::format_duration(self.ttl)
                ),
            ));
        }
        for (stage, limit) in &self.stall_after_stage {
            let key = || format!("tracker.stall_after_stage.{stage}");
            if !model.stages.contains(stage) {
                return Err(ConfigError::new(
                    key(),
                    format!("{stage:?} is not in model.stages"),
                ));
            }
            if limit.is_zero() {
                return Err(ConfigError::new(key(), "must be greater than 0s"));
            }
        }
        Ok(())
    }

    /// The shared store's keys: a URL the Redis client accepts, a prefix safe to read in a key.
    fn validate_store(&self) -> Result<(), ConfigError> {
        crate::tracker::check_redis_url(&self.redis_url)
            .map_err(|problem| ConfigError::new("tracker.redis_url", problem))?;
        if self.store == TrackerStore::Redis {
            // The credentials and the CA are read now, so a missing Secret names its key.
            crate::tracker::redis_client(self)?;
        }
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"_:.-".contains(&b);
        if self.key_prefix.len() > 64 || !self.key_prefix.bytes().all(safe) {
            return Err(ConfigError::new(
                "tracker.key_prefix",
                format!("{:?} must match [A-Za-z0-9_:.-]{{0,64}}", self.key_prefix),
            ));
        }
        Ok(())
    }
}

/// Where the task memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerStore {
    /// In this process only: each replica remembers what it sent itself.
    Local,
    /// Shared by every replica through one Redis server; local memory when Redis fails.
    Redis,
}

// === impl TrackerStore ===

impl TrackerStore {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackerStore::Local => "local",
            TrackerStore::Redis => "redis",
        }
    }
}

/// Reads a configuration file and lays it over the defaults; `None`: the defaults.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        None => Ok(Config::default()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            parse(&text)
        }
    }
}

/// Parses TOML text and lays it over the defaults: tables key by key (so a file may set one
/// key of `[proxy]` or of `[tracker.rules.stage_regression]`), arrays and values whole, and
/// `[[rules]]` over the default rules by name.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let mut file: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
    // Rules are read on their own, so their error keys count the file's entries.
    let rules = file.remove("rules");
    let mut table = DEFAULTS.0.clone();
    lay_over(&mut table, file);
    let mut config: Config = deserialize(toml::Value::Table(table), "")?;
    if let Some(rules) = rules {
        let rules: Vec<RuleConfig> = deserialize(rules, "rules")?;
        for over in rules {
            // A file that lists the defaults verbatim (like config/sidecar.toml) must not
            // duplicate them.
            match config.rules.iter_mut().find(|r| r.name == over.name) {
                Some(rule) => rule.overlay(&over),
                None => config.rules.push(over),
            }
        }
    }
    Ok(config)
}

/// Sets every key of `file` in `base`; where both hold a table, key by key.
fn lay_over(base: &mut toml::Table, file: toml::Table) {
    for (key, value) in file {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(file)) => lay_over(base, file),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Deserializes `value`, found at key `at` ("" for the whole file), into `T`; an error names
/// the key path.
fn deserialize<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    at: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = match e.path().to_string() {
            path if path == "." => String::new(),
            path => path,
        };
        let mut key = match (at, path.as_str()) {
            ("", path) => path.to_string(),
            (at, path) if path.is_empty() || path.starts_with('[') => format!("{at}{path}"),
            (at, path) => format!("{at}.{path}"),
        };
        let mut problem = in_file_words(e.into_inner().message());
        // serde reports a missing key at its table; name the key itself.
        if let Some(name) = problem
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            key = if key.is_empty() {
                name.to_string()
            } else {
                format!("{key}.{name}")
            };
            problem = "missing".to_string();
        }
        if key.is_empty() {
            key = "(top level)".to_string();
        }
        ConfigError::new(key, problem)
    })
}

/// A TOML syntax error: there is no key yet, so the line and column stand in for it.
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let at = err
        .span()
        .map_or(text.len(), |span| span.start.min(text.len()));
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let problem = match in_file_words(err.message()) {
        // toml has no words for a file that ends where a value should be.
        empty if empty.is_empty() && at == text.len() => {
            "the file ends where a value is expected".to_string()
        }
        empty if empty.is_empty() => "invalid TOML".to_string(),
        problem => problem,
    };
    ConfigError::new(format!("line {line}, column {column}"), problem)
}

/// A deserializer's message on one line, in the file's words rather than Rust's: tables and
/// arrays, not structs, maps and sequences; examples where a format is expected.
fn in_file_words(message: &str) -> String {
    let mut text = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // `expected struct ProxyConfig`: the operator knows it as a table.
    while let Some(at) = text.find("expected struct ") {
        let name = &text[at + "expected struct ".len()..];
        let end = name
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(name.len());
        text.replace_range(at..at + "expected struct ".len() + end, "expected a table");
    }
    for (rust, file) in [
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected an array"),
        ("expected usize", "expected a whole number"),
        (
            "expected a duration",
            "expected a duration such as \"500ms\", \"30s\" or \"1h\"",
        ),
        (
            "expected socket address",
            "expected an address such as \"127.0.0.1:8080\"",
        ),
        (
            "invalid socket address syntax",
            "not an address such as \"127.0.0.1:8080\"",
        ),
    ] {
        text = text.replace(rust, file);
    }
    text
}

fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

// === impl Config ===

impl Default for Config {
    /// The shipped `config/sidecar.toml`.
    fn default() -> Self {
        DEFAULTS.1.clone()
    }
}

impl Config {
    /// Checks what neither serde nor the compilers check: names, limits, the model. Called by
    /// [`Settings::compile`](crate::settings::Settings::compile), which compiles the rest.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("proxy.max_header_bytes", self.proxy.max_header_bytes)?;
        positive(
            "proxy.max_client_connections",
            self.proxy.max_client_connections,
        )?;
        positive("proxy.max_headers", self.proxy.max_headers)?;
        positive(
            "proxy.max_concurrent_requests",
            self.proxy.max_concurrent_requests,
        )?;
        positive(
            "proxy.upstream_max_connections",
            self.proxy.upstream_max_connections,
        )?;
        positive("inspect.max_body_bytes", self.inspect.max_body_bytes)?;
        positive("inspect.max_decoded_bytes", self.inspect.max_decoded_bytes)?;
        positive("tracker.capacity", self.tracker.capacity)?;
        positive("tracker.max_task_id_bytes", self.tracker.max_task_id_bytes)?;
        let one_compressed = self.inspect.max_body_bytes + self.inspect.max_decoded_bytes;
        if self.inspect.max_held_bytes < one_compressed {
            return Err(ConfigError::new(
                "inspect.max_held_bytes",
                format!("must hold at least one compressed body: max_body_bytes + max_decoded_bytes = {one_compressed}"),
            ));
        }
        if self.proxy.max_header_bytes < 8192 {
            // hyper refuses a smaller read buffer.
            return Err(ConfigError::new(
                "proxy.max_header_bytes",
                "must be at least 8192",
            ));
        }
        for (key, d) in [
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            (
                "proxy.response_header_timeout",
                self.proxy.response_header_timeout,
            ),
            (
                "proxy.client_header_timeout",
                self.proxy.client_header_timeout,
            ),
            ("proxy.client_idle_timeout", self.proxy.client_idle_timeout),
            ("tracker.ttl", self.tracker.ttl),
            ("inspect.log_window", self.inspect.log_window),
            ("tracker.timeout", self.tracker.timeout),
            ("tracker.connect_timeout", self.tracker.connect_timeout),
            ("tracker.retry_interval", self.tracker.retry_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0s"));
            }
        }
        self.admin.validate()?;
        self.tracker.validate_store()?;
        self.evidence.validate()?;
        self.redaction.validate()?;
        self.capture.validate()?;
        self.tracker.validate_stalls(&self.model)?;
        if self.model.statuses.is_empty() {
            return Err(ConfigError::new("model.statuses", "must not be empty"));
        }
        if self.model.stages.is_empty() {
            return Err(ConfigError::new("model.stages", "must not be empty"));
        }
        for (i, t) in self.model.terminal_statuses.iter().enumerate() {
            if !self.model.statuses.contains(t) {
                return Err(ConfigError::new(
                    format!("model.terminal_statuses[{i}]"),
                    format!("{t:?} is not in model.statuses"),
                ));
            }
        }
        for kind in [
            TransitionKind::TerminalReopened,
            TransitionKind::TerminalChanged,
        ] {
            if self.tracker.rule(kind).fix {
                return Err(ConfigError::new(
                    format!("tracker.rules.{}.fix", kind.as_str()),
                    "this rule has no fix: a finished task's true state cannot be guessed",
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !is_label_safe(&route.name) || route.name == "other" {
                return Err(ConfigError::new(
                    key("name"),
                    format!(
                        "{:?} must match [a-z0-9_]+ and not be \"other\"",
                        route.name
                    ),
                ));
            }
            if !seen.insert(route.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("duplicate route {:?}", route.name),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("rules[{i}].{k}");
            if !is_label_safe(&rule.name) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("{:?} must match [a-z0-9_]+", rule.name),
                ));
            }
            if !seen.insert(rule.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("duplicate rule {:?}", rule.name),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `check-config`: the Redis password shown as
    /// `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.tracker.redis_url = crate::tracker::redacted_redis_url(&self.tracker.redis_url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
