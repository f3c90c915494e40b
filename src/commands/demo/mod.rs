//! `consistency-sidecar demo`: the whole story in a few seconds, with nothing else installed.
//!
//! A stand-in of the legacy backend injects inconsistencies at a known rate, the real sidecar
//! stack runs in front of it on loopback, and simulated front ends poll their tasks through the
//! sidecar, checking every answer they get. At the end the sidecar's own report is fetched from
//! its admin port and set beside what the stand-in injected.

mod backend;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use backend::{Backend, INJECTED_RULES};

use super::{admin_client, EX_USAGE};
use crate::config::{Config, LogFormat};
use crate::engine::{self, Mode, NoMemory, Outcome};
use crate::report::Report;
use crate::settings::Settings;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the simulated clients poll.
    #[arg(long, value_name = "DURATION", default_value = "6s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Share of responses the stand-in backend makes inconsistent (0..=1).
    #[arg(long, value_name = "RATE", default_value_t = 0.05)]
    pub inject_rate: f64,
    /// Simulated polling clients.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub clients: usize,
    /// Keep serving after the summary until Ctrl-C, so the metrics and report URLs can be opened.
    #[arg(long)]
    pub keep_running: bool,
}

/// What the simulated front ends saw.
#[derive(Debug, Default)]
struct ClientTally {
    polls: AtomicU64,
    /// Answers that broke a rule when they reached the client.
    inconsistent: AtomicU64,
    tasks_finished: AtomicU64,
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

    let config = Config {
        upstream: format!("http://{backend_addr}").parse()?,
        mode: Mode::Fix,
        ..Config::default()
    };
    let settings = Arc::new(Settings::compile(config)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sidecar = tokio::spawn(crate::server::serve(
        listener,
        admin,
        settings,
        None,
        async {
            let _ = stopped.await;
        },
    ));

    println!("consistency-sidecar demo");
    println!("  stand-in legacy backend  http://{backend_addr}  (injects inconsistencies into {:.1}% of finished-task answers)", args.inject_rate * 100.0);
    println!("  sidecar (fix mode)       http://{proxy_addr}");
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
            "  {:>4.1}s  polls {:>6}  tasks finished {:>4}  injected {:>4}  inconsistent answers seen by clients {}",
            started.elapsed().as_secs_f64(),
            tally.polls.load(Ordering::Relaxed),
            tally.tasks_finished.load(Ordering::Relaxed),
            backend.injected_total(),
            tally.inconsistent.load(Ordering::Relaxed),
        );
    }
    for client in clients {
        let _ = client.await;
    }

    let admin_url = format!("http://{admin_addr}");
    let report_text = admin_client::fetch_text(&format!("{admin_url}/report")).await?;
    let report: Report = serde_json::from_str(
        &admin_client::fetch_text(&format!("{admin_url}/report.json")).await?,
    )?;
    let metrics = admin_client::fetch_text(&format!("{admin_url}/metrics")).await?;
    println!("\n{report_text}");
    summarise(&backend, &tally, &report, &metrics);

    if args.keep_running {
        println!("\nStill serving (Ctrl-C to stop):");
        println!("  {admin_url}/status   # the status page, in a browser");
        println!("  curl -s {admin_url}/metrics | grep ^consistency_");
        println!("  consistency-sidecar report --admin {admin_url}");
        println!("  curl -s http://{proxy_addr}/test/status/demo-1");
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

fn summarise(backend: &Backend, tally: &ClientTally, report: &Report, metrics: &str) {
    let injected = backend.injected_total();
    let fixes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("consistency_fixes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("Injected vs caught:");
    println!(
        "  records served by the backend     {}",
        backend.records.load(Ordering::Relaxed)
    );
    println!("  inconsistencies injected          {injected}");
    for (rule, count) in INJECTED_RULES.iter().zip(&backend.injected) {
        println!("    {rule:<30}  {}", count.load(Ordering::Relaxed));
    }
    println!(
        "  issues caught by the sidecar      {}",
        report.issues_found
    );
    println!("  values fixed in flight            {fixes}");
    println!(
        "  inconsistent answers at clients   {} of {} polls",
        tally.inconsistent.load(Ordering::Relaxed),
        tally.polls.load(Ordering::Relaxed)
    );
    let verdict =
        if report.issues_found == injected && tally.inconsistent.load(Ordering::Relaxed) == 0 {
            "every injected inconsistency was caught and fixed before it reached a client"
        } else {
            "caught and injected differ: look at the report above and the sidecar's logs"
        };
    println!("  => {verdict}");
}

/// One front end: create a task, poll it until it ends (and a few times after, as pages do),
/// judging every answer with the same engine, in observe mode and without memory.
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
    let Some(status_route) = judge.routes.iter().next().map(|r| r.spec()) else {
        return;
    };
    let mut round = 0usize;
    while Instant::now() < deadline {
        round += 1;
        // Every fifth task fails on purpose, as real brand tests sometimes do.
        let brand = if (n + round) % 5 == 0 {
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
        for _ in 0..32 {
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
            let verdict = engine::inspect(&judge.rules, status_route, &body, &mut NoMemory);
            let terminal = match verdict.outcome {
                Outcome::Checked(records) => {
                    if records.iter().any(|r| !r.issues.is_empty()) {
                        tally.inconsistent.fetch_add(1, Ordering::Relaxed);
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
