//! The cap on a port's open client connections, the way nginx keeps `worker_connections`: at
//! the cap, the connection idle the longest (between requests, nothing in flight) is asked to
//! finish so the new client is served; a connection with a request in flight is never cut.
//! When nothing is idle the accept loop waits for a connection to end, and the kernel's backlog
//! holds the clients that arrive meanwhile.
//!
//! One [`ConnectionLimit`] per port, shared by every worker of that port: the cap bounds the
//! process's memory, not one thread's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::Notify;

use super::deadlines::Deadlines;

/// At the cap with nothing idle, how often to look again: a connection may have become idle
/// (its response ended) without ending.
const RECHECK: Duration = Duration::from_millis(50);

/// "Cap reached" is logged at most once per this window, however many clients hit it.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The connection families, registered once for both ports.
#[derive(Debug, Clone)]
pub(super) struct ConnectionFamilies {
    open: IntGaugeVec,
    limit: IntGaugeVec,
    closed: IntCounterVec,
    cap_reached: IntCounterVec,
}

/// One port's cap; cloned into each worker.
#[derive(Debug, Clone)]
pub(super) struct ConnectionLimit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    port: &'static str,
    limit: usize,
    state: Mutex<State>,
    /// Woken when a connection ends, so a waiting accept takes its place.
    ended: Notify,
    open: IntGauge,
    reclaimed_longest_idle: IntCounter,
    reclaimed_idle_timeout: IntCounter,
    cap_reached: IntCounter,
}

#[derive(Debug, Default)]
struct State {
    /// Every open connection's clock, by a number of its own.
    open: HashMap<u64, Arc<Deadlines>>,
    next_id: u64,
    /// When "cap reached" was last logged.
    logged: Option<Instant>,
}

/// One connection's place under the cap; given back when dropped.
#[derive(Debug)]
pub(super) struct Place {
    id: u64,
    deadlines: Arc<Deadlines>,
    shared: Arc<Shared>,
}

// === impl ConnectionFamilies ===

impl ConnectionFamilies {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<ConnectionFamilies> {
        let open = IntGaugeVec::new(
            Opts::new(
                "consistency_connections_open",
                "Client connections open, by port (proxy or admin).",
            ),
            &["port"],
        )?;
        let limit = IntGaugeVec::new(
            Opts::new(
                "consistency_connections_limit",
                "Client connections open at most, by port (proxy.max_client_connections; 16 for admin).",
            ),
            &["port"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "consistency_connections_reclaimed_total",
                "Idle client connections the server closed, by port and reason: longest_idle (at the cap, to serve a new client) or idle_timeout.",
            ),
            &["port", "reason"],
        )?;
        let cap_reached = IntCounterVec::new(
            Opts::new(
                "consistency_connections_cap_reached_total",
                "New client connections that found their port at its cap.",
            ),
            &["port"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(limit.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(cap_reached.clone()))?;
        Ok(ConnectionFamilies {
            open,
            limit,
            closed,
            cap_reached,
        })
    }

    /// The cap of the port labelled `port`, its series at 0 from the start.
    pub(super) fn limit(&self, port: &'static str, limit: usize) -> ConnectionLimit {
        self.limit
            .with_label_values(&[port])
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        ConnectionLimit {
            shared: Arc::new(Shared {
                port,
                limit: limit.max(1),
                state: Mutex::new(State::default()),
                ended: Notify::new(),
                open: self.open.with_label_values(&[port]),
                reclaimed_longest_idle: self.closed.with_label_values(&[port, "longest_idle"]),
                reclaimed_idle_timeout: self.closed.with_label_values(&[port, "idle_timeout"]),
                cap_reached: self.cap_reached.with_label_values(&[port]),
            }),
        }
    }
}

// === impl ConnectionLimit ===

impl ConnectionLimit {
    /// A place for a connection just accepted: at once under the cap; at the cap, once the
    /// longest-idle connection has made room, or once any connection has ended.
    pub(super) async fn admit(&self) -> Place {
        if let Some(place) = self.try_admit() {
            return place;
        }
        self.shared.cap_reached.inc();
        self.log_cap_reached();
        loop {
            // Created before looking, so an end between the look and the wait is not missed.
            let ended = self.shared.ended.notified();
            if let Some(place) = self.try_admit() {
                return place;
            }
            self.reclaim_longest_idle();
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    fn try_admit(&self) -> Option<Place> {
        let mut state = self.state();
        if state.open.len() >= self.shared.limit {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let deadlines = Deadlines::accepted();
        state.open.insert(id, deadlines.clone());
        self.shared.open.inc();
        Some(Place {
            id,
            deadlines,
            shared: self.shared.clone(),
        })
    }

    /// Asks the connection idle the longest, not asked yet, to finish; none if nothing is idle.
    fn reclaim_longest_idle(&self) {
        let state = self.state();
        let longest = state
            .open
            .values()
            .filter_map(|deadlines| deadlines.idle_since().map(|since| (since, deadlines)))
            .filter(|(_, deadlines)| !deadlines.reclaim_asked())
            .min_by_key(|(since, _)| *since);
        if let Some((_, deadlines)) = longest {
            deadlines.ask_to_reclaim();
            self.shared.reclaimed_longest_idle.inc();
        }
    }

    fn log_cap_reached(&self) {
        let mut state = self.state();
        let now = Instant::now();
        if state
            .logged
            .is_some_and(|at| now.duration_since(at) < LOG_WINDOW)
        {
            return;
        }
        state.logged = Some(now);
        tracing::warn!(
            port = self.shared.port,
            limit = self.shared.limit,
            window = %humantime::format_duration(LOG_WINDOW),
            "client connection cap reached; closing idle connections, longest idle first (logged once per window)"
        );
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state()
    }
}

// === impl Shared ===

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === impl Place ===

impl Place {
    /// The connection's clock, which the cap reads to find idle connections.
    pub(super) fn deadlines(&self) -> &Arc<Deadlines> {
        &self.deadlines
    }

    /// Counts this connection closed for being idle `proxy.client_idle_timeout`.
    pub(super) fn idle_timed_out(&self) {
        self.shared.reclaimed_idle_timeout.inc();
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.shared.state().open.remove(&self.id);
        self.shared.open.dec();
        self.shared.ended.notify_one();
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for the choice of the connection to reclaim.

    use super::*;

    fn limit(n: usize) -> ConnectionLimit {
        let families = ConnectionFamilies::register(&Registry::new()).expect("families register");
        families.limit("proxy", n)
    }

    #[tokio::test]
    async fn the_longest_idle_is_asked_first_and_a_busy_one_never() {
        let limit = limit(3);
        let busy = limit.admit().await;
        let _in_flight = busy.deadlines().request(false);
        let oldest = limit.admit().await;
        drop(oldest.deadlines().request(false));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let newer = limit.admit().await;
        drop(newer.deadlines().request(false));
        limit.reclaim_longest_idle();
        assert!(oldest.deadlines().reclaim_asked());
        assert!(!newer.deadlines().reclaim_asked());
        limit.reclaim_longest_idle();
        assert!(newer.deadlines().reclaim_asked());
        limit.reclaim_longest_idle();
        assert!(!busy.deadlines().reclaim_asked());
        assert_eq!(limit.shared.reclaimed_longest_idle.get(), 2);
    }

    #[tokio::test]
    async fn a_place_given_back_admits_the_waiting_connection() {
        let limit = limit(1);
        let first = limit.admit().await;
        assert!(limit.try_admit().is_none());
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.admit().await.id }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted once the place is free")
            .expect("the task runs");
        assert_eq!(admitted, 1);
        assert_eq!(limit.shared.cap_reached.get(), 1);
    }
}
