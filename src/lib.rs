//! consistency-sidecar: a reverse proxy that keeps task-status responses from contradicting themselves.
//!
//! # Layout
//! - `config`: the TOML schema, built-in defaults for the legacy backend, validation.
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
