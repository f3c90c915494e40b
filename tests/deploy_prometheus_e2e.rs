//! What only a live Prometheus shows: it discovers the sidecar through the shipped Kubernetes
//! relabelling (`deploy/prometheus/prometheus-kubernetes.yml`, discovery swapped for static
//! targets carrying the labels of `deploy/kubernetes/deployment.yaml`), scrapes the sidecar
//! binary in front of the Python stand-in, and the shipped recording rules (a short-window copy
//! made by `make_test_rules.py`) turn those real series into the ratios the stand-in's ledger
//! predicts. The alerts' logic is promtool's job (`deploy/prometheus/rules.test.yml`).
//!
//! About 10 seconds, most of it Prometheus' discovery settling.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::deploy::{deploy, listening_on, read, yaml, Node};
use support::{
    get, post_json, repo, run_ok, tool, try_get, urlencode, wait_for, Process, Sidecar, StandIn,
    PATIENCE,
};

const JOB: &str = "consistency-sidecar";
const ROUTES: [&str; 3] = ["task_status", "test_progress", "test_history"];

/// One discovered pod container port, as Kubernetes pod discovery would describe it.
struct FakePod<'a> {
    name: &'a str,
    phase: &'a str,
    port_name: &'a str,
    annotations: Vec<(String, String)>,
}

/// Prometheus turns annotation names into label names: every character outside [a-zA-Z0-9_]
/// becomes `_`.
fn meta_label(annotation: &str) -> String {
    let clean: String = annotation
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_annotation_{clean}")
}

/// The Kubernetes config as a test Prometheus can run it: `kubernetes_sd_configs` replaced by
/// static targets with the same `__meta_kubernetes_*` labels (Debian's Prometheus is built
/// without Kubernetes discovery), every relabelling rule as shipped, scrapes and evaluations
/// every second, and no Alertmanager to notify.
fn test_config(text: &str, pods: &[FakePod]) -> String {
    let start = text
        .find("    kubernetes_sd_configs:\n")
        .expect("kubernetes_sd_configs block");
    let end = text[start..]
        .find("    relabel_configs:\n")
        .expect("relabel_configs after discovery")
        + start;
    let mut targets = String::from("    static_configs:\n");
    for pod in pods {
        targets.push_str("      - targets: [\"127.0.0.1:8080\"]\n        labels:\n");
        let mut labels = vec![
            ("__meta_kubernetes_namespace".to_string(), "brand-diagnosis"),
            ("__meta_kubernetes_pod_name".to_string(), pod.name),
            ("__meta_kubernetes_pod_phase".to_string(), pod.phase),
            (
                "__meta_kubernetes_pod_container_port_name".to_string(),
                pod.port_name,
            ),
            (
                "__meta_kubernetes_pod_label_app_kubernetes_io_name".to_string(),
                "brand-diagnosis",
            ),
        ];
        labels.extend(
            pod.annotations
                .iter()
                .map(|(k, v)| (meta_label(k), v.as_str())),
        );
        for (k, v) in labels {
            targets.push_str(&format!("          {k}: \"{v}\"\n"));
        }
    }
    let config = format!("{}{}{}", &text[..start], targets, &text[end..]);
    let alerting = config.find("alerting:\n").expect("an alerting block");
    let scrapes = config.find("scrape_configs:\n").expect("scrape_configs");
    let config = format!("{}{}", &config[..alerting], &config[scrapes..]);
    [
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
    ]
    .iter()
    .fold(config, |config, (long, short)| {
        assert!(config.contains(long), "the shipped config has {long}");
        config.replace(long, short)
    })
}

/// The pods Prometheus "discovers": only the first may be scraped. Its annotations are the pod
/// template's, but for the port: the sidecar under test listens on `admin`.
fn pods(admin: SocketAddr) -> Vec<FakePod<'static>> {
    let deployment = yaml("kubernetes/deployment.yaml");
    let template = &deployment["spec"]["template"];
    let sidecar = template["spec"]["containers"].find("name", "consistency-sidecar");
    let admin_port = sidecar["ports"].find("name", "admin")["containerPort"].as_i64();
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].str().parse().ok(),
        admin_port,
        "the port annotation names the sidecar's admin port"
    );
    let annotations: Vec<(String, String)> = annotations
        .as_hash()
        .expect("annotations")
        .iter()
        .map(|(k, v)| (k.str().to_string(), v.str().to_string()))
        .collect();
    let with = |key: &str, value: String| -> Vec<(String, String)> {
        let mut changed = annotations.clone();
        let slot = changed
            .iter_mut()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("the pod template has no {key} annotation"));
        slot.1 = value;
        changed
    };
    let scraped = with("prometheus.io/port", admin.port().to_string());
    vec![
        FakePod {
            name: "p1",
            phase: "Running",
            port_name: "admin",
            annotations: scraped.clone(),
        },
        FakePod {
            name: "p1",
            phase: "Running",
            port_name: "http",
            annotations: scraped.clone(),
        },
        FakePod {
            name: "p2",
            phase: "Running",
            port_name: "admin",
            annotations: with("prometheus.io/scrape", "false".into()),
        },
        FakePod {
            name: "p3",
            phase: "Pending",
            port_name: "admin",
            annotations: scraped,
        },
    ]
}

/// The result vector of an instant query (empty on any failure: the callers wait for it).
async fn query(prom: SocketAddr, q: &str) -> Vec<Value> {
    let url = format!("http://{prom}/api/v1/query?query={}", urlencode(q));
    let Ok((_, _, body)) = try_get(&url).await else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a query with exactly one result series.
async fn scalar(prom: SocketAddr, q: &str) -> Option<f64> {
    match query(prom, q).await.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Equal but for float rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Waits until the query `q` has one series, of value `want`; fails with what it has instead.
async fn wait_value(prom: SocketAddr, server: &Process, q: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = scalar(prom, q).await;
        if got.is_some_and(|v| close(v, want)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{q} is {got:?}, not {want}, after {PATIENCE:?}{}",
            server.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clients through the sidecar, bounded: tasks created, then polled through their whole life
/// (the stand-in injects inconsistencies into finished records), with the history now and then.
async fn traffic(sidecar: &Sidecar) {
    let mut ids = Vec::new();
    for n in 0..10 {
        let body = format!(r#"{{"brand_list": ["brand-{n}"]}}"#);
        let (status, _, body) = post_json(&sidecar.url("/api/perform-brand-test"), &body).await;
        assert_eq!(status, 200);
        let created: Value = serde_json::from_slice(&body).expect("JSON");
        ids.push(
            created["execution_id"]
                .as_str()
                .expect("execution_id")
                .to_string(),
        );
    }
    for _ in 0..8 {
        for id in &ids {
            let (status, _, _) = get(&sidecar.url(&format!("/test/status/{id}"))).await;
            assert_eq!(status, 200);
            let progress = format!("/api/test-progress?executionId={id}");
            let (status, _, _) = get(&sidecar.url(&progress)).await;
            assert_eq!(status, 200);
        }
        let (status, _, _) = get(&sidecar.url("/api/test-history")).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn relabelled_scrapes_feed_the_recording_rules() {
    let Some(python) = tool("python3") else {
        return;
    };
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let Some(standin) = StandIn::start(&["--inject-rate", "0.3", "--seed", "7"]).await else {
        return;
    };
    let sidecar = Sidecar::start(&standin.url(), "").await;

    // The short-window rules beside the config, under the name the config loads.
    let tmp = tempfile::tempdir().expect("temp dir");
    let rules = tmp.path().join("rules.yml");
    let script = deploy("prometheus/make_test_rules.py");
    run_ok(
        &python,
        &[
            script.to_str().expect("UTF-8"),
            "-o",
            rules.to_str().expect("UTF-8"),
        ],
        &repo(),
    );
    let pods = pods(sidecar.admin);
    let config = tmp.path().join("prometheus.yml");
    let text = test_config(
        &read(&deploy("prometheus/prometheus-kubernetes.yml")),
        &pods,
    );
    std::fs::write(&config, text).expect("write prometheus.yml");
    run_ok(
        &promtool,
        &["check", "config", config.to_str().expect("UTF-8")],
        tmp.path(),
    );

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

    // Discovery, then relabelling: exactly the admin port of the running, annotated pod.
    let targets = wait_for("every fake pod to be discovered", || async {
        let url = format!("http://{prom}/api/v1/targets?state=any");
        let (_, _, body) = try_get(&url).await.ok()?;
        let v: Value = serde_json::from_slice(&body).ok()?;
        let data = &v["data"];
        let seen =
            data["activeTargets"].as_array()?.len() + data["droppedTargets"].as_array()?.len();
        (seen == pods.len()).then(|| data.clone())
    })
    .await;
    let active = targets["activeTargets"].as_array().expect("activeTargets");
    assert_eq!(active.len(), 1, "only p1's admin port: {active:#?}");
    let target = &active[0];
    assert_eq!(target["labels"]["job"], JOB, "{target:#}");
    assert_eq!(target["labels"]["pod"], "p1");
    assert_eq!(target["labels"]["namespace"], "brand-diagnosis");
    assert_eq!(
        target["scrapeUrl"].as_str().unwrap_or_default(),
        format!("http://{}/metrics", sidecar.admin),
    );

    // A first scrape, before any traffic: every counter starts at 0 inside the rate windows.
    let checks = format!(r#"consistency_checks_total{{job="{JOB}",route="task_status"}}"#);
    wait_value(prom, &server, &checks, 0.0).await;
    let up = format!(r#"up{{job="{JOB}"}}"#);
    assert_eq!(scalar(prom, &up).await, Some(1.0), "{up}");
    let series = query(prom, &checks).await;
    let labels = &series[0]["metric"];
    assert_eq!(labels["pod"], "p1", "{labels}");
    assert_eq!(labels["namespace"], "brand-diagnosis", "{labels}");
    assert_eq!(labels["app"], "brand-diagnosis", "{labels}");

    traffic(&sidecar).await;
    let ledger = standin.ledger().await;
    let expected = |route: &str| -> (f64, f64) {
        let entry = &ledger["routes"][route];
        let count = |key: &str| entry[key].as_f64().expect("ledger count");
        (count("consistent"), count("records"))
    };
    let (consistent, records) = ROUTES
        .iter()
        .map(|r| expected(r))
        .fold((0.0, 0.0), |(c, r), (rc, rr)| (c + rc, r + rr));
    assert!(
        consistent < records,
        "the stand-in injected nothing: {ledger}"
    );

    // The recorded ratios over the scraped series are the ledger's, route by route: the whole
    // run lies inside the 20s window standing for 30m, so rate() cancels out of each ratio.
    for route in ROUTES {
        let (c, r) = expected(route);
        let q = format!(
            r#"job_route:consistency_consistent_records:ratio_rate30m{{job="{JOB}",route="{route}"}}"#
        );
        wait_value(prom, &server, &q, c / r).await;
    }
    let q = format!(r#"job:consistency_consistent_records:ratio_rate30m{{job="{JOB}"}}"#);
    wait_value(prom, &server, &q, consistent / records).await;
    // Aggregated to the job: the pod, namespace and instance labels are summed away.
    let recorded = query(prom, &q).await;
    let mut names: Vec<&str> = recorded[0]["metric"]
        .as_object()
        .expect("labels")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["__name__", "job"]);

    // The shipped alert expression matches the recorded series (its `for:` is promtool's).
    let state = wait_for(
        "ConsistencyRatioBelow99 to be pending or firing",
        || async {
            let url = format!("http://{prom}/api/v1/alerts");
            let (_, _, body) = try_get(&url).await.ok()?;
            let v: Value = serde_json::from_slice(&body).ok()?;
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "ConsistencyRatioBelow99"
                        && a["labels"]["job"] == JOB
                })
                .and_then(|a| a["state"].as_str().map(str::to_string))
        },
    )
    .await;
    assert!(["pending", "firing"].contains(&state.as_str()), "{state}");
    drop(server);
}
