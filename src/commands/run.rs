//! `consistency-sidecar run` (the default command): load the configuration, apply the flags,
//! and serve until a signal.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{usage_error, ConfigArgs};
use crate::config::{self, Config, ConfigError, LogFormat, Upstream};
use crate::engine::Mode;
use crate::settings::Settings;

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address clients connect to [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The legacy backend's base URL [default: http://127.0.0.1:5000].
    /// Read as text and parsed with the file's rules, so a refused URL is never echoed back:
    /// it may carry a password.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Admin address for /healthz, /readyz, /metrics and /report [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// `fix` patches inconsistent responses; `observe` only counts them [default: fix].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Log format; `RUST_LOG` sets the filter [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Reload when the config file's content changes (checked every 2s), as a Kubernetes
    /// ConfigMap changes under a running pod. SIGHUP and `POST /-/reload` on the admin port
    /// reload in any case [default: the file's `watch_config`, false].
    #[arg(long)]
    pub watch_config: bool,
}

/// `--mode`: the engine's [`Mode`], spelt for clap (the engine does not know clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(name = "MODE")]
pub enum ModeArg {
    Fix,
    Observe,
}

/// `--log-format`: the configuration's [`LogFormat`], spelt for clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

// === impl RunArgs ===

impl RunArgs {
    /// Loads the file (or the defaults) and applies the command-line overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = config::load(self.config.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(upstream) = &self.upstream {
            config.upstream = upstream
                .parse::<Upstream>()
                .map_err(|problem| ConfigError::new("--upstream", problem))?;
        }
        if let Some(admin) = self.admin_listen {
            config.admin_listen = admin;
        }
        if let Some(mode) = self.mode {
            config.mode = match mode {
                ModeArg::Fix => Mode::Fix,
                ModeArg::Observe => Mode::Observe,
            };
        }
        if self.watch_config {
            config.watch_config = true;
        }
        if let Some(format) = self.log_format {
            config.log_format = match format {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        Ok(config)
    }
}

/// Runs the proxy until SIGTERM/SIGINT.
pub fn run(args: &RunArgs) -> ExitCode {
    let settings = match args.load().and_then(Settings::compile) {
        Ok(settings) => settings,
        Err(err) => return usage_error(&err),
    };
    crate::logging::init(settings.config.log_format);
    let reload_args = args.clone();
    let source = crate::reload::ConfigSource {
        path: args.config.config.clone(),
        load: std::sync::Arc::new(move || reload_args.load()),
    };
    match crate::server::run_until_signal(settings, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "sidecar stopped");
            eprintln!("consistency-sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}
