//! Finding the external tools tests need: the one skip-unless-CI rule of the suite. Standard
//! library only, so the crate's unit tests include this file too (`#[path]`).

use std::path::PathBuf;

/// Whether this run is CI (`CI=true`), where every tool the tests need must be installed.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// An external program on PATH (or in /usr/bin, /usr/sbin, where Debian puts them), if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/sbin".into());
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds an external program the test needs ([`on_path`]).
///
/// The one skip-unless-CI rule of the suite: a missing tool fails the test when `CI=true`
/// (`.ci/run` installs every tool the tests use); elsewhere the test notes why on stderr and
/// returns early, as in `let Some(python) = tool("python3") else { return };`.
pub fn tool(name: &str) -> Option<PathBuf> {
    if let Some(found) = on_path(name) {
        return Some(found);
    }
    assert!(
        !in_ci(),
        "`{name}` not found on PATH, and CI=true: CI must install it (see .ci/run)"
    );
    eprintln!("SKIPPED: `{name}` not found on PATH (set CI=true to make this a failure)");
    None
}
