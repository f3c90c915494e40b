//! Placeholder until the proxy core lands: the demo.

use std::process::ExitCode;

pub fn run(_args: &crate::cli::DemoArgs) -> ExitCode {
    ExitCode::FAILURE
}
