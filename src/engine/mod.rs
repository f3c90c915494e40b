//! The inspection engine: JSON bytes and compiled rules in, a verdict and patched bytes out.
//!
//! Pure: no I/O, no async, no metrics, no `http` types. The proxy layer, the `inspect`
//! command, the tests, the fuzzer and the benchmarks all call [`inspect`].
//!
//! It depends on nothing else in the crate: `config` builds on its vocabulary and schema.
//!
//! - `vocab`: [`Level`], [`Field`], [`Mode`], [`RuleMode`], [`TransitionKind`]: the names rules, metrics and
//!   the report share.
//! - `schema`: the engine's input as the file spells it (task model, field keys, declarative
//!   rules) and [`ConfigError`].
//! - `json`: a validating scanner that records the spans of the records' top-level fields.
//! - `route`: [`RouteSpec`], where a route's records are and what their fields are called.
//! - `rules`: [`RuleSet`], the declarative rules compiled once.
//! - `value`: field values as rules compare them.
//! - `inspect`: the check, the fixpoint, the transition judge, the byte patch.
//! - `shown`: [`cut`], text from a response bounded where it is shown or kept.

mod inspect;
mod json;
mod route;
mod rules;
mod schema;
mod shown;
mod value;
mod verdict;
mod vocab;

pub use inspect::inspect;
pub use route::RouteSpec;
pub use rules::{RuleLabel, RuleSet};
pub use schema::{
    Condition, ConfigError, Conjunction, FieldsConfig, ModelConfig, RuleConfig, When,
};
pub use shown::{cut, SHOWN_TEXT_BYTES};
pub use verdict::{
    Fix, Inspection, Issue, NoMemory, Outcome, RecordState, RecordVerdict, SkipReason,
    TransitionFinding, TransitionJudge,
};
pub use vocab::{Field, Level, Mode, RuleMode, TransitionKind};

#[cfg(test)]
mod tests;
