//! The container image is real: built from `deploy/Dockerfile` on local stand-ins of its base
//! images (made from Debian's archive), it holds no shell or build tool, its user, ports, entry
//! point and config path are the Kubernetes manifests', and its root filesystem runs as the pod
//! runs it (read-only root, user 10001, no capabilities, the backend beside it on
//! 127.0.0.1:5000): probes answer, a request reaches the Python stand-in, `check-config`
//! accepts the image's config, and SIGTERM lets an in-flight request finish, then exits 0.
//!
//! One test: the build is the slow part (minutes cold, seconds when cached; see
//! `support::image`), and every check runs on the one image it makes.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::deploy::{deploy, read, yaml, Node};
use support::image::{self, ContainerSpec, Image, Pod, Tools};
use support::{Process, PATIENCE};
use yaml_rust2::Yaml;

const CONFIG_PATH: &str = "/etc/consistency-sidecar/sidecar.toml";

// Not in the default run: a cold build compiles the release binary (fat LTO) inside the builder
// image, tens of minutes on a 2-core machine, so CI does not run it yet. Run it with
// `cargo test --test deploy_image -- --ignored` (as root, with mmdebstrap, buildah and iproute2;
// deploy/README.md says how). Under CI=true a missing tool fails it, never skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds deploy/Dockerfile from scratch; run with --ignored (deploy/README.md)"]
async fn image_builds_and_runs_as_the_pod_runs_it() {
    let Some(tools) = Tools::find() else {
        return;
    };
    let started = Instant::now();
    let image = image::build(&tools);
    let (size, layers) = image.size_and_layers();
    eprintln!(
        "image: {} built in {:?}, {size}\n{}",
        image.name,
        started.elapsed(),
        layers.join("\n")
    );

    let deployment = yaml("kubernetes/deployment.yaml");
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let sidecar = pod_spec["containers"].find("name", "consistency-sidecar");
    image_agrees_with_the_manifest(&image, sidecar);

    let container = image.container();
    runtime_holds_only_the_binary_and_its_libraries(&container.rootfs);

    let pod = Pod::start(&tools).await;
    let image_env = image_env(&image);
    let as_image = |argv: Vec<String>| ContainerSpec {
        rootfs: &container.rootfs,
        user: image.field("User").to_string(),
        read_only_root: true,
        volumes: Vec::new(),
        argv,
        env: image_env.clone(),
    };

    // `check-config` on the config baked into the image, at the documented path.
    let entrypoint = image.strings("Entrypoint");
    let check = pod.run_to_end(&as_image(
        [entrypoint.clone(), vec!["check-config".into()]].concat(),
    ));
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "check-config in the image: {}\n{printed}{}",
        check.status,
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        printed.contains(r#"admin_listen = "0.0.0.0:9464""#),
        "check-config did not read {CONFIG_PATH}:\n{printed}"
    );

    // As `docker run` starts it: the image's entry point and command, nothing mounted.
    let argv = [entrypoint.clone(), image.strings("Cmd")].concat();
    let mut docker_run = pod.run("the image's sidecar", &as_image(argv));
    serves_as_configured(&pod, &docker_run).await;
    runs_unprivileged_on_a_read_only_root(&docker_run, "10001");
    // The image's config asks for JSON logs (the built-in default is text): the file was read.
    let listening = docker_run
        .wait_for_line("the listening line", |l| {
            l.contains(r#""message":"listening""#)
                .then(|| l.to_string())
        })
        .await;
    assert!(listening.contains("0.0.0.0:9464"), "{listening}");
    docker_run.terminate(&tools.kill);
    let exit = docker_run.exit_status().await;
    assert!(exit.success(), "exit {exit:?}{}", docker_run.tail());
    drop(docker_run);

    // As the Deployment starts it: its arguments, its user, its ConfigMap mounted read-only at
    // the mount path, its environment.
    let configmap = yaml("kubernetes/configmap.yaml");
    // As the kubelet writes a ConfigMap volume: a world-readable directory of 0644 files.
    let volume = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(volume.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the volume");
    for (key, value) in configmap["data"].as_hash().expect("ConfigMap data") {
        std::fs::write(volume.path().join(key.str()), value.str()).expect("write the volume");
    }
    let security = &sidecar["securityContext"];
    let uid = security["runAsUser"].as_i64().expect("runAsUser");
    let gid = security["runAsGroup"].as_i64().expect("runAsGroup");
    let mount = &sidecar["volumeMounts"].seq()[0];
    let mut env = image_env.clone();
    for var in sidecar["env"].seq() {
        env.push((var["name"].str().into(), var["value"].str().into()));
    }
    let pod_run = ContainerSpec {
        rootfs: &container.rootfs,
        user: format!("{uid}:{gid}"),
        read_only_root: security["readOnlyRootFilesystem"].as_bool() == Some(true),
        volumes: vec![(volume.path().to_path_buf(), mount["mountPath"].str().into())],
        argv: [entrypoint, strings(&sidecar["args"])].concat(),
        env,
    };
    let mut kubernetes_run = pod.run("the pod's sidecar", &pod_run);
    serves_as_configured(&pod, &kubernetes_run).await;
    runs_unprivileged_on_a_read_only_root(&kubernetes_run, &uid.to_string());
    sigterm_lets_the_in_flight_request_finish(&pod, &mut kubernetes_run, &tools.kill).await;
}

/// The image's user, ports, entry point, config path and signal are the manifest's.
fn image_agrees_with_the_manifest(image: &Image, sidecar: &Yaml) {
    let security = &sidecar["securityContext"];
    let user = format!(
        "{}:{}",
        security["runAsUser"].as_i64().expect("runAsUser"),
        security["runAsGroup"].as_i64().expect("runAsGroup")
    );
    assert_eq!(
        image.field("User"),
        user,
        "image USER vs the securityContext"
    );
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["capabilities"]["drop"].strs(), vec!["ALL"]);

    let mut exposed: Vec<String> = image.config["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default();
    exposed.sort();
    let mut declared: Vec<String> = sidecar["ports"]
        .seq()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["containerPort"].as_i64().unwrap_or_default(),
                p["protocol"].str().to_lowercase()
            )
        })
        .collect();
    declared.sort();
    assert_eq!(exposed, declared, "EXPOSE vs the container's ports");

    // The Deployment replaces CMD and keeps the ENTRYPOINT: its args must start like CMD.
    assert!(
        sidecar["command"].is_badvalue(),
        "the Deployment must keep ENTRYPOINT"
    );
    assert_eq!(
        image.strings("Entrypoint"),
        vec!["/usr/local/bin/consistency-sidecar"]
    );
    let cmd = image.strings("Cmd");
    assert_eq!(cmd, vec!["run", "--config", CONFIG_PATH]);
    assert_eq!(strings(&sidecar["args"])[..3], cmd[..]);
    let mount = &sidecar["volumeMounts"].seq()[0];
    assert_eq!(
        format!("{}/sidecar.toml", mount["mountPath"].str()),
        CONFIG_PATH
    );
    assert!(image
        .strings("Env")
        .contains(&format!("CONSISTENCY_SIDECAR_CONFIG={CONFIG_PATH}")));
    assert_eq!(image.field("StopSignal"), "SIGTERM");

    // The preStop pause runs in the kubelet: the image has no `sleep` to exec.
    let pre_stop = &sidecar["lifecycle"]["preStop"];
    assert!(
        pre_stop["exec"].is_badvalue(),
        "preStop exec: the image has no shell or sleep"
    );
    assert!(pre_stop["sleep"]["seconds"].as_i64().is_some());
}

/// Every file in the runtime image: the binary, its config, the libraries it links, and the
/// few files glibc reads. No shell, no package manager, no compiler.
fn runtime_holds_only_the_binary_and_its_libraries(rootfs: &Path) {
    let mut files = Vec::new();
    list_files(rootfs, rootfs, &mut files);
    files.sort();
    for file in &files {
        let allowed = file == "usr/local/bin/consistency-sidecar"
            || file == "etc/consistency-sidecar/sidecar.toml"
            || ["etc/passwd", "etc/group", "etc/nsswitch.conf"].contains(&file.as_str())
            || ((file.starts_with("lib") || file.starts_with("usr/lib")) && file.contains(".so"))
            || (file.starts_with("usr/share/doc/") && file.ends_with("/copyright"));
        assert!(
            allowed,
            "unexpected file in the runtime image: {file}\n{files:#?}"
        );
    }
    let toml = read(&deploy("docker/sidecar.toml"));
    assert_eq!(read(&rootfs.join(&CONFIG_PATH[1..])), toml);
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir)
        .expect("read the image root")
        .flatten()
    {
        let path = entry.path();
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            list_files(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("under the root");
            out.push(rel.to_string_lossy().to_string());
        }
    }
}

/// The admin port answers the kubelet's probes, and the proxy port reaches the backend.
async fn serves_as_configured(pod: &Pod, sidecar: &Process) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = pod.curl(&["--fail", "http://127.0.0.1:9464/healthz"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered: {}{}",
            String::from_utf8_lossy(&out.stderr),
            sidecar.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // /readyz follows the backend; it is up, so ready comes within a probe period or two.
    let deadline = Instant::now() + PATIENCE;
    while !pod
        .curl(&["--fail", "http://127.0.0.1:9464/readyz"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "/readyz never 200{}",
            sidecar.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = pod.curl(&["--fail", "http://127.0.0.1:8080/health"]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && body.contains("brand-diagnosis-backend"),
        "GET /health through the sidecar: {body}{}{}",
        String::from_utf8_lossy(&out.stderr),
        sidecar.tail()
    );
}

/// The process as the kernel sees it: the uid, no capabilities, no new privileges, and `/`
/// mounted read-only.
fn runs_unprivileged_on_a_read_only_root(sidecar: &Process, uid: &str) {
    let proc = format!("/proc/{}", sidecar.pid());
    let status = std::fs::read_to_string(format!("{proc}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), vec![uid; 4], "{status}");
    assert_eq!(field("CapEff"), vec!["0000000000000000"], "{status}");
    assert_eq!(field("CapPrm"), vec!["0000000000000000"], "{status}");
    assert_eq!(field("CapInh"), vec!["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs"), vec!["1"], "{status}");
    let mounts = std::fs::read_to_string(format!("{proc}/mountinfo")).expect("mountinfo");
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .unwrap_or_else(|| panic!("no / in the process's mounts:\n{mounts}"));
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "the root is not read-only: {root:?}"
    );
}

/// A POST whose body is still arriving when SIGTERM lands: it completes at the backend, then
/// the sidecar exits 0 and no longer accepts.
async fn sigterm_lets_the_in_flight_request_finish(pod: &Pod, sidecar: &mut Process, kill: &Path) {
    let mut client = pod.curl_with_stdin(&[
        "--fail",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Expect:",
        "-T",
        "-",
        "http://127.0.0.1:8080/api/perform-brand-test",
    ]);
    let mut body = client.stdin.take().expect("curl stdin");
    body.write_all(br#"{"brand_list": ["#).expect("first half");
    body.flush().expect("flush");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = pod.curl(&["http://127.0.0.1:9464/metrics"]);
        let text = String::from_utf8_lossy(&metrics.stdout);
        if text
            .lines()
            .any(|l| l == "consistency_proxy_inflight_requests 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the POST never became in flight{}",
            sidecar.tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sidecar.terminate(kill);
    sidecar
        .wait_for_line("the drain starting", |l| {
            l.contains("shutting down").then_some(())
        })
        .await;
    body.write_all(br#""Acme"]}"#).expect("second half");
    drop(body);
    let answer = tokio::task::spawn_blocking(move || client.wait_with_output())
        .await
        .expect("curl thread")
        .expect("curl");
    let text = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success() && text.contains("execution_id"),
        "the in-flight POST: {text}{}{}",
        String::from_utf8_lossy(&answer.stderr),
        sidecar.tail()
    );
    let exit = sidecar.exit_status().await;
    assert!(exit.success(), "exit {exit:?}{}", sidecar.tail());
    let refused = pod.curl(&["http://127.0.0.1:8080/health"]);
    assert!(!refused.status.success(), "still accepting after the exit");
}

/// The image's `Env` as pairs.
fn image_env(image: &Image) -> Vec<(String, String)> {
    image
        .strings("Env")
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(node: &Yaml) -> Vec<String> {
    node.strs().into_iter().map(str::to_string).collect()
}
