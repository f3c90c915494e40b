//! The inspection engine: JSON bytes and compiled rules in, a verdict and patched bytes out.
//!
//! Pure: no I/O, no async, no metrics, no `http` types. The proxy layer, the `inspect`
//! command, the tests, the fuzzer and the benchmarks all call [`inspect`].

mod verdict;

pub use verdict::{
    Field, Fix, Inspection, Issue, Level, NoMemory, Outcome, RecordState, RecordVerdict,
    SkipReason, TransitionFinding, TransitionJudge,
};
