//! [`EvidenceBook`]: one ring per (route, rule), each bounded in entries and in bytes, the
//! newest kept. An entry with several issues is shared by the rings of its rules.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::entry::Entry;

/// The rings, keyed by (route, rule).
type Rings = HashMap<(Arc<str>, Arc<str>), Ring>;

/// The rings of every route and rule; shared by every connection and every configuration.
#[derive(Debug)]
pub struct EvidenceBook {
    entries_per_rule: usize,
    bytes_per_rule: usize,
    /// Keyed by (route, rule). A lock held only to push or to copy out a few `Arc`s.
    rings: Mutex<Rings>,
    /// Numbers entries in the order kept: newer than any clock can tell apart.
    kept: AtomicU64,
}

#[derive(Debug, Default)]
struct Ring {
    /// Each entry with its size and its number.
    entries: VecDeque<(Arc<Entry>, usize, u64)>,
    bytes: usize,
}

/// What `/evidence` asks for; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub route: Option<String>,
    pub rule: Option<String>,
    pub task: Option<String>,
    pub limit: usize,
}

// === impl EvidenceBook ===

impl EvidenceBook {
    pub fn new(entries_per_rule: usize, bytes_per_rule: usize) -> EvidenceBook {
        EvidenceBook {
            entries_per_rule,
            bytes_per_rule,
            rings: Mutex::new(HashMap::new()),
            kept: AtomicU64::new(0),
        }
    }

    /// Whether entries are kept at all (`evidence.entries_per_rule > 0`).
    pub fn keeps(&self) -> bool {
        self.entries_per_rule > 0
    }

    /// Keeps `entry` in the ring of each of its rules, dropping the oldest past the bounds.
    /// An entry larger than a whole ring is not kept.
    pub fn keep(&self, entry: Entry) {
        let size = entry.size();
        if !self.keeps() || size > self.bytes_per_rule {
            return;
        }
        let entry = Arc::new(entry);
        let number = self.kept.fetch_add(1, Ordering::Relaxed);
        let mut rules: Vec<&Arc<str>> = entry.rules().collect();
        rules.sort_unstable();
        rules.dedup();
        let mut rings = self.lock();
        for rule in rules {
            let ring = rings
                .entry((entry.route.clone(), rule.clone()))
                .or_default();
            ring.entries.push_back((entry.clone(), size, number));
            ring.bytes += size;
            while ring.entries.len() > self.entries_per_rule || ring.bytes > self.bytes_per_rule {
                match ring.entries.pop_front() {
                    Some((_, size, _)) => ring.bytes -= size,
                    None => break,
                }
            }
        }
    }

    /// The entries matching `query`, newest first, each once, at most `query.limit`.
    pub fn find(&self, query: &Query) -> Vec<Arc<Entry>> {
        let mut found: Vec<(u64, Arc<Entry>)> = {
            let rings = self.lock();
            rings
                .iter()
                .filter(|((route, rule), _)| {
                    query.route.as_deref().is_none_or(|r| r == &**route)
                        && query.rule.as_deref().is_none_or(|r| r == &**rule)
                })
                .flat_map(|(_, ring)| ring.entries.iter())
                .filter(|(entry, _, _)| {
                    query
                        .task
                        .as_deref()
                        .is_none_or(|t| entry.task_id.as_deref() == Some(t))
                })
                .map(|(entry, _, number)| (*number, entry.clone()))
                .collect()
        };
        found.sort_unstable_by_key(|(number, _)| std::cmp::Reverse(*number));
        // An entry of several rules comes once per ring.
        found.dedup_by_key(|(number, _)| *number);
        found.truncate(query.limit);
        found.into_iter().map(|(_, entry)| entry).collect()
    }

    /// (entries, bytes) held now, over every ring (an entry shared by rings counts in each).
    pub fn held(&self) -> (usize, usize) {
        self.lock().values().fold((0, 0), |(n, bytes), ring| {
            (n + ring.entries.len(), bytes + ring.bytes)
        })
    }

    /// Per ring: (route, rule, entries, bytes).
    pub fn rings(&self) -> Vec<(Arc<str>, Arc<str>, usize, usize)> {
        self.lock()
            .iter()
            .map(|((route, rule), ring)| {
                (route.clone(), rule.clone(), ring.entries.len(), ring.bytes)
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Rings> {
        // Entries are pushed and popped whole: a panic elsewhere cannot leave a ring half-updated.
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
