//! The inspection engine: JSON bytes and compiled rules in, a verdict and patched bytes out.
//!
//! Pure: no I/O, no async, no metrics, no `http` types. The proxy layer, the `inspect`
//! command, the tests, the fuzzer and the benchmarks all call [`inspect`].
//!
//! - `json`: a validating scanner that records the spans of the records' top-level fields.
//! - `route`: [`RouteSpec`], where a route's records are and what their fields are called.
//! - `rules`: [`RuleSet`], the declarative rules compiled once.
//! - `value`: field values as rules compare them.
//! - `inspect`: the check, the fixpoint, the transition judge, the byte patch.

mod inspect;
mod json;
mod route;
mod rules;
mod value;
mod verdict;

pub use inspect::{inspect, FIX_NOT_CONVERGING};
pub use route::RouteSpec;
pub use rules::{RuleLabel, RuleSet};
pub use verdict::{
    Field, Fix, Inspection, Issue, Level, NoMemory, Outcome, RecordState, RecordVerdict,
    SkipReason, TransitionFinding, TransitionJudge,
};

#[cfg(test)]
mod tests;
