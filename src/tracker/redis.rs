//! The shared task memory on Redis: one script call per response reads and writes all its
//! tracked records atomically; any failure is counted and leaves the response to local memory.
//! The same call keeps each task's timestamps and the stall indexes, and an upkeep call about
//! once a second forgets abandoned tasks and reads the stalled ones, so any replica can answer.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    Client, ErrorKind, IntoConnectionInfo, RedisError, Script, ScriptInvocation, TlsCertificates,
};
use tokio::time::Instant;

use super::stall::{Activity, ActivityMetrics, StallLimits};
use super::store::{StoreErrorReason, StoreMetrics};
use super::transition::{Snapshot, Transitions, FAILED, UNKNOWN};
use crate::config::{ConfigError, TrackerConfig};
use crate::engine::ModelConfig;

/// Not contacted yet: responses try it.
const STATE_UNKNOWN: u8 = 0;
/// The last call succeeded: responses use it.
const STATE_UP: u8 = 1;
/// The last call failed: responses go to local memory without waiting, a probe retries.
const STATE_DOWN: u8 = 2;

/// The value format, fed to the fingerprint: replicas writing another format keep apart.
const FORMAT: &[u8] = b"v2: stage status first changed since stalled progress";

/// Checks a `tracker.redis_url` the way the client will read it; the problem in one line.
pub fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" => {}
        // Not the URL itself in the message: it may carry a password.
        _ => {
            return Err(format!(
                "scheme {scheme:?} not supported: expected redis://host[:port][/db], rediss://... (TLS) or redis+unix:///path"
            ))
        }
    }
    Client::open(url).map(drop).map_err(|err| {
        // The client's message ends with its error kind ("... - InvalidClientConfig").
        let text = err.to_string();
        match text.rsplit_once(" - ") {
            Some((message, _)) => message.trim().to_owned(),
            None => text,
        }
    })
}

/// The client `[tracker]` describes: the URL; the user and password from the keys, a file or
/// the environment (a Kubernetes Secret) over the URL's; for `rediss://`, the CA to trust
/// (`redis_ca_file`, else the system's roots).
pub fn client(config: &TrackerConfig) -> Result<Client, ConfigError> {
    let url_error = |problem: String| ConfigError::new("tracker.redis_url", problem);
    check_url(&config.redis_url).map_err(url_error)?;
    let info = config
        .redis_url
        .as_str()
        .into_connection_info()
        .map_err(|err| url_error(err.to_string()))?;
    let mut redis = info.redis_settings().clone();
    if !config.redis_username.is_empty() {
        redis = redis.set_username(&config.redis_username);
    }
    if let Some(password) = password(config)? {
        redis = redis.set_password(password);
    }
    let info = info.set_redis_settings(redis);
    let tls = config.redis_url.starts_with("rediss://");
    let built = match (tls, config.redis_ca_file.as_str()) {
        (_, "") => Client::open(info),
        (false, _) => {
            return Err(ConfigError::new(
                "tracker.redis_ca_file",
                "only used with a rediss:// URL",
            ))
        }
        (true, ca) => {
            let root_cert = std::fs::read(ca).map_err(|e| {
                ConfigError::new("tracker.redis_ca_file", format!("cannot read {ca}: {e}"))
            })?;
            let certificates = TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            Client::build_with_tls(info, certificates)
        }
    };
    built.map_err(|err| {
        let key = if tls && !config.redis_ca_file.is_empty() {
            "tracker.redis_ca_file"
        } else {
            "tracker.redis_url"
        };
        ConfigError::new(key, err.to_string())
    })
}

/// The password of `redis_password_file` (its text, trimmed) or of the environment variable
/// `redis_password_env`; one of them at most.
fn password(config: &TrackerConfig) -> Result<Option<String>, ConfigError> {
    match (
        config.redis_password_file.as_str(),
        config.redis_password_env.as_str(),
    ) {
        ("", "") => Ok(None),
        (file, "") => std::fs::read_to_string(file)
            .map(|text| Some(text.trim().to_string()))
            .map_err(|e| {
                ConfigError::new(
                    "tracker.redis_password_file",
                    format!("cannot read {file}: {e}"),
                )
            }),
        ("", name) => std::env::var(name).map(Some).map_err(|_| {
            ConfigError::new(
                "tracker.redis_password_env",
                format!("environment variable {name} is not set"),
            )
        }),
        _ => Err(ConfigError::new(
            "tracker.redis_password_env",
            "set redis_password_file or redis_password_env, not both",
        )),
    }
}

/// `url` with the password of its userinfo replaced by `***`, for anything shown to people.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        // A lone userinfo is a user name to the client, but may well be a secret: hidden too.
        None => "***".to_string(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

/// A Redis server holding the memory of every replica that shares its `key_prefix`.
pub(crate) struct RedisStore {
    client: Client,
    /// Created on first use, inside the runtime (the manager spawns a task when it is built),
    /// and dropped after any failure that is not I/O (authentication, ACL, a wrong database):
    /// the manager reconnects after I/O errors but would keep a connection Redis refused, so
    /// the next probe builds a new one, which authenticates afresh.
    connection: Mutex<Option<ConnectionManager>>,
    judge: Script,
    correct: Script,
    upkeep: Script,
    prefix: String,
    /// Of the model the codes in the values refer to: replicas with another model (during a
    /// rollout that changes `[model]`) keep apart instead of misreading each other's codes.
    fingerprint: String,
    ttl_ms: u64,
    failed_rank: usize,
    timeout: Duration,
    connect_timeout: Duration,
    retry_interval: Duration,
    state: AtomicU8,
    probing: AtomicBool,
    metrics: StoreMetrics,
    activity: ActivityMetrics,
    /// For the stage labels: the model is restart-only, so the one at start names them.
    transitions: Arc<Transitions>,
    /// The tracked routes' names, set by each configuration.
    routes: Mutex<Vec<Arc<str>>>,
    /// What the last upkeep read of the stalled tasks.
    view: Mutex<SharedStalls>,
    /// Held by the upkeep in flight: one at a time per replica.
    upkeeping: tokio::sync::Mutex<()>,
    /// Keys corrected so far: the tests check that the script's predictions hold.
    #[cfg(test)]
    corrected: std::sync::atomic::AtomicU64,
}

/// The stalled tasks in the shared memory, as the last upkeep read them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedStalls {
    /// (route, stage, tasks).
    pub counts: Vec<(String, String, u64)>,
    /// The longest stalled first, times in Unix ms.
    pub oldest: Vec<SharedStalled>,
}

/// A stalled task of the shared memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SharedStalled {
    pub route: String,
    pub task_id: String,
    pub stage: String,
    pub progress: Option<f64>,
    pub changed_ms: u64,
    pub polled_ms: u64,
    pub first_ms: u64,
}

/// A tracked record as the first pass saw it: its task, and what it would be judged on.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub task_id: String,
    pub now: Snapshot,
    /// Whether the record is failing, so that its progress may drop.
    pub failing: bool,
}

/// What Redis answered for one record.
#[derive(Debug, Clone)]
pub(crate) struct Exchanged {
    /// The memory before this record; `None` for a task Redis does not know.
    pub prev: Option<Snapshot>,
    /// The value stored for this record, encoded.
    pub stored: String,
    /// What this poll did to the task's activity.
    pub activity: Activity,
}

/// A value to put in place of one the judge script stored, unless the key changed since.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Correction {
    pub task_id: String,
    pub stored: String,
    pub value: String,
}

/// The transition fixes the engine applies on a route (fix mode, rule enabled, `fix = true`),
/// which the judge script assumes when it predicts what is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Holds {
    pub stage: bool,
    pub progress: bool,
}

// === impl RedisStore ===

impl RedisStore {
    /// A store for `config.redis_url`; nothing is connected until the first use.
    pub fn new(
        config: &TrackerConfig,
        model: &ModelConfig,
        transitions: Arc<Transitions>,
        metrics: StoreMetrics,
        activity: ActivityMetrics,
    ) -> Result<RedisStore, ConfigError> {
        metrics.up.set(0);
        let failed_rank = transitions.failed_rank();
        Ok(RedisStore {
            client: client(config)?,
            connection: Mutex::new(None),
            judge: Script::new(include_str!("judge.lua")),
            correct: Script::new(include_str!("correct.lua")),
            upkeep: Script::new(include_str!("upkeep.lua")),
            prefix: config.key_prefix.clone(),
            fingerprint: format!("{:08x}", fingerprint(model)),
            ttl_ms: u64::try_from(config.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            failed_rank,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            retry_interval: config.retry_interval,
            state: AtomicU8::new(STATE_UNKNOWN),
            probing: AtomicBool::new(false),
            metrics,
            activity,
            transitions,
            routes: Mutex::new(Vec::new()),
            view: Mutex::new(SharedStalls::default()),
            upkeeping: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            corrected: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The longest a response waits for this store.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether responses should skip the store: it failed and has not answered a probe since.
    /// Each skipped response is counted as `down`.
    pub fn skipping(self: &Arc<Self>) -> bool {
        if self.state.load(Ordering::Acquire) != STATE_DOWN {
            return false;
        }
        self.metrics.error(StoreErrorReason::Down);
        self.start_probe();
        true
    }

    /// Background upkeep: connects early, and keeps a probe running while the store is down;
    /// while it is up, forgets abandoned tasks and reads the stalled ones (see `upkeep.lua`).
    pub fn maintain(self: &Arc<Self>, limits: Arc<StallLimits>, now_ms: u64) {
        if self.state.load(Ordering::Acquire) != STATE_UP {
            self.start_probe();
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(self);
        runtime.spawn(async move {
            // One at a time: a slow Redis does not pile up sweeps.
            if let Ok(_one) = store.upkeeping.try_lock() {
                store.upkeep(&limits, now_ms).await;
            }
        });
    }

    /// Waits for the upkeep in flight, then runs one.
    #[cfg(test)]
    pub async fn settle(self: &Arc<Self>, limits: &StallLimits, now_ms: u64) {
        let _one = self.upkeeping.lock().await;
        self.upkeep(limits, now_ms).await;
    }

    /// The tracked routes of a new configuration, whose indexes the upkeep looks at.
    pub fn set_routes(&self, names: &[&str]) {
        *self.routes.lock().unwrap_or_else(PoisonError::into_inner) =
            names.iter().map(|&name| Arc::from(name)).collect();
    }

    /// What the last upkeep read of the stalled tasks, or `None` while the store is not up.
    pub fn stalls(&self) -> Option<SharedStalls> {
        (self.state.load(Ordering::Acquire) == STATE_UP).then(|| {
            self.view
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// One upkeep call: counts the tasks it abandoned and keeps what it read of the stalled.
    async fn upkeep(self: &Arc<Self>, limits: &StallLimits, now_ms: u64) {
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if routes.is_empty() {
            return;
        }
        let mut stages: Vec<String> = (0..self.transitions.stages().len())
            .map(|code| code.to_string())
            .collect();
        stages.extend([FAILED.to_string(), UNKNOWN.to_string()]);
        let mut call = self.upkeep.prepare_invoke();
        call.arg(now_ms)
            .arg(limits.abandon_ms)
            .arg(super::stall::LISTED)
            .arg(limits.terminal_arg())
            .arg(stages.join(","));
        for route in &routes {
            let (head, tail) = self.index_names(route);
            call.arg(head).arg(tail).arg(self.key(route, ""));
        }
        let deadline = Instant::now() + self.timeout;
        let Some(lines) = self.call::<Vec<String>>(&call, deadline).await else {
            return;
        };
        let label = |code: &str| {
            code.parse().map_or_else(
                |_| "unknown".to_owned(),
                |code| self.transitions.stage_label(code),
            )
        };
        let mut view = SharedStalls::default();
        for line in &lines {
            let mut fields = line.splitn(8, ' ');
            let kind = fields.next();
            let route = fields
                .next()
                .and_then(|r| r.parse::<usize>().ok())
                .and_then(|r| routes.get(r.checked_sub(1)?));
            let (Some(kind), Some(route), Some(stage)) = (kind, route, fields.next()) else {
                continue;
            };
            let stage = label(stage);
            match kind {
                "a" => self
                    .activity
                    .abandoned
                    .with_label_values(&[&**route, stage.as_str()])
                    .inc(),
                "c" => {
                    if let Some(n) = fields.next().and_then(|n| n.parse().ok()) {
                        view.counts.push((route.to_string(), stage, n));
                    }
                }
                _ => {
                    let mut time = || {
                        fields
                            .next()
                            .and_then(|t| t.parse::<f64>().ok())
                            .map_or(0, |t| t as u64)
                    };
                    let (changed_ms, polled_ms, first_ms) = (time(), time(), time());
                    let progress = fields.next().and_then(|p| p.parse().ok());
                    if let Some(id) = fields.next() {
                        view.oldest.push(SharedStalled {
                            route: route.to_string(),
                            task_id: id.to_owned(),
                            stage,
                            progress,
                            changed_ms,
                            polled_ms,
                            first_ms,
                        });
                    }
                }
            }
        }
        view.counts.sort();
        view.oldest.sort_by(|a, b| {
            (a.changed_ms, &a.route, &a.task_id).cmp(&(b.changed_ms, &b.route, &b.task_id))
        });
        view.oldest.truncate(super::stall::LISTED);
        *self.view.lock().unwrap_or_else(PoisonError::into_inner) = view;
    }

    /// Judge-and-remember for the tracked records of one response of `route`: what Redis held
    /// for each, in record order. `None` (counted, and the store marked down) when Redis
    /// failed or did not answer by `deadline`.
    pub async fn exchange(
        self: &Arc<Self>,
        route: &str,
        holds: Holds,
        records: &[Candidate],
        clock: (&StallLimits, u64),
        deadline: Instant,
    ) -> Option<Vec<Exchanged>> {
        let (limits, now_ms) = clock;
        let (head, tail) = self.index_names(route);
        let mut call = self.judge.prepare_invoke();
        call.arg(self.ttl_ms)
            .arg(self.failed_rank)
            .arg(u8::from(holds.stage))
            .arg(u8::from(holds.progress))
            .arg(now_ms)
            .arg(limits.limits_arg())
            .arg(limits.terminal_arg())
            .arg(head)
            .arg(tail)
            .arg(self.key(route, "").len());
        for record in records {
            call.key(self.key(route, &record.task_id))
                .arg(record.now.stage)
                .arg(record.now.status)
                .arg(encode_progress(record.now.progress))
                .arg(u8::from(record.failing));
        }
        let reply: Vec<Option<String>> = self.call(&call, deadline).await?;
        match parse_exchange(reply, records.len()) {
            Some(exchanged) => Some(exchanged),
            None => {
                self.failed(StoreErrorReason::Protocol);
                None
            }
        }
    }

    /// Puts what was really sent in place of predictions the engine did not follow, within
    /// the same `deadline` as the exchange.
    pub async fn correct(
        self: &Arc<Self>,
        route: &str,
        corrections: &[Correction],
        deadline: Instant,
    ) {
        let mut call = self.correct.prepare_invoke();
        call.arg(self.ttl_ms);
        for correction in corrections {
            call.key(self.key(route, &correction.task_id))
                .arg(&correction.stored)
                .arg(&correction.value);
        }
        let corrected: Option<u64> = self.call(&call, deadline).await;
        #[cfg(test)]
        self.corrected
            .fetch_add(corrected.unwrap_or(0), Ordering::Relaxed);
        #[cfg(not(test))]
        let _ = corrected;
    }

    /// Keys corrected so far.
    #[cfg(test)]
    pub fn corrected(&self) -> u64 {
        self.corrected.load(Ordering::Relaxed)
    }

    /// The value Redis holds for one task and, while it is not terminal, when it was last
    /// polled (Unix ms), read by `deadline`; `None` when Redis fails, which is not counted
    /// against the store, as no response waits on it.
    pub async fn read(
        &self,
        route: &str,
        task_id: &str,
        deadline: Instant,
    ) -> Option<(Option<String>, Option<f64>)> {
        let (head, tail) = self.index_names(route);
        let read = tokio::time::timeout_at(deadline, async {
            let mut connection = self.connection()?;
            redis::pipe()
                .cmd("GET")
                .arg(self.key(route, task_id))
                .cmd("ZSCORE")
                .arg(format!("{head}polled{tail}"))
                .arg(task_id)
                .query_async::<(Option<String>, Option<f64>)>(&mut connection)
                .await
        })
        .await;
        match read {
            Ok(Ok(value)) => Some(value),
            _ => None,
        }
    }

    /// Runs a script call by `deadline`; failures are counted and mark the store down.
    async fn call<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        call: &ScriptInvocation<'_>,
        deadline: Instant,
    ) -> Option<T> {
        let result = tokio::time::timeout_at(deadline, async {
            let mut connection = self.connection()?;
            call.invoke_async::<T>(&mut connection).await
        })
        .await;
        match result {
            Ok(Ok(value)) => {
                self.succeeded();
                Some(value)
            }
            Ok(Err(err)) => {
                let reason = reason(&err);
                tracing::debug!(error = %err, reason = reason.as_str(), "task store failed");
                if !err.is_io_error() {
                    self.drop_connection();
                }
                self.failed(reason);
                None
            }
            Err(_) => {
                self.failed(StoreErrorReason::Timeout);
                None
            }
        }
    }

    fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt per use: the probe, not the manager, paces the retries.
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Forgets the connection, so the next use connects (and authenticates) anew.
    fn drop_connection(&self) {
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn succeeded(&self) {
        if self.state.swap(STATE_UP, Ordering::AcqRel) != STATE_UP {
            self.metrics.up.set(1);
            tracing::info!("task store connected: responses are judged with the shared memory");
        }
    }

    fn failed(self: &Arc<Self>, reason: StoreErrorReason) {
        self.metrics.error(reason);
        if self.state.swap(STATE_DOWN, Ordering::AcqRel) != STATE_DOWN {
            self.metrics.up.set(0);
            tracing::warn!(
                reason = reason.as_str(),
                retry = %humantime::format_duration(self.retry_interval),
                "task store unavailable: responses are judged with local memory"
            );
        }
        self.start_probe();
    }

    /// Starts the probe unless one is running. It runs the judge script on a key of its own
    /// (so a Redis that answers PING but refuses writes or scripts stays down) every
    /// `retry_interval` until it succeeds.
    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(probe(Arc::downgrade(self)));
    }

    /// `<key_prefix><route>:<model fingerprint>:<task id>`; route names are `[a-z0-9_]+`, so
    /// the first two colons after the prefix are unambiguous whatever the id holds.
    fn key(&self, route: &str, task_id: &str) -> Vec<u8> {
        let mut key = String::with_capacity(
            self.prefix.len() + route.len() + self.fingerprint.len() + task_id.len() + 2,
        );
        key.push_str(&self.prefix);
        key.push_str(route);
        key.push(':');
        key.push_str(&self.fingerprint);
        key.push(':');
        key.push_str(task_id);
        key.into_bytes()
    }

    /// The names of a route's indexes before and after `polled` or `stalled.<stage>`:
    /// `<key_prefix><route>.` and `:<fingerprint>`. Route names have no '.', so no task key
    /// (`<key_prefix><route>:...`) starts like an index.
    fn index_names(&self, route: &str) -> (String, String) {
        (
            format!("{}{route}.", self.prefix),
            format!(":{}", self.fingerprint),
        )
    }

    /// The probe's own key: no route is called `probe:`-anything, as route names have no colon.
    fn probe_key(&self) -> String {
        format!("{}probe", self.prefix)
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its URL may carry a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("fingerprint", &self.fingerprint)
            .field("timeout", &self.timeout)
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Retries the store every `retry_interval` until a judge call on the probe key succeeds.
async fn probe(store: Weak<RedisStore>) {
    loop {
        let Some(store) = store.upgrade() else {
            return;
        };
        let deadline = Instant::now() + store.connect_timeout + store.timeout;
        // A record with no known field, on a key of its own: the whole path of a response.
        let mut call = store.judge.prepare_invoke();
        call.arg(store.ttl_ms)
            .arg(store.failed_rank)
            .arg(0)
            .arg(0)
            // No clock, no limits, no indexes: the probe's key is no task.
            .arg(0)
            .arg("1")
            .arg("")
            .arg("")
            .arg("")
            .arg(0)
            .key(store.probe_key())
            .arg(UNKNOWN)
            .arg(UNKNOWN)
            .arg("")
            .arg(0);
        let answered: Option<Vec<Option<String>>> = store.call(&call, deadline).await;
        if answered.is_some() {
            store.probing.store(false, Ordering::Release);
            // A response that failed between the success and the line above found the probe
            // still running and started none: carry on for it.
            if store.state.load(Ordering::Acquire) != STATE_DOWN
                || store.probing.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
        let pause = store.retry_interval;
        drop(store);
        tokio::time::sleep(pause).await;
    }
}

/// Which `reason` a client error counts under.
fn reason(err: &RedisError) -> StoreErrorReason {
    if err.is_timeout() {
        return StoreErrorReason::Timeout;
    }
    if matches!(err.kind(), ErrorKind::AuthenticationFailed)
        || matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
    {
        return StoreErrorReason::Auth;
    }
    match err.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => StoreErrorReason::Reply,
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreErrorReason::Protocol,
        _ => StoreErrorReason::Connection,
    }
}

/// The judge script's answer: a value read (or nil), a value stored and the activity, per
/// record.
fn parse_exchange(reply: Vec<Option<String>>, records: usize) -> Option<Vec<Exchanged>> {
    if reply.len() != 3 * records {
        return None;
    }
    let mut out = Vec::with_capacity(records);
    let mut reply = reply.into_iter();
    while let (Some(prev), Some(stored), Some(activity)) =
        (reply.next(), reply.next(), reply.next())
    {
        out.push(Exchanged {
            // A value the script read but this build cannot is a task starting afresh.
            prev: prev.as_deref().and_then(decode),
            stored: stored?,
            activity: parse_activity(&activity?)?,
        });
    }
    Some(out)
}

/// `<stalled in stage>,<recovered from stage>,<left stage>,<ms in it>`, each empty if not.
fn parse_activity(text: &str) -> Option<Activity> {
    let mut fields = text.split(',');
    let mut code = || -> Option<Option<u16>> {
        match fields.next()? {
            "" => Some(None),
            code => code.parse().ok().map(Some),
        }
    };
    let (stalled, recovered, left) = (code()?, code()?, code()?);
    let left = match (left, fields.next()?) {
        (Some(stage), ms) => Some((stage, ms.parse().ok()?)),
        (None, _) => None,
    };
    Some(Activity {
        stalled,
        recovered,
        left,
    })
}

/// `stored` (a value the judge script wrote) with `memory` in place of its state: its
/// timestamps stay. `None` if `stored` is not a value of ours.
pub(crate) fn restate(stored: &str, memory: &Snapshot) -> Option<String> {
    let mut parts = stored.splitn(7, ':');
    let (_, _) = (parts.next()?, parts.next()?);
    let times: Vec<&str> = parts.by_ref().take(4).collect();
    parts.next()?;
    let mut value = format!("{}:{}:{}:", memory.stage, memory.status, times.join(":"));
    if !memory.progress.is_nan() {
        // `Display` of an f64 is the shortest text that parses back to the same number.
        let _ = write!(value, "{}", memory.progress);
    }
    Some(value)
}

fn encode_progress(progress: f64) -> String {
    if progress.is_nan() {
        String::new()
    } else {
        progress.to_string()
    }
}

/// The state in a value: `<stage>:<status>:<first>:<changed>:<since>:<stalled>:<progress>`,
/// progress empty when never sent. `None` for anything else.
pub(crate) fn decode(value: &str) -> Option<Snapshot> {
    let mut parts = value.splitn(7, ':');
    let code = |part: Option<&str>| -> Option<u16> {
        let part = part?;
        // Digits only, as the script reads them (`u16::from_str` would also take a '+').
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let stage = code(parts.next())?;
    let status = code(parts.next())?;
    for _ in 0..3 {
        let time = parts.next()?;
        if time.is_empty() || !time.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    if !matches!(parts.next()?, "0" | "1") {
        return None;
    }
    let progress = match parts.next()? {
        "" => f64::NAN,
        text => text.parse().ok().filter(|p: &f64| p.is_finite())?,
    };
    Some(Snapshot {
        stage,
        status,
        progress,
    })
}

/// The times in a value (first, changed, stage since, in Unix ms) and its stalled flag.
pub(crate) fn decode_times(value: &str) -> Option<([u64; 3], bool)> {
    let mut parts = value.splitn(7, ':').skip(2);
    let mut time = || -> Option<u64> { parts.next()?.parse().ok() };
    let times = [time()?, time()?, time()?];
    let stalled = parts.next()? == "1";
    Some((times, stalled))
}

/// FNV-1a (32 bits) of the model's stages, failed stage and statuses: the names the codes in
/// the values point to. Stable across builds and platforms, unlike `std`'s hashers.
fn fingerprint(model: &ModelConfig) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(FORMAT);
    for stage in &model.stages {
        feed(stage.as_bytes());
        feed(b"\n");
    }
    feed(b"\x00");
    feed(model.failed_stage.as_bytes());
    feed(b"\x00");
    for status in &model.statuses {
        feed(status.as_bytes());
        feed(b"\n");
    }
    hash
}
