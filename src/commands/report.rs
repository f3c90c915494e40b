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
}

/// Prints `/report` (or `/report.json`); exits 1 when the sidecar cannot be reached.
pub fn run(args: &ReportArgs) -> ExitCode {
    let path = if args.json { "/report.json" } else { "/report" };
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    match admin_client::get_text(&url) {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("consistency-sidecar: cannot fetch {url}: {err}");
            ExitCode::FAILURE
        }
    }
}
