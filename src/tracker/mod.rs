//! Task memory across polls: what was last sent for each task, and the transition rules
//! (`stage_regression`, `terminal_reopened`, `terminal_changed`, `progress_regression`)
//! that judge the next response against it.
//!
//! One [`TaskMemory`] per sidecar, shared by every connection. Per inspected response of a
//! tracked route, the inspection layer runs the engine through [`TaskMemory::judged`], which
//! hands it a [`TransitionJudge`](crate::engine::TransitionJudge) for that route.
//!
//! - `memory`, `shard`: [`TaskTracker`], the local memory, bounded by `tracker.capacity`
//!   (least recently seen evicted) and `tracker.ttl`.
//! - `transition`: the model's codes, the merge of what was sent, the four rules.
//! - `store`: [`TaskMemory`], local memory or Redis shared by every replica (`tracker.store`).
//! - `stall`: stalled and abandoned tasks and stage durations, judged from each task's
//!   timestamps (first seen, last changed, last polled); observation only.
//! - `redis`: the Redis side: `judge.lua` (judge-and-remember in one atomic call) and
//!   `correct.lua`, the connection, failures counted and probed.

mod memory;
mod metrics;
mod redis;
mod shard;
mod stall;
mod store;
mod transition;

pub use memory::{EvictionReason, RouteMemory, StalledNow, TaskTracker, TaskView};
pub use metrics::TrackerCollector;
pub use redis::check_url as check_redis_url;
pub use redis::client as redis_client;
pub use redis::redacted_url as redacted_redis_url;
pub use stall::{StalledTask, LISTED as STALLED_LISTED};
pub use store::{MemoryRoute, StoreErrorReason, StoreMetrics, TaskMemory};
pub use transition::rule_labels;

#[cfg(test)]
mod tests;
