//! One shard of the task memory: a slab of entries on an intrusive least-recently-seen list.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::transition::Snapshot;

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
}

/// One remembered task: 48 bytes plus the id's heap allocation. The snapshot is stored flat,
/// since a nested struct would bring its own padding.
#[derive(Debug)]
struct Slot {
    id: Box<str>,
    /// Milliseconds since the tracker's epoch.
    seen_ms: u64,
    progress: f64,
    prev: u32,
    next: u32,
    route: u16,
    stage: u16,
    status: u16,
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

    /// Records what was sent for a task and makes it the most recently seen.
    ///
    /// A new task asks `admit` for room in the tracker; refused, it displaces this shard's
    /// least recently seen entry. `rehash` gives the key hash of another entry, needed to
    /// unindex a displaced or expired one.
    pub fn put(
        &mut self,
        key: Key<'_>,
        sent: Snapshot,
        clock: Clock,
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
                let before = if same && !clock.expired(slot.seen_ms) {
                    slot.snapshot()
                } else {
                    if same {
                        // Expired but not yet swept: forgotten, then remembered anew.
                        changes.evicted_ttl += 1;
                    } else {
                        slot.id = key.id.into();
                        slot.route = key.route;
                    }
                    Snapshot::EMPTY
                };
                slot.store(before.merge(sent), clock.now_ms);
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
                slot.store(Snapshot::EMPTY.merge(sent), clock.now_ms);
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

    /// Removes every entry of a route `gone` accepts; returns how many.
    pub fn forget(
        &mut self,
        gone: impl Fn(u16) -> bool,
        rehash: &impl Fn(u16, &str) -> u64,
    ) -> u32 {
        let mut removed = 0;
        let mut i = self.head;
        while i != NIL {
            let next = self.slots[i as usize].next;
            if gone(self.slots[i as usize].route) {
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
            progress: f64::NAN,
            prev: NIL,
            next: NIL,
            route: 0,
            stage: 0,
            status: 0,
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

    fn store(&mut self, memory: Snapshot, seen_ms: u64) {
        self.stage = memory.stage;
        self.status = memory.status;
        self.progress = memory.progress;
        self.seen_ms = seen_ms;
    }
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
