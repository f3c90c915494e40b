//! The command line as an operator meets it: help, check-config, exit codes, and `report`
//! against a running sidecar.

mod support;

use std::process::{Command, Output};

use support::{free_port, get, Sidecar, StandIn};

fn sidecar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn help_explains_every_subcommand() {
    let out = sidecar(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "run",
        "check-config",
        "inspect",
        "report",
        "demo",
        "--upstream",
        "--mode",
        "--log-format",
    ] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
}

#[test]
fn check_config_prints_the_effective_defaults() {
    let out = sidecar(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let config = consistency_sidecar::config::parse(&printed).expect("printed config parses");
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(config.routes.len(), 3);
}

/// `check-config | head`: a reader that stops early ends the output quietly, as with any Unix
/// filter, never with a panic.
#[test]
fn check_config_into_a_closed_pipe_exits_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
        .arg("check-config")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn check-config");
    // Closed before the child has loaded its configuration, so its first write meets EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("check-config ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Rules in shadow are named above the configuration, which still reads back as TOML.
#[test]
fn check_config_names_the_rules_in_shadow() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shadow.toml");
    std::fs::write(
        &path,
        "[[rules]]\nname = \"failed_progress\"\nmode = \"shadow\"\n\
         [tracker.rules.progress_regression]\nmode = \"shadow\"\n",
    )
    .expect("write config");
    let out = sidecar(&[
        "check-config",
        "--config",
        path.to_str().expect("UTF-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.lines().next(),
        Some("# rules in shadow (judged and counted, their fixes never applied): failed_progress, tracker.rules.progress_regression"),
        "{printed}"
    );
    let config = consistency_sidecar::config::parse(&printed).expect("printed config parses");
    let rule = config
        .rules
        .iter()
        .find(|r| r.name == "failed_progress")
        .unwrap();
    assert_eq!(
        rule.mode,
        Some(consistency_sidecar::engine::RuleMode::Shadow)
    );

    // None in shadow: no such line.
    let out = sidecar(&["check-config"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in shadow"));
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_64() {
    let cases = [
        (
            "timeout",
            "[proxy]\nconnect_timeout = \"soon\"\n",
            "proxy.connect_timeout",
        ),
        (
            "route",
            "[[routes]]\nname = \"x\"\npath = \"no-slash\"\n",
            "routes[0].path",
        ),
        (
            "pointer",
            "[[routes]]\nname = \"x\"\npath = \"/x\"\nrecords = \"data\"\n",
            "routes[0].records",
        ),
        ("unknown", "lisen = \"127.0.0.1:1\"\n", "lisen"),
        (
            "rule_mode",
            "[[rules]]\nname = \"completed_stage\"\nmode = \"dry_run\"\n",
            "rules[0].mode",
        ),
        (
            "transition_mode",
            "[tracker.rules.progress_regression]\nmode = \"dry_run\"\n",
            "tracker.rules.progress_regression.mode",
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, key) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        for command in ["check-config", "run"] {
            let out = sidecar(&[command, "--config", path.to_str().expect("UTF-8 path")]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{command} {name}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            assert!(
                stderr.contains(key),
                "{command} {name} names {key}: {stderr}"
            );
        }
    }
    let out = sidecar(&["run", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(64));
    let out = sidecar(&["check-config", "--config", "/nonexistent/sidecar.toml"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn credentials_are_never_shown_upstream_refused_and_redis_password_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("upstream.toml");
    std::fs::write(&path, "upstream = \"http://ops:hunter2@127.0.0.1:5000\"\n").expect("write");
    let file = path.to_str().expect("UTF-8 path");
    for args in [
        vec!["check-config", "--config", file],
        vec!["run", "--config", file],
        vec!["run", "--upstream", "http://ops:hunter2@127.0.0.1:5000"],
    ] {
        let out = sidecar(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("upstream"), "{stderr}");
        assert!(stderr.contains("credentials"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }

    let path = dir.path().join("redis.toml");
    std::fs::write(
        &path,
        "[tracker]\nredis_url = \"redis://sidecar:hunter2@redis.internal:6379/2\"\n",
    )
    .expect("write");
    let out = sidecar(&[
        "check-config",
        "--config",
        path.to_str().expect("UTF-8 path"),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("redis_url = \"redis://sidecar:***@redis.internal:6379/2\""),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"));
}

#[test]
fn report_of_a_sidecar_that_is_not_running_fails_clearly() {
    let nothing = free_port();
    let out = sidecar(&["report", "--admin", &format!("http://{nothing}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot fetch"));
}

#[tokio::test]
async fn report_command_reads_a_running_sidecar() {
    let Some(standin) = StandIn::start(&[]).await else {
        return;
    };
    let sidecar_process = Sidecar::start(&standin.url(), "").await;
    let (status, _, _) = get(&sidecar_process.url("/test/status/__inconsistent")).await;
    assert_eq!(status, 200);
    let admin = sidecar_process.admin_url("");
    let text = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || sidecar(&["report", "--admin", &admin])
    })
    .await
    .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Total checks: 1"), "{text}");
    assert!(text.contains("minor_issue: 1"), "{text}");
    assert!(text.contains("completed_stage"), "{text}");
    let json =
        tokio::task::spawn_blocking(move || sidecar(&["report", "--admin", &admin, "--json"]))
            .await
            .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(report["total_checks"], 1);
    assert_eq!(report["consistency_ratio"], 0.0);
    assert_eq!(report["recent_issues"][0]["rule"], "completed_stage");
}

#[tokio::test]
async fn json_logs_carry_each_fix_as_one_structured_event() {
    let Some(standin) = StandIn::start(&[]).await else {
        return;
    };
    let sidecar =
        Sidecar::launch(&standin.url(), "", &["--log-format", "json"], Some("info")).await;
    let (status, _, _) = get(&sidecar.url("/test/status/__inconsistent")).await;
    assert_eq!(status, 200);
    let event = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    // The issue and its fix, in one event.
    let fix = sidecar
        .wait_for_log("the fix event", |line| {
            Some(event(line)).filter(|e| e["message"] == "consistency issue fixed")
        })
        .await;
    let events: Vec<serde_json::Value> = sidecar.log().iter().map(|l| event(l)).collect();
    assert!(
        events.iter().any(|e| e["message"] == "listening"),
        "{events:?}"
    );
    assert_eq!(fix["route"], "task_status");
    assert_eq!(fix["rule"], "completed_stage");
    assert_eq!(fix["after"], "\"completed\"");
    assert!(
        fix["task_id"].is_string() && fix["before"].is_string(),
        "{fix}"
    );
    assert_eq!(fix["level"], "WARN");
    assert_eq!(fix["severity"], "minor_issue");
    assert_eq!(fix["detail"], "status=completed but stage=source_tracing");
}

/// Runs `inspect` with `body` on stdin.
fn inspect(args: &[&str], body: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_consistency-sidecar"))
        .arg("inspect")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(body.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("inspect finishes")
}

#[test]
fn inspect_prints_the_verdict_and_exits_by_what_it_found() {
    let consistent = r#"{"task_id": "a", "status": "running", "stage": "ai_fetching", "progress": 25, "is_completed": false}"#;
    let out = inspect(&[], consistent);
    assert_eq!(out.status.code(), Some(0));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["level"], "consistent");

    let stale = r#"{"task_id": "b", "status": "completed", "stage": "ai_fetching",  "progress": 1.0e2, "is_completed": true}"#;
    let out = inspect(&["-"], stale);
    assert_eq!(out.status.code(), Some(1));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let record = &verdict["records"][0];
    assert_eq!(record["level"], "minor_issue");
    assert_eq!(record["issues"][0]["rule"], "completed_stage");
    assert_eq!(record["issues"][0]["task_id"], "b");
    assert_eq!(record["fixes"][0]["before"], "\"ai_fetching\"");
    assert_eq!(record["fixes"][0]["after"], "\"completed\"");

    // --fixed: only the patched body, every other byte as it came.
    let out = inspect(&["--fixed"], stale);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        stale.replace("\"ai_fetching\"", "\"completed\"")
    );

    // Records at a pointer, chosen by route.
    let history = format!(r#"{{"history": [{consistent}, {stale}], "total": 2}}"#);
    let out = inspect(&["--route", "test_history"], &history);
    assert_eq!(out.status.code(), Some(1));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["records"].as_array().unwrap().len(), 2);

    for unreadable in ["{\"status\": ", "not json", "[1, 2]"] {
        let out = inspect(&[], unreadable);
        assert_eq!(out.status.code(), Some(2), "{unreadable}");
    }
    let out = inspect(&["/nonexistent/body.json"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = inspect(&["--route", "nope"], consistent);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown route"));
}

/// A rule in shadow: its issue and what it would fix are shown apart, the body is not changed
/// by it, and the exit status follows the record's level, which it leaves alone.
#[test]
fn inspect_shows_what_a_rule_in_shadow_would_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("shadow.toml");
    std::fs::write(
        &config,
        "[[rules]]\nname = \"completed_stage\"\nmode = \"shadow\"\n",
    )
    .expect("write config");
    let config = config.to_str().expect("UTF-8 path");
    let stale = r#"{"task_id": "b", "status": "completed", "stage": "ai_fetching", "progress": 100, "is_completed": true}"#;
    let out = inspect(&["--config", config], stale);
    assert_eq!(
        out.status.code(),
        Some(0),
        "only a shadow issue: consistent"
    );
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["changed"], false);
    assert_eq!(verdict["shadow_would_change"], true);
    let record = &verdict["records"][0];
    assert_eq!(record["level"], "consistent");
    assert_eq!(record["issues"][0]["rule"], "completed_stage");
    assert_eq!(record["issues"][0]["level"], "minor_issue");
    assert_eq!(record["issues"][0]["mode"], "shadow");
    assert_eq!(record["fixes"].as_array().unwrap().len(), 0);
    let would = &record["would_fix_shadow"][0];
    assert_eq!(would["rule"], "completed_stage");
    assert_eq!(would["field"], "stage");
    assert_eq!(would["after"], "\"completed\"");
    let out = inspect(&["--config", config, "--fixed"], stale);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), stale, "not applied");

    // Switched to fix (the default), the same body is fixed.
    let out = inspect(&["--fixed"], stale);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        stale.replace("\"ai_fetching\"", "\"completed\"")
    );
}

/// One short run: the story reads through, and its tally matches what the stand-in injected.
#[test]
fn demo_tells_the_whole_story() {
    let stdout = demo_run();
    for expected in [
        "State consistency report",
        "Injected vs caught:",
        "0 of",
        "polls contradicted themselves",
        "every injected fault was caught, and fixed before it reached a client where a rule fixes it; the stalled task was found",
        "Where to look next:",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
    assert_tally_matches_the_stand_in(&stdout);
    let out = sidecar(&["demo", "--inject-rate", "2"]);
    assert_eq!(out.status.code(), Some(64));
}

/// The tally's rows against what the stand-in injected: each single-record contradiction
/// caught and fixed; progress moving back caught and fixed; a stage going back and a finished
/// task running again caught, not fixed (their rules do not fix by default), and so seen by
/// the clients; the one stalled task found, by id.
fn assert_tally_matches_the_stand_in(stdout: &str) {
    for rule in [
        "completed_stage",
        "failed_stage",
        "completed_progress",
        "failed_progress",
        "terminal_not_marked",
        "progress_regression",
    ] {
        let [injected, caught, fixed] = tally_row(stdout, rule);
        assert_eq!((caught, fixed), (injected, injected), "{rule}:\n{stdout}");
    }
    let cause = |what: &str| -> u64 {
        let (_, after) = stdout
            .split_once(&format!("{what} ("))
            .unwrap_or_else(|| panic!("no {what:?} in the tally:\n{stdout}"));
        after[..after.find(')').unwrap()].parse().unwrap()
    };
    let progress_back = cause("progress moved back");
    let stage_back = cause("a stage went back");
    let reopened = cause("a finished task reported running again");
    for (what, served) in [
        ("progress back", progress_back),
        ("stage back", stage_back),
        ("reopened", reopened),
    ] {
        assert!(
            served > 0,
            "the stand-in served no {what} answer:\n{stdout}"
        );
    }
    assert_eq!(tally_row(stdout, "progress_regression")[0], progress_back);
    assert_eq!(
        tally_row(stdout, "terminal_reopened"),
        [reopened, reopened, 0],
        "{stdout}"
    );
    // A finished task reported running is back at a working stage as well.
    let backwards = stage_back + reopened;
    assert_eq!(
        tally_row(stdout, "stage_regression"),
        [backwards, backwards, 0],
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "polls contradicted themselves, {backwards} ran a task backwards"
        )),
        "the clients see exactly the unfixed steps backwards:\n{stdout}"
    );
    let stalled: Vec<u64> = tally_numbers(stdout, "stalled");
    assert_eq!(
        stalled,
        [1, 1],
        "one task stalls, and it is found:\n{stdout}"
    );
    assert!(
        stdout.contains("      demo-1 at ai_fetching 25%, unchanged for "),
        "the stalled task is listed with its stage:\n{stdout}"
    );
}

/// A short demo run; its standard output.
fn demo_run() -> String {
    let out = sidecar(&[
        "demo",
        "--duration",
        "3s",
        "--inject-rate",
        "0.2",
        "--clients",
        "4",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A rule's row of the demo's tally: injected, caught, fixed.
fn tally_row(stdout: &str, rule: &str) -> [u64; 3] {
    tally_numbers(stdout, rule)
        .try_into()
        .unwrap_or_else(|_| panic!("the {rule} row has three figures:\n{stdout}"))
}

/// The figures after `name` on its row of the tally.
fn tally_numbers(stdout: &str, name: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row in the tally:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .map_while(|word| word.parse().ok())
        .collect()
}
