//! `deploy/prometheus/rules.yml` against the real promtool, and the files derived from it kept in
//! sync: the promtool unit tests cover every alert both ways, and the short-window copy that the
//! end-to-end test runs is generated from the same expressions.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::deploy::{deploy, read, yaml, Node, RuleFile};
use support::{repo, run, run_ok, tool};

const WINDOWS: [&str; 5] = ["5m", "30m", "1h", "6h", "3d"];

fn rules() -> RuleFile {
    RuleFile::parse(&read(&deploy("prometheus/rules.yml")))
}

#[test]
fn promtool_check_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = deploy("prometheus");
    let out = run_ok(&promtool, &["check", "rules", "rules.yml"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn promtool_test_rules() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = deploy("prometheus");
    run_ok(&promtool, &["test", "rules", "rules.test.yml"], &dir);
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let alerts: Vec<String> = rules().alerts.into_iter().map(|(name, _)| name).collect();
    for expected in [
        "ConsistencyRatioBelow99",
        "ConsistencyErrorBudgetFastBurn",
        "ConsistencyErrorBudgetSlowBurn",
        "ConsistencyCriticalIssue",
        "ConsistencySidecarDown",
        "ConsistencyUpstreamErrors",
        "ConsistencyInspectionSkipped",
        "ConsistencyTrackerStoreDown",
        "ConsistencySidecarConfigReloadFailed",
        "ConsistencyTasksStalled",
    ] {
        assert!(
            alerts.iter().any(|a| a == expected),
            "rules.yml has no alert {expected}"
        );
    }

    let tests = yaml("prometheus/rules.test.yml");
    assert_eq!(
        tests["rule_files"].strs(),
        vec!["rules.yml"],
        "the unit tests must load rules.yml itself"
    );
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    let mut names = Vec::new();
    for case in tests["tests"].seq() {
        names.push(case["name"].str().to_lowercase());
        let checks = case["alert_rule_test"]
            .as_vec()
            .map_or(&[][..], Vec::as_slice);
        for check in checks {
            let name = check["alertname"].str().to_string();
            assert!(
                alerts.contains(&name),
                "rules.test.yml tests {name}, which rules.yml does not define"
            );
            if check["exp_alerts"].seq().is_empty() {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(
            firing.contains(alert),
            "no promtool case shows {alert} firing"
        );
        assert!(
            silent.contains(alert),
            "no promtool case shows {alert} not firing"
        );
    }
    for scenario in [
        "healthy",
        "exactly 99%",
        "98% sustained",
        "low traffic",
        "zero traffic",
        "fast burn",
        "sidecar down",
        "tracker store down",
        "reload failed",
        "tasks stalled",
    ] {
        let words: Vec<&str> = scenario.split(' ').collect();
        assert!(
            names.iter().any(|n| words.iter().all(|w| n.contains(w))),
            "rules.test.yml has no `{scenario}` case; cases: {names:#?}"
        );
    }
}

/// The metric names of the DESIGN.md table (the API the rules may use).
fn design_metrics() -> BTreeSet<String> {
    read(&repo().join("docs/DESIGN.md"))
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect()
}

/// Identifiers of a PromQL expression (metric names, recorded names, functions, labels).
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    let mut in_braces = false;
    for c in expr.chars() {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && c == '{' {
            in_braces = true;
        }
        if !in_string && c == '}' {
            in_braces = false;
        }
        if !in_string && !in_braces && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[test]
fn rules_use_only_documented_metrics_and_recorded_names() {
    let design = design_metrics();
    assert!(
        design.contains("consistency_checks_total"),
        "DESIGN.md metric table not found"
    );
    let file = rules();
    let recorded: BTreeSet<&str> = file.records.iter().map(|(n, _)| n.as_str()).collect();
    for (name, expr) in file.records.iter().chain(file.alerts.iter()) {
        for ident in identifiers(expr) {
            if ident.contains(':') {
                assert!(
                    recorded.contains(ident.as_str()),
                    "{name}: {ident} is not recorded in rules.yml"
                );
            } else if ident.starts_with("consistency_") {
                assert!(
                    design.contains(&ident),
                    "{name}: {ident} is not a metric in docs/DESIGN.md"
                );
            }
        }
    }
}

#[test]
fn recording_rules_cover_every_window_as_ratios_of_sums() {
    let file = rules();
    let records: BTreeMap<&str, &str> = file
        .records
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_str()))
        .collect();
    for (name, _) in &file.records {
        let parts: Vec<&str> = name.split(':').collect();
        assert_eq!(parts.len(), 3, "{name} is not level:metric:operations");
        assert!(
            ["job", "job_route"].contains(&parts[0]),
            "{name}: level must be job or job_route"
        );
    }
    for w in WINDOWS {
        for level in ["job", "job_route"] {
            for kind in ["consistent", "inconsistent"] {
                let ratio = format!("{level}:consistency_{kind}_records:ratio_rate{w}");
                let expr = records
                    .get(ratio.as_str())
                    .unwrap_or_else(|| panic!("rules.yml does not record {ratio}"));
                // A ratio is one recorded sum divided by another, never an average of ratios.
                assert_eq!(
                    *expr,
                    format!("{level}:consistency_{kind}_records:rate{w} / {level}:consistency_checks:rate{w}"),
                    "{ratio}"
                );
            }
        }
        let by = |level: &str, metric: &str| records[format!("{level}:{metric}:rate{w}").as_str()];
        assert_eq!(
            by("job_route", "consistency_checks"),
            format!("sum by (job, route) (rate(consistency_checks_total[{w}]))")
        );
        assert_eq!(
            by("job_route", "consistency_consistent_records"),
            format!("sum by (job, route) (rate(consistency_results_total{{level=\"consistent\"}}[{w}]))")
        );
        assert_eq!(
            by("job_route", "consistency_inconsistent_records"),
            format!("sum by (job, route) (rate(consistency_results_total{{level!=\"consistent\"}}[{w}]))")
        );
        for metric in [
            "consistency_checks",
            "consistency_consistent_records",
            "consistency_inconsistent_records",
        ] {
            assert_eq!(
                by("job", metric),
                format!("sum by (job) (job_route:{metric}:rate{w})")
            );
        }
    }
}

#[test]
fn sidecar_down_alert_selects_the_scraped_job() {
    let file = rules();
    let down = &file
        .alerts
        .iter()
        .find(|(n, _)| n == "ConsistencySidecarDown")
        .expect("alert")
        .1;
    assert!(
        down.contains(r#"up{job="consistency-sidecar"} == 0"#),
        "{down}"
    );
    assert!(
        down.contains(r#"absent(up{job="consistency-sidecar"})"#),
        "{down}"
    );
    let prom = yaml("prometheus/prometheus.yml");
    let jobs: Vec<&str> = prom["scrape_configs"]
        .seq()
        .iter()
        .map(|s| s["job_name"].str())
        .collect();
    assert!(
        jobs.contains(&"consistency-sidecar"),
        "prometheus.yml jobs: {jobs:?}"
    );
}

/// `[5m]` -> `5m` for every range selector of an expression, in order.
fn ranges(expr: &str) -> Vec<String> {
    expr.split('[')
        .skip(1)
        .filter_map(|s| s.split(']').next())
        .map(str::to_string)
        .collect()
}

fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("bad duration {d}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => panic!("unit {other} in {d}"),
    }
}

fn for_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("for:"))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn short_window_rules_are_generated_from_rules_yml() {
    let Some(python) = tool("python3") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let short = tmp.path().join("rules.short.yml");
    let script = deploy("prometheus/make_test_rules.py");
    run_ok(
        &python,
        &[script.to_str().unwrap(), "-o", short.to_str().unwrap()],
        &repo(),
    );
    let long_text = read(&deploy("prometheus/rules.yml"));
    let short_text = read(&short);
    let long = RuleFile::parse(&long_text);
    let small = RuleFile::parse(&short_text);

    // Same rules, same order, same expressions but for the range selectors.
    let names = |f: &RuleFile| -> Vec<String> {
        f.records
            .iter()
            .chain(&f.alerts)
            .map(|(n, _)| n.clone())
            .collect()
    };
    assert_eq!(names(&long), names(&small));
    let mut mapping: BTreeMap<String, String> = BTreeMap::new();
    for ((name, a), (_, b)) in long
        .records
        .iter()
        .chain(&long.alerts)
        .zip(small.records.iter().chain(&small.alerts))
    {
        let (ra, rb) = (ranges(a), ranges(b));
        assert_eq!(ra.len(), rb.len(), "{name}");
        let mut a_norm = a.clone();
        let mut b_norm = b.clone();
        for (x, y) in ra.iter().zip(&rb) {
            a_norm = a_norm.replacen(&format!("[{x}]"), "[_]", 1);
            b_norm = b_norm.replacen(&format!("[{y}]"), "[_]", 1);
            let previous = mapping.insert(x.clone(), y.clone());
            assert!(
                previous.is_none_or_eq(y),
                "{name}: [{x}] maps to two short windows"
            );
            assert!(seconds(y) <= 60, "{name}: [{y}] is not short");
        }
        assert_eq!(
            a_norm, b_norm,
            "{name}: the short expression differs beyond its windows"
        );
    }
    // Every window is mapped, and the order of windows is kept (burn-rate pairs stay pairs).
    for w in WINDOWS {
        assert!(
            mapping.contains_key(w),
            "window {w} never appears in rules.yml"
        );
    }
    let mut by_long: Vec<(&String, &String)> = mapping.iter().collect();
    by_long.sort_by_key(|(l, _)| seconds(l));
    for pair in by_long.windows(2) {
        assert!(
            seconds(pair[0].1) < seconds(pair[1].1),
            "short windows out of order: {by_long:?}"
        );
    }
    let (long_for, short_for) = (for_lines(&long_text), for_lines(&short_text));
    assert_eq!(long_for.len(), short_for.len());
    for (l, s) in long_for.iter().zip(&short_for) {
        assert!(
            seconds(s) <= 10 && seconds(s) < seconds(l),
            "for: {l} became {s}"
        );
    }

    if let Some(promtool) = tool("promtool") {
        run_ok(
            &promtool,
            &["check", "rules", short.to_str().unwrap()],
            tmp.path(),
        );
    }

    // A window the generator does not know is an error, not a silent long window in a short test.
    let odd = tmp.path().join("odd.yml");
    std::fs::write(&odd, long_text.replacen("[5m]", "[7m]", 1)).expect("write odd.yml");
    let out = run(
        &python,
        &[
            script.to_str().unwrap(),
            odd.to_str().unwrap(),
            "-o",
            tmp.path().join("x.yml").to_str().unwrap(),
        ],
        &repo(),
    );
    assert!(
        !out.status.success(),
        "make_test_rules.py accepted an unknown window [7m]"
    );
}

trait NoneOrEq {
    fn is_none_or_eq(&self, other: &str) -> bool;
}

impl NoneOrEq for Option<String> {
    fn is_none_or_eq(&self, other: &str) -> bool {
        self.as_deref().is_none_or(|v| v == other)
    }
}
