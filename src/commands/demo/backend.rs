//! An in-process stand-in of the legacy backend for the demo: tasks that advance one stage per
//! poll; inconsistencies injected at a known rate into finished tasks' records; on a fixed
//! schedule, answers that run a task backwards across polls; and one task that stalls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::engine::TransitionKind;

const STAGES: [&str; 5] = [
    "init",
    "ai_fetching",
    "ranking_analysis",
    "source_tracing",
    "completed",
];

/// The inconsistencies the stand-in injects: each breaks exactly one default rule, and that
/// rule's fix restores the real record.
pub const INJECTED_RULES: [&str; 5] = [
    "completed_stage",
    "failed_stage",
    "completed_progress",
    "failed_progress",
    "terminal_not_marked",
];

/// The stage of the last working answer, before `completed`.
const LAST_WORKING: usize = STAGES.len() - 2;
/// Where the stalled task stops: the AI call that never returns.
const STALL_STAGE: usize = 1;
/// The task that stalls: the first one, so it stands still for nearly the whole run.
pub const STALLED_TASK: u64 = 1;

/// Answers that are consistent on their own but run a task backwards: only a memory of the
/// task sees them. Each is served once, in place of the answer due at its point in the flow,
/// to one task in ten of each kind (never the stalled one; a failing task never reaches the
/// point, so it gets none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backwards {
    /// `source_tracing` at 75%, then at 50%.
    ProgressBack,
    /// `source_tracing`, then `ranking_analysis`, progress kept.
    StageBack,
    /// `completed`, then `running` again at `source_tracing` (100%, so progress holds).
    Reopened,
}

#[derive(Debug, Clone, Copy)]
struct Task {
    stage: usize,
    fails: bool,
    failed: bool,
    /// Served once, when due, then cleared.
    backwards: Option<Backwards>,
    /// Stops at `STALL_STAGE` for good: its worker died.
    stalls: bool,
    /// Terminal answers served so far.
    finished_answers: u32,
}

/// One answer to a poll: the task as it stood, or a step backwards in its place.
#[derive(Debug, Clone, Copy)]
struct Served {
    task: Task,
    backwards: Option<Backwards>,
}

/// Shared state of the stand-in, readable while it runs.
#[derive(Debug)]
pub struct Backend {
    tasks: Mutex<HashMap<u64, Task>>,
    next_id: AtomicU64,
    rng: Mutex<SplitMix>,
    inject_rate: f64,
    /// Records served on status routes.
    pub records: AtomicU64,
    /// Inconsistent records injected, per rule of `INJECTED_RULES`.
    pub injected: [AtomicU64; 5],
    /// Answers served that run a task backwards, per kind of `Backwards::ALL`.
    pub backwards: [AtomicU64; 3],
    /// Tasks created that will stall.
    pub stalls: AtomicU64,
}

impl Backend {
    pub fn new(inject_rate: f64, seed: u64) -> Arc<Backend> {
        Arc::new(Backend {
            tasks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            rng: Mutex::new(SplitMix(seed)),
            inject_rate,
            records: AtomicU64::new(0),
            injected: Default::default(),
            backwards: Default::default(),
            stalls: AtomicU64::new(0),
        })
    }

    /// Every fault served so far: contradicting records, steps backwards and stalls.
    pub fn injected_total(&self) -> u64 {
        self.injected
            .iter()
            .chain(&self.backwards)
            .chain([&self.stalls])
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Answers served so far that run a task backwards in this way.
    pub fn served_backwards(&self, kind: Backwards) -> u64 {
        self.backwards[kind as usize].load(Ordering::Relaxed)
    }

    /// Serves until the listener's task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let backend = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let backend = backend.clone();
                    async move { Ok::<_, Infallible>(backend.handle(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/health") => json(StatusCode::OK, r#"{"status": "healthy"}"#.into()),
            (Method::POST, "/api/perform-brand-test") => {
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let brand = body
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.get("brand_list")?.get(0)?.as_str().map(str::to_owned));
                let Some(brand) = brand else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        r#"{"error": "brand_list is required"}"#.into(),
                    );
                };
                let id = self.create(&brand);
                json(
                    StatusCode::OK,
                    format!(r#"{{"status": "success", "execution_id": "demo-{id}"}}"#),
                )
            }
            (Method::GET, p) if p.starts_with("/test/status/") => {
                let id = p["/test/status/".len()..]
                    .strip_prefix("demo-")
                    .and_then(|n| n.parse().ok());
                match id.and_then(|id| self.poll(id)) {
                    Some(served) => {
                        json(StatusCode::OK, self.render(id.unwrap_or_default(), served))
                    }
                    None => json(
                        StatusCode::NOT_FOUND,
                        r#"{"error": "task not found"}"#.into(),
                    ),
                }
            }
            _ => json(StatusCode::NOT_FOUND, r#"{"error": "not found"}"#.into()),
        }
    }

    /// A new task, failing if its brand says so; its id.
    fn create(&self, brand: &str) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stalls = id == STALLED_TASK;
        if stalls {
            self.stalls.fetch_add(1, Ordering::Relaxed);
        }
        let task = Task {
            stage: 0,
            fails: brand.contains("fail"),
            failed: false,
            backwards: (!stalls).then(|| Backwards::for_task(id)).flatten(),
            stalls,
            finished_answers: 0,
        };
        self.lock_tasks().insert(id, task);
        id
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to this poll: a step backwards if one is due (the task then waits), else
    /// the task as it stands, advanced one step for the next poll.
    fn poll(&self, id: u64) -> Option<Served> {
        let mut tasks = self.lock_tasks();
        let task = tasks.get_mut(&id)?;
        let seen = *task;
        if let Some(kind) = task.backwards.filter(|kind| kind.is_due(&seen)) {
            task.backwards = None;
            return Some(Served {
                task: seen,
                backwards: Some(kind),
            });
        }
        task.advance();
        Some(Served {
            task: seen,
            backwards: None,
        })
    }

    fn render(&self, id: u64, served: Served) -> String {
        self.records.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = served.backwards {
            self.backwards[kind as usize].fetch_add(1, Ordering::Relaxed);
            let (stage, progress) = kind.answer();
            return record(id, "running", stage, progress, false);
        }
        let task = served.task;
        let completed = task.stage == STAGES.len() - 1;
        let (status, mut stage, mut progress, mut is_completed) = match (task.failed, completed) {
            (true, _) => ("failed", "failed", 0, true),
            (false, true) => ("completed", "completed", 100, true),
            (false, false) if task.stage == 0 => ("pending", "init", 0, false),
            (false, false) => ("running", STAGES[task.stage], task.stage * 25, false),
        };
        if (task.failed || completed) && self.roll() {
            let pick = self.pick_injection(task.failed);
            self.injected[pick].fetch_add(1, Ordering::Relaxed);
            match INJECTED_RULES[pick] {
                "completed_stage" => stage = "source_tracing",
                "failed_stage" => stage = "ranking_analysis",
                "completed_progress" => progress = 90,
                "failed_progress" => progress = 50,
                _ => is_completed = false,
            }
        }
        record(id, status, stage, progress, is_completed)
    }

    fn roll(&self) -> bool {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).unit() < self.inject_rate
    }

    fn pick_injection(&self, failed: bool) -> usize {
        let r = self.rng.lock().unwrap_or_else(|p| p.into_inner()).next() % 3;
        match (failed, r) {
            (false, 0) => 0,
            (false, 1) => 2,
            (true, 0) => 1,
            (true, 1) => 3,
            _ => 4,
        }
    }
}

/// A status record as the legacy backend writes it, with a nested `status` the rules ignore.
fn record(id: u64, status: &str, stage: &str, progress: usize, is_completed: bool) -> String {
    format!(
        concat!(
            "{{\"task_id\": \"demo-{}\", \"status\": \"{}\", \"stage\": \"{}\", \"progress\": {}, ",
            "\"is_completed\": {}, \"brand\": \"\\u54c1\\u724c\", \"results\": [], ",
            "\"detail\": {{\"status\": \"ok\", \"stage\": \"n/a\"}}}}"
        ),
        id, status, stage, progress, is_completed
    )
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

// === impl Task ===

impl Task {
    fn is_finished(&self) -> bool {
        self.failed || self.stage == STAGES.len() - 1
    }

    /// One step along the flow, as of the next poll.
    fn advance(&mut self) {
        if self.is_finished() {
            self.finished_answers += 1;
            return;
        }
        if self.stalls && self.stage == STALL_STAGE {
            // Its worker died: every later poll gets the same answer.
            return;
        }
        if self.fails && self.stage == 2 {
            self.failed = true;
        } else {
            self.stage += 1;
        }
    }
}

// === impl Backwards ===

impl Backwards {
    pub const ALL: [Backwards; 3] = [
        Backwards::ProgressBack,
        Backwards::StageBack,
        Backwards::Reopened,
    ];

    /// One task in ten of each kind, by id.
    fn for_task(id: u64) -> Option<Backwards> {
        match id % 10 {
            3 => Some(Backwards::ProgressBack),
            6 => Some(Backwards::StageBack),
            9 => Some(Backwards::Reopened),
            _ => None,
        }
    }

    /// Whether this step is served at this poll of a task that stands as `task`: the first
    /// two in place of the first `completed` (so right after `source_tracing` at 75%), a
    /// reopening in place of the second.
    fn is_due(self, task: &Task) -> bool {
        let reached_completed = !task.failed && task.stage == LAST_WORKING + 1;
        match self {
            Backwards::ProgressBack | Backwards::StageBack => {
                reached_completed && task.finished_answers == 0
            }
            Backwards::Reopened => reached_completed && task.finished_answers > 0,
        }
    }

    /// The stage and progress of the answer (its status is `running`).
    fn answer(self) -> (&'static str, usize) {
        match self {
            Backwards::ProgressBack => (STAGES[LAST_WORKING], 50),
            Backwards::StageBack => (STAGES[LAST_WORKING - 1], 75),
            Backwards::Reopened => (STAGES[LAST_WORKING], 100),
        }
    }

    /// What the answer does, as the demo's tally says it.
    pub fn what(self) -> &'static str {
        match self {
            Backwards::ProgressBack => "progress moved back",
            Backwards::StageBack => "a stage went back",
            Backwards::Reopened => "a finished task reported running again",
        }
    }

    /// The transition rules the answer breaks: a reopened task's stage goes back too, since
    /// `completed` ends the flow.
    pub fn breaks(self) -> &'static [TransitionKind] {
        match self {
            Backwards::ProgressBack => &[TransitionKind::ProgressRegression],
            Backwards::StageBack => &[TransitionKind::StageRegression],
            Backwards::Reopened => &[
                TransitionKind::TerminalReopened,
                TransitionKind::StageRegression,
            ],
        }
    }
}

/// SplitMix64: a tiny seeded generator, so a demo run is repeatable.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
