//! The files under `deploy/`: paths, YAML read with `yaml-rust2`, the rules file's records and
//! alerts, and the address a Prometheus-family server logs once it listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::repo;

/// A file under `deploy/`.
pub fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A YAML text of exactly one document.
pub fn parse_yaml(text: &str, origin: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{origin} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{origin}: one YAML document expected");
    docs.remove(0)
}

/// A YAML file under `deploy/` (one document).
pub fn yaml(rel: &str) -> Yaml {
    parse_yaml(&read(&deploy(rel)), rel)
}

/// What the tests ask of a YAML node; each panics, showing the node, when it is not so.
/// (Indexing a mapping by a missing key gives `Yaml::BadValue`, which then fails here.)
pub trait Node {
    /// The items of a sequence.
    fn seq(&self) -> &[Yaml];
    /// A string scalar.
    fn str(&self) -> &str;
    /// The strings of a sequence of strings.
    fn strs(&self) -> Vec<&str>;
    /// The mapping in a sequence whose `key` is the string `value`.
    fn find(&self, key: &str, value: &str) -> &Yaml;
}

// === impl Node ===

impl Node for Yaml {
    fn seq(&self) -> &[Yaml] {
        self.as_vec()
            .unwrap_or_else(|| panic!("expected a sequence, found {}", brief(self)))
    }

    fn str(&self) -> &str {
        self.as_str()
            .unwrap_or_else(|| panic!("expected a string, found {}", brief(self)))
    }

    fn strs(&self) -> Vec<&str> {
        self.seq().iter().map(Node::str).collect()
    }

    fn find(&self, key: &str, value: &str) -> &Yaml {
        self.seq()
            .iter()
            .find(|item| item[key].as_str() == Some(value))
            .unwrap_or_else(|| panic!("no item with {key}: {value:?} in {}", brief(self)))
    }
}

fn brief(node: &Yaml) -> String {
    let text = format!("{node:?}");
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The records and alerts of a rules file shaped like `deploy/prometheus/rules.yml`.
pub struct RuleFile {
    /// `(name, expr)` of every recording rule, in file order.
    pub records: Vec<(String, String)>,
    /// `(name, expr)` of every alerting rule, in file order.
    pub alerts: Vec<(String, String)>,
}

// === impl RuleFile ===

impl RuleFile {
    pub fn parse(text: &str) -> RuleFile {
        let doc = parse_yaml(text, "a rules file");
        let mut records = Vec::new();
        let mut alerts = Vec::new();
        for group in doc["groups"].seq() {
            for rule in group["rules"].seq() {
                let expr = rule["expr"].str().trim().to_string();
                match rule["record"].as_str() {
                    Some(name) => records.push((name.to_string(), expr)),
                    None => alerts.push((rule["alert"].str().to_string(), expr)),
                }
            }
        }
        RuleFile { records, alerts }
    }
}

/// The address of `msg="Listening on" address=127.0.0.1:34739`, which Prometheus and
/// Alertmanager log once bound: the port they got for `--web.listen-address=127.0.0.1:0`.
pub fn listening_on(line: &str) -> Option<SocketAddr> {
    if !line.contains("msg=\"Listening on\"") {
        return None;
    }
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("address="))?
        .parse()
        .ok()
}
