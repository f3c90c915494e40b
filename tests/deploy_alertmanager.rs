//! `deploy/alertmanager/alertmanager.yml` against the real amtool and Alertmanager: the config is
//! valid, every alert of rules.yml routes by its severity, and a warning is inhibited while a
//! critical alert fires for the same job (and only the same job).

mod deploy_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deploy_support::{
    deploy, free_port, get, http, read, run_ok, spawn_logged, tool, wait_for, yaml, TempDir,
};

fn config() -> std::path::PathBuf {
    deploy("alertmanager/alertmanager.yml")
}

#[test]
fn amtool_check_config() {
    let Some(amtool) = tool("amtool") else { return };
    let out = run_ok(
        &amtool,
        &["check-config", config().to_str().unwrap()],
        &deploy("alertmanager"),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

fn route(amtool: &Path, labels: &[&str]) -> String {
    let file = format!("--config.file={}", config().display());
    let mut args = vec!["config", "routes", "test", file.as_str()];
    args.extend_from_slice(labels);
    let out = run_ok(amtool, &args, &deploy("alertmanager"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn every_alert_routes_by_its_severity() {
    let Some(amtool) = tool("amtool") else { return };
    let rules = yaml::parse(&read(&deploy("prometheus/rules.yml")));
    let mut seen = 0;
    for group in rules.get("groups").seq() {
        for rule in group.get("rules").seq() {
            let Some(alert) = rule.opt("alert") else {
                continue;
            };
            let severity = rule.at(&["labels", "severity"]).str();
            let expected = match severity {
                "critical" => "pagerduty-and-chat",
                "warning" => "chat",
                other => panic!("{}: severity {other:?} has no route", alert.str()),
            };
            let name = format!("alertname={}", alert.str());
            let sev = format!("severity={severity}");
            assert_eq!(
                route(&amtool, &[&name, &sev, "job=consistency-sidecar"]),
                expected,
                "{}",
                alert.str()
            );
            seen += 1;
        }
    }
    assert!(seen >= 7, "only {seen} alerts in rules.yml");

    // Chat goes to the DingTalk bridge, pages to PagerDuty as well.
    let am = yaml::parse(&read(&config()));
    let receivers = am.get("receivers");
    let page = receivers.find("name", "pagerduty-and-chat");
    assert!(!page.get("pagerduty_configs").seq().is_empty());
    for name in ["pagerduty-and-chat", "chat"] {
        let url = receivers.find("name", name).get("webhook_configs").seq()[0]
            .get("url")
            .str();
        assert!(
            url.starts_with("http://dingtalk-webhook:8060/dingtalk/"),
            "{name}: {url}"
        );
    }
    let inhibit = &am.get("inhibit_rules").seq()[0];
    assert_eq!(
        inhibit.get("source_matchers").strs(),
        vec![r#"severity="critical""#]
    );
    assert_eq!(
        inhibit.get("target_matchers").strs(),
        vec![r#"severity="warning""#]
    );
    assert_eq!(inhibit.get("equal").strs(), vec!["job"]);
}

fn alert_json(name: &str, severity: &str, job: &str) -> String {
    format!(
        r#"{{"labels":{{"alertname":"{name}","severity":"{severity}","job":"{job}"}},"annotations":{{"summary":"test"}}}}"#
    )
}

#[test]
fn warning_is_inhibited_while_critical_fires_for_the_same_job() {
    let Some(alertmanager) = tool("prometheus-alertmanager").or_else(|| tool("alertmanager"))
    else {
        return;
    };
    let tmp = TempDir::new("deploy-alertmanager");
    let (web, cluster) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{web}");
    let mut cmd = Command::new(&alertmanager);
    cmd.arg(format!("--config.file={}", config().display()))
        .arg(format!(
            "--storage.path={}",
            tmp.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster}"))
        .current_dir(tmp.path());
    let mut server = spawn_logged("alertmanager", cmd, tmp.path().join("alertmanager.log"));
    wait_for(
        "alertmanager to be ready",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            server.assert_running();
            get(&addr, "/-/ready").ok().filter(|r| r.status == 200)
        },
    );

    let alerts = format!(
        "[{},{},{}]",
        alert_json("ConsistencySidecarDown", "critical", "consistency-sidecar"),
        alert_json("ConsistencyRatioBelow99", "warning", "consistency-sidecar"),
        alert_json("ConsistencyRatioBelow99", "warning", "other-job"),
    );
    let resp = http(
        "POST",
        &addr,
        "/api/v2/alerts",
        Some(&alerts),
        Duration::from_secs(10),
    )
    .expect("post alerts");
    assert_eq!(resp.status, 200, "{}", resp.body);

    let states = wait_for(
        "the inhibition to apply",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let resp = get(&addr, "/api/v2/alerts").ok()?;
            let list: Vec<serde_json::Value> = serde_json::from_str(&resp.body).ok()?;
            let state = |name: &str, job: &str| -> Option<(String, usize)> {
                let a = list
                    .iter()
                    .find(|a| a["labels"]["alertname"] == name && a["labels"]["job"] == job)?;
                let inhibited = a["status"]["inhibitedBy"].as_array().map_or(0, Vec::len);
                Some((a["status"]["state"].as_str()?.to_string(), inhibited))
            };
            let same = state("ConsistencyRatioBelow99", "consistency-sidecar")?;
            (same.0 == "suppressed").then(|| {
                (
                    same,
                    state("ConsistencyRatioBelow99", "other-job"),
                    state("ConsistencySidecarDown", "consistency-sidecar"),
                )
            })
        },
    );
    let (same, other, critical) = states;
    assert!(
        same.1 >= 1,
        "the warning is suppressed by an inhibition: {same:?}"
    );
    assert_eq!(
        other,
        Some(("active".to_string(), 0)),
        "another job's warning is not inhibited"
    );
    assert_eq!(
        critical,
        Some(("active".to_string(), 0)),
        "the critical alert itself stays active"
    );
    drop(server);
}
