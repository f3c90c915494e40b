//! `TaskTracker`: the sharded, bounded memory of what was sent for each task, per route.

use std::cmp::Ordering as Order;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;

use tokio::time::Instant;

use super::shard::{Changes, Clock, Key, Shard, StalledEntry};
use super::stall::{Activity, ActivityMetrics, StallLimits, StalledTask};
use super::transition::{Snapshot, Transitions};
use crate::config::TrackerConfig;
use crate::engine::{ModelConfig, RecordState, TransitionFinding, TransitionJudge};

/// Most shards; enough that 64 busy threads rarely meet on one lock.
const MAX_SHARDS: usize = 32;
/// Fewest tasks per shard (at full capacity): the victim of an eviction is the least recently
/// seen of its shard, so a shard must hold enough tasks for its oldest to be among the
/// oldest overall. Small capacities get fewer shards (one below 2,048: exact global LRU).
const MIN_PER_SHARD: usize = 1024;
/// Slot indices are `u32` with one value reserved; a larger capacity is clamped to this.
const MAX_CAPACITY: usize = 1 << 31;

/// Why a task was forgotten; `as_str` is the `reason` label of
/// `consistency_tracker_evictions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictionReason {
    /// The tracker was full, and it was the least recently seen task of the shard the new
    /// task went to.
    Capacity,
    /// Not seen for `tracker.ttl`.
    Ttl,
}

/// Memory of the last state sent for each (route, task id), shared by every connection.
///
/// Keys are spread over up to 32 shards by a hash of (route, task id), each a `Mutex` held
/// only inside one `judge` or `remember` call (never across I/O or `.await`). The capacity
/// is global: a new task is admitted while fewer than `capacity` are tracked, otherwise it
/// displaces the least recently seen task of its own shard. With one shard (capacity below
/// 2,048) that is exact LRU; with more, the victim is the oldest of ~1/32 of the tasks, which
/// are spread by hash, so it is among the oldest overall.
pub struct TaskTracker {
    shards: Box<[Padded]>,
    /// Random keys per process: task ids come from responses, so keep them from choosing shards.
    hasher: RandomState,
    /// Swapped by a reload that changes `[tracker.rules]`; the model stays (restart-only).
    transitions: ArcSwap<Transitions>,
    /// Swapped by every reload: the stall limits are reloadable.
    limits: ArcSwap<StallLimits>,
    activity: ActivityMetrics,
    /// Beside a shared store, which judges activity for every replica: this memory then
    /// neither counts activity nor abandons tasks (it sees only this replica's polls).
    quiet: bool,
    /// The Unix time of `epoch`, in ms: the shared store's clock.
    unix_epoch_ms: u64,
    capacity: usize,
    ttl_ms: u64,
    /// Time zero of the entries' `seen_ms`.
    epoch: Instant,
    /// Moves this tracker's clock forward, for tests whose Redis I/O cannot run in paused time.
    #[cfg(test)]
    skew_ms: AtomicU64,
    tracked: AtomicUsize,
    evicted_capacity: AtomicU64,
    evicted_ttl: AtomicU64,
    /// The name of the route each memory id belongs to (`None`: free). A route keeps its id
    /// across reloads wherever it moves in the list: see [`TaskTracker::assign_routes`].
    routes: Mutex<Vec<Option<Box<str>>>>,
}

/// A shard's lock on its own cache lines, so that threads on neighbouring shards do not
/// invalidate each other's.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The tracker as one route's [`TransitionJudge`], for one inspected response.
///
/// The clock is read once, when the response is judged.
#[derive(Debug, Clone, Copy)]
pub struct RouteMemory<'a> {
    tracker: &'a TaskTracker,
    route: u16,
    now_ms: u64,
    /// What the last `judge` compared with.
    compared: Option<Snapshot>,
}

/// What the memory holds for one task, for `/tasks/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub route: String,
    /// `local`, or `redis` when read from the shared memory.
    pub store: &'static str,
    /// The last state sent, as far as the memory keeps it (not `is_completed`).
    pub state: RecordState,
    /// Unix ms: first seen, last change of its state, last change of its stage, last polled.
    pub times: [u64; 4],
    pub stalled: bool,
}

/// The stalled tasks now: how many per (route, stage), and the longest stalled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StalledNow {
    /// (route, stage, tasks), only where there are some.
    pub counts: Vec<(String, String, u64)>,
    /// The longest stalled first, at most as many as asked for.
    pub oldest: Vec<StalledTask>,
}

/// A stalled entry kept while looking for the longest stalled: ordered by when its state last
/// changed, so that a max-heap of them holds the oldest stalls and drops the youngest.
#[derive(Debug)]
struct Oldest {
    changed_ms: u64,
    route: u16,
    id: Box<str>,
    stage: u16,
    progress: f64,
    first_ms: u64,
    seen_ms: u64,
}

// === impl EvictionReason ===

impl EvictionReason {
    pub const ALL: [EvictionReason; 2] = [EvictionReason::Capacity, EvictionReason::Ttl];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictionReason::Capacity => "capacity",
            EvictionReason::Ttl => "ttl",
        }
    }
}

impl fmt::Display for EvictionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TaskTracker ===

impl TaskTracker {
    /// An empty memory; nothing is allocated per task until it is remembered.
    pub fn new(config: &TrackerConfig, model: &ModelConfig) -> TaskTracker {
        let capacity = config.capacity.clamp(1, MAX_CAPACITY);
        TaskTracker {
            shards: (0..shard_count(capacity))
                .map(|_| Padded(Mutex::new(Shard::new())))
                .collect(),
            hasher: RandomState::new(),
            transitions: ArcSwap::from_pointee(Transitions::new(config, model)),
            limits: ArcSwap::from_pointee(StallLimits::new(config, model)),
            activity: ActivityMetrics::new().expect("the activity metric names are valid"),
            quiet: false,
            unix_epoch_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            capacity,
            ttl_ms: u64::try_from(config.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            epoch: Instant::now(),
            #[cfg(test)]
            skew_ms: AtomicU64::new(0),
            tracked: AtomicUsize::new(0),
            evicted_capacity: AtomicU64::new(0),
            evicted_ttl: AtomicU64::new(0),
            routes: Mutex::new(Vec::new()),
        }
    }

    /// Gives each tracked route of a configuration, by name, the id its memory is kept under;
    /// returns the ids in the order of `names`. A route keeps its id, and so its memory, across
    /// reloads whatever its place in the list; the memory of a route no longer in `names` is
    /// dropped and its id freed. Ids stay below twice the number of tracked routes.
    pub fn assign_routes(&self, names: &[&str]) -> Vec<u16> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut gone = Vec::new();
        for (id, route) in routes.iter_mut().enumerate() {
            if route.as_deref().is_some_and(|name| !names.contains(&name)) {
                *route = None;
                gone.push(id as u16);
            }
        }
        let ids = names
            .iter()
            .map(|name| {
                if let Some(id) = routes.iter().position(|r| r.as_deref() == Some(*name)) {
                    return id as u16;
                }
                // Not an id freed just now: a request under the previous configuration may
                // still write to it.
                let free = (0..routes.len())
                    .find(|&id| routes[id].is_none() && !gone.contains(&(id as u16)));
                let id = free.unwrap_or_else(|| {
                    routes.push(None);
                    routes.len() - 1
                });
                routes[id] = Some((*name).into());
                id as u16
            })
            .collect();
        drop(routes);
        if !gone.is_empty() {
            self.forget_routes(&gone);
        }
        ids
    }

    /// Forgets every task remembered under one of the route ids `gone`.
    fn forget_routes(&self, gone: &[u16]) {
        let rehash = |route: u16, id: &str| self.hash(route, id);
        for shard in self.shards.iter() {
            let mut shard = self.lock(&shard.0);
            let removed = gone
                .iter()
                .map(|&route| shard.forget_route(route, &rehash))
                .sum();
            self.count(Changes {
                removed,
                ..Changes::default()
            });
        }
    }

    /// The judge for one response of the route whose memory id is `route` (see
    /// [`TaskTracker::assign_routes`]).
    ///
    /// Tasks are remembered per route: the same id on two routes is two tasks.
    pub fn judge_for(&self, route: u16) -> RouteMemory<'_> {
        RouteMemory {
            tracker: self,
            route,
            now_ms: self.now_ms(),
            compared: None,
        }
    }

    /// Tasks remembered now (the `consistency_tracked_tasks` gauge). Expired tasks count until
    /// swept: call [`purge_expired`](Self::purge_expired) first for an exact figure.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Tasks forgotten so far for `reason` (the `consistency_tracker_evictions_total` counter).
    pub fn evictions(&self, reason: EvictionReason) -> u64 {
        match reason {
            EvictionReason::Capacity => self.evicted_capacity.load(Ordering::Relaxed),
            EvictionReason::Ttl => self.evicted_ttl.load(Ordering::Relaxed),
        }
    }

    /// Forgets every task not seen for the TTL; returns how many. Each write already sweeps a
    /// few from its own shard, so this is only needed to keep idle shards from holding memory
    /// and the gauge up: the metrics scrape or the report timer calls it.
    pub fn purge_expired(&self) -> usize {
        let clock = self.clock(self.now_ms());
        let rehash = |route: u16, id: &str| self.hash(route, id);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = self.lock(&shard.0);
            let n = shard.expire(clock, usize::MAX, &rehash);
            self.count(Changes {
                removed: n,
                evicted_ttl: n,
                ..Changes::default()
            });
            removed += n as usize;
        }
        removed
    }

    /// The compiled model and transition rules.
    pub(crate) fn transitions(&self) -> Arc<Transitions> {
        self.transitions.load_full()
    }

    /// New transition rules and stall limits, from a reload; what is remembered stays.
    pub fn set_rules(&self, config: &TrackerConfig, model: &ModelConfig) {
        self.transitions
            .store(Arc::new(Transitions::new(config, model)));
        self.limits.store(Arc::new(StallLimits::new(config, model)));
    }

    /// Leaves activity to a shared store: see `quiet`.
    pub(crate) fn set_quiet(&mut self) {
        self.quiet = true;
    }

    /// The stall limits of the current configuration.
    pub(crate) fn limits(&self) -> Arc<StallLimits> {
        self.limits.load_full()
    }

    /// Now, in Unix ms, by this tracker's clock.
    pub(crate) fn unix_ms(&self) -> u64 {
        self.unix_epoch_ms.saturating_add(self.now_ms())
    }

    /// Counts activity the shared store judged on a task of route `route`.
    pub(crate) fn record_shared(&self, route: &str, activity: Activity) {
        let transitions = self.transitions.load();
        self.activity
            .record(route, activity, |stage| transitions.stage_label(stage));
    }

    /// The activity families, which the tracker's collector gathers.
    pub(crate) fn activity(&self) -> &ActivityMetrics {
        &self.activity
    }

    /// Creates the activity series of every route in `names` at zero.
    pub(crate) fn touch_routes(&self, names: &[&str]) {
        let transitions = self.transitions.load();
        for name in names {
            self.activity.touch(name, transitions.stages());
        }
    }

    /// Forgets every non-terminal task nobody polled for `tracker.abandon_after`, counting
    /// each once; returns how many. Called by the periodic upkeep.
    pub fn abandon_idle(&self) -> usize {
        if self.quiet {
            return 0;
        }
        let now_ms = self.now_ms();
        let limits = self.limits.load();
        let rehash = |route: u16, id: &str| self.hash(route, id);
        let mut abandoned = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = self.lock(&shard.0);
            let gone = shard.abandon(now_ms, &limits, &rehash);
            self.count(Changes {
                removed: gone.len() as u32,
                ..Changes::default()
            });
            abandoned.extend(gone);
        }
        if !abandoned.is_empty() {
            let transitions = self.transitions.load();
            let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            for (route, stage) in &abandoned {
                if let Some(Some(name)) = routes.get(usize::from(*route)) {
                    self.activity
                        .abandoned
                        .with_label_values(&[&**name, &transitions.stage_label(*stage)])
                        .inc();
                }
            }
        }
        abandoned.len()
    }

    /// The stalled tasks now: counted per (route, stage), and the `keep` longest stalled.
    /// Looks at every task (a scrape or a report asks, not a poll).
    pub fn stalled(&self, keep: usize) -> StalledNow {
        let now_ms = self.now_ms();
        let mut counts: HashMap<(u16, u16), u64> = HashMap::new();
        let mut oldest: BinaryHeap<Oldest> = BinaryHeap::with_capacity(keep + 1);
        for shard in self.shards.iter() {
            self.lock(&shard.0).each_stalled(|entry: StalledEntry<'_>| {
                *counts.entry((entry.route, entry.stage)).or_default() += 1;
                if keep == 0
                    || oldest.len() == keep
                        && oldest
                            .peek()
                            .is_some_and(|young| young.changed_ms <= entry.changed_ms)
                {
                    return;
                }
                oldest.push(Oldest {
                    changed_ms: entry.changed_ms,
                    route: entry.route,
                    id: entry.id.into(),
                    stage: entry.stage,
                    progress: entry.progress,
                    first_ms: entry.first_ms,
                    seen_ms: entry.seen_ms,
                });
                if oldest.len() > keep {
                    oldest.pop();
                }
            });
        }
        let transitions = self.transitions.load();
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let name = |route: u16| routes.get(usize::from(route)).cloned().flatten();
        let mut counts: Vec<(String, String, u64)> = counts
            .into_iter()
            .filter_map(|((route, stage), n)| {
                Some((name(route)?.into(), transitions.stage_label(stage), n))
            })
            .collect();
        counts.sort();
        let oldest = oldest
            .into_sorted_vec()
            .into_iter()
            .filter_map(|task| {
                Some(StalledTask {
                    route: name(task.route)?.into(),
                    task_id: task.id.into(),
                    stage: transitions.stage_label(task.stage),
                    progress: (!task.progress.is_nan()).then_some(task.progress),
                    stalled_for_ms: now_ms.saturating_sub(task.changed_ms),
                    polled_ago_ms: now_ms.saturating_sub(task.seen_ms),
                    tracked_for_ms: now_ms.saturating_sub(task.first_ms),
                })
            })
            .collect();
        StalledNow { counts, oldest }
    }

    /// What local memory holds for `task_id` on route `route`, with its times.
    pub fn task(&self, route: &str, task_id: &str) -> Option<TaskView> {
        let id = {
            let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            routes.iter().position(|r| r.as_deref() == Some(route))?
        };
        let key = self.key(u16::try_from(id).ok()?, task_id);
        let now_ms = self.now_ms();
        let (memory, times, stalled) = self
            .lock(self.shard(key.hash))
            .times(key, self.clock(now_ms))?;
        Some(TaskView {
            route: route.to_owned(),
            store: "local",
            state: self.transitions.load().state_of(&memory),
            times: times.map(|ms| self.unix_epoch_ms + ms),
            stalled,
        })
    }

    /// The names of the routes memory is kept for now.
    pub(crate) fn route_names(&self) -> Vec<String> {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes
            .iter()
            .flatten()
            .map(|name| name.to_string())
            .collect()
    }

    /// Counts one poll's activity on a task of the route whose memory id is `route`.
    fn record(&self, route: u16, activity: Activity) {
        if self.quiet || activity == Activity::default() {
            return;
        }
        let transitions = self.transitions.load();
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Some(name)) = routes.get(usize::from(route)) {
            self.activity
                .record(name, activity, |stage| transitions.stage_label(stage));
        }
    }

    fn judge(
        &self,
        route: u16,
        now_ms: u64,
        task_id: &str,
        state: &RecordState,
    ) -> Vec<TransitionFinding> {
        // The lock is released before any message is formatted.
        match self.recall(route, now_ms, task_id) {
            Some(last) => {
                let transitions = self.transitions.load();
                transitions.judge(&last, &transitions.snapshot(state))
            }
            None => Vec::new(),
        }
    }

    /// The unexpired memory of a task, without touching its recency.
    fn recall(&self, route: u16, now_ms: u64, task_id: &str) -> Option<Snapshot> {
        let key = self.key(route, task_id);
        self.lock(self.shard(key.hash)).get(key, self.clock(now_ms))
    }

    fn remember(&self, route: u16, now_ms: u64, task_id: &str, sent: &RecordState) {
        let key = self.key(route, task_id);
        let sent = self.transitions.load().snapshot(sent);
        let limits = self.limits.load();
        let rehash = |route: u16, id: &str| self.hash(route, id);
        let mut shard = self.lock(self.shard(key.hash));
        let admit = || {
            self.tracked
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.capacity).then_some(n + 1)
                })
                .is_ok()
        };
        let changes = shard.put(key, sent, self.clock(now_ms), &limits, admit, rehash);
        self.count(changes);
        drop(shard);
        self.record(route, changes.activity);
    }

    /// Called with the shard still locked, so that an entry's addition is always counted
    /// before its removal by another thread and `tracked` never dips below zero.
    fn count(&self, changes: Changes) {
        if changes.added > 0 {
            self.tracked
                .fetch_add(changes.added as usize, Ordering::Relaxed);
        }
        if changes.removed > 0 {
            self.tracked
                .fetch_sub(changes.removed as usize, Ordering::Relaxed);
        }
        if changes.evicted_capacity > 0 {
            self.evicted_capacity
                .fetch_add(u64::from(changes.evicted_capacity), Ordering::Relaxed);
        }
        if changes.evicted_ttl > 0 {
            self.evicted_ttl
                .fetch_add(u64::from(changes.evicted_ttl), Ordering::Relaxed);
        }
    }

    fn key<'k>(&self, route: u16, id: &'k str) -> Key<'k> {
        Key {
            hash: self.hash(route, id),
            route,
            id,
        }
    }

    fn hash(&self, route: u16, task_id: &str) -> u64 {
        self.hasher.hash_one((route, task_id))
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // Bits 32.. pick the shard: the map inside uses the low bits for buckets and the top
        // seven for tags, so the shard choice leaves both well spread.
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)].0
    }

    /// A shard left poisoned by a panic mid-update may be inconsistent: it is emptied (those
    /// tasks are forgotten, which only costs findings) rather than trusted or propagated.
    fn lock<'s>(&self, shard: &'s Mutex<Shard>) -> MutexGuard<'s, Shard> {
        shard.lock().unwrap_or_else(|poisoned: PoisonError<_>| {
            let mut guard = poisoned.into_inner();
            let lost = guard.clear();
            self.tracked.fetch_sub(lost, Ordering::Relaxed);
            shard.clear_poison();
            guard
        })
    }

    fn now_ms(&self) -> u64 {
        let now = crate::clock::millis(Instant::now().saturating_duration_since(self.epoch));
        #[cfg(test)]
        let now = now.saturating_add(self.skew_ms.load(Ordering::Relaxed));
        now
    }

    /// Moves this tracker's clock forward by `by`.
    #[cfg(test)]
    pub(crate) fn skew(&self, by: std::time::Duration) {
        self.skew_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    fn clock(&self, now_ms: u64) -> Clock {
        Clock {
            now_ms,
            ttl_ms: self.ttl_ms,
        }
    }

    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Every remembered (route, id), most recently seen first within each shard.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> Vec<(u16, String)> {
        self.shards
            .iter()
            .flat_map(|s| self.lock(&s.0).ids())
            .collect()
    }
}

impl fmt::Debug for TaskTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskTracker")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .field("ttl_ms", &self.ttl_ms)
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

/// A power of two, at most `MAX_SHARDS`, leaving each shard at least `MIN_PER_SHARD` tasks.
fn shard_count(capacity: usize) -> usize {
    let wanted = (capacity / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
    1 << wanted.ilog2()
}

// === impl Oldest ===

impl PartialEq for Oldest {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Order::Equal
    }
}

impl Eq for Oldest {}

impl PartialOrd for Oldest {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Oldest {
    fn cmp(&self, other: &Self) -> Order {
        (self.changed_ms, self.route, &self.id).cmp(&(other.changed_ms, other.route, &other.id))
    }
}

// === impl RouteMemory ===

impl RouteMemory<'_> {
    /// What this route's memory holds for a task, as `judge` would compare against it.
    pub(crate) fn recall(&self, task_id: &str) -> Option<Snapshot> {
        self.tracker.recall(self.route, self.now_ms, task_id)
    }
}

impl TransitionJudge for RouteMemory<'_> {
    fn judge(&mut self, task_id: &str, state: &RecordState) -> Vec<TransitionFinding> {
        let findings = self.tracker.judge(self.route, self.now_ms, task_id, state);
        // Only a finding needs it as evidence; the lookup is not repeated otherwise.
        self.compared = if findings.is_empty() {
            None
        } else {
            self.recall(task_id)
        };
        findings
    }

    fn remember(&mut self, task_id: &str, sent: &RecordState) {
        self.tracker
            .remember(self.route, self.now_ms, task_id, sent);
    }

    fn compared_with(&self) -> Option<RecordState> {
        let last = self.compared?;
        Some(self.tracker.transitions.load().state_of(&last))
    }
}
