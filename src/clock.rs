//! Time as whole milliseconds since a start ([`millis`]), and a moment that many threads update
//! and read without a lock: when something last happened ([`LastSeen`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The last time [`LastSeen::mark`] was called, kept as milliseconds since creation.
#[derive(Debug)]
pub struct LastSeen {
    start: Instant,
    /// 0: never; otherwise milliseconds since `start`, plus one.
    last_ms: AtomicU64,
}

/// `elapsed` in whole milliseconds, the unit the atomics keep times in; saturates (after
/// 584 million years).
pub fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

// === impl LastSeen ===

impl LastSeen {
    /// Never seen yet.
    pub fn never() -> LastSeen {
        LastSeen {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn mark(&self) {
        // +1 keeps "seen in the first millisecond" apart from "never".
        let ms = millis(self.start.elapsed());
        self.last_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// When it was last seen; `None` if never.
    pub fn last(&self) -> Option<Instant> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.start + Duration::from_millis(ms - 1)),
        }
    }

    /// Whether it was seen within `window` of now.
    pub fn within(&self, window: Duration) -> bool {
        self.last().is_some_and(|last| last.elapsed() <= window)
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for `LastSeen`.

    use super::*;

    #[test]
    fn never_seen_is_never_within_a_window() {
        let seen = LastSeen::never();
        assert_eq!(seen.last(), None);
        assert!(!seen.within(Duration::from_secs(3600)));
    }

    #[test]
    fn a_mark_is_within_a_window_and_ages() {
        let seen = LastSeen::never();
        seen.mark();
        assert!(seen.within(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!seen.within(Duration::from_millis(5)));
        assert!(seen
            .last()
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(25)));
    }
}
