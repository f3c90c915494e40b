//! Placeholder until in-flight inspection lands: the consistency report.

use std::process::ExitCode;

pub fn print_remote(_args: &crate::cli::ReportArgs) -> ExitCode {
    ExitCode::FAILURE
}
