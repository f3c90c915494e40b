//! `consistency-sidecar inspect`: run the engine on one body from a file or stdin.
//!
//! Prints the verdict as pretty JSON, or with `--fixed` only the (patched) body. Rules in shadow
//! are shown apart: their issues carry `"mode": "shadow"`, and what they would fix is listed
//! under `would_fix_shadow`, never in the body. Exit status: 0 consistent, 1 issues found (of
//! rules not in shadow, as the record's level counts them), 2 unreadable input (missing file,
//! unparseable, no record), 64 bad configuration or unknown route.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};

use super::{ConfigArgs, EX_USAGE};
use crate::config;
use crate::engine::{
    self, Fix, Inspection, Level, NoMemory, Outcome, RouteSpec, RuleMode, RuleSet,
};
use crate::settings::Settings;

const EXIT_ISSUES: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

/// Name shown for the whole-body route used when no route is configured.
const WHOLE_BODY: &str = "inspect";

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Route whose record pointer, fields and mode apply [default: the first route].
    #[arg(long, value_name = "NAME")]
    pub route: Option<String>,
    /// Print only the patched body instead of the verdict.
    #[arg(long)]
    pub fixed: bool,
    /// The JSON body; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// Inspects the body and prints the verdict (or the patched body); the exit status is the
/// verdict.
pub fn run(args: &InspectArgs) -> ExitCode {
    let (rules, name, route) = match compile(args) {
        Ok(compiled) => compiled,
        Err(message) => {
            eprintln!("consistency-sidecar: {message}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let body = match read_input(args) {
        Ok(body) => body,
        Err(message) => {
            eprintln!("consistency-sidecar: {message}");
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    let inspection = engine::inspect(&rules, &route, &body, &mut NoMemory);
    let printed = if args.fixed {
        std::io::stdout().write_all(&inspection.body)
    } else {
        let text = serde_json::to_string_pretty(&verdict_json(&name, &route, &inspection))
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        writeln!(std::io::stdout(), "{text}")
    };
    if let Err(err) = printed {
        eprintln!("consistency-sidecar: cannot write output: {err}");
    }
    match &inspection.outcome {
        Outcome::Skipped(_) => ExitCode::from(EXIT_UNREADABLE),
        Outcome::Checked(records) if records.iter().all(|r| r.level == Level::Consistent) => {
            ExitCode::SUCCESS
        }
        Outcome::Checked(_) => ExitCode::from(EXIT_ISSUES),
    }
}

/// Loads the configuration and picks the chosen route (the first by default): the rules, the
/// route's name and its spec.
fn compile(args: &InspectArgs) -> Result<(Arc<RuleSet>, String, RouteSpec), String> {
    let settings = config::load(args.config.config.as_deref())
        .and_then(Settings::compile)
        .map_err(|e| e.to_string())?;
    let mut routes = settings.routes.iter();
    let route = match &args.route {
        Some(name) => Some(routes.find(|r| r.name() == name).ok_or_else(|| {
            let known: Vec<&str> = settings.routes.names().collect();
            format!("unknown route {name:?} (configured: {})", known.join(", "))
        })?),
        None => routes.next(),
    };
    let (name, spec) = match route {
        Some(route) => (route.name().to_string(), route.spec().clone()),
        // No routes configured: judge the whole body.
        None => {
            let config = &settings.config;
            let spec = RouteSpec::compile(
                "",
                &config.fields,
                config.mode,
                false,
                config.tracker.max_task_id_bytes,
            )
            .map_err(|e| e.to_string())?;
            (WHOLE_BODY.to_string(), spec)
        }
    };
    Ok((settings.rules.clone(), name, spec))
}

fn read_input(args: &InspectArgs) -> Result<Bytes, String> {
    match args.input.as_deref() {
        Some(path) if path.as_os_str() != "-" => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map(|_| Bytes::from(buf))
                .map_err(|e| format!("cannot read stdin: {e}"))
        }
    }
}

/// The verdict as the command prints it.
fn verdict_json(name: &str, route: &RouteSpec, inspection: &Inspection) -> Value {
    let mode = route.mode();
    match &inspection.outcome {
        Outcome::Skipped(reason) => json!({
            "route": name,
            "mode": mode,
            "skipped": reason.as_str(),
        }),
        Outcome::Checked(records) => {
            let level = records
                .iter()
                .map(|r| r.level)
                .max()
                .unwrap_or(Level::Consistent);
            let fixes = |fixes: &[Fix]| {
                fixes
                    .iter()
                    .map(|f| {
                        json!({
                            "rule": &*f.rule,
                            "field": f.field,
                            "before": f.before,
                            "after": f.after,
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let rendered: Vec<Value> = records
                .iter()
                .map(|r| {
                    json!({
                        "task_id": r.task_id,
                        "level": r.level,
                        "issues": r.issues.iter().map(|i| json!({
                            "rule": &*i.rule,
                            "level": i.level,
                            "mode": if i.shadow { RuleMode::Shadow } else { RuleMode::Fix },
                            "task_id": r.task_id,
                            "message": i.message,
                        })).collect::<Vec<_>>(),
                        "fixes": fixes(&r.fixes),
                        "would_fix_shadow": fixes(&r.shadow_fixes),
                    })
                })
                .collect();
            json!({
                "route": name,
                "mode": mode,
                "level": level,
                "changed": records.iter().any(|r| !r.fixes.is_empty()),
                "shadow_would_change": records.iter().any(|r| !r.shadow_fixes.is_empty()),
                "records": rendered,
            })
        }
    }
}
