//! Command-line interface: clap types, and the glue from a parsed command to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, LogFormat, Mode, Upstream};

/// Exit code for bad flags or configuration (sysexits' EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// A reverse proxy that sits beside the legacy task backend, checks every JSON task-status
/// response against declarative consistency rules, fixes contradictions in flight, and exports
/// Prometheus metrics and a report on an admin port.
#[derive(Debug, Parser)]
#[command(name = "consistency-sidecar", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, which is what runs when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default): listen, forward to the upstream, inspect and fix.
    Run(RunArgs),
    /// Validate the configuration and print the effective config (defaults filled in) as TOML.
    CheckConfig(ConfigArgs),
    /// Inspect one JSON body from a file or stdin and print the verdict as JSON.
    ///
    /// Exit status: 0 consistent, 1 issues found, 2 unreadable input.
    Inspect(InspectArgs),
    /// Fetch the consistency report from a running sidecar's admin port.
    Report(ReportArgs),
    /// Show the whole story in a few seconds: a built-in stand-in of the legacy backend that
    /// injects inconsistencies, the sidecar in front of it, and polling clients; then the report.
    Demo(DemoArgs),
}

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

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address clients connect to [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The legacy backend's base URL [default: http://127.0.0.1:5000].
    #[arg(long, value_name = "URL")]
    pub upstream: Option<Upstream>,
    /// Admin address for /healthz, /readyz, /metrics and /report [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// `fix` patches inconsistent responses; `observe` only counts them [default: fix].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Log format; `RUST_LOG` sets the filter [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl RunArgs {
    /// Loads the file (or defaults) and applies the command-line overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = config::load(self.config.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(upstream) = &self.upstream {
            config.upstream = upstream.clone();
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = admin;
        }
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Route whose record pointer, fields and mode apply [default: the first route].
    #[arg(long, value_name = "NAME")]
    pub route: Option<String>,
    /// Print only the patched body instead of the verdict.
    #[arg(long)]
    pub fixed: bool,
    /// The JSON body; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Base URL of the sidecar's admin port.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9464")]
    pub admin: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the simulated clients poll.
    #[arg(long, value_name = "DURATION", default_value = "6s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Share of responses the stand-in backend makes inconsistent (0..=1).
    #[arg(long, value_name = "RATE", default_value_t = 0.05)]
    pub inject_rate: f64,
    /// Simulated polling clients.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub clients: usize,
    /// Keep serving after the summary until Ctrl-C, so the metrics and report URLs can be opened.
    #[arg(long)]
    pub keep_running: bool,
}

/// Runs the parsed command; the returned code is the process's exit status.
pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Inspect(args)) => crate::inspect_cmd::run(&args),
        Some(Command::Report(args)) => crate::report::print_remote(&args),
        Some(Command::Demo(args)) => crate::demo::run(&args),
    }
}

fn usage_error(err: &ConfigError) -> ExitCode {
    eprintln!("consistency-sidecar: {err}");
    ExitCode::from(EX_USAGE)
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    match config::load(args.config.as_deref()).and_then(crate::settings::Settings::compile) {
        Ok(settings) => {
            print!("{}", settings.config.to_toml());
            ExitCode::SUCCESS
        }
        Err(err) => usage_error(&err),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let settings = match args.load().and_then(crate::settings::Settings::compile) {
        Ok(settings) => settings,
        Err(err) => return usage_error(&err),
    };
    crate::logging::init(settings.config.log_format);
    match crate::server::run_until_signal(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "sidecar stopped");
            eprintln!("consistency-sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}
