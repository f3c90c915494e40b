//! consistency-sidecar: a reverse proxy that keeps task-status responses from contradicting themselves.
//!
//! # Layout
//! - `cli`: the subcommands composed into one clap parser, and dispatch.
//! - `commands`: one module per subcommand (`run`, `check-config`, `inspect`, `report`,
//!   `demo`), each with its arguments and its `run()`.
//! - `config`: the TOML schema; the shipped `config/sidecar.toml` is the defaults.
//! - `settings`: the configuration validated and compiled once at start (rules, routes).
//! - `logging`: `tracing` subscriber, `RUST_LOG`, text or JSON.
//! - `memory_budget`: the worst-case memory of a configuration, term by term (`check-config`).
//! - `engine`: the pure inspection engine: JSON bytes and rules in, verdict and patched bytes out.
//! - `evidence`: per route and rule, the newest inconsistent records, bounded, for `/evidence`.
//! - `redact`: configured keys and pointers hashed before a value leaves the process.
//! - `capture`: NDJSON of inspected responses, written off the response path, for `replay`.
//! - `inspection`: the tower layer that runs the engine on responses in flight, with metrics.
//! - `tracker`: task memory across polls (local, or Redis shared by replicas), judging each response against what was last sent for the task.
//! - `routes`: each configured route compiled into one `Route` (matcher and engine spec), and
//!   classification of requests (`other` when none matches).
//! - `metrics`: the registry each layer registers its own families into, build info, encoding.
//! - `proxy`: the forwarding path: route classification, request metrics, load shedding, header
//!   rewriting, the upstream connection pool, upgrades.
//! - `stack`: the tower stack (`app`) and the state every worker shares, one generation per configuration.
//! - `reload`: hot reload (SIGHUP, `POST /-/reload`, `watch_config`): validate, keep restart-only keys, swap.
//! - `runtime`: worker threads, each with a single-threaded runtime.
//! - `clock`: milliseconds since a start, and a lock-free "last seen" instant.
//! - `coding`: content codings (gzip, deflate, br, zstd): decoding within a bound, re-encoding.
//! - `admin`: the admin port's service: `/healthz`, `/readyz`, `/metrics`, `/report`, the status page.
//! - `server`: the proxy and admin listeners, connections, signals, upkeep, graceful shutdown.
//! - `report`: the consistency report (seed layout), text and JSON, and the status behind `/report.json`.
#![forbid(unsafe_code)]

/// Any error, boxed: what hyper, tower and the body types carry. Defined once, here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub mod admin;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod coding;
pub mod commands;
pub mod config;
pub mod engine;
pub mod evidence;
pub mod inspection;
pub mod logging;
pub mod memory_budget;
pub mod metrics;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod report;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod stack;
pub mod tracker;
