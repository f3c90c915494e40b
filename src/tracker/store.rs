//! `TaskMemory`, what inspection judges tracked responses with: the local memory, or Redis
//! shared by every replica, with the local memory kept beside it for when Redis fails.
//!
//! The engine is pure and its judge synchronous, while Redis is a round trip away. So with
//! Redis a tracked response goes through the engine twice. The first pass only collects what
//! each tracked record would be judged on; one script call then reads what was last sent for
//! each of those tasks and stores what will be sent now, atomically; the second pass judges
//! against what the call read, exactly as the local memory would. The script predicts the
//! transition fixes the engine applies; in the rare case where a single-record rule vetoes one,
//! a second call puts what was really sent in its place.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::time::Instant;

use super::memory::{RouteMemory, StalledNow, TaskTracker, TaskView};
use super::redis::{self, Candidate, Correction, Exchanged, Holds, RedisStore};
use super::stall::StalledTask;
use super::transition::{Snapshot, Transitions};
use crate::config::TrackerStore;
use crate::engine::{Mode, RecordState, TransitionFinding, TransitionJudge, TransitionKind};
use crate::settings::Settings;

/// The task memory of one sidecar: local, or shared through Redis.
#[derive(Debug)]
pub struct TaskMemory {
    local: TaskTracker,
    shared: Option<Arc<RedisStore>>,
}

/// What the memory needs of one tracked route under one configuration: its key in local
/// memory, its name (part of the Redis keys) and the transition fixes the engine applies on it.
#[derive(Debug, Clone)]
pub struct MemoryRoute {
    id: u16,
    name: Arc<str>,
    holds: Holds,
}

/// Why the shared store did not judge a response: the `reason` label of
/// `consistency_tracker_store_errors_total`. Each one leaves the response to local memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorReason {
    /// No connection: refused, unreachable, dropped.
    Connection,
    /// Redis refused who we are: wrong password or user, or an ACL denying a key or command.
    Auth,
    /// No answer within `tracker.timeout` (connecting included).
    Timeout,
    /// Redis answered with an error (script error, out of memory, read-only replica, ...).
    Reply,
    /// Redis answered something the sidecar cannot read.
    Protocol,
    /// Not tried: the store failed before and has not answered a probe since.
    Down,
}

/// The handles of the store's metric families, resolved once.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Indexed like [`StoreErrorReason::ALL`].
    errors: [IntCounter; StoreErrorReason::ALL.len()],
    /// `consistency_tracker_store_up`.
    pub(crate) up: IntGauge,
}

/// The first pass: collects what each tracked record would be judged on, and finds nothing.
struct Candidates<'a> {
    transitions: &'a Transitions,
    records: Vec<Candidate>,
}

/// The second pass: judges each record against what Redis held for its task, and keeps the
/// local memory up to date as well.
struct Recalled<'a> {
    local: RouteMemory<'a>,
    transitions: &'a Transitions,
    candidates: Vec<Candidate>,
    exchanged: Vec<Exchanged>,
    /// Records judged so far.
    next: usize,
    /// False once a record differs from the first pass (the engine is deterministic, so this
    /// is a safeguard): corrections are then left out, as they could not be matched up.
    in_step: bool,
    /// The record being judged: what it was compared with, and its index if in step.
    judging: (Option<Snapshot>, Option<usize>),
    /// Each task of this body: its memory after its records so far, and the index of its
    /// last record the script wrote.
    tasks: Vec<(String, Snapshot, Option<usize>)>,
    /// What the last `judge` compared with, kept past `remember` for evidence.
    compared: Option<Snapshot>,
}

// === impl TaskMemory ===

impl TaskMemory {
    /// The memory `settings.config.tracker.store` names. Redis is not contacted here.
    pub fn new(settings: &Settings, store_metrics: StoreMetrics) -> TaskMemory {
        let config = &settings.config;
        let mut local = TaskTracker::new(&config.tracker, &config.model);
        let shared = match config.tracker.store {
            TrackerStore::Local => {
                // Local memory is always there.
                store_metrics.up.set(1);
                None
            }
            TrackerStore::Redis => {
                match RedisStore::new(
                    &config.tracker,
                    &config.model,
                    local.transitions(),
                    store_metrics,
                    local.activity().clone(),
                ) {
                    Ok(redis) => {
                        local.set_quiet();
                        Some(Arc::new(redis))
                    }
                    Err(err) => {
                        // `check-config` accepted the URL, so this is not expected.
                        tracing::error!(error = %err, "tracker.redis_url unusable; task memory stays local");
                        None
                    }
                }
            }
        };
        TaskMemory { local, shared }
    }

    /// The memory's view of `settings`' tracked routes, in configuration order (`None` for an
    /// untracked one). Takes the transition rules of `settings`, and forgets the tasks of
    /// routes it no longer has: call it once per configuration, at start and on each reload.
    pub fn configure(&self, settings: &Settings) -> Vec<Option<MemoryRoute>> {
        let config = &settings.config;
        self.local.set_rules(&config.tracker, &config.model);
        let transitions = self.local.transitions();
        let tracked: Vec<&str> = settings
            .routes
            .iter()
            .filter(|route| route.spec().track())
            .map(|route| route.name())
            .collect();
        let mut ids = self.local.assign_routes(&tracked).into_iter();
        self.local.touch_routes(&tracked);
        if let Some(redis) = &self.shared {
            redis.set_routes(&tracked);
        }
        settings
            .routes
            .iter()
            .map(|route| {
                let spec = route.spec();
                if !spec.track() {
                    return None;
                }
                let fix = spec.mode() == Mode::Fix;
                Some(MemoryRoute {
                    id: ids.next()?,
                    name: Arc::from(route.name()),
                    holds: Holds {
                        stage: fix && transitions.fixes(TransitionKind::StageRegression),
                        progress: fix && transitions.fixes(TransitionKind::ProgressRegression),
                    },
                })
            })
            .collect()
    }

    /// The local memory: the whole memory with `store = "local"`, the fallback with Redis.
    pub fn local(&self) -> &TaskTracker {
        &self.local
    }

    /// Periodic upkeep, from one task only: forgets expired and abandoned local tasks, and connects to the
    /// shared store early, or keeps retrying it while it is down.
    pub fn maintain(&self) {
        // Abandonment first: at abandon_after = ttl, the TTL would forget them uncounted.
        self.local.abandon_idle();
        self.local.purge_expired();
        if let Some(redis) = &self.shared {
            redis.maintain(self.local.limits(), self.local.unix_ms());
        }
    }

    /// The stalled tasks now: counted per (route, stage), and the `keep` longest stalled
    /// (at most [`LISTED`](super::stall::LISTED) with Redis). With Redis, as the last upkeep
    /// read them (a second ago at most), or what local memory saw while Redis is down.
    pub fn stalled(&self, keep: usize) -> StalledNow {
        let Some(shared) = self.shared.as_ref().and_then(|redis| redis.stalls()) else {
            return self.local.stalled(keep);
        };
        let now_ms = self.local.unix_ms();
        StalledNow {
            counts: shared.counts,
            oldest: shared
                .oldest
                .into_iter()
                .take(keep)
                .map(|task| StalledTask {
                    route: task.route,
                    task_id: task.task_id,
                    stage: task.stage,
                    progress: task.progress,
                    stalled_for_ms: now_ms.saturating_sub(task.changed_ms),
                    polled_ago_ms: now_ms.saturating_sub(task.polled_ms),
                    tracked_for_ms: now_ms.saturating_sub(task.first_ms),
                })
                .collect(),
        }
    }

    /// What the memory holds for `task_id` on route `route`: with Redis the shared memory (a
    /// finished task has left the poll index: its last poll is then the one this replica
    /// saw, or its last change); local memory when Redis has nothing or fails.
    pub async fn task(&self, route: &str, task_id: &str) -> Option<TaskView> {
        let local = self.local.task(route, task_id);
        let Some(redis) = &self.shared else {
            return local;
        };
        let deadline = Instant::now() + redis.timeout();
        let Some((Some(value), polled)) = redis.read(route, task_id, deadline).await else {
            return local;
        };
        let (memory, (times, stalled)) = (redis::decode(&value)?, redis::decode_times(&value)?);
        let polled = match polled {
            Some(ms) => ms as u64,
            None => local.as_ref().map_or(times[1], |view| view.times[3]),
        };
        Some(TaskView {
            route: route.to_owned(),
            store: "redis",
            state: self.local.transitions().state_of(&memory),
            times: [times[0], times[1], times[2], polled],
            stalled,
        })
    }

    /// Waits for the upkeep's work on the shared store, then runs it once more (nothing
    /// with local memory).
    #[cfg(test)]
    pub(crate) async fn settle(&self) {
        if let Some(redis) = &self.shared {
            redis
                .settle(&self.local.limits(), self.local.unix_ms())
                .await;
        }
    }

    /// Keys of the shared store corrected after the engine vetoed a predicted fix.
    #[cfg(test)]
    pub(crate) fn corrected(&self) -> u64 {
        self.shared.as_ref().map_or(0, |redis| redis.corrected())
    }

    /// Runs `run` (which calls the engine with the judge it is given) for one response of
    /// configured route `route`, and returns its result.
    ///
    /// With local memory `run` runs once. With Redis it runs twice around one round trip;
    /// if Redis fails or does not answer within `tracker.timeout`, the second run judges with
    /// local memory. Either way the wait is at most about `tracker.timeout`.
    pub async fn judged<R>(
        &self,
        route: &MemoryRoute,
        mut run: impl FnMut(&mut dyn TransitionJudge) -> R,
    ) -> R {
        let local = || self.local.judge_for(route.id);
        let Some(redis) = &self.shared else {
            return run(&mut local());
        };
        let (name, holds) = (&*route.name, &route.holds);
        if redis.skipping() {
            return run(&mut local());
        }
        let deadline = Instant::now() + redis.timeout();
        let transitions = self.local.transitions();
        let transitions = &*transitions;
        let mut candidates = Candidates {
            transitions,
            records: Vec::new(),
        };
        let first = run(&mut candidates);
        if candidates.records.is_empty() {
            // No record was judged, so no memory could have changed the result.
            return first;
        }
        drop(first);
        let records = candidates.records;
        // Boxed: the exchange is a large future, and only shared memory waits on it; the local
        // path's future stays small (it is part of every inspected response's).
        let limits = self.local.limits();
        let clock = (&*limits, self.local.unix_ms());
        let Some(exchanged) =
            Box::pin(redis.exchange(name, *holds, &records, clock, deadline)).await
        else {
            return run(&mut local());
        };
        for record in &exchanged {
            self.local.record_shared(name, record.activity);
        }
        let mut judge = Recalled {
            local: local(),
            transitions,
            candidates: records,
            exchanged,
            next: 0,
            in_step: true,
            judging: (None, None),
            tasks: Vec::new(),
            compared: None,
        };
        let result = run(&mut judge);
        let corrections = judge.corrections();
        if !corrections.is_empty() {
            redis.correct(name, &corrections, deadline).await;
        }
        result
    }
}

// === impl StoreErrorReason ===

impl StoreErrorReason {
    pub const ALL: [StoreErrorReason; 6] = [
        StoreErrorReason::Connection,
        StoreErrorReason::Auth,
        StoreErrorReason::Timeout,
        StoreErrorReason::Reply,
        StoreErrorReason::Protocol,
        StoreErrorReason::Down,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorReason::Connection => "connection",
            StoreErrorReason::Auth => "auth",
            StoreErrorReason::Timeout => "timeout",
            StoreErrorReason::Reply => "reply",
            StoreErrorReason::Protocol => "protocol",
            StoreErrorReason::Down => "down",
        }
    }
}

// === impl StoreMetrics ===

impl StoreMetrics {
    /// Registers `consistency_tracker_store_errors_total{reason}` (every reason at 0) and
    /// `consistency_tracker_store_up`.
    pub fn register(registry: &Registry) -> prometheus::Result<StoreMetrics> {
        let errors = IntCounterVec::new(
            Opts::new(
                "consistency_tracker_store_errors_total",
                "Responses the shared task store (Redis) did not judge, left to local memory, by reason.",
            ),
            &["reason"],
        )?;
        let up = IntGauge::new(
            "consistency_tracker_store_up",
            "1 while the task store answers (always with store = \"local\"), else 0.",
        )?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(up.clone()))?;
        Ok(StoreMetrics {
            errors: StoreErrorReason::ALL
                .map(|reason| errors.with_label_values(&[reason.as_str()])),
            up,
        })
    }

    pub(crate) fn error(&self, reason: StoreErrorReason) {
        self.errors[reason as usize].inc();
    }
}

// === impl Candidates ===

impl TransitionJudge for Candidates<'_> {
    fn judge(&mut self, task_id: &str, state: &RecordState) -> Vec<TransitionFinding> {
        let now = self.transitions.snapshot(state);
        self.records.push(Candidate {
            task_id: task_id.to_owned(),
            now,
            failing: self.transitions.is_failing(&now),
        });
        Vec::new()
    }

    fn remember(&mut self, _: &str, _: &RecordState) {}
}

// === impl Recalled ===

impl Recalled<'_> {
    /// Tasks whose value in Redis is not what was sent: the script predicted a fix that a
    /// single-record rule vetoed, or Redis knew nothing and the local memory judged.
    fn corrections(&self) -> Vec<Correction> {
        if !self.in_step || self.next != self.candidates.len() {
            return Vec::new();
        }
        self.tasks
            .iter()
            .filter_map(|(task_id, memory, last)| {
                let stored = &self.exchanged.get((*last)?)?.stored;
                // The timestamps stay as the script wrote them: a vetoed fix is rare, and
                // the next poll judges the change.
                let value = redis::restate(stored, memory)?;
                (value != *stored).then(|| Correction {
                    task_id: task_id.clone(),
                    stored: stored.clone(),
                    value,
                })
            })
            .collect()
    }
}

impl TransitionJudge for Recalled<'_> {
    fn judge(&mut self, task_id: &str, state: &RecordState) -> Vec<TransitionFinding> {
        let index = self.next;
        self.next += 1;
        let in_step = self
            .candidates
            .get(index)
            .is_some_and(|c| c.task_id == task_id);
        self.in_step &= in_step;
        // A task met earlier in this body: what its earlier record left. Otherwise what Redis
        // held; a task Redis does not know (it restarted, or evicted it) falls back to local.
        let before = match self.tasks.iter().find(|(id, _, _)| id == task_id) {
            Some((_, memory, _)) => Some(*memory),
            None => in_step
                .then(|| self.exchanged.get(index).and_then(|e| e.prev))
                .flatten()
                .or_else(|| self.local.recall(task_id)),
        };
        self.judging = (before, in_step.then_some(index));
        self.compared = before;
        match before {
            Some(last) => self
                .transitions
                .judge(&last, &self.transitions.snapshot(state)),
            None => Vec::new(),
        }
    }

    fn remember(&mut self, task_id: &str, sent: &RecordState) {
        self.local.remember(task_id, sent);
        let (before, index) = std::mem::take(&mut self.judging);
        let memory = before
            .unwrap_or(Snapshot::EMPTY)
            .merge(self.transitions.snapshot(sent));
        match self.tasks.iter_mut().find(|(id, _, _)| id == task_id) {
            Some(task) => {
                task.1 = memory;
                task.2 = index.or(task.2);
            }
            None => self.tasks.push((task_id.to_owned(), memory, index)),
        }
    }

    fn compared_with(&self) -> Option<RecordState> {
        Some(self.transitions.state_of(&self.compared?))
    }
}
