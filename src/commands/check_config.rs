//! `consistency-sidecar check-config`: validate a configuration and print it in full.

use std::process::ExitCode;

use clap::Args;

use super::{usage_error, ConfigArgs};
use crate::config::{self, Config};
use crate::engine::{RuleMode, TransitionKind};
use crate::memory_budget::MemoryBudget;
use crate::runtime;
use crate::settings::Settings;

#[derive(Debug, Args, Clone, Default)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Prints the effective configuration (defaults filled in) as TOML, headed by comments naming
/// the rules in shadow if there are any and giving the memory budget; a bad one exits 64.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    match config::load(args.config.config.as_deref()).and_then(Settings::compile) {
        Ok(settings) => {
            let mut out = String::new();
            let shadow = shadow_rules(&settings.config);
            if !shadow.is_empty() {
                out.push_str(&format!(
                    "# rules in shadow (judged and counted, their fixes never applied): {}\n",
                    shadow.join(", ")
                ));
            }
            let workers = match settings.config.proxy.workers {
                0 => runtime::default_workers(),
                n => n,
            };
            out.push_str(&MemoryBudget::of(&settings.config, workers).to_string());
            out.push_str(&settings.config.to_toml());
            super::print_stdout(&out);
            ExitCode::SUCCESS
        }
        Err(err) => usage_error(&err),
    }
}

/// The enabled rules in shadow, by the key that sets them: `rules[i]` by its name, transition
/// rules as `tracker.rules.<name>`.
fn shadow_rules(config: &Config) -> Vec<String> {
    let single = config
        .rules
        .iter()
        .filter(|r| r.enabled != Some(false) && r.mode == Some(RuleMode::Shadow))
        .map(|r| r.name.clone());
    let transitions = TransitionKind::ALL
        .into_iter()
        .filter(|&kind| {
            let rule = config.tracker.rule(kind);
            rule.enabled && rule.mode == RuleMode::Shadow
        })
        .map(|kind| format!("tracker.rules.{}", kind.as_str()));
    single.chain(transitions).collect()
}
