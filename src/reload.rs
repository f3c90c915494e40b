//! Hot reload: read the configuration file again, validate it in full, and swap it in
//! atomically, as nginx `reload` and Prometheus `POST /-/reload` do.
//!
//! Triggered by SIGHUP, by `POST /-/reload` on the admin port, and (with `watch_config`) by a
//! change of the file's content. An invalid file changes nothing: the reload fails with one line
//! naming the key. Keys that cannot change without a restart keep their running value, and the
//! reload names them. Task memory and counters live outside a configuration, so they survive.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::{Config, ConfigError};
use crate::report::ConfigStatus;
use crate::settings::Settings;
use crate::stack::Sidecar;

/// How often `watch_config` looks at the file.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// How long a changed file must stay the same before `watch_config` reloads it.
const SETTLE: Duration = Duration::from_millis(200);

/// Where the configuration comes from: the file (if any) and how to turn it into a `Config`
/// (the command line's overrides included).
#[derive(Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub load: Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// Reloads the sidecar's configuration; one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    sidecar: Arc<Sidecar>,
    source: ConfigSource,
    metrics: ReloadMetrics,
    last: Mutex<ConfigStatus>,
}

#[derive(Debug)]
struct ReloadMetrics {
    successful: IntGauge,
    success_timestamp: Gauge,
    reloads: IntCounterVec,
}

// === impl ConfigSource ===

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// === impl Reloader ===

impl Reloader {
    /// Registers `consistency_config_last_reload_successful`,
    /// `consistency_config_last_reload_success_timestamp_seconds` and
    /// `consistency_config_reloads_total{result}`.
    pub fn new(
        sidecar: Arc<Sidecar>,
        source: ConfigSource,
        registry: &Registry,
    ) -> prometheus::Result<Reloader> {
        let successful = IntGauge::new(
            "consistency_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1 before any reload).",
        )?;
        let success_timestamp = Gauge::new(
            "consistency_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or reload), Unix time.",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "consistency_config_reloads_total",
                "Configuration reloads, by result (success or failure).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(successful.clone()))?;
        registry.register(Box::new(success_timestamp.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        successful.set(1);
        success_timestamp.set(unix_now() as f64);
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        Ok(Reloader {
            sidecar,
            source,
            metrics: ReloadMetrics {
                successful,
                success_timestamp,
                reloads,
            },
            last: Mutex::new(ConfigStatus::default()),
        })
    }

    /// Reads, validates and swaps in the configuration. `Err` is the one line that says why
    /// nothing changed.
    pub fn reload(&self, trigger: &str) -> Result<ConfigStatus, String> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.last_reload_at_unix = Some(unix_now());
        let running = self.sidecar.current().settings.clone();
        let outcome = (self.source.load)().and_then(|mut config| {
            let unchanged = keep_restart_only(&running.config, &mut config);
            Settings::compile(config).map(|settings| (settings, unchanged))
        });
        match outcome {
            Ok((settings, unchanged)) => {
                self.sidecar.swap(Arc::new(settings));
                self.metrics.successful.set(1);
                self.metrics.success_timestamp.set(unix_now() as f64);
                self.metrics.reloads.with_label_values(&["success"]).inc();
                last.last_reload_successful = Some(true);
                last.last_error = None;
                last.reloads_succeeded += 1;
                if unchanged.is_empty() {
                    tracing::info!(trigger, "configuration reloaded");
                } else {
                    tracing::warn!(
                        trigger,
                        unchanged = %unchanged.join(", "),
                        "configuration reloaded; these keys need a restart and keep their running value"
                    );
                }
                last.unchanged_keys = unchanged.iter().map(|k| k.to_string()).collect();
                Ok(last.clone())
            }
            Err(err) => {
                let line = err.to_string();
                self.metrics.successful.set(0);
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                last.last_reload_successful = Some(false);
                last.last_error = Some(line.clone());
                last.reloads_failed += 1;
                tracing::error!(
                    trigger,
                    "configuration reload failed, nothing changed: {line}"
                );
                Err(line)
            }
        }
    }

    /// The last reload, for `/report.json`.
    pub fn last(&self) -> ConfigStatus {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// With `watch_config`, reloads whenever the file's content changes; runs until dropped.
    pub async fn watch(self: Arc<Self>) {
        let Some(path) = self.source.path.clone() else {
            return;
        };
        let mut seen = tokio::fs::read(&path).await.ok();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = tokio::fs::read(&path).await.ok();
            // A file being replaced may be briefly missing: wait for it to be back.
            if now.is_none() || now == seen {
                continue;
            }
            // A tool that truncates and then writes may be caught mid-write: reload only once
            // two reads a moment apart agree.
            tokio::time::sleep(SETTLE).await;
            if tokio::fs::read(&path).await.ok() != now {
                continue;
            }
            seen = now;
            let _ = self.reload("file changed");
        }
    }
}

/// Keeps every key a running sidecar cannot change (its sockets, its threads, what was sized or
/// connected at start) at its running value in `next`; returns the keys that differed.
fn keep_restart_only(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+) => {{
            let differs = serde_json::to_value(&running.$($field).+).ok()
                != serde_json::to_value(&next.$($field).+).ok();
            if differs {
                next.$($field).+ = running.$($field).+.clone();
                kept.push(stringify!($($field).+));
            }
        }};
    }
    keep!(listen);
    keep!(admin_listen);
    keep!(upstream);
    keep!(log_format);
    keep!(watch_config);
    keep!(proxy.workers);
    keep!(proxy.connect_timeout);
    keep!(proxy.client_header_timeout);
    keep!(proxy.client_idle_timeout);
    keep!(proxy.max_header_bytes);
    keep!(proxy.max_client_connections);
    keep!(proxy.max_headers);
    keep!(proxy.upstream_idle_timeout);
    keep!(proxy.upstream_max_idle);
    keep!(proxy.upstream_max_connections);
    keep!(proxy.max_concurrent_requests);
    keep!(proxy.shutdown_grace);
    keep!(inspect.max_held_bytes);
    keep!(inspect.recent_issues);
    keep!(model);
    keep!(tracker.capacity);
    keep!(tracker.max_task_id_bytes);
    keep!(tracker.ttl);
    keep!(tracker.store);
    keep!(tracker.redis_url);
    keep!(tracker.redis_ca_file);
    keep!(tracker.redis_username);
    keep!(tracker.redis_password_file);
    keep!(tracker.redis_password_env);
    keep!(tracker.key_prefix);
    keep!(tracker.timeout);
    keep!(tracker.connect_timeout);
    keep!(tracker.retry_interval);
    keep!(evidence.entries_per_rule);
    keep!(evidence.bytes_per_rule);
    keep!(redaction.key_file);
    keep!(capture);
    kept
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    //! Unit tests for the restart-only keys.

    use super::*;

    #[test]
    fn restart_only_keys_keep_their_running_value_and_are_named() {
        let running = Config::default();
        let mut next = Config {
            listen: "127.0.0.1:1".parse().expect("addr"),
            ..Config::default()
        };
        next.proxy.workers = 7;
        next.model.stages.push("extra".into());
        next.inspect.max_body_bytes = 1234;
        next.tracker.rules.stage_regression.enabled = false;
        let kept = keep_restart_only(&running, &mut next);
        assert_eq!(kept, ["listen", "proxy.workers", "model"]);
        assert_eq!(next.listen, running.listen);
        assert_eq!(next.proxy.workers, running.proxy.workers);
        assert_eq!(next.model.stages, running.model.stages);
        // Reloadable keys take their new value: the transition rules are swapped in the memory.
        assert_eq!(next.inspect.max_body_bytes, 1234);
        assert!(!next.tracker.rules.stage_regression.enabled);
    }
}
