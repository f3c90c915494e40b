//! Unit tests for the demo's stand-in: which task gets which fault, and what each answer says.

use super::{Backend, Backwards, STALLED_TASK};

/// (status, stage, progress) of each answer to `polls` polls of task `id`.
fn answers(backend: &Backend, id: u64, polls: usize) -> Vec<(String, String, u64)> {
    (0..polls)
        .map_while(|_| {
            let served = backend.poll(id)?;
            let record: serde_json::Value =
                serde_json::from_str(&backend.render(id, served)).ok()?;
            Some((
                record["status"].as_str()?.to_owned(),
                record["stage"].as_str()?.to_owned(),
                record["progress"].as_u64()?,
            ))
        })
        .collect()
}

/// Creates tasks until the one with id `id`, every one of brand `brand`.
fn backend_up_to(id: u64, brand: &str) -> Backend {
    let backend = Backend::new(0.0, 42);
    let backend = std::sync::Arc::try_unwrap(backend).expect("the only handle");
    while backend.create(brand) < id {}
    backend
}

fn answer(status: &str, stage: &str, progress: u64) -> (String, String, u64) {
    (status.to_owned(), stage.to_owned(), progress)
}

/// The flow up to `source_tracing`, as every task that does not fail answers it.
fn working() -> Vec<(String, String, u64)> {
    vec![
        answer("pending", "init", 0),
        answer("running", "ai_fetching", 25),
        answer("running", "ranking_analysis", 50),
        answer("running", "source_tracing", 75),
    ]
}

#[test]
fn the_first_task_stays_at_ai_fetching_for_good() {
    let backend = backend_up_to(STALLED_TASK, "brand");
    let seen = answers(&backend, STALLED_TASK, 20);
    assert_eq!(seen[0], answer("pending", "init", 0));
    assert!(seen[1..]
        .iter()
        .all(|a| *a == answer("running", "ai_fetching", 25)));
    assert_eq!(backend.stalls.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(backend.injected_total(), 1);
}

#[test]
fn progress_moves_back_once_before_completed() {
    let backend = backend_up_to(3, "brand");
    let mut expected = working();
    expected.push(answer("running", "source_tracing", 50));
    expected.push(answer("completed", "completed", 100));
    expected.push(answer("completed", "completed", 100));
    assert_eq!(answers(&backend, 3, 7), expected);
    assert_eq!(backend.served_backwards(Backwards::ProgressBack), 1);
}

#[test]
fn a_stage_goes_back_once_before_completed() {
    let backend = backend_up_to(6, "brand");
    let mut expected = working();
    expected.push(answer("running", "ranking_analysis", 75));
    expected.push(answer("completed", "completed", 100));
    assert_eq!(answers(&backend, 6, 6), expected);
    assert_eq!(backend.served_backwards(Backwards::StageBack), 1);
}

#[test]
fn a_finished_task_is_reported_running_once_after_completed() {
    let backend = backend_up_to(9, "brand");
    let mut expected = working();
    expected.push(answer("completed", "completed", 100));
    expected.push(answer("running", "source_tracing", 100));
    expected.push(answer("completed", "completed", 100));
    expected.push(answer("completed", "completed", 100));
    assert_eq!(answers(&backend, 9, 8), expected);
    assert_eq!(backend.served_backwards(Backwards::Reopened), 1);
}

#[test]
fn a_failing_task_never_reaches_its_step_backwards() {
    let backend = backend_up_to(9, "fail-brand");
    for id in [3, 6, 9] {
        let seen = answers(&backend, id, 8);
        assert_eq!(seen[3], answer("failed", "failed", 0), "task {id}");
        assert!(seen[3..].iter().all(|a| a.0 == "failed"), "task {id}");
    }
    assert!(Backwards::ALL
        .iter()
        .all(|&kind| backend.served_backwards(kind) == 0));
}

#[test]
fn tasks_without_a_fault_run_straight_through() {
    let backend = backend_up_to(10, "brand");
    let mut expected = working();
    expected.push(answer("completed", "completed", 100));
    for id in [2, 4, 5, 7, 8, 10] {
        assert_eq!(answers(&backend, id, 5), expected, "task {id}");
    }
    assert_eq!(backend.injected_total(), 1, "only the stalled task");
}
