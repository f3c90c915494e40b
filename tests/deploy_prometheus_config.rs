//! The Prometheus scrape configs under `deploy/prometheus/`: promtool accepts them, and the
//! Kubernetes pod-discovery relabelling, run by a real Prometheus on the annotations and port
//! names of `deploy/kubernetes/deployment.yaml`, keeps exactly the sidecar's admin port.

mod deploy_support;

use std::process::Command;
use std::time::Duration;

use deploy_support::{
    deploy, free_port, get, read, run, run_ok, spawn_logged, tool, wait_for, yaml, TempDir,
};

#[test]
fn promtool_check_config_static() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let out = run_ok(
        &promtool,
        &["check", "config", "prometheus.yml"],
        &deploy("prometheus"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 rule files found"),
        "rules.yml must be loaded: {text}"
    );
}

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

/// The Kubernetes config with `kubernetes_sd_configs` replaced by static targets carrying the
/// same `__meta_kubernetes_*` labels: what Debian's Prometheus (built without Kubernetes
/// discovery) can load, with every relabelling rule left as it is.
fn with_static_discovery(text: &str, pods: &[FakePod]) -> String {
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
            (
                "__meta_kubernetes_namespace".to_string(),
                "brand-diagnosis".to_string(),
            ),
            (
                "__meta_kubernetes_pod_name".to_string(),
                pod.name.to_string(),
            ),
            (
                "__meta_kubernetes_pod_phase".to_string(),
                pod.phase.to_string(),
            ),
            (
                "__meta_kubernetes_pod_container_port_name".to_string(),
                pod.port_name.to_string(),
            ),
            (
                "__meta_kubernetes_pod_label_app_kubernetes_io_name".to_string(),
                "brand-diagnosis".to_string(),
            ),
        ];
        labels.extend(
            pod.annotations
                .iter()
                .map(|(k, v)| (meta_label(k), v.clone())),
        );
        for (k, v) in labels {
            targets.push_str(&format!("          {k}: \"{v}\"\n"));
        }
    }
    format!("{}{}{}", &text[..start], targets, &text[end..])
}

#[test]
fn kubernetes_scrape_config_keeps_only_the_admin_port() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let text = read(&deploy("prometheus/prometheus-kubernetes.yml"));

    // A Prometheus built with Kubernetes discovery checks the file as it is.
    let direct = run(
        &promtool,
        &["check", "config", "prometheus-kubernetes.yml"],
        &deploy("prometheus"),
    );
    let stderr = String::from_utf8_lossy(&direct.stderr);
    assert!(
        direct.status.success() || stderr.contains("kubernetes_sd_configs not found"),
        "promtool check config prometheus-kubernetes.yml:\n{stderr}"
    );

    // The pod template's own annotations and port names drive the fake discovery.
    let deployment = yaml::parse(&read(&deploy("kubernetes/deployment.yaml")));
    let template = deployment.at(&["spec", "template"]);
    let annotations: Vec<(String, String)> = match template.at(&["metadata", "annotations"]) {
        yaml::Yaml::Map(entries) => entries
            .iter()
            .map(|(k, v)| (k.clone(), v.str().to_string()))
            .collect(),
        other => panic!("annotations: {other:?}"),
    };
    let annotation = |key: &str| -> String {
        annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let sidecar = template
        .at(&["spec", "containers"])
        .find("name", "consistency-sidecar");
    let ports = sidecar.get("ports");
    let admin = ports.find("name", "admin");
    assert_eq!(
        annotation("prometheus.io/port"),
        admin.get("containerPort").str()
    );
    let not_scraped: Vec<(String, String)> = annotations
        .iter()
        .map(|(k, v)| {
            if k == "prometheus.io/scrape" {
                (k.clone(), "false".into())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let pods = [
        FakePod {
            name: "p1",
            phase: "Running",
            port_name: "admin",
            annotations: annotations.clone(),
        },
        FakePod {
            name: "p1",
            phase: "Running",
            port_name: "http",
            annotations: annotations.clone(),
        },
        FakePod {
            name: "p2",
            phase: "Running",
            port_name: "admin",
            annotations: not_scraped,
        },
        FakePod {
            name: "p3",
            phase: "Pending",
            port_name: "admin",
            annotations: annotations.clone(),
        },
    ];

    let tmp = TempDir::new("deploy-prom-k8s");
    tmp.write("rules.yml", &read(&deploy("prometheus/rules.yml")));
    let config = tmp.write("prometheus.yml", &with_static_discovery(&text, &pods));
    run_ok(
        &promtool,
        &["check", "config", config.to_str().unwrap()],
        tmp.path(),
    );

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .current_dir(tmp.path());
    let mut server = spawn_logged("prometheus", cmd, tmp.path().join("prometheus.log"));

    // Discovery results reach the scrape manager within about 5 seconds.
    let targets = wait_for(
        "the targets to be discovered",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            server.assert_running();
            let resp = get(&addr, "/api/v1/targets?state=any").ok()?;
            let v: serde_json::Value = serde_json::from_str(&resp.body).ok()?;
            let data = &v["data"];
            let seen =
                data["activeTargets"].as_array()?.len() + data["droppedTargets"].as_array()?.len();
            (seen == pods.len()).then(|| data.clone())
        },
    );
    let active = targets["activeTargets"].as_array().expect("activeTargets");
    assert_eq!(
        active.len(),
        1,
        "exactly the admin port of the running, annotated pod: {active:#?}"
    );
    let target = &active[0];
    assert_eq!(target["labels"]["job"], "consistency-sidecar", "{target:#}");
    assert_eq!(target["labels"]["pod"], "p1");
    assert_eq!(target["labels"]["namespace"], "brand-diagnosis");
    assert_eq!(
        target["scrapeUrl"].as_str().unwrap_or_default(),
        format!(
            "http://127.0.0.1:{}{}",
            annotation("prometheus.io/port"),
            annotation("prometheus.io/path")
        ),
    );
    drop(server);
}
