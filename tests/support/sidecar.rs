//! [`Sidecar`]: the real `consistency-sidecar` binary on port 0, as every test tier above the
//! stack meets it. Its addresses come from the line it logs once it listens.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};

use http::StatusCode;
use tempfile::NamedTempFile;

use super::client::get;
use super::process::Process;
use super::scrape::Scrape;

/// `RUST_LOG` of [`Sidecar::start`]: quiet, but for the `listening` line the handshake reads.
pub const QUIET: &str = "warn,consistency_sidecar::server=info";

/// The sidecar binary, killed on drop.
pub struct Sidecar {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin port: `/metrics`, `/healthz`, `/readyz`, `/report`.
    pub admin: SocketAddr,
    process: Process,
    // Kept until the process is gone: it reads the file at start and again on every reload.
    config: NamedTempFile,
}

// === impl Sidecar ===

impl Sidecar {
    /// Starts `consistency-sidecar run` in front of `upstream` (a URL such as
    /// `http://127.0.0.1:5000`) with `config` as its TOML file (`""`: the defaults), proxy and
    /// admin on 127.0.0.1:0.
    pub async fn start(upstream: &str, config: &str) -> Sidecar {
        Sidecar::launch(upstream, config, &[], Some(QUIET)).await
    }

    /// Like [`Sidecar::start`], with extra `run` arguments and a `RUST_LOG` filter (`None`: the
    /// binary's default). The filter must let `consistency_sidecar::server`'s info through: the
    /// handshake reads it.
    pub async fn launch(
        upstream: &str,
        config: &str,
        args: &[&str],
        log_filter: Option<&str>,
    ) -> Sidecar {
        let file = tempfile::Builder::new()
            .prefix("sidecar-")
            .suffix(".toml")
            .tempfile()
            .expect("create a temp config file");
        std::fs::write(file.path(), config).expect("write the test config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"));
        cmd.args(["run", "--config"])
            .arg(file.path())
            .args(["--upstream", upstream])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        if let Some(filter) = log_filter {
            cmd.env("RUST_LOG", filter);
        }
        let process = Process::spawn("sidecar", cmd);
        let (addr, admin) = process
            .wait_for_line("its `listening` line", listening)
            .await;
        Sidecar {
            addr,
            admin,
            process,
            config: file,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /metrics` on the admin port, in the Prometheus text format.
    pub async fn metrics(&self) -> Scrape {
        let (status, headers, body) = get(&self.admin_url("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        Scrape::parse(std::str::from_utf8(&body).expect("metrics are UTF-8"))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> Vec<String> {
        self.process.lines()
    }

    /// Waits until it logs a line that `find` accepts (see [`Process::wait_for_line`]).
    pub async fn wait_for_log<T>(&self, what: &str, find: impl FnMut(&str) -> Option<T>) -> T {
        self.process.wait_for_line(what, find).await
    }

    /// Replaces its config file with `config` at once: a new file renamed over the old one, as
    /// an editor saving or a Kubernetes ConfigMap update does, so a reader never sees half a file.
    /// The sidecar reads it on its next reload.
    pub fn rewrite_config(&self, config: &str) {
        let path = self.config.path();
        let dir = path.parent().expect("the config file is in a directory");
        let next = tempfile::Builder::new()
            .prefix("sidecar-next-")
            .suffix(".toml")
            .tempfile_in(dir)
            .expect("create the new config file");
        std::fs::write(next.path(), config).expect("write the new config");
        next.persist(path)
            .expect("rename the new config over the old one");
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGHUP through `kill`: the sidecar reloads its config file.
    pub fn hangup(&self, kill: &Path) {
        self.process.signal(kill, "HUP");
    }

    /// Sends SIGTERM through `kill`; [`Sidecar::exit_status`] then waits for the exit.
    pub fn terminate(&self, kill: &Path) {
        self.process.terminate(kill);
    }

    pub async fn exit_status(&mut self) -> ExitStatus {
        self.process.exit_status().await
    }
}

/// The proxy and admin addresses of the `listening` line, logged as text
/// (`... listening proxy=127.0.0.1:1 admin=127.0.0.1:2 ...`) or as JSON.
fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        if event["message"] != "listening" {
            return None;
        }
        let addr = |key: &str| event[key].as_str()?.parse().ok();
        return Some((addr("proxy")?, addr("admin")?));
    }
    if !line.contains(" listening ") {
        return None;
    }
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .and_then(|a| a.trim_matches('"').parse().ok())
    };
    Some((addr("proxy=")?, addr("admin=")?))
}
