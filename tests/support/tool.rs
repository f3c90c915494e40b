//! Whether a test's external tool is there. Standard library only: the crate's unit tests
//! include this file too (`#[path]`), so the rule is written once.

use std::process::{Command, Stdio};

/// Whether an external tool is available. Missing with `CI=true` is a failure; otherwise the
/// test is skipped with a note.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required in CI but was not found");
        }
        eprintln!("skipping: {tool} not found");
    }
    found
}
