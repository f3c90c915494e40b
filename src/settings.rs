//! The configuration validated and compiled once at start: typed values, rules and routes.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::engine::RuleSet;
use crate::redact::Redactor;
use crate::routes::RouteTable;

/// Everything the running sidecar needs, compiled from a [`Config`].
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    /// `config.routes`, each compiled into one [`Route`](crate::routes::Route), in order.
    pub routes: RouteTable,
    /// The rules, compiled.
    pub rules: Arc<RuleSet>,
    /// `[redaction]`, compiled (its key read).
    pub redactor: Arc<Redactor>,
}

// === impl Settings ===

impl Settings {
    /// The one place a configuration is checked: what the compilers cannot see first, then
    /// the routes and the rules as they compile.
    pub fn compile(config: Config) -> Result<Settings, ConfigError> {
        config.validate()?;
        let routes = RouteTable::compile(
            &config.routes,
            &config.fields,
            config.mode,
            config.tracker.max_task_id_bytes,
        )?;
        let rules = Arc::new(RuleSet::compile(&config.model, &config.rules)?);
        let redactor = Arc::new(Redactor::compile(&config.redaction)?);
        Ok(Settings {
            config,
            routes,
            rules,
            redactor,
        })
    }
}
