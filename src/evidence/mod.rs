//! Evidence: per route and rule, the most recent inconsistent records, so that an alert leads
//! to what the backend sent, what was sent instead, and what the task had said before.
//!
//! - `entry`: [`Entry`], one inconsistent record as seen by one instance, redacted.
//! - `ring`: [`EvidenceBook`], the rings, bounded in entries and bytes each, newest kept.

mod entry;
mod ring;

pub use entry::{Entry, EntryFix, EntryIssue, Seen};
pub use ring::{EvidenceBook, Query};

#[cfg(test)]
mod tests;
