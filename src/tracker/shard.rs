//! One shard of the task memory: a slab of entries on an intrusive least-recently-seen list.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::stall::{Activity, StallLimits};
use super::transition::{Snapshot, UNKNOWN};

/// End of a list.
const NIL: u32 = u32::MAX;

/// Expired entries removed per access at most; `purge_expired` takes the rest.
const SWEEP_PER_ACCESS: usize = 16;

/// A shard: its entries on one list, the most recently seen at `head`. How many it may hold
/// is not its own business: the tracker's global count decides when a new entry must
/// displace the shard's least recently seen one.
///
/// The index maps the task's 64-bit key hash to its slot; the slot holds the route and id, so
/// a (vanishingly rare) hash collision is detected and handled as forgetting the other task,
/// never as mixing two tasks. Every write moves its entry to the head, so the list is also
/// ordered by age (up to the length of a request, as each response reads the clock once):
/// expired entries gather at the tail, where sweeps look for them.
#[derive(Debug)]
pub(crate) struct Shard {
    index: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    /// Free slots (left by TTL expiry), chained through `next`.
    free: u32,
    len: u32,
    /// The newest entry known to be terminal and unpolled for `abandon_after`, every entry
    /// behind it too: the abandonment sweep starts in front of it rather than at the tail, so
    /// finished tasks waiting for their TTL are looked at once, not once per sweep.
    checked: u32,
}

/// One remembered task: 72 bytes plus the id's heap allocation. The snapshot is stored flat,
/// since a nested struct would bring its own padding.
#[derive(Debug)]
struct Slot {
    id: Box<str>,
    /// When it was last polled, in milliseconds since the tracker's epoch (as are the others).
    seen_ms: u64,
    /// When it was first seen.
    first_ms: u64,
    /// When its status, stage or progress last changed; first seen if never.
    changed_ms: u64,
    /// When its stage last changed; first seen if never.
    stage_ms: u64,
    progress: f64,
    prev: u32,
    next: u32,
    route: u16,
    stage: u16,
    status: u16,
    /// Found stalled at a poll, and not moved since.
    stalled: bool,
}

/// A task as the shard knows it: the hash of (route, id) and the two themselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub hash: u64,
    pub route: u16,
    pub id: &'a str,
}

/// What one write did, for the tracker's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Entries added without a reservation from `admit` (the shard was empty).
    pub added: u32,
    /// Entries gone from the shard (expired and swept).
    pub removed: u32,
    /// Entries displaced by a new one because the tracker was full.
    pub evicted_capacity: u32,
    /// Entries forgotten for age: swept, or found expired and replaced.
    pub evicted_ttl: u32,
    /// What the write did to the written task's activity.
    pub activity: Activity,
}

/// A stalled entry, as [`Shard::each_stalled`] shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StalledEntry<'a> {
    pub route: u16,
    pub id: &'a str,
    pub stage: u16,
    pub progress: f64,
    pub first_ms: u64,
    pub changed_ms: u64,
    pub seen_ms: u64,
}

/// Everything that says "now" and "how long" to a shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub now_ms: u64,
    pub ttl_ms: u64,
}

impl Clock {
    fn expired(self, seen_ms: u64) -> bool {
        self.now_ms.saturating_sub(seen_ms) >= self.ttl_ms
    }
}

// === impl Shard ===

impl Shard {
    pub fn new() -> Shard {
        Shard {
            index: HashMap::default(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
            checked: NIL,
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The unexpired memory of a task, without touching its recency.
    pub fn get(&self, key: Key<'_>, clock: Clock) -> Option<Snapshot> {
        let slot = &self.slots[*self.index.get(&key.hash)? as usize];
        (slot.holds(key) && !clock.expired(slot.seen_ms)).then_some(slot.snapshot())
    }

    /// The unexpired memory of a task with its times (first seen, last change, stage since,
    /// last polled) and whether it is stalled, without touching its recency.
    pub fn times(&self, key: Key<'_>, clock: Clock) -> Option<(Snapshot, [u64; 4], bool)> {
        let slot = &self.slots[*self.index.get(&key.hash)? as usize];
        (slot.holds(key) && !clock.expired(slot.seen_ms)).then(|| {
            let times = [slot.first_ms, slot.changed_ms, slot.stage_ms, slot.seen_ms];
            (slot.snapshot(), times, slot.stalled)
        })
    }

    /// Records what was sent for a task and makes it the most recently seen; judges from its
    /// timestamps whether it stalled, recovered or left a stage (see [`Slot::observe`]).
    ///
    /// A new task asks `admit` for room in the tracker; refused, it displaces this shard's
    /// least recently seen entry. `rehash` gives the key hash of another entry, needed to
    /// unindex a displaced or expired one.
    pub fn put(
        &mut self,
        key: Key<'_>,
        sent: Snapshot,
        clock: Clock,
        limits: &StallLimits,
        admit: impl FnOnce() -> bool,
        rehash: impl Fn(u16, &str) -> u64,
    ) -> Changes {
        let swept = self.expire(clock, SWEEP_PER_ACCESS, &rehash);
        let mut changes = Changes {
            removed: swept,
            evicted_ttl: swept,
            ..Changes::default()
        };
        let i = match self.index.get(&key.hash) {
            Some(&i) => {
                let slot = &mut self.slots[i as usize];
                let same = slot.holds(key);
                if !same || clock.expired(slot.seen_ms) {
                    if same {
                        // Expired but not yet swept: forgotten, then remembered anew.
                        changes.evicted_ttl += 1;
                    } else {
                        slot.id = key.id.into();
                        slot.route = key.route;
                    }
                    slot.begin(clock.now_ms);
                }
                let after = slot.snapshot().merge(sent);
                changes.activity = slot.observe(after, clock.now_ms, limits);
                self.unlink(i);
                i
            }
            None => {
                let i = if self.len == 0 {
                    // Nothing here to displace: overshoot the capacity by one rather than
                    // lock a second shard. Only possible with an empty shard in a full
                    // tracker, so the overshoot is at most one per shard.
                    if !admit() {
                        changes.added = 1;
                    }
                    self.alloc()
                } else if admit() {
                    self.alloc()
                } else {
                    changes.evicted_capacity += 1;
                    let victim = self.tail;
                    self.remove(victim, &rehash);
                    victim
                };
                let slot = &mut self.slots[i as usize];
                slot.id = key.id.into();
                slot.route = key.route;
                slot.begin(clock.now_ms);
                changes.activity = slot.observe(Snapshot::EMPTY.merge(sent), clock.now_ms, limits);
                self.index.insert(key.hash, i);
                self.len += 1;
                i
            }
        };
        self.push_front(i);
        changes
    }

    /// Removes up to `limit` expired entries from the old end; returns how many.
    pub fn expire(
        &mut self,
        clock: Clock,
        limit: usize,
        rehash: &impl Fn(u16, &str) -> u64,
    ) -> u32 {
        let mut removed = 0;
        while removed < limit
            && self.tail != NIL
            && clock.expired(self.slots[self.tail as usize].seen_ms)
        {
            let victim = self.tail;
            self.remove(victim, rehash);
            self.release(victim);
            removed += 1;
        }
        removed as u32
    }

    /// Forgets the non-terminal entries nobody polled for `limits.abandon_ms`; returns the
    /// (route, stage) of each. Terminal ones stay until their TTL, and are looked at once.
    pub fn abandon(
        &mut self,
        now_ms: u64,
        limits: &StallLimits,
        rehash: &impl Fn(u16, &str) -> u64,
    ) -> Vec<(u16, u16)> {
        let mut abandoned = Vec::new();
        let mut i = match self.checked {
            NIL => self.tail,
            checked => self.slots[checked as usize].prev,
        };
        while i != NIL {
            let slot = &self.slots[i as usize];
            if now_ms.saturating_sub(slot.seen_ms) < limits.abandon_ms {
                break;
            }
            let newer = slot.prev;
            if limits.is_terminal(slot.status) {
                self.checked = i;
            } else {
                abandoned.push((slot.route, slot.stage));
                self.remove(i, rehash);
                self.release(i);
            }
            i = newer;
        }
        abandoned
    }

    /// Calls `visit` with every stalled entry.
    pub fn each_stalled(&self, mut visit: impl FnMut(StalledEntry<'_>)) {
        let mut i = self.head;
        while i != NIL {
            let slot = &self.slots[i as usize];
            if slot.stalled {
                visit(StalledEntry {
                    route: slot.route,
                    id: &slot.id,
                    stage: slot.stage,
                    progress: slot.progress,
                    first_ms: slot.first_ms,
                    changed_ms: slot.changed_ms,
                    seen_ms: slot.seen_ms,
                });
            }
            i = slot.next;
        }
    }

    /// Forgets every entry of `route`; returns how many.
    pub fn forget_route(&mut self, route: u16, rehash: &impl Fn(u16, &str) -> u64) -> u32 {
        let mut removed = 0;
        let mut i = self.head;
        while i != NIL {
            let next = self.slots[i as usize].next;
            if self.slots[i as usize].route == route {
                self.remove(i, rehash);
                self.release(i);
                removed += 1;
            }
            i = next;
        }
        removed
    }

    /// Forgets everything; returns how many entries there were.
    pub fn clear(&mut self) -> usize {
        let len = self.len();
        *self = Shard::new();
        len
    }

    /// Unlinks and unindexes a live slot; the slot keeps its id until reused or released.
    fn remove(&mut self, i: u32, rehash: &impl Fn(u16, &str) -> u64) {
        let slot = &self.slots[i as usize];
        let hash = rehash(slot.route, &slot.id);
        if self.index.get(&hash) == Some(&i) {
            self.index.remove(&hash);
        }
        self.unlink(i);
        self.len -= 1;
    }

    /// A slot to fill: a released one, or a new one.
    fn alloc(&mut self) -> u32 {
        if self.free != NIL {
            let i = self.free;
            self.free = self.slots[i as usize].next;
            return i;
        }
        if self.slots.len() == self.slots.capacity() {
            // Grow by a quarter rather than double: the slab is most of the memory, and
            // doubling would leave up to half of it unused.
            self.slots.reserve_exact((self.slots.len() / 4).max(8));
        }
        self.slots.push(Slot {
            id: Box::default(),
            seen_ms: 0,
            first_ms: 0,
            changed_ms: 0,
            stage_ms: 0,
            progress: f64::NAN,
            prev: NIL,
            next: NIL,
            route: 0,
            stage: 0,
            status: 0,
            stalled: false,
        });
        (self.slots.len() - 1) as u32
    }

    fn release(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        // An empty Box<str> owns no allocation: the id's memory goes back at once.
        slot.id = Box::default();
        slot.next = self.free;
        self.free = i;
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let slot = &self.slots[i as usize];
            (slot.prev, slot.next)
        };
        if self.checked == i {
            // Everything behind it was checked too.
            self.checked = next;
        }
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let slot = &mut self.slots[i as usize];
            slot.prev = NIL;
            slot.next = old;
        }
        match old {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    /// Entries from most to least recently seen, for tests.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        let mut i = self.head;
        while i != NIL {
            let slot = &self.slots[i as usize];
            out.push((slot.route, slot.id.to_string()));
            i = slot.next;
        }
        out
    }
}

// === impl Slot ===

impl Slot {
    fn holds(&self, key: Key<'_>) -> bool {
        self.route == key.route && *self.id == *key.id
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            stage: self.stage,
            status: self.status,
            progress: self.progress,
        }
    }

    /// A task seen for the first time (or again after being forgotten): nothing known yet.
    fn begin(&mut self, now_ms: u64) {
        let empty = Snapshot::EMPTY;
        self.stage = empty.stage;
        self.status = empty.status;
        self.progress = empty.progress;
        self.first_ms = now_ms;
        self.changed_ms = now_ms;
        self.stage_ms = now_ms;
        self.stalled = false;
    }

    /// Stores `after`, the task's memory after this poll, and says what the poll showed: a
    /// change ends a stall (and a stage change records the time spent in the stage left); no
    /// change, on a non-terminal task, for longer than its stage's limit, is a stall. A task
    /// never seen to change is judged from when it was first seen.
    fn observe(&mut self, after: Snapshot, now_ms: u64, limits: &StallLimits) -> Activity {
        let before = self.snapshot();
        let mut activity = Activity::default();
        if same_state(&before, &after) {
            let still = !limits.is_terminal(after.status)
                && now_ms.saturating_sub(self.changed_ms) >= limits.stall_ms(after.stage);
            if still && !self.stalled {
                activity.stalled = Some(after.stage);
            }
            // A reload that raised the limit ends a stall without a recovery.
            self.stalled = still;
        } else {
            self.changed_ms = now_ms;
            if before.stage != after.stage {
                if before.stage != UNKNOWN {
                    activity.left = Some((before.stage, now_ms.saturating_sub(self.stage_ms)));
                }
                self.stage_ms = now_ms;
            }
            if std::mem::take(&mut self.stalled) {
                activity.recovered = Some(before.stage);
            }
        }
        self.stage = after.stage;
        self.status = after.status;
        self.progress = after.progress;
        self.seen_ms = now_ms;
        activity
    }
}

/// Same status, stage and progress (a progress never sent equals itself).
fn same_state(a: &Snapshot, b: &Snapshot) -> bool {
    a.stage == b.stage
        && a.status == b.status
        && (a.progress == b.progress || (a.progress.is_nan() && b.progress.is_nan()))
}

/// The index key is already a SipHash output: hashing it again would only cost time.
#[derive(Debug, Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the key is a u64); fold anything else in rather than panic.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
