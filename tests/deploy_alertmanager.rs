//! `deploy/alertmanager/alertmanager.yml` against the real amtool and Alertmanager: the config is
//! valid, every alert of rules.yml routes by its severity, and a warning is inhibited while a
//! critical alert fires for the same job (and only the same job).

mod support;

use std::path::Path;
use std::process::Command;

use http::Request;
use support::deploy::{deploy, listening_on, yaml, Node};
use support::{full, get, run_ok, send, tool, try_get, wait_for, Process};

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
    let rules = yaml("prometheus/rules.yml");
    let mut seen = 0;
    for group in rules["groups"].seq() {
        for rule in group["rules"].seq() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            let severity = rule["labels"]["severity"].str();
            let expected = match severity {
                "critical" => "pagerduty-and-chat",
                "warning" => "chat",
                other => panic!("{alert}: severity {other:?} has no route"),
            };
            let name = format!("alertname={alert}");
            let sev = format!("severity={severity}");
            assert_eq!(
                route(&amtool, &[&name, &sev, "job=consistency-sidecar"]),
                expected,
                "{alert}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 8, "only {seen} alerts in rules.yml");

    // Chat goes to the DingTalk bridge, pages to PagerDuty as well.
    let am = yaml("alertmanager/alertmanager.yml");
    let receivers = &am["receivers"];
    let page = receivers.find("name", "pagerduty-and-chat");
    assert!(!page["pagerduty_configs"].seq().is_empty());
    for name in ["pagerduty-and-chat", "chat"] {
        let url = receivers.find("name", name)["webhook_configs"][0]["url"].str();
        assert!(
            url.starts_with("http://dingtalk-webhook:8060/dingtalk/"),
            "{name}: {url}"
        );
    }
    let inhibit = &am["inhibit_rules"][0];
    assert_eq!(
        inhibit["source_matchers"].strs(),
        vec![r#"severity="critical""#]
    );
    assert_eq!(
        inhibit["target_matchers"].strs(),
        vec![r#"severity="warning""#]
    );
    assert_eq!(inhibit["equal"].strs(), vec!["job"]);
}

fn alert_json(name: &str, severity: &str, job: &str) -> String {
    format!(
        r#"{{"labels":{{"alertname":"{name}","severity":"{severity}","job":"{job}"}},"annotations":{{"summary":"test"}}}}"#
    )
}

#[tokio::test]
async fn warning_is_inhibited_while_critical_fires_for_the_same_job() {
    let Some(alertmanager) = tool("prometheus-alertmanager").or_else(|| tool("alertmanager"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(&alertmanager);
    cmd.arg(format!("--config.file={}", config().display()))
        .arg(format!(
            "--storage.path={}",
            tmp.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        // No cluster: no gossip port to pick, no peer to look for.
        .arg("--cluster.listen-address=")
        .current_dir(tmp.path());
    let server = Process::spawn("alertmanager", cmd);
    let addr = server
        .wait_for_line("its `Listening on` line", listening_on)
        .await;
    let url = |path: &str| format!("http://{addr}{path}");
    wait_for("alertmanager to be ready", || async {
        try_get(&url("/-/ready")).await.ok().filter(|r| r.0 == 200)
    })
    .await;

    let alerts = format!(
        "[{},{},{}]",
        alert_json("ConsistencySidecarDown", "critical", "consistency-sidecar"),
        alert_json("ConsistencyRatioBelow99", "warning", "consistency-sidecar"),
        alert_json("ConsistencyRatioBelow99", "warning", "other-job"),
    );
    let (status, _, body) = send(
        Request::post(url("/api/v2/alerts"))
            .header("content-type", "application/json")
            .body(full(alerts))
            .expect("request"),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");

    let (same, other, critical) = wait_for("the inhibition to apply", || async {
        let (_, _, body) = get(&url("/api/v2/alerts")).await;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body).ok()?;
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
    })
    .await;
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
}
