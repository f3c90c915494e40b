//! `deploy/grafana/dashboard.json`: a fixed uid, templated datasource/job/instance, the panels
//! the issue lists, and every query valid PromQL (checked by promtool) over documented metrics.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::deploy::{deploy, read, yaml, Node};
use support::{repo, run_ok, tool};

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
            assert!(
                e.contains("$job") && e.contains("$instance"),
                "panel {}: {e}",
                p["title"]
            );
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
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted:?}: {titles:#?}"
        );
    }
    // The ratio graph draws the 99% objective.
    let ratio = panels(&d)
        .into_iter()
        .find(|p| p["title"] == "Consistency ratio by route")
        .expect("ratio panel");
    let defaults = &ratio["fieldConfig"]["defaults"];
    assert_eq!(defaults["custom"]["thresholdsStyle"]["mode"], "line");
    assert!(defaults["thresholds"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["value"] == 0.99));

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
    for (title, e) in exprs(&dashboard()) {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
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
