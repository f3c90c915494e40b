//! Reading a Prometheus text exposition (the sidecar's `/metrics`) with `prometheus-parse`.

use std::collections::BTreeMap;

use prometheus_parse::{Sample, Value};

/// One parsed `/metrics` answer.
///
/// Histograms' `_count` and `_sum` lines are series of their own names
/// (`consistency_proxy_request_duration_seconds_count`).
pub struct Scrape {
    samples: Vec<Sample>,
}

// === impl Scrape ===

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|line| Ok(line.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("reading from memory");
        Scrape {
            samples: scrape.samples,
        }
    }

    /// The value of the one series of `name` whose labels include all of `labels`; `None`
    /// when there is none. Several matching series fail the test: name more labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.series(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{} series {name}{labels:?}: name more labels",
            found.len()
        );
        found.first().map(|sample| scalar(sample))
    }

    /// Like [`Scrape::get`], but the series must exist (at zero, if nothing was counted).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }

    /// The sum over every series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).map(scalar).sum()
    }

    /// Every counter series, keyed `name{label="value",...}` with the labels sorted.
    pub fn counters(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter_map(|sample| match sample.value {
                Value::Counter(v) => {
                    let labels: BTreeMap<&String, &String> = sample.labels.iter().collect();
                    let labels: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    Some((format!("{}{{{}}}", sample.metric, labels.join(",")), v))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether any series of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.series(name, &[]).next().is_some()
    }

    fn series<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
    }
}

fn scalar(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        Value::Histogram(_) | Value::Summary(_) => panic!(
            "{} is a histogram or summary: ask for its _count or _sum",
            sample.metric
        ),
    }
}
