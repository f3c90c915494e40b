//! consistency-sidecar: a reverse proxy that keeps task-status responses from contradicting themselves.
//!
//! # Layout
//! - `cli`: clap types and dispatch of the subcommands.
//! - `config`: the TOML schema, built-in defaults for the legacy backend, validation.
//! - `settings`: the configuration compiled once at start (rules, routes, typed values).
//! - `logging`: `tracing` subscriber, `RUST_LOG`, text or JSON.
//! - `engine`: the pure inspection engine: JSON bytes and rules in, verdict and patched bytes out.
//! - `inspection`: the tower layer that runs the engine on responses in flight, with metrics.
//! - `inspect_cmd`: the `inspect` subcommand over the engine.
//! - `tracker`: task memory across polls, judging each response against what was last sent for the task; local, or shared by every replica through Redis.
//! - `routes`: matches method + path patterns to configured route names (`other` otherwise).
//! - `metrics`: every metric family, registered into one registry, label sets resolved at start.
//! - `proxy`: the forwarding path: request metrics, load shedding, header rewriting, upstream client, upgrades.
//! - `admin`: the admin port's service: `/healthz`, `/readyz`, `/metrics`, `/report`.
//! - `server`: the proxy and admin listeners, the tower stack, graceful shutdown.
//! - `report`: the consistency report (seed layout), text and JSON.
//! - `admin_client`: a small HTTP GET for the `report` command.
//! - `demo`: the self-contained demo.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_client;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod inspect_cmd;
pub mod inspection;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod report;
pub mod routes;
pub mod server;
pub mod settings;
pub mod tracker;
