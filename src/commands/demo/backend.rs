//! An in-process stand-in of the legacy backend for the demo: tasks that advance one stage per
//! poll, and inconsistencies injected at a known rate into finished tasks' records.

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

#[derive(Debug, Clone, Copy)]
struct Task {
    stage: usize,
    fails: bool,
    failed: bool,
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
        })
    }

    pub fn injected_total(&self) -> u64 {
        self.injected
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
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
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let task = Task {
                    stage: 0,
                    fails: brand.contains("fail"),
                    failed: false,
                };
                self.lock_tasks().insert(id, task);
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
                    Some(task) => json(StatusCode::OK, self.render(id.unwrap_or_default(), task)),
                    None => json(
                        StatusCode::NOT_FOUND,
                        r#"{"error": "task not found"}"#.into(),
                    ),
                }
            }
            _ => json(StatusCode::NOT_FOUND, r#"{"error": "not found"}"#.into()),
        }
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Advances the task one step and returns its state as of this poll.
    fn poll(&self, id: u64) -> Option<Task> {
        let mut tasks = self.lock_tasks();
        let task = tasks.get_mut(&id)?;
        let seen = *task;
        if !task.failed && task.stage < STAGES.len() - 1 {
            if task.fails && task.stage == 2 {
                task.failed = true;
            } else {
                task.stage += 1;
            }
        }
        Some(seen)
    }

    fn render(&self, id: u64, task: Task) -> String {
        self.records.fetch_add(1, Ordering::Relaxed);
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
        format!(
            concat!(
                "{{\"task_id\": \"demo-{}\", \"status\": \"{}\", \"stage\": \"{}\", \"progress\": {}, ",
                "\"is_completed\": {}, \"brand\": \"\\u54c1\\u724c\", \"results\": [], ",
                "\"detail\": {{\"status\": \"ok\", \"stage\": \"n/a\"}}}}"
            ),
            id, status, stage, progress, is_completed
        )
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

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
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
