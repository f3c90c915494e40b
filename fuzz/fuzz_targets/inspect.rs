//! Fuzz target: the engine on arbitrary bytes, under every kind of record pointer and both modes.
//!
//! Checks: no panic; a skipped body is untouched; what is checked, serde_json parses (and
//! what serde_json parses is never called unparseable); the output parses; fixing the output
//! again changes nothing; observe mode never changes the body.
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use consistency_sidecar::config::Config;
use consistency_sidecar::engine::{
    inspect, Field, Level, Mode, NoMemory, Outcome, RecordState, RouteSpec, RuleSet, SkipReason,
    TransitionFinding, TransitionJudge,
};
use libfuzzer_sys::fuzz_target;

/// Proposes a progress fix for every record, to drive the transition path.
struct Proposer;

impl TransitionJudge for Proposer {
    fn judge(&mut self, _: &str, state: &RecordState) -> Vec<TransitionFinding> {
        let progress = state.progress.unwrap_or(0.0);
        vec![TransitionFinding {
            rule: Arc::from("progress_regression"),
            level: Level::MinorIssue,
            message: String::new(),
            fix: Some((Field::Progress, serde_json::json!(progress + 1.0))),
            shadow: false,
        }]
    }
    fn remember(&mut self, _: &str, _: &RecordState) {}
}

struct Setup {
    rules: RuleSet,
    routes: Vec<(RouteSpec, RouteSpec)>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = Config::default();
        let spec = |records: &str, mode: Mode| {
            RouteSpec::compile(records, &config.fields, mode, true, config.tracker.max_task_id_bytes).expect("route compiles")
        };
        Setup {
            rules: RuleSet::compile(&config.model, &config.rules).expect("default rules compile"),
            routes: ["", "/data", "/history/*"]
                .into_iter()
                .map(|r| (spec(r, Mode::Fix), spec(r, Mode::Observe)))
                .collect(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let input = Bytes::copy_from_slice(data);
    let serde_ok = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    for (i, (fix, observe)) in setup.routes.iter().enumerate() {
        let out = if i == 0 {
            inspect(&setup.rules, fix, &input, &mut Proposer)
        } else {
            inspect(&setup.rules, fix, &input, &mut NoMemory)
        };
        match &out.outcome {
            Outcome::Skipped(reason) => {
                assert!(out.body.as_ptr() == input.as_ptr() && out.body.len() == input.len());
                let unparseable = *reason == SkipReason::Unparseable;
                assert_eq!(
                    unparseable, !serde_ok,
                    "engine and serde_json disagree on validity"
                );
            }
            Outcome::Checked(_) => {
                assert!(serde_ok, "the engine checked what serde_json rejects");
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&out.body).is_ok(),
                    "output parses"
                );
                let again = inspect(&setup.rules, fix, &out.body, &mut NoMemory);
                assert!(
                    again.body.as_ptr() == out.body.as_ptr(),
                    "fixing twice changes more"
                );
            }
        }
        let seen = inspect(&setup.rules, observe, &input, &mut NoMemory);
        assert!(seen.body.as_ptr() == input.as_ptr() && seen.body.len() == input.len());
    }
});
