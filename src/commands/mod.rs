//! The subcommands: each module holds its `clap::Args` and its `run()`, which returns the exit
//! status. `cli` only composes them; nothing here imports `cli`.
//!
//! - `run`: the proxy (the default command).
//! - `check_config`: validate a file and print the effective configuration.
//! - `inspect`: the engine on one body from a file or stdin.
//! - `replay`: captures and HAR files through two configurations, and where they differ.
//! - `report`: the report of a running sidecar, fetched from its admin port.
//! - `demo`: a stand-in backend, the sidecar and polling clients, in one process.
//! - `admin_client`: the small HTTP GET behind `report` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::ConfigError;

mod admin_client;
pub mod check_config;
pub mod demo;
pub mod inspect;
pub mod replay;
pub mod report;
pub mod run;

/// Exit code for bad flags or configuration (sysexits' EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// `--config`, shared by the commands that read a configuration.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// TOML configuration file; without it the built-in defaults (legacy backend) apply.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "CONSISTENCY_SIDECAR_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
}

/// Writes `text` to standard output. A reader that has gone (`check-config | head`) is not an
/// error, as with any Unix filter; another failure is reported on one line.
fn print_stdout(text: &str) {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("consistency-sidecar: cannot write output: {err}");
        }
        _ => {}
    }
}

/// Reports a bad configuration or flag as one line and exits with [`EX_USAGE`].
fn usage_error(err: &ConfigError) -> ExitCode {
    eprintln!("consistency-sidecar: {err}");
    ExitCode::from(EX_USAGE)
}
