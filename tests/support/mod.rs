//! Shared support of every test binary (`mod support;` at the top of a test file).
//!
//! # Layout
//! - [`sidecar`]: [`Sidecar`], the real binary on port 0, addresses read from its log, killed
//!   on drop.
//! - [`upstream`]: [`TestUpstream`], an in-test hyper server that records what reached it, and
//!   bodies with known content ([`PatternBody`], [`FramesBody`], [`Fnv`]).
//! - [`standin`]: the Python peers: [`StandIn`] (the legacy backend, with its ledger) and
//!   [`EchoUpstream`].
//! - [`client`]: the hyper test client ([`get`], [`send`], [`request_on`], ...) and [`raw`] TCP
//!   for the tests about bytes on the wire.
//! - [`scrape`]: [`Scrape`], a `/metrics` answer read with `prometheus-parse`.
//! - [`process`]: [`tool`] (skip, or fail when `CI=true`), [`free_port`], [`run`]/[`run_ok`],
//!   and [`Process`], a child killed on drop whose output the test can wait on.
//! - [`deploy`]: the files under `deploy/`, YAML through `yaml-rust2`.
//! - [`image`]: the container image of `deploy/Dockerfile`, built with buildah on base images
//!   made with mmdebstrap, and run as a pod would run it.
//! - [`browser`]: [`browser::Browser`], a real headless Chromium driven over DevTools.
//!
//! Every wait is bounded by [`PATIENCE`]; reaching it is a failure, not a timing claim.
// Each test binary uses its own share of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod client;
pub mod deploy;
pub mod image;
pub mod process;
pub mod redis_server;
pub mod scrape;
pub mod sidecar;
pub mod standin;
pub mod tool;
pub mod upstream;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use client::*;
pub use process::{free_port, run, run_ok, tool, Process};
pub use scrape::Scrape;
pub use sidecar::Sidecar;
pub use standin::{EchoUpstream, StandIn};
pub use upstream::*;

pub use consistency_sidecar::BoxError;

/// Upper bound for any single wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const MIB: usize = 1024 * 1024;

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `check` every 100 ms until it gives `Some`, or fails naming `what` after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
