//! End-to-end tests of in-flight inspection: the real sidecar binary in front of the Python
//! stand-in of the legacy backend, over real sockets. The stand-in keeps its own ledger of the
//! inconsistencies it injected; the sidecar's `/metrics` must agree with it exactly.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{decode, get, get_accepting, post_json, Answer, Scrape, Sidecar, StandIn};

use consistency_sidecar::config::Config;
use consistency_sidecar::engine::Mode;
use consistency_sidecar::engine::{self, NoMemory, Outcome};
use consistency_sidecar::settings::Settings;

const ROUTES: [&str; 3] = ["task_status", "test_progress", "test_history"];
const RULES: [&str; 5] = [
    "completed_stage",
    "failed_stage",
    "completed_progress",
    "failed_progress",
    "terminal_not_marked",
];

/// Judges a body the way a client would: the default rules, no memory, nothing patched.
struct ClientJudge {
    settings: Settings,
}

impl ClientJudge {
    fn new() -> Self {
        let config = Config {
            mode: Mode::Observe,
            ..Config::default()
        };
        ClientJudge {
            settings: Settings::compile(config).unwrap(),
        }
    }

    /// Names of the rules the body breaks (empty: consistent).
    fn broken_rules(&self, route: usize, body: &[u8]) -> Vec<String> {
        let body = bytes::Bytes::copy_from_slice(body);
        let spec = self
            .settings
            .routes
            .iter()
            .nth(route)
            .expect("a configured route")
            .spec();
        match engine::inspect(&self.settings.rules, spec, &body, &mut NoMemory).outcome {
            Outcome::Checked(records) => records
                .iter()
                .flat_map(|r| r.issues.iter().map(|i| i.rule.to_string()))
                .collect(),
            Outcome::Skipped(reason) => vec![format!("skipped:{}", reason.as_str())],
        }
    }
}

/// Drives tasks through their whole life over every inspected route; returns, per route, the
/// rules broken in what the client received.
async fn poll_tasks(
    sidecar: &Sidecar,
    judge: &ClientJudge,
    tasks: usize,
) -> BTreeMap<String, usize> {
    poll_tasks_accepting(sidecar, judge, tasks, None, |_| {}).await
}

/// [`poll_tasks`] by a client sending `accept_encoding`; `seen` is shown the head of every
/// inspected answer.
async fn poll_tasks_accepting(
    sidecar: &Sidecar,
    judge: &ClientJudge,
    tasks: usize,
    accept_encoding: Option<&str>,
    mut seen: impl FnMut(&http::HeaderMap),
) -> BTreeMap<String, usize> {
    let mut seen_broken = BTreeMap::new();
    let mut ids = Vec::new();
    for n in 0..tasks {
        let brand = if n % 4 == 3 { "fail-brand" } else { "brand" };
        let (status, _, body) = post_json(
            &sidecar.url("/api/perform-brand-test"),
            &format!(r#"{{"brand_list": ["{brand}-{n}"], "selectedModels": ["m"]}}"#),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let created: Value = serde_json::from_slice(&body).unwrap();
        ids.push(created["execution_id"].as_str().unwrap().to_string());
    }
    let mut note = |route: usize, body: &[u8]| {
        for rule in judge.broken_rules(route, body) {
            *seen_broken
                .entry(format!("{}:{rule}", ROUTES[route]))
                .or_insert(0) += 1;
        }
    };
    // Each poll advances a task one stage; 5 polls finish it, the rest poll a finished task.
    let poll = |path: String| get_accepting_owned(sidecar.url(&path), accept_encoding);
    for round in 0..9 {
        for id in &ids {
            let (status, headers, body) = poll(format!("/test/status/{id}")).await;
            assert_eq!(status, 200);
            seen(&headers);
            note(0, &decode(&headers, &body));
            if round % 2 == 1 {
                let path = format!("/api/test-progress?executionId={id}");
                let (status, headers, body) = poll(path).await;
                assert_eq!(status, 200);
                seen(&headers);
                note(1, &decode(&headers, &body));
            }
        }
        let (status, headers, body) = poll("/api/test-history".to_string()).await;
        assert_eq!(status, 200);
        seen(&headers);
        note(2, &decode(&headers, &body));
    }
    seen_broken
}

async fn get_accepting_owned(url: String, accept_encoding: Option<&str>) -> Answer {
    get_accepting(&url, accept_encoding).await
}

/// The sidecar's counters must equal the stand-in's ledger, route by route, rule by rule.
fn assert_metrics_match_ledger(metrics: &Scrape, ledger: &Value, fixed: bool) {
    let mut injected_total = 0.0;
    for route in ROUTES {
        let entry = &ledger["routes"][route];
        let value = |key: &str| entry[key].as_f64().unwrap();
        let series = |name: &str, labels: &[(&str, &str)]| metrics.value(name, labels);
        assert_eq!(
            series("consistency_checks_total", &[("route", route)]),
            value("records"),
            "{route} checks"
        );
        assert_eq!(
            series(
                "consistency_results_total",
                &[("route", route), ("level", "consistent")]
            ),
            value("consistent"),
            "{route} consistent"
        );
        assert_eq!(
            series(
                "consistency_results_total",
                &[("route", route), ("level", "minor_issue")]
            ),
            value("minor_issue"),
            "{route} minor"
        );
        for level in ["major_issue", "critical"] {
            assert_eq!(
                series(
                    "consistency_results_total",
                    &[("route", route), ("level", level)]
                ),
                0.0,
                "{route} {level}"
            );
        }
        for rule in RULES {
            let injected = entry["rules"][rule].as_f64().unwrap();
            injected_total += injected;
            assert_eq!(
                series(
                    "consistency_issues_total",
                    &[("route", route), ("rule", rule), ("level", "minor_issue")]
                ),
                injected,
                "{route} issues {rule}"
            );
            let fixes = |mode| {
                series(
                    "consistency_fixes_total",
                    &[("route", route), ("rule", rule), ("mode", mode)],
                )
            };
            assert_eq!(
                fixes("applied"),
                if fixed { injected } else { 0.0 },
                "{route} fixes {rule}"
            );
            assert_eq!(fixes("shadow"), 0.0, "{route} shadow fixes {rule}");
        }
    }
    assert!(
        injected_total >= 10.0,
        "the run must inject enough to mean something: {ledger}"
    );
}

async fn fix_mode_run(extra_standin_args: &[&str]) {
    let Some(standin) = StandIn::start(
        &[
            &["--inject-rate", "0.3", "--seed", "11"],
            extra_standin_args,
        ]
        .concat(),
    )
    .await
    else {
        return;
    };
    let sidecar = Sidecar::start(&standin.url(), "").await;
    let judge = ClientJudge::new();
    let broken = poll_tasks(&sidecar, &judge, 12).await;
    assert!(
        broken.is_empty(),
        "clients saw inconsistent answers in fix mode: {broken:?}"
    );
    let ledger = standin.ledger().await;
    let metrics = sidecar.metrics().await;
    assert_metrics_match_ledger(&metrics, &ledger, true);
}

#[tokio::test]
async fn fix_mode_clients_see_only_consistent_answers_and_metrics_equal_the_ledger() {
    fix_mode_run(&[]).await;
}

#[tokio::test]
async fn fix_mode_with_gzip_responses() {
    fix_mode_run(&["--encoding", "gzip"]).await;
}

#[tokio::test]
async fn fix_mode_with_deflate_chunked_responses() {
    fix_mode_run(&["--encoding", "deflate", "--chunked"]).await;
}

#[tokio::test]
async fn fix_mode_with_chunked_responses() {
    fix_mode_run(&["--chunked"]).await;
}

#[tokio::test]
async fn observe_mode_leaves_every_body_untouched_and_counts_the_same() {
    let Some(standin) = StandIn::start(&["--inject-rate", "0.3", "--seed", "5"]).await else {
        return;
    };
    // In observe mode a re-sent injected record looks like a regression to the task memory;
    // switch those transition rules off so the ledger comparison stays exact.
    let config = "mode = \"observe\"\n[tracker.rules.stage_regression]\nenabled = false\n\
                  [tracker.rules.progress_regression]\nenabled = false\n";
    let sidecar = Sidecar::start(&standin.url(), config).await;
    let judge = ClientJudge::new();
    let broken = poll_tasks(&sidecar, &judge, 12).await;
    let ledger = standin.ledger().await;
    // What the clients saw broken is exactly what was injected: nothing was patched.
    for route in ROUTES {
        for rule in RULES {
            let injected = ledger["routes"][route]["rules"][rule].as_u64().unwrap() as usize;
            let seen = broken.get(&format!("{route}:{rule}")).copied().unwrap_or(0);
            assert_eq!(seen, injected, "{route} {rule}");
        }
    }
    assert_metrics_match_ledger(&sidecar.metrics().await, &ledger, false);
}

#[tokio::test]
async fn fail_open_bodies_pass_through_unchanged_and_are_counted() {
    for chunked in [false, true] {
        let args: &[&str] = if chunked { &["--chunked"] } else { &[] };
        let Some(standin) = StandIn::start(args).await else {
            return;
        };
        let sidecar = Sidecar::start(&standin.url(), "").await;
        for (special, reason) in [
            ("__oversize", "too_large"),
            ("__notjson", "not_json"),
            ("__malformed", "unparseable"),
            ("__gzipbomb", "too_large"),
        ] {
            let path = format!("/test/status/{special}");
            let (direct_status, direct_headers, direct_body) =
                get(&format!("{}{path}", standin.url())).await;
            let (status, headers, body) = get(&sidecar.url(&path)).await;
            assert_eq!(status, direct_status, "{special}");
            assert_eq!(
                body, direct_body,
                "{special} (chunked: {chunked}) must pass byte for byte"
            );
            for name in ["content-type", "content-encoding", "content-length"] {
                assert_eq!(
                    headers.get(name),
                    direct_headers.get(name),
                    "{special} {name}"
                );
            }
            let metrics = sidecar.metrics().await;
            let skipped = metrics.value(
                "consistency_skipped_total",
                &[("route", "task_status"), ("reason", reason)],
            );
            assert!(skipped >= 1.0, "{special} counted as {reason}");
        }
        let metrics = sidecar.metrics().await;
        let too_large = metrics.value(
            "consistency_skipped_total",
            &[("route", "task_status"), ("reason", "too_large")],
        );
        assert_eq!(too_large, 2.0, "oversize and bomb (chunked: {chunked})");
        assert_eq!(
            metrics.value("consistency_checks_total", &[("route", "task_status")]),
            0.0
        );
    }
}

/// The seed's integration flow (e2e_integration_test.py), through the sidecar.
#[tokio::test]
async fn seed_integration_flow_through_the_sidecar() {
    let Some(standin) = StandIn::start(&["--inject-rate", "0.5", "--seed", "3"]).await else {
        return;
    };
    let sidecar = Sidecar::start(&standin.url(), "").await;
    let proxy = |path: &str| sidecar.url(path);

    let (status, _, body) = get(&proxy("/health")).await;
    assert_eq!(status, 200, "health");
    let (status, _, body2) = get(&proxy("/api/test")).await;
    assert_eq!(status, 200);
    let message: Value = serde_json::from_slice(&body2).unwrap();
    assert_eq!(
        message["message"],
        "Backend is working",
        "{}",
        String::from_utf8_lossy(&body)
    );

    for brand in ["Acme", "fail-Acme"] {
        let (status, _, body) = post_json(
            &proxy("/api/perform-brand-test"),
            &format!(r#"{{"brand_list": ["{brand}"]}}"#),
        )
        .await;
        assert_eq!(status, 200);
        let id = serde_json::from_slice::<Value>(&body).unwrap()["execution_id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut last = Value::Null;
        for _ in 0..20 {
            let (status, headers, body) = get(&proxy(&format!("/test/status/{id}"))).await;
            assert_eq!(status, 200);
            let record: Value = serde_json::from_slice(&decode(&headers, &body)).unwrap();
            let (s, stage, done) = (&record["status"], &record["stage"], &record["is_completed"]);
            match s.as_str().unwrap() {
                "completed" => assert!(
                    stage == "completed" && done == true && record["progress"] == 100,
                    "{record}"
                ),
                "failed" => assert!(
                    stage == "failed" && done == true && record["progress"] == 0,
                    "{record}"
                ),
                _ => assert!(
                    done == false && stage != "completed" && stage != "failed",
                    "{record}"
                ),
            }
            let finished = done == true;
            last = record;
            if finished {
                break;
            }
        }
        let expected = if brand.starts_with("fail") {
            "failed"
        } else {
            "completed"
        };
        assert_eq!(last["status"], expected, "task reached its end");
        let (status, _, body) = get(&proxy(&format!("/api/deep-intelligence/{id}"))).await;
        if expected == "completed" {
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let result: Value = serde_json::from_slice(&body).unwrap();
            assert!(result["data"].is_object());
        } else {
            assert_eq!(status, 400);
        }
    }

    // The failure scenario: no brand → the backend's 400 passes through as it is.
    let direct = format!("{}/api/perform-brand-test", standin.url());
    let (direct_status, _, direct_body) = post_json(&direct, "{}").await;
    let (status, _, body) = post_json(&proxy("/api/perform-brand-test"), "{}").await;
    assert_eq!((status, &body), (direct_status, &direct_body));
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].is_string());
}

/// A rule tried out in shadow, in front of the stand-in: clients get what the same config
/// without that rule sends (the stand-in's completed_stage injections, as they were injected),
/// every other injection is fixed, and the sidecar counts each injection of that rule as a
/// shadow fix, in its metrics, its report and its log, without moving the ratio.
#[tokio::test]
async fn a_shadow_rule_is_counted_and_clients_get_the_answers_of_the_config_without_it() {
    let Some(standin) = StandIn::start(&["--inject-rate", "0.3", "--seed", "11"]).await else {
        return;
    };
    // A task re-polled after an injected stale stage would look like a stage regression once
    // the stage is no longer fixed; that rule is off in both, so the ledger stays exact.
    let common = "[tracker.rules.stage_regression]\nenabled = false\n";
    let shadow_config = format!(
        "{common}[inspect]\nshadow_header = true\n\
         [[rules]]\nname = \"completed_stage\"\nmode = \"shadow\"\n"
    );
    let shadow = Sidecar::start(&standin.url(), &shadow_config).await;
    let judge = ClientJudge::new();
    let broken = poll_tasks(&shadow, &judge, 12).await;
    let ledger = standin.ledger().await;
    let metrics = shadow.metrics().await;
    let mut shadowed = 0.0;
    for route in ROUTES {
        let entry = &ledger["routes"][route];
        let injected = |rule: &str| entry["rules"][rule].as_f64().unwrap();
        let seen = |rule: &str| broken.get(&format!("{route}:{rule}")).copied().unwrap_or(0);
        let fixes = |rule: &str, mode: &str| {
            metrics.value(
                "consistency_fixes_total",
                &[("route", route), ("rule", rule), ("mode", mode)],
            )
        };
        for rule in RULES {
            if rule == "completed_stage" {
                // Sent as injected, and counted as what it would have fixed.
                assert_eq!(
                    seen(rule) as f64,
                    injected(rule),
                    "{route} clients saw {rule}"
                );
                assert_eq!(
                    fixes(rule, "shadow"),
                    injected(rule),
                    "{route} {rule} shadow"
                );
                assert_eq!(fixes(rule, "applied"), 0.0, "{route} {rule} applied");
                shadowed += injected(rule);
            } else {
                assert_eq!(seen(rule), 0, "{route}: clients saw {rule} unfixed");
                assert_eq!(
                    fixes(rule, "applied"),
                    injected(rule),
                    "{route} {rule} applied"
                );
                assert_eq!(fixes(rule, "shadow"), 0.0, "{route} {rule} shadow");
            }
            assert_eq!(
                metrics.value(
                    "consistency_issues_total",
                    &[("route", route), ("rule", rule), ("level", "minor_issue")]
                ),
                injected(rule),
                "{route} issues {rule}"
            );
        }
        // The shadow rule's records count as consistent: trying a rule out moves no ratio.
        let level = |level: &str| {
            metrics.value(
                "consistency_results_total",
                &[("route", route), ("level", level)],
            )
        };
        let value = |key: &str| entry[key].as_f64().unwrap();
        assert_eq!(
            level("consistent"),
            value("consistent") + injected("completed_stage"),
            "{route} consistent"
        );
        assert_eq!(
            level("minor_issue"),
            value("minor_issue") - injected("completed_stage"),
            "{route} minor"
        );
    }
    assert!(
        shadowed >= 3.0,
        "enough injections to mean something: {ledger}"
    );

    // The report shows them beside the applied fixes, and the log says "would fix".
    let (status, _, body) = get(&shadow.admin_url("/report.json")).await;
    assert_eq!(status, 200);
    let report: Value = serde_json::from_slice(&body).unwrap();
    let reported: f64 = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|route| route["fixes"].as_array().unwrap())
        .filter(|fix| fix["rule"] == "completed_stage")
        .map(|fix| {
            assert_eq!(fix["applied"], 0, "{fix}");
            fix["shadow"].as_f64().unwrap()
        })
        .sum();
    assert_eq!(reported, shadowed);
    let line = shadow
        .wait_for_log("the would-fix line", |line| {
            (line.contains("would fix (shadow rule, not applied)")
                && line.contains("completed_stage"))
            .then(|| line.to_string())
        })
        .await;
    assert!(line.contains(r#"after="completed""#), "{line}");

    // The same record through the same config without the rule, and with it in fix: byte for
    // byte the backend's, unless the rule is switched to fix.
    let without = Sidecar::start(
        &standin.url(),
        &format!("{common}[[rules]]\nname = \"completed_stage\"\nenabled = false\n"),
    )
    .await;
    let fixing = Sidecar::start(&standin.url(), common).await;
    let path = "/test/status/__inconsistent";
    let (_, _, direct) = get(&format!("{}{path}", standin.url())).await;
    let (_, headers, through_shadow) = get(&shadow.url(path)).await;
    let (_, _, through_without) = get(&without.url(path)).await;
    let (_, fixed_headers, through_fixing) = get(&fixing.url(path)).await;
    assert_eq!(through_shadow, direct);
    assert_eq!(through_shadow, through_without);
    assert_eq!(headers["x-consistency-shadow"], "completed_stage");
    assert_ne!(
        through_fixing, direct,
        "switched to fix, the rule changes the bytes"
    );
    assert!(!fixed_headers.contains_key("x-consistency-shadow"));
}

/// What browsers and common clients send, and what a Flask-Compress backend answers them in.
const CLIENTS: [(&str, Option<&str>, &str); 6] = [
    ("chromium", Some("gzip, deflate, br, zstd"), "zstd"),
    (
        "chromium holding a dictionary",
        Some("gzip, deflate, br, zstd, dcb, dcz"),
        "zstd",
    ),
    ("safari", Some("gzip, deflate, br"), "br"),
    ("curl --compressed", Some("deflate, gzip, br, zstd"), "zstd"),
    ("python-requests", Some("gzip, deflate"), "gzip"),
    ("no header", None, "identity"),
];

#[tokio::test]
async fn every_client_gets_fixed_bodies_from_a_backend_negotiating_like_flask_compress() {
    for (client, accept, coding) in CLIENTS {
        let Some(standin) = StandIn::start_with_codecs(&[
            "--inject-rate",
            "0.3",
            "--seed",
            "11",
            "--encoding",
            "negotiate",
        ])
        .await
        else {
            return;
        };
        let sidecar = Sidecar::start(&standin.url(), "").await;
        let judge = ClientJudge::new();
        let mut answered_in = BTreeMap::new();
        let broken = poll_tasks_accepting(&sidecar, &judge, 12, accept, |headers| {
            let sent = headers
                .get("content-encoding")
                .map_or("identity", |v| v.to_str().unwrap());
            *answered_in.entry(sent.to_string()).or_insert(0) += 1;
        })
        .await;
        assert!(
            broken.is_empty(),
            "{client} saw inconsistent answers: {broken:?}"
        );
        assert_eq!(answered_in.keys().collect::<Vec<_>>(), [coding], "{client}");
        let ledger = standin.ledger().await;
        assert!(
            ledger["codings"][coding].as_u64().unwrap() > 0,
            "{client}: {ledger}"
        );
        for sent in ledger["accept_encodings"].as_array().unwrap() {
            assert!(
                !sent.as_str().unwrap().contains("dc"),
                "{client}: upstream asked for {sent}"
            );
        }
        let metrics = sidecar.metrics().await;
        assert_metrics_match_ledger(&metrics, &ledger, true);
        for route in ROUTES {
            let skipped = |reason| {
                metrics.value(
                    "consistency_skipped_total",
                    &[("route", route), ("reason", reason)],
                )
            };
            assert_eq!(skipped("encoding"), 0.0, "{client} {route}");
            assert_eq!(skipped("unparseable"), 0.0, "{client} {route}");
        }
    }
}

#[tokio::test]
async fn a_backend_that_always_compresses_is_fixed_into_a_coding_the_client_accepted() {
    for backend_coding in ["zstd", "br"] {
        for (accept, fixed_in) in [
            (
                "gzip, deflate, br",
                if backend_coding == "br" { "br" } else { "gzip" },
            ),
            ("gzip, deflate", "gzip"),
            ("identity", "identity"),
        ] {
            let Some(standin) = StandIn::start_with_codecs(&[
                "--inject-rate",
                "0.5",
                "--seed",
                "7",
                "--encoding",
                backend_coding,
            ])
            .await
            else {
                return;
            };
            let sidecar = Sidecar::start(&standin.url(), "").await;
            let judge = ClientJudge::new();
            let mut fixed = 0;
            let broken = poll_tasks_accepting(&sidecar, &judge, 8, Some(accept), |headers| {
                let injected = headers
                    .get("x-standin-rules")
                    .is_some_and(|v| !v.to_str().unwrap().replace(',', "").is_empty());
                let sent = headers
                    .get("content-encoding")
                    .map_or("identity", |v| v.to_str().unwrap());
                if injected {
                    fixed += 1;
                    assert_eq!(
                        sent, fixed_in,
                        "a fix for {accept} from a {backend_coding} backend"
                    );
                    let vary = headers
                        .get("vary")
                        .map(|v| v.to_str().unwrap().to_ascii_lowercase());
                    assert_eq!(vary.as_deref(), Some("accept-encoding"));
                } else {
                    assert_eq!(sent, backend_coding, "unfixed bodies pass as they came");
                }
            })
            .await;
            assert!(
                broken.is_empty(),
                "{accept} from {backend_coding}: {broken:?}"
            );
            assert!(
                fixed >= 5,
                "the run must fix enough to mean something: {fixed}"
            );
            let ledger = standin.ledger().await;
            assert_metrics_match_ledger(&sidecar.metrics().await, &ledger, true);
        }
    }
}

/// The sidecar's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(sidecar: &Sidecar) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test]
async fn br_and_zstd_bombs_pass_through_byte_for_byte_counted_and_bounded() {
    let Some(standin) = StandIn::start_with_codecs(&[]).await else {
        return;
    };
    let config = "[inspect]\nmax_decoded_bytes = 1048576\n";
    let sidecar = Sidecar::start(&standin.url(), config).await;
    let (status, _, _) = get(&sidecar.url("/test/status/__inconsistent")).await;
    assert_eq!(status, 200);
    let before = peak_rss(&sidecar);
    for special in ["__zstdbomb", "__brbomb"] {
        let path = format!("/test/status/{special}");
        let (_, direct_headers, direct_body) = get(&format!("{}{path}", standin.url())).await;
        for _ in 0..3 {
            let (status, headers, body) =
                get_accepting(&sidecar.url(&path), Some("br, zstd")).await;
            assert_eq!(status, 200);
            assert_eq!(body, direct_body, "{special} passes byte for byte");
            assert_eq!(
                headers.get("content-encoding"),
                direct_headers.get("content-encoding")
            );
        }
    }
    let grew = peak_rss(&sidecar).saturating_sub(before);
    // Each bomb inflates to 32 MiB, which held whole would take that much at least. The bound
    // is 1 MiB decoded (2 MiB as a doubling Vec) plus the decoder's window: 4 MiB for Python's
    // brotli (lgwin 22), at most 8 MiB for zstd (RFC 9659's cap, which we enforce).
    assert!(
        grew < 24 << 20,
        "peak RSS grew {grew} bytes on 32 MiB bombs"
    );
    let metrics = sidecar.metrics().await;
    let skipped = |reason| {
        metrics.value(
            "consistency_skipped_total",
            &[("route", "task_status"), ("reason", reason)],
        )
    };
    assert_eq!(skipped("too_large"), 6.0);
    assert_eq!(skipped("encoding"), 0.0);
}

/// The front end itself: a real Chromium polls tasks with `fetch()` through the sidecar, from a
/// backend that negotiates codings like Flask-Compress and makes every finished task contradict
/// itself. Nothing the browser saw may be inconsistent or move backwards.
#[tokio::test]
async fn a_browser_polling_with_fetch_sees_only_consistent_statuses() {
    let Some(standin) = StandIn::start_with_codecs(&[
        "--inject-rate",
        "1.0",
        "--seed",
        "13",
        "--encoding",
        "negotiate",
    ])
    .await
    else {
        return;
    };
    let Some(mut browser) = support::browser::Browser::launch() else {
        return;
    };
    let sidecar = Sidecar::start(&standin.url(), "").await;
    browser.open(&sidecar.url("/__poller?tasks=12"));
    browser.wait_until(
        "the page to poll every task to its end",
        support::PATIENCE * 4,
        |b| b.evaluate("window.done").as_bool().filter(|done| *done),
    );
    assert_eq!(browser.evaluate("window.failure"), Value::Null);
    assert!(browser.errors().is_empty(), "{:?}", browser.errors());

    let seen = browser.evaluate("window.seen");
    let seen = seen.as_array().expect("window.seen is an array");
    let judge = ClientJudge::new();
    let mut last_progress: BTreeMap<&str, u64> = BTreeMap::new();
    let mut codings: BTreeMap<&str, usize> = BTreeMap::new();
    for answer in seen {
        let (id, coding, text) = (
            answer[0].as_str().unwrap(),
            answer[1].as_str().unwrap(),
            answer[2].as_str().unwrap(),
        );
        *codings.entry(coding).or_default() += 1;
        assert!(
            judge.broken_rules(0, text.as_bytes()).is_empty(),
            "the browser saw {text}"
        );
        let record: Value = serde_json::from_str(text).unwrap();
        let progress = record["progress"].as_u64().unwrap();
        let before = last_progress.insert(id, progress).unwrap_or(0);
        // The model puts a failed task's progress at 0; anything else only moves forward.
        let failed = record["status"] == "failed";
        assert!(
            failed || progress >= before,
            "{id}: progress {before} -> {progress}"
        );
    }
    assert_eq!(last_progress.len(), 12, "every task polled");

    let ledger = standin.ledger().await;
    let asked = ledger["accept_encodings"].as_array().unwrap();
    assert!(
        asked.iter().all(|a| a.as_str().unwrap().contains("zstd")),
        "Chromium asks for zstd: {asked:?}"
    );
    assert_eq!(
        codings.get("zstd").copied(),
        Some(seen.len()),
        "every answer came as zstd: {codings:?}"
    );
    assert_eq!(
        ledger["routes"]["task_status"]["records"].as_u64(),
        Some(seen.len() as u64)
    );
    assert_metrics_match_ledger(&sidecar.metrics().await, &ledger, true);
}
