//! A global budget for response bytes that inspection holds in memory at once.
//!
//! Per-response limits bound one body; this bounds them all together, so a burst of large
//! concurrent responses streams through uninspected instead of multiplying memory.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits are KiB, so a budget of gigabytes still fits the semaphore's `u32` requests.
const UNIT: usize = 1024;

#[derive(Debug, Clone)]
pub struct Budget {
    kib: Arc<Semaphore>,
}

/// The part of the budget one response holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    held_kib: usize,
}

// === impl Budget ===

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget {
            kib: Arc::new(Semaphore::new(bytes.div_ceil(UNIT))),
        }
    }

    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.kib.clone(),
            permit: None,
            held_kib: 0,
        }
    }
}

// === impl Reservation ===

impl Reservation {
    /// Grows the reservation to cover `bytes` in all; false when the budget cannot.
    pub fn cover(&mut self, bytes: usize) -> bool {
        let wanted = bytes.div_ceil(UNIT);
        if wanted <= self.held_kib {
            return true;
        }
        let Ok(more) = u32::try_from(wanted - self.held_kib) else {
            return false;
        };
        match self.budget.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.held_kib = wanted;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for the held-bytes budget.
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = Budget::new(10 * UNIT);
        let mut first = budget.reservation();
        assert!(first.cover(4 * UNIT));
        assert!(first.cover(6 * UNIT), "grows in place");
        let mut second = budget.reservation();
        assert!(second.cover(4 * UNIT));
        assert!(!second.cover(5 * UNIT), "only 4 KiB were left");
        drop(first);
        assert!(
            second.cover(10 * UNIT),
            "the first reservation was given back"
        );
        assert!(!budget.reservation().cover(1));
    }

    #[test]
    fn partial_units_round_up() {
        let budget = Budget::new(UNIT);
        let mut r = budget.reservation();
        assert!(r.cover(1));
        assert!(r.cover(UNIT));
        assert!(!r.cover(UNIT + 1));
    }
}
