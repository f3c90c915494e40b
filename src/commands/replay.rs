//! `consistency-sidecar replay --config NEW.toml [--against OLD.toml] [--json] FILE...`: what a
//! configuration would have sent for recorded traffic, and where it differs from another.
//!
//! Reads captures (NDJSON written by `[capture]`) and HAR 1.2 files as browsers save them
//! ("Save all as HAR with content"). The responses run in time order through the engine with a
//! fresh task memory, once per configuration, so each task's transition rules see its polls in
//! the order they were answered. It prints, per route and rule, the issues and fixes under each
//! configuration, and the tasks whose sent bytes differ, each with its first differing record
//! as received and as sent before (`--against`) and after (`--config`).
//!
//! Exit status: 0 both send the same bytes (or no `--against`), 1 they differ, 2 unreadable
//! input, 64 a bad configuration or flag.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use clap::Args;
use http::{Method, Uri};
use serde::Serialize;
use serde_json::{json, Value};

use super::{ConfigArgs, EX_USAGE};
use crate::capture::CaptureLine;
use crate::config;
use crate::engine::{self, NoMemory, Outcome, RecordState, RecordVerdict, TransitionJudge};
use crate::settings::Settings;
use crate::tracker::TaskTracker;

const EXIT_DIFFER: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

/// Characters of a body shown in the text output.
const SHOWN: usize = 600;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// `--config NEW.toml`: the configuration to try (required).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The configuration to compare with, as running today.
    #[arg(long, value_name = "OLD.toml")]
    pub against: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Capture (NDJSON) or HAR files.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// One recorded response.
#[derive(Debug, Clone)]
struct Recorded {
    time_ms: u64,
    time: String,
    method: Method,
    path: String,
    status: u16,
    content_type: String,
    body: Bytes,
}

/// What one configuration did with one response: `None` when it did not inspect it.
#[derive(Debug, Clone)]
struct Replayed {
    route: String,
    records: Vec<RecordVerdict>,
    sent: Bytes,
}

/// Counts of one route and rule under one configuration.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
struct Tally {
    issues: u64,
    shadow_issues: u64,
    fixes: u64,
    shadow_fixes: u64,
}

/// A task whose sent bytes differ, at its first differing record.
#[derive(Debug, Serialize)]
struct Difference {
    task_id: String,
    route: String,
    time: String,
    method: String,
    path: String,
    received: String,
    before: String,
    after: String,
}

/// Replays the files and prints what happened; the exit status says whether the bytes differ.
pub fn run(args: &ReplayArgs) -> ExitCode {
    let Some(new_path) = args.config.config.as_deref() else {
        eprintln!("consistency-sidecar: replay needs --config NEW.toml");
        return ExitCode::from(EX_USAGE);
    };
    let compile = |path: &Path| {
        config::load(Some(path))
            .and_then(Settings::compile)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let (new, old) = match (
        compile(new_path),
        args.against.as_deref().map(compile).transpose(),
    ) {
        (Ok(new), Ok(old)) => (new, old),
        (Err(message), _) | (_, Err(message)) => {
            eprintln!("consistency-sidecar: {message}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let mut recorded = Vec::new();
    for file in &args.files {
        match read(file) {
            Ok(mut responses) => recorded.append(&mut responses),
            Err(message) => {
                eprintln!("consistency-sidecar: {}: {message}", file.display());
                return ExitCode::from(EXIT_UNREADABLE);
            }
        }
    }
    // Stable: responses of the same millisecond keep their order in the files.
    recorded.sort_by_key(|r| r.time_ms);
    let after = replay(&new, &recorded);
    let before = old.as_ref().map(|old| replay(old, &recorded));
    let tallies = tally(&after, before.as_deref());
    let differences = before
        .as_deref()
        .map(|before| differences(&recorded, before, &after))
        .unwrap_or_default();
    let inspected = after.iter().filter(|r| r.is_some()).count();
    let printed = if args.json {
        print_json(args, &recorded, inspected, &tallies, &differences)
    } else {
        print_text(args, &recorded, inspected, &tallies, &differences)
    };
    if let Err(err) = printed {
        eprintln!("consistency-sidecar: cannot write output: {err}");
    }
    if differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DIFFER)
    }
}

/// The responses of one file: a HAR when it is one JSON object with a `log`, else NDJSON.
fn read(path: &Path) -> Result<Vec<Recorded>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if text.trim_start().starts_with('{') {
        if let Ok(har) = serde_json::from_str::<Value>(&text) {
            if har.get("log").is_some() {
                return read_har(&har);
            }
        }
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let line: CaptureLine =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            from_capture(line).map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect()
}

fn from_capture(line: CaptureLine) -> Result<Recorded, String> {
    let body = match line.encoding.as_deref() {
        None => Bytes::from(line.body),
        Some("base64") => Bytes::from(base64_decode(&line.body)?),
        Some(other) => return Err(format!("unknown body encoding {other:?}")),
    };
    Ok(Recorded {
        time_ms: time_ms(&line.time)?,
        time: line.time,
        method: line.method.parse().map_err(|_| "bad method".to_owned())?,
        path: line.path,
        status: line.status,
        content_type: line.content_type,
        body,
    })
}

/// HAR 1.2: `log.entries[]` with `startedDateTime`, `request.method`, `request.url`,
/// `response.status` and `response.content` (`mimeType`, `text`, `encoding`).
fn read_har(har: &Value) -> Result<Vec<Recorded>, String> {
    let entries = har["log"]["entries"]
        .as_array()
        .ok_or("HAR without log.entries")?;
    let mut recorded = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = |what: &str| format!("log.entries[{i}]: {what}");
        let time = entry["startedDateTime"]
            .as_str()
            .ok_or_else(|| at("no startedDateTime"))?;
        let method = entry["request"]["method"]
            .as_str()
            .and_then(|m| m.parse::<Method>().ok())
            .ok_or_else(|| at("no request.method"))?;
        let url = entry["request"]["url"]
            .as_str()
            .and_then(|u| u.parse::<Uri>().ok())
            .ok_or_else(|| at("no request.url"))?;
        let content = &entry["response"]["content"];
        let text = content["text"].as_str().unwrap_or("");
        let body = match content["encoding"].as_str() {
            Some("base64") => base64_decode(text).map_err(|e| at(&e))?,
            _ => text.as_bytes().to_vec(),
        };
        recorded.push(Recorded {
            time_ms: time_ms(time).map_err(|e| at(&e))?,
            time: time.to_owned(),
            method,
            path: url
                .path_and_query()
                .map_or_else(|| url.path().to_owned(), |p| p.as_str().to_owned()),
            status: entry["response"]["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0),
            content_type: content["mimeType"].as_str().unwrap_or("").to_owned(),
            body: Bytes::from(body),
        });
    }
    Ok(recorded)
}

fn time_ms(text: &str) -> Result<u64, String> {
    let at = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .map_err(|e| format!("time {text:?}: {e}"))?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("base64: {e}"))
}

/// Every response through the engine of `settings`, in order, with one fresh task memory.
fn replay(settings: &Settings, recorded: &[Recorded]) -> Vec<Option<Replayed>> {
    let config = &settings.config;
    let memory = TaskTracker::new(&config.tracker, &config.model);
    let tracked: Vec<&str> = settings
        .routes
        .iter()
        .filter(|r| r.spec().track())
        .map(|r| r.name())
        .collect();
    let ids = memory.assign_routes(&tracked);
    recorded
        .iter()
        .map(|response| {
            if !(200..300).contains(&response.status) || !is_json(&response.content_type) {
                return None;
            }
            let index = settings
                .routes
                .classify(&response.method, path_only(&response.path))?
                .index;
            let route = settings.routes.iter().nth(index)?;
            let mut local;
            let judge: &mut dyn TransitionJudge =
                match tracked.iter().position(|n| *n == route.name()) {
                    Some(i) => {
                        local = memory.judge_for(ids[i]);
                        &mut local
                    }
                    None => &mut NoMemory,
                };
            let inspection = engine::inspect(&settings.rules, route.spec(), &response.body, judge);
            match inspection.outcome {
                Outcome::Checked(records) => Some(Replayed {
                    route: route.name().to_owned(),
                    records,
                    sent: inspection.body,
                }),
                Outcome::Skipped(_) => None,
            }
        })
        .collect()
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Per (route, rule): the counts under `--against` (if any) and under `--config`.
fn tally(
    after: &[Option<Replayed>],
    before: Option<&[Option<Replayed>]>,
) -> BTreeMap<(String, String), (Option<Tally>, Tally)> {
    let mut tallies: BTreeMap<(String, String), (Option<Tally>, Tally)> = BTreeMap::new();
    let mut count = |replayed: &[Option<Replayed>], before: bool| {
        for response in replayed.iter().flatten() {
            for record in &response.records {
                let mut add = |rule: &str, what: fn(&mut Tally)| {
                    let slot = tallies
                        .entry((response.route.clone(), rule.to_owned()))
                        .or_default();
                    let tally = if before {
                        slot.0.get_or_insert_with(Tally::default)
                    } else {
                        &mut slot.1
                    };
                    what(tally);
                };
                for issue in &record.issues {
                    if issue.shadow {
                        add(&issue.rule, |t| t.shadow_issues += 1);
                    } else {
                        add(&issue.rule, |t| t.issues += 1);
                    }
                }
                for fix in &record.fixes {
                    add(&fix.rule, |t| t.fixes += 1);
                }
                for fix in &record.shadow_fixes {
                    add(&fix.rule, |t| t.shadow_fixes += 1);
                }
            }
        }
    };
    if let Some(before) = before {
        count(before, true);
    }
    count(after, false);
    if before.is_some() {
        for (old, _) in tallies.values_mut() {
            old.get_or_insert_with(Tally::default);
        }
    }
    tallies
}

/// The tasks whose sent bytes differ, each at its first differing response, in time order.
fn differences(
    recorded: &[Recorded],
    before: &[Option<Replayed>],
    after: &[Option<Replayed>],
) -> Vec<Difference> {
    let mut found: Vec<Difference> = Vec::new();
    for ((response, old), new) in recorded.iter().zip(before).zip(after) {
        let sent = |replayed: &Option<Replayed>| {
            replayed
                .as_ref()
                .map_or(response.body.clone(), |r| r.sent.clone())
        };
        let (old_sent, new_sent) = (sent(old), sent(new));
        if old_sent == new_sent {
            continue;
        }
        let states = |replayed: &Option<Replayed>| -> Vec<(String, RecordState)> {
            replayed
                .iter()
                .flat_map(|r| r.records.iter())
                .map(|record| {
                    (
                        record.task_id.clone().unwrap_or_else(|| "-".to_owned()),
                        record.sent.clone(),
                    )
                })
                .collect()
        };
        let (old_states, new_states) = (states(old), states(new));
        let of = |states: &[(String, RecordState)], id: &str| -> Vec<RecordState> {
            states
                .iter()
                .filter(|(other, _)| other == id)
                .map(|(_, s)| s.clone())
                .collect()
        };
        let mut tasks: Vec<String> = old_states
            .iter()
            .chain(&new_states)
            .map(|(id, _)| id.clone())
            .filter(|id| of(&old_states, id) != of(&new_states, id))
            .collect();
        if tasks.is_empty() {
            // The bytes differ but no record's fields do: every task of the response.
            tasks = new_states
                .iter()
                .chain(&old_states)
                .map(|(id, _)| id.clone())
                .collect();
        }
        tasks.sort();
        tasks.dedup();
        let route = new
            .as_ref()
            .or(old.as_ref())
            .map_or("", |r| r.route.as_str());
        for task in tasks {
            if found.iter().any(|d| d.task_id == task) {
                continue;
            }
            found.push(Difference {
                task_id: task,
                route: route.to_owned(),
                time: response.time.clone(),
                method: response.method.to_string(),
                path: response.path.clone(),
                received: String::from_utf8_lossy(&response.body).into_owned(),
                before: String::from_utf8_lossy(&old_sent).into_owned(),
                after: String::from_utf8_lossy(&new_sent).into_owned(),
            });
        }
    }
    found
}

fn print_json(
    args: &ReplayArgs,
    recorded: &[Recorded],
    inspected: usize,
    tallies: &BTreeMap<(String, String), (Option<Tally>, Tally)>,
    differences: &[Difference],
) -> std::io::Result<()> {
    let rules: Vec<Value> = tallies
        .iter()
        .map(|((route, rule), (before, after))| {
            json!({ "route": route, "rule": rule, "against": before, "config": after })
        })
        .collect();
    let report = json!({
        "config": args.config.config,
        "against": args.against,
        "responses": recorded.len(),
        "inspected": inspected,
        "rules": rules,
        "same": differences.is_empty(),
        "differing_tasks": differences,
    });
    use std::io::Write;
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    writeln!(std::io::stdout(), "{text}")
}

fn print_text(
    args: &ReplayArgs,
    recorded: &[Recorded],
    inspected: usize,
    tallies: &BTreeMap<(String, String), (Option<Tally>, Tally)>,
    differences: &[Difference],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "replayed {} responses ({inspected} inspected) from {} file(s)",
        recorded.len(),
        args.files.len()
    )?;
    let counts = |t: &Tally| {
        format!(
            "issues {:>5}  fixes {:>5}  shadow issues {:>5}  shadow fixes {:>5}",
            t.issues, t.fixes, t.shadow_issues, t.shadow_fixes
        )
    };
    let mut route_shown = "";
    for ((route, rule), (before, after)) in tallies {
        if route != route_shown {
            writeln!(out, "route {route}")?;
            route_shown = route;
        }
        match before {
            Some(before) if before != after => {
                writeln!(out, "  {rule:<26} against: {}", counts(before))?;
                writeln!(out, "  {:<26} config:  {}", "", counts(after))?;
            }
            Some(_) => writeln!(out, "  {rule:<26} same:    {}", counts(after))?,
            None => writeln!(out, "  {rule:<26} {}", counts(after))?,
        }
    }
    if args.against.is_none() {
        return Ok(());
    }
    if differences.is_empty() {
        return writeln!(out, "both configurations send the same bytes");
    }
    writeln!(out, "tasks whose sent bytes differ: {}", differences.len())?;
    let cut = |text: &str| -> String { text.chars().take(SHOWN).collect() };
    for d in differences {
        writeln!(
            out,
            "task {} ({}, {} {} at {})",
            d.task_id, d.route, d.method, d.path, d.time
        )?;
        writeln!(out, "  received: {}", cut(&d.received))?;
        writeln!(out, "  before:   {}", cut(&d.before))?;
        writeln!(out, "  after:    {}", cut(&d.after))?;
    }
    Ok(())
}
