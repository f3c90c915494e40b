//! `deploy/grafana/dashboard.json`: a fixed uid, templated datasource/job/instance, the panels
//! the issue lists, every query valid PromQL (checked by promtool) over documented metrics and
//! recorded rules, and every query answering with data from a live Prometheus that scrapes a
//! healthy sidecar (so no panel reads "No data" where all is well).
//!
//! The live test takes about 10 seconds: Prometheus starting, then two scrapes for rate().

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::deploy::{deploy, listening_on, read, yaml, Node, RuleFile};
use support::{
    get, repo, run_ok, tool, try_get, try_send, urlencode, Process, Sidecar, StandIn, PATIENCE,
};

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/dashboard.json"))).expect("dashboard.json is JSON")
}

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"].as_array().expect("panels").iter().collect()
}

fn exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push(("annotation".into(), e.to_string()));
        }
    }
    out
}

#[test]
fn dashboard_is_templated_with_a_fixed_uid() {
    let d = dashboard();
    assert_eq!(d["uid"], "consistency-sidecar");
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert!(var("job")["query"]["query"]
        .as_str()
        .unwrap()
        .contains("label_values("));
    assert!(var("instance")["query"]["query"]
        .as_str()
        .unwrap()
        .contains("$job"));

    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate panel id {}",
            p["id"]
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {}",
            p["title"]
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
            let e = t["expr"].as_str().unwrap();
            // Job-wide on purpose: the alerts' recording rules, and the SLO budget.
            let job_wide = e.contains("job:") || e.contains("[30d]");
            assert!(
                e.contains("$job") && (e.contains("$instance") || job_wide),
                "panel {}: {e}",
                p["title"]
            );
            // A `> 0` filter removes every zero series, and a healthy panel reads "No data".
            assert!(!e.contains("> 0"), "panel {}: {e}", p["title"]);
        }
    }

    let titles: Vec<String> = panels(&d)
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for wanted in [
        "consistency ratio",
        "error budget",
        "by level",
        "issues by rule",
        "fixes",
        "skipped by reason",
        "requests",
        "error",
        "latency",
        "inspection time",
        "upstream errors",
        "tracked tasks",
        "memory",
        "burn rate: fastburn",
        "burn rate: slowburn",
        "30d slo period",
        "instances up",
        "version and mode",
        "issues by rule, per route",
        "fixes applied by rule, per route",
        "skipped share vs the 10% alert",
        "upstream error share vs the 5% alert",
        "stalled tasks by stage",
        "stage duration p50 / p99",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted:?}: {titles:#?}"
        );
    }
    // The graphs against an objective or an alert's threshold draw it as a red line.
    for (title, lines) in [
        ("Consistency ratio by route", &[0.99][..]),
        ("Error budget burn rate: FastBurn (page)", &[6.0, 14.4]),
        ("Error budget burn rate: SlowBurn (ticket)", &[1.0]),
        ("Skipped share vs the 10% alert", &[0.1]),
        ("Upstream error share vs the 5% alert", &[0.05]),
    ] {
        let panel = panels(&d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        let defaults = &panel["fieldConfig"]["defaults"];
        assert_eq!(
            defaults["custom"]["thresholdsStyle"]["mode"], "line",
            "{title}"
        );
        let steps = defaults["thresholds"]["steps"].as_array().expect("steps");
        for line in lines {
            assert!(
                steps
                    .iter()
                    .any(|s| s["value"] == *line && s["color"] == "red"),
                "{title}: no red line at {line}: {steps:?}"
            );
        }
    }
    // Where a query has nothing to say, the panel says so in words.
    for p in panels(&d) {
        assert!(
            p["fieldConfig"]["defaults"]["noValue"].is_string(),
            "panel {} has no noValue",
            p["title"]
        );
    }

    // Alerts link here.
    let rules = read(&deploy("prometheus/rules.yml"));
    assert!(rules.contains("dashboard: /d/consistency-sidecar/"));
    let provider = yaml("grafana/provisioning/dashboards/consistency-sidecar.yaml");
    assert_eq!(provider["providers"][0]["type"].str(), "file");
}

#[test]
fn dashboard_queries_use_documented_metrics() {
    let design: BTreeSet<String> = read(&repo().join("docs/DESIGN.md"))
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect();
    let recorded: BTreeSet<String> = RuleFile::parse(&read(&deploy("prometheus/rules.yml")))
        .records
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for (title, e) in exprs(&dashboard()) {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("job:") || word.starts_with("job_route:") {
                assert!(
                    recorded.contains(word),
                    "{title}: {word} is not recorded in deploy/prometheus/rules.yml"
                );
                continue;
            }
            if !word.starts_with("consistency_") {
                continue;
            }
            let base = word.strip_suffix("_bucket").unwrap_or(word);
            assert!(
                design.contains(base),
                "{title}: {word} is not a metric in docs/DESIGN.md"
            );
        }
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    // Grafana's variables replaced by values, each query made a recording rule for promtool.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, e)) in exprs(&dashboard()).iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$job", ".+")
            .replace("$instance", ".+");
        file.push_str(&format!(
            "      - record: dashboard:query_{i}:test\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("dashboard-queries.yml");
    std::fs::write(&path, file).expect("write the queries");
    run_ok(
        &promtool,
        &["check", "rules", path.to_str().unwrap()],
        tmp.path(),
    );
}

/// A query with Grafana's variables replaced by what the live test scrapes.
fn concrete(expr: &str, job: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$job", job)
        .replace("$instance", instance)
}

/// Why an instant query shows nothing useful: an error, no series, or only NaN; `None` when
/// it has data.
async fn no_data(prom: SocketAddr, query: &str) -> Option<String> {
    let url = format!("http://{prom}/api/v1/query?query={}", urlencode(query));
    let (status, _, body) = match try_get(&url).await {
        Ok(answer) => answer,
        Err(e) => return Some(format!("request failed: {e}")),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
    };
    if v["status"] != "success" {
        return Some(format!("error: {}", v["error"]));
    }
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    if result.is_empty() {
        return Some("empty result".into());
    }
    let numbers = result
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok());
    if numbers.clone().all(f64::is_nan) {
        return Some(format!("only NaN: {result:?}"));
    }
    None
}

/// Requests through the sidecar until stopped: new tasks, their status and progress, the
/// history; at most 20,000 requests or 60 s. Answers are not checked: the queries are.
async fn poll_loop(sidecar: Arc<Sidecar>, stop: Arc<AtomicBool>) {
    let started = tokio::time::Instant::now();
    let mut ids: Vec<String> = Vec::new();
    for i in 0..20_000u32 {
        if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
            return;
        }
        let path = match i % 8 {
            0 => {
                let body = format!(r#"{{"brand_list":["brand-{i}"]}}"#);
                let request = http::Request::post(sidecar.url("/api/perform-brand-test"))
                    .header("content-type", "application/json")
                    .body(support::full(body))
                    .expect("request");
                if let Ok((_, _, body)) = try_send(request).await {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Some(id) = v["execution_id"].as_str() {
                        ids.push(id.to_string());
                    }
                }
                continue;
            }
            3 => "/api/test-history".to_string(),
            5 if !ids.is_empty() => {
                format!(
                    "/api/test-progress?executionId={}",
                    ids[i as usize % ids.len()]
                )
            }
            _ if !ids.is_empty() => format!("/test/status/{}", ids[i as usize % ids.len()]),
            _ => continue,
        };
        let _ = try_get(&sidecar.url(&path)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn dashboard_queries_return_data_on_a_healthy_sidecar() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    // A backend that never contradicts itself: the healthy case.
    let Some(standin) = StandIn::start(&["--inject-rate", "0"]).await else {
        return;
    };
    let sidecar = Arc::new(Sidecar::start(&standin.url(), "").await);
    let (status, _, _) = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(status, 200, "the sidecar's /readyz");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(poll_loop(sidecar.clone(), stop.clone()));

    // The shipped recording rules, as they are: a one-second scrape fills their windows enough
    // for rate() (two samples), whatever the window's length.
    let job = "consistency-sidecar";
    let admin = sidecar.admin.to_string();
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [\"{admin}\"]\n",
            deploy("prometheus/rules.yml").display()
        ),
    )
    .expect("write prometheus.yml");
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .current_dir(tmp.path());
    let server = Process::spawn("prometheus", cmd);
    let prom = server
        .wait_for_line("its `Listening on` line", listening_on)
        .await;

    let d = dashboard();
    let mut queries = Vec::new();
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            queries.push((p["title"].to_string(), concrete(expr, job, &admin)));
        }
    }
    let started = tokio::time::Instant::now();
    let mut failing: Vec<String>;
    loop {
        failing = Vec::new();
        for (title, q) in &queries {
            if let Some(why) = no_data(prom, q).await {
                failing.push(format!("{title}: {q}\n  {why}"));
            }
        }
        if failing.is_empty() || started.elapsed() > PATIENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load loop");
    assert!(
        failing.is_empty(),
        "{} of {} dashboard queries show no data on a healthy sidecar after {:?}:\n{}\n{}{}",
        failing.len(),
        queries.len(),
        started.elapsed(),
        failing.join("\n"),
        sidecar.log().join("\n"),
        server.tail()
    );

    // The variables' own queries find the job and the instance.
    for (label, matcher) in [
        ("job", "consistency_build_info".to_string()),
        (
            "instance",
            format!("consistency_build_info{{job=~\"{job}\"}}"),
        ),
    ] {
        let url = format!(
            "http://{prom}/api/v1/label/{label}/values?match[]={}",
            urlencode(&matcher)
        );
        let (_, _, body) = get(&url).await;
        let values: Value = serde_json::from_slice(&body).expect("JSON");
        assert!(
            values["data"].as_array().is_some_and(|v| !v.is_empty()),
            "${label} has no values: {values}"
        );
    }
    // The annotation query is valid even with no alert firing.
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            let q = concrete(e, job, &admin);
            let url = format!("http://{prom}/api/v1/query?query={}", urlencode(&q));
            let (_, _, body) = get(&url).await;
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains("\"status\":\"success\""), "{q}: {body}");
        }
    }
    eprintln!(
        "{} dashboard queries answered with data after {:?}",
        queries.len(),
        started.elapsed()
    );
}
/// Applied fixes and would-be fixes of rules in shadow share `consistency_fixes_total`: every
/// query of it names the `mode` it means, and the shadow panel sits beside the applied one.
#[test]
fn fix_queries_tell_applied_from_shadow() {
    let d = dashboard();
    for (title, e) in exprs(&d) {
        if e.contains("consistency_fixes_total") {
            assert!(
                e.contains(r#"mode="applied""#) || e.contains(r#"mode="shadow""#),
                "{title}: {e} mixes applied and shadow fixes"
            );
        }
    }
    let panel = |title: &str| {
        panels(&d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
    };
    let applied = panel("Fixes applied by rule, per route");
    let shadow = panel("Shadow fixes (would apply), per route");
    assert!(shadow["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .starts_with(r#"sum by (route, rule) (rate(consistency_fixes_total{mode="shadow""#));
    assert_eq!(shadow["fieldConfig"]["defaults"]["noValue"], "0");
    assert_eq!(
        shadow["gridPos"]["y"], applied["gridPos"]["y"],
        "in the issues and fixes row"
    );
}
