//! Property tests of the engine: generated task records inside arbitrary surrounding JSON.
//!
//! The generator knows where every field value it wrote lies, so the expected patched body is
//! derived independently: the input with exactly the fixed values' bytes replaced.

use bytes::Bytes;
use consistency_sidecar::config::Config;
use consistency_sidecar::engine::{
    inspect, Field, Mode, NoMemory, Outcome, RecordVerdict, RouteSpec, RuleSet,
};
use proptest::prelude::*;
use serde_json::Value;

/// One field value as written: raw JSON text.
type Raw = Option<String>;

#[derive(Debug, Clone)]
struct GenRecord {
    status: Raw,
    stage: Raw,
    progress: Raw,
    is_completed: Raw,
    task_id: Raw,
    /// Extra members (`x_…` keys, arbitrary values, possibly holding nested `status` keys).
    extras: Vec<String>,
    /// Member order: a permutation seed.
    order: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Wrap {
    /// The record is the whole body.
    Whole,
    /// `{"meta": …, "data": record, "x": …}` with the pointer `/data`.
    Data { before: String, after: String },
    /// `{"history": [record | other, …], "total": n}` with the pointer `/history/*`.
    History { others: Vec<Option<String>> },
}

#[derive(Debug, Clone)]
struct GenBody {
    records: Vec<GenRecord>,
    wrap: Wrap,
    /// Whitespace between tokens, used in turn.
    ws: Vec<&'static str>,
}

/// A string value spelled with some characters as `\u00XX` escapes.
fn spelled(text: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), text.len()).prop_map(move |mask| {
        let mut out = String::from("\"");
        for (c, escape) in text.chars().zip(mask) {
            if escape {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                out.push(c);
            }
        }
        out.push('"');
        out
    })
}

fn string_field(values: &'static [&'static str]) -> impl Strategy<Value = Raw> {
    prop_oneof![
        8 => prop::sample::select(values).prop_flat_map(spelled).prop_map(Some),
        1 => Just(None),
        1 => prop::sample::select(&["null", "3", "true", "[]", "{\"status\":\"completed\"}"][..])
            .prop_map(|s| Some(s.to_string())),
    ]
}

fn progress_field() -> impl Strategy<Value = Raw> {
    let spellings: &'static [&'static str] = &[
        "0", "-0", "0.0", "0e5", "35", "3.5e1", "90", "99.9", "100", "100.0", "1e2", "1.0E2",
        "1E+2", "100.000", "10000e-2", "101", "-1", "100.5", "1e300",
    ];
    prop_oneof![
        8 => prop::sample::select(spellings).prop_map(|s| Some(s.to_string())),
        1 => Just(None),
        1 => prop::sample::select(&["\"90\"", "null", "true"][..]).prop_map(|s| Some(s.to_string())),
    ]
}

fn bool_field() -> impl Strategy<Value = Raw> {
    prop::sample::select(
        &[
            Some("true"),
            Some("false"),
            None,
            Some("\"true\""),
            Some("null"),
        ][..],
    )
    .prop_map(|s| s.map(str::to_string))
}

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        Just("-1.5e-3".to_string()),
        "[a-z\u{4e2d} \"\\\\/]{0,8}".prop_map(|s| serde_json::to_string(&s).expect("string")),
        Just("\"\\ud83d\\ude00\\u4e2d\\n\"".to_string()),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(" , "))),
            prop::collection::vec(
                (
                    prop::sample::select(&["status", "stage", "progress", "a", "b_c"][..]),
                    inner
                ),
                0..4
            )
            .prop_map(|v| {
                let members: Vec<String> = v.iter().map(|(k, x)| format!("\"{k}\" :{x}")).collect();
                format!("{{{}}}", members.join(",\n"))
            }),
        ]
    })
}

fn record() -> impl Strategy<Value = GenRecord> {
    (
        string_field(&["pending", "running", "completed", "failed", "paused"]),
        string_field(&[
            "init",
            "ai_fetching",
            "ranking_analysis",
            "source_tracing",
            "completed",
            "failed",
        ]),
        progress_field(),
        bool_field(),
        prop_oneof![
            Just(None),
            "[a-z0-9-]{1,12}".prop_map(|s| Some(format!("\"{s}\""))),
            (0u32..1000).prop_map(|n| Some(n.to_string()))
        ],
        prop::collection::vec(json_text(), 0..4),
        prop::collection::vec(any::<u8>(), 12),
    )
        .prop_map(
            |(status, stage, progress, is_completed, task_id, extras, order)| GenRecord {
                status,
                stage,
                progress,
                is_completed,
                task_id,
                extras,
                order,
            },
        )
}

fn body() -> impl Strategy<Value = GenBody> {
    let ws = prop::collection::vec(
        prop::sample::select(&["", "", " ", "\n  ", "\t", "\r\n"][..]),
        1..16,
    );
    prop_oneof![
        (record(), ws.clone()).prop_map(|(r, ws)| GenBody {
            records: vec![r],
            wrap: Wrap::Whole,
            ws
        }),
        (record(), json_text(), json_text(), ws.clone()).prop_map(|(r, before, after, ws)| {
            GenBody {
                records: vec![r],
                wrap: Wrap::Data { before, after },
                ws,
            }
        }),
        (
            prop::collection::vec(record(), 1..6),
            prop::collection::vec(prop::option::of(json_text()), 0..3),
            ws
        )
            .prop_map(|(records, others, ws)| GenBody {
                records,
                wrap: Wrap::History { others },
                ws
            }),
    ]
}

/// The rendered body, its pointer, and for each record the byte spans of its four field values.
struct Rendered {
    text: String,
    records: &'static str,
    spans: Vec<[Option<(usize, usize)>; 4]>,
}

struct Writer<'a> {
    out: String,
    ws: &'a [&'static str],
    turn: usize,
}

impl Writer<'_> {
    fn ws(&mut self) {
        let w = self.ws[self.turn % self.ws.len()];
        self.turn += 1;
        self.out.push_str(w);
    }

    fn record(&mut self, r: &GenRecord) -> [Option<(usize, usize)>; 4] {
        let mut members: Vec<(String, String, Option<usize>)> = Vec::new();
        for (slot, (key, value)) in [
            ("status", &r.status),
            ("stage", &r.stage),
            ("progress", &r.progress),
            ("is_completed", &r.is_completed),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(v) = value {
                members.push((key.into(), v.clone(), Some(slot)));
            }
        }
        if let Some(id) = &r.task_id {
            members.push(("task_id".into(), id.clone(), None));
        }
        for (i, x) in r.extras.iter().enumerate() {
            members.push((format!("x_{i}"), x.clone(), None));
        }
        // Shuffle by the order seed.
        for (i, &o) in r.order.iter().enumerate() {
            let n = members.len();
            if n > 1 {
                members.swap(i % n, o as usize % n);
            }
        }
        let mut spans = [None; 4];
        self.out.push('{');
        for (i, (key, value, slot)) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.ws();
            self.out.push_str(&format!("\"{key}\""));
            self.ws();
            self.out.push(':');
            self.ws();
            let start = self.out.len();
            self.out.push_str(value);
            if let Some(slot) = slot {
                spans[*slot] = Some((start, self.out.len()));
            }
            self.ws();
        }
        self.out.push('}');
        spans
    }
}

fn render(body: &GenBody) -> Rendered {
    let mut w = Writer {
        out: String::new(),
        ws: &body.ws,
        turn: 0,
    };
    let mut spans = Vec::new();
    w.ws();
    let records = match &body.wrap {
        Wrap::Whole => {
            spans.push(w.record(&body.records[0]));
            ""
        }
        Wrap::Data { before, after } => {
            w.out.push_str(&format!("{{\"meta\":{before},"));
            w.ws();
            w.out.push_str("\"data\" : ");
            spans.push(w.record(&body.records[0]));
            w.out.push_str(&format!(",\"x\":{after}}}"));
            "/data"
        }
        Wrap::History { others } => {
            w.out.push_str("{\"history\":[");
            let mut first = true;
            let mut comma = |w: &mut Writer<'_>| {
                if !std::mem::take(&mut first) {
                    w.out.push(',');
                    w.ws();
                }
            };
            for (i, r) in body.records.iter().enumerate() {
                // Non-object elements between records are not records.
                if let Some(Some(other)) = others.get(i) {
                    if !other.starts_with('{') {
                        comma(&mut w);
                        w.out.push_str(other);
                    }
                }
                comma(&mut w);
                spans.push(w.record(r));
            }
            w.out
                .push_str(&format!("], \"total\": {}}}", body.records.len()));
            "/history/*"
        }
    };
    w.ws();
    Rendered {
        text: w.out,
        records,
        spans,
    }
}

fn route(records: &str, mode: Mode) -> RouteSpec {
    let config = Config::default();
    RouteSpec::compile(
        records,
        &config.fields,
        mode,
        false,
        config.tracker.max_task_id_bytes,
    )
    .expect("route compiles")
}

/// The fixable seed rules, judged independently on a parsed record: the names of those that fire.
fn fixable_firing(record: &Value) -> Vec<&'static str> {
    let status = record.get("status");
    let stage = record.get("stage");
    let done = record.get("is_completed");
    let progress = record.get("progress");
    let is = |v: Option<&Value>, s: &str| v.and_then(Value::as_str) == Some(s);
    let num = |v: Option<&Value>| v.and_then(Value::as_f64);
    let mut fired = Vec::new();
    if is(status, "completed") && stage.is_some() && !is(stage, "completed") {
        fired.push("completed_stage");
    }
    if is(status, "failed") && stage.is_some() && !is(stage, "failed") {
        fired.push("failed_stage");
    }
    let finished = done == Some(&Value::Bool(true));
    if finished && is(status, "completed") && progress.is_some() && num(progress) != Some(100.0) {
        fired.push("completed_progress");
    }
    if finished && is(status, "failed") && progress.is_some() && num(progress) != Some(0.0) {
        fired.push("failed_progress");
    }
    if (is(status, "completed") || is(status, "failed")) && done == Some(&Value::Bool(false)) {
        fired.push("terminal_not_marked");
    }
    fired
}

fn records_of<'a>(doc: &'a Value, pointer: &str) -> Vec<&'a Value> {
    match pointer {
        "" => vec![doc],
        "/data" => doc.get("data").into_iter().collect(),
        _ => doc["history"]
            .as_array()
            .map(|a| a.iter().filter(|v| v.is_object()).collect())
            .unwrap_or_default(),
    }
}

fn verdicts(outcome: &Outcome) -> &[RecordVerdict] {
    match outcome {
        Outcome::Checked(v) => v,
        Outcome::Skipped(reason) => panic!("skipped: {reason:?}"),
    }
}

fn slot(field: Field) -> usize {
    match field {
        Field::Status => 0,
        Field::Stage => 1,
        Field::Progress => 2,
        Field::IsCompleted => 3,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn fixes_are_complete_idempotent_and_byte_preserving(gen in body()) {
        let rendered = render(&gen);
        let config = Config::default();
        let rules = RuleSet::compile(&config.model, &config.rules).expect("default rules compile");
        let spec = route(rendered.records, Mode::Fix);
        let input = Bytes::from(rendered.text.clone());
        let parsed_in: Value = serde_json::from_str(&rendered.text).expect("generator writes JSON");

        let out = inspect(&rules, &spec, &input, &mut NoMemory);
        let checked = verdicts(&out.outcome);
        prop_assert_eq!(checked.len(), rendered.spans.len());

        // Output always parses, and no fixable rule fires on it (independent oracle).
        let parsed_out: Value = serde_json::from_slice(&out.body).expect("output parses");
        for record in records_of(&parsed_out, rendered.records) {
            prop_assert_eq!(fixable_firing(record), Vec::<&str>::new(), "{}", String::from_utf8_lossy(&out.body));
        }

        // Every rule the oracle sees on the input is reported.
        for (record, verdict) in records_of(&parsed_in, rendered.records).into_iter().zip(checked) {
            for rule in fixable_firing(record) {
                prop_assert!(verdict.issues.iter().any(|i| &*i.rule == rule), "{} not reported", rule);
            }
        }

        // Outside the fixed values, the bytes are the input's: rebuild the expected body.
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        for (verdict, spans) in checked.iter().zip(&rendered.spans) {
            let mut last: [Option<&str>; 4] = [None; 4];
            for fix in &verdict.fixes {
                last[slot(fix.field)] = Some(&fix.after);
            }
            for (i, after) in last.iter().enumerate() {
                if let (Some(after), Some((start, end))) = (after, spans[i]) {
                    edits.push((start, end, after.to_string()));
                }
            }
        }
        edits.sort();
        let mut expected = String::new();
        let mut at = 0;
        for (start, end, text) in &edits {
            expected.push_str(&rendered.text[at..*start]);
            expected.push_str(text);
            at = *end;
        }
        expected.push_str(&rendered.text[at..]);
        prop_assert_eq!(std::str::from_utf8(&out.body).expect("utf-8"), expected.as_str());

        // Nothing to fix: the same buffer comes back.
        if checked.iter().all(|v| v.fixes.is_empty()) {
            prop_assert!(out.body.as_ptr() == input.as_ptr() && out.body.len() == input.len());
        }
        let oracle_clean = records_of(&parsed_in, rendered.records).into_iter().all(|r| fixable_firing(r).is_empty());
        if oracle_clean {
            prop_assert!(out.body.as_ptr() == input.as_ptr(), "consistent input was copied");
        }

        // Fixing twice equals fixing once.
        let again = inspect(&rules, &spec, &out.body, &mut NoMemory);
        prop_assert!(again.body.as_ptr() == out.body.as_ptr());
        prop_assert!(verdicts(&again.outcome).iter().all(|v| v.fixes.is_empty()));

        // Observe mode never touches the body and reports the same original issues.
        let observe = route(rendered.records, Mode::Observe);
        let seen = inspect(&rules, &observe, &input, &mut NoMemory);
        prop_assert!(seen.body.as_ptr() == input.as_ptr());
    }
}
