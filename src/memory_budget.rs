//! The memory budget: the most a configuration can make the process hold, term by term, from
//! the per-connection and per-task figures measured in BENCHMARKS.md ("Idle connections").
//! `check-config` prints it; the deploy limits (Kubernetes, systemd, Docker) are derived from it
//! and a test keeps them above it. The formula and its measurements are in docs/DESIGN.md.

use std::fmt;

use crate::config::Config;
use crate::engine::SHOWN_TEXT_BYTES;
use crate::server::{ADMIN_MAX_CONNECTIONS, ADMIN_MAX_HEAD_BYTES};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The process with no connection and nothing remembered: code, runtimes, the metric registry,
/// allocator arenas (measured 7 MiB; rounded up for the worker threads' stacks in use).
pub const BASE_BYTES: u64 = 12 * MIB;

/// One idle client keep-alive connection (hyper's 8 KiB read and 8 KiB write buffers, the
/// connection task and our state), measured by `benches/idle_rss.sh`.
pub const CLIENT_CONNECTION_BYTES: u64 = 20 * KIB;

/// One pooled upstream connection: hyper's client buffers and its dispatcher task, about what a
/// client connection costs.
pub const UPSTREAM_CONNECTION_BYTES: u64 = 20 * KIB;

/// One remembered task besides its id: 90 B measured (`cargo run --release --example
/// tracker_memory`), plus the allocator's overhead on the id's own allocation.
pub const TASK_BYTES: u64 = 106;

/// What one worker may hold for one response at a time, outside the held-bytes budget: a
/// decoder's window (brotli's is at most 16 MiB; docs/DESIGN.md, "Content codings") or the
/// engine's patched copy (at most `max_decoded_bytes`, below it by validation), never both:
/// decoding ends before the engine runs, and neither awaits.
const WORKER_TRANSIENT_BYTES: u64 = 16 * MIB;

/// One entry of the report's recent issues besides its cut message and task id.
const RECENT_ISSUE_BYTES: u64 = 256;

/// The status page's ratio history (a fixed ring of samples).
const HISTORY_BYTES: u64 = 16 * KIB;

/// One term of the budget: what it is, the formula with this configuration's numbers, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub name: &'static str,
    pub formula: String,
    pub bytes: u64,
}

/// Every term of the worst case for one configuration and worker count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    pub terms: Vec<Term>,
}

// === impl MemoryBudget ===

impl MemoryBudget {
    /// The worst case of `config` served by `workers` threads (`proxy.workers`, or the cores it
    /// would take with 0).
    pub fn of(config: &Config, workers: usize) -> MemoryBudget {
        let proxy = &config.proxy;
        let inspect = &config.inspect;
        let tracker = &config.tracker;
        let n = |v: usize| v as u64;
        let head = n(proxy.max_header_bytes);
        let clients = n(proxy.max_client_connections);
        let upstreams = clients.min(n(proxy.upstream_max_connections));
        let id = n(tracker.max_task_id_bytes);
        let recent_issue = RECENT_ISSUE_BYTES + n(SHOWN_TEXT_BYTES) + id;
        let worker_transient = WORKER_TRANSIENT_BYTES.max(n(inspect.max_decoded_bytes));
        let terms = vec![
            Term {
                name: "base",
                formula: "measured, no connections".into(),
                bytes: BASE_BYTES,
            },
            Term {
                name: "client connections",
                formula: format!(
                    "max_client_connections {clients} x ({} KiB idle + max_header_bytes {} KiB: a head being read)",
                    CLIENT_CONNECTION_BYTES / KIB,
                    head / KIB
                ),
                bytes: clients * (CLIENT_CONNECTION_BYTES + head),
            },
            Term {
                name: "admin connections",
                formula: format!(
                    "{ADMIN_MAX_CONNECTIONS} x ({} KiB idle + {} KiB head)",
                    CLIENT_CONNECTION_BYTES / KIB,
                    n(ADMIN_MAX_HEAD_BYTES) / KIB
                ),
                bytes: n(ADMIN_MAX_CONNECTIONS)
                    * (CLIENT_CONNECTION_BYTES + n(ADMIN_MAX_HEAD_BYTES)),
            },
            Term {
                name: "upstream connections",
                formula: format!(
                    "min(upstream_max_connections, max_client_connections) {upstreams} x {} KiB",
                    UPSTREAM_CONNECTION_BYTES / KIB
                ),
                bytes: upstreams * UPSTREAM_CONNECTION_BYTES,
            },
            Term {
                name: "held and decoded bodies",
                formula: "max_held_bytes".into(),
                bytes: n(inspect.max_held_bytes),
            },
            Term {
                name: "per worker",
                formula: format!(
                    "workers {workers} x {} MiB: a decoder's window or a patched copy",
                    worker_transient / MIB
                ),
                bytes: n(workers) * worker_transient,
            },
            Term {
                name: "task memory",
                formula: format!(
                    "tracker.capacity {} x ({TASK_BYTES} B + max_task_id_bytes {id} B)",
                    tracker.capacity
                ),
                bytes: n(tracker.capacity) * (TASK_BYTES + id),
            },
            Term {
                name: "report and history",
                formula: format!(
                    "recent_issues {} x {recent_issue} B + ratio history",
                    inspect.recent_issues
                ),
                bytes: n(inspect.recent_issues) * recent_issue + HISTORY_BYTES,
            },
        ];
        MemoryBudget { terms }
    }

    pub fn total(&self) -> u64 {
        self.terms.iter().map(|term| term.bytes).sum()
    }
}

impl fmt::Display for MemoryBudget {
    /// As `check-config` prints it: TOML comments, one term a line, then the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# memory budget, worst case (docs/DESIGN.md, \"Memory budget\"):"
        )?;
        for term in &self.terms {
            writeln!(
                f,
                "#   {:<24} {:>7.1} MiB  {}",
                term.name,
                mib(term.bytes),
                term.formula
            )?;
        }
        writeln!(
            f,
            "#   {:<24} {:>7.1} MiB  set the memory limit above this",
            "total",
            mib(self.total())
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

#[cfg(test)]
mod tests {
    //! Unit tests for the budget's arithmetic.

    use super::*;

    #[test]
    fn the_total_is_the_sum_of_the_terms_and_grows_with_each_bound() {
        let config = Config::default();
        let budget = MemoryBudget::of(&config, 1);
        assert_eq!(
            budget.total(),
            budget.terms.iter().map(|t| t.bytes).sum::<u64>()
        );
        let mut more = config.clone();
        more.proxy.max_client_connections *= 2;
        assert!(MemoryBudget::of(&more, 1).total() > budget.total());
        let mut more = config.clone();
        more.tracker.max_task_id_bytes *= 2;
        assert!(MemoryBudget::of(&more, 1).total() > budget.total());
        assert!(MemoryBudget::of(&config, 2).total() > budget.total());
    }

    #[test]
    fn printed_as_toml_comments_ending_with_the_total() {
        let printed = MemoryBudget::of(&Config::default(), 1).to_string();
        assert!(
            printed.lines().all(|line| line.starts_with('#')),
            "{printed}"
        );
        assert!(printed.lines().last().is_some_and(|l| l.contains("total")));
    }
}
