//! The `consistency-sidecar` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = match consistency_sidecar::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage = err.use_stderr();
            let _ = err.print();
            // --help and --version are not errors; bad flags are usage errors (64).
            return if usage {
                std::process::ExitCode::from(consistency_sidecar::commands::EX_USAGE)
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    consistency_sidecar::cli::dispatch(cli)
}
