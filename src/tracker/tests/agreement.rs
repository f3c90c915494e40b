//! Unit tests for the agreement of the two transition judges: `judge.lua`, which judges and
//! remembers in Redis, and the Rust judge of the local memory (`transition.rs`).
//!
//! A property test feeds random poll sequences through the whole engine twice: once with a
//! local memory, once with two replicas sharing a real `redis-server` and taking the bodies in
//! turn. Every verdict (issues, fixes, the bytes sent), every task's memory after each body,
//! and every correction the Redis side had to make must match what the local memory says.

use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use super::{redis_server::RedisServer, Replica};
use crate::config::{Config, TrackerStore};
use crate::engine::{self, Outcome, TransitionKind};
use crate::settings::Settings;
use crate::tracker::redis::decode;
use crate::tracker::transition::Snapshot;

/// Poll sequences tried per run.
const SEQUENCES: u32 = 256;
/// The task ids the records name: few, so that tasks come back and repeat within a body.
const TASKS: [&str; 3] = ["a", "b", "c"];

/// One record of a body, its fields as JSON text (`None`: the key is absent).
#[derive(Debug, Clone)]
struct Record {
    task: usize,
    status: Option<&'static str>,
    stage: Option<&'static str>,
    progress: Option<&'static str>,
    is_completed: Option<bool>,
}

/// One random case: which transition fixes are on, and the bodies polled, in order.
#[derive(Debug, Clone)]
struct Sequence {
    hold_stage: bool,
    hold_progress: bool,
    bodies: Vec<Vec<Record>>,
}

fn record() -> impl Strategy<Value = Record> {
    // Every name of the shipped model, one outside it, and absence.
    let status = prop::sample::select(vec![
        Some("\"pending\""),
        Some("\"running\""),
        Some("\"completed\""),
        Some("\"failed\""),
        Some("\"paused\""),
        None,
    ]);
    let stage = prop::sample::select(vec![
        Some("\"init\""),
        Some("\"ai_fetching\""),
        Some("\"ranking_analysis\""),
        Some("\"source_tracing\""),
        Some("\"completed\""),
        Some("\"failed\""),
        Some("\"warming\""),
        None,
    ]);
    // Equal values written differently, fractions, out of range, not numbers, absence.
    let progress = prop::sample::select(vec![
        Some("0"),
        Some("10"),
        Some("40"),
        Some("40.0"),
        Some("4e1"),
        Some("40.25"),
        Some("60"),
        Some("100"),
        Some("150"),
        Some("-5"),
        Some("\"50\""),
        Some("null"),
        None,
    ]);
    let is_completed = prop::option::of(any::<bool>());
    (0..TASKS.len(), status, stage, progress, is_completed).prop_map(
        |(task, status, stage, progress, is_completed)| Record {
            task,
            status,
            stage,
            progress,
            is_completed,
        },
    )
}

fn sequence() -> impl Strategy<Value = Sequence> {
    let body = prop::collection::vec(record(), 1..=4);
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(body, 1..=12),
    )
        .prop_map(|(hold_stage, hold_progress, bodies)| Sequence {
            hold_stage,
            hold_progress,
            bodies,
        })
}

/// `{"history": [...]}`, one object per record.
fn body(records: &[Record]) -> Bytes {
    let objects: Vec<String> = records
        .iter()
        .map(|r| {
            let mut fields = vec![format!("\"task_id\":\"{}\"", TASKS[r.task])];
            let mut field = |key: &str, value: Option<String>| {
                if let Some(value) = value {
                    fields.push(format!("\"{key}\":{value}"));
                }
            };
            field("status", r.status.map(str::to_owned));
            field("stage", r.stage.map(str::to_owned));
            field("progress", r.progress.map(str::to_owned));
            field("is_completed", r.is_completed.map(|b| b.to_string()));
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    Bytes::from(format!("{{\"history\":[{}]}}", objects.join(",")))
}

/// The shipped configuration with one tracked route in fix mode taking several records per
/// body, the case's transition fixes, and the store `redis` names (local without).
fn settings(case: &Sequence, redis: Option<(&RedisServer, &str)>) -> Settings {
    let mut config = Config::default();
    let mut route = config
        .routes
        .iter()
        .find(|r| r.records == "/history/*")
        .expect("the shipped history route")
        .clone();
    route.track = true;
    config.routes = vec![route];
    config.tracker.rules.stage_regression.fix = case.hold_stage;
    config.tracker.rules.progress_regression.fix = case.hold_progress;
    if let Some((server, prefix)) = redis {
        config.tracker.store = TrackerStore::Redis;
        config.tracker.redis_url = server.url();
        config.tracker.key_prefix = prefix.to_owned();
        // Generous: a loaded machine must never send a body to the fallback.
        config.tracker.timeout = Duration::from_secs(5);
    }
    Settings::compile(config).expect("test config is valid")
}

/// Tasks of the body whose transition fix the engine proposed and a single-record rule
/// vetoed: the judge script predicted the fix, so these are the keys Redis must correct.
fn vetoed(outcome: &Outcome, case: &Sequence) -> Vec<String> {
    let Outcome::Checked(verdicts) = outcome else {
        return Vec::new();
    };
    let held = |rule: &str| {
        (case.hold_stage && rule == TransitionKind::StageRegression.as_str())
            || (case.hold_progress && rule == TransitionKind::ProgressRegression.as_str())
    };
    let mut tasks: Vec<String> = verdicts
        .iter()
        .filter(|v| {
            v.issues
                .iter()
                .any(|issue| held(&issue.rule) && !v.fixes.iter().any(|fix| fix.rule == issue.rule))
        })
        .filter_map(|v| v.task_id.clone())
        .collect();
    tasks.dedup();
    tasks
}

/// Same fields, NaN (never sent) equal to NaN.
fn same(a: Option<Snapshot>, b: Option<Snapshot>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.stage == b.stage
                && a.status == b.status
                && (a.progress == b.progress || a.progress.is_nan() && b.progress.is_nan())
        }
        _ => false,
    }
}

/// What Redis holds for `task` under `prefix`, decoded.
async fn stored(
    connection: &mut ::redis::aio::MultiplexedConnection,
    prefix: &str,
    task: &str,
) -> Result<Option<Snapshot>, TestCaseError> {
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}test_history:*:{task}"))
        .query_async(connection)
        .await
        .expect("KEYS");
    prop_assert!(keys.len() <= 1, "one key per task: {keys:?}");
    let Some(key) = keys.first() else {
        return Ok(None);
    };
    let value: String = ::redis::cmd("GET")
        .arg(key)
        .query_async(connection)
        .await
        .expect("GET");
    let decoded = decode(&value);
    prop_assert!(decoded.is_some(), "the script stored {value:?}");
    Ok(decoded)
}

/// Runs one sequence through both stores, comparing after every body.
async fn agree(
    server: &RedisServer,
    case_number: u32,
    case: &Sequence,
) -> Result<(), TestCaseError> {
    let prefix = format!("case{case_number}:");
    let local_settings = settings(case, None);
    let shared_settings = settings(case, Some((server, &prefix)));
    let local = Replica::new(&local_settings);
    let replicas = [
        Replica::new(&shared_settings),
        Replica::new(&shared_settings),
    ];
    let mut connection = super::connect(server).await;
    let route = local_settings
        .routes
        .iter()
        .next()
        .expect("one route")
        .spec();
    let rules = &*local_settings.rules;
    for (n, records) in case.bodies.iter().enumerate() {
        let sent = body(records);
        let expected = local
            .judged(0, |judge| engine::inspect(rules, route, &sent, judge))
            .await;
        let replica = &replicas[n % 2];
        let corrected = replica.corrected();
        let got = replica
            .judged(0, |judge| engine::inspect(rules, route, &sent, judge))
            .await;
        prop_assert_eq!(replica.store_errors(), 0, "body {} fell back to local", n);
        prop_assert_eq!(&got.outcome, &expected.outcome, "verdicts of body {}", n);
        prop_assert_eq!(&got.body, &expected.body, "bytes sent of body {}", n);

        let corrections = replica.corrected() - corrected;
        let vetoed = vetoed(&expected.outcome, case);
        prop_assert!(
            corrections <= vetoed.len() as u64,
            "body {}: {} corrections, but only {:?} had a fix vetoed",
            n,
            corrections,
            vetoed
        );
        let once = records
            .iter()
            .all(|r| records.iter().filter(|o| o.task == r.task).count() == 1);
        if once {
            prop_assert_eq!(
                corrections,
                vetoed.len() as u64,
                "body {}: each vetoed fix is corrected",
                n
            );
        }

        let memory = local.memory.local().judge_for(0);
        for task in TASKS {
            let remembered = memory.recall(task);
            let shared = stored(&mut connection, &prefix, task).await?;
            prop_assert!(
                same(remembered, shared),
                "after body {}, task {}: local memory {:?}, Redis {:?}",
                n,
                task,
                remembered,
                shared
            );
        }
    }
    Ok(())
}

#[test]
fn the_lua_judge_and_the_rust_judge_agree_on_random_poll_sequences() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: SEQUENCES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Every case, shrinking included, under a key prefix of its own.
    let cases = Cell::new(0);
    let result = runner.run(&sequence(), |case| {
        cases.set(cases.get() + 1);
        runtime.block_on(agree(&server, cases.get(), &case))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(cases.get() >= SEQUENCES, "{} sequences tried", cases.get());
}
