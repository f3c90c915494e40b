//! The command line: the subcommands composed into one parser, and dispatch to their `run()`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::check_config::CheckConfigArgs;
use crate::commands::demo::DemoArgs;
use crate::commands::inspect::InspectArgs;
use crate::commands::replay::ReplayArgs;
use crate::commands::report::ReportArgs;
use crate::commands::run::RunArgs;
use crate::commands::{check_config, demo, inspect, replay, report, run};

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
    CheckConfig(CheckConfigArgs),
    /// Inspect one JSON body from a file or stdin and print the verdict as JSON.
    ///
    /// Exit status: 0 consistent, 1 issues found, 2 unreadable input.
    Inspect(InspectArgs),
    /// Fetch the consistency report from a running sidecar's admin port.
    Report(ReportArgs),
    /// Show the whole story in a few seconds: a built-in stand-in of the legacy backend that
    /// injects inconsistencies, the sidecar in front of it, and polling clients; then the report.
    Demo(DemoArgs),
    /// Replay captures or HAR files through a configuration (and another, with `--against`),
    /// and show per route and rule what each does and which tasks would be sent other bytes.
    ///
    /// Exit status: 0 the same bytes, 1 they differ, 2 unreadable input.
    Replay(ReplayArgs),
}

/// Runs the parsed command; the returned code is the process's exit status.
pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        None => run::run(&cli.run),
        Some(Command::Run(args)) => run::run(&args),
        Some(Command::CheckConfig(args)) => check_config::run(&args),
        Some(Command::Inspect(args)) => inspect::run(&args),
        Some(Command::Report(args)) => report::run(&args),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::Replay(args)) => replay::run(&args),
    }
}
