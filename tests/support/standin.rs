//! The Python peers, standard library only, each on 127.0.0.1:0 and killed on drop: the
//! stand-in of the legacy backend (`tests/standin/legacy_backend.py`) with its ledger of what it
//! injected, and the echo upstream (`tests/upstreams/echo_upstream.py`), an HTTP stack that is
//! not hyper.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::client::get;
use super::process::{in_ci, on_path, tool, Process};
use super::repo;

/// A Python server whose first stdout line is `LISTENING <port>`.
struct PythonServer {
    process: Process,
    addr: SocketAddr,
}

/// A Python 3 that can import Debian's python3-brotli and python3-zstandard. Those install
/// for Debian's own interpreter, which may not be the first `python3` on PATH (pyenv).
fn python_with_codecs() -> Option<PathBuf> {
    let candidates = [on_path("python3"), Some(PathBuf::from("/usr/bin/python3"))];
    let found = candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import brotli, zstandard"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "no python3 imports brotli and zstandard, and CI=true: .ci/run must install \
             python3-brotli and python3-zstandard"
        );
        eprintln!(
            "SKIPPED: no python3 with brotli and zstandard (set CI=true to make this a failure)"
        );
    }
    found
}

impl PythonServer {
    /// `None` when python3 is missing (outside CI).
    async fn start(name: &str, script: &Path, args: &[&str]) -> Option<PythonServer> {
        let python = tool("python3")?;
        PythonServer::start_with(&python, name, script, args).await
    }

    async fn start_with(
        python: &Path,
        name: &str,
        script: &Path,
        args: &[&str],
    ) -> Option<PythonServer> {
        let mut cmd = Command::new(python);
        cmd.arg(script).args(args).current_dir(repo());
        let process = Process::spawn(name, cmd);
        let port: u16 = process
            .wait_for_line("`LISTENING <port>`", |line| {
                line.strip_prefix("LISTENING ")?.trim().parse().ok()
            })
            .await;
        Some(PythonServer {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }
}

/// The stand-in of the legacy backend.
pub struct StandIn {
    server: PythonServer,
}

// === impl StandIn ===

impl StandIn {
    /// Starts the stand-in with `args` (`--inject-rate`, `--seed`, `--encoding`, `--chunked`,
    /// ...); `None` when python3 is missing (outside CI).
    pub async fn start(args: &[&str]) -> Option<StandIn> {
        let script = repo().join("tests/standin/legacy_backend.py");
        let args = [&["--port", "0"], args].concat();
        let server = PythonServer::start("stand-in", &script, &args).await?;
        Some(StandIn { server })
    }

    /// Like [`StandIn::start`], under a Python that can write br and zstd (for `--encoding br`,
    /// `zstd` or `negotiate`); `None` when there is none (outside CI).
    pub async fn start_with_codecs(args: &[&str]) -> Option<StandIn> {
        let python = python_with_codecs()?;
        let script = repo().join("tests/standin/legacy_backend.py");
        let args = [&["--port", "0"], args].concat();
        let server = PythonServer::start_with(&python, "stand-in", &script, &args).await?;
        Some(StandIn { server })
    }

    /// The base URL, the sidecar's upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// What it served and injected, route by route (`GET /__ledger`).
    pub async fn ledger(&self) -> Value {
        let (status, _, body) = get(&format!("{}/__ledger", self.url())).await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).expect("ledger is JSON")
    }
}

/// The echo upstream: fixed, chunked and failing bodies, uploads, and `/echo` of the request
/// head as it arrived (header-name case included).
pub struct EchoUpstream {
    server: PythonServer,
}

// === impl EchoUpstream ===

impl EchoUpstream {
    /// `None` when python3 is missing (outside CI).
    pub async fn start() -> Option<EchoUpstream> {
        let script = repo().join("tests/upstreams/echo_upstream.py");
        let server = PythonServer::start("echo upstream", &script, &[]).await?;
        Some(EchoUpstream { server })
    }

    /// The base URL, the sidecar's upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}
