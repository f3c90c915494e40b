//! The Prometheus scrape configs under `deploy/prometheus/` pass promtool. (The Kubernetes
//! relabelling, run by a real Prometheus on real series: `deploy_prometheus_e2e.rs`.)

mod support;

use support::deploy::deploy;
use support::{run, run_ok, tool};

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

#[test]
fn promtool_check_config_kubernetes() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    // A Prometheus built with Kubernetes discovery checks the file as it is; Debian's lacks it.
    let out = run(
        &promtool,
        &["check", "config", "prometheus-kubernetes.yml"],
        &deploy("prometheus"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("kubernetes_sd_configs not found"),
        "promtool check config prometheus-kubernetes.yml:\n{stderr}"
    );
}
