//! The shipped memory limits follow from the memory budget of the config each one ships with
//! (docs/DESIGN.md, "Memory budget"): the Kubernetes container limit, `MemoryMax=` of the
//! systemd unit and the Docker example each stay at least [`ROOM`] above the worst case, so a
//! default raised in `config/sidecar.toml` or a limit lowered in `deploy/` fails here.

mod support;

use consistency_sidecar::config::{self, Config};
use consistency_sidecar::memory_budget::MemoryBudget;
use support::deploy::{deploy, read, yaml, Node};

/// Headroom over the worst case: allocator fragmentation and what the budget rounds.
const ROOM: f64 = 1.10;

const MIB: f64 = 1024.0 * 1024.0;

fn config_of(text: &str, origin: &str) -> Config {
    config::parse(text).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

/// `128Mi`, `160M`, `128m` (Kubernetes, systemd and Docker spellings) in bytes.
fn bytes_of(limit: &str) -> f64 {
    let digits: String = limit.chars().take_while(char::is_ascii_digit).collect();
    let value: f64 = digits.parse().unwrap_or_else(|_| panic!("a size: {limit}"));
    let unit = match &limit[digits.len()..] {
        "Ki" | "K" | "k" => 1024.0,
        "Mi" | "M" | "m" => MIB,
        "Gi" | "G" | "g" => 1024.0 * MIB,
        other => panic!("unknown unit {other:?} in {limit}"),
    };
    value * unit
}

/// The workers a config runs with under a CPU limit of `cpus` whole cores.
fn workers(config: &Config, cpus: usize) -> usize {
    match config.proxy.workers {
        0 => cpus,
        n => n,
    }
}

fn assert_fits(origin: &str, limit: f64, budget: &MemoryBudget) {
    let worst = budget.total() as f64;
    assert!(
        worst * ROOM <= limit,
        "{origin}: limit {:.1} MiB, worst case {:.1} MiB (needs {:.0}% room):\n{budget}",
        limit / MIB,
        worst / MIB,
        (ROOM - 1.0) * 100.0
    );
}

#[test]
fn the_kubernetes_limit_fits_the_configmaps_budget() {
    let configmap = yaml("kubernetes/configmap.yaml");
    let config = config_of(configmap["data"]["sidecar.toml"].str(), "configmap.yaml");
    let deployment = yaml("kubernetes/deployment.yaml");
    let sidecar =
        deployment["spec"]["template"]["spec"]["containers"].find("name", "consistency-sidecar");
    let limits = &sidecar["resources"]["limits"];
    let cpus: usize = limits["cpu"].str().parse().expect("whole cores");
    let budget = MemoryBudget::of(&config, workers(&config, cpus));
    assert_fits("kubernetes", bytes_of(limits["memory"].str()), &budget);
}

#[test]
fn the_systemd_memory_max_fits_its_configs_budget() {
    let config = config_of(
        &read(&deploy("systemd/sidecar.toml")),
        "systemd/sidecar.toml",
    );
    assert_ne!(
        config.proxy.workers, 0,
        "the unit has no CPU limit: its config pins the workers the budget counts"
    );
    let unit = read(&deploy("systemd/consistency-sidecar.service"));
    let memory_max = unit
        .lines()
        .find_map(|line| line.strip_prefix("MemoryMax="))
        .expect("MemoryMax= in the unit");
    let budget = MemoryBudget::of(&config, config.proxy.workers);
    assert_fits("systemd", bytes_of(memory_max), &budget);
}

#[test]
fn the_docker_example_fits_the_images_budget() {
    let text = read(&deploy("docker/sidecar.toml"));
    let config = config_of(&text, "docker/sidecar.toml");
    let example = text
        .lines()
        .find(|line| line.contains("docker run"))
        .expect("a docker run example in docker/sidecar.toml");
    let flag = |name: &str| {
        let words: Vec<&str> = example.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("{name} in {example:?}"));
        words[at + 1].to_owned()
    };
    let cpus: usize = flag("--cpus").parse().expect("whole cores");
    let budget = MemoryBudget::of(&config, workers(&config, cpus));
    assert_fits("docker", bytes_of(&flag("--memory")), &budget);
}
