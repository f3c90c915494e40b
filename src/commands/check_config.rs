//! `consistency-sidecar check-config`: validate a configuration and print it in full.

use std::process::ExitCode;

use clap::Args;

use super::{usage_error, ConfigArgs};
use crate::config;
use crate::settings::Settings;

#[derive(Debug, Args, Clone, Default)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Prints the effective configuration (defaults filled in) as TOML; a bad one exits 64.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    match config::load(args.config.config.as_deref()).and_then(Settings::compile) {
        Ok(settings) => {
            print!("{}", settings.config.to_toml());
            ExitCode::SUCCESS
        }
        Err(err) => usage_error(&err),
    }
}
