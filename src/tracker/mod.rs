//! Task memory across polls: what was last sent for each task, and the transition rules
//! (`stage_regression`, `terminal_reopened`, `terminal_changed`, `progress_regression`)
//! that judge the next response against it.
//!
//! One [`TaskTracker`] per sidecar, shared by every connection (`Arc<TaskTracker>`). Per
//! inspected response of a tracked route, the inspection layer hands the engine
//! `tracker.judge_for(route_id)` (the id [`TaskTracker::assign_routes`] gave the route's name),
//! a [`RouteMemory`] implementing
//! [`TransitionJudge`](crate::engine::TransitionJudge). Bounded by `tracker.capacity`
//! (least recently seen evicted) and `tracker.ttl` (README, "Task memory").

mod memory;
mod metrics;
mod shard;
mod transition;

pub use memory::{EvictionReason, RouteMemory, TaskTracker};
pub use metrics::TrackerCollector;

#[cfg(test)]
mod tests;
