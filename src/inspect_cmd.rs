//! Placeholder until the engine lands: `consistency-sidecar inspect`.

use std::process::ExitCode;

pub fn run(_args: &crate::cli::InspectArgs) -> ExitCode {
    ExitCode::from(2)
}
