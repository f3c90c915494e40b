//! `consistency-sidecar report`: fetch the consistency report from a running sidecar.

use std::process::ExitCode;

use clap::Args;

use super::admin_client;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Base URL of the sidecar's admin port.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9464")]
    pub admin: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The admin port's token (`admin.token_file` of the sidecar), sent as a bearer token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// Prints `/report` (or `/report.json`); exits 1 when the sidecar cannot be reached.
pub fn run(args: &ReportArgs) -> ExitCode {
    let path = if args.json { "/report.json" } else { "/report" };
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let token = match &args.token_file {
        None => None,
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => Some(text.trim().to_string()),
            Err(err) => {
                eprintln!("consistency-sidecar: cannot read {}: {err}", file.display());
                return ExitCode::from(64);
            }
        },
    };
    match admin_client::get_text(&url, token.as_deref()) {
        Ok(body) => {
            super::print_stdout(&body);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("consistency-sidecar: cannot fetch {url}: {err}");
            ExitCode::FAILURE
        }
    }
}
