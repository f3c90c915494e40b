//! `consistency-sidecar demo`: the whole story in a few seconds, with nothing else installed.
//!
//! A stand-in of the legacy backend injects faults (records that contradict themselves at a
//! known rate, answers that run a task backwards on a fixed schedule, one task that stalls), the
//! real sidecar stack runs in front of it on loopback, and simulated front ends poll their tasks
//! through the sidecar, checking every answer they get. At the end the sidecar's own report is
//! fetched from its admin port and set beside what the stand-in injected ([`tally`]).

mod backend;
mod tally;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use backend::{Backend, STALLED_TASK};
use tally::ClientTally;

use super::{admin_client, EX_USAGE};
use crate::config::{Config, LogFormat};
use crate::engine::{self, Mode, Outcome, TransitionKind};
use crate::report::Status;
use crate::settings::Settings;
use crate::tracker::TaskTracker;

use crate::BoxError;
type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the simulated clients poll.
    #[arg(long, value_name = "DURATION", default_value = "6s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Share of finished-task answers the stand-in backend makes contradict themselves (0..=1).
    /// The answers that run a task backwards and the stalled task come on a fixed schedule.
    #[arg(long, value_name = "RATE", default_value_t = 0.05)]
    pub inject_rate: f64,
    /// Simulated polling clients.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub clients: usize,
    /// Keep serving after the summary until Ctrl-C, so the metrics and report URLs can be opened.
    #[arg(long)]
    pub keep_running: bool,
}

/// Runs the demo; a bad flag exits 64.
pub fn run(args: &DemoArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.inject_rate) || args.clients == 0 {
        eprintln!(
            "consistency-sidecar: --inject-rate must be within 0..=1 and --clients at least 1"
        );
        return ExitCode::from(EX_USAGE);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("consistency-sidecar: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("consistency-sidecar demo: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: &DemoArgs) -> Result<(), BoxError> {
    // Issues are logged one event each; in a demo that would drown the story, so only errors
    // show unless RUST_LOG asks for more.
    crate::logging::init_with_default(LogFormat::Text, "error");

    let backend = Backend::new(args.inject_rate, 42);
    let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend_listener.local_addr()?;
    let backend_task = tokio::spawn(backend.clone().serve(backend_listener));

    let mut config = Config {
        upstream: format!("http://{backend_addr}").parse()?,
        mode: Mode::Fix,
        ..Config::default()
    };
    let stall_after = stall_limit(args.duration);
    config.tracker.stall_after = stall_after;
    let settings = Arc::new(Settings::compile(config)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sidecar = tokio::spawn(crate::server::serve(
        listener,
        admin,
        settings.clone(),
        None,
        async {
            let _ = stopped.await;
        },
    ));

    println!("consistency-sidecar demo");
    println!("  stand-in legacy backend  http://{backend_addr}");
    println!(
        "      contradicts itself in {:.1}% of finished-task answers, runs 3 tasks in 10 backwards once,",
        args.inject_rate * 100.0
    );
    println!("      and never moves its first task (demo-{STALLED_TASK}) past ai_fetching");
    println!("  sidecar (fix mode)       http://{proxy_addr}");
    println!(
        "      a task unchanged for {} is stalled (tracker.stall_after, 10m by default)",
        humantime::format_duration(stall_after)
    );
    println!("  status page              http://{admin_addr}/status  (open it in a browser)");
    println!("  admin                    http://{admin_addr}/metrics");
    println!(
        "  {} simulated front ends polling for {}\n",
        args.clients,
        humantime::format_duration(args.duration)
    );

    let tally = Arc::new(ClientTally::default());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + args.duration;
    let clients: Vec<_> = (0..args.clients)
        .map(|n| {
            tokio::spawn(front_end(
                n,
                client.clone(),
                proxy_addr,
                deadline,
                tally.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        println!(
            "  {:>4.1}s  polls {:>6}  tasks finished {:>4}  faults injected {:>4}  answers at clients: contradictory {}, backwards {}",
            started.elapsed().as_secs_f64(),
            tally.polls.load(Ordering::Relaxed),
            tally.tasks_finished.load(Ordering::Relaxed),
            backend.injected_total(),
            tally.contradictory.load(Ordering::Relaxed),
            tally.backwards.load(Ordering::Relaxed),
        );
    }
    for client in clients {
        let _ = client.await;
    }

    let admin_url = format!("http://{admin_addr}");
    let report_text = admin_client::fetch_text(&format!("{admin_url}/report")).await?;
    let status: Status = serde_json::from_str(
        &admin_client::fetch_text(&format!("{admin_url}/report.json")).await?,
    )?;
    println!("\n{report_text}");
    tally::tell(&backend, &tally, &status, &settings.config);

    if args.keep_running {
        println!("\nStill serving (Ctrl-C to stop):");
        println!("  {admin_url}/status   # the status page, in a browser");
        println!("  curl -s {admin_url}/metrics | grep ^consistency_");
        println!("  consistency-sidecar report --admin {admin_url}");
        println!(
            "  curl -s http://{proxy_addr}/test/status/demo-{STALLED_TASK}   # the stalled task"
        );
        let _ = tokio::signal::ctrl_c().await;
    } else {
        println!("\nWhere to look next:");
        println!("  consistency-sidecar run --upstream http://127.0.0.1:5000   # in front of the real backend");
        println!("  curl -s http://127.0.0.1:9464/metrics | grep ^consistency_  # what Prometheus scrapes");
        println!("  consistency-sidecar report                                   # this report, from a running sidecar");
        println!("  config/sidecar.toml, consistency-sidecar check-config        # routes, rules, limits");
        println!("  consistency-sidecar demo --keep-running                      # keep this demo up to poke at it");
    }
    let _ = stop.send(());
    let _ = sidecar.await;
    backend_task.abort();
    Ok(())
}

/// A third of the run, in whole tenths of a second: the stalled task is found well before the
/// end, and no task that moves is ever that slow.
fn stall_limit(run: Duration) -> Duration {
    let tenths = (run.as_millis() / 300).max(1);
    Duration::from_millis(
        u64::try_from(tenths)
            .unwrap_or(u64::MAX)
            .saturating_mul(100),
    )
}

/// One front end: create a task, poll it until it ends (and a few times after, as pages do)
/// or the run ends, judging every answer with the same engine, in observe mode and with a
/// memory of its own tasks: what reaches it, across polls too.
async fn front_end(
    n: usize,
    client: HttpClient,
    proxy: std::net::SocketAddr,
    deadline: Instant,
    tally: Arc<ClientTally>,
) {
    let judge = Settings::compile(Config {
        mode: Mode::Observe,
        ..Config::default()
    });
    let Ok(judge) = judge else { return };
    // The default configuration's first route is `task_status`.
    let Some(status_route) = judge.routes.iter().next() else {
        return;
    };
    let memory = TaskTracker::new(&judge.config.tracker, &judge.config.model);
    let Some(&memory_route) = memory.assign_routes(&[status_route.name()]).first() else {
        return;
    };
    let status_route = status_route.spec();
    let mut round = 0usize;
    while Instant::now() < deadline {
        round += 1;
        // Every fifth task fails on purpose, as real brand tests sometimes do.
        let brand = if (n + round).is_multiple_of(5) {
            "fail-brand"
        } else {
            "brand"
        };
        let Ok(created) = request(
            &client,
            http::Method::POST,
            proxy,
            "/api/perform-brand-test",
            format!(r#"{{"brand_list": ["{brand}-{n}-{round}"], "selectedModels": ["demo"]}}"#),
        )
        .await
        else {
            return;
        };
        let Some(id) = serde_json::from_slice::<serde_json::Value>(&created)
            .ok()
            .and_then(|v| v.get("execution_id")?.as_str().map(str::to_owned))
        else {
            return;
        };
        let mut extra_polls = 3;
        // A task that never ends is polled until the run does, as a page that hangs would.
        loop {
            if Instant::now() >= deadline {
                return;
            }
            let Ok(body) = request(
                &client,
                http::Method::GET,
                proxy,
                &format!("/test/status/{id}"),
                String::new(),
            )
            .await
            else {
                return;
            };
            tally.polls.fetch_add(1, Ordering::Relaxed);
            let verdict = engine::inspect(
                &judge.rules,
                status_route,
                &body,
                &mut memory.judge_for(memory_route),
            );
            let terminal = match verdict.outcome {
                Outcome::Checked(records) => {
                    let issues = || records.iter().flat_map(|r| &r.issues);
                    if issues().any(|issue| !is_transition(&issue.rule)) {
                        tally.contradictory.fetch_add(1, Ordering::Relaxed);
                    }
                    if issues().any(|issue| is_transition(&issue.rule)) {
                        tally.backwards.fetch_add(1, Ordering::Relaxed);
                    }
                    records
                        .iter()
                        .any(|r| matches!(r.sent.status.as_deref(), Some("completed" | "failed")))
                }
                Outcome::Skipped(_) => false,
            };
            if terminal {
                if extra_polls == 3 {
                    tally.tasks_finished.fetch_add(1, Ordering::Relaxed);
                }
                if extra_polls == 0 {
                    break;
                }
                extra_polls -= 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Whether `rule` is one of the task memory's rules (across polls), not a single record's.
fn is_transition(rule: &str) -> bool {
    TransitionKind::ALL.iter().any(|kind| kind.as_str() == rule)
}

async fn request(
    client: &HttpClient,
    method: http::Method,
    addr: std::net::SocketAddr,
    path: &str,
    body: String,
) -> Result<Bytes, BoxError> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await??;
    Ok(response.into_body().collect().await?.to_bytes())
}
