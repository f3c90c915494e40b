//! The container image of `deploy/Dockerfile`, built and run with Debian's tools only: local
//! stand-ins of its two base images made with mmdebstrap, the Dockerfile built on them with
//! buildah, and the built root filesystem run as a pod's container would run it (its own
//! network namespace shared with the backend, a read-only root, a non-root user, no
//! capabilities) with unshare, mount and chroot, because `podman run` cannot start here.
//!
//! Everything slow is cached between runs on the same machine, under [`cache_dir`]: the base
//! images' tarballs and images (remade weekly, for Debian's security updates), buildah's
//! storage with its layer cache, and the Dockerfile's cargo cache mounts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Instant, SystemTime};

use serde_json::Value;

use super::process::{in_ci, tool, Process};
use super::repo;
use super::upstream::Fnv;

/// Debian's archive, as the stand-ins' sources: bookworm's rustc-web is in bookworm-security.
const MIRRORS: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

/// Debian's CA bundle, on the host and in the builder.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What debian:bookworm-slim leaves out of a minbase system.
const SLIM: [&str; 5] = [
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
];

/// A local stand-in of one of the Dockerfile's public base images.
struct Base {
    /// Its name under localhost/consistency-sidecar-ci/.
    name: &'static str,
    /// Installed on top of bookworm's minbase.
    packages: &'static [&'static str],
    /// Set in the image, as the public image sets it.
    env: &'static [&'static str],
}

/// rust:1.xx-slim-bookworm: bookworm with Debian's newer Rust (rustc-web, cargo-web) and a C
/// compiler (zstd-sys). CARGO_HOME where the public image has it, for the cache mount.
const BUILDER: Base = Base {
    name: "rust",
    packages: &[
        "rustc-web",
        "cargo-web",
        "gcc",
        "libc6-dev",
        "ca-certificates",
    ],
    env: &["CARGO_HOME=/usr/local/cargo"],
};

/// debian:bookworm-slim.
const RUNTIME: Base = Base {
    name: "debian",
    packages: &[],
    env: &[],
};

/// The tools this needs; `None` (outside CI) when one is missing.
pub struct Tools {
    pub mmdebstrap: PathBuf,
    pub buildah: PathBuf,
    pub unshare: PathBuf,
    pub nsenter: PathBuf,
    pub setpriv: PathBuf,
    pub chroot: PathBuf,
    pub ip: PathBuf,
    pub curl: PathBuf,
    pub python3: PathBuf,
    pub kill: PathBuf,
}

impl Tools {
    /// Every tool, and root: buildah's chroot isolation, namespaces and mounts need it.
    pub fn find() -> Option<Tools> {
        let tools = Tools {
            mmdebstrap: tool("mmdebstrap")?,
            buildah: tool("buildah")?,
            unshare: tool("unshare")?,
            nsenter: tool("nsenter")?,
            setpriv: tool("setpriv")?,
            chroot: tool("chroot")?,
            ip: tool("ip")?,
            curl: tool("curl")?,
            python3: tool("python3")?,
            kill: tool("kill")?,
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        if !root {
            assert!(
                !in_ci(),
                "building and running the image needs root, and CI=true"
            );
            eprintln!("SKIPPED: building and running the image needs root");
            return None;
        }
        Some(tools)
    }
}

/// Where the slow parts are kept between runs: `CONSISTENCY_SIDECAR_IMAGE_CACHE`, else
/// `$XDG_CACHE_HOME/consistency-sidecar/image`, else `~/.cache/consistency-sidecar/image`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONSISTENCY_SIDECAR_IMAGE_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::env::temp_dir().join("cache"));
    base.join("consistency-sidecar/image")
}

/// The image built from deploy/Dockerfile, with its OCI config.
pub struct Image {
    pub name: String,
    /// `.OCIv1.config` of the image: User, Env, ExposedPorts, Entrypoint, Cmd.
    pub config: Value,
    buildah: Buildah,
}

/// buildah on the cache's own storage (vfs: the driver that works here).
#[derive(Clone)]
struct Buildah {
    program: PathBuf,
    cache: PathBuf,
}

// === impl Buildah ===

impl Buildah {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        let storage = self.cache.join("storage");
        let run = self.cache.join("run");
        cmd.arg("--root")
            .arg(storage)
            .arg("--runroot")
            .arg(run)
            .args(["--storage-driver", "vfs"])
            .args(args)
            // RUN --mount=type=cache directories live under TMPDIR: keep them with the cache.
            .env("TMPDIR", self.cache.join("tmp"))
            .current_dir(repo())
            .stdin(Stdio::null());
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run buildah: {e}"));
        checked("buildah", args, &out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn has_image(&self, name: &str) -> bool {
        self.command(&["inspect", "--type", "image", name])
            .output()
            .is_ok_and(|out| out.status.success())
    }
}

fn checked(program: &str, args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Builds (or finds cached) the base stand-ins, then builds deploy/Dockerfile on them. Prints
/// how long each step took.
pub fn build(tools: &Tools) -> Image {
    let cache = cache_dir();
    for dir in ["bases", "storage", "run", "tmp"] {
        std::fs::create_dir_all(cache.join(dir)).expect("create the image cache");
    }
    let buildah = Buildah {
        program: tools.buildah.clone(),
        cache: cache.clone(),
    };
    let builder = base_image(tools, &buildah, &BUILDER);
    let runtime = base_image(tools, &buildah, &RUNTIME);

    // One tag per checkout, so two checkouts on one machine do not race on a name.
    let mut checkout = Fnv::new();
    checkout.update(repo().as_os_str().as_encoded_bytes());
    let name = format!(
        "localhost/consistency-sidecar:test-{:08x}",
        checkout.0 as u32
    );
    let started = Instant::now();
    let rust_arg = format!("RUST_IMAGE={builder}");
    let runtime_arg = format!("RUNTIME_IMAGE={runtime}");
    // The build's RUN steps trust what this machine trusts: where crates.io is reached through
    // a TLS-inspecting proxy, its CA is in the host's bundle and not in Debian's.
    let trust = format!("{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro");
    let mut trust_args = Vec::new();
    if Path::new(HOST_CA_BUNDLE).is_file() {
        trust_args = vec!["--volume", &trust];
    }
    buildah.ok(&[
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--file",
        "deploy/Dockerfile",
        "--ignorefile",
        "deploy/Dockerfile.dockerignore",
        "--build-arg",
        &rust_arg,
        "--build-arg",
        &runtime_arg,
        "--tag",
        &name,
    ]
    .into_iter()
    .chain(trust_args)
    .chain(["."])
    .collect::<Vec<_>>());
    eprintln!("image: buildah bud took {:?}", started.elapsed());
    let inspected = buildah.ok(&["inspect", "--type", "image", &name]);
    let inspected: Value = serde_json::from_str(&inspected).expect("buildah inspect is JSON");
    let config = inspected["OCIv1"]["config"].clone();
    Image {
        name,
        config,
        buildah,
    }
}

/// The local image standing in for `base`, made from Debian's archive when not cached. The tag
/// names the week and the package list: a new week picks up Debian's security updates.
fn base_image(tools: &Tools, buildah: &Buildah, base: &Base) -> String {
    let mut key = Fnv::new();
    for part in base.packages.iter().chain(base.env).chain(&MIRRORS) {
        key.update(part.as_bytes());
    }
    let week = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() / (7 * 24 * 3600))
        .unwrap_or_default();
    let tag = format!("{week}-{:08x}", key.0 as u32);
    let name = format!("localhost/consistency-sidecar-ci/{}:{tag}", base.name);
    if buildah.has_image(&name) {
        return name;
    }
    let started = Instant::now();
    let bases = cache_dir().join("bases");
    let tarball = bases.join(format!("{}-{tag}.tar", base.name));
    if !tarball.is_file() {
        // Older weeks' tarballs of this base go: only the current one is ever used.
        for entry in std::fs::read_dir(&bases)
            .expect("read the bases cache")
            .flatten()
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{}-", base.name))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let partial = tarball.with_extension("partial.tar");
        let include = format!("--include={}", base.packages.join(","));
        let mut args = vec!["--quiet", "--variant=minbase"];
        args.extend(SLIM);
        if !base.packages.is_empty() {
            args.push(&include);
        }
        let partial_arg = partial.to_string_lossy().to_string();
        args.extend(["bookworm", &partial_arg]);
        args.extend(MIRRORS);
        let out = Command::new(&tools.mmdebstrap)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mmdebstrap: {e}"));
        checked("mmdebstrap", &args, &out);
        std::fs::rename(&partial, &tarball).expect("keep the base tarball");
    }
    let container = buildah.ok(&["from", "scratch"]);
    buildah.ok(&["add", &container, &tarball.to_string_lossy(), "/"]);
    for env in base.env {
        buildah.ok(&["config", "--env", env, &container]);
    }
    buildah.ok(&["commit", "--rm", &container, &name]);
    eprintln!("image: base {name} made in {:?}", started.elapsed());
    name
}

// === impl Image ===

impl Image {
    /// A fresh container of the image with its root filesystem mounted; removed on drop.
    pub fn container(&self) -> Container {
        let id = self.buildah.ok(&["from", "--pull=never", &self.name]);
        let rootfs = PathBuf::from(self.buildah.ok(&["mount", &id]));
        Container {
            id,
            rootfs,
            buildah: self.buildah.clone(),
        }
    }

    /// Size in bytes and the layers' digests, as buildah reports them.
    pub fn size_and_layers(&self) -> (String, Vec<String>) {
        let size = self
            .buildah
            .ok(&["images", "--format", "{{.Size}}", &self.name]);
        let inspected = self.buildah.ok(&["inspect", "--type", "image", &self.name]);
        let inspected: Value = serde_json::from_str(&inspected).expect("buildah inspect is JSON");
        let layers = inspected["OCIv1"]["history"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .filter(|step| step["empty_layer"].as_bool() != Some(true))
                    .map(|step| step["created_by"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (size, layers)
    }

    /// A string field of the image config (`User`, ...), empty when absent.
    pub fn field(&self, key: &str) -> &str {
        self.config[key].as_str().unwrap_or_default()
    }

    /// A list-of-strings field (`Entrypoint`, `Cmd`, `Env`).
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.config[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A working container's mounted root filesystem (buildah from + mount).
pub struct Container {
    id: String,
    pub rootfs: PathBuf,
    buildah: Buildah,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.buildah.command(&["rm", &self.id]).output();
    }
}

/// A pod's network namespace with the backend in it: the Python stand-in of the legacy backend
/// on 127.0.0.1:5000, where the image's config and the manifests point the sidecar.
pub struct Pod {
    pub backend: Process,
    nsenter: PathBuf,
    unshare: PathBuf,
    setpriv: PathBuf,
    chroot: PathBuf,
    curl: PathBuf,
}

/// How a container process is started: a mount namespace with the image's root bind-mounted
/// read-only (when asked), the volumes bound read-only over it and /proc, then chroot as the
/// user with no capabilities and no way to gain privileges (allowPrivilegeEscalation: false).
const CONTAINER_INIT: &str = r#"set -eu
setpriv=$1 chroot=$2 rootfs=$3 user=$4 readonly=$5 volumes=$6 path=$7; shift 7
mkdir -p "$rootfs/proc"
mount --bind "$rootfs" "$rootfs"
for volume in $volumes; do
  mkdir -p "$rootfs${volume#*:}"
  mount --bind -o ro "${volume%%:*}" "$rootfs${volume#*:}"
done
if [ "$readonly" = yes ]; then mount -o remount,bind,ro "$rootfs"; fi
mount -t proc -o nosuid,nodev,noexec proc "$rootfs/proc"
# From here on the environment is the container's: the image's and the manifest's only.
if [ -n "$path" ]; then PATH=$path; else unset PATH; fi
# chroot needs CAP_SYS_CHROOT, so the bounding set stays: the switch to the user clears every
# capability, and no-new-privs keeps set-uid and file capabilities from giving any back.
exec "$setpriv" --no-new-privs --inh-caps=-all \
  "$chroot" --userspec="$user" "$rootfs" "$@"
"#;

/// One container of the pod.
pub struct ContainerSpec<'a> {
    pub rootfs: &'a Path,
    /// `uid:gid`.
    pub user: String,
    pub read_only_root: bool,
    /// (host directory, path in the container), each mounted read-only.
    pub volumes: Vec<(PathBuf, String)>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

// === impl Pod ===

impl Pod {
    pub async fn start(tools: &Tools) -> Pod {
        let script = repo().join("tests/standin/legacy_backend.py");
        let mut cmd = Command::new(&tools.unshare);
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            r#""$0" link set lo up && shift && exec "$@""#,
        ])
        .arg(&tools.ip)
        .arg("-")
        .arg(&tools.python3)
        .arg(script)
        .args(["--host", "127.0.0.1", "--port", "5000"]);
        let backend = Process::spawn("the backend stand-in", cmd);
        backend
            .wait_for_line("LISTENING 5000", |l| {
                (l.trim() == "LISTENING 5000").then_some(())
            })
            .await;
        Pod {
            backend,
            nsenter: tools.nsenter.clone(),
            unshare: tools.unshare.clone(),
            setpriv: tools.setpriv.clone(),
            chroot: tools.chroot.clone(),
            curl: tools.curl.clone(),
        }
    }

    fn netns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.backend.pid())
    }

    /// Starts a container process in the pod; its pid is the process's own.
    pub fn run(&self, name: &str, spec: &ContainerSpec) -> Process {
        Process::spawn(name, self.container_command(spec))
    }

    /// Runs a container process to its end.
    pub fn run_to_end(&self, spec: &ContainerSpec) -> Output {
        self.container_command(spec)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot start the container: {e}"))
    }

    fn container_command(&self, spec: &ContainerSpec) -> Command {
        let volumes: Vec<String> = spec
            .volumes
            .iter()
            .map(|(host, at)| format!("{}:{at}", host.display()))
            .collect();
        let container_path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let mut cmd = Command::new(&self.nsenter);
        cmd.arg(self.netns())
            .arg("--")
            .arg(&self.unshare)
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(CONTAINER_INIT)
            .arg("container-init")
            .arg(&self.setpriv)
            .arg(&self.chroot)
            .arg(spec.rootfs)
            .arg(&spec.user)
            .arg(if spec.read_only_root { "yes" } else { "no" })
            .arg(volumes.join(" "))
            .arg(container_path.unwrap_or_default())
            .args(&spec.argv)
            .env_clear()
            .envs(
                spec.env
                    .iter()
                    .filter(|(k, _)| k != "PATH")
                    .map(|(k, v)| (k, v)),
            )
            // For the init script only; the container gets its own PATH, if it has one.
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    }

    /// curl inside the pod's network namespace (as a client in the pod, or the kubelet).
    pub fn curl(&self, args: &[&str]) -> Output {
        Command::new(&self.nsenter)
            .arg(self.netns())
            .arg("--")
            .arg(&self.curl)
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"))
    }

    /// A curl in the pod whose request body the test writes through its stdin.
    pub fn curl_with_stdin(&self, args: &[&str]) -> std::process::Child {
        Command::new(&self.nsenter)
            .arg(self.netns())
            .arg("--")
            .arg(&self.curl)
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"))
    }
}
