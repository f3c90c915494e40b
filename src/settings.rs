//! The configuration compiled once at start: typed values, compiled rules and routes.

use crate::config::{Config, ConfigError};

/// Everything the running sidecar needs, compiled from a validated [`Config`].
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
}

impl Settings {
    pub fn compile(config: Config) -> Result<Settings, ConfigError> {
        config.validate()?;
        Ok(Settings { config })
    }
}
