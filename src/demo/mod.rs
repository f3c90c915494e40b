//! Placeholder until in-flight inspection lands: the demo.

use std::process::ExitCode;

pub fn run(_args: &crate::cli::DemoArgs) -> ExitCode {
    ExitCode::FAILURE
}
