//! The TOML configuration: schema, built-in defaults that fit the legacy backend, and validation.
//!
//! Parsed once into typed values (`SocketAddr`, `Duration`, `Uri`); nothing downstream re-parses
//! strings. Every error names the offending key, because the operator reads it as one log line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Whether inspected responses are patched or only judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Fix,
    Observe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Severity of a broken rule; a record's level is the worst among the rules it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Consistent,
    MinorIssue,
    MajorIssue,
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Consistent,
        Level::MinorIssue,
        Level::MajorIssue,
        Level::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Consistent => "consistent",
            Level::MinorIssue => "minor_issue",
            Level::MajorIssue => "major_issue",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The logical task fields that rules talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Status,
    Stage,
    Progress,
    IsCompleted,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Status => "status",
            Field::Stage => "stage",
            Field::Progress => "progress",
            Field::IsCompleted => "is_completed",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Duration` read and written as a humantime string (`"30s"`, `"1h"`, `"0s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!("{e} (expected e.g. \"500ms\", \"30s\", \"1h\")"))
            })
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

/// The upstream base URL; only plain `http://host:port` (the backend sits beside us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub uri: http::Uri,
}

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
        if uri.authority().is_none() {
            return Err("missing host".into());
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

/// The whole configuration file. Every key is optional; the defaults serve the legacy backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    pub proxy: ProxyConfig,
    pub inspect: InspectConfig,
    pub model: ModelConfig,
    pub fields: FieldsConfig,
    pub tracker: TrackerConfig,
    /// Routes whose responses are inspected; given in the file, they replace the defaults.
    pub routes: Vec<RouteConfig>,
    /// Rules; given in the file, each entry overrides the default rule of the same name
    /// (only the keys it sets) or adds a new rule.
    pub rules: Vec<RuleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ([0, 0, 0, 0], 8080).into(),
            upstream: Upstream::parse("http://127.0.0.1:5000").expect("default upstream parses"),
            admin_listen: ([127, 0, 0, 1], 9464).into(),
            mode: Mode::Fix,
            log_format: LogFormat::Text,
            proxy: ProxyConfig::default(),
            inspect: InspectConfig::default(),
            model: ModelConfig::default(),
            fields: FieldsConfig::default(),
            tracker: TrackerConfig::default(),
            routes: default_routes(),
            rules: default_rules(),
        }
    }
}

/// Timeouts and limits of the proxy path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// TCP connect to the upstream.
    pub connect_timeout: HumanDuration,
    /// From sending the request to receiving the upstream's response head.
    pub response_header_timeout: HumanDuration,
    /// How long a client may take to send a request head (slowloris guard).
    pub client_header_timeout: HumanDuration,
    /// A keep-alive client connection idle this long is closed.
    pub client_idle_timeout: HumanDuration,
    /// Largest request head accepted from a client, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request.
    pub max_headers: usize,
    /// Idle pooled upstream connections are closed after this; keep it below the backend's keep-alive.
    pub upstream_idle_timeout: HumanDuration,
    /// Idle pooled upstream connections kept at most.
    pub upstream_max_idle: usize,
    /// Concurrent upstream requests; past this, requests get 503 at once (load shedding).
    pub max_concurrent_requests: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may still run.
    pub shutdown_grace: HumanDuration,
    /// /readyz answers ready if the upstream answered within this window (else it tries a TCP connect).
    pub ready_window: HumanDuration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2).into(),
            // The legacy backend answers task creation synchronously and may take a while.
            response_header_timeout: Duration::from_secs(60).into(),
            client_header_timeout: Duration::from_secs(10).into(),
            client_idle_timeout: Duration::from_secs(75).into(),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            // gunicorn's default keep-alive is 2 s; stay below it so we never reuse a closing socket.
            upstream_idle_timeout: Duration::from_secs(1).into(),
            upstream_max_idle: 64,
            max_concurrent_requests: 1024,
            shutdown_grace: Duration::from_secs(30).into(),
            ready_window: Duration::from_secs(10).into(),
        }
    }
}

/// What is inspected and how much of it may be held in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InspectConfig {
    /// Larger bodies (declared or actual) stream through uninspected.
    pub max_body_bytes: usize,
    /// A compressed body that inflates past this is skipped (decompression-bomb guard).
    pub max_decoded_bytes: usize,
    /// All bodies held for inspection at once, together; past it responses stream through.
    pub max_held_bytes: usize,
    /// Add `x-consistency-fixed: rule,rule` to patched responses.
    pub fixed_header: bool,
    /// Log the report this often; "0s" turns it off.
    pub report_interval: HumanDuration,
    /// How many recent issues the report keeps.
    pub recent_issues: usize,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig {
            max_body_bytes: 1024 * 1024,
            max_decoded_bytes: 8 * 1024 * 1024,
            max_held_bytes: 64 * 1024 * 1024,
            fixed_header: false,
            report_interval: Duration::from_secs(3600).into(),
            recent_issues: 10,
        }
    }
}

/// The task model: which values exist and in what order stages flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub statuses: Vec<String>,
    /// Working stages in flow order, ending with the success stage.
    pub stages: Vec<String>,
    /// The stage any working stage may fall to.
    pub failed_stage: String,
    /// Statuses after which a task never changes again.
    pub terminal_statuses: Vec<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            statuses: strings(&["pending", "running", "completed", "failed"]),
            stages: strings(&[
                "init",
                "ai_fetching",
                "ranking_analysis",
                "source_tracing",
                "completed",
            ]),
            failed_stage: "failed".into(),
            terminal_statuses: strings(&["completed", "failed"]),
        }
    }
}

/// Where the task fields live in a record (top-level keys of the record object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldsConfig {
    pub status: String,
    pub stage: String,
    pub progress: String,
    pub is_completed: String,
    /// Tried in order; the first present names the task.
    pub task_id: Vec<String>,
}

impl Default for FieldsConfig {
    fn default() -> Self {
        FieldsConfig {
            status: "status".into(),
            stage: "stage".into(),
            progress: "progress".into(),
            is_completed: "is_completed".into(),
            task_id: strings(&["task_id", "execution_id"]),
        }
    }
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

impl FieldOverrides {
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

fn default_routes() -> Vec<RouteConfig> {
    let route = |name: &str, path: &str, records: &str, track: bool| RouteConfig {
        name: name.into(),
        method: "GET".into(),
        path: path.into(),
        records: records.into(),
        mode: None,
        track,
        fields: FieldOverrides::default(),
    };
    vec![
        route("task_status", "/test/status/{task_id}", "", true),
        route("test_progress", "/api/test-progress", "", true),
        route("test_history", "/api/test-history", "/history/*", false),
    ]
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

/// All conditions of one table must hold.
pub type Conjunction = BTreeMap<Field, Condition>;

/// `when = { ... }` (all of) or `when = [{ ... }, { ... }]` (any of the tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum When {
    All(Conjunction),
    Any(Vec<Conjunction>),
}

/// A declarative rule. For a default rule name, unset keys keep the default's values.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<BTreeMap<Field, serde_json::Value>>,
    /// Message template; `{status}`, `{stage}`, `{progress}`, `{is_completed}` are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RuleConfig {
    fn overlay(&mut self, over: &RuleConfig) {
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
    }
}

/// The default rule set; names are stable because metrics and alerts use them.
pub fn default_rules() -> Vec<RuleConfig> {
    use serde_json::json;
    let cond = |c: Condition| c;
    let is = |v: serde_json::Value| {
        cond(Condition {
            is: Some(v),
            ..Default::default()
        })
    };
    let is_not = |v: serde_json::Value| {
        cond(Condition {
            is_not: Some(v),
            ..Default::default()
        })
    };
    let one_of = |v: &[&str]| Condition {
        one_of: Some(v.iter().map(|s| json!(s)).collect()),
        ..Default::default()
    };
    let not_one_of = |v: &[&str]| Condition {
        not_one_of: Some(v.iter().map(|s| json!(s)).collect()),
        ..Default::default()
    };
    let rule = |name: &str,
                level: Level,
                when: When,
                fix: &[(Field, serde_json::Value)],
                message: &str| RuleConfig {
        name: name.into(),
        enabled: Some(true),
        level: Some(level),
        when: Some(when),
        fix: Some(fix.iter().cloned().collect()),
        message: Some(message.into()),
    };
    let all = |c: &[(Field, Condition)]| When::All(c.iter().cloned().collect());
    let terminal = ["completed", "failed"];
    vec![
        rule(
            "completed_stage",
            Level::MinorIssue,
            all(&[
                (Field::Status, is(json!("completed"))),
                (Field::Stage, is_not(json!("completed"))),
            ]),
            &[(Field::Stage, json!("completed"))],
            "status=completed but stage={stage}",
        ),
        rule(
            "failed_stage",
            Level::MinorIssue,
            all(&[
                (Field::Status, is(json!("failed"))),
                (Field::Stage, is_not(json!("failed"))),
            ]),
            &[(Field::Stage, json!("failed"))],
            "status=failed but stage={stage}",
        ),
        rule(
            "completed_progress",
            Level::MinorIssue,
            all(&[
                (Field::IsCompleted, is(json!(true))),
                (Field::Status, is(json!("completed"))),
                (Field::Progress, is_not(json!(100))),
            ]),
            &[(Field::Progress, json!(100))],
            "is_completed=true, status=completed but progress={progress}",
        ),
        rule(
            "failed_progress",
            Level::MinorIssue,
            all(&[
                (Field::IsCompleted, is(json!(true))),
                (Field::Status, is(json!("failed"))),
                (Field::Progress, is_not(json!(0))),
            ]),
            &[(Field::Progress, json!(0))],
            "is_completed=true, status=failed but progress={progress}",
        ),
        rule(
            "terminal_not_marked",
            Level::MinorIssue,
            all(&[
                (Field::Status, one_of(&terminal)),
                (Field::IsCompleted, is(json!(false))),
            ]),
            &[(Field::IsCompleted, json!(true))],
            "status={status} but is_completed=false",
        ),
        rule(
            "running_marked_complete",
            Level::MajorIssue,
            all(&[
                (Field::IsCompleted, is(json!(true))),
                (Field::Status, not_one_of(&terminal)),
            ]),
            &[],
            "is_completed=true but status={status}",
        ),
        rule(
            "stage_ahead_of_status",
            Level::MajorIssue,
            all(&[
                (Field::Stage, one_of(&terminal)),
                (Field::Status, not_one_of(&terminal)),
            ]),
            &[],
            "stage={stage} but status={status}",
        ),
        rule(
            "progress_range",
            Level::MajorIssue,
            all(&[(
                Field::Progress,
                Condition {
                    not_number_in: Some([0.0, 100.0]),
                    ..Default::default()
                },
            )]),
            &[],
            "progress={progress} is not a number in 0..=100",
        ),
        rule(
            "unknown_value",
            Level::Critical,
            When::Any(vec![
                [(
                    Field::Status,
                    Condition {
                        known: Some(false),
                        ..Default::default()
                    },
                )]
                .into(),
                [(
                    Field::Stage,
                    Condition {
                        known: Some(false),
                        ..Default::default()
                    },
                )]
                .into(),
            ]),
            &[],
            "status={status} or stage={stage} is outside its enumeration",
        ),
        rule(
            "missing_field",
            Level::Critical,
            When::Any(vec![
                [(
                    Field::Status,
                    Condition {
                        present: Some(false),
                        ..Default::default()
                    },
                )]
                .into(),
                [(
                    Field::Stage,
                    Condition {
                        present: Some(false),
                        ..Default::default()
                    },
                )]
                .into(),
            ]),
            &[],
            "status or stage is missing",
        ),
    ]
}

/// Names of the transition (cross-poll) rules; fixed set, each configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    StageRegression,
    TerminalReopened,
    TerminalChanged,
    ProgressRegression,
}

impl TransitionKind {
    pub const ALL: [TransitionKind; 4] = [
        TransitionKind::StageRegression,
        TransitionKind::TerminalReopened,
        TransitionKind::TerminalChanged,
        TransitionKind::ProgressRegression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::StageRegression => "stage_regression",
            TransitionKind::TerminalReopened => "terminal_reopened",
            TransitionKind::TerminalChanged => "terminal_changed",
            TransitionKind::ProgressRegression => "progress_regression",
        }
    }
}

/// One transition rule's settings; unset keys keep the rule's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransitionRuleConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// stage_regression: hold the last stage sent; progress_regression: hold the last progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<bool>,
}

/// A transition rule's settings with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionRule {
    pub enabled: bool,
    pub level: Level,
    pub fix: bool,
}

impl TransitionKind {
    fn default_rule(self) -> TransitionRule {
        let (level, fix) = match self {
            TransitionKind::StageRegression => (Level::MajorIssue, false),
            TransitionKind::TerminalReopened => (Level::Critical, false),
            TransitionKind::TerminalChanged => (Level::Critical, false),
            TransitionKind::ProgressRegression => (Level::MinorIssue, true),
        };
        TransitionRule {
            enabled: true,
            level,
            fix,
        }
    }
}

/// Where the task memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerStore {
    /// In this process only: each replica remembers what it sent itself.
    #[default]
    Local,
    /// Shared by every replica through one Redis server; local memory when Redis fails.
    Redis,
}

/// Task memory across polls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Tasks remembered at most; the least recently seen is evicted past it.
    pub capacity: usize,
    /// A task not seen for this long is forgotten.
    pub ttl: HumanDuration,
    /// `local`, or `redis` to share the memory between replicas.
    pub store: TrackerStore,
    /// store = "redis": `redis://[[user]:password@]host[:port][/db]` or `redis+unix:///path`.
    pub redis_url: String,
    /// store = "redis": prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// store = "redis": the longest a response waits for Redis before local memory judges it.
    pub timeout: HumanDuration,
    /// store = "redis": the longest one connection attempt may take (in the background).
    pub connect_timeout: HumanDuration,
    /// store = "redis": while Redis is down, how often to try it again.
    pub retry_interval: HumanDuration,
    /// Keyed by rule name.
    pub rules: BTreeMap<TransitionKind, TransitionRuleConfig>,
}

impl TrackerConfig {
    /// The effective settings of one transition rule.
    pub fn rule(&self, kind: TransitionKind) -> TransitionRule {
        let base = kind.default_rule();
        let over = self.rules.get(&kind).copied().unwrap_or_default();
        TransitionRule {
            enabled: over.enabled.unwrap_or(base.enabled),
            level: over.level.unwrap_or(base.level),
            fix: over.fix.unwrap_or(base.fix),
        }
    }

    /// The shared store's keys: a URL the Redis client accepts, a prefix safe to read in a key.
    fn validate_store(&self) -> Result<(), ConfigError> {
        crate::tracker::check_redis_url(&self.redis_url)
            .map_err(|problem| ConfigError::new("tracker.redis_url", problem))?;
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"_:.-".contains(&b);
        if self.key_prefix.len() > 64 || !self.key_prefix.bytes().all(safe) {
            return Err(ConfigError::new(
                "tracker.key_prefix",
                format!("{:?} must match [A-Za-z0-9_:.-]{{0,64}}", self.key_prefix),
            ));
        }
        Ok(())
    }

    fn fill_defaults(&mut self) {
        for kind in TransitionKind::ALL {
            let rule = self.rule(kind);
            self.rules.insert(
                kind,
                TransitionRuleConfig {
                    enabled: Some(rule.enabled),
                    level: Some(rule.level),
                    fix: Some(rule.fix),
                },
            );
        }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        let mut tracker = TrackerConfig {
            capacity: 100_000,
            ttl: Duration::from_secs(24 * 3600).into(),
            store: TrackerStore::Local,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "consistency:".into(),
            timeout: Duration::from_millis(50).into(),
            connect_timeout: Duration::from_secs(1).into(),
            retry_interval: Duration::from_secs(1).into(),
            rules: BTreeMap::new(),
        };
        tracker.fill_defaults();
        tracker
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Reads, merges over the defaults, and validates a configuration file.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let config = match path {
        None => Config::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            parse(&text)?
        }
    };
    config.validate()?;
    Ok(config)
}

/// Parses TOML text; rules are overlaid on the defaults by name, tracker rules likewise.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::new(text);
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // toml's own message is multi-line with a source excerpt; keep its first line.
        let problem = inner
            .message()
            .lines()
            .next()
            .unwrap_or("invalid")
            .to_string();
        let key = if key == "." {
            "(top level)".to_string()
        } else {
            key
        };
        ConfigError::new(key, problem)
    })?;
    config.rules = merge_rules(default_rules(), std::mem::take(&mut config.rules));
    config.tracker.fill_defaults();
    Ok(config)
}

fn merge_rules(mut base: Vec<RuleConfig>, overrides: Vec<RuleConfig>) -> Vec<RuleConfig> {
    // A file that lists the defaults verbatim (like config/sidecar.toml) must not duplicate them.
    for over in overrides {
        match base.iter_mut().find(|r| r.name == over.name) {
            Some(existing) => existing.overlay(&over),
            None => base.push(over),
        }
    }
    base
}

fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Config {
    /// Checks what serde cannot: names, limits, patterns, and that the rules compile.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("proxy.max_header_bytes", self.proxy.max_header_bytes)?;
        positive("proxy.max_headers", self.proxy.max_headers)?;
        positive(
            "proxy.max_concurrent_requests",
            self.proxy.max_concurrent_requests,
        )?;
        positive("inspect.max_body_bytes", self.inspect.max_body_bytes)?;
        positive("inspect.max_decoded_bytes", self.inspect.max_decoded_bytes)?;
        positive("tracker.capacity", self.tracker.capacity)?;
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
            ("tracker.timeout", self.tracker.timeout),
            ("tracker.connect_timeout", self.tracker.connect_timeout),
            ("tracker.retry_interval", self.tracker.retry_interval),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::new(key, "must be greater than 0s"));
            }
        }
        self.tracker.validate_store()?;
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
            if route.method.parse::<http::Method>().is_err() {
                return Err(ConfigError::new(
                    key("method"),
                    format!("{:?} is not an HTTP method", route.method),
                ));
            }
            if !route.path.starts_with('/') {
                return Err(ConfigError::new(key("path"), "must start with '/'"));
            }
            if !(route.records.is_empty() || route.records.starts_with('/')) {
                return Err(ConfigError::new(
                    key("records"),
                    "must be \"\" (whole body) or a JSON pointer starting with '/'",
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
            if rule.enabled != Some(false) {
                if rule.level.is_none() {
                    return Err(ConfigError::new(key("level"), "missing for a new rule"));
                }
                if rule.when.is_none() {
                    return Err(ConfigError::new(key("when"), "missing for a new rule"));
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
