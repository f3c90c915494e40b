//! Criterion benchmarks of the pure engine on the legacy backend's bodies (see `bodies/`).
//!
//! `benches/seed_rules.py` runs the same bodies through the seed's approach for comparison.
//! The `decode` and `encode` groups measure the content codings an inspected body may come in
//! (throughput in decoded bytes), beside the engine's own cost.

use bytes::Bytes;
use consistency_sidecar::coding::Coding;
use consistency_sidecar::config::Config;
use consistency_sidecar::engine::{inspect, Mode, NoMemory, RouteSpec, RuleSet};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const STATUS: &[u8] = include_bytes!("bodies/status.json");
const STATUS_FIX: &[u8] = include_bytes!("bodies/status_fix.json");
const HISTORY: &[u8] = include_bytes!("bodies/history.json");

fn route(records: &str) -> RouteSpec {
    let config = Config::default();
    RouteSpec::compile(
        records,
        &config.fields,
        Mode::Fix,
        false,
        config.tracker.max_task_id_bytes,
    )
    .expect("route compiles")
}

fn engine(c: &mut Criterion) {
    let config = Config::default();
    let rules = RuleSet::compile(&config.model, &config.rules).expect("default rules compile");
    let whole = route("");
    let history = route("/history/*");
    let mut group = c.benchmark_group("inspect");
    for (name, body, route, fixes) in [
        ("status_consistent", STATUS, &whole, 0),
        ("status_one_fix", STATUS_FIX, &whole, 1),
        ("history_100", HISTORY, &history, 0),
    ] {
        let body = Bytes::from_static(body);
        let check = inspect(&rules, route, &body, &mut NoMemory);
        let fixed = match &check.outcome {
            consistency_sidecar::engine::Outcome::Checked(v) => {
                v.iter().map(|r| r.fixes.len()).sum::<usize>()
            }
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(fixed, fixes, "{name}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| inspect(&rules, route, black_box(&body), &mut NoMemory))
        });
    }
    group.finish();
}

/// The codings a browser gets from a Flask-Compress backend, and the two deflate-family ones.
const CODINGS: [Coding; 4] = [Coding::Gzip, Coding::Zlib, Coding::Brotli, Coding::Zstd];

fn codings(c: &mut Criterion) {
    for (body_name, body) in [("status", STATUS_FIX), ("history_100", HISTORY)] {
        let mut decode = c.benchmark_group(format!("decode_{body_name}"));
        decode.throughput(Throughput::Bytes(body.len() as u64));
        for coding in CODINGS {
            let encoded = coding.encode(body).expect("encodes");
            decode.bench_function(coding.token(), |b| {
                b.iter(|| {
                    coding
                        .decode(black_box(&encoded), 8 << 20)
                        .expect("decodes")
                })
            });
        }
        decode.finish();
        let mut encode = c.benchmark_group(format!("encode_{body_name}"));
        encode.throughput(Throughput::Bytes(body.len() as u64));
        for coding in CODINGS {
            encode.bench_function(coding.token(), |b| {
                b.iter(|| coding.encode(black_box(body)).expect("encodes"))
            });
        }
        encode.finish();
    }
}

criterion_group!(benches, engine, codings);
criterion_main!(benches);
