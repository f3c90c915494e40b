//! The Kubernetes manifests, the Dockerfile and the shipped sidecar configs line up: ports, probe
//! paths, names, the config path and the scrape settings agree with each other and with what the
//! sidecar's own config parser accepts.

mod support;

use std::net::SocketAddr;

use clap::Parser;
use consistency_sidecar::cli::{Cli, Command};
use consistency_sidecar::config::{self, Config};
use consistency_sidecar::settings::Settings;
use support::deploy::{deploy, read, yaml, Node};
use support::process::on_path;
use support::{repo, run};
use yaml_rust2::Yaml;

const CONFIG_PATH: &str = "/etc/consistency-sidecar/sidecar.toml";

fn manifest(name: &str) -> Yaml {
    yaml(&format!("kubernetes/{name}"))
}

/// Parses and validates a sidecar TOML exactly as `consistency-sidecar run --config` would.
fn sidecar_config(text: &str, origin: &str) -> Config {
    config::parse(text)
        .and_then(Settings::compile)
        .unwrap_or_else(|e| panic!("{origin}: {e}"))
        .config
}

fn port_of(container: &Yaml, name: &str) -> u16 {
    let port = container["ports"].find("name", name)["containerPort"].as_i64();
    port.and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("port {name}: {port:?}"))
}

fn labels_match(selector: &Yaml, labels: &Yaml) {
    let wanted = selector
        .as_hash()
        .unwrap_or_else(|| panic!("selector is not a map: {selector:?}"));
    assert!(!wanted.is_empty(), "an empty selector selects everything");
    for (k, v) in wanted {
        assert_eq!(
            &labels[k.str()],
            v,
            "label {k:?} of the selector is not on the pod template"
        );
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = manifest("kustomization.yaml");
    let listed: Vec<&str> = kustomization["resources"].strs();
    for entry in std::fs::read_dir(deploy("kubernetes")).expect("deploy/kubernetes") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&name.as_str()),
                "{name} is not in kustomization.yaml"
            );
        }
    }
    for name in &listed {
        assert!(
            deploy(&format!("kubernetes/{name}")).is_file(),
            "{name} listed but missing"
        );
    }
    // kubectl is not a CI requirement; where it exists, kustomize must build the set.
    if let Some(kubectl) = on_path("kubectl") {
        let out = run(
            &kubectl,
            &["kustomize", deploy("kubernetes").to_str().unwrap()],
            &repo(),
        );
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn pod_service_configmap_and_podmonitor_line_up() {
    let configmap = manifest("configmap.yaml");
    let deployment = manifest("deployment.yaml");
    let service = manifest("service.yaml");
    let podmonitor = manifest("podmonitor.yaml");
    assert_eq!(configmap["kind"].str(), "ConfigMap");
    assert_eq!(deployment["kind"].str(), "Deployment");
    assert_eq!(service["kind"].str(), "Service");
    assert_eq!(podmonitor["kind"].str(), "PodMonitor");

    // The config the pod runs with.
    let toml_text = configmap["data"]["sidecar.toml"].str();
    let config = sidecar_config(toml_text, "deploy/kubernetes/configmap.yaml sidecar.toml");

    let template = &deployment["spec"]["template"];
    let pod_labels = &template["metadata"]["labels"];
    labels_match(&deployment["spec"]["selector"]["matchLabels"], pod_labels);
    let pod = &template["spec"];
    let containers = &pod["containers"];
    let sidecar = containers.find("name", "consistency-sidecar");
    let backend = containers.find("name", "backend");

    // Ports: the sidecar serves clients on 8080 and the admin port on 9464, on every interface
    // of the pod (the kubelet and Prometheus come in over the pod IP).
    let http_port = port_of(sidecar, "http");
    let admin_port = port_of(sidecar, "admin");
    assert_eq!(http_port, 8080);
    assert_eq!(admin_port, 9464);
    assert_eq!(
        config.listen,
        SocketAddr::from(([0, 0, 0, 0], http_port)),
        "listen"
    );
    assert_eq!(
        config.admin_listen,
        SocketAddr::from(([0, 0, 0, 0], admin_port)),
        "admin_listen"
    );

    // The backend listens on loopback only, where the sidecar's upstream points.
    assert_eq!(config.upstream.uri.to_string(), "http://127.0.0.1:5000/");
    let backend_args = backend["args"].strs();
    let bind = backend_args
        .iter()
        .position(|a| *a == "--bind")
        .map(|i| backend_args[i + 1]);
    assert_eq!(
        bind,
        Some("127.0.0.1:5000"),
        "backend args: {backend_args:?}"
    );
    assert!(
        backend["ports"].is_badvalue(),
        "the backend must not expose a port outside the pod"
    );

    // Probes on the admin port.
    let probe = |kind: &str| &sidecar[kind]["httpGet"];
    assert_eq!(probe("readinessProbe")["path"].str(), "/readyz");
    assert_eq!(probe("livenessProbe")["path"].str(), "/healthz");
    for kind in ["readinessProbe", "livenessProbe"] {
        assert_eq!(probe(kind)["port"].str(), "admin", "{kind} port");
    }

    // The config file: ConfigMap -> volume -> mount -> --config.
    let args = sidecar["args"].strs();
    assert_eq!(args[..3], ["run", "--config", CONFIG_PATH]);
    // A ConfigMap changes under a running pod: the sidecar watches its file and reloads. The
    // arguments as the binary's own parser reads them.
    let cli = Cli::try_parse_from(std::iter::once("consistency-sidecar").chain(args.clone()))
        .unwrap_or_else(|e| panic!("sidecar args {args:?}: {e}"));
    let Some(Command::Run(run_args)) = cli.command else {
        panic!("sidecar args {args:?} are not `run`");
    };
    assert!(
        run_args.watch_config,
        "the sidecar must watch its ConfigMap (--watch-config): {args:?}"
    );
    let mount = sidecar["volumeMounts"]
        .seq()
        .iter()
        .find(|m| format!("{}/sidecar.toml", m["mountPath"].str()) == CONFIG_PATH);
    let mount = mount.expect("a volume mounted at the config's directory");
    let volume = pod["volumes"].find("name", mount["name"].str());
    assert_eq!(
        volume["configMap"]["name"].str(),
        configmap["metadata"]["name"].str()
    );

    // Requests and limits on every container.
    for c in containers.seq() {
        let name = c["name"].str();
        let res = &c["resources"];
        for key in ["cpu", "memory"] {
            assert!(
                !res["requests"][key].is_badvalue(),
                "{name}: no {key} request"
            );
        }
        assert!(
            !res["limits"]["memory"].is_badvalue(),
            "{name}: no memory limit"
        );
    }

    // Shutdown: the drain fits in the grace period.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .and_then(|s| u64::try_from(s).ok())
        .expect("terminationGracePeriodSeconds in seconds");
    let pre_stop = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .and_then(|s| u64::try_from(s).ok())
        .expect("preStop sleep seconds");
    assert!(
        grace > pre_stop + config.proxy.shutdown_grace.as_secs(),
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop}s + shutdown_grace {:?}",
        config.proxy.shutdown_grace
    );

    // Non-root, as the image's user.
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["runAsUser"].as_i64(), Some(10001));

    // Scrape annotations point at the admin port's /metrics (annotations are strings).
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].str(), "true");
    assert_eq!(
        annotations["prometheus.io/port"].str(),
        admin_port.to_string()
    );
    assert_eq!(annotations["prometheus.io/path"].str(), "/metrics");

    // The Service sends clients to the sidecar, never to the backend or the admin port.
    labels_match(&service["spec"]["selector"], pod_labels);
    let service_ports = service["spec"]["ports"].seq();
    assert_eq!(
        service_ports.len(),
        1,
        "only the proxy port is a Service port"
    );
    assert_eq!(service_ports[0]["targetPort"].str(), "http");

    // The PodMonitor scrapes the same port and path, as job consistency-sidecar.
    labels_match(&podmonitor["spec"]["selector"]["matchLabels"], pod_labels);
    let endpoint = &podmonitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"].str(), "admin");
    assert_eq!(endpoint["path"].str(), "/metrics");
    let job = endpoint["relabelings"].find("targetLabel", "job");
    assert_eq!(job["replacement"].str(), "consistency-sidecar");

    // The pod-discovery scrape config keeps that port name and names the job the same.
    let prom = yaml("prometheus/prometheus-kubernetes.yml");
    let scrape = &prom["scrape_configs"][0];
    let relabel = &scrape["relabel_configs"];
    let keep_port = relabel
        .seq()
        .iter()
        .find(|r| r["source_labels"].strs() == vec!["__meta_kubernetes_pod_container_port_name"])
        .expect("a keep on the container port name");
    assert_eq!(keep_port["regex"].str(), "admin");
    assert_eq!(
        relabel.find("target_label", "job")["replacement"].str(),
        "consistency-sidecar"
    );
    let namespaces = scrape["kubernetes_sd_configs"][0]["namespaces"]["names"].strs();
    let kustomization = manifest("kustomization.yaml");
    assert_eq!(namespaces, vec![kustomization["namespace"].str()]);
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_both_ports() {
    let text = read(&deploy("Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage build expected: {froms:?}");
    assert_eq!(froms[0], "FROM ${RUST_IMAGE} AS builder", "{froms:?}");
    // The base images are build arguments whose defaults are the public images.
    let arg = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}=<default>"))
    };
    assert!(arg("RUST_IMAGE").starts_with("rust:1."));
    assert!(arg("RUST_IMAGE").ends_with("-bookworm"));
    assert_eq!(arg("RUNTIME_IMAGE"), "debian:bookworm-slim");
    // The runtime is assembled from the Debian image onto an empty one: nothing else in it.
    assert!(
        froms.contains(&"FROM ${RUNTIME_IMAGE} AS runtime-root"),
        "{froms:?}"
    );
    assert_eq!(froms.last(), Some(&"FROM scratch"), "{froms:?}");
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );
    let expose: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(expose, vec!["8080", "9464"]);
    assert!(text.contains(&format!(
        "COPY deploy/docker/sidecar.toml /rootfs{CONFIG_PATH}"
    )));
    assert!(text.contains(&format!(r#"CMD ["run", "--config", "{CONFIG_PATH}"]"#)));
    // Every build-context source exists (the context is the repository root).
    for l in &lines {
        if let Some(rest) = l.strip_prefix("COPY ") {
            if rest.starts_with("--from") {
                continue;
            }
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(
                    repo().join(src).exists(),
                    "COPY source {src} does not exist"
                );
            }
        }
    }

    // The image's config: ports as exposed, reachable from outside the container.
    let config = sidecar_config(
        &read(&deploy("docker/sidecar.toml")),
        "deploy/docker/sidecar.toml",
    );
    assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
    assert_eq!(config.admin_listen, SocketAddr::from(([0, 0, 0, 0], 9464)));
}

#[test]
fn systemd_config_matches_the_static_scrape_target() {
    let config = sidecar_config(
        &read(&deploy("systemd/sidecar.toml")),
        "deploy/systemd/sidecar.toml",
    );
    let prom = yaml("prometheus/prometheus.yml");
    let job = prom["scrape_configs"].find("job_name", "consistency-sidecar");
    let target = job["static_configs"][0]["targets"][0].str().to_string();
    assert_eq!(
        target,
        config.admin_listen.to_string(),
        "Prometheus scrapes the admin port"
    );
    assert_eq!(
        Config::default().admin_listen.to_string(),
        target,
        "and it is the default admin address"
    );
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );

    let unit = read(&deploy("systemd/consistency-sidecar.service"));
    assert!(unit.contains(&format!(
        "ExecStart=/usr/local/bin/consistency-sidecar run --config {CONFIG_PATH}"
    )));
    // The sample file must be what the unit reads once installed.
    let tmp = tempfile::tempdir().expect("temp dir");
    let copy = tmp.path().join("sidecar.toml");
    std::fs::write(&copy, read(&deploy("systemd/sidecar.toml"))).expect("write the copy");
    config::load(Some(&copy))
        .and_then(Settings::compile)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A manifest of the optional shared-memory component.
fn component(name: &str) -> Yaml {
    manifest(&format!("components/shared-memory/{name}"))
}

#[test]
fn shared_memory_component_adds_redis_and_leaves_the_base_alone() {
    let kustomization = component("kustomization.yaml");
    assert_eq!(kustomization["kind"].str(), "Component");
    for name in kustomization["resources"].strs() {
        assert!(
            deploy(&format!("kubernetes/components/shared-memory/{name}")).is_file(),
            "{name} listed but missing"
        );
    }
    // The base does not use it: `kubectl apply -k deploy/kubernetes` is as before.
    assert!(manifest("kustomization.yaml")["components"].is_badvalue());

    // The patched sidecar.toml is the base's, word for word, plus [tracker]; and it is valid.
    let base = manifest("configmap.yaml");
    let base_toml = base["data"]["sidecar.toml"].str();
    let patch = component("configmap-patch.yaml");
    assert_eq!(
        patch["metadata"]["name"].str(),
        base["metadata"]["name"].str()
    );
    let patched = patch["data"]["sidecar.toml"].str();
    assert!(
        patched.starts_with(base_toml),
        "the patch must repeat the base's sidecar.toml before its [tracker] section"
    );
    // As the pod has it from the Secret (sidecar-env-patch.yaml): validation reads it.
    std::env::set_var("REDIS_PASSWORD", "from-the-secret");
    let config = sidecar_config(patched, "components/shared-memory/configmap-patch.yaml");
    assert_eq!(config.tracker.store, config::TrackerStore::Redis);

    // redis_url names the Service and its port; the Service selects the Redis pod's port.
    let service = component("redis-service.yaml");
    let redis = component("redis-deployment.yaml");
    let pod = &redis["spec"]["template"];
    let port = &service["spec"]["ports"].seq()[0];
    assert_eq!(
        config.tracker.redis_url,
        format!(
            "redis://{}:{}",
            service["metadata"]["name"].str(),
            port["port"].as_i64().unwrap_or_default()
        )
    );
    labels_match(&service["spec"]["selector"], &pod["metadata"]["labels"]);
    let container = &pod["spec"]["containers"].seq()[0];
    assert_eq!(
        port_of(container, port["targetPort"].str()).to_string(),
        port["port"].as_i64().unwrap_or_default().to_string()
    );

    // The password: one Secret, read by Redis (requirepass) and by the sidecar through the
    // variable tracker.redis_password_env names, never in the ConfigMap.
    let secret = component("redis-secret.yaml");
    assert_eq!(secret["kind"].str(), "Secret");
    let secret_name = secret["metadata"]["name"].str();
    assert!(
        !config.tracker.redis_url.contains('@'),
        "no password in the URL"
    );
    let from_secret = |container: &Yaml, var: &str| {
        let env = container["env"].find("name", var);
        let key = &env["valueFrom"]["secretKeyRef"];
        assert_eq!(key["name"].str(), secret_name, "{var}");
        assert!(
            !secret["stringData"][key["key"].str()].is_badvalue(),
            "{var}"
        );
    };
    let env_patch = component("sidecar-env-patch.yaml");
    let patched_sidecar =
        env_patch["spec"]["template"]["spec"]["containers"].find("name", "consistency-sidecar");
    from_secret(patched_sidecar, &config.tracker.redis_password_env);
    from_secret(container, "REDIS_PASSWORD");
    let args = container["args"].strs();
    let requirepass = args
        .iter()
        .position(|a| *a == "--requirepass")
        .expect("requirepass");
    assert_eq!(args[requirepass + 1], "$(REDIS_PASSWORD)");

    // Capacity is Redis's: a memory bound, an eviction policy, and a limit above the bound.
    let after = |flag: &str| {
        let at = args.iter().position(|a| *a == flag).expect(flag);
        args[at + 1]
    };
    assert_eq!(after("--maxmemory"), "64mb");
    assert!(["allkeys-lru", "volatile-lru"].contains(&after("--maxmemory-policy")));
    assert_eq!(container["resources"]["limits"]["memory"].str(), "128Mi");

    // Only the application's pods may reach Redis.
    let policy = component("redis-networkpolicy.yaml");
    labels_match(
        &policy["spec"]["podSelector"]["matchLabels"],
        &pod["metadata"]["labels"],
    );
    let ingress = &policy["spec"]["ingress"].seq()[0];
    let app_pod = manifest("deployment.yaml");
    labels_match(
        &ingress["from"].seq()[0]["podSelector"]["matchLabels"],
        &app_pod["spec"]["template"]["metadata"]["labels"],
    );
    port_of(container, ingress["ports"].seq()[0]["port"].str());

    // The ready-made overlay: the base, the component, the base's namespace.
    let overlay = yaml("overlays/shared-memory/kustomization.yaml");
    assert_eq!(overlay["resources"].strs(), vec!["../../kubernetes"]);
    assert_eq!(
        overlay["components"].strs(),
        vec!["../../kubernetes/components/shared-memory"]
    );
    assert_eq!(
        overlay["namespace"].str(),
        manifest("kustomization.yaml")["namespace"].str()
    );
    // kubectl is not a CI requirement; where it exists, kustomize must build the overlay.
    if let Some(kubectl) = on_path("kubectl") {
        let overlay_dir = deploy("overlays/shared-memory");
        let out = run(
            &kubectl,
            &["kustomize", overlay_dir.to_str().unwrap()],
            &repo(),
        );
        assert!(
            out.status.success(),
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = String::from_utf8_lossy(&out.stdout);
        assert!(built.contains("store = \"redis\""));
        assert_eq!(built.matches("kind: Deployment").count(), 2);
        assert_eq!(built.matches("namespace: brand-diagnosis").count(), 9);
        // The sidecar keeps RUST_LOG and gains the password from the Secret.
        assert!(built.contains("name: REDIS_PASSWORD") && built.contains("name: RUST_LOG"));
        // The admin port's policy and Redis's.
        assert_eq!(built.matches("kind: NetworkPolicy").count(), 2);
    }
}

#[test]
fn network_policy_opens_the_proxy_port_and_the_admin_port_only_to_monitoring() {
    let policy = manifest("networkpolicy.yaml");
    let deployment = manifest("deployment.yaml");
    assert_eq!(policy["kind"].str(), "NetworkPolicy");
    let template = &deployment["spec"]["template"];
    labels_match(
        &policy["spec"]["podSelector"]["matchLabels"],
        &template["metadata"]["labels"],
    );
    assert_eq!(policy["spec"]["policyTypes"].strs(), ["Ingress"]);
    let sidecar = template["spec"]["containers"].find("name", "consistency-sidecar");
    let rules = policy["spec"]["ingress"].seq();
    assert_eq!(rules.len(), 2, "one rule per port");
    let rule_for = |port: &str| {
        rules
            .iter()
            .find(|rule| rule["ports"].seq().iter().any(|p| p["port"].str() == port))
            .unwrap_or_else(|| panic!("no ingress rule for port {port}"))
    };
    // Every port named is one the sidecar declares.
    for port in ["http", "admin"] {
        port_of(sidecar, port);
        assert_eq!(rule_for(port)["ports"].seq().len(), 1, "{port} alone");
    }
    assert!(
        rule_for("http")["from"].is_badvalue(),
        "the proxy port stays open to every client"
    );
    let from = rule_for("admin")["from"].seq();
    assert_eq!(from.len(), 1, "admin: one source");
    assert!(from[0]["podSelector"].is_badvalue() && from[0]["ipBlock"].is_badvalue());
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].str(),
        "monitoring"
    );
}

#[test]
fn every_scrape_config_shows_where_the_admin_token_goes() {
    for file in [
        "prometheus/prometheus.yml",
        "prometheus/prometheus-kubernetes.yml",
    ] {
        let text = std::fs::read_to_string(deploy(file)).expect("read");
        assert!(
            text.contains("# authorization:\n    #   credentials_file: "),
            "{file} shows authorization.credentials_file"
        );
    }
    let podmonitor = std::fs::read_to_string(deploy("kubernetes/podmonitor.yaml")).expect("read");
    assert!(
        podmonitor.contains("# authorization:"),
        "the PodMonitor too"
    );
}
