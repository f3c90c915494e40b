//! `deploy/grafana/dashboard.json`: a fixed uid, templated datasource/job/instance, the panels
//! the issue lists, every query valid PromQL (checked by promtool) over documented metrics and
//! recorded rules, and every query answering with data from a live Prometheus that scrapes a
//! healthy sidecar (so no panel reads "No data" where all is well).

mod deploy_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_support::{
    deploy, free_port, get, http, read, repo, run_ok, spawn_listening, spawn_logged, tool,
    urlencode, wait_for, yaml, RuleFile, TempDir,
};
use serde_json::Value;

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
    let provider = yaml::parse(&read(&deploy(
        "grafana/provisioning/dashboards/consistency-sidecar.yaml",
    )));
    assert_eq!(provider.get("providers").seq()[0].get("type").str(), "file");
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
    let tmp = TempDir::new("deploy-grafana");
    let path = tmp.write("dashboard-queries.yml", &file);
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
fn no_data(prom: &str, query: &str) -> Option<String> {
    let resp = match get(prom, &format!("/api/v1/query?query={}", urlencode(query))) {
        Ok(resp) => resp,
        Err(e) => return Some(format!("request failed: {e}")),
    };
    let v: Value = match serde_json::from_str(&resp.body) {
        Ok(v) => v,
        Err(_) => return Some(format!("HTTP {}: {}", resp.status, resp.body)),
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
/// history; at most 20,000 requests or 60 s.
fn poll_loop(proxy: &str, stop: &AtomicBool) {
    let started = Instant::now();
    let mut ids: Vec<String> = Vec::new();
    let timeout = Duration::from_secs(5);
    for i in 0..20_000u32 {
        if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
            return;
        }
        let path = match i % 8 {
            0 => {
                let body = format!(r#"{{"brand_list":["brand-{i}"]}}"#);
                if let Ok(r) = http(
                    "POST",
                    proxy,
                    "/api/perform-brand-test",
                    Some(&body),
                    timeout,
                ) {
                    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
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
        let _ = http("GET", proxy, &path, None, timeout);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dashboard_queries_return_data_on_a_healthy_sidecar() {
    let (Some(python), Some(prometheus)) = (tool("python3"), tool("prometheus")) else {
        return;
    };
    let tmp = TempDir::new("deploy-grafana-live");

    // A backend that never contradicts itself: the healthy case.
    let mut cmd = Command::new(&python);
    cmd.arg(repo().join("tests/standin/legacy_backend.py"))
        .args(["--port", "0", "--inject-rate", "0"]);
    let (_standin, backend_port) = spawn_listening(
        "stand-in",
        cmd,
        tmp.path().join("standin.log"),
        Duration::from_secs(15),
    );
    let (proxy, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = tmp.write(
        "sidecar.toml",
        &format!(
            "listen = \"{proxy}\"\nupstream = \"http://127.0.0.1:{backend_port}\"\nadmin_listen = \"{admin}\"\n"
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn");
    let mut sidecar = spawn_logged("sidecar", cmd, tmp.path().join("sidecar.log"));
    wait_for(
        "the sidecar's /readyz",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            sidecar.assert_running();
            get(&admin, "/readyz").ok().filter(|r| r.status == 200)
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        std::thread::spawn(move || poll_loop(&proxy, &stop))
    };

    // The shipped recording rules, as they are: a one-second scrape fills their windows enough
    // for rate() (two samples), whatever the window's length.
    let job = "consistency-sidecar";
    let prom = format!("127.0.0.1:{}", free_port());
    let prom_config = tmp.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [\"{admin}\"]\n",
            deploy("prometheus/rules.yml").display()
        ),
    );
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .current_dir(tmp.path());
    let mut prometheus = spawn_logged("prometheus", cmd, tmp.path().join("prometheus.log"));
    wait_for(
        "Prometheus /-/ready",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            prometheus.assert_running();
            get(&prom, "/-/ready").ok().filter(|r| r.status == 200)
        },
    );

    let d = dashboard();
    let mut queries = Vec::new();
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            queries.push((p["title"].to_string(), concrete(expr, job, &admin)));
        }
    }
    let started = Instant::now();
    let mut failing: Vec<String>;
    loop {
        failing = queries
            .iter()
            .filter_map(|(title, q)| no_data(&prom, q).map(|why| format!("{title}: {q}\n  {why}")))
            .collect();
        if failing.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    assert!(
        failing.is_empty(),
        "{} of {} dashboard queries show no data on a healthy sidecar after {:?}:\n{}{}{}",
        failing.len(),
        queries.len(),
        started.elapsed(),
        failing.join("\n"),
        sidecar.log_tail(),
        prometheus.log_tail()
    );

    // The variables' own queries find the job and the instance.
    for (label, matcher) in [
        ("job", "consistency_build_info".to_string()),
        (
            "instance",
            format!("consistency_build_info{{job=~\"{job}\"}}"),
        ),
    ] {
        let path = format!(
            "/api/v1/label/{label}/values?match[]={}",
            urlencode(&matcher)
        );
        let values: Value =
            serde_json::from_str(&get(&prom, &path).expect("label values").body).expect("JSON");
        assert!(
            values["data"].as_array().is_some_and(|v| !v.is_empty()),
            "${label} has no values: {values}"
        );
    }
    // The annotation query is valid even with no alert firing.
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            let q = concrete(e, job, &admin);
            let resp = get(&prom, &format!("/api/v1/query?query={}", urlencode(&q)))
                .expect("annotation query");
            assert!(
                resp.body.contains("\"status\":\"success\""),
                "{q}: {}",
                resp.body
            );
        }
    }
    eprintln!(
        "{} dashboard queries answered with data after {:?}",
        queries.len(),
        started.elapsed()
    );
}
