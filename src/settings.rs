//! The configuration compiled once at start: typed values, compiled rules and routes.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::engine::{RouteSpec, RuleSet};
use crate::routes::RouteTable;

/// Everything the running sidecar needs, compiled from a validated [`Config`].
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    /// `config.routes` compiled for matching, in the same order.
    pub routes: RouteTable,
    /// The rules, compiled.
    pub rules: Arc<RuleSet>,
    /// `config.routes` compiled for the engine, in the same order.
    pub route_specs: Vec<RouteSpec>,
}

impl Settings {
    pub fn compile(config: Config) -> Result<Settings, ConfigError> {
        config.validate()?;
        let routes = RouteTable::compile(&config.routes)?;
        let rules = Arc::new(RuleSet::compile(&config.model, &config.rules)?);
        let route_specs = RouteSpec::compile_all(&config.routes, &config.fields, config.mode)?;
        Ok(Settings {
            config,
            routes,
            rules,
            route_specs,
        })
    }
}
