//! The configuration validated and compiled once at start: typed values, rules and routes.

use std::sync::Arc;

use crate::admin::AdminToken;
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
    /// The token of `admin.token_file`, read at load (and at every reload, to rotate it).
    pub admin_token: Option<Arc<AdminToken>>,
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
        let admin_token = match config.admin.token_file.as_str() {
            "" => None,
            path => Some(Arc::new(
                AdminToken::read(std::path::Path::new(path))
                    .map_err(|problem| ConfigError::new("admin.token_file", problem))?,
            )),
        };
        Ok(Settings {
            config,
            routes,
            rules,
            redactor,
            admin_token,
        })
    }
}
